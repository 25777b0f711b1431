// Package auditmessage renders audit trail records (pipeline.AuditRecord)
// as DICOM PS3.15 A.5 AuditMessage XML, the format ATNA audit repositories
// and security information and event management systems (SIEMs) read.
//
// A record gives the message of its event when that event's table in
// PS3.15 A.5.3 can be met (requirements.go), plus a User Authentication
// message (110114) when TLS identified the peer of an accepted or rejected
// association. Records of events no A.5.3 message can describe stay in the
// audit trail only (see sent). The messages carry what PS3.15 A.5.3 asks of
// their events and nothing more of the patient: a patient appears by its ID
// only (the participant object's name, which the schema requires, is left
// empty), never by name.
package auditmessage

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Message is one rendered AuditMessage.
type Message struct {
	// ID is stable for a record and the kind of message: rendering a record
	// again gives the same IDs, so a collector can drop duplicates that
	// at-least-once delivery lets through.
	ID string
	// EventOutcome is the message's EventOutcomeIndicator (0, 4, 8, 12).
	EventOutcome int
	// Time is the event's time (EventDateTime).
	Time time.Time
	// XML is the document, with its XML declaration, on one line.
	XML []byte
	// doc is what XML encodes, for Within.
	doc *auditMessage
}

// UserAuthenticationSuffix ends the ID of the User Authentication message a
// TLS-authenticated association's record also gives.
const UserAuthenticationSuffix = "/user-authentication"

// Codes from PS3.16 (DCM scheme) and PS3.15 A.5.1.2.
var (
	codeUserAuthentication = code{Code: "110114", System: "DCM", Display: "User Authentication"}
	codeLogin              = code{Code: "110122", System: "DCM", Display: "Login"}
	codeStudyInstanceUID   = "110180"
	codeApplicationRole    = code{Code: "110150", System: "DCM", Display: "Application"}
	codeDestinationRole    = code{Code: "110152", System: "DCM", Display: "Destination Role ID"}
	codePatientNumber      = code{Code: "2", System: "RFC-3881", Display: "Patient Number"}
	codeStudyUID           = code{Code: codeStudyInstanceUID, System: "DCM", Display: "Study Instance UID"}
	// The Security Alert of an association record the trail could not
	// read: CID 403 (Security Alert type codes) is extensible and has no
	// code for it.
	codeUnparseableRecord = code{Code: "unparseable-record", System: "dicom-ingest", Display: "Association record could not be read"}
	// The certificate TLS authenticated: no PS3.16 code names a
	// certificate fingerprint, so ours does (scheme "dicom-ingest").
	codeCertificate = code{Code: "x509-sha256", System: "dicom-ingest", Display: "X.509 certificate SHA-256 fingerprint"}
	// A Security Alert's subject (A.5.3.11) is named by a node ID or a
	// URI: the certificate's is the RFC 6920 "nih" URI of its SHA-256
	// fingerprint, which holds the same lower-case hex.
	codeURI = code{Code: "12", System: "RFC-3881", Display: "URI"}
)

// auditSourceApplicationServer is AuditSourceTypeCode 4 (A.5.1.2.1):
// application server process tier in a multi-tier system.
const auditSourceApplicationServer = "4"

// Participant object type codes and roles (A.5.1.2.2, A.5.1.2.3).
const (
	objectPerson           = 1
	objectSystem           = 2
	rolePatient            = 1
	roleReport             = 3
	roleSecurityResource   = 13
	defaultAuditSourceName = "dicom-ingest"
)

// EventIDs whose messages Render shapes beyond what the record holds.
const (
	eventInstancesTransferred = "110104"
	eventSecurityAlert        = "110113"
)

// alertDescription is the detail A.5.3.11 requires of an alert subject.
const alertDescription = "Alert Description"

// Render renders rec: none, one or two messages (see sent and
// userAuthentication). It fails on a record no message can be made of (one
// without an ID or an event ID) and on one whose message would not meet its
// event's table in A.5.3: that is a bug, never sent.
func Render(rec pipeline.AuditRecord) ([]Message, error) {
	if rec.ID == "" {
		return nil, fmt.Errorf("auditmessage: render: record without id")
	}
	if rec.EventID.Code == "" {
		return nil, fmt.Errorf("auditmessage: render %s record: no event id", idKind(rec.ID))
	}
	out := make([]Message, 0, 2)
	if sent(rec) {
		main := auditMessage{
			Event:        eventOf(rec),
			Participants: participantsOf(rec),
			Source:       sourceOf(rec),
			Objects:      objectsOf(rec),
		}
		m, err := encode(rec.ID, rec.EventOutcome, rec.Time, main)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if ua, ok := userAuthentication(rec); ok {
		m, err := encode(rec.ID+UserAuthenticationSuffix, ua.Event.outcome, rec.Time, ua)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// sent tells whether a record's own message is sent. A.5.3 lets a system
// report an activity without sending a message "each time the activity
// reported by that audit message occurs"; it does not let it send a
// message short of its event's table. These records stay in the audit
// trail (the portal, the table) and are not sent:
//
//   - an association accepted, released or aborted: A.5.3.3 (Begin
//     Transferring) and A.5.3.7 (Instances Transferred) require the studies
//     transferred and the patient, which an association's record does not
//     have (the SCP's records hold no patient data); each instance received
//     is sent as its own Instances Transferred. An accepted association TLS
//     identified still gives its User Authentication message.
//   - a C-STORE the SCP refused and a Storage Commitment request it
//     refused: no instance was transferred, and the record has no patient.
//   - the steps of a Storage Commitment transaction: A.5.3 has no Storage
//     Commitment event, and Instances Transferred requires the patient,
//     which the transaction's records do not name.
//   - a resend as the SCP alone records it (scp-task without the
//     pipeline, or the object held gone: it never read that object, so
//     names no patient); the pipeline's record of it, which names the
//     study and the patient of the object held, is sent as the
//     Instances Transferred of that transfer.
//   - an instance whose sender is unknown (no calling AE, no peer address:
//     its SCP metadata was lost), since A.5.3.7 requires the process that
//     sent the data.
//
// Records already in the trail render the same way: what is sent is
// decided here, from the record's outcome, not from what was stored.
func sent(rec pipeline.AuditRecord) bool {
	switch rec.Outcome {
	case associationaudit.EventAccepted, associationaudit.EventReleased, associationaudit.EventAborted,
		associationaudit.EventStoreFailed, associationaudit.EventCommitmentRefused,
		pipeline.OutcomeCommitmentRequested, pipeline.OutcomeCommitted, pipeline.OutcomeCommitmentFailures,
		pipeline.OutcomeCommitmentReported, pipeline.OutcomeCommitmentUndeliverable:
		return false
	}
	// The SCP's own record of a resend never read the object held, so it
	// has no content identity (ContentIdentity), and no patient: the study it names
	// is the one the resend's header named. The pipeline's record read
	// that object (its content identity, its study and the patient, when
	// the object names one), and is sent as a stored record of it would
	// be. Neither a patient nor a study tells them apart: an object may
	// name no patient, and the SCP's record names the study.
	if rec.Outcome == pipeline.OutcomeDuplicate && rec.ContentIdentity == "" {
		return false
	}
	if rec.EventID.Code == eventInstancesTransferred {
		return slices.ContainsFunc(rec.Participants, func(p pipeline.AuditParticipant) bool {
			return p.UserIsRequestor && (p.UserID != "" || p.NetworkAccess != "")
		})
	}
	return true
}

// idKind is what errors say of a record: the kind its id starts with
// ("instance", …), never the rest, which holds the SOP Instance UID (errors
// reach logs, see docs/operations/logging.md).
func idKind(id string) string {
	kind, _, _ := strings.Cut(id, ":")
	return kind
}

func encode(id string, outcome int, at time.Time, m auditMessage) (Message, error) {
	if err := check(m); err != nil {
		return Message{}, fmt.Errorf("auditmessage: render %s record: %w", idKind(id), err)
	}
	doc, err := marshal(&m)
	if err != nil {
		return Message{}, fmt.Errorf("auditmessage: render %s record: %w", idKind(id), err)
	}
	return Message{ID: id, EventOutcome: outcome, Time: at.UTC(), XML: doc, doc: &m}, nil
}

func marshal(m *auditMessage) ([]byte, error) {
	body, err := xml.Marshal(m)
	if err != nil {
		return nil, err
	}
	return append([]byte(strings.TrimSuffix(xml.Header, "\n")), body...), nil
}

// The schema's elements, in the order PS3.15 A.5.1 requires them.
type auditMessage struct {
	XMLName      xml.Name            `xml:"AuditMessage"`
	Event        eventIdentification `xml:"EventIdentification"`
	Participants []activeParticipant `xml:"ActiveParticipant"`
	Source       auditSource         `xml:"AuditSourceIdentification"`
	Objects      []participantObject `xml:"ParticipantObjectIdentification"`
}

type code struct {
	Code    string `xml:"csd-code,attr"`
	System  string `xml:"codeSystemName,attr"`
	Display string `xml:"originalText,attr"`
}

func codeOf(c pipeline.CodedValue) code {
	return code{Code: c.Code, System: c.System, Display: c.Display}
}

type eventIdentification struct {
	ActionCode  string `xml:"EventActionCode,attr,omitempty"`
	DateTime    string `xml:"EventDateTime,attr"`
	Outcome     string `xml:"EventOutcomeIndicator,attr"`
	EventID     code   `xml:"EventID"`
	TypeCodes   []code `xml:"EventTypeCode"`
	Description string `xml:"EventOutcomeDescription,omitempty"`
	outcome     int
}

type activeParticipant struct {
	UserID            string `xml:"UserID,attr"`
	AlternativeUserID string `xml:"AlternativeUserID,attr,omitempty"`
	UserName          string `xml:"UserName,attr,omitempty"`
	UserIsRequestor   bool   `xml:"UserIsRequestor,attr"`
	NetworkAccess     string `xml:"NetworkAccessPointID,attr,omitempty"`
	NetworkType       string `xml:"NetworkAccessPointTypeCode,attr,omitempty"`
	Roles             []code `xml:"RoleIDCode"`
}

type auditSource struct {
	SourceID  string       `xml:"AuditSourceID,attr"`
	TypeCodes []sourceType `xml:"AuditSourceTypeCode"`
}

type sourceType struct {
	Code string `xml:"csd-code,attr"`
}

type participantObject struct {
	ID           string              `xml:"ParticipantObjectID,attr"`
	TypeCode     string              `xml:"ParticipantObjectTypeCode,attr,omitempty"`
	Role         string              `xml:"ParticipantObjectTypeCodeRole,attr,omitempty"`
	IDType       code                `xml:"ParticipantObjectIDTypeCode"`
	Name         string              `xml:"ParticipantObjectName"` // the schema requires a name or a query
	Details      []valuePair         `xml:"ParticipantObjectDetail"`
	Descriptions []objectDescription `xml:"ParticipantObjectDescription"`
}

type valuePair struct {
	Type  string `xml:"type,attr"`
	Value string `xml:"value,attr"` // base64, as the schema asks
	text  string // what Value encodes
}

type objectDescription struct {
	SOPClasses []sopClass `xml:"SOPClass"`
}

type sopClass struct {
	UID       string     `xml:"UID,attr,omitempty"`
	Count     int        `xml:"NumberOfInstances,attr"`
	Instances []instance `xml:"Instance"`
}

type instance struct {
	UID string `xml:"UID,attr"`
}

func detail(typ, value string) valuePair {
	return valuePair{Type: typ, Value: base64.StdEncoding.EncodeToString([]byte(value)), text: value}
}

// dateTime is xsd:dateTime in UTC with millisecond precision.
func dateTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

func eventOf(rec pipeline.AuditRecord) eventIdentification {
	ev := eventIdentification{
		ActionCode: rec.EventActionCode, DateTime: dateTime(rec.Time),
		Outcome: strconv.Itoa(rec.EventOutcome), outcome: rec.EventOutcome,
		EventID: codeOf(rec.EventID), Description: description(rec),
	}
	for _, c := range rec.EventTypeCodes {
		ev.TypeCodes = append(ev.TypeCodes, codeOf(c))
	}
	if rec.EventID.Code == eventSecurityAlert && len(ev.TypeCodes) == 0 && rec.Outcome == pipeline.OutcomeUnparseableRecord {
		ev.TypeCodes = []code{codeUnparseableRecord}
	}
	return ev
}

// description is the record's reason with the validation errors that made
// it: findings name codes and tags, never patient data.
func description(rec pipeline.AuditRecord) string {
	parts := []string{}
	if rec.Reason != "" {
		parts = append(parts, rec.Reason)
	}
	for _, f := range rec.Findings {
		s := f.Code
		if f.Tag != "" {
			s += " " + f.Tag
		}
		if f.Message != "" {
			s += ": " + f.Message
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func participantsOf(rec pipeline.AuditRecord) []activeParticipant {
	var out []activeParticipant
	for _, p := range rec.Participants {
		if p.UserID == "" && p.NetworkAccess == "" {
			// Records appended before the pipeline left out an AE
			// title no peer named have a destination naming no one.
			continue
		}
		ap := activeParticipant{
			UserID: p.UserID, AlternativeUserID: p.AlternativeID, UserIsRequestor: p.UserIsRequestor,
			NetworkAccess: p.NetworkAccess,
		}
		if ap.AlternativeUserID == "AETITLES=" {
			ap.AlternativeUserID = ""
		}
		if p.NetworkAccess != "" && p.NetworkType != 0 {
			ap.NetworkType = strconv.Itoa(p.NetworkType)
		}
		if ap.UserID == "" && p.UserIsRequestor && p.NetworkAccess != "" {
			// A peer refused before it named itself is known by its address.
			ap.UserID = p.NetworkAccess
		}
		if p.RoleIDCode != nil {
			ap.Roles = []code{codeOf(*p.RoleIDCode)}
		}
		if p.UserIsRequestor && rec.TLS != nil {
			ap.UserName = rec.TLS.Subject
		}
		out = append(out, ap)
	}
	switch rec.EventID.Code {
	case eventSecurityAlert:
		return alertParticipants(rec, out)
	case eventInstancesTransferred:
		if !slices.ContainsFunc(out, func(p activeParticipant) bool { return !p.UserIsRequestor }) {
			// The called AE is unknown (metadata rebuilt from the file):
			// the process that received the data is still us.
			out = append(out, activeParticipant{UserID: sourceID(rec), Roles: []code{codeDestinationRole}})
		}
	}
	if len(out) == 0 {
		// The schema needs one participant: without a peer it is the
		// reporting process, us.
		out = append(out, activeParticipant{UserID: sourceID(rec)})
	}
	return out
}

// alertParticipants recasts an association's participants for a Security
// Alert (A.5.3.11): the reporting process is our AE (the record's
// destination, or the audit source when it names none: the title a peer
// called may not be ours), named with role 110150 Application; the peer is
// a performing process, whose UserIsRequestor "shall be FALSE", and has no
// role there. The trail's records keep the peer as the requestor with role
// Source and our AE as Destination.
func alertParticipants(rec pipeline.AuditRecord, ps []activeParticipant) []activeParticipant {
	reporter := activeParticipant{UserID: sourceID(rec), Roles: []code{codeApplicationRole}}
	var others []activeParticipant
	for _, p := range ps {
		if !p.UserIsRequestor {
			reporter.UserID, reporter.AlternativeUserID = p.UserID, p.AlternativeUserID
			continue
		}
		p.UserIsRequestor, p.Roles = false, nil
		others = append(others, p)
	}
	return append([]activeParticipant{reporter}, others...)
}

func sourceID(rec pipeline.AuditRecord) string {
	if rec.AuditSourceID == "" {
		return defaultAuditSourceName
	}
	return rec.AuditSourceID
}

func sourceOf(rec pipeline.AuditRecord) auditSource {
	return auditSource{SourceID: sourceID(rec), TypeCodes: []sourceType{{Code: auditSourceApplicationServer}}}
}

func objectsOf(rec pipeline.AuditRecord) []participantObject {
	var out []participantObject
	for _, o := range rec.ParticipantObjects {
		po := participantObject{ID: o.ID, IDType: codeOf(o.IDTypeCode)}
		if o.TypeCode != 0 {
			po.TypeCode = strconv.Itoa(o.TypeCode)
		}
		if o.TypeRole != 0 {
			po.Role = strconv.Itoa(o.TypeRole)
		}
		if o.TypeCode != objectPerson {
			// A person's name is patient data A.5 does not require.
			po.Name = o.Name
		}
		if o.SOPClassUID != "" {
			sc := sopClass{UID: o.SOPClassUID, Count: max(o.NumberOfSOP, 1)}
			if o.IDTypeCode.Code == codeStudyInstanceUID && o.NumberOfSOP == 1 && rec.SOPInstanceUID != "" {
				sc.Instances = []instance{{UID: rec.SOPInstanceUID}}
			}
			po.Descriptions = []objectDescription{{SOPClasses: []sopClass{sc}}}
		}
		out = append(out, po)
	}
	if rec.EventID.Code == eventInstancesTransferred {
		out = transferObjects(rec, out)
		if i := slices.IndexFunc(out, func(o participantObject) bool { return o.IDType.Code == codeStudyInstanceUID }); i >= 0 {
			out[i].Details = append(out[i].Details, transferDetails(rec)...)
		}
	}
	switch {
	case rec.TLS == nil:
	case rec.EventID.Code == eventSecurityAlert:
		out = append(out, alertSubject(rec))
	default:
		out = append(out, certificateObject(rec.TLS))
	}
	return out
}

// transferObjects completes an instance's Instances Transferred (A.5.3.7):
// the study and the patient are required. The pipeline leaves them out of
// the record when the instance did not name them (a quarantined instance
// without a Study Instance UID; Patient ID and Patient's Name are type 2,
// so may be empty), and records written before it always named the
// patient are in the trail: the message names them with an empty ID, which
// is what the instance said.
func transferObjects(rec pipeline.AuditRecord, objs []participantObject) []participantObject {
	hasStudy := slices.ContainsFunc(objs, func(o participantObject) bool { return o.IDType.Code == codeStudyInstanceUID })
	hasPatient := slices.ContainsFunc(objs, func(o participantObject) bool {
		return o.TypeCode == strconv.Itoa(objectPerson) && o.Role == strconv.Itoa(rolePatient)
	})
	if !hasStudy {
		study := participantObject{ID: rec.StudyInstanceUID, TypeCode: strconv.Itoa(objectSystem), Role: strconv.Itoa(roleReport), IDType: codeStudyUID}
		if rec.SOPClassUID != "" {
			sc := sopClass{UID: rec.SOPClassUID, Count: 1}
			if rec.SOPInstanceUID != "" {
				sc.Instances = []instance{{UID: rec.SOPInstanceUID}}
			}
			study.Descriptions = []objectDescription{{SOPClasses: []sopClass{sc}}}
		}
		objs = append([]participantObject{study}, objs...)
	}
	if !hasPatient {
		objs = append(objs, participantObject{ID: rec.PatientID, TypeCode: strconv.Itoa(objectPerson), Role: strconv.Itoa(rolePatient), IDType: codePatientNumber})
	}
	return objs
}

// Detail types of the object an instance's Instances Transferred names.
const (
	DetailObjectKey           = "ObjectKey"
	DetailContentIdentity     = "ContentIdentity"
	DetailQuarantineKey       = "QuarantineKey"
	DetailHeldObjectKey       = "HeldObjectKey"
	DetailHeldContentIdentity = "HeldContentIdentity"
)

// transferDetails are what the trail's record of an instance says of the
// object stored, as ParticipantObjectDetail type-value pairs of the study
// object, which describes the instance (its SOP class and SOP Instance
// UID): where it is stored (ObjectKey), its content identity, a rejected
// instance's quarantined copy (QuarantineKey, also on a resend of one),
// and the object held before that a conflict differs from or a resend
// repeats (HeldObjectKey, HeldContentIdentity). A.5.1 has
// ParticipantObjectDetail for implementation-defined details of the
// object, and A.5.3.7 does not specialize it; none is patient data (a key
// holds UIDs, which the message names anyway). A record written before a
// field existed gives no detail of it.
func transferDetails(rec pipeline.AuditRecord) []valuePair {
	var out []valuePair
	for _, d := range []struct{ typ, value string }{
		{DetailObjectKey, rec.ObjectKey},
		{DetailContentIdentity, rec.ContentIdentity},
		{DetailQuarantineKey, rec.QuarantineKey},
		{DetailHeldObjectKey, rec.HeldObjectKey},
		{DetailHeldContentIdentity, rec.HeldContentIdentity},
	} {
		if d.value != "" {
			out = append(out, detail(d.typ, d.value))
		}
	}
	return out
}

// alertText describes a Security Alert: the record's reason, or its outcome.
func alertText(rec pipeline.AuditRecord) string {
	if d := description(rec); d != "" {
		return d
	}
	return rec.Outcome
}

// certificateObject names the peer's client certificate: its fingerprint as
// the ID, its subject as the name, the issuer, the serial number (and the
// certificate name the allowlist bound it to) as details.
func certificateObject(c *associationaudit.TLSPeer) participantObject {
	po := participantObject{
		ID: c.SHA256, TypeCode: strconv.Itoa(objectSystem), Role: strconv.Itoa(roleSecurityResource),
		IDType: codeCertificate, Name: c.Subject,
		Details: []valuePair{detail("Issuer", c.Issuer)},
	}
	if c.Serial != "" {
		po.Details = append(po.Details, detail("SerialNumber", c.Serial))
	}
	if c.CertificateName != "" {
		po.Details = append(po.Details, detail("CertificateName", c.CertificateName))
	}
	return po
}

// alertSubject is the certificate a Security Alert is about, as A.5.3.11's
// Alert Subject: a system object (2) in the role of a security resource
// (13), identified by a URI (the nih URI of its fingerprint), with an
// Alert Description of what it was refused for: presented in a handshake
// that verification failed, or valid but not the calling AE title's.
func alertSubject(rec pipeline.AuditRecord) participantObject {
	po := certificateObject(rec.TLS)
	po.ID, po.IDType = "nih:sha-256;"+rec.TLS.SHA256, codeURI
	po.Details = append([]valuePair{detail(alertDescription, alertText(rec))}, po.Details...)
	return po
}

// userAuthentication is the User Authentication message (A.5.3.12) of an
// association TLS identified the peer of: a login, successful when the
// association was accepted, failed when it was rejected. The user is the
// certificate (its subject; its allowlist name or fingerprint when the
// subject is empty) at the peer's address, both of which A.5.3.12 requires:
// without an address there is no message.
func userAuthentication(rec pipeline.AuditRecord) (auditMessage, bool) {
	host := associationaudit.PeerHost(rec.PeerAddr)
	if rec.TLS == nil || host == "" {
		return auditMessage{}, false
	}
	userID := rec.TLS.Subject
	for _, alt := range []string{rec.TLS.CertificateName, rec.TLS.SHA256} {
		if userID == "" {
			userID = alt
		}
	}
	if userID == "" {
		return auditMessage{}, false
	}
	outcome := 0
	switch rec.Outcome {
	case associationaudit.EventAccepted:
	case associationaudit.EventRejected:
		outcome = 4
	default:
		return auditMessage{}, false
	}
	user := activeParticipant{
		UserID: userID, UserName: rec.TLS.CertificateName, UserIsRequestor: true,
		NetworkAccess: host, NetworkType: "1",
	}
	if net.ParseIP(host) != nil {
		user.NetworkType = "2"
	}
	if rec.CallingAE != "" {
		user.AlternativeUserID = "AETITLES=" + rec.CallingAE
	}
	parts := []activeParticipant{user}
	for _, p := range rec.Participants {
		// Our AE, the record's destination: never the title a refused
		// peer called, which need not be ours.
		if !p.UserIsRequestor && p.UserID != "" {
			parts = append(parts, activeParticipant{UserID: p.UserID, AlternativeUserID: p.AlternativeID})
			break
		}
	}
	return auditMessage{
		Event: eventIdentification{
			ActionCode: "E", DateTime: dateTime(rec.Time), Outcome: strconv.Itoa(outcome), outcome: outcome,
			EventID: codeUserAuthentication, TypeCodes: []code{codeLogin}, Description: rec.Reason,
		},
		Participants: parts,
		Source:       sourceOf(rec),
		Objects:      []participantObject{certificateObject(rec.TLS)},
	}, true
}
