package s3

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
)

// TestKnownSeriesAtZeroFromTheStart: right after scp-task starts (with
// the S3 store, as in AWS), its /metrics lists every known series of each
// labelled counter the agent publishes (metricnames.Known: rejects by
// reason, C-STORE failures by status, shed connections by reason, S3
// retries by operation) at 0. The agent takes the first sample it sees of
// a series as its baseline: a series created by its first increment never
// published that increment (a first S3 retry, a first shed connection).
func TestKnownSeriesAtZeroFromTheStart(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	scp := startS3SCP(t, srv.URL)
	_, body := scp.Health(t, "/metrics")
	lines := strings.Split(body, "\n")
	for name, known := range metricnames.Known {
		for _, v := range known.Values {
			want := fmt.Sprintf("%s{%s=%q} 0", name, known.Label, v)
			if !slices.Contains(lines, want) {
				t.Errorf("/metrics at start lacks %s", want)
			}
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}
