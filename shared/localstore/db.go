// Package localstore holds the embedded stores of the local all-in-one mode:
// SQLite adapters of the pipeline's ports (audit trail, study index, hand-off
// queue, event outbox) on the pure-Go modernc.org/sqlite driver, and the
// event log and webhook publisher that deliver the outbox.
package localstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver (pure Go, no cgo)
)

// DB is the local database. All adapters in this package share one DB; it is
// safe for concurrent use.
type DB struct {
	sql *sql.DB
}

// schema is applied in order; schema_version records how far a database got,
// so a database from an older build is upgraded in place.
var schema = []string{
	`CREATE TABLE handoff (
		key         TEXT PRIMARY KEY,
		enqueued_at INTEGER NOT NULL,
		state       TEXT NOT NULL CHECK (state IN ('pending','done','failed')),
		attempts    INTEGER NOT NULL DEFAULT 0,
		last_error  TEXT NOT NULL DEFAULT '',
		done_at     INTEGER,
		metadata    TEXT NOT NULL DEFAULT '{}'
	);
	CREATE INDEX handoff_pending ON handoff(state, enqueued_at);

	CREATE TABLE outbox (
		seq         INTEGER PRIMARY KEY AUTOINCREMENT,
		id          TEXT NOT NULL UNIQUE,
		time        INTEGER NOT NULL,
		source      TEXT NOT NULL,
		detail_type TEXT NOT NULL,
		detail      TEXT NOT NULL,
		logged      INTEGER NOT NULL DEFAULT 0,
		webhooks_left TEXT NOT NULL DEFAULT '[]'
	);
	CREATE INDEX outbox_type ON outbox(detail_type, time);

	CREATE TABLE audit (
		seq            INTEGER PRIMARY KEY AUTOINCREMENT,
		id             TEXT NOT NULL UNIQUE,
		time           INTEGER NOT NULL,
		day            TEXT NOT NULL,
		outcome        TEXT NOT NULL,
		calling_ae     TEXT NOT NULL DEFAULT '',
		called_ae      TEXT NOT NULL DEFAULT '',
		patient_id     TEXT NOT NULL DEFAULT '',
		study_uid      TEXT NOT NULL DEFAULT '',
		sop_uid        TEXT NOT NULL DEFAULT '',
		object_key     TEXT NOT NULL DEFAULT '',
		record         TEXT NOT NULL
	);
	CREATE INDEX audit_time ON audit(time);
	CREATE INDEX audit_study ON audit(study_uid);
	CREATE INDEX audit_patient ON audit(patient_id);
	CREATE INDEX audit_ae ON audit(calling_ae);

	CREATE TABLE studies (
		study_uid         TEXT PRIMARY KEY,
		patient_id        TEXT NOT NULL DEFAULT '',
		last_received     INTEGER NOT NULL,
		revision          INTEGER NOT NULL,
		announced_revision INTEGER NOT NULL DEFAULT 0,
		announced_version INTEGER NOT NULL DEFAULT 0,
		record            TEXT NOT NULL
	);
	CREATE INDEX studies_last ON studies(last_received);
	CREATE INDEX studies_patient ON studies(patient_id);

	CREATE TABLE instances (
		sop_uid      TEXT NOT NULL,
		sha256       TEXT NOT NULL,
		study_uid    TEXT NOT NULL,
		series_uid   TEXT NOT NULL,
		object_key   TEXT NOT NULL,
		received_at  INTEGER NOT NULL,
		record       TEXT NOT NULL,
		PRIMARY KEY (sop_uid, sha256)
	);
	CREATE INDEX instances_study ON instances(study_uid, series_uid);

	CREATE TABLE published_events (
		id   TEXT PRIMARY KEY,
		time INTEGER NOT NULL
	);

	CREATE TABLE quarantine (
		object_key   TEXT PRIMARY KEY,
		source_key   TEXT NOT NULL,
		time         INTEGER NOT NULL,
		metadata     TEXT NOT NULL
	);
	CREATE INDEX quarantine_source ON quarantine(source_key);`,

	// 2: last_activity, the latest received-at or indexed-at of a new or
	// conflicting instance, which the quiet period runs from. Rows written
	// before it keep 0 and StableStudies falls back to last_received.
	`ALTER TABLE studies ADD COLUMN last_activity INTEGER NOT NULL DEFAULT 0;`,

	// 3: audit_feed, how far the audit feed (syslog to a SIEM) got through
	// the audit table: the seq of the last record the collector confirmed.
	`CREATE TABLE audit_feed (
		id            INTEGER PRIMARY KEY CHECK (id = 1),
		delivered_seq INTEGER NOT NULL
	);`,
}

// Open opens (creating if needed) the database at path and brings its schema
// up to date. WAL lets the portal read while the pipeline writes; immediate
// transactions take the write lock up front so two writers queue on
// busy_timeout instead of failing with SQLITE_BUSY on lock upgrade.
func Open(ctx context.Context, path string) (*DB, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("localstore: open %s: %w", path, err)
	}
	sdb.SetMaxOpenConns(8)
	db := &DB{sql: sdb}
	if err := db.migrate(ctx); err != nil {
		_ = sdb.Close()
		return nil, err
	}
	return db, nil
}

// Close closes the database.
func (db *DB) Close() error {
	if err := db.sql.Close(); err != nil {
		return fmt.Errorf("localstore: close: %w", err)
	}
	return nil
}

// SQL exposes the underlying handle for read-only queries by the portal.
func (db *DB) SQL() *sql.DB { return db.sql }

func (db *DB) migrate(ctx context.Context) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("localstore: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("localstore: migrate: %w", err)
	}
	var v int
	err = tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version(version) VALUES (0)`); err != nil {
			return fmt.Errorf("localstore: migrate: %w", err)
		}
	case err != nil:
		return fmt.Errorf("localstore: migrate: %w", err)
	}
	if v > len(schema) {
		return fmt.Errorf("localstore: migrate: database schema %d is newer than this build (%d)", v, len(schema))
	}
	for i := v; i < len(schema); i++ {
		if _, err := tx.ExecContext(ctx, schema[i]); err != nil {
			return fmt.Errorf("localstore: migrate to %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(schema)); err != nil {
		return fmt.Errorf("localstore: migrate: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("localstore: migrate: %w", err)
	}
	return nil
}

func unixNano(t time.Time) int64 { return t.UTC().UnixNano() }

func fromNano(n int64) time.Time { return time.Unix(0, n).UTC() }
