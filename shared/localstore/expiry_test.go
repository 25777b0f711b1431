package localstore

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestExpiredRecords: the expiry lists the keys done past its watermark,
// passes a key parked as failed (its file kept), and stops before a key
// still to be processed, pending a retry or queued, so that the watermark
// never passes a file the pipeline has yet to read.
func TestExpiredRecords(t *testing.T) {
	ctx := context.Background()
	const prefix, before = "audit/", "audit/2026/11/20/"
	done := func(t *testing.T, db *DB, key string) {
		t.Helper()
		if err := db.write(ctx, func(tx *querier) error { return db.Handoff().markDone(ctx, tx, key, t0, &Handed{Key: key, At: t0}) }); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name        string
		stage       func(t *testing.T, db *DB)
		wantDone    []string
		wantThrough string
	}{
		{"done keys, before the cutoff only", func(t *testing.T, db *DB) {
			done(t, db, "audit/2026/11/01/a.json")
			done(t, db, "audit/2026/11/02/b.json")
			done(t, db, "audit/2026/11/20/c.json")
		}, []string{"audit/2026/11/01/a.json", "audit/2026/11/02/b.json"}, "audit/2026/11/02/b.json"},
		{"a failed key is passed", func(t *testing.T, db *DB) {
			done(t, db, "audit/2026/11/01/a.json")
			if err := db.Handoff().Fail(ctx, "audit/2026/11/02/b.json", errors.New("x"), 1); err != nil {
				t.Fatal(err)
			}
			done(t, db, "audit/2026/11/03/c.json")
		}, []string{"audit/2026/11/01/a.json", "audit/2026/11/03/c.json"}, "audit/2026/11/03/c.json"},
		{"a key pending a retry stops it", func(t *testing.T, db *DB) {
			done(t, db, "audit/2026/11/01/a.json")
			if err := db.Handoff().Fail(ctx, "audit/2026/11/02/b.json", errors.New("x"), 5); err != nil {
				t.Fatal(err)
			}
			done(t, db, "audit/2026/11/03/c.json")
		}, []string{"audit/2026/11/01/a.json"}, "audit/2026/11/01/a.json"},
		{"a queued key stops it", func(t *testing.T, db *DB) {
			done(t, db, "audit/2026/11/01/a.json")
			if _, err := db.Handoff().Enqueue(ctx, "audit/2026/11/02/b.json", t0, nil); err != nil {
				t.Fatal(err)
			}
			done(t, db, "audit/2026/11/03/c.json")
		}, []string{"audit/2026/11/01/a.json"}, "audit/2026/11/01/a.json"},
		{"past the watermark only", func(t *testing.T, db *DB) {
			done(t, db, "audit/2026/11/01/a.json")
			done(t, db, "audit/2026/11/02/b.json")
			if err := db.Handoff().ExpiredThrough(ctx, "audit/2026/11/01/a.json"); err != nil {
				t.Fatal(err)
			}
		}, []string{"audit/2026/11/02/b.json"}, "audit/2026/11/02/b.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openTest(t)
			tc.stage(t, db)
			got, through, err := db.Handoff().ExpiredRecords(ctx, prefix, before, 10)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.wantDone, got); diff != "" || through != tc.wantThrough {
				t.Errorf("ExpiredRecords = %q through %q, want %q through %q", got, through, tc.wantDone, tc.wantThrough)
			}
		})
	}
}
