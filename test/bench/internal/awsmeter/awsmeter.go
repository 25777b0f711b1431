// Package awsmeter counts AWS API calls where they arrive: an HTTP handler
// in front of an emulator names each request's operation (S3's REST verbs
// and sub-resources, X-Amz-Target for the JSON protocols of DynamoDB, SQS
// and EventBridge) and counts it. The bench runs scp-task and the Lambda
// functions as they are deployed, so counting at the endpoint sees every
// request their SDK clients send, retries included: what AWS bills.
package awsmeter

import (
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/test/internal/awsemu"
)

// Meter counts calls per "Service Operation" and, for calls through
// Handler, how long they took to answer.
type Meter struct {
	mu     sync.Mutex
	counts map[string]int64
	times  map[string][]time.Duration // the first maxTimes answers' durations per operation
}

// maxTimes bounds the durations kept per operation.
const maxTimes = 1 << 16

// New returns an empty meter.
func New() *Meter { return &Meter{counts: map[string]int64{}, times: map[string][]time.Duration{}} }

// Add counts n calls of op directly, for calls the bench models rather
// than sends (SQS requests made by Lambda's event source mapping, S3's
// notification deliveries).
func (m *Meter) Add(op string, n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts[op] += n
}

// Counts returns a copy of the counts.
func (m *Meter) Counts() map[string]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.counts)
}

// Reset forgets every count and returns what was counted.
func (m *Meter) Reset() map[string]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.counts
	m.counts, m.times = map[string]int64{}, map[string][]time.Duration{}
	return out
}

// Latency is how long an operation's calls took to answer.
type Latency struct {
	N     int     `json:"n"`
	P50ms float64 `json:"p50ms"`
	P99ms float64 `json:"p99ms"`
}

// Latencies returns each timed operation's answer time quantiles.
func (m *Meter) Latencies() map[string]Latency {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]Latency{}
	for op, ds := range m.times {
		ds = slices.Clone(ds)
		slices.Sort(ds)
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		out[op] = Latency{N: len(ds), P50ms: ms(ds[len(ds)/2]), P99ms: ms(ds[min(len(ds)-1, len(ds)*99/100)])}
	}
	return out
}

// Handler counts every request to h under service (e.g. "S3",
// "DynamoDB") and the operation Operation names, and times its answer.
func (m *Meter) Handler(service string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := service + " " + awsemu.Operation(r)
		m.Add(op, 1)
		start := time.Now()
		h.ServeHTTP(w, r)
		d := time.Since(start)
		m.mu.Lock()
		if len(m.times[op]) < maxTimes {
			m.times[op] = append(m.times[op], d)
		}
		m.mu.Unlock()
	})
}
