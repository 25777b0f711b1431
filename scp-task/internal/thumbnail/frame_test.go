package thumbnail

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"image"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// countingAt counts the bytes read through it.
type countingAt struct {
	r     io.ReaderAt
	bytes atomic.Int64
	reads atomic.Int64
}

func (c *countingAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.bytes.Add(int64(n))
	c.reads.Add(1)
	return n, err
}

var tag = pipelinetest.Tag

// imageHeader is a Part 10 object up to Pixel Data: an 8-bit greyscale
// image of cols × rows × frames, windowed so a stored value v shows as
// about v.
func imageHeader(ts string, cols, rows uint16, frames string, more ...pipelinetest.Elem) []byte {
	ds := []pipelinetest.Elem{
		pipelinetest.Str(tag(0x0008, 0x0016), "UI", "1.2.840.10008.5.1.4.1.1.7.2"),
		pipelinetest.Str(tag(0x0008, 0x0018), "UI", "2.25.8"),
		pipelinetest.U16(tag(0x0028, 0x0002), 1),
		pipelinetest.Str(tag(0x0028, 0x0004), "CS", "MONOCHROME2"),
		pipelinetest.Str(tag(0x0028, 0x0008), "IS", frames),
		pipelinetest.U16(tag(0x0028, 0x0010), rows),
		pipelinetest.U16(tag(0x0028, 0x0011), cols),
		pipelinetest.U16(tag(0x0028, 0x0100), 8),
		pipelinetest.U16(tag(0x0028, 0x0101), 8),
		pipelinetest.U16(tag(0x0028, 0x0102), 7),
		pipelinetest.U16(tag(0x0028, 0x0103), 0),
		pipelinetest.Str(tag(0x0028, 0x1050), "DS", "128"),
		pipelinetest.Str(tag(0x0028, 0x1051), "DS", "256"),
	}
	ds = append(ds, more...)
	return pipelinetest.Part10(pipelinetest.Meta{SOPClassUID: "1.2.840.10008.5.1.4.1.1.7.2", SOPInstanceUID: "2.25.8", TransferSyntaxUID: ts}, ds)
}

// framedObject is a native multi-frame object that is never held: its
// header, then frames whose every byte is the frame's number (mod 256).
type framedObject struct {
	head       []byte // through the Pixel Data element's header
	frameBytes int64
	size       int64
}

func newFramedObject(cols, rows uint16, frames int) *framedObject {
	head := imageHeader(tsExplicitLE, cols, rows, strconv.Itoa(frames))
	frame := int64(cols) * int64(rows)
	head = append(head, 0xE0, 0x7F, 0x10, 0x00, 'O', 'B', 0, 0)
	head = binary.LittleEndian.AppendUint32(head, uint32(frame*int64(frames)))
	return &framedObject{head: head, frameBytes: frame, size: int64(len(head)) + frame*int64(frames)}
}

func (o *framedObject) ReadAt(p []byte, off int64) (int, error) {
	if off >= o.size {
		return 0, io.EOF
	}
	n := 0
	for ; n < len(p) && off < o.size; n, off = n+1, off+1 {
		if off < int64(len(o.head)) {
			p[n] = o.head[off]
		} else {
			p[n] = byte((off - int64(len(o.head))) / o.frameBytes)
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestRenderReadsOneFrame: the preview of a 1 GiB multi-frame object,
// through a Renderer and its ranged Opener, reads the header and the
// middle frame (about 256 KiB in all) and allocates about that; before,
// an object above 64 MiB got no preview, and one below was read whole
// into memory (about twice its size allocated).
func TestRenderReadsOneFrame(t *testing.T) {
	const frames = 4096
	obj := newFramedObject(512, 512, frames) // 1 GiB of 256 KiB frames
	at := &countingAt{r: obj}
	r := New(func(_ context.Context, _ string, off, n int64) (io.ReadCloser, error) {
		return io.NopCloser(io.NewSectionReader(at, off, n)), nil
	}, Options{})
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	out, err := r.PNG(context.Background(), "big", obj.size, tsExplicitLE)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if read, limit := at.bytes.Load(), obj.frameBytes+8<<10; read > limit {
		t.Errorf("read %d bytes in %d reads of a %d MiB object, more than a frame and the header (%d)", read, at.reads.Load(), obj.size>>20, limit)
	}
	if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(4*obj.frameBytes+4<<20); got > limit {
		t.Errorf("allocated %d KiB for a frame of %d KiB, more than %d KiB", got>>10, obj.frameBytes>>10, limit>>10)
	}
	// The middle frame (2048, stored as 0) windowed 128±128: black; its
	// neighbours would be light.
	if g := grey(decodePNG(t, out).At(10, 10)); g != 0 {
		t.Errorf("grey %d, want 0 (the middle frame, 2048 mod 256)", g)
	}
}

// jpegFrame encodes a cols × rows greyscale frame of noise (so it does not
// compress away) with a corner block of the value v.
func jpegFrame(t testing.TB, cols, rows, v int, rnd *rand.Rand) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, cols, rows))
	for i := range img.Pix {
		img.Pix[i] = byte(rnd.IntN(256))
	}
	for y := range rows / 4 {
		for x := range cols / 4 {
			img.Pix[y*img.Stride+x] = byte(v)
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	if b.Len()%2 == 1 {
		b.WriteByte(0) // fragments have even lengths
	}
	return b.Bytes()
}

// layout is where an encapsulated test object says its frames lie.
type layout int

const (
	noTable       layout = iota // an empty Basic Offset Table
	basicTable                  // a Basic Offset Table
	extendedTable               // an empty Basic Offset Table and an Extended Offset Table
)

// item appends an item of value v to b.
func item(b []byte, v []byte) []byte {
	b = append(b, 0xFE, 0xFF, 0x00, 0xE0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// encapsulatedParts builds a JPEG Baseline object of the frames, each split
// into n fragments (split), repeated times over, in three
// parts: the header through the Basic Offset Table, the frames' items
// (once: the object holds them times over), and the sequence delimiter.
func encapsulatedParts(frames [][]byte, n int, l layout, times int) (head, body, tail []byte) {
	var starts []int
	for _, f := range frames {
		starts = append(starts, len(body))
		for _, piece := range split(f, n) {
			body = item(body, piece)
		}
	}
	var bot, offsets, lengths []byte
	for r := range times {
		for k, f := range frames {
			at := r*len(body) + starts[k]
			bot = binary.LittleEndian.AppendUint32(bot, uint32(at))
			offsets = binary.LittleEndian.AppendUint64(offsets, uint64(at))
			lengths = binary.LittleEndian.AppendUint64(lengths, uint64(len(f)))
		}
	}
	var more []pipelinetest.Elem
	switch l {
	case noTable:
		bot = nil
	case extendedTable:
		bot = nil
		more = []pipelinetest.Elem{pipelinetest.Raw(tag(0x7FE0, 0x0001), "OV", offsets), pipelinetest.Raw(tag(0x7FE0, 0x0002), "OV", lengths)}
	}
	head = imageHeader(tsJPEGBaseline, 0, 0, strconv.Itoa(len(frames)*times), more...)
	head = append(head, 0xE0, 0x7F, 0x10, 0x00, 'O', 'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF)
	return item(head, bot), body, []byte{0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0}
}

// encapsulated builds a JPEG Baseline object of the frames, each split
// into n fragments, laid out as l says.
func encapsulated(frames [][]byte, n int, l layout) []byte {
	head, body, tail := encapsulatedParts(frames, n, l, 1)
	return slices.Concat(head, body, tail)
}

// jpegObject is a JPEG Baseline object of n 256 × 256 frames whose corner
// shows 20 × the frame's number (Rows and Columns 0: the renderer reads
// the JPEG's own size), and its frames.
func jpegObject(t testing.TB, n, split int, l layout) ([]byte, [][]byte) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(1, 2))
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = jpegFrame(t, 256, 256, 20*i, rnd)
	}
	return encapsulated(frames, split, l), frames
}

// TestRenderJPEGReadsOneFrame: in encapsulated JPEG Baseline the middle
// frame is found by the Basic Offset Table or, without one, by counting
// fragments; only its fragments are read, with the item headers walked
// on the way (a small read after each skipped fragment).
func TestRenderJPEGReadsOneFrame(t *testing.T) {
	tests := []struct {
		name   string
		frames int
		split  int
		layout layout
	}{
		{"offset table", 15, 1, basicTable},
		{"no offset table", 15, 1, noTable},
		{"offset table, frames of three fragments", 15, 3, basicTable},
		{"one frame of three fragments", 1, 3, noTable},
		{"extended offset table", 15, 1, extendedTable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj, frames := jpegObject(t, tt.frames, tt.split, tt.layout)
			at := &countingAt{r: bytes.NewReader(obj)}
			out, err := Render(at, int64(len(obj)), 64)
			if err != nil {
				t.Fatal(err)
			}
			mid := len(frames) / 2
			// The header, the frame, and a read of at most 512 bytes
			// after each skipped fragment.
			limit := int64(len(frames[mid])) + 4<<10 + int64(mid*tt.split+1)*firstChunk
			if read := at.bytes.Load(); read > limit {
				t.Errorf("read %d bytes of %d, more than the frame's %d and the headers (%d)", read, len(obj), len(frames[mid]), limit)
			}
			if g, want := int(grey(decodePNG(t, out).At(4, 4))), 20*mid; g < want-8 || g > want+8 {
				t.Errorf("corner grey %d, want the middle frame's ~%d", g, want)
			}
		})
	}
}

// TestRenderRefusesLyingOffsets: offsets and lengths in the pixel data
// that do not hold give no preview, never a panic or an allocation of
// what they declare.
func TestRenderRefusesLyingOffsets(t *testing.T) {
	obj, frames := jpegObject(t, 5, 1, basicTable)
	pixel := bytes.Index(obj, []byte{0xE0, 0x7F, 0x10, 0x00, 'O', 'B'}) + 12
	bot := pixel + 8                                     // the offset table's value
	first := bot + 4*len(frames)                         // the first fragment's item header
	mid := first + 8*2 + len(frames[0]) + len(frames[1]) // the middle frame's
	set := func(at int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[at:], v); return b }
	}
	native := func(b []byte) []byte { return b }
	tests := []struct {
		name   string
		change func([]byte) []byte
		why    string
		is     error // also wrapped, when set
	}{
		{"fragment past the end", set(mid+4, uint32(len(obj)-mid)), "ends inside", dataset.ErrTruncated},
		{"fragment of 4 GiB", set(mid+4, 0xFFFFFFF0), "above the 67108864 byte limit", nil},
		{"fragment longer than it is", set(mid+4, uint32(len(frames[2])+8)), "malformed", dataset.ErrMalformed},
		{"fragment shorter than it is", set(mid+4, uint32(len(frames[2])-64)), "malformed", dataset.ErrMalformed},
		{"table entry inside a fragment", set(bot+8, uint32(8+len(frames[0])+8+100)), "not where a fragment starts", nil},
		{"table entry past the fragments", set(bot+8, 1<<30), "past the object's end", dataset.ErrTruncated},
		{"table past the end", set(pixel+4, 0xFFFFFFF0), "ends inside", dataset.ErrTruncated},
		{"truncated in the frame", func(b []byte) []byte { return b[:mid+100] }, "entry 3 (", dataset.ErrTruncated},
		{"4e9 frames", func(b []byte) []byte {
			return bytes.Replace(b, []byte("IS\x02\x005 "), []byte("IS\x0a\x004000000000"), 1)
		}, "5 frames found by their JPEG markers, 4000000000 in Number of Frames", nil},
		{"JPEG of 65535 × 65535", func(b []byte) []byte {
			sof := mid + 8 + bytes.Index(b[mid+8:], []byte{0xFF, 0xC0}) // height and width follow length and precision
			copy(b[sof+5:], []byte{0xFF, 0xFF, 0xFF, 0xFF})
			return b
		}, "above the", nil},
		{"unchanged", native, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.change(bytes.Clone(obj))
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Render(bytes.NewReader(b), int64(len(b)), 32)
			runtime.ReadMemStats(&after)
			if tt.why == "" {
				if err != nil {
					t.Fatalf("unchanged object: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrNoPreview) || !strings.Contains(err.Error(), tt.why) || tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("Render = %v, want no preview naming %q", err, tt.why)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
				t.Errorf("allocated %d MiB", got>>20)
			}
		})
	}
}

// TestRenderDeflatedBomb: a deflated object is inflated under the SCP's
// rule (at most dataset.InflateAllowance plus dataset.MaxInflateRatio
// bytes per stored byte), whoever stored it: a blank value inflating
// past it before the pixel data is no preview, ErrLimit; within it the
// frame is shown. Before, the renderer built its own inflater, bounded
// only at 256 MiB inflated, and rendered the 64 MiB bomb (64 KiB
// stored). The blank value is streamed into the deflater (BestSpeed,
// about 824 times for zeros: past the allowance by an eighth is past the
// rule), never held.
func TestRenderDeflatedBomb(t *testing.T) {
	tests := []struct {
		name    string
		blank   uint32
		wantErr error
	}{
		{"within the allowance", dataset.InflateAllowance, nil},
		{"past the allowance and the ratio", dataset.InflateAllowance * 5 / 4, dataset.ErrLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := imageHeader(tsDeflatedLE, 8, 8, "1", pipelinetest.Elem{Tag: tag(0x0029, 0x1010), VR: "OB"})
			obj = append(obj, 0xE0, 0x7F, 0x10, 0x00, 'O', 'B', 0, 0, 64, 0, 0, 0)
			obj = pipelinetest.DeflatedBlank(append(obj, make([]byte, 64)...), tag(0x0029, 0x1010), tt.blank)
			_, err := Render(bytes.NewReader(obj), int64(len(obj)), 32)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Render = %v, want a preview", err)
				}
				return
			}
			if !errors.Is(err, ErrNoPreview) || !errors.Is(err, tt.wantErr) {
				t.Fatalf("Render = %v, want no preview: %v", err, tt.wantErr)
			}
		})
	}
}
