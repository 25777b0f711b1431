package pipeline

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/suyashkumar/dicom/pkg/tag"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
)

// ErrNotPart10 marks an object that is not a DICOM Part 10 file.
var ErrNotPart10 = errors.New("pipeline: not a DICOM Part 10 file")

// ErrMalformed marks a header that cannot be parsed.
var ErrMalformed = errors.New("pipeline: malformed dataset")

// Limits that keep a hostile header from costing much.
const (
	maxInlineValue = 64 << 10 // larger values are skipped and kept as bulk data
	maxDepth       = 12
	maxElements    = 200000
	undefinedLen   = 0xFFFFFFFF
)

// dataElement is one element of a parsed header. Values above
// maxInlineValue (and all pixel data) are skipped, not read.
type dataElement struct {
	Tag   uint32
	VR    string
	Len   uint32 // as encoded; undefinedLen for undefined length
	Value []byte // raw value bytes; nil for bulk or sequences
	Items []*dataSet
	// Bulk is set when the value was skipped; Offset and Len locate it in
	// the (inflated) stream.
	Bulk   bool
	Offset int64
}

type dataSet struct {
	Elements []*dataElement
}

// find returns the element with tag t at this level.
func (d *dataSet) find(t uint32) *dataElement {
	if d == nil {
		return nil
	}
	for _, e := range d.Elements {
		if e.Tag == t {
			return e
		}
	}
	return nil
}

// header is a parsed Part 10 header: File Meta Information and the dataset
// up to (not including) Pixel Data.
type header struct {
	Meta           dataSet
	Data           dataSet
	TransferSyntax string
	BigEndian      bool
	Implicit       bool
	Deflated       bool
	// PixelData is the top-level pixel data element found (value skipped),
	// nil if the dataset has none.
	PixelData *dataElement
	// Unordered is set when top-level tags were not ascending.
	Unordered bool
}

func tagOf(g, e uint16) uint32 { return uint32(g)<<16 | uint32(e) }

func tagString(t uint32) string { return fmt.Sprintf("(%04X,%04X)", t>>16, t&0xFFFF) }

// Tags the pipeline reads.
var (
	tagMediaSOPClass     = tagOf(0x0002, 0x0002)
	tagMediaSOPInstance  = tagOf(0x0002, 0x0003)
	tagTransferSyntax    = tagOf(0x0002, 0x0010)
	tagSourceAE          = tagOf(0x0002, 0x0016)
	tagSpecificCharSet   = tagOf(0x0008, 0x0005)
	tagSOPClassUID       = tagOf(0x0008, 0x0016)
	tagSOPInstanceUID    = tagOf(0x0008, 0x0018)
	tagStudyDate         = tagOf(0x0008, 0x0020)
	tagStudyTime         = tagOf(0x0008, 0x0030)
	tagAccessionNumber   = tagOf(0x0008, 0x0050)
	tagModality          = tagOf(0x0008, 0x0060)
	tagStudyDescription  = tagOf(0x0008, 0x1030)
	tagSeriesDescription = tagOf(0x0008, 0x103E)
	tagPatientName       = tagOf(0x0010, 0x0010)
	tagPatientID         = tagOf(0x0010, 0x0020)
	tagPatientBirthDate  = tagOf(0x0010, 0x0030)
	tagPatientSex        = tagOf(0x0010, 0x0040)
	tagStudyInstanceUID  = tagOf(0x0020, 0x000D)
	tagSeriesInstanceUID = tagOf(0x0020, 0x000E)
	tagSeriesNumber      = tagOf(0x0020, 0x0011)
	tagInstanceNumber    = tagOf(0x0020, 0x0013)
	tagPixelData         = tagOf(0x7FE0, 0x0010)
	tagFloatPixelData    = tagOf(0x7FE0, 0x0008)
	tagDoublePixelData   = tagOf(0x7FE0, 0x0009)
	tagItem              = tagOf(0xFFFE, 0xE000)
	tagItemDelim         = tagOf(0xFFFE, 0xE00D)
	tagSeqDelim          = tagOf(0xFFFE, 0xE0DD)
)

func isPixelData(t uint32) bool {
	return t == tagPixelData || t == tagFloatPixelData || t == tagDoublePixelData
}

// readHeader parses a Part 10 stream up to Pixel Data.
func readHeader(src source) (*header, error) {
	pre, err := src.Peek(132)
	if err != nil || !bytes.Equal(pre[128:132], []byte("DICM")) {
		return nil, fmt.Errorf("%w: no DICM prefix at offset 128", ErrNotPart10)
	}
	if err := src.Skip(132); err != nil {
		return nil, err
	}
	h := &header{}
	meta := &reader{src: src, order: binary.LittleEndian}
	// File Meta Information: group 0002, explicit VR little endian, read
	// while the next tag is in group 0002.
	for {
		b, err := src.Peek(2)
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
		if binary.LittleEndian.Uint16(b) != 0x0002 {
			break
		}
		e, err := meta.element(0)
		if err != nil {
			return nil, fmt.Errorf("pipeline: file meta: %w", err)
		}
		h.Meta.Elements = append(h.Meta.Elements, e)
		if len(h.Meta.Elements) > 1000 {
			return nil, fmt.Errorf("%w: file meta too long", ErrMalformed)
		}
	}
	ts := ""
	if e := h.Meta.find(tagTransferSyntax); e != nil {
		ts = trimUID(e.Value)
	}
	h.TransferSyntax = ts
	if ts == "" {
		return h, fmt.Errorf("%w: no transfer syntax in file meta", ErrMalformed)
	}
	// Unknown (private) syntaxes read as explicit VR little endian, as do
	// the compressed ones.
	enc, _ := dataset.EncodingOf(ts)
	r := &reader{src: src, order: binary.LittleEndian, implicit: enc.Implicit}
	switch {
	case enc.BigEndian:
		r.order = binary.BigEndian
	case enc.Deflated:
		r.src = newStreamSource(flate.NewReader(sourceReader{src}))
	}
	h.BigEndian, h.Implicit, h.Deflated = enc.BigEndian, enc.Implicit, enc.Deflated
	var last uint32
	for {
		_, err := r.src.Peek(1)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return h, nil // dataset without pixel data
			}
			return h, err
		}
		e, err := r.element(0)
		if err != nil {
			return h, err
		}
		if e.Tag < last {
			h.Unordered = true
		}
		last = e.Tag
		if isPixelData(e.Tag) {
			h.PixelData = e
			return h, nil
		}
		h.Data.Elements = append(h.Data.Elements, e)
	}
}

type reader struct {
	src      source
	order    binary.ByteOrder
	implicit bool
	count    int
}

func (r *reader) u16(b []byte) uint16 { return r.order.Uint16(b) }
func (r *reader) u32(b []byte) uint32 { return r.order.Uint32(b) }

// elementHeader reads tag, VR and length.
func (r *reader) elementHeader() (t uint32, vr string, vl uint32, err error) {
	var b [8]byte
	if err := r.src.ReadFull(b[:]); err != nil {
		return 0, "", 0, err
	}
	t = uint32(r.u16(b[0:]))<<16 | uint32(r.u16(b[2:]))
	if t>>16 == 0xFFFE || r.implicit {
		vl = r.u32(b[4:])
		if t>>16 != 0xFFFE {
			vr = implicitVR(t)
		}
		return t, vr, vl, nil
	}
	vr = string(b[4:6])
	if vr[0] < 'A' || vr[0] > 'Z' || vr[1] < 'A' || vr[1] > 'Z' {
		return t, "", 0, fmt.Errorf("%w: invalid VR %q at %s", ErrMalformed, vr, tagString(t))
	}
	if part10.LongVR(vr[0], vr[1]) {
		var l [4]byte
		if err := r.src.ReadFull(l[:]); err != nil {
			return t, vr, 0, err
		}
		return t, vr, r.u32(l[:]), nil
	}
	return t, vr, uint32(r.u16(b[6:])), nil
}

// implicitVR looks a tag's VR up in the data dictionary.
func implicitVR(t uint32) string {
	g, e := uint16(t>>16), uint16(t)
	if e == 0 {
		return "UL" // group length
	}
	if tag.IsPrivate(g) {
		if e >= 0x0010 && e <= 0x00FF {
			return "LO" // private creator
		}
		return "UN"
	}
	info, err := tag.Find(tag.Tag{Group: g, Element: e})
	if err != nil || len(info.VRs) == 0 {
		return "UN"
	}
	switch vr := info.VRs[0]; vr {
	case "OB or OW", "OW or OB":
		return "OW"
	case "US or SS", "US or SS or OW":
		return "US"
	default:
		if len(vr) != 2 {
			return "UN"
		}
		return vr
	}
}

// element reads one element (and its items, for sequences).
func (r *reader) element(depth int) (*dataElement, error) {
	r.count++
	if r.count > maxElements {
		return nil, fmt.Errorf("%w: too many elements", ErrMalformed)
	}
	t, vr, vl, err := r.elementHeader()
	if err != nil {
		return nil, err
	}
	if t>>16 == 0xFFFE {
		return nil, fmt.Errorf("%w: unexpected %s in a dataset", ErrMalformed, tagString(t))
	}
	e := &dataElement{Tag: t, VR: vr, Len: vl, Offset: r.src.Pos()}
	switch {
	case isPixelData(t) && depth == 0:
		// Stop here: the caller never reads pixel data.
		e.Bulk = true
		return e, nil
	case vr == "SQ" || (vl == undefinedLen && vr == "UN"):
		if vr == "UN" {
			// PS3.5 6.2.2: UN with undefined length is an implicit VR LE
			// sequence.
			e.VR = "SQ"
			sub := &reader{src: r.src, order: binary.LittleEndian, implicit: true, count: r.count}
			err = sub.sequence(e, depth+1)
			r.count = sub.count
		} else {
			err = r.sequence(e, depth+1)
		}
		return e, err
	case vl == undefinedLen:
		if !isPixelData(t) {
			return nil, fmt.Errorf("%w: undefined length for %s %s", ErrMalformed, vr, tagString(t))
		}
		// Encapsulated pixel data inside a sequence (an icon): skip the
		// fragments.
		e.Bulk = true
		return e, r.skipFragments()
	case vl > maxInlineValue || isPixelData(t):
		e.Bulk = true
		return e, r.src.Skip(int64(vl))
	default:
		e.Value = make([]byte, vl)
		return e, r.src.ReadFull(e.Value)
	}
}

func (r *reader) sequence(e *dataElement, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: sequences nested deeper than %d", ErrMalformed, maxDepth)
	}
	start := r.src.Pos()
	for {
		if e.Len != undefinedLen && r.src.Pos()-start >= int64(e.Len) {
			if r.src.Pos()-start > int64(e.Len) {
				return fmt.Errorf("%w: items overrun sequence %s", ErrMalformed, tagString(e.Tag))
			}
			return nil
		}
		t, _, vl, err := r.itemHeader()
		if err != nil {
			return err
		}
		switch t {
		case tagSeqDelim:
			if e.Len != undefinedLen {
				return fmt.Errorf("%w: delimiter in defined-length sequence", ErrMalformed)
			}
			return nil
		case tagItem:
		default:
			return fmt.Errorf("%w: %s where an item was expected", ErrMalformed, tagString(t))
		}
		item := &dataSet{}
		itemStart := r.src.Pos()
		for {
			if vl != undefinedLen && r.src.Pos()-itemStart >= int64(vl) {
				break
			}
			if vl == undefinedLen {
				b, err := r.src.Peek(4)
				if err != nil {
					return ErrTruncated
				}
				if uint32(r.u16(b))<<16|uint32(r.u16(b[2:])) == tagItemDelim {
					if _, _, _, err := r.itemHeader(); err != nil {
						return err
					}
					break
				}
			}
			c, err := r.element(depth)
			if err != nil {
				return err
			}
			item.Elements = append(item.Elements, c)
		}
		if vl != undefinedLen && r.src.Pos()-itemStart != int64(vl) {
			return fmt.Errorf("%w: elements overrun item in %s", ErrMalformed, tagString(e.Tag))
		}
		e.Items = append(e.Items, item)
	}
}

// itemHeader reads an item or delimiter tag and its 4-byte length.
func (r *reader) itemHeader() (uint32, string, uint32, error) {
	var b [8]byte
	if err := r.src.ReadFull(b[:]); err != nil {
		return 0, "", 0, err
	}
	return uint32(r.u16(b[0:]))<<16 | uint32(r.u16(b[2:])), "", r.u32(b[4:]), nil
}

func (r *reader) skipFragments() error {
	for {
		t, _, vl, err := r.itemHeader()
		if err != nil {
			return err
		}
		switch t {
		case tagSeqDelim:
			return nil
		case tagItem:
			if vl == undefinedLen {
				return fmt.Errorf("%w: undefined-length fragment", ErrMalformed)
			}
			if err := r.src.Skip(int64(vl)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: %s in encapsulated pixel data", ErrMalformed, tagString(t))
		}
	}
}

// trimUID strips the padding of a UI value.
func trimUID(b []byte) string {
	return strings.TrimRight(string(b), "\x00 ")
}
