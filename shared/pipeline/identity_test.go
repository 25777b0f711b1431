package pipeline_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// storedAs stores data as the SCP stores an object now: its transaction
// in metadata and no SHA-256, the store's CRC-64/NVME its checksum.
func storedAs(f *pt.Fakes, k string, data []byte, callingAE, assoc, at string) {
	md := pt.SCPMetadata(pt.CTStorage, sop1, tsELE, "")
	delete(md, "sha256")
	md[objectstore.MetaCallingAE], md[objectstore.MetaAssociationID], md[objectstore.MetaReceivedAt] = callingAE, assoc, at
	f.Objects.Add(k, data, md)
}

// wholeCRC is an object's identity as it was before data set identities:
// its whole file's CRC-64/NVME.
func wholeCRC(data []byte) string {
	return fmt.Sprintf("crc64nvme-%016x", crc64.Checksum(data, crc64.MakeTable(0x9a6c9329ac4bc9b5)))
}

// TestContentIdentityIsTheDataSet: the content identity that tells an
// identical resend from a conflicting one is the data set's, not the
// stored file's, whose File Meta Information we write and which names the
// sending AE: the same data set from another AE (a PACS and a VNA both
// forwarding a study) is a duplicate, also when the store put it under a
// conflict key (other bytes than the object its key held that day); other
// data set bytes under the SOP Instance UID are a conflict; an object
// indexed before this change (its identity the whole file's CRC-64/NVME)
// is found identical to a resend of its bytes or of its data set.
func TestContentIdentityIsTheDataSet(t *testing.T) {
	first := ct(sop1)
	first.SourceAE = "MODALITY1"
	firstData := first.Build()
	otherAE := ct(sop1)
	otherAE.SourceAE = "VNA_FORWARDER"
	sameSet := otherAE.Build()
	changed := ct(sop1)
	changed.PatientName = "Doe^John"
	changed.SourceAE = "MODALITY1"
	otherSet := changed.Build()
	if string(sameSet) == string(firstData) {
		t.Fatal("the resend's meta header is the first's: the test tells nothing")
	}
	nextDay := strings.Replace(key(sop1), "2026/01/15", "2026/01/16", 1)
	conflictKey := objectstore.ConflictKey(key(sop1), "00000000000000aa")
	tests := []struct {
		name string
		// oldForm indexes the first object as a version before data set
		// identities did: under its whole file's CRC-64/NVME.
		oldForm bool
		key     string
		data    []byte
		want    pipeline.UpsertOutcome
		outcome string // the delivery's audit record's; "" for none new
	}{
		{"the same data set from another AE, another day", false, nextDay, sameSet, pipeline.InstanceDuplicate, pipeline.OutcomeDuplicate},
		{"the same data set from another AE the same day, under a conflict key", false, conflictKey, sameSet, pipeline.InstanceDuplicate, pipeline.OutcomeDuplicate},
		{"the same bytes again, another day", false, nextDay, firstData, pipeline.InstanceDuplicate, pipeline.OutcomeDuplicate},
		{"another data set under the SOP Instance UID", false, nextDay, otherSet, pipeline.InstanceConflict, pipeline.OutcomeConflict},
		{"another data set under a conflict key", false, conflictKey, otherSet, pipeline.InstanceConflict, pipeline.OutcomeConflict},
		{"a redelivery of the object itself", false, key(sop1), firstData, pipeline.InstanceDuplicate, ""},
		{"old form indexed: the same bytes again, another day", true, nextDay, firstData, pipeline.InstanceDuplicate, pipeline.OutcomeDuplicate},
		{"old form indexed: the same data set from another AE", true, nextDay, sameSet, pipeline.InstanceDuplicate, pipeline.OutcomeDuplicate},
		{"old form indexed: another data set", true, nextDay, otherSet, pipeline.InstanceConflict, pipeline.OutcomeConflict},
		{"old form indexed: a redelivery of the object itself", true, key(sop1), firstData, pipeline.InstanceDuplicate, pipeline.OutcomeStored},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := pt.New()
			p := f.Pipeline()
			storedAs(f, key(sop1), firstData, "MODALITY1", "assoc1", "2026-01-15T10:20:30Z")
			if tt.oldForm {
				indexedBefore(t, f, pipeline.InstanceRecord{StudyInstanceUID: study, SeriesInstanceUID: series, SOPInstanceUID: sop1,
					SOPClassUID: pt.CTStorage, ObjectKey: key(sop1), Size: int64(len(firstData)), ContentIdentity: wholeCRC(firstData)})
			} else if res, err := p.ProcessObject(ctx, key(sop1)); err != nil || res.Outcome != pipeline.InstanceNew {
				t.Fatalf("first delivery: %+v, %v", res, err)
			}
			indexed, err := f.Index.Instances(ctx, sop1)
			if err != nil || len(indexed) != 1 {
				t.Fatalf("indexed %+v, %v", indexed, err)
			}
			if !tt.oldForm && !strings.HasPrefix(indexed[0].ContentIdentity, pipeline.DataSetIdentityPrefix) {
				t.Errorf("indexed under %q, want a data set identity", indexed[0].ContentIdentity)
			}
			records, events := len(f.Audit.All()), len(f.Events.All())
			if tt.key != key(sop1) {
				storedAs(f, tt.key, tt.data, "VNA_FORWARDER", "assoc2", "2026-01-16T08:00:00Z")
			}
			want := tt.want
			for range 2 { // and a redelivery of it: nothing new
				res, err := p.ProcessObject(ctx, tt.key)
				if err != nil || res.Outcome != want {
					t.Fatalf("delivery: outcome %v, %v; want %v", res.Outcome, err, want)
				}
				want = pipeline.InstanceDuplicate
			}
			recs := f.Audit.All()
			switch {
			case tt.outcome == "" && len(recs) != records:
				t.Errorf("%d audit records, want the %d there were", len(recs), records)
			case tt.outcome != "" && (len(recs) != records+1 || recs[len(recs)-1].Outcome != tt.outcome):
				t.Errorf("audit records %+v; want one more, %s", recs[records:], tt.outcome)
			}
			after, err := f.Index.Instances(ctx, sop1)
			if err != nil {
				t.Fatal(err)
			}
			st, err := f.Index.GetStudy(ctx, study)
			if err != nil {
				t.Fatal(err)
			}
			newEvents := len(f.Events.All()) - events
			if tt.want == pipeline.InstanceConflict {
				if len(after) != 2 || st.ConflictCount != 1 || newEvents != 1 {
					t.Errorf("conflict: %d contents, %d conflicts, %d new events", len(after), st.ConflictCount, newEvents)
				}
				return
			}
			if d := cmp.Diff(indexed, after); d != "" || st.ConflictCount != 0 || st.InstanceCount != 1 {
				t.Errorf("the index changed (-before +after):\n%s\n%d conflicts, %d instances", d, st.ConflictCount, st.InstanceCount)
			}
			if newEvents != 0 {
				t.Errorf("%d new events, want none", newEvents)
			}
			if tt.outcome != "" && recs[len(recs)-1].ContentIdentity != indexed[0].ContentIdentity {
				t.Errorf("the record names content %q, want %q as indexed", recs[len(recs)-1].ContentIdentity, indexed[0].ContentIdentity)
			}
		})
	}
}

// fromTwoAEs stores one data set as the SCP stores it from two calling
// AEs the same day: from MODALITY1 under its key, and from VNA_FORWARDER,
// other bytes (its meta header names that AE), under the conflict key
// named by id, which it returns.
func fromTwoAEs(f *pt.Fakes, id string) string {
	first, other := ct(sop1), ct(sop1)
	first.SourceAE, other.SourceAE = "MODALITY1", "VNA_FORWARDER"
	copyKey := objectstore.ConflictKey(key(sop1), id)
	storedAs(f, key(sop1), first.Build(), "MODALITY1", "assoc1", "2026-01-15T10:20:30Z")
	storedAs(f, copyKey, other.Build(), "VNA_FORWARDER", "assoc2", "2026-01-15T10:21:00Z")
	_, md, _ := f.Objects.Get(copyKey)
	md[objectstore.MetaConflict] = "true"
	f.Objects.Add(copyKey, other.Build(), md)
	return copyKey
}

// TestConflictKeyCopyProcessedFirst: the store's conflict key says only
// that the copy's bytes differ from what its key held; processed before
// the object its key held, a copy whose data set is that object's is
// stored, and the other becomes its identical resend: no conflict either
// way, the index alone decides.
func TestConflictKeyCopyProcessedFirst(t *testing.T) {
	ctx := context.Background()
	f := pt.New()
	p := f.Pipeline()
	copyKey := fromTwoAEs(f, "00000000000000aa")
	for _, step := range []struct {
		key  string
		want pipeline.UpsertOutcome
	}{{copyKey, pipeline.InstanceNew}, {key(sop1), pipeline.InstanceDuplicate}} {
		if res, err := p.ProcessObject(ctx, step.key); err != nil || res.Outcome != step.want {
			t.Fatalf("%s: outcome %v, %v; want %v", step.key, res.Outcome, err, step.want)
		}
	}
	var outcomes []string
	for _, r := range f.Audit.All() {
		outcomes = append(outcomes, r.Outcome)
	}
	if d := cmp.Diff([]string{pipeline.OutcomeStored, pipeline.OutcomeDuplicate}, outcomes); d != "" {
		t.Errorf("records' outcomes (-want +got):\n%s", d)
	}
	st, err := f.Index.GetStudy(ctx, study)
	if err != nil || st.InstanceCount != 1 || st.ConflictCount != 0 || len(st.Instances) != 1 || st.Instances[0].Conflict {
		t.Errorf("study: %d instances, %d conflicts, %+v, %v", st.InstanceCount, st.ConflictCount, st.Instances, err)
	}
}

// indexedBefore indexes rec as a version before data set identities did,
// with its Instance Stored event announced then.
func indexedBefore(t *testing.T, f *pt.Fakes, rec pipeline.InstanceRecord) {
	t.Helper()
	ctx := context.Background()
	if _, err := f.Index.UpsertInstance(ctx, rec); err != nil {
		t.Fatal(err)
	}
	id := sha256.Sum256([]byte(pipeline.DetailTypeInstanceStored + "\x00" + rec.SOPInstanceUID + "\x00" + rec.ContentIdentity))
	if err := f.Index.MarkEventPublished(ctx, hex.EncodeToString(id[:16]), time.Now()); err != nil {
		t.Fatal(err)
	}
}

// TestRedeliveryAfterUpgradeOfAConflictCopy: a version before data set
// identities indexed the same data set from two AEs as two contents, the
// second a conflict (its whole file, the meta header naming the other AE,
// differed). A redelivery of the second after the upgrade (an SQS message
// in flight at the deploy, a DLQ redrive) is that transfer again: it is
// found under its own identity, the one its bytes were indexed under, and
// writes nothing new, whichever of the two identities the index lists
// first. Matched first by data set to the other content, it was recorded
// a second time, as an identical resend of it.
func TestRedeliveryAfterUpgradeOfAConflictCopy(t *testing.T) {
	a, b := ct(sop1), ct(sop1)
	a.SourceAE, b.SourceAE = "MODALITY1", "VNA_FORWARDER"
	aData, bData := a.Build(), b.Build()
	conflictKey := objectstore.ConflictKey(key(sop1), "00000000000000aa")
	for _, tt := range []struct {
		name        string
		first, copy []byte
	}{{"the copy's identity sorts last", aData, bData}, {"the copy's identity sorts first", bData, aData}} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := pt.New()
			p := f.Pipeline()
			storedAs(f, key(sop1), tt.first, "MODALITY1", "assoc1", "2026-01-15T10:20:30Z")
			storedAs(f, conflictKey, tt.copy, "VNA_FORWARDER", "assoc2", "2026-01-15T10:21:00Z")
			for _, o := range []struct {
				key  string
				data []byte
			}{{key(sop1), tt.first}, {conflictKey, tt.copy}} {
				indexedBefore(t, f, pipeline.InstanceRecord{StudyInstanceUID: study, SeriesInstanceUID: series, SOPInstanceUID: sop1,
					SOPClassUID: pt.CTStorage, ObjectKey: o.key, Size: int64(len(o.data)), ContentIdentity: wholeCRC(o.data)})
			}
			before, err := f.Index.GetStudy(ctx, study)
			if err != nil || before.ConflictCount != 1 {
				t.Fatalf("indexed before: %d conflicts, %v", before.ConflictCount, err)
			}
			res, err := p.ProcessObject(ctx, conflictKey)
			if err != nil || res.Outcome != pipeline.InstanceDuplicate {
				t.Fatalf("redelivery: outcome %v, %v", res.Outcome, err)
			}
			var ids []string
			for _, r := range f.Audit.All() {
				ids = append(ids, r.ID+" "+r.Outcome)
			}
			// The record the version before wrote for the copy, the same id.
			if d := cmp.Diff([]string{"instance:" + sop1 + ":" + wholeCRC(tt.copy) + " " + pipeline.OutcomeConflict}, ids); d != "" {
				t.Errorf("audit records (-want +got):\n%s", d)
			}
			if n := len(f.Events.All()); n != 0 {
				t.Errorf("%d events, want none new", n)
			}
			after, err := f.Index.GetStudy(ctx, study)
			if err != nil || after.Revision != before.Revision || after.ConflictCount != 1 || after.InstanceCount != before.InstanceCount {
				t.Errorf("study after: %+v, %v; before %+v", after.StudySummary, err, before.StudySummary)
			}
		})
	}
}

// TestRedeliveryAfterUpgradeOfARejected: an object quarantined by a
// version before data set identities has its audit record and event named
// by its whole file's CRC-64/NVME; redelivered after the upgrade (an SQS
// message in flight at the deploy, a DLQ redrive) it finds both and writes
// and publishes nothing new. Named by its data set's, it was audited and
// announced a second time.
func TestRedeliveryAfterUpgradeOfARejected(t *testing.T) {
	ctx := context.Background()
	f := pt.New()
	p := f.Pipeline()
	i := ct(sop1)
	i.StudyUID = "1.2.03" // uid-syntax: rejected
	data := i.Build()
	k := key(sop1)
	storedAs(f, k, data, "MODALITY1", "assoc1", "2026-01-15T10:20:30Z")
	// What the version before recorded: the audit record and the event.
	if _, err := f.Audit.Append(ctx, pipeline.AuditRecord{ID: "rejected:" + k + ":" + wholeCRC(data), Outcome: pipeline.OutcomeRejected}); err != nil {
		t.Fatal(err)
	}
	ev := sha256.Sum256([]byte(pipeline.DetailTypeInstanceRejected + "\x00" + k + "\x00" + wholeCRC(data)))
	if err := f.Index.MarkEventPublished(ctx, hex.EncodeToString(ev[:16]), time.Now()); err != nil {
		t.Fatal(err)
	}
	res, err := p.ProcessObject(ctx, k)
	if err != nil || res.Valid {
		t.Fatalf("redelivery: %+v, %v", res, err)
	}
	if recs := f.Audit.All(); len(recs) != 1 {
		t.Errorf("audit records %+v; want only the one recorded before", recs)
	}
	if evs := f.Events.All(); len(evs) != 0 {
		t.Errorf("%d events, want none new", len(evs))
	}
}

// callOrder records the calls into the stores that, in local mode, write
// in the unit's transaction, and the object reads.
type callOrder struct {
	pipeline.IndexStore
	pipeline.ObjectWriter
	pipeline.ObjectReader
	calls []string
}

func (c *callOrder) OpenRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	c.calls = append(c.calls, "OpenRange")
	return c.ObjectReader.OpenRange(ctx, key, offset, length)
}

func (c *callOrder) Instances(ctx context.Context, sop string) ([]pipeline.InstanceRecord, error) {
	c.calls = append(c.calls, "Instances")
	return c.IndexStore.Instances(ctx, sop)
}

func (c *callOrder) Put(ctx context.Context, key string, body []byte, contentType string, md map[string]string) error {
	c.calls = append(c.calls, "Put")
	return c.ObjectWriter.Put(ctx, key, body, contentType, md)
}

// TestIndexLookupAfterTheHeaderRead: in local mode a unit takes the
// database's one writer at its first statement (localstore.Tx). The
// pipeline's first is the look-up of the content as indexed (which says
// whether the documents are to be written at all: a content held has its
// row's), made once the header is read and its DICOM JSON built: made
// before that work, it held up the other workers' units while it ran. A
// new object's processing reads nothing of it after the look-up, and
// writes its documents after it.
func TestIndexLookupAfterTheHeaderRead(t *testing.T) {
	f := pt.New()
	p := f.Pipeline()
	c := &callOrder{IndexStore: f.Index, ObjectWriter: f.Objects, ObjectReader: f.Objects}
	p.Index, p.Writer, p.Objects = c, c, c
	storedAs(f, key(sop1), ct(sop1).Build(), "MODALITY1", "assoc1", "2026-01-15T10:20:30Z")
	if res, err := p.ProcessObject(context.Background(), key(sop1)); err != nil || res.Outcome != pipeline.InstanceNew {
		t.Fatalf("outcome %v, %v", res.Outcome, err)
	}
	first := slices.IndexFunc(c.calls, func(call string) bool { return call != "OpenRange" })
	if first <= 0 || c.calls[first] != "Instances" || slices.Contains(c.calls[first:], "OpenRange") || !slices.Contains(c.calls[first:], "Put") {
		t.Errorf("calls %v; want the header's reads, then the look-up, then the documents' Puts", c.calls)
	}
}

// TestResendBeforeTheCountedTransferAnnounced: the transfer that counted a
// content has not published its Instance Stored yet (its invocation
// failed at the bus and its message waits for redelivery, or it is still
// running: two invocations at once) when another transfer of the content,
// the same data set from another AE under a conflict key, is processed.
// The resend announces nothing: the content's event is the counted
// transfer's, and its redelivery publishes it naming its own object and
// sender. The resend published it when the ledger did not hold it yet,
// naming the resend's key and AE, and the counted transfer's then named
// its own under the same event id.
func TestResendBeforeTheCountedTransferAnnounced(t *testing.T) {
	ctx := context.Background()
	f := pt.New()
	p := f.Pipeline()
	copyKey := fromTwoAEs(f, "00000000000000bb")
	f.Events.Err = fmt.Errorf("bus down")
	if _, err := p.ProcessObject(ctx, key(sop1)); err == nil {
		t.Fatal("processed with the bus down")
	}
	f.Events.Err = nil
	for _, step := range []struct {
		key  string
		want pipeline.UpsertOutcome
	}{{copyKey, pipeline.InstanceDuplicate}, {key(sop1), pipeline.InstanceDuplicate}, {copyKey, pipeline.InstanceDuplicate}} {
		if res, err := p.ProcessObject(ctx, step.key); err != nil || res.Outcome != step.want {
			t.Fatalf("%s: outcome %v, %v; want %v", step.key, res.Outcome, err, step.want)
		}
	}
	var published []string
	for _, ev := range f.Events.All() {
		if ev.DetailType == pipeline.DetailTypeInstanceStored {
			var d pipeline.InstanceStoredDetail
			if err := json.Unmarshal(ev.Detail, &d); err != nil {
				t.Fatal(err)
			}
			published = append(published, d.ObjectKey+" from "+d.CallingAE)
		}
	}
	if d := cmp.Diff([]string{key(sop1) + " from MODALITY1"}, published); d != "" {
		t.Errorf("Instance Stored events (-want +got):\n%s", d)
	}
	var outcomes []string
	for _, r := range f.Audit.All() {
		outcomes = append(outcomes, r.ObjectKey+" "+r.Outcome)
	}
	if d := cmp.Diff([]string{key(sop1) + " " + pipeline.OutcomeStored, copyKey + " " + pipeline.OutcomeDuplicate}, outcomes); d != "" {
		t.Errorf("audit records (-want +got):\n%s", d)
	}
}

// pinnedObjects is a store whose reads are pinned to their HEAD's ETag,
// as S3's are (pipeline.VersionReader), and which runs replace once before
// the first pinned read of key.
type pinnedObjects struct {
	*pt.Objects
	key     string
	replace func()
	reads   *[]string // the ETag each read of key was pinned to
}

func (o pinnedObjects) OpenVersionRange(ctx context.Context, info pipeline.ObjectInfo, offset, length int64) (io.ReadCloser, error) {
	if info.Key == o.key {
		if len(*o.reads) == 0 {
			o.replace()
		}
		*o.reads = append(*o.reads, info.ETag)
	}
	now, err := o.Head(ctx, info.Key)
	if err != nil {
		return nil, err
	}
	if now.ETag != info.ETag {
		return nil, fmt.Errorf("pinned: get %s: %w", info.Key, pipeline.ErrObjectChanged)
	}
	return o.OpenRange(ctx, info.Key, offset, length)
}

// TestSameContentReadsTheIndexedVersion: comparing a delivered data set
// with an object indexed under its whole file's CRC-64/NVME reads that
// object's meta header pinned, as every read is, to the version its HEAD
// gave. Its key overwritten between that HEAD and the read, the read fails
// (ErrObjectChanged, the message retried), nothing indexed, audited or
// announced: unpinned, the new version's meta header was combined with the
// indexed object's CRC and size. On the retry the key's HEAD shows other
// bytes than those indexed, whose meta header is then not at hand: not the
// same content (a conflict), as for an indexed object no longer stored.
func TestSameContentReadsTheIndexedVersion(t *testing.T) {
	first, otherAE, overwrite := ct(sop1), ct(sop1), ct(sop1)
	first.SourceAE, otherAE.SourceAE, overwrite.SourceAE = "MODALITY1", "VNA_FORWARDER", "SOMEONE_ELSE"
	firstData := first.Build()
	nextDay := strings.Replace(key(sop1), "2026/01/15", "2026/01/16", 1)
	ctx := context.Background()
	f := pt.New()
	storedAs(f, key(sop1), firstData, "MODALITY1", "assoc1", "2026-01-15T10:20:30Z")
	indexedBefore(t, f, pipeline.InstanceRecord{StudyInstanceUID: study, SeriesInstanceUID: series, SOPInstanceUID: sop1,
		SOPClassUID: pt.CTStorage, ObjectKey: key(sop1), Size: int64(len(firstData)), ContentIdentity: wholeCRC(firstData)})
	storedAs(f, nextDay, otherAE.Build(), "VNA_FORWARDER", "assoc2", "2026-01-16T08:00:00Z")
	var reads []string
	p := f.Pipeline()
	p.Objects = pinnedObjects{Objects: f.Objects, key: key(sop1), reads: &reads, replace: func() {
		storedAs(f, key(sop1), overwrite.Build(), "SOMEONE_ELSE", "assoc3", "2026-01-16T09:00:00Z")
	}}
	records, events := len(f.Audit.All()), len(f.Events.All())
	if _, err := p.ProcessObject(ctx, nextDay); !errors.Is(err, pipeline.ErrObjectChanged) {
		t.Fatalf("the indexed object overwritten while read: %v, want ErrObjectChanged", err)
	}
	if len(reads) != 1 || reads[0] == "" {
		t.Errorf("reads of the indexed object pinned to %q, want one pinned read", reads)
	}
	st, err := f.Index.GetStudy(ctx, study)
	if err != nil || st.Revision != 1 || len(f.Audit.All()) != records || len(f.Events.All()) != events {
		t.Fatalf("after the failed read: revision %d (%v), %d records, %d events; want nothing new", st.Revision, err,
			len(f.Audit.All())-records, len(f.Events.All())-events)
	}
	res, err := p.ProcessObject(ctx, nextDay)
	if err != nil || res.Outcome != pipeline.InstanceConflict {
		t.Fatalf("retried: %v, %v; want a conflict", res.Outcome, err)
	}
	if len(reads) != 1 {
		t.Errorf("the retry read the key again (%d reads): its HEAD shows other bytes than those indexed", len(reads))
	}
}

// TestMalformedLegacySHA256IsNoIdentity: a sha256 metadata value that is
// not 64 hex digits was written by no earlier version (an outside
// writer's: user metadata may hold 2 KB) and is no content identity: the
// object's own is taken. Taken as one, two data sets carrying the same
// value read as one content (a conflict recorded as an identical resend),
// and a long value went into the index row's sort key (DynamoDB refuses
// one over 1,024 bytes) and the audit record's id.
func TestMalformedLegacySHA256IsNoIdentity(t *testing.T) {
	first, changed := ct(sop1), ct(sop1)
	changed.PatientName = "Doe^John"
	nextDay := strings.Replace(key(sop1), "2026/01/15", "2026/01/16", 1)
	for _, value := range []string{"x", strings.Repeat("ab", 900), "etag-" + strings.Repeat("e", 1500), strings.Repeat("g", 64)} {
		t.Run(fmt.Sprintf("%.12s (%d bytes)", value, len(value)), func(t *testing.T) {
			ctx := context.Background()
			f := pt.New()
			p := f.Pipeline()
			for i, o := range []struct {
				key  string
				data []byte
				want pipeline.UpsertOutcome
			}{{key(sop1), first.Build(), pipeline.InstanceNew}, {nextDay, changed.Build(), pipeline.InstanceConflict}} {
				storedAs(f, o.key, o.data, "MODALITY1", fmt.Sprintf("assoc%d", i), "2026-01-15T10:20:30Z")
				_, md, _ := f.Objects.Get(o.key)
				md[objectstore.MetaLegacySHA256] = value
				f.Objects.Add(o.key, o.data, md)
				if res, err := p.ProcessObject(ctx, o.key); err != nil || res.Outcome != o.want {
					t.Fatalf("delivery %d: outcome %v, %v; want %v", i, res.Outcome, err, o.want)
				}
			}
			indexed, err := f.Index.Instances(ctx, sop1)
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range indexed {
				if !strings.HasPrefix(in.ContentIdentity, pipeline.DataSetIdentityPrefix) {
					t.Errorf("indexed under %.40q, want a data set identity", in.ContentIdentity)
				}
			}
			for _, r := range f.Audit.All() {
				if strings.Contains(r.ID, value) || strings.Contains(r.ContentIdentity, value) {
					t.Errorf("audit record %.60q names the value as its content", r.ID)
				}
			}
		})
	}
}

// TestUnformedSHA256ObjectDeliveredAgain: a build before 2026-12-07 took
// a sha256 metadata value in no earlier version's form (an outside
// writer's: not 64 hex digits) for the object's identity, lowercased, and
// indexed and recorded the object under it. That value is no identity now
// (TestMalformedLegacySHA256IsNoIdentity), but the same object delivered
// again (an SQS message in flight at the deploy, a DLQ redrive) finds what
// was recorded under it and writes and publishes nothing new: a valid one
// its index row (a duplicate, not a conflict with itself), a rejected one
// its rejected record and event. Under its new identity, the valid one's
// redelivery was indexed as a second content, a conflict, and the
// rejected one's audited and announced a second time.
func TestUnformedSHA256ObjectDeliveredAgain(t *testing.T) {
	for _, value := range []string{"x", "ABC-Def", strings.Repeat("7b", 16)} {
		for _, valid := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s valid %v", value, valid), func(t *testing.T) {
				ctx := context.Background()
				f := pt.New()
				p := f.Pipeline()
				i := ct(sop1)
				if !valid {
					i.StudyUID = "1.2.03" // uid-syntax: rejected
				}
				data := i.Build()
				k := key(sop1)
				storedAs(f, k, data, "MODALITY1", "assoc1", "2026-01-15T10:20:30Z")
				_, md, _ := f.Objects.Get(k)
				md[objectstore.MetaLegacySHA256] = value
				f.Objects.Add(k, data, md)
				// What the build before recorded under the value.
				old := strings.ToLower(value)
				rec := pipeline.AuditRecord{ID: "instance:" + sop1 + ":" + old, Outcome: pipeline.OutcomeStored, SOPInstanceUID: sop1, ContentIdentity: old}
				if valid {
					indexedBefore(t, f, pipeline.InstanceRecord{StudyInstanceUID: study, SeriesInstanceUID: series, SOPInstanceUID: sop1,
						SOPClassUID: pt.CTStorage, ObjectKey: k, Size: int64(len(data)), ContentIdentity: old})
				} else {
					rec.ID, rec.Outcome, rec.ObjectKey = "rejected:"+k+":"+old, pipeline.OutcomeRejected, k
					ev := sha256.Sum256([]byte(pipeline.DetailTypeInstanceRejected + "\x00" + k + "\x00" + old))
					if err := f.Index.MarkEventPublished(ctx, hex.EncodeToString(ev[:16]), time.Now()); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := f.Audit.Append(ctx, rec); err != nil {
					t.Fatal(err)
				}
				res, err := p.ProcessObject(ctx, k)
				if err != nil || res.Valid != valid || valid && res.Outcome != pipeline.InstanceDuplicate {
					t.Fatalf("delivered again: %+v, %v; want valid %v and a duplicate", res, err, valid)
				}
				if recs := f.Audit.All(); len(recs) != 1 {
					t.Errorf("audit records %+v; want only the one recorded before", recs)
				}
				if evs := f.Events.All(); len(evs) != 0 {
					t.Errorf("%d events, want none new", len(evs))
				}
				if rows, err := f.Index.Instances(ctx, sop1); err != nil || valid && len(rows) != 1 {
					t.Errorf("rows %+v, %v; want the one indexed before", rows, err)
				}
			})
		}
	}
}

// dayPartitioned is an audit trail that refuses a query with no access
// path and an open range (pipeline.ErrUnboundedQuery), as
// pipeline.AuditQuery allows a store partitioned by day (DynamoDB's) to.
type dayPartitioned struct{ pipeline.AuditStore }

func (a dayPartitioned) Query(ctx context.Context, q pipeline.AuditQuery) (pipeline.AuditPage, error) {
	if q.SOPInstanceUID == "" && q.PatientID == "" && q.StudyInstanceUID == "" && q.CallingAE == "" && q.Day == "" && (q.From.IsZero() || q.To.IsZero()) {
		return pipeline.AuditPage{}, fmt.Errorf("day-partitioned trail: %w", pipeline.ErrUnboundedQuery)
	}
	return a.AuditStore.Query(ctx, q)
}

// TestUnformedSHA256ObjectWithoutASOPUID: an outside writer's object that
// carries a sha256 value in no earlier version's form and names no SOP
// Instance UID (not in its bytes, no SCP metadata) is quarantined, on a
// trail partitioned by day too. Looking for a rejected record of it by
// its SOP Instance UID, an empty one, asked the trail for every rejected
// record: DynamoDB refuses that (pipeline.ErrUnboundedQuery), so the
// object failed every delivery, and no record without a SOP Instance UID
// is found by one anyway.
func TestUnformedSHA256ObjectWithoutASOPUID(t *testing.T) {
	for _, data := range [][]byte{[]byte("not DICOM at all"), nil} {
		t.Run(fmt.Sprintf("%d bytes", len(data)), func(t *testing.T) {
			ctx := context.Background()
			f := pt.New()
			p := f.Pipeline()
			p.Audit = dayPartitioned{f.Audit}
			k := key("outside")
			f.Objects.Add(k, data, map[string]string{objectstore.MetaLegacySHA256: "not-a-sha"})
			res, err := p.ProcessObject(ctx, k)
			if err != nil || res.Valid || res.QuarantineKey == "" {
				t.Fatalf("ProcessObject: %+v, %v; want the object quarantined", res, err)
			}
			if recs := f.Audit.All(); len(recs) != 1 || recs[0].Outcome != pipeline.OutcomeRejected {
				t.Errorf("audit records %+v, want its rejected record", recs)
			}
		})
	}
}
