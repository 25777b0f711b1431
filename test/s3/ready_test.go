package s3

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestReadinessUnderSlowAndFailingS3: scp-task on the direct S3 store
// stays ready while S3 is slow and its writes succeed, goes unready when
// S3 refuses its writes, and is ready again once S3 takes them. S3 taking
// 3 s a request while every C-STORE was stored made /readyz, which gives
// the store 3 s, fail on every task: the NLB's check would have had ECS
// replace them all (found by the operator drill).
func TestReadinessUnderSlowAndFailingS3(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{})
	scp := startS3SCP(t, proxy.URL)
	ctx := scptest.Context(t)
	readyz := func() (int, string) {
		t.Helper()
		code, body := scp.Health(t, "/readyz")
		return code, strings.TrimSpace(body)
	}
	waitReady := func(want int, within time.Duration, what string) {
		t.Helper()
		testenv.EventuallyWithin(t, within, what, func() bool { code, _ := readyz(); return code == want })
	}
	n := 0
	store := func() uint16 {
		t.Helper()
		n++
		as, err := dicomnet.Dial(ctx, scp.DICOMAddr, auditClient())
		if err != nil {
			t.Fatalf("association: %v", err)
		}
		defer as.Release(ctx) //nolint:errcheck // the status is what is tested
		uid := fmt.Sprintf("1.2.826.0.1.3680043.2.7.1.%d", n)
		obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.7", SeriesUID: "1.2.826.0.1.3680043.2.7.1", SOPInstanceUID: uid,
			PatientID: "P7", PatientName: "Test^Ready", PixelBytes: 4096}
		st, err := as.Store(ctx, synth.SOPClassUID, uid, synth.TransferSyntaxUID, obj.Dataset())
		if err != nil {
			t.Fatalf("C-STORE: %v", err)
		}
		return st.Code
	}
	waitReady(http.StatusOK, 10*time.Second, "ready at start")

	// S3 answers every request, slower than the check's 3 s. The store's
	// cached answer (5 s) runs out first, so the checks ask S3.
	proxy.SetPlan(s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Slow}, SlowDelay: 3500 * time.Millisecond})
	time.Sleep(6 * time.Second)
	for i := range 3 {
		if code, body := readyz(); code != http.StatusOK {
			t.Errorf("check %d while S3 is slow and well: /readyz %d %q", i, code, body)
		}
	}
	if st := store(); st != 0 {
		t.Errorf("C-STORE while S3 is slow: %04X", st)
	}
	if code, body := readyz(); code != http.StatusOK {
		t.Errorf("after a slow C-STORE stored: /readyz %d %q", code, body)
	}
	if strings.Contains(scp.Logs(), "health check failed") {
		t.Errorf("the health check failed while S3 was slow and well:\n%s", scp.Logs())
	}
	// The association's last record (its release) is written after the
	// sender has its answer: S3 must have it before it refuses writes, or
	// that record's refusal, not the C-STORE's, turns the task unready and
	// the next association is rejected before it can store. The queue's
	// gauge alone does not say so: the SCP takes the release in after its
	// A-RELEASE-RP is sent, so the gauge may read 0 before the record is
	// queued; S3 holding it does.
	testenv.EventuallyWithin(t, 30*time.Second, "the association-released record in S3", func() bool {
		return auditEvents(t, srv, auditKeys(t, srv))[associationaudit.EventReleased] == n
	})
	scp.WaitMetric(t, "dicom_ingest_audit_queue_length", 0, 30*time.Second)

	// S3 refuses every write (a KMS key disabled, a policy), and answers
	// the rest.
	proxy.SetPlan(s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Status403}, Match: func(r *http.Request) bool {
		return r.Method == http.MethodPut || r.Method == http.MethodPost
	}})
	if st := store(); st != 0xA700 {
		t.Errorf("C-STORE while S3 refuses writes: %04X, want A700", st)
	}
	waitReady(http.StatusServiceUnavailable, 10*time.Second, "unready while S3 refuses writes")
	testenv.Eventually(t, "'health check failed' line while S3 refuses writes", func() bool { return strings.Contains(scp.Logs(), "health check failed") })

	// S3 takes writes again: the records held back are written, and the
	// task is ready.
	proxy.SetPlan(s3test.Plan{})
	waitReady(http.StatusOK, 30*time.Second, "ready once S3 takes writes again")
	if st := store(); st != 0 {
		t.Errorf("C-STORE once S3 takes writes again: %04X", st)
	}
	scp.WaitMetric(t, "dicom_ingest_audit_queue_length", 0, 30*time.Second)
	if lost := scp.Metric(t, "dicom_ingest_audit_records_lost_total"); lost != 0 {
		t.Errorf("%v audit records lost", lost)
	}
}
