package auditfeed_test

import (
	"context"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed/auditfeedtest"
	"github.com/dicom-ingest/dicom-ingest/shared/auditmessage"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

func collector(t *testing.T, pki *auditfeedtest.PKI, addr string, client bool) *auditfeed.Collector {
	t.Helper()
	var cert, key []byte
	if client {
		cert, key = auditfeedtest.Read(t, pki.ClientCert), auditfeedtest.Read(t, pki.ClientKey)
	}
	host, _, _ := net.SplitHostPort(addr)
	cfg, err := auditfeed.TLSConfig(host, auditfeedtest.Read(t, pki.CA), cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return &auditfeed.Collector{Addr: addr, TLS: cfg, Timeout: 5 * time.Second}
}

func message(t *testing.T, i int) []byte {
	t.Helper()
	b, err := auditfeed.Format(auditmessage.Message{
		ID: fmt.Sprintf("msg-%d", i), Time: time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC),
		XML: []byte(`<?xml version="1.0" encoding="UTF-8"?><AuditMessage/>`),
	}, auditfeed.Header{Hostname: "test-host"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCollectorSendsToRsyslog(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	for _, mutual := range []bool{false, true} {
		t.Run(fmt.Sprintf("mutual TLS %v", mutual), func(t *testing.T) {
			rs := auditfeedtest.StartRsyslog(t, auditfeedtest.Options{PKI: pki, RequireClientCert: mutual})
			c := collector(t, pki, rs.Addr, mutual)
			var batch [][]byte
			for i := range 50 {
				batch = append(batch, message(t, i))
			}
			if err := c.Send(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			// The batch was confirmed: rsyslog has read all of it.
			got := rs.WaitFor(t, 10*time.Second, func(m []auditfeedtest.Received) bool { return len(m) >= 50 })
			if len(got) != 50 || got[0].ID != "msg-0" || got[49].ID != "msg-49" || got[0].PRI != 85 || got[0].MsgID != "IHE+RFC-3881" {
				t.Errorf("received %d: first %+v", len(got), got[0])
			}
		})
	}
}

func TestCollectorRefusals(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	rs := auditfeedtest.StartRsyslog(t, auditfeedtest.Options{PKI: pki, RequireClientCert: true})
	tests := []struct {
		name string
		c    func() *auditfeed.Collector
		want string
	}{
		{"collector certificate from another CA", func() *auditfeed.Collector {
			cfg, err := auditfeed.TLSConfig("127.0.0.1", auditfeedtest.Read(t, pki.OtherCA), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			return &auditfeed.Collector{Addr: rs.Addr, TLS: cfg, Timeout: 5 * time.Second}
		}, "certificate"},
		{"no client certificate where the collector asks for one", func() *auditfeed.Collector { return collector(t, pki, rs.Addr, false) }, ""},
		{"nobody listening", func() *auditfeed.Collector { return collector(t, pki, testenv.FreeAddr(t), false) }, "connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c().Send(context.Background(), [][]byte{message(t, 1)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Send = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
	if n := len(rs.Messages(t)); n != 0 {
		t.Errorf("collector accepted %d messages over refused connections", n)
	}
}

// TestCollectorUnconfirmedBatchFails: a collector that takes the bytes but
// never closes its side has not confirmed them.
func TestCollectorUnconfirmedBatchFails(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // a black hole: accepts, never answers
		}
	}()
	c := collector(t, pki, l.Addr().String(), false)
	c.Timeout = 500 * time.Millisecond
	if err := c.Send(context.Background(), [][]byte{message(t, 1)}); err == nil {
		t.Fatal("a collector that never answered confirmed the batch")
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct{ in, addr, host, err string }{
		{"tls://siem.example:6514", "siem.example:6514", "siem.example", ""},
		{"tls://10.0.0.5", "10.0.0.5:6514", "10.0.0.5", ""},
		{"tls://[2001:db8::1]:7000", "[2001:db8::1]:7000", "2001:db8::1", ""},
		{"udp://siem.example:514", "", "", "want tls://"},
		{"tls://:6514", "", "", "names no host"},
		{"tls://siem.example:99999", "", "", "out of range"},
		{"tls://siem.example/path", "", "", "nothing more"},
	}
	for _, tt := range tests {
		addr, host, err := auditfeed.ParseURL(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseURL(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || addr != tt.addr || host != tt.host {
			t.Errorf("ParseURL(%q) = %q, %q, %v", tt.in, addr, host, err)
		}
	}
}

// TestTLSConfigClientKey: our client certificate for the collector is held
// to the key rule of every certificate TLS relies on here
// (tlstrust.CheckKey, BCP 195): an RSA key under 2048 bits or an ECDSA key
// on P-224 is refused when the configuration is built, by the SCP's
// --audit-syslog-cert and by the audit feed function alike. Both were
// accepted and presented to the collector.
func TestTLSConfigClientKey(t *testing.T) {
	ca := testpki.NewCA(t, "collector CA")
	tests := []struct {
		name string
		o    testpki.Options
		want string // in the error; "" accepted
	}{
		{"ECDSA P-256", testpki.Options{CommonName: "feeder"}, ""},
		{"RSA 2048", testpki.Options{CommonName: "feeder", RSA: true}, ""},
		{"RSA 1024", testpki.Options{CommonName: "feeder", RSA: true, RSABits: 1024}, "has an RSA key of 1024 bits, fewer than 2048"},
		{"ECDSA P-224", testpki.Options{CommonName: "feeder", Curve: elliptic.P224()}, "has an ECDSA key on P-224"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ca.Client(t, tt.o)
			cfg, err := auditfeed.TLSConfig("collector.example", ca.PEM, c.CertPEM, c.KeyPEM)
			switch {
			case tt.want == "" && (err != nil || len(cfg.Certificates) != 1):
				t.Errorf("TLSConfig = %v, want the client certificate", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "client certificate")):
				t.Errorf("TLSConfig = %v, want a client certificate error saying %q", err, tt.want)
			}
		})
	}
}

// TestTLSConfigCA: the collector CA is read as every CA bundle TLS relies
// on here (tlstrust.ParseCAs): anything in it but certificates, no
// certificate at all, or a CA of a weak key (tlstrust.CheckKey) is refused
// when the configuration is built, as an ErrCA its caller names by where
// it came from. crypto/x509's AppendCertsFromPEM skipped junk without a
// word and took a CA of an RSA key of 1024 bits, whose certificates anyone
// who factors it could mint for a collector of our name.
func TestTLSConfigCA(t *testing.T) {
	ca := testpki.NewCA(t, "collector CA")
	weak := testpki.NewCAWith(t, "weak collector CA", testpki.Options{RSA: true, RSABits: 1024})
	key := ca.Client(t, testpki.Options{CommonName: "feeder"}).KeyPEM
	tests := []struct {
		name string
		pem  []byte
		want string // in the error; "" accepted
	}{
		{"good", ca.PEM, ""},
		{"two CAs", append(append([]byte{}, ca.PEM...), testpki.NewCA(t, "next collector CA").PEM...), ""},
		{"a key after the CA", append(append([]byte{}, ca.PEM...), key...), `a "PRIVATE KEY" block where "CERTIFICATE" blocks belong`},
		{"text after the CA", append(append([]byte{}, ca.PEM...), "-----BEGIN CERTIFICATE-----\nnot base64\n"...), "text after the last PEM block is not PEM"},
		{"junk only", []byte("not a certificate\n"), "no PEM block in it"},
		{"weak RSA 1024 CA", weak.PEM, "has an RSA key of 1024 bits, fewer than 2048"},
		{"a weak CA beside a good one", append(append([]byte{}, ca.PEM...), weak.PEM...), "certificate 2: certificate \"CN=weak collector CA"},
		{"empty", nil, "no certificate in it"},
		{"blank", []byte("\n \n"), "no certificate in it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := auditfeed.TLSConfig("collector.example", tt.pem, nil, nil)
			switch {
			case tt.want == "" && (err != nil || cfg.RootCAs == nil):
				t.Errorf("TLSConfig = %v, want the CA", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, auditfeed.ErrCA)):
				t.Errorf("TLSConfig = %v, want an ErrCA saying %q", err, tt.want)
			}
		})
	}
	// A client certificate's error is not the CA's.
	if _, err := auditfeed.TLSConfig("collector.example", ca.PEM, []byte("x"), key); err == nil || errors.Is(err, auditfeed.ErrCA) {
		t.Errorf("TLSConfig with a bad client certificate = %v, want an error other than ErrCA", err)
	}
}

// TestRefused: a failed handshake is taken for a rotation of the CA or client certificate (the function reads its
// secrets again) only when a certificate was refused: the collector's alert, our verification of its certificate, our
// client certificate not valid now. Every ErrHandshake was: a handshake that timed out or was reset (a collector
// overloaded) had the function read both secrets again at each failed batch and Lambda retry.
func TestRefused(t *testing.T) {
	handshake := func(err error) error { // as Send wraps it
		return fmt.Errorf("auditfeed: connect to 127.0.0.1:6514: %w: %w", auditfeed.ErrHandshake, err)
	}
	alert := &net.OpError{Op: "remote error", Err: tls.AlertError(42)} // bad_certificate, as crypto/tls reports it
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"the collector's alert in the handshake", handshake(alert), true},
		{"the collector's alert after a failed write (TLS 1.3)", fmt.Errorf("auditfeed: send to x: %w: %w (%w)", auditfeed.ErrHandshake, alert,
			&net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}), true},
		{"its certificate of no CA of ours", handshake(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), true},
		{"its certificate not naming the host", handshake(&tls.CertificateVerificationError{Err: x509.HostnameError{Host: "collector"}}), true},
		{"our client certificate expired", handshake(fmt.Errorf("tlstrust: our client certificate, which the server asked for: %w", tlstrust.ErrNotValidNow)), true},
		{"timed out", handshake(context.DeadlineExceeded), false},
		{"reset", handshake(reset), false},
		{"closed at once", handshake(io.EOF), false},
		{"an alert, no handshake", fmt.Errorf("auditfeed: x: %w", alert), false},
		{"no connection", fmt.Errorf("auditfeed: connect to x: %w", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}), false},
		{"none", nil, false},
	} {
		if got := auditfeed.Refused(tt.err); got != tt.want {
			t.Errorf("%s: Refused(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// TestCollectorRefusedCertificateIsAFailedHandshake: a collector that refuses our client certificate (rotated on its
// side: it now wants one of another CA) fails the batch with ErrHandshake, by which the auditfeed function reads its
// secrets again, under TLS 1.2 and 1.3 and whatever the batch's size. Under TLS 1.3 the refusal comes after our side
// of the handshake, and the connection it closes cut our writes short (broken pipe, reset) before the batch's end
// was read: the error was the write's alone, no ErrHandshake, and a rotation waited for the secrets' 15 minutes. A
// collector that resets the connection with no alert is no failed handshake.
func TestCollectorRefusedCertificateIsAFailedHandshake(t *testing.T) {
	serverCA, wantedCA, ourCA := testpki.NewCA(t, "collector CA"), testpki.NewCA(t, "wanted client CA"), testpki.NewCA(t, "our client CA")
	server := serverCA.Server(t, testpki.Options{CommonName: "collector", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	ours := ourCA.Client(t, testpki.Options{CommonName: "feeder"})
	cfg, err := auditfeed.TLSConfig("127.0.0.1", serverCA.PEM, ours.CertPEM, ours.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name     string
		version  uint16
		refuse   bool // false: the handshake succeeds, then the collector resets the connection
		messages int
	}{
		{"TLS 1.2, one message", tls.VersionTLS12, true, 1},
		{"TLS 1.2, a large batch", tls.VersionTLS12, true, 2000},
		{"TLS 1.3, one message", tls.VersionTLS13, true, 1},
		{"TLS 1.3, a batch", tls.VersionTLS13, true, 100},
		{"TLS 1.3, a large batch", tls.VersionTLS13, true, 2000},
		{"TLS 1.3, reset after the handshake", tls.VersionTLS13, false, 2000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sc := &tls.Config{Certificates: []tls.Certificate{server.TLS()}, MaxVersion: tt.version,
				ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: wantedCA.Pool()}
			if !tt.refuse {
				sc.ClientCAs = ourCA.Pool()
			}
			addr := auditfeedtest.ServeTLS(t, sc, func(c *tls.Conn, handshake error) {
				if handshake == nil {
					// Taken: reset at once, no alert (SO_LINGER 0).
					_ = c.NetConn().(*net.TCPConn).SetLinger(0)
				}
			})
			msgs := make([][]byte, tt.messages)
			for i := range msgs {
				msgs[i] = message(t, i)
			}
			c := &auditfeed.Collector{Addr: addr, TLS: cfg, Timeout: 5 * time.Second}
			// The writes race the collector's close: each try is one outcome of the race.
			for range 10 {
				err := c.Send(context.Background(), msgs)
				if err == nil || errors.Is(err, auditfeed.ErrHandshake) != tt.refuse || auditfeed.Refused(err) != tt.refuse {
					t.Fatalf("Send = %v; want a failure, ErrHandshake and Refused %v", err, tt.refuse)
				}
			}
		})
	}
}
