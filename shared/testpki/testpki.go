// Package testpki issues X.509 certificates for tests: certificate
// authorities, server and client certificates, made fresh by each test with
// crypto/x509 (no key is ever committed) and written as PEM files for peers
// such as DCMTK and openssl that read files.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CA is a certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is the CA certificate, PEM-encoded.
	PEM []byte
	// chain is, for an intermediate CA, its certificate and those above it
	// up to (not including) the root: what a peer presents after its own.
	chain []*x509.Certificate
}

// Cert is an issued certificate with its key.
type Cert struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte // the certificate, PEM-encoded
	KeyPEM  []byte // the private key, PKCS #8, PEM-encoded
	// Chain are the intermediate CA certificates presented after Cert
	// (those of an Intermediate that issued it); none for a root's.
	Chain []*x509.Certificate
}

// Options shape an issued certificate.
type Options struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	// NotBefore and NotAfter default to an hour ago and a day ahead.
	NotBefore, NotAfter time.Time
	// RSA issues an RSA key instead of ECDSA P-256: of RSABits bits, 2048
	// unless set (a weak key, for tests of its refusal).
	RSA     bool
	RSABits int
	// Curve, when set, is the ECDSA key's curve instead of P-256 (P-224,
	// for tests of a weak key's refusal).
	Curve elliptic.Curve
	// KeyUsage, when set, replaces the key usage (digitalSignature, and
	// keyEncipherment for RSA).
	KeyUsage x509.KeyUsage
	// ExtKeyUsage, when set, replaces the extended key usage (serverAuth for Server, clientAuth for Client):
	// both, for a PACS's certificate that serves and calls with one certificate.
	ExtKeyUsage []x509.ExtKeyUsage
	// Serial, when set, is the serial number (default: 120 random bits).
	Serial *big.Int
	// OrganizationalUnits are added to the subject (a CA may put what it
	// likes there, of any length).
	OrganizationalUnits []string
}

// Long is Options for a certificate whose names TLS accepts but no record
// should copy whole: a serial number of 3,000 octets and a subject of some
// 9 KB, with characters JSON escapes (control characters, '<', quotes).
func Long(commonName string) Options {
	return Options{
		CommonName:          commonName,
		Serial:              new(big.Int).Lsh(big.NewInt(1), 8*3000-1),
		OrganizationalUnits: []string{strings.Repeat("<\"\x01é", 1500), strings.Repeat("unit ", 300)},
	}
}

// Expired is Options for a certificate that was valid through 2020 only, its dates as errors print them:
// "valid from 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z".
func Expired(commonName string) Options {
	return Options{CommonName: commonName, NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// ExpiredDates is how an error names Expired's dates.
const ExpiredDates = "is valid from 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z"

// NotYetValid is Options for a certificate valid from a day after now, for a day.
func NotYetValid(commonName string) Options {
	return Options{CommonName: commonName, NotBefore: time.Now().Add(24 * time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}
}

// OutOfDateClients writes a CA ("Site CA", dir/ca.pem) and two client certificates it issued, with their keys, into
// dir: expired (Expired("old")) and notYet (NotYetValid("early")).
func OutOfDateClients(t testing.TB, dir string) (caFile string, expired, notYet Files) {
	t.Helper()
	ca := NewCA(t, "Site CA")
	caFile = filepath.Join(dir, "ca.pem")
	WriteFile(t, caFile, ca.PEM)
	return caFile, ca.Client(t, Expired("old")).WriteFiles(t, dir, "expired"), ca.Client(t, NotYetValid("early")).WriteFiles(t, dir, "early")
}

// NewCA makes a self-signed CA named name, valid for ten years, as a real
// CA is for far longer than what it issues.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	return NewCAUntil(t, name, time.Now().AddDate(10, 0, 0))
}

// NewCAUntil makes a self-signed CA named name valid until notAfter.
func NewCAUntil(t testing.TB, name string, notAfter time.Time) *CA {
	t.Helper()
	return newCA(t, name, Options{NotAfter: notAfter}, nil)
}

// NewCAWith makes a self-signed CA named name with the key o asks for
// (RSA, RSABits, Curve: a weak one, for tests of its refusal), valid until
// o.NotAfter (default: ten years ahead). o's other fields are ignored.
func NewCAWith(t testing.TB, name string, o Options) *CA {
	t.Helper()
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().AddDate(10, 0, 0)
	}
	return newCA(t, name, o, nil)
}

// Intermediate issues a CA certificate named name under ca, valid as long
// as ca: the certificates it issues carry it (and ca's own chain) in
// Cert.Chain, as a site presents a chain.
func (ca *CA) Intermediate(t testing.TB, name string) *CA {
	t.Helper()
	return newCA(t, name, Options{NotAfter: ca.Cert.NotAfter}, ca)
}

// newCA makes a CA with o's key valid until o.NotAfter, signed by parent,
// or self-signed when parent is nil.
func newCA(t testing.TB, name string, o Options, parent *CA) *CA {
	t.Helper()
	key := newKey(t, o)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"dicom-ingest tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              o.NotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	issuer, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatalf("testpki: create CA: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse CA: %v", err)
	}
	ca := &CA{Cert: c, Key: key, PEM: pemBlock("CERTIFICATE", der)}
	if parent != nil {
		ca.chain = append([]*x509.Certificate{c}, parent.chain...)
	}
	return ca
}

// Server issues a TLS server certificate (for 127.0.0.1 and localhost unless
// o names other addresses).
func (ca *CA) Server(t testing.TB, o Options) *Cert {
	t.Helper()
	if o.CommonName == "" {
		o.CommonName = "localhost"
	}
	if o.DNSNames == nil && o.IPs == nil {
		o.DNSNames = []string{"localhost"}
		o.IPs = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	return ca.issue(t, o, x509.ExtKeyUsageServerAuth)
}

// Client issues a TLS client certificate.
func (ca *CA) Client(t testing.TB, o Options) *Cert {
	t.Helper()
	return ca.issue(t, o, x509.ExtKeyUsageClientAuth)
}

func (ca *CA) issue(t testing.TB, o Options, usage x509.ExtKeyUsage) *Cert {
	t.Helper()
	key := newKey(t, o)
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	ku := x509.KeyUsageDigitalSignature
	if o.RSA {
		ku |= x509.KeyUsageKeyEncipherment
	}
	if o.KeyUsage != 0 {
		ku = o.KeyUsage
	}
	if o.Serial == nil {
		o.Serial = serial(t)
	}
	eku := []x509.ExtKeyUsage{usage}
	if o.ExtKeyUsage != nil {
		eku = o.ExtKeyUsage
	}
	tmpl := &x509.Certificate{
		SerialNumber: o.Serial,
		Subject:      pkix.Name{CommonName: o.CommonName, Organization: []string{"dicom-ingest tests"}, OrganizationalUnit: o.OrganizationalUnits},
		DNSNames:     o.DNSNames,
		IPAddresses:  o.IPs,
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     ku,
		ExtKeyUsage:  eku,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatalf("testpki: issue %q: %v", o.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testpki: parse %q: %v", o.CommonName, err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testpki: marshal key: %v", err)
	}
	return &Cert{Cert: c, Key: key, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", pk), Chain: ca.chain}
}

// SignCSR issues a client certificate for a PEM certificate signing request,
// as the operator does for a site's request: the subject CN and DNS SANs as
// requested, valid for a day. It returns the certificate, PEM-encoded.
func (ca *CA) SignCSR(t testing.TB, csrPEM []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("testpki: not a PEM certificate request")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatalf("testpki: parse request: %v", err)
	}
	if err := req.CheckSignature(); err != nil {
		t.Fatalf("testpki: request signature: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      req.Subject,
		DNSNames:     req.DNSNames,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, req.PublicKey, ca.Key)
	if err != nil {
		t.Fatalf("testpki: sign request: %v", err)
	}
	return pemBlock("CERTIFICATE", der)
}

// CRL issues the CA's certificate revocation list, PEM-encoded, listing
// revoked and next due at nextUpdate.
func (ca *CA) CRL(t testing.TB, nextUpdate time.Time, revoked ...*Cert) []byte {
	t.Helper()
	return ca.CRLSignedWith(t, x509.UnknownSignatureAlgorithm, nextUpdate, revoked...)
}

// CRLSignedWith is CRL signed with alg (x509.UnknownSignatureAlgorithm:
// crypto/x509's choice for the CA's key), such as SHA-1, for tests of a
// weak list's refusal.
func (ca *CA) CRLSignedWith(t testing.TB, alg x509.SignatureAlgorithm, nextUpdate time.Time, revoked ...*Cert) []byte {
	t.Helper()
	thisUpdate := time.Now().Add(-time.Hour)
	if !nextUpdate.After(thisUpdate) { // a stale list, for tests of one
		thisUpdate = nextUpdate.Add(-time.Hour)
	}
	tmpl := &x509.RevocationList{Number: serial(t), ThisUpdate: thisUpdate, NextUpdate: nextUpdate, SignatureAlgorithm: alg}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.Cert.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatalf("testpki: create CRL: %v", err)
	}
	return pemBlock("X509 CRL", der)
}

// TLS is the certificate, followed by its Chain, as crypto/tls takes it.
func (c *Cert) TLS() tls.Certificate {
	der := [][]byte{c.Cert.Raw}
	for _, ic := range c.Chain {
		der = append(der, ic.Raw)
	}
	return tls.Certificate{Certificate: der, PrivateKey: c.Key, Leaf: c.Cert}
}

// ClientConfig is a TLS client's configuration that trusts ca for
// "localhost" and presents cert whatever CAs the server says it accepts, as a
// misconfigured or hostile peer would (nil: no client certificate).
func (ca *CA) ClientConfig(cert *Cert) *tls.Config {
	c := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
	if cert != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			tc := cert.TLS()
			return &tc, nil
		}
	}
	return c
}

// Pool is a certificate pool holding the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Files are where WriteFiles put a certificate and its key.
type Files struct{ Cert, Key string }

// WriteFiles writes the certificate and key as dir/name.crt and dir/name.key
// (the key readable by its owner only).
func (c *Cert) WriteFiles(t testing.TB, dir, name string) Files {
	t.Helper()
	f := Files{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
	WriteFile(t, f.Cert, c.CertPEM)
	WriteFile(t, f.Key, c.KeyPEM)
	return f
}

// WriteFile writes PEM data to path, readable by its owner only, replacing
// the file at once (a rename) so a watcher never sees half of it.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// newKey is the key o asks for: an ECDSA key on o.Curve (default P-256),
// or with o.RSA an RSA key of o.RSABits bits (0: 2048).
func newKey(t testing.TB, o Options) crypto.Signer {
	t.Helper()
	var k crypto.Signer
	var err error
	switch {
	case o.RSA:
		bits := o.RSABits
		if bits == 0 {
			bits = 2048
		}
		k, err = rsa.GenerateKey(rand.Reader, bits)
	case o.Curve != nil:
		k, err = ecdsa.GenerateKey(o.Curve, rand.Reader)
	default:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatalf("testpki: generate key: %v", err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatalf("testpki: serial: %v", err)
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
