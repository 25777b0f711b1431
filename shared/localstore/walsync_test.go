package localstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
	s := newWALSync("", nil)
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

// TestWALSyncFailureIsFinal: the callers an fsync covers get its error,
// and so does every later sync, whatever later fsyncs would say: after a
// failed fsync Linux may have dropped the pages it could not write and
// cleared the error ("fsyncgate"), so a later one that succeeds proves
// nothing about the commits before it.
func TestWALSyncFailureIsFinal(t *testing.T) {
	boom := errors.New("boom")
	for _, tt := range []struct {
		name  string
		later func() error // what fsyncs after the failed one return
	}{
		{"then succeeds", func() error { return nil }},
		{"then fails again", func() error { return errors.New("again") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newWALSync("", nil)
			var fsyncs atomic.Int32
			s.fsync = func() error {
				if fsyncs.Add(1) == 1 {
					return boom
				}
				return tt.later()
			}
			if err := s.sync(); !errors.Is(err, boom) || !errors.Is(err, ErrSyncFailed) {
				t.Fatalf("sync = %v, want %v and ErrSyncFailed", err, boom)
			}
			for range 3 {
				if err := s.sync(); !errors.Is(err, ErrSyncFailed) || !errors.Is(err, boom) {
					t.Fatalf("sync after a failed fsync = %v, want ErrSyncFailed wrapping the first failure", err)
				}
			}
			if n := fsyncs.Load(); n != 1 {
				t.Errorf("%d fsyncs, want 1: none after the failure is trusted, so none is run", n)
			}
			if err := s.poisoned(); !errors.Is(err, ErrSyncFailed) {
				t.Errorf("poisoned = %v", err)
			}
		})
	}
}

// TestWALSyncFailureReachesWaiters: callers that queued behind the fsync
// that fails, waiting for the next one, get the failure too.
func TestWALSyncFailureReachesWaiters(t *testing.T) {
	boom := errors.New("boom")
	release := make(chan struct{})
	s := newWALSync("", nil)
	var fsyncs atomic.Int32
	s.fsync = func() error {
		if fsyncs.Add(1) == 1 {
			<-release
			return boom
		}
		return nil
	}
	first := make(chan error, 1)
	go func() { first <- s.sync() }()
	const waiters = 3
	errs := make(chan error, waiters)
	for range waiters {
		go func() { errs <- s.sync() }()
	}
	time.Sleep(20 * time.Millisecond) // let them queue (one coming late is held the same)
	close(release)
	if err := <-first; !errors.Is(err, boom) {
		t.Fatalf("first sync = %v", err)
	}
	for range waiters {
		if err := <-errs; !errors.Is(err, ErrSyncFailed) {
			t.Errorf("a waiter's sync = %v, want ErrSyncFailed", err)
		}
	}
}

// TestWALLogFollowsTheFile: the log is fsynced through one descriptor
// while it is the same file, and through a new one once SQLite removed
// it and made another.
func TestWALLogFollowsTheFile(t *testing.T) {
	path := t.TempDir() + "/db-wal"
	l := &walLog{path: path, fsync: (*os.File).Sync}
	defer func() {
		if err := l.close(); err != nil {
			t.Error(err)
		}
	}()
	if err := l.sync(); err != nil || l.f != nil {
		t.Fatalf("no log: sync = %v, descriptor held %v", err, l.f != nil)
	}
	if err := os.WriteFile(path, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.sync(); err != nil || l.f == nil {
		t.Fatalf("sync = %v, descriptor held %v", err, l.f != nil)
	}
	held := l.f
	if err := l.sync(); err != nil || l.f != held {
		t.Fatalf("same log: sync = %v, same descriptor %v", err, l.f == held)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("b"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.sync(); err != nil || l.f == held || l.f == nil {
		t.Fatalf("new log: sync = %v, descriptor replaced %v", err, l.f != held)
	}
}

// TestWALSyncMissingLog: no write-ahead log means nothing to sync.
func TestWALSyncMissingLog(t *testing.T) {
	if err := newWALSync(t.TempDir()+"/none-wal", nil).sync(); err != nil {
		t.Fatal(err)
	}
}

// TestHandoffSyncFailureAcknowledgesNothing: once an fsync of the queue's
// log failed, the Enqueue it covered and every later one fail (the SCP
// answers those C-STOREs with a failure status), even when the next fsync
// would succeed; after a restart every row acknowledged before it is
// there.
func TestHandoffSyncFailureAcknowledgesNothing(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "test.db")
	var logged bytes.Buffer
	db := openLogging(t, path, &logged)
	h := db.Handoff()
	if _, err := h.Enqueue(ctx, "incoming/acked", t0, nil); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("EIO")
	var fsyncs atomic.Int32
	real := db.qwal.fsync
	db.qwal.fsync = func() error {
		if fsyncs.Add(1) == 1 {
			return boom
		}
		return real()
	}
	for _, key := range []string{"incoming/first", "incoming/later"} {
		if _, err := h.Enqueue(ctx, key, t0, nil); !errors.Is(err, ErrSyncFailed) {
			t.Fatalf("Enqueue %s after the failed fsync = %v, want ErrSyncFailed", key, err)
		}
	}
	if err := h.SyncFailed(); !errors.Is(err, boom) {
		t.Fatalf("SyncFailed = %v", err)
	}
	toldOnce(t, &logged, "test-queue.db", "write-ahead log")
	db = reopen(t, db, path)
	if err := db.SyncFailed(); err != nil {
		t.Fatalf("after a restart: SyncFailed = %v", err)
	}
	keys, err := db.Handoff().Pending(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(keys, "incoming/acked") {
		t.Fatalf("after a restart the queue holds %q, without the acknowledged key", keys)
	}
	if _, err := db.Handoff().Enqueue(ctx, "incoming/retried", t0, nil); err != nil {
		t.Fatalf("Enqueue after a restart = %v", err)
	}
}

// TestWALLogOpenFailureIsNotFinal: a sync that could not open the log
// (a descriptor short, EMFILE, or any failure before an fsync ran) lost
// nothing, so it fails its callers and the next sync tries again; only a
// failed fsync is final. Every failure was final, so a transient one
// before any fsync refused C-STOREs until a restart.
func TestWALLogOpenFailureIsNotFinal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db-wal")
	if err := os.Mkdir(path, 0o700); err != nil { // opened read-write: EISDIR
		t.Fatal(err)
	}
	s := newWALSync(path, nil)
	defer func() {
		if err := s.close(); err != nil {
			t.Error(err)
		}
	}()
	if err := s.sync(); err == nil || errors.Is(err, ErrSyncFailed) {
		t.Fatalf("sync of a log that cannot be opened = %v, want its failure, not ErrSyncFailed", err)
	}
	if err := s.poisoned(); err != nil {
		t.Fatalf("poisoned = %v after no fsync ran", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("log"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.sync(); err != nil {
		t.Fatalf("sync once the log opens = %v", err)
	}
}

// TestCheckpointSyncFailureIsFinal: a checkpoint whose fsync fails ends
// durable commits as a failed fsync of the log does (Sync fails, told
// once), and no checkpoint runs after it: a later one would fsync through
// a descriptor already told of the error, succeed, and start the log over
// while the pages the failed fsync covered are not on the disk. Close
// leaves the log to the restart, whose recovery has every commit. SQLite's
// automatic checkpoint ignored the failure, and the next one went on.
func TestCheckpointSyncFailureIsFinal(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "test.db")
	var logged bytes.Buffer
	db := openLogging(t, path, &logged)
	ck := db.w.ckpt
	ck.frames = 1 // a checkpoint after every commit
	real := ck.run
	var passive, failAt atomic.Int32
	ck.run = func(mode string) (int, int, error) {
		if mode == "PASSIVE" && passive.Add(1) == failAt.Load() {
			return 0, 0, fmt.Errorf("disk I/O error: %w", errCheckpointSync)
		}
		return real(mode)
	}
	put := func(key string) {
		t.Helper()
		if err := db.w.run(ctx, func(q *querier) error {
			_, err := q.ExecContext(ctx, `INSERT INTO documents(key, content_type, time, body) VALUES (?, 'x', 0, randomblob(20000))`, key)
			return err
		}); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	put("before")
	if n := passive.Load(); n != 1 {
		t.Fatalf("%d checkpoints after a commit with the log over its frames, want 1", n)
	}
	if log, copied, err := real("NOOP"); err != nil || log == 0 || copied != log {
		t.Fatalf("after the writer's checkpoint the log has %d frames, %d copied (%v); want all copied", log, copied, err)
	}
	if err := db.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	failAt.Store(2)
	put("failed")
	if err := db.Sync(ctx); !errors.Is(err, ErrSyncFailed) || !errors.Is(err, errCheckpointSync) {
		t.Fatalf("Sync after a checkpoint's failed fsync = %v, want ErrSyncFailed", err)
	}
	if err := db.SyncFailed(); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("SyncFailed = %v", err)
	}
	put("after")
	if n := passive.Load(); n != 2 {
		t.Errorf("%d checkpoints, want 2: none after the failed one", n)
	}
	toldOnce(t, &logged, "test.db", "checkpoint")
	db = reopen(t, db, path, func() {
		if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
			t.Fatalf("after Close the log is %v (%v): a checkpoint at close, trusted, removed it", fi, err)
		}
	})
	for _, key := range []string{"before", "failed", "after"} {
		if _, _, err := db.Document(ctx, key); err != nil {
			t.Errorf("after a restart: %s: %v", key, err)
		}
	}
}

// TestCheckpointSyncFailedCodes: only a checkpoint that failed in an fsync
// is final; one that failed before (a full disk, busy) is tried again.
func TestCheckpointSyncFailedCodes(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("x: %w", errCheckpointSync), true},
		{errors.New("database or disk is full"), false},
		{context.Canceled, false},
	} {
		if got := checkpointSyncFailed(tt.err); got != tt.want {
			t.Errorf("checkpointSyncFailed(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// TestCloseDuringSync: Close waits for a sync running on the log's
// descriptor before closing it, and a sync after Close fails with
// ErrClosed instead of opening the log again. Close released the
// descriptor under the feet of a running fsync (go test -race saw it).
func TestCloseDuringSync(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Handoff().Enqueue(ctx, "incoming/a", t0, nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				err := db.Sync(ctx)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Sync = %v, want nil or ErrClosed", err)
					return
				}
			}
		}()
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := db.Sync(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close = %v, want ErrClosed", err)
	}
}

// openLogging opens the database at path logging to logged.
func openLogging(t *testing.T, path string, logged *bytes.Buffer) *DB {
	t.Helper()
	db, err := Open(context.Background(), path, WithLogger(slog.New(slog.NewJSONHandler(logged, nil))))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// reopen closes db, runs each of between, and opens the database at path
// again, as a restart does; the test closes it at its end.
func reopen(t *testing.T, db *DB, path string, between ...func()) *DB {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range between {
		f()
	}
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	return db
}

// toldOnce checks that a sync's final failure is told once, naming the
// database's file, not at each refusal after it, by a line whose text
// names the fsync that failed (what: "write-ahead log", "checkpoint"):
// the one line, told for both, said "write-ahead log fsync failed" for a
// checkpoint's too.
func toldOnce(t *testing.T, logged *bytes.Buffer, file, what string) {
	t.Helper()
	if n := strings.Count(logged.String(), SyncFailedLog); n != 1 || !strings.Contains(logged.String(), `"database":"`+file+`"`) {
		t.Errorf("%d %q lines naming %s, want 1; log:\n%s", n, SyncFailedLog, file, logged.String())
	}
	if !strings.Contains(SyncFailedLog, what) {
		t.Errorf("the line told for a failed fsync (%s) says %q", what, SyncFailedLog)
	}
}
