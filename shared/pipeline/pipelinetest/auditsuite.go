package pipelinetest

// RunAuditStore is the conformance suite of pipeline.AuditStore: the fake
// above, the SQLite adapter and the DynamoDB adapter (on an emulator) run
// it, so an auditor's query answers alike in local mode and in AWS. It
// states the contract of pipeline.AuditQuery with explicit expected
// records.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// AuditHarness gives RunAuditStore fresh trails of one implementation.
type AuditHarness struct {
	// New returns an empty trail.
	New func(t *testing.T) pipeline.AuditStore
	// RefusesUnbounded: the store is partitioned by day and refuses a
	// query with no access path whose From or To is zero, or whose range
	// spans more than pipeline.MaxAuditWalkDays days
	// (pipeline.ErrUnboundedQuery), as pipeline.AuditQuery allows; false:
	// it answers it over its whole trail.
	RefusesUnbounded bool
}

// auditDay is the first day of the suite's trail: records on it, the next
// two days and the fifth, none on the fourth.
var auditDay = time.Date(2026, 1, 14, 0, 0, 0, 0, time.UTC)

// at is the time d after the start of the trail's day n (0-based).
func at(n int, d time.Duration) time.Time { return auditDay.AddDate(0, 0, n).Add(d) }

// auditTrail is the suite's trail, oldest first: ids a01… in time order,
// a04 and a05 at the same time, a01 and a03 at the first and last
// instants of their day, a10 an association's record without UIDs or
// patient.
var auditTrail = []struct {
	id                        string
	time                      time.Time
	outcome, ae               string
	patient, study, sopSuffix string
}{
	{"a01", at(0, 0), "stored", "AE_ONE", "PAT-A", "S1", "1.1"},
	{"a02", at(0, 9*time.Hour), "stored", "AE_ONE", "PAT-A", "S1", "1.2"},
	{"a03", at(1, -time.Nanosecond), "rejected", "AE_TWO", "PAT-B", "S3", "3.1"},
	{"a04", at(1, 8*time.Hour), "duplicate", "AE_ONE", "PAT-A", "S1", "1.1"},
	{"a05", at(1, 8*time.Hour), "stored", "AE_TWO", "PAT-A", "S2", "2.1"},
	{"a06", at(1, 12*time.Hour+500*time.Millisecond), "stored", "AE_ONE", "PAT-B", "S3", "3.2"},
	{"a07", at(2, 10*time.Hour), "rejected", "AE_TWO", "PAT-A", "S2", "2.2"},
	{"a08", at(2, 11*time.Hour), "stored", "AE_ONE", "PAT-A", "S1", "1.3"},
	{"a09", at(4, 7*time.Hour), "stored", "AE_ONE", "PAT-B", "S3", "3.3"},
	{"a10", at(4, 7*time.Hour+30*time.Minute), "association-released", "AE_TWO", "", "", ""},
}

// auditStudy and auditSOP are the suite's UIDs for a trail's study and SOP
// suffix.
func auditStudy(s string) string    { return suiteRoot + "7." + s }
func auditSOP(suffix string) string { return suiteRoot + "8." + suffix }

// auditRecord returns the suite's record id (a01…a10) as written.
func auditRecord(i int) pipeline.AuditRecord {
	r := auditTrail[i]
	rec := pipeline.AuditRecord{
		ID: r.id, SchemaVersion: 1, Time: r.time, Day: r.time.Format(time.DateOnly),
		EventID:         pipeline.CodedValue{Code: "110104", System: "DCM", Display: "DICOM Instances Transferred"},
		EventActionCode: "C", Outcome: r.outcome, AuditSourceID: "suite", CallingAE: r.ae, CalledAE: "INGEST",
		PeerAddr: "10.0.0.1:4000", AssociationID: "assoc-" + r.id, PatientID: r.patient,
	}
	if r.study != "" {
		rec.StudyInstanceUID, rec.SOPInstanceUID = auditStudy(r.study), auditSOP(r.sopSuffix)
		rec.SeriesInstanceUID, rec.SOPClassUID = rec.StudyInstanceUID+".1", "1.2.840.10008.5.1.4.1.1.2"
	}
	return rec
}

// RunAuditStore runs the suite.
func RunAuditStore(t *testing.T, h AuditHarness) {
	t.Run("AppendOnce", func(t *testing.T) { testAuditAppendOnce(t, h.New(t)) })
	t.Run("Empty", func(t *testing.T) { testAuditEmpty(t, h) })
	a := h.New(t)
	for i := range auditTrail {
		appendAudit(t, a, auditRecord(i), true)
	}
	t.Run("Queries", func(t *testing.T) { testAuditQueries(t, a) })
	t.Run("Unbounded", func(t *testing.T) { testAuditUnbounded(t, a, h) })
	t.Run("Paging", func(t *testing.T) { testAuditPaging(t, a) })
	t.Run("LimitAboveMaximum", func(t *testing.T) { testAuditLimitAboveMaximum(t, a) })
	t.Run("BadCursor", func(t *testing.T) { testAuditBadCursor(t, a) })
	t.Run("CursorOfAnotherQuery", func(t *testing.T) { testAuditCursorOfAnotherQuery(t, a) })
	t.Run("WideRange", func(t *testing.T) { testAuditWideRange(t, a, h) })
	t.Run("AnswerFlags", func(t *testing.T) { testAuditAnswerFlags(t, h.New(t)) })
	t.Run("LongID", func(t *testing.T) { testAuditLongID(t, h.New(t)) })
}

// testAuditLongID: a record whose id is longer than a key may be (a
// rejected object's names its key, up to 1,024 bytes an outside writer
// chooses, and its content identity, which a sha256 metadata value an
// outside writer chooses can make 2 KB) is appended once and found
// through every access path, its id intact where the full record is read
// (a projection without patient data may name a digest of it).
func testAuditLongID(t *testing.T, a pipeline.AuditStore) {
	rec := auditRecord(0)
	rec.ID = "rejected:incoming/" + strings.Repeat("k", 1000) + ":crc64nvme-0123456789abcdef"
	appendAudit(t, a, rec, true)
	appendAudit(t, a, rec, false)
	for _, q := range []struct {
		q    pipeline.AuditQuery
		full bool
	}{
		{pipeline.AuditQuery{SOPInstanceUID: rec.SOPInstanceUID}, true}, {pipeline.AuditQuery{StudyInstanceUID: rec.StudyInstanceUID}, true},
		{pipeline.AuditQuery{PatientID: rec.PatientID}, true}, {pipeline.AuditQuery{CallingAE: rec.CallingAE}, false},
		{pipeline.AuditQuery{Day: rec.Day}, false},
	} {
		if got := queryAll(t, a, q.q); len(got) != 1 || q.full && got[0].ID != rec.ID {
			t.Errorf("query %+v: %d records, want the one of the long id", q.q, len(got))
		}
	}
}

// testAuditAnswerFlags: a store-failed record says whether its C-STORE
// was answered (NotAnswered) and whether a refusal's response was sent
// (ResponseNotSent; a commitment-refused's too), read the same way through
// every access path and for records written before the flags were: from
// their reasons (AuditRecord.ReadAnswered). A projection without the flags
// (DynamoDB's byCallingAe and byDay) and an older build's record read as
// answered.
func testAuditAnswerFlags(t *testing.T, a pipeline.AuditStore) {
	ctx := context.Background()
	study, sop := auditStudy("F1"), auditSOP("F1.")
	type want struct{ notAnswered, notSent bool }
	wants := map[string]want{}
	add := func(id string, r associationaudit.Record, legacyReason string, w want) {
		t.Helper()
		r.SchemaVersion, r.Time, r.AssociationID, r.CallingAE, r.CalledAE, r.PeerAddr = 1, at(0, time.Duration(len(wants)+1)*time.Minute), "as-"+id, "AE_FLAGS", "INGEST", "10.0.0.9:104"
		r.StudyInstanceUID, r.SOPInstanceUID, r.SOPClassUID = study, sop+id, "1.2.840.10008.5.1.4.1.1.2"
		rec := pipeline.AssociationAuditRecord(r, "suite")
		rec.ID = id
		if legacyReason != "" { // as an older build wrote it: no flags
			rec.NotAnswered, rec.ResponseNotSent, rec.Reason = false, false, legacyReason
		}
		appendAudit(t, a, rec, true)
		wants[id] = w
	}
	const cut = "dicomnet: data set incomplete: dicomnet: connection closed: EOF"
	add("f1", associationaudit.Record{Event: associationaudit.EventStoreFailed, Reason: cut}, "", want{true, false})
	add("f2", associationaudit.Record{Event: associationaudit.EventStoreFailed, Status: "A700", NotSent: true, Reason: "out of resources"}, "", want{false, true})
	add("f3", associationaudit.Record{Event: associationaudit.EventStoreFailed, Status: "A700", Reason: "out of resources"}, "", want{})
	add("f4", associationaudit.Record{Event: associationaudit.EventCommitmentRefused, Status: "0110", NotSent: true, Reason: "no peer"}, "", want{false, true})
	add("f5", associationaudit.Record{Event: associationaudit.EventStoreFailed}, "C-STORE status 0000: "+cut, want{true, false})
	add("f6", associationaudit.Record{Event: associationaudit.EventStoreFailed}, "C-STORE not answered (the association ended before its data set did): "+cut, want{true, false})
	add("f7", associationaudit.Record{Event: associationaudit.EventStoreFailed},
		"C-STORE status A700 decided, not sent (the association ended before the response was written): x", want{false, true})
	add("f8", associationaudit.Record{Event: associationaudit.EventCommitmentRefused},
		"N-ACTION status 0110 decided, not sent (the association ended before the response was written): x", want{false, true})
	// A Storage Commitment request the association's end cut short:
	// answered nothing, as a C-STORE cut short, but no C-STORE (CutShort).
	add("f9", associationaudit.Record{Event: associationaudit.EventCommitmentRefused, Reason: cut}, "", want{true, false})
	add("f10", associationaudit.Record{Event: associationaudit.EventCommitmentRefused},
		"N-ACTION not answered (the association ended before its data set did): "+cut, want{true, false})
	// A C-STORE refused before its handler ran, then cut short: answered
	// nothing, and refused (not CutShort), read alike on every path.
	add("f11", associationaudit.Record{Event: associationaudit.EventStoreFailed, Reason: cut + dimse.RefusedBeforeEnd + "0122: x"}, "", want{true, false})
	for name, q := range map[string]pipeline.AuditQuery{
		"study":      {StudyInstanceUID: study},
		"calling AE": {CallingAE: "AE_FLAGS"},
		"day":        {Day: at(0, 0).Format(time.DateOnly)},
		"range":      {From: at(0, 0), To: at(0, time.Hour)},
	} {
		t.Run(name, func(t *testing.T) {
			got := queryAll(t, a, q)
			if len(got) != len(wants) {
				t.Fatalf("%d records, want %d", len(got), len(wants))
			}
			for _, r := range got {
				w := wants[r.ID]
				// A C-STORE's only, and not one refused before then.
				cutShort := w.notAnswered && r.Outcome == associationaudit.EventStoreFailed && !dimse.SaysRefusedBeforeEnd(r.Reason)
				if r.NotAnswered != w.notAnswered || r.ResponseNotSent != w.notSent || r.CutShort() != cutShort {
					t.Errorf("%s (%s): not answered %v, response not sent %v, cut short %v; want %v, %v, %v", r.ID, r.Reason,
						r.NotAnswered, r.ResponseNotSent, r.CutShort(), w.notAnswered, w.notSent, cutShort)
				}
			}
		})
	}
	for id, w := range wants {
		page, err := a.Query(ctx, pipeline.AuditQuery{SOPInstanceUID: sop + id})
		if err != nil || len(page.Records) != 1 {
			t.Fatalf("instance %s: %d records, %v", id, len(page.Records), err)
		}
		if r := page.Records[0]; r.NotAnswered != w.notAnswered || r.ResponseNotSent != w.notSent {
			t.Errorf("instance %s: not answered %v, response not sent %v; want %v, %v", id, r.NotAnswered, r.ResponseNotSent, w.notAnswered, w.notSent)
		}
	}
}

func appendAudit(t *testing.T, a pipeline.AuditStore, rec pipeline.AuditRecord, want bool) {
	t.Helper()
	appended, err := a.Append(context.Background(), rec)
	if err != nil {
		t.Fatalf("append %s: %v", rec.ID, err)
	}
	if appended != want {
		t.Errorf("append %s: appended = %v, want %v", rec.ID, appended, want)
	}
}

// queryAll follows q's pages to the end and returns their records in
// order, failing the test on a page larger than the limit or on pages
// that never end.
func queryAll(t *testing.T, a pipeline.AuditStore, q pipeline.AuditQuery) []pipeline.AuditRecord {
	t.Helper()
	var out []pipeline.AuditRecord
	for range 1000 {
		page, err := a.Query(context.Background(), q)
		if err != nil {
			t.Fatalf("query %+v: %v", q, err)
		}
		if len(page.Records) > q.PageSize() {
			t.Errorf("query %+v: a page of %d records, over its limit (%d)", q, len(page.Records), q.PageSize())
		}
		out = append(out, page.Records...)
		if page.Next == "" {
			return out
		}
		if page.Next == q.Cursor {
			t.Fatalf("query %+v: Next is the cursor given", q)
		}
		q.Cursor = page.Next
	}
	t.Fatalf("query %+v: still a Next after 1000 pages", q)
	return nil
}

func auditIDs(recs []pipeline.AuditRecord) []string {
	ids := make([]string, 0, len(recs))
	for _, r := range recs {
		ids = append(ids, r.ID)
	}
	return ids
}

// checkNewestFirst: recs are want (ids) newest first; records of the same
// time may come in either order.
func checkNewestFirst(t *testing.T, recs []pipeline.AuditRecord, want []string) {
	t.Helper()
	got := auditIDs(recs)
	if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
		t.Errorf("records %v, want %v", got, want)
		return
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Time.After(recs[i-1].Time) {
			t.Errorf("records %v: %s (%v) after %s (%v), not newest first", got, recs[i].ID, recs[i].Time, recs[i-1].ID, recs[i-1].Time)
		}
	}
}

// testAuditAppendOnce: Append writes a record once; a duplicate of its ID
// is no error, reports appended false and leaves the first as it was.
func testAuditAppendOnce(t *testing.T, a pipeline.AuditStore) {
	rec := auditRecord(0)
	appendAudit(t, a, rec, true)
	appendAudit(t, a, rec, false)
	changed := rec
	changed.Outcome, changed.Time = "rejected", rec.Time.Add(time.Hour)
	appendAudit(t, a, changed, false)
	got := queryAll(t, a, pipeline.AuditQuery{SOPInstanceUID: rec.SOPInstanceUID})
	if len(got) != 1 || got[0].ID != rec.ID || got[0].Outcome != rec.Outcome || !got[0].Time.Equal(rec.Time) ||
		got[0].PatientID != rec.PatientID || got[0].StudyInstanceUID != rec.StudyInstanceUID {
		t.Errorf("after duplicates: %+v, want the one record as first written", got)
	}
}

// testAuditEmpty: an empty trail answers every query with no records and
// no Next.
func testAuditEmpty(t *testing.T, h AuditHarness) {
	a := h.New(t)
	for _, q := range []pipeline.AuditQuery{
		{SOPInstanceUID: auditSOP("1.1")}, {PatientID: "PAT-A"}, {CallingAE: "AE_ONE"}, {Day: "2026-01-14"},
		{From: at(0, 0), To: at(5, 0)},
	} {
		if got := queryAll(t, a, q); len(got) != 0 {
			t.Errorf("query %+v of an empty trail: %v", q, auditIDs(got))
		}
	}
}

// testAuditQueries: each access path, with every other field as a filter,
// the time bounds inclusive, ranges over several days with an access path
// and without.
func testAuditQueries(t *testing.T, a pipeline.AuditStore) {
	sop11, s1, s2, s3 := auditSOP("1.1"), auditStudy("S1"), auditStudy("S2"), auditStudy("S3")
	day := func(n int) string { return at(n, 0).Format(time.DateOnly) }
	endOf := func(n int) time.Time { return at(n+1, -time.Nanosecond) }
	tests := []struct {
		name string
		q    pipeline.AuditQuery
		want []string
	}{
		{"instance", pipeline.AuditQuery{SOPInstanceUID: sop11}, []string{"a04", "a01"}},
		{"instance, outcome", pipeline.AuditQuery{SOPInstanceUID: sop11, Outcome: "stored"}, []string{"a01"}},
		{"instance, its patient", pipeline.AuditQuery{SOPInstanceUID: sop11, PatientID: "PAT-A"}, []string{"a04", "a01"}},
		{"instance, another patient", pipeline.AuditQuery{SOPInstanceUID: sop11, PatientID: "PAT-B"}, nil},
		{"instance, its study", pipeline.AuditQuery{SOPInstanceUID: sop11, StudyInstanceUID: s1}, []string{"a04", "a01"}},
		{"instance, another study", pipeline.AuditQuery{SOPInstanceUID: sop11, StudyInstanceUID: s2}, nil},
		{"instance, AE", pipeline.AuditQuery{SOPInstanceUID: sop11, CallingAE: "AE_ONE"}, []string{"a04", "a01"}},
		{"instance, another AE", pipeline.AuditQuery{SOPInstanceUID: sop11, CallingAE: "AE_TWO"}, nil},
		{"instance, day", pipeline.AuditQuery{SOPInstanceUID: sop11, Day: day(1)}, []string{"a04"}},
		{"instance, from", pipeline.AuditQuery{SOPInstanceUID: sop11, From: at(1, 8*time.Hour)}, []string{"a04"}},
		{"instance, to", pipeline.AuditQuery{SOPInstanceUID: sop11, To: at(0, 0)}, []string{"a01"}},
		{"unknown instance", pipeline.AuditQuery{SOPInstanceUID: auditSOP("9.9")}, nil},

		{"patient", pipeline.AuditQuery{PatientID: "PAT-A"}, []string{"a08", "a07", "a05", "a04", "a02", "a01"}},
		{"patient, study", pipeline.AuditQuery{PatientID: "PAT-A", StudyInstanceUID: s2}, []string{"a07", "a05"}},
		{"patient, AE", pipeline.AuditQuery{PatientID: "PAT-A", CallingAE: "AE_TWO"}, []string{"a07", "a05"}},
		{"patient, outcome", pipeline.AuditQuery{PatientID: "PAT-A", Outcome: "rejected"}, []string{"a07"}},
		{"patient, day", pipeline.AuditQuery{PatientID: "PAT-A", Day: day(1)}, []string{"a05", "a04"}},
		{"patient, days", pipeline.AuditQuery{PatientID: "PAT-A", From: at(0, 9*time.Hour), To: at(2, 10*time.Hour)},
			[]string{"a07", "a05", "a04", "a02"}},
		{"unknown patient", pipeline.AuditQuery{PatientID: "PAT-Z"}, nil},

		{"study", pipeline.AuditQuery{StudyInstanceUID: s3}, []string{"a09", "a06", "a03"}},
		{"study, AE", pipeline.AuditQuery{StudyInstanceUID: s3, CallingAE: "AE_ONE"}, []string{"a09", "a06"}},
		{"study, outcome", pipeline.AuditQuery{StudyInstanceUID: s3, Outcome: "rejected"}, []string{"a03"}},
		{"study, day", pipeline.AuditQuery{StudyInstanceUID: s3, Day: day(0)}, []string{"a03"}},
		{"study, days", pipeline.AuditQuery{StudyInstanceUID: s3, From: at(1, 0), To: endOf(4)}, []string{"a09", "a06"}},

		{"AE", pipeline.AuditQuery{CallingAE: "AE_TWO"}, []string{"a10", "a07", "a05", "a03"}},
		{"AE, day", pipeline.AuditQuery{CallingAE: "AE_TWO", Day: day(2)}, []string{"a07"}},
		{"AE, day without its records", pipeline.AuditQuery{CallingAE: "AE_TWO", Day: day(3)}, nil},
		{"AE, outcome", pipeline.AuditQuery{CallingAE: "AE_TWO", Outcome: "stored"}, []string{"a05"}},
		{"AE, days", pipeline.AuditQuery{CallingAE: "AE_TWO", From: at(0, 0), To: at(1, 8*time.Hour)}, []string{"a05", "a03"}},
		{"AE, day and bounds", pipeline.AuditQuery{CallingAE: "AE_ONE", Day: day(1), From: at(1, 12*time.Hour)}, []string{"a06"}},

		{"day, from its first instant to its last", pipeline.AuditQuery{Day: day(0)}, []string{"a03", "a02", "a01"}},
		{"day, outcome", pipeline.AuditQuery{Day: day(0), Outcome: "stored"}, []string{"a02", "a01"}},
		{"day, bounds", pipeline.AuditQuery{Day: day(1), From: at(1, 8*time.Hour), To: at(1, 8*time.Hour)}, []string{"a05", "a04"}},
		{"day, bounds outside it", pipeline.AuditQuery{Day: day(1), From: at(0, 0), To: endOf(4)}, []string{"a06", "a05", "a04"}},
		{"day without records", pipeline.AuditQuery{Day: day(3)}, nil},

		{"range of one record", pipeline.AuditQuery{From: at(1, -time.Nanosecond), To: at(1, -time.Nanosecond)}, []string{"a03"}},
		{"range, both bounds on records", pipeline.AuditQuery{From: at(0, 9*time.Hour), To: at(1, 12*time.Hour+500*time.Millisecond)},
			[]string{"a06", "a05", "a04", "a03", "a02"}},
		{"range, a nanosecond inside each record", pipeline.AuditQuery{From: at(0, 9*time.Hour+1), To: at(1, 12*time.Hour+500*time.Millisecond-1)},
			[]string{"a05", "a04", "a03"}},
		{"range of every day", pipeline.AuditQuery{From: at(0, 0), To: endOf(4)},
			[]string{"a10", "a09", "a08", "a07", "a06", "a05", "a04", "a03", "a02", "a01"}},
		{"range over a day without records", pipeline.AuditQuery{From: at(2, 10*time.Hour+1), To: at(4, 7*time.Hour)}, []string{"a09", "a08"}},
		{"range of a hundred days around the trail", pipeline.AuditQuery{From: at(-60, 0), To: at(40, 0)},
			[]string{"a10", "a09", "a08", "a07", "a06", "a05", "a04", "a03", "a02", "a01"}},
		{"range of the day without records", pipeline.AuditQuery{From: at(3, 0), To: endOf(3)}, nil},
		{"range, outcome", pipeline.AuditQuery{Outcome: "rejected", From: at(0, 0), To: endOf(4)}, []string{"a07", "a03"}},
		{"range ending before it begins", pipeline.AuditQuery{From: at(2, 0), To: at(1, 0)}, nil},
		{"range before the trail", pipeline.AuditQuery{From: at(-30, 0), To: at(0, -time.Nanosecond)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNewestFirst(t, queryAll(t, a, tt.q), tt.want)
		})
	}
}

// testAuditUnbounded: a query with no access path and an open range is
// refused by a store partitioned by day (pipeline.ErrUnboundedQuery) and
// answered over the whole trail by any other.
func testAuditUnbounded(t *testing.T, a pipeline.AuditStore, h AuditHarness) {
	all := []string{"a10", "a09", "a08", "a07", "a06", "a05", "a04", "a03", "a02", "a01"}
	tests := []struct {
		name string
		q    pipeline.AuditQuery
		want []string
	}{
		{"nothing", pipeline.AuditQuery{}, all},
		{"outcome", pipeline.AuditQuery{Outcome: "rejected"}, []string{"a07", "a03"}},
		{"from", pipeline.AuditQuery{From: at(2, 11*time.Hour)}, []string{"a10", "a09", "a08"}},
		{"to", pipeline.AuditQuery{To: at(0, 9*time.Hour)}, []string{"a02", "a01"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !h.RefusesUnbounded {
				checkNewestFirst(t, queryAll(t, a, tt.q), tt.want)
				return
			}
			page, err := a.Query(context.Background(), tt.q)
			if !errors.Is(err, pipeline.ErrUnboundedQuery) {
				t.Errorf("query %+v: %d records, %v; want ErrUnboundedQuery", tt.q, len(page.Records), err)
			}
		})
	}
}

// testAuditPaging: pages of every size, across records of the same time
// and across day partitions (one ending exactly at a page's end), return
// what one page does, in the same order: none lost, none repeated.
func testAuditPaging(t *testing.T, a pipeline.AuditStore) {
	queries := []pipeline.AuditQuery{
		{From: at(0, 0), To: at(5, 0)},
		{From: at(0, 0), To: at(5, 0), Outcome: "stored"},
		{PatientID: "PAT-A"},
		{PatientID: "PAT-A", From: at(0, 9*time.Hour), To: at(2, 10*time.Hour)},
		{StudyInstanceUID: auditStudy("S1")},
		{CallingAE: "AE_ONE"},
		{CallingAE: "AE_TWO", Outcome: "rejected"},
		{Day: auditDay.Format(time.DateOnly)},
		{SOPInstanceUID: auditSOP("1.1")},
	}
	for i, q := range queries {
		whole := queryAll(t, a, q)
		if len(whole) == 0 {
			t.Fatalf("query %d (%+v): no records", i, q)
		}
		for limit := 1; limit <= len(whole)+1; limit++ {
			t.Run(fmt.Sprintf("query %d limit %d", i, limit), func(t *testing.T) {
				q := q
				q.Limit = limit
				if got, want := auditIDs(queryAll(t, a, q)), auditIDs(whole); !slices.Equal(got, want) {
					t.Errorf("paged %+v: %v, want %v as in one page", q, got, want)
				}
			})
		}
	}
}

// testAuditLimitAboveMaximum: a Limit above pipeline.MaxPage (the portal
// asks math.MaxInt for a limit past what an int holds) gets pages of at
// most MaxPage, and paging reads every record as one page does: it is
// not passed on as is (DynamoDB's Limit, an int32, took math.MaxInt as
// -1 and refused the query).
func testAuditLimitAboveMaximum(t *testing.T, a pipeline.AuditStore) {
	queries := []pipeline.AuditQuery{
		{From: at(0, 0), To: at(5, 0)},
		{PatientID: "PAT-A"},
		{CallingAE: "AE_TWO", Outcome: "rejected"},
		{Day: auditDay.Format(time.DateOnly)},
	}
	for i, q := range queries {
		whole := auditIDs(queryAll(t, a, q))
		for _, limit := range []int{pipeline.MaxPage, pipeline.MaxPage + 1, math.MaxInt32, math.MaxInt32 + 1, 1 << 32, math.MaxInt} {
			t.Run(fmt.Sprintf("query %d limit %d", i, limit), func(t *testing.T) {
				q := q
				q.Limit = limit
				if q.PageSize() != pipeline.MaxPage {
					t.Errorf("limit %d: page size %d, want the maximum %d", limit, q.PageSize(), pipeline.MaxPage)
				}
				if got := auditIDs(queryAll(t, a, q)); !slices.Equal(got, whole) {
					t.Errorf("paged %+v: %v, want %v as with the default limit", q, got, whole)
				}
			})
		}
	}
}

// testAuditBadCursor: a cursor the store did not hand out is
// pipeline.ErrBadCursor.
func testAuditBadCursor(t *testing.T, a pipeline.AuditStore) {
	ctx := context.Background()
	q := pipeline.AuditQuery{PatientID: "PAT-A", Limit: 2}
	page, err := a.Query(ctx, q)
	if err != nil || page.Next == "" {
		t.Fatalf("first page: %d records, next %q, %v", len(page.Records), page.Next, err)
	}
	for _, c := range []string{"not a cursor", "!", page.Next[:len(page.Next)/2], page.Next + "!"} {
		q.Cursor = c
		if _, err := a.Query(ctx, q); !errors.Is(err, pipeline.ErrBadCursor) {
			t.Errorf("cursor %q: %v, want ErrBadCursor", c, err)
		}
	}
}

// testAuditCursorOfAnotherQuery: a cursor continues the query that handed
// it out and no other. Passed with another selection (an access path, a
// filter, a day or a bound changed or added) it is pipeline.ErrBadCursor:
// taken, it would read the other query's records from the first one's
// place, losing those before it. The same query goes on with it whatever
// its page size, and with its bounds given in another time zone.
func testAuditCursorOfAnotherQuery(t *testing.T, a pipeline.AuditStore) {
	ctx := context.Background()
	day := func(n int) string { return at(n, 0).Format(time.DateOnly) }
	queries := []pipeline.AuditQuery{
		{From: at(0, 0), To: at(5, 0), Limit: 2},
		{PatientID: "PAT-A", Limit: 2},
		{StudyInstanceUID: auditStudy("S1"), Limit: 2},
		{CallingAE: "AE_ONE", Limit: 2},
		{Day: day(1), Limit: 2},
		{SOPInstanceUID: auditSOP("1.1"), Limit: 1},
		{PatientID: "PAT-A", From: at(0, 9*time.Hour), To: at(2, 10*time.Hour), Limit: 2},
	}
	changes := []struct {
		name   string
		change func(q *pipeline.AuditQuery)
	}{
		{"outcome", func(q *pipeline.AuditQuery) { q.Outcome = "stored" }},
		{"patient", func(q *pipeline.AuditQuery) { q.PatientID = "PAT-B" }},
		{"study", func(q *pipeline.AuditQuery) { q.StudyInstanceUID = auditStudy("S2") }},
		{"calling AE", func(q *pipeline.AuditQuery) { q.CallingAE = "AE_TWO" }},
		{"instance", func(q *pipeline.AuditQuery) { q.SOPInstanceUID = auditSOP("2.1") }},
		{"day", func(q *pipeline.AuditQuery) { q.Day = day(2) }},
		{"from", func(q *pipeline.AuditQuery) {
			if q.From.IsZero() {
				q.From = at(0, 0)
			}
			q.From = q.From.Add(time.Nanosecond)
		}},
		{"to", func(q *pipeline.AuditQuery) {
			if q.To.IsZero() {
				q.To = at(5, 0)
			}
			q.To = q.To.Add(-time.Nanosecond)
		}},
	}
	for i, base := range queries {
		first, err := a.Query(ctx, base)
		if err != nil || first.Next == "" {
			t.Fatalf("query %d (%+v): first page %d records, next %q, %v", i, base, len(first.Records), first.Next, err)
		}
		for _, c := range changes {
			t.Run(fmt.Sprintf("query %d, another %s", i, c.name), func(t *testing.T) {
				q := base
				c.change(&q)
				q.Cursor = first.Next
				if page, err := a.Query(ctx, q); !errors.Is(err, pipeline.ErrBadCursor) {
					t.Errorf("cursor of %+v taken by %+v: %v (records %v), want ErrBadCursor", base, q, err, auditIDs(page.Records))
				}
			})
		}
		whole := base
		whole.Limit = 0
		want := auditIDs(queryAll(t, a, whole))
		zone := time.FixedZone("UTC+1", 3600)
		for name, same := range map[string]func(q *pipeline.AuditQuery){
			"another page size": func(q *pipeline.AuditQuery) { q.Limit = 0 },
			"its bounds in another time zone": func(q *pipeline.AuditQuery) {
				if !q.From.IsZero() {
					q.From = q.From.In(zone)
				}
				if !q.To.IsZero() {
					q.To = q.To.In(zone)
				}
			},
		} {
			t.Run(fmt.Sprintf("query %d, %s", i, name), func(t *testing.T) {
				q := base
				same(&q)
				q.Cursor = first.Next
				got := append(auditIDs(first.Records), auditIDs(queryAll(t, a, q))...)
				if !slices.Equal(got, want) {
					t.Errorf("%+v went on with %s: %v, want %v", base, name, got, want)
				}
			})
		}
	}
}

// testAuditWideRange: a store partitioned by day reads one partition per
// day of a query with no access path, and refuses one whose range spans
// more than pipeline.MaxAuditWalkDays days (pipeline.ErrUnboundedQuery, its
// error naming the limit) rather than walk them: the years 0000 to 9999
// were 3.6 million partitions, almost all empty. One of exactly that many
// days it answers. A store that reads its whole trail answers every range,
// and any store a query with an access path, which reads one partition
// however wide its range.
func testAuditWideRange(t *testing.T, a pipeline.AuditStore, h AuditHarness) {
	all := []string{"a10", "a09", "a08", "a07", "a06", "a05", "a04", "a03", "a02", "a01"}
	first := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	last := time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	const days = pipeline.MaxAuditWalkDays
	tests := []struct {
		name  string
		q     pipeline.AuditQuery
		want  []string
		walks bool // more days than a walk may take, without an access path
	}{
		{"as many days as a walk may take", pipeline.AuditQuery{From: at(5-days, 0), To: at(5, -time.Nanosecond)}, all, false},
		{"a day more", pipeline.AuditQuery{From: at(4-days, 0), To: at(5, -time.Nanosecond)}, all, true},
		{"a nanosecond of a day more", pipeline.AuditQuery{From: at(5-days, -time.Nanosecond), To: at(5, -time.Nanosecond)}, all, true},
		{"years 0000 to 9999", pipeline.AuditQuery{From: first, To: last}, all, true},
		{"outcome, two hundred years", pipeline.AuditQuery{Outcome: "rejected", From: at(-36500, 0), To: at(36500, 0)},
			[]string{"a07", "a03"}, true},
		{"patient, years 0000 to 9999", pipeline.AuditQuery{PatientID: "PAT-B", From: first, To: last}, []string{"a09", "a06", "a03"}, false},
		{"study, years 0000 to 9999", pipeline.AuditQuery{StudyInstanceUID: auditStudy("S2"), From: first, To: last}, []string{"a07", "a05"}, false},
		{"calling AE, years 0000 to 9999", pipeline.AuditQuery{CallingAE: "AE_TWO", Outcome: "rejected", From: first, To: last},
			[]string{"a07", "a03"}, false},
		{"day, years 0000 to 9999", pipeline.AuditQuery{Day: at(1, 0).Format(time.DateOnly), From: first, To: last}, []string{"a06", "a05", "a04"}, false},
		{"instance, years 0000 to 9999", pipeline.AuditQuery{SOPInstanceUID: auditSOP("1.1"), From: first, To: last}, []string{"a04", "a01"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.walks || !h.RefusesUnbounded {
				checkNewestFirst(t, queryAll(t, a, tt.q), tt.want)
				return
			}
			page, err := a.Query(context.Background(), tt.q)
			if !errors.Is(err, pipeline.ErrUnboundedQuery) || !strings.Contains(err.Error(), fmt.Sprint(days)) {
				t.Errorf("query %+v: %d records, %v; want ErrUnboundedQuery naming the limit, %d days", tt.q, len(page.Records), err, days)
			}
		})
	}
}
