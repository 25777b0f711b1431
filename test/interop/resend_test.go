package interop

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestIdenticalResendAudited: DCMTK's storescu sends an object, sends it
// again on a new association, another PACS sends it, and then an object
// with another data set under its SOP Instance UID is sent. Each resend is
// a transfer of its own in the audit trail (PS3.15 A.5.3.7): the SCP
// records the first as a duplicate naming its association and sender (the
// same bytes under the key: nothing stored), and local mode's trail holds
// the first transfer's stored record and a duplicate record for each
// resend. The other PACS's copy is the same content: the content identity
// is the data set's, not the stored file's, whose meta header we write and
// which names the sending AE (Source Application Entity Title), so it is
// an identical resend, not a conflict (the store keeps it under a conflict
// key, other bytes than its key holds, and the pipeline finds its data set
// held). The last is a conflicting resend, both kept. Before, the resend
// left no trace but its association's stored count, and the other PACS's
// copy was a conflict.
func TestIdenticalResendAudited(t *testing.T) {
	testenv.RequireTools(t, "storescu")
	dir := t.TempDir()
	obj, other := filepath.Join(dir, "sc.dcm"), filepath.Join(dir, "other.dcm")
	const sop = "1.2.3.4.5.6"
	for _, o := range []struct {
		path string
		obj  synth.Object
	}{
		{obj, synth.Object{StudyUID: "1.2.3", SeriesUID: "1.2.3.4", SOPInstanceUID: sop, PixelBytes: 64}},
		{other, synth.Object{StudyUID: "1.2.3", SeriesUID: "1.2.3.4", SOPInstanceUID: sop, PixelBytes: 66}},
	} {
		if err := o.obj.WriteFile(o.path); err != nil {
			t.Fatal(err)
		}
	}
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			scp, root := mode.start(t, "")
			for _, send := range []struct{ aet, path string }{{"LOCAL_AE", obj}, {"LOCAL_AE", obj}, {"OTHER_AE", obj}, {"LOCAL_AE", other}} {
				if r := dcmtk.Run(t, 30*time.Second, "storescu", "-aet", send.aet, "-aec", "REMOTE_AE", scp.Host(), scp.Port(), send.path); r.Err != nil {
					t.Fatalf("storescu as %s: %v\n%s", send.aet, r.Err, r.Output)
				}
			}
			// The SCP's own records, which the AWS audit function reads: one
			// duplicate, on the second association. Every record counted
			// below is waited for: the SCP writes them in parallel, so the
			// last association's released record may be written before its
			// accepted one.
			var recs []associationaudit.Record
			testenv.Eventually(t, "the resend's audit records", func() bool {
				recs = auditRecords(t, root)
				n := map[string]int{}
				for _, r := range recs {
					n[r.Event]++
				}
				return n[associationaudit.EventAccepted] >= 4 && n[associationaudit.EventReleased] >= 4 &&
					findRecord(recs, associationaudit.EventDuplicate, "LOCAL_AE") != nil
			})
			// The associations in the order they were sent.
			slices.SortStableFunc(recs, func(a, b associationaudit.Record) int { return a.Time.Compare(b.Time) })
			var accepted []string
			var dups []associationaudit.Record
			for _, r := range recs {
				switch r.Event {
				case associationaudit.EventAccepted:
					accepted = append(accepted, r.AssociationID)
				case associationaudit.EventDuplicate:
					dups = append(dups, r)
				}
			}
			if len(accepted) != 4 || len(dups) != 1 || dups[0].SOPInstanceUID != sop || dups[0].AssociationID != accepted[1] || dups[0].PeerAddr == "" {
				t.Fatalf("the SCP's duplicate records: %+v (associations %v)", dups, accepted)
			}
			if scp.PortalAddr == "" {
				return
			}
			// Local mode's trail: each transfer has its record.
			var stored, duplicates, conflicts []pipeline.AuditRecord
			testenv.Eventually(t, "the resend's outcomes in the portal", func() bool {
				stored = portalAudit(t, scp.PortalAddr, pipeline.OutcomeStored)
				duplicates = portalAudit(t, scp.PortalAddr, pipeline.OutcomeDuplicate)
				conflicts = portalAudit(t, scp.PortalAddr, pipeline.OutcomeConflict)
				return len(stored) == 1 && len(duplicates) == 2 && len(conflicts) == 1
			})
			byAssociation := map[string]pipeline.AuditRecord{}
			for _, r := range duplicates {
				byAssociation[r.AssociationID] = r
			}
			again, otherAE := byAssociation[accepted[1]], byAssociation[accepted[2]]
			if len(stored) != 1 || len(duplicates) != 2 || len(conflicts) != 1 || stored[0].AssociationID != accepted[0] ||
				again.CallingAE != "LOCAL_AE" || again.SOPInstanceUID != sop || otherAE.CallingAE != "OTHER_AE" ||
				otherAE.SOPInstanceUID != sop || otherAE.ContentIdentity != stored[0].ContentIdentity ||
				conflicts[0].AssociationID != accepted[3] || conflicts[0].ContentIdentity == stored[0].ContentIdentity {
				t.Errorf("trail: stored %+v\nduplicates %+v\nconflicts %+v", stored, duplicates, conflicts)
			}
		})
	}
}
