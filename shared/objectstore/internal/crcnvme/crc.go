// Package crcnvme computes CRC-64/NVME, the checksum S3 calls CRC64NVME,
// and combines the checksums of consecutive pieces into the checksum of
// the whole, as S3 does for full-object multipart checksums. The checksum
// itself comes from github.com/minio/crc64nvme (carry-less multiplication
// on amd64 and arm64: tens of GB/s where hash/crc64's tables manage 1.4).
package crcnvme

import (
	"encoding/base64"
	"encoding/binary"
	"hash"

	"github.com/minio/crc64nvme"
)

// nvmePoly is CRC-64/NVME's polynomial, bit-reversed.
const nvmePoly = 0x9a6c9329ac4bc9b5

// Checksum returns the CRC-64/NVME of b.
func Checksum(b []byte) uint64 { return crc64nvme.Checksum(b) }

// New returns a hash.Hash64 computing the CRC-64/NVME of what is written
// to it.
func New() hash.Hash64 { return crc64nvme.New() }

// Update returns the CRC-64/NVME of the bytes crc covered followed by p.
func Update(crc uint64, p []byte) uint64 { return crc64nvme.Update(crc, p) }

// Base64 returns the base64 CRC-64/NVME of b, as S3 headers carry it.
func Base64(b []byte) string { return Encode(Checksum(b)) }

// Encode renders a CRC-64 the way S3 headers carry it.
func Encode(sum uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], sum)
	return base64.StdEncoding.EncodeToString(b[:])
}

// Combine returns the CRC of A||B from crc(A), crc(B) and len(B), as
// zlib's crc32_combine does, for a reflected CRC-64 whose initial value and
// final XOR are all ones: crc(A) carried over len(B) zero bytes (multiplied
// by x^(8·len(B)) modulo the polynomial) XOR crc(B). It costs O(log len2)
// multiplications of 64 steps each and no data (a few hundred
// nanoseconds; the matrix squaring zlib used before 1.2.12 took 55 µs for
// 128 KiB, paid on every object by the content identity).
func Combine(crc1, crc2 uint64, len2 int64) uint64 {
	if len2 <= 0 {
		return crc1
	}
	return multModP(xPow8n(uint64(len2)), crc1) ^ crc2
}

// Suffix returns the CRC of B from crc(A||B), crc(A) and len(B): Combine
// solved for crc(B). Combine's result is crc(B) XORed with crc(A) carried
// over len(B) bytes, which is Combine(crc(A), 0, len(B)); XOR is its own
// inverse. So the checksum of an object's tail costs O(log len(B)) and no
// data once the whole object's checksum (S3's, verified on upload) and its
// head's are known.
func Suffix(whole, prefix uint64, suffixLen int64) uint64 {
	if suffixLen <= 0 {
		return Checksum(nil)
	}
	return whole ^ Combine(prefix, 0, suffixLen)
}

// In the reflected representation the polynomial x^0 is the top bit and
// x^63 the lowest; multModP multiplies two polynomials modulo nvmePoly.
const xPow0 = uint64(1) << 63

func multModP(a, b uint64) uint64 {
	var p uint64
	for m := xPow0; ; m >>= 1 {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				return p
			}
		}
		if b&1 != 0 {
			b = b>>1 ^ nvmePoly
		} else {
			b >>= 1
		}
	}
}

// xPow2n[k] is x^(2^k) modulo nvmePoly, for every k xPow8n needs: 3 (one
// byte) up to 3+62 (the highest bit of a positive int64).
var xPow2n = func() (t [66]uint64) {
	p := xPow0 >> 1 // x^1
	t[0] = p
	for k := 1; k < len(t); k++ {
		p = multModP(p, p)
		t[k] = p
	}
	return t
}()

// xPow8n returns x^(8n) modulo nvmePoly: n zero bytes.
func xPow8n(n uint64) uint64 {
	p := xPow0
	for k := 3; n != 0; k, n = k+1, n>>1 {
		if n&1 != 0 {
			p = multModP(xPow2n[k], p)
		}
	}
	return p
}
