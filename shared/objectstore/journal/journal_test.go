package journal

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs/vfstest"
	"github.com/dicom-ingest/dicom-ingest/shared/retry"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

func payload(seed, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(seed), 7))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func appendBytes(t testing.TB, j *Journal, meta string, p []byte) (Record, error) {
	t.Helper()
	buf := NewBuffer(len(p))
	copy(buf[BlockSize:], p)
	return j.Append(context.Background(), []byte(meta), buf, len(p))
}

func readAll(t *testing.T, j *Journal, r Record) []byte {
	t.Helper()
	rd, err := j.Payload(r)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkRecovered checks the records a journal recovered after a crash,
// whose metas number them and whose payloads are payload(i, size(i)):
// in order, each with its bytes. It returns the numbers seen.
func checkRecovered(t *testing.T, at string, j *Journal, recs []Record, size func(i int) int) map[int]bool {
	t.Helper()
	seen := map[int]bool{}
	last := -1
	for _, r := range recs {
		var i int
		if _, err := fmt.Sscan(string(r.Meta), &i); err != nil {
			t.Fatalf("%s: recovered meta %q", at, r.Meta)
		}
		if i <= last {
			t.Errorf("%s: record %d recovered after %d", at, i, last)
		}
		last = i
		seen[i] = true
		if b := readAll(t, j, r); !bytes.Equal(b, payload(i, size(i))) {
			t.Errorf("%s: record %d recovered with other bytes", at, i)
		}
	}
	return seen
}

func TestAppendRecoverRelease(t *testing.T) {
	for _, tc := range []struct {
		name string
		fs   func(t *testing.T) (vfs.FS, string)
		opts Options
	}{
		{"os", func(t *testing.T) (vfs.FS, string) { return vfs.OS(), t.TempDir() }, Options{SegmentSize: 1 << 20}},
		{"os-buffered-prefill", func(t *testing.T) (vfs.FS, string) { return vfs.OS(), t.TempDir() }, Options{SegmentSize: 1 << 20, Buffered: true, Prefill: true}},
		{"mem", func(t *testing.T) (vfs.FS, string) { return vfstest.NewMem(), "/j" }, Options{SegmentSize: 1 << 20}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys, dir := tc.fs(t)
			o := tc.opts
			o.FS = fsys
			j, recs, err := Open(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 0 {
				t.Fatalf("fresh journal recovered %d records", len(recs))
			}
			sizes := []int{0, 1, 4095, 4096, 4097, 100_000}
			var got []Record
			for i, n := range sizes {
				r, err := appendBytes(t, j, fmt.Sprint("rec", i), payload(i, n))
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, r)
			}
			for i, r := range got {
				if b := readAll(t, j, r); !bytes.Equal(b, payload(i, sizes[i])) {
					t.Errorf("record %d reads back %d bytes, not its own", i, len(b))
				}
			}
			// Release the first half; "crash" (no Close) and reopen.
			for _, r := range got[:3] {
				j.Release(r)
			}
			j2, recs, err := Open(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			defer j2.Close()
			// Nothing was checkpointed: the segment was never sealed, so
			// every record comes back, in order.
			if len(recs) != len(sizes) {
				t.Fatalf("recovered %d records, want %d", len(recs), len(sizes))
			}
			for i, r := range recs {
				if string(r.Meta) != fmt.Sprint("rec", i) || r.Size != int64(sizes[i]) {
					t.Errorf("recovered record %d = %q, %d bytes", i, r.Meta, r.Size)
				}
				if b := readAll(t, j2, r); !bytes.Equal(b, payload(i, sizes[i])) {
					t.Errorf("recovered record %d has other bytes", i)
				}
				j2.Release(r)
			}
			testenv.Eventually(t, "recovered segments reclaimed", func() bool { return j2.Stats().FreeSegments == j2.Stats().Segments })
		})
	}
}

// Many appenders share commits, and the journal cycles through its
// segments, checkpointing each before reuse.
func TestGroupCommitAndReuse(t *testing.T) {
	mem := vfstest.NewMem()
	ins := vfs.Instrument(mem, vfs.Latencies{vfs.OpSync: 2 * time.Millisecond})
	var checkpoints atomic.Int64
	j, _, err := Open("/j", Options{SegmentSize: 256 << 10, Segments: 2, FS: ins, Checkpoint: func() error { checkpoints.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	syncsBefore := ins.Count(vfs.OpSync)
	const workers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				p := payload(w*1000+i, 10_000+i)
				r, err := appendBytes(t, j, "x", p)
				if err != nil {
					errs <- err
					return
				}
				rd, err := j.Payload(r)
				if err != nil {
					errs <- err
					return
				}
				if b, err := io.ReadAll(rd); err != nil || !bytes.Equal(b, p) {
					errs <- fmt.Errorf("record read back wrong (%v)", err)
				}
				j.Release(r)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	syncs := ins.Count(vfs.OpSync) - syncsBefore
	// 320 records of ~14 KiB in 256 KiB segments: ~18 segments, each
	// reused after a checkpoint (and a free header, a sync each).
	if checkpoints.Load() < 5 {
		t.Errorf("%d checkpoints for ~18 segment generations", checkpoints.Load())
	}
	commits := syncs - 2*checkpoints.Load()
	if commits >= workers*each {
		t.Errorf("%d commits for %d records: no group commit", commits, workers*each)
	}
	t.Logf("%d records, %d commits, %d checkpoints", workers*each, commits, checkpoints.Load())
}

func TestFullWaitsThenFails(t *testing.T) {
	j, _, err := Open("/j", Options{SegmentSize: 64 << 10, Segments: 2, FullWait: 50 * time.Millisecond, FS: vfstest.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var held []Record
	for {
		r, err := appendBytes(t, j, "x", payload(1, 20_000))
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, r)
		if len(held) > 10 {
			t.Fatal("never full")
		}
	}
	// Releasing makes room again.
	for _, r := range held {
		j.Release(r)
	}
	if _, err := appendBytes(t, j, "x", payload(1, 20_000)); err != nil {
		t.Fatalf("after releasing: %v", err)
	}
	if _, err := appendBytes(t, j, "x", payload(1, 64<<10)); !errors.Is(err, ErrTooBig) {
		t.Errorf("a record larger than a segment: %v", err)
	}
}

// TestMayGrow: a journal whose MayGrow says no keeps its segments and
// fills (here, at once: FullWait 50 ms); one that may grows to MaxSegments.
func TestMayGrow(t *testing.T) {
	for _, tt := range []struct {
		name     string
		may      bool
		segments int // segment files once full
	}{
		{"may not grow", false, 2},
		{"may grow", true, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var asked []int64
			var mu sync.Mutex
			j, _, err := Open("/j", Options{SegmentSize: 64 << 10, Segments: 2, MaxSegments: 4, FullWait: 50 * time.Millisecond,
				FS: vfstest.NewMem(), MayGrow: func(n int64) bool { mu.Lock(); defer mu.Unlock(); asked = append(asked, n); return tt.may }})
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			for i := 0; ; i++ {
				if _, err := appendBytes(t, j, "x", payload(i, 20_000)); errors.Is(err, ErrFull) {
					break
				} else if err != nil {
					t.Fatal(err)
				}
				if i > 20 {
					t.Fatal("never full")
				}
			}
			if got := j.Stats().Segments; got != tt.segments {
				t.Errorf("%d segment files once full, want %d", got, tt.segments)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(asked) == 0 || asked[0] != 64<<10 {
				t.Errorf("MayGrow asked %v, want the segment size", asked)
			}
		})
	}
}

func TestCancelledRecordNotRecovered(t *testing.T) {
	mem := vfstest.NewMem()
	j, _, err := Open("/j", Options{SegmentSize: 1 << 20, FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := appendBytes(t, j, "a", payload(1, 5000))
	b, _ := appendBytes(t, j, "b", payload(2, 5000))
	c, _ := appendBytes(t, j, "c", payload(3, 5000))
	if err := j.Cancel(b); err != nil {
		t.Fatal(err)
	}
	_, _ = a, c
	_, recs, err := Open("/j", Options{SegmentSize: 1 << 20, FS: mem.Crash(vfstest.KeepNone, nil)})
	if err != nil {
		t.Fatal(err)
	}
	var metas []string
	for _, r := range recs {
		metas = append(metas, string(r.Meta))
	}
	if fmt.Sprint(metas) != "[a c]" {
		t.Errorf("recovered %v, want [a c]", metas)
	}
}

// TestPowerLossAtEveryStep cuts the power before each file-system
// operation of a run of appends, releases and segment reuses in turn,
// and checks what a new journal recovers on what the disk could hold:
// every acknowledged record not yet released and checkpointed comes
// back whole, nothing comes back that was not appended, and order holds.
func TestPowerLossAtEveryStep(t *testing.T) {
	opts := func(fsys vfs.FS, cp func() error) Options {
		return Options{SegmentSize: 32 << 10, Segments: 2, MaxSegments: 16, FS: fsys, FullWait: -1, IdleSeal: -1, Checkpoint: cp}
	}
	// The workload: records of varied sizes; each released right away
	// except every third, which stays live (a consumer still busy).
	run := func(j *Journal, acked func(i int)) {
		for i := range 24 {
			r, err := appendBytes(t, j, fmt.Sprint(i), payload(i, 1000+i*397))
			if err != nil {
				return
			}
			acked(i)
			if i%3 != 0 {
				j.Release(r)
			}
		}
	}
	// Count the operations of a full run.
	full := vfstest.NewMem()
	j, _, err := Open("/j", opts(full, nil))
	if err != nil {
		t.Fatal(err)
	}
	start := full.Ops()
	run(j, func(int) {})
	total := full.Ops() - start
	if total < 40 {
		t.Fatalf("only %d operations in the workload", total)
	}
	for cut := 0; cut <= total; cut++ {
		for _, mode := range []vfstest.Mode{vfstest.KeepNone, vfstest.KeepAll, vfstest.KeepSome} {
			mem := vfstest.NewMem()
			j, _, err := Open("/j", opts(mem, nil))
			if err != nil {
				t.Fatal(err)
			}
			mem.CutAfter(cut)
			var acked []int
			run(j, func(i int) { acked = append(acked, i) })
			// The cut journal's own shutdown fails; only the disk matters.
			_ = j.Close()
			after := mem.Crash(mode, rand.New(rand.NewPCG(uint64(cut), uint64(mode))))
			j2, recs, err := Open("/j", opts(after, nil))
			if err != nil {
				t.Fatalf("cut %d mode %d: reopen: %v", cut, mode, err)
			}
			seen := checkRecovered(t, fmt.Sprintf("cut %d mode %d", cut, mode), j2, recs, func(i int) int { return 1000 + i*397 })
			// A record still held (i%3 == 0) must come back if it was
			// acknowledged; one released may be gone (no checkpoint
			// contract here: Checkpoint is nil).
			for _, i := range acked {
				if i%3 == 0 && !seen[i] {
					t.Errorf("cut %d mode %d: acknowledged record %d lost", cut, mode, i)
				}
			}
			for i := range seen {
				if i >= len(acked)+1 {
					t.Errorf("cut %d mode %d: record %d recovered but never written", cut, mode, i)
				}
			}
			if err := j2.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// jitterFS delays every write by a random time, so that concurrent
// appends finish their writes out of order.
type jitterFS struct{ vfs.FS }

type jitterFile struct{ vfs.File }

func (f jitterFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return jitterFile{file}, nil
}

func (f jitterFile) WriteAt(p []byte, off int64) (int, error) {
	time.Sleep(time.Duration(rand.IntN(1500)) * time.Microsecond)
	return f.File.WriteAt(p, off)
}

// TestPowerLossConcurrent cuts the power at random points while several
// goroutines append with writes finishing out of order: an acknowledged
// record is never lost behind an earlier one whose write never happened.
func TestPowerLossConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("many runs")
	}
	const workers, each = 4, 12
	for trial := range 60 {
		mem := vfstest.NewMem()
		o := Options{SegmentSize: 64 << 10, Segments: 2, MaxSegments: 64, FS: jitterFS{mem}, FullWait: -1, IdleSeal: -1}
		j, _, err := Open("/j", o)
		if err != nil {
			t.Fatal(err)
		}
		mem.CutAfter(5 + trial*3)
		var mu sync.Mutex
		acked := map[string]bool{}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					name := fmt.Sprintf("%d-%d", w, i)
					if _, err := appendBytes(t, j, name, payload(w*100+i, 3000+w*500)); err != nil {
						return
					}
					mu.Lock()
					acked[name] = true
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		_ = j.Close() // fails on the cut disk; only the disk matters
		o.FS = mem.Crash(vfstest.KeepSome, rand.New(rand.NewPCG(uint64(trial), 1)))
		j2, recs, err := Open("/j", o)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, r := range recs {
			seen[string(r.Meta)] = true
		}
		for name := range acked {
			if !seen[name] {
				t.Errorf("trial %d: acknowledged record %s lost", trial, name)
			}
		}
		if err := j2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// stallFS holds the next write once armed until release is closed, then
// fails it with err; other writes go through and are counted. While full
// is set, every record's write (past a segment's header, which a full
// disk still takes) fails with err at once.
type stallFS struct {
	vfs.FS
	armed, full      atomic.Bool
	entered, release chan struct{}
	err              error
	writes           atomic.Int64
}

type stallFile struct {
	vfs.File
	fs *stallFS
}

func (f *stallFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return stallFile{file, f}, nil
}

func (f stallFile) WriteAt(p []byte, off int64) (int, error) {
	if off > 0 && f.fs.full.Load() {
		return 0, &fs.PathError{Op: "write", Path: "seg", Err: f.fs.err}
	}
	if f.fs.armed.CompareAndSwap(true, false) {
		close(f.fs.entered)
		<-f.fs.release
		return 0, &fs.PathError{Op: "write", Path: "seg", Err: f.fs.err}
	}
	defer f.fs.writes.Add(1)
	return f.File.WriteAt(p, off)
}

// TestLaterAppendsCarryTheCause: the records behind a write that failed
// for lack of space in the same segment fail with that cause too, not
// with a bare "an earlier write failed": their callers (the staged store
// counting and turning readiness off on ENOSPC, the SCP's log line)
// told a full disk only for the first of them.
func TestLaterAppendsCarryTheCause(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT} {
		t.Run(errno.Error(), func(t *testing.T) {
			sfs := &stallFS{FS: vfstest.NewMem(), entered: make(chan struct{}), release: make(chan struct{}), err: errno}
			j, _, err := Open("/j", Options{SegmentSize: 256 << 10, Segments: 2, FS: sfs})
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			if _, err := appendBytes(t, j, "0", payload(0, 1000)); err != nil {
				t.Fatal(err)
			}
			sfs.armed.Store(true)
			first := make(chan error, 1)
			go func() { _, err := appendBytes(t, j, "1", payload(1, 1000)); first <- err }()
			<-sfs.entered
			before := sfs.writes.Load()
			second := make(chan error, 1)
			go func() { _, err := appendBytes(t, j, "2", payload(2, 1000)); second <- err }()
			testenv.Eventually(t, "the second record's write", func() bool { return sfs.writes.Load() > before })
			close(sfs.release)
			for i, ch := range []chan error{first, second} {
				if err := <-ch; !errors.Is(err, errno) {
					t.Errorf("append %d behind the failed write = %v, want %v in its chain", i+1, err, errno)
				}
			}
		})
	}
}

// TestFailedWritesCountTheSegmentsSealed: writes failing in two segments,
// one cause, are logged once (jsonlog.Episode), naming the first segment;
// the line that ends the episode says how many segments took no more
// records. It said only how many writes failed, so the one segment named
// read as the only one sealed.
func TestFailedWritesCountTheSegmentsSealed(t *testing.T) {
	var logs testenv.LogBuffer
	ffs := &stallFS{FS: vfstest.NewMem(), err: syscall.ENOSPC}
	j, _, err := Open("/j", Options{SegmentSize: 256 << 10, Segments: 3, FS: ffs, Logger: jsonlog.New(&logs, slog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, err := appendBytes(t, j, "0", payload(0, 1000)); err != nil {
		t.Fatal(err)
	}
	ffs.full.Store(true)
	for i := 1; i <= 2; i++ {
		if _, err := appendBytes(t, j, strconv.Itoa(i), payload(i, 1000)); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("append %d on a full disk = %v", i, err)
		}
	}
	ffs.full.Store(false)
	if _, err := appendBytes(t, j, "3", payload(3, 1000)); err != nil {
		t.Fatal(err)
	}
	var failed, cleared []map[string]any
	for l := range strings.Lines(logs.String()) {
		var line map[string]any
		if err := json.Unmarshal([]byte(l), &line); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		switch line["msg"] {
		case "journal: write failed; the segment takes no more records":
			failed = append(failed, line)
		case "journal: a write succeeded after writes failed":
			cleared = append(cleared, line)
		}
	}
	if len(failed) != 1 || len(cleared) != 1 || failed[0]["segment"] == nil ||
		cleared[0]["occurrences"] != 2.0 || cleared[0]["segments_sealed"] != 2.0 {
		t.Fatalf("want one failure line naming a segment and one clearing line with 2 occurrences and 2 segments sealed:\n%s", logs.String())
	}
}

// TestFailedCommitIsFinal: an fdatasync that fails once, dropping the
// blocks it was to write as Linux does, fails the appends it covered, and
// no later fdatasync of that segment acknowledges a record: later appends
// go to another segment. After a power loss every acknowledged record is
// recovered.
func TestFailedCommitIsFinal(t *testing.T) {
	mem := vfstest.NewMem()
	j, _, err := Open("/j", Options{SegmentSize: 256 << 10, Segments: 2, FS: mem})
	if err != nil {
		t.Fatal(err)
	}
	const size = 1000
	var acked []int
	// Acknowledged and kept (not released: a released record may go with
	// its segment, which made the test fail now and then): it is in the
	// segment whose later commit fails, and must survive it.
	if _, err := appendBytes(t, j, "0", payload(0, size)); err != nil {
		t.Fatal(err)
	}
	acked = append(acked, 0)
	j.mu.Lock()
	failedSeq := j.active.hdr.seq
	j.mu.Unlock()
	mem.FailOnce(vfs.OpSync, errors.New("EIO"))
	if _, err := appendBytes(t, j, "1", payload(1, size)); err == nil {
		t.Fatal("the append whose commit failed was acknowledged")
	}
	for i := 2; i < 5; i++ {
		r, err := appendBytes(t, j, strconv.Itoa(i), payload(i, size))
		if err != nil {
			t.Fatalf("append %d after the failed commit: %v", i, err)
		}
		if r.Seq == failedSeq {
			t.Fatalf("append %d acknowledged in the segment generation whose commit failed", i)
		}
		acked = append(acked, i)
	}
	after := mem.Crash(vfstest.KeepNone, rand.New(rand.NewPCG(5, 5)))
	j2, recs, err := Open("/j", Options{SegmentSize: 256 << 10, Segments: 2, FS: after, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	seen := checkRecovered(t, "after the failed commit", j2, recs, func(int) int { return size })
	for _, i := range acked {
		if !seen[i] {
			t.Errorf("acknowledged record %d lost", i)
		}
	}
	if err := j.Close(); err != nil {
		t.Log(err)
	}
}

// TestCheckpointFailureBacksOff: a checkpoint that keeps failing is tried
// again 100 ms after it, then twice as long each time, although the idle
// seal's tick (here every half millisecond; every second by default) and
// the releases wake the reclaimer far more often: it was tried and logged
// at every tick, whatever its retry_in said (a read-only file system
// logged the file store's failed syncfs every second until the restart).
// One marked Final is tried once.
func TestCheckpointFailureBacksOff(t *testing.T) {
	eio := errors.New("EIO")
	for _, tt := range []struct {
		name  string
		fail  error
		calls int // Checkpoint calls waited for
	}{
		{"retried with a backoff", eio, 3},
		{"final: not retried", retry.Final(eio), 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu    sync.Mutex
				calls []time.Time
			)
			count := func() int { mu.Lock(); defer mu.Unlock(); return len(calls) }
			j, _, err := Open("/j", Options{SegmentSize: 64 << 10, Segments: 2, IdleSeal: time.Millisecond, FS: vfstest.NewMem(),
				Checkpoint: func() error {
					mu.Lock()
					defer mu.Unlock()
					calls = append(calls, time.Now())
					return tt.fail
				}})
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			// Released, its segment is sealed once idle and is to be reclaimed: the checkpoint runs.
			r, err := appendBytes(t, j, "0", payload(0, 1000))
			if err != nil {
				t.Fatal(err)
			}
			j.Release(r)
			testenv.EventuallyWithin(t, 10*time.Second, fmt.Sprintf("%d checkpoint calls", tt.calls), func() bool { return count() >= tt.calls })
			if tt.calls == 1 {
				// The transient failure's first two retries come within this; a final one has none.
				time.Sleep(350 * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			if tt.calls == 1 && len(calls) != 1 {
				t.Fatalf("a final checkpoint failure tried %d times", len(calls))
			}
			for i := 1; i < len(calls); i++ {
				if gap, want := calls[i].Sub(calls[i-1]), 100*time.Millisecond<<(i-1); gap < want {
					t.Errorf("checkpoint retry %d came %v after the failure before it, want at least %v", i, gap, want)
				}
			}
		})
	}
}
