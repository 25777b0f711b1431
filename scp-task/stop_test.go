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
