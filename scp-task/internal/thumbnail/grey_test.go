package thumbnail

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/jpeg"
	"os"
	"path/filepath"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// sampleBits is a greyscale object's Bits Allocated, Bits Stored, High
// Bit and Pixel Representation.
type sampleBits struct {
	allocated, stored, high uint16
	signed                  bool
}

// bits8 is 8-bit unsigned samples.
var bits8 = sampleBits{8, 8, 7, false}

// greyObject is a Part 10 object of one row of greyscale pixels of b in
// ts, with the attributes more (a window, a rescale, a VOI LUT Function)
// before Pixel Data, which is pixel.
func greyObject(ts, photometric string, cols int, b sampleBits, pixel pipelinetest.Elem, more ...pipelinetest.Elem) []byte {
	pr := uint16(0)
	if b.signed {
		pr = 1
	}
	ds := []pipelinetest.Elem{
		pipelinetest.Str(tag(0x0008, 0x0016), "UI", "1.2.840.10008.5.1.4.1.1.7"),
		pipelinetest.Str(tag(0x0008, 0x0018), "UI", "2.25.9"),
		pipelinetest.U16(tag(0x0028, 0x0002), 1),
		pipelinetest.Str(tag(0x0028, 0x0004), "CS", photometric),
		pipelinetest.U16(tag(0x0028, 0x0010), 1),
		pipelinetest.U16(tag(0x0028, 0x0011), uint16(cols)),
		pipelinetest.U16(tag(0x0028, 0x0100), b.allocated),
		pipelinetest.U16(tag(0x0028, 0x0101), b.stored),
		pipelinetest.U16(tag(0x0028, 0x0102), b.high),
		pipelinetest.U16(tag(0x0028, 0x0103), pr),
	}
	ds = append(append(ds, more...), pixel)
	return pipelinetest.Part10(pipelinetest.Meta{SOPClassUID: "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID: "2.25.9", TransferSyntaxUID: ts}, ds)
}

// nativeGrey is greyObject of native 8-bit pixels.
func nativeGrey(photometric string, pixels []byte, more ...pipelinetest.Elem) []byte {
	return greyObject(tsExplicitLE, photometric, len(pixels), bits8, pipelinetest.Raw(tag(0x7FE0, 0x0010), "OB", pixels), more...)
}

// nativeWide is greyObject of native MONOCHROME2 pixels of 16 or 32 bits
// allocated, the samples as they are stored (unused bits included), in
// OW, in Explicit VR Little Endian.
func nativeWide(b sampleBits, samples []uint32, more ...pipelinetest.Elem) []byte {
	return nativeWideIn(tsExplicitLE, b, samples, more...)
}

// nativeWideIn is nativeWide in the transfer syntax ts (Implicit or
// Explicit VR Little Endian).
func nativeWideIn(ts string, b sampleBits, samples []uint32, more ...pipelinetest.Elem) []byte {
	var px []byte
	for _, v := range samples {
		if b.allocated == 16 {
			px = binary.LittleEndian.AppendUint16(px, uint16(v))
		} else {
			px = binary.LittleEndian.AppendUint32(px, v)
		}
	}
	return greyObject(ts, "MONOCHROME2", len(samples), b, pipelinetest.Raw(tag(0x7FE0, 0x0010), "OW", px), more...)
}

// window is Window Center and Width, and the VOI LUT Function when fn is
// set.
func window(center, width, fn string) []pipelinetest.Elem {
	e := []pipelinetest.Elem{pipelinetest.Str(tag(0x0028, 0x1050), "DS", center), pipelinetest.Str(tag(0x0028, 0x1051), "DS", width)}
	if fn != "" {
		e = append(e, pipelinetest.Str(tag(0x0028, 0x1056), "CS", fn))
	}
	return e
}

// lutDescriptor is a LUT Descriptor (0028,3002) of vr, US or SS.
func lutDescriptor(vr string, entries uint16, first int16, bits uint16) pipelinetest.Elem {
	b := binary.LittleEndian.AppendUint16(nil, entries)
	b = binary.LittleEndian.AppendUint16(b, uint16(first))
	return pipelinetest.Raw(tag(0x0028, 0x3002), vr, binary.LittleEndian.AppendUint16(b, bits))
}

// lutWords is LUT Data of 16-bit entries.
func lutWords(entries ...uint16) []byte {
	var b []byte
	for _, v := range entries {
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

// voiLUTAs is a VOI LUT Sequence (0028,3010) of one item: its descriptor
// of vr, and data (OW).
func voiLUTAs(vr string, entries uint16, first int16, bits uint16, data []byte) pipelinetest.Elem {
	return pipelinetest.Seq(tag(0x0028, 0x3010), false, []pipelinetest.Elem{
		lutDescriptor(vr, entries, first, bits), pipelinetest.Raw(tag(0x0028, 0x3006), "OW", data)})
}

// voiLUT is voiLUTAs with a US descriptor.
func voiLUT(entries uint16, first int16, bits uint16, data []byte) pipelinetest.Elem {
	return voiLUTAs("US", entries, first, bits, data)
}

// greyCase is an object and the grey levels of its first row.
type greyCase struct {
	name   string
	obj    func(t *testing.T) []byte
	want   []uint8 // the row's grey levels
	slack  int     // a lossy encoding's
	noPrev string  // ErrNoPreview naming this
}

// greyCases are TestRenderGreyLevels' objects, which TestRenderAsDCMTK
// renders too (but for those its dcmtkCannot leaves out: this test alone
// holds them).
var greyCases = []greyCase{
	{name: "LINEAR 128/256: 0..255 unchanged", want: []uint8{0, 1, 128, 254, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{0, 1, 128, 254, 255}, window("128", "256", "")...)
		}},
	{name: "LINEAR width 1: a threshold at center - 0.5", want: []uint8{0, 255, 255, 0, 255, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{99, 100, 101, 0, 255, 100}, window("100", "1", "")...)
		}},
	{name: "LINEAR width 4", want: []uint8{0, 0, 85, 170, 255, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{97, 98, 99, 100, 101, 102}, window("100", "4", "")...)
		}},
	{name: "LINEAR, MONOCHROME1", want: []uint8{255, 255, 170, 85, 0, 0},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME1", []byte{97, 98, 99, 100, 101, 102}, window("100", "4", "")...)
		}},
	{name: "LINEAR_EXACT", want: []uint8{0, 64, 128, 191, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{80, 90, 100, 110, 120}, window("100", "40", "LINEAR_EXACT")...)
		}},
	{name: "SIGMOID", want: []uint8{5, 128, 225, 250},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{60, 100, 120, 140}, window("100", "40", "SIGMOID")...)
		}},
	{name: "SIGMOID of the second window: the first counts", want: []uint8{5, 128, 225, 250},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{60, 100, 120, 140}, window(`100\10`, `40\1000`, "SIGMOID")...)
		}},
	{name: "JPEG Baseline, rescaled: the window in modality units", want: []uint8{129, 129, 129, 129}, slack: 1,
		obj: func(t *testing.T) []byte {
			return jpegGrey(t, "MONOCHROME2", 4, 150, append(window("50", "100", ""),
				pipelinetest.Str(tag(0x0028, 0x1052), "DS", "-100"), pipelinetest.Str(tag(0x0028, 0x1053), "DS", "1"))...)
		}},
	{name: "8 bits in OW, Big Endian: bytes swapped in pairs", want: []uint8{10, 20, 30, 40, 50, 60},
		obj: func(t *testing.T) []byte { return fixture(t, "be-ow-8bit.dcm") }},
	{name: "LINEAR width 0: no window, the frame's range", want: []uint8{0, 128, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{50, 100, 150}, window("100", "0", "")...)
		}},
	{name: "LINEAR width -10: no window, the frame's range", want: []uint8{0, 128, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{50, 100, 150}, window("100", "-10", "")...)
		}},
	{name: "LINEAR width 0.5, below 1: no window, the frame's range", want: []uint8{0, 128, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{50, 100, 150}, window("100", "0.5", "")...)
		}},
	{name: "SIGMOID width 0: no window, the frame's range", want: []uint8{0, 128, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{50, 100, 150}, window("100", "0", "SIGMOID")...)
		}},
	{name: "LINEAR_EXACT width 0.5, above 0", want: []uint8{0, 128, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{99, 100, 101}, window("100", "0.5", "LINEAR_EXACT")...)
		}},
	{name: "12 of 16 bits, High Bit 11: the unused high bits ignored", want: []uint8{0, 0, 128, 255, 0},
		obj: func(*testing.T) []byte {
			return nativeWide(sampleBits{16, 12, 11, false}, []uint32{0xF000, 0x1000, 0x0800, 0xFFFF, 0x0005})
		}},
	{name: "12 of 16 bits, High Bit 15: the samples in the top bits", want: []uint8{0, 16, 128, 255, 0},
		obj: func(*testing.T) []byte {
			return nativeWide(sampleBits{16, 12, 15, false}, []uint32{0x0000, 0x1000, 0x8000, 0xFFF0, 0x0005})
		}},
	{name: "8 of 16 bits signed, High Bit 15", want: []uint8{0, 127, 128, 255, 129},
		obj: func(*testing.T) []byte {
			return nativeWide(sampleBits{16, 8, 15, true}, []uint32{0x8000, 0xFF00, 0x0000, 0x7F00, 0x0100})
		}},
	{name: "High Bit below Bits Stored - 1", noPrev: "High Bit 10",
		obj: func(*testing.T) []byte { return nativeWide(sampleBits{16, 12, 10, false}, []uint32{0, 1}) }},
	{name: "High Bit past Bits Allocated", noPrev: "High Bit 16",
		obj: func(*testing.T) []byte { return nativeWide(sampleBits{16, 12, 16, false}, []uint32{0, 1}) }},
	{name: "32 bits signed", want: []uint8{0, 127, 128, 255},
		obj: func(*testing.T) []byte {
			return nativeWide(sampleBits{32, 32, 31, true}, []uint32{0x80000000, 0xFFFFFFFF, 0, 0x7FFFFFFF})
		}},
	{name: "24 of 32 bits signed, rescaled", want: []uint8{0, 127, 128, 255},
		obj: func(*testing.T) []byte {
			return nativeWide(sampleBits{32, 24, 23, true}, []uint32{0xFF800000, 0x00FFFFFF, 0, 0x007FFFFF},
				pipelinetest.Str(tag(0x0028, 0x1052), "DS", "-5"), pipelinetest.Str(tag(0x0028, 0x1053), "DS", "2"))
		}},
	{name: "VOI LUT, no window: 16-bit entries, below and above clamped", want: []uint8{0, 0, 4, 117, 233, 255, 255},
		obj: func(t *testing.T) []byte { return fixture(t, "voilut-dx.dcm") }},
	{name: "VOI LUT of 8-bit entries two a word, MONOCHROME1", want: []uint8{255, 255, 205, 55, 0, 0},
		obj: func(t *testing.T) []byte { return fixture(t, "voilut-cr-8bit.dcm") }},
	{name: "Modality LUT from -2 in Implicit VR, then the VOI LUT", want: []uint8{0, 0, 0, 128, 255, 255},
		obj: func(t *testing.T) []byte { return fixture(t, "modlut-implicit.dcm") }},
	{name: "VOI LUT and a window: the window", want: []uint8{0, 0, 85, 170, 255, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{97, 98, 99, 100, 101, 102}, append(window("100", "4", ""), voiLUT(4, 0, 8, lutWords(255, 0, 255, 0)))...)
		}},
	{name: "VOI LUT of 0 entries: 65536", want: []uint8{0, 128, 255},
		obj: func(*testing.T) []byte {
			ramp := make([]uint16, 1<<16)
			for i := range ramp {
				ramp[i] = uint16(i)
			}
			return nativeWide(sampleBits{16, 16, 15, false}, []uint32{0, 0x8000, 0xFFFF}, voiLUT(0, 0, 16, lutWords(ramp...)))
		}},
	{name: "VOI LUT of SS, first value mapped signed, 40000 entries unsigned", want: []uint8{0, 0, 255, 255},
		obj: func(*testing.T) []byte {
			// Values from -1001: 0 from the value 0 on. Read signed, 40000 is
			// no preview; the first value mapped read unsigned (64535), all
			// are below it.
			lut := make([]uint16, 40000)
			for i := 1001; i < len(lut); i++ {
				lut[i] = 0xFFFF
			}
			return nativeWide(sampleBits{16, 16, 15, true}, []uint32{0x8000, 0xFC18, 0, 0x7FFF},
				voiLUTAs("SS", 40000, -1001, 16, lutWords(lut...)))
		}},
	{name: "Modality LUT and a rescale: the LUT", want: []uint8{0, 0, 128, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{0, 1, 2, 3}, pipelinetest.Str(tag(0x0028, 0x1052), "DS", "-100"),
				pipelinetest.Str(tag(0x0028, 0x1053), "DS", "7"),
				pipelinetest.Seq(tag(0x0028, 0x3000), false, []pipelinetest.Elem{
					lutDescriptor("US", 3, 1, 16), pipelinetest.Raw(tag(0x0028, 0x3006), "OW", lutWords(10, 20, 30))}))
		}},
	// A US descriptor's first value mapped is signed where the values the
	// LUT maps are (PS3.3 C.11.2.1.1): signed pixels without a Modality
	// LUT, or a rescale whose output may be negative; so dcmj2pnm reads it,
	// whatever the VR. The LUT maps -2 (or -1) to 0, then 128, then 255.
	{name: "VOI LUT of US over signed pixels, Explicit VR", want: []uint8{0, 0, 128, 255, 255, 255},
		obj: func(*testing.T) []byte { return signedUnderUSLUT(tsExplicitLE) }},
	{name: "VOI LUT of US over signed pixels, Implicit VR", want: []uint8{0, 0, 128, 255, 255, 255},
		obj: func(*testing.T) []byte { return signedUnderUSLUT(tsImplicitLE) }},
	{name: "VOI LUT of US over unsigned pixels rescaled below 0, Explicit VR", want: []uint8{0, 0, 128, 255, 255},
		obj: func(*testing.T) []byte { return rescaledUnderUSLUT(tsExplicitLE) }},
	{name: "VOI LUT of US over unsigned pixels rescaled below 0, Implicit VR", want: []uint8{0, 0, 128, 255, 255},
		obj: func(*testing.T) []byte { return rescaledUnderUSLUT(tsImplicitLE) }},
	{name: "Modality LUT of US over signed pixels, Explicit VR, then the VOI LUT", want: []uint8{0, 0, 0, 128, 255, 255},
		obj: func(*testing.T) []byte {
			return nativeWide(sampleBits{16, 16, 15, true}, []uint32{0xFFFB, 0xFFFE, 0xFFFF, 0, 1, 7},
				pipelinetest.Seq(tag(0x0028, 0x3000), false, []pipelinetest.Elem{
					lutDescriptor("US", 4, -2, 16), pipelinetest.Raw(tag(0x0028, 0x3006), "OW", lutWords(200, 201, 202, 203))}),
				voiLUT(3, 201, 8, lutWords(0, 128, 255)))
		}},
	// As dcmj2pnm draws it: the entries the LUT Data holds, one a word, in
	// place of the number its descriptor says (an image rather than none).
	{name: "VOI LUT Data shorter than its descriptor says: the entries it holds", want: []uint8{0, 128, 255, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{0, 1, 2, 3}, voiLUT(256, 0, 8, lutWords(0, 128, 255)))
		}},
	{name: "VOI LUT of 8 bits, data past packed but short of a word an entry", want: []uint8{0, 128, 255, 255},
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{0, 1, 2, 3}, voiLUT(4, 0, 8, lutWords(0, 128, 255)))
		}},
	{name: "VOI LUT Data of no whole entry", noPrev: "VOI LUT of 256 entries of 16 bits in 1 bytes",
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{1, 2, 3}, voiLUT(256, 0, 16, []byte{1}))
		}},
	{name: "VOI LUT of 17 bits an entry", noPrev: "VOI LUT of 17 bits an entry",
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{1, 2, 3}, voiLUT(2, 0, 17, lutWords(1, 2)))
		}},
	{name: "Modality LUT without LUT Data", noPrev: "Modality LUT without",
		obj: func(*testing.T) []byte {
			return nativeGrey("MONOCHROME2", []byte{1, 2, 3}, pipelinetest.Seq(tag(0x0028, 0x3000), false,
				[]pipelinetest.Elem{lutDescriptor("US", 2, 0, 16)}))
		}},
	{name: "PALETTE COLOR: indices, not grey", noPrev: "PALETTE COLOR",
		obj: func(*testing.T) []byte { return nativeGrey("PALETTE COLOR", []byte{0, 60, 120, 240}) }},
	{name: "PALETTE COLOR in JPEG Baseline", noPrev: "PALETTE COLOR",
		obj: func(t *testing.T) []byte { return jpegGrey(t, "PALETTE COLOR", 4, 150) }},
}

// signedUnderUSLUT is 16-bit signed pixels (-5, -2, -1, 0, 1, 7) in ts
// under a VOI LUT whose descriptor is US, its first value mapped -2
// (65534 read unsigned).
func signedUnderUSLUT(ts string) []byte {
	return nativeWideIn(ts, sampleBits{16, 16, 15, true}, []uint32{0xFFFB, 0xFFFE, 0xFFFF, 0, 1, 7},
		voiLUT(3, -2, 8, lutWords(0, 128, 255)))
}

// rescaledUnderUSLUT is 12-bit unsigned pixels in ts rescaled by -1024
// (-24, -1, 0, 1, 976) under a VOI LUT whose descriptor is US, its first
// value mapped -1 (65535 read unsigned).
func rescaledUnderUSLUT(ts string) []byte {
	return nativeWideIn(ts, sampleBits{16, 12, 11, false}, []uint32{1000, 1023, 1024, 1025, 2000},
		pipelinetest.Str(tag(0x0028, 0x1052), "DS", "-1024"), pipelinetest.Str(tag(0x0028, 0x1053), "DS", "1"),
		voiLUT(3, -1, 8, lutWords(0, 128, 255)))
}

// TestRenderGreyLevels: stored values reach the grey levels PS3.3 says
// they do (checked against DCMTK's dcmj2pnm, TestRenderAsDCMTK): the
// window's formula by its VOI LUT Function (C.11.2.1.2.1, C.11.2.1.3),
// the Modality LUT (rescale, C.11.1) before it in JPEG Baseline too, the
// Modality and VOI LUT Sequences' LUTs (C.11.1.1.1, C.11.2.1.1: below the
// first value mapped the first entry, above the last the last; a window
// before a VOI LUT), the
// byte order of 8-bit pixel data in OW Big Endian (PS3.5 A.3), and no
// grey for what is not greyscale (C.7.6.3.1.2).
func TestRenderGreyLevels(t *testing.T) {
	for _, tt := range greyCases {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.obj(t)
			out := renderAs(t, bytes.NewReader(b), int64(len(b)), tt.noPrev)
			if out == nil {
				return
			}
			img := decodePNG(t, out)
			if img.Bounds().Dx() < len(tt.want) {
				t.Fatalf("size %v, want %d pixels a row", img.Bounds(), len(tt.want))
			}
			got := make([]uint8, len(tt.want))
			bad := false
			for x := range tt.want {
				got[x] = grey(img.At(x, 0))
				if d := int(got[x]) - int(tt.want[x]); d > tt.slack || -d > tt.slack {
					bad = true
				}
			}
			if bad {
				t.Errorf("grey levels %v, want %v (±%d)", got, tt.want, tt.slack)
			}
		})
	}
}

// jpegGrey is greyObject in JPEG Baseline: one frame of cols × 1
// pixels of the value v.
func jpegGrey(t *testing.T, photometric string, cols int, v uint8, more ...pipelinetest.Elem) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, cols, 1))
	for i := range img.Pix {
		img.Pix[i] = v
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 100}); err != nil {
		t.Fatal(err)
	}
	if b.Len()%2 == 1 {
		b.WriteByte(0)
	}
	return greyObject(tsJPEGBaseline, photometric, cols, bits8, pipelinetest.Fragments(b.Bytes()), more...)
}

// fixture is the file name of testdata.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRenderRefusesBeforeTheFrame: a layout refused by the header alone
// (not greyscale, no place for the stored bits) is refused before the
// frame is read, as native's comment says: no 64 MiB read for a "no
// preview" (before, PALETTE COLOR was refused once its frame was read).
func TestRenderRefusesBeforeTheFrame(t *testing.T) {
	const cols = 30000 // 60,000 bytes of frame
	for _, tt := range []struct {
		name, noPrev string
		obj          []byte
	}{
		{"PALETTE COLOR", "PALETTE COLOR", greyObject(tsExplicitLE, "PALETTE COLOR", cols, sampleBits{16, 16, 15, false},
			pipelinetest.Raw(tag(0x7FE0, 0x0010), "OW", make([]byte, 2*cols)))},
		{"High Bit below Bits Stored - 1", "High Bit 10", nativeWide(sampleBits{16, 12, 10, false}, make([]uint32, cols))},
	} {
		t.Run(tt.name, func(t *testing.T) {
			at := &countingAt{r: bytes.NewReader(tt.obj)}
			renderAs(t, at, int64(len(tt.obj)), tt.noPrev)
			if read := at.bytes.Load(); read > 8<<10 {
				t.Errorf("read %d bytes of a %d byte object to refuse it by its header", read, len(tt.obj))
			}
		})
	}
}
