package dicomnet_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
)

// TestClientResponseNotToOurMessage: a response that does not answer the request awaited (another Message ID Being
// Responded To, none at all, or another command to our message id) fails the exchange at once with an A-ABORT
// (02 06, an invalid PDU parameter), as DCMTK fails it (DIMSEC_UNEXPECTEDRESPONSE) and its tools abort. We run one
// operation at a time (no asynchronous operations window negotiated: PS3.7 D.3.3.3), so a response to another
// message answers nothing outstanding. It was skipped: the exchange waited out its whole response timeout, however
// often the peer sent it. The error names the association and both message ids.
func TestClientResponseNotToOurMessage(t *testing.T) {
	const responseTimeout = time.Hour // an exchange that skips the response waits far past the test's bound
	tests := []struct {
		name   string
		answer func(rq *dimse.Command) *dimse.Command
		says   string
	}{
		{"another message id", func(rq *dimse.Command) *dimse.Command {
			rsp := dimse.NewCEchoRSP(rq, dimse.Status{})
			rsp.MessageIDBeingRespondedTo = rq.MessageID + 1
			return rsp
		}, "a response to message 2 while awaiting the response to message 1"},
		{"no message id", func(rq *dimse.Command) *dimse.Command {
			rsp := dimse.NewCEchoRSP(rq, dimse.Status{})
			rsp.Present &^= dimse.HasMessageIDBeingRespondedTo
			return rsp
		}, "a response naming no message (no Message ID Being Responded To) while awaiting the response to message 1"},
		{"another command", func(rq *dimse.Command) *dimse.Command {
			rsp := dimse.NewCEchoRSP(rq, dimse.Status{})
			rsp.CommandField = dimse.CStoreRSP
			return rsp
		}, "response of command 0x8001 to message 1, want 0x8030"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := storeCfg(0)
			cfg.CallingAE, cfg.CalledAE, cfg.ResponseTimeout, cfg.ARTIMTimeout = "INGEST", "PACS", responseTimeout, 50*time.Millisecond
			p, a := associatedWithParrot(t, cfg, &hookedConn{})
			done, finished := make(chan error, 1), make(chan struct{})
			go func() {
				defer close(finished)
				done <- a.Echo(context.Background())
			}()
			t.Cleanup(func() { // before the association's cleanup aborts it: one goroutine at a time uses it
				p.Conn.Close()
				waitFor(finished)
			})
			p.SendMessage(9, tt.answer(p.ExpectCommand()), nil) // context 9: Verification
			p.ExpectAbort(2, pdu.AbortReasonInvalidParamValue)
			select {
			case err := <-done:
				if !errors.Is(err, dicomnet.ErrUnexpectedResponse) || !strings.Contains(err.Error(), tt.says) ||
					!strings.Contains(err.Error(), "association INGEST with PACS at 127.0.0.1:") {
					t.Errorf("Echo = %v, want ErrUnexpectedResponse naming the association and saying %q", err, tt.says)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Echo still waiting 10s after the response to another message")
			}
		})
	}
}
