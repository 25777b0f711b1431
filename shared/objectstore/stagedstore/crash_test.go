package stagedstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs/vfstest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestPowerLossAtEveryStep stages objects (journaled and large, and a
// record) on an in-memory disk while S3 is down, cuts the power before
// each file-system operation in turn, turns the disk into what it could
// hold after the cut, and starts another task on it with S3 up: every
// object the first task acknowledged reaches S3 whole, and nothing
// reaches S3 that is not whole.
func TestPowerLossAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("hundreds of runs")
	}
	bodies := map[string][]byte{}
	type put struct {
		obj  objectstore.Object
		body []byte
	}
	var work []put
	for i := range 8 {
		b := data(i, 20_000+i*190_000) // the last ones over 1 MiB
		work = append(work, put{object(i), b})
		bodies[key(t, object(i))] = b
	}
	recKey := objectstore.AuditPrefix + "2026/11/27/r.json"
	bodies[recKey] = []byte(`{"r":1}`)
	opts := func(mem *vfstest.Mem, up Uploader, id string) Options {
		return Options{Dir: "/st", FS: mem, Uploader: up, TaskID: id, SegmentSize: 2 << 20, AdoptEvery: 10 * time.Millisecond}
	}
	run := func(st *Store, acked map[string]bool) {
		for _, p := range work {
			s, err := st.Put(context.Background(), p.obj, bytes.NewReader(p.body))
			if err != nil {
				return
			}
			acked[s.Key] = true
		}
		if st.PutRecord(context.Background(), recKey, bodies[recKey]) == nil {
			acked[recKey] = true
		}
	}
	down := newFakeS3()
	down.setDown(true)
	mem := vfstest.NewMem()
	st, err := New(opts(mem, down, "count"))
	if err != nil {
		t.Fatal(err)
	}
	start := mem.Ops()
	run(st, map[string]bool{})
	total := mem.Ops() - start
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d operations in the workload", total)
	for cut := 0; cut <= total; cut++ {
		mode := []vfstest.Mode{vfstest.KeepNone, vfstest.KeepAll, vfstest.KeepSome}[cut%3]
		mem := vfstest.NewMem()
		st, err := New(opts(mem, down, "first"))
		if err != nil {
			t.Fatal(err)
		}
		mem.CutAfter(cut)
		acked := map[string]bool{}
		run(st, acked)
		_ = st.Close() // fails on the cut disk; only the disk matters
		after := mem.Crash(mode, rand.New(rand.NewPCG(uint64(cut), 9)))
		up := newFakeS3()
		next, err := New(opts(after, up, "next"))
		if err != nil {
			t.Fatalf("cut %d: the next task: %v", cut, err)
		}
		reachS3(t, fmt.Sprintf("cut %d mode %d", cut, mode), next, up, acked, bodies)
		if err := next.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPowerLossWhileFreeing stages objects on an in-memory disk while S3
// is down, so that the journal grows, then brings S3 back and cuts the
// power before each file-system operation in turn of what follows: the
// uploads, the releases, the segments freed and their files removed, and
// the close. Another task starts on what the disk could hold, with the
// same S3: every acknowledged object reaches S3 whole, nothing reaches
// it that is not whole, and the staging directory is back to one
// journal of two segments. Three of the objects (the large one among
// them) are identical resends of objects S3 already holds from earlier
// C-STOREs, and S3 dies with the power (every call fails once it is cut,
// and a cut may fall between an upload and the record that follows it):
// each resend gets its duplicate association record exactly once, the
// same bytes under the same key, and no other object gets one, though
// some are uploaded again after S3 took them.
func TestPowerLossWhileFreeing(t *testing.T) {
	if testing.Short() {
		t.Skip("dozens of runs")
	}
	bodies := map[string][]byte{}
	var objs []objectstore.Object
	resends := map[int]bool{2: true, 5: true, 9: true}
	for i := range 14 {
		n := 150_000 + i*1000
		if i == 5 {
			n = 1_200_000 // one large object, in a file of its own
		}
		o := object(i)
		o.ReceivedAt = o.ReceivedAt.Add(time.Duration(i) * time.Millisecond) // one association's C-STOREs, one after another
		objs = append(objs, o)
		bodies[key(t, o)] = data(i, n)
		if resends[i] {
			k, b := resendRecord(t, o)
			bodies[k] = b
		}
	}
	// S3 holds the resends from an earlier association.
	newS3 := func() *fakeS3 {
		s3 := newFakeS3()
		for i := range resends {
			earlier := objs[i]
			earlier.AssociationID, earlier.ReceivedAt = "earlier", earlier.ReceivedAt.Add(-time.Hour)
			s3.hold(earlier, bodies[key(t, objs[i])])
		}
		return s3
	}
	opts := func(mem *vfstest.Mem, up Uploader, id string) Options {
		return Options{Dir: "/st", FS: mem, Uploader: up, TaskID: id, SegmentSize: 1<<20 + 3*4096, AdoptEvery: 10 * time.Millisecond, Uploaders: 4,
			Implementation: "dicom-ingest test"}
	}
	// stage stages every object while the uploads wait (S3 not
	// answering), so that the journal grows; S3 then answers, with the
	// power cut after cut more operations (<0: never), and stage waits
	// for the journal to shrink or the power to go.
	stage := func(mem *vfstest.Mem, s3 *fakeS3, cut int) (*Store, int) {
		gate := make(chan struct{})
		st, err := New(opts(mem, dyingS3{gatedS3{s3, gate}, mem}, "first"))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if _, err := st.Put(context.Background(), o, bytes.NewReader(bodies[key(t, o)])); err != nil {
				t.Fatal(err)
			}
		}
		if n := st.own.Stats().Segments; n < 3 {
			t.Fatalf("the journal grew to %d segments only", n)
		}
		start := mem.Ops()
		mem.CutAfter(cut)
		close(gate)
		testenv.EventuallyWithin(t, 10*time.Second, fmt.Sprintf("cut %d: drained and shrunk, or cut", cut), func() bool {
			return mem.IsCut() || (st.q.pending() == 0 && len(segmentFiles(mem, st.ownDir)) == 2)
		})
		return st, mem.Ops() - start
	}
	mem := vfstest.NewMem()
	st, total := stage(mem, newS3(), -1)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	total += 10 // the close, and whatever ran late
	t.Logf("about %d operations while draining and freeing", total)
	for cut := 0; cut <= total; cut++ {
		mode := []vfstest.Mode{vfstest.KeepNone, vfstest.KeepAll, vfstest.KeepSome}[cut%3]
		at := fmt.Sprintf("cut %d mode %d", cut, mode)
		mem := vfstest.NewMem()
		s3 := newS3()
		st, _ := stage(mem, s3, cut)
		_ = st.Close() // fails on the cut disk; only the disk matters
		after := mem.Crash(mode, rand.New(rand.NewPCG(uint64(cut), 11)))
		next, err := New(opts(after, s3, "next"))
		if err != nil {
			t.Fatalf("%s: the next task: %v", at, err)
		}
		acked := map[string]bool{}
		for k := range bodies {
			acked[k] = true // all were staged before the power could go
		}
		reachS3(t, at, next, s3, acked, bodies)
		// The dead task's journal is taken over and removed, the next
		// one's is at its two segments.
		testenv.EventuallySawWithin(t, 5*time.Second, at+": the next task's 2 segment files alone in the staging directory", func() (bool, string) {
			segs := segmentFiles(after, "/st/journals")
			return len(segs) == 2, fmt.Sprintf("%d segment files: %v", len(segs), segs)
		})
		if err := next.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// reachS3 waits until every acknowledged key is in up, lets next drain,
// and checks that whatever up holds is whole: one of bodies.
func reachS3(t *testing.T, at string, next *Store, up *fakeS3, acked map[string]bool, bodies map[string][]byte) {
	t.Helper()
	testenv.EventuallySawWithin(t, 20*time.Second, at+": every acknowledged object in S3", func() (bool, string) {
		missing := 0
		for k := range acked {
			if _, ok := up.get(k); !ok {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d acknowledged objects not in S3", missing)
	})
	drain(t, next)
	up.mu.Lock()
	defer up.mu.Unlock()
	for k, b := range up.objects {
		if !bytes.Equal(b, bodies[k]) {
			t.Errorf("%s: %s reached S3 with %d bytes that were never sent", at, k, len(b))
		}
	}
}

// dyingS3 is S3 as a task sees it that dies with the power of its
// disk: each call is an operation on the disk before and after (so that a
// cut may fall between two calls), and none is made, or answered, once the
// power is cut.
type dyingS3 struct {
	Uploader
	mem *vfstest.Mem
}

func (d dyingS3) alive() error {
	if _, err := d.mem.Stat("/"); err != nil {
		return fmt.Errorf("the task died: %w: %w", objectstore.ErrUnavailable, err)
	}
	return nil
}

func (d dyingS3) Put(ctx context.Context, obj objectstore.Object, r io.Reader) (objectstore.Stored, error) {
	if err := d.alive(); err != nil {
		return objectstore.Stored{}, err
	}
	st, err := d.Uploader.Put(ctx, obj, r)
	return st, errors.Join(err, d.alive())
}

func (d dyingS3) PutRecord(ctx context.Context, key string, body []byte) error {
	if err := d.alive(); err != nil {
		return err
	}
	return errors.Join(d.Uploader.PutRecord(ctx, key, body), d.alive())
}

// gatedS3 is a fake S3 that answers no upload until open is closed.
type gatedS3 struct {
	*fakeS3
	open chan struct{}
}

func (g gatedS3) Put(ctx context.Context, obj objectstore.Object, r io.Reader) (objectstore.Stored, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return objectstore.Stored{}, ctx.Err()
	}
	return g.fakeS3.Put(ctx, obj, r)
}

func (g gatedS3) PutRecord(ctx context.Context, key string, body []byte) error {
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.fakeS3.PutRecord(ctx, key, body)
}

// stuckUpload is an Uploader whose uploads do not return until released,
// whatever their context (a read of the staging file system that hangs).
type stuckUpload struct {
	Uploader
	started chan struct{} // a value for every upload that started, while it has room
	release chan struct{}
}

func (s stuckUpload) Put(ctx context.Context, obj objectstore.Object, r io.Reader) (objectstore.Stored, error) {
	select {
	case s.started <- struct{}{}:
	default:
	}
	<-s.release
	return objectstore.Stored{}, errDown
}

// TestShutdownCutShort: the staged store's close at exit ends with its
// context when an upload in flight and the journal's checkpoint both wait,
// saying how many objects it leaves staged, and loses nothing
// acknowledged: the task that takes the journal over after the process
// ends uploads them. Close gave the uploads 5 s whatever the stop had left,
// then waited for them and for the disk for ever.
func TestShutdownCutShort(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	bodies, acked := map[string][]byte{}, map[string]bool{}
	// A task that died with an object staged: "first" takes its journal
	// over.
	deadMem := vfstest.NewMem()
	dead, err := New(Options{Dir: "/st", FS: deadMem, Uploader: gatedS3{newFakeS3(), make(chan struct{})}, TaskID: "dead",
		SegmentSize: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	b := data(9, 50_000)
	sd, err := dead.Put(context.Background(), object(9), bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	bodies[sd.Key], acked[sd.Key] = b, true
	mem := deadMem.Crash(vfstest.KeepNone, nil)
	gone, end := context.WithCancel(context.Background())
	end()
	_ = dead.Shutdown(gone) // its goroutines end; only the disk matters
	logs := &testenv.LogBuffer{}
	stuck := stuckUpload{newFakeS3(), make(chan struct{}, 3), release}
	st, err := New(Options{Dir: "/st", FS: vfstest.HeldSync{Mem: mem, Release: release}, Uploader: stuck, TaskID: "first",
		SegmentSize: 2 << 20, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		b := data(i, 50_000)
		s, err := st.Put(context.Background(), object(i), bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		bodies[s.Key], acked[s.Key] = b, true
	}
	for range 3 { // the adopted object's upload too
		<-stuck.started
	}
	testenv.CloseCutShort(t, st.Shutdown)
	if l := logs.String(); !strings.Contains(l, `"level":"WARN","msg":"`+CloseCutShort+`"`) || !strings.Contains(l, `"not_uploaded":3`) || !strings.Contains(l, testenv.ErrSecondSignal.Error()) {
		t.Errorf("the close cut short does not say what it leaves, and why:\n%s", l)
	}
	// Its uploads still going, the journals stay locked until the process
	// ends: another task taking one over now would work on it beside this
	// one. Both were let go at once.
	for _, task := range []string{"first", "dead"} {
		l, err := mem.Lock(filepath.Join("/st", journalsDir, task, lockName))
		if err == nil {
			t.Errorf("the journal of %q let go while its close went on", task)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		} else if !isLocked(err) {
			t.Fatal(err)
		}
	}
	// The process ends: its lock goes with it, as after a crash.
	after := mem.Crash(vfstest.KeepNone, nil)
	up := newFakeS3()
	next, err := New(Options{Dir: "/st", FS: after, Uploader: up, TaskID: "next", SegmentSize: 2 << 20, AdoptEvery: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	reachS3(t, "after the close cut short", next, up, acked, bodies)
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAdoptedAtStartIsPublished: a task starting beside the journal of a
// task that died takes its staged objects over before the metrics agent
// first scrapes it, the scrape the agent takes as its baseline: the count
// was in that baseline and the agent published no increase of
// dicom_ingest_staging_adopted_total. It now shows from the second scrape.
func TestAdoptedAtStartIsPublished(t *testing.T) {
	down := newFakeS3()
	down.setDown(true)
	mem := vfstest.NewMem()
	dead, err := New(Options{Dir: "/st", FS: mem, Uploader: down, TaskID: "dead", AdoptEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Its disk is cut under it: its close can only fail.
	t.Cleanup(func() { t.Log("the dead task's close:", dead.Close()) })
	acked := map[string]bool{}
	bodies := map[string][]byte{}
	for i := range 2 {
		b := data(i, 10_000)
		s, err := dead.Put(context.Background(), object(i), bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		acked[s.Key], bodies[s.Key] = true, b
	}
	after := mem.Crash(vfstest.KeepAll, rand.New(rand.NewPCG(1, 2)))
	reg := prometheus.NewRegistry()
	up := newFakeS3()
	next := newStore(t, Options{Dir: "/st", FS: after, Uploader: up, TaskID: "next", Metrics: reg})
	reachS3(t, "after the death", next, up, acked, bodies)
	scrape := func() float64 {
		t.Helper()
		v, err := metricnames.Scrape(reg, MetricAdopted)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	baseline := scrape()
	if got := scrape() - baseline; got != 2 {
		t.Errorf("the agent publishes an increase of %v of %s after a start that took over 2 objects, want 2", got, MetricAdopted)
	}
}
