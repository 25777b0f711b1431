package associationaudit

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
)

// CertificatePeer names a client certificate for the audit trail and the
// log: its subject and issuer as RFC 4514 strings, its serial number as
// OpenSSL prints it, the SHA-256 fingerprint of its DER encoding, and the
// certificate name the allowlist bound it to ("" when the calling AE title
// is not bound to one, or the certificate was refused). A nil certificate
// gives nil.
func CertificatePeer(c *x509.Certificate, certificateName string) *TLSPeer {
	if c == nil {
		return nil
	}
	sum := sha256.Sum256(c.Raw)
	return &TLSPeer{
		Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: serialText(c.SerialNumber),
		SHA256: hex.EncodeToString(sum[:]), CertificateName: certificateName,
	}
}

// serialText is a serial number in upper-case hexadecimal with an even
// number of digits, as `openssl x509 -noout -serial` prints it ("" for
// none; a negative one, which RFC 5280 forbids, keeps its sign).
func serialText(n *big.Int) string {
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
