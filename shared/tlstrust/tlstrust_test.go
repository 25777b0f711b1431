package tlstrust

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

func TestParseCAs(t *testing.T) {
	a, b := testpki.NewCA(t, "A"), testpki.NewCA(t, "B")
	leaf := a.Client(t, testpki.Options{CommonName: "x"})
	// BCP 195 (RFC 9325 4.5), by CheckKey's rule for every certificate:
	// a CA's key as strong as a site's at least. Both weak CAs were
	// accepted.
	rsa2048, rsa1024 := testpki.NewCAWith(t, "RSA 2048", testpki.Options{RSA: true}), testpki.NewCAWith(t, "RSA 1024", testpki.Options{RSA: true, RSABits: 1024})
	p224 := testpki.NewCAWith(t, "P-224", testpki.Options{Curve: elliptic.P224()})
	tests := []struct {
		name string
		in   string
		n    int
		want string
	}{
		{"two CAs", string(a.PEM) + string(b.PEM), 2, ""},
		{"empty", "", 0, "no certificate"},
		{"a key", string(a.PEM) + string(leaf.KeyPEM), 0, `a "PRIVATE KEY" block`},
		{"trailing text", string(a.PEM) + "junk", 0, "not PEM"},
		{"bad DER", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", 0, "certificate 1"},
		{"an RSA 2048 CA", string(a.PEM) + string(rsa2048.PEM), 2, ""},
		{"an RSA 1024 CA", string(a.PEM) + string(rsa1024.PEM), 0, `certificate 2: certificate "CN=RSA 1024,O=dicom-ingest tests" (serial `},
		{"an RSA 1024 CA, its key", string(rsa1024.PEM), 0, "has an RSA key of 1024 bits, fewer than 2048"},
		{"a P-224 CA", string(p224.PEM) + string(a.PEM), 0, "certificate 1: certificate \"CN=P-224,O=dicom-ingest tests\""},
		{"a P-224 CA, its key", string(p224.PEM), 0, "has an ECDSA key on P-224, a curve of 224 bits, fewer than 256 (P-256)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, cas, err := ParseCAs([]byte(tt.in))
			if tt.want == "" {
				if err != nil || len(cas) != tt.n {
					t.Fatalf("ParseCAs = %d, %v", len(cas), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseCAs error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestCRLs(t *testing.T) {
	a, b := testpki.NewCA(t, "A"), testpki.NewCA(t, "B")
	gone, kept := a.Client(t, testpki.Options{CommonName: "gone"}), a.Client(t, testpki.Options{CommonName: "kept"})
	// Same serial under another CA: not revoked.
	now := time.Now()
	r, lists, err := ParseCRLs(append(a.CRL(t, now.Add(time.Hour), gone), b.CRL(t, now.Add(-time.Minute))...), []*x509.Certificate{a.Cert, b.Cert})
	if err != nil {
		t.Fatal(err)
	}
	if r.Len() != 1 || len(lists) != 2 || lists[0].Issuer != "CN=A,O=dicom-ingest tests" || lists[1].Issuer != "CN=B,O=dicom-ingest tests" {
		t.Errorf("Len %d, lists %+v", r.Len(), lists)
	}
	if lists[0].Stale(now) || !lists[1].Stale(now) {
		t.Errorf("stale: A %v (due in an hour), B %v (due a minute ago)", lists[0].Stale(now), lists[1].Stale(now))
	}
	state := func(c *testpki.Cert, ca *testpki.CA) tls.ConnectionState {
		return tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c.Cert, ca.Cert}}}
	}
	// The serial in hex, as the audit record and the security alert name it.
	if err := r.Check(state(gone, a)); err == nil || !strings.Contains(err.Error(), `"CN=gone,O=dicom-ingest tests"`) ||
		!strings.Contains(err.Error(), "(serial "+SerialText(gone.Cert.SerialNumber)+", SHA-256 ") ||
		!strings.HasSuffix(err.Error(), " is revoked by its CA's CRL") || !errors.Is(err, ErrRevoked) || errors.Is(err, ErrNotClientCertificate) {
		t.Errorf("revoked: %v, want ErrRevoked in it (the reason a failed handshake is counted under)", err)
	}
	if err := r.Check(state(kept, a)); err != nil {
		t.Errorf("not revoked: %v", err)
	}
	if _, _, err := ParseCRLs(b.CRL(t, now.Add(time.Hour)), []*x509.Certificate{a.Cert}); err == nil || !strings.Contains(err.Error(), "not signed by any of the given CA certificates") {
		t.Errorf("foreign CRL: %v", err)
	}
	if _, _, err := ParseCRLs(nil, []*x509.Certificate{a.Cert}); err == nil {
		t.Error("an empty CRL file passed")
	}
}

// TestCRLSignatureHash: a list signed with a hash BCP 195 does not allow
// (SHA-1, MD5) is refused as a list not signed by its CA is, whatever its
// signature; SHA-1 lists were accepted (crypto/x509 verifies SHA-1), an
// MD5 one refused as "not signed by any of the given CA certificates".
func TestCRLSignatureHash(t *testing.T) {
	ec, rsaCA := testpki.NewCA(t, "EC"), testpki.NewCAWith(t, "RSA", testpki.Options{RSA: true})
	next := time.Now().Add(time.Hour)
	tests := []struct {
		name    string
		ca      *testpki.CA
		crl     []byte
		refusal string // "" when accepted
	}{
		{"ECDSA with SHA-256", ec, ec.CRL(t, next), ""},
		{"ECDSA with SHA-384", ec, ec.CRLSignedWith(t, x509.ECDSAWithSHA384, next), ""},
		{"RSA with SHA-256", rsaCA, rsaCA.CRL(t, next), ""},
		{"RSA-PSS with SHA-256", rsaCA, rsaCA.CRLSignedWith(t, x509.SHA256WithRSAPSS, next), ""},
		{"ECDSA with SHA-1", ec, ec.CRLSignedWith(t, x509.ECDSAWithSHA1, next), "CRL 1 (issuer CN=EC,O=dicom-ingest tests) is signed with ECDSA-SHA1"},
		{"RSA with SHA-1", rsaCA, rsaCA.CRLSignedWith(t, x509.SHA1WithRSA, next), "is signed with SHA1-RSA, a hash BCP 195 does not allow"},
		// crypto/x509 signs no list with MD5: one relabelled, its
		// signature left as it was, is refused for its hash first.
		{"RSA with MD5", rsaCA, relabel(t, rsaCA.CRL(t, next), asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 4}), "is signed with MD5-RSA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The second list: what is refused is named by its place.
			crl := append(tt.ca.CRL(t, next), tt.crl...)
			_, _, err := ParseCRLs(crl, []*x509.Certificate{tt.ca.Cert})
			switch {
			case tt.refusal == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.refusal != "" && (err == nil || !strings.Contains(err.Error(), strings.Replace(tt.refusal, "CRL 1", "CRL 2", 1))):
				t.Errorf("ParseCRLs = %v, want a refusal saying %q", err, tt.refusal)
			}
		})
	}
}

// relabel is the PEM CRL crl with its signature algorithm (inner and
// outer) said to be alg, its signature unchanged.
func relabel(t *testing.T, crl []byte, alg asn1.ObjectIdentifier) []byte {
	t.Helper()
	block, _ := pem.Decode(crl)
	var l pkix.CertificateList
	if rest, err := asn1.Unmarshal(block.Bytes, &l); err != nil || len(rest) > 0 {
		t.Fatalf("relabel: %v", err)
	}
	l.TBSCertList.Raw = nil
	l.TBSCertList.Signature.Algorithm, l.SignatureAlgorithm.Algorithm = alg, alg
	der, err := asn1.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// TestCRLStale: a list is stale once its next update has passed, not at it; one without a next update never is.
func TestCRLStale(t *testing.T) {
	due := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		name  string
		crl   CRL
		now   time.Time
		stale bool
	}{
		{"before", CRL{NextUpdate: due}, due.Add(-time.Second), false},
		{"at", CRL{NextUpdate: due}, due, false},
		{"after", CRL{NextUpdate: due}, due.Add(time.Second), true},
		{"no next update", CRL{}, due, false},
	} {
		if got := tt.crl.Stale(tt.now); got != tt.stale {
			t.Errorf("%s: Stale %v, want %v", tt.name, got, tt.stale)
		}
	}
}

// FuzzParse: what an operator's file may hold never panics the parsers.
func FuzzParse(f *testing.F) {
	ca := testpki.NewCA(f, "F")
	f.Add(ca.PEM)
	f.Add(ca.CRL(f, time.Now().Add(time.Hour)))
	f.Add([]byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, cas, err := ParseCAs(b); err == nil && len(cas) == 0 {
			t.Fatal("a bundle without certificates parsed")
		}
		r, _, err := ParseCRLs(b, []*x509.Certificate{ca.Cert})
		if err == nil && r == nil {
			t.Fatal("nil revocations without an error")
		}
	})
}

// TestCheckClientLeaf: a CA certificate, or one whose key usage does not
// allow signing, is no client certificate; Go's verification accepted both.
func TestCheckClientLeaf(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		leaf x509.Certificate
		ok   bool
	}{
		{"client", x509.Certificate{KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}, true},
		{"no key usage", x509.Certificate{}, true},
		{"CA", x509.Certificate{IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}, false},
		{"cannot sign", x509.Certificate{KeyUsage: x509.KeyUsageKeyEncipherment}, false},
	} {
		leaf := tt.leaf
		leaf.PublicKey = key.Public() // a key CheckKey passes
		err := CheckClientLeaf(tls.ConnectionState{PeerCertificates: []*x509.Certificate{&leaf}})
		if (err == nil) != tt.ok {
			t.Errorf("%s: %v, want ok %v", tt.name, err, tt.ok)
		}
		// Each refusal is one of ErrNotClientCertificate (the reason a failed handshake is counted under), its
		// text its own.
		if err != nil && (!errors.Is(err, ErrNotClientCertificate) || errors.Is(err, ErrRevoked) || strings.Contains(err.Error(), ErrNotClientCertificate.Error())) {
			t.Errorf("%s: %q, want ErrNotClientCertificate in it, not in its text", tt.name, err)
		}
	}
}

// TestSerialText: the serial number as `openssl x509 -noout -serial`
// prints it, upper-case hexadecimal in whole bytes.
func TestSerialText(t *testing.T) {
	for _, tt := range []struct {
		serial *big.Int
		want   string
	}{
		{big.NewInt(1), "01"},
		{big.NewInt(0xabc), "0ABC"},
		{new(big.Int).SetBytes([]byte{0x7f, 0x00, 0x10}), "7F0010"},
		{big.NewInt(-0x1234), "-1234"},
		{nil, ""},
	} {
		if got := SerialText(tt.serial); got != tt.want {
			t.Errorf("serial %v: %q, want %q", tt.serial, got, tt.want)
		}
	}
}

// TestRefusalsNameWithinBounds: a refusal names the certificate as the
// audit trail does (Name: its subject cut to MaxNameJSON, its serial to
// MaxSerial, and the SHA-256 of the whole certificate), so a certificate
// whose subject and serial are as long as TLS lets a client send (the
// peer's own making) gives an error of a bounded size, which the log line
// and the refused association's audit record quote. Both refusals quoted a
// subject of some 9 KB and, the CRL's, a serial of 3,000 octets whole.
func TestRefusalsNameWithinBounds(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	long := testpki.Long("pacs.site-a.example")
	long.RSA, long.KeyUsage = true, x509.KeyUsageKeyEncipherment
	cannotSign := ca.Client(t, long)
	revoked := ca.Client(t, testpki.Long("pacs.stolen.example"))
	r, _, err := ParseCRLs(ca.CRL(t, time.Now().Add(time.Hour), revoked), []*x509.Certificate{ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cert *x509.Certificate
		err  error
	}{
		{"key usage", cannotSign.Cert, CheckClientLeaf(tls.ConnectionState{PeerCertificates: []*x509.Certificate{cannotSign.Cert}})},
		{"revoked", revoked.Cert, r.Check(tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{revoked.Cert, ca.Cert}}})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("not refused")
			}
			msg, n := tt.err.Error(), NameOf(tt.cert)
			// The subject, quoted, with the serial and the fingerprint: 2 KiB is ample.
			if len(msg) > 2048 {
				t.Errorf("error of %d bytes: %.200q…", len(msg), msg)
			}
			for _, want := range []string{fmt.Sprintf("%q", n.Subject), n.Serial, n.SHA256} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %.300q… does not name the certificate by %.100q", msg, want)
				}
			}
		})
	}
}

// TestBoundCutsBeforeAnEscape: a name cut to its bound ends between RFC
// 4514 escapes, never after the backslash of one (which would escape the
// Cut that follows, or leave a lone backslash), at every limit, and fits
// the limit. A cut between characters fell inside '\,' as often as not.
func TestBoundCutsBeforeAnEscape(t *testing.T) {
	for _, s := range []string{
		`O=a\,b\,c\+d\\e\;f\"g\<h\>i,CN=\#j\ `,
		strings.Repeat(`\,`, 40) + "é" + strings.Repeat(`\\`, 40),
	} {
		for limit := 1; limit <= jsonLen(s); limit++ {
			got := bound(s, limit)
			cut, ok := strings.CutSuffix(got, Cut)
			if !ok && got != s {
				t.Fatalf("limit %d: %q is neither %q nor cut", limit, got, s)
			}
			if !strings.HasPrefix(s, cut) || jsonLen(got) > limit && got != Cut {
				t.Errorf("limit %d: %q is not a prefix of %q within the limit", limit, got, s)
			}
			if trailing := len(cut) - len(strings.TrimRight(cut, `\`)); trailing%2 != 0 {
				t.Errorf("limit %d: %q ends inside an escape", limit, got)
			}
		}
	}
	for k := range 3 { // "O=" and k bytes before the commas: one of 3 cuts falls after a backslash
		leaf := &x509.Certificate{Raw: []byte{1}, SerialNumber: big.NewInt(1)}
		leaf.Subject.Organization = []string{strings.Repeat("x", k) + strings.Repeat(",", MaxNameJSON)}
		if n := NameOf(leaf); strings.HasSuffix(n.Subject, `\`+Cut) {
			t.Errorf("subject %q ends in a lone backslash", n.Subject[len(n.Subject)-20:])
		}
	}
}

// TestCheckClientLeafKeysAndChains holds the key and chain rules of
// CheckClientLeaf over certificates Go's verification accepts, verified as
// a handshake does (the bundle as roots, the chain the client presents as
// intermediates): a key other than RSA is never held to MinRSABits; a
// certificate is accepted when a CA of the bundle issued it, whatever else
// the bundle holds (its root too, or the CA cross-signed by another) and
// the client presents, and refused when a CA certificate stands between
// it and every CA of the bundle.
func TestCheckClientLeafKeysAndChains(t *testing.T) {
	root := testpki.NewCA(t, "Root CA")
	issuing := root.Intermediate(t, "Issuing CA")
	other := testpki.NewCA(t, "Other root CA")
	// crossSigned is issuing's certificate again, signed by other: the
	// same subject and key, another issuer.
	crossDER, err := x509.CreateCertificate(rand.Reader, issuing.Cert, other.Cert, issuing.Key.Public(), other.Key)
	if err != nil {
		t.Fatal(err)
	}
	crossSigned, err := x509.ParseCertificate(crossDER)
	if err != nil {
		t.Fatal(err)
	}
	site := testpki.Options{CommonName: "pacs.site-a.example"}
	byIssuing := issuing.Client(t, site)
	ed := ed25519Client(t, root)
	tests := []struct {
		name      string
		leaf      *x509.Certificate
		presented []*x509.Certificate // after the leaf
		bundle    []*x509.Certificate
		refusal   string // "" when accepted
	}{
		{"ECDSA P-256", root.Client(t, site).Cert, nil, []*x509.Certificate{root.Cert}, ""},
		{"Ed25519", ed, nil, []*x509.Certificate{root.Cert}, ""},
		{"RSA 2048", root.Client(t, testpki.Options{CommonName: site.CommonName, RSA: true}).Cert, nil, []*x509.Certificate{root.Cert}, ""},
		{"RSA 1024", root.Client(t, testpki.Options{CommonName: site.CommonName, RSA: true, RSABits: 1024}).Cert, nil,
			[]*x509.Certificate{root.Cert}, "RSA key of 1024 bits"},
		{"ECDSA P-224", root.Client(t, testpki.Options{CommonName: site.CommonName, Curve: elliptic.P224()}).Cert, nil,
			[]*x509.Certificate{root.Cert}, "ECDSA key on P-224"},
		{"the issuing CA alone in the bundle", byIssuing.Cert, byIssuing.Chain, []*x509.Certificate{issuing.Cert}, ""},
		{"the issuing CA and its root in the bundle", byIssuing.Cert, byIssuing.Chain, []*x509.Certificate{root.Cert, issuing.Cert}, ""},
		{"the root alone in the bundle", byIssuing.Cert, byIssuing.Chain, []*x509.Certificate{root.Cert}, "1 CA certificates stand between them"},
		{"cross-signed, its issuer in the bundle", byIssuing.Cert, []*x509.Certificate{crossSigned}, []*x509.Certificate{other.Cert, issuing.Cert}, ""},
		{"cross-signed, the other root alone in the bundle", byIssuing.Cert, []*x509.Certificate{crossSigned}, []*x509.Certificate{other.Cert},
			"not issued by a CA of the client CA bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			for _, c := range tt.bundle {
				roots.AddCert(c)
			}
			for _, c := range tt.presented {
				inter.AddCert(c)
			}
			chains, err := tt.leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			if err != nil {
				t.Fatalf("Go's verification refused it: %v", err)
			}
			err = CheckClientLeaf(tls.ConnectionState{PeerCertificates: append([]*x509.Certificate{tt.leaf}, tt.presented...), VerifiedChains: chains})
			switch {
			case tt.refusal == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.refusal != "" && (err == nil || !strings.Contains(err.Error(), tt.refusal) || !errors.Is(err, ErrNotClientCertificate)):
				t.Errorf("CheckClientLeaf = %v, want a refusal saying %q, of ErrNotClientCertificate", err, tt.refusal)
			}
		})
	}
}

// ed25519Client is a client certificate of an Ed25519 key that ca issued
// (testpki's are ECDSA or RSA).
func ed25519Client(t *testing.T, ca *testpki.CA) *x509.Certificate {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "pacs.site-a.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
