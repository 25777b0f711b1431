package pipeline

import (
	"encoding/binary"
	"math/bits"
	"strconv"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

// checkPixelData compares native Pixel Data's length with what the Image
// Pixel attributes say it holds: Rows × Columns × Samples per Pixel ×
// Number of Frames × Bits Allocated bits, frames packed without padding
// (1-bit data included, PS3.5 §8.1.1, §8.2), plus one pad byte to an even
// length. Shorter cannot be displayed whole: an error. Longer is a
// warning: readers ignore the extra bytes. Encapsulated Pixel Data is
// checked by the codecs that decode it, not here.
func (in *inspection) checkPixelData() {
	h := in.h
	pd := h.PixelData
	if pd == nil {
		return
	}
	ts, known := dicomuid.LookupTransferSyntax(h.TransferSyntax)
	if !known || ts.Encapsulated {
		return
	}
	if pd.Len == dataset.UndefinedLength {
		in.add(CodePixelDataLength, SeverityError, pd.Tag, "encapsulated Pixel Data in the native transfer syntax %s", h.TransferSyntax)
		return
	}
	var order binary.ByteOrder = binary.LittleEndian
	if h.BigEndian {
		order = binary.BigEndian
	}
	us := func(t uint32) (uint64, bool) {
		e := h.Data.find(t)
		if e == nil || len(e.Value) < 2 {
			return 0, false
		}
		return uint64(order.Uint16(e.Value)), true
	}
	rows, okR := us(tagRows)
	cols, okC := us(tagColumns)
	bitsAlloc, okB := us(tagBitsAllocated)
	switch pd.Tag {
	case tagFloatPixelData:
		bitsAlloc, okB = 32, true
	case tagDoublePixelData:
		bitsAlloc, okB = 64, true
	}
	if !okR || !okC || !okB {
		return // missing attributes are other findings
	}
	samples, ok := us(tagSamplesPerPixel)
	if !ok {
		samples = 1
	}
	if rows == 0 || cols == 0 || samples == 0 {
		// No layout holds pixel data: readers that size frames from
		// the attributes take any frame count for it.
		in.add(CodePixelDataLength, SeverityError, pd.Tag, "holds %d bytes for %d×%d×%d samples", pd.Len, rows, cols, samples)
		return
	}
	if samples == 3 && in.dec.first(&h.Data, tagPhotometric) == "YBR_FULL_422" {
		samples = 2 // two Y, one CB and one CR per pair of pixels (PS3.3 C.7.6.3.1.2)
	}
	nf := in.dec.first(&h.Data, tagNumberOfFrames)
	frames, ok := FrameCount(nf)
	if !ok {
		// Not the value: a finding's message holds none of the data set's.
		in.add(CodePixelDataLength, SeverityError, tagNumberOfFrames, "Number of Frames is not a count of frames")
		return
	}
	want, ok := NativePixelBytes(rows, cols, samples, frames, bitsAlloc)
	got := uint64(pd.Len)
	switch {
	case !ok || got < want:
		in.add(CodePixelDataLength, SeverityError, pd.Tag,
			"holds %d bytes; %d×%d×%d samples × %d frames × %d bits need %s", got, rows, cols, samples, frames, bitsAlloc, bytesText(want, ok))
	case got > want+want%2:
		in.add(CodePixelDataLength, SeverityWarning, pd.Tag,
			"holds %d bytes; %d×%d×%d samples × %d frames × %d bits need %d", got, rows, cols, samples, frames, bitsAlloc, want)
	}
}

// FrameCount reads a Number of Frames (0028,0008) value: 1 when it is
// absent or empty, else a whole number from 1 to 2^32-1; ok is false for
// anything else (0, a fraction, a count past 32 bits, which a reader that
// cuts it to 32 bits takes for another).
func FrameCount(s string) (n uint64, ok bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 1, true
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return n, err == nil && n > 0
}

// NativePixelBytes is the byte length of native pixel data of rows ×
// columns × samples per pixel × frames × bits allocated bits, frames
// packed without padding; ok is false when it exceeds what a value length
// can say. The product cannot overflow.
func NativePixelBytes(rows, cols, samples, frames, bitsAlloc uint64) (uint64, bool) {
	n := uint64(1)
	for _, f := range []uint64{rows, cols, samples, frames, bitsAlloc} {
		hi, lo := bits.Mul64(n, f)
		if hi != 0 || lo > 8*uint64(dataset.UndefinedLength) {
			return 0, false
		}
		n = lo
	}
	return (n + 7) / 8, true
}

func bytesText(n uint64, ok bool) string {
	if !ok {
		return "more than a value can hold"
	}
	return strconv.FormatUint(n, 10)
}
