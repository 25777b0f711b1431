package e2e

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore/localstoretest"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	_ "modernc.org/sqlite" // localstore's SQLite driver, for schemaVersion
)

// upgradeFixture is a data directory an older build left
// (testdata/upgrade/README.md says which and how to make it again), and
// what that build's portal served from it before its last run crashed.
const upgradeFixture = "testdata/upgrade/data-d32774a.tar.gz"

// upgradeFixtureSchema is the schema version of the fixture's ingest.db,
// the older build's (testdata/upgrade/README.md).
const upgradeFixtureSchema = 13

type upgradeExpected struct {
	Studies []struct {
		StudyInstanceUID string `json:"studyInstanceUid"`
		InstanceCount    int    `json:"instanceCount"`
	} `json:"studies"`
	Events      []string `json:"events"`
	Audit       []string `json:"audit"`
	Commitments []string `json:"commitments"`
	Quarantine  []string `json:"quarantine"`
}

// TestUpgradeFromOlderBuild starts today's scp-task --local on a data
// directory written by an older build (schema 13): two instances and a
// reject stored, a Storage Commitment reported, a clean stop, then a run
// that crashed right after a third instance's journal record was durable,
// before its pipeline ran. The database is migrated in place; everything
// the old portal served is served still, the journal record it left is
// processed once, no event is repeated, and new sends work.
func TestUpgradeFromOlderBuild(t *testing.T) {
	need(t, "dcmsend")
	var want upgradeExpected
	b, err := os.ReadFile("testdata/upgrade/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	untarFixture(t, upgradeFixture, dataDir)
	// The fixture is what the older build left, read from a copy today's
	// build never opens.
	shipped := filepath.Join(dir, "as-shipped")
	untarFixture(t, upgradeFixture, shipped)
	if v := schemaVersion(t, filepath.Join(shipped, "ingest.db")); v != upgradeFixtureSchema {
		t.Fatalf("%s holds a database of schema %d, not the older build's %d", upgradeFixture, v, upgradeFixtureSchema)
	}
	n := newNode(t, dataDir)
	n.start()
	if v := schemaVersion(t, filepath.Join(dataDir, "ingest.db")); v <= upgradeFixtureSchema {
		t.Errorf("the database is still of schema %d after today's build started on it", v)
	}
	if !strings.Contains(n.logText(), `"msg":"recovered the hand-off"`) || !strings.Contains(n.logText(), `"replayed":1`) {
		t.Errorf("the start did not replay the old build's journal record:\n%s", n.logText())
	}
	// The migration, one way, is told once, of the main database alone
	// (the old build's queue has today's schema).
	if got := strings.Count(n.logText(), `"msg":"migrated database"`); got != 1 ||
		!strings.Contains(n.logText(), `"file":"`+filepath.Join(dataDir, "ingest.db")+`","from":13,"to":`) {
		t.Errorf("the start told %d migrations, want the main database's from 13:\n%s", got, n.logText())
	}
	n.waitPipelineIdle(20 * time.Second)
	study := want.Studies[0].StudyInstanceUID

	// The old build's instances, and the one its crash left in the journal.
	testenv.Eventually(t, "the old study with its journaled instance", func() bool {
		for _, s := range n.studies() {
			if s.StudyInstanceUID == study {
				return s.InstanceCount == want.Studies[0].InstanceCount+1
			}
		}
		return false
	})
	var events []apiEvent
	testenv.Eventually(t, "the study's Study Updated", func() bool {
		events = n.events("after=0")
		return countType(events, pipeline.DetailTypeStudyUpdated) > 0
	})
	wantIDs := func(what string, want []string, got map[string]int) {
		t.Helper()
		for _, id := range want {
			if got[id] != 1 {
				t.Errorf("%s %s of the old build served %d times", what, id, got[id])
			}
		}
	}
	eventIDs := map[string]int{}
	for _, e := range events {
		eventIDs[e.ID]++
	}
	wantIDs("event", want.Events, eventIDs)
	for id, c := range eventIDs {
		if c != 1 {
			t.Errorf("event %s served %d times", id, c)
		}
	}
	if got := countType(events, pipeline.DetailTypeInstanceStored); got != want.Studies[0].InstanceCount+1 {
		t.Errorf("%d Instance Stored events, want %d", got, want.Studies[0].InstanceCount+1)
	}
	records := n.audit("")
	auditIDs, stored := map[string]int{}, map[string]int{}
	for _, r := range records {
		auditIDs[r.ID]++
		if r.Outcome == "stored" {
			stored[r.SOPInstanceUID]++
		}
	}
	wantIDs("audit record", want.Audit, auditIDs)
	for sop, c := range stored {
		if c != 1 {
			t.Errorf("%d stored records of %s", c, sop)
		}
	}
	var commitments struct {
		Commitments []struct {
			TransactionUID string `json:"transactionUid"`
			State          string `json:"state"`
		} `json:"commitments"`
	}
	n.getJSON("/api/commitments", &commitments)
	txns := map[string]int{}
	for _, c := range commitments.Commitments {
		txns[c.TransactionUID]++
	}
	wantIDs("Storage Commitment transaction", want.Commitments, txns)
	var quarantine struct{ Records []pipeline.AuditRecord }
	n.getJSON("/api/quarantine", &quarantine)
	quarantined := map[string]int{}
	for _, r := range quarantine.Records {
		quarantined[r.ID]++
	}
	wantIDs("quarantine record", want.Quarantine, quarantined)

	// New sends land beside the old data, and a restart repeats nothing.
	if out, err := n.dcmsend("LOCAL_AE", writeSynthStudy(t, dir)...); err != nil {
		t.Fatalf("dcmsend after the upgrade: %v\n%s", err, out)
	}
	n.waitPipelineIdle(20 * time.Second)
	testenv.Eventually(t, "the new study", func() bool {
		for _, s := range n.studies() {
			if s.StudyInstanceUID == synthStudy {
				return s.InstanceCount == len(synthInstances)
			}
		}
		return false
	})
	n.stop()
	n.start()
	n.waitPipelineIdle(20 * time.Second)
	// The new study's events are logged, so that the count below is of
	// something: a log not there reads as no events.
	testenv.Eventually(t, "the new study's Instance Stored events in events.log", func() bool {
		stored := instanceStoredInLog(t, dataDir)
		for _, in := range synthInstances {
			if stored[in.sop] == 0 {
				return false
			}
		}
		return true
	})
	logged := map[string]int{}
	for _, e := range localstoretest.EventsLog(t, filepath.Join(dataDir, "events.log")) {
		logged[e.ID]++
	}
	for id, c := range logged {
		if c != 1 {
			t.Errorf("event %s in events.log %d times", id, c)
		}
	}
}

// schemaVersion reads the schema version a local-mode database records
// (schema_version), without migrating it.
func schemaVersion(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil {
		t.Fatalf("%s: schema version: %v", path, err)
	}
	return v
}

func countType(events []apiEvent, detailType string) int {
	n := 0
	for _, e := range events {
		if e.DetailType == detailType {
			n++
		}
	}
	return n
}

// untarFixture unpacks a data directory fixture into dst, 0700 and its
// files 0600 as scp-task makes them. Its journal segments are sparse in
// the archive (zeros past their records), which the reader expands.
func untarFixture(t *testing.T, path, dst string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Clean(h.Name)
		if name == "." {
			continue
		}
		if !filepath.IsLocal(name) {
			t.Fatalf("%s: %q is not inside the data directory", path, h.Name)
		}
		p := filepath.Join(dst, name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o700)
		case tar.TypeReg:
			err = writeFixtureFile(p, tr)
		default:
			t.Fatalf("%s: %s is not a file or a directory", path, h.Name)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func writeFixtureFile(p string, r io.Reader) error {
	w, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		return errors.Join(err, w.Close())
	}
	return w.Close()
}

// TestRollbackRefused holds the rollback docs/local-mode.md promises: a
// build started on a data directory a newer build has migrated (here the
// fixture a run crashed in, its journal record unprocessed and its queue's
// write-ahead log not checkpointed, marked as of a schema no build has yet)
// exits with status 1, naming the version it found and the one it knows,
// before it opens the journal or changes a database. Every file is as it
// was, byte for byte, but where the newer build was killed with its last
// commits in the main database's write-ahead log: SQLite folds that log
// into ingest.db as the refused start reads the version, which changes the
// file's bytes and not what it holds (the newer build, started again, finds
// its schema and every row).
func TestRollbackRefused(t *testing.T) {
	const newer = 1000
	for _, tt := range []struct {
		name string
		// killed leaves the newer build's commits (its schema version
		// among them) in ingest.db's write-ahead log, as kill -9 does.
		killed bool
	}{{"stopped", false}, {"killed", true}} {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			untarFixture(t, upgradeFixture, dataDir)
			setSchemaVersion(t, dataDir, newer, tt.killed)
			if _, err := os.Stat(filepath.Join(dataDir, "ingest.db-wal")); tt.killed != (err == nil) {
				t.Fatalf("ingest.db's write-ahead log left: %v, want %v", err == nil, tt.killed)
			}
			before, held := dataFiles(t, dataDir), dbContent(t, dataDir)

			out := startRefused(t, dataDir)
			if want := fmt.Sprintf("database schema %d is newer than this build (", newer); !strings.Contains(out, want) {
				t.Errorf("the refusal does not say %q:\n%s", want, out)
			}
			for _, started := range []string{`"msg":"recovered the hand-off"`, `"msg":"migrated database"`, `"msg":"journal closed"`} {
				if strings.Contains(out, started) {
					t.Errorf("the refused start logged %s:\n%s", started, out)
				}
			}
			after := dataFiles(t, dataDir)
			for name, sum := range before {
				if after[name] != sum && !(tt.killed && slices.Contains(mainDB, name)) {
					t.Errorf("%s changed by the refused start", name)
				}
			}
			for name := range after {
				if _, ok := before[name]; !ok && !strings.HasSuffix(name, "-shm") && !strings.HasSuffix(name, "-wal") &&
					name != "scp-task.lock" && name != "scp-task.holder" {
					t.Errorf("the refused start left %s", name)
				}
			}
			if got := dbContent(t, dataDir); !maps.EqualFunc(got, held, slices.Equal) {
				t.Errorf("ingest.db holds other than it did before the refused start")
			}
			if v := held["schema_version"]; !slices.Equal(v, []string{fmt.Sprint("[", newer, "]")}) {
				t.Errorf("ingest.db's schema_version holds %v, want [%d]: the newer build's commits were lost", v, newer)
			}
		})
	}
}

// setSchemaVersion marks the local-mode database of dataDir as of schema
// version v, as a build with v migrations would leave it: stopped (the
// write-ahead log checkpointed into ingest.db and removed), or killed (v
// and the fixture's own commits still in the log and its index: the files
// are taken while the connection is open, as kill -9 leaves them).
func setSchemaVersion(t *testing.T, dataDir string, v int, killed bool) {
	t.Helper()
	work := dataDir
	if killed {
		work = t.TempDir()
		copyFiles(t, dataDir, work, "ingest.db", "ingest.db-wal")
	}
	db, err := sql.Open("sqlite", filepath.Join(work, "ingest.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`PRAGMA wal_autocheckpoint = 0`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE schema_version SET version = ?`, v); err != nil {
		t.Fatalf("%s: %v", work, err)
	}
	if killed {
		copyFiles(t, work, dataDir, mainDB...)
	}
}

// mainDB are the files of a data directory's main database.
var mainDB = []string{"ingest.db", "ingest.db-wal", "ingest.db-shm"}

// dbContent is every row of every table of dataDir's ingest.db (the
// table's rows, each printed, in order), read from a copy of its files: the
// copy's SQLite folds a write-ahead log, never dataDir's.
func dbContent(t *testing.T, dataDir string) map[string][]string {
	t.Helper()
	scratch := t.TempDir()
	copyFiles(t, dataDir, scratch, mainDB...)
	db, err := sql.Open("sqlite", filepath.Join(scratch, "ingest.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string][]string{}
	for _, table := range queryRows(t, db, `SELECT name FROM sqlite_schema WHERE type = 'table'`) {
		name := fmt.Sprint(table[0])
		for _, row := range queryRows(t, db, `SELECT * FROM "`+strings.ReplaceAll(name, `"`, `""`)+`"`) {
			out[name] = append(out[name], fmt.Sprint(row))
		}
		slices.Sort(out[name])
	}
	return out
}

// queryRows is every row q selects from db, each its columns' values.
func queryRows(t *testing.T, db *sql.DB, q string) [][]any {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]any
	for rows.Next() {
		vals, ptrs := make([]any, len(cols)), make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, vals)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out
}

// copyFiles copies the named files of from that exist into to.
func copyFiles(t *testing.T, from, to string, names ...string) {
	t.Helper()
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(from, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// dataFiles is every regular file under dir (its path relative to dir) with
// the SHA-256 of its bytes.
func dataFiles(t *testing.T, dir string) map[string][sha256.Size]byte {
	t.Helper()
	out := map[string][sha256.Size]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		out[rel] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
