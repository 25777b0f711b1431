package auditfeed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/panicvalue"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Entry is one undelivered record of an Outbox.
type Entry struct {
	// Key identifies the entry to its outbox; it holds no patient data or
	// UIDs, so it may be logged.
	Key    string
	Record pipeline.AuditRecord
	// Err is set when the outbox holds something under Key it cannot read
	// back as a record; the Feeder counts it and marks it delivered, as no
	// retry can send it.
	Err error
}

// Backlog is what an outbox has not delivered yet.
type Backlog struct {
	Count  int
	Oldest time.Time // when the oldest undelivered record was written; zero when Count is 0
}

// Outbox is a durable queue of audit records to deliver.
type Outbox interface {
	// Pending returns up to max undelivered entries, oldest first.
	Pending(ctx context.Context, max int) ([]Entry, error)
	// Delivered marks entries (a prefix of what Pending returned) delivered.
	Delivered(ctx context.Context, entries []Entry) error
	// Backlog counts what is undelivered.
	Backlog(ctx context.Context) (Backlog, error)
}

// Sender delivers one batch of syslog messages, all or nothing
// (*Collector).
type Sender interface {
	Send(ctx context.Context, msgs [][]byte) error
}

// markTimeout bounds the outbox's mark of a batch the collector
// confirmed, which no stop cuts short.
const markTimeout = 2 * time.Second

// Feeder moves records from an Outbox to a collector.
type Feeder struct {
	Outbox Outbox
	Sender Sender
	Header Header
	Logger *slog.Logger
	// Metrics, when set, reports the backlog and deliveries.
	Metrics *Metrics
	// Poll is how often an empty outbox is looked at again; default 1s.
	Poll time.Duration
	// Batch is the most records sent per connection; default 200.
	Batch int
	// MinBackoff and MaxBackoff bound the wait after a failed batch
	// (doubling, with jitter); defaults 1s and 1m.
	MinBackoff, MaxBackoff time.Duration

	wake chan struct{}
	// format makes an entry's messages (nil: formatEntry); a test's
	// stand-in for a renderer that panics.
	format func(Entry, Header) ([][]byte, error)
}

// Wake makes a waiting Feeder look at its outbox now (a new record was
// added). It never blocks.
func (f *Feeder) Wake() {
	if f.wake == nil {
		return
	}
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Init prepares f for Wake before Run starts; Run calls it too.
func (f *Feeder) Init() {
	if f.wake == nil {
		f.wake = make(chan struct{}, 1)
	}
}

func (f *Feeder) defaults() {
	f.Init()
	if f.Poll <= 0 {
		f.Poll = time.Second
	}
	if f.Batch <= 0 {
		f.Batch = 200
	}
	if f.MinBackoff <= 0 {
		f.MinBackoff = time.Second
	}
	if f.MaxBackoff < f.MinBackoff {
		f.MaxBackoff = max(time.Minute, f.MinBackoff)
	}
	if f.Logger == nil {
		f.Logger = slog.New(slog.DiscardHandler)
	}
}

// Run delivers until ctx ends. It returns nil then; it never gives up on
// a failing collector or outbox, it backs off and tries again.
func (f *Feeder) Run(ctx context.Context) error {
	f.defaults()
	backoff := time.Duration(0)
	failing := false
	for {
		n, err := f.cycle(ctx)
		f.refreshBacklog(ctx)
		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			backoff = min(max(2*backoff, f.MinBackoff), f.MaxBackoff)
			wait = backoff/2 + rand.N(backoff/2+1)
			if !failing {
				f.Logger.Warn("audit feed: delivery failing, retrying with backoff", "err", err, "retry_in", wait.String())
			} else {
				f.Logger.Debug("audit feed: delivery still failing", "err", err, "retry_in", wait.String())
			}
			failing = true
		case n > 0:
			if failing {
				f.Logger.Info("audit feed: delivering again")
			}
			failing, backoff = false, 0
			continue // more may be waiting
		default:
			wait = f.Poll
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-f.wake:
			t.Stop()
			if failing {
				// A new record does not make a failing collector work:
				// keep backing off.
				f.sleep(ctx, wait)
			}
		case <-t.C:
		}
	}
}

// Flush delivers what the outbox holds, batch after batch, until it is
// empty, a batch fails or ctx ends, and returns how many records are left
// undelivered: a stop's last delivery, once Run has returned (never
// beside it). It does not retry a failed batch: what is left stays in
// the outbox for the next Run.
func (f *Feeder) Flush(ctx context.Context) (left int, err error) {
	f.defaults()
	for {
		if ctx.Err() != nil {
			err = fmt.Errorf("auditfeed: flush: %w", context.Cause(ctx))
			break
		}
		n, cerr := f.cycle(ctx)
		if cerr != nil || n == 0 {
			err = cerr
			break
		}
	}
	// The count is read even once ctx has ended: the outbox is local.
	b, berr := f.Outbox.Backlog(context.WithoutCancel(ctx))
	if berr != nil {
		return 0, errors.Join(err, fmt.Errorf("auditfeed: backlog: %w", berr))
	}
	if f.Metrics != nil {
		f.Metrics.setBacklog(b)
	}
	return b.Count, err
}

func (f *Feeder) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// cycle sends one batch and returns how many records it delivered. A
// panic in it (a bug in the outbox, the sender) fails the batch as an
// error does, sent again after the backoff, instead of ending the SCP
// with the panic's value (a record's UIDs) on its standard error.
func (f *Feeder) cycle(ctx context.Context) (n int, err error) {
	err = panicvalue.Recovered(f.Logger, PanicLog, func() (err error) {
		n, err = f.deliver(ctx)
		return err
	})
	return n, err
}

// deliver is cycle's work: the outbox's oldest entries sent as one Batch,
// marked delivered in the outbox once the collector confirmed them.
func (f *Feeder) deliver(ctx context.Context) (int, error) {
	entries, err := f.Outbox.Pending(ctx, f.Batch)
	if err != nil {
		return 0, fmt.Errorf("auditfeed: read outbox: %w", err)
	}
	if len(entries) == 0 {
		return 0, nil
	}
	format := f.format
	if format == nil {
		format = formatEntry
	}
	items := make([]Item, len(entries))
	for i, e := range entries {
		// Named by its outbox key, which carries no patient data.
		items[i] = Item{Name: []any{"entry", e.Key}, Render: func() ([][]byte, error) { return format(e, f.Header) }}
	}
	b := Batch{Sender: f.Sender, Logger: f.Logger, Metrics: f.Metrics, Delivered: func(ctx context.Context, _ int) error {
		// The collector confirmed the batch: the mark is made even when
		// ctx ended meanwhile (a stop), bounded by its own timeout (the
		// local outbox's write may wait for its lock). Made with ctx, a
		// stop right after the confirmation failed it, and the stop's
		// Flush sent the batch again.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
		defer cancel()
		if err := f.Outbox.Delivered(mctx, entries); err != nil {
			// Sent but not marked: they go again, and the collector sees
			// duplicates with the same ids (and the log, their batch's
			// unsendable lines again).
			return fmt.Errorf("auditfeed: mark delivered: %w", err)
		}
		return nil
	}}
	if _, err := b.Send(ctx, items); err != nil {
		return 0, err
	}
	return len(entries), nil
}

func formatEntry(e Entry, h Header) ([][]byte, error) {
	if e.Err != nil {
		return nil, e.Err
	}
	return FormatRecord(e.Record, h)
}

func (f *Feeder) refreshBacklog(ctx context.Context) {
	if f.Metrics == nil {
		return
	}
	b, err := f.Outbox.Backlog(ctx)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			f.Logger.Warn("audit feed: backlog unknown", "err", err)
		}
		return
	}
	f.Metrics.setBacklog(b)
}

// Drop reasons of dicom_ingest_audit_feed_records_dropped_total.
const (
	reasonUnrenderable = "unrenderable"
	ReasonSpoolFull    = "spool_full"
	ReasonSpoolWrite   = "spool_write_failed"
)

// Metrics are the feed's Prometheus metrics:
//
//	dicom_ingest_audit_feed_backlog_records            records not yet delivered
//	dicom_ingest_audit_feed_backlog_oldest_age_seconds age of the oldest of them (0 when none)
//	dicom_ingest_audit_feed_messages_sent_total        messages the collector confirmed
//	dicom_ingest_audit_feed_send_failures_total        batches that failed (and will be sent again)
//	dicom_ingest_audit_feed_records_dropped_total{reason}  records never to be sent (spool_full, spool_write_failed, unrenderable)
type Metrics struct {
	count      atomic.Int64
	oldestNano atomic.Int64
	sentC      prometheus.Counter
	failedC    prometheus.Counter
	droppedC   *prometheus.CounterVec
}

// NewMetrics registers the feed's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		sentC: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicom_ingest_audit_feed_messages_sent_total", Help: "Audit messages the syslog collector confirmed.",
		}),
		failedC: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicom_ingest_audit_feed_send_failures_total", Help: "Audit message batches that failed and will be sent again.",
		}),
		droppedC: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicom_ingest_audit_feed_records_dropped_total", Help: "Audit records the feed will never send, by reason.",
		}, []string{"reason"}),
	}
	m.droppedC.WithLabelValues(reasonUnrenderable)
	m.droppedC.WithLabelValues(ReasonSpoolFull)
	m.droppedC.WithLabelValues(ReasonSpoolWrite)
	count := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dicom_ingest_audit_feed_backlog_records", Help: "Audit records not yet delivered to the syslog collector.",
	}, func() float64 { return float64(m.count.Load()) })
	age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dicom_ingest_audit_feed_backlog_oldest_age_seconds", Help: "Age of the oldest audit record not yet delivered (0 when none).",
	}, func() float64 {
		n := m.oldestNano.Load()
		if n == 0 {
			return 0
		}
		return max(0, nowFunc().Sub(time.Unix(0, n)).Seconds())
	})
	for _, c := range []prometheus.Collector{m.sentC, m.failedC, m.droppedC, count, age} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("auditfeed: metrics: %w", err)
		}
	}
	return m, nil
}

func (m *Metrics) setBacklog(b Backlog) {
	m.count.Store(int64(b.Count))
	if b.Count == 0 || b.Oldest.IsZero() {
		m.oldestNano.Store(0)
		return
	}
	m.oldestNano.Store(b.Oldest.UnixNano())
}

func (m *Metrics) sent(n int) {
	if m != nil {
		m.sentC.Add(float64(n))
	}
}

func (m *Metrics) failed() {
	if m != nil {
		m.failedC.Inc()
	}
}

func (m *Metrics) dropped(reason string) {
	if m != nil {
		m.droppedC.WithLabelValues(reason).Inc()
	}
}

// Dropped counts a record the feed will never send (exported for outboxes
// that refuse records, such as a full spool).
func (m *Metrics) Dropped(reason string) { m.dropped(reason) }
