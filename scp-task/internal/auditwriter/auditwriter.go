// Package auditwriter writes an associationaudit record to the object store
// for every association event that never becomes an object: accepted (with
// the presentation contexts it refused), rejected, released, aborted and
// C-STORE failed, and for the SCP's own start and stop. Records are written in
// order from a bounded queue by a background worker (a few at a time, fed
// to the audit feed in queue order). Nothing is dropped: a
// full queue holds up the association that has something to record
// (back-pressure), a record that cannot be written is retried until it is,
// and Ready reports the trouble so the SCP refuses new associations rather
// than run unaudited. Close flushes what is queued.
package auditwriter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/ingest"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
)

type recordPutter interface {
	PutRecord(ctx context.Context, key string, body []byte) error
}

// ErrUnavailable is what Ready wraps while audit records cannot be written
// (the last attempt failed) or the queue is full.
var ErrUnavailable = errors.New("auditwriter: audit records cannot be written")

// Writer is a dicomnet.Observer that persists association audit records.
type Writer struct {
	store          recordPutter
	log            *slog.Logger
	implementation string
	attemptTimeout time.Duration
	maxBackoff     time.Duration
	parallel       int
	queue          chan associationaudit.Record
	seq            atomic.Uint64
	metrics        *metrics
	feed           func(associationaudit.Record)

	// unwritten counts the records queued or being written (a record
	// retried while the store refuses it has left the queue but is no
	// more durable than one still in it): what a crash would lose now.
	unwritten atomic.Int64

	// failing is set while a record cannot be written (the last attempt
	// failed); lastErr is the latest failure, for Ready.
	failing atomic.Bool
	lastErr atomic.Pointer[error]
	// waiting is set while an association waits for room in the queue, so
	// that the wait is logged once per episode, not once per event.
	waiting atomic.Bool

	mu      sync.Mutex
	counts  map[string]*tally // per association: instances and bytes stored
	closed  bool
	senders sync.WaitGroup // ObserveAssociation calls that may still enqueue
	// instance and aeTitle name the SCP in its start and stop records.
	instance, aeTitle string

	// giveUp cancels stopped when Close gives up: the worker stops retrying
	// and counts the rest as lost.
	stopped context.Context
	giveUp  context.CancelFunc
	done    chan struct{} // closed when the worker has finished
	lost    atomic.Uint64
	written atomic.Uint64
	// lostSeqs are the sequence numbers of the first records lost
	// (associationaudit.MaxLostSeqs at most), for the stop record.
	lostMu   sync.Mutex
	lostSeqs []uint64
	// stop is the stop record Stopping made, written by Close after every
	// other record has been written or given up, naming those lost.
	stop *associationaudit.Record

	runMarkers markers // nil: no run marker
	// now is this process's clock, for the times a marker tells (its
	// heartbeat, a claim's) as information; whether a marker in the store
	// is stale is told by the store's clock (stale), and a test skews
	// this one to show it.
	now     func() time.Time
	thisRun runState
	marking bool // this run's marker exists
	hbStop  chan struct{}
	hbDone  chan struct{}
	// sweepEvery is how often the running SCP looks for dead runs; the
	// sweep stops (stopSweep) before the stop record is made, so that no
	// report comes after it.
	sweepEvery time.Duration
	sweepStop  chan struct{}
	sweepDone  chan struct{}
	sweepOnce  sync.Once
	// sweepCancel ends a sweep under way: stopping does not wait for its
	// calls (up to markerTimeout on a slow S3) to run out.
	sweepCancel context.CancelFunc

	refusals refusals // refusal records' share of the queue, and folding (refusals.go)
}

type tally struct {
	instances int
	bytes     int64
}

var _ dicomnet.Observer = (*Writer)(nil)

// Options tune a Writer; the zero value is usable.
type Options struct {
	// QueueSize bounds the records waiting to be written (default 1024);
	// past it, ObserveAssociation waits for room.
	QueueSize int
	// AttemptTimeout bounds one PutRecord (default 30s); a failed attempt is
	// retried with backoff up to MaxBackoff (default 5s) until it succeeds
	// or Close gives up.
	AttemptTimeout time.Duration
	MaxBackoff     time.Duration
	// Parallel bounds the records being written at once (default 16);
	// they are fed in queue order whatever order their writes end in.
	Parallel       int
	Implementation string // our implementation version, stamped on every record
	Logger         *slog.Logger
	// Metrics, when set, receives the writer's metrics (queue length,
	// writability, records written, failed attempts, waits, records lost).
	Metrics prometheus.Registerer
	// RunDir, when set, is a directory that outlives the process (local
	// mode's data directory, the staging directory) where Started keeps a
	// marker of this run, brought up to date every second and removed by
	// Close. A marker whose process is gone is a run that did not stop
	// cleanly: the next Started takes it over and says in its start record
	// what records that run may have lost.
	RunDir string
	// Markers, when set and RunDir is not, keeps the run markers in the
	// store (the S3 store, where no directory outlives the process),
	// shared by every SCP writing to it: a marker not rewritten for
	// MarkersStaleAfter (default 1 min; each run rewrites its own every
	// twelfth of it), by the store's clock and never a task's, is a run
	// that did not stop cleanly, which the next start of any SCP on the
	// store reports, or a running one: with either kind of marker, a
	// running SCP looks for dead runs every quarter of MarkersStaleAfter
	// and reports each in an unclean-stop-found record.
	Markers           MarkerStore
	MarkersStaleAfter time.Duration
	// Feed, when set, is called from the writer's own goroutine (Close's,
	// for the stop record, the last) with every record once the store has
	// durably written it, in the order written, so the audit feed's outbox
	// gets the trail's records without holding up the DICOM conversation.
	// A record that was never written (Close
	// gave up on it, or it could not be encoded) is counted and logged as
	// lost and never fed: the feed holds nothing the trail lacks.
	Feed func(associationaudit.Record)
}

// New starts a Writer that puts records into store.
func New(store recordPutter, opts Options) (*Writer, error) {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = 30 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 16
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Writer{
		store: store, log: opts.Logger, implementation: opts.Implementation,
		attemptTimeout: opts.AttemptTimeout, maxBackoff: opts.MaxBackoff, parallel: opts.Parallel,
		queue:  make(chan associationaudit.Record, opts.QueueSize),
		counts: map[string]*tally{}, done: make(chan struct{}), feed: opts.Feed, now: time.Now,
		refusals: refusals{share: refusalShare(opts.QueueSize), window: refusalWindow},
	}
	stale := cmp.Or(opts.MarkersStaleAfter, storeStaleAfter)
	w.sweepEvery = max(stale/sweepsPerStale, 10*time.Millisecond)
	switch {
	case opts.RunDir != "":
		w.runMarkers = &dirMarkers{dir: opts.RunDir}
	case opts.Markers != nil:
		w.runMarkers = &storeMarkers{store: opts.Markers, staleAfter: stale, interval: stale / (storeStaleAfter / storeHeartbeatEvery),
			now: func() time.Time { return w.now() }, log: w.log}
	}
	w.stopped, w.giveUp = context.WithCancel(context.Background())
	m, err := newMetrics(opts.Metrics, w)
	if err != nil {
		return nil, err
	}
	w.metrics = m
	go w.run()
	return w, nil
}

// ObserveAssociation implements dicomnet.Observer. It returns as soon as
// the record is queued; while the queue is full it waits for room, which
// holds up only the association the event belongs to. A refusal never
// waits: past its share of the queue it is folded (refusals.go).
func (w *Writer) ObserveAssociation(ev dicomnet.Event) {
	r, ok := w.record(ev)
	if !ok {
		return
	}
	if r.Event != associationaudit.EventRejected {
		w.enqueue(r)
		return
	}
	if w.refused(r) && ev.Type == dicomnet.EventHandshakeFailed && r.TLS != nil {
		// A certificate verification refused (another CA's, expired,
		// revoked, not for client authentication) is named as presented,
		// in the record and in a security alert on the log, like one that
		// does not match its AE title (never the certificate itself); a
		// refusal folded is counted instead.
		w.log.Warn("security alert: client certificate refused in the TLS handshake", "association", r.AssociationID,
			"peer", r.PeerAddr, "subject", r.TLS.Subject, "issuer", r.TLS.Issuer, "serial", r.TLS.Serial,
			"sha256", r.TLS.SHA256, "chain_length", len(ev.PeerCertificates), "err", ev.Err)
	}
}

// Started records that the SCP started serving (PS3.15 A.5.3.1
// Application Activity, Application Start) as the process instance
// (dicomnet.Server.InstanceID) with AE title aeTitle; Stopping records its
// stop. Both are queued as association events are, so a start or stop is
// never lost quietly: it is written or counted as lost.
func (w *Writer) Started(instance, aeTitle string) {
	w.mu.Lock()
	w.instance, w.aeTitle = instance, aeTitle
	w.mu.Unlock()
	r := w.applicationRecord(associationaudit.EventApplicationStart, "")
	if w.runMarkers != nil {
		r.PreviousRuns = w.openRun(instance, aeTitle, r.Time)
		r.Reason = describeAll(r.PreviousRuns)
	}
	w.enqueue(r)
}

// openRun takes over the markers of runs that stopped uncleanly, logs each,
// starts this run's marker and returns what the start record says of them;
// from then on it looks for dead runs periodically (sweep).
func (w *Writer) openRun(instance, aeTitle string, started time.Time) []associationaudit.UncleanRun {
	w.thisRun = runState{Instance: instance, AETitle: aeTitle, Started: started}
	ctx, cancel := context.WithTimeout(context.Background(), markerTimeout)
	defer cancel()
	unclean, err := w.runMarkers.open(ctx, w.state())
	if err != nil {
		w.log.Error("audit run marker unavailable: an unclean stop of this run will not be detected at the next start", "err", err)
		return nil
	}
	w.logUnclean(unclean)
	w.marking, w.hbStop, w.hbDone = true, make(chan struct{}), make(chan struct{})
	go w.heartbeat()
	w.sweepStop, w.sweepDone = make(chan struct{}), make(chan struct{})
	var sweepCtx context.Context
	sweepCtx, w.sweepCancel = context.WithCancel(context.Background())
	go w.sweep(sweepCtx)
	return unclean
}

// logUnclean logs and counts each dead run found, at start or by a sweep:
// the same line and counter either way, which the alarms watch.
func (w *Writer) logUnclean(unclean []associationaudit.UncleanRun) {
	for _, u := range unclean {
		w.metrics.unclean.Inc()
		w.log.Warn(associationaudit.UncleanStopLog, "what", describeUnclean(u), "previous_run", u.Instance,
			"last_seq", u.LastSeq, "written", u.Written, "counted_lost", u.CountedLost, "not_written", u.NotWritten,
			"unreadable", u.Unreadable)
	}
}

// sweepsPerStale: a running SCP looks for dead runs every quarter of
// MarkersStaleAfter, so an S3 marker is reported within 1.25 times it and
// a second (S3's clock counts seconds: stale) of its run's death, a
// directory's (its lock free at once) within a quarter.
const sweepsPerStale = 4

// sweep looks for runs that died while this one runs (a rolling
// deployment's old task killed by the stop timeout after the new ones
// started, a task lost while others serve): without it they waited for
// the next start anywhere, maybe days. Each found is reported as a start
// reports one: the log line, the counter and a record,
// unclean-stop-found, naming it.
func (w *Writer) sweep(life context.Context) {
	defer close(w.sweepDone)
	w.periodically(life, w.sweepStop, w.sweepEvery, "audit run markers not checked: runs that stopped uncleanly are reported later",
		"audit run markers checked again", func(ctx context.Context) error {
			unclean, err := w.runMarkers.sweep(ctx, w.thisRun.Instance)
			if len(unclean) > 0 {
				w.logUnclean(unclean)
				r := w.applicationRecord(associationaudit.EventUncleanStopFound, describeAll(unclean))
				r.PreviousRuns = unclean
				// Not past the stop: a queue full while the store refuses
				// records has no room until Close gives up, and the stop
				// waits for the sweep. Lost then, the run's claim goes
				// stale and another process reports it.
				w.enqueueWithin(life.Done(), r)
			}
			return err
		})
}

// periodically calls op every period until stop, each call within life
// and markerTimeout, logging failed when it starts failing and ok when it
// works again.
func (w *Writer) periodically(life context.Context, stop <-chan struct{}, period time.Duration, failed, ok string, op func(context.Context) error) {
	t := time.NewTicker(period)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(life, markerTimeout)
		err := op(ctx)
		cancel()
		if life.Err() != nil {
			return // cut short by the stop: not a failure to tell
		}
		switch {
		case err != nil && !failing:
			w.log.Error(failed, "err", err)
		case err == nil && failing:
			w.log.Info(ok)
		}
		failing = err != nil
	}
}

// stopSweep ends the sweep (once); a sweep under way is cut short, and
// what it claimed already is reported. A claim cut short is another
// process's to report once it is stale (S3) or its lock free (a
// directory).
func (w *Writer) stopSweep() {
	w.sweepOnce.Do(func() {
		if w.sweepStop != nil {
			w.sweepCancel()
			close(w.sweepStop)
			<-w.sweepDone
		}
	})
}

// describeAll says in words what the markers of dead runs tell.
func describeAll(unclean []associationaudit.UncleanRun) string {
	whats := make([]string, len(unclean))
	for i, u := range unclean {
		whats[i] = describeUnclean(u)
	}
	return strings.Join(whats, "; ")
}

// runsReported lets the markers of the dead runs a record names go, now
// that the record is written.
func (w *Writer) runsReported(runs []associationaudit.UncleanRun) {
	ctx, cancel := context.WithTimeout(context.Background(), markerTimeout)
	defer cancel()
	if err := w.runMarkers.reported(ctx, runs); err != nil {
		w.log.Error("reported run markers not removed: those runs are reported again", "err", err)
	}
}

// markerTimeout bounds one operation on the run markers.
const markerTimeout = 30 * time.Second

// state is this run as its marker tells it: the counts are read before the
// highest sequence number, which only grows, so that none exceeds it.
func (w *Writer) state() runState {
	st := w.thisRun
	st.Heartbeat = w.now()
	st.Written, st.Lost = w.written.Load(), w.lost.Load()
	st.Assigned = w.seq.Load()
	return st
}

func (w *Writer) heartbeat() {
	defer close(w.hbDone)
	// Not cut short at the stop: an update in flight ends before the
	// marker's last word (end), which it could otherwise follow.
	w.periodically(context.Background(), w.hbStop, w.runMarkers.every(), "audit run marker not updated: after a crash the next start tells less of what may be lost",
		"audit run marker updated again", func(ctx context.Context) error { return w.runMarkers.update(ctx, w.state()) })
}

// closeRun ends the run's marker: it goes on a clean stop; when the stop
// record could not be written it stays, saying so, for the next start to
// report the stop as unconfirmed.
func (w *Writer) closeRun(ctx context.Context, clean bool) error {
	if !w.marking {
		return nil
	}
	close(w.hbStop)
	<-w.hbDone
	w.marking = false
	st := w.state()
	st.StopNotWritten = !clean
	// Within Close's ctx, but never less than a moment: the marker must
	// say how the run ended even when the flush took all of it.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markerTimeout)
	defer cancel()
	if err := w.runMarkers.end(mctx, st, clean); err != nil {
		return fmt.Errorf("auditwriter: end the run marker: %w", err)
	}
	return nil
}

// Stopping records the SCP's stop, with why it stops (the signal, the
// server's failure). Call it once the associations have ended, before
// Close; it does nothing without Started. The record is written by Close,
// last, naming the records of the run lost before it (Record.Lost).
func (w *Writer) Stopping(reason string) {
	w.stopSweep()
	w.flushRefusals(false)
	w.mu.Lock()
	started := w.instance != ""
	w.mu.Unlock()
	if !started {
		return
	}
	r := w.applicationRecord(associationaudit.EventApplicationStop, reason)
	w.mu.Lock()
	if w.closed || w.stop != nil {
		w.mu.Unlock()
		w.lose(r, "event after close")
		return
	}
	w.stop = &r
	w.mu.Unlock()
}

func (w *Writer) applicationRecord(event, reason string) associationaudit.Record {
	w.mu.Lock()
	defer w.mu.Unlock()
	return associationaudit.Record{
		Event: event, Time: time.Now(), AssociationID: w.instance, CalledAE: w.aeTitle,
		Reason: reason, Implementation: w.implementation, Seq: w.seq.Add(1),
	}
}

// enqueue queues r, waiting for room while the queue is full; a record
// after Close, or one still waiting when Close gives up, is lost (false).
func (w *Writer) enqueue(r associationaudit.Record) bool { return w.enqueueWithin(nil, r) }

// enqueueWithin is enqueue giving up, r lost, when cut is closed.
func (w *Writer) enqueueWithin(cut <-chan struct{}, r associationaudit.Record) bool {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		w.lose(r, "event after close")
		return false
	}
	w.senders.Add(1)
	w.mu.Unlock()
	defer w.senders.Done()
	return w.send(cut, r)
}

// send is enqueueWithin for a sender already counted in w.senders.
func (w *Writer) send(cut <-chan struct{}, r associationaudit.Record) bool {
	// Counted before it is queued, so the count never reads lower than
	// what is unwritten; taken back if it is lost instead.
	w.unwritten.Add(1)
	select {
	case w.queue <- r:
		return true
	default:
	}
	w.metrics.waits.Inc()
	if w.waiting.CompareAndSwap(false, true) {
		w.log.Warn("audit record queue full: associations wait until records are written", "queued", len(w.queue))
	}
	select {
	case w.queue <- r:
		return true
	case <-w.stopped.Done():
		w.unwritten.Add(-1)
		w.lose(r, "writer stopped")
		return false
	case <-cut:
		w.unwritten.Add(-1)
		w.lose(r, "stopping with the queue full")
		return false
	}
}

// record turns an event into the record to write; false for events that
// only update the association's tally.
func (w *Writer) record(ev dicomnet.Event) (associationaudit.Record, bool) {
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
		r.Reason = contextsReason(ev.Contexts)
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
		// A resend the store found held: no object notification will
		// follow, so this record is the transfer's trace.
		var held *ingest.AlreadyHeld
		if !errors.As(ev.Err, &held) {
			return r, false
		}
		r = associationaudit.Duplicate(r, ev.SOPClassUID, ev.SOPInstanceUID, held.StudyInstanceUID, held.SeriesInstanceUID, held.Key)
	case dicomnet.EventStoreFailed:
		r.Event = associationaudit.EventStoreFailed
		// A C-STORE cut short by the association's end (its data set
		// never completed) was answered nothing: no status
		// (associationaudit.StoreStatus). One whose response could not be
		// written has the status decided, not sent.
		r.Status = associationaudit.StoreStatus(ev.Status)
		r.NotSent = r.Status != "" && errors.Is(ev.Err, dicomnet.ErrNotSent)
		r.SOPClassUID, r.SOPInstanceUID = ev.SOPClassUID, ev.SOPInstanceUID
		r.StudyInstanceUID, r.SeriesInstanceUID = ingest.HeaderNamed(ev.Err)
	case dicomnet.EventCommitmentRefused:
		r.Event = associationaudit.EventCommitmentRefused
		// As a C-STORE's: an N-ACTION cut short by the association's end
		// was answered nothing (no status); one whose N-ACTION-RSP could
		// not be written was refused, not told.
		r.Status = associationaudit.StoreStatus(ev.Status)
		r.NotSent = r.Status != "" && errors.Is(ev.Err, dicomnet.ErrNotSent)
		r.SOPClassUID = ev.SOPClassUID
	case dicomnet.EventHandshakeFailed:
		// Refused before any association: a node that failed to
		// authenticate (no, an expired, a revoked or a foreign client
		// certificate), which the trail records as the Security Alert a
		// refused association is (110113, 110126 Node Authentication). It
		// was only logged and counted.
		r.Event = associationaudit.EventRejected
		// Why, as the metric counts it and the log line says it (one of
		// a fixed set), then in crypto/tls's words.
		r.Reason = "TLS handshake failed: reason " + dicomnet.HandshakeFailureReason(ev.Err)
		if ev.Err != nil {
			r.Reason += ": " + ev.Err.Error()
		}
		if len(ev.PeerCertificates) > 0 {
			r.TLS = associationaudit.CertificatePeer(ev.PeerCertificates[0], "")
		}
	default:
		return r, false
	}
	if a := ev.Association; a != nil && r.TLS == nil { // a refused handshake names the certificate presented
		// Every record of a TLS association names the client certificate,
		// so the trail shows who was let in (or refused) by which one (the
		// staged store's duplicate records too: ingest stages it with the
		// object), by the name dicomnet made once for the association.
		r.TLS = associationaudit.NamedPeer(a.PeerCertificateName, a.PeerIdentity)
	}
	if r.Event == associationaudit.EventRejected {
		// The title called is the peer's claim (not ours on a 01 01 07,
		// none when TLS refused it): the record names ours beside it.
		w.mu.Lock()
		r.AETitle = w.aeTitle
		w.mu.Unlock()
	} else { // a refusal is numbered when it is written on its own (refused)
		r.Seq = w.seq.Add(1)
	}
	return r, true
}

// contextsReason says in words what the A-ASSOCIATE-AC of an accepted
// association refused, for its record's Reason: "" when it refused
// nothing. An association whose every context was refused is accepted and
// then ends without a transfer ("association-aborted … EOF", as DCMTK's
// storescu closes it); this is what tells the reader of the trail why, and
// what the PACS should propose instead. It names SOP class and transfer
// syntax UIDs only (with their registry names), at most dicomnet's bound
// of each, so the text stays within a few KiB whatever the peer proposed.
func contextsReason(s *dicomnet.ContextSummary) string {
	if s == nil || s.Refused == 0 {
		return ""
	}
	head := fmt.Sprintf("%d of %d presentation contexts refused", s.Refused, s.Accepted+s.Refused)
	if s.Accepted == 0 {
		head = fmt.Sprintf("no presentation context accepted (%d proposed)", s.Refused)
	}
	var why []string
	if s.UnsupportedTransferSyntaxes != nil {
		why = append(why, "transfer syntax not supported ("+namedUIDs(s.UnsupportedTransferSyntaxes, s.MoreTransferSyntaxes)+")")
	}
	if s.UnsupportedAbstractSyntaxes != nil {
		why = append(why, "abstract syntax (SOP class) not supported ("+namedUIDs(s.UnsupportedAbstractSyntaxes, s.MoreAbstractSyntaxes)+")")
	}
	if s.NoSCURoleAbstractSyntaxes != nil {
		why = append(why, "no SCU role left to the sender by SCP/SCU role selection ("+namedUIDs(s.NoSCURoleAbstractSyntaxes, s.MoreNoSCURoleAbstractSyntaxes)+")")
	}
	if why == nil {
		return head
	}
	return head + ": " + strings.Join(why, "; ")
}

// namedUIDs lists uids each after its name when the registry knows it,
// and how many more the list left out: "Explicit VR Big Endian
// 1.2.840.10008.1.2.2; 1.2.3; and 2 more". Names hold commas, so the list
// is cut by semicolons.
func namedUIDs(uids []string, more int) string {
	named := make([]string, len(uids), len(uids)+1)
	for i, uid := range uids {
		named[i] = uid
		if n := dicomuid.Name(uid); n != "" {
			named[i] = n + " " + uid
		}
	}
	if more > 0 {
		named = append(named, fmt.Sprintf("and %d more", more))
	}
	return strings.Join(named, "; ")
}

// Ready reports whether audit records are being written: an error wrapping
// ErrUnavailable while the last attempt failed or the queue is full. The
// SCP refuses new associations while it is not ready.
func (w *Writer) Ready(context.Context) error {
	if w.failing.Load() {
		err := errors.New("last attempt failed")
		if p := w.lastErr.Load(); p != nil {
			err = *p
		}
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if n := len(w.queue); n == cap(w.queue) {
		return fmt.Errorf("%w: %d records queued", ErrUnavailable, n)
	}
	return nil
}

// Lost counts records that were never written: still queued when Close
// gave up, observed after Close, or not encodable.
func (w *Writer) Lost() uint64 { return w.lost.Load() }

// lose counts and reports a record that will never be written. The log
// line names the association and the event, never the UIDs.
func (w *Writer) lose(r associationaudit.Record, why string) {
	w.lostMu.Lock()
	if len(w.lostSeqs) < associationaudit.MaxLostSeqs {
		w.lostSeqs = append(w.lostSeqs, r.Seq)
	}
	w.lostMu.Unlock()
	w.lost.Add(1)
	w.metrics.lost.Inc()
	w.log.Error(associationaudit.LostLog, "why", why, "event", r.Event, "association", r.AssociationID, "seq", r.Seq, "time", r.Time)
}

// run writes the queued records, up to w.parallel at a time (a store's
// latency, tens of milliseconds for S3, would otherwise bound the records
// written per second and let the queue, what a crash loses, grow), and
// feeds each written one in queue order.
func (w *Writer) run() {
	defer close(w.done)
	type writing struct {
		r       associationaudit.Record
		written chan bool
	}
	// inFlight holds the records being written in queue order: the one
	// the feeder waits on and w.parallel-1 buffered behind it.
	inFlight := make(chan writing, w.parallel-1)
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for x := range inFlight {
			if <-x.written && w.feed != nil {
				w.feed(x.r)
			}
			if len(w.queue) < cap(w.queue)/2 && w.waiting.CompareAndSwap(true, false) {
				w.log.Info("audit record queue has room again", "queued", len(w.queue))
			}
		}
	}()
	for r := range w.queue {
		x := writing{r: r, written: make(chan bool, 1)}
		inFlight <- x
		go func() {
			written := w.write(w.stopped, x.r)
			w.unwritten.Add(-1)
			if x.r.Event == associationaudit.EventRejected {
				w.refusalDone()
			}
			x.written <- written
		}()
	}
	close(inFlight)
	<-fed
}

// write puts r, retrying until it is written (true) or life ends (Close
// gave up: false, it is counted and logged as lost).
func (w *Writer) write(life context.Context, r associationaudit.Record) bool {
	key, err := associationaudit.Key(r)
	var body []byte
	if err == nil {
		body, err = associationaudit.Marshal(r)
	}
	if err != nil {
		// A record we cannot encode will not encode on a retry either.
		w.lose(r, err.Error())
		return false
	}
	backoff := 100 * time.Millisecond
	for {
		if life.Err() != nil {
			w.lose(r, "writer stopped")
			return false
		}
		err := w.attempt(life, key, body)
		if err == nil {
			if len(r.PreviousRuns) > 0 {
				w.runsReported(r.PreviousRuns)
			}
			w.metrics.written.Inc()
			w.written.Add(1)
			w.metrics.wait.Observe(time.Since(r.Time).Seconds())
			if w.failing.CompareAndSwap(true, false) {
				w.metrics.writable.Set(1)
				w.log.Info("audit records are written again", "queued", len(w.queue))
			}
			return true
		}
		w.metrics.failures.Inc()
		w.lastErr.Store(&err)
		if w.failing.CompareAndSwap(false, true) {
			w.metrics.writable.Set(0)
			w.log.Error("audit record not written; new associations are refused until it is", "event", r.Event, "association", r.AssociationID, "err", err)
		} else {
			w.log.Debug("audit record retry failed", "event", r.Event, "association", r.AssociationID, "err", err)
		}
		select {
		case <-life.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, w.maxBackoff)
	}
}

// attempt is one bounded PutRecord, abandoned early if life ends.
func (w *Writer) attempt(life context.Context, key string, body []byte) error {
	ctx, cancel := context.WithTimeout(life, w.attemptTimeout)
	defer cancel()
	if err := w.store.PutRecord(ctx, key, body); err != nil {
		return fmt.Errorf("auditwriter: put %s: %w", key, err)
	}
	return nil
}

// Close stops accepting records and waits until every queued one is
// written or ctx nears its end; then it gives up on the rest, logs each as
// lost, writes the stop record (Stopping's) naming them in what is left of
// ctx, and returns an error saying how many records were lost.
func (w *Writer) Close(ctx context.Context) error {
	w.stopSweep()
	w.flushRefusals(true)
	w.mu.Lock()
	first := !w.closed
	w.closed = true
	stop := w.stop
	w.stop = nil
	w.mu.Unlock()
	if first {
		go func() {
			// Senders waiting for room finish (or give up) before the
			// queue closes behind them.
			w.senders.Wait()
			close(w.queue)
		}()
	}
	flush := ctx
	if stop != nil {
		var cancel context.CancelFunc
		flush, cancel = reserveForStop(ctx)
		defer cancel()
	}
	select {
	case <-w.done:
	case <-flush.Done():
		w.giveUp()
		<-w.done
	}
	w.giveUp()
	stopWritten := true
	if stop != nil {
		stopWritten = w.writeStop(ctx, *stop)
	}
	var errs []error
	if n := w.lost.Load(); n > 0 {
		errs = append(errs, fmt.Errorf("auditwriter: close: %d records not written", n))
	}
	if first {
		// Every record was written or counted lost, and named by the stop
		// record: a clean stop, unless that record is itself lost.
		if err := w.closeRun(ctx, stopWritten); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stopReserve is the time of Close's ctx kept for the stop record, which
// is written once the queue is flushed or given up (a quarter of what is
// left, when that is less).
const stopReserve = time.Second

// reserveForStop is ctx ending stopReserve early: the queue's share of it.
func reserveForStop(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, deadline.Add(-min(stopReserve, time.Until(deadline)/4)))
}

// writeStop writes the stop record last, once every other record of the
// run is written or counted lost, naming those lost; a stop record not
// written is itself lost, logged and counted (false).
func (w *Writer) writeStop(ctx context.Context, r associationaudit.Record) bool {
	if n := w.lost.Load(); n > 0 {
		w.lostMu.Lock()
		seqs := slices.Clone(w.lostSeqs)
		w.lostMu.Unlock()
		slices.Sort(seqs)
		r.Lost = &associationaudit.LostRecords{Count: n, Seqs: seqs}
	}
	if !w.write(ctx, r) {
		return false
	}
	if w.feed != nil {
		w.feed(r)
	}
	return true
}

// metrics of the writer, registered when Options.Metrics is set.
type metrics struct {
	writable prometheus.Gauge
	written  prometheus.Counter
	failures prometheus.Counter
	waits    prometheus.Counter
	lost     prometheus.Counter
	wait     prometheus.Histogram
	unclean  *metricnames.HeldCounter
	folded   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, w *Writer) (*metrics, error) {
	m := &metrics{
		writable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricnames.AuditWritable,
			Help: "1 while association audit records are being written, 0 while the last attempt failed (new associations are refused).",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicom_ingest_audit_records_written_total", Help: "Association audit records written.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicom_ingest_audit_write_failures_total", Help: "Failed attempts to write an association audit record (each is retried).",
		}),
		waits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicom_ingest_audit_queue_waits_total", Help: "Association events that waited for room in the full audit record queue.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricnames.AuditRecordsLost, Help: "Association audit records never written (still queued at exit, or not encodable).",
		}),
	}
	m.wait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "dicom_ingest_audit_record_wait_seconds",
		Help:    "From an association event to its audit record durably written: how long the record was only in memory, what a crash would lose.",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	})
	// Held: a start counts the dead runs it finds before the agent's
	// first scrape, its baseline, which took them in and published none.
	m.unclean = metricnames.NewHeldCounter(prometheus.CounterOpts{
		Name: metricnames.AuditUncleanStops,
		Help: "Runs found to have stopped uncleanly (killed, crashed), at start or by a running SCP: the start record, or the unclean-stop-found record, says which audit records they may have lost. What is found before the first scrape shows from the second.",
	})
	m.folded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: metricnames.AuditRefusalsFolded,
		Help: "Refused connections (failed TLS handshakes, rejected associations) folded into a record standing for several (its count), not written one by one: a flood of refusals, past their share of the audit record queue or repeated by a peer within the window.",
	})
	m.writable.Set(1)
	if reg == nil {
		return m, nil
	}
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricnames.AuditQueueLength, Help: "Association audit records not yet written: queued, or being written (retried while the store refuses them). What a crash would lose now.",
	}, func() float64 { return float64(w.unwritten.Load()) })
	for _, c := range []prometheus.Collector{m.writable, m.written, m.failures, m.waits, m.lost, m.wait, m.unclean, m.folded, queued} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("auditwriter: register metrics: %w", err)
		}
	}
	return m, nil
}
