package config

import (
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// TestCommitmentTLSCAAsPEMText: --commitment-tls-ca given as PEM text (as ECS passes a secret) that is no good CA
// bundle is named in the error by its certificate (subject, serial, fingerprint) or, without one, by the text's
// size and SHA-256, never quoted: the text may hold a key pasted by mistake.
func TestCommitmentTLSCAAsPEMText(t *testing.T) {
	weak := testpki.NewCAWith(t, "Weak CA", testpki.Options{RSA: true, RSABits: 1024})
	leafKey := testpki.NewCA(t, "Site CA").Client(t, testpki.Options{CommonName: "ingest"}).KeyPEM
	for _, tc := range []struct {
		name, pem string
		says      string
	}{
		{"a CA of a weak key", string(weak.PEM), `(PEM text: certificate ` + tlstrust.NameOf(weak.Cert).String() + `): certificate 1: certificate "CN=Weak CA`},
		{"a key", string(leafKey), `(PEM text of ` + strconv.Itoa(len(strings.TrimSpace(string(leafKey)))) + ` bytes, SHA-256 `}, // as the setting holds it
		{"flattened to \\n", strings.ReplaceAll(string(weak.PEM), "\n", `\n`), `(PEM text: certificate ` + tlstrust.NameOf(weak.Cert).String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load([]string{"--local"}, env(map[string]string{"SCP_COMMITMENT_PEERS": "PACS=tls://10.1.2.3:2762", "SCP_COMMITMENT_TLS_CA": tc.pem}), io.Discard)
			if err == nil || !strings.Contains(err.Error(), "SCP_COMMITMENT_TLS_CA (or --commitment-tls-ca) "+tc.says) {
				t.Fatalf("Load error = %v, want one saying %q", err, tc.says)
			}
			for _, line := range strings.Split(strings.ReplaceAll(tc.pem, `\n`, "\n"), "\n") {
				if len(line) > 20 && strings.Contains(err.Error(), line) {
					t.Errorf("the error quotes the PEM text (%q): %v", line, err)
				}
			}
		})
	}
}
