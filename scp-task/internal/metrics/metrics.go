// Package metrics turns the SCP's association events into Prometheus
// metrics for /metrics: associations active, total and rejected by reason,
// objects and bytes stored, store latency and failures by status, failed
// TLS handshakes by reason.
package metrics

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
)

// Observer records association events as metrics. It is safe for
// concurrent use.
type Observer struct {
	active        prometheus.Gauge
	associations  *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	aborted       prometheus.Counter
	objects       prometheus.Counter
	bytes         prometheus.Counter
	storeDuration prometheus.Histogram
	failures      *prometheus.CounterVec
	echoes        prometheus.Counter
	shed          *prometheus.CounterVec
	tlsFailures   *prometheus.CounterVec
}

var _ dicomnet.Observer = (*Observer)(nil)

// New registers the SCP's metrics on reg.
func New(reg prometheus.Registerer) (*Observer, error) {
	o := &Observer{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metricnames.AssociationsActive, Help: "Associations currently established.",
		}),
		associations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicom_ingest_associations_total", Help: "Association requests by outcome (accepted, rejected).",
		}, []string{"outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.AssociationsRejected, Help: "Rejected association requests by reason.",
		}, []string{metricnames.RejectReason}),
		aborted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicom_ingest_associations_aborted_total", Help: "Associations that ended in an A-ABORT or a dropped connection.",
		}),
		objects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricnames.ObjectsStored, Help: "Instances durably stored and acknowledged.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicom_ingest_bytes_stored_total", Help: "Dataset bytes of acknowledged instances.",
		}),
		storeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dicom_ingest_store_duration_seconds", Help: "C-STORE time from command to response, stored instances only.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.StoreFailures, Help: "C-STORE requests answered with a failure, by DIMSE status.",
		}, []string{metricnames.FailureStatus}),
		echoes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicom_ingest_echoes_total", Help: "C-ECHO requests answered.",
		}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.ConnectionsShed,
			Help: "Connections closed before they associated, to keep the bounds on connections without an association (total: the oldest waiting one made room; per_address: refused, its address at its bound; memory: the oldest waiting one made room in --max-preassociation-bytes, or a newcomer got none within ARTIM).",
		}, []string{metricnames.ShedReason}),
		tlsFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.TLSHandshakeFailures,
			Help: "Connections to the TLS listener whose handshake failed, by reason (an expired or untrusted client certificate, an old TLS version, plain DICOM on the TLS port, ...: docs/operations/alarms.md lists them).",
		}, []string{metricnames.TLSHandshakeReason}),
	}
	for _, c := range []prometheus.Collector{o.active, o.associations, o.rejected, o.aborted, o.objects, o.bytes, o.storeDuration, o.failures, o.echoes, o.shed, o.tlsFailures} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	// Every series whose label value is known ahead exists from the start,
	// at 0: the agent's baseline of a series is the first sample it sees,
	// so one created by its first increment never published it.
	for _, outcome := range []string{outcomeAccepted, outcomeRejected} {
		o.associations.WithLabelValues(outcome)
	}
	for name, vec := range map[string]*prometheus.CounterVec{
		metricnames.AssociationsRejected: o.rejected, metricnames.StoreFailures: o.failures, metricnames.ConnectionsShed: o.shed,
		metricnames.TLSHandshakeFailures: o.tlsFailures,
	} {
		for _, v := range metricnames.Known[name].Values {
			vec.WithLabelValues(v)
		}
	}
	return o, nil
}

// The outcomes of dicom_ingest_associations_total.
const (
	outcomeAccepted = "accepted"
	outcomeRejected = "rejected"
)

// ObserveAssociation implements dicomnet.Observer.
func (o *Observer) ObserveAssociation(ev dicomnet.Event) {
	switch ev.Type {
	case dicomnet.EventAccepted:
		o.active.Inc()
		o.associations.WithLabelValues(outcomeAccepted).Inc()
	case dicomnet.EventRejected:
		o.associations.WithLabelValues(outcomeRejected).Inc()
		o.rejected.WithLabelValues(RejectLabel(ev.Reject)).Inc()
	case dicomnet.EventReleased:
		o.active.Dec()
	case dicomnet.EventAborted:
		o.active.Dec()
		o.aborted.Inc()
	case dicomnet.EventStored:
		o.objects.Inc()
		o.bytes.Add(float64(ev.Bytes))
		o.storeDuration.Observe(ev.Duration.Seconds())
	case dicomnet.EventStoreFailed:
		o.failures.WithLabelValues(StatusLabel(ev.Status)).Inc()
	case dicomnet.EventShed:
		reason := metricnames.ShedTotal
		switch {
		case errors.Is(ev.Err, dicomnet.ErrShedPerAddr):
			reason = metricnames.ShedPerAddress
		case errors.Is(ev.Err, dicomnet.ErrShedMemory):
			reason = metricnames.ShedMemory
		}
		o.shed.WithLabelValues(reason).Inc()
	case dicomnet.EventEcho:
		o.echoes.Inc()
	case dicomnet.EventHandshakeFailed:
		o.tlsFailures.WithLabelValues(dicomnet.HandshakeFailureReason(ev.Err)).Inc()
	}
}

// StatusLabel names a C-STORE failure's status for metrics as its audit
// record does (associationaudit.StoreStatus): four upper-case hex digits,
// or metricnames.StatusNone for one that got no response
// (associationaudit.NotAnswered: the association ended while its data set
// arrived), which "0000", success, misnamed.
func StatusLabel(status uint16) string {
	s := associationaudit.StoreStatus(status)
	if associationaudit.NotAnswered(s) {
		return metricnames.StatusNone
	}
	return s
}

// RejectLabel names a rejection for the rejected-associations counter:
// one of metricnames.RejectReasons, "unknown" for a rejection outside
// the standard ones this SCP sends (none is expected; the SCP's
// "dicomnet: association rejected" line gives its codes). A label named
// after the codes would be a CloudWatch dimension value, and metric, of
// its own, and a series the agent had not seen, whose first increase it
// never published.
func RejectLabel(r *dicomnet.RejectError) string {
	if r == nil {
		return metricnames.RejectUnknown
	}
	switch *r {
	case *dicomnet.RejectCallingAENotRecognized:
		return "calling_ae_not_recognized"
	case *dicomnet.RejectCalledAENotRecognized:
		return "called_ae_not_recognized"
	case *dicomnet.RejectTooManyAssociations:
		return "too_many_associations"
	case *dicomnet.RejectTemporaryCongestion:
		return "temporary_congestion"
	case *dicomnet.RejectApplicationContext:
		return "application_context_not_supported"
	case *dicomnet.RejectProtocolVersion:
		return "protocol_version_not_supported"
	case *dicomnet.RejectNoReason:
		return "no_reason_given"
	}
	return metricnames.RejectUnknown
}
