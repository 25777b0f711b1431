package servertls

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
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

// secretKeyText stands for a key's text in TestLoadErrors.
const secretKeyText = "s3cretKeyMaterial"

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
		{"expired server certificate", Source{Cert: expired.Cert, Key: expired.Key}, "not valid now"},
		{"text after the CAs", Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCA: junk}, "not PEM"},
		{"a key as the CA bundle", Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCA: keyAsCA}, `"PRIVATE KEY" block`},
		// A key given as text without its PEM armour (base64 as some
		// secret stores keep it) is read as a file's path: the error
		// quoted it, the key, into the log.
		{"a key without its PEM armour", Source{Cert: p.serverF.Cert, Key: "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" + secretKeyText}, "--tls-key"},
	}
	// Keys and lists BCP 195 does not allow (tlstrust.CheckKey, ParseCRLs):
	// the server certificates and the client CA were served, the list
	// applied.
	for _, w := range weakSources(t, p) {
		tests = append(tests, struct {
			name string
			src  Source
			want string
		}{w.name, w.src, w.want})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.src, nil, nil); err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), secretKeyText) {
				t.Fatalf("New = %v, want an error containing %q, without the key", err, tt.want)
			}
		})
	}
}

// weakSource is a source of p's, one of its files replaced by one BCP 195
// does not allow, and what its refusal says.
type weakSource struct {
	name string
	src  Source
	want string
}

// weakSources are p's source with a server certificate of a weak key, a
// client CA of one, and a client CRL signed with SHA-1, each in files of
// its own.
func weakSources(t *testing.T, p pki) []weakSource {
	t.Helper()
	good := Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCA: p.caFile}
	with := func(f func(*Source)) Source { s := good; f(&s); return s }
	rsa1024 := p.ca.Server(t, testpki.Options{RSA: true, RSABits: 1024}).WriteFiles(t, p.dir, "server-rsa1024")
	p224 := p.ca.Server(t, testpki.Options{Curve: elliptic.P224()}).WriteFiles(t, p.dir, "server-p224")
	weakCA := filepath.Join(p.dir, "client-ca-rsa1024.pem")
	testpki.WriteFile(t, weakCA, append(append([]byte{}, p.clientCA.PEM...), testpki.NewCAWith(t, "Weak CA", testpki.Options{RSA: true, RSABits: 1024}).PEM...))
	sha1CRL := filepath.Join(p.dir, "client-sha1.crl")
	testpki.WriteFile(t, sha1CRL, p.clientCA.CRLSignedWith(t, x509.ECDSAWithSHA1, time.Now().Add(24*time.Hour)))
	return []weakSource{
		{"server certificate of an RSA 1024 key", with(func(s *Source) { s.Cert, s.Key = rsa1024.Cert, rsa1024.Key }),
			"--tls-cert " + rsa1024.Cert + `: certificate "CN=localhost,O=dicom-ingest tests" (serial `},
		{"server certificate of an RSA 1024 key, why", with(func(s *Source) { s.Cert, s.Key = rsa1024.Cert, rsa1024.Key }),
			"has an RSA key of 1024 bits, fewer than 2048"},
		{"server certificate of a P-224 key", with(func(s *Source) { s.Cert, s.Key = p224.Cert, p224.Key }), "has an ECDSA key on P-224"},
		{"client CA of an RSA 1024 key", with(func(s *Source) { s.ClientCA = weakCA }),
			"--tls-client-ca " + weakCA + `: certificate 2: certificate "CN=Weak CA,O=dicom-ingest tests"`},
		{"client CRL signed with SHA-1", with(func(s *Source) { s.ClientCRL = sha1CRL }), "--tls-client-crl " + sha1CRL + ": CRL 1 (issuer CN=Site CA,O=dicom-ingest tests) is signed with ECDSA-SHA1"},
	}
}

// TestReloadRefusesWeak: a server certificate, client CA or client CRL
// BCP 195 does not allow, put in place of the files in use, is refused as
// any source that does not load is: logged (naming the setting by its
// flag and its variable), counted as a failed reload, and the
// configuration in use stays. The weak one was served.
func TestReloadRefusesWeak(t *testing.T) {
	p := newPKI(t)
	for _, w := range weakSources(t, p) {
		t.Run(w.name, func(t *testing.T) {
			// Files of the test's own, the good ones first.
			dir := t.TempDir()
			files := map[*string]string{}
			src := Source{Describe: func(flag string) string {
				return "--" + flag + " (or SCP_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_")) + ")"
			}}
			for _, f := range []struct {
				dst       *string
				good, bad string
			}{{&src.Cert, p.serverF.Cert, w.src.Cert}, {&src.Key, p.serverF.Key, w.src.Key}, {&src.ClientCA, p.caFile, w.src.ClientCA}} {
				*f.dst = filepath.Join(dir, filepath.Base(f.good))
				files[f.dst] = f.bad
				testpki.WriteFile(t, *f.dst, readFile(t, f.good))
			}
			if w.src.ClientCRL != "" {
				src.ClientCRL = filepath.Join(dir, "client.crl")
				files[&src.ClientCRL] = w.src.ClientCRL
				testpki.WriteFile(t, src.ClientCRL, p.clientCA.CRL(t, time.Now().Add(24*time.Hour)))
			}
			var logs logLines
			r, err := New(src, slog.New(slog.NewJSONHandler(&logs.buf, nil)), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			addr := serve(t, r)
			first := r.Certificate()
			logs.next(t) // the load's
			for dst, bad := range files {
				testpki.WriteFile(t, *dst, readFile(t, bad))
			}
			r.reloadLogged() // as the watch and the poll reload
			lines := logs.next(t)
			if len(lines) != 1 || lines[0]["level"] != "ERROR" || lines[0]["msg"] != "TLS certificate not reloaded; the previous one stays in use" {
				t.Fatalf("log %v, want the failed reload's line", lines)
			}
			wantSaid := w.want
			for dst, bad := range files {
				wantSaid = strings.ReplaceAll(wantSaid, bad, *dst)
			}
			for flag := range strings.FieldsSeq("tls-cert tls-client-ca tls-client-crl") {
				wantSaid = strings.ReplaceAll(wantSaid, "--"+flag+" ", src.name(flag)+" ")
			}
			if err, _ := lines[0]["err"].(string); !strings.Contains(err, wantSaid) {
				t.Errorf("logged %q, want it to say %q", err, wantSaid)
			}
			if n := testutil.ToFloat64(r.reloads.WithLabelValues(metricnames.TLSReloadFailed)); n != 1 {
				t.Errorf("failed reloads %v, want 1", n)
			}
			if got, err := handshake(addr, p.clientConfig(p.client)); err != nil || !got.Equal(first) || !r.Certificate().Equal(first) {
				t.Errorf("after the refused reload: %v (the first certificate served: %v)", err, got != nil && got.Equal(first))
			}
		})
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
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
	// The stack publishes and alarms on these by metricnames' names.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if err := metricnames.CheckRegistered(mfs, metricnames.TLSReloads, metricnames.TLSCertificateExpiresIn); err != nil {
		t.Error(err)
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
	done, watching := make(chan struct{}), make(chan struct{})
	go func() { r.watch(ctx, func() { close(watching) }); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := serve(t, r)
	// A change before the directories are watched would be seen only at the next poll, a minute on (a 100 ms
	// sleep stood for this).
	<-watching
	next := p.ca.Server(t, testpki.Options{})
	// Key first, then certificate, as a renewal script would: in between the pair does not match and is not
	// loaded; once both are there it is.
	testpki.WriteFile(t, p.serverF.Key, next.KeyPEM)
	testpki.WriteFile(t, p.serverF.Cert, next.CertPEM)
	testenv.EventuallySawWithin(t, 10*time.Second, "the new certificate served after the files changed", func() (bool, string) {
		got, err := handshake(addr, p.clientConfig(nil))
		return err == nil && got.Equal(next.Cert), fmt.Sprintf("handshake: %v", err)
	})
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

// clock is a test's time, set by hand.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *clock) set(t time.Time) { c.ns.Store(t.UnixNano()) }

// logLines are the JSON log records written to a buffer.
type logLines struct{ buf bytes.Buffer }

// next returns the records written since the last call.
func (l *logLines) next(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(&l.buf)
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// crlDue is the next-update gauge by issuer.
func crlDue(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "dicom_ingest_tls_client_crl_next_update_in_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return out
}

// TestCRLGoesStale: a client CRL whose next update passes while in use is reported once (a warning naming its
// issuer and next update, the gauge below zero) and still applied, as a stale list is at load; a fresh list
// reloaded clears it, said once at info.
func TestCRLGoesStale(t *testing.T) {
	p := newPKI(t)
	revoked := p.clientCA.Client(t, testpki.Options{CommonName: "pacs.stolen.example"})
	start := time.Now().Truncate(time.Second) // as a CRL keeps its dates
	due := start.Add(time.Hour)
	crlFile := filepath.Join(p.dir, "client.crl")
	testpki.WriteFile(t, crlFile, p.clientCA.CRL(t, due, revoked))
	var clk clock
	clk.set(start)
	var logs logLines
	reg := prometheus.NewRegistry()
	r, err := newReloader(Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCA: p.caFile, ClientCRL: crlFile},
		slog.New(slog.NewJSONHandler(&logs.buf, nil)), reg, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, r)
	issuer := p.clientCA.Cert.Subject.String()
	// The server certificate is valid for a day: every step stays within it.
	tests := []struct {
		name string
		at   time.Time
		crl  time.Time // when set, a list due then is published and reloaded
		log  []string  // "level msg next_update" of the records the step writes
		due  time.Duration
	}{
		{name: "fresh", at: start, due: time.Hour},
		{name: "a second before its next update", at: due.Add(-time.Second), due: time.Second},
		{name: "at its next update", at: due, due: 0},
		{name: "past its next update", at: due.Add(time.Second), due: -time.Second,
			log: []string{"WARN client CRL past its next update: still applied, but revocations since are unknown until a fresh list is loaded " + due.UTC().Format(time.RFC3339)}},
		{name: "reported once", at: due.Add(time.Minute), due: -time.Minute},
		{name: "a fresh list", at: due.Add(time.Minute), crl: start.Add(3 * time.Hour), due: 2*time.Hour - time.Minute,
			log: []string{"INFO TLS certificate loaded ", "INFO client CRL fresh again " + start.Add(3*time.Hour).UTC().Format(time.RFC3339)}},
		{name: "said once", at: due.Add(2 * time.Minute), due: 2*time.Hour - 2*time.Minute},
		{name: "a stale list loaded", at: start.Add(4 * time.Hour), crl: start.Add(2 * time.Hour), due: -2 * time.Hour,
			log: []string{"INFO TLS certificate loaded ", "WARN client CRL past its next update: still applied, but revocations since are unknown until a fresh list is loaded " + start.Add(2*time.Hour).UTC().Format(time.RFC3339)}},
		{name: "still reported once", at: start.Add(5 * time.Hour), due: -3 * time.Hour},
	}
	logs.next(t) // the first load's
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk.set(tt.at)
			if !tt.crl.IsZero() {
				testpki.WriteFile(t, crlFile, p.clientCA.CRL(t, tt.crl, revoked))
				if err := r.Reload(); err != nil {
					t.Fatal(err)
				}
			}
			r.pollCRLs()
			var got []string
			for _, m := range logs.next(t) {
				line := fmt.Sprint(m["level"], " ", m["msg"], " ", m["next_update"])
				if m["msg"] == "TLS certificate loaded" {
					line = fmt.Sprint(m["level"], " ", m["msg"], " ")
				} else {
					// The lists' issuer and dates, nothing else.
					for k := range m {
						if !slices.Contains([]string{"time", "level", "msg", "crl_issuer", "next_update", "stale_next_update"}, k) {
							t.Errorf("log record %v: field %q", m, k)
						}
					}
					if m["crl_issuer"] != issuer {
						t.Errorf("log record %v: crl_issuer, want %q", m, issuer)
					}
				}
				got = append(got, line)
			}
			if !slices.Equal(got, tt.log) {
				t.Errorf("log\n%q\nwant\n%q", got, tt.log)
			}
			if got := crlDue(t, reg); len(got) != 1 || got[issuer] != tt.due.Seconds() {
				t.Errorf("next-update gauge %v, want %s: %v", got, issuer, tt.due.Seconds())
			}
			// Fresh or stale, the list in use refuses what it lists and nothing else.
			if _, err := handshake(addr, p.clientConfig(p.client)); err != nil {
				t.Errorf("a certificate the list does not name: %v", err)
			}
			if _, err := handshake(addr, p.clientConfig(revoked)); err == nil || !strings.Contains(err.Error(), "bad certificate") {
				t.Errorf("a certificate the list names: %v", err)
			}
		})
	}
	if problems, err := testutil.CollectAndLint(r.crlDue); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %v", problems, err)
	}
}

// TestRefuses: a client certificate that passed its handshake is checked
// again, as the handshake would check it now, when the trust in use changes
// and at every poll (Recheck): refused once past its validity, once a
// reloaded CRL lists it, or once its CA has left the bundle; still good
// otherwise; never refused without client certificates. Every refusal
// reads "client certificate no longer accepted: …", as certificates.md
// says (an expired one read "client certificate "…" no longer accepted").
func TestRefuses(t *testing.T) {
	p := newPKI(t)
	start := time.Now()
	shortLived := p.clientCA.Client(t, testpki.Options{CommonName: "pacs.site-a.example", NotAfter: start.Add(time.Hour)})
	crlFile := filepath.Join(p.dir, "client.crl")
	testpki.WriteFile(t, crlFile, p.clientCA.CRL(t, start.Add(24*time.Hour)))
	var clk clock
	clk.set(start)
	r, err := newReloader(Source{Cert: p.serverF.Cert, Key: p.serverF.Key, ClientCA: p.caFile, ClientCRL: crlFile}, nil, nil, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	rechecks := 0
	r.Recheck = func() { rechecks++ }
	state := func(c *testpki.Cert) *tls.ConnectionState {
		return &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{c.Cert}}
	}
	other := testpki.NewCA(t, "Other site CA")
	tests := []struct {
		name     string
		step     func(t *testing.T)
		cert     *testpki.Cert
		refused  string // in the error; "" for none
		rechecks int    // Recheck calls so far
	}{
		{"as at the handshake", func(*testing.T) {}, p.client, "", 0},
		{"a minute before its expiry", func(*testing.T) { clk.set(start.Add(59 * time.Minute)) }, shortLived, "", 0},
		{"expired since, seen at the poll", func(*testing.T) { clk.set(start.Add(61 * time.Minute)); r.pollCRLs() }, shortLived, "expired", 1},
		{"another, still valid", func(*testing.T) {}, p.client, "", 1},
		{"revoked by a reloaded CRL", func(t *testing.T) {
			testpki.WriteFile(t, crlFile, p.clientCA.CRL(t, start.Add(24*time.Hour), p.client))
			if err := r.Reload(); err != nil {
				t.Fatal(err)
			}
		}, p.client, "is revoked by its CA's CRL", 2},
		{"a reload that changes nothing rechecks nothing", func(t *testing.T) {
			if err := r.Reload(); err != nil {
				t.Fatal(err)
			}
		}, p.client, "is revoked by its CA's CRL", 2},
		{"its CA gone from the bundle", func(t *testing.T) {
			testpki.WriteFile(t, p.caFile, other.PEM)
			testpki.WriteFile(t, crlFile, other.CRL(t, start.Add(24*time.Hour)))
			if err := r.Reload(); err != nil {
				t.Fatal(err)
			}
		}, p.clientCA.Client(t, testpki.Options{CommonName: "pacs.site-c.example"}), "unknown authority", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.step(t)
			err := r.Refuses(state(tt.cert))
			switch {
			case tt.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.refused != "" && (err == nil || !strings.Contains(err.Error(), tt.refused) || !strings.HasPrefix(err.Error(), "client certificate no longer accepted: ")):
				t.Errorf("got %v, want a refusal for %q", err, tt.refused)
			}
			if rechecks != tt.rechecks {
				t.Errorf("Recheck called %d times, want %d", rechecks, tt.rechecks)
			}
		})
	}

	t.Run("no client certificates", func(t *testing.T) {
		plain, err := newReloader(Source{Cert: p.serverF.Cert, Key: p.serverF.Key}, nil, nil, clk.now)
		if err != nil {
			t.Fatal(err)
		}
		if err := plain.Refuses(state(shortLived)); err != nil {
			t.Errorf("refused without a client CA: %v", err)
		}
	})
}
