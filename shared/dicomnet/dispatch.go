package dicomnet

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// This file is DIMSE on an established association: command sets reassembled from P-DATA, requests dispatched
// through the service table, responses sent back as P-DATA (DT-1).
//
// Messages are processed one at a time on the association's goroutine: a request is answered before the next PDU
// is read, so nothing is outstanding when the peer asks to release.

// role is a DIMSE service role on a presentation context.
type role uint8

const (
	roleSCU role = iota + 1
	roleSCP
	// roleAny: either role, or none kept (a C-CANCEL, which has no
	// response to refuse it with, PS3.7 9.3.2.3).
	roleAny
)

// service is what the acceptor does with one kind of DIMSE request. Adding a service is adding its request's
// command field to services: the role the requestor must hold on the
// presentation context to invoke it (negotiated by SCP/SCU role selection, SCU by default) and the function that
// answers it. The function consumes the request's data set (dataset.go), answers with sendCommand and returns the
// event that interrupted it, if any.
type service struct {
	invoker role
	serve   func(a *association, pc *AcceptedContext, cmd *dimse.Command) rxEvent
}

var services = map[uint16]service{
	dimse.CStoreRQ:  {roleSCU, (*association).cstore},
	dimse.CEchoRQ:   {roleSCU, (*association).cecho},
	dimse.CCancelRQ: {roleAny, (*association).ccancel},
	dimse.NActionRQ: {roleSCU, (*association).naction},
}

// commandAssembly is a command set being reassembled from its fragments.
type commandAssembly struct {
	buf  []byte
	ctx  byte
	open bool
}

// onPData processes the PDVs of the P-DATA-TF whose header has just been read (DT-2). It returns the event that
// interrupted it, or the zero rxEvent once the PDU is consumed.
func (a *association) onPData() rxEvent {
	c := &a.cmd
	for a.reader.pduLeft > 0 {
		v, rx := a.readPDVHeader()
		if rx.ev != evtNone {
			return rx
		}
		if !v.command {
			return a.protocolError(fmt.Errorf("dicomnet: data set fragment on context %d without a command", v.ctxID))
		}
		if c.open && v.ctxID != c.ctx {
			return a.protocolError(fmt.Errorf("dicomnet: command fragment on context %d, command started on %d", v.ctxID, c.ctx))
		}
		if len(c.buf)+int(v.n) > maxCommandSet {
			return a.protocolError(fmt.Errorf("dicomnet: command set longer than %d bytes", maxCommandSet))
		}
		start := len(c.buf)
		c.buf = slices.Grow(c.buf, int(v.n))[:start+int(v.n)]
		if _, err := io.ReadFull(a.br, c.buf[start:]); err != nil {
			return a.readFailed(err)
		}
		c.open, c.ctx = true, v.ctxID
		if !v.last {
			continue
		}
		cmd, err := dimse.Decode(c.buf)
		c.buf, c.open = c.buf[:0], false
		if err != nil {
			return a.protocolError(err)
		}
		if rx := a.dispatch(v.ctxID, cmd); rx.ev != evtNone {
			return rx
		}
	}
	return rxEvent{}
}

// dispatch runs the service for a complete command set received on context ctxID.
func (a *association) dispatch(ctxID byte, cmd *dimse.Command) rxEvent {
	pc := a.ctxs[ctxID]
	if pc == nil {
		return a.protocolError(fmt.Errorf("dicomnet: command on context %d, which was not accepted", ctxID))
	}
	if dimse.IsResponse(cmd.CommandField) {
		return a.onResponse(pc, cmd)
	}
	svc, ok := services[cmd.CommandField]
	// Negotiate accepts no context on which the requestor is left without the SCU role, so this refuses only a
	// service whose invoker is a role never granted (the requestor's SCP role).
	if ok && !pc.grants(svc.invoker) {
		a.log.Info("dicomnet: DIMSE request in a role not negotiated", "message_id", cmd.MessageID, "command_field", fmt.Sprintf("0x%04X", cmd.CommandField), "context", ctxID)
		ok = false
	}
	if !ok {
		return a.unrecognized(pc, cmd)
	}
	return svc.serve(a, pc, cmd)
}

// grants reports whether the requestor may invoke operations in role r on the context.
func (pc *AcceptedContext) grants(r role) bool {
	switch r {
	case roleSCU:
		return pc.RequestorSCU
	case roleSCP:
		return pc.RequestorSCP
	case roleAny:
		return true
	}
	return false
}

// onResponse handles a DIMSE response: it is handed to the request of ours it answers (report.go), its data set
// (an Event Reply, say) discarded. One that names no request of ours is logged and dropped; one of another command
// to a request of ours (answered) is an invalid PDU (A-ABORT 02 06), the request failed.
func (a *association) onResponse(pc *AcceptedContext, cmd *dimse.Command) rxEvent {
	if rx := a.discardDataSet(pc, cmd); rx.ev != evtNone {
		return rx
	}
	ours, err := a.answered(cmd)
	if err != nil {
		return a.protocolError(err)
	}
	if !ours {
		a.log.Info("dicomnet: DIMSE response to no request of ours", "message_id_being_responded_to", cmd.MessageIDBeingRespondedTo, "command_field", fmt.Sprintf("0x%04X", cmd.CommandField))
	}
	return rxEvent{}
}

// unrecognized answers a request we do not provide with 0211 (unrecognized operation).
func (a *association) unrecognized(pc *AcceptedContext, cmd *dimse.Command) rxEvent {
	if rx := a.discardDataSet(pc, cmd); rx.ev != evtNone {
		return rx
	}
	a.log.Info("dicomnet: unsupported DIMSE command", "message_id", cmd.MessageID, "command_field", fmt.Sprintf("0x%04X", cmd.CommandField))
	return a.sendCommand(pc.ID, dimse.NewUnrecognizedRSP(cmd))
}

// discardDataSet reads and drops the data set that follows cmd, if it announces one.
func (a *association) discardDataSet(pc *AcceptedContext, cmd *dimse.Command) rxEvent {
	if !cmd.HasDataSet() {
		return rxEvent{}
	}
	ds := a.newDataSet(pc.ID, 0)
	ds.drain()
	return ds.end
}

// cecho answers C-ECHO on the Verification context; on another (a storage
// context, say) it is refused 0122, as a C-STORE on the Verification
// context is: a request's SOP class is its context's abstract syntax.
func (a *association) cecho(pc *AcceptedContext, cmd *dimse.Command) rxEvent {
	if rx := a.discardDataSet(pc, cmd); rx.ev != evtNone {
		return rx
	}
	var st dimse.Status
	if pc.AbstractSyntax != dicomuid.Verification {
		st = dimse.Status{Code: dimse.StatusSOPClassNotSupported}
	}
	rx := a.sendCommand(pc.ID, dimse.NewCEchoRSP(cmd, st))
	if rx.ev == evtNone && st.Code == 0 {
		a.srv.observe(Event{Type: EventEcho, Association: &a.info})
	}
	return rx
}

// ccancel has nothing to cancel: every request is answered before the next one is read.
func (a *association) ccancel(pc *AcceptedContext, cmd *dimse.Command) rxEvent {
	return a.discardDataSet(pc, cmd)
}

func (a *association) cstore(pc *AcceptedContext, cmd *dimse.Command) rxEvent {
	start := time.Now()
	req := &CStoreRequest{
		Association: &a.info, PresentationContextID: pc.ID, MessageID: cmd.MessageID, Priority: cmd.Priority,
		AffectedSOPClassUID: cmd.AffectedSOPClassUID, AffectedSOPInstanceUID: cmd.AffectedSOPInstanceUID,
		TransferSyntaxUID: pc.TransferSyntax, MoveOriginatorAETitle: cmd.MoveOriginatorAETitle,
		MoveOriginatorMessageID: cmd.MoveOriginatorMessageID,
	}
	ds := a.newDataSet(pc.ID, a.srv.MaxObjectSize)
	var st dimse.Status
	var herr error
	switch {
	case !cmd.HasDataSet():
		st = dimse.Status{Code: dimse.StatusCannotUnderstand, Comment: "C-STORE-RQ without a data set"}
	case cmd.AffectedSOPClassUID == "":
		st = dimse.Status{Code: dimse.StatusCannotUnderstand, Comment: "missing Affected SOP Class UID"}
	case cmd.AffectedSOPClassUID != pc.AbstractSyntax:
		st = dimse.Status{Code: dimse.StatusSOPClassNotSupported, Comment: "SOP class differs from the presentation context"}
	case !dicomuid.IsStorageSOPClass(pc.AbstractSyntax):
		// The Verification or Storage Commitment context: C-STORE is no operation of theirs (PS3.4 B).
		st = dimse.Status{Code: dimse.StatusSOPClassNotSupported, Comment: "not a storage SOP class"}
	case !dicomuid.ValidUID(cmd.AffectedSOPInstanceUID):
		st = dimse.Status{Code: dimse.StatusCannotUnderstand, Comment: "missing or invalid Affected SOP Instance UID"}
	default:
		st, herr = a.srv.callHandler(a.ctx, req, ds, a.log.With("message_id", cmd.MessageID))
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
	// Refused before the data set broke off (before any handler, or by it): a *refusedError, which a cut short's
	// error names after the reader's (brokenOff), as an N-ACTION's, so that the audit record says both.
	why := a.refusal(st, herr, ds)
	if herr == nil && st.IsFailure() {
		// Refused before any handler: the status says why, for the log
		// line and the audit record's reason (they said nothing of it).
		herr = st
	}
	if cmd.HasDataSet() {
		if err := ds.drain(); err != nil {
			cut := brokenOff(err, why)
			a.log.Info("dicomnet: C-STORE incomplete", "message_id", cmd.MessageID, "err", cut, "bytes", ds.n)
			a.srv.observe(Event{Type: EventStoreFailed, Association: &a.info, SOPClassUID: req.AffectedSOPClassUID,
				SOPInstanceUID: req.AffectedSOPInstanceUID, Bytes: ds.n, Duration: time.Since(start), Err: cut})
			return ds.end
		}
	}
	ev := Event{Type: EventStored, Association: &a.info, Status: st.Code, SOPClassUID: req.AffectedSOPClassUID,
		SOPInstanceUID: req.AffectedSOPInstanceUID, Bytes: ds.n, Duration: time.Since(start), Err: herr}
	if st.IsFailure() {
		ev.Type = EventStoreFailed
	}
	// A response whose write fails ends the association inside sendCommand: ended() reports this event first,
	// so that the association's end comes after what it stored (the audit writer counts its instances until then).
	a.answering = &ev
	rx := a.sendCommand(pc.ID, dimse.NewCStoreRSP(cmd, st))
	a.reportAnswered(rx.err)
	if st.IsFailure() {
		a.log.Info("dicomnet: C-STORE failed", "message_id", cmd.MessageID, "status", fmt.Sprintf("0x%04X", st.Code), "err", ev.Err)
	} else {
		a.log.Debug("dicomnet: C-STORE", "message_id", cmd.MessageID, "status", fmt.Sprintf("0x%04X", st.Code), "bytes", ds.n)
	}
	return rx
}

// brokenOffError is the error of a request (C-STORE, N-ACTION) whose data set never completed: the reader's,
// which its message gives, with what the handler returned beside it (it may name what the header held, for the
// audit record). A refusal decided before the data set broke off (a *refusedError: before any handler ran, or by
// the handler) is no consequence of the reader's error, so its message gives that too: the request was refused as
// well as cut short.
type brokenOffError struct{ reader, handler error }

func (e *brokenOffError) Error() string {
	if r, ok := e.handler.(*refusedError); ok {
		return dimse.RefusedBeforeEndMessage(e.reader.Error(), r.st.Code, r.Error())
	}
	return e.reader.Error()
}
func (e *brokenOffError) Unwrap() []error { return []error{e.reader, e.handler} }

// brokenOff is the event's error of a request whose data set the reader err broke off, after the handler
// returned herr (or the request was refused before then, refusal's error): err, and herr when there is one, so
// that neither is lost.
func brokenOff(err, herr error) error {
	if herr == nil {
		return err
	}
	return &brokenOffError{reader: err, handler: herr}
}

// refusedError is a refusal decided before a request's data set broke off: its status, and what the handler
// returned (nil when it was refused before any handler ran, its command wrong), whose message its own is (else the
// status's comment: the answered refusal's reason says that handler's error, or the status).
type refusedError struct {
	st      dimse.Status
	handler error
}

func (e *refusedError) Error() string {
	if e.handler != nil {
		return e.handler.Error()
	}
	return e.st.Comment
}

func (e *refusedError) Unwrap() []error {
	if e.handler != nil {
		return []error{e.st, e.handler}
	}
	return []error{e.st}
}

// refusal is why a request answered st was refused, herr what its handler returned (nil: refused before any
// handler ran), for its event: a *refusedError naming both when st is a failure decided while the request stood,
// before any handler, or by a handler that returned before its data set broke off (ds's reader had no error) and
// before the association's end (its context not done); else herr. A handler failed by the reader's error (the data
// set broke off) or by the association's end refused nothing: its request was cut short, not refused. The one rule
// of a C-STORE's and an N-ACTION's, read when the handler has returned, before ds is drained.
func (a *association) refusal(st dimse.Status, herr error, ds *datasetReader) error {
	if !st.IsFailure() || (herr != nil && (ds.err != nil || a.ctx.Err() != nil)) {
		return herr
	}
	return &refusedError{st: st, handler: herr}
}

// reportAnswered observes the event of the C-STORE (or the refused N-ACTION) whose response was just sent, unless
// ended() has (sendErr, why it was not sent, then stands beside what the handler said of the object: an object the
// store held already, which the audit writer records, and the object is stored whatever became of the response).
func (a *association) reportAnswered(sendErr error) {
	ev := a.answering
	if ev == nil {
		return
	}
	a.answering = nil
	switch {
	case sendErr == nil:
	case ev.Err != nil:
		ev.Err = fmt.Errorf("%w; %w", sendErr, ev.Err)
	default:
		ev.Err = sendErr
	}
	a.srv.observe(*ev)
}

// ErrNotSent is the error of a message (a response, a request) that could not be sent because the association
// ended first (its write failed, or timed out). An EventStored's, EventStoreFailed's or EventCommitmentRefused's Err
// wraps it when the C-STORE-RSP (N-ACTION-RSP) was not sent: the peer heard no status, whatever Status says was
// decided.
var ErrNotSent = errors.New("dicomnet: association ended while sending")

// sendCommand sends a command set as P-DATA (DT-1), fragmented within maxSendPDU. When the
// association ends instead (the write failed), it returns an event with the error; the state machine is already
// in Sta1 then, so the serve loop stops without firing it.
func (a *association) sendCommand(ctxID byte, cmd *dimse.Command) rxEvent {
	body := cmd.Encode()
	a.out = appendMessage(a.out[:0], ctxID, pdu.ControlCommand, body, maxSendPDU(a.peerMax, 0))
	a.fire(evt9, rxEvent{})
	if a.m.state != sta6 {
		return rxEvent{ev: evt17, err: ErrNotSent}
	}
	return rxEvent{}
}

// maxSendPDU is the one rule for the largest PDU body we send, as acceptor and as requestor: within the peer's
// Maximum Length (0 = unlimited) and at most ours (0 = DefaultMaxSendPDULength), and never below 8 bytes, the
// least that carries a PDV of two (fragments but the last are of even length).
func maxSendPDU(peerMax, ours uint32) uint32 {
	if ours == 0 {
		ours = DefaultMaxSendPDULength
	}
	if peerMax != 0 && peerMax < ours {
		ours = peerMax
	}
	return max(ours, 8)
}

// appendMessage appends P-DATA-TF PDUs carrying data as one message part (command or data set), each PDU within
// limit (maxSendPDU's; 0 = unlimited) and each fragment of even length but the last.
func appendMessage(dst []byte, ctxID, control byte, data []byte, limit uint32) []byte {
	maxFrag := len(data)
	if limit != 0 {
		maxFrag = int(limit) - pdu.PDVHeaderLen
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

// naction serves a Storage Commitment request (N-ACTION-RQ): the command is checked here, the data set goes to
// the CommitmentHandler, and the N-ACTION-RSP follows at once. The result is sent later (report.go).
func (a *association) naction(pc *AcceptedContext, cmd *dimse.Command) rxEvent {
	var st dimse.Status
	var herr error
	ds := a.newDataSet(pc.ID, MaxActionInformation)
	switch {
	case pc.AbstractSyntax != dicomuid.StorageCommitment || a.srv.Commitment == nil:
		// N-ACTION on a storage or verification context: no such operation there.
		st = dimse.Status{Code: dimse.StatusUnrecognizedOperation, Comment: "N-ACTION on a context that is not Storage Commitment"}
	case cmd.RequestedSOPClassUID != pc.AbstractSyntax:
		st = dimse.Status{Code: dimse.StatusNoSuchSOPClass, Comment: "Requested SOP Class UID differs from the presentation context"}
	case cmd.RequestedSOPInstanceUID != dicomuid.StorageCommitmentInstance:
		st = dimse.Status{Code: dimse.StatusNoSuchSOPInstance, Comment: "Requested SOP Instance UID is not the well-known 1.2.840.10008.1.20.1.1"}
	case !cmd.Has(dimse.HasActionTypeID) || cmd.ActionTypeID != 1:
		st = dimse.Status{Code: dimse.StatusNoSuchAction, Comment: "Action Type ID must be 1 (Request Storage Commitment)"}
	case !cmd.HasDataSet():
		st = dimse.Status{Code: dimse.StatusInvalidArgumentValue, Comment: "N-ACTION-RQ without Action Information"}
	default:
		req := &CommitmentRequest{Association: &a.info, PresentationContextID: pc.ID, MessageID: cmd.MessageID,
			TransferSyntaxUID: pc.TransferSyntax, ReceivedAt: time.Now()}
		st, herr = callSafely(a.log.With("message_id", cmd.MessageID), "N-ACTION", func() error { return a.srv.Commitment.ServeCommitment(a.ctx, req, ds) })
		ds.closed.Store(true)
		if ds.tooLarge {
			st = dimse.Status{Code: dimse.StatusResourceLimitation, Comment: "Action Information exceeds the size we take"}
			herr = ErrObjectTooLarge
		}
	}
	why := a.refusal(st, herr, ds)
	if cmd.HasDataSet() {
		if err := ds.drain(); err != nil {
			cut := brokenOff(err, why)
			a.log.Info("dicomnet: N-ACTION incomplete", "message_id", cmd.MessageID, "err", cut, "bytes", ds.n)
			if !st.IsSuccess() {
				// Cut short by the association's end: answered nothing (Status 0), as a C-STORE cut short
				// is, and observed before the association's end, so the trail shows the request was made,
				// and a refusal decided before then (why). (A request the handler made durable, having read
				// it whole, is evaluated and reported whatever became of its response: its transaction's
				// records show it.)
				a.srv.observe(Event{Type: EventCommitmentRefused, Association: &a.info,
					SOPClassUID: cmd.RequestedSOPClassUID, Bytes: ds.n, Err: cut})
			}
			return ds.end
		}
	}
	if st.IsFailure() {
		a.log.Info("dicomnet: N-ACTION refused", "message_id", cmd.MessageID, "status", fmt.Sprintf("0x%04X", st.Code), "err", herr)
		// Observed once its response is sent, or not (reportAnswered: ErrNotSent beside why), and before the
		// association's end, as a C-STORE's.
		a.answering = &Event{Type: EventCommitmentRefused, Association: &a.info, Status: st.Code,
			SOPClassUID: cmd.RequestedSOPClassUID, Bytes: ds.n, Err: why}
	} else {
		a.log.Info("dicomnet: N-ACTION accepted", "message_id", cmd.MessageID, "bytes", ds.n)
	}
	rx := a.sendCommand(pc.ID, dimse.NewNActionRSP(cmd, st))
	a.reportAnswered(rx.err)
	return rx
}
