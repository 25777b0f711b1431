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

// IndexStore implements pipeline.IndexStore on the studies and instances
// tables. A study row keeps its StudySummary as JSON next to the columns
// StableStudies and MarkAnnounced need; series are aggregated from the
// instances on read.
type IndexStore struct{ b binding }

// UpsertInstance indexes in once per distinct (SOP Instance UID, content identity).
func (s *IndexStore) UpsertInstance(ctx context.Context, in pipeline.InstanceRecord) (pipeline.UpsertResult, error) {
	if in.StudyInstanceUID == "" || in.SOPInstanceUID == "" {
		return pipeline.UpsertResult{}, fmt.Errorf("localstore: upsert instance: study and SOP instance UID are required")
	}
	var res pipeline.UpsertResult
	err := s.b.write(ctx, func(tx *querier) error {
		var err error
		res, err = upsertInstance(ctx, tx, in)
		return err
	})
	return res, err
}

// upsertRead is everything an upsert decides on, in one statement: the
// content first indexed under the SOP Instance UID in any study and the
// study it named (the conflict rule), the record already indexed for this
// content in this study (a duplicate), whether the series has an instance
// in the study, and the study's summary. ?1..?4: SOP Instance UID,
// content identity, Study and Series Instance UID.
const upsertRead = `SELECT
	(SELECT content_identity FROM instances WHERE sop_uid = ?1 ORDER BY rowid LIMIT 1),
	(SELECT study_uid FROM instances WHERE sop_uid = ?1 ORDER BY rowid LIMIT 1),
	(SELECT record FROM instances WHERE sop_uid = ?1 AND content_identity = ?2 AND study_uid = ?3),
	EXISTS (SELECT 1 FROM instances WHERE study_uid = ?3 AND series_uid = ?4),
	(SELECT record FROM studies WHERE study_uid = ?3)`

func upsertInstance(ctx context.Context, tx *querier, in pipeline.InstanceRecord) (pipeline.UpsertResult, error) {
	var firstContent, firstStudy, prevBody, studyBody sql.NullString
	var seriesKnown bool
	err := tx.QueryRowContext(ctx, upsertRead, in.SOPInstanceUID, in.ContentIdentity, in.StudyInstanceUID, in.SeriesInstanceUID).
		Scan(&firstContent, &firstStudy, &prevBody, &seriesKnown, &studyBody)
	if err != nil {
		return pipeline.UpsertResult{}, fmt.Errorf("localstore: upsert instance: %w", err)
	}
	if prevBody.Valid {
		var prev pipeline.InstanceRecord
		if err := json.Unmarshal([]byte(prevBody.String), &prev); err != nil {
			return pipeline.UpsertResult{}, fmt.Errorf("localstore: upsert instance: %w", err)
		}
		st, err := decodeRecord[pipeline.StudySummary]("study", studyBody)
		if err != nil {
			return pipeline.UpsertResult{}, err
		}
		if st.NoteResend(prev, in) {
			if err := putSummary(ctx, tx, st, false); err != nil {
				return pipeline.UpsertResult{}, err
			}
		}
		return pipeline.UpsertResult{Outcome: pipeline.InstanceDuplicate, Study: st, Instance: prev}, nil
	}
	// The first content indexed under this SOP Instance UID, in any study.
	outcome := pipeline.ContentOutcome(pipeline.FirstContent{ContentIdentity: firstContent.String, StudyInstanceUID: firstStudy.String}, in)
	st, err := decodeRecord[pipeline.StudySummary]("study", studyBody)
	isNewStudy := errors.Is(err, pipeline.ErrNotFound)
	if err != nil && !isNewStudy {
		return pipeline.UpsertResult{}, err
	}
	st.Count(in, outcome, !seriesKnown)
	in = in.Indexed(outcome, st.Merge(in))

	body, err := json.Marshal(in)
	if err != nil {
		return pipeline.UpsertResult{}, fmt.Errorf("localstore: upsert instance: %w", err)
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO instances(sop_uid, content_identity, study_uid, series_uid, object_key, received_at, record) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		in.SOPInstanceUID, in.ContentIdentity, in.StudyInstanceUID, in.SeriesInstanceUID, in.ObjectKey, unixNano(in.ReceivedAt), string(body)); err != nil {
		return pipeline.UpsertResult{}, fmt.Errorf("localstore: upsert instance: %w", err)
	}
	if err := putSummary(ctx, tx, st, isNewStudy); err != nil {
		return pipeline.UpsertResult{}, err
	}
	return pipeline.UpsertResult{Outcome: outcome, Study: st, Instance: in}, nil
}

// activityNano stores a zero LastActivity (a study last written before it
// existed) as the column default 0, so max() with last_received decides.
func activityNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return unixNano(t)
}

func getSummary(ctx context.Context, q *querier, studyUID string) (pipeline.StudySummary, error) {
	return getRecord[pipeline.StudySummary](ctx, q, "study", `SELECT record FROM studies WHERE study_uid = ?`, studyUID)
}

func putSummary(ctx context.Context, tx *querier, st pipeline.StudySummary, insert bool) error {
	body, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("localstore: put study: %w", err)
	}
	if insert {
		_, err = tx.ExecContext(ctx,
			`INSERT INTO studies(study_uid, patient_id, last_received, last_activity, revision, announced_revision, announced_version, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			st.StudyInstanceUID, st.PatientID, unixNano(st.LastReceived), activityNano(st.LastActivity), st.Revision, st.AnnouncedRevision, st.AnnouncedVersion, string(body))
	} else {
		_, err = tx.ExecContext(ctx,
			`UPDATE studies SET patient_id = ?, last_received = ?, last_activity = ?, revision = ?, announced_revision = ?, announced_version = ?, record = ? WHERE study_uid = ?`,
			st.PatientID, unixNano(st.LastReceived), activityNano(st.LastActivity), st.Revision, st.AnnouncedRevision, st.AnnouncedVersion, string(body), st.StudyInstanceUID)
	}
	if err != nil {
		return fmt.Errorf("localstore: put study: %w", err)
	}
	return nil
}

// GetStudy returns the study with its series and instances.
func (s *IndexStore) GetStudy(ctx context.Context, studyUID string) (pipeline.StudyDetail, error) {
	q, err := s.b.q()
	if err != nil {
		return pipeline.StudyDetail{}, err
	}
	st, err := getSummary(ctx, q, studyUID)
	if err != nil {
		return pipeline.StudyDetail{}, err
	}
	rows, err := q.QueryContext(ctx, `SELECT record FROM instances WHERE study_uid = ?`, studyUID)
	if err != nil {
		return pipeline.StudyDetail{}, fmt.Errorf("localstore: get study: %w", err)
	}
	defer rows.Close()
	var instances []pipeline.InstanceRecord
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return pipeline.StudyDetail{}, fmt.Errorf("localstore: get study: %w", err)
		}
		var in pipeline.InstanceRecord
		if err := json.Unmarshal([]byte(body), &in); err != nil {
			return pipeline.StudyDetail{}, fmt.Errorf("localstore: get study: %w", err)
		}
		instances = append(instances, in)
	}
	if err := rows.Err(); err != nil {
		return pipeline.StudyDetail{}, fmt.Errorf("localstore: get study: %w", err)
	}
	rejected, err := tallyRejected(ctx, q, studyUID, instances)
	if err != nil {
		return pipeline.StudyDetail{}, fmt.Errorf("localstore: get study: %w", err)
	}
	return pipeline.NewStudyDetail(st, instances, rejected), nil
}

// tallyRejected counts the study's rejected rows a row at a time
// (pipeline.RejectedTally), holding none of them.
func tallyRejected(ctx context.Context, q *querier, studyUID string, instances []pipeline.InstanceRecord) (int, error) {
	rows, err := q.QueryContext(ctx, `SELECT sop_uid FROM rejected WHERE study_uid = ?`, studyUID)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	tally := pipeline.NewRejectedTally(instances)
	for rows.Next() {
		var sop string
		if err := rows.Scan(&sop); err != nil {
			return 0, err
		}
		tally.Add(sop)
	}
	return tally.Count(), rows.Err()
}

// NoteSent implements pipeline.IndexStore: the study's row, rewritten
// when its LastSent moves.
func (s *IndexStore) NoteSent(ctx context.Context, studyUID string, at time.Time) error {
	err := s.b.write(ctx, func(tx *querier) error {
		st, err := getSummary(ctx, tx, studyUID)
		switch {
		case err != nil:
			return err
		case !st.NoteSent(at):
			return nil
		}
		return putSummary(ctx, tx, st, false)
	})
	if err != nil {
		return fmt.Errorf("localstore: note sent: %w", err)
	}
	return nil
}

// RecordRejected implements pipeline.IndexStore: a row per SOP Instance
// UID in the study, written once.
func (s *IndexStore) RecordRejected(ctx context.Context, r pipeline.RejectedInstance) error {
	if !r.Valid() {
		return fmt.Errorf("localstore: record rejected: invalid UIDs")
	}
	err := s.b.write(ctx, func(tx *querier) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO rejected(study_uid, sop_uid) VALUES (?, ?) ON CONFLICT DO NOTHING`,
			r.StudyInstanceUID, r.SOPInstanceUID)
		return err
	})
	if err != nil {
		return fmt.Errorf("localstore: record rejected: %w", err)
	}
	return nil
}

// Instances implements pipeline.IndexStore: the rows under the UID, which an
// upsert writes in the transaction that counts them.
func (s *IndexStore) Instances(ctx context.Context, sop string) ([]pipeline.InstanceRecord, error) {
	q, err := s.b.q()
	if err != nil {
		return nil, err
	}
	return queryRecords[pipeline.InstanceRecord](ctx, q, "instances",
		`SELECT record FROM instances WHERE sop_uid = ? ORDER BY study_uid, content_identity`, sop)
}

// StableStudies returns studies quiet since quietSince with unannounced
// revisions. Quiet is judged on last activity (received or indexed);
// max() with last_received covers rows written before last_activity
// existed (0).
func (s *IndexStore) StableStudies(ctx context.Context, quietSince time.Time, limit int) ([]pipeline.StudySummary, error) {
	return s.summaries(ctx,
		`SELECT record FROM studies WHERE max(last_received, last_activity) <= ? AND revision > announced_revision ORDER BY max(last_received, last_activity), study_uid LIMIT ?`,
		unixNano(quietSince), limitOr(limit, 100))
}

func (s *IndexStore) summaries(ctx context.Context, stmt string, args ...any) ([]pipeline.StudySummary, error) {
	q, err := s.b.q()
	if err != nil {
		return nil, err
	}
	return queryRecords[pipeline.StudySummary](ctx, q, "list studies", stmt, args...)
}

// MarkAnnounced records that version was announced describing revision; it
// fails with pipeline.ErrConditionFailed unless version follows the last one.
func (s *IndexStore) MarkAnnounced(ctx context.Context, studyUID string, revision, version int64, at time.Time) error {
	return s.b.write(ctx, func(tx *querier) error {
		st, err := getSummary(ctx, tx, studyUID)
		if err != nil {
			return err
		}
		if st.AnnouncedVersion != version-1 {
			return fmt.Errorf("localstore: mark announced version %d (study at version %d): %w",
				version, st.AnnouncedVersion, pipeline.ErrConditionFailed)
		}
		st.AnnouncedVersion, st.AnnouncedRevision = version, revision
		return putSummary(ctx, tx, st, false)
	})
}

// DeferAnnouncement moves the study's last activity forward to at, which
// StableStudies orders and filters by (last_activity, no column of its own:
// a failed announcement restarts the quiet period as an instance does).
func (s *IndexStore) DeferAnnouncement(ctx context.Context, studyUID string, at time.Time) error {
	return s.b.write(ctx, func(tx *querier) error {
		st, err := getSummary(ctx, tx, studyUID)
		if err != nil {
			return err
		}
		if !at.After(st.LastActivity) {
			return nil
		}
		st.LastActivity = at
		return putSummary(ctx, tx, st, false)
	})
}

// EventPublished reports whether eventID is in the publish ledger: the
// outbox, which holds every event published under its id and is never
// pruned, and published_events, which holds the ids marked published
// without an event in the outbox (MarkEventPublished).
func (s *IndexStore) EventPublished(ctx context.Context, eventID string) (bool, error) {
	q, err := s.b.q()
	if err != nil {
		return false, err
	}
	var one int
	err = q.QueryRowContext(ctx, `SELECT 1 FROM outbox WHERE id = ?1 UNION ALL SELECT 1 FROM published_events WHERE id = ?1 LIMIT 1`, eventID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("localstore: event ledger: %w", err)
	}
	return true, nil
}

// MarkEventPublished adds eventID to the publish ledger (idempotent). An
// event the outbox holds is in the ledger already (EventPublished), and
// the pipeline publishes an event before it marks it: it writes no row
// then, so published_events does not grow with the events.
func (s *IndexStore) MarkEventPublished(ctx context.Context, eventID string, at time.Time) error {
	err := s.b.write(ctx, func(tx *querier) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO published_events(id, time) SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE id = ?1)
			 ON CONFLICT(id) DO NOTHING`, eventID, unixNano(at))
		return err
	})
	if err != nil {
		return fmt.Errorf("localstore: event ledger: %w", err)
	}
	return nil
}
