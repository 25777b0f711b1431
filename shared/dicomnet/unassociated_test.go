package dicomnet_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"syscall"
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
		// Connections are counted in the accept loop, in the order they were accepted: the first is the
		// oldest in the server's list.
		oldest := dialFrom(t, "127.0.0.2", srv.Addr, nil)
		for range 2 {
			dialFrom(t, "127.0.0.2", srv.Addr, nil)
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

// descriptorListener hands out n connections from one address, each holding one of limit descriptors until it is
// closed, and fails Accept with EMFILE while all of them are held, as the kernel does.
type descriptorListener struct {
	mu           sync.Mutex
	n, limit     int
	held, failed int
	peers        []net.Conn
	handedOut    chan struct{} // closed once all n have been accepted and Accept is called again
	closed       chan struct{}
}

func newDescriptorListener(n, limit int) *descriptorListener {
	return &descriptorListener{n: n, limit: limit, handedOut: make(chan struct{}), closed: make(chan struct{})}
}

func (l *descriptorListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.n == 0 {
		l.mu.Unlock()
		select {
		case <-l.handedOut:
		default:
			close(l.handedOut)
		}
		<-l.closed
		return nil, net.ErrClosed
	}
	defer l.mu.Unlock()
	if l.held >= l.limit {
		l.failed++
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	l.held++
	l.n--
	server, client := net.Pipe()
	l.peers = append(l.peers, client)
	return &descriptorConn{Conn: server, l: l, remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 40000 + l.n}}, nil
}

func (l *descriptorListener) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

func (l *descriptorListener) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 11112}
}

// counts returns the descriptors held and the accepts failed.
func (l *descriptorListener) counts() (held, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held, l.failed
}

type descriptorConn struct {
	net.Conn
	l      *descriptorListener
	remote net.Addr
	once   sync.Once
}

func (c *descriptorConn) RemoteAddr() net.Addr { return c.remote }

func (c *descriptorConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.held--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// TestRefusedBeforeTheNextAccept: a connection over the per-address bound is closed before the next one is
// accepted, so connections accepted faster than their goroutines run hold no descriptors past the bounds. One P
// is a busy machine on which the accept loop, never waiting while connections are queued, runs before the
// connections' goroutines: the bound was applied on each connection's goroutine, so the loop accepted until the
// process had no descriptor left (EMFILE), with none of them on the list shedForDescriptors sheds from, and
// logged 'accept failed; retrying' with 'too many open files' (test/interop's TestIdleConnectionsDoNotLockOutASite
// failed so under load).
func TestRefusedBeforeTheNextAccept(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const perAddr = 2
	// The descriptors: those the address may hold, and one for the connection being accepted.
	l := newDescriptorListener(50, perAddr+1)
	rec := newRecorder()
	s := &dicomnet.Server{MaxUnassociatedPerAddr: perAddr, Observer: rec}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	<-l.handedOut
	held, failed := l.counts()
	if failed != 0 {
		t.Errorf("accept failed %d times for want of descriptors", failed)
	}
	if held != perAddr {
		t.Errorf("%d connections held once all were accepted, want the %d the address may hold", held, perAddr)
	}
	if n := s.UnassociatedConnections(); n != perAddr {
		t.Errorf("%d unassociated connections, want %d", n, perAddr)
	}
	s.Close()
	if err := <-served; !errors.Is(err, dicomnet.ErrServerClosed) {
		t.Errorf("Serve = %v", err)
	}
	for _, c := range l.peers {
		c.Close()
	}
}
