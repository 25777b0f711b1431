package localstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

func TestAuditFeed(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	audit := db.AuditStore()
	rec := func(i int) pipeline.AuditRecord {
		return pipeline.AuditRecord{ID: fmt.Sprintf("r%d", i), Time: t0.Add(time.Duration(i) * time.Second), Outcome: "stored",
			EventID: pipeline.CodedValue{Code: "110104", System: "DCM", Display: "DICOM Instances Transferred"}}
	}
	// History from before the feed was configured is not sent.
	if _, err := audit.Append(ctx, rec(0)); err != nil {
		t.Fatal(err)
	}
	feed, err := db.AuditFeed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := feed.Backlog(ctx); err != nil || b.Count != 0 || !b.Oldest.IsZero() {
		t.Fatalf("backlog of a new feed = %+v, %v", b, err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := audit.Append(ctx, rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := feed.Backlog(ctx); b.Count != 3 || !b.Oldest.Equal(t0.Add(time.Second)) {
		t.Errorf("backlog = %+v", b)
	}
	es, err := feed.Pending(ctx, 2)
	if err != nil || len(es) != 2 || es[0].Record.ID != "r1" || es[1].Record.ID != "r2" {
		t.Fatalf("pending = %+v, %v", es, err)
	}
	if err := feed.Delivered(ctx, es); err != nil {
		t.Fatal(err)
	}
	// A second AuditFeed (a restart) keeps the cursor.
	feed, err = db.AuditFeed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	es, _ = feed.Pending(ctx, 10)
	if len(es) != 1 || es[0].Record.ID != "r3" {
		t.Errorf("pending after delivery = %+v", es)
	}
	// Marking an older batch again never moves the cursor back.
	old, _ := feed.Pending(ctx, 10)
	if err := feed.Delivered(ctx, old); err != nil {
		t.Fatal(err)
	}
	if b, _ := feed.Backlog(ctx); b.Count != 0 {
		t.Errorf("backlog after all delivered = %+v", b)
	}
}
