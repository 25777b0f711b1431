package associationaudit

import (
	"crypto/x509"
	"math/big"
	"testing"
)

// TestCertificatePeerSerial: the serial number as `openssl x509 -noout
// -serial` prints it, upper-case hexadecimal in whole bytes.
func TestCertificatePeerSerial(t *testing.T) {
	for _, tt := range []struct {
		serial *big.Int
		want   string
	}{
		{big.NewInt(1), "01"},
		{big.NewInt(0xabc), "0ABC"},
		{new(big.Int).SetBytes([]byte{0x7f, 0x00, 0x10}), "7F0010"},
		{big.NewInt(-0x1234), "-1234"},
		{nil, ""},
	} {
		if got := CertificatePeer(&x509.Certificate{SerialNumber: tt.serial}, "").Serial; got != tt.want {
			t.Errorf("serial %v: %q, want %q", tt.serial, got, tt.want)
		}
	}
	if CertificatePeer(nil, "") != nil {
		t.Error("a nil certificate is named")
	}
}
