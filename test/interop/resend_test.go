package interop

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestIdenticalResendAudited: DCMTK's storescu sends an object, sends it
// again on a new association, and then another PACS sends it. The resend is
// a transfer of its own in the audit trail (PS3.15 A.5.3.7): the SCP
// records it as a duplicate naming its association and sender, and local
// mode's trail holds the first transfer's stored record and the resend's
// duplicate record. The third is a conflicting resend, both kept: the
// stored object is the Part 10 file, whose meta header names the sending
// AE (Source Application Entity Title), so another sender's copy is other
// content. Before, the resend left no trace but its association's stored
// count.
func TestIdenticalResendAudited(t *testing.T) {
	testenv.RequireTools(t, "storescu")
	obj := filepath.Join(t.TempDir(), "sc.dcm")
	const sop = "1.2.3.4.5.6"
	if err := (synth.Object{StudyUID: "1.2.3", SeriesUID: "1.2.3.4", SOPInstanceUID: sop, PixelBytes: 64}).WriteFile(obj); err != nil {
		t.Fatal(err)
	}
	for _, mode := range storeModes {
		t.Run(mode.name, func(t *testing.T) {
			scp, root := mode.start(t, "")
			for _, aet := range []string{"LOCAL_AE", "LOCAL_AE", "OTHER_AE"} {
				if r := dcmtk.Run(t, 30*time.Second, "storescu", "-aet", aet, "-aec", "REMOTE_AE", scp.Host(), scp.Port(), obj); r.Err != nil {
					t.Fatalf("storescu as %s: %v\n%s", aet, r.Err, r.Output)
				}
			}
			// The SCP's own records, which the AWS audit function reads: one
			// duplicate, on the second association.
			var recs []associationaudit.Record
			waitFor(t, 10*time.Second, func() bool {
				recs = auditRecords(t, root)
				return findRecord(recs, associationaudit.EventDuplicate, "LOCAL_AE") != nil
			})
			var first string
			var dups []associationaudit.Record
			for _, r := range recs {
				switch {
				case r.Event == associationaudit.EventAccepted && first == "":
					first = r.AssociationID
				case r.Event == associationaudit.EventDuplicate:
					dups = append(dups, r)
				}
			}
			if len(dups) != 1 || dups[0].SOPInstanceUID != sop || dups[0].AssociationID == first || dups[0].PeerAddr == "" {
				t.Fatalf("the SCP's duplicate records: %+v (first association %s)", dups, first)
			}
			if scp.PortalAddr == "" {
				return
			}
			// Local mode's trail: each transfer has its record.
			var stored, duplicates, conflicts []pipeline.AuditRecord
			waitFor(t, 10*time.Second, func() bool {
				stored = portalAudit(t, scp.PortalAddr, pipeline.OutcomeStored)
				duplicates = portalAudit(t, scp.PortalAddr, pipeline.OutcomeDuplicate)
				conflicts = portalAudit(t, scp.PortalAddr, pipeline.OutcomeConflict)
				return len(stored) == 1 && len(duplicates) == 1 && len(conflicts) == 1
			})
			if stored[0].AssociationID != first || duplicates[0].AssociationID != dups[0].AssociationID ||
				duplicates[0].CallingAE != "LOCAL_AE" || duplicates[0].SOPInstanceUID != sop || conflicts[0].CallingAE != "OTHER_AE" {
				t.Errorf("trail: stored %+v\nduplicate %+v\nconflict %+v", stored[0], duplicates[0], conflicts[0])
			}
		})
	}
}
