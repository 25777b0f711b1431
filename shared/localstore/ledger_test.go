package localstore

import (
	"context"
	"database/sql"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// TestPublishLedgerIsTheOutbox: an event the outbox holds is published
// (the outbox, never pruned, is the ledger), so marking it writes no row of
// published_events, which then grows only with ids marked published
// without an event; a database of an older build keeps, of its
// published_events rows, only those, and every id it had stays published.
func TestPublishLedgerIsTheOutbox(t *testing.T) {
	ctx := context.Background()
	publish := func(t *testing.T, db *DB, id string) {
		t.Helper()
		if _, err := db.Outbox(nil).Publish(ctx, []pipeline.Event{{ID: id, DetailType: pipeline.DetailTypeInstanceStored, Time: t0, Detail: []byte(`{}`)}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		open func(t *testing.T) *DB
		// act publishes or marks events on db
		act      func(t *testing.T, db *DB)
		wantRows []string // published_events' ids after act
		want     []string // ids EventPublished reports
	}{
		{"an event published, then marked", openTest, func(t *testing.T, db *DB) {
			publish(t, db, "e1")
			for range 2 {
				if err := db.IndexStore().MarkEventPublished(ctx, "e1", t0); err != nil {
					t.Fatal(err)
				}
			}
		}, nil, []string{"e1"}},
		{"an id marked without its event", openTest, func(t *testing.T, db *DB) {
			if err := db.IndexStore().MarkEventPublished(ctx, "e2", t0); err != nil {
				t.Fatal(err)
			}
		}, []string{"e2"}, []string{"e2"}},
		{"an event published without its mark (a crash in between)", openTest, func(t *testing.T, db *DB) {
			publish(t, db, "e3")
		}, nil, []string{"e3"}},
		{"a database of schema 17", func(t *testing.T) *DB {
			return openOlderDatabase(t, 17, func(sdb *sql.DB) error {
				_, err := sdb.Exec(`INSERT INTO outbox(id, time, source, detail_type, detail) VALUES ('old1', 1, 's', 'Instance Stored', '{}');
					INSERT INTO published_events(id, time) VALUES ('old1', 1), ('old2', 1)`)
				return err
			})
		}, func(*testing.T, *DB) {}, []string{"old2"}, []string{"old1", "old2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := tc.open(t)
			tc.act(t, db)
			var rows []string
			r, err := db.SQL().QueryContext(ctx, `SELECT id FROM published_events ORDER BY id`)
			if err != nil {
				t.Fatal(err)
			}
			for r.Next() {
				var id string
				if err := r.Scan(&id); err != nil {
					t.Fatal(err)
				}
				rows = append(rows, id)
			}
			if err := r.Err(); err != nil {
				t.Fatal(err)
			}
			r.Close()
			if diff := cmp.Diff(tc.wantRows, rows); diff != "" {
				t.Errorf("published_events (-want +got):\n%s", diff)
			}
			for _, id := range append(tc.want, "unknown") {
				ok, err := db.IndexStore().EventPublished(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if want := id != "unknown"; ok != want {
					t.Errorf("EventPublished(%s) = %v, want %v", id, ok, want)
				}
			}
		})
	}
}
