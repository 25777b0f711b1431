package s3

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// staleAfter is the tests' --run-marker-stale-after: a marker is rewritten
// every twelfth of it.
const staleAfter = 2 * time.Second

// startMarkedS3SCP is startS3SCP with the run markers' staleness shortened
// (and any extra flags).
func startMarkedS3SCP(t *testing.T, endpoint string, extra ...string) *scptest.SCP {
	t.Helper()
	return startS3SCP(t, endpoint, append([]string{"--run-marker-stale-after", staleAfter.String()}, extra...)...)
}

// runOf waits for the start record of a run other than those of others.
func runOf(t *testing.T, srv *s3test.Server, others ...string) associationaudit.Record {
	t.Helper()
	var start associationaudit.Record
	testenv.EventuallyWithin(t, 20*time.Second, "the start record of the new run", func() bool {
		var ok bool
		start, ok = scptest.StartOf(s3Records(t, srv), others...)
		return ok
	})
	return start
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

	first.KillDuringChurn(t, auditClient(), 1500*time.Millisecond) // past a few of the marker's rewrites
	killed, ok := scptest.StartOf(s3Records(t, srv))
	if !ok {
		t.Fatal("no start record of the killed run")
	}
	instance := killed.AssociationID
	if got := markerKeys(t, srv); len(got) != 1 || got[0] != instance+".json" {
		t.Fatalf("markers after the kill: %v, want the killed run's", got)
	}

	// The replacement starts once the marker is stale by S3's clock, which
	// counts whole seconds (a second more); the tasks' clocks play no part.
	srv.Clock.Advance(staleAfter + time.Second)
	second := startMarkedS3SCP(t, srv.URL)
	start := runOf(t, srv, instance)
	if len(start.PreviousRuns) != 1 || start.PreviousRuns[0].Instance != instance || !strings.Contains(start.Reason, "previous run "+instance+" ") {
		t.Fatalf("the start after the kill says %q, %+v", start.Reason, start.PreviousRuns)
	}
	dead := start.PreviousRuns[0]
	t.Logf("start record: %s", start.Reason)
	if dead.LastSeq == 0 || dead.Written == 0 || dead.Written+dead.CountedLost+dead.NotWritten != dead.LastSeq || dead.StopNotWritten {
		t.Errorf("previous run %+v", dead)
	}
	if got := second.PublishedIncrease(t, "dicom_ingest_audit_unclean_stops_total"); got != 1 {
		t.Errorf("dicom_ingest_audit_unclean_stops_total rose by %v over the first scrape, want 1", got)
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

// TestKilledSCPReportedByARunningOne kills (SIGKILL, during association
// churn) one of two scp-tasks sharing their run markers, in the bucket (a
// direct S3 store) or on a shared staging directory (EFS in AWS), and no
// other task starts: the survivor reports the dead run while it runs,
// within the stale time and a sweep (a quarter of it), once, with its log
// line, its counter and an unclean-stop-found record; the reported marker
// goes. Before, only the next start anywhere reported it (a rolling
// deployment's old task killed by the stop timeout after its replacements
// started waited for the next deployment).
func TestKilledSCPReportedByARunningOne(t *testing.T) {
	tests := []struct {
		name    string
		staging bool
	}{
		{"markers in the bucket", false},
		{"markers on a shared staging directory", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := s3test.NewServer(t, bucket)
			var extra []string
			staging := t.TempDir()
			if tt.staging {
				extra = []string{"--staging", staging}
			}
			first := startMarkedS3SCP(t, srv.URL, extra...)
			dead := runOf(t, srv).AssociationID
			second := startMarkedS3SCP(t, srv.URL, extra...)
			survivor := runOf(t, srv, dead).AssociationID

			first.KillDuringChurn(t, auditClient(), time.Second)
			killed := time.Now()
			// The stale time and a second by S3's clock, which counts whole
			// seconds (a directory's lock is free at once), a sweep, and a
			// margin for a loaded machine.
			limit := staleAfter + time.Second + staleAfter/4 + 2*time.Second
			scptest.ExpectReportedByRunning(t, second, survivor, dead, killed, limit, func() []associationaudit.Record { return s3Records(t, srv) })

			wantLeft := []string{survivor + ".json"}
			left := markerKeys(t, srv)
			if tt.staging {
				left = nil
				entries, err := os.ReadDir(filepath.Join(staging, strings.TrimSuffix(objectstore.RunMarkersPrefix, "/")))
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range entries {
					left = append(left, e.Name())
				}
			}
			if !slices.Equal(left, wantLeft) {
				t.Errorf("markers after the report: %v, want %v", left, wantLeft)
			}
			second.Stop(t)
		})
	}
}
