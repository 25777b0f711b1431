package associationaudit

import (
	"crypto/x509"
	"math/big"
	"testing"
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
