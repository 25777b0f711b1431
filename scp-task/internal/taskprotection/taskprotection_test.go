package taskprotection

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// agent is a stand-in for the ECS agent's task protection endpoint.
type agent struct {
	t    *testing.T
	mu   sync.Mutex
	puts []put
	fail bool
	seen chan put
}

type put struct {
	at      time.Time
	enabled bool
	minutes int
}

func newAgent(t *testing.T) (*agent, string) {
	a := &agent{t: t, seen: make(chan put, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.URL.Path != "/api/task-1"+StatePath || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("body: %v", err)
		}
		p := put{at: time.Now()}
		p.enabled, _ = body["ProtectionEnabled"].(bool)
		if m, ok := body["ExpiresInMinutes"].(float64); ok {
			p.minutes = int(m)
		}
		a.mu.Lock()
		fail := a.fail
		if !fail {
			a.puts = append(a.puts, p)
		}
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":{"Arn":"arn:aws:ecs:eu-west-1:1:task/c/1","Code":"ServerException","Message":"agent trouble"}}`))
			return
		}
		_, _ = w.Write([]byte(`{"protection":{"ExpirationDate":"2026-01-01T00:00:00Z","ProtectionEnabled":` + jsonBool(p.enabled) + `,"TaskArn":"arn:aws:ecs:eu-west-1:1:task/c/1"}}`))
		a.seen <- p
	}))
	t.Cleanup(srv.Close)
	return a, srv.URL + "/api/task-1"
}

func jsonBool(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func (a *agent) setFailing(f bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fail = f
}

func (a *agent) next(t *testing.T) put {
	t.Helper()
	select {
	case p := <-a.seen:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no PUT within 10s")
		return put{}
	}
}

func (a *agent) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case p := <-a.seen:
		t.Fatalf("unexpected PUT %+v", p)
	case <-time.After(d):
	}
}

func start(t *testing.T, opts Options) *Protector {
	t.Helper()
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

var assoc = &dicomnet.AssociationInfo{ID: "a1"}

func TestProtectedWhileBusyReleasedWhenIdle(t *testing.T) {
	a, uri := newAgent(t)
	const releaseAfter = 300 * time.Millisecond
	p := start(t, Options{AgentURI: uri, Expires: 5 * time.Minute, Renew: 100 * time.Millisecond, ReleaseAfter: releaseAfter})
	a.none(t, 50*time.Millisecond) // idle from the start: nothing to do

	p.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAccepted, Association: assoc})
	if got := a.next(t); !got.enabled || got.minutes != 5 {
		t.Fatalf("first PUT %+v, want protection for 5 minutes", got)
	}
	for range 2 { // renewed while busy
		if got := a.next(t); !got.enabled || got.minutes != 5 {
			t.Fatalf("renewal %+v", got)
		}
	}
	testenv.Eventually(t, "dicom_ingest_task_protected is 1 while busy", func() bool { return testutil.ToFloat64(p.protected) == 1 })
	idle := time.Now()
	p.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventReleased, Association: assoc})
	var got put
	for got = a.next(t); got.enabled; got = a.next(t) {
		// a renewal may race with the release event
	}
	if got.minutes != 0 {
		t.Errorf("release carries ExpiresInMinutes %d", got.minutes)
	}
	if waited := got.at.Sub(idle); waited < releaseAfter {
		t.Errorf("released %v after the last association ended, before the %v hysteresis", waited, releaseAfter)
	}
	testenv.Eventually(t, "the metrics show the release", func() bool {
		return testutil.ToFloat64(p.protected) == 0 && testutil.ToFloat64(p.updates.WithLabelValues("disabled")) == 1
	})
	a.none(t, 3*releaseAfter) // idle and released: quiet
}

// TestStudyAfterStudyDoesNotFlap: associations that follow each other with
// pauses shorter than the hysteresis keep the task protected without a
// release in between.
func TestStudyAfterStudyDoesNotFlap(t *testing.T) {
	a, uri := newAgent(t)
	p := start(t, Options{AgentURI: uri, Expires: time.Hour, ReleaseAfter: time.Second})
	for i := range 5 {
		p.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAccepted, Association: assoc})
		if i == 0 {
			if got := a.next(t); !got.enabled {
				t.Fatalf("first PUT %+v", got)
			}
		}
		time.Sleep(20 * time.Millisecond)
		p.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAborted, Association: assoc})
		time.Sleep(100 * time.Millisecond)
	}
	a.none(t, 500*time.Millisecond)
	if got := a.next(t); got.enabled {
		t.Fatalf("after the last study: %+v, want the release", got)
	}
	if n := testutil.ToFloat64(p.updates.WithLabelValues("enabled")); n != 1 {
		t.Errorf("protection set %v times for five back-to-back studies", n)
	}
}

// TestEndpointFailing: a failing endpoint is retried and counted, and the
// observer never waits for it.
func TestEndpointFailing(t *testing.T) {
	a, uri := newAgent(t)
	a.setFailing(true)
	reg := prometheus.NewRegistry()
	p := start(t, Options{AgentURI: uri, ReleaseAfter: time.Hour, Metrics: reg})
	begin := time.Now()
	for range 1000 {
		p.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAccepted, Association: assoc})
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("observing took %v", d)
	}
	testenv.Eventually(t, "failures counted and retried", func() bool { return testutil.ToFloat64(p.failures) >= 2 })
	// The stack publishes and alarms on the failures by this name.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if err := metricnames.CheckRegistered(mfs, metricnames.TaskProtectionFailures, metricnames.TaskProtected); err != nil {
		t.Error(err)
	}
	if testutil.ToFloat64(p.protected) != 0 {
		t.Error("protected although every call failed")
	}
	a.setFailing(false)
	if got := a.next(t); !got.enabled {
		t.Fatalf("after recovery: %+v", got)
	}
	testenv.Eventually(t, "protected after the endpoint recovered", func() bool { return testutil.ToFloat64(p.protected) == 1 })
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{"defaults", Options{AgentURI: "http://169.254.170.2/api/x"}, true},
		{"no agent", Options{}, false},
		{"seconds", Options{AgentURI: "http://a", Expires: 90 * time.Second}, false},
		{"beyond 48h", Options{AgentURI: "http://a", Expires: 2881 * time.Minute}, false},
		{"renew after expiry", Options{AgentURI: "http://a", Expires: time.Minute, Renew: time.Minute}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.opts); (err == nil) != tc.ok {
				t.Errorf("New = %v", err)
			}
		})
	}
}
