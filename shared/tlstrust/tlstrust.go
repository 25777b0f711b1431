// Package tlstrust reads what TLS client authentication trusts and refuses:
// CA certificate bundles and their certificate revocation lists (PEM), read
// strictly, so that a bundle or list that holds less than meant is an error
// rather than a site locked out (or a revoked one let in) without a word.
// The SCP's TLS configuration and the CDK app's config checks both use it.
package tlstrust

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"
)

// ParseCAs reads every certificate of a PEM bundle; anything else in it, or
// no certificate at all, is an error (a bundle that silently trusts fewer
// CAs than meant locks sites out without a word), and so is a certificate
// whose key CheckKey refuses: a CA of a weak key signs certificates anyone
// who factors or breaks it can mint.
func ParseCAs(b []byte) (*x509.CertPool, []*x509.Certificate, error) {
	pool := x509.NewCertPool()
	var cas []*x509.Certificate
	err := EachPEM(b, "CERTIFICATE", func(der []byte) error {
		c, err := x509.ParseCertificate(der)
		if err == nil {
			err = CheckKey(c)
		}
		if err != nil {
			return fmt.Errorf("certificate %d: %w", len(cas)+1, err)
		}
		pool.AddCert(c)
		cas = append(cas, c)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(cas) == 0 {
		return nil, nil, errors.New("no certificate in it")
	}
	return pool, cas, nil
}

// EachPEM calls f with the bytes of every PEM block of type typ in b; a block
// of another type, or text that is not PEM after the last block, is an error.
func EachPEM(b []byte, typ string, f func(der []byte) error) error {
	blocks := 0
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		blocks++
		if block.Type != typ {
			return fmt.Errorf("a %q block where %q blocks belong", block.Type, typ)
		}
		if err := f(block.Bytes); err != nil {
			return err
		}
	}
	switch {
	case len(bytes.TrimSpace(b)) == 0:
		return nil
	case blocks == 0:
		return errors.New("no PEM block in it")
	}
	return errors.New("text after the last PEM block is not PEM")
}

// Revocations are the serial numbers the client CRLs list, by the raw
// subject of the CA that issued them.
type Revocations map[string]map[string]bool

// CRL is what a certificate revocation list says of itself: the CA that
// issued it and when the next one is due.
type CRL struct {
	Issuer string // the issuing CA's subject, for messages
	// NextUpdate is zero when the list names none (RFC 5280 requires it;
	// a list without one is never stale).
	NextUpdate time.Time
}

// Stale reports whether the list is past its next update at now. This is
// the one rule for a stale list: the CDK app's config check refuses such a
// list, the SCP keeps applying it (better a stale list than none) and says
// so, at load and when it goes stale while in use.
func (c CRL) Stale(now time.Time) bool { return !c.NextUpdate.IsZero() && now.After(c.NextUpdate) }

// ParseCRLs reads PEM X.509 CRLs, each of which must be signed by one of
// cas, and returns the serials they list and the lists themselves, in the
// order of b (for their issuers and next updates).
func ParseCRLs(b []byte, cas []*x509.Certificate) (Revocations, []CRL, error) {
	r := Revocations{}
	var lists []CRL
	err := EachPEM(b, "X509 CRL", func(der []byte) error {
		n := len(lists) + 1
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			return fmt.Errorf("CRL %d: %w", n, err)
		}
		if weakSignature(crl.SignatureAlgorithm) {
			// Before the signature is checked: crypto/x509 verifies a SHA-1
			// signature, and refuses an MD5 one as "not signed" by the CA.
			return fmt.Errorf("CRL %d (issuer %s) is signed with %s, a hash BCP 195 does not allow: have its CA sign it with SHA-256 or stronger",
				n, crl.Issuer, crl.SignatureAlgorithm)
		}
		var signer *x509.Certificate
		for _, ca := range cas {
			if bytes.Equal(ca.RawSubject, crl.RawIssuer) && crl.CheckSignatureFrom(ca) == nil {
				signer = ca
				break
			}
		}
		if signer == nil {
			return fmt.Errorf("CRL %d (issuer %s) is not signed by any of the given CA certificates", n, crl.Issuer)
		}
		lists = append(lists, CRL{Issuer: crl.Issuer.String(), NextUpdate: crl.NextUpdate})
		set := r[string(crl.RawIssuer)]
		if set == nil {
			set = map[string]bool{}
			r[string(crl.RawIssuer)] = set
		}
		for _, e := range crl.RevokedCertificateEntries {
			set[e.SerialNumber.String()] = true
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(lists) == 0 {
		return nil, nil, errors.New("no CRL in it")
	}
	return r, lists, nil
}

// weakSignature reports whether alg hashes with MD2, MD5 or SHA-1, whose
// collisions let a forged list pass for the CA's (RFC 9325 4.3, RFC 6151,
// RFC 9155).
func weakSignature(alg x509.SignatureAlgorithm) bool {
	switch alg {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1:
		return true
	}
	return false
}

// Len counts the revoked serial numbers.
func (r Revocations) Len() int {
	n := 0
	for _, set := range r {
		n += len(set)
	}
	return n
}

// MinRSABits is the smallest RSA key a certificate may have: BCP 195
// (RFC 9325 4.5) asks for 2048 bits at least, and Go's TLS takes 1024.
const MinRSABits = 2048

// MinECBits is the smallest elliptic curve an ECDSA key may be on: P-256
// (RFC 9325 4.5 asks for the security of RSA 2048, about 112 bits, at
// least; P-224 is the only smaller curve crypto/x509 parses).
const MinECBits = 256

// CheckKey is the one rule for the key of every certificate TLS relies on
// here: the SCP's server certificate, a client's certificate and each CA
// of a client CA bundle, in the SCP and in the CDK app's config checks,
// and the audit feed's client certificate (auditfeed.TLSConfig). An
// RSA key of at least MinRSABits, an ECDSA key on a curve of at least
// MinECBits, or Ed25519 passes; anything else (a shorter RSA key, P-224,
// DSA) is an error naming the certificate within bounds (NameOf).
func CheckKey(c *x509.Certificate) error {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < MinRSABits {
			return fmt.Errorf("certificate %s has an RSA key of %d bits, fewer than %d", NameOf(c), n, MinRSABits)
		}
	case *ecdsa.PublicKey:
		if n := k.Params().BitSize; n < MinECBits {
			return fmt.Errorf("certificate %s has an ECDSA key on %s, a curve of %d bits, fewer than %d (P-256)", NameOf(c), k.Params().Name, n, MinECBits)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("certificate %s has a %s key: only RSA, ECDSA and Ed25519 keys are accepted", NameOf(c), c.PublicKeyAlgorithm)
	}
	return nil
}

// CheckClientLeaf fails a handshake whose client certificate is not one a
// client may authenticate with, which Go's verification leaves to its
// caller: a CA certificate (basic constraints), one whose key usage, when
// it has one, does not allow signing (RFC 8446 4.4.2.3, RFC 5280 4.2.1.3),
// one whose key CheckKey refuses, and one not issued by a CA of the
// bundle itself: the site CA signs the sites' certificates, so a verified
// chain holds the certificate and a CA of the bundle, nothing between (a
// site certificate issued with cA=TRUE would otherwise issue certificates
// of other sites' names, accepted as theirs). A certificate the site CA
// issued with cA=TRUE, or the CA itself, was accepted, and so were the
// other two. Its error names the certificate within bounds (NameOf), as
// the refusals below do.
//
// Every refusal is an ErrNotClientCertificate (errors.Is), which its text
// does not repeat.
func CheckClientLeaf(cs tls.ConnectionState) error {
	if err := checkClientLeaf(cs); err != nil {
		return notClientCertificate{err}
	}
	return nil
}

// ErrNotClientCertificate is in every refusal of CheckClientLeaf: the
// certificate is not one a client may authenticate with (a CA's, one that
// cannot sign, of a weak key, issued below the bundle's CAs). A failed
// handshake is counted under its reason by it (dicomnet.HandshakeFailureReason).
var ErrNotClientCertificate = errors.New("tlstrust: not a certificate a client may authenticate with")

// notClientCertificate is a refusal of CheckClientLeaf: its text, and
// ErrNotClientCertificate for errors.Is.
type notClientCertificate struct{ err error }

func (e notClientCertificate) Error() string   { return e.err.Error() }
func (e notClientCertificate) Unwrap() []error { return []error{e.err, ErrNotClientCertificate} }

func checkClientLeaf(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil // none is the handshake's own refusal
	}
	leaf := cs.PeerCertificates[0]
	if err := CheckKey(leaf); err != nil {
		return fmt.Errorf("tlstrust: %w", err)
	}
	switch {
	case leaf.IsCA:
		return fmt.Errorf("tlstrust: certificate %s is a CA certificate, not a client's", NameOf(leaf))
	case leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return fmt.Errorf("tlstrust: certificate %s: its key usage does not allow signing (digitalSignature)", NameOf(leaf))
	}
	if len(cs.VerifiedChains) > 0 {
		shortest := slices.MinFunc(cs.VerifiedChains, func(a, b []*x509.Certificate) int { return len(a) - len(b) })
		if len(shortest) > 2 {
			return fmt.Errorf("tlstrust: certificate %s is not issued by a CA of the client CA bundle: %d CA certificates stand between them",
				NameOf(leaf), len(shortest)-2)
		}
	}
	return nil
}

// ErrRevoked is in Check's refusal (errors.Is): a certificate of the
// client's chain is listed by its CA's CRL.
var ErrRevoked = errors.New("revoked by its CA's CRL")

// Check fails a handshake whose verified client chain holds a certificate a
// CRL lists: a tls.Config's VerifyConnection, which runs on every handshake,
// resumed ones included. Its refusal is an ErrRevoked.
func (r Revocations) Check(cs tls.ConnectionState) error {
	for _, chain := range cs.VerifiedChains {
		for _, c := range chain {
			if r[string(c.RawIssuer)][c.SerialNumber.String()] {
				return fmt.Errorf("tlstrust: certificate %s is %w", NameOf(c), ErrRevoked)
			}
		}
	}
	return nil
}

// SerialText is a certificate serial number in upper-case hexadecimal with
// an even number of digits, as `openssl x509 -noout -serial` prints it ("" for
// none; a negative one, which RFC 5280 forbids, keeps its sign): how the
// audit trail, the log and the errors all name a serial number.
func SerialText(n *big.Int) string {
	if n == nil {
		return ""
	}
	s := fmt.Sprintf("%X", new(big.Int).Abs(n))
	if len(s)%2 == 1 {
		s = "0" + s
	}
	if n.Sign() < 0 {
		s = "-" + s
	}
	return s
}
