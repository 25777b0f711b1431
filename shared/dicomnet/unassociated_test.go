package dicomnet_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/proxyproto"
)

// dialFrom opens a TCP connection from the loopback address src that sends nothing (or only header).
func dialFrom(t *testing.T, src, addr string, header []byte) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if header != nil {
		if _, err := c.Write(header); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// closedByServer reports whether the server closed c (EOF or reset) within wait.
func closedByServer(c net.Conn, wait time.Duration) bool {
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return true
	}
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func echoFrom(t *testing.T, src, addr string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	as, err := dicomnet.Dial(ctx, addr, dicomnet.ClientConfig{CallingAE: "SITE", CalledAE: "ANY",
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			return d.DialContext(ctx, network, addr)
		}})
	if err != nil {
		return err
	}
	if err := as.Echo(ctx); err != nil {
		return err
	}
	return as.Release(ctx)
}

// TestUnassociatedBounds: idle connections that never ask for an association are bounded per source address
// (new ones refused) and in total (the oldest shed), and a peer that asks at once still gets in.
func TestUnassociatedBounds(t *testing.T) {
	waitShed := func(t *testing.T, rec *recorder, want error) {
		t.Helper()
		ev := rec.waitFor(t, dicomnet.EventShed)
		if !errors.Is(ev.Err, want) {
			t.Errorf("shed event error %v, want %v", ev.Err, want)
		}
	}
	t.Run("per address", func(t *testing.T) {
		rec := newRecorder()
		srv := dicomnettest.NewServerT(t, &dicomnet.Server{MaxUnassociatedPerAddr: 3, Observer: rec})
		var idle []net.Conn
		for range 5 {
			idle = append(idle, dialFrom(t, "127.0.0.2", srv.Addr, nil))
		}
		waitShed(t, rec, dicomnet.ErrShedPerAddr)
		closed := 0
		for _, c := range idle {
			if closedByServer(c, 300*time.Millisecond) {
				closed++
			}
		}
		if closed != 2 {
			t.Errorf("%d of 5 idle connections closed, want the 2 over the bound", closed)
		}
		if err := echoFrom(t, "127.0.0.1", srv.Addr); err != nil {
			t.Errorf("echo from another address: %v", err)
		}
		if n := srv.UnassociatedConnections(); n != 3 {
			t.Errorf("%d unassociated connections, want 3", n)
		}
	})
	t.Run("total", func(t *testing.T) {
		rec := newRecorder()
		srv := dicomnettest.NewServerT(t, &dicomnet.Server{MaxUnassociated: 3, Observer: rec})
		// Each connection is counted on its own goroutine: wait for one before opening the next, so the
		// first is the oldest in the server's list too.
		waitCount := func(n int) {
			deadline := time.Now().Add(5 * time.Second)
			for srv.UnassociatedConnections() < n && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
		oldest := dialFrom(t, "127.0.0.2", srv.Addr, nil)
		waitCount(1)
		for n := range 2 {
			dialFrom(t, "127.0.0.2", srv.Addr, nil)
			waitCount(n + 2)
		}
		if err := echoFrom(t, "127.0.0.1", srv.Addr); err != nil {
			t.Fatalf("echo past the total bound: %v", err)
		}
		waitShed(t, rec, dicomnet.ErrShedTotal)
		if !closedByServer(oldest, 2*time.Second) {
			t.Error("the oldest idle connection was not shed")
		}
	})
	t.Run("PROXY source", func(t *testing.T) {
		rec := newRecorder()
		srv := dicomnettest.NewServerT(t, &dicomnet.Server{MaxUnassociatedPerAddr: 2, ProxyProtocol: true, Observer: rec})
		dst := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 104}
		from := func(ip net.IP) []byte { return proxyproto.Append(nil, &net.TCPAddr{IP: ip, Port: 40000}, dst) }
		a1 := dialFrom(t, "127.0.0.1", srv.Addr, from(net.IPv4(198, 51, 100, 7)))
		a2 := dialFrom(t, "127.0.0.1", srv.Addr, from(net.IPv4(198, 51, 100, 7)))
		a3 := dialFrom(t, "127.0.0.1", srv.Addr, from(net.IPv4(198, 51, 100, 7)))
		b1 := dialFrom(t, "127.0.0.1", srv.Addr, from(net.IPv4(198, 51, 100, 8)))
		waitShed(t, rec, dicomnet.ErrShedPerAddr)
		// Each connection's header is read on its own goroutine, so which of the three from one source
		// comes third is up to the scheduler: exactly one of them is refused, and the other source's is not.
		closed := 0
		for _, c := range []net.Conn{a1, a2, a3} {
			if closedByServer(c, 500*time.Millisecond) {
				closed++
			}
		}
		if closed != 1 {
			t.Errorf("%d of 3 connections from one PROXY source closed, want the 1 over the bound", closed)
		}
		if closedByServer(b1, 100*time.Millisecond) {
			t.Error("the connection from another PROXY source was closed")
		}
	})
}
