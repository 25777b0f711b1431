package localstore

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
			sdb, err := openSQLite(tc.file(dir))
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
