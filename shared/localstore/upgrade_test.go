package localstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
