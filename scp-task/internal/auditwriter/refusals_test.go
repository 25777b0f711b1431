package auditwriter

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

var refusalStart = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// handshakeFailed is the i-th failed handshake from host (a port of its own).
func handshakeFailed(i int, host string) dicomnet.Event {
	return dicomnet.Event{Type: dicomnet.EventHandshakeFailed, Time: refusalStart.Add(time.Duration(i) * time.Millisecond),
		Association: &dicomnet.AssociationInfo{ID: fmt.Sprintf("h%d", i), RemoteAddr: &net.TCPAddr{IP: net.ParseIP(host), Port: 40000 + i%20000}},
		Err:         tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}} // as crypto/tls reports it
}

// unknownAE is the i-th association an unknown calling AE asked for from host.
func unknownAE(i int, host string) dicomnet.Event {
	return dicomnet.Event{Type: dicomnet.EventRejected, Time: refusalStart.Add(time.Duration(i) * time.Millisecond),
		Association: &dicomnet.AssociationInfo{ID: fmt.Sprintf("r%d", i), CallingAE: "EVIL", CalledAE: "REMOTE_AE",
			RemoteAddr: &net.TCPAddr{IP: net.ParseIP(host), Port: 40000 + i%20000}},
		Reject: dicomnet.RejectCallingAENotRecognized}
}

// peer is the n-th of many addresses.
func peer(n int) string { return fmt.Sprintf("10.0.%d.%d", n/250, 1+n%250) }

// TestRefusalsFold: refusals are written one by one until they repeat
// within the window or pass their share of the queue; past that they are
// folded into records that count them, and the writer never waits for them
// nor refuses associations for them. However they come, every refusal is
// in the trail (a record of its own or a count), every folded one is in
// the metric, and nothing is lost.
func TestRefusalsFold(t *testing.T) {
	tests := []struct {
		name    string
		queue   int
		blocked bool // the store holds every write until the refusals are in
		events  func() []dicomnet.Event
		// own: records of one refusal, alone: those of them folded alone in
		// their window (counted as folded); folded: the counts of the
		// records standing for several, in the order written.
		own, alone int
		folded     []int
		check      func(t *testing.T, rejected []associationaudit.Record)
	}{
		{name: "distinct refusals are each written", queue: 16, events: func() []dicomnet.Event {
			return []dicomnet.Event{handshakeFailed(0, "10.0.0.1"), unknownAE(1, "10.0.0.1"), handshakeFailed(2, "10.0.0.2")}
		}, own: 3},
		{name: "repeats from one peer fold into one record", queue: 16, events: func() []dicomnet.Event {
			var evs []dicomnet.Event
			for i := range 5 {
				evs = append(evs, handshakeFailed(i, "10.0.0.1"))
			}
			return evs
		}, own: 1, folded: []int{4}, check: func(t *testing.T, rejected []associationaudit.Record) {
			f := rejected[1]
			if f.PeerAddr != "10.0.0.1" || f.AssociationID != "h1" || !f.Time.Equal(refusalStart.Add(time.Millisecond)) ||
				!f.Until.Equal(refusalStart.Add(4*time.Millisecond)) {
				t.Errorf("folded record %+v", f)
			}
			if want := "4 refusals from 10.0.0.1 between 2026-03-04T05:06:07.001Z and 2026-03-04T05:06:07.004Z, folded into this record " +
				"(a flood of refused connections); the first: TLS handshake failed: reason not_tls: tls: first record does not look like a TLS handshake"; f.Reason != want {
				t.Errorf("reason %q\nwant   %q", f.Reason, want)
			}
		}},
		{name: "a refusal of one kind does not fold another's", queue: 16, events: func() []dicomnet.Event {
			return []dicomnet.Event{handshakeFailed(0, "10.0.0.1"), unknownAE(1, "10.0.0.1"), handshakeFailed(2, "10.0.0.1"), unknownAE(3, "10.0.0.1")}
		}, own: 4, alone: 2, check: func(t *testing.T, rejected []associationaudit.Record) {
			// Each second one alike is folded alone: written as it was.
			if len(rejected) != 4 || rejected[2].Count != 0 || rejected[2].PeerAddr != "10.0.0.1:40002" {
				t.Errorf("records %+v", rejected)
			}
		}},
		{name: "past the share, refusals fold without waiting", queue: 8, blocked: true, events: func() []dicomnet.Event {
			var evs []dicomnet.Event
			for i := range 1000 {
				evs = append(evs, handshakeFailed(i, peer(i%10)))
			}
			return evs
		}, own: 2, folded: []int{100, 100, 100, 100, 100, 100, 100, 100, 99, 99}},
		{name: "more peers than a window tracks", queue: 4096, events: func() []dicomnet.Event {
			var evs []dicomnet.Event
			for i := range 3 * maxRefusalKeys {
				evs = append(evs, unknownAE(i, peer(i)))
			}
			return evs
		}, own: maxRefusalKeys, folded: []int{2 * maxRefusalKeys}, check: func(t *testing.T, rejected []associationaudit.Record) {
			o := rejected[len(rejected)-1]
			if o.PeerAddr != "" || o.CallingAE != "" || o.CalledAE != "REMOTE_AE" || o.RejectReason != 0 ||
				!strings.Contains(o.Reason, "from peers beyond the window's 64") {
				t.Errorf("record of other peers %+v", o)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &recordStore{got: map[string]associationaudit.Record{}}
			if tt.blocked {
				store.block = make(chan struct{})
			}
			w, err := New(store, Options{QueueSize: tt.queue, MaxBackoff: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			w.refusals.window = time.Hour // the stop ends it
			evs := tt.events()
			site := &dicomnet.AssociationInfo{ID: "site1", CallingAE: "SITE_A", CalledAE: "REMOTE_AE", RemoteAddr: &net.TCPAddr{IP: net.IPv4(10, 9, 9, 9), Port: 1}}
			observed := make(chan struct{})
			go func() {
				defer close(observed)
				for i, ev := range evs {
					w.ObserveAssociation(ev)
					if i == len(evs)/2 {
						// A site's association amid them is let in and
						// recorded, however many refusals came.
						if err := w.Ready(context.Background()); err != nil {
							t.Errorf("not ready amid refusals: %v", err)
						}
						w.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAccepted, Association: site, Time: refusalStart})
					}
				}
			}()
			select {
			case <-observed:
			case <-time.After(10 * time.Second):
				t.Fatal("refusals waited for room")
			}
			if store.block != nil {
				close(store.block)
			}
			w.Stopping("test")
			if err := w.Close(context.Background()); err != nil {
				t.Fatal(err)
			}

			var rejected []associationaudit.Record
			accepted := 0
			for _, r := range store.got {
				switch r.Event {
				case associationaudit.EventRejected:
					rejected = append(rejected, r)
				case associationaudit.EventAccepted:
					accepted++
				}
			}
			slices.SortFunc(rejected, func(a, b associationaudit.Record) int { return int(a.Seq) - int(b.Seq) })
			own, total := 0, 0
			var folded []int
			for _, r := range rejected {
				if r.Count == 0 {
					own++
					total++
					continue
				}
				folded = append(folded, r.Count)
				total += r.Count
			}
			if own != tt.own || !slices.Equal(folded, tt.folded) {
				t.Errorf("%d written on their own and %v folded, want %d and %v", own, folded, tt.own, tt.folded)
			}
			if total != len(evs) {
				t.Errorf("the trail holds %d refusals, want %d", total, len(evs))
			}
			if got, want := testutil.ToFloat64(w.metrics.folded), float64(len(evs)-own+tt.alone); got != want {
				t.Errorf("folded metric %v, want %v", got, want)
			}
			if accepted != 1 || w.Lost() != 0 {
				t.Errorf("%d accepted records, %d lost", accepted, w.Lost())
			}
			if tt.check != nil {
				tt.check(t, rejected)
			}
		})
	}
}

// TestRefusalWindowEnds: the records of a window's folded refusals are
// written when it ends, without a stop; the next window starts afresh.
func TestRefusalWindowEnds(t *testing.T) {
	store := &recordStore{got: map[string]associationaudit.Record{}}
	w, err := New(store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.refusals.window = 50 * time.Millisecond
	for i := range 3 {
		w.ObserveAssociation(handshakeFailed(i, "10.0.0.1"))
	}
	testenv.Eventually(t, "the refusal and the window's folded ones written", func() bool { return w.written.Load() >= 2 })
	w.ObserveAssociation(handshakeFailed(3, "10.0.0.1")) // a new window: written on its own
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var counts []int
	for _, r := range store.got {
		counts = append(counts, r.Count)
	}
	slices.Sort(counts)
	if d := cmp.Diff([]int{0, 0, 2}, counts); d != "" {
		t.Errorf("counts (-want +got):\n%s", d)
	}
}

// TestRefusedCertificateAlertOncePerRecord: the log's security alert
// naming a refused certificate comes with the refusal's own record; the
// ones folded after it are counted, not logged again.
func TestRefusedCertificateAlertOncePerRecord(t *testing.T) {
	var logs strings.Builder
	store := &recordStore{got: map[string]associationaudit.Record{}}
	w, err := New(store, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	cert := []*x509.Certificate{testpki.NewCA(t, "Other CA").Client(t, testpki.Options{CommonName: "pacs.site-a.example"}).Cert}
	for i := range 5 {
		ev := handshakeFailed(i, "10.0.0.1")
		ev.PeerCertificates = cert
		ev.Err = &tls.CertificateVerificationError{UnverifiedCertificates: cert, Err: errors.New("x509: certificate signed by unknown authority")}
		w.ObserveAssociation(ev)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "security alert: client certificate refused in the TLS handshake"); n != 1 {
		t.Errorf("%d security alert lines, want 1\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "audit: refusals folded into one record per peer"); n != 1 {
		t.Errorf("%d lines telling of folding, want 1\n%s", n, logs.String())
	}
}

// TestStopWithFoldedRefusalsAndQueueFull: the records of a window's folded
// refusals, made at the stop while the store refuses every record and the
// queue is full (an outage: the SCP refuses the sites' associations 02 03
// 01, each a refusal), do not hold up the stop: Stopping returns at once
// and Close gives up at its deadline, counting them lost with the rest.
// Before, Stopping's flush waited for room that only Close's giving up
// makes: the stop hung until the stop timeout's SIGKILL, and Close alone
// hung whatever its deadline.
func TestStopWithFoldedRefusalsAndQueueFull(t *testing.T) {
	for _, stopping := range []bool{true, false} {
		t.Run(fmt.Sprintf("stopping=%v", stopping), func(t *testing.T) {
			store := &recordStore{got: map[string]associationaudit.Record{}, down: true}
			w, err := New(store, Options{QueueSize: 4, Parallel: 1, MaxBackoff: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			w.Started("bbbb", "REMOTE_AE")
			for i := range 3 {
				w.ObserveAssociation(unknownAE(i, "10.0.0.1")) // one own record, two folded
			}
			// The rest of the queue: the sites' associations, until the
			// worker holds the two it can (one being written, one waiting
			// for the feeder: every record numbered so far is queued) and
			// the queue is full for good.
			i := 0
			testenv.Eventually(t, "a full queue", func() bool {
				for ; len(w.queue) < cap(w.queue); i++ {
					w.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAccepted, Association: &dicomnet.AssociationInfo{ID: fmt.Sprintf("s%d", i)}})
				}
				return int(w.seq.Load())-len(w.queue) == 2
			})
			stopGivingUp(t, w, stopping, "Stopping waits for room in the queue for the folded refusals")
			// The start, the refusal written on its own, the record of the
			// two folded, the sites' and the stop: all numbered, all lost.
			if w.Lost() != w.seq.Load() || len(store.got) != 0 {
				t.Errorf("%d records lost of %d, %d written", w.Lost(), w.seq.Load(), len(store.got))
			}
		})
	}
}

// TestRefusalsFoldWhileWritten: refusals folded while their records are
// being written, windows ending fast, then the stop: every refusal is in
// the trail, none lost. Under the race detector it found the count of
// queued refusals the folding's log line tells read outside the lock the
// writes update it under; and, once in about forty runs, a window ending
// as Close started whose folded record was queued after Close had closed
// the queue: counted lost after Close had returned nil (a stop record
// would not have named it), a few hundred refusals in neither.
func TestRefusalsFoldWhileWritten(t *testing.T) {
	store := &recordStore{got: map[string]associationaudit.Record{}}
	w, err := New(store, Options{QueueSize: 4, Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	w.refusals.window = time.Millisecond
	n := 0
	for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); n++ {
		w.ObserveAssociation(handshakeFailed(n, peer(n%3)))
	}
	w.Stopping("test")
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	total := 0
	store.mu.Lock()
	for _, r := range store.got {
		total += r.Events()
	}
	store.mu.Unlock()
	if total != n || w.Lost() != 0 {
		t.Errorf("the trail holds %d refusals, want %d; %d records lost", total, n, w.Lost())
	}
}
