package interop

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// auditRecords reads every association audit record the SCP wrote.
func auditRecords(t *testing.T, root string) []associationaudit.Record {
	t.Helper()
	var out []associationaudit.Record
	err := filepath.WalkDir(filepath.Join(root, "audit"), func(p string, d os.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return filepath.SkipDir
		}
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		r, err := associationaudit.Parse(b)
		if err != nil {
			return err
		}
		if want, _ := associationaudit.Key(r); !strings.HasSuffix(filepath.ToSlash(p), want) {
			t.Errorf("record at %s, want key %s", p, want)
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func findRecord(recs []associationaudit.Record, event, callingAE string) *associationaudit.Record {
	for i := range recs {
		if recs[i].Event == event && recs[i].CallingAE == callingAE {
			return &recs[i]
		}
	}
	return nil
}

// TestAssociationAuditRecords checks the SCP leaves a record for what
// never becomes an object: a rejected association, a refused C-STORE, an
// aborted transfer, and the ordinary accept/release pair.
func TestAssociationAuditRecords(t *testing.T) {
	testenv.RequireTools(t, "echoscu")
	scp := startSCP(t, "--calling-aes", "LOCAL_AE,OTHER_AE,FAR_AE@10.99.0.0/16")
	for _, aet := range []string{"INTRUDER", "FAR_AE"} {
		if r := dcmtk.Run(t, 30*time.Second, "echoscu", "-aet", aet, "-aec", "REMOTE_AE", scp.Host(), scp.Port()); r.Err == nil {
			t.Fatalf("%s was let in:\n%s", aet, r.Output)
		}
	}
	if r := dcmtk.Run(t, 30*time.Second, "echoscu", "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port()); r.Err != nil {
		t.Fatalf("echoscu: %v\n%s", r.Err, r.Output)
	}
	ctx := scptest.Context(t)
	// A refused C-STORE: the dataset names another instance than the command.
	as, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("OTHER_AE"))
	if err != nil {
		t.Fatal(err)
	}
	obj := synth.Object{StudyUID: "1.2.3", SeriesUID: "1.2.3.4", SOPInstanceUID: "1.2.3.4.5", PatientID: "P9", PatientName: "Test^Audit", PixelBytes: 64}
	if st, err := as.Store(ctx, synth.SOPClassUID, "1.2.3.4.99", synth.TransferSyntaxUID, obj.Dataset()); err != nil || st.Code != 0xA900 {
		t.Fatalf("store: %v %v", st, err)
	}
	if err := as.Abort(); err != nil {
		t.Fatal(err)
	}
	scp.WaitMetric(t, "dicom_ingest_associations_active", 0, 5*time.Second)
	scp.Stop(t) // flushes the audit queue

	recs := auditRecords(t, scp.DataDir)
	rej := findRecord(recs, associationaudit.EventRejected, "INTRUDER")
	if rej == nil || rej.RejectResult != 1 || rej.RejectSource != 1 || rej.RejectReason != 3 || rej.PeerAddr == "" {
		t.Errorf("rejected association record = %+v", rej)
	}
	if far := findRecord(recs, associationaudit.EventRejected, "FAR_AE"); far == nil || !strings.Contains(far.Reason, "source address not allowed") {
		t.Errorf("a calling AE outside its networks must be audited with that reason: %+v", far)
	}
	if findRecord(recs, associationaudit.EventAccepted, "LOCAL_AE") == nil || findRecord(recs, associationaudit.EventReleased, "LOCAL_AE") == nil {
		t.Errorf("no accepted/released pair for LOCAL_AE in %d records", len(recs))
	}
	failed := findRecord(recs, associationaudit.EventStoreFailed, "OTHER_AE")
	if failed == nil || failed.Status != "A900" || failed.SOPInstanceUID != "1.2.3.4.99" {
		t.Errorf("store-failed record = %+v", failed)
	}
	if findRecord(recs, associationaudit.EventAborted, "OTHER_AE") == nil {
		t.Errorf("no aborted record for OTHER_AE")
	}
	for _, r := range recs {
		b, _ := json.Marshal(r)
		if strings.Contains(string(b), "Test^Audit") || strings.Contains(string(b), "P9") {
			t.Errorf("patient data in an association record: %s", b)
		}
	}
}

// TestDrainOnSIGTERM: on SIGTERM the SCP stops accepting (readiness goes
// down), lets the association in flight finish its C-STORE and release,
// then exits cleanly.
func TestDrainOnSIGTERM(t *testing.T) {
	scp := startSCP(t, "--drain-timeout", "20s")
	ctx := scptest.Context(t)
	as, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE"))
	if err != nil {
		t.Fatal(err)
	}
	defer as.Abort() // a test that fails before the release leaves nothing for the drain to wait out
	if err := syscall.Kill(scp.PID(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// New associations are refused while the old one drains. One accepted
	// before the signal took effect is released at once: left open, the
	// drain waited for it and aborted it at the stop.
	testenv.EventuallyWithin(t, 5*time.Second, "new associations refused after SIGTERM", func() bool {
		early, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE"))
		if err != nil {
			return true
		}
		if err := early.Release(ctx); err != nil {
			t.Errorf("release of an association accepted as the SIGTERM came: %v", err)
		}
		return false
	})
	obj := synth.Object{StudyUID: "1.2.5", SeriesUID: "1.2.5.1", SOPInstanceUID: "1.2.5.1.1", PatientID: "P5", PatientName: "Test^Drain", PixelBytes: 4 << 20}
	st, err := as.Store(ctx, synth.SOPClassUID, obj.SOPInstanceUID, synth.TransferSyntaxUID, obj.Dataset())
	if err != nil || !st.IsSuccess() {
		t.Fatalf("C-STORE during drain: %v %v", st, err)
	}
	if err := as.Release(ctx); err != nil {
		t.Fatalf("release during drain: %v", err)
	}
	scp.Stop(t)
	if n := len(storedFiles(t, scp.DataDir)); n != 1 {
		t.Errorf("stored %d objects, want 1", n)
	}
	// Every association the test opened was released: none left for the
	// drain to abort.
	accepted, released := map[string]bool{}, map[string]bool{}
	for _, r := range auditRecords(t, scp.DataDir) {
		switch {
		case r.CallingAE != "LOCAL_AE", r.Event == associationaudit.EventRejected: // refused while draining
		case r.Event == associationaudit.EventAccepted:
			accepted[r.AssociationID] = true
		case r.Event == associationaudit.EventReleased:
			released[r.AssociationID] = true
		default:
			t.Errorf("association %s: %s, want it released", r.AssociationID, r.Event)
		}
	}
	if len(accepted) == 0 || !maps.Equal(accepted, released) {
		t.Errorf("associations accepted %v, released %v: want each released", slices.Sorted(maps.Keys(accepted)), slices.Sorted(maps.Keys(released)))
	}
}

// TestSecondSignalCutsTheDrainShort: a second SIGTERM during the drain
// aborts the association still open at once, as the drain timeout would,
// and the SCP stops cleanly with the abort audited; without it the stop
// waits out --drain-timeout. TestStopSignals checks only the two
// contexts, not that the drain heeds the second.
func TestSecondSignalCutsTheDrainShort(t *testing.T) {
	scp := startSCP(t, "--drain-timeout", "10m")
	ctx := scptest.Context(t)
	as, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE"))
	if err != nil {
		t.Fatal(err)
	}
	defer as.Abort()
	obj := synth.Object{StudyUID: "1.2.6", SeriesUID: "1.2.6.1", SOPInstanceUID: "1.2.6.1.1", PatientID: "P6", PatientName: "Test^Hurry", PixelBytes: 1 << 10}
	if st, err := as.Store(ctx, synth.SOPClassUID, obj.SOPInstanceUID, synth.TransferSyntaxUID, obj.Dataset()); err != nil || !st.IsSuccess() {
		t.Fatalf("C-STORE: %v %v", st, err)
	}
	if err := syscall.Kill(scp.PID(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testenv.EventuallySawWithin(t, 5*time.Second, "the drain after SIGTERM", func() (bool, string) {
		logs := scp.Logs()
		return strings.Contains(logs, `"msg":"draining"`), logs
	})
	start := time.Now()
	scp.Stop(t) // the second SIGTERM; an error if the SCP is not gone within 20 s
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("stopped %v after the second signal", took)
	}
	if !strings.Contains(scp.Logs(), "drain cut short by a second signal") {
		t.Errorf("the stop does not say the drain was cut short\n%s", scp.Logs())
	}
	recs := auditRecords(t, scp.DataDir)
	if findRecord(recs, associationaudit.EventAborted, "LOCAL_AE") == nil {
		t.Errorf("no association-aborted record: %+v", recs)
	}
	if n := len(storedFiles(t, scp.DataDir)); n != 1 {
		t.Errorf("stored %d objects, want the acknowledged one", n)
	}
}
