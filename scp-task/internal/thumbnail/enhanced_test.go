package thumbnail

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// sopEnhancedCT is the Enhanced CT Image Storage SOP Class.
const sopEnhancedCT = "1.2.840.10008.5.1.4.1.1.2.1"

// enhanced is an enhanced multi-frame object of native 16-bit greyscale
// frames of one row, and the classic single-frame object its middle frame
// is drawn as (flat: the frame's pixels with its functional groups'
// attributes at the top level), which dcmj2pnm renders for the comparison.
type enhanced struct {
	ts     string
	bits   sampleBits
	frames [][]uint32 // each frame's samples, as stored
	top    []pipelinetest.Elem
	// shared is the Shared Functional Groups item (nil: no sequence);
	// perFrame the Per-Frame items (nil: no sequence).
	shared   []pipelinetest.Elem
	perFrame [][]pipelinetest.Elem
	// undefined writes the functional groups' sequences and items of
	// undefined length (walked), else of defined length (the items not
	// the frame's skipped unread).
	undefined bool
	// late puts Number of Frames after the functional groups, out of
	// tag order.
	late bool
	// flat are the attributes that make the middle frame alone the same
	// image at the top level.
	flat []pipelinetest.Elem
}

// object is e's Part 10 object.
func (e enhanced) object() []byte {
	pr := uint16(0)
	if e.bits.signed {
		pr = 1
	}
	var px []byte
	for _, f := range e.frames {
		for _, v := range f {
			px = binary.LittleEndian.AppendUint16(px, uint16(v))
		}
	}
	nf := pipelinetest.Str(tag(0x0028, 0x0008), "IS", strconv.Itoa(len(e.frames)))
	ds := []pipelinetest.Elem{
		pipelinetest.Str(tag(0x0008, 0x0016), "UI", sopEnhancedCT),
		pipelinetest.Str(tag(0x0008, 0x0018), "UI", "2.25.11"),
		pipelinetest.U16(tag(0x0028, 0x0002), 1),
		pipelinetest.Str(tag(0x0028, 0x0004), "CS", "MONOCHROME2"),
	}
	if !e.late {
		ds = append(ds, nf)
	}
	ds = append(ds,
		pipelinetest.U16(tag(0x0028, 0x0010), 1),
		pipelinetest.U16(tag(0x0028, 0x0011), uint16(len(e.frames[0]))),
		pipelinetest.U16(tag(0x0028, 0x0100), e.bits.allocated),
		pipelinetest.U16(tag(0x0028, 0x0101), e.bits.stored),
		pipelinetest.U16(tag(0x0028, 0x0102), e.bits.high),
		pipelinetest.U16(tag(0x0028, 0x0103), pr))
	ds = append(ds, e.top...)
	if e.shared != nil {
		ds = append(ds, pipelinetest.Seq(tag(0x5200, 0x9229), e.undefined, e.shared))
	}
	if e.perFrame != nil {
		ds = append(ds, pipelinetest.Seq(tag(0x5200, 0x9230), e.undefined, e.perFrame...))
	}
	if e.late {
		ds = append(ds, nf)
	}
	ds = append(ds, pipelinetest.Raw(tag(0x7FE0, 0x0010), "OW", px))
	return pipelinetest.Part10(pipelinetest.Meta{SOPClassUID: sopEnhancedCT, SOPInstanceUID: "2.25.11", TransferSyntaxUID: e.ts}, ds)
}

// flatObject is the classic object of e's middle frame with e.flat.
func (e enhanced) flatObject() []byte {
	return nativeWideIn(e.ts, e.bits, e.frames[len(e.frames)/2], e.flat...)
}

// transform is a Pixel Value Transformation Sequence (0028,9145) of one
// item: a rescale, then more (a Modality LUT Sequence).
func transform(intercept, slope string, more ...pipelinetest.Elem) pipelinetest.Elem {
	return pipelinetest.Seq(tag(0x0028, 0x9145), false, append(rescale(intercept, slope), more...))
}

// rescale is Rescale Intercept and Slope.
func rescale(intercept, slope string) []pipelinetest.Elem {
	return []pipelinetest.Elem{pipelinetest.Str(tag(0x0028, 0x1052), "DS", intercept), pipelinetest.Str(tag(0x0028, 0x1053), "DS", slope)}
}

// frameVOI is a Frame VOI LUT Sequence (0028,9132) of one item holding e.
func frameVOI(e ...pipelinetest.Elem) pipelinetest.Elem {
	return pipelinetest.Seq(tag(0x0028, 0x9132), false, e)
}

// pixelMeasures is a Pixel Measures Sequence (0028,9110), which the
// preview does not read: it draws pixels square.
var pixelMeasures = pipelinetest.Seq(tag(0x0028, 0x9110), false, []pipelinetest.Elem{
	pipelinetest.Str(tag(0x0028, 0x0030), "DS", `0.5\0.5`), pipelinetest.Str(tag(0x0018, 0x0050), "DS", "1")})

// ctFrames are three frames of signed CT samples, the middle one a ramp.
var ctFrames = [][]uint32{
	{9, 9, 9, 9, 9, 9},
	{0, 100, 200, 300, 400, 500},
	{0xFFF6, 0xFFF6, 0xFFF6, 0xFFF6, 0xFFF6, 0xFFF6},
}

// ctBits is 16 bits signed.
var ctBits = sampleBits{16, 16, 15, true}

// perFrameCT is a Per-Frame Functional Groups Sequence's items for
// ctFrames, each frame its own rescale and window, the middle one's
// (-1024, 2; center -524, width 800) mapping its ramp to 0, 32, 96, 160,
// 223, 255; the others' would draw it all black or all white.
func perFrameCT(voi func(center, width string) pipelinetest.Elem) [][]pipelinetest.Elem {
	return [][]pipelinetest.Elem{
		{pixelMeasures, voi("5000", "10"), transform("0", "1")},
		{pixelMeasures, voi("-524", "800"), transform("-1024", "2")},
		{pixelMeasures, voi("-5000", "10"), transform("100", "1")},
	}
}

func windowVOI(center, width string) pipelinetest.Elem { return frameVOI(window(center, width, "")...) }

// ctRamp is the middle frame of ctFrames drawn by its own rescale and
// window.
var ctRamp = []uint8{0, 32, 96, 160, 223, 255}

// enhancedCase is an enhanced object and the grey levels of its middle
// frame, or the reason it has no preview.
type enhancedCase struct {
	name   string
	obj    enhanced
	want   []uint8
	noPrev string
}

var enhancedCases = []enhancedCase{
	{name: "per-frame rescale and window: the middle frame's", want: ctRamp,
		obj: enhanced{ts: tsExplicitLE, bits: ctBits, frames: ctFrames,
			shared: []pipelinetest.Elem{pixelMeasures}, perFrame: perFrameCT(windowVOI),
			flat: append(window("-524", "800", ""), rescale("-1024", "2")...)}},
	{name: "per-frame, undefined lengths: walked, the middle frame's", want: ctRamp,
		obj: enhanced{ts: tsExplicitLE, bits: ctBits, frames: ctFrames, undefined: true,
			shared: []pipelinetest.Elem{pixelMeasures}, perFrame: perFrameCT(windowVOI),
			flat: append(window("-524", "800", ""), rescale("-1024", "2")...)}},
	{name: "per-frame in Implicit VR", want: ctRamp,
		obj: enhanced{ts: tsImplicitLE, bits: ctBits, frames: ctFrames,
			shared: []pipelinetest.Elem{pixelMeasures}, perFrame: perFrameCT(windowVOI),
			flat: append(window("-524", "800", ""), rescale("-1024", "2")...)}},
	{name: "per-frame over the shared group and the top level", want: ctRamp,
		obj: enhanced{ts: tsExplicitLE, bits: ctBits, frames: ctFrames,
			top:    append(window("40", "400", ""), rescale("0", "1")...),
			shared: []pipelinetest.Elem{windowVOI("-5000", "10"), transform("3000", "1")}, perFrame: perFrameCT(windowVOI),
			flat: append(window("-524", "800", ""), rescale("-1024", "2")...)}},
	{name: "shared rescale, per-frame window", want: ctRamp,
		obj: enhanced{ts: tsExplicitLE, bits: ctBits, frames: ctFrames,
			shared:   []pipelinetest.Elem{pixelMeasures, transform("-1024", "2")},
			perFrame: [][]pipelinetest.Elem{{windowVOI("5000", "10")}, {windowVOI("-524", "800")}, {windowVOI("-5000", "10")}},
			flat:     append(window("-524", "800", ""), rescale("-1024", "2")...)}},
	{name: "shared rescale and window over the top level's", want: ctRamp,
		obj: enhanced{ts: tsExplicitLE, bits: ctBits, frames: ctFrames,
			top:      append(window("40", "400", ""), rescale("0", "1")...),
			shared:   []pipelinetest.Elem{windowVOI("-524", "800"), transform("-1024", "2")},
			perFrame: [][]pipelinetest.Elem{{pixelMeasures}, {pixelMeasures}, {pixelMeasures}},
			flat:     append(window("-524", "800", ""), rescale("-1024", "2")...)}},
	{name: "no functional group's window: the top level's", want: ctRamp,
		obj: enhanced{ts: tsExplicitLE, bits: ctBits, frames: ctFrames,
			top:      window("-524", "800", ""),
			shared:   []pipelinetest.Elem{transform("-1024", "2")},
			perFrame: [][]pipelinetest.Elem{{pixelMeasures}, {pixelMeasures}, {pixelMeasures}},
			flat:     append(window("-524", "800", ""), rescale("-1024", "2")...)}},
	{name: "per-frame rescale, no window: min-max of the frame's values", want: []uint8{255, 204, 153, 102, 51, 0},
		obj: enhanced{ts: tsExplicitLE, bits: ctBits, frames: ctFrames,
			perFrame: [][]pipelinetest.Elem{{transform("0", "1")}, {transform("-1024", "-2")}, {transform("0", "1")}},
			flat:     rescale("-1024", "-2")}},
	{name: "per-frame SIGMOID", want: []uint8{2, 12, 69, 186, 243, 253},
		obj: enhanced{ts: tsExplicitLE, bits: ctBits, frames: ctFrames,
			shared: []pipelinetest.Elem{transform("-1024", "2")},
			perFrame: [][]pipelinetest.Elem{{frameVOI(window("5000", "10", "")...)}, {frameVOI(window("-524", "400", "SIGMOID")...)},
				{frameVOI(window("-5000", "10", "")...)}},
			flat: append(window("-524", "400", "SIGMOID"), rescale("-1024", "2")...)}},
	// The frame's VOI LUT's descriptor is US, its first value mapped -1
	// (65535 sent): in Implicit VR its VR is decided by the values it maps
	// (dataset.LUTFirstValueSigned), the frame's rescale's output, below 0.
	{name: "per-frame VOI LUT over the frame's rescale below 0, Implicit VR", want: []uint8{0, 0, 128, 255, 255},
		obj: enhanced{ts: tsImplicitLE, bits: sampleBits{16, 12, 11, false},
			frames: [][]uint32{{0, 0, 0, 0, 0}, {1000, 1023, 1024, 1025, 2000}, {0, 0, 0, 0, 0}},
			perFrame: [][]pipelinetest.Elem{
				{frameVOI(voiLUT(3, 0, 8, lutWords(255, 255, 255))), transform("0", "1")},
				{frameVOI(voiLUT(3, -1, 8, lutWords(0, 128, 255))), transform("-1024", "1")},
				{frameVOI(voiLUT(3, 0, 8, lutWords(255, 255, 255))), transform("0", "1")}},
			flat: append(rescale("-1024", "1"), voiLUT(3, -1, 8, lutWords(0, 128, 255)))}},
	{name: "per-frame Modality LUT in the Pixel Value Transformation", want: []uint8{0, 128, 255, 255, 255, 255},
		obj: enhanced{ts: tsExplicitLE, bits: ctBits, frames: ctFrames,
			perFrame: [][]pipelinetest.Elem{{transform("0", "1")},
				{pipelinetest.Seq(tag(0x0028, 0x9145), false, []pipelinetest.Elem{pipelinetest.Seq(tag(0x0028, 0x3000), false, []pipelinetest.Elem{
					lutDescriptor("US", 3, 99, 16), pipelinetest.Raw(tag(0x0028, 0x3006), "OW", lutWords(10, 20, 30))})})},
				{transform("0", "1")}},
			flat: []pipelinetest.Elem{pipelinetest.Seq(tag(0x0028, 0x3000), false, []pipelinetest.Elem{
				lutDescriptor("US", 3, 99, 16), pipelinetest.Raw(tag(0x0028, 0x3006), "OW", lutWords(10, 20, 30))})}}},
	{name: "fewer per-frame items than frames", noPrev: "Per-Frame Functional Groups Sequence of 2 items for 3 frames",
		obj: enhanced{ts: tsExplicitLE, bits: ctBits, frames: ctFrames, perFrame: perFrameCT(windowVOI)[:2]}},
	{name: "per-frame items before Number of Frames", noPrev: "before Number of Frames",
		obj: enhanced{ts: tsExplicitLE, bits: ctBits, frames: ctFrames, perFrame: perFrameCT(windowVOI), late: true}},
}

// TestRenderEnhanced: an enhanced multi-frame object's middle frame is
// drawn by its own Pixel Value Transformation and Frame VOI LUT (PS3.3
// C.7.6.16.2.9, C.7.6.16.2.10): each macro from the frame's Per-Frame
// Functional Groups item, else the Shared one, else the top level
// (C.7.6.16). Before, the preview read the top level alone: an enhanced
// CT was drawn by the min-max window over stored values, its window and
// rescale in the functional groups unread. A Per-Frame sequence that does
// not say which item is the frame's is no preview, never another frame's.
func TestRenderEnhanced(t *testing.T) {
	for _, tt := range enhancedCases {
		t.Run(tt.name, func(t *testing.T) { wantRow(t, tt.obj.object(), tt.noPrev, tt.want) })
	}
}

// TestRenderEnhancedAsDCMTK: each enhanced object's preview is the one
// dcmj2pnm draws of its flat equivalent, the middle frame alone with its
// functional groups' attributes at the top level (dcmj2pnm 3.6.7 reads a
// Shared Functional Groups rescale, but no per-frame one and no Frame VOI
// LUT Sequence), within one level (the two round differently).
func TestRenderEnhancedAsDCMTK(t *testing.T) {
	dcmj2pnm := testenv.LookPath(t, "dcmj2pnm")
	dir := t.TempDir()
	for i, tt := range enhancedCases {
		if tt.noPrev != "" {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			b := tt.obj.object()
			ours, err := Render(bytes.NewReader(b), int64(len(b)), 1<<16)
			if err != nil {
				t.Fatal(err)
			}
			flat := tt.obj.flatObject()
			obj, err := readObject(bytes.NewReader(flat), int64(len(flat)))
			if err != nil {
				t.Fatal(err)
			}
			p, err := params(obj, 16)
			if err != nil {
				t.Fatal(err)
			}
			args := dcmj2pnmArgs(t, obj, p, 1)
			sameAsDCMTK(t, ours, dcmtkPNG(t, dcmj2pnm, dir, fmt.Sprint(i), flat, args), args)
		})
	}
}

// dcmtkPNG is dcmj2pnm's PNG of obj under args, written in dir as name.
func dcmtkPNG(t *testing.T, dcmj2pnm, dir, name string, obj []byte, args []string) []byte {
	t.Helper()
	in, out := filepath.Join(dir, name+".dcm"), filepath.Join(dir, name+".png")
	if err := os.WriteFile(in, obj, 0o600); err != nil {
		t.Fatal(err)
	}
	if msg, err := exec.Command(dcmj2pnm, append(args, in, out)...).CombinedOutput(); err != nil {
		t.Fatalf("dcmj2pnm %v: %v\n%s", args, err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// manyFrames is an enhanced CT of frames frames of one pixel each, the
// value of frame i i, and item(i) its Per-Frame Functional Groups item.
func manyFrames(frames int, item func(i int) []pipelinetest.Elem) enhanced {
	e := enhanced{ts: tsExplicitLE, bits: ctBits, perFrame: make([][]pipelinetest.Elem, frames), frames: make([][]uint32, frames)}
	for i := range frames {
		e.perFrame[i] = item(i)
		e.frames[i] = []uint32{uint32(i)}
	}
	return e
}

// TestRenderKeepsOneFramesItem: of an enhanced object's Per-Frame
// Functional Groups items, one a frame, the renderer keeps the middle
// frame's alone, whatever the frames: the others are skipped unread where
// their lengths are defined (dataset's SkipItem: neither parsed nor
// counted against the reader's limits), walked with their values skipped
// where not. 4,001 frames of a 2 KiB item each (a vendor's private data
// per frame) cost the preview one small read an item, its header's
// (about 2 MiB of the 8 MiB), never the items' values. With defined
// lengths, the Frame VOI LUT Sequence at the end of each other frame's
// item is not read at all (but where the header's read-ahead reached it
// before the sequence began): the bytes and reads alone did not tell a
// skip from a walk, each one read an item.
func TestRenderKeepsOneFramesItem(t *testing.T) {
	const frames = 4001
	e := manyFrames(frames, func(i int) []pipelinetest.Elem {
		return []pipelinetest.Elem{
			pipelinetest.Str(tag(0x0029, 0x0010), "LO", "VENDOR"),
			pipelinetest.Raw(tag(0x0029, 0x1010), "OB", bytes.Repeat([]byte{byte(i)}, 2048)),
			windowVOI("5000", "10"),
		}
	})
	e.perFrame[frames/2][2] = windowVOI("-524", "800")
	e.frames[frames/2] = []uint32{0xFDF4} // -524: the middle of its frame's window
	for _, undefined := range []bool{false, true} {
		t.Run(fmt.Sprintf("undefined lengths %v", undefined), func(t *testing.T) {
			e.undefined = undefined
			b := e.object()
			at := &watchedAt{countingAt: countingAt{r: bytes.NewReader(b)}, touched: map[int]bool{}}
			// The other frames' Window Center, 5000, in its item (Explicit
			// VR Little Endian).
			others := []byte("\x28\x00\x50\x10DS\x04\x005000")
			for off := 0; ; {
				i := bytes.Index(b[off:], others)
				if i < 0 {
					break
				}
				at.watch = append(at.watch, [2]int64{int64(off + i), int64(off + i + len(others))})
				off += i + len(others)
			}
			if len(at.watch) != frames-1 {
				t.Fatalf("%d other frames' Window Centers found, want %d", len(at.watch), frames-1)
			}
			out := renderAs(t, at, int64(len(b)), "")
			if g := grey(decodePNG(t, out).At(0, 0)); g != 128 {
				t.Errorf("grey level %d, want the middle frame's window's 128 (another frame's: 0)", g)
			}
			if read, most := at.bytes.Load(), int64(frames*600+(256<<10)); read > most {
				t.Errorf("read %d bytes of a %d byte object in %d reads, want at most %d", read, len(b), at.reads.Load(), most)
			}
			if n := len(at.touched); !undefined && n > 2 {
				t.Errorf("the Frame VOI LUT Sequences of %d other frames' items read, want them skipped unread", n)
			}
		})
	}
}

// TestRenderEnhancedHeaderReads: an enhanced CT's Per-Frame Functional
// Groups items are small (a few hundred bytes a frame: Frame Content,
// Plane Position, Frame VOI LUT, Pixel Value Transformation), so skipping
// the other frames' items (or walking them) moves on a few hundred bytes
// at a time: the header is read in chunks that grow, as one without
// skips is, a few reads for 4,000 frames. The range reader started over
// at its first chunk (512 bytes) after every skip past what it held,
// however short: 1,336 reads of 512 bytes with the items skipped
// (SkipItem), where walking them had made fewer.
func TestRenderEnhancedHeaderReads(t *testing.T) {
	e := manyFrames(4000, func(i int) []pipelinetest.Elem {
		return []pipelinetest.Elem{
			pipelinetest.Seq(tag(0x0020, 0x9111), false, []pipelinetest.Elem{pipelinetest.U16(tag(0x0020, 0x9057), uint16(i))}),
			pipelinetest.Seq(tag(0x0020, 0x9113), false, []pipelinetest.Elem{pipelinetest.Str(tag(0x0020, 0x0032), "DS", `-125.000\-125.000\-300.500`)}),
			windowVOI("40", "400"), transform("-1024", "1"),
		}
	})
	for _, undefined := range []bool{false, true} {
		t.Run(fmt.Sprintf("undefined lengths %v", undefined), func(t *testing.T) {
			e.undefined = undefined
			b := e.object()
			at := &countingAt{r: bytes.NewReader(b)}
			renderAs(t, at, int64(len(b)), "")
			if reads, most := at.reads.Load(), int64(32); reads > most {
				t.Errorf("%d reads (%d bytes) of a %d byte object, want at most %d", reads, at.bytes.Load(), len(b), most)
			}
		})
	}
}

// watchedAt is countingAt that notes which of the spans watch (start,
// end) a read overlaps.
type watchedAt struct {
	countingAt
	watch   [][2]int64
	touched map[int]bool
}

func (w *watchedAt) ReadAt(p []byte, off int64) (int, error) {
	for i, s := range w.watch {
		if off < s[1] && off+int64(len(p)) > s[0] {
			w.touched[i] = true
		}
	}
	return w.countingAt.ReadAt(p, off)
}

// wantRow renders obj and fails t unless the first row of its preview
// starts with the grey levels want, or unless it has no preview naming
// noPrev when that is set.
func wantRow(t *testing.T, obj []byte, noPrev string, want []uint8) {
	t.Helper()
	out := renderAs(t, bytes.NewReader(obj), int64(len(obj)), noPrev)
	if out == nil {
		return
	}
	img := decodePNG(t, out)
	if img.Bounds().Dx() < len(want) {
		t.Fatalf("size %v, want %d pixels a row", img.Bounds(), len(want))
	}
	got := make([]uint8, len(want))
	for x := range got {
		got[x] = grey(img.At(x, 0))
	}
	if !bytes.Equal(got, want) {
		t.Errorf("grey levels %v, want %v", got, want)
	}
}

// sameAsDCMTK fails t unless the PNGs ours and theirs (dcmj2pnm's, under
// args) are the same size and within one level (the two round
// differently).
func sameAsDCMTK(t *testing.T, ours, theirs []byte, args []string) {
	t.Helper()
	a, d := decodePNG(t, ours), decodePNG(t, theirs)
	if a.Bounds() != d.Bounds() {
		t.Fatalf("size %v, dcmj2pnm's %v", a.Bounds(), d.Bounds())
	}
	if mean, most := difference(a, d); most > 1 {
		t.Errorf("%.2f levels apart on average, %d at most, from dcmj2pnm %v", mean, most, args)
	}
}
