package localstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Handoff is the durable queue between the object store and the pipeline.
// A key is enqueued after the store made the object durable; it leaves the
// queue (state done) in the same transaction as the pipeline's index and
// audit writes, so a crash at any point either leaves it pending (processed
// again from scratch after restart, nothing of it committed) or done
// (committed once, never processed again).
type Handoff struct{ db *DB }

// Handoff returns the hand-off queue.
func (db *DB) Handoff() *Handoff { return &Handoff{db: db} }

// enqueueSQL adds a pending key unless the key is known.
const enqueueSQL = `INSERT INTO handoff(key, enqueued_at, state, metadata) VALUES (?, ?, 'pending', ?) ON CONFLICT(key) DO NOTHING`

// Enqueue records key as pending unless it is already known (pending, done
// or failed): enqueueing is idempotent. metadata is what the store knew
// about the object (the SCP's transaction details); it may be nil.
func (h *Handoff) Enqueue(ctx context.Context, key string, at time.Time, metadata map[string]string) (bool, error) {
	md, err := json.Marshal(metadata)
	if err != nil || metadata == nil {
		md = []byte("{}")
	}
	res, err := h.db.sql.ExecContext(ctx, enqueueSQL, key, unixNano(at), string(md))
	if err != nil {
		return false, fmt.Errorf("localstore: enqueue: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("localstore: enqueue: %w", err)
	}
	return n == 1, nil
}

// EnqueueMissing enqueues, in one transaction, those of keys not already
// known, without metadata, and returns how many it added. It is what a
// start-up reconciliation needs: one commit for a whole store's listing
// instead of one per key.
func (h *Handoff) EnqueueMissing(ctx context.Context, keys []string, at time.Time) (added int, err error) {
	tx, err := h.db.sql.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("localstore: enqueue missing: begin: %w", err)
	}
	defer func() {
		if err != nil {
			if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
				err = fmt.Errorf("%w (rollback: %v)", err, rerr)
			}
		}
	}()
	stmt, err := tx.PrepareContext(ctx, enqueueSQL)
	if err != nil {
		return 0, fmt.Errorf("localstore: enqueue missing: %w", err)
	}
	defer stmt.Close()
	// Errors say which of the keys failed by its position, not the key:
	// keys hold UIDs, and errors reach logs.
	for i, k := range keys {
		res, err := stmt.ExecContext(ctx, k, unixNano(at), "{}")
		if err != nil {
			return 0, fmt.Errorf("localstore: enqueue missing key %d of %d: %w", i+1, len(keys), err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, fmt.Errorf("localstore: enqueue missing key %d of %d: %w", i+1, len(keys), err)
		}
		added += int(n)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("localstore: enqueue missing: commit: %w", err)
	}
	return added, nil
}

// Pending lists up to limit pending keys, oldest first.
func (h *Handoff) Pending(ctx context.Context, limit int) ([]string, error) {
	rows, err := h.db.sql.QueryContext(ctx,
		`SELECT key FROM handoff WHERE state = 'pending' ORDER BY enqueued_at, key LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("localstore: pending: %w", err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("localstore: pending: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("localstore: pending: %w", err)
	}
	return keys, nil
}

// Known reports whether key has ever been enqueued.
func (h *Handoff) Known(ctx context.Context, key string) (bool, error) {
	var one int
	err := h.db.sql.QueryRowContext(ctx, `SELECT 1 FROM handoff WHERE key = ?`, key).Scan(&one)
	if err == sql.ErrNoRows {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("localstore: handoff lookup: %w", err)
	}
	return true, nil
}

// State returns the state of key and how many attempts were made, or "" when
// key is unknown.
func (h *Handoff) State(ctx context.Context, key string) (state string, attempts int, err error) {
	err = h.db.sql.QueryRowContext(ctx, `SELECT state, attempts FROM handoff WHERE key = ?`, key).Scan(&state, &attempts)
	if err == sql.ErrNoRows {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("localstore: handoff state: %w", err)
	}
	return state, attempts, nil
}

// Metadata returns the metadata recorded with key (empty when key is
// unknown or was enqueued without any).
func (h *Handoff) Metadata(ctx context.Context, key string) (map[string]string, error) {
	var md string
	err := h.db.sql.QueryRowContext(ctx, `SELECT metadata FROM handoff WHERE key = ?`, key).Scan(&md)
	if err == sql.ErrNoRows {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("localstore: handoff metadata: %w", err)
	}
	out := map[string]string{}
	if err := json.Unmarshal([]byte(md), &out); err != nil {
		return nil, fmt.Errorf("localstore: handoff metadata: %w", err)
	}
	return out, nil
}

// markDone completes key inside tx. It fails when key is not pending, so a
// second processing of the same key can never commit.
func markDone(ctx context.Context, tx *sql.Tx, key string, at time.Time) error {
	res, err := tx.ExecContext(ctx,
		`UPDATE handoff SET state = 'done', done_at = ?, attempts = attempts + 1 WHERE key = ? AND state = 'pending'`,
		unixNano(at), key)
	if err != nil {
		return fmt.Errorf("localstore: mark done: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("localstore: mark done: %w", ErrNotPending) // the caller names the object
	}
	return nil
}

// Fail records a failed attempt; after maxAttempts the key is parked as
// failed (visible in the portal) instead of being retried forever.
func (h *Handoff) Fail(ctx context.Context, key string, cause error, maxAttempts int) error {
	msg := cause.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	_, err := h.db.sql.ExecContext(ctx,
		`UPDATE handoff SET attempts = attempts + 1, last_error = ?,
		 state = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE state END
		 WHERE key = ? AND state = 'pending'`, msg, maxAttempts, key)
	if err != nil {
		return fmt.Errorf("localstore: mark failed: %w", err)
	}
	return nil
}

// Counts returns how many keys are in each state.
func (h *Handoff) Counts(ctx context.Context) (map[string]int, error) {
	rows, err := h.db.sql.QueryContext(ctx, `SELECT state, COUNT(*) FROM handoff GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("localstore: handoff counts: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return nil, fmt.Errorf("localstore: handoff counts: %w", err)
		}
		out[s] = n
	}
	return out, rows.Err()
}
