package localstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Compile-time checks that the adapters implement the pipeline's ports.
var (
	_ pipeline.AuditStore      = (*AuditStore)(nil)
	_ pipeline.IndexStore      = (*IndexStore)(nil)
	_ pipeline.EventPublisher  = (*Outbox)(nil)
	_ pipeline.CommitmentStore = (*CommitmentStore)(nil)
)

// queryRecords runs a query whose one column is a record stored as JSON and
// decodes each row; what names the operation in errors.
func queryRecords[T any](ctx context.Context, q *querier, what, stmt string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, fmt.Errorf("localstore: %s: %w", what, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("localstore: %s: %w", what, err)
		}
		var v T
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			return nil, fmt.Errorf("localstore: %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("localstore: %s: %w", what, err)
	}
	return out, nil
}

// getRecord runs a query for one row whose one column is a record stored as
// JSON and decodes it; no row is pipeline.ErrNotFound.
func getRecord[T any](ctx context.Context, q *querier, what, stmt string, args ...any) (T, error) {
	var body sql.NullString
	err := q.QueryRowContext(ctx, stmt, args...).Scan(&body)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		var zero T
		return zero, fmt.Errorf("localstore: %s: %w", what, err)
	}
	return decodeRecord[T](what, body)
}

// decodeRecord decodes a record stored as JSON, read by a query of its
// own or as a column of a larger one; none (NULL, or no row) is
// pipeline.ErrNotFound.
func decodeRecord[T any](what string, body sql.NullString) (T, error) {
	var v T
	if !body.Valid {
		return v, fmt.Errorf("localstore: %s: %w", what, pipeline.ErrNotFound)
	}
	if err := json.Unmarshal([]byte(body.String), &v); err != nil {
		var zero T
		return zero, fmt.Errorf("localstore: %s: %w", what, err)
	}
	return v, nil
}

// binding is where an adapter's statements go: into a caller's unit of
// work (unit set), or each write into a unit of its own.
type binding struct {
	db   *DB
	unit *unit
}

// q returns what reads go through: the unit's transaction when bound (so
// they see the unit's own writes and nothing changes under its
// read-then-write), the connection pool otherwise.
func (b binding) q() (*querier, error) {
	if b.unit != nil {
		tx, err := b.unit.begin()
		if err != nil {
			return nil, err
		}
		return tx, nil
	}
	return b.db.read, nil
}

// write runs fn in the bound unit, or in a unit of its own that it waits
// to see committed.
func (b binding) write(ctx context.Context, fn func(*querier) error) error {
	if b.unit != nil {
		tx, err := b.unit.begin()
		if err != nil {
			return err
		}
		return fn(tx)
	}
	return b.db.write(ctx, fn)
}

// write runs fn as one unit of the main database and returns once it is
// committed.
func (db *DB) write(ctx context.Context, fn func(*querier) error) error {
	return db.w.run(ctx, fn)
}

// AuditStore returns the audit trail adapter, each Append its own
// transaction.
func (db *DB) AuditStore() *AuditStore { return &AuditStore{binding{db: db}} }

// IndexStore returns the study index adapter.
func (db *DB) IndexStore() *IndexStore { return &IndexStore{binding{db: db}} }

// CommitmentStore returns the Storage Commitment transaction adapter, each
// write its own transaction.
func (db *DB) CommitmentStore() *CommitmentStore { return &CommitmentStore{binding{db: db}} }

// Outbox returns the event publisher adapter: published events are queued
// for the log and for webhooks.
func (db *DB) Outbox(webhooks []string) *Outbox {
	return &Outbox{b: binding{db: db}, webhooks: webhooks}
}

// Tx is one unit of work: the adapters it hands out write into a single
// savepoint of the database's shared write transaction, kept by DB.InTx
// only when the work succeeded. The savepoint is taken at the unit's
// first statement, so what the work does before (reading objects,
// writing files) does not hold up other writers.
type Tx struct {
	b        binding
	webhooks []string
	done     []string // keys MarkDone completed, to leave the queue after the commit
	after    []func() // AfterDurable's
}

// AuditStore returns the audit adapter bound to the transaction.
func (t *Tx) AuditStore() *AuditStore { return &AuditStore{t.b} }

// IndexStore returns the index adapter bound to the transaction.
func (t *Tx) IndexStore() *IndexStore { return &IndexStore{t.b} }

// CommitmentStore returns the Storage Commitment adapter bound to the
// transaction.
func (t *Tx) CommitmentStore() *CommitmentStore { return &CommitmentStore{t.b} }

// Outbox returns the event adapter bound to the transaction.
func (t *Tx) Outbox() *Outbox { return &Outbox{b: t.b, webhooks: t.webhooks} }

// MarkDone completes hand-off key in this transaction; it fails with
// ErrNotPending when key is not pending, which rolls the work back.
func (t *Tx) MarkDone(ctx context.Context, key string, at time.Time) error {
	err := t.b.write(ctx, func(tx *querier) error { return t.b.db.Handoff().markDone(ctx, tx, key, at, nil) })
	if err == nil {
		t.done = append(t.done, key)
	}
	return err
}

// MarkHandedDone is MarkDone for a key handed off outside the queue (its
// file store's journal holds it, see scp-task's local mode): the ledger
// keeps handed's time and metadata, and no queue row is looked up or
// removed.
func (t *Tx) MarkHandedDone(ctx context.Context, handed Handed, at time.Time) error {
	return t.b.write(ctx, func(tx *querier) error { return t.b.db.Handoff().markDone(ctx, tx, handed.Key, at, &handed) })
}

// AfterDurable has fn called once this unit's commit is durable (after the
// database's Sync), should it commit; fn must not block.
func (t *Tx) AfterDurable(fn func()) { t.after = append(t.after, fn) }

// InTx runs fn as one unit of work and, when fn returns nil, keeps its
// writes and returns once they are committed; on an error (or a crash)
// none of them ever is. Units that run at the same time share one commit.
func (db *DB) InTx(ctx context.Context, webhooks []string, fn func(*Tx) error) error {
	done := make(chan error, 1)
	if err := db.unitOfWork(ctx, webhooks, fn, func(err error) { done <- err }, false); err != nil {
		return err
	}
	return <-done
}

// InTxAsync is InTx for a caller with more work to do than to wait for a
// commit: when fn succeeds it returns nil at once and calls committed with
// the commit's outcome later, from another goroutine. When fn fails, its
// writes are undone, its error returned, and committed is not called.
// Until committed is called, a later unit sees the writes (they share the
// open transaction or were committed), but the portal's readers do not.
func (db *DB) InTxAsync(ctx context.Context, webhooks []string, fn func(*Tx) error, committed func(error)) error {
	return db.unitOfWork(ctx, webhooks, fn, committed, true)
}

// unitOfWork runs fn as a unit; lingers says that nobody waits for the
// commit, which may then wait for more units (see batching).
func (db *DB) unitOfWork(ctx context.Context, webhooks []string, fn func(*Tx) error, committed func(error), lingers bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("localstore: unit: %w", err)
	}
	u := &unit{w: db.w}
	t := &Tx{b: binding{db: db, unit: u}, webhooks: webhooks}
	defer u.abandon()
	err := fn(t)
	if lingers && u.tx != nil && err == nil {
		u.w.lingerOn(u.batch)
	}
	b, eerr := u.end(err == nil)
	if err == nil {
		err = eerr
	}
	if err != nil {
		return err
	}
	if b == nil {
		committed(nil)
		return nil
	}
	go func() {
		<-b.done
		if b.err == nil {
			// Done keys leave the queue only now that the ledger says
			// done; a crash before leaves rows Prune removes at start.
			db.Handoff().forgetSoon(t.done, t.after)
		}
		committed(b.err)
	}()
	return nil
}

// Outbox implements pipeline.EventPublisher on the outbox table.
type Outbox struct {
	b        binding
	webhooks []string
}

// Publish queues events; they are all accepted or the call fails.
func (o *Outbox) Publish(ctx context.Context, events []pipeline.Event) ([]pipeline.FailedEntry, error) {
	err := o.b.write(ctx, func(tx *querier) error {
		for _, e := range events {
			ev := Event{ID: e.ID, Time: e.Time, Source: pipeline.EventSource, DetailType: e.DetailType, Resources: e.Resources, Detail: e.Detail}
			if err := addEvent(ctx, tx, ev, o.webhooks); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return nil, nil
}

// RecordCopy remembers, in this transaction, that dst is a copy of src with
// metadata (the pipeline's quarantine copies); Head of dst reports it.
func (t *Tx) RecordCopy(ctx context.Context, src, dst string, metadata map[string]string, at time.Time) error {
	md, err := json.Marshal(metadata)
	if err != nil {
		return fmt.Errorf("localstore: record copy: %w", err)
	}
	err = t.b.write(ctx, func(tx *querier) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO quarantine(object_key, source_key, time, metadata) VALUES (?, ?, ?, ?)
			 ON CONFLICT(object_key) DO UPDATE SET source_key = excluded.source_key, metadata = excluded.metadata`,
			dst, src, unixNano(at), string(md))
		return err
	})
	if err != nil {
		return fmt.Errorf("localstore: record copy: %w", err)
	}
	return nil
}

// CopyOf returns the source and metadata recorded for copy dst; ok is false
// when dst is not a recorded copy.
func (db *DB) CopyOf(ctx context.Context, dst string) (src string, metadata map[string]string, ok bool, err error) {
	var md string
	err = db.read.QueryRowContext(ctx, `SELECT source_key, metadata FROM quarantine WHERE object_key = ?`, dst).Scan(&src, &md)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, false, nil
	}
	if err != nil {
		return "", nil, false, fmt.Errorf("localstore: copy lookup: %w", err)
	}
	metadata = map[string]string{}
	if err := json.Unmarshal([]byte(md), &metadata); err != nil {
		return "", nil, false, fmt.Errorf("localstore: copy lookup: %w", err)
	}
	return src, metadata, true, nil
}
