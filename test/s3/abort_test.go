package s3

import (
	"encoding/json"
	"errors"
	"io"
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

// abortingReader yields n bytes of r, then aborts the association, as a
// PACS that gives up mid-object does.
type abortingReader struct {
	r     io.Reader
	n     int64
	abort func()
}

func (a *abortingReader) Read(p []byte) (int, error) {
	if a.n <= 0 {
		a.abort()
		return 0, errors.New("sender gave up")
	}
	if int64(len(p)) > a.n {
		p = p[:a.n]
	}
	n, err := a.r.Read(p)
	a.n -= int64(n)
	return n, err
}

// TestAbortedTransferLeavesNothing aborts an association in the middle of
// a multipart upload: no object appears, the upload is aborted, and an
// association-aborted audit record is written.
func TestAbortedTransferLeavesNothing(t *testing.T) {
	sink := s3test.NewSink(t)
	scp := startS3SCP(t, sink.URL)
	obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.4", SeriesUID: "1.2.826.0.1.3680043.2.4.1", SOPInstanceUID: "1.2.826.0.1.3680043.2.4.1.1",
		PatientID: "P4", PatientName: "Test^Aborted", PixelBytes: 64 << 20}
	ctx := scptest.Context(t)
	as, err := dicomnet.Dial(ctx, scp.DICOMAddr, dicomnet.ClientConfig{CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE", Contexts: []dicomnet.ProposedContext{
		{AbstractSyntax: synth.SOPClassUID, TransferSyntaxes: []string{synth.TransferSyntaxUID}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	// 20 MiB in: two 8 MiB parts are uploading or uploaded.
	r := &abortingReader{r: obj.Dataset(), n: 20 << 20, abort: func() { _ = as.Abort() }}
	if st, err := as.Store(ctx, synth.SOPClassUID, obj.SOPInstanceUID, synth.TransferSyntaxUID, r); err == nil && st.IsSuccess() {
		t.Fatal("C-STORE of an aborted transfer succeeded")
	}

	testenv.EventuallyWithin(t, 30*time.Second, "association-aborted audit record", func() bool {
		for key, o := range sink.Objects() {
			if strings.Contains(key, "/audit/") && strings.HasSuffix(key, associationaudit.EventAborted+".json") {
				var rec associationaudit.Record
				return json.Unmarshal(o.Body, &rec) == nil && rec.Event == associationaudit.EventAborted
			}
		}
		return false
	})
	testenv.EventuallyWithin(t, 30*time.Second, "abort of the multipart upload", func() bool { return sink.Pending() == 0 })
	for key := range sink.Objects() {
		if strings.Contains(key, "/incoming/") {
			t.Errorf("object of an aborted transfer is visible: %s", key)
		}
	}
	if errs := sink.Errors(); len(errs) > 0 {
		t.Errorf("S3 sink saw protocol errors: %v", errs)
	}
	if n := scp.Metric(t, "dicom_ingest_s3_multipart_aborts_total"); n != 1 {
		t.Errorf("dicom_ingest_s3_multipart_aborts_total = %v, want 1", n)
	}
}
