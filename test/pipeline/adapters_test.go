package pipelinee2e

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

func instance(sopUID, sha string, at time.Time) pipeline.InstanceRecord {
	return pipeline.InstanceRecord{
		StudyInstanceUID: study, SeriesInstanceUID: series, SOPInstanceUID: sopUID, SOPClassUID: "1.2.840.10008.5.1.4.1.1.2",
		Modality: "CT", PatientID: "PID-9", PatientName: "Roe^Richard", ObjectKey: objectKey(sopUID), MetadataKey: "metadata/x.json",
		Size: 100, SHA256: sha, CallingAE: "MODALITY1", ReceivedAt: at,
	}
}

func TestIndexTableOnDynalite(t *testing.T) {
	c := dynaliteOnly(t)
	ctx := context.Background()
	x := &awsadapters.IndexTable{Client: c, Table: indexTable}
	t0 := time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)

	upsert := func(in pipeline.InstanceRecord, want pipeline.UpsertOutcome) pipeline.StudySummary {
		t.Helper()
		r, err := x.UpsertInstance(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != want {
			t.Fatalf("%s: outcome %v, want %v", in.SOPInstanceUID, r.Outcome, want)
		}
		return r.Study
	}
	st := upsert(instance(sop(1), "aa", t0), pipeline.InstanceNew)
	if st.InstanceCount != 1 || st.SeriesCount != 1 || st.Revision != 1 || st.PatientID != "PID-9" {
		t.Errorf("study = %+v", st)
	}
	upsert(instance(sop(1), "aa", t0), pipeline.InstanceDuplicate)
	st = upsert(instance(sop(1), "bb", t0.Add(time.Second)), pipeline.InstanceConflict)
	if st.InstanceCount != 1 || st.ConflictCount != 1 {
		t.Errorf("after conflict: %+v", st)
	}
	// Out-of-order delivery keeps first/last received as min/max.
	st = upsert(instance(sop(2), "cc", t0.Add(-time.Minute)), pipeline.InstanceNew)
	if !st.FirstReceived.Equal(t0.Add(-time.Minute)) || !st.LastReceived.Equal(t0.Add(time.Second)) {
		t.Errorf("received range %v..%v", st.FirstReceived, st.LastReceived)
	}

	t.Run("concurrent deliveries count once", func(t *testing.T) {
		var wg sync.WaitGroup
		outcomes := make(chan pipeline.UpsertOutcome, 8)
		for range 8 {
			wg.Go(func() {
				r, err := x.UpsertInstance(ctx, instance(sop(3), "dd", t0))
				if err != nil {
					t.Error(err)
				}
				outcomes <- r.Outcome
			})
		}
		wg.Wait()
		close(outcomes)
		d, err := x.GetStudy(ctx, study)
		if err != nil {
			t.Fatal(err)
		}
		if d.InstanceCount != 3 || len(d.Instances) != 4 {
			t.Errorf("%d instances, %d records", d.InstanceCount, len(d.Instances))
		}
	})

	t.Run("an interrupted upsert resumes without double counting", func(t *testing.T) {
		// A previous attempt wrote the marker and the instance item, then died.
		in := instance(sop(4), "ee", t0)
		for _, item := range []map[string]ddbtypes.AttributeValue{
			{"pk": s("STUDY#" + study), "sk": s("SOP#" + sop(4)), "sha256": s("ee")},
			{"pk": s("STUDY#" + study), "sk": s("INSTANCE#" + sop(4) + "#ee"), "sopInstanceUid": s(sop(4)), "seriesInstanceUid": s(series),
				"size": &ddbtypes.AttributeValueMemberN{Value: "100"}, "outcome": s("new"), "newSeries": &ddbtypes.AttributeValueMemberBOOL{Value: false}},
		} {
			if _, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(indexTable), Item: item}); err != nil {
				t.Fatal(err)
			}
		}
		st := upsert(in, pipeline.InstanceNew)
		if st.InstanceCount != 4 {
			t.Errorf("instance count %d, want 4", st.InstanceCount)
		}
		upsert(in, pipeline.InstanceDuplicate)
	})

	t.Run("a counter lost in a crash is repaired from the instance items", func(t *testing.T) {
		// Flag set, counter never applied: the count is one short...
		item := map[string]ddbtypes.AttributeValue{"pk": s("STUDY#" + study), "sk": s("INSTANCE#" + sop(5) + "#ff"),
			"sopInstanceUid": s(sop(5)), "seriesInstanceUid": s(series), "size": &ddbtypes.AttributeValueMemberN{Value: "100"},
			"outcome": s("new"), "seriesApplied": &ddbtypes.AttributeValueMemberBOOL{Value: true},
			"studyApplied": &ddbtypes.AttributeValueMemberBOOL{Value: true}, "applied": &ddbtypes.AttributeValueMemberBOOL{Value: true}}
		if _, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(indexTable), Item: item}); err != nil {
			t.Fatal(err)
		}
		list, _ := x.ListStudies(ctx, pipeline.StudyQuery{})
		if len(list) != 1 || list[0].InstanceCount != 4 {
			t.Fatalf("stored counter = %+v", list)
		}
		// ...until GetStudy recomputes and repairs it.
		d, err := x.GetStudy(ctx, study)
		if err != nil {
			t.Fatal(err)
		}
		if d.InstanceCount != 5 || d.Series[0].InstanceCount != 5 {
			t.Errorf("recomputed %d/%d, want 5", d.InstanceCount, d.Series[0].InstanceCount)
		}
		list, _ = x.ListStudies(ctx, pipeline.StudyQuery{PatientID: "PID-9"})
		if len(list) != 1 || list[0].InstanceCount != 5 {
			t.Errorf("repaired counter = %+v", list)
		}
	})

	t.Run("announcement bookkeeping", func(t *testing.T) {
		stable, err := x.StableStudies(ctx, t0.Add(30*time.Second), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(stable) != 1 {
			t.Fatalf("stable = %+v", stable)
		}
		if early, _ := x.StableStudies(ctx, t0.Add(-time.Hour), 10); len(early) != 0 {
			t.Errorf("stable before the quiet period: %+v", early)
		}
		rev := stable[0].Revision
		if err := x.MarkAnnounced(ctx, study, rev, 2, t0); !errors.Is(err, pipeline.ErrConditionFailed) {
			t.Errorf("skipping a version: %v", err)
		}
		if err := x.MarkAnnounced(ctx, study, rev, 1, t0); err != nil {
			t.Fatal(err)
		}
		if err := x.MarkAnnounced(ctx, study, rev, 1, t0); !errors.Is(err, pipeline.ErrConditionFailed) {
			t.Errorf("announcing version 1 twice: %v", err)
		}
		if again, _ := x.StableStudies(ctx, t0.Add(time.Hour), 10); len(again) != 0 {
			t.Errorf("still pending after announcement: %+v", again)
		}
		upsert(instance(sop(6), "gg", t0.Add(2*time.Minute)), pipeline.InstanceNew)
		again, _ := x.StableStudies(ctx, t0.Add(time.Hour), 10)
		if len(again) != 1 || again[0].AnnouncedVersion != 1 {
			t.Errorf("late instance not pending: %+v", again)
		}
	})

	t.Run("publish ledger", func(t *testing.T) {
		if ok, _ := x.EventPublished(ctx, "e1"); ok {
			t.Fatal("unknown event published")
		}
		for range 2 {
			if err := x.MarkEventPublished(ctx, "e1", t0); err != nil {
				t.Fatal(err)
			}
		}
		if ok, err := x.EventPublished(ctx, "e1"); !ok || err != nil {
			t.Errorf("EventPublished = %v, %v", ok, err)
		}
	})
}

func s(v string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberS{Value: v} }

func TestAuditTableOnDynalite(t *testing.T) {
	c := dynaliteOnly(t)
	ctx := context.Background()
	a := &awsadapters.AuditTable{Client: c, Table: auditTable}
	t0 := time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)
	for i := range 5 {
		rec := pipeline.AuditRecord{
			ID: "instance:" + sop(i) + ":x", SchemaVersion: 1, Time: t0.Add(time.Duration(i) * time.Second), Day: "2026-01-15",
			EventID:         pipeline.CodedValue{Code: "110104", System: "DCM", Display: "DICOM Instances Transferred"},
			EventActionCode: "C", Outcome: "stored", AuditSourceID: "test", CallingAE: "MODALITY1", CalledAE: "INGEST",
			PeerAddr: "10.0.0.1:1", StudyInstanceUID: study, SOPInstanceUID: sop(i), PatientID: "PID-9", PatientName: "Roe^Richard",
		}
		for attempt := range 2 {
			ok, err := a.Append(ctx, rec)
			if err != nil {
				t.Fatal(err)
			}
			if ok != (attempt == 0) {
				t.Errorf("append %d attempt %d: appended=%v", i, attempt, ok)
			}
		}
	}
	// Paging by study, newest first.
	var ids []string
	q := pipeline.AuditQuery{StudyInstanceUID: study, Limit: 2}
	for {
		page, err := a.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Records {
			ids = append(ids, r.SOPInstanceUID)
			if r.PatientID != "PID-9" || r.EventID.Code != "110104" || !r.Time.After(t0.Add(-time.Second)) {
				t.Errorf("record = %+v", r)
			}
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	if len(ids) != 5 || ids[0] != sop(4) || ids[4] != sop(0) {
		t.Errorf("paged ids = %v", ids)
	}
	// By day within a time window; the projection has no patient data.
	page, err := a.Query(ctx, pipeline.AuditQuery{Day: "2026-01-15", From: t0.Add(time.Second), To: t0.Add(3 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 2 { // From inclusive, To exclusive
		t.Errorf("window: %d records", len(page.Records))
	}
	for _, r := range page.Records {
		if r.PatientID != "" || r.PatientName != "" || r.Outcome != "stored" || r.CallingAE != "MODALITY1" {
			t.Errorf("day projection = %+v", r)
		}
	}
}

// TestIndexQuietPeriodOnDynalite: the pending index sorts by last activity
// (the later of received-at and indexed-at of the newest new or conflicting
// instance), a duplicate delivery does not move it, and a study item from
// before lastActivity existed is judged on lastReceived.
func TestIndexQuietPeriodOnDynalite(t *testing.T) {
	c := dynaliteOnly(t)
	ctx := context.Background()
	x := &awsadapters.IndexTable{Client: c, Table: indexTable}
	t0 := time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)
	const quiet = time.Minute
	type check struct {
		at     time.Duration // now, since t0
		stable bool
	}
	// rec is received at t0 and indexed the given time later.
	rec := func(studyUID, sha string, indexed time.Duration) pipeline.InstanceRecord {
		in := instance(studyUID+".1.1", sha, t0)
		in.StudyInstanceUID, in.SeriesInstanceUID, in.IndexedAt = studyUID, studyUID+".1", t0.Add(indexed)
		return in
	}
	cases := []struct {
		name   string
		study  string
		ups    []pipeline.InstanceRecord
		legacy bool // strip lastActivity as an item from before this change
		checks []check
	}{
		{name: "indexed 120s after receipt", study: "1.2.826.0.1.3680043.10.71",
			checks: []check{{121 * time.Second, false}, {179 * time.Second, false}, {181 * time.Second, true}}},
		{name: "duplicate delivery does not move activity", study: "1.2.826.0.1.3680043.10.72",
			ups:    []pipeline.InstanceRecord{rec("1.2.826.0.1.3680043.10.72", "aa", 170*time.Second)},
			checks: []check{{121 * time.Second, false}, {181 * time.Second, true}}},
		{name: "conflict is activity", study: "1.2.826.0.1.3680043.10.73",
			ups:    []pipeline.InstanceRecord{rec("1.2.826.0.1.3680043.10.73", "bb", 170*time.Second)},
			checks: []check{{181 * time.Second, false}, {231 * time.Second, true}}},
		{name: "item from before lastActivity", study: "1.2.826.0.1.3680043.10.74", legacy: true,
			checks: []check{{59 * time.Second, false}, {61 * time.Second, true}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Every case starts with an instance received at t0, indexed 120s later.
			for _, in := range append([]pipeline.InstanceRecord{rec(tc.study, "aa", 120*time.Second)}, tc.ups...) {
				if _, err := x.UpsertInstance(ctx, in); err != nil {
					t.Fatal(err)
				}
			}
			if tc.legacy {
				if _, err := c.UpdateItem(ctx, &dynamodb.UpdateItemInput{
					TableName: aws.String(indexTable), Key: map[string]ddbtypes.AttributeValue{"pk": s("STUDY#" + tc.study), "sk": s("STUDY")},
					UpdateExpression: aws.String("SET gsi1sk = lastReceived REMOVE lastActivity"),
				}); err != nil {
					t.Fatal(err)
				}
			}
			for _, ch := range tc.checks {
				got, err := x.StableStudies(ctx, t0.Add(ch.at-quiet), 100)
				if err != nil {
					t.Fatal(err)
				}
				stable := false
				for _, st := range got {
					if st.StudyInstanceUID == tc.study {
						stable = true
						if !st.LastReceived.Equal(t0) {
							t.Errorf("LastReceived = %v, want the received-at %v", st.LastReceived, t0)
						}
					}
				}
				if stable != ch.stable {
					t.Errorf("at t0+%v: stable = %v, want %v", ch.at, stable, ch.stable)
				}
			}
		})
	}
}
