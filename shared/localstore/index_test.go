package localstore

import (
	"testing"

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
