package pipelinee2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// chainStudy is one bad-luck case's study, apart from every other case's,
// so each checks its own counts.
type chainStudy struct {
	e           *env
	uid, series string
}

func (e *env) newStudy(n int) chainStudy {
	uid := fmt.Sprintf("1.2.826.0.1.3680043.10.77.%d", n)
	return chainStudy{e: e, uid: uid, series: uid + ".1"}
}

func (s chainStudy) sop(series, n int) string { return fmt.Sprintf("%s.%d.%d", s.uid, series, n) }

func (s chainStudy) instance(series, n int) pt.Instance {
	in := ctInstance(s.sop(series, n))
	in.StudyUID, in.SeriesUID = s.uid, fmt.Sprintf("%s.%d", s.uid, series)
	return in
}

func (s chainStudy) key(in pt.Instance, suffix string) string {
	return "incoming/2026/01/15/" + in.StudyUID + "/" + in.SeriesUID + "/" + in.SOPUID + suffix + ".dcm"
}

// put stores in under its key and returns the S3 notification of it.
func (s chainStudy) put(in pt.Instance, received time.Time) string {
	key := s.key(in, "")
	return s3Notification(key, len(s.e.putInstance(key, in, received)))
}

// processed puts in, processes its S3 notification with validate and
// returns the notification and the state it left.
func (s chainStudy) processed(t *testing.T, in pt.Instance, received time.Time) (string, chainState) {
	t.Helper()
	note := s.put(in, received)
	s.e.invokeBatch(t, "validate", sqsEvent(note))
	return note, s.state(t)
}

// state is what a study's processing left: the study's counts, its
// instance records, its audit records and its events by id.
type chainState struct {
	Instances, Series, Conflicts, Revision int
	Contents                               []string // sop and content identity of each instance item
	Audit                                  []string // record ids
	Events                                 map[string]int
}

func (s chainStudy) state(t *testing.T) chainState {
	t.Helper()
	ctx := context.Background()
	var st chainState
	d, err := s.e.index.GetStudy(ctx, s.uid)
	if err != nil && !errors.Is(err, pipeline.ErrNotFound) { // not found: nothing of it indexed
		t.Fatalf("study: %v", err)
	}
	st.Instances, st.Series, st.Conflicts, st.Revision = d.InstanceCount, d.SeriesCount, d.ConflictCount, int(d.Revision)
	for _, in := range d.Instances {
		st.Contents = append(st.Contents, in.SOPInstanceUID+" "+in.ContentIdentity)
	}
	sort.Strings(st.Contents)
	page, err := s.e.audit.Query(ctx, pipeline.AuditQuery{StudyInstanceUID: s.uid, Limit: 1000})
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	for _, r := range page.Records {
		st.Audit = append(st.Audit, r.ID)
	}
	sort.Strings(st.Audit)
	st.Events = s.e.eventsOf(t, s.uid)
	return st
}

// eventsOf counts the captured events of a study by detail type and eventId.
func (e *env) eventsOf(t *testing.T, studyUID string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, ev := range e.events.All() {
		var d struct {
			EventID          string `json:"eventId"`
			StudyInstanceUID string `json:"studyInstanceUid"`
		}
		if err := json.Unmarshal([]byte(ev.Detail), &d); err != nil {
			t.Fatal(err)
		}
		if d.StudyInstanceUID == studyUID {
			out[ev.DetailType+" "+d.EventID]++
		}
	}
	return out
}

// invokeFailures invokes fn with the batch and returns its failed message ids.
func (e *env) invokeFailures(t *testing.T, fn string, ev events.SQSEvent) []string {
	t.Helper()
	var resp events.SQSEventResponse
	e.invoke(t, fn, ev, &resp)
	return failures(resp)
}

// stallAfter is a proxy that forwards every request, and withholds the
// answer of the one after the first n (the request done, its answer
// lost) until the caller gives up: a function cut at its deadline in the
// middle of a message.
type stallAfter struct {
	next http.Handler
	mu   sync.Mutex
	n    int // requests to answer before the stall; <0: none stalls
	seen int
}

func newStallAfter(t *testing.T, target string) (*stallAfter, string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	s := &stallAfter{next: httputil.NewSingleHostReverseProxy(u), n: -1}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func (s *stallAfter) stallAt(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n, s.seen = n, 0
}

// requests is how many requests it saw since stallAt.
func (s *stallAfter) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen
}

func (s *stallAfter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	stall := s.n >= 0 && s.seen == s.n
	s.seen++
	s.mu.Unlock()
	if !stall {
		s.next.ServeHTTP(w, r)
		return
	}
	// Done, on a context of its own so the caller's cut does not cancel
	// it, and never answered.
	rec := httptest.NewRecorder()
	s.next.ServeHTTP(rec, r.Clone(context.Background()))
	<-r.Context().Done()
}

// TestChainBadLuck strikes the validate function's chain with what SQS, S3,
// DynamoDB, EventBridge and Lambda may do, and holds it to exactly-once
// effects: each content counted, audited and announced once (an event
// again only under its own eventId).
func TestChainBadLuck(t *testing.T) {
	e := newEnv(t, "1s")
	received := time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC)

	t.Run("an overwrite's older event last", func(t *testing.T) {
		s := e.newStudy(1)
		a := s.instance(1, 1)
		first := s.put(a, received)
		b := a
		b.PatientName = "Roe^Robert" // other content under the same key
		second := s.put(b, received.Add(time.Second))
		e.invokeBatch(t, "validate", sqsEvent(second))
		want := s.state(t)
		e.invokeBatch(t, "validate", sqsEvent(first))
		e.invokeBatch(t, "validate", sqsEvent(second, first))
		got := s.state(t)
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("the older event changed the state (-after the newer +after both):\n%s", d)
		}
		if got.Instances != 1 || got.Conflicts != 0 || len(got.Contents) != 1 || len(got.Audit) != 1 || len(got.Events) != 1 {
			t.Errorf("state %+v: want one content, one record, one event", got)
		}
	})

	// In order, the overwrite is a conflict beside the first content,
	// under the same key (docs/pipeline.md, "Duplicates"): the first stays
	// as indexed, audited and announced; redeliveries change nothing.
	t.Run("an overwrite processed in order", func(t *testing.T) {
		s := e.newStudy(3)
		a := s.instance(1, 1)
		first, before := s.processed(t, a, received)
		b := a
		b.PatientName = "Roe^Robert"
		second, got := s.processed(t, b, received.Add(time.Second))
		e.invokeBatch(t, "validate", sqsEvent(second, first))
		if d := cmp.Diff(got, s.state(t)); d != "" {
			t.Errorf("the redeliveries changed the state (-before +after):\n%s", d)
		}
		if got.Instances != 1 || got.Conflicts != 1 || got.Revision != 2 || len(got.Contents) != 2 || len(got.Audit) != 2 || len(got.Events) != 2 {
			t.Errorf("state %+v: want the first content and a conflict, two records, two events", got)
		}
		if !cmp.Equal(before.Contents, got.Contents[:1]) && !cmp.Equal(before.Contents, got.Contents[1:]) {
			t.Errorf("the first content %v is not indexed as it was: %v", before.Contents, got.Contents)
		}
		page, err := e.audit.Query(context.Background(), pipeline.AuditQuery{StudyInstanceUID: s.uid, Outcome: pipeline.OutcomeConflict})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Records) != 1 || page.Records[0].ObjectKey != s.key(a, "") || page.Records[0].HeldObjectKey != s.key(a, "") {
			t.Errorf("conflict records %+v: want one naming the key, held under it", page.Records)
		}
		// Each content's row names its own DICOM JSON: named after the key
		// alone, the second's was written over the first's, and the
		// first's row named the second's patient.
		d, err := e.index.GetStudy(context.Background(), s.uid)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range d.Instances {
			want := map[bool]string{false: a.PatientName, true: b.PatientName}[r.Conflict]
			if got := e.patientNameIn(t, r.MetadataKey); got != want {
				t.Errorf("the row of %s (conflict %v) names a DICOM JSON of %q, want %q", r.ContentIdentity, r.Conflict, got, want)
			}
		}
	})

	// An invalid object overwritten with another invalid one, in order:
	// each content is quarantined, audited and announced with a copy and
	// findings of its own (pipeline.QuarantineKeys); named after the key
	// alone, the second's were written over the first's, which the first's
	// record and Instance Rejected still named. Redeliveries change nothing.
	t.Run("an invalid object overwritten with another, in order", func(t *testing.T) {
		s := e.newStudy(4)
		a := s.instance(1, 1)
		a.Drop = []uint32{pt.Tag(0x20, 0x0E)} // no Series Instance UID: invalid
		b := a
		b.PatientName = "Roe^Robert"
		first, _ := s.processed(t, a, received)
		second, got := s.processed(t, b, received.Add(time.Second))
		e.invokeBatch(t, "validate", sqsEvent(second, first))
		if d := cmp.Diff(got, s.state(t)); d != "" {
			t.Errorf("the redeliveries changed the state (-before +after):\n%s", d)
		}
		if got.Instances != 0 || len(got.Audit) != 2 || len(got.Events) != 2 {
			t.Errorf("state %+v: want two rejected records, two events, nothing indexed", got)
		}
		page, err := e.audit.Query(context.Background(), pipeline.AuditQuery{StudyInstanceUID: s.uid, Outcome: pipeline.OutcomeRejected})
		if err != nil {
			t.Fatal(err)
		}
		copies := map[string]string{} // quarantine key by content identity, as the records name them
		for _, r := range page.Records {
			copies[r.ContentIdentity] = r.QuarantineKey
			sum := sha256.Sum256(e.get(t, r.QuarantineKey))
			var findings map[string]any
			if err := json.Unmarshal(e.get(t, pipeline.QuarantineFindingsKey(r.QuarantineKey)), &findings); err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(sum[:]) != r.ContentIdentity || findings[pipeline.ContentIdentityField] != r.ContentIdentity {
				t.Errorf("the record of %s names a copy of %x and findings of %v", r.ContentIdentity, sum, findings[pipeline.ContentIdentityField])
			}
		}
		if len(copies) != 2 || copies[""] != "" || len(slices.Compact(slices.Sorted(maps.Values(copies)))) != 2 {
			t.Errorf("the records name copies %v; want one of each content", copies)
		}
		for _, ev := range e.events.All() {
			var d pipeline.InstanceRejectedDetail
			if err := json.Unmarshal([]byte(ev.Detail), &d); err != nil {
				t.Fatal(err)
			}
			if d.StudyInstanceUID == s.uid && (d.QuarantineKey != copies[d.SHA256] || d.FindingsKey != pipeline.QuarantineFindingsKey(copies[d.SHA256])) {
				t.Errorf("the Instance Rejected of %s names %s and %s; its record %s", d.SHA256, d.QuarantineKey, d.FindingsKey, copies[d.SHA256])
			}
		}
	})

	// A resend the SCP found held of an object quarantined by a build
	// before copies were named after their bytes: the copy is named after
	// the key, and the object's rejected record names none. The resend's
	// record names that copy, read from the rejected record (the audit
	// function's Query of bySop); it named the new-style copy, which
	// exists only once the object is delivered again since.
	t.Run("a resend of an object quarantined before the upgrade", func(t *testing.T) {
		ctx := context.Background()
		cs := e.newStudy(50)
		a := cs.instance(1, 1)
		a.Drop = []uint32{pt.Tag(0x20, 0x0E)} // no Series Instance UID: invalid
		key := cs.key(a, "")
		cs.processed(t, a, received)
		// What the build before left instead: its record without the
		// copy's name (the same id), the copy and findings named after
		// the key.
		page, err := e.audit.Query(ctx, pipeline.AuditQuery{SOPInstanceUID: a.SOPUID, Outcome: pipeline.OutcomeRejected})
		if err != nil || len(page.Records) != 1 {
			t.Fatalf("rejected records %+v, %v; want one", page.Records, err)
		}
		rec := page.Records[0]
		legacy, _ := pipeline.LegacyQuarantineKeys(key)
		for _, k := range []string{rec.QuarantineKey, pipeline.QuarantineFindingsKey(rec.QuarantineKey)} {
			e.put(strings.Replace(k, strings.TrimSuffix(rec.QuarantineKey, ".dcm"), strings.TrimSuffix(legacy, ".dcm"), 1), e.get(t, k), nil)
			if _, err := e.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(auditTable), Key: map[string]ddbtypes.AttributeValue{
			"pk": s("AUDIT#" + rec.ID), "sk": s("RECORD")}}); err != nil {
			t.Fatal(err)
		}
		rec.QuarantineKey = ""
		if _, err := e.audit.Append(ctx, rec); err != nil {
			t.Fatal(err)
		}
		// The SCP's record of the resend it found held.
		dup := associationaudit.Duplicate(associationaudit.Record{Time: received.Add(time.Hour), AssociationID: "assoc-resend-50",
			CallingAE: "MODALITY1", CalledAE: "INGEST", PeerAddr: "192.0.2.50:104", Seq: 2}, pt.CTStorage, a.SOPUID, a.StudyUID, a.SeriesUID, key)
		body, err := associationaudit.Marshal(dup)
		if err != nil {
			t.Fatal(err)
		}
		recordKey, _ := associationaudit.Key(dup)
		e.put(recordKey, body, nil)
		e.invokeBatch(t, "audit", sqsEvent(s3Notification(recordKey, len(body))))
		page, err = e.audit.Query(ctx, pipeline.AuditQuery{SOPInstanceUID: a.SOPUID, Outcome: pipeline.OutcomeDuplicate})
		if err != nil || len(page.Records) != 1 {
			t.Fatalf("duplicate records %+v, %v; want the resend's", page.Records, err)
		}
		if got := page.Records[0].QuarantineKey; got != legacy || !e.exists(got) {
			t.Errorf("the resend's record names %s (there: %v); want %s, the copy made", got, e.exists(got), legacy)
		}
	})

	t.Run("an event for a key deleted since", func(t *testing.T) {
		s := e.newStudy(2)
		in := s.instance(1, 1)
		note, want := s.processed(t, in, received)
		if _, err := e.s3.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(s.key(in, ""))}); err != nil {
			t.Fatal(err)
		}
		// Never processed before its deletion, and redelivered after it.
		gone := s.instance(1, 2)
		goneNote := s.put(gone, received)
		if _, err := e.s3.DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(s.key(gone, ""))}); err != nil {
			t.Fatal(err)
		}
		if got := e.invokeFailures(t, "validate", sqsEvent(note, goneNote)); !cmp.Equal(got, []string{"msg-1", "msg-2"}) {
			t.Errorf("failures %v, want both: the object is not there to process (retried, then the DLQ)", got)
		}
		if d := cmp.Diff(want, s.state(t)); d != "" {
			t.Errorf("state changed (-before +after):\n%s", d)
		}
	})

	t.Run("PutEvents entries failed", func(t *testing.T) {
		for i, tc := range []struct {
			code  string
			fails int // entries failed in a row; the publish tries 5 times
			retry bool
		}{
			{"InternalFailure", 2, false},
			{"ThrottlingException", 4, false},
			{"InternalFailure", 5, true},
			{"ThrottlingException", 7, true},
		} {
			t.Run(fmt.Sprintf("%s ×%d", tc.code, tc.fails), func(t *testing.T) {
				s := e.newStudy(10 + i)
				note := s.put(s.instance(1, 1), received)
				e.events.FailWith(tc.fails, tc.code)
				got := e.invokeFailures(t, "validate", sqsEvent(note))
				if tc.retry != (len(got) == 1) {
					t.Fatalf("failures %v; want the message failed: %v", got, tc.retry)
				}
				for range 2 { // redelivered (and again)
					e.invokeBatch(t, "validate", sqsEvent(note))
				}
				st := s.state(t)
				if len(st.Events) != 1 || len(st.Audit) != 1 || st.Instances != 1 {
					t.Errorf("state %+v: want one event, one record, one instance", st)
				}
				for id, n := range st.Events {
					if n != 1 {
						t.Errorf("%s published %d times", id, n)
					}
				}
			})
		}
		e.events.FailWith(0, "")
	})

	t.Run("two invocations of one study at once", func(t *testing.T) {
		e.startFunction(e.rie, "validate-2", "validate")
		s := e.newStudy(20)
		var a, b []string
		for n := range 6 {
			a = append(a, s.put(s.instance(1+n%2, n), received.Add(time.Duration(n)*time.Millisecond)))
			b = append(b, s.put(s.instance(2+n%2, 10+n), received.Add(time.Duration(n)*time.Millisecond)))
		}
		run := func() {
			var wg sync.WaitGroup
			wg.Go(func() { e.invokeBatch(t, "validate", sqsEvent(a...)) })
			wg.Go(func() { e.invokeBatch(t, "validate-2", sqsEvent(b...)) })
			wg.Wait()
		}
		run()
		st := s.state(t)
		if st.Instances != 12 || st.Series != 3 || st.Revision != 12 || st.Conflicts != 0 || len(st.Contents) != 12 || len(st.Audit) != 12 || len(st.Events) != 12 {
			t.Errorf("state %+v: want 12 instances in 3 series, revision 12, 12 records and events", st)
		}
		run() // both redelivered, at once again
		if d := cmp.Diff(st, s.state(t)); d != "" {
			t.Errorf("redelivery changed the state (-before +after):\n%s", d)
		}
	})

	t.Run("a batch with messages that are no S3 event", func(t *testing.T) {
		s := e.newStudy(30)
		note := s.put(s.instance(1, 1), received)
		got := e.invokeFailures(t, "validate", sqsEvent(s3TestEvent, "this is not json", `{"Records":`, note, `{"Type":"Notification","Message":"{}"}`))
		if d := cmp.Diff([]string{"msg-2", "msg-3", "msg-5"}, got); d != "" {
			t.Errorf("failures (-want +got):\n%s", d)
		}
		if st := s.state(t); st.Instances != 1 || len(st.Events) != 1 || len(st.Audit) != 1 {
			t.Errorf("the S3 event of the batch: state %+v", st)
		}
	})
}

// TestChainCutAtTheDeadline cuts validate at its deadline in the middle of
// a message, after each of its DynamoDB and EventBridge requests in turn
// (the request done, its answer lost), and redelivers the message: the
// retry finishes the work, and the state is a clean run's, each content
// counted, audited and announced once (an event again only with its id).
func TestChainCutAtTheDeadline(t *testing.T) {
	e := newEnv(t, "1s")
	ddb, ddbURL := newStallAfter(t, e.ddbURL)
	eb, ebURL := newStallAfter(t, e.ebURL)
	// 3 s: messages are cut 1 s before the deadline.
	e.startFunction(e.rie, "validate-cut", "validate", "AWS_LAMBDA_FUNCTION_TIMEOUT=3",
		"AWS_ENDPOINT_URL_DYNAMODB="+ddbURL, "AWS_ENDPOINT_URL_EVENTBRIDGE="+ebURL)
	received := time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC)

	// A clean run: how many requests a new instance makes.
	clean := e.newStudy(100)
	e.invokeBatch(t, "validate-cut", sqsEvent(clean.put(clean.instance(1, 1), received)))
	want := clean.state(t)
	ddbCalls := ddb.requests()
	if ddbCalls == 0 || len(want.Events) != 1 {
		t.Fatalf("clean run: %d DynamoDB requests, state %+v", ddbCalls, want)
	}
	norm := func(st chainState) chainState {
		// The same shape as the clean run's, in another study.
		for i := range st.Contents {
			st.Contents[i] = "content"
		}
		for i := range st.Audit {
			st.Audit[i] = "record"
		}
		ev := map[string]int{} // distinct event ids by detail type: an event again has its id
		for k := range st.Events {
			ev[k[:len(k)-33]]++
		}
		st.Events = ev
		return st
	}
	wantN := norm(want)
	for _, side := range []struct {
		name  string
		proxy *stallAfter
		calls int
	}{{"DynamoDB", ddb, ddbCalls}, {"EventBridge", eb, 1}} {
		for n := range side.calls {
			t.Run(fmt.Sprintf("%s request %d", side.name, n+1), func(t *testing.T) {
				s := e.newStudy(200 + 100*len(side.name) + n)
				note := s.put(s.instance(1, 1), received)
				side.proxy.stallAt(n)
				got := e.invokeFailures(t, "validate-cut", sqsEvent(note))
				side.proxy.stallAt(-1)
				if len(got) != 1 {
					t.Fatalf("cut at the deadline: failures %v, want the message", got)
				}
				for range 2 { // redelivered, and again
					e.invokeBatch(t, "validate-cut", sqsEvent(note))
				}
				st := s.state(t)
				if d := cmp.Diff(wantN, norm(st)); d != "" {
					t.Errorf("after the retry (-clean run +this one):\n%s", d)
				}
			})
		}
	}
}

// overwriteOnRead is a proxy in front of S3 that overwrites key (with
// put) just before the first request that reads it: its first ranged GET
// (the object replaced between validate's HEAD and its GETs) or, atCopy,
// its first copy (replaced after the GETs found it invalid, before the
// quarantine's CopyObject). It answers a read's precondition as S3 does
// (gofakes3 ignores them): a GET's If-Match, a copy's
// x-amz-copy-source-if-match, 412 PreconditionFailed unless the key holds
// that ETag.
type overwriteOnRead struct {
	next   http.Handler
	key    string
	atCopy bool
	put    func()
	etag   func() string // the key's ETag now
	once   sync.Once
}

func (o *overwriteOnRead) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var copies bool
	var pin string
	switch {
	case r.Method == http.MethodGet && r.Header.Get("Range") != "" && r.URL.Path == "/"+bucket+"/"+o.key:
		pin = r.Header.Get("If-Match")
	case r.Method == http.MethodPut && strings.TrimPrefix(r.Header.Get("X-Amz-Copy-Source"), "/") == bucket+"/"+o.key:
		copies, pin = true, r.Header.Get("X-Amz-Copy-Source-If-Match")
	default:
		o.next.ServeHTTP(w, r)
		return
	}
	if copies == o.atCopy {
		o.once.Do(o.put)
	}
	if pin != "" && pin != o.etag() {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusPreconditionFailed)
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>`)
		return
	}
	o.next.ServeHTTP(w, r)
}

// TestChainOverwrittenWhileRead: an object overwritten while validate
// processes it (S3 lets anyone with s3:PutObject do it; the SCP never
// does, its puts are conditional) must be processed as one version, the
// new one in the end:
//
//   - between its HEAD and its ranged GETs: read as a mix of both
//     versions, the index held a content of the new version's header
//     under an identity of the old one's checksum, which neither version
//     has, and the new version's own event made a spurious conflict;
//   - after its GETs found the old version invalid, before its quarantine
//     copy: the copy took the new, valid version's bytes into quarantine/
//     as the old one's, audited and announced as rejected, while the new
//     version's own event indexed them as stored.
//
// Whatever validate reads, the state ends as the new version's alone, as
// a chain that only ever saw the new version leaves it: its contents,
// counts, audit records and events, and nothing in quarantine/: neither a
// copy nor the old version's findings document (written before the copy,
// it stayed when the copy was refused).
func TestChainOverwrittenWhileRead(t *testing.T) {
	e := newEnv(t, "1s")
	clean := newEnv(t, "1s") // the new versions alone
	received := time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC)
	u, err := url.Parse(e.s3URL)
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name   string
		atCopy bool
		old    func(pt.Instance) pt.Instance
	}{
		{"between its HEAD and its GETs", false, func(in pt.Instance) pt.Instance { return in }},
		{"between its GETs and its quarantine copy", true, func(in pt.Instance) pt.Instance {
			in.Drop = []uint32{pt.Tag(0x20, 0x0E)} // no Series Instance UID: invalid
			return in
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := e.newStudy(1 + i)
			b := s.instance(1, 1)
			a := tc.old(b)
			b.PatientName = "Roe^Robert"
			b.Rows = 128 // another size too
			key := s.key(a, "")
			first := s.put(a, received)
			var second string
			etag := func() string {
				h, err := e.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
				if err != nil {
					t.Errorf("head: %v", err)
					return ""
				}
				return aws.ToString(h.ETag)
			}
			o := &overwriteOnRead{next: httputil.NewSingleHostReverseProxy(u), key: key, atCopy: tc.atCopy,
				put: func() { second = s.put(b, received.Add(time.Second)) }, etag: etag}
			srv := httptest.NewServer(o)
			t.Cleanup(srv.Close)
			fn := fmt.Sprintf("validate-overwritten-%d", i)
			e.startFunction(e.rie, fn, "validate", "AWS_ENDPOINT_URL_S3="+srv.URL)

			// The older event while the object is replaced, retried if it
			// failed; then the newer one.
			if got := e.invokeFailures(t, fn, sqsEvent(first)); len(got) != 0 {
				t.Logf("the read across the overwrite failed its message (%v): retried", got)
				e.invokeBatch(t, "validate", sqsEvent(first))
			}
			if second == "" {
				t.Fatal("the object was not overwritten while read")
			}
			e.invokeBatch(t, "validate", sqsEvent(second))
			got := s.state(t)

			cs := clean.newStudy(1 + i)
			clean.invokeBatch(t, "validate", sqsEvent(cs.put(b, received.Add(time.Second))))
			want := cs.state(t)
			if d := cmp.Diff(want, got); d != "" || got.Instances != 1 || got.Conflicts != 0 || got.Revision != 1 {
				t.Errorf("state (-the new version's +after the overwrite):\n%s\nstate %+v", d, got)
			}
			// Neither version's copy nor findings, whichever bytes they
			// would be named after (pipeline.QuarantineKeys).
			q, _ := pipeline.LegacyQuarantineKeys(key)
			if got := e.keysUnder(t, strings.TrimSuffix(q, ".dcm")+"."); len(got) != 0 {
				t.Errorf("in quarantine/: %v; want no copy (the new, valid version's bytes copied as the old one's) and no findings (the old version's, describing content not there)", got)
			}
		})
	}
}
