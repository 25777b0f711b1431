package auditfeed

import (
	"context"
	"log/slog"

	"github.com/dicom-ingest/dicom-ingest/shared/auditmessage"
	"github.com/dicom-ingest/dicom-ingest/shared/panicvalue"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// UnsendableLog is the log message of a record that can never be sent
// (it cannot be read back or rendered): logged, counted, passed over. The
// AWS stack's metric filter matches it.
const UnsendableLog = "audit record cannot be sent, skipped"

// BatchNotDeliveredLog is the log message of each batch the auditfeed function fails (the collector down or
// refusing TLS, the secrets unusable), which Lambda retries: the AWS stack's metric filter counts them and its
// alarm sounds within minutes, before the backlog's.
const BatchNotDeliveredLog = "audit feed: batch not delivered, Lambda retries it"

// PanicLog is the log message of a record whose rendering, or a batch
// whose delivery, panicked: a bug. The record is unsendable (passed over,
// as one that cannot be rendered); the batch fails and is sent again. The
// panic's value is told as panicvalue.Describe tells it (a record holds
// UIDs and patient data).
const PanicLog = "audit feed: handling panicked: a bug"

// Item is one record of a batch as its caller holds it: an outbox entry
// (the SCP's Feeder), a stream record (the auditfeed function).
type Item struct {
	// Name names the record in log lines, as slog key/value pairs: its
	// outbox key, its stream position; never a UID or patient data.
	Name []any
	// Render gives the record's syslog messages: none for a record that
	// gives none; an error, or a panic (a bug), for one never sendable.
	Render func() ([][]byte, error)
}

// Batch sends batches of records to a collector: the one rule of what a
// batch renders, passes over, sends and logs, for the SCP's Feeder and the
// auditfeed function alike. What happens around it (an outbox marked
// delivered, a backoff; Lambda's batch item failures and retries) is its
// caller's.
type Batch struct {
	Sender Sender
	Logger *slog.Logger // nil: none
	// Metrics, when set, counts the messages sent, the batches that
	// failed and the records dropped as unrenderable.
	Metrics *Metrics
	// Delivered, when set, runs once the collector confirmed the batch (or
	// the batch had no message to send) and its unsendable records are
	// logged: an outbox marks its entries delivered there. Its error fails
	// the batch, which is sent again, as a failed send does (without
	// counting a send failure).
	Delivered func(ctx context.Context, messages int) error
}

// Sent is what Send made of a batch. (The records passed over are told
// by their log lines and the dropped count, once the batch is confirmed.)
type Sent struct {
	Messages int // the messages rendered, sent when Send succeeded
}

// unsendable is a record passed over, with why, and its panic when its
// rendering panicked.
type unsendable struct {
	name  []any
	err   error
	panic *panicvalue.Panic
}

// Send renders every item, passes over those that can never be sent and
// sends the others' messages in one confirmed exchange (none when there
// are none). Only once the collector confirmed them it logs each record
// passed over: its rendering's panic first (PanicLog, with the stack of
// when it panicked) when it panicked, then UnsendableLog by its Name, each
// counted dropped; then it runs Delivered. A batch that fails is rendered
// again at its next try (the Feeder's backoff, Lambda's retry): logged at
// each try, one record's panic and skip were repeated, and counted, once
// per try. Logged before Delivered, not after: those lines are the only
// trace of a record that leaves the outbox unsent, and an outbox marked
// first, in part (a spool removing its files one by one, failing on one)
// or wholly before the process died, left the record gone and never
// logged. So a record is logged at least once, and again only with a
// batch that goes again after its delivery: Delivered failed (the
// collector gets that batch twice too) or the process died before it. A
// send that panics (a bug in the sender) is logged at once, at each try:
// it is that try's failure, as a send's error is.
func (b Batch) Send(ctx context.Context, items []Item) (Sent, error) {
	var out Sent
	var msgs [][]byte
	var skipped []unsendable
	for _, it := range items {
		var formatted [][]byte
		p, err := panicvalue.Catch(func() (err error) {
			formatted, err = it.Render()
			return err
		})
		if err != nil {
			skipped = append(skipped, unsendable{it.Name, err, p})
			continue
		}
		msgs = append(msgs, formatted...)
	}
	out.Messages = len(msgs)
	log := b.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(msgs) > 0 {
		send := func() error { return b.Sender.Send(ctx, msgs) }
		if err := panicvalue.Recovered(log, PanicLog, send, "records", len(items)); err != nil {
			b.Metrics.failed()
			return out, err
		}
	}
	for _, u := range skipped {
		if u.panic != nil {
			u.panic.Log(log, PanicLog, u.name...)
		}
		log.Error(UnsendableLog, append(u.name[:len(u.name):len(u.name)], "err", u.err)...)
		b.Metrics.dropped(reasonUnrenderable)
	}
	if b.Delivered != nil {
		if err := b.Delivered(ctx, len(msgs)); err != nil {
			return out, err
		}
	}
	b.Metrics.sent(len(msgs))
	return out, nil
}

// FormatRecord is a record's syslog messages: none, one or two
// (auditmessage.Render), each Formatted. It fails, sending none of them,
// when one cannot be made.
func FormatRecord(rec pipeline.AuditRecord, h Header) ([][]byte, error) {
	rendered, err := auditmessage.Render(rec)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(rendered))
	for _, m := range rendered {
		b, err := Format(m, h)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}
