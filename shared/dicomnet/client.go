package dicomnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// TeardownWriteTimeout bounds, under WriteTimeout when that is shorter, each write that ends an association: every
// A-ABORT, and any PDU written once the exchange under way was cut (its context ended: the A-RELEASE-RQ of a
// release begun then). A peer that stopped reading, our send buffer full, would otherwise hold the teardown for
// WriteTimeout, past the deadline that cut the exchange (the commitment function's invocation).
const TeardownWriteTimeout = time.Second

// ErrUnexpectedResponse is matched (errors.Is) by the error of an exchange the peer answered with a response that
// does not answer the request awaited (unexpectedResponse): on our association, one to another message id, to
// none, or of another command to ours; on the requestor's (Server.SendEventReport), one of another command to
// ours. The association is aborted (A-ABORT 02 06).
var ErrUnexpectedResponse = errors.New("dicomnet: unexpected DIMSE response")

// ClientConfig configures Dial.
type ClientConfig struct {
	CallingAE, CalledAE string
	// MaxPDULength is what we accept from the peer (item 51): a P-DATA-TF longer is aborted (A-ABORT 02 06, PS3.8
	// D.1); default DefaultMaxPDULength.
	MaxPDULength uint32
	// MaxSendPDULength caps the PDUs we send even if the peer accepts more (0 = DefaultMaxSendPDULength). The
	// peer's own limit always applies.
	MaxSendPDULength uint32
	// Contexts are proposed in order with ids 1, 3, 5…; nil proposes Verification only.
	Contexts []ProposedContext
	// DialTimeout bounds connecting; ResponseTimeout bounds every wait for the peer (association answer, DIMSE
	// response, release); WriteTimeout bounds every write; ARTIMTimeout bounds the wait for the peer to close
	// after an abort, a rejection or a release it asked for. Defaults: 30s, 60s, 30s, 10s; negative disables.
	DialTimeout, ResponseTimeout, WriteTimeout, ARTIMTimeout time.Duration
	ImplementationClassUID, ImplementationVersionName        string
	// Dial replaces net.Dialer (e.g. to go through a proxy or use net.Pipe).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ProxyHeader, if set, is written before the A-ASSOCIATE-RQ (e.g. a PROXY v2 header in tests).
	ProxyHeader []byte
}

// ProposedContext is one presentation context to propose.
type ProposedContext struct {
	AbstractSyntax   string
	TransferSyntaxes []string
	// Roles, when set, proposes SCP/SCU role selection (PS3.7 D.3.3.4) for the abstract syntax: the roles we,
	// the requestor, offer to take (one item per SOP class, from its first context that sets Roles). Nil
	// proposes none: we are SCU, the peer SCP.
	Roles *Roles
}

// Roles are the SCU and SCP roles of the requestor for a SOP class.
type Roles struct{ SCU, SCP bool }

// StorageContexts proposes each SOP class with each of the given transfer syntaxes in a separate context, so that
// the acceptor can accept every combination (as storescu does).
func StorageContexts(sopClasses []string, transferSyntaxes ...string) []ProposedContext {
	var out []ProposedContext
	for _, c := range sopClasses {
		for _, ts := range transferSyntaxes {
			out = append(out, ProposedContext{AbstractSyntax: c, TransferSyntaxes: []string{ts}})
		}
	}
	return out
}

// ClientAssociation is an established association as requestor. It is not safe for concurrent use: run one
// association per goroutine.
//
// It runs on the same PS3.8 state machine as the server (fsm.go), from the requestor's side: Dial fires Evt1 and
// Evt2 (AE-1 connect, AE-2 send the A-ASSOCIATE-RQ), every PDU it sends is Evt9 (DT-1), Release is Evt11 (AR-1),
// Abort and a timed-out wait are Evt15 (AA-1), and every PDU or read error it receives is classified as Evt3…Evt19
// and fired before it is acted on. In Sta13 (after an abort, a rejection or a release answered for the peer) it
// waits up to ARTIMTimeout for the peer to close.
type ClientAssociation struct {
	cfg      ClientConfig
	nc       net.Conn
	br       *bufio.Reader
	m        machine
	artimOn  bool
	lost     bool   // the read position is not at a PDU boundary (readPDU stopped inside a PDU)
	out      []byte // the PDU(s) the next sending action writes
	accepted []AcceptedContext
	peerMax  uint32
	msgID    uint16
	// answerBy is when the answer awaited now (the A-ASSOCIATE response, a DIMSE response, the A-RELEASE-RP)
	// is due: ResponseTimeout after the wait began (awaitAnswer), whatever else the peer sends meanwhile. Zero:
	// no wait begun.
	answerBy time.Time
	// interrupt is the context of the exchange under way (interruptOn), nil between exchanges; interruptMade is
	// closed once its cancellation's deadline is set (or the connection closed).
	interrupt     context.Context
	interruptMade chan struct{}
	buf           [2][]byte // double buffer for streaming data sets
	// PeerImplementationClassUID and PeerImplementationVersionName come from the A-ASSOCIATE-AC, bounded as the
	// server's AssociationInfo's are.
	PeerImplementationClassUID, PeerImplementationVersionName string

	// for AE-1
	dialCtx  context.Context
	dialAddr string
}

func (c *ClientConfig) responseTimeout() time.Duration {
	return durOr(c.ResponseTimeout, 60*time.Second)
}
func (c *ClientConfig) writeTimeout() time.Duration {
	return durOr(c.WriteTimeout, DefaultWriteTimeout)
}
func (c *ClientConfig) artim() time.Duration {
	return durOr(c.ARTIMTimeout, 10*time.Second)
}

// Dial connects to addr and negotiates an association. A refusal is returned as a *RejectError (errors.As).
func Dial(ctx context.Context, addr string, cfg ClientConfig) (*ClientAssociation, error) {
	if cfg.MaxPDULength == 0 {
		cfg.MaxPDULength = DefaultMaxPDULength
	}
	if cfg.Contexts == nil {
		cfg.Contexts = []ProposedContext{{AbstractSyntax: dicomuid.Verification, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}}}
	}
	if len(cfg.Contexts) > 128 {
		return nil, fmt.Errorf("dicomnet: dial: %d presentation contexts (at most 128)", len(cfg.Contexts))
	}
	a := &ClientAssociation{cfg: cfg, dialCtx: ctx, dialAddr: addr}
	a.m = machine{state: sta1, fx: a}
	if err := a.associate(ctx); err != nil {
		if a.nc != nil {
			a.nc.Close()
		}
		return nil, err
	}
	return a, nil
}

func (a *ClientAssociation) associate(ctx context.Context) error {
	if _, err := a.m.fire(evt1); err != nil { // AE-1: connect → Sta4
		return fmt.Errorf("dicomnet: dial: %w", err)
	}
	cfg := &a.cfg
	impl, ver := cfg.ImplementationClassUID, cfg.ImplementationVersionName
	if impl == "" {
		impl, ver = DefaultImplementationClassUID, DefaultImplementationVersionName
	}
	rq := &pdu.AssociateRQ{ProtocolVersion: pdu.ProtocolVersion, CalledAE: cfg.CalledAE, CallingAE: cfg.CallingAE,
		ApplicationContext: dicomuid.ApplicationContext,
		UserInformation: pdu.UserInformation{MaxPDULength: cfg.MaxPDULength, ImplementationClassUID: impl,
			ImplementationVersionName: ver}}
	proposedRoles := map[string]Roles{}
	for i, pc := range cfg.Contexts {
		rq.PresentationContexts = append(rq.PresentationContexts, pdu.PresentationContextRQ{ID: byte(2*i + 1),
			AbstractSyntax: pc.AbstractSyntax, TransferSyntaxes: pc.TransferSyntaxes})
		if _, done := proposedRoles[pc.AbstractSyntax]; pc.Roles != nil && !done {
			proposedRoles[pc.AbstractSyntax] = *pc.Roles
			rq.UserInformation.RoleSelections = append(rq.UserInformation.RoleSelections,
				pdu.RoleSelection{SOPClassUID: pc.AbstractSyntax, SCU: bit(pc.Roles.SCU), SCP: bit(pc.Roles.SCP)})
		}
	}
	b, err := pdu.Encode(rq)
	if err != nil {
		return fmt.Errorf("dicomnet: associate: %w", err)
	}
	a.out = append(append(a.out[:0], cfg.ProxyHeader...), b...)
	stop := a.interruptOn(ctx)
	defer stop()
	if err := a.fire(evt2); err != nil { // AE-2: send the A-ASSOCIATE-RQ → Sta5
		return fmt.Errorf("dicomnet: associate: %w", err)
	}
	a.awaitAnswer()
	p, rx := a.receive()
	act, err := a.fireRx(rx)
	switch act {
	case ae3: // A-ASSOCIATE confirmation (accept) → Sta6
		ac := p.(*pdu.AssociateAC)
		a.peerMax = ac.UserInformation.MaxPDULength
		a.PeerImplementationClassUID, a.PeerImplementationVersionName = peerImplementation(&ac.UserInformation)
		proposed := map[byte]ProposedContext{}
		for i, pc := range cfg.Contexts {
			proposed[byte(2*i+1)] = pc
		}
		for _, r := range ac.PresentationContexts {
			pc, ok := proposed[r.ID]
			if !ok {
				continue
			}
			if r.Result == pdu.ResultAcceptance {
				roles := agreedRoles(proposedRoles, ac.UserInformation.RoleSelections, pc.AbstractSyntax)
				a.accepted = append(a.accepted, AcceptedContext{ID: r.ID, AbstractSyntax: pc.AbstractSyntax, TransferSyntax: r.TransferSyntax,
					RequestorSCU: roles.SCU, RequestorSCP: roles.SCP})
			}
		}
		return nil
	case ae4: // A-ASSOCIATE confirmation (reject); the transport is closed → Sta1
		rj := p.(*pdu.AssociateRJ)
		return &RejectError{Result: rj.Result, Source: rj.Source, Reason: rj.Reason}
	}
	return fmt.Errorf("dicomnet: associate: %w", err)
}

func bit(b bool) byte {
	if b {
		return 1
	}
	return 0
}

// agreedRoles are our roles for a SOP class after role selection (PS3.7 D.3.3.4): what we proposed and the
// acceptor returned; the default (SCU alone) when we proposed nothing or it returned no item for the class.
func agreedRoles(proposed map[string]Roles, answers []pdu.RoleSelection, sopClass string) Roles {
	asked, ok := proposed[sopClass]
	if !ok {
		return Roles{SCU: true}
	}
	for _, r := range answers {
		if r.SOPClassUID == sopClass {
			return Roles{SCU: asked.SCU && r.SCU == 1, SCP: asked.SCP && r.SCP == 1}
		}
	}
	return Roles{SCU: true}
}

// fire fires a local event (a request primitive) whose action sends a PDU. When the write fails, the transport
// is gone: what the peer said last (an A-ABORT already in our receive buffer) or the closed connection is fired
// next, and the write error returned. A message its exchange's cancellation stopped before a PDU of it was written
// (cutError) leaves the transport whole: it is aborted (Evt15, AA-1), as a cancelled wait is, ARTIM waited for the
// peer to close.
func (a *ClientAssociation) fire(e event) error {
	_, err := a.m.fire(e)
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[cutError](err); ok {
		if _, aerr := a.m.fire(evt15); aerr != nil {
			err = fmt.Errorf("%w (then the A-ABORT: %w)", err, aerr)
		}
		if a.m.state == sta13 {
			a.awaitClose()
		}
		a.nc.Close()
		return err
	}
	if abort := a.peerAbort(); abort.ev != evtNone {
		a.m.fire(abort.ev)
		return fmt.Errorf("%w (sending: %w)", abort.err, err)
	}
	a.m.fire(evt17) // AA-4: A-P-ABORT indication
	a.nc.Close()
	return err
}

// cutError is a PDU of a message not written because the exchange's context ended (cause) before it was: the
// peer has whole PDUs, so the connection can still carry an A-ABORT; a bare close would leave it mid-message.
type cutError struct{ cause error }

func (e cutError) Error() string { return "sending: " + e.cause.Error() }
func (e cutError) Unwrap() error { return e.cause }

// fireRx fires a received event and finishes what it started: in Sta13 it waits for the peer to close. The
// returned error says why the association ended, when it did.
func (a *ClientAssociation) fireRx(rx rxEvent) (action, error) {
	a.m.abortReason = rx.reason
	act, err := a.m.fire(rx.ev)
	switch act {
	case ar2: // A-RELEASE indication: the peer releases; our answer is the A-RELEASE response (AR-4 → Sta13)
		if _, werr := a.m.fire(evt14); werr != nil {
			err = werr
		}
		if rx.err == nil {
			rx.err = errors.New("dicomnet: the peer released the association")
		}
	case ar8: // release collision, requestor side (Sta9): answer the peer's release (AR-9 → Sta11)
		if _, werr := a.m.fire(evt14); werr != nil {
			err = werr
		}
		if err == nil {
			return act, nil
		}
	}
	if a.m.state == sta13 {
		a.awaitClose()
	}
	if a.m.state == sta1 && a.nc != nil {
		a.nc.Close()
	}
	if err != nil && rx.ev == evt15 && rx.err != nil {
		return act, fmt.Errorf("%w (then the A-ABORT: %w)", rx.err, err) // why we aborted comes first
	}
	if err != nil {
		return act, err
	}
	return act, rx.err
}

// awaitClose is Sta13: wait, up to ARTIM, for the peer to close (Evt17, AR-5), or close when ARTIM expires
// (Evt18, AA-2). Whatever else arrives meanwhile is fired too (AA-6 ignores it; AA-7 answers an A-ASSOCIATE-RQ or
// an invalid PDU with an A-ABORT).
func (a *ClientAssociation) awaitClose() {
	for a.m.state == sta13 {
		_, rx := a.receive()
		a.m.abortReason = rx.reason
		a.m.fire(rx.ev)
	}
}

// awaitAnswer begins a wait for the peer's answer: every PDU received until it comes shares ResponseTimeout
// (answerBy), so that a peer sending what is not the answer (requests of its own, P-DATA while we
// release, an answer trickled across PDUs) cannot hold the wait past it.
func (a *ClientAssociation) awaitAnswer() {
	a.answerBy = time.Time{}
	if rt := a.cfg.responseTimeout(); rt > 0 {
		a.answerBy = time.Now().Add(rt)
	}
}

// receive reads the next PDU and classifies it, or the read error, as an event: under ARTIM in Sta13, else by
// the answer's deadline (awaitAnswer).
func (a *ClientAssociation) receive() (pdu.PDU, rxEvent) {
	if !a.artimOn {
		// No answer's deadline (ResponseTimeout disabled): none, clearing what a cancellation in an exchange
		// before set (now), which else failed every later read.
		if err := a.nc.SetReadDeadline(a.answerBy); err != nil {
			return nil, rxEvent{ev: evt17, err: fmt.Errorf("dicomnet: %w", err)}
		}
		// Looked at once the deadline is set: ended before, interruptOn's deadline was undone by ours (a cancelled
		// exchange waited out the whole response timeout); ended after, interruptOn's comes next.
		if a.interrupted() != nil {
			if err := a.nc.SetReadDeadline(time.Now()); err != nil {
				return nil, rxEvent{ev: evt17, err: fmt.Errorf("dicomnet: %w", err)}
			}
		}
	}
	var p pdu.PDU
	var err error
	if a.lost {
		err = discardAll(a.br) // only the close or ARTIM can follow
	} else {
		p, err = a.readPDU()
	}
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, pdu.ErrUnknownType):
			return nil, rxEvent{ev: evt19, reason: pdu.AbortReasonUnrecognizedPDU, err: fmt.Errorf("dicomnet: %w", err)}
		case errors.Is(err, pdu.ErrTooLong), errors.Is(err, pdu.ErrMalformed):
			return nil, rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue, err: fmt.Errorf("dicomnet: %w", err)}
		case errors.As(err, &ne) && ne.Timeout() && a.artimOn:
			return nil, rxEvent{ev: evt18}
		case errors.As(err, &ne) && ne.Timeout() && a.interrupted() != nil:
			return nil, rxEvent{ev: evt15, err: fmt.Errorf("dicomnet: waiting for the peer: %w", a.interrupted())}
		case errors.As(err, &ne) && ne.Timeout():
			return nil, rxEvent{ev: evt15, err: fmt.Errorf("dicomnet: no answer from the peer within %v: %w", a.cfg.responseTimeout(), err)}
		}
		return nil, rxEvent{ev: evt17, err: fmt.Errorf("dicomnet: connection closed: %w", err)}
	}
	rx := rxEvent{ev: receivedAs[p.Type()], err: fmt.Errorf("dicomnet: unexpected %s in %s", p.Type(), a.m.state)}
	if ab, ok := p.(*pdu.Abort); ok {
		rx = rxEvent{ev: evt16, abortSource: ab.Source, abortReason: ab.Reason, err: &AbortError{Source: ab.Source, Reason: ab.Reason}}
	}
	return p, rx
}

// readPDU reads one whole PDU: a P-DATA-TF within the Maximum Length Received we advertised (cfg.MaxPDULength;
// pdataTooLong, the server's rule too), any other within MaxAssociatePDULength. When it stops inside a PDU (a read
// error after the header's first byte, a body refused or cut short), the read position is lost with it.
func (a *ClientAssociation) readPDU() (pdu.PDU, error) {
	var hb [pdu.HeaderLen]byte
	if n, err := io.ReadFull(a.br, hb[:]); err != nil {
		a.lost = n > 0
		return nil, fmt.Errorf("read PDU header: %w", err)
	}
	h, _ := pdu.ParseHeader(hb[:])
	limit := uint32(MaxAssociatePDULength)
	var err error
	switch {
	case !h.Type.Known():
		err = fmt.Errorf("PDU type 0x%02x: %w", uint8(h.Type), pdu.ErrUnknownType)
	case h.Type == pdu.TypePDataTF:
		limit, err = a.cfg.MaxPDULength, pdataTooLong(h.Length, a.cfg.MaxPDULength)
	}
	if err != nil {
		a.lost = true
		return nil, err
	}
	body, err := pdu.ReadBody(a.br, h.Length, limit)
	if err != nil {
		a.lost = true
		return nil, err
	}
	return pdu.Decode(h.Type, body)
}

// PeerMaxPDULength is the peer's maximum PDU length (0 = unlimited).
func (a *ClientAssociation) PeerMaxPDULength() uint32 { return a.peerMax }

// interruptOn makes a blocked read or write return once ctx ends; the
// returned function stops that. A deadline that cannot be set means the
// connection is closed already, which interrupts as well. A read deadline
// set afterwards (receive) keeps to it: ctx is looked at once it is set.
// stop returns once the interruption has either been called off or been
// made: a cancellation landing as the exchange ends cannot set its deadline
// later, in the next exchange's wait.
func (a *ClientAssociation) interruptOn(ctx context.Context) (stop func()) {
	made := make(chan struct{})
	a.interrupt, a.interruptMade = ctx, made
	after := context.AfterFunc(ctx, func() {
		defer close(made)
		if err := a.nc.SetDeadline(time.Now()); err != nil {
			a.nc.Close()
		}
	})
	return func() {
		a.interrupt = nil
		if !after() {
			<-made
		}
	}
}

// interrupted is why the exchange under way was interrupted (its context's cause), nil if it was not. It returns
// the cause once the interruption is made (interruptOn's deadline set, by another goroutine), so that what the
// caller does next, a deadline set or the A-ABORT written, comes after it: landing later, that deadline (now)
// failed the A-ABORT's write, and the association ended in a bare close.
func (a *ClientAssociation) interrupted() error {
	if a.interrupt == nil || a.interrupt.Err() == nil {
		return nil
	}
	<-a.interruptMade // ctx is done and stop not called: the AfterFunc runs, or has run
	return context.Cause(a.interrupt)
}

// peerAbort looks, briefly, for an A-ABORT the peer sent before a write failed, to report why.
func (a *ClientAssociation) peerAbort() rxEvent {
	if err := a.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		return rxEvent{} // closed: nothing more to read, the write error stands
	}
	for !a.lost {
		p, err := a.readPDU()
		if err != nil {
			return rxEvent{}
		}
		if ab, ok := p.(*pdu.Abort); ok {
			return rxEvent{ev: evt16, abortSource: ab.Source, abortReason: ab.Reason, err: &AbortError{Source: ab.Source, Reason: ab.Reason}}
		}
	}
	return rxEvent{}
}

// Abort sends an A-ABORT (Evt15, AA-1), waits up to ARTIMTimeout for the peer to close and closes the connection.
func (a *ClientAssociation) Abort() error {
	if a.m.state == sta1 {
		return nil
	}
	err := a.fire(evt15)
	if a.m.state == sta13 {
		a.awaitClose()
	}
	a.nc.Close()
	if err != nil {
		return fmt.Errorf("dicomnet: abort: %w", err)
	}
	return nil
}

// Release performs an orderly release (Evt11, AR-1: A-RELEASE-RQ; then the A-RELEASE-RP, AR-3) and closes the
// connection. P-DATA arriving meanwhile is ignored (AR-6).
func (a *ClientAssociation) Release(ctx context.Context) error {
	if a.m.state != sta6 {
		return errors.New("dicomnet: release: association closed")
	}
	defer a.nc.Close()
	stop := a.interruptOn(ctx)
	defer stop()
	if err := a.fire(evt11); err != nil {
		return fmt.Errorf("dicomnet: release: %w", err)
	}
	a.awaitAnswer()
	for {
		_, rx := a.receive()
		act, err := a.fireRx(rx)
		switch act {
		case ar3: // A-RELEASE confirmation
			return nil
		case ar6, ar8: // P-DATA while releasing; a release collision answered
			continue
		}
		return fmt.Errorf("dicomnet: release: %w", err)
	}
}

func (a *ClientAssociation) contextFor(abstract, ts string) (AcceptedContext, bool) {
	for _, pc := range a.accepted {
		if pc.AbstractSyntax == abstract && (ts == "" || pc.TransferSyntax == ts) {
			return pc, true
		}
	}
	return AcceptedContext{}, false
}

func (a *ClientAssociation) nextMessageID() uint16 {
	a.msgID++
	if a.msgID == 0 {
		a.msgID = 1
	}
	return a.msgID
}

// maxSend is the largest PDU body we send.
func (a *ClientAssociation) maxSend() uint32 { return maxSendPDU(a.peerMax, a.cfg.MaxSendPDULength) }

func (a *ClientAssociation) sendCommand(ctxID byte, cmd *dimse.Command) error {
	a.out = appendMessage(a.out[:0], ctxID, pdu.ControlCommand, cmd.Encode(), a.maxSend())
	return a.fire(evt9) // DT-1
}

// Echo sends a C-ECHO-RQ and waits for the response; a non-success status is returned as dimse.Status.
func (a *ClientAssociation) Echo(ctx context.Context) error {
	pc, ok := a.contextFor(dicomuid.Verification, "")
	if !ok {
		return errors.New("dicomnet: echo: Verification was not accepted")
	}
	if a.m.state != sta6 {
		return errors.New("dicomnet: echo: association closed")
	}
	stop := a.interruptOn(ctx)
	defer stop()
	rq := dimse.NewCEchoRQ(a.nextMessageID())
	if err := a.sendCommand(pc.ID, rq); err != nil {
		return fmt.Errorf("dicomnet: echo: %w", err)
	}
	rsp, err := a.readResponse(rq)
	if err != nil {
		return fmt.Errorf("dicomnet: echo: %w", err)
	}
	if st := (dimse.Status{Code: rsp.Status, Comment: rsp.ErrorComment}); !st.IsSuccess() {
		return st
	}
	return nil
}

// SendEventReport sends an N-EVENT-REPORT-RQ on a context for rq.SOPClassUID on which we hold the SCP role
// (proposed with Roles{SCP: true} and accepted), and waits for the response. The returned status is the peer's;
// err is non-nil only when the exchange itself failed.
func (a *ClientAssociation) SendEventReport(ctx context.Context, rq EventReport) (dimse.Status, error) {
	var pc *AcceptedContext
	for i := range a.accepted {
		if a.accepted[i].AbstractSyntax == rq.SOPClassUID && a.accepted[i].RequestorSCP {
			pc = &a.accepted[i]
			break
		}
	}
	if pc == nil {
		return dimse.Status{}, fmt.Errorf("dicomnet: event report: %w", ErrRoleNotHeld)
	}
	ds, err := rq.DataSet(pc.TransferSyntax)
	if err != nil {
		return dimse.Status{}, fmt.Errorf("dicomnet: event report: %w", err)
	}
	cmd := dimse.NewNEventReportRQ(a.nextMessageID(), rq.SOPClassUID, rq.SOPInstanceUID, rq.EventTypeID)
	return a.request(ctx, "event report", pc.ID, cmd, ds)
}

// Action sends an N-ACTION-RQ with its Action Information data set on a context for sopClassUID and waits for
// the response. The returned status is the peer's; err is non-nil only when the exchange itself failed.
func (a *ClientAssociation) Action(ctx context.Context, sopClassUID, sopInstanceUID string, actionTypeID uint16, actionInformation []byte) (dimse.Status, error) {
	pc, ok := a.contextFor(sopClassUID, "")
	if !ok {
		return dimse.Status{}, fmt.Errorf("dicomnet: action: no accepted presentation context for %s", sopClassUID)
	}
	return a.request(ctx, "action", pc.ID, dimse.NewNActionRQ(a.nextMessageID(), sopClassUID, sopInstanceUID, actionTypeID), actionInformation)
}

// request sends a command and its data set as one message and waits for the response.
func (a *ClientAssociation) request(ctx context.Context, what string, ctxID byte, cmd *dimse.Command, ds []byte) (dimse.Status, error) {
	if a.m.state != sta6 {
		return dimse.Status{}, fmt.Errorf("dicomnet: %s: association closed", what)
	}
	stop := a.interruptOn(ctx)
	defer stop()
	a.out = appendMessage(a.out[:0], ctxID, pdu.ControlCommand, cmd.Encode(), a.maxSend())
	a.out = appendMessage(a.out, ctxID, 0, ds, a.maxSend())
	if err := a.fire(evt9); err != nil { // DT-1
		return dimse.Status{}, fmt.Errorf("dicomnet: %s: %w", what, err)
	}
	rsp, err := a.readResponse(cmd)
	if err != nil {
		return dimse.Status{}, fmt.Errorf("dicomnet: %s: %w", what, err)
	}
	return dimse.Status{Code: rsp.Status, Comment: rsp.ErrorComment}, nil
}

// readResponse reads P-DATA (Evt10, DT-2) until a complete command set answering rq arrives, within one
// ResponseTimeout in all (awaitAnswer). Any other PDU is fired on the state machine and ends the exchange. So does
// a response that is not rq's (unexpectedResponse): one to another message id, or naming none, answers nothing we
// have outstanding, since we run one operation at a time (no asynchronous operations window negotiated, PS3.7
// D.3.3.3; a response's Message ID Being Responded To is its request's Message ID, PS3.7 9.3, 10.3), and one of
// another command to rq's message id (a C-STORE-RSP to an N-EVENT-REPORT-RQ), taken for rq's, passed for its
// outcome. A request of the peer's is skipped.
func (a *ClientAssociation) readResponse(rq *dimse.Command) (*dimse.Command, error) {
	a.awaitAnswer()
	var cmd []byte
	for {
		p, rx := a.receive()
		if act, err := a.fireRx(rx); act != dt2 {
			if err == nil { // an ending that gives no reason is no answer all the same
				err = errors.New("dicomnet: association ended before the response")
			}
			return nil, err
		}
		for _, v := range p.(*pdu.PDataTF).PDVs {
			if !v.IsCommand() {
				continue // a data set in a response: not used by C-ECHO/C-STORE
			}
			cmd = append(cmd, v.Data...)
			if !v.IsLast() {
				continue
			}
			c, err := dimse.Decode(cmd)
			if err != nil {
				_, aerr := a.fireRx(rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue, err: fmt.Errorf("dicomnet: %w", err)})
				return nil, aerr
			}
			cmd = cmd[:0]
			if !dimse.IsResponse(c.CommandField) {
				continue // a request of the peer's: not ours to take
			}
			if why := unexpectedResponse(rq, c); why != "" {
				_, aerr := a.fireRx(rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue,
					err: fmt.Errorf("dicomnet: %s: %s: %w", a, why, ErrUnexpectedResponse)})
				return nil, aerr
			}
			return c, nil
		}
	}
}

// unexpectedResponse says why the response rsp does not answer the request rq, or "" when it does: it names
// rq's message id (Message ID Being Responded To) and is of rq's command. The one rule of the client's wait
// (readResponse) and of the server's requests on the requestor's association (answered).
func unexpectedResponse(rq, rsp *dimse.Command) string {
	switch {
	case !rsp.Has(dimse.HasMessageIDBeingRespondedTo):
		return fmt.Sprintf("a response naming no message (no Message ID Being Responded To) while awaiting the response to message %d", rq.MessageID)
	case rsp.MessageIDBeingRespondedTo != rq.MessageID:
		return fmt.Sprintf("a response to message %d while awaiting the response to message %d", rsp.MessageIDBeingRespondedTo, rq.MessageID)
	case rsp.CommandField != dimse.ResponseField(rq.CommandField):
		return fmt.Sprintf("response of command 0x%04x to message %d, want 0x%04x", rsp.CommandField, rq.MessageID, dimse.ResponseField(rq.CommandField))
	}
	return ""
}

// String names the association in errors: "association CALLING with CALLED at host:port" (AE titles and the
// address dialled; no UID).
func (a *ClientAssociation) String() string {
	return fmt.Sprintf("association %s with %s at %s", a.cfg.CallingAE, a.cfg.CalledAE, a.dialAddr)
}

// Store sends a C-STORE-RQ and streams dataset (the data set bytes, without the Part 10 preamble and file meta,
// encoded in transferSyntaxUID) in fragments within the peer's maximum PDU length, then waits for the response.
// It uses an accepted context for (sopClassUID, transferSyntaxUID); an empty transferSyntaxUID takes any. The
// returned status is the peer's; err is non-nil only when the exchange itself failed. A data set of odd length
// (e.g. an unpadded deflated stream) is padded with one NUL byte.
func (a *ClientAssociation) Store(ctx context.Context, sopClassUID, sopInstanceUID, transferSyntaxUID string, dataset io.Reader) (dimse.Status, error) {
	pc, ok := a.contextFor(sopClassUID, transferSyntaxUID)
	if !ok {
		return dimse.Status{}, fmt.Errorf("dicomnet: store: no accepted presentation context for %s in %s", sopClassUID, transferSyntaxUID)
	}
	if a.m.state != sta6 {
		return dimse.Status{}, errors.New("dicomnet: store: association closed")
	}
	stop := a.interruptOn(ctx)
	defer stop()
	rq := dimse.NewCStoreRQ(a.nextMessageID(), sopClassUID, sopInstanceUID, dimse.PriorityMedium)
	if err := a.sendCommand(pc.ID, rq); err != nil {
		return dimse.Status{}, fmt.Errorf("dicomnet: store: %w", err)
	}
	if err := a.sendDataSet(pc.ID, dataset); err != nil {
		if a.m.state == sta6 {
			// The data set could not be read: the message cannot be finished, so the association cannot go on.
			err = errors.Join(err, a.Abort())
		}
		return dimse.Status{}, fmt.Errorf("dicomnet: store: %w", err)
	}
	rsp, err := a.readResponse(rq)
	if err != nil {
		return dimse.Status{}, fmt.Errorf("dicomnet: store: %w", err)
	}
	return dimse.Status{Code: rsp.Status, Comment: rsp.ErrorComment}, nil
}

// sendDataSet streams r as data set PDVs, one PDV per PDU. It reads one fragment ahead so that it knows which
// fragment is the last.
func (a *ClientAssociation) sendDataSet(ctxID byte, r io.Reader) error {
	const hdr = pdu.HeaderLen + pdu.PDVHeaderLen
	frag := int(a.maxSend()-pdu.PDVHeaderLen) &^ 1
	for i := range a.buf {
		if cap(a.buf[i]) < hdr+frag {
			a.buf[i] = make([]byte, hdr+frag)
		}
		a.buf[i] = a.buf[i][:hdr+frag]
	}
	fill := func(b []byte) (int, error) {
		n, err := io.ReadFull(r, b[hdr:])
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			err = nil
		}
		return n, err
	}
	cur, next := a.buf[0], a.buf[1]
	n, err := fill(cur)
	if err != nil {
		return fmt.Errorf("read data set: %w", err)
	}
	for {
		m := 0
		if n == frag {
			if m, err = fill(next); err != nil {
				return fmt.Errorf("read data set: %w", err)
			}
		}
		last := m == 0
		ctrl := byte(0)
		if last {
			ctrl = pdu.ControlLast
			if n%2 == 1 {
				// PS3.5 requires even-length data sets (a deflated stream is padded with one NUL, A.5) and DCMTK
				// rejects odd fragments: pad. n < frag here, since frag is even, so the buffer has room.
				cur[hdr+n] = 0
				n++
			}
		}
		b := pdu.AppendHeader(cur[:0], pdu.TypePDataTF, uint32(n+pdu.PDVHeaderLen))
		pdu.AppendPDVHeader(b, n, ctxID, ctrl)
		a.out = cur[:hdr+n]
		if err := a.fire(evt9); err != nil { // DT-1
			return err
		}
		if last {
			return nil
		}
		cur, next, n = next, cur, m
	}
}

// --- effects (see fsm.go): the requestor's side ---

func (a *ClientAssociation) connectTransport() error {
	dial := a.cfg.Dial
	if dial == nil {
		d := &net.Dialer{Timeout: durOr(a.cfg.DialTimeout, 30*time.Second)}
		dial = d.DialContext
	}
	nc, err := dial(a.dialCtx, "tcp", a.dialAddr)
	if err != nil {
		return err
	}
	a.nc, a.br = nc, bufio.NewReaderSize(nc, readBufferSize)
	a.dialCtx = nil
	return nil
}

func (a *ClientAssociation) write(b []byte) error { return a.writeOut(b, false, false) }

// writeOut writes b within the write timeout (none when it is disabled: the deadline is cleared, else one a
// cancellation set in an exchange before, now, stayed on the connection and failed every later write). A message
// of the exchange under way (data) stops at its cancellation too: looked at once the write deadline is set, which
// replaces interruptOn's (else a cancellation landing between two writes was lost, and the data set sent on), it
// returns a cutError, nothing written; a write that interruptOn's deadline ended says so. Other PDUs (an A-ABORT,
// the A-RELEASE-RQ) are sent whatever the context: they end the association, within TeardownWriteTimeout when
// they are an A-ABORT (teardown) or the exchange was cut.
func (a *ClientAssociation) writeOut(b []byte, data, teardown bool) error {
	wt := a.cfg.writeTimeout()
	if !data && (teardown || a.interrupted() != nil) && (wt <= 0 || wt > TeardownWriteTimeout) {
		wt = TeardownWriteTimeout
	}
	var deadline time.Time
	if wt > 0 {
		deadline = time.Now().Add(wt)
	}
	if err := a.nc.SetWriteDeadline(deadline); err != nil {
		return err
	}
	if cause := a.interrupted(); data && cause != nil {
		return cutError{cause}
	}
	_, err := a.nc.Write(b)
	switch cause := a.interrupted(); {
	case err == nil || !isTimeout(err):
	case data && cause != nil:
		err = fmt.Errorf("sending: %w", cause)
	case wt > 0:
		err = expired("write deadline", wt, err)
	}
	return err
}

func (a *ClientAssociation) sendAssociateRQ() error { return a.write(a.out) }
func (a *ClientAssociation) sendPData() error       { return a.writeOut(a.out, true, false) }

func (a *ClientAssociation) sendReleaseRQ() error { return sendPDU(a.write, &pdu.ReleaseRQ{}) }

func (a *ClientAssociation) sendReleaseRP() error { return sendPDU(a.write, &pdu.ReleaseRP{}) }

func (a *ClientAssociation) sendAbort(source, reason byte) error {
	return sendPDU(func(b []byte) error { return a.writeOut(b, false, true) }, &pdu.Abort{Source: source, Reason: reason})
}

// The requestor never answers an association request: Evt6 is AA-8 or AA-7 in every state it can be in.
func (a *ClientAssociation) sendAssociateAC() error {
	return errors.New("dicomnet: requestor does not send A-ASSOCIATE-AC")
}
func (a *ClientAssociation) sendAssociateRJ() error {
	return errors.New("dicomnet: requestor does not send A-ASSOCIATE-RJ")
}
func (a *ClientAssociation) associateAcceptable() bool { return false }
func (a *ClientAssociation) isRequestor() bool         { return true }

func (a *ClientAssociation) startARTIM() {
	a.artimOn = true
	t := a.cfg.artim()
	if t == 0 {
		a.nc.Close() // no wait for the peer: the read in Sta13 fails at once (Evt17)
		return
	}
	if err := a.nc.SetReadDeadline(time.Now().Add(t)); err != nil {
		a.nc.Close() // the connection is closed already: so is the wait
	}
}

func (a *ClientAssociation) stopARTIM() { a.artimOn = false }

func (a *ClientAssociation) closeTransport() {
	if a.nc != nil {
		a.nc.Close()
	}
}
