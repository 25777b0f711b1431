package vfs

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
)

// ErrReserve is what a store's errors wrap while the free space on its
// file system is below the reserve it keeps (Reserve).
var ErrReserve = errors.New("free space below the reserve")

// Reserve is free space a store keeps on its file system, so that what
// must still be written once it fills (records, a journal's next segment,
// a local pipeline's database) has room: below it the store refuses work
// and its readiness goes off. The file store and the staged store share
// this rule.
type Reserve struct {
	// Bytes is the free space kept; 0 keeps none.
	Bytes uint64
	// Free returns the free space (FS.FreeBytes); an error wrapping
	// errors.ErrUnsupported where it is not measured.
	Free func() (uint64, error)
}

// Below reports whether the free space, less extra bytes, is below the
// reserve, and the free space: never where there is no reserve or the
// free space is not measured.
func (r Reserve) Below(extra uint64) (free uint64, below bool, err error) {
	if r.Bytes == 0 {
		return 0, false, nil
	}
	free, err = r.Free()
	if errors.Is(err, errors.ErrUnsupported) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return free, free < r.Bytes+extra, nil
}

// NoSpace reports whether err is a file system's refusal for lack of
// space: ENOSPC, or EDQUOT (a quota).
func NoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// Shortage remembers that a write failed for lack of space, and how much
// it needed, until that much is free again above the reserve: a store's
// readiness is off meanwhile, and its writes are refused before they
// write a byte (Admit, Ready: one rule). A write that was let try, on an
// association already open, failed only once it had streamed the whole
// object, again at each of the sender's attempts, and filled the disk to
// its last byte each time. Readiness that came back as soon as the
// failed write's partial file was removed (the free space back above the
// reserve and a record) went off again at the sender's next attempt of
// the same object, about once a second for an object larger than the
// free space: the load balancer added and removed the task each time.
// The zero value has no shortage; it is safe for concurrent use.
type Shortage struct {
	on    atomic.Bool
	mu    sync.Mutex
	need  uint64
	cause error
}

// Fail notes a write that failed for lack of space (cause) after needing
// at least need bytes; a shortage already on needs the larger of the
// two. It reports whether the shortage starts.
func (s *Shortage) Fail(cause error, need uint64) (started bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	started = !s.on.Load()
	if started {
		s.need = 0
	}
	s.need, s.cause = max(s.need, need), cause
	s.on.Store(true)
	return started
}

// On reports whether a shortage is on, without a lock.
func (s *Shortage) On() bool { return s.on.Load() }

// A ReserveError is Admit's and Ready's refusal for lack of free space:
// the free space measured is below the reserve, raised during a shortage
// by what the write that failed needed. It is (errors.Is) ErrReserve, and
// names a shortage's cause without wrapping it: the write refused found
// no full disk, and must not be noted as one that did (Note).
type ReserveError struct {
	// Free is the free space measured, Reserve the reserve (Reserve.Bytes).
	Free, Reserve uint64
	// Need is what a shortage awaits besides the reserve (0: none is on),
	// Cause the errno of the write that started it.
	Need  uint64
	Cause error
}

func (e *ReserveError) Error() string {
	msg := fmt.Sprintf("%v: %d bytes free, the store keeps %d (--min-free-bytes)", ErrReserve, e.Free, e.Reserve)
	if e.Cause == nil {
		return msg
	}
	return fmt.Sprintf("%s and, since a write failed (%v), the %d bytes it needed", msg, e.Cause, e.Need)
}

// Is makes a ReserveError ErrReserve.
func (e *ReserveError) Is(target error) bool { return target == ErrReserve }

// Admit is the rule for a write about to start: refused (*ReserveError)
// while the free space is below r's reserve, raised during a shortage by
// the bytes the failed write needed (a write the reserve is kept for, a
// record, does not ask). A shortage whose space is back ends (one
// statfs; logged as msgs.Checked), and the write goes on. Where the free
// space is not measured nothing is refused: only a write that succeeds
// can tell that space is back (Wrote). A failed statfs refuses, naming
// it. Ready applies the same rule.
func (s *Shortage) Admit(r Reserve, log *slog.Logger, msgs ShortageLog) error {
	_, err := s.admit(r, log, msgs)
	return err
}

// Ready is Admit's rule for a store's readiness, which, besides, stays off
// during a shortage where the free space is not measured, until a write
// succeeds: the error then wraps the failed write's cause (ENOSPC,
// EDQUOT).
func (s *Shortage) Ready(r Reserve, log *slog.Logger, msgs ShortageLog) error {
	unmeasured, err := s.admit(r, log, msgs)
	if err != nil {
		return err
	}
	return unmeasured
}

// admit is Admit; unmeasured is, where it lets a write through a shortage
// because the free space is not measured, why the store is not ready.
func (s *Shortage) admit(r Reserve, log *slog.Logger, msgs ShortageLog) (unmeasured, err error) {
	on := false
	if s.on.Load() {
		s.mu.Lock()
		defer s.mu.Unlock()
		on = s.on.Load()
	}
	kept := r
	if on {
		kept.Bytes += s.need
	}
	free, below, err := kept.Below(0)
	switch {
	case err != nil:
		return nil, fmt.Errorf("statfs: %w", err)
	case below && on:
		return nil, &ReserveError{Free: free, Reserve: r.Bytes, Need: s.need, Cause: s.cause}
	case below:
		return nil, &ReserveError{Free: free, Reserve: r.Bytes}
	case on && free == 0:
		// Not measured (kept.Bytes is not 0 after a write failed that
		// needed a byte).
		return fmt.Errorf("a write failed: %w; the free space is not measured: ready once a write succeeds", s.cause), nil
	case on:
		s.on.Store(false)
		log.Info(msgs.Checked, "free_bytes", free)
	}
	return nil, nil
}

// Wrote notes a write of n bytes that succeeded: it ends the shortage if
// the write was at least as large as the one that failed, or where the
// free space is not measured (a quota), which nothing but a write that
// succeeds can tell. A smaller write on a measured file system (a record:
// Admit refuses the others) leaves it to Admit and Ready: a small object
// that fits says nothing of the large one that did not. It reports
// whether the shortage ended.
func (s *Shortage) Wrote(r Reserve, n uint64) (ended bool) {
	if !s.on.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.on.Load() {
		return false
	}
	if n < s.need {
		probe := r
		probe.Bytes++ // measure even without a reserve
		free, below, err := probe.Below(0)
		if measured := err != nil || below || free > 0; measured {
			return false
		}
	}
	s.on.Store(false)
	return true
}

// A Turn is what a write did to a Shortage (Note).
type Turn struct {
	// NoSpace: the write failed for lack of space; Cause is its errno
	// (ENOSPC or EDQUOT).
	NoSpace bool
	Cause   error
	// Started: a shortage started with this failure. Ended: the write
	// succeeded and ended the shortage (Wrote).
	Started, Ended bool
}

// Note follows a write that needed at least need bytes (or, if it
// succeeded, wrote need bytes) and returned err: a failure for lack of
// space starts the shortage or raises what it awaits (Fail), a success
// may end it (Wrote), and any other failure changes nothing. The cause
// kept is the errno alone: the error itself may carry a file's path, and
// so an object's key.
func (s *Shortage) Note(r Reserve, err error, need uint64) Turn {
	switch {
	case err == nil:
		return Turn{Ended: s.Wrote(r, need)}
	case NoSpace(err):
		var errno syscall.Errno
		if !errors.As(err, &errno) {
			errno = syscall.ENOSPC
		}
		return Turn{NoSpace: true, Cause: errno, Started: s.Fail(errno, need)}
	}
	return Turn{}
}

// Stale reports whether a store's cached readiness no longer holds: a
// write failed for lack of space, or ended the shortage.
func (t Turn) Stale() bool { return t.NoSpace || t.Ended }

// ShortageLog is what a store logs when a write finds its file system
// out of space, when a write succeeds after that, and when a check
// (Admit, Ready) finds the space back: whole messages, each a literal in
// the store, so that a log query can filter on it.
type ShortageLog struct {
	OutOfSpace, SpaceBack, Checked string
}

// Log tells log that the file system ran out of space, with what the
// write needed, or has space again.
func (t Turn) Log(log *slog.Logger, msgs ShortageLog, need int64) {
	switch {
	case t.Started:
		log.Error(msgs.OutOfSpace, "err", t.Cause, "needed_bytes", need)
	case t.Ended:
		log.Info(msgs.SpaceBack)
	}
}
