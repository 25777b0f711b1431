package s3store_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

const (
	bucket   = "dicom-test"
	prefix   = "site-a/"
	partSize = s3store.MinPartSize
)

func testObject(sop string) objectstore.Object {
	return objectstore.Object{
		SOPClassUID:       "1.2.840.10008.5.1.4.1.1.2",
		SOPInstanceUID:    sop,
		StudyInstanceUID:  "1.2.3.4",
		SeriesInstanceUID: "1.2.3.4.5",
		TransferSyntaxUID: "1.2.840.10008.1.2.1",
		CallingAE:         "MODALITY1",
		CalledAE:          "INGEST",
		PeerAddr:          "127.0.0.1:40000",
		AssociationID:     "assoc-1",
		ReceivedAt:        time.Date(2026, 11, 26, 23, 59, 58, 123456789, time.UTC),
	}
}

// newStore starts an emulator and a store on it configured the production
// way: through the SDK's default configuration from the environment.
func newStore(t *testing.T, opts s3store.Options) (*s3store.Store, *s3test.Server) {
	t.Helper()
	srv := s3test.NewServer(t, bucket)
	s3test.SetEnv(t, srv.URL)
	opts.Bucket, opts.Prefix, opts.PathStyle = bucket, prefix, true
	if opts.PartSize == 0 {
		opts.PartSize = partSize
	}
	if opts.ImplementationVersion == "" {
		opts.ImplementationVersion = "DICOMINGEST_0.1"
	}
	st, err := s3store.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return st, srv
}

// crcHex is b's CRC64NVME in hex, as conflict keys name it.
func crcHex(t *testing.T, b []byte) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(s3test.CRC64NVME(b))
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(raw)
}

func head(t *testing.T, srv *s3test.Server, key string) *s3.HeadObjectOutput {
	t.Helper()
	out, err := s3test.Client(srv.URL).HeadObject(context.Background(), &s3.HeadObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled,
	})
	if err != nil {
		t.Fatalf("head %s: %v", key, err)
	}
	return out
}

func get(t *testing.T, srv *s3test.Server, key string) []byte {
	t.Helper()
	out, err := s3test.Client(srv.URL).GetObject(context.Background(), &s3.GetObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled,
	})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body) // the SDK checks the CRC64NVME while reading
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b
}

func assertClean(t *testing.T, srv *s3test.Server) {
	t.Helper()
	n, err := srv.PendingUploads(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d multipart uploads left behind", n)
	}
}

func TestPutStoresObjectWithMetadataAndChecksum(t *testing.T) {
	st, srv := newStore(t, s3store.Options{})
	for i, tc := range []struct {
		name      string
		size      int64
		multipart bool
	}{
		{"empty", 0, false},
		{"small", 1234, false},
		{"exactly one part", partSize, false},
		{"one part and a byte", partSize + 1, true},
		{"three parts", 2*partSize + 77, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := s3test.Bytes(uint64(i), tc.size)
			obj := testObject("1.2.3.4.5." + string(rune('1'+i)))
			got, err := st.Put(context.Background(), obj, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			key, _ := objectstore.Key(obj)
			want := objectstore.Stored{Key: key, Size: tc.size}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("Stored (-want +got):\n%s", d)
			}
			if !strings.HasPrefix(key, "incoming/2026/11/26/1.2.3.4/1.2.3.4.5/") {
				t.Errorf("key %q not in the documented layout", key)
			}
			if b := get(t, srv, prefix+key); !bytes.Equal(b, data) {
				t.Errorf("stored %d bytes differ from the %d sent", len(b), len(data))
			}
			h := head(t, srv, prefix+key)
			if c := aws.ToString(h.ChecksumCRC64NVME); c != s3test.CRC64NVME(data) {
				t.Errorf("CRC64NVME = %q, want %q", c, s3test.CRC64NVME(data))
			}
			wantMeta := map[string]string{
				"calling-ae": "MODALITY1", "called-ae": "INGEST", "peer-addr": "127.0.0.1:40000",
				"association-id": "assoc-1", "received-at": "2026-11-26T23:59:58.123456789Z",
				"sop-class-uid": obj.SOPClassUID, "sop-instance-uid": obj.SOPInstanceUID,
				"study-instance-uid": "1.2.3.4", "series-instance-uid": "1.2.3.4.5",
				"transfer-syntax-uid": "1.2.840.10008.1.2.1", "implementation-version": "DICOMINGEST_0.1",
			}
			if d := cmp.Diff(wantMeta, h.Metadata); d != "" {
				t.Errorf("metadata (-want +got):\n%s", d)
			}
			if ct := aws.ToString(h.ContentType); ct != "application/dicom" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	assertClean(t, srv)
}

func TestPutDuplicateAndConflict(t *testing.T) {
	st, srv := newStore(t, s3store.Options{})
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		size int64
	}{
		{"single", 4096},
		{"multipart", partSize + 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := testObject("1.2.840.99." + map[string]string{"single": "1", "multipart": "2"}[tc.name])
			key, _ := objectstore.Key(obj)
			orig := s3test.Bytes(1, tc.size)
			if _, err := st.Put(ctx, obj, bytes.NewReader(orig)); err != nil {
				t.Fatal(err)
			}
			// An identical resend (another C-STORE, the same day) stores
			// nothing new.
			resend := obj
			resend.AssociationID, resend.ReceivedAt = "resend", obj.ReceivedAt.Add(time.Second)
			got, err := st.Put(ctx, resend, bytes.NewReader(orig))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(objectstore.Stored{Key: key, Size: tc.size, Duplicate: true}, got); d != "" {
				t.Errorf("resend (-want +got):\n%s", d)
			}
			// The same C-STORE uploaded again (a staged object whose task
			// died before its release) is told from a resend.
			got, err = st.Put(ctx, obj, bytes.NewReader(orig))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(objectstore.Stored{Key: key, Size: tc.size, Duplicate: true, SameTransfer: true}, got); d != "" {
				t.Errorf("upload again (-want +got):\n%s", d)
			}
			// A different object under the same key never overwrites it.
			other := s3test.Bytes(2, tc.size)
			got, err = st.Put(ctx, obj, bytes.NewReader(other))
			if err != nil {
				t.Fatal(err)
			}
			ck := objectstore.ConflictKey(key, crcHex(t, other))
			if tc.size > partSize {
				// Named after the C-STORE: the checksum is unknown when
				// the upload starts.
				if !conflictKeyPattern(key).MatchString(got.Key) {
					t.Errorf("multipart conflict key %q, want %s", got.Key, conflictKeyPattern(key))
				}
				ck = got.Key
			}
			if d := cmp.Diff(objectstore.Stored{Key: ck, Size: tc.size, Conflict: true}, got); d != "" {
				t.Errorf("conflict (-want +got):\n%s", d)
			}
			if b := get(t, srv, prefix+ck); !bytes.Equal(b, other) {
				t.Error("conflicting object not stored under the conflict key")
			}
			h := head(t, srv, prefix+ck)
			if h.Metadata["conflict"] != "true" {
				t.Errorf("conflict metadata %v", h.Metadata)
			}
			if _, ok := h.Metadata["sha256"]; ok {
				t.Errorf("sha256 metadata %v: the content identity is the CRC64NVME", h.Metadata)
			}
			// The same conflicting object from this very C-STORE again (a
			// staged object uploaded again after its task died): its
			// conflict copy is found, and it is no resend. A multipart
			// one was uploaded to a second random conflict key.
			got, err = st.Put(ctx, obj, bytes.NewReader(other))
			if d := cmp.Diff(objectstore.Stored{Key: ck, Size: tc.size, Conflict: true, Duplicate: true, SameTransfer: true}, got); err != nil || d != "" {
				t.Errorf("conflict upload again (-want +got):\n%s%v", d, err)
			}
			// From another C-STORE: a duplicate of the single-part
			// conflict copy; another flagged copy for a multipart one
			// (its checksum unknown when its key is chosen), never an
			// overwrite.
			got, err = st.Put(ctx, resend, bytes.NewReader(other))
			if err != nil || !got.Conflict || got.SameTransfer {
				t.Errorf("conflict resend = %+v, %v", got, err)
			}
			if tc.size <= partSize && (!got.Duplicate || got.Key != ck) {
				t.Errorf("single-part conflict resend = %+v", got)
			}
			if tc.size > partSize && (got.Duplicate || got.Key == ck || !conflictKeyPattern(key).MatchString(got.Key)) {
				t.Errorf("multipart conflict resend = %+v", got)
			}
			// An identical resend of the original is still a duplicate,
			// whatever the size.
			got, err = st.Put(ctx, resend, bytes.NewReader(orig))
			if err != nil || !got.Duplicate || got.SameTransfer || got.Conflict || got.Key != key {
				t.Errorf("original resend = %+v, %v", got, err)
			}
			if b := get(t, srv, prefix+key); !bytes.Equal(b, orig) {
				t.Error("original object was overwritten")
			}
		})
	}
	assertClean(t, srv)
}

// TestPutOutcomeLabels: the put duration's outcome label says what a Put
// did, by the rule the SCP's warning follows (objectstore.Stored): conflict
// only for a copy kept beside the held object, duplicate whenever nothing
// new was written, under the key or beside it. A resend, from another
// C-STORE, of the bytes a single-part conflict copy holds (its key named
// after them) or the same C-STORE uploaded again was labelled conflict.
// The store warns of a copy kept beside by the same rule, once, by the
// upload that made it: that resend was warned of as "storing under
// conflict key", a copy it never made.
func TestPutOutcomeLabels(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		size int64
		// the resend's conflict: a multipart copy's key names its
		// C-STORE, so another C-STORE makes a copy of its own
		resendOfCopy string
	}{
		{"single", 4096, "duplicate"},
		{"multipart", partSize + 4096, "conflict"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			var logs testenv.LogBuffer
			st, _ := newStore(t, s3store.Options{Metrics: reg, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			obj := testObject("1.2.840.97.1")
			resend := obj
			resend.AssociationID, resend.ReceivedAt = "resend", obj.ReceivedAt.Add(time.Second)
			orig, other := s3test.Bytes(1, tc.size), s3test.Bytes(2, tc.size)
			for _, step := range []struct {
				name    string
				obj     objectstore.Object
				body    []byte
				outcome string
			}{
				{"first", obj, orig, "stored"},
				{"identical resend", resend, orig, "duplicate"},
				{"other bytes", obj, other, "conflict"},
				{"the conflicting C-STORE uploaded again", obj, other, "duplicate"},
				{"the other bytes from another C-STORE", resend, other, tc.resendOfCopy},
			} {
				before := putOutcomes(t, reg)
				if _, err := st.Put(ctx, step.obj, bytes.NewReader(step.body)); err != nil {
					t.Fatalf("%s: %v", step.name, err)
				}
				after := putOutcomes(t, reg)
				warned := strings.Count(logs.Take(), `"level":"WARN","msg":"different object already holds the key; storing under conflict key"`)
				if want := map[bool]int{true: 1}[step.outcome == "conflict"]; warned != want {
					t.Errorf("%s: %d warnings of a copy kept beside, want %d", step.name, warned, want)
				}
				for _, o := range []string{"stored", "duplicate", "conflict", "error"} {
					want := before[o]
					if o == step.outcome {
						want++
					}
					if after[o] != want {
						t.Errorf("%s: outcome %s counted %d, want %d", step.name, o, after[o]-before[o], want-before[o])
					}
				}
			}
		})
	}
}

// putOutcomes counts the put duration's observations by outcome, every
// kind together.
func putOutcomes(t *testing.T, reg *prometheus.Registry) map[string]uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "dicom_ingest_s3_put_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					out[l.GetValue()] += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return out
}

func TestPutAbortsOnReaderErrorAndCancel(t *testing.T) {
	st, srv := newStore(t, s3store.Options{})
	for _, tc := range []struct {
		name   string
		failAt int64
	}{
		{"in the first part", 1000},
		{"in the peeked second part", partSize + 10},
		{"in a later part", 2*partSize + 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := testObject("1.2.840.77.1")
			_, err := st.Put(context.Background(), obj, s3test.FailingReader(s3test.NewData(3, 4*partSize), tc.failAt))
			if !errors.Is(err, s3test.ErrInjected) {
				t.Fatalf("err = %v, want the reader's error", err)
			}
			if errors.Is(err, objectstore.ErrUnavailable) {
				t.Error("a reader error must not look like a store outage")
			}
		})
	}
	t.Run("context cancelled mid-object", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		r := &cancelAfter{r: s3test.NewData(4, 4*partSize), n: 2*partSize + 100, cancel: cancel}
		_, err := st.Put(ctx, testObject("1.2.840.77.2"), r)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	})
	keys, err := srv.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("objects visible after failed puts: %v", keys)
	}
	assertClean(t, srv)
}

func conflictKeyPattern(key string) *regexp.Regexp {
	return regexp.MustCompile("^" + regexp.QuoteMeta(strings.TrimSuffix(key, ".dcm")) + `\.conflict-[0-9a-f]{16}\.dcm$`)
}

type cancelAfter struct {
	r      io.Reader
	n      int64
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= int64(n); c.n <= 0 {
		c.cancel()
	}
	return n, err
}

func TestPutRecord(t *testing.T) {
	st, srv := newStore(t, s3store.Options{})
	ctx := context.Background()
	body := []byte(`{"event":"association-rejected","reason":"calling AE not allowed"}`)
	key := "audit/2026/11/26/assoc-9-rejected.json"
	if err := st.PutRecord(ctx, key, body); err != nil {
		t.Fatal(err)
	}
	if err := st.PutRecord(ctx, key, body); err != nil {
		t.Errorf("rewriting the same record: %v", err)
	}
	if err := st.PutRecord(ctx, key, []byte(`{"other":1}`)); err == nil {
		t.Error("a different record under the same key was accepted")
	}
	if b := get(t, srv, prefix+key); !bytes.Equal(b, body) {
		t.Errorf("record = %q", b)
	}
	for _, bad := range []string{"incoming/x.json", "audit/../x", "audit/", "/audit/x", "audit/a b"} {
		if err := st.PutRecord(ctx, bad, body); err == nil {
			t.Errorf("PutRecord(%q) accepted", bad)
		}
	}
}

func TestReady(t *testing.T) {
	st, _ := newStore(t, s3store.Options{})
	if err := st.Ready(context.Background()); err != nil {
		t.Fatalf("ready: %v", err)
	}

	// A bucket nobody answers for: unavailable.
	dead := s3test.NewServer(t, "other")
	dead.Close()
	s3test.SetEnv(t, dead.URL)
	down, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := down.Ready(context.Background()); !errors.Is(err, objectstore.ErrUnavailable) {
		t.Errorf("ready with S3 down = %v, want ErrUnavailable", err)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	st, _ := newStore(t, s3store.Options{Metrics: reg})
	data := s3test.Bytes(9, 2*partSize+10)
	if _, err := st.Put(context.Background(), testObject("1.2.3.9"), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(context.Background(), testObject("1.2.3.10"), s3test.FailingReader(bytes.NewReader(data), 2*partSize+5)); err == nil {
		t.Fatal("failing reader accepted")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"dicom_ingest_s3_put_duration_seconds", "dicom_ingest_s3_multipart_aborts_total", "dicom_ingest_s3_bytes_stored_total", "dicom_ingest_s3_uploads_in_flight"} {
		if !names[n] {
			t.Errorf("metric %s not registered", n)
		}
	}
	counter := func(name string) float64 {
		for _, mf := range mfs {
			if mf.GetName() == name {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return -1
	}
	if got := counter("dicom_ingest_s3_bytes_stored_total"); got != float64(len(data)) {
		t.Errorf("bytes stored = %v, want %d", got, len(data))
	}
	if got := counter("dicom_ingest_s3_multipart_aborts_total"); got != 1 {
		t.Errorf("aborts = %v, want 1", got)
	}
	// A second store on the same registry shares the collectors.
	if _, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Metrics: reg}); err != nil {
		t.Errorf("second store on one registry: %v", err)
	}
}

// TestAbortSaysWhy: an upload dropped because the key already holds its
// object (an identical resend, the same C-STORE uploaded again, its
// conflict copy found) is the expected outcome and logged at info level
// with the reason; one dropped for a failure is a warning naming its
// cause. Every drop logged a warning, the duplicates with a null cause.
func TestAbortSaysWhy(t *testing.T) {
	var logs bytes.Buffer
	st, _ := newStore(t, s3store.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	ctx := context.Background()
	size := int64(partSize + 4096)
	obj := testObject("1.2.840.98.1")
	orig, other := s3test.Bytes(1, size), s3test.Bytes(2, size)
	resend := obj
	resend.AssociationID, resend.ReceivedAt = "resend", obj.ReceivedAt.Add(time.Second)
	if _, err := st.Put(ctx, obj, bytes.NewReader(orig)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(ctx, obj, bytes.NewReader(other)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		obj    objectstore.Object
		r      io.Reader
		failed bool
	}{
		{"identical resend", resend, bytes.NewReader(orig), false},
		{"the same C-STORE again", obj, bytes.NewReader(orig), false},
		{"its conflict copy again", obj, bytes.NewReader(other), false},
		{"the reader failing", testObject("1.2.840.98.2"), s3test.FailingReader(s3test.NewData(3, 3*partSize), 2*partSize+10), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			if _, err := st.Put(ctx, tc.obj, tc.r); (err != nil) != tc.failed {
				t.Fatalf("put: %v, want failed %v", err, tc.failed)
			}
			var lines []map[string]any
			for line := range strings.Lines(logs.String()) {
				var l map[string]any
				if err := json.Unmarshal([]byte(line), &l); err != nil {
					t.Fatalf("%v: %s", err, line)
				}
				if l["msg"] == "multipart upload aborted" {
					lines = append(lines, l)
				}
			}
			if len(lines) != 1 {
				t.Fatalf("%d lines of the abort, want 1:\n%s", len(lines), logs.String())
			}
			l := lines[0]
			switch {
			case tc.failed && (l["level"] != "WARN" || l["cause"] == nil || l["reason"] != nil):
				t.Errorf("a failed upload's abort: %v, want a warning with its cause", l)
			case !tc.failed && (l["level"] != "INFO" || l["reason"] != "the key already holds this object" || l["cause"] != nil):
				t.Errorf("a duplicate's abort: %v, want an info line with its reason", l)
			}
		})
	}
}
