package associationaudit

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"sort"

	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// Bounds of what a TLSPeer says of a certificate in words. A CA may issue
// subjects, issuers and serial numbers of any length, and TLS accepts
// them, while the staged store journals a C-STORE's TLSPeer in a record
// header of 4 KiB (stagedstore), with the rest of the object's metadata:
// so that the certificate is named the same on every path and always
// fits, a longer one is cut, the SHA-256 fingerprint beside it naming the
// certificate as surely.
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

// CertificatePeer names a client certificate for the audit trail and the
// log: its subject and issuer as RFC 4514 strings, its serial number as
// OpenSSL prints it (tlstrust.SerialText), each cut to its bound
// (MaxNameJSON, MaxSerial; ending in Cut), the SHA-256 fingerprint of its
// DER encoding, and the certificate name the allowlist bound it to (""
// when the calling AE title is not bound to one, or the certificate was
// refused). A nil certificate gives nil. It is the one rule: the audit
// writer's records, the staged store's duplicate records and the log name
// a certificate by it.
func CertificatePeer(c *x509.Certificate, certificateName string) *TLSPeer {
	if c == nil {
		return nil
	}
	sum := sha256.Sum256(c.Raw)
	return &TLSPeer{
		Subject: bound(c.Subject.String(), MaxNameJSON), Issuer: bound(c.Issuer.String(), MaxNameJSON),
		Serial: bound(tlstrust.SerialText(c.SerialNumber), MaxSerial),
		SHA256: hex.EncodeToString(sum[:]), CertificateName: certificateName,
	}
}

// bound returns s when JSON writes it in at most limit bytes (quotes
// aside), else its longest prefix, cut between characters, that does so
// followed by Cut.
func bound(s string, limit int) string {
	if jsonLen(s) <= limit {
		return s
	}
	var at []int // where a character starts
	for i := range s {
		at = append(at, i)
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
