package dicomnet

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/panicvalue"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
	"github.com/dicom-ingest/dicom-ingest/shared/version"
)

// Defaults applied when the corresponding Server (or ClientConfig) field is zero.
const (
	DefaultAddr = ":11112"
	// DefaultMaxPDULength is the P-DATA-TF size we advertise (item 51). Received PDUs are streamed, never buffered
	// whole, so this does not size any buffer; it only bounds what a peer may send in one PDU. 256 KiB keeps the
	// per-PDU overhead negligible for large objects.
	DefaultMaxPDULength uint32 = 256 << 10
	// DefaultMaxSendPDULength is the largest PDU we send, as acceptor and as requestor, to a peer whose Maximum
	// Length is larger or unlimited (0): no larger than what we accept by default, so that a peer that advertises
	// no limit still gets PDUs of the size a DICOM implementation expects (maxSendPDU).
	DefaultMaxSendPDULength = DefaultMaxPDULength
	// DefaultARTIMTimeout bounds the wait for the A-ASSOCIATE-RQ after connect and for the peer to close after a
	// release, reject or abort (PS3.8 §9.1.5).
	DefaultARTIMTimeout = 30 * time.Second
	// DefaultIdleTimeout bounds the silence between (and within) PDUs on an established association. Five minutes
	// tolerates modalities that keep an association open between series.
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultWriteTimeout bounds every write to the peer.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultProgressWindow and DefaultMinProgressBytes: a message being received must bring 1 KiB in every 60 s
	// of waiting, 17 bytes a second. Any link that carries DICOM at all does thousands of times that, and a stall
	// of up to a minute (a VPN rekey, retransmissions) passes; a peer that trickles a byte every few seconds to
	// hold its slot is aborted within 60 s of its message's first byte.
	DefaultProgressWindow         = 60 * time.Second
	DefaultMinProgressBytes int64 = 1 << 10
	// DefaultMaxMessageTime bounds the waiting for one whole message: 4 GiB at 10 Mbit/s takes under an hour.
	DefaultMaxMessageTime = 2 * time.Hour
	// DefaultImplementationClassUID and DefaultImplementationVersionName
	// identify this implementation in items 52 and 55, as an acceptor and as
	// a requestor: dicom-ingest's one identity (package version), the one the
	// conformance statement gives and stored objects' File Meta carries.
	DefaultImplementationClassUID    = version.ImplementationClassUID
	DefaultImplementationVersionName = version.ImplementationVersionName

	// MaxAssociatePDULength bounds A-ASSOCIATE-RQ/AC bodies (and any other non-P-DATA PDU) we read whole.
	MaxAssociatePDULength = 1 << 20
	// maxCommandSet bounds a reassembled command set; real ones are a few hundred bytes.
	maxCommandSet  = 64 << 10
	readBufferSize = 64 << 10
)

// Server is a DICOM C-STORE/C-ECHO service class provider. The zero value (with a Handler) is usable.
// Fields must not be changed after serving starts.
type Server struct {
	Addr    string  // for ListenAndServe; default ":11112"
	AETitle string  // the called AE we answer to; empty accepts any AE title (accesscontrol.CheckAETitle, peerAETitles); a mismatch is rejected 01 01 07
	Handler Handler // receives C-STORE; nil answers every C-STORE with 0110 (processing failure)
	// Commitment receives Storage Commitment requests (N-ACTION-RQ). Set, the Storage Commitment Push Model SOP
	// class is negotiated, the requestor as SCU; nil, it is refused (result 3). Results go back with
	// SendEventReport on the association while it lasts, or on one the application opens (Dial).
	Commitment CommitmentHandler

	// Accept is the association policy, called after the called-AE and limit checks. Return a *RejectError to
	// refuse (sent as A-ASSOCIATE-RJ; any other non-nil error is sent as RejectNoReason), nil to accept.
	// nil Accept accepts everyone.
	Accept func(ctx context.Context, req *AssociationInfo) error

	// MaxAssociations and MaxAssociationsPerAE limit concurrent associations (per calling AE title for the
	// latter); 0 = unlimited. Over the limit: A-ASSOCIATE-RJ 02 03 02.
	MaxAssociations, MaxAssociationsPerAE int

	// MaxUnassociated and MaxUnassociatedPerAddr bound the connections that hold no association (accepted and
	// not yet answered, or rejected and not yet closed by the peer), in all and per source address (the PROXY v2
	// source with ProxyProtocol); 0 = unlimited. Past the first the oldest connection still waiting for its
	// A-ASSOCIATE-RQ is closed; a new connection from an address at the second is closed at once. Keep both below
	// the process's file descriptor limit, less what the associations themselves need (see unassociated.go).
	MaxUnassociated, MaxUnassociatedPerAddr int
	// MaxPreAssociationBytes bounds the memory those connections may hold, in all (0 = unlimited): each is
	// charged PreAssociationConnBytes before anything is read from it, PreAssociationTLSBytes more over TLS, and
	// its A-ASSOCIATE-RQ as it arrives. When it is in use, the oldest connections still waiting are closed to
	// make room, or the newcomer when they cannot (EventShed, ErrShedMemory). See memory.go.
	MaxPreAssociationBytes int64

	MaxPDULength uint32 // largest P-DATA-TF we accept (item 51); default DefaultMaxPDULength
	// MaxObjectSize bounds one C-STORE data set (0 = unlimited). Past it the handler's reader fails with
	// ErrObjectTooLarge; the server discards the rest of the object and answers A700 (out of resources).
	MaxObjectSize int64
	ARTIMTimeout  time.Duration // default DefaultARTIMTimeout
	IdleTimeout   time.Duration // default DefaultIdleTimeout; negative disables
	WriteTimeout  time.Duration // default DefaultWriteTimeout; negative disables

	// Progress deadlines, for a DIMSE message being received (from its first byte to the end of its data set).
	// Only time spent waiting for the peer counts, not time the handler takes. In every ProgressWindow of
	// waiting at least MinProgressBytes of its command and data set fragments must arrive (PDU and PDV headers
	// are not progress: empty fragments bring none), and the whole message may take at most MaxMessageTime of
	// waiting; otherwise the association is aborted (A-ABORT, EventAborted with ErrProgressDeadline). Bytes
	// waiting in the socket when a window's end is noticed count toward that window, so a stall of our own process
	// across the deadline does not abort a peer that sent in time. Between messages IdleTimeout alone applies.
	// Defaults DefaultProgressWindow, DefaultMinProgressBytes, DefaultMaxMessageTime; a negative window or time
	// disables that deadline.
	ProgressWindow   time.Duration
	MinProgressBytes int64
	MaxMessageTime   time.Duration

	// ProxyProtocol expects a PROXY protocol v2 header before the first PDU (as sent by an AWS NLB); its source
	// address becomes AssociationInfo.RemoteAddr. Off, a PROXY header is an unrecognized PDU (A-ABORT).
	ProxyProtocol bool
	// AcceptExplicitBigEndian accepts the retired Explicit VR Big Endian transfer syntax.
	AcceptExplicitBigEndian bool

	ImplementationClassUID, ImplementationVersionName string // defaults provided by the package

	Logger   *slog.Logger // nil discards; never receives dataset content
	Observer Observer     // nil = none; lifecycle events for metrics and audit

	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	assocs     map[*association]struct{}
	active     int
	perAE      map[string]int
	unassoc    unassociated
	preBytes   atomic.Int64 // charged to connections without an association (memory.go); changed under mu
	inShutdown atomic.Bool
	idPrefix   string
	nextID     atomic.Uint64
	doneCh     chan struct{} // closed by Shutdown/Close
	// handshakeLog limits the lines of failed TLS handshakes (loglimit.go).
	handshakeLog logLimiter
	// rejectLog limits the lines of rejected associations (loglimit.go).
	rejectLog logLimiter
	// preAssociationLog limits the lines of connections aborted before any association (a first PDU other than
	// an A-ASSOCIATE-RQ, or a malformed one: loglimit.go).
	preAssociationLog logLimiter
}

// Handler stores C-STORE datasets.
type Handler interface {
	// ServeCStore receives the dataset as it arrives (bytes exactly as sent, in req.TransferSyntaxUID), bounded to
	// this object: io.EOF at its end; an error from Read if the association breaks or aborts mid-object (the handler
	// must then discard what it has). Return nil for 0000; an error that is (errors.As) a *dimse.Status or
	// dimse.Status for that status (warnings Bxxx count as stored); any other error or a panic gives 0110
	// (processing failure), never success. If the handler returns before the end of the dataset the server
	// discards the rest and answers; a nil return without having read the whole dataset is answered 0110, since
	// the object cannot have been stored. ctx is cancelled when the server aborts the association (Shutdown
	// deadline, Close, ServeConn's context); a peer's abort shows up as a Read error instead. The reader must not
	// be used after ServeCStore returns.
	ServeCStore(ctx context.Context, req *CStoreRequest, dataset io.Reader) error
}

// CommitmentHandler takes Storage Commitment requests.
type CommitmentHandler interface {
	// ServeCommitment receives the Action Information data set of an N-ACTION-RQ whose command the server has
	// checked (Storage Commitment Push Model, its well-known SOP instance, Action Type ID 1), as it arrives in
	// req.TransferSyntaxUID, bounded to MaxActionInformation bytes (past them Read fails with
	// ErrObjectTooLarge and the server answers 0213). Return nil for 0000 only once the request is durable: the
	// requestor may release then and wait for the result on an association of ours. An error that is a
	// dimse.Status is answered with that status (0115 for a data set that is not a valid request, say); any
	// other error or a panic gives 0110. The reader must not be used after ServeCommitment returns.
	ServeCommitment(ctx context.Context, req *CommitmentRequest, actionInformation io.Reader) error
}

// CommitmentRequest is a received N-ACTION-RQ of the Storage Commitment Push Model.
type CommitmentRequest struct {
	Association           *AssociationInfo
	PresentationContextID byte
	MessageID             uint16
	TransferSyntaxUID     string // of the presentation context: the data set's
	ReceivedAt            time.Time
}

// MaxActionInformation bounds an N-ACTION-RQ's data set: a request naming commitment.MaxRefs instances
// encodes in about 6 MiB.
const MaxActionInformation = 16 << 20

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *CStoreRequest, dataset io.Reader) error

// ServeCStore calls f.
func (f HandlerFunc) ServeCStore(ctx context.Context, req *CStoreRequest, dataset io.Reader) error {
	return f(ctx, req, dataset)
}

// AssociationInfo describes an association (or a requested one, in Accept).
type AssociationInfo struct {
	ID                    string // unique per association, safe for logs
	CallingAE, CalledAE   string // spaces trimmed, each byte outside printable ASCII replaced by '?' (peerAETitles)
	RemoteAddr, LocalAddr net.Addr
	// RemoteAddr is the true source: from the PROXY v2 header when Server.ProxyProtocol is on.
	// PeerImplementationClassUID and PeerImplementationVersionName are the peer's items 52 and 55, cut to 64 and
	// 16 bytes, each byte outside printable ASCII replaced by '?' (see peerImplementation).
	PeerImplementationClassUID, PeerImplementationVersionName string
	PeerMaxPDULength                                          uint32
	// TLS is the connection's TLS state (the peer's verified certificate chains among it) when the association
	// runs over TLS (ServeTLS); nil otherwise. Accept may refuse on it.
	TLS *tls.ConnectionState
	// PeerIdentity is the name the association policy authenticated the peer under, e.g. the certificate name
	// its calling AE title is bound to; Accept may set it, and the events of the association then carry it.
	PeerIdentity string
	// PeerCertificateName names PeerCertificate within bounds (tlstrust.NameOf), once per association, when the
	// A-ASSOCIATE-RQ is decided on: what the audit trail and the log say of it (naming it costs microseconds, which
	// every C-STORE paid); nil without a certificate.
	PeerCertificateName *tlstrust.Name
}

// PeerCertificate is the client certificate the peer presented and TLS verified (the first of TLS.PeerCertificates):
// nil when the association does not run over TLS or the peer presented none.
func (a *AssociationInfo) PeerCertificate() *x509.Certificate {
	if a.TLS == nil || len(a.TLS.PeerCertificates) == 0 {
		return nil
	}
	return a.TLS.PeerCertificates[0]
}

// CStoreRequest is a received C-STORE-RQ.
type CStoreRequest struct {
	Association             *AssociationInfo
	PresentationContextID   byte
	MessageID, Priority     uint16
	AffectedSOPClassUID     string // trailing NUL/space trimmed
	AffectedSOPInstanceUID  string // trailing NUL/space trimmed
	TransferSyntaxUID       string // of the presentation context
	MoveOriginatorAETitle   string
	MoveOriginatorMessageID uint16
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Server) maxPDU() uint32 {
	if s.MaxPDULength == 0 {
		return DefaultMaxPDULength
	}
	return s.MaxPDULength
}

func durOr(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

func (s *Server) artim() time.Duration        { return durOr(s.ARTIMTimeout, DefaultARTIMTimeout) }
func (s *Server) idleTimeout() time.Duration  { return durOr(s.IdleTimeout, DefaultIdleTimeout) }
func (s *Server) writeTimeout() time.Duration { return durOr(s.WriteTimeout, DefaultWriteTimeout) }
func (s *Server) progressWindow() time.Duration {
	return durOr(s.ProgressWindow, DefaultProgressWindow)
}
func (s *Server) maxMessageTime() time.Duration {
	return durOr(s.MaxMessageTime, DefaultMaxMessageTime)
}
func (s *Server) minProgressBytes() int64 {
	if s.MinProgressBytes <= 0 {
		return DefaultMinProgressBytes
	}
	return s.MinProgressBytes
}

func (s *Server) implClassUID() string {
	if s.ImplementationClassUID != "" {
		return s.ImplementationClassUID
	}
	return DefaultImplementationClassUID
}

func (s *Server) implVersion() string {
	v := s.ImplementationVersionName
	if v == "" {
		v = DefaultImplementationVersionName
	}
	if len(v) > 16 {
		v = v[:16]
	}
	return v
}

func (s *Server) init() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.assocs == nil {
		s.assocs = map[*association]struct{}{}
		s.listeners = map[*net.Listener]struct{}{}
		s.perAE = map[string]int{}
		var b [4]byte
		rand.Read(b[:]) // crypto/rand: never returns an error (it crashes the program instead)
		s.idPrefix = hex.EncodeToString(b[:])
		s.doneCh = make(chan struct{})
	}
}

// ListenAndServe listens on s.Addr (default ":11112") and serves.
func (s *Server) ListenAndServe() error {
	if s.inShutdown.Load() {
		return ErrServerClosed
	}
	addr := s.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("dicomnet: listen: %w", err)
	}
	return s.Serve(l)
}

// Serve accepts connections on l and serves one association on each, until Shutdown or Close (ErrServerClosed)
// or until l is closed by someone else. Other accept errors are retried with backoff. It closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	return s.serve(l, nil)
}

// ServeTLS is Serve for DICOM over TLS (PS3.15 Annex B, port 2762 by convention): every connection accepted on l
// (a plain TCP listener, not one from tls.NewListener) runs the TLS handshake with config before its
// A-ASSOCIATE-RQ. With ProxyProtocol the PROXY v2 header is read off the socket first, since a load balancer sends
// it ahead of the TLS bytes. The handshake must end within ARTIMTimeout; a failed one is logged and reported as
// EventHandshakeFailed. config may change what it serves per connection (GetConfigForClient, GetCertificate), so
// a new certificate or client CA applies to new connections while established associations go on. Serve and
// ServeTLS may run side by side on one Server, sharing its limits.
func (s *Server) ServeTLS(l net.Listener, config *tls.Config) error {
	if config == nil {
		l.Close()
		return errors.New("dicomnet: ServeTLS: no TLS configuration")
	}
	return s.serve(l, config)
}

func (s *Server) serve(l net.Listener, tlsConfig *tls.Config) error {
	s.init()
	s.mu.Lock()
	if s.inShutdown.Load() {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[&l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, &l)
		s.mu.Unlock()
		l.Close()
	}()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.inShutdown.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("dicomnet: accept: %w", err)
			}
			if s.shedForDescriptors(err) {
				// Out of descriptors with connections still waiting for their request: one was closed to
				// make room, so try again at once.
				continue
			}
			// Anything else (EMFILE with no connection to shed, ECONNABORTED, timeouts) is treated as
			// transient, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.logger().Warn("dicomnet: accept failed; retrying", "err", err, "delay", delay)
			select {
			case <-time.After(delay):
			case <-s.doneCh:
			}
			continue
		}
		delay = 0
		// The bounds are applied here, before the connection has a goroutine: a connection refused is closed
		// before the next accept, so connections accepted faster than their goroutines run (a busy machine) hold
		// no descriptors past the bounds.
		if a := s.admit(context.Background(), c, tlsConfig); a != nil {
			go s.run(context.Background(), a)
		}
	}
}

// ServeConn serves one association on c (any net.Conn, e.g. net.Pipe in tests) and closes it. It returns when
// the association has ended. ctx cancellation aborts the association.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	s.serveConn(ctx, c, nil)
}

// serveConn serves one association on c, over TLS when tlsConfig is set.
func (s *Server) serveConn(ctx context.Context, c net.Conn, tlsConfig *tls.Config) {
	if a := s.admit(ctx, c, tlsConfig); a != nil {
		s.run(ctx, a)
	}
}

// admit counts c among the server's connections and applies the bounds on connections without an association
// (admitUnassociated) and on their memory (charge). It returns nil when c was refused or the server is shutting
// down, c closed; otherwise run serves the association. Nothing is read from c.
func (s *Server) admit(ctx context.Context, c net.Conn, tlsConfig *tls.Config) *association {
	s.init()
	a := newAssociation(s, c, ctx, tlsConfig)
	s.mu.Lock()
	if s.inShutdown.Load() {
		s.mu.Unlock()
		a.cancel()
		c.Close()
		return nil
	}
	s.assocs[a] = struct{}{}
	s.mu.Unlock()
	if s.admitUnassociated(a) != nil {
		a.cancel()
		c.Close()
		s.forget(a)
		return nil
	}
	// Nothing is read before the connection has the memory it may hold until it associates.
	if err := a.charge(preAssociationCost(tlsConfig != nil)); err != nil {
		a.shedForMemory()
		a.cancel()
		c.Close()
		s.forget(a)
		return nil
	}
	return a
}

// run serves a, which admit returned, and then forgets it.
func (s *Server) run(ctx context.Context, a *association) {
	defer s.forget(a)
	a.serve(ctx)
}

// forget takes a, over, out of the server's counts.
func (s *Server) forget(a *association) {
	a.closeOutbox()
	s.releaseSlot(a)
	s.leaveUnassociated(a)
	a.releaseCharge()
	s.mu.Lock()
	delete(s.assocs, a)
	s.mu.Unlock()
}

// reserveSlot applies the association limits and counts a new association.
func (s *Server) reserveSlot(a *association) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.MaxAssociations > 0 && s.active >= s.MaxAssociations {
		return false
	}
	ae := a.info.CallingAE
	if s.MaxAssociationsPerAE > 0 && s.perAE[ae] >= s.MaxAssociationsPerAE {
		return false
	}
	s.active++
	s.perAE[ae]++
	a.hasSlot = true
	return true
}

// releaseSlot frees a's slot; it is idempotent.
func (s *Server) releaseSlot(a *association) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !a.hasSlot {
		return
	}
	a.hasSlot = false
	s.active--
	ae := a.info.CallingAE
	if s.perAE[ae]--; s.perAE[ae] <= 0 {
		delete(s.perAE, ae)
	}
}

// ActiveAssociations returns the number of established associations (those holding a slot).
func (s *Server) ActiveAssociations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active
}

func (s *Server) closeListeners() {
	for l := range s.listeners {
		(*l).Close()
	}
}

// Shutdown stops accepting connections, closes connections that have no association in progress (not yet
// requested, or already ended and waiting for the peer to close), rejects association requests that race with it
// (02 03 01) and waits for established associations to end. When ctx ends first it
// aborts the remaining associations (A-ABORT) and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopAccepting()
	if _, err := s.untilNoConns(ctx, s.closeIdleLocked); err != nil {
		s.abortAll()
		return err
	}
	return nil
}

// Wait blocks until every connection the server was serving has been handled to its end, so that the final
// events of associations aborted by Shutdown's deadline or Close (EventStoreFailed for a C-STORE cut short,
// EventAborted) have been observed. Call it after Shutdown or Close; it returns ctx.Err() if ctx ends first
// (a handler that ignores its cancelled context).
func (s *Server) Wait(ctx context.Context) error {
	s.init()
	if n, err := s.untilNoConns(ctx, func() {}); err != nil {
		return fmt.Errorf("dicomnet: wait: %d connections still open: %w", n, err)
	}
	return nil
}

// untilNoConns polls every 10 ms, calling each with s.mu held, until no connection is being served or ctx ends
// (then it returns how many are left and ctx.Err()).
func (s *Server) untilNoConns(ctx context.Context, each func()) (int, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		each()
		n := len(s.assocs)
		s.mu.Unlock()
		if n == 0 {
			return 0, nil
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-t.C:
		}
	}
}

// stopAccepting marks the server as shutting down (racing association
// requests get 02 03 01), closes the listeners and ends the accept loops.
func (s *Server) stopAccepting() {
	s.init()
	s.inShutdown.Store(true)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeListeners()
	select {
	case <-s.doneCh:
	default:
		close(s.doneCh)
	}
}

// closeIdleLocked closes connections with no association to finish: not yet associated (Sta1/Sta2) or already
// released, rejected or aborted and waiting for the peer to close (Sta13).
func (s *Server) closeIdleLocked() {
	for a := range s.assocs {
		if st := a.stateNow(); st <= sta2 || st == sta13 {
			a.nc.Close()
		}
	}
}

// Close closes the listeners and aborts every association immediately.
func (s *Server) Close() error {
	s.stopAccepting()
	s.abortAll()
	return nil
}

// abortAll aborts every association in parallel (each abort may wait about a second for a write in progress)
// without holding s.mu.
func (s *Server) abortAll() {
	s.mu.Lock()
	list := make([]*association, 0, len(s.assocs))
	for a := range s.assocs {
		list = append(list, a)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range list {
		wg.Go(a.abortFromOutside)
	}
	wg.Wait()
}

// AbortTLS aborts every association running over TLS whose connection state refuse now refuses (the TLS
// listener's trust changed since its handshake: its client certificate revoked, its CA no longer trusted, or
// expired), as the drain timeout does (A-ABORT, AA-1), the object being received not stored, and returns how
// many it aborted. Each ends with refuse's error as its reason (its log line, Event.Err and so its audit
// record). It checks every association whose A-ASSOCIATE-RQ has been read (its handshake is over; one still in it
// is not waited for), accepted or not yet: one whose Accept passed it under the earlier trust is found here, and
// Accept, checking the trust in use (scp-task's does), refuses one requested after the change, which this does not
// see. One aborted already (by an earlier call, or the drain) is not counted again, though it is established until
// its handler returns.
func (s *Server) AbortTLS(refuse func(*tls.ConnectionState) error) int {
	type refused struct {
		a   *association
		err error
	}
	s.mu.Lock()
	open := make([]*association, 0, len(s.assocs))
	for a := range s.assocs {
		open = append(open, a)
	}
	s.mu.Unlock()
	var list []refused
	for _, a := range open {
		if st := a.stateNow(); st < sta3 || st > sta12 || a.outsideAbort.Load() {
			continue
		}
		if st := a.tlsState(); st != nil {
			if err := refuse(st); err != nil {
				list = append(list, refused{a, err})
			}
		}
	}
	var wg sync.WaitGroup
	var n atomic.Int64
	for _, r := range list {
		wg.Go(func() {
			if r.a.abortFromOutsideFor(fmt.Errorf("dicomnet: aborted: %w", r.err)) {
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return int(n.Load())
}

// InstanceID names this server for as long as the process runs: the
// prefix of every association id it gives (<instance>-<n>), so a record
// of the process (its start and stop in the audit trail) relates to the
// associations it served.
func (s *Server) InstanceID() string {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.idPrefix
}

func (s *Server) newID() string {
	return fmt.Sprintf("%s-%d", s.idPrefix, s.nextID.Add(1))
}

func (s *Server) observe(ev Event) {
	if s.Observer == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	defer func() {
		if p := recover(); p != nil {
			s.logger().Error("dicomnet: observer panicked", "panic", panicvalue.Describe(p))
		}
	}()
	s.Observer.ObserveAssociation(ev)
}

// trimAE trims the padding of an AE title.
func trimAE(s string) string { return strings.Trim(s, " \x00") }

// callHandler runs the C-STORE handler, converting its result (or panic) to a status.
func (s *Server) callHandler(ctx context.Context, req *CStoreRequest, r io.Reader, log *slog.Logger) (dimse.Status, error) {
	if s.Handler == nil {
		return dimse.Status{Code: dimse.StatusProcessingFailure, Comment: "no storage handler"}, errors.New("dicomnet: no handler")
	}
	return callSafely(log, "C-STORE", func() error { return s.Handler.ServeCStore(ctx, req, r) })
}

// callSafely runs a handler, converting its result (or panic) to a status.
// A panic's value is told as panicvalue.Describe tells it, in the log line
// and in the error (the failure's audit record and log line say it too).
func callSafely(log *slog.Logger, what string, f func() error) (st dimse.Status, err error) {
	defer func() {
		if p := recover(); p != nil {
			v := panicvalue.Describe(p)
			log.Error("dicomnet: "+what+" handler panicked", "panic", v)
			st = handlerFailed
			err = fmt.Errorf("dicomnet: handler panic: %s", v)
		}
	}()
	err = f()
	return statusFromError(err), err
}

// statusFromError maps a handler result to a DIMSE status.
func statusFromError(err error) dimse.Status {
	if err == nil {
		return dimse.Status{Code: dimse.StatusSuccess}
	}
	var sp *dimse.Status
	if errors.As(err, &sp) && sp != nil {
		return *sp
	}
	var sv dimse.Status
	if errors.As(err, &sv) {
		return sv
	}
	return handlerFailed
}

// handlerFailed answers a handler that failed other than by a status, or panicked: 0110 with an Error Comment, as
// every failure has (conformance.md; it said nothing), which names no value (the error, which may, goes to the log
// line and the audit record only).
var handlerFailed = dimse.Status{Code: dimse.StatusProcessingFailure, Comment: "internal failure of the SCP, please retry"}

// bufioReaderPool recycles the per-association read buffers.
var bufioReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}
