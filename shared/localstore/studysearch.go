package localstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Study statuses, as SearchStudies reports and filters them.
const (
	StatusReceiving  = "receiving"   // instances not yet announced
	StatusStable     = "stable"      // everything announced
	StatusHasRejects = "has rejects" // some of its instances were rejected and not stored since (rejectsSQL)
)

// Statuses are the study statuses, as SearchStudies filters by them.
var Statuses = []string{StatusReceiving, StatusStable, StatusHasRejects}

// cutShortSQL: audit record a, store-failed, is of a C-STORE the
// association's end cut short (its data set never completed: nothing was
// answered, nothing refused), by the rule of pipeline.AuditRecord.CutShort:
// its notAnswered, or, in records written before that was recorded, a
// reason beginning with one of pipeline.CutShortReasons (a record with
// no reason is refused, as CutShort reads it: COALESCE, not NULL), and a
// reason that names no refusal decided before the end
// (dimse.RefusedBeforeEnd: refused, not merely cut short).
var cutShortSQL = func() string {
	const reason = `COALESCE(json_extract(a.record, '$.reason'), '')`
	said := []string{`json_extract(a.record, '$.notAnswered') IS 1`}
	for _, p := range pipeline.CutShortReasons {
		said = append(said, fmt.Sprintf(`substr(%s, 1, %d) = %s`, reason, len(p), sqlText(p)))
	}
	return `(a.outcome = '` + associationaudit.EventStoreFailed + `' AND (` + strings.Join(said, " OR ") + `) AND instr(` + reason + `, ` + sqlText(dimse.RefusedBeforeEnd) + `) = 0)`
}()

// sqlText is s as an SQL string literal.
func sqlText(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// rejectOutcomesSQL: audit record a is a reject of its study: an
// instance quarantined by validation (pipeline.OutcomeRejected) or a
// C-STORE the SCP refused, or failed, once it had read its header
// (associationaudit.EventStoreFailed, which names the study the header
// gave: C001, A700, ...; the sender got the status, or it was decided and
// could not be sent). A C-STORE cut short (cutShortSQL) is none: the
// sender was told nothing, and the study counts it apart (cutShortsSQL).
var rejectOutcomesSQL = `(a.outcome IN ('` + pipeline.OutcomeRejected + `', '` + associationaudit.EventStoreFailed + `') AND NOT ` + cutShortSQL + `)`

// clearedSQL is the one definition of a reject cleared: the study of
// audit record a holds an instance of its SOP Instance UID. A good resend
// clears its rejects (the index holds it then), and so does one the study
// held already (an identical resend: its record is a duplicate, no reject).
// The status and count of rejectsSQL and the study page's marks
// (StudyRejects) both read it. The index is read through its key (sop_uid
// first).
const clearedSQL = `EXISTS (SELECT 1 FROM instances i WHERE i.sop_uid = a.sop_uid AND i.study_uid = a.study_uid)`

// rejectsSQL selects a study's outstanding rejects in the audit trail:
// its rejects (rejectOutcomesSQL) not cleared (clearedSQL). The study
// page lists every reject, cleared or not, with its time and its mark.
// The audit trail is read through audit_study_outcome.
var rejectsSQL = `FROM audit a WHERE a.study_uid = s.study_uid AND ` + rejectOutcomesSQL + `
	AND NOT ` + clearedSQL

// cutShortsSQL selects a study's C-STOREs cut short (cutShortSQL) not
// cleared: the study misses them as it misses its rejects, though nobody
// refused them.
var cutShortsSQL = `FROM audit a WHERE a.study_uid = s.study_uid AND a.outcome = '` + associationaudit.EventStoreFailed + `' AND ` + cutShortSQL + `
	AND NOT ` + clearedSQL

// statusSQL is the one definition of a study's status, over a studies row
// s and the audit trail's rejects of it.
var statusSQL = `CASE
	WHEN EXISTS (SELECT 1 ` + rejectsSQL + `) THEN '` + StatusHasRejects + `'
	WHEN s.revision > s.announced_revision THEN '` + StatusReceiving + `'
	ELSE '` + StatusStable + `' END`

// StudySearch selects studies the way a PACS administrator looks for
// them. Empty fields do not filter.
type StudySearch struct {
	StudyUID  string // one study
	Patient   string // in the patient's name (either name order) or ID, any case
	Accession string // accession number, exactly
	DateFrom  string // study date on or after, yyyymmdd (a DA value)
	DateTo    string // study date on or before, yyyymmdd (a DA value)
	Modality  string // one of the study's modalities
	CallingAE string // one of the AE titles that sent it
	Status    string // StatusReceiving, StatusStable or StatusHasRejects
	Limit     int    // 0: 50
	Cursor    string // StudyPage.Next of the previous page
}

// cursorScope is the scope of q's cursors: its filters, as given.
func (q StudySearch) cursorScope() *pipeline.CursorScope {
	return pipeline.NewCursorScope("studies").
		Text(q.StudyUID, q.Patient, q.Accession, q.DateFrom, q.DateTo, q.Modality, q.CallingAE, q.Status)
}

// MaxPatientWords bounds the words of a patient search: each is a clause
// run against every study's name, and SQLite refuses an expression past
// 1,000 deep (993 words failed).
const MaxPatientWords = 16

// SearchError is a search the store refuses (SearchStudies, Commitments):
// the searcher's to mend, as Reason says (the portal answers it with a
// 400). Search names the search that refused it.
type SearchError struct{ Search, Reason string }

func (e *SearchError) Error() string { return "localstore: " + e.Search + ": " + e.Reason }

// searchStudies names SearchStudies in its errors.
const searchStudies = "search studies"

// OneOf words a choice among values: "a", "a or b", "a, b or c".
func OneOf(values []string) string {
	if len(values) < 2 {
		return strings.Join(values, "")
	}
	return strings.Join(values[:len(values)-1], ", ") + " or " + values[len(values)-1]
}

// patientWords are the distinct words of a patient search, carets (name
// components) counting as spaces.
func patientWords(s string) []string {
	var out []string
	for _, w := range strings.Fields(strings.ReplaceAll(s, "^", " ")) {
		if !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	return out
}

// StudyRow is a study with its status, its count of rejects (instances
// quarantined, C-STOREs refused) and of C-STOREs cut short, not stored
// since (rejectsSQL, cutShortsSQL).
type StudyRow struct {
	pipeline.StudySummary
	Status          string `json:"status"`
	Rejects         int    `json:"rejects"`
	CutShortMissing int    `json:"cutShortMissing"`
	// PatientMismatch: the study's instances disagree on the patient (the
	// study's findings say on what; the instances' findings say which).
	PatientMismatch bool `json:"patientMismatch"`
}

// StudyPage is one page of SearchStudies, most recently received first.
type StudyPage struct {
	Studies []StudyRow `json:"studies"`
	Next    string     `json:"next,omitempty"`
}

// SearchStudies lists the studies matching q, most recently received
// first, a page at a time. The filters read the study's summary; a page
// costs the studies it passes over.
func (db *DB) SearchStudies(ctx context.Context, q StudySearch) (StudyPage, error) {
	var where []string
	var args []any
	add := func(cond string, vs ...any) { where, args = append(where, cond), append(args, vs...) }
	if q.StudyUID != "" {
		add("s.study_uid = ?", q.StudyUID)
	}
	if p := strings.ToLower(strings.TrimSpace(q.Patient)); p != "" {
		// The ID holds the text, or the name holds every word of it: the
		// name is searched with its components' carets as spaces, so
		// "doe john", "john doe" and "DOE^JOHN" all find DOE^JOHN.
		name := `lower(replace(ifnull(json_extract(s.record, '$.patientName'), ''), '^', ' '))`
		vals := []any{p}
		var words []string
		pw := patientWords(p)
		if len(pw) > MaxPatientWords {
			return StudyPage{}, &SearchError{searchStudies, fmt.Sprintf("a patient search has at most %d words, not %d", MaxPatientWords, len(pw))}
		}
		for _, w := range pw {
			words = append(words, "instr("+name+", ?) > 0")
			vals = append(vals, w)
		}
		add("(instr(lower(s.patient_id), ?) > 0 OR ("+strings.Join(words, " AND ")+"))", vals...)
	}
	if v := strings.TrimSpace(q.Accession); v != "" {
		add("json_extract(s.record, '$.accessionNumber') = ?", v)
	}
	// The index holds study dates as the pipeline normalizes them
	// (yyyy-mm-dd); compared without the dashes, as DA values.
	studyDate := `replace(json_extract(s.record, '$.studyDate'), '-', '')`
	if v := q.DateFrom; v != "" {
		add(studyDate+" >= ?", v)
	}
	if v := q.DateTo; v != "" {
		add(studyDate+" <= ?", v)
	}
	if v := strings.ToUpper(strings.TrimSpace(q.Modality)); v != "" {
		// A study whose record cut its modalities
		// (pipeline.StudySummary.AddModality) is searched in its
		// instances, which every counted content keeps with its modality,
		// as StudyDetail.ModalityCount counts them: only such a study's
		// instances are read.
		add(`(EXISTS (SELECT 1 FROM json_each(s.record, '$.modalities') WHERE value = ?)
			OR (json_extract(s.record, '$.modalitiesTruncated')
				AND EXISTS (SELECT 1 FROM instances i WHERE i.study_uid = s.study_uid AND json_extract(i.record, '$.modality') = ?)))`, v, v)
	}
	if v := strings.TrimSpace(q.CallingAE); v != "" {
		add("EXISTS (SELECT 1 FROM json_each(s.record, '$.callingAes') WHERE value = ?)", v)
	}
	if v := q.Status; v != "" {
		if !slices.Contains(Statuses, v) {
			return StudyPage{}, &SearchError{searchStudies, "status is " + OneOf(Statuses)}
		}
		add("("+statusSQL+") = ?", v)
	}
	if q.Cursor != "" {
		last, uid, err := openStudyCursor(q.cursorScope(), q.Cursor)
		if err != nil {
			return StudyPage{}, fmt.Errorf("localstore: search studies: %w", err)
		}
		add("(s.last_received < ? OR (s.last_received = ? AND s.study_uid > ?))", last, last, uid)
	}
	limit := pipeline.PageLimit(q.Limit, 50, 1000)
	stmt := `SELECT s.record, s.last_received, ` + statusSQL + `,
		(SELECT COUNT(*) ` + rejectsSQL + `), (SELECT COUNT(*) ` + cutShortsSQL + `)
		FROM studies s`
	if len(where) > 0 {
		stmt += " WHERE " + strings.Join(where, " AND ")
	}
	stmt += " ORDER BY s.last_received DESC, s.study_uid LIMIT ?"
	args = append(args, limit+1)
	rows, err := db.read.QueryContext(ctx, stmt, args...)
	if err != nil {
		return StudyPage{}, fmt.Errorf("localstore: search studies: %w", err)
	}
	defer rows.Close()
	page := StudyPage{Studies: []StudyRow{}}
	var lastReceived int64
	for rows.Next() {
		var body string
		var r StudyRow
		var received int64
		if err := rows.Scan(&body, &received, &r.Status, &r.Rejects, &r.CutShortMissing); err != nil {
			return StudyPage{}, fmt.Errorf("localstore: search studies: %w", err)
		}
		if len(page.Studies) == limit {
			page.Next = q.cursorScope().Seal(strconv.FormatInt(lastReceived, 10) + "_" + page.Studies[limit-1].StudyInstanceUID)
			break
		}
		if err := json.Unmarshal([]byte(body), &r.StudySummary); err != nil {
			return StudyPage{}, fmt.Errorf("localstore: search studies: %w", err)
		}
		r.PatientMismatch = r.StudySummary.PatientMismatch()
		page.Studies = append(page.Studies, r)
		lastReceived = received
	}
	if err := rows.Err(); err != nil {
		return StudyPage{}, fmt.Errorf("localstore: search studies: %w", err)
	}
	return page, nil
}

// openStudyCursor reads the "<last received>_<study UID>" place of a
// cursor SearchStudies handed out, sealed to scope. The error wraps
// pipeline.ErrBadCursor and quotes nothing of the cursor (its place holds
// a UID).
func openStudyCursor(scope *pipeline.CursorScope, cursor string) (int64, string, error) {
	place, err := scope.Open(cursor)
	if err != nil {
		return 0, "", err
	}
	ns, uid, _ := strings.Cut(place, "_")
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil || uid == "" {
		return 0, "", fmt.Errorf("a cursor's place is not a study's: %w", pipeline.ErrBadCursor)
	}
	return n, uid, nil
}

// Reject is a reject of a study (rejectOutcomesSQL), or a C-STORE of it
// cut short (cutShortSQL), as its page lists it: the audit record, and
// whether the study holds an instance of its SOP Instance UID now
// (Cleared, clearedSQL: a good resend was stored, or the study held one
// already). One not cleared is counted by the study's status and rejects
// (rejectsSQL), or its C-STOREs cut short (cutShortsSQL): the instance is
// still missing.
type Reject struct {
	pipeline.AuditRecord
	Cleared bool `json:"cleared"`
}

// UnmarshalJSON reads a reject as it is marshalled, the record's fields
// and Reject's own: the record's UnmarshalJSON (which reads its legacy
// content identity), promoted, would read the record alone and drop
// Cleared. A field added to Reject is read here too (TestRejectJSON).
func (r *Reject) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &r.AuditRecord); err != nil {
		return err
	}
	var own struct {
		Cleared bool `json:"cleared"`
	}
	if err := json.Unmarshal(b, &own); err != nil {
		return err
	}
	r.Cleared = own.Cleared
	return nil
}

// The kinds of a study's rejects, and its C-STOREs cut short, as
// StudyRejects lists them (RejectKinds).
const (
	RejectQuarantined = "quarantined" // instances validation quarantined (pipeline.OutcomeRejected)
	RejectRefused     = "refused"     // C-STOREs refused: a failure status answered, or decided and not sent (store-failed)
	RejectCutShort    = "cut-short"   // C-STOREs the association's end cut short: answered nothing (store-failed, cutShortSQL)
)

// RejectKinds are the kinds StudyRejects lists.
var RejectKinds = []string{RejectQuarantined, RejectRefused, RejectCutShort}

// studyRejectsSQL lists a study's records of one kind (RejectKinds),
// newest first, each with clearedSQL.
var studyRejectsSQL = func() map[string]string {
	m := map[string]string{}
	for kind, cond := range map[string]string{
		RejectQuarantined: `a.outcome = '` + pipeline.OutcomeRejected + `'`,
		RejectRefused:     `a.outcome = '` + associationaudit.EventStoreFailed + `' AND NOT ` + cutShortSQL,
		RejectCutShort:    `a.outcome = '` + associationaudit.EventStoreFailed + `' AND ` + cutShortSQL,
	} {
		m[kind] = `SELECT a.seq, a.record, ` + clearedSQL + ` FROM audit a
	WHERE a.study_uid = ? AND ` + cond + `
	ORDER BY a.time DESC, a.seq DESC LIMIT ?`
	}
	return m
}()

// studyRejects names StudyRejects in its errors.
const studyRejects = "study rejects"

// StudyRejects lists up to limit (0: 1,000) of a study's rejects of one
// kind (RejectQuarantined, RejectRefused), or its C-STOREs cut short
// (RejectCutShort), newest first, cleared or not: the study's history of
// them, each marked by clearedSQL. Another kind is an error.
func (db *DB) StudyRejects(ctx context.Context, studyUID, kind string, limit int) ([]Reject, error) {
	stmt, ok := studyRejectsSQL[kind]
	if !ok {
		return nil, fmt.Errorf("localstore: %s: kind %q is not %s", studyRejects, Clipped(kind), OneOf(RejectKinds))
	}
	rows, err := db.read.QueryContext(ctx, stmt, studyUID, pipeline.PageLimit(limit, 1000, 1000))
	if err != nil {
		return nil, fmt.Errorf("localstore: %s: %w", studyRejects, err)
	}
	defer rows.Close()
	out := []Reject{}
	for rows.Next() {
		var seq int64
		var body string
		var r Reject
		if err := rows.Scan(&seq, &body, &r.Cleared); err != nil {
			return nil, fmt.Errorf("localstore: %s: %w", studyRejects, err)
		}
		if err := json.Unmarshal([]byte(body), &r.AuditRecord); err != nil {
			return nil, fmt.Errorf("localstore: %s: record %d: %w", studyRejects, seq, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("localstore: %s: %w", studyRejects, err)
	}
	return out, nil
}
