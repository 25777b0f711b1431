package pipelinetest

// RunIndexStore is the conformance suite of pipeline.IndexStore: the
// DynamoDB adapter (on an emulator), the SQLite adapter and the fake above
// all run it, so the three decide alike. It states the contract with
// explicit expected values rather than by calling the rules in
// shared/pipeline/studyindex.go, which the fake is built from.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// IndexHarness gives RunIndexStore fresh indexes of one implementation.
type IndexHarness struct {
	// New returns an empty index.
	New func(t *testing.T) pipeline.IndexStore
	// Crash returns an index over ix's storage that behaves as if its
	// process died right after its n-th storage call (n from 1) took
	// effect: that call's answer is lost and every later call fails.
	// Nil means UpsertInstance is one atomic step (a transaction, a lock):
	// the suite then crashes it right after that step took effect.
	Crash func(t *testing.T, ix pipeline.IndexStore, n int) pipeline.IndexStore
	// StoreName writes name as the Patient's Name ix's study holds, as
	// studies indexed before names were kept in IndexedPersonName's form
	// hold one ("^^^^"). Nil skips the case that needs it.
	StoreName func(t *testing.T, ix pipeline.IndexStore, studyUID, name string)
}

// ErrCrash is what a crashed index returns.
var ErrCrash = errors.New("pipelinetest: crashed")

// atomicCrash is Crash for an index whose upsert is one atomic step.
type atomicCrash struct{ pipeline.IndexStore }

func (c atomicCrash) UpsertInstance(ctx context.Context, in pipeline.InstanceRecord) (pipeline.UpsertResult, error) {
	if _, err := c.IndexStore.UpsertInstance(ctx, in); err != nil {
		return pipeline.UpsertResult{}, err
	}
	return pipeline.UpsertResult{}, ErrCrash
}

// RunIndexStore runs the suite.
func RunIndexStore(t *testing.T, h IndexHarness) {
	if h.Crash == nil {
		h.Crash = func(_ *testing.T, ix pipeline.IndexStore, n int) pipeline.IndexStore {
			if n == 1 {
				return atomicCrash{ix}
			}
			return ix
		}
	}
	t.Run("New", func(t *testing.T) { testNew(t, h) })
	t.Run("Duplicate", func(t *testing.T) { testDuplicate(t, h) })
	t.Run("ConflictSameStudy", func(t *testing.T) { testConflictSameStudy(t, h) })
	t.Run("ConflictOtherStudy", func(t *testing.T) { testConflictOtherStudy(t, h) })
	t.Run("OverwrittenKey", func(t *testing.T) { testOverwrittenKey(t, h) })
	t.Run("SameContentOtherStudy", func(t *testing.T) { testSameContentOtherStudy(t, h) })
	t.Run("FillIn", func(t *testing.T) { testFillIn(t, h) })
	t.Run("PatientMismatch", func(t *testing.T) { testPatientMismatch(t, h) })
	t.Run("PersonNameForm", func(t *testing.T) { testPersonNameForm(t, h) })
	t.Run("ReceivedOutOfOrder", func(t *testing.T) { testReceivedOutOfOrder(t, h) })
	t.Run("InterruptedUpsert", func(t *testing.T) { testInterrupted(t, h) })
	t.Run("InterruptedResend", func(t *testing.T) { testInterruptedResend(t, h) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, h) })
	t.Run("PendingAndAnnounced", func(t *testing.T) { testPendingAnnounced(t, h) })
	t.Run("DeferAnnouncement", func(t *testing.T) { testDeferAnnouncement(t, h) })
	t.Run("StableLimitCountsOffered", func(t *testing.T) { testStableLimit(t, h) })
	t.Run("PublishLedger", func(t *testing.T) { testLedger(t, h) })
	t.Run("RequiredUIDs", func(t *testing.T) { testRequiredUIDs(t, h) })
	t.Run("Instances", func(t *testing.T) { testInstances(t, h) })
	t.Run("BoundedModalities", func(t *testing.T) { testBoundedModalities(t, h) })
	t.Run("StudySets", func(t *testing.T) { testStudySets(t, h) })
	t.Run("Rejected", func(t *testing.T) { testRejected(t, h) })
	t.Run("LastSent", func(t *testing.T) { testLastSent(t, h) })
}

// testLastSent: a study's LastSent is the receipt of its latest transfer,
// a resend of content held included (pipeline.Resent: another object
// key), and moves only forward; a redelivery (the indexed key) never moves
// it, whatever time it carries. LastReceived (the portal's listing order)
// and the quiet period stay the counted contents': a resend holds no
// announcement back.
func testLastSent(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	ctx := context.Background()
	type times struct{ LastReceived, LastSent, LastActivity time.Time }
	check := func(t *testing.T, r pipeline.UpsertResult, want times) {
		t.Helper()
		if diff := cmp.Diff(want, times{r.Study.LastReceived, r.Study.LastSent, r.Study.LastActivity}); diff != "" {
			t.Errorf("upsert result (-want +got):\n%s", diff)
		}
		d := getStudy(t, ix, r.Study.StudyInstanceUID)
		if diff := cmp.Diff(want, times{d.LastReceived, d.LastSent, d.LastActivity}); diff != "" {
			t.Errorf("GetStudy (-want +got):\n%s", diff)
		}
		if !d.Sent().Equal(want.LastSent) {
			t.Errorf("Sent() = %v, want %v", d.Sent(), want.LastSent)
		}
		checkStudy(t, ix, r.Study, counts{Instances: 2, Conflicts: 1, Series: 1, Bytes: 300, Revision: 3})
	}
	first := Record(1, 1, 1, "aa", 0)
	upsert(t, ix, first, pipeline.InstanceNew)
	upsert(t, ix, Record(1, 1, 2, "bb", time.Minute), pipeline.InstanceNew)
	conflict := Record(1, 1, 1, "cc", 2*time.Minute)
	r := upsert(t, ix, conflict, pipeline.InstanceConflict)
	counted := times{T0.Add(2 * time.Minute), T0.Add(2 * time.Minute), T0.Add(2*time.Minute + time.Second)}
	check(t, r, counted)

	resend := func(in pipeline.InstanceRecord, at time.Duration, key string) pipeline.InstanceRecord {
		in.ReceivedAt, in.IndexedAt = T0.Add(at), T0.Add(at+time.Second)
		if key != "" {
			in.ObjectKey = key
		}
		return in
	}
	steps := []struct {
		name     string
		in       pipeline.InstanceRecord
		lastSent time.Duration
	}{
		{"resend the next day", resend(first, 24*time.Hour, "incoming/next-day.dcm"), 24 * time.Hour},
		{"its redelivery", resend(first, 24*time.Hour, "incoming/next-day.dcm"), 24 * time.Hour},
		{"a redelivery of the counted transfer carrying a later time", resend(first, 48*time.Hour, ""), 24 * time.Hour},
		{"an earlier resend processed late", resend(first, 12*time.Hour, "incoming/half-day.dcm"), 24 * time.Hour},
		{"a resend of the conflicting content", resend(conflict, 25*time.Hour, "incoming/conflict-again.dcm"), 25 * time.Hour},
	}
	for _, step := range steps {
		r := upsert(t, ix, step.in, pipeline.InstanceDuplicate)
		t.Run(step.name, func(t *testing.T) {
			want := counted
			want.LastSent = T0.Add(step.lastSent)
			check(t, r, want)
		})
	}
	// A resend the SCP found held (NoteSent: no object follows it) moves
	// it the same way, forward only; a study not indexed is left alone,
	// ErrNotFound.
	for _, note := range []struct {
		name     string
		at       time.Duration
		lastSent time.Duration
	}{{"noted earlier", 24 * time.Hour, 25 * time.Hour}, {"noted later", 26 * time.Hour, 26 * time.Hour}, {"noted again", 26 * time.Hour, 26 * time.Hour}} {
		if err := ix.NoteSent(ctx, studyUID(1), T0.Add(note.at)); err != nil {
			t.Fatalf("%s: %v", note.name, err)
		}
		t.Run(note.name, func(t *testing.T) {
			d := getStudy(t, ix, studyUID(1))
			want := counted
			want.LastSent = T0.Add(note.lastSent)
			check(t, pipeline.UpsertResult{Study: d.StudySummary}, want)
		})
	}
	if err := ix.NoteSent(ctx, studyUID(3), T0); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("NoteSent of a study not indexed: %v, want ErrNotFound (to be retried once it is)", err)
	}
	if _, err := ix.GetStudy(ctx, studyUID(3)); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("NoteSent of a study not indexed: GetStudy = %v, want ErrNotFound", err)
	}
	// The resends announce nothing and hold nothing back: the study is
	// quiet since its counted contents' activity.
	stable, err := ix.StableStudies(ctx, counted.LastActivity, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{studyUID(1)}, studyUIDs(stable), cmpOpts); diff != "" {
		t.Errorf("StableStudies after resends (-want +got):\n%s", diff)
	}
	// A study received after the resends' counted contents stays after
	// them by LastReceived, however recently the other was resent.
	later := upsert(t, ix, Record(2, 1, 1, "dd", time.Hour), pipeline.InstanceNew).Study
	if resent := getStudy(t, ix, studyUID(1)); !later.LastReceived.After(resent.LastReceived) || !resent.LastReceived.Equal(counted.LastReceived) {
		t.Errorf("after resends: last received %v, a study received later %v; want %v, before it",
			resent.LastReceived, later.LastReceived, counted.LastReceived)
	}
}

// testBoundedModalities: a sender inventing a Modality per instance, 40
// short values then 410 of a thousand characters (450 KB, past DynamoDB's
// 400 KB item limit were they all kept), still has every instance indexed;
// the study keeps the first 32 short ones (pipeline.MaxStudyModalities),
// says the list is cut and counts them all.
func testBoundedModalities(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	const short, total = 40, 450
	modality := func(i int) string {
		if i < short {
			return fmt.Sprintf("INV%02d", i)
		}
		return fmt.Sprintf("%04d%s", i, strings.Repeat("X", 1000))
	}
	var r pipeline.UpsertResult
	for i := range total {
		in := Record(1, 1, i+1, fmt.Sprintf("%04x", i), time.Duration(i)*time.Millisecond)
		in.Modality = modality(i)
		r = upsert(t, ix, in, pipeline.InstanceNew)
	}
	// An instance of a kept modality and one of a cut one change nothing.
	for i, m := range []string{modality(0), modality(short)} {
		in := Record(1, 2, i+1, fmt.Sprintf("again%d", i), time.Second)
		in.Modality = m
		r = upsert(t, ix, in, pipeline.InstanceNew)
	}
	var want []string
	for i := range pipeline.MaxStudyModalities {
		want = append(want, modality(i))
	}
	d := checkStudy(t, ix, r.Study, counts{Instances: total + 2, Series: 2, Bytes: 100 * (total + 2), Revision: total + 2})
	for what, s := range map[string]pipeline.StudySummary{"upsert result": r.Study, "GetStudy": d.StudySummary} {
		if !slices.Equal(s.Modalities, want) || !s.ModalitiesTruncated {
			t.Errorf("%s: modalities %d %.20q, truncated %v; want the first %d, truncated", what, len(s.Modalities), s.Modalities,
				s.ModalitiesTruncated, pipeline.MaxStudyModalities)
		}
	}
	if n := d.ModalityCount(); n != total {
		t.Errorf("ModalityCount = %d, want %d", n, total)
	}
	// A study within the bound: not cut, counted from its list.
	r = upsert(t, ix, Record(2, 1, 1, "b1", 0), pipeline.InstanceNew)
	if d := getStudy(t, ix, r.Study.StudyInstanceUID); d.ModalitiesTruncated || d.ModalityCount() != 1 {
		t.Errorf("one-modality study: truncated %v, count %d", d.ModalitiesTruncated, d.ModalityCount())
	}
	// Racing additions at the bound: a study one short of it, then
	// instances of new modalities at once. One is kept; the others,
	// deciding on the set as each found it, cannot take it past the
	// bound (DynamoDB's add is conditioned on the set's size).
	for i := range pipeline.MaxStudyModalities - 1 {
		in := Record(3, 1, i+1, fmt.Sprintf("k%02d", i), 0)
		in.Modality = fmt.Sprintf("K%02d", i)
		upsert(t, ix, in, pipeline.InstanceNew)
	}
	const racing = 6
	var wg sync.WaitGroup
	for i := range racing {
		in := Record(3, 1, 100+i, fmt.Sprintf("r%02d", i), 0) // moving nothing else of the study
		in.Modality = fmt.Sprintf("R%02d", i)
		wg.Go(func() {
			if _, err := ix.UpsertInstance(context.Background(), in); err != nil {
				t.Errorf("racing upsert %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	d = getStudy(t, ix, studyUID(3))
	if len(d.Modalities) != pipeline.MaxStudyModalities || !d.ModalitiesTruncated || d.ModalityCount() != pipeline.MaxStudyModalities-1+racing ||
		d.InstanceCount != pipeline.MaxStudyModalities-1+racing {
		t.Errorf("after racing additions at the bound: %d kept, truncated %v, counted %d, instances %d; want %d, true, %d, %d",
			len(d.Modalities), d.ModalitiesTruncated, d.ModalityCount(), d.InstanceCount,
			pipeline.MaxStudyModalities, pipeline.MaxStudyModalities-1+racing, pipeline.MaxStudyModalities-1+racing)
	}
}

// testStudySets: a study's modalities and calling AEs are the union over
// its counted contents (new or conflicting), sorted and distinct, below
// the modalities' bound whatever the order: instances of several new
// modalities one after the other and at once (on DynamoDB each adds its
// own in its last step, conditioned on the set's size) are all kept,
// nothing cut. A duplicate (a resend, from another AE too) adds nothing:
// only a counted content does, so the calling AEs are at most the
// allowlisted titles that sent the study's contents, each of at most 16
// characters (docs/pipeline.md, "Bounded lists").
func testStudySets(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	ctx := context.Background()
	const one, racing = 4, 8
	var want, aes []string
	for i := range one + racing {
		want = append(want, fmt.Sprintf("M%02d", i))
		aes = append(aes, fmt.Sprintf("SITE_%02d", i))
	}
	rec := func(i int) pipeline.InstanceRecord {
		in := Record(1, 1+i%3, i+1, fmt.Sprintf("m%02d", i), 0)
		in.Modality, in.CallingAE = want[i], aes[i]
		return in
	}
	for i := range one {
		upsert(t, ix, rec(i), pipeline.InstanceNew)
	}
	var wg sync.WaitGroup
	for i := one; i < one+racing; i++ {
		wg.Go(func() {
			if _, err := ix.UpsertInstance(ctx, rec(i)); err != nil {
				t.Errorf("racing upsert %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	// Duplicates from another AE: an identical resend under another key
	// and a redelivery.
	resend := rec(0)
	resend.ObjectKey, resend.CallingAE, resend.ReceivedAt = resend.ObjectKey+".resent", "VNA", T0.Add(time.Hour)
	upsert(t, ix, resend, pipeline.InstanceDuplicate)
	upsert(t, ix, rec(1), pipeline.InstanceDuplicate)
	d := getStudy(t, ix, studyUID(1))
	type sets struct {
		Modalities, CallingAEs []string
		Truncated              bool
		Count, Instances       int
	}
	if diff := cmp.Diff(sets{want, aes, false, one + racing, one + racing},
		sets{d.Modalities, d.CallingAEs, d.ModalitiesTruncated, d.ModalityCount(), d.InstanceCount}); diff != "" {
		t.Errorf("study sets (-want +got):\n%s", diff)
	}
	// A conflicting content is counted: its AE joins.
	conflict := rec(2)
	conflict.ContentIdentity, conflict.ObjectKey, conflict.CallingAE = "zz", conflict.ObjectKey+".conflict", "VNA"
	r := upsert(t, ix, conflict, pipeline.InstanceConflict)
	if got := r.Study.CallingAEs; !slices.Contains(got, "VNA") || len(got) != len(aes)+1 {
		t.Errorf("calling AEs after a conflicting content from VNA: %v", got)
	}
}

// testRejected: RecordRejected notes an instance of a study once, however
// often; GetStudy counts those with no indexed content (one resent valid
// is not missing); it makes no study of its own, moves nothing the study
// is announced on, and refuses UIDs that name no instance.
func testRejected(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	ctx := context.Background()
	rejected := func(s, i int) pipeline.RejectedInstance {
		in := Record(s, 1, i, "", 0)
		return pipeline.RejectedInstance{StudyInstanceUID: in.StudyInstanceUID, SOPInstanceUID: in.SOPInstanceUID}
	}
	for _, r := range []pipeline.RejectedInstance{rejected(1, 2), rejected(1, 3), rejected(1, 2), rejected(2, 1)} {
		if err := ix.RecordRejected(ctx, r); err != nil {
			t.Fatalf("RecordRejected: %v", err)
		}
	}
	if _, err := ix.GetStudy(ctx, studyUID(1)); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("GetStudy of a study with rejected instances only: %v, want ErrNotFound", err)
	}
	r := upsert(t, ix, Record(1, 1, 1, "aa", 0), pipeline.InstanceNew)
	d := checkStudy(t, ix, r.Study, counts{Instances: 1, Series: 1, Bytes: 100, Revision: 1})
	if d.RejectedCount != 2 {
		t.Errorf("RejectedCount = %d, want 2", d.RejectedCount)
	}
	// Instance 3 resent valid: no longer missing.
	upsert(t, ix, Record(1, 1, 3, "bb", time.Second), pipeline.InstanceNew)
	if d := getStudy(t, ix, studyUID(1)); d.RejectedCount != 1 {
		t.Errorf("RejectedCount after a valid resend = %d, want 1", d.RejectedCount)
	}
	if err := ix.RecordRejected(ctx, rejected(1, 4)); err != nil {
		t.Fatal(err)
	}
	if d := getStudy(t, ix, studyUID(1)); d.RejectedCount != 2 || d.Revision != 2 || d.InstanceCount != 2 {
		t.Errorf("after another rejection: rejected %d, revision %d, instances %d; want 2, 2, 2", d.RejectedCount, d.Revision, d.InstanceCount)
	}
	if _, err := ix.GetStudy(ctx, studyUID(2)); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("GetStudy of a study with a rejected instance only, after others were indexed: %v, want ErrNotFound", err)
	}
	// Many rejects, half of them resent valid (before or after their
	// rejection), in a study of other instances too: counted one at a
	// time as the index reads them (pipeline.RejectedTally), the count is
	// the half never stored.
	const many = 300
	for i := range many {
		if i%2 == 0 {
			upsert(t, ix, Record(4, 1, i, fmt.Sprintf("v%03d", i), 0), pipeline.InstanceNew)
		}
		if err := ix.RecordRejected(ctx, rejected(4, i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range many {
		if i%4 == 1 {
			upsert(t, ix, Record(4, 1, i, fmt.Sprintf("w%03d", i), time.Second), pipeline.InstanceNew)
		}
	}
	if d := getStudy(t, ix, studyUID(4)); d.RejectedCount != many/4 || d.InstanceCount != many/2+many/4 {
		t.Errorf("a study of %d rejects, %d stored valid: rejected %d, instances %d; want %d, %d", many, many/2+many/4,
			d.RejectedCount, d.InstanceCount, many/4, many/2+many/4)
	}
	for _, bad := range []pipeline.RejectedInstance{{}, {StudyInstanceUID: studyUID(1)}, {StudyInstanceUID: "1.2.03", SOPInstanceUID: "1.2.3"},
		{StudyInstanceUID: "1." + strings.Repeat("1", 70), SOPInstanceUID: "1.2.3"}} {
		if err := ix.RecordRejected(ctx, bad); err == nil {
			t.Errorf("RecordRejected(%.30q) took UIDs that name no instance", bad)
		}
	}
}

// testInstances: every content under a SOP Instance UID, in any study, as
// indexed; nothing for a UID never indexed.
func testInstances(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	ctx := context.Background()
	if got, err := ix.Instances(ctx, Record(1, 1, 1, "", 0).SOPInstanceUID); err != nil || len(got) != 0 {
		t.Fatalf("Instances of nothing = %v, %v", got, err)
	}
	first := upsert(t, ix, Record(1, 1, 1, "aa", 0), pipeline.InstanceNew).Instance
	upsert(t, ix, Record(1, 1, 2, "bb", time.Second), pipeline.InstanceNew)
	other := Record(1, 1, 1, "cc", 2*time.Second)
	other.StudyInstanceUID, other.SeriesInstanceUID = studyUID(2), studyUID(2)+".1"
	conflict := upsert(t, ix, other, pipeline.InstanceConflict).Instance
	upsert(t, ix, Record(1, 1, 1, "aa", time.Hour), pipeline.InstanceDuplicate)
	got, err := ix.Instances(ctx, first.SOPInstanceUID)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b pipeline.InstanceRecord) int { return strings.Compare(a.ContentIdentity, b.ContentIdentity) })
	if d := cmp.Diff([]pipeline.InstanceRecord{first, conflict}, got, cmpOpts); d != "" {
		t.Errorf("Instances (-want +got):\n%s", d)
	}
}

// T0 is the suite's reference time.
var T0 = time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)

const suiteRoot = "1.2.826.0.1.3680043.10.1001."

// Record returns a valid instance record: study s, series s.se, instance
// s.se.i, content sha, received at T0+at and indexed a second later, of
// patient PID-1 (Doe^Jane, born 1970-01-01, F).
func Record(s, se, i int, sha string, at time.Duration) pipeline.InstanceRecord {
	study := fmt.Sprintf("%s%d", suiteRoot, s)
	series := fmt.Sprintf("%s.%d", study, se)
	sop := fmt.Sprintf("%s.%d", series, i)
	return pipeline.InstanceRecord{
		StudyInstanceUID: study, SeriesInstanceUID: series, SOPInstanceUID: sop, SOPClassUID: "1.2.840.10008.5.1.4.1.1.2",
		TransferSyntaxUID: "1.2.840.10008.1.2.1", Modality: "CT", InstanceNumber: fmt.Sprint(i), SeriesNumber: fmt.Sprint(se),
		SeriesDescription: fmt.Sprintf("series %d", se), StudyDate: "2026-01-15", StudyTime: "09:30:00", StudyDescription: "CT HEAD",
		AccessionNumber: "ACC1", PatientID: "PID-1", PatientName: "Doe^Jane", PatientBirthDate: "1970-01-01", PatientSex: "F",
		ObjectKey: "incoming/" + sop + "-" + sha + ".dcm", MetadataKey: "metadata/" + sop + ".json", Size: 100, ContentIdentity: sha,
		CallingAE: "MOD1", ReceivedAt: T0.Add(at), IndexedAt: T0.Add(at + time.Second),
	}
}

func studyUID(s int) string { return fmt.Sprintf("%s%d", suiteRoot, s) }

var cmpOpts = cmp.Options{cmpopts.EquateEmpty()}

func upsert(t *testing.T, ix pipeline.IndexStore, in pipeline.InstanceRecord, want pipeline.UpsertOutcome) pipeline.UpsertResult {
	t.Helper()
	r, err := ix.UpsertInstance(context.Background(), in)
	if err != nil {
		t.Fatalf("upsert %s: %v", in.SOPInstanceUID, err)
	}
	if r.Outcome != want {
		t.Fatalf("upsert %s %s: outcome %v, want %v", in.SOPInstanceUID, in.ContentIdentity, r.Outcome, want)
	}
	return r
}

func getStudy(t *testing.T, ix pipeline.IndexStore, uid string) pipeline.StudyDetail {
	t.Helper()
	d, err := ix.GetStudy(context.Background(), uid)
	if err != nil {
		t.Fatalf("get study: %v", err)
	}
	return d
}

// counts is what the suite checks of a summary's counters.
type counts struct {
	Instances, Conflicts, Series int
	Bytes, Revision              int64
}

func countsOf(s pipeline.StudySummary) counts {
	return counts{s.InstanceCount, s.ConflictCount, s.SeriesCount, s.TotalBytes, s.Revision}
}

// checkStudy compares the study's counters with want, in the upsert's
// result and in GetStudy, and checks GetStudy's series and instances add
// up to the same.
func checkStudy(t *testing.T, ix pipeline.IndexStore, got pipeline.StudySummary, want counts) pipeline.StudyDetail {
	t.Helper()
	if d := cmp.Diff(want, countsOf(got)); d != "" {
		t.Errorf("upsert result's counters (-want +got):\n%s", d)
	}
	d := getStudy(t, ix, got.StudyInstanceUID)
	if diff := cmp.Diff(want, countsOf(d.StudySummary)); diff != "" {
		t.Errorf("GetStudy's counters (-want +got):\n%s", diff)
	}
	var fromSeries counts
	fromSeries.Series = len(d.Series)
	for _, se := range d.Series {
		fromSeries.Instances += se.InstanceCount
		fromSeries.Bytes += se.TotalBytes
	}
	for _, in := range d.Instances {
		if in.Conflict {
			fromSeries.Conflicts++
		}
	}
	fromSeries.Revision = want.Revision
	if diff := cmp.Diff(want, fromSeries); diff != "" {
		t.Errorf("GetStudy's series and instances add up to (-want +got):\n%s", diff)
	}
	return d
}

func testNew(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	in1 := Record(1, 10, 1, "aa", 0)
	r := upsert(t, ix, in1, pipeline.InstanceNew)
	if diff := cmp.Diff(in1, r.Instance, cmpOpts); diff != "" {
		t.Errorf("result's instance (-want +got):\n%s", diff)
	}
	want := pipeline.StudySummary{
		StudyInstanceUID: studyUID(1), PatientID: "PID-1", PatientName: "Doe^Jane", PatientBirthDate: "1970-01-01",
		PatientSex: "F", StudyDate: "2026-01-15", StudyTime: "09:30:00", StudyDescription: "CT HEAD", AccessionNumber: "ACC1",
		Modalities: []string{"CT"}, CallingAEs: []string{"MOD1"}, SeriesCount: 1, InstanceCount: 1, TotalBytes: 100,
		FirstReceived: T0, LastReceived: T0, LastSent: T0, LastActivity: T0.Add(time.Second), Revision: 1,
	}
	if diff := cmp.Diff(want, r.Study, cmpOpts); diff != "" {
		t.Errorf("study after the first instance (-want +got):\n%s", diff)
	}
	// A second series, numbered 9, sorts before series 10.
	in2 := Record(1, 9, 1, "bb", 2*time.Second)
	in2.Modality, in2.CallingAE = "MR", "MOD2"
	r = upsert(t, ix, in2, pipeline.InstanceNew)
	in3 := Record(1, 10, 2, "cc", time.Second)
	r = upsert(t, ix, in3, pipeline.InstanceNew)
	if !slices.Equal(r.Study.Modalities, []string{"CT", "MR"}) || !slices.Equal(r.Study.CallingAEs, []string{"MOD1", "MOD2"}) {
		t.Errorf("modalities %v, calling AEs %v", r.Study.Modalities, r.Study.CallingAEs)
	}
	d := checkStudy(t, ix, r.Study, counts{Instances: 3, Series: 2, Bytes: 300, Revision: 3})
	wantSeries := []pipeline.SeriesSummary{
		{SeriesInstanceUID: in2.SeriesInstanceUID, Modality: "MR", SeriesNumber: "9", SeriesDescription: "series 9",
			InstanceCount: 1, TotalBytes: 100, FirstReceived: T0.Add(2 * time.Second), LastReceived: T0.Add(2 * time.Second)},
		{SeriesInstanceUID: in1.SeriesInstanceUID, Modality: "CT", SeriesNumber: "10", SeriesDescription: "series 10",
			InstanceCount: 2, TotalBytes: 200, FirstReceived: T0, LastReceived: T0.Add(time.Second)},
	}
	if diff := cmp.Diff(wantSeries, d.Series, cmpOpts); diff != "" {
		t.Errorf("series (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]pipeline.InstanceRecord{in2, in1, in3}, d.Instances, cmpOpts); diff != "" {
		t.Errorf("instances (-want +got):\n%s", diff)
	}
	if _, err := ix.GetStudy(context.Background(), studyUID(99)); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("GetStudy of an unknown study = %v, want ErrNotFound", err)
	}
}

func testDuplicate(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	in := Record(1, 1, 1, "aa", 0)
	first := upsert(t, ix, in, pipeline.InstanceNew)
	// The same content again, later and under another key: nothing moves,
	// not even the study's activity, but when the study was last sent
	// (testLastSent).
	again := in
	again.ReceivedAt, again.IndexedAt, again.ObjectKey = T0.Add(time.Hour), T0.Add(time.Hour), "incoming/other.dcm"
	r := upsert(t, ix, again, pipeline.InstanceDuplicate)
	want := first.Study
	want.LastSent = again.ReceivedAt
	if diff := cmp.Diff(want, r.Study, cmpOpts); diff != "" {
		t.Errorf("study moved on a duplicate (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(in, r.Instance, cmpOpts); diff != "" {
		t.Errorf("a duplicate reports the record indexed first (-want +got):\n%s", diff)
	}
	d := checkStudy(t, ix, r.Study, counts{Instances: 1, Series: 1, Bytes: 100, Revision: 1})
	// The resend is another transfer (pipeline.Resent: its key is not the
	// indexed one) and its own audit record says so; the instance row
	// stays the first transfer's: key, receipt, sender.
	if diff := cmp.Diff([]pipeline.InstanceRecord{in}, d.Instances, cmpOpts); diff != "" {
		t.Errorf("the instance row after a resend (-want +got):\n%s", diff)
	}
	if got, err := ix.Instances(context.Background(), in.SOPInstanceUID); err != nil || !cmp.Equal([]pipeline.InstanceRecord{in}, got, cmpOpts) {
		t.Errorf("Instances after a resend = %+v, %v", got, err)
	}
	// A redelivery of the first (its key) reports that key: the same
	// transfer, which writes nothing new.
	redelivered := in
	redelivered.IndexedAt = T0.Add(2 * time.Hour)
	if r := upsert(t, ix, redelivered, pipeline.InstanceDuplicate); r.Instance.ObjectKey != in.ObjectKey || r.Instance.ReceivedAt != in.ReceivedAt {
		t.Errorf("a redelivery reports %s received %v, want the first's %s %v", r.Instance.ObjectKey, r.Instance.ReceivedAt, in.ObjectKey, in.ReceivedAt)
	}
}

func testConflictSameStudy(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	in := Record(1, 1, 1, "aa", 0)
	upsert(t, ix, in, pipeline.InstanceNew)
	other := Record(1, 1, 1, "bb", time.Second)
	other.Size = 50
	r := upsert(t, ix, other, pipeline.InstanceConflict)
	if !r.Instance.Conflict {
		t.Error("the conflicting record is not flagged Conflict")
	}
	d := checkStudy(t, ix, r.Study, counts{Instances: 1, Conflicts: 1, Series: 1, Bytes: 150, Revision: 2})
	if len(d.Instances) != 2 || d.Instances[0].Conflict || !d.Instances[1].Conflict {
		t.Errorf("records = %+v, want the first and the conflicting one", d.Instances)
	}
	r = upsert(t, ix, other, pipeline.InstanceDuplicate)
	if !r.Instance.Conflict {
		t.Error("a resend of the conflicting content reports it unflagged")
	}
	// Conflict is the index's verdict, whatever the SCP flagged.
	flagged := Record(1, 1, 2, "cc", 2*time.Second)
	flagged.Conflict = true
	if r = upsert(t, ix, flagged, pipeline.InstanceNew); r.Instance.Conflict {
		t.Error("a new instance the SCP flagged is kept as a conflict")
	}
	checkStudy(t, ix, r.Study, counts{Instances: 2, Conflicts: 1, Series: 1, Bytes: 250, Revision: 3})
}

// testOverwrittenKey: other content under the object key of a content
// indexed (the key overwritten after the first was indexed: S3 lets any
// caller that may PutObject do it, the SCP never does) is a conflict like
// any other content under the SOP Instance UID, not a replacement: the
// first content stays indexed as it was (new, its row unchanged, naming the
// key and its own documents), the second is indexed beside it flagged,
// under the same key with its own metadata key (the pipeline names each
// content's documents apart: pipeline.MetadataKeys), and a redelivery of
// either (the same key, either content) is a duplicate that reports its
// own record and moves nothing. See docs/pipeline.md, "Duplicates".
func testOverwrittenKey(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	ctx := context.Background()
	first := Record(1, 1, 1, "aa", 0)
	upsert(t, ix, first, pipeline.InstanceNew)
	over := Record(1, 1, 1, "bb", time.Minute)
	over.ObjectKey, over.MetadataKey, over.Size = first.ObjectKey, strings.TrimSuffix(first.MetadataKey, ".json")+".bb.json", 70
	r := upsert(t, ix, over, pipeline.InstanceConflict)
	if !r.Instance.Conflict || r.Instance.ObjectKey != first.ObjectKey {
		t.Errorf("the overwriting content: conflict %v, key %q; want a conflict under the key", r.Instance.Conflict, r.Instance.ObjectKey)
	}
	want := counts{Instances: 1, Conflicts: 1, Series: 1, Bytes: 170, Revision: 2}
	checkStudy(t, ix, r.Study, want)
	wantRows := []pipeline.InstanceRecord{first, r.Instance}
	for _, in := range []pipeline.InstanceRecord{over, first} {
		again := upsert(t, ix, in, pipeline.InstanceDuplicate)
		if again.Instance.ContentIdentity != in.ContentIdentity || again.Instance.Conflict != (in.ContentIdentity == "bb") {
			t.Errorf("a redelivery of %s reports %s (conflict %v)", in.ContentIdentity, again.Instance.ContentIdentity, again.Instance.Conflict)
		}
		if !again.Study.LastSent.Equal(over.ReceivedAt) {
			t.Errorf("a redelivery of %s moved lastSent to %v", in.ContentIdentity, again.Study.LastSent)
		}
		checkStudy(t, ix, again.Study, want)
	}
	d := getStudy(t, ix, studyUID(1))
	if diff := cmp.Diff(wantRows, d.Instances, cmpOpts); diff != "" {
		t.Errorf("the study's rows (-want +got):\n%s", diff)
	}
	got, err := ix.Instances(ctx, first.SOPInstanceUID)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b pipeline.InstanceRecord) int { return strings.Compare(a.ContentIdentity, b.ContentIdentity) })
	if diff := cmp.Diff(wantRows, got, cmpOpts); diff != "" {
		t.Errorf("Instances (-want +got):\n%s", diff)
	}
}

func testConflictOtherStudy(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	in := Record(1, 1, 1, "aa", 0)
	first := upsert(t, ix, in, pipeline.InstanceNew)
	// The same SOP Instance UID with other content naming another study
	// (a study split or merged at the PACS, a UID collision): a conflict,
	// indexed in the study it names. See pipeline.ContentOutcome.
	moved := in
	moved.StudyInstanceUID, moved.SeriesInstanceUID, moved.ContentIdentity = studyUID(2), studyUID(2)+".1", "bb"
	r := upsert(t, ix, moved, pipeline.InstanceConflict)
	if !r.Instance.Conflict || r.Study.StudyInstanceUID != studyUID(2) {
		t.Errorf("result = %+v", r)
	}
	checkStudy(t, ix, r.Study, counts{Conflicts: 1, Series: 1, Bytes: 100, Revision: 1})
	if d := getStudy(t, ix, studyUID(1)); !cmp.Equal(first.Study, d.StudySummary, cmpOpts) {
		t.Errorf("the first study changed: %+v", d.StudySummary)
	}
	upsert(t, ix, moved, pipeline.InstanceDuplicate)
}

func testSameContentOtherStudy(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	ctx := context.Background()
	in := Record(1, 1, 1, "aa", 0)
	first := upsert(t, ix, in, pipeline.InstanceNew)
	// The first content's SOP Instance UID and identity, naming another
	// study: other bytes (the identity is a checksum of bytes holding the
	// Study Instance UID), so a conflict, indexed in the study it names. A
	// study never loses an instance to another's index, and the instance
	// is not counted new twice across the archive. See
	// pipeline.ContentOutcome.
	moved := in
	moved.StudyInstanceUID, moved.SeriesInstanceUID = studyUID(2), studyUID(2)+".1"
	moved.ReceivedAt, moved.IndexedAt = T0.Add(time.Minute), T0.Add(time.Minute+time.Second)
	r := upsert(t, ix, moved, pipeline.InstanceConflict)
	if !r.Instance.Conflict || r.Study.StudyInstanceUID != studyUID(2) || r.Instance.StudyInstanceUID != studyUID(2) {
		t.Errorf("result = %+v", r)
	}
	checkStudy(t, ix, r.Study, counts{Conflicts: 1, Series: 1, Bytes: 100, Revision: 1})
	if d := getStudy(t, ix, studyUID(1)); !cmp.Equal(first.Study, d.StudySummary, cmpOpts) {
		t.Errorf("the first study changed: %+v", d.StudySummary)
	}
	// Each is a duplicate in its own study from then on.
	if again := upsert(t, ix, moved, pipeline.InstanceDuplicate); again.Study.StudyInstanceUID != studyUID(2) {
		t.Errorf("a duplicate in the second study reports study %s", again.Study.StudyInstanceUID)
	}
	if again := upsert(t, ix, in, pipeline.InstanceDuplicate); again.Study.StudyInstanceUID != studyUID(1) {
		t.Errorf("a duplicate in the first study reports study %s", again.Study.StudyInstanceUID)
	}
	got, err := ix.Instances(ctx, in.SOPInstanceUID)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b pipeline.InstanceRecord) int { return strings.Compare(a.StudyInstanceUID, b.StudyInstanceUID) })
	if d := cmp.Diff([]pipeline.InstanceRecord{first.Instance, r.Instance}, got, cmpOpts); d != "" {
		t.Errorf("Instances (-want +got):\n%s", d)
	}
}

func testFillIn(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	// The first instance lacks what later ones have: Patient ID, Patient's
	// Birth Date and Sex (type 2, may be empty) and the study description.
	f1 := Record(1, 1, 1, "aa", 0)
	f1.PatientID, f1.PatientBirthDate, f1.PatientSex, f1.StudyDescription = "", "", "", ""
	r := upsert(t, ix, f1, pipeline.InstanceNew)
	if r.Study.PatientBirthDate != "" || r.Study.PatientID != "" {
		t.Fatalf("study = %+v", r.Study)
	}
	// The same patient as another system writes the name: no mismatch.
	f2 := Record(1, 1, 2, "bb", time.Second)
	f2.PatientName = "DOE^JANE^^"
	r = upsert(t, ix, f2, pipeline.InstanceNew)
	if len(r.Instance.Findings) != 0 || len(r.Study.Findings) != 0 {
		t.Errorf("findings %v / %v on the same patient written otherwise", r.Instance.Findings, r.Study.Findings)
	}
	// First non-empty values stay.
	f3 := Record(1, 1, 3, "cc", 2*time.Second)
	f3.StudyDescription, f3.AccessionNumber, f3.PatientSex = "OTHER", "ACC9", "O"
	r = upsert(t, ix, f3, pipeline.InstanceNew)
	want := counts{Instances: 3, Series: 1, Bytes: 300, Revision: 3}
	checkStudy(t, ix, r.Study, want)
	got := getStudy(t, ix, studyUID(1)).StudySummary
	type attrs struct{ ID, Name, Birth, Sex, Description, Accession string }
	if diff := cmp.Diff(attrs{"PID-1", "Doe^Jane", "1970-01-01", "F", "CT HEAD", "ACC1"},
		attrs{got.PatientID, got.PatientName, got.PatientBirthDate, got.PatientSex, got.StudyDescription, got.AccessionNumber}); diff != "" {
		t.Errorf("study attributes (-want +got):\n%s", diff)
	}
}

// testPersonNameForm: Patient's Name is kept in one form whatever the
// character set it was decoded from: each component group without
// trailing empty components, trailing empty groups dropped, and a name of
// delimiters alone (an ISO 2022 sender's "=^^^^=" as a Latin-1 one's
// "^^^^") no name, which neither shows in the study nor disagrees with
// the name a later instance brings.
func testPersonNameForm(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	for i, tt := range []struct{ sent, kept string }{
		{"^^^^", ""},
		{"=^^^^=", ""},
		{"^^=^^^^=^", ""},
		{"Doe^John^^^", "Doe^John"},
		{"Doe^John^^Dr.^", "Doe^John^^Dr."},
		{"Yamada^Tarou=山田^太郎=", "Yamada^Tarou=山田^太郎"},
		{"Yamada^Tarou^^^=山田^太郎^^^=やまだ^たろう^", "Yamada^Tarou=山田^太郎=やまだ^たろう"},
		{"=山田^太郎", "=山田^太郎"},
		{"^^^^=山田^太郎^^=", "=山田^太郎"},
		{"Wang^XiaoDong=王^小東=", "Wang^XiaoDong=王^小東"},
		{"Buc^Jérôme^^^", "Buc^Jérôme"},
	} {
		in := Record(100+i, 1, 1, "aa", 0)
		in.PatientName = tt.sent
		r := upsert(t, ix, in, pipeline.InstanceNew)
		got := getStudy(t, ix, in.StudyInstanceUID)
		var listed string
		if len(got.Instances) == 1 {
			listed = got.Instances[0].PatientName
		}
		if r.Instance.PatientName != tt.kept || r.Study.PatientName != tt.kept || got.PatientName != tt.kept || listed != tt.kept {
			t.Errorf("%q kept as %q (instance), %q (study), %q (GetStudy), %q (GetStudy's instance); want %q",
				tt.sent, r.Instance.PatientName, r.Study.PatientName, got.PatientName, listed, tt.kept)
		}
	}
	// A study whose first instance named no one takes the name of the
	// next, with no mismatch.
	first := Record(1, 1, 1, "aa", 0)
	first.PatientName = "=^^^^="
	upsert(t, ix, first, pipeline.InstanceNew)
	next := Record(1, 1, 2, "bb", time.Second)
	r := upsert(t, ix, next, pipeline.InstanceNew)
	if len(r.Instance.Findings) != 0 || len(r.Study.Findings) != 0 || r.Study.PatientName != "Doe^Jane" {
		t.Errorf("after a name of delimiters alone: study name %q, findings %v / %v", r.Study.PatientName, r.Instance.Findings, r.Study.Findings)
	}
	// A study indexed before names took this form holds a name of
	// delimiters alone as sent: still no name, which the next instance's
	// name replaces, with no mismatch.
	if h.StoreName == nil {
		t.Skip("no StoreName: the harness cannot write a study's name as stored before")
	}
	for i, stored := range []string{"^^^^", "=^^^^="} {
		old := Record(200+i, 1, 1, "aa", 0)
		old.PatientName = ""
		upsert(t, ix, old, pipeline.InstanceNew)
		h.StoreName(t, ix, old.StudyInstanceUID, stored)
		next := Record(200+i, 1, 2, "bb", time.Second)
		r := upsert(t, ix, next, pipeline.InstanceNew)
		got := getStudy(t, ix, next.StudyInstanceUID)
		if len(r.Instance.Findings) != 0 || len(r.Study.Findings) != 0 || r.Study.PatientName != "Doe^Jane" || got.PatientName != "Doe^Jane" {
			t.Errorf("after a stored %q: study name %q (GetStudy %q), findings %v / %v",
				stored, r.Study.PatientName, got.PatientName, r.Instance.Findings, r.Study.Findings)
		}
	}
}

// mismatch lists tags sorted, as findingTags returns them.
func mismatch(tags ...string) []string { return slices.Sorted(slices.Values(tags)) }

// findingTags returns the sorted tags of the findings with code; a finding
// of another severity than warning shows as "!severity".
func findingTags(fs []pipeline.Finding, code string) []string {
	var out []string
	for _, f := range fs {
		if f.Code == code {
			out = append(out, f.Tag)
			if f.Severity != pipeline.SeverityWarning {
				out = append(out, "!"+string(f.Severity))
			}
		}
	}
	slices.Sort(out)
	return out
}

func testPatientMismatch(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	const idTag, nameTag, birthTag = "(0010,0020)", "(0010,0010)", "(0010,0030)"
	// The corpus's mixed/ set: a CT of PCT0001 and an MR of PMIX001 share
	// one Study Instance UID.
	ct := Record(1, 1, 1, "aa", 0)
	ct.PatientID, ct.PatientName, ct.Findings = "PCT0001", "Bench^CT", []pipeline.Finding{{Code: pipeline.CodeEmptyType2, Severity: pipeline.SeverityWarning, Tag: "(0008,0020)", Message: "type 2 attribute empty"}}
	upsert(t, ix, ct, pipeline.InstanceNew)
	mr := Record(1, 2, 1, "bb", time.Second)
	mr.PatientID, mr.PatientName, mr.Modality = "PMIX001", "Bench^Mixed", "MR"
	r := upsert(t, ix, mr, pipeline.InstanceNew)
	if diff := cmp.Diff(mismatch(idTag, nameTag), findingTags(r.Instance.Findings, pipeline.CodePatientMismatch), cmpOpts); diff != "" {
		t.Errorf("the MR's findings (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(mismatch(idTag, nameTag), findingTags(r.Study.Findings, pipeline.CodePatientMismatch), cmpOpts); diff != "" {
		t.Errorf("the study's findings (-want +got):\n%s", diff)
	}
	if r.Study.PatientID != "PCT0001" || r.Study.PatientName != "Bench^CT" {
		t.Errorf("the study's patient became %s %s; it keeps the first", r.Study.PatientID, r.Study.PatientName)
	}
	// Another MR of the other patient, a CT with another birth date, and a
	// CT without patient name or birth date (nothing to disagree on).
	mr2 := mr
	mr2.SOPInstanceUID, mr2.ContentIdentity = mr.SOPInstanceUID+"0", "cc"
	r = upsert(t, ix, mr2, pipeline.InstanceNew)
	if len(findingTags(r.Instance.Findings, pipeline.CodePatientMismatch)) != 2 || len(r.Study.Findings) != 2 {
		t.Errorf("second MR: %v, study %v", r.Instance.Findings, r.Study.Findings)
	}
	born := ct
	born.SOPInstanceUID, born.ContentIdentity, born.PatientBirthDate, born.Findings = ct.SOPInstanceUID+"0", "dd", "1980-02-02", nil
	r = upsert(t, ix, born, pipeline.InstanceNew)
	if diff := cmp.Diff(mismatch(birthTag), findingTags(r.Instance.Findings, pipeline.CodePatientMismatch), cmpOpts); diff != "" {
		t.Errorf("birth date findings (-want +got):\n%s", diff)
	}
	bare := ct
	bare.SOPInstanceUID, bare.ContentIdentity, bare.PatientName, bare.PatientBirthDate, bare.Findings = ct.SOPInstanceUID+"1", "ee", "", "", nil
	if r = upsert(t, ix, bare, pipeline.InstanceNew); len(r.Instance.Findings) != 0 {
		t.Errorf("an instance with nothing to disagree on got %v", r.Instance.Findings)
	}
	d := checkStudy(t, ix, r.Study, counts{Instances: 5, Series: 2, Bytes: 500, Revision: 5})
	if diff := cmp.Diff(mismatch(birthTag, nameTag, idTag), findingTags(d.Findings, pipeline.CodePatientMismatch), cmpOpts); diff != "" {
		t.Errorf("the study's findings (-want +got):\n%s", diff)
	}
	if !d.PatientMismatch() {
		t.Error("PatientMismatch() is false")
	}
	byUID := map[string][]string{}
	for _, in := range d.Instances {
		byUID[in.SOPInstanceUID] = findingTags(in.Findings, pipeline.CodePatientMismatch)
		if in.SOPInstanceUID == ct.SOPInstanceUID && !pipeline.HasFinding(in.Findings, pipeline.CodeEmptyType2) {
			t.Errorf("the CT lost its own finding: %v", in.Findings)
		}
	}
	wantByUID := map[string][]string{ct.SOPInstanceUID: nil, mr.SOPInstanceUID: mismatch(idTag, nameTag), mr2.SOPInstanceUID: mismatch(idTag, nameTag),
		born.SOPInstanceUID: {birthTag}, bare.SOPInstanceUID: nil}
	if diff := cmp.Diff(wantByUID, byUID, cmpOpts); diff != "" {
		t.Errorf("GetStudy's instance findings (-want +got):\n%s", diff)
	}
	// A redelivery reports the finding again, for its audit record and event.
	if r = upsert(t, ix, mr, pipeline.InstanceDuplicate); len(findingTags(r.Instance.Findings, pipeline.CodePatientMismatch)) != 2 {
		t.Errorf("duplicate of the MR reports findings %v", r.Instance.Findings)
	}
}

func testReceivedOutOfOrder(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	at := func(in pipeline.InstanceRecord, indexed time.Duration) pipeline.InstanceRecord {
		in.IndexedAt = T0.Add(indexed)
		return in
	}
	upsert(t, ix, at(Record(1, 1, 1, "aa", 0), time.Minute), pipeline.InstanceNew)
	// Received earlier, indexed later (a backed-up queue).
	r := upsert(t, ix, at(Record(1, 1, 2, "bb", -time.Minute), 2*time.Minute), pipeline.InstanceNew)
	r = upsert(t, ix, at(Record(1, 2, 1, "cc", time.Minute), time.Minute+time.Second), pipeline.InstanceNew)
	type times struct{ First, Last, Activity time.Time }
	want := times{T0.Add(-time.Minute), T0.Add(time.Minute), T0.Add(2 * time.Minute)}
	if diff := cmp.Diff(want, times{r.Study.FirstReceived, r.Study.LastReceived, r.Study.LastActivity}); diff != "" {
		t.Errorf("received and activity times (-want +got):\n%s", diff)
	}
	// A duplicate delivery is no activity: a retried message must not keep
	// postponing the announcement.
	r = upsert(t, ix, at(Record(1, 1, 1, "aa", time.Hour), time.Hour), pipeline.InstanceDuplicate)
	if diff := cmp.Diff(want, times{r.Study.FirstReceived, r.Study.LastReceived, r.Study.LastActivity}); diff != "" {
		t.Errorf("after a duplicate (-want +got):\n%s", diff)
	}
	d := checkStudy(t, ix, r.Study, counts{Instances: 3, Series: 2, Bytes: 300, Revision: 3})
	if s := d.Series[0]; !s.FirstReceived.Equal(T0.Add(-time.Minute)) || !s.LastReceived.Equal(T0) {
		t.Errorf("series 1 received %v..%v", s.FirstReceived, s.LastReceived)
	}
}

// testInterrupted crashes an upsert after each of its storage calls in
// turn, then its retry after each of its own, retries once more on a
// healthy index and checks that the study is as if the first attempt had
// completed: no count lost, none doubled, the findings kept.
func testInterrupted(t *testing.T, h IndexHarness) {
	ctx := context.Background()
	mixed := Record(1, 2, 1, "bb", time.Second)
	mixed.PatientID = "PID-2"
	conflict := Record(2, 1, 1, "cc", time.Second) // study 1's first SOP Instance UID, other content, another study
	conflict.SOPInstanceUID = Record(1, 1, 1, "", 0).SOPInstanceUID
	cases := []struct {
		name    string
		in      pipeline.InstanceRecord
		outcome pipeline.UpsertOutcome
		want    counts
	}{
		{"new instance, new series, other patient", mixed, pipeline.InstanceNew, counts{Instances: 2, Series: 2, Bytes: 200, Revision: 2}},
		{"conflict in another study", conflict, pipeline.InstanceConflict, counts{Conflicts: 1, Series: 1, Bytes: 100, Revision: 1}},
	}
	// crashed reports whether an upsert on an index crashing after call n
	// was cut short (false: it makes fewer than n calls).
	crashed := func(ix pipeline.IndexStore, in pipeline.InstanceRecord, n int) bool {
		_, err := h.Crash(t, ix, n).UpsertInstance(ctx, in)
		return err != nil
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runs := 0
			for n := 1; n <= 20; n++ {
				for m := 0; m <= 20; m++ {
					ix := h.New(t)
					upsert(t, ix, Record(1, 1, 1, "aa", 0), pipeline.InstanceNew)
					if !crashed(ix, tc.in, n) {
						if n == 1 {
							t.Fatal("the crash hook never fired")
						}
						t.Logf("crashed the upsert after each of its %d calls, and its retries after each of theirs: %d runs", n-1, runs)
						return
					}
					if m == 0 {
						checkStableListed(t, ix, fmt.Sprintf("crash after call %d", n))
					}
					if m > 0 && !crashed(ix, tc.in, m) {
						break
					}
					runs++
					where := fmt.Sprintf("crash after call %d, retry's crash after call %d", n, m)
					r, err := ix.UpsertInstance(ctx, tc.in)
					if err != nil {
						t.Fatalf("%s: retry: %v", where, err)
					}
					if r.Outcome != tc.outcome && r.Outcome != pipeline.InstanceDuplicate {
						t.Errorf("%s: retry's outcome %v, want %v or duplicate", where, r.Outcome, tc.outcome)
					}
					if r.Instance.Conflict != (tc.outcome == pipeline.InstanceConflict) ||
						(tc.in.PatientID == "PID-2") != pipeline.HasFinding(r.Instance.Findings, pipeline.CodePatientMismatch) {
						t.Errorf("%s: retry reports the instance as %+v", where, r.Instance)
					}
					d := checkStudy(t, ix, r.Study, tc.want)
					if (tc.in.PatientID == "PID-2") != d.PatientMismatch() {
						t.Errorf("%s: study findings %v", where, d.Findings)
					}
					again := upsert(t, ix, tc.in, pipeline.InstanceDuplicate)
					checkStudy(t, ix, again.Study, tc.want)
					listed, err := ix.Instances(ctx, tc.in.SOPInstanceUID)
					if err != nil {
						t.Fatal(err)
					}
					if !slices.ContainsFunc(listed, func(in pipeline.InstanceRecord) bool {
						return in.ContentIdentity == tc.in.ContentIdentity && in.StudyInstanceUID == tc.in.StudyInstanceUID
					}) {
						t.Errorf("%s: Instances leaves the retried content out: %d listed", where, len(listed))
					}
				}
			}
			t.Fatal("the upsert still crashes after 20 calls")
		})
	}
}

// checkStableListed checks that every study StableStudies offers for
// announcement lists each content its counters count: a study announced
// with a counted content missing from its listing (an upsert cut short
// between its count and its instance record) was never announced again
// once the retry listed it.
func checkStableListed(t *testing.T, ix pipeline.IndexStore, where string) {
	t.Helper()
	stable, err := ix.StableStudies(context.Background(), T0.Add(24*time.Hour), 100)
	if err != nil {
		t.Fatalf("%s: StableStudies: %v", where, err)
	}
	for _, st := range stable {
		d := getStudy(t, ix, st.StudyInstanceUID)
		if counted := d.InstanceCount + d.ConflictCount; len(d.Instances) != counted {
			t.Errorf("%s: study %s offered for announcement with %d of its %d counted contents listed", where, st.StudyInstanceUID, len(d.Instances), counted)
		}
	}
}

func testConcurrent(t *testing.T, h IndexHarness) {
	ctx := context.Background()
	const n = 8
	run := func(t *testing.T, ix pipeline.IndexStore, ins []pipeline.InstanceRecord) []pipeline.UpsertResult {
		out := make([]pipeline.UpsertResult, len(ins))
		var wg sync.WaitGroup
		for i, in := range ins {
			wg.Go(func() {
				var err error
				if out[i], err = ix.UpsertInstance(ctx, in); err != nil {
					t.Errorf("upsert %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		return out
	}
	t.Run("same content", func(t *testing.T) {
		ix := h.New(t)
		fresh := 0
		for _, r := range run(t, ix, slices.Repeat([]pipeline.InstanceRecord{Record(1, 1, 1, "aa", 0)}, n)) {
			if r.Outcome != pipeline.InstanceDuplicate {
				fresh++
			}
		}
		if fresh != 1 {
			t.Errorf("%d deliveries counted the content, want 1", fresh)
		}
		r := upsert(t, ix, Record(1, 1, 1, "aa", 0), pipeline.InstanceDuplicate)
		checkStudy(t, ix, r.Study, counts{Instances: 1, Series: 1, Bytes: 100, Revision: 1})
	})
	t.Run("same content, other keys", func(t *testing.T) {
		// The same data set from several senders at once (a PACS and a
		// VNA forwarding one study), each transfer under its own key: one
		// counts it, the row is its record, and every other is told the
		// content is held under that key, a resend (pipeline.Resent) with
		// an audit record of its own, not the counted transfer again.
		ix := h.New(t)
		ins := make([]pipeline.InstanceRecord, n)
		for i := range ins {
			ins[i] = Record(1, 1, 1, "aa", time.Duration(i)*time.Second)
			ins[i].ObjectKey = fmt.Sprintf("%s.conflict-%016x.dcm", ins[i].ObjectKey, i)
		}
		out := run(t, ix, ins)
		if fresh := len(out) - countDuplicates(out); fresh != 1 {
			t.Errorf("%d transfers counted the content, want 1", fresh)
		}
		counted := checkResendsName(t, ix, ins, out)
		var again []pipeline.UpsertResult
		for _, in := range ins {
			again = append(again, upsert(t, ix, in, pipeline.InstanceDuplicate))
		}
		if c := checkResendsName(t, ix, ins, again); c != counted {
			t.Errorf("the row named %s, then %s after redeliveries", counted, c)
		}
		d := checkStudy(t, ix, again[0].Study, counts{Instances: 1, Series: 1, Bytes: 100, Revision: 1})
		if last := ins[n-1].ReceivedAt; !d.LastSent.Equal(last) {
			t.Errorf("last sent %v, want the latest transfer's %v", d.LastSent, last)
		}
	})
	t.Run("one new study, two patients", func(t *testing.T) {
		ix := h.New(t)
		var ins []pipeline.InstanceRecord
		for i := range n {
			in := Record(1, 1+i%2, i, fmt.Sprint("c", i), time.Duration(i)*time.Second)
			if i%2 == 1 {
				in.PatientID = "PID-2"
			}
			ins = append(ins, in)
		}
		run(t, ix, ins)
		d := getStudy(t, ix, studyUID(1))
		checkStudy(t, ix, d.StudySummary, counts{Instances: n, Series: 2, Bytes: 100 * n, Revision: n})
		if !d.FirstReceived.Equal(T0) || !d.LastReceived.Equal(T0.Add((n-1)*time.Second)) || !d.LastActivity.Equal(T0.Add(n*time.Second)) {
			t.Errorf("received %v..%v, activity %v", d.FirstReceived, d.LastReceived, d.LastActivity)
		}
		// Whichever patient came first, the instances of the other one,
		// and only they, carry the finding.
		if !d.PatientMismatch() {
			t.Errorf("study findings %v", d.Findings)
		}
		for _, in := range d.Instances {
			if flagged := pipeline.HasFinding(in.Findings, pipeline.CodePatientMismatch); flagged != (in.PatientID != d.PatientID) {
				t.Errorf("instance of %s in a study of %s: flagged %v", in.PatientID, d.PatientID, flagged)
			}
		}
	})
}

func testPendingAnnounced(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	ctx := context.Background()
	stable := func(quietSince time.Time, limit int) []pipeline.StudySummary {
		t.Helper()
		out, err := ix.StableStudies(ctx, quietSince, limit)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	uids := studyUIDs
	in := Record(1, 1, 1, "aa", 0) // indexed at T0+1s
	upsert(t, ix, in, pipeline.InstanceNew)
	if got := stable(T0, 10); len(got) != 0 {
		t.Errorf("stable before its last activity: %v", uids(got))
	}
	got := stable(T0.Add(time.Second), 10)
	if len(got) != 1 || got[0].Revision != 1 || got[0].AnnouncedVersion != 0 {
		t.Fatalf("stable = %+v", got)
	}
	if err := ix.MarkAnnounced(ctx, studyUID(1), 1, 2, T0); !errors.Is(err, pipeline.ErrConditionFailed) {
		t.Errorf("skipping version 1: %v, want ErrConditionFailed", err)
	}
	if err := ix.MarkAnnounced(ctx, studyUID(1), 1, 1, T0); err != nil {
		t.Fatal(err)
	}
	if err := ix.MarkAnnounced(ctx, studyUID(1), 1, 1, T0); !errors.Is(err, pipeline.ErrConditionFailed) {
		t.Errorf("announcing version 1 twice: %v, want ErrConditionFailed", err)
	}
	if err := ix.MarkAnnounced(ctx, studyUID(99), 1, 1, T0); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("announcing an unknown study: %v, want ErrNotFound", err)
	}
	if got := stable(T0.Add(time.Hour), 10); len(got) != 0 {
		t.Errorf("still pending after the announcement: %v", uids(got))
	}
	upsert(t, ix, in, pipeline.InstanceDuplicate)
	if got := stable(T0.Add(time.Hour), 10); len(got) != 0 {
		t.Errorf("a duplicate made the study pending: %v", uids(got))
	}
	// A new instance makes it pending again, for Study Updated; one that
	// arrives between the listing and the mark keeps it pending.
	upsert(t, ix, Record(1, 1, 2, "bb", time.Minute), pipeline.InstanceNew)
	got = stable(T0.Add(time.Hour), 10)
	if len(got) != 1 || got[0].Revision != 2 || got[0].AnnouncedVersion != 1 || got[0].AnnouncedRevision != 1 {
		t.Fatalf("stable after a late instance = %+v", got)
	}
	upsert(t, ix, Record(1, 1, 3, "cc", 2*time.Minute), pipeline.InstanceNew)
	if err := ix.MarkAnnounced(ctx, studyUID(1), 2, 2, T0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got = stable(T0.Add(time.Hour), 10)
	if len(got) != 1 || got[0].Revision != 3 || got[0].AnnouncedVersion != 2 || got[0].AnnouncedRevision != 2 {
		t.Fatalf("stable after an instance raced the announcement = %+v", got)
	}
	if err := ix.MarkAnnounced(ctx, studyUID(1), 3, 3, T0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Quiet the longest first, and limit.
	upsert(t, ix, Record(2, 1, 1, "dd", 10*time.Minute), pipeline.InstanceNew)
	upsert(t, ix, Record(3, 1, 1, "ee", 5*time.Minute), pipeline.InstanceNew)
	if diff := cmp.Diff([]string{studyUID(3), studyUID(2)}, uids(stable(T0.Add(time.Hour), 10))); diff != "" {
		t.Errorf("stable order (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{studyUID(3)}, uids(stable(T0.Add(time.Hour), 1))); diff != "" {
		t.Errorf("stable with limit 1 (-want +got):\n%s", diff)
	}
	d := getStudy(t, ix, studyUID(1))
	if d.AnnouncedVersion != 3 || d.AnnouncedRevision != 3 || d.Revision != 3 {
		t.Errorf("announcement bookkeeping = %+v", d.StudySummary)
	}
}

// studyUIDs lists the studies' UIDs in order.
func studyUIDs(list []pipeline.StudySummary) []string {
	var out []string
	for _, s := range list {
		out = append(out, s.StudyInstanceUID)
	}
	return out
}

// testDeferAnnouncement: a study whose announcement failed goes quiet again
// from the failure, behind the studies quiet before it, and stays pending;
// its clock moves only forward, whether the deferral or an instance's
// upsert lands first.
func testDeferAnnouncement(t *testing.T, h IndexHarness) {
	ctx := context.Background()
	stable := func(t *testing.T, ix pipeline.IndexStore, quietSince time.Time, limit int) []string {
		t.Helper()
		out, err := ix.StableStudies(ctx, quietSince, limit)
		if err != nil {
			t.Fatal(err)
		}
		return studyUIDs(out)
	}
	deferTo := func(t *testing.T, ix pipeline.IndexStore, s int, at time.Time) {
		t.Helper()
		if err := ix.DeferAnnouncement(ctx, studyUID(s), at); err != nil {
			t.Fatalf("defer study %d to %v: %v", s, at, err)
		}
	}
	activity := func(t *testing.T, ix pipeline.IndexStore, s int) time.Time {
		t.Helper()
		return getStudy(t, ix, studyUID(s)).LastActivity
	}
	t.Run("order", func(t *testing.T) {
		ix := h.New(t)
		upsert(t, ix, Record(1, 1, 1, "aa", 0), pipeline.InstanceNew)           // active at T0+1s
		upsert(t, ix, Record(2, 1, 1, "bb", time.Minute), pipeline.InstanceNew) // T0+61s
		upsert(t, ix, Record(3, 1, 1, "cc", 2*time.Minute), pipeline.InstanceNew)
		failed := T0.Add(time.Hour)
		deferTo(t, ix, 1, failed)
		if diff := cmp.Diff([]string{studyUID(2), studyUID(3)}, stable(t, ix, failed.Add(-time.Second), 10)); diff != "" {
			t.Errorf("stable before the deferral's quiet time (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{studyUID(2), studyUID(3), studyUID(1)}, stable(t, ix, failed, 10)); diff != "" {
			t.Errorf("stable order after a deferral (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{studyUID(2), studyUID(3)}, stable(t, ix, failed.Add(time.Hour), 2)); diff != "" {
			t.Errorf("stable with limit 2 (-want +got):\n%s", diff)
		}
		// Never back; everything else as it was.
		deferTo(t, ix, 1, T0.Add(30*time.Minute))
		d := getStudy(t, ix, studyUID(1))
		checkStudy(t, ix, d.StudySummary, counts{Instances: 1, Series: 1, Bytes: 100, Revision: 1})
		if !d.LastActivity.Equal(failed) || !d.LastReceived.Equal(T0) || d.AnnouncedRevision != 0 || d.AnnouncedVersion != 0 {
			t.Errorf("deferred study = %+v", d.StudySummary)
		}
		// An instance indexed later than the deferral restarts the quiet
		// period from its own activity, as any instance does.
		upsert(t, ix, Record(1, 1, 2, "dd", 2*time.Hour), pipeline.InstanceNew)
		if got := activity(t, ix, 1); !got.Equal(T0.Add(2*time.Hour + time.Second)) {
			t.Errorf("activity after a later instance = %v", got)
		}
		// One whose activity is before the deferral (its upsert began before
		// the announcement failed) leaves the deferral in place, but counts.
		deferTo(t, ix, 1, T0.Add(3*time.Hour))
		r := upsert(t, ix, Record(1, 1, 3, "ee", 150*time.Minute), pipeline.InstanceNew)
		if r.Study.Revision != 3 {
			t.Errorf("revision %d after a third instance", r.Study.Revision)
		}
		if got := activity(t, ix, 1); !got.Equal(T0.Add(3 * time.Hour)) {
			t.Errorf("an earlier instance moved the deferred activity to %v", got)
		}
		// An announced study stays announced.
		if err := ix.MarkAnnounced(ctx, studyUID(2), 1, 1, failed); err != nil {
			t.Fatal(err)
		}
		deferTo(t, ix, 2, T0.Add(4*time.Hour))
		if diff := cmp.Diff([]string{studyUID(3), studyUID(1)}, stable(t, ix, T0.Add(5*time.Hour), 10)); diff != "" {
			t.Errorf("stable after announcing a deferred study (-want +got):\n%s", diff)
		}
		if err := ix.DeferAnnouncement(ctx, studyUID(99), failed); !errors.Is(err, pipeline.ErrNotFound) {
			t.Errorf("deferring an unknown study: %v, want ErrNotFound", err)
		}
	})
	t.Run("concurrent with upserts", func(t *testing.T) {
		// Upserts of new instances (active at T0+1s … T0+8s) race a
		// deferral to T0+5s and one to T0+30m: the latest time wins.
		ix := h.New(t)
		upsert(t, ix, Record(1, 1, 0, "c", -time.Second), pipeline.InstanceNew)
		const n = 8
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if _, err := ix.UpsertInstance(ctx, Record(1, 1+i%2, i+1, fmt.Sprint("c", i), time.Duration(i)*time.Second)); err != nil {
					t.Errorf("upsert %d: %v", i, err)
				}
			})
		}
		for _, at := range []time.Duration{5 * time.Second, 30 * time.Minute} {
			wg.Go(func() {
				if err := ix.DeferAnnouncement(ctx, studyUID(1), T0.Add(at)); err != nil {
					t.Errorf("defer to T0+%v: %v", at, err)
				}
			})
		}
		wg.Wait()
		d := getStudy(t, ix, studyUID(1))
		checkStudy(t, ix, d.StudySummary, counts{Instances: n + 1, Series: 2, Bytes: 100 * (n + 1), Revision: n + 1})
		if !d.LastActivity.Equal(T0.Add(30 * time.Minute)) {
			t.Errorf("activity %v, want T0+30m", d.LastActivity)
		}
		if got := stable(t, ix, T0.Add(30*time.Minute-time.Second), 10); len(got) != 0 {
			t.Errorf("stable before the deferral's quiet time: %v", got)
		}
		if diff := cmp.Diff([]string{studyUID(1)}, stable(t, ix, T0.Add(30*time.Minute), 10)); diff != "" {
			t.Errorf("stable (-want +got):\n%s", diff)
		}
	})
}

// testStableLimit: StableStudies' limit counts the studies it returns.
// Studies quiet before them that it passes over, its process having died
// in MarkAnnounced after the study was marked (announced, though the
// storage may still list it as pending) or in an upsert after the count
// (a content counted, not yet listed), take no place: on DynamoDB each
// took one of the byPending query's, so 100 of them held every run's other
// studies back.
func testStableLimit(t *testing.T, h IndexHarness) {
	ctx := context.Background()
	ix := h.New(t)
	for s := 1; s <= 4; s++ {
		upsert(t, ix, Record(s, 1, 1, "aa", time.Duration(s)*time.Second), pipeline.InstanceNew)
		// The crash's error is lost with the process; the study is marked.
		if err := h.Crash(t, ix, 1).MarkAnnounced(ctx, studyUID(s), 1, 1, T0.Add(time.Hour)); err != nil && !errors.Is(err, ErrCrash) {
			t.Fatalf("mark study %d announced: %v", s, err)
		}
	}
	for s := 5; s <= 12; s++ {
		// Cut short after each of its calls in turn (a healthy index
		// upserts where there are fewer).
		in := Record(s, 1, 1, "bb", time.Duration(s)*time.Second)
		if _, err := h.Crash(t, ix, s-4).UpsertInstance(ctx, in); err != nil && !errors.Is(err, ErrCrash) {
			t.Fatalf("upsert in study %d: %v", s, err)
		}
	}
	for s := 13; s <= 15; s++ {
		upsert(t, ix, Record(s, 1, 1, "cc", time.Duration(s)*time.Second), pipeline.InstanceNew)
	}
	stable := func(limit int) []string {
		t.Helper()
		out, err := ix.StableStudies(ctx, T0.Add(time.Hour), limit)
		if err != nil {
			t.Fatal(err)
		}
		return studyUIDs(out)
	}
	all := stable(1000)
	for _, uid := range all {
		if d := getStudy(t, ix, uid); d.Revision <= d.AnnouncedRevision {
			t.Errorf("announced study %s offered", uid)
		}
	}
	if !slices.Contains(all, studyUID(15)) || len(all) < 3 {
		t.Fatalf("stable studies %v, want 13, 14 and 15 among them", all)
	}
	for _, limit := range []int{1, 2, 3} {
		if diff := cmp.Diff(all[:limit], stable(limit)); diff != "" {
			t.Errorf("stable with limit %d (-want +got):\n%s", limit, diff)
		}
	}
	// A limit above pipeline.MaxPage is MaxPage, not passed on as is
	// (DynamoDB's Limit, an int32, took math.MaxInt as -1).
	for _, limit := range []int{math.MaxInt32 + 1, math.MaxInt} {
		if diff := cmp.Diff(all, stable(limit)); diff != "" {
			t.Errorf("stable with limit %d (-want +got):\n%s", limit, diff)
		}
	}
}

func testLedger(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	ctx := context.Background()
	if ok, err := ix.EventPublished(ctx, "e1"); ok || err != nil {
		t.Fatalf("EventPublished of an unknown event = %v, %v", ok, err)
	}
	for range 2 {
		if err := ix.MarkEventPublished(ctx, "e1", T0); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := ix.EventPublished(ctx, "e1"); !ok || err != nil {
		t.Errorf("EventPublished = %v, %v", ok, err)
	}
}

func testRequiredUIDs(t *testing.T, h IndexHarness) {
	ix := h.New(t)
	for _, in := range []pipeline.InstanceRecord{
		func() pipeline.InstanceRecord { in := Record(1, 1, 1, "aa", 0); in.StudyInstanceUID = ""; return in }(),
		func() pipeline.InstanceRecord { in := Record(1, 1, 1, "aa", 0); in.SOPInstanceUID = ""; return in }(),
	} {
		if _, err := ix.UpsertInstance(context.Background(), in); err == nil {
			t.Errorf("upsert without study or SOP Instance UID accepted: %+v", in)
		}
	}
}

func countDuplicates(out []pipeline.UpsertResult) int {
	n := 0
	for _, r := range out {
		if r.Outcome == pipeline.InstanceDuplicate {
			n++
		}
	}
	return n
}

// checkResendsName checks that the upserts of ins (one content under
// several object keys), which reported out, agree with the index: the
// content has one row, the record of one of the transfers (the one that
// counted it, returned), every upsert names that transfer's key, and only
// that transfer's upsert may have counted it. It returns the key.
func checkResendsName(t *testing.T, ix pipeline.IndexStore, ins []pipeline.InstanceRecord, out []pipeline.UpsertResult) string {
	t.Helper()
	listed, err := ix.Instances(context.Background(), ins[0].SOPInstanceUID)
	if err != nil || len(listed) != 1 {
		t.Fatalf("the content's rows: %d, %v; want 1", len(listed), err)
	}
	counted := listed[0].ObjectKey
	if !slices.ContainsFunc(ins, func(in pipeline.InstanceRecord) bool { return in.ObjectKey == counted }) {
		t.Fatalf("the content's row names %s, no transfer's key", counted)
	}
	for i, r := range out {
		if r.Instance.ObjectKey != counted {
			t.Errorf("%s is told the content is held under %s, the row names %s", ins[i].ObjectKey, r.Instance.ObjectKey, counted)
		}
		if r.Outcome != pipeline.InstanceDuplicate && ins[i].ObjectKey != counted {
			t.Errorf("%s counted the content (%v), the row names %s", ins[i].ObjectKey, r.Outcome, counted)
		}
	}
	if fresh := len(out) - countDuplicates(out); fresh > 1 {
		t.Errorf("%d upserts counted the content", fresh)
	}
	return counted
}

// testInterruptedResend: a transfer's upsert cut short after each of its
// calls, then another transfer of the same content (the same data set
// under another object key) cut short after each of its own or not, then
// both retried. Whichever counted the content, its row ends as that
// transfer's record and every call that returned names its key: the
// counting transfer is audited as stored once and the other as a resend
// (pipeline.Resent), also where the other wrote the row while the
// counting one was down.
func testInterruptedResend(t *testing.T, h IndexHarness) {
	ctx := context.Background()
	a := Record(1, 1, 1, "aa", 0)
	b := Record(1, 1, 1, "aa", time.Second)
	b.ObjectKey, b.CallingAE = a.ObjectKey+".conflict-00000000000000bb.dcm", "VNA"
	runs := 0
	for n := 1; n <= 20; n++ {
		for m := 0; m <= 20; m++ {
			ix := h.New(t)
			if _, err := h.Crash(t, ix, n).UpsertInstance(ctx, a); err == nil {
				if n == 1 {
					t.Fatal("the crash hook never fired")
				}
				t.Logf("crashed the first transfer's upsert after each of its %d calls, the second's after each of theirs: %d runs", n-1, runs)
				return
			}
			if m > 0 {
				if _, err := h.Crash(t, ix, m).UpsertInstance(ctx, b); err == nil {
					break // the second transfer makes fewer than m calls
				}
			}
			runs++
			where := fmt.Sprintf("first transfer crashed after call %d, second after call %d", n, m)
			var out []pipeline.UpsertResult
			ins := []pipeline.InstanceRecord{b, a, b, a}
			for _, in := range ins {
				r, err := ix.UpsertInstance(ctx, in)
				if err != nil {
					t.Fatalf("%s: %s: %v", where, in.ObjectKey, err)
				}
				out = append(out, r)
			}
			t.Run(where, func(t *testing.T) {
				checkResendsName(t, ix, ins, out)
				d := checkStudy(t, ix, out[len(out)-1].Study, counts{Instances: 1, Series: 1, Bytes: 100, Revision: 1})
				if !d.LastSent.Equal(b.ReceivedAt) {
					t.Errorf("last sent %v, want the later transfer's %v", d.LastSent, b.ReceivedAt)
				}
			})
		}
	}
	t.Fatal("the upsert still crashes after 20 calls")
}
