package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/netutil"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/descriptors"
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
