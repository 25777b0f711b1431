package jsonlog

import (
	"context"
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
}

// Occurred notes one occurrence; the first of an episode is logged (msg
// and attrs, at level), the others only counted. It reports whether it
// was logged.
func (e *Episode) Occurred(log *slog.Logger, level slog.Level, msg string, attrs ...any) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.count++
	if e.on.Load() {
		return false
	}
	e.on.Store(true)
	log.Log(context.Background(), level, msg, attrs...)
	return true
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
