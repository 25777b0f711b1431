package auditwriter

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// TestTLSAssociationsNameTheCertificate: every record of an association
// that came over TLS with a client certificate names it (subject, issuer,
// SHA-256 fingerprint), with the certificate name the allowlist bound when
// it bound one; a refused one names the certificate that was refused.
func TestTLSAssociationsNameTheCertificate(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	site := ca.Client(t, testpki.Options{CommonName: "pacs.site-a.example"})
	sum := sha256.Sum256(site.Cert.Raw)
	fingerprint := hex.EncodeToString(sum[:])
	state := &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{site.Cert}}
	name := tlstrust.NameOf(site.Cert) // as dicomnet names it when it decides on the association
	addr := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 99}
	bound := &dicomnet.AssociationInfo{ID: "t1", CallingAE: "SITE_A", CalledAE: "REMOTE_AE", RemoteAddr: addr, TLS: state, PeerCertificateName: &name, PeerIdentity: "pacs.site-a.example"}
	unbound := &dicomnet.AssociationInfo{ID: "t2", CallingAE: "PLAIN", CalledAE: "REMOTE_AE", RemoteAddr: addr, TLS: state, PeerCertificateName: &name}
	refused := &dicomnet.AssociationInfo{ID: "t3", CallingAE: "SITE_B", CalledAE: "REMOTE_AE", RemoteAddr: addr, TLS: state, PeerCertificateName: &name}
	plain := &dicomnet.AssociationInfo{ID: "t4", CallingAE: "PLAIN", CalledAE: "REMOTE_AE", RemoteAddr: addr}

	store := &recordStore{got: map[string]associationaudit.Record{}}
	w, err := New(store, Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	for _, ev := range []dicomnet.Event{
		{Type: dicomnet.EventAccepted, Time: at, Association: bound},
		{Type: dicomnet.EventStoreFailed, Time: at, Association: bound, Status: 0xA700},
		{Type: dicomnet.EventReleased, Time: at, Association: bound},
		{Type: dicomnet.EventAccepted, Time: at, Association: unbound},
		{Type: dicomnet.EventAborted, Time: at, Association: unbound},
		{Type: dicomnet.EventRejected, Time: at, Association: refused, Reject: dicomnet.RejectCallingAENotRecognized,
			Err: fmt.Errorf("%w (%w)", dicomnet.RejectCallingAENotRecognized, accesscontrol.ErrCertificateMismatch)},
		{Type: dicomnet.EventAccepted, Time: at, Association: plain},
	} {
		w.ObserveAssociation(ev)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"t1": "pacs.site-a.example", "t2": "", "t3": ""}
	n := 0
	for key, r := range store.got {
		if r.AssociationID == "t4" {
			if r.TLS != nil {
				t.Errorf("%s: plain association's record has TLS %+v", key, r.TLS)
			}
			continue
		}
		n++
		if r.TLS == nil {
			t.Errorf("%s: no TLS peer", key)
			continue
		}
		if r.TLS.SHA256 != fingerprint || r.TLS.Subject != "CN=pacs.site-a.example,O=dicom-ingest tests" ||
			r.TLS.Issuer != "CN=Site CA,O=dicom-ingest tests" || r.TLS.CertificateName != want[r.AssociationID] {
			t.Errorf("%s: TLS peer %+v", key, *r.TLS)
		}
	}
	if n != 6 {
		t.Errorf("%d TLS records, want 6", n)
	}
}
