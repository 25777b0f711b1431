package localstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/google/go-cmp/cmp"
)

func openTest(t *testing.T) *DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "test.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// stageSchema leaves the database at path as a build knowing schema left
// it, with what fill (nil: nothing) writes into it.
func stageSchema(t *testing.T, path string, schema []string, fill func(*sql.DB) error) {
	t.Helper()
	sdb, err := openSQLite(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := migrate(context.Background(), sdb, schema); err != nil {
		t.Fatal(errors.Join(err, sdb.Close()))
	}
	if fill != nil {
		err = fill(sdb)
	}
	if err := errors.Join(err, sdb.Close()); err != nil {
		t.Fatal(err)
	}
}

// queryStrings is the first column of every row query selects from q, as
// text.
func queryStrings(t *testing.T, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, query string) []string {
	t.Helper()
	rows, err := q.QueryContext(context.Background(), query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(errors.Join(err, rows.Close()))
		}
		out = append(out, s)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	return out
}

// openOlderDatabase opens, with today's schema, a database that fill
// wrote at schema version (a database of an older build): the upgrade's
// migrations run on what fill left.
func openOlderDatabase(t *testing.T, version int, fill func(*sql.DB) error) *DB {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	stageSchema(t, path, schema[:version], fill)
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// queryPlan is SQLite's plan for stmt, one step a line.
func queryPlan(t *testing.T, db *DB, stmt string, args ...any) string {
	t.Helper()
	rows, err := db.read.QueryContext(context.Background(), `EXPLAIN QUERY PLAN `+stmt, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

func inst(series, sop, sha string, at time.Duration) pipeline.InstanceRecord {
	return pipeline.InstanceRecord{
		StudyInstanceUID: "1.2.3", SeriesInstanceUID: series, SOPInstanceUID: sop, ContentIdentity: sha,
		Modality: "CT", PatientID: "PID1", CallingAE: "LOCAL_AE", Size: 100, ReceivedAt: t0.Add(at),
		ObjectKey: "incoming/x/" + sop + ".dcm",
	}
}

func TestAudit(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	a := db.AuditStore()
	recs := []pipeline.AuditRecord{
		{ID: "a", Time: t0, Outcome: "stored", CallingAE: "X", PatientID: "P1", StudyInstanceUID: "1.1"},
		{ID: "b", Time: t0.Add(time.Second), Outcome: "stored", CallingAE: "X", PatientID: "P1", StudyInstanceUID: "1.1"},
		{ID: "c", Time: t0.Add(2 * time.Second), Outcome: "association-rejected", CallingAE: "EVIL"},
		{ID: "d", Time: t0.Add(3 * time.Second), Outcome: "rejected", CallingAE: "X", PatientID: "P2", StudyInstanceUID: "1.2", SOPInstanceUID: "1.2.3"},
	}
	for _, r := range recs {
		if ok, err := a.Append(ctx, r); err != nil || !ok {
			t.Fatalf("append %s: %v %v", r.ID, ok, err)
		}
	}
	if ok, err := a.Append(ctx, recs[0]); err != nil || ok {
		t.Errorf("duplicate append: %v %v", ok, err)
	}
	ids := func(p pipeline.AuditPage) []string {
		var out []string
		for _, r := range p.Records {
			out = append(out, r.ID)
		}
		return out
	}
	tests := []struct {
		name string
		q    pipeline.AuditQuery
		want []string
	}{
		{"all newest first", pipeline.AuditQuery{}, []string{"d", "c", "b", "a"}},
		{"patient", pipeline.AuditQuery{PatientID: "P1"}, []string{"b", "a"}},
		{"study", pipeline.AuditQuery{StudyInstanceUID: "1.2"}, []string{"d"}},
		{"instance", pipeline.AuditQuery{SOPInstanceUID: "1.2.3"}, []string{"d"}},
		{"unknown instance", pipeline.AuditQuery{SOPInstanceUID: "1.2.4"}, nil},
		{"ae", pipeline.AuditQuery{CallingAE: "EVIL"}, []string{"c"}},
		{"outcome", pipeline.AuditQuery{Outcome: "stored"}, []string{"b", "a"}},
		{"time", pipeline.AuditQuery{From: t0.Add(time.Second), To: t0.Add(2 * time.Second)}, []string{"c", "b"}},
		{"day", pipeline.AuditQuery{Day: "2026-11-26", CallingAE: "X"}, []string{"d", "b", "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := a.Query(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, ids(p)); d != "" {
				t.Error(d)
			}
		})
	}
	t.Run("pages", func(t *testing.T) {
		var got []string
		q := pipeline.AuditQuery{Limit: 3}
		for i := 0; i < 3; i++ {
			p, err := a.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ids(p)...)
			if p.Next == "" {
				break
			}
			q.Cursor = p.Next
		}
		if d := cmp.Diff([]string{"d", "c", "b", "a"}, got); d != "" {
			t.Error(d)
		}
	})
}

func TestInTxAtomicWithHandoff(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	h := db.Handoff()
	if ok, err := h.Enqueue(ctx, "incoming/k.dcm", t0, map[string]string{"calling-ae": "A"}); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if ok, _ := h.Enqueue(ctx, "incoming/k.dcm", t0, map[string]string{"calling-ae": "A"}); ok {
		t.Error("second enqueue reported new")
	}
	boom := errors.New("boom")
	work := func(fail bool) error {
		return db.InTx(ctx, nil, func(tx *Tx) error {
			if _, err := tx.IndexStore().UpsertInstance(ctx, inst("1.2.3.1", "1.2.3.1.1", "aa", 0)); err != nil {
				return err
			}
			if _, err := tx.Outbox().Publish(ctx, []pipeline.Event{{ID: "ev1", DetailType: pipeline.DetailTypeInstanceStored, Time: t0, Detail: json.RawMessage(`{"a":1}`)}}); err != nil {
				return err
			}
			if fail {
				return boom
			}
			return tx.MarkDone(ctx, "incoming/k.dcm", t0)
		})
	}
	if err := work(true); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if _, err := db.IndexStore().GetStudy(ctx, "1.2.3"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("rolled back work visible: %v", err)
	}
	if evs, _ := db.Events(ctx, EventFilter{}); len(evs.Events) != 0 {
		t.Errorf("rolled back event visible: %v", evs)
	}
	if err := work(false); err != nil {
		t.Fatal(err)
	}
	if err := work(false); !errors.Is(err, ErrNotPending) {
		t.Errorf("second completion: %v", err)
	}
	st, _ := db.IndexStore().GetStudy(ctx, "1.2.3")
	evs, _ := db.Events(ctx, EventFilter{})
	if st.InstanceCount != 1 || st.Revision != 1 || len(evs.Events) != 1 {
		t.Errorf("after one commit: instances=%d revision=%d events=%d", st.InstanceCount, st.Revision, len(evs.Events))
	}
	if s, n, _ := h.State(ctx, "incoming/k.dcm"); s != "done" || n != 1 {
		t.Errorf("handoff state %q attempts %d", s, n)
	}
	if md, _ := h.Metadata(ctx, "incoming/k.dcm"); md["calling-ae"] != "A" {
		t.Errorf("metadata %v", md)
	}
	if p, _ := h.Pending(ctx, 10); len(p) != 0 {
		t.Errorf("pending after done: %v", p)
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	ctx := context.Background()
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Handoff().Enqueue(ctx, "k", t0, nil); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	db, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if ok, _ := db.Handoff().Known(ctx, "k"); !ok {
		t.Error("key lost across reopen")
	}
}

// TestFilesArePrivate: the databases hold patient data, so every file
// Open creates (both databases, their write-ahead logs and shared memory)
// is mode 0600. Files an older build left readable by others are narrowed
// by the data directory's rule (local's TestPrepareDataDirNarrowsItsFiles).
func TestFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ingest.db")
	ctx := context.Background()
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Handoff().Enqueue(ctx, "incoming/k.dcm", t0, nil); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"ingest.db": true, "ingest.db-wal": true, "ingest.db-shm": true,
		"ingest-queue.db": true, "ingest-queue.db-wal": true, "ingest-queue.db-shm": true}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
		delete(want, e.Name())
	}
	for name := range want {
		t.Errorf("%s: not created", name)
	}
}

// TestQuietPeriodRunsFromActivity: stability is judged on the later of
// received-at and indexed-at of the newest new or conflicting instance; a
// duplicate delivery is not activity; rows written before last_activity
// existed fall back to last_received.
func TestQuietPeriodRunsFromActivity(t *testing.T) {
	const quiet = time.Minute
	type check struct {
		at     time.Duration // now, since t0
		stable bool
	}
	indexed := func(in pipeline.InstanceRecord, at time.Duration) pipeline.InstanceRecord {
		in.IndexedAt = t0.Add(at)
		return in
	}
	cases := []struct {
		name   string
		ups    []pipeline.InstanceRecord
		legacy bool // clear last_activity as a row from before migration 2
		checks []check
	}{
		{name: "indexed 120s after receipt", ups: []pipeline.InstanceRecord{indexed(inst("1.2.3.1", "1.2.3.1.1", "aa", 0), 120*time.Second)},
			checks: []check{{121 * time.Second, false}, {179 * time.Second, false}, {181 * time.Second, true}}},
		{name: "duplicate delivery does not move activity", ups: []pipeline.InstanceRecord{
			indexed(inst("1.2.3.1", "1.2.3.1.1", "aa", 0), 120*time.Second),
			indexed(inst("1.2.3.1", "1.2.3.1.1", "aa", 0), 170*time.Second),
		}, checks: []check{{121 * time.Second, false}, {181 * time.Second, true}}},
		{name: "conflict is activity", ups: []pipeline.InstanceRecord{
			indexed(inst("1.2.3.1", "1.2.3.1.1", "aa", 0), 120*time.Second),
			indexed(inst("1.2.3.1", "1.2.3.1.1", "bb", 0), 170*time.Second),
		}, checks: []check{{181 * time.Second, false}, {231 * time.Second, true}}},
		{name: "row from before last_activity", legacy: true, ups: []pipeline.InstanceRecord{indexed(inst("1.2.3.1", "1.2.3.1.1", "aa", 0), 120*time.Second)},
			checks: []check{{59 * time.Second, false}, {61 * time.Second, true}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db := openTest(t)
			ctx := context.Background()
			ix := db.IndexStore()
			for _, in := range c.ups {
				if _, err := ix.UpsertInstance(ctx, in); err != nil {
					t.Fatal(err)
				}
			}
			if c.legacy {
				st, err := getSummary(ctx, db.read, "1.2.3")
				if err != nil {
					t.Fatal(err)
				}
				st.LastActivity = time.Time{}
				body, _ := json.Marshal(st)
				if _, err := db.sql.ExecContext(ctx, `UPDATE studies SET last_activity = 0, record = ?`, string(body)); err != nil {
					t.Fatal(err)
				}
			}
			for _, ch := range c.checks {
				got, err := ix.StableStudies(ctx, t0.Add(ch.at-quiet), 10)
				if err != nil {
					t.Fatal(err)
				}
				if stable := len(got) == 1; stable != ch.stable {
					t.Errorf("at t0+%v: stable = %v, want %v (%+v)", ch.at, stable, ch.stable, got)
				}
			}
		})
	}
}

func TestEnqueueMissing(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		known     []string // enqueued before, with metadata
		keys      []string
		wantAdded int
	}{
		{"empty store", nil, []string{"incoming/a.dcm", "audit/b.json"}, 2},
		{"all known", []string{"incoming/a.dcm", "audit/b.json"}, []string{"incoming/a.dcm", "audit/b.json"}, 0},
		{"some known", []string{"incoming/a.dcm"}, []string{"incoming/a.dcm", "incoming/c.dcm"}, 1},
		{"repeated key", nil, []string{"incoming/a.dcm", "incoming/a.dcm"}, 1},
		{"no keys", []string{"incoming/a.dcm"}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openTest(t)
			h := db.Handoff()
			for _, k := range tt.known {
				if _, err := h.Enqueue(ctx, k, t0, map[string]string{"calling-ae": "A"}); err != nil {
					t.Fatal(err)
				}
			}
			added, err := h.EnqueueMissing(ctx, tt.keys, t0.Add(time.Minute))
			if err != nil || added != tt.wantAdded {
				t.Fatalf("EnqueueMissing = %d, %v; want %d", added, err, tt.wantAdded)
			}
			pending, err := h.Pending(ctx, 100)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{}
			for _, k := range append(append([]string{}, tt.known...), tt.keys...) {
				want[k] = true
			}
			got := map[string]bool{}
			for _, k := range pending {
				got[k] = true
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("pending keys (-want +got):\n%s", d)
			}
			// A key known before keeps what its first enqueue recorded.
			for _, k := range tt.known {
				md, err := h.Metadata(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(map[string]string{"calling-ae": "A"}, md); d != "" {
					t.Errorf("%s: metadata, want the first enqueue's (-want +got):\n%s", k, d)
				}
			}
		})
	}
}

// TestHandoffQueueAndLedger walks keys through the queue and the ledger:
// a done or parked key is never queued again, a queue row left behind by
// a crash after the commit is pruned, and keys a build from before the
// separate queue left pending are adopted on open.
func TestHandoffQueueAndLedger(t *testing.T) {
	ctx := context.Background()
	complete := func(t *testing.T, db *DB, key string) {
		t.Helper()
		if err := db.InTx(ctx, nil, func(tx *Tx) error { return tx.MarkDone(ctx, key, t0) }); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("done key is not queued again", func(t *testing.T) {
		db := openTest(t)
		h := db.Handoff()
		if ok, err := h.Enqueue(ctx, "incoming/a.dcm", t0, map[string]string{"called-ae": "X"}); !ok || err != nil {
			t.Fatal(ok, err)
		}
		complete(t, db, "incoming/a.dcm")
		if ok, err := h.Enqueue(ctx, "incoming/a.dcm", t0, nil); ok || err != nil {
			t.Errorf("Enqueue of a done key = %v, %v", ok, err)
		}
		if md, _ := h.Metadata(ctx, "incoming/a.dcm"); md["called-ae"] != "X" {
			t.Errorf("the ledger lost the hand-off's metadata: %v", md)
		}
	})
	t.Run("parked after max attempts", func(t *testing.T) {
		db := openTest(t)
		h := db.Handoff()
		if _, err := h.Enqueue(ctx, "incoming/b.dcm", t0, nil); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 3; i++ {
			if err := h.Fail(ctx, "incoming/b.dcm", errors.New("bad"), 3); err != nil {
				t.Fatal(err)
			}
			state, n, _ := h.State(ctx, "incoming/b.dcm")
			want := "pending"
			if i == 3 {
				want = "failed"
			}
			if state != want || n != i {
				t.Errorf("after %d failures: %s, %d attempts; want %s", i, state, n, want)
			}
		}
		if p, _ := h.Pending(ctx, -1); len(p) != 0 {
			t.Errorf("parked key still queued: %v", p)
		}
		if c, _ := h.Counts(ctx); c["failed"] != 1 || c["pending"] != 0 {
			t.Errorf("counts %v", c)
		}
	})
	t.Run("row left behind is pruned", func(t *testing.T) {
		db := openTest(t)
		h := db.Handoff()
		complete(t, db, "incoming/c.dcm")
		if _, err := db.q.ExecContext(ctx, `INSERT INTO queue(key, enqueued_at) VALUES ('incoming/c.dcm', 0), ('incoming/d.dcm', 0)`); err != nil {
			t.Fatal(err)
		}
		if n, err := h.Prune(ctx); n != 1 || err != nil {
			t.Fatalf("Prune = %d, %v; want 1", n, err)
		}
		if d := cmp.Diff([]string{"incoming/d.dcm"}, mustPending(t, h)); d != "" {
			t.Error(d)
		}
	})
	t.Run("legacy pending keys adopted", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "x.db")
		db, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.sql.ExecContext(ctx, `INSERT INTO handoff(key, enqueued_at, state, metadata) VALUES ('incoming/e.dcm', 1, 'pending', '{"called-ae":"Y"}')`); err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db, err = Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if d := cmp.Diff([]string{"incoming/e.dcm"}, mustPending(t, db.Handoff())); d != "" {
			t.Error(d)
		}
		complete(t, db, "incoming/e.dcm")
		if s, _, _ := db.Handoff().State(ctx, "incoming/e.dcm"); s != "done" {
			t.Errorf("adopted key after its unit: %q", s)
		}
	})
}

func mustPending(t *testing.T, h *Handoff) []string {
	t.Helper()
	p, err := h.Pending(context.Background(), -1)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
