package awsadapters

import (
	"context"
	"strings"
	"testing"
	"time"

	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// TestKeyValue: a value fits a key as itself, a long one as its digest,
// the same for the write and the query.
func TestKeyValue(t *testing.T) {
	long := strings.Repeat("Q", 3000)
	if got := keyValue("PATIENT#", "PID-1"); got != "PATIENT#PID-1" {
		t.Errorf("short value: %q", got)
	}
	got := keyValue("PATIENT#", long)
	if len(got) > maxKeyBytes || !strings.HasPrefix(got, "PATIENT#sha256:") || got != keyValue("PATIENT#", long) {
		t.Errorf("long value: %q", got)
	}
	if keyValue("PATIENT#", long+"R") == got {
		t.Error("two long values share a key")
	}
	if edge := strings.Repeat("x", maxKeyBytes-len("SOP#")); keyValue("SOP#", edge) != "SOP#"+edge {
		t.Error("a value that fits exactly was digested")
	}
}

// TestAuditKeysFit: every key attribute of an audit item fits DynamoDB's
// limits (2,048 bytes for a partition key, 1,024 for a sort key, in the
// table and in each index), also for a record whose id is longer than a
// key may be: a rejected object's names its key, up to 1,024 bytes an
// outside writer chooses. The emulator does not check an index's keys;
// DynamoDB refuses the write, and the message went to the dead-letter
// queue with nothing audited.
func TestAuditKeysFit(t *testing.T) {
	rec := pipeline.AuditRecord{
		ID: "rejected:incoming/" + strings.Repeat("k", 1000) + ":crc64nvme-0123456789abcdef", SchemaVersion: 1,
		Time: time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC), Outcome: pipeline.OutcomeRejected, CallingAE: "AE",
		PatientID: "P", StudyInstanceUID: "1.2.3", SOPInstanceUID: "1.2.3.4",
	}
	c := &capture{}
	if _, err := (&AuditTable{Client: c, Table: "audit"}).Append(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	for k, v := range c.items[0] {
		limit := map[bool]int{true: 2048, false: 1024}[strings.HasSuffix(k, "pk")]
		if s, ok := v.(*ddbtypes.AttributeValueMemberS); ok && (k == "pk" || k == "sk" || strings.HasPrefix(k, "gsi")) && len(s.Value) > limit {
			t.Errorf("%s: %d bytes, over DynamoDB's %d", k, len(s.Value), limit)
		}
	}
}
