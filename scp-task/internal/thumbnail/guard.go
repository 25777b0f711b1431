package thumbnail

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// checkStructure guards the parser. github.com/suyashkumar/dicom allocates
// each element's value from its declared length before reading it, so a
// few hundred bytes declaring a 4 GiB element cost 4 GiB. Before the
// object reaches it, the module's one element reader (package dataset)
// reads the data set to its last byte under its limits, and refuses it
// when it cannot be followed or a length runs past the end. The SCP
// refuses such objects at C-STORE already; this keeps an object stored
// before that check, or by anything else, from reaching the parser.
func checkStructure(obj []byte) error {
	br := bufio.NewReader(bytes.NewReader(obj))
	meta, err := part10.ReadMeta(br)
	if err != nil {
		return err
	}
	in := dataset.NewInspector(br, meta.TransferSyntaxUID)
	if _, err := io.Copy(io.Discard, in); err != nil {
		return fmt.Errorf("data set: %w", err)
	}
	return nil
}

// maxFramePixels bounds the frame rendered: its grey levels are held as
// float64s while windowing (128 MiB at the bound, 4096 × 4096 pixels).
const maxFramePixels = 1 << 24

// nativeLayout is native pixel data and the attributes that lay it out.
type nativeLayout struct {
	rows, cols, samples, bits, frames uint64
	data                              []byte // the Pixel Data value
}

// frame returns frame i's bytes (nativeGeometry checked that the data
// holds them).
func (l nativeLayout) frame(i uint64) []byte {
	n, _ := pipeline.NativePixelBytes(l.rows, l.cols, l.samples, 1, l.bits)
	return l.data[i*n : (i+1)*n]
}

// nativeGeometry reads the layout of native pixel data from a data set
// parsed without decoding it (dicom.SkipProcessingPixelDataValue), and
// refuses one the renderer does not read or the element cannot hold. The
// frame shown is cut from the element by this layout, never decoded by
// the parser: github.com/suyashkumar/dicom decodes every frame, makes a
// slot per frame from Number of Frames before it reads any, and compares
// the frames' length with the element's only after cutting it to 32 bits,
// so with Rows 0 any count passed, and a 3 KB object declaring
// 4,000,000,000 frames exhausted memory (a runtime fatal error, which
// recover does not catch). So Rows, Columns and Samples per Pixel must be
// set, Bits Allocated one the renderer reads (8, 16 or 32: not 1-bit data,
// which the parser unpacked at 16 bytes a pixel), Number of Frames a count,
// the frame within maxFramePixels, and the element must hold the frames.
func nativeGeometry(ds *dicom.Dataset) (nativeLayout, error) {
	el, err := ds.FindElementByTag(tag.PixelData)
	if err != nil {
		return nativeLayout{}, errors.New("no pixel data")
	}
	info, ok := el.Value.GetValue().(dicom.PixelDataInfo)
	if !ok || !info.IntentionallyUnprocessed {
		return nativeLayout{}, errors.New("pixel data not read")
	}
	attr := func(t tag.Tag) uint64 {
		v, ok := ints(ds, t)
		if !ok || v < 0 {
			return 0
		}
		return uint64(v)
	}
	rows, cols, samples, bits := attr(tag.Rows), attr(tag.Columns), attr(tag.SamplesPerPixel), attr(tag.BitsAllocated)
	l := nativeLayout{rows: rows, cols: cols, samples: samples, bits: bits, frames: 1, data: info.UnprocessedValueData}
	switch {
	case rows == 0:
		return l, errors.New("no rows (Rows 0)")
	case cols == 0:
		return l, errors.New("no columns (Columns 0)")
	case samples == 0:
		return l, errors.New("no samples (Samples per Pixel 0)")
	case bits != 8 && bits != 16 && bits != 32:
		return l, fmt.Errorf("%d bits per sample", bits)
	case rows*cols > maxFramePixels:
		return l, fmt.Errorf("%d × %d pixels, above the %d previewed", cols, rows, maxFramePixels)
	}
	nf := str(ds, tag.NumberOfFrames)
	if l.frames, ok = pipeline.FrameCount(nf); !ok {
		return l, fmt.Errorf("frame count %q (Number of Frames) not a count", strings.TrimSpace(nf))
	}
	need, ok := pipeline.NativePixelBytes(rows, cols, samples, l.frames, bits)
	if have := uint64(len(l.data)); !ok || need > have {
		return l, fmt.Errorf("%d bytes of pixel data; %d × %d × %d samples × %d frames × %d bits need more", have, rows, cols, samples, l.frames, bits)
	}
	return l, nil
}
