package auditwriter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/ingest"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

type recordStore struct {
	mu       sync.Mutex
	failures int  // fail this many puts first
	down     bool // fail every put while set
	got      map[string]associationaudit.Record
	block    chan struct{}
	refuse   string // fail every put of a key holding it
}

func (s *recordStore) PutRecord(ctx context.Context, key string, body []byte) error {
	if s.block != nil {
		select {
		case <-s.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down || (s.refuse != "" && strings.Contains(key, s.refuse)) {
		return errors.New("no space left on device")
	}
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
	w, err := New(store, Options{Implementation: "TEST 1", MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	info := &dicomnet.AssociationInfo{ID: "x1", CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE", RemoteAddr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 99}}
	evs := []dicomnet.Event{
		{Type: dicomnet.EventRejected, Time: at, Association: &dicomnet.AssociationInfo{ID: "x0", CallingAE: "EVIL"}, Reject: dicomnet.RejectCallingAENotRecognized},
		{Type: dicomnet.EventAccepted, Time: at, Association: info},
		{Type: dicomnet.EventStored, Time: at, Association: info, Bytes: 100},
		{Type: dicomnet.EventStored, Time: at, Association: info, Bytes: 50},
		{Type: dicomnet.EventStored, Time: at, Association: info, Bytes: 50, SOPClassUID: "1.2", SOPInstanceUID: "1.2.4",
			Err: &ingest.AlreadyHeld{Key: "incoming/2026/02/03/1.9/1.9.1/1.2.4.dcm", StudyInstanceUID: "1.9", SeriesInstanceUID: "1.9.1"}},
		{Type: dicomnet.EventStoreFailed, Time: at, Association: info, Status: 0xA700, SOPClassUID: "1.2", SOPInstanceUID: "1.2.3",
			Err: &ingest.ObjectRefused{Status: dimse.Status{Code: 0xA700}, StudyInstanceUID: "1.9", SeriesInstanceUID: "1.9.1"}},
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
	if len(byEvent) != 5 {
		t.Fatalf("records: %v", store.got)
	}
	if r := byEvent[associationaudit.EventRejected]; r.RejectResult != 1 || r.RejectSource != 1 || r.RejectReason != 3 || r.CallingAE != "EVIL" || r.Reason == "" {
		t.Errorf("rejected = %+v", r)
	}
	// The study and series its header named, for the study's page (a
	// C-STORE refused for its pixel data was audited without them).
	if r := byEvent[associationaudit.EventStoreFailed]; r.Status != "A700" || r.SOPInstanceUID != "1.2.3" || r.PeerAddr != "10.1.2.3:99" ||
		r.StudyInstanceUID != "1.9" || r.SeriesInstanceUID != "1.9.1" {
		t.Errorf("store-failed = %+v", r)
	}
	// A resend the store held: its own record, and a C-STORE the end
	// record counts.
	if r := byEvent[associationaudit.EventDuplicate]; r.SOPInstanceUID != "1.2.4" || r.StudyInstanceUID != "1.9" || r.Reason != "" ||
		r.ObjectKey != "incoming/2026/02/03/1.9/1.9.1/1.2.4.dcm" || r.CallingAE != "LOCAL_AE" || r.Seq == 0 {
		t.Errorf("duplicate = %+v", r)
	}
	if r := byEvent[associationaudit.EventAborted]; r.Instances != 3 || r.Bytes != 200 || r.AbortSource == nil || *r.AbortSource != 2 || *r.AbortReason != 6 {
		t.Errorf("aborted = %+v", r)
	}
	if r := byEvent[associationaudit.EventAccepted]; r.Implementation != "TEST 1" || r.Seq == 0 {
		t.Errorf("accepted = %+v", r)
	}
}

// TestStoreFailedStatus: a store-failed record's status is the failure
// status the sender was answered, and none for a C-STORE the association's
// end cut short, which was answered nothing (it was written "0000"). Either
// names the study and series its header gave, when it was read (a C-STORE
// cut short named none, so its study's page never listed it). A refusal
// whose response could not be written, a C-STORE's or a Storage Commitment
// request's, is recorded not sent (the commitment-refused record read as
// answered); a Storage Commitment request cut short has no status, as a
// C-STORE cut short has none.
func TestStoreFailedStatus(t *testing.T) {
	info := &dicomnet.AssociationInfo{ID: "x1", CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE", RemoteAddr: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 99}}
	incomplete := errors.New("dicomnet: data set incomplete: dicomnet: connection closed: EOF")
	refusedNAction := errors.New("no commitment peer")
	for _, tt := range []struct {
		name          string
		typ           dicomnet.EventType
		status        uint16
		err           error
		want          string
		notSent       bool
		study, series string
	}{
		{"answered A700", dicomnet.EventStoreFailed, 0xA700, &ingest.ObjectRefused{Status: dimse.Status{Code: 0xA700}, StudyInstanceUID: "1.2", SeriesInstanceUID: "1.2.1"}, "A700", false, "1.2", "1.2.1"},
		{"cut short before its header", dicomnet.EventStoreFailed, 0, incomplete, "", false, "", ""},
		{"cut short after its header", dicomnet.EventStoreFailed, 0, &ingest.CutShort{StudyInstanceUID: "1.2", SeriesInstanceUID: "1.2.1", Err: incomplete}, "", false, "1.2", "1.2.1"},
		// Refused, and its response could not be written: the status
		// decided, and that it was not sent (it read as answered).
		{"A700 not sent", dicomnet.EventStoreFailed, 0xA700, fmt.Errorf("%w; %w", dicomnet.ErrNotSent, &ingest.ObjectRefused{Status: dimse.Status{Code: 0xA700}}), "A700", true, "", ""},
		{"commitment refused", dicomnet.EventCommitmentRefused, 0x0110, refusedNAction, "0110", false, "", ""},
		{"commitment refused, not sent", dicomnet.EventCommitmentRefused, 0x0110, fmt.Errorf("%w; %w", dicomnet.ErrNotSent, refusedNAction), "0110", true, "", ""},
		// Its data set cut short by the association's end: answered
		// nothing, no status (it recorded nothing, the trail holding the
		// association's abort alone).
		{"commitment cut short", dicomnet.EventCommitmentRefused, 0, incomplete, "", false, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store := &recordStore{got: map[string]associationaudit.Record{}}
			w, err := New(store, Options{MaxBackoff: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			w.ObserveAssociation(dicomnet.Event{Type: tt.typ, Time: time.Now(), Association: info, Status: tt.status,
				SOPClassUID: "1.2", SOPInstanceUID: "1.2.3", Err: tt.err})
			if err := w.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(store.got) != 1 {
				t.Fatalf("records: %v", store.got)
			}
			for _, r := range store.got {
				event := associationaudit.EventStoreFailed
				if tt.typ == dicomnet.EventCommitmentRefused {
					event = associationaudit.EventCommitmentRefused
				}
				if r.Event != event || r.Status != tt.want || r.Reason != tt.err.Error() || r.NotSent != tt.notSent ||
					r.StudyInstanceUID != tt.study || r.SeriesInstanceUID != tt.series {
					t.Errorf("record = %+v, want status %q, not sent %v, study %q, series %q", r, tt.want, tt.notSent, tt.study, tt.series)
				}
			}
		})
	}
}

func (s *recordStore) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *recordStore) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

func failedEvent(id string, i int) dicomnet.Event {
	return dicomnet.Event{Type: dicomnet.EventStoreFailed, Association: &dicomnet.AssociationInfo{ID: id},
		Status: 0xA700, SOPClassUID: "1.2", SOPInstanceUID: fmt.Sprintf("1.2.%d", i)}
}

// TestFullQueueHoldsUpInsteadOfDropping: with the store failing, the queue
// fills, then the next event waits for room (back-pressure) instead of
// being dropped; Ready says the writer is unavailable all the while, and
// once the store takes records again every one of them is written.
func TestFullQueueHoldsUpInsteadOfDropping(t *testing.T) {
	store := &recordStore{got: map[string]associationaudit.Record{}, down: true}
	reg := prometheus.NewRegistry()
	w, err := New(store, Options{QueueSize: 4, Parallel: 1, MaxBackoff: 10 * time.Millisecond, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	done := make(chan struct{})
	go func() {
		for i := range n {
			w.ObserveAssociation(failedEvent("q", i))
		}
		close(done)
	}()
	// Both must have happened before Ready is asked: an event waiting for
	// room, and the writer marked failing (the gauge drops after the flag is
	// set; before that a full queue is the only sign).
	testenv.Eventually(t, "a wait for a writable store counted", func() bool {
		return testutil.ToFloat64(w.metrics.waits) > 0 && testutil.ToFloat64(w.metrics.writable) == 0
	})
	select {
	case <-done:
		t.Fatal("all events were taken while the store was down: some must have been dropped")
	default:
	}
	if err := w.Ready(context.Background()); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("Ready while the store is down = %v", err)
	}
	if got := testutil.ToFloat64(w.metrics.writable); got != 0 {
		t.Errorf("dicom_ingest_audit_writable = %v while the store is down", got)
	}
	store.setDown(false)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("events still held up after the store recovered")
	}
	testenv.Eventually(t, "ready", func() bool { return w.Ready(context.Background()) == nil })
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := store.count(); got != n || w.Lost() != 0 {
		t.Errorf("written %d of %d records, lost %d", got, n, w.Lost())
	}
	if got := testutil.ToFloat64(w.metrics.writable); got != 1 {
		t.Errorf("dicom_ingest_audit_writable = %v after recovery", got)
	}
	// The stack publishes and alarms on the lost records by this name.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if err := metricnames.CheckRegistered(mfs, metricnames.AuditRecordsLost, metricnames.AuditUncleanStops, metricnames.AuditWritable, metricnames.AuditQueueLength); err != nil {
		t.Error(err)
	}
}

// TestCloseGivesUpAndCounts: a store that never recovers cannot hold the
// exit forever; Close returns when its context ends and every record it
// could not write is counted as lost, none silently.
func TestCloseGivesUpAndCounts(t *testing.T) {
	store := &recordStore{got: map[string]associationaudit.Record{}, down: true}
	w, err := New(store, Options{QueueSize: 2, Parallel: 1, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { w.ObserveAssociation(failedEvent("c", i)) })
	}
	testenv.Eventually(t, "a full queue", func() bool { return len(w.queue) == cap(w.queue) })
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := w.Close(ctx); err == nil || !strings.Contains(err.Error(), "5 records not written") {
		t.Errorf("Close = %v", err)
	}
	wg.Wait()
	if w.Lost() != n {
		t.Errorf("lost %d, want %d", w.Lost(), n)
	}
	w.ObserveAssociation(failedEvent("c", n))
	if w.Lost() != n+1 {
		t.Errorf("an event after Close was not counted as lost")
	}
}

// TestHandshakeFailureIsAudited: a connection refused in its TLS handshake
// (no, an expired, a revoked or a foreign client certificate) is a refused
// association in the trail, a Security Alert; it was only logged and counted.
// Its reason says why by the reason the metric counts it under and the log
// line carries (dicomnet.HandshakeFailureReason), then in crypto/tls's words:
// an auditor had only the words.
func TestHandshakeFailureIsAudited(t *testing.T) {
	store := &recordStore{got: map[string]associationaudit.Record{}}
	w, err := New(store, Options{Implementation: "TEST 1"})
	if err != nil {
		t.Fatal(err)
	}
	w.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventHandshakeFailed, Time: time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC),
		Association: &dicomnet.AssociationInfo{ID: "t1", RemoteAddr: &net.TCPAddr{IP: net.IPv4(10, 9, 8, 7), Port: 4000}},
		Err:         &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}}) // as crypto/tls reports an alert received
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(store.got) != 1 {
		t.Fatalf("records: %v", store.got)
	}
	for _, r := range store.got {
		if r.Event != associationaudit.EventRejected || r.PeerAddr != "10.9.8.7:4000" || r.Reason != "TLS handshake failed: reason peer_alert: remote error: tls: bad certificate" {
			t.Errorf("record %+v", r)
		}
		if rec := pipeline.AssociationAuditRecord(r, "test"); rec.EventID.Code != "110113" {
			t.Errorf("audited as %+v, want a Security Alert", rec.EventID)
		}
	}
}

// TestStartAndStopAreRecorded: the SCP's start and stop are in the trail
// (PS3.15 A.5.3.1 Application Activity), named by the instance id its
// associations' ids start with, before and after their records. Nothing
// recorded them: a gap in the trail could not be told from a stopped SCP.
func TestStartAndStopAreRecorded(t *testing.T) {
	store := &recordStore{got: map[string]associationaudit.Record{}}
	w, err := New(store, Options{Implementation: "TEST 1"})
	if err != nil {
		t.Fatal(err)
	}
	w.Stopping("before start") // nothing started: nothing to record
	w.Started("5eed", "REMOTE_AE")
	w.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAccepted, Time: time.Now(),
		Association: &dicomnet.AssociationInfo{ID: "5eed-1", CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE"}})
	w.Stopping("shutdown requested")
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	byEvent := map[string]associationaudit.Record{}
	for _, r := range store.got {
		byEvent[r.Event] = r
	}
	tests := []struct {
		event, reason string
	}{
		{associationaudit.EventApplicationStart, ""},
		{associationaudit.EventApplicationStop, "shutdown requested"},
	}
	for _, tt := range tests {
		r, ok := byEvent[tt.event]
		if !ok {
			t.Errorf("no %s record in %v", tt.event, store.got)
			continue
		}
		if r.AssociationID != "5eed" || r.CalledAE != "REMOTE_AE" || r.Reason != tt.reason || r.Implementation != "TEST 1" || r.CallingAE != "" {
			t.Errorf("%s = %+v", tt.event, r)
		}
	}
	if len(store.got) != 3 {
		t.Errorf("%d records, want start, accepted, stop: %v", len(store.got), store.got)
	}
	start, accepted, stop := byEvent[associationaudit.EventApplicationStart], byEvent[associationaudit.EventAccepted], byEvent[associationaudit.EventApplicationStop]
	if start.Seq >= accepted.Seq || accepted.Seq >= stop.Seq {
		t.Errorf("seq start %d, accepted %d, stop %d: not in order", start.Seq, accepted.Seq, stop.Seq)
	}
}

// TestStopRecordNamesLost: records of a run lost before its stop (not
// encodable, or given up at Close) are named by the stop record, written
// last: how many and their sequence numbers. They were only counted and
// logged, and the stop record, queued before Close gave up, said nothing.
func TestStopRecordNamesLost(t *testing.T) {
	accepted := func(id string) dicomnet.Event {
		return dicomnet.Event{Type: dicomnet.EventAccepted, Time: time.Now(),
			Association: &dicomnet.AssociationInfo{ID: id, CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE"}}
	}
	tests := []struct {
		name   string
		refuse string // the store refuses these keys
		events []dicomnet.Event
		want   *associationaudit.LostRecords
	}{
		{"none lost", "", []dicomnet.Event{accepted("5eed-1")}, nil},
		{"not encodable", "", []dicomnet.Event{accepted("5eed-1"), accepted("bad/id"), accepted("5eed-3")},
			&associationaudit.LostRecords{Count: 1, Seqs: []uint64{3}}},
		{"given up at close", "5eed-2-", []dicomnet.Event{accepted("5eed-1"), accepted("5eed-2"), accepted("5eed-3"), accepted("5eed-2")},
			&associationaudit.LostRecords{Count: 2, Seqs: []uint64{3, 5}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := &recordStore{got: map[string]associationaudit.Record{}, refuse: tt.refuse}
			w, err := New(store, Options{MaxBackoff: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			w.Started("5eed", "REMOTE_AE")
			for _, ev := range tt.events {
				w.ObserveAssociation(ev)
			}
			w.Stopping("shutdown requested")
			// The records the store takes are written before Close, so that
			// only the refused ones are given up.
			written := len(tt.events) + 1
			if tt.want != nil {
				written -= int(tt.want.Count)
			}
			testenv.Eventually(t, fmt.Sprintf("%d records written", written), func() bool { return store.count() >= written })
			// Close gives the queue up at three quarters of its deadline and
			// writes the stop record in the last quarter (reserveForStop):
			// on a loaded machine the goroutine giving up woke up to 335 ms
			// late (load 18), so a deadline that ended left the stop record
			// too little of its 500 ms, lost about one run in 300. This one
			// only tells Close when to give up.
			err = w.Close(deadlineOnly{context.Background(), time.Now().Add(time.Second)})
			if (err != nil) != (tt.want != nil) {
				t.Errorf("Close = %v", err)
			}
			var stop *associationaudit.Record
			for _, r := range store.got {
				if r.Event == associationaudit.EventApplicationStop {
					stop = &r
				}
			}
			if stop == nil {
				t.Fatalf("no stop record in %v", store.got)
			}
			if d := cmp.Diff(tt.want, stop.Lost); d != "" {
				t.Errorf("stop record's lost records (-want +got):\n%s", d)
			}
			if want := uint64(len(tt.events) + 2); stop.Seq != want {
				t.Errorf("stop record seq %d, want %d (the last)", stop.Seq, want)
			}
		})
	}
}

// deadlineOnly is a context with a deadline that never ends it.
type deadlineOnly struct {
	context.Context
	deadline time.Time
}

func (c deadlineOnly) Deadline() (time.Time, bool) { return c.deadline, true }

// TestAcceptedRecordNamesRefusedContexts: the association-accepted record
// says what the A-ASSOCIATE-AC refused, in words and by UID, from the
// event's dicomnet.ContextSummary. A PACS that proposed only Explicit VR Big
// Endian left an association-accepted record and an association-aborted one
// ("connection closed: EOF", no instances), and nothing said why (found
// onboarding a site with Orthanc).
func TestAcceptedRecordNamesRefusedContexts(t *testing.T) {
	const qr = "1.2.840.10008.5.1.4.1.2.1.1" // Patient Root Query/Retrieve FIND, which the registry does not name
	tests := []struct {
		name     string
		contexts *dicomnet.ContextSummary
		want     string
	}{
		{"only Big Endian", &dicomnet.ContextSummary{Refused: 1, UnsupportedTransferSyntaxes: []string{"1.2.840.10008.1.2.2"}},
			"no presentation context accepted (1 proposed): transfer syntax not supported (Explicit VR Big Endian (Retired) 1.2.840.10008.1.2.2)"},
		{"some refused, for both reasons", &dicomnet.ContextSummary{Accepted: 2, Refused: 3,
			UnsupportedTransferSyntaxes: []string{"1.2.840.10008.1.2.4.57", "1.2.3.4"}, UnsupportedAbstractSyntaxes: []string{qr}},
			"3 of 5 presentation contexts refused: transfer syntax not supported (JPEG Lossless, Non-Hierarchical (Process 14) 1.2.840.10008.1.2.4.57; 1.2.3.4); " +
				"abstract syntax (SOP class) not supported (" + qr + ")"},
		{"only a query", &dicomnet.ContextSummary{Refused: 1, UnsupportedAbstractSyntaxes: []string{qr}},
			"no presentation context accepted (1 proposed): abstract syntax (SOP class) not supported (" + qr + ")"},
		{"more than the bound", &dicomnet.ContextSummary{Refused: 2, UnsupportedTransferSyntaxes: []string{"1.2.840.10008.1.2.2"}, MoreTransferSyntaxes: 3},
			"no presentation context accepted (2 proposed): transfer syntax not supported (Explicit VR Big Endian (Retired) 1.2.840.10008.1.2.2; and 3 more)"},
		// A C-GET SCU proposes storage classes in the SCP role only: their contexts are rejected (user-rejection).
		{"storage classes without the SCU role, and a query", &dicomnet.ContextSummary{Refused: 4, UnsupportedAbstractSyntaxes: []string{qr},
			NoSCURoleAbstractSyntaxes: []string{"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"}, MoreNoSCURoleAbstractSyntaxes: 1},
			"no presentation context accepted (4 proposed): abstract syntax (SOP class) not supported (" + qr + "); " +
				"no SCU role left to the sender by SCP/SCU role selection (CT Image Storage 1.2.840.10008.5.1.4.1.1.2; MR Image Storage 1.2.840.10008.5.1.4.1.1.4; and 1 more)"},
		{"only without the SCU role", &dicomnet.ContextSummary{Accepted: 1, Refused: 1, NoSCURoleAbstractSyntaxes: []string{"1.2.840.10008.1.1"}},
			"1 of 2 presentation contexts refused: no SCU role left to the sender by SCP/SCU role selection (Verification SOP Class 1.2.840.10008.1.1)"},
		{"nothing refused", &dicomnet.ContextSummary{Accepted: 2}, ""},
		{"no summary", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := &recordStore{got: map[string]associationaudit.Record{}}
			w, err := New(store, Options{})
			if err != nil {
				t.Fatal(err)
			}
			w.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAccepted, Time: time.Now(), Contexts: tc.contexts,
				Association: &dicomnet.AssociationInfo{ID: "x1", CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE"}})
			if err := w.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(store.got) != 1 {
				t.Fatalf("records: %v", store.got)
			}
			for _, r := range store.got {
				if r.Event != associationaudit.EventAccepted {
					t.Errorf("event %q", r.Event)
				}
				if diff := cmp.Diff(tc.want, r.Reason); diff != "" {
					t.Errorf("reason (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestRefusalsNameOurAE: a refusal's record names the SCP's AE title
// (AETitle) beside the title the peer called (CalledAE), which is not ours
// when the peer called another (01 01 07) and empty when TLS refused it
// first. Neither record named ours, so the trail took the title called for
// the SCP's.
func TestRefusalsNameOurAE(t *testing.T) {
	store := &recordStore{got: map[string]associationaudit.Record{}}
	w, err := New(store, Options{Implementation: "TEST 1"})
	if err != nil {
		t.Fatal(err)
	}
	w.Started("5eed", "REMOTE_AE")
	at := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	peer := &net.TCPAddr{IP: net.IPv4(10, 9, 8, 7), Port: 4000}
	w.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventRejected, Time: at, Reject: dicomnet.RejectCalledAENotRecognized,
		Association: &dicomnet.AssociationInfo{ID: "r1", CallingAE: "LOCAL_AE", CalledAE: "WRONG_AE", RemoteAddr: peer}})
	w.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventHandshakeFailed, Time: at.Add(time.Second),
		Association: &dicomnet.AssociationInfo{ID: "r2", RemoteAddr: peer}, Err: errors.New("remote error: tls: bad certificate")})
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	called := map[string]string{}
	for _, r := range store.got {
		if r.Event != associationaudit.EventRejected {
			continue
		}
		called[r.AssociationID] = r.CalledAE
		if r.AETitle != "REMOTE_AE" {
			t.Errorf("%s: aeTitle %q, want REMOTE_AE", r.AssociationID, r.AETitle)
		}
	}
	if len(called) != 2 || called["r1"] != "WRONG_AE" || called["r2"] != "" {
		t.Errorf("refusals' called AE titles %v", called)
	}
}

// TestQueueLengthCountsRecordsBeingWritten: a record the store keeps
// refusing has left the queue but is not written; the gauge an operator
// (and a test) waits on to read 0 before trusting the trail still counts
// it. It read 0 while a record was retried, and a test that switched its
// S3 to refuse writes after the gauge read 0 saw the earlier record refused.
func TestQueueLengthCountsRecordsBeingWritten(t *testing.T) {
	store := &recordStore{got: map[string]associationaudit.Record{}, down: true}
	reg := prometheus.NewRegistry()
	w, err := New(store, Options{QueueSize: 4, Parallel: 2, MaxBackoff: 10 * time.Millisecond, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	queueLength := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "dicom_ingest_audit_queue_length" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no dicom_ingest_audit_queue_length")
		return 0
	}
	w.ObserveAssociation(failedEvent("q", 1))
	testenv.Eventually(t, "two failed writes", func() bool { return testutil.ToFloat64(w.metrics.failures) >= 2 })
	if len(w.queue) != 0 {
		t.Fatalf("the record is still queued (%d): this test needs it being written", len(w.queue))
	}
	if got := queueLength(); got != 1 {
		t.Errorf("queue length %v while the one record is retried, want 1", got)
	}
	store.setDown(false)
	testenv.Eventually(t, "an empty queue", func() bool { return queueLength() == 0 })
	if got := store.count(); got != 1 {
		t.Errorf("written %d records once the gauge read 0, want 1", got)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
