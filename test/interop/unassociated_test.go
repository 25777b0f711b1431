package interop

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestIdleConnectionsDoNotLockOutASite holds thousands of idle TCP connections
// from another loopback address against an SCP limited to 1,024 file
// descriptors, more than it can hold, and has a site's echoscu associate from
// 127.0.0.1 meanwhile. The SCP raises its soft limit to the hard one, derives
// its bounds on connections without an association from it, and refuses the
// flood's connections past the per-address bound: the site gets in within
// echoscu's own timeouts and the process never runs out of descriptors.
func TestIdleConnectionsDoNotLockOutASite(t *testing.T) {
	testenv.RequireTools(t, "echoscu", "prlimit")
	scp := scptest.Start(t, scptest.Options{
		Prefix: []string{"prlimit", "--nofile=1024:1024", "--"},
		Args:   []string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE", "--max-associations", "4"},
	})

	const idle = 3000
	opened, _ := idleFlood(t, idle, "", scp.DICOMAddr)
	t.Logf("%d of %d idle connections opened", opened, idle)

	r := dcmtk.Run(t, 60*time.Second, "echoscu", "-to", "20", "-ta", "20", "-td", "20",
		"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port())
	if r.Err != nil {
		t.Fatalf("echoscu from 127.0.0.1 during the flood: %v\n%s\n%s", r.Err, r.Output, tail(scp.Logs(), 20))
	}
	if n := scp.Metric(t, `dicom_ingest_connections_shed_total{reason="per_address"}`); n == 0 {
		t.Error("no connection refused over the per-address bound")
	}
	if n := scp.Metric(t, "dicom_ingest_unassociated_connections"); n > 648 {
		t.Errorf("%v connections without an association, more than the bound derived from 1,024 descriptors", n)
	}
	scp.WaitLog(t, 10*time.Second, "the shed connections", func(e map[string]any) bool {
		return e["msg"] == "dicomnet: connections without an association closed to keep headroom"
	})
	if strings.Contains(scp.Logs(), "too many open files") {
		t.Error("the SCP ran out of file descriptors")
	}
}

// idleFlood opens n connections to each of addrs from 127.0.0.2, 64 at a time, writes first on each and holds
// those that opened until closeAll is called or the test ends. A connection refused or timed out under the flood
// holds nothing, and is not counted.
func idleFlood(t *testing.T, n int, first string, addrs ...string) (opened int, closeAll func()) {
	var mu sync.Mutex
	var conns []net.Conn
	closeAll = func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
		conns = nil
	}
	t.Cleanup(closeAll)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, addr := range addrs {
		for range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
				c, err := d.Dial("tcp", addr)
				if err != nil {
					return
				}
				if _, err := io.WriteString(c, first); err != nil {
					c.Close()
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return len(conns), closeAll
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestHTTPConnectionsDoNotLockOutASite holds idle keep-alive connections to
// the portal and the health port of a --local SCP limited to 1,024 file
// descriptors, more than it can hold, and has a site echo and store
// meanwhile. The HTTP servers share the process's descriptors with the SCP,
// its store and its database: unbounded, their connections took them all
// (the health port, on every interface by default, kept an idle one for
// ever), and the SCP could neither accept an association nor open a file.
// Bounded, connections past their share wait in the kernel's backlog, and
// the portal answers again once the flood goes.
func TestHTTPConnectionsDoNotLockOutASite(t *testing.T) {
	testenv.RequireTools(t, "echoscu", "storescu", "prlimit")
	scp := scptest.Start(t, scptest.Options{
		Prefix:  []string{"prlimit", "--nofile=1024:1024", "--"},
		NoStore: true,
		Args: []string{"--local", "--data-dir", t.TempDir(), "--portal-listen", "127.0.0.1:0",
			"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE", "--max-associations", "4"},
	})
	const idle = 1200 // to each port
	// One request on each, its answer never read: the connection stays open, idle between requests.
	opened, closeAll := idleFlood(t, idle, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", scp.PortalAddr, scp.HealthAddr)
	t.Logf("%d of %d idle HTTP connections opened", opened, 2*idle)

	r := dcmtk.Run(t, 60*time.Second, "echoscu", "-to", "10", "-ta", "10", "-td", "10",
		"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port())
	if r.Err != nil {
		t.Fatalf("echoscu during the flood: %v\n%s\n%s", r.Err, r.Output, tail(scp.Logs(), 20))
	}
	obj := filepath.Join(t.TempDir(), "sc.dcm")
	if err := (synth.Object{StudyUID: "1.2.826.0.1.3680043.10.7702.1", SeriesUID: "1.2.826.0.1.3680043.10.7702.2",
		SOPInstanceUID: "1.2.826.0.1.3680043.10.7702.3", PatientID: "FLOOD", PixelBytes: 4096}).WriteFile(obj); err != nil {
		t.Fatal(err)
	}
	r = dcmtk.Run(t, 60*time.Second, "storescu", "-to", "10", "-ta", "10", "-td", "10",
		"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port(), obj)
	if r.Err != nil {
		t.Fatalf("storescu during the flood: %v\n%s\n%s", r.Err, r.Output, tail(scp.Logs(), 20))
	}
	closeAll()
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + scp.PortalAddr + "/healthz")
	if err != nil {
		t.Fatalf("portal once the flood is gone: %v", err)
	}
	resp.Body.Close()
	if strings.Contains(scp.Logs(), "too many open files") {
		t.Errorf("the process ran out of file descriptors:\n%s", tail(scp.Logs(), 20))
	}
}
