// Package metricnames names the SCP's Prometheus metrics that leave the
// task: the CloudWatch agent sidecar publishes them (infra/stack selects
// them by these names) and the stack's alarms, dashboard and autoscaling
// use them. scp-task registers its metrics under the same constants, so a
// metric renamed in one place is renamed in both, and Kinds says for each
// whether it is a counter or a gauge, which decides the statistic
// CloudWatch must read it with.
package metricnames

import (
	"errors"
	"fmt"
	"slices"

	dto "github.com/prometheus/client_model/go"
)

const (
	// AssociationsActive is the gauge of associations established.
	AssociationsActive = "dicom_ingest_associations_active"
	// AssociationsRejected counts rejected association requests, by reason.
	AssociationsRejected = "dicom_ingest_associations_rejected_total"
	// StoreFailures counts C-STOREs answered with a failure, by status.
	StoreFailures = "dicom_ingest_store_failures_total"
	// ObjectsStored counts instances durably stored and acknowledged.
	ObjectsStored = "dicom_ingest_objects_stored_total"
	// AuditRecordsLost counts association audit records never written
	// (still queued when the process had to exit, or not encodable).
	AuditRecordsLost = "dicom_ingest_audit_records_lost_total"
	// AuditUncleanStops counts runs found to have stopped uncleanly
	// (killed, crashed), whose unwritten audit records are lost, by a start
	// or by a running SCP sharing their run markers (local mode's data
	// directory, the staging directory, a file store's directory, a direct
	// S3 store's bucket).
	AuditUncleanStops = "dicom_ingest_audit_unclean_stops_total"
	// AuditRefusalsFolded counts refused connections (failed TLS
	// handshakes, rejected associations) written as part of a record
	// standing for several, not one by one: the size of a flood.
	AuditRefusalsFolded = "dicom_ingest_audit_refusals_folded_total"
	// TaskProtectionFailures counts failed calls to the ECS agent's
	// scale-in protection endpoint (each is retried).
	TaskProtectionFailures = "dicom_ingest_task_protection_failures_total"
	// TLSHandshakeFailures counts failed handshakes on the TLS listener,
	// by reason.
	TLSHandshakeFailures = "dicom_ingest_tls_handshake_failures_total"
	// TLSReloads counts loads of the TLS certificate and client CA after
	// the first, by result (TLSReloadLoaded, TLSReloadFailed).
	TLSReloads = "dicom_ingest_tls_reloads_total"
	// TLSCertificateExpiresIn is the seconds until the served TLS
	// certificate expires.
	TLSCertificateExpiresIn = "dicom_ingest_tls_certificate_expires_in_seconds"
	// TLSClientCRLNextUpdateIn is, per client CRL (label issuer), the
	// seconds until its next update.
	TLSClientCRLNextUpdateIn = "dicom_ingest_tls_client_crl_next_update_in_seconds"
	// TLSClientCertificateExpiresIn is the seconds until the soonest
	// expiry among the client certificates each calling AE presented last
	// under each subject (within the last 7 days).
	TLSClientCertificateExpiresIn = "dicom_ingest_tls_client_certificate_expires_in_seconds"
	// StagingBacklogAge is how long the oldest staged object has waited
	// for its upload.
	StagingBacklogAge = "dicom_ingest_staging_backlog_age_seconds"
	// StagingBacklogBytes is what a task has staged and not uploaded.
	StagingBacklogBytes = "dicom_ingest_staging_backlog_bytes"
	// StagingNoSpace counts objects and records that could not be staged
	// for lack of space on the staging file system (ENOSPC, EDQUOT).
	StagingNoSpace = "dicom_ingest_staging_no_space_total"
	// StagingParkedObjects is how many staged objects a task holds whose
	// upload keeps failing other than transiently (retried every minute).
	StagingParkedObjects = "dicom_ingest_staging_parked_objects"
	// StagingAdopted counts staged objects a task took over from the
	// journal of a task that stopped (killed, crashed).
	StagingAdopted = "dicom_ingest_staging_adopted_total"
	// AuditWritable is 1 while a task writes association audit records,
	// 0 while its last attempt failed (it refuses new associations).
	AuditWritable = "dicom_ingest_audit_writable"
	// TaskProtected is 1 while a task holds ECS scale-in protection.
	TaskProtected = "dicom_ingest_task_protected"
	// AuditQueueLength is how many association audit records a task has
	// not yet written (queued, or retried while the store refuses them):
	// what its exit or death would lose now.
	AuditQueueLength = "dicom_ingest_audit_queue_length"
	// ConnectionsShed counts connections closed before they asked for an
	// association (bounds on such connections, by reason): nothing of them
	// reaches the audit trail.
	ConnectionsShed = "dicom_ingest_connections_shed_total"
	// S3Retries counts the S3 store's requests retried after a transient
	// error (S3's 5xx, SlowDown, a reset connection), by operation: S3 or
	// its endpoint failing as the task sees it.
	S3Retries = "dicom_ingest_s3_retries_total"
)

// The labels published as CloudWatch dimensions (Dimensions).
const (
	// RejectReason is AssociationsRejected's label: why an association
	// was rejected, one of RejectReasons.
	RejectReason = "reason"
	// FailureStatus is StoreFailures' label: the DIMSE status sent, one
	// of FailureStatuses.
	FailureStatus = "status"
	// StatusNone is FailureStatus for a C-STORE that got no response: the
	// association ended while its data set arrived.
	StatusNone = "none"
)

// RejectReasons are RejectReason's values (scp-task's metrics.RejectLabel
// of every rejection the SCP sends; no_reason_given is sent for a
// malformed request; RejectUnknown for any other, which keeps the
// values, and the CloudWatch metrics they are, fixed).
var RejectReasons = []string{
	"calling_ae_not_recognized", "called_ae_not_recognized", "too_many_associations", "temporary_congestion",
	"application_context_not_supported", "protocol_version_not_supported", "no_reason_given", RejectUnknown,
}

// RejectUnknown is RejectReason for a rejection outside the standard ones
// the SCP sends: none is expected, and its count says the code sent one.
const RejectUnknown = "unknown"

// FailureStatuses are FailureStatus's values: the failure statuses the
// SCP answers a C-STORE with (docs/conformance.md), four upper-case hex
// digits, and StatusNone.
var FailureStatuses = []string{"0110", "0122", "A700", "A900", "C000", "C001", "C002", StatusNone}

// TLSHandshakeReason is TLSHandshakeFailures' label: why a handshake
// failed, one of TLSHandshakeReasons.
const TLSHandshakeReason = "reason"

// TLSHandshakeReasons are TLSHandshakeReason's values: those of
// dicomnet.HandshakeFailureReasons, the one classification of a failed
// handshake, which its log line carries too (scp-task's metrics tests hold
// the two lists equal; dicomnet is not imported here, which would bring
// it into the CDK app). "other" is any failure it does not know.
var TLSHandshakeReasons = []string{
	"timeout", "not_tls", "no_certificate", "expired", "not_yet_valid", "unknown_ca", "revoked", "bad_certificate", "protocol_version",
	"cipher_mismatch", "peer_alert", "peer_closed", "other",
}

// The label of ConnectionsShed and its values: why a connection was
// closed before it associated.
const (
	ShedReason = "reason"
	// ShedTotal: the oldest connection waiting made room under the bound
	// on all such connections.
	ShedTotal = "total"
	// ShedPerAddress: refused, its address at its bound.
	ShedPerAddress = "per_address"
	// ShedMemory: the oldest waiting one made room in the memory bound,
	// or a newcomer got none within ARTIM.
	ShedMemory = "memory"
)

// ShedReasons are ShedReason's values.
var ShedReasons = []string{ShedTotal, ShedPerAddress, ShedMemory}

// S3Operation is S3Retries' label: the S3 request retried, one of
// S3Operations (the S3 API's names; PutRecord is a PutObject of an audit
// record or a run marker's body held in memory).
const S3Operation = "op"

// S3Operations are S3Operation's values: every request the S3 store
// retries (s3store's tests hold its calls to this list).
var S3Operations = []string{
	"PutObject", "PutRecord", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "AbortMultipartUpload",
	"ListMultipartUploads", "HeadObject", "GetObject", "ListObjectsV2", "DeleteObject",
}

// Known is, for each labelled counter the agent publishes, its label's
// values known ahead. The SCP creates each of these series at 0 when it
// registers the counter: a series appears on /metrics only once it exists,
// and the agent takes the first sample it sees of a series as its
// baseline and publishes only increases over it, so a series created by
// its first increment never published that increment (a first S3 retry,
// a first shed connection, a first rejection for a reason). Labels whose
// values are open-ended (peer addresses, AE titles) have no place here.
var Known = map[string]LabelValues{
	AssociationsRejected: {RejectReason, RejectReasons},
	StoreFailures:        {FailureStatus, FailureStatuses},
	ConnectionsShed:      {ShedReason, ShedReasons},
	S3Retries:            {S3Operation, S3Operations},
	TLSHandshakeFailures: {TLSHandshakeReason, TLSHandshakeReasons},
}

// LabelValues are a label's values known ahead.
type LabelValues struct {
	Label  string
	Values []string
}

// Dimensions names, for each metric published with one of its labels as
// a CloudWatch dimension, that label. The agent publishes such a metric
// twice: by Environment and the label (one metric per value, for the
// on-call engineer to see which), and by Environment alone, which
// CloudWatch sums over the label's values (what the alarms watch: an
// alarm cannot read a SEARCH expression). Only labels with few values
// fixed by the code belong here: each value is a CloudWatch metric of
// its own, billed and kept 15 months.
var Dimensions = map[string]string{
	AssociationsRejected: RejectReason,
	StoreFailures:        FailureStatus,
	TLSHandshakeFailures: TLSHandshakeReason,
}

// The label of TLSReloads and its values.
const (
	TLSReloadResult = "result"
	TLSReloadLoaded = "loaded"
	TLSReloadFailed = "failed"
)

// Kind is how a metric's samples add up in CloudWatch. The agent publishes
// one sample per task per scrape (every 30 s): a counter as its increase
// since the last scrape, so the Sum over a period is what happened in it;
// a gauge as its value, so a Sum over a minute adds two samples of every
// task and means nothing, and the value is read with Maximum, Minimum or
// Average (SampleCount counts the samples, for an alarm on their absence).
type Kind string

const (
	Counter Kind = "counter"
	Gauge   Kind = "gauge"
)

// Kinds is the kind of each metric above: every metric the agent may
// publish.
var Kinds = map[string]Kind{
	AssociationsActive:            Gauge,
	AssociationsRejected:          Counter,
	StoreFailures:                 Counter,
	ObjectsStored:                 Counter,
	AuditRecordsLost:              Counter,
	AuditUncleanStops:             Counter,
	AuditRefusalsFolded:           Counter,
	TaskProtectionFailures:        Counter,
	TLSHandshakeFailures:          Counter,
	TLSReloads:                    Counter,
	TLSCertificateExpiresIn:       Gauge,
	TLSClientCRLNextUpdateIn:      Gauge,
	TLSClientCertificateExpiresIn: Gauge,
	StagingBacklogAge:             Gauge,
	StagingBacklogBytes:           Gauge,
	StagingNoSpace:                Counter,
	StagingParkedObjects:          Gauge,
	StagingAdopted:                Counter,
	AuditWritable:                 Gauge,
	TaskProtected:                 Gauge,
	AuditQueueLength:              Gauge,
	ConnectionsShed:               Counter,
	S3Retries:                     Counter,
}

// Statistics are the CloudWatch statistics that read a metric of each
// kind.
var Statistics = map[Kind][]string{
	Counter: {"Sum"},
	Gauge:   {"Maximum", "Minimum", "Average", "SampleCount"},
}

// StatisticFits reports whether statistic reads a metric of kind k.
func StatisticFits(k Kind, statistic string) bool {
	return slices.Contains(Statistics[k], statistic)
}

// CheckRegistered reports each of names missing from the gathered families
// or registered as another kind than Kinds says (a test's check that the
// code registers what the stack publishes).
func CheckRegistered(mfs []*dto.MetricFamily, names ...string) error {
	got := map[string]dto.MetricType{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetType()
	}
	want := map[Kind]dto.MetricType{Counter: dto.MetricType_COUNTER, Gauge: dto.MetricType_GAUGE}
	var errs []error
	for _, name := range names {
		k, ok := Kinds[name]
		typ, registered := got[name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("metricnames: %s has no kind", name))
		case !registered:
			errs = append(errs, fmt.Errorf("metricnames: %s is not registered", name))
		case typ != want[k]:
			errs = append(errs, fmt.Errorf("metricnames: %s is registered as a %s, Kinds says %s", name, typ, k))
		}
	}
	return errors.Join(errs...)
}
