package dicomnet

import (
	"container/list"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// This file bounds the connections that hold no association: accepted and not yet answered (Sta2, waiting for the
// A-ASSOCIATE-RQ; Sta3, being decided) or rejected and waiting for the peer to close (Sta13). They need no AE title,
// so anyone who can reach the port can open them; unbounded, they exhaust the process's file descriptors and a
// real peer's connection can no longer be accepted.
//
// Two bounds, both kept below the descriptor limit by whoever configures the server:
//   - per source address (MaxUnassociatedPerAddr): a new connection from an address that already holds that many
//     is closed at once;
//   - in total (MaxUnassociated): a new connection past it sheds the oldest connection still waiting for its
//     A-ASSOCIATE-RQ (or for its peer to close after a rejection). A real peer sends its request as soon as it
//     has connected and is answered within milliseconds, so it is never the oldest for long: the headroom goes to
//     whoever asks, not to whoever waits.
//
// Both are applied in the accept loop (Server.admit), before the next connection is accepted and before this one
// has a goroutine: applied on the connection's goroutine, they let an accept loop that outran those goroutines (a
// busy machine, connections queued in the backlog) hold connections past them until accept failed with EMFILE,
// with none of them on the list to shed.
//
// A third bound is on the memory they hold (MaxPreAssociationBytes, memory.go): a count alone lets each of them
// hold a read buffer, a part of an A-ASSOCIATE-RQ or an unfinished TLS handshake.
//
// PS3.8 §9.1.4 Note 1 allows closing a transport connection in "situations such as temporary lack of resources".

// ErrShedTotal and ErrShedPerAddr are the Event.Err of an EventShed: the connection was closed before it
// associated, to keep MaxUnassociated (the oldest waiting one made room) or MaxUnassociatedPerAddr.
// ErrShedMemory is the Event.Err of a connection closed to keep MaxPreAssociationBytes: one of the oldest waiting
// ones, to make room, or a newcomer for which none could.
var (
	ErrShedTotal   = errors.New("dicomnet: connection shed: too many connections without an association")
	ErrShedPerAddr = errors.New("dicomnet: connection refused: too many connections without an association from its address")
	ErrShedMemory  = errors.New("dicomnet: connection refused: the memory for connections without an association is in use")
)

// unassociated is the server's list of connections without an association, oldest first.
type unassociated struct {
	list   list.List // of *association
	byAddr map[string]int
	// shed counts connections shed since the last log line, which is written at most every shedLogInterval.
	shed     map[error]int
	shedLast time.Time
}

const shedLogInterval = 10 * time.Second

// unassocEntry is an association's place in the list.
type unassocEntry struct {
	elem *list.Element
	addr string
}

// addrKey is the source address a connection is counted under: its IP (the port changes with every connection).
func addrKey(a net.Addr) string {
	if a == nil {
		return ""
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap().String()
	}
	return a.String()
}

// admitUnassociated counts a new connection under its source address. It returns ErrShedPerAddr when the address
// is at its bound (the caller closes the connection); past the total bound it sheds the oldest waiting connection.
func (s *Server) admitUnassociated(a *association) error {
	var shed []Event
	defer func() { s.observeAll(shed) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	u := &s.unassoc
	if u.byAddr == nil {
		u.byAddr = map[string]int{}
	}
	// Behind a load balancer speaking the PROXY protocol the socket's address is the balancer's: the
	// connection is counted under its source once the header has named it (rekeyUnassociated).
	key := ""
	if !s.ProxyProtocol {
		key = addrKey(a.info.RemoteAddr)
	}
	if key != "" && s.MaxUnassociatedPerAddr > 0 && u.byAddr[key] >= s.MaxUnassociatedPerAddr {
		shed = append(shed, s.noteShedLocked(a.info, ErrShedPerAddr))
		return ErrShedPerAddr
	}
	a.unassoc = unassocEntry{elem: u.list.PushBack(a), addr: key}
	if key != "" {
		u.byAddr[key]++
	}
	if s.MaxUnassociated > 0 && u.list.Len() > s.MaxUnassociated {
		if ev, ok := s.shedOldestLocked(a); ok {
			shed = append(shed, ev)
		}
	}
	return nil
}

// rekeyUnassociated counts a connection under the source address the PROXY protocol header gave it.
func (s *Server) rekeyUnassociated(a *association) error {
	var shed []Event
	defer func() { s.observeAll(shed) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.unassoc.elem == nil {
		return nil
	}
	key := addrKey(a.info.RemoteAddr)
	if key == a.unassoc.addr {
		return nil
	}
	u := &s.unassoc
	s.dropAddrLocked(a.unassoc.addr)
	if s.MaxUnassociatedPerAddr > 0 && u.byAddr[key] >= s.MaxUnassociatedPerAddr {
		u.list.Remove(a.unassoc.elem)
		a.unassoc = unassocEntry{}
		shed = append(shed, s.noteShedLocked(a.info, ErrShedPerAddr))
		return ErrShedPerAddr
	}
	a.unassoc.addr = key
	u.byAddr[key]++
	return nil
}

func (s *Server) observeAll(evs []Event) {
	for _, ev := range evs {
		s.observe(ev)
	}
}

// leaveUnassociated takes a out of the count: it associated, or its connection ended. It is idempotent.
func (s *Server) leaveUnassociated(a *association) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaveUnassociatedLocked(a)
}

// wasShed reports whether a, which has not associated, was shed: taken off the list and its connection closed by
// the server. What its goroutine then reads is that close, already reported (EventShed, the shedding's log line),
// and not something the peer did.
func (a *association) wasShed() bool {
	a.srv.mu.Lock()
	defer a.srv.mu.Unlock()
	return a.unassoc.elem == nil
}

func (s *Server) leaveUnassociatedLocked(a *association) {
	if a.unassoc.elem == nil {
		return
	}
	s.unassoc.list.Remove(a.unassoc.elem)
	s.dropAddrLocked(a.unassoc.addr)
	a.unassoc = unassocEntry{}
}

func (s *Server) dropAddrLocked(key string) {
	if key == "" {
		return
	}
	if s.unassoc.byAddr[key]--; s.unassoc.byAddr[key] <= 0 {
		delete(s.unassoc.byAddr, key)
	}
}

// shedOldestLocked closes the oldest connection that waits for its A-ASSOCIATE-RQ or for its peer to close
// (never one being decided, never newcomer itself) and returns the Event to report, if one went.
func (s *Server) shedOldestLocked(newcomer *association) (Event, bool) {
	for e := s.unassoc.list.Front(); e != nil; e = e.Next() {
		old := e.Value.(*association)
		if old == newcomer || old.stateNow() == sta3 {
			continue
		}
		s.leaveUnassociatedLocked(old)
		ev := s.noteShedLocked(old.info, ErrShedTotal)
		old.nc.Close() // its goroutine reads Evt17 and ends
		return ev, true
	}
	return Event{}, false
}

// noteShedLocked counts a shed connection for the log line, written at most every shedLogInterval with the counts
// since the last, and returns the Event to report once s.mu is released.
func (s *Server) noteShedLocked(info AssociationInfo, why error) Event {
	u := &s.unassoc
	if u.shed == nil {
		u.shed = map[error]int{}
	}
	u.shed[why]++
	if now := time.Now(); now.Sub(u.shedLast) >= shedLogInterval {
		s.logger().Warn("dicomnet: connections without an association closed to keep headroom",
			"over_total", u.shed[ErrShedTotal], "over_address", u.shed[ErrShedPerAddr], "over_memory", u.shed[ErrShedMemory],
			"last_peer", addrString(info.RemoteAddr), "unassociated", u.list.Len(), "max_unassociated", s.MaxUnassociated,
			"max_unassociated_per_addr", s.MaxUnassociatedPerAddr,
			"preassociation_bytes", s.PreAssociationBytes(), "max_preassociation_bytes", s.MaxPreAssociationBytes)
		u.shedLast = now
		clear(u.shed)
	}
	return Event{Type: EventShed, Association: &info, Err: why}
}

// UnassociatedConnections returns the number of connections that hold no association.
func (s *Server) UnassociatedConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unassoc.list.Len()
}

// shedForDescriptors makes room when accept fails for want of file descriptors (the bounds were set too high for
// the process's limit, or something else holds them): it sheds the oldest waiting connection. It reports whether
// one went.
func (s *Server) shedForDescriptors(err error) bool {
	if !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) {
		return false
	}
	s.mu.Lock()
	ev, ok := s.shedOldestLocked(nil)
	s.mu.Unlock()
	if ok {
		s.observe(ev)
	}
	return ok
}
