package pipelinetest_test

import (
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

func TestIndexConformance(t *testing.T) {
	pipelinetest.RunIndexStore(t, pipelinetest.IndexHarness{
		New: func(*testing.T) pipeline.IndexStore { return pipelinetest.NewIndex() },
	})
}
