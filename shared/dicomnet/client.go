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

// ClientConfig configures Dial.
type ClientConfig struct {
	CallingAE, CalledAE string
	// MaxPDULength is what we accept from the peer (item 51); default DefaultMaxPDULength.
	MaxPDULength uint32
	// MaxSendPDULength caps the PDUs we send even if the peer accepts more (0 = 256 KiB). The peer's own limit
	// always applies.
	MaxSendPDULength uint32
	// Contexts are proposed in order with ids 1, 3, 5…; nil proposes Verification only.
	Contexts []ProposedContext
	// DialTimeout bounds connecting; ResponseTimeout bounds every wait for the peer (association answer, DIMSE
	// response, release); WriteTimeout bounds every write. Defaults: 30s, 60s, 30s; negative disables.
	DialTimeout, ResponseTimeout, WriteTimeout        time.Duration
	ImplementationClassUID, ImplementationVersionName string
	// Dial replaces net.Dialer (e.g. to go through a proxy or use net.Pipe).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ProxyHeader, if set, is written before the A-ASSOCIATE-RQ (e.g. a PROXY v2 header in tests).
	ProxyHeader []byte
}

// ProposedContext is one presentation context to propose.
type ProposedContext struct {
	AbstractSyntax   string
	TransferSyntaxes []string
}

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
type ClientAssociation struct {
	cfg      ClientConfig
	nc       net.Conn
	br       *bufio.Reader
	accepted []AcceptedContext
	rejected []pdu.PresentationContextAC
	peerMax  uint32
	msgID    uint16
	buf      [2][]byte // double buffer for streaming data sets
	cmdBuf   []byte
	closed   bool
	// PeerImplementationClassUID and PeerImplementationVersionName come from the A-ASSOCIATE-AC.
	PeerImplementationClassUID, PeerImplementationVersionName string
}

func (c *ClientConfig) responseTimeout() time.Duration {
	return durOr(c.ResponseTimeout, 60*time.Second)
}
func (c *ClientConfig) writeTimeout() time.Duration {
	return durOr(c.WriteTimeout, DefaultWriteTimeout)
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
	dial := cfg.Dial
	if dial == nil {
		d := &net.Dialer{Timeout: durOr(cfg.DialTimeout, 30*time.Second)}
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dicomnet: dial: %w", err)
	}
	a := &ClientAssociation{cfg: cfg, nc: nc, br: bufio.NewReaderSize(nc, readBufferSize)}
	if err := a.associate(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return a, nil
}

func (a *ClientAssociation) associate(ctx context.Context) error {
	cfg := &a.cfg
	impl, ver := cfg.ImplementationClassUID, cfg.ImplementationVersionName
	if impl == "" {
		impl, ver = DefaultImplementationClassUID, DefaultImplementationVersionName
	}
	rq := &pdu.AssociateRQ{ProtocolVersion: pdu.ProtocolVersion, CalledAE: cfg.CalledAE, CallingAE: cfg.CallingAE,
		ApplicationContext: dicomuid.ApplicationContext,
		UserInformation: pdu.UserInformation{MaxPDULength: cfg.MaxPDULength, ImplementationClassUID: impl,
			ImplementationVersionName: ver}}
	for i, pc := range cfg.Contexts {
		rq.PresentationContexts = append(rq.PresentationContexts, pdu.PresentationContextRQ{ID: byte(2*i + 1),
			AbstractSyntax: pc.AbstractSyntax, TransferSyntaxes: pc.TransferSyntaxes})
	}
	b, err := pdu.Encode(rq)
	if err != nil {
		return fmt.Errorf("dicomnet: associate: %w", err)
	}
	if len(cfg.ProxyHeader) > 0 {
		b = append(append([]byte{}, cfg.ProxyHeader...), b...)
	}
	stop := a.interruptOn(ctx)
	defer stop()
	if err := a.write(b); err != nil {
		return fmt.Errorf("dicomnet: associate: %w", err)
	}
	p, err := a.readPDU()
	if err != nil {
		return fmt.Errorf("dicomnet: associate: %w", err)
	}
	switch p := p.(type) {
	case *pdu.AssociateAC:
		a.peerMax = p.UserInformation.MaxPDULength
		a.PeerImplementationClassUID = p.UserInformation.ImplementationClassUID
		a.PeerImplementationVersionName = p.UserInformation.ImplementationVersionName
		proposed := map[byte]ProposedContext{}
		for i, pc := range cfg.Contexts {
			proposed[byte(2*i+1)] = pc
		}
		for _, r := range p.PresentationContexts {
			pc, ok := proposed[r.ID]
			if !ok {
				continue
			}
			if r.Result == pdu.ResultAcceptance {
				a.accepted = append(a.accepted, AcceptedContext{ID: r.ID, AbstractSyntax: pc.AbstractSyntax, TransferSyntax: r.TransferSyntax})
			} else {
				a.rejected = append(a.rejected, r)
			}
		}
		return nil
	case *pdu.AssociateRJ:
		return &RejectError{Result: p.Result, Source: p.Source, Reason: p.Reason}
	case *pdu.Abort:
		return &AbortError{Source: p.Source, Reason: p.Reason}
	default:
		abortErr := a.abortWith(pdu.AbortSourceServiceProvider, pdu.AbortReasonUnexpectedPDU)
		return errors.Join(fmt.Errorf("dicomnet: associate: unexpected %s", p.Type()), abortErr)
	}
}

// AcceptedContexts returns the presentation contexts the peer accepted.
func (a *ClientAssociation) AcceptedContexts() []AcceptedContext { return a.accepted }

// RejectedContexts returns the peer's answers for the contexts it did not accept.
func (a *ClientAssociation) RejectedContexts() []pdu.PresentationContextAC { return a.rejected }

// PeerMaxPDULength is the peer's maximum PDU length (0 = unlimited).
func (a *ClientAssociation) PeerMaxPDULength() uint32 { return a.peerMax }

func (a *ClientAssociation) write(b []byte) error {
	if wt := a.cfg.writeTimeout(); wt > 0 {
		if err := a.nc.SetWriteDeadline(time.Now().Add(wt)); err != nil {
			return err
		}
	}
	_, err := a.nc.Write(b)
	return err
}

func (a *ClientAssociation) readPDU() (pdu.PDU, error) {
	if rt := a.cfg.responseTimeout(); rt > 0 {
		if err := a.nc.SetReadDeadline(time.Now().Add(rt)); err != nil {
			return nil, err
		}
	}
	return pdu.Read(a.br, max(a.cfg.MaxPDULength, maxAssociatePDU))
}

// interruptOn makes a blocked read or write return once ctx ends; the
// returned function stops that. A deadline that cannot be set means the
// connection is closed already, which interrupts as well.
func (a *ClientAssociation) interruptOn(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() {
		if err := a.nc.SetDeadline(time.Now()); err != nil {
			a.nc.Close()
		}
	})
}

// abortWith sends an A-ABORT and closes. The abort is best effort by
// nature (PS3.8 AA-1): if the peer cannot take it, closing the connection
// tells it just the same, so a failed write only returns that error.
func (a *ClientAssociation) abortWith(source, reason byte) error {
	b, err := pdu.Encode(&pdu.Abort{Source: source, Reason: reason})
	if err == nil {
		err = a.write(b)
	}
	a.closed = true
	if cerr := a.nc.Close(); err == nil {
		err = cerr
	}
	return err
}

// peerAbort looks, briefly, for an A-ABORT the peer sent before a write failed, to report why.
func (a *ClientAssociation) peerAbort() error {
	if err := a.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		return nil // closed: nothing more to read, the write error stands
	}
	for {
		p, err := pdu.Read(a.br, max(a.cfg.MaxPDULength, maxAssociatePDU))
		if err != nil {
			return nil
		}
		if ab, ok := p.(*pdu.Abort); ok {
			a.closed = true
			a.nc.Close()
			return &AbortError{Source: ab.Source, Reason: ab.Reason}
		}
	}
}

// Abort sends an A-ABORT and closes the connection.
func (a *ClientAssociation) Abort() error {
	if a.closed {
		return nil
	}
	if err := a.abortWith(pdu.AbortSourceServiceUser, 0); err != nil {
		return fmt.Errorf("dicomnet: abort: %w", err)
	}
	return nil
}

// Release performs an orderly release (A-RELEASE-RQ, wait for A-RELEASE-RP) and closes the connection.
func (a *ClientAssociation) Release(ctx context.Context) error {
	if a.closed {
		return errors.New("dicomnet: release: association closed")
	}
	defer func() { a.closed = true; a.nc.Close() }()
	stop := a.interruptOn(ctx)
	defer stop()
	b, _ := pdu.Encode(&pdu.ReleaseRQ{})
	if err := a.write(b); err != nil {
		return fmt.Errorf("dicomnet: release: %w", err)
	}
	for {
		p, err := a.readPDU()
		if err != nil {
			return fmt.Errorf("dicomnet: release: %w", err)
		}
		switch p := p.(type) {
		case *pdu.ReleaseRP:
			return nil
		case *pdu.Abort:
			return fmt.Errorf("dicomnet: release: %w", &AbortError{Source: p.Source, Reason: p.Reason})
		case *pdu.PDataTF:
			continue // late data from the peer: ignored while releasing
		default:
			return fmt.Errorf("dicomnet: release: unexpected %s", p.Type())
		}
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
func (a *ClientAssociation) maxSend() uint32 {
	m := a.cfg.MaxSendPDULength
	if m == 0 {
		m = 256 << 10
	}
	if a.peerMax != 0 && a.peerMax < m {
		m = a.peerMax
	}
	return max(m, 8)
}

func (a *ClientAssociation) sendCommand(ctxID byte, cmd *dimse.Command) error {
	a.cmdBuf = appendMessage(a.cmdBuf[:0], ctxID, pdu.ControlCommand, cmd.Encode(), a.maxSend())
	return a.write(a.cmdBuf)
}

// Echo sends a C-ECHO-RQ and waits for the response; a non-success status is returned as dimse.Status.
func (a *ClientAssociation) Echo(ctx context.Context) error {
	pc, ok := a.contextFor(dicomuid.Verification, "")
	if !ok {
		return errors.New("dicomnet: echo: Verification was not accepted")
	}
	stop := a.interruptOn(ctx)
	defer stop()
	rq := dimse.NewCEchoRQ(a.nextMessageID())
	if err := a.sendCommand(pc.ID, rq); err != nil {
		return fmt.Errorf("dicomnet: echo: %w", err)
	}
	rsp, err := a.readResponse(rq.MessageID)
	if err != nil {
		return fmt.Errorf("dicomnet: echo: %w", err)
	}
	if st := (dimse.Status{Code: rsp.Status, Comment: rsp.ErrorComment}); !st.IsSuccess() {
		return st
	}
	return nil
}

// readResponse reads P-DATA until a complete command set answering msgID arrives.
func (a *ClientAssociation) readResponse(msgID uint16) (*dimse.Command, error) {
	var cmd []byte
	for {
		p, err := a.readPDU()
		if err != nil {
			return nil, err
		}
		switch p := p.(type) {
		case *pdu.PDataTF:
			for _, v := range p.PDVs {
				if !v.IsCommand() {
					continue // a data set in a response: not used by C-ECHO/C-STORE
				}
				cmd = append(cmd, v.Data...)
				if !v.IsLast() {
					continue
				}
				c, err := dimse.Decode(cmd)
				if err != nil {
					abortErr := a.abortWith(pdu.AbortSourceServiceProvider, pdu.AbortReasonInvalidParamValue)
					return nil, errors.Join(err, abortErr)
				}
				cmd = cmd[:0]
				if c.Has(dimse.HasMessageIDBeingRespondedTo) && c.MessageIDBeingRespondedTo != msgID {
					continue
				}
				return c, nil
			}
		case *pdu.Abort:
			a.closed = true
			a.nc.Close()
			return nil, &AbortError{Source: p.Source, Reason: p.Reason}
		default:
			abortErr := a.abortWith(pdu.AbortSourceServiceProvider, pdu.AbortReasonUnexpectedPDU)
			return nil, errors.Join(fmt.Errorf("dicomnet: unexpected %s", p.Type()), abortErr)
		}
	}
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
	if a.closed {
		return dimse.Status{}, errors.New("dicomnet: store: association closed")
	}
	stop := a.interruptOn(ctx)
	defer stop()
	rq := dimse.NewCStoreRQ(a.nextMessageID(), sopClassUID, sopInstanceUID, dimse.PriorityMedium)
	if err := a.sendCommand(pc.ID, rq); err != nil {
		return dimse.Status{}, fmt.Errorf("dicomnet: store: %w", err)
	}
	if err := a.sendDataSet(pc.ID, dataset); err != nil {
		if abort := a.peerAbort(); abort != nil {
			return dimse.Status{}, fmt.Errorf("dicomnet: store: %w (sending: %w)", abort, err)
		}
		a.Abort()
		return dimse.Status{}, fmt.Errorf("dicomnet: store: %w", err)
	}
	rsp, err := a.readResponse(rq.MessageID)
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
		if err := a.write(cur[:hdr+n]); err != nil {
			return err
		}
		if last {
			return nil
		}
		cur, next, n = next, cur, m
	}
}
