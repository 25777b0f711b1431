package dicomnet

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/proxyproto"
)

// The acceptor side of one association is split by concern:
//
//   - association.go (this file): the connection's lifecycle. The serve loop takes one event at a time, fires it
//     on the state machine (fsm.go) and acts on the primitive the action issues to the local user; it owns the
//     timers, the writes and the bookkeeping of how the association ended.
//   - pduread.go: reading PDUs and PDV headers off the connection and classifying them as events.
//   - establish.go: the A-ASSOCIATE exchange (provider checks, the association policy, negotiation).
//   - dispatch.go: DIMSE messages on an established association (command sets, the service table, responses).
//   - dataset.go: the io.Reader a handler receives for one data set, streamed from the connection.
//   - report.go: requests of ours (N-EVENT-REPORT-RQ) sent on the association, and their responses.
//
// Every step that reads from the peer returns the event that follows it (an rxEvent, the zero value when there is
// none); nothing is kept aside for later.

// association is the acceptor side of one association.
type association struct {
	srv *Server
	// nc is the connection the PDUs travel on: raw itself, or a TLS server connection over it (ServeTLS).
	nc     net.Conn
	raw    net.Conn
	tlsIn  *readSeen // under nc, of a ServeTLS connection
	br     *bufio.Reader
	log    *slog.Logger
	info   AssociationInfo
	m      machine
	state  atomic.Uint32 // mirror of m.state for other goroutines
	ctx    context.Context
	cancel context.CancelFunc // ends ctx (the handler's context) when the association is aborted from outside

	hasSlot bool         // guarded by srv.mu
	unassoc unassocEntry // place among the connections without an association; guarded by srv.mu
	preHeld int64        // bytes charged to MaxPreAssociationBytes (memory.go); guarded by srv.mu

	// timers (see pduread.go, timedReader)
	artimOn       bool
	artimDeadline time.Time
	idleSet       time.Time
	readDeadline  time.Time // the last one set on the association's goroutine; zero for none
	progress      progress

	// requests of ours (report.go): wake is set by a sender before it moves the read deadline to now
	outbox outbox
	wake   atomic.Bool

	// writes
	wmu          sync.Mutex
	outsideAbort atomic.Bool
	outsideWhy   atomic.Pointer[error] // why it was aborted from outside, when not by shutdown (AbortTLS)
	out          []byte                // the PDU(s) DT-1 sends

	// establishment (establish.go)
	rq       *pdu.AssociateRQ
	rj       *RejectError
	rejectBy error // the association policy's own reason for rj, for the Event (never sent)
	ac       []byte
	accepted bool
	contexts ContextSummary // what the A-ASSOCIATE-AC answered to the contexts proposed

	// data transfer (pduread.go, dispatch.go)
	ctxs    [256]*AcceptedContext
	peerMax uint32
	reader  pduReader
	cmd     commandAssembly
	// answering is the event of the C-STORE (or refused N-ACTION) whose response is being sent, until it is
	// observed (dispatch.go)
	answering *Event

	// how it ended
	released                 bool
	aborted                  bool
	abortLocal               bool
	abortSource, abortReason byte
	abortErr                 error
}

func newAssociation(s *Server, c net.Conn, parent context.Context, tlsConfig *tls.Config) *association {
	a := &association{srv: s, nc: c, raw: c}
	if tlsConfig != nil {
		// The handshake waits for handshake(): a PROXY header comes first, on the raw connection.
		a.tlsIn = &readSeen{Conn: c}
		a.nc = tls.Server(a.tlsIn, tlsConfig)
	}
	a.reader.inSync = true
	a.ctx, a.cancel = context.WithCancel(parent)
	a.info = AssociationInfo{ID: s.newID(), RemoteAddr: c.RemoteAddr(), LocalAddr: c.LocalAddr()}
	a.m = machine{state: sta1, fx: a}
	a.state.Store(uint32(sta1))
	return a
}

func (a *association) stateNow() state { return state(a.state.Load()) }

func (a *association) serve(parent context.Context) {
	defer a.cancel()
	stop := context.AfterFunc(parent, a.abortFromOutside)
	defer stop()
	a.br = bufioReaderPool.Get().(*bufio.Reader)
	a.br.Reset(timedReader{a})
	defer func() {
		a.br.Reset(nil)
		bufioReaderPool.Put(a.br)
	}()
	defer a.nc.Close()
	a.log = a.srv.logger().With("assoc", a.info.ID, "peer", addrString(a.info.RemoteAddr))

	a.fire(evt5, rxEvent{}) // AE-5: connection accepted, ARTIM started → Sta2
	if a.srv.ProxyProtocol && (!a.readProxyHeader() || a.srv.rekeyUnassociated(a) != nil) {
		return
	}
	if !a.handshake() {
		return
	}
	rx := a.nextEvent()
	// A request of ours may fail to be written while the next event is read (report.go): the association is
	// over then, in Sta1, and the event is not fired.
	for a.m.state != sta1 {
		follow := a.step(rx)
		if a.m.state == sta1 {
			return
		}
		if follow.ev != evtNone {
			rx = follow
		} else {
			rx = a.nextEvent()
		}
	}
}

// readProxyHeader reads the PROXY protocol v2 header; false means the connection is to be closed. It reads the
// raw connection, exactly the header's bytes: over TLS the handshake follows on the same socket. ARTIM bounds it.
func (a *association) readProxyHeader() bool {
	h, err := proxyproto.Read(a.raw)
	if err != nil {
		switch {
		case errors.Is(err, io.EOF):
			// Connected and closed without a byte: a load balancer's TCP health check.
			a.log.Debug("dicomnet: connection closed before the PROXY header")
		case !a.wasShed():
			a.log.Warn("dicomnet: PROXY protocol header", "err", err)
		}
		return false
	}
	if h.Command == proxyproto.CommandProxy && h.Source != nil {
		a.info.RemoteAddr = h.Source
		if h.Destination != nil {
			a.info.LocalAddr = h.Destination
		}
		a.log = a.srv.logger().With("assoc", a.info.ID, "peer", addrString(a.info.RemoteAddr))
	}
	return true
}

// ErrHandshakeTimeout is a TLS handshake that did not end within ARTIM (a peer silent or too slow after
// connecting): the error of its EventHandshakeFailed and its log line, "dicomnet: TLS handshake timed out after 30s
// (ARTIM): context deadline exceeded" (or ": read tcp …: i/o timeout"); crypto/tls says only the last part.
var ErrHandshakeTimeout = errors.New("dicomnet: TLS handshake timed out")

// handshake runs the TLS handshake of a ServeTLS connection, bounded by ARTIM like the wait for the A-ASSOCIATE-RQ
// it precedes; false means the connection is to be closed. A plain connection has none.
func (a *association) handshake() bool {
	tc, ok := a.nc.(*tls.Conn)
	if !ok {
		return true
	}
	artim := a.srv.artim()
	ctx, cancel := context.WithTimeout(a.ctx, artim)
	defer cancel()
	err := tc.HandshakeContext(ctx)
	if err == nil {
		return true
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		// ARTIM ended it: its read deadline, set when the connection was accepted, or ctx's, whichever came first
		// (a stop of the server cancels ctx instead, no timeout). crypto/tls says only "context deadline
		// exceeded" or "read tcp …: i/o timeout".
		err = fmt.Errorf("%w after %s (ARTIM): %w", ErrHandshakeTimeout, artim, err)
	}
	switch {
	case (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) && !a.tlsIn.seen.Load():
		// Connected and closed without a byte, with a FIN or a reset: a TCP health check. One that closes after
		// sending some has given up on the handshake (HandshakePeerClosed).
		a.log.Debug("dicomnet: connection closed before the TLS handshake")
		return false
	case a.wasShed():
		// Closed by us to keep the bounds: no failure of the peer's to log, audit or alarm on, once per connection
		// of a flood.
		return false
	case a.stoppedUs(err):
		// Cut by our own stop (Shutdown closing the connections without an association, Close, ServeConn's
		// context): no failure of the peer's either, and it ends as a plain connection closed by the stop before
		// its A-ASSOCIATE-RQ does, with no event.
		a.log.Debug("dicomnet: TLS handshake cut by the server's stop", "err", err)
		return false
	}
	// Classified once: its line, the metric and the audit record (HandshakeFailureReason of the event's Err) all
	// read this reason.
	f := &handshakeFailure{reason: HandshakeFailureReason(err), err: err}
	a.srv.handshakeLog.log(a.log, slog.LevelWarn, "dicomnet: TLS handshake failed", "reason", f.reason, "err", err)
	info := a.info
	a.srv.observe(Event{Type: EventHandshakeFailed, Association: &info, Err: f, PeerCertificates: refusedChain(err)})
	return false
}

// stoppedUs reports whether err, a failed handshake's, is our own doing: the connection closed or the context
// cancelled by a stop of the server or of the association (Shutdown, Close, ServeConn's context), not by the
// peer. A handshake that failed for a reason of its own while the server stops is still that failure.
func (a *association) stoppedUs(err error) bool {
	if !errors.Is(err, net.ErrClosed) && !errors.Is(err, context.Canceled) {
		return false
	}
	return a.srv.inShutdown.Load() || a.ctx.Err() != nil
}

// readSeen is the connection under a ServeTLS connection's tls.Conn, noting whether the peer sent anything: one
// closed without a byte is a health check, not a handshake that failed.
type readSeen struct {
	net.Conn
	seen atomic.Bool
}

func (c *readSeen) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.seen.Load() {
		c.seen.Store(true)
	}
	return n, err
}

// refusedChain is the certificate chain a failed handshake refused, from the *tls.CertificateVerificationError it
// failed with; nil when it failed for another reason.
func refusedChain(err error) []*x509.Certificate {
	if cve, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return cve.UnverifiedCertificates
	}
	return nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// tlsState returns the TLS connection state when the association runs over TLS (the handshake is complete once
// the A-ASSOCIATE-RQ has been read), nil otherwise.
func (a *association) tlsState() *tls.ConnectionState {
	c, ok := a.nc.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return nil
	}
	st := c.ConnectionState()
	if !st.HandshakeComplete {
		return nil
	}
	return &st
}

// step fires rx and acts on the primitive its action issues to the local user. It returns the event that follows
// from that (the user's answer to an indication, or what interrupted the P-DATA it processed), or the zero
// rxEvent when the next event is to be read from the connection.
func (a *association) step(rx rxEvent) rxEvent {
	prev := a.m.state
	act := a.fire(rx.ev, rx)
	switch act {
	case ae6:
		if a.m.state == sta3 { // A-ASSOCIATE indication: the local user decides (Evt7 or Evt8)
			return a.decide()
		}
		// The provider refused the request (protocol version, application context): A-ASSOCIATE-RJ sent.
		a.log.Info("dicomnet: association rejected by provider", rejectionAttrs(a.rj)...)
		a.srv.observe(Event{Type: EventRejected, Association: &a.info, Reject: a.rj})
	case ae7:
		if a.m.state == sta6 {
			log := a.log
			if st := a.info.TLS; st != nil {
				log = log.With("tls", tls.VersionName(st.Version), "tls_cipher", tls.CipherSuiteName(st.CipherSuite),
					"peer_identity", a.info.PeerIdentity)
			}
			attrs := append(a.contexts.logAttrs(), "peer_impl", a.info.PeerImplementationClassUID,
				"peer_impl_version", a.info.PeerImplementationVersionName, "peer_max_pdu", a.peerMax)
			log.Info("dicomnet: association accepted", attrs...)
			contexts := a.contexts
			a.srv.observe(Event{Type: EventAccepted, Association: &a.info, Contexts: &contexts})
		}
	case ae8:
		a.srv.observe(Event{Type: EventRejected, Association: &a.info, Reject: a.rj, Err: a.rejectBy})
	case aa2:
		// ARTIM expired: no A-ASSOCIATE-RQ in time (as many as a peer can connect, so limited), or the peer did
		// not close after the association ended (logged then). It went unlogged: a connection held open without a
		// request was dropped without a word.
		switch {
		case rx.ev != evt18:
		case prev == sta2:
			a.srv.preAssociationLog.log(a.log, slog.LevelInfo, "dicomnet: connection closed", "err", rx.err, "state", prev.String())
		default:
			a.log.Debug("dicomnet: connection closed", "err", rx.err, "state", prev.String())
		}
	case dt2: // P-DATA indication
		return a.onPData()
	case ar2:
		// A-RELEASE indication. Every response has been sent (DIMSE processing is synchronous), so the local user
		// answers at once: the A-RELEASE response primitive.
		a.released = true
		return rxEvent{ev: evt14}
	case aa1, aa7, aa8:
		switch {
		case rx.err == nil:
		case established(prev):
			// ended() has logged it, with the error, source and reason.
		case prev == sta13:
			// A stray PDU after the association ended (released, rejected or aborted, and logged then).
			a.log.Debug("dicomnet: A-ABORT sent after the association ended", "err", rx.err)
		default: // before an association: as many as a peer can connect, so limited
			a.srv.preAssociationLog.log(a.log, slog.LevelInfo, "dicomnet: association aborted", "err", rx.err, "state", prev.String())
		}
	}
	return rxEvent{}
}

// fire runs the state machine for e and keeps the bookkeeping that depends on transitions.
func (a *association) fire(e event, rx rxEvent) action {
	prev := a.m.state
	a.m.abortReason = rx.reason
	act, err := a.m.fire(e)
	a.state.Store(uint32(a.m.state))
	switch act {
	case aa3: // A-ABORT indication: the peer aborted
		a.recordAbort(false, rx.abortSource, rx.abortReason, &AbortError{Source: rx.abortSource, Reason: rx.abortReason})
	case aa4: // A-P-ABORT indication: the connection closed
		a.recordConnectionLost(rx.err)
	case aa1:
		a.recordAbort(true, 0, 0, rx.err)
	case aa7, aa8:
		a.recordAbort(true, 2, providerAbortReason(rx.reason), rx.err)
	}
	if err != nil {
		// A failed write means the connection is gone: nothing more can be said to the peer.
		a.log.Debug("dicomnet: write failed", "err", err, "state", a.m.state.String())
		a.nc.Close()
		if established(a.m.state) {
			a.recordConnectionLost(err)
		}
		a.m.state = sta1
		a.state.Store(uint32(sta1))
	}
	if established(prev) && !established(a.m.state) {
		a.ended()
	}
	return act
}

// established reports the states in which the association exists (data transfer and release).
func established(s state) bool { return s >= sta6 && s <= sta12 }

// ended frees the slot and reports how the association ended, as soon as it leaves the established states
// (not when the peer finally closes the connection).
func (a *association) ended() {
	a.reportAnswered(ErrNotSent) // a response whose write failed: its object came before the end
	a.closeOutbox()
	a.srv.releaseSlot(a)
	if !a.accepted {
		return
	}
	ev := Event{Association: &a.info}
	switch {
	case a.released && !a.aborted:
		ev.Type = EventReleased
		a.log.Info("dicomnet: association released")
	default:
		ev.Type = EventAborted
		ev.AbortSource, ev.AbortReason, ev.AbortLocal, ev.Err = a.abortSource, a.abortReason, a.abortLocal, a.abortErr
		a.log.Info("dicomnet: association aborted", "local", a.abortLocal, "source", a.abortSource, "reason", a.abortReason, "err", a.abortErr)
	}
	a.srv.observe(ev)
}

func (a *association) recordAbort(local bool, src, reason byte, err error) {
	if a.aborted || !a.accepted {
		return
	}
	a.aborted, a.abortLocal, a.abortSource, a.abortReason, a.abortErr = true, local, src, reason, err
}

// recordConnectionLost records the end of an association whose connection failed, in a read or in a write (err):
// our abort when the server aborted it from outside (shutdown, Close, AbortTLS: it closed the connection, and
// outsideAbortErr says why), the provider's otherwise.
func (a *association) recordConnectionLost(err error) {
	if a.outsideAbort.Load() {
		a.recordAbort(true, 0, 0, a.outsideAbortErr())
		return
	}
	a.recordAbort(false, 2, 0, err)
}

// errShutdownAbort is why an association aborted from outside ended, unless abortFromOutsideFor said otherwise.
var errShutdownAbort = errors.New("dicomnet: aborted by server shutdown")

func (a *association) outsideAbortErr() error {
	if why := a.outsideWhy.Load(); why != nil {
		return *why
	}
	return errShutdownAbort
}

// abortFromOutside aborts the association from another goroutine (Shutdown deadline, Close, ctx): it sends an
// A-ABORT if no write is in progress and closes the connection, which makes the association goroutine's reads
// (and a handler's dataset reads) fail.
func (a *association) abortFromOutside() { a.abortFromOutsideFor(nil) }

// abortFromOutsideFor is abortFromOutside with the reason the association's end reports (its log line, its
// Event.Err and so its audit record) when it is not shutdown; the first abort from outside decides it. It reports
// whether this call aborted it (false: an earlier one did).
func (a *association) abortFromOutsideFor(why error) bool {
	if !a.outsideAbort.CompareAndSwap(false, true) {
		return false
	}
	if why != nil {
		a.outsideWhy.Store(&why) // before the connection closes, which is when the association's goroutine reads it
	}
	a.cancel() // tell a handler that may be busy with something other than reading
	if st := a.stateNow(); st >= sta3 && st <= sta12 {
		// Bound a write in progress (the peer may not be reading), then send the A-ABORT after it. write() refuses
		// new writes from now on, so the lock is held at most about a second.
		deadline := func() error { return a.nc.SetWriteDeadline(time.Now().Add(time.Second)) }
		err := deadline()
		a.wmu.Lock()
		if err == nil {
			err = deadline()
		}
		if err == nil {
			var b []byte
			if b, err = pdu.Encode(&pdu.Abort{Source: pdu.AbortSourceServiceUser}); err == nil {
				_, err = a.nc.Write(b)
			}
		}
		a.wmu.Unlock()
		if err != nil {
			// Best effort (AA-1): closing the connection tells the peer as well.
			a.log.Debug("dicomnet: A-ABORT not sent", "err", err)
		}
	}
	if err := a.nc.Close(); err != nil {
		a.log.Debug("dicomnet: close", "err", err)
	}
	return true
}

// --- effects (see fsm.go) ---

func (a *association) startARTIM() {
	a.artimOn = true
	a.artimDeadline = time.Now().Add(a.srv.artim())
	a.setReadDeadline(a.artimDeadline)
}

// setReadDeadline arms (or, with the zero time, disarms) the read timer.
// net.Conn refuses only once the connection is closed, and then the read
// it guards fails and ends the association: that failure is the one
// reported; this one is only logged.
func (a *association) setReadDeadline(t time.Time) {
	a.readDeadline = t
	if err := a.nc.SetReadDeadline(t); err != nil {
		a.log.Debug("dicomnet: set read deadline", "err", err)
	}
}

func (a *association) stopARTIM() {
	a.artimOn = false
	a.idleSet = time.Time{}
	a.setReadDeadline(time.Time{})
}

func (a *association) closeTransport() { a.nc.Close() }

// The acceptor never connects, requests an association or requests a release: the serve loop fires none of the
// events (Evt1, Evt2, Evt11) whose actions would call these.
func (a *association) connectTransport() error {
	return errors.New("dicomnet: acceptor does not connect")
}
func (a *association) sendAssociateRQ() error {
	return errors.New("dicomnet: acceptor does not send A-ASSOCIATE-RQ")
}
func (a *association) sendReleaseRQ() error {
	return errors.New("dicomnet: acceptor does not request release")
}
func (a *association) isRequestor() bool { return false }
func (a *association) sendPData() error  { return a.write(a.out) }

func (a *association) sendReleaseRP() error { return sendPDU(a.write, &pdu.ReleaseRP{}) }

func (a *association) sendAbort(source, reason byte) error {
	return sendPDU(a.write, &pdu.Abort{Source: source, Reason: reason})
}

func (a *association) write(b []byte) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if a.outsideAbort.Load() {
		return errors.New("dicomnet: write: association aborted")
	}
	if wt := a.srv.writeTimeout(); wt > 0 {
		if err := a.nc.SetWriteDeadline(time.Now().Add(wt)); err != nil {
			return fmt.Errorf("dicomnet: write: %w", err)
		}
	}
	if _, err := a.nc.Write(b); err != nil {
		if wt := a.srv.writeTimeout(); wt > 0 && isTimeout(err) && !a.outsideAbort.Load() {
			err = expired("write deadline", wt, err)
		}
		return fmt.Errorf("dicomnet: write: %w", err)
	}
	return nil
}
