package stagedstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/journal"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/storetest"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

// fakeS3 is an Uploader that keeps objects in memory, create-only as S3's
// conditional writes are, and can be switched off.
type fakeS3 struct {
	mu      sync.Mutex
	objects map[string][]byte
	from    map[string]string // the transfer (association, receive time) each object came from, as S3's metadata says
	calls   map[string]int    // Put and PutRecord calls by key
	down    bool
}

func newFakeS3() *fakeS3 {
	return &fakeS3{objects: map[string][]byte{}, from: map[string]string{}, calls: map[string]int{}}
}

// transfer names obj's C-STORE as the S3 store tells it in its metadata.
func transfer(obj objectstore.Object) string {
	return obj.AssociationID + " " + obj.ReceivedAt.UTC().Format(time.RFC3339Nano)
}

// hold stores b under obj's key as S3 would have it from obj's C-STORE.
func (f *fakeS3) hold(obj objectstore.Object, b []byte) {
	k, _ := objectstore.Key(obj)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects[k], f.from[k] = bytes.Clone(b), transfer(obj)
}

var errDown = fmt.Errorf("fake S3 down: %w", objectstore.ErrUnavailable)

func (f *fakeS3) setDown(down bool) { f.mu.Lock(); f.down = down; f.mu.Unlock() }

func (f *fakeS3) Put(ctx context.Context, obj objectstore.Object, r io.Reader) (objectstore.Stored, error) {
	key, err := objectstore.Key(obj)
	if err != nil {
		return objectstore.Stored{}, err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return objectstore.Stored{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[key]++
	if f.down {
		return objectstore.Stored{}, errDown
	}
	st := objectstore.Stored{Key: key, Size: int64(len(b))}
	if old, ok := f.objects[key]; ok {
		if bytes.Equal(old, b) {
			st.Duplicate, st.SameTransfer = true, f.from[key] == transfer(obj)
			return st, nil
		}
		crc, _ := objectstore.ContentChecksum(b)
		st.Key, st.Conflict = objectstore.ChecksumConflictKey(key, crc), true
		if held, ok := f.objects[st.Key]; ok && bytes.Equal(held, b) {
			// The copy kept beside holds these bytes: a duplicate of it.
			st.Duplicate, st.SameTransfer = true, f.from[st.Key] == transfer(obj)
			return st, nil
		}
	}
	f.objects[st.Key], f.from[st.Key] = b, transfer(obj)
	return st, nil
}

func (f *fakeS3) PutRecord(ctx context.Context, key string, body []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[key]++
	if f.down {
		return errDown
	}
	if old, ok := f.objects[key]; ok && !bytes.Equal(old, body) {
		return fmt.Errorf("fake S3: %w", objectstore.ErrRecordHeld)
	}
	f.objects[key] = bytes.Clone(body)
	return nil
}

func (f *fakeS3) get(key string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.objects[key]
	return b, ok
}

func object(n int) objectstore.Object { return storetest.Object(n) }

func key(t testing.TB, obj objectstore.Object) string {
	t.Helper()
	k, err := objectstore.Key(obj)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func data(seed, n int) []byte { return s3test.Bytes(uint64(seed), int64(n)) }

func newStore(t testing.TB, o Options) *Store {
	t.Helper()
	if o.AdoptEvery == 0 {
		o.AdoptEvery = 50 * time.Millisecond
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func drain(t testing.TB, s *Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Drain(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestConformance runs the storage conformance suite against the staged
// store uploading to the S3 emulator through the S3 store.
func TestConformance(t *testing.T) {
	var srv *s3test.Server
	var st *Store
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) objectstore.Store {
			srv = s3test.NewServer(t, "bucket")
			up, err := s3store.New(context.Background(), s3store.Options{Bucket: "bucket", Prefix: "p", Client: s3test.Client(srv.URL)})
			if err != nil {
				t.Fatal(err)
			}
			st = newStore(t, Options{Dir: t.TempDir(), Uploader: up})
			return st
		},
		Read: func(t *testing.T, key string) ([]byte, error) {
			drain(t, st)
			b, _, err := srv.Object("p/" + key)
			return b, err
		},
		Deferred: true,
		Conflicts: func(t *testing.T, key string) []string {
			drain(t, st)
			keys, err := srv.Keys(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, k := range keys {
				if rel, ok := strings.CutPrefix(k, "p/"); ok && strings.HasPrefix(rel, strings.TrimSuffix(key, ".dcm")+".conflict-") {
					out = append(out, rel)
				}
			}
			return out
		},
		// Around the record size (1 MiB: larger objects get a file of
		// their own), all single S3 PutObjects.
		Sizes: []int64{0, 1, 4096, 1<<20 - 1, 1 << 20, 1<<20 + 1, 3<<20 + 17},
	})
}

// TestSameObjectsKeysAndMetadata: what the staged store uploads is what
// the S3 store writes when it stores directly: the same keys, bytes and
// metadata (the pipeline cannot tell them apart).
func TestSameObjectsKeysAndMetadata(t *testing.T) {
	srv := s3test.NewServer(t, "bucket")
	direct, err := s3store.New(context.Background(), s3store.Options{Bucket: "bucket", Prefix: "direct", Client: s3test.Client(srv.URL), ImplementationVersion: "v"})
	if err != nil {
		t.Fatal(err)
	}
	viaStaging, err := s3store.New(context.Background(), s3store.Options{Bucket: "bucket", Prefix: "staged", Client: s3test.Client(srv.URL), ImplementationVersion: "v"})
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(t, Options{Dir: t.TempDir(), Uploader: viaStaging})
	ctx := context.Background()
	for i, size := range []int{1000, 1 << 20, 2<<20 + 5} {
		obj := object(i)
		body := data(i, size)
		if _, err := direct.Put(ctx, obj, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		got, err := st.Put(ctx, obj, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if got.Key != key(t, obj) || got.Size != int64(size) {
			t.Errorf("Put = %+v, want key %s size %d", got, key(t, obj), size)
		}
	}
	rec := objectstore.AuditPrefix + "2026/11/27/a-1.json"
	if err := direct.PutRecord(ctx, rec, []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := st.PutRecord(ctx, rec, []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	drain(t, st)
	keys, err := srv.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var directKeys, stagedKeys []string
	for _, k := range keys {
		switch {
		case len(k) > 7 && k[:7] == "direct/":
			directKeys = append(directKeys, k[7:])
		case len(k) > 7 && k[:7] == "staged/":
			stagedKeys = append(stagedKeys, k[7:])
		}
	}
	if d := cmp.Diff(directKeys, stagedKeys); d != "" || len(directKeys) != 4 {
		t.Fatalf("keys (-direct +staged):\n%s", d)
	}
	for _, k := range directKeys {
		b1, m1, err1 := srv.Object("direct/" + k)
		b2, m2, err2 := srv.Object("staged/" + k)
		if err1 != nil || err2 != nil || !bytes.Equal(b1, b2) {
			t.Errorf("%s: bodies differ (%v, %v)", k, err1, err2)
		}
		if d := cmp.Diff(objectMeta(m1), objectMeta(m2)); d != "" {
			t.Errorf("%s: metadata (-direct +staged):\n%s", k, d)
		}
	}
}

// TestS3DownThenUp: while S3 refuses, objects are still acknowledged
// (staged); once it answers they are uploaded and leave staging.
func TestS3DownThenUp(t *testing.T) {
	s3 := newFakeS3()
	s3.setDown(true)
	dir := t.TempDir()
	st := newStore(t, Options{Dir: dir, Uploader: s3})
	ctx := context.Background()
	want := map[string][]byte{}
	for i := range 20 {
		body := data(i, 1000+i*70_000) // some over 1 MiB
		if _, err := st.Put(ctx, object(i), bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		want[key(t, object(i))] = body
	}
	if n := st.q.objects(); n != 20 {
		t.Errorf("backlog %d objects while S3 is down, want 20", n)
	}
	s3.setDown(false)
	drain(t, st)
	for k, b := range want {
		if got, ok := s3.get(k); !ok || !bytes.Equal(got, b) {
			t.Errorf("%s not uploaded whole", k)
		}
	}
	if n, b := st.q.objects(), st.q.bytes(); n != 0 || b != 0 {
		t.Errorf("backlog after upload: %d objects, %d bytes", n, b)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, journalsDir, st.TaskID(), largeDir)); len(left) != 0 {
		t.Errorf("large objects left in staging after their upload: %d", len(left))
	}
}

// TestBackPressure: past the backlog bound, Put fails as unavailable
// (A700) and Ready too (02 03 01), until uploads catch up; an old backlog
// turns Ready off as well.
func TestBackPressure(t *testing.T) {
	s3 := newFakeS3()
	s3.setDown(true)
	st := newStore(t, Options{Dir: t.TempDir(), Uploader: s3, MaxBacklogBytes: 300_000, MaxBacklogAge: time.Hour})
	ctx := context.Background()
	if err := st.Ready(ctx); err != nil {
		t.Fatalf("Ready on an empty backlog: %v", err)
	}
	var err error
	for i := 0; err == nil && i < 10; i++ {
		_, err = st.Put(ctx, object(i), bytes.NewReader(data(i, 100_000)))
	}
	if !errors.Is(err, objectstore.ErrUnavailable) {
		t.Fatalf("Put over the bound = %v, want ErrUnavailable", err)
	}
	if err := st.Ready(ctx); !errors.Is(err, objectstore.ErrUnavailable) {
		t.Errorf("Ready over the bound = %v, want ErrUnavailable", err)
	}
	s3.setDown(false)
	drain(t, st)
	if err := st.Ready(ctx); err != nil {
		t.Errorf("Ready once uploaded: %v", err)
	}

	// Age: S3 down for longer than MaxBacklogAge.
	s3.setDown(true)
	aged := newStore(t, Options{Dir: t.TempDir(), Uploader: s3, MaxBacklogAge: 50 * time.Millisecond})
	if _, err := aged.Put(ctx, object(1), bytes.NewReader(data(1, 10))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if err := aged.Ready(ctx); !errors.Is(err, objectstore.ErrUnavailable) {
		t.Errorf("Ready with an old backlog = %v, want ErrUnavailable", err)
	}
	s3.setDown(false)
}

// TestOperationsPerObject counts the staging file system's operations: a
// journaled object costs one write, and an fdatasync shared with whatever
// was appended meanwhile, and no metadata operation. A record written
// directly in one NFS WRITE leaves that fdatasync nothing to commit.
func TestOperationsPerObject(t *testing.T) {
	s3 := newFakeS3()
	s3.setDown(true) // no uploads: only the staging path is counted
	st := newStore(t, Options{Dir: t.TempDir(), Uploader: s3, AdoptEvery: time.Hour})
	ctx := context.Background()
	var before [vfs.NumOps]int64
	for op := range vfs.NumOps {
		before[op] = st.Operations(op)
	}
	const n = 200
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				if _, err := st.Put(ctx, object(i), bytes.NewReader(data(i, 130_000))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	per := map[string]float64{}
	for op := range vfs.NumOps {
		if d := st.Operations(op) - before[op]; d > 0 {
			per[op.String()] = float64(d) / n
		}
	}
	t.Logf("operations per object: %v", per)
	// 200 x 134 KiB records fill two 16 MiB segments: a few header
	// writes and commits on top.
	if syncs := per["sync"] + per["syncstable"]; per["write"] > 1.05 || syncs > 1.05 {
		t.Errorf("per object: %.2f writes, %.2f fdatasyncs; want 1 and at most 1", per["write"], syncs)
	}
	if st.own.DirectIO() && per["sync"] > 0.05 {
		t.Errorf("per object: %.2f fdatasyncs owing a commit after direct writes; want none", per["sync"])
	}
	for _, op := range []string{"create", "rename", "remove", "mkdir", "syncdir"} {
		if per[op] > 0.02 {
			t.Errorf("%.2f %s per object; the journal needs none", per[op], op)
		}
	}
}

// TestLatencyInjected: with EFS's latencies a Put waits for its write,
// 2.7 ms (and a commit, 2.7 ms more, where the journal cannot write
// directly), not for S3.
func TestLatencyInjected(t *testing.T) {
	s3 := newFakeS3()
	s3.setDown(true)
	st := newStore(t, Options{Dir: t.TempDir(), Uploader: s3, Latencies: vfs.EFS, AdoptEvery: time.Hour})
	start := time.Now()
	const n = 10
	for i := range n {
		if _, err := st.Put(context.Background(), object(i), bytes.NewReader(data(i, 1000))); err != nil {
			t.Fatal(err)
		}
	}
	per := time.Since(start) / n
	want := vfs.EFS[vfs.OpWrite]
	if !st.own.DirectIO() {
		want += vfs.EFS[vfs.OpSync]
	}
	if per < want {
		t.Errorf("%v per Put with EFS's latencies injected; want at least %v", per, want)
	}
	t.Logf("%v per Put", per)
}

// TestParkedRecord: a record S3 already holds with other bytes is never
// written over; it is parked, counted, and left out of Drain.
func TestParkedRecord(t *testing.T) {
	s3 := newFakeS3()
	st := newStore(t, Options{Dir: t.TempDir(), Uploader: s3})
	ctx := context.Background()
	k := objectstore.AuditPrefix + "x.json"
	if err := st.PutRecord(ctx, k, []byte("one")); err != nil {
		t.Fatal(err)
	}
	drain(t, st)
	if err := st.PutRecord(ctx, k, []byte("two")); err != nil {
		t.Fatal(err)
	}
	drain(t, st)
	if got, _ := s3.get(k); string(got) != "one" {
		t.Errorf("record %q, want the first", got)
	}
	if st.q.parkedCount() != 1 || st.q.objects() != 1 {
		t.Errorf("parked %d, backlog %d; want the second record parked and counted", st.q.parkedCount(), st.q.objects())
	}
}

// recordsRefused is fakeS3 refusing records alone with err (nil: taking
// them), while objects go through, and counting the records tried.
type recordsRefused struct {
	*fakeS3
	mu    sync.Mutex
	err   error
	tries int
}

func (r *recordsRefused) PutRecord(ctx context.Context, key string, body []byte) error {
	r.mu.Lock()
	r.tries++
	err := r.err
	r.mu.Unlock()
	if err != nil {
		return err
	}
	return r.fakeS3.PutRecord(ctx, key, body)
}

func (r *recordsRefused) refuse(err error) { r.mu.Lock(); r.err = err; r.mu.Unlock() }

func (r *recordsRefused) tried() int { r.mu.Lock(); defer r.mu.Unlock(); return r.tries }

// resendRecord is the key and bytes of the duplicate record of obj's
// C-STORE, an identical resend of an object S3 holds under its key, as
// the audit writer would have written it had the store answered the
// C-STORE a duplicate (the tests' Implementation "dicom-ingest test").
func resendRecord(t testing.TB, obj objectstore.Object) (string, []byte) {
	t.Helper()
	rec := associationaudit.Duplicate(associationaudit.Record{
		Time: obj.ReceivedAt, AssociationID: obj.AssociationID, CallingAE: obj.CallingAE, CalledAE: obj.CalledAE,
		PeerAddr: obj.PeerAddr, TLS: obj.TLS, Implementation: "dicom-ingest test", Seq: associationaudit.StagedSeq(obj.ReceivedAt),
	}, obj.SOPClassUID, obj.SOPInstanceUID, obj.StudyInstanceUID, obj.SeriesInstanceUID, key(t, obj))
	k, err := associationaudit.Key(rec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := associationaudit.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	return k, b
}

// TestResendKeptUntilItsRecord: an identical resend found at upload keeps
// its staged object until S3 has taken its duplicate record, the object
// itself being held there already: a record S3 refuses for a while (a
// transient failure) is tried again, one refused for good parks the
// object, and neither releases it (with S3's failures alone, the disk
// well: TestPowerLossWhileFreeing cuts both at once).
func TestResendKeptUntilItsRecord(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size      int
		permanent bool
	}{
		{"journaled", 150_000, false},
		{"large", 1_200_000, false},
		{"journaled, refused for good", 150_000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj, body := object(1), data(1, tc.size)
			earlier := obj
			earlier.AssociationID, earlier.ReceivedAt = "earlier", obj.ReceivedAt.Add(-time.Hour)
			s3 := &recordsRefused{fakeS3: newFakeS3(), err: errDown}
			if tc.permanent {
				s3.err = errors.New("fake S3: access denied")
			}
			s3.hold(earlier, body)
			st := newStore(t, Options{Dir: t.TempDir(), Uploader: s3, Implementation: "dicom-ingest test"})
			if _, err := st.Put(context.Background(), obj, bytes.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			// Tried again after a transient refusal, parked after a
			// permanent one: either way the refusal did not release the
			// object.
			refused := func() bool { return s3.tried() >= 2 }
			if tc.permanent {
				refused = func() bool { return st.q.parkedCount() == 1 }
			}
			testenv.EventuallySawWithin(t, 10*time.Second, "the resend's record refused, its object kept", func() (bool, string) {
				return refused(), fmt.Sprintf("the record tried %d times and %d objects parked: the object was released without its record?", s3.tried(), st.q.parkedCount())
			})
			if n := st.q.objects(); n != 1 {
				t.Fatalf("backlog %d objects while S3 refuses the resend's record, want its object kept", n)
			}
			if tc.permanent {
				return
			}
			s3.refuse(nil)
			drain(t, st)
			k, want := resendRecord(t, obj)
			if got, ok := s3.get(k); !ok || !bytes.Equal(got, want) {
				t.Errorf("record %s:\n%s\nwant\n%s", k, got, want)
			}
			if n := st.q.objects(); n != 0 {
				t.Errorf("backlog %d objects once the record is written", n)
			}
		})
	}
}

// TestResendOfAConflictCopyWarnsNothing: other bytes than the key holds,
// sent by one C-STORE and then again by another, are kept beside the held
// object once: the second upload finds the copy (S3 answers Conflict and
// Duplicate), writes the resend's duplicate record and warns of no copy,
// where it logged "other bytes sent for an already stored instance: kept
// beside it" for a copy it never made.
func TestResendOfAConflictCopyWarnsNothing(t *testing.T) {
	first, body := object(1), data(1, 150_000)
	earlier := first
	earlier.AssociationID, earlier.ReceivedAt = "earlier", first.ReceivedAt.Add(-time.Hour)
	again := first
	again.AssociationID, again.ReceivedAt = "again", first.ReceivedAt.Add(time.Minute)
	s3 := newFakeS3()
	s3.hold(earlier, data(2, 150_000))
	var logs testenv.LogBuffer
	st := newStore(t, Options{Dir: t.TempDir(), Uploader: s3, Implementation: "dicom-ingest test",
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	for _, obj := range []objectstore.Object{first, again} {
		if _, err := st.Put(context.Background(), obj, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		drain(t, st)
	}
	if n := strings.Count(logs.String(), "kept beside it"); n != 1 {
		t.Errorf("%d lines say a copy was kept beside the held object, want 1 (the first upload's):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "identical object already held: duplicate record written") {
		t.Errorf("the second upload wrote no duplicate record:\n%s", logs.String())
	}
	// The uploads metric tells them apart by the same rule: the copy made a
	// conflict, the resend that found it a duplicate (it counted both
	// conflict).
	for _, c := range []struct {
		outcome string
		want    float64
	}{{"conflict", 1}, {"duplicate", 1}} {
		if n := testutil.ToFloat64(st.m.uploads.WithLabelValues(c.outcome)); n != c.want {
			t.Errorf("uploads{outcome=%q} = %v, want %v", c.outcome, n, c.want)
		}
	}
}

// TestResendRecordOfAnotherVersion: an upload tried again by a newer task
// after a crash (a rolling deploy) finds the resend's record written by the
// older one, in other bytes. The key names the association, the C-STORE's
// receive time and the event, so it is this transfer's record: the object
// is released and the record left as it is. It was parked for good ("a
// different record already holds the key"), its age then turning the
// task's readiness off (found by the review).
func TestResendRecordOfAnotherVersion(t *testing.T) {
	obj, body := object(1), data(1, 150_000)
	earlier := obj
	earlier.AssociationID, earlier.ReceivedAt = "earlier", obj.ReceivedAt.Add(-time.Hour)
	s3 := newFakeS3()
	s3.hold(earlier, body)
	k, _ := resendRecord(t, obj)
	older := []byte(`{"schemaVersion":1,"event":"duplicate","implementationVersion":"dicom-ingest older"}`)
	if err := s3.PutRecord(context.Background(), k, older); err != nil {
		t.Fatal(err)
	}
	st := newStore(t, Options{Dir: t.TempDir(), Uploader: s3, Implementation: "dicom-ingest test"})
	if _, err := st.Put(context.Background(), obj, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	drain(t, st)
	if n, parked := st.q.objects(), st.q.parkedCount(); n != 0 || parked != 0 {
		t.Errorf("backlog %d objects, %d parked: the resend's object was kept over its record", n, parked)
	}
	if got, _ := s3.get(k); !bytes.Equal(got, older) {
		t.Errorf("record %s rewritten: %s", k, got)
	}
}

// TestResendRecordNamesTLSPeer: the duplicate record the uploader writes
// names the client certificate of the resend's TLS association, as the
// audit writer's records of that association do (ingest stages it with the
// object), journaled or large; a certificate with a serial number of
// 3,000 octets and a subject of some 9 KB is named as the audit writer's
// records name it (associationaudit.CertificatePeer cuts both), and the
// C-STORE not failed for it; an object staged by the previous version,
// whose record has no such field, is uploaded, its record naming none.
// The record named no certificate at all; then such a certificate failed
// every C-STORE of its site (A700: the journal record's header takes 4
// KiB), and one whose subject and issuer alone were long was journaled
// without them, its record naming it otherwise than the association's.
func TestResendRecordNamesTLSPeer(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	peer := associationaudit.CertificatePeer(ca.Client(t, testpki.Options{CommonName: "pacs.site-a.example"}).Cert, "pacs.site-a.example")
	long := associationaudit.CertificatePeer(ca.Client(t, testpki.Long("pacs.site-a.example")).Cert, "pacs.site-a.example")
	for _, tc := range []struct {
		name     string
		peer     *associationaudit.TLSPeer
		size     int
		want     *associationaudit.TLSPeer
		previous bool // staged by the previous version
	}{
		{"journaled", peer, 150_000, peer, false},
		{"large", peer, 1_200_000, peer, false},
		{"plain association", nil, 150_000, nil, false},
		{"a long serial number and subject", long, 150_000, long, false},
		{"a long serial number and subject, large", long, 1_200_000, long, false},
		{"staged by the previous version", nil, 150_000, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj, body := object(1), data(1, tc.size)
			obj.TLS = tc.peer
			earlier := obj
			earlier.AssociationID, earlier.ReceivedAt, earlier.TLS = "earlier", obj.ReceivedAt.Add(-time.Hour), nil
			s3 := newFakeS3()
			s3.hold(earlier, body)
			dir := t.TempDir()
			o := Options{Dir: dir, Uploader: s3, Implementation: "dicom-ingest test"}
			if tc.previous {
				o.TaskID = "previous"
				stagePrevious(t, filepath.Join(dir, journalsDir, o.TaskID), obj, body)
			}
			st := newStore(t, o)
			if !tc.previous {
				if _, err := st.Put(context.Background(), obj, bytes.NewReader(body)); err != nil {
					t.Fatal(err)
				}
			}
			drain(t, st)
			want := obj
			want.TLS = tc.want
			k, b := resendRecord(t, want)
			if got, ok := s3.get(k); !ok || !bytes.Equal(got, b) {
				t.Errorf("record %s:\n%s\nwant\n%s", k, got, b)
			}
			if n, parked := st.q.objects(), st.q.parkedCount(); n != 0 || parked != 0 {
				t.Errorf("backlog %d objects, %d parked", n, parked)
			}
		})
	}
}

// TestResendUploadedBeforeTheOriginal: a task dies with an object staged,
// and the PACS's resend, staged by another task, is uploaded before the
// dead task's journal is taken over. Decided at upload, the roles follow
// the uploads (staged-store.md): S3 holds the object once, from the
// resend's C-STORE, and the original's upload gets the duplicate record,
// dated by its own receive time; the resend gets none. Nothing is lost or
// doubled.
func TestResendUploadedBeforeTheOriginal(t *testing.T) {
	original, body := object(1), data(1, 150_000)
	resend := original
	resend.AssociationID, resend.ReceivedAt = "resend", original.ReceivedAt.Add(time.Minute)
	dir := t.TempDir()
	s3 := newFakeS3()
	s3.setDown(true)
	dead, err := New(Options{Dir: dir, Uploader: s3, TaskID: "dead", AdoptEvery: time.Hour, Implementation: "dicom-ingest test"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dead.Put(context.Background(), original, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
	s3.setDown(false)
	other := newStore(t, Options{Dir: t.TempDir(), Uploader: s3, Implementation: "dicom-ingest test"})
	if _, err := other.Put(context.Background(), resend, bytes.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	drain(t, other)
	next := newStore(t, Options{Dir: dir, Uploader: s3, Implementation: "dicom-ingest test"})
	waitGone(t, filepath.Join(dir, journalsDir, "dead"))
	drain(t, next)

	k := key(t, original)
	s3.mu.Lock()
	defer s3.mu.Unlock()
	if !bytes.Equal(s3.objects[k], body) || s3.from[k] != transfer(resend) {
		t.Errorf("S3 holds %s from %q, want the resend's", k, s3.from[k])
	}
	var records []string
	for key := range s3.objects {
		if strings.HasPrefix(key, objectstore.AuditPrefix) {
			records = append(records, key)
		}
	}
	rk, rb := resendRecord(t, original)
	if len(records) != 1 || records[0] != rk || !bytes.Equal(s3.objects[rk], rb) {
		t.Errorf("records %q, want the original's duplicate record %s alone", records, rk)
	}
}

// stagePrevious writes obj's C-STORE into the journal at dir as the
// previous version staged it: its meta without the TLS peer.
func stagePrevious(t *testing.T, dir string, obj objectstore.Object, body []byte) {
	t.Helper()
	if obj.TLS != nil {
		t.Fatal("the previous version staged no TLS peer")
	}
	at := func(x time.Time) string { return x.UTC().Format(time.RFC3339Nano) }
	md := fmt.Sprintf(`{"k":"object","o":{"SOPClassUID":%q,"SOPInstanceUID":%q,"StudyInstanceUID":%q,"SeriesInstanceUID":%q,`+
		`"TransferSyntaxUID":%q,"CallingAE":%q,"CalledAE":%q,"PeerAddr":%q,"AssociationID":%q,"ReceivedAt":%q},"impl":"dicom-ingest test","t":%q}`,
		obj.SOPClassUID, obj.SOPInstanceUID, obj.StudyInstanceUID, obj.SeriesInstanceUID, obj.TransferSyntaxUID,
		obj.CallingAE, obj.CalledAE, obj.PeerAddr, obj.AssociationID, at(obj.ReceivedAt), at(obj.ReceivedAt))
	if err := os.MkdirAll(filepath.Join(dir, largeDir), 0o750); err != nil {
		t.Fatal(err)
	}
	j, _, err := journal.Open(dir, journal.Options{SegmentSize: DefaultSegmentSize, Segments: 2})
	if err != nil {
		t.Fatal(err)
	}
	buf := journal.NewBuffer(len(body))
	copy(buf[journal.BlockSize:], body)
	if _, err := j.Append(context.Background(), []byte(md), buf, len(body)); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRestartUploadsWhatWasStaged: a task that stops with objects staged
// (S3 down) leaves them to the next one, which uploads them and removes
// the old journal.
func TestRestartUploadsWhatWasStaged(t *testing.T) {
	dir := t.TempDir()
	s3 := newFakeS3()
	s3.setDown(true)
	first, err := New(Options{Dir: dir, Uploader: s3, AdoptEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{}
	for i := range 6 {
		b := data(i, 500_000*i+10)
		if _, err := first.Put(context.Background(), object(i), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		want[key(t, object(i))] = b
	}
	if err := first.PutRecord(context.Background(), objectstore.AuditPrefix+"r.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	want[objectstore.AuditPrefix+"r.json"] = []byte("{}")
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	s3.setDown(false)
	second := newStore(t, Options{Dir: dir, Uploader: s3})
	var got map[string][]byte
	testenv.EventuallySawWithin(t, 30*time.Second, "every object uploaded by the next task", func() (bool, string) {
		s3.mu.Lock()
		got = maps.Clone(s3.objects)
		s3.mu.Unlock()
		return len(got) == len(want), fmt.Sprintf("%d of %d uploaded", len(got), len(want))
	})
	for k, b := range want {
		if !bytes.Equal(got[k], b) {
			t.Errorf("%s uploaded with other bytes", k)
		}
	}
	drain(t, second)
	waitGone(t, filepath.Join(dir, journalsDir, first.TaskID()))
}

func waitGone(t *testing.T, path string) {
	t.Helper()
	testenv.EventuallySawWithin(t, 10*time.Second, path+" gone", func() (bool, string) {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return true, ""
		}
		entries, _ := os.ReadDir(path)
		return false, fmt.Sprintf("still there: %v", entries)
	})
}

// objectMeta keeps what describes the object: its user metadata,
// content type and checksum, not the request's date.
func objectMeta(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if strings.HasPrefix(strings.ToLower(k), "x-amz-meta-") || strings.EqualFold(k, "Content-Type") || strings.EqualFold(k, "X-Amz-Checksum-Crc64nvme") {
			out[k] = v
		}
	}
	return out
}

// keyedErrS3 fails every upload with an error quoting the object's key, as
// lower layers' errors do (paths, request URLs).
type keyedErrS3 struct{ *fakeS3 }

func (k keyedErrS3) Put(ctx context.Context, obj objectstore.Object, r io.Reader) (objectstore.Stored, error) {
	key, _ := objectstore.Key(obj)
	return objectstore.Stored{}, fmt.Errorf("put p/%s: %w", key, objectstore.ErrUnavailable)
}

// TestLogsNameObjectsByDigest: an upload's failure is logged naming the
// object by the log-name digest of its S3 key (prefix included, as the S3
// store and the functions name it), and no line carries its UIDs.
func TestLogsNameObjectsByDigest(t *testing.T) {
	names, err := logname.New(bytes.Repeat([]byte{7}, logname.MinKeyLen))
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	st := newStore(t, Options{Dir: t.TempDir(), Uploader: keyedErrS3{newFakeS3()}, Names: names, NamePrefix: "p/",
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	obj := object(1)
	if _, err := st.Put(context.Background(), obj, bytes.NewReader(data(1, 1000))); err != nil {
		t.Fatal(err)
	}
	k := key(t, obj)
	want := names.Name("p/" + k)
	testenv.EventuallySawWithin(t, 10*time.Second, "the failed upload's retry logged", func() (bool, string) {
		out := logs.String()
		return strings.Contains(out, "upload failed; retrying"), out
	})
	out := logs.String()
	if !strings.Contains(out, `"object":"`+want+`"`) {
		t.Errorf("no line names the object %s:\n%s", want, out)
	}
	for _, uid := range append(logname.UIDs(k), obj.StudyInstanceUID, obj.SeriesInstanceUID, obj.SOPInstanceUID) {
		if strings.Contains(out, uid) {
			t.Errorf("logs carry UID %s:\n%s", uid, out)
		}
	}
}

// TestConflictUploadedAgainWarnsOnce: a conflicting object (other bytes
// than its key holds) uploaded, and uploaded again by its own C-STORE
// after its task died before the journal said so (st.SameTransfer: its
// conflict copy is found held), is warned of once: by the upload that
// kept it beside the held one, the S3 store's line and the staged
// store's; the upload again finds the copy its C-STORE made and logs it at
// info level. Single-part and multipart, whose conflict key is named after
// the C-STORE, and either after S3 answered the upload again's first
// write of the copy 503 (SlowDown): S3 answered, so it stored nothing and
// the copy found is still the first upload's, a duplicate of this
// C-STORE's, not this upload's own. The upload again warned of the
// conflict again, from both the S3 store and the staged store, and after
// the 503 reported the copy stored by itself and warned so too.
func TestConflictUploadedAgainWarnsOnce(t *testing.T) {
	for _, tc := range []struct {
		name       string
		size       int
		slowedDown bool // the upload again's first write of the copy is answered 503
	}{
		{"journaled", 150_000, false},
		{"multipart", s3store.MinPartSize + 1000, false},
		{"journaled after a 503", 150_000, true},
		{"multipart after a 503", s3store.MinPartSize + 1000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			srv := s3test.NewServer(t, "bucket")
			var first, again testenv.LogBuffer
			againURL := srv.URL
			if tc.slowedDown {
				var once atomic.Bool
				againURL = s3test.NewFaultProxy(t, srv.URL, s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Status503},
					Match: func(r *http.Request) bool {
						q := r.URL.Query()
						write := r.Method == http.MethodPut && !q.Has("partNumber") || r.Method == http.MethodPost && q.Has("uploadId")
						return write && strings.Contains(r.URL.Path, ".conflict-") && once.CompareAndSwap(false, true)
					}}).URL
			}
			up := func(logs *testenv.LogBuffer) *s3store.Store {
				url := srv.URL
				if logs == &again {
					url = againURL
				}
				s, err := s3store.New(ctx, s3store.Options{Bucket: "bucket", Prefix: "p", Client: s3test.Client(url),
					PartSize: s3store.MinPartSize, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			obj, body := object(1), data(1, tc.size)
			held := obj
			held.AssociationID, held.ReceivedAt = "earlier", obj.ReceivedAt.Add(-time.Hour)
			if _, err := up(&first).Put(ctx, held, bytes.NewReader(data(2, tc.size))); err != nil {
				t.Fatal(err)
			}
			first.Take()
			// The first task's upload: the conflict copy is made, and the
			// task dies before its journal says so.
			dir := t.TempDir()
			dead := newStore(t, Options{Dir: dir, Uploader: up(&first), TaskID: "dead", Logger: slog.New(slog.NewJSONHandler(&first, nil))})
			if _, err := dead.Put(ctx, obj, bytes.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			drain(t, dead)
			if err := dead.Close(); err != nil {
				t.Fatal(err)
			}
			stagePrevious(t, filepath.Join(dir, journalsDir, "again"), obj, body)
			next := newStore(t, Options{Dir: dir, Uploader: up(&again), Logger: slog.New(slog.NewJSONHandler(&again, nil))})
			waitGone(t, filepath.Join(dir, journalsDir, "again"))
			drain(t, next)

			// A multipart upload again aborts its upload, as any
			// duplicate does: at info level, no warning either.
			warnings := func(logs string) (n int) {
				for line := range strings.Lines(logs) {
					if strings.Contains(line, `"level":"WARN"`) {
						n++
					}
				}
				return n
			}
			if n := warnings(first.String()); n != 2 {
				t.Errorf("the first upload logged %d warnings, want 2 (the S3 store's and the staged store's):\n%s", n, first.String())
			}
			if n := warnings(again.String()); n != 0 || !strings.Contains(again.String(), `"msg":"conflict copy of this C-STORE already stored"`) {
				t.Errorf("the upload again logged %d warnings, want none, and no info line of the copy found:\n%s", n, again.String())
			}
			keys, err := srv.Keys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 2 {
				t.Errorf("S3 holds %q, want the object and one conflict copy", keys)
			}
		})
	}
}

// TestMetaFitsTheRecord: the meta journaled with an object fits a record's
// header (journal.MaxMeta) whatever the C-STORE: every field at its bound,
// in characters JSON escapes (6 bytes each): the study and series UIDs as
// the data set's header named them (dataset keeps 128 bytes of each,
// unchecked), AE titles of 16 '<' (dicomnet turns what is not printable
// into '?'), the longest peer address, and a client certificate named by
// associationaudit.CertificatePeer, whose subject and issuer it cuts as
// JSON writes them, with the longest certificate name the allowlist takes.
func TestMetaFitsTheRecord(t *testing.T) {
	ca := testpki.NewCA(t, strings.Repeat("\x01", 200))
	cert := ca.Client(t, testpki.Long(strings.Repeat("<", 64))).Cert
	uid := strings.Repeat("1.2", 21) + "4"
	odd := strings.Repeat("\x01", 128)
	ae := strings.Repeat("<", 16)
	obj := objectstore.Object{
		SOPClassUID: uid, SOPInstanceUID: uid, StudyInstanceUID: odd, SeriesInstanceUID: odd, TransferSyntaxUID: uid,
		CallingAE: ae, CalledAE: ae, PeerAddr: "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255%" + strings.Repeat("e", 15) + "]:65535",
		AssociationID: strings.Repeat("f", 64) + "-18446744073709551615", ReceivedAt: time.Now(),
		TLS: associationaudit.CertificatePeer(cert, strings.Repeat("n", accesscontrol.MaxNameLength)),
	}
	md := meta{Kind: kindLarge, Object: &obj, Large: strings.Repeat("0", 24), Size: 1 << 40, CRC: ^uint64(0),
		Impl: strings.Repeat("v", 64), StagedAt: time.Now()}
	b, err := json.Marshal(md)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > journal.MaxMeta {
		t.Errorf("meta of %d bytes, the record's header takes %d", len(b), journal.MaxMeta)
	}
	t.Logf("meta of %d bytes, at most %d", len(b), journal.MaxMeta)
}
