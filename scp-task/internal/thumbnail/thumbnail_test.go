package thumbnail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"maps"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

func decodePNG(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	return img
}

// renderAs renders the object of size bytes in r at the edge 192: its
// PNG, or nil when it has no preview and the reason names noPrev (when
// set, else the test fails).
func renderAs(t *testing.T, r io.ReaderAt, size int64, noPrev string) []byte {
	t.Helper()
	out, err := Render(r, size, 192)
	if noPrev != "" {
		if !errors.Is(err, ErrNoPreview) || !strings.Contains(err.Error(), noPrev) {
			t.Fatalf("Render = %v, want no preview naming %q", err, noPrev)
		}
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func grey(c color.Color) uint8 { return color.GrayModel.Convert(c).(color.Gray).Y }

// TestRender renders every fixture (testdata/make-fixtures.py) and checks
// where light and dark fall: windowing, MONOCHROME1, the middle frame,
// RGB from JPEG Baseline; and refuses what it does not render.
func TestRender(t *testing.T) {
	tests := []struct {
		file   string
		w, h   int
		check  func(t *testing.T, img image.Image)
		noPrev string // ErrNoPreview with this in the reason
	}{
		{file: "native-ct.dcm", w: 64, h: 48, check: func(t *testing.T, img image.Image) {
			// -300 HU on the left is below the window (40±200): black;
			// 400 HU on the right above it: white.
			if l, r := grey(img.At(0, 10)), grey(img.At(63, 10)); l != 0 || r != 255 {
				t.Errorf("left %d right %d, want 0 and 255", l, r)
			}
		}},
		{file: "native-mono1.dcm", w: 64, h: 48, check: func(t *testing.T, img image.Image) {
			// No window: the frame's range; MONOCHROME1: high is dark.
			if l, r := grey(img.At(0, 10)), grey(img.At(63, 10)); l != 255 || r != 0 {
				t.Errorf("left %d right %d, want 255 and 0", l, r)
			}
		}},
		{file: "native-multiframe.dcm", w: 32, h: 32, check: func(t *testing.T, img image.Image) {
			// Frames of 0, 100, 200 windowed 100±100: the middle one is mid grey.
			if g := grey(img.At(5, 5)); g < 120 || g > 135 {
				t.Errorf("grey %d, want the middle frame's ~128", g)
			}
		}},
		{file: "jpeg-baseline.dcm", w: 40, h: 30, check: func(t *testing.T, img image.Image) {
			r, _, b, _ := img.At(20, 5).RGBA()
			_, _, b2, _ := img.At(20, 25).RGBA()
			if r>>8 < 180 || b>>8 > 60 || b2>>8 < 150 {
				t.Errorf("top %v bottom %v, want red over magenta", img.At(20, 5), img.At(20, 25))
			}
		}},
		{file: "rle.dcm", noPrev: "1.2.840.10008.1.2.5"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			out := renderAs(t, bytes.NewReader(b), int64(len(b)), tt.noPrev)
			if out == nil {
				return
			}
			img := decodePNG(t, out)
			if b := img.Bounds(); b.Dx() != tt.w || b.Dy() != tt.h {
				t.Fatalf("size %v, want %dx%d", b, tt.w, tt.h)
			}
			tt.check(t, img)
		})
	}
}

// TestRenderRefusesLengthsPastTheEnd: pixel data declaring more bytes than
// the object holds is refused by the one element reader, which moves past
// the value without reading it, before any of it is read (a fuzzed object
// declared 3.5 GiB of pixel data in 6 KiB; the parser used before
// allocated what it declared).
func TestRenderRefusesLengthsPastTheEnd(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "native-ct.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte{0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0})
	if i < 0 {
		t.Fatal("no pixel data element in the fixture")
	}
	for name, vl := range map[string][]byte{"3.5 GiB": {0x18, 0x00, 0x00, 0xD4}, "one byte too many": nil} {
		t.Run(name, func(t *testing.T) {
			c := bytes.Clone(b)
			if vl == nil {
				n := uint32(len(c)-(i+12)) + 2
				vl = []byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}
			}
			copy(c[i+8:], vl)
			if _, err := Render(bytes.NewReader(c), int64(len(c)), 32); !errors.Is(err, ErrNoPreview) || !errors.Is(err, dataset.ErrTruncated) {
				t.Fatalf("Render = %v, want no preview: the data set ends inside an element", err)
			}
		})
	}
}

// panickingReader panics at its first read, with what panic gives.
type panickingReader struct{ panic func() }

func (r panickingReader) ReadAt([]byte, int64) (int, error) {
	r.panic()
	return 0, io.EOF
}

// TestRenderRecoversAPanic: a panic while rendering costs the preview
// alone (ErrNoPreview), and the error, which the portal logs, tells its
// value as panicvalue does: a runtime error's text, or only the type of a
// value that could hold the object's UIDs.
func TestRenderRecoversAPanic(t *testing.T) {
	const uid = "1.2.826.0.1.3680043.9.7777.3"
	tests := []struct {
		name  string
		panic func()
		want  string
	}{
		{"a string holding a UID", func() { panic("no frame in " + uid) }, "the renderer failed: a value of type string"},
		{"a runtime error", func() {
			frames := []string{uid}
			n := len(frames)
			_ = frames[n]
		}, "the renderer failed: runtime error: index out of range [1] with length 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			png, err := Render(panickingReader{tt.panic}, 4096, 32)
			if png != nil || !errors.Is(err, ErrNoPreview) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Render = %d bytes, %v; want no preview, %q", len(png), err, tt.want)
			}
			if strings.Contains(err.Error(), uid) {
				t.Errorf("the error names the UID: %v", err)
			}
		})
	}
}

// TestRenderRealFiles renders the parser's own test files (native pixel
// data of several modalities, deflated) or says why not, never failing
// otherwise; every thumbnail fits the edge.
func TestRenderRealFiles(t *testing.T) {
	files := testenv.DICOMTestdataFiles(t)
	rendered := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		png, err := Render(bytes.NewReader(b), int64(len(b)), 64)
		if errors.Is(err, ErrNoPreview) {
			t.Logf("%s: %v", filepath.Base(f), err)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(f), err)
		}
		if b := decodePNG(t, png).Bounds(); b.Dx() > 64 || b.Dy() > 64 {
			t.Errorf("%s: %v exceeds the edge", filepath.Base(f), b)
		}
		rendered++
	}
	if rendered < 3 {
		t.Errorf("only %d of %d real files rendered", rendered, len(files))
	}
}

// TestRendererBounds: an unknown syntax is refused without a read; a
// result is cached, a failure to read is not.
func TestRendererBounds(t *testing.T) {
	body, err := os.ReadFile(filepath.Join("testdata", "native-ct.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	var opens atomic.Int32
	fail := false
	r := New(func(_ context.Context, _ string, offset, length int64) (io.ReadCloser, error) {
		opens.Add(1)
		if fail {
			return nil, errors.New("disk gone")
		}
		return io.NopCloser(io.NewSectionReader(bytes.NewReader(body), offset, length)), nil
	}, Options{})
	ctx := context.Background()
	if _, err := r.PNG(ctx, "j2k", 100, "1.2.840.10008.1.2.4.90"); !errors.Is(err, ErrNoPreview) || opens.Load() != 0 {
		t.Errorf("JPEG 2000: %v, %d opens", err, opens.Load())
	}
	fail = true
	if _, err := r.PNG(ctx, "k", int64(len(body)), tsExplicitLE); err == nil || errors.Is(err, ErrNoPreview) || !strings.Contains(err.Error(), "disk gone") {
		t.Errorf("read failure: %v", err)
	}
	fail = false
	opens.Store(0)
	a, err := r.PNG(ctx, "k", int64(len(body)), tsExplicitLE)
	if err != nil {
		t.Fatal(err)
	}
	read := opens.Load()
	b, err := r.PNG(ctx, "k", int64(len(body)), tsExplicitLE)
	if err != nil || !bytes.Equal(a, b) || opens.Load() != read {
		t.Errorf("second request: %v, %d more reads (want the cached PNG)", err, opens.Load()-read)
	}
}

// TestRendererReadFailsOnce: a read of the store that fails (the
// connection closed before the answer or mid-body, an S3 error in the
// body, the request cancelled) is no verdict on the object: the request
// fails, nothing is cached, and the next request renders. Each store here
// fails one ranged read, the header's first, the header's next or the
// frame's, then answers whole. An open that failed with an error holding
// io.EOF (net/http's `Get "…": EOF` when the store closes an idle
// connection: a *url.Error) or io.ErrUnexpectedEOF (a response cut short)
// read as the object's end, and a body failing with a wrapped io.EOF as
// well: the object was "no preview: … dataset ends inside …", cached until
// evicted.
func TestRendererReadFailsOnce(t *testing.T) {
	body, err := os.ReadFile(filepath.Join("testdata", "native-ct.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	idleClosed := &url.Error{Op: "Get", URL: "http://store.invalid/object", Err: io.EOF}
	cutResponse := fmt.Errorf("operation error S3: GetObject, https response error: %w", io.ErrUnexpectedEOF)
	failures := []struct {
		name   string
		inBody bool // the body fails halfway, else the open
		err    error
	}{
		{"an open whose connection the store closed", false, idleClosed},
		{"an open whose response was cut short", false, cutResponse},
		{"an open that fails", false, errors.New("connection refused")},
		{"an open cancelled", false, context.Canceled},
		{"a body that breaks off", true, io.ErrUnexpectedEOF},
		{"a body failing with a wrapped io.EOF", true, fmt.Errorf("s3: read body: %w", io.EOF)},
		{"a body failing with an S3 error", true, errors.New("InternalError: We encountered an internal error")},
		{"a body cancelled", true, context.Canceled},
	}
	for _, f := range failures {
		for _, read := range []int{0, 1, 2} { // the header's first read, its next, the frame's
			t.Run(fmt.Sprintf("%s, read %d", f.name, read), func(t *testing.T) {
				var opens atomic.Int32
				failed := false
				r := New(func(_ context.Context, _ string, offset, length int64) (io.ReadCloser, error) {
					whole := io.NewSectionReader(bytes.NewReader(body), offset, length)
					if failed || int(opens.Add(1))-1 != read {
						return io.NopCloser(whole), nil
					}
					failed = true
					if !f.inBody {
						return nil, f.err
					}
					return io.NopCloser(io.MultiReader(io.LimitReader(whole, length/2), iotest.ErrReader(f.err))), nil
				}, Options{Concurrency: 1})
				ctx := context.Background()
				_, err := r.PNG(ctx, "k", int64(len(body)), tsExplicitLE)
				if !failed {
					t.Fatalf("the render made %d reads, fewer than %d: %v", opens.Load(), read+1, err)
				}
				if err == nil || errors.Is(err, ErrNoPreview) {
					t.Errorf("the failed read answered %v, want the read's error, not no preview", err)
				}
				png, err := r.PNG(ctx, "k", int64(len(body)), tsExplicitLE)
				if err != nil {
					t.Fatalf("the next request, the store whole again: %v", err)
				}
				decodePNG(t, png)
			})
		}
	}
}

// FuzzRender: outside bytes never panic the renderer and only ever give a
// PNG or no preview; no byte is read twice but where the header's
// read-ahead overlaps the frame (or the offset table's entries). It
// starts from the fixtures (LUTs among them), the layouts, offset tables that lie
// (tableLies), whose entries the renderer jumps by, enhanced multi-frame
// objects' functional groups (enhancedCases) and pixel padding
// (paddingCases).
func FuzzRender(f *testing.F) {
	for _, name := range []string{"native-ct.dcm", "jpeg-baseline.dcm", "native-multiframe.dcm", "rgb.dcm", "jpeg-fragmented.dcm",
		"voilut-dx.dcm", "voilut-cr-8bit.dcm", "modlut-implicit.dcm"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// VOI LUTs' data shorter than the descriptor says (PS3.3 C.11.1.1.1):
	// drawn by the words it holds, one word of a descriptor of 0 (65536
	// entries) among them; a US descriptor over signed pixels in Implicit
	// VR.
	f.Add(nativeGrey("MONOCHROME2", []byte{1, 2, 3}, voiLUT(256, 0, 16, lutWords(1, 2, 3))))
	f.Add(nativeGrey("MONOCHROME2", []byte{1, 2, 3}, voiLUT(0, -5, 8, lutWords(1, 2, 3))))
	f.Add(nativeGrey("MONOCHROME2", []byte{1, 2, 3}, voiLUT(0, -5, 16, lutWords(7))))
	f.Add(signedUnderUSLUT(tsImplicitLE))
	// Enhanced multi-frame objects, whose functional groups' items are
	// walked or skipped by their lengths (SkipItem), and pixel padding.
	for _, c := range enhancedCases {
		f.Add(c.obj.object())
	}
	for _, c := range paddingCases {
		f.Add(c.obj)
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	small := [][]byte{jpegFrame(f, 16, 16, 40, rnd), jpegFrame(f, 16, 16, 80, rnd), jpegFrame(f, 16, 16, 120, rnd)}
	f.Add(encapsulated(small, 1, basicTable))
	f.Add(encapsulated(small, 2, basicTable))
	f.Add(encapsulated(small, 1, noTable))
	f.Add(encapsulated(small, 2, noTable))
	f.Add(encapsulated(small, 3, noTable))
	f.Add(encapsulated(small, 1, extendedTable))
	f.Add(encapsulated(small, 3, extendedTable))
	for _, l := range []layout{basicTable, extendedTable} {
		obj := encapsulated(small, 1, l)
		for _, lie := range tableLies {
			f.Add(lie.lie(f, bytes.Clone(obj), l, len(small), int64(len(obj))))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		at := &countingAt{r: bytes.NewReader(b)}
		out, err := Render(at, int64(len(b)), 32)
		if err == nil {
			if _, derr := png.Decode(bytes.NewReader(out)); derr != nil {
				t.Fatalf("success without a PNG: %v", derr)
			}
		} else if !errors.Is(err, ErrNoPreview) {
			t.Fatalf("neither a PNG nor no preview: %v", err)
		}
		if read := at.bytes.Load(); read > 2*int64(len(b))+8 {
			t.Fatalf("read %d bytes of %d", read, len(b))
		}
	})
}

// TestRenderRefusesImpossibleGeometry: Image Pixel attributes that the
// pixel data cannot hold are refused before a frame is read. (With the
// parser used before, which made a slot per frame from Number of Frames, a
// 3 KB object with 4,000,000,000 frames and Rows 0 ended the process.)
// 1-bit data is not rendered at all.
func TestRenderRefusesImpossibleGeometry(t *testing.T) {
	type geometry struct {
		rows, cols, samples, bits uint16
		frames                    string // "" leaves Number of Frames out
		pixels                    int
	}
	tests := []struct {
		name string
		g    geometry
		why  string
	}{
		{"no rows, 4e9 frames", geometry{0, 512, 1, 8, "4000000000", 0}, "Rows 0"},
		{"one pixel, 2^33+1 frames", geometry{1, 1, 1, 8, "8589934593", 2}, "Number of Frames"},
		{"no samples", geometry{16, 16, 0, 8, "", 256}, "Samples per Pixel 0"},
		{"frames past the data", geometry{16, 16, 1, 8, "1000", 256}, "need"},
		{"frames not a number", geometry{16, 16, 1, 8, "3.5", 256 * 3}, "Number of Frames"},
		{"no frames", geometry{16, 16, 1, 8, "0", 256}, "Number of Frames"},
		{"1-bit", geometry{64, 64, 1, 1, "", 512}, "1 bits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tt.g
			ds := []pipelinetest.Elem{
				pipelinetest.Str(pipelinetest.Tag(0x0008, 0x0016), "UI", "1.2.840.10008.5.1.4.1.1.7"),
				pipelinetest.Str(pipelinetest.Tag(0x0008, 0x0018), "UI", "2.25.7"),
				pipelinetest.U16(pipelinetest.Tag(0x0028, 0x0002), g.samples),
				pipelinetest.Str(pipelinetest.Tag(0x0028, 0x0004), "CS", "MONOCHROME2"),
			}
			if g.frames != "" {
				ds = append(ds, pipelinetest.Str(pipelinetest.Tag(0x0028, 0x0008), "IS", g.frames))
			}
			ds = append(ds,
				pipelinetest.U16(pipelinetest.Tag(0x0028, 0x0010), g.rows),
				pipelinetest.U16(pipelinetest.Tag(0x0028, 0x0011), g.cols),
				pipelinetest.U16(pipelinetest.Tag(0x0028, 0x0100), g.bits),
				pipelinetest.U16(pipelinetest.Tag(0x0028, 0x0101), g.bits),
				pipelinetest.U16(pipelinetest.Tag(0x0028, 0x0102), g.bits-1),
				pipelinetest.U16(pipelinetest.Tag(0x0028, 0x0103), 0),
				pipelinetest.Raw(pipelinetest.Tag(0x7FE0, 0x0010), "OB", make([]byte, g.pixels+g.pixels%2)),
			)
			obj := pipelinetest.Part10(pipelinetest.Meta{SOPClassUID: "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID: "2.25.7",
				TransferSyntaxUID: tsExplicitLE}, ds)
			_, err := Render(bytes.NewReader(obj), int64(len(obj)), 32)
			if !errors.Is(err, ErrNoPreview) || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("Render = %v, want no preview naming %q", err, tt.why)
			}
		})
	}
}

// TestRenderOutOfTagOrder: an object whose Rows and Columns come after the
// other elements, out of tag order (PS3.5 §7.1), as the SCP stores it, is
// previewed as the same object in order is; one with Rows twice has no
// preview, the reader's verdict.
func TestRenderOutOfTagOrder(t *testing.T) {
	in := pipelinetest.Instance{StudyUID: "1.2.3", SeriesUID: "1.2.3.4", SOPUID: "1.2.3.4.5", Rows: 24, Columns: 32,
		Extra: []pipelinetest.Elem{pipelinetest.U16(tag(0x28, 0x02), 1), pipelinetest.Str(tag(0x28, 0x04), "CS", "MONOCHROME2")}}
	want, err := Render(bytes.NewReader(in.Build()), int64(len(in.Build())), 64)
	if err != nil {
		t.Fatal(err)
	}
	rows, cols := pipelinetest.Tag(0x28, 0x10), pipelinetest.Tag(0x28, 0x11)
	for _, tt := range []struct {
		name    string
		late    []uint32
		wantErr error
	}{
		{"Rows and Columns last, reversed", []uint32{cols, rows}, nil},
		{"Rows twice", []uint32{rows, cols, rows}, dataset.ErrRepeated},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in.Late = tt.late
			b := in.Build()
			got, err := Render(bytes.NewReader(b), int64(len(b)), 64)
			if tt.wantErr != nil {
				if !errors.Is(err, ErrNoPreview) || !errors.Is(err, tt.wantErr) {
					t.Fatalf("Render = %v, want no preview: %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Error("the preview differs from the object's in tag order")
			}
		})
	}
}

// TestRendererCacheBound: the answers kept take at most CacheBytes (each
// charged entryCost), the least recently used dropped first: a dropped
// key is rendered again, a kept one is not; an answer larger than the
// whole bound is not kept, and drops nothing.
func TestRendererCacheBound(t *testing.T) {
	body, err := os.ReadFile(filepath.Join("testdata", "native-ct.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := Render(bytes.NewReader(body), int64(len(body)), DefaultEdge)
	if err != nil {
		t.Fatal(err)
	}
	one := entryCost("a", want, nil) // every key here is one byte long
	tests := []struct {
		name    string
		bound   int64
		keys    []string
		renders map[string]int
	}{
		// c drops b (a was used since), b drops c, a stays throughout.
		{"two fit", 2*one + one/2, []string{"a", "b", "a", "c", "a", "b", "a"}, map[string]int{"a": 1, "b": 2, "c": 1}},
		{"one fits", one, []string{"a", "a", "b", "a"}, map[string]int{"a": 2, "b": 1}},
		{"none fits", one - 1, []string{"a", "a", "b", "a"}, map[string]int{"a": 3, "b": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rendered := map[string]int{} // a render's first read is at offset 0
			r := New(func(_ context.Context, key string, offset, length int64) (io.ReadCloser, error) {
				if offset == 0 {
					rendered[key]++
				}
				return io.NopCloser(io.NewSectionReader(bytes.NewReader(body), offset, length)), nil
			}, Options{CacheBytes: tt.bound, Concurrency: 1})
			for _, key := range tt.keys {
				if _, err := r.PNG(context.Background(), key, int64(len(body)), tsExplicitLE); err != nil {
					t.Fatal(err)
				}
				if held := r.cache.held(); held > tt.bound {
					t.Fatalf("after %q the cache holds %d bytes, over its bound %d", key, held, tt.bound)
				}
			}
			if !maps.Equal(rendered, tt.renders) {
				t.Errorf("renders %v, want %v", rendered, tt.renders)
			}
		})
	}
}

// TestRendererRendersOnce: a request for a key while it is being
// rendered waits for that render and takes its answer: one render.
func TestRendererRendersOnce(t *testing.T) {
	body, err := os.ReadFile(filepath.Join("testdata", "native-ct.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	var renders atomic.Int32
	started, release := make(chan struct{}), make(chan struct{})
	r := New(func(_ context.Context, key string, offset, length int64) (io.ReadCloser, error) {
		if offset == 0 && key == "a" {
			if renders.Add(1) == 1 {
				close(started)
			}
			<-release // held until the second request waits on this render
		}
		return io.NopCloser(io.NewSectionReader(bytes.NewReader(body), offset, length)), nil
	}, Options{Concurrency: 2})
	joined := make(chan string, 3)
	r.joined = func(key string) { joined <- key }
	type answer struct {
		png []byte
		err error
	}
	answers := make(chan answer, 2)
	get := func() {
		b, err := r.PNG(context.Background(), "a", int64(len(body)), tsExplicitLE)
		answers <- answer{b, err}
	}
	go get()
	<-started // the first request renders
	go get()
	if k := <-joined; k != "a" {
		t.Fatalf("joined %q", k)
	}
	if k := <-joined; k != "a" { // the second waits on the same render
		t.Fatalf("joined %q", k)
	}
	close(release)
	first, second := <-answers, <-answers
	if first.err != nil || second.err != nil {
		t.Fatalf("answers: %v, %v", first.err, second.err)
	}
	if !bytes.Equal(first.png, second.png) {
		t.Error("the two requests got different PNGs")
	}
	if n := renders.Load(); n != 1 {
		t.Errorf("%d renders of one key for two requests at once, want 1", n)
	}
	// Cached now: no render, and no wait.
	if _, err := r.PNG(context.Background(), "a", int64(len(body)), tsExplicitLE); err != nil || renders.Load() != 1 {
		t.Errorf("a third request: %v, %d renders", err, renders.Load())
	}
}

// TestRendererLeaderGoesAway: when the request whose render the others
// wait on goes away, its render ends and one of the waiters renders the
// key again, the others waiting on that render: two renders, however many
// wait, each waiter answered with the PNG and the one gone with its
// context's error.
func TestRendererLeaderGoesAway(t *testing.T) {
	body, err := os.ReadFile(filepath.Join("testdata", "native-ct.dcm"))
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 3
	var renders atomic.Int32
	started := make(chan struct{})
	r := New(func(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
		if offset == 0 && renders.Add(1) == 1 {
			close(started)
			<-ctx.Done() // the first render lasts until its request goes away
			return nil, ctx.Err()
		}
		return io.NopCloser(io.NewSectionReader(bytes.NewReader(body), offset, length)), nil
	}, Options{Concurrency: 2})
	joined := make(chan string, 4*waiters)
	r.joined = func(key string) { joined <- key }
	leaderCtx, leave := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		_, err := r.PNG(leaderCtx, "a", int64(len(body)), tsExplicitLE)
		gone <- err
	}()
	<-started
	<-joined
	type answer struct {
		png []byte
		err error
	}
	answers := make(chan answer, waiters)
	for range waiters {
		go func() {
			b, err := r.PNG(context.Background(), "a", int64(len(body)), tsExplicitLE)
			answers <- answer{b, err}
		}()
	}
	for range waiters {
		<-joined // each waits on the first render
	}
	leave()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Errorf("the request gone: %v, want its context's error", err)
	}
	for range waiters {
		if a := <-answers; a.err != nil || len(a.png) == 0 {
			t.Errorf("a waiter: %d bytes, %v", len(a.png), a.err)
		}
	}
	if n := renders.Load(); n != 2 {
		t.Errorf("%d renders, want 2: the one abandoned and one for all %d waiters", n, waiters)
	}
	// No render goroutine outlives its answer.
	testenv.NoGoroutines(t, 5*time.Second, "thumbnail.(*Renderer).render", "singleflight.(*Group).doCall")
}

// TestLargestPreview: the largest answer is an RGB thumbnail of
// DefaultEdge × DefaultEdge that does not compress, written with three
// bytes a pixel (every image encoded is opaque): about 108 KiB, so
// DefaultCacheBytes holds about 300 of them, as configuration.md says.
func TestLargestPreview(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	img := image.NewRGBA(image.Rect(0, 0, DefaultEdge, DefaultEdge))
	for i := range img.Pix {
		img.Pix[i] = byte(r.UintN(256))
		if i%4 == 3 {
			img.Pix[i] = 255
		}
	}
	b, err := encode(img)
	if err != nil {
		t.Fatal(err)
	}
	if kib := len(b) / 1024; kib != 108 {
		t.Errorf("the largest preview is %d bytes (%d KiB), want 108 KiB", len(b), kib)
	}
	if n := DefaultCacheBytes / entryCost("study/series/object-key", b, nil); n < 290 || n > 310 {
		t.Errorf("DefaultCacheBytes holds %d of the largest previews, want about 300", n)
	}
}
