package s3

import (
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestGigabyteObjectToS3BoundedMemory streams a 1 GiB object through
// scp-task --store s3://... into a checksum-verifying S3 sink: it must be
// stored whole (S3 checked every part's and the full object's CRC64NVME)
// with the scp-task's peak RSS under 96 MiB.
func TestGigabyteObjectToS3BoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB transfer skipped in -short mode")
	}
	sink := s3test.NewSink(t)
	scp := startS3SCP(t, sink.URL)
	obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.3", SeriesUID: "1.2.826.0.1.3680043.2.3.1", SOPInstanceUID: "1.2.826.0.1.3680043.2.3.1.1",
		PatientID: "P3", PatientName: "Test^S3Gigabyte", PixelBytes: 1 << 30}
	ctx := scptest.Context(t)
	as, err := dicomnet.Dial(ctx, scp.DICOMAddr, dicomnet.ClientConfig{CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE", Contexts: []dicomnet.ProposedContext{
		{AbstractSyntax: synth.SOPClassUID, TransferSyntaxes: []string{synth.TransferSyntaxUID}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := as.Store(ctx, synth.SOPClassUID, obj.SOPInstanceUID, synth.TransferSyntaxUID, obj.Dataset())
	if err != nil || !st.IsSuccess() {
		t.Fatalf("C-STORE: status %v, err %v\n%s", st, err, scp.Logs())
	}
	if err := as.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if errs := sink.Errors(); len(errs) > 0 {
		t.Fatalf("S3 sink saw protocol errors: %v", errs)
	}
	var found bool
	for key, o := range sink.Objects() {
		if !strings.Contains(key, "/incoming/") {
			continue
		}
		found = true
		if !strings.HasSuffix(key, obj.SOPInstanceUID+".dcm") || o.Size < obj.DatasetSize() {
			t.Errorf("stored %s: %d bytes, want the %d-byte dataset plus its meta", key, o.Size, obj.DatasetSize())
		}
		if o.Metadata["sop-instance-uid"] != obj.SOPInstanceUID || o.Metadata["calling-ae"] != "LOCAL_AE" {
			t.Errorf("metadata %v", o.Metadata)
		}
	}
	if !found {
		t.Fatalf("no object in S3; sink holds %v", sink.Objects())
	}
	if sink.Pending() != 0 {
		t.Errorf("%d multipart uploads left", sink.Pending())
	}
	rss := scp.PeakRSS(t)
	t.Logf("scp-task peak RSS %.1f MiB for a %.0f MiB object into S3", float64(rss)/(1<<20), float64(obj.DatasetSize())/(1<<20))
	if rss >= 96<<20 {
		t.Errorf("peak RSS %d MiB, want < 96 MiB", rss>>20)
	}
}
