package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// builds caches one build per package and flags for the test process.
var builds sync.Map // key string -> func() (string, error)

// buildRoot holds every test process's builds, one directory per process
// named by its pid.
var buildRoot = filepath.Join(os.TempDir(), "dicom-ingest-testenv")

// buildDir is this process's directory under buildRoot. A test process has
// no hook after its last test, so each new one removes the directories of
// processes that have ended instead: the binaries never pile up.
var buildDir = sync.OnceValues(func() (string, error) {
	entries, _ := os.ReadDir(buildRoot) // none yet: nothing to remove
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && !running(pid) {
			if err := os.RemoveAll(filepath.Join(buildRoot, e.Name())); err != nil {
				return "", fmt.Errorf("testenv: remove an ended test process's builds: %w", err)
			}
		}
	}
	dir := filepath.Join(buildRoot, strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("testenv: builds directory: %w", err)
	}
	return dir, nil
})

// running reports whether a process with this pid exists (signal 0 checks
// without signalling; EPERM means it exists under another user).
func running(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Build builds the program in pkg (a path relative to the module root, such
// as "./scp-task") once per test process, with CGO off as it is deployed
// and with extra go build flags (such as "-tags", "lambda.norpc"), and
// returns the binary's path. The binary is named after the package's
// directory, in a directory of its own, and lives for the rest of the
// process (tests in one package share it); the next test process to build
// something removes it.
func Build(t testing.TB, pkg string, flags ...string) string {
	t.Helper()
	moduleDir := ModuleRoot(t)
	key := pkg + "\x00" + strings.Join(flags, "\x00")
	once, _ := builds.LoadOrStore(key, sync.OnceValues(func() (string, error) {
		root, err := buildDir()
		if err != nil {
			return "", err
		}
		dir, err := os.MkdirTemp(root, path.Base(pkg)+"-")
		if err != nil {
			return "", fmt.Errorf("testenv: build %s: %w", pkg, err)
		}
		bin := filepath.Join(dir, path.Base(pkg))
		args := append(append([]string{"build", "-o", bin}, flags...), pkg)
		cmd := exec.Command("go", args...)
		cmd.Dir = moduleDir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("testenv: go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return bin, nil
	}))
	bin, err := once.(func() (string, error))()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// SCPTask builds scp-task (see Build), the binary the interop, end-to-end
// and VPN tests run as a child process.
func SCPTask(t testing.TB) string {
	t.Helper()
	return Build(t, "./scp-task")
}
