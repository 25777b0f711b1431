package s3

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

// staleAfter is the tests' --run-marker-stale-after: a marker is rewritten
// every twelfth of it.
const staleAfter = 2 * time.Second

// startMarkedS3SCP is startS3SCP with the run markers' staleness shortened.
func startMarkedS3SCP(t *testing.T, endpoint string) *scptest.SCP {
	t.Helper()
	return scptest.Start(t, scptest.Options{
		NoStore: true,
		Args: []string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE", "--store", "s3://" + bucket + "/" + strings.TrimSuffix(storePrefix, "/"),
			"--s3-path-style", "--run-marker-stale-after", staleAfter.String()},
		Env: s3test.Env(t, endpoint),
	})
}

// s3Records reads the audit records in the bucket.
func s3Records(t *testing.T, srv *s3test.Server) []associationaudit.Record {
	t.Helper()
	var recs []associationaudit.Record
	for _, k := range auditKeys(t, srv) {
		body, _, err := srv.Object(k)
		if err != nil {
			t.Fatal(err)
		}
		r, err := associationaudit.Parse(body)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// markerKeys lists the run markers in the bucket.
func markerKeys(t *testing.T, srv *s3test.Server) []string {
	t.Helper()
	var names []string
	for _, k := range keysUnder(t, srv, storePrefix+objectstore.RunMarkersPrefix) {
		names = append(names, strings.TrimPrefix(k, storePrefix+objectstore.RunMarkersPrefix))
	}
	return names
}

// TestKilledS3SCPIsReported kills scp-task storing straight into S3
// (SIGKILL, during association churn): its run marker stays in the bucket,
// and a later start (another process, as Fargate's replacement task is)
// reports it once it is stale: the start record names the killed run and
// bounds what it may have lost, every record of it up to the sequence
// number given is in the trail but for at most the "not yet written", and
// the dead run's marker goes. Before, with a direct S3 store an unclean
// stop showed only as a start without its stop.
func TestKilledS3SCPIsReported(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	first := startMarkedS3SCP(t, srv.URL)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				as, err := dicomnet.Dial(ctx, first.DICOMAddr, auditClient())
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				if err := as.Release(context.Background()); err != nil {
					return
				}
			}
		})
	}
	time.Sleep(1500 * time.Millisecond) // past a few of the marker's rewrites
	if err := syscall.Kill(first.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	stop()
	wg.Wait()
	for syscall.Kill(first.PID(), 0) == nil {
		time.Sleep(10 * time.Millisecond)
	}
	var instance string
	for _, r := range s3Records(t, srv) {
		if r.Event == associationaudit.EventApplicationStart {
			instance = r.AssociationID
		}
	}
	if instance == "" {
		t.Fatal("no start record of the killed run")
	}
	if got := markerKeys(t, srv); len(got) != 1 || got[0] != instance+".json" {
		t.Fatalf("markers after the kill: %v, want the killed run's", got)
	}

	time.Sleep(staleAfter) // the replacement starts once the marker is stale
	second := startMarkedS3SCP(t, srv.URL)
	var start associationaudit.Record
	deadline := time.Now().Add(20 * time.Second)
	for start.AssociationID == "" {
		for _, r := range s3Records(t, srv) {
			if r.Event == associationaudit.EventApplicationStart && r.AssociationID != instance {
				start = r
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no start record of the second run")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(start.PreviousRuns) != 1 || start.PreviousRuns[0].Instance != instance || !strings.Contains(start.Reason, "previous run "+instance+" ") {
		t.Fatalf("the start after the kill says %q, %+v", start.Reason, start.PreviousRuns)
	}
	dead := start.PreviousRuns[0]
	t.Logf("start record: %s", start.Reason)
	if dead.LastSeq == 0 || dead.Written == 0 || dead.Written+dead.CountedLost+dead.NotWritten != dead.LastSeq || dead.StopNotWritten {
		t.Errorf("previous run %+v", dead)
	}
	if got := second.Metric(t, "dicom_ingest_audit_unclean_stops_total"); got != 1 {
		t.Errorf("dicom_ingest_audit_unclean_stops_total = %v, want 1", got)
	}
	// The guarantee: of the killed run's records seq 1..LastSeq, at most
	// NotWritten+CountedLost are missing from the trail.
	have := map[uint64]bool{}
	for _, r := range s3Records(t, srv) {
		if r.AssociationID == instance || strings.HasPrefix(r.AssociationID, instance+"-") {
			have[r.Seq] = true
		}
	}
	missing := uint64(0)
	for seq := uint64(1); seq <= dead.LastSeq; seq++ {
		if !have[seq] {
			missing++
		}
	}
	if missing > dead.NotWritten+dead.CountedLost {
		t.Errorf("%d of seq 1-%d missing from the trail, more than the %d not written and %d lost the marker counts",
			missing, dead.LastSeq, dead.NotWritten, dead.CountedLost)
	}
	// The reported marker goes; a clean stop removes the second's.
	second.Stop(t)
	if got := markerKeys(t, srv); len(got) != 0 {
		t.Errorf("markers after the report and a clean stop: %v", got)
	}
}
