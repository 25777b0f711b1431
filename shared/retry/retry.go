// Package retry is the one rule for work run again and again whose runs may
// fail (the journal's checkpoint, local mode's event delivery and
// announcer): a failure that cannot heal without a restart (Final) is told
// once, at ERROR, and the work is not run again; a transient one is run
// again after a backoff, MinBackoff doubling up to MaxBackoff whatever wakes
// the work meanwhile, and told at most once per backoff step.
package retry

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// The backoff of a transient failure: MinBackoff after the first, twice as
// long after each next one, up to MaxBackoff.
const (
	MinBackoff = 100 * time.Millisecond
	MaxBackoff = 10 * time.Second
)

// Final marks err as a failure that cannot heal without a restart (a failed
// fsync, after which no later one vouches for what the failed one was to
// write). Final(nil) is nil.
func Final(err error) error {
	if err == nil {
		return nil
	}
	return finalError{err}
}

// IsFinal reports whether err, or one it wraps, was marked by Final.
func IsFinal(err error) bool { return errors.As(err, new(finalError)) }

type finalError struct{ error }

func (e finalError) Unwrap() error { return e.error }

// Backoff is the state of one piece of work under the rule: Done takes
// each run's outcome and tells it, Ready says whether the work may run.
type Backoff struct {
	Log *slog.Logger
	// Msg is the line of a transient failure, told at Level with the
	// failure (err) and when the work runs again (retry_in).
	Msg   string
	Level slog.Level
	// FinalMsg is the line of a final failure, told once at ERROR.
	FinalMsg string

	retry time.Duration // the backoff of the last failure, 0 after a success
	until time.Time     // the work does not run before
	again *time.Timer
	final bool
}

// Done takes the outcome of a run: nil ends the backoff; a final failure is
// told and ends the work (Ready is false from then on); another is told
// and the work waits for its backoff step.
func (b *Backoff) Done(err error) {
	b.stopTimer()
	switch {
	case b.final:
	case err == nil:
		b.retry, b.until = 0, time.Time{}
	case IsFinal(err):
		b.final = true
		b.Log.Error(b.FinalMsg, "err", err)
	default:
		b.retry = min(max(2*b.retry, MinBackoff), MaxBackoff)
		b.until = time.Now().Add(b.retry)
		b.again = time.NewTimer(b.retry)
		b.Log.Log(context.Background(), b.Level, b.Msg, "err", err, "retry_in", b.retry)
	}
}

// Ready reports whether the work may run: no final failure, and the
// backoff of the last failure, if any, is over.
func (b *Backoff) Ready() bool { return !b.final && !time.Now().Before(b.until) }

// Stopped reports whether a final failure ended the work.
func (b *Backoff) Stopped() bool { return b.final }

// Again fires when the backoff of the last failure is over; nil when none
// is under way (a loop selecting on it wakes only for that).
func (b *Backoff) Again() <-chan time.Time {
	if b.again == nil {
		return nil
	}
	return b.again.C
}

// Stop releases the backoff's timer.
func (b *Backoff) Stop() { b.stopTimer() }

func (b *Backoff) stopTimer() {
	if b.again != nil {
		b.again.Stop()
		b.again = nil
	}
}
