// Package objectstore defines where received DICOM objects go: the Store
// interface the SCP streams Part 10 files into, the object key scheme shared
// by every backend, and the small JSON records the SCP writes for
// association events that never become objects.
package objectstore

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
)

// DefaultPutTimeout is how long, by default, an S3 store without staging
// may take to hold an object once its data set has arrived before its
// C-STORE fails (s3store.Options.PutTimeout): scp-task's --s3-put-timeout
// and the stack's scp.s3PutTimeoutSeconds both take it from here, under the
// senders' wait for a C-STORE response (Orthanc's DicomScuTimeout: 10 s).
// A whole number of seconds, as the stack sets it. Each spelt out 8 s, so a
// change of one left the deployed tasks and make run on different bounds.
const DefaultPutTimeout = 8 * time.Second

// Object describes one received instance. Every field comes from the
// association or from the DIMSE command; UIDs are validated before they
// are ever used in a key (see Key).
type Object struct {
	SOPClassUID       string
	SOPInstanceUID    string
	StudyInstanceUID  string // from the dataset header; may be empty
	SeriesInstanceUID string // from the dataset header; may be empty
	TransferSyntaxUID string

	CallingAE     string
	CalledAE      string
	PeerAddr      string
	AssociationID string
	ReceivedAt    time.Time
	// TLS names the client certificate of an association over TLS, as its
	// audit records do (associationaudit.CertificatePeer); nil otherwise.
	// No store keeps it with the object (it is not in Metadata): the
	// staged store journals it for the duplicate record its uploader may
	// write. Absent from what earlier versions staged.
	TLS *associationaudit.TLSPeer `json:",omitempty"`
}

// Metadata keys: what the SCP records of a C-STORE beside the object it
// stored (S3 user metadata, x-amz-meta-<key>; local mode's hand-off), and
// what the pipeline reads back to check the object against its transaction
// and to name where it came from.
const (
	MetaCallingAE             = "calling-ae"
	MetaCalledAE              = "called-ae"
	MetaPeerAddr              = "peer-addr"
	MetaAssociationID         = "association-id"
	MetaReceivedAt            = "received-at" // RFC 3339 with nanoseconds, UTC
	MetaSOPClassUID           = "sop-class-uid"
	MetaSOPInstanceUID        = "sop-instance-uid"
	MetaStudyInstanceUID      = "study-instance-uid"
	MetaSeriesInstanceUID     = "series-instance-uid"
	MetaTransferSyntaxUID     = "transfer-syntax-uid"
	MetaImplementationVersion = "implementation-version"
	// MetaLegacySHA256 is the SHA-256 (64 hex digits) of objects stored
	// by earlier versions, which the pipeline keeps as their content
	// identity; nothing writes it now.
	MetaLegacySHA256 = "sha256"
	// MetaConflict is "true" on an object kept under a conflict key.
	MetaConflict = "conflict"
	// MetaRecovered is "true" on metadata local mode rebuilt from a stored
	// file after its record of the C-STORE was lost.
	MetaRecovered = "recovered"
)

// LegacySHA256 is the SHA-256 an object stored by an earlier version
// carries in its metadata md (MetaLegacySHA256), lowercase, or "" when md
// carries none in that form: a value that is not 64 hex digits was written
// by no earlier version but by an outside writer (user metadata may hold
// 2 KB) and names nothing. The one rule of what a sha256 value is, for the
// pipeline's identity of the bytes and for local mode's file store, which
// takes an object's CRC-64/NVME whenever it returns "".
func LegacySHA256(md map[string]string) string {
	if sha, formed := LegacySHA256Value(md); formed {
		return sha
	}
	return ""
}

// LegacySHA256Value is md's sha256 value (MetaLegacySHA256), lowercase
// ("" for none), and whether it has an earlier version's form, 64 hex
// digits (LegacySHA256): a value in no such form is the one builds before
// 2026-12-07 took for the object's identity all the same.
func LegacySHA256Value(md map[string]string) (sha string, formed bool) {
	sha = strings.ToLower(md[MetaLegacySHA256])
	if len(sha) != 64 {
		return sha, false
	}
	for _, c := range []byte(sha) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return sha, false
		}
	}
	return sha, true
}

// Metadata returns what the SCP records of obj's C-STORE, under the keys
// above, for an SCP of implementationVersion.
func (obj Object) Metadata(implementationVersion string) map[string]string {
	return map[string]string{
		MetaCallingAE:             obj.CallingAE,
		MetaCalledAE:              obj.CalledAE,
		MetaPeerAddr:              obj.PeerAddr,
		MetaAssociationID:         obj.AssociationID,
		MetaReceivedAt:            obj.ReceivedAt.UTC().Format(time.RFC3339Nano),
		MetaSOPClassUID:           obj.SOPClassUID,
		MetaSOPInstanceUID:        obj.SOPInstanceUID,
		MetaStudyInstanceUID:      obj.StudyInstanceUID,
		MetaSeriesInstanceUID:     obj.SeriesInstanceUID,
		MetaTransferSyntaxUID:     obj.TransferSyntaxUID,
		MetaImplementationVersion: implementationVersion,
	}
}

// Stored is what a Store reports once an object is durable.
type Stored struct {
	Key  string // the key the object is stored under, relative to the store root/prefix
	Size int64  // bytes of the whole Part 10 file
	// CRC64NVME is the whole Part 10 file's CRC-64/NVME, base64 as S3
	// reports it (ChecksumCRC64NVME): the object's content identity, the
	// same in local mode as in AWS. The file store sets it when asked
	// (filestore.Hooks.Checksum) and for a conflict, whose key is named
	// after it; the S3 store leaves it to S3, which holds and verifies it.
	CRC64NVME string
	// Duplicate is set when an identical object (same key, same bytes)
	// was already stored: nothing new was written.
	Duplicate bool
	// SameTransfer, with Duplicate, says the object held is this very
	// C-STORE's (the same association and receive time in its metadata),
	// written by an earlier upload of it: a staged object uploaded again
	// after its task died between the upload and its release. That is no
	// resend, and gets no duplicate record. Stores that cannot tell
	// leave it false.
	SameTransfer bool
	// Conflict is set when a different object already held the key: the new
	// one was kept under a distinct key (Key) and nothing was overwritten.
	// With Duplicate, that key held these bytes already (a copy kept beside
	// by an earlier C-STORE, or this one's earlier upload): nothing new was
	// written; see KeptBeside.
	Conflict bool
}

// KeptBeside reports whether this Put made a copy beside an object that
// holds the key with other bytes: Conflict without Duplicate. A Conflict
// with Duplicate found its bytes kept beside already and wrote nothing, an
// identical resend (or an upload again of its own C-STORE). The one rule
// for the SCP's and the staged store's "kept beside it" warning and the
// stores' outcome label (Outcome).
func (s Stored) KeptBeside() bool { return s.Conflict && !s.Duplicate }

// Outcome names what this Put did, as the stores' metrics label it:
// "conflict" for a copy kept beside the held object (KeptBeside),
// "duplicate" when nothing new was written (under the key or beside it),
// else "stored".
func (s Stored) Outcome() string {
	switch {
	case s.KeptBeside():
		return "conflict"
	case s.Duplicate:
		return "duplicate"
	}
	return "stored"
}

// Store persists Part 10 files. Put must consume part10 to EOF (or fail),
// and must return nil only once the object is durably stored: the SCP answers
// C-STORE success on that return and on nothing else. A failed or cancelled
// Put leaves nothing visible under any key.
type Store interface {
	Put(ctx context.Context, obj Object, part10 io.Reader) (Stored, error)
	// PutRecord durably writes a small document (an association audit
	// record, a Storage Commitment request) under key, which always starts
	// with one of RecordPrefixes. A record is
	// never replaced: the same bytes again succeed (a retry), other bytes
	// under an existing key fail with ErrRecordHeld.
	PutRecord(ctx context.Context, key string, body []byte) error
	// Ready reports whether the store can accept objects now; the SCP
	// refuses new associations with "temporary congestion" while it cannot.
	Ready(ctx context.Context) error
}

// Shutdowner is a store with something to finish when the process stops
// (a journal to checkpoint, uploads in flight). Shutdown finishes within
// ctx; when ctx ends first it returns at once, without an error, and logs
// what it leaves for the next start, which loses nothing acknowledged:
// what it cuts short is taken up as after a crash. Puts must have returned
// or be abandoned.
type Shutdowner interface {
	Shutdown(ctx context.Context) error
}

// Prefixes under the store root (docs/pipeline.md, "S3 layout"): the one
// definition of the bucket's layout, which the pipeline and the CDK stack
// (its notifications, IAM statements and lifecycle rules) use.
const (
	IncomingPrefix   = "incoming/"
	AuditPrefix      = "audit/"
	QuarantinePrefix = "quarantine/"
	MetadataPrefix   = "metadata/"
	// CommitmentPrefix holds Storage Commitment: the requests the SCP
	// makes durable before it answers them, and the commitment function's
	// results.
	CommitmentPrefix         = "commitment/"
	CommitmentRequestsPrefix = CommitmentPrefix + "requests/"
	CommitmentResultsPrefix  = CommitmentPrefix + "results/"
)

// RunMarkersPrefix is where the SCP keeps its run markers in a store with
// no directory that outlives the process (S3): one small document per
// running SCP process, rewritten while it lives and removed at its clean
// stop (scp-task/internal/auditwriter). Nothing else reads it: no pipeline
// function is notified of it, and it holds no patient data.
const RunMarkersPrefix = "audit-runs/"

// ErrMarkerChanged is what a conditional run marker write returns when the
// marker changed (or went) since it was read: another process wrote it.
var ErrMarkerChanged = errors.New("objectstore: the run marker changed")

// ErrRecordHeld is what PutRecord returns when a record with other bytes
// already holds the key: records are never replaced.
var ErrRecordHeld = errors.New("objectstore: a different record already holds the key")

// Marker is a run marker as read from the store.
type Marker struct {
	Body []byte
	ETag string
	// Written is when the marker was last written and Read when it was
	// read, both by the store's own clock (S3's: the object's
	// Last-Modified and the answer's Date), never by a process's: how long
	// a marker went unrewritten is told by the one clock that stamped each
	// write, whatever the clocks of the tasks that wrote and read it say.
	// S3 gives both in whole seconds.
	Written, Read time.Time
}

// RecordPrefixes are where PutRecord writes.
var RecordPrefixes = []string{AuditPrefix, CommitmentRequestsPrefix}

// IsRecordKey reports whether key is under one of RecordPrefixes.
func IsRecordKey(key string) bool {
	for _, p := range RecordPrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// ErrUnavailable marks a store failure that is expected to be transient
// (the backend is down or throttling): the SCP answers A700 and the sender
// retries later.
var ErrUnavailable = errors.New("objectstore: store unavailable")
