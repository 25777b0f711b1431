package stagedstore

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
)

// Metric names of the backlog (the infrastructure alarms on those of
// metricnames).
const (
	MetricBacklogAge     = metricnames.StagingBacklogAge
	MetricBacklogBytes   = metricnames.StagingBacklogBytes
	MetricBacklogObjects = "dicom_ingest_staging_backlog_objects"
	MetricParked         = metricnames.StagingParkedObjects
	MetricAdopted        = metricnames.StagingAdopted
)

type metrics struct {
	staged  prometheus.Counter
	refused prometheus.Counter
	noSpace prometheus.Counter
	adopted *metricnames.HeldCounter
	uploads *prometheus.CounterVec
	latency prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, s *Store) (*metrics, error) {
	m := &metrics{
		staged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicom_ingest_staging_objects_total", Help: "Objects staged (acknowledged) by this task.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicom_ingest_staging_refused_total", Help: "Objects and readiness checks refused because the backlog was over its bound.",
		}),
		noSpace: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricnames.StagingNoSpace,
			Help: "Objects and records that could not be staged for lack of space on the staging file system (ENOSPC, EDQUOT), each once, however often it is retried; readiness is off until space is back.",
		}),
		// Held: a start takes over what it finds before the agent's first
		// scrape, its baseline, which took that in and published none.
		adopted: metricnames.NewHeldCounter(prometheus.CounterOpts{
			Name: MetricAdopted, Help: "Staged objects taken over from tasks that stopped. What is taken over before the first scrape shows from the second.",
		}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicom_ingest_staging_uploads_total",
			Help: "Upload attempts of staged objects and records, by outcome (stored, duplicate: nothing new written, conflict: a copy kept beside the object holding the key, gone, error, unreadable).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dicom_ingest_staging_upload_delay_seconds",
			Help:    "Time from staging (acknowledgement) to S3 holding the object.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 14),
		}),
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.staged, m.refused, m.noSpace, m.adopted, m.uploads, m.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricBacklogObjects, Help: "Staged objects and records not yet uploaded (parked ones included)."},
			func() float64 { return float64(s.q.objects()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricBacklogBytes, Help: "Bytes staged and not yet uploaded."},
			func() float64 { return float64(s.q.bytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricBacklogAge, Help: "How long the oldest staged object has waited for its upload (0 when none)."},
			func() float64 { return s.q.oldestAge(time.Now()).Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "dicom_ingest_staging_journal_segments", Help: "Segment files in this task's journal (2 at rest; more while a backlog holds them, removed once it drains)."},
			func() float64 { return float64(s.own.Stats().Segments) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: MetricParked, Help: "Staged objects whose upload keeps failing other than transiently (retried every minute)."},
			func() float64 { return float64(s.q.parkedCount()) }),
	}
	for op := range vfs.NumOps {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "dicom_ingest_staging_fs_operations_total",
			Help:        "File-system operations on the staging directory, by kind (each one or more NFS round trips on EFS).",
			ConstLabels: prometheus.Labels{"op": op.String()},
		}, func() float64 { return float64(s.fs.Count(op)) }))
	}
	var errs []error
	for _, c := range cs {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}
