// Package storetest is a conformance suite for objectstore.Store
// implementations: every backend runs the same checks of the contract the
// SCP relies on (durable on nil, nothing visible on failure, duplicates
// and conflicts never overwrite, records are create-only).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// Harness gives the suite a fresh store and a way to read what it holds.
type Harness struct {
	// New returns an empty store.
	New func(t *testing.T) objectstore.Store
	// Read returns the bytes under key (relative to the store root) of the
	// store New returned last, or an error if there is none.
	Read func(t *testing.T, key string) ([]byte, error)
	// Sizes are the object sizes to try; include sizes around the
	// backend's internal boundaries (S3 part size). Default: 0, 1 KiB,
	// 1 MiB.
	Sizes []int64
	// Deferred is set for a store that decides duplicates and conflicts
	// after it acknowledged an object (a staged store uploading later):
	// its Put reports neither, and its PutRecord may accept a different
	// record that it will then never write over the first. Read must
	// return what the store holds once it has finished (after the
	// uploads). The suite then checks what ends up stored instead.
	Deferred bool
	// Conflicts returns the conflict keys stored beside key once the
	// store has finished (Deferred only: its Put cannot say where a
	// conflicting object went, and the backend names it, by a checksum
	// or at random).
	Conflicts func(t *testing.T, key string) []string
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	if len(h.Sizes) == 0 {
		h.Sizes = []int64{0, 1 << 10, 1 << 20}
	}
	if h.Deferred && h.Conflicts == nil {
		t.Fatal("storetest: a Deferred harness needs Conflicts")
	}
	t.Run("PutStoresBytes", func(t *testing.T) { testPutStoresBytes(t, h) })
	t.Run("DuplicateAndConflict", func(t *testing.T) { testDuplicateAndConflict(t, h) })
	t.Run("ReaderErrorStoresNothing", func(t *testing.T) { testReaderError(t, h) })
	t.Run("UnsafeUIDRefused", func(t *testing.T) { testUnsafeUID(t, h) })
	t.Run("ConcurrentSameObject", func(t *testing.T) { testConcurrentSame(t, h) })
	t.Run("PutRecord", func(t *testing.T) { testPutRecord(t, h) })
	t.Run("Ready", func(t *testing.T) {
		if err := h.New(t).Ready(context.Background()); err != nil {
			t.Errorf("Ready on a fresh store: %v", err)
		}
	})
}

// WaitReady waits for s's Ready to say ready (nil) or not, past the
// second a store reuses its answer for, and returns Ready's last answer.
func WaitReady(t testing.TB, s interface{ Ready(context.Context) error }, ready bool, within time.Duration) error {
	t.Helper()
	var err error
	testenv.EventuallySawWithin(t, within, fmt.Sprintf("Ready saying ready %v", ready), func() (bool, string) {
		err = s.Ready(context.Background())
		return (err == nil) == ready, fmt.Sprintf("Ready = %v", err)
	})
	return err
}

// ReadyDuring asks s's Ready every 50 ms for d, calling step with the
// round's number after each question (a sender's retries, other writes),
// and returns when, since it started, Ready said ready.
func ReadyDuring(s interface{ Ready(context.Context) error }, d time.Duration, step func(i int)) (readyAt []time.Duration) {
	start := time.Now()
	for i := 0; time.Since(start) < d; i++ {
		if err := s.Ready(context.Background()); err == nil {
			readyAt = append(readyAt, time.Since(start).Round(time.Millisecond))
		}
		step(i)
		time.Sleep(50 * time.Millisecond)
	}
	return readyAt
}

// RefusedUnread calls put with a body of size bytes and fails the test
// unless put refuses it for lack of space (vfs.ErrReserve, with
// objectstore.ErrUnavailable: A700 on the wire) before reading a byte of
// it, and so before writing one, as a store in a shortage does
// (vfs.Shortage.Admit); nor may the error be a write's own lack of space
// (vfs.NoSpace), which would count as another write that found the disk
// full.
func RefusedUnread(t testing.TB, what string, size int64, put func(body io.Reader) error) {
	t.Helper()
	body := bytes.NewReader(make([]byte, size))
	err := put(body)
	if !errors.Is(err, vfs.ErrReserve) || !errors.Is(err, objectstore.ErrUnavailable) || vfs.NoSpace(err) {
		t.Errorf("%s = %v, want ErrUnavailable and ErrReserve, not a write's lack of space", what, err)
	}
	if read := size - int64(body.Len()); read > 0 {
		t.Errorf("%s read %d of the object's %d bytes before it failed, want none", what, read, size)
	}
}

// NoUIDs fails the test if msg (an error, a log) names one of objs: its
// key or any of its UIDs.
func NoUIDs(t testing.TB, what, msg string, objs ...objectstore.Object) {
	t.Helper()
	for _, o := range objs {
		key, err := objectstore.Key(o)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{key, o.SOPInstanceUID, o.StudyInstanceUID, o.SeriesInstanceUID} {
			if strings.Contains(msg, s) {
				t.Errorf("%s names an object (%q): %s", what, s, msg)
			}
		}
	}
}

// Object returns a valid object description numbered n.
func Object(n int) objectstore.Object {
	return objectstore.Object{
		SOPClassUID:       "1.2.840.10008.5.1.4.1.1.7",
		SOPInstanceUID:    fmt.Sprintf("1.2.826.0.1.3680043.9.7433.%d", n),
		StudyInstanceUID:  "1.2.826.0.1.3680043.9.7433.1",
		SeriesInstanceUID: "1.2.826.0.1.3680043.9.7433.1.1",
		TransferSyntaxUID: "1.2.840.10008.1.2.1",
		CallingAE:         "STORETEST",
		CalledAE:          "INGEST",
		PeerAddr:          "127.0.0.1:1",
		AssociationID:     "storetest",
		ReceivedAt:        time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC),
	}
}

func data(seed uint64, size int64) []byte {
	b := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

func sum(b []byte) string { return crcnvme.Base64(b) }

// sumOrEmpty reports whether got is b's CRC-64/NVME (base64) or empty (a
// store that leaves the checksum to its backend).
func sumOrEmpty(got string, b []byte) bool { return got == "" || got == sum(b) }

func testPutStoresBytes(t *testing.T, h Harness) {
	st := h.New(t)
	for i, size := range h.Sizes {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			obj := Object(100 + i)
			want := data(uint64(i), size)
			got, err := st.Put(context.Background(), obj, bytes.NewReader(want))
			if err != nil {
				t.Fatal(err)
			}
			key, _ := objectstore.Key(obj)
			if got.Key != key || got.Size != size || got.Duplicate || got.Conflict || !sumOrEmpty(got.CRC64NVME, want) {
				t.Errorf("Stored = %+v, want key %s size %d crc64nvme %s or none", got, key, size, sum(want))
			}
			b, err := h.Read(t, key)
			if err != nil || !bytes.Equal(b, want) {
				t.Errorf("read back %d bytes (%v), want the %d sent", len(b), err, size)
			}
		})
	}
}

func testDuplicateAndConflict(t *testing.T, h Harness) {
	st := h.New(t)
	ctx := context.Background()
	for i, size := range h.Sizes {
		if size == 0 {
			continue // no different content of the same size
		}
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			obj := Object(200 + i)
			key, _ := objectstore.Key(obj)
			orig, other := data(1, size), data(2, size)
			if _, err := st.Put(ctx, obj, bytes.NewReader(orig)); err != nil {
				t.Fatal(err)
			}
			dup, err := st.Put(ctx, obj, bytes.NewReader(orig))
			if h.Deferred {
				if err != nil {
					t.Errorf("identical resend: %v", err)
				}
			} else if err != nil || !dup.Duplicate || dup.Conflict || dup.Key != key || !sumOrEmpty(dup.CRC64NVME, orig) {
				t.Errorf("identical resend = %+v, %v; want a duplicate under %s", dup, err, key)
			}
			conf, err := st.Put(ctx, obj, bytes.NewReader(other))
			if h.Deferred {
				// Kept beside the first, under a conflict key: the one
				// the backend chose.
				if err != nil {
					t.Fatalf("different object: %v", err)
				}
				ks := h.Conflicts(t, key)
				if len(ks) != 1 {
					t.Fatalf("conflict keys beside %s: %q, want one", key, ks)
				}
				conf.Key = ks[0]
			} else if err != nil || !conf.Conflict || conf.Key == key || !sumOrEmpty(conf.CRC64NVME, other) {
				t.Fatalf("different object = %+v, %v; want a conflict under another key", conf, err)
			}
			if b, err := h.Read(t, conf.Key); err != nil || !bytes.Equal(b, other) {
				t.Errorf("conflicting object not readable under %s (%v)", conf.Key, err)
			}
			if b, err := h.Read(t, key); err != nil || !bytes.Equal(b, orig) {
				t.Errorf("original overwritten or lost (%v)", err)
			}
		})
	}
}

var errInjected = errors.New("storetest: association aborted")

type failAfter struct {
	r io.Reader
	n int64
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errInjected
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

func testReaderError(t *testing.T, h Harness) {
	st := h.New(t)
	for i, size := range h.Sizes {
		if size == 0 {
			continue
		}
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			obj := Object(300 + i)
			_, err := st.Put(context.Background(), obj, &failAfter{r: bytes.NewReader(data(3, size)), n: size - 1})
			if !errors.Is(err, errInjected) {
				t.Errorf("Put with a failing reader = %v, want the reader's error", err)
			}
			key, _ := objectstore.Key(obj)
			if _, err := h.Read(t, key); err == nil {
				t.Error("part of an aborted object is readable")
			}
		})
	}
}

func testUnsafeUID(t *testing.T, h Harness) {
	st := h.New(t)
	obj := Object(1)
	obj.SOPInstanceUID = "../../etc/passwd"
	if _, err := st.Put(context.Background(), obj, bytes.NewReader([]byte("x"))); !errors.Is(err, objectstore.ErrUnsafeUID) {
		t.Errorf("Put with an unsafe UID = %v, want ErrUnsafeUID", err)
	}
}

func testConcurrentSame(t *testing.T, h Harness) {
	st := h.New(t)
	obj := Object(400)
	body := data(4, h.Sizes[len(h.Sizes)-1]+1)
	const n = 4
	var wg sync.WaitGroup
	res := make([]objectstore.Stored, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = st.Put(context.Background(), obj, bytes.NewReader(body))
		}()
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		// A racing writer may be told to retry; it must never be told a
		// different story than "stored" or "duplicate".
		if errs[i] != nil {
			if !errors.Is(errs[i], objectstore.ErrUnavailable) {
				t.Errorf("concurrent Put %d: %v", i, errs[i])
			}
			continue
		}
		if res[i].Conflict {
			t.Errorf("concurrent identical Put %d reported a conflict: %+v", i, res[i])
		}
		if !res[i].Duplicate {
			fresh++
		}
	}
	if fresh > 1 && !h.Deferred {
		t.Errorf("%d concurrent identical Puts each claim to have stored it", fresh)
	}
	key, _ := objectstore.Key(obj)
	if b, err := h.Read(t, key); err != nil || !bytes.Equal(b, body) {
		t.Errorf("object after concurrent Puts: %v", err)
	}
}

func testPutRecord(t *testing.T, h Harness) {
	st := h.New(t)
	ctx := context.Background()
	key := objectstore.AuditPrefix + "2026/11/27/storetest-000001-association-rejected.json"
	body := []byte(`{"event":"association-rejected"}`)
	if err := st.PutRecord(ctx, key, body); err != nil {
		t.Fatal(err)
	}
	if err := st.PutRecord(ctx, key, body); err != nil {
		t.Errorf("writing the same record again: %v", err)
	}
	if b, err := h.Read(t, key); err != nil || !bytes.Equal(b, body) {
		t.Errorf("record read back %q (%v)", b, err)
	}
	// The audit trail is append-only: a record is never replaced.
	if err := st.PutRecord(ctx, key, []byte(`{"event":"other"}`)); !h.Deferred && !errors.Is(err, objectstore.ErrRecordHeld) {
		t.Errorf("a different record under an existing key: %v, want ErrRecordHeld", err)
	}
	if b, err := h.Read(t, key); err != nil || !bytes.Equal(b, body) {
		t.Errorf("record after a refused rewrite %q (%v)", b, err)
	}
	if err := st.PutRecord(ctx, "incoming/x.json", body); err == nil {
		t.Error("PutRecord outside audit/ accepted")
	}
	// Storage Commitment requests are records too.
	req := objectstore.CommitmentRequestsPrefix + "2026/11/27/storetest-1-1.json"
	if err := st.PutRecord(ctx, req, body); err != nil {
		t.Fatalf("PutRecord of a commitment request: %v", err)
	}
	if b, err := h.Read(t, req); err != nil || !bytes.Equal(b, body) {
		t.Errorf("commitment request read back %q (%v)", b, err)
	}
	if err := st.PutRecord(ctx, "commitment/results/x.json", body); err == nil {
		t.Error("PutRecord of a commitment result accepted: only the pipeline writes results")
	}
}
