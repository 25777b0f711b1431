package dicomnet_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// FuzzServeConn feeds an established association arbitrary bytes: the server must neither panic nor hang, and
// must free the association's slot.
func FuzzServeConn(f *testing.F) {
	seed := func(ps ...pdu.PDU) []byte {
		var b []byte
		for _, p := range ps {
			b, _ = pdu.Append(b, p)
		}
		return b
	}
	f.Add(seed(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(1))}}, &pdu.ReleaseRQ{}))
	f.Add(seed(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(3, storeRQ(1)), {ContextID: 3, Control: 2, Data: []byte("ab")}}}))
	f.Add(seed(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(3, storeRQ(1)), {ContextID: 3, Control: 0, Data: []byte("ab")}}}, &pdu.Abort{}))
	f.Add([]byte{4, 0, 0, 0, 0, 6, 0, 0, 0, 2, 3, 1})
	rq, _ := pdu.Encode(dicomnettest.AssociateRQ("SCU", "ANY"))
	// Shapes the chaos run sent a live SCP: a release between a store's fragments; two stores with one message
	// id; a last fragment whose tail is an A-ABORT's first bytes, the rest of the abort following as a PDU of
	// type 0; a command set whose group length is 3 bytes off; an A-ASSOCIATE-RQ once associated.
	f.Add(seed(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(3, storeRQ(1)), {ContextID: 3, Control: 0, Data: []byte("ab")}}},
		&pdu.ReleaseRQ{}, &pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: 3, Control: 2, Data: []byte("cd")}}}))
	f.Add(seed(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(3, storeRQ(1)), {ContextID: 3, Control: 2, Data: []byte("ab")}}},
		&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(3, storeRQ(1)), {ContextID: 3, Control: 2, Data: []byte("cd")}}},
		&pdu.ReleaseRQ{}))
	abort := seed(&pdu.Abort{})
	f.Add(append(seed(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(3, storeRQ(1)),
		{ContextID: 3, Control: 2, Data: append([]byte("abcd"), abort[:4]...)}}}), abort[4:]...))
	oddGroup := storeRQ(1).Encode()
	binary.LittleEndian.PutUint32(oddGroup[8:], uint32(len(oddGroup)-12+3))
	f.Add(seed(&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: 3, Control: 3, Data: oddGroup}, {ContextID: 3, Control: 2, Data: []byte("ab")}}}))
	f.Add(rq)
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &dicomnet.Server{MaxPDULength: 1 << 16, ARTIMTimeout: 50 * time.Millisecond, IdleTimeout: 50 * time.Millisecond,
			WriteTimeout: 50 * time.Millisecond, Handler: dicomnet.HandlerFunc(func(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
				_, err := io.Copy(io.Discard, r)
				return err
			})}
		c1, c2 := net.Pipe()
		done := make(chan struct{})
		go func() { s.ServeConn(context.Background(), c1); close(done) }()
		go io.Copy(io.Discard, c2)
		c2.SetWriteDeadline(time.Now().Add(time.Second))
		c2.Write(rq)
		c2.Write(b)
		c2.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("ServeConn did not return")
		}
		if n := s.ActiveAssociations(); n != 0 {
			t.Fatalf("%d associations still active", n)
		}
	})
}

// FuzzClient is FuzzServeConn's counterpart for the requestor (the Storage Commitment reporter's side): whatever a
// peer answers to our A-ASSOCIATE-RQ, N-EVENT-REPORT-RQ and A-RELEASE-RQ, Dial, SendEventReport and Release
// neither panic nor hang.
func FuzzClient(f *testing.F) {
	seed := func(ps ...pdu.PDU) []byte {
		var b []byte
		for _, p := range ps {
			b, _ = pdu.Append(b, p)
		}
		return b
	}
	ac := &pdu.AssociateAC{ProtocolVersion: 1, ApplicationContext: dicomuid.ApplicationContext,
		PresentationContexts: []pdu.PresentationContextAC{{ID: 1, TransferSyntax: dicomuid.ImplicitVRLittleEndian}},
		UserInformation: pdu.UserInformation{MaxPDULength: 16384, ImplementationClassUID: "1.2.3.4",
			RoleSelections: []pdu.RoleSelection{{SOPClassUID: dicomuid.StorageCommitment, SCP: 1}}}}
	rq := dimse.NewNEventReportRQ(1, dicomuid.StorageCommitment, dicomuid.StorageCommitmentInstance, 1)
	rsp := dimse.NewNEventReportRSP(rq, dimse.Status{})
	f.Add(seed(ac, &pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(1, rsp)}}, &pdu.ReleaseRP{}))
	f.Add(seed(ac, &pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.CommandPDV(1, dimse.NewNActionRSP(rq, dimse.Status{}))}}))
	f.Add(seed(ac, &pdu.Abort{Source: 2}))
	f.Add(seed(&pdu.AssociateRJ{Result: 1, Source: 1, Reason: 3}))
	f.Add([]byte{2, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		c1, c2 := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			a, err := dicomnet.Dial(context.Background(), "pipe", dicomnet.ClientConfig{CallingAE: "INGEST", CalledAE: "PACS",
				ResponseTimeout: 50 * time.Millisecond, WriteTimeout: 50 * time.Millisecond, ARTIMTimeout: 50 * time.Millisecond,
				Dial: func(context.Context, string, string) (net.Conn, error) { return c1, nil },
				Contexts: []dicomnet.ProposedContext{{AbstractSyntax: dicomuid.StorageCommitment,
					TransferSyntaxes: []string{dicomuid.ImplicitVRLittleEndian}, Roles: &dicomnet.Roles{SCP: true}}}})
			if err != nil {
				return
			}
			if _, err := a.SendEventReport(context.Background(), dicomnet.EventReport{SOPClassUID: dicomuid.StorageCommitment,
				SOPInstanceUID: dicomuid.StorageCommitmentInstance, EventTypeID: 1,
				DataSet: func(string) ([]byte, error) { return []byte{8, 0, 0x18, 0, 2, 0, 0, 0, '1', 0}, nil }}); err != nil {
				_ = a.Abort()
				return
			}
			_ = a.Release(context.Background())
		}()
		go io.Copy(io.Discard, c2)
		c2.SetWriteDeadline(time.Now().Add(time.Second))
		c2.Write(b)
		c2.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the client did not return")
		}
	})
}
