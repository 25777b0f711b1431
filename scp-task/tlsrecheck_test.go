package main

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/config"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

// TestWithdrawnCertificateEndsItsAssociation: an association open over TLS
// when its client certificate is taken out of use (revoked by a new CRL, or
// its CA removed from the client CA bundle) is aborted at the reload, with
// the reason in its log line and audit record; another site's association,
// whose certificate is still good, goes on. Before, only new handshakes
// were refused: an association already open (a PACS sending with
// storescu --repeat, a stolen key's holder) went on for as long as it kept
// sending, while certificates.md told the operator the certificate "gets no
// association at all". The TLS setup is scp-task's own (startTLS).
func TestWithdrawnCertificateEndsItsAssociation(t *testing.T) {
	serverCA := testpki.NewCA(t, "Server CA")
	tests := []struct {
		name     string
		withdraw func(t *testing.T, siteCA, otherCA *testpki.CA, withdrawn *testpki.Cert, caFile, crlFile string)
		reason   string // in the aborted association's record
	}{
		{"revoked by a new CRL", func(t *testing.T, siteCA, _ *testpki.CA, withdrawn *testpki.Cert, _, crlFile string) {
			testpki.WriteFile(t, crlFile, siteCA.CRL(t, time.Now().Add(24*time.Hour), withdrawn))
		}, "is revoked by its CA's CRL"},
		{"its CA removed from the bundle", func(t *testing.T, _, otherCA *testpki.CA, _ *testpki.Cert, caFile, crlFile string) {
			// The CRL goes with its CA: a list whose CA is not in the bundle does not load.
			testpki.WriteFile(t, caFile, otherCA.PEM)
			testpki.WriteFile(t, crlFile, otherCA.CRL(t, time.Now().Add(24*time.Hour)))
		}, "unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			siteCA, otherCA := testpki.NewCA(t, "Site CA"), testpki.NewCA(t, "Other site CA")
			serverF := serverCA.Server(t, testpki.Options{}).WriteFiles(t, dir, "server")
			withdrawn := siteCA.Client(t, testpki.Options{CommonName: "pacs.site-a.example"})
			kept := otherCA.Client(t, testpki.Options{CommonName: "pacs.site-b.example"})
			caFile, crlFile := filepath.Join(dir, "site-ca.pem"), filepath.Join(dir, "site-ca.crl")
			testpki.WriteFile(t, caFile, append(append([]byte{}, siteCA.PEM...), otherCA.PEM...))
			testpki.WriteFile(t, crlFile, siteCA.CRL(t, time.Now().Add(24*time.Hour)))

			srv := newAuditedTLS(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			reloader, err := startTLS(ctx, config.Config{TLSListen: "127.0.0.1:0", TLSCert: serverF.Cert, TLSKey: serverF.Key,
				TLSClientCA: caFile, TLSClientCRL: crlFile}, srv.s, srv.log, nil)
			if err != nil {
				t.Fatal(err)
			}
			srv.serve(t, reloader.Config())

			dial := func(cert *testpki.Cert, ae string) *dicomnet.ClientAssociation {
				t.Helper()
				cfg := serverCA.ClientConfig(cert)
				a, err := dicomnet.Dial(ctx, srv.addr, dicomnet.ClientConfig{CallingAE: ae, CalledAE: "REMOTE_AE",
					Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
						return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
					}})
				if err != nil {
					t.Fatalf("%s: %v", ae, err)
				}
				if err := a.Echo(ctx); err != nil {
					t.Fatalf("%s: echo: %v", ae, err)
				}
				return a
			}
			open, other := dial(withdrawn, "SITE_A"), dial(kept, "SITE_B")

			tt.withdraw(t, siteCA, otherCA, withdrawn, caFile, crlFile)
			if err := reloader.Reload(); err != nil {
				t.Fatal(err)
			}

			if err := open.Echo(ctx); !errors.Is(err, dicomnet.ErrAborted) {
				t.Errorf("SITE_A's association after its certificate was withdrawn: echo gave %v, want it aborted", err)
			} else if err := open.Abort(); err != nil {
				t.Log(err)
			}
			if err := other.Echo(ctx); err != nil {
				t.Errorf("SITE_B's association, its certificate still good: %v", err)
			}
			if err := other.Release(ctx); err != nil {
				t.Error(err)
			}

			srv.stop(t)
			var aborted []associationaudit.Record
			for _, r := range srv.store.recs {
				if r.Event == associationaudit.EventAborted {
					aborted = append(aborted, r)
				}
			}
			if len(aborted) != 1 || aborted[0].CallingAE != "SITE_A" || !strings.Contains(aborted[0].Reason, tt.reason) ||
				!strings.Contains(aborted[0].Reason, "no longer accepted") {
				t.Errorf("want one abort of SITE_A for %q, records: %s", tt.reason, recordsText(srv.store.recs))
			}
			if !strings.Contains(srv.logs.String(), "TLS associations aborted: their client certificate is no longer accepted") {
				t.Errorf("no warning of the abort in the log:\n%s", srv.logs.String())
			}
		})
	}
}

// TestCertificateWithdrawnBetweenHandshakeAndRequest: a client whose TLS
// handshake passed just before its CA left the bundle, and which asks for
// its association only after the reload, is refused (A-ASSOCIATE-RJ, the
// reason in its audit record): the reload's recheck found no association of
// it yet (AbortTLS checks those whose request has been read), and before, it
// was accepted under the trust its handshake had, and went on until the next
// minute's recheck.
func TestCertificateWithdrawnBetweenHandshakeAndRequest(t *testing.T) {
	serverCA := testpki.NewCA(t, "Server CA")
	dir := t.TempDir()
	siteCA, otherCA := testpki.NewCA(t, "Site CA"), testpki.NewCA(t, "Other site CA")
	serverF := serverCA.Server(t, testpki.Options{}).WriteFiles(t, dir, "server")
	withdrawn := siteCA.Client(t, testpki.Options{CommonName: "pacs.site-a.example"})
	caFile := filepath.Join(dir, "site-ca.pem")
	testpki.WriteFile(t, caFile, append(append([]byte{}, siteCA.PEM...), otherCA.PEM...))

	srv := newAuditedTLS(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reloader, err := startTLS(ctx, config.Config{TLSListen: "127.0.0.1:0", TLSCert: serverF.Cert, TLSKey: serverF.Key,
		TLSClientCA: caFile}, srv.s, srv.log, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.serve(t, reloader.Config())

	a, err := dicomnet.Dial(ctx, srv.addr, dicomnet.ClientConfig{CallingAE: "SITE_A", CalledAE: "REMOTE_AE",
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&tls.Dialer{Config: serverCA.ClientConfig(withdrawn)}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The handshake is over (TLS 1.3: the server has the client's certificate once it reads
			// the first record, which the A-ASSOCIATE-RQ is); the CA leaves the bundle before the request.
			testpki.WriteFile(t, caFile, otherCA.PEM)
			if err := reloader.Reload(); err != nil {
				t.Error(err)
			}
			return c, nil
		}})
	if err == nil {
		err = a.Echo(ctx)
		if abortErr := a.Abort(); abortErr != nil {
			t.Log(abortErr)
		}
		t.Errorf("SITE_A's association, requested after its CA left the bundle: accepted (echo: %v), want it rejected", err)
	}
	srv.stop(t)
	var rejected []associationaudit.Record
	for _, r := range srv.store.recs {
		if r.Event == associationaudit.EventRejected {
			rejected = append(rejected, r)
		}
	}
	if len(rejected) != 1 || !strings.Contains(rejected[0].Reason, "client certificate no longer accepted") ||
		!strings.Contains(rejected[0].Reason, "unknown authority") {
		t.Errorf("want SITE_A rejected for its certificate, records: %s", recordsText(srv.store.recs))
	}
}
