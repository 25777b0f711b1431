// Package sitepki lays out, for one test, the certificates of a DICOM TLS
// deployment as the operations guide describes it: a server CA and the
// SCP's certificate, a site CA and the sites' client certificates, and the
// certificates that must be refused (another CA's, an expired one). All
// are made fresh with shared/testpki and written to the test's temporary
// directory; the arguments for scp-task and DCMTK point at those files.
package sitepki

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

// Site names of the certificates issued to the two test sites.
const (
	SiteA = "pacs.site-a.example"
	SiteB = "pacs.site-b.example"
)

// PKI is one deployment's certificates and their files.
type PKI struct {
	Dir              string
	ServerCA, SiteCA *testpki.CA
	Server           *testpki.Cert
	ServerFiles      testpki.Files
	ServerCAFile     string // what sites trust (+cf)
	SiteCAFile       string // --tls-client-ca
	SiteCRLFile      string // --tls-client-crl: lists Revoked
	// Sites' client certificates: A's and B's from the site CA; Stranger
	// names site A but comes from another CA; Expired is site A's, expired;
	// Revoked is site A's, listed by the site CA's CRL.
	A, B, Stranger, Expired, Revoked testpki.Files
	ACert                            *testpki.Cert
}

// New issues the certificates. The server certificate names ips (and
// localhost, 127.0.0.1).
func New(t testing.TB, ips ...net.IP) *PKI {
	t.Helper()
	p := &PKI{Dir: t.TempDir(), ServerCA: testpki.NewCA(t, "dicom-ingest server CA"), SiteCA: testpki.NewCA(t, "dicom-ingest site CA")}
	p.Server = p.ServerCA.Server(t, testpki.Options{CommonName: "dicom-ingest.test", DNSNames: []string{"localhost"},
		IPs: append([]net.IP{net.IPv4(127, 0, 0, 1)}, ips...)})
	p.ServerFiles = p.Server.WriteFiles(t, p.Dir, "server")
	p.ServerCAFile = filepath.Join(p.Dir, "server-ca.pem")
	testpki.WriteFile(t, p.ServerCAFile, p.ServerCA.PEM)
	p.SiteCAFile = filepath.Join(p.Dir, "site-ca.pem")
	testpki.WriteFile(t, p.SiteCAFile, p.SiteCA.PEM)
	// DCMTK's sites: RSA keys, as most PACS have.
	p.ACert = p.SiteCA.Client(t, testpki.Options{CommonName: SiteA, RSA: true})
	p.A = p.ACert.WriteFiles(t, p.Dir, "site-a")
	p.B = p.SiteCA.Client(t, testpki.Options{CommonName: "PACS B", DNSNames: []string{SiteB}, RSA: true}).WriteFiles(t, p.Dir, "site-b")
	p.Stranger = testpki.NewCA(t, "someone else's CA").Client(t, testpki.Options{CommonName: SiteA, RSA: true}).WriteFiles(t, p.Dir, "stranger")
	p.Expired = p.SiteCA.Client(t, testpki.Options{CommonName: SiteA, RSA: true,
		NotBefore: time.Now().Add(-72 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}).WriteFiles(t, p.Dir, "expired")
	revoked := p.SiteCA.Client(t, testpki.Options{CommonName: SiteA, RSA: true})
	p.Revoked = revoked.WriteFiles(t, p.Dir, "revoked")
	p.SiteCRLFile = filepath.Join(p.Dir, "site-ca.crl")
	testpki.WriteFile(t, p.SiteCRLFile, p.SiteCA.CRL(t, time.Now().Add(7*24*time.Hour), revoked))
	return p
}

// SCPArgs are scp-task's TLS flags: the listener on addr, the server
// certificate, the site CA and its CRL.
func (p *PKI) SCPArgs(addr string) []string {
	return []string{"--tls-listen", addr, "--tls-cert", p.ServerFiles.Cert, "--tls-key", p.ServerFiles.Key,
		"--tls-client-ca", p.SiteCAFile, "--tls-client-crl", p.SiteCRLFile}
}

// DCMTK returns DCMTK's TLS arguments for a site certificate (nil files:
// anonymous TLS, no client certificate), trusting the server CA, with a
// security profile such as "+py" (non-downgrading BCP 195, DCMTK's default)
// or "+px" (BCP 195).
func (p *PKI) DCMTK(site *testpki.Files, profile string) []string {
	var args []string
	if site == nil {
		args = []string{"+tla"}
	} else {
		args = []string{"+tls", site.Key, site.Cert}
	}
	return append(args, "+cf", p.ServerCAFile, profile)
}
