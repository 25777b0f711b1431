package s3test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Fault is one kind of misbehaviour the proxy can inject into a request.
type Fault int

const (
	// Status500 answers 500 InternalError without forwarding.
	Status500 Fault = iota + 1
	// Status503 answers 503 SlowDown without forwarding.
	Status503
	// Slow waits Plan.SlowDelay, then forwards.
	Slow
	// ResetBefore drops the connection (TCP RST) without forwarding.
	ResetBefore
	// ResetAfter forwards the request, then drops the connection instead
	// of answering: the server acted, the client never hears of it.
	ResetAfter
	// Status403 answers 403 AccessDenied, a permanent failure.
	Status403
)

func (f Fault) String() string {
	switch f {
	case Status500:
		return "500"
	case Status503:
		return "503"
	case Slow:
		return "slow"
	case ResetBefore:
		return "reset-before"
	case ResetAfter:
		return "reset-after"
	case Status403:
		return "403"
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Plan says how often and how the proxy misbehaves. The zero Plan forwards
// everything untouched.
type Plan struct {
	Rate      float64 // probability that a request gets a fault
	Faults    []Fault // chosen uniformly
	SlowDelay time.Duration
	Seed      uint64
	// Match, when set, limits faults to the requests it selects.
	Match func(*http.Request) bool
}

// FaultProxy is an HTTP proxy in front of an S3 server that injects faults
// and can be taken down (connections refused) for a while.
type FaultProxy struct {
	URL string

	addr  string
	proxy *httputil.ReverseProxy

	mu     sync.Mutex
	plan   Plan
	rng    *rand.Rand
	srv    *http.Server
	counts map[Fault]int
	wg     sync.WaitGroup
	closed bool
}

// NewFaultProxy starts a proxy on 127.0.0.1:0 forwarding to target.
func NewFaultProxy(t testing.TB, target string, plan Plan) *FaultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("s3test: proxy target: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("s3test: proxy listen: %v", err)
	}
	p := &FaultProxy{
		URL:    "http://" + l.Addr().String(),
		addr:   l.Addr().String(),
		proxy:  httputil.NewSingleHostReverseProxy(u),
		counts: map[Fault]int{},
	}
	p.proxy.ErrorLog = nil
	p.proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		w.WriteHeader(http.StatusBadGateway)
	}
	p.SetPlan(plan)
	p.serve(l)
	t.Cleanup(p.Close)
	return p
}

// SetPlan replaces the fault plan.
func (p *FaultProxy) SetPlan(plan Plan) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.plan = plan
	p.rng = rand.New(rand.NewPCG(plan.Seed, plan.Seed^0x5eed))
}

// Counts returns how many faults of each kind were injected so far.
func (p *FaultProxy) Counts() map[Fault]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := make(map[Fault]int, len(p.counts))
	for k, v := range p.counts {
		c[k] = v
	}
	return c
}

func (p *FaultProxy) serve(l net.Listener) {
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	p.mu.Lock()
	p.srv = srv
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_ = srv.Serve(l)
	}()
}

// Down closes the proxy's listener and every open connection now, so
// clients see resets and then refused connections, and listens again on
// the same address after d. It returns at once.
func (p *FaultProxy) Down(d time.Duration) {
	p.mu.Lock()
	srv := p.srv
	p.mu.Unlock()
	_ = srv.Close()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		time.Sleep(d)
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return
		}
		var l net.Listener
		var err error
		for i := 0; i < 50; i++ { // the port may linger briefly
			if l, err = net.Listen("tcp", p.addr); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			return
		}
		p.serve(l)
	}()
}

// Close stops the proxy.
func (p *FaultProxy) Close() {
	p.mu.Lock()
	p.closed = true
	srv := p.srv
	p.mu.Unlock()
	_ = srv.Close()
	p.wg.Wait()
	p.mu.Lock()
	_ = p.srv.Close() // a Down may have restarted it meanwhile
	p.mu.Unlock()
}

func (p *FaultProxy) pick(r *http.Request) (Fault, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.plan.Match != nil && !p.plan.Match(r) {
		return 0, 0
	}
	if p.plan.Rate <= 0 || len(p.plan.Faults) == 0 || p.rng.Float64() >= p.plan.Rate {
		return 0, 0
	}
	f := p.plan.Faults[p.rng.IntN(len(p.plan.Faults))]
	p.counts[f]++
	return f, p.plan.SlowDelay
}

func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, delay := p.pick(r)
	switch f {
	case Status500:
		writeError(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
	case Status503:
		writeError(w, http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
	case Status403:
		writeError(w, http.StatusForbidden, "AccessDenied", "Access Denied")
	case Slow:
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		p.proxy.ServeHTTP(w, r)
	case ResetBefore:
		reset(w)
	case ResetAfter:
		rec := httptest.NewRecorder()
		p.proxy.ServeHTTP(rec, r)
		reset(w)
	default:
		p.proxy.ServeHTTP(w, r)
	}
}

// reset drops the client connection with a TCP RST.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok { // http.Server's writers always can; be safe anyway
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
