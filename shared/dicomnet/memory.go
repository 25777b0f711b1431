package dicomnet

import (
	"fmt"
)

// This file bounds the memory held by connections that have not associated (MaxPreAssociationBytes). The count
// bounds (unassociated.go) come from the descriptor limit, tens of thousands on a usual host, and each such
// connection may hold its 64 KiB read buffer, an A-ASSOCIATE-RQ arriving slowly (up to MaxAssociatePDULength) or an
// unfinished TLS handshake, whose buffers crypto/tls keeps: 4,000 of them took about 600 MB.
//
// Every connection is charged, before anything is read from it, the most it can hold until it has a request:
// PreAssociationConnBytes, and PreAssociationTLSBytes more for a TLS one. An A-ASSOCIATE-RQ body is charged as
// its buffer grows (pdu.ReadBodyFunc). The charges come out of one server-wide budget and go back once the
// connection has associated (its memory then counts under MaxAssociations) or has ended. The number of
// unfinished TLS handshakes is thereby bounded by the same budget: at most
// MaxPreAssociationBytes / (PreAssociationConnBytes + PreAssociationTLSBytes) at once.
//
// When the budget is in use, a charge does what a newcomer past MaxUnassociated does: the oldest connections
// still waiting (for their request, or for their peer to close; not one being decided) are closed and their
// charges pass to the newcomer. The headroom goes to whoever asks, not to whoever waits, so a peer that connects
// and asks at once gets in while idle connections cannot keep the memory. When they cannot make room (every
// charge is held by connections being decided) the newcomer is closed, having read nothing; a request that
// cannot grow ends its connection. A closed connection's goroutine lets go of its buffers as soon as it sees its
// socket closed, so the memory actually held may exceed the budget by the connections being closed at that
// moment, never the accounting. The budget is a counter under Server.mu, not a semaphore: nothing ever waits
// for it, and passing a charge from one connection to another needs the lock that guards the list anyway.

const (
	// connOverheadBytes is what a connection holds besides its read buffer: its goroutine's stack (8 KiB to
	// start with), the association and the socket's state.
	connOverheadBytes = 16 << 10
	// PreAssociationConnBytes is the charge of every connection without an association: its read buffer and
	// its overhead.
	PreAssociationConnBytes int64 = readBufferSize + connOverheadBytes
	// PreAssociationTLSBytes is the further charge of a TLS connection until it has associated: what
	// crypto/tls may hold of an unfinished handshake. A client's Certificate message may be 256 KiB, read into a
	// buffer that doubles as it grows (512 KiB); the record buffers take up to about 40 KiB; the certificates
	// are copied out of the message (256 KiB) and parsed. 1 MiB covers them all.
	PreAssociationTLSBytes int64 = 1 << 20
)

// preAssociationCost is what a new connection is charged before anything is read from it.
func preAssociationCost(overTLS bool) int64 {
	if overTLS {
		return PreAssociationConnBytes + PreAssociationTLSBytes
	}
	return PreAssociationConnBytes
}

// PreAssociationBytes returns the memory charged to connections without an association, within
// MaxPreAssociationBytes when that is set.
func (s *Server) PreAssociationBytes() int64 { return s.preBytes.Load() }

// charge charges n bytes to a, which has no association yet, making room as the file's comment says. It fails
// with ErrShedMemory: a is then to be closed and shedForMemory reports it.
func (a *association) charge(n int64) error {
	s := a.srv
	var shed []Event
	defer func() { s.observeAll(shed) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.unassoc.elem == nil {
		// Shed meanwhile (its charge went to a newcomer): the connection is being closed.
		return fmt.Errorf("%w: %d bytes for a connection already closed", ErrShedMemory, n)
	}
	limit := s.MaxPreAssociationBytes
	if over := s.preBytes.Load() + n - limit; limit > 0 && over > 0 {
		// The oldest waiting connections whose charges make room, if they can.
		var victims []*association
		room := int64(0)
		for e := s.unassoc.list.Front(); e != nil && room < over; e = e.Next() {
			old := e.Value.(*association)
			if old != a && old.preHeld > 0 && old.stateNow() != sta3 {
				victims = append(victims, old)
				room += old.preHeld
			}
		}
		if room < over {
			return fmt.Errorf("%w: %d bytes, %d of %d charged to connections being decided", ErrShedMemory, n, s.preBytes.Load(), limit)
		}
		for _, old := range victims {
			s.preBytes.Add(-old.preHeld)
			old.preHeld = 0
			s.leaveUnassociatedLocked(old)
			shed = append(shed, s.noteShedLocked(old.info, ErrShedMemory))
			old.nc.Close() // its goroutine reads Evt17 and ends
		}
	}
	a.preHeld += n
	s.preBytes.Add(n)
	return nil
}

// releaseCharge gives back what a was charged; it is idempotent.
func (a *association) releaseCharge() {
	s := a.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	s.preBytes.Add(-a.preHeld)
	a.preHeld = 0
}

// shedForMemory reports a connection closed because it could not be charged, unless it was shed (and reported)
// by the charge that took its memory.
func (a *association) shedForMemory() {
	s := a.srv
	s.mu.Lock()
	if a.unassoc.elem == nil {
		s.mu.Unlock()
		return
	}
	s.leaveUnassociatedLocked(a)
	ev := s.noteShedLocked(a.info, ErrShedMemory)
	s.mu.Unlock()
	s.observe(ev)
}
