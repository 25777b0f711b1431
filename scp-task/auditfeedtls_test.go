package main

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/config"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

// certCollector is a syslog-over-TLS collector that requires a client certificate and records, for each connection,
// the common name of the one presented ("" for a handshake that failed), reading each batch to its end.
type certCollector struct {
	ln        net.Listener
	presented chan string
}

func startCertCollector(t *testing.T, ca *testpki.CA) *certCollector {
	t.Helper()
	server := ca.Server(t, testpki.Options{CommonName: "syslog.test", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{server.TLS()},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	c := &certCollector{ln: ln, presented: make(chan string, 16)}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func(conn *tls.Conn) {
				defer conn.Close()
				if err := conn.Handshake(); err != nil {
					c.presented <- ""
					return
				}
				c.presented <- conn.ConnectionState().PeerCertificates[0].Subject.CommonName
				if _, err := io.Copy(io.Discard, conn); err != nil {
					return
				}
			}(nc.(*tls.Conn))
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return c
}

// auditTLSStep is a change to the audit feed's files (in dir, the client certificate as client.crt and client.key,
// the CA as ca.pem), then a batch sent: the certificate the collector was presented ("": the handshake failed) and
// whether the batch was sent.
type auditTLSStep struct {
	name      string
	change    func(dir string)
	presented string
	sent      bool
}

// runAuditTLSSteps starts the audit feed's collector (scp-task's auditCollector, with the files of config.Load)
// with first as its client certificate at start, runs the steps, and returns what it logged.
func runAuditTLSSteps(t *testing.T, ca *testpki.CA, first *testpki.Cert, steps []auditTLSStep) string {
	t.Helper()
	dir := t.TempDir()
	collector := startCertCollector(t, ca)
	caFile := filepath.Join(dir, "ca.pem")
	testpki.WriteFile(t, caFile, ca.PEM)
	files := first.WriteFiles(t, dir, "client")
	cfg, err := config.Load([]string{"--local", "--data-dir", filepath.Join(dir, "data"), "--audit-syslog", "tls://" + collector.ln.Addr().String(),
		"--audit-syslog-ca", caFile, "--audit-syslog-cert", files.Cert, "--audit-syslog-key", files.Key}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	sender := auditCollector(cfg, jsonlog.New(&logs, slog.LevelInfo))
	for _, st := range steps {
		st.change(dir)
		err := sender.Send(context.Background(), [][]byte{[]byte("<110>1 2026-01-01T00:00:00Z h dicom-ingest - - - test")})
		if (err == nil) != st.sent {
			t.Fatalf("%s: sent %v, want sent %v", st.name, err, st.sent)
		}
		if got := <-collector.presented; got != st.presented {
			t.Errorf("%s: the collector was presented %q, want %q", st.name, got, st.presented)
		}
	}
	return logs.String()
}

// TestAuditFeedTLSReloaded: the audit feed reads its client certificate, key and CA again for each connection to the
// collector, as the Storage Commitment reporter does for each association: a certificate renewed on disk is presented
// from the next batch on, and a CA file replaced is trusted from then on, without a restart; a new file that does not
// load keeps the previous configuration in use, logged once (AuditTLSNotReloadedLog). It was read at start only: the
// renewed certificate was presented after a restart alone.
func TestAuditFeedTLSReloaded(t *testing.T) {
	ca := testpki.NewCA(t, "audit collector CA")
	renew := func(cn string) func(string) {
		return func(dir string) { ca.Client(t, testpki.Options{CommonName: cn}).WriteFiles(t, dir, "client") }
	}
	logs := runAuditTLSSteps(t, ca, ca.Client(t, testpki.Options{CommonName: "feed one"}), []auditTLSStep{
		{"at start", func(string) {}, "feed one", true},
		{"the certificate renewed on disk", renew("feed two"), "feed two", true},
		{"a certificate file that does not load", func(dir string) {
			testpki.WriteFile(t, filepath.Join(dir, "client.crt"), []byte("not a certificate"))
		}, "feed two", true},
		{"still not loading", func(string) {}, "feed two", true},
		{"renewed again", renew("feed three"), "feed three", true},
		{"a CA file that trusts another collector", func(dir string) {
			testpki.WriteFile(t, filepath.Join(dir, "ca.pem"), testpki.NewCA(t, "another CA").PEM)
		}, "", false},
	})
	if n := strings.Count(logs, AuditTLSNotReloadedLog); n != 1 {
		t.Errorf("%d lines %q, want 1 for the certificate that did not load:\n%s", n, AuditTLSNotReloadedLog, logs)
	}
	if !strings.Contains(logs, "--audit-syslog-cert") {
		t.Errorf("the line does not name the setting:\n%s", logs)
	}
}

// TestAuditFeedTLSExpiredNotReloaded: a client certificate out of date at start, read again unchanged for each
// connection, is no renewal that did not load: nothing is logged as not reloaded (the start's warning said it; the
// handshakes fail while it is not valid). Renewed, it is presented; a renewal itself out of date, replacing one valid
// now, is not taken, logged once. Each reload of the same file logged AuditTLSNotReloadedLog.
func TestAuditFeedTLSExpiredNotReloaded(t *testing.T) {
	ca := testpki.NewCA(t, "audit collector CA")
	logs := runAuditTLSSteps(t, ca, ca.Client(t, testpki.Expired("feed expired")), []auditTLSStep{
		{"expired at start", func(string) {}, "", false},
		{"still the same file", func(string) {}, "", false},
		{"renewed", func(dir string) { ca.Client(t, testpki.Options{CommonName: "feed two"}).WriteFiles(t, dir, "client") }, "feed two", true},
		{"a renewal out of date", func(dir string) { ca.Client(t, testpki.Expired("feed old")).WriteFiles(t, dir, "client") }, "feed two", true},
		{"still that renewal", func(string) {}, "feed two", true},
	})
	if n := strings.Count(logs, AuditTLSNotReloadedLog); n != 1 || !strings.Contains(logs, testpki.ExpiredDates) {
		t.Errorf("%d lines %q, want 1, for the renewal out of date (naming its dates):\n%s", n, AuditTLSNotReloadedLog, logs)
	}
}
