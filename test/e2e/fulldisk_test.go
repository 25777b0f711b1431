package e2e

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore/localstoretest"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/logleak"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	synthobj "github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// synthClient is the project's own SCU, storing synthesized objects.
var synthClient = dicomnet.ClientConfig{CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE",
	Contexts: []dicomnet.ProposedContext{{AbstractSyntax: synthobj.SOPClassUID, TransferSyntaxes: []string{synthobj.TransferSyntaxUID}}}}

// TestLocalModeFullDisk: local mode on a disk that fills while a PACS
// sends, as a data directory on a small volume does.
//
// With a reserve (--min-free-bytes), objects fail with Out of Resources
// (A7xx) and new associations are refused (02 03 01) once the disk's free
// space falls below it, and the pipeline goes on: every object already
// acknowledged is indexed and announced while the disk is still short.
// Without one, objects fail once the disk is full, and what was
// acknowledged is processed once space returns.
//
// Either way a C-STORE is never answered with success for an object that
// is not kept; when space returns, sends succeed again without a restart;
// every object whose C-STORE succeeded is indexed once and announced once,
// and events.log holds whole lines, one Instance Stored event for each (a
// full disk once left half a line in it, which spoiled the next, and
// appended events again). The errors a full disk causes name no patient
// or UID.
func TestLocalModeFullDisk(t *testing.T) {
	need(t)
	for _, tt := range []struct {
		name    string
		reserve int64
	}{
		{"8 MiB reserve", 8 << 20},
		{"no reserve", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The journal takes 32 MiB of it at the start.
			disk := testenv.MountTmpfs(t, 48<<20)
			n := newNode(t, filepath.Join(disk, "data"), "--min-free-bytes", strconv.FormatInt(tt.reserve, 10))
			n.start()
			ctx := scptest.Context(t)
			as, err := dicomnet.Dial(ctx, n.dicom, synthClient)
			if err != nil {
				t.Fatal(err)
			}
			study, series := logleak.UID(60), logleak.UID(60, 1)
			var ids logleak.Identifiers
			ids.AddUID(study)
			ids.AddUID(series)
			ids.AddName("Fulldisk^Frieda")
			ids.AddID("patient id", "E2E-FULL-4711")
			var acked []string
			send := func(i int) uint16 {
				t.Helper()
				uid := logleak.UID(60, 1, i+1)
				ids.AddUID(uid)
				obj := synthobj.Object{StudyUID: study, SeriesUID: series, SOPInstanceUID: uid, PatientID: "E2E-FULL-4711",
					PatientName: "Fulldisk^Frieda", PixelBytes: 48 << 10}
				st, err := as.Store(ctx, synthobj.SOPClassUID, uid, synthobj.TransferSyntaxUID, obj.Dataset())
				if err != nil {
					t.Fatalf("C-STORE %d: %v", i, err)
				}
				if st.Code == 0 {
					acked = append(acked, uid)
				} else if st.Code&0xff00 != 0xa700 {
					t.Fatalf("C-STORE %d on a full disk: status %04X, want success or Out of Resources (A7xx)", i, st.Code)
				}
				return st.Code
			}
			// Send until the disk is full, and on for a while.
			i, refused := 0, 0
			for ; refused < 30; i++ {
				if i == 2000 {
					t.Fatalf("the disk never filled: %d objects acknowledged", len(acked))
				}
				if send(i) != 0 {
					refused++
				}
			}
			t.Logf("%d C-STOREs acknowledged before the disk filled, %d refused", len(acked), refused)
			if tt.reserve > 0 {
				// Short of space: new associations are refused as
				// temporary congestion, and the pipeline goes on.
				testenv.Eventually(t, "a new association refused", func() bool {
					extra, err := dicomnet.Dial(ctx, n.dicom, synthClient)
					if err == nil {
						if err := extra.Release(ctx); err != nil {
							t.Fatal(err)
						}
						return false
					}
					if !errors.Is(err, dicomnet.RejectTemporaryCongestion) {
						t.Fatalf("association on a disk short of space: %v, want A-ASSOCIATE-RJ 02 03 01", err)
					}
					return true
				})
				waitProcessed(t, n, len(acked), study)
			}

			// Space returns: sends succeed again, without a restart.
			testenv.ResizeTmpfs(t, disk, 256<<20)
			testenv.Eventually(t, "a C-STORE succeeding once space returned", func() bool {
				i++
				return send(i) == 0
			})
			for range 20 {
				i++
				if code := send(i); code != 0 {
					t.Fatalf("C-STORE %d after space returned: status %04X", i, code)
				}
			}
			if err := as.Release(ctx); err != nil {
				t.Fatal(err)
			}
			waitProcessed(t, n, len(acked), study)
			n.stop()
			logged := instanceStoredInLog(t, n.dataDir)
			for _, uid := range acked {
				if logged[uid] != 1 {
					t.Errorf("%d Instance Stored events in events.log for an acknowledged object, want 1", logged[uid])
				}
			}
			if len(logged) != len(acked) {
				t.Errorf("events.log announces %d instances, want the %d acknowledged", len(logged), len(acked))
			}
			log := n.logText()
			if tt.reserve > 0 {
				// The reserve kept room for the pipeline and the event log.
				for _, msg := range []string{"pipeline failed; will retry", "event delivery"} {
					if strings.Contains(log, `"msg":"`+msg+`"`) {
						t.Errorf("the reserve left the pipeline short of space: %q in the log", msg)
					}
				}
			}
			lines := ids.Check(t, "scp-task --local on a full disk", log)
			t.Logf("%d log lines checked for %d identifiers", lines, ids.Len())
		})
	}
}

// TestShortDiskAtStart: local mode started with the default reserve
// (256 MiB) on a disk with less free space says so at the start, naming
// the flag and the variable, and refuses associations as temporary
// congestion rather than failing objects.
func TestShortDiskAtStart(t *testing.T) {
	need(t)
	disk := testenv.MountTmpfs(t, 96<<20)
	n := newNode(t, filepath.Join(disk, "data"))
	n.start()
	ctx := scptest.Context(t)
	_, err := dicomnet.Dial(ctx, n.dicom, synthClient)
	if !errors.Is(err, dicomnet.RejectTemporaryCongestion) {
		t.Fatalf("association on a disk short of the reserve: %v, want A-ASSOCIATE-RJ 02 03 01", err)
	}
	log := n.logText()
	for _, want := range []string{`"msg":"the store's disk is short of free space`, "--min-free-bytes (SCP_MIN_FREE_BYTES)", "the store keeps 268435456"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log at the start does not say %q", want)
		}
	}
}

// waitProcessed waits until the pipeline has nothing pending and checks
// that it indexed the study's acked instances and announced each in
// events.log.
func waitProcessed(t *testing.T, n *node, acked int, study string) {
	t.Helper()
	if failed := n.waitPipelineIdle(30 * time.Second); failed != 0 {
		t.Errorf("%d objects failed in the pipeline", failed)
	}
	var page apiStudyPage
	n.getJSON("/api/studies/"+study, &page)
	if page.InstanceCount != acked {
		t.Errorf("%d instances indexed, want the %d acknowledged", page.InstanceCount, acked)
	}
	testenv.Eventually(t, "every Instance Stored event in events.log", func() bool {
		return len(instanceStoredInLog(t, n.dataDir)) >= acked
	})
}

// instanceStoredInLog counts the Instance Stored events in the data
// directory's events.log by SOP Instance UID.
func instanceStoredInLog(t *testing.T, dataDir string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, ev := range localstoretest.EventsLog(t, filepath.Join(dataDir, "events.log")) {
		if ev.DetailType != pipeline.DetailTypeInstanceStored {
			continue
		}
		var d pipeline.InstanceStoredDetail
		if err := json.Unmarshal(ev.Detail, &d); err != nil {
			t.Fatalf("events.log event %s: %v", ev.ID, err)
		}
		out[d.SOPInstanceUID]++
	}
	return out
}
