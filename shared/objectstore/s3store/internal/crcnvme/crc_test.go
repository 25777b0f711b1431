package crcnvme

import (
	"hash/crc64"
	"math/rand/v2"
	"testing"
)

func TestCombineCRCMatchesWholeChecksum(t *testing.T) {
	data := make([]byte, 100_003)
	_, _ = rand.NewChaCha8([32]byte{7}).Read(data)
	whole := crc64.Checksum(data, Table)
	for _, cuts := range [][]int{{0}, {1}, {50_000}, {99_999, 100_000}, {3, 17, 65_536}} {
		var got uint64
		prev := 0
		for i, c := range append(cuts, len(data)) {
			part := data[prev:c]
			if i == 0 {
				got = crc64.Checksum(part, Table)
			} else {
				got = Combine(got, crc64.Checksum(part, Table), int64(len(part)))
			}
			prev = c
		}
		if got != whole {
			t.Errorf("cuts %v: combined %x, whole %x", cuts, got, whole)
		}
	}
}

func TestCRC64TableKnownAnswer(t *testing.T) {
	// CRC-64/Table check value (reveng catalogue): CRC of "123456789".
	if got := crc64.Checksum([]byte("123456789"), Table); got != 0xae8b14860a799888 {
		t.Errorf("CRC-64/Table(123456789) = %x", got)
	}
}
