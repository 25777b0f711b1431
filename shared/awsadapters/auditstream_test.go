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

// TestDecodeAuditItemReadsWhatAppendWrote: the audit table's stream images
// give back the records the pipeline appended.
func TestDecodeAuditItemReadsWhatAppendWrote(t *testing.T) {
	c := &capture{}
	a := &AuditTable{Client: c, Table: "audit"}
	rec := pipeline.AssociationAuditRecord(associationaudit.Record{
		Event: associationaudit.EventAccepted, Time: time.Date(2026, 1, 15, 10, 0, 0, 123000000, time.UTC), AssociationID: "a1",
		CallingAE: "MODALITY1", CalledAE: "INGEST", PeerAddr: "10.1.2.3:4000", Seq: 3,
		TLS: &associationaudit.TLSPeer{Subject: "CN=x", Issuer: "CN=ca", SHA256: "ab"},
	}, "dicom-ingest")
	rec.PatientID = "PID-1"
	if _, err := a.Append(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	got, ok, err := DecodeAuditItem(c.items[0])
	if err != nil || !ok {
		t.Fatalf("DecodeAuditItem = %v, %v", ok, err)
	}
	if d := cmp.Diff(rec, got); d != "" {
		t.Errorf("round trip (-appended +decoded):\n%s", d)
	}

	s := func(v string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberS{Value: v} }
	if _, ok, err := DecodeAuditItem(map[string]ddbtypes.AttributeValue{"pk": s("EVENT#x"), "sk": s("LEDGER")}); ok || err != nil {
		t.Errorf("a ledger item reads as an audit record: %v, %v", ok, err)
	}
	if _, ok, err := DecodeAuditItem(map[string]ddbtypes.AttributeValue{"pk": s("AUDIT#x"), "sk": s("RECORD")}); !ok || err == nil {
		t.Errorf("a projected item decodes: %v, %v", ok, err)
	}
}
