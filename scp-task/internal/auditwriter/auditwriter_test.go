package auditwriter

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
)

type recordStore struct {
	mu       sync.Mutex
	failures int // fail this many puts first
	got      map[string]associationaudit.Record
	block    chan struct{}
}

func (s *recordStore) PutRecord(_ context.Context, key string, body []byte) error {
	if s.block != nil {
		<-s.block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failures > 0 {
		s.failures--
		return errors.New("store down")
	}
	r, err := associationaudit.Parse(body)
	if err != nil {
		return err
	}
	s.got[key] = r
	return nil
}

func TestRecordsForEveryEvent(t *testing.T) {
	store := &recordStore{failures: 2, got: map[string]associationaudit.Record{}}
	w := New(store, Options{Implementation: "TEST 1"})
	at := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	info := &dicomnet.AssociationInfo{ID: "x1", CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE", RemoteAddr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 99}}
	evs := []dicomnet.Event{
		{Type: dicomnet.EventRejected, Time: at, Association: &dicomnet.AssociationInfo{ID: "x0", CallingAE: "EVIL"}, Reject: dicomnet.RejectCallingAENotRecognized},
		{Type: dicomnet.EventAccepted, Time: at, Association: info},
		{Type: dicomnet.EventStored, Time: at, Association: info, Bytes: 100},
		{Type: dicomnet.EventStored, Time: at, Association: info, Bytes: 50},
		{Type: dicomnet.EventStoreFailed, Time: at, Association: info, Status: 0xA700, SOPClassUID: "1.2", SOPInstanceUID: "1.2.3"},
		{Type: dicomnet.EventAborted, Time: at, Association: info, AbortSource: 2, AbortReason: 6},
	}
	for _, ev := range evs {
		w.ObserveAssociation(ev)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	byEvent := map[string]associationaudit.Record{}
	for key, r := range store.got {
		if !strings.HasPrefix(key, "audit/2026/02/03/") {
			t.Errorf("key %s", key)
		}
		byEvent[r.Event] = r
	}
	if len(byEvent) != 4 {
		t.Fatalf("records: %v", store.got)
	}
	if r := byEvent[associationaudit.EventRejected]; r.RejectResult != 1 || r.RejectSource != 1 || r.RejectReason != 3 || r.CallingAE != "EVIL" || r.Reason == "" {
		t.Errorf("rejected = %+v", r)
	}
	if r := byEvent[associationaudit.EventStoreFailed]; r.Status != "A700" || r.SOPInstanceUID != "1.2.3" || r.PeerAddr != "10.1.2.3:99" {
		t.Errorf("store-failed = %+v", r)
	}
	if r := byEvent[associationaudit.EventAborted]; r.Instances != 2 || r.Bytes != 150 || r.AbortSource == nil || *r.AbortSource != 2 || *r.AbortReason != 6 {
		t.Errorf("aborted = %+v", r)
	}
	if r := byEvent[associationaudit.EventAccepted]; r.Implementation != "TEST 1" || r.Seq == 0 {
		t.Errorf("accepted = %+v", r)
	}
}

func TestFullQueueDropsInsteadOfBlocking(t *testing.T) {
	store := &recordStore{got: map[string]associationaudit.Record{}, block: make(chan struct{})}
	w := New(store, Options{QueueSize: 1})
	info := &dicomnet.AssociationInfo{ID: "q"}
	done := make(chan struct{})
	go func() {
		for i := 0; i < 5; i++ {
			w.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAccepted, Association: info})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ObserveAssociation blocked on a slow store")
	}
	if w.Dropped() == 0 {
		t.Error("no record counted as dropped")
	}
	close(store.block)
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
