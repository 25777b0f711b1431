package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/auditwriter"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/servertls"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

// memoryRecords keeps the audit records the writer puts.
type memoryRecords struct {
	mu   sync.Mutex
	recs []associationaudit.Record
}

func (m *memoryRecords) PutRecord(_ context.Context, _ string, body []byte) error {
	r, err := associationaudit.Parse(body)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, r)
	return nil
}

// TestTLSRefusalsNameThePresentedCertificate: every client certificate the
// TLS listener's verification refuses (the site CA's own, as the SCP loads
// it with its CRL) is still refused in the handshake, and the refusal is
// audited and logged with the certificate that was presented: its subject,
// issuer, serial and SHA-256 fingerprint. What verification accepts is
// still accepted. The listener, the association server and the audit
// writer are those scp-task runs.
func TestTLSRefusalsNameThePresentedCertificate(t *testing.T) {
	dir := t.TempDir()
	serverCA, siteCA, otherCA := testpki.NewCA(t, "Server CA"), testpki.NewCA(t, "Site CA"), testpki.NewCA(t, "Other CA")
	serverF := serverCA.Server(t, testpki.Options{}).WriteFiles(t, dir, "server")
	site := siteCA.Client(t, testpki.Options{CommonName: "pacs.site-a.example"})
	revoked := siteCA.Client(t, testpki.Options{CommonName: "pacs.stolen.example"})
	revokedLong := siteCA.Client(t, testpki.Long("pacs.stolen.example"))
	cannotSignLong := testpki.Long("pacs.site-a.example")
	cannotSignLong.RSA, cannotSignLong.KeyUsage = true, x509.KeyUsageKeyEncipherment
	caFile, crlFile := filepath.Join(dir, "site-ca.pem"), filepath.Join(dir, "site-ca.crl")
	testpki.WriteFile(t, caFile, siteCA.PEM)
	testpki.WriteFile(t, crlFile, siteCA.CRL(t, time.Now().Add(24*time.Hour), revoked, revokedLong))
	reloader, err := servertls.New(servertls.Source{Cert: serverF.Cert, Key: serverF.Key, ClientCA: caFile, ClientCRL: crlFile}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}

	srv := newAuditedTLS(t)
	srv.serve(t, reloader.Config())
	store, logs := srv.store, srv.logs

	hour := time.Hour
	tests := []struct {
		name   string
		cert   *testpki.Cert // presented; nil presents none
		reason string        // in the audit record; "" when accepted
	}{
		{"site certificate", site, ""},
		{"TLS 1.2, site certificate", site, ""},
		{"untrusted CA", otherCA.Client(t, testpki.Options{CommonName: "pacs.site-a.example"}), "unknown authority"},
		{"expired", siteCA.Client(t, testpki.Options{CommonName: "pacs.site-a.example",
			NotBefore: time.Now().Add(-48 * hour), NotAfter: time.Now().Add(-24 * hour)}), "expired"},
		{"not yet valid", siteCA.Client(t, testpki.Options{CommonName: "pacs.site-a.example",
			NotBefore: time.Now().Add(24 * hour), NotAfter: time.Now().Add(48 * hour)}), "not yet valid"},
		{"revoked by the CRL", revoked, "is revoked by its CA's CRL"},
		{"serverAuth only", siteCA.Server(t, testpki.Options{CommonName: "pacs.site-a.example"}), "incompatible key usage"},
		{"key usage without digitalSignature", siteCA.Client(t, testpki.Options{CommonName: "pacs.site-a.example", RSA: true,
			KeyUsage: x509.KeyUsageKeyEncipherment}), "does not allow signing"},
		// Subjects and serials as long as TLS takes: named within bounds.
		{"revoked, long names", revokedLong, "is revoked by its CA's CRL"},
		{"key usage without digitalSignature, long names", siteCA.Client(t, cannotSignLong), "does not allow signing"},
		{"the CA certificate itself", &testpki.Cert{Cert: siteCA.Cert, Key: siteCA.Key}, "is a CA certificate"},
		// A CA certificate the site CA issued (a site's request signed with cA=TRUE) minting another site's
		// name: the site CA signs the sites' certificates itself, so nothing may stand between them.
		{"chain through an intermediate of the site CA", siteCA.Intermediate(t, "pacs.site-a.example").
			Client(t, testpki.Options{CommonName: "pacs.site-b.example"}), "not issued by a CA of the client CA bundle"},
		// BCP 195 (RFC 9325 4.5): no RSA key under 2048 bits.
		{"RSA 1024", siteCA.Client(t, testpki.Options{CommonName: "pacs.site-a.example", RSA: true, RSABits: 1024}),
			"RSA key of 1024 bits"},
		{"chain through an untrusted intermediate", otherCA.Intermediate(t, "Other intermediate CA").
			Client(t, testpki.Options{CommonName: "pacs.site-a.example"}), "unknown authority"},
		{"no certificate", nil, "didn't provide a certificate"},
	}
	dialed := map[string]string{} // the SHA-256 fingerprint of each case's certificate
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := serverCA.ClientConfig(tt.cert)
			if strings.HasPrefix(tt.name, "TLS 1.2") {
				cfg.MaxVersion = tls.VersionTLS12
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			a, err := dicomnet.Dial(ctx, srv.addr, dicomnet.ClientConfig{CallingAE: "SITE_A", CalledAE: "REMOTE_AE",
				Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
				}})
			switch {
			case tt.reason == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.reason == "":
				if err := a.Release(ctx); err != nil {
					t.Fatal(err)
				}
			case err == nil:
				a.Abort()
				t.Fatal("associated")
			}
			if tt.cert != nil {
				dialed[tt.name] = associationaudit.CertificatePeer(tt.cert.Cert, "").SHA256
			}
		})
	}
	srv.stop(t)

	// The audit trail: one record per case, naming the certificate presented.
	for _, tt := range tests {
		t.Run("audited: "+tt.name, func(t *testing.T) {
			var found []associationaudit.Record
			for _, r := range store.recs {
				if want := associationaudit.EventRejected; tt.reason == "" {
					want = associationaudit.EventAccepted
					if r.Event != want {
						continue
					}
				} else if r.Event != want || !strings.Contains(r.Reason, tt.reason) {
					continue
				}
				if tt.cert == nil || (r.TLS != nil && r.TLS.SHA256 == dialed[tt.name]) {
					found = append(found, r)
				}
			}
			if len(found) == 0 {
				t.Fatalf("no %q record naming the certificate; records: %s", tt.reason, recordsText(store.recs))
			}
			r := found[0]
			if tt.cert == nil {
				if r.TLS != nil {
					t.Errorf("no certificate was presented, yet the record names %+v", *r.TLS)
				}
				return
			}
			// The reason quotes the refusal, which names the certificate
			// within bounds as the record does: a subject of 9 KB and a
			// serial of 3,000 octets were quoted whole.
			if len(r.Reason) > maxRefusal {
				t.Errorf("a reason of %d bytes: %.200q…", len(r.Reason), r.Reason)
			}
			if want := associationaudit.CertificatePeer(tt.cert.Cert, ""); r.TLS.Subject != want.Subject ||
				r.TLS.Issuer != want.Issuer || r.TLS.Serial != want.Serial || r.TLS.Serial == "" {
				t.Errorf("record names %+v, want %+v", *r.TLS, *want)
			}
		})
	}

	// The log: each refused certificate named in a security alert, with why.
	refusedLines := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if e["msg"] == "security alert: client certificate refused in the TLS handshake" {
			if fp, ok := e["sha256"].(string); ok {
				refusedLines[fp] = e
			}
		}
	}
	for _, tt := range tests {
		if tt.reason == "" || tt.cert == nil {
			continue
		}
		e, ok := refusedLines[dialed[tt.name]]
		if !ok {
			t.Errorf("%s: no log line names the certificate", tt.name)
			continue
		}
		want := associationaudit.CertificatePeer(tt.cert.Cert, "")
		if e["subject"] != want.Subject ||
			e["issuer"] != want.Issuer || e["serial"] != want.Serial || !strings.Contains(e["err"].(string), tt.reason) {
			t.Errorf("%s: log line %v", tt.name, e)
		}
		if n := len(e["err"].(string)); n > maxRefusal {
			t.Errorf("%s: an error of %d bytes logged", tt.name, n)
		}
		// The CRL's refusal names the serial as the record and the alert do.
		if strings.Contains(tt.reason, "revoked") && !strings.Contains(e["err"].(string), "(serial "+want.Serial+", SHA-256 "+want.SHA256+")") {
			t.Errorf("%s: the refusal %q does not name serial %s", tt.name, e["err"], want.Serial)
		}
	}
	if strings.Contains(logs.String(), "BEGIN CERTIFICATE") {
		t.Error("a whole certificate in the log")
	}
}

// maxRefusal bounds a refused handshake's reason: a certificate named
// within bounds (a subject of at most associationaudit.MaxNameJSON, a
// serial of MaxSerial, its fingerprint) and what TLS says around it.
const maxRefusal = 2048

// auditedTLS is scp-task's association server with its audit writer, the
// records kept in memory and the log in a buffer, accepting every
// association its TLS configuration lets through.
type auditedTLS struct {
	s      *dicomnet.Server
	addr   string
	store  *memoryRecords
	logs   *testenv.LogBuffer
	log    *slog.Logger
	audit  *auditwriter.Writer
	served chan error
}

func newAuditedTLS(t *testing.T) *auditedTLS {
	t.Helper()
	a := &auditedTLS{store: &memoryRecords{}, logs: &testenv.LogBuffer{}, served: make(chan error, 1)}
	a.log = slog.New(slog.NewJSONHandler(a.logs, nil))
	var err error
	if a.audit, err = auditwriter.New(a.store, auditwriter.Options{Logger: a.log}); err != nil {
		t.Fatal(err)
	}
	a.s = &dicomnet.Server{
		ARTIMTimeout: 2 * time.Second, Observer: a.audit, Logger: a.log,
		Accept: func(context.Context, *dicomnet.AssociationInfo) error { return nil },
	}
	return a
}

// serve serves TLS with cfg on a port of 127.0.0.1 (addr) until stop.
func (a *auditedTLS) serve(t *testing.T, cfg *tls.Config) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.addr = l.Addr().String()
	go func() { a.served <- a.s.ServeTLS(l, cfg) }()
}

// stop shuts the server down and writes out the audit records.
func (a *auditedTLS) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-a.served; err != dicomnet.ErrServerClosed {
		t.Fatalf("serve: %v", err)
	}
	if err := a.audit.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func recordsText(recs []associationaudit.Record) string {
	var b strings.Builder
	for _, r := range recs {
		b.WriteString("\n  " + r.Event + " " + r.Reason)
		if r.TLS != nil {
			b.WriteString(" [" + r.TLS.Subject + " " + r.TLS.SHA256 + "]")
		}
	}
	return b.String()
}

// TestTLSHandshakeTimeoutSaysSo: a client that connects to the TLS
// listener and sends nothing is cut at ARTIM, and its refusal, in the log
// and the audit trail, says so: it said "context deadline exceeded" only.
func TestTLSHandshakeTimeoutSaysSo(t *testing.T) {
	dir := t.TempDir()
	serverCA := testpki.NewCA(t, "Server CA")
	serverF := serverCA.Server(t, testpki.Options{}).WriteFiles(t, dir, "server")
	caFile := filepath.Join(dir, "site-ca.pem")
	testpki.WriteFile(t, caFile, testpki.NewCA(t, "Site CA").PEM)
	reloader, err := servertls.New(servertls.Source{Cert: serverF.Cert, Key: serverF.Key, ClientCA: caFile}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := newAuditedTLS(t)
	srv.serve(t, reloader.Config())
	silent := dicomnettest.DialParrot(t, srv.addr)
	silent.ExpectClosed() // at ARTIM, 2s
	c := silent.Conn
	srv.stop(t)
	const said = "dicomnet: TLS handshake timed out after 2s (ARTIM): " // then crypto/tls's error
	var line map[string]any
	for l := range strings.Lines(srv.logs.String()) {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if e["msg"] == "dicomnet: TLS handshake failed" {
			line = e
		}
	}
	if err, _ := line["err"].(string); !strings.HasPrefix(err, said) || line["peer"] != c.LocalAddr().String() || line["assoc"] == nil {
		t.Errorf("log line %v, want an err starting %q with the connection and the peer %s", line, said, c.LocalAddr())
	}
	if len(srv.store.recs) != 1 || !strings.HasPrefix(srv.store.recs[0].Reason, "TLS handshake failed: reason timeout: "+said) {
		t.Errorf("records: %s", recordsText(srv.store.recs))
	}
}
