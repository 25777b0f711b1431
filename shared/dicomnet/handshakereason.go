package dicomnet

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// The reasons a ServeTLS connection's handshake failed, as HandshakeFailureReason names them: the values of the
// reason label of dicom_ingest_tls_handshake_failures_total and of the "dicomnet: TLS handshake failed" line.
const (
	// HandshakeTimeout: the handshake did not end within ARTIM (ErrHandshakeTimeout): a peer silent after
	// connecting (a port scan, a client stuck before it sends) or too slow.
	HandshakeTimeout = "timeout"
	// HandshakeNotTLS: what the peer sent is not a TLS record (plain DICOM, or anything else, on the TLS port).
	HandshakeNotTLS = "not_tls"
	// HandshakeNoCertificate: the client presented no certificate where one is required.
	HandshakeNoCertificate = "no_certificate"
	// HandshakeExpired: the client's certificate, or a CA of its chain, has expired.
	HandshakeExpired = "expired"
	// HandshakeNotYetValid: the client's certificate, or a CA of its chain, is not yet valid: issued moments ago
	// and used at once, or a clock (the site CA's, or ours) wrong. Told apart from HandshakeExpired, so that an
	// alarm on expired certificates does not hide a clock skew between a site and us.
	HandshakeNotYetValid = "not_yet_valid"
	// HandshakeUnknownCA: the client's certificate does not chain to a CA of the client CA bundle.
	HandshakeUnknownCA = "unknown_ca"
	// HandshakeRevoked: a client CRL lists the client's certificate (tlstrust.ErrRevoked).
	HandshakeRevoked = "revoked"
	// HandshakeBadCertificate: the client's certificate verified otherwise wrong: not for client authentication
	// (its extended key usage), a CA's or one that cannot sign, of a weak key, issued below the bundle's CAs
	// (tlstrust.ErrNotClientCertificate), its signature invalid, or not parsed.
	HandshakeBadCertificate = "bad_certificate"
	// HandshakeProtocolVersion: the client offered only TLS versions we do not speak (TLS 1.0, 1.1, SSL).
	HandshakeProtocolVersion = "protocol_version"
	// HandshakeCipherMismatch: no cipher suite, key exchange group or signature algorithm in common (a client
	// outside BCP 195).
	HandshakeCipherMismatch = "cipher_mismatch"
	// HandshakePeerClosed: the client closed the connection in the middle of the handshake, without an alert
	// (after its ClientHello, or within a record), with a FIN or a reset (ECONNRESET: a client that closes with
	// bytes unread, or with SO_LINGER 0): a client that gave up on our certificate without saying so, a TLS
	// scanner. One closed before its first byte, either way (a TCP health check), is no failure and not counted.
	HandshakePeerClosed = "peer_closed"
	// HandshakePeerAlert: the client ended the handshake with an alert of its own (or, under TLS 1.3 from an
	// OpenSSL client such as DCMTK, one sent in the clear, which crypto/tls reads as "bad record MAC"), most
	// often because it does not trust our server certificate (expired, or not from the CA it was given).
	HandshakePeerAlert = "peer_alert"
	// HandshakeOther: anything else (a malformed handshake message, a reset connection); the log line's err says
	// what.
	HandshakeOther = "other"
)

// A handshake cut by our own stop (Shutdown, Close, ServeConn's context) has no reason here: it is no failure of
// the peer's, and no EventHandshakeFailed, as a plain connection closed by the stop before its A-ASSOCIATE-RQ has
// no event.

// HandshakeFailureReasons are the values HandshakeFailureReason returns: a small set fixed here, never the
// error's text or a name the peer chose, so that each can be a label value, and a CloudWatch metric, of its own.
var HandshakeFailureReasons = []string{
	HandshakeTimeout, HandshakeNotTLS, HandshakeNoCertificate, HandshakeExpired, HandshakeNotYetValid, HandshakeUnknownCA, HandshakeRevoked,
	HandshakeBadCertificate, HandshakeProtocolVersion, HandshakeCipherMismatch, HandshakePeerAlert, HandshakePeerClosed,
	HandshakeOther,
}

// handshakeFailure is the error of an EventHandshakeFailed: the handshake's error, unchanged in its words and in
// what it wraps, with the reason it was classified under when it failed, which HandshakeFailureReason then
// returns, so the log line, the metric and the audit record read one classification, not three.
type handshakeFailure struct {
	reason string
	err    error
}

func (f *handshakeFailure) Error() string { return f.err.Error() }
func (f *handshakeFailure) Unwrap() error { return f.err }

// notYetValidDetail is what crypto/x509's CertificateInvalidError (Reason Expired) says, in its Detail ("current
// time %s is before %s"), of a certificate not yet valid.
const notYetValidDetail = " is before "

// handshakeTexts are the failures crypto/tls reports only in words (errors.New, fmt.Errorf, no type), by the
// start of their text, in the order they are looked for. A text no longer said counts its failures as
// HandshakeOther, never under another reason: TestHandshakeTextsAreCryptoTLSs finds each in crypto/tls's source,
// so a rewording in a Go release fails it, and TestHandshakeFailureReason makes those a tls.Config can make for
// real (no certificate, the versions, the suites and groups, a peer's alert).
var handshakeTexts = []struct{ prefix, reason string }{
	{"tls: client didn't provide a certificate", HandshakeNoCertificate},
	// A TLS 1.3 client that gives up on our certificate after our ServerHello may send its alert in the clear
	// (OpenSSL does, so DCMTK does), where we expect its next record encrypted: crypto/tls fails to decrypt it and
	// says only this. A record corrupted in transit would say the same, which TCP's checksum and the VPN make
	// rarer than a site that does not trust our certificate.
	{"local error: tls: bad record MAC", HandshakePeerAlert},
	{"tls: client offered only unsupported versions", HandshakeProtocolVersion},
	{"tls: client offered TLS version older than TLS 1.3", HandshakeProtocolVersion},
	{"tls: client using inappropriate protocol fallback", HandshakeProtocolVersion},
	{"tls: no cipher suite supported by both", HandshakeCipherMismatch},
	{"tls: no key exchanges supported by both", HandshakeCipherMismatch},
	{"tls: client offered only incompatible point formats", HandshakeCipherMismatch},
	{"tls: peer doesn't support any of the certificate's signature algorithms", HandshakeCipherMismatch},
	{"tls: client certificate used with invalid signature algorithm", HandshakeBadCertificate},
	{"tls: invalid signature by the client certificate", HandshakeBadCertificate},
	{"tls: failed to parse client certificate", HandshakeBadCertificate},
	{"tls: client sent certificate containing RSA key larger than", HandshakeBadCertificate},
	{"tls: client certificate contains an unsupported public key", HandshakeBadCertificate},
}

// HandshakeFailureReason names why a ServeTLS connection's handshake failed, from its error (that of its
// EventHandshakeFailed): one of HandshakeFailureReasons, HandshakeOther for an error it does not know (and for
// nil). It is the one classification of a failed handshake: the log line, the metric and the audit record all
// use it, and of the event's Err it returns the reason found when the handshake failed. A refusal of our own
// checks (tlstrust.ErrRevoked, tlstrust.ErrNotClientCertificate, which servertls wraps in a
// *tls.CertificateVerificationError) is told before crypto/x509's, and revocation first: a revoked certificate is
// said to be revoked whatever else is wrong with it.
func HandshakeFailureReason(err error) string {
	if err == nil {
		return HandshakeOther
	}
	if f, ok := errors.AsType[*handshakeFailure](err); ok {
		return f.reason
	}
	if errors.Is(err, ErrHandshakeTimeout) {
		return HandshakeTimeout
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		// crypto/tls's word for a peer that closed at a record's boundary, and within a record; and the
		// system's for one that reset the connection.
		return HandshakePeerClosed
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return HandshakeNotTLS
	}
	if errors.Is(err, tlstrust.ErrRevoked) {
		return HandshakeRevoked
	}
	if errors.Is(err, tlstrust.ErrNotClientCertificate) {
		return HandshakeBadCertificate
	}
	if ie, ok := errors.AsType[x509.CertificateInvalidError](err); ok && ie.Reason == x509.Expired {
		// crypto/x509 gives both ends of the validity period one Reason, and tells them apart only in words
		// (TestHandshakeTextsAreCryptoTLSs finds these in its source): a rewording counts as expired, as before.
		if strings.HasPrefix(ie.Detail, "current time ") && strings.Contains(ie.Detail, notYetValidDetail) {
			return HandshakeNotYetValid
		}
		return HandshakeExpired
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return HandshakeUnknownCA
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return HandshakeBadCertificate
	}
	if oe, ok := errors.AsType[*net.OpError](err); ok && oe.Op == "remote error" {
		// crypto/tls's alert received: "remote error: tls: bad certificate" and the like.
		return HandshakePeerAlert
	}
	msg := err.Error()
	for _, t := range handshakeTexts {
		if strings.HasPrefix(msg, t.prefix) {
			return t.reason
		}
	}
	return HandshakeOther
}
