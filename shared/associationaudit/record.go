// Package associationaudit defines the small JSON records the SCP writes
// under the store's audit/ prefix for association events that never become
// objects (accepted, rejected, released, aborted, C-STORE failed, Storage
// Commitment request refused) and for the SCP's own start and stop, so the
// audit trail also covers what was refused or lost in transit. The SCP
// writes them; the pipeline's audit function reads them.
package associationaudit

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// SchemaVersion is bumped on any incompatible change of Record.
const SchemaVersion = 1

// LostLog is the message of the SCP's log line for each record it will
// never write (still queued when it had to exit, or not encodable); the
// stack's metric filter counts these lines for the ScpAuditRecordLostLogged
// alarm.
const LostLog = "audit record lost"

// UncleanStopLog is the message of the SCP's log line, at start, for each
// earlier run found to have stopped uncleanly (killed, crashed): the audit
// records it had not yet written are lost, and its start record says which.
const UncleanStopLog = "previous run stopped uncleanly: audit records may be lost"

// Event names, as they appear in Record.Event and in keys.
const (
	EventAccepted    = "association-accepted"
	EventRejected    = "association-rejected"
	EventReleased    = "association-released"
	EventAborted     = "association-aborted"
	EventStoreFailed = "store-failed"
	// EventCommitmentRefused: a Storage Commitment request (N-ACTION)
	// answered with a failure status, so no transaction exists for it.
	EventCommitmentRefused = "commitment-refused"
	// EventApplicationStart and EventApplicationStop: the SCP started
	// serving and stopped (PS3.15 A.5.3.1 Application Activity). Their
	// AssociationID is the SCP process's instance id, the prefix of the
	// ids of the associations it served; CalledAE is its AE title.
	EventApplicationStart = "application-start"
	EventApplicationStop  = "application-stop"
)

// Events are every event name a Record carries, as the audit trail's
// outcomes list them (pipeline.AuditOutcomes).
var Events = []string{EventAccepted, EventRejected, EventReleased, EventAborted, EventStoreFailed, EventCommitmentRefused,
	EventApplicationStart, EventApplicationStop}

// Record is one association event. It holds no patient data: AE titles,
// addresses and UIDs only.
type Record struct {
	SchemaVersion  int       `json:"schemaVersion"`
	Event          string    `json:"event"`
	Time           time.Time `json:"time"`
	AssociationID  string    `json:"associationId"`
	CallingAE      string    `json:"callingAE"`
	CalledAE       string    `json:"calledAE"`
	PeerAddr       string    `json:"peerAddr"`
	RejectResult   int       `json:"rejectResult,omitempty"`
	RejectSource   int       `json:"rejectSource,omitempty"`
	RejectReason   int       `json:"rejectReason,omitempty"`
	AbortSource    *int      `json:"abortSource,omitempty"`
	AbortReason    *int      `json:"abortReason,omitempty"`
	Reason         string    `json:"reason,omitempty"`
	Status         string    `json:"status,omitempty"` // DIMSE status, 4 hex digits, for store-failed and commitment-refused
	SOPClassUID    string    `json:"sopClassUid,omitempty"`
	SOPInstanceUID string    `json:"sopInstanceUid,omitempty"`
	// StudyInstanceUID and SeriesInstanceUID, on store-failed, are those
	// the data set's header named, when it was read.
	StudyInstanceUID  string `json:"studyInstanceUid,omitempty"`
	SeriesInstanceUID string `json:"seriesInstanceUid,omitempty"`
	Instances         int    `json:"instances,omitempty"` // instances stored, on released/aborted
	Bytes             int64  `json:"bytes,omitempty"`     // dataset bytes stored, on released/aborted
	Implementation    string `json:"implementationVersion"`
	// Seq orders the records of one association.
	Seq uint64 `json:"seq"`
	// TLS describes the peer's client certificate when the association
	// came over TLS and the peer presented one; nil otherwise.
	TLS *TLSPeer `json:"tls,omitempty"`
}

// TLSPeer names a peer's client certificate so an audit reader can find it
// again (subject, issuer, serial number, SHA-256 fingerprint of the DER
// encoding, lower-case hex), with the name the calling-AE allowlist bound
// to it, if any. On an association it is the certificate TLS verified; on
// a refused handshake (association-rejected, reason "TLS handshake
// failed…") the one the client presented and verification refused, which
// names what was tried, not who tried it: the client never proved it holds
// the certificate's key.
type TLSPeer struct {
	Subject string `json:"subject"`
	Issuer  string `json:"issuer"`
	// Serial is the serial number in upper-case hexadecimal, as
	// `openssl x509 -noout -serial` prints it; empty in records written
	// before it was recorded.
	Serial          string `json:"serial,omitempty"`
	SHA256          string `json:"sha256"`
	CertificateName string `json:"certificateName,omitempty"`
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Key returns where r is stored:
//
//	audit/<yyyy>/<mm>/<dd>/<association-id>-<seq>-<event>.json
//
// with the UTC date of r.Time. The association id must be key-safe (the
// SCP makes them so); anything else is an error, never a path.
func Key(r Record) (string, error) {
	if !idPattern.MatchString(r.AssociationID) {
		return "", fmt.Errorf("associationaudit: association id %q is not key-safe", r.AssociationID)
	}
	switch r.Event {
	case EventAccepted, EventRejected, EventReleased, EventAborted, EventStoreFailed, EventCommitmentRefused,
		EventApplicationStart, EventApplicationStop:
	default:
		return "", fmt.Errorf("associationaudit: unknown event %q", r.Event)
	}
	t := r.Time.UTC()
	return fmt.Sprintf("audit/%04d/%02d/%02d/%s-%06d-%s.json", t.Year(), int(t.Month()), t.Day(), r.AssociationID, r.Seq, r.Event), nil
}

// Marshal encodes r with its schema version set.
func Marshal(r Record) ([]byte, error) {
	r.SchemaVersion = SchemaVersion
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("associationaudit: marshal: %w", err)
	}
	return b, nil
}

// ErrUnsupportedVersion marks a record written by a newer SCP.
var ErrUnsupportedVersion = errors.New("associationaudit: unsupported schema version")

// Parse decodes and checks a record read back from the store.
func Parse(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("associationaudit: parse: %w", err)
	}
	if r.SchemaVersion != SchemaVersion {
		return Record{}, fmt.Errorf("%w: %d", ErrUnsupportedVersion, r.SchemaVersion)
	}
	if _, err := Key(r); err != nil {
		return Record{}, err
	}
	return r, nil
}
