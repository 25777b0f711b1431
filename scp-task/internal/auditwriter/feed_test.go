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
