package dicomnet_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// hookedConn is a client's connection that runs a hook, once, at a named step, so that a test can land a
// cancellation between two steps of the client: "read" after a read that returned bytes, "read deadline" and
// "read deadline set" before and after a read deadline far off (a wait's), "write deadline" before a write
// deadline far off (a write's), "write" before a write, "deadline" and "deadline set"
// before and after SetDeadline (the cancellation's own).
type hookedConn struct {
	net.Conn
	mu    sync.Mutex
	hooks map[string]func()
}

// on sets the hook of step.
func (c *hookedConn) on(step string, h func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hooks == nil {
		c.hooks = map[string]func(){}
	}
	c.hooks[step] = h
}

// run runs, and forgets, the hook of step.
func (c *hookedConn) run(step string) {
	c.mu.Lock()
	h := c.hooks[step]
	delete(c.hooks, step)
	c.mu.Unlock()
	if h != nil {
		h()
	}
}

func (c *hookedConn) SetReadDeadline(t time.Time) error {
	far := time.Until(t) > time.Second
	if far {
		c.run("read deadline")
	}
	err := c.Conn.SetReadDeadline(t)
	if far {
		c.run("read deadline set")
	}
	return err
}

func (c *hookedConn) SetWriteDeadline(t time.Time) error {
	if time.Until(t) > time.Second {
		c.run("write deadline")
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *hookedConn) Write(b []byte) (int, error) {
	c.run("write")
	return c.Conn.Write(b)
}

func (c *hookedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.run("read")
	}
	return n, err
}

func (c *hookedConn) SetDeadline(t time.Time) error {
	c.run("deadline")
	err := c.Conn.SetDeadline(t)
	c.run("deadline set")
	return err
}

// waitFor waits until ch is closed, or a second.
func waitFor(ch <-chan struct{}) {
	select {
	case <-ch:
	case <-time.After(time.Second):
	}
}

// hookedDial dials as the client does and wraps the connection in c.
func hookedDial(c *hookedConn) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		c.Conn = nc
		return c, err
	}
}

// TestClientCancelledAssociating: a Dial cancelled while it waits for the A-ASSOCIATE-AC ends at once (but for
// ARTIM's wait for the peer to close after our A-ABORT), saying it was cancelled, however the cancellation falls
// against the wait's read deadline. Cancelled between the check of the context and the setting of that deadline,
// the deadline replaced the cancellation's and the Dial waited out its response timeout; and a cancelled Dial
// said "no answer from the peer within" the response timeout it had not waited.
func TestClientCancelledAssociating(t *testing.T) {
	const responseTimeout = time.Hour // a cancellation lost is a Dial still waiting, far past the bound below
	tests := []struct {
		name string
		// arm sets the cancellation's place, given cancel and the connection; nil cancels once the peer has the
		// A-ASSOCIATE-RQ.
		arm func(cancel func(), c *hookedConn)
	}{
		{"while the wait's deadline is set", func(cancel func(), c *hookedConn) {
			applied := make(chan struct{})
			c.on("deadline set", func() { close(applied) })
			c.on("read deadline", func() { // the cancellation's deadline set first, then the wait's
				cancel()
				waitFor(applied)
			})
		}},
		{"during the wait", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl := dicomnettest.ListenParrot(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := &hookedConn{}
			if tt.arm != nil {
				tt.arm(cancel, c)
			}
			dialed := dial(ctx, pl.Addr, dicomnet.ClientConfig{CallingAE: "INGEST", CalledAE: "PACS",
				ResponseTimeout: responseTimeout, ARTIMTimeout: 50 * time.Millisecond, Dial: hookedDial(c)})
			p := pl.Accept()
			if p == nil {
				t.FailNow()
			}
			defer p.Conn.Close()
			p.Expect(pdu.TypeAssociateRQ)
			if tt.arm == nil {
				cancel()
			}
			select {
			case r := <-dialed:
				if !errors.Is(r.err, context.Canceled) || strings.Contains(r.err.Error(), "no answer") {
					t.Errorf("Dial = %v, want it cancelled, not unanswered", r.err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("Dial still waiting 10s after its cancellation (response timeout %v)", responseTimeout)
			}
		})
	}
}

// associatedWithParrot associates with a parrot accepting every context (no role selection) on a connection
// that runs c's hooks; the association is aborted and the parrot closed when the test ends.
func associatedWithParrot(t *testing.T, cfg dicomnet.ClientConfig, c *hookedConn) (*dicomnettest.Parrot, *dicomnet.ClientAssociation) {
	t.Helper()
	pl := dicomnettest.ListenParrot(t)
	cfg.Dial = hookedDial(c)
	dialed := dial(context.Background(), pl.Addr, cfg)
	p := pl.Accept()
	if p == nil {
		t.FailNow()
	}
	t.Cleanup(func() { p.Conn.Close() })
	p.AcceptAssociation(func(pdu.RoleSelection) *pdu.RoleSelection { return nil })
	a := (<-dialed).get(t)
	t.Cleanup(func() { a.Abort() })
	return p, a
}

// TestClientCancelledAfterTheAnswer: a cancellation landing once an exchange has its answer does not undo it,
// nor the next exchange on another context: the cancellation's deadline, set by a goroutine still running as the
// first exchange returned, landed in the second's wait, which failed for want of an answer the peer had sent.
func TestClientCancelledAfterTheAnswer(t *testing.T) {
	c := &hookedConn{}
	p, a := associatedWithParrot(t, dicomnet.ClientConfig{CallingAE: "INGEST", CalledAE: "PACS",
		ResponseTimeout: time.Minute, ARTIMTimeout: 50 * time.Millisecond}, c)

	first, cancel := context.WithCancel(context.Background())
	defer cancel()
	second := make(chan struct{})                // closed once the second exchange waits for its answer
	landed := make(chan struct{})                // closed once the cancellation's deadline is set
	c.on("read", cancel)                         // the answer read: the first exchange's context ends
	c.on("deadline", func() { waitFor(second) }) // and its deadline lands late, in the second exchange's wait if that has begun
	c.on("deadline set", func() { close(landed) })
	echoAnswered(t, first, p, a, "Echo, cancelled once answered")
	c.on("read deadline set", func() {
		close(second)
		waitFor(landed)
	})
	echoAnswered(t, context.Background(), p, a, "the next Echo")
}

// echoAnswered runs a.Echo(ctx), the parrot answering it with success, and fails the test (naming the exchange as
// what) unless it succeeds.
func echoAnswered(t *testing.T, ctx context.Context, p *dicomnettest.Parrot, a *dicomnet.ClientAssociation, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- a.Echo(ctx) }()
	p.SendMessage(1, dimse.NewCEchoRSP(p.ExpectCommand(), dimse.Status{}), nil)
	if err := <-done; err != nil {
		t.Fatalf("%s = %v, want success", what, err)
	}
}

// slowReader yields its chunks of n bytes each after a pause.
type slowReader struct {
	chunks, n int
	pause     time.Duration
}

func (r *slowReader) Read(b []byte) (int, error) {
	if r.chunks == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.pause)
	r.chunks--
	return copy(b[:min(len(b), r.n)], make([]byte, r.n)), nil
}

// TestClientStoreAnswerDeadlineFromTheEnd: a C-STORE whose data set takes longer to send than the response
// timeout is answered: the timeout bounds the wait for the C-STORE-RSP, counted from the end of sending, not the
// exchange (a large object on a slow link would fail however fast the peer answers).
func TestClientStoreAnswerDeadlineFromTheEnd(t *testing.T) {
	const responseTimeout = 200 * time.Millisecond
	cfg := storeCfg(0)
	cfg.ResponseTimeout, cfg.ARTIMTimeout = responseTimeout, 50*time.Millisecond
	p, a := associatedWithParrot(t, cfg, &hookedConn{})
	type stored struct {
		st  dimse.Status
		err error
	}
	done := make(chan stored, 1)
	go func() { // sending takes 5 response timeouts at least
		st, err := a.Store(context.Background(), dicomuid.CTImageStorage, "1.2.3.4", dicomuid.ExplicitVRLittleEndian,
			&slowReader{chunks: 10, n: 64, pause: responseTimeout / 2})
		done <- stored{st, err}
	}()
	cmd, ds := p.ExpectMessage()
	if len(ds) != 640 {
		t.Fatalf("data set of %d bytes, want 640", len(ds))
	}
	p.SendMessage(1, dimse.NewCStoreRSP(cmd, dimse.Status{}), nil)
	if r := <-done; r.err != nil || !r.st.IsSuccess() {
		t.Fatalf("Store = %v, %v; want success", r.st, r.err)
	}
}

// countingWriter counts what is written to it and closes reached once it has count bytes; from then, if hold
// is not nil, it takes nothing more until hold is closed.
type countingWriter struct {
	n, count int64
	reached  chan struct{}
	hold     chan struct{}
}

func (w *countingWriter) Write(b []byte) (int, error) {
	if w.n >= w.count && w.hold != nil {
		<-w.hold
	}
	if w.n < w.count && w.n+int64(len(b)) >= w.count {
		close(w.reached)
	}
	w.n += int64(len(b))
	return len(b), nil
}

// TestClientCancelledSending: a C-STORE cancelled while its data set streams to a peer stops sending, saying it
// was cancelled. Every write set a write deadline of its own, replacing the cancellation's: cancelled between two
// writes, the Store went on to send the whole data set (to a peer that reads it) or waited out its write
// deadline (to one that stopped reading); cancelled within a write, it said its write deadline had expired.
func TestClientCancelledSending(t *testing.T) {
	if testing.Short() {
		t.Skip("a data set of 256 MiB")
	}
	const size = 256 << 20
	tests := []struct {
		name      string
		peerStops bool // the peer stops reading once it has 1 MiB; else it reads on
	}{
		{"between two writes, to a peer reading on", false},
		{"to a peer that stopped reading", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := storeCfg(0)
			cfg.ARTIMTimeout = 50 * time.Millisecond
			c := &hookedConn{}
			p, a := associatedWithParrot(t, cfg, c) // the parrot's PDUs of 16 KiB at most: many writes
			read := &countingWriter{count: 1 << 20, reached: make(chan struct{})}
			if tt.peerStops {
				read.hold = make(chan struct{})
			}
			peerDone := make(chan error, 1)
			go func() { // the peer reads what it is sent, until the client closes
				_, err := io.Copy(read, p.Conn)
				peerDone <- err
			}()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := a.Store(ctx, dicomuid.CTImageStorage, "1.2.3.4", dicomuid.ExplicitVRLittleEndian, io.LimitReader(&zeros{}, size))
				done <- err
			}()
			select {
			case <-read.reached:
			case err := <-done:
				t.Fatalf("Store = %v before its cancellation", err)
			}
			if tt.peerStops {
				cancel()
			} else {
				applied := make(chan struct{})
				c.on("deadline set", func() { close(applied) })
				c.on("write deadline", func() { // the cancellation's deadline set first, then the next write's
					cancel()
					waitFor(applied)
				})
			}
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "expired") {
					t.Errorf("Store = %v, want it cancelled", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Store still running 10s after its cancellation")
			}
			if read.hold != nil {
				close(read.hold)
			}
			p.Conn.Close()
			<-peerDone
			if read.n >= size {
				t.Errorf("the peer read %d bytes, the whole data set of %d: the cancelled Store went on sending", read.n, size)
			}
		})
	}
}

// fullBufferConn is a client's connection to a peer that stopped reading, its send buffer full: an A-ABORT written
// goes nowhere until the write deadline (15 s at most, a bound lost showing as a test failed, not hung).
type fullBufferConn struct {
	net.Conn
	mu            sync.Mutex
	writeDeadline time.Time
}

func (c *fullBufferConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDeadline = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *fullBufferConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDeadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *fullBufferConn) Write(b []byte) (int, error) {
	if len(b) == 0 || pdu.Type(b[0]) != pdu.TypeAbort {
		return c.Conn.Write(b)
	}
	c.mu.Lock()
	dl := c.writeDeadline
	c.mu.Unlock()
	time.Sleep(min(time.Until(dl), 15*time.Second))
	return 0, os.ErrDeadlineExceeded
}

// TestClientTeardownAfterACut: an exchange cut by its context (the commitment run's end) ends within
// dicomnet.TeardownWriteTimeout and ARTIM even when the peer stopped reading and our A-ABORT cannot be written: the
// abort was bounded by WriteTimeout alone (30 s by default), past the commitment function's invocation, so the
// attempt was never recorded.
func TestClientTeardownAfterACut(t *testing.T) {
	cfg := storeCfg(0)
	cfg.WriteTimeout, cfg.ARTIMTimeout = time.Hour, 50*time.Millisecond // a bound lost: far past the wait below
	pl := dicomnettest.ListenParrot(t)
	c := &fullBufferConn{}
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		c.Conn = nc
		return c, err
	}
	dialed := dial(context.Background(), pl.Addr, cfg)
	p := pl.Accept()
	if p == nil {
		t.FailNow()
	}
	defer p.Conn.Close()
	p.AcceptAssociation(func(pdu.RoleSelection) *pdu.RoleSelection { return nil })
	a := (<-dialed).get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Echo(ctx) }() // never answered: cut by ctx, then aborted
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Echo = %v, want it cut by its context", err)
		}
	case <-time.After(dicomnet.TeardownWriteTimeout + cfg.ARTIMTimeout + 5*time.Second):
		t.Fatal("the teardown after the cut still running past TeardownWriteTimeout and ARTIM")
	}
}

// TestClientCancelledBetweenPDUs: a C-STORE cancelled between two PDUs of its message ends the association with an
// A-ABORT (AA-1), which the peer, holding whole PDUs only, can read: the connection was closed bare, mid-message,
// the peer left to tell a cancellation from a crash. So it does however late the cancellation's own deadline
// (interruptOn's, set by another goroutine) lands: landing on the A-ABORT's write, it failed that write, and the
// peer had a bare close after all.
func TestClientCancelledBetweenPDUs(t *testing.T) {
	tests := []struct {
		name string
		// late: the cancellation's deadline is held until the A-ABORT is being written.
		late bool
	}{
		{"the cancellation's deadline set at once", false},
		{"the cancellation's deadline landing on the A-ABORT's write", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { cancelledBetweenPDUs(t, tt.late) })
	}
}

func cancelledBetweenPDUs(t *testing.T, late bool) {
	cfg := storeCfg(0)
	cfg.ARTIMTimeout = 50 * time.Millisecond
	c := &hookedConn{}
	p, a := associatedWithParrot(t, cfg, c) // the parrot's PDUs of 16 KiB at most: a data set of 64 KiB takes several
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	applied, writing := make(chan struct{}), make(chan struct{})
	c.on("deadline set", func() { close(applied) })
	if late {
		c.on("deadline", func() { waitFor(writing) })
	}
	c.on("write deadline", func() { // the command's PDU goes out; before the data set's first, the cancellation
		c.on("write deadline", func() {
			cancel()
			if !late {
				waitFor(applied)
				return
			}
			c.on("write", func() { // the next write, the A-ABORT's: the cancellation's deadline lands first
				close(writing)
				waitFor(applied)
			})
		})
	})
	done := make(chan error, 1)
	go func() {
		_, err := a.Store(ctx, dicomuid.CTImageStorage, "1.2.3.4", dicomuid.ExplicitVRLittleEndian, io.LimitReader(&zeros{}, 64<<10))
		done <- err
	}()
	if cmd := p.ExpectCommand(); cmd.CommandField != dimse.CStoreRQ {
		t.Fatalf("command 0x%04X, want a C-STORE-RQ", cmd.CommandField)
	}
	p.ExpectAbort(0, 0)
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Store = %v, want it cancelled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Store still running 10s after its cancellation")
	}
}

// TestClientCancelledThenTimeoutsDisabled: with the write and response timeouts disabled (negative), an exchange
// whose context ended as it got its answer leaves the next one to run: the cancellation's deadline (now) stayed
// on the connection, since no deadline of the next exchange's replaced it, and its first write and read failed at
// once.
func TestClientCancelledThenTimeoutsDisabled(t *testing.T) {
	c := &hookedConn{}
	p, a := associatedWithParrot(t, dicomnet.ClientConfig{CallingAE: "INGEST", CalledAE: "PACS",
		WriteTimeout: -1, ResponseTimeout: -1, ARTIMTimeout: 50 * time.Millisecond}, c)
	first, cancel := context.WithCancel(context.Background())
	defer cancel()
	landed := make(chan struct{})
	c.on("read", cancel) // the answer read: the first exchange's context ends
	c.on("deadline set", func() { close(landed) })
	echoAnswered(t, first, p, a, "Echo, cancelled once answered")
	waitFor(landed) // Echo's return waited for it too (interruptOn's stop): the deadline is on the connection
	echoAnswered(t, context.Background(), p, a, "the next Echo")
}
