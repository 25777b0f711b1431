package localstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
)

// AuditFeed is the audit feed's outbox in local mode: the audit table
// itself, read in the order records were appended (seq, which commits in
// order: every write transaction takes the lock up front), with the seq of
// the last delivered record in audit_feed. Nothing is written twice, and a
// record is pending exactly when its transaction committed.
type AuditFeed struct{ db *DB }

var _ auditfeed.Outbox = (*AuditFeed)(nil)

// AuditFeed returns the feed's outbox. The first time, the feed starts at
// the end of the audit trail: it delivers what is appended from then on,
// not the history from before it was configured.
func (db *DB) AuditFeed(ctx context.Context) (*AuditFeed, error) {
	err := db.write(ctx, func(tx *querier) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO audit_feed(id, delivered_seq) SELECT 1, COALESCE(MAX(seq), 0) FROM audit WHERE true
			 ON CONFLICT(id) DO NOTHING`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("localstore: audit feed: %w", err)
	}
	return &AuditFeed{db: db}, nil
}

const feedCursor = `(SELECT delivered_seq FROM audit_feed WHERE id = 1)`

// Pending implements auditfeed.Outbox; keys are audit seq numbers. It
// lists only records whose commit is durable (see DB.Sync): one a power
// loss could still undo must not have reached the collector.
func (f *AuditFeed) Pending(ctx context.Context, limit int) ([]auditfeed.Entry, error) {
	var through sql.NullInt64
	if err := f.db.read.QueryRowContext(ctx, `SELECT MAX(seq) FROM audit`).Scan(&through); err != nil {
		return nil, fmt.Errorf("localstore: audit feed pending: %w", err)
	}
	if !through.Valid {
		return nil, nil
	}
	if err := f.db.Sync(ctx); err != nil {
		return nil, err
	}
	rows, err := f.db.read.QueryContext(ctx, `SELECT seq, record FROM audit WHERE seq > `+feedCursor+` AND seq <= ? ORDER BY seq LIMIT ?`, through.Int64, limit)
	if err != nil {
		return nil, fmt.Errorf("localstore: audit feed pending: %w", err)
	}
	defer rows.Close()
	var out []auditfeed.Entry
	for rows.Next() {
		var seq int64
		var body string
		if err := rows.Scan(&seq, &body); err != nil {
			return nil, fmt.Errorf("localstore: audit feed pending: %w", err)
		}
		e := auditfeed.Entry{Key: strconv.FormatInt(seq, 10)}
		if err := json.Unmarshal([]byte(body), &e.Record); err != nil {
			e.Err = fmt.Errorf("localstore: audit record %d: %w", seq, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("localstore: audit feed pending: %w", err)
	}
	return out, nil
}

// Delivered implements auditfeed.Outbox: the cursor moves to the last entry.
func (f *AuditFeed) Delivered(ctx context.Context, entries []auditfeed.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	seq, err := strconv.ParseInt(entries[len(entries)-1].Key, 10, 64)
	if err != nil {
		return fmt.Errorf("localstore: audit feed: entry key %q is not a seq", entries[len(entries)-1].Key)
	}
	return binding{db: f.db}.write(ctx, func(tx *querier) error {
		if _, err := tx.ExecContext(ctx, `UPDATE audit_feed SET delivered_seq = MAX(delivered_seq, ?) WHERE id = 1`, seq); err != nil {
			return fmt.Errorf("localstore: audit feed delivered: %w", err)
		}
		return nil
	})
}

// Backlog implements auditfeed.Outbox. Oldest is the event time of the
// oldest undelivered record.
func (f *AuditFeed) Backlog(ctx context.Context) (auditfeed.Backlog, error) {
	var n int
	var oldest sql.NullInt64
	err := f.db.read.QueryRowContext(ctx, `SELECT COUNT(*), MIN(time) FROM audit WHERE seq > `+feedCursor).Scan(&n, &oldest)
	if err != nil {
		return auditfeed.Backlog{}, fmt.Errorf("localstore: audit feed backlog: %w", err)
	}
	b := auditfeed.Backlog{Count: n}
	if oldest.Valid {
		b.Oldest = time.Unix(0, oldest.Int64).UTC()
	}
	return b, nil
}
