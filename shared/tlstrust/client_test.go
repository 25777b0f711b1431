package tlstrust_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
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
		// Refused by the peer in every handshake now, but not at every time: refused for its dates alone (the
		// certificate returned with the refusal), after every other check.
		{"expired", ca.Client(t, testpki.Options{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}), tlstrust.ErrNotValidNow},
		{"not yet valid", ca.Client(t, testpki.Options{CommonName: "early", NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}), tlstrust.ErrNotValidNow},
		{"expired server only", ca.Server(t, testpki.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}), tlstrust.ErrNoClientAuth},
		{"expired RSA 1024", ca.Client(t, testpki.Options{CommonName: "old weak", RSA: true, RSABits: 1024, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}), errWeak},
		// A certificate issued a moment ago by a CA whose clock runs ahead of ours.
		{"valid within the clock skew", ca.Client(t, testpki.Options{CommonName: "fresh", NotBefore: time.Now().Add(tlstrust.NotBeforeSkew / 2), NotAfter: time.Now().Add(48 * time.Hour)}), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cert, err := tlstrust.ClientCertificate(tt.cert.CertPEM, tt.cert.KeyPEM)
			switch {
			case errors.Is(err, tlstrust.ErrNoClientAuth) && errors.Is(err, tlstrust.ErrNotValidNow):
				t.Fatalf("refused for its dates and its usage together: %v", err)
			case errors.Is(err, tlstrust.ErrNotValidNow) && cert.Leaf == nil:
				t.Fatalf("refused for its dates alone (%v) without the certificate, which is valid at other times", err)
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

// TestCheckValidity: the one rule of a certificate of ours when presented: NotAfter strictly, NotBefore with
// NotBeforeSkew's allowance (a certificate issued a moment ago by a CA whose clock runs ahead of ours).
func TestCheckValidity(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name                string
		notBefore, notAfter time.Time
		valid               bool
	}{
		{"valid", now.Add(-time.Hour), now.Add(time.Hour), true},
		{"issued seconds ahead of our clock", now.Add(10 * time.Second), now.Add(time.Hour), true},
		{"at the edge of the allowance", now.Add(tlstrust.NotBeforeSkew), now.Add(time.Hour), true},
		{"beyond the allowance", now.Add(tlstrust.NotBeforeSkew + time.Second), now.Add(time.Hour), false},
		{"expired a second ago", now.Add(-time.Hour), now.Add(-time.Second), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tlstrust.CheckValidity(&x509.Certificate{NotBefore: tt.notBefore, NotAfter: tt.notAfter}, now)
			if (err == nil) != tt.valid || err != nil && !errors.Is(err, tlstrust.ErrNotValidNow) {
				t.Errorf("CheckValidity = %v, want valid %v", err, tt.valid)
			}
		})
	}
}

// TestClientConfigPresentsOnlyWhenValid: ClientConfig checks our certificate when the server asks for it, at each
// handshake (it expires, or becomes valid, while in use): one not valid now fails the handshake of a server that
// asks, naming its dates (ErrNotValidNow); a server that does not ask never sees it.
func TestClientConfigPresentsOnlyWhenValid(t *testing.T) {
	ca := testpki.NewCA(t, "CA")
	server := ca.Server(t, testpki.Options{})
	old := ca.Client(t, testpki.Options{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	expired, err := tlstrust.ClientCertificate(old.CertPEM, old.KeyPEM)
	if !errors.Is(err, tlstrust.ErrNotValidNow) {
		t.Fatalf("ClientCertificate: %v", err)
	}
	current := ca.Client(t, testpki.Options{CommonName: "current"})
	valid, err := tlstrust.ClientCertificate(current.CertPEM, current.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		cert    *tls.Certificate
		asks    tls.ClientAuthType
		wantErr error
	}{
		{"valid, asked", &valid, tls.RequireAndVerifyClientCert, nil},
		{"expired, asked", &expired, tls.RequireAndVerifyClientCert, tlstrust.ErrNotValidNow},
		{"expired, asked if any", &expired, tls.VerifyClientCertIfGiven, tlstrust.ErrNotValidNow},
		{"expired, not asked", &expired, tls.NoClientCert, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			scfg := &tls.Config{Certificates: []tls.Certificate{server.TLS()}, ClientAuth: tt.asks, ClientCAs: ca.Pool()}
			ln, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err == nil {
					_ = c.(*tls.Conn).Handshake()
					c.Close()
				}
			}()
			c, err := tls.Dial("tcp", ln.Addr().String(), tlstrust.ClientConfig("localhost", ca.Pool(), tt.cert))
			if err == nil {
				c.Close()
			}
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("handshake: %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "to "+old.Cert.NotAfter.UTC().Format(time.RFC3339)) {
				t.Errorf("handshake error %v does not name the certificate's dates", err)
			}
		})
	}
}
