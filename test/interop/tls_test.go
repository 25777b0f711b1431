package interop

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/proxyproto"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/sitepki"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// tlsAllowlist binds SITE_A and SITE_B to their certificates and leaves LOCAL_AE unbound.
const tlsAllowlist = "LOCAL_AE,SITE_A@127.0.0.0/8#" + sitepki.SiteA + ",SITE_B#" + sitepki.SiteB

func startTLSSCP(t *testing.T, p *sitepki.PKI, extra ...string) *scptest.SCP {
	t.Helper()
	args := append([]string{"--calling-aes", tlsAllowlist}, p.SCPArgs("127.0.0.1:0")...)
	return startSCP(t, append(args, extra...)...)
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDICOMTLSWithDCMTK: DCMTK's echoscu and storescu with +tls, in the non-downgrading BCP 195 profile (+py, its
// default), in BCP 195 (+px) and in the extended BCP 195 profile (+pz): the site with its certificate gets in on its AE title, another site's certificate
// for that AE title is refused 01 01 03 with a security alert naming the certificate, a bound AE title on the
// plain listener is refused, an unbound one works on both. Every TLS association's audit records carry the
// certificate's fingerprint.
func TestDICOMTLSWithDCMTK(t *testing.T) {
	testenv.RequireTools(t, "echoscu", "storescu")
	p := sitepki.New(t)
	scp := startTLSSCP(t, p)
	host, port := "127.0.0.1", scp.TLSPort()
	echo := func(aet string, tlsArgs ...string) dcmtk.Result {
		args := append(append([]string{"-v"}, tlsArgs...), "-aet", aet, "-aec", "REMOTE_AE", host, port)
		return dcmtk.Run(t, 30*time.Second, "echoscu", args...)
	}
	for _, profile := range []string{"+py", "+px", "+pz"} {
		t.Run("site A echo "+profile, func(t *testing.T) {
			if r := echo("SITE_A", p.DCMTK(&p.A, profile)...); r.Err != nil || !strings.Contains(r.Output, "Received Echo Response (Success)") {
				t.Fatalf("echoscu %s: %v\n%s", profile, r.Err, r.Output)
			}
		})
	}
	t.Run("site A stores", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "ct.dcm")
		obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.1125.9.1", SeriesUID: "1.2.826.0.1.3680043.2.1125.9.1.1",
			SOPInstanceUID: "1.2.826.0.1.3680043.2.1125.9.1.1.1", PatientID: "TLS1", PatientName: "Test^TLS", PixelBytes: 512 << 10}
		if err := obj.WriteFile(file); err != nil {
			t.Fatal(err)
		}
		args := append(p.DCMTK(&p.A, "+py"), "-aet", "SITE_A", "-aec", "REMOTE_AE", host, port, file)
		if r := dcmtk.Run(t, time.Minute, "storescu", args...); r.Err != nil {
			t.Fatalf("storescu: %v\n%s", r.Err, r.Output)
		}
		if n := len(storedFiles(t, scp.DataDir)); n != 1 {
			t.Errorf("%d objects stored, want 1", n)
		}
	})
	t.Run("unbound AE over TLS and plain", func(t *testing.T) {
		if r := echo("LOCAL_AE", p.DCMTK(&p.B, "+py")...); r.Err != nil {
			t.Errorf("unbound AE over TLS: %v\n%s", r.Err, r.Output)
		}
		r := dcmtk.Run(t, 30*time.Second, "echoscu", "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", host, scp.Port())
		if r.Err != nil {
			t.Errorf("unbound AE on the plain listener: %v\n%s", r.Err, r.Output)
		}
	})
	refusals := []struct {
		name string
		run  func() dcmtk.Result
	}{
		{"site B's certificate for site A's AE", func() dcmtk.Result { return echo("SITE_A", p.DCMTK(&p.B, "+py")...) }},
		{"site A's certificate for site B's AE", func() dcmtk.Result { return echo("SITE_B", p.DCMTK(&p.A, "+px")...) }},
		{"site A's AE on the plain listener", func() dcmtk.Result {
			return dcmtk.Run(t, 30*time.Second, "echoscu", "-aet", "SITE_A", "-aec", "REMOTE_AE", host, scp.Port())
		}},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.run()
			if r.Err == nil || !strings.Contains(r.Output, "Calling AE Title Not Recognized") {
				t.Fatalf("want 01 01 03 (Calling AE Title Not Recognized): %v\n%s", r.Err, r.Output)
			}
		})
	}
	scp.WaitMetric(t, "dicom_ingest_associations_active", 0, 5*time.Second)
	// The sites' certificates expire within a day: the gauge reads the
	// soonest, and each site admitted with one is warned of.
	if left := scp.Metric(t, metricnames.TLSClientCertificateExpiresIn); left <= 0 || left > 24*3600 {
		t.Errorf("%s %v, want the sites' certificates' day at most", metricnames.TLSClientCertificateExpiresIn, left)
	}
	scp.Stop(t)
	warned := map[string]bool{}
	for _, e := range scp.LogEntries() {
		if e["msg"] == "site certificate expires soon: issue the site a new one" {
			warned[fmt.Sprint(e["calling_ae"])] = true
		}
	}
	if !warned["SITE_A"] {
		t.Errorf("site A's certificate expires within a day and was not warned of (warned of %v)", warned)
	}

	a, b := readCert(t, p.A.Cert), readCert(t, p.B.Cert)
	recs := auditRecords(t, scp.DataDir)
	tlsRecords := 0
	for _, r := range recs {
		if r.CallingAE == "SITE_A" || r.CallingAE == "SITE_B" || r.TLS != nil {
			if r.TLS == nil {
				if !strings.Contains(r.Reason, "client certificate is required") {
					t.Errorf("%s %s record without TLS peer: %+v", r.Event, r.CallingAE, r)
				}
				continue
			}
			tlsRecords++
			if r.TLS.SHA256 != fingerprint(a) && r.TLS.SHA256 != fingerprint(b) {
				t.Errorf("%s record names certificate %s", r.Event, r.TLS.SHA256)
			}
		}
	}
	if tlsRecords < 8 {
		t.Errorf("%d TLS records, want at least 8 (3 accepted/released pairs and 2 rejections)", tlsRecords)
	}
	var alerts int
	for _, r := range recs {
		if r.Event != associationaudit.EventRejected || r.TLS == nil {
			continue
		}
		alerts++
		if !strings.Contains(r.Reason, "client certificate does not match the calling AE title") || r.RejectReason != 3 ||
			r.TLS.Subject == "" || r.TLS.Issuer != "CN=dicom-ingest site CA,O=dicom-ingest tests" || r.TLS.CertificateName != "" {
			t.Errorf("security alert record %+v %+v", r, *r.TLS)
		}
	}
	if alerts != 2 {
		t.Errorf("%d rejected TLS records, want 2", alerts)
	}
	if acc := findRecord(recs, associationaudit.EventAccepted, "SITE_A"); acc == nil || acc.TLS == nil ||
		acc.TLS.CertificateName != sitepki.SiteA || acc.TLS.Subject != "CN="+sitepki.SiteA+",O=dicom-ingest tests" {
		t.Errorf("site A's accepted record %+v", acc)
	}
	for _, e := range scp.LogEntries() {
		if v, ok := e["tls"].(string); ok && e["msg"] == "dicomnet: association accepted" {
			if v != "TLS 1.3" && v != "TLS 1.2" {
				t.Errorf("association accepted over %s (%v)", v, e["tls_cipher"])
			}
		}
	}
	if !strings.Contains(scp.Logs(), "security alert: client certificate does not match the calling AE title") {
		t.Error("no security alert in the log")
	}
	if strings.Contains(scp.Logs(), "PRIVATE KEY") {
		t.Error("a private key in the log")
	}
}

// TestDICOMTLSRefusals: what must never associate over TLS, each failing the handshake (so nothing reaches the
// association policy) and counted: no client certificate, a certificate of another CA, an expired one, one the site
// CA's CRL lists, TLS 1.0 and 1.1, plain DICOM on the TLS port, TLS 1.2 without a BCP 195 suite.
func TestDICOMTLSRefusals(t *testing.T) {
	testenv.RequireTools(t, "echoscu", "openssl")
	p := sitepki.New(t)
	scp := startTLSSCP(t, p)
	host, port := "127.0.0.1", scp.TLSPort()
	echo := func(tlsArgs ...string) dcmtk.Result {
		args := append(append([]string{"-v"}, tlsArgs...), "-aet", "SITE_A", "-aec", "REMOTE_AE", host, port)
		return dcmtk.Run(t, 30*time.Second, "echoscu", args...)
	}
	sClient := func(version string) dcmtk.Result {
		// SECLEVEL=0 lets OpenSSL 3 offer TLS 1.0/1.1 at all, so the refusal is the server's.
		return dcmtk.Run(t, 30*time.Second, "openssl", "s_client", "-connect", net.JoinHostPort(host, port), version,
			"-cipher", "DEFAULT@SECLEVEL=0", "-cert", p.A.Cert, "-key", p.A.Key, "-CAfile", p.ServerCAFile)
	}
	// A site that trusts another CA than ours refuses our certificate. Under TLS 1.3 OpenSSL (DCMTK) sends its alert
	// in the clear, which the server reads as "local error: tls: bad record MAC", not as the alert it is.
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	testpki.WriteFile(t, otherCA, testpki.NewCA(t, "not our server CA").PEM)
	const failed = "Association Request Failed"
	tests := []struct {
		name       string
		run        func() dcmtk.Result
		peerSays   string // in the peer's output
		serverSays string // in the server's log line for the failed handshake
		reason     string // the line's and the metric's (dicomnet.HandshakeFailureReason)
	}{
		{"no client certificate", func() dcmtk.Result { return echo(p.DCMTK(nil, "+py")...) }, failed, "didn't provide a certificate", dicomnet.HandshakeNoCertificate},
		{"certificate of another CA", func() dcmtk.Result { return echo(p.DCMTK(&p.Stranger, "+py")...) }, failed, "unknown authority", dicomnet.HandshakeUnknownCA},
		{"expired certificate", func() dcmtk.Result { return echo(p.DCMTK(&p.Expired, "+py")...) }, failed, "expired", dicomnet.HandshakeExpired},
		{"revoked certificate", func() dcmtk.Result { return echo(p.DCMTK(&p.Revoked, "+py")...) }, failed, "is revoked by its CA's CRL", dicomnet.HandshakeRevoked},
		{"plain DICOM on the TLS port", func() dcmtk.Result { return echo() }, failed, "does not look like a TLS handshake", dicomnet.HandshakeNotTLS},
		{"our certificate not trusted by the site", func() dcmtk.Result { return echo("+tls", p.A.Key, p.A.Cert, "+cf", otherCA, "+py") }, failed, "bad record MAC", dicomnet.HandshakePeerAlert},
		{"TLS 1.0", func() dcmtk.Result { return sClient("-tls1") }, "alert protocol version", "unsupported versions", dicomnet.HandshakeProtocolVersion},
		{"TLS 1.1", func() dcmtk.Result { return sClient("-tls1_1") }, "alert protocol version", "unsupported versions", dicomnet.HandshakeProtocolVersion},
	}
	counted := map[string]float64{}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.run()
			if strings.Contains(r.Output, "Echo Response (Success)") || !strings.Contains(r.Output, tt.peerSays) {
				t.Fatalf("want a refusal mentioning %q: %v\n%s", tt.peerSays, r.Err, r.Output)
			}
			counted[tt.reason]++

			scp.WaitMetric(t, fmt.Sprintf("dicom_ingest_tls_handshake_failures_total{reason=%q}", tt.reason), counted[tt.reason], 5*time.Second)
			// Its line, the i+1th: the log is read as it comes, and the
			// last one read may still be the previous subtest's.
			var failed []map[string]any
			testenv.Eventually(t, "the handshake failure's line", func() bool {
				failed = failed[:0]
				for _, e := range scp.LogEntries() {
					if e["msg"] == "dicomnet: TLS handshake failed" {
						failed = append(failed, e)
					}
				}
				return len(failed) > i
			})
			if err, _ := failed[i]["err"].(string); !strings.Contains(err, tt.serverSays) || failed[i]["reason"] != tt.reason {
				t.Errorf("server logged reason %v, %q; want %q, %q", failed[i]["reason"], err, tt.reason, tt.serverSays)
			}
		})
	}
	if n := scp.MetricSum(t, "dicom_ingest_tls_handshake_failures_total"); n != float64(len(tests)) {
		t.Errorf("%v TLS handshake failures counted in all, want %d", n, len(tests))
	}
	t.Run("TLS 1.2 with a BCP 195 suite handshakes, without one it does not", func(t *testing.T) {
		r := dcmtk.Run(t, 30*time.Second, "openssl", "s_client", "-connect", net.JoinHostPort(host, port), "-tls1_2",
			"-cipher", "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384", "-cert", p.A.Cert, "-key", p.A.Key, "-CAfile", p.ServerCAFile)
		if !strings.Contains(r.Output, "Protocol  : TLSv1.2") || !strings.Contains(r.Output, "Verify return code: 0 (ok)") {
			t.Errorf("TLS 1.2 with ECDHE AES-GCM: %v\n%s", r.Err, r.Output)
		}
		r = dcmtk.Run(t, 30*time.Second, "openssl", "s_client", "-connect", net.JoinHostPort(host, port), "-tls1_2",
			"-cipher", "ECDHE-RSA-AES128-SHA256:AES128-GCM-SHA256:DHE-RSA-AES128-SHA", "-cert", p.A.Cert, "-key", p.A.Key, "-CAfile", p.ServerCAFile)
		if !strings.Contains(r.Output, "alert handshake failure") {
			t.Errorf("TLS 1.2 with suites outside BCP 195 handshook: %v\n%s", r.Err, r.Output)
		}
		scp.WaitMetric(t, fmt.Sprintf("dicom_ingest_tls_handshake_failures_total{reason=%q}", dicomnet.HandshakeCipherMismatch), 1, 5*time.Second)
	})
	if n := scp.Metric(t, `dicom_ingest_associations_total{outcome="accepted"}`) + scp.Metric(t, `dicom_ingest_associations_total{outcome="rejected"}`); n != 0 {
		t.Errorf("%v association requests reached the policy", n)
	}
}

// TestDICOMTLSReload: a new certificate and client CA are taken on SIGHUP (and, with no signal, when the files
// change) while an association is open: the next one gets the new certificate and is held to the new client CAs.
// The open association goes on while its certificate's CA is still in the bundle (a site CA rotation's first
// step, certificates.md), and is aborted at the reload that takes that CA out: a certificate no longer trusted ends
// the associations it has, not only new handshakes.
func TestDICOMTLSReload(t *testing.T) {
	testenv.RequireTools(t, "echoscu")
	p := sitepki.New(t)
	scp := startTLSSCP(t, p, "--idle-timeout", "2m")
	ctx := scptest.Context(t)
	siteA := p.ACert.TLS()
	var seen []*x509.Certificate
	dial := func(site tls.Certificate) (*dicomnet.ClientAssociation, error) {
		cfg := scClient("SITE_A")
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&tls.Dialer{Config: &tls.Config{RootCAs: p.ServerCA.Pool(), ServerName: "127.0.0.1",
				Certificates: []tls.Certificate{site}}}).DialContext(ctx, network, addr)
			if err == nil {
				seen = append(seen, c.(*tls.Conn).ConnectionState().PeerCertificates[0])
			}
			return c, err
		}
		return dicomnet.Dial(ctx, scp.TLSAddr, cfg)
	}
	open, err := dial(siteA)
	if err != nil {
		t.Fatal(err)
	}
	if err := open.Echo(ctx); err != nil {
		t.Fatal(err)
	}

	// Rotate: a new server certificate from the same CA, and a new site CA beside the old one, which re-issued site A.
	next := p.ServerCA.Server(t, testpki.Options{CommonName: "dicom-ingest.test", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	newSiteCA := testpki.NewCA(t, "dicom-ingest site CA 2")
	reissued := newSiteCA.Client(t, testpki.Options{CommonName: sitepki.SiteA})
	next.WriteFiles(t, p.Dir, "server")
	testpki.WriteFile(t, p.SiteCAFile, append(append([]byte{}, p.SiteCA.PEM...), newSiteCA.PEM...))
	// The CRLs go with their CAs: a list whose CA is not in the bundle does not load.
	testpki.WriteFile(t, p.SiteCRLFile, append(p.SiteCA.CRL(t, time.Now().Add(time.Hour)), newSiteCA.CRL(t, time.Now().Add(time.Hour))...))
	if err := syscall.Kill(scp.PID(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "an association with the reissued certificate", func() bool {
		as, err := dial(reissued.TLS())
		if err != nil {
			return false
		}
		defer as.Release(ctx)
		return seen[len(seen)-1].Equal(next.Cert)
	})
	if err := open.Echo(ctx); err != nil {
		t.Fatalf("the association open across the reload broke, its certificate still trusted: %v", err)
	}

	// The old site CA leaves the bundle: the association open with its certificate is aborted.
	testpki.WriteFile(t, p.SiteCAFile, newSiteCA.PEM)
	testpki.WriteFile(t, p.SiteCRLFile, newSiteCA.CRL(t, time.Now().Add(time.Hour)))
	if err := syscall.Kill(scp.PID(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the line on the aborted TLS associations", func() bool {
		return strings.Contains(scp.Logs(), "TLS associations aborted: their client certificate is no longer accepted")
	})
	if err := open.Echo(ctx); !errors.Is(err, dicomnet.ErrAborted) {
		t.Errorf("the association of a certificate of the removed site CA: echo gave %v, want it aborted", err)
	}
	open.Abort()
	if !seen[0].Equal(p.Server.Cert) {
		t.Error("the first association did not see the first certificate")
	}
	if as, err := dial(siteA); err == nil {
		as.Abort()
		t.Error("site A's certificate of the old site CA still admitted")
	}
	// DCMTK sees the new certificate too: it trusts the server CA, not the certificate.
	args := append(p.DCMTK(&p.A, "+py"), "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", "127.0.0.1", scp.TLSPort())
	if r := dcmtk.Run(t, 30*time.Second, "echoscu", args...); r.Err == nil {
		t.Errorf("echoscu with a certificate of the replaced site CA got in:\n%s", r.Output)
	}

	// No signal: replacing the files is enough (the file watch).
	third := p.ServerCA.Server(t, testpki.Options{CommonName: "dicom-ingest.test", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	third.WriteFiles(t, p.Dir, "server")
	testenv.Eventually(t, "an association with the reissued certificate", func() bool {
		as, err := dial(reissued.TLS())
		if err != nil {
			return false
		}
		defer as.Release(ctx)
		return seen[len(seen)-1].Equal(third.Cert)
	})
	// The reload logs the certificate once it is in use.
	sum := sha256.Sum256(third.Cert.Raw)
	scp.WaitLog(t, 10*time.Second, "the reload", func(e map[string]any) bool {
		return e["msg"] == "TLS certificate loaded" && e["sha256"] == hex.EncodeToString(sum[:])
	})
}

// TestDICOMTLSReloadDuringTheDrain: the TLS files are reloaded on SIGHUP while scp-task drains (SIGTERM), and an
// association open with a certificate a CRL loaded then lists is aborted, as before the drain. Before, the SIGHUP
// handler and the file watch stopped when the drain began, and Go's default for a SIGHUP nobody handles is to end
// the process: a SIGHUP during the drain (a certificate rotation's script, certificates.md's reload) killed
// scp-task at once, its associations cut without an A-ABORT or their audit records.
func TestDICOMTLSReloadDuringTheDrain(t *testing.T) {
	p := sitepki.New(t)
	scp := startTLSSCP(t, p, "--drain-timeout", "1m")
	ctx := scptest.Context(t)
	cfg := scClient("SITE_A")
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return (&tls.Dialer{Config: &tls.Config{RootCAs: p.ServerCA.Pool(), ServerName: "127.0.0.1",
			Certificates: []tls.Certificate{p.ACert.TLS()}}}).DialContext(ctx, network, addr)
	}
	open, err := dicomnet.Dial(ctx, scp.TLSAddr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := open.Echo(ctx); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(scp.PID(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the draining line", func() bool { return strings.Contains(scp.Logs(), `"msg":"draining"`) })

	testpki.WriteFile(t, p.SiteCRLFile, p.SiteCA.CRL(t, time.Now().Add(time.Hour), p.ACert))
	if err := syscall.Kill(scp.PID(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the line on the aborted TLS associations", func() bool {
		return strings.Contains(scp.Logs(), "TLS associations aborted: their client certificate is no longer accepted")
	})
	if err := open.Echo(ctx); !errors.Is(err, dicomnet.ErrAborted) {
		t.Errorf("the association of the certificate revoked during the drain: echo gave %v, want it aborted", err)
	}
	open.Abort()
	scp.Stop(t)
	if r := findRecord(auditRecords(t, scp.DataDir), associationaudit.EventAborted, "SITE_A"); r == nil ||
		!strings.Contains(r.Reason, "client certificate no longer accepted") {
		t.Errorf("SITE_A's abort %+v; want its record, for its certificate", r)
	}
}

// TestDICOMTLSBehindProxyProtocol: with --proxy-protocol the load balancer's PROXY v2 header comes before the TLS
// handshake; the site's networks are checked against the source it carries, and its certificate is checked too.
func TestDICOMTLSBehindProxyProtocol(t *testing.T) {
	testenv.RequireTools(t, "echoscu")
	p := sitepki.New(t)
	scp := startSCP(t, append([]string{"--proxy-protocol", "--listen", "off", "--calling-aes", "SITE_A@10.99.0.0/16#" + sitepki.SiteA}, p.SCPArgs("127.0.0.1:0")...)...)
	if scp.DICOMAddr != "" {
		t.Fatalf("plain listener on %s with --listen off", scp.DICOMAddr)
	}
	lb := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 2762}
	site := &net.TCPAddr{IP: net.IPv4(10, 99, 3, 4), Port: 40000}
	elsewhere := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 40000}
	relay := proxyRelay(t, scp.TLSAddr, site, lb)
	relayElsewhere := proxyRelay(t, scp.TLSAddr, elsewhere, lb)
	echo := func(addr string, site *testpki.Files) dcmtk.Result {
		host, port, _ := net.SplitHostPort(addr)
		return dcmtk.Run(t, 30*time.Second, "echoscu", append(p.DCMTK(site, "+py"), "-aet", "SITE_A", "-aec", "REMOTE_AE", host, port)...)
	}
	if r := echo(relay, &p.A); r.Err != nil {
		t.Fatalf("site A through the load balancer: %v\n%s", r.Err, r.Output)
	}
	if r := echo(relayElsewhere, &p.A); r.Err == nil || !strings.Contains(r.Output, "Calling AE Title Not Recognized") {
		t.Errorf("site A's certificate from outside its networks: %v\n%s", r.Err, r.Output)
	}
	if r := echo(relay, &p.B); r.Err == nil || !strings.Contains(r.Output, "Calling AE Title Not Recognized") {
		t.Errorf("site B's certificate as site A: %v\n%s", r.Err, r.Output)
	}
	if r := echo(scp.TLSAddr, &p.A); r.Err == nil {
		t.Errorf("TLS without the PROXY header associated:\n%s", r.Output)
	}
	scp.WaitMetric(t, "dicom_ingest_associations_active", 0, 5*time.Second)
	scp.Stop(t)
	acc := findRecord(auditRecords(t, scp.DataDir), associationaudit.EventAccepted, "SITE_A")
	if acc == nil || !strings.HasPrefix(acc.PeerAddr, "10.99.3.4:") || acc.TLS == nil || acc.TLS.CertificateName != sitepki.SiteA {
		t.Errorf("accepted record %+v", acc)
	}
}

// proxyRelay listens on loopback and relays each connection to target, first sending a PROXY v2 header naming src
// and dst, as an AWS NLB with proxy protocol v2 does. It returns the relay's address.
func proxyRelay(t *testing.T, target string, src, dst *net.TCPAddr) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer out.Close()
				if _, err := out.Write(proxyproto.Append(nil, src, dst)); err != nil {
					return
				}
				done := make(chan struct{}, 2)
				go func() { copyHalf(out, in); done <- struct{}{} }()
				go func() { copyHalf(in, out); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return l.Addr().String()
}

// copyHalf copies one direction, then passes the end of it on (a half close), as a TCP load balancer does.
func copyHalf(dst, src net.Conn) {
	if _, err := io.Copy(dst, src); err != nil {
		return
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		if err := tc.CloseWrite(); err != nil {
			return
		}
	}
}

// TestDICOMTLSLocalMode: the same in local mode (one process, TLS only): site A stores over TLS and its study shows in
// the portal; site B's certificate for site A's AE title is refused; the audit trail names both certificates, site
// B's in a Security Alert.
func TestDICOMTLSLocalMode(t *testing.T) {
	testenv.RequireTools(t, "storescu", "echoscu")
	p := sitepki.New(t)
	args := append([]string{"--local", "--data-dir", t.TempDir(), "--portal-listen", "127.0.0.1:0", "--listen", "off",
		"--ae-title", "REMOTE_AE", "--calling-aes", "SITE_A#" + sitepki.SiteA}, p.SCPArgs("127.0.0.1:0")...)
	scp := scptest.Start(t, scptest.Options{NoStore: true, Args: args})
	if scp.PortalAddr == "" || scp.DICOMAddr != "" {
		t.Fatalf("portal %q, plain listener %q", scp.PortalAddr, scp.DICOMAddr)
	}
	portal := "http://" + scp.PortalAddr
	file := filepath.Join(t.TempDir(), "ct.dcm")
	const study = "1.2.826.0.1.3680043.2.1125.9.2"
	obj := synth.Object{StudyUID: study, SeriesUID: study + ".1", SOPInstanceUID: study + ".1.1", PatientID: "TLS2", PatientName: "Test^Local", PixelBytes: 4096}
	if err := obj.WriteFile(file); err != nil {
		t.Fatal(err)
	}
	host, port := "127.0.0.1", scp.TLSPort()
	if r := dcmtk.Run(t, time.Minute, "storescu", append(p.DCMTK(&p.A, "+py"), "-aet", "SITE_A", "-aec", "REMOTE_AE", host, port, file)...); r.Err != nil {
		t.Fatalf("storescu +tls: %v\n%s", r.Err, r.Output)
	}
	if r := dcmtk.Run(t, 30*time.Second, "echoscu", append(p.DCMTK(&p.B, "+py"), "-aet", "SITE_A", "-aec", "REMOTE_AE", host, port)...); r.Err == nil {
		t.Fatalf("site B's certificate let in as site A:\n%s", r.Output)
	}
	getJSON := func(path string, v any) {
		resp, err := http.Get(portal + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	testenv.Eventually(t, "the study in the portal", func() bool {
		var page struct{ Studies []map[string]any }
		getJSON("/api/studies", &page)
		return len(page.Studies) == 1 && page.Studies[0]["studyInstanceUid"] == study
	})
	// The audit trail names the certificates: site A's on its accepted association, under the bound name, and
	// site B's on the refused one (a Security Alert).
	a, b := fingerprint(readCert(t, p.A.Cert)), fingerprint(readCert(t, p.B.Cert))
	testenv.Eventually(t, "the rejected and accepted associations in the portal's audit", func() bool {
		var rejected, accepted struct {
			Records []struct {
				EventID struct{ Code string } `json:"eventId"`
				Reason  string
				TLS     *associationaudit.TLSPeer
			}
		}
		getJSON("/api/audit?outcome=association-rejected&callingAe=SITE_A", &rejected)
		getJSON("/api/audit?outcome=association-accepted&callingAe=SITE_A", &accepted)
		alert := len(rejected.Records) == 1 && rejected.Records[0].EventID.Code == "110113" && rejected.Records[0].TLS != nil &&
			rejected.Records[0].TLS.SHA256 == b && strings.Contains(rejected.Records[0].Reason, "client certificate does not match the calling AE title")
		login := len(accepted.Records) == 1 && accepted.Records[0].TLS != nil && accepted.Records[0].TLS.SHA256 == a &&
			accepted.Records[0].TLS.CertificateName == sitepki.SiteA
		return alert && login
	})
}

// TestDICOMTLSRefusedCertificatesAreAudited: a DCMTK client whose certificate the handshake refuses (another CA's,
// expired, revoked) is audited as a refused association naming the certificate it presented, and logged as a
// security alert with it; one without a certificate is audited naming none.
func TestDICOMTLSRefusedCertificatesAreAudited(t *testing.T) {
	testenv.RequireTools(t, "echoscu")
	p := sitepki.New(t)
	scp := startTLSSCP(t, p)
	presented := map[string]*testpki.Files{"another CA": &p.Stranger, "expired": &p.Expired, "revoked": &p.Revoked, "none": nil}
	reasons := map[string]string{"another CA": dicomnet.HandshakeUnknownCA, "expired": dicomnet.HandshakeExpired, "revoked": dicomnet.HandshakeRevoked,
		"none": dicomnet.HandshakeNoCertificate}
	for name, f := range presented {
		args := append(append([]string{"-v"}, p.DCMTK(f, "+py")...), "-aet", "SITE_A", "-aec", "REMOTE_AE", "127.0.0.1", scp.TLSPort())
		if r := dcmtk.Run(t, 30*time.Second, "echoscu", args...); strings.Contains(r.Output, "Echo Response (Success)") {
			t.Fatalf("%s: associated\n%s", name, r.Output)
		}
		scp.WaitMetric(t, fmt.Sprintf("dicom_ingest_tls_handshake_failures_total{reason=%q}", reasons[name]), 1, 5*time.Second)
	}
	scp.Stop(t)

	named := map[string]associationaudit.Record{}
	unnamed := 0
	for _, r := range auditRecords(t, scp.DataDir) {
		if r.Event != associationaudit.EventRejected || !strings.HasPrefix(r.Reason, "TLS handshake failed") {
			continue
		}
		if r.TLS == nil {
			unnamed++
			continue
		}
		named[r.TLS.SHA256] = r
	}
	alerts := map[string]map[string]any{}
	for _, e := range scp.LogEntries() {
		if e["msg"] == "security alert: client certificate refused in the TLS handshake" {
			if fp, ok := e["sha256"].(string); ok {
				alerts[fp] = e
			}
		}
	}
	for name, f := range presented {
		if f == nil {
			continue
		}
		want := associationaudit.CertificatePeer(readCert(t, f.Cert), "")
		if r, ok := named[want.SHA256]; !ok || *r.TLS != *want {
			t.Errorf("%s: no refused-handshake record naming %+v (%d named)", name, *want, len(named))
		} else if !strings.HasPrefix(r.Reason, "TLS handshake failed: reason "+reasons[name]+": ") {
			// The reason the metric counts it under, as the log line says it.
			t.Errorf("%s: record's reason %q, want it to say %q", name, r.Reason, reasons[name])
		}
		if e := alerts[want.SHA256]; e == nil || e["subject"] != want.Subject || e["serial"] != want.Serial || e["issuer"] != want.Issuer {
			t.Errorf("%s: security alert log line %v", name, e)
		}
	}
	if unnamed != 1 {
		t.Errorf("%d refused handshakes audited without a certificate, want 1 (the one that presented none)", unnamed)
	}
	if strings.Contains(scp.Logs(), "BEGIN CERTIFICATE") {
		t.Error("a whole certificate in the log")
	}
}
