package dicomnet_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/proxyproto"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// shedCounter counts EventShed by error, without ever blocking the server.
type shedCounter struct {
	mu sync.Mutex
	n  map[error]int
}

func (c *shedCounter) ObserveAssociation(ev dicomnet.Event) {
	if ev.Type != dicomnet.EventShed {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range []error{dicomnet.ErrShedMemory, dicomnet.ErrShedTotal, dicomnet.ErrShedPerAddr} {
		if errors.Is(ev.Err, e) {
			c.n[e]++
		}
	}
}

func (c *shedCounter) count(e error) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[e]
}

// partialRQ is the start of an A-ASSOCIATE-RQ announcing a body of 64 KiB and sending 1 KiB of it: the server
// holds a buffer of 64 KiB for it until the rest comes or ARTIM ends it.
func partialRQ() []byte {
	b := make([]byte, 6+1024)
	b[0] = 0x01
	binary.BigEndian.PutUint32(b[2:], 64<<10)
	return b
}

// partialClientHello is the start of a TLS record that never ends.
func partialClientHello() []byte { return []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01} }

// TestPreAssociationMemory: many connections each holding part of an A-ASSOCIATE-RQ (or of a TLS handshake)
// never hold more than MaxPreAssociationBytes by the server's own accounting; a peer that asks at once still gets
// in while they hold it, and the memory comes back when they close or ARTIM ends them.
func TestPreAssociationMemory(t *testing.T) {
	const conns = 40
	rqCost := dicomnet.PreAssociationConnBytes + 64<<10 // the connection and its request's buffer
	tlsCost := dicomnet.PreAssociationConnBytes + dicomnet.PreAssociationTLSBytes
	for _, tc := range []struct {
		name       string
		budget     int64
		artim      time.Duration
		overTLS    bool
		closePeers bool // the peers close; otherwise ARTIM ends them
	}{
		{name: "requests, peers close", budget: 6 * rqCost, closePeers: true},
		{name: "requests, ARTIM ends them", budget: 6 * rqCost, artim: 4 * time.Second},
		{name: "TLS handshakes, peers close", budget: 3 * tlsCost, overTLS: true, closePeers: true},
		{name: "unlimited: charged all the same", budget: 0, closePeers: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &shedCounter{n: map[error]int{}}
			srv := &dicomnet.Server{MaxPreAssociationBytes: tc.budget, ARTIMTimeout: tc.artim, Observer: rec}
			peers := newTLSPeers(t)
			ts := startTLSServer(t, srv, peers.serverConfig())
			addr, start := ts.plainAddr, partialRQ()
			if tc.overTLS {
				addr, start = ts.tlsAddr, partialClientHello()
			}
			// The server's accounting is sampled throughout: it must stay within the budget.
			var peak int64
			stop := make(chan struct{})
			var sampler sync.WaitGroup
			sampler.Go(func() {
				for {
					peak = max(peak, srv.PreAssociationBytes())
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Microsecond):
					}
				}
			})
			var held []net.Conn
			for range conns {
				held = append(held, dialFrom(t, "127.0.0.2", addr, start))
			}
			// Every connection is either shed or held, charged in full (its request's buffer, or its handshake).
			perConn := rqCost
			if tc.overTLS {
				perConn = tlsCost
			}
			testenv.Eventually(t, "every connection shed or charged in full", func() bool {
				n := srv.UnassociatedConnections()
				return n+rec.count(dicomnet.ErrShedMemory) == conns && srv.PreAssociationBytes() == int64(n)*perConn
			})
			if tc.budget > 0 && rec.count(dicomnet.ErrShedMemory) == 0 {
				t.Error("no connection was shed for memory")
			}
			// A peer that asks at once gets in while the others hold the memory: the oldest waiting one
			// makes room for it.
			if tc.overTLS {
				if err := tlsEcho(t, ts.tlsAddr, peers.clientConfig(peers.client)); err != nil {
					t.Errorf("TLS echo while the budget is held: %v", err)
				}
			} else if err := echoFrom(t, "127.0.0.1", addr); err != nil {
				t.Errorf("echo while the budget is held: %v", err)
			}
			if tc.closePeers {
				for _, c := range held {
					c.Close()
				}
			}
			testenv.Eventually(t, "the memory given back", func() bool { return srv.PreAssociationBytes() == 0 })
			close(stop)
			sampler.Wait()
			if tc.budget > 0 && peak > tc.budget {
				t.Errorf("connections without an association held %d bytes, over the budget of %d", peak, tc.budget)
			}
			if peak == 0 {
				t.Error("nothing was ever charged")
			}
			if tc.budget == 0 && rec.count(dicomnet.ErrShedMemory) != 0 {
				t.Errorf("%d connections shed for memory without a budget", rec.count(dicomnet.ErrShedMemory))
			}
			t.Logf("peak %d KiB of %d KiB; %d shed for memory", peak>>10, tc.budget>>10, rec.count(dicomnet.ErrShedMemory))
			if err := echoFrom(t, "127.0.0.1", ts.plainAddr); err != nil {
				t.Errorf("echo once the memory is back: %v", err)
			}
		})
	}
}

// tlsEcho opens a TLS association to addr, echoes and releases.
func tlsEcho(t *testing.T, addr string, config *tls.Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	as, err := dicomnet.Dial(ctx, addr, dicomnet.ClientConfig{CallingAE: "SITE", CalledAE: "ANY", Dial: tlsDial(config, nil)})
	if err != nil {
		return err
	}
	if err := as.Echo(ctx); err != nil {
		return err
	}
	return as.Release(ctx)
}

// TestShedIsNotAHandshakeFailure: a TLS connection shed while its handshake (or the PROXY header before it) waits
// is reported once, as shed, and logged with the others: not also as a failed handshake (or a bad PROXY header),
// which the SCP logs per connection, audits as a refused node and alarms on. A flood of half-open TLS connections wrote a warning and an audit record for each
// one shed.
func TestShedIsNotAHandshakeFailure(t *testing.T) {
	p := newTLSPeers(t)
	tlsCost := dicomnet.PreAssociationConnBytes + dicomnet.PreAssociationTLSBytes
	proxyHeader := proxyproto.Append(nil, &net.TCPAddr{IP: net.IPv4(198, 51, 100, 7), Port: 40000}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2762})
	for _, tc := range []struct {
		name  string
		srv   *dicomnet.Server
		start []byte // what each idle connection sends
	}{
		{"over the total", &dicomnet.Server{MaxUnassociated: 2}, partialClientHello()},
		{"over the memory", &dicomnet.Server{MaxPreAssociationBytes: 2 * tlsCost}, partialClientHello()},
		{"waiting for the PROXY header", &dicomnet.Server{MaxUnassociated: 2, ProxyProtocol: true}, proxyHeader[:4]},
		{"handshake after the PROXY header", &dicomnet.Server{MaxUnassociated: 2, ProxyProtocol: true}, append(proxyHeader, partialClientHello()...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			var logs testenv.LogBuffer
			srv := tc.srv
			srv.Observer, srv.Logger = rec, slog.New(slog.NewJSONHandler(&logs, nil))
			ts := startTLSServer(t, srv, p.serverConfig())
			const conns = 6
			for i := range conns {
				dialFrom(t, "127.0.0.2", ts.tlsAddr, tc.start)
				// One at a time, so that which are shed is the server's choice, not the scheduler's.
				testenv.Eventually(t, "the connection counted", func() bool {
					rec.mu.Lock()
					defer rec.mu.Unlock()
					return srv.UnassociatedConnections()+len(rec.events) >= i+1
				})
			}
			testenv.Eventually(t, "the connections over the bound shed", func() bool { return srv.UnassociatedConnections() == 2 })
			time.Sleep(100 * time.Millisecond) // for any further event of the shed connections' goroutines
			rec.mu.Lock()
			defer rec.mu.Unlock()
			var kinds []string
			for _, ev := range rec.events {
				kinds = append(kinds, ev.Type.String())
			}
			want := slices.Repeat([]string{dicomnet.EventShed.String()}, conns-2)
			if !slices.Equal(kinds, want) {
				t.Errorf("events %v, want %v", kinds, want)
			}
			// The shedding is logged once, at most every 10 s, not per connection.
			if n := strings.Count(logs.String(), `"level":"WARN"`); n != 1 {
				t.Errorf("%d warnings, want the one line about the shedding:\n%s", n, logs.String())
			}
		})
	}
}
