package dicomnet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
)

// This file is the requests the acceptor sends on an association the peer requested: an N-EVENT-REPORT-RQ
// (the Storage Commitment result) on the association its N-ACTION arrived on.
//
// Everything the association does with the connection stays on its goroutine. Another goroutine queues the
// message (Server.SendEventReport) and wakes the association by moving its read deadline to now; the read
// (timedReader) sees the wake-up for what it is and, when the association is between messages, sends the first
// request queued (P-DATA request primitive, Evt9, DT-1) before reading on; one at a time, each after the
// response to the one before. In the middle of a message it only reads on:
// the queue is sent at the next message boundary (nextEvent), so our request never lands while the peer waits
// for an answer from us. The response comes back as any DIMSE response does (dispatch.go, onResponse) and is
// handed to the waiting sender. When the association ends first, every queued or unanswered request fails with
// ErrAssociationEnded: the caller then opens an association of its own.

// ErrNoAssociation: no established association has the id given to SendEventReport.
var ErrNoAssociation = errors.New("dicomnet: no such established association")

// ErrRoleNotHeld: the association has no presentation context for the SOP class on which we, the acceptor,
// hold the SCP role (the peer turned it down in role selection, or did not propose the class).
var ErrRoleNotHeld = errors.New("dicomnet: no presentation context for the SOP class in the SCP role")

// ErrAssociationEnded: the association ended (released, aborted, closed) before the request was answered. The
// peer may or may not have received it.
var ErrAssociationEnded = errors.New("dicomnet: association ended before the response")

// EventReport is an N-EVENT-REPORT-RQ to send.
type EventReport struct {
	SOPClassUID, SOPInstanceUID string
	EventTypeID                 uint16
	// DataSet encodes the Event Information in the transfer syntax of the presentation context it is sent on.
	DataSet func(transferSyntaxUID string) ([]byte, error)
}

// outbound is one request of ours: its encoded PDUs until sent, then the wait for its response.
type outbound struct {
	rq   *dimse.Command // the request: what its response must answer (unexpectedResponse)
	msg  []byte
	done chan outcome // buffered: receives exactly one outcome
}

type outcome struct {
	status dimse.Status
	err    error
}

// outbox holds the association's requests: queued (to send at the next message boundary) and sent (waiting for
// a response). It is shared between the association's goroutine and senders.
type outbox struct {
	mu      sync.Mutex
	queue   []*outbound
	sent    map[uint16]*outbound
	ended   bool
	msgID   uint16
	pending bool // the queue is not empty
}

// SendEventReport sends an N-EVENT-REPORT-RQ on the established association whose AssociationInfo.ID is
// associationID, on a presentation context for rq.SOPClassUID on which we, the acceptor, hold the SCP role,
// and returns the peer's response status once it arrives. It fails with ErrNoAssociation, ErrRoleNotHeld,
// ErrAssociationEnded or ctx's error; after any of them the peer may be reached on a new association.
func (s *Server) SendEventReport(ctx context.Context, associationID string, rq EventReport) (dimse.Status, error) {
	a := s.established(associationID)
	if a == nil {
		return dimse.Status{}, ErrNoAssociation
	}
	pc := a.contextInRole(rq.SOPClassUID, roleSCP)
	if pc == nil {
		return dimse.Status{}, ErrRoleNotHeld
	}
	ds, err := rq.DataSet(pc.TransferSyntax)
	if err != nil {
		return dimse.Status{}, fmt.Errorf("dicomnet: event report: %w", err)
	}
	ob := &outbound{done: make(chan outcome, 1)}
	a.outbox.mu.Lock()
	if a.outbox.ended {
		a.outbox.mu.Unlock()
		return dimse.Status{}, ErrAssociationEnded
	}
	a.outbox.msgID++
	if a.outbox.msgID == 0 {
		a.outbox.msgID = 1
	}
	cmd := dimse.NewNEventReportRQ(a.outbox.msgID, rq.SOPClassUID, rq.SOPInstanceUID, rq.EventTypeID)
	ob.rq = cmd
	limit := maxSendPDU(a.peerMax, 0)
	ob.msg = appendMessage(nil, pc.ID, pdu.ControlCommand, cmd.Encode(), limit)
	ob.msg = appendMessage(ob.msg, pc.ID, 0, ds, limit)
	a.outbox.queue = append(a.outbox.queue, ob)
	a.outbox.pending = true
	a.outbox.mu.Unlock()
	a.wakeUp()

	select {
	case o := <-ob.done:
		return o.status, o.err
	case <-ctx.Done():
		a.outbox.mu.Lock()
		for i, q := range a.outbox.queue {
			if q == ob {
				a.outbox.queue = append(a.outbox.queue[:i], a.outbox.queue[i+1:]...)
				break
			}
		}
		// One already sent stays outstanding until the peer answers it (its outcome goes to the buffered
		// channel nobody reads), so no second request of ours overlaps it.
		a.outbox.pending = len(a.outbox.queue) > 0
		a.outbox.mu.Unlock()
		return dimse.Status{}, fmt.Errorf("dicomnet: event report: %w", ctx.Err())
	}
}

// established returns the association with the id if it is established (Sta6).
func (s *Server) established(id string) *association {
	s.mu.Lock()
	defer s.mu.Unlock()
	for a := range s.assocs {
		if a.info.ID == id && a.stateNow() == sta6 {
			return a
		}
	}
	return nil
}

// contextInRole returns an accepted presentation context for sopClass on which we, the acceptor, hold role r.
// By PS3.7 D.3.3.4 the acceptor's roles complement the requestor's: it is SCP where the requestor is SCU, and
// SCU where the requestor is SCP. The contexts are fixed once the association is established, which the caller
// has seen (stateNow), so reading them from another goroutine is safe.
func (a *association) contextInRole(sopClass string, r role) *AcceptedContext {
	for _, pc := range a.ctxs {
		if pc == nil || pc.AbstractSyntax != sopClass {
			continue
		}
		if (r == roleSCP && pc.RequestorSCU) || (r == roleSCU && pc.RequestorSCP) {
			return pc
		}
	}
	return nil
}

// wakeUp makes the association's goroutine look at its outbox: a read in progress returns at once with a
// timeout that timedReader recognises as the wake-up.
func (a *association) wakeUp() {
	a.wake.Store(true)
	if err := a.nc.SetReadDeadline(time.Now()); err != nil {
		// Closed: the association is ending, and ended() fails the queue.
		a.log.Debug("dicomnet: wake association", "err", err)
	}
}

// queued reports whether requests wait to be sent. Called on the association's goroutine.
func (a *association) queued() bool {
	a.outbox.mu.Lock()
	defer a.outbox.mu.Unlock()
	return a.outbox.pending
}

// flushOutbox sends the next queued request (Evt9, DT-1), at a message boundary in Sta6, unless one of ours is
// still unanswered: we negotiate no asynchronous operations window, so the default (PS3.7 D.3.3.3) allows one
// outstanding operation invoked by each side. The next one goes at the first boundary after the response. When
// a write fails the association is over (Sta1) and the returned event says so.
func (a *association) flushOutbox() rxEvent {
	for a.m.state == sta6 {
		a.outbox.mu.Lock()
		if len(a.outbox.queue) == 0 {
			a.outbox.pending = false
			a.outbox.mu.Unlock()
			return rxEvent{}
		}
		if len(a.outbox.sent) > 0 {
			a.outbox.mu.Unlock()
			return rxEvent{}
		}
		ob := a.outbox.queue[0]
		a.outbox.queue = a.outbox.queue[1:]
		if a.outbox.sent == nil {
			a.outbox.sent = map[uint16]*outbound{}
		}
		a.outbox.sent[ob.rq.MessageID] = ob
		a.outbox.mu.Unlock()
		a.out = append(a.out[:0], ob.msg...)
		a.fire(evt9, rxEvent{})
		if a.m.state != sta6 {
			return rxEvent{ev: evt17, err: ErrNotSent}
		}
		a.log.Debug("dicomnet: DIMSE request sent", "message_id", ob.rq.MessageID)
	}
	return rxEvent{}
}

// answered hands a response to the request of ours whose message id it names; false when it names none of
// ours. A response of another command to that id (unexpectedResponse, the client's rule) does not answer it: the
// request fails with ErrUnexpectedResponse, and the error returned is the invalid PDU's.
func (a *association) answered(cmd *dimse.Command) (bool, error) {
	a.outbox.mu.Lock()
	ob := a.outbox.sent[cmd.MessageIDBeingRespondedTo]
	delete(a.outbox.sent, cmd.MessageIDBeingRespondedTo)
	a.outbox.mu.Unlock()
	if ob == nil {
		return false, nil
	}
	if why := unexpectedResponse(ob.rq, cmd); why != "" {
		err := fmt.Errorf("dicomnet: association %s: %s: %w", a.info.ID, why, ErrUnexpectedResponse)
		ob.done <- outcome{err: err}
		return true, err
	}
	ob.done <- outcome{status: dimse.Status{Code: cmd.Status, Comment: cmd.ErrorComment}}
	return true, nil
}

// closeOutbox fails every queued and unanswered request: the association has ended.
func (a *association) closeOutbox() {
	a.outbox.mu.Lock()
	defer a.outbox.mu.Unlock()
	a.outbox.ended = true
	for _, ob := range a.outbox.queue {
		ob.done <- outcome{err: ErrAssociationEnded}
	}
	for _, ob := range a.outbox.sent {
		ob.done <- outcome{err: ErrAssociationEnded}
	}
	a.outbox.queue, a.outbox.sent, a.outbox.pending = nil, nil, false
}
