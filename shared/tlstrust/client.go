package tlstrust

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// CipherSuites are the TLS 1.2 cipher suites offered and accepted here, as server (scp-task's DICOM TLS
// listener) and as client (ClientConfig: the audit feed, Storage Commitment reports): those BCP 195 (RFC 9325
// §4.2) recommends that Go implements, ECDHE with AES-GCM. DCMTK's "non-downgrading BCP 195" profile (+py, its
// default) and its "BCP 195" profile (+px) both offer them. TLS 1.3's suites are all AEAD and are not
// configurable in Go.
var CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
}

// ErrNoClientAuth is in ClientCertificate's refusal (errors.Is) of a certificate whose extended key usage does
// not allow TLS client authentication: a server certificate (serverAuth only) offered as a client's, which a
// peer that checks the purpose (OpenSSL's, DCMTK's, Go's) refuses in the handshake.
var ErrNoClientAuth = errors.New("its extended key usage does not allow TLS client authentication (clientAuth)")

// ErrNotValidNow is in the refusal (errors.Is) of a certificate of ours whose validity does not hold now: expired,
// or not yet valid. Every peer refuses it in every handshake; CheckValidity's error names it and its dates.
var ErrNotValidNow = errors.New("not valid now")

// NotBeforeSkew is the allowance CheckValidity gives a certificate's NotBefore: a certificate issued a moment ago
// by a CA whose clock runs ahead of ours (by up to a minute: hosts kept by NTP, or Amazon Time Sync, are within
// milliseconds; one whose clock drifted further is off by more than an allowance should hide) is presented rather
// than held back. Peers allow none (OpenSSL, and so DCMTK, and Go check NotBefore against their clock as it is), so
// the allowance stays small: a certificate presented early is refused by a peer whose clock runs behind its CA's,
// in that handshake only, and tried again. NotAfter has none: an expired certificate is refused by every peer.
const NotBeforeSkew = time.Minute

// CheckValidity is the one rule of a certificate of ours that must be valid when presented (our client
// certificate; the listener's server certificate): now within its NotBefore (less NotBeforeSkew) and NotAfter,
// else an error wrapping ErrNotValidNow that names the certificate (NameOf) and its validity dates.
func CheckValidity(leaf *x509.Certificate, now time.Time) error {
	if now.Add(NotBeforeSkew).Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("certificate %s is valid from %s to %s, %w", NameOf(leaf), leaf.NotBefore.UTC().Format(time.RFC3339),
			leaf.NotAfter.UTC().Format(time.RFC3339), ErrNotValidNow)
	}
	return nil
}

// ClientCertificate reads our client certificate and its key (PEM) by the rule of every certificate TLS relies
// on here: a key CheckKey allows, an extended key usage that allows client authentication (clientAuth, or
// anyExtendedKeyUsage, or none at all: RFC 5280 4.2.1.12), and valid now (CheckValidity: an expired certificate,
// or one not yet valid, would be refused by the peer in every handshake).
//
// The dates are checked last, and a certificate refused for them alone (ErrNotValidNow) is returned with the
// refusal: it is valid at other times (not yet, or until its renewal comes late), and a caller that would rather
// warn than refuse (the client certificates of secondary duties, which must not stop the ingest) presents it
// through ClientConfig, which checks the dates again at each handshake. Every other refusal returns none: such a
// certificate never becomes valid.
func ClientCertificate(certPEM, keyPEM []byte) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := CheckKey(cert.Leaf); err != nil {
		return tls.Certificate{}, err
	}
	if eku := cert.Leaf.ExtKeyUsage; len(eku) > 0 && !slices.Contains(eku, x509.ExtKeyUsageClientAuth) && !slices.Contains(eku, x509.ExtKeyUsageAny) {
		return tls.Certificate{}, fmt.Errorf("certificate %s: %w", NameOf(cert.Leaf), ErrNoClientAuth)
	}
	if err := CheckValidity(cert.Leaf, time.Now()); err != nil {
		return cert, err
	}
	return cert, nil
}

// ClientConfig is the one rule of every TLS client here (BCP 195, as the server's): TLS 1.2 or 1.3, the
// CipherSuites, the server's certificate chaining to roots and naming serverName (a DNS name, or an IP address
// checked against the certificate's IP SANs), and cert, when not nil, offered as ours. Go sends a client
// certificate only when the server asks for one; ours is then checked (CheckValidity) at that handshake, so that
// one that expired while in use, or was not yet valid when read, fails the handshake (its error an ErrNotValidNow
// naming the certificate and its dates) rather than reach a peer that refuses it, and one that became valid since
// is sent without a new read. Certificates holds it too, for its callers to name it.
//
// The handshake fails rather than send no certificate (as TLS does for a client with none suitable, and as Go does
// here when the server's CAs exclude ours): under TLS 1.3 a server that requires one refuses it only after our
// handshake ended, and a syslog collector may take the audit feed's batch and drop it silently then
// (auditfeed.Collector.Send confirms no more than TCP can); failing here sends nothing and names the dates. A
// server that asks but would take none loses the delivery until the certificate is renewed, counted as every
// delivery our certificate fails.
func ClientConfig(serverName string, roots *x509.CertPool, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13,
		CipherSuites: CipherSuites}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
		cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cri.SupportsCertificate(cert) != nil {
				// Go's choice from Certificates: none when the server's CAs or signature schemes exclude ours.
				return new(tls.Certificate), nil
			}
			if leaf := cert.Leaf; leaf != nil {
				if err := CheckValidity(leaf, time.Now()); err != nil {
					return nil, fmt.Errorf("tlstrust: our client certificate, which the server asked for: %w", err)
				}
			}
			return cert, nil
		}
	}
	return cfg
}
