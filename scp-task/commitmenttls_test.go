package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

// TestCommitmentHandshakeMetric: the failed handshakes of Storage Commitment reports to tls:// peers are counted
// under every reason of the listener's, each at 0 from the start (a rule on one reason sees its first failure), and
// configuration.md's list of metrics names the metric.
func TestCommitmentHandshakeMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	count, err := commitmentHandshakeMetric(reg)
	if err != nil {
		t.Fatal(err)
	}
	count("PACS", dicomnet.HandshakeUnknownCA)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != CommitmentHandshakeFailures {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	for _, r := range commitreport.HandshakeFailureReasons {
		want := 0.0
		if r == dicomnet.HandshakeUnknownCA {
			want = 1
		}
		if v, ok := got[r]; !ok || v != want {
			t.Errorf("%s{reason=%q} = %v (present %v), want %v", CommitmentHandshakeFailures, r, v, ok, want)
		}
	}
	doc, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(t), "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	if short := strings.TrimPrefix(CommitmentHandshakeFailures, "dicom_ingest"); !strings.Contains(string(doc), short) {
		t.Errorf("docs/configuration.md's metrics do not name %s (…%s)", CommitmentHandshakeFailures, short)
	}
}
