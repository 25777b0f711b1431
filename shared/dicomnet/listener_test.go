package dicomnet_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
)

// flakyListener fails its first Accept calls with EMFILE.
type flakyListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

func TestServeRetriesTransientAcceptErrors(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &flakyListener{Listener: inner}
	l.failures.Store(3)
	s := &dicomnet.Server{}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	a, err := dicomnet.Dial(context.Background(), inner.Addr().String(), dicomnet.ClientConfig{CallingAE: "A", CalledAE: "B"})
	if err != nil {
		t.Fatalf("dial after transient accept errors: %v", err)
	}
	if err := a.Echo(context.Background()); err != nil {
		t.Fatal(err)
	}
	a.Release(context.Background())
	s.Close()
	if err := <-served; !errors.Is(err, dicomnet.ErrServerClosed) {
		t.Errorf("Serve = %v", err)
	}
}

func TestServeReturnsWhenListenerClosed(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	s := &dicomnet.Server{}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	time.Sleep(10 * time.Millisecond)
	l.Close()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// TestResponsesWithinPeerMax: the server sizes what it sends by the peer's maximum (item 51), 0 meaning unlimited (a
// response then fits one PDU; TestEventReportWithinOurMaxSend holds our own cap).
func TestResponsesWithinPeerMax(t *testing.T) {
	for _, peerMax := range []uint32{0, 16, 40} {
		p, _ := startParrot(t, &dicomnet.Server{})
		rq := dicomnettest.AssociateRQ("SCU", "ANY")
		rq.UserInformation.MaxPDULength = peerMax
		p.Associate(rq)
		p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(1)))
		// Read PDUs by hand to check each one's length.
		var cmd []byte
		for {
			x := p.Expect(pdu.TypePDataTF).(*pdu.PDataTF)
			b, _ := pdu.Encode(x)
			if peerMax != 0 && uint32(len(b)-pdu.HeaderLen) > peerMax {
				t.Errorf("peer max %d: PDU of %d bytes", peerMax, len(b)-pdu.HeaderLen)
			}
			if peerMax == 0 && len(x.PDVs) != 1 {
				t.Errorf("unlimited: response in %d PDVs", len(x.PDVs))
			}
			cmd = append(cmd, x.PDVs[0].Data...)
			if x.PDVs[len(x.PDVs)-1].IsLast() {
				break
			}
		}
		if len(cmd) < 60 {
			t.Errorf("peer max %d: command of %d bytes", peerMax, len(cmd))
		}
	}
}
