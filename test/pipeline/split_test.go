package pipelinee2e

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// TestSplitValidateNormalize runs validate with NORMALIZE_QUEUE_URL, as the
// CDK stack deploys it: invalid objects are rejected there, valid ones are
// forwarded through the queue to normalize, which indexes and announces
// them. Each step twice leaves the same state.
func TestSplitValidateNormalize(t *testing.T) {
	e := newEnv(t, "1s")
	received := time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC)
	d1 := e.putInstance(objectKey(sop(1)), ctInstance(sop(1)), received)
	bad := ctInstance(sop(2))
	bad.SeriesUID = "1.2.03"
	d2 := e.putInstance(objectKey(sop(2)), bad, received)
	batch := sqsEvent(s3TestEvent, s3Notification(objectKey(sop(1)), len(d1)), s3Notification(objectKey(sop(2)), len(d2)))

	var forwarded []string
	for range 2 {
		e.invokeBatch(t, "validate-split", batch)
		forwarded = append(forwarded, e.queue.take()...)
	}
	if len(forwarded) != 2 { // the valid object, once per delivery
		t.Fatalf("forwarded %d messages", len(forwarded))
	}
	if d := cmp.Diff([]string{pipeline.DetailTypeInstanceRejected}, detailTypes(e.events.all())); d != "" {
		t.Errorf("events after validate (-want +got):\n%s", d)
	}
	if _, err := e.index.GetStudy(context.Background(), study); err == nil {
		t.Error("validate indexed an object")
	}
	// Both forwarded copies reach normalize: one instance, one event.
	e.invokeBatch(t, "normalize", sqsEvent(forwarded...))
	want := []string{pipeline.DetailTypeInstanceRejected, pipeline.DetailTypeInstanceStored}
	if d := cmp.Diff(want, detailTypes(e.events.all())); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	st, err := e.index.GetStudy(context.Background(), study)
	if err != nil || st.InstanceCount != 1 {
		t.Fatalf("study %+v, %v", st.StudySummary, err)
	}
	page, err := e.audit.Query(context.Background(), pipeline.AuditQuery{Day: "2026-01-15"})
	if err != nil || len(page.Records) != 2 {
		t.Errorf("%d audit records (%v), want stored + rejected", len(page.Records), err)
	}
}
