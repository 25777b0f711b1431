package lambdaio

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio/lambdaiotest"
	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog/jsonlogtest"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

const (
	arnA = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pacs-a-client-Ab12Cd"
	arnB = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pacs-b-client-Ef34Gh"
	arnC = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pacs-c-client-Ij56Kl"
)

// clientSecret is a client certificate's secret as the operator stores it (dicom.tls's JSON form).
func clientSecret(t *testing.T, c *testpki.Cert) string {
	t.Helper()
	b, err := json.Marshal(ClientSecret{Certificate: string(c.CertPEM), PrivateKey: string(c.KeyPEM)})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tlsEnv(t *testing.T, peers commitreport.TLSPeers) string {
	t.Helper()
	b, err := json.Marshal(peers)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestConfigCommitmentTLS: COMMITMENT_TLS gives each tls:// peer its own CA and client secret; a tls:// peer
// without them, settings for a plain peer, a CA that is no CA bundle are refused at start, naming the variable.
func TestConfigCommitmentTLS(t *testing.T) {
	ca := testpki.NewCA(t, "PACS CA")
	leaf := ca.Client(t, testpki.Options{CommonName: "ingest"})
	good := commitreport.TLSPeers{"PACS": {CA: string(ca.PEM), ClientSecretARN: arnA}}
	for _, tc := range []struct {
		name, peers, tls, want string // want: "" loads
	}{
		{"tls peer", "PACS=tls://10.1.0.5:2762,CT=10.1.0.6:104", tlsEnv(t, good), ""},
		{"tls peer without settings", "PACS=tls://10.1.0.5:2762", "", "COMMITMENT_TLS: no CA and client certificate for PACS, a tls:// peer"},
		{"settings of a plain peer", "PACS=10.1.0.5:104", tlsEnv(t, good), "COMMITMENT_TLS: PACS is not a tls:// peer"},
		{"not JSON", "PACS=tls://10.1.0.5:2762", "PACS", "COMMITMENT_TLS: invalid character"},
		{"unknown field", "PACS=tls://10.1.0.5:2762", `{"PACS":{"ca":"x","secret":"y"}}`, `COMMITMENT_TLS: json: unknown field "secret"`},
		{"a key for a CA", "PACS=tls://10.1.0.5:2762", tlsEnv(t, commitreport.TLSPeers{"PACS": {CA: string(leaf.KeyPEM), ClientSecretARN: arnA}}),
			`COMMITMENT_TLS: the CA of PACS: a "PRIVATE KEY" block where "CERTIFICATE" blocks belong`},
		{"no secret", "PACS=tls://10.1.0.5:2762", tlsEnv(t, commitreport.TLSPeers{"PACS": {CA: string(ca.PEM)}}), "COMMITMENT_TLS: PACS names no client certificate secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"BUCKET": "b", "COMMITMENT_PEERS": tc.peers, CommitmentTLSEnv: tc.tls}
			c, err := ConfigFromEnv(func(k string) string { return env[k] }, "BUCKET")
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("ConfigFromEnv = %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.CommitmentTLS["PACS"] != good["PACS"] || !c.CommitmentPeers["PACS"].TLS {
				t.Errorf("CommitmentTLS %+v, peers %v", c.CommitmentTLS, c.CommitmentPeers)
			}
		})
	}
}

// countingSecrets is a fake Secrets Manager (lambdaiotest's), which counts the reads.
type countingSecrets struct{ lambdaiotest.UnansweredSecrets }

func (s *countingSecrets) reads() int { return len(s.Deadlines()) }

// TestPeerCredentials: each peer's client certificate is read from its own secret on first use, then kept; read
// again after the bound or a failed handshake with its PACS (Forget), so that a rotated certificate is presented; a secret that
// is not the certificate and key says so without quoting it.
func TestPeerCredentials(t *testing.T) {
	caA, caB := testpki.NewCA(t, "PACS A CA"), testpki.NewCA(t, "PACS B CA")
	certA, certB := caA.Client(t, testpki.Options{CommonName: "ingest-a"}), caB.Client(t, testpki.Options{CommonName: "ingest-b"})
	sm := &countingSecrets{lambdaiotest.UnansweredSecrets{Values: map[string]string{arnA: clientSecret(t, certA), arnB: clientSecret(t, certB)}}}
	now := time.Now()
	p, err := NewPeerCredentials(commitreport.TLSPeers{"A": {CA: string(caA.PEM), ClientSecretARN: arnA}, "B": {CA: string(caB.PEM), ClientSecretARN: arnB}}, sm)
	if err != nil {
		t.Fatal(err)
	}
	p.Now = func() time.Time { return now }
	presented := func(ae string) string {
		t.Helper()
		cfg, err := p.Config(context.Background(), ae)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]*testpki.CA{"A": caA, "B": caB}[ae]
		if !cfg.RootCAs.Equal(want.Pool()) || cfg.MinVersion != tls.VersionTLS12 || len(cfg.Certificates) != 1 {
			t.Fatalf("%s: roots %v, min version %x, %d certificates", ae, cfg.RootCAs, cfg.MinVersion, len(cfg.Certificates))
		}
		return cfg.Certificates[0].Leaf.Subject.CommonName
	}
	for _, step := range []struct {
		name, ae, want string
		reads          int
		before         func()
	}{
		{"first use reads A's secret", "A", "ingest-a", 1, nil},
		{"B its own", "B", "ingest-b", 2, nil},
		{"then kept", "A", "ingest-a", 2, nil},
		{"rotated, still kept within the bound", "A", "ingest-a", 2, func() {
			sm.Values[arnA] = clientSecret(t, caA.Client(t, testpki.Options{CommonName: "ingest-a-2"}))
		}},
		{"read again after the bound", "A", "ingest-a-2", 3, func() { now = now.Add(ClientCredentialMaxAge) }},
		{"and after a failed handshake, that AE's alone (A's kept)", "B", "ingest-b-2", 4, func() {
			sm.Values[arnB] = clientSecret(t, caB.Client(t, testpki.Options{CommonName: "ingest-b-2"}))
			p.Forget("B")
			presented("A")
		}},
	} {
		if step.before != nil {
			step.before()
		}
		if got := presented(step.ae); got != step.want || sm.reads() != step.reads {
			t.Errorf("%s: presented %q after %d reads, want %q after %d", step.name, got, sm.reads(), step.want, step.reads)
		}
	}
	for name, v := range map[string]string{
		"not JSON":       string(certA.KeyPEM),
		"no key":         `{"certificate":` + strconvQuote(string(certA.CertPEM)) + `}`,
		"key of another": `{"certificate":` + strconvQuote(string(certA.CertPEM)) + `,"privateKey":` + strconvQuote(string(certB.KeyPEM)) + `}`,
	} {
		t.Run(name, func(t *testing.T) {
			sm.Values[arnA] = v
			p.Forget("A")
			_, err := p.Config(context.Background(), "A")
			if err == nil || !strings.Contains(err.Error(), "client certificate of A") || !strings.Contains(err.Error(), arnA) {
				t.Fatalf("Config = %v", err)
			}
			for _, secret := range []string{"PRIVATE KEY", string(certB.KeyPEM[40:80]), string(certA.KeyPEM[40:80])} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error quotes the secret: %v", err)
				}
			}
		})
	}
	if _, err := p.Config(context.Background(), "C"); err == nil {
		t.Error("a peer without settings got a configuration")
	}
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestReporterOverTLSPerSite: the commitment function's Reporter reaches each tls:// peer with that site's own CA
// and client certificate (a PACS taking only its site's certificate); a handshake that fails is logged as the
// stack's metric filter counts it, by reason, and has that AE's certificate read again, the others' kept: so does
// a PACS refusing our client certificate, whose alert comes under TLS 1.3 after our handshake ended.
func TestReporterOverTLSPerSite(t *testing.T) {
	caA, caB := testpki.NewCA(t, "PACS A CA"), testpki.NewCA(t, "PACS B CA")
	sm := &countingSecrets{lambdaiotest.UnansweredSecrets{Values: map[string]string{
		arnA: clientSecret(t, caA.Client(t, testpki.Options{CommonName: "ingest-a"})),
		arnB: clientSecret(t, caB.Client(t, testpki.Options{CommonName: "ingest-b"})),
		arnC: clientSecret(t, caA.Client(t, testpki.Options{CommonName: "ingest-c"}))}}}
	addrA, peerA := dicomnettest.ListenTLSParrot(t, caA.Server(t, testpki.Options{}).TLS(), caA.Pool())
	addrB, peerB := dicomnettest.ListenTLSParrot(t, caA.Server(t, testpki.Options{}).TLS(), caB.Pool()) // B's PACS shows a certificate B's CA did not issue
	addrC, peerC := dicomnettest.ListenTLSParrot(t, caA.Server(t, testpki.Options{}).TLS(), caB.Pool()) // C's PACS wants a client certificate of B's CA
	var logs bytes.Buffer
	r := functionReporter(t, sm, &logs, "A=tls://"+addrA+",B=tls://"+addrB+",C=tls://"+addrC,
		commitreport.TLSPeers{"A": {CA: string(caA.PEM), ClientSecretARN: arnA}, "B": {CA: string(caB.PEM), ClientSecretARN: arnB},
			"C": {CA: string(caA.PEM), ClientSecretARN: arnC}})
	res := commitment.Result{TransactionUID: "1.2.826.0.1.3680043.10.9.7", Committed: []commitment.Ref{{SOPClassUID: dicomuid.CTImageStorage, SOPInstanceUID: "1.2.3.4.1"}}}
	report := func(ae string) <-chan error {
		ch := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := r.Report(ctx, pipeline.CommitmentReport{CallingAE: ae, Result: res})
			ch <- err
		}()
		return ch
	}

	done := report("A")
	p := <-peerA
	if p == nil {
		t.Fatalf("A's handshake failed: %v", <-done)
	}
	takeReport(p)
	if err := <-done; err != nil {
		t.Fatalf("report to A: %v", err)
	}

	err := <-report("B")
	<-peerB
	if he, ok := errors.AsType[*commitreport.HandshakeError](err); !ok || he.Reason != dicomnet.HandshakeUnknownCA {
		t.Fatalf("report to B: %v, want a handshake failure %s", err, dicomnet.HandshakeUnknownCA)
	}
	counted := jsonlogtest.Counted(t, jsonlog.MessageFilter(commitreport.HandshakeFailedLog), logs.Bytes())
	if len(counted) != 1 || counted[0]["reason"] != dicomnet.HandshakeUnknownCA || counted[0][jsonlog.EnvironmentKey] != "test" {
		t.Errorf("lines counted %v, want one with reason %s", counted, dicomnet.HandshakeUnknownCA)
	}
	// The failed handshake is B's: B's secret is read again (it may have been rotated), A's certificate, which A's
	// PACS took, is kept.
	reads := sm.reads()
	if _, err := r.TLS(context.Background(), "A"); err != nil || sm.reads() != reads {
		t.Errorf("after B's failed handshake: %v, %d reads (was %d), want A's certificate kept", err, sm.reads(), reads)
	}
	if _, err := r.TLS(context.Background(), "B"); err != nil || sm.reads() != reads+1 {
		t.Errorf("after B's failed handshake: %v, %d reads (was %d), want B's secret read again", err, sm.reads(), reads)
	}

	reads = sm.reads()
	err = <-report("C")
	<-peerC
	if he, ok := errors.AsType[*commitreport.HandshakeError](err); !ok || he.Reason != dicomnet.HandshakePeerAlert {
		t.Fatalf("report to C: %v, want a handshake failure %s", err, dicomnet.HandshakePeerAlert)
	}
	counted = jsonlogtest.Counted(t, jsonlog.MessageFilter(commitreport.HandshakeFailedLog), logs.Bytes())
	if len(counted) != 2 || counted[1]["reason"] != dicomnet.HandshakePeerAlert {
		t.Errorf("lines counted %v, want the second with reason %s", counted, dicomnet.HandshakePeerAlert)
	}
	if _, err := r.TLS(context.Background(), "C"); err != nil || sm.reads() != reads+2 { // read for the report, then again after it
		t.Errorf("after the refused certificate: %v, %d reads (was %d), want C's secret read again", err, sm.reads(), reads)
	}
	for _, ae := range []string{"A", "B"} {
		if _, err := r.TLS(context.Background(), ae); err != nil || sm.reads() != reads+2 {
			t.Errorf("after C's refused certificate: %v, %d reads (was %d), want %s's certificate kept", err, sm.reads(), reads+2, ae)
		}
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("a key in the log")
	}
}

// FuzzParseClientSecret: a client certificate's secret, whatever it holds, never panics the function and its
// error never quotes it.
func FuzzParseClientSecret(f *testing.F) {
	f.Add(`{"certificate":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","privateKey":"-----BEGIN PRIVATE KEY-----\nsecretkeybytes\n-----END PRIVATE KEY-----\n"}`)
	f.Add(`{"certificate":1}`)
	f.Add(`-----BEGIN PRIVATE KEY-----`)
	f.Add(`{"privateKey":"sekrit-value"`)
	f.Fuzz(func(t *testing.T, v string) {
		_, err := ParseClientSecret(v)
		if err == nil {
			return
		}
		if strings.Contains(err.Error(), "secretkeybytes") || strings.Contains(err.Error(), "sekrit") {
			t.Errorf("the error quotes the secret: %v", err)
		}
	})
}

// TestClientSecretReadWithinTheReport: the read of a client certificate's secret is bounded by the report's own
// context (the invocation's deadline, whatever is left of it), not only by KeyReadTimeout: a Secrets Manager that
// does not answer leaves the invocation time to record the failed attempt, not cut by Lambda's timeout.
func TestClientSecretReadWithinTheReport(t *testing.T) {
	ca := testpki.NewCA(t, "PACS CA")
	sm := &countingSecrets{} // answers no secret: the read ends with its context
	env := map[string]string{"BUCKET": "b", "AE_TITLE": "INGEST", "COMMITMENT_PEERS": "A=tls://127.0.0.1:1",
		CommitmentTLSEnv: tlsEnv(t, commitreport.TLSPeers{"A": {CA: string(ca.PEM), ClientSecretARN: arnA}})}
	c, err := ConfigFromEnv(func(k string) string { return env[k] }, "BUCKET")
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReporter(c, sm, LoggerTo(&bytes.Buffer{}, "commitment", "test"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(KeyReadTimeout / 5)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	res := commitment.Result{TransactionUID: "1.2.826.0.1.3680043.10.9.8"}
	if _, err := r.Report(ctx, pipeline.CommitmentReport{CallingAE: "A", Result: res}); err == nil || !strings.Contains(err.Error(), CommitmentTLSEnv) {
		t.Fatalf("Report = %v, want the secret's read failed", err)
	}
	if dls := sm.Deadlines(); len(dls) != 1 || dls[0].IsZero() || dls[0].After(deadline) {
		t.Errorf("the secret read with the deadlines %v, want one, not past the report's %v", dls, deadline)
	}
}

// TestClientSecretUnreadKeepsTheLastCertificate: a secret that can no longer be read (Secrets Manager out of
// reach) after a success leaves that AE's certificate read last in use, logged once without the secret; an AE
// whose secret was never read has none to keep.
func TestClientSecretUnreadKeepsTheLastCertificate(t *testing.T) {
	caA, caB := testpki.NewCA(t, "PACS A CA"), testpki.NewCA(t, "PACS B CA")
	certA := caA.Client(t, testpki.Options{CommonName: "ingest-a"})
	sm := &countingSecrets{lambdaiotest.UnansweredSecrets{Values: map[string]string{arnA: clientSecret(t, certA)}}}
	env := map[string]string{"BUCKET": "b", "AE_TITLE": "INGEST", "COMMITMENT_PEERS": "A=tls://127.0.0.1:1,B=tls://127.0.0.1:2",
		CommitmentTLSEnv: tlsEnv(t, commitreport.TLSPeers{"A": {CA: string(caA.PEM), ClientSecretARN: arnA}, "B": {CA: string(caB.PEM), ClientSecretARN: arnB}})}
	c, err := ConfigFromEnv(func(k string) string { return env[k] }, "BUCKET")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r, err := NewReporter(c, sm, LoggerTo(&logs, "commitment", "test"))
	if err != nil {
		t.Fatal(err)
	}
	var dialed []string
	r.Dial = func(_ context.Context, _, addr string) (net.Conn, error) {
		dialed = append(dialed, addr)
		return nil, errors.New("no PACS here")
	}
	report := func(ae string) error {
		_, err := r.Report(context.Background(), pipeline.CommitmentReport{CallingAE: ae, Result: commitment.Result{TransactionUID: "1.2.826.0.1.3680043.10.9.9"}})
		return err
	}
	if err := report("A"); err == nil || !strings.Contains(err.Error(), "no PACS here") {
		t.Fatalf("report to A: %v, want the dial's failure", err)
	}
	delete(sm.Values, arnA) // Secrets Manager out of reach from now on
	r.HandshakeFailed("A", "unknown_ca")
	for range 2 {
		if err := report("A"); err == nil || !strings.Contains(err.Error(), "no PACS here") {
			t.Fatalf("report to A with its secret unread: %v, want the certificate read last used (the dial's failure)", err)
		}
	}
	if err := report("B"); err == nil || !strings.Contains(err.Error(), "client certificate of B") || slices.Contains(dialed, "127.0.0.1:2") {
		t.Errorf("report to B, never read: %v (dialed %v), want its secret's failure", err, dialed)
	}
	kept := jsonlogtest.Counted(t, jsonlog.MessageFilter(commitreport.TLSNotReloadedLog), logs.Bytes())
	if len(kept) != 1 || !strings.Contains(fmt.Sprint(kept[0]["err"]), "client certificate of A") {
		t.Errorf("lines of a certificate kept %v, want one naming A", kept)
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") || strings.Contains(logs.String(), string(certA.KeyPEM[40:80])) {
		t.Error("the secret in the log")
	}
}

// TestReporterExpiredClientSecret: a site's secret holding an expired client certificate (not rotated in time) is
// refused for its dates when read, logged once naming the secret's ARN and the dates, and never sent; the report is
// still tried: a PACS that asks for a client certificate fails the handshake, counted under own_certificate_not_valid
// at each report, and one that asks for none takes the report.
func TestReporterExpiredClientSecret(t *testing.T) {
	ca := testpki.NewCA(t, "PACS A CA")
	sm := &countingSecrets{lambdaiotest.UnansweredSecrets{Values: map[string]string{arnA: clientSecret(t, ca.Client(t, testpki.Expired("ingest-a")))}}}
	server := ca.Server(t, testpki.Options{}).TLS()
	res := commitment.Result{TransactionUID: "1.2.826.0.1.3680043.10.9.7", Committed: []commitment.Ref{{SOPClassUID: dicomuid.CTImageStorage, SOPInstanceUID: "1.2.3.4.1"}}}
	for _, tt := range []struct {
		name string
		asks *x509.CertPool // the CAs the PACS asks our certificate of; nil: it asks for none
	}{
		{"the PACS asks for a client certificate", ca.Pool()},
		{"the PACS asks for none", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			r := functionReporter(t, sm, &logs, "A=tls://127.0.0.1:1", commitreport.TLSPeers{"A": {CA: string(ca.PEM), ClientSecretARN: arnA}})
			for range 2 {
				addr, peer := dicomnettest.ListenTLSParrot(t, server, tt.asks)
				r.Peers = commitreport.Peers{"A": {Addr: addr, TLS: true}}
				done := make(chan error, 1)
				go func() {
					_, err := r.Report(context.Background(), pipeline.CommitmentReport{CallingAE: "A", Result: res})
					done <- err
				}()
				if tt.asks == nil {
					select {
					case p := <-peer:
						if p == nil {
							t.Fatalf("handshake failed: %v", <-done)
						}
						takeReport(p)
					case err := <-done:
						t.Fatalf("report to a PACS that asks for no client certificate: %v, want it delivered", err)
					}
					if err := <-done; err != nil {
						t.Fatalf("report: %v, want it delivered", err)
					}
					continue
				}
				err := <-done
				if he, ok := errors.AsType[*commitreport.HandshakeError](err); !ok || he.Reason != commitreport.HandshakeOwnCertificateNotValid ||
					!strings.Contains(err.Error(), "is valid from 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z") {
					t.Fatalf("report: %v, want a handshake failure %s naming the dates", err, commitreport.HandshakeOwnCertificateNotValid)
				}
			}
			counted := jsonlogtest.Counted(t, jsonlog.MessageFilter(commitreport.HandshakeFailedLog), logs.Bytes())
			if want := map[bool]int{true: 2, false: 0}[tt.asks != nil]; len(counted) != want || want > 0 && counted[0]["reason"] != commitreport.HandshakeOwnCertificateNotValid {
				t.Errorf("lines counted %v, want %d with reason %s", counted, want, commitreport.HandshakeOwnCertificateNotValid)
			}
			if n := strings.Count(logs.String(), commitreport.OwnCertificateNotValidLog); n != 1 || !strings.Contains(logs.String(), arnA) {
				t.Errorf("%q logged %d times, want once naming the secret:\n%s", commitreport.OwnCertificateNotValidLog, n, logs.String())
			}
			if strings.Contains(logs.String(), "PRIVATE KEY") {
				t.Error("the secret in the log")
			}
		})
	}
}

// takeReport is a PACS taking a report on the association we open: it accepts it with the SCP role proposed,
// answers the report success and releases.
func takeReport(p *dicomnettest.Parrot) {
	p.AcceptAssociation(func(r pdu.RoleSelection) *pdu.RoleSelection { return &r })
	cmd, _ := p.ExpectMessage()
	p.SendMessage(1, dimse.NewNEventReportRSP(cmd, dimse.Status{Code: dimse.StatusSuccess}), nil)
	p.Expect(pdu.TypeReleaseRQ)
	p.SendPDU(&pdu.ReleaseRP{})
}

// functionReporter is the commitment function's Reporter as its environment configures it (COMMITMENT_PEERS peers,
// CommitmentTLSEnv tlsPeers), reading its secrets from sm and logging to logs.
func functionReporter(t *testing.T, sm SecretsAPI, logs *bytes.Buffer, peers string, tlsPeers commitreport.TLSPeers) *commitreport.Reporter {
	t.Helper()
	env := map[string]string{"BUCKET": "b", "AE_TITLE": "INGEST", "COMMITMENT_PEERS": peers, CommitmentTLSEnv: tlsEnv(t, tlsPeers)}
	c, err := ConfigFromEnv(func(k string) string { return env[k] }, "BUCKET")
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReporter(c, sm, LoggerTo(logs, "commitment", "test"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}
