package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// goTool runs the go command in the current directory (a test's package
// directory, inside this module) and returns its standard output.
func goTool(args ...string) (string, error) {
	cmd := exec.Command("go", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

var moduleRoot = sync.OnceValues(func() (string, error) {
	gomod, err := goTool("env", "GOMOD")
	if err != nil {
		return "", err
	}
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside a module")
	}
	return filepath.Dir(gomod), nil
})

// GOROOT is the Go root of the go command the tests run with (the source
// of the standard library a test reads, as it builds them); without the
// go command the test ends as Missing says.
func GOROOT(t testing.TB) string {
	t.Helper()
	dir, err := goTool("env", "GOROOT")
	if err != nil || dir == "" {
		Missing(t, "the go command's GOROOT", "install Go")
	}
	return dir
}

// ModuleRoot is the directory of this repository's go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := moduleRoot()
	if err != nil {
		t.Fatalf("testenv: module root: %v", err)
	}
	return dir
}

// dicomModule is the module whose testdata/ holds real-world DICOM files
// from many modalities and vendors; it is a dependency in go.mod (the
// differential tests parse with it), so its files are always at hand.
const dicomModule = "github.com/suyashkumar/dicom"

var dicomModuleDir = sync.OnceValues(func() (string, error) {
	// go mod download (rather than go list -m) fetches the module when no
	// build has needed it yet, and only reads the cache when one has.
	out, err := goTool("mod", "download", "-json", dicomModule)
	if err != nil {
		return "", err
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal([]byte(out), &mod); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", dicomModule, err)
	}
	if mod.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", dicomModule, mod.Error)
	}
	return mod.Dir, nil
})

// DICOMTestdataDir is the testdata directory of github.com/suyashkumar/dicom.
func DICOMTestdataDir(t testing.TB) string {
	t.Helper()
	dir, err := dicomModuleDir()
	if err != nil {
		t.Fatalf("testenv: locate the dicom module's testdata: %v", err)
	}
	return filepath.Join(dir, "testdata")
}

// DICOMTestdataFiles lists the .dcm files in DICOMTestdataDir.
func DICOMTestdataFiles(t testing.TB) []string {
	t.Helper()
	dir := DICOMTestdataDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.dcm"))
	if err != nil || len(files) == 0 {
		t.Fatalf("testenv: no .dcm files in %s: %v", dir, err)
	}
	return files
}

// DefaultCorpusDir is where test/corpus/make-corpus.sh builds the
// synthetic corpus unless DICOM_CORPUS says otherwise.
const DefaultCorpusDir = "/tmp/dicom-corpus"

// CorpusDir is the synthetic corpus's directory: $DICOM_CORPUS, or
// DefaultCorpusDir.
func CorpusDir() string {
	if d := os.Getenv("DICOM_CORPUS"); d != "" {
		return d
	}
	return DefaultCorpusDir
}

// CorpusFiles lists the .dcm files of one sub-corpus (mixed, ct, mr, big)
// of the synthetic corpus. A corpus not built yet is missing like a tool
// (see Missing): `make test` builds the mixed set before the tests.
func CorpusFiles(t testing.TB, sub string) []string {
	t.Helper()
	dir := filepath.Join(CorpusDir(), sub)
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".dcm") {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) == 0 {
		Missing(t, "the synthetic corpus's "+sub+"/ set in "+CorpusDir(),
			"bash test/corpus/make-corpus.sh "+CorpusDir()+" "+sub+" (`make test` builds mixed)")
	}
	return files
}
