package crcnvme

import (
	"hash/crc64"
	"math"
	"math/rand/v2"
	"testing"
)

// reference is hash/crc64 with the CRC-64/NVME polynomial: slow, but an
// independent implementation to hold the fast one to.
var reference = crc64.MakeTable(nvmePoly)

func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	if _, err := rand.NewChaCha8([32]byte{seed}).Read(b); err != nil {
		panic(err)
	}
	return b
}

func TestCombineCRCMatchesWholeChecksum(t *testing.T) {
	data := randomBytes(100_003, 7)
	whole := Checksum(data)
	for _, cuts := range [][]int{{0}, {1}, {50_000}, {99_999, 100_000}, {3, 17, 65_536}} {
		var got uint64
		prev := 0
		for i, c := range append(cuts, len(data)) {
			part := data[prev:c]
			if i == 0 {
				got = Checksum(part)
			} else {
				got = Combine(got, Checksum(part), int64(len(part)))
			}
			prev = c
		}
		if got != whole {
			t.Errorf("cuts %v: combined %x, whole %x", cuts, got, whole)
		}
	}
}

func TestChecksumKnownAnswer(t *testing.T) {
	// CRC-64/NVME check value (reveng catalogue): CRC of "123456789".
	if got := Checksum([]byte("123456789")); got != 0xae8b14860a799888 {
		t.Errorf("CRC-64/NVME(123456789) = %x", got)
	}
}

func TestChecksumAndUpdateMatchReference(t *testing.T) {
	// Lengths around the vector widths of the carry-less multiplication
	// code and its tail handling.
	for _, n := range []int{0, 1, 7, 8, 15, 16, 63, 64, 65, 127, 128, 255, 256, 257, 4095, 4096, 65_537, 1 << 20} {
		data := randomBytes(n, byte(n))
		want := crc64.Checksum(data, reference)
		if got := Checksum(data); got != want {
			t.Errorf("len %d: Checksum %x, reference %x", n, got, want)
		}
		half := n / 3
		if got := Update(Update(0, data[:half]), data[half:]); got != want {
			t.Errorf("len %d: Update in two pieces %x, reference %x", n, got, want)
		}
	}
}

func TestSuffixMatchesDirectChecksum(t *testing.T) {
	data := randomBytes(70_001, 9)
	for _, cut := range []int{0, 1, 128, 132, 700, 65_536, 69_999, 70_000, 70_001} {
		head, tail := data[:cut], data[cut:]
		want := crc64.Checksum(tail, reference)
		if got := Suffix(Checksum(data), Checksum(head), int64(len(tail))); got != want {
			t.Errorf("cut %d: Suffix %x, checksum of the tail %x", cut, got, want)
		}
	}
}

// FuzzSuffix holds Suffix to a direct computation: for any bytes cut
// anywhere, the tail's checksum derived from the whole's and the head's
// is the tail's own.
func FuzzSuffix(f *testing.F) {
	f.Add([]byte("123456789"), uint16(3))
	f.Add([]byte{}, uint16(0))
	f.Add(randomBytes(300, 1), uint16(132))
	f.Fuzz(func(t *testing.T, data []byte, cut uint16) {
		c := int(cut) % (len(data) + 1)
		head, tail := data[:c], data[c:]
		if got, want := Suffix(Checksum(data), Checksum(head), int64(len(tail))), crc64.Checksum(tail, reference); got != want {
			t.Errorf("len %d cut %d: Suffix %x, checksum of the tail %x", len(data), c, got, want)
		}
	})
}

// TestCombineOverLongRuns holds Combine to a direct computation over long
// runs of zero bytes, where each bit of the length takes a power of x of
// its own: crc(A || n zeros) computed, against Combine(crc(A),
// crc(n zeros), n).
func TestCombineOverLongRuns(t *testing.T) {
	head := randomBytes(1000, 3)
	for _, n := range []int{1, 2, 3, 255, 256, 4097, 1<<20 + 1, 3<<22 - 5} {
		zeros := make([]byte, n)
		want := crc64.Checksum(append(append([]byte(nil), head...), zeros...), reference)
		if got := Combine(Checksum(head), Checksum(zeros), int64(n)); got != want {
			t.Errorf("%d zero bytes: Combine %x, direct %x", n, got, want)
		}
	}
	// The largest length: every entry of the table is reached without
	// going past it.
	if got := Combine(1, 0, math.MaxInt64); got == 0 {
		t.Errorf("Combine over MaxInt64 bytes = 0")
	}
}

func BenchmarkSuffix(b *testing.B) {
	for b.Loop() {
		Suffix(0x1234, 0x5678, 130_000)
	}
}
