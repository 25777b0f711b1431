package localstore

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestNewerSchemaRefused holds a rollback: a build opening a database a
// newer build migrated (the main one or the hand-off queue) refuses it,
// naming the schema version it found and the one it knows, and leaves the
// database as it was: no migration run, no version written.
func TestNewerSchemaRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		file   func(dir string) string
		schema []string
	}{
		{"main database", func(dir string) string { return filepath.Join(dir, "ingest.db") }, schema},
		{"hand-off queue", func(dir string) string { return QueuePath(filepath.Join(dir, "ingest.db")) }, queueSchema},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			path := filepath.Join(dir, "ingest.db")
			db, err := Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			// A future build's migration: one more table, one more version.
			future := len(tc.schema) + 1
			sdb, err := openSQLite(tc.file(dir), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sdb.ExecContext(ctx, `CREATE TABLE from_the_future (x INTEGER);
				UPDATE schema_version SET version = ?`, future); err != nil {
				t.Fatal(err)
			}
			if err := sdb.Close(); err != nil {
				t.Fatal(err)
			}
			before := readFiles(t, dir)

			db, err = Open(ctx, path)
			if err == nil {
				_ = db.Close()
				t.Fatal("Open took a database of a newer schema")
			}
			want := fmt.Sprintf("database schema %d is newer than this build (%d)", future, len(tc.schema))
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), filepath.Base(tc.file(dir))) {
				t.Errorf("Open: %v, want it to name the file and say %q", err, want)
			}
			after := readFiles(t, dir)
			for name, b := range before {
				if !bytes.Equal(after[name], b) {
					t.Errorf("%s changed by the refused Open", name)
				}
			}
			for name := range after {
				if _, ok := before[name]; !ok && !strings.HasSuffix(name, "-shm") && !strings.HasSuffix(name, "-wal") {
					t.Errorf("the refused Open left %s", name)
				}
			}
		})
	}
}

// readFiles reads every file in dir, by name.
func readFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// TestMigrationLogged: a migration, which cannot be undone, is told in one
// line per database migrated, naming the file, the schema version found and
// the one it has now; a new database or one up to date says nothing.
func TestMigrationLogged(t *testing.T) {
	type line struct {
		Msg, File string
		From, To  int
	}
	main := func(dir string) string { return filepath.Join(dir, "ingest.db") }
	queue := func(dir string) string { return QueuePath(main(dir)) }
	for _, tc := range []struct {
		name  string
		stage func(t *testing.T, dir string) // leaves what an older build left
		want  func(dir string) []line
	}{
		{"new data directory", func(*testing.T, string) {}, func(string) []line { return nil }},
		{"up to date", func(t *testing.T, dir string) { stageSchema(t, main(dir), schema, nil) }, func(string) []line { return nil }},
		{"main database of schema 10", func(t *testing.T, dir string) { stageSchema(t, main(dir), schema[:10], nil) },
			func(dir string) []line { return []line{{"migrated database", main(dir), 10, len(schema)}} }},
		{"hand-off queue of schema 0", func(t *testing.T, dir string) {
			stageSchema(t, main(dir), schema, nil)
			stageSchema(t, queue(dir), queueSchema[:0], nil)
		}, func(dir string) []line { return []line{{"migrated database", queue(dir), 0, len(queueSchema)}} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.stage(t, dir)
			logs := &testenv.LogBuffer{}
			db, err := Open(context.Background(), main(dir), WithLogger(slog.New(slog.NewJSONHandler(logs, nil))))
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			var got []line
			dec := json.NewDecoder(strings.NewReader(logs.String()))
			for dec.More() {
				var l line
				if err := dec.Decode(&l); err != nil {
					t.Fatal(err)
				}
				got = append(got, l)
			}
			if diff := cmp.Diff(tc.want(dir), got); diff != "" {
				t.Errorf("log lines (-want +got):\n%s", diff)
			}
		})
	}
}

// TestOpenCheckpointsItsMigration: Open checkpoints each database once its
// schema is migrated (the writer's checkpointer, the one place checkpoints
// run), so a database created or migrated has every page of its log copied
// into the database file, the migration fsynced there, when Open returns.
// The migration's commit waited in the log, not fsynced, for the first
// commit after Open, and that one's checkpoint only once the log held its
// 4,000 pages (1,000 for the queue).
func TestOpenCheckpointsItsMigration(t *testing.T) {
	main := func(dir string) string { return filepath.Join(dir, "ingest.db") }
	queue := func(dir string) string { return QueuePath(main(dir)) }
	for _, tc := range []struct {
		name  string
		stage func(t *testing.T, dir string) // leaves what an older build left
	}{
		{"new data directory", func(*testing.T, string) {}},
		{"main database of schema 10", func(t *testing.T, dir string) { stageSchema(t, main(dir), schema[:10], nil) }},
		{"hand-off queue of schema 0", func(t *testing.T, dir string) {
			stageSchema(t, main(dir), schema, nil)
			stageSchema(t, queue(dir), queueSchema[:0], nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.stage(t, dir)
			db, err := Open(context.Background(), main(dir))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := db.Close(); err != nil {
					t.Error(err)
				}
			})
			for _, w := range []struct {
				file string
				w    *writer
			}{{"ingest.db", db.w}, {"ingest-queue.db", db.qw}} {
				log, copied, err := w.w.ckpt.run("NOOP")
				if err != nil {
					t.Fatal(err)
				}
				if copied != log {
					t.Errorf("%s: Open left %d of its log's %d pages uncopied", w.file, log-copied, log)
				}
			}
		})
	}
}

// TestOpenFailsOnACheckpointsFailedFsync: a failed fsync at Open's
// checkpoint (either database's) fails Open at once, naming the database
// file and the failed fsync (ErrSyncFailed, and its cause), told once by
// SyncFailedLog; the failed database is left as Close leaves one (its log
// kept for the restart, not checkpointed by a close), and the next Open,
// the disk sound again, opens it. Open succeeded and every durable commit
// after it failed: a local mode started on it refused every C-STORE.
func TestOpenFailsOnACheckpointsFailedFsync(t *testing.T) {
	main := func(dir string) string { return filepath.Join(dir, "ingest.db") }
	eio := errors.New("input/output error")
	for _, tc := range []struct {
		name  string
		stage func(t *testing.T, dir string)
		fail  string // the database file whose checkpoint fails
	}{
		{"new data directory, ingest.db", func(*testing.T, string) {}, "ingest.db"},
		{"new data directory, ingest-queue.db", func(*testing.T, string) {}, "ingest-queue.db"},
		{"main database of schema 10", func(t *testing.T, dir string) { stageSchema(t, main(dir), schema[:10], nil) }, "ingest.db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.stage(t, dir)
			var logged bytes.Buffer
			failed := filepath.Join(dir, tc.fail)
			db, err := Open(context.Background(), main(dir), WithLogger(slog.New(slog.NewJSONHandler(&logged, nil))),
				WithCheckpointSync(func(file string) error {
					if file == failed {
						return eio
					}
					return nil
				}))
			if err == nil {
				t.Cleanup(func() { _ = db.Close() })
				t.Fatal("Open succeeded after its checkpoint's fsync failed")
			}
			if !errors.Is(err, ErrSyncFailed) || !errors.Is(err, eio) {
				t.Errorf("Open = %v, want ErrSyncFailed and its cause", err)
			}
			for _, want := range []string{"localstore: open " + failed + ": ", "checkpoint", "fsync failed"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Open = %q, want it to say %q", err, want)
				}
			}
			if n := strings.Count(err.Error(), "localstore: open "); n != 1 {
				t.Errorf("Open = %q names %d databases, want the one that failed", err, n)
			}
			toldOnce(t, &logged, tc.fail, "checkpoint")
			if fi, err := os.Stat(failed + "-wal"); err != nil || fi.Size() == 0 {
				t.Errorf("after the failed Open the log is %v (%v): a checkpoint at close, trusted, removed it", fi, err)
			}
			db, err = Open(context.Background(), main(dir))
			if err != nil {
				t.Fatalf("Open again, the disk sound: %v", err)
			}
			if err := db.Close(); err != nil {
				t.Error(err)
			}
		})
	}
}

// schema8Fixture holds the databases a build of schema 8 left
// (testdata/schema8/README.md says which build, and how to make them
// again).
const schema8Fixture = "testdata/schema8"

// TestUpgradeFromSchema8: the databases a build of schema 8 left
// (schema8Fixture: a study of three instances, one of them sent again with
// other bytes, its events and audit records) are what today's first 8
// migrations make, table for table and index for index; today's Open
// migrates the main database from 8, told once, and keeps everything the
// old build held: the study's instances and conflict, every audit record,
// every event, each listed as its study's and known as published, though
// published_events is emptied (migration 18). Migration from 8 was tried
// by hand only; the upgrade tests staged older schemas with today's own
// migrations, which cannot show a migration that differs from what an
// older build ran.
func TestUpgradeFromSchema8(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "ingest.db")
	for _, name := range []string{"ingest.db", "ingest-queue.db"} {
		gunzipFixture(t, filepath.Join(schema8Fixture, name+".gz"), filepath.Join(dir, name))
	}

	// What the old build left, read without migrating.
	type held struct {
		version               int
		schema                []string
		study                 string
		instances, sops       int
		audit, events, ledger []string
	}
	read := func(file string) held {
		t.Helper()
		sdb, err := openSQLite(file, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer sdb.Close()
		var h held
		strs := func(q string) []string { t.Helper(); return queryStrings(t, sdb, q) }
		if err := sdb.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&h.version); err != nil {
			t.Fatal(err)
		}
		h.schema = strs(`SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_schema ORDER BY type, name`)
		if h.version != 8 {
			return h
		}
		h.study = strings.Join(strs(`SELECT study_uid FROM studies`), ",")
		if err := sdb.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(DISTINCT sop_uid) FROM instances`).Scan(&h.instances, &h.sops); err != nil {
			t.Fatal(err)
		}
		h.audit = strs(`SELECT id FROM audit ORDER BY seq`)
		h.events = strs(`SELECT id FROM outbox ORDER BY seq`)
		h.ledger = strs(`SELECT id FROM published_events ORDER BY id`)
		return h
	}
	old := read(path)
	if old.version != 8 {
		t.Fatalf("%s holds a database of schema %d, not the older build's 8", schema8Fixture, old.version)
	}
	if old.study == "" || strings.Contains(old.study, ",") || old.instances != 4 || old.sops != 3 || len(old.audit) == 0 || len(old.events) == 0 || len(old.ledger) == 0 {
		t.Fatalf("the fixture holds %+v, want one study of 3 instances, 4 contents, audit records and published events", old)
	}
	// Today's first 8 migrations make what the old build's made.
	staged := filepath.Join(t.TempDir(), "staged.db")
	stageSchema(t, staged, schema[:8], nil)
	if diff := cmp.Diff(read(staged).schema, old.schema); diff != "" {
		t.Errorf("schema 8 of today's migrations (-) and of the build of schema 8 (+):\n%s", diff)
	}

	logs := &testenv.LogBuffer{}
	db, err := Open(ctx, path, WithLogger(slog.New(slog.NewJSONHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	want := fmt.Sprintf(`"msg":"migrated database","file":%q,"from":8,"to":%d`, path, len(schema))
	if got := strings.Count(logs.String(), `"msg":"migrated database"`); got != 1 || !strings.Contains(logs.String(), want) {
		t.Errorf("Open told %d migrations, want the main database's from 8 (the queue's schema is today's):\n%s", got, logs.String())
	}

	d, err := db.IndexStore().GetStudy(ctx, old.study)
	if err != nil {
		t.Fatal(err)
	}
	if d.InstanceCount != old.sops || d.ConflictCount != old.instances-old.sops || len(d.Instances) != old.instances {
		t.Errorf("the study after the upgrade: %d instances, %d conflicts, %d records; want %d, %d, %d",
			d.InstanceCount, d.ConflictCount, len(d.Instances), old.sops, old.instances-old.sops, old.instances)
	}
	if diff := cmp.Diff(old.audit, queryStrings(t, db.read, `SELECT id FROM audit ORDER BY seq`)); diff != "" {
		t.Errorf("audit records (-old build +after the upgrade):\n%s", diff)
	}
	page, err := db.Events(ctx, EventFilter{Study: old.study, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, e := range page.Events {
		events = append(events, e.ID)
	}
	slices.Reverse(events) // newest first
	if diff := cmp.Diff(old.events, events); diff != "" {
		t.Errorf("the study's events (-old build's outbox +after the upgrade):\n%s", diff)
	}
	for _, id := range old.ledger {
		if ok, err := db.IndexStore().EventPublished(ctx, id); err != nil || !ok {
			t.Errorf("event %s published by the old build: published %v (%v) after the upgrade", id, ok, err)
		}
	}
	if db.OutboxID() == "" {
		t.Error("no outbox identity after the upgrade")
	}
}

// gunzipFixture writes the gzipped fixture at src to dst.
func gunzipFixture(t *testing.T, src, dst string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	w, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, zr); err != nil {
		t.Fatal(errors.Join(fmt.Errorf("%s: %w", src, err), w.Close()))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
