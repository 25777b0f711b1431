package auditfeed_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed/auditfeedtest"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// record is a rejected association's record, which gives one message.
func record(i int) pipeline.AuditRecord {
	return pipeline.AssociationAuditRecord(associationaudit.Record{
		Event: associationaudit.EventRejected, Time: time.Date(2026, 1, 15, 10, 0, i, 0, time.UTC),
		AssociationID: fmt.Sprintf("a%d", i), CallingAE: "MODALITY1", CalledAE: "INGEST", PeerAddr: "10.1.2.3:4000", Seq: uint64(i),
	}, "dicom-ingest-test")
}

// spoolOf is a spool holding records 0 to n-1.
func spoolOf(t *testing.T, n int) *auditfeed.Spool {
	t.Helper()
	sp, err := auditfeed.OpenSpool(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := sp.Add(record(i)); err != nil {
			t.Fatal(err)
		}
	}
	return sp
}

// flaky fails its first n batches.
type flaky struct {
	mu      sync.Mutex
	fail    int
	batches [][][]byte
}

func (f *flaky) Send(_ context.Context, msgs [][]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail > 0 {
		f.fail--
		return errors.New("collector down")
	}
	f.batches = append(f.batches, msgs)
	return nil
}

func (f *flaky) sent() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, b := range f.batches {
		n += len(b)
	}
	return n
}

// runFeeder runs a feeder of sp to snd in batches of batch records until
// cancel; done gives Run's result.
func runFeeder(t *testing.T, sp auditfeed.Outbox, snd auditfeed.Sender, batch int) (*prometheus.Registry, context.CancelFunc, chan error) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := auditfeed.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	f := &auditfeed.Feeder{Outbox: sp, Sender: snd, Metrics: m, Batch: batch, Poll: 10 * time.Millisecond,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	return reg, cancel, done
}

func TestFeederDeliversSpoolThroughFailures(t *testing.T) {
	sp := spoolOf(t, 5)
	snd := &flaky{fail: 3}
	reg, cancel, done := runFeeder(t, sp, snd, 2)
	testenv.EventuallySawWithin(t, 10*time.Second, "the 5 records sent, no backlog", func() (bool, string) {
		backlog := scrape(t, reg, "dicom_ingest_audit_feed_backlog_records")
		return snd.sent() >= 5 && backlog == 0, fmt.Sprintf("sent %d of 5, backlog %v", snd.sent(), backlog)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if b, _ := sp.Backlog(context.Background()); b.Count != 0 {
		t.Errorf("backlog %d after delivery", b.Count)
	}
	// In order, in batches of at most 2.
	var ids []string
	for _, b := range snd.batches {
		if len(b) > 2 {
			t.Errorf("batch of %d", len(b))
		}
		for _, msg := range b {
			ids = append(ids, strings.SplitN(strings.SplitN(string(msg), `id="`, 2)[1], `"`, 2)[0])
		}
	}
	if want := "assoc:a0:0:association-rejected,assoc:a1:1:association-rejected,assoc:a2:2:association-rejected,assoc:a3:3:association-rejected,assoc:a4:4:association-rejected"; strings.Join(ids, ",") != want {
		t.Errorf("ids = %v", ids)
	}
	if got := scrape(t, reg, "dicom_ingest_audit_feed_send_failures_total"); got != 3 {
		t.Errorf("failures = %v", got)
	}
}

// TestFeederPassesOverRecordsWithoutMessage: a record that gives no message
// (an association accepted without TLS: A.5.3 has no message it can fill)
// leaves the outbox as delivered, sending and counting nothing.
func TestFeederPassesOverRecordsWithoutMessage(t *testing.T) {
	sp, err := auditfeed.OpenSpool(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	accepted := record(0)
	accepted = pipeline.AssociationAuditRecord(associationaudit.Record{Event: associationaudit.EventAccepted, Time: accepted.Time,
		AssociationID: "a0", CallingAE: "MODALITY1", CalledAE: "INGEST", PeerAddr: "10.1.2.3:4000"}, "dicom-ingest-test")
	for _, r := range []pipeline.AuditRecord{accepted, record(1)} {
		if err := sp.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	snd := &flaky{}
	reg, cancel, done := runFeeder(t, sp, snd, 10)
	waitDelivered(t, sp, cancel, done)
	if snd.sent() != 1 || scrape(t, reg, "dicom_ingest_audit_feed_messages_sent_total") != 1 ||
		scrape(t, reg, "dicom_ingest_audit_feed_records_dropped_total") != 0 {
		t.Errorf("sent %d, counted %v sent and %v dropped; want the rejection's message alone", snd.sent(),
			scrape(t, reg, "dicom_ingest_audit_feed_messages_sent_total"), scrape(t, reg, "dicom_ingest_audit_feed_records_dropped_total"))
	}
}

// TestFeederFlush: a stop's last delivery sends what the outbox holds,
// batch after batch, and leaves what it could not (a failing collector, a
// stop cut short) in the outbox, counted, without retrying.
func TestFeederFlush(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name       string
		ctx        context.Context
		fail       int
		sent, left int
		err        bool
	}{
		{name: "everything, in batches", ctx: context.Background(), sent: 5},
		{name: "the collector fails", ctx: context.Background(), fail: 1, left: 5, err: true},
		{name: "the stop is cut short", ctx: cancelled, left: 5, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sp := spoolOf(t, 5)
			snd := &flaky{fail: tc.fail}
			f := &auditfeed.Feeder{Outbox: sp, Sender: snd, Batch: 2}
			left, err := f.Flush(tc.ctx)
			if snd.sent() != tc.sent || left != tc.left || (err != nil) != tc.err {
				t.Errorf("Flush sent %d, left %d, err %v; want %d sent, %d left, an error %v", snd.sent(), left, err, tc.sent, tc.left, tc.err)
			}
			if b, err := sp.Backlog(context.Background()); err != nil || b.Count != tc.left {
				t.Errorf("spool backlog %d (%v), want %d", b.Count, err, tc.left)
			}
		})
	}
}

// confirmThenStop confirms its first batch and, before it returns, waits
// for the stop it announces on confirmed: a stop between the collector's
// confirmation and the outbox's mark. It confirms later batches at once.
type confirmThenStop struct {
	flaky
	confirmed chan struct{}
	once      sync.Once
}

func (c *confirmThenStop) Send(ctx context.Context, msgs [][]byte) error {
	if err := c.flaky.Send(ctx, msgs); err != nil {
		return err
	}
	c.once.Do(func() {
		close(c.confirmed)
		<-ctx.Done()
	})
	return nil
}

// stoppedOutbox is a Spool whose mark fails once its context has ended,
// as the local outbox's database write does, and notes whether the mark
// was bounded by a deadline.
type stoppedOutbox struct {
	*auditfeed.Spool
	mu      sync.Mutex
	bounded bool
}

func (o *stoppedOutbox) Delivered(ctx context.Context, entries []auditfeed.Entry) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mark: %w", err)
	}
	o.mu.Lock()
	_, o.bounded = ctx.Deadline()
	o.mu.Unlock()
	return o.Spool.Delivered(ctx, entries)
}

// TestFeederMarksAConfirmedBatchAtAStop: a stop that comes once the
// collector confirmed a batch, before the outbox marked it, leaves the
// batch marked, by a mark with a deadline of its own: the stop's last
// delivery (Flush) has nothing to send again. The mark used the stopped
// context and failed, and the Flush sent the batch a second time.
func TestFeederMarksAConfirmedBatchAtAStop(t *testing.T) {
	for _, tc := range []struct {
		name string
		// stop delivers through f (or a feeder of its own, on ob and snd)
		// and stops it once snd confirmed a batch.
		stop func(t *testing.T, f *auditfeed.Feeder, ob *stoppedOutbox, snd *confirmThenStop)
	}{
		{"Run is stopped", func(t *testing.T, _ *auditfeed.Feeder, ob *stoppedOutbox, snd *confirmThenStop) {
			_, cancel, done := runFeeder(t, ob, snd, 5)
			<-snd.confirmed
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}},
		{"Flush is cut short", func(t *testing.T, f *auditfeed.Feeder, _ *stoppedOutbox, snd *confirmThenStop) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				<-snd.confirmed
				cancel()
			}()
			if left, _ := f.Flush(ctx); left != 0 {
				t.Errorf("Flush cut short after the confirmation left %d records, want the confirmed batch marked", left)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ob := &stoppedOutbox{Spool: spoolOf(t, 5)}
			snd := &confirmThenStop{confirmed: make(chan struct{})}
			f := &auditfeed.Feeder{Outbox: ob, Sender: snd, Batch: 5}
			tc.stop(t, f, ob, snd)
			// The stop's last delivery.
			if left, err := f.Flush(context.Background()); left != 0 || err != nil {
				t.Errorf("Flush after the stop: %d left, err %v", left, err)
			}
			if snd.sent() != 5 {
				t.Errorf("the collector got %d messages, want the 5 records once", snd.sent())
			}
			ob.mu.Lock()
			defer ob.mu.Unlock()
			if !ob.bounded {
				t.Error("the mark had no deadline: an outbox that blocks would hold the stop")
			}
		})
	}
}

func TestSpool(t *testing.T) {
	dir := t.TempDir()
	sp, err := auditfeed.OpenSpool(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := sp.Add(record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Add(record(3)); !errors.Is(err, auditfeed.ErrSpoolFull) {
		t.Errorf("Add to a full spool = %v", err)
	}
	ctx := context.Background()
	b, _ := sp.Backlog(ctx)
	if b.Count != 3 || b.Oldest.IsZero() || time.Since(b.Oldest) > time.Minute {
		t.Errorf("backlog = %+v", b)
	}
	es, err := sp.Pending(ctx, 2)
	if err != nil || len(es) != 2 || es[0].Record.AssociationID != "a0" || es[1].Record.AssociationID != "a1" {
		t.Fatalf("Pending = %+v, %v", es, err)
	}
	if err := sp.Delivered(ctx, es[:1]); err != nil {
		t.Fatal(err)
	}
	// A restart finds what was not delivered, in order.
	sp2, err := auditfeed.OpenSpool(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	es, _ = sp2.Pending(ctx, 10)
	if len(es) != 2 || es[0].Record.AssociationID != "a1" || es[1].Record.AssociationID != "a2" {
		t.Errorf("after reopen: %+v", es)
	}
	for _, e := range es {
		if strings.Contains(e.Key, "1.2.") || strings.Contains(e.Key, "a1") {
			t.Errorf("entry key %q names the record", e.Key)
		}
	}
}

// TestFeederToRsyslogAfterOutage: records added while the collector is
// down reach it once it is up, every one, in order.
func TestFeederToRsyslogAfterOutage(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	addr := testenv.FreeAddr(t)
	sp, err := auditfeed.OpenSpool(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	f := &auditfeed.Feeder{Outbox: sp, Sender: collector(t, pki, addr, false), Header: auditfeed.Header{Hostname: "scp"},
		Poll: 20 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = f.Run(ctx) }()
	for i := range 20 {
		if err := sp.Add(record(i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // a few failed attempts
	if b, _ := sp.Backlog(ctx); b.Count != 20 {
		t.Fatalf("backlog %d while the collector is down", b.Count)
	}
	rs := auditfeedtest.StartRsyslog(t, auditfeedtest.Options{PKI: pki, Addr: addr})
	got := rs.WaitFor(t, 20*time.Second, func(m []auditfeedtest.Received) bool {
		u, _ := auditfeedtest.Unique(m)
		return len(u) == 20
	})
	for i, m := range got[:20] {
		if want := record(i).ID; m.ID != want {
			t.Errorf("message %d = %s, want %s", i, m.ID, want)
		}
	}
}

// waitDelivered waits until sp holds nothing undelivered, then stops
// its feeder (cancel) and checks what its Run returned (done).
func waitDelivered(t *testing.T, sp *auditfeed.Spool, cancel context.CancelFunc, done chan error) {
	t.Helper()
	testenv.EventuallySawWithin(t, 10*time.Second, "nothing undelivered", func() (bool, string) {
		b, err := sp.Backlog(context.Background())
		return err == nil && b.Count == 0, fmt.Sprintf("backlog %d (%v)", b.Count, err)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// scrape reads metric name from reg as metricnames.Scrape does: summed
// over its labels (a labelled counter, dropped records, read by its first
// series alone was a reason other than the one the test meant).
func scrape(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	v, err := metricnames.Scrape(reg, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// markingThenFailing is a Spool whose first Delivered marks only the first
// marked entries (as Spool.Delivered removing its files one by one and
// failing on the next) and fails, or, with dies, marks them all and then
// panics: whatever the try would have done after the mark is lost, as
// when the process dies there.
type markingThenFailing struct {
	*auditfeed.Spool
	marked int
	dies   bool
	done   bool
}

func (o *markingThenFailing) Delivered(ctx context.Context, entries []auditfeed.Entry) error {
	if o.done {
		return o.Spool.Delivered(ctx, entries)
	}
	o.done = true
	if o.dies {
		if err := o.Spool.Delivered(ctx, entries); err != nil {
			return err
		}
		panic("the process dies once the batch is marked")
	}
	if err := o.Spool.Delivered(ctx, entries[:o.marked]); err != nil {
		return err
	}
	return errors.New("spool remove: input/output error")
}

// TestFeederNeverLosesAnUnsendableLine: a record that can never be sent
// leaves the outbox with its batch, and its unsendable line and count are
// the only trace of it. They came after the outbox marked the batch, so a
// mark that failed part way (the spool removing the record's file, then
// failing on the next) or a process that died right after it left the
// record gone and never logged or counted. They come once the collector
// confirmed the batch, before the mark: at least once, again only when
// the batch goes again with the record in it.
func TestFeederNeverLosesAnUnsendableLine(t *testing.T) {
	tests := []struct {
		name       string
		at         int // the unsendable record's place among 3
		outbox     markingThenFailing
		wantLogged int
	}{
		{"the mark fails past the unsendable record", 0, markingThenFailing{marked: 1}, 1},
		{"the process dies once the batch is marked", 1, markingThenFailing{dies: true}, 1},
		// Still in the outbox, the record goes again with its batch.
		{"the mark fails before the unsendable record", 2, markingThenFailing{marked: 1}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for i := range 3 {
				body := []byte("not a record") // a file the spool cannot read back
				if i != tt.at {
					body = recordJSON(t, record(i))
				}
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%019d.json", i+1)), body, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			sp, err := auditfeed.OpenSpool(dir, 0)
			if err != nil {
				t.Fatal(err)
			}
			outbox := tt.outbox
			outbox.Spool = sp
			reg := prometheus.NewRegistry()
			m, err := auditfeed.NewMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			logs := &testenv.LogBuffer{}
			snd := &flaky{}
			f := &auditfeed.Feeder{Outbox: &outbox, Sender: snd, Metrics: m, Logger: slog.New(slog.NewJSONHandler(logs, nil))}
			for try := 0; ; try++ {
				if try == 5 {
					t.Fatal("the outbox never emptied")
				}
				if left, _ := f.Flush(context.Background()); left == 0 {
					break
				}
			}
			if n := strings.Count(logs.String(), auditfeed.UnsendableLog); n != tt.wantLogged {
				t.Errorf("%d lines %q, want %d:\n%s", n, auditfeed.UnsendableLog, tt.wantLogged, logs.String())
			}
			if got := scrape(t, reg, "dicom_ingest_audit_feed_records_dropped_total"); got != float64(tt.wantLogged) {
				t.Errorf("dropped %v, want %d", got, tt.wantLogged)
			}
			if snd.sent() < 2 {
				t.Errorf("sent %d messages, want the 2 records' at least", snd.sent())
			}
		})
	}
}

// recordJSON is rec as a spool file holds it.
func recordJSON(t *testing.T, rec pipeline.AuditRecord) []byte {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
