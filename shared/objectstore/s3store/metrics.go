package s3store

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
)

// metrics are always created so the code never checks for nil; they are
// registered only when Options.Metrics is set.
type metrics struct {
	putDuration *prometheus.HistogramVec // by kind (single, multipart, record) and outcome
	retries     *prometheus.CounterVec   // by S3 operation
	aborts      prometheus.Counter
	bytes       prometheus.Counter
	inFlight    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		putDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dicom_ingest_s3_put_duration_seconds",
			Help:    "Time from the first byte read to S3's final answer, by kind (single, multipart, record) and outcome (stored, duplicate: nothing new written, conflict: a copy kept beside the object holding the key, error).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 12),
		}, []string{"kind", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricnames.S3Retries,
			Help: "S3 requests retried after a transient error, by operation.",
		}, []string{metricnames.S3Operation}),
		aborts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicom_ingest_s3_multipart_aborts_total",
			Help: "Multipart uploads aborted (S3 failure, reader error or cancellation).",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicom_ingest_s3_bytes_stored_total",
			Help: "Bytes of objects S3 acknowledged (duplicates excluded).",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "dicom_ingest_s3_uploads_in_flight",
			Help: "Puts currently streaming into S3.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	// A second store on the same registry shares the collectors.
	var err error
	m.putDuration = register(reg, m.putDuration, &err)
	m.retries = register(reg, m.retries, &err)
	m.aborts = register(reg, m.aborts, &err)
	m.bytes = register(reg, m.bytes, &err)
	m.inFlight = register(reg, m.inFlight, &err)
	// Each operation's series exists from the start, at 0: the agent's
	// baseline of a series is the first sample it sees, so a series
	// created by a first retry never published it.
	for _, op := range metricnames.S3Operations {
		m.retries.WithLabelValues(op)
	}
	return m, err
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		if *errp == nil {
			*errp = err
		}
	}
	return c
}
