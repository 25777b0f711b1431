package pipelinee2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

// TestDcmsendThroughFunctions is the whole cloud flow on one machine:
// DCMTK -> scp-task storing into S3 -> the S3 objects' notifications ->
// validate and audit under the emulator -> notify -> audit rows, index rows
// and events.
func TestDcmsendThroughFunctions(t *testing.T) {
	testenv.RequireTools(t, "dcmsend", "echoscu")
	srv := s3test.NewServer(t, bucket)
	e := newEnvS3(t, "1s", srv.URL)
	scp := scptest.Start(t, scptest.Options{
		NoStore: true,
		Args:    []string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE", "--store", "s3://" + bucket + "/site-a", "--s3-path-style"},
		Env:     s3test.Env(t, srv.URL),
	})

	// The dicom module's real files plus one invalid object (bad UID).
	files := testenv.DICOMTestdataFiles(t)
	bad := pt.Instance{StudyUID: "1.2.03", SeriesUID: "1.2.3.4", SOPUID: "1.2.826.0.1.3680043.10.77.1", PatientID: "PID-BAD",
		PatientName: "Bad^Object", Rows: 16, Columns: 16, SourceAE: "LOCAL_AE"}
	badFile := filepath.Join(t.TempDir(), "bad.dcm")
	if err := os.WriteFile(badFile, bad.Build(), 0o644); err != nil {
		t.Fatal(err)
	}
	files = append(files, badFile)
	args := append([]string{"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", "--no-halt", scp.Host(), scp.Port()}, files...)
	if r := dcmtk.Run(t, 2*time.Minute, "dcmsend", args...); r.Err != nil {
		t.Fatalf("dcmsend: %v\n%s", r.Err, r.Output)
	}
	// A calling AE the SCP does not know: rejected, a security event.
	dcmtk.Run(t, 30*time.Second, "echoscu", "-aet", "INTRUDER", "-aec", "REMOTE_AE", scp.Host(), scp.Port())

	// Every object and every record the checks below count: the SCP writes
	// its records in parallel, so the rejection's being in S3 says nothing
	// of dcmsend's association-released record, written after dcmsend had
	// its A-RELEASE-RP.
	var incoming, audit []string
	var events map[string]int
	testenv.EventuallySawWithin(t, 10*time.Second, "every object sent and the three kinds of association record in S3", func() (bool, string) {
		keys, err := srv.Keys(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		incoming, audit, events = nil, nil, map[string]int{}
		for _, k := range keys {
			switch {
			case strings.HasPrefix(k, "site-a/incoming/"):
				incoming = append(incoming, k)
			case strings.HasPrefix(k, "site-a/audit/"):
				audit = append(audit, k)
				for _, ev := range []string{associationaudit.EventAccepted, associationaudit.EventReleased, associationaudit.EventRejected} {
					if strings.HasSuffix(k, "-"+ev+".json") {
						events[ev]++
					}
				}
			}
		}
		return len(incoming) == len(files) && len(events) == 3,
			fmt.Sprintf("%d objects in S3 for %d files sent, association records %v", len(incoming), len(files), events)
	})

	// S3 would notify the queues; feed the functions the same messages.
	var bodies []string
	for _, k := range incoming {
		bodies = append(bodies, s3Notification(k, 1))
	}
	e.invokeBatch(t, "validate", sqsEvent(bodies...))
	bodies = nil
	for _, k := range audit {
		bodies = append(bodies, s3Notification(k, 1))
	}
	e.invokeBatch(t, "audit", sqsEvent(bodies...))

	ctx := context.Background()
	today := time.Now().UTC().Format(time.DateOnly)
	records := queryAll(t, e.audit, pipeline.AuditQuery{Day: today, Limit: 100})
	byOutcome := map[string]int{}
	for _, r := range records {
		byOutcome[r.Outcome]++
	}
	if byOutcome["stored"] != len(files)-1 || byOutcome["rejected"] != 1 {
		t.Errorf("instance audit outcomes %v for %d files", byOutcome, len(files))
	}
	if byOutcome[associationaudit.EventAccepted] == 0 || byOutcome[associationaudit.EventReleased] == 0 || byOutcome[associationaudit.EventRejected] != 1 {
		t.Errorf("association audit outcomes %v", byOutcome)
	}
	// A record by patient, with the AE titles and the patient id.
	page, err := e.audit.Query(ctx, pipeline.AuditQuery{PatientID: "ACRIN-FLT-Breast_029"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 1 || page.Records[0].CallingAE != "LOCAL_AE" || page.Records[0].CalledAE != "REMOTE_AE" || page.Records[0].PeerAddr == "" {
		t.Errorf("patient records = %+v", page.Records)
	}

	stored, rejectedEv := 0, 0
	studies := map[string]bool{} // of the stored instances, as their events name them
	for _, ev := range e.events.All() {
		switch ev.DetailType {
		case pipeline.DetailTypeInstanceStored:
			stored++
		case pipeline.DetailTypeInstanceRejected:
			rejectedEv++
		default:
			continue
		}
		// The envelope names the object by its ARN (BUCKET_ARN's partition).
		var d struct{ ObjectKey, StudyInstanceUID string }
		if err := json.Unmarshal([]byte(ev.Detail), &d); err != nil {
			t.Fatal(err)
		}
		if ev.DetailType == pipeline.DetailTypeInstanceStored {
			studies[d.StudyInstanceUID] = true
		}
		if want := []string{"arn:aws:s3:::" + bucket + "/" + d.ObjectKey}; !slices.Equal(ev.Resources, want) {
			t.Errorf("%s: resources %q, want %q", ev.DetailType, ev.Resources, want)
		}
	}
	if stored != len(files)-1 || rejectedEv != 1 {
		t.Errorf("%d stored and %d rejected events", stored, rejectedEv)
	}
	total := 0
	for uid := range studies {
		s, err := e.index.GetStudy(ctx, uid)
		if err != nil {
			t.Fatal(err)
		}
		total += s.InstanceCount
	}
	if total != len(files)-1 {
		t.Errorf("index holds %d instances in %d studies, want %d", total, len(studies), len(files)-1)
	}
	q2, _ := pipeline.QuarantineKeys(pipeline.ObjectInfo{Key: incoming[0]})
	if !strings.HasPrefix(q2, "site-a/quarantine/") {
		t.Errorf("quarantine key %s outside the store prefix", q2)
	}

	// After the quiet period, every study is announced once.
	time.Sleep(1500 * time.Millisecond)
	var out map[string]int
	e.invoke(t, "notify", map[string]any{"source": "aws.events", "detail-type": "Scheduled Event"}, &out)
	if out["announced"] != len(studies) {
		t.Errorf("announced %d of %d studies", out["announced"], len(studies))
	}
}
