// Package latency delays answers the way a remote AWS service would: a
// log-normal distribution given by its median and 99th percentile (the two
// figures providers and measurements publish), and an HTTP handler that
// holds each response for a sample of it, so a local emulator answers no
// sooner than the service it stands in for.
package latency

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"
)

// z99 is the standard normal quantile of 0.99.
const z99 = 2.3263478740408408

// Dist is a latency distribution. The zero Dist is no delay; P50 == P99 is
// a constant delay; otherwise samples are log-normal with that median and
// 99th percentile, capped at ten times the 99th percentile so one draw
// from the far tail cannot stall a run.
type Dist struct {
	P50, P99 time.Duration
}

// Parse reads "P50/P99" ("20ms/100ms"), a single duration (constant), or
// "" / "0" (none).
func Parse(s string) (Dist, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return Dist{}, nil
	}
	p50s, p99s, pair := strings.Cut(s, "/")
	p50, err := time.ParseDuration(p50s)
	if err != nil {
		return Dist{}, fmt.Errorf("latency: %q: median: %w", s, err)
	}
	p99 := p50
	if pair {
		if p99, err = time.ParseDuration(p99s); err != nil {
			return Dist{}, fmt.Errorf("latency: %q: 99th percentile: %w", s, err)
		}
	}
	if p50 < 0 || p99 < p50 {
		return Dist{}, fmt.Errorf("latency: %q: want 0 <= median <= 99th percentile", s)
	}
	return Dist{P50: p50, P99: p99}, nil
}

// Zero reports a distribution that never delays.
func (d Dist) Zero() bool { return d.P99 == 0 }

func (d Dist) String() string {
	switch {
	case d.Zero():
		return "0"
	case d.P50 == d.P99:
		return d.P50.String()
	}
	return d.P50.String() + "/" + d.P99.String()
}

// Sample draws one delay using r.
func (d Dist) Sample(r *rand.Rand) time.Duration {
	if d.Zero() || d.P50 == d.P99 || d.P50 == 0 {
		return d.P99
	}
	mu := math.Log(float64(d.P50))
	sigma := (math.Log(float64(d.P99)) - mu) / z99
	v := math.Exp(mu + sigma*r.NormFloat64())
	return time.Duration(min(v, 10*float64(d.P99)))
}

// Sampler draws from a Dist for concurrent callers.
type Sampler struct {
	Dist Dist
	mu   sync.Mutex
	rng  *rand.Rand
}

// NewSampler returns a sampler seeded with seed, so runs draw the same
// sequence of delays.
func NewSampler(d Dist, seed uint64) *Sampler {
	return &Sampler{Dist: d, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Next draws the next delay.
func (s *Sampler) Next() time.Duration {
	if s == nil || s.Dist.Zero() {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Dist.Sample(s.rng)
}

// Handler holds every response of h until a delay drawn from the sampler
// pick returns for the request (nil: no delay) has passed since the
// request's last byte arrived: a PUT is answered no sooner than that
// after its body, a GET starts no sooner than that after its request, as
// S3 answers. The time h itself takes counts toward the delay, so an
// emulator slower than the service is not made slower still.
func Handler(h http.Handler, pick func(*http.Request) *Sampler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := pick(r).Next()
		if d <= 0 {
			h.ServeHTTP(w, r)
			return
		}
		body := &timedBody{ReadCloser: r.Body, done: time.Now()}
		if r.Body != nil && r.Body != http.NoBody {
			body.open = true
			r.Body = body
		}
		dw := &delayedWriter{ResponseWriter: w, body: body, delay: d}
		h.ServeHTTP(dw, r)
		dw.wait()
	})
}

// timedBody notes when the request body was read to its end.
type timedBody struct {
	io.ReadCloser
	open bool // not yet read to its end
	done time.Time
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && b.open {
		b.open, b.done = false, time.Now()
	}
	return n, err
}

type delayedWriter struct {
	http.ResponseWriter
	body   *timedBody
	delay  time.Duration
	waited bool
}

func (w *delayedWriter) wait() {
	if w.waited {
		return
	}
	w.waited = true
	// A handler that answers before reading the whole body (an error)
	// is held from now.
	from := w.body.done
	if w.body.open {
		from = time.Now()
	}
	time.Sleep(time.Until(from.Add(w.delay)))
}

func (w *delayedWriter) WriteHeader(code int) { w.wait(); w.ResponseWriter.WriteHeader(code) }
func (w *delayedWriter) Write(b []byte) (int, error) {
	w.wait()
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *delayedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ByMethod picks reads for GET and HEAD requests and writes for every
// other method.
func ByMethod(reads, writes *Sampler) func(*http.Request) *Sampler {
	return func(r *http.Request) *Sampler {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return reads
		}
		return writes
	}
}
