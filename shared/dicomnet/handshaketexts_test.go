package dicomnet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestHandshakeTextsAreCryptoTLSs: every text handshakeTexts tells a failure by is one that crypto/tls, as the
// toolchain building these tests has it, says. TestHandshakeFailureReason makes only some of them for real (a
// client that sends an invalid signature, or a certificate crypto/tls cannot parse, takes more than a tls.Config):
// a Go release that rewords one, or an entry whose text no release says, would count its failures as "other",
// never as a wrong reason, and unseen. Here the rewording fails the test instead.
func TestHandshakeTextsAreCryptoTLSs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testenv.GOROOT(t), "src", "crypto", "tls", "*.go"))
	if err != nil || len(files) == 0 {
		testenv.Missing(t, "the source of crypto/tls in GOROOT", "install Go with its source (the official archive has it)")
	}
	var src strings.Builder
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
	}
	for _, h := range handshakeTexts {
		text := h.prefix
		// An alert crypto/tls sent itself is a *net.OpError: "local error: " and the alert's text, "tls: " and the
		// alert's name (alert.go).
		if name, ok := strings.CutPrefix(text, "local error: tls: "); ok {
			text = `"` + name + `"`
		}
		if !strings.Contains(src.String(), text) {
			t.Errorf("handshakeTexts tells %q by %q, which crypto/tls (%s) does not say: reworded, or never said", h.reason, h.prefix, filepath.Dir(files[0]))
		}
	}
	// A certificate not yet valid, told from an expired one by crypto/x509's Detail alone.
	verify := filepath.Join(testenv.GOROOT(t), "src", "crypto", "x509", "verify.go")
	b, err := os.ReadFile(verify)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"current time %s` + notYetValidDetail + `%s"`; !strings.Contains(string(b), want) {
		t.Errorf("HandshakeFailureReason tells %q by %q, which %s does not say: reworded", HandshakeNotYetValid, want, verify)
	}
}
