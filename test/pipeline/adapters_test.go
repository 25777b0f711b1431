package pipelinee2e

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/awsemu"
)

func instance(sopUID, sha string, at time.Time) pipeline.InstanceRecord {
	return pipeline.InstanceRecord{
		StudyInstanceUID: study, SeriesInstanceUID: series, SOPInstanceUID: sopUID, SOPClassUID: "1.2.840.10008.5.1.4.1.1.2",
		Modality: "CT", PatientID: "PID-9", PatientName: "Roe^Richard", ObjectKey: objectKey(sopUID), MetadataKey: "metadata/x.json",
		Size: 100, ContentIdentity: sha, CallingAE: "MODALITY1", ReceivedAt: at,
	}
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
	if len(page.Records) != 3 { // both inclusive
		t.Errorf("window: %d records", len(page.Records))
	}
	for _, r := range page.Records {
		if r.PatientID != "" || r.PatientName != "" || r.Outcome != "stored" || r.CallingAE != "MODALITY1" {
			t.Errorf("day projection = %+v", r)
		}
	}
	// By instance: what Storage Commitment asks of an instance not indexed.
	page, err = a.Query(ctx, pipeline.AuditQuery{SOPInstanceUID: sop(3)})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 1 || page.Records[0].SOPInstanceUID != sop(3) || page.Records[0].Outcome != "stored" || page.Records[0].StudyInstanceUID != study {
		t.Errorf("by instance: %+v", page.Records)
	}
	if page, err := a.Query(ctx, pipeline.AuditQuery{SOPInstanceUID: sop(9)}); err != nil || len(page.Records) != 0 {
		t.Errorf("by unknown instance: %+v, %v", page.Records, err)
	}
}

// TestAuditConformanceOnDynalite runs the audit trail's suite on the
// DynamoDB adapter, one table per trail: a query without an access path
// walks the byDay partitions, and refuses an open range.
func TestAuditConformanceOnDynalite(t *testing.T) {
	url := dynaliteURL(t)
	c := dynamoClient(url)
	var n atomic.Int64
	pipelinetest.RunAuditStore(t, pipelinetest.AuditHarness{
		New: func(t *testing.T) pipeline.AuditStore {
			name := fmt.Sprintf("audit-%d", n.Add(1))
			createTable(t, c, awsemu.AuditTableInput(name))
			return &awsadapters.AuditTable{Client: c, Table: name}
		},
		RefusesUnbounded: true,
	})
}

// TestCommitmentConformanceOnDynalite runs the Storage Commitment store's
// suite on the DynamoDB adapter (transactions live in the index table).
func TestCommitmentConformanceOnDynalite(t *testing.T) {
	tables := newIndexTables(t)
	pipelinetest.RunCommitmentStore(t, func(t *testing.T) pipeline.CommitmentStore {
		return &awsadapters.CommitmentTable{Client: tables.c, Table: tables.table(t).Table}
	})
}

// TestCommitmentAtScaleOnDynalite runs the largest request through DynamoDB's transactions and audit trail on
// dynalite, which holds items to DynamoDB's 400 KB as DynamoDB does.
func TestCommitmentAtScaleOnDynalite(t *testing.T) {
	pipelinetest.RunCommitmentAtScale(t, func(t *testing.T) (pipeline.CommitmentStore, pipeline.AuditStore) {
		c := dynaliteOnly(t)
		return &awsadapters.CommitmentTable{Client: c, Table: indexTable}, &awsadapters.AuditTable{Client: c, Table: auditTable}
	})
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

// TestLongValuesAsKeys: values from objects past what DynamoDB takes as a
// key (a Patient ID or Study Instance UID of 3,000 characters, and a record
// id holding such a key) are written and found again: every write of such a
// record failed, and its message went to the dead-letter queue with nothing
// audited. dynalite checks table keys; the index keys are built the same way.
func TestLongValuesAsKeys(t *testing.T) {
	c := dynaliteOnly(t)
	ctx := context.Background()
	a := &awsadapters.AuditTable{Client: c, Table: auditTable}
	long := strings.Repeat("Q", 3000)
	longUID := "1.2." + strings.Repeat("3", 2996)
	rec := pipeline.AuditRecord{
		ID: "rejected:incoming/" + longUID + "/x.dcm:abc", SchemaVersion: 1, Time: time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC), Day: "2026-01-15",
		EventID: pipeline.CodedValue{Code: "110104", System: "DCM", Display: "DICOM Instances Transferred"}, EventActionCode: "C",
		Outcome: "rejected", AuditSourceID: "test", CallingAE: "MODALITY1", StudyInstanceUID: longUID, PatientID: long,
	}
	for attempt := range 2 {
		ok, err := a.Append(ctx, rec)
		if err != nil {
			t.Fatalf("append: %v", err)
		}
		if ok != (attempt == 0) {
			t.Errorf("attempt %d: appended=%v (the long id must stay idempotent)", attempt, ok)
		}
	}
	for _, q := range []pipeline.AuditQuery{{PatientID: long}, {StudyInstanceUID: longUID}} {
		page, err := a.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Records) != 1 || page.Records[0].ID != rec.ID || page.Records[0].PatientID != long {
			t.Errorf("query %+v: %d records", q, len(page.Records))
		}
	}
}
