package localstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// PutDocument stores body under key in this unit, replacing what was
// there. Local mode keeps the pipeline's small documents (DICOM JSON and
// summary sidecars, findings) here rather than as files: they become
// durable with the same commit as the index and audit rows they belong
// to, where a file each cost two fsyncs per object on a disk the SCP
// needs for the objects themselves.
func (t *Tx) PutDocument(ctx context.Context, key, contentType string, body []byte, at time.Time) error {
	err := t.b.write(ctx, func(tx *querier) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO documents(key, content_type, time, body) VALUES (?, ?, ?, ?)
			 ON CONFLICT(key) DO UPDATE SET content_type = excluded.content_type, time = excluded.time, body = excluded.body`,
			key, contentType, unixNano(at), body)
		return err
	})
	if err != nil {
		return fmt.Errorf("localstore: put document: %w", err)
	}
	return nil
}

// Document returns the document stored under key and its content type;
// the error wraps pipeline.ErrNotFound when there is none.
func (db *DB) Document(ctx context.Context, key string) (body []byte, contentType string, err error) {
	err = db.read.QueryRowContext(ctx, `SELECT body, content_type FROM documents WHERE key = ?`, key).Scan(&body, &contentType)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", fmt.Errorf("localstore: document: %w", pipeline.ErrNotFound)
	}
	if err != nil {
		return nil, "", fmt.Errorf("localstore: document: %w", err)
	}
	return body, contentType, nil
}
