package dicomnet

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/proxyproto"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// ErrIncomplete is returned (wrapped) by a C-STORE dataset reader when the association breaks before the end of
// the object: peer A-ABORT, connection closed, timeout or protocol error. The handler must discard the object.
var ErrIncomplete = errors.New("dicomnet: data set incomplete")

// ErrObjectTooLarge is returned by a C-STORE dataset reader once the data set exceeds Server.MaxObjectSize.
var ErrObjectTooLarge = errors.New("dicomnet: data set exceeds the maximum object size")

// rxEvent is a classified incoming event.
type rxEvent struct {
	ev          event
	reason      byte // provider abort reason to send for evt19
	abortSource byte // of a received A-ABORT
	abortReason byte
	err         error
}

// association is the acceptor side of one association: it owns the connection, the deadlines and the ARTIM
// timer, and drives the state machine.
type association struct {
	srv   *Server
	nc    net.Conn
	br    *bufio.Reader
	log   *slog.Logger
	info  AssociationInfo
	m     machine
	state atomic.Uint32 // mirror of m.state for other goroutines
	ctx   context.Context
	// cancel ends ctx (the handler's context) when the association is aborted from outside.
	cancel context.CancelFunc

	hasSlot bool // guarded by srv.mu

	artimOn  bool
	idleSet  time.Time
	inSync   bool // the read position is at a PDU boundary we can parse from
	accepted bool

	wmu          sync.Mutex
	outsideAbort atomic.Bool

	rq      *pdu.AssociateRQ
	rj      *RejectError
	ac      []byte
	ctxs    [256]*AcceptedContext
	peerMax uint32
	out     []byte

	pduLeft  uint32
	cmdBuf   []byte
	cmdCtx   byte
	cmdOpen  bool
	pending  *rxEvent
	hdr      [pdu.HeaderLen]byte
	released bool
	// abort bookkeeping for the final event
	aborted                  bool
	abortLocal               bool
	abortSource, abortReason byte
	abortErr                 error
}

func newAssociation(s *Server, c net.Conn, parent context.Context) *association {
	a := &association{srv: s, nc: c, inSync: true}
	a.ctx, a.cancel = context.WithCancel(parent)
	a.info = AssociationInfo{ID: s.newID(), RemoteAddr: c.RemoteAddr(), LocalAddr: c.LocalAddr()}
	a.m = machine{state: sta1, fx: a}
	a.state.Store(uint32(sta1))
	return a
}

func (a *association) stateNow() state { return state(a.state.Load()) }

// timedReader refreshes the idle read deadline before socket reads (lazily, at most every idle/32) unless ARTIM
// owns the deadline. A handler that stops reading for a while is not penalised: the deadline is renewed when
// reading resumes.
type timedReader struct{ a *association }

func (t timedReader) Read(p []byte) (int, error) {
	a := t.a
	if !a.artimOn {
		if idle := a.srv.idleTimeout(); idle > 0 {
			now := time.Now()
			if a.idleSet.IsZero() || now.Sub(a.idleSet) > idle/32 {
				a.setReadDeadline(now.Add(idle))
				a.idleSet = now
			}
		}
	}
	return a.nc.Read(p)
}

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
	if a.srv.ProxyProtocol {
		h, err := proxyproto.Read(a.br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				// Connected and closed without a byte: a load balancer's TCP health check.
				a.log.Debug("dicomnet: connection closed before the PROXY header")
			} else {
				a.log.Warn("dicomnet: PROXY protocol header", "err", err)
			}
			return
		}
		if h.Command == proxyproto.CommandProxy && h.Source != nil {
			a.info.RemoteAddr = h.Source
			if h.Destination != nil {
				a.info.LocalAddr = h.Destination
			}
			a.log = a.srv.logger().With("assoc", a.info.ID, "peer", addrString(a.info.RemoteAddr))
		}
	}
	for a.m.state != sta1 {
		a.step(a.nextEvent())
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// fire runs the state machine for e and keeps the bookkeeping that depends on transitions.
func (a *association) fire(e event, rx rxEvent) action {
	prev := a.m.state
	a.m.abortReason = rx.reason
	act, err := a.m.fire(e)
	a.state.Store(uint32(a.m.state))
	switch act {
	case aa3:
		a.recordAbort(false, rx.abortSource, rx.abortReason, &AbortError{Source: rx.abortSource, Reason: rx.abortReason})
	case aa4:
		if a.outsideAbort.Load() {
			a.recordAbort(true, 0, 0, errors.New("dicomnet: aborted by server shutdown"))
		} else {
			a.recordAbort(false, 2, 0, rx.err)
		}
	case aa1:
		a.recordAbort(true, 0, 0, rx.err)
	case aa7, aa8:
		a.recordAbort(true, 2, a.lastAbortReason(rx), rx.err)
	}
	if err != nil {
		// A failed write means the connection is gone: nothing more can be said to the peer.
		a.log.Debug("dicomnet: write failed", "err", err, "state", a.m.state.String())
		a.nc.Close()
		if established(a.m.state) {
			a.recordAbort(false, 2, 0, err)
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

func (a *association) lastAbortReason(rx rxEvent) byte {
	if rx.reason != 0 {
		return rx.reason
	}
	return pdu.AbortReasonUnexpectedPDU
}

func (a *association) recordAbort(local bool, src, reason byte, err error) {
	if a.aborted || !a.accepted {
		return
	}
	a.aborted, a.abortLocal, a.abortSource, a.abortReason, a.abortErr = true, local, src, reason, err
}

func (a *association) step(rx rxEvent) {
	act := a.fire(rx.ev, rx)
	switch act {
	case ae6:
		if a.m.state == sta3 { // the provider accepted the RQ; now the user decides
			a.decide()
		}
	case dt2:
		a.onPData()
	case ar2:
		// All responses have been sent: DIMSE processing is synchronous, so nothing is pending here.
		a.released = true
		a.fire(evt14, rxEvent{}) // AR-4: A-RELEASE-RP, ARTIM → Sta13
	case aa1, aa7, aa8:
		if rx.err != nil {
			a.log.Info("dicomnet: association aborted", "err", rx.err, "state", a.m.state.String())
		}
	}
}

// nextEvent returns the event stashed while streaming a dataset, or reads the next one from the connection.
func (a *association) nextEvent() rxEvent {
	if a.pending != nil {
		rx := *a.pending
		a.pending = nil
		return rx
	}
	if !a.inSync {
		// The stream position is unknown (after a protocol error): only closure or ARTIM can follow.
		_, err := a.br.Discard(1 << 30)
		for err == nil {
			_, err = a.br.Discard(1 << 30)
		}
		return a.readErrEvent(err)
	}
	return a.readEvent()
}

// readErrEvent classifies a read error: ARTIM expiry, idle timeout (a local abort) or transport closed.
func (a *association) readErrEvent(err error) rxEvent {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		if a.artimOn {
			return rxEvent{ev: evt18, err: fmt.Errorf("dicomnet: ARTIM expired: %w", err)}
		}
		return rxEvent{ev: evt15, err: fmt.Errorf("dicomnet: idle timeout: %w", err)}
	}
	if a.outsideAbort.Load() {
		return rxEvent{ev: evt17, err: errors.New("dicomnet: aborted by server")}
	}
	return rxEvent{ev: evt17, err: fmt.Errorf("dicomnet: connection closed: %w", err)}
}

// readEvent reads a PDU header and classifies it. A P-DATA-TF body is left unread in Sta6 (it is streamed);
// other bodies are read or skipped.
func (a *association) readEvent() rxEvent {
	if _, err := io.ReadFull(a.br, a.hdr[:]); err != nil {
		return a.readErrEvent(err)
	}
	h, _ := pdu.ParseHeader(a.hdr[:])
	st := a.m.state
	switch h.Type {
	case pdu.TypePDataTF:
		if st != sta6 {
			a.inSync = false
			return rxEvent{ev: evt10}
		}
		if h.Length > a.srv.maxPDU() {
			a.inSync = false
			return rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue,
				err: fmt.Errorf("dicomnet: P-DATA-TF of %d bytes exceeds our maximum %d", h.Length, a.srv.maxPDU())}
		}
		if h.Length == 0 {
			return rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue, err: errors.New("dicomnet: empty P-DATA-TF")}
		}
		a.pduLeft = h.Length
		return rxEvent{ev: evt10}
	case pdu.TypeAssociateRQ:
		body, err := pdu.ReadBody(a.br, h.Length, maxAssociatePDU)
		if err != nil {
			if errors.Is(err, pdu.ErrTooLong) {
				a.inSync = false
				return rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue, err: err}
			}
			return a.readErrEvent(err)
		}
		rq, err := pdu.DecodeAssociateRQ(body)
		if err != nil {
			return rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue, err: err}
		}
		if st == sta2 {
			a.rq = rq
		}
		return rxEvent{ev: evt6}
	case pdu.TypeAbort:
		body, err := a.readSmallBody(h.Length)
		if err != nil {
			return a.bodyErr(err)
		}
		if len(body) < 4 {
			return rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue, err: errors.New("dicomnet: short A-ABORT")}
		}
		return rxEvent{ev: evt16, abortSource: body[2], abortReason: body[3]}
	case pdu.TypeAssociateAC, pdu.TypeAssociateRJ, pdu.TypeReleaseRQ, pdu.TypeReleaseRP:
		if h.Length > maxAssociatePDU {
			a.inSync = false
		} else if _, err := a.br.Discard(int(h.Length)); err != nil {
			return a.readErrEvent(err)
		}
		return rxEvent{ev: map[pdu.Type]event{pdu.TypeAssociateAC: evt3, pdu.TypeAssociateRJ: evt4,
			pdu.TypeReleaseRQ: evt12, pdu.TypeReleaseRP: evt13}[h.Type],
			err: fmt.Errorf("dicomnet: received %s in %s", h.Type, st)}
	}
	a.inSync = false
	return rxEvent{ev: evt19, reason: pdu.AbortReasonUnrecognizedPDU, err: fmt.Errorf("dicomnet: unrecognized PDU type 0x%02x", uint8(h.Type))}
}

func (a *association) readSmallBody(n uint32) ([]byte, error) {
	return pdu.ReadBody(a.br, n, 1024)
}

func (a *association) bodyErr(err error) rxEvent {
	if errors.Is(err, pdu.ErrTooLong) {
		a.inSync = false
		return rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue, err: err}
	}
	return a.readErrEvent(err)
}

// decide is the local user's answer to an A-ASSOCIATE indication (Sta3): Evt7 accept or Evt8 reject.
func (a *association) decide() {
	s, rq := a.srv, a.rq
	a.info.CallingAE, a.info.CalledAE = trimAE(rq.CallingAE), trimAE(rq.CalledAE)
	a.info.PeerImplementationClassUID = rq.UserInformation.ImplementationClassUID
	a.info.PeerImplementationVersionName = rq.UserInformation.ImplementationVersionName
	a.info.PeerMaxPDULength = rq.UserInformation.MaxPDULength
	a.log = a.log.With("calling_ae", a.info.CallingAE, "called_ae", a.info.CalledAE)

	var rj *RejectError
	var why error // the policy's own reason, for the Event (never sent)
	switch {
	case s.inShutdown.Load():
		rj = RejectTemporaryCongestion
	case s.AETitle != "" && a.info.CalledAE != trimAE(s.AETitle):
		rj = RejectCalledAENotRecognized
	case !s.reserveSlot(a):
		rj = RejectTooManyAssociations
	case s.Accept != nil:
		if err := s.Accept(a.ctx, &a.info); err != nil {
			why = err
			if !errors.As(err, &rj) || rj == nil {
				a.log.Info("dicomnet: association policy refused", "err", err)
				rj = RejectNoReason
			}
			s.releaseSlot(a)
		}
	}
	if rj != nil {
		a.rejectBecause(rj, why, evt8)
		return
	}
	n := Negotiate(rq, NegotiationOptions{AcceptExplicitBigEndian: s.AcceptExplicitBigEndian})
	for i := range n.Accepted {
		pc := n.Accepted[i]
		a.ctxs[pc.ID] = &pc
	}
	a.peerMax = rq.UserInformation.MaxPDULength
	ac := &pdu.AssociateAC{
		ProtocolVersion: pdu.ProtocolVersion, CalledAE: a.info.CalledAE, CallingAE: a.info.CallingAE,
		ApplicationContext: dicomuid.ApplicationContext, PresentationContexts: n.Results,
		UserInformation: pdu.UserInformation{MaxPDULength: s.maxPDU(), ImplementationClassUID: s.implClassUID(),
			ImplementationVersionName: s.implVersion(), AsyncOperations: n.Async, RoleSelections: n.Roles},
	}
	b, err := pdu.Encode(ac)
	if err != nil {
		s.releaseSlot(a)
		a.log.Error("dicomnet: encode A-ASSOCIATE-AC", "err", err)
		a.reject(RejectNoReason, evt8)
		return
	}
	a.ac = b
	a.accepted = true
	a.fire(evt7, rxEvent{}) // AE-7 → Sta6
	if a.m.state == sta6 {
		a.log.Info("dicomnet: association accepted", "contexts", len(n.Results), "accepted", len(n.Accepted),
			"peer_impl", a.info.PeerImplementationClassUID, "peer_max_pdu", a.peerMax)
		s.observe(Event{Type: EventAccepted, Association: &a.info})
	}
}

func (a *association) reject(rj *RejectError, e event) { a.rejectBecause(rj, nil, e) }

// rejectBecause rejects with rj; why, the association policy's own error
// when it refused, travels in Event.Err so the audit trail can say more
// than the wire's reason code (a calling AE from outside its networks, say).
func (a *association) rejectBecause(rj *RejectError, why error, e event) {
	a.rj = rj
	a.log.Info("dicomnet: association rejected", "result", rj.Result, "source", rj.Source, "reason", rj.Reason)
	a.fire(e, rxEvent{})
	a.srv.observe(Event{Type: EventRejected, Association: &a.info, Reject: rj, Err: why})
}

// --- effects (see fsm.go) ---

func (a *association) startARTIM() {
	a.artimOn = true
	a.setReadDeadline(time.Now().Add(a.srv.artim()))
}

// setReadDeadline arms (or, with the zero time, disarms) the read timer.
// net.Conn refuses only once the connection is closed, and then the read
// it guards fails and ends the association: that failure is the one
// reported; this one is only logged.
func (a *association) setReadDeadline(t time.Time) {
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
func (a *association) connectTransport() error {
	return errors.New("dicomnet: acceptor does not connect")
}
func (a *association) sendAssociateRQ() error {
	return errors.New("dicomnet: acceptor does not send A-ASSOCIATE-RQ")
}
func (a *association) sendReleaseRQ() error {
	return errors.New("dicomnet: acceptor does not request release")
}
func (a *association) isRequestor() bool      { return false }
func (a *association) indicate(action)        {}
func (a *association) sendAssociateAC() error { return a.write(a.ac) }
func (a *association) sendPData() error       { return a.write(a.out) }

func (a *association) sendAssociateRJ() error {
	rj := a.rj
	if rj == nil {
		rj = RejectNoReason
	}
	b, _ := pdu.Encode(&pdu.AssociateRJ{Result: rj.Result, Source: rj.Source, Reason: rj.Reason})
	return a.write(b)
}

func (a *association) sendReleaseRP() error {
	b, _ := pdu.Encode(&pdu.ReleaseRP{})
	return a.write(b)
}

func (a *association) sendAbort(source, reason byte) error {
	b, _ := pdu.Encode(&pdu.Abort{Source: source, Reason: reason})
	return a.write(b)
}

// associateAcceptable is the service-provider check of AE-6.
func (a *association) associateAcceptable() bool {
	rq := a.rq
	switch {
	case rq == nil:
		a.rj = RejectNoReason
	case rq.ProtocolVersion&1 == 0:
		a.rj = RejectProtocolVersion
	case rq.ApplicationContext != dicomuid.ApplicationContext:
		a.rj = RejectApplicationContext
	default:
		return true
	}
	if rq != nil {
		a.info.CallingAE, a.info.CalledAE = trimAE(rq.CallingAE), trimAE(rq.CalledAE)
	}
	a.log.Info("dicomnet: association rejected by provider", "result", a.rj.Result, "source", a.rj.Source, "reason", a.rj.Reason)
	a.srv.observe(Event{Type: EventRejected, Association: &a.info, Reject: a.rj})
	return false
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
		return fmt.Errorf("dicomnet: write: %w", err)
	}
	return nil
}

// abortFromOutside aborts the association from another goroutine (Shutdown deadline, Close, ctx): it sends an
// A-ABORT if no write is in progress and closes the connection, which makes the association goroutine's reads
// (and a handler's dataset reads) fail.
func (a *association) abortFromOutside() {
	if !a.outsideAbort.CompareAndSwap(false, true) {
		return
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
}

// --- P-DATA and DIMSE ---

type pdvHeader struct {
	ctxID   byte
	command bool
	last    bool
	n       uint32 // fragment length
}

// readPDVHeader reads the next PDV header of the current P-DATA-TF PDU. On failure it stashes the event to
// process and returns a non-nil error.
func (a *association) readPDVHeader() (pdvHeader, error) {
	if a.pduLeft < pdu.PDVHeaderLen {
		return pdvHeader{}, a.protocolError(fmt.Errorf("dicomnet: %d bytes left in P-DATA-TF, too few for a PDV", a.pduLeft))
	}
	if _, err := io.ReadFull(a.br, a.hdr[:pdu.PDVHeaderLen]); err != nil {
		return pdvHeader{}, a.readFailed(err)
	}
	n := binary.BigEndian.Uint32(a.hdr[:])
	if n < 2 || n > a.pduLeft-4 {
		return pdvHeader{}, a.protocolError(fmt.Errorf("dicomnet: PDV length %d does not fit its P-DATA-TF (%d left)", n, a.pduLeft-4))
	}
	a.pduLeft -= 4 + n
	ctrl := a.hdr[5]
	return pdvHeader{ctxID: a.hdr[4], command: ctrl&pdu.ControlCommand != 0, last: ctrl&pdu.ControlLast != 0, n: n - 2}, nil
}

// protocolError stashes an invalid-PDU event (Evt19 → AA-8, provider abort) and returns err.
func (a *association) protocolError(err error) error {
	a.inSync = false
	a.pending = &rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue, err: err}
	return err
}

// readFailed stashes the event a failed read of the stream stands for
// (timeout, closed connection, server abort) to process next, and returns
// its error.
func (a *association) readFailed(err error) error {
	rx := a.readErrEvent(err)
	a.pending, a.inSync = &rx, false
	return rx.err
}

// onPData processes the PDVs of the P-DATA-TF whose header has just been read (DT-2).
func (a *association) onPData() {
	for a.pduLeft > 0 && a.pending == nil {
		v, err := a.readPDVHeader()
		if err != nil {
			return
		}
		if !v.command {
			_ = a.protocolError(fmt.Errorf("dicomnet: data set fragment on context %d without a command", v.ctxID))
			return
		}
		if a.cmdOpen && v.ctxID != a.cmdCtx {
			_ = a.protocolError(fmt.Errorf("dicomnet: command fragment on context %d, command started on %d", v.ctxID, a.cmdCtx))
			return
		}
		if len(a.cmdBuf)+int(v.n) > maxCommandSet {
			_ = a.protocolError(fmt.Errorf("dicomnet: command set longer than %d bytes", maxCommandSet))
			return
		}
		start := len(a.cmdBuf)
		a.cmdBuf = slices.Grow(a.cmdBuf, int(v.n))[:start+int(v.n)]
		if _, err := io.ReadFull(a.br, a.cmdBuf[start:]); err != nil {
			_ = a.readFailed(err) // stashed as the pending event
			return
		}
		a.cmdOpen, a.cmdCtx = true, v.ctxID
		if !v.last {
			continue
		}
		cmd, err := dimse.Decode(a.cmdBuf)
		a.cmdBuf, a.cmdOpen = a.cmdBuf[:0], false
		if err != nil {
			_ = a.protocolError(err)
			return
		}
		a.dispatch(v.ctxID, cmd)
	}
}

func (a *association) dispatch(ctxID byte, cmd *dimse.Command) {
	pc := a.ctxs[ctxID]
	if pc == nil {
		_ = a.protocolError(fmt.Errorf("dicomnet: command on context %d, which was not accepted", ctxID))
		return
	}
	switch cmd.CommandField {
	case dimse.CStoreRQ:
		a.cstore(pc, cmd)
	case dimse.CEchoRQ:
		if cmd.HasDataSet() {
			ds := &datasetReader{a: a, ctxID: ctxID}
			if ds.drain() != nil {
				return
			}
		}
		if a.sendCommand(ctxID, dimse.NewCEchoRSP(cmd, dimse.Status{})) == nil {
			a.srv.observe(Event{Type: EventEcho, Association: &a.info})
		}
	case dimse.CCancelRQ:
		// Nothing to cancel: C-STORE is answered synchronously.
	default:
		if cmd.HasDataSet() {
			ds := &datasetReader{a: a, ctxID: ctxID}
			if ds.drain() != nil {
				return
			}
		}
		rsp := &dimse.Command{
			Present: dimse.HasAffectedSOPClassUID | dimse.HasCommandField | dimse.HasMessageIDBeingRespondedTo |
				dimse.HasCommandDataSetType | dimse.HasStatus,
			AffectedSOPClassUID: cmd.AffectedSOPClassUID, CommandField: cmd.CommandField | 0x8000,
			MessageIDBeingRespondedTo: cmd.MessageID, CommandDataSetType: dimse.NoDataSet,
			Status: dimse.StatusUnrecognizedOperation,
		}
		a.log.Info("dicomnet: unsupported DIMSE command", "command_field", fmt.Sprintf("0x%04X", cmd.CommandField))
		_ = a.sendCommand(ctxID, rsp)
	}
}

func (a *association) cstore(pc *AcceptedContext, cmd *dimse.Command) {
	start := time.Now()
	req := &CStoreRequest{
		Association: &a.info, PresentationContextID: pc.ID, MessageID: cmd.MessageID, Priority: cmd.Priority,
		AffectedSOPClassUID: cmd.AffectedSOPClassUID, AffectedSOPInstanceUID: cmd.AffectedSOPInstanceUID,
		TransferSyntaxUID: pc.TransferSyntax, MoveOriginatorAETitle: cmd.MoveOriginatorAETitle,
		MoveOriginatorMessageID: cmd.MoveOriginatorMessageID,
	}
	ds := &datasetReader{a: a, ctxID: pc.ID, limit: a.srv.MaxObjectSize}
	var st dimse.Status
	var herr error
	switch {
	case !cmd.HasDataSet():
		st = dimse.Status{Code: dimse.StatusCannotUnderstand, Comment: "C-STORE-RQ without a data set"}
	case cmd.AffectedSOPClassUID != pc.AbstractSyntax:
		st = dimse.Status{Code: dimse.StatusSOPClassNotSupported, Comment: "SOP class differs from the presentation context"}
	case !dicomuid.ValidUID(cmd.AffectedSOPInstanceUID):
		st = dimse.Status{Code: dimse.StatusCannotUnderstand, Comment: "missing or invalid Affected SOP Instance UID"}
	default:
		st, herr = a.srv.callHandler(a.ctx, req, ds, a.log)
		ds.closed.Store(true)
		switch {
		case ds.tooLarge:
			st = dimse.Status{Code: dimse.StatusOutOfResources, Comment: "data set exceeds the maximum object size"}
			herr = ErrObjectTooLarge
		case st.IsSuccess() && !ds.done && ds.err == nil:
			st = dimse.Status{Code: dimse.StatusProcessingFailure, Comment: "data set not completely read"}
			herr = errors.New("dicomnet: handler returned success without reading the whole data set")
		}
	}
	if cmd.HasDataSet() {
		if err := ds.drain(); err != nil {
			a.log.Info("dicomnet: C-STORE incomplete", "err", err, "bytes", ds.n)
			a.srv.observe(Event{Type: EventStoreFailed, Association: &a.info, SOPClassUID: req.AffectedSOPClassUID,
				SOPInstanceUID: req.AffectedSOPInstanceUID, Bytes: ds.n, Duration: time.Since(start), Err: err})
			return
		}
	}
	if err := a.sendCommand(pc.ID, dimse.NewCStoreRSP(cmd, st)); err != nil {
		herr = err
	}
	ev := Event{Type: EventStored, Association: &a.info, Status: st.Code, SOPClassUID: req.AffectedSOPClassUID,
		SOPInstanceUID: req.AffectedSOPInstanceUID, Bytes: ds.n, Duration: time.Since(start), Err: herr}
	if st.IsFailure() {
		ev.Type = EventStoreFailed
		a.log.Info("dicomnet: C-STORE failed", "status", fmt.Sprintf("0x%04X", st.Code), "err", herr)
	} else {
		a.log.Debug("dicomnet: C-STORE", "status", fmt.Sprintf("0x%04X", st.Code), "bytes", ds.n)
	}
	a.srv.observe(ev)
}

// sendCommand sends a command set as P-DATA (DT-1), fragmented within the peer's maximum PDU length.
func (a *association) sendCommand(ctxID byte, cmd *dimse.Command) error {
	body := cmd.Encode()
	a.out = appendMessage(a.out[:0], ctxID, pdu.ControlCommand, body, a.peerMax)
	a.fire(evt9, rxEvent{})
	if a.m.state != sta6 {
		return errors.New("dicomnet: association ended while sending")
	}
	return nil
}

// appendMessage appends P-DATA-TF PDUs carrying data as one message part (command or data set), each PDU within
// peerMax (0 = unlimited) and each fragment of even length but the last.
func appendMessage(dst []byte, ctxID, control byte, data []byte, peerMax uint32) []byte {
	maxFrag := len(data)
	if peerMax != 0 {
		maxFrag = int(peerMax) - pdu.PDVHeaderLen
		maxFrag &^= 1
		if maxFrag < 2 {
			maxFrag = 2
		}
	}
	for {
		n := min(len(data), maxFrag)
		ctrl := control
		if n == len(data) {
			ctrl |= pdu.ControlLast
		}
		dst = pdu.AppendHeader(dst, pdu.TypePDataTF, uint32(n+pdu.PDVHeaderLen))
		dst = pdu.AppendPDVHeader(dst, n, ctxID, ctrl)
		dst = append(dst, data[:n]...)
		data = data[n:]
		if len(data) == 0 {
			return dst
		}
	}
}

// datasetReader streams one C-STORE data set straight from the connection's read buffer, PDV by PDV and PDU by
// PDU. It never holds more than the bufio buffer; while the handler does not read, neither do we.
type datasetReader struct {
	a        *association
	ctxID    byte
	fragLeft uint32
	last     bool
	done     bool
	err      error
	n        int64
	limit    int64 // 0 = unlimited
	tooLarge bool
	// closed is set when the handler returns: a reader leaked to another goroutine must not reach the
	// connection's (pooled, later reused) read buffer.
	closed atomic.Bool
}

// errReaderClosed is returned by a data set reader used after its handler returned.
var errReaderClosed = errors.New("dicomnet: data set reader used after ServeCStore returned")

func (d *datasetReader) Read(p []byte) (int, error) {
	if d.closed.Load() {
		return 0, errReaderClosed
	}
	if d.err != nil {
		return 0, d.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for d.fragLeft == 0 {
		if d.last {
			d.done = true
			return 0, io.EOF
		}
		if err := d.nextFragment(); err != nil {
			return 0, err
		}
	}
	if d.tooLarge {
		return 0, ErrObjectTooLarge
	}
	if d.limit > 0 && d.n+int64(min(uint32(len(p)), d.fragLeft)) > d.limit {
		d.tooLarge = true
		return 0, ErrObjectTooLarge
	}
	n, err := d.a.br.Read(p[:min(uint32(len(p)), d.fragLeft)])
	d.fragLeft -= uint32(n)
	d.n += int64(n)
	if err != nil {
		d.err = fmt.Errorf("%w: %w", ErrIncomplete, d.a.readFailed(err))
		return n, d.err
	}
	if d.fragLeft == 0 && d.last {
		d.done = true
	}
	return n, nil
}

// nextFragment moves to the next data set PDV, reading the next P-DATA-TF header when the current PDU is used up.
func (d *datasetReader) nextFragment() error {
	a := d.a
	if a.pduLeft == 0 {
		rx := a.readEvent()
		if rx.ev != evt10 || a.m.state != sta6 || a.pending != nil {
			if rx.ev == evt12 {
				// A-RELEASE-RQ in the middle of a message is not a valid release: abort.
				rx = rxEvent{ev: evt19, reason: pdu.AbortReasonUnexpectedPDU, err: errors.New("dicomnet: A-RELEASE-RQ in the middle of a data set")}
			}
			a.pending = &rx
			d.err = fmt.Errorf("%w: %w", ErrIncomplete, describe(rx))
			return d.err
		}
		a.fire(evt10, rxEvent{}) // DT-2, Sta6 → Sta6
	}
	v, err := a.readPDVHeader()
	if err != nil {
		d.err = fmt.Errorf("%w: %w", ErrIncomplete, err)
		return d.err
	}
	if v.command || v.ctxID != d.ctxID {
		err := a.protocolError(fmt.Errorf("dicomnet: unexpected PDV (context %d, command %v) inside a data set on context %d", v.ctxID, v.command, d.ctxID))
		d.err = fmt.Errorf("%w: %w", ErrIncomplete, err)
		return d.err
	}
	d.fragLeft, d.last = v.n, v.last
	return nil
}

func describe(rx rxEvent) error {
	switch {
	case rx.ev == evt16:
		return &AbortError{Source: rx.abortSource, Reason: rx.abortReason}
	case rx.err != nil:
		return rx.err
	}
	return fmt.Errorf("dicomnet: %s while receiving a data set", rx.ev)
}

// drain discards the rest of the data set. It returns an error if the association broke first.
func (d *datasetReader) drain() error {
	for d.err == nil {
		if d.fragLeft > 0 {
			n, err := d.a.br.Discard(int(d.fragLeft))
			d.fragLeft -= uint32(n)
			d.n += int64(n)
			if err != nil {
				d.err = fmt.Errorf("%w: %w", ErrIncomplete, d.a.readFailed(err))
				break
			}
			continue
		}
		if d.last {
			d.done = true
			return nil
		}
		_ = d.nextFragment()
	}
	return d.err
}
