package interop

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

func scClient(aet string) dicomnet.ClientConfig {
	return dicomnet.ClientConfig{CallingAE: aet, CalledAE: "REMOTE_AE", Contexts: []dicomnet.ProposedContext{
		{AbstractSyntax: synth.SOPClassUID, TransferSyntaxes: []string{synth.TransferSyntaxUID}},
		{AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2"}},
	}}
}

// holdAssociation opens an association with the project's own SCU and
// keeps it until the returned function releases it.
func holdAssociation(t *testing.T, scp *scptest.SCP) func() {
	t.Helper()
	as, err := dicomnet.Dial(scptest.Context(t), scp.DICOMAddr, scClient("LOCAL_AE"))
	if err != nil {
		t.Fatalf("associate: %v", err)
	}
	scp.WaitMetric(t, "dicom_ingest_associations_active", 1, 5*time.Second)
	return func() {
		if err := as.Release(context.Background()); err != nil {
			t.Errorf("release: %v", err)
		}
	}
}

// TestKilledSCULeavesNothing kills storescu (SIGKILL) in the middle of a
// large object: no object may appear, no temporary file may stay, and the
// association slot must be free again for the next sender. The C-STORE cut
// short is audited naming the study and series its header gave, so that a
// study page lists it (it named none: the handler's account of the break,
// which holds them, was dropped for the reader's).
func TestKilledSCULeavesNothing(t *testing.T) {
	testenv.RequireTools(t, "storescu", "echoscu")
	scp := startSCP(t, "--max-associations", "1")
	big := filepath.Join(t.TempDir(), "big.dcm")
	obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.1", SeriesUID: "1.2.826.0.1.3680043.2.1.1", SOPInstanceUID: "1.2.826.0.1.3680043.2.1.1.1",
		PatientID: "P1", PatientName: "Test^Killed", PixelBytes: 512 << 20}
	if err := obj.WriteFile(big); err != nil {
		t.Fatal(err)
	}
	cmd := dcmtk.Command("storescu", "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port(), big)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once the SCP has received part of the object.
	t.Cleanup(func() { _ = cmd.Process.Kill() }) // best effort, should the wait fail; killed below otherwise
	testenv.EventuallySawWithin(t, 30*time.Second, "16 MiB of the object at the SCP", func() (bool, string) {
		return partialBytes(scp.DataDir) >= 16<<20, scp.Logs()
	})
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("storescu finished before it was killed; make the object larger")
	}
	scp.WaitMetric(t, "dicom_ingest_associations_active", 0, 10*time.Second)
	// The association's audit record is written through a temporary file
	// of its own just after the slot is freed: wait for that one to be
	// placed, and fail if anything is still there after it.
	testenv.EventuallySawWithin(t, 10*time.Second, "no partial object left behind", func() (bool, string) {
		n := partialBytes(scp.DataDir)
		return n == 0, fmt.Sprintf("%d bytes of partial objects", n)
	})
	if files := storedFiles(t, scp.DataDir); len(files) != 0 {
		t.Errorf("objects stored from a killed transfer: %v", files)
	}
	// The only slot is free again.
	r := dcmtk.Run(t, 30*time.Second, "echoscu", "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port())
	if r.Err != nil {
		t.Fatalf("echoscu after the kill: %v\n%s", r.Err, r.Output)
	}
	var cut *associationaudit.Record
	testenv.Eventually(t, "the store-failed record of the cut association", func() bool {
		cut = findRecord(auditRecords(t, scp.DataDir), associationaudit.EventStoreFailed, "LOCAL_AE")
		return cut != nil
	})
	if cut.Status != "" || cut.SOPInstanceUID != obj.SOPInstanceUID || cut.StudyInstanceUID != obj.StudyUID || cut.SeriesInstanceUID != obj.SeriesUID {
		t.Errorf("the C-STORE cut short: record %+v, want no status and the study and series its header named", cut)
	}
	// The audit record alone names them: the log lines of the break (the reader's error, which the handler's
	// account of it carries beside them) name none, nor the instance.
	for _, uid := range []string{obj.StudyUID, obj.SOPInstanceUID} {
		if strings.Contains(scp.Logs(), uid) {
			t.Errorf("the SCP's log names %s", uid)
		}
	}
}

// partialBytes sums what lies in the store outside incoming/, audit/ and
// audit-runs/: the file store's temporary files while an object is being
// received.
func partialBytes(root string) int64 {
	var n int64
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error { // a vanished temp file is fine
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		// The journal's segment files are preallocated whole, ahead of
		// need: their size says nothing of what a transfer left. The run
		// markers are the SCP's, one per run.
		if d.IsDir() && (rel == "incoming" || rel == "audit" || rel == filestore.JournalDir || rel+"/" == objectstore.RunMarkersPrefix) {
			return filepath.SkipDir
		}
		if !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// TestGigabyteObjectBoundedMemory streams a 1 GiB object through the SCP
// into the file store; the SCP's peak RSS must stay under 64 MiB.
func TestGigabyteObjectBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB transfer skipped in -short mode")
	}
	scp := startSCP(t)
	obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.2", SeriesUID: "1.2.826.0.1.3680043.2.2.1", SOPInstanceUID: "1.2.826.0.1.3680043.2.2.1.1",
		PatientID: "P2", PatientName: "Test^Gigabyte", PixelBytes: 1 << 30}
	ctx := scptest.Context(t)
	as, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE"))
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
	files := storedFiles(t, scp.DataDir)
	if len(files) != 1 {
		t.Fatalf("stored %v", files)
	}
	info, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if info.Size() < obj.DatasetSize() {
		t.Errorf("stored %d bytes, less than the %d-byte dataset", info.Size(), obj.DatasetSize())
	}
	rss := scp.PeakRSS(t)
	t.Logf("scp-task peak RSS %.1f MiB for a %.0f MiB object", float64(rss)/(1<<20), float64(obj.DatasetSize())/(1<<20))
	if rss >= 64<<20 {
		t.Errorf("peak RSS %d MiB, want < 64 MiB", rss>>20)
	}
}

func TestSOPInstanceMismatchRefused(t *testing.T) {
	scp := startSCP(t)
	obj := synth.Object{StudyUID: "1.2.3", SeriesUID: "1.2.3.4", SOPInstanceUID: "1.2.3.4.5", PatientID: "P3", PatientName: "Test^Mismatch", PixelBytes: 1024}
	ctx := scptest.Context(t)
	as, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := as.Release(ctx); err != nil {
			t.Error(err)
		}
	}()
	st, err := as.Store(ctx, synth.SOPClassUID, "1.2.3.4.6", synth.TransferSyntaxUID, obj.Dataset())
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != 0xA900 {
		t.Fatalf("status %04X (%s), want A900: the dataset's SOP Instance UID differs from the command's", st.Code, st.Comment)
	}
	if !strings.Contains(strings.ToLower(st.Comment), "sop instance uid") {
		t.Errorf("error comment %q does not say what differs", st.Comment)
	}
	if files := storedFiles(t, scp.DataDir); len(files) != 0 {
		t.Errorf("a refused object was stored: %v", files)
	}
}

// TestTruncatedPixelDataRefused (issue 16.3) against the built scp-task: a
// Secondary Capture whose Pixel Data declares 512 KiB and carries 100 bytes
// gets C001 and leaves no object, only a store-failed audit record; the
// whole object sent next on the same association is stored. The old SCP
// answered 0000 and stored the cut object.
func TestTruncatedPixelDataRefused(t *testing.T) {
	scp := startSCP(t)
	obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.5", SeriesUID: "1.2.826.0.1.3680043.2.5.1", SOPInstanceUID: "1.2.826.0.1.3680043.2.5.1.1",
		PatientID: "P6", PatientName: "Test^Truncated", PixelBytes: 512 << 10}
	ctx := scptest.Context(t)
	as, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE"))
	if err != nil {
		t.Fatal(err)
	}
	cut := io.LimitReader(obj.Dataset(), obj.DatasetSize()-obj.PixelBytes+100)
	st, err := as.Store(ctx, synth.SOPClassUID, obj.SOPInstanceUID, synth.TransferSyntaxUID, cut)
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != 0xC001 || !strings.Contains(st.Comment, "(7FE0,0010)") {
		t.Fatalf("status %04X (%s), want C001 naming Pixel Data", st.Code, st.Comment)
	}
	if files := storedFiles(t, scp.DataDir); len(files) != 0 {
		t.Fatalf("a refused object was stored: %v", files)
	}
	if st, err := as.Store(ctx, synth.SOPClassUID, obj.SOPInstanceUID, synth.TransferSyntaxUID, obj.Dataset()); err != nil || !st.IsSuccess() {
		t.Fatalf("whole object: %v %v", st, err)
	}
	if err := as.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if files := storedFiles(t, scp.DataDir); len(files) != 1 {
		t.Fatalf("stored %v, want the whole object", files)
	}
	scp.Stop(t) // flushes the audit queue
	failed := findRecord(auditRecords(t, scp.DataDir), associationaudit.EventStoreFailed, "LOCAL_AE")
	if failed == nil || failed.Status != "C001" || failed.SOPInstanceUID != obj.SOPInstanceUID || !strings.Contains(failed.Reason, "(7FE0,0010)") {
		t.Errorf("store-failed record = %+v", failed)
	}
}
