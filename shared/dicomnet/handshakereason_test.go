package dicomnet_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// TestHandshakeFailureReason: every way a client fails the TLS handshake, made for real against a ServeTLS
// listener, is told by its reason (HandshakeFailureReason of the event's error), and the handshake's log line
// carries the same reason: an operator seeing dicom_ingest_tls_handshake_failures_total rise could not tell an
// expired certificate from an unknown CA, a revoked one, an old TLS version, a silent peer or plain DICOM on the
// TLS port but by reading every line. crypto/tls says some of them only in words (no certificate, the version,
// the suites): a Go release that rewords one fails here, not in production as "other".
func TestHandshakeFailureReason(t *testing.T) {
	p := newTLSPeers(t)
	now := time.Now()
	expired := p.ca.Client(t, testpki.Options{CommonName: "pacs.site-a.example", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	notYet := p.ca.Client(t, testpki.Options{CommonName: "pacs.site-a.example", NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})
	revoked := p.ca.Client(t, testpki.Options{CommonName: "pacs.site-a.example"})
	serverAsClient := p.ca.Server(t, testpki.Options{}) // extended key usage serverAuth only
	revocations, _, err := tlstrust.ParseCRLs(p.ca.CRL(t, now.Add(time.Hour), revoked), []*x509.Certificate{p.ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	serverConfig := p.serverConfig()
	// BCP 195's suites and groups, as servertls serves them; the checks of every handshake, as servertls makes them.
	serverConfig.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}
	serverConfig.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	serverConfig.VerifyConnection = func(cs tls.ConnectionState) error {
		return errors.Join(tlstrust.CheckClientLeaf(cs), revocations.Check(cs))
	}

	// A server per case: its log lets through 10 handshake lines in 10 s, and each case reads its own.
	var (
		failed *events
		logs   *testenv.LogBuffer
		srv    tlsServer
	)
	start := func(t *testing.T) {
		failed, logs = newEvents(dicomnet.EventHandshakeFailed), &testenv.LogBuffer{}
		s := &dicomnet.Server{ARTIMTimeout: 500 * time.Millisecond, Observer: failed, Logger: slog.New(slog.NewJSONHandler(logs, nil)),
			Accept: func(context.Context, *dicomnet.AssociationInfo) error {
				t.Errorf("association policy asked for a connection that should have failed its handshake")
				return dicomnet.RejectNoReason
			}}
		srv = startTLSServer(t, s, serverConfig)
	}

	client := func(cert *testpki.Cert, edit func(*tls.Config)) func(*testing.T) {
		return func(t *testing.T) {
			config := p.clientConfig(cert)
			if edit != nil {
				edit(config)
			}
			a, err := dicomnet.Dial(context.Background(), srv.tlsAddr, dicomnet.ClientConfig{CallingAE: "A", CalledAE: "B", Dial: tlsDial(config, nil)})
			if err == nil {
				a.Abort()
				t.Error("associated")
			}
		}
	}
	caAsClient := &testpki.Cert{Cert: p.ca.Cert, Key: p.ca.Key, CertPEM: p.ca.PEM}
	for _, tc := range []struct {
		name   string
		run    func(t *testing.T)
		reason string
	}{
		{"no client certificate", client(nil, nil), dicomnet.HandshakeNoCertificate},
		{"certificate from another CA", client(p.stranger, nil), dicomnet.HandshakeUnknownCA},
		{"expired certificate", client(expired, nil), dicomnet.HandshakeExpired},
		// Before, counted as expired: an alarm on expired then hid a site's clock running behind ours.
		{"certificate not yet valid", client(notYet, nil), dicomnet.HandshakeNotYetValid},
		{"revoked certificate", client(revoked, nil), dicomnet.HandshakeRevoked},
		{"the CA's own certificate", client(caAsClient, nil), dicomnet.HandshakeBadCertificate},
		{"a server certificate", client(serverAsClient, nil), dicomnet.HandshakeBadCertificate},
		{"TLS 1.0 and 1.1", client(p.client, func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }), dicomnet.HandshakeProtocolVersion},
		{"TLS 1.2 without a BCP 195 suite", client(p.client, func(c *tls.Config) {
			c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
		}), dicomnet.HandshakeCipherMismatch},
		{"no key exchange group in common", client(p.client, func(c *tls.Config) { c.CurvePreferences = []tls.CurveID{tls.CurveP521} }), dicomnet.HandshakeCipherMismatch},
		{"the client does not trust our certificate", client(p.client, func(c *tls.Config) { c.RootCAs = p.otherCA.Pool() }), dicomnet.HandshakePeerAlert},
		// Before, it was logged at debug as a health check, and neither counted nor audited.
		{"the client closes after its ClientHello", func(t *testing.T) {
			c, err := net.Dial("tcp", srv.tlsAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := tls.Client(&closesAfterHello{TCPConn: c.(*net.TCPConn)}, p.clientConfig(p.client)).Handshake(); err == nil {
				t.Error("handshake completed")
			}
		}, dicomnet.HandshakePeerClosed},
		// A client that gives up resetting the connection (SO_LINGER 0, or unread bytes at its close) once it has
		// read our certificate request. Before, "other".
		{"the client resets in the middle of its handshake", func(t *testing.T) {
			c, err := net.Dial("tcp", srv.tlsAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			config := p.clientConfig(p.client)
			config.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if err := resetConn(c); err != nil {
					t.Error(err)
				}
				return nil, errors.New("test: reset")
			}
			if err := tls.Client(c, config).Handshake(); err == nil {
				t.Error("handshake completed")
			}
		}, dicomnet.HandshakePeerClosed},
		{"plain DICOM on the TLS port", func(t *testing.T) {
			pr := dicomnettest.DialParrot(t, srv.tlsAddr)
			pr.SendPDU(dicomnettest.AssociateRQ("A", "B"))
			pr.ExpectClosed()
		}, dicomnet.HandshakeNotTLS},
		{"silent peer closed at ARTIM", func(t *testing.T) {
			if _, err := io.ReadAll(dialSilent(t, srv.tlsAddr)); err != nil {
				t.Errorf("not closed at ARTIM: %v", err)
			}
		}, dicomnet.HandshakeTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start(t)
			tc.run(t)
			ev := failed.next(t)
			if got := dicomnet.HandshakeFailureReason(ev.Err); got != tc.reason {
				t.Errorf("HandshakeFailureReason(%q) = %q, want %q", ev.Err, got, tc.reason)
			}
			// Its line, written before the event, says the same.
			var reasons []any
			for l := range strings.Lines(logs.String()) {
				var e map[string]any
				if err := json.Unmarshal([]byte(l), &e); err != nil {
					t.Fatalf("log line %q: %v", l, err)
				}
				if e["msg"] == "dicomnet: TLS handshake failed" && e["assoc"] == ev.Association.ID {
					reasons = append(reasons, e["reason"])
				}
			}
			if len(reasons) != 1 || reasons[0] != tc.reason {
				t.Errorf("the handshake's log line has reason %v, want %q; log:\n%s", reasons, tc.reason, logs)
			}
		})
	}
}

// TestHandshakeFailureReasonsBounded: HandshakeFailureReason names a failure by one of HandshakeFailureReasons
// whatever its error, those it wraps included (servertls wraps the checks of every handshake in a
// *tls.CertificateVerificationError; dicomnet wraps ARTIM's timeout), and never by anything of the error's text:
// a label value is a CloudWatch metric of its own.
func TestHandshakeFailureReasonsBounded(t *testing.T) {
	revoked := fmt.Errorf("tlstrust: certificate %q is %w", "CN=x", tlstrust.ErrRevoked)
	notClient := tlstrust.CheckClientLeaf(tls.ConnectionState{PeerCertificates: []*x509.Certificate{{IsCA: true}}})
	if !errors.Is(notClient, tlstrust.ErrNotClientCertificate) {
		t.Fatalf("CheckClientLeaf of a CA certificate: %v", notClient)
	}
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"none", nil, dicomnet.HandshakeOther},
		{"ARTIM", fmt.Errorf("%w after 30s (ARTIM): %w", dicomnet.ErrHandshakeTimeout, context.DeadlineExceeded), dicomnet.HandshakeTimeout},
		{"plain text", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, dicomnet.HandshakeNotTLS},
		{"revoked, as servertls refuses it", &tls.CertificateVerificationError{Err: errors.Join(nil, revoked)}, dicomnet.HandshakeRevoked},
		{"revoked and a CA certificate", &tls.CertificateVerificationError{Err: errors.Join(notClient, revoked)}, dicomnet.HandshakeRevoked},
		{"a CA certificate, as servertls refuses it", &tls.CertificateVerificationError{Err: errors.Join(notClient, nil)}, dicomnet.HandshakeBadCertificate},
		{"expired", &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired, Detail: "current time 2026-12-07T00:00:00Z is after 2026-12-06T00:00:00Z"}}, dicomnet.HandshakeExpired},
		{"not yet valid", &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired, Detail: "current time 2026-12-07T00:00:00Z is before 2026-12-08T00:00:00Z"}}, dicomnet.HandshakeNotYetValid},
		{"expired, no detail", &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired}}, dicomnet.HandshakeExpired},
		{"unknown authority", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, dicomnet.HandshakeUnknownCA},
		{"name constraints", &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.CANotAuthorizedForThisName}}, dicomnet.HandshakeBadCertificate},
		{"other verification", &tls.CertificateVerificationError{Err: errors.New("x509: something new")}, dicomnet.HandshakeBadCertificate},
		{"remote alert", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, dicomnet.HandshakePeerAlert},
		// What the server reads of an OpenSSL client's alert sent in the clear under TLS 1.3 (DCMTK refusing our
		// certificate: TestDICOMTLSRefusals makes it for real).
		{"an alert in the clear", &net.OpError{Op: "local error", Err: errors.New("tls: bad record MAC")}, dicomnet.HandshakePeerAlert},
		{"local error", &net.OpError{Op: "local error", Err: errors.New("tls: internal")}, dicomnet.HandshakeOther},
		// A client that gives up with unread bytes, or with SO_LINGER 0, resets: closed as much as one that sends FIN.
		{"reset", &net.OpError{Op: "read", Err: &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}}, dicomnet.HandshakePeerClosed},
		{"reset's text only", &net.OpError{Op: "read", Err: errors.New("connection reset by peer")}, dicomnet.HandshakeOther},
		// crypto/tls's words for a peer that closed at a record's boundary, and within one.
		{"closed by the peer", io.EOF, dicomnet.HandshakePeerClosed},
		{"closed by the peer within a record", io.ErrUnexpectedEOF, dicomnet.HandshakePeerClosed},
		{"text of the peer's", errors.New("CN=<script> expired unknown authority"), dicomnet.HandshakeOther},
	} {
		got := dicomnet.HandshakeFailureReason(tt.err)
		if got != tt.want {
			t.Errorf("%s: HandshakeFailureReason(%v) = %q, want %q", tt.name, tt.err, got, tt.want)
		}
		if !slices.Contains(dicomnet.HandshakeFailureReasons, got) {
			t.Errorf("%s: %q is not one of HandshakeFailureReasons", tt.name, got)
		}
	}
	if n := len(dicomnet.HandshakeFailureReasons); n != len(slices.Compact(slices.Sorted(slices.Values(dicomnet.HandshakeFailureReasons)))) {
		t.Errorf("HandshakeFailureReasons %v repeats a value", dicomnet.HandshakeFailureReasons)
	}
}

// closesAfterHello is a client's connection that closes its sending side once its first write, the ClientHello, is
// out: a client that gives up on the handshake without an alert. It reads on, so the server reads the close (EOF),
// not a reset.
type closesAfterHello struct {
	*net.TCPConn
	once sync.Once
}

func (c *closesAfterHello) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	c.once.Do(func() {
		if err == nil {
			err = c.CloseWrite()
		}
	})
	return n, err
}

// resetConn closes c with a reset (SO_LINGER 0), not a FIN.
func resetConn(c net.Conn) error {
	if err := c.(*net.TCPConn).SetLinger(0); err != nil {
		return err
	}
	return c.Close()
}

// TestHandshakeEndsThatAreNoFailure: a connection to the TLS port closed without a byte (a load balancer's TCP
// health check) and a handshake cut by our own stop (Shutdown, Close) are no failure of the peer's: no
// EventHandshakeFailed (so neither metric nor audit record) and no "TLS handshake failed" line, as a plain
// connection closed before its A-ASSOCIATE-RQ has none. Before, a stop during a handshake was a failure with the
// reason "other" ("use of closed network connection", "context canceled"), audited as a refused association.
func TestHandshakeEndsThatAreNoFailure(t *testing.T) {
	p := newTLSPeers(t)
	// inHandshake starts a client whose handshake waits, inside the server's, for the client certificate the
	// server asked for, until release is closed; it returns once the server is waiting for it.
	inHandshake := func(t *testing.T, addr string) (release chan struct{}) {
		asked, release := make(chan struct{}), make(chan struct{})
		config := p.clientConfig(p.client)
		config.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			close(asked)
			<-release
			return nil, errors.New("test: released")
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		done := make(chan struct{})
		go func() { defer close(done); _ = tls.Client(c, config).Handshake() }() // fails: its result is not the test's
		t.Cleanup(func() { <-done })
		select {
		case <-asked:
		case <-time.After(5 * time.Second):
			t.Fatal("the server never asked for the client certificate")
		}
		return release
	}
	var logs *testenv.LogBuffer
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, s *dicomnet.Server, addr string)
		said string // at debug, by the time the connection has ended
	}{
		{"health check", func(t *testing.T, s *dicomnet.Server, addr string) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, "the server to see the close", func() bool { return strings.Contains(logs.String(), "closed before the TLS handshake") })
			shutdown(t, s)
		}, "dicomnet: connection closed before the TLS handshake"},
		// A health check that closes with a reset, not a FIN, sent no byte either. Before, "other".
		{"health check closed by a reset", func(t *testing.T, s *dicomnet.Server, addr string) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if err := resetConn(c); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, "the server to see the reset", func() bool { return strings.Contains(logs.String(), "closed before the TLS handshake") })
			shutdown(t, s)
		}, "dicomnet: connection closed before the TLS handshake"},
		{"Shutdown during the handshake", func(t *testing.T, s *dicomnet.Server, addr string) {
			release := inHandshake(t, addr)
			defer close(release)
			shutdown(t, s)
		}, "dicomnet: TLS handshake cut by the server's stop"},
		{"Close during the handshake", func(t *testing.T, s *dicomnet.Server, addr string) {
			release := inHandshake(t, addr)
			defer close(release)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}, "dicomnet: TLS handshake cut by the server's stop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failed := newEvents(dicomnet.EventHandshakeFailed)
			logs = &testenv.LogBuffer{}
			s := &dicomnet.Server{ARTIMTimeout: 5 * time.Second, Observer: failed,
				Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- s.ServeTLS(l, p.serverConfig()) }()
			tc.run(t, s, l.Addr().String())
			if err := <-served; !errors.Is(err, dicomnet.ErrServerClosed) {
				t.Errorf("ServeTLS: %v", err)
			}
			// Every connection has ended (Shutdown and Wait wait for them), its events observed.
			select {
			case ev := <-failed.ch:
				t.Errorf("EventHandshakeFailed %v, reason %q: want none", ev.Err, dicomnet.HandshakeFailureReason(ev.Err))
			default:
			}
			if strings.Contains(logs.String(), "TLS handshake failed") || !strings.Contains(logs.String(), `"msg":"`+tc.said+`"`) {
				t.Errorf("log, want %q and no handshake failure:\n%s", tc.said, logs)
			}
		})
	}
}

// shutdown shuts s down, waiting up to 5 s for its connections to end.
func shutdown(t *testing.T, s *dicomnet.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
