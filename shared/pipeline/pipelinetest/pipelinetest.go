// Package pipelinetest provides in-memory implementations of the pipeline's
// ports, for tests of the pipeline and of code that drives it (like
// net/http/httptest), and RunIndexStore and RunCommitmentStore, the
// conformance suites every pipeline.IndexStore and pipeline.CommitmentStore
// run. The fakes follow the port contracts exactly,
// including idempotency and conditional writes, so they double as a
// reference.
package pipelinetest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/crc64nvme"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Objects is an in-memory object store.
type Objects struct {
	mu      sync.Mutex
	objects map[string]object
	// BytesServed counts bytes returned by OpenRange.
	BytesServed int64
	// Fail, when set, is returned by every read (to simulate an outage).
	Fail error
}

type object struct {
	etag     string
	crc64    string // S3's full-object CRC64NVME, computed once as S3 stores it
	data     []byte
	meta     map[string]string
	ctype    string
	modified time.Time
}

var (
	_ pipeline.ObjectReader = (*Objects)(nil)
	_ pipeline.ObjectWriter = (*Objects)(nil)
)

// NewObjects returns an empty store.
func NewObjects() *Objects { return &Objects{objects: map[string]object{}} }

// Add stores data under key with metadata (as the SCP would).
func (o *Objects) Add(key string, data []byte, meta map[string]string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.objects[key] = object{data: data, etag: etag(data), crc64: crc64NVME(data), meta: maps.Clone(meta), modified: time.Now().UTC()}
}

// Get returns an object's bytes and metadata.
func (o *Objects) Get(key string) ([]byte, map[string]string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ob, ok := o.objects[key]
	return ob.data, ob.meta, ok
}

// Delete removes an object (an object lost from the store, in tests).
func (o *Objects) Delete(key string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.objects, key)
}

// Keys lists all keys, sorted.
func (o *Objects) Keys() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Sorted(maps.Keys(o.objects))
}

// Head implements pipeline.ObjectReader.
func (o *Objects) Head(_ context.Context, key string) (pipeline.ObjectInfo, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.Fail != nil {
		return pipeline.ObjectInfo{}, o.Fail
	}
	ob, ok := o.objects[key]
	if !ok {
		return pipeline.ObjectInfo{}, fmt.Errorf("pipelinetest: head %s: %w", key, pipeline.ErrNotFound)
	}
	return pipeline.ObjectInfo{Key: key, Size: int64(len(ob.data)), ETag: ob.etag,
		ChecksumCRC64NVME: ob.crc64, LastModified: ob.modified, Metadata: maps.Clone(ob.meta)}, nil
}

// OpenRange implements pipeline.ObjectReader.
func (o *Objects) OpenRange(_ context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.Fail != nil {
		return nil, o.Fail
	}
	ob, ok := o.objects[key]
	if !ok {
		return nil, fmt.Errorf("pipelinetest: get %s: %w", key, pipeline.ErrNotFound)
	}
	if offset > int64(len(ob.data)) {
		offset = int64(len(ob.data))
	}
	end := int64(len(ob.data))
	if length >= 0 && offset+length < end {
		end = offset + length
	}
	o.BytesServed += end - offset
	return io.NopCloser(bytes.NewReader(ob.data[offset:end])), nil
}

// crc64NVME is the full-object checksum S3 reports for objects uploaded
// with one, as the SCP's are.
func crc64NVME(b []byte) string {
	return base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, crc64nvme.Checksum(b)))
}

func etag(b []byte) string {
	sum := md5.Sum(b)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

// Put implements pipeline.ObjectWriter.
func (o *Objects) Put(_ context.Context, key string, body []byte, contentType string, metadata map[string]string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.objects[key] = object{data: bytes.Clone(body), etag: etag(body), crc64: crc64NVME(body), meta: maps.Clone(metadata), ctype: contentType, modified: time.Now().UTC()}
	return nil
}

// Copy implements pipeline.ObjectWriter, pinned as S3's is: with
// src.ETag, ErrObjectChanged when the key holds another object since.
func (o *Objects) Copy(_ context.Context, src pipeline.ObjectInfo, dst string, metadata map[string]string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	ob, ok := o.objects[src.Key]
	if !ok {
		return fmt.Errorf("pipelinetest: copy %s: %w", src.Key, pipeline.ErrNotFound)
	}
	if src.ETag != "" && ob.etag != src.ETag {
		return fmt.Errorf("pipelinetest: copy %s: %w", src.Key, pipeline.ErrObjectChanged)
	}
	meta := maps.Clone(ob.meta)
	if meta == nil {
		meta = map[string]string{}
	}
	maps.Copy(meta, metadata)
	o.objects[dst] = object{data: ob.data, etag: ob.etag, crc64: ob.crc64, meta: meta, ctype: ob.ctype, modified: time.Now().UTC()}
	return nil
}

// Audit is an in-memory audit trail.
type Audit struct {
	mu      sync.Mutex
	records map[string]pipeline.AuditRecord
	order   []string
	// Err, when set, fails every Append.
	Err error
}

var _ pipeline.AuditStore = (*Audit)(nil)

// NewAudit returns an empty trail.
func NewAudit() *Audit { return &Audit{records: map[string]pipeline.AuditRecord{}} }

// Append implements pipeline.AuditStore.
func (a *Audit) Append(_ context.Context, rec pipeline.AuditRecord) (bool, error) {
	if rec.ID == "" {
		return false, fmt.Errorf("pipelinetest: audit record without id")
	}
	if !slices.Contains(pipeline.AuditOutcomes, rec.Outcome) {
		return false, fmt.Errorf("pipelinetest: audit outcome %q is not one of pipeline.AuditOutcomes, which the portal offers", rec.Outcome)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Err != nil {
		return false, a.Err
	}
	writtenOutcomes.Store(rec.Outcome, true)
	if _, ok := a.records[rec.ID]; ok {
		return false, nil
	}
	a.records[rec.ID] = rec
	a.order = append(a.order, rec.ID)
	return true, nil
}

// writtenOutcomes are the outcomes any Audit of this process was written
// with.
var writtenOutcomes sync.Map

// WrittenOutcomes returns the outcomes any Audit of this process was
// written with, sorted: after a package's tests, those its code wrote.
func WrittenOutcomes() []string {
	var out []string
	writtenOutcomes.Range(func(k, _ any) bool {
		out = append(out, k.(string))
		return true
	})
	slices.Sort(out)
	return out
}

// All returns every record in append order.
func (a *Audit) All() []pipeline.AuditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]pipeline.AuditRecord, 0, len(a.order))
	for _, id := range a.order {
		out = append(out, a.records[id])
	}
	return out
}

// Query implements pipeline.AuditStore: every field of q filters, newest
// first, records of the same time latest appended first; a cursor holds
// the last record's time and place in append order ("<unix nano>.<seq>",
// seq from 1), sealed to q (AuditQuery.CursorScope).
func (a *Audit) Query(_ context.Context, q pipeline.AuditQuery) (pipeline.AuditPage, error) {
	type seqRec struct {
		seq int
		rec pipeline.AuditRecord
	}
	after := func(seqRec) bool { return true }
	if q.Cursor != "" {
		place, err := q.CursorScope().Open(q.Cursor)
		ts, ss, _ := strings.Cut(place, ".")
		t, err1 := strconv.ParseInt(ts, 10, 64)
		seq, err2 := strconv.Atoi(ss)
		if err != nil || err1 != nil || err2 != nil || seq < 1 {
			return pipeline.AuditPage{}, fmt.Errorf("pipelinetest: audit query: %w", pipeline.ErrBadCursor)
		}
		after = func(r seqRec) bool {
			n := r.rec.Time.UnixNano()
			return n < t || n == t && r.seq < seq
		}
	}
	var out []seqRec
	for i, r := range a.All() {
		switch {
		case q.SOPInstanceUID != "" && r.SOPInstanceUID != q.SOPInstanceUID,
			q.PatientID != "" && r.PatientID != q.PatientID,
			q.StudyInstanceUID != "" && r.StudyInstanceUID != q.StudyInstanceUID,
			q.CallingAE != "" && r.CallingAE != q.CallingAE,
			q.Day != "" && r.Day != q.Day,
			q.Outcome != "" && r.Outcome != q.Outcome,
			!q.From.IsZero() && r.Time.Before(q.From),
			!q.To.IsZero() && r.Time.After(q.To):
			continue
		}
		if r := (seqRec{i + 1, r}); after(r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(x, y seqRec) int {
		return cmp.Or(y.rec.Time.Compare(x.rec.Time), cmp.Compare(y.seq, x.seq))
	})
	limit := q.PageSize()
	page := pipeline.AuditPage{Records: []pipeline.AuditRecord{}}
	for i, r := range out {
		if i == limit {
			last := out[i-1]
			page.Next = q.CursorScope().Seal(strconv.FormatInt(last.rec.Time.UnixNano(), 10) + "." + strconv.Itoa(last.seq))
			break
		}
		rec := r.rec
		rec.ReadAnswered() // as the stores read their records
		page.Records = append(page.Records, rec)
	}
	return page, nil
}

// Index is an in-memory study index.
type Index struct {
	mu        sync.Mutex
	studies   map[string]*pipeline.StudySummary
	series    map[string]map[string]bool                    // study -> series -> seen
	instances map[string]map[string]pipeline.InstanceRecord // study -> sop+"/"+sha -> record
	first     map[string]pipeline.FirstContent              // sop -> first content indexed, in any study
	sopIn     map[string]map[string]bool                    // sop -> studies it is indexed in
	rejected  map[string]map[string]bool                    // study -> SOP Instance UIDs rejected (RecordRejected)
	published map[string]time.Time
	// ledgerReads counts EventPublished calls.
	ledgerReads int
}

var _ pipeline.IndexStore = (*Index)(nil)

// LedgerReads returns how many times EventPublished was called.
func (x *Index) LedgerReads() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.ledgerReads
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{
		studies: map[string]*pipeline.StudySummary{}, series: map[string]map[string]bool{},
		instances: map[string]map[string]pipeline.InstanceRecord{}, first: map[string]pipeline.FirstContent{},
		sopIn: map[string]map[string]bool{}, rejected: map[string]map[string]bool{},
		published: map[string]time.Time{},
	}
}

// UpsertInstance implements pipeline.IndexStore.
func (x *Index) UpsertInstance(_ context.Context, in pipeline.InstanceRecord) (pipeline.UpsertResult, error) {
	if in.StudyInstanceUID == "" || in.SOPInstanceUID == "" {
		return pipeline.UpsertResult{}, fmt.Errorf("pipelinetest: upsert instance: study and SOP instance UID are required")
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	ik := in.SOPInstanceUID + "/" + in.ContentIdentity
	if prev, ok := x.instances[in.StudyInstanceUID][ik]; ok {
		st := x.studies[in.StudyInstanceUID]
		st.NoteResend(prev, in)
		return pipeline.UpsertResult{Outcome: pipeline.InstanceDuplicate, Study: cloneStudy(st), Instance: prev}, nil
	}
	st := x.studies[in.StudyInstanceUID]
	if st == nil {
		st = &pipeline.StudySummary{}
		x.studies[in.StudyInstanceUID] = st
		x.series[in.StudyInstanceUID] = map[string]bool{}
		x.instances[in.StudyInstanceUID] = map[string]pipeline.InstanceRecord{}
	}
	if _, ok := x.first[in.SOPInstanceUID]; !ok {
		x.first[in.SOPInstanceUID] = pipeline.FirstContent{ContentIdentity: in.ContentIdentity, StudyInstanceUID: in.StudyInstanceUID}
	}
	outcome := pipeline.ContentOutcome(x.first[in.SOPInstanceUID], in)
	newSeries := !x.series[in.StudyInstanceUID][in.SeriesInstanceUID]
	x.series[in.StudyInstanceUID][in.SeriesInstanceUID] = true
	st.Count(in, outcome, newSeries)
	in = in.Indexed(outcome, st.Merge(in))
	x.instances[in.StudyInstanceUID][ik] = in
	if x.sopIn[in.SOPInstanceUID] == nil {
		x.sopIn[in.SOPInstanceUID] = map[string]bool{}
	}
	x.sopIn[in.SOPInstanceUID][in.StudyInstanceUID] = true
	return pipeline.UpsertResult{Outcome: outcome, Study: cloneStudy(st), Instance: in}, nil
}

// StoreName sets the Patient's Name study uid holds to name, as written
// (IndexHarness.StoreName).
func (x *Index) StoreName(uid, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.studies[uid].PatientName = name
}

func cloneStudy(s *pipeline.StudySummary) pipeline.StudySummary {
	c := *s
	c.Modalities = slices.Clone(s.Modalities)
	c.CallingAEs = slices.Clone(s.CallingAEs)
	c.Findings = slices.Clone(s.Findings)
	return c
}

// GetStudy implements pipeline.IndexStore.
func (x *Index) GetStudy(_ context.Context, uid string) (pipeline.StudyDetail, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	st := x.studies[uid]
	if st == nil {
		return pipeline.StudyDetail{}, fmt.Errorf("pipelinetest: study: %w", pipeline.ErrNotFound)
	}
	instances := slices.Collect(maps.Values(x.instances[uid]))
	rejected := pipeline.NewRejectedTally(instances)
	for sop := range x.rejected[uid] {
		rejected.Add(sop)
	}
	return pipeline.NewStudyDetail(cloneStudy(st), instances, rejected.Count()), nil
}

// NoteSent implements pipeline.IndexStore.
func (x *Index) NoteSent(_ context.Context, studyUID string, at time.Time) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	st := x.studies[studyUID]
	if st == nil {
		return fmt.Errorf("pipelinetest: note sent: %w", pipeline.ErrNotFound)
	}
	st.NoteSent(at)
	return nil
}

// RecordRejected implements pipeline.IndexStore.
func (x *Index) RecordRejected(_ context.Context, r pipeline.RejectedInstance) error {
	if !r.Valid() {
		return fmt.Errorf("pipelinetest: record rejected: invalid UIDs")
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.rejected[r.StudyInstanceUID] == nil {
		x.rejected[r.StudyInstanceUID] = map[string]bool{}
	}
	x.rejected[r.StudyInstanceUID][r.SOPInstanceUID] = true
	return nil
}

// Instances implements pipeline.IndexStore.
func (x *Index) Instances(_ context.Context, sop string) ([]pipeline.InstanceRecord, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []pipeline.InstanceRecord
	for study := range x.sopIn[sop] { // a lookup of every study made a request of 50,000 instances take minutes
		for _, in := range x.instances[study] {
			if in.SOPInstanceUID == sop {
				out = append(out, in)
			}
		}
	}
	slices.SortFunc(out, func(a, b pipeline.InstanceRecord) int {
		return cmp.Or(cmp.Compare(a.StudyInstanceUID, b.StudyInstanceUID), cmp.Compare(a.ContentIdentity, b.ContentIdentity))
	})
	return out, nil
}

// Studies returns every study, by Study Instance UID: what a test holds
// the index to (no port lists every study).
func (x *Index) Studies() []pipeline.StudySummary {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]pipeline.StudySummary, 0, len(x.studies))
	for _, st := range x.studies {
		out = append(out, cloneStudy(st))
	}
	slices.SortFunc(out, func(a, b pipeline.StudySummary) int { return cmp.Compare(a.StudyInstanceUID, b.StudyInstanceUID) })
	return out
}

// StableStudies implements pipeline.IndexStore.
func (x *Index) StableStudies(_ context.Context, quietSince time.Time, limit int) ([]pipeline.StudySummary, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []pipeline.StudySummary
	for _, st := range x.studies {
		if !st.Quiet().After(quietSince) && st.Revision > st.AnnouncedRevision {
			out = append(out, cloneStudy(st))
		}
	}
	slices.SortFunc(out, pipeline.CompareStable)
	if limit = pipeline.PageLimit(limit, pipeline.DefaultPage, pipeline.MaxPage); len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// MarkAnnounced implements pipeline.IndexStore.
func (x *Index) MarkAnnounced(_ context.Context, uid string, revision, version int64, _ time.Time) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	st := x.studies[uid]
	if st == nil {
		return fmt.Errorf("pipelinetest: mark announced: %w", pipeline.ErrNotFound)
	}
	if st.AnnouncedVersion != version-1 {
		return fmt.Errorf("pipelinetest: mark announced: %w", pipeline.ErrConditionFailed)
	}
	st.AnnouncedVersion, st.AnnouncedRevision = version, revision
	return nil
}

// DeferAnnouncement implements pipeline.IndexStore.
func (x *Index) DeferAnnouncement(_ context.Context, uid string, at time.Time) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	st := x.studies[uid]
	if st == nil {
		return fmt.Errorf("pipelinetest: defer announcement: %w", pipeline.ErrNotFound)
	}
	if at.After(st.LastActivity) {
		st.LastActivity = at
	}
	return nil
}

// EventPublished implements pipeline.IndexStore.
func (x *Index) EventPublished(_ context.Context, id string) (bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.ledgerReads++
	_, ok := x.published[id]
	return ok, nil
}

// MarkEventPublished implements pipeline.IndexStore.
func (x *Index) MarkEventPublished(_ context.Context, id string, at time.Time) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.published[id]; !ok {
		x.published[id] = at
	}
	return nil
}

// Events records published events.
type Events struct {
	mu     sync.Mutex
	events []pipeline.Event
	// FailEntries makes the next calls report these many leading entries
	// as failed (one call each), simulating PutEvents partial failures.
	FailEntries []int
	// Refuse, when set, names the events refused on their own (an
	// invalid or too large entry): each is reported failed with Refused
	// and its code, every time.
	Refuse func(pipeline.Event) (code string, refused bool)
	// Err, when set, fails every call.
	Err   error
	Calls int
}

var _ pipeline.EventPublisher = (*Events)(nil)

// Publish implements pipeline.EventPublisher.
func (e *Events) Publish(_ context.Context, events []pipeline.Event) ([]pipeline.FailedEntry, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.Calls++
	if e.Err != nil {
		return nil, e.Err
	}
	fail := 0
	if len(e.FailEntries) > 0 {
		fail, e.FailEntries = e.FailEntries[0], e.FailEntries[1:]
	}
	var failed []pipeline.FailedEntry
	for i, ev := range events {
		if e.Refuse != nil {
			if code, refused := e.Refuse(ev); refused {
				failed = append(failed, pipeline.FailedEntry{Index: i, Refused: true, Code: code})
				continue
			}
		}
		if i < fail {
			failed = append(failed, pipeline.FailedEntry{Index: i, Code: "ThrottlingException"})
			continue
		}
		e.events = append(e.events, ev)
	}
	return failed, nil
}

// All returns the events accepted so far.
func (e *Events) All() []pipeline.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.events)
}

// Fakes bundles one of each fake.
type Fakes struct {
	Objects     *Objects
	Audit       *Audit
	Index       *Index
	Events      *Events
	Commitments *Commitments
	Reporter    *Reporter
}

// New returns fresh fakes.
func New() *Fakes {
	return &Fakes{Objects: NewObjects(), Audit: NewAudit(), Index: NewIndex(), Events: &Events{},
		Commitments: NewCommitments(), Reporter: &Reporter{}}
}

// ProcessSCPRecord stores the SCP's association record r where the SCP
// writes it (associationaudit.Key) and has p process it, as the audit
// function does.
func (f *Fakes) ProcessSCPRecord(ctx context.Context, p *pipeline.Pipeline, r associationaudit.Record) error {
	body, err := associationaudit.Marshal(r)
	if err != nil {
		return err
	}
	k, err := associationaudit.Key(r)
	if err != nil {
		return err
	}
	f.Objects.Add(k, body, nil)
	return p.ProcessAuditRecord(ctx, k)
}

// Pipeline returns a pipeline wired to f.
func (f *Fakes) Pipeline() *pipeline.Pipeline {
	return &pipeline.Pipeline{Objects: f.Objects, Writer: f.Objects, Audit: f.Audit, Index: f.Index, Events: f.Events,
		Commitments: f.Commitments, Reporter: f.Reporter}
}
