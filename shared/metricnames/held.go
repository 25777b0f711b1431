package metricnames

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// HeldCounter is a counter for what a task may count before the agent
// first scrapes it: the agent takes the first sample of a series as its
// baseline and publishes only increases over it, so a count made at a
// task's start (an unclean stop its start finds, a dead task's staged
// objects it takes over) went into the baseline and was never published.
// A HeldCounter shows 0 to its first collection (the agent's first
// scrape, its baseline) and what was counted before it from the next
// one, which publishes it as an increase; after that it counts as any
// counter. It is safe for concurrent use.
type HeldCounter struct {
	desc *prometheus.Desc

	mu        sync.Mutex
	shown     float64 // what a collection reports
	held      float64 // counted before the first collection
	collected bool
}

var _ prometheus.Collector = (*HeldCounter)(nil)

// NewHeldCounter makes a HeldCounter; register it as any collector.
func NewHeldCounter(opts prometheus.CounterOpts) *HeldCounter {
	name := prometheus.BuildFQName(opts.Namespace, opts.Subsystem, opts.Name)
	return &HeldCounter{desc: prometheus.NewDesc(name, opts.Help, nil, opts.ConstLabels)}
}

// Inc counts one.
func (c *HeldCounter) Inc() { c.Add(1) }

// Add counts v; a negative v is ignored (a counter never goes down).
func (c *HeldCounter) Add(v float64) {
	if !(v > 0) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.collected {
		c.shown += v
	} else {
		c.held += v
	}
}

// Describe implements prometheus.Collector.
func (c *HeldCounter) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector: the first collection reports
// what was counted after none, and releases what was held for the next.
func (c *HeldCounter) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	v := c.shown
	if !c.collected {
		c.collected = true
		c.shown += c.held
		c.held = 0
	}
	c.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, v)
}

// Scrape gathers g, as the agent's scrape does, and returns the value of
// the counter or gauge name (its samples summed, over its labels): a
// test's model of what the agent reads. A name g does not gather is an
// error.
func Scrape(g prometheus.Gatherer, name string) (float64, error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, fmt.Errorf("metricnames: gather: %w", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var v float64
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return v, nil
	}
	return 0, fmt.Errorf("metricnames: %s not gathered", name)
}
