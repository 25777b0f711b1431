package metricnames

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// agentSamples scrapes reg as the metrics agent does, once per step, and
// returns what it publishes of name: nothing of the first sample (its
// baseline), then each sample's increase over the one before.
func agentSamples(t *testing.T, reg *prometheus.Registry, name string, steps []func()) (published float64) {
	t.Helper()
	var last float64
	for i, step := range steps {
		step()
		v, err := Scrape(reg, name)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			published += v - last
		}
		last = v
	}
	return published
}

// TestHeldCounterPublishesCountsBeforeTheFirstScrape: what a HeldCounter
// counts before the agent's first scrape, the agent's baseline, is
// published by a later one; a plain counter's went into the baseline.
func TestHeldCounterPublishesCountsBeforeTheFirstScrape(t *testing.T) {
	const name = "dicom_ingest_test_total"
	tests := []struct {
		name          string
		before, after float64 // counted before the first scrape, between the first and the second
	}{
		{"counted at start only", 2, 0},
		{"counted after the first scrape only", 0, 3},
		{"both", 1, 1},
		{"nothing", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			c := NewHeldCounter(prometheus.CounterOpts{Name: name, Help: "test"})
			reg.MustRegister(c)
			steps := []func(){func() { c.Add(tt.before) }, func() { c.Add(tt.after) }, func() {}}
			if got, want := agentSamples(t, reg, name, steps), tt.before+tt.after; got != want {
				t.Errorf("published %v, want %v", got, want)
			}
			c.Add(-1)
			if got := agentSamples(t, reg, name, []func(){func() {}, func() {}}); got != 0 {
				t.Errorf("a negative Add published %v", got)
			}
		})
	}
	// The defect HeldCounter cures: a plain counter's count at start is
	// the agent's baseline, never published.
	reg := prometheus.NewRegistry()
	plain := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: "test"})
	reg.MustRegister(plain)
	if got := agentSamples(t, reg, name, []func(){func() { plain.Add(2) }, func() {}}); got != 0 {
		t.Errorf("a plain counter published %v of a count before the first scrape; the agent's model is wrong", got)
	}
}
