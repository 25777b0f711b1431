package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
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

// crashMidPutChild is TestCrashMidPut in its child process: it starts a
// Put that never finishes and gets killed.
func crashMidPutChild(t *testing.T, root string) {
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
	if root := os.Getenv(crashEnv); root != "" {
		crashMidPutChild(t, root)
		return
	}
	if testing.Short() {
		t.Skip("starts a process")
	}
	root := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashMidPut$")
	cmd.Env = append(os.Environ(), crashEnv+"="+root)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	// Wait until the partial object is on disk.
	testenv.EventuallyWithin(t, 30*time.Second, "the helper's partial object", func() bool {
		entries, _ := os.ReadDir(filepath.Join(root, TempDir))
		if len(entries) != 1 {
			return false
		}
		st, err := os.Stat(filepath.Join(root, TempDir, entries[0].Name()))
		return err == nil && st.Size() == 1<<20
	})
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

// The journaled path's crash test: a writer process stores objects and
// kills itself (SIGKILL) at the nth pass of one step; a new store on the
// same root finds every object the writer reported stored, whole, and
// nothing else half-visible.
const (
	stepEnv = "FILESTORE_CRASH_STEP"
	nthEnv  = "FILESTORE_CRASH_NTH"
)

// journaledWork is what the writer stores: MR- and CT-sized objects, a
// duplicate and a conflict, in segments small enough to be reused.
func journaledWork() []crashPut {
	var w []crashPut
	for i := range 12 {
		w = append(w, crashPut{fmt.Sprintf("1.2.%d", i), body(i, 130_000+i*40_000)})
	}
	return append(w, crashPut{"1.2.2", body(2, 130_000+2*40_000)}, crashPut{"1.2.4", body(77, 9_000)})
}

func journaledOpts() []Option { return []Option{WithJournalSize(2<<20, 2)} }

// journaledCrashWriter is the writer of TestJournaledCrashAtEveryStep,
// run in its child process: it stores journaledWork on root and kills
// itself at the nth pass of step.
func journaledCrashWriter(t *testing.T, root, step string) {
	nth, _ := strconv.Atoi(os.Getenv(nthEnv))
	var mu sync.Mutex
	crashPoint = func(at string) {
		mu.Lock()
		defer mu.Unlock()
		if at == step {
			if nth--; nth <= 0 {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
	}
	s, err := New(root, journaledOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range journaledWork() {
		st, err := s.Put(context.Background(), object(p.sop), bytes.NewReader(p.body))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("stored %s\n", st.Key)
	}
	// Give the checkpoint of a sealed segment its chance, then close (a
	// last checkpoint).
	time.Sleep(50 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL) // the step was never reached: still die
	select {}
}

func TestJournaledCrashAtEveryStep(t *testing.T) {
	if root, step := os.Getenv(crashEnv), os.Getenv(stepEnv); root != "" && step != "" {
		journaledCrashWriter(t, root, step)
		return
	}
	if testing.Short() {
		t.Skip("starts processes")
	}
	sent := map[string][][]byte{}
	for _, p := range journaledWork() {
		sent[p.sop] = append(sent[p.sop], p.body)
	}
	// writer runs the helper on root until it kills itself at the nth
	// pass of step, and returns the keys it reported stored.
	writer := func(t *testing.T, root, step string, nth int) map[string]bool {
		cmd := exec.Command(os.Args[0], "-test.run=^TestJournaledCrashAtEveryStep$", "-test.v")
		cmd.Env = append(os.Environ(), crashEnv+"="+root, stepEnv+"="+step, nthEnv+"="+strconv.Itoa(nth))
		out, err := cmd.Output()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) {
			t.Fatalf("writer: %v\n%s", err, out)
		}
		acked := map[string]bool{}
		for line := range strings.Lines(string(out)) {
			if k, ok := strings.CutPrefix(strings.TrimSpace(line), "stored "); ok {
				acked[k] = true
			}
		}
		return acked
	}
	for _, step := range []string{"claimed", "written", "appended", "placed", "checkpointed", "replay-written", "replayed"} {
		for _, nth := range []int{1, 3, 9} {
			t.Run(fmt.Sprintf("%s-%d", step, nth), func(t *testing.T) {
				root := t.TempDir()
				acked := map[string]bool{}
				if strings.HasPrefix(step, "replay") {
					// Leave records to replay (durable, not yet placed),
					// then die while replaying them.
					acked = writer(t, root, "appended", 10)
				}
				maps.Copy(acked, writer(t, root, step, nth))
				if n := len(journaledWork()); !strings.HasPrefix(step, "checkpoint") && len(acked) >= n {
					t.Fatalf("the writer stored all %d objects: it never reached %s", n, step)
				}
				s, err := New(root, journaledOpts()...)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				checkStored(t, s, acked, sent)
			})
		}
	}
}

// checkStored checks a store after a crash: every acknowledged key is
// there, every object there is whole, no temporary file is left.
func checkStored(t *testing.T, s *Store, acked map[string]bool, sent map[string][][]byte) {
	t.Helper()
	for k := range acked {
		if _, err := s.Stat(k); err != nil {
			t.Errorf("acknowledged %s lost: %v", k, err)
		}
	}
	for _, f := range files(t, s.Root()) {
		if strings.HasPrefix(f, TempDir+"/") {
			t.Errorf("temporary file %s left", f)
			continue
		}
		got := readKey(t, s, f)
		sop := strings.TrimSuffix(path.Base(f), ".dcm")
		if i := strings.Index(sop, ".conflict-"); i >= 0 {
			sop = sop[:i]
		}
		whole := false
		for _, b := range sent[sop] {
			whole = whole || bytes.Equal(got, b)
		}
		if !whole {
			t.Errorf("%s visible with %d bytes no Put sent", f, len(got))
		}
	}
}
