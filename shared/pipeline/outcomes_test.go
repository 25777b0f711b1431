package pipeline_test

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// TestMain holds the audit trail's outcomes to pipeline.AuditOutcomes, the
// list the portal's audit filter offers: pipelinetest's trail refuses an
// outcome not in it (every written one is offered), and once every test of
// the package has run, each offered outcome must have been written by the
// pipeline's code in some test (every offered one can be written). The
// portal offered "duplicate", which no record has, and not
// "unparseable-record", which the pipeline writes.
func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if code == 0 && flag.Lookup("test.run").Value.String() == "" && flag.Lookup("test.skip").Value.String() == "" && !testing.Short() {
		written := pipelinetest.WrittenOutcomes()
		for _, o := range pipeline.AuditOutcomes {
			if !slices.Contains(written, o) {
				fmt.Fprintf(os.Stderr, "pipeline.AuditOutcomes offers %q, which no test saw the pipeline write (written: %v)\n", o, written)
				code = 1
			}
		}
	}
	os.Exit(code)
}
