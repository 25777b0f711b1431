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

// blockingStop is local mode's Shutdown that takes all the time it is
// given (a portal connection held, an event flush to a webhook that does
// not answer): it returns once ctx ends, keeping why and its deadline.
type blockingStop struct {
	deadline time.Time
	cause    error
}

func (b *blockingStop) Shutdown(ctx context.Context) error {
	b.deadline, _ = ctx.Deadline()
	<-ctx.Done()
	b.cause = context.Cause(ctx)
	return nil
}

// TestCloseLocalCutBySecondSignal: local mode's stop, after finishStop,
// takes at most closeGrace, what the stop timeout leaves after the exit's
// grace, and a second signal, before it or while it runs, ends it at once
// (the journal and the database are crash-safe). It had 30 s of its own,
// beyond the stop timeout, which no signal cut.
func TestCloseLocalCutBySecondSignal(t *testing.T) {
	if exitGrace+closeGrace > 10*time.Second { // infra/config's DrainMarginSeconds
		t.Fatalf("exit grace %v and close grace %v exceed the 10 s the stack leaves", exitGrace, closeGrace)
	}
	for _, tc := range []struct {
		name   string
		signal func(hurry context.CancelFunc) // when the second signal comes
	}{
		{"second signal before", func(hurry context.CancelFunc) { hurry() }},
		{"second signal during", func(hurry context.CancelFunc) { time.AfterFunc(10*time.Millisecond, hurry) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hurried, hurry := context.WithCancel(context.Background())
			defer hurry()
			tc.signal(hurry)
			lm := &blockingStop{}
			start := time.Now()
			if err := closeLocal(hurried, lm); err != nil {
				t.Fatal(err)
			}
			if lm.deadline.IsZero() || lm.deadline.After(start.Add(closeGrace+time.Second)) {
				t.Errorf("local mode's stop had until %v, beyond the close grace (%v)", lm.deadline, closeGrace)
			}
			if lm.cause == nil || !strings.Contains(lm.cause.Error(), "cut short by a second signal") {
				t.Errorf("local mode's stop ended by %v, not the second signal", lm.cause)
			}
		})
	}
}
