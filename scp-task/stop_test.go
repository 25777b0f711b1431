package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// batches counts the batches sent to it.
type batches struct {
	mu sync.Mutex
	n  int
}

func (b *batches) Send(context.Context, [][]byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n++
	return nil
}

// TestFinishStop: at a clean stop the audit feed delivers what its outbox
// holds (the application-stop spooled last) before the process exits; a
// second signal (hurry) cuts that short, leaving the records for the next
// start with a line saying how many, as it cuts local mode's drain short.
// The feed was stopped without delivering what was pending.
func TestFinishStop(t *testing.T) {
	hurried, hurry := context.WithCancel(context.Background())
	hurry()
	for _, tc := range []struct {
		name    string
		hurry   context.Context
		batches int
		left    int
	}{
		{"a clean stop delivers", context.Background(), 1, 0},
		{"a second signal cuts it short", hurried, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spool, err := auditfeed.OpenSpool(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			stopRecord := associationaudit.Record{Event: associationaudit.EventApplicationStop, Time: time.Now(),
				AssociationID: "0123abcd", CalledAE: "INGEST", Reason: "shutdown requested"}
			if err := spool.Add(pipeline.AssociationAuditRecord(stopRecord, spoolSourceID)); err != nil {
				t.Fatal(err)
			}
			logs := &testenv.LogBuffer{}
			sent := &batches{}
			done := make(chan struct{})
			close(done) // the feed's loop has ended
			feed := &auditFeed{feeder: &auditfeed.Feeder{Outbox: spool, Sender: sent}, spool: spool,
				log: slog.New(slog.NewJSONHandler(logs, nil)), cancel: func() {}, done: done}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			finishStop(ctx, tc.hurry, nil, feed)
			b, err := spool.Backlog(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if sent.n != tc.batches || b.Count != tc.left {
				t.Errorf("%d batches sent, %d records left; want %d and %d", sent.n, b.Count, tc.batches, tc.left)
			}
			if said := strings.Contains(logs.String(), `"msg":"audit records left undelivered at stop; they are delivered after restart","undelivered":1`); said != (tc.left > 0) {
				t.Errorf("the stop's log says records were left: %v, want %v:\n%s", said, tc.left > 0, logs.String())
			}
		})
	}
}

// blockingStop is a close that takes all the time it is given (local
// mode's: a portal connection held, an event flush to a webhook that does
// not answer; a store's: a checkpoint waiting on the disk, an upload on
// S3): it returns once ctx ends, keeping why and its deadline. As a store
// it stores nothing.
type blockingStop struct {
	objectstore.Store
	deadline time.Time
	cause    error
}

func (b *blockingStop) Shutdown(ctx context.Context) error {
	b.deadline, _ = ctx.Deadline()
	<-ctx.Done()
	b.cause = context.Cause(ctx)
	return nil
}

// TestCloseAtExitCutBySecondSignal: the close after finishStop, local
// mode's or a store's without it (a journaled file store, the staged
// store), takes at most closeGrace, what the stop timeout leaves after the
// exit's grace, and a second signal, before it or while it runs, ends it
// at once (the journals and the database are crash-safe). Local mode's had
// 30 s of its own, beyond the stop timeout, which no signal cut; a store's
// had no time limit at all.
func TestCloseAtExitCutBySecondSignal(t *testing.T) {
	if exitGrace+closeGrace+time.Second > 10*time.Second { // infra/config's DrainMarginSeconds
		t.Fatalf("exit grace %v and close grace %v leave no second of the 10 s the stack leaves for the process to end", exitGrace, closeGrace)
	}
	if closerOf(nil, storeWithoutClose{}) != nil {
		t.Error("a store with nothing to finish is closed")
	}
	for _, tc := range []struct {
		name   string
		signal func(hurry context.CancelFunc) // when the second signal comes
	}{
		{"second signal before", func(hurry context.CancelFunc) { hurry() }},
		{"second signal during", func(hurry context.CancelFunc) { time.AfterFunc(10*time.Millisecond, hurry) }},
	} {
		for _, what := range []string{"local mode", "store"} {
			t.Run(tc.name+"/"+what, func(t *testing.T) {
				hurried, hurry := context.WithCancel(context.Background())
				defer hurry()
				tc.signal(hurry)
				closer := &blockingStop{}
				var c objectstore.Shutdowner = closer
				if what == "store" {
					c = closerOf(nil, closer)
				}
				start := time.Now()
				if err := closeAtExit(hurried, c, time.Now().Add(closeGrace)); err != nil {
					t.Fatal(err)
				}
				if closer.deadline.IsZero() || closer.deadline.After(start.Add(closeGrace+time.Second)) {
					t.Errorf("the close had until %v, beyond the close grace (%v)", closer.deadline, closeGrace)
				}
				if closer.cause == nil || !strings.Contains(closer.cause.Error(), "cut short by a second signal") {
					t.Errorf("the close ended by %v, not the second signal", closer.cause)
				}
			})
		}
	}
}

// storeWithoutClose is a store with nothing to finish at exit (S3 alone).
type storeWithoutClose struct{ objectstore.Store }

// TestExitDeadlineCountsFromTheStepBefore: each step of the stop after the
// drain has its grace from when the step before was to end at the latest,
// so a drain cut at its timeout that took a while to send its aborts, or a
// flush whose cancelled writes returned late, does not push the stop past
// the stop timeout's SIGKILL: the flush's 8 s counted from when the
// drain's Shutdown returned, the close's 2 s from when the flush did.
func TestExitDeadlineCountsFromTheStepBefore(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name         string
		prevEnd, now time.Time
		want         time.Time
	}{
		{"the step before ended early", t0.Add(60 * time.Second), t0.Add(5 * time.Second), t0.Add(5*time.Second + exitGrace)},
		{"the step before ended on time", t0, t0, t0.Add(exitGrace)},
		{"the step before ran over", t0, t0.Add(1500 * time.Millisecond), t0.Add(exitGrace)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitDeadline(tc.prevEnd, tc.now, exitGrace); !got.Equal(tc.want) {
				t.Errorf("exitDeadline = %v, want %v", got.Sub(t0), tc.want.Sub(t0))
			}
		})
	}
	// The whole stop after the drain's timeout: both graces and a second.
	drainEnd := t0
	flushEnd := exitDeadline(drainEnd, drainEnd.Add(900*time.Millisecond), exitGrace)
	closeEnd := exitDeadline(flushEnd, flushEnd.Add(700*time.Millisecond), closeGrace)
	if margin := 10 * time.Second; closeEnd.Sub(drainEnd) > margin-time.Second {
		t.Errorf("a stop whose steps each ran over ends %v after the drain's timeout; the stack's margin is %v", closeEnd.Sub(drainEnd), margin)
	}
}
