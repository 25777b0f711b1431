package journal

import (
	"encoding/binary"
	"io"
	"os"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs/vfstest"
)

// fuzzSegmentSize keeps the fuzzer's segments small: 8 blocks.
const fuzzSegmentSize = 8 * BlockSize

// FuzzRecover opens a journal whose one segment file the fuzzer writes: a
// journal on a staging volume is read back by whichever task takes it
// over, after torn writes, power loss or another task's bugs. The segment
// is the fuzzer's segment header block, then its record header block, then
// its tail (payloads and further records). With resign set, the headers'
// checksums are recomputed over what the fuzzer wrote, so that it reaches
// the checks behind them (lengths, offsets, generations), which a checksum
// it cannot forge would otherwise hide. Opening never panics; every record
// it recovers lies inside the file and reads back with its checksum.
func FuzzRecover(f *testing.F) {
	// Seeds: segments as the journal writes them, with records, a
	// cancelled record, and none.
	for _, sizes := range [][]int{nil, {1}, {100, 5000}, {BlockSize, 0, 17}} {
		mem := vfstest.NewMem()
		j, _, err := Open("/j", Options{SegmentSize: fuzzSegmentSize, Segments: 1, FS: mem, IdleSeal: -1})
		if err != nil {
			f.Fatal(err)
		}
		for i, n := range sizes {
			r, err := appendBytes(f, j, "meta", payload(i, n))
			if err != nil {
				f.Fatal(err)
			}
			if i == 1 {
				if err := j.Cancel(r); err != nil {
					f.Fatal(err)
				}
			}
		}
		if err := j.Close(); err != nil {
			f.Fatal(err)
		}
		seg, err := mem.Read("/j/" + slotName(0))
		if err != nil {
			f.Fatal(err)
		}
		seg = append(seg, make([]byte, max(0, 2*BlockSize-len(seg)))...)
		f.Add(seg[:48], seg[BlockSize:BlockSize+recHeaderLen+4], trimZeros(seg[2*BlockSize:]), false)
		f.Add(seg[:48], seg[BlockSize:BlockSize+recHeaderLen+4], trimZeros(seg[2*BlockSize:]), true)
	}
	f.Fuzz(func(t *testing.T, segHdr, recHdr, tail []byte, resign bool) {
		if len(segHdr) > BlockSize || len(recHdr) > BlockSize || len(tail) > fuzzSegmentSize {
			return
		}
		seg := make([]byte, 2*BlockSize+len(tail))
		copy(seg, segHdr)
		copy(seg[BlockSize:], recHdr)
		copy(seg[2*BlockSize:], tail)
		if resign {
			binary.LittleEndian.PutUint64(seg[40:], crcnvme.Checksum(seg[:40]))
			var salt [16]byte
			copy(salt[:], seg[24:40])
			rec := seg[BlockSize : 2*BlockSize]
			meta := rec[recHeaderLen:][:min(int(binary.LittleEndian.Uint32(rec[8:])), MaxMeta)]
			binary.LittleEndian.PutUint64(rec[48:], recHeader{meta: meta, salt: salt}.headerCRC(rec))
		}
		mem := vfstest.NewMem()
		if err := mem.Mkdir("/j", 0o700); err != nil {
			t.Fatal(err)
		}
		w, err := mem.OpenFile("/j/"+slotName(0), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteAt(seg, 0); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		j, recs, err := Open("/j", Options{SegmentSize: fuzzSegmentSize, ReadOnly: true, FS: mem, IdleSeal: -1})
		if err != nil {
			return // refusing a segment is an answer; panicking is not
		}
		defer j.Close()
		for _, r := range recs {
			if r.Off < BlockSize || r.Off+BlockSize+r.Size > int64(len(seg)) {
				t.Fatalf("record at %d of %d bytes lies outside the %d-byte segment", r.Off, r.Size, len(seg))
			}
			rd, err := j.Payload(r)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rd); err != nil {
				t.Fatalf("recovered record at %d does not read back: %v", r.Off, err)
			}
		}
	})
}

// trimZeros drops a segment's zero padding, keeping the fuzzer's inputs small.
func trimZeros(b []byte) []byte {
	n := len(b)
	for n > 0 && b[n-1] == 0 {
		n--
	}
	return b[:n]
}
