package pipeline

// This file is the contract between the pipeline and its storage backends.
// Two sets of adapters implement it: shared/awsadapters (S3, DynamoDB,
// EventBridge, used by the Lambda functions) and the local all-in-one mode
// (files, SQLite, an event log). The local mode depends on these names and
// semantics: change them only together with both adapter sets.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// Sentinel errors that adapters return (wrapped) so the pipeline can tell a
// missing thing or a lost race from a failure.
var (
	// ErrNotFound: the object, study or record does not exist.
	ErrNotFound = errors.New("pipeline: not found")
	// ErrConditionFailed: a conditional write lost (MarkAnnounced on a
	// study whose revision moved on, for example).
	ErrConditionFailed = errors.New("pipeline: condition failed")
	// ErrObjectChanged: the object was replaced since the Head a read or a
	// copy is pinned to (VersionReader, ObjectWriter.Copy); process it
	// again from its Head.
	ErrObjectChanged = errors.New("pipeline: object replaced since its head")
	// ErrBadCursor: a query's cursor is not one the adapter handed out.
	ErrBadCursor = errors.New("pipeline: bad cursor")
	// ErrUnboundedQuery: an audit query with no access path and an open
	// time range, or one over more than MaxAuditWalkDays days, which a
	// store partitioned by day refuses (AuditQuery).
	ErrUnboundedQuery = fmt.Errorf("pipeline: an audit query without an access path needs both From and To, "+
		"at most %d days apart", MaxAuditWalkDays)
)

// ObjectInfo is what Head reports about a stored object.
type ObjectInfo struct {
	Key  string
	Size int64
	ETag string
	// ChecksumCRC64NVME is the full-object CRC64NVME checksum (base64, as
	// S3 reports it), empty when the store reports none: the content
	// identity of every object the SCP stores, in S3 and in local mode's
	// file store, in place of the sha256 metadata of earlier versions.
	ChecksumCRC64NVME string
	LastModified      time.Time
	// Metadata is the object's user metadata with lowercase keys (the SCP
	// writes calling-ae, called-ae, peer-addr, association-id, received-at,
	// sop-class-uid, sop-instance-uid, transfer-syntax-uid,
	// implementation-version, and conflict=true for conflicting resends;
	// objects stored by earlier versions also carry sha256, their SHA-256:
	// objectstore.MetaLegacySHA256).
	Metadata map[string]string
}

// ObjectReader reads stored objects without ever needing them whole.
type ObjectReader interface {
	// Head returns size and metadata; ErrNotFound if key does not exist.
	Head(ctx context.Context, key string) (ObjectInfo, error)
	// OpenRange streams length bytes starting at offset (length < 0: to the
	// end). Reading past the end yields io.EOF, not an error. The pipeline
	// asks for small, growing ranges and stops before Pixel Data.
	OpenRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
}

// VersionReader is an ObjectReader that reads the version of an object its
// Head described and no other: a read of an object replaced since (S3 lets
// any caller that may PutObject overwrite a key, though the SCP never
// does) fails with ErrObjectChanged instead of mixing two versions' bytes,
// the header of one indexed under the other's checksum. The S3 adapter
// pins its GETs to Head's ETag (ObjectWriter.Copy its copies); a store
// whose objects are never replaced (local mode's files) needs none.
type VersionReader interface {
	OpenVersionRange(ctx context.Context, info ObjectInfo, offset, length int64) (io.ReadCloser, error)
}

// ObjectWriter writes the pipeline's own objects: quarantine copies and
// metadata sidecars. Writes of the same key with the same content are
// idempotent; raw incoming objects are never modified or deleted.
type ObjectWriter interface {
	// Put stores a small document (JSON sidecars, findings).
	Put(ctx context.Context, key string, body []byte, contentType string, metadata map[string]string) error
	// Copy copies the object src describes (its Head's) to dst server-side,
	// keeping its metadata and adding metadata (quarantine). A store that
	// can pin the copy to src's version (src.ETag, as VersionReader pins a
	// read) does: ErrObjectChanged when src.Key holds another object since,
	// whose bytes would otherwise be copied under the findings of the one
	// read.
	Copy(ctx context.Context, src ObjectInfo, dst string, metadata map[string]string) error
}

// AuditStore is the append-only audit trail. pipelinetest.RunAuditStore
// checks an implementation against this contract.
type AuditStore interface {
	// Append writes rec unless a record with rec.ID exists (conditional
	// write). appended reports whether this call wrote it; a duplicate is
	// not an error, and leaves the record written first as it was.
	Append(ctx context.Context, rec AuditRecord) (appended bool, err error)
	// Query returns records matching q, newest first (records of the same
	// Time in an order of the store's own, the same on every page).
	Query(ctx context.Context, q AuditQuery) (AuditPage, error)
}

// AuditQuery selects the audit records that match every field set (a zero
// field matches anything). At most one of SOPInstanceUID, PatientID,
// StudyInstanceUID, CallingAE and Day is the access path (the first set,
// in that order of preference); every other field filters, whichever is
// the access path.
//
// A query with none of them reads the trail by time, from To back to
// From. A store partitioned by day (DynamoDB: byDay) reads one partition
// per day of the range, a bounded number per page, and refuses such a
// query when From or To is zero, or when the range spans more than
// MaxAuditWalkDays days (ErrUnboundedQuery): it cannot know where its
// trail begins or ends, and would read every day of the range, records or
// none (the years 0000 to 9999 are 3.6 million partitions). A store that
// reads its whole trail in order (SQLite, the fake) answers it.
//
// Records of the CallingAE and Day access paths, and of a query with none,
// may come from a projection without patient data (DynamoDB's): ID, Time,
// Day, EventID, Outcome, Reason, CallingAE, CalledAE, PeerAddr,
// AssociationID, NotAnswered and ResponseNotSent (read from the reason:
// AuditRecord.ReadAnswered) are set, the rest may be zero.
type AuditQuery struct {
	// SOPInstanceUID selects the records of one instance (its receipt,
	// quarantine or refused C-STORE): what Storage Commitment looks for
	// when an instance is not indexed. Most selective, so preferred.
	SOPInstanceUID   string
	PatientID        string
	StudyInstanceUID string
	CallingAE        string
	Day              string    // yyyy-mm-dd (UTC): the records whose Time is on that day
	Outcome          string    // filter on AuditRecord.Outcome
	From, To         time.Time // both inclusive, to the nanosecond; zero: open (but see above)
	// Limit bounds a page (PageSize): 0 is DefaultPage, and one above
	// MaxPage asks for MaxPage. A page may hold fewer records than that,
	// even none, and still have a Next (a filter, a run of days without
	// records): only an empty Next ends the results.
	Limit int
	// Cursor continues the query that handed it out (AuditPage.Next) with
	// the same fields; paging loses and repeats no record. Limit may
	// change from page to page, and From and To be given in another time
	// zone; a cursor the store did not hand out for a query of the same
	// other fields, or one altered, is ErrBadCursor (CursorScope).
	Cursor string
}

// AuditPage is one page of Query results.
type AuditPage struct {
	Records []AuditRecord
	Next    string // empty when there is no more
}

// MaxAuditWalkDays is the most days a query with no access path may
// range over in a store partitioned by day (AuditQuery): a year, a leap
// one too.
const MaxAuditWalkDays = 366

// A query's page: a limit of 0 (or less) asks for DefaultPage rows, one
// above MaxPage for MaxPage. A caller may so ask for the largest page with
// any large number (the portal asks math.MaxInt for a limit past what an
// int holds), and no store passes it on unbounded (DynamoDB's Limit is an
// int32, which took math.MaxInt as -1).
const (
	DefaultPage = 100
	MaxPage     = 10000
)

// PageLimit is a page's size: def when none was asked (n <= 0), at most
// max. A larger ask gets the largest page, not the default one.
func PageLimit(n, def, max int) int {
	switch {
	case n <= 0:
		return def
	case n > max:
		return max
	}
	return n
}

// PageSize is the most records a page of q holds: its Limit, DefaultPage
// for none, MaxPage at most.
func (q AuditQuery) PageSize() int { return PageLimit(q.Limit, DefaultPage, MaxPage) }

// IndexStore is the study/series/instance index. Its rules are in
// studyindex.go (ContentOutcome, StudySummary.Merge and Count,
// NewStudyDetail) and pipelinetest.RunIndexStore checks an implementation
// against them.
type IndexStore interface {
	// UpsertInstance indexes one content of an instance. Counts change
	// once per distinct (SOP Instance UID, SHA-256), whatever the number
	// of deliveries, and a delivery retried after a failed or interrupted
	// call never counts twice: once a retry returns, the study is as if
	// the first attempt had completed.
	UpsertInstance(ctx context.Context, in InstanceRecord) (UpsertResult, error)
	// GetStudy returns the study with its series and instances; ErrNotFound.
	// It only reads.
	GetStudy(ctx context.Context, studyUID string) (StudyDetail, error)
	// Instances returns every content indexed under a SOP Instance UID, in
	// any study (more than one after a conflicting resend); none, and no
	// error, when it is not indexed. A content is listed once its record is
	// written, also when its upsert was interrupted after that and retried.
	// It only reads.
	Instances(ctx context.Context, sopInstanceUID string) ([]InstanceRecord, error)
	// StableStudies returns studies whose last activity (StudySummary.Quiet:
	// LastActivity, or LastReceived for rows written before LastActivity
	// existed) is not after quietSince and whose Revision is above
	// AnnouncedRevision. Judging on activity rather than receipt keeps a
	// backed-up validate queue from making a study look quiet while some
	// of its instances still wait to be indexed. limit counts the studies
	// returned: one passed over (announced after all, an upsert of it in
	// flight) takes no place, so however many there are, they cannot keep
	// the others out of a run. A limit of 0 is DefaultPage, one above
	// MaxPage is MaxPage (PageLimit).
	StableStudies(ctx context.Context, quietSince time.Time, limit int) ([]StudySummary, error)
	// MarkAnnounced records that version (1 = Study Received, 2+ = Study
	// Updated) was announced describing revision: it sets AnnouncedVersion
	// = version and AnnouncedRevision = revision, and fails with
	// ErrConditionFailed unless AnnouncedVersion was version-1. Instances
	// that arrived meanwhile keep Revision above AnnouncedRevision, so they
	// are announced next time as Study Updated.
	MarkAnnounced(ctx context.Context, studyUID string, revision, version int64, at time.Time) error
	// DeferAnnouncement restarts the study's quiet period at at, after an
	// announcement of it failed: LastActivity moves forward to at, never
	// back, so StableStudies offers the study again a quiet period later,
	// behind the studies that went quiet before at. It leaves the study
	// pending (counts, Revision and the announced fields stay), and an
	// instance indexed in any order around it still moves LastActivity to
	// its own activity when that is later. ErrNotFound for an unknown study.
	DeferAnnouncement(ctx context.Context, studyUID string, at time.Time) error
	// EventPublished and MarkEventPublished are the publish ledger that
	// keeps a redelivered message from publishing an event twice.
	EventPublished(ctx context.Context, eventID string) (bool, error)
	MarkEventPublished(ctx context.Context, eventID string, at time.Time) error
	// RecordRejected notes that validation rejected (quarantined) an
	// instance of a study: once per SOP Instance UID in the study, whatever
	// the number of deliveries or resends. It only notes: it creates no
	// study, moves no count, Revision or activity (so it announces
	// nothing), and GetStudy counts the noted instances that have no
	// indexed content in the study (StudyDetail.RejectedCount). Both UIDs
	// must be valid UIDs (RejectedInstance.Valid); an object whose are not
	// names no instance of a study.
	RecordRejected(ctx context.Context, r RejectedInstance) error
	// NoteSent notes that the site sent an instance of the study again at
	// at where no object follows to index: a resend the SCP found held
	// byte for byte under its key (ProcessAuditRecord). The study's
	// LastSent moves forward to at (StudySummary.NoteSent), nothing else.
	// A study not indexed is left as it is, nothing created, and the
	// answer is ErrNotFound: the object held is not indexed yet (its own
	// processing is still to come, or retried), and the caller retries.
	NoteSent(ctx context.Context, studyUID string, at time.Time) error
}

// RejectedInstance is an instance of a study that validation rejected.
type RejectedInstance struct {
	StudyInstanceUID string
	SOPInstanceUID   string
}

// Valid reports whether r names an instance of a study RecordRejected
// notes: both UIDs valid (syntax, at most 64 characters), as every index
// key built from them needs.
func (r RejectedInstance) Valid() bool {
	return r.StudyInstanceUID != "" && r.SOPInstanceUID != "" &&
		dicomuid.SyntaxError(r.StudyInstanceUID) == "" && dicomuid.SyntaxError(r.SOPInstanceUID) == ""
}

// UpsertOutcome tells what UpsertInstance did.
type UpsertOutcome int

// Upsert outcomes.
const (
	// InstanceNew: first time this SOP Instance UID was indexed.
	InstanceNew UpsertOutcome = iota + 1
	// InstanceDuplicate: same SOP Instance UID and same SHA-256 already
	// indexed; nothing changed.
	InstanceDuplicate
	// InstanceConflict: the SOP Instance UID was indexed with different
	// content, in this study or in another one (see ContentOutcome); this
	// content is indexed too (as a conflict, in the study it names) and
	// that study's ConflictCount and Revision went up. Delivering the same
	// conflicting content again is InstanceDuplicate.
	InstanceConflict
)

func (o UpsertOutcome) String() string {
	switch o {
	case InstanceNew:
		return "new"
	case InstanceDuplicate:
		return "duplicate"
	case InstanceConflict:
		return "conflict"
	}
	return "unknown"
}

// UpsertResult is the outcome of UpsertInstance and the study after it.
type UpsertResult struct {
	Outcome UpsertOutcome
	Study   StudySummary
	// Instance is the record as the index keeps it: Conflict is the
	// index's verdict and Findings include those the index added
	// (patient-mismatch). For a duplicate it is the record indexed before,
	// so a redelivery audits and announces what the first delivery did;
	// its ObjectKey is the key of the transfer that counted the content,
	// also while that transfer's upsert is still under way (another
	// transfer of the content, indexed at once, is a resend: Resent).
	// Once the counting transfer's upsert has returned (or its retry's),
	// the content's record is that transfer's.
	Instance InstanceRecord
}

// InstanceRecord is one indexed instance (one distinct content).
type InstanceRecord struct {
	StudyInstanceUID  string `json:"studyInstanceUid"`
	SeriesInstanceUID string `json:"seriesInstanceUid"`
	SOPInstanceUID    string `json:"sopInstanceUid"`
	SOPClassUID       string `json:"sopClassUid"`
	TransferSyntaxUID string `json:"transferSyntaxUid"`
	Modality          string `json:"modality,omitempty"`
	InstanceNumber    string `json:"instanceNumber,omitempty"`
	SeriesNumber      string `json:"seriesNumber,omitempty"`
	SeriesDescription string `json:"seriesDescription,omitempty"`
	StudyDate         string `json:"studyDate,omitempty"` // ISO 8601 yyyy-mm-dd
	StudyTime         string `json:"studyTime,omitempty"` // ISO 8601 hh:mm:ss[.ffffff]
	StudyDescription  string `json:"studyDescription,omitempty"`
	AccessionNumber   string `json:"accessionNumber,omitempty"`
	PatientID         string `json:"patientId,omitempty"`
	PatientName       string `json:"patientName,omitempty"` // UTF-8, DICOM ^ form
	PatientBirthDate  string `json:"patientBirthDate,omitempty"`
	PatientSex        string `json:"patientSex,omitempty"`
	ObjectKey         string `json:"objectKey"`
	MetadataKey       string `json:"metadataKey"`
	Size              int64  `json:"size"`
	// ContentIdentity is the content's identity (docs/pipeline.md,
	// "Duplicates"), under ContentIdentityField; records written before
	// carry it under LegacyContentIdentityField (read by UnmarshalJSON).
	ContentIdentity string    `json:"contentIdentity"`
	CallingAE       string    `json:"callingAe,omitempty"`
	ReceivedAt      time.Time `json:"receivedAt"`
	// IndexedAt is when the pipeline indexed this content (set by
	// ProcessObject just before UpsertInstance); zero in records written
	// before it existed.
	IndexedAt time.Time `json:"indexedAt,omitempty"`
	Conflict  bool      `json:"conflict,omitempty"`
	Findings  []Finding `json:"findings,omitempty"` // non-fatal findings
}

// StudySummary is the study-level aggregate.
type StudySummary struct {
	StudyInstanceUID string `json:"studyInstanceUid"`
	PatientID        string `json:"patientId,omitempty"`
	PatientName      string `json:"patientName,omitempty"`
	PatientBirthDate string `json:"patientBirthDate,omitempty"`
	PatientSex       string `json:"patientSex,omitempty"`
	StudyDate        string `json:"studyDate,omitempty"`
	StudyTime        string `json:"studyTime,omitempty"`
	StudyDescription string `json:"studyDescription,omitempty"`
	AccessionNumber  string `json:"accessionNumber,omitempty"`
	// Modalities are the study's distinct modalities, sorted: those kept
	// (AddModality's bound), with ModalitiesTruncated when some were not.
	Modalities          []string  `json:"modalities,omitempty"`
	ModalitiesTruncated bool      `json:"modalitiesTruncated,omitempty"`
	CallingAEs          []string  `json:"callingAes,omitempty"` // sorted, distinct
	SeriesCount         int       `json:"seriesCount"`
	InstanceCount       int       `json:"instanceCount"` // distinct SOP Instance UIDs
	ConflictCount       int       `json:"conflictCount"`
	TotalBytes          int64     `json:"totalBytes"`
	FirstReceived       time.Time `json:"firstReceived"`
	// LastReceived is the SCP's received-at of the newest content indexed
	// (new or conflicting). A resend of content held does not move it: the
	// quiet period (Quiet), the portal's listing order
	// (localstore.SearchStudies) and study events read it. See LastSent.
	LastReceived time.Time `json:"lastReceived"`
	// LastSent is the SCP's received-at of the latest transfer of any of
	// the study's instances the index was given: a new or conflicting
	// content (Merge), or a resend of content held (a duplicate that is
	// another transfer, Resent: NoteResend). A redelivery of a transfer
	// never moves it. It answers "did the site send this study again?",
	// which LastReceived does not. Zero for studies last written before it
	// existed: see Sent.
	LastSent time.Time `json:"lastSent,omitzero"`
	// LastActivity is the latest of ReceivedAt and IndexedAt over the new
	// and conflicting instances (the same upserts that move Revision; a
	// duplicate delivery is not activity, or a retried message would keep
	// postponing the announcement). The quiet period runs from it, so an
	// instance received early but indexed late still holds the study back.
	// A failed announcement moves it too (DeferAnnouncement), so a study
	// whose announcement fails every time goes behind the others.
	// Zero for studies last written before it existed: see Quiet.
	LastActivity time.Time `json:"lastActivity,omitempty"`
	// Revision goes up by one with every new or conflicting instance.
	Revision int64 `json:"revision"`
	// AnnouncedRevision is the Revision last announced (0: never).
	AnnouncedRevision int64 `json:"announcedRevision"`
	// AnnouncedVersion counts study-level announcements (the version in
	// Study Received / Study Updated events).
	AnnouncedVersion int64 `json:"announcedVersion"`
	// Findings are the study's own findings, sorted by code and tag:
	// patient-mismatch when its instances disagree on the patient.
	Findings []Finding `json:"findings,omitempty"`
}

// Quiet is the time the quiet period runs from: LastActivity, or
// LastReceived when LastActivity is zero or earlier (rows written before
// LastActivity existed).
func (s StudySummary) Quiet() time.Time {
	if s.LastActivity.After(s.LastReceived) {
		return s.LastActivity
	}
	return s.LastReceived
}

// Sent is when the site last sent any of the study's instances:
// LastSent, or LastReceived when LastSent is zero or earlier (studies
// last written before LastSent existed).
func (s StudySummary) Sent() time.Time {
	if s.LastSent.After(s.LastReceived) {
		return s.LastSent
	}
	return s.LastReceived
}

// Activity is the time an upsert of in counts as study activity: the later
// of its ReceivedAt and IndexedAt.
func (in InstanceRecord) Activity() time.Time {
	if in.IndexedAt.After(in.ReceivedAt) {
		return in.IndexedAt
	}
	return in.ReceivedAt
}

// SeriesSummary is the series-level aggregate.
type SeriesSummary struct {
	SeriesInstanceUID string    `json:"seriesInstanceUid"`
	Modality          string    `json:"modality,omitempty"`
	SeriesNumber      string    `json:"seriesNumber,omitempty"`
	SeriesDescription string    `json:"seriesDescription,omitempty"`
	InstanceCount     int       `json:"instanceCount"`
	TotalBytes        int64     `json:"totalBytes"`
	FirstReceived     time.Time `json:"firstReceived"`
	LastReceived      time.Time `json:"lastReceived"`
}

// StudyDetail is a study with its series and instances.
type StudyDetail struct {
	StudySummary
	Series    []SeriesSummary  `json:"series"`
	Instances []InstanceRecord `json:"instances"`
	// RejectedCount counts the study's instances validation rejected
	// (RecordRejected) that have no indexed content in it: instances the
	// study lacks because they were quarantined, not resent valid since.
	RejectedCount int `json:"rejectedCount,omitempty"`
}

// EventPublisher sends events to subscribers (EventBridge in AWS, the event
// log and webhooks locally).
type EventPublisher interface {
	// Publish sends events as one batch (at most 10). failed lists the
	// events that were not accepted, each refused on its own or not; err
	// is for a failure of the whole call (the bus failing to take any).
	Publish(ctx context.Context, events []Event) (failed []FailedEntry, err error)
}

// FailedEntry is an event of a batch the bus did not accept.
type FailedEntry struct {
	Index int // in the batch
	// Refused: the event itself was refused (invalid, malformed, too
	// large) and would be again: trying it again is no use, and it says
	// nothing of the bus. Otherwise the bus failed to take it (throttled,
	// an internal failure) and it may be retried.
	Refused bool
	// Code is the bus's reason (EventBridge's error code), for the error.
	Code string
}

// Event is one notification. Source is always EventSource.
type Event struct {
	// ID is deterministic for the fact announced, so subscribers can
	// de-duplicate an at-least-once delivery.
	ID         string
	DetailType string // DetailTypeInstanceStored, ...
	Time       time.Time
	Detail     json.RawMessage
	// Resources name the objects the event is about (may be empty): their
	// S3 ARNs in AWS, their URIs in local mode (Pipeline.resource).
	Resources []string
}

// Event source and detail-types: the one definition of the names, which
// the schemas (shared/pipeline/schemas, one file per detail-type), the
// portal and the event bus's description take from here.
const (
	EventSource                   = "dicom.ingest"
	DetailTypeInstanceStored      = "Instance Stored"
	DetailTypeInstanceRejected    = "Instance Rejected"
	DetailTypeStudyReceived       = "Study Received"
	DetailTypeStudyUpdated        = "Study Updated"
	DetailTypeCommitmentCompleted = "Storage Commitment Completed"
)

// DetailTypes are every detail-type the pipeline publishes, in the order
// docs/pipeline.md lists them.
var DetailTypes = []string{DetailTypeInstanceStored, DetailTypeInstanceRejected, DetailTypeStudyReceived,
	DetailTypeStudyUpdated, DetailTypeCommitmentCompleted}

// Severity of a validation finding.
type Severity string

// Severities: an Error quarantines the object; a Warning is recorded.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Finding is one validation or normalization result.
type Finding struct {
	Code     string   `json:"code"` // stable machine-readable code, e.g. "uid-syntax"
	Severity Severity `json:"severity"`
	Tag      string   `json:"tag,omitempty"` // "(0020,000D)"
	Message  string   `json:"message"`       // never contains patient data
}

// AuditRecord is one audit trail entry, shaped after a DICOM PS3.15 A.5
// audit message so it can be exported to an ATNA repository. PHI fields
// (PatientID, PatientName) are present in the base record only.
type AuditRecord struct {
	// ID is the idempotency key: deterministic for the transaction.
	ID            string    `json:"id"`
	SchemaVersion int       `json:"schemaVersion"`
	Time          time.Time `json:"time"`
	Day           string    `json:"day"` // yyyy-mm-dd UTC of Time (GSI key)

	EventID         CodedValue   `json:"eventId"`
	EventTypeCodes  []CodedValue `json:"eventTypeCodes,omitempty"`
	EventActionCode string       `json:"eventActionCode"` // C, R, U, D, E
	EventOutcome    int          `json:"eventOutcome"`    // 0, 4, 8, 12
	// Outcome is our short outcome: stored, duplicate, conflict,
	// rejected (quarantined), association-accepted, association-rejected,
	// association-released, association-aborted, store-failed,
	// commitment-refused, application-start, application-stop (the
	// SCP's), unclean-stop (an SCP start that found earlier runs stopped
	// uncleanly), unclean-stop-found (a running SCP that found one); a
	// Storage Commitment transaction's
	// commitment-requested, committed, commitment-failures,
	// commitment-reported, commitment-undeliverable.
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"` // no patient data
	// NotAnswered, on a store-failed record, is true for a C-STORE the
	// association's end cut short: its data set never completed, nothing
	// was stored, and the sender was answered nothing (no status: it was
	// not refused); on a commitment-refused, for an N-ACTION (Storage
	// Commitment request) cut short so: nothing taken, nothing answered.
	// ResponseNotSent, on one or a commitment-refused, is
	// true when the failure status its reason names was decided but its
	// response could not be written (the association ended first): the
	// sender never heard it.
	// Records written before they were recorded, and DynamoDB's
	// projections, lack them: every store reads them from the reason
	// (ReadAnswered), so they read alike on every path.
	NotAnswered     bool `json:"notAnswered,omitempty"`
	ResponseNotSent bool `json:"responseNotSent,omitempty"`

	AuditSourceID string `json:"auditSourceId"`

	CallingAE     string `json:"callingAe,omitempty"`
	CalledAE      string `json:"calledAe,omitempty"`
	PeerAddr      string `json:"peerAddr,omitempty"`
	AssociationID string `json:"associationId,omitempty"`

	SOPClassUID       string `json:"sopClassUid,omitempty"`
	SOPInstanceUID    string `json:"sopInstanceUid,omitempty"`
	StudyInstanceUID  string `json:"studyInstanceUid,omitempty"`
	SeriesInstanceUID string `json:"seriesInstanceUid,omitempty"`
	PatientID         string `json:"patientId,omitempty"`
	PatientName       string `json:"patientName,omitempty"`
	ObjectKey         string `json:"objectKey,omitempty"`
	// QuarantineKey, on a rejected object's record, is where its
	// quarantined copy and, beside it, its findings (.findings.json) are:
	// ObjectKey names the object as the SCP stored it. Empty in records
	// written before it was recorded (LegacyQuarantineKeys of ObjectKey
	// gives it; Quarantined reads either).
	QuarantineKey string `json:"quarantineKey,omitempty"`
	// HeldObjectKey and HeldContentIdentity name, on a conflict's record,
	// the object held before whose content it differs from (the first
	// content indexed under its SOP Instance UID), and on a duplicate's,
	// the object held whose content it repeats (its content identity is
	// then ContentIdentity), so that the two records tie up without
	// matching UIDs by hand. On the record of a resend of an object
	// validation quarantined, QuarantineKey is that object's quarantined
	// copy. Empty in records written before they were recorded.
	HeldObjectKey       string `json:"heldObjectKey,omitempty"`
	HeldContentIdentity string `json:"heldContentIdentity,omitempty"`
	// ContentIdentity is the object's content identity (docs/pipeline.md,
	// "Duplicates"): a CRC-64/NVME, a SHA-256 only for objects stored by
	// earlier versions. Records written before carry it under
	// LegacyContentIdentityField (read by UnmarshalJSON).
	ContentIdentity string `json:"contentIdentity,omitempty"`
	Size            int64  `json:"size,omitempty"`

	Participants       []AuditParticipant       `json:"participants,omitempty"`
	ParticipantObjects []AuditParticipantObject `json:"participantObjects,omitempty"`
	Findings           []Finding                `json:"findings,omitempty"`

	// TLS is the requesting peer's certificate identity when TLS
	// authenticated it (association records only); nil otherwise.
	TLS *associationaudit.TLSPeer `json:"tls,omitempty"`
	// StoredInstances and StoredBytes are what the SCP stored and
	// acknowledged on the association, identical resends included, on its
	// association-released and -aborted records.
	StoredInstances int   `json:"storedInstances,omitempty"`
	StoredBytes     int64 `json:"storedBytes,omitempty"`
	// PreviousRuns, on an SCP start that found earlier runs stopped
	// uncleanly (outcome unclean-stop) or a running SCP's report of them
	// (unclean-stop-found), are those runs and the records each may have
	// lost.
	PreviousRuns []associationaudit.UncleanRun `json:"previousRuns,omitempty"`
	// LostRecords, on an SCP stop, are its run's records never written
	// (given up at its exit, not encodable): how many, which.
	LostRecords *associationaudit.LostRecords `json:"lostRecords,omitempty"`
}

// CodedValue is a DICOM code (e.g. 110104, DCM, "DICOM Instances Transferred").
type CodedValue struct {
	Code    string `json:"code"`
	System  string `json:"system"`
	Display string `json:"display"`
}

// AuditParticipant is an ActiveParticipant (A.5.2): the sending AE, our AE.
type AuditParticipant struct {
	UserID          string      `json:"userId"` // AE title
	AlternativeID   string      `json:"alternativeUserId,omitempty"`
	UserIsRequestor bool        `json:"userIsRequestor"`
	RoleIDCode      *CodedValue `json:"roleIdCode,omitempty"`
	NetworkAccess   string      `json:"networkAccessPointId,omitempty"`
	NetworkType     int         `json:"networkAccessPointTypeCode,omitempty"` // 1 DNS name, 2 IP address
}

// AuditParticipantObject is a ParticipantObjectIdentification (A.5.2):
// the study (with SOP classes) and the patient.
type AuditParticipantObject struct {
	TypeCode    int        `json:"typeCode"`     // 1 person, 2 system object
	TypeRole    int        `json:"typeCodeRole"` // 1 patient, 3 report, 24 query...
	IDTypeCode  CodedValue `json:"idTypeCode"`
	ID          string     `json:"id"`
	Name        string     `json:"name,omitempty"`
	SOPClassUID string     `json:"sopClassUid,omitempty"`
	NumberOfSOP int        `json:"numberOfInstances,omitempty"`
}
