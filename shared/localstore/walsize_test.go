package localstore

import (
	"context"
	"database/sql"
	"testing"
)

// TestJournalSizeLimit reads journal_size_limit back from every database
// Open opens, on several connections of each (a pragma of the DSN is each
// connection's own), so that a log a burst grew is cut back after its next
// checkpoint instead of keeping its size on disk.
func TestJournalSizeLimit(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		sdb  *sql.DB
		want int64
	}{
		{"ingest.db", db.sql, MainWALLimit},
		{"ingest-queue.db", db.q, QueueWALLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Hold connections open at once, so each read is another's.
			var conns []*sql.Conn
			defer func() {
				for _, c := range conns {
					if err := c.Close(); err != nil {
						t.Error(err)
					}
				}
			}()
			for range 3 {
				c, err := tc.sdb.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
				var got int64
				if err := c.QueryRowContext(ctx, `PRAGMA journal_size_limit`).Scan(&got); err != nil {
					t.Fatal(err)
				}
				if got != tc.want {
					t.Errorf("journal_size_limit = %d, want %d", got, tc.want)
				}
			}
		})
	}
}
