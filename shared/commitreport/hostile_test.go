package commitreport_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// hostileTimeout is the response timeout of the reporters the hostile peers meet: the conformance statement's
// 30 s, shortened so that a table of them runs in seconds. What a row checks is that the report ends within a few
// of them whatever the peer goes on doing; hostileBound is how long it may take (never a statement about speed:
// a report held by the peer runs until the peer stops, far past it).
const (
	hostileTimeout = 300 * time.Millisecond
	hostileBound   = commitreport.ARTIMTimeout + 10*hostileTimeout
	// hostileHold is how long a peer that keeps the report busy keeps at it, well past hostileBound.
	hostileHold = 3 * hostileBound
)

// noLeftovers fails the test when a goroutine of the reporter's or of its association outlives the report.
func noLeftovers(t *testing.T) {
	t.Helper()
	testenv.NoGoroutines(t, 5*time.Second, "dicomnet.(*ClientAssociation)", "commitreport.(*Reporter)", "commitreport.(*alertConn)")
}

// hostileScript is a PACS's side of a report's association, run on the test goroutine once it has connected.
type hostileScript func(t *testing.T, p *dicomnettest.Parrot)

// acceptRoles accepts the association with the SCP role for us.
func acceptRoles(r pdu.RoleSelection) *pdu.RoleSelection { return &r }

// until runs send every interval until it fails (the reporter closed the connection) or hostileHold passes.
func until(p *dicomnettest.Parrot, interval time.Duration, send func() error) {
	for end := time.Now().Add(hostileHold); time.Now().Before(end); time.Sleep(interval) {
		if err := p.Conn.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
			return
		}
		if send() != nil {
			return
		}
	}
}

// encoded is a PDU's bytes.
func encoded(t *testing.T, x pdu.PDU) []byte {
	t.Helper()
	b, err := pdu.Encode(x)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// acBytes is the A-ASSOCIATE-AC a PACS accepting the report's association sends.
func acBytes(t *testing.T, rq *pdu.AssociateRQ) []byte { return encoded(t, acceptAll(rq)) }

// header is a PDU header announcing length bytes of type typ, and no body.
func header(typ pdu.Type, length uint32) []byte {
	b := []byte{byte(typ), 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[2:], length)
	return b
}

// reportRSP answers the report request cmd with a response whose command field and message id are as given.
func reportRSP(cmd *dimse.Command, field, id uint16) *dimse.Command {
	rsp := dimse.NewNEventReportRSP(cmd, dimse.Status{})
	rsp.CommandField, rsp.MessageIDBeingRespondedTo = field, id
	return rsp
}

// TestReportToAHostilePACS: a report to a PACS that answers nothing, trickles, announces lengths it does not
// send, negotiates nonsense, answers something else or aborts ends within its deadlines (the conformance
// statement's 3.2.3, the response timeout shortened here), as a failure to retry, or as delivered where the
// result was answered; its memory is bounded whatever the PACS announces; no goroutine of it is left; and
// neither its error nor its log lines name a UID of the result.
func TestReportToAHostilePACS(t *testing.T) {
	tests := []struct {
		name      string
		script    hostileScript
		delivered bool
		says      string // in the error
	}{
		{"never answers the A-ASSOCIATE-RQ", func(t *testing.T, p *dicomnettest.Parrot) {
			p.Expect(pdu.TypeAssociateRQ)
			p.ExpectAbort(0, 0)
		}, false, "no answer from the peer"},
		{"trickles the A-ASSOCIATE-AC a byte at a time", func(t *testing.T, p *dicomnettest.Parrot) {
			ac := acBytes(t, p.Expect(pdu.TypeAssociateRQ).(*pdu.AssociateRQ))
			until(p, hostileTimeout/10, func() error {
				_, err := p.Conn.Write(ac[:1])
				ac = ac[1:]
				return err
			})
		}, false, "no answer from the peer"},
		{"A-ASSOCIATE-AC of 4 GB", func(t *testing.T, p *dicomnettest.Parrot) {
			p.Expect(pdu.TypeAssociateRQ)
			p.Send(header(pdu.TypeAssociateAC, 0xFFFFFFFF))
			p.ExpectAbort(2, pdu.AbortReasonInvalidParamValue)
		}, false, "limit"},
		{"P-DATA-TF of 4 GB as the response", func(t *testing.T, p *dicomnettest.Parrot) {
			p.AcceptAssociation(acceptRoles)
			p.ExpectMessage()
			p.Send(header(pdu.TypePDataTF, 0xFFFFFFFF))
			p.ExpectAbort(2, pdu.AbortReasonInvalidParamValue)
		}, false, "exceeds our maximum"},
		{"A-ABORT of 4 GB as the response", func(t *testing.T, p *dicomnettest.Parrot) {
			p.AcceptAssociation(acceptRoles)
			p.ExpectMessage()
			p.Send(header(pdu.TypeAbort, 0xFFFFFFFF))
		}, false, "limit"},
		{"maximum PDU length 0 (unlimited)", func(t *testing.T, p *dicomnettest.Parrot) {
			p.AcceptAssociationMax(0, acceptRoles)
			expectReport(t, p, 1, dimse.StatusSuccess)
			p.Expect(pdu.TypeReleaseRQ)
			p.SendPDU(&pdu.ReleaseRP{})
		}, true, ""},
		{"maximum PDU length 1", func(t *testing.T, p *dicomnettest.Parrot) {
			p.AcceptAssociationMax(1, acceptRoles)
			expectReport(t, p, 1, dimse.StatusSuccess) // in PDUs of 8 bytes, fragments of 2
			p.Expect(pdu.TypeReleaseRQ)
			p.SendPDU(&pdu.ReleaseRP{})
		}, true, ""},
		{"A-ASSOCIATE-AC without the presentation context", func(t *testing.T, p *dicomnettest.Parrot) {
			rq := p.Expect(pdu.TypeAssociateRQ).(*pdu.AssociateRQ)
			p.SendPDU(&pdu.AssociateAC{ProtocolVersion: pdu.ProtocolVersion, CalledAE: rq.CalledAE, CallingAE: rq.CallingAE,
				ApplicationContext: rq.ApplicationContext, UserInformation: pdu.UserInformation{MaxPDULength: 16384, ImplementationClassUID: "1.2.3.4"}})
			p.Expect(pdu.TypeReleaseRQ)
			p.SendPDU(&pdu.ReleaseRP{})
		}, false, "turned down the SCP role"},
		{"response to another message id, once", func(t *testing.T, p *dicomnettest.Parrot) {
			p.AcceptAssociation(acceptRoles)
			cmd, _ := p.ExpectMessage()
			p.SendMessage(1, reportRSP(cmd, dimse.NEventReportRSP, cmd.MessageID+1), nil)
			p.ExpectAbort(2, pdu.AbortReasonInvalidParamValue)
		}, false, "a response to message 2 while awaiting the response to message 1"},
		{"responses to another message id, again and again", func(t *testing.T, p *dicomnettest.Parrot) {
			p.AcceptAssociation(acceptRoles)
			cmd, _ := p.ExpectMessage()
			rsp := encoded(t, &pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(1, reportRSP(cmd, dimse.NEventReportRSP, cmd.MessageID+1))}})
			until(p, hostileTimeout/3, func() error { _, err := p.Conn.Write(rsp); return err })
		}, false, "a response to message 2 while awaiting the response to message 1"},
		{"response of another command", func(t *testing.T, p *dicomnettest.Parrot) {
			p.AcceptAssociation(acceptRoles)
			cmd, _ := p.ExpectMessage()
			p.SendMessage(1, reportRSP(cmd, dimse.NActionRSP, cmd.MessageID), nil)
			p.ExpectAbort(2, pdu.AbortReasonInvalidParamValue)
		}, false, "response of command 0x8130 to message 1, want 0x8100"},
		{"N-EVENT-REPORT-RSP never sent", func(t *testing.T, p *dicomnettest.Parrot) {
			p.AcceptAssociation(acceptRoles)
			p.ExpectMessage()
			p.ExpectAbort(0, 0)
		}, false, "no answer from the peer"},
		{"A-RELEASE-RP never sent", func(t *testing.T, p *dicomnettest.Parrot) {
			p.AcceptAssociation(acceptRoles)
			expectReport(t, p, 1, dimse.StatusSuccess)
			p.Expect(pdu.TypeReleaseRQ)
			p.ExpectAbort(0, 0)
		}, true, ""},
		{"P-DATA instead of the A-RELEASE-RP, again and again", func(t *testing.T, p *dicomnettest.Parrot) {
			p.AcceptAssociation(acceptRoles)
			cmd := expectReportCommand(t, p)
			p.Expect(pdu.TypeReleaseRQ)
			rsp := encoded(t, &pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(1, reportRSP(cmd, dimse.NEventReportRSP, cmd.MessageID))}})
			until(p, hostileTimeout/3, func() error { _, err := p.Conn.Write(rsp); return err })
		}, true, ""},
		{"A-ABORT for the A-ASSOCIATE-RQ", func(t *testing.T, p *dicomnettest.Parrot) {
			p.Expect(pdu.TypeAssociateRQ)
			p.SendPDU(&pdu.Abort{Source: 2})
		}, false, "may not accept our AE title"},
		{"A-ABORT for the N-EVENT-REPORT-RQ", func(t *testing.T, p *dicomnettest.Parrot) {
			p.AcceptAssociation(acceptRoles)
			p.ExpectMessage()
			p.SendPDU(&pdu.Abort{Source: 2, Reason: 1})
		}, false, "aborted by the peer"},
		{"A-ABORT for the A-RELEASE-RQ", func(t *testing.T, p *dicomnettest.Parrot) {
			p.AcceptAssociation(acceptRoles)
			expectReport(t, p, 1, dimse.StatusSuccess)
			p.Expect(pdu.TypeReleaseRQ)
			p.SendPDU(&pdu.Abort{})
		}, true, ""},
		{"closes at once", func(t *testing.T, p *dicomnettest.Parrot) {
			p.Conn.Close()
		}, false, "connection closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs testenv.LogBuffer
			pl := dicomnettest.ListenParrot(t)
			r := &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: pl.Addr}}, AETitle: "INGEST",
				DialTimeout: hostileTimeout, ResponseTimeout: hostileTimeout, Logger: jsonlog.New(&logs, slog.LevelDebug)}
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			done := make(chan reported, 1)
			go func() {
				d, err := r.Report(context.Background(), pipeline.CommitmentReport{CallingAE: "PACS", AssociationID: "gone", Result: result})
				done <- reported{d, err}
			}()
			p := pl.Accept()
			if p == nil {
				t.FailNow()
			}
			start := time.Now()
			tt.script(t, p)
			p.Conn.Close()
			var got reported
			select {
			case got = <-done:
			case <-time.After(hostileBound):
				t.Fatalf("the report is still running %v after the PACS's script began (response timeout %v)", hostileBound, hostileTimeout)
			}
			if took := time.Since(start); took > hostileBound {
				t.Errorf("the report ended %v after the PACS's script began, past %v (response timeout %v)", took, hostileBound, hostileTimeout)
			}
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if n := after.TotalAlloc - before.TotalAlloc; n > 32<<20 {
				t.Errorf("the report allocated %d bytes", n)
			}
			switch {
			case tt.delivered && got.err != nil:
				t.Errorf("Report = %v, want delivered", got.err)
			case !tt.delivered && got.err == nil:
				t.Errorf("Report delivered, want an error saying %q", tt.says)
			case !tt.delivered && !strings.Contains(got.err.Error(), tt.says):
				t.Errorf("Report = %v, want an error saying %q", got.err, tt.says)
			}
			noLeftovers(t)
			for _, uid := range []string{result.TransactionUID, result.Committed[0].SOPInstanceUID, result.Failed[0].SOPInstanceUID} {
				if got.err != nil && strings.Contains(got.err.Error(), uid) {
					t.Errorf("Report error %q names %s", got.err, uid)
				}
				if strings.Contains(logs.String(), uid) {
					t.Errorf("log %s names %s", logs.String(), uid)
				}
			}
		})
	}
}

// expectReportCommand is expectReport answering success, returning the request.
func expectReportCommand(t *testing.T, p *dicomnettest.Parrot) *dimse.Command {
	t.Helper()
	cmd, _ := p.ExpectMessage()
	if cmd.CommandField != dimse.NEventReportRQ {
		t.Fatalf("request %+v", cmd)
	}
	p.SendMessage(1, dimse.NewNEventReportRSP(cmd, dimse.Status{}), nil)
	return cmd
}

// TestReportToAHungPACSBlocksNothingElse: while a report waits on a PACS that never answers, a report to another
// AE's healthy PACS is delivered, and the SCP takes its own associations, neither waiting for the hung one.
func TestReportToAHungPACSBlocksNothingElse(t *testing.T) {
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{Commitment: accept{}})
	hung, healthy := dicomnettest.ListenParrot(t), dicomnettest.ListenParrot(t)
	r := &commitreport.Reporter{Server: srv.Server, AETitle: "INGEST",
		Peers: commitreport.Peers{"HUNG": {Addr: hung.Addr}, "PACS": {Addr: healthy.Addr}}}
	hungDone := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := r.Report(ctx, pipeline.CommitmentReport{CallingAE: "HUNG", Result: result})
		hungDone <- err
	}()
	h := hung.Accept()
	h.Expect(pdu.TypeAssociateRQ) // and nothing more: the report waits for its answer

	done := report(r, "")
	p := healthy.Accept()
	p.AcceptAssociation(acceptRoles)
	expectReport(t, p, 1, dimse.StatusSuccess)
	p.Expect(pdu.TypeReleaseRQ)
	p.SendPDU(&pdu.ReleaseRP{})
	if got := <-done; got.err != nil {
		t.Fatalf("report to the healthy PACS: %v", got.err)
	}
	scu := dicomnettest.DialParrot(t, srv.Addr)
	scu.Associate(dicomnettest.AssociateRQ("PACS", "INGEST"))
	scu.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(1)))
	if c := scu.ExpectCommand(); c.CommandField != dimse.CEchoRSP || c.Status != dimse.StatusSuccess {
		t.Fatalf("C-ECHO while a report hangs: %+v", c)
	}
	select {
	case err := <-hungDone:
		t.Fatalf("the hung PACS's report ended first: %v", err)
	default:
	}
	// Cancelled (the SCP stopping), it ends at once, but for ARTIM's wait for the PACS to close after our
	// A-ABORT. The cancellation, landing between the A-ASSOCIATE-RQ sent and the wait for its answer begun, was
	// lost in 2 runs of 8: the wait's deadline replaced the cancellation's, and the report waited out its 30 s.
	cancel()
	select {
	case err := <-hungDone:
		if err == nil {
			t.Error("the hung report, cancelled, delivered")
		}
	case <-time.After(commitreport.DefaultResponseTimeout / 2):
		t.Fatalf("the hung report still running %v after it was cancelled", commitreport.DefaultResponseTimeout/2)
	}
	noLeftovers(t)
}

// TestReportToAHostileTLSPACS: a DICOM TLS peer that never finishes its handshake, or presents a certificate for
// another name, fails the report as a failed handshake, counted once by its reason, within the response timeout;
// one that presents a chain of 100 KB is read within crypto/tls's bound on a certificate message (its leaf is
// valid: delivered). No goroutine is left.
func TestReportToAHostileTLSPACS(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	padding := testpki.NewCA(t, "Padding CA "+strings.Repeat("x", 400))
	long := ca.Server(t, testpki.Options{}).TLS()
	for len(long.Certificate) < 2 || chainBytes(long.Certificate) < 100<<10 {
		long.Certificate = append(long.Certificate, padding.Cert.Raw)
	}
	silent := func(t *testing.T) string { // accepts, reads the ClientHello, says nothing
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			_, _ = io.Copy(io.Discard, c)
		}()
		return l.Addr().String()
	}
	tlsParrot := func(cert tls.Certificate) func(t *testing.T) string {
		return func(t *testing.T) string {
			addr, peers := dicomnettest.ListenTLSParrot(t, cert, nil)
			go func() {
				p := <-peers
				if p == nil {
					return
				}
				// Run by hand, not by the Parrot's methods: this is not the test's goroutine.
				x, err := p.Next()
				if err != nil || x.Type() != pdu.TypeAssociateRQ {
					return
				}
				b, err := pdu.Encode(acceptAll(x.(*pdu.AssociateRQ)))
				if err != nil {
					return
				}
				_, _ = p.Conn.Write(b)
				_, _ = io.Copy(io.Discard, p.Conn) // the report goes unanswered: enough that the handshake held
			}()
			return addr
		}
	}
	for _, tt := range []struct {
		name   string
		peer   func(t *testing.T) string
		reason string // of the failed handshake; "" none failed
		says   string
	}{
		{"never finishes the handshake", silent, dicomnet.HandshakeTimeout, "TLS handshake"},
		{"certificate for another name", tlsParrot(ca.Server(t, testpki.Options{DNSNames: []string{"other.example"}}).TLS()),
			dicomnet.HandshakeBadCertificate, "cannot validate certificate for 127.0.0.1"},
		{"a chain of 100 KB", tlsParrot(long), "", "no answer from the peer"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var reasons []string
			var mu sync.Mutex
			r := &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: tt.peer(t), TLS: true}}, AETitle: "INGEST",
				DialTimeout: hostileTimeout, ResponseTimeout: hostileTimeout,
				TLS: func(context.Context, string) (*tls.Config, error) {
					return tlstrust.ClientConfig("", ca.Pool(), nil), nil
				},
				HandshakeFailed: func(_, r string) {
					mu.Lock()
					reasons = append(reasons, r)
					mu.Unlock()
				}}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			var got reported
			select {
			case got = <-report(r, ""):
			case <-time.After(hostileBound):
				t.Fatalf("the report still running after %v (response timeout %v)", hostileBound, hostileTimeout)
			}
			runtime.ReadMemStats(&after)
			if n := after.TotalAlloc - before.TotalAlloc; n > 32<<20 {
				t.Errorf("the report allocated %d bytes", n)
			}
			if got.err == nil || !strings.Contains(got.err.Error(), tt.says) {
				t.Fatalf("Report = %v, want an error saying %q", got.err, tt.says)
			}
			he, ok := errors.AsType[*commitreport.HandshakeError](got.err)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case tt.reason == "" && (ok || len(reasons) != 0):
				t.Errorf("Report = %v, counted %v: want no failed handshake", got.err, reasons)
			case tt.reason != "" && (!ok || he.Reason != tt.reason || !slices.Equal(reasons, []string{tt.reason})):
				t.Errorf("Report = %v, counted %v: want a failed handshake %s counted once", got.err, reasons, tt.reason)
			}
			noLeftovers(t)
		})
	}
}

// chainBytes is the size of a certificate chain's DER.
func chainBytes(chain [][]byte) int {
	n := 0
	for _, c := range chain {
		n += len(c)
	}
	return n
}

// acceptAll is the A-ASSOCIATE-AC accepting rq's every context and role.
func acceptAll(rq *pdu.AssociateRQ) *pdu.AssociateAC {
	ac := &pdu.AssociateAC{ProtocolVersion: pdu.ProtocolVersion, CalledAE: rq.CalledAE, CallingAE: rq.CallingAE,
		ApplicationContext: rq.ApplicationContext, UserInformation: pdu.UserInformation{MaxPDULength: 16384, ImplementationClassUID: "1.2.3.4",
			RoleSelections: rq.UserInformation.RoleSelections}}
	for _, pc := range rq.PresentationContexts {
		ac.PresentationContexts = append(ac.PresentationContexts, pdu.PresentationContextAC{ID: pc.ID, TransferSyntax: pc.TransferSyntaxes[0]})
	}
	return ac
}

// TestReportWithinMaxReport: MaxReport, the bound the pipeline holds each delivery to (and leases its transaction
// beyond), is the sum of the deadlines one report meets in turn; a PACS that takes nearly the response timeout over
// each of its answers is delivered to within it.
func TestReportWithinMaxReport(t *testing.T) {
	dial, answer := hostileTimeout/2, hostileTimeout
	for _, tt := range []struct {
		name string
		r    *commitreport.Reporter
		want time.Duration
	}{
		{"defaults", &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: "pacs:104"}}},
			commitreport.DefaultDialTimeout + 3*commitreport.DefaultResponseTimeout + commitreport.ARTIMTimeout},
		{"plain", &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: "pacs:104"}}, DialTimeout: dial, ResponseTimeout: answer},
			dial + 3*answer + commitreport.ARTIMTimeout},
		{"a tls:// peer: the handshake", &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: "pacs:104"}, "TLS": {Addr: "pacs:2762", TLS: true}},
			DialTimeout: dial, ResponseTimeout: answer}, dial + 4*answer + commitreport.ARTIMTimeout},
		{"in the SCP's process: the requestor's association first", &commitreport.Reporter{Server: &dicomnet.Server{}, Peers: commitreport.Peers{"PACS": {Addr: "pacs:104"}, "TLS": {Addr: "pacs:2762", TLS: true}},
			DialTimeout: dial, ResponseTimeout: answer}, dial + 5*answer + commitreport.ARTIMTimeout},
	} {
		if got := tt.r.MaxReport(); got != tt.want {
			t.Errorf("%s: MaxReport = %v, want %v", tt.name, got, tt.want)
		}
	}

	pl := dicomnettest.ListenParrot(t)
	r := &commitreport.Reporter{Peers: commitreport.Peers{"PACS": {Addr: pl.Addr}}, AETitle: "INGEST", DialTimeout: dial, ResponseTimeout: answer}
	ctx, cancel := context.WithTimeout(context.Background(), r.MaxReport())
	defer cancel()
	done := make(chan reported, 1)
	go func() {
		d, err := r.Report(ctx, pipeline.CommitmentReport{CallingAE: "PACS", AssociationID: "gone", Result: result})
		done <- reported{d, err}
	}()
	p := pl.Accept()
	if p == nil {
		t.FailNow()
	}
	slow := answer * 8 / 10
	ac := acBytes(t, p.Expect(pdu.TypeAssociateRQ).(*pdu.AssociateRQ))
	time.Sleep(slow)
	p.Send(ac)
	cmd, _ := p.ExpectMessage()
	time.Sleep(slow)
	p.SendMessage(1, dimse.NewNEventReportRSP(cmd, dimse.Status{}), nil)
	p.Expect(pdu.TypeReleaseRQ)
	time.Sleep(slow)
	p.SendPDU(&pdu.ReleaseRP{})
	p.Conn.Close()
	if got := <-done; got.err != nil {
		t.Errorf("Report of a slow PACS within MaxReport = %v, want delivered", got.err)
	}
	noLeftovers(t)
}
