package dicomnet_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// commitmentRQ proposes Verification (1), CT Image Storage (3) and Storage Commitment (5, Implicit VR LE).
func commitmentRQ(roles ...pdu.RoleSelection) *pdu.AssociateRQ {
	rq := dicomnettest.CommitmentAssociateRQ("PACS", "ANY", dicomuid.ImplicitVRLittleEndian)
	rq.UserInformation.RoleSelections = roles
	return rq
}

type nactionSeen struct {
	req  *dicomnet.CommitmentRequest
	data []byte
	err  error
}

// commitments is a CommitmentHandler that reads the whole data set, reports it and answers with reply.
type commitments struct {
	seen  chan nactionSeen
	reply func(data []byte, readErr error) error
}

func (c *commitments) ServeCommitment(_ context.Context, req *dicomnet.CommitmentRequest, r io.Reader) error {
	b, err := io.ReadAll(r)
	c.seen <- nactionSeen{req: req, data: b, err: err}
	if c.reply != nil {
		return c.reply(b, err)
	}
	return err
}

func sampleRequest(t *testing.T) []byte {
	t.Helper()
	ds, err := commitment.AppendRequest(nil, &commitment.Request{TransactionUID: "1.2.3.99",
		Refs: []commitment.Ref{{SOPClassUID: dicomuid.CTImageStorage, SOPInstanceUID: "1.2.3.4.1"}}}, dicomuid.ImplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

// TestNAction: the server checks the N-ACTION-RQ's command (class, well-known instance, action type, data set,
// context) and answers at once with the handler's verdict; the handler sees the data set exactly as sent.
func TestNAction(t *testing.T) {
	const sc, inst = dicomuid.StorageCommitment, dicomuid.StorageCommitmentInstance
	ds := []byte("not parsed by the server")
	tests := []struct {
		name    string
		ctx     byte
		cmd     *dimse.Command
		ds      []byte
		reply   func([]byte, error) error
		status  uint16
		handled bool
	}{
		{"accepted", 5, dimse.NewNActionRQ(1, sc, inst, 1), ds, nil, dimse.StatusSuccess, true},
		{"handler's status", 5, dimse.NewNActionRQ(1, sc, inst, 1), ds,
			func([]byte, error) error {
				return dimse.Status{Code: dimse.StatusInvalidArgumentValue, Comment: "empty Referenced SOP Sequence"}
			}, dimse.StatusInvalidArgumentValue, true},
		{"handler's error", 5, dimse.NewNActionRQ(1, sc, inst, 1), ds, func([]byte, error) error { return errors.New("store down") }, dimse.StatusProcessingFailure, true},
		{"handler panics", 5, dimse.NewNActionRQ(1, sc, inst, 1), ds, func([]byte, error) error { panic("boom") }, dimse.StatusProcessingFailure, true},
		{"action type 2", 5, dimse.NewNActionRQ(1, sc, inst, 2), ds, nil, dimse.StatusNoSuchAction, false},
		{"other instance", 5, dimse.NewNActionRQ(1, sc, "1.2.3", 1), ds, nil, dimse.StatusNoSuchSOPInstance, false},
		{"other requested class", 5, dimse.NewNActionRQ(1, dicomuid.CTImageStorage, inst, 1), ds, nil, dimse.StatusNoSuchSOPClass, false},
		{"on a storage context", 3, dimse.NewNActionRQ(1, sc, inst, 1), ds, nil, dimse.StatusUnrecognizedOperation, false},
		{"no data set", 5, func() *dimse.Command {
			c := dimse.NewNActionRQ(1, sc, inst, 1)
			c.CommandDataSetType = dimse.NoDataSet
			return c
		}(), nil, nil, dimse.StatusInvalidArgumentValue, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &commitments{seen: make(chan nactionSeen, 1), reply: tc.reply}
			refused := make(chan dicomnet.Event, 2)
			p, _ := startParrot(t, &dicomnet.Server{Commitment: h, Observer: dicomnet.ObserverFunc(func(ev dicomnet.Event) {
				if ev.Type == dicomnet.EventCommitmentRefused {
					refused <- ev
				}
			})})
			ac := p.Associate(commitmentRQ())
			if got := ac.PresentationContexts[2]; got.ID != 5 || got.Result != pdu.ResultAcceptance {
				t.Fatalf("Storage Commitment context %+v, want accepted", got)
			}
			p.SendMessage(tc.ctx, tc.cmd, tc.ds)
			rsp := p.ExpectCommand()
			if rsp.CommandField != dimse.NActionRSP || rsp.MessageIDBeingRespondedTo != 1 || rsp.Status != tc.status {
				t.Fatalf("response %+v, want N-ACTION-RSP with 0x%04X", rsp, tc.status)
			}
			// Every failure says why (conformance.md: the Error Comment says which), a handler's failure or panic too.
			if tc.status != dimse.StatusSuccess && rsp.ErrorComment == "" {
				t.Errorf("status 0x%04X without an Error Comment", rsp.Status)
			}
			if tc.status == dimse.StatusSuccess && (rsp.AffectedSOPClassUID != sc || rsp.AffectedSOPInstanceUID != inst || rsp.ActionTypeID != 1) {
				t.Errorf("success response %+v", rsp)
			}
			select {
			case got := <-h.seen:
				if !tc.handled {
					t.Fatalf("handler called for %s", tc.name)
				}
				if !bytes.Equal(got.data, tc.ds) || got.err != nil || got.req.MessageID != 1 || got.req.TransferSyntaxUID != dicomuid.ImplicitVRLittleEndian {
					t.Errorf("handler saw %q (%v) %+v", got.data, got.err, got.req)
				}
			default:
				if tc.handled {
					t.Fatal("handler not called")
				}
			}
			// The association goes on.
			p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(2)))
			if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CEchoRSP || rsp.Status != 0 {
				t.Fatalf("C-ECHO after the N-ACTION: %+v", rsp)
			}
			// A refusal is observed once (the SCP audits it), with its status and why; a success is not.
			select {
			case ev := <-refused:
				if tc.status == dimse.StatusSuccess || ev.Status != tc.status || ev.Err == nil || ev.Err.Error() == "" ||
					ev.SOPClassUID != tc.cmd.RequestedSOPClassUID || ev.Association == nil {
					t.Errorf("EventCommitmentRefused %+v for a 0x%04X answer", ev, tc.status)
				}
			default:
				if tc.status != dimse.StatusSuccess {
					t.Error("no EventCommitmentRefused for a refusal")
				}
			}
			if len(refused) != 0 {
				t.Error("more than one EventCommitmentRefused")
			}
		})
	}
}

// TestNActionCutShort: an N-ACTION whose data set the association's end cuts short (an A-ABORT, a closed
// connection) is answered nothing, and is observed as a refusal with no status (EventCommitmentRefused, Status 0,
// the reader's error) before the association's end, whether the handler was reading it or the command was
// refused before it (N-ACTION on a storage context, 0211): it was observed nowhere, so the audit trail held the
// association's abort alone and no one reading it could tell a Storage Commitment request had been made.
func TestNActionCutShort(t *testing.T) {
	const sc, inst = dicomuid.StorageCommitment, dicomuid.StorageCommitmentInstance
	for _, tt := range []struct {
		name    string
		ctx     byte
		cmd     *dimse.Command
		handled bool
		refused uint16 // the refusal decided before the data set broke off, carried beside the reader's error
	}{
		{"read by the handler", 5, dimse.NewNActionRQ(1, sc, inst, 1), true, 0},
		{"on a storage context", 3, dimse.NewNActionRQ(1, sc, inst, 1), false, dimse.StatusUnrecognizedOperation},
		{"another requested class", 5, dimse.NewNActionRQ(1, dicomuid.CTImageStorage, inst, 1), false, dimse.StatusNoSuchSOPClass},
		{"another requested instance", 5, dimse.NewNActionRQ(1, sc, "1.2.3", 1), false, dimse.StatusNoSuchSOPInstance},
		{"action type 2", 5, dimse.NewNActionRQ(1, sc, inst, 2), false, dimse.StatusNoSuchAction},
	} {
		for _, brk := range []struct {
			name   string
			break_ func(p *dicomnettest.Parrot)
		}{
			{"peer A-ABORT", func(p *dicomnettest.Parrot) { p.SendPDU(&pdu.Abort{Source: 0}) }},
			{"TCP close", func(p *dicomnettest.Parrot) { p.Conn.Close() }},
		} {
			t.Run(tt.name+", "+brk.name, func(t *testing.T) {
				h := &commitments{seen: make(chan nactionSeen, 1)}
				rec := newRecorder()
				p, _ := startParrot(t, &dicomnet.Server{Commitment: h, Observer: rec})
				p.Associate(commitmentRQ())
				half := sampleRequest(t)
				half = half[:len(half)/2]
				p.SendPDVs(dicomnettest.CommandPDV(tt.ctx, tt.cmd), dicomnettest.PDV(tt.ctx, 0, half))
				brk.break_(p)
				if tt.handled {
					if got := <-h.seen; !errors.Is(got.err, dicomnet.ErrIncomplete) {
						t.Errorf("handler read error %v, want ErrIncomplete", got.err)
					}
				}
				ev := rec.waitFor(t, dicomnet.EventCommitmentRefused)
				if ev.Status != 0 || !errors.Is(ev.Err, dicomnet.ErrIncomplete) || errors.Is(ev.Err, dicomnet.ErrNotSent) ||
					ev.SOPClassUID != tt.cmd.RequestedSOPClassUID || ev.Association == nil || ev.Bytes != int64(len(half)) {
					t.Errorf("EventCommitmentRefused status %04X, error %v, class %q, %d bytes; want no status, ErrIncomplete, %q, %d",
						ev.Status, ev.Err, ev.SOPClassUID, ev.Bytes, tt.cmd.RequestedSOPClassUID, len(half))
				}
				carriesRefusal(t, ev, tt.refused, "")
				rec.waitFor(t, dicomnet.EventAborted)
				rec.mu.Lock()
				defer rec.mu.Unlock()
				var types []dicomnet.EventType
				for _, e := range rec.events {
					types = append(types, e.Type)
				}
				if want := []dicomnet.EventType{dicomnet.EventAccepted, dicomnet.EventCommitmentRefused, dicomnet.EventAborted}; !slices.Equal(types, want) {
					t.Errorf("events %v, want %v", types, want)
				}
			})
		}
	}
}

// TestNActionTooLarge: Action Information past MaxActionInformation fails the handler's reads and is answered
// 0213 (resource limitation) once the rest is drained; the association goes on.
func TestNActionTooLarge(t *testing.T) {
	h := &commitments{seen: make(chan nactionSeen, 1)}
	p, _ := startParrot(t, &dicomnet.Server{Commitment: h})
	p.Associate(commitmentRQ())
	p.SendPDVs(dicomnettest.CommandPDV(5, dimse.NewNActionRQ(1, dicomuid.StorageCommitment, dicomuid.StorageCommitmentInstance, 1)))
	chunk := make([]byte, 128<<10)
	for sent := 0; sent <= dicomnet.MaxActionInformation; sent += len(chunk) {
		ctrl := byte(0)
		if sent+len(chunk) > dicomnet.MaxActionInformation {
			ctrl = pdu.ControlLast
		}
		p.SendPDVs(dicomnettest.PDV(5, ctrl, chunk))
	}
	rsp := p.ExpectCommand()
	if rsp.Status != dimse.StatusResourceLimitation {
		t.Fatalf("response %+v, want 0213", rsp)
	}
	if got := <-h.seen; !errors.Is(got.err, dicomnet.ErrObjectTooLarge) {
		t.Errorf("handler's read error %v, want ErrObjectTooLarge", got.err)
	}
}

// TestNActionWithoutHandler: a server without a CommitmentHandler does not negotiate the class.
func TestNActionWithoutHandler(t *testing.T) {
	p, _ := startParrot(t, &dicomnet.Server{})
	ac := p.Associate(commitmentRQ())
	if got := ac.PresentationContexts[2]; got.Result != pdu.ResultAbstractSyntaxNotSupported {
		t.Fatalf("Storage Commitment context %+v, want result 3", got)
	}
}

// acceptCommitment associates a parrot that proposes Storage Commitment, sends a request and returns the
// association's id from the handler.
func acceptCommitment(t *testing.T, p *dicomnettest.Parrot, h *commitments, roles ...pdu.RoleSelection) string {
	t.Helper()
	p.Associate(commitmentRQ(roles...))
	p.SendMessage(5, dimse.NewNActionRQ(1, dicomuid.StorageCommitment, dicomuid.StorageCommitmentInstance, 1), sampleRequest(t))
	if rsp := p.ExpectCommand(); rsp.Status != dimse.StatusSuccess {
		t.Fatalf("N-ACTION-RSP %+v", rsp)
	}
	return (<-h.seen).req.Association.ID
}

func sampleReport() (dicomnet.EventReport, *commitment.Result) {
	res := &commitment.Result{TransactionUID: "1.2.3.99",
		Committed: []commitment.Ref{{SOPClassUID: dicomuid.CTImageStorage, SOPInstanceUID: "1.2.3.4.1"}}}
	return dicomnet.EventReport{SOPClassUID: dicomuid.StorageCommitment, SOPInstanceUID: dicomuid.StorageCommitmentInstance,
		EventTypeID: res.EventTypeID(),
		DataSet:     func(ts string) ([]byte, error) { return commitment.AppendResult(nil, res, ts) },
	}, res
}

type sendResult struct {
	st  dimse.Status
	err error
}

func sendReport(s *dicomnettest.Server, id string) <-chan sendResult {
	ch := make(chan sendResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rq, _ := sampleReport()
		st, err := s.SendEventReport(ctx, id, rq)
		ch <- sendResult{st, err}
	}()
	return ch
}

// TestEventReportOnTheSameAssociation: while the requestor keeps its association open (and idle), the result
// goes to it there as an N-EVENT-REPORT-RQ on the Storage Commitment context, and its response comes back to the
// sender.
func TestEventReportOnTheSameAssociation(t *testing.T) {
	h := &commitments{seen: make(chan nactionSeen, 1)}
	p, srv := startParrot(t, &dicomnet.Server{Commitment: h})
	id := acceptCommitment(t, p, h, pdu.RoleSelection{SOPClassUID: dicomuid.StorageCommitment, SCU: 1, SCP: 0})
	sent := sendReport(srv, id)
	cmd, ds := p.ExpectMessage()
	_, res := sampleReport()
	want, _ := commitment.AppendResult(nil, res, dicomuid.ImplicitVRLittleEndian)
	if cmd.CommandField != dimse.NEventReportRQ || cmd.EventTypeID != commitment.EventCommitted ||
		cmd.AffectedSOPClassUID != dicomuid.StorageCommitment || cmd.AffectedSOPInstanceUID != dicomuid.StorageCommitmentInstance {
		t.Fatalf("request %+v", cmd)
	}
	if !bytes.Equal(ds, want) {
		t.Errorf("event information %x, want %x", ds, want)
	}
	p.SendMessage(5, dimse.NewNEventReportRSP(cmd, dimse.Status{}), nil)
	if r := <-sent; r.err != nil || r.st.Code != dimse.StatusSuccess {
		t.Fatalf("SendEventReport = %v, %v", r.st, r.err)
	}
	// And the association goes on with the requestor's next message.
	p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(2)))
	if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CEchoRSP {
		t.Fatalf("C-ECHO after the report: %+v", rsp)
	}
	p.SendPDU(&pdu.ReleaseRQ{})
	p.Expect(pdu.TypeReleaseRP)
}

// TestEventReportOneAtATime: two reports for one association are not outstanding together (no asynchronous
// operations window is negotiated: one operation invoked by each side at a time); the second goes once the
// first is answered, and the requestor's own requests are served meanwhile.
func TestEventReportOneAtATime(t *testing.T) {
	h := &commitments{seen: make(chan nactionSeen, 1)}
	p, srv := startParrot(t, &dicomnet.Server{Commitment: h})
	id := acceptCommitment(t, p, h)
	first, second := sendReport(srv, id), sendReport(srv, id)
	cmd1, _ := p.ExpectMessage()
	if cmd1.CommandField != dimse.NEventReportRQ {
		t.Fatalf("first message %+v, want an N-EVENT-REPORT-RQ", cmd1)
	}
	p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(2)))
	if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CEchoRSP {
		t.Fatalf("message after the first report %+v, want the C-ECHO-RSP (the second report waits)", rsp)
	}
	p.SendMessage(5, dimse.NewNEventReportRSP(cmd1, dimse.Status{}), nil)
	cmd2, _ := p.ExpectMessage()
	if cmd2.CommandField != dimse.NEventReportRQ || cmd2.MessageID == cmd1.MessageID {
		t.Fatalf("message after the first response %+v, want the second N-EVENT-REPORT-RQ", cmd2)
	}
	p.SendMessage(5, dimse.NewNEventReportRSP(cmd2, dimse.Status{}), nil)
	for _, ch := range []<-chan sendResult{first, second} {
		if r := <-ch; r.err != nil || r.st.Code != dimse.StatusSuccess {
			t.Fatalf("SendEventReport = %v, %v", r.st, r.err)
		}
	}
	p.SendPDU(&pdu.ReleaseRQ{})
	p.Expect(pdu.TypeReleaseRP)
}

// TestEventReportAnsweredByAnotherCommand: a response to our N-EVENT-REPORT-RQ's message id that is of another
// command (an N-ACTION-RSP, a C-STORE-RSP) does not answer it, by the rule the client holds (ResponseField): the
// association is aborted (A-ABORT 02 06) and the report fails with ErrUnexpectedResponse, never delivered. It was
// handed to the waiting sender for the report's answer, its status passing for the peer's outcome.
func TestEventReportAnsweredByAnotherCommand(t *testing.T) {
	for _, field := range []uint16{dimse.NActionRSP, dimse.CStoreRSP} {
		t.Run(fmt.Sprintf("0x%04X", field), func(t *testing.T) {
			h := &commitments{seen: make(chan nactionSeen, 1)}
			p, srv := startParrot(t, &dicomnet.Server{Commitment: h})
			id := acceptCommitment(t, p, h)
			sent := sendReport(srv, id)
			cmd, _ := p.ExpectMessage()
			rsp := dimse.NewNEventReportRSP(cmd, dimse.Status{})
			rsp.CommandField = field
			p.SendMessage(5, rsp, nil)
			p.ExpectAbort(2, pdu.AbortReasonInvalidParamValue)
			r := <-sent
			if !errors.Is(r.err, dicomnet.ErrUnexpectedResponse) || errors.Is(r.err, dicomnet.ErrAssociationEnded) {
				t.Fatalf("SendEventReport = %v, %v; want ErrUnexpectedResponse (a failed delivery, not one to try elsewhere)", r.st, r.err)
			}
			if want := fmt.Sprintf("response of command 0x%04x to message %d, want 0x%04x", field, cmd.MessageID, dimse.NEventReportRSP); !strings.Contains(r.err.Error(), want) {
				t.Errorf("SendEventReport error %q, want it to say %q", r.err, want)
			}
		})
	}
}

// TestEventReportWaitsForTheMessageBoundary: a report queued while the requestor is sending a C-STORE goes out
// after the C-STORE-RSP, never inside the peer's exchange.
func TestEventReportWaitsForTheMessageBoundary(t *testing.T) {
	h := &commitments{seen: make(chan nactionSeen, 1)}
	reading := make(chan struct{})
	store := dicomnet.HandlerFunc(func(_ context.Context, _ *dicomnet.CStoreRequest, r io.Reader) error {
		buf := make([]byte, 4)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		close(reading)
		_, err := io.Copy(io.Discard, r)
		return err
	})
	p, srv := startParrot(t, &dicomnet.Server{Commitment: h, Handler: store})
	id := acceptCommitment(t, p, h)
	p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(2)), dicomnettest.PDV(3, 0, []byte("half")))
	<-reading
	sent := sendReport(srv, id)
	time.Sleep(100 * time.Millisecond) // the wake-up lands in the middle of the C-STORE
	p.SendPDVs(dicomnettest.PDV(3, pdu.ControlLast, []byte("rest")))
	if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CStoreRSP || rsp.Status != dimse.StatusSuccess {
		t.Fatalf("first message %+v, want the C-STORE-RSP", rsp)
	}
	cmd, _ := p.ExpectMessage()
	if cmd.CommandField != dimse.NEventReportRQ {
		t.Fatalf("second message %+v, want the N-EVENT-REPORT-RQ", cmd)
	}
	p.SendMessage(5, dimse.NewNEventReportRSP(cmd, dimse.Status{Code: dimse.StatusProcessingFailure}), nil)
	if r := <-sent; r.err != nil || r.st.Code != dimse.StatusProcessingFailure {
		t.Fatalf("SendEventReport = %v, %v; want the peer's 0110", r.st, r.err)
	}
}

// TestEventReportWhenTheAssociationEnds: a report for an association that is gone, or that ends before it
// answers, fails in a way that tells the caller to open an association of its own.
func TestEventReportWhenTheAssociationEnds(t *testing.T) {
	release := func(p *dicomnettest.Parrot) {
		p.SendPDU(&pdu.ReleaseRQ{})
		p.Expect(pdu.TypeReleaseRP)
	}
	for _, tt := range []struct {
		name string
		// sentFirst: the report is sent before the association ends (and seen by the requestor).
		sentFirst bool
		end       func(*dicomnettest.Parrot)
		want      error
	}{
		{"released before", false, release, dicomnet.ErrNoAssociation},
		{"released instead of answering", true, release, dicomnet.ErrAssociationEnded},
		{"aborted", true, func(p *dicomnettest.Parrot) { p.SendPDU(&pdu.Abort{}) }, dicomnet.ErrAssociationEnded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := &commitments{seen: make(chan nactionSeen, 1)}
			p, srv := startParrot(t, &dicomnet.Server{Commitment: h})
			id := acceptCommitment(t, p, h)
			var sent <-chan sendResult
			if tt.sentFirst {
				sent = sendReport(srv, id)
				p.ExpectMessage()
			}
			tt.end(p)
			if !tt.sentFirst {
				sent = sendReport(srv, id)
			}
			if r := <-sent; !errors.Is(r.err, tt.want) {
				t.Fatalf("SendEventReport error %v, want %v", r.err, tt.want)
			}
		})
	}
	t.Run("unknown id", func(t *testing.T) {
		srv := dicomnettest.NewServerT(t, &dicomnet.Server{Commitment: &commitments{}})
		if r := <-sendReport(srv, "nope"); !errors.Is(r.err, dicomnet.ErrNoAssociation) {
			t.Fatalf("SendEventReport error %v, want ErrNoAssociation", r.err)
		}
	})
}

// TestEventReportNeedsTheSCPRole: a requestor that took the SCP role for the class only (and so left itself no
// role we serve, and us none we can report in) has the class's context rejected (user-rejection) and gets no
// report on its association.
func TestEventReportNeedsTheSCPRole(t *testing.T) {
	h := &commitments{seen: make(chan nactionSeen, 1)}
	accepted := make(chan string, 1)
	p, srv := startParrot(t, &dicomnet.Server{Commitment: h, Observer: dicomnet.ObserverFunc(func(ev dicomnet.Event) {
		if ev.Type == dicomnet.EventAccepted {
			accepted <- ev.Association.ID
		}
	})})
	ac := p.Associate(commitmentRQ(pdu.RoleSelection{SOPClassUID: dicomuid.StorageCommitment, SCU: 0, SCP: 1}))
	if got := ac.PresentationContexts[2]; got.ID != 5 || got.Result != pdu.ResultUserRejection || len(ac.UserInformation.RoleSelections) != 0 {
		t.Fatalf("Storage Commitment context %+v, role answers %+v: want rejected (1), none answered", got, ac.UserInformation.RoleSelections)
	}
	if r := <-sendReport(srv, <-accepted); !errors.Is(r.err, dicomnet.ErrRoleNotHeld) {
		t.Fatalf("SendEventReport error %v, want ErrRoleNotHeld", r.err)
	}
}

type dialResult struct {
	a   *dicomnet.ClientAssociation
	err error
}

func (r dialResult) get(t *testing.T) *dicomnet.ClientAssociation {
	t.Helper()
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.a
}

// dial associates in the background, so the test goroutine can play the acceptor.
func dial(ctx context.Context, addr string, cfg dicomnet.ClientConfig) <-chan dialResult {
	ch := make(chan dialResult, 1)
	go func() {
		a, err := dicomnet.Dial(ctx, addr, cfg)
		ch <- dialResult{a, err}
	}()
	return ch
}

// TestClientEventReport: the client proposes the SCP role for Storage Commitment (SCU 0, SCP 1, as PS3.4 J.3
// wants of an SCP reporting on an association of its own) and reports only where the acceptor agreed.
func TestClientEventReport(t *testing.T) {
	cfg := dicomnet.ClientConfig{CallingAE: "INGEST", CalledAE: "PACS", Contexts: []dicomnet.ProposedContext{{
		AbstractSyntax: dicomuid.StorageCommitment, TransferSyntaxes: []string{dicomuid.ExplicitVRLittleEndian, dicomuid.ImplicitVRLittleEndian},
		Roles: &dicomnet.Roles{SCP: true},
	}}}
	rq, res := sampleReport()
	t.Run("role agreed", func(t *testing.T) {
		pl := dicomnettest.ListenParrot(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dialed := dial(ctx, pl.Addr, cfg)
		p := pl.Accept()
		p.AcceptAssociation(func(r pdu.RoleSelection) *pdu.RoleSelection { return &r })
		a := (<-dialed).get(t)
		done := make(chan sendResult, 1)
		go func() {
			st, err := a.SendEventReport(ctx, rq)
			done <- sendResult{st, err}
		}()
		cmd, ds := p.ExpectMessage()
		want, _ := commitment.AppendResult(nil, res, dicomuid.ExplicitVRLittleEndian)
		if cmd.CommandField != dimse.NEventReportRQ || cmd.EventTypeID != 1 || !bytes.Equal(ds, want) {
			t.Fatalf("request %+v with %x", cmd, ds)
		}
		p.SendMessage(1, dimse.NewNEventReportRSP(cmd, dimse.Status{}), nil)
		if r := <-done; r.err != nil || !r.st.IsSuccess() {
			t.Fatalf("SendEventReport = %v, %v", r.st, r.err)
		}
	})
	t.Run("role not returned", func(t *testing.T) {
		pl := dicomnettest.ListenParrot(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		dialed := dial(ctx, pl.Addr, cfg)
		pl.Accept().AcceptAssociation(func(pdu.RoleSelection) *pdu.RoleSelection { return nil })
		a := (<-dialed).get(t)
		if _, err := a.SendEventReport(ctx, rq); !errors.Is(err, dicomnet.ErrRoleNotHeld) {
			t.Fatalf("SendEventReport error %v, want ErrRoleNotHeld", err)
		}
	})
}

// TestEventReportWithinOurMaxSend: to a peer that gives no maximum PDU length (0, unlimited), a result larger than
// DefaultMaxSendPDULength goes in PDUs of at most that length, as the client sends (one rule, maxSendPDU): it went
// in one PDU of the whole message's size.
func TestEventReportWithinOurMaxSend(t *testing.T) {
	h := &commitments{seen: make(chan nactionSeen, 1)}
	p, srv := startParrot(t, &dicomnet.Server{Commitment: h})
	rq := commitmentRQ(pdu.RoleSelection{SOPClassUID: dicomuid.StorageCommitment, SCU: 1, SCP: 0})
	rq.UserInformation.MaxPDULength = 0
	p.Associate(rq)
	p.SendMessage(5, dimse.NewNActionRQ(1, dicomuid.StorageCommitment, dicomuid.StorageCommitmentInstance, 1), sampleRequest(t))
	if rsp := p.ExpectCommand(); rsp.Status != dimse.StatusSuccess {
		t.Fatalf("N-ACTION-RSP %+v", rsp)
	}
	id := (<-h.seen).req.Association.ID

	report, want := largeReport(t, dicomuid.ImplicitVRLittleEndian)
	sent := make(chan sendResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := srv.SendEventReport(ctx, id, report)
		sent <- sendResult{st, err}
	}()
	c := expectReportWithin(t, p, want, dicomnet.DefaultMaxSendPDULength)
	p.SendMessage(5, dimse.NewNEventReportRSP(c, dimse.Status{}), nil)
	if r := <-sent; r.err != nil || !r.st.IsSuccess() {
		t.Fatalf("SendEventReport = %v, %v", r.st, r.err)
	}
}

// TestClientEventReportWithinMaxSend: as a requestor (commitreport's own association to the PACS), a report larger
// than any PDU we send goes in PDUs within the peer's Maximum Length Received and at most ours: DefaultMaxSendPDULength
// to a peer that gives 0 (unlimited), as the SCP's side does (TestEventReportWithinOurMaxSend); no test held the
// client to it.
func TestClientEventReportWithinMaxSend(t *testing.T) {
	for _, tc := range []struct {
		name          string
		peerMax, ours uint32
		want          uint32
	}{
		{"peer unlimited", 0, 0, dicomnet.DefaultMaxSendPDULength},
		{"peer unlimited, ours set", 0, 64 << 10, 64 << 10},
		{"peer's smaller", 16384, 0, 16384},
		{"peer's larger", 4 << 20, 0, dicomnet.DefaultMaxSendPDULength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := dicomnet.ClientConfig{CallingAE: "INGEST", CalledAE: "PACS", MaxSendPDULength: tc.ours,
				Contexts: []dicomnet.ProposedContext{{AbstractSyntax: dicomuid.StorageCommitment,
					TransferSyntaxes: []string{dicomuid.ExplicitVRLittleEndian}, Roles: &dicomnet.Roles{SCP: true}}}}
			pl := dicomnettest.ListenParrot(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			dialed := dial(ctx, pl.Addr, cfg)
			p := pl.Accept()
			p.AcceptAssociationMax(tc.peerMax, func(r pdu.RoleSelection) *pdu.RoleSelection { return &r })
			a := (<-dialed).get(t)
			if got := a.PeerMaxPDULength(); got != tc.peerMax {
				t.Fatalf("PeerMaxPDULength = %d, want %d", got, tc.peerMax)
			}
			rq, want := largeReport(t, dicomuid.ExplicitVRLittleEndian)
			sent := make(chan sendResult, 1)
			go func() {
				st, err := a.SendEventReport(ctx, rq)
				sent <- sendResult{st, err}
			}()
			c := expectReportWithin(t, p, want, tc.want)
			p.SendMessage(1, dimse.NewNEventReportRSP(c, dimse.Status{}), nil)
			if r := <-sent; r.err != nil || !r.st.IsSuccess() {
				t.Fatalf("SendEventReport = %v, %v", r.st, r.err)
			}
		})
	}
}

// largeReport is a commitment result of 5000 references, larger than DefaultMaxSendPDULength, and its data set in
// ts.
func largeReport(t *testing.T, ts string) (dicomnet.EventReport, []byte) {
	t.Helper()
	res := &commitment.Result{TransactionUID: "1.2.3.99"}
	for i := range 5000 {
		res.Committed = append(res.Committed, commitment.Ref{SOPClassUID: dicomuid.CTImageStorage, SOPInstanceUID: fmt.Sprintf("1.2.3.4.%d", i)})
	}
	want, err := commitment.AppendResult(nil, res, ts)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) <= int(dicomnet.DefaultMaxSendPDULength) {
		t.Fatalf("result of %d bytes fits one PDU", len(want))
	}
	return dicomnet.EventReport{SOPClassUID: dicomuid.StorageCommitment, SOPInstanceUID: dicomuid.StorageCommitmentInstance,
		EventTypeID: res.EventTypeID(), DataSet: func(ts string) ([]byte, error) { return commitment.AppendResult(nil, res, ts) }}, want
}

// expectReportWithin reads a report's PDUs, checks each within limit bytes (and one at least at limit: the
// message is cut at it, not below) and its data set want, and returns its command.
func expectReportWithin(t *testing.T, p *dicomnettest.Parrot, want []byte, limit uint32) *dimse.Command {
	t.Helper()
	var cmd, ds []byte
	largest := 0
	for done := false; !done; {
		x := p.Expect(pdu.TypePDataTF).(*pdu.PDataTF)
		b, _ := pdu.Encode(x)
		n := len(b) - pdu.HeaderLen
		if n > int(limit) {
			t.Errorf("PDU of %d bytes, want at most %d", n, limit)
		}
		largest = max(largest, n)
		for _, v := range x.PDVs {
			if v.IsCommand() {
				cmd = append(cmd, v.Data...)
				continue
			}
			ds = append(ds, v.Data...)
			done = v.IsLast()
		}
	}
	if largest < int(limit)-8 {
		t.Errorf("largest PDU %d bytes, want %d (the message was cut below the limit)", largest, limit)
	}
	c, err := dimse.Decode(cmd)
	if err != nil || !bytes.Equal(ds, want) {
		t.Fatalf("report %+v (%v) with %d bytes, want %d", c, err, len(ds), len(want))
	}
	return c
}
