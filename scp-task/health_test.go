package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/auditwriter"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/descriptors"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestHealthServerFreesItsConnections: the health port holds few
// connections, and clients that do not take part must not keep them: as
// many as it holds declare a body they never send, or ask for a large
// answer (a scrape) they never read. Each held its connection for ever
// (net/http reads a declared body after answering, and nothing bounded a
// write), so that many locked /healthz and /readyz out, and the load
// balancer took the task for dead. The check that comes next is answered
// once the server's timeouts free them.
func TestHealthServerFreesItsConnections(t *testing.T) {
	for _, tc := range []struct{ name, request string }{
		{"declared body never sent", "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"},
		{"answer never read", "GET /large HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
			chunk := make([]byte, 1<<20)
			mux.HandleFunc("GET /large", func(w http.ResponseWriter, _ *http.Request) {
				for range 256 { // more than the sockets' buffers hold
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
			})
			srv := healthServer(mux, slog.New(slog.DiscardHandler))
			go srv.Serve(netutil.LimitListener(inner, descriptors.HealthConnections)) //nolint:errcheck // ends with Close
			t.Cleanup(func() { srv.Close() })

			addr := inner.Addr().String()
			for range descriptors.HealthConnections {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				if _, err := io.WriteString(c, tc.request); err != nil {
					t.Fatal(err)
				}
			}
			began := time.Now()
			client := http.Client{Timeout: 3 * (healthReadTimeout + healthWriteTimeout)}
			resp, err := client.Get("http://" + addr + "/healthz")
			if err != nil {
				t.Fatalf("/healthz while %d clients that do not take part hold the port: %v", descriptors.HealthConnections, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
				t.Errorf("/healthz: %s %q", resp.Status, body)
			}
			t.Logf("answered after %v", time.Since(began).Round(time.Millisecond))
		})
	}
}

// readyFunc is a readiness check for healthMux's tests.
type readyFunc func(context.Context) error

func (f readyFunc) Ready(ctx context.Context) error { return f(ctx) }

// TestUnreadyHealthCheckLogged: a failing /readyz says why in the log, once
// when it starts failing (or its reason changes) and once when it passes
// again. The load balancer sends an unready task no association, so no
// "not ready, association refused" line said why, and a store slower to
// answer than the check's 3 s (S3 throttled or slow) logged nothing at all:
// every task went unhealthy with not a line (found by the operator drill).
func TestUnreadyHealthCheckLogged(t *testing.T) {
	slow := readyFunc(func(ctx context.Context) error {
		<-ctx.Done()
		return fmt.Errorf("s3store: ready: %w", ctx.Err())
	})
	storeDown := readyFunc(func(context.Context) error {
		return fmt.Errorf("s3store: ready: head bucket b: %w", objectstore.ErrUnavailable)
	})
	auditDown := readyFunc(func(context.Context) error {
		return fmt.Errorf("%w: put audit/x: store unavailable", auditwriter.ErrUnavailable)
	})
	for _, tc := range []struct {
		name   string
		checks []readyFunc // in turn, then ready
		want   []string    // the reasons logged, in order
	}{
		{"store slower than the check", []readyFunc{slow, slow}, []string{"store not ready"}},
		{"store unreachable", []readyFunc{storeDown, storeDown, storeDown}, []string{"store not ready"}},
		{"audit, then the store", []readyFunc{auditDown, storeDown, storeDown}, []string{"audit records cannot be written", "store not ready"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs testenv.LogBuffer
			var current atomic.Value
			mux := healthMux(prometheus.NewRegistry(), readyFunc(func(ctx context.Context) error { return current.Load().(readyFunc)(ctx) }),
				new(atomic.Bool), jsonlog.New(&logs, slog.LevelInfo))
			srv := httptest.NewServer(mux)
			t.Cleanup(srv.Close)
			get := func() (int, string) {
				resp, err := http.Get(srv.URL + "/readyz")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				return resp.StatusCode, strings.TrimSpace(string(body))
			}
			current.Store(readyFunc(func(context.Context) error { return nil }))
			if code, _ := get(); code != http.StatusOK {
				t.Fatalf("/readyz %d while ready", code)
			}
			for _, c := range tc.checks {
				current.Store(c)
				if code, body := get(); code != http.StatusServiceUnavailable {
					t.Fatalf("/readyz %d %q while not ready", code, body)
				}
			}
			current.Store(readyFunc(func(context.Context) error { return nil }))
			if code, _ := get(); code != http.StatusOK {
				t.Fatalf("/readyz %d once ready again", code)
			}
			var got []string
			again := 0
			for l := range strings.Lines(logs.String()) {
				var line struct{ Msg, Reason, Err string }
				if err := json.Unmarshal([]byte(l), &line); err != nil {
					t.Fatalf("%v: %s", err, l)
				}
				switch line.Msg {
				case "health check failed: not ready, the load balancer sends this task no new association":
					if line.Err == "" {
						t.Errorf("no err on %s", l)
					}
					got = append(got, line.Reason)
				case "health check passes again: ready":
					again++
				default:
					t.Errorf("unexpected line %s", l)
				}
			}
			if !slices.Equal(got, tc.want) || again != 1 {
				t.Errorf("logged failures %q and %d recoveries, want %q and 1:\n%s", got, again, tc.want, logs.String())
			}
		})
	}
}

// TestHealthServerPanicValue: net/http recovers a handler's panic and logs
// it in the server's ErrorLog; the value is told by panicvalue's rule
// (its type), not as the handler passed it (it may name a UID).
func TestHealthServerPanicValue(t *testing.T) {
	got := testenv.PanicServed(t, func(h http.Handler, ln net.Listener) (*http.Server, net.Listener) {
		return healthServer(h, slog.New(slog.DiscardHandler)), ln
	})
	if strings.Contains(got, testenv.PanicUID) || !strings.Contains(got, "panic serving") || !strings.Contains(got, "a value of type string") {
		t.Errorf("the server's error log: %q; want the panic, its value told by its type alone", got)
	}
}
