package tlstrust_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// TestClientCertificate: our client certificate is refused when a peer would refuse it: a weak key, an
// extended key usage without clientAuth (a server certificate reused as it is), a validity that does not hold now
// (expired, or not yet valid).
func TestClientCertificate(t *testing.T) {
	ca := testpki.NewCA(t, "CA")
	for _, tt := range []struct {
		name    string
		cert    *testpki.Cert
		wantErr error // nil: accepted; errNone: refused, any reason
	}{
		{"client", ca.Client(t, testpki.Options{CommonName: "c"}), nil},
		{"server and client", ca.Server(t, testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}), nil},
		{"any usage", ca.Server(t, testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}), nil},
		{"no extended key usage", ca.Server(t, testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{}}), nil},
		{"server only", ca.Server(t, testpki.Options{}), tlstrust.ErrNoClientAuth},
		{"RSA 1024", ca.Client(t, testpki.Options{CommonName: "weak", RSA: true, RSABits: 1024}), errWeak},
		// Refused by the peer in every handshake: refused when read.
		{"expired", ca.Client(t, testpki.Options{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}), tlstrust.ErrNotValidNow},
		{"not yet valid", ca.Client(t, testpki.Options{CommonName: "early", NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}), tlstrust.ErrNotValidNow},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tlstrust.ClientCertificate(tt.cert.CertPEM, tt.cert.KeyPEM)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr == errWeak && err == nil, tt.wantErr != nil && tt.wantErr != errWeak && !errors.Is(err, tt.wantErr):
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

var errWeak = errors.New("a weak key")

// TestClientConfig: the client's versions and suites are the server's (BCP 195); the server's certificate is
// verified by crypto/tls alone (nothing skips or replaces it) and renegotiation is refused.
func TestClientConfig(t *testing.T) {
	cfg := tlstrust.ClientConfig("pacs.example", nil, nil)
	if cfg.MinVersion != tls.VersionTLS12 || cfg.MaxVersion != tls.VersionTLS13 || len(cfg.CipherSuites) != len(tlstrust.CipherSuites) ||
		cfg.ServerName != "pacs.example" || cfg.InsecureSkipVerify || cfg.VerifyPeerCertificate != nil || cfg.VerifyConnection != nil ||
		cfg.Renegotiation != tls.RenegotiateNever || len(cfg.Certificates) != 0 {
		t.Errorf("ClientConfig = %+v", cfg)
	}
}
