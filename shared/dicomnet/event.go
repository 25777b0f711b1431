package dicomnet

import (
	"crypto/x509"
	"time"
)

// Observer receives association lifecycle events (for metrics and audit). ObserveAssociation is called
// synchronously from the association's goroutine and should return quickly: while it blocks, that association
// waits (an audit trail may use this as back-pressure). A panic in it is recovered and logged.
type Observer interface{ ObserveAssociation(ev Event) }

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(ev Event)

// ObserveAssociation calls f.
func (f ObserverFunc) ObserveAssociation(ev Event) { f(ev) }

// EventType classifies an Event.
type EventType int

// Event types.
const (
	EventAccepted    EventType = iota + 1 // A-ASSOCIATE-AC sent; Contexts is set
	EventRejected                         // A-ASSOCIATE-RJ sent; Reject is set
	EventReleased                         // orderly release completed
	EventAborted                          // aborted by either side or the connection broke; AbortSource/Reason, Err
	EventStored                           // C-STORE answered with success or warning; Status, UIDs, Bytes, Duration
	EventStoreFailed                      // C-STORE failed (failure status sent, or the association broke mid-object)
	EventEcho                             // C-ECHO answered
	// EventShed: a connection closed before it associated, to keep the bounds on connections without an
	// association (Err is ErrShedTotal or ErrShedPerAddr; Association has the ID and addresses only).
	EventShed
	// EventHandshakeFailed: a ServeTLS connection's TLS handshake failed (no or an untrusted client certificate,
	// an old protocol version, no common cipher suite, plain DICOM on the TLS port); Err says why; Association has
	// the ID and addresses only; PeerCertificates holds the client certificates it refused, if that was why. A
	// connection shed during its handshake is an EventShed only.
	EventHandshakeFailed
	// EventCommitmentRefused: an N-ACTION (Storage Commitment request) answered with a failure status; Status,
	// SOPClassUID (the requested class) and Err (why, beside ErrNotSent when the N-ACTION-RSP was not sent) are set.
	// Status is 0 for one the association's end cut short (its data set never completed): it was answered nothing,
	// and Err is the reader's error, as an EventStoreFailed's of a C-STORE cut short.
	EventCommitmentRefused
)

func (t EventType) String() string {
	switch t {
	case EventAccepted:
		return "accepted"
	case EventRejected:
		return "rejected"
	case EventReleased:
		return "released"
	case EventAborted:
		return "aborted"
	case EventStored:
		return "stored"
	case EventStoreFailed:
		return "store_failed"
	case EventEcho:
		return "echo"
	case EventShed:
		return "shed"
	case EventHandshakeFailed:
		return "tls_handshake_failed"
	case EventCommitmentRefused:
		return "commitment_refused"
	}
	return "unknown"
}

// Event is one lifecycle event. Fields not relevant to Type are zero.
type Event struct {
	Type        EventType
	Time        time.Time
	Association *AssociationInfo
	Reject      *RejectError
	// AbortSource and AbortReason are those of the A-ABORT sent or received (source 0 user, 2 provider).
	// AbortLocal is true when we aborted; false when the peer did or the connection broke.
	AbortSource, AbortReason byte
	AbortLocal               bool
	Status                   uint16
	SOPClassUID              string
	SOPInstanceUID           string
	Bytes                    int64
	Duration                 time.Duration
	// Err, on EventStored and EventStoreFailed, is what the handler returned (a warning status, or what it reports
	// of the object) or why the C-STORE failed, beside ErrNotSent when the response was not sent; of a data set
	// broken off, the reader's error (its message), with what the handler returned beside it.
	Err error
	// PeerCertificates, on EventHandshakeFailed, is the chain the client presented (its certificate first) when
	// the handshake failed because the configuration's verification refused it: Err (or an error it wraps) is a
	// *tls.CertificateVerificationError, as crypto/tls returns for a chain that does not verify and as a
	// VerifyConnection or VerifyPeerCertificate may return to refuse one. The client has not proven that it holds
	// the certificate's key (its CertificateVerify comes later): the chain is what it claimed, never an identity.
	PeerCertificates []*x509.Certificate
	// Contexts, on EventAccepted, is what the A-ASSOCIATE-AC answered to the presentation contexts proposed, as
	// the "association accepted" log line gives it: an association whose every context was refused is accepted
	// and then ends, and this says why.
	Contexts *ContextSummary
}
