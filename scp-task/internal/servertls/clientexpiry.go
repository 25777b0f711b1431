package servertls

import (
	"crypto/x509"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
)

const (
	// ClientExpiryWarning is how long before a site's certificate expires
	// the SCP warns of it (as the alarm on ClientExpiry's metric does).
	ClientExpiryWarning = 30 * 24 * time.Hour
	// ClientSeenWithin is how long a calling AE's certificate counts after
	// it was last presented: a site that stopped sending (or was removed)
	// does not hold the metric for ever.
	ClientSeenWithin = 7 * 24 * time.Hour
)

// ClientExpiry follows the client certificates sites present: the
// certificate a site's PACS holds is the site's, not ours, and nothing
// else tells that it is about to expire (after which every TLS
// association of that site fails the handshake). It exports the seconds
// until the soonest expiry among the certificates last presented by each
// calling AE under each subject within ClientSeenWithin (nothing when
// there are none): a renewed certificate (the same subject) replaces the
// old one, while another node's calling as the same AE (the allowlist
// may bind an AE title to several certificate names) keeps its own, which
// the busier node's associations would otherwise hide from the metric. It
// logs a warning once per certificate, per process, when one presented
// expires within ClientExpiryWarning. It is safe for concurrent use.
type ClientExpiry struct {
	log  *slog.Logger
	now  func() time.Time
	desc *prometheus.Desc

	mu     sync.Mutex
	last   map[presenter]presented
	warned map[string]bool // certificates warned of, by SHA-256
}

// presenter is a calling AE title and a certificate subject (DER).
type presenter struct{ ae, subject string }

type presented struct {
	notAfter, at time.Time
}

// NewClientExpiry returns a ClientExpiry registering its metric with reg
// when reg is not nil.
func NewClientExpiry(log *slog.Logger, reg prometheus.Registerer) (*ClientExpiry, error) {
	return newClientExpiry(log, reg, time.Now)
}

func newClientExpiry(log *slog.Logger, reg prometheus.Registerer, now func() time.Time) (*ClientExpiry, error) {
	c := &ClientExpiry{log: log, now: now, last: map[presenter]presented{}, warned: map[string]bool{},
		desc: prometheus.NewDesc(metricnames.TLSClientCertificateExpiresIn,
			"Seconds until the soonest expiry among the client certificates each calling AE presented last under each subject, within the last 7 days.", nil, nil)}
	if reg != nil {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Presented records that callingAE was admitted with cert (verified by
// TLS); a nil cert is ignored.
func (c *ClientExpiry) Presented(callingAE string, cert *x509.Certificate) {
	if cert == nil {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last[presenter{callingAE, string(cert.RawSubject)}] = presented{notAfter: cert.NotAfter, at: now}
	if left := cert.NotAfter.Sub(now); left < ClientExpiryWarning {
		p := associationaudit.CertificatePeer(cert, "")
		if !c.warned[p.SHA256] {
			c.warned[p.SHA256] = true
			c.log.Warn("site certificate expires soon: issue the site a new one", "calling_ae", callingAE,
				"subject", p.Subject, "issuer", p.Issuer, "serial", p.Serial, "sha256", p.SHA256,
				"not_after", cert.NotAfter.UTC().Format(time.RFC3339), "days_left", int(left.Hours()/24))
		}
	}
}

// Describe implements prometheus.Collector.
func (c *ClientExpiry) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *ClientExpiry) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	c.mu.Lock()
	var soonest time.Time
	for k, p := range c.last {
		if now.Sub(p.at) > ClientSeenWithin {
			delete(c.last, k)
			continue
		}
		if soonest.IsZero() || p.notAfter.Before(soonest) {
			soonest = p.notAfter
		}
	}
	c.mu.Unlock()
	if !soonest.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, soonest.Sub(now).Seconds())
	}
}
