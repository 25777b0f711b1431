package localstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
)

// walSync makes a database's commits durable with an fsync of its
// write-ahead log, one fsync for every caller waiting at the time. The
// databases commit with synchronous=NORMAL: a commit appends to the log
// without an fsync, atomic and consistent across a crash, only the last
// ones may be lost; whoever needs a commit durable calls sync after it.
// So the write lock is not held across an fsync (SQLite's FULL holds it),
// and the commits made while one fsync runs share the next.
type walSync struct {
	fsync func() error

	mu       sync.Mutex
	cond     *sync.Cond
	running  bool
	started  uint64 // fsyncs begun
	finished uint64 // fsyncs completed, the last with err
	err      error
}

func newWALSync(wal string) *walSync {
	s := &walSync{fsync: func() error { return fsyncLog(wal) }}
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
		s.cond.Broadcast()
	}
	return s.err
}

// fsyncLog fsyncs the write-ahead log at path.
func fsyncLog(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // no log: everything is in the database file, synced by its checkpoint
	}
	if err != nil {
		return fmt.Errorf("localstore: sync: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("localstore: sync: %w", err)
	}
	return nil
}
