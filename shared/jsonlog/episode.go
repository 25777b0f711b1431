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
	on     atomic.Bool // a fast path for Clear, which may be called on every success
	mu     sync.Mutex
	count  int
	causes map[string]bool // the root causes logged in this episode (causeOf)
}

// maxCauses bounds the causes an episode remembers, and so logs: an error
// whose own text changes at each occurrence is another cause each time.
const maxCauses = 8

// Occurred notes one occurrence of err; the first of an episode is logged
// (msg, attrs and err, at level), and each later one whose root cause the
// episode has not logged yet (an I/O error while a disk is full is not
// hidden as one more "no space"); the others are only counted. The
// episode remembers every cause it logged, up to maxCauses, so two causes
// alternating are logged once each, not at each turn. It reports whether
// it was logged.
func (e *Episode) Occurred(log *slog.Logger, level slog.Level, err error, msg string, attrs ...any) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.count++
	cause := causeOf(err)
	if e.causes[cause] || len(e.causes) >= maxCauses {
		return false
	}
	if e.causes == nil {
		e.causes = make(map[string]bool)
	}
	e.causes[cause] = true
	e.on.Store(true)
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
	clear(e.causes)
	log.Info(msg, append(attrs, "occurrences", n)...)
	return true
}
