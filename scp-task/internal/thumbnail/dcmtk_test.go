package thumbnail

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestRenderAsDCMTK renders the fixtures, TestRenderGreyLevels' objects
// and the parser's test files with this package and with DCMTK's
// dcmj2pnm (the same frame, the first window or min-max without one, no
// scaling) and compares them pixel by pixel. Native pixel data agrees
// within one level (the two round differently); JPEG Baseline within a
// few on average (the decoders' IDCT and chroma upsampling differ). A
// wrong window, an inverted MONOCHROME1, a sign error or garbage in the
// unused high bits is tens of levels.
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
	// renders otherwise where the standard says nothing.
	dcmtkCannot := map[string]string{
		"jpeg-fragmented.dcm": "dcmj2pnm finds no frame but the first in fragments without an offset table",
		"SIGMOID width 0: no window, the frame's range": "dcmj2pnm +Wm draws the min-max window through the VOI LUT Function " +
			"of a window it refused; the preview's min-max window is LINEAR (C.11.2.1.2.1 Note 4), the function being the refused window's",
	}
	dir := t.TempDir()
	compared := 0
	for i, o := range objs {
		t.Run(o.name, func(t *testing.T) {
			if why, ok := dcmtkCannot[o.name]; ok {
				t.Skip(why)
			}
			ours, err := Render(bytes.NewReader(o.b), int64(len(o.b)), 1<<16) // no shrinking
			if errors.Is(err, ErrNoPreview) {
				t.Skipf("no preview: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			obj, err := readObject(bytes.NewReader(o.b), int64(len(o.b)))
			if err != nil {
				t.Fatal(err)
			}
			if params(obj, 16).voi == voiLinearExact {
				// DCMTK 3.6.7 warns "unknown value" and windows LINEAR.
				t.Skip("dcmj2pnm does not know LINEAR_EXACT")
			}
			frames, err := obj.frames()
			if err != nil {
				t.Fatal(err)
			}
			args := []string{"--write-png", "--frame", fmt.Sprint(frames/2 + 1), "+Wm"}
			if p := params(obj, 16); p.width > 0 {
				args[3] = "+Wi"
				args = append(args, "1")
			}
			in, out := filepath.Join(dir, fmt.Sprintf("%d.dcm", i)), filepath.Join(dir, fmt.Sprintf("%d.png", i))
			if err := os.WriteFile(in, o.b, 0o600); err != nil {
				t.Fatal(err)
			}
			if msg, err := exec.Command(dcmj2pnm, append(args, in, out)...).CombinedOutput(); err != nil {
				t.Fatalf("dcmj2pnm %v: %v\n%s", args, err, msg)
			}
			theirs, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
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
