package s3test

import (
	"hash/crc64"
	"testing"
)

func TestCombineCRCMatchesWholeChecksum(t *testing.T) {
	data := Bytes(7, 100_003)
	whole := crc64.Checksum(data, NVME)
	for _, cuts := range [][]int{{0}, {1}, {50_000}, {99_999, 100_000}, {3, 17, 65_536}} {
		var got uint64
		prev := 0
		for i, c := range append(cuts, len(data)) {
			part := data[prev:c]
			if i == 0 {
				got = crc64.Checksum(part, NVME)
			} else {
				got = combineCRC(got, crc64.Checksum(part, NVME), int64(len(part)))
			}
			prev = c
		}
		if got != whole {
			t.Errorf("cuts %v: combined %x, whole %x", cuts, got, whole)
		}
	}
}

func TestCRC64NVMEKnownAnswer(t *testing.T) {
	// CRC-64/NVME check value (reveng catalogue): CRC of "123456789".
	if got := crc64.Checksum([]byte("123456789"), NVME); got != 0xae8b14860a799888 {
		t.Errorf("CRC-64/NVME(123456789) = %x", got)
	}
}
