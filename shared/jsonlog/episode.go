package jsonlog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
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

// causeOf names the innermost errors of err's chain, by type and text (a
// syscall.Errno's "no space left on device"), without the paths and
// operations its wrappers add; an error joining several (errors.Join,
// fmt.Errorf with more than one %w) by the causes of each, in order. An
// innermost error whose own text changes from one occurrence to the next
// (a path, a count) makes each occurrence another cause.
func causeOf(err error) string {
	switch x := err.(type) {
	case interface{ Unwrap() []error }:
		var causes []string
		for _, e := range x.Unwrap() {
			if e != nil {
				causes = append(causes, causeOf(e))
			}
		}
		if len(causes) > 0 {
			return strings.Join(causes, "; ")
		}
	case interface{ Unwrap() error }:
		if next := x.Unwrap(); next != nil {
			return causeOf(next)
		}
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
