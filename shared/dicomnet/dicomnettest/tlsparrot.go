package dicomnettest

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

// ListenTLSParrot is a PACS that takes DICOM over TLS only, presenting cert and requiring a client certificate
// that chains to clientCAs (none when clientCAs is nil) (TLS 1.2 or later): it accepts one connection on 127.0.0.1 and hands its Parrot,
// handshake done, to the channel, or nil when the handshake failed. It listens until the test ends.
func ListenTLSParrot(tb testing.TB, cert tls.Certificate, clientCAs *x509.CertPool) (string, <-chan *Parrot) {
	tb.Helper()
	auth := tls.RequireAndVerifyClientCert
	if clientCAs == nil {
		auth = tls.NoClientCert
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert},
		ClientAuth: auth, ClientCAs: clientCAs, MinVersion: tls.VersionTLS12})
	if err != nil {
		tb.Fatalf("parrot: listen: %v", err)
	}
	tb.Cleanup(func() { l.Close() })
	ch := make(chan *Parrot, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			ch <- nil
			return
		}
		if err := c.(*tls.Conn).Handshake(); err != nil {
			c.Close()
			ch <- nil
			return
		}
		ch <- NewParrot(tb, c)
	}()
	return l.Addr().String(), ch
}
