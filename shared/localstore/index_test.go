package localstore

import (
	"context"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// TestIndexConformance runs the index contract's suite on SQLite. An
// upsert is one transaction, so the suite's crash is the one after it
// committed (a crash inside it leaves the database as it was).
func TestIndexConformance(t *testing.T) {
	pipelinetest.RunIndexStore(t, pipelinetest.IndexHarness{
		New: func(t *testing.T) pipeline.IndexStore { return openTest(t).IndexStore() },
	})
}

// TestCommitmentConformance runs the Storage Commitment store's suite on
// SQLite.
func TestCommitmentConformance(t *testing.T) {
	pipelinetest.RunCommitmentStore(t, func(t *testing.T) pipeline.CommitmentStore { return openTest(t).CommitmentStore() })
}

// TestUpsertDuplicateUnderAnotherStudy: content already indexed under its
// SOP Instance UID is a duplicate even when it names another study, and
// reports the study it was indexed in (the upsert's one read fetches the
// study it names; this is the case that reads the other one).
func TestUpsertDuplicateUnderAnotherStudy(t *testing.T) {
	ctx := context.Background()
	ix := openTest(t).IndexStore()
	in := pipelinetest.Record(1, 1, 1, "aa", 0)
	first, err := ix.UpsertInstance(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	moved := pipelinetest.Record(2, 1, 1, "aa", time.Hour)
	moved.SOPInstanceUID = in.SOPInstanceUID
	for _, other := range []bool{false, true} {
		if other {
			// The study it names exists too: still the first study's.
			if _, err := ix.UpsertInstance(ctx, pipelinetest.Record(2, 1, 2, "bb", 0)); err != nil {
				t.Fatal(err)
			}
		}
		r, err := ix.UpsertInstance(ctx, moved)
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != pipeline.InstanceDuplicate || r.Study.StudyInstanceUID != in.StudyInstanceUID ||
			r.Study.Revision != first.Study.Revision || r.Instance.StudyInstanceUID != in.StudyInstanceUID {
			t.Errorf("study 2 exists %v: outcome %v, study %s revision %d, instance in %s; want the duplicate of the first study's",
				other, r.Outcome, r.Study.StudyInstanceUID, r.Study.Revision, r.Instance.StudyInstanceUID)
		}
	}
}
