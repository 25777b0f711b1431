package stagedstore

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs/vfstest"
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
		at := fmt.Sprintf("cut %d mode %d", cut, mode)
		deadline := time.Now().Add(20 * time.Second)
		for {
			missing := 0
			for k := range acked {
				if _, ok := up.get(k); !ok {
					missing++
				}
			}
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d acknowledged objects never reached S3", at, missing)
			}
			time.Sleep(2 * time.Millisecond)
		}
		drain(t, next)
		up.mu.Lock()
		for k, b := range up.objects {
			if !bytes.Equal(b, bodies[k]) {
				t.Errorf("%s: %s reached S3 with %d bytes that were never sent", at, k, len(b))
			}
		}
		up.mu.Unlock()
		if err := next.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
