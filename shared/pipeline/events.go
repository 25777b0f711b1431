package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/durations"
)

// EventPatient is the patient data an event may carry, per PatientDataPolicy.
type EventPatient struct {
	PatientID       string            `json:"patientId,omitempty"`
	AccessionNumber string            `json:"accessionNumber,omitempty"`
	Name            *PersonNameGroups `json:"name,omitempty"`
	BirthDate       string            `json:"birthDate,omitempty"`
	Sex             string            `json:"sex,omitempty"`
}

// InstanceStoredDetail is the detail of "Instance Stored" (schema
// schemas/instance-stored.v1.json).
type InstanceStoredDetail struct {
	SchemaVersion      int       `json:"schemaVersion"`
	EventID            string    `json:"eventId"`
	ObjectKey          string    `json:"objectKey"`
	ObjectURI          string    `json:"objectUri"`
	MetadataKey        string    `json:"metadataKey"`
	MetadataURI        string    `json:"metadataUri"`
	SummaryKey         string    `json:"summaryKey"`
	SOPClassUID        string    `json:"sopClassUid"`
	SOPInstanceUID     string    `json:"sopInstanceUid"`
	StudyInstanceUID   string    `json:"studyInstanceUid"`
	SeriesInstanceUID  string    `json:"seriesInstanceUid"`
	Modality           string    `json:"modality"`
	TransferSyntaxUID  string    `json:"transferSyntaxUid"`
	Size               int64     `json:"size"`
	SHA256             string    `json:"sha256"`
	ReceivedAt         time.Time `json:"receivedAt"`
	CallingAE          string    `json:"callingAe"`
	CalledAE           string    `json:"calledAe"`
	AssociationID      string    `json:"associationId"`
	Conflict           bool      `json:"conflict"`
	StudyInstanceCount int       `json:"studyInstanceCount"`
	StudySeriesCount   int       `json:"studySeriesCount"`
	// PatientMismatch: this instance's Patient ID, Name or Birth Date
	// differs from its study's (a patient-mismatch warning says which).
	// Never omitted, though the schema has it optional for archived events
	// from before it (emittedAlways in the schema tests).
	PatientMismatch bool          `json:"patientMismatch"`
	Warnings        []Finding     `json:"warnings,omitempty"`
	Patient         *EventPatient `json:"patient,omitempty"`
}

// InstanceRejectedDetail is the detail of "Instance Rejected" (schema
// schemas/instance-rejected.v1.json). It never carries patient data.
type InstanceRejectedDetail struct {
	SchemaVersion     int       `json:"schemaVersion"`
	EventID           string    `json:"eventId"`
	ObjectKey         string    `json:"objectKey"`
	ObjectURI         string    `json:"objectUri"`
	QuarantineKey     string    `json:"quarantineKey"`
	QuarantineURI     string    `json:"quarantineUri"`
	FindingsKey       string    `json:"findingsKey"`
	FindingsURI       string    `json:"findingsUri"`
	SOPClassUID       string    `json:"sopClassUid,omitempty"`
	SOPInstanceUID    string    `json:"sopInstanceUid,omitempty"`
	StudyInstanceUID  string    `json:"studyInstanceUid,omitempty"`
	SeriesInstanceUID string    `json:"seriesInstanceUid,omitempty"`
	CallingAE         string    `json:"callingAe"`
	CalledAE          string    `json:"calledAe"`
	AssociationID     string    `json:"associationId"`
	ReceivedAt        time.Time `json:"receivedAt"`
	Size              int64     `json:"size"`
	SHA256            string    `json:"sha256"`
	Findings          []Finding `json:"findings"`
}

// StudyDetailEvent is the detail of "Study Received" and "Study Updated"
// (schemas/study-received.v1.json, schemas/study-updated.v1.json).
type StudyDetailEvent struct {
	SchemaVersion    int    `json:"schemaVersion"`
	EventID          string `json:"eventId"`
	StudyInstanceUID string `json:"studyInstanceUid"`
	Version          int64  `json:"version"`
	Revision         int64  `json:"revision"`
	InstanceCount    int    `json:"instanceCount"`
	SeriesCount      int    `json:"seriesCount"`
	ConflictCount    int    `json:"conflictCount"`
	// RejectedCount counts the study's instances validation rejected
	// (quarantined, each with its Instance Rejected event) and not stored
	// since: the study is incomplete by that many. Omitted when none; a
	// count, never a list, so any number keeps the event's size.
	RejectedCount int `json:"rejectedCount,omitempty"`
	// PatientMismatch: the study's instances disagree on the patient.
	// PatientMismatch and Completion are never omitted, though the schemas
	// have them optional for archived events from before them.
	PatientMismatch bool  `json:"patientMismatch"`
	TotalBytes      int64 `json:"totalBytes"`
	// Modalities are the study's distinct modalities, sorted, those the
	// study record keeps (StudySummary.AddModality) that fit
	// maxEventPointerBytes (eventModalities); ModalityCount counts them
	// all (StudyDetail.ModalityCount), never omitted (optional in the
	// schemas for archived events from before it).
	Modalities    []string  `json:"modalities"`
	ModalityCount int       `json:"modalityCount"`
	CallingAEs    []string  `json:"callingAes"`
	StudyDate     string    `json:"studyDate,omitempty"`
	FirstReceived time.Time `json:"firstReceived"`
	LastReceived  time.Time `json:"lastReceived"`
	// LastSent is when the site last sent any of the study's instances,
	// a resend of instances held included (StudySummary.Sent): later than
	// LastReceived when the site sent again only what the study held,
	// which announces nothing itself. Never omitted, though the schemas
	// have it optional for archived events from before it.
	LastSent    time.Time `json:"lastSent"`
	QuietPeriod string    `json:"quietPeriod"`
	// Completion says what made the study complete: CompletionStorageCommitment (the sender asked for
	// commitment of its instances and all were committed) or CompletionQuietPeriod.
	Completion string        `json:"completion"`
	Series     []EventSeries `json:"series"`
	Patient    *EventPatient `json:"patient,omitempty"`
}

// EventSeries is a series in a study event, with pointers to its
// instances' objects and metadata.
type EventSeries struct {
	SeriesInstanceUID string          `json:"seriesInstanceUid"`
	Modality          string          `json:"modality,omitempty"`
	InstanceCount     int             `json:"instanceCount"`
	Instances         []EventInstance `json:"instances,omitempty"`
}

// EventInstance points at one content's object and metadata. A series
// lists every content of the study: a conflicting resend is listed under
// its SOP Instance UID a second time, with Conflict (the first content has
// none), while the series' InstanceCount counts SOP Instances.
type EventInstance struct {
	SOPInstanceUID string `json:"sopInstanceUid"`
	ObjectURI      string `json:"objectUri"`
	MetadataURI    string `json:"metadataUri"`
	Conflict       bool   `json:"conflict,omitempty"`
}

// maxEventPointerBytes bounds the modalities, series and instance pointers
// in a study event so it stays under EventBridge's 256 KiB entry limit with
// the rest of the event, counted in that order: the modalities listed while
// they fit (modalityCount counts them all); a study whose pointers do not
// fit lists series only, and subscribers collect its instances from their
// Instance Stored events; one whose series do not fit lists none
// (seriesCount counts them). A count could not bound it: 450 instances of
// 64-character UIDs came to 300 KB, an event PutEvents refused on every
// run.
const maxEventPointerBytes = 192 << 10

// eventSeriesBytes is what a series, without its instances, counts against
// maxEventPointerBytes: its size in a study event's JSON. The series count
// as the pointers do: a study of a series per instance had no bound, and one
// of 2,000 series of 64-character UIDs made a 215 KB event listed series
// only, 5,000 a 535 KB one.
func eventSeriesBytes(s EventSeries) int {
	b, err := json.Marshal(s)
	if err != nil {
		// Strings and an int: never. Counted as too large to list.
		return maxEventPointerBytes + 1
	}
	return len(b) + len(",")
}

// eventModalities is the part of modalities (a study's, distinct and
// sorted) a study event lists, the first of them that fit
// maxEventPointerBytes, and the bytes they count against it: their size in
// the event's JSON. The modalities had no bound: a sender inventing 20,000
// Modality values of 16 characters made a 381 KB event, which PutEvents
// refuses on every run, and the study was never announced. Those cut go
// unlisted, as a study's series do that do not fit, but the first ones
// stay, for the rules that match on them: a real study has a handful.
func eventModalities(modalities []string) ([]string, int) {
	size := 0
	for i, m := range modalities {
		b, err := json.Marshal(m)
		n := len(b) + len(",")
		if err != nil || size+n > maxEventPointerBytes {
			return modalities[:i], size
		}
		size += n
	}
	return modalities, size
}

// maxURIBase is the base the pointer budget counts before each key (what
// uri puts there): the longest an S3 base can be, "s3://", a bucket name of
// 63 characters and "/". Counting it whatever the base in use makes the
// listing a matter of the keys alone, the same in both modes: counted with
// the base in use, local mode's portal base (30 characters) listed studies
// of some 320 instances of 64-character UIDs that a deployment with a long
// bucket name listed as series only, so a consumer tried against make run
// met a detail without instances only in AWS.
const maxURIBase = len("s3://") + 63 + len("/")

// eventPointerBytes is what an instance pointer counts against
// maxEventPointerBytes: its size in a study event's JSON with base bytes
// before each of its keys.
func eventPointerBytes(in InstanceRecord, base int) int {
	n := len(`{"sopInstanceUid":"","objectUri":"","metadataUri":""},`) + len(in.SOPInstanceUID) +
		len(in.ObjectKey) + len(in.MetadataKey) + 2*base
	if in.Conflict {
		n += len(`,"conflict":true`)
	}
	return n
}

func (p *Pipeline) patient(in InstanceRecord) *EventPatient {
	switch p.PatientData {
	case PatientDataID:
		return &EventPatient{PatientID: in.PatientID, AccessionNumber: in.AccessionNumber}
	case PatientDataFull:
		n := ParsePersonName(in.PatientName)
		return &EventPatient{PatientID: in.PatientID, AccessionNumber: in.AccessionNumber, Name: &n, BirthDate: in.PatientBirthDate, Sex: in.PatientSex}
	}
	return nil
}

func (p *Pipeline) studyDetail(ctx context.Context, s StudySummary, version int64, completion string) (StudyDetailEvent, error) {
	quiet := p.QuietPeriod
	if quiet <= 0 {
		quiet = DefaultQuietPeriod
	}
	d := StudyDetailEvent{
		SchemaVersion: 1, StudyInstanceUID: s.StudyInstanceUID, Version: version, Revision: s.Revision,
		InstanceCount: s.InstanceCount, SeriesCount: s.SeriesCount, ConflictCount: s.ConflictCount,
		PatientMismatch: s.PatientMismatch(), TotalBytes: s.TotalBytes, CallingAEs: s.CallingAEs, StudyDate: s.StudyDate,
		FirstReceived: s.FirstReceived, LastReceived: s.LastReceived, LastSent: s.Sent(), QuietPeriod: durations.Format(quiet),
		Completion: completion, Series: []EventSeries{},
	}
	full, err := p.Index.GetStudy(ctx, s.StudyInstanceUID)
	if err != nil {
		return d, fmt.Errorf("pipeline: get study: %w", err)
	}
	modalities, size := eventModalities(s.Modalities)
	d.Modalities = modalities
	d.ModalityCount = max(len(s.Modalities), full.ModalityCount())
	d.RejectedCount = full.RejectedCount
	idx := map[string]int{}
	for _, se := range full.Series {
		idx[se.SeriesInstanceUID] = len(d.Series)
		es := EventSeries{SeriesInstanceUID: se.SeriesInstanceUID, Modality: se.Modality, InstanceCount: se.InstanceCount}
		d.Series = append(d.Series, es)
		size += eventSeriesBytes(es)
	}
	if size > maxEventPointerBytes {
		// Some 1,800 series of 64-character UIDs (fewer with many
		// modalities): listed, they would take the event over
		// EventBridge's entry limit.
		d.Series = []EventSeries{}
	}
	base := max(len(p.uri("")), maxURIBase)
	for _, in := range full.Instances {
		size += eventPointerBytes(in, base)
	}
	if size <= maxEventPointerBytes {
		for _, in := range full.Instances {
			if i, ok := idx[in.SeriesInstanceUID]; ok {
				d.Series[i].Instances = append(d.Series[i].Instances,
					EventInstance{SOPInstanceUID: in.SOPInstanceUID, ObjectURI: p.uri(in.ObjectKey), MetadataURI: p.uri(in.MetadataKey), Conflict: in.Conflict})
			}
		}
	}
	if len(full.Instances) > 0 {
		d.Patient = p.patient(InstanceRecord{PatientID: s.PatientID, AccessionNumber: s.AccessionNumber, PatientName: s.PatientName, PatientBirthDate: s.PatientBirthDate, PatientSex: s.PatientSex})
	}
	return d, nil
}

// NormalizedSummary is the normalized metadata sidecar
// (metadata/….summary.json): text in UTF-8, names split into components,
// dates and times in ISO 8601.
type NormalizedSummary struct {
	SchemaVersion        int               `json:"schemaVersion"`
	ObjectKey            string            `json:"objectKey"`
	MetadataKey          string            `json:"metadataKey"`
	SHA256               string            `json:"sha256"`
	Size                 int64             `json:"size"`
	ReceivedAt           time.Time         `json:"receivedAt"`
	TransferSyntaxUID    string            `json:"transferSyntaxUid"`
	SpecificCharacterSet []string          `json:"specificCharacterSet,omitempty"`
	SOPClassUID          string            `json:"sopClassUid"`
	SOPInstanceUID       string            `json:"sopInstanceUid"`
	StudyInstanceUID     string            `json:"studyInstanceUid"`
	SeriesInstanceUID    string            `json:"seriesInstanceUid"`
	Modality             string            `json:"modality"`
	InstanceNumber       string            `json:"instanceNumber,omitempty"`
	SeriesNumber         string            `json:"seriesNumber,omitempty"`
	SeriesDescription    string            `json:"seriesDescription,omitempty"`
	StudyDate            string            `json:"studyDate,omitempty"`
	StudyTime            string            `json:"studyTime,omitempty"`
	StudyDescription     string            `json:"studyDescription,omitempty"`
	AccessionNumber      string            `json:"accessionNumber,omitempty"`
	PatientID            string            `json:"patientId,omitempty"`
	PatientName          *PersonNameGroups `json:"patientName,omitempty"`
	PatientBirthDate     string            `json:"patientBirthDate,omitempty"`
	PatientSex           string            `json:"patientSex,omitempty"`
	Findings             []Finding         `json:"findings,omitempty"`
}

func (p *Pipeline) summary(in *inspection, inst InstanceRecord) NormalizedSummary {
	s := NormalizedSummary{
		SchemaVersion: 1, ObjectKey: inst.ObjectKey, MetadataKey: inst.MetadataKey, SHA256: inst.ContentIdentity,
		Size: inst.Size, ReceivedAt: inst.ReceivedAt, TransferSyntaxUID: inst.TransferSyntaxUID,
		SpecificCharacterSet: in.dec.cs.terms, SOPClassUID: inst.SOPClassUID, SOPInstanceUID: inst.SOPInstanceUID,
		StudyInstanceUID: inst.StudyInstanceUID, SeriesInstanceUID: inst.SeriesInstanceUID, Modality: inst.Modality,
		InstanceNumber: inst.InstanceNumber, SeriesNumber: inst.SeriesNumber, SeriesDescription: inst.SeriesDescription,
		StudyDate: inst.StudyDate, StudyTime: inst.StudyTime, StudyDescription: inst.StudyDescription,
		AccessionNumber: inst.AccessionNumber, PatientID: inst.PatientID, PatientBirthDate: inst.PatientBirthDate,
		PatientSex: inst.PatientSex, Findings: in.findings,
	}
	if inst.PatientName != "" {
		n := ParsePersonName(inst.PatientName)
		s.PatientName = &n
	}
	return s
}

// CommitmentCompletedDetail is the detail of "Storage Commitment Completed" (schema
// schemas/storage-commitment-completed.v1.json): a transaction whose result was delivered, or given up on.
// It carries UIDs and counts, never patient data.
type CommitmentCompletedDetail struct {
	SchemaVersion  int       `json:"schemaVersion"`
	EventID        string    `json:"eventId"`
	TransactionUID string    `json:"transactionUid"`
	CallingAE      string    `json:"callingAe"`
	AssociationID  string    `json:"associationId"`
	ReceivedAt     time.Time `json:"receivedAt"`
	CompletedAt    time.Time `json:"completedAt"`
	// Outcome is "committed" (Event Type ID 1) or "failures" (2).
	Outcome        string              `json:"outcome"`
	EventTypeID    int                 `json:"eventTypeId"`
	InstanceCount  int                 `json:"instanceCount"`
	CommittedCount int                 `json:"committedCount"`
	FailedCount    int                 `json:"failedCount"`
	Failures       []CommitmentFailure `json:"failures"`
	// Studies lists at most MaxListedStudies of the committed instances' studies, StudyCount counts them all and
	// StudiesTruncated says the list is cut (the result document has them all).
	Studies          []string            `json:"studies"`
	StudyCount       int                 `json:"studyCount"`
	StudiesTruncated bool                `json:"studiesTruncated"`
	Report           CommitmentDelivered `json:"report"`
	RequestURI       string              `json:"requestUri"`
	ResultURI        string              `json:"resultUri"`
}

// CommitmentFailure is a failed instance in a Storage Commitment Completed event.
type CommitmentFailure struct {
	SOPClassUID    string `json:"sopClassUid"`
	SOPInstanceUID string `json:"sopInstanceUid"`
	// FailureReason is the (0008,1197) value in hex, "0112"; Reason names it.
	FailureReason string `json:"failureReason"`
	Reason        string `json:"reason"`
}

// CommitmentDelivered is how the result went to the requesting AE.
type CommitmentDelivered struct {
	Delivered bool `json:"delivered"`
	// Association is "same" (the one the request came on) or "new" (one we opened); empty when undelivered.
	Association string `json:"association,omitempty"`
	Attempts    int    `json:"attempts"`
}

// failureReasonName names a Failure Reason for events and the portal.
func failureReasonName(r uint16) string {
	switch r {
	case commitment.ReasonProcessingFailure:
		return "processing-failure"
	case commitment.ReasonNoSuchObjectInstance:
		return "no-such-object-instance"
	case commitment.ReasonClassInstanceConflict:
		return "class-instance-conflict"
	case commitment.ReasonSOPClassNotSupported:
		return "sop-class-not-supported"
	case commitment.ReasonDuplicateTransactionUID:
		return "duplicate-transaction-uid"
	case commitment.ReasonResourceLimitation:
		return "resource-limitation"
	}
	return "failure"
}

// publishCommitment announces a finished transaction.
func (p *Pipeline) publishCommitment(ctx context.Context, tx CommitmentTransaction, doc CommitmentResultDoc) error {
	d := CommitmentCompletedDetail{
		SchemaVersion: 1, TransactionUID: tx.TransactionUID, CallingAE: tx.CallingAE, AssociationID: tx.AssociationID,
		ReceivedAt: tx.ReceivedAt, CompletedAt: p.now(), Outcome: "committed", EventTypeID: int(doc.Result.EventTypeID()),
		InstanceCount: tx.RefCount, CommittedCount: len(doc.Result.Committed), FailedCount: len(doc.Result.Failed),
		Failures: []CommitmentFailure{}, Studies: listedStudies(doc.Studies), StudyCount: len(doc.Studies),
		StudiesTruncated: len(doc.Studies) > MaxListedStudies, RequestURI: p.uri(tx.RequestKey), ResultURI: p.uri(tx.ResultKey),
		Report: CommitmentDelivered{Delivered: tx.State == CommitmentReported, Attempts: tx.Attempts},
	}
	if d.Studies == nil {
		d.Studies = []string{}
	}
	if d.FailedCount > 0 {
		d.Outcome = "failures"
	}
	if d.Report.Delivered {
		d.Report.Association = "new"
		if tx.SameAssociation {
			d.Report.Association = "same"
		}
	}
	for _, f := range doc.Result.Failed[:min(len(doc.Result.Failed), maxEventFailures)] {
		d.Failures = append(d.Failures, CommitmentFailure{SOPClassUID: f.SOPClassUID, SOPInstanceUID: f.SOPInstanceUID,
			FailureReason: fmt.Sprintf("%04X", f.Reason), Reason: failureReasonName(f.Reason)})
	}
	id := eventID(DetailTypeCommitmentCompleted, tx.ID, tx.RequestKey)
	d.EventID = id
	return p.publishOnce(ctx, id, DetailTypeCommitmentCompleted, d, []string{p.resource(tx.ResultKey)})
}

// EventStudies returns the studies an event's detail names, the one rule
// for them: its studyInstanceUid (instance and study events; an Instance
// Rejected whose header named one), then its studies (Storage Commitment
// Completed: the first MaxListedStudies of its committed instances',
// studyCount counting them all), without repeats and without empty
// UIDs. A detail that is not a JSON object names none.
func EventStudies(detail json.RawMessage) []string {
	var d struct {
		StudyInstanceUID string   `json:"studyInstanceUid"`
		Studies          []string `json:"studies"`
	}
	if json.Unmarshal(detail, &d) != nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, s := range append([]string{d.StudyInstanceUID}, d.Studies...) {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
