package interop

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// storeModes are the two ways scp-task keeps objects on disk: a plain
// file store, and local mode (file store plus the in-process pipeline).
// Each starts an SCP with extra flags and says where its audit records are.
var storeModes = []struct {
	name  string
	start func(t *testing.T, dataDir string, extra ...string) (scp *scptest.SCP, storeRoot string)
}{
	{"file-store", func(t *testing.T, dataDir string, extra ...string) (*scptest.SCP, string) {
		args := []string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE,OTHER_AE"}
		if dataDir != "" {
			args = append(args, "--store", "file://"+dataDir)
		}
		scp := scptest.Start(t, scptest.Options{NoStore: dataDir != "", Args: append(args, extra...)})
		if dataDir == "" {
			dataDir = scp.DataDir
		}
		return scp, dataDir
	}},
	{"local-mode", func(t *testing.T, dataDir string, extra ...string) (*scptest.SCP, string) {
		if dataDir == "" {
			dataDir = t.TempDir()
		}
		args := []string{"--local", "--data-dir", dataDir, "--portal-listen", "127.0.0.1:0",
			"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE,OTHER_AE"}
		scp := scptest.Start(t, scptest.Options{NoStore: true, Args: append(args, extra...)})
		return scp, filepath.Join(dataDir, "objects")
	}},
}

// stallingReader yields r, then blocks until release is closed (and then
// fails), as a sender that stalls in the middle of an object.
type stallingReader struct {
	r       io.Reader
	stalled chan struct{}
	once    sync.Once
	release chan struct{}
}

func (s *stallingReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != io.EOF {
		return n, err
	}
	s.once.Do(func() { close(s.stalled) })
	<-s.release
	return 0, errors.New("stalling reader released")
}

// TestDrainAbortIsAudited: SIGTERM with an association in the middle of an
// object and a drain timeout too short for it. The association is aborted
// when the drain ends, and its abort (and the C-STORE it cut short) is in
// the audit trail before the process exits.
func TestDrainAbortIsAudited(t *testing.T) {
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			scp, root := mode.start(t, "", "--drain-timeout", "1s")
			ctx := scptest.Context(t)
			as, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("OTHER_AE"))
			if err != nil {
				t.Fatal(err)
			}
			obj := synth.Object{StudyUID: "1.2.7", SeriesUID: "1.2.7.1", SOPInstanceUID: "1.2.7.1.1", PatientID: "P7", PatientName: "Test^Drain", PixelBytes: 64 << 20}
			ds := &stallingReader{r: io.LimitReader(obj.Dataset(), 2<<20), stalled: make(chan struct{}), release: make(chan struct{})}
			stored := make(chan error, 1)
			go func() {
				_, err := as.Store(ctx, synth.SOPClassUID, obj.SOPInstanceUID, synth.TransferSyntaxUID, ds)
				stored <- err
			}()
			select {
			case <-ds.stalled:
			case err := <-stored:
				t.Fatalf("C-STORE ended before the sender stalled: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("sender never stalled")
			}
			if err := syscall.Kill(scp.PID(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			scp.Stop(t)
			close(ds.release) // the client is stuck in our reader; let it see its association is gone
			select {
			case err := <-stored:
				if err == nil {
					t.Error("the stalled C-STORE succeeded")
				}
			case <-time.After(10 * time.Second):
				t.Error("the stalled C-STORE was not ended by the drain abort")
			}

			recs := auditRecords(t, root)
			if findRecord(recs, associationaudit.EventAccepted, "OTHER_AE") == nil {
				t.Errorf("no accepted record in %d records", len(recs))
			}
			ab := findRecord(recs, associationaudit.EventAborted, "OTHER_AE")
			if ab == nil {
				t.Fatalf("the association aborted at the drain timeout has no audit record (%d records)\n%s", len(recs), scp.Logs())
			}
			if ab.Reason == "" {
				t.Errorf("aborted record without a reason: %+v", ab)
			}
			if f := findRecord(recs, associationaudit.EventStoreFailed, "OTHER_AE"); f == nil || f.SOPInstanceUID != obj.SOPInstanceUID {
				t.Errorf("the C-STORE cut short by the abort has no store-failed record: %+v", f)
			}
		})
	}
}

// fillDisk writes path until the filesystem holding it is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for {
		if _, err = f.Write(buf); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fill %s: %v", path, err)
	}
	// Whatever is left is less than a page or so: take it too.
	for _, n := range []int{4096, 512, 1} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	if err := f.Close(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
}

// dcmFiles maps the SOP Instance UIDs of the Part 10 files under root
// (<uid>.dcm, wherever the store or the pipeline put them) to their paths.
func dcmFiles(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".dcm") {
			out[strings.TrimSuffix(filepath.Base(p), ".dcm")] = p
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAuditWithFullDisk fills the disk under the SCP in the middle of an
// association that sends C-STORE after C-STORE. Every C-STORE must end
// accounted for: acknowledged and stored, or failed and its store-failed
// record written, none dropped. While records cannot be written, new
// associations are refused with 02 03 01 (transient congestion) and
// readiness is down; once space is freed, every record waiting is written
// and associations are accepted again.
func TestAuditWithFullDisk(t *testing.T) {
	// More failures than the audit queue holds (1,024), so that a queue
	// that drops instead of holding the sender up loses records.
	const sends = 1300
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			disk := testenv.MountTmpfs(t, 64<<20)
			// The whole disk fills: no reserve.
			scp, root := mode.start(t, filepath.Join(disk, "data"), "--min-free-bytes", "0")
			ctx := scptest.Context(t)
			as, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("OTHER_AE"))
			if err != nil {
				t.Fatal(err)
			}
			filler := filepath.Join(disk, "filler")
			fillDisk(t, filler)

			type outcome struct {
				uid    string
				status uint16
				err    error
			}
			var mu sync.Mutex
			var outcomes []outcome
			sent := func() int { mu.Lock(); defer mu.Unlock(); return len(outcomes) }
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := range sends {
					uid := fmt.Sprintf("1.2.826.0.1.3680043.2.9.%d", i+1)
					obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.9", SeriesUID: "1.2.826.0.1.3680043.2.9.0", SOPInstanceUID: uid,
						PatientID: "P9", PatientName: "Test^Full", PixelBytes: 2048}
					st, err := as.Store(ctx, synth.SOPClassUID, uid, synth.TransferSyntaxUID, obj.Dataset())
					mu.Lock()
					outcomes = append(outcomes, outcome{uid, st.Code, err})
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()

			// Audit records cannot be written: readiness goes down and new
			// associations are refused as transient congestion.
			scp.WaitMetric(t, "dicom_ingest_audit_writable", 0, 30*time.Second)
			if code := readyz(t, scp); code != 503 {
				t.Errorf("/readyz = %d while audit records cannot be written", code)
			}
			refused := 0
			for range 3 {
				_, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE"))
				if !errors.Is(err, dicomnet.RejectTemporaryCongestion) {
					t.Fatalf("association while audit records cannot be written: %v, want A-ASSOCIATE-RJ 02 03 01", err)
				}
				refused++
			}
			// The sender is held up once the queue is full, rather than its
			// failures being dropped.
			testenv.EventuallySawWithin(t, 60*time.Second, "the sender held up by the full audit queue", func() (bool, string) {
				if scp.Metric(t, "dicom_ingest_audit_queue_waits_total") != 0 {
					return true, ""
				}
				if n := sent(); n == sends {
					t.Fatalf("the sender was never held up by the full audit queue (%d of %d C-STOREs answered)", n, sends)
				}
				return false, fmt.Sprintf("%d of %d C-STOREs answered", sent(), sends)
			})

			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			testenv.EventuallySawWithin(t, 30*time.Second, "an association accepted after space was freed", func() (bool, string) {
				probe, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE"))
				if err == nil {
					if err := probe.Release(ctx); err != nil {
						t.Fatal(err)
					}
					return true, ""
				}
				if !errors.Is(err, dicomnet.RejectTemporaryCongestion) {
					t.Fatalf("association after space was freed: %v", err)
				}
				refused++
				return false, scp.Logs()
			})
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Fatalf("sender still held up 60s after space was freed (%d of %d answered)", sent(), sends)
			}
			// And objects are stored again.
			obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.9", SeriesUID: "1.2.826.0.1.3680043.2.9.0", SOPInstanceUID: "1.2.826.0.1.3680043.2.9.99999",
				PatientID: "P9", PatientName: "Test^Full", PixelBytes: 2048}
			if st, err := as.Store(ctx, synth.SOPClassUID, obj.SOPInstanceUID, synth.TransferSyntaxUID, obj.Dataset()); err != nil || !st.IsSuccess() {
				t.Fatalf("C-STORE after space was freed: %v %v", st, err)
			}
			if err := as.Release(ctx); err != nil {
				t.Fatal(err)
			}
			scp.WaitMetric(t, "dicom_ingest_audit_writable", 1, 10*time.Second)
			scp.WaitMetric(t, "dicom_ingest_audit_queue_length", 0, 30*time.Second)
			if lost := scp.Metric(t, "dicom_ingest_audit_records_lost_total"); lost != 0 {
				t.Errorf("%v audit records lost", lost)
			}
			scp.Stop(t)

			files := dcmFiles(t, root)
			failedRecs := map[string]string{}
			recs := auditRecords(t, root)
			for _, r := range recs {
				if r.Event == associationaudit.EventStoreFailed {
					failedRecs[r.SOPInstanceUID] = r.Status
				}
			}
			var stored, failed int
			for _, o := range outcomes {
				switch {
				case o.err != nil:
					t.Errorf("C-STORE %s: %v", o.uid, o.err)
				case o.status == 0:
					stored++
					if files[o.uid] == "" {
						t.Errorf("C-STORE %s acknowledged but not stored", o.uid)
					}
				default:
					failed++
					if st, ok := failedRecs[o.uid]; !ok || st != fmt.Sprintf("%04X", o.status) {
						t.Errorf("C-STORE %s failed with %04X and has no store-failed record (%q)", o.uid, o.status, st)
					}
					if files[o.uid] != "" {
						t.Errorf("C-STORE %s failed but a file is stored", o.uid)
					}
				}
			}
			rejected := 0
			for _, r := range recs {
				if r.Event == associationaudit.EventRejected && r.CallingAE == "LOCAL_AE" && r.RejectResult == 2 && r.RejectSource == 3 && r.RejectReason == 1 {
					// Refusals alike within 10 s are folded into one
					// record that counts them.
					rejected += r.Events()
				}
			}
			if rejected != refused {
				t.Errorf("%d associations refused, %d rejection records", refused, rejected)
			}
			t.Logf("%d C-STOREs: %d stored, %d failed with a record; %d associations refused and audited", len(outcomes), stored, failed, refused)
		})
	}
}

// readyz returns the status code of the SCP's /readyz.
func readyz(t *testing.T, scp *scptest.SCP) int {
	t.Helper()
	resp, err := http.Get("http://" + scp.HealthAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
