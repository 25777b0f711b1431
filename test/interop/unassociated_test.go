package interop

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
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
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for range idle {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}
			c, err := d.Dial("tcp", scp.DICOMAddr)
			if err != nil {
				return // refused or timed out under the flood: fine, it holds nothing
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.Logf("%d of %d idle connections opened", len(conns), idle)

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
	logs := scp.Logs()
	if strings.Contains(logs, "too many open files") {
		t.Error("the SCP ran out of file descriptors")
	}
	if !strings.Contains(logs, "connections without an association closed to keep headroom") {
		t.Error("no log line for the shed connections")
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
