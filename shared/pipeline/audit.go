package pipeline

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// Codes from PS3.15 A.5 and PS3.16 (CID 400-series, DCM scheme).
var (
	codeInstancesTransferred = CodedValue{Code: "110104", System: "DCM", Display: "DICOM Instances Transferred"}
	codeBeginTransferring    = CodedValue{Code: "110102", System: "DCM", Display: "Begin Transferring DICOM Instances"}
	codeSecurityAlert        = CodedValue{Code: "110113", System: "DCM", Display: "Security Alert"}
	codeNodeAuthentication   = CodedValue{Code: "110126", System: "DCM", Display: "Node Authentication"}
	codeSourceRole           = CodedValue{Code: "110153", System: "DCM", Display: "Source Role ID"}
	codeDestinationRole      = CodedValue{Code: "110152", System: "DCM", Display: "Destination Role ID"}
	codeStudyInstanceUID     = CodedValue{Code: "110180", System: "DCM", Display: "Study Instance UID"}
	codePatientNumber        = CodedValue{Code: "2", System: "RFC-3881", Display: "Patient Number"}
	codeApplicationActivity  = CodedValue{Code: "110100", System: "DCM", Display: "Application Activity"}
	codeApplicationStart     = CodedValue{Code: "110120", System: "DCM", Display: "Application Start"}
	codeApplicationStop      = CodedValue{Code: "110121", System: "DCM", Display: "Application Stop"}
	codeApplicationRole      = CodedValue{Code: "110150", System: "DCM", Display: "Application"}
	codeAuditRecordingStop   = CodedValue{Code: "110133", System: "DCM", Display: "Audit Recording Stopped"}
)

// Our own event type codes (scheme "dicom-ingest") refine the standard
// event ids where PS3.16 has no code.
func localCode(code, display string) CodedValue {
	return CodedValue{Code: code, System: "dicom-ingest", Display: display}
}

// Event outcome indicators (A.5.3).
const (
	outcomeSuccess      = 0
	outcomeMinorFailure = 4
	outcomeSerious      = 8
)

// participants are the calling AE (the requestor, with its network
// address) and the called AE. A peer refused before it named an AE title
// (a failed TLS handshake, a PDU that is no A-ASSOCIATE-RQ) has no AE
// title: it is known by its address alone, and no destination is named,
// since it called none (a participant needs a UserID, and "AETITLES="
// with nothing after it names no AE).
func participants(callingAE, calledAE, peer string) []AuditParticipant {
	host := peer
	if h, _, err := net.SplitHostPort(peer); err == nil {
		host = h
	}
	typ := 1
	if net.ParseIP(host) != nil {
		typ = 2
	}
	src, dst := codeSourceRole, codeDestinationRole
	var out []AuditParticipant
	if callingAE != "" || host != "" {
		p := AuditParticipant{UserID: callingAE, UserIsRequestor: true, RoleIDCode: &src}
		if callingAE == "" {
			p.UserID = host
		} else {
			p.AlternativeID = "AETITLES=" + callingAE
		}
		if host != "" {
			p.NetworkAccess, p.NetworkType = host, typ
		}
		out = append(out, p)
	}
	if calledAE != "" {
		out = append(out, AuditParticipant{UserID: calledAE, AlternativeID: "AETITLES=" + calledAE, RoleIDCode: &dst})
	}
	return out
}

// instanceAudit builds the record of one received instance. Its ID is
// derived from the SOP Instance UID and the content, so a duplicate
// delivery or an identical resend appends nothing.
func (p *Pipeline) instanceAudit(in *inspection, tx transaction, outcome string) AuditRecord {
	inst := in.instance
	sop := inst.SOPInstanceUID
	if sop == "" {
		sop = tx.SOPInstanceUID
	}
	rec := AuditRecord{
		SchemaVersion: 1, Time: tx.ReceivedAt, EventID: codeInstancesTransferred, EventActionCode: "C",
		Outcome: outcome, AuditSourceID: p.sourceID(),
		CallingAE: tx.CallingAE, CalledAE: tx.CalledAE, PeerAddr: tx.PeerAddr, AssociationID: tx.AssociationID,
		SOPClassUID: firstNonEmpty(inst.SOPClassUID, tx.SOPClassUID), SOPInstanceUID: sop,
		StudyInstanceUID: inst.StudyInstanceUID, SeriesInstanceUID: inst.SeriesInstanceUID,
		PatientID: inst.PatientID, PatientName: inst.PatientName, ContentIdentity: tx.ContentIdentity, Size: in.info.Size,
		Participants: participants(tx.CallingAE, tx.CalledAE, tx.PeerAddr),
	}
	switch outcome {
	case OutcomeStored:
		rec.ID = "instance:" + sop + ":" + tx.ContentIdentity
		rec.EventOutcome = outcomeSuccess
	case OutcomeConflict:
		rec.ID = "instance:" + sop + ":" + tx.ContentIdentity
		rec.EventOutcome = outcomeSuccess
		rec.EventTypeCodes = []CodedValue{localCode("conflicting-resend", "Conflicting resend kept")}
		rec.Reason = conflictReason
	case OutcomeDuplicate:
		// The caller names the transfer in the id: each resend has a
		// record of its own, a redelivery of one none.
		identicalResend(&rec)
	case OutcomeRejected:
		rec.ID = rejectedRecordID(in.info.Key, tx.ContentIdentity)
		rec.EventOutcome = outcomeMinorFailure
		rec.EventTypeCodes = []CodedValue{codeQuarantined}
		rec.Reason = "validation failed; object quarantined"
		rec.QuarantineKey, _ = QuarantineKeys(in.info)
		rec.Findings = errorFindings(in.findings)
	}
	if rec.Time.IsZero() {
		rec.Time = p.now()
	}
	rec.Day = rec.Time.UTC().Format(time.DateOnly)
	if inst.StudyInstanceUID != "" {
		rec.ParticipantObjects = append(rec.ParticipantObjects, AuditParticipantObject{
			TypeCode: 2, TypeRole: 3, IDTypeCode: codeStudyInstanceUID, ID: inst.StudyInstanceUID,
			SOPClassUID: rec.SOPClassUID, NumberOfSOP: 1,
		})
	}
	if inst.PatientID != "" || inst.PatientName != "" {
		rec.ParticipantObjects = append(rec.ParticipantObjects, AuditParticipantObject{
			TypeCode: 1, TypeRole: 1, IDTypeCode: codePatientNumber, ID: inst.PatientID, Name: inst.PatientName,
		})
	}
	return rec
}

// associationAudit maps an SCP association record to an audit record.
func (p *Pipeline) associationAudit(r associationaudit.Record) AuditRecord {
	return AssociationAuditRecord(r, p.sourceID())
}

// AssociationAuditRecord maps an SCP association record to the audit
// record the pipeline appends for it, naming auditSourceID as the source.
// scp-task without the pipeline uses it too, so its audit feed sends what
// the audit trail would hold.
func AssociationAuditRecord(r associationaudit.Record, auditSourceID string) AuditRecord {
	rec := AuditRecord{
		ID:            fmt.Sprintf("assoc:%s:%d:%s", r.AssociationID, r.Seq, r.Event),
		SchemaVersion: 1, Time: r.Time.UTC(), Day: r.Time.UTC().Format(time.DateOnly),
		EventTypeCodes: []CodedValue{localCode(r.Event, r.Event)},
		Outcome:        r.Event, Reason: r.Reason, AuditSourceID: auditSourceID,
		CallingAE: r.CallingAE, CalledAE: r.CalledAE, PeerAddr: r.PeerAddr, AssociationID: r.AssociationID,
		SOPClassUID: r.SOPClassUID, SOPInstanceUID: r.SOPInstanceUID,
		StudyInstanceUID: r.StudyInstanceUID, SeriesInstanceUID: r.SeriesInstanceUID,
		Participants: participants(r.CallingAE, ourAE(r), r.PeerAddr),
		TLS:          r.TLS, StoredInstances: r.Instances, StoredBytes: r.Bytes,
	}
	switch r.Event {
	// Accepted, released and aborted keep the EventID they always had in
	// the trail; the audit feed sends no message of them, since 110102
	// requires the studies and the patient, which these records do not
	// name (see auditmessage.sent).
	case associationaudit.EventAccepted, associationaudit.EventReleased:
		rec.EventID, rec.EventActionCode, rec.EventOutcome = codeBeginTransferring, "E", outcomeSuccess
	case associationaudit.EventAborted:
		rec.EventID, rec.EventActionCode, rec.EventOutcome = codeBeginTransferring, "E", outcomeSerious
	case associationaudit.EventRejected:
		rec.EventID, rec.EventActionCode, rec.EventOutcome = codeSecurityAlert, "E", outcomeMinorFailure
		rec.EventTypeCodes = append([]CodedValue{codeNodeAuthentication}, rec.EventTypeCodes...)
		if rec.Reason == "" {
			rec.Reason = fmt.Sprintf("A-ASSOCIATE-RJ result %d source %d reason %d", r.RejectResult, r.RejectSource, r.RejectReason)
		}
		if r.CalledAE != "" && r.CalledAE != ourAE(r) {
			rec.Reason += fmt.Sprintf("; called AE title %q, not ours", r.CalledAE)
		}
	case associationaudit.EventStoreFailed:
		rec.EventID, rec.EventActionCode, rec.EventOutcome = codeInstancesTransferred, "C", outcomeSerious
	case associationaudit.EventDuplicate:
		// The resend as the SCP alone knows it: the pipeline's record of
		// it (resentAudit) adds the study and the patient from the
		// object held.
		rec.EventID = codeInstancesTransferred
		identicalResend(&rec)
		rec.Reason = resentReason
	case associationaudit.EventApplicationStart, associationaudit.EventApplicationStop:
		// A.5.3.1: the application started or stopped is the one
		// participant (what launched it is not known to it).
		rec.EventID, rec.EventActionCode, rec.EventOutcome = codeApplicationActivity, "E", outcomeSuccess
		rec.EventTypeCodes = []CodedValue{codeApplicationStart}
		if r.Event == associationaudit.EventApplicationStop {
			rec.EventTypeCodes = []CodedValue{codeApplicationStop}
		}
		app := codeApplicationRole
		rec.Participants = []AuditParticipant{{UserID: r.CalledAE, AlternativeID: "AETITLES=" + r.CalledAE, RoleIDCode: &app}}
		runFacts(&rec, r)
	case associationaudit.EventUncleanStopFound:
		// A running SCP found other runs' audit recording stopped
		// uncleanly: a Security Alert (A.5.3.11) of type 110133 Audit
		// Recording Stopped that our AE reports, a minor failure as the
		// start's unclean-stop is. It is no Application Activity: nothing
		// started. A.5.3.11's alert subject (optional) is named by a URI
		// or a node ID, neither of which names a run: the reason names
		// the runs, as the start's does, and PreviousRuns has the facts.
		rec.EventID, rec.EventActionCode, rec.EventOutcome = codeSecurityAlert, "E", outcomeMinorFailure
		rec.EventTypeCodes = []CodedValue{codeAuditRecordingStop, codeUncleanStopFound}
		app := codeApplicationRole
		rec.Participants = []AuditParticipant{{UserID: r.CalledAE, AlternativeID: "AETITLES=" + r.CalledAE, RoleIDCode: &app}}
		rec.PreviousRuns = r.PreviousRuns
	case associationaudit.EventCommitmentRefused:
		// Shaped as the records of a transaction (auditCommitment), of which this request got none.
		rec.EventID, rec.EventActionCode, rec.EventOutcome = codeInstancesTransferred, "R", outcomeMinorFailure
		rec.EventTypeCodes = []CodedValue{localCode("storage-commitment-refused", "Storage Commitment request refused")}
	}
	// A store-failed's C-STORE and a commitment-refused's N-ACTION: cut
	// short (an N-ACTION too: answered nothing, taken no more than one
	// refused) or refused, its response sent or not.
	answered(&rec, r)
	if r.StudyInstanceUID != "" {
		rec.ParticipantObjects = append(rec.ParticipantObjects, AuditParticipantObject{
			TypeCode: 2, TypeRole: 3, IDTypeCode: codeStudyInstanceUID, ID: r.StudyInstanceUID})
	}
	if r.SOPInstanceUID != "" {
		rec.ParticipantObjects = append(rec.ParticipantObjects, AuditParticipantObject{
			TypeCode: 2, TypeRole: 4, IDTypeCode: localCode("sop-instance-uid", "SOP Instance UID"), ID: r.SOPInstanceUID, SOPClassUID: r.SOPClassUID,
		})
	}
	return rec
}

// rejectCalledAE is the A-ASSOCIATE-RJ reason "called-AE-title-not-
// recognized" (PS3.8 9.3.4), result 1 source 1.
const rejectCalledAE = 7

// ourAE is the AE title an association record names as the SCP's, the
// destination: the called AE, which an accepted association called; on a
// refusal the SCP's own title (AETitle), since the peer may have called
// another, and none when a refusal written before records named it was
// refused for the title called (01 01 07).
func ourAE(r associationaudit.Record) string {
	switch {
	case r.Event != associationaudit.EventRejected:
		return r.CalledAE
	case r.AETitle != "":
		return r.AETitle
	case r.RejectReason == rejectCalledAE:
		return ""
	}
	return r.CalledAE
}

// runFacts marks an SCP start that found earlier runs stopped uncleanly,
// and a stop whose run lost records, as minor failures (A.5.3.1 leaves
// EventOutcomeIndicator unspecialized): the application started, or
// stopped, but the trail of its runs has holes. Each carries the facts as
// fields and an event type code of ours beside A.5.3.1's; a stop's reason
// (why it stopped) also says what was lost, a start's says it already.
func runFacts(rec *AuditRecord, r associationaudit.Record) {
	if r.Event == associationaudit.EventApplicationStart && len(r.PreviousRuns) > 0 {
		rec.Outcome, rec.EventOutcome, rec.PreviousRuns = OutcomeUncleanStop, outcomeMinorFailure, r.PreviousRuns
		rec.EventTypeCodes = append(rec.EventTypeCodes, codeUncleanStop)
	}
	if r.Event == associationaudit.EventApplicationStop && r.Lost != nil && r.Lost.Count > 0 {
		rec.EventOutcome, rec.LostRecords = outcomeMinorFailure, r.Lost
		rec.EventTypeCodes = append(rec.EventTypeCodes, codeRecordsLost)
		lost := fmt.Sprintf("%d audit records of this run lost before its stop", r.Lost.Count)
		if len(r.Lost.Seqs) > 0 {
			lost += ": seq " + seqList(r.Lost.Seqs)
			if n := uint64(len(r.Lost.Seqs)); n < r.Lost.Count {
				lost += fmt.Sprintf(" and %d more", r.Lost.Count-n)
			}
		}
		rec.Reason = strings.Join(slices.DeleteFunc([]string{rec.Reason, lost}, func(s string) bool { return s == "" }), "; ")
	}
}

var (
	codeUncleanStop      = localCode(OutcomeUncleanStop, "Previous run stopped uncleanly")
	codeUncleanStopFound = localCode(associationaudit.EventUncleanStopFound, "Run found stopped uncleanly by a running SCP")
	codeRecordsLost      = localCode("audit-records-lost", "Audit records lost")
)

// seqList writes sequence numbers with runs shortened: "3-5, 9".
func seqList(seqs []uint64) string {
	var parts []string
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", seqs[i], seqs[j]))
		} else {
			parts = append(parts, fmt.Sprint(seqs[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// Steps of a Storage Commitment transaction that are audited.
type commitmentStep int

const (
	commitmentRequested commitmentStep = iota + 1
	commitmentEvaluated
	commitmentReported
	commitmentUndeliverable
)

// codeTransactionUID identifies a Storage Commitment transaction as a participant object.
var codeTransactionUID = localCode("transaction-uid", "Storage Commitment Transaction UID")

// The outcomes of an instance's audit record: stored, stored beside a
// different object of its SOP Instance UID (both kept), an identical copy
// of an object already held (a resend: nothing new stored, indexed or
// announced), or quarantined by validation. A C-STORE the SCP refused has
// an association record instead (associationaudit.EventStoreFailed).
const (
	OutcomeStored    = "stored"
	OutcomeConflict  = "conflict"
	OutcomeDuplicate = associationaudit.EventDuplicate
	OutcomeRejected  = "rejected"
)

// identicalResend marks rec as the transfer of an instance already held
// with the same content: a success, action R, which A.5.3.7 gives a
// receiver that "already holds copies of the SOP Instances transferred,
// and has determined that no changes are needed to the copies held" (C is
// for instances it did not hold), with our type code.
func identicalResend(rec *AuditRecord) {
	rec.EventActionCode, rec.EventOutcome = "R", outcomeSuccess
	rec.EventTypeCodes = []CodedValue{codeIdenticalResend}
}

// codeIdenticalResend marks an instance's record as a resend of content
// already held (OutcomeDuplicate).
var codeIdenticalResend = localCode("identical-resend", "Identical resend of an instance already held")

// StoreNotAnsweredReason begins the reason of a store-failed record whose
// C-STORE the association's end cut short (NotAnswered): the sender got no
// response, so the record has no DIMSE status to name.
// ActionNotAnsweredReason begins that of a commitment-refused record whose
// N-ACTION (Storage Commitment request) the association's end cut short.
// Both are the reasons answerRules write.
var (
	StoreNotAnsweredReason  = answerRules[associationaudit.EventStoreFailed].notAnswered[0]
	ActionNotAnsweredReason = answerRules[associationaudit.EventCommitmentRefused].notAnswered[0]
)

// CutShortReasons begin the reasons of the store-failed records of
// C-STOREs cut short written before NotAnswered was (CutShort): the reason
// of this version, and that of the records before, which named the
// success status 0000 they were not answered. A copy of the store-failed
// answerRule's, for localstore's SQL.
var CutShortReasons = slices.Clone(answerRules[associationaudit.EventStoreFailed].notAnswered)

// answerRule is how the reason of the record of one outcome says whether
// the SCP answered its request: answered writes the reason by it and
// ReadAnswered reads the flags back from a reason by it, so a reason
// written reads back the flags it was written with, and a reason that
// means "not answered" or "not sent" is added to both sides at once.
type answerRule struct {
	// notAnswered begin the reason of a request the association's end
	// cut short (NotAnswered): the one written first, then those of
	// records written before, which are read only.
	notAnswered []string
	// refused and notSent are the text around the status in the reason
	// of a refusal, its response sent, or decided and not sent
	// (ResponseNotSent); the SCP's reason follows.
	refused, notSent statusAround
}

// statusAround is the text a refusal's reason has before (head) and after
// (tail) its status, which is statusLen characters long.
type statusAround struct{ head, tail string }

// statusLen is the length of the status a refusal's reason names
// (associationaudit.StoreStatus: four hex digits).
const statusLen = len("0000")

// reason is the reason of a refusal with status and the SCP's reason.
func (a statusAround) reason(status, reason string) string { return a.head + status + a.tail + reason }

// in reports whether reason is one a builds: head, a status, tail. Only
// the reason's start is read, so whatever the SCP's reason says (another
// record's reason quoted) does not count.
func (a statusAround) in(reason string) bool {
	rest, ok := strings.CutPrefix(reason, a.head)
	return ok && len(rest) >= statusLen && strings.HasPrefix(rest[statusLen:], a.tail)
}

// answerRules are the answerRule of each outcome whose record is of a
// request the SCP failed: a store-failed's C-STORE, a
// commitment-refused's N-ACTION (Storage Commitment request).
var answerRules = map[string]answerRule{
	associationaudit.EventStoreFailed:       newAnswerRule("C-STORE", "0000"),
	associationaudit.EventCommitmentRefused: newAnswerRule("N-ACTION"),
}

// newAnswerRule is the answerRule of the records of op (C-STORE,
// N-ACTION). legacyStatuses are statuses a refusal's reason named in
// records written before NotAnswered was, for a request not answered (a
// store-failed's 0000, the success status: associationaudit.NotAnswered);
// an N-ACTION cut short had no record before.
func newAnswerRule(op string, legacyStatuses ...string) answerRule {
	a := answerRule{
		notAnswered: []string{op + " not answered (the association ended before its data set did): "},
		refused:     statusAround{op + " status ", ": "},
		notSent:     statusAround{op + " status ", " decided, not sent (the association ended before the response was written): "},
	}
	for _, s := range legacyStatuses {
		a.notAnswered = append(a.notAnswered, a.refused.reason(s, ""))
	}
	return a
}

// saysNotAnswered reports whether reason begins with one of a's reasons
// of a request not answered.
func (a answerRule) saysNotAnswered(reason string) bool {
	return slices.ContainsFunc(a.notAnswered, func(p string) bool { return strings.HasPrefix(reason, p) })
}

// answered sets the reason and the answer flags of rec, the record of a
// request (C-STORE, N-ACTION) the SCP failed with r's status, by the
// answerRule of its outcome (none: rec is left as it is): cut short by the
// association's end, the sender answered nothing (NotAnswered: no status;
// a store-failed record written before said 0000), or refused, the
// refusal sent or not (ResponseNotSent).
func answered(rec *AuditRecord, r associationaudit.Record) {
	a, ok := answerRules[rec.Outcome]
	switch {
	case !ok:
	case associationaudit.NotAnswered(r.Status):
		rec.NotAnswered, rec.Reason = true, a.notAnswered[0]+r.Reason
	case r.NotSent:
		rec.ResponseNotSent, rec.Reason = true, a.notSent.reason(r.Status, r.Reason)
	default:
		rec.Reason = a.refused.reason(r.Status, r.Reason)
	}
}

// CutShort reports whether r is the record of a C-STORE the association's
// end cut short (the association ended mid data set: nothing stored,
// nothing answered, no refusal): a store-failed record NotAnswered, or,
// written before that was recorded, whose reason begins with one of
// CutShortReasons, and whose reason names no refusal decided before the
// end (dimse.RefusedBeforeEnd: that C-STORE was refused, as one answered
// with its status is, though the sender heard nothing). localstore's SQL
// reads records by the same rule.
func (r AuditRecord) CutShort() bool {
	if r.Outcome != associationaudit.EventStoreFailed || dimse.SaysRefusedBeforeEnd(r.Reason) {
		return false
	}
	return r.NotAnswered || answerRules[r.Outcome].saysNotAnswered(r.Reason)
}

// ReadAnswered sets r's NotAnswered and ResponseNotSent as a record of
// this version says them when r does not: a record written before they
// were recorded, or read from a projection without them (DynamoDB's
// byCallingAe and byDay), has them from its reason, by the answerRule of
// its outcome that answered wrote it by (a store-failed's NotAnswered is
// CutShort's). Every AuditStore reads its records through it, so the
// trail reads them alike on every path.
func (r *AuditRecord) ReadAnswered() {
	a, ok := answerRules[r.Outcome]
	if !ok {
		return
	}
	r.NotAnswered = r.NotAnswered || a.saysNotAnswered(r.Reason)
	r.ResponseNotSent = r.ResponseNotSent || a.notSent.in(r.Reason)
}

// resentReason is a duplicate record's reason. It names no object: a
// key holds UIDs, and the reason is projected where the trail promises no
// patient data (the byCallingAe and byDay indexes). The record's
// heldObjectKey names it.
const resentReason = "an identical object (same SOP Instance UID, same content) was already held; nothing new was stored"

// resentQuarantinedReason is the reason of a duplicate record whose held
// copy validation quarantined: that copy is not in the archive, and
// neither is this transfer, which the SCP answered with success.
const resentQuarantinedReason = "an identical object (same SOP Instance UID, same content) was received before and quarantined by validation; " +
	"nothing new was stored, and the instance is not in the archive (Storage Commitment fails it unless the site counts quarantined instances): " +
	"the quarantined copy and its findings are at quarantineKey; the sender has to correct the object and send it again, as sent it stays quarantined"

// conflictReason is a conflict record's reason; its heldObjectKey and
// heldContentIdentity name the object held before.
const conflictReason = "a different object with this SOP Instance UID was stored before (heldObjectKey, heldContentIdentity); both are kept"

// codeQuarantined marks the record of an instance validation quarantined,
// and that of a resend of one (beside codeIdenticalResend).
var codeQuarantined = localCode("quarantined", "Quarantined by validation")

// rejectedRecordID is the id of the rejected record of the content of
// identity (as recorded) at objectKey.
func rejectedRecordID(objectKey, identity string) string {
	return "rejected:" + objectKey + ":" + identity
}

// resentQuarantined makes rec, a duplicate's record, that of a resend of
// an object validation quarantined: a minor failure (the instance is not
// in the archive, as its first transfer's rejected record says), typed
// quarantined beside identical-resend, naming the quarantined copy
// (quarantined, heldQuarantine's) and the errors (findings) that
// quarantined it.
func resentQuarantined(rec *AuditRecord, quarantined string, findings []Finding) {
	rec.EventOutcome = outcomeMinorFailure
	rec.EventTypeCodes = append(rec.EventTypeCodes, codeQuarantined)
	rec.Reason = resentQuarantinedReason
	rec.QuarantineKey = quarantined
	rec.Findings = errorFindings(findings)
}

// heldQuarantine returns the quarantined copy of held, an invalid object
// the content of identity (as recorded) of instance sop: the copy its own
// rejected record names (AuditRecord.Quarantined), which for an object
// quarantined by a build before copies were named after their bytes is
// the one named after its key (LegacyQuarantineKeys); that build's copy
// is never renamed, and the new-style one exists only if the object was
// delivered again since. Without such a record (the object's own
// processing still to come; in DynamoDB also a record written before its
// bySop index existed, which it does not hold) it is the copy that
// processing makes (QuarantineKeys). The instance's records are read as
// Storage Commitment's judge reads them (instanceRecords).
func (p *Pipeline) heldQuarantine(ctx context.Context, held ObjectInfo, sop, identity string) (string, error) {
	rec, found, err := p.rejectedRecord(ctx, sop, rejectedRecordID(held.Key, identity))
	if err != nil {
		return "", fmt.Errorf("pipeline: the rejected record of the object a resend duplicates: %w", err)
	}
	if found {
		object, _ := rec.Quarantined()
		return object, nil
	}
	object, _ := QuarantineKeys(held)
	return object, nil
}

// rejectedRecord reads the rejected record id of an object of SOP
// Instance UID sop from the audit trail (by SOP Instance UID, bySop on
// DynamoDB), as instanceRecords walks them; found is false when it
// holds none there. An object that names no SOP Instance UID (an outside
// writer's bytes, no SCP metadata) has no record found by one: an empty
// sop is no access path, and would ask for every rejected record, which a
// trail partitioned by day refuses (ErrUnboundedQuery).
func (p *Pipeline) rejectedRecord(ctx context.Context, sop, id string) (AuditRecord, bool, error) {
	if sop == "" {
		return AuditRecord{}, false, nil
	}
	for r, err := range p.instanceRecords(ctx, AuditQuery{SOPInstanceUID: sop, Outcome: OutcomeRejected}) {
		if err != nil {
			return AuditRecord{}, false, fmt.Errorf("pipeline: audit: %w", err)
		}
		if r.ID == id {
			return r, true, nil
		}
	}
	return AuditRecord{}, false, nil
}

// errorFindings are the findings that quarantine an object.
func errorFindings(fs []Finding) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Severity == SeverityError {
			out = append(out, f)
		}
	}
	return out
}

// The outcomes of a Storage Commitment transaction's audit records: its
// request, its result (all committed, or failures), its delivery.
const (
	OutcomeCommitmentRequested     = "commitment-requested"
	OutcomeCommitted               = "committed"
	OutcomeCommitmentFailures      = "commitment-failures"
	OutcomeCommitmentReported      = "commitment-reported"
	OutcomeCommitmentUndeliverable = "commitment-undeliverable"
)

// OutcomeUncleanStop is the outcome of an SCP start record that names
// earlier runs found stopped uncleanly (associationaudit.Record's
// PreviousRuns): an application-start that is a finding too, so the trail
// can be filtered for it. A start without it keeps application-start.
const OutcomeUncleanStop = "unclean-stop"

// OutcomeUnparseableRecord is the outcome of the trace an SCP association
// record the pipeline could not parse leaves in the trail.
const OutcomeUnparseableRecord = "unparseable-record"

// InstanceOutcomes are the outcomes of the pipeline's record of each object
// it processed (duplicate also the SCP's of a resend it found held).
var InstanceOutcomes = []string{OutcomeStored, OutcomeConflict, OutcomeDuplicate, OutcomeRejected}

// AuditOutcomes are every outcome an audit record is written with, in the
// order the portal's filter offers them: an instance's (duplicate also
// being the event of the SCP's record of a resend it found held), an association's
// (its SCP records' events, among them unclean-stop-found: a running SCP
// found unclean stops), an SCP start's that found unclean stops, a
// Storage Commitment transaction's, and an
// unparseable association record's. pipelinetest's trail refuses any
// other, so the pipeline's tests hold the code to this list.
var AuditOutcomes = slices.Concat(
	InstanceOutcomes,
	slices.DeleteFunc(slices.Clone(associationaudit.Events), func(e string) bool { return e == OutcomeDuplicate }),
	[]string{OutcomeUncleanStop},
	[]string{OutcomeCommitmentRequested, OutcomeCommitted, OutcomeCommitmentFailures, OutcomeCommitmentReported, OutcomeCommitmentUndeliverable},
	[]string{OutcomeUnparseableRecord},
)

// auditCommitment appends the record of one step of a transaction, shaped after PS3.15 A.5.3.7 (DICOM
// Instances Transferred, action R: the instances were transferred before; what is recorded is our taking
// responsibility for them) with our event type codes for the step. One record per request and step: its id
// names the transaction and the request document.
func (p *Pipeline) auditCommitment(ctx context.Context, step commitmentStep, tx CommitmentTransaction, doc *CommitmentResultDoc) error {
	rec := AuditRecord{
		SchemaVersion: 1, Time: p.now(), EventID: codeInstancesTransferred, EventActionCode: "R",
		AuditSourceID: p.sourceID(), CallingAE: tx.CallingAE, CalledAE: tx.CalledAE, PeerAddr: tx.PeerAddr,
		AssociationID: tx.AssociationID, Participants: participants(tx.CallingAE, tx.CalledAE, tx.PeerAddr),
		ParticipantObjects: []AuditParticipantObject{{TypeCode: 2, TypeRole: 3, IDTypeCode: codeTransactionUID,
			ID: tx.TransactionUID, SOPClassUID: dicomuid.StorageCommitment, NumberOfSOP: tx.RefCount}},
	}
	id := "commitment:" + tx.ID + ":" + digest(tx.RequestKey)
	switch step {
	case commitmentRequested:
		rec.ID, rec.Outcome, rec.EventOutcome = id+":requested", OutcomeCommitmentRequested, outcomeSuccess
		rec.EventTypeCodes = []CodedValue{localCode("storage-commitment-requested", "Storage Commitment requested")}
		rec.Reason = fmt.Sprintf("N-ACTION for %d instances", tx.RefCount)
		if tx.DuplicateOf != "" {
			rec.Reason += "; Transaction UID reused with other instances: all fail (0131)"
		}
	case commitmentEvaluated:
		rec.ID, rec.Outcome, rec.EventOutcome = id+":result", OutcomeCommitted, outcomeSuccess
		rec.EventTypeCodes = []CodedValue{localCode("storage-commitment-result", "Storage Commitment result")}
		rec.Reason = fmt.Sprintf("%d of %d instances committed", tx.Committed, tx.RefCount)
		if tx.Failed > 0 {
			rec.Outcome, rec.EventOutcome = OutcomeCommitmentFailures, outcomeMinorFailure
			rec.Reason += "; failures " + failureSummary(doc.Result.Failed)
		}
	case commitmentReported:
		rec.ID, rec.Outcome, rec.EventOutcome = id+":reported", OutcomeCommitmentReported, outcomeSuccess
		rec.EventTypeCodes = []CodedValue{localCode("storage-commitment-reported", "Storage Commitment result delivered")}
		on := "a new association to the requesting AE"
		if tx.SameAssociation {
			on = "the request's own association"
		}
		rec.Reason = fmt.Sprintf("N-EVENT-REPORT answered 0000 on %s, after %s", on, attempts(tx.Attempts))
	case commitmentUndeliverable:
		rec.ID, rec.Outcome, rec.EventOutcome = id+":undeliverable", OutcomeCommitmentUndeliverable, outcomeSerious
		rec.EventTypeCodes = []CodedValue{localCode("storage-commitment-undeliverable", "Storage Commitment result not delivered")}
		rec.Reason = "N-EVENT-REPORT not delivered after " + attempts(tx.Attempts)
		if tx.LastError != "" {
			// Why, for the compliance officer and the PACS's administrator: the reporter's error names the AE,
			// the address and the reason (a refused connection, a failed handshake, a rejection, a status), by
			// lastError's rule: never a UID, nothing of a PACS's own text (its Error Comment), bounded; also as
			// an earlier version kept it.
			rec.Reason += "; last error: " + tx.LastErrorSaid()
		}
	}
	if doc != nil {
		for _, s := range listedStudies(doc.Studies) {
			rec.ParticipantObjects = append(rec.ParticipantObjects, AuditParticipantObject{
				TypeCode: 2, TypeRole: 3, IDTypeCode: codeStudyInstanceUID, ID: s})
		}
		if len(doc.Studies) == 1 {
			rec.StudyInstanceUID = doc.Studies[0]
		}
		if len(doc.Studies) > MaxListedStudies {
			rec.Reason += fmt.Sprintf("; %d studies, the first %d named (the result document lists them all)", len(doc.Studies), MaxListedStudies)
		}
	}
	rec.Day = rec.Time.Format(time.DateOnly)
	if _, err := p.Audit.Append(ctx, rec); err != nil {
		return fmt.Errorf("pipeline: audit: %w", err)
	}
	return nil
}

// attempts says n attempts in words.
func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

// failureSummary counts failures by reason, named as events name them:
// "0110 processing-failure ×1, 0112 no-such-object-instance ×3".
func failureSummary(fs []commitment.Failure) string {
	counts := map[uint16]int{}
	for _, f := range fs {
		counts[f.Reason]++
	}
	reasons := slices.Sorted(maps.Keys(counts))
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%04X %s ×%d", r, failureReasonName(r), counts[r])
	}
	return strings.Join(parts, ", ")
}
