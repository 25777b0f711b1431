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
	"net"
	"regexp"
	"slices"
	"time"
)

// SchemaVersion is bumped on any incompatible change of Record.
const SchemaVersion = 1

// LostLog is the message of the SCP's log line for each record it will
// never write (still queued when it had to exit, or not encodable); the
// stack's metric filter counts these lines for the ScpAuditRecordLostLogged
// alarm.
const LostLog = "audit record lost"

// UncleanStopLog is the message of the SCP's log line for each earlier run
// found to have stopped uncleanly (killed, crashed), at start or while it
// runs: the audit records it had not yet written are lost, and the start
// record, or the unclean-stop-found record, says which. The stack's metric
// filter counts these lines for the ScpUncleanStopLogged alarm.
const UncleanStopLog = "previous run stopped uncleanly: audit records may be lost"

// Event names, as they appear in Record.Event and in keys.
const (
	EventAccepted    = "association-accepted"
	EventRejected    = "association-rejected"
	EventReleased    = "association-released"
	EventAborted     = "association-aborted"
	EventStoreFailed = "store-failed"
	// EventDuplicate: a C-STORE stored and acknowledged whose object the
	// store already held, byte for byte, under its key (an identical
	// resend the same day): nothing new was written, so no object
	// notification reaches the pipeline, and this record is the
	// transfer's trace. ObjectKey names the object held.
	EventDuplicate = "duplicate"
	// EventCommitmentRefused: a Storage Commitment request (N-ACTION)
	// answered with a failure status, so no transaction exists for it.
	EventCommitmentRefused = "commitment-refused"
	// EventApplicationStart and EventApplicationStop: the SCP started
	// serving and stopped (PS3.15 A.5.3.1 Application Activity). Their
	// AssociationID is the SCP process's instance id, the prefix of the
	// ids of the associations it served; CalledAE is its AE title.
	EventApplicationStart = "application-start"
	EventApplicationStop  = "application-stop"
	// EventUncleanStopFound: a running SCP found other runs stopped
	// uncleanly (their run markers went stale, or their locks free) and
	// reports them in PreviousRuns, as a start would. Its AssociationID
	// and CalledAE are the reporting run's, as on its start record.
	EventUncleanStopFound = "unclean-stop-found"
)

// Events are every event name a Record carries, as the audit trail's
// outcomes list them (pipeline.AuditOutcomes).
var Events = []string{EventAccepted, EventRejected, EventReleased, EventAborted, EventStoreFailed, EventDuplicate, EventCommitmentRefused,
	EventApplicationStart, EventApplicationStop, EventUncleanStopFound}

// Record is one association event. It holds no patient data: AE titles,
// addresses and UIDs only.
type Record struct {
	SchemaVersion int       `json:"schemaVersion"`
	Event         string    `json:"event"`
	Time          time.Time `json:"time"`
	AssociationID string    `json:"associationId"`
	CallingAE     string    `json:"callingAE"`
	CalledAE      string    `json:"calledAE"`
	// AETitle, on an association-rejected, is the SCP's own AE title:
	// CalledAE is the title the peer called, which is not ours when it was
	// refused for it (01 01 07), and empty when TLS refused it first.
	// Absent from records written before it was recorded.
	AETitle      string `json:"aeTitle,omitempty"`
	PeerAddr     string `json:"peerAddr"`
	RejectResult int    `json:"rejectResult,omitempty"`
	RejectSource int    `json:"rejectSource,omitempty"`
	RejectReason int    `json:"rejectReason,omitempty"`
	AbortSource  *int   `json:"abortSource,omitempty"`
	AbortReason  *int   `json:"abortReason,omitempty"`
	Reason       string `json:"reason,omitempty"`
	// Status is the DIMSE status decided, 4 hex digits, on a store-failed
	// and a commitment-refused (StoreStatus: none for a C-STORE or an
	// N-ACTION not answered, NotAnswered).
	Status string `json:"status,omitempty"`
	// NotSent, on a store-failed or a commitment-refused, is true when the
	// response carrying Status (C-STORE-RSP, N-ACTION-RSP) could not be
	// written to the peer (dicomnet.ErrNotSent: the association ended
	// first): the sender heard no status. Absent from records written
	// before it was recorded, which said Status as if it had been answered.
	NotSent        bool   `json:"notSent,omitempty"`
	SOPClassUID    string `json:"sopClassUid,omitempty"`
	SOPInstanceUID string `json:"sopInstanceUid,omitempty"`
	// StudyInstanceUID and SeriesInstanceUID, on store-failed, are those
	// the data set's header named, when it was read.
	StudyInstanceUID  string `json:"studyInstanceUid,omitempty"`
	SeriesInstanceUID string `json:"seriesInstanceUid,omitempty"`
	// ObjectKey, on duplicate, is the key of the object held, relative to
	// the store's root (as objectstore.Stored.Key).
	ObjectKey      string `json:"objectKey,omitempty"`
	Instances      int    `json:"instances,omitempty"` // instances stored, on released/aborted
	Bytes          int64  `json:"bytes,omitempty"`     // dataset bytes stored, on released/aborted
	Implementation string `json:"implementationVersion"`
	// Seq orders the records of one association.
	Seq uint64 `json:"seq"`
	// TLS describes the peer's client certificate when the association
	// came over TLS and the peer presented one; nil otherwise.
	TLS *TLSPeer `json:"tls,omitempty"`
	// PreviousRuns, on an application-start, are the earlier runs its
	// start found to have stopped uncleanly (killed, crashed: their run
	// markers' locks were free, or the markers stale), with what each may
	// have lost; Reason says the same in words. Absent from records
	// written before it was recorded, whose Reason alone said so. On an
	// unclean-stop-found, the runs a running SCP found so.
	PreviousRuns []UncleanRun `json:"previousRuns,omitempty"`
	// Count, on an association-rejected, is how many refusals the record
	// stands for when more than one: refusals alike in all but their time,
	// port and association id (the same peer address, AE titles, A-ASSOCIATE-RJ
	// fields and presented certificate) that came while refusals had used
	// their share of the writer's queue, or after one from the same peer
	// and alike was written in the same window (a flood of unauthenticated
	// connections), folded into one record: the first of them at Time, the
	// last at Until; PeerAddr is then the address without a port, and
	// Reason is the first one's with the count. 0 on a record of one event.
	Count int       `json:"count,omitempty"`
	Until time.Time `json:"until,omitzero"`
	// Lost, on an application-stop, are the records of its run counted
	// lost before the stop record was written (given up at Close, not
	// encodable); nil when none was.
	Lost *LostRecords `json:"lost,omitempty"`
}

// StoreStatus is the Status of a store-failed (or commitment-refused)
// record for the DIMSE status of its C-STORE (N-ACTION) as dicomnet's
// event gives it: four upper-case hex digits, or none for status 0, which
// the event gives a request the association's end cut short (its data set
// never completed): it was answered nothing, and "0000" would read as the
// success it was not. NotAnswered reads it back; the metrics' status label
// (metricnames.StatusNone) follows it.
func StoreStatus(status uint16) string {
	if status == 0 {
		return ""
	}
	return fmt.Sprintf("%04X", status)
}

// NotAnswered reports whether a store-failed (or commitment-refused)
// record's Status says its C-STORE (N-ACTION) was not answered
// (StoreStatus): none, or "0000", as store-failed records written before
// it was none said it.
func NotAnswered(status string) bool { return status == "" || status == "0000" }

// Events is how many events r stands for: its Count when refusals were
// folded into it, else one.
func (r Record) Events() int { return max(r.Count, 1) }

// PeerHost is a record's peer address (PeerAddr) without its port, as it
// is already in a folded record, or addr as it is when it has none.
func PeerHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// UncleanRun is what a dead run's marker said of it as of its last update
// (at most a second before its death).
type UncleanRun struct {
	// Instance is the run's instance id: its start and stop records'
	// AssociationID and the prefix of its associations' ids.
	Instance string `json:"instance"`
	AETitle  string `json:"aeTitle,omitempty"`
	// Started and LastAlive are the run's start and its marker's last
	// update; zero when the marker was unreadable.
	Started   time.Time `json:"started,omitzero"`
	LastAlive time.Time `json:"lastAlive,omitzero"`
	// LastSeq is the highest sequence number the run had given a record:
	// its records were seq 1..LastSeq, and any after LastSeq (events in
	// its last second) may be lost without a number.
	LastSeq uint64 `json:"lastSeq"`
	// Written and CountedLost are the records of seq 1..LastSeq written
	// and counted lost by then; NotWritten the rest, still queued or being
	// written: those of them missing from the trail the crash lost.
	Written     uint64 `json:"written"`
	CountedLost uint64 `json:"countedLost"`
	NotWritten  uint64 `json:"notWritten"`
	// Unreadable: the marker could not be read, so any record of the run
	// may be missing.
	Unreadable bool `json:"unreadable,omitempty"`
	// StopNotWritten: the run stopped, but its stop record could not be
	// written (it is counted in CountedLost), so nothing in the trail
	// confirms the stop or names the records lost before it; the counts
	// are as of the stop, nothing came after.
	StopNotWritten bool `json:"stopNotWritten,omitempty"`
}

// PossiblyLost says which of the run's records may be missing from the
// trail: the gaps among seq 1..LastSeq (at most NotWritten+CountedLost of
// them) and, unless the run's marker was written at its stop, any after
// LastSeq.
func (u UncleanRun) PossiblyLost() string {
	switch {
	case u.Unreadable:
		return "any"
	case u.LastSeq == 0:
		return "any (it had numbered none)"
	case u.StopNotWritten: // its marker was brought up to date at the stop
		return fmt.Sprintf("up to %d of seq 1-%d", u.NotWritten+u.CountedLost, u.LastSeq)
	}
	return fmt.Sprintf("up to %d of seq 1-%d, and any after seq %d", u.NotWritten+u.CountedLost, u.LastSeq, u.LastSeq)
}

// MaxLostSeqs bounds the sequence numbers a LostRecords names.
const MaxLostSeqs = 256

// LostRecords are records of a run never written: how many, and the
// sequence numbers of the first MaxLostSeqs of them given up, in ascending
// order (Count says how many more there were).
type LostRecords struct {
	Count uint64   `json:"count"`
	Seqs  []uint64 `json:"seqs,omitempty"`
}

// TLSPeer names a peer's client certificate so an audit reader can find it
// again (subject, issuer, serial number, SHA-256 fingerprint of the DER
// encoding, lower-case hex), with the name the calling-AE allowlist bound
// to it, if any. On an association it is the certificate TLS verified; on
// a refused handshake (association-rejected, reason "TLS handshake
// failed…") the one the client presented and verification refused, which
// names what was tried, not who tried it: the client never proved it holds
// the certificate's key. CertificatePeer makes it, its subject, issuer
// and serial number cut to their bounds (MaxNameJSON, MaxSerial).
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

// Duplicate makes r, which names its association, time and sequence
// number, the record of a C-STORE stored and acknowledged whose object
// the store already held, byte for byte, under heldKey (relative to the
// store's root): the one shape of an EventDuplicate record, whether the
// audit writer learns of the resend as the store answers (a direct
// store) or the staged store's uploader does at upload (see StagedSeq).
// study and series are those the resend's header named.
func Duplicate(r Record, sopClassUID, sopInstanceUID, study, series, heldKey string) Record {
	r.Event, r.Reason = EventDuplicate, ""
	r.SOPClassUID, r.SOPInstanceUID = sopClassUID, sopInstanceUID
	r.StudyInstanceUID, r.SeriesInstanceUID, r.ObjectKey = study, series, heldKey
	return r
}

// StagedSeq is the sequence number of a duplicate record the staged
// store's uploader writes: its C-STORE's receive time in Unix
// nanoseconds. The resend is found at upload, after the C-STORE was
// answered, maybe by another task after a crash, and the record must come
// out the same however often the upload is tried again (one key, the same
// bytes), so it cannot take the writer's next number; no two C-STOREs of
// one association are received in the same nanosecond. It lies far above
// the writer's numbers, which count a run's records from 1, so a run's
// LastSeq and the records it may have lost (UncleanRun) never count it.
func StagedSeq(receivedAt time.Time) uint64 { return uint64(max(receivedAt.UnixNano(), 0)) }

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
	if !slices.Contains(Events, r.Event) {
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
