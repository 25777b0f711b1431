//go:build unix

package local

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCheckDataDirRefusesOthersWrite: the check scp-task makes first, of
// the lock in the data directory, refuses a directory others may write in
// as PrepareDataDir does, before it opens anything there. It opened the
// lock file found there: whoever put a FIFO in its place kept scp-task
// from starting, waiting for ever before the refusal, and a symlink there
// had it open (or create) a file of the attacker's choice.
func TestCheckDataDirRefusesOthersWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, LockFile)
	if err := syscall.Mkfifo(fifo, 0o666); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- CheckDataDir(dir) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		// Release the open waiting for a writer, so the test ends.
		if w, oerr := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); oerr == nil {
			w.Close()
		}
		t.Fatal("CheckDataDir opened the FIFO planted as the lock of a data directory others may write in")
	}
	if err == nil || !strings.Contains(err.Error(), "others than its owner may write in it") {
		t.Fatalf("CheckDataDir = %v, want the data directory refused", err)
	}
}
