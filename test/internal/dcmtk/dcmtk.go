// Package dcmtk runs DCMTK's command-line tools as real DICOM peers in
// tests, with TCP_NODELAY set (DCMTK leaves Nagle's algorithm on otherwise,
// which stalls every response by ~40 ms), and finds the DICOM test files
// shipped with github.com/suyashkumar/dicom.
package dcmtk

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Require skips the test unless every named tool is installed.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install dcmtk; `make test` installs it when run as root)", tool)
		}
	}
}

// Result of one tool run.
type Result struct {
	Output string // stdout and stderr, interleaved
	Err    error  // non-nil when the tool failed or could not start
}

// Run runs tool with args, bounded by timeout.
func Run(t testing.TB, timeout time.Duration, tool string, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	out, err := cmd.CombinedOutput()
	return Result{Output: string(out), Err: err}
}

// Command returns an unstarted tool command with TCP_NODELAY set, for tests
// that need to kill it midway.
func Command(tool string, args ...string) *exec.Cmd {
	cmd := exec.Command(tool, args...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	return cmd
}

// TestdataDir is the testdata directory of the suyashkumar/dicom module.
func TestdataDir(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/suyashkumar/dicom").Output()
	if err != nil {
		t.Fatalf("go list the dicom module: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "testdata")
}

// TestdataFiles lists the DICOM files in TestdataDir.
func TestdataFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(TestdataDir(t), "*.dcm"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no .dcm files in %s: %v", TestdataDir(t), err)
	}
	return files
}

// Dump runs dcmdump on a file and returns the dataset lines only (after
// "# Dicom-Data-Set"), so files whose meta headers differ compare equal
// when their datasets do. Element values are printed in full (+L).
func Dump(t testing.TB, path string) string {
	t.Helper()
	r := Run(t, time.Minute, "dcmdump", "+L", "-M", "+U8", path)
	if r.Err != nil {
		t.Fatalf("dcmdump %s: %v\n%s", path, r.Err, r.Output)
	}
	_, data, ok := strings.Cut(r.Output, "# Dicom-Data-Set")
	if !ok {
		t.Fatalf("dcmdump %s: no dataset section\n%s", path, r.Output)
	}
	return data
}
