package localstore

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWALSyncCoversLaterCommits: a sync called while an fsync runs waits
// for the next one (the running one may have begun before its commit),
// and every caller waiting meanwhile shares that next one.
func TestWALSyncCoversLaterCommits(t *testing.T) {
	release := make(chan struct{})
	began := make(chan int, 10)
	var fsyncs atomic.Int32
	s := newWALSync("")
	s.fsync = func() error {
		n := int(fsyncs.Add(1))
		began <- n
		<-release
		return nil
	}
	first := make(chan error, 1)
	go func() { first <- s.sync() }()
	if n := <-began; n != 1 {
		t.Fatalf("first fsync is number %d", n)
	}
	// Three callers arrive while the first fsync runs.
	const waiters = 3
	var wg sync.WaitGroup
	returned := make(chan int, waiters)
	for range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.sync(); err != nil {
				t.Error(err)
			}
			returned <- int(fsyncs.Load())
		}()
	}
	// Give them time to queue behind the running fsync; one that comes
	// late begins the second fsync itself, which the checks allow.
	time.Sleep(20 * time.Millisecond)
	release <- struct{}{} // the first fsync ends
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-returned:
		t.Fatalf("a caller returned after fsync %d, which began before its call", n)
	case n := <-began:
		if n != 2 {
			t.Fatalf("second fsync is number %d", n)
		}
	}
	close(release)
	wg.Wait()
	close(returned)
	for n := range returned {
		if n != 2 {
			t.Errorf("a caller returned after %d fsyncs, want 2 (one shared)", n)
		}
	}
}

// TestWALSyncReportsFailure: the callers an fsync covers get its error.
func TestWALSyncReportsFailure(t *testing.T) {
	boom := errors.New("boom")
	s := newWALSync("")
	s.fsync = func() error { return boom }
	if err := s.sync(); !errors.Is(err, boom) {
		t.Fatalf("sync = %v, want %v", err, boom)
	}
	s.fsync = func() error { return nil }
	if err := s.sync(); err != nil {
		t.Fatalf("sync after a good fsync = %v", err)
	}
}

// TestWALSyncMissingLog: no write-ahead log means nothing to sync.
func TestWALSyncMissingLog(t *testing.T) {
	if err := newWALSync(t.TempDir() + "/none-wal").sync(); err != nil {
		t.Fatal(err)
	}
}
