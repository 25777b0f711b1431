package auditwriter

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
)

// TestFeedGetsEveryRecord: the audit feed hook sees each record, in order,
// after the store took it (here after two failed attempts), and never for
// events that only update an association's tally.
func TestFeedGetsEveryRecord(t *testing.T) {
	store := &recordStore{failures: 2, got: map[string]associationaudit.Record{}}
	var mu sync.Mutex
	var fed []string
	w, err := New(store, Options{MaxBackoff: 10 * time.Millisecond, Feed: func(r associationaudit.Record) {
		store.mu.Lock()
		written := len(store.got)
		store.mu.Unlock()
		mu.Lock()
		defer mu.Unlock()
		if written <= len(fed) {
			t.Errorf("record %s fed before it was written", r.Event)
		}
		fed = append(fed, r.Event)
	}})
	if err != nil {
		t.Fatal(err)
	}
	info := &dicomnet.AssociationInfo{ID: "x1", CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE", RemoteAddr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 99}}
	for _, ev := range []dicomnet.Event{
		{Type: dicomnet.EventAccepted, Association: info},
		{Type: dicomnet.EventStored, Association: info, Bytes: 10},
		{Type: dicomnet.EventReleased, Association: info},
	} {
		w.ObserveAssociation(ev)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(fed) != 2 || fed[0] != associationaudit.EventAccepted || fed[1] != associationaudit.EventReleased {
		t.Errorf("fed %v", fed)
	}
}

// TestFeedNeverGetsWhatWasNotWritten: a record Close gave up on is in
// neither the trail nor the feed, and is counted as lost; a later record
// that was written is fed, in the order written.
func TestFeedNeverGetsWhatWasNotWritten(t *testing.T) {
	store := &recordStore{down: true, got: map[string]associationaudit.Record{}}
	var mu sync.Mutex
	var fed []string
	w, err := New(store, Options{MaxBackoff: 10 * time.Millisecond, Feed: func(r associationaudit.Record) {
		mu.Lock()
		defer mu.Unlock()
		fed = append(fed, r.Event)
	}})
	if err != nil {
		t.Fatal(err)
	}
	info := &dicomnet.AssociationInfo{ID: "x1", CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE"}
	w.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAccepted, Association: info})
	w.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventReleased, Association: info})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := w.Close(ctx); err == nil {
		t.Fatal("Close reported no loss")
	}
	if got := w.Lost(); got != 2 {
		t.Errorf("lost %d records, want 2", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(fed) != 0 || store.count() != 0 {
		t.Errorf("fed %v and wrote %d records the trail never got", fed, store.count())
	}
}

// slowStore takes each put after a delay that shrinks with the record's
// sequence number, so writes started in order finish out of order. It
// sums the time its puts took (busy) and notes when the first began and
// the last ended (span).
type slowStore struct {
	mu          sync.Mutex
	inFlight    int
	most        int
	written     map[uint64]bool
	busy        time.Duration
	first, last time.Time
}

func (s *slowStore) PutRecord(ctx context.Context, key string, body []byte) error {
	r, err := associationaudit.Parse(body)
	if err != nil {
		return err
	}
	s.mu.Lock()
	began := time.Now()
	if s.first.IsZero() {
		s.first = began
	}
	s.inFlight++
	s.most = max(s.most, s.inFlight)
	s.mu.Unlock()
	time.Sleep(time.Duration(20-r.Seq%20) * time.Millisecond)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = time.Now()
	s.busy += s.last.Sub(began)
	s.inFlight--
	s.written[r.Seq] = true
	return nil
}

// TestParallelWritesFedInQueueOrder: records are written several at a time
// (a store's latency does not bound the records written per second) and fed
// in queue order, each only once written, whatever order the writes end in.
func TestParallelWritesFedInQueueOrder(t *testing.T) {
	store := &slowStore{written: map[uint64]bool{}}
	var fed []uint64
	w, err := New(store, Options{Parallel: 8, Feed: func(r associationaudit.Record) {
		store.mu.Lock()
		written := store.written[r.Seq]
		store.mu.Unlock()
		if !written {
			t.Errorf("record %d fed before it was written", r.Seq)
		}
		fed = append(fed, r.Seq)
	}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 64
	for i := range n {
		w.ObserveAssociation(failedEvent("p", i))
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(fed) != n {
		t.Fatalf("fed %d of %d records", len(fed), n)
	}
	for i, seq := range fed {
		if seq != uint64(i+1) {
			t.Fatalf("fed out of queue order: %v", fed)
		}
	}
	if store.most < 2 || store.most > 8 {
		t.Errorf("at most %d writes at once, want 2..8", store.most)
	}
	// The writes' durations add up to about twice their span only if, on
	// average, two or more were under way (one at a time: once); ~6 here.
	// Measured on the store's own clock rather than against a fixed
	// figure, so a loaded machine, which stretches the writes under way
	// as much as their span, does not fail it.
	if span := store.last.Sub(store.first); store.busy < 2*span {
		t.Errorf("%d records: writes took %v in all over %v, fewer than 2 at a time on average", n, store.busy, span)
	}
}
