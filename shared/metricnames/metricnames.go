// Package metricnames names the SCP's Prometheus metrics that leave the
// task: the CloudWatch agent sidecar publishes them (infra/stack selects
// them by these names) and the stack's alarms, dashboard and autoscaling
// use them. scp-task registers its metrics under the same constants, so a
// metric renamed in one place is renamed in both.
package metricnames

const (
	// AssociationsActive is the gauge of associations established.
	AssociationsActive = "dicom_ingest_associations_active"
	// AssociationsRejected counts rejected association requests, by reason.
	AssociationsRejected = "dicom_ingest_associations_rejected_total"
	// StoreFailures counts C-STOREs answered with a failure, by status.
	StoreFailures = "dicom_ingest_store_failures_total"
	// ObjectsStored counts instances durably stored and acknowledged.
	ObjectsStored = "dicom_ingest_objects_stored_total"
	// TLSHandshakeFailures counts failed handshakes on the TLS listener.
	TLSHandshakeFailures = "dicom_ingest_tls_handshake_failures_total"
	// TLSCertificateExpiresIn is the seconds until the served TLS
	// certificate expires.
	TLSCertificateExpiresIn = "dicom_ingest_tls_certificate_expires_in_seconds"
	// TLSClientCRLNextUpdateIn is, per client CRL (label issuer), the
	// seconds until its next update.
	TLSClientCRLNextUpdateIn = "dicom_ingest_tls_client_crl_next_update_in_seconds"
	// StagingBacklogAge is how long the oldest staged object has waited
	// for its upload.
	StagingBacklogAge = "dicom_ingest_staging_backlog_age_seconds"
	// StagingBacklogBytes is what a task has staged and not uploaded.
	StagingBacklogBytes = "dicom_ingest_staging_backlog_bytes"
)
