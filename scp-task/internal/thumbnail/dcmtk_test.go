package thumbnail

import (
	"bytes"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestRenderAsDCMTK renders the fixtures, TestRenderGreyLevels' objects
// and the parser's test files with this package and with DCMTK's
// dcmj2pnm (the same frame, the Modality LUT, the first window, else the
// first VOI LUT, else min-max, no scaling) and compares them pixel by pixel. Native pixel data agrees
// within one level (the two round differently); JPEG Baseline within a
// few on average (the decoders' IDCT and chroma upsampling differ). A
// wrong window, an inverted MONOCHROME1, a sign error or garbage in the
// unused high bits is tens of levels. What dcmj2pnm cannot render is left
// out of the comparison (dcmtkCannot, naming the test that holds it); an
// object we give no preview is compared by that answer and its reason.
func TestRenderAsDCMTK(t *testing.T) {
	dcmj2pnm := testenv.LookPath(t, "dcmj2pnm")
	type object struct {
		name string
		b    []byte
	}
	var objs []object
	files, err := filepath.Glob(filepath.Join("testdata", "*.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, testenv.DICOMTestdataFiles(t)...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, object{filepath.Base(f), b})
	}
	for _, c := range greyCases {
		if c.noPrev == "" {
			objs = append(objs, object{c.name, c.obj(t)})
		}
	}
	// What dcmj2pnm (3.6.7) does not render as the standard says, or
	// renders otherwise where the standard says nothing, is left out of
	// the comparison; the test named holds what we render instead.
	dcmtkCannot := map[string]string{
		"jpeg-fragmented.dcm": "dcmj2pnm finds no frame but the first in fragments without an offset table " +
			"(TestRenderDCMTKFragmented: its middle frame is jpeg-multiframe.dcm's, which is compared here)",
		"SIGMOID width 0: no window, the frame's range": "dcmj2pnm +Wm draws the min-max window through the VOI LUT Function " +
			"of a window it refused; the preview's min-max window is LINEAR (C.11.2.1.2.1 Note 4), the function being the refused window's " +
			"(TestRenderGreyLevels)",
		// DCMTK 3.6.7 warns "unknown value" and windows LINEAR.
		"LINEAR_EXACT":                    "dcmj2pnm does not know LINEAR_EXACT (TestRenderGreyLevels)",
		"LINEAR_EXACT width 0.5, above 0": "dcmj2pnm does not know LINEAR_EXACT (TestRenderGreyLevels)",
	}
	// What we give no preview for, by the words its reason names: there
	// is no PNG to compare, and the comparison is that answer (TestRender
	// holds it too). Any other object without a preview fails.
	noPreview := map[string]string{
		"rle.dcm": "1.2.840.10008.1.2.5", // RLE Lossless: not rendered
	}
	kept := objs[:0]
	for _, o := range objs {
		if _, ok := dcmtkCannot[o.name]; ok {
			delete(dcmtkCannot, o.name)
			continue
		}
		kept = append(kept, o)
	}
	objs = kept
	for name := range dcmtkCannot {
		t.Errorf("dcmtkCannot names %q, which is no object here", name)
	}
	dir := t.TempDir()
	compared := 0
	for i, o := range objs {
		t.Run(o.name, func(t *testing.T) {
			if why, ok := noPreview[o.name]; ok {
				renderAs(t, bytes.NewReader(o.b), int64(len(o.b)), why)
				return
			}
			ours, err := Render(bytes.NewReader(o.b), int64(len(o.b)), 1<<16) // no shrinking
			if err != nil {
				t.Fatal(err)
			}
			obj, err := readObject(bytes.NewReader(o.b), int64(len(o.b)))
			if err != nil {
				t.Fatal(err)
			}
			p, err := params(obj, 16)
			if err != nil {
				t.Fatal(err)
			}
			if p.voi == voiLinearExact {
				t.Fatal("LINEAR_EXACT, which dcmj2pnm 3.6.7 windows LINEAR: leave it out (dcmtkCannot) and hold it in TestRenderGreyLevels")
			}
			frames, err := obj.frames()
			if err != nil {
				t.Fatal(err)
			}
			args := dcmj2pnmArgs(t, obj, p, frames)
			theirs := dcmtkPNG(t, dcmj2pnm, dir, fmt.Sprint(i), o.b, args)
			a, d := decodePNG(t, ours), decodePNG(t, theirs)
			if a.Bounds() != d.Bounds() {
				t.Fatalf("size %v, dcmj2pnm's %v", a.Bounds(), d.Bounds())
			}
			mean, most := difference(a, d)
			if lossy := obj.ts == tsJPEGBaseline; lossy && mean > 3 || !lossy && most > 1 {
				t.Errorf("%s: %.2f levels apart on average, %d at most, from dcmj2pnm %v", obj.str(tagPhotometric), mean, most, args)
			}
			compared++
		})
	}
	if compared < 10 {
		t.Errorf("only %d objects compared", compared)
	}
}

// dcmj2pnmArgs are the options under which dcmj2pnm renders obj's frame
// as the preview does: the Modality LUT (its sequence's or the rescale)
// is dcmj2pnm's default (+M); then the first window, else the first VOI
// LUT, else min-max, as params chose (p). dcmj2pnm (3.6.7) reads an
// enhanced multi-frame object's Shared Functional Groups rescale (where
// the top level has none) but no Frame VOI LUT Sequence: a window from a
// functional group is given it (+Ww), as LINEAR; what else it does not
// read there (a per-frame rescale, a functional group's VOI LUT or its
// VOI LUT Function) is compared by its flat equivalent instead
// (TestRenderEnhancedAsDCMTK). Its min-max window counts pixel padding:
// TestRenderPaddingAsDCMTK gives it the window over the image's values.
func dcmj2pnmArgs(t *testing.T, obj *object, p pixelParams, frames uint64) []string {
	t.Helper()
	args := []string{"--write-png", "--frame", fmt.Sprint(frames/2 + 1), "+Wm"}
	if obj.frame[pixelValueTransformation].present || obj.shared[pixelValueTransformation].present && p.modality != nil {
		t.Fatal("a per-frame rescale or a functional group's Modality LUT, which dcmj2pnm 3.6.7 does not read: compare its flat equivalent (TestRenderEnhancedAsDCMTK)")
	}
	group := obj.macro(frameVOILUT) != &obj.top
	switch {
	case p.width > 0 && group:
		if p.voi != voiLinear {
			t.Fatal("a functional group's VOI LUT Function, which dcmj2pnm 3.6.7 does not read: compare its flat equivalent (TestRenderEnhancedAsDCMTK)")
		}
		args = append(args[:3], "+Ww", strconv.FormatFloat(p.center, 'g', -1, 64), strconv.FormatFloat(p.width, 'g', -1, 64))
	case p.width > 0:
		args = append(args[:3], "+Wi", "1")
	case p.voiLUT != nil && group:
		t.Fatal("a functional group's VOI LUT, which dcmj2pnm 3.6.7 does not read: compare its flat equivalent (TestRenderEnhancedAsDCMTK)")
	case p.voiLUT != nil:
		args = append(args[:3], "+Wl", "1")
	case p.padding:
		t.Fatal("pixel padding under the min-max window, which dcmj2pnm 3.6.7 counts: compare it under the window over the image's values (TestRenderPaddingAsDCMTK)")
	}
	return args
}

// difference is the mean and largest absolute difference of a and d's
// samples (red, green, blue, 8 bits each).
func difference(a, d image.Image) (mean float64, most int) {
	var sum, n int
	b := a.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r1, g1, b1, _ := a.At(x, y).RGBA()
			r2, g2, b2, _ := d.At(x, y).RGBA()
			for _, s := range [][2]uint32{{r1, r2}, {g1, g2}, {b1, b2}} {
				v := abs(int(s[0]>>8) - int(s[1]>>8))
				sum, n, most = sum+v, n+1, max(most, v)
			}
		}
	}
	return float64(sum) / float64(max(n, 1)), most
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
