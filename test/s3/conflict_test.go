package s3

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestConflictWhoseAnswerWasLostIsNoDuplicate: without staging, other
// bytes sent for an instance already held are kept under a conflict key;
// when S3 takes that PutObject and its answer is lost (the connection
// reset), the retry finds the copy it made (412). That is the first
// storage of these bytes, so the C-STORE gets no duplicate record: the
// S3 store answered Duplicate and SameTransfer, ingest took the object
// as already held and the audit writer wrote a duplicate record.
func TestConflictWhoseAnswerWasLostIsNoDuplicate(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	var lost atomic.Int32
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.ResetAfter}, Match: func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, ".conflict-") && lost.Add(1) == 1
	}})
	scp := startS3SCP(t, proxy.URL)
	ctx := scptest.Context(t)
	const uid = "1.2.826.0.1.3680043.2.9.1.1"
	for _, name := range []string{"Test^First", "Test^Other"} {
		as, err := dicomnet.Dial(ctx, scp.DICOMAddr, auditClient())
		if err != nil {
			t.Fatalf("association: %v", err)
		}
		obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.9", SeriesUID: "1.2.826.0.1.3680043.2.9.1", SOPInstanceUID: uid,
			PatientID: "P9", PatientName: name, PixelBytes: 4096}
		st, err := as.Store(ctx, synth.SOPClassUID, uid, synth.TransferSyntaxUID, obj.Dataset())
		if err != nil || st.Code != 0 {
			t.Fatalf("C-STORE %s: %v, status %04X", name, err, st.Code)
		}
		if err := as.Release(ctx); err != nil {
			t.Fatalf("release: %v", err)
		}
	}
	if proxy.Counts()[s3test.ResetAfter] != 1 {
		t.Fatalf("faults %v: the conflict copy's answer was not lost", proxy.Counts())
	}
	if keys := keysUnder(t, srv, storePrefix+"incoming/"); len(keys) != 2 {
		t.Fatalf("objects %q, want the first and its conflict copy", keys)
	}
	testenv.EventuallyWithin(t, 30*time.Second, "both associations' release records", func() bool {
		return auditEvents(t, srv, auditKeys(t, srv))[associationaudit.EventReleased] >= 2
	})
	if events := auditEvents(t, srv, auditKeys(t, srv)); events[associationaudit.EventDuplicate] != 0 {
		t.Errorf("audit records %v: a duplicate record for the conflict copy's first storage", events)
	}
}
