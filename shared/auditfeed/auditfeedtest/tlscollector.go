package auditfeedtest

import (
	"crypto/tls"
	"net"
	"testing"
)

// ServeTLS is a collector of the test's own on a loopback port, of TLS configuration cfg (its certificate, the
// client certificates it asks for, its versions), until the test ends: each connection's handshake is made, and
// handle is given the connection and the handshake's failure, then the connection is closed. It returns the
// collector's host:port.
func ServeTLS(t testing.TB, cfg *tls.Config, handle func(c *tls.Conn, handshake error)) string {
	t.Helper()
	return ServeTCP(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		handle(tc, tc.Handshake())
	})
}

// ServeTCP is a collector of the test's own on a loopback port that speaks no TLS of itself, until the test ends:
// handle is given each connection (one that never answers the handshake, one that resets it), then the connection
// is closed. It returns the collector's host:port.
func ServeTCP(t testing.TB, handle func(c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l.Addr().String()
}
