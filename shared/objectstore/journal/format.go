package journal

import (
	"encoding/binary"
	"errors"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
)

// On disk, a segment file is a header block, then records, each starting
// on a block boundary:
//
//	segment header (block 0):
//	  0  magic "DIJRNL01"
//	  8  state u32 (stateActive, stateFree)
//	 12  segment size in blocks u32 (0: unknown, take Options.SegmentSize)
//	 16  seq u64: the segment's generation, new at every activation
//	 24  salt [16]byte: random at every activation
//	 40  CRC-64/NVME of bytes 0-39
//
//	record header (one block), then the payload, zero-padded to a block:
//	  0  magic u32 recordMagic
//	  4  kind u8 (kindRecord, kindCancelled)
//	  8  meta length u32
//	 16  seq u64: the segment's
//	 24  offset u64: the record's own offset in the segment
//	 32  payload length u64
//	 40  payload CRC-64/NVME u64
//	 48  CRC-64/NVME of the salt, bytes 0-47 and the meta
//	 56  meta
//
// A record is valid only with its segment's seq, its own offset, the
// header CRC keyed with the segment's salt and the payload's CRC: stale
// records of an earlier generation, torn writes and bytes inside an
// earlier payload that imitate a header (they cannot know the salt) all
// fail, and a scan stops at the first invalid record.
const (
	// BlockSize is the unit records are aligned and padded to: direct
	// I/O's alignment.
	BlockSize = 4096

	segMagic    = "DIJRNL01"
	recordMagic = 0x52434a44 // "DJCR"

	stateActive = 1
	stateFree   = 2

	kindRecord    = 1
	kindCancelled = 2

	recHeaderLen = 56
	// MaxMeta is the longest meta a record can carry.
	MaxMeta = BlockSize - recHeaderLen
)

var errBadHeader = errors.New("journal: not a valid header")

type segHeader struct {
	state  uint32
	blocks uint32 // the segment's size in blocks
	seq    uint64
	salt   [16]byte
}

func (h segHeader) encode(b []byte) {
	clear(b[:BlockSize])
	copy(b, segMagic)
	binary.LittleEndian.PutUint32(b[8:], h.state)
	binary.LittleEndian.PutUint32(b[12:], h.blocks)
	binary.LittleEndian.PutUint64(b[16:], h.seq)
	copy(b[24:40], h.salt[:])
	binary.LittleEndian.PutUint64(b[40:], crcnvme.Checksum(b[:40]))
}

func decodeSegHeader(b []byte) (segHeader, error) {
	if len(b) < 48 || string(b[:8]) != segMagic || binary.LittleEndian.Uint64(b[40:]) != crcnvme.Checksum(b[:40]) {
		return segHeader{}, errBadHeader
	}
	h := segHeader{state: binary.LittleEndian.Uint32(b[8:]), blocks: binary.LittleEndian.Uint32(b[12:]), seq: binary.LittleEndian.Uint64(b[16:])}
	copy(h.salt[:], b[24:40])
	if h.state != stateActive && h.state != stateFree {
		return segHeader{}, errBadHeader
	}
	return h, nil
}

type recHeader struct {
	kind uint8
	seq  uint64
	off  int64
	size int64
	crc  uint64
	meta []byte
	salt [16]byte // the segment's; not stored, keys the header CRC
}

func (h recHeader) headerCRC(b []byte) uint64 {
	c := crcnvme.Checksum(h.salt[:])
	c = crcnvme.Update(c, b[:48])
	return crcnvme.Update(c, h.meta)
}

// encode writes the header block into b.
func (h recHeader) encode(b []byte) {
	clear(b[:BlockSize])
	binary.LittleEndian.PutUint32(b[0:], recordMagic)
	b[4] = h.kind
	binary.LittleEndian.PutUint32(b[8:], uint32(len(h.meta)))
	binary.LittleEndian.PutUint64(b[16:], h.seq)
	binary.LittleEndian.PutUint64(b[24:], uint64(h.off))
	binary.LittleEndian.PutUint64(b[32:], uint64(h.size))
	binary.LittleEndian.PutUint64(b[40:], h.crc)
	binary.LittleEndian.PutUint64(b[48:], h.headerCRC(b))
	copy(b[recHeaderLen:], h.meta)
}

// decodeRecHeader checks b as the header of a record at off in a segment
// of seq and salt, whose records may be at most maxSize bytes.
func decodeRecHeader(b []byte, seq uint64, salt [16]byte, off, maxSize int64) (recHeader, error) {
	if len(b) < BlockSize || binary.LittleEndian.Uint32(b[0:]) != recordMagic {
		return recHeader{}, errBadHeader
	}
	h := recHeader{
		kind: b[4], seq: binary.LittleEndian.Uint64(b[16:]), off: int64(binary.LittleEndian.Uint64(b[24:])),
		size: int64(binary.LittleEndian.Uint64(b[32:])), crc: binary.LittleEndian.Uint64(b[40:]), salt: salt,
	}
	metaLen := binary.LittleEndian.Uint32(b[8:])
	if metaLen > MaxMeta || h.seq != seq || h.off != off || h.size < 0 || h.size > maxSize-BlockSize ||
		(h.kind != kindRecord && h.kind != kindCancelled) {
		return recHeader{}, errBadHeader
	}
	h.meta = b[recHeaderLen : recHeaderLen+metaLen]
	if binary.LittleEndian.Uint64(b[48:]) != h.headerCRC(b) {
		return recHeader{}, errBadHeader
	}
	return h, nil
}

// recordSize is the bytes a record of n payload bytes takes.
func recordSize(n int64) int64 { return BlockSize + roundUp(n) }

func roundUp(n int64) int64 { return (n + BlockSize - 1) &^ (BlockSize - 1) }

// ErrCorrupt is returned when a record's payload no longer matches its
// checksum.
var ErrCorrupt = errors.New("journal: record payload does not match its checksum")
