// Package auditwriter writes an associationaudit record to the object store
// for every association event that never becomes an object: accepted,
// rejected, released, aborted and C-STORE failed. Records are written by a
// background worker so a slow store never holds up the DICOM conversation;
// Close flushes what is queued.
package auditwriter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
)

type recordPutter interface {
	PutRecord(ctx context.Context, key string, body []byte) error
}

// Writer is a dicomnet.Observer that persists association audit records.
type Writer struct {
	store          recordPutter
	log            *slog.Logger
	implementation string
	queue          chan associationaudit.Record
	seq            atomic.Uint64
	dropped        atomic.Uint64
	retryFor       time.Duration

	mu       sync.Mutex
	counts   map[string]*tally // per association: instances and bytes stored
	closed   bool
	done     chan struct{}
	closeErr error
}

type tally struct {
	instances int
	bytes     int64
}

var _ dicomnet.Observer = (*Writer)(nil)

// Options tune a Writer; the zero value is usable.
type Options struct {
	QueueSize      int           // records waiting to be written; default 1024
	RetryFor       time.Duration // how long one record is retried; default 2m
	Implementation string        // our implementation version, stamped on every record
	Logger         *slog.Logger
}

// New starts a Writer that puts records into store.
func New(store recordPutter, opts Options) *Writer {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
	if opts.RetryFor <= 0 {
		opts.RetryFor = 2 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Writer{
		store: store, log: opts.Logger, implementation: opts.Implementation, retryFor: opts.RetryFor,
		queue: make(chan associationaudit.Record, opts.QueueSize), counts: map[string]*tally{}, done: make(chan struct{}),
	}
	go w.run()
	return w
}

// ObserveAssociation implements dicomnet.Observer.
func (w *Writer) ObserveAssociation(ev dicomnet.Event) {
	r := associationaudit.Record{Time: ev.Time, Implementation: w.implementation}
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	if a := ev.Association; a != nil {
		r.AssociationID, r.CallingAE, r.CalledAE = a.ID, a.CallingAE, a.CalledAE
		if a.RemoteAddr != nil {
			r.PeerAddr = a.RemoteAddr.String()
		}
	}
	if ev.Err != nil {
		r.Reason = ev.Err.Error()
	}
	switch ev.Type {
	case dicomnet.EventAccepted:
		r.Event = associationaudit.EventAccepted
		w.mu.Lock()
		w.counts[r.AssociationID] = &tally{}
		w.mu.Unlock()
	case dicomnet.EventRejected:
		r.Event = associationaudit.EventRejected
		if ev.Reject != nil {
			r.RejectResult, r.RejectSource, r.RejectReason = int(ev.Reject.Result), int(ev.Reject.Source), int(ev.Reject.Reason)
			if ev.Err == nil { // the policy's reason, when it refused, says more
				r.Reason = ev.Reject.Error()
			}
		}
	case dicomnet.EventReleased, dicomnet.EventAborted:
		r.Event = associationaudit.EventReleased
		if ev.Type == dicomnet.EventAborted {
			r.Event = associationaudit.EventAborted
			src, reason := int(ev.AbortSource), int(ev.AbortReason)
			r.AbortSource, r.AbortReason = &src, &reason
		}
		w.mu.Lock()
		if t := w.counts[r.AssociationID]; t != nil {
			r.Instances, r.Bytes = t.instances, t.bytes
		}
		delete(w.counts, r.AssociationID)
		w.mu.Unlock()
	case dicomnet.EventStored:
		w.mu.Lock()
		if t := w.counts[r.AssociationID]; t != nil {
			t.instances++
			t.bytes += ev.Bytes
		}
		w.mu.Unlock()
		return
	case dicomnet.EventStoreFailed:
		r.Event = associationaudit.EventStoreFailed
		r.Status = fmt.Sprintf("%04X", ev.Status)
		r.SOPClassUID, r.SOPInstanceUID = ev.SOPClassUID, ev.SOPInstanceUID
	default:
		return
	}
	r.Seq = w.seq.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		w.log.Error("audit record after close, not written", "event", r.Event, "association", r.AssociationID)
		return
	}
	select {
	case w.queue <- r:
	default:
		// Never block the DICOM conversation on the audit trail; count and
		// shout instead, so operators see the store is not keeping up.
		w.dropped.Add(1)
		w.log.Error("audit record queue full, record dropped", "event", r.Event, "association", r.AssociationID)
	}
}

// Dropped counts records lost to a full queue.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

func (w *Writer) run() {
	defer close(w.done)
	var errs []error
	for r := range w.queue {
		if err := w.write(r); err != nil {
			w.log.Error("audit record not written", "event", r.Event, "association", r.AssociationID, "err", err)
			errs = append(errs, err)
		}
	}
	w.closeErr = errors.Join(errs...)
}

func (w *Writer) write(r associationaudit.Record) error {
	key, err := associationaudit.Key(r)
	if err != nil {
		return err
	}
	body, err := associationaudit.Marshal(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.retryFor)
	defer cancel()
	backoff := 100 * time.Millisecond
	for {
		err := w.store.PutRecord(ctx, key, body)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("auditwriter: put %s: %w", key, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// Close stops accepting records and waits until the queued ones are
// written or ctx ends. It returns the write errors seen.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.queue)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
		return w.closeErr
	case <-ctx.Done():
		return fmt.Errorf("auditwriter: close: %d records may be unwritten: %w", len(w.queue), ctx.Err())
	}
}
