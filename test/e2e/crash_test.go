package e2e

import (
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	synthobj "github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// apiAssociation is a row of /api/audit/associations.
type apiAssociation struct {
	ID        string `json:"associationId"`
	Outcome   string `json:"outcome"`
	Instances int    `json:"instances"`
	Stored    int    `json:"stored"`
}

// TestKilledMidSendCountsStored: scp-task killed (SIGKILL) while a sender
// holds an association on which it acknowledged three C-STOREs. After the
// restart the audit trail has the association as unclean-stop, ended with
// its run, and counts the C-STOREs stored on it from its instance records:
// it said stored 0, the count coming only from the end record a killed
// run never writes.
func TestKilledMidSendCountsStored(t *testing.T) {
	need(t)
	n := newNode(t, filepath.Join(t.TempDir(), "data"))
	n.start()
	ctx := scptest.Context(t)
	as, err := dicomnet.Dial(ctx, n.dicom, synthClient)
	if err != nil {
		t.Fatal(err)
	}
	const sent = 3
	study, series := "2.25.7391820461", "2.25.7391820461.1"
	for i := range sent {
		uid := series + "." + string(rune('1'+i))
		obj := synthobj.Object{StudyUID: study, SeriesUID: series, SOPInstanceUID: uid, PatientID: "E2E-KILL-1",
			PatientName: "Killed^Kurt", PixelBytes: 4 << 10}
		if st, err := as.Store(ctx, synthobj.SOPClassUID, uid, synthobj.TransferSyntaxUID, obj.Dataset()); err != nil || st.Code != 0 {
			t.Fatalf("C-STORE %d: status %04X, %v", i, st.Code, err)
		}
	}
	associations := func(outcome string) []apiAssociation {
		var page struct{ Associations []apiAssociation }
		n.getJSON("/api/audit/associations?outcome="+outcome, &page)
		return page.Associations
	}
	// The kill comes once the trail has the association and its instances:
	// open, nothing counted stored yet.
	var open []apiAssociation
	testenv.Eventually(t, "the open association with its instances", func() bool {
		open = associations("open")
		return len(open) == 1 && open[0].Instances == sent
	})
	n.kill()
	_ = as.Abort() // its connection is gone with the process

	n.start()
	var ended []apiAssociation
	testenv.Eventually(t, "the association ended with its run", func() bool {
		ended = associations("unclean-stop")
		return len(ended) == 1
	})
	if a := ended[0]; a.ID != open[0].ID || a.Instances != sent || a.Stored != sent {
		t.Errorf("after the restart: %+v, want association %s with %d instances and %d stored", a, open[0].ID, sent, sent)
	}
	resp, err := http.Get("http://" + n.portal + "/audit/associations/" + url.PathEscape(open[0].ID))
	if err != nil {
		t.Fatal(err)
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the association's page: %s, %v", resp.Status, err)
	}
	if want := "3 (from its instance records, its end record never written"; !strings.Contains(string(page), want) {
		t.Errorf("the association's page lacks %q:\n%s", want, page)
	}
}
