package dicomnet

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
)

// This file reads PDUs and PDV headers off the connection and classifies what it reads, or the read error, as
// an event of the state machine.

// evtNone is the zero event: "nothing follows, read the next event from the connection".
const evtNone event = 0

// receivedAs is the event each PDU type is when it is received (PS3.8 §9.2, Table 9-10), for both sides.
var receivedAs = map[pdu.Type]event{pdu.TypeAssociateAC: evt3, pdu.TypeAssociateRJ: evt4, pdu.TypeAssociateRQ: evt6,
	pdu.TypePDataTF: evt10, pdu.TypeReleaseRQ: evt12, pdu.TypeReleaseRP: evt13, pdu.TypeAbort: evt16}

// sendPDU encodes p and writes it with write.
func sendPDU(write func([]byte) error, p pdu.PDU) error {
	b, err := pdu.Encode(p)
	if err != nil {
		return fmt.Errorf("dicomnet: encode %s: %w", p.Type(), err)
	}
	return write(b)
}

// rxEvent is a classified incoming event.
type rxEvent struct {
	ev          event
	reason      byte // provider abort reason to send for evt19
	abortSource byte // of a received A-ABORT
	abortReason byte
	err         error
}

// pduReader is the read position in the connection's byte stream.
type pduReader struct {
	inSync  bool   // the read position is at a PDU boundary we can parse from
	pduLeft uint32 // bytes of the current P-DATA-TF not yet read
	hdr     [pdu.HeaderLen]byte
}

// ErrProgressDeadline is the error of an association aborted because the message it was receiving stopped
// progressing: fewer than Server.MinProgressBytes arrived in a ProgressWindow of waiting, or the message took
// longer than MaxMessageTime of waiting.
var ErrProgressDeadline = errors.New("dicomnet: progress deadline")

// progress is the state of the message being received, for the progress deadlines. Only time spent waiting for
// the peer in socket reads counts: while a handler does not read (a slow store), the peer is not to blame. Only
// the message's own bytes, those of its command and data set fragments, are progress: each socket read credits
// what it brought, and the framing found in it (a P-DATA-TF's header, a PDV's) is taken back once parsed
// (framing). So a peer sending empty fragments, whose P-DATA-TFs are all framing, makes no progress and is
// aborted when a window passes, as one that trickles bytes is (PS3.8 E.1 does not forbid an empty fragment: it
// is even, and so valid; it is just not progress).
//
// A window's end is noticed late when the process itself stalls (a GC pause, the host descheduling it) across
// its deadline: the read then reports a timeout, or more waiting than the window, though the peer's bytes reached
// the socket in time. So a window that passed short is not yet the end: for progressGrace after we noticed, reads
// go on taking what is waiting (grace), and those bytes count toward that window. Only what the peer sent by then
// counts, so the rule a trickling peer is bounded by does not change: at most progressGrace more per window.
type progress struct {
	active bool          // bytes of a message have arrived and the message is not complete
	waited time.Duration // waited in the current window
	bytes  int64         // of the message received in the current window; below 0 while framing read in an earlier window is taken back
	total  time.Duration // waited in the whole message
	grace  time.Time     // when the current window, which passed short, is over for good; zero while it has not passed
}

// progressGrace is how long reads go on taking what is waiting once a progress window is seen to have passed with
// too few bytes (progress): long enough for bytes already in the socket, whatever held the process up just before.
const progressGrace = 100 * time.Millisecond

// framing takes back n bytes of P-DATA-TF framing just parsed, credited as they were read: they are not progress.
func (pr *progress) framing(n int) {
	if pr.active {
		pr.bytes -= int64(n)
	}
}

// timedReader sets the read deadline before every socket read, unless ARTIM owns it:
//   - between messages, the idle timeout (refreshed lazily, at most every idle/32);
//   - once a message has begun (its first byte arrived in Sta6), also the progress deadlines: the rest of the
//     current ProgressWindow, in which MinProgressBytes must arrive, and the rest of MaxMessageTime.
//
// The serve loop ends the message (progress.active = false) when it is back at a message boundary.
type timedReader struct{ a *association }

func (t timedReader) Read(p []byte) (int, error) {
	a := t.a
	for {
		n, err := t.read(p)
		var ne net.Error
		if n == 0 && (err == errWoken || errors.As(err, &ne) && ne.Timeout()) {
			if a.wake.Swap(false) {
				a.woken()
				continue
			}
			if d := a.readDeadline; err != errWoken && (d.IsZero() || time.Now().Before(d)) {
				// A sender's deadline that landed after its wake-up was handled (it sets the flag, then
				// the deadline): not one of ours, so ours is put back.
				a.setReadDeadline(d)
				continue
			}
		}
		return n, err
	}
}

// errWoken is what a read returns instead of blocking when a sender has woken the association (report.go).
var errWoken = errors.New("dicomnet: woken")

// readConn reads from the connection under the deadline just set. A sender wakes the association by setting
// a.wake, then moving the deadline to now; checking a.wake after our own deadline was set, and not reading if it
// is set, means no wake-up is lost between the two.
func (a *association) readConn(p []byte) (int, error) {
	if a.wake.Load() {
		return 0, errWoken
	}
	return a.nc.Read(p)
}

// woken handles a wake-up: the read deadline the sender moved is put back (the idle timer is re-armed by the
// next read, a progress deadline by its own loop), and what the sender queued goes out now if the association
// is between messages; in the middle of one it waits for the next boundary (nextEvent).
func (a *association) woken() {
	a.idleSet = time.Time{}
	if a.artimOn {
		a.setReadDeadline(a.artimDeadline)
		return
	}
	a.setReadDeadline(time.Time{})
	if !a.progress.active && a.m.state == sta6 {
		a.flushOutbox() // a failed write ends the association; the next read reports it
	}
}

func (t timedReader) read(p []byte) (int, error) {
	a := t.a
	if a.artimOn {
		return a.readConn(p)
	}
	pr := &a.progress
	s := a.srv
	window, minBytes, ceiling := s.progressWindow(), s.minProgressBytes(), s.maxMessageTime()
	if !pr.active || (window == 0 && ceiling == 0) {
		if idle := s.idleTimeout(); idle > 0 {
			now := time.Now()
			if a.idleSet.IsZero() || now.Sub(a.idleSet) > idle/32 {
				a.setReadDeadline(now.Add(idle))
				a.idleSet = now
			}
		}
		n, err := a.readConn(p)
		if n > 0 && !pr.active && a.m.state == sta6 {
			*pr = progress{active: true, bytes: int64(n)}
		}
		return n, err
	}
	for {
		start := time.Now()
		var deadline time.Time
		if idle := s.idleTimeout(); idle > 0 {
			deadline = start.Add(idle)
		}
		if window > 0 {
			if pr.grace.IsZero() {
				deadline = earliest(deadline, start.Add(window-pr.waited))
			} else {
				deadline = earliest(deadline, pr.grace) // the window has passed: only what is waiting
			}
		}
		if ceiling > 0 {
			deadline = earliest(deadline, start.Add(ceiling-pr.total))
		}
		a.setReadDeadline(deadline)
		a.idleSet = time.Time{} // the idle deadline is to be set afresh once the message ends
		n, err := a.readConn(p)
		w := time.Since(start)
		pr.waited += w
		pr.total += w
		pr.bytes += int64(n)
		if ceiling > 0 && pr.total >= ceiling {
			// Before the window's grace, which reads on under a deadline no later than the ceiling's.
			return n, fmt.Errorf("%w: message not complete after %v of waiting", ErrProgressDeadline, ceiling)
		}
		rolled := false
		if window > 0 && pr.waited >= window {
			if pr.bytes < minBytes {
				if pr.grace.IsZero() {
					pr.grace = time.Now().Add(progressGrace)
				}
				if !time.Now().Before(pr.grace) {
					return n, fmt.Errorf("%w: %d bytes of message fragments in %v of waiting, fewer than %d", ErrProgressDeadline, max(pr.bytes, 0), pr.waited.Round(time.Millisecond), minBytes)
				}
				if n == 0 && isTimeout(err) {
					continue // the window's deadline, noticed: take what is waiting
				}
				return n, err // the window's bytes, or the message's end, may be among them
			}
			pr.waited, pr.bytes, pr.grace, rolled = 0, 0, time.Time{}, true
		}
		var ne net.Error
		if n == 0 && rolled && errors.As(err, &ne) && ne.Timeout() {
			continue // the window ended with enough bytes in it: a new window begins
		}
		return n, err
	}
}

// earliest is the earlier of two deadlines, the zero time meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// nextEvent reads the next event from the connection.
func (a *association) nextEvent() rxEvent {
	if a.m.state == sta6 && !a.cmd.open {
		// At a message boundary: what comes next is a new message. Bytes of it already read with the last one
		// (a peer that pipelines) have begun it: the progress deadlines bound the wait for its rest, as they
		// would had those bytes come in a read of their own (timedReader.read), not the idle timeout alone.
		buffered := a.br.Buffered()
		a.progress = progress{active: buffered > 0, bytes: int64(buffered)}
		if a.queued() {
			if rx := a.flushOutbox(); rx.ev != evtNone {
				return rx
			}
		}
	}
	if !a.reader.inSync {
		// The stream position is unknown (after a protocol error): only closure or ARTIM can follow.
		return a.readErrEvent(discardAll(a.br))
	}
	rx := a.readEvent()
	if rx.ev == evt12 && a.m.state == sta6 && a.cmd.open {
		// The message's command set began in an earlier P-DATA-TF.
		return releaseInMessage()
	}
	return rx
}

// discardAll reads and drops everything until a read fails, and returns that failure: what a side whose read
// position is lost does, until the peer closes or ARTIM expires.
func discardAll(br *bufio.Reader) error {
	for {
		if _, err := br.Discard(1 << 30); err != nil {
			return err
		}
	}
}

// pdataTooLong is PS3.8 D.1's rule for a P-DATA-TF we receive, on both sides (the server's readEvent, the
// client's readPDU): its PDU-length "shall never" exceed the Maximum Length Received we advertised in item 51
// ("Otherwise, it shall be a protocol error", Tables D.1-1 and D.1-2), an invalid PDU: Evt19, A-ABORT 02 06. The
// error wraps pdu.ErrTooLong.
func pdataTooLong(length, advertised uint32) error {
	if length <= advertised {
		return nil
	}
	return fmt.Errorf("P-DATA-TF of %d bytes exceeds our maximum %d: %w", length, advertised, pdu.ErrTooLong)
}

// releaseInMessage is what an A-RELEASE-RQ received in the middle of a message (its command set or its data set
// not complete) stands for: not a valid release, an unexpected PDU (AA-8, A-ABORT 2/2).
func releaseInMessage() rxEvent {
	return rxEvent{ev: evt19, reason: pdu.AbortReasonUnexpectedPDU, err: errors.New("dicomnet: A-RELEASE-RQ in the middle of a message")}
}

// readErrEvent classifies a read error: ARTIM expiry, idle timeout (a local abort) or transport closed.
func (a *association) readErrEvent(err error) rxEvent {
	if errors.Is(err, ErrProgressDeadline) {
		return rxEvent{ev: evt15, err: err} // a local abort (AA-1)
	}
	if isTimeout(err) {
		if a.artimOn {
			return rxEvent{ev: evt18, err: fmt.Errorf("dicomnet: %w", expired("ARTIM", a.srv.artim(), err))}
		}
		return rxEvent{ev: evt15, err: fmt.Errorf("dicomnet: %w", expired("idle timeout", a.srv.idleTimeout(), err))}
	}
	if a.outsideAbort.Load() {
		return rxEvent{ev: evt17, err: errors.New("dicomnet: aborted by server")}
	}
	return rxEvent{ev: evt17, err: fmt.Errorf("dicomnet: connection closed: %w", err)}
}

// isTimeout reports whether err is a socket deadline's.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// expired is err, a socket deadline's, saying which of our timers set it and for how long, so that a log line
// and an audit record tell ARTIM from the idle timeout and the write deadline ("i/o timeout" alone does not).
func expired(timer string, d time.Duration, err error) error {
	return fmt.Errorf("%s (%v) expired: %w", timer, d, err)
}

// readFailed is the event a failed read of the stream stands for (timeout, closed connection, server abort).
// The read position is lost with it.
func (a *association) readFailed(err error) rxEvent {
	a.reader.inSync = false
	return a.readErrEvent(err)
}

// protocolError is an invalid-PDU event (Evt19 → AA-8, provider abort 2/6). The read position is lost with it.
func (a *association) protocolError(err error) rxEvent {
	a.reader.inSync = false
	return rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue, err: err}
}

// readEvent reads a PDU header and classifies it. A P-DATA-TF body is left unread in Sta6 (it is streamed);
// other bodies are read or skipped. A read that fails once the header's first byte is in (an idle timeout in
// Sta6, AA-1) loses the read position: the rest of that PDU is not read as the next one in Sta13. (In Sta13 itself
// a read times out only when ARTIM expires, and AA-2 closes: there the position no longer matters.)
func (a *association) readEvent() rxEvent {
	r := &a.reader
	if n, err := io.ReadFull(a.br, r.hdr[:]); err != nil {
		if n > 0 {
			return a.readFailed(err)
		}
		return a.readErrEvent(err) // between PDUs: in Sta13 the peer's A-ABORT or close is still read as such
	}
	h, _ := pdu.ParseHeader(r.hdr[:])
	st := a.m.state
	switch h.Type {
	case pdu.TypePDataTF:
		if err := pdataTooLong(h.Length, a.srv.maxPDU()); err != nil && st != sta2 {
			return a.protocolError(fmt.Errorf("dicomnet: %w", err))
		}
		if st == sta13 {
			// Ignored (AA-6), and read past, under ARTIM: what follows is read as the PDU it is (an A-ABORT
			// closes, an A-ASSOCIATE-RQ or an unrecognized PDU is answered, AA-7).
			if _, err := a.br.Discard(int(h.Length)); err != nil {
				return a.readFailed(err)
			}
			return rxEvent{ev: evt10}
		}
		if st != sta6 {
			// Sta2: before the A-ASSOCIATE-RQ (AA-1), its body left unread.
			r.inSync = false
			return rxEvent{ev: evt10, err: fmt.Errorf("dicomnet: received %s in %s", h.Type, st)}
		}
		if h.Length == 0 {
			return rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue, err: errors.New("dicomnet: empty P-DATA-TF")}
		}
		r.pduLeft = h.Length
		a.progress.framing(pdu.HeaderLen)
		return rxEvent{ev: evt10}
	case pdu.TypeAssociateRQ:
		var grow func(int) error
		if st == sta2 {
			// Charged to MaxPreAssociationBytes as the buffer grows: a request that arrives slowly is held.
			grow = func(n int) error { return a.charge(int64(n)) }
		}
		body, err := pdu.ReadBodyFunc(a.br, h.Length, MaxAssociatePDULength, grow)
		if errors.Is(err, ErrShedMemory) {
			a.shedForMemory()
			return a.readFailed(err)
		}
		if err != nil {
			return a.bodyErr(err)
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
		body, err := pdu.ReadBody(a.br, h.Length, 1024)
		if err != nil {
			return a.bodyErr(err)
		}
		if len(body) < 4 {
			return rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue, err: errors.New("dicomnet: short A-ABORT")}
		}
		return rxEvent{ev: evt16, abortSource: body[2], abortReason: body[3]}
	case pdu.TypeAssociateRJ, pdu.TypeReleaseRQ, pdu.TypeReleaseRP:
		// Their length is 4, fixed (PS3.8 9.3.4, 9.3.6, 9.3.7): another
		// is an invalid PDU, whose end cannot be told.
		if h.Length != 4 {
			r.inSync = false
			return rxEvent{ev: evt19, reason: pdu.AbortReasonInvalidParamValue, err: fmt.Errorf("dicomnet: %s of %d bytes, not 4", h.Type, h.Length)}
		}
		if _, err := a.br.Discard(4); err != nil {
			return a.readFailed(err)
		}
		return rxEvent{ev: receivedAs[h.Type], err: fmt.Errorf("dicomnet: received %s in %s", h.Type, st)}
	case pdu.TypeAssociateAC:
		if h.Length > MaxAssociatePDULength {
			r.inSync = false
		} else if _, err := a.br.Discard(int(h.Length)); err != nil {
			return a.readFailed(err)
		}
		return rxEvent{ev: receivedAs[h.Type], err: fmt.Errorf("dicomnet: received %s in %s", h.Type, st)}
	}
	r.inSync = false
	return rxEvent{ev: evt19, reason: pdu.AbortReasonUnrecognizedPDU, err: fmt.Errorf("dicomnet: unrecognized PDU type 0x%02x", uint8(h.Type))}
}

// bodyErr classifies a failure to read a PDU body: too long for us is a protocol error, anything else a read error.
// Either loses the read position.
func (a *association) bodyErr(err error) rxEvent {
	if errors.Is(err, pdu.ErrTooLong) {
		return a.protocolError(err)
	}
	return a.readFailed(err)
}

type pdvHeader struct {
	ctxID   byte
	command bool
	last    bool
	n       uint32 // fragment length
}

// readPDVHeader reads the next PDV header of the current P-DATA-TF PDU. When it cannot, it returns the event
// that stopped it.
func (a *association) readPDVHeader() (pdvHeader, rxEvent) {
	r := &a.reader
	if r.pduLeft < pdu.PDVHeaderLen {
		return pdvHeader{}, a.protocolError(fmt.Errorf("dicomnet: %d bytes left in P-DATA-TF, too few for a PDV", r.pduLeft))
	}
	if _, err := io.ReadFull(a.br, r.hdr[:pdu.PDVHeaderLen]); err != nil {
		return pdvHeader{}, a.readFailed(err)
	}
	n := binary.BigEndian.Uint32(r.hdr[:])
	if n < 2 || n > r.pduLeft-4 {
		return pdvHeader{}, a.protocolError(fmt.Errorf("dicomnet: PDV length %d does not fit its P-DATA-TF (%d left)", n, r.pduLeft-4))
	}
	r.pduLeft -= 4 + n
	a.progress.framing(pdu.PDVHeaderLen)
	ctrl := r.hdr[5]
	return pdvHeader{ctxID: r.hdr[4], command: ctrl&pdu.ControlCommand != 0, last: ctrl&pdu.ControlLast != 0, n: n - 2}, rxEvent{}
}

// nextPDataTF reads the next PDU in the middle of a message: only a P-DATA-TF continues it. Anything else is
// returned as the event that interrupted the message.
func (a *association) nextPDataTF() rxEvent {
	rx := a.readEvent()
	switch {
	case rx.ev == evt10 && a.m.state == sta6:
		a.fire(evt10, rxEvent{}) // DT-2, Sta6 → Sta6
		return rxEvent{}
	case rx.ev == evt12:
		return releaseInMessage()
	}
	return rx
}

// describe is the error an interrupting event stands for, as a handler's reader reports it.
func describe(rx rxEvent) error {
	switch {
	case rx.ev == evt16:
		return &AbortError{Source: rx.abortSource, Reason: rx.abortReason}
	case rx.err != nil:
		return rx.err
	}
	return fmt.Errorf("dicomnet: %s while receiving a data set", rx.ev)
}
