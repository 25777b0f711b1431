package localstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
)

// ErrSyncFailed is returned by every sync of a database after one fsync
// of its write-ahead log failed. On Linux a failed fsync may drop the
// dirty pages it could not write and clear the error, so a later fsync
// succeeds without the data ("fsyncgate"): no later sync is trusted to
// cover the commits the failed one covered, nor any commit after them
// (SQLite appends to the log behind pages that may be missing on disk).
// The database takes no more durable commits until the process is
// restarted and SQLite's recovery reads the log (see
// docs/design/filestore-durability.md, "A failed sync").
var ErrSyncFailed = errors.New("localstore: an fsync of the write-ahead log failed; restart to recover")

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
}

func newWALSync(wal string) *walSync {
	l := &walLog{path: wal}
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
		if err != nil && s.failed == nil && !errors.Is(err, errNoFsync) {
			s.failed = fmt.Errorf("%w: %w", ErrSyncFailed, err)
			if s.failedOnce != nil {
				s.failedOnce(s.failed)
			}
		}
		s.cond.Broadcast()
	}
	if s.failed != nil {
		return s.failed
	}
	return s.err
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
	path string
	f    *os.File // calls are serialized by walSync
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
	if err := l.f.Sync(); err != nil {
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
