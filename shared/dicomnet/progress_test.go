package dicomnet_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// trickle writes b one byte every interval until it is written or a write fails.
func trickle(p *dicomnettest.Parrot, b []byte, interval time.Duration) {
	for i := range b {
		if err := p.Conn.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
			return
		}
		if _, err := p.Conn.Write(b[i : i+1]); err != nil {
			return
		}
		time.Sleep(interval)
	}
}

// emptyFragments writes b, P-DATA-TFs of empty fragments, every 10 ms until a write fails or stop is closed.
func emptyFragments(p *dicomnettest.Parrot, b []byte, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if p.Conn.SetWriteDeadline(time.Now().Add(time.Second)) != nil {
			return
		}
		if _, err := p.Conn.Write(b); err != nil {
			return
		}
	}
}

// TestProgressDeadline: a peer that trickles a message a byte at a time is aborted once a progress window passes
// with fewer than MinProgressBytes, whether it trickles a data set or a new message; the abort is an
// EventAborted with ErrProgressDeadline (what the audit trail records), and a handler's reader fails with
// ErrIncomplete, so nothing is stored. So is a peer that holds a message open with empty fragments (P-DATA-TFs
// whose PDVs carry no byte of the message, none the last: PS3.8 E.1 does not make them invalid, an empty fragment
// being even): it brings ten times MinProgressBytes of PDUs in each window, all of them framing, which is not
// progress; before, it held the message open until MaxMessageTime (2 h).
func TestProgressDeadline(t *testing.T) {
	dataPDU, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.PDV(3, pdu.ControlLast, pattern(2000))}})
	echoPDU, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(2))}})
	empty := func(control byte) []byte {
		pdvs := make([]pdu.PDV, 16)
		for i := range pdvs {
			pdvs[i] = dicomnettest.PDV(3, control, nil)
		}
		b, _ := pdu.Encode(&pdu.PDataTF{PDVs: pdvs}) // 102 bytes, none of them the message's
		return b
	}
	trickled := func(b []byte) func(*dicomnettest.Parrot, <-chan struct{}) {
		return func(p *dicomnettest.Parrot, _ <-chan struct{}) { trickle(p, b, 20*time.Millisecond) }
	}
	emptied := func(b []byte) func(*dicomnettest.Parrot, <-chan struct{}) {
		return func(p *dicomnettest.Parrot, stop <-chan struct{}) { emptyFragments(p, b, stop) }
	}
	storeStarted := func(p *dicomnettest.Parrot) { p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1))) }
	tests := []struct {
		name  string
		start func(p *dicomnettest.Parrot) // before the feed
		feed  func(p *dicomnettest.Parrot, stop <-chan struct{})
		store bool // a C-STORE is in progress when the abort comes
	}{
		{"data set", storeStarted, trickled(dataPDU), true},
		{"new message", func(p *dicomnettest.Parrot) {}, trickled(echoPDU), false},
		{"empty data set fragments", storeStarted, emptied(empty(0)), true},
		{"empty command fragments", func(p *dicomnettest.Parrot) {}, emptied(empty(pdu.ControlCommand)), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			ch := make(chan result, 1)
			p, srv := startParrot(t, &dicomnet.Server{Handler: capture(ch), Observer: rec, ARTIMTimeout: 100 * time.Millisecond,
				ProgressWindow: 300 * time.Millisecond, MinProgressBytes: 1024})
			p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
			tc.start(p)
			stop := make(chan struct{})
			defer close(stop)
			go tc.feed(p, stop)
			p.ExpectAbort(0, 0) // AA-1, within the parrot's 5 s
			ev := rec.waitFor(t, dicomnet.EventAborted)
			if !ev.AbortLocal || !errors.Is(ev.Err, dicomnet.ErrProgressDeadline) {
				t.Errorf("abort event %+v, want a local abort for ErrProgressDeadline", ev)
			}
			if tc.store {
				if r := <-ch; !errors.Is(r.err, dicomnet.ErrIncomplete) {
					t.Errorf("handler read error %v, want ErrIncomplete", r.err)
				}
			}
			waitActive(t, srv.Server, 0)
		})
	}
}

// TestProgressDeadlineSparesHonestPeers: between messages only the idle timeout applies, a handler that does not
// read is not the peer's fault, and a message that pauses after enough bytes goes on.
func TestProgressDeadlineSparesHonestPeers(t *testing.T) {
	const window = 200 * time.Millisecond
	t.Run("idle between messages", func(t *testing.T) {
		p, _ := startParrot(t, &dicomnet.Server{ProgressWindow: window, IdleTimeout: 10 * time.Second})
		p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
		time.Sleep(3 * window)
		p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(1)))
		if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CEchoRSP {
			t.Fatalf("response %+v", rsp)
		}
		time.Sleep(3 * window)
		p.SendPDU(&pdu.ReleaseRQ{})
		p.Expect(pdu.TypeReleaseRP)
	})
	t.Run("slow handler", func(t *testing.T) {
		s := &dicomnet.Server{ProgressWindow: window, Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			time.Sleep(3 * window) // not reading: the peer waits for us, not we for it
			_, err := io.Copy(io.Discard, r)
			return err
		})}
		srv := dicomnettest.NewServerT(t, s)
		a, err := dicomnet.Dial(context.Background(), srv.Addr, storeCfg(0))
		if err != nil {
			t.Fatal(err)
		}
		st, err := a.Store(context.Background(), dicomuid.CTImageStorage, "1.2.3", "", bytes.NewReader(pattern(4<<20)))
		if err != nil || !st.IsSuccess() {
			t.Fatalf("%v %v", st, err)
		}
		if err := a.Release(context.Background()); err != nil {
			t.Error(err)
		}
	})
	t.Run("pause shorter than a window", func(t *testing.T) {
		// The pauses are the peer's, as it made them: a sleep overruns on a loaded host, and a pause that became as
		// long as a window may rightly be aborted. Such a run proves nothing, so it is run again.
		const attempts = 5
		for i := 1; ; i++ {
			gap, ok := pauseShorterThanWindow(t, window)
			if ok {
				return
			}
			if i == attempts {
				t.Fatalf("in %d runs the parrot never kept its pauses shorter than the %v window (last %v): host too loaded", attempts, window, gap)
			}
			t.Logf("run %d: the parrot paused %v, not shorter than the %v window; again", i, gap, window)
		}
	})
	t.Run("pipelined messages, then idle", func(t *testing.T) {
		// Two requests in one write: the second, read with the first, is received whole; what follows it is idle.
		rec := newRecorder()
		p, _ := startParrot(t, &dicomnet.Server{Handler: capture(make(chan result, 2)), Observer: rec, ProgressWindow: window,
			MinProgressBytes: 1024, IdleTimeout: 10 * time.Second})
		p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
		store, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, pdu.ControlLast, pattern(100))}})
		echo, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(2))}})
		p.Send(append(append([]byte{}, store...), echo...))
		for _, want := range []uint16{dimse.CStoreRSP, dimse.CEchoRSP} {
			if rsp := p.ExpectCommand(); rsp.CommandField != want || rsp.Status != 0 {
				t.Fatalf("response %+v, want 0x%04X", rsp, want)
			}
		}
		time.Sleep(3 * window)
		// The last data and the release in one write: the release is read with the data, at the boundary.
		last, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(3, storeRQ(3)), dicomnettest.PDV(3, pdu.ControlLast, pattern(100))}})
		rq, _ := pdu.Encode(&pdu.ReleaseRQ{})
		p.Send(append(append([]byte{}, last...), rq...))
		if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CStoreRSP || rsp.Status != 0 {
			t.Fatalf("response %+v", rsp)
		}
		p.Expect(pdu.TypeReleaseRP)
		rec.waitFor(t, dicomnet.EventReleased)
	})
	t.Run("message ceiling", func(t *testing.T) {
		rec := newRecorder()
		p, _ := startParrot(t, &dicomnet.Server{Handler: capture(make(chan result, 1)), Observer: rec, ProgressWindow: window,
			MinProgressBytes: 1, MaxMessageTime: 3 * window})
		p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
		p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)))
		b, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.PDV(3, pdu.ControlLast, pattern(2000))}})
		go trickle(p, b, window/4) // enough for every window, never the whole message in time
		p.ExpectAbort(0, 0)
		if ev := rec.waitFor(t, dicomnet.EventAborted); !errors.Is(ev.Err, dicomnet.ErrProgressDeadline) {
			t.Errorf("abort event %+v", ev)
		}
	})
}

// pauseShorterThanWindow sends a C-STORE in four P-DATA-TFs with a pause of half a window before each of the last
// three: the message spans a window's end, every window bringing more than MinProgressBytes, so it must go on.
// Each pause is measured from before one write to after the next, a bound on the gap between their arrivals at
// the server; when one is not shorter than the window (the host held the parrot up), the run proves nothing: ok
// is false, with that pause, and the rest is neither sent nor checked.
func pauseShorterThanWindow(t *testing.T, window time.Duration) (longest time.Duration, ok bool) {
	t.Helper()
	ch := make(chan result, 1)
	p, _ := startParrot(t, &dicomnet.Server{Handler: capture(ch), ProgressWindow: window, MinProgressBytes: 1024})
	p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
	fragments := [][]pdu.PDV{
		{dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, 0, pattern(4096))},
		{dicomnettest.PDV(3, 0, pattern(4096))},
		{dicomnettest.PDV(3, 0, pattern(4096))},
		{dicomnettest.PDV(3, pdu.ControlLast, pattern(4096))},
	}
	var before time.Time // of the previous write
	for i, pdvs := range fragments {
		if i > 0 {
			time.Sleep(window / 2)
		}
		start := time.Now()
		p.SendPDVs(pdvs...)
		if i > 0 {
			if longest = max(longest, time.Since(before)); longest >= window {
				return longest, false // the server may have aborted: no more writes
			}
		}
		before = start
	}
	if rsp := p.ExpectCommand(); rsp.Status != 0 {
		t.Fatalf("response %+v", rsp)
	}
	if r := <-ch; r.err != nil || len(r.data) != len(fragments)*4096 {
		t.Errorf("handler: %d bytes, %v", len(r.data), r.err)
	}
	return longest, true
}

// TestProgressDeadlineCoversBufferedStart: a message whose first bytes came in the same socket read as the end of
// the one before (a peer that pipelines) has begun, so the progress window bounds the wait for its rest. Its start
// was only noticed when a socket read brought bytes, so a command cut short after such a start waited out the idle
// timeout instead (5 min by default, not 1): what a probe that stopped mid-command saw.
func TestProgressDeadlineCoversBufferedStart(t *testing.T) {
	echo, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(1))}})
	next, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(3, storeRQ(2))}})
	tests := []struct {
		name string
		cut  int // bytes of the next message sent with the C-ECHO
	}{
		{"inside the PDU header", 3},
		{"inside the PDV header", pdu.HeaderLen + 2},
		{"inside the command set", len(next) / 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			p, srv := startParrot(t, &dicomnet.Server{Observer: rec, IdleTimeout: time.Minute,
				ProgressWindow: 200 * time.Millisecond, MinProgressBytes: 1024})
			p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
			p.Send(append(append([]byte{}, echo...), next[:tc.cut]...)) // one write: one socket read takes both
			if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CEchoRSP {
				t.Fatalf("response %+v", rsp)
			}
			p.ExpectAbort(0, 0) // AA-1 within the parrot's 5 s, not the idle timeout's minute
			if ev := rec.waitFor(t, dicomnet.EventAborted); !ev.AbortLocal || !errors.Is(ev.Err, dicomnet.ErrProgressDeadline) {
				t.Errorf("abort event %+v, want a local abort for ErrProgressDeadline", ev)
			}
			waitActive(t, srv.Server, 0)
		})
	}
}

// stallConn is a connection whose process stalls across a progress deadline once: the first read with a deadline
// sooner than within (a progress window's, not the idle timeout's) waits for resume and then for its deadline, and
// reports the deadline passed without reading, as a read does when the host held the process up until its timer
// had fired, whatever the peer sent meanwhile waiting in the socket.
type stallConn struct {
	net.Conn
	within  time.Duration
	stalled chan struct{} // closed when the stalled read begins
	resume  chan struct{} // closed by the test once the peer has sent what it sends during the stall

	mu       sync.Mutex
	deadline time.Time
	done     bool
}

func (c *stallConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *stallConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	d := c.deadline
	stall := !c.done && !d.IsZero() && time.Until(d) < c.within
	c.done = c.done || stall
	c.mu.Unlock()
	if !stall {
		return c.Conn.Read(p)
	}
	close(c.stalled)
	<-c.resume
	time.Sleep(time.Until(d))
	return 0, os.ErrDeadlineExceeded
}

// TestProgressDeadlineAfterAStall: when the process stalls across a progress window's deadline (a GC pause, the
// host descheduling it), the read reports the deadline though the peer's bytes reached the socket in time. Those
// bytes count toward the window: an honest peer is spared, whether they bring the window its MinProgressBytes or
// end the message, while a silent peer, or one trickling a byte now and then, is aborted as before. Before, the
// first two were aborted too.
func TestProgressDeadlineAfterAStall(t *testing.T) {
	const window = 300 * time.Millisecond
	tests := []struct {
		name   string
		during func(p *dicomnettest.Parrot) // sent while the server stalls
		spared bool
	}{
		{"window's bytes waiting", func(p *dicomnettest.Parrot) {
			p.SendPDVs(dicomnettest.PDV(3, 0, pattern(2048)), dicomnettest.PDV(3, pdu.ControlLast, pattern(2048)))
		}, true},
		{"message's end waiting", func(p *dicomnettest.Parrot) { p.SendPDVs(dicomnettest.PDV(3, pdu.ControlLast, pattern(100))) }, true},
		{"silent", func(p *dicomnettest.Parrot) {}, false},
		{"trickling", func(p *dicomnettest.Parrot) {
			b, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.PDV(3, pdu.ControlLast, pattern(2000))}})
			p.Send(b[:1])
			go trickle(p, b[1:], 20*time.Millisecond)
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			ch := make(chan result, 1)
			s := &dicomnet.Server{Handler: capture(ch), Observer: rec, ProgressWindow: window, MinProgressBytes: 1024, IdleTimeout: time.Minute}
			sc := &stallConn{within: 2 * window, stalled: make(chan struct{}), resume: make(chan struct{})}
			p := dicomnettest.DialParrot(t, serveOne(t, s, func(c net.Conn) net.Conn { sc.Conn = c; return sc }))
			p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
			// The message begins: its command and a first fragment, read with the idle timeout's deadline; the
			// handler's next read waits for the peer under the window's, and there the process stalls.
			p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, 0, pattern(100)))
			select {
			case <-sc.stalled:
			case <-time.After(5 * time.Second):
				t.Fatal("the server never waited under a progress window")
			}
			tc.during(p)
			close(sc.resume)
			if !tc.spared {
				p.ExpectAbort(0, 0)
				if ev := rec.waitFor(t, dicomnet.EventAborted); !ev.AbortLocal || !errors.Is(ev.Err, dicomnet.ErrProgressDeadline) {
					t.Errorf("abort event %+v, want a local abort for ErrProgressDeadline", ev)
				}
				if r := <-ch; !errors.Is(r.err, dicomnet.ErrIncomplete) {
					t.Errorf("handler read error %v, want ErrIncomplete", r.err)
				}
				return
			}
			if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CStoreRSP || rsp.Status != 0 {
				t.Fatalf("response %+v, want C-STORE-RSP success", rsp)
			}
			if r := <-ch; r.err != nil {
				t.Errorf("handler: %d bytes, %v", len(r.data), r.err)
			}
			p.SendPDU(&pdu.ReleaseRQ{})
			p.Expect(pdu.TypeReleaseRP)
		})
	}
}

// serveOne serves, with ServeConn, the first connection to the loopback address it returns, through wrap; the
// association is aborted, if still open, when the test ends.
func serveOne(t *testing.T, s *dicomnet.Server, wrap func(net.Conn) net.Conn) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := l.Accept()
		l.Close()
		if err == nil {
			s.ServeConn(ctx, wrap(c))
		}
	}()
	t.Cleanup(func() { cancel(); l.Close(); <-done })
	return l.Addr().String()
}

// countingConn counts the reads of its connection.
type countingConn struct {
	net.Conn
	reads atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}

// TestProgressCeilingInAWindowsGrace: when MaxMessageTime runs out as a window passes short (here both at once),
// the association is aborted for the ceiling at once. Before, the window's grace went on reading under the
// ceiling's deadline, already past: every read timed out at once, and the loop spun on the socket until the
// grace ended.
func TestProgressCeilingInAWindowsGrace(t *testing.T) {
	const window = 300 * time.Millisecond
	rec := newRecorder()
	ch := make(chan result, 1)
	s := &dicomnet.Server{Handler: capture(ch), Observer: rec, ProgressWindow: window, MinProgressBytes: 1024, MaxMessageTime: window, IdleTimeout: time.Minute}
	cc := &countingConn{}
	p := dicomnettest.DialParrot(t, serveOne(t, s, func(c net.Conn) net.Conn { cc.Conn = c; return cc }))
	p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
	p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, 0, pattern(100)))
	p.ExpectAbort(0, 0)
	ev := rec.waitFor(t, dicomnet.EventAborted)
	if !ev.AbortLocal || !errors.Is(ev.Err, dicomnet.ErrProgressDeadline) || !strings.Contains(ev.Err.Error(), "message not complete") {
		t.Errorf("abort event %+v, want a local abort for MaxMessageTime", ev)
	}
	if r := <-ch; !errors.Is(r.err, dicomnet.ErrIncomplete) {
		t.Errorf("handler read error %v, want ErrIncomplete", r.err)
	}
	// The association's PDUs, and a read or two under each deadline: not a read per turn of a loop.
	if n := cc.reads.Load(); n > 20 {
		t.Errorf("%d reads of the connection, want a few", n)
	}
}
