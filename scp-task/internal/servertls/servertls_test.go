package servertls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

// serve accepts TLS connections with r's configuration until the test ends, answering each with one byte once the
// handshake is done.
func serve(t *testing.T, r *Reloader) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	cfg := r.Config()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				if tc.Handshake() == nil {
					_, _ = tc.Write([]byte{1})
					_, _ = tc.Read(make([]byte, 1)) // until the client closes
				}
			}()
		}
	}()
	return l.Addr().String()
}

// handshake connects with cfg and returns the server certificate it saw, or the handshake's error.
func handshake(addr string, cfg *tls.Config) (*x509.Certificate, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// TLS 1.3 reports a refused client certificate on the first read.
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0], nil
}

type pki struct {
	dir            string
	ca, clientCA   *testpki.CA
	server, client *testpki.Cert
	serverF        testpki.Files
	caFile         string
}

func newPKI(t *testing.T) pki {
	p := pki{dir: t.TempDir(), ca: testpki.NewCA(t, "Server CA"), clientCA: testpki.NewCA(t, "Site CA")}
	p.server = p.ca.Server(t, testpki.Options{})
	p.client = p.clientCA.Client(t, testpki.Options{CommonName: "pacs.site-a.example"})
	p.serverF = p.server.WriteFiles(t, p.dir, "server")
	p.caFile = filepath.Join(p.dir, "client-ca.pem")
	testpki.WriteFile(t, p.caFile, p.clientCA.PEM)
	return p
}

func (p pki) clientConfig(cert *testpki.Cert) *tls.Config { return p.ca.ClientConfig(cert) }

func TestProfile(t *testing.T) {
	p := newPKI(t)
	r, err := New(Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCA: p.caFile}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r)
	tls10 := p.clientConfig(p.client)
	tls10.MinVersion, tls10.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	cbc := p.clientConfig(p.client)
	cbc.MaxVersion = tls.VersionTLS12
	cbc.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}
	tls12 := p.clientConfig(p.client)
	tls12.MaxVersion = tls.VersionTLS12
	expired := p.clientCA.Client(t, testpki.Options{CommonName: "pacs.site-a.example", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	stranger := testpki.NewCA(t, "Other CA").Client(t, testpki.Options{CommonName: "pacs.site-a.example"})
	tests := []struct {
		name   string
		cfg    *tls.Config
		reason string // "" for a handshake that succeeds
	}{
		{"TLS 1.3", p.clientConfig(p.client), ""},
		{"TLS 1.2 with a BCP 195 suite", tls12, ""},
		{"TLS 1.0 and 1.1", tls10, "protocol version"},
		{"CBC suites only", cbc, "handshake failure"},
		{"no client certificate", p.clientConfig(nil), "certificate required"},
		{"expired client certificate", p.clientConfig(expired), "expired certificate"},
		{"client certificate of another CA", p.clientConfig(stranger), "unknown certificate authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := handshake(addr, tt.cfg)
			switch {
			case tt.reason == "" && err != nil:
				t.Fatalf("handshake: %v", err)
			case tt.reason != "" && (err == nil || !strings.Contains(err.Error(), tt.reason)):
				t.Fatalf("handshake error %v, want one containing %q", err, tt.reason)
			}
		})
	}
}

func TestNoClientCA(t *testing.T) {
	p := newPKI(t)
	r, err := New(Source{Cert: p.serverF.Cert, Key: p.serverF.Key}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(serve(t, r), p.clientConfig(nil)); err != nil {
		t.Fatalf("without a client CA no client certificate is needed: %v", err)
	}
}

// TestPEMText: the values may be the PEM text itself (an ECS secret in an environment variable), line breaks
// flattened to \n included; errors name the flag, never the key.
func TestPEMText(t *testing.T) {
	p := newPKI(t)
	flat := strings.ReplaceAll(string(p.server.KeyPEM), "\n", `\n`)
	r, err := New(Source{Cert: string(p.server.CertPEM), Key: flat, ClientCA: string(p.clientCA.PEM)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(serve(t, r), p.clientConfig(p.client)); err != nil {
		t.Fatal(err)
	}
	other := p.ca.Server(t, testpki.Options{})
	_, err = New(Source{Cert: string(p.server.CertPEM), Key: string(other.KeyPEM)}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "--tls-key the PEM text given") || strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Fatalf("mismatched key: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	p := newPKI(t)
	expired := p.ca.Server(t, testpki.Options{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}).WriteFiles(t, p.dir, "expired")
	junk := filepath.Join(p.dir, "junk.pem")
	testpki.WriteFile(t, junk, append(append([]byte{}, p.clientCA.PEM...), "not pem"...))
	keyAsCA := p.serverF.Key
	tests := []struct {
		name string
		src  Source
		want string
	}{
		{"missing certificate", Source{Cert: filepath.Join(p.dir, "nope.crt"), Key: p.serverF.Key}, "--tls-cert"},
		{"key of another certificate", Source{Cert: p.serverF.Cert, Key: expired.Key}, "private key does not match"},
		{"expired server certificate", Source{Cert: expired.Cert, Key: expired.Key}, "not now"},
		{"text after the CAs", Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCA: junk}, "not PEM"},
		{"a key as the CA bundle", Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCA: keyAsCA}, `"PRIVATE KEY" block`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.src, nil, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestReload: Reload serves a new certificate and client CA from the next handshake on; one that does not load
// leaves the current one in place.
func TestReload(t *testing.T) {
	p := newPKI(t)
	reg := prometheus.NewRegistry()
	r, err := New(Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCA: p.caFile}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r)
	first, err := handshake(addr, p.clientConfig(p.client))
	if err != nil {
		t.Fatal(err)
	}

	// A half-copied key: refused, the old pair stays.
	if err := os.WriteFile(p.serverF.Key, p.server.KeyPEM[:40], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("Reload of a truncated key succeeded")
	}
	if got, err := handshake(addr, p.clientConfig(p.client)); err != nil || !got.Equal(first) {
		t.Fatalf("after a failed reload: %v", err)
	}

	// A new server certificate and a new client CA.
	next := p.ca.Server(t, testpki.Options{})
	next.WriteFiles(t, p.dir, "server")
	newSiteCA := testpki.NewCA(t, "New site CA")
	testpki.WriteFile(t, p.caFile, newSiteCA.PEM)
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, p.clientConfig(p.client)); err == nil {
		t.Fatal("the old client CA is still trusted")
	}
	got, err := handshake(addr, p.clientConfig(newSiteCA.Client(t, testpki.Options{CommonName: "x"})))
	if err != nil || !got.Equal(next.Cert) {
		t.Fatalf("after reload: %v (same certificate: %v)", err, got != nil && got.Equal(first))
	}
	if n := testutil.ToFloat64(r.reloads.WithLabelValues("failed")); n != 1 {
		t.Errorf("failed reloads %v", n)
	}
	if n := testutil.ToFloat64(r.reloads.WithLabelValues("loaded")); n != 1 {
		t.Errorf("reloads %v", n)
	}
	if e := testutil.ToFloat64(r.expiresIn); math.Abs(e-time.Until(next.Cert.NotAfter).Seconds()) > 60 {
		t.Errorf("expires-in gauge %v, the certificate expires in %v", e, time.Until(next.Cert.NotAfter))
	}
}

// TestWatch: replacing the files is enough, no signal needed.
func TestWatch(t *testing.T) {
	p := newPKI(t)
	r, err := New(Source{Cert: p.serverF.Cert, Key: p.serverF.Key}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Watch(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := serve(t, r)
	time.Sleep(100 * time.Millisecond) // the watch is set up
	next := p.ca.Server(t, testpki.Options{})
	// Key first, then certificate, as a renewal script would: in between the pair does not match and is not
	// loaded; once both are there it is.
	testpki.WriteFile(t, p.serverF.Key, next.KeyPEM)
	testpki.WriteFile(t, p.serverF.Cert, next.CertPEM)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := handshake(addr, p.clientConfig(nil))
		if err == nil && got.Equal(next.Cert) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("new certificate not served 10s after the files changed (%v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestClientCRL: a client certificate its CA's CRL lists fails the handshake; the others pass; a new list is taken
// on reload, and a stale one still applies; a list no client CA signed is refused.
func TestClientCRL(t *testing.T) {
	p := newPKI(t)
	revoked := p.clientCA.Client(t, testpki.Options{CommonName: "pacs.stolen.example"})
	crlFile := filepath.Join(p.dir, "client.crl")
	testpki.WriteFile(t, crlFile, p.clientCA.CRL(t, time.Now().Add(24*time.Hour), revoked))
	r, err := New(Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCA: p.caFile, ClientCRL: crlFile}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r)
	if _, err := handshake(addr, p.clientConfig(p.client)); err != nil {
		t.Fatalf("a certificate the CRL does not list: %v", err)
	}
	if _, err := handshake(addr, p.clientConfig(revoked)); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("a revoked certificate: %v", err)
	}

	// Reload: the list now also names the other client.
	testpki.WriteFile(t, crlFile, p.clientCA.CRL(t, time.Now().Add(24*time.Hour), revoked, p.client))
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, p.clientConfig(p.client)); err == nil {
		t.Fatal("a certificate revoked by the reloaded CRL still handshakes")
	}

	// A stale list still applies.
	testpki.WriteFile(t, crlFile, p.clientCA.CRL(t, time.Now().Add(-time.Minute), revoked))
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(addr, p.clientConfig(revoked)); err == nil {
		t.Fatal("a stale CRL is ignored")
	}

	other := testpki.NewCA(t, "Other CA")
	for name, tc := range map[string]struct {
		src  Source
		want string
	}{
		"foreign CRL":      {Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCA: p.caFile, ClientCRL: string(other.CRL(t, time.Now().Add(time.Hour)))}, "not signed by any of the given CA certificates"},
		"CRL without a CA": {Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCRL: crlFile}, "needs --tls-client-ca"},
		"a certificate":    {Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCA: p.caFile, ClientCRL: p.caFile}, `"CERTIFICATE" block where "X509 CRL" blocks belong`},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := New(tc.src, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want %q", err, tc.want)
			}
		})
	}
}
