package stagedstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/storetest"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs/vfstest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestOutOfSpace: a staging write that finds no space fails the C-STORE
// as unavailable (A700, as the file store's full disk) and turns
// readiness off (associations refused, 02 03 01), with a message naming
// the cause and no object (the reserve's error, ErrReserve, where the free
// space is measured: Put refuses by the same rule, TestPutRefusedDuringShortage);
// readiness comes back once a statfs shows the
// reserve and what the write needed free, or, where the free space is not
// measured, once a later write succeeds (a small write on a measured disk
// does not: TestReadinessStableWhileTooLarge). A reserve (MinFreeBytes)
// turns it off before any write fails.
func TestOutOfSpace(t *testing.T) {
	ctx := context.Background()
	largeOnFullDisk := func(mem *vfstest.Mem, st *Store) error {
		mem.SetCapacity(2 << 20)
		_, err := st.Put(ctx, object(1), bytes.NewReader(data(1, 3<<20)))
		return err
	}
	for _, tc := range []struct {
		name    string
		reserve int64
		// full makes the disk short of space and returns the Put that
		// then fails (nil: none fails; readiness goes off by the
		// reserve alone).
		full func(mem *vfstest.Mem, st *Store) error
		// free gives space back.
		free func(mem *vfstest.Mem)
		// back is how readiness comes back: "write" (a Put succeeds,
		// at once) or "check" (Ready's statfs, within its cache).
		back string
		// wantCause is the failed Put's (nil: none fails), wantReady
		// what Ready's error is then.
		wantCause, wantReady error
	}{
		{
			name:      "large object on a full disk",
			full:      largeOnFullDisk,
			free:      func(mem *vfstest.Mem) { mem.SetCapacity(64 << 20) },
			back:      "check",
			wantCause: syscall.ENOSPC,
			wantReady: vfs.ErrReserve,
		},
		{
			name: "journaled object on a full disk",
			full: func(mem *vfstest.Mem, st *Store) error {
				mem.SetCapacity(mem.Used() + 8<<10) // a header block and a little
				_, err := st.Put(ctx, object(1), bytes.NewReader(data(1, 200_000)))
				return err
			},
			free:      func(mem *vfstest.Mem) { mem.SetCapacity(64 << 20) },
			back:      "check",
			wantCause: syscall.ENOSPC,
			wantReady: vfs.ErrReserve,
		},
		{
			// ENOSPC injected where the free space is not measured:
			// only a write that succeeds tells that space is back.
			name: "quota, free space not measured",
			full: func(mem *vfstest.Mem, st *Store) error {
				mem.Fail(vfs.OpWrite, &osPathError{syscall.EDQUOT})
				_, err := st.Put(ctx, object(1), bytes.NewReader(data(1, 3<<20)))
				return err
			},
			free:      func(mem *vfstest.Mem) { mem.Fail(vfs.OpWrite, nil) },
			back:      "write",
			wantCause: syscall.EDQUOT,
			wantReady: syscall.EDQUOT,
		},
		{
			name:    "below the reserve",
			reserve: 4 << 20,
			full: func(mem *vfstest.Mem, st *Store) error {
				mem.SetCapacity(mem.Used() + 3<<20)
				return nil
			},
			free:      func(mem *vfstest.Mem) { mem.SetCapacity(64 << 20) },
			back:      "check",
			wantReady: vfs.ErrReserve,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfstest.NewMem()
			s3 := newFakeS3()
			st := newStore(t, Options{Dir: "/st", FS: mem, Uploader: s3, SegmentSize: 2 << 20, MinFreeBytes: tc.reserve})
			if err := st.Ready(ctx); err != nil {
				t.Fatalf("Ready before: %v", err)
			}
			err := tc.full(mem, st)
			if tc.wantCause != nil {
				if !errors.Is(err, objectstore.ErrUnavailable) || !errors.Is(err, tc.wantCause) {
					t.Fatalf("Put on a full disk = %v, want ErrUnavailable for lack of space (%v)", err, tc.wantCause)
				}
				storetest.NoUIDs(t, "Put's error", err.Error(), object(1))
				if n := testutil.ToFloat64(st.m.noSpace); n != 1 {
					t.Errorf("no_space_total = %v, want 1", n)
				}
			}
			rerr := storetest.WaitReady(t, st, false, 2*time.Second)
			if !errors.Is(rerr, objectstore.ErrUnavailable) || !errors.Is(rerr, tc.wantReady) {
				t.Errorf("Ready = %v, want ErrUnavailable and %v", rerr, tc.wantReady)
			}
			if tc.wantCause != nil && !strings.Contains(rerr.Error(), tc.wantCause.Error()) {
				t.Errorf("Ready = %v, want the cause (%v) named", rerr, tc.wantCause)
			}
			storetest.NoUIDs(t, "Ready's error", rerr.Error(), object(1))
			tc.free(mem)
			switch tc.back {
			case "write":
				if _, err := st.Put(ctx, object(2), bytes.NewReader(data(2, 1000))); err != nil {
					t.Fatalf("Put once space is back: %v", err)
				}
				if err := st.Ready(ctx); err != nil {
					t.Errorf("Ready right after a write succeeded: %v", err)
				}
			case "check":
				storetest.WaitReady(t, st, true, 3*readyTTL)
			}
			drain(t, st)
		})
	}
}

// osPathError is an error from the file system carrying errno, as the
// operating system's are.
type osPathError struct{ errno syscall.Errno }

func (e *osPathError) Error() string { return "write /st/journals/x/seg-0000: " + e.errno.Error() }
func (e *osPathError) Unwrap() error { return e.errno }

// TestSegmentsFreedAfterDrain: a journal that grew while S3 was down
// gives its segment files back once the uploads have drained, without a
// restart: the staging file system's free space comes back.
func TestSegmentsFreedAfterDrain(t *testing.T) {
	mem := vfstest.NewMem()
	mem.SetCapacity(1 << 30)
	s3 := newFakeS3()
	s3.setDown(true)
	st := newStore(t, Options{Dir: "/st", FS: mem, Uploader: s3, SegmentSize: 1<<20 + 2*4096 + 512<<10})
	ctx := context.Background()
	before := mem.Used()
	for i := range 24 {
		if _, err := st.Put(ctx, object(i), bytes.NewReader(data(i, 300_000))); err != nil {
			t.Fatal(err)
		}
	}
	grown := st.own.Stats().Segments
	if grown < 5 {
		t.Fatalf("the journal grew to %d segments only", grown)
	}
	s3.setDown(false)
	drain(t, st)
	testenv.EventuallySawWithin(t, 10*time.Second, "2 segment files after the uploads drained", func() (bool, string) {
		segs := len(segmentFiles(mem, st.ownDir))
		return segs == 2, fmt.Sprintf("%d segment files (%d at the peak)", segs, grown)
	})
	if used := mem.Used(); used > before+2*(st.o.SegmentSize) {
		t.Errorf("%d bytes used once drained, %d before: the segments' space did not come back", used, before)
	}
}

// segmentFiles returns the journal segment files under dir on mem.
func segmentFiles(mem *vfstest.Mem, dir string) []string {
	var segs []string
	for _, f := range mem.Files(dir) {
		if strings.HasPrefix(filepath.Base(f), "seg-") {
			segs = append(segs, f)
		}
	}
	return segs
}

// TestFullDiskThenDrained stages objects while S3 is down until the
// staging file system is full (an in-memory disk with a capacity, and a
// real 8 MiB tmpfs): the C-STORE that finds no space fails unavailable,
// readiness goes off and the next C-STORE is refused before it writes;
// once S3 is back and the uploads drain, the
// journal's segments are freed and readiness comes back without a
// restart, and a large object fits again.
func TestFullDiskThenDrained(t *testing.T) {
	for _, tc := range []struct {
		name string
		fs   func(t *testing.T) (vfs.FS, string)
	}{
		{"mem", func(t *testing.T) (vfs.FS, string) {
			mem := vfstest.NewMem()
			mem.SetCapacity(8 << 20)
			return mem, "/st"
		}},
		{"tmpfs", func(t *testing.T) (vfs.FS, string) { return vfs.OS(), testenv.MountTmpfs(t, 8<<20) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys, dir := tc.fs(t)
			s3 := newFakeS3()
			s3.setDown(true)
			st := newStore(t, Options{Dir: dir, FS: fsys, Uploader: s3, SegmentSize: 2 << 20})
			ctx := context.Background()
			var err error
			var objs []objectstore.Object
			for i := 0; err == nil; i++ {
				if i > 100 {
					t.Fatal("the disk never filled")
				}
				objs = append(objs, object(i))
				_, err = st.Put(ctx, object(i), bytes.NewReader(data(i, 400_000)))
			}
			if !errors.Is(err, objectstore.ErrUnavailable) || !vfs.NoSpace(err) {
				t.Fatalf("Put on a full disk = %v, want ErrUnavailable for lack of space", err)
			}
			// The next large one is refused, and readiness is off.
			storetest.RefusedUnread(t, "large Put on a full disk", 2<<20, func(body io.Reader) error {
				_, err := st.Put(ctx, object(500), body)
				return err
			})
			rerr := storetest.WaitReady(t, st, false, time.Second)
			if !errors.Is(rerr, vfs.ErrReserve) || !strings.Contains(rerr.Error(), syscall.ENOSPC.Error()) {
				t.Errorf("Ready on a full disk = %v, want ErrReserve naming ENOSPC", rerr)
			}
			storetest.NoUIDs(t, "Ready's error", rerr.Error(), objs...)
			s3.setDown(false)
			drain(t, st)
			storetest.WaitReady(t, st, true, 10*time.Second)
			if _, err := st.Put(ctx, object(501), bytes.NewReader(data(501, 2<<20))); err != nil {
				t.Errorf("large Put once drained: %v", err)
			}
			drain(t, st)
			if b, ok := s3.get(key(t, object(501))); !ok || len(b) != 2<<20 {
				t.Errorf("the large object did not reach S3 whole")
			}
		})
	}
}

// TestFailedLargeWriteLeavesNothing: a large object whose write fails
// (no space, the sender gone) leaves no partial file under large/. Its
// removal named the file by the result the error return had emptied:
// the partial file stayed, and every attempt of an object larger than
// the free space lost its size to the staging file system.
func TestFailedLargeWriteLeavesNothing(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		put  func(mem *vfstest.Mem, st *Store) error
	}{
		{"no space", func(mem *vfstest.Mem, st *Store) error {
			mem.SetCapacity(mem.Used() + 2<<20)
			_, err := st.Put(ctx, object(1), bytes.NewReader(data(1, 3<<20)))
			return err
		}},
		{"sender gone", func(mem *vfstest.Mem, st *Store) error {
			_, err := st.Put(ctx, object(1), io.MultiReader(bytes.NewReader(data(1, 2<<20)), iotest.ErrReader(io.ErrUnexpectedEOF)))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfstest.NewMem()
			st := newStore(t, Options{Dir: "/st", FS: mem, Uploader: newFakeS3(), SegmentSize: 2 << 20})
			if err := tc.put(mem, st); err == nil {
				t.Fatal("Put succeeded")
			}
			for _, f := range mem.Files(st.ownDir) {
				if strings.Contains(f, "/"+largeDir+"/") {
					t.Errorf("%s left behind by a failed Put", f)
				}
			}
		})
	}
}

// smallDisks are 8 MiB staging file systems: an in-memory disk and a real
// tmpfs (which needs root). fs returns the file system and directory, and
// how to give it 64 MiB of room.
var smallDisks = []struct {
	name string
	fs   func(t *testing.T) (vfs.FS, string, func())
}{
	{"mem", func(t *testing.T) (vfs.FS, string, func()) {
		mem := vfstest.NewMem()
		mem.SetCapacity(8 << 20)
		return mem, "/st", func() { mem.SetCapacity(64 << 20) }
	}},
	{"tmpfs", func(t *testing.T) (vfs.FS, string, func()) {
		dir := testenv.MountTmpfs(t, 8<<20)
		return vfs.OS(), dir, func() { testenv.ResizeTmpfs(t, dir, 64<<20) }
	}},
}

// TestReadinessStableWhileTooLarge: an object larger than the free space,
// sent again and again (a PACS retrying its A700), keeps readiness off
// until the space it needs is free; neither its failed attempt's space
// coming back nor its retries or a small object, refused before they
// write (TestPutRefusedDuringShortage), turn readiness on.
// Readiness came back within a second of each failure (the reserve and
// a record's worth were free once the partial file was removed) and went
// off at the next attempt: the load balancer added and removed the task
// about once a second. On a real 8 MiB tmpfs and an in-memory disk.
func TestReadinessStableWhileTooLarge(t *testing.T) {
	for _, tc := range smallDisks {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			fsys, dir, grow := tc.fs(t)
			st := newStore(t, Options{Dir: dir, FS: fsys, Uploader: newFakeS3(), SegmentSize: 2 << 20})
			if err := st.Ready(ctx); err != nil {
				t.Fatalf("Ready before: %v", err)
			}
			tooLarge := data(1, 10<<20)
			if _, err := st.Put(ctx, object(1), bytes.NewReader(tooLarge)); !vfs.NoSpace(err) {
				t.Fatalf("Put of an object larger than the free space = %v, want no space", err)
			}
			readyAt := storetest.ReadyDuring(st, 3*readyTTL, func(i int) {
				if i%5 == 4 { // the sender tries again
					if _, err := st.Put(ctx, object(1), bytes.NewReader(tooLarge)); !errors.Is(err, vfs.ErrReserve) {
						t.Fatalf("Put again = %v, want ErrReserve", err)
					}
				}
				if i%5 == 2 { // a small object that would fit
					if _, err := st.Put(ctx, object(2+i), bytes.NewReader(data(2, 1000))); !errors.Is(err, vfs.ErrReserve) {
						t.Fatalf("small Put = %v, want ErrReserve", err)
					}
				}
			})
			if len(readyAt) > 0 {
				t.Errorf("ready again at %v while the object still did not fit", readyAt)
			}
			grow()
			storetest.WaitReady(t, st, true, 3*readyTTL)
			if _, err := st.Put(ctx, object(1), bytes.NewReader(tooLarge)); err != nil {
				t.Errorf("Put once there is room: %v", err)
			}
			drain(t, st)
		})
	}
}

// TestPutRefusedDuringShortage: once a staging write found no space, Put
// refuses every object (a small one, a journal record's; a large one,
// with a file of its own; the one that did not fit) before it reads a
// byte: no file under large/, no journal record, nothing queued for
// upload, the free space unchanged, and the reserve's error (ErrReserve,
// with ErrUnavailable: A700 on the wire), not counted as a write that
// found no space. Once the space the failed write needed is free, the
// next Put's own check ends the shortage and stages, without waiting for
// Ready. (Where the free space is not measured a Put tries: TestOutOfSpace's
// quota.) A sender retrying on an association already open wrote each
// attempt until the file system was full, and failed only then. On an
// in-memory disk and a real 8 MiB tmpfs.
func TestPutRefusedDuringShortage(t *testing.T) {
	for _, tc := range smallDisks {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			fsys, dir, grow := tc.fs(t)
			var logs testenv.LogBuffer
			st := newStore(t, Options{Dir: dir, FS: fsys, Uploader: newFakeS3(), SegmentSize: 2 << 20,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if _, err := st.Put(ctx, object(1), bytes.NewReader(data(1, 10<<20))); !vfs.NoSpace(err) {
				t.Fatalf("Put of an object larger than the free space = %v, want no space", err)
			}
			// what the store holds: its large files, journal records, queue.
			held := func() string {
				t.Helper()
				large, err := fsys.ReadDir(filepath.Join(st.ownDir, largeDir))
				if err != nil {
					t.Fatal(err)
				}
				free, err := fsys.FreeBytes(dir)
				if err != nil {
					t.Fatal(err)
				}
				return fmt.Sprintf("%d large files, %d journal records, %d queued, %d bytes free",
					len(large), st.own.Stats().Appends, st.q.objects(), free)
			}
			before := held()
			for i, size := range []int64{1000, 2 << 20, 10 << 20} {
				obj := object(2 + i)
				if size == 10<<20 {
					obj = object(1)
				}
				storetest.RefusedUnread(t, fmt.Sprintf("Put of %d bytes", size), size, func(body io.Reader) error {
					_, err := st.Put(ctx, obj, body)
					if err != nil {
						storetest.NoUIDs(t, "Put's error", err.Error(), obj)
					}
					return err
				})
			}
			if after := held(); after != before {
				t.Errorf("the refused Puts changed what the store holds: %s, before %s", after, before)
			}
			if n := testutil.ToFloat64(st.m.noSpace); n != 1 {
				t.Errorf("no_space_total = %v, want 1: a refusal is no write that found no space", n)
			}

			grow()
			if _, err := st.Put(ctx, object(5), bytes.NewReader(data(5, 1000))); err != nil {
				t.Fatalf("Put once space is back: %v", err)
			}
			if !strings.Contains(logs.String(), "space is back on the staging file system: ready again") {
				t.Errorf("the store's log does not say space is back:\n%s", logs.String())
			}
			storetest.WaitReady(t, st, true, 2*readyTTL)
			drain(t, st)
		})
	}
}

// TestPublishedNames: the staging metrics the CloudWatch agent publishes
// (the backlog's age and bytes, the writes that found no space) are
// registered under metricnames' names, which infra/stack selects.
func TestPublishedNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	newStore(t, Options{Dir: "/st", FS: vfstest.NewMem(), Uploader: newFakeS3(), Metrics: reg})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if err := metricnames.CheckRegistered(mfs, metricnames.StagingBacklogAge, metricnames.StagingBacklogBytes, metricnames.StagingNoSpace, metricnames.StagingParkedObjects, metricnames.StagingAdopted); err != nil {
		t.Error(err)
	}
}

// TestRecordRetriesOnAFullDisk: records retried on a full staging file
// system (the audit writer retrying each until it is staged) count once
// each in _no_space_total, and the journal says its writes fail once, and
// once that they succeed again with how many failed, rather than at each
// retry. With the staging disk full the operator drill saw the counter at
// 369 for 16 failed C-STOREs and 578 ERROR lines in 90 s. On the
// in-memory disk, which takes space as a segment is written, as EFS does:
// on a tmpfs the records fit in what their segment holds already.
func TestRecordRetriesOnAFullDisk(t *testing.T) {
	for _, tc := range smallDisks[:1] {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			fsys, dir, grow := tc.fs(t)
			var logs testenv.LogBuffer
			s3 := newFakeS3()
			s3.setDown(true)
			st := newStore(t, Options{Dir: dir, FS: fsys, Uploader: s3, SegmentSize: 2 << 20,
				Logger: jsonlog.New(&logs, slog.LevelInfo)})
			var err error
			for i := 0; err == nil; i++ {
				if i > 100 {
					t.Fatal("the disk never filled")
				}
				_, err = st.Put(ctx, object(i), bytes.NewReader(data(i, 400_000)))
			}
			if !vfs.NoSpace(err) {
				t.Fatalf("Put on a full disk = %v, want no space", err)
			}
			fillUp(t, fsys) // what that Put had written is free again
			const records, retries = 3, 20
			body := bytes.Repeat([]byte("r"), 3000)
			for range retries {
				for r := range records {
					if err := st.PutRecord(ctx, fmt.Sprintf("audit/2026/12/06/a%d.json", r), body); !vfs.NoSpace(err) {
						t.Fatalf("PutRecord on a full disk = %v, want no space", err)
					}
				}
			}
			if n := testutil.ToFloat64(st.m.noSpace); n != 1+records {
				t.Errorf("no_space_total = %v after an object and %d records retried %d times each, want %d", n, records, retries, 1+records)
			}
			grow()
			s3.setDown(false)
			for r := range records {
				// As the audit writer does: the first may still find the
				// failure of the segment the journal could not add.
				err := st.PutRecord(ctx, fmt.Sprintf("audit/2026/12/06/a%d.json", r), body)
				for try := 0; err != nil && try < 3; try++ {
					err = st.PutRecord(ctx, fmt.Sprintf("audit/2026/12/06/a%d.json", r), body)
				}
				if err != nil {
					t.Fatalf("PutRecord once space is back: %v", err)
				}
			}
			if n := testutil.ToFloat64(st.m.noSpace); n != 1+records {
				t.Errorf("no_space_total = %v once the records are staged, want %d", n, 1+records)
			}
			drain(t, st)
			lines := map[string]int{}
			var cleared struct{ Occurrences int }
			for l := range strings.Lines(logs.String()) {
				var line struct {
					Level, Msg  string
					Occurrences int
				}
				if err := json.Unmarshal([]byte(l), &line); err != nil {
					t.Fatalf("%v: %s", err, l)
				}
				lines[line.Msg]++
				if line.Msg == "journal: a write succeeded after writes failed" {
					cleared.Occurrences = line.Occurrences
				}
			}
			// Once an episode: an episode may end (a segment added once the
			// disk has room) and another begin (the backlog's free segment
			// files removed, the disk short again), each with its lines.
			for failed, cleared := range map[string]string{
				"journal: write failed; the segment takes no more records": "journal: a write succeeded after writes failed",
				"journal: add a segment":                                   "journal: a segment was added after adding one failed",
			} {
				if lines[failed] > 1+lines[cleared] {
					t.Errorf("%q logged %d times in %d episodes, want once each", failed, lines[failed], 1+lines[cleared])
				}
			}
			if lines["journal: write failed; the segment takes no more records"] == 1 &&
				(lines["journal: a write succeeded after writes failed"] != 1 || cleared.Occurrences < 2) {
				t.Errorf("the journal's writes failing did not end with one line counting them (%d occurrences):\n%s", cleared.Occurrences, logs.String())
			}
		})
	}
}

// fillUp takes the free space left on the in-memory disk.
func fillUp(t *testing.T, fsys vfs.FS) {
	t.Helper()
	mem, ok := fsys.(*vfstest.Mem)
	if !ok {
		t.Fatalf("fillUp on %T", fsys)
	}
	mem.SetCapacity(mem.Used())
}
