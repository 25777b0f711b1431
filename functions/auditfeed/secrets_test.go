package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio"
	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio/lambdaiotest"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed/auditfeedtest"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

const (
	caSecretARN     = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:siem-ca-AbCdEf"
	clientSecretARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:siem-client-AbCdEf"
)

// tlsCollector is a syslog TLS collector on loopback that asks for a client certificate of clientCA (under TLS 1.3,
// where it refuses one after our side of the handshake: auditfeed.ErrHandshake all the same), reads each batch to its
// end and closes cleanly; it counts the batches it took.
func tlsCollector(t *testing.T, serverCA, clientCA *testpki.CA) (addr string, taken *atomic.Int32) {
	t.Helper()
	server := serverCA.Server(t, testpki.Options{CommonName: "collector", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	taken = &atomic.Int32{}
	addr = auditfeedtest.ServeTLS(t, &tls.Config{Certificates: []tls.Certificate{server.TLS()},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCA.Pool()}, func(c *tls.Conn, handshake error) {
		if handshake != nil {
			return
		}
		if _, err := io.Copy(io.Discard, c); err == nil {
			taken.Add(1)
		}
	})
	return addr, taken
}

// TestSecretsReadAgainAfterAFailedHandshake: the client certificate rotated in its secret (the collector now asks
// for one of a new CA) was taken only at a cold start: the function, warm, failed every batch with the old one,
// and Lambda's retries never ended. A batch whose TLS handshake fails has the secrets read again for the next, as
// the commitment function does: the rotation is taken without a cold start. Only a handshake refused is taken for
// a rotation (the collector's TLS alert, or our refusal of its certificate: auditfeed.Refused): a collector that does
// not answer at all, or takes the connection and times out or resets the handshake (overloaded, a network), has them
// kept: no read per failed batch and Lambda retry.
func TestSecretsReadAgainAfterAFailedHandshake(t *testing.T) {
	collectorCA, oldCA, newCA := testpki.NewCA(t, "collector CA"), testpki.NewCA(t, "old client CA"), testpki.NewCA(t, "new client CA")
	pemOf := func(c *testpki.Cert) string { return string(c.CertPEM) + string(c.KeyPEM) }
	addr, taken := tlsCollector(t, collectorCA, newCA)
	host, port, _ := net.SplitHostPort(addr)
	sm := &lambdaiotest.UnansweredSecrets{Values: map[string]string{caSecretARN: string(collectorCA.PEM),
		clientSecretARN: pemOf(oldCA.Client(t, testpki.Options{CommonName: "feeder"}))}}
	env := map[string]string{"SYSLOG_HOST": host, "SYSLOG_PORT": port, "SYSLOG_CA_SECRET_ARN": caSecretARN, "SYSLOG_CLIENT_CERT_SECRET_ARN": clientSecretARN}
	var logs bytes.Buffer
	h, err := configure(func(k string) string { return env[k] }, sm, lambdaio.LoggerTo(&logs, "auditfeed", "prod"))
	if err != nil {
		t.Fatal(err)
	}
	ev := fixture(t)
	reads := func() int { return len(sm.Deadlines()) / 2 } // both secrets at each read
	for _, step := range []struct {
		name      string
		before    func()
		delivered bool
		reads     int
		taken     int32
	}{
		{"the old certificate: refused in the handshake", nil, false, 1, 0},
		{"rotated: read again, taken", func() { sm.Values[clientSecretARN] = pemOf(newCA.Client(t, testpki.Options{CommonName: "feeder"})) }, true, 2, 1},
		{"then kept", nil, true, 2, 2},
		{"a collector that does not answer: kept, not read per retry", func() {
			h.sender.(*auditfeed.Collector).Addr = closedPort(t)
		}, false, 2, 2},
		{"and again", nil, false, 2, 2},
		// A collector overloaded or a network that breaks (a handshake timed out or reset) is no rotation: each
		// failed batch and Lambda retry read both secrets again.
		{"a collector that takes the connection and never answers the handshake: kept", func() {
			h.sender.(*auditfeed.Collector).Addr = auditfeedtest.ServeTCP(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
			h.sender.(*auditfeed.Collector).Timeout = 300 * time.Millisecond
		}, false, 2, 2},
		{"and again after the timeout", nil, false, 2, 2},
		{"a collector that resets the connection in the handshake: kept", func() {
			h.sender.(*auditfeed.Collector).Addr = auditfeedtest.ServeTCP(t, func(c net.Conn) {
				_, _ = c.Read(make([]byte, 1024)) // the ClientHello, then a reset (SO_LINGER 0)
				_ = c.(*net.TCPConn).SetLinger(0)
			})
		}, false, 2, 2},
		{"and again after the reset", nil, false, 2, 2},
		// We refuse the collector's certificate (it chains to no CA of ours: the collector CA rotated): read again.
		{"a collector whose certificate we refuse", func() {
			h.sender.(*auditfeed.Collector).Addr, _ = tlsCollector(t, testpki.NewCA(t, "another collector CA"), newCA)
		}, false, 2, 2},
		{"read again after our refusal", nil, false, 3, 2},
	} {
		if step.before != nil {
			step.before()
		}
		resp, err := h.Handle(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		if delivered := len(resp.BatchItemFailures) == 0; delivered != step.delivered || reads() != step.reads || taken.Load() != step.taken {
			t.Fatalf("%s: delivered %v after %d reads, %d batches taken; want %v, %d, %d:\n%s", step.name, delivered, reads(), taken.Load(),
				step.delivered, step.reads, step.taken, logs.String())
		}
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("a key in the log")
	}
}

// closedPort is a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestUnusableSecretsBackOff: secrets that read but hold no usable CA or client certificate (bad PEM, a key that is
// not the certificate's) failed every cold start, and every Lambda retry of the batch, a cold start, read them and
// logged them again. The function starts; the first batch reads them and fails, logged once for the backoff window
// (SecretsUnusableLog, naming the setting, never the secret); the batches of the window fail at once, each its
// auditfeed.BatchNotDeliveredLog line (the alarm's), without a read (lambdaio.KeptSecret, the commitment function's
// rule; its window's end is tested there).
func TestUnusableSecretsBackOff(t *testing.T) {
	collectorCA, clientCA := testpki.NewCA(t, "collector CA"), testpki.NewCA(t, "client CA")
	good, other := clientCA.Client(t, testpki.Options{CommonName: "feeder"}), clientCA.Client(t, testpki.Options{CommonName: "other"})
	for _, tt := range []struct {
		name, ca, client, setting string
	}{
		{"CA not PEM", "not pem", "", "SYSLOG_CA_SECRET_ARN"},
		{"client certificate not PEM", string(collectorCA.PEM), "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", "SYSLOG_CLIENT_CERT_SECRET_ARN"},
		{"key of another", string(collectorCA.PEM), string(good.CertPEM) + string(other.KeyPEM), "SYSLOG_CLIENT_CERT_SECRET_ARN"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sm := &lambdaiotest.UnansweredSecrets{Values: map[string]string{caSecretARN: tt.ca, clientSecretARN: tt.client}}
			env := map[string]string{"SYSLOG_HOST": "127.0.0.1", "SYSLOG_CA_SECRET_ARN": caSecretARN, "SYSLOG_CLIENT_CERT_SECRET_ARN": clientSecretARN}
			var logs bytes.Buffer
			h, err := configure(func(k string) string { return env[k] }, sm, lambdaio.LoggerTo(&logs, "auditfeed", "prod"))
			if err != nil {
				t.Fatalf("configure: %v, want a start (the secrets are read at the first batch)", err)
			}
			ev := fixture(t)
			for range 3 {
				resp, err := h.Handle(context.Background(), ev)
				if err != nil || len(resp.BatchItemFailures) != 1 {
					t.Fatalf("Handle = %+v, %v; want the batch failed", resp, err)
				}
			}
			if n := len(sm.Deadlines()); n != 2 {
				t.Errorf("%d secret reads, want the 2 of the first batch alone", n)
			}
			unusable := logLines(t, &logs, SecretsUnusableLog)
			if len(unusable) != 1 || !strings.Contains(fmt.Sprint(unusable[0]["err"]), tt.setting) || unusable[0]["retry_in"] == nil {
				t.Errorf("lines %q: %v, want one naming %s and the wait", SecretsUnusableLog, unusable, tt.setting)
			}
			if n := len(logLines(t, &logs, auditfeed.BatchNotDeliveredLog)); n != 3 {
				t.Errorf("%d lines %q, want one per batch", n, auditfeed.BatchNotDeliveredLog)
			}
			for _, secret := range []string{"PRIVATE KEY", "not base64", caSecretARN} {
				if strings.Contains(logs.String(), secret) {
					t.Errorf("the log holds %q:\n%s", secret, logs.String())
				}
			}
		})
	}
}

// TestSecretsNotReadAgainKeepTheLastGood: secrets read again (after a failed handshake, or 15 minutes on) that cannot
// be read now (Secrets Manager out of reach, a grant removed) dropped the configuration that worked: every batch
// failed for the backoff window, where the function, warm, read at cold start only, had delivered. By the rule of
// every client that reads its TLS configuration again (tlstrust.LastGood, the commitment reporter's and scp-task's
// feed's), the one read last stays in use, logged once (auditfeed.TLSNotReloadedLog), and the secrets are read again
// when their window ends.
func TestSecretsNotReadAgainKeepTheLastGood(t *testing.T) {
	collectorCA, clientCA, otherCA := testpki.NewCA(t, "collector CA"), testpki.NewCA(t, "client CA"), testpki.NewCA(t, "another client CA")
	addr, taken := tlsCollector(t, collectorCA, clientCA)
	rotated, _ := tlsCollector(t, collectorCA, otherCA)
	host, port, _ := net.SplitHostPort(addr)
	client := clientCA.Client(t, testpki.Options{CommonName: "feeder"})
	values := map[string]string{caSecretARN: string(collectorCA.PEM), clientSecretARN: string(client.CertPEM) + string(client.KeyPEM)}
	sm := &lambdaiotest.UnansweredSecrets{Values: maps.Clone(values)}
	env := map[string]string{"SYSLOG_HOST": host, "SYSLOG_PORT": port, "SYSLOG_CA_SECRET_ARN": caSecretARN, "SYSLOG_CLIENT_CERT_SECRET_ARN": clientSecretARN}
	var logs bytes.Buffer
	h, err := configure(func(k string) string { return env[k] }, sm, lambdaio.LoggerTo(&logs, "auditfeed", "prod"))
	if err != nil {
		t.Fatal(err)
	}
	collector := h.sender.(*auditfeed.Collector)
	ev := fixture(t)
	for _, step := range []struct {
		name              string
		before            func()
		delivered         bool
		taken, notReloads int
	}{
		{"read, delivered", nil, true, 1, 0},
		{"a collector refusing our certificate: the secrets to be read again", func() { collector.Addr = rotated }, false, 1, 0},
		{"Secrets Manager out of reach: the configuration read last delivers", func() {
			collector.Addr = addr
			clear(sm.Values)
		}, true, 2, 1},
		{"and again, logged once", nil, true, 3, 1},
	} {
		if step.before != nil {
			step.before()
		}
		resp, err := h.Handle(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		n := len(logLines(t, &logs, auditfeed.TLSNotReloadedLog))
		if delivered := len(resp.BatchItemFailures) == 0; delivered != step.delivered || taken.Load() != int32(step.taken) || n != step.notReloads {
			t.Fatalf("%s: delivered %v, %d batches taken, %d lines %q; want %v, %d, %d:\n%s", step.name, delivered, taken.Load(), n,
				auditfeed.TLSNotReloadedLog, step.delivered, step.taken, step.notReloads, logs.String())
		}
	}
}
