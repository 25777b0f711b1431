package pipelinee2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

// TestResendsThroughFunctions is the content identity in AWS: an object
// sent, sent again (the same bytes: the S3 store writes nothing and the
// SCP records a duplicate), sent by another PACS (the same data set in a
// meta header naming that AE: other bytes, which the S3 store keeps under
// a conflict key) and another data set under its SOP Instance UID (also
// under a conflict key). The validate and audit functions, on S3's
// full-object CRC-64/NVME and DynamoDB, record one stored transfer, two
// identical resends and one conflict, and index one instance with one
// conflict: the other PACS's copy is the same content, its data set
// being the first's.
func TestResendsThroughFunctions(t *testing.T) {
	testenv.RequireTools(t, "storescu")
	srv := s3test.NewServer(t, bucket)
	e := newEnvS3(t, "1s", srv.URL)
	scp := scptest.Start(t, scptest.Options{
		NoStore: true,
		Args:    []string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE,OTHER_AE", "--store", "s3://" + bucket + "/site-a", "--s3-path-style"},
		Env:     s3test.Env(t, srv.URL),
	})
	const studyUID, sop = "1.2.826.0.1.3680043.10.88", "1.2.826.0.1.3680043.10.88.1.1"
	dir := t.TempDir()
	write := func(name, patient string) string {
		in := pt.Instance{StudyUID: studyUID, SeriesUID: studyUID + ".1", SOPUID: sop, PatientID: "PID-R",
			PatientName: patient, Rows: 8, Columns: 8}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, in.Build(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	obj, other := write("obj.dcm", "Resent^Jane"), write("other.dcm", "Other^Jane")
	for _, send := range []struct{ aet, path string }{{"LOCAL_AE", obj}, {"LOCAL_AE", obj}, {"OTHER_AE", obj}, {"LOCAL_AE", other}} {
		if r := dcmtk.Run(t, 30*time.Second, "storescu", "-aet", send.aet, "-aec", "REMOTE_AE", scp.Host(), scp.Port(), send.path); r.Err != nil {
			t.Fatalf("storescu as %s: %v\n%s", send.aet, r.Err, r.Output)
		}
	}
	ctx := context.Background()
	var first string
	var copies, audit []string
	testenv.EventuallySawWithin(t, 10*time.Second, "one incoming object, two copies and the duplicate's record", func() (bool, string) {
		keys, err := srv.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		first, copies, audit = "", nil, nil
		duplicate := false
		for _, k := range keys {
			switch {
			case strings.HasPrefix(k, "site-a/incoming/") && strings.Contains(k, ".conflict-"):
				copies = append(copies, k)
			case strings.HasPrefix(k, "site-a/incoming/"):
				first = k
			case strings.HasPrefix(k, "site-a/audit/"):
				audit = append(audit, k)
				duplicate = duplicate || strings.HasSuffix(k, "-duplicate.json")
			}
		}
		return first != "" && len(copies) == 2 && duplicate,
			fmt.Sprintf("incoming objects: %q and copies %q, a duplicate record %v", first, copies, duplicate)
	})
	// The first stored first; then the copies, as S3 would notify them.
	e.invokeBatch(t, "validate", sqsEvent(s3Notification(first, 1)))
	for _, k := range copies {
		e.invokeBatch(t, "validate", sqsEvent(s3Notification(k, 1)))
	}
	var bodies []string
	for _, k := range audit {
		bodies = append(bodies, s3Notification(k, 1))
	}
	e.invokeBatch(t, "audit", sqsEvent(bodies...))

	page, err := e.audit.Query(ctx, pipeline.AuditQuery{SOPInstanceUID: sop})
	if err != nil {
		t.Fatal(err)
	}
	byOutcome := map[string][]pipeline.AuditRecord{}
	for _, r := range page.Records {
		byOutcome[r.Outcome] = append(byOutcome[r.Outcome], r)
	}
	stored, dups, conflicts := byOutcome[pipeline.OutcomeStored], byOutcome[pipeline.OutcomeDuplicate], byOutcome[pipeline.OutcomeConflict]
	if len(stored) != 1 || len(dups) != 2 || len(conflicts) != 1 {
		t.Fatalf("records of the instance by outcome: %d stored, %d duplicate, %d conflict; want 1, 2, 1", len(stored), len(dups), len(conflicts))
	}
	callers := map[string]bool{}
	for _, d := range dups {
		callers[d.CallingAE] = true
		if d.ContentIdentity != stored[0].ContentIdentity {
			t.Errorf("a resend's record names content %q, the first %q", d.ContentIdentity, stored[0].ContentIdentity)
		}
	}
	if !callers["LOCAL_AE"] || !callers["OTHER_AE"] || !strings.HasPrefix(stored[0].ContentIdentity, pipeline.DataSetIdentityPrefix) ||
		conflicts[0].CallingAE != "LOCAL_AE" || conflicts[0].ContentIdentity == stored[0].ContentIdentity {
		t.Errorf("records: stored %+v\nduplicates %+v\nconflict %+v", stored, dups, conflicts)
	}
	st, err := e.index.GetStudy(ctx, studyUID)
	if err != nil || st.InstanceCount != 1 || st.ConflictCount != 1 || len(st.Instances) != 2 {
		t.Errorf("study: %d instances, %d conflicts, %d contents, %v; want 1, 1, 2", st.InstanceCount, st.ConflictCount, len(st.Instances), err)
	}
}
