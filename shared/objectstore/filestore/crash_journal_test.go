package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path"
	"strconv"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs/vfstest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// crashPut is one Put of the power-loss workload.
type crashPut struct {
	sop  string
	body []byte
}

// crashWorkload: journaled objects across several segment generations,
// an identical resend (a duplicate), and a different object under a taken
// key (a conflict), then its resend.
func crashWorkload() []crashPut {
	var w []crashPut
	for i := range 14 {
		w = append(w, crashPut{fmt.Sprintf("1.2.%d", i), body(i, 100_000+i*61_000)})
	}
	w = append(w,
		crashPut{"1.2.3", body(3, 100_000+3*61_000)}, // duplicate
		crashPut{"1.2.5", body(99, 50_000)},          // conflict
		crashPut{"1.2.5", body(99, 50_000)},          // the conflicting one again
		crashPut{"1.2.20", body(20, 700_000)},
	)
	return w
}

func body(seed, n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(seed), 3))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func crashOpts(fsys vfs.FS) []Option {
	return []Option{withFS(fsys), WithJournalSize(minSegmentSize, 2)}
}

// TestJournalPowerLossAtEveryStep runs the workload on an in-memory disk,
// cuts the power before each file-system operation in turn, turns the
// disk into what it could hold after the cut (unsynced writes and names
// lost, kept, or torn block by block), and opens a new store on it: every
// acknowledged object is there with its bytes, every object there is
// whole (the bytes of a Put of its key), and no temporary file is left.
func TestJournalPowerLossAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("hundreds of runs")
	}
	work := crashWorkload()
	sent := map[string][][]byte{} // SOP -> bodies sent for it
	for _, p := range work {
		sent[p.sop] = append(sent[p.sop], p.body)
	}
	run := func(s *Store, acked map[string][]byte) {
		for _, p := range work {
			st, err := s.Put(context.Background(), object(p.sop), bytes.NewReader(p.body))
			if err != nil {
				return
			}
			acked[st.Key] = p.body
		}
	}
	// Count the workload's operations.
	mem := vfstest.NewMem()
	s, err := New("/s", crashOpts(mem)...)
	if err != nil {
		t.Fatal(err)
	}
	start := mem.Ops()
	run(s, map[string][]byte{})
	total := mem.Ops() - start
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d operations in the workload", total)

	first, last := 0, total
	if v := os.Getenv("CRASH_CUT"); v != "" {
		first, _ = strconv.Atoi(v)
		last = first
	}
	for cut := first; cut <= last; cut++ {
		modes := []vfstest.Mode{vfstest.KeepSome}
		if cut%4 == 0 {
			modes = append(modes, vfstest.KeepNone, vfstest.KeepAll)
		}
		for _, mode := range modes {
			mem := vfstest.NewMem()
			s, err := New("/s", crashOpts(mem)...)
			if err != nil {
				t.Fatal(err)
			}
			mem.CutAfter(cut)
			acked := map[string][]byte{}
			run(s, acked)
			_ = s.Close() // fails on the cut disk; only the disk matters
			after := mem.Crash(mode, rand.New(rand.NewPCG(uint64(cut), uint64(mode))))
			s2, err := New("/s", crashOpts(after)...)
			if err != nil {
				t.Fatalf("cut %d mode %d: New after the crash: %v", cut, mode, err)
			}
			checkAfterCrash(t, fmt.Sprintf("cut %d mode %d", cut, mode), after, acked, sent)
			if err := s2.Close(); err != nil {
				t.Fatalf("cut %d mode %d: close: %v", cut, mode, err)
			}
			// Once closed (checkpointed), a restart finds the same.
			s3, err := New("/s", crashOpts(after.Crash(vfstest.KeepNone, nil))...)
			if err != nil {
				t.Fatal(err)
			}
			// Closed, so that its journal's goroutines let go of the
			// disk: hundreds of these held ~7 GB (the OOM killer ended
			// the package under -race).
			if err := s3.Close(); err != nil {
				t.Fatalf("cut %d mode %d: close after restart: %v", cut, mode, err)
			}
		}
	}
}

func checkAfterCrash(t *testing.T, at string, mem *vfstest.Mem, acked map[string][]byte, sent map[string][][]byte) {
	t.Helper()
	for key, want := range acked {
		got, err := mem.Read("/s/" + key)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: acknowledged %s lost or changed (%d bytes, %v)", at, key, len(got), err)
		}
	}
	for _, f := range mem.Files("/s") {
		rel := strings.TrimPrefix(f, "/s/")
		switch {
		case strings.HasPrefix(rel, JournalDir+"/"):
			continue
		case strings.HasPrefix(rel, TempDir+"/"):
			t.Errorf("%s: temporary file %s left after New", at, rel)
			continue
		}
		got, _ := mem.Read(f)
		sop := strings.TrimSuffix(path.Base(rel), ".dcm")
		if i := strings.Index(sop, ".conflict-"); i >= 0 {
			if conflictKey(rel[:len(rel)-len(path.Base(rel))]+sop[:i]+".dcm", got) != rel {
				t.Errorf("%s: %s does not hold the object it is named after", at, rel)
			}
			sop = sop[:i]
		}
		whole := false
		for _, b := range sent[sop] {
			whole = whole || bytes.Equal(got, b)
		}
		if !whole {
			t.Errorf("%s: %s visible with %d bytes that no Put sent (half-visible)", at, rel, len(got))
		}
		if want, ok := acked[rel]; ok && !bytes.Equal(got, want) {
			t.Errorf("%s: %s holds another object than the one acknowledged", at, rel)
		}
	}
}

var _ = objectstore.Key

// TestReplayErrorNamesNoUID: a replay of the journal that fails at start
// (the object's file cannot take its name) says so without the object's
// key or UIDs, which the rename's error holds in its paths (found by a
// probe: "scp-task cannot start" printed the whole key).
func TestReplayErrorNamesNoUID(t *testing.T) {
	const sop = "1.2.3.4.987654321"
	key := "incoming/" + at.Format("2006/01/02") + "/1.2.3/1.2.3.4/" + sop + ".dcm"
	failed := 0
	for cut := 1; cut < 400 && failed == 0; cut++ {
		mem := vfstest.NewMem()
		s, err := New("/s", crashOpts(mem)...)
		if err != nil {
			t.Fatal(err)
		}
		mem.CutAfter(cut)
		_, putErr := s.Put(context.Background(), object(sop), bytes.NewReader(body(1, 4096)))
		_ = s.Close() // fails on the cut disk; only the disk matters
		if putErr != nil {
			continue // cut before the object was durable: nothing to replay
		}
		after := mem.Crash(vfstest.KeepNone, rand.New(rand.NewPCG(uint64(cut), 1)))
		s2, err := New("/s", crashOpts(renameRefused{after})...)
		if err == nil {
			_ = s2.Close()
			continue // the object was in place already
		}
		failed++
		for _, secret := range []string{key, sop, "1.2.3.4/"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("cut %d: the start's error names %q: %v", cut, secret, err)
			}
		}
		if !errors.Is(err, fs.ErrPermission) {
			t.Errorf("cut %d: the cause was lost: %v", cut, err)
		}
	}
	if failed == 0 {
		t.Fatal("no cut left an acknowledged object to replay")
	}
}

// renameRefused is a disk on which every rename fails as the kernel's
// does, naming both paths.
type renameRefused struct{ *vfstest.Mem }

func (r renameRefused) Rename(oldpath, newpath string) error {
	return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrPermission}
}

func (r renameRefused) RenameNoReplace(oldpath, newpath string) (bool, error) {
	return false, r.Rename(oldpath, newpath)
}

// TestShutdownCutShort: a journaled store's close at exit ends with its
// context when the checkpoint waits on the disk, saying what it leaves,
// and loses nothing acknowledged: a crash then (the process's exit, ECS's
// SIGKILL, the power) leaves every object to the next New. Close, the one
// way to close it, waited for the disk for ever.
func TestShutdownCutShort(t *testing.T) {
	mem := vfstest.NewMem()
	disk := vfstest.HeldSync{Mem: mem, Release: make(chan struct{})}
	defer close(disk.Release)
	logs := &testenv.LogBuffer{}
	s, err := New("/s", append(crashOpts(disk), WithLogger(slog.New(slog.NewJSONHandler(logs, nil))))...)
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string][]byte{}
	sent := map[string][][]byte{}
	for i := range 3 {
		sop, b := fmt.Sprintf("1.2.%d", i), body(i, 100_000)
		st, err := s.Put(context.Background(), object(sop), bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		acked[st.Key], sent[sop] = b, [][]byte{b}
	}
	testenv.CloseCutShort(t, s.Shutdown)
	if !strings.Contains(logs.String(), `"level":"WARN","msg":"`+CloseCutShort+`"`) || !strings.Contains(logs.String(), testenv.ErrSecondSignal.Error()) {
		t.Errorf("the close cut short does not say so, and why:\n%s", logs.String())
	}
	crashAndCheck(t, "the close cut short", mem, acked, sent)
}

// crashAndCheck cuts mem's power in each way and checks what a new store
// finds (checkAfterCrash); what names the step before the crash.
func crashAndCheck(t *testing.T, what string, mem *vfstest.Mem, acked map[string][]byte, sent map[string][][]byte) {
	t.Helper()
	for _, mode := range []vfstest.Mode{vfstest.KeepNone, vfstest.KeepSome, vfstest.KeepAll} {
		after := mem.Crash(mode, rand.New(rand.NewPCG(1, uint64(mode))))
		s2, err := New("/s", crashOpts(after)...)
		if err != nil {
			t.Fatalf("mode %d: New after %s: %v", mode, what, err)
		}
		checkAfterCrash(t, fmt.Sprintf("mode %d", mode), after, acked, sent)
		if err := s2.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCheckpointFailureIsFinal: a checkpoint's syncfs that fails once,
// dropping what it was to write as Linux does, is never followed by one
// that is trusted to have made those files durable: the journal reuses no
// segment from then on, objects are refused once it is full and readiness
// is off, and after a crash every acknowledged object is there. A retried
// syncfs succeeded, the segments holding the dropped files' records were
// reused, and the crash lost them.
func TestCheckpointFailureIsFinal(t *testing.T) {
	mem := vfstest.NewMem()
	failFast := func(s *Store) { s.jopts.FullWait = -1 }
	logs := &testenv.LogBuffer{}
	s, err := New("/s", append(crashOpts(mem), failFast, WithLogger(slog.New(slog.NewJSONHandler(logs, nil))))...)
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string][]byte{}
	sent := map[string][][]byte{}
	put := func(i int) error {
		sop, b := fmt.Sprintf("1.2.%d", i), body(i, 300_000)
		sent[sop] = append(sent[sop], b)
		st, err := s.Put(context.Background(), object(sop), bytes.NewReader(b))
		if err == nil {
			acked[st.Key] = b
		}
		return err
	}
	for i := range 3 {
		if err := put(i); err != nil {
			t.Fatal(err)
		}
	}
	eio := errors.New("EIO")
	mem.FailOnce(vfs.OpSyncFS, eio)
	refused := false
	for i := 3; i < 200 && !refused; i++ {
		if err := put(i); err != nil {
			if !errors.Is(err, objectstore.ErrUnavailable) {
				t.Fatalf("Put %d after the failed checkpoint = %v, want ErrUnavailable", i, err)
			}
			refused = true
		}
	}
	if !refused {
		t.Fatal("the store kept taking objects: a syncfs after the failed one was trusted and segments were reused")
	}
	if err := s.Ready(context.Background()); !errors.Is(err, ErrSyncFailed) || !errors.Is(err, eio) {
		t.Errorf("Ready after the failed checkpoint = %v, want ErrSyncFailed", err)
	}
	if err := s.Close(); !errors.Is(err, ErrSyncFailed) {
		t.Errorf("Close = %v, want ErrSyncFailed (its checkpoint is not trusted either)", err)
	}
	// Final (retry.Final): the journal tells it once and tries no checkpoint again.
	if n := strings.Count(logs.String(), `"msg":"journal: checkpoint failed`); n != 1 || !strings.Contains(logs.String(), `"level":"ERROR","msg":"journal: checkpoint failed for good`) {
		t.Errorf("the journal told the failed checkpoint %d times, want once, for good:\n%s", n, logs.String())
	}
	crashAndCheck(t, "the failed checkpoint", mem, acked, sent)
}
