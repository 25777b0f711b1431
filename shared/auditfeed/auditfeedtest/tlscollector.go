package auditfeedtest

import (
	"crypto/tls"
	"testing"
)

// ServeTLS is a collector of the test's own on a loopback port, of TLS configuration cfg (its certificate, the
// client certificates it asks for, its versions), until the test ends: each connection's handshake is made, and
// handle is given the connection and the handshake's failure, then the connection is closed. It returns the
// collector's host:port.
func ServeTLS(t testing.TB, cfg *tls.Config, handle func(c *tls.Conn, handshake error)) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
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
				tc := c.(*tls.Conn)
				handle(tc, tc.Handshake())
			}()
		}
	}()
	return l.Addr().String()
}
