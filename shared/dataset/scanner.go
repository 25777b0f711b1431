package dataset

import (
	"errors"
	"fmt"
	"slices"
)

// Errors a Scanner (and so every reader built on it) reports. They are
// verdicts on the bytes, never on the transport: a source that fails is
// reported as it failed.
var (
	// ErrMalformed means the dataset's structure cannot be followed: a VR
	// that is not two letters, an item outside a sequence, an element that
	// overruns its item or sequence, undefined length on a VR that cannot
	// have it, an element repeated in its data set or item (ErrRepeated), a
	// corrupt deflate stream.
	ErrMalformed = errors.New("dataset: malformed dataset")
	// ErrRepeated is the ErrMalformed of an element whose tag came before
	// in its data set or item (PS3.5 §7.1 allows a tag once): which value
	// holds is ambiguous (two Referenced SOP Sequences: one list, or two?),
	// so no reader picks one. An element out of tag order that is not a
	// repeat is no verdict: the Scanner reads on and reports it
	// (Scanner.Unordered), as DCMTK, dcm4che, Orthanc and pydicom read such
	// a data set.
	ErrRepeated = fmt.Errorf("%w: repeated element", ErrMalformed)
	// ErrOrder is the ErrMalformed of an element out of tag order that the
	// Scanner cannot tell from a repeat within its bound: the tags it
	// remembers for that (MaxTagsHeld, over the data set and the items open)
	// were used up.
	ErrOrder = fmt.Errorf("%w: too many elements out of tag order", ErrMalformed)
	// ErrTruncated means the dataset ended inside an element header, a
	// value, an item or a sequence: a value declared longer than what
	// arrived.
	ErrTruncated = errors.New("dataset: dataset ends inside an element")
	// ErrLimit means the dataset is well formed as far as it was read but
	// exceeds one of the reader's limits (MaxDepth, MaxElements,
	// MaxHeldBytes, MaxInflateRatio).
	ErrLimit = errors.New("dataset: dataset exceeds a reader limit")
)

// Limits: one set, applied by every reader of a dataset, so that what the
// SCP acknowledges the pipeline can read. They bound the memory a reader
// that keeps the header (the pipeline) may need, and the work of one that
// only follows the structure (the SCP).
const (
	// MaxDepth is how deeply sequences may nest. SR content trees nest one
	// sequence per level; real reports stay well under 20 and RT objects
	// under 6, so 128 leaves room for any real object while a nesting
	// attack costs at most a few KiB of reader state.
	MaxDepth = 128
	// MaxElements bounds data elements plus sequence items: a reader
	// holding the header allocates for each. Large RT Structure Sets and
	// SR reports have tens of thousands.
	MaxElements = 250_000
	// MaxValueHeld is the longest value a header reader keeps; longer ones
	// (and all Pixel Data) are bulk data, skipped and located by offset.
	MaxValueHeld = 64 << 10
	// MaxHeldBytes bounds the sum of the values a header reader keeps
	// (those of at most MaxValueHeld bytes, Pixel Data excepted).
	MaxHeldBytes = 64 << 20
	// MaxInflateRatio bounds how much a deflated dataset may inflate: at
	// every point of the stream, at most InflateAllowance plus this many
	// bytes per compressed byte used. Following the structure means
	// inflating every byte, values skipped included, and deflate inflates
	// up to about 1032 bytes per byte: unbounded, 1 MiB received was 1 GiB
	// to inflate, for an object stored as sent. Real deflated datasets
	// compress a few times (DCMTK's dcmconv +td: 1.5 to 5.4 on the corpus,
	// 30 on a synthetic image).
	MaxInflateRatio = 100
	// InflateAllowance is how many bytes a deflated dataset may inflate to
	// beyond MaxInflateRatio bytes per compressed byte: the rule is
	// inflated <= InflateAllowance + MaxInflateRatio × compressed, for
	// every prefix. A streaming rule cannot know what follows a blank run,
	// so the allowance must hold the blankest image sent: the largest
	// single frames (mammography, DX, 4096 × 5120 16-bit) are 40 MiB, and
	// 64 MiB, the largest frame the portal previews, leaves room over
	// them: no single-frame image, even wholly blank, is refused; a 3072 × 3072
	// DX whose top 800 rows were zero (4.9 MB) was, at 4 MiB, and its
	// sender retried forever. Wholly blank multi-frame objects past it
	// are refused. It is an allowance spent, not a threshold past which
	// the ratio alone applies (inflated > InflateAllowance && inflated >
	// MaxInflateRatio × compressed): under that, a blank prefix just past
	// the allowance was refused whatever followed, while here the bytes
	// that follow, compressing less than MaxInflateRatio times, earn
	// room, and a bomb costs at most InflateAllowance more than under the
	// threshold. The worst a bomb at the bound costs: zeros deflate about
	// 1029 times, so 70.8 MiB inflated from 71 KiB, which took the
	// Inspector 13 ms of CPU on the 2-core build machine
	// (BenchmarkInflateBound); the inflater holds only deflate's 32 KiB
	// window, whatever the allowance.
	InflateAllowance = 64 << 20
	// MaxTagsHeld is how many tags a Scanner remembers at once, over the
	// data set and the items open around the element being read, to tell
	// an element out of tag order (tolerated) from a repeat (ErrRepeated):
	// one that steps back may repeat any tag before it at its level. An
	// element in order is checked against the one before it alone; its tag
	// is kept (4 bytes) while there is room; when there is none, an
	// element out of order at that level is ErrOrder (no real object steps
	// back after so many elements), while elements in order are read on,
	// however many. At most 16 KiB a reader.
	MaxTagsHeld = 4096
)

// UndefinedLength is the value length (FFFFFFFFH) of a sequence, item or
// encapsulated Pixel Data delimited by markers rather than by a length.
const UndefinedLength = 0xFFFFFFFF

// Tags the structure depends on.
const (
	TagPixelData       = 0x7FE00010
	TagFloatPixelData  = 0x7FE00008
	TagDoublePixelData = 0x7FE00009
	tagItem            = 0xFFFEE000
	tagItemDelim       = 0xFFFEE00D
	tagSeqDelim        = 0xFFFEE0DD
)

// IsPixelData reports whether t is one of the top-level pixel data tags a
// header reader stops at.
func IsPixelData(t uint32) bool {
	return t == TagPixelData || t == TagFloatPixelData || t == TagDoublePixelData
}

// Kind is what Scanner.Next found.
type Kind uint8

// Kinds of tokens.
const (
	// KindNone: the input is used up, or a value just ended.
	KindNone Kind = iota
	// KindElement: a data element header; see Scanner.Element. A sequence
	// or encapsulated element is followed by its content; a value is
	// skipped unless Capture is called now.
	KindElement
	// KindValue: the bytes asked for by Capture are in place.
	KindValue
	// KindItem: an item of the current sequence starts.
	KindItem
	// KindItemEnd: the current item ended (delimiter or defined length).
	KindItemEnd
	// KindSequenceEnd: the current sequence, or the fragments of an
	// encapsulated element, ended.
	KindSequenceEnd
	// KindEnd: the dataset ended cleanly. Nothing follows.
	KindEnd
	// KindError: Err says why reading stopped. Nothing follows.
	KindError
	// KindFragment: an item of encapsulated Pixel Data (a fragment, the
	// first being the Basic Offset Table) starts; see Scanner.Fragment.
	// Its value is skipped like an element's unless Capture is called now.
	KindFragment
)

// Element is a data element header as read.
type Element struct {
	Tag uint32
	// VR as encoded; for Implicit VR, from the data dictionary ("UN" when
	// the tag is not in it).
	VR VR
	// Length is the value length as encoded, UndefinedLength included.
	Length uint32
	// Start is the offset of the tag, Offset that of the value, from the
	// first byte given to the Scanner (of the inflated stream, for a
	// deflated dataset).
	Start, Offset int64
	// Depth is the number of enclosing sequences (0: top level).
	Depth int
	// Sequence is set when items follow (SQ, or UN of undefined length,
	// whose items are Implicit VR Little Endian per PS3.5 §6.2.2).
	Sequence bool
	// Encapsulated is set for Pixel Data of undefined length: fragments
	// follow (KindFragment), then KindSequenceEnd.
	Encapsulated bool
}

// Fragment is an item of encapsulated Pixel Data as read: where its value
// lies, so that a reader of one frame can fetch that frame's fragments
// and skip the others (PS3.5 A.4).
type Fragment struct {
	// Offset is that of the value, counted like Element.Offset; its item
	// header starts 8 bytes before.
	Offset int64
	Length uint32
}

// VR is a value representation, two upper-case letters.
type VR [2]byte

func (v VR) String() string { return string(v[:]) }

// Is reports whether v is the VR named s.
func (v VR) Is(s string) bool { return len(s) == 2 && v[0] == s[0] && v[1] == s[1] }

type scanState uint8

const (
	stHeader  scanState = iota // collecting an element or item header
	stSkip                     // skipping a value or fragment
	stCapture                  // copying a value into the caller's buffer
	stDone                     // KindEnd or KindError given
)

type frameKind uint8

const (
	inSequence  frameKind = iota + 1 // expecting items or a sequence delimiter
	inItem                           // expecting elements or an item delimiter
	inFragments                      // expecting fragments or a sequence delimiter
)

type frame struct {
	kind      frameKind
	implicit  bool
	bigEndian bool
	end       int64 // offset where a defined length ends; -1: undefined
	tag       uint32
	level     level // of an item: the tags of its elements
}

// level is what a Scanner knows of the tags of one data set or item: the
// greatest so far, and where its tags are kept in Scanner.tags (sorted,
// from base to the end while it is the innermost level open).
type level struct {
	next uint64 // the greatest tag so far plus one: the least tag in order
	base int    // its first tag in Scanner.tags
	full bool   // a tag in order was not kept: Scanner.tags had MaxTagsHeld
}

// Scanner is the one DICOM element reader: a push parser that takes a
// dataset in chunks of any size and reports its structure token by token
// without allocating per element and without reading a value unless asked
// (Capture). Readers that can seek skip values without having them
// (Skipping, Skipped); readers of a stream pass every byte through Next.
//
// Each call to Next consumes at most one piece: part of a header, or part
// of a value; so a caller always knows which bytes it passed belong to
// what.
type Scanner struct {
	implicit, bigEndian bool // of the top level
	detect              bool // decide Implicit/Explicit VR from the first element
	first               bool

	state   scanState
	hbuf    [12]byte
	hn      int
	need    int
	skip    uint64
	capture []byte
	cn      int
	rest    uint64 // value bytes after the captured ones, skipped

	stack []frame
	seqs  int      // frames of kind inSequence
	top   level    // the tags of the top level
	tags  []uint32 // the tags of the open levels, each level's sorted (see level)

	// The first element out of tag order, and the tag before it at its
	// level (Unordered).
	unordered     bool
	outTag, after uint32

	n        int64
	elements int
	held     int64
	elem     Element
	frag     Fragment
	err      error
}

func (s *Scanner) init(enc Encoding, known bool) {
	*s = Scanner{implicit: enc.Implicit, bigEndian: enc.BigEndian, detect: !known, first: true,
		need: 8, stack: s.stack[:0], tags: s.tags[:0]}
}

// Element returns the header of the last KindElement.
func (s *Scanner) Element() Element { return s.elem }

// Fragment returns the last KindFragment; the encapsulated element is
// still Element.
func (s *Scanner) Fragment() Fragment { return s.frag }

// Offset is the number of bytes consumed.
func (s *Scanner) Offset() int64 { return s.n }

// Depth is the number of sequences open.
func (s *Scanner) Depth() int { return s.seqs }

// Implicit reports whether the top level is read as Implicit VR (decided
// by the first element for a transfer syntax EncodingOf does not know).
func (s *Scanner) Implicit() bool { return s.implicit }

// Unordered reports whether an element came after one with a greater tag
// in its data set or item (PS3.5 §7.1 orders them by increasing tag): the
// first such element's tag, and the tag before it. It is no verdict: a
// data set out of order is read as it is (a reader that keeps elements
// sorts them or looks them up by tag), a repeat is ErrRepeated.
func (s *Scanner) Unordered() (tag, after uint32, ok bool) {
	return s.outTag, s.after, s.unordered
}

// Err is why the Scanner stopped with KindError.
func (s *Scanner) Err() error { return s.err }

// AtBoundary reports whether the next byte starts an element or item
// header at the top level: where a File Meta reader checks the group.
func (s *Scanner) AtBoundary() bool {
	return s.state == stHeader && s.hn == 0 && len(s.stack) == 0
}

// InHeader reports whether the next bytes Next consumes belong to a
// header (an element's, an item's or a delimiter's).
func (s *Scanner) InHeader() bool { return s.state == stHeader }

// Capture asks for the first len(dst) bytes of the value of the element
// just reported (KindElement, neither Sequence nor Encapsulated), or of
// the fragment (KindFragment), to be copied into dst; the rest of the
// value is skipped. KindValue follows once dst is full.
func (s *Scanner) Capture(dst []byte) {
	if s.state != stSkip || uint64(len(dst)) > s.skip || len(dst) == 0 {
		return
	}
	s.rest = s.skip - uint64(len(dst))
	s.state, s.capture, s.cn, s.skip = stCapture, dst, 0, 0
}

// Skipping returns how many bytes of a value (or fragment) the Scanner is
// about to skip: a caller that can seek moves past them and calls Skipped
// instead of passing them to Next.
func (s *Scanner) Skipping() uint64 {
	if s.state != stSkip {
		return 0
	}
	return s.skip
}

// Skipped tells the Scanner n bytes of the value being skipped were moved
// past (at most Skipping()).
func (s *Scanner) Skipped(n uint64) {
	if s.state != stSkip || n > s.skip {
		return
	}
	s.skip -= n
	s.n += int64(n)
	if s.skip == 0 {
		s.toHeader()
	}
}

func (s *Scanner) toHeader() { s.state, s.hn, s.need = stHeader, 0, 8 }

// SkipFragments moves n bytes further into the fragments of the
// encapsulated element being read, past the rest of the fragment just
// reported (KindFragment) or from the item header about to be read: the
// next token is read from the item header n bytes on, as a reader that
// knows where a fragment lies (an offset table's entry) jumps to it. The
// bytes are skipped as a value's are (Skipping, Skipped: a reader that
// can seek reads none of them), so a data set ending before them is
// ErrTruncated, and what lies there is read by the same rules as any
// header in the fragments: an item, the sequence delimiter, or
// ErrMalformed. It reports false and changes nothing anywhere else:
// outside an encapsulated element's fragments, while a value is captured,
// or inside a header.
func (s *Scanner) SkipFragments(n uint64) bool {
	if len(s.stack) == 0 || s.stack[len(s.stack)-1].kind != inFragments {
		return false
	}
	switch {
	case s.state == stSkip:
		if n > ^uint64(0)-s.skip {
			return false
		}
		s.skip += n
	case s.state == stHeader && s.hn == 0:
		if n > 0 {
			s.state, s.skip = stSkip, n
		}
	default:
		return false
	}
	return true
}

// SkipItem moves past the rest of the item being read, one of defined
// length whose elements the Scanner is among (just after KindItem, or
// after an element of it that is not a sequence, its value with the
// rest): as a value is skipped
// (Skipping, Skipped: a reader that can seek reads none of it), so a data
// set ending before the item does is ErrTruncated, and KindItemEnd
// follows. What is skipped is not read, so it is not checked: a reader
// that wants one item of many (a multi-frame object's Per-Frame Functional
// Groups item for one frame) skips the others. It reports false and
// changes nothing for an item of undefined length, whose end only reading
// it finds, anywhere but directly in an item, inside a header, and while a
// value is captured.
func (s *Scanner) SkipItem() bool {
	if len(s.stack) == 0 || s.state != stSkip && (s.state != stHeader || s.hn != 0) {
		return false
	}
	top := s.stack[len(s.stack)-1]
	if top.kind != inItem || top.end < 0 || s.n > top.end {
		return false
	}
	if n := top.end - s.n; n > 0 {
		s.state, s.skip = stSkip, uint64(n)
	}
	return true
}

// Next consumes bytes of b and returns how many, and what it found.
// atEOF says b holds the last bytes of the dataset; call Next until it
// returns KindEnd or KindError then. It may return a token having consumed
// nothing (the end of an item or sequence of defined length); given bytes,
// it consumes some or returns a token.
func (s *Scanner) Next(b []byte, atEOF bool) (int, Kind) {
	switch s.state {
	case stDone:
		if s.err != nil {
			return 0, KindError
		}
		return 0, KindEnd
	case stHeader:
		if s.hn == 0 {
			if k, ok := s.pop(); ok {
				return 0, k
			}
		}
	}
	if len(b) == 0 {
		if atEOF {
			return 0, s.end()
		}
		return 0, KindNone
	}
	switch s.state {
	case stSkip:
		k := int(min(uint64(len(b)), s.skip))
		s.skip -= uint64(k)
		s.n += int64(k)
		if s.skip == 0 {
			s.toHeader()
		}
		return k, KindNone
	case stCapture:
		k := copy(s.capture[s.cn:], b)
		s.cn += k
		s.n += int64(k)
		if s.cn < len(s.capture) {
			return k, KindNone
		}
		s.capture = nil
		if s.rest > 0 {
			s.state, s.skip = stSkip, s.rest
		} else {
			s.toHeader()
		}
		return k, KindValue
	}
	used := 0
	for {
		k := copy(s.hbuf[s.hn:s.need], b[used:])
		s.hn += k
		s.n += int64(k)
		used += k
		if s.hn < s.need {
			return used, KindNone
		}
		kind, more := s.header()
		if !more {
			return used, kind
		}
	}
}

// pop closes items and sequences of defined length that end here.
func (s *Scanner) pop() (Kind, bool) {
	if len(s.stack) == 0 {
		return 0, false
	}
	top := s.stack[len(s.stack)-1]
	if top.end < 0 || s.n < top.end {
		return 0, false
	}
	if s.n > top.end {
		return s.fail(ErrMalformed, top.tag, "content overruns the length of"), true
	}
	return s.popFrame(), true
}

func (s *Scanner) popFrame() Kind {
	top := s.stack[len(s.stack)-1]
	s.stack = s.stack[:len(s.stack)-1]
	switch top.kind {
	case inItem:
		s.tags = s.tags[:top.level.base] // its tags, the last kept
		return KindItemEnd
	case inSequence:
		s.seqs--
	}
	return KindSequenceEnd
}

// end is the verdict when the input ends.
func (s *Scanner) end() Kind {
	switch {
	case s.state != stHeader:
		return s.fail(ErrTruncated, s.elem.Tag, "dataset ends inside the value of")
	case s.hn > 0:
		return s.failAt(ErrTruncated, "dataset ends inside an element header")
	case len(s.stack) > 0:
		return s.fail(ErrTruncated, s.stack[len(s.stack)-1].tag, "dataset ends inside")
	}
	s.state = stDone
	return KindEnd
}

func (s *Scanner) fail(sentinel error, tag uint32, what string) Kind {
	s.err = &Error{Err: sentinel, Tag: tag, HasTag: true, Offset: s.n, What: what}
	s.state = stDone
	return KindError
}

func (s *Scanner) failAt(sentinel error, what string) Kind {
	s.err = &Error{Err: sentinel, Offset: s.n, What: what}
	s.state = stDone
	return KindError
}

// Error is a verdict with where it was reached.
type Error struct {
	Err    error  // ErrMalformed, ErrTruncated or ErrLimit
	Tag    uint32 // the element concerned, when HasTag
	HasTag bool
	Offset int64 // bytes consumed when the verdict was reached
	What   string
}

func (e *Error) Error() string {
	if !e.HasTag {
		return fmt.Sprintf("%v: %s (offset %d)", e.Err, e.What, e.Offset)
	}
	return fmt.Sprintf("%v: %s %s (offset %d)", e.Err, e.What, TagString(e.Tag), e.Offset)
}

func (e *Error) Unwrap() error { return e.Err }

// TagString formats a tag as (GGGG,EEEE).
func TagString(t uint32) string { return fmt.Sprintf("(%04X,%04X)", t>>16, t&0xFFFF) }

func (s *Scanner) u16(b []byte, be bool) uint16 {
	if be {
		return uint16(b[0])<<8 | uint16(b[1])
	}
	return uint16(b[0]) | uint16(b[1])<<8
}

func (s *Scanner) u32(b []byte, be bool) uint32 {
	if be {
		return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	}
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// header handles a complete header in hbuf. more is set when a long
// Explicit VR header needs its 4 length bytes first.
func (s *Scanner) header() (k Kind, more bool) {
	h := s.hbuf[:s.hn]
	implicit, be := s.implicit, s.bigEndian
	var top *frame
	if len(s.stack) > 0 {
		top = &s.stack[len(s.stack)-1]
		implicit, be = top.implicit, top.bigEndian
	}
	tag := uint32(s.u16(h[0:], be))<<16 | uint32(s.u16(h[2:], be))
	if tag>>16 == 0xFFFE {
		return s.item(top, tag, s.u32(h[4:], be)), false
	}
	if top != nil && top.kind != inItem {
		return s.fail(ErrMalformed, tag, "element in a sequence outside an item:"), false
	}
	if s.first {
		s.first = false
		if s.detect {
			// A transfer syntax we do not know: Explicit VR if the first
			// element carries a VR, as DCMTK decides. Nested levels
			// inherit the choice.
			s.implicit = !isVR(h[4], h[5])
			implicit = s.implicit
		}
	}
	var (
		length uint32
		vr     VR
	)
	if implicit {
		length = s.u32(h[4:], be)
		vr = implicitVR(tag)
	} else {
		vr = VR{h[4], h[5]}
		if vr[0] < 'A' || vr[0] > 'Z' || vr[1] < 'A' || vr[1] > 'Z' {
			return s.fail(ErrMalformed, tag, "no VR for"), false
		}
		if LongVR(vr[0], vr[1]) {
			if s.need == 8 {
				s.need = 12
				return KindNone, true
			}
			length = s.u32(h[8:], be)
		} else {
			length = uint32(s.u16(h[6:], be))
		}
	}
	lv := &s.top
	if top != nil {
		lv = &top.level
	}
	if !s.order(lv, tag) {
		return KindError, false
	}
	s.elements++
	if s.elements > MaxElements {
		return s.fail(ErrLimit, tag, fmt.Sprintf("more than %d elements at", MaxElements)), false
	}
	s.elem = Element{Tag: tag, VR: vr, Length: length, Start: s.n - int64(s.hn), Offset: s.n, Depth: s.seqs}
	s.hn, s.need = 0, 8
	un := vr.Is("UN")
	switch {
	// Undefined length means items follow, whatever an Implicit VR
	// dictionary says (as DCMTK reads it); Pixel Data's are fragments.
	case vr.Is("SQ") || length == UndefinedLength && tag != TagPixelData && (un || implicit):
		s.elem.Sequence = true
		// UN content is Implicit VR Little Endian (PS3.5 §6.2.2).
		if un {
			implicit, be = true, false
		}
		if s.seqs == MaxDepth {
			return s.fail(ErrLimit, tag, fmt.Sprintf("sequences nested deeper than %d at", MaxDepth)), false
		}
		if !s.push(top, frame{kind: inSequence, implicit: implicit, bigEndian: be, tag: tag}, length) {
			return KindError, false
		}
		s.seqs++
		s.state = stHeader
	case length == UndefinedLength:
		if tag != TagPixelData {
			return s.fail(ErrMalformed, tag, fmt.Sprintf("undefined length on %s", vr)), false
		}
		s.elem.Encapsulated = true
		if !s.push(top, frame{kind: inFragments, implicit: implicit, bigEndian: be, tag: tag}, length) {
			return KindError, false
		}
		s.state = stHeader
	default:
		if top != nil && top.end >= 0 && s.n+int64(length) > top.end {
			return s.fail(ErrMalformed, tag, "value overruns its item:"), false
		}
		if length <= MaxValueHeld && !IsPixelData(tag) {
			s.held += int64(length)
			if s.held > MaxHeldBytes {
				return s.fail(ErrLimit, tag, fmt.Sprintf("more than %d bytes of header values at", MaxHeldBytes)), false
			}
		}
		if length > 0 {
			s.state, s.skip = stSkip, uint64(length)
		}
	}
	return KindElement, false
}

// order checks an element's tag against those before it at its level
// (PS3.5 §7.1: increasing, each at most once) and keeps it. A step back is
// tolerated and reported (Unordered); a repeat is ErrRepeated, and one the
// Scanner cannot tell from a repeat (its tags were used up) ErrOrder.
func (s *Scanner) order(lv *level, tag uint32) bool {
	if uint64(tag) >= lv.next {
		// In order, the normal case: the tag before it is the greatest.
		lv.next = uint64(tag) + 1
		if len(s.tags) < MaxTagsHeld {
			s.tags = append(s.tags, tag)
		} else {
			lv.full = true
		}
		return true
	}
	held := s.tags[lv.base:]
	i, found := slices.BinarySearch(held, tag)
	switch {
	case found:
		s.fail(ErrRepeated, tag, "tag")
		return false
	case lv.full || len(s.tags) >= MaxTagsHeld:
		s.fail(ErrOrder, tag, fmt.Sprintf("more than %d tags to check for a repeat at", MaxTagsHeld))
		return false
	}
	if !s.unordered {
		s.unordered, s.outTag, s.after = true, tag, uint32(lv.next-1)
	}
	s.tags = slices.Insert(s.tags, lv.base+i, tag)
	return true
}

// push opens a sequence, item or fragments level whose content is length
// bytes (or delimited).
func (s *Scanner) push(top *frame, f frame, length uint32) bool {
	f.end = -1
	if length != UndefinedLength {
		f.end = s.n + int64(length)
		if top != nil && top.end >= 0 && f.end > top.end {
			s.fail(ErrMalformed, f.tag, "content overruns its item:")
			return false
		}
	}
	s.stack = append(s.stack, f)
	return true
}

// item handles (FFFE,E000), (FFFE,E00D) and (FFFE,E0DD).
func (s *Scanner) item(top *frame, tag, length uint32) Kind {
	s.hn, s.need = 0, 8
	if top == nil {
		return s.fail(ErrMalformed, tag, "item or delimiter at the top level:")
	}
	switch {
	case tag == tagItem && top.kind == inSequence:
		s.elements++
		if s.elements > MaxElements {
			return s.fail(ErrLimit, top.tag, fmt.Sprintf("more than %d elements in", MaxElements))
		}
		it := frame{kind: inItem, implicit: top.implicit, bigEndian: top.bigEndian, tag: top.tag, level: level{base: len(s.tags)}}
		if !s.push(top, it, length) {
			return KindError
		}
		return KindItem
	case tag == tagItem && top.kind == inFragments:
		if length == UndefinedLength {
			return s.fail(ErrMalformed, top.tag, "fragment of undefined length in")
		}
		s.frag = Fragment{Offset: s.n, Length: length}
		if length > 0 {
			s.state, s.skip = stSkip, uint64(length)
		}
		return KindFragment
	case tag == tagItemDelim && top.kind == inItem && top.end < 0,
		tag == tagSeqDelim && top.kind != inItem && top.end < 0:
		// A delimiter's length should be 0; DCMTK and the standard's own
		// readers ignore it, and so do we.
		return s.popFrame()
	}
	return s.fail(ErrMalformed, top.tag, fmt.Sprintf("unexpected %s in", TagString(tag)))
}

// LongVR reports whether an Explicit VR element with the VR a b has 2
// reserved bytes and a 32-bit length (PS3.5 §7.1.2); the others have a
// 16-bit length.
func LongVR(a, b byte) bool {
	switch uint16(a)<<8 | uint16(b) {
	case 'O'<<8 | 'B', 'O'<<8 | 'D', 'O'<<8 | 'F', 'O'<<8 | 'L', 'O'<<8 | 'V', 'O'<<8 | 'W',
		'S'<<8 | 'Q', 'S'<<8 | 'V', 'U'<<8 | 'C', 'U'<<8 | 'N', 'U'<<8 | 'R', 'U'<<8 | 'T', 'U'<<8 | 'V':
		return true
	}
	return false
}

// isVR reports whether a, b are a VR of PS3.5 Table 6.2-1.
func isVR(a, b byte) bool {
	switch uint16(a)<<8 | uint16(b) {
	case 'A'<<8 | 'E', 'A'<<8 | 'S', 'A'<<8 | 'T', 'C'<<8 | 'S', 'D'<<8 | 'A', 'D'<<8 | 'S', 'D'<<8 | 'T',
		'F'<<8 | 'L', 'F'<<8 | 'D', 'I'<<8 | 'S', 'L'<<8 | 'O', 'L'<<8 | 'T', 'O'<<8 | 'B', 'O'<<8 | 'D',
		'O'<<8 | 'F', 'O'<<8 | 'L', 'O'<<8 | 'V', 'O'<<8 | 'W', 'P'<<8 | 'N', 'S'<<8 | 'H', 'S'<<8 | 'L',
		'S'<<8 | 'Q', 'S'<<8 | 'S', 'S'<<8 | 'T', 'S'<<8 | 'V', 'T'<<8 | 'M', 'U'<<8 | 'C', 'U'<<8 | 'I',
		'U'<<8 | 'L', 'U'<<8 | 'N', 'U'<<8 | 'R', 'U'<<8 | 'S', 'U'<<8 | 'T', 'U'<<8 | 'V':
		return true
	}
	return false
}
