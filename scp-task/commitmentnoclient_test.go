package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

// TestCommitmentNoClientCertificateLogged: local mode whose tls:// commitment peers get no client certificate (no
// --commitment-tls-cert, no --tls-cert to reuse) says so once at start for each such peer, in JSON, naming its AE
// title only (a PACS requiring one refuses each report, which otherwise reads as the PACS's fault); with a client
// certificate, nothing.
func TestCommitmentNoClientCertificateLogged(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "Site CA")
	caFile := filepath.Join(dir, "ca.pem")
	testpki.WriteFile(t, caFile, ca.PEM)
	client := ca.Client(t, testpki.Options{CommonName: "ingest"}).WriteFiles(t, dir, "client")
	peers := []string{"--commitment-peers", "PACS=tls://127.0.0.1:2762,CT=10.0.0.2:104,MR=tls://127.0.0.1:2763?serverName=mr.example", "--commitment-tls-ca", caFile}
	lines := func(logs string) []map[string]any {
		var out []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("not JSON: %q", line)
			}
			if m["msg"] == CommitmentNoClientCertificateLog {
				out = append(out, m)
			}
		}
		return out
	}
	got := lines(startAndStopLocal(t, filepath.Join(dir, "data1"), peers...))
	var aes []string
	for _, m := range got {
		aes = append(aes, fmt.Sprint(m["called_ae"]))
		for k := range m {
			if !slices.Contains([]string{"time", "level", "msg", "called_ae"}, k) {
				t.Errorf("the line names %s (%v), want the AE title only", k, m[k])
			}
		}
	}
	if slices.Sort(aes); !slices.Equal(aes, []string{"MR", "PACS"}) {
		t.Errorf("lines %v, want one for each tls:// peer, MR and PACS", got)
	}
	if got := lines(startAndStopLocal(t, filepath.Join(dir, "data2"), append(peers, "--commitment-tls-cert", client.Cert, "--commitment-tls-key", client.Key)...)); len(got) != 0 {
		t.Errorf("with a client certificate: %v", got)
	}
}
