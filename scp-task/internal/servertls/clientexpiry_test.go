package servertls

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

// TestSiteCertificateExpiry: a site's client certificate about to expire is
// warned of before every TLS association of that site fails its handshake
// (the server certificate had a metric and an alarm; the sites' had
// nothing): the metric is the soonest expiry among the certificates each
// calling AE presented last under each subject (a renewed certificate
// replaces the old; another node's, bound to the same AE, does not),
// within 7 days, and a certificate expiring within 30 days is logged once.
func TestSiteCertificateExpiry(t *testing.T) {
	start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	ca := testpki.NewCA(t, "Site CA")
	cert := func(name string, days int) *testpki.Cert {
		return ca.Client(t, testpki.Options{CommonName: name, DNSNames: []string{name},
			NotBefore: start.Add(-time.Hour), NotAfter: start.Add(time.Duration(days) * 24 * time.Hour)})
	}
	stmary, stmaryRenewed, north := cert("pacs.st-mary.example", 20), cert("pacs.st-mary.example", 365), cert("pacs.north.example", 90)
	stmary2 := cert("pacs2.st-mary.example", 300) // another node calling as the same AE (an AE title may be bound to several names)
	type step struct {
		after    time.Duration // since start
		ae       string
		cert     *testpki.Cert // nil: a plain association, or only a scrape when ae is ""
		wantDays float64       // the metric in days; 0: none
		warned   []string      // the calling AEs warned of by this step
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"no certificate presented", []step{
			{ae: "STMARY_PACS"},
			{},
		}},
		{"the soonest of the sites, warned once", []step{
			{ae: "NORTH_PACS", cert: north, wantDays: 90},
			{ae: "STMARY_PACS", cert: stmary, wantDays: 20, warned: []string{"STMARY_PACS"}},
			{after: time.Hour, ae: "STMARY_PACS", cert: stmary, wantDays: 20 - 1.0/24},
		}},
		{"a renewed certificate replaces the old", []step{
			{ae: "STMARY_PACS", cert: stmary, wantDays: 20, warned: []string{"STMARY_PACS"}},
			{ae: "NORTH_PACS", cert: north, wantDays: 20},
			{ae: "STMARY_PACS", cert: stmaryRenewed, wantDays: 90},
		}},
		{"two certificates of one calling AE: the other one's later association hides neither", []step{
			{ae: "STMARY_PACS", cert: stmary, wantDays: 20, warned: []string{"STMARY_PACS"}},
			{after: time.Minute, ae: "STMARY_PACS", cert: stmary2, wantDays: 20 - 1.0/24/60},
			{after: 2 * time.Minute, ae: "STMARY_PACS", cert: stmaryRenewed, wantDays: 300 - 2.0/24/60},
		}},
		{"a site not seen for 7 days no longer counts", []step{
			{ae: "STMARY_PACS", cert: stmary, wantDays: 20, warned: []string{"STMARY_PACS"}},
			{after: 24 * time.Hour, ae: "NORTH_PACS", cert: north, wantDays: 19},
			{after: 7*24*time.Hour + time.Minute, wantDays: 90 - 7 - 1.0/24/60},
			{after: 8*24*time.Hour + time.Minute},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := start
			var logs testenv.LogBuffer
			reg := prometheus.NewRegistry()
			c, err := newClientExpiry(jsonlog.New(&logs, slog.LevelInfo), reg, func() time.Time { return now })
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tc.steps {
				now = start.Add(s.after)
				switch {
				case s.cert != nil:
					c.Presented(s.ae, s.cert.Cert)
				case s.ae != "":
					c.Presented(s.ae, nil)
				}
				families, err := reg.Gather()
				if err != nil {
					t.Fatal(err)
				}
				var got float64
				for _, f := range families {
					if f.GetName() == metricnames.TLSClientCertificateExpiresIn {
						got = f.GetMetric()[0].GetGauge().GetValue() / 86400
					}
				}
				if diff := got - s.wantDays; diff > 1e-6 || diff < -1e-6 {
					t.Errorf("step %d: metric %.6f days, want %.6f", i, got, s.wantDays)
				}
				var warned []string
				for l := range strings.Lines(logs.Take()) {
					var line struct {
						Msg       string
						CallingAE string `json:"calling_ae"`
						Serial    string
						NotAfter  string `json:"not_after"`
					}
					if err := json.Unmarshal([]byte(l), &line); err != nil {
						t.Fatal(err)
					}
					if line.Msg != "site certificate expires soon: issue the site a new one" || line.Serial == "" || line.NotAfter == "" {
						t.Errorf("step %d: unexpected line %s", i, l)
					}
					warned = append(warned, line.CallingAE)
				}
				if strings.Join(warned, ",") != strings.Join(s.warned, ",") {
					t.Errorf("step %d: warned of %q, want %q", i, warned, s.warned)
				}
			}
		})
	}
}
