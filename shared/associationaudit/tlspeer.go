package associationaudit

import (
	"crypto/x509"

	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// Bounds of what a TLSPeer says of a certificate in words: tlstrust's
// (NameOf), the one rule by which the trail, the log and the TLS refusals
// name a certificate.
const (
	MaxNameJSON = tlstrust.MaxNameJSON
	MaxSerial   = tlstrust.MaxSerial
)

// Cut is what ends a subject, issuer or serial number cut to its bound.
const Cut = tlstrust.Cut

// CertificatePeer names a client certificate for the audit trail and the
// log: its subject and issuer as RFC 4514 strings, its serial number as
// OpenSSL prints it (tlstrust.SerialText), each cut to its bound
// (MaxNameJSON, MaxSerial; ending in Cut), the SHA-256 fingerprint of its
// DER encoding (tlstrust.NameOf, the rule underneath, by which the TLS
// refusals' errors name it too), and the certificate name the allowlist
// bound it to ("" when the calling AE title is not bound to one, or the
// certificate was refused). A nil certificate gives nil. The audit
// writer's records, the staged store's duplicate records and the log name
// a certificate by it.
func CertificatePeer(c *x509.Certificate, certificateName string) *TLSPeer {
	if c == nil {
		return nil
	}
	n := tlstrust.NameOf(c)
	return NamedPeer(&n, certificateName)
}

// NamedPeer is CertificatePeer of the certificate n names (nil gives nil):
// for a name made once and used many times, an association's
// (dicomnet.AssociationInfo.PeerCertificateName).
func NamedPeer(n *tlstrust.Name, certificateName string) *TLSPeer {
	if n == nil {
		return nil
	}
	return &TLSPeer{Subject: n.Subject, Issuer: n.Issuer, Serial: n.Serial, SHA256: n.SHA256, CertificateName: certificateName}
}
