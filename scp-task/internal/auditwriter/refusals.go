package auditwriter

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
)

// Refusals (association-rejected records: a failed TLS handshake, an
// A-ASSOCIATE-RJ) come from peers that have not authenticated, as fast as
// they can connect: each used to be a record of its own that waited for
// room like any other, so a flood of garbage connections filled the queue,
// made Ready fail (the SCP refused every site's association with 02 03 01
// and /readyz answered 503) and held a goroutine and its connection per
// refusal. Now a refusal never waits for room and never holds more than
// its share of the queue:
//
//   - a refusal is written as its own record while refusals hold less than
//     refusalShare of the queue and the queue has room, unless one alike
//     (refusalKey: same peer address, AE titles, A-ASSOCIATE-RJ fields and
//     presented certificate) was written in the same window;
//   - any other is folded: counted (dicom_ingest_audit_refusals_folded_total)
//     into one record per alike group, written when the window ends
//     (refusalWindow after its first refusal) or at the stop, with Count,
//     the first one's time and reason and the last one's time (Until).
//
// A window tracks at most maxRefusalKeys groups; refusals of further groups
// fold into one record for other peers (PeerAddr empty). So a window writes
// at most 2*maxRefusalKeys+1 refusal records however many peers flood, and
// refusal records never hold more than refusalShare+maxRefusalKeys+1 places
// in the queue: the rest is for the associations' records.
const (
	refusalWindow  = 10 * time.Second
	maxRefusalKeys = 64
)

// refusalShare is the part of the queue refusal records may hold, at least
// one place.
func refusalShare(queueSize int) int { return max(queueSize/4, 1) }

type refusalKey struct {
	peer                   string // the address without the port
	callingAE, calledAE    string
	result, source, reason int
	cert                   string // SHA-256 of the certificate presented
}

func keyOf(r associationaudit.Record) refusalKey {
	k := refusalKey{peer: associationaudit.PeerHost(r.PeerAddr), callingAE: r.CallingAE, calledAE: r.CalledAE,
		result: r.RejectResult, source: r.RejectSource, reason: r.RejectReason}
	if r.TLS != nil {
		k.cert = r.TLS.SHA256
	}
	return k
}

// foldedRefusals are the refusals of one group folded in a window.
type foldedRefusals struct {
	first associationaudit.Record
	last  time.Time
	count int
}

func (f *foldedRefusals) add(r associationaudit.Record) *foldedRefusals {
	if f == nil {
		f = &foldedRefusals{first: r}
	}
	f.count++
	f.last = r.Time
	return f
}

// record is what the trail keeps of f: its only refusal as it was, or one
// record standing for all of them.
func (f *foldedRefusals) record(other bool) associationaudit.Record {
	r := f.first
	if f.count == 1 {
		return r
	}
	r.Count, r.Until = f.count, f.last
	from := associationaudit.PeerHost(r.PeerAddr)
	r.PeerAddr = from
	if other {
		// Refusals of many peers: the first one's names stand for none.
		r.PeerAddr, r.CallingAE, r.TLS = "", "", nil
		r.RejectResult, r.RejectSource, r.RejectReason = 0, 0, 0
		from = "peers beyond the window's " + fmt.Sprint(maxRefusalKeys)
	}
	r.Reason = fmt.Sprintf("%d refusals from %s between %s and %s, folded into this record (a flood of refused connections); the first: %s",
		f.count, from, f.first.Time.UTC().Format(time.RFC3339Nano), f.last.UTC().Format(time.RFC3339Nano), f.first.Reason)
	return r
}

// refusals is the writer's state of the refusal share and of the window.
type refusals struct {
	share  int
	window time.Duration

	mu     sync.Mutex
	queued int                            // refusal records queued or being written
	seen   map[refusalKey]*foldedRefusals // this window's groups: nil, one written and none folded yet
	other  *foldedRefusals                // beyond maxRefusalKeys groups
	timer  *time.Timer                    // ends the window
	warned bool                           // the window's folding is logged
	ended  bool                           // Close has made the last window's records: no more folding
}

// refused writes r (a refusal, not yet numbered) as its own record or
// folds it; true when it is written on its own.
func (w *Writer) refused(r associationaudit.Record) bool {
	rf := &w.refusals
	k := keyOf(r)
	rf.mu.Lock()
	f, seen := rf.seen[k]
	// After Close's last window a refusal is never folded into a window no
	// one writes: it is queued if the queue is still open, else counted
	// lost, as any event after Close.
	if rf.ended || !seen && rf.queued < rf.share && len(w.queue) < cap(w.queue) && len(rf.seen) < maxRefusalKeys {
		if !rf.ended {
			rf.track(w, k, nil)
		}
		rf.queued++
		rf.mu.Unlock()
		r.Seq = w.seq.Add(1)
		if !w.enqueue(r) {
			w.refusalDone()
		}
		return true
	}
	switch {
	case seen || len(rf.seen) < maxRefusalKeys:
		rf.track(w, k, f.add(r))
	default:
		rf.other = rf.other.add(r)
	}
	warn, queued := !rf.warned, rf.queued
	rf.warned = true
	rf.mu.Unlock()
	w.metrics.folded.Inc()
	if warn {
		w.log.Warn("audit: refusals folded into one record per peer: refused connections come faster than the audit trail writes them one by one",
			"window", rf.window.String(), "queued_refusals", queued)
	}
	return false
}

// track sets k's group in the window, starting the window if it has none.
// Called with mu held.
func (rf *refusals) track(w *Writer, k refusalKey, f *foldedRefusals) {
	if rf.seen == nil {
		rf.seen = map[refusalKey]*foldedRefusals{}
	}
	rf.seen[k] = f
	if rf.timer == nil {
		rf.timer = time.AfterFunc(rf.window, func() { w.flushRefusals(false) })
	}
}

// refusalDone frees the place of a refusal record written, given up or
// never queued.
func (w *Writer) refusalDone() {
	w.refusals.mu.Lock()
	w.refusals.queued--
	w.refusals.mu.Unlock()
}

// flushRefusals ends the window: every group with refusals folded becomes
// a record, queued in order by a goroutine of its own that waits for room
// (it holds up no association, nor the stop: Close gives up on it as on
// any sender) or counted lost after Close. final is Close's: refusals
// after it are no longer folded.
func (w *Writer) flushRefusals(final bool) {
	rf := &w.refusals
	rf.mu.Lock()
	rf.ended = rf.ended || final
	if rf.timer != nil {
		rf.timer.Stop()
		rf.timer = nil
	}
	var recs []associationaudit.Record
	for _, f := range rf.seen {
		if f != nil {
			recs = append(recs, f.record(false))
		}
	}
	// In the order of their first refusals.
	slices.SortFunc(recs, func(a, b associationaudit.Record) int { return a.Time.Compare(b.Time) })
	if rf.other != nil {
		recs = append(recs, rf.other.record(true))
	}
	rf.seen, rf.other, rf.warned = nil, nil, false
	if len(recs) == 0 {
		rf.mu.Unlock()
		return
	}
	for i := range recs {
		recs[i].Seq = w.seq.Add(1)
	}
	// Admitted as a sender under rf.mu, so that Close, whose final flush
	// comes after this one, waits for these records before it closes the
	// queue: a window ending as Close starts has its records queued or
	// counted lost before the stop record counts what was lost.
	w.mu.Lock()
	closed := w.closed
	if !closed {
		w.senders.Add(1)
	}
	w.mu.Unlock()
	if !closed {
		rf.queued += len(recs)
	}
	rf.mu.Unlock()
	if closed {
		for _, r := range recs {
			w.lose(r, "event after close")
		}
		return
	}
	go func() {
		defer w.senders.Done()
		for _, r := range recs {
			if !w.send(nil, r) {
				w.refusalDone()
			}
		}
	}()
}
