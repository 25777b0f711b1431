package localstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// IndexStore implements pipeline.IndexStore on the studies and instances
// tables. A study row keeps its StudySummary as JSON next to the columns
// StableStudies and MarkAnnounced need; series are aggregated from the
// instances on read.
type IndexStore struct{ b binding }

// UpsertInstance indexes in once per distinct (SOP Instance UID, SHA-256).
func (s *IndexStore) UpsertInstance(ctx context.Context, in pipeline.InstanceRecord) (pipeline.UpsertResult, error) {
	if in.StudyInstanceUID == "" || in.SOPInstanceUID == "" {
		return pipeline.UpsertResult{}, fmt.Errorf("localstore: upsert instance: study and SOP instance UID are required")
	}
	var res pipeline.UpsertResult
	err := s.b.write(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = upsertInstance(ctx, tx, in)
		return err
	})
	return res, err
}

func upsertInstance(ctx context.Context, tx *sql.Tx, in pipeline.InstanceRecord) (pipeline.UpsertResult, error) {
	rows, err := tx.QueryContext(ctx, `SELECT sha256 FROM instances WHERE sop_uid = ?`, in.SOPInstanceUID)
	if err != nil {
		return pipeline.UpsertResult{}, fmt.Errorf("localstore: upsert instance: %w", err)
	}
	var shas []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return pipeline.UpsertResult{}, fmt.Errorf("localstore: upsert instance: %w", err)
		}
		shas = append(shas, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return pipeline.UpsertResult{}, fmt.Errorf("localstore: upsert instance: %w", err)
	}
	outcome := pipeline.InstanceNew
	switch {
	case slices.Contains(shas, in.SHA256):
		st, err := getSummary(ctx, tx, in.StudyInstanceUID)
		if err != nil {
			return pipeline.UpsertResult{}, err
		}
		return pipeline.UpsertResult{Outcome: pipeline.InstanceDuplicate, Study: st}, nil
	case len(shas) > 0:
		outcome = pipeline.InstanceConflict
		in.Conflict = true
	}

	var seriesKnown int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM instances WHERE study_uid = ? AND series_uid = ?`,
		in.StudyInstanceUID, in.SeriesInstanceUID).Scan(&seriesKnown); err != nil {
		return pipeline.UpsertResult{}, fmt.Errorf("localstore: upsert instance: %w", err)
	}
	body, err := json.Marshal(in)
	if err != nil {
		return pipeline.UpsertResult{}, fmt.Errorf("localstore: upsert instance: %w", err)
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO instances(sop_uid, sha256, study_uid, series_uid, object_key, received_at, record) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		in.SOPInstanceUID, in.SHA256, in.StudyInstanceUID, in.SeriesInstanceUID, in.ObjectKey, unixNano(in.ReceivedAt), string(body)); err != nil {
		return pipeline.UpsertResult{}, fmt.Errorf("localstore: upsert instance: %w", err)
	}

	st, err := getSummary(ctx, tx, in.StudyInstanceUID)
	isNewStudy := errors.Is(err, pipeline.ErrNotFound)
	if err != nil && !isNewStudy {
		return pipeline.UpsertResult{}, err
	}
	if isNewStudy {
		st = pipeline.StudySummary{StudyInstanceUID: in.StudyInstanceUID, FirstReceived: in.ReceivedAt, LastReceived: in.ReceivedAt}
	}
	// The first non-empty value of a study-level attribute wins, so a later
	// conflicting instance cannot silently rewrite the study's identity.
	fill := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	fill(&st.PatientID, in.PatientID)
	fill(&st.PatientName, in.PatientName)
	fill(&st.PatientBirthDate, in.PatientBirthDate)
	fill(&st.PatientSex, in.PatientSex)
	fill(&st.StudyDate, in.StudyDate)
	fill(&st.StudyTime, in.StudyTime)
	fill(&st.StudyDescription, in.StudyDescription)
	fill(&st.AccessionNumber, in.AccessionNumber)
	st.Modalities = addSorted(st.Modalities, in.Modality)
	st.CallingAEs = addSorted(st.CallingAEs, in.CallingAE)
	if seriesKnown == 0 {
		st.SeriesCount++
	}
	if outcome == pipeline.InstanceNew {
		st.InstanceCount++
	} else {
		st.ConflictCount++
	}
	st.TotalBytes += in.Size
	if in.ReceivedAt.Before(st.FirstReceived) {
		st.FirstReceived = in.ReceivedAt
	}
	if in.ReceivedAt.After(st.LastReceived) {
		st.LastReceived = in.ReceivedAt
	}
	// Duplicates returned above: only new and conflicting content is
	// activity, the same rule as Revision.
	if at := in.Activity(); at.After(st.LastActivity) {
		st.LastActivity = at
	}
	st.Revision++
	if err := putSummary(ctx, tx, st, isNewStudy); err != nil {
		return pipeline.UpsertResult{}, err
	}
	return pipeline.UpsertResult{Outcome: outcome, Study: st}, nil
}

func addSorted(list []string, v string) []string {
	if v == "" || slices.Contains(list, v) {
		return list
	}
	list = append(list, v)
	sort.Strings(list)
	return list
}

// activityNano stores a zero LastActivity (a study last written before it
// existed) as the column default 0, so max() with last_received decides.
func activityNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return unixNano(t)
}

func getSummary(ctx context.Context, q querier, studyUID string) (pipeline.StudySummary, error) {
	var body string
	err := q.QueryRowContext(ctx, `SELECT record FROM studies WHERE study_uid = ?`, studyUID).Scan(&body)
	if errors.Is(err, sql.ErrNoRows) {
		return pipeline.StudySummary{}, fmt.Errorf("localstore: study: %w", pipeline.ErrNotFound)
	}
	if err != nil {
		return pipeline.StudySummary{}, fmt.Errorf("localstore: study: %w", err)
	}
	var st pipeline.StudySummary
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		return pipeline.StudySummary{}, fmt.Errorf("localstore: study: %w", err)
	}
	return st, nil
}

func putSummary(ctx context.Context, tx *sql.Tx, st pipeline.StudySummary, insert bool) error {
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
	st, err := getSummary(ctx, s.b.q(), studyUID)
	if err != nil {
		return pipeline.StudyDetail{}, err
	}
	rows, err := s.b.q().QueryContext(ctx,
		`SELECT record FROM instances WHERE study_uid = ? ORDER BY series_uid, received_at, sop_uid`, studyUID)
	if err != nil {
		return pipeline.StudyDetail{}, fmt.Errorf("localstore: get study: %w", err)
	}
	defer rows.Close()
	d := pipeline.StudyDetail{StudySummary: st, Series: []pipeline.SeriesSummary{}, Instances: []pipeline.InstanceRecord{}}
	series := map[string]*pipeline.SeriesSummary{}
	seen := map[string]bool{}
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return pipeline.StudyDetail{}, fmt.Errorf("localstore: get study: %w", err)
		}
		var in pipeline.InstanceRecord
		if err := json.Unmarshal([]byte(body), &in); err != nil {
			return pipeline.StudyDetail{}, fmt.Errorf("localstore: get study: %w", err)
		}
		d.Instances = append(d.Instances, in)
		ss := series[in.SeriesInstanceUID]
		if ss == nil {
			ss = &pipeline.SeriesSummary{SeriesInstanceUID: in.SeriesInstanceUID, FirstReceived: in.ReceivedAt, LastReceived: in.ReceivedAt}
			series[in.SeriesInstanceUID] = ss
		}
		if ss.Modality == "" {
			ss.Modality = in.Modality
		}
		if ss.SeriesNumber == "" {
			ss.SeriesNumber = in.SeriesNumber
		}
		if ss.SeriesDescription == "" {
			ss.SeriesDescription = in.SeriesDescription
		}
		if !seen[in.SOPInstanceUID] {
			seen[in.SOPInstanceUID] = true
			ss.InstanceCount++
		}
		ss.TotalBytes += in.Size
		if in.ReceivedAt.Before(ss.FirstReceived) {
			ss.FirstReceived = in.ReceivedAt
		}
		if in.ReceivedAt.After(ss.LastReceived) {
			ss.LastReceived = in.ReceivedAt
		}
	}
	if err := rows.Err(); err != nil {
		return pipeline.StudyDetail{}, fmt.Errorf("localstore: get study: %w", err)
	}
	for _, ss := range series {
		d.Series = append(d.Series, *ss)
	}
	sort.Slice(d.Series, func(i, j int) bool {
		a, b := d.Series[i], d.Series[j]
		if a.SeriesNumber != b.SeriesNumber {
			return seriesLess(a.SeriesNumber, b.SeriesNumber)
		}
		return a.SeriesInstanceUID < b.SeriesInstanceUID
	})
	return d, nil
}

// seriesLess orders series numbers numerically when both are numbers.
func seriesLess(a, b string) bool {
	var x, y int
	_, errA := fmt.Sscan(a, &x)
	_, errB := fmt.Sscan(b, &y)
	if errA == nil && errB == nil {
		return x < y
	}
	return a < b
}

// ListStudies returns study summaries, most recently received first.
func (s *IndexStore) ListStudies(ctx context.Context, q pipeline.StudyQuery) ([]pipeline.StudySummary, error) {
	stmt := `SELECT record FROM studies`
	var args []any
	if q.PatientID != "" {
		stmt += ` WHERE patient_id = ?`
		args = append(args, q.PatientID)
	}
	stmt += ` ORDER BY last_received DESC, study_uid LIMIT ?`
	args = append(args, limitOr(q.Limit, 100))
	return s.summaries(ctx, stmt, args...)
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
	rows, err := s.b.q().QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, fmt.Errorf("localstore: list studies: %w", err)
	}
	defer rows.Close()
	out := []pipeline.StudySummary{}
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("localstore: list studies: %w", err)
		}
		var st pipeline.StudySummary
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			return nil, fmt.Errorf("localstore: list studies: %w", err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("localstore: list studies: %w", err)
	}
	return out, nil
}

// MarkAnnounced records that version was announced describing revision; it
// fails with pipeline.ErrConditionFailed unless version follows the last one.
func (s *IndexStore) MarkAnnounced(ctx context.Context, studyUID string, revision, version int64, at time.Time) error {
	return s.b.write(ctx, func(tx *sql.Tx) error {
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

// EventPublished reports whether eventID is in the publish ledger.
func (s *IndexStore) EventPublished(ctx context.Context, eventID string) (bool, error) {
	var one int
	err := s.b.q().QueryRowContext(ctx, `SELECT 1 FROM published_events WHERE id = ?`, eventID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("localstore: event ledger: %w", err)
	}
	return true, nil
}

// MarkEventPublished adds eventID to the publish ledger (idempotent).
func (s *IndexStore) MarkEventPublished(ctx context.Context, eventID string, at time.Time) error {
	_, err := s.b.q().ExecContext(ctx,
		`INSERT INTO published_events(id, time) VALUES (?, ?) ON CONFLICT(id) DO NOTHING`, eventID, unixNano(at))
	if err != nil {
		return fmt.Errorf("localstore: event ledger: %w", err)
	}
	return nil
}
