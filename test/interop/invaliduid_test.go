package interop

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestStorescuTakesARefusalWithoutItsInstanceUID: storescu sends an object
// whose SOP Instance UID is no valid UID (a component with a leading zero,
// as some devices write them); the SCP refuses it (C000), and its
// C-STORE-RSP leaves the Affected SOP Instance UID out (PS3.7 9.1.1: U(=);
// the response echoes only valid UIDs). storescu takes that response as
// the refusal it is (its dump says "Affected SOP Instance UID : none") and,
// told not to halt at a refusal, goes on to the next file of its run on
// the same association, which is stored: a peer that needed the element
// would have aborted the association.
func TestStorescuTakesARefusalWithoutItsInstanceUID(t *testing.T) {
	testenv.RequireTools(t, "storescu")
	scp := startSCP(t)
	dir := t.TempDir()
	bad, good := filepath.Join(dir, "a-bad.dcm"), filepath.Join(dir, "b-good.dcm")
	for path, inst := range map[string]string{bad: "1.2.826.0.1.3680043.2.7.1.01", good: "1.2.826.0.1.3680043.2.7.1.2"} {
		obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.7", SeriesUID: "1.2.826.0.1.3680043.2.7.1", SOPInstanceUID: inst,
			PatientID: "P7", PatientName: "Test^InvalidUID", PixelBytes: 1024}
		if err := obj.WriteFile(path); err != nil {
			t.Fatal(err)
		}
	}
	r := dcmtk.Run(t, 60*time.Second, "storescu", "-d", "--no-halt", "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port(), bad, good)
	out := r.Output
	if !strings.Contains(out, "C000") && !strings.Contains(strings.ToLower(out), "0xc000") {
		t.Errorf("storescu did not report the refusal (C000):\n%s", out)
	}
	if !noInstanceUID.MatchString(out) {
		t.Errorf("the response carries an Affected SOP Instance UID, want none (the request's is invalid):\n%s", out)
	}
	testenv.EventuallySawWithin(t, 30*time.Second, "the second file stored alone", func() (bool, string) {
		stored := storedFiles(t, scp.DataDir)
		return len(stored) == 1, fmt.Sprintf("stored %v; storescu (%v):\n%s", stored, r.Err, out)
	})
}

// noInstanceUID is storescu's dump (-d) of a message without an Affected
// SOP Instance UID: only its response lacks one here.
var noInstanceUID = regexp.MustCompile(`Affected SOP Instance UID\s*:\s*none`)
