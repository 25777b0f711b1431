package pipelinetest_test

import (
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

func TestIndexConformance(t *testing.T) {
	pipelinetest.RunIndexStore(t, pipelinetest.IndexHarness{
		New: func(*testing.T) pipeline.IndexStore { return pipelinetest.NewIndex() },
		StoreName: func(_ *testing.T, ix pipeline.IndexStore, uid, name string) {
			ix.(*pipelinetest.Index).StoreName(uid, name)
		},
	})
}

func TestCommitmentConformance(t *testing.T) {
	pipelinetest.RunCommitmentStore(t, func(*testing.T) pipeline.CommitmentStore { return pipelinetest.NewCommitments() })
}

func TestAuditConformance(t *testing.T) {
	pipelinetest.RunAuditStore(t, pipelinetest.AuditHarness{
		New: func(*testing.T) pipeline.AuditStore { return pipelinetest.NewAudit() },
	})
}
