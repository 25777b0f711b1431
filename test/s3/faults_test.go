package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

const (
	bucket = "dicom-interop"
	prefix = "scp/"
)

func object(i int) objectstore.Object {
	return objectstore.Object{
		SOPClassUID:       "1.2.840.10008.5.1.4.1.1.2",
		SOPInstanceUID:    fmt.Sprintf("1.2.826.0.1.3680043.2.1143.%d", i),
		StudyInstanceUID:  "1.2.826.0.1.3680043.2.1143.1",
		SeriesInstanceUID: "1.2.826.0.1.3680043.2.1143.1.1",
		TransferSyntaxUID: "1.2.840.10008.1.2.1",
		CallingAE:         "PACS",
		CalledAE:          "INGEST",
		PeerAddr:          "127.0.0.1:50000",
		AssociationID:     fmt.Sprintf("assoc-%d", i%5),
		ReceivedAt:        time.Date(2026, 11, 27, 1, 2, 3, i, time.UTC),
	}
}

type putCase struct {
	obj     objectstore.Object
	data    []byte
	failAt  int64 // >0: the reader fails after this many bytes
	stored  objectstore.Stored
	err     error
	elapsed time.Duration
}

// TestStorePromiseUnderFaults sends objects of every size through a proxy
// that answers 500/503, stalls, resets connections before and after
// forwarding, and goes down entirely for a while. Whatever happens, every
// Put that returned nil is in S3 whole with a matching checksum, every
// other Put returned an error, nothing partial is visible and no
// multipart upload is left.
func TestStorePromiseUnderFaults(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{
		Rate:      0.25,
		Faults:    []s3test.Fault{s3test.Status500, s3test.Status503, s3test.Slow, s3test.ResetBefore, s3test.ResetAfter},
		SlowDelay: 300 * time.Millisecond,
		Seed:      20261127,
	})
	s3test.SetEnv(t, proxy.URL)
	st, err := s3store.New(context.Background(), s3store.Options{
		Bucket: bucket, Prefix: prefix, PathStyle: true,
		PartSize:       s3store.MinPartSize,
		RetryDeadline:  s3store.DefaultRetryDeadline, // as in production: 20 s
		AttemptTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}

	var cases []*putCase
	for i := range 36 {
		size := int64(1+i*7919%300) << 10 // 1-300 KiB
		if i%6 == 5 {
			size = s3store.MinPartSize + int64(i)*200<<10 // multipart, 2-3 parts
		}
		c := &putCase{obj: object(i + 1), data: s3test.Bytes(uint64(i), size)}
		if i%9 == 4 { // association aborted mid-object
			c.failAt = size / 2
		}
		cases = append(cases, c)
	}
	// A multipart object whose association dies in its second part.
	big := &putCase{obj: object(100), data: s3test.Bytes(100, 3*s3store.MinPartSize)}
	big.failAt = s3store.MinPartSize + 1000
	cases = append(cases, big)

	// The server goes down for 30 s, a second into the run: longer than
	// the 20 s retry deadline, so Puts caught early in the outage fail
	// (A700 for the sender) while later ones wait it out and succeed.
	const downFor = 30 * time.Second
	downTimer := time.AfterFunc(time.Second, func() { proxy.Down(downFor) })
	defer downTimer.Stop()

	work := make(chan *putCase)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				var r io.Reader = bytes.NewReader(c.data)
				if c.failAt > 0 {
					r = s3test.FailingReader(r, c.failAt)
				}
				start := time.Now()
				c.stored, c.err = st.Put(context.Background(), c.obj, r)
				c.elapsed = time.Since(start)
			}
		}()
	}
	for _, c := range cases {
		work <- c
		time.Sleep(time.Second) // spread the run across the outage
	}
	close(work)
	wg.Wait()
	// Every Put has returned, its aborts done (no put timeout: nothing
	// goes on behind an answer), and the checks go to the server directly.

	ctx := context.Background()
	var ok, unavailable, aborted int
	want := map[string][]byte{} // key -> bytes S3 may hold
	for _, c := range cases {
		key, _ := objectstore.Key(c.obj)
		want[prefix+key] = c.data
		switch {
		case c.failAt > 0:
			aborted++
			if !errors.Is(c.err, s3test.ErrInjected) && !errors.Is(c.err, objectstore.ErrUnavailable) {
				t.Errorf("%s: reader failed at %d, Put returned %v", key, c.failAt, c.err)
			}
			if _, _, err := srv.Object(prefix + key); err == nil {
				t.Errorf("%s: partial object of an aborted transfer is visible", key)
			}
		case c.err == nil:
			ok++
			if c.stored.Key != key || c.stored.Conflict {
				t.Errorf("%s: stored as %+v", key, c.stored)
			}
			body, meta, err := srv.Object(prefix + key)
			if _, has := meta["X-Amz-Meta-Sha256"]; err == nil && has {
				t.Errorf("%s: sha256 metadata: the content identity is the CRC64NVME", key)
			}
			if err != nil {
				t.Errorf("%s: acknowledged but not in S3: %v", key, err)
				continue
			}
			if !bytes.Equal(body, c.data) {
				t.Errorf("%s: acknowledged %d bytes, S3 holds %d different ones", key, len(c.data), len(body))
			}
			if got, _ := srv.Checksum(prefix + key); got != s3test.CRC64NVME(c.data) {
				t.Errorf("%s: CRC64NVME %q, want %q", key, got, s3test.CRC64NVME(c.data))
			}
		default:
			unavailable++
			if !errors.Is(c.err, objectstore.ErrUnavailable) {
				t.Errorf("%s: failed with %v, want an error wrapping ErrUnavailable", key, c.err)
			}
		}
	}
	// Nothing in S3 but whole objects that were sent (a failed Put may
	// still have landed, whole, when only S3's answer was lost).
	keys, err := srv.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		data, known := want[k]
		if !known {
			t.Errorf("unexpected object %s", k)
			continue
		}
		if body, _, err := srv.Object(k); err != nil || !bytes.Equal(body, data) {
			t.Errorf("%s: S3 holds something other than the object sent (%v)", k, err)
		}
	}
	if n, err := srv.PendingUploads(ctx); err != nil || n != 0 {
		t.Errorf("pending multipart uploads: %d (%v)", n, err)
	}
	faults := proxy.Counts()
	t.Logf("%d stored, %d unavailable, %d aborted by the reader; faults injected: %v", ok, unavailable, aborted, faults)
	if ok == 0 {
		t.Error("nothing was stored: the fault rate leaves no signal")
	}
	if len(faults) == 0 {
		t.Error("no faults were injected")
	}
	if unavailable == 0 {
		t.Error("no Put failed: the outage, longer than the retry deadline, was not exercised")
	}
}

// TestReadyFollowsOutage checks that the store reports itself unavailable
// while S3 is unreachable (the SCP then refuses associations with
// "temporary congestion") and ready again once it is back.
func TestReadyFollowsOutage(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{})
	s3test.SetEnv(t, proxy.URL)
	st, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, PathStyle: true, ReadyTTL: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Ready(context.Background()); err != nil {
		t.Fatalf("ready before the outage: %v", err)
	}
	proxy.Down(2 * time.Second)
	time.Sleep(150 * time.Millisecond)
	if err := st.Ready(context.Background()); !errors.Is(err, objectstore.ErrUnavailable) {
		t.Errorf("ready during the outage = %v, want ErrUnavailable", err)
	}
	testenv.EventuallySawWithin(t, 10*time.Second, "ready again after the outage", func() (bool, string) {
		err := st.Ready(context.Background())
		return err == nil, fmt.Sprintf("Ready = %v", err)
	})
}

// TestTargetedFaults aims each fault at one S3 operation, through real
// HTTP, so every lost-answer path is taken: the store must end with each
// object stored whole (or an error), no partial object, no upload left.
func TestTargetedFaults(t *testing.T) {
	is := func(method string, query ...string) func(*http.Request) bool {
		return func(r *http.Request) bool {
			if r.Method != method {
				return false
			}
			for _, q := range query {
				if !r.URL.Query().Has(q) {
					return false
				}
			}
			return true
		}
	}
	putObject := func(r *http.Request) bool { return r.Method == http.MethodPut && !r.URL.Query().Has("partNumber") }
	for _, tc := range []struct {
		name  string
		match func(*http.Request) bool
		fault s3test.Fault
	}{
		{"create answer lost", is(http.MethodPost, "uploads"), s3test.ResetAfter},
		{"part answer lost", is(http.MethodPut, "partNumber"), s3test.ResetAfter},
		{"complete answer lost", is(http.MethodPost, "uploadId"), s3test.ResetAfter},
		{"complete 503", is(http.MethodPost, "uploadId"), s3test.Status503},
		{"abort answer lost", is(http.MethodDelete, "uploadId"), s3test.ResetAfter},
		{"put answer lost", putObject, s3test.ResetAfter},
		{"head 500", is(http.MethodHead), s3test.Status500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := s3test.NewServer(t, bucket)
			proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{Rate: 0.5, Faults: []s3test.Fault{tc.fault}, Match: tc.match, Seed: 7})
			s3test.SetEnv(t, proxy.URL)
			st, err := s3store.New(context.Background(), s3store.Options{
				Bucket: bucket, Prefix: prefix, PathStyle: true, PartSize: s3store.MinPartSize, RetryDeadline: 3 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			sizes := []int64{1000, 2*s3store.MinPartSize + 10, 300 << 10, s3store.MinPartSize + 10}
			for i, size := range sizes {
				obj := object(500 + i)
				data := s3test.Bytes(uint64(i), size)
				r := io.Reader(bytes.NewReader(data))
				if tc.name == "abort answer lost" {
					r = s3test.FailingReader(r, size-5) // every multipart put aborts
				}
				got, err := st.Put(context.Background(), obj, r)
				key, _ := objectstore.Key(obj)
				body, _, gerr := srv.Object(prefix + key)
				switch {
				case err == nil:
					if gerr != nil || !bytes.Equal(body, data) || got.Key != key {
						t.Errorf("%d bytes: acknowledged as %+v, S3 holds %d bytes (%v)", size, got, len(body), gerr)
					}
				case gerr == nil && !bytes.Equal(body, data):
					t.Errorf("%d bytes: failed (%v) and S3 holds a different object", size, err)
				}
			}
			if n, err := srv.PendingUploads(context.Background()); err != nil || n != 0 {
				t.Errorf("pending multipart uploads: %d (%v)", n, err)
			}
			if proxy.Counts()[tc.fault] == 0 {
				t.Errorf("no %v injected", tc.fault)
			}
		})
	}
}
