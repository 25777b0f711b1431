package filestore

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const crashEnv = "FILESTORE_CRASH_ROOT"

// blockingReader yields 1 MiB, then blocks until the process dies.
type blockingReader struct{ sent int }

func (b *blockingReader) Read(p []byte) (int, error) {
	if b.sent >= 1<<20 {
		select {}
	}
	n := min(len(p), 1<<20-b.sent)
	for i := range p[:n] {
		p[i] = 'x'
	}
	b.sent += n
	return n, nil
}

// TestCrashHelper is the child of TestCrashMidPut: it starts a Put that
// never finishes and gets killed. In the parent process it does nothing.
func TestCrashHelper(t *testing.T) {
	root := os.Getenv(crashEnv)
	if root == "" {
		return
	}
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Put(context.Background(), object("1.2.3"), &blockingReader{})
	t.Fatalf("Put returned: %v", err)
}

// TestCrashMidPut kills a process in the middle of a Put (SIGKILL, as a
// crash): no object is visible, and New clears the partial file.
func TestCrashMidPut(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	root := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), crashEnv+"="+root)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	// Wait until the partial object is on disk.
	deadline := time.Now().Add(30 * time.Second)
	for {
		entries, _ := os.ReadDir(filepath.Join(root, TempDir))
		if len(entries) == 1 {
			if st, err := os.Stat(filepath.Join(root, TempDir, entries[0].Name())); err == nil && st.Size() == 1<<20 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the helper never wrote its partial object")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	var exitErr *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &exitErr) {
		t.Fatalf("helper exit: %v", err)
	}

	got := files(t, root)
	if len(got) != 1 || !strings.HasPrefix(got[0], TempDir+"/put-") {
		t.Fatalf("after the crash: %v, want only the partial temporary file", got)
	}
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := files(t, root); len(got) != 0 {
		t.Errorf("after New: %v, want nothing", got)
	}
	if _, err := s.Stat("incoming/2026/03/08/1.2.3/1.2.3.4/1.2.3.dcm"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("object visible after crash: %v", err)
	}
}
