package journal

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs/vfstest"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// segmentFiles counts the segment files in dir.
func segmentFiles(t *testing.T, fsys vfs.FS, dir string) int {
	t.Helper()
	entries, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "seg-") {
			n++
		}
	}
	return n
}

// TestShrink: a journal that grew while its records were held removes the
// segment files it added once they are free again (Shrink), down to its
// Segments and one free beyond those in use, without a restart; it keeps
// them without Shrink (the file store, whose segments are prefilled).
func TestShrink(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fs     func(t *testing.T) (vfs.FS, string)
		shrink bool
		hold   bool // keep the second record's segment in use
	}{
		{"mem, shrink", func(t *testing.T) (vfs.FS, string) { return vfstest.NewMem(), "/j" }, true, false},
		{"os, shrink", func(t *testing.T) (vfs.FS, string) { return vfs.OS(), t.TempDir() }, true, false},
		// One segment in use: it and one free one.
		{"mem, shrink, one segment held", func(t *testing.T) (vfs.FS, string) { return vfstest.NewMem(), "/j" }, true, true},
		{"mem, no shrink", func(t *testing.T) (vfs.FS, string) { return vfstest.NewMem(), "/j" }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys, dir := tc.fs(t)
			o := Options{SegmentSize: 32 << 10, Segments: 2, MaxSegments: 16, FS: fsys, FullWait: 2 * time.Second, IdleSeal: 10 * time.Millisecond, Shrink: tc.shrink}
			j, _, err := Open(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			var recs []Record
			for i := range 12 { // one record a segment
				r, err := appendBytes(t, j, fmt.Sprint(i), payload(i, 9000))
				if err != nil {
					t.Fatal(err)
				}
				recs = append(recs, r)
			}
			grown := j.Stats().Segments
			if grown < 6 {
				t.Fatalf("the journal grew to %d segments only", grown)
			}
			for i, r := range recs {
				if !tc.hold || i != 1 {
					j.Release(r)
				}
			}
			if tc.shrink {
				testenv.EventuallySawWithin(t, 5*time.Second, "2 segments after the release", func() (bool, string) {
					n, files := j.Stats().Segments, segmentFiles(t, fsys, dir)
					return n == 2 && files == 2, fmt.Sprintf("%d segments (%d files)", n, files)
				})
			} else {
				// Reclaiming runs (IdleSeal is 10 ms), and a segment being
				// added when the count was read may still arrive: none goes.
				time.Sleep(200 * time.Millisecond)
				if n, files := j.Stats().Segments, segmentFiles(t, fsys, dir); n < grown || files != n {
					t.Fatalf("%d segments (%d files) after the release without Shrink, want the %d or more it grew to", n, files, grown)
				}
			}
			// It still takes records, growing again, and a restart
			// finds only the one held.
			for i := range 8 {
				r, err := appendBytes(t, j, fmt.Sprint(100+i), payload(100+i, 9000))
				if err != nil {
					t.Fatalf("append after shrinking: %v", err)
				}
				j.Release(r)
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			j2, back, err := Open(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			if tc.hold != (len(back) == 1) || tc.hold && !bytes.Equal(readAll(t, j2, back[0]), payload(1, 9000)) {
				t.Errorf("reopened with %d records, want the held one only (%v)", len(back), tc.hold)
			}
			for _, r := range back {
				j2.Release(r)
			}
			if err := j2.Close(); err != nil {
				t.Fatal(err)
			}
			if n := segmentFiles(t, fsys, dir); tc.shrink && n != 2 {
				t.Errorf("%d segment files once all was released and closed, want 2", n)
			}
		})
	}
}

// TestShrinkPowerLossAtEveryStep cuts the power before each file-system
// operation of a run in which the journal grows while its records are
// held, frees them and removes the segment files it added (Shrink), and
// checks what a new journal recovers on what the disk could hold: every
// acknowledged record still held comes back whole, nothing comes back
// that was not appended, and once it is released the segment files are
// back to Segments.
func TestShrinkPowerLossAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("hundreds of runs")
	}
	opts := func(fsys vfs.FS) Options {
		return Options{SegmentSize: 32 << 10, Segments: 2, MaxSegments: 16, FS: fsys, FullWait: -1, IdleSeal: -1, Shrink: true}
	}
	size := func(i int) int { return 6000 + i*211 }
	held := func(i int) bool { return i%4 == 0 && i < 18 }
	// The workload: 18 records held (the journal grows), all but every
	// fourth released (segments freed, and removed but for those in use
	// and one), then six more appended and released, and a close (the
	// last removals).
	heldSegs := map[uint64]bool{}
	run := func(j *Journal, acked func(i int)) {
		var recs []Record
		for i := range 18 {
			r, err := appendBytes(t, j, fmt.Sprint(i), payload(i, size(i)))
			if err != nil {
				return
			}
			acked(i)
			recs = append(recs, r)
			if held(i) {
				heldSegs[r.Seq] = true
			}
		}
		for i, r := range recs {
			if !held(i) {
				j.Release(r)
			}
		}
		for i := 18; i < 24; i++ {
			r, err := appendBytes(t, j, fmt.Sprint(i), payload(i, size(i)))
			if err != nil {
				return
			}
			acked(i)
			j.Release(r)
		}
	}
	full := vfstest.NewMem()
	j, _, err := Open("/j", opts(full))
	if err != nil {
		t.Fatal(err)
	}
	start := full.Ops()
	run(j, func(int) {})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	total := full.Ops() - start
	if n, want := segmentFiles(t, full, "/j"), len(heldSegs)+1; n != want {
		t.Fatalf("%d segment files left by the workload, want %d: those holding records and one", n, want)
	}
	t.Logf("%d operations in the workload", total)
	for cut := 0; cut <= total; cut++ {
		for _, mode := range []vfstest.Mode{vfstest.KeepNone, vfstest.KeepAll, vfstest.KeepSome} {
			at := fmt.Sprintf("cut %d mode %d", cut, mode)
			mem := vfstest.NewMem()
			j, _, err := Open("/j", opts(mem))
			if err != nil {
				t.Fatal(err)
			}
			mem.CutAfter(cut)
			acked := map[int]bool{}
			run(j, func(i int) { acked[i] = true })
			_ = j.Close() // fails on the cut disk; only the disk matters
			after := mem.Crash(mode, rand.New(rand.NewPCG(uint64(cut), uint64(mode))))
			j2, recs, err := Open("/j", opts(after))
			if err != nil {
				t.Fatalf("%s: reopen: %v", at, err)
			}
			seen := checkRecovered(t, at, j2, recs, size)
			for i := range seen {
				if i >= len(acked)+1 {
					t.Errorf("%s: record %d recovered but never written", at, i)
				}
			}
			for i := range acked {
				if held(i) && !seen[i] {
					t.Errorf("%s: acknowledged record %d, still held, lost", at, i)
				}
			}
			for _, r := range recs {
				j2.Release(r)
			}
			if err := j2.Close(); err != nil {
				t.Fatalf("%s: close: %v", at, err)
			}
			if n := segmentFiles(t, after, "/j"); n != 2 {
				t.Errorf("%s: %d segment files once all was released, want 2", at, n)
			}
		}
	}
}
