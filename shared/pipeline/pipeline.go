// Package pipeline turns stored DICOM objects into a validated, normalized,
// audited and announced archive: it validates a Part 10 object by reading
// only its header, writes a DICOM JSON metadata sidecar, upserts the study
// index, appends audit records and publishes events. It talks to storage
// only through the ports in ports.go, so the same code runs in AWS Lambda
// and in the local all-in-one mode.
package pipeline

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/logname"
)

// PatientDataPolicy says how much patient data events carry.
type PatientDataPolicy string

// Policies for patient data in events.
const (
	// PatientDataNone: no patient attributes in events (the default).
	PatientDataNone PatientDataPolicy = "none"
	// PatientDataID: Patient ID and accession number only.
	PatientDataID PatientDataPolicy = "id"
	// PatientDataFull: Patient ID, name, birth date and sex as well.
	PatientDataFull PatientDataPolicy = "full"
)

// ParsePatientDataPolicy parses a policy name; empty means PatientDataNone.
func ParsePatientDataPolicy(s string) (PatientDataPolicy, error) {
	switch PatientDataPolicy(s) {
	case "", PatientDataNone:
		return PatientDataNone, nil
	case PatientDataID, PatientDataFull:
		return PatientDataPolicy(s), nil
	}
	return "", fmt.Errorf("pipeline: unknown patient data policy %q (want none, id or full)", s)
}

// DefaultQuietPeriod is how long a study must go without a new instance
// before Study Received is announced.
const DefaultQuietPeriod = 60 * time.Second

// Pipeline processes objects, SCP audit records and stable studies. The
// ports are required; the rest have working zero values.
type Pipeline struct {
	Objects ObjectReader
	Writer  ObjectWriter
	Audit   AuditStore
	Index   IndexStore
	Events  EventPublisher

	// Logger receives operational logs (never patient data); nil discards.
	Logger *slog.Logger
	// CommitmentPanicLog is the line of a panic (a bug) advancing one Storage Commitment transaction in
	// RunCommitments, logged with run: commitment; "" means ScheduledPanicLog (the commitment function's). Local
	// mode sets its own.
	CommitmentPanicLog string
	// Names names objects in logs and errors by a keyed digest of their
	// key, never by the key or its UIDs (see logname); nil uses a key
	// drawn for this process.
	Names *logname.Namer
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// QuietPeriod before a study is announced; 0 means DefaultQuietPeriod.
	QuietPeriod time.Duration
	// PatientData is the event content policy; "" means PatientDataNone.
	PatientData PatientDataPolicy
	// AuditSourceID names this system in audit records; "" means "dicom-ingest".
	AuditSourceID string
	// BucketName, when set, is put into events' S3 pointers (s3://bucket/key).
	BucketName string
	// BucketARN, when set, is the bucket's ARN (arn:<partition>:s3:::<bucket>,
	// from the stack, which knows the partition): events' resources then
	// name objects by their ARN (see resource).
	BucketARN string
	// ObjectURLBase, when set and BucketName is not, is put before a key in
	// events' pointers: local mode's portal, which serves every object and
	// document under /objects/ (http://127.0.0.1:8080/objects/).
	ObjectURLBase string

	// Storage Commitment (commitment.go): Commitments keeps the
	// transactions and Reporter delivers their results; both are needed
	// only by ProcessCommitmentRequest and RunCommitments.
	Commitments CommitmentStore
	Reporter    CommitmentReporter
	// CommitmentWait is how long named instances may still be in flight;
	// 0 means DefaultCommitmentWait.
	CommitmentWait time.Duration
	// CommitmentReportFor is how long a result's delivery is retried; 0
	// means DefaultCommitmentReportFor.
	CommitmentReportFor time.Duration
	// QuarantinedCommitted reports whether a calling AE's site counts a
	// quarantined instance as committed (its object is kept in the
	// store); nil means no site does, the default.
	QuarantinedCommitted func(callingAE string) bool
}
