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
	_ pipeline.AuditStore     = (*AuditStore)(nil)
	_ pipeline.IndexStore     = (*IndexStore)(nil)
	_ pipeline.EventPublisher = (*Outbox)(nil)
)

// querier is what both *sql.DB and *sql.Tx offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// binding is where an adapter's statements go: into one caller-owned
// transaction (tx set), or each write into a transaction of its own.
type binding struct {
	db *DB
	tx *sql.Tx
}

func (b binding) q() querier {
	if b.tx != nil {
		return b.tx
	}
	return b.db.sql
}

// write runs fn in the bound transaction, or in a new one it commits.
func (b binding) write(ctx context.Context, fn func(*sql.Tx) error) error {
	if b.tx != nil {
		return fn(b.tx)
	}
	tx, err := b.db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("localstore: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("localstore: commit: %w", err)
	}
	return nil
}

// AuditStore returns the audit trail adapter, each Append its own
// transaction.
func (db *DB) AuditStore() *AuditStore { return &AuditStore{binding{db: db}} }

// IndexStore returns the study index adapter.
func (db *DB) IndexStore() *IndexStore { return &IndexStore{binding{db: db}} }

// Outbox returns the event publisher adapter: published events are queued
// for the log and for webhooks.
func (db *DB) Outbox(webhooks []string) *Outbox {
	return &Outbox{b: binding{db: db}, webhooks: webhooks}
}

// Tx is one unit of work: the adapters it hands out write into a single
// SQLite transaction, committed by DB.InTx only when the work succeeded.
type Tx struct {
	b        binding
	webhooks []string
}

// AuditStore returns the audit adapter bound to the transaction.
func (t *Tx) AuditStore() *AuditStore { return &AuditStore{t.b} }

// IndexStore returns the index adapter bound to the transaction.
func (t *Tx) IndexStore() *IndexStore { return &IndexStore{t.b} }

// Outbox returns the event adapter bound to the transaction.
func (t *Tx) Outbox() *Outbox { return &Outbox{b: t.b, webhooks: t.webhooks} }

// MarkDone completes hand-off key in this transaction; it fails with
// ErrNotPending when key is not pending, which rolls the work back.
func (t *Tx) MarkDone(ctx context.Context, key string, at time.Time) error {
	return markDone(ctx, t.b.tx, key, at)
}

// InTx runs fn in one immediate transaction and commits it when fn returns
// nil; any error (or a crash) leaves the database as it was.
func (db *DB) InTx(ctx context.Context, webhooks []string, fn func(*Tx) error) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("localstore: begin: %w", err)
	}
	if err := fn(&Tx{b: binding{db: db, tx: tx}, webhooks: webhooks}); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("localstore: commit: %w", err)
	}
	return nil
}

// Outbox implements pipeline.EventPublisher on the outbox table.
type Outbox struct {
	b        binding
	webhooks []string
}

// Publish queues events; they are all accepted or the call fails.
func (o *Outbox) Publish(ctx context.Context, events []pipeline.Event) ([]int, error) {
	err := o.b.write(ctx, func(tx *sql.Tx) error {
		for _, e := range events {
			ev := Event{ID: e.ID, Time: e.Time, Source: pipeline.EventSource, DetailType: e.DetailType, Detail: e.Detail}
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
	_, err = t.b.tx.ExecContext(ctx,
		`INSERT INTO quarantine(object_key, source_key, time, metadata) VALUES (?, ?, ?, ?)
		 ON CONFLICT(object_key) DO UPDATE SET source_key = excluded.source_key, metadata = excluded.metadata`,
		dst, src, unixNano(at), string(md))
	if err != nil {
		return fmt.Errorf("localstore: record copy: %w", err)
	}
	return nil
}

// CopyOf returns the source and metadata recorded for copy dst; ok is false
// when dst is not a recorded copy.
func (db *DB) CopyOf(ctx context.Context, dst string) (src string, metadata map[string]string, ok bool, err error) {
	var md string
	err = db.sql.QueryRowContext(ctx, `SELECT source_key, metadata FROM quarantine WHERE object_key = ?`, dst).Scan(&src, &md)
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
