package dicomnet_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// TestRoleSelectionAnswers: SCP/SCU Role Selection (PS3.7 D.3.3.4) on the wire, per SOP class. A requestor that
// keeps the SCU role gets its contexts accepted and its requests served; one whose items leave it no role (SCP
// only, or neither: SCU 0 and SCP 0, none of the three role values the standard allows) gets the class's contexts
// rejected with result 1 (user-rejection) in the A-ASSOCIATE-AC, no item answered for it, other classes unaffected:
// accepted, such a context took every C-STORE and answered it 0211. A command on the rejected context is a protocol
// error (A-ABORT), as on any context not accepted.
func TestRoleSelectionAnswers(t *testing.T) {
	ct := dicomuid.CTImageStorage
	tests := []struct {
		name      string
		items     []pdu.RoleSelection // for CT Image Storage, context 3
		result    byte                // for context 3
		wantRoles []pdu.RoleSelection
	}{
		{"no item: default roles", nil, pdu.ResultAcceptance, nil},
		{"SCU", []pdu.RoleSelection{{SOPClassUID: ct, SCU: 1}}, pdu.ResultAcceptance, []pdu.RoleSelection{{SOPClassUID: ct, SCU: 1}}},
		{"SCU and SCP: SCP turned down", []pdu.RoleSelection{{SOPClassUID: ct, SCU: 1, SCP: 1}}, pdu.ResultAcceptance, []pdu.RoleSelection{{SOPClassUID: ct, SCU: 1}}},
		{"SCP only", []pdu.RoleSelection{{SOPClassUID: ct, SCP: 1}}, pdu.ResultUserRejection, nil},
		{"no role", []pdu.RoleSelection{{SOPClassUID: ct}}, pdu.ResultUserRejection, nil},
		{"SCU, then no role", []pdu.RoleSelection{{SOPClassUID: ct, SCU: 1}, {SOPClassUID: ct}}, pdu.ResultUserRejection, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := make(chan result, 1)
			p, _ := startParrot(t, &dicomnet.Server{Handler: capture(ch)})
			rq := dicomnettest.AssociateRQ("SCU", "ANY")
			rq.UserInformation.RoleSelections = tc.items
			ac := p.Associate(rq)
			want := []pdu.PresentationContextAC{
				{ID: 1, Result: pdu.ResultAcceptance, TransferSyntax: dicomuid.ImplicitVRLittleEndian},
				{ID: 3, Result: tc.result, TransferSyntax: dicomuid.ExplicitVRLittleEndian},
			}
			if tc.result != pdu.ResultAcceptance {
				want[1].TransferSyntax = dicomuid.ImplicitVRLittleEndian // not significant; always sent
			}
			if d := cmp.Diff(want, ac.PresentationContexts); d != "" {
				t.Errorf("presentation contexts (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.wantRoles, ac.UserInformation.RoleSelections); d != "" {
				t.Errorf("role selection answers (-want +got):\n%s", d)
			}
			// Verification, proposed without an item, keeps the default roles.
			p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(1)))
			if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CEchoRSP || rsp.Status != dimse.StatusSuccess {
				t.Fatalf("C-ECHO response %+v, want success", rsp)
			}
			if tc.result != pdu.ResultAcceptance {
				p.SendPDVs(dicomnettest.CommandPDV(3, storeRQ(2)))
				p.ExpectAbort(2, 6)
				return
			}
			p.SendMessage(3, storeRQ(2), []byte("ab"))
			if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CStoreRSP || rsp.Status != dimse.StatusSuccess {
				t.Fatalf("C-STORE response %+v, want success", rsp)
			}
			if got := <-ch; string(got.data) != "ab" {
				t.Errorf("stored %q", got.data)
			}
			p.SendPDU(&pdu.ReleaseRQ{})
			p.Expect(pdu.TypeReleaseRP)
		})
	}
}

// TestUnaskedResponseAndCancel: a response nobody asked for is ignored, not answered; a C-CANCEL has no response.
func TestUnaskedResponseAndCancel(t *testing.T) {
	p, _ := startParrot(t, &dicomnet.Server{Handler: capture(make(chan result, 1))})
	p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
	// A C-ECHO-RSP out of the blue: nothing to answer.
	p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRSP(dimse.NewCEchoRQ(7), dimse.Status{})))
	p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(8)))
	if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CEchoRSP || rsp.MessageIDBeingRespondedTo != 8 {
		t.Fatalf("response %+v, want C-ECHO-RSP to 8", rsp)
	}
	// A C-CANCEL has no response (PS3.7 9.3.2.3): the next command answered
	// is the C-ECHO after it.
	p.SendPDVs(dicomnettest.CommandPDV(1, &dimse.Command{
		Present:      dimse.HasCommandField | dimse.HasMessageIDBeingRespondedTo | dimse.HasCommandDataSetType,
		CommandField: dimse.CCancelRQ, MessageIDBeingRespondedTo: 8, CommandDataSetType: dimse.NoDataSet,
	}))
	p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(9)))
	if rsp := p.ExpectCommand(); rsp.CommandField != dimse.CEchoRSP || rsp.MessageIDBeingRespondedTo != 9 {
		t.Fatalf("response %+v, want C-ECHO-RSP to 9: nothing for the C-CANCEL", rsp)
	}
	p.SendPDU(&pdu.ReleaseRQ{})
	p.Expect(pdu.TypeReleaseRP)
}

// TestAcceptSeesTLSState: over a TLS listener the association policy sees the connection state and the client's
// certificate (what a per-site certificate check needs), named once for the association (tlstrust.NameOf), which
// ingest and the audit trail name it by.
func TestAcceptSeesTLSState(t *testing.T) {
	cert := selfSigned(t, "SITE_A")
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	seen := make(chan string, 1)
	s := &dicomnet.Server{Accept: func(ctx context.Context, info *dicomnet.AssociationInfo) error {
		if info.TLS == nil || len(info.TLS.PeerCertificates) == 0 {
			seen <- ""
			return errors.New("no client certificate")
		}
		if n := info.PeerCertificateName; n == nil || *n != tlstrust.NameOf(info.PeerCertificate()) {
			seen <- fmt.Sprintf("named %+v", n)
			return errors.New("client certificate not named")
		}
		seen <- info.TLS.PeerCertificates[0].Subject.CommonName
		return nil
	}}
	go s.Serve(tl)
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	assoc, err := dicomnet.Dial(ctx, l.Addr().String(), dicomnet.ClientConfig{CallingAE: "SITE_A", CalledAE: "ANY",
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := &tls.Dialer{Config: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "SITE_A"}}
			return d.DialContext(ctx, network, addr)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if cn := <-seen; cn != "SITE_A" {
		t.Errorf("Accept saw client certificate %q, want SITE_A", cn)
	}
	if err := assoc.Echo(ctx); err != nil {
		t.Error(err)
	}
	if err := assoc.Release(ctx); err != nil {
		t.Error(err)
	}
}

// selfSigned makes a certificate usable as both server and client certificate, named cn.
func selfSigned(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestClientRunsTheStateTable drives the client with a scripted acceptor through transitions a well-behaved SCP
// never makes: the client answers them as PS3.8 Table 9-10 says.
func TestClientRunsTheStateTable(t *testing.T) {
	accept := func(p *dicomnettest.Parrot) {
		rq := p.Expect(pdu.TypeAssociateRQ).(*pdu.AssociateRQ)
		p.SendPDU(&pdu.AssociateAC{ProtocolVersion: 1, CalledAE: rq.CalledAE, CallingAE: rq.CallingAE,
			ApplicationContext:   dicomuid.ApplicationContext,
			PresentationContexts: []pdu.PresentationContextAC{{ID: 1, Result: 0, TransferSyntax: dicomuid.ImplicitVRLittleEndian}},
			UserInformation:      pdu.UserInformation{MaxPDULength: 16384, ImplementationClassUID: "1.2.3"}})
	}
	// echoAnswer is a P-DATA-TF whose PDU-length is n, answering the C-ECHO-RQ rq: a data set PDV of filler, then
	// the response.
	echoAnswer := func(rq *dimse.Command, n int) []byte {
		rsp := dicomnettest.CommandPDV(1, dimse.NewCEchoRSP(rq, dimse.Status{}))
		filler := make([]byte, n-2*pdu.PDVHeaderLen-len(rsp.Data))
		b, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{dicomnettest.PDV(1, pdu.ControlLast, filler), rsp}})
		return b
	}
	// The Maximum Length Received the client advertises, and ARTIM short: after an abort it closes within it.
	limited := dicomnet.ClientConfig{CallingAE: "SCU", CalledAE: "ANY", MaxPDULength: 16384, ARTIMTimeout: 300 * time.Millisecond}
	tests := []struct {
		name   string
		peer   func(p *dicomnettest.Parrot) // the acceptor's script
		client func(ctx context.Context, addr string) error
	}{
		// PS3.8 D.1: a P-DATA-TF longer than the Maximum Length Received we advertised is a protocol error (it
		// took up to 1 MiB). Its body is left unread: nothing of it is taken for a PDU in Sta13 (its first PDV
		// header was, as a PDU of type 0, and answered with a second A-ABORT, 02 01).
		{"Evt19 in Sta6: a P-DATA-TF over our maximum is AA-8, 02 06", func(p *dicomnettest.Parrot) {
			accept(p)
			p.Send(echoAnswer(p.ExpectCommand(), 16385))
			p.ExpectAbort(2, pdu.AbortReasonInvalidParamValue)
			p.ExpectClosed()
		}, func(ctx context.Context, addr string) error {
			a, err := dicomnet.Dial(ctx, addr, limited)
			if err != nil {
				return nil
			}
			return a.Echo(ctx)
		}},
		{"Evt10 in Sta6: a P-DATA-TF at our maximum is DT-2", func(p *dicomnettest.Parrot) {
			accept(p)
			p.Send(echoAnswer(p.ExpectCommand(), 16384))
			p.Expect(pdu.TypeReleaseRQ)
			p.SendPDU(&pdu.ReleaseRP{})
		}, func(ctx context.Context, addr string) error {
			a, err := dicomnet.Dial(ctx, addr, limited)
			if err != nil {
				return nil
			}
			if err := a.Echo(ctx); err != nil {
				t.Errorf("echo answered in a P-DATA-TF of our maximum: %v", err)
			}
			if err := a.Release(ctx); err != nil {
				t.Errorf("release: %v", err)
			}
			return errors.New("released")
		}},
		{"Evt13 in Sta5 is AA-8", func(p *dicomnettest.Parrot) {
			p.Expect(pdu.TypeAssociateRQ)
			p.SendPDU(&pdu.ReleaseRP{})
			p.ExpectAbort(2, pdu.AbortReasonUnexpectedPDU)
		}, func(ctx context.Context, addr string) error {
			_, err := dicomnet.Dial(ctx, addr, dicomnet.ClientConfig{CallingAE: "SCU", CalledAE: "ANY"})
			return err
		}},
		{"Evt12 in Sta6 is AR-2, answered by AR-4", func(p *dicomnettest.Parrot) {
			accept(p)
			p.Expect(pdu.TypePDataTF)
			p.SendPDU(&pdu.ReleaseRQ{})
			p.Expect(pdu.TypeReleaseRP)
		}, func(ctx context.Context, addr string) error {
			a, err := dicomnet.Dial(ctx, addr, dicomnet.ClientConfig{CallingAE: "SCU", CalledAE: "ANY"})
			if err != nil {
				return nil // reported by the peer's script
			}
			return a.Echo(ctx)
		}},
		{"Evt12 in Sta7 is AR-8, then AR-9 and AR-3", func(p *dicomnettest.Parrot) {
			accept(p)
			p.Expect(pdu.TypeReleaseRQ)
			p.SendPDU(&pdu.ReleaseRQ{})
			p.Expect(pdu.TypeReleaseRP)
			p.SendPDU(&pdu.ReleaseRP{})
		}, func(ctx context.Context, addr string) error {
			a, err := dicomnet.Dial(ctx, addr, dicomnet.ClientConfig{CallingAE: "SCU", CalledAE: "ANY"})
			if err != nil {
				return nil
			}
			if err := a.Release(ctx); err != nil {
				t.Errorf("release collision: %v", err)
			}
			return errors.New("released")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- tc.client(ctx, l.Addr().String()) }()
			c, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			tc.peer(dicomnettest.NewParrot(t, c))
			c.Close()
			if err := <-errc; err == nil {
				t.Error("the client reported no error")
			}
		})
	}
}

// TestResponsesEchoOnlyValidUIDs: a response echoes the request's Affected
// (or Requested) SOP Class and Instance UID only when it is a valid UID
// (at most 64 characters); anything else, which PS3.7 lets a response
// leave out (U(=)), is left out. A C-FIND-RQ (answered 0211) with a
// 60,000-byte Affected SOP Class UID was echoed whole.
func TestResponsesEchoOnlyValidUIDs(t *testing.T) {
	long := strings.Repeat("1.2", 20000)
	tests := []struct {
		name      string
		rq        *dimse.Command
		ctx       byte
		want      uint16 // the response's status
		wantClass string // "" when it must carry none
		wantInst  string
	}{
		{"C-FIND with a valid class", cfind(dicomuid.CTImageStorage), 3, dimse.StatusUnrecognizedOperation, dicomuid.CTImageStorage, ""},
		{"C-FIND with a 60,000-byte class", cfind(long), 3, dimse.StatusUnrecognizedOperation, "", ""},
		{"C-FIND with a 65-character class", cfind("1." + strings.Repeat("2", 63)), 3, dimse.StatusUnrecognizedOperation, "", ""},
		{"C-FIND with a class that is no UID", cfind("1.2.x"), 3, dimse.StatusUnrecognizedOperation, "", ""},
		{"C-STORE of another class that is no UID", storeRQOf(long, "1.2.3.4"), 3, dimse.StatusSOPClassNotSupported, "", "1.2.3.4"},
		{"C-STORE with an instance that is no UID", storeRQOf(dicomuid.CTImageStorage, long), 3, dimse.StatusCannotUnderstand, dicomuid.CTImageStorage, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := startParrot(t, &dicomnet.Server{Handler: capture(make(chan result, 1))})
			p.Associate(dicomnettest.AssociateRQ("SCU", "ANY"))
			pdvs := []pdu.PDV{dicomnettest.CommandPDV(tt.ctx, tt.rq)}
			if tt.rq.HasDataSet() {
				pdvs = append(pdvs, pdu.PDV{ContextID: tt.ctx, Control: pdu.ControlLast, Data: []byte{0x08, 0x00, 0x16, 0x00, 0, 0, 0, 0}})
			}
			p.SendPDVs(pdvs...)
			rsp := p.ExpectCommand()
			if rsp.CommandField != dimse.ResponseField(tt.rq.CommandField) || rsp.MessageIDBeingRespondedTo != tt.rq.MessageID || rsp.Status != tt.want {
				t.Fatalf("response %04X to %d status %04X, want %04X to %d status %04X", rsp.CommandField, rsp.MessageIDBeingRespondedTo,
					rsp.Status, dimse.ResponseField(tt.rq.CommandField), tt.rq.MessageID, tt.want)
			}
			if got, has := rsp.AffectedSOPClassUID, rsp.Has(dimse.HasAffectedSOPClassUID); got != tt.wantClass || has != (tt.wantClass != "") {
				t.Errorf("Affected SOP Class UID %.80q (present %v), want %q", got, has, tt.wantClass)
			}
			if got, has := rsp.AffectedSOPInstanceUID, rsp.Has(dimse.HasAffectedSOPInstanceUID); got != tt.wantInst || has != (tt.wantInst != "") {
				t.Errorf("Affected SOP Instance UID %.80q (present %v), want %q", got, has, tt.wantInst)
			}
			p.SendPDU(&pdu.ReleaseRQ{})
			p.Expect(pdu.TypeReleaseRP)
		})
	}
}

// cfind is a C-FIND-RQ of class with no data set: an operation the SCP
// does not provide.
func cfind(class string) *dimse.Command {
	return &dimse.Command{
		Present:             dimse.HasAffectedSOPClassUID | dimse.HasCommandField | dimse.HasMessageID | dimse.HasCommandDataSetType,
		AffectedSOPClassUID: class, CommandField: dimse.CFindRQ, MessageID: 5, CommandDataSetType: dimse.NoDataSet,
	}
}

// storeRQOf is a C-STORE-RQ of class and instance.
func storeRQOf(class, inst string) *dimse.Command {
	return dimse.NewCStoreRQ(6, class, inst, dimse.PriorityMedium)
}
