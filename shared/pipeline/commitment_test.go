package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

const (
	txnUID  = "1.2.826.0.1.3680043.10.9.1"
	missing = "1.2.826.0.1.3680043.10.1.1.99"
	mrClass = "1.2.840.10008.5.1.4.1.1.4"
)

// commitmentFixture is a pipeline on fakes with a clock the test moves.
type commitmentFixture struct {
	t   *testing.T
	f   *pt.Fakes
	p   *pipeline.Pipeline
	now time.Time
	n   int
}

func newCommitmentFixture(t *testing.T) *commitmentFixture {
	c := &commitmentFixture{t: t, f: pt.New(), now: time.Date(2026, 1, 15, 10, 21, 0, 0, time.UTC)}
	c.p = c.f.Pipeline()
	c.p.Now = func() time.Time { return c.now }
	return c
}

// store has the pipeline process an instance as the SCP stored it.
func (c *commitmentFixture) store(sops ...string) {
	c.t.Helper()
	for _, s := range sops {
		add(c.f, key(s), ct(s).Build(), s)
		if _, err := c.p.ProcessObject(context.Background(), key(s)); err != nil {
			c.t.Fatal(err)
		}
	}
}

func ctRef(sop string) commitment.Ref {
	return commitment.Ref{SOPClassUID: pt.CTStorage, SOPInstanceUID: sop}
}

// request writes a request document as the SCP does, processes it and runs the due transactions.
func (c *commitmentFixture) request(txn string, refs ...commitment.Ref) string {
	c.t.Helper()
	k := c.put(txn, refs...)
	c.at(0)
	return k
}

// put writes a request document as the SCP does and processes it.
func (c *commitmentFixture) put(txn string, refs ...commitment.Ref) string {
	c.t.Helper()
	k := c.write(txn, refs...)
	if err := c.p.ProcessCommitmentRequest(context.Background(), k); err != nil {
		c.t.Fatal(err)
	}
	return k
}

// write writes a request document as the SCP does, on an association of its own, and returns its key.
func (c *commitmentFixture) write(txn string, refs ...commitment.Ref) string {
	c.t.Helper()
	return c.writeFrom("PACS", txn, refs...)
}

// putFrom is put for a request of calling AE ae.
func (c *commitmentFixture) putFrom(ae, txn string, refs ...commitment.Ref) string {
	c.t.Helper()
	k := c.writeFrom(ae, txn, refs...)
	if err := c.p.ProcessCommitmentRequest(context.Background(), k); err != nil {
		c.t.Fatal(err)
	}
	return k
}

// writeFrom is write for a request of calling AE ae.
func (c *commitmentFixture) writeFrom(ae, txn string, refs ...commitment.Ref) string {
	c.t.Helper()
	c.n++
	r := pipeline.CommitmentRequest{SchemaVersion: 1, TransactionUID: txn, Refs: refs, CallingAE: ae, CalledAE: "INGEST",
		PeerAddr: "10.1.2.3:4567", AssociationID: "abcd1234-" + fmt.Sprint(c.n), MessageID: 1, ReceivedAt: c.now}
	body, err := json.Marshal(r)
	if err != nil {
		c.t.Fatal(err)
	}
	k := r.Key()
	if err := c.f.Objects.Put(context.Background(), k, body, "application/json", nil); err != nil {
		c.t.Fatal(err)
	}
	return k
}

// at moves the clock and runs the due transactions.
func (c *commitmentFixture) at(d time.Duration) {
	c.t.Helper()
	c.now = c.now.Add(d)
	if _, err := c.p.RunCommitments(context.Background(), c.now); err != nil {
		c.t.Fatal(err)
	}
}

func (c *commitmentFixture) reports() []pipeline.CommitmentReport { return c.f.Reporter.Reports() }

func (c *commitmentFixture) events(dt string) []json.RawMessage {
	var out []json.RawMessage
	for _, e := range c.f.Events.All() {
		if e.DetailType == dt {
			out = append(out, e.Detail)
		}
	}
	return out
}

func (c *commitmentFixture) outcomes() []string {
	var out []string
	for _, r := range c.f.Audit.All() {
		if slices.ContainsFunc(r.EventTypeCodes, func(cv pipeline.CodedValue) bool { return len(cv.Code) > 18 && cv.Code[:18] == "storage-commitment" }) {
			out = append(out, r.Outcome)
		}
	}
	return out
}

func failures(fs ...commitment.Failure) []commitment.Failure { return fs }

func TestCommitmentAllCommitted(t *testing.T) {
	c := newCommitmentFixture(t)
	c.store(sop1, sop2)
	c.request(txnUID, ctRef(sop1), ctRef(sop2))
	reps := c.reports()
	if len(reps) != 1 {
		t.Fatalf("%d reports, want 1 at once", len(reps))
	}
	want := commitment.Result{TransactionUID: txnUID, Committed: []commitment.Ref{ctRef(sop1), ctRef(sop2)}, Failed: []commitment.Failure{}}
	if d := cmp.Diff(want, reps[0].Result); d != "" {
		t.Errorf("result (-want +got):\n%s", d)
	}
	if reps[0].CallingAE != "PACS" || reps[0].AssociationID != "abcd1234-1" {
		t.Errorf("report addressed to %q on %q", reps[0].CallingAE, reps[0].AssociationID)
	}
	// The study is announced at once, completed by commitment; the quiet period then has nothing to do.
	rec := c.events(pipeline.DetailTypeStudyReceived)
	if len(rec) != 1 {
		t.Fatalf("%d Study Received events, want 1", len(rec))
	}
	var sd pipeline.StudyDetailEvent
	if err := json.Unmarshal(rec[0], &sd); err != nil || sd.Completion != pipeline.CompletionStorageCommitment || sd.InstanceCount != 2 {
		t.Errorf("Study Received %+v (%v)", sd, err)
	}
	if n, err := c.p.AnnounceStableStudies(context.Background(), c.now.Add(time.Hour)); err != nil || n != 0 {
		t.Errorf("quiet period announced %d (%v) after commitment did", n, err)
	}
	done := c.events(pipeline.DetailTypeCommitmentCompleted)
	if len(done) != 1 {
		t.Fatalf("%d Storage Commitment Completed events", len(done))
	}
	var cd pipeline.CommitmentCompletedDetail
	if err := json.Unmarshal(done[0], &cd); err != nil {
		t.Fatal(err)
	}
	if cd.Outcome != "committed" || cd.EventTypeID != 1 || cd.CommittedCount != 2 || cd.FailedCount != 0 || !cd.Report.Delivered ||
		cd.Report.Association != "new" || cd.TransactionUID != txnUID || !slices.Equal(cd.Studies, []string{study}) {
		t.Errorf("Storage Commitment Completed %+v", cd)
	}
	if d := cmp.Diff([]string{"commitment-requested", "committed", "commitment-reported"}, c.outcomes()); d != "" {
		t.Errorf("audit (-want +got):\n%s", d)
	}
	// Processing the request again changes nothing.
	before := len(c.f.Events.All())
	if err := c.p.ProcessCommitmentRequest(context.Background(), pipeline.CommitmentRequest{AssociationID: "abcd1234-1", MessageID: 1, ReceivedAt: c.now}.Key()); err != nil {
		t.Fatal(err)
	}
	c.at(time.Hour)
	if len(c.reports()) != 1 || len(c.f.Events.All()) != before {
		t.Errorf("a redelivered request reported or announced again")
	}
}

// TestCommitmentCompletesAnUpdatedStudy: a study the quiet period announced (Study Received, completion
// quiet-period) gets another instance; the request naming it announces the update at once (Study Updated,
// completion storage-commitment).
func TestCommitmentCompletesAnUpdatedStudy(t *testing.T) {
	c := newCommitmentFixture(t)
	c.store(sop1)
	if n, err := c.p.AnnounceStableStudies(context.Background(), c.now.Add(2*time.Minute)); err != nil || n != 1 {
		t.Fatalf("quiet period announced %d (%v), want 1", n, err)
	}
	c.now = c.now.Add(3 * time.Minute)
	sop3 := series + ".3"
	c.store(sop3)
	c.request(txnUID, ctRef(sop1), ctRef(sop3))
	for _, tt := range []struct {
		detailType, completion string
		instances              int
	}{
		{pipeline.DetailTypeStudyReceived, pipeline.CompletionQuietPeriod, 1},
		{pipeline.DetailTypeStudyUpdated, pipeline.CompletionStorageCommitment, 2},
	} {
		evs := c.events(tt.detailType)
		if len(evs) != 1 {
			t.Fatalf("%d %s events, want 1", len(evs), tt.detailType)
		}
		var d pipeline.StudyDetailEvent
		if err := json.Unmarshal(evs[0], &d); err != nil {
			t.Fatal(err)
		}
		if d.Completion != tt.completion || d.InstanceCount != tt.instances {
			t.Errorf("%s: completion %q with %d instances, want %q with %d", tt.detailType, d.Completion, d.InstanceCount, tt.completion, tt.instances)
		}
	}
	if n, err := c.p.AnnounceStableStudies(context.Background(), c.now.Add(time.Hour)); err != nil || n != 0 {
		t.Errorf("quiet period announced %d (%v) the update commitment announced", n, err)
	}
}

// headFails is an object store whose Head of one key fails with the key in its message, as a file path or an
// S3 request would put it.
type headFails struct {
	pipeline.ObjectReader
	key string
}

func (h headFails) Head(ctx context.Context, key string) (pipeline.ObjectInfo, error) {
	if key == h.key {
		return pipeline.ObjectInfo{}, fmt.Errorf("stat /data/objects/%s: input/output error", key)
	}
	return h.ObjectReader.Head(ctx, key)
}

// TestCommitmentStoreErrorNamesNoUID: a store that fails while an instance is looked for leaves the
// transaction to the next run with an error that names the object by its log name only.
func TestCommitmentStoreErrorNamesNoUID(t *testing.T) {
	c := newCommitmentFixture(t)
	c.store(sop1)
	c.p.Objects = headFails{ObjectReader: c.p.Objects, key: key(sop1)}
	r := pipeline.CommitmentRequest{SchemaVersion: 1, TransactionUID: txnUID, Refs: []commitment.Ref{ctRef(sop1)}, CallingAE: "PACS",
		CalledAE: "INGEST", AssociationID: "abcd1234-1", MessageID: 1, ReceivedAt: c.now}
	body, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.f.Objects.Put(context.Background(), r.Key(), body, "application/json", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.p.ProcessCommitmentRequest(context.Background(), r.Key()); err != nil {
		t.Fatal(err)
	}
	_, err = c.p.RunCommitments(context.Background(), c.now)
	if err == nil {
		t.Fatal("RunCommitments with the store failing: no error")
	}
	for _, uid := range []string{study, series, sop1} {
		if strings.Contains(err.Error(), uid) {
			t.Errorf("error %q holds a UID", err)
		}
	}
	if len(c.reports()) != 0 {
		t.Error("reported while the store failed")
	}
}

// TestCommitmentWaitsForInstancesInFlight: instances not yet indexed are waited for; those indexed in time
// are committed, the others fail with 0112 once the wait is over.
func TestCommitmentWaitsForInstancesInFlight(t *testing.T) {
	c := newCommitmentFixture(t)
	c.p.CommitmentWait = 5 * time.Minute
	c.store(sop1)
	c.request(txnUID, ctRef(sop1), ctRef(sop2), ctRef(missing))
	if len(c.reports()) != 0 {
		t.Fatal("reported before the instances in flight arrived")
	}
	c.at(10 * time.Second)
	c.store(sop2) // arrives late
	c.at(10 * time.Second)
	if len(c.reports()) != 0 {
		t.Fatal("reported before the wait was over")
	}
	c.at(5 * time.Minute)
	reps := c.reports()
	if len(reps) != 1 {
		t.Fatalf("%d reports after the wait", len(reps))
	}
	want := commitment.Result{TransactionUID: txnUID, Committed: []commitment.Ref{ctRef(sop1), ctRef(sop2)},
		Failed: failures(commitment.Failure{Ref: ctRef(missing), Reason: commitment.ReasonNoSuchObjectInstance})}
	if d := cmp.Diff(want, reps[0].Result); d != "" {
		t.Errorf("result (-want +got):\n%s", d)
	}
	// The missing instance could be of the study: the quiet period decides, not commitment.
	if n := len(c.events(pipeline.DetailTypeStudyReceived)); n != 0 {
		t.Errorf("%d Study Received events, want none from a request with an unknown failure", n)
	}
}

// TestCommitmentFailureReasons: each way an instance cannot be committed, decided without waiting where
// nothing can change it.
func TestCommitmentFailureReasons(t *testing.T) {
	c := newCommitmentFixture(t)
	c.store(sop1, sop2)
	// sop3 is quarantined: invalid Study Instance UID.
	sop3 := "1.2.826.0.1.3680043.10.1.1.3"
	bad := ct(sop3)
	bad.StudyUID = "1.2.03"
	add(c.f, key(sop3), bad.Build(), sop3)
	if _, err := c.p.ProcessObject(context.Background(), key(sop3)); err != nil {
		t.Fatal(err)
	}
	// sop2's object disappears from the store after indexing.
	c.f.Objects.Delete(key(sop2))
	c.request(txnUID,
		ctRef(sop1),
		commitment.Ref{SOPClassUID: mrClass, SOPInstanceUID: sop1},                       // indexed as CT: 0119
		commitment.Ref{SOPClassUID: "1.2.840.10008.1.20.1", SOPInstanceUID: "1.2.3.4.5"}, // not a storage class: 0122
		ctRef(sop2), // indexed, object gone: 0110
		ctRef(sop3), // quarantined: 0110
	)
	reps := c.reports()
	if len(reps) != 1 {
		t.Fatalf("%d reports, want 1 at once", len(reps))
	}
	want := commitment.Result{TransactionUID: txnUID, Committed: []commitment.Ref{ctRef(sop1)}, Failed: failures(
		commitment.Failure{Ref: commitment.Ref{SOPClassUID: mrClass, SOPInstanceUID: sop1}, Reason: commitment.ReasonClassInstanceConflict},
		commitment.Failure{Ref: commitment.Ref{SOPClassUID: "1.2.840.10008.1.20.1", SOPInstanceUID: "1.2.3.4.5"}, Reason: commitment.ReasonSOPClassNotSupported},
		commitment.Failure{Ref: ctRef(sop2), Reason: commitment.ReasonProcessingFailure},
		commitment.Failure{Ref: ctRef(sop3), Reason: commitment.ReasonProcessingFailure},
	)}
	if d := cmp.Diff(want, reps[0].Result); d != "" {
		t.Errorf("result (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"commitment-requested", "commitment-failures", "commitment-reported"}, c.outcomes()); d != "" {
		t.Errorf("audit (-want +got):\n%s", d)
	}
	var cd pipeline.CommitmentCompletedDetail
	if err := json.Unmarshal(c.events(pipeline.DetailTypeCommitmentCompleted)[0], &cd); err != nil {
		t.Fatal(err)
	}
	if cd.Outcome != "failures" || cd.EventTypeID != 2 || cd.FailedCount != 4 || cd.Failures[0].FailureReason != "0119" ||
		cd.Failures[0].Reason != "class-instance-conflict" {
		t.Errorf("Storage Commitment Completed %+v", cd)
	}
	// studies are those of the committed instances (docs/pipeline.md, the
	// schema): not the quarantined sop3's "1.2.03", a study UID its schema's
	// pattern refuses, which the event listed (found by validating local
	// mode's and the functions' real events, TestLocalAndAWSAgree).
	if d := cmp.Diff([]string{study}, cd.Studies); d != "" || cd.StudyCount != 1 {
		t.Errorf("studies (-want +got):\n%s(studyCount %d)", d, cd.StudyCount)
	}
	var detail any
	if err := json.Unmarshal(c.events(pipeline.DetailTypeCommitmentCompleted)[0], &detail); err != nil {
		t.Fatal(err)
	}
	if err := pt.StrictSchemas(t)[pipeline.DetailTypeCommitmentCompleted].Validate(detail); err != nil {
		t.Errorf("the event fails its schema: %v", err)
	}
}

// TestCommitmentQuarantinedSiteOption: a site may count a quarantined instance (kept in the store) as
// committed.
func TestCommitmentQuarantinedSiteOption(t *testing.T) {
	c := newCommitmentFixture(t)
	c.p.QuarantinedCommitted = func(ae string) bool { return ae == "PACS" }
	bad := ct(sop1)
	bad.StudyUID = "1.2.03"
	add(c.f, key(sop1), bad.Build(), sop1)
	if _, err := c.p.ProcessObject(context.Background(), key(sop1)); err != nil {
		t.Fatal(err)
	}
	c.request(txnUID, ctRef(sop1))
	if reps := c.reports(); len(reps) != 1 || len(reps[0].Result.Committed) != 1 || len(reps[0].Result.Failed) != 0 {
		t.Fatalf("reports %+v, want sop1 committed", reps)
	}
}

// TestCommitmentHistories: the judge's table (judgeTable) over an instance's histories, each step a transfer
// of it in turn. A stored instance is committed at once, whatever came before or after it (a refused resend of
// what is held is no failure of what is held). One not stored is waited for (the sender may send it again), then
// decided by its newest transfer: refused by the SCP, 0110, a processing failure of ours; cut short by the
// association's end (nothing stored, nothing refused, the sender answered nothing), 0112, not available, as one
// never sent, whatever an older transfer was: a refusal behind a cut short failed it 0110, which sent a PACS
// administrator looking at the SCP for a transfer the network or the sender broke off, when a resend is what it
// takes. A C-STORE refused before its handler ran, then cut short, was refused: 0110. A quarantined copy held
// decides, whatever stored nothing after it.
func TestCommitmentHistories(t *testing.T) {
	const cut = "dicomnet: data set incomplete: dicomnet: connection closed: EOF"
	scp := func(status, reason string) pipeline.AuditRecord {
		return pipeline.AssociationAuditRecord(associationaudit.Record{Event: associationaudit.EventStoreFailed, Status: status, Reason: reason,
			AssociationID: "x", SOPClassUID: pt.CTStorage, SOPInstanceUID: sop1}, "suite")
	}
	legacy := scp("", cut)
	legacy.NotAnswered, legacy.Reason = false, "C-STORE status 0000: "+cut // as records before notAnswered said it
	notSent := scp("C000", "store down")
	notSent.ResponseNotSent = true
	steps := map[string]pipeline.AuditRecord{
		"refused":              scp("A700", "out of resources"),
		"refused, no status":   {Outcome: "store-failed", SOPClassUID: pt.CTStorage, SOPInstanceUID: sop1},
		"refused, not sent":    notSent,
		"cut short":            scp("", cut),
		"cut short, legacy":    legacy,
		"refused, cut short":   scp("", cut+dimse.RefusedBeforeEnd+"0122: SOP class differs from the presentation context"),
		"stored":               {}, // the SCP stored it: the pipeline processes it
		"quarantined":          {}, // validation quarantines it
		"accepted, not a step": {Outcome: "association-accepted", SOPInstanceUID: sop1},
	}
	const committed = 0
	tests := []struct {
		history []string // oldest first
		want    uint16   // committed, or the Failure Reason
	}{
		{nil, commitment.ReasonNoSuchObjectInstance},
		{[]string{"refused"}, commitment.ReasonProcessingFailure},
		{[]string{"refused, no status"}, commitment.ReasonProcessingFailure},
		{[]string{"refused, not sent"}, commitment.ReasonProcessingFailure},
		{[]string{"cut short"}, commitment.ReasonNoSuchObjectInstance},
		{[]string{"cut short, legacy"}, commitment.ReasonNoSuchObjectInstance},
		{[]string{"cut short", "cut short"}, commitment.ReasonNoSuchObjectInstance},
		{[]string{"refused, cut short"}, commitment.ReasonProcessingFailure},
		{[]string{"stored"}, committed},
		{[]string{"refused", "stored"}, committed},
		{[]string{"cut short", "stored"}, committed},
		{[]string{"stored", "refused"}, committed},
		{[]string{"stored", "cut short"}, committed},
		{[]string{"quarantined", "stored"}, committed},
		{[]string{"refused", "cut short"}, commitment.ReasonNoSuchObjectInstance},
		{[]string{"refused, not sent", "cut short, legacy"}, commitment.ReasonNoSuchObjectInstance},
		{[]string{"refused, cut short", "cut short"}, commitment.ReasonNoSuchObjectInstance},
		{[]string{"cut short", "refused"}, commitment.ReasonProcessingFailure},
		{[]string{"cut short", "refused, cut short"}, commitment.ReasonProcessingFailure},
		{[]string{"refused", "cut short", "refused"}, commitment.ReasonProcessingFailure},
		{[]string{"refused", "accepted, not a step"}, commitment.ReasonProcessingFailure},
		{[]string{"quarantined"}, commitment.ReasonProcessingFailure},
		{[]string{"quarantined", "cut short"}, commitment.ReasonProcessingFailure},
		{[]string{"cut short", "quarantined"}, commitment.ReasonProcessingFailure},
	}
	for _, tt := range tests {
		name := strings.Join(tt.history, " then ")
		if name == "" {
			name = "never sent"
		}
		t.Run(name, func(t *testing.T) {
			c := newCommitmentFixture(t)
			c.p.CommitmentWait = time.Minute
			start := c.now
			c.now = c.now.Add(-time.Duration(len(tt.history)) * time.Second)
			for i, step := range tt.history {
				rec, ok := steps[step]
				switch {
				case !ok:
					t.Fatalf("no step %q", step)
				case step == "stored":
					c.store(sop1)
				case step == "quarantined":
					bad := ct(sop1)
					bad.StudyUID = "1.2.03"
					add(c.f, key(sop1), bad.Build(), sop1)
					if _, err := c.p.ProcessObject(context.Background(), key(sop1)); err != nil {
						t.Fatal(err)
					}
				default:
					rec.ID, rec.Time = fmt.Sprint("assoc:x:", i, ":", rec.Outcome), c.now
					if _, err := c.f.Audit.Append(context.Background(), rec); err != nil {
						t.Fatal(err)
					}
				}
				c.now = c.now.Add(time.Second)
			}
			c.now = start
			c.request(txnUID, ctRef(sop1))
			if tt.want == committed {
				if reps := c.reports(); len(reps) != 1 || !cmp.Equal([]commitment.Ref{ctRef(sop1)}, reps[0].Result.Committed) || len(reps[0].Result.Failed) != 0 {
					t.Fatalf("reports %+v, want it committed at once", reps)
				}
				return
			}
			c.at(30 * time.Second)
			if len(c.reports()) != 0 && !slices.Contains(tt.history, "quarantined") {
				t.Fatal("reported before the wait was over")
			}
			c.at(time.Minute)
			want := failures(commitment.Failure{Ref: ctRef(sop1), Reason: tt.want})
			if reps := c.reports(); len(reps) != 1 || !cmp.Equal(want, reps[0].Result.Failed) {
				t.Fatalf("reports %+v, want %+v", reps, want)
			}
		})
	}
}

// shortPages is an audit trail that hands out pages of one record, as
// pipeline.AuditQuery lets a store do (DynamoDB's at its 1 MB or call
// bound): only an empty Next ends the results.
type shortPages struct{ pipeline.AuditStore }

func (s shortPages) Query(ctx context.Context, q pipeline.AuditQuery) (pipeline.AuditPage, error) {
	q.Limit = 1
	return s.AuditStore.Query(ctx, q)
}

// TestCommitmentReadsTheInstancesWholeAudit: the instance's audit records
// are read to their end, past a short page and past the first 50: a
// refused C-STORE behind later records of the instance still fails it with
// 0110, and a quarantine behind them still decides it.
func TestCommitmentReadsTheInstancesWholeAudit(t *testing.T) {
	tests := []struct {
		name  string
		later int  // records of the instance after the one that decides
		short bool // the store hands out pages of one record
		rec   pipeline.AuditRecord
		want  uint16
	}{
		{"refused, a short page", 1, true, pipeline.AuditRecord{Outcome: "store-failed"}, commitment.ReasonProcessingFailure},
		{"refused, 60 later records", 60, false, pipeline.AuditRecord{Outcome: "store-failed"}, commitment.ReasonProcessingFailure},
		{"quarantined under another class, a short page", 1, true,
			pipeline.AuditRecord{Outcome: pipeline.OutcomeRejected, SOPClassUID: mrClass}, commitment.ReasonClassInstanceConflict},
		{"quarantined under another class, 60 later records", 60, false,
			pipeline.AuditRecord{Outcome: pipeline.OutcomeRejected, SOPClassUID: mrClass}, commitment.ReasonClassInstanceConflict},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCommitmentFixture(t)
			c.p.CommitmentWait = time.Minute
			if tt.short {
				c.p.Audit = shortPages{c.f.Audit}
			}
			ctx := context.Background()
			rec := tt.rec
			rec.ID, rec.Time, rec.SOPInstanceUID = "decides", c.now.Add(-time.Hour), sop1
			if rec.SOPClassUID == "" {
				rec.SOPClassUID = pt.CTStorage
			}
			if _, err := c.f.Audit.Append(ctx, rec); err != nil {
				t.Fatal(err)
			}
			for i := range tt.later {
				if _, err := c.f.Audit.Append(ctx, pipeline.AuditRecord{ID: fmt.Sprint("later-", i), Time: rec.Time.Add(time.Duration(i+1) * time.Second),
					Outcome: "association-accepted", SOPInstanceUID: sop1}); err != nil {
					t.Fatal(err)
				}
			}
			c.request(txnUID, ctRef(sop1))
			c.at(2 * time.Minute)
			want := failures(commitment.Failure{Ref: ctRef(sop1), Reason: tt.want})
			if reps := c.reports(); len(reps) != 1 || !cmp.Equal(want, reps[0].Result.Failed) {
				t.Fatalf("reports %+v, want %+v", reps, want)
			}
		})
	}
}

// TestCommitmentTransactionUIDReuse: the same request again (a retransmission) is reported again; other
// instances under a Transaction UID already used fail whole with 0131, leaving the first transaction alone.
func TestCommitmentTransactionUIDReuse(t *testing.T) {
	c := newCommitmentFixture(t)
	c.store(sop1, sop2)
	c.request(txnUID, ctRef(sop1))
	c.request(txnUID, ctRef(sop1)) // retransmitted after the report
	c.request(txnUID, ctRef(sop2)) // reused for something else
	reps := c.reports()
	if len(reps) != 3 {
		t.Fatalf("%d reports, want 3", len(reps))
	}
	if !cmp.Equal(reps[1].Result.Committed, []commitment.Ref{ctRef(sop1)}) || reps[1].AssociationID != "abcd1234-2" {
		t.Errorf("retransmission's report %+v", reps[1])
	}
	want := commitment.Result{TransactionUID: txnUID, Committed: []commitment.Ref{},
		Failed: failures(commitment.Failure{Ref: ctRef(sop2), Reason: commitment.ReasonDuplicateTransactionUID})}
	if d := cmp.Diff(want, reps[2].Result); d != "" || reps[2].AssociationID != "abcd1234-3" {
		t.Errorf("reuse's report on %q (-want +got):\n%s", reps[2].AssociationID, d)
	}
}

// TestCommitmentReportRetries: a result that cannot be delivered is retried with backoff until the report
// deadline, then given up, audited and announced as not delivered.
func TestCommitmentReportRetries(t *testing.T) {
	c := newCommitmentFixture(t)
	c.p.CommitmentReportFor = 10 * time.Minute
	c.f.Reporter.Err = errors.New("dial PACS: connection refused")
	c.store(sop1)
	c.request(txnUID, ctRef(sop1))
	c.at(5 * time.Second) // first backoff is 10 s
	if n := len(c.reports()); n != 1 {
		t.Fatalf("%d attempts within the first backoff", n)
	}
	for range 20 {
		c.at(time.Minute)
	}
	n := len(c.reports())
	if n < 4 || n > 12 {
		t.Errorf("%d attempts in 20 minutes, want a backing-off few", n)
	}
	if d := cmp.Diff([]string{"commitment-requested", "committed", "commitment-undeliverable"}, c.outcomes()); d != "" {
		t.Errorf("audit (-want +got):\n%s", d)
	}
	var cd pipeline.CommitmentCompletedDetail
	if err := json.Unmarshal(c.events(pipeline.DetailTypeCommitmentCompleted)[0], &cd); err != nil {
		t.Fatal(err)
	}
	if cd.Report.Delivered || cd.Report.Attempts != n {
		t.Errorf("report %+v after %d attempts", cd.Report, n)
	}
	c.at(time.Hour)
	if len(c.reports()) != n {
		t.Error("retried after giving up")
	}
}

// TestCommitmentGivesUpAtTheDeadline: the last retry comes at the report
// deadline, not one backoff past it (found by a probe: with a 40 s
// deadline the attempts came at 0, 10, 30 and 70 s).
func TestCommitmentGivesUpAtTheDeadline(t *testing.T) {
	c := newCommitmentFixture(t)
	c.p.CommitmentReportFor = 40 * time.Second
	c.f.Reporter.Err = errors.New("dial PACS: connection refused")
	c.store(sop1)
	c.request(txnUID, ctRef(sop1))
	for range 40 {
		c.at(time.Second)
	}
	if n := len(c.reports()); n != 4 {
		t.Errorf("%d attempts by the deadline, want 4 (0, 10, 30, 40 s)", n)
	}
	if d := cmp.Diff([]string{"commitment-requested", "committed", "commitment-undeliverable"}, c.outcomes()); d != "" {
		t.Errorf("audit at the deadline (-want +got):\n%s", d)
	}
}

// TestCommitmentRequestDocument: what ParseCommitmentRequest refuses.
func TestCommitmentRequestDocument(t *testing.T) {
	ok := pipeline.CommitmentRequest{SchemaVersion: 1, TransactionUID: txnUID, Refs: []commitment.Ref{ctRef(sop1)},
		AssociationID: "a-1", ReceivedAt: time.Unix(1, 0)}
	for name, mut := range map[string]func(*pipeline.CommitmentRequest){
		"schema 2":        func(r *pipeline.CommitmentRequest) { r.SchemaVersion = 2 },
		"bad transaction": func(r *pipeline.CommitmentRequest) { r.TransactionUID = "1..2" },
		"no refs":         func(r *pipeline.CommitmentRequest) { r.Refs = nil },
		"bad ref": func(r *pipeline.CommitmentRequest) {
			r.Refs = []commitment.Ref{{SOPClassUID: "x", SOPInstanceUID: sop1}}
		},
		"no association":   func(r *pipeline.CommitmentRequest) { r.AssociationID = "" },
		"no received time": func(r *pipeline.CommitmentRequest) { r.ReceivedAt = time.Time{} },
	} {
		r := ok
		mut(&r)
		b, _ := json.Marshal(r)
		if _, err := pipeline.ParseCommitmentRequest(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	b, _ := json.Marshal(ok)
	if _, err := pipeline.ParseCommitmentRequest(b); err != nil {
		t.Errorf("valid request refused: %v", err)
	}
	if k := ok.Key(); k != "commitment/requests/1970/01/01/a-1-0.json" {
		t.Errorf("key %q", k)
	}
}

// refusing is an event bus that rejects every event of one detail type.
type refusing struct {
	*pt.Events
	detailType string
}

func (r refusing) Publish(ctx context.Context, events []pipeline.Event) ([]pipeline.FailedEntry, error) {
	for _, e := range events {
		if e.DetailType == r.detailType {
			return nil, errors.New("event refused")
		}
	}
	return r.Events.Publish(ctx, events)
}

// TestCommitmentReportedWhenAnnouncementFails: a request whose study's announcement fails is reported to the
// PACS all the same, and the study is deferred to the quiet period, as a failed announcement of it there is;
// the evaluation failed with it, so the transaction stayed pending, re-evaluated and never reported, for as
// long as the announcement failed.
func TestCommitmentReportedWhenAnnouncementFails(t *testing.T) {
	ctx := context.Background()
	c := newCommitmentFixture(t)
	c.p.QuietPeriod = time.Minute
	c.store(sop1, sop2)
	c.p.Events = refusing{Events: c.f.Events, detailType: pipeline.DetailTypeStudyReceived}
	c.put(txnUID, ctRef(sop1), ctRef(sop2))
	if _, err := c.p.RunCommitments(ctx, c.now); err == nil || !strings.Contains(err.Error(), "event refused") {
		t.Errorf("run's error %v, want the announcement's failure", err)
	}
	if len(c.reports()) != 1 || len(c.events(pipeline.DetailTypeCommitmentCompleted)) != 1 {
		t.Fatalf("%d reports, %d Storage Commitment Completed events; want the request reported", len(c.reports()),
			len(c.events(pipeline.DetailTypeCommitmentCompleted)))
	}
	d, err := c.f.Index.GetStudy(ctx, study)
	if err != nil {
		t.Fatal(err)
	}
	if !d.LastActivity.Equal(c.now) || d.AnnouncedVersion != 0 {
		t.Errorf("study after the failed announcement: activity %v (want the run's time, deferred), announced version %d",
			d.LastActivity, d.AnnouncedVersion)
	}
	// The quiet period announces it, as completed by the quiet period.
	c.p.Events = c.f.Events
	if n, err := c.p.AnnounceStableStudies(ctx, c.now.Add(time.Minute)); n != 1 || err != nil {
		t.Fatalf("quiet period announced %d (%v), want the study", n, err)
	}
	var sd pipeline.StudyDetailEvent
	if rec := c.events(pipeline.DetailTypeStudyReceived); len(rec) != 1 || json.Unmarshal(rec[0], &sd) != nil ||
		sd.Completion != pipeline.CompletionQuietPeriod || sd.QuietPeriod != "1m" {
		t.Errorf("Study Received %+v, want completed by the quiet period, 1m", sd)
	}
}

// TestCommitmentReportedOnceWhileTheBusFails: a report delivered whose Storage Commitment Completed event fails
// (the event bus down) is not delivered again: the transaction stayed in reporting unrecorded, and each run after
// the lease reported to the PACS again, for as long as the bus failed. The event is published once it is back.
func TestCommitmentReportedOnceWhileTheBusFails(t *testing.T) {
	ctx := context.Background()
	c := newCommitmentFixture(t)
	c.store(sop1)
	c.f.Events.Err = errors.New("event bus down")
	c.put(txnUID, ctRef(sop1))
	for run := range 3 {
		if _, err := c.p.RunCommitments(ctx, c.now); !errors.Is(err, c.f.Events.Err) {
			t.Errorf("run %d: err %v, want the bus's", run+1, err)
		}
		c.now = c.now.Add(3 * time.Minute) // past the lease
	}
	if n := len(c.reports()); n != 1 {
		t.Errorf("%d reports while the bus failed, want 1", n)
	}
	c.f.Events.Err = nil
	c.at(0)
	c.at(3 * time.Minute)
	if n, done := len(c.reports()), len(c.events(pipeline.DetailTypeCommitmentCompleted)); n != 1 || done != 1 {
		t.Errorf("%d reports, %d Storage Commitment Completed events once the bus is back; want 1 and 1", n, done)
	}
	var cd pipeline.CommitmentCompletedDetail
	if err := json.Unmarshal(c.events(pipeline.DetailTypeCommitmentCompleted)[0], &cd); err != nil || !cd.Report.Delivered || cd.Report.Attempts != 1 {
		t.Errorf("Storage Commitment Completed %+v (%v)", cd, err)
	}
	if d := cmp.Diff([]string{"commitment-requested", "committed", "commitment-reported"}, c.outcomes()); d != "" {
		t.Errorf("audit (-want +got):\n%s", d)
	}
}

// nearTheDeadline is a request whose every report fails (the PACS unreachable), its report deadline 40 s after
// the request, attempted at 0, 10 and 30 s: its next attempt, 10 s on, is at the deadline. logs has the
// pipeline's log.
func nearTheDeadline(t *testing.T) (*commitmentFixture, *testenv.LogBuffer) {
	c := newCommitmentFixture(t)
	logs := &testenv.LogBuffer{}
	c.p.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	c.p.CommitmentReportFor = 40 * time.Second
	c.f.Reporter.Err = errors.New("dial PACS: connection refused")
	c.store(sop1)
	c.request(txnUID, ctRef(sop1))
	c.at(10 * time.Second)
	c.at(20 * time.Second)
	return c, logs
}

// TestCommitmentGivenUpOnceWhileTheBusFails: a report given up at its deadline whose audit record or Storage
// Commitment Completed event fails (the audit store or the event bus down) is given up once: the transaction stayed
// in reporting unrecorded, and each run after the lease tried the PACS again and logged UndeliverableLog again,
// which the alarm counts, for as long as the write failed. What is left is written once it is back.
func TestCommitmentGivenUpOnceWhileTheBusFails(t *testing.T) {
	for _, failing := range []string{"the event bus", "the audit store"} {
		t.Run(failing, func(t *testing.T) {
			ctx := context.Background()
			c, logs := nearTheDeadline(t)
			down := errors.New(failing + " down")
			setErr := func(err error) {
				if failing == "the event bus" {
					c.f.Events.Err = err
				} else {
					c.f.Audit.Err = err
				}
			}
			setErr(down)
			c.now = c.now.Add(10 * time.Second)
			for run := range 3 {
				if _, err := c.p.RunCommitments(ctx, c.now); !errors.Is(err, down) {
					t.Errorf("run %d: err %v, want %s's", run+1, err, failing)
				}
				c.now = c.now.Add(3 * time.Minute) // past the lease
			}
			if n := len(c.reports()); n != 4 {
				t.Errorf("%d attempts, want 4: none after giving up", n)
			}
			if n := strings.Count(logs.String(), pipeline.UndeliverableLog); n != 1 {
				t.Errorf("%q logged %d times, want once", pipeline.UndeliverableLog, n)
			}
			setErr(nil)
			c.at(0)
			c.at(3 * time.Minute)
			if n, done := len(c.reports()), len(c.events(pipeline.DetailTypeCommitmentCompleted)); n != 4 || done != 1 {
				t.Errorf("%d attempts, %d Storage Commitment Completed events once %s is back; want 4 and 1", n, done, failing)
			}
			var cd pipeline.CommitmentCompletedDetail
			if err := json.Unmarshal(c.events(pipeline.DetailTypeCommitmentCompleted)[0], &cd); err != nil || cd.Report.Delivered || cd.Report.Attempts != 4 {
				t.Errorf("Storage Commitment Completed %+v (%v)", cd, err)
			}
			if d := cmp.Diff([]string{"commitment-requested", "committed", "commitment-undeliverable"}, c.outcomes()); d != "" {
				t.Errorf("audit (-want +got):\n%s", d)
			}
			if n := strings.Count(logs.String(), pipeline.UndeliverableLog); n != 1 {
				t.Errorf("%q logged %d times in all, want once", pipeline.UndeliverableLog, n)
			}
		})
	}
}

// TestCommitmentRetransmittedWhileTheBusFails: a retransmission of a request reported whose event is still owed
// (the bus down) is reported again, on the newer association, as one arriving before its report is.
func TestCommitmentRetransmittedWhileTheBusFails(t *testing.T) {
	ctx := context.Background()
	c := newCommitmentFixture(t)
	c.store(sop1)
	c.f.Events.Err = errors.New("event bus down")
	c.put(txnUID, ctRef(sop1))
	if _, err := c.p.RunCommitments(ctx, c.now); !errors.Is(err, c.f.Events.Err) {
		t.Fatalf("run: err %v, want the bus's", err)
	}
	c.put(txnUID, ctRef(sop1)) // the same request on a new association
	c.f.Events.Err = nil
	c.at(3 * time.Minute)
	reps := c.reports()
	if len(reps) != 2 || reps[1].AssociationID != "abcd1234-2" {
		t.Fatalf("reports %+v, want the second on the retransmission's association", reps)
	}
	if n := len(c.events(pipeline.DetailTypeCommitmentCompleted)); n != 1 {
		t.Errorf("%d Storage Commitment Completed events, want 1", n)
	}
}

// TestCommitmentBusDownStopsTheRun: with the event bus down, a commitment run stops publishing Storage Commitment
// Completed once three events in a row failed, as a notify run stops announcing (announcer: one rule for both),
// and still reports every result to its PACS; the transactions left keep their events for the run after the
// lease. Each due transaction tried its event, with the publish's retries, however many had failed before it.
func TestCommitmentBusDownStopsTheRun(t *testing.T) {
	ctx := context.Background()
	c := newCommitmentFixture(t)
	c.p.CommitmentWait = time.Second
	const txs = 6
	for i := range txs {
		c.put(fmt.Sprint(txnUID, ".", i+1), ctRef(sop1)) // never sent: 0112 at the wait, no study to announce
	}
	down := errors.New("event bus down")
	c.f.Events.Err = down
	c.now = c.now.Add(time.Minute)
	_, err := c.p.RunCommitments(ctx, c.now)
	if !errors.Is(err, down) || !strings.Contains(err.Error(), "3 of 6 transactions' Storage Commitment Completed left for the next run") {
		t.Errorf("run: err %v, want the bus's failures and the events left", err)
	}
	if n := len(c.reports()); n != txs {
		t.Errorf("%d reports, want every result reported whatever the bus does", n)
	}
	if c.f.Events.Calls != 3*5 {
		t.Errorf("%d publish calls, want 3 events' 5 tries", c.f.Events.Calls)
	}
	c.f.Events.Err = nil
	c.at(3 * time.Minute) // past the lease
	if n, done := len(c.reports()), len(c.events(pipeline.DetailTypeCommitmentCompleted)); n != txs || done != txs {
		t.Errorf("%d reports, %d Storage Commitment Completed events once the bus is back; want %d and %d", n, done, txs, txs)
	}
}

// TestCommitmentRetransmittedAfterAGiveUp: a retransmission of a request whose report was given up is evaluated
// again and reported again with a report deadline of its own, as conformance.md promises, whether the give-up's
// audit record and event were written or still owed (the event bus down): in the second case it got one more
// attempt at the old result past the old deadline, given up again at once when that failed, the alarm's line
// logged a second time, and the PACS's new request never had its hour. The give-up is audited and announced either
// way, before the retransmission's Storage Commitment Completed: its event, when still owed, was dropped, and a
// subscriber never learnt that the first request's result did not reach the PACS.
func TestCommitmentRetransmittedAfterAGiveUp(t *testing.T) {
	for _, tt := range []struct {
		name    string
		busDown bool // at the give-up
	}{
		{"its give-up recorded", false},
		{"its give-up's record owed", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c, logs := nearTheDeadline(t)
			if tt.busDown {
				c.f.Events.Err = errors.New("event bus down")
			}
			c.now = c.now.Add(10 * time.Second)
			if _, err := c.p.RunCommitments(ctx, c.now); (err != nil) != tt.busDown {
				t.Fatalf("the give-up's run: err %v", err)
			}
			c.f.Events.Err = nil
			c.put(txnUID, ctRef(sop1)) // the PACS asks again, on a new association
			c.at(time.Second)          // its first attempt fails too: retried, not given up
			if n := strings.Count(logs.String(), pipeline.UndeliverableLog); n != 1 {
				t.Errorf("%q logged %d times, want once: the retransmission is not given up at its first failure", pipeline.UndeliverableLog, n)
			}
			c.f.Reporter.Err = nil
			c.at(20 * time.Second)
			reps := c.reports()
			if len(reps) != 6 || reps[5].AssociationID != "abcd1234-2" {
				t.Fatalf("%d reports (%+v), want 4 then 2 for the retransmission, on its association", len(reps), reps)
			}
			if d := cmp.Diff([]string{"commitment-requested", "committed", "commitment-undeliverable", "commitment-requested", "committed",
				"commitment-reported"}, c.outcomes()); d != "" {
				t.Errorf("audit (-want +got):\n%s", d)
			}
			done := c.events(pipeline.DetailTypeCommitmentCompleted)
			if len(done) != 2 {
				t.Fatalf("%d Storage Commitment Completed events, want 2: the give-up's, then the retransmission's", len(done))
			}
			var first, last pipeline.CommitmentCompletedDetail
			if json.Unmarshal(done[0], &first) != nil || first.Report.Delivered || first.Report.Attempts != 4 || first.AssociationID != "abcd1234-1" {
				t.Errorf("the first Storage Commitment Completed %+v on %s; want the give-up after 4 attempts, of the first association", first.Report, first.AssociationID)
			}
			if json.Unmarshal(done[1], &last) != nil || !last.Report.Delivered || last.Report.Attempts != 2 || last.AssociationID != "abcd1234-2" {
				t.Errorf("the last Storage Commitment Completed %+v on %s; want delivered at the second attempt, on the retransmission's", last.Report, last.AssociationID)
			}
		})
	}
}

// TestCommitmentRetransmittedAfterAGiveUpWhileTheBusFails: a retransmission arriving while the give-up's Storage
// Commitment Completed is still owed and the bus still down fails, to be delivered again, rather than replace the
// transaction and drop the event: the run after the lease publishes the give-up's once the bus is back, and the
// request delivered again is then evaluated and reported as after any give-up.
func TestCommitmentRetransmittedAfterAGiveUpWhileTheBusFails(t *testing.T) {
	ctx := context.Background()
	c, _ := nearTheDeadline(t)
	down := errors.New("event bus down")
	c.f.Events.Err = down
	c.now = c.now.Add(10 * time.Second)
	if _, err := c.p.RunCommitments(ctx, c.now); !errors.Is(err, down) {
		t.Fatalf("the give-up's run: err %v, want the bus's", err)
	}
	key := c.write(txnUID, ctRef(sop1)) // the PACS asks again, on a new association
	if err := c.p.ProcessCommitmentRequest(ctx, key); !errors.Is(err, down) {
		t.Fatalf("the retransmission with the bus down: err %v, want the bus's", err)
	}
	c.f.Events.Err = nil
	c.at(3 * time.Minute) // past the lease: the give-up's event
	if err := c.p.ProcessCommitmentRequest(ctx, key); err != nil {
		t.Fatalf("the retransmission delivered again: %v", err)
	}
	c.f.Reporter.Err = nil
	c.at(time.Second)
	done := c.events(pipeline.DetailTypeCommitmentCompleted)
	var cds []pipeline.CommitmentCompletedDetail
	for _, d := range done {
		var cd pipeline.CommitmentCompletedDetail
		if err := json.Unmarshal(d, &cd); err != nil {
			t.Fatal(err)
		}
		cds = append(cds, cd)
	}
	if len(cds) != 2 || cds[0].Report.Delivered || cds[0].AssociationID != "abcd1234-1" || !cds[1].Report.Delivered || cds[1].AssociationID != "abcd1234-2" {
		t.Errorf("Storage Commitment Completed %+v; want the give-up's on the first association, then the retransmission's delivered", cds)
	}
}

// racingStore lets another write (race) come between a retransmission's read of its transaction and its write:
// the first UpdateCommitment of the request at key runs race first.
type racingStore struct {
	pipeline.CommitmentStore
	key  string
	race func()
}

func (r *racingStore) UpdateCommitment(ctx context.Context, tx pipeline.CommitmentTransaction) (pipeline.CommitmentTransaction, error) {
	if race := r.race; race != nil && tx.RequestKey == r.key {
		r.race = nil
		race()
	}
	return r.CommitmentStore.UpdateCommitment(ctx, tx)
}

// TestCommitmentRetransmissionRacingAGiveUp: a retransmission arriving while a run gives the first request up
// (the PACS's last attempt failing at the deadline) is taken up, not dropped: its write, after the run's, failed
// its condition and was taken for done, so the request was not audited, not evaluated and never reported; it now
// fails, for SQS (or local mode's worker) to deliver it again, and is then evaluated and reported as a
// retransmission after a give-up is.
func TestCommitmentRetransmissionRacingAGiveUp(t *testing.T) {
	ctx := context.Background()
	c, _ := nearTheDeadline(t)
	c.now = c.now.Add(10 * time.Second) // the first request's last attempt is due
	key := c.write(txnUID, ctRef(sop1)) // the PACS asks again, on a new association
	c.p.Commitments = &racingStore{CommitmentStore: c.p.Commitments, key: key, race: func() {
		if _, err := c.p.RunCommitments(ctx, c.now); err != nil { // the give-up
			t.Errorf("the give-up's run: %v", err)
		}
	}}
	for delivery := 1; ; delivery++ {
		err := c.p.ProcessCommitmentRequest(ctx, key)
		if err == nil {
			break
		}
		if delivery == 2 {
			t.Fatalf("delivered again: %v", err)
		}
	}
	c.f.Reporter.Err = nil
	c.at(time.Second)
	reps := c.reports()
	if len(reps) != 5 || reps[4].AssociationID != "abcd1234-2" {
		t.Fatalf("%d reports (%+v), want 4 then the retransmission's, on its association", len(reps), reps)
	}
	if d := cmp.Diff([]string{"commitment-requested", "committed", "commitment-undeliverable", "commitment-requested", "committed",
		"commitment-reported"}, c.outcomes()); d != "" {
		t.Errorf("audit (-want +got):\n%s", d)
	}
}

// TestCommitmentCompletedBounded: a request committing instances of more studies than an event lists has a
// Storage Commitment Completed that lists the first MaxListedStudies (1000), counts them all (studyCount) and says
// the list is cut (studiesTruncated), and stays under EventBridge's 256 KiB entry with 500 failures besides, every
// UID as long as UIDs go: studies was unbounded, and some 3,900 studies made an event the bus refused.
func TestCommitmentCompletedBounded(t *testing.T) {
	c := newCommitmentFixture(t)
	c.p.CommitmentWait = time.Second
	const studies, missingRefs = 1001, 600
	var refs []commitment.Ref
	for i := range studies {
		st, se, sop := pt.UID64("1.2.826.0.1.3680043.10.9.2.", i), pt.UID64("1.2.826.0.1.3680043.10.9.3.", i), pt.UID64("1.2.826.0.1.3680043.10.9.4.", i)
		in := ct(sop)
		in.StudyUID, in.SeriesUID = st, se
		k := "incoming/2026/01/15/" + st + "/" + se + "/" + sop + ".dcm"
		add(c.f, k, in.Build(), sop)
		if _, err := c.p.ProcessObject(context.Background(), k); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ctRef(sop))
	}
	for i := range missingRefs { // never sent: 0112, of no known study, so no study is announced here
		refs = append(refs, commitment.Ref{SOPClassUID: pt.UID64("1.2.840.10008.5.1.4.1.1.", i), SOPInstanceUID: pt.UID64("1.2.826.0.1.3680043.10.9.5.", i)})
	}
	c.request(txnUID, refs...)
	c.at(time.Minute)
	var done []pipeline.Event
	for _, e := range c.f.Events.All() {
		if e.DetailType == pipeline.DetailTypeCommitmentCompleted {
			done = append(done, e)
		}
	}
	if len(done) != 1 {
		t.Fatalf("%d Storage Commitment Completed events, want 1", len(done))
	}
	var cd pipeline.CommitmentCompletedDetail
	if err := json.Unmarshal(done[0].Detail, &cd); err != nil {
		t.Fatal(err)
	}
	if len(cd.Studies) != 1000 || cd.StudyCount != studies || !cd.StudiesTruncated || len(cd.Failures) != 500 || cd.FailedCount != missingRefs {
		t.Errorf("%d studies listed of %d, truncated %v, %d failures listed of %d; want 1000 of %d, truncated, 500 of %d",
			len(cd.Studies), cd.StudyCount, cd.StudiesTruncated, len(cd.Failures), cd.FailedCount, studies, missingRefs)
	}
	// An entry's size as EventBridge counts it: Time (14), Source, DetailType, Detail, Resources.
	size := 14 + len("dicom.ingest") + len(done[0].DetailType) + len(done[0].Detail)
	for _, r := range done[0].Resources {
		size += len(r)
	}
	if size >= 256<<10 {
		t.Errorf("the event is %d bytes, over EventBridge's 256 KiB entry", size)
	}
	var detail any
	if err := json.Unmarshal(done[0].Detail, &detail); err != nil {
		t.Fatal(err)
	}
	if err := pt.StrictSchemas(t)[pipeline.DetailTypeCommitmentCompleted].Validate(detail); err != nil {
		t.Errorf("the event fails its schema: %v", err)
	}
}

// TestCommitmentCompletedRefused: a transaction whose Storage Commitment Completed the bus refuses for what it is
// (an entry over 256 KiB: ValidationException) is done without it, its run failing with the refusal: it stayed
// reporting, the event tried again at every lease's end and refused again, for ever.
func TestCommitmentCompletedRefused(t *testing.T) {
	ctx := context.Background()
	c := newCommitmentFixture(t)
	c.f.Events.Refuse = func(e pipeline.Event) (string, bool) {
		return "ValidationException", e.DetailType == pipeline.DetailTypeCommitmentCompleted
	}
	c.store(sop1)
	c.put(txnUID, ctRef(sop1))
	n, err := c.p.RunCommitments(ctx, c.now)
	if n != 1 || err == nil || !strings.Contains(err.Error(), "finished without its event") || !strings.Contains(err.Error(), "ValidationException") {
		t.Errorf("run: %d finished, err %v; want the transaction finished and the refusal", n, err)
	}
	if strings.Contains(fmt.Sprint(err), txnUID) {
		t.Errorf("the run's error %q holds the transaction UID", err)
	}
	calls := c.f.Events.Calls
	for _, d := range []time.Duration{3 * time.Minute, 10 * time.Minute} {
		c.now = c.now.Add(d)
		if n, err := c.p.RunCommitments(ctx, c.now); n != 0 || err != nil {
			t.Errorf("a run %v later: %d finished, err %v; want nothing left to do", d, n, err)
		}
	}
	if c.f.Events.Calls != calls || len(c.reports()) != 1 {
		t.Errorf("%d more publish calls, %d reports; want none more and the one report", c.f.Events.Calls-calls, len(c.reports()))
	}
}

// TestCommitmentRecordsInWords: a transaction's records say what happened
// in words an auditor reads without the standard at hand: the failures by
// their Failure Reason's name beside its code, the delivery by the
// association it took. They said "failures 0112×1" and "N-EVENT-REPORT
// answered 0000 after 1 attempts (same association: false)".
func TestCommitmentRecordsInWords(t *testing.T) {
	c := newCommitmentFixture(t)
	c.store(sop1)
	c.request(txnUID, ctRef(sop1), ctRef("1.2.826.0.1.3680043.10.1.1.9"))
	c.at(pipeline.DefaultCommitmentWait + time.Second)
	reasons := map[string]string{}
	for _, r := range c.f.Audit.All() {
		reasons[r.Outcome] = r.Reason
	}
	for outcome, want := range map[string]string{
		pipeline.OutcomeCommitmentFailures: "1 of 2 instances committed; failures 0112 no-such-object-instance ×1",
		pipeline.OutcomeCommitmentReported: "N-EVENT-REPORT answered 0000 on a new association to the requesting AE, after 1 attempt",
	} {
		if reasons[outcome] != want {
			t.Errorf("%s: reason %q, want %q", outcome, reasons[outcome], want)
		}
	}
}

// TestCommitmentAtScale runs the largest request on the fakes.
func TestCommitmentAtScale(t *testing.T) {
	pt.RunCommitmentAtScale(t, func(*testing.T) (pipeline.CommitmentStore, pipeline.AuditStore) {
		return pt.NewCommitments(), pt.NewAudit()
	})
}

// TestCommitmentCompletedRefusedLogged: a Storage Commitment Completed the bus refuses for what it is has an ERROR
// line of its own, naming the transaction by the association and message id of its request (never a UID), whether a
// run finishes the transaction or a retransmission replaces one given up: only the run's error said it, and the
// retransmission's path said nothing at all.
func TestCommitmentCompletedRefusedLogged(t *testing.T) {
	refuse := func(e pipeline.Event) (string, bool) {
		return "ValidationException", e.DetailType == pipeline.DetailTypeCommitmentCompleted
	}
	for _, tt := range []struct {
		name string
		run  func(t *testing.T) (*commitmentFixture, *testenv.LogBuffer)
	}{
		{"reported", func(t *testing.T) (*commitmentFixture, *testenv.LogBuffer) {
			c := newCommitmentFixture(t)
			logs := &testenv.LogBuffer{}
			c.p.Logger = slog.New(slog.NewJSONHandler(logs, nil))
			c.f.Events.Refuse = refuse
			c.store(sop1)
			c.put(txnUID, ctRef(sop1))
			if _, err := c.p.RunCommitments(context.Background(), c.now); err == nil {
				t.Error("the run: no error; want the refusal")
			}
			return c, logs
		}},
		{"given up, then asked again", func(t *testing.T) (*commitmentFixture, *testenv.LogBuffer) {
			c, logs := nearTheDeadline(t)
			c.f.Events.Err = errors.New("event bus down")
			c.now = c.now.Add(10 * time.Second)
			if _, err := c.p.RunCommitments(context.Background(), c.now); err == nil {
				t.Error("the give-up's run: no error; want the bus's")
			}
			c.f.Events.Err, c.f.Events.Refuse = nil, refuse
			c.put(txnUID, ctRef(sop1)) // the give-up's event, refused, and the retransmission registered
			return c, logs
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, logs := tt.run(t)
			var lines []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Fatalf("log line %q: %v", l, err)
				}
				if m["msg"] == pipeline.CompletedRefusedLog {
					lines = append(lines, m)
				}
			}
			if len(lines) != 1 || lines[0]["level"] != "ERROR" || lines[0]["association"] != "abcd1234-1" || lines[0]["message_id"] != 1.0 {
				t.Errorf("lines %q: %v; want one ERROR naming association abcd1234-1, message 1", pipeline.CompletedRefusedLog, lines)
			}
			if s := logs.String(); strings.Contains(s, txnUID) || strings.Contains(s, sop1) {
				t.Errorf("the log holds a UID:\n%s", s)
			}
		})
	}
}

// TestCommitmentUndeliverableSaysWhy: the undeliverable record's reason carries the last delivery's error (the
// reporter's: AE, address and reason, no UID), so that a compliance officer and the PACS's administrator read why
// the result never reached it, not only how many times it was tried. The last error is kept, logged and recorded by
// one rule: a PACS's own text is not (the Error Comment of its answer, kept whole by versions before, a person's name,
// UIDs and 10 KB of text in it), and the whole is bounded.
func TestCommitmentUndeliverableSaysWhy(t *testing.T) {
	const pacsName = "Zqxdoe^Jane"
	refused := "commitreport: PACS answered the report with dimse: status 0x0110 (Processing failure)"
	long := "commitreport: associate with PACS at 10.1.2.3:104: " + strings.Repeat("our own words, at length; ", 400)
	long2 := "commitreport: associate with PACS at 10.1.2.3:104: " + strings.Repeat("é", 1000)
	long3 := "commitreport: associate with PACS at 10.1.2.3:104: " + strings.Repeat("€", 1000)
	// At most 1,024 bytes in all (the docs' bound), its Cut included, cut between characters.
	cutAt1024 := func(msg string) func(string) bool {
		return func(e string) bool {
			return strings.HasPrefix(msg, strings.TrimSuffix(e, associationaudit.Cut)) && strings.HasSuffix(e, associationaudit.Cut) &&
				len(e) <= 1024 && len(e) > 1024-utf8.UTFMax-len(associationaudit.Cut) && utf8.ValidString(e)
		}
	}
	for _, tc := range []struct {
		name, last string
		want       func(lastError string) bool
	}{
		{"TLS handshake", "commitreport: associate with PACS at tls://10.1.2.3:2762: TLS handshake failed (unknown_ca): x509: certificate signed by unknown authority", nil},
		{"connection refused", "commitreport: associate with PACS at 10.1.2.3:104: dicomnet: dial: dial tcp 10.1.2.3:104: connect: connection refused", nil},
		{"a status the PACS commented", refused + ": " + dicomnettest.PeerComment(pacsName, txnUID, sop1), func(e string) bool {
			return strings.HasPrefix(e, refused) && strings.Contains(e, "Error Comment") && len(e) < len(refused)+200
		}},
		{"long", long, cutAt1024(long)},
		// Characters of two and three bytes: one of them lies across the bound.
		{"long, in two-byte characters", long2, cutAt1024(long2)},
		{"long, in three-byte characters", long3, cutAt1024(long3)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCommitmentFixture(t)
			logs := &testenv.LogBuffer{}
			c.p.Logger = slog.New(slog.NewJSONHandler(logs, nil))
			c.p.CommitmentReportFor = 40 * time.Second
			c.f.Reporter.Err = errors.New(tc.last)
			c.store(sop1)
			c.request(txnUID, ctRef(sop1))
			for range 40 {
				c.at(time.Second)
			}
			recs := slices.DeleteFunc(c.f.Audit.All(), func(r pipeline.AuditRecord) bool { return r.Outcome != pipeline.OutcomeCommitmentUndeliverable })
			if len(recs) != 1 {
				t.Fatalf("%d undeliverable records, want 1", len(recs))
			}
			const head = "N-EVENT-REPORT not delivered after 4 attempts; last error: "
			last, ok := strings.CutPrefix(recs[0].Reason, head)
			switch {
			case !ok:
				t.Errorf("reason %q, want it to begin %q", recs[0].Reason, head)
			case tc.want == nil && last != tc.last:
				t.Errorf("reason %q, want %q", recs[0].Reason, head+tc.last)
			case tc.want != nil && !tc.want(last):
				t.Errorf("last error %q, not what the rule keeps of %.200q…", last, tc.last)
			}
			tx, err := c.f.Commitments.GetCommitment(context.Background(), pipeline.CommitmentID(txnUID))
			if err != nil {
				t.Fatal(err)
			}
			if tx.LastError != last {
				t.Errorf("the transaction keeps %q, the record says %q: one rule for both", tx.LastError, last)
			}
			for what, text := range map[string]string{"record's reason": recs[0].Reason, "transaction's last error": tx.LastError, "log": logs.String()} {
				for _, peer := range []string{txnUID, sop1, "Zqxdoe", "Jane", dicomnettest.PeerFiller} {
					if strings.Contains(text, peer) {
						t.Errorf("the %s holds %q", what, peer)
					}
				}
			}
		})
	}
}

// TestCommitmentFinishedHoldsNoLease: a transaction finished (reported, given up, or either finished by a later run
// once the bus was back) is held by no worker: it kept the lease of the run that finished it (Leased, a past
// NextAttempt), which ReleasedLease ignores for a transaction done but which said to anyone reading the item that a
// worker held it.
func TestCommitmentFinishedHoldsNoLease(t *testing.T) {
	for _, tc := range []struct {
		name      string
		reportErr error
		busDown   bool
		want      pipeline.CommitmentState
	}{
		{"reported", nil, false, pipeline.CommitmentReported},
		{"undeliverable", errors.New("dial PACS: connection refused"), false, pipeline.CommitmentUndeliverable},
		{"reported, the bus down", nil, true, pipeline.CommitmentReported},
		{"undeliverable, the bus down", errors.New("dial PACS: connection refused"), true, pipeline.CommitmentUndeliverable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCommitmentFixture(t)
			c.p.CommitmentReportFor = time.Nanosecond // the first failed attempt is past the deadline
			c.f.Reporter.Err = tc.reportErr
			c.store(sop1)
			if tc.busDown {
				c.f.Events.Err = errors.New("event bus down")
			}
			c.put(txnUID, ctRef(sop1))
			if _, err := c.p.RunCommitments(context.Background(), c.now); (err != nil) != tc.busDown {
				t.Fatalf("run: %v", err)
			}
			c.f.Events.Err = nil
			c.at(3 * time.Minute) // past the lease
			tx, err := c.f.Commitments.GetCommitment(context.Background(), pipeline.CommitmentID(txnUID))
			if err != nil {
				t.Fatal(err)
			}
			if tx.State != tc.want || tx.Leased {
				t.Errorf("finished transaction: %s, leased %v until %v; want %s, not leased", tx.State, tx.Leased, tx.NextAttempt, tc.want)
			}
		})
	}
}
