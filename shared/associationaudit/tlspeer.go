package associationaudit

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"

	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// CertificatePeer names a client certificate for the audit trail and the
// log: its subject and issuer as RFC 4514 strings, its serial number as
// OpenSSL prints it (tlstrust.SerialText), the SHA-256 fingerprint of its DER encoding, and the
// certificate name the allowlist bound it to ("" when the calling AE title
// is not bound to one, or the certificate was refused). A nil certificate
// gives nil.
func CertificatePeer(c *x509.Certificate, certificateName string) *TLSPeer {
	if c == nil {
		return nil
	}
	sum := sha256.Sum256(c.Raw)
	return &TLSPeer{
		Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: tlstrust.SerialText(c.SerialNumber),
		SHA256: hex.EncodeToString(sum[:]), CertificateName: certificateName,
	}
}
