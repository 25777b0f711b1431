package awsadapters

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// capture records the items PutItem is given.
type capture struct {
	DynamoAPI
	items []map[string]ddbtypes.AttributeValue
}

func (c *capture) PutItem(_ context.Context, in *dynamodb.PutItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.items = append(c.items, in.Item)
	return &dynamodb.PutItemOutput{}, nil
}

// appendAndDecode appends rec and checks the stream image of the item
// written gives it back.
func appendAndDecode(t *testing.T, rec pipeline.AuditRecord) {
	t.Helper()
	c := &capture{}
	a := &AuditTable{Client: c, Table: "audit"}
	if _, err := a.Append(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	got, ok, err := DecodeAuditItem(c.items[0])
	if err != nil || !ok {
		t.Fatalf("DecodeAuditItem = %v, %v", ok, err)
	}
	if d := cmp.Diff(rec, got); d != "" {
		t.Errorf("%s round trip (-appended +decoded):\n%s", rec.Outcome, d)
	}
}

// TestDecodeAuditItemReadsWhatAppendWrote: the audit table's stream images
// give back the records the pipeline appended.
func TestDecodeAuditItemReadsWhatAppendWrote(t *testing.T) {
	rec := pipeline.AssociationAuditRecord(associationaudit.Record{
		Event: associationaudit.EventAccepted, Time: time.Date(2026, 1, 15, 10, 0, 0, 123000000, time.UTC), AssociationID: "a1",
		CallingAE: "MODALITY1", CalledAE: "INGEST", PeerAddr: "10.1.2.3:4000", Seq: 3,
		TLS: &associationaudit.TLSPeer{Subject: "CN=x", Issuer: "CN=ca", SHA256: "ab"},
	}, "dicom-ingest")
	rec.PatientID = "PID-1"
	appendAndDecode(t, rec)

	// An SCP's start after an unclean stop and its stop with records lost
	// carry their facts as fields.
	at := time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)
	for _, r := range []associationaudit.Record{
		{Event: associationaudit.EventApplicationStart, Time: at, AssociationID: "5eed", CalledAE: "INGEST", Seq: 1,
			PreviousRuns: []associationaudit.UncleanRun{{Instance: "dead1", AETitle: "INGEST", Started: at.Add(-time.Hour), LastAlive: at.Add(-time.Minute),
				LastSeq: 7, Written: 5, CountedLost: 1, NotWritten: 1}, {Instance: "dead2", Unreadable: true}}},
		{Event: associationaudit.EventApplicationStop, Time: at, AssociationID: "5eed", CalledAE: "INGEST", Seq: 9,
			Lost: &associationaudit.LostRecords{Count: 2, Seqs: []uint64{4, 6}}},
	} {
		appendAndDecode(t, pipeline.AssociationAuditRecord(r, "dicom-ingest"))
	}

	s := func(v string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberS{Value: v} }
	if _, ok, err := DecodeAuditItem(map[string]ddbtypes.AttributeValue{"pk": s("EVENT#x"), "sk": s("LEDGER")}); ok || err != nil {
		t.Errorf("a ledger item reads as an audit record: %v, %v", ok, err)
	}
	if _, ok, err := DecodeAuditItem(map[string]ddbtypes.AttributeValue{"pk": s("AUDIT#x"), "sk": s("RECORD")}); !ok || err == nil {
		t.Errorf("a projected item decodes: %v, %v", ok, err)
	}
}
