package jsonlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
)

// An Episode logs a condition that repeats while it lasts (a write that
// fails again at each retry of its caller) once when it starts and once
// when it clears, with how many times it occurred, rather than once each
// time: a staging disk full made a journal log three ERROR lines a second
// for as long as the audit writer retried (578 in 90 s, found by the
// operator drill). Its zero value is ready; it is safe for concurrent use.
type Episode struct {
	on    atomic.Bool // a fast path for Clear, which may be called on every success
	mu    sync.Mutex
	count int
	cause string // the root cause of the occurrences logged last (causeOf)
}

// Occurred notes one occurrence of err; the first of an episode is logged
// (msg, attrs and err, at level), the others only counted, unless their
// root cause differs from the one logged last (an I/O error while a disk
// is full is not hidden as one more "no space"). It reports whether it
// was logged.
func (e *Episode) Occurred(log *slog.Logger, level slog.Level, err error, msg string, attrs ...any) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.count++
	cause := causeOf(err)
	if e.on.Load() && cause == e.cause {
		return false
	}
	e.on.Store(true)
	e.cause = cause
	log.Log(context.Background(), level, msg, append(attrs, "err", err)...)
	return true
}

// causeOf names the innermost error of err's chain, by type and text (a
// syscall.Errno's "no space left on device"), without the paths and
// operations its wrappers add.
func causeOf(err error) string {
	for err != nil {
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	return fmt.Sprintf("%T: %v", err, err)
}

// Clear ends the episode, if one is on, logging msg at Info with attrs and
// occurrences, how many times it occurred. It reports whether one ended.
func (e *Episode) Clear(log *slog.Logger, msg string, attrs ...any) bool {
	if !e.on.Load() {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.on.Load() {
		return false
	}
	n := e.count
	e.on.Store(false)
	e.count = 0
	log.Info(msg, append(attrs, "occurrences", n)...)
	return true
}
