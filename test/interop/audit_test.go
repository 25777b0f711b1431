package interop

import (
	"errors"
	"io"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
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
