package s3test

import (
	"encoding/base64"
	"encoding/binary"
	"hash/crc64"
)

// nvmePoly is CRC-64/NVME's polynomial, bit-reversed as hash/crc64 wants.
const nvmePoly = 0x9a6c9329ac4bc9b5

// NVME is the CRC-64/NVME table S3 uses for x-amz-checksum-crc64nvme.
var NVME = crc64.MakeTable(nvmePoly)

// CRC64NVME returns the base64 CRC-64/NVME of b, as S3 writes it.
func CRC64NVME(b []byte) string { return EncodeCRC(crc64.Checksum(b, NVME)) }

// EncodeCRC renders a CRC-64 the way S3 headers carry it.
func EncodeCRC(sum uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], sum)
	return base64.StdEncoding.EncodeToString(b[:])
}

// combineCRC returns the CRC of A||B from crc(A), crc(B) and len(B), as
// zlib's crc32_combine does, for a reflected CRC-64 whose initial value and
// final XOR are all ones. S3 does the same to check a full-object checksum
// from part checksums.
func combineCRC(crc1, crc2 uint64, len2 int64) uint64 {
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
