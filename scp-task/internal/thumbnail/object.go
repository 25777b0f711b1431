package thumbnail

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Bounds of what is read for a preview. The header is bounded by the one
// element reader's limits (dataset.MaxElements, MaxHeldBytes), of which
// only the few attributes below are kept; pixel data is read one frame at
// a time, the middle one.
const (
	// MaxFrameBytes bounds the frame read: native pixel data or the
	// JPEG fragments of one frame.
	MaxFrameBytes = 64 << 20
	// maxFramePixels bounds the frame decoded: its pixels are held once
	// as stored or decoded, once as grey levels (16 MiB at the bound,
	// 4096 × 4096 pixels), and for RGB once more as an image.
	maxFramePixels = 1 << 24
	// maxFrameFragments bounds the fragments a frame is gathered from
	// (each is a read); real encoders split a frame into a few at most.
	maxFrameFragments = 4096
	// maxInflatedBytes bounds the bytes inflated to reach the frame of a
	// deflated data set, which cannot be skipped: about a second of CPU.
	// It is the preview's own bound on work, within the one inflate rule
	// (dataset.Inflater) every reader of a deflated data set applies.
	maxInflatedBytes = 256 << 20
	// maxWalkedFragments bounds the fragments walked to reach the frame
	// (each item header may be a read, a file open in local mode): the
	// middle frame of an object of up to twice as many one-fragment
	// frames. A million frames of 422 bytes took 250,003 reads (1.8 s)
	// for one preview.
	maxWalkedFragments = 1 << 14
)

// errInflateLimit ends the inflated stream at maxInflatedBytes.
var errInflateLimit = fmt.Errorf("deflated data set longer than %d bytes before the frame ends", maxInflatedBytes)

// The header is read in chunks of firstChunk doubling to maxChunk; a
// value skipped beyond them is moved past without reading it, and the
// chunk starts small again after it where it lands firstChunk or more
// past them: past pixel data or between fragments, the next thing read is
// an 8-byte header (dataset.RangeOptions.ResetOnSkip).
const (
	firstChunk = 512
	maxChunk   = 256 << 10
)

// Top-level attributes the renderer reads.
const (
	tagSamplesPerPixel     = 0x00280002
	tagPhotometric         = 0x00280004
	tagPlanarConfiguration = 0x00280006
	tagNumberOfFrames      = 0x00280008
	tagRows                = 0x00280010
	tagColumns             = 0x00280011
	tagBitsAllocated       = 0x00280100
	tagBitsStored          = 0x00280101
	tagHighBit             = 0x00280102
	tagPixelRepresentation = 0x00280103
	tagWindowCenter        = 0x00281050
	tagWindowWidth         = 0x00281051
	tagRescaleIntercept    = 0x00281052
	tagRescaleSlope        = 0x00281053
	tagVOILUTFunction      = 0x00281056
	// Pixel Padding Value and Pixel Padding Range Limit (PS3.3
	// C.7.5.1.1.2): stored values that are padding, not image.
	tagPixelPaddingValue      = 0x00280120
	tagPixelPaddingRangeLimit = 0x00280121
	// The Modality LUT and VOI LUT Sequences (PS3.3 C.11.1, C.11.2), and
	// the LUT Descriptor and LUT Data of their items.
	tagModalityLUTSequence = 0x00283000
	tagVOILUTSequence      = 0x00283010
	tagLUTDescriptor       = 0x00283002
	tagLUTData             = 0x00283006
	// The Shared and Per-Frame Functional Groups Sequences of an enhanced
	// multi-frame object (PS3.3 C.7.6.16), and the macros of theirs that
	// map stored values to grey: Pixel Value Transformation (its rescale
	// and Modality LUT, C.7.6.16.2.9) and Frame VOI LUT (its window and VOI
	// LUT, C.7.6.16.2.10).
	tagSharedFunctionalGroups   = 0x52009229
	tagPerFrameFunctionalGroups = 0x52009230
	tagPixelValueTransformation = 0x00289145
	tagFrameVOILUT              = 0x00289132
	// The Extended Offset Table and its lengths (PS3.3 C.7.6.3), before
	// Pixel Data: where each frame's fragments start, 64 bits an entry.
	tagExtendedOffsetTable        = 0x7FE00001
	tagExtendedOffsetTableLengths = 0x7FE00002
)

// jpegTail is how much of a fragment's end the frame reader looks at: an
// EOI (FFD9) and the pad byte after it of a fragment of odd data.
const jpegTail = 3

// maxAttrBytes is how much of an attribute's value is kept: its first
// value (a DS or IS has at most 16 characters, a CS 16) with room for
// padding.
const maxAttrBytes = 64

// object is a stored object read up to its Pixel Data: the attributes
// that lay out and window a frame, and where the pixel data lies.
type object struct {
	r     io.ReaderAt
	size  int64
	ts    string
	order binary.ByteOrder // of the data set's binary values
	top   attrSet          // the top level's
	// The Shared Functional Groups item's macros, and those of the
	// Per-Frame Functional Groups item of the frame rendered (the middle
	// one), by macro.
	shared, frame [macros]attrSet
	perFrame      perFrame
	pixel         dataset.Element // the top-level Pixel Data element
	base          int64           // where the data set starts in the object
	dec           *dataset.Decoder
	src           *dataset.RangeSource // what dec reads, but for a deflated data set
	deflated      *bufio.Reader        // the inflated data set, for a deflated one
	// The top-level Extended Offset Table and its lengths (Length 0 when
	// absent): where they are, read only if the Basic Offset Table is empty.
	extOffsets, extLengths dataset.Element
}

// attrSet is what the renderer keeps of a data set, or of a functional
// group macro's item: the attributes it reads, and the first item of its
// Modality LUT and VOI LUT Sequences, by the sequence's tag (its LUT
// Descriptor and LUT Data as encoded).
type attrSet struct {
	attrs map[uint32]attr
	luts  map[uint32]*lutItem
	// present: a macro's sequence has an item here (the top level's is
	// always there).
	present bool
}

func newAttrSet() attrSet {
	return attrSet{attrs: map[uint32]attr{}, luts: map[uint32]*lutItem{}}
}

// The functional group macros the renderer reads, and for each the
// sequence that holds it, the attributes of its item it keeps, and the
// LUT Sequence within it.
const (
	pixelValueTransformation = iota
	frameVOILUT
	macros
)

var macroSeqs = [macros]struct {
	seq   uint32
	attrs []uint32
	lut   uint32
}{
	pixelValueTransformation: {tagPixelValueTransformation, []uint32{tagRescaleIntercept, tagRescaleSlope}, tagModalityLUTSequence},
	frameVOILUT:              {tagFrameVOILUT, []uint32{tagWindowCenter, tagWindowWidth, tagVOILUTFunction}, tagVOILUTSequence},
}

// macro is where the attributes of macro m are read for the frame
// rendered, as PS3.3 C.7.6.16 places them: a macro is in the Per-Frame
// Functional Groups item of each frame or in the Shared one, so the
// frame's item where it has the macro's sequence, else the Shared item;
// an object with neither (no enhanced multi-frame one) has them at the
// top level.
func (o *object) macro(m int) *attrSet {
	switch {
	case o.frame[m].present:
		return &o.frame[m]
	case o.shared[m].present:
		return &o.shared[m]
	}
	return &o.top
}

// perFrame is what is known of the Per-Frame Functional Groups Sequence
// (5200,9230): one item a frame (C.7.6.16), of which the renderer keeps
// the item of the frame it renders, want, and skips the others unread
// where their length is defined; Number of Frames, before it in tag
// order, says which one that is.
type perFrame struct {
	seen  bool
	want  uint64 // the item kept, from 0: shown(Number of Frames)
	items uint64 // the items met
	// early: it came before Number of Frames (out of tag order), which
	// then does not say which item to keep.
	early bool
}

// step is a sequence around the reader's position, and the item of it
// being read (1 for the first; 0 before its first).
type step struct {
	seq  uint32
	item int
}

// lutItem is the first item of a Modality or VOI LUT Sequence: its LUT
// Descriptor (its three values, maxAttrBytes at most) and LUT Data
// (maxLUTEntries 16-bit entries at most: what a descriptor can say) as
// encoded, parsed by lutOf when the render uses it.
type lutItem struct {
	descriptor, data attr
}

// maxLUTEntries bounds a LUT: its descriptor's first value is 16 bits, 0
// meaning 65536 (PS3.3 C.11.1.1.1).
const maxLUTEntries = 1 << 16

type attr struct {
	vr    dataset.VR
	value []byte // at most maxAttrBytes
}

// readObject reads the File Meta and the data set up to its top-level
// Pixel Data (7FE0,0010) with the one element reader, keeping the
// attributes the renderer needs. A verdict on the bytes is ErrNoPreview;
// a read error is returned as it is.
func readObject(r io.ReaderAt, size int64) (*object, error) {
	// KeepBehind: the end of a fragment skipped comes with the read of the
	// next item header, for the frame reader to find a JPEG's EOI.
	src := dataset.NewRangeSource(r, size, dataset.RangeOptions{First: firstChunk, Max: maxChunk, ResetOnSkip: true, KeepBehind: jpegTail})
	meta, err := part10.ReadMeta(src)
	if err != nil {
		if errors.Is(err, part10.ErrNotPart10) || errors.Is(err, part10.ErrMalformedMeta) {
			return nil, fmt.Errorf("thumbnail: %w: %w", ErrNoPreview, err)
		}
		return nil, fmt.Errorf("thumbnail: read: %w", err)
	}
	o := &object{r: r, size: src.Size(), ts: meta.TransferSyntaxUID, order: binary.LittleEndian,
		top: newAttrSet(), base: src.Pos(), src: src}
	o.top.present = true
	for m := range macros {
		o.shared[m], o.frame[m] = newAttrSet(), newAttrSet()
	}
	if !Renderable(o.ts) {
		return nil, fmt.Errorf("thumbnail: %w: transfer syntax %s", ErrNoPreview, o.ts)
	}
	enc, _ := dataset.EncodingOf(o.ts)
	if enc.BigEndian {
		o.order = binary.BigEndian
	}
	var ds dataset.Source = src
	if enc.Deflated {
		// A deflated data set is read as a stream from its start: its
		// pixel data cannot be reached without inflating what precedes it.
		compressed := bufio.NewReaderSize(io.NewSectionReader(r, o.base, o.size-o.base), 64<<10)
		o.deflated = bufio.NewReaderSize(&limitedReader{r: dataset.NewInflater(compressed), n: maxInflatedBytes}, 64<<10)
		ds, o.src = o.deflated, nil
	}
	o.dec = dataset.NewDecoder(ds, o.ts)
	var path []step // the sequences around the reader, outermost first
	for {
		k, err := o.dec.Next()
		switch k {
		case dataset.KindError:
			return nil, o.failed(err)
		case dataset.KindEnd:
			return nil, fmt.Errorf("thumbnail: %w: no pixel data", ErrNoPreview)
		case dataset.KindItem:
			d := o.dec.Depth()
			if d == 0 || d > len(path) {
				continue // not an item the renderer reads in
			}
			path = path[:d]
			path[d-1].item++
			o.itemBegun(path)
		case dataset.KindElement:
			e := o.dec.Element()
			path = path[:min(e.Depth, len(path))]
			if e.Depth > 0 {
				o.keepNested(path, e)
				if e.Sequence {
					path = append(path, step{seq: e.Tag})
				}
				continue
			}
			if e.Sequence {
				path = append(path, step{seq: e.Tag})
			}
			switch e.Tag {
			case dataset.TagPixelData:
				o.pixel = e
				if err := o.perFrame.check(o); err != nil {
					return nil, err
				}
				return o, nil
			case tagExtendedOffsetTable:
				o.extOffsets = e
				continue
			case tagExtendedOffsetTableLengths:
				o.extLengths = e
				continue
			case tagPerFrameFunctionalGroups:
				o.perFrameBegun()
				continue
			}
			if !wanted(e.Tag) {
				continue
			}
			o.keepAttr(&o.top, e)
		}
	}
}

// perFrameBegun notes the Per-Frame Functional Groups Sequence's start:
// the item to keep is the middle frame's, which the renderer shows, by
// Number of Frames read before it; without one read, the first (one
// frame), unless Number of Frames follows (check).
func (o *object) perFrameBegun() {
	o.perFrame.seen = true
	if _, ok := o.top.attrs[tagNumberOfFrames]; !ok {
		o.perFrame.early = true
	}
	if n, err := o.frames(); err == nil {
		o.perFrame.want = shown(n)
	}
}

// check refuses a Per-Frame Functional Groups Sequence whose item for the
// frame rendered cannot be told: one item a frame (C.7.6.16), and Number
// of Frames read before it. A Number of Frames that is not a count is left
// to the frame's reader, which refuses it.
func (p *perFrame) check(o *object) error {
	if !p.seen {
		return nil
	}
	if _, ok := o.top.attrs[tagNumberOfFrames]; ok && p.early {
		return fmt.Errorf("thumbnail: %w: the Per-Frame Functional Groups Sequence before Number of Frames: which item is the frame's cannot be told", ErrNoPreview)
	}
	if n, err := o.frames(); err == nil && n != p.items {
		return fmt.Errorf("thumbnail: %w: a Per-Frame Functional Groups Sequence of %d items for %d frames", ErrNoPreview, p.items, n)
	}
	return nil
}

// itemBegun is called as an item starts, path the sequences around it
// (its own last, with the item's number): an item of the Per-Frame
// Functional Groups Sequence not the frame's is skipped (unread where its
// length is defined, walked but not kept where not); a functional group
// macro's first item in the Shared item or the frame's marks the macro
// present there.
func (o *object) itemBegun(path []step) {
	if len(path) == 1 && path[0].seq == tagPerFrameFunctionalGroups {
		o.perFrame.items++
		if uint64(path[0].item-1) != o.perFrame.want {
			o.dec.SkipItem()
		}
		return
	}
	if len(path) == 2 && path[1].item == 1 {
		if set, _ := o.macroAt(path); set != nil {
			set.present = true
		}
	}
}

// macroAt is the macro whose item path (at least 2 steps) is in or under,
// where its attributes are kept and which one (macroSeqs): the first item
// of a macro's sequence in the Shared Functional Groups item or in the
// frame's Per-Frame one; nil elsewhere.
func (o *object) macroAt(path []step) (*attrSet, int) {
	var groups *[macros]attrSet
	switch {
	case path[0].seq == tagSharedFunctionalGroups && path[0].item == 1:
		groups = &o.shared
	case path[0].seq == tagPerFrameFunctionalGroups && path[0].item > 0 && uint64(path[0].item-1) == o.perFrame.want:
		groups = &o.frame
	default:
		return nil, 0
	}
	for m, ms := range macroSeqs {
		if path[1].seq == ms.seq && path[1].item == 1 {
			return &groups[m], m
		}
	}
	return nil, 0
}

// keepNested keeps e, an element inside a sequence (path, e's own not
// among them), where the renderer reads it: the LUT Descriptor and LUT
// Data of the first item of the top level's Modality or VOI LUT Sequence;
// a functional group macro's attributes (macroSeqs), and those of the
// first item of its LUT Sequence.
func (o *object) keepNested(path []step, e dataset.Element) {
	switch {
	case len(path) == 1 && path[0].item == 1:
		o.keepLUT(&o.top, path[0].seq, e)
	case len(path) >= 2:
		set, m := o.macroAt(path)
		if set == nil {
			return
		}
		ms := macroSeqs[m]
		switch {
		case len(path) == 2 && slices.Contains(ms.attrs, e.Tag):
			o.keepAttr(set, e)
		case len(path) == 3 && path[2].seq == ms.lut && path[2].item == 1:
			o.keepLUT(set, ms.lut, e)
		}
	}
}

// keepAttr keeps the first maxAttrBytes of e's value in set; a sequence,
// an empty value or a repeat (the first one counts) is not kept.
func (o *object) keepAttr(set *attrSet, e dataset.Element) {
	if e.Sequence || e.Length == 0 || e.Length == dataset.UndefinedLength {
		return
	}
	if _, dup := set.attrs[e.Tag]; dup {
		return
	}
	a := attr{vr: e.VR, value: make([]byte, min(e.Length, maxAttrBytes))}
	set.attrs[e.Tag] = a
	o.dec.Capture(a.value)
}

// keepLUT keeps e, an element of the first item of the sequence seq, in
// set when seq is the Modality or VOI LUT Sequence and e its LUT
// Descriptor or LUT Data: the descriptor's values, and the data's first
// maxLUTEntries 16-bit entries. What it does not capture (an undefined
// length, none) is not kept.
func (o *object) keepLUT(set *attrSet, seq uint32, e dataset.Element) {
	if seq != tagModalityLUTSequence && seq != tagVOILUTSequence || e.Sequence || e.Length == 0 || e.Length == dataset.UndefinedLength {
		return
	}
	l := set.luts[seq]
	if l == nil {
		l = &lutItem{}
		set.luts[seq] = l
	}
	var a *attr
	limit := uint32(maxAttrBytes)
	switch {
	case e.Tag == tagLUTDescriptor:
		a = &l.descriptor
	case e.Tag == tagLUTData:
		a, limit = &l.data, 2*maxLUTEntries
	default:
		return
	}
	if a.value != nil {
		return // the first one counts
	}
	*a = attr{vr: e.VR, value: make([]byte, min(e.Length, limit))}
	o.dec.Capture(a.value)
}

func wanted(tag uint32) bool {
	switch tag {
	case tagSamplesPerPixel, tagPhotometric, tagPlanarConfiguration, tagNumberOfFrames, tagRows, tagColumns,
		tagBitsAllocated, tagBitsStored, tagHighBit, tagPixelRepresentation, tagWindowCenter, tagWindowWidth,
		tagRescaleIntercept, tagRescaleSlope, tagVOILUTFunction, tagPixelPaddingValue, tagPixelPaddingRangeLimit:
		return true
	}
	return false
}

// failed turns the Decoder's error into no preview (a verdict on the
// bytes, the inflater's included, or a deflated data set too long) or a
// read error.
func (o *object) failed(err error) error {
	var verdict *dataset.Error
	switch {
	case errors.As(err, &verdict):
		return fmt.Errorf("thumbnail: %w: %w", ErrNoPreview, err)
	case errors.Is(err, errInflateLimit):
		return fmt.Errorf("thumbnail: %w: %w", ErrNoPreview, errInflateLimit)
	}
	return fmt.Errorf("thumbnail: read: %w", err)
}

// str is the first value of a top-level text attribute, without padding.
func (o *object) str(tag uint32) string { return o.top.str(tag) }

// str is the first value of a text attribute, without padding.
func (s *attrSet) str(tag uint32) string {
	v := string(s.attrs[tag].value)
	if i := strings.IndexByte(v, '\\'); i >= 0 {
		v = v[:i]
	}
	return strings.TrimRight(v, " \x00")
}

// num reads the first value of a decimal or integer string attribute.
func (s *attrSet) num(tag uint32) (float64, bool) {
	v, err := strconv.ParseFloat(strings.TrimSpace(s.str(tag)), 64)
	return v, err == nil && !math.IsNaN(v) && !math.IsInf(v, 0)
}

// int reads the first value of a binary integer attribute (US, SS, UL,
// SL), as encoded.
func (o *object) int(tag uint32) (int, bool) {
	a, ok := o.top.attrs[tag]
	switch {
	case !ok:
		return 0, false
	case a.vr.Is("US") && len(a.value) >= 2:
		return int(o.order.Uint16(a.value)), true
	case a.vr.Is("SS") && len(a.value) >= 2:
		return int(int16(o.order.Uint16(a.value))), true
	case a.vr.Is("UL") && len(a.value) >= 4:
		return int(o.order.Uint32(a.value)), true
	case a.vr.Is("SL") && len(a.value) >= 4:
		return int(int32(o.order.Uint32(a.value))), true
	}
	return 0, false
}

// uint is int for a count, 0 when absent or negative.
func (o *object) uint(tag uint32) uint64 {
	v, ok := o.int(tag)
	if !ok || v < 0 {
		return 0
	}
	return uint64(v)
}

// frames is Number of Frames (1 when absent).
func (o *object) frames() (uint64, error) {
	nf := o.str(tagNumberOfFrames)
	n, ok := pipeline.FrameCount(nf)
	if !ok {
		return 0, fmt.Errorf("frame count %q (Number of Frames) not a count", strings.TrimSpace(nf))
	}
	return n, nil
}

// shown is the frame the preview draws of an object of frames frames
// (from 0): the middle one. The pixels read and the Per-Frame Functional
// Groups item kept for them are the same frame's by it.
func shown(frames uint64) uint64 { return frames / 2 }

// nativeLayout is the layout of native pixel data.
type nativeLayout struct {
	rows, cols, samples, bits, frames uint64
	frameBytes                        uint64
}

// nativeGeometry reads the layout of native pixel data and refuses one
// the renderer does not read or the element cannot hold: Rows, Columns and
// Samples per Pixel must be set, Bits Allocated one the renderer reads (8,
// 16 or 32), Number of Frames a count, the frame within maxFramePixels and
// MaxFrameBytes, and the element must hold the frames.
func (o *object) nativeGeometry() (nativeLayout, error) {
	l := nativeLayout{rows: o.uint(tagRows), cols: o.uint(tagColumns), samples: o.uint(tagSamplesPerPixel), bits: o.uint(tagBitsAllocated)}
	switch {
	case o.pixel.Encapsulated:
		return l, fmt.Errorf("encapsulated pixel data in %s", o.ts)
	case l.rows == 0:
		return l, errors.New("no rows (Rows 0)")
	case l.cols == 0:
		return l, errors.New("no columns (Columns 0)")
	case l.samples == 0:
		return l, errors.New("no samples (Samples per Pixel 0)")
	case l.bits != 8 && l.bits != 16 && l.bits != 32:
		return l, fmt.Errorf("%d bits per sample", l.bits)
	case l.rows*l.cols > maxFramePixels:
		return l, fmt.Errorf("%d × %d pixels, above the %d previewed", l.cols, l.rows, maxFramePixels)
	}
	var err error
	if l.frames, err = o.frames(); err != nil {
		return l, err
	}
	l.frameBytes, _ = pipeline.NativePixelBytes(l.rows, l.cols, l.samples, 1, l.bits)
	if l.frameBytes > MaxFrameBytes {
		return l, fmt.Errorf("a frame of %d bytes, above the %d byte limit", l.frameBytes, MaxFrameBytes)
	}
	need, ok := pipeline.NativePixelBytes(l.rows, l.cols, l.samples, l.frames, l.bits)
	if have := uint64(o.pixel.Length); !ok || need > have {
		return l, fmt.Errorf("%d bytes of pixel data; %d × %d × %d samples × %d frames × %d bits need more", have, l.rows, l.cols, l.samples, l.frames, l.bits)
	}
	return l, nil
}

// nativeFrame reads frame i of native pixel data: at its offset in the
// object, once the one element reader has moved past the whole value
// (without reading it) and found that the object holds it; in a deflated
// data set, by inflating up to it.
func (o *object) nativeFrame(l nativeLayout, i uint64) ([]byte, error) {
	if o.deflated != nil {
		frame := make([]byte, l.frameBytes)
		if _, err := o.deflated.Discard(int(i * l.frameBytes)); err != nil {
			return nil, o.frameFailed(err, "the frame")
		}
		if _, err := io.ReadFull(o.deflated, frame); err != nil {
			return nil, o.frameFailed(err, "the frame")
		}
		return frame, nil
	}
	if k, err := o.dec.Next(); k == dataset.KindError {
		return nil, o.failed(err)
	}
	at := int64(i * l.frameBytes)
	if l.bits == 8 && o.order == binary.BigEndian && o.pixel.VR.Is("OW") {
		return o.swappedFrame(at, int64(l.frameBytes))
	}
	frame := make([]byte, l.frameBytes)
	if _, err := o.r.ReadAt(frame, o.base+o.pixel.Offset+at); err != nil {
		return nil, o.frameFailed(err, "the frame")
	}
	return frame, nil
}

// swappedFrame reads n bytes of 8-bit samples at offset at of Pixel Data
// held as OW in Big Endian: 16-bit words, each with its bytes swapped
// (PS3.5 A.3; OB holds them in order). The words the frame lies in are
// read, whole, and swapped back; the value's length is even, so they lie
// within it.
func (o *object) swappedFrame(at, n int64) ([]byte, error) {
	from, to := at&^1, (at+n+1)&^1
	words := make([]byte, to-from)
	if _, err := o.r.ReadAt(words, o.base+o.pixel.Offset+from); err != nil {
		return nil, o.frameFailed(err, "the frame")
	}
	for k := 0; k+1 < len(words); k += 2 {
		words[k], words[k+1] = words[k+1], words[k]
	}
	return words[at-from : at-from+n], nil
}

// frameFailed is failed for a read of what: the end of the object there
// is a data set cut short (the object is shorter than the index says).
func (o *object) frameFailed(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("thumbnail: %w: %w: the object ends inside %s", ErrNoPreview, dataset.ErrTruncated, what)
	}
	return o.failed(err)
}

// jpegFrame gathers the fragments of frame i of encapsulated pixel data
// (PS3.5 A.4). The one element reader walks the item headers, skipping
// their values, up to the first fragment after the frame; only the
// frame's fragments are read. Where the frame lies:
//   - a single frame is all the fragments;
//   - the Basic Offset Table, when it has an entry per frame, or when it
//     is empty, an Extended Offset Table (7FE0,0001) with an entry per
//     frame, says where the frame's fragments start, and the next entry
//     where they end: the reader jumps there from the table (jump), so
//     the walk is the frame's item headers alone, whatever the object's
//     frames, and the item header it lands on must be an item's;
//   - without either, the frame is found by its JPEG markers (jpegMarks):
//     the first two bytes of each fragment come with the read of its item
//     header, and the last three with that of the next one (KeepBehind),
//     so the markers cost no request of their own. When every frame up to
//     the one shown is one fragment (what JPEG Baseline encoders write),
//     the walk stops after it, as it did when it counted fragments; when
//     frames span several, it goes on to the last fragment and the frames
//     found must be Number of Frames.
//
// Whatever the frame cannot be told from is no preview, never another
// frame.
func (o *object) jpegFrame(frames, i uint64) ([]byte, error) {
	if !o.pixel.Encapsulated {
		return nil, fmt.Errorf("thumbnail: %w: native pixel data in %s", ErrNoPreview, o.ts)
	}
	var (
		seen       uint64             // fragments, the offset table included
		table      bool               // an offset table locates the frame
		start, end int64      = 0, -1 // the frame's fragments, from the first fragment's item header; end -1: to the last
		length     int64      = -1    // the frame's length, from the Extended Offset Table Lengths
		first      int64              // where the first fragment's item header is, from the data set's start
		marks      *jpegMarks         // neither table: the frame is found by its markers
		prev       dataset.Fragment
		parts      []dataset.Fragment
		total      int64
	)
walk:
	for {
		k, err := o.dec.Next()
		switch k {
		case dataset.KindError:
			if table && seen == 1 { // nothing where the table jumped to
				return nil, o.landed(i, start, err)
			}
			return nil, o.failed(err)
		case dataset.KindSequenceEnd, dataset.KindEnd:
			if table && seen == 1 { // nothing where the table jumped to
				return nil, o.landed(i, start, nil)
			}
			if marks != nil && seen > 1 {
				if err := o.ended(marks, prev); err != nil {
					return nil, err
				}
				if err := marks.finish(); err != nil {
					return nil, fmt.Errorf("thumbnail: %w: %w", ErrNoPreview, err)
				}
			}
			break walk
		case dataset.KindFragment:
		default:
			continue
		}
		f := o.dec.Fragment()
		if seen++; seen-1 > maxWalkedFragments {
			return nil, fmt.Errorf("thumbnail: %w: frame %d of %d: more than %d fragments walked to reach it", ErrNoPreview, i+1, frames, maxWalkedFragments)
		}
		if seen == 1 { // the Basic Offset Table: an entry per frame, or none
			first = f.Offset + int64(f.Length)
			switch {
			case f.Length > 0 && uint64(f.Length) == 4*frames:
				start, end, err = o.entries(o.base+f.Offset, 4, frames, i, "the offset table")
				table = true
			case f.Length == 0 && uint64(o.extOffsets.Length) == 8*frames && uint64(o.extLengths.Length) == 8*frames:
				if start, end, err = o.entries(o.base+o.extOffsets.Offset, 8, frames, i, "the extended offset table"); err == nil {
					// Entry i alone: a table of i+1 entries.
					length, _, err = o.entries(o.base+o.extLengths.Offset, 8, i+1, i, "the extended offset table lengths")
				}
				table = true
			case frames > 1:
				marks = &jpegMarks{frames: frames, want: i, whole: true}
			}
			if err == nil && table {
				err = o.jump(first, i, start, end)
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		at := f.Offset - 8 - first
		switch {
		case table && end >= 0 && at >= end:
			break walk
		case table && seen == 2 && at != start: // the fragment the table jumped to
			return nil, o.landed(i, start, nil)
		case marks != nil:
			if seen > 2 {
				if err := o.ended(marks, prev); err != nil {
					return nil, err
				}
			}
			prev = f
			if marks.done() {
				break walk
			}
			if !marks.whole && seen-1 > maxFrameFragments {
				return nil, fmt.Errorf("thumbnail: %w: more than %d fragments to find frames in by their markers", ErrNoPreview, maxFrameFragments)
			}
			in, err := o.started(marks, f)
			if err != nil {
				return nil, err
			}
			if !in {
				continue
			}
		}
		if f.Length == 0 {
			continue
		}
		if total += int64(f.Length); total > MaxFrameBytes {
			return nil, fmt.Errorf("thumbnail: %w: frame %d of %d is above the %d byte limit", ErrNoPreview, i+1, frames, MaxFrameBytes)
		}
		if len(parts) == maxFrameFragments {
			return nil, fmt.Errorf("thumbnail: %w: frame %d of %d has more than %d fragments", ErrNoPreview, i+1, frames, maxFrameFragments)
		}
		parts = append(parts, f)
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("thumbnail: %w: frame %d of %d not among the %d fragments", ErrNoPreview, i+1, frames, max(seen, 1)-1)
	}
	if length >= 0 && (total < length || total-length > 1) {
		return nil, fmt.Errorf("thumbnail: %w: frame %d of %d is %d bytes, its extended offset table length %d", ErrNoPreview, i+1, frames, total, length)
	}
	data := make([]byte, total)
	rest := data
	for _, f := range parts {
		if _, err := o.r.ReadAt(rest[:f.Length], o.base+f.Offset); err != nil {
			return nil, o.frameFailed(err, "a fragment")
		}
		rest = rest[f.Length:]
	}
	return data, nil
}

// entries reads entry i of a table of frames entries of width bytes (4:
// the Basic Offset Table, 8: the Extended one) at off in the object, and
// entry i+1 when there is one (end -1 when not), in one read. Entries are
// little endian, as every encapsulated syntax is; one past 2^62 is taken
// as 2^62, past any object.
func (o *object) entries(off int64, width int, frames, i uint64, what string) (start, end int64, err error) {
	var b [16]byte
	n := 2 * width
	if i+1 == frames {
		n = width
	}
	if _, err := o.r.ReadAt(b[:n], off+int64(width)*int64(i)); err != nil {
		return 0, 0, o.frameFailed(err, what)
	}
	entry := func(b []byte) int64 {
		if width == 4 {
			return int64(binary.LittleEndian.Uint32(b))
		}
		return int64(min(binary.LittleEndian.Uint64(b), 1<<62))
	}
	start, end = entry(b[:]), -1
	if n == 2*width {
		end = entry(b[width:])
	}
	return start, end, nil
}

// jump moves the walk from the offset table to frame i's first fragment,
// whose item header is start bytes after the first fragment's (at first
// in the data set), without reading what lies between: one ranged read
// there reads the item header. The entries are outside bytes, checked
// before the jump: an item header must fit before the object's end where
// the frame starts and where the next one does (end, -1 for the last
// frame), else the object ends before the table's word (ErrTruncated),
// and the two must increase. The table is not read whole (it
// grows with the object): the entries the frame is read by are checked,
// and where the jump lands must be an item (landed).
func (o *object) jump(first int64, i uint64, start, end int64) error {
	last := o.size - o.base - first - 8 // the last offset an item header fits at
	switch {
	case start > last:
		return fmt.Errorf("thumbnail: %w: %w: offset table entry %d (%d) is past the object's end", ErrNoPreview, dataset.ErrTruncated, i, start)
	case end > last:
		return fmt.Errorf("thumbnail: %w: %w: offset table entry %d (%d) is past the object's end", ErrNoPreview, dataset.ErrTruncated, i+1, end)
	case end >= 0 && end <= start:
		return fmt.Errorf("thumbnail: %w: offset table entries %d and %d (%d, %d) do not increase", ErrNoPreview, i, i+1, start, end)
	case !o.dec.SkipFragments(uint64(start)):
		return fmt.Errorf("thumbnail: %w: the reader is not in the fragments after the offset table", ErrNoPreview)
	}
	return nil
}

// landed is the verdict when the walk, jumped to offset table entry i
// (start), does not find a fragment there: no preview, with the reader's
// verdict on what it found (err) when it has one; a read error is
// returned as it is.
func (o *object) landed(i uint64, start int64, err error) error {
	var verdict *dataset.Error
	if err != nil && !errors.As(err, &verdict) {
		return o.failed(err)
	}
	if err != nil {
		return fmt.Errorf("thumbnail: %w: offset table entry %d (%d) is not where a fragment starts: %w", ErrNoPreview, i, start, err)
	}
	return fmt.Errorf("thumbnail: %w: offset table entry %d (%d) is not where a fragment starts", ErrNoPreview, i, start)
}

// started reads the first bytes of fragment f, the walk at its item
// header, and tells marks: whether f is one of the frame's fragments.
// They are captured from the read of the item header.
func (o *object) started(m *jpegMarks, f dataset.Fragment) (bool, error) {
	var head []byte
	if f.Length >= 2 {
		head = m.head[:2]
		o.dec.Capture(head)
		if k, err := o.dec.Next(); k == dataset.KindError {
			return false, o.failed(err)
		} else if k != dataset.KindValue {
			return false, fmt.Errorf("thumbnail: %w: the first bytes of a fragment not read", ErrNoPreview)
		}
	}
	in, err := m.start(head)
	if err != nil {
		return false, fmt.Errorf("thumbnail: %w: %w", ErrNoPreview, err)
	}
	return in, nil
}

// ended reads the last jpegTail bytes of fragment f, the walk past it
// (held from the read of the next item header, read on their own
// otherwise), and tells marks.
func (o *object) ended(m *jpegMarks, f dataset.Fragment) error {
	n := min(int(f.Length), jpegTail)
	at := o.base + f.Offset + int64(f.Length) - int64(n)
	tail, ok := []byte(nil), false
	if o.src != nil {
		tail, ok = o.src.Held(at, n)
	}
	if !ok {
		tail = m.tail[:n]
		if _, err := o.r.ReadAt(tail, at); err != nil {
			return o.frameFailed(err, "a fragment")
		}
	}
	m.end(tail)
	return nil
}

// limitedReader is io.LimitReader ending with errInflateLimit, not io.EOF,
// which would read as a data set cut short.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errInflateLimit
	}
	n, err := l.r.Read(p[:min(int64(len(p)), l.n)])
	l.n -= int64(n)
	return n, err
}
