package localstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ExpiredRecords lists, in key order, up to limit keys under prefix and
// before before whose files may go: the keys the ledger has as done past
// the expiry's watermark (ExpiredThrough). through is the last key the
// list got to, the watermark to record once their files are gone; "" when
// there is nothing to expire. A key still to be processed, queued or
// pending a retry, stops the list before it, so that the watermark never
// passes a key whose file the pipeline has yet to read; one parked as
// failed is passed and its file kept. The ledger's rows stay: a key done
// is never handed off again, its file expired or not.
func (h *Handoff) ExpiredRecords(ctx context.Context, prefix, before string, limit int) (done []string, through string, err error) {
	from := prefix
	err = h.db.read.QueryRowContext(ctx, `SELECT through_key FROM record_expiry WHERE id = 1`).Scan(&from)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, "", fmt.Errorf("localstore: record expiry: %w", err)
	}
	if before, err = h.firstUnprocessed(ctx, from, before); err != nil {
		return nil, "", err
	}
	rows, err := h.db.read.QueryContext(ctx, `SELECT key, state FROM handoff WHERE key > ? AND key < ? ORDER BY key LIMIT ?`, from, before, limit)
	if err != nil {
		return nil, "", fmt.Errorf("localstore: record expiry: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var key, state string
		if err := rows.Scan(&key, &state); err != nil {
			return nil, "", fmt.Errorf("localstore: record expiry: %w", err)
		}
		if state == "pending" {
			break
		}
		if state == "done" {
			done = append(done, key)
		}
		through = key
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("localstore: record expiry: %w", err)
	}
	return done, through, nil
}

// ExpiredThrough records that the files of the keys ExpiredRecords listed
// up to through are gone. The watermark only moves forward; should a
// crash lose it, the keys are listed again and their removal repeated,
// which finds nothing to remove.
func (h *Handoff) ExpiredThrough(ctx context.Context, through string) error {
	err := h.db.write(ctx, func(tx *querier) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO record_expiry(id, through_key) VALUES (1, ?)
			ON CONFLICT(id) DO UPDATE SET through_key = excluded.through_key WHERE excluded.through_key > through_key`, through)
		return err
	})
	if err != nil {
		return fmt.Errorf("localstore: record expiry: %w", err)
	}
	return nil
}

// firstUnprocessed returns the first key queued after from and before
// before that the ledger does not have as done or failed (a row the reaper
// has yet to remove does not count), or before when there is none.
func (h *Handoff) firstUnprocessed(ctx context.Context, from, before string) (string, error) {
	rows, err := h.db.qread.QueryContext(ctx, `SELECT key FROM queue WHERE key > ? AND key < ? ORDER BY key`, from, before)
	if err != nil {
		return "", fmt.Errorf("localstore: record expiry: %w", err)
	}
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return "", fmt.Errorf("localstore: record expiry: %w", err)
		}
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("localstore: record expiry: %w", err)
	}
	for _, k := range keys {
		state, _, err := h.ledgerState(ctx, k)
		if err != nil {
			return "", err
		}
		if state != "done" && state != "failed" {
			return k, nil
		}
	}
	return before, nil
}
