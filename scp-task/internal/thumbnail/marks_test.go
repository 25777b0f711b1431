package thumbnail

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
)

// withFrames is obj with Number of Frames n instead of was.
func withFrames(t testing.TB, obj []byte, was, n int) []byte {
	t.Helper()
	is := func(n int) []byte {
		v := strconv.Itoa(n)
		if len(v)%2 == 1 {
			v += " "
		}
		return append([]byte{'I', 'S', byte(len(v)), 0}, v...)
	}
	old := is(was)
	if !bytes.Contains(obj, old) {
		t.Fatalf("no Number of Frames %d in the object", was)
	}
	return bytes.Replace(obj, old, is(n), 1)
}

// split is frame f in n pieces of even length (the last the rest): a
// frame's fragments.
func split(f []byte, n int) [][]byte {
	var out [][]byte
	size := (len(f)/n + 1) &^ 1
	for i := 0; i < len(f); i += size {
		out = append(out, f[i:min(i+size, len(f))])
	}
	return out
}

// oddJPEG is frame f (a JPEG padded to even length) with its data made odd
// by a one-byte comment after SOI, then padded: it ends FFD9 00.
func oddJPEG(t *testing.T, f []byte) []byte {
	t.Helper()
	f = bytes.TrimSuffix(f, []byte{0})
	if len(f)%2 == 0 {
		f = slices.Concat(f[:2], []byte{0xFF, 0xFE, 0x00, 0x03, 'x'}, f[2:])
	}
	return append(f, 0)
}

// TestRenderJPEGFramesByMarkers: with an empty Basic Offset Table, frames
// that span fragments are found by their JPEG markers (SOI at a frame's
// first fragment, EOI at its last, with a pad byte or not) or by an
// Extended Offset Table, and the middle one renders as it does from one
// fragment a frame; frames whose markers do not tell them apart, or that
// are not Number of Frames, get no preview, never another frame. Reads
// stay the frame, the header, and a read of an item header (with the
// end of the fragment before it) a fragment.
func TestRenderJPEGFramesByMarkers(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	frames := make([][]byte, 15)
	for i := range frames {
		frames[i] = jpegFrame(t, 128, 128, 16*i, rnd)
	}
	const mid = 7
	padded := slices.Clone(frames)
	padded[mid] = oddJPEG(t, frames[mid])
	noEOI := func(k int) [][]byte {
		c := slices.Clone(frames)
		f := bytes.TrimSuffix(c[k], []byte{0})
		c[k] = slices.Concat(f[:len(f)-2], []byte{0, 0, 0, 0}[:2+len(f)%2])
		return c
	}
	var pieces [][]byte // frames of 1, 2 and 3 fragments, as frames of one
	for k, f := range frames {
		pieces = append(pieces, split(f, 1+k%3)...)
	}
	junk := slices.Concat(frames[:3], [][]byte{{0x00, 0x11, 0xFF, 0xD9}}, frames[3:14])
	tests := []struct {
		name   string
		obj    []byte
		frame  []byte // the middle frame's data, the last byte a pad or not
		noPrev string // ErrNoPreview with this in the reason
		half   bool   // the walk stops after the middle frame: about half the item headers read
	}{
		{name: "one fragment a frame", obj: encapsulated(frames, 1, noTable), half: true},
		{name: "two fragments a frame", obj: encapsulated(frames, 2, noTable)},
		{name: "three fragments a frame", obj: encapsulated(frames, 3, noTable)},
		{name: "one, two or three fragments a frame", obj: withFrames(t, encapsulated(pieces, 1, noTable), len(pieces), 15)},
		{name: "trailing pad byte", obj: encapsulated(padded, 3, noTable), frame: padded[mid]},
		{name: "extended offset table, one fragment a frame", obj: encapsulated(frames, 1, extendedTable)},
		{name: "extended offset table, three fragments a frame", obj: encapsulated(frames, 3, extendedTable)},
		{name: "extended offset table, trailing pad byte", obj: encapsulated(padded, 2, extendedTable), frame: padded[mid]},
		{name: "a frame before the middle without EOI", obj: encapsulated(noEOI(3), 2, noTable), noPrev: "frame 4: a fragment starts with SOI before its EOI"},
		{name: "the middle frame without EOI", obj: encapsulated(noEOI(mid), 2, noTable), noPrev: "frame 8: a fragment starts with SOI before its EOI"},
		{name: "the last frame without EOI", obj: encapsulated(noEOI(14), 2, noTable), noPrev: "frame 15: no EOI by the last fragment"},
		{name: "one frame fewer than Number of Frames", obj: withFrames(t, encapsulated(frames, 2, noTable), 15, 16), noPrev: "15 frames found by their JPEG markers, 16 in Number of Frames"},
		{name: "one frame more than Number of Frames", obj: withFrames(t, encapsulated(frames, 2, noTable), 15, 14), noPrev: "15 frames found by their JPEG markers, 14 in Number of Frames"},
		{name: "a fragment between frames without SOI", obj: encapsulated(junk, 2, noTable), noPrev: "frame 4: its first fragment does not start with SOI"},
		{name: "a fragment between frames without SOI, one fragment a frame", obj: encapsulated(junk, 1, noTable), noPrev: "frame 4: its first fragment does not start with SOI"},
	}
	// The reference: the middle frame from one fragment a frame, found by
	// counting them, as before.
	ref, err := Render(bytes.NewReader(encapsulated(frames, 1, basicTable)), int64(len(encapsulated(frames, 1, basicTable))), 192)
	if err != nil {
		t.Fatal(err)
	}
	refPad, err := Render(bytes.NewReader(encapsulated(padded, 1, basicTable)), int64(len(encapsulated(padded, 1, basicTable))), 192)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := &countingAt{r: bytes.NewReader(tt.obj)}
			out := renderAs(t, at, int64(len(tt.obj)), tt.noPrev)
			if out == nil {
				return
			}
			want := ref
			if tt.frame != nil {
				if !bytes.HasSuffix(tt.frame, []byte{0xFF, 0xD9, 0}) {
					t.Fatalf("the frame ends %x, not with a pad byte after EOI", tt.frame[len(tt.frame)-3:])
				}
				want = refPad
			}
			if !samePixels(decodePNG(t, out), decodePNG(t, want)) {
				t.Error("the middle frame differs from the one rendered from one fragment a frame")
			}
			fragments := int64(bytes.Count(tt.obj, []byte{0xFE, 0xFF, 0x00, 0xE0}))
			limit := int64(len(frames[mid])) + 4<<10 + fragments*(firstChunk+jpegTail)
			if read := at.bytes.Load(); read > limit {
				t.Errorf("read %d bytes of %d in %d reads, more than the frame's %d, the header and the item headers (%d)", read, len(tt.obj), at.reads.Load(), len(frames[mid]), limit)
			}
			if reads := at.reads.Load(); reads > fragments+8 {
				t.Errorf("%d reads for %d items: more than one an item and the header's", reads, fragments)
			}
			if reads := at.reads.Load(); tt.half && reads > fragments/2+4 {
				t.Errorf("%d reads for %d items: the walk went on past the middle frame", reads, fragments)
			}
		})
	}
}

// TestRenderDCMTKFragmented: DCMTK's dcmcjpeg, asked for fragments of
// 1 KiB and an empty offset table (testdata/make-fixtures.py), writes
// frames the renderer finds by their markers: the middle one renders as
// from one fragment a frame with an offset table (dcmcjpeg's default).
func TestRenderDCMTKFragmented(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	fragmented, whole := read("jpeg-fragmented.dcm"), read("jpeg-multiframe.dcm")
	items := []byte{0xFE, 0xFF, 0x00, 0xE0}
	if n := bytes.Count(fragmented, items); n <= 6 || !bytes.Contains(fragmented, append(items, 0, 0, 0, 0)) {
		t.Fatalf("%d items, want more than 5 frames' and an empty offset table", n)
	}
	at := &countingAt{r: bytes.NewReader(fragmented)}
	got, err := Render(at, int64(len(fragmented)), 192)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Render(bytes.NewReader(whole), int64(len(whole)), 192)
	if err != nil {
		t.Fatal(err)
	}
	img := decodePNG(t, got)
	if !samePixels(img, decodePNG(t, want)) {
		t.Error("the middle frame differs from the one rendered from one fragment a frame")
	}
	if g := grey(img.At(5, 5)); g < 92 || g > 108 {
		t.Errorf("corner grey %d, want the middle frame's ~100", g)
	}
	t.Logf("read %d bytes of %d in %d reads", at.bytes.Load(), len(fragmented), at.reads.Load())
}

func samePixels(a, b image.Image) bool {
	if a.Bounds() != b.Bounds() {
		return false
	}
	for y := a.Bounds().Min.Y; y < a.Bounds().Max.Y; y++ {
		for x := a.Bounds().Min.X; x < a.Bounds().Max.X; x++ {
			if a.At(x, y) != b.At(x, y) {
				return false
			}
		}
	}
	return true
}

// TestRenderRefusesLyingExtendedOffsets: an Extended Offset Table whose
// entry is not where a fragment starts, or whose length is not the
// frame's, gives no preview.
func TestRenderRefusesLyingExtendedOffsets(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 8))
	frames := make([][]byte, 5)
	for i := range frames {
		frames[i] = jpegFrame(t, 64, 64, 40*i, rnd)
	}
	obj := encapsulated(frames, 1, extendedTable)
	table := bytes.Index(obj, []byte{0xE0, 0x7F, 0x01, 0x00, 'O', 'V'}) + 12
	lengths := bytes.Index(obj, []byte{0xE0, 0x7F, 0x02, 0x00, 'O', 'V'}) + 12
	set := func(at int, v uint64) []byte {
		b := bytes.Clone(obj)
		binary.LittleEndian.PutUint64(b[at:], v)
		return b
	}
	tests := []struct {
		name string
		obj  []byte
		why  string
	}{
		{"entry inside a fragment", set(table+16, uint64(8+len(frames[0])+8+100)), "not where a fragment starts"},
		{"entry past 2^63", set(table+16, 1<<63+5), "past the object's end"},
		{"length longer than the frame", set(lengths+16, uint64(len(frames[2])+2)), "extended offset table length"},
		{"length shorter than the frame", set(lengths+16, uint64(len(frames[2])-2)), "extended offset table length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(bytes.NewReader(tt.obj), int64(len(tt.obj)), 32)
			if !errors.Is(err, ErrNoPreview) || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("Render = %v, want no preview naming %q", err, tt.why)
			}
		})
	}
}

// TestRenderJPEGCost: the middle frame of a 1,200-frame JPEG Baseline
// object, through its ranged reads: the bytes read, the reads (one request
// each through a Renderer) and the bytes allocated, for each layout;
// logged with -v. Frames found by their markers walk every item header
// (3,601 reads for 3,600 fragments); frames of one fragment, found by
// counting, half of them, as before. With an offset table the reader
// jumps to the frame: 5 reads for frames of one fragment, 9 of three, 8
// by the Extended Offset Table (605, 1,809 and 607 when it walked the
// item headers up to the frame).
func TestRenderJPEGCost(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 70 MB object")
	}
	rnd := rand.New(rand.NewPCG(9, 10))
	pool := make([][]byte, 12)
	for i := range pool {
		pool[i] = jpegFrame(t, 256, 256, 20*i, rnd)
	}
	const times = 100 // 1,200 frames
	tests := []struct {
		name   string
		split  int
		layout layout
	}{
		{"offset table, one fragment a frame", 1, basicTable},
		{"offset table, three fragments a frame", 3, basicTable},
		{"no offset table, one fragment a frame", 1, noTable},
		{"no offset table, three fragments a frame", 3, noTable},
		{"extended offset table, one fragment a frame", 1, extendedTable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head, body, tail := encapsulatedParts(pool, tt.split, tt.layout, times)
			obj := &repeatedObject{head: head, body: body, tail: tail, times: times}
			at := &countingAt{r: obj}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			out, err := Render(at, obj.size(), 64)
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d MiB object, %d fragments: %v; read %d KiB in %d reads, allocated %d KiB",
				obj.size()>>20, len(pool)*tt.split*times, err, at.bytes.Load()>>10, at.reads.Load(), alloc>>10)
			if err != nil {
				t.Fatal(err)
			}
			mid := len(pool) * times / 2
			if g, want := int(grey(decodePNG(t, out).At(4, 4))), 20*(mid%len(pool)); g < want-8 || g > want+8 {
				t.Errorf("corner grey %d, want the middle frame's ~%d", g, want)
			}
			fragments := int64(len(pool) * tt.split * times)
			if read, limit := at.bytes.Load(), int64(len(pool[0]))+16<<10+(fragments+1)*(firstChunk+jpegTail); read > limit {
				t.Errorf("read %d bytes, more than the frame, the header and the item headers (%d)", read, limit)
			}
			if alloc > 4<<20 {
				t.Errorf("allocated %d KiB", alloc>>10)
			}
			// With a table the walk is the frame's item headers alone.
			if reads := at.reads.Load(); tt.layout != noTable && reads > int64(8+2*tt.split) {
				t.Errorf("%d reads, more than the header's, the table's and the frame's (%d)", reads, 8+2*tt.split)
			}
		})
	}
}

// repeatedObject is an object that is never held: head, body times over,
// tail.
type repeatedObject struct {
	head, body, tail []byte
	times            int64
}

func (o *repeatedObject) size() int64 {
	return int64(len(o.head)) + o.times*int64(len(o.body)) + int64(len(o.tail))
}

func (o *repeatedObject) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) && off < o.size() {
		var c int
		switch rel := off - int64(len(o.head)); {
		case rel < 0:
			c = copy(p[n:], o.head[off:])
		case rel < o.times*int64(len(o.body)):
			c = copy(p[n:], o.body[rel%int64(len(o.body)):])
		default:
			c = copy(p[n:], o.tail[rel-o.times*int64(len(o.body)):])
		}
		n, off = n+c, off+int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestRenderBoundsTheWalkToTheFrame: the item headers walked to reach the
// middle frame are bounded (maxWalkedFragments), whatever the layout: an
// object of a million one-fragment frames of 422 bytes (410 MiB) took
// 250,003 ranged reads (each a file open in local mode, 1.8 s) for one
// preview, its work bounded by the object, not the frame. An offset table
// is jumped by, not walked: 200,000 and 1,000,000 frames, past the bound,
// preview in a few reads (before, no preview).
func TestRenderBoundsTheWalkToTheFrame(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	pool := [][]byte{jpegFrame(t, 8, 8, 10, rnd)}
	tests := []struct {
		name   string
		layout layout
		frames int
		fits   bool  // the middle frame is reached: within the bound, or by a table
		reads  int64 // at most
	}{
		{"no offset table, within the bound", noTable, 2*maxWalkedFragments - 4, true, maxWalkedFragments + 64},
		{"no offset table, past the bound", noTable, 2*maxWalkedFragments + 4, false, maxWalkedFragments + 64},
		{"offset table, past the bound", basicTable, 200_000, true, 12},
		{"extended offset table, past the bound", extendedTable, 1_000_000, true, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head, body, tail := encapsulatedParts(pool, 1, tt.layout, tt.frames)
			at := &countingAt{r: &repeatedObject{head: head, body: body, tail: tail, times: int64(tt.frames)}}
			_, err := Render(at, at.r.(*repeatedObject).size(), 32)
			switch {
			case tt.fits && err != nil:
				t.Fatalf("Render = %v, want the middle frame", err)
			case !tt.fits && (!errors.Is(err, ErrNoPreview) || !strings.Contains(err.Error(), "fragments walked")):
				t.Fatalf("Render = %v, want no preview naming the fragments walked", err)
			}
			// Each fragment walked costs a read at most, beside the
			// header's and the offset tables'.
			if reads := at.reads.Load(); reads > tt.reads {
				t.Errorf("%d reads for one preview, more than %d", reads, tt.reads)
			}
		})
	}
}

// tableEntry is where entry k of obj's offset table lies (l: the Basic
// one, the first item after Pixel Data's header, or the Extended one),
// and its width.
func tableEntry(obj []byte, l layout, k int) (int, int) {
	if l == extendedTable {
		return bytes.Index(obj, []byte{0xE0, 0x7F, 0x01, 0x00, 'O', 'V'}) + 12 + 8*k, 8
	}
	return bytes.Index(obj, []byte{0xE0, 0x7F, 0x10, 0x00, 'O', 'B'}) + 12 + 8 + 4*k, 4
}

func getEntry(obj []byte, l layout, k int) uint64 {
	at, w := tableEntry(obj, l, k)
	if w == 4 {
		return uint64(binary.LittleEndian.Uint32(obj[at:]))
	}
	return binary.LittleEndian.Uint64(obj[at:])
}

func setEntry(obj []byte, l layout, k int, v uint64) {
	at, w := tableEntry(obj, l, k)
	if w == 4 {
		binary.LittleEndian.PutUint32(obj[at:], uint32(v))
		return
	}
	binary.LittleEndian.PutUint64(obj[at:], v)
}

// tableLies are offset tables that do not hold: lie changes the table (l)
// of obj, an object (or its head) of frames frames, whose whole is size
// bytes, about its middle frame. TestRenderJumpsByTheOffsetTable expects
// each refused; FuzzRender starts from them.
var tableLies = []struct {
	name  string
	lie   func(t testing.TB, obj []byte, l layout, frames int, size int64) []byte
	why   string // in the no-preview error
	is    error  // also wrapped, when set
	entry int    // the entry named: 0 the middle frame's, 1 the next; -1 none
	walks bool   // refused by the walk, not by the jump
}{
	{"entry past the end", func(_ testing.TB, b []byte, l layout, frames int, size int64) []byte {
		setEntry(b, l, frames/2, uint64(size))
		setEntry(b, l, frames/2+1, uint64(size)+16)
		return b
	}, "past the object's end", dataset.ErrTruncated, 0, false},
	{"next entry past the end", func(_ testing.TB, b []byte, l layout, frames int, size int64) []byte {
		setEntry(b, l, frames/2+1, uint64(size))
		return b
	}, "past the object's end", dataset.ErrTruncated, 1, false},
	{"entry not on an item", func(_ testing.TB, b []byte, l layout, frames int, _ int64) []byte {
		setEntry(b, l, frames/2, getEntry(b, l, frames/2)+2)
		return b
	}, "not where a fragment starts", dataset.ErrMalformed, 0, false},
	{"entries decreasing", func(_ testing.TB, b []byte, l layout, frames int, _ int64) []byte {
		m, n := getEntry(b, l, frames/2), getEntry(b, l, frames/2+1)
		setEntry(b, l, frames/2, n)
		setEntry(b, l, frames/2+1, m)
		return b
	}, "do not increase", nil, -1, false},
	{"entries equal", func(_ testing.TB, b []byte, l layout, frames int, _ int64) []byte {
		setEntry(b, l, frames/2+1, getEntry(b, l, frames/2))
		return b
	}, "do not increase", nil, -1, false},
	{"huge count", func(_ testing.TB, b []byte, l layout, _ int, _ int64) []byte {
		// The table's own length: the Basic Offset Table's item's, the
		// Extended Offset Table's element's.
		at, _ := tableEntry(b, l, 0)
		binary.LittleEndian.PutUint32(b[at-4:], 0xFFFFFFF0)
		return b
	}, "ends inside", dataset.ErrTruncated, -1, false},
	{"not the frame count", func(t testing.TB, b []byte, _ layout, frames int, _ int64) []byte {
		return withFrames(t, b, frames, frames+2)
	}, "fragments walked", nil, -1, true},
}

// TestRenderJumpsByTheOffsetTable: with an offset table, Basic or
// Extended, the middle frame of a 200,001-frame object (a walk past the
// bound) is read from a jump to its first fragment, in a few reads of a
// few KiB (before, no preview: more than 16,384 fragments walked); a
// table whose entries do not hold (tableLies) is no preview, in as few,
// and one that is not the frame count's, or none, is walked, within the
// bound.
func TestRenderJumpsByTheOffsetTable(t *testing.T) {
	rnd := rand.New(rand.NewPCG(11, 12))
	pool := [][]byte{jpegFrame(t, 32, 32, 0, rnd), jpegFrame(t, 32, 32, 120, rnd), jpegFrame(t, 32, 32, 240, rnd)}
	const times = 66_667 // 200,001 frames; the middle one, 100,000, shows 120
	frames := len(pool) * times
	type test struct {
		name   string
		layout layout
		change func(t testing.TB, head []byte, l layout, frames int, size int64) []byte
		why    string // "": the middle frame
		entry  string // also in the error, when set
		is     error  // also wrapped, when set
		reads  int64  // at most
	}
	tests := []test{
		{"table", basicTable, nil, "", "", nil, 8},
		{"extended table", extendedTable, nil, "", "", nil, 10},
		{"no table", noTable, nil, "fragments walked", "", nil, maxWalkedFragments + 64},
	}
	for _, l := range []layout{basicTable, extendedTable} {
		for _, lie := range tableLies {
			tt := test{map[layout]string{basicTable: "table", extendedTable: "extended table"}[l] + ": " + lie.name,
				l, lie.lie, lie.why, "", lie.is, 10}
			if lie.entry >= 0 {
				tt.entry = fmt.Sprintf("entry %d (", frames/2+lie.entry)
			}
			if lie.walks {
				tt.reads = maxWalkedFragments + 64
			}
			tests = append(tests, tt)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			head, body, tail := encapsulatedParts(pool, 1, tt.layout, times)
			obj := &repeatedObject{head: head, body: body, tail: tail, times: times}
			if tt.change != nil {
				obj.head = tt.change(t, bytes.Clone(head), tt.layout, frames, obj.size())
			}
			at := &countingAt{r: obj}
			out, err := Render(at, obj.size(), 64)
			t.Logf("%v; %d bytes in %d reads", err, at.bytes.Load(), at.reads.Load())
			if tt.why == "" {
				if err != nil {
					t.Fatalf("Render = %v, want the middle frame", err)
				}
				if g := int(grey(decodePNG(t, out).At(2, 2))); g < 90 || g > 150 {
					t.Errorf("corner grey %d, want the middle frame's ~120", g)
				}
				if read, limit := at.bytes.Load(), int64(len(pool[1]))+16<<10; read > limit {
					t.Errorf("read %d bytes, more than the frame and the header (%d)", read, limit)
				}
			} else if !errors.Is(err, ErrNoPreview) || !strings.Contains(err.Error(), tt.why) || !strings.Contains(err.Error(), tt.entry) || tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("Render = %v, want no preview naming %q %q", err, tt.why, tt.entry)
			}
			if reads := at.reads.Load(); reads > tt.reads {
				t.Errorf("%d reads, more than %d", reads, tt.reads)
			}
		})
	}
}
