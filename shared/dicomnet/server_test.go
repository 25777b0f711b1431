package dicomnet_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/proxyproto"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// recorder is an Observer that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []dicomnet.Event
	ch     chan dicomnet.Event
}

func newRecorder() *recorder { return &recorder{ch: make(chan dicomnet.Event, 100)} }

func (r *recorder) ObserveAssociation(ev dicomnet.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	r.ch <- ev
}

// waitFor returns the first event of type t, failing after 5s.
func (r *recorder) waitFor(t *testing.T, typ dicomnet.EventType) dicomnet.Event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-r.ch:
			if ev.Type == typ {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event", typ)
		}
	}
}

// result is what a capturing handler saw.
type result struct {
	req  *dicomnet.CStoreRequest
	data []byte
	err  error
}

// capture is a handler that reads the whole data set and reports it.
func capture(ch chan<- result) dicomnet.Handler {
	return dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
		b, err := io.ReadAll(r)
		ch <- result{req: req, data: b, err: err}
		return err
	})
}

func storeCfg(maxPDU uint32) dicomnet.ClientConfig {
	return dicomnet.ClientConfig{CallingAE: "SCU", CalledAE: "SCP", MaxPDULength: maxPDU,
		Contexts: append(dicomnet.StorageContexts([]string{dicomuid.CTImageStorage, dicomuid.MRImageStorage},
			dicomuid.JPEGBaseline8Bit, dicomuid.ExplicitVRLittleEndian),
			dicomnet.ProposedContext{AbstractSyntax: dicomuid.Verification, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}})}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>9)
	}
	return b
}

func TestStoreSizes(t *testing.T) {
	ch := make(chan result, 1)
	rec := newRecorder()
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{AETitle: "SCP", Handler: capture(ch), Observer: rec, MaxPDULength: 4096})
	ctx := context.Background()
	a, err := dicomnet.Dial(ctx, srv.Addr, storeCfg(0))
	if err != nil {
		t.Fatal(err)
	}
	if a.PeerMaxPDULength() != 4096 {
		t.Errorf("peer max %d", a.PeerMaxPDULength())
	}
	if err := a.Echo(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 2, 4084, 4086, 4088, 100_000, 1 << 20} {
		data := pattern(n)
		st, err := a.Store(ctx, dicomuid.MRImageStorage, "1.2.3.4.5", dicomuid.JPEGBaseline8Bit, bytes.NewReader(data))
		if err != nil || !st.IsSuccess() {
			t.Fatalf("size %d: status %v err %v", n, st, err)
		}
		got := <-ch
		if !bytes.Equal(got.data, data) || got.err != nil {
			t.Fatalf("size %d: got %d bytes (err %v)", n, len(got.data), got.err)
		}
		r := got.req
		if r.AffectedSOPClassUID != dicomuid.MRImageStorage || r.AffectedSOPInstanceUID != "1.2.3.4.5" ||
			r.TransferSyntaxUID != dicomuid.JPEGBaseline8Bit || r.Association.CallingAE != "SCU" || r.Association.CalledAE != "SCP" {
			t.Errorf("request %+v", r)
		}
		ev := rec.waitFor(t, dicomnet.EventStored)
		if ev.Bytes != int64(n) || ev.Status != 0 {
			t.Errorf("event %+v", ev)
		}
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, dicomnet.EventReleased)
	if n := srv.ActiveAssociations(); n != 0 {
		t.Errorf("%d active associations after release", n)
	}
}

// startParrot serves one association over a real loopback connection and returns the parrot.
func startParrot(t *testing.T, s *dicomnet.Server) (*dicomnettest.Parrot, *dicomnettest.Server) {
	t.Helper()
	srv := dicomnettest.NewServerT(t, s)
	return dicomnettest.DialParrot(t, srv.Addr), srv
}

func storeRQ(id uint16) *dimse.Command {
	return dimse.NewCStoreRQ(id, dicomuid.CTImageStorage, "1.2.3.4", dimse.PriorityMedium)
}

func TestCommandAndDataInOnePDU(t *testing.T) {
	ch := make(chan result, 1)
	p, _ := startParrot(t, &dicomnet.Server{Handler: capture(ch)})
	p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
	// Command, first fragment (odd length: accepted on receipt) in one PDU; the rest in the next.
	p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, 0, []byte("abc")))
	p.SendPDVs(dicomnettest.PDV(3, 0, []byte("de")), dicomnettest.PDV(3, pdu.ControlLast, []byte("f")))
	rsp := p.ExpectCommand()
	if rsp.CommandField != dimse.CStoreRSP || rsp.Status != 0 || rsp.MessageIDBeingRespondedTo != 1 ||
		rsp.AffectedSOPInstanceUID != "1.2.3.4" || rsp.AffectedSOPClassUID != dicomuid.CTImageStorage {
		t.Errorf("response %+v", rsp)
	}
	if got := <-ch; string(got.data) != "abcdef" {
		t.Errorf("data %q", got.data)
	}
	// A command split over two PDUs.
	enc := dimse.NewCEchoRQ(2).Encode()
	p.SendPDVs(dicomnettest.PDV(1, pdu.ControlCommand, enc[:10]))
	p.SendPDVs(dicomnettest.PDV(1, pdu.ControlCommand|pdu.ControlLast, enc[10:]))
	if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CEchoRSP || rsp.MessageIDBeingRespondedTo != 2 {
		t.Errorf("echo response %+v", rsp)
	}
	p.SendPDU(&pdu.ReleaseRQ{})
	p.Expect(pdu.TypeReleaseRP)
}

// TestPendingResponseBeforeReleaseRP: the peer sends the last fragment and the A-RELEASE-RQ back to back; the
// C-STORE-RSP must precede the A-RELEASE-RP.
func TestPendingResponseBeforeReleaseRP(t *testing.T) {
	release := make(chan struct{})
	p, _ := startParrot(t, &dicomnet.Server{Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
		_, err := io.Copy(io.Discard, r)
		<-release // the release RQ is already on the wire
		return err
	})})
	p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
	var b []byte
	b, _ = pdu.Append(b, &pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(3, storeRQ(9)), dicomnettest.PDV(3, pdu.ControlLast, []byte("xy"))}})
	b, _ = pdu.Append(b, &pdu.ReleaseRQ{})
	p.Send(b)
	time.Sleep(20 * time.Millisecond)
	close(release)
	if rsp := p.ExpectCommand(); rsp.Status != 0 || rsp.MessageIDBeingRespondedTo != 9 {
		t.Errorf("response %+v", rsp)
	}
	p.Expect(pdu.TypeReleaseRP)
}

func TestProtocolViolations(t *testing.T) {
	tests := []struct {
		name           string
		send           func(p *dicomnettest.Parrot)
		source, reason byte
	}{
		{"data set without command", func(p *dicomnettest.Parrot) {
			p.SendPDVs(dicomnettest.PDV(3, pdu.ControlLast, []byte("xx")))
		}, 2, pdu.AbortReasonInvalidParamValue},
		{"data set on another context", func(p *dicomnettest.Parrot) {
			p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(1, pdu.ControlLast, []byte("xx")))
		}, 2, pdu.AbortReasonInvalidParamValue},
		{"command on unaccepted context", func(p *dicomnettest.Parrot) {
			p.SendPDVs(dicomnettest.CommandPDV(5, dimse.NewCEchoRQ(1)))
		}, 2, pdu.AbortReasonInvalidParamValue},
		{"malformed command set", func(p *dicomnettest.Parrot) {
			p.SendPDVs(dicomnettest.PDV(1, 3, []byte{0, 0, 0, 1, 0xFF, 0, 0, 0}))
		}, 2, pdu.AbortReasonInvalidParamValue},
		{"PDV length past PDU", func(p *dicomnettest.Parrot) {
			p.Send([]byte{4, 0, 0, 0, 0, 8, 0, 0, 0, 100, 1, 3, 0, 0})
		}, 2, pdu.AbortReasonInvalidParamValue},
		{"PDU over our maximum", func(p *dicomnettest.Parrot) {
			p.Send([]byte{4, 0, 0, 1, 0, 0}) // 65536 > MaxPDULength 16384
		}, 2, pdu.AbortReasonInvalidParamValue},
		{"second A-ASSOCIATE-RQ", func(p *dicomnettest.Parrot) {
			p.SendPDU(dicomnettest.AssociateRQ("SCU", "ANY"))
		}, 2, pdu.AbortReasonUnexpectedPDU},
		{"A-ASSOCIATE-AC", func(p *dicomnettest.Parrot) {
			p.SendPDU(&pdu.AssociateAC{ProtocolVersion: 1})
		}, 2, pdu.AbortReasonUnexpectedPDU},
		{"A-RELEASE-RP", func(p *dicomnettest.Parrot) { p.SendPDU(&pdu.ReleaseRP{}) }, 2, pdu.AbortReasonUnexpectedPDU},
		{"unknown PDU type", func(p *dicomnettest.Parrot) { p.Send([]byte{0x09, 0, 0, 0, 0, 2, 0, 0}) }, 2, pdu.AbortReasonUnrecognizedPDU},
		// A-RELEASE-RQ's length is 4, fixed (PS3.8 9.3.6): another is an
		// invalid PDU (Evt19, AA-8), not a release; its bytes were taken
		// for a release's, and one of 100 waited for 96 more.
		{"A-RELEASE-RQ of 0xFFFFFFFF bytes", func(p *dicomnettest.Parrot) { p.Send([]byte{5, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0}) }, 2, pdu.AbortReasonInvalidParamValue},
		{"A-RELEASE-RQ of 12 bytes", func(p *dicomnettest.Parrot) { p.Send([]byte{5, 0, 0, 0, 0, 12, 0, 0, 0, 0, 4, 0, 0, 0, 0, 8, 0, 0}) }, 2, pdu.AbortReasonInvalidParamValue},
		{"A-RELEASE-RQ of 100 bytes", func(p *dicomnettest.Parrot) { p.Send([]byte{5, 0, 0, 0, 0, 100, 0, 0, 0, 0}) }, 2, pdu.AbortReasonInvalidParamValue},
		{"release in the middle of a data set", func(p *dicomnettest.Parrot) {
			p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, 0, []byte("xx")))
			p.SendPDU(&pdu.ReleaseRQ{})
		}, 2, pdu.AbortReasonUnexpectedPDU},
		{"command inside a data set", func(p *dicomnettest.Parrot) {
			p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, 0, []byte("xx")), dicomnettest.CommandPDV(3, storeRQ(2)))
		}, 2, pdu.AbortReasonInvalidParamValue},
		// A message begins with its command set: an A-RELEASE-RQ after the
		// command's first fragment is in the middle of a message, as one
		// inside its data set is (A-RELEASE-RP was sent, the command dropped).
		{"release in the middle of a command set", func(p *dicomnettest.Parrot) {
			enc := storeRQ(1).Encode()
			p.SendPDVs(dicomnettest.PDV(3, pdu.ControlCommand, enc[:20]))
			p.SendPDU(&pdu.ReleaseRQ{})
		}, 2, pdu.AbortReasonUnexpectedPDU},
		// Command Field (0000,0100) is mandatory in every command (the
		// message tables of PS3.7 9.3 and 10.3): without it the message is
		// neither a request nor a response; it was answered 0211 in a
		// "response" whose Command Field was 8000H.
		{"command set without a Command Field", func(p *dicomnettest.Parrot) {
			c := dimse.NewCEchoRQ(5)
			c.Present &^= dimse.HasCommandField
			p.SendPDVs(dicomnettest.CommandPDV(1, c))
		}, 2, pdu.AbortReasonInvalidParamValue},
		{"empty command set", func(p *dicomnettest.Parrot) {
			p.SendPDVs(dicomnettest.PDV(1, pdu.ControlCommand|pdu.ControlLast, nil))
		}, 2, pdu.AbortReasonInvalidParamValue},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan result, 1)
			rec := newRecorder()
			p, srv := startParrot(t, &dicomnet.Server{Handler: capture(ch), MaxPDULength: 16384, Observer: rec})
			p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
			tc.send(p)
			p.ExpectAbort(tc.source, tc.reason)
			ev := rec.waitFor(t, dicomnet.EventAborted)
			if !ev.AbortLocal || ev.AbortSource != 2 {
				t.Errorf("abort event %+v", ev)
			}
			select {
			case r := <-ch:
				if !errors.Is(r.err, dicomnet.ErrIncomplete) {
					t.Errorf("handler read error %v, want ErrIncomplete", r.err)
				}
			default:
			}
			if n := srv.ActiveAssociations(); n != 0 {
				t.Errorf("%d active associations", n)
			}
		})
	}
}

// TestAfterRelease: once the A-RELEASE-RP is sent (Sta13) the server waits for the peer to close, and answers what
// still comes as PS3.8 Table 9-10 says: P-DATA-TF and another A-RELEASE-RQ are ignored (AA-6), an A-ASSOCIATE-RQ
// or an unrecognized PDU is answered with an A-ABORT (AA-7, 02 02 and 02 01), an A-ABORT closes (AA-2). What
// follows an ignored PDU is read as the PDU it is: a P-DATA-TF left the read position unknown, and the server read
// nothing more until ARTIM closed the connection.
func TestAfterRelease(t *testing.T) {
	unknown := []byte{0x09, 0, 0, 0, 0, 2, 0, 0}
	pdata := func() []byte {
		b, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(7))}})
		return b
	}
	encode := func(x pdu.PDU) []byte { b, _ := pdu.Encode(x); return b }
	tests := []struct {
		name   string
		send   [][]byte
		reason byte // of the A-ABORT expected; 0xFF for none, the connection closed
	}{
		{"A-ASSOCIATE-RQ", [][]byte{encode(dicomnettest.AssociateRQ("SCU", "ANY"))}, pdu.AbortReasonUnexpectedPDU},
		{"unrecognized PDU", [][]byte{unknown}, pdu.AbortReasonUnrecognizedPDU},
		{"P-DATA-TF, then an A-ASSOCIATE-RQ", [][]byte{pdata(), encode(dicomnettest.AssociateRQ("SCU", "ANY"))}, pdu.AbortReasonUnexpectedPDU},
		{"P-DATA-TF, then an unrecognized PDU", [][]byte{pdata(), unknown}, pdu.AbortReasonUnrecognizedPDU},
		{"P-DATA-TF over our maximum", [][]byte{{4, 0, 1, 0, 0, 0}}, pdu.AbortReasonInvalidParamValue},
		{"A-RELEASE-RQ again, then an unrecognized PDU", [][]byte{encode(&pdu.ReleaseRQ{}), unknown}, pdu.AbortReasonUnrecognizedPDU},
		{"A-ABORT", [][]byte{encode(&pdu.Abort{})}, 0xFF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each waits for ARTIM
			p, _ := startParrot(t, &dicomnet.Server{ARTIMTimeout: 2 * time.Second})
			p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
			p.SendPDU(&pdu.ReleaseRQ{})
			p.Expect(pdu.TypeReleaseRP)
			for _, b := range tc.send {
				p.Send(b)
			}
			if tc.reason != 0xFF {
				p.Timeout = time.Second // well before ARTIM
				p.ExpectAbort(2, tc.reason)
			}
			p.Timeout = 5 * time.Second
			p.ExpectClosed()
		})
	}
}

func TestSta2Violations(t *testing.T) {
	tests := []struct {
		name string
		send []byte
	}{
		{"P-DATA before association", []byte{4, 0, 0, 0, 0, 6, 0, 0, 0, 2, 1, 3}},
		{"PROXY header when not enabled", proxyproto.Append(nil, &net.TCPAddr{IP: net.IPv4(1, 2, 3, 4), Port: 1}, &net.TCPAddr{IP: net.IPv4(5, 6, 7, 8), Port: 2})},
		{"A-RELEASE-RQ", []byte{5, 0, 0, 0, 0, 4, 0, 0, 0, 0}},
		{"malformed A-ASSOCIATE-RQ", []byte{1, 0, 0, 0, 0, 4, 0, 1, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := startParrot(t, &dicomnet.Server{ARTIMTimeout: time.Second})
			p.Send(tc.send)
			p.ExpectAbort(0, 0) // AA-1
		})
	}
}

// TestAssociateACEchoesTheRequest: the A-ASSOCIATE-AC's bytes 11-74 are the A-ASSOCIATE-RQ's as received (PS3.8
// Table 9-17: "a value identical to the value received in the same field"). They were the AE titles trimmed and
// padded anew with spaces, and 32 zero bytes.
func TestAssociateACEchoesTheRequest(t *testing.T) {
	field := func(s string) string { return s + strings.Repeat(" ", 16-len(s)) }
	tests := []struct {
		name                   string
		called, calling, extra string // bytes 11-26, 27-42, 43-74 of the request
	}{
		{"space padded", field("ANY"), field("SCU"), strings.Repeat("\x00", 32)},
		{"leading spaces", field("  ANY"), field(" SCU"), strings.Repeat("\x00", 32)},
		{"NUL padded", "ANY" + strings.Repeat("\x00", 13), "SCU" + strings.Repeat("\x00", 13), strings.Repeat("\x00", 32)},
		{"reserved bytes set", field("ANY"), field("SCU"), strings.Repeat("r", 32)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := startParrot(t, &dicomnet.Server{})
			rq, err := pdu.Encode(dicomnettest.AssociateRQ("SCU", "ANY"))
			if err != nil {
				t.Fatal(err)
			}
			sent := tc.called + tc.calling + tc.extra
			copy(rq[10:74], sent)
			p.Send(rq)
			ac, err := p.NextRaw()
			if err != nil || pdu.Type(ac[0]) != pdu.TypeAssociateAC {
				t.Fatalf("answer % x, %v; want an A-ASSOCIATE-AC", ac, err)
			}
			if got := string(ac[10:74]); got != sent {
				t.Errorf("A-ASSOCIATE-AC bytes 11-74 %q, want %q as sent", got, sent)
			}
		})
	}
}

// TestPresentationContextIDs: an A-ASSOCIATE-RQ whose presentation context ids are not odd and unique is an
// invalid PDU (PS3.8 Table 9-13: "odd integers between 1 and 255"; 7.1.1.13: an "unused identifier for each
// proposed presentation context"), Evt19, which in Sta2 is AA-1: A-ABORT, and nothing is negotiated. Odd, unique
// ids in any order are accepted.
func TestPresentationContextIDs(t *testing.T) {
	ctx := func(id byte, abstract string) pdu.PresentationContextRQ {
		return pdu.PresentationContextRQ{ID: id, AbstractSyntax: abstract, TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}}
	}
	tests := []struct {
		name  string
		ids   []pdu.PresentationContextRQ
		abort bool
	}{
		{"odd and unique", []pdu.PresentationContextRQ{ctx(5, dicomuid.CTImageStorage), ctx(1, dicomuid.Verification), ctx(255, dicomuid.MRImageStorage)}, false},
		{"even", []pdu.PresentationContextRQ{ctx(1, dicomuid.Verification), ctx(2, dicomuid.CTImageStorage)}, true},
		{"zero", []pdu.PresentationContextRQ{ctx(0, dicomuid.Verification)}, true},
		{"duplicate", []pdu.PresentationContextRQ{ctx(3, dicomuid.Verification), ctx(3, dicomuid.CTImageStorage)}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			p, srv := startParrot(t, &dicomnet.Server{ARTIMTimeout: 200 * time.Millisecond, Observer: rec})
			rq := dicomnettest.AssociateRQ("SCU", "ANY")
			rq.PresentationContexts = tc.ids
			p.SendPDU(rq) // pdu.Encode writes the ids as given: these are the raw items
			if !tc.abort {
				ac := p.Expect(pdu.TypeAssociateAC).(*pdu.AssociateAC)
				if len(ac.PresentationContexts) != len(tc.ids) {
					t.Errorf("%d results for %d contexts", len(ac.PresentationContexts), len(tc.ids))
				}
				p.SendPDU(&pdu.ReleaseRQ{})
				p.Expect(pdu.TypeReleaseRP)
				return
			}
			p.ExpectAbort(0, 0) // AA-1
			p.ExpectClosed()
			if n := srv.ActiveAssociations(); n != 0 {
				t.Errorf("%d active associations", n)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for _, ev := range rec.events {
				if ev.Type == dicomnet.EventAccepted {
					t.Errorf("association accepted")
				}
			}
		})
	}
}

func TestRejections(t *testing.T) {
	policy := func(ctx context.Context, info *dicomnet.AssociationInfo) error {
		switch info.CallingAE {
		case "STRANGER":
			return dicomnet.RejectCallingAENotRecognized
		case "BROKEN":
			return errors.New("database down")
		case "BUSY":
			return dicomnet.RejectTemporaryCongestion
		case "ELSEWHERE":
			return fmt.Errorf("%w (%w)", dicomnet.RejectCallingAENotRecognized, errors.New("source address not allowed"))
		}
		return nil
	}
	tests := []struct {
		name   string
		mutate func(rq *pdu.AssociateRQ)
		want   [3]byte
		why    string // the policy's reason beside the code, logged as why
	}{
		// A called AE title refused names ours (as JSON writes it), and says when they differ only in case.
		{"called AE", func(rq *pdu.AssociateRQ) { rq.CalledAE = "OTHER" }, [3]byte{1, 1, 7}, `dicomnet: our AE title is \"SCP\"`},
		{"called AE in other letters", func(rq *pdu.AssociateRQ) { rq.CalledAE = "scp" }, [3]byte{1, 1, 7},
			`dicomnet: our AE title is \"SCP\", which differs only in letter case: AE titles are matched case-sensitively`},
		{"calling AE", func(rq *pdu.AssociateRQ) { rq.CallingAE = "STRANGER" }, [3]byte{1, 1, 3}, ""},
		{"calling AE from another network", func(rq *pdu.AssociateRQ) { rq.CallingAE = "ELSEWHERE" }, [3]byte{1, 1, 3}, "source address not allowed"},
		{"policy error", func(rq *pdu.AssociateRQ) { rq.CallingAE = "BROKEN" }, [3]byte{1, 1, 1}, ""},
		{"congestion", func(rq *pdu.AssociateRQ) { rq.CallingAE = "BUSY" }, [3]byte{2, 3, 1}, ""},
		{"protocol version", func(rq *pdu.AssociateRQ) { rq.ProtocolVersion = 2 }, [3]byte{1, 2, 2}, ""},
		{"application context", func(rq *pdu.AssociateRQ) { rq.ApplicationContext = "1.2.3" }, [3]byte{1, 1, 2}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			var logs testenv.LogBuffer
			p, srv := startParrot(t, &dicomnet.Server{AETitle: "SCP", Accept: policy, Observer: rec, ARTIMTimeout: 200 * time.Millisecond,
				Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			rq := dicomnettest.AssociateRQ("SCU", "SCP")
			tc.mutate(rq)
			p.SendPDU(rq)
			p.ExpectReject(tc.want[0], tc.want[1], tc.want[2])
			ev := rec.waitFor(t, dicomnet.EventRejected)
			if *ev.Reject != (dicomnet.RejectError{Result: tc.want[0], Source: tc.want[1], Reason: tc.want[2]}) {
				t.Errorf("event reject %+v", ev.Reject)
			}
			// Sta13: the parrot does not close; the server closes at ARTIM expiry.
			p.ExpectClosed()
			if srv.ActiveAssociations() != 0 {
				t.Error("slot leaked")
			}
			// The log says why in words, as the audit trail does.
			words := strings.TrimPrefix(ev.Reject.Error(), "dicomnet: association rejected: ")
			if !strings.Contains(logs.String(), `"rejection":"`+words+`"`) {
				t.Errorf("log lacks the rejection %q:\n%s", words, logs.String())
			}
			// And, where the policy gave one, which reason the code stands for.
			if tc.why == "" && strings.Contains(logs.String(), `"why":`) || tc.why != "" && !strings.Contains(logs.String(), `"why":"`+tc.why+`"`) {
				t.Errorf("log's why, want %q:\n%s", tc.why, logs.String())
			}
		})
	}
	// A flood of rejected requests logs at most a burst of lines in a window (the events, which the metric and
	// the audit trail count, are all observed): one line each made megabytes of logs a flood.
	t.Run("flood logged within a burst", func(t *testing.T) {
		rec := newRecorder()
		var logs testenv.LogBuffer
		srv := dicomnettest.NewServerT(t, &dicomnet.Server{AETitle: "SCP", Accept: policy, Observer: rec,
			Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
		const n = 30
		for range n {
			if _, err := dicomnet.Dial(context.Background(), srv.Addr, dicomnet.ClientConfig{CallingAE: "STRANGER", CalledAE: "SCP"}); !errors.Is(err, dicomnet.RejectCallingAENotRecognized) {
				t.Fatalf("Dial = %v", err)
			}
			rec.waitFor(t, dicomnet.EventRejected)
		}
		if lines := strings.Count(logs.String(), `"msg":"dicomnet: association rejected"`); lines < 1 || lines > 10 {
			t.Errorf("%d of %d rejections logged, want 1 to 10", lines, n)
		}
	})
	// The same for connections aborted before any association (a P-DATA-TF first): one line each, unlimited.
	t.Run("flood before the association logged within a burst", func(t *testing.T) {
		var logs testenv.LogBuffer
		srv := dicomnettest.NewServerT(t, &dicomnet.Server{AETitle: "SCP", Accept: policy,
			Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
		const n = 30
		pdata := []byte{4, 0, 0, 0, 0, 6, 0, 0, 0, 2, 1, 3}
		for range n {
			c, err := net.Dial("tcp", srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(pdata); err != nil {
				t.Fatal(err)
			}
			abort := make([]byte, 10) // the server's A-ABORT
			if _, err := io.ReadFull(c, abort); err != nil || abort[0] != byte(pdu.TypeAbort) {
				t.Fatalf("answer % x, %v; want an A-ABORT", abort, err)
			}
			c.Close()
		}
		count := func() int { return strings.Count(logs.String(), `"msg":"dicomnet: association aborted"`) }
		testenv.Eventually(t, "an abort logged", func() bool { return count() > 0 })
		time.Sleep(100 * time.Millisecond) // any line still being written
		if lines := count(); lines < 1 || lines > 10 {
			t.Errorf("%d of %d aborts before an association logged, want 1 to 10", lines, n)
		}
	})
	t.Run("Dial returns RejectError", func(t *testing.T) {
		srv := dicomnettest.NewServerT(t, &dicomnet.Server{AETitle: "SCP"})
		_, err := dicomnet.Dial(context.Background(), srv.Addr, dicomnet.ClientConfig{CallingAE: "A", CalledAE: "B"})
		var rj *dicomnet.RejectError
		if !errors.As(err, &rj) || !errors.Is(err, dicomnet.RejectCalledAENotRecognized) {
			t.Fatalf("err = %v", err)
		}
		if rj.Error() != "dicomnet: association rejected: Rejected Permanent, Service User, Called AE Title Not Recognized (01 01 07)" {
			t.Errorf("text %q", rj.Error())
		}
	})
}

func TestAssociationLimits(t *testing.T) {
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{MaxAssociations: 3, MaxAssociationsPerAE: 2})
	ctx := context.Background()
	dial := func(ae string) (*dicomnet.ClientAssociation, error) {
		return dicomnet.Dial(ctx, srv.Addr, dicomnet.ClientConfig{CallingAE: ae, CalledAE: "SCP"})
	}
	a1, err := dial("A")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := dial("A")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dial("A"); !errors.Is(err, dicomnet.RejectTooManyAssociations) {
		t.Fatalf("third from A: %v, want 02 03 02", err)
	}
	b1, err := dial("B")
	if err != nil {
		t.Fatalf("first from B: %v", err)
	}
	if _, err := dial("C"); !errors.Is(err, dicomnet.RejectTooManyAssociations) {
		t.Fatalf("global limit: %v", err)
	}
	if n := srv.ActiveAssociations(); n != 3 {
		t.Errorf("active %d, want 3", n)
	}
	a1.Abort()
	if err := a2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	waitActive(t, srv.Server, 1)
	if c, err := dial("A"); err != nil {
		t.Fatalf("after release: %v", err)
	} else {
		c.Release(ctx)
	}
	b1.Release(ctx)
	waitActive(t, srv.Server, 0)
}

func waitActive(t *testing.T, s *dicomnet.Server, n int) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("%d active associations", n), func() bool { return s.ActiveAssociations() == n })
}

func TestHandlerStatuses(t *testing.T) {
	tests := []struct {
		name  string
		h     dicomnet.HandlerFunc
		class string
		inst  string
		want  uint16
		event dicomnet.EventType
	}{
		{"nil", func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			_, err := io.Copy(io.Discard, r)
			return err
		}, "", "", 0x0000, dicomnet.EventStored},
		{"warning pointer", func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			io.Copy(io.Discard, r)
			return &dimse.Status{Code: dimse.StatusElementsDiscarded}
		}, "", "", 0xB006, dicomnet.EventStored},
		{"wrapped value status", func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			io.Copy(io.Discard, r)
			return errors.Join(errors.New("put"), dimse.Status{Code: dimse.StatusOutOfResources})
		}, "", "", 0xA700, dicomnet.EventStoreFailed},
		{"plain error", func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			return errors.New("boom")
		}, "", "", 0x0110, dicomnet.EventStoreFailed},
		{"panic", func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			panic("handler bug")
		}, "", "", 0x0110, dicomnet.EventStoreFailed},
		{"success without reading", func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			return nil
		}, "", "", 0x0110, dicomnet.EventStoreFailed},
		{"early failure status", func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			return &dimse.Status{Code: dimse.StatusDataSetDoesNotMatchSOPClass}
		}, "", "", 0xA900, dicomnet.EventStoreFailed},
		{"class differs from context", nil, dicomuid.MRImageStorage, "", 0x0122, dicomnet.EventStoreFailed},
		{"no class", nil, "-", "", 0xC000, dicomnet.EventStoreFailed},
		{"invalid instance UID", nil, "", "../../etc/passwd", 0xC000, dicomnet.EventStoreFailed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			s := &dicomnet.Server{Observer: rec}
			if tc.h != nil {
				s.Handler = tc.h
			}
			p, _ := startParrot(t, s)
			p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
			rq := storeRQ(4)
			switch tc.class {
			case "":
			case "-":
				rq.AffectedSOPClassUID = ""
			default:
				rq.AffectedSOPClassUID = tc.class
			}
			if tc.inst != "" {
				rq.AffectedSOPInstanceUID = tc.inst
			}
			p.SendPDVs(dicomnettest.CommandPDV(3, rq), dicomnettest.PDV(3, 0, pattern(1000)))
			p.SendPDVs(dicomnettest.PDV(3, pdu.ControlLast, pattern(5000)))
			rsp := p.ExpectCommand()
			if rsp.Status != tc.want {
				t.Errorf("status %04X, want %04X", rsp.Status, tc.want)
			}
			if len(rsp.ErrorComment) > 64 {
				t.Errorf("comment too long")
			}
			// A failure the server decides carries an Error Comment, as conformance.md says of every status but
			// 0000 (a handler that failed or panicked was answered 0110 saying nothing).
			if tc.h == nil || tc.want == dimse.StatusProcessingFailure {
				if rsp.ErrorComment == "" {
					t.Errorf("status %04X without an Error Comment", rsp.Status)
				}
			}
			ev := rec.waitFor(t, tc.event)
			if ev.Status != tc.want {
				t.Errorf("event status %04X", ev.Status)
			}
			// A failure says why: the error is the audit record's reason.
			if tc.event == dicomnet.EventStoreFailed && ev.Err == nil {
				t.Errorf("failure %04X without an error: its log line and audit record do not say why", ev.Status)
			}
			// The association survives: echo still works.
			p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(5)))
			if rsp := p.ExpectCommand(); rsp.Status != 0 {
				t.Errorf("echo after failure: %04X", rsp.Status)
			}
		})
	}
}

// TestObserverPanic: a panic in the observer is logged and the association
// goes on. The panic's value is told as panicvalue tells it: an observer
// handed a C-STORE's event may panic with its SOP Instance UID in the
// value, which the log line must not hold; a runtime error keeps its text.
func TestObserverPanic(t *testing.T) {
	const instance = "1.2.826.0.1.3680043.9.7777.2"
	tests := []struct {
		name  string
		panic func(ev dicomnet.Event)
		want  string // the line's "panic"
	}{
		{"a string holding a UID", func(ev dicomnet.Event) { panic("no study for " + ev.SOPInstanceUID) }, "a value of type string"},
		{"a runtime error", func(ev dicomnet.Event) {
			var byUID map[string]int
			//lint:ignore SA5000 a runtime error, on purpose
			byUID[ev.SOPInstanceUID]++
		}, "assignment to entry in nil map"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs testenv.LogBuffer
			stored := make(chan struct{}, 1)
			p, _ := startParrot(t, &dicomnet.Server{
				Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
				Observer: dicomnet.ObserverFunc(func(ev dicomnet.Event) {
					if ev.Type == dicomnet.EventStored {
						stored <- struct{}{}
						tc.panic(ev)
					}
				}),
				Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
					_, err := io.Copy(io.Discard, r)
					return err
				}),
			})
			p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
			p.SendMessage(3, dimse.NewCStoreRQ(1, dicomuid.CTImageStorage, instance, dimse.PriorityMedium), []byte("ab"))
			if rsp := p.ExpectCommand(); rsp.Status != dimse.StatusSuccess {
				t.Fatalf("C-STORE status %04X", rsp.Status)
			}
			<-stored
			// The association goes on.
			p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(2)))
			if rsp := p.ExpectCommand(); rsp.Status != 0 {
				t.Errorf("echo after the observer's panic: %04X", rsp.Status)
			}
			want := `"msg":"dicomnet: observer panicked","panic":"` + tc.want + `"`
			testenv.Eventually(t, "the line "+want, func() bool { return strings.Contains(logs.String(), want) })
			out := logs.String()
			if strings.Contains(out, instance) {
				t.Errorf("logs name the SOP Instance UID:\n%s", out)
			}
		})
	}
}

// TestEchoOnAStorageContext: C-ECHO belongs on the Verification context;
// on a storage context it is refused 0122, as a C-STORE on the
// Verification context is (it was answered 0000).
func TestEchoOnAStorageContext(t *testing.T) {
	p, _ := startParrot(t, &dicomnet.Server{})
	p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
	p.SendPDVs(dicomnettest.CommandPDV(3, dimse.NewCEchoRQ(1)))
	if rsp := p.ExpectCommand(); rsp.Status != dimse.StatusSOPClassNotSupported || rsp.MessageIDBeingRespondedTo != 1 {
		t.Errorf("C-ECHO on the CT context: status %04X for message %d, want 0122 for 1", rsp.Status, rsp.MessageIDBeingRespondedTo)
	}
	p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(2)))
	if rsp := p.ExpectCommand(); rsp.Status != 0 {
		t.Errorf("C-ECHO on the Verification context: %04X", rsp.Status)
	}
}

// TestStoreOfAMove: a C-STORE sub-operation of a C-MOVE carries Move Originator AE Title and Message ID
// (0000,1030)/(0000,1031) (PS3.7 9.1.1.1, PS3.4 C.4.2.2): it is stored as any C-STORE, the handler is told the
// originator, and the response (PS3.7 Table 9.3-2) carries neither: a PACS answering a workstation's C-MOVE with
// our AE as the destination sends such C-STOREs.
func TestStoreOfAMove(t *testing.T) {
	ch := make(chan result, 1)
	p, _ := startParrot(t, &dicomnet.Server{Handler: capture(ch)})
	p.Associate(dicomnettest.AssociateRQ("PACS", "ANY"))
	rq := storeRQ(12)
	rq.Present |= dimse.HasMoveOriginatorAETitle | dimse.HasMoveOriginatorMessageID
	rq.MoveOriginatorAETitle, rq.MoveOriginatorMessageID = "WORKSTATION", 77
	p.SendMessage(3, rq, []byte("abcd"))
	rsp := p.ExpectCommand()
	if rsp.Status != 0 || rsp.MessageIDBeingRespondedTo != 12 || rsp.Has(dimse.HasMoveOriginatorAETitle) || rsp.Has(dimse.HasMoveOriginatorMessageID) {
		t.Errorf("response %+v", rsp)
	}
	got := <-ch
	if string(got.data) != "abcd" || got.req.MoveOriginatorAETitle != "WORKSTATION" || got.req.MoveOriginatorMessageID != 77 {
		t.Errorf("handler saw %q from %q/%d", got.data, got.req.MoveOriginatorAETitle, got.req.MoveOriginatorMessageID)
	}
}

// TestStoreOnlyOnStorageContexts: C-STORE is an operation of the storage SOP classes alone (PS3.4 B). One on the
// Verification or the Storage Commitment context is refused 0122 (SOP class not supported) as one whose class
// differs from its context's is, also when its Affected SOP Class UID is that context's own: it reached the
// handler, and scp-task stored its data set as an object of class Verification or Storage Commitment.
func TestStoreOnlyOnStorageContexts(t *testing.T) {
	tests := []struct {
		name  string
		ctxID byte
		class string
	}{
		{"Verification", 1, dicomuid.Verification},
		{"Storage Commitment", 5, dicomuid.StorageCommitment},
		{"CT Image Storage on the Verification context", 1, dicomuid.CTImageStorage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan result, 1)
			rec := newRecorder()
			p, _ := startParrot(t, &dicomnet.Server{Handler: capture(ch), Observer: rec,
				Commitment: &commitments{seen: make(chan nactionSeen, 1)}})
			p.Associate(dicomnettest.CommitmentAssociateRQ("SCU", "ANY", dicomuid.ImplicitVRLittleEndian))
			p.SendMessage(tc.ctxID, dimse.NewCStoreRQ(3, tc.class, "1.2.3.4", dimse.PriorityMedium), pattern(100))
			if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CStoreRSP || rsp.Status != dimse.StatusSOPClassNotSupported || rsp.MessageIDBeingRespondedTo != 3 {
				t.Errorf("C-STORE of %s on context %d: %04X %04X for message %d, want C-STORE-RSP 0122 for 3", tc.class, tc.ctxID, rsp.CommandField, rsp.Status, rsp.MessageIDBeingRespondedTo)
			}
			if ev := rec.waitFor(t, dicomnet.EventStoreFailed); ev.Status != dimse.StatusSOPClassNotSupported {
				t.Errorf("event status %04X", ev.Status)
			}
			select {
			case r := <-ch:
				t.Errorf("the handler was given the data set (%d bytes, class %s)", len(r.data), r.req.AffectedSOPClassUID)
			default:
			}
			// The data set was read past: the association goes on.
			p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(4)))
			if rsp := p.ExpectCommand(); rsp.Status != 0 || rsp.MessageIDBeingRespondedTo != 4 {
				t.Errorf("C-ECHO after it: %+v", rsp)
			}
		})
	}
}

// TestBrokenTransfers: A-ABORT or TCP close mid-object reach the handler as a read error, nothing is answered,
// and the slot is freed.
func TestBrokenTransfers(t *testing.T) {
	tests := []struct {
		name    string
		break_  func(p *dicomnettest.Parrot)
		isAbort bool
		why     string // the event's error, the audit trail's reason: who aborted, in words
	}{
		{"peer A-ABORT", func(p *dicomnettest.Parrot) { p.SendPDU(&pdu.Abort{Source: 0}) }, true,
			"dicomnet: association aborted by the peer: Service User (00 00)"},
		{"peer A-ABORT reserved source", func(p *dicomnettest.Parrot) { p.SendPDU(&pdu.Abort{Source: 1}) }, true,
			"dicomnet: association aborted by the peer: source 1, reason 0 (01 00)"},
		{"peer's provider A-ABORT", func(p *dicomnettest.Parrot) { p.SendPDU(&pdu.Abort{Source: 2, Reason: 2}) }, true,
			"dicomnet: association aborted by the peer: Service Provider, Unexpected PDU (02 02)"},
		{"TCP close", func(p *dicomnettest.Parrot) { p.Conn.Close() }, false, ""},
		{"half a PDU then close", func(p *dicomnettest.Parrot) {
			p.Send([]byte{4, 0, 0, 0, 0x10, 0, 0, 0, 0x0f, 0xfc, 3, 0, 1, 2, 3})
			p.Conn.Close()
		}, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan result, 1)
			rec := newRecorder()
			p, srv := startParrot(t, &dicomnet.Server{Handler: capture(ch), Observer: rec})
			p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
			p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, 0, pattern(100)))
			tc.break_(p)
			r := <-ch
			if !errors.Is(r.err, dicomnet.ErrIncomplete) {
				t.Fatalf("handler error %v, want ErrIncomplete", r.err)
			}
			if tc.isAbort && !errors.Is(r.err, dicomnet.ErrAborted) {
				t.Errorf("handler error %v, want ErrAborted", r.err)
			}
			rec.waitFor(t, dicomnet.EventStoreFailed)
			ev := rec.waitFor(t, dicomnet.EventAborted)
			if ev.AbortLocal {
				t.Errorf("abort attributed to us: %+v", ev)
			}
			if tc.why != "" && (ev.Err == nil || ev.Err.Error() != tc.why) {
				t.Errorf("abort error %v, want %q", ev.Err, tc.why)
			}
			waitActive(t, srv.Server, 0)
			if tc.isAbort {
				p.ExpectClosed()
			}
		})
	}
}

func TestTimeouts(t *testing.T) {
	t.Run("ARTIM before RQ", func(t *testing.T) {
		var logs testenv.LogBuffer
		p, _ := startParrot(t, &dicomnet.Server{ARTIMTimeout: 100 * time.Millisecond, Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		p.ExpectClosed() // nothing sent, socket closed
		testenv.Eventually(t, "a line naming ARTIM", func() bool { return strings.Contains(logs.String(), "ARTIM (100ms) expired") })
	})
	t.Run("ARTIM after release", func(t *testing.T) {
		p, _ := startParrot(t, &dicomnet.Server{ARTIMTimeout: 100 * time.Millisecond})
		p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
		p.SendPDU(&pdu.ReleaseRQ{})
		p.Expect(pdu.TypeReleaseRP)
		p.ExpectClosed()
	})
	t.Run("idle", func(t *testing.T) {
		rec := newRecorder()
		p, srv := startParrot(t, &dicomnet.Server{IdleTimeout: 100 * time.Millisecond, ARTIMTimeout: 100 * time.Millisecond, Observer: rec})
		p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
		p.ExpectAbort(0, 0)
		p.ExpectClosed()
		if ev := rec.waitFor(t, dicomnet.EventAborted); !ev.AbortLocal || ev.Err == nil || !strings.Contains(ev.Err.Error(), "idle timeout (100ms) expired") {
			t.Errorf("%+v: the error does not name the idle timeout", ev)
		}
		waitActive(t, srv.Server, 0)
	})
	t.Run("idle mid-object", func(t *testing.T) {
		ch := make(chan result, 1)
		p, _ := startParrot(t, &dicomnet.Server{Handler: capture(ch), IdleTimeout: 100 * time.Millisecond})
		p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
		p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, 0, pattern(10)))
		if r := <-ch; !errors.Is(r.err, dicomnet.ErrIncomplete) {
			t.Errorf("handler error %v", r.err)
		}
		p.ExpectAbort(0, 0)
	})
	t.Run("write", func(t *testing.T) {
		// Over net.Pipe a write blocks until the peer reads: a peer that never reads trips the write timeout.
		var logs testenv.LogBuffer
		s := &dicomnet.Server{WriteTimeout: 50 * time.Millisecond, Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		c1, c2 := net.Pipe()
		done := make(chan struct{})
		go func() { s.ServeConn(context.Background(), c1); close(done) }()
		b, _ := pdu.Encode(dicomnettest.AssociateRQ("SCU", "ANY"))
		c2.Write(b)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("ServeConn still blocked on a write")
		}
		c2.Close()
		// The log line says which timer fired, not "i/o timeout" alone.
		if !strings.Contains(logs.String(), "write deadline (50ms) expired") {
			t.Errorf("logs do not name the write deadline:\n%s", logs.String())
		}
	})
	t.Run("slow handler does not trip idle timeout", func(t *testing.T) {
		s := &dicomnet.Server{IdleTimeout: 100 * time.Millisecond, Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			time.Sleep(250 * time.Millisecond) // not reading: the idle clock restarts when reading resumes
			_, err := io.Copy(io.Discard, r)
			return err
		})}
		srv := dicomnettest.NewServerT(t, s)
		data := pattern(2 << 20) // before Dial: the idle timeout also runs between association and first command
		a, err := dicomnet.Dial(context.Background(), srv.Addr, storeCfg(0))
		if err != nil {
			t.Fatal(err)
		}
		st, err := a.Store(context.Background(), dicomuid.CTImageStorage, "1.2.3", "", bytes.NewReader(data))
		if err != nil || !st.IsSuccess() {
			t.Fatalf("%v %v", st, err)
		}
		a.Release(context.Background())
	})
}

// TestIdleTimeoutInsideAPDU: an idle timeout that stops a read inside a PDU (its header, a body, a PDV header)
// aborts (AA-1), and what the peer sends afterwards, in Sta13, is not parsed from there: the read position is
// lost, and only the close or ARTIM follows. After a header or a body cut short the position was kept, the rest
// of the PDU was read as the next one, and a PDU of type 0 drew a second A-ABORT (AA-7, 02 01).
func TestIdleTimeoutInsideAPDU(t *testing.T) {
	tests := []struct {
		name        string
		first, rest []byte // sent before the idle timeout and after its A-ABORT
	}{
		{"PDU header", []byte{5, 0, 0}, []byte{0, 0, 4, 0, 0, 0, 0}},
		{"A-RELEASE-RQ body", []byte{5, 0, 0, 0, 0, 4, 0, 0}, []byte{0, 0, 0, 0, 0, 0, 0, 0}},
		{"PDV header", []byte{4, 0, 0, 0, 0, 10, 0, 0}, []byte{0, 4, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each waits for ARTIM
			p, _ := startParrot(t, &dicomnet.Server{IdleTimeout: 100 * time.Millisecond, ARTIMTimeout: 500 * time.Millisecond})
			p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
			p.Send(tc.first)
			p.ExpectAbort(0, 0)
			p.Send(tc.rest)
			p.ExpectClosed()
		})
	}
}

func TestProxyProtocol(t *testing.T) {
	src := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 40000}
	dst := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 11112}
	seen := make(chan string, 1)
	s := &dicomnet.Server{ProxyProtocol: true, ARTIMTimeout: 500 * time.Millisecond, Accept: func(ctx context.Context, info *dicomnet.AssociationInfo) error {
		seen <- info.RemoteAddr.String()
		return nil
	}}
	srv := dicomnettest.NewServerT(t, s)
	t.Run("PROXY", func(t *testing.T) {
		a, err := dicomnet.Dial(context.Background(), srv.Addr, dicomnet.ClientConfig{CallingAE: "A", CalledAE: "B", ProxyHeader: proxyproto.Append(nil, src, dst)})
		if err != nil {
			t.Fatal(err)
		}
		if got := <-seen; got != "10.1.2.3:40000" {
			t.Errorf("remote %s", got)
		}
		a.Release(context.Background())
	})
	t.Run("LOCAL keeps the socket address", func(t *testing.T) {
		a, err := dicomnet.Dial(context.Background(), srv.Addr, dicomnet.ClientConfig{CallingAE: "A", CalledAE: "B", ProxyHeader: proxyproto.Append(nil, nil, nil)})
		if err != nil {
			t.Fatal(err)
		}
		if got := <-seen; got[:10] != "127.0.0.1:" {
			t.Errorf("remote %s", got)
		}
		a.Release(context.Background())
	})
	t.Run("missing header", func(t *testing.T) {
		p := dicomnettest.DialParrot(t, srv.Addr)
		p.SendPDU(dicomnettest.AssociateRQ("A", "B"))
		p.ExpectClosed()
	})
}

func TestShutdown(t *testing.T) {
	t.Run("aborts idle associations at the deadline", func(t *testing.T) {
		s := &dicomnet.Server{}
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		served := make(chan error, 1)
		go func() { served <- s.Serve(l) }()
		p := dicomnettest.DialParrot(t, l.Addr().String())
		p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v", err)
		}
		p.ExpectAbort(0, 0)
		if err := <-served; !errors.Is(err, dicomnet.ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
		waitActive(t, s, 0)
		if err := s.ListenAndServe(); !errors.Is(err, dicomnet.ErrServerClosed) {
			t.Errorf("ListenAndServe after Shutdown = %v", err)
		}
	})
	t.Run("lets a transfer finish", func(t *testing.T) {
		started := make(chan struct{})
		s := &dicomnet.Server{Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
			close(started)
			time.Sleep(100 * time.Millisecond)
			_, err := io.Copy(io.Discard, r)
			return err
		})}
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		go s.Serve(l)
		a, err := dicomnet.Dial(context.Background(), l.Addr().String(), storeCfg(0))
		if err != nil {
			t.Fatal(err)
		}
		stored := make(chan error, 1)
		go func() {
			st, err := a.Store(context.Background(), dicomuid.CTImageStorage, "1.2.3", "", bytes.NewReader(pattern(1<<20)))
			if err == nil && !st.IsSuccess() {
				err = st
			}
			if err == nil {
				err = a.Release(context.Background())
			}
			stored <- err
		}()
		<-started
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if err := <-stored; err != nil {
			t.Errorf("store during shutdown: %v", err)
		}
	})
}

func TestHashLargeObject(t *testing.T) {
	var sum [32]byte
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
		h := sha256.New()
		_, err := io.Copy(h, r)
		copy(sum[:], h.Sum(nil))
		return err
	})})
	a, err := dicomnet.Dial(context.Background(), srv.Addr, storeCfg(0))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release(context.Background())
	data := pattern(32 << 20)
	st, err := a.Store(context.Background(), dicomuid.CTImageStorage, "1.2.3", dicomuid.ExplicitVRLittleEndian, bytes.NewReader(data))
	if err != nil || !st.IsSuccess() {
		t.Fatal(st, err)
	}
	if sum != sha256.Sum256(data) {
		t.Error("hash mismatch")
	}
}

func TestMaxObjectSize(t *testing.T) {
	ch := make(chan result, 1)
	rec := newRecorder()
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{MaxObjectSize: 100_000, Handler: capture(ch), Observer: rec})
	a, err := dicomnet.Dial(context.Background(), srv.Addr, storeCfg(0))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release(context.Background())
	for _, tc := range []struct {
		size int
		want uint16
	}{{100_000, 0}, {100_002, 0xA700}, {1 << 20, 0xA700}, {10, 0}} {
		st, err := a.Store(context.Background(), dicomuid.CTImageStorage, "1.2.3", "", bytes.NewReader(pattern(tc.size)))
		if err != nil {
			t.Fatal(err)
		}
		if st.Code != tc.want {
			t.Errorf("size %d: status %04X, want %04X", tc.size, st.Code, tc.want)
		}
		r := <-ch
		if tc.want != 0 && !errors.Is(r.err, dicomnet.ErrObjectTooLarge) {
			t.Errorf("size %d: handler error %v", tc.size, r.err)
		}
	}
}

func TestReaderUnusableAfterHandlerReturns(t *testing.T) {
	leaked := make(chan io.Reader, 1)
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
		b := make([]byte, 10)
		io.ReadFull(r, b)
		leaked <- r
		return errors.New("stop early")
	})})
	a, err := dicomnet.Dial(context.Background(), srv.Addr, storeCfg(0))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release(context.Background())
	st, err := a.Store(context.Background(), dicomuid.CTImageStorage, "1.2.3", "", bytes.NewReader(pattern(1<<20)))
	if err != nil || st.Code != dimse.StatusProcessingFailure {
		t.Fatalf("%v %v", st, err)
	}
	r := <-leaked
	if n, err := r.Read(make([]byte, 100)); n != 0 || err == nil {
		t.Errorf("late read: %d, %v", n, err)
	}
}

// TestShutdownCancelsHandlerContext: a handler busy with something other than reading learns of the abort at the
// Shutdown deadline through its context.
func TestShutdownCancelsHandlerContext(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan error, 1)
	s := &dicomnet.Server{Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
		close(started)
		<-ctx.Done()
		cancelled <- ctx.Err()
		return ctx.Err()
	})}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(l)
	a, err := dicomnet.Dial(context.Background(), l.Addr().String(), storeCfg(0))
	if err != nil {
		t.Fatal(err)
	}
	go a.Store(context.Background(), dicomuid.CTImageStorage, "1.2.3", "", bytes.NewReader(pattern(1000)))
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v", err)
	}
	select {
	case err := <-cancelled:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("handler ctx err %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler context not cancelled")
	}
	waitActive(t, s, 0)
}

// heldResult is a handler's success that reports something of the object, as ingest.AlreadyHeld does: its
// observer (the audit writer) records the transfer from it.
type heldResult struct{ st dimse.Status }

func (h *heldResult) Error() string { return "held" }
func (h *heldResult) Unwrap() error { return h.st }

// TestResponseNotSentIsTold: a C-STORE whose C-STORE-RSP cannot be written (the peer stopped reading) has an
// event whose error wraps ErrNotSent, whatever the status decided: a failure status too, which the audit trail
// recorded as "C-STORE status A700" as if the sender had been answered it. The event keeps what its handler
// returned beside it: an object stored whole is still an EventStored carrying its handler's result (it was replaced
// by the write error, so the audit writer never saw that the store already held the object, and that resend had no
// record; docs/pipeline.md: every transfer has one).
//
// A Storage Commitment request refused (N-ACTION-RSP with a failure status) is told the same way: its event was
// observed before its response was written, so one never sent was recorded "N-ACTION status C000" as answered.
// Each event comes before the association's end, as the audit writer expects.
func TestResponseNotSentIsTold(t *testing.T) {
	for _, tt := range []struct {
		name   string
		result error
		typ    dicomnet.EventType
		status uint16
		action bool // an N-ACTION (Storage Commitment request), not a C-STORE
	}{
		{"stored", nil, dicomnet.EventStored, 0, false},
		{"stored, held already", &heldResult{}, dicomnet.EventStored, 0, false},
		{"refused A700", dimse.Status{Code: dimse.StatusOutOfResources, Comment: "store down"}, dicomnet.EventStoreFailed, dimse.StatusOutOfResources, false},
		{"refused C000", errors.New("handler failed"), dicomnet.EventStoreFailed, dimse.StatusProcessingFailure, false},
		{"commitment refused C000", errors.New("store down"), dicomnet.EventCommitmentRefused, dimse.StatusProcessingFailure, true},
		{"commitment refused 0115", dimse.Status{Code: dimse.StatusInvalidArgumentValue, Comment: "empty Referenced SOP Sequence"},
			dicomnet.EventCommitmentRefused, dimse.StatusInvalidArgumentValue, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			s := &dicomnet.Server{WriteTimeout: 50 * time.Millisecond, Observer: rec,
				Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
					if _, err := io.Copy(io.Discard, r); err != nil {
						return err
					}
					return tt.result
				}),
				Commitment: &commitments{seen: make(chan nactionSeen, 1), reply: func([]byte, error) error { return tt.result }}}
			c1, c2 := net.Pipe()
			go s.ServeConn(context.Background(), c1)
			p := dicomnettest.NewParrot(t, c2)
			// Over net.Pipe a write blocks until the peer reads: the response is never read, and its write times out.
			if tt.action {
				p.Associate(commitmentRQ())
				p.SendPDVs(dicomnettest.CommandPDV(5, dimse.NewNActionRQ(1, dicomuid.StorageCommitment, dicomuid.StorageCommitmentInstance, 1)),
					dicomnettest.PDV(5, pdu.ControlLast, sampleRequest(t)))
			} else {
				p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
				p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, pdu.ControlLast, pattern(100)))
			}
			ev := rec.waitFor(t, tt.typ)
			if ev.Status != tt.status || !errors.Is(ev.Err, dicomnet.ErrNotSent) {
				t.Errorf("%v status %04X error %v; want status %04X, an error wrapping ErrNotSent", ev.Type, ev.Status, ev.Err, tt.status)
			}
			if tt.result != nil && !errors.Is(ev.Err, tt.result) {
				t.Errorf("error %v: the handler's result is lost", ev.Err)
			}
			rec.waitFor(t, dicomnet.EventAborted)
		})
	}
}

// TestStoredBeforeAbortWhenResponseFails: an object stored whose C-STORE-RSP cannot be written (the peer stopped
// reading, the write deadline passed) is reported stored before the association's end: the audit writer counts
// an association's instances until its end, so the aborted record left out the object stored and not answered.
func TestStoredBeforeAbortWhenResponseFails(t *testing.T) {
	rec := newRecorder()
	s := &dicomnet.Server{WriteTimeout: 50 * time.Millisecond, Observer: rec, Handler: capture(make(chan result, 1))}
	c1, c2 := net.Pipe()
	go s.ServeConn(context.Background(), c1)
	p := dicomnettest.NewParrot(t, c2)
	p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
	// Over net.Pipe a write blocks until the peer reads: the response is never read, and its write times out.
	p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, pdu.ControlLast, pattern(100)))
	rec.waitFor(t, dicomnet.EventAborted)
	var types []dicomnet.EventType
	testenv.Eventually(t, "the stored event", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		types = types[:0]
		for _, ev := range rec.events {
			types = append(types, ev.Type)
		}
		return slices.Contains(types, dicomnet.EventStored)
	})
	want := []dicomnet.EventType{dicomnet.EventAccepted, dicomnet.EventStored, dicomnet.EventAborted}
	if !slices.Equal(types, want) {
		t.Fatalf("events %v, want %v", types, want)
	}
	if ev := rec.events[1]; ev.Err == nil || !strings.Contains(ev.Err.Error(), "ended while sending") {
		t.Errorf("EventStored error %v: does not say the response was not sent", ev.Err)
	}
}

// TestOutsideAbortAtResponseIsOurs: an association the server aborts (its shutdown, Close, AbortTLS) while a
// handler finishes is ended by the refused write of its C-STORE-RSP; its end is our abort, for the outside abort's
// reason, as when the abort finds it reading. It was reported as the peer's (not local, source 2) with the write's
// error, so the audit record of a drain-timeout abort during a slow store said "write: association aborted".
func TestOutsideAbortAtResponseIsOurs(t *testing.T) {
	rec := newRecorder()
	read, finish := make(chan struct{}), make(chan struct{})
	h := dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
		_, err := io.ReadAll(r)
		close(read)
		<-finish // the abort lands while the object is being stored
		return err
	})
	p, srv := startParrot(t, &dicomnet.Server{Handler: h, Observer: rec})
	p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
	p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, pdu.ControlLast, pattern(100)))
	<-read
	srv.Server.Close()
	close(finish)
	if ev := rec.waitFor(t, dicomnet.EventStored); ev.Err == nil || !strings.Contains(ev.Err.Error(), "ended while sending") {
		t.Errorf("EventStored error %v: does not say the response was not sent", ev.Err)
	}
	ev := rec.waitFor(t, dicomnet.EventAborted)
	if !ev.AbortLocal || ev.AbortSource != 0 || ev.Err == nil || !strings.Contains(ev.Err.Error(), "aborted by server shutdown") {
		t.Errorf("abort event local=%v source=%d err=%v, want our abort for the server's shutdown", ev.AbortLocal, ev.AbortSource, ev.Err)
	}
	waitActive(t, srv.Server, 0)
}

// carriesRefusal checks the error of ev, the event of a request (C-STORE, N-ACTION) the association's end cut
// short: the refusal decided before its data set broke off (refused, 0 for none: the handler read it, or failed
// for the association's end) is carried, and its message says it, status and why (says: the handler's error; ""
// for the status's comment, a request refused before any handler ran), after the reader's (the audit record's
// reason is the message): the request was refused as well as cut short.
func carriesRefusal(t *testing.T, ev dicomnet.Event, refused uint16, says string) {
	t.Helper()
	var refusal dimse.Status
	switch found := errors.As(ev.Err, &refusal); {
	case refused == 0 && found:
		t.Errorf("%v: a request the handler read carries refusal %+v", ev.Type, refusal)
	case refused == 0:
	case !found || refusal.Code != refused || refusal.Comment == "":
		t.Errorf("%v: error %v carries refusal %+v (found %v), want status %04X with its comment", ev.Type, ev.Err, refusal, found, refused)
	default:
		if says == "" {
			says = refusal.Comment
		}
		if !strings.HasPrefix(ev.Err.Error(), "dicomnet: ") || !dimse.SaysRefusedBeforeEnd(ev.Err.Error()) ||
			!strings.HasSuffix(ev.Err.Error(), fmt.Sprintf("; refused before the association ended, status %04X: %s", refused, says)) {
			t.Errorf("%v: error %q says neither the reader's error nor, after it, the refusal's status %04X and %q", ev.Type, ev.Err, refused, says)
		}
	}
}

// TestCStoreRefusedThenCutShort: a C-STORE refused before any handler ran (its command wrong) whose data set the
// association's end then broke off, the refusal decided and never sent, is observed answered nothing (Status 0:
// cut short), and its error carries the refusal beside the reader's, as an N-ACTION's does (TestNActionCutShort):
// its audit record said only the reader's error, the refusal lost. One the handler read carries none (and, its
// data set not broken off but answered, is stored), and a refusal answered says what it said before (the
// status's error: its audit reason unchanged).
//
// A C-STORE the handler refused before its data set broke off (it returned a failure, out of resources, say,
// without reading the rest; or the data set passed the maximum object size) was refused as well, by the same rule:
// its error carries that refusal, the handler's error after the status, where it said the reader's error alone
// (its record read as cut short: Storage Commitment's 0112, the study page's "cut short"). One whose handler
// failed because the data set broke off (it read the reader's error) carries none.
func TestCStoreRefusedThenCutShort(t *testing.T) {
	outOfResources := fmt.Errorf("store: disk full: %w", dimse.Status{Code: dimse.StatusOutOfResources, Comment: "out of resources"})
	refuses := dicomnet.HandlerFunc(func(_ context.Context, _ *dicomnet.CStoreRequest, r io.Reader) error {
		if _, err := io.ReadFull(r, make([]byte, 10)); err != nil {
			return err
		}
		return outOfResources // the rest unread: dicomnet drains it
	})
	for _, tt := range []struct {
		name    string
		ctx     byte
		rq      *dimse.Command
		refused uint16
		handler dicomnet.Handler // capture when nil
		limit   int64            // the server's MaxObjectSize
		says    string           // after the status: the handler's error ("" for the status's comment)
	}{
		{"read by the handler", 3, storeRQ(1), 0, nil, 0, ""},
		{"class differs from context", 3, storeRQOf(dicomuid.MRImageStorage, "1.2.3.4"), dimse.StatusSOPClassNotSupported, nil, 0, ""},
		{"on the Verification context", 1, storeRQOf(dicomuid.Verification, "1.2.3.4"), dimse.StatusSOPClassNotSupported, nil, 0, ""},
		{"no class", 3, storeRQOf("", "1.2.3.4"), dimse.StatusCannotUnderstand, nil, 0, ""},
		{"invalid instance UID", 3, storeRQOf(dicomuid.CTImageStorage, "../../etc/passwd"), dimse.StatusCannotUnderstand, nil, 0, ""},
		{"refused by the handler", 3, storeRQ(1), dimse.StatusOutOfResources, refuses, 0, outOfResources.Error()},
		{"past the maximum object size", 3, storeRQ(1), dimse.StatusOutOfResources, nil, 50, dicomnet.ErrObjectTooLarge.Error()},
	} {
		for _, brk := range []struct {
			name   string
			break_ func(p *dicomnettest.Parrot)
		}{
			{"peer A-ABORT", func(p *dicomnettest.Parrot) { p.SendPDU(&pdu.Abort{Source: 0}) }},
			{"TCP close", func(p *dicomnettest.Parrot) { p.Conn.Close() }},
			{"answered", nil},
		} {
			t.Run(tt.name+", "+brk.name, func(t *testing.T) {
				ch := make(chan result, 1)
				h := tt.handler
				if h == nil {
					h = capture(ch)
				}
				rec := newRecorder()
				p, _ := startParrot(t, &dicomnet.Server{Handler: h, Observer: rec, MaxObjectSize: tt.limit})
				p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
				p.SendPDVs(dicomnettest.CommandPDV(tt.ctx, tt.rq), dicomnettest.PDV(tt.ctx, 0, pattern(100)))
				if brk.break_ == nil {
					p.SendPDVs(dicomnettest.PDV(tt.ctx, pdu.ControlLast, pattern(100)))
					if rsp := p.ExpectCommand(); rsp.Status != tt.refused {
						t.Fatalf("status %04X, want %04X", rsp.Status, tt.refused)
					}
					if tt.refused == 0 { // read whole and answered: stored, nothing refused or cut short
						if r := <-ch; r.err != nil || len(r.data) != 200 {
							t.Errorf("handler read %d bytes, error %v; want 200, none", len(r.data), r.err)
						}
						if ev := rec.waitFor(t, dicomnet.EventStored); ev.Status != 0 || ev.Err != nil || ev.Bytes != 200 {
							t.Errorf("EventStored status %04X, error %v, %d bytes; want success, no error, 200", ev.Status, ev.Err, ev.Bytes)
						}
						return
					}
					ev := rec.waitFor(t, dicomnet.EventStoreFailed)
					want := tt.says // the handler's error, as it was
					if want == "" {
						want = dimse.Status{Code: tt.refused, Comment: commentOf(t, ev.Err)}.Error()
					}
					if ev.Status != tt.refused || ev.Err == nil || ev.Err.Error() != want {
						t.Errorf("answered refusal: status %04X, error %v; want %04X, %q", ev.Status, ev.Err, tt.refused, want)
					}
					return
				}
				brk.break_(p)
				if tt.refused == 0 {
					if r := <-ch; !errors.Is(r.err, dicomnet.ErrIncomplete) {
						t.Errorf("handler read error %v, want ErrIncomplete", r.err)
					}
				}
				ev := rec.waitFor(t, dicomnet.EventStoreFailed)
				if ev.Status != 0 || !errors.Is(ev.Err, dicomnet.ErrIncomplete) || errors.Is(ev.Err, dicomnet.ErrNotSent) ||
					ev.SOPInstanceUID != tt.rq.AffectedSOPInstanceUID || ev.Bytes != 100 {
					t.Errorf("EventStoreFailed status %04X, error %v, instance %q, %d bytes; want no status, ErrIncomplete, %q, 100",
						ev.Status, ev.Err, ev.SOPInstanceUID, ev.Bytes, tt.rq.AffectedSOPInstanceUID)
				}
				carriesRefusal(t, ev, tt.refused, tt.says)
				rec.waitFor(t, dicomnet.EventAborted)
			})
		}
	}
}

// TestCStoreEndedByTheAssociationIsNoRefusal: a handler that fails because the association ended (aborted from
// outside: its context done before its reader's error) refused nothing, though it returned before its data set
// broke off: the C-STORE was cut short, its error the reader's alone (TestCStoreRefusedThenCutShort's rule).
func TestCStoreEndedByTheAssociationIsNoRefusal(t *testing.T) {
	waiting := make(chan struct{})
	h := dicomnet.HandlerFunc(func(ctx context.Context, _ *dicomnet.CStoreRequest, r io.Reader) error {
		if _, err := io.ReadFull(r, make([]byte, 10)); err != nil {
			return err
		}
		close(waiting)
		<-ctx.Done() // an upload the association's end cancels, the rest unread
		return fmt.Errorf("store: upload: %w", ctx.Err())
	})
	rec := newRecorder()
	p, srv := startParrot(t, &dicomnet.Server{Handler: h, Observer: rec})
	p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
	p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(1)), dicomnettest.PDV(3, 0, pattern(100)))
	<-waiting
	if err := srv.Server.Close(); err != nil {
		t.Fatal(err)
	}
	ev := rec.waitFor(t, dicomnet.EventStoreFailed)
	if ev.Status != 0 || !errors.Is(ev.Err, dicomnet.ErrIncomplete) {
		t.Errorf("EventStoreFailed status %04X, error %v; want no status, ErrIncomplete", ev.Status, ev.Err)
	}
	carriesRefusal(t, ev, 0, "")
	if dimse.SaysRefusedBeforeEnd(ev.Err.Error()) {
		t.Errorf("error %q names a refusal", ev.Err)
	}
}

// commentOf is the comment of the status err is.
func commentOf(t *testing.T, err error) string {
	t.Helper()
	var st dimse.Status
	if !errors.As(err, &st) {
		t.Fatalf("error %v is no status", err)
	}
	return st.Comment
}
