//go:build linux

package auditfeed_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed/auditfeedtest"
)

// recordReads hands a server's tls.Conn one byte a read, so that it takes
// from the socket only the records it parses, as GnuTLS (rsyslog's) does.
// Go's TLS reads ahead whatever has arrived, and a collector that read our
// bytes before it closed is one no TCP state tells from one that kept them
// (see Collector.Send).
type recordReads struct{ net.Conn }

func (c recordReads) Read(b []byte) (int, error) { return c.Conn.Read(b[:min(len(b), 1)]) }

// queued waits until bytes wait unread in the socket's receive queue.
func queued(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Microsecond) {
		var n int
		var ioErr error
		if err := rc.Control(func(fd uintptr) { n, ioErr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
			return err
		}
		if ioErr != nil {
			return ioErr
		}
		if n > 0 {
			return nil
		}
	}
	return errors.New("the batch never arrived")
}

// serverTLS is a test collector's TLS configuration, with the PKI's server
// certificate.
func serverTLS(t *testing.T, pki *auditfeedtest.PKI) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(pki.ServerCert, pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// TestCollectorCloseConfirms: a TLS 1.3 collector that completes the
// handshake (ours is then done first: the client's Finished needs no
// answer) and closes its socket without a close_notify and without reading
// our whole stream has not taken the batch, whichever way its close meets
// our bytes: Linux resets the connection and Send fails. One that reads to
// our end and closes has taken it. On loopback the reset lands in our own
// write or half-close, so these cases fail Send before confirmClosed;
// TestConfirmClosed puts the reset after a clean end of stream, the case
// confirmClosed's SO_ERROR check is for.
func TestCollectorCloseConfirms(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	cfg := serverTLS(t, pki)
	cfg.MinVersion = tls.VersionTLS13
	const runs = 50
	tests := []struct {
		name string
		// collector runs after the handshake; the socket is then closed.
		collector func(tc *tls.Conn, raw *net.TCPConn) error
		ok        bool
	}{
		// The batch comes after the close (reset on arrival) or just
		// before it (unread at the close), as timing has it.
		{"closes at once, before the batch arrives", func(*tls.Conn, *net.TCPConn) error { return nil }, false},
		{"closes with the batch arrived, unread", func(_ *tls.Conn, raw *net.TCPConn) error { return queued(raw) }, false},
		// The wire's order in the refusals that Send took for delivered:
		// the collector's FIN between our batch and our close_notify (or
		// after them), then its reset.
		{"reads the batch, closes before our close_notify is read", func(tc *tls.Conn, _ *net.TCPConn) error {
			_, err := tc.Read(make([]byte, 64<<10))
			return err
		}, false},
		{"reads to our close_notify, then closes", func(tc *tls.Conn, _ *net.TCPConn) error {
			_, err := io.Copy(io.Discard, tc)
			return err
		}, true},
		{"reads to our close_notify, answers with its own, then closes", func(tc *tls.Conn, _ *net.TCPConn) error {
			if _, err := io.Copy(io.Discard, tc); err != nil {
				return err
			}
			return tc.CloseWrite()
		}, true},
		{"reads to our FIN, then closes", func(tc *tls.Conn, raw *net.TCPConn) error {
			if _, err := io.Copy(io.Discard, tc); err != nil {
				return err
			}
			_, err := io.Copy(io.Discard, raw)
			return err
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			served := make(chan error, 1)
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					raw := c.(*net.TCPConn)
					tc := tls.Server(recordReads{raw}, cfg)
					err = tc.Handshake()
					if err == nil {
						err = tt.collector(tc, raw)
					}
					_ = raw.Close() // the socket: no close_notify
					served <- err
				}
			}()
			c := collector(t, pki, l.Addr().String(), false)
			wrong := 0
			for i := range runs {
				err := c.Send(context.Background(), [][]byte{message(t, i)})
				if serr := <-served; serr != nil {
					t.Fatalf("run %d: the collector: %v", i, serr)
				}
				if (err == nil) != tt.ok {
					wrong++
					if wrong == 1 {
						t.Logf("run %d: Send = %v", i, err)
					}
				}
			}
			if wrong > 0 {
				t.Errorf("Send's result wrong in %d of %d runs (want success %v)", wrong, runs, tt.ok)
			}
		})
	}
}

// TestCollectorStalledCloseFails: a collector that ends its TLS stream but
// never closes its socket has not confirmed the batch.
func TestCollectorStalledCloseFails(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	l, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS(t, pki))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	release := make(chan struct{})
	defer close(release)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		_, _ = io.Copy(io.Discard, tc)
		_ = tc.CloseWrite() // its close_notify, and nothing more
		<-release
	}()
	c := collector(t, pki, l.Addr().String(), false)
	c.Timeout = 300 * time.Millisecond
	err = c.Send(context.Background(), [][]byte{message(t, 1)})
	if err == nil {
		t.Fatal("a collector that never closed its socket confirmed the batch")
	}
	if want := "did not confirm the batch: its side still open (TCP FIN_WAIT2)"; !strings.Contains(err.Error(), want) {
		t.Errorf("Send = %v, want %q", err, want)
	}
}
