// Package localstore holds the embedded stores of the local all-in-one mode:
// SQLite adapters of the pipeline's ports (audit trail, study index, hand-off
// queue, event outbox) on the pure-Go modernc.org/sqlite driver, and the
// event log and webhook publisher that deliver the outbox.
package localstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite" // the "sqlite" driver (pure Go, no cgo)

	"github.com/dicom-ingest/dicom-ingest/shared/retry"
)

// DB is the local database. All adapters in this package share one DB; it is
// safe for concurrent use.
type DB struct {
	sql *sql.DB
	st  *statements
	// read runs statements on the main database's pool, outside the
	// writer's transaction.
	read *querier
	w    *writer
	// q is the hand-off queue, a database of its own: the C-STORE path
	// commits one small row there, never waiting for a commit of the
	// pipeline's (see Handoff).
	q     *sql.DB
	qst   *statements
	qread *querier
	qw    *writer
	// wal makes the main database's commits durable (see Sync).
	wal *walSync
	// qwal makes the queue's commits durable (its writer's).
	qwal *walSync

	// reap holds completed keys whose queue rows go at the next reaper
	// round (see forgetSoon).
	reapMu      sync.Mutex
	reap        []string
	reapAfter   []func() // called once the commits before them are durable (Tx.AfterDurable)
	stopReaper  chan struct{}
	reaperEnded chan struct{}
	closeOnce   sync.Once

	// outboxID is the outbox's identity (OutboxID), read once at Open.
	outboxID string
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

	// 4: the publisher reads what is left to deliver through partial
	// indexes, so a flush costs what is undelivered, not the whole outbox.
	`CREATE INDEX outbox_unlogged ON outbox(seq) WHERE logged = 0;
	CREATE INDEX outbox_webhooks ON outbox(seq) WHERE webhooks_left != '[]';`,

	// 5: the pipeline's small documents (metadata sidecars, findings),
	// durable with the commit of the unit that wrote them.
	`CREATE TABLE documents (
		key          TEXT PRIMARY KEY,
		content_type TEXT NOT NULL,
		time         INTEGER NOT NULL,
		body         BLOB NOT NULL
	);`,

	// 6: the portal's queries: events of a type or of a study newest
	// first, audit records by association.
	`ALTER TABLE outbox ADD COLUMN study_uid TEXT GENERATED ALWAYS AS (json_extract(detail, '$.studyInstanceUid')) VIRTUAL;
	CREATE INDEX outbox_study ON outbox(study_uid, seq);
	CREATE INDEX outbox_type_seq ON outbox(detail_type, seq);
	ALTER TABLE audit ADD COLUMN association_id TEXT GENERATED ALWAYS AS (json_extract(record, '$.associationId')) VIRTUAL;
	CREATE INDEX audit_association ON audit(association_id, time);`,

	// 7: Storage Commitment: the audit trail by SOP Instance UID (what a
	// commitment request looks for when an instance is not indexed), the
	// transactions, and the studies each one committed instances of.
	`CREATE INDEX audit_sop ON audit(sop_uid);

	CREATE TABLE commitments (
		id           TEXT PRIMARY KEY,
		state        TEXT NOT NULL,
		next_attempt INTEGER NOT NULL,
		version      INTEGER NOT NULL,
		received_at  INTEGER NOT NULL,
		record       TEXT NOT NULL
	);
	CREATE INDEX commitments_due ON commitments(state, next_attempt);

	CREATE TABLE commitment_studies (
		study_uid TEXT NOT NULL,
		id        TEXT NOT NULL,
		PRIMARY KEY (study_uid, id)
	);`,

	// 8: how far the event log got through the outbox, as one watermark:
	// the log is appended in seq order, so what it holds is every event
	// up to logged_seq. Marking each event's row instead rewrote the row
	// (its whole detail) once more per event. The outbox's logged column
	// is no longer read or written; dropping it would rewrite every row.
	// An older database's watermark stops before its first unlogged event.
	`CREATE TABLE outbox_log (
		id         INTEGER PRIMARY KEY CHECK (id = 1),
		logged_seq INTEGER NOT NULL
	);
	INSERT INTO outbox_log(id, logged_seq) VALUES (1, COALESCE(
		(SELECT MIN(seq) - 1 FROM outbox WHERE logged = 0), (SELECT MAX(seq) FROM outbox), 0));
	DROP INDEX outbox_unlogged;`,

	// 9: an instance is one content in one study: the same SOP Instance
	// UID and content identity naming another study is indexed in that
	// study too, as the index contract has it (pipelinetest's
	// SameContentOtherStudy). The key was (sop_uid, sha256), which made
	// such a record a duplicate of the first study's. The rows keep their
	// rowids: the first content under a SOP Instance UID is the lowest.
	`CREATE TABLE instances_by_study (
		sop_uid      TEXT NOT NULL,
		sha256       TEXT NOT NULL,
		study_uid    TEXT NOT NULL,
		series_uid   TEXT NOT NULL,
		object_key   TEXT NOT NULL,
		received_at  INTEGER NOT NULL,
		record       TEXT NOT NULL,
		PRIMARY KEY (sop_uid, sha256, study_uid)
	);
	INSERT INTO instances_by_study(rowid, sop_uid, sha256, study_uid, series_uid, object_key, received_at, record)
		SELECT rowid, sop_uid, sha256, study_uid, series_uid, object_key, received_at, record FROM instances;
	DROP TABLE instances;
	ALTER TABLE instances_by_study RENAME TO instances;
	CREATE INDEX instances_study ON instances(study_uid, series_uid);`,

	// 10: the portal's list of Storage Commitment transactions, newest
	// first (Commitments) reads them through this index.
	`CREATE INDEX commitments_received ON commitments(received_at);`,

	// 11: an event's resources (the objects it is about), which the log
	// and the webhooks carry as EventBridge's envelope does. Events of
	// older databases have none.
	`ALTER TABLE outbox ADD COLUMN resources TEXT NOT NULL DEFAULT '[]';`,

	// 12: a study's rejects (rejectsSQL), which every studies page reads
	// for each study it lists, by study and outcome: through audit_study
	// they read every record of the study. It serves what audit_study
	// did, so that one goes.
	`CREATE INDEX audit_study_outcome ON audit(study_uid, outcome);
	DROP INDEX audit_study;`,

	// 13: the records that report runs which stopped uncleanly, few, which
	// the audit trail's associations read to tell an association that
	// ended with its run from one still open (deadRunsSQL). Fixed text, as
	// every migration: databases keep the index they were given, and the
	// query plan test fails should deadRunsSQL no longer match it.
	`CREATE INDEX audit_unclean ON audit(outcome) WHERE outcome IN ('unclean-stop', 'unclean-stop-found');`,

	// 14: the digest of the study set a Storage Commitment transaction's
	// links were written for (linkCommitmentStudies), so that each set is
	// linked once. Transactions of older databases have none: their next
	// evaluation links them once more.
	`ALTER TABLE commitments ADD COLUMN studies_digest TEXT NOT NULL DEFAULT '';`,

	// 15: the studies each event names (pipeline.EventStudies), as
	// commitment_studies links a transaction to its studies, so that the
	// events of a study are those naming it anywhere: a Storage Commitment
	// Completed names several, in its studies, which the study_uid column
	// (studyInstanceUid alone) missed. addEvent links each new event; the
	// events of older databases are linked here by the same rule, in SQL.
	// The link replaces outbox_study; the study_uid column is no longer
	// read (dropping it would rewrite every row).
	`CREATE TABLE outbox_studies (
		study_uid TEXT NOT NULL,
		seq       INTEGER NOT NULL,
		PRIMARY KEY (study_uid, seq)
	) WITHOUT ROWID;
	INSERT OR IGNORE INTO outbox_studies(study_uid, seq)
		SELECT u, seq FROM (SELECT seq,
			CASE WHEN json_valid(detail) THEN json_extract(detail, '$.studyInstanceUid') END AS u FROM outbox)
		WHERE typeof(u) = 'text' AND u != '';
	INSERT OR IGNORE INTO outbox_studies(study_uid, seq)
		SELECT j.value, o.seq FROM outbox o, json_each(CASE WHEN json_valid(o.detail)
			AND json_type(o.detail, '$.studies') = 'array' THEN o.detail ELSE '{}' END, '$.studies') j
		WHERE j.type = 'text' AND j.value != '';
	DROP INDEX outbox_study;`,
	// 16: the instances of a study validation rejected (RecordRejected),
	// one row per SOP Instance UID in the study, which GetStudy counts.
	`CREATE TABLE rejected (
		study_uid TEXT NOT NULL,
		sop_uid   TEXT NOT NULL,
		PRIMARY KEY (study_uid, sop_uid)
	) WITHOUT ROWID;`,
	// 17: the instances' content identity column is named for what it
	// holds (pipeline.ContentIdentityField): a CRC-64/NVME of the data
	// set, not a SHA-256, as the records in it have said since they were
	// renamed. RENAME COLUMN changes the schema alone, rows untouched, and
	// carries the primary key with it.
	`ALTER TABLE instances RENAME COLUMN sha256 TO content_identity;`,
	// 18: the publish ledger is the outbox (EventPublished): an event
	// published is in the outbox under its id, which nothing removes, so
	// the rows of published_events naming an event the outbox holds can
	// never be needed again. The table keeps only ids marked published
	// without an event in the outbox (MarkEventPublished): none in the
	// pipeline's own use, which adds the event first.
	`DELETE FROM published_events WHERE id IN (SELECT id FROM outbox);`,
	// 19: how far the expiry of the SCP's association records got
	// (Handoff.ExpiredRecords): every record the ledger has as done up
	// to through_key had its file removed.
	`CREATE TABLE record_expiry (
		id          INTEGER PRIMARY KEY CHECK (id = 1),
		through_key TEXT NOT NULL
	);`,
	// 20: the outbox's identity (OutboxID): a random id made once, when
	// the database is created or, for an older one, migrated here. An
	// event's seq is a place in this outbox alone; a data directory
	// started afresh has another id, and a copy keeps its original's with
	// its seqs (the same history).
	`CREATE TABLE outbox_identity (
		id        INTEGER PRIMARY KEY CHECK (id = 1),
		outbox_id TEXT NOT NULL
	);
	INSERT INTO outbox_identity(id, outbox_id) VALUES (1, lower(hex(randomblob(16))));`,
	// 21: the requesting AEs' leases (CommitmentStore.LeaseCommitmentPeer):
	// one Storage Commitment delivery to an AE at a time, across runs.
	`CREATE TABLE commitment_peer_leases (
		ae     TEXT PRIMARY KEY,
		holder TEXT NOT NULL,
		until  INTEGER NOT NULL
	);`,
}

// Open opens (creating if needed) the database at path and its hand-off
// queue beside it (QueuePath), and brings their schemas up to date. WAL
// lets the portal read while the pipeline writes; every write goes
// through the database's one writer (writer.go). A database migrated is
// told on the logger of WithLogger. Each database is checkpointed before
// Open returns; a failed fsync there fails Open (ErrSyncFailed), naming
// the database's file.
func Open(ctx context.Context, path string, opts ...Option) (*DB, error) {
	o := options{log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	// Both databases commit without an fsync (see walSync). The main
	// database's commits are made durable by Sync, which the hand-off and
	// the event publisher call before they act on a commit; the queue's
	// are durable before its writer reports them: the SCP answers success
	// on them.
	// Checkpoints copy the log into the database file, run by the writer
	// (see checkpointer): at 4000 pages rather than SQLite's 1000, a page
	// the pipeline changes again and again (a study's row, an index's
	// inner pages) is copied a quarter as often.
	sdb, err := openSQLite(path, o.connector, "synchronous(NORMAL)", journalSizeLimit(MainWALLimit))
	if err != nil {
		return nil, err
	}
	db := &DB{sql: sdb, wal: newWALSync(path+"-wal", o.logSync)}
	db.wal.failedOnce = o.syncFailed(path)
	m, err := migrate(ctx, sdb, schema)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("localstore: open %s: %w", path, err), sdb.Close())
	}
	o.migrated(path, m)
	if err := sdb.QueryRowContext(ctx, `SELECT outbox_id FROM outbox_identity WHERE id = 1`).Scan(&db.outboxID); err != nil {
		return nil, errors.Join(fmt.Errorf("localstore: open %s: outbox id: %w", path, err), sdb.Close())
	}
	qpath := QueuePath(path)
	// The queue's rows are small and each commit writes whole pages: 1 KiB
	// pages (set before the file is created) make the SCP's fsync a
	// quarter of the bytes.
	qdb, err := openSQLite(qpath, o.connector, "synchronous(NORMAL)", "page_size(1024)", journalSizeLimit(QueueWALLimit))
	if err != nil {
		return nil, errors.Join(err, sdb.Close())
	}
	m, err = migrate(ctx, qdb, queueSchema)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("localstore: open %s: %w", qpath, err), sdb.Close(), qdb.Close())
	}
	o.migrated(qpath, m)
	db.st, db.qst = newStatements(sdb), newStatements(qdb)
	db.read, db.qread = poolQuerier(db.st), poolQuerier(db.qst)
	db.q = qdb
	db.qwal = newWALSync(qpath+"-wal", o.logSync)
	db.qwal.failedOnce = o.syncFailed(qpath)
	db.w, err = newWriter(ctx, sdb, throughputFirst, nil, o.checkpointer(mainCheckpointFrames, path, db.wal), o.writerConnReplaced(path))
	if err != nil {
		return nil, errors.Join(err, sdb.Close(), qdb.Close())
	}
	db.qw, err = newWriter(ctx, qdb, latencyFirst, db.qwal, o.checkpointer(queueCheckpointFrames, qpath, db.qwal), o.writerConnReplaced(qpath))
	if err != nil {
		return nil, errors.Join(err, db.w.close(), sdb.Close(), qdb.Close())
	}
	// The migrations' commits are checkpointed now, not left in the logs
	// for the first commit after Open (see checkpointer).
	db.w.ckpt.all()
	db.qw.ckpt.all()
	// A checkpoint whose fsync failed ends durable commits until a
	// restart: a process started on it would fail every one, each
	// C-STORE among them. Open fails instead, naming the database, and
	// closes what it opened as Close does (a failed database's
	// connections stay open until the process exits: see Close).
	var failed []error
	for _, d := range []struct {
		path string
		wal  *walSync
	}{{path, db.wal}, {qpath, db.qwal}} {
		if err := d.wal.poisoned(); err != nil {
			failed = append(failed, fmt.Errorf("localstore: open %s: %w", d.path, err))
		}
	}
	if failed != nil {
		return nil, errors.Join(append(failed, db.closeStores())...)
	}
	db.stopReaper, db.reaperEnded = make(chan struct{}), make(chan struct{})
	go db.reaper(db.stopReaper, db.reaperEnded)
	if err := db.Handoff().adoptLegacyPending(ctx); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return db, nil
}

// The databases' write-ahead logs are cut back to these sizes each time
// SQLite starts one over after a checkpoint (journal_size_limit): a log
// that a burst grew (a checkpoint held back by a long read while the
// pipeline wrote) would otherwise keep its size on disk for good. Each is
// above the log's working size, where its checkpoints keep it (the main
// database's 4000 pages of 4 KiB, the queue's 1000 of 1 KiB), so that a
// log in its working size is never cut and grown again.
const (
	MainWALLimit  = 24 << 20
	QueueWALLimit = 4 << 20
)

// The writers checkpoint a database once its log holds this many pages
// not yet copied (checkpointer): the queue's at SQLite's default.
const (
	mainCheckpointFrames  = 4000
	queueCheckpointFrames = 1000
)

// journalSizeLimit is the pragma that bounds a database's log at limit
// bytes.
func journalSizeLimit(limit int64) string { return fmt.Sprintf("journal_size_limit(%d)", limit) }

// Option configures Open.
type Option func(*options)

type options struct {
	log            *slog.Logger
	logSync        func(*os.File) error
	checkpointSync func(file string) error
	// connector, when set, wraps the driver's connector of each database
	// (tests fail a connection's COMMIT through it, as a driver would).
	connector func(driver.Connector) driver.Connector
}

// WithLogger has Open tell on l each database it migrates (see migrated);
// without it Open logs nothing.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithLogSync has the databases' write-ahead logs fsynced by sync, on the
// descriptor kept for each (see walSync), instead of (*os.File).Sync:
// tests outside the package fail it, as a disk would.
func WithLogSync(sync func(*os.File) error) Option { return func(o *options) { o.logSync = sync } }

// WithCheckpointSync has each checkpoint that copies a database's log
// into its file call sync with the database file's path first: an error
// fails that checkpoint as a failed fsync of SQLite's would (final, see
// checkpointer), before it copies anything. Tests outside the package
// fail it, as a disk would; SQLite's own fsync cannot be reached.
func WithCheckpointSync(sync func(file string) error) Option {
	return func(o *options) { o.checkpointSync = sync }
}

// checkpointer is the checkpointer of the database at path (see
// newCheckpointer), its copies preceded by WithCheckpointSync's sync.
func (o *options) checkpointer(frames int, path string, wal *walSync) *checkpointer {
	c := newCheckpointer(frames, wal, o.checkpointFailed(path))
	if sync := o.checkpointSync; sync != nil {
		run := c.run
		c.run = func(mode string) (int, int, error) {
			if mode != "NOOP" {
				if err := sync(path); err != nil {
					return 0, 0, fmt.Errorf("%w: %w", errCheckpointSync, err)
				}
			}
			return run(mode)
		}
	}
	return c
}

// MigratedLog is the line of a database migrated to this build's schema.
const MigratedLog = "migrated database"

// migrated tells of a database's migration, which cannot be undone (an
// older build refuses the database after it): one line naming the file,
// the schema version found and the one it has now. A database created now,
// or found up to date, is not told.
func (o *options) migrated(path string, m migration) {
	if m.created || m.from == m.to {
		return
	}
	o.log.Info(MigratedLog, "file", path, "from", m.from, "to", m.to)
}

// QueuePath is where Open keeps the hand-off queue of the database at
// path: ingest.db's is ingest-queue.db.
func QueuePath(path string) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "-queue" + ext
}

// openSQLite opens one database file, its connections made by the
// driver's connector as wrap (nil: none) wraps it. Immediate transactions
// take the write lock up front, so a writer outside the process's writer
// (a second process, refused by local mode's lock) would queue on
// busy_timeout instead of failing with SQLITE_BUSY on lock upgrade.
func openSQLite(path string, wrap func(driver.Connector) driver.Connector, pragmas ...string) (*sql.DB, error) {
	if err := privateFile(path); err != nil {
		return nil, err
	}
	q := url.Values{}
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	q.Add("_pragma", "busy_timeout(10000)")
	// No automatic checkpoint: it ignores its errors, a failed fsync among
	// them; the writers run them (checkpointer).
	q.Add("_pragma", "wal_autocheckpoint(0)")
	// The driver runs the _pragma list first (sorted by name) and
	// _journal_mode after it: a page_size pragma must precede WAL mode,
	// which fixes the page size of the file it creates.
	q.Set("_journal_mode", "WAL")
	// A unit is a savepoint: SQLite keeps the pages it changes in a
	// sub-journal to undo it. In a temporary file (the default) that was
	// a write of every changed page to /var/tmp, a third of what the
	// pipeline wrote; a unit's pages are few and fit in memory.
	q.Add("_pragma", "temp_store(MEMORY)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	c, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, fmt.Errorf("localstore: open %s: %w", path, err)
	}
	if wrap != nil {
		c = wrap(c)
	}
	sdb := sql.OpenDB(c)
	sdb.SetMaxOpenConns(8)
	// Every connection stays open: one that closes takes the statements
	// prepared on it, and opening one costs its pragmas and a read of the
	// schema. database/sql keeps two idle by default, and under load the
	// others were opened and closed again and again.
	sdb.SetMaxIdleConns(8)
	return sdb, nil
}

// privateFile creates the database file at path with mode 0600 before
// SQLite opens it: the databases hold patient data. SQLite would create
// the file 0644 less the umask, and gives its -wal and -shm files the
// database file's mode, so those follow. A file an older build left
// readable by others is narrowed by the data directory's rule, before
// this (local.PrepareDataDir).
func privateFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("localstore: open %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("localstore: open %s: %w", path, err)
	}
	return nil
}

// Close removes completed keys from the queue, commits what the writers
// hold and closes both databases. A database whose sync failed
// (SyncFailed) keeps its connections until the process exits: closing
// the last one would checkpoint it, and trust that checkpoint's fsync
// (see checkpointer).
func (db *DB) Close() error {
	db.closeOnce.Do(func() { close(db.stopReaper) })
	<-db.reaperEnded
	return db.closeStores()
}

// closeStores is Close once the reaper has ended (or, in Open, before it
// started): the writers, their statements and the databases, but one
// whose sync failed.
func (db *DB) closeStores() error {
	if err := errors.Join(db.w.close(), db.qw.close(), db.st.close(), db.qst.close(),
		closeUnlessFailed(db.sql, db.wal), closeUnlessFailed(db.q, db.qwal),
		db.wal.shut(), db.qwal.shut()); err != nil {
		return fmt.Errorf("localstore: close: %w", err)
	}
	return nil
}

// closeUnlessFailed closes sdb unless a sync of it failed.
func closeUnlessFailed(sdb *sql.DB, wal *walSync) error {
	if wal.poisoned() != nil {
		return nil
	}
	return sdb.Close()
}

// Sync makes every commit of the main database that completed before it
// was called durable. The main database runs with synchronous=NORMAL:
// its commits append to the write-ahead log without an fsync (SQLite
// keeps them atomic and the log consistent across a crash, only the last
// ones may be lost), so a batch of the pipeline's costs no fsync of its
// own; Sync is one fsync of the log for all of them. Whoever acts on a
// commit outside the database (removing its keys from the hand-off
// queue, delivering its events) calls Sync first.
func (db *DB) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("localstore: sync: %w", err)
	}
	return db.wal.sync()
}

// SyncFailed returns the failure that ended the databases' durable
// commits (ErrSyncFailed), nil while none failed: once an fsync of a
// database failed (of its write-ahead log or at a checkpoint), every later commit that needs to be durable
// fails until the process is restarted.
func (db *DB) SyncFailed() error {
	return errors.Join(db.wal.poisoned(), db.qwal.poisoned())
}

// MarkFinal returns err marked retry.Final once the databases' durable
// commits ended (SyncFailed): no failure of work on them (delivering their
// events, announcing their studies) heals before a restart. It returns err
// as it is while none failed, and nil for nil.
func (db *DB) MarkFinal(err error) error {
	if err == nil {
		return nil
	}
	if failed := db.SyncFailed(); failed != nil {
		return retry.Final(errors.Join(err, failed))
	}
	return err
}

// SQL exposes the underlying handle for read-only queries by the portal.
func (db *DB) SQL() *sql.DB { return db.sql }

// migration is what migrate did: the schema version it found (0 for a
// database it created) and the one the database has now.
type migration struct {
	from, to int
	created  bool // the database had no schema: it is new
}

func migrate(ctx context.Context, sdb *sql.DB, schema []string) (migration, error) {
	tx, err := sdb.BeginTx(ctx, nil)
	if err != nil {
		return migration{}, fmt.Errorf("migrate: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	// Unprepared (see querier): the statements run once and change the
	// schema.
	q := &querier{tx: tx}
	if _, err := q.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return migration{}, fmt.Errorf("migrate: %w", err)
	}
	m := migration{to: len(schema)}
	err = q.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&m.from)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		m.created = true
		if _, err := q.ExecContext(ctx, `INSERT INTO schema_version(version) VALUES (0)`); err != nil {
			return migration{}, fmt.Errorf("migrate: %w", err)
		}
	case err != nil:
		return migration{}, fmt.Errorf("migrate: %w", err)
	}
	if m.from > len(schema) {
		return migration{}, fmt.Errorf("migrate: database schema %d is newer than this build (%d)", m.from, len(schema))
	}
	for i := m.from; i < len(schema); i++ {
		if _, err := q.ExecContext(ctx, schema[i]); err != nil {
			return migration{}, fmt.Errorf("migrate to %d: %w", i+1, err)
		}
	}
	if _, err := q.ExecContext(ctx, `UPDATE schema_version SET version = ?`, len(schema)); err != nil {
		return migration{}, fmt.Errorf("migrate: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return migration{}, fmt.Errorf("migrate: %w", err)
	}
	return m, nil
}

func unixNano(t time.Time) int64 { return t.UTC().UnixNano() }

// Times a query bound can name without overflowing UnixNano.
var (
	minNanoTime = time.Unix(0, math.MinInt64).UTC()
	maxNanoTime = time.Unix(0, math.MaxInt64).UTC()
)

// boundNano is unixNano for a query bound: outside the years 1678–2262,
// which nanoseconds since 1970 cannot hold, it is the earliest or latest
// time there is, instead of a value that wrapped around.
func boundNano(t time.Time) int64 {
	switch {
	case t.Before(minNanoTime):
		return math.MinInt64
	case t.After(maxNanoTime):
		return math.MaxInt64
	}
	return unixNano(t)
}

func fromNano(n int64) time.Time { return time.Unix(0, n).UTC() }

// SyncFailedLog is the line of the first failed fsync of a database, of
// its write-ahead log (walSync) or at a checkpoint (checkpointer), told
// by the one rule both go through (walSync.failLocked): from then on the
// database takes no durable commit (ErrSyncFailed) until the process is
// restarted. Its err says which fsync failed.
const SyncFailedLog = "database fsync failed (write-ahead log or checkpoint); no durable commit until a restart"

// WriterConnReplacedLog is the line of a database writer's connection
// found unusable (its next BEGIN failed: a transaction left open on it by
// a COMMIT and a ROLLBACK that failed, or a connection the driver gave
// up) and replaced by a fresh one of the pool. Told at each replacement;
// err says what the BEGIN met.
const WriterConnReplacedLog = "database writer's connection was unusable; replaced by a fresh one"

// CheckpointFailedLog is the line of a checkpoint that failed before any
// fsync (a full disk, say): the next commit's checkpoint tries again, and
// the log keeps every page until one succeeds. Told once until then.
const CheckpointFailedLog = "database checkpoint failed; the next commit's tries again"

func (o *options) checkpointFailed(path string) func(error) {
	return func(err error) {
		o.log.Warn(CheckpointFailedLog, "database", filepath.Base(path), "err", err)
	}
}

// writerConnReplaced returns what tells that the writer of the database
// at path replaced its connection (WriterConnReplacedLog).
func (o *options) writerConnReplaced(path string) func(error) {
	return func(err error) {
		o.log.Warn(WriterConnReplacedLog, "database", filepath.Base(path), "err", err)
	}
}

// syncFailed returns what tells, once, that the fsync of the log of the
// database at path failed for good.
func (o *options) syncFailed(path string) func(error) {
	return func(err error) {
		o.log.Error(SyncFailedLog, "database", filepath.Base(path), "err", err)
	}
}
