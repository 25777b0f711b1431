package auditfeed

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// panickySender panics on its first batch, then takes every batch.
type panickySender struct {
	mu       sync.Mutex
	panicked bool
	sent     [][]byte
}

func (s *panickySender) Send(_ context.Context, msgs [][]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.panicked {
		s.panicked = true
		panic(fmt.Errorf("collector said no to %q", msgs[0]))
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
// value by panicvalue.Describe alone.
func TestFeederPanics(t *testing.T) {
	const patient = "DOE^JANE"
	rec := func(i int) pipeline.AuditRecord {
		return pipeline.AssociationAuditRecord(associationaudit.Record{
			Event: associationaudit.EventRejected, Time: time.Date(2026, 1, 15, 10, 0, i, 0, time.UTC),
			AssociationID: fmt.Sprintf("a%d", i), CallingAE: "MODALITY1", CalledAE: "INGEST", PeerAddr: "10.1.2.3:4000", Seq: uint64(i),
		}, "dicom-ingest-test")
	}
	tests := []struct {
		name        string
		renderPanic string // the association whose rendering panics
		sender      Sender
		wantSent    int
		wantDropped float64
	}{
		{"a record's rendering panics", "a1", &panickySender{panicked: true}, 2, 1},
		{"sending a batch panics", "", &panickySender{}, 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp, err := OpenSpool(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if err := sp.Add(rec(i)); err != nil {
					t.Fatal(err)
				}
			}
			reg := prometheus.NewRegistry()
			m, err := NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			logs := &testenv.LogBuffer{}
			f := &Feeder{Outbox: sp, Sender: tt.sender, Metrics: m, Logger: slog.New(slog.NewJSONHandler(logs, nil)),
				Poll: 10 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
				format: func(e Entry, h Header) ([][]byte, error) {
					if e.Record.AssociationID == tt.renderPanic {
						panic("cannot render " + patient)
					}
					return formatEntry(e, h)
				}}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- f.Run(ctx) }()
			deadline := time.Now().Add(10 * time.Second)
			for b, _ := sp.Backlog(context.Background()); b.Count != 0; b, _ = sp.Backlog(context.Background()) {
				if time.Now().After(deadline) {
					t.Fatalf("backlog %d", b.Count)
				}
				time.Sleep(5 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got := tt.sender.(*panickySender).count(); got != tt.wantSent {
				t.Errorf("sent %d messages, want %d", got, tt.wantSent)
			}
			if got := testutil.ToFloat64(m.droppedC.WithLabelValues(reasonUnrenderable)); got != tt.wantDropped {
				t.Errorf("dropped %v as unrenderable, want %v", got, tt.wantDropped)
			}
			out := logs.String()
			for _, leak := range []string{patient, "MODALITY1", "collector said no"} {
				if strings.Contains(out, leak) {
					t.Errorf("the log tells the panic's value (%s):\n%s", leak, out)
				}
			}
			for _, want := range []string{PanicLog, `"panic":"a value of type `, `"stack":`} {
				if !strings.Contains(out, want) {
					t.Errorf("the log lacks %s:\n%s", want, out)
				}
			}
		})
	}
}
