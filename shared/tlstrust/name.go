package tlstrust

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
)

// Bounds of what is said of a certificate in words. A CA may issue
// subjects, issuers and serial numbers of any length, TLS accepts them,
// and a certificate from an unknown CA is the peer's own making: so that
// a certificate is named the same on every path (the audit trail, the log,
// a refusal's error) and always fits (the staged store journals a
// C-STORE's certificate in a record header of 4 KiB with the rest of the
// object's metadata), a longer one is cut, the SHA-256 fingerprint beside
// it naming the certificate as surely.
const (
	// MaxNameJSON bounds the subject and the issuer as JSON writes them,
	// its escapes included (a control character takes 6 bytes).
	MaxNameJSON = 384
	// MaxSerial bounds the serial number's hex digits: 64 octets, more
	// than three times RFC 5280's 20.
	MaxSerial = 128
)

// Cut is what ends a subject, issuer or serial number cut to its bound.
const Cut = "…"

// Name is a certificate named within bounds: its subject and issuer as
// RFC 4514 strings, its serial number as SerialText writes it, each cut to
// its bound (MaxNameJSON, MaxSerial; ending in Cut), and the SHA-256
// fingerprint of its DER encoding, in hex.
type Name struct {
	Subject, Issuer, Serial, SHA256 string
}

// NameOf names c within bounds: the one rule by which the audit trail
// (associationaudit.CertificatePeer), the log and the refusals here name a
// certificate.
func NameOf(c *x509.Certificate) Name {
	sum := sha256.Sum256(c.Raw)
	return Name{
		Subject: bound(c.Subject.String(), MaxNameJSON), Issuer: bound(c.Issuer.String(), MaxNameJSON),
		Serial: bound(SerialText(c.SerialNumber), MaxSerial), SHA256: hex.EncodeToString(sum[:]),
	}
}

// String is how an error names the certificate: `"subject" (serial …,
// SHA-256 …)`.
func (n Name) String() string {
	return fmt.Sprintf("%q (serial %s, SHA-256 %s)", n.Subject, n.Serial, n.SHA256)
}

// bound returns s when JSON writes it in at most limit bytes (quotes
// aside), else its longest prefix, cut between characters and never inside
// an RFC 4514 escape (a backslash and the character it escapes, which a
// cut would leave a lone backslash of), that does so followed by Cut.
func bound(s string, limit int) string {
	if jsonLen(s) <= limit {
		return s
	}
	var at []int // where a character, or an escape, starts
	escaped := false
	for i, r := range s {
		if escaped {
			escaped = false
			continue
		}
		at = append(at, i)
		escaped = r == '\\'
	}
	// The first cut too long; the prefixes' lengths only grow.
	n := sort.Search(len(at), func(k int) bool { return jsonLen(s[:at[k]]+Cut) > limit })
	if n == 0 {
		return Cut
	}
	return s[:at[n-1]] + Cut
}

// jsonLen is how many bytes JSON writes s in, without its quotes.
func jsonLen(s string) int {
	b, err := json.Marshal(s)
	if err != nil { // a string always encodes; else the most it could take
		return 6 * len(s)
	}
	return len(b) - 2
}
