package testenv_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// childEnv names the case a child test process runs (see TestChild).
const childEnv = "TESTENV_CHILD_CASE"

// TestChild is the body run in a child process by the tests below, since a
// skip or a failure ends the test that calls the helper. In the parent
// process it does nothing.
func TestChild(t *testing.T) {
	switch os.Getenv(childEnv) {
	case "":
		return
	case "missing":
		testenv.Missing(t, "the widget service", "apt-get install widget")
	case "listed-tool":
		testenv.LookPath(t, "storescu")
	case "unlisted-tool":
		testenv.LookPath(t, "no-such-tool-anywhere")
	case "build":
		t.Log("built " + testenv.Build(t, "./shared/testenv/testdata/hello"))
	case "service":
		testenv.RequireService(t, "dynalite", errors.New("connection refused"), "make node-tools")
	}
	t.Log("still running after the helper")
}

// runChild runs TestChild in a child process with CASE=name and env, and
// returns its verbose output and exit code.
func runChild(t *testing.T, name string, env ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChild$", "-test.v")
	cmd.Env = append(os.Environ(), append([]string{childEnv + "=" + name}, env...)...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	default:
		t.Fatalf("run child: %v\n%s", err, out)
		return "", 0
	}
}

func TestMissingSkipsOrFailsOnCI(t *testing.T) {
	emptyPath := "PATH=" + t.TempDir() // no command resolves
	tests := []struct {
		name     string
		child    string
		env      []string
		wantExit int
		want     []string
	}{
		{"developer machine skips", "missing", []string{"CI="}, 0,
			[]string{"--- SKIP: TestChild", "missing the widget service: apt-get install widget"}},
		{"CI=true fails", "missing", []string{"CI=true"}, 1,
			[]string{"--- FAIL: TestChild", "missing the widget service", "apt-get install widget", "under CI"}},
		{"CI=1 fails", "missing", []string{"CI=1"}, 1, []string{"--- FAIL: TestChild"}},
		{"CI=false skips", "missing", []string{"CI=false"}, 0, []string{"--- SKIP: TestChild"}},
		{"a listed tool names its package", "listed-tool", []string{"CI=", emptyPath}, 0,
			[]string{"--- SKIP: TestChild", "missing command storescu: apt-get install dcmtk"}},
		{"a listed tool fails on CI", "listed-tool", []string{"CI=true", emptyPath}, 1,
			[]string{"--- FAIL: TestChild", "missing command storescu", "apt-get install dcmtk"}},
		{"an unlisted tool fails anywhere", "unlisted-tool", []string{"CI="}, 1,
			[]string{"--- FAIL: TestChild", "no-such-tool-anywhere is not in shared/testenv/debian-packages.txt"}},
		{"a failing service names how to start it", "service", []string{"CI="}, 0,
			[]string{"--- SKIP: TestChild", "missing dynalite (connection refused): make node-tools"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := runChild(t, tt.child, tt.env...)
			if code != tt.wantExit {
				t.Errorf("exit code %d, want %d", code, tt.wantExit)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			if strings.Contains(out, "still running after the helper") {
				t.Error("the test went on after the helper ended it")
			}
			if t.Failed() {
				t.Logf("child output:\n%s", out)
			}
		})
	}
}

func TestPresentDependencyRuns(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "storescu"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, code := runChild(t, "listed-tool", "CI=true", "PATH="+dir)
	if code != 0 || !strings.Contains(out, "still running after the helper") || !strings.Contains(out, "--- PASS: TestChild") {
		t.Errorf("exit code %d, want the test to run on and pass:\n%s", code, out)
	}
}

func TestCI(t *testing.T) {
	for v, want := range map[string]bool{"": false, "true": true, "1": true, "yes": true, "false": false, "0": false} {
		t.Setenv("CI", v)
		if got := testenv.CI(); got != want {
			t.Errorf("CI=%q: CI() = %v, want %v", v, got, want)
		}
	}
}

// TestPackagesFile checks the table is well formed and that the CI install
// script reads it, so a tool a test names is a tool CI installs.
func TestPackagesFile(t *testing.T) {
	for _, name := range []string{"storescu", "dcmsend", "chromium", "swanctl", "/usr/lib/ipsec/charon"} {
		if _, ok := testenv.Package(name); !ok {
			t.Errorf("Package(%q) not found", name)
		}
	}
	b, err := os.ReadFile("debian-packages.txt")
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if f := strings.Fields(line); len(f) != 0 && len(f) != 2 {
			t.Errorf("debian-packages.txt:%d: %q: want a command or path and a package", i+1, line)
		}
	}
	script, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), ".ci", "install-deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), "shared/testenv/debian-packages.txt") {
		t.Error(".ci/install-deps.sh does not install from shared/testenv/debian-packages.txt")
	}
}

func TestDICOMTestdataFiles(t *testing.T) {
	files := testenv.DICOMTestdataFiles(t)
	for _, f := range files {
		if filepath.Dir(f) != testenv.DICOMTestdataDir(t) || filepath.Ext(f) != ".dcm" {
			t.Errorf("%s: not a .dcm file in %s", f, testenv.DICOMTestdataDir(t))
		}
	}
}

func TestBuild(t *testing.T) {
	bin := testenv.Build(t, "./shared/testenv/testdata/hello", "-trimpath")
	if again := testenv.Build(t, "./shared/testenv/testdata/hello", "-trimpath"); again != bin {
		t.Errorf("second Build = %s, want the first build %s", again, bin)
	}
	out, err := exec.Command(bin).Output()
	if err != nil || string(out) != "hello\n" {
		t.Errorf("%s = %q, %v; want hello", bin, out, err)
	}
}

// TestBuildRemovesEndedProcessesBuilds checks a test process removes the
// builds of processes that have ended, and leaves those of running ones.
func TestBuildRemovesEndedProcessesBuilds(t *testing.T) {
	root := filepath.Join(os.TempDir(), "dicom-ingest-testenv")
	ended := exec.Command("true")
	if err := ended.Run(); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(root, strconv.Itoa(ended.Process.Pid))
	live := filepath.Join(root, strconv.Itoa(os.Getpid()))
	for _, d := range []string{stale, live} {
		if err := os.MkdirAll(filepath.Join(d, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, code := runChild(t, "build"); code != 0 || !strings.Contains(out, "built "+root) {
		t.Fatalf("child exit code %d, want a build under %s:\n%s", code, root, out)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s, an ended process's builds: %v, want removed", stale, err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("%s, this running process's builds: %v, want kept", live, err)
	}
}
