package interop

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/logleak"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestObjectLargerThanTheDisk: scp-task on a file store (and in local
// mode) with --min-free-bytes, sent an object larger than its disk's free
// space on an open association, then again and again on it, as a PACS
// retries its A700. The first attempt fails for lack of space, its
// partial file removed; every later C-STORE on the association, the
// object again or a small one that would fit, is answered A700 without
// the store writing a byte of it: the disk's free space does not fall
// while they arrive (each retry was streamed into the disk until it was
// full, and failed only then). Each is counted as A700, the C-STORE
// failed line and the store's own say why without naming the object, and
// the association stays usable. /readyz stays off through the retries and
// comes back once the disk has room for the object, which is then stored
// on the same association. /readyz used to come back once each attempt's
// partial file was removed and go off at the next: the load balancer
// added and removed the task with every retry.
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
				if st.Code == dimse.StatusOutOfResources && st.Comment == "" {
					t.Errorf("C-STORE answered A700 without a comment")
				}
				return st.Code
			}
			// tmpLeft lists the store's temporary files of objects: a Put
			// removes its own before the C-STORE is answered, while the
			// audit records (and readiness probes) have files of their
			// own there at any time, in the background. It waited up to
			// 2 s for the directory to empty, which a record written
			// more slowly than that on a loaded machine failed.
			tmpLeft := func() []string {
				t.Helper()
				entries, err := os.ReadDir(filepath.Join(root, filestore.TempDir))
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, e := range entries {
					if strings.HasPrefix(e.Name(), filestore.ObjectTempPrefix) {
						names = append(names, e.Name())
					}
				}
				return names
			}

			if code := store(large); code != dimse.StatusOutOfResources {
				t.Fatalf("C-STORE of an object larger than the free space: status %04X, want A700", code)
			}
			if left := tmpLeft(); len(left) > 0 {
				t.Errorf("a failed C-STORE left %v in %s", left, filestore.TempDir)
			}
			// From here on nothing is written but records: the disk's free
			// space, looked at every 2 ms, stays where it is.
			lowest := watchFreeSpace(t, disk)
			attempts, small := 1, 0
			var readyAt []time.Duration
			start := time.Now()
			for i := 1; time.Since(start) < 4*time.Second; i++ {
				if i%10 == 0 { // the PACS tries again
					if code := store(large); code != dimse.StatusOutOfResources {
						t.Fatalf("C-STORE of an object larger than the free space, again: status %04X, want A700", code)
					}
					attempts++
				}
				if i%10 == 5 { // a small object that would fit
					if code := store(object(100+i, 4096)); code != dimse.StatusOutOfResources {
						t.Fatalf("C-STORE of a small object on a store short of space: status %04X, want A700", code)
					}
					small++
				}
				if readyz(t, scp) == 200 && attempts > 0 {
					readyAt = append(readyAt, time.Since(start).Round(time.Millisecond))
				}
				time.Sleep(100 * time.Millisecond)
			}
			if len(readyAt) > 0 {
				t.Errorf("/readyz 200 at %v while the object still did not fit (%d attempts)", readyAt, attempts)
			}
			if before, low := lowest(); before-low > 1<<20 {
				t.Errorf("the disk's free space fell from %d to %d bytes while C-STOREs were refused: the store wrote them", before, low)
			}
			if left := tmpLeft(); len(left) > 0 {
				t.Errorf("the refused C-STOREs left %v in %s", left, filestore.TempDir)
			}
			// Each C-STORE is counted once its answer is sent: the last
			// one's count may come after the sender has its A700.
			scp.WaitMetric(t, `dicom_ingest_store_failures_total{status="A700"}`, float64(attempts+small), 10*time.Second)

			testenv.ResizeTmpfs(t, disk, 256<<20)
			testenv.Eventually(t, "/readyz 200 once the disk had room", func() bool { return readyz(t, scp) == 200 })
			if code := store(large); code != 0 {
				t.Errorf("C-STORE once the disk had room: status %04X", code)
			}
			if err := as.Release(ctx); err != nil {
				t.Fatal(err)
			}

			// Stopped, its log is read to the end: a line logged before
			// an answer may not have been read yet while it runs.
			scp.Stop(t)
			logs := scp.Logs()
			for _, want := range []string{`"msg":"dicomnet: C-STORE failed"`, `"status":"0xA700"`, "no space left on device",
				`"msg":"the store's disk is out of space`, "free space below the reserve",
				`"msg":"space is back on the store's disk: ready again"`} {
				if !strings.Contains(logs, want) {
					t.Errorf("the log does not say %s", want)
				}
			}
			lines := ids.Check(t, "scp-task on a disk too small for an object", logs)
			t.Logf("%d attempts, %d small objects refused; %d log lines checked for %d identifiers", attempts, small, lines, ids.Len())
		})
	}
}

// watchFreeSpace looks at the free space of the file system holding dir
// every 2 ms until the test ends or the returned function is called,
// which reports the free space when it started and the lowest it saw.
func watchFreeSpace(t *testing.T, dir string) (lowest func() (start, low uint64)) {
	t.Helper()
	freeBytes := func() uint64 {
		n, err := vfs.OS().FreeBytes(dir)
		if err != nil {
			t.Error(err)
		}
		return n
	}
	first := freeBytes()
	low := first
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				low = min(low, freeBytes())
			}
		}
	}()
	var once sync.Once
	lowest = func() (uint64, uint64) {
		once.Do(func() { close(stop); <-done })
		return first, low
	}
	t.Cleanup(func() { lowest() })
	return lowest
}
