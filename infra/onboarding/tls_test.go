package onboarding

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

func loadTLSExample(t *testing.T) (EnvConfig, Outputs) {
	t.Helper()
	env, err := LoadEnvConfig(filepath.Join("testdata", "config"), "tls")
	if err != nil {
		t.Fatal(err)
	}
	_, outs := loadExample(t)
	return env, outs
}

// TestGoldenTLS renders the kits of an environment with DICOM over TLS: a site bound to its certificate name next to
// the plain port, and an unbound site of a TLS-only environment.
func TestGoldenTLS(t *testing.T) {
	env, outs := loadTLSExample(t)
	tlsOnly := env
	only := *env.TLS
	only.PlainListener = false
	tlsOnly.TLS = &only
	cases := []struct {
		name, site string
		env        EnvConfig
	}{
		{"tls-bound-hospital", "example-hospital", env},
		{"tls-only-unbound-clinic", "bgp-clinic", tlsOnly},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := Build(c.env, c.site, outs, exampleOpts(t, outs, c.site))
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, k, c.name)
		})
	}
}

// TestTLSKitContent checks what the TLS part of a kit must hold, so a bad golden update cannot hide it: the server
// CA as configured, a CSR recipe naming the site's certificate name, and the +tls verification commands.
func TestTLSKitContent(t *testing.T) {
	env, outs := loadTLSExample(t)
	byName := renderExample(t, env, outs)
	ca, err := os.ReadFile(filepath.Join("testdata", "config", "tls", "server-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if byName[ServerCAFileName] != string(ca) {
		t.Error("server-ca.pem is not the configured server CA")
	}
	csr := byName[CSRScriptName]
	for _, want := range []string{"openssl req -new -newkey rsa:3072 -nodes -keyout site.key -out example-hospital.csr",
		"-subj /CN=pacs.example-hospital.example", "subjectAltName=DNS:pacs.example-hospital.example", "extendedKeyUsage=clientAuth"} {
		if !strings.Contains(csr, want) {
			t.Errorf("%s lacks %q:\n%s", CSRScriptName, want, csr)
		}
	}
	for name, ca := range map[string]string{"README.md": "server-ca.pem", "verify.sh": `"$ca"`} {
		for _, want := range []string{
			"echoscu -v +tls site.key site.crt +cf " + ca + " -aet EXAMPLE_PACS -aec DICOM_INGEST 10.20.1.10 2762",
			"storescu -v +tls site.key site.crt +cf " + ca + " -aet EXAMPLE_PACS -aec DICOM_INGEST 10.20.1.10 2762",
		} {
			if !strings.Contains(byName[name], want) {
				t.Errorf("%s lacks %q", name, want)
			}
		}
	}
	for _, want := range []string{"| Remote port for DICOM over TLS | `2762`", "`pacs.example-hospital.example` (your AE title is bound to it)",
		"port 2762, through the tunnels only", "on port 104 it is refused"} {
		if !strings.Contains(byName["README.md"], want) {
			t.Errorf("README.md lacks %q", want)
		}
	}
	if strings.Contains(byName["README.md"], "PRIVATE KEY") {
		t.Error("a key in the README")
	}
}

// writeTLSExampleKit writes the TLS example's kit of example-hospital into a new directory, which it returns.
func writeTLSExampleKit(t *testing.T) string {
	t.Helper()
	env, outs := loadTLSExample(t)
	k, err := Build(env, "example-hospital", outs, exampleOpts(t, outs, "example-hospital"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := k.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestCSRRecipeRuns runs the kit's CSR recipe with openssl and checks the request names the certificate name.
func TestCSRRecipeRuns(t *testing.T) {
	testenv.RequireTools(t, "openssl")
	dir := writeTLSExampleKit(t)
	cmd := exec.Command("sh", CSRScriptName)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", CSRScriptName, err, out)
	}
	if !strings.Contains(string(out), "CN = pacs.example-hospital.example") && !strings.Contains(string(out), "CN=pacs.example-hospital.example") {
		t.Errorf("CSR subject:\n%s", out)
	}
	req, err := exec.Command("openssl", "req", "-in", filepath.Join(dir, "example-hospital.csr"), "-noout", "-text").CombinedOutput()
	if err != nil || !strings.Contains(string(req), "DNS:pacs.example-hospital.example") || !strings.Contains(string(req), "TLS Web Client Authentication") {
		t.Errorf("CSR: %v\n%s", err, req)
	}
	if st, err := os.Stat(filepath.Join(dir, SiteKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v", err, st)
	}
}

func TestTLSBuildErrors(t *testing.T) {
	env, outs := loadTLSExample(t)
	bad := env
	badTLS := *env.TLS
	badTLS.ServerCAPEM = "not a certificate"
	bad.TLS = &badTLS
	if _, err := Build(bad, "example-hospital", outs, exampleOpts(t, outs, "example-hospital")); err == nil || !strings.Contains(err.Error(), "server CA: not a PEM certificate") {
		t.Errorf("bad server CA: %v", err)
	}
	badName := env
	badName.Sites = append([]SiteConfig(nil), env.Sites...)
	badName.Sites[0].CertificateName = "pacs;rm -rf"
	if _, err := Build(badName, "example-hospital", outs, exampleOpts(t, outs, "example-hospital")); err == nil || !strings.Contains(err.Error(), "certificate name") {
		t.Errorf("bad certificate name: %v", err)
	}
	plainEnv, _ := loadExample(t)
	tlsOuts, err := ParseOutputs(strings.NewReader(`{"S":{"DicomTlsPort":"2762"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Build(plainEnv, "example-hospital", tlsOuts, exampleOpts(t, outs, "example-hospital")); err == nil || !strings.Contains(err.Error(), "deployed DICOM TLS port is 2762, the config has no dicom.tls") {
		t.Errorf("TLS deployed, not configured: %v", err)
	}
}

// TestBoundSiteOffersOnlyTheTLSPort: a site whose AE title is bound to its certificate is refused on the plain port
// (01 01 03), so every value of its kit that an administrator types into the PACS or the firewall names the TLS port
// alone, and the troubleshooting row for that refusal says the plain port is a cause. The kit listed "Remote port
// 104" among the parameters and "port 104 and 2762" for the Storage Commitment SCP: a PACS configured from them was
// refused with "Calling AE Title Not Recognized", and the row for it spoke only of the AE title and the source
// address. A site that is not bound keeps both ports.
func TestBoundSiteOffersOnlyTheTLSPort(t *testing.T) {
	env, outs := loadTLSExample(t)
	env.Sites = append([]SiteConfig(nil), env.Sites...)
	for i := range env.Sites {
		env.Sites[i].PacsHost, env.Sites[i].PacsPort = "192.168.10.20", 11112
		if env.Sites[i].Name == "bgp-clinic" {
			env.Sites[i].PacsHost = "172.16.5.20"
		}
	}
	readme := func(site string) string { return renderSite(t, env, outs, site)["README.md"] }
	bound := readme("example-hospital")
	for _, want := range []string{
		"| Storage Commitment SCP | AE `DICOM_INGEST` at `10.20.1.10` port 2762:",
		"to 10.20.1.10, 10.20.2.10 port 2762, through the tunnels only",
		"| 10.20.1.10, 10.20.2.10 | TCP 2762 |",
		"on port 104 it is refused",
		"| `Association Rejected` with reason `Calling AE Title Not Recognized` | Wrong calling AE title, the source address is outside the site CIDRs, or plain DICOM to port 104",
	} {
		if !strings.Contains(bound, want) {
			t.Errorf("bound site's README lacks %q", want)
		}
	}
	for _, unwanted := range []string{"| Remote port | `104`", "104 and 2762"} {
		if strings.Contains(bound, unwanted) {
			t.Errorf("bound site's README offers the plain port: %q", unwanted)
		}
	}
	unbound := readme("bgp-clinic")
	for _, want := range []string{"| Remote port | `104`", "| Storage Commitment SCP | AE `DICOM_INGEST` at `10.20.1.10` port 104 and 2762:",
		"port 104 and 2762, through the tunnels only"} {
		if !strings.Contains(unbound, want) {
			t.Errorf("unbound site's README lacks %q", want)
		}
	}
	if strings.Contains(unbound, "or plain DICOM to port") {
		t.Error("unbound site's README says the plain port is refused")
	}
}

// TestCSRRecipeKeepsTheKeyInUse: the README's rotation (repeat the steps
// before the certificate expires) runs site-csr.sh again; where the PACS's
// key already is, it refuses and leaves the key as it was, saying where to
// make the new one, and there (a new directory, the script run from its
// parent) it makes the new key and request. Before, it overwrote site.key at
// once: the PACS's certificate in use no longer matched its key
// (DCMTK: "Private key 'site.key' and certificate 'site.crt' do not match")
// until the new certificate came back, with no window where both worked.
func TestCSRRecipeKeepsTheKeyInUse(t *testing.T) {
	testenv.RequireTools(t, "openssl")
	dir := writeTLSExampleKit(t)
	run := func(dir, script string) (string, error) {
		cmd := exec.Command("sh", script)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(dir, CSRScriptName); err != nil {
		t.Fatalf("first key: %v\n%s", err, out)
	}
	inUse, err := os.ReadFile(filepath.Join(dir, SiteKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	out, err := run(dir, CSRScriptName)
	if err == nil {
		t.Errorf("%s ran again where %s is: want a refusal\n%s", CSRScriptName, SiteKeyFile, out)
	}
	if !strings.Contains(out, "mkdir renew && cd renew && sh ../"+CSRScriptName) {
		t.Errorf("the refusal does not say where to make the new key:\n%s", out)
	}
	if now, err := os.ReadFile(filepath.Join(dir, SiteKeyFile)); err != nil || !bytes.Equal(now, inUse) {
		t.Errorf("the key in use was replaced (%v)", err)
	}
	renew := filepath.Join(dir, "renew")
	if err := os.Mkdir(renew, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := run(renew, "../"+CSRScriptName); err != nil {
		t.Fatalf("new key in a new directory: %v\n%s", err, out)
	}
	if next, err := os.ReadFile(filepath.Join(renew, SiteKeyFile)); err != nil || bytes.Equal(next, inUse) {
		t.Errorf("no new key in %s (%v)", renew, err)
	}
	if _, err := os.Stat(filepath.Join(renew, "example-hospital.csr")); err != nil {
		t.Error(err)
	}
	// The README says how.
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "mkdir renew && cd renew && sh ../"+CSRScriptName) {
		t.Errorf("the README's rotation does not say to make the new key in a new directory")
	}
}

// TestRotationAsTheREADMESays follows the README's certificate steps literally, with dash as sh, against a DICOM TLS
// server that trusts the site CA: the first key and certificate where the kit is (site-csr.sh, then verify.sh), then
// the rotation: `mkdir renew && cd renew && sh ../site-csr.sh`, the new certificate put in renew, and the check of
// the new pair the README gives, `sh ../verify.sh` in renew, which must reach the server with the new certificate.
// Before, verify.sh (and the README's commands) took server-ca.pem from the current directory only, which renew
// does not have, and the README did not say how to check the new pair: the renewed pair could not be verified as
// the kit had it, only by copying files the README did not name. verify.sh run where no key is says where to run it.
func TestRotationAsTheREADMESays(t *testing.T) {
	testenv.RequireTools(t, "openssl", "echoscu", "dash")
	serverCA, siteCA := testpki.NewCA(t, "dicom-ingest server CA"), testpki.NewCA(t, "dicom-ingest site CA")
	server := serverCA.Server(t, testpki.Options{CommonName: "dicom-ingest.test", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan *big.Int, 8) // the serials of the client certificates associations came with
	srv := &dicomnet.Server{AETitle: "DICOM_INGEST", Accept: func(_ context.Context, a *dicomnet.AssociationInfo) error {
		if c := a.PeerCertificate(); c != nil {
			seen <- c.SerialNumber
		}
		return nil
	}}
	served := make(chan error, 1)
	go func() {
		served <- srv.ServeTLS(l, &tls.Config{Certificates: []tls.Certificate{server.TLS()}, ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs: siteCA.Pool(), MinVersion: tls.VersionTLS12})
	}()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
		if err := <-served; !errors.Is(err, dicomnet.ErrServerClosed) {
			t.Errorf("the server: %v", err)
		}
	})

	env, outs := loadTLSExample(t)
	tlsConf := *env.TLS
	tlsConf.Port, tlsConf.ServerCAPEM = l.Addr().(*net.TCPAddr).Port, string(serverCA.PEM)
	env.TLS = &tlsConf
	opts := exampleOpts(t, outs, "example-hospital")
	opts.RemoteIPs = []string{"127.0.0.1"}
	k, err := Build(env, "example-hospital", outs, opts)
	if err != nil {
		t.Fatal(err)
	}
	kitDir := t.TempDir()
	if _, err := k.WriteDir(kitDir); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(kitDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// sh is dash, whatever /bin/sh is here.
	bin := t.TempDir()
	dash, _ := exec.LookPath("dash")
	if err := os.Symlink(dash, filepath.Join(bin, "sh")); err != nil {
		t.Fatal(err)
	}
	run := func(dir, script string) (string, error) {
		cmd := exec.Command(dash, "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	sign := func(dir string) *big.Int {
		t.Helper()
		csr, err := os.ReadFile(filepath.Join(dir, "example-hospital.csr"))
		if err != nil {
			t.Fatal(err)
		}
		crt := siteCA.SignCSR(t, csr)
		testpki.WriteFile(t, filepath.Join(dir, SiteCertFile), crt)
		b, _ := pem.Decode(crt)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c.SerialNumber
	}
	verified := func(step, dir, script string, want *big.Int) {
		t.Helper()
		out, err := run(dir, script)
		if err != nil {
			t.Fatalf("%s: %s: %v\n%s", step, script, err, out)
		}
		select {
		case got := <-seen:
			if got.Cmp(want) != 0 {
				t.Errorf("%s: the server saw certificate %v, want %v", step, got, want)
			}
		default:
			t.Errorf("%s: no association reached the server\n%s", step, out)
		}
	}
	// The README's own words for each step, as a reader reads them (its lines wrapped).
	words := strings.Join(strings.Fields(string(readme)), " ")
	for _, want := range []string{"Run `" + CSRScriptName + "`", "`mkdir renew && cd renew && sh ../" + CSRScriptName + "`",
		"put the `" + SiteCertFile + "` we return in `renew` beside the new key", "`sh ../verify.sh` in `renew`"} {
		if !strings.Contains(words, want) {
			t.Fatalf("the README's rotation lacks %q", want)
		}
	}

	if out, err := run(kitDir, "sh verify.sh"); err == nil || !strings.Contains(out, "no "+SiteKeyFile+" in") {
		t.Errorf("verify.sh without a key: %v, want it to say where to run it\n%s", err, out)
	}
	if out, err := run(kitDir, "sh "+CSRScriptName); err != nil {
		t.Fatalf("first key: %v\n%s", err, out)
	}
	verified("first certificate", kitDir, "sh verify.sh", sign(kitDir))

	if out, err := run(kitDir, "mkdir renew && cd renew && sh ../"+CSRScriptName); err != nil {
		t.Fatalf("new key: %v\n%s", err, out)
	}
	renew := filepath.Join(kitDir, "renew")
	verified("renewed certificate", renew, "sh ../verify.sh", sign(renew))
}

// TestPacsTLSKit: a site whose PACS takes its Storage Commitment results over DICOM TLS (sites[].pacs.tls) is told
// so, with what its certificate must name, where the kit otherwise says plain DICOM.
func TestPacsTLSKit(t *testing.T) {
	env, outs := loadTLSExample(t)
	env.Sites = append([]SiteConfig(nil), env.Sites...)
	for i := range env.Sites {
		env.Sites[i].PacsHost, env.Sites[i].PacsPort, env.Sites[i].PacsTLS = "192.168.10.20", 2762, true
		if env.Sites[i].Name == "bgp-clinic" {
			env.Sites[i].PacsHost, env.Sites[i].PacsTLS = "172.16.5.20", false
		}
	}
	tlsSite := renderSite(t, env, outs, "example-hospital")["README.md"]
	for _, want := range []string{"| Transport of the results | DICOM TLS (TLS 1.2 or 1.3) inside the VPN", "names `192.168.10.20` as an IP address",
		"in DICOM TLS (its certificate from the CA you gave us"} {
		if !strings.Contains(tlsSite, want) {
			t.Errorf("the TLS site's README lacks %q", want)
		}
	}
	if strings.Contains(tlsSite, "plain DICOM (no TLS) inside the VPN") {
		t.Error("the TLS site's README says its results come in plain DICOM")
	}
	if plain := renderSite(t, env, outs, "bgp-clinic")["README.md"]; !strings.Contains(plain, "| Transport of the results | plain DICOM (no TLS) inside the VPN") {
		t.Error("the plain site's README does not say plain DICOM")
	}
}
