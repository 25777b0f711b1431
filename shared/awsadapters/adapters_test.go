package awsadapters

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

var creds = credentials.NewStaticCredentialsProvider("test", "test", "")

func newS3(t *testing.T) *S3Objects {
	t.Helper()
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	t.Cleanup(srv.Close)
	c := s3.New(s3.Options{Region: "eu-west-1", Credentials: creds, BaseEndpoint: aws.String(srv.URL), UsePathStyle: true})
	if _, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String("bkt")}); err != nil {
		t.Fatal(err)
	}
	return &S3Objects{Client: c, Bucket: "bkt"}
}

func TestS3Objects(t *testing.T) {
	ctx := context.Background()
	o := newS3(t)
	key := "incoming/2026/01/15/1.2/1.2.3/1.2.3.4 x.dcm"
	body := []byte(strings.Repeat("0123456789", 100))
	if err := o.Put(ctx, key, body, "application/dicom", map[string]string{"calling-ae": "MOD1", "sha256": "abc"}); err != nil {
		t.Fatal(err)
	}
	info, err := o.Head(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != 1000 || info.Metadata["calling-ae"] != "MOD1" || info.Metadata["sha256"] != "abc" {
		t.Errorf("head = %+v", info)
	}
	tests := []struct {
		name        string
		off, length int64
		want        string
	}{
		{"range", 5, 10, "5678901234"},
		{"to the end", 995, -1, "56789"},
		{"past the end", 2000, 10, ""},
		{"zero", 0, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := o.OpenRange(ctx, key, tt.off, tt.length)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(b) != tt.want {
				t.Errorf("got %q, %v; want %q", b, err, tt.want)
			}
		})
	}
	if err := o.Copy(ctx, info, "quarantine/x.dcm", map[string]string{"quarantined": "true"}); err != nil {
		t.Fatal(err)
	}
	q, err := o.Head(ctx, "quarantine/x.dcm")
	if err != nil {
		t.Fatal(err)
	}
	if q.Size != 1000 || q.Metadata["calling-ae"] != "MOD1" || q.Metadata["quarantined"] != "true" {
		t.Errorf("copy kept %+v", q)
	}
	if _, err := o.Head(ctx, "incoming/none.dcm"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("missing object: %v", err)
	}
	if _, err := o.OpenRange(ctx, "incoming/none.dcm", 0, 10); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("missing object: %v", err)
	}
}

func TestEventBridgePublisher(t *testing.T) {
	var got []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Entries []map[string]any }
		json.NewDecoder(r.Body).Decode(&in)
		got = append(got, in.Entries...)
		// The second entry is throttled.
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		io.WriteString(w, `{"FailedEntryCount":1,"Entries":[{"EventId":"a"},{"ErrorCode":"ThrottlingException","ErrorMessage":"slow down"},{"EventId":"c"}]}`)
	}))
	defer srv.Close()
	c := eventbridge.New(eventbridge.Options{Region: "eu-west-1", Credentials: creds, BaseEndpoint: aws.String(srv.URL)})
	p := &EventBridgePublisher{Client: c, BusName: "bus"}
	evs := []pipeline.Event{
		{ID: "1", DetailType: pipeline.DetailTypeInstanceStored, Time: time.Now(), Detail: json.RawMessage(`{"a":1}`)},
		{ID: "2", DetailType: pipeline.DetailTypeInstanceStored, Time: time.Now(), Detail: json.RawMessage(`{"a":2}`)},
		{ID: "3", DetailType: pipeline.DetailTypeStudyReceived, Time: time.Now(), Detail: json.RawMessage(`{"a":3}`), Resources: []string{"s3://b/k"}},
	}
	failed, err := p.Publish(context.Background(), evs)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]pipeline.FailedEntry{{Index: 1, Code: "ThrottlingException"}}, failed); d != "" {
		t.Errorf("failed (-want +got):\n%s", d)
	}
	if len(got) != 3 || got[0]["Source"] != pipeline.EventSource || got[0]["EventBusName"] != "bus" || got[2]["DetailType"] != "Study Received" || got[0]["Detail"] != `{"a":1}` {
		t.Errorf("entries = %v", got)
	}
	if _, err := p.Publish(context.Background(), make([]pipeline.Event, 11)); err == nil {
		t.Error("11 entries accepted")
	}
}

// TestEventBridgeRefusedOnItsOwn: an entry EventBridge refuses for what it is (invalid, malformed, too large) is
// reported refused, which the pipeline neither retries nor counts as the bus failing; one the bus fails to take
// (throttled, an internal failure, a bus or role refusing every entry) is not. Every failed entry was one to retry,
// so a study whose event was refused every time counted towards the three failures in a row that stop a run.
func TestEventBridgeRefusedOnItsOwn(t *testing.T) {
	tests := []struct {
		name     string
		entries  int
		status   int    // the call's HTTP status
		body     string // the call's answer
		want     []pipeline.FailedEntry
		wantCall bool // the call failed
	}{
		{"an entry's invalid argument", 2, 200, `{"FailedEntryCount":1,"Entries":[{"EventId":"a"},{"ErrorCode":"InvalidArgument"}]}`,
			[]pipeline.FailedEntry{{Index: 1, Refused: true, Code: "InvalidArgument"}}, false},
		{"an entry's malformed detail", 1, 200, `{"FailedEntryCount":1,"Entries":[{"ErrorCode":"MalformedDetail"}]}`,
			[]pipeline.FailedEntry{{Index: 0, Refused: true, Code: "MalformedDetail"}}, false},
		{"throttled", 1, 200, `{"FailedEntryCount":1,"Entries":[{"ErrorCode":"ThrottlingException"}]}`,
			[]pipeline.FailedEntry{{Index: 0, Code: "ThrottlingException"}}, false},
		{"an internal failure", 1, 200, `{"FailedEntryCount":1,"Entries":[{"ErrorCode":"InternalFailure"}]}`,
			[]pipeline.FailedEntry{{Index: 0, Code: "InternalFailure"}}, false},
		{"not authorized for the source", 1, 200, `{"FailedEntryCount":1,"Entries":[{"ErrorCode":"NotAuthorizedForSourceException"}]}`,
			[]pipeline.FailedEntry{{Index: 0, Code: "NotAuthorizedForSourceException"}}, false},
		{"one entry too large", 1, 400, `{"__type":"ValidationException","message":"Total size of the entries in the request is over the limit."}`,
			[]pipeline.FailedEntry{{Index: 0, Refused: true, Code: "ValidationException"}}, false},
		{"a batch too large", 2, 400, `{"__type":"ValidationException","message":"Total size of the entries in the request is over the limit."}`,
			nil, true},
		// A ValidationException about the call, not the event: every event would meet it.
		{"a bus name that fails its pattern", 1, 400, `{"__type":"ValidationException","message":"1 validation error detected: Value 'no such bus!' at 'entries.1.member.eventBusName' failed to satisfy constraint: Member must satisfy regular expression pattern: [/\\.\\-_A-Za-z0-9]+"}`,
			nil, true},
		{"an endpoint id that fails its pattern", 1, 400, `{"__type":"ValidationException","message":"1 validation error detected: Value 'x' at 'endpointId' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[A-Za-z0-9\\-]+[\\.][A-Za-z0-9\\-]+$"}`,
			nil, true},
		{"a bus that does not exist", 1, 400, `{"__type":"ResourceNotFoundException","message":"Event bus nope does not exist."}`, nil, true},
		{"access denied", 1, 400, `{"__type":"AccessDeniedException","message":"no"}`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/x-amz-json-1.1")
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			c := eventbridge.New(eventbridge.Options{Region: "eu-west-1", Credentials: creds, BaseEndpoint: aws.String(srv.URL),
				RetryMaxAttempts: 1})
			p := &EventBridgePublisher{Client: c, BusName: "bus"}
			evs := make([]pipeline.Event, tt.entries)
			for i := range evs {
				evs[i] = pipeline.Event{ID: fmt.Sprint(i), DetailType: pipeline.DetailTypeStudyReceived, Time: time.Now(), Detail: json.RawMessage(`{}`)}
			}
			failed, err := p.Publish(context.Background(), evs)
			if (err != nil) != tt.wantCall {
				t.Fatalf("err %v, want a failed call %v", err, tt.wantCall)
			}
			if d := cmp.Diff(tt.want, failed); d != "" {
				t.Errorf("failed (-want +got):\n%s", d)
			}
		})
	}
}

// TestAuditCursor: a cursor goes on with its own query, in its partition
// (byDay's: one of the range's days), and a cursor of another query is
// ErrBadCursor, without the cursor's keys (UIDs) in the error.
func TestAuditCursor(t *testing.T) {
	sop := "SOP#1.2.3.99"
	keyAt := func(path auditPath, pk, sk string) map[string]ddbAV {
		return map[string]ddbAV{"pk": sv("AUDIT#x"), "sk": sv(auditSK), path.pkAttr: sv(pk), path.skAttr: sv(sk)}
	}
	key := func(path auditPath, pk string) map[string]ddbAV {
		return keyAt(path, pk, "2026-01-15T10:00:00.000000000Z#x")
	}
	raw := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name        string
		cursor      string
		path        auditPath
		first, last string
		ok          bool
	}{
		{"its partition, a key", encodeCursor(pathBySop, sop, key(pathBySop, sop)), pathBySop, sop, sop, true},
		{"its partition, no key", encodeCursor(pathBySop, sop, nil), pathBySop, sop, sop, true},
		{"a day of the walk, a key", encodeCursor(pathByDay, "DAY#2026-01-15", key(pathByDay, "DAY#2026-01-15")), pathByDay, "DAY#2026-01-16", "DAY#2026-01-14", true},
		{"a day of the walk, no key", encodeCursor(pathByDay, "DAY#2026-01-14", nil), pathByDay, "DAY#2026-01-16", "DAY#2026-01-14", true},
		{"a day before the walk", encodeCursor(pathByDay, "DAY#2026-01-13", nil), pathByDay, "DAY#2026-01-16", "DAY#2026-01-14", false},
		{"a day after the walk", encodeCursor(pathByDay, "DAY#2026-01-17", nil), pathByDay, "DAY#2026-01-16", "DAY#2026-01-14", false},
		{"a day not written as Query writes it", encodeCursor(pathByDay, "DAY#2026-01-15x", nil), pathByDay, "DAY#2026-01-16", "DAY#2026-01-14", false},
		{"another partition", encodeCursor(pathBySop, "SOP#1.2.3.98", nil), pathBySop, sop, sop, false},
		{"another index's key", encodeCursor(pathBySop, sop, key(pathByStudy, sop)), pathBySop, sop, sop, false},
		{"a key in another partition", encodeCursor(pathBySop, sop, key(pathBySop, "SOP#1.2.3.98")), pathBySop, sop, sop, false},
		{"a key without the table's", raw(`{"pk":"SOP#1.2.3.99","key":{"gsi5pk":"SOP#1.2.3.99","gsi5sk":"x"}}`), pathBySop, sop, sop, false},
		{"not base64", "!!!", pathBySop, sop, sop, false},
		{"not JSON", raw("SOP#1.2.3.99"), pathBySop, sop, sop, false},
		// DynamoDB refuses a start key outside the key condition's range
		// (a ValidationException, not ErrBadCursor); one of another day
		// in a day's partition would go on from the wrong place.
		{"a key before the range", encodeCursor(pathBySop, sop, keyAt(pathBySop, sop, "2026-01-13T23:59:59.999999999Z#x")), pathBySop, sop, sop, false},
		{"a key after the range", encodeCursor(pathBySop, sop, keyAt(pathBySop, sop, "2026-01-17T00:00:00.000000000Z#x")), pathBySop, sop, sop, false},
		{"a key at the range's ends", encodeCursor(pathBySop, sop, keyAt(pathBySop, sop, "2026-01-14T00:00:00.000000000Z#x")), pathBySop, sop, sop, true},
		{"a day's key on another day", encodeCursor(pathByDay, "DAY#2026-01-15", keyAt(pathByDay, "DAY#2026-01-15", "2026-01-14T10:00:00.000000000Z#x")),
			pathByDay, "DAY#2026-01-16", "DAY#2026-01-14", false},
		{"a key not a string", raw(`{"pk":"SOP#1.2.3.99","key":{"pk":1}}`), pathBySop, sop, sop, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pk, start, err := decodeCursor(tt.cursor, tt.path, tt.first, tt.last, testSortKeys)
			if !tt.ok {
				if !errors.Is(err, pipeline.ErrBadCursor) || strings.Contains(err.Error(), "1.2.3.9") {
					t.Errorf("err = %v, want ErrBadCursor naming no key", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if again := encodeCursor(tt.path, pk, start); again != tt.cursor {
				t.Errorf("cursor %q read as %q %v, encoded again %q", tt.cursor, pk, start, again)
			}
		})
	}
}

// FuzzAuditCursor: a cursor from outside (the portal's cursor parameter)
// never panics the reader, and one it accepts encodes to what it read.
func FuzzAuditCursor(f *testing.F) {
	f.Add(encodeCursor(pathByDay, "DAY#2026-01-15", map[string]ddbAV{"pk": sv("AUDIT#x"), "sk": sv(auditSK), "gsi4pk": sv("DAY#2026-01-15"), "gsi4sk": sv("2026-01-15T10:00:00.000000000Z#x")}))
	f.Add(encodeCursor(pathByDay, "DAY#2026-01-14", nil))
	f.Add("!!!")
	f.Fuzz(func(t *testing.T, c string) {
		pk, start, err := decodeCursor(c, pathByDay, "DAY#2026-01-16", "DAY#2026-01-14", testSortKeys)
		if err != nil {
			return
		}
		pk2, start2, err := decodeCursor(encodeCursor(pathByDay, pk, start), pathByDay, "DAY#2026-01-16", "DAY#2026-01-14", testSortKeys)
		if err != nil || pk2 != pk || !reflect.DeepEqual(start, start2) {
			t.Fatalf("%q read as %q %v, again as %q %v (%v)", c, pk, start, pk2, start2, err)
		}
	})
}

type ddbAV = ddbtypes.AttributeValue

// testSortKeys is the sort-key range of a query from 2026-01-14 to
// 2026-01-16, both whole days.
var testSortKeys = sortKeyRange(time.Date(2026, 1, 14, 0, 0, 0, 0, time.UTC), time.Date(2026, 1, 17, 0, 0, 0, -1, time.UTC))

// TestHeadReportsTheSCPsMultipartChecksum stores an object the way the SCP
// does when it is too big for one request (a multipart upload, no sha256
// metadata) and checks that Head hands the pipeline S3's full-object
// CRC64NVME, the content identity of such objects.
func TestHeadReportsTheSCPsMultipartChecksum(t *testing.T) {
	ctx := context.Background()
	sink := s3test.NewSink(t)
	client := s3test.Client(sink.URL)
	store, err := s3store.New(ctx, s3store.Options{Bucket: "bkt", Client: client, PartSize: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("multipart object "), 400_000) // 6.8 MB: two parts
	obj := objectstore.Object{
		SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SOPInstanceUID: "1.2.3.4.5", StudyInstanceUID: "1.2.3",
		SeriesInstanceUID: "1.2.3.4", TransferSyntaxUID: "1.2.840.10008.1.2.1", CallingAE: "MOD1", CalledAE: "REMOTE_AE",
		AssociationID: "a1", ReceivedAt: time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC),
	}
	st, err := store.Put(ctx, obj, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	info, err := (&S3Objects{Client: client, Bucket: "bkt"}).Head(ctx, st.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.Metadata["sha256"]; ok {
		t.Fatalf("a multipart object carries sha256 metadata %q; this test expects none", info.Metadata["sha256"])
	}
	if want := s3test.CRC64NVME(data); info.ChecksumCRC64NVME != want {
		t.Errorf("Head reported CRC64NVME %q, want %q", info.ChecksumCRC64NVME, want)
	}
}

// stubS3 is an S3Objects whose requests handler answers, without retries.
func stubS3(t *testing.T, handler http.HandlerFunc) *S3Objects {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return &S3Objects{Client: s3.New(s3.Options{Region: "eu-west-1", Credentials: creds, BaseEndpoint: aws.String(srv.URL), UsePathStyle: true, RetryMaxAttempts: 1}), Bucket: "bkt"}
}

// writePreconditionFailed is S3's answer to a read or a copy pinned to an
// ETag the key does not hold.
func writePreconditionFailed(w http.ResponseWriter) {
	w.WriteHeader(http.StatusPreconditionFailed)
	io.WriteString(w, `<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>`)
}

// TestOpenVersionRange: a read pinned to the ETag Head gave sends it as
// If-Match, and S3's 412 for a key that holds another object since is
// pipeline.ErrObjectChanged; an unpinned read sends none.
func TestOpenVersionRange(t *testing.T) {
	for _, tc := range []struct {
		name, etag, wantIfMatch string
		status                  int
		wantErr                 error
	}{
		{"the version read", `"abc"`, `"abc"`, http.StatusPartialContent, nil},
		{"replaced since", `"abc"`, `"abc"`, http.StatusPreconditionFailed, pipeline.ErrObjectChanged},
		{"no etag: unpinned", "", "", http.StatusPartialContent, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ifMatch string
			o := stubS3(t, func(w http.ResponseWriter, r *http.Request) {
				ifMatch = r.Header.Get("If-Match")
				if tc.status == http.StatusPreconditionFailed {
					writePreconditionFailed(w)
					return
				}
				w.Header().Set("Content-Range", "bytes 0-3/10")
				w.WriteHeader(tc.status)
				io.WriteString(w, "DICM")
			})
			rc, err := o.OpenVersionRange(context.Background(), pipeline.ObjectInfo{Key: "incoming/a.dcm", Size: 10, ETag: tc.etag}, 0, 4)
			if ifMatch != tc.wantIfMatch {
				t.Errorf("If-Match %q, want %q", ifMatch, tc.wantIfMatch)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err == nil {
				b, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || string(b) != "DICM" {
					t.Errorf("read %q, %v", b, err)
				}
			}
		})
	}
}

// TestCopyPinned: a copy of the object Head described copies that
// version or nothing: its HEAD must give src's ETag and the CopyObject
// carries it (x-amz-copy-source-if-match), either refusal
// pipeline.ErrObjectChanged, no copy made after a HEAD of another
// version; src without an ETag is copied unpinned.
func TestCopyPinned(t *testing.T) {
	for _, tc := range []struct {
		name, etag, headETag string
		copyStatus           int
		wantPin              string
		wantCopy             bool
		wantErr              error
	}{
		{"the version read", `"abc"`, `"abc"`, http.StatusOK, `"abc"`, true, nil},
		{"replaced before its head", `"abc"`, `"def"`, http.StatusOK, "", false, pipeline.ErrObjectChanged},
		{"replaced between its head and the copy", `"abc"`, `"abc"`, http.StatusPreconditionFailed, `"abc"`, true, pipeline.ErrObjectChanged},
		{"no etag: unpinned", "", `"def"`, http.StatusOK, "", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var copied bool
			var pin string
			o := stubS3(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodHead {
					w.Header().Set("ETag", tc.headETag)
					w.Header().Set("Content-Type", "application/dicom")
					w.Header().Set("X-Amz-Meta-Calling-Ae", "MOD1")
					return
				}
				copied, pin = true, r.Header.Get("X-Amz-Copy-Source-If-Match")
				if tc.copyStatus == http.StatusPreconditionFailed {
					writePreconditionFailed(w)
					return
				}
				io.WriteString(w, `<CopyObjectResult><ETag>"abc"</ETag><LastModified>2026-01-15T10:20:30.000Z</LastModified></CopyObjectResult>`)
			})
			err := o.Copy(context.Background(), pipeline.ObjectInfo{Key: "incoming/a.dcm", Size: 10, ETag: tc.etag}, "quarantine/a.dcm", map[string]string{"quarantined": "true"})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if copied != tc.wantCopy || pin != tc.wantPin {
				t.Errorf("copy requested %v pinned to %q; want %v, %q", copied, pin, tc.wantCopy, tc.wantPin)
			}
		})
	}
}

// TestWalkDays: the byDay partitions from one time's day to another's,
// both in, before 1970 too (a floor, not a truncation towards zero).
func TestWalkDays(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tt := range []struct {
		from, to string
		want     int64
	}{
		{"2026-01-14T00:00:00Z", "2026-01-14T23:59:59.999999999Z", 1},
		{"2026-01-14T23:59:59.999999999Z", "2026-01-15T00:00:00Z", 2},
		{"1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z", 2},
		{"1969-12-31T00:00:00Z", "1969-12-31T23:59:59.999999999Z", 1},
		{"0000-01-01T00:00:00Z", "0000-12-31T23:59:59Z", 366},
		{"2025-01-18T00:00:00Z", "2026-01-18T23:59:59Z", 366},
	} {
		if got := walkDays(at(tt.from), at(tt.to)); got != tt.want {
			t.Errorf("walkDays(%s, %s) = %d, want %d", tt.from, tt.to, got, tt.want)
		}
	}
}
