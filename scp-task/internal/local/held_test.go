package local

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/portal"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestJournaledHandoff runs local mode on the real file store, whose
// journal hands the objects off: they are processed with the SCP's
// metadata, their records are all released, and a restart processes
// nothing again.
func TestJournaledHandoff(t *testing.T) {
	dir := t.TempDir()
	start := func() *Local {
		l, err := Start(context.Background(), Config{DataDir: dir, PortalListen: "127.0.0.1:0", QuietPeriod: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	l := start()
	for _, sop := range []string{"1.2.826.0.1.3680043.2.1.1.1", "1.2.826.0.1.3680043.2.1.1.2", "1.2.826.0.1.3680043.2.1.1.3"} {
		put(t, l, instance("1.2.826.0.1.3680043.2.1.1", sop))
	}
	var audit struct{ Records []pipeline.AuditRecord }
	testenv.Eventually(t, "three objects audited", func() bool {
		getJSON(t, l, "/api/audit?outcome=stored", &audit)
		return len(audit.Records) == 3
	})
	for _, r := range audit.Records {
		if r.CalledAE != "REMOTE_AE" || r.CallingAE != "LOCAL_AE" {
			t.Errorf("the hand-off's metadata was lost: %+v", r)
		}
	}
	testenv.Eventually(t, "every record released", func() bool {
		var c portal.Counters
		getJSON(t, l, "/api/counters", &c)
		return l.held.count() == 0 && c.PendingPipeline == 0
	})
	stop(t, l)

	l = start()
	defer stop(t, l)
	time.Sleep(300 * time.Millisecond) // what a restart would process, it would have begun to
	getJSON(t, l, "/api/audit?outcome=stored", &audit)
	if len(audit.Records) != 3 || l.held.count() != 0 {
		t.Errorf("after a restart: %d audit records, %d records held; want 3, 0", len(audit.Records), l.held.count())
	}
}

// TestSpill: a key held longer than the age by no worker moves to the
// queue (row first, with its metadata, then the record's release); a
// young one, one a worker has, and one done already stay or are only
// released.
func TestSpill(t *testing.T) {
	ctx := context.Background()
	db, err := localstore.Open(ctx, filepath.Join(t.TempDir(), DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	old := now.Add(-time.Minute)
	md := map[string]string{"called-ae": "REMOTE_AE"}
	if err := db.InTx(ctx, nil, func(tx *localstore.Tx) error {
		return tx.MarkHandedDone(ctx, localstore.Handed{Key: "incoming/done.dcm", At: old}, now)
	}); err != nil {
		t.Fatal(err)
	}
	h := newHeldObjects()
	released := map[string]int{}
	for _, k := range []struct {
		key string
		at  time.Time
	}{{"incoming/old.dcm", old}, {"incoming/young.dcm", now}, {"incoming/busy.dcm", old}, {"incoming/done.dcm", old}} {
		h.add(localstore.Handed{Key: k.key, At: k.at, Metadata: md}, nil, func() { released[k.key]++ })
	}
	if handed, _ := h.claim("incoming/busy.dcm"); handed == nil {
		t.Fatal("busy key not held")
	}
	n, err := h.spill(ctx, db.Handoff(), spillAfter, now)
	if err != nil || n != 2 {
		t.Fatalf("spill = %d, %v; want 2 (old and done)", n, err)
	}
	want := map[string]int{"incoming/old.dcm": 1, "incoming/done.dcm": 1}
	if len(released) != len(want) || released["incoming/old.dcm"] != 1 || released["incoming/done.dcm"] != 1 {
		t.Errorf("released %v, want %v", released, want)
	}
	pending, err := db.Handoff().Pending(ctx, -1)
	if err != nil || len(pending) != 1 || pending[0] != "incoming/old.dcm" {
		t.Fatalf("queue after the spill: %v, %v; want the old key alone", pending, err)
	}
	got, err := db.Handoff().Metadata(ctx, "incoming/old.dcm")
	if err != nil || got["called-ae"] != "REMOTE_AE" {
		t.Errorf("spilled metadata %v, %v", got, err)
	}
	if h.count() != 2 {
		t.Errorf("%d keys held after the spill, want 2 (young and busy)", h.count())
	}
}

// TestHeldKeyDoneAlready: an object sent again after its file was removed
// by hand takes its key afresh and is held, though the ledger has the key
// done: the pipeline's commit fails on it, so it is not processed twice,
// and nothing stays pending.
func TestHeldKeyDoneAlready(t *testing.T) {
	l, err := Start(context.Background(), Config{DataDir: t.TempDir(), PortalListen: "127.0.0.1:0", QuietPeriod: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer stop(t, l)
	in := instance("1.2.826.0.1.3680043.2.1.1", "1.2.826.0.1.3680043.2.1.1.5")
	st := put(t, l, in)
	var audit struct{ Records []pipeline.AuditRecord }
	testenv.Eventually(t, "the object audited", func() bool {
		getJSON(t, l, "/api/audit?outcome=stored", &audit)
		return len(audit.Records) == 1 && l.held.count() == 0
	})
	p, err := l.files.path(st.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	put(t, l, in)
	testenv.Eventually(t, "nothing pending", func() bool {
		var c portal.Counters
		getJSON(t, l, "/api/counters", &c)
		return l.held.count() == 0 && c.PendingPipeline == 0
	})
	getJSON(t, l, "/api/audit?outcome=stored", &audit)
	if len(audit.Records) != 1 {
		t.Errorf("%d audit records, want 1", len(audit.Records))
	}
}

// TestHeldHead: a held object's first bytes answer the reads they cover,
// without its file; others, and a replayed record's, go to the file. The
// heads' memory is bounded and given back once the pipeline has read the
// object, or at release.
func TestHeldHead(t *testing.T) {
	small := bytes.Repeat([]byte("s"), 1000)
	large := make([]byte, heldHead+100)
	for i := range large {
		large[i] = byte(i)
	}
	h := newHeldObjects()
	h.add(localstore.Handed{Key: "small"}, small, func() {})
	h.add(localstore.Handed{Key: "large"}, large, func() {})
	h.add(localstore.Handed{Key: "replayed"}, nil, func() {})
	tests := []struct {
		key            string
		offset, length int64
		want           []byte // nil: not from memory
	}{
		{"small", 0, heldHead, small},
		{"small", 10, -1, small[10:]},
		{"small", 990, 100, small[990:]},
		{"small", 1000, 10, []byte{}},
		{"small", 1001, 10, nil},
		{"large", 0, heldHead, large[:heldHead]},
		{"large", 100, 50, large[100:150]},
		{"large", 0, heldHead + 1, nil},
		{"large", 0, -1, nil},
		{"large", heldHead, 10, nil},
		{"replayed", 0, 10, nil},
		{"absent", 0, 10, nil},
	}
	for _, tt := range tests {
		v, _ := h.view(tt.key)
		got, ok := v.bytes(tt.offset, tt.length)
		if ok != (tt.want != nil) || !bytes.Equal(got, tt.want) {
			t.Errorf("%s [%d,+%d): got %d bytes (from memory %v), want %d (from memory %v)",
				tt.key, tt.offset, tt.length, len(got), ok, len(tt.want), tt.want != nil)
		}
	}
	if v, _ := h.view("replayed"); v.size != -1 {
		t.Errorf("a replayed record's size is %d, want unknown (-1)", v.size)
	}
	if want := len(small) + heldHead; h.heads != want {
		t.Errorf("heads hold %d bytes, want %d", h.heads, want)
	}
	h.dropHead("large")
	if v, ok := h.view("large"); !ok || v.head != nil || v.size != int64(len(large)) {
		t.Errorf("after dropHead: held %v, head of %d bytes, size %d; want held, no head, size %d", ok, len(v.head), v.size, len(large))
	}
	if h.heads != len(small) {
		t.Errorf("heads hold %d bytes after dropHead, want %d", h.heads, len(small))
	}
	h.release("large")
	h.release("small")
	if h.heads != 0 {
		t.Errorf("heads hold %d bytes after release, want 0", h.heads)
	}
	// Past the bound, objects are held without a head.
	for i := 0; i <= maxHeldHeads/heldHead; i++ {
		h.add(localstore.Handed{Key: fmt.Sprint(i)}, large, func() {})
	}
	if h.heads > maxHeldHeads {
		t.Errorf("heads hold %d bytes, more than the bound %d", h.heads, maxHeldHeads)
	}
	if v, _ := h.view(fmt.Sprint(maxHeldHeads / heldHead)); v.head != nil || v.size != int64(len(large)) {
		t.Errorf("the object past the bound: head of %d bytes, size %d; want none, %d", len(v.head), v.size, len(large))
	}
}
