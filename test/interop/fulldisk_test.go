package interop

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/logleak"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestObjectLargerThanTheDisk: scp-task on a file store (and in local
// mode) with --min-free-bytes, sent an object larger than its disk's free
// space again and again, as a PACS retries its A700. Each attempt is
// answered A700 (counted as such), its partial file is removed, and the
// C-STORE failed line and the store's own say why without naming the
// object; /readyz stays off through the retries, while a small object on
// the open association is still stored, and comes back once the disk has
// room for the object, which is then stored. /readyz used to come back
// once each attempt's partial file was removed and go off at the next:
// the load balancer added and removed the task with every retry.
func TestObjectLargerThanTheDisk(t *testing.T) {
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			// The journal takes 32 MiB of it at the start.
			disk := testenv.MountTmpfs(t, 64<<20)
			scp, root := mode.start(t, filepath.Join(disk, "data"), "--min-free-bytes", "4194304")
			if code := readyz(t, scp); code != 200 {
				t.Fatalf("/readyz = %d before anything was sent", code)
			}
			ctx := scptest.Context(t)
			as, err := dicomnet.Dial(ctx, scp.DICOMAddr, scClient("LOCAL_AE"))
			if err != nil {
				t.Fatal(err)
			}
			var ids logleak.Identifiers
			study, series := logleak.UID(71), logleak.UID(71, 1)
			ids.AddUID(study)
			ids.AddUID(series)
			ids.AddName("Toolarge^Tilda")
			object := func(n int, pixels int64) synth.Object {
				uid := logleak.UID(71, 1, n)
				ids.AddUID(uid)
				return synth.Object{StudyUID: study, SeriesUID: series, SOPInstanceUID: uid, PatientID: "P71",
					PatientName: "Toolarge^Tilda", PixelBytes: pixels}
			}
			large := object(1, 48<<20)
			store := func(o synth.Object) uint16 {
				t.Helper()
				st, err := as.Store(ctx, synth.SOPClassUID, o.SOPInstanceUID, synth.TransferSyntaxUID, o.Dataset())
				if err != nil {
					t.Fatalf("C-STORE: %v", err)
				}
				return st.Code
			}
			// tmpLeft lists the store's temporary files, waiting a while
			// for them to go: an audit record may be on its way.
			tmpLeft := func() []string {
				t.Helper()
				deadline := time.Now().Add(2 * time.Second)
				for {
					entries, err := os.ReadDir(filepath.Join(root, filestore.TempDir))
					if err != nil {
						t.Fatal(err)
					}
					var names []string
					for _, e := range entries {
						names = append(names, e.Name())
					}
					if len(names) == 0 || time.Now().After(deadline) {
						return names
					}
					time.Sleep(20 * time.Millisecond)
				}
			}

			attempts := 0
			var readyAt []time.Duration
			start := time.Now()
			for i := 0; time.Since(start) < 4*time.Second; i++ {
				if i%10 == 0 { // the PACS tries again
					if code := store(large); code != dimse.StatusOutOfResources {
						t.Fatalf("C-STORE of an object larger than the free space: status %04X, want A700", code)
					}
					attempts++
					if left := tmpLeft(); len(left) > 0 {
						t.Errorf("a failed C-STORE left %v in %s", left, filestore.TempDir)
					}
				}
				if i%10 == 5 { // a small object still fits
					if code := store(object(100+i, 4096)); code != 0 {
						t.Fatalf("C-STORE of a small object: status %04X", code)
					}
				}
				if readyz(t, scp) == 200 && attempts > 0 {
					readyAt = append(readyAt, time.Since(start).Round(time.Millisecond))
				}
				time.Sleep(100 * time.Millisecond)
			}
			if len(readyAt) > 0 {
				t.Errorf("/readyz 200 at %v while the object still did not fit (%d attempts)", readyAt, attempts)
			}
			if got := scp.Metric(t, `dicom_ingest_store_failures_total{status="A700"}`); got != float64(attempts) {
				t.Errorf("A700 failures counted %v, want %d", got, attempts)
			}

			testenv.ResizeTmpfs(t, disk, 256<<20)
			deadline := time.Now().Add(5 * time.Second)
			for readyz(t, scp) != 200 {
				if time.Now().After(deadline) {
					t.Fatal("/readyz still off 5 s after the disk had room")
				}
				time.Sleep(100 * time.Millisecond)
			}
			if code := store(large); code != 0 {
				t.Errorf("C-STORE once the disk had room: status %04X", code)
			}
			if err := as.Release(ctx); err != nil {
				t.Fatal(err)
			}

			logs := scp.Logs()
			for _, want := range []string{`"msg":"dicomnet: C-STORE failed"`, `"status":"0xA700"`, "no space left on device",
				`"msg":"the store's disk is out of space`, `"msg":"space is back on the store's disk: ready again"`} {
				if !strings.Contains(logs, want) {
					t.Errorf("the log does not say %s", want)
				}
			}
			lines := ids.Check(t, "scp-task on a disk too small for an object", logs)
			t.Logf("%d attempts; %d log lines checked for %d identifiers", attempts, lines, ids.Len())
		})
	}
}
