package localstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// AuditStore implements pipeline.AuditStore on the audit table.
type AuditStore struct{ b binding }

// Append writes rec unless a record with its ID exists.
func (a *AuditStore) Append(ctx context.Context, rec pipeline.AuditRecord) (bool, error) {
	body, err := json.Marshal(rec)
	if err != nil {
		return false, fmt.Errorf("localstore: audit append: %w", err)
	}
	day := rec.Day
	if day == "" {
		day = rec.Time.UTC().Format("2006-01-02")
	}
	var appended bool
	err = a.b.write(ctx, func(tx *querier) error {
		res, err := tx.ExecContext(ctx,
			`INSERT INTO audit(id, time, day, outcome, calling_ae, called_ae, patient_id, study_uid, sop_uid, object_key, record)
			 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING`,
			rec.ID, unixNano(rec.Time), day, rec.Outcome, rec.CallingAE, rec.CalledAE, rec.PatientID,
			rec.StudyInstanceUID, rec.SOPInstanceUID, rec.ObjectKey, string(body))
		if err != nil {
			return fmt.Errorf("localstore: audit append: %w", err)
		}
		n, _ := res.RowsAffected()
		appended = n == 1
		return nil
	})
	return appended, err
}

// Query returns records matching q, newest first. Every field of q filters
// (SQLite needs no single access path); Cursor holds the time and sequence
// number below which the next page starts, sealed to q
// (pipeline.AuditQuery.CursorScope).
func (a *AuditStore) Query(ctx context.Context, q pipeline.AuditQuery) (pipeline.AuditPage, error) {
	var where []string
	var args []any
	add := func(cond string, v any) { where, args = append(where, cond), append(args, v) }
	if q.SOPInstanceUID != "" {
		add("sop_uid = ?", q.SOPInstanceUID)
	}
	if q.PatientID != "" {
		add("patient_id = ?", q.PatientID)
	}
	if q.StudyInstanceUID != "" {
		add("study_uid = ?", q.StudyInstanceUID)
	}
	if q.CallingAE != "" {
		add("calling_ae = ?", q.CallingAE)
	}
	if q.Day != "" {
		add("day = ?", q.Day)
	}
	if q.Outcome != "" {
		add("outcome = ?", q.Outcome)
	}
	if !q.From.IsZero() {
		add("time >= ?", boundNano(q.From))
	}
	if !q.To.IsZero() {
		add("time <= ?", boundNano(q.To))
	}
	if q.Cursor != "" {
		ct, cs, err := openCursor(q.CursorScope(), q.Cursor)
		if err != nil {
			return pipeline.AuditPage{}, fmt.Errorf("localstore: audit query: %w", err)
		}
		where = append(where, "(time < ? OR (time = ? AND seq < ?))")
		args = append(args, ct, ct, cs)
	}
	limit := q.PageSize()
	stmt := `SELECT seq, time, record FROM audit`
	if len(where) > 0 {
		stmt += " WHERE " + strings.Join(where, " AND ")
	}
	stmt += " ORDER BY time DESC, seq DESC LIMIT ?"
	args = append(args, limit+1)
	db, err := a.b.q()
	if err != nil {
		return pipeline.AuditPage{}, err
	}
	rows, err := db.QueryContext(ctx, stmt, args...)
	if err != nil {
		return pipeline.AuditPage{}, fmt.Errorf("localstore: audit query: %w", err)
	}
	page, err := readAuditPage(rows, limit)
	if err != nil {
		return pipeline.AuditPage{}, fmt.Errorf("localstore: audit query: %w", err)
	}
	page.Next = q.CursorScope().Seal(page.Next)
	return page, nil
}

// readAuditPage reads up to limit rows of (seq, time, record) into a page
// of audit records, and closes rows (readPage).
func readAuditPage(rows *sql.Rows, limit int) (pipeline.AuditPage, error) {
	recs, next, err := readPage[pipeline.AuditRecord](rows, limit)
	if err != nil {
		return pipeline.AuditPage{}, err
	}
	return pipeline.AuditPage{Records: recs, Next: next}, nil
}

// readPage reads up to limit rows of (seq, time, JSON record), and closes
// rows. A row past limit means there is more: next is then the cursor of
// the last record kept (formatCursor's).
func readPage[T any](rows *sql.Rows, limit int) ([]T, string, error) {
	defer rows.Close()
	out := []T{}
	var lastSeq, lastTime int64
	for rows.Next() {
		var seq, t int64
		var body string
		if err := rows.Scan(&seq, &t, &body); err != nil {
			return nil, "", err
		}
		if len(out) == limit {
			return out, formatCursor(lastTime, lastSeq), nil
		}
		var rec T
		if err := json.Unmarshal([]byte(body), &rec); err != nil {
			return nil, "", fmt.Errorf("record %d: %w", seq, err)
		}
		out = append(out, rec)
		lastSeq, lastTime = seq, t
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	return out, "", nil
}

// formatCursor is the "<time>.<seq>" place of a row in the pages of the
// audit trail, of the associations, of an association's records and of
// the commitments, which each seals to its query (pipeline.CursorScope);
// openCursor reads it.
func formatCursor(t, seq int64) string {
	return strconv.FormatInt(t, 10) + "." + strconv.FormatInt(seq, 10)
}

// openCursor reads the "<time>.<seq>" place (formatCursor's) of a cursor
// sealed to scope. The error wraps pipeline.ErrBadCursor and quotes
// nothing of the cursor (a cursor's seal is a digest of its query, which
// may name a patient).
func openCursor(scope *pipeline.CursorScope, cursor string) (t, seq int64, err error) {
	place, err := scope.Open(cursor)
	if err != nil {
		return 0, 0, err
	}
	ts, ss, _ := strings.Cut(place, ".")
	t, err1 := strconv.ParseInt(ts, 10, 64)
	seq, err2 := strconv.ParseInt(ss, 10, 64)
	if err1 != nil || err2 != nil || seq <= 0 {
		return 0, 0, fmt.Errorf("a cursor's place is not a row's: %w", pipeline.ErrBadCursor)
	}
	return t, seq, nil
}
