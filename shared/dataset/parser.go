package dataset

import (
	"errors"
	"fmt"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/part10"
)

// Errors recorded in Header.Err. None of them stops the bytes flowing.
var (
	// ErrMalformed means the dataset's structure could not be followed
	// (a VR that is not two letters, an item outside a sequence, nesting
	// deeper than MaxDepth, a corrupt deflate stream).
	ErrMalformed = errors.New("dataset: malformed dataset")
	// ErrTruncated means the dataset ended inside an element or sequence.
	ErrTruncated = errors.New("dataset: dataset ends inside an element")
	// ErrHeaderTooLong means the header was not complete within the
	// configured number of bytes (see WithMaxHeaderBytes).
	ErrHeaderTooLong = errors.New("dataset: header longer than the limit")
)

// Header is what an Inspector learned from the top level of a dataset.
type Header struct {
	SOPClassUID       string // (0008,0016)
	SOPInstanceUID    string // (0008,0018)
	StudyInstanceUID  string // (0020,000D)
	SeriesInstanceUID string // (0020,000E)

	// Group0002 is set when top-level group 0002 (File Meta) elements
	// appeared in the dataset, where they do not belong.
	Group0002 bool
	// Group0002Dropped is set when such elements were removed from the
	// stream (DropGroup0002): the SCP answers B006. One that could not be
	// removed whole (undefined length, or longer than the header limit)
	// stays, and so do all later ones.
	Group0002Dropped bool

	// Done is set once inspection is over; the fields no longer change.
	Done bool
	// Err says why inspection stopped early; nil once Done means the
	// header was read to its end (a tag past (0020,000E) or a clean end
	// of the dataset), so an empty UID field is truly absent.
	Err error
}

// MaxDepth bounds the nesting of undefined-length sequences and items.
const MaxDepth = 64

// Wire constants.
const (
	undefinedLength = 0xFFFFFFFF
	tagItem         = 0xFFFEE000
	tagItemDelim    = 0xFFFEE00D
	tagSeqDelim     = 0xFFFEE0DD
	tagLastWanted   = 0x0020000E
	maxCapture      = 128 // bytes of a wanted value kept; UIDs have at most 64
)

type parseState uint8

const (
	stHeader parseState = iota // collecting an element header into hbuf
	stValue                    // collecting a wanted value into vbuf
	stSkip                     // skipping a value
)

type levelKind uint8

const (
	inSequence levelKind = iota + 1 // expecting items or a sequence delimiter
	inItem                          // expecting elements or an item delimiter
)

type level struct {
	kind      levelKind
	implicit  bool
	bigEndian bool
}

// parser is a push parser: it takes the dataset in chunks of any size and
// never allocates per element. Values are skipped, never read, except the
// four wanted ones at the top level.
type parser struct {
	implicit, detect bool
	rootBigEndian    bool
	bigEndian        bool // of the current level

	state  parseState
	hbuf   [12]byte
	hn     int // bytes in hbuf
	need   int // header bytes needed: 8, or 12 for a long Explicit VR
	skip   uint64
	vbuf   [maxCapture]byte
	vn     int
	vlen   int
	vtotal uint64
	target *string

	stack [MaxDepth]level
	depth int

	n, max int64
	hdr    Header

	// Group 0002 removal (DropGroup0002, not for deflated datasets). While
	// dropPhase is on (only at the start: group 0002 sorts first), header
	// bytes are held back until the element is known, and kept bytes are
	// appended to out (buffered is set by the Inspector for such chunks).
	dropPhase  bool
	buffered   bool
	keep       bool
	out        []byte
	droppedAny bool
	first      bool
}

func (p *parser) init(enc Encoding, known bool, max int64, drop bool) {
	p.implicit, p.rootBigEndian, p.detect = enc.Implicit, enc.BigEndian, !known
	p.need, p.max, p.keep, p.first = 8, max, true, true
	p.dropPhase = drop && !enc.Deflated
}

func (p *parser) u16(b []byte) uint16 {
	if p.bigEndian {
		return uint16(b[0])<<8 | uint16(b[1])
	}
	return uint16(b[0]) | uint16(b[1])<<8
}

func (p *parser) u32(b []byte) uint32 {
	if p.bigEndian {
		return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	}
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func (p *parser) emit(b []byte) {
	if p.buffered {
		p.out = append(p.out, b...)
	}
}

// feed parses b. In buffered mode the bytes to pass on are appended to out.
func (p *parser) feed(b []byte) {
	for len(b) > 0 && !p.hdr.Done {
		var k int
		switch p.state {
		case stHeader:
			k = copy(p.hbuf[p.hn:p.need], b)
			p.hn += k
			if !p.dropPhase {
				p.emit(b[:k])
			}
			p.n += int64(k)
			b = b[k:]
			if p.hn == p.need {
				p.header()
			}
		case stValue:
			k = min(len(b), p.vlen-p.vn)
			copy(p.vbuf[p.vn:], b[:k])
			p.vn += k
			p.emit(b[:k])
			p.n += int64(k)
			b = b[k:]
			if p.vn == p.vlen {
				*p.target = strings.Trim(string(p.vbuf[:p.vlen]), " \x00")
				p.startSkip(p.vtotal - uint64(p.vlen))
			}
		case stSkip:
			k = int(min(uint64(len(b)), p.skip))
			if p.keep {
				p.emit(b[:k])
			}
			p.skip -= uint64(k)
			p.n += int64(k)
			b = b[k:]
			if p.skip == 0 {
				p.state, p.keep = stHeader, true
			}
		}
		if !p.hdr.Done && p.n >= p.max {
			p.finish(ErrHeaderTooLong)
		}
	}
	if p.hdr.Done {
		p.emit(b) // the rest of the chunk passes untouched
	}
}

func (p *parser) startSkip(n uint64) {
	p.hn, p.need = 0, 8
	if n == 0 {
		p.state, p.keep = stHeader, true
		return
	}
	p.state, p.skip = stSkip, n
}

// header handles a complete element header in hbuf.
func (p *parser) header() {
	h := p.hbuf[:p.hn]
	implicit := p.implicit
	p.bigEndian = p.rootBigEndian
	if p.depth > 0 {
		implicit, p.bigEndian = p.stack[p.depth-1].implicit, p.stack[p.depth-1].bigEndian
	}
	tag := uint32(p.u16(h[0:]))<<16 | uint32(p.u16(h[2:]))
	if tag>>16 == 0xFFFE {
		p.item(tag, p.u32(h[4:]))
		return
	}
	if p.first {
		p.first = false
		if p.detect {
			// Unknown transfer syntax: Explicit VR if the first element
			// carries a VR. Nested levels inherit the choice.
			p.implicit = !isVR(h[4], h[5])
			implicit = p.implicit
		}
	}
	var length uint32
	un := false
	if implicit {
		length = p.u32(h[4:])
	} else {
		a, c := h[4], h[5]
		if a < 'A' || a > 'Z' || c < 'A' || c > 'Z' {
			p.finish(fmt.Errorf("%w: element (%04X,%04X) has no VR", ErrMalformed, tag>>16, tag&0xFFFF))
			return
		}
		if part10.LongVR(a, c) {
			if p.need == 8 {
				p.need = 12
				return
			}
			length = p.u32(h[8:])
		} else {
			length = uint32(p.u16(h[6:]))
		}
		un = a == 'U' && c == 'N'
	}
	p.element(tag, length, implicit || un, p.bigEndian && !un)
}

// item handles (FFFE,E000), (FFFE,E00D) and (FFFE,E0DD).
func (p *parser) item(tag, length uint32) {
	p.releaseHeld()
	if p.depth == 0 {
		p.finish(fmt.Errorf("%w: item tag (%04X,%04X) at the top level", ErrMalformed, tag>>16, tag&0xFFFF))
		return
	}
	top := &p.stack[p.depth-1]
	switch {
	case tag == tagItem && top.kind == inSequence:
		if length == undefinedLength {
			p.push(inItem, top.implicit, top.bigEndian)
			return
		}
		p.startSkip(uint64(length))
	case tag == tagItemDelim && top.kind == inItem, tag == tagSeqDelim && top.kind == inSequence:
		p.depth--
		p.startSkip(0)
	default:
		p.finish(fmt.Errorf("%w: unexpected (%04X,%04X) at depth %d", ErrMalformed, tag>>16, tag&0xFFFF, p.depth))
	}
}

// element handles a data element header; nestedImplicit and nestedBE are
// the encoding of its items if it has an undefined length (the content of
// UN is Implicit VR Little Endian, PS3.5 §6.2.2).
func (p *parser) element(tag, length uint32, nestedImplicit, nestedBE bool) {
	if p.depth > 0 && p.stack[p.depth-1].kind == inSequence {
		p.releaseHeld()
		p.finish(fmt.Errorf("%w: element (%04X,%04X) in a sequence outside an item", ErrMalformed, tag>>16, tag&0xFFFF))
		return
	}
	if p.depth == 0 {
		if tag > tagLastWanted {
			p.releaseHeld()
			p.finish(nil)
			return
		}
		if tag>>16 == 0x0002 {
			p.hdr.Group0002 = true
			// Drop only what can be skipped whole within the limit: an
			// element cut by the limit would leave its tail in the stream.
			if p.dropPhase && length != undefinedLength && int64(length) <= p.max-p.n {
				p.droppedAny = true
				p.hn, p.need = 0, 8 // held header bytes are dropped
				if length == 0 {
					p.state = stHeader
					return
				}
				p.state, p.skip, p.keep = stSkip, uint64(length), false
				return
			}
			p.releaseHeld()
			p.dropPhase = false
		}
		if tag>>16 > 0x0002 {
			p.releaseHeld()
			p.dropPhase = false // group 0002 sorts first: none can follow
		}
	}
	p.releaseHeld()
	if length == undefinedLength {
		p.push(inSequence, nestedImplicit, nestedBE)
		return
	}
	if p.depth == 0 {
		switch tag {
		case 0x00080016:
			p.target = &p.hdr.SOPClassUID
		case 0x00080018:
			p.target = &p.hdr.SOPInstanceUID
		case 0x0020000D:
			p.target = &p.hdr.StudyInstanceUID
		case 0x0020000E:
			p.target = &p.hdr.SeriesInstanceUID
		default:
			p.startSkip(uint64(length))
			return
		}
		p.hn, p.need = 0, 8
		p.state, p.vn, p.vtotal = stValue, 0, uint64(length)
		p.vlen = int(min(uint64(length), maxCapture))
		if p.vlen == 0 {
			*p.target = ""
			p.state = stHeader
		}
		return
	}
	p.startSkip(uint64(length))
}

func (p *parser) push(kind levelKind, implicit, bigEndian bool) {
	if p.depth == MaxDepth {
		p.finish(fmt.Errorf("%w: nested deeper than %d", ErrMalformed, MaxDepth))
		return
	}
	p.stack[p.depth] = level{kind: kind, implicit: implicit, bigEndian: bigEndian}
	p.depth++
	p.startSkip(0)
}

// releaseHeld passes on the header bytes held back during the drop phase
// (a header is released once its element is known to be kept) and gets
// ready for the next header.
func (p *parser) releaseHeld() {
	if p.dropPhase && p.hn > 0 {
		p.emit(p.hbuf[:p.hn])
	}
	p.hn, p.need = 0, 8
}

// eof tells the parser the dataset ended.
func (p *parser) eof() {
	if p.hdr.Done {
		return
	}
	if p.depth == 0 && p.state == stHeader && p.hn == 0 {
		p.finish(nil)
		return
	}
	p.finish(ErrTruncated)
}

func (p *parser) finish(err error) {
	if p.dropPhase && p.state == stHeader && p.hn > 0 {
		p.emit(p.hbuf[:p.hn])
	}
	p.dropPhase = false
	p.hdr.Done, p.hdr.Err = true, err
	p.hdr.Group0002Dropped = p.droppedAny
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
