package pipeline_test

import (
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// TestAssociationEndCarriesWhatWasStored: an association's end record in
// the trail says how many C-STOREs the SCP stored on it, identical resends
// included; the trail counted only instance records, so an association
// that resent a study showed 0 instances.
func TestAssociationEndCarriesWhatWasStored(t *testing.T) {
	for _, ev := range []string{associationaudit.EventReleased, associationaudit.EventAborted} {
		rec := pipeline.AssociationAuditRecord(associationaudit.Record{Event: ev, Time: time.Unix(0, 0), AssociationID: "a1",
			Instances: 18, Bytes: 9000}, "test")
		if rec.StoredInstances != 18 || rec.StoredBytes != 9000 {
			t.Errorf("%s: stored %d instances, %d bytes; want 18, 9000", ev, rec.StoredInstances, rec.StoredBytes)
		}
	}
}
