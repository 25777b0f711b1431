package commitreport_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// tlsPeer is a PACS that takes DICOM over TLS only, with a client certificate of clientCA (dicomnettest's).
func tlsPeer(t *testing.T, cert *testpki.Cert, clientCA *testpki.CA) (string, <-chan *dicomnettest.Parrot) {
	return dicomnettest.ListenTLSParrot(t, cert.TLS(), clientCA.Pool())
}

// TestReportOverTLS: a peer marked tls:// gets its report on a DICOM TLS association (BCP 195's versions, our
// client certificate); a handshake that fails (the peer's certificate from another CA, or naming another host)
// fails the report with its reason, classified as the listener's handshakes are and counted, to be retried. So
// does a peer that refuses our client certificate: under TLS 1.3 its alert comes on the association's first read,
// after crypto/tls's handshake returned.
func TestReportOverTLS(t *testing.T) {
	ca, other := testpki.NewCA(t, "Site CA"), testpki.NewCA(t, "Other CA")
	ours := ca.Client(t, testpki.Options{CommonName: "ingest"})
	clientCert, err := tlstrust.ClientCertificate(ours.CertPEM, ours.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reasons []string
	reporter := func(addr string) *commitreport.Reporter {
		return &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: addr, TLS: true}}, AETitle: "INGEST",
			TLS: func(_ context.Context, ae string) (*tls.Config, error) {
				if ae != "PACS" { // each peer's own CA and certificate (the commitment function's sites)
					return nil, fmt.Errorf("asked for the TLS configuration of %q, not of the requesting AE", ae)
				}
				return tlstrust.ClientConfig("", ca.Pool(), &clientCert), nil
			},
			HandshakeFailed: func(ae, r string) {
				if ae != "PACS" {
					t.Errorf("handshake failure counted for %q, not the requesting AE", ae)
				}
				mu.Lock()
				reasons = append(reasons, r)
				mu.Unlock()
			}}
	}
	t.Run("delivered", func(t *testing.T) {
		addr, peers := tlsPeer(t, ca.Server(t, testpki.Options{}), ca)
		done := report(reporter(addr), "")
		p := <-peers
		if p == nil {
			t.Fatalf("handshake failed: %v", (<-done).err)
		}
		takeReport(t, p)
		if got := <-done; got.err != nil || got.d.SameAssociation {
			t.Fatalf("Report = %+v, %v", got.d, got.err)
		}
	})
	for _, tt := range []struct {
		name, reason, says string
		cert               *testpki.Cert
		clientCA           *testpki.CA // the CA the peer wants our certificate from: ca unless set
	}{
		{"peer certificate from another CA", dicomnet.HandshakeUnknownCA, "certificate signed by unknown authority", other.Server(t, testpki.Options{}), nil},
		{"peer certificate for another address", dicomnet.HandshakeBadCertificate, "certificate is valid for 10.9.9.9, not 127.0.0.1",
			ca.Server(t, testpki.Options{IPs: []net.IP{net.IPv4(10, 9, 9, 9)}}), nil},
		// crypto/tls's server answers a certificate it cannot verify with "bad certificate"; other PACSs say
		// "unknown certificate authority" or "certificate required": all the peer's alert.
		{"our client certificate refused (TLS 1.3)", dicomnet.HandshakePeerAlert, "remote error: tls: ", ca.Server(t, testpki.Options{}), other},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			reasons = nil
			mu.Unlock()
			clientCA := ca
			if tt.clientCA != nil {
				clientCA = tt.clientCA
			}
			addr, peers := tlsPeer(t, tt.cert, clientCA)
			got := <-report(reporter(addr), "")
			<-peers
			var he *commitreport.HandshakeError
			if !errors.As(got.err, &he) || he.Reason != tt.reason || !strings.Contains(got.err.Error(), tt.says) {
				t.Fatalf("Report error %v, want a handshake failure %s saying %q", got.err, tt.reason, tt.says)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(reasons) != 1 || reasons[0] != tt.reason {
				t.Errorf("handshake failures counted %v, want [%s]", reasons, tt.reason)
			}
		})
	}
	t.Run("plain DICOM peer", func(t *testing.T) {
		pl := dicomnettest.ListenParrot(t)
		done := report(reporter(pl.Addr), "")
		// Our ClientHello is no PDU it knows (type 0x16): it aborts, as DCMTK does.
		pl.Accept().SendPDU(&pdu.Abort{})
		var he *commitreport.HandshakeError
		if got := <-done; !errors.As(got.err, &he) || he.Reason != dicomnet.HandshakeNotTLS {
			t.Fatalf("Report error %v, want a handshake failure %s", got.err, dicomnet.HandshakeNotTLS)
		}
	})
	t.Run("renewed files that do not load keep the last good configuration", func(t *testing.T) {
		// As the listener keeps its certificate when a renewed one does not load (a half-written file): the
		// report still goes, with the configuration read last, and the log says why.
		var logs testenv.LogBuffer
		var fail atomic.Bool
		good := tlstrust.ClientConfig("", ca.Pool(), &clientCert)
		r := &commitreport.Reporter{AETitle: "INGEST", Logger: jsonlog.New(&logs, slog.LevelInfo),
			TLS: func(context.Context, string) (*tls.Config, error) {
				if fail.Load() {
					return nil, errors.New("--commitment-tls-cert (or SCP_COMMITMENT_TLS_CERT): no PEM block in it")
				}
				return good, nil
			}}
		deliver := func() error {
			addr, peers := tlsPeer(t, ca.Server(t, testpki.Options{}), ca)
			r.Peers = commitreport.Peers{"PACS": {Addr: addr, TLS: true}}
			done := report(r, "")
			var p *dicomnettest.Parrot
			select {
			case p = <-peers:
			case got := <-done: // failed before it connected
				return got.err
			}
			if p == nil {
				return (<-done).err
			}
			takeReport(t, p)
			return (<-done).err
		}
		if err := deliver(); err != nil {
			t.Fatalf("first report: %v", err)
		}
		fail.Store(true)
		if err := deliver(); err != nil {
			t.Fatalf("report after the files stopped loading: %v, want the last good configuration used", err)
		}
		if l := logs.String(); !strings.Contains(l, commitreport.TLSNotReloadedLog) || !strings.Contains(l, "no PEM block in it") {
			t.Errorf("log %s, want %q with the reason", l, commitreport.TLSNotReloadedLog)
		}
	})
	t.Run("no TLS configuration", func(t *testing.T) {
		r := reporter(net.JoinHostPort("127.0.0.1", "2762"))
		r.TLS = nil
		if got := <-report(r, ""); !errors.Is(got.err, commitreport.ErrNoTLS) {
			t.Fatalf("Report error %v, want ErrNoTLS", got.err)
		}
	})
}

// TestReportOverTLSServerName: a PACS whose certificate names a DNS name only (many do), dialled at its address,
// is checked against the peer's server name (sent as SNI too) and takes the report; without one its certificate
// is checked against the address it is dialled at and the handshake fails (bad_certificate), as before.
func TestReportOverTLSServerName(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	ours := ca.Client(t, testpki.Options{CommonName: "ingest"})
	clientCert, err := tlstrust.ClientCertificate(ours.CertPEM, ours.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pacsCert := ca.Server(t, testpki.Options{CommonName: "pacs.st-mary.example", DNSNames: []string{"pacs.st-mary.example"}})
	for _, tc := range []struct {
		name, serverName, reason string
	}{
		{"its DNS name", "pacs.st-mary.example", ""},
		{"no server name", "", dicomnet.HandshakeBadCertificate},
		{"another DNS name", "pacs.st-anne.example", dicomnet.HandshakeBadCertificate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sni atomic.Value
			srv := pacsCert.TLS()
			addr, peers := dicomnettest.ListenTLSParrot(t, srv, ca.Pool())
			peer, err := commitreport.ParsePeers("PACS=tls://" + addr + map[bool]string{true: "?serverName=" + tc.serverName}[tc.serverName != ""])
			if err != nil {
				t.Fatal(err)
			}
			r := &commitreport.Reporter{Peers: peer, AETitle: "INGEST",
				TLS: func(context.Context, string) (*tls.Config, error) {
					cfg := tlstrust.ClientConfig("", ca.Pool(), &clientCert)
					cfg.VerifyConnection = func(cs tls.ConnectionState) error { sni.Store(cs.ServerName); return nil }
					return cfg, nil
				}}
			done := report(r, "")
			p := <-peers
			if tc.reason != "" {
				got := <-done
				if he, ok := errors.AsType[*commitreport.HandshakeError](got.err); !ok || he.Reason != tc.reason {
					t.Fatalf("Report error %v, want a handshake failure %s", got.err, tc.reason)
				}
				return
			}
			if p == nil {
				t.Fatalf("handshake failed: %v", (<-done).err)
			}
			takeReport(t, p)
			if got := <-done; got.err != nil {
				t.Fatalf("Report: %v", got.err)
			}
			if got := sni.Load(); got != tc.serverName {
				t.Errorf("server name sent %v, want %q", got, tc.serverName)
			}
		})
	}
}

// TestReportOverTLSAbortHint: a PACS that aborts a DICOM TLS association (as those that check a peer's address,
// or its certificate, against its AE title do) gets a hint naming what we presented: our client certificate by
// its name, or none when no client certificate is set (local mode without --commitment-tls-cert and --tls-cert).
func TestReportOverTLSAbortHint(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	ours := ca.Client(t, testpki.Options{CommonName: "ingest"})
	clientCert, err := tlstrust.ClientCertificate(ours.CertPEM, ours.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		cert     *tls.Certificate
		clientCA *testpki.CA
		says     string
	}{
		// Go sends it only when the PACS asks for one: the hint says it was offered, not that it was presented.
		{"with our client certificate", &clientCert, ca, `over DICOM TLS offering our client certificate "CN=ingest,`},
		{"with our client certificate, when asked", &clientCert, ca, `if the PACS asked for one)`},
		{"without a client certificate", nil, nil, "over DICOM TLS without a client certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var pool *x509.CertPool
			if tt.clientCA != nil {
				pool = tt.clientCA.Pool()
			}
			addr, peers := dicomnettest.ListenTLSParrot(t, ca.Server(t, testpki.Options{}).TLS(), pool)
			r := &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: addr, TLS: true}}, AETitle: "INGEST",
				TLS: func(context.Context, string) (*tls.Config, error) {
					return tlstrust.ClientConfig("", ca.Pool(), tt.cert), nil
				}}
			done := report(r, "")
			p := <-peers
			if p == nil {
				t.Fatalf("handshake failed: %v", (<-done).err)
			}
			p.Expect(pdu.TypeAssociateRQ)
			p.SendPDU(&pdu.Abort{})
			got := <-done
			if !errors.Is(got.err, dicomnet.ErrAborted) || !strings.Contains(got.err.Error(), tt.says) {
				t.Fatalf("Report error %v, want an abort saying %q", got.err, tt.says)
			}
		})
	}
}

// TestReportOwnCertificateNotValid: our client certificate expired (or not yet valid), whether in the configuration
// last loaded (a file or a secret read while it was valid) or refused for its dates where TLS reads it (returned
// with the refusal: scp-task's files, lambdaio's secrets), is never sent, and the report is still tried: a PACS that
// asks for a client certificate fails the handshake, counted under a reason of its own and naming the certificate's
// dates; one that asks for none takes the report (a delivery lost for a certificate it never wanted otherwise). The
// refusal is logged once, naming the certificate and its dates (and where it was read). When TLS makes no
// configuration at all, the PACS is not tried.
func TestReportOwnCertificateNotValid(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	old := ca.Client(t, testpki.Expired("old"))
	expired, err := tls.X509KeyPair(old.CertPEM, old.KeyPEM) // as read while it was valid
	if err != nil {
		t.Fatal(err)
	}
	read, refusal := tlstrust.ClientCertificate(old.CertPEM, old.KeyPEM)
	const where = "secret arn:aws:secretsmanager:eu-west-1:123456789012:secret:pacs-AbCdEf"
	server := ca.Server(t, testpki.Options{})
	for _, tt := range []struct {
		name     string
		tls      func(context.Context, string) (*tls.Config, error)
		asks     bool // the PACS asks for a client certificate
		tried    bool // the PACS is dialled
		logNames string
	}{
		{"in the configuration, the PACS asks", func(context.Context, string) (*tls.Config, error) {
			return tlstrust.ClientConfig("", ca.Pool(), &expired), nil
		}, true, true, "CN=old"},
		{"in the configuration, the PACS asks for none", func(context.Context, string) (*tls.Config, error) {
			return tlstrust.ClientConfig("", ca.Pool(), &expired), nil
		}, false, true, "CN=old"},
		{"read with its refusal, the PACS asks", func(context.Context, string) (*tls.Config, error) {
			return tlstrust.ClientConfig("", ca.Pool(), &read), fmt.Errorf("lambdaio: the client certificate of PACS: %s: client certificate: %w", where, refusal)
		}, true, true, where},
		{"read with its refusal, the PACS asks for none", func(context.Context, string) (*tls.Config, error) {
			return tlstrust.ClientConfig("", ca.Pool(), &read), fmt.Errorf("lambdaio: the client certificate of PACS: %s: client certificate: %w", where, refusal)
		}, false, true, where},
		{"refused by TLS, no configuration", func(context.Context, string) (*tls.Config, error) {
			return nil, fmt.Errorf("lambdaio: the client certificate of PACS: %s: client certificate: %w", where, refusal)
		}, true, false, where},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs testenv.LogBuffer
			var reasons []string
			var dialed atomic.Int32
			r := &commitreport.Reporter{AETitle: "INGEST", Logger: jsonlog.New(&logs, slog.LevelInfo), TLS: tt.tls,
				HandshakeFailed: func(_, r string) { reasons = append(reasons, r) }}
			for range 2 {
				var clientCAs *x509.CertPool // nil: the PACS asks for no client certificate
				if tt.asks {
					clientCAs = ca.Pool()
				}
				addr, peers := dicomnettest.ListenTLSParrot(t, server.TLS(), clientCAs)
				r.Peers = commitreport.Peers{"PACS": {Addr: addr, TLS: true}}
				r.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
					dialed.Add(1)
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				}
				done := report(r, "")
				if tt.tried && !tt.asks {
					var p *dicomnettest.Parrot
					select {
					case p = <-peers:
					case got := <-done:
						t.Fatalf("Report to a PACS that asks for no client certificate: %v, want it delivered", got.err)
					}
					if p == nil {
						t.Fatalf("handshake failed: %v", (<-done).err)
					}
					takeReport(t, p)
					if got := <-done; got.err != nil {
						t.Fatalf("Report to a PACS that asks for no client certificate: %v, want it delivered", got.err)
					}
					continue
				}
				got := <-done
				var he *commitreport.HandshakeError
				if !errors.As(got.err, &he) || he.Reason != commitreport.HandshakeOwnCertificateNotValid || !errors.Is(got.err, tlstrust.ErrNotValidNow) ||
					!strings.Contains(got.err.Error(), "is valid from 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z") {
					t.Fatalf("Report error %v, want a handshake failure %s naming the dates", got.err, commitreport.HandshakeOwnCertificateNotValid)
				}
			}
			if n := dialed.Load(); (n != 0) != tt.tried {
				t.Errorf("the PACS was dialled %d times, want tried %v", n, tt.tried)
			}
			wantReasons := []string{commitreport.HandshakeOwnCertificateNotValid, commitreport.HandshakeOwnCertificateNotValid}
			if !tt.asks {
				wantReasons = nil
			}
			if !slices.Equal(reasons, wantReasons) {
				t.Errorf("handshake failures counted %v, want %v", reasons, wantReasons)
			}
			if n := strings.Count(logs.String(), commitreport.OwnCertificateNotValidLog); n != 1 || !strings.Contains(logs.String(), tt.logNames) ||
				!strings.Contains(logs.String(), "2021-01-01T00:00:00Z") {
				t.Errorf("log %s: want %q once, naming %s and the dates", logs.String(), commitreport.OwnCertificateNotValidLog, tt.logNames)
			}
		})
	}
}

// TestReportOwnCertificateValidAgain: our client certificate refused for its dates, then valid (a certificate not
// yet valid at start, or one renewed), then refused again (the renewal expired, or the old file came back): each
// refusal after a presentable certificate is logged again, not taken for the one logged before.
func TestReportOwnCertificateValidAgain(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	old := ca.Client(t, testpki.Expired("old"))
	expired, err := tls.X509KeyPair(old.CertPEM, old.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	current := ca.Client(t, testpki.Options{CommonName: "current"}).TLS()
	certs := []*tls.Certificate{&expired, &current, &expired}
	var logs testenv.LogBuffer
	r := &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: "127.0.0.1:2762", TLS: true}}, AETitle: "INGEST",
		Logger: jsonlog.New(&logs, slog.LevelInfo),
		TLS: func(context.Context, string) (*tls.Config, error) {
			c := certs[0]
			certs = certs[1:]
			return tlstrust.ClientConfig("", ca.Pool(), c), nil
		},
		Dial: func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("dialed") }}
	for range 3 {
		<-report(r, "")
	}
	if n := strings.Count(logs.String(), commitreport.OwnCertificateNotValidLog); n != 2 {
		t.Errorf("%q logged %d times, want 2 (once for each time it stopped being valid):\n%s", commitreport.OwnCertificateNotValidLog, n, logs.String())
	}
}

// TestReportOwnCertificateRenewalNotValid: a renewal read while the configuration last loaded is still valid, but
// itself expired or not yet valid (the old file put back, a certificate issued with a wrong clock), does not replace
// it: as any renewal that does not load, the last good configuration stays in use (TLSNotReloadedLog), rather than
// fail every PACS that asks for a client certificate.
func TestReportOwnCertificateRenewalNotValid(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	old := ca.Client(t, testpki.Expired("old"))
	read, refusal := tlstrust.ClientCertificate(old.CertPEM, old.KeyPEM)
	current := ca.Client(t, testpki.Options{CommonName: "current"}).TLS()
	configs := []func() (*tls.Config, error){
		func() (*tls.Config, error) { return tlstrust.ClientConfig("", ca.Pool(), &current), nil },
		func() (*tls.Config, error) {
			return tlstrust.ClientConfig("", ca.Pool(), &read), fmt.Errorf("--commitment-tls-cert: %w", refusal)
		},
	}
	var logs testenv.LogBuffer
	r := &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: "127.0.0.1:2762", TLS: true}}, AETitle: "INGEST",
		Logger: jsonlog.New(&logs, slog.LevelInfo),
		TLS: func(context.Context, string) (*tls.Config, error) {
			c := configs[0]
			configs = configs[1:]
			return c()
		},
		Dial: func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("dialed") }}
	for range 2 {
		<-report(r, "")
	}
	if strings.Contains(logs.String(), commitreport.OwnCertificateNotValidLog) || !strings.Contains(logs.String(), commitreport.TLSNotReloadedLog) ||
		!strings.Contains(logs.String(), "2021-01-01T00:00:00Z") {
		t.Errorf("log %s: want the renewal not reloaded (naming its dates), the last one kept", logs.String())
	}
}

// TestReportOwnCertificateUnchangedNotValid: our client certificate out of date, read again unchanged for each
// report (a file or secret not renewed): no renewal failed, so nothing is logged as not reloaded; the refusal is
// logged once (OwnCertificateNotValidLog). The rule of tlstrust.LastGood, as the audit feed's.
func TestReportOwnCertificateUnchangedNotValid(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	old := ca.Client(t, testpki.Expired("old"))
	read, refusal := tlstrust.ClientCertificate(old.CertPEM, old.KeyPEM)
	var logs testenv.LogBuffer
	r := &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: "127.0.0.1:2762", TLS: true}}, AETitle: "INGEST",
		Logger: jsonlog.New(&logs, slog.LevelInfo),
		TLS: func(context.Context, string) (*tls.Config, error) {
			return tlstrust.ClientConfig("", ca.Pool(), &read), fmt.Errorf("--commitment-tls-cert: %w", refusal)
		},
		Dial: func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("dialed") }}
	for range 3 {
		<-report(r, "")
	}
	if strings.Contains(logs.String(), commitreport.TLSNotReloadedLog) || strings.Count(logs.String(), commitreport.OwnCertificateNotValidLog) != 1 {
		t.Errorf("log %s: want the refusal once and nothing not reloaded", logs.String())
	}
}
