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
// final XOR are all ones. It costs O(log len2) and no data.
func Combine(crc1, crc2 uint64, len2 int64) uint64 {
	if len2 <= 0 {
		return crc1
	}
	var even, odd [64]uint64
	odd[0] = nvmePoly // the operator for one zero bit
	row := uint64(1)
	for n := 1; n < 64; n++ {
		odd[n] = row
		row <<= 1
	}
	square(&even, &odd) // two zero bits
	square(&odd, &even) // four zero bits
	for {
		square(&even, &odd)
		if len2&1 != 0 {
			crc1 = times(&even, crc1)
		}
		len2 >>= 1
		if len2 == 0 {
			break
		}
		square(&odd, &even)
		if len2&1 != 0 {
			crc1 = times(&odd, crc1)
		}
		len2 >>= 1
		if len2 == 0 {
			break
		}
	}
	return crc1 ^ crc2
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

func times(mat *[64]uint64, vec uint64) uint64 {
	var sum uint64
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
	}
	return sum
}

func square(dst, mat *[64]uint64) {
	for n := range dst {
		dst[n] = times(mat, mat[n])
	}
}
