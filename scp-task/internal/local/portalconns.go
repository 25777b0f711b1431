package local

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/descriptors"
	"github.com/dicom-ingest/dicom-ingest/shared/panicvalue"
)

// The portal's connections: at most descriptors.PortalConnections are
// held, so the portal can never take the descriptors the SCP needs. Only
// a connection whose request is being served keeps its place; one that
// has not sent its request yet (its header still coming, or never) and a
// kept-alive one between requests give theirs up, the oldest first, to a
// connection that arrives when all places are taken. With a plain cap
// (netutil.LimitListener), as many clients sending their headers slowly
// as there are places, from this very machine, made every other request
// wait in the kernel's backlog until the header timeout closed one: the
// portal unusable for 10 s at a time, for as long as the flood went on.
const (
	portalReadHeaderTimeout = 10 * time.Second
	portalIdleTimeout       = time.Minute
)

// portalServer is the portal's HTTP server for handler h, and the
// listener it is to serve ln through.
func portalServer(h http.Handler, ln net.Listener) (*http.Server, net.Listener) {
	cl := &connLimit{Listener: ln, max: descriptors.PortalConnections}
	cl.freed = sync.NewCond(&cl.mu)
	return &http.Server{
		Handler: panicvalue.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c, ok := r.Context().Value(connKey{}).(*limitedConn); ok {
				cl.serving(c, true)
			}
			h.ServeHTTP(w, r)
		})),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		// A request is served until its answer is written: the handler's
		// return leaves the answer to flush.
		ConnState: func(c net.Conn, s http.ConnState) {
			if lc, ok := c.(*limitedConn); ok && s == http.StateIdle {
				cl.serving(lc, false)
			}
		},
		ReadHeaderTimeout: portalReadHeaderTimeout,
		IdleTimeout:       portalIdleTimeout,
	}, cl
}

type connKey struct{}

// connLimit holds at most max connections, and one more accepted that
// waits for a place: the oldest one not serving a request gives its place
// up (it is closed); when every place serves a request, the one accepted
// waits for one to end.
type connLimit struct {
	net.Listener
	max    int
	mu     sync.Mutex
	freed  *sync.Cond
	conns  []*limitedConn // oldest first
	closed bool
}

type limitedConn struct {
	net.Conn
	l       *connLimit
	busy    bool
	once    sync.Once
	closeEr error
}

func (l *connLimit) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	for len(l.conns) >= l.max && !l.closed {
		if evict := l.oldestIdle(); evict != nil {
			l.mu.Unlock()
			// Its Close takes it off l.conns; the server's read of it
			// ends, and with it the connection.
			_ = evict.Close() // its error is nobody's to report
			l.mu.Lock()
			continue
		}
		l.freed.Wait()
	}
	if l.closed {
		l.mu.Unlock()
		return nil, errors.Join(net.ErrClosed, c.Close())
	}
	lc := &limitedConn{Conn: c, l: l}
	l.conns = append(l.conns, lc)
	l.mu.Unlock()
	return lc, nil
}

// Close closes the listener and ends an Accept waiting for a place.
func (l *connLimit) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.freed.Broadcast()
	return err
}

// oldestIdle is the oldest connection not serving a request, nil if none.
// l.mu is held.
func (l *connLimit) oldestIdle() *limitedConn {
	for _, c := range l.conns {
		if !c.busy {
			return c
		}
	}
	return nil
}

func (l *connLimit) serving(c *limitedConn, busy bool) {
	l.mu.Lock()
	c.busy = busy
	l.mu.Unlock()
	if !busy {
		l.freed.Broadcast()
	}
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.closeEr = c.Conn.Close()
		l := c.l
		l.mu.Lock()
		for i, o := range l.conns {
			if o == c {
				l.conns = append(l.conns[:i], l.conns[i+1:]...)
				break
			}
		}
		l.mu.Unlock()
		l.freed.Broadcast()
	})
	return c.closeEr
}
