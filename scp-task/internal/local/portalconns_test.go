package local

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/descriptors"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestPortalServesDuringASlowHeaderFlood: as many connections as the
// portal holds, each sending part of its header and no more, from this
// machine, do not keep a request from being served while they hold. They
// did: it waited in the backlog until the header timeout closed them
// (10 s), all of them at once.
func TestPortalServesDuringASlowHeaderFlood(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, ln := portalServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok") //nolint:errcheck // the client's read says
	}), inner)
	var accepted atomic.Int64
	state := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		state(c, s)
		if s == http.StateNew {
			accepted.Add(1)
		}
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })

	flood := make([]net.Conn, descriptors.PortalConnections)
	for i := range flood {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"); err != nil {
			t.Fatal(err)
		}
		flood[i] = c
	}
	testenv.EventuallyWithin(t, time.Minute, "every connection of the flood accepted", func() bool { return accepted.Load() >= int64(len(flood)) })

	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + inner.Addr().String() + "/")
	if err != nil {
		t.Fatalf("a request during the flood: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("a request during the flood: %s %q %v", resp.Status, body, err)
	}
	// Served while the flood held: the oldest connection gave its place,
	// the others are still open, not ended by the header timeout.
	ended, wait := 0, time.Now().Add(50*time.Millisecond)
	for _, c := range flood {
		if err := c.SetReadDeadline(wait); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			ended++
		}
	}
	if ended > 1 {
		t.Errorf("%d of the flood's %d connections ended before the request was served, want 1: it waited for the header timeout", ended, len(flood))
	}
}

// TestPortalConnectionsBounded: connections whose requests are being
// served keep their places; one more waits for a place, so the portal
// never holds more than descriptors.PortalConnections and the one being
// admitted.
func TestPortalConnectionsBounded(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var serving atomic.Int64
	srv, ln := portalServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		serving.Add(1)
		<-release
		io.WriteString(w, "ok") //nolint:errcheck // the client's read says
	}), inner)
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	get := func(done chan<- error) {
		resp, err := (&http.Client{Timeout: time.Minute, Transport: &http.Transport{DisableKeepAlives: true}}).Get("http://" + inner.Addr().String() + "/")
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}
	done := make(chan error, descriptors.PortalConnections+1)
	for range descriptors.PortalConnections {
		go get(done)
	}
	testenv.EventuallyWithin(t, time.Minute, fmt.Sprintf("%d requests served at once", descriptors.PortalConnections), func() bool { return serving.Load() >= descriptors.PortalConnections })
	go get(done)
	time.Sleep(200 * time.Millisecond) // what would let it in, would have
	if n := serving.Load(); n != descriptors.PortalConnections {
		t.Errorf("%d requests served at once, want at most %d", n, descriptors.PortalConnections)
	}
	close(release)
	for range descriptors.PortalConnections + 1 {
		if err := <-done; err != nil {
			t.Errorf("a request: %v", err)
		}
	}
}

// TestPortalServerPanicValue: net/http recovers a handler's panic and logs
// it in the server's ErrorLog; the value is told by panicvalue's rule
// (its type), not as the handler passed it (it may name a UID).
func TestPortalServerPanicValue(t *testing.T) {
	got := testenv.PanicServed(t, portalServer)
	if strings.Contains(got, testenv.PanicUID) || !strings.Contains(got, "panic serving") || !strings.Contains(got, "a value of type string") {
		t.Errorf("the server's error log: %q; want the panic, its value told by its type alone", got)
	}
}
