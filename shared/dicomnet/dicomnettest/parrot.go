package dicomnettest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// Parrot is a scripted, possibly misbehaving DICOM peer (after pynetdicom's tests/parrot.py): it writes raw bytes
// or PDUs and checks what the server answers. Its methods fail the test on unexpected outcomes; use it from the
// test goroutine only.
type Parrot struct {
	tb      testing.TB
	Conn    net.Conn
	br      *bufio.Reader
	Timeout time.Duration // per expected PDU; default 5s
}

// DialParrot connects a Parrot to addr.
func DialParrot(tb testing.TB, addr string) *Parrot {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatalf("parrot: dial: %v", err)
	}
	return NewParrot(tb, c)
}

// NewParrot wraps an existing connection (e.g. one end of net.Pipe).
func NewParrot(tb testing.TB, c net.Conn) *Parrot {
	p := &Parrot{tb: tb, Conn: c, br: bufio.NewReader(c), Timeout: 5 * time.Second}
	tb.Cleanup(func() { c.Close() })
	return p
}

// Send writes raw bytes.
func (p *Parrot) Send(b []byte) {
	p.tb.Helper()
	_ = p.Conn.SetWriteDeadline(time.Now().Add(p.Timeout))
	if _, err := p.Conn.Write(b); err != nil {
		p.tb.Fatalf("parrot: write: %v", err)
	}
}

// SendPDU encodes and writes one PDU.
func (p *Parrot) SendPDU(x pdu.PDU) {
	p.tb.Helper()
	b, err := pdu.Encode(x)
	if err != nil {
		p.tb.Fatalf("parrot: encode: %v", err)
	}
	p.Send(b)
}

// Next reads the next PDU.
func (p *Parrot) Next() (pdu.PDU, error) {
	_ = p.Conn.SetReadDeadline(time.Now().Add(p.Timeout))
	return pdu.Read(p.br, 1<<24)
}

// NextRaw reads the next PDU as the bytes it came in, header included.
func (p *Parrot) NextRaw() ([]byte, error) {
	_ = p.Conn.SetReadDeadline(time.Now().Add(p.Timeout))
	b := make([]byte, pdu.HeaderLen)
	if _, err := io.ReadFull(p.br, b); err != nil {
		return nil, err
	}
	h, _ := pdu.ParseHeader(b)
	body, err := pdu.ReadBody(p.br, h.Length, 1<<24)
	return append(b, body...), err
}

// Expect reads the next PDU and fails unless it has type t.
func (p *Parrot) Expect(t pdu.Type) pdu.PDU {
	p.tb.Helper()
	x, err := p.Next()
	if err != nil {
		p.tb.Fatalf("parrot: want %s, read error: %v", t, err)
	}
	if x.Type() != t {
		p.tb.Fatalf("parrot: want %s, got %s %+v", t, x.Type(), x)
	}
	return x
}

// ExpectAbort reads an A-ABORT and checks its source and reason.
func (p *Parrot) ExpectAbort(source, reason byte) {
	p.tb.Helper()
	a := p.Expect(pdu.TypeAbort).(*pdu.Abort)
	if a.Source != source || a.Reason != reason {
		p.tb.Fatalf("parrot: A-ABORT source %d reason %d, want %d %d", a.Source, a.Reason, source, reason)
	}
}

// ExpectReject reads an A-ASSOCIATE-RJ and checks it.
func (p *Parrot) ExpectReject(result, source, reason byte) {
	p.tb.Helper()
	rj := p.Expect(pdu.TypeAssociateRJ).(*pdu.AssociateRJ)
	if rj.Result != result || rj.Source != source || rj.Reason != reason {
		p.tb.Fatalf("parrot: A-ASSOCIATE-RJ %02x %02x %02x, want %02x %02x %02x", rj.Result, rj.Source, rj.Reason, result, source, reason)
	}
}

// ExpectClosed fails unless the server closes the connection without sending anything more.
func (p *Parrot) ExpectClosed() {
	p.tb.Helper()
	_ = p.Conn.SetReadDeadline(time.Now().Add(p.Timeout))
	b, err := p.br.ReadByte()
	if err == nil {
		p.tb.Fatalf("parrot: want connection closed, got byte %#x", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		p.tb.Fatalf("parrot: want connection closed, still open after %v", p.Timeout)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) && !errors.Is(err, os.ErrClosed) && !isReset(err) {
		p.tb.Logf("parrot: connection ended with %v", err)
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

// AssociateRQ builds an A-ASSOCIATE-RQ proposing Verification (id 1) and CT Image Storage in Explicit VR LE (id 3).
func AssociateRQ(calling, called string) *pdu.AssociateRQ {
	return &pdu.AssociateRQ{
		ProtocolVersion: pdu.ProtocolVersion, CallingAE: calling, CalledAE: called,
		ApplicationContext: dicomuid.ApplicationContext,
		PresentationContexts: []pdu.PresentationContextRQ{
			{ID: 1, AbstractSyntax: dicomuid.Verification, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}},
			{ID: 3, AbstractSyntax: dicomuid.CTImageStorage, TransferSyntaxes: []string{dicomuid.ExplicitVRLittleEndian}},
		},
		UserInformation: pdu.UserInformation{MaxPDULength: 16384, ImplementationClassUID: "1.2.3.4"},
	}
}

// CommitmentAssociateRQ is AssociateRQ with Storage Commitment Push Model proposed too, as context 5 in transfer
// syntax ts: what a PACS asking for commitment proposes.
func CommitmentAssociateRQ(calling, called, ts string) *pdu.AssociateRQ {
	rq := AssociateRQ(calling, called)
	rq.PresentationContexts = append(rq.PresentationContexts, pdu.PresentationContextRQ{ID: 5,
		AbstractSyntax: dicomuid.StorageCommitment, TransferSyntaxes: []string{ts}})
	return rq
}

// Associate sends rq and expects an A-ASSOCIATE-AC.
func (p *Parrot) Associate(rq *pdu.AssociateRQ) *pdu.AssociateAC {
	p.tb.Helper()
	p.SendPDU(rq)
	return p.Expect(pdu.TypeAssociateAC).(*pdu.AssociateAC)
}

// PDV builds one P-DATA-TF PDU with the given PDVs.
func PDV(ctxID, control byte, data []byte) pdu.PDV {
	return pdu.PDV{ContextID: ctxID, Control: control, Data: data}
}

// SendPDVs sends one P-DATA-TF PDU holding the PDVs.
func (p *Parrot) SendPDVs(pdvs ...pdu.PDV) {
	p.tb.Helper()
	p.SendPDU(&pdu.PDataTF{PDVs: pdvs})
}

// CommandPDV encodes a command set as a single last command PDV.
func CommandPDV(ctxID byte, c *dimse.Command) pdu.PDV {
	return pdu.PDV{ContextID: ctxID, Control: pdu.ControlCommand | pdu.ControlLast, Data: c.Encode()}
}

// ExpectCommand reads P-DATA until a complete command set arrives and decodes it.
func (p *Parrot) ExpectCommand() *dimse.Command {
	p.tb.Helper()
	var buf []byte
	for {
		x := p.Expect(pdu.TypePDataTF).(*pdu.PDataTF)
		for _, v := range x.PDVs {
			if !v.IsCommand() {
				p.tb.Fatalf("parrot: unexpected data set PDV")
			}
			buf = append(buf, v.Data...)
			if v.IsLast() {
				c, err := dimse.Decode(buf)
				if err != nil {
					p.tb.Fatalf("parrot: decode command: %v", err)
				}
				return c
			}
		}
	}
}

// SendMessage sends a command and, when ds is not nil, its data set, each as one last PDV in a P-DATA-TF of its
// own.
func (p *Parrot) SendMessage(ctxID byte, c *dimse.Command, ds []byte) {
	p.tb.Helper()
	p.SendPDVs(CommandPDV(ctxID, c))
	if ds != nil {
		p.SendPDVs(PDV(ctxID, pdu.ControlLast, ds))
	}
}

// PeerFiller is the free text PeerComment repeats.
const PeerFiller = "free text of the PACS; "

// PeerComment is an Error Comment as a PACS may write it, which SendResponseWithComment sends whole: a person's
// name, the UIDs given, then PeerFiller over 10 KB. None of it is for our logs or audit trail.
func PeerComment(name string, uids ...string) string {
	return "rejected for " + name + ": " + strings.Join(uids, ", ") + "; " + strings.Repeat(PeerFiller, 10<<10/len(PeerFiller)+1)
}

// SendResponseWithComment sends c, a response, with comment whole as its Error Comment (0000,0902), however long,
// as one last command PDV: what a PACS that does not hold to LO's 64 characters sends (Encode cuts a comment to
// them, as we send it).
func (p *Parrot) SendResponseWithComment(ctxID byte, c *dimse.Command, comment string) {
	p.tb.Helper()
	plain := *c
	plain.Present &^= dimse.HasErrorComment
	b := plain.Encode()
	if len(comment)%2 == 1 {
		comment += " "
	}
	b = binary.LittleEndian.AppendUint32(b, 0x0902<<16) // (0000,0902): group 0000, then element 0902
	b = binary.LittleEndian.AppendUint32(b, uint32(len(comment)))
	b = append(b, comment...)
	binary.LittleEndian.PutUint32(b[8:], uint32(len(b)-12)) // Command Group Length: after its own 12 bytes
	p.SendPDVs(pdu.PDV{ContextID: ctxID, Control: pdu.ControlCommand | pdu.ControlLast, Data: b})
}

// ExpectMessage reads P-DATA until a complete message arrives: its command set and, when the command announces
// one, its data set.
func (p *Parrot) ExpectMessage() (*dimse.Command, []byte) {
	p.tb.Helper()
	var cmd, ds []byte
	var c *dimse.Command
	for {
		x := p.Expect(pdu.TypePDataTF).(*pdu.PDataTF)
		for _, v := range x.PDVs {
			if v.IsCommand() {
				if c != nil {
					p.tb.Fatalf("parrot: command PDV inside a data set")
				}
				cmd = append(cmd, v.Data...)
				if !v.IsLast() {
					continue
				}
				var err error
				if c, err = dimse.Decode(cmd); err != nil {
					p.tb.Fatalf("parrot: decode command: %v", err)
				}
				if !c.HasDataSet() {
					return c, nil
				}
				continue
			}
			if c == nil {
				p.tb.Fatalf("parrot: data set PDV before the command")
			}
			ds = append(ds, v.Data...)
			if v.IsLast() {
				return c, ds
			}
		}
	}
}

// ParrotListener accepts connections on 127.0.0.1:0 as Parrots: the acceptor's side, scripted, for testing a
// client.
type ParrotListener struct {
	tb   testing.TB
	l    net.Listener
	Addr string // host:port to dial
}

// ListenParrot listens on 127.0.0.1:0 until the test ends.
func ListenParrot(tb testing.TB) *ParrotListener {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("parrot: listen: %v", err)
	}
	tb.Cleanup(func() { l.Close() })
	return &ParrotListener{tb: tb, l: l, Addr: l.Addr().String()}
}

// Accept waits up to 10 s for the next connection; nil (with the test failed) when none comes.
func (pl *ParrotListener) Accept() *Parrot {
	type accepted struct {
		c   net.Conn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := pl.l.Accept()
		ch <- accepted{c, err}
	}()
	select {
	case a := <-ch:
		if a.err != nil {
			pl.tb.Errorf("parrot: accept: %v", a.err)
			return nil
		}
		return NewParrot(pl.tb, a.c)
	case <-time.After(10 * time.Second):
		pl.tb.Errorf("parrot: no connection within 10s")
		return nil
	}
}

// AcceptAssociation reads an A-ASSOCIATE-RQ and accepts it: every proposed context with its first transfer
// syntax, and each role selection item answered with answer(item) (nil leaves the item unanswered). It returns
// the request.
func (p *Parrot) AcceptAssociation(answer func(pdu.RoleSelection) *pdu.RoleSelection) *pdu.AssociateRQ {
	p.tb.Helper()
	return p.AcceptAssociationMax(16384, answer)
}

// AcceptAssociationMax is AcceptAssociation advertising maxPDU as the parrot's Maximum Length Received (0:
// unlimited).
func (p *Parrot) AcceptAssociationMax(maxPDU uint32, answer func(pdu.RoleSelection) *pdu.RoleSelection) *pdu.AssociateRQ {
	p.tb.Helper()
	rq := p.Expect(pdu.TypeAssociateRQ).(*pdu.AssociateRQ)
	ac := &pdu.AssociateAC{ProtocolVersion: pdu.ProtocolVersion, CalledAE: rq.CalledAE, CallingAE: rq.CallingAE,
		ApplicationContext: rq.ApplicationContext,
		UserInformation:    pdu.UserInformation{MaxPDULength: maxPDU, ImplementationClassUID: "1.2.3.4"}}
	for _, pc := range rq.PresentationContexts {
		ac.PresentationContexts = append(ac.PresentationContexts, pdu.PresentationContextAC{ID: pc.ID, TransferSyntax: pc.TransferSyntaxes[0]})
	}
	for _, r := range rq.UserInformation.RoleSelections {
		if a := answer(r); a != nil {
			ac.UserInformation.RoleSelections = append(ac.UserInformation.RoleSelections, *a)
		}
	}
	p.SendPDU(ac)
	return rq
}
