package localstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// queueSchema is the hand-off queue's: one row per key stored and not yet
// processed, with what the SCP knew about its transfer.
var queueSchema = []string{
	// No index on enqueued_at: the queue is read in order only at start,
	// and each index is one more page in every commit of the SCP's.
	`CREATE TABLE queue (
		key         TEXT PRIMARY KEY,
		enqueued_at INTEGER NOT NULL,
		metadata    TEXT NOT NULL DEFAULT '{}'
	);`,
}

// Handoff is the durable hand-off between the object store and the
// pipeline, in two parts.
//
// The queue (its own database file, see QueuePath) holds keys stored and
// not yet processed whose hand-off is not kept elsewhere: local mode keeps
// most in its file store's journal and marks them done with
// Tx.MarkHandedDone, and queues the others (large objects, association
// records, keys waiting long) before the object takes its key. A commit of
// the queue is a row or two, shared by every association storing at the
// time, and never waits for one of the pipeline's, which carry its index,
// audit and event rows.
//
// The ledger (the handoff table of the main database) holds the keys
// processed (done), parked after repeated failures (failed) or failed
// before (pending, with attempts). A key becomes done in the same
// transaction as the pipeline's writes for it, so a crash leaves it either
// not done (processed again from scratch after restart, nothing of it
// committed) or done (committed once, never processed again); its queue
// row goes afterwards, and a row left by a crash in between is pruned at
// start. So recovery after a crash reads the queue, what might be
// unprocessed, and never a listing of everything stored.
type Handoff struct{ db *DB }

// Handoff returns the hand-off queue and ledger.
func (db *DB) Handoff() *Handoff { return &Handoff{db: db} }

const enqueueSQL = `INSERT INTO queue(key, enqueued_at, metadata) VALUES (?, ?, ?) ON CONFLICT(key) DO NOTHING`

// Handed is a key handed off with what the SCP knew of its transfer.
type Handed struct {
	Key      string
	At       time.Time         // when it was handed off
	Metadata map[string]string // may be nil
	// MetadataJSON is Metadata encoded as JSON, when the caller has it
	// already; then it is written as it is.
	MetadataJSON []byte
}

// metadataJSON returns h's metadata as the JSON the tables keep.
func (h Handed) metadataJSON() string {
	if len(h.MetadataJSON) > 0 {
		return string(h.MetadataJSON)
	}
	b, err := json.Marshal(h.Metadata)
	if err != nil || h.Metadata == nil {
		return "{}"
	}
	return string(b)
}

// SyncFailed is the database's SyncFailed: once it is set, no Enqueue
// succeeds until the process is restarted.
func (h *Handoff) SyncFailed() error { return h.db.SyncFailed() }

// Enqueue queues key unless it is queued already or the ledger knows it as
// done or failed: enqueueing is idempotent. metadata is what the store
// knew about the object (the SCP's transaction details); it may be nil. It
// returns once the row is committed, reporting whether it was added.
func (h *Handoff) Enqueue(ctx context.Context, key string, at time.Time, metadata map[string]string) (bool, error) {
	n, err := h.EnqueueAll(ctx, []Handed{{Key: key, At: at, Metadata: metadata}})
	return n == 1, err
}

// EnqueueAll is Enqueue for several keys in one commit; it returns how
// many it added.
func (h *Handoff) EnqueueAll(ctx context.Context, keys []Handed) (int, error) {
	type row struct {
		key, md string
		at      int64
	}
	var rows []row
	for _, k := range keys {
		state, _, err := h.ledgerState(ctx, k.Key)
		if err != nil {
			return 0, err
		}
		if state == "done" || state == "failed" {
			continue
		}
		rows = append(rows, row{k.Key, k.metadataJSON(), unixNano(k.At)})
	}
	if len(rows) == 0 {
		return 0, nil
	}
	var added int
	err := h.db.qw.run(ctx, func(tx *querier) error {
		added = 0
		// Errors say which of the keys failed by its position, not the
		// key: keys hold UIDs, and errors reach logs.
		for i, r := range rows {
			res, err := tx.ExecContext(ctx, enqueueSQL, r.key, r.at, r.md)
			if err != nil {
				return fmt.Errorf("key %d of %d: %w", i+1, len(rows), err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("key %d of %d: %w", i+1, len(rows), err)
			}
			added += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("localstore: enqueue: %w", err)
	}
	return added, nil
}

// EnqueueMissing queues, in one unit, those of keys neither queued nor in
// the ledger, without metadata, and returns how many it added. It is what
// a reconciliation against a store's listing needs.
func (h *Handoff) EnqueueMissing(ctx context.Context, keys []string, at time.Time) (int, error) {
	handed := make([]Handed, len(keys))
	for i, k := range keys {
		handed[i] = Handed{Key: k, At: at}
	}
	return h.EnqueueAll(ctx, handed)
}

// adoptLegacyPending queues the keys a build from before the separate
// queue left pending in the ledger (their rows stay, with their attempts).
func (h *Handoff) adoptLegacyPending(ctx context.Context) error {
	rows, err := h.db.read.QueryContext(ctx, `SELECT key, enqueued_at, metadata FROM handoff WHERE state = 'pending'`)
	if err != nil {
		return fmt.Errorf("localstore: adopt pending keys: %w", err)
	}
	type row struct {
		key, md string
		at      int64
	}
	var legacy []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.key, &r.at, &r.md); err != nil {
			rows.Close()
			return fmt.Errorf("localstore: adopt pending keys: %w", err)
		}
		legacy = append(legacy, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("localstore: adopt pending keys: %w", err)
	}
	if len(legacy) == 0 {
		return nil
	}
	err = h.db.qw.run(ctx, func(tx *querier) error {
		for _, r := range legacy {
			if _, err := tx.ExecContext(ctx, enqueueSQL, r.key, r.at, r.md); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("localstore: adopt pending keys: %w", err)
	}
	return nil
}

// Prune removes from the queue the keys the ledger has as done or failed
// (a crash came between the commit that completed them and their queue
// row's removal) and returns how many it removed.
func (h *Handoff) Prune(ctx context.Context) (int, error) {
	keys, err := h.queuedKeys(ctx, -1)
	if err != nil {
		return 0, err
	}
	var gone []string
	for _, k := range keys {
		state, _, err := h.ledgerState(ctx, k)
		if err != nil {
			return 0, err
		}
		if state == "done" || state == "failed" {
			gone = append(gone, k)
		}
	}
	if len(gone) == 0 {
		return 0, nil
	}
	// What this process read may not be on disk yet after a crash of the
	// process alone.
	if err := h.db.Sync(ctx); err != nil {
		return 0, err
	}
	if err := h.Forget(ctx, gone); err != nil {
		return 0, err
	}
	return len(gone), nil
}

// Forget removes keys from the queue: done ones, and at start those whose
// object never took its key.
func (h *Handoff) Forget(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	err := h.db.qw.run(ctx, func(tx *querier) error {
		for _, k := range keys {
			if _, err := tx.ExecContext(ctx, `DELETE FROM queue WHERE key = ?`, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("localstore: dequeue: %w", err)
	}
	return nil
}

// reapEvery is how often completed keys leave the queue. Their removal
// needs no commit of its own: a row a crash leaves behind is pruned at
// start, so removals wait and share the queue's commits.
const reapEvery = 100 * time.Millisecond

// forgetSoon removes keys from the queue within reapEvery, once the
// commits that completed them are durable, and then calls after.
func (h *Handoff) forgetSoon(keys []string, after []func()) {
	if len(keys) == 0 && len(after) == 0 {
		return
	}
	h.db.reapMu.Lock()
	defer h.db.reapMu.Unlock()
	h.db.reap = append(h.db.reap, keys...)
	h.db.reapAfter = append(h.db.reapAfter, after...)
}

// reaper removes completed keys from the queue until stop is closed, and
// once more then.
func (db *DB) reaper(stop <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	t := time.NewTicker(reapEvery)
	defer t.Stop()
	for {
		var last bool
		select {
		case <-t.C:
		case <-stop:
			last = true
		}
		db.reapMu.Lock()
		keys, after := db.reap, db.reapAfter
		db.reapMu.Unlock()
		if len(keys) == 0 && len(after) == 0 && !last {
			continue
		}
		// The commits that completed keys must be durable before their
		// rows leave the queue.
		err := db.Sync(context.Background())
		if err == nil && len(keys) > 0 {
			err = db.Handoff().Forget(context.Background(), keys)
		}
		db.reapMu.Lock()
		if err == nil {
			// Keys added meanwhile stay for the next round.
			db.reap, db.reapAfter = db.reap[len(keys):], db.reapAfter[len(after):]
		}
		db.reapMu.Unlock()
		if err == nil {
			for _, fn := range after {
				fn()
			}
		}
		// On an error the keys stay for the next round; what the last
		// round leaves, Prune removes at the next start.
		if last {
			return
		}
	}
}

// reaping returns the keys completed but still in the queue.
func (h *Handoff) reaping() map[string]bool {
	h.db.reapMu.Lock()
	defer h.db.reapMu.Unlock()
	out := make(map[string]bool, len(h.db.reap))
	for _, k := range h.db.reap {
		out[k] = true
	}
	return out
}

// Pending lists up to limit queued keys not yet completed, oldest first;
// a negative limit lists them all.
func (h *Handoff) Pending(ctx context.Context, limit int) ([]string, error) {
	reaping := h.reaping()
	keys, err := h.queuedKeys(ctx, -1)
	if err != nil {
		return nil, err
	}
	out := keys[:0]
	for _, k := range keys {
		if !reaping[k] && (limit < 0 || len(out) < limit) {
			out = append(out, k)
		}
	}
	return out, nil
}

// queuedKeys lists up to limit keys of the queue, oldest first.
func (h *Handoff) queuedKeys(ctx context.Context, limit int) ([]string, error) {
	rows, err := h.db.qread.QueryContext(ctx, `SELECT key FROM queue ORDER BY enqueued_at, key LIMIT ?`, limit)
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

// queued returns key's queue row.
func (h *Handoff) queued(ctx context.Context, key string) (ok bool, at int64, md string, err error) {
	err = h.db.qread.QueryRowContext(ctx, `SELECT enqueued_at, metadata FROM queue WHERE key = ?`, key).Scan(&at, &md)
	if errors.Is(err, sql.ErrNoRows) {
		return false, 0, "", nil
	}
	if err != nil {
		return false, 0, "", fmt.Errorf("localstore: queue lookup: %w", err)
	}
	return true, at, md, nil
}

// ledgerState returns key's ledger state and attempts, "" when the ledger
// has no row for it.
func (h *Handoff) ledgerState(ctx context.Context, key string) (state string, attempts int, err error) {
	err = h.db.read.QueryRowContext(ctx, `SELECT state, attempts FROM handoff WHERE key = ?`, key).Scan(&state, &attempts)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, fmt.Errorf("localstore: handoff state: %w", err)
	}
	return state, attempts, nil
}

// Known reports whether key has ever been enqueued.
func (h *Handoff) Known(ctx context.Context, key string) (bool, error) {
	state, _, err := h.State(ctx, key)
	return state != "", err
}

// Ledger returns key's state in the ledger (done or failed) and its
// attempts, or "" when the ledger has no row for it: State without the
// queue's lookup, for a key its caller knows is not queued.
func (h *Handoff) Ledger(ctx context.Context, key string) (state string, attempts int, err error) {
	return h.ledgerState(ctx, key)
}

// State returns the state of key (pending, done or failed) and how many
// attempts were made, or "" when key is unknown.
func (h *Handoff) State(ctx context.Context, key string) (state string, attempts int, err error) {
	state, attempts, err = h.ledgerState(ctx, key)
	if err != nil || state != "" {
		return state, attempts, err
	}
	ok, _, _, err := h.queued(ctx, key)
	if err != nil || !ok {
		return "", 0, err
	}
	return "pending", 0, nil
}

// Metadata returns the metadata recorded with key (empty when key is
// unknown or was enqueued without any).
func (h *Handoff) Metadata(ctx context.Context, key string) (map[string]string, error) {
	ok, _, md, err := h.queued(ctx, key)
	if err != nil {
		return nil, err
	}
	if !ok {
		err := h.db.read.QueryRowContext(ctx, `SELECT metadata FROM handoff WHERE key = ?`, key).Scan(&md)
		if errors.Is(err, sql.ErrNoRows) {
			return map[string]string{}, nil
		}
		if err != nil {
			return nil, fmt.Errorf("localstore: handoff metadata: %w", err)
		}
	}
	out := map[string]string{}
	if err := json.Unmarshal([]byte(md), &out); err != nil {
		return nil, fmt.Errorf("localstore: handoff metadata: %w", err)
	}
	return out, nil
}

// ledgerSQL writes a ledger row for a key that has none, or changes one
// still pending; a key done or failed is left alone (zero rows changed).
const ledgerSQL = `INSERT INTO handoff(key, enqueued_at, state, attempts, last_error, done_at, metadata)
	VALUES (?, ?, ?, 1, ?, ?, ?)
	ON CONFLICT(key) DO UPDATE SET state = excluded.state, attempts = attempts + 1,
		last_error = CASE WHEN excluded.last_error = '' THEN last_error ELSE excluded.last_error END,
		done_at = excluded.done_at
	WHERE handoff.state = 'pending'`

// markDone completes key inside tx, keeping its queue metadata in the
// ledger. It fails when key is done or failed already, so a second
// processing of the same key can never commit.
func (h *Handoff) markDone(ctx context.Context, tx *querier, key string, at time.Time, handed *Handed) error {
	var qat int64
	var md string
	if handed != nil {
		md, qat = handed.metadataJSON(), unixNano(handed.At)
	} else {
		var err error
		if _, qat, md, err = h.queued(ctx, key); err != nil {
			return err
		}
		if md == "" {
			md, qat = "{}", unixNano(at)
		}
	}
	res, err := tx.ExecContext(ctx, ledgerSQL, key, qat, "done", "", unixNano(at), md)
	if err != nil {
		return fmt.Errorf("localstore: mark done: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("localstore: mark done: %w", ErrNotPending) // the caller names the object
	}
	return nil
}

// Fail records a failed attempt; after maxAttempts the key is parked as
// failed (visible in the portal, out of the queue) instead of being
// retried forever.
func (h *Handoff) Fail(ctx context.Context, key string, cause error, maxAttempts int) error {
	msg := cause.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	_, qat, md, err := h.queued(ctx, key)
	if err != nil {
		return err
	}
	if md == "" {
		md, qat = "{}", unixNano(time.Now())
	}
	var parked bool
	err = h.db.write(ctx, func(tx *querier) error {
		first := "pending"
		if maxAttempts <= 1 {
			first = "failed"
		}
		if _, err := tx.ExecContext(ctx, ledgerSQL, key, qat, first, msg, nil, md); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE handoff SET state = 'failed' WHERE key = ? AND state = 'pending' AND attempts >= ?`, key, maxAttempts); err != nil {
			return err
		}
		var state string
		if err := tx.QueryRowContext(ctx, `SELECT state FROM handoff WHERE key = ?`, key).Scan(&state); err != nil {
			return err
		}
		parked = state == "failed"
		return nil
	})
	if err != nil {
		return fmt.Errorf("localstore: mark failed: %w", err)
	}
	if parked {
		if err := h.db.Sync(ctx); err != nil {
			return err
		}
		return h.Forget(ctx, []string{key})
	}
	return nil
}

// Counts returns how many keys wait in the queue (pending) and how many
// were parked (failed). It costs what is queued and parked, not what was
// ever processed.
func (h *Handoff) Counts(ctx context.Context) (map[string]int, error) {
	var pending, failed int
	if err := h.db.qread.QueryRowContext(ctx, `SELECT COUNT(*) FROM queue`).Scan(&pending); err != nil {
		return nil, fmt.Errorf("localstore: handoff counts: %w", err)
	}
	if err := h.db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM handoff WHERE state = 'failed'`).Scan(&failed); err != nil {
		return nil, fmt.Errorf("localstore: handoff counts: %w", err)
	}
	h.db.reapMu.Lock()
	pending = max(pending-len(h.db.reap), 0)
	h.db.reapMu.Unlock()
	return map[string]int{"pending": pending, "failed": failed}, nil
}
