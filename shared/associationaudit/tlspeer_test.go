package associationaudit

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// TestCertificatePeerSerial: the serial number as tlstrust.SerialText
// writes it (`openssl x509 -noout -serial`), as the CRL's refusal does.
func TestCertificatePeerSerial(t *testing.T) {
	if got := CertificatePeer(&x509.Certificate{SerialNumber: big.NewInt(0xabc)}, "").Serial; got != "0ABC" {
		t.Errorf("serial 0xabc: %q, want 0ABC", got)
	}
	if CertificatePeer(nil, "") != nil {
		t.Error("a nil certificate is named")
	}
}

// TestCertificatePeerBounded: a certificate whose subject and serial
// number are longer than any record should copy (TLS accepts them) is
// named with each cut to its bound as JSON writes it, ending in Cut, and
// by the fingerprint of the whole certificate; the cut is the same every
// time, so every path names the certificate alike. Within its bounds a
// certificate is named whole. A subject of some 9 KB and a serial of 3,000
// octets were copied whole, which the staged store's journal record (4 KiB
// with the object's metadata) cannot hold.
func TestCertificatePeerBounded(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	long := ca.Client(t, testpki.Long("pacs.site-a.example")).Cert
	short := ca.Client(t, testpki.Options{CommonName: "pacs.site-a.example"}).Cert
	jsonLen := func(s string) int {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return len(b) - 2
	}
	for _, tc := range []struct {
		name                    string
		cert                    *x509.Certificate
		subject, issuer, serial string
	}{
		{"long", long, long.Subject.String(), long.Issuer.String(), tlstrust.SerialText(long.SerialNumber)},
		{"short", short, short.Subject.String(), short.Issuer.String(), tlstrust.SerialText(short.SerialNumber)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := CertificatePeer(tc.cert, "pacs.site-a.example")
			sum := sha256.Sum256(tc.cert.Raw)
			if p.SHA256 != hex.EncodeToString(sum[:]) || p.CertificateName != "pacs.site-a.example" {
				t.Errorf("fingerprint %s, name %q", p.SHA256, p.CertificateName)
			}
			for _, f := range []struct {
				what, got, whole string
				limit            int
			}{
				{"subject", p.Subject, tc.subject, MaxNameJSON},
				{"issuer", p.Issuer, tc.issuer, MaxNameJSON},
				{"serial", p.Serial, tc.serial, MaxSerial},
			} {
				if jsonLen(f.whole) <= f.limit {
					if f.got != f.whole {
						t.Errorf("%s %q, want %q whole", f.what, f.got, f.whole)
					}
					continue
				}
				n := jsonLen(f.got)
				cut, ok := strings.CutSuffix(f.got, Cut)
				if !ok || !strings.HasPrefix(f.whole, cut) || !utf8.ValidString(f.got) || n > f.limit || n < f.limit-6-len(Cut) {
					t.Errorf("%s of %d bytes (%d as JSON) cut to %q (%d as JSON), want a prefix and %q within %d", f.what, len(f.whole), jsonLen(f.whole), f.got, n, Cut, f.limit)
				}
			}
			if again := CertificatePeer(tc.cert, "pacs.site-a.example"); *again != *p {
				t.Errorf("named %+v, then %+v", p, again)
			}
		})
	}
}
