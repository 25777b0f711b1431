package interop

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// bigEndianOnlyCfg is a storescu association profile proposing Secondary
// Capture (synth's class) in Explicit VR Big Endian alone, as the PACS of a
// site did.
const bigEndianOnlyCfg = `[[TransferSyntaxes]]
[BigEndian]
TransferSyntax1 = BigEndianExplicit

[[PresentationContexts]]
[BigEndianOnly]
PresentationContext1 = SecondaryCaptureImageStorage\BigEndian

[[Profiles]]
[BigEndianOnly]
PresentationContexts = BigEndianOnly
`

// TestRefusedContextsAudited: DCMTK's storescu proposing only Explicit VR
// Big Endian, and findscu proposing a SOP class the SCP does not accept,
// each get an A-ASSOCIATE-AC that refuses every context, and close. The
// association-accepted record says why, and the portal's row of the
// association shows it beside its end ("connection closed: EOF"); the
// trail said "association-accepted" then "association-aborted … EOF" and
// nothing else (found onboarding a site with Orthanc).
func TestRefusedContextsAudited(t *testing.T) {
	testenv.RequireTools(t, "storescu", "findscu")
	dir := t.TempDir()
	obj := filepath.Join(dir, "sc.dcm")
	if err := (synth.Object{StudyUID: "1.2.3", SeriesUID: "1.2.3.4", SOPInstanceUID: "1.2.3.4.5", PixelBytes: 64}).WriteFile(obj); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "storescu.cfg")
	if err := os.WriteFile(cfg, []byte(bigEndianOnlyCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	scp, root := storeModes[1].start(t, "") // local mode: the portal
	if r := dcmtk.Run(t, 30*time.Second, "storescu", "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", "-xf", cfg, "BigEndianOnly",
		scp.Host(), scp.Port(), obj); r.Err == nil {
		t.Fatalf("storescu sent in Big Endian:\n%s", r.Output)
	}
	if r := dcmtk.Run(t, 30*time.Second, "findscu", "-aet", "OTHER_AE", "-aec", "REMOTE_AE", "-P", "-k", "0008,0052=PATIENT",
		scp.Host(), scp.Port()); r.Err == nil {
		t.Fatalf("findscu was answered:\n%s", r.Output)
	}
	want := map[string]string{
		"LOCAL_AE": "no presentation context accepted (1 proposed): transfer syntax not supported (Explicit VR Big Endian (Retired) 1.2.840.10008.1.2.2)",
		"OTHER_AE": "no presentation context accepted (1 proposed): abstract syntax (SOP class) not supported (1.2.840.10008.5.1.4.1.2.1.1)",
	}
	// The portal's rows, once each association has ended and its
	// association-accepted record is in the trail too: the SCP writes an
	// association's records in parallel and the pipeline takes them in
	// on 4 workers, so its end may come in first.
	var rows []localstore.Association
	var accepted []pipeline.AuditRecord
	testenv.Eventually(t, "the accepted association audited", func() bool {
		accepted = portalAudit(t, scp.PortalAddr, associationaudit.EventAccepted)
		resp, err := http.Get("http://" + scp.PortalAddr + "/api/audit/associations")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var page localstore.AssociationPage
		if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
			t.Fatal(err)
		}
		rows = page.Associations
		ended := 0
		for _, a := range rows {
			if !a.End.IsZero() {
				ended++
			}
		}
		return ended == len(want) && len(rows) == len(want) && len(accepted) >= len(want)
	})
	for _, a := range rows {
		if a.RefusedContexts != want[a.CallingAE] || a.Stored != 0 {
			t.Errorf("portal's row of %s: %+v\nwant refusedContexts %q", a.CallingAE, a, want[a.CallingAE])
		}
	}
	// The audit trail's records, as pipeline.AssociationAuditRecord (the
	// AWS audit function's too) makes them from the SCP's.
	if len(accepted) != len(want) {
		t.Errorf("%d association-accepted records in the audit trail, want %d", len(accepted), len(want))
	}
	for _, r := range accepted {
		if r.Reason != want[r.CallingAE] {
			t.Errorf("audit trail's association-accepted record of %s: reason %q, want %q", r.CallingAE, r.Reason, want[r.CallingAE])
		}
		if testing.Verbose() {
			b, _ := json.Marshal(r)
			t.Logf("%s", b)
		}
	}
	// The SCP's own records, which the AWS audit function reads.
	recs := auditRecords(t, root)
	for ae, reason := range want {
		if r := findRecord(recs, associationaudit.EventAccepted, ae); r == nil || r.Reason != reason {
			t.Errorf("association-accepted record of %s: %+v\nwant reason %q", ae, r, reason)
		}
	}
	for _, r := range recs {
		if b, _ := json.Marshal(r); strings.Contains(string(b), "1.2.3.4.5") {
			t.Errorf("an instance UID in an association record: %s", b)
		}
	}
}
