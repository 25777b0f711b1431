package thumbnail

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// padding is Pixel Padding Value (0028,0120) of vr, and with limit set
// Pixel Padding Range Limit (0028,0121) of the same VR.
func padding(vr string, value int16, limit ...int16) []pipelinetest.Elem {
	e := []pipelinetest.Elem{pipelinetest.Raw(tag(0x0028, 0x0120), vr, binary.LittleEndian.AppendUint16(nil, uint16(value)))}
	for _, l := range limit {
		e = append(e, pipelinetest.Raw(tag(0x0028, 0x0121), vr, binary.LittleEndian.AppendUint16(nil, uint16(l))))
	}
	return e
}

// u16s is signed values as 16-bit samples.
func u16s(v ...int16) []uint32 {
	s := make([]uint32, len(v))
	for i, x := range v {
		s[i] = uint32(uint16(x))
	}
	return s
}

// paddingCase is an object with pixel padding, the grey levels of its
// row, and for its min-max window the range of its image's values in
// modality units, padding left out (lo > hi: it has a window of its
// own).
type paddingCase struct {
	name   string
	obj    []byte
	want   []uint8
	lo, hi float64
}

var paddingCases = []paddingCase{
	{name: "CT, padding -2000: left out of the window over the frame's range", want: []uint8{0, 0, 128, 255}, lo: -1000, hi: 1000,
		obj: nativeWide(ctBits, u16s(-2000, -1000, 0, 1000), padding("SS", -2000)...)},
	{name: "CT, padding -2000 in Implicit VR", want: []uint8{0, 0, 128, 255}, lo: -1000, hi: 1000,
		obj: nativeWideIn(tsImplicitLE, ctBits, u16s(-2000, -1000, 0, 1000), padding("SS", -2000)...)},
	{name: "CT, padding -2000 sent US: read by Pixel Representation", want: []uint8{0, 0, 128, 255}, lo: -1000, hi: 1000,
		obj: nativeWide(ctBits, u16s(-2000, -1000, 0, 1000), padding("US", -2000)...)},
	{name: "padding is a stored value: before the rescale", want: []uint8{0, 0, 128, 255}, lo: -24, hi: 1976,
		obj: nativeWide(sampleBits{16, 12, 11, false}, []uint32{0, 1000, 2000, 3000},
			append(padding("US", 0), rescale("-1024", "1")...)...)},
	{name: "padding range, MONOCHROME2 order", want: []uint8{0, 0, 0, 0, 128, 255}, lo: 100, hi: 300,
		obj: nativeWide(sampleBits{16, 12, 11, false}, []uint32{0, 5, 10, 100, 200, 300}, padding("US", 0, 10)...)},
	{name: "padding range, MONOCHROME1 order: either", want: []uint8{0, 0, 0, 0, 128, 255}, lo: 100, hi: 300,
		obj: nativeWide(sampleBits{16, 12, 11, false}, []uint32{0, 5, 10, 100, 200, 300}, padding("US", 10, 0)...)},
	{name: "a limit without a value: no padding", want: []uint8{0, 4, 8, 85, 170, 255}, lo: 0, hi: 300,
		obj: nativeWide(sampleBits{16, 12, 11, false}, []uint32{0, 5, 10, 100, 200, 300},
			pipelinetest.Raw(tag(0x0028, 0x0121), "US", binary.LittleEndian.AppendUint16(nil, 10)))},
	{name: "a frame of padding alone: its own range", want: []uint8{0, 255}, lo: -2000, hi: -1990,
		obj: nativeWide(ctBits, u16s(-2000, -1990), padding("SS", -2000, -1990)...)},
	{name: "a window: padding through it as any value", want: []uint8{0, 0, 128, 255}, lo: 1, hi: 0,
		obj: nativeWide(ctBits, u16s(-2000, -1000, 0, 1000), append(padding("SS", -2000), window("0", "1000", "")...)...)},
}

// TestRenderPadding: Pixel Padding Value and Range Limit (PS3.3
// C.7.5.1.1.2) name stored values that are not image: the window over
// the frame's range, without a window given, leaves them out (its Note 2:
// they lie outside the image's values, which they would stretch). Before,
// a CT with -2000 padding was drawn with its image squeezed into the
// upper part of the grey scale, washed out.
func TestRenderPadding(t *testing.T) {
	for _, tt := range paddingCases {
		t.Run(tt.name, func(t *testing.T) { wantRow(t, tt.obj, "", tt.want) })
	}
}

// TestRenderPaddingAsDCMTK: the preview of an object with padding is
// dcmj2pnm's under the window of C.11.2.1.2.1 Note 4 over the image's
// values (lo to hi, padding left out), given it (+Ww): dcmj2pnm 3.6.7's
// min-max window (+Wm) counts padding. With a window given, dcmj2pnm's
// own (+Wi 1).
func TestRenderPaddingAsDCMTK(t *testing.T) {
	dcmj2pnm := testenv.LookPath(t, "dcmj2pnm")
	dir := t.TempDir()
	for i, tt := range paddingCases {
		t.Run(tt.name, func(t *testing.T) {
			ours, err := Render(bytes.NewReader(tt.obj), int64(len(tt.obj)), 1<<16)
			if err != nil {
				t.Fatal(err)
			}
			args := []string{"--write-png", "+Wi", "1"}
			if tt.lo <= tt.hi {
				args = []string{"--write-png", "+Ww", strconv.FormatFloat((tt.lo+tt.hi+1)/2, 'g', -1, 64), strconv.FormatFloat(tt.hi-tt.lo+1, 'g', -1, 64)}
			}
			sameAsDCMTK(t, ours, dcmtkPNG(t, dcmj2pnm, dir, fmt.Sprint(i), tt.obj, args), args)
		})
	}
}
