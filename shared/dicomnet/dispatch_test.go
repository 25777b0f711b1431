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
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// TestRequestsNeedTheNegotiatedRole: a requestor that gave up the SCU role for a SOP class by role selection
// cannot invoke its operations (0211); a response nobody asked for is ignored, not answered.
func TestRequestsNeedTheNegotiatedRole(t *testing.T) {
	p, _ := startParrot(t, &dicomnet.Server{Handler: capture(make(chan result, 1))})
	rq := dicomnettest.AssociateRQ("SCU", "ANY")
	rq.UserInformation.RoleSelections = []pdu.RoleSelection{{SOPClassUID: dicomuid.Verification, SCU: 0, SCP: 1}}
	ac := p.Associate(rq)
	if len(ac.UserInformation.RoleSelections) != 1 || ac.UserInformation.RoleSelections[0].SCU != 0 || ac.UserInformation.RoleSelections[0].SCP != 0 {
		t.Fatalf("role selection answer %+v", ac.UserInformation.RoleSelections)
	}
	// A C-ECHO-RSP out of the blue: nothing to answer.
	p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRSP(dimse.NewCEchoRQ(7), dimse.Status{})))
	p.SendPDVs(dicomnettest.CommandPDV(1, dimse.NewCEchoRQ(8)))
	rsp := p.ExpectCommand()
	if rsp.CommandField != dimse.CEchoRSP || rsp.MessageIDBeingRespondedTo != 8 || rsp.Status != dimse.StatusUnrecognizedOperation {
		t.Fatalf("response %+v, want C-ECHO-RSP to 8 with 0211", rsp)
	}
	p.SendPDU(&pdu.ReleaseRQ{})
	p.Expect(pdu.TypeReleaseRP)
}

// TestAcceptSeesTLSState: over a TLS listener the association policy sees the connection state and the client's
// certificate (what a per-site certificate check needs).
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
