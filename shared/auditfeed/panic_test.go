package auditfeed_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// panickySender panics on its first batch, unless it has already, then
// fails the next fail batches and takes every one after.
type panickySender struct {
	mu       sync.Mutex
	panicked bool
	fail     int
	sent     [][]byte
}

func (s *panickySender) Send(_ context.Context, msgs [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.panicked {
		s.panicked = true
		panic(fmt.Errorf("collector said no to %q", msgs[0]))
	}
	if s.fail > 0 {
		s.fail--
		return errors.New("collector down")
	}
	s.sent = append(s.sent, msgs...)
	return nil
}

func (s *panickySender) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent)
}

// TestFeederPanics: the SCP's audit feeder (local mode's, from the audit
// table; a task's, from its spool) had no panic recovery: a bug that
// panicked rendering a record or sending a batch ended the SCP, its
// value (the record's UIDs, a patient's name) written to standard error.
// As in the AWS feed's function, a record whose rendering panics is
// skipped as unsendable (counted and logged by its outbox key) and a
// batch whose sending panics fails and is sent again; the log tells the
// value by panicvalue.Describe alone. A record's panic is logged once,
// with its unsendable line, when its batch is delivered: it was logged at
// each try of the batch, every backoff while a collector was down.
// A sending's panic is logged at each try: it is that try's failure.
func TestFeederPanics(t *testing.T) {
	const patient = "DOE^JANE"
	tests := []struct {
		name        string
		renderPanic string // the association whose rendering panics
		sender      *panickySender
		wantSent    int
		wantDropped float64
		// wantFailures: a batch whose sending panicked is a failed send.
		wantFailures float64
		wantPanics   int // PanicLog lines
	}{
		{"a record's rendering panics", "a1", &panickySender{panicked: true}, 2, 1, 0, 1},
		{"sending a batch panics", "", &panickySender{}, 3, 0, 1, 1},
		// The batch is sent again: the record skipped the first time
		// is logged and counted dropped once, when its batch is delivered.
		{"a record's rendering panics, then its batch's sending", "a1", &panickySender{}, 2, 1, 1, 2},
		{"a record's rendering panics, the collector down for 3 tries", "a1", &panickySender{panicked: true, fail: 3}, 2, 1, 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp := spoolOf(t, 3)
			reg := prometheus.NewRegistry()
			m, err := auditfeed.NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			logs := &testenv.LogBuffer{}
			f := &auditfeed.Feeder{Outbox: sp, Sender: tt.sender, Metrics: m, Logger: slog.New(slog.NewJSONHandler(logs, nil)),
				Poll: 10 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
			auditfeed.SetFormat(f, func(e auditfeed.Entry, h auditfeed.Header) ([][]byte, error) {
				if e.Record.AssociationID == tt.renderPanic {
					panic("cannot render " + patient)
				}
				return auditfeed.FormatEntry(e, h)
			})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- f.Run(ctx) }()
			waitDelivered(t, sp, cancel, done)
			if got := tt.sender.count(); got != tt.wantSent {
				t.Errorf("sent %d messages, want %d", got, tt.wantSent)
			}
			dropped, err := metricnames.Scrape(reg, "dicom_ingest_audit_feed_records_dropped_total")
			if err != nil {
				t.Fatal(err)
			}
			if dropped != tt.wantDropped {
				t.Errorf("dropped %v, want %v", dropped, tt.wantDropped)
			}
			failures, err := metricnames.Scrape(reg, "dicom_ingest_audit_feed_send_failures_total")
			if err != nil {
				t.Fatal(err)
			}
			if failures != tt.wantFailures {
				t.Errorf("send failures %v, want %v", failures, tt.wantFailures)
			}
			if n := strings.Count(logs.String(), auditfeed.UnsendableLog); float64(n) != tt.wantDropped {
				t.Errorf("%d lines %q, want one for each record dropped", n, auditfeed.UnsendableLog)
			}
			out := logs.String()
			if n := strings.Count(out, auditfeed.PanicLog); n != tt.wantPanics {
				t.Errorf("%d lines %q, want %d:\n%s", n, auditfeed.PanicLog, tt.wantPanics, out)
			}
			for _, leak := range []string{patient, "MODALITY1", "collector said no"} {
				if strings.Contains(out, leak) {
					t.Errorf("the log tells the panic's value (%s):\n%s", leak, out)
				}
			}
			for _, want := range []string{auditfeed.PanicLog, `"panic":"a value of type `, `"stack":`} {
				if !strings.Contains(out, want) {
					t.Errorf("the log lacks %s:\n%s", want, out)
				}
			}
		})
	}
}
