package localstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// CommitmentStore implements pipeline.CommitmentStore on the commitments
// table: the transaction as JSON, with its state, due time and version in
// columns for the due query and the conditional update.
type CommitmentStore struct{ b binding }

// CreateCommitment implements pipeline.CommitmentStore.
func (c *CommitmentStore) CreateCommitment(ctx context.Context, tx pipeline.CommitmentTransaction) (pipeline.CommitmentTransaction, bool, error) {
	if tx.ID == "" {
		return tx, false, errors.New("localstore: create commitment: no id")
	}
	tx.Version = 1
	var stored pipeline.CommitmentTransaction
	created := false
	err := c.b.write(ctx, func(t *querier) error {
		have, err := getCommitment(ctx, t, tx.ID)
		switch {
		case err == nil:
			stored = have
			return nil
		case !errors.Is(err, pipeline.ErrNotFound):
			return err
		}
		body, err := json.Marshal(tx)
		if err != nil {
			return fmt.Errorf("localstore: create commitment: %w", err)
		}
		if _, err := t.ExecContext(ctx, `INSERT INTO commitments(id, state, next_attempt, version, received_at, record) VALUES (?, ?, ?, ?, ?, ?)`,
			tx.ID, string(tx.State), unixNano(tx.NextAttempt), tx.Version, unixNano(tx.ReceivedAt), string(body)); err != nil {
			return fmt.Errorf("localstore: create commitment: %w", err)
		}
		stored, created = tx, true
		return linkCommitmentStudies(ctx, t, tx)
	})
	return stored, created, err
}

// GetCommitment implements pipeline.CommitmentStore.
func (c *CommitmentStore) GetCommitment(ctx context.Context, id string) (pipeline.CommitmentTransaction, error) {
	q, err := c.b.q()
	if err != nil {
		return pipeline.CommitmentTransaction{}, err
	}
	return getCommitment(ctx, q, id)
}

func getCommitment(ctx context.Context, q *querier, id string) (pipeline.CommitmentTransaction, error) {
	return getRecord[pipeline.CommitmentTransaction](ctx, q, "commitment", `SELECT record FROM commitments WHERE id = ?`, id)
}

// UpdateCommitment implements pipeline.CommitmentStore.
func (c *CommitmentStore) UpdateCommitment(ctx context.Context, tx pipeline.CommitmentTransaction) (pipeline.CommitmentTransaction, error) {
	prev := tx.Version
	tx.Version++
	body, err := json.Marshal(tx)
	if err != nil {
		return tx, fmt.Errorf("localstore: update commitment: %w", err)
	}
	err = c.b.write(ctx, func(t *querier) error {
		res, err := t.ExecContext(ctx, `UPDATE commitments SET state = ?, next_attempt = ?, version = ?, record = ? WHERE id = ? AND version = ?`,
			string(tx.State), unixNano(tx.NextAttempt), tx.Version, string(body), tx.ID, prev)
		if err != nil {
			return fmt.Errorf("localstore: update commitment: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("localstore: update commitment: %w", err)
		} else if n == 0 {
			if _, err := getCommitment(ctx, t, tx.ID); err != nil {
				return err
			}
			return fmt.Errorf("localstore: update commitment: %w", pipeline.ErrConditionFailed)
		}
		return linkCommitmentStudies(ctx, t, tx)
	})
	if err != nil {
		tx.Version = prev
		return tx, err
	}
	return tx, nil
}

// linkCommitmentStudies links a transaction to the studies of its committed
// instances, for StudyCommitments, once for each set of them: every study
// (AllStudies) when the evaluation has just decided them, else the studies
// it names (Studies: a transaction created with them, or one written before
// AllStudies). The evaluation runs again at every poll while instances are
// awaited, and a run writes a transaction several times with the set it
// decided: each write inserted every link again, some 50,000 for a
// transaction of 50,000 studies. A set whose digest is the one the links
// were written for (studies_digest) is linked already, and so is the named
// part of a set linked whole, which a transaction read back has in place of
// AllStudies. Links are never removed.
func linkCommitmentStudies(ctx context.Context, t *querier, tx pipeline.CommitmentTransaction) error {
	studies := tx.AllStudies
	if studies == nil {
		studies = tx.Studies
	}
	if len(studies) == 0 {
		return nil
	}
	var linked string
	if err := t.QueryRowContext(ctx, `SELECT studies_digest FROM commitments WHERE id = ?`, tx.ID).Scan(&linked); err != nil {
		return fmt.Errorf("localstore: commitment studies: %w", err)
	}
	d := studiesDigest(studies)
	if d == linked || (tx.AllStudies == nil && linked != "") {
		return nil
	}
	for _, s := range studies {
		if _, err := t.ExecContext(ctx, `INSERT INTO commitment_studies(study_uid, id) VALUES (?, ?) ON CONFLICT DO NOTHING`, s, tx.ID); err != nil {
			return fmt.Errorf("localstore: commitment studies: %w", err)
		}
	}
	if _, err := t.ExecContext(ctx, `UPDATE commitments SET studies_digest = ? WHERE id = ?`, d, tx.ID); err != nil {
		return fmt.Errorf("localstore: commitment studies: %w", err)
	}
	return nil
}

// studiesDigest identifies a set of studies given in order (the
// evaluation sorts them).
func studiesDigest(studies []string) string {
	h := sha256.New()
	for _, s := range studies {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// DueCommitments implements pipeline.CommitmentStore.
func (c *CommitmentStore) DueCommitments(ctx context.Context, now time.Time, limit int) ([]pipeline.CommitmentTransaction, error) {
	return c.list(ctx, `SELECT record FROM commitments WHERE state IN ('pending', 'reporting') AND next_attempt <= ?
		ORDER BY next_attempt, id LIMIT ?`, unixNano(now), limitOr(limit, 100))
}

// LeaseCommitmentPeer implements pipeline.CommitmentStore on the
// commitment_peer_leases table.
func (c *CommitmentStore) LeaseCommitmentPeer(ctx context.Context, ae, holder string, now, until time.Time) (time.Time, bool, error) {
	held, ok := until, false
	err := c.b.write(ctx, func(t *querier) error {
		var have string
		var end int64
		switch err := t.QueryRowContext(ctx, `SELECT holder, until FROM commitment_peer_leases WHERE ae = ?`, ae).Scan(&have, &end); {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("localstore: lease commitment peer: %w", err)
		case have != holder && end > unixNano(now):
			held = time.Unix(0, end).UTC()
			return nil
		}
		if _, err := t.ExecContext(ctx, `INSERT INTO commitment_peer_leases(ae, holder, until) VALUES (?, ?, ?)
			ON CONFLICT(ae) DO UPDATE SET holder = excluded.holder, until = excluded.until`, ae, holder, unixNano(until)); err != nil {
			return fmt.Errorf("localstore: lease commitment peer: %w", err)
		}
		ok = true
		return nil
	})
	return held, ok, err
}

// ReleaseCommitmentPeer implements pipeline.CommitmentStore.
func (c *CommitmentStore) ReleaseCommitmentPeer(ctx context.Context, ae, holder string) error {
	return c.b.write(ctx, func(t *querier) error {
		if _, err := t.ExecContext(ctx, `DELETE FROM commitment_peer_leases WHERE ae = ? AND holder = ?`, ae, holder); err != nil {
			return fmt.Errorf("localstore: release commitment peer: %w", err)
		}
		return nil
	})
}

// ReleaseLeases ends, at now, every lease a worker of the database held: the transactions leased
// (pipeline.CommitmentTransaction.ReleasedLease) are due at once, the requesting AEs' leases
// (LeaseCommitmentPeer) gone. It returns how many transactions it made due. Only for the database's sole user at
// its start, before its first run: local mode, under the data directory's lock (local.open), whose holder is the
// one process that may run a worker on it, so a lease found is a run's that ended (killed, stopped
// mid-delivery) and no worker may still report under it. A transaction due by schedule (a retry's backoff, a poll)
// keeps its time.
func (c *CommitmentStore) ReleaseLeases(ctx context.Context, now time.Time) (int, error) {
	leased, err := c.list(ctx, `SELECT record FROM commitments WHERE state IN ('pending', 'reporting') AND next_attempt > ?`, unixNano(now))
	if err != nil {
		return 0, fmt.Errorf("localstore: release commitment leases: %w", err)
	}
	n := 0
	for _, tx := range leased {
		tx, ok := tx.ReleasedLease(now)
		if !ok {
			continue
		}
		if _, err := c.UpdateCommitment(ctx, tx); err != nil {
			return n, fmt.Errorf("localstore: release commitment leases: %w", err)
		}
		n++
	}
	err = c.b.write(ctx, func(t *querier) error {
		if _, err := t.ExecContext(ctx, `DELETE FROM commitment_peer_leases`); err != nil {
			return fmt.Errorf("localstore: release commitment peer leases: %w", err)
		}
		return nil
	})
	return n, err
}

// StudyCommitments returns the transactions that committed instances of a
// study, newest first (the portal's commitment state per study).
func (c *CommitmentStore) StudyCommitments(ctx context.Context, studyUID string) ([]pipeline.CommitmentTransaction, error) {
	return c.list(ctx, `SELECT c.record FROM commitment_studies s JOIN commitments c ON c.id = s.id
		WHERE s.study_uid = ? ORDER BY c.received_at DESC, c.id LIMIT ?`, studyUID, 100)
}

// Commitment outcomes, as Commitments filters by them: the result decided
// with every instance committed, or with failures. A transaction whose
// instances are still waited for has neither yet.
const (
	CommitmentSuccess = "success"
	CommitmentFailure = "failure"
)

// CommitmentOutcomes are the outcomes Commitments filters by.
var CommitmentOutcomes = []string{CommitmentSuccess, CommitmentFailure}

// CommitmentOutcome is tx's outcome as Commitments filters by it:
// CommitmentSuccess or CommitmentFailure once its result is decided, ""
// while its instances are waited for.
func CommitmentOutcome(tx pipeline.CommitmentTransaction) string {
	switch {
	case tx.State == pipeline.CommitmentPending:
		return ""
	case tx.Failed > 0:
		return CommitmentFailure
	}
	return CommitmentSuccess
}

// CommitmentQuery selects Storage Commitment transactions, newest first.
// Empty fields do not filter.
type CommitmentQuery struct {
	CallingAE string
	Outcome   string // CommitmentSuccess or CommitmentFailure
	Limit     int    // 0: 50; at most 500
	Cursor    string // CommitmentPage.Next of the previous page
}

// cursorScope is the scope of q's cursors: its filters.
func (q CommitmentQuery) cursorScope() *pipeline.CursorScope {
	return pipeline.NewCursorScope("commitments").Text(q.CallingAE, q.Outcome)
}

// CommitmentPage is one page of Commitments.
type CommitmentPage struct {
	Transactions []pipeline.CommitmentTransaction `json:"transactions"`
	Next         string                           `json:"next,omitempty"`
}

// Commitments lists the transactions q selects, most recently received
// first, a page at a time: those that named no indexed study too, which
// no study's page shows.
func (c *CommitmentStore) Commitments(ctx context.Context, q CommitmentQuery) (CommitmentPage, error) {
	var where []string
	var args []any
	if q.CallingAE != "" {
		where, args = append(where, "json_extract(record, '$.callingAe') = ?"), append(args, q.CallingAE)
	}
	// As CommitmentOutcome has it.
	decided := "state != '" + string(pipeline.CommitmentPending) + "'"
	switch q.Outcome {
	case "":
	case CommitmentSuccess:
		where = append(where, decided, "json_extract(record, '$.failed') = 0")
	case CommitmentFailure:
		where = append(where, decided, "json_extract(record, '$.failed') > 0")
	default:
		return CommitmentPage{}, &SearchError{"commitments", "outcome is " + OneOf(CommitmentOutcomes)}
	}
	if q.Cursor != "" {
		ct, cs, err := openCursor(q.cursorScope(), q.Cursor)
		if err != nil {
			return CommitmentPage{}, fmt.Errorf("localstore: commitments: %w", err)
		}
		where, args = append(where, "(received_at < ? OR (received_at = ? AND rowid < ?))"), append(args, ct, ct, cs)
	}
	limit := pipeline.PageLimit(q.Limit, 50, 500)
	stmt := `SELECT rowid, received_at, record FROM commitments`
	if len(where) > 0 {
		stmt += " WHERE " + strings.Join(where, " AND ")
	}
	stmt += " ORDER BY received_at DESC, rowid DESC LIMIT ?"
	db, err := c.b.q()
	if err != nil {
		return CommitmentPage{}, err
	}
	rows, err := db.QueryContext(ctx, stmt, append(args, limit+1)...)
	if err != nil {
		return CommitmentPage{}, fmt.Errorf("localstore: commitments: %w", err)
	}
	txs, next, err := readPage[pipeline.CommitmentTransaction](rows, limit)
	if err != nil {
		return CommitmentPage{}, fmt.Errorf("localstore: commitments: %w", err)
	}
	return CommitmentPage{Transactions: txs, Next: q.cursorScope().Seal(next)}, nil
}

func (c *CommitmentStore) list(ctx context.Context, stmt string, args ...any) ([]pipeline.CommitmentTransaction, error) {
	q, err := c.b.q()
	if err != nil {
		return nil, err
	}
	return queryRecords[pipeline.CommitmentTransaction](ctx, q, "commitments", stmt, args...)
}
