package interop

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestTricklingPeerLosesItsSlot: an allowed peer that starts a C-STORE and then
// sends a byte every 100 ms is aborted once a progress window passes with too
// few bytes; the abort is audited with its reason, its slot is free again for
// the next sender, and an object sent meanwhile on another association is
// stored.
func TestTricklingPeerLosesItsSlot(t *testing.T) {
	scp := startSCP(t, "--max-associations", "2", "--progress-window", "1s", "--min-progress-bytes", "1024")
	c, err := net.DialTimeout("tcp", scp.DICOMAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p := dicomnettest.NewParrot(t, c)
	p.Timeout = 20 * time.Second
	p.Associate(dicomnettest.AssociateRQ("LOCAL_AE", "REMOTE_AE"))
	p.SendPDVs(dicomnettest.CommandPDV(3, dimse.NewCStoreRQ(1, "1.2.840.10008.5.1.4.1.1.2", "1.2.826.0.1.3680043.2.9.1", dimse.PriorityMedium)))
	data, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.PDV(3, pdu.ControlLast, make([]byte, 4000))}})
	go func() {
		for i := range data {
			if _, err := c.Write(data[i : i+1]); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	// Meanwhile an honest sender stores an object on the other slot.
	ctx := scptest.Context(t)
	obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.9", SeriesUID: "1.2.826.0.1.3680043.2.9.2", SOPInstanceUID: "1.2.826.0.1.3680043.2.9.2.1",
		PatientID: "P9", PatientName: "Test^Honest", PixelBytes: 1 << 20}
	as, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE"))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := as.Store(ctx, synth.SOPClassUID, obj.SOPInstanceUID, synth.TransferSyntaxUID, obj.Dataset()); err != nil || !st.IsSuccess() {
		t.Fatalf("honest store: %v %v", st, err)
	}

	p.ExpectAbort(0, 0) // well within the parrot's 20 s
	scp.WaitMetric(t, "dicom_ingest_associations_active", 1, 5*time.Second)
	if err := as.Echo(ctx); err != nil { // the honest association is untouched
		t.Error(err)
	}
	if err := as.Release(ctx); err != nil {
		t.Error(err)
	}
	scp.Stop(t) // flushes the audit queue

	recs := auditRecords(t, scp.DataDir)
	aborted := false
	for _, r := range recs {
		if r.Event == associationaudit.EventAborted && strings.Contains(r.Reason, "progress deadline") {
			aborted = true
		}
	}
	if !aborted {
		t.Errorf("no aborted record with the progress deadline as its reason among %d records", len(recs))
	}
	if files := storedFiles(t, scp.DataDir); len(files) != 1 {
		t.Errorf("stored %v, want the honest object alone", files)
	}
}
