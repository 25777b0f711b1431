//go:build linux

package auditfeed_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed/auditfeedtest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestCollectorHostile: a collector that accepts and never reads (its TCP window full), closes at once, or resets
// the connection in the middle of a frame fails the batch (to be sent again: Feeder's backoff) within the
// Collector's Timeout, whatever it does next, and leaves no goroutine of Send behind.
func TestCollectorHostile(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	const timeout = 500 * time.Millisecond
	tests := []struct {
		name string
		// collector runs on the accepted socket, once the handshake is done (handshake false: before any).
		collector func(tc *tls.Conn, raw *net.TCPConn)
		handshake bool
		says      string
	}{
		{"accepts and never reads, its window full", func(_ *tls.Conn, raw *net.TCPConn) {
			time.Sleep(3 * timeout)
		}, true, "i/o timeout"},
		{"accepts and never answers the handshake", func(_ *tls.Conn, raw *net.TCPConn) {
			time.Sleep(3 * timeout)
		}, false, "connect to"},
		{"closes at once", func(*tls.Conn, *net.TCPConn) {}, false, "connect to"},
		{"resets in the middle of a frame", func(tc *tls.Conn, raw *net.TCPConn) {
			if _, err := io.ReadFull(tc, make([]byte, 100)); err != nil {
				t.Errorf("the collector's read: %v", err)
			}
			if err := raw.SetLinger(0); err != nil { // close with a reset
				t.Errorf("SO_LINGER: %v", err)
			}
		}, true, "auditfeed: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			served := make(chan struct{})
			go func() {
				defer close(served)
				c, err := l.Accept()
				if err != nil {
					return
				}
				raw := c.(*net.TCPConn)
				defer raw.Close()
				if err := raw.SetReadBuffer(4 << 10); err != nil {
					t.Errorf("SO_RCVBUF: %v", err)
				}
				var tc *tls.Conn
				if tt.handshake {
					tc = tls.Server(raw, serverTLS(t, pki))
					if err := tc.Handshake(); err != nil {
						t.Errorf("handshake: %v", err)
						return
					}
				}
				tt.collector(tc, raw)
			}()
			c := collector(t, pki, l.Addr().String(), false)
			c.Timeout = timeout
			var batch [][]byte
			for i := range 400 { // about 100 KB: past what a window of 4 KB and our send buffer hold
				batch = append(batch, message(t, i))
			}
			start := time.Now()
			err = c.Send(context.Background(), batch)
			if took := time.Since(start); took > 2*timeout+time.Second {
				t.Errorf("Send returned after %v, past its timeouts of %v (connect, then the exchange)", took, timeout)
			}
			if err == nil || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("Send = %v, want a failure saying %q", err, tt.says)
			}
			<-served
			testenv.NoGoroutines(t, 5*time.Second, "auditfeed.(*Collector)")
		})
	}
}
