package localstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrSyncFailed is returned by every sync of a database after one fsync
// of it failed: of its write-ahead log (walSync), or at a checkpoint, of
// the database file and its log (checkpointer). On Linux a failed fsync may drop the
// dirty pages it could not write and clear the error, so a later fsync
// succeeds without the data ("fsyncgate"): no later sync is trusted to
// cover the commits the failed one covered, nor any commit after them
// (SQLite appends to the log behind pages that may be missing on disk).
// The database takes no more durable commits until the process is
// restarted and SQLite's recovery reads the log (see
// docs/design/filestore-durability.md, "A failed sync"). Its text, as
// SyncFailedLog's, names both: the cause it wraps says which.
var ErrSyncFailed = errors.New("localstore: a database fsync failed (write-ahead log or checkpoint); restart to recover")

// errNoFsync marks a sync that failed before any fsync ran (the log could
// not be looked at or opened): nothing the kernel held was dropped, so it
// is not final and the next sync tries again.
var errNoFsync = errors.New("no fsync ran")

// walSync makes a database's commits durable with an fsync of its
// write-ahead log, one fsync for every caller waiting at the time. The
// databases commit with synchronous=NORMAL: a commit appends to the log
// without an fsync, atomic and consistent across a crash, only the last
// ones may be lost; whoever needs a commit durable calls sync after it.
// So the write lock is not held across an fsync (SQLite's FULL holds it),
// and the commits made while one fsync runs share the next.
//
// The first failed fsync is final (ErrSyncFailed); a failure to open the
// log before any fsync ran is not (errNoFsync). The log is fsynced through
// a descriptor kept open while the log is the same file, so that a write
// error is reported to it even when another descriptor (SQLite's own, at
// a checkpoint) saw it first: Linux reports an error once to each open
// descriptor, and one opened after it has been seen is not told.
type walSync struct {
	fsync func() error
	close func() error // releases the log's descriptor
	// failedOnce, when set, is told the first failure that ends durable
	// commits (once: every later sync returns it without an fsync), so
	// that the moment it happened is on the log, not only in the refusals
	// that follow it.
	failedOnce func(error)

	mu       sync.Mutex
	cond     *sync.Cond
	running  bool
	started  uint64 // fsyncs begun
	finished uint64 // fsyncs completed, the last with err
	err      error
	failed   error // the first failure: every later sync fails
	closed   bool  // shut: the descriptor is released, no fsync runs
}

// newWALSync syncs the log at path wal with fsync, (*os.File).Sync if nil.
func newWALSync(wal string, fsync func(*os.File) error) *walSync {
	if fsync == nil {
		fsync = (*os.File).Sync
	}
	l := &walLog{path: wal, fsync: fsync}
	s := &walSync{fsync: l.sync, close: l.close}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// sync returns once an fsync that began after the call has completed: it
// covers every commit that completed before the call.
func (s *walSync) sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// One that is running may have begun before the commits to cover.
	need := s.started + 1
	for s.finished < need {
		if s.failed != nil {
			return s.failed
		}
		if s.closed {
			return fmt.Errorf("localstore: sync: %w", ErrClosed)
		}
		if s.running {
			s.cond.Wait()
			continue
		}
		s.running = true
		s.started++
		gen := s.started
		s.mu.Unlock()
		err := s.fsync()
		s.mu.Lock()
		s.running = false
		s.finished, s.err = gen, err
		if err != nil && !errors.Is(err, errNoFsync) {
			s.failLocked(err)
		}
		s.cond.Broadcast()
	}
	if s.failed != nil {
		return s.failed
	}
	return s.err
}

// fail ends durable commits for good with err, a failed fsync that did
// not run through sync (a checkpoint's), unless one failed already.
func (s *walSync) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLocked(err)
}

func (s *walSync) failLocked(err error) {
	if s.failed != nil {
		return
	}
	s.failed = fmt.Errorf("%w: %w", ErrSyncFailed, err)
	if s.failedOnce != nil {
		s.failedOnce(s.failed)
	}
}

// shut waits for the fsync running, if any, and releases the log's
// descriptor; every sync after it fails with ErrClosed. Releasing it
// under a running fsync would close the descriptor that fsync uses.
func (s *walSync) shut() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.running {
		s.cond.Wait()
	}
	if s.closed {
		return nil
	}
	s.closed = true
	s.cond.Broadcast()
	return s.close()
}

// poisoned returns the failure that ended durable commits, nil if none.
func (s *walSync) poisoned() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// walLog fsyncs the write-ahead log at path through a descriptor kept
// open while path names the same file (SQLite removes the log when its
// last connection closes, and creates it again).
type walLog struct {
	path  string
	fsync func(*os.File) error // (*os.File).Sync but in tests (WithLogSync)
	f     *os.File             // calls are serialized by walSync
}

func (l *walLog) sync() error {
	cur, err := os.Stat(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		// No log: everything is in the database file, synced by its
		// checkpoint.
		return l.close()
	}
	if err != nil {
		return fmt.Errorf("localstore: sync: %w: %w", errNoFsync, err)
	}
	if l.f != nil {
		if held, err := l.f.Stat(); err != nil || !os.SameFile(held, cur) {
			if err := l.close(); err != nil {
				return err
			}
		}
	}
	if l.f == nil {
		f, err := os.OpenFile(l.path, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("localstore: sync: %w: %w", errNoFsync, err)
		}
		l.f = f
	}
	if err := l.fsync(l.f); err != nil {
		return fmt.Errorf("localstore: sync: %w", err)
	}
	return nil
}

func (l *walLog) close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("localstore: sync: close the log: %w", err)
	}
	return nil
}

// checkpointer copies a database's write-ahead log into the database file
// once the log holds at least frames pages not yet copied, after a commit
// (SQLite's automatic checkpoint, which Open turns off, did the same in
// the commit). It runs them itself to see how they end: SQLite's automatic
// checkpoint ignores its errors, and the database file is fsynced by
// SQLite's own descriptors, which walLog's does not cover.
//
// A checkpoint that does not copy the whole log does not fsync the
// database file, yet moves the log's backfill mark past the pages it
// copied; only the checkpoint that copies the rest fsyncs them. Should
// that fsync fail (the kernel having dropped pages it could not write),
// SQLite keeps the log, but the next checkpoint copies only the pages
// after the mark and fsyncs through a descriptor already told of the
// error: it succeeds, the log is started over, and the pages the failed
// fsync covered are nowhere on the disk. So a failed fsync at a
// checkpoint is final, as the log's own (walSync): no checkpoint runs
// after it, the log keeps every page since the last good one, and the
// restart's recovery copies them all again. Close does not close such a
// database either: SQLite checkpoints a database when its last
// connection closes, and removes the log once that checkpoint's fsync
// says it succeeded.
//
// The checkpoints run on the writer's connection, not one of the pool's
// (see writer): a connection a commit frees goes first to the reads
// waiting for one (the portal's, the API's), and the writer, whose units
// wait for the checkpoint (the SCP's C-STORE answers, on the queue's),
// would wait behind them for as long as they hold the pool.
//
// Open checkpoints each database once its schema is migrated, the whole
// log (all): a migration's commit, not fsynced (synchronous=NORMAL), and
// what a crash left in the log are copied into the database file and
// fsynced there at the start, not left for the first commit after it,
// whose checkpoint waits for the log's frames.
type checkpointer struct {
	conn   *sql.Conn // the writer's
	frames int
	wal    *walSync // told of a failed fsync; no checkpoint runs after one
	// run runs one checkpoint of mode ("NOOP" counts, "PASSIVE" copies)
	// and returns the log's frames and how many of them are copied.
	run func(mode string) (log, copied int, err error)
	// failed, when set, is told a checkpoint's failure that is not final
	// (the next commit's checkpoint tries again), once until one succeeds.
	failed  func(error)
	failing bool
}

// newCheckpointer checkpoints once the log holds frames pages not yet
// copied, telling wal of a failed fsync and failed (if set) of another
// failure; it runs on the connection its writer gives it (newWriter).
func newCheckpointer(frames int, wal *walSync, failed func(error)) *checkpointer {
	c := &checkpointer{frames: frames, wal: wal, failed: failed}
	c.run = c.pragma
	return c
}

func (c *checkpointer) pragma(mode string) (log, copied int, err error) {
	var busy int
	err = c.conn.QueryRowContext(context.Background(), `PRAGMA wal_checkpoint(`+mode+`)`).Scan(&busy, &log, &copied)
	return log, copied, err
}

// afterCommit checkpoints the database if its log has grown enough. Calls
// are serialized by the database's writer.
func (c *checkpointer) afterCommit() { c.checkpoint(c.frames) }

// all checkpoints the database if its log holds a page not yet copied:
// Open's, once the schema is migrated, before the writer takes a unit.
func (c *checkpointer) all() { c.checkpoint(1) }

// checkpoint copies the log into the database file once it holds at
// least frames pages not yet copied; a failed fsync is final (wal.fail),
// another failure is told once (failed) and the next call tries again.
func (c *checkpointer) checkpoint(frames int) {
	if c.wal.poisoned() != nil {
		return
	}
	log, copied, err := c.run("NOOP")
	if err == nil && log-copied < frames {
		return
	}
	if err == nil {
		_, _, err = c.run("PASSIVE")
	}
	switch {
	case err == nil:
		c.failing = false
	case checkpointSyncFailed(err):
		c.wal.fail(fmt.Errorf("localstore: checkpoint: %w", err))
	case !c.failing:
		c.failing = true
		if c.failed != nil {
			c.failed(fmt.Errorf("localstore: checkpoint: %w", err))
		}
	}
}

// errCheckpointSync marks a checkpoint whose fsync failed (tests inject
// it; SQLite says SQLITE_IOERR_FSYNC).
var errCheckpointSync = errors.New("fsync failed")

// checkpointSyncFailed reports whether a checkpoint failed in an fsync
// (of the log or of the database file), not before any ran.
func checkpointSyncFailed(err error) bool {
	var se *sqlite.Error
	return errors.Is(err, errCheckpointSync) || errors.As(err, &se) && se.Code() == sqlite3.SQLITE_IOERR_FSYNC
}
