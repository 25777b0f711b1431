package dicomnet_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/proxyproto"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

// tlsPeers is a server certificate and client certificates from one CA, and one from another CA.
type tlsPeers struct {
	ca, otherCA    *testpki.CA
	server, client *testpki.Cert
	stranger       *testpki.Cert
}

func newTLSPeers(t *testing.T) tlsPeers {
	ca, other := testpki.NewCA(t, "Test CA"), testpki.NewCA(t, "Other CA")
	return tlsPeers{
		ca: ca, otherCA: other,
		server:   ca.Server(t, testpki.Options{}),
		client:   ca.Client(t, testpki.Options{CommonName: "pacs.site-a.example"}),
		stranger: other.Client(t, testpki.Options{CommonName: "pacs.site-a.example"}),
	}
}

func (p tlsPeers) serverConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.server.TLS()}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: p.ca.Pool(), MinVersion: tls.VersionTLS12,
	}
}

func (p tlsPeers) clientConfig(cert *testpki.Cert) *tls.Config { return p.ca.ClientConfig(cert) }

// tlsDial dials addr, writes header (a PROXY v2 header, if any) in the clear and runs a TLS client over the rest.
func tlsDial(config *tls.Config, header []byte) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if len(header) > 0 {
			if _, err := c.Write(header); err != nil {
				c.Close()
				return nil, err
			}
		}
		tc := tls.Client(c, config)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		return tc, nil
	}
}

// tlsServer serves s on a plain and a TLS listener.
type tlsServer struct {
	plainAddr, tlsAddr string
}

func startTLSServer(t *testing.T, s *dicomnet.Server, config *tls.Config) tlsServer {
	t.Helper()
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Serve(pl) })
	wg.Go(func() { _ = s.ServeTLS(tl, config) })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		wg.Wait()
	})
	return tlsServer{plainAddr: pl.Addr().String(), tlsAddr: tl.Addr().String()}
}

// events collects the events of one type.
type events struct {
	typ dicomnet.EventType
	ch  chan dicomnet.Event
}

func newEvents(typ dicomnet.EventType) *events {
	return &events{typ: typ, ch: make(chan dicomnet.Event, 16)}
}

func (e *events) ObserveAssociation(ev dicomnet.Event) {
	if ev.Type == e.typ {
		e.ch <- ev
	}
}

func (e *events) next(t *testing.T) dicomnet.Event {
	t.Helper()
	select {
	case ev := <-e.ch:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatalf("no %v event", e.typ)
		return dicomnet.Event{}
	}
}

// dialSilent connects to addr and sends nothing; its reads give up after 5 s.
func dialSilent(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServeTLS: one server on a plain and a TLS listener; over TLS the association policy sees the verified
// client certificate, over the plain listener no TLS state at all.
func TestServeTLS(t *testing.T) {
	p := newTLSPeers(t)
	seen := make(chan dicomnet.AssociationInfo, 2)
	s := &dicomnet.Server{Accept: func(ctx context.Context, info *dicomnet.AssociationInfo) error {
		seen <- *info
		return nil
	}}
	srv := startTLSServer(t, s, p.serverConfig())
	for _, tc := range []struct {
		name string
		addr string
		dial func(ctx context.Context, network, addr string) (net.Conn, error)
	}{
		{"TLS", srv.tlsAddr, tlsDial(p.clientConfig(p.client), nil)},
		{"plain", srv.plainAddr, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := dicomnet.Dial(context.Background(), tc.addr, dicomnet.ClientConfig{CallingAE: "A", CalledAE: "B", Dial: tc.dial})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Echo(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := a.Release(context.Background()); err != nil {
				t.Fatal(err)
			}
			info := <-seen
			if tc.dial == nil {
				if info.TLS != nil {
					t.Errorf("plain association has TLS state %+v", info.TLS)
				}
				return
			}
			if info.TLS == nil || len(info.TLS.VerifiedChains) == 0 {
				t.Fatalf("TLS association without a verified chain: %+v", info.TLS)
			}
			if cn := info.TLS.VerifiedChains[0][0].Subject.CommonName; cn != "pacs.site-a.example" {
				t.Errorf("client certificate CN %q", cn)
			}
			if info.TLS.Version < tls.VersionTLS12 {
				t.Errorf("TLS version %x", info.TLS.Version)
			}
		})
	}
}

// TestServeTLSWithProxyProtocol: behind a load balancer the PROXY v2 header comes before the TLS handshake, in the
// clear; its source becomes the association's address and TLS runs over what follows.
func TestServeTLSWithProxyProtocol(t *testing.T) {
	p := newTLSPeers(t)
	src := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 40000}
	dst := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 2762}
	seen := make(chan dicomnet.AssociationInfo, 1)
	s := &dicomnet.Server{ProxyProtocol: true, ARTIMTimeout: time.Second, Accept: func(ctx context.Context, info *dicomnet.AssociationInfo) error {
		seen <- *info
		return nil
	}}
	srv := startTLSServer(t, s, p.serverConfig())
	a, err := dicomnet.Dial(context.Background(), srv.tlsAddr, dicomnet.ClientConfig{CallingAE: "A", CalledAE: "B",
		Dial: tlsDial(p.clientConfig(p.client), proxyproto.Append(nil, src, dst))})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Echo(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.Release(context.Background())
	info := <-seen
	if info.RemoteAddr.String() != "10.1.2.3:40000" || info.TLS == nil || len(info.TLS.PeerCertificates) != 1 {
		t.Errorf("remote %s, TLS %+v", info.RemoteAddr, info.TLS)
	}

	t.Run("TLS before the PROXY header", func(t *testing.T) {
		_, err := dicomnet.Dial(context.Background(), srv.tlsAddr, dicomnet.ClientConfig{CallingAE: "A", CalledAE: "B",
			Dial: tlsDial(p.clientConfig(p.client), nil)})
		if err == nil {
			t.Fatal("associated without a PROXY header")
		}
	})
}

// TestServeTLSRefusals: what fails the handshake never reaches the association policy; each failure is an
// EventHandshakeFailed with the reason.
func TestServeTLSRefusals(t *testing.T) {
	p := newTLSPeers(t)
	failed := newEvents(dicomnet.EventHandshakeFailed)
	logs := &testenv.LogBuffer{}
	s := &dicomnet.Server{ARTIMTimeout: 500 * time.Millisecond, Observer: failed, Logger: slog.New(slog.NewJSONHandler(logs, nil)), Accept: func(ctx context.Context, info *dicomnet.AssociationInfo) error {
		t.Errorf("association policy asked for a connection that should have failed its handshake")
		return dicomnet.RejectNoReason
	}}
	srv := startTLSServer(t, s, p.serverConfig())
	old := p.clientConfig(p.client)
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	for _, tc := range []struct {
		name   string
		config *tls.Config
		reason string
	}{
		{"no client certificate", p.clientConfig(nil), "didn't provide a certificate"},
		{"certificate from another CA", p.clientConfig(p.stranger), "unknown authority"},
		{"TLS 1.1", old, "unsupported versions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := dicomnet.Dial(context.Background(), srv.tlsAddr, dicomnet.ClientConfig{CallingAE: "A", CalledAE: "B", Dial: tlsDial(tc.config, nil)})
			if err == nil {
				a.Abort()
				t.Fatal("associated")
			}
			ev := failed.next(t)
			if ev.Err == nil || !strings.Contains(ev.Err.Error(), tc.reason) {
				t.Errorf("handshake failure %v, want one mentioning %q", ev.Err, tc.reason)
			}
		})
	}
	t.Run("plain DICOM on the TLS port", func(t *testing.T) {
		pr := dicomnettest.DialParrot(t, srv.tlsAddr)
		pr.SendPDU(dicomnettest.AssociateRQ("A", "B"))
		pr.ExpectClosed()
		if ev := failed.next(t); ev.Err == nil || !strings.Contains(ev.Err.Error(), "does not look like a TLS handshake") {
			t.Errorf("handshake failure %v", ev.Err)
		}
	})
	t.Run("silent peer is closed at ARTIM", func(t *testing.T) {
		c := dialSilent(t, srv.tlsAddr)
		start := time.Now()
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("server sent something to a silent peer")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection still open after %v", time.Since(start))
		}
		var ne net.Error
		ev := failed.next(t)
		if !errors.As(ev.Err, &ne) || !ne.Timeout() {
			t.Errorf("handshake failure %v, want the ARTIM deadline", ev.Err)
		}
		// Said as what it is, ARTIM's timeout: crypto/tls said "context deadline exceeded" or "read tcp …: i/o
		// timeout" only (ARTIM's read deadline and the handshake's context end together).
		const said = "dicomnet: TLS handshake timed out after 500ms (ARTIM): "
		if !errors.Is(ev.Err, dicomnet.ErrHandshakeTimeout) || !strings.HasPrefix(ev.Err.Error(), said) {
			t.Errorf("handshake failure %q, want it to start %q", ev.Err, said)
		}
		// Its line, written before the event, names the connection and the peer as every refusal's does.
		var line map[string]any
		for l := range strings.Lines(logs.String()) {
			var e map[string]any
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("log line %q: %v", l, err)
			}
			if e["msg"] == "dicomnet: TLS handshake failed" && e["err"] == ev.Err.Error() {
				line = e
			}
		}
		if line == nil || line["level"] != "WARN" || line["peer"] != c.LocalAddr().String() || line["assoc"] != ev.Association.ID {
			t.Errorf("log line %v, want a warning naming the connection %v and the peer %s; log:\n%s", line, ev.Association.ID, c.LocalAddr(), logs)
		}
	})
}

// TestServeTLSRefusalNamesTheChain: a handshake that failed because verification refused the client's chain
// reports that chain (as presented, certificate first); one that failed for another reason reports none.
func TestServeTLSRefusalNamesTheChain(t *testing.T) {
	p := newTLSPeers(t)
	failed := newEvents(dicomnet.EventHandshakeFailed)
	s := &dicomnet.Server{ARTIMTimeout: 500 * time.Millisecond, Observer: failed, Accept: func(context.Context, *dicomnet.AssociationInfo) error {
		return dicomnet.RejectNoReason
	}}
	srv := startTLSServer(t, s, p.serverConfig())
	chained := p.otherCA.Intermediate(t, "Other intermediate CA").Client(t, testpki.Options{CommonName: "pacs.site-a.example"})
	for _, tc := range []struct {
		name string
		cert *testpki.Cert
	}{
		{"certificate from another CA", p.stranger},
		{"chain through another CA's intermediate", chained},
		{"no client certificate", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := dicomnet.Dial(context.Background(), srv.tlsAddr, dicomnet.ClientConfig{CallingAE: "A", CalledAE: "B", Dial: tlsDial(p.clientConfig(tc.cert), nil)})
			if err == nil {
				a.Abort()
				t.Fatal("associated")
			}
			ev := failed.next(t)
			var want [][]byte
			if tc.cert != nil {
				want = tc.cert.TLS().Certificate
			}
			if len(ev.PeerCertificates) != len(want) {
				t.Fatalf("%d certificates reported, want %d", len(ev.PeerCertificates), len(want))
			}
			for i, c := range ev.PeerCertificates {
				if !bytes.Equal(c.Raw, want[i]) {
					t.Errorf("certificate %d is %s, not the one presented", i, c.Subject)
				}
			}
		})
	}
}

// TestAbortTLSCountsEachAssociationOnce: AbortTLS counts the associations it aborts, not those an earlier abort
// ended whose handler has not returned yet (an S3 put finishing, up to --s3-put-timeout): they are still
// established until it does, and a recheck meanwhile (the next poll, a SIGHUP's reload racing the watch's) counted
// them again, logging a withdrawn certificate's association as aborted once more at each.
func TestAbortTLSCountsEachAssociationOnce(t *testing.T) {
	p := newTLSPeers(t)
	entered, release := make(chan struct{}), make(chan struct{})
	srv := &dicomnet.Server{AETitle: "SCP",
		Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			close(entered)
			<-release // busy with something that does not heed ctx
			return errors.New("aborted")
		})}
	addrs := startTLSServer(t, srv, p.serverConfig())
	ctx := context.Background()
	cfg := storeCfg(0)
	cfg.Dial = tlsDial(p.clientConfig(p.client), nil)
	a, err := dicomnet.Dial(ctx, addrs.tlsAddr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stored := make(chan error, 1)
	go func() {
		_, err := a.Store(ctx, dicomuid.CTImageStorage, "1.2.3.9", "", strings.NewReader("ab"))
		stored <- err
	}()
	<-entered
	refuse := func(*tls.ConnectionState) error { return errors.New("client certificate no longer accepted") }
	first, again := srv.AbortTLS(refuse), srv.AbortTLS(refuse)
	close(release)
	if err := <-stored; err == nil {
		t.Error("the C-STORE of the aborted association succeeded")
	}
	if first != 1 || again != 0 {
		t.Errorf("AbortTLS aborted %d, then %d more; want 1, then none", first, again)
	}
}
