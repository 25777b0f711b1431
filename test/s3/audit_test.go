package s3

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

func auditClient() dicomnet.ClientConfig {
	return dicomnet.ClientConfig{CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE", Contexts: []dicomnet.ProposedContext{
		{AbstractSyntax: synth.SOPClassUID, TransferSyntaxes: []string{synth.TransferSyntaxUID}},
	}}
}

// TestAuditFailureRefusesAssociations makes S3 refuse the audit/ writes
// only (objects still land): once a record cannot be written the SCP
// refuses new associations with 02 03 01 and reports not ready, rather
// than run unaudited; the association already open keeps storing. When S3
// takes records again every record held back is written, the refusals
// included, and associations are accepted again.
func TestAuditFailureRefusesAssociations(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{})
	scp := startS3SCP(t, proxy.URL)
	ctx := scptest.Context(t)
	open, err := dicomnet.Dial(ctx, scp.DICOMAddr, auditClient())
	if err != nil {
		t.Fatal(err)
	}
	store := func(as *dicomnet.ClientAssociation, uid, datasetUID string) uint16 {
		t.Helper()
		obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.6", SeriesUID: "1.2.826.0.1.3680043.2.6.1", SOPInstanceUID: datasetUID,
			PatientID: "P6", PatientName: "Test^AuditDown", PixelBytes: 4096}
		st, err := as.Store(ctx, synth.SOPClassUID, uid, synth.TransferSyntaxUID, obj.Dataset())
		if err != nil {
			t.Fatalf("C-STORE %s: %v", uid, err)
		}
		return st.Code
	}
	scp.WaitMetric(t, "dicom_ingest_audit_queue_length", 0, 10*time.Second)

	proxy.SetPlan(s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Status403}, Match: func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/"+storePrefix+"audit/")
	}})
	// A C-STORE refused by the SCP (the data set names another instance)
	// makes a record that cannot be written.
	if st := store(open, "1.2.826.0.1.3680043.2.6.1.1", "1.2.826.0.1.3680043.2.6.1.2"); st != 0xA900 {
		t.Fatalf("mismatched C-STORE status %04X, want A900", st)
	}
	scp.WaitMetric(t, "dicom_ingest_audit_writable", 0, 30*time.Second)
	refused := 0
	for range 3 {
		_, err := dicomnet.Dial(ctx, scp.DICOMAddr, auditClient())
		if !errors.Is(err, dicomnet.RejectTemporaryCongestion) {
			t.Fatalf("association while audit records cannot be written: %v, want A-ASSOCIATE-RJ 02 03 01", err)
		}
		refused++
	}
	resp, err := http.Get("http://" + scp.HealthAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d while audit records cannot be written", resp.StatusCode)
	}
	// The association already open goes on: its object is stored and
	// acknowledged, and its records wait their turn.
	if st := store(open, "1.2.826.0.1.3680043.2.6.1.3", "1.2.826.0.1.3680043.2.6.1.3"); st != 0 {
		t.Errorf("C-STORE on the open association: %04X", st)
	}

	proxy.SetPlan(s3test.Plan{})
	testenv.EventuallyWithin(t, 30*time.Second, "an association accepted after S3 took records again", func() bool {
		as, err := dicomnet.Dial(ctx, scp.DICOMAddr, auditClient())
		if err == nil {
			if err := as.Release(ctx); err != nil {
				t.Fatal(err)
			}
			return true
		}
		if !errors.Is(err, dicomnet.RejectTemporaryCongestion) {
			t.Fatalf("association after S3 took records again: %v", err)
		}
		refused++
		return false
	})
	if err := open.Release(ctx); err != nil {
		t.Fatal(err)
	}
	scp.WaitMetric(t, "dicom_ingest_audit_queue_length", 0, 30*time.Second)
	if lost := scp.Metric(t, "dicom_ingest_audit_records_lost_total"); lost != 0 {
		t.Errorf("%v audit records lost", lost)
	}
	scp.Stop(t)

	recs := s3Records(t, srv)
	count := map[string]int{}
	for _, r := range recs {
		// A site's refusals repeated within 10 s are folded into one
		// record that counts them.
		count[r.Event] += r.Events()
		if r.Event == associationaudit.EventStoreFailed && (r.Status != "A900" || r.SOPInstanceUID != "1.2.826.0.1.3680043.2.6.1.1") {
			t.Errorf("store-failed record %+v", r)
		}
		if r.Event == associationaudit.EventRejected && (r.RejectResult != 2 || r.RejectSource != 3 || r.RejectReason != 1) {
			t.Errorf("rejection record %+v, want 02 03 01", r)
		}
	}
	want := map[string]int{
		associationaudit.EventAccepted: 2, associationaudit.EventReleased: 2,
		associationaudit.EventStoreFailed: 1, associationaudit.EventRejected: refused,
	}
	for ev, n := range want {
		if count[ev] != n {
			t.Errorf("%d %s events in the records, want %d (all: %v)", count[ev], ev, n, count)
		}
	}
	if proxy.Counts()[s3test.Status403] == 0 {
		t.Error("the proxy refused no audit write")
	}
}
