//go:build linux

package auditfeed

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestConfirmClosed drives confirmClosed on plain TCP in the states Send
// leaves a connection in once its end-of-stream read has succeeded. The
// reset after a FIN is the case it is for, and one Send's own loopback
// tests cannot reach: there the collector's reset comes within our write,
// so the next write or the shutdown fails first. Here our bytes and our
// FIN leave in one segment (TCP_CORK) after the collector closed, so the
// shutdown and the read succeed and only SO_ERROR tells the reset.
func TestConfirmClosed(t *testing.T) {
	tests := []struct {
		name string
		// collector runs on the accepted connection, which is then closed.
		collector func(c *net.TCPConn)
		// cancel cancels the context before confirmClosed is called.
		cancel bool
		want   error // nil, or what the error wraps
	}{
		{"reads to our FIN, then closes", func(c *net.TCPConn) { _, _ = io.Copy(io.Discard, c) }, false, nil},
		{"closes before our bytes arrive", func(*net.TCPConn) {}, false, syscall.ECONNRESET},
		{"never closes, the context ends", func(c *net.TCPConn) { time.Sleep(2 * time.Second) }, true, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				tt.collector(c.(*net.TCPConn))
				_ = c.Close()
			}()
			nc, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			c := nc.(*net.TCPConn)
			if tt.want == syscall.ECONNRESET {
				// The collector's FIN has come: our read ends cleanly.
				if _, err := c.Read(make([]byte, 1)); err != io.EOF {
					t.Fatalf("read before the batch: %v, want EOF", err)
				}
			}
			rc, err := c.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var cork error
			if err := rc.Control(func(fd uintptr) { cork = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_CORK, 1) }); err != nil || cork != nil {
				t.Fatal(err, cork)
			}
			if _, err := c.Write([]byte("<110>1 batch")); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			if tt.want == nil || tt.want == syscall.ECONNRESET {
				if _, err := io.Copy(io.Discard, c); err != nil {
					t.Fatalf("end-of-stream read: %v (the case this is about has it succeed)", err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancel {
				cancel()
			}
			start := time.Now()
			err = confirmClosed(ctx, c, time.Now().Add(5*time.Second))
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("confirmClosed = %v, want nil", err)
			case tt.want != nil && !errors.Is(err, tt.want) && !(tt.want == syscall.ECONNRESET && errors.Is(err, syscall.EPIPE)):
				t.Fatalf("confirmClosed = %v, want %v", err, tt.want)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("confirmClosed took %v", d)
			}
		})
	}
}
