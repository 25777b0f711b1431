package part10

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
)

// MaxMetaLen bounds the File Meta Information ReadMeta accepts. Real meta
// groups are a few hundred bytes; the limit only stops lying lengths.
const MaxMetaLen = 64 << 10

// ReadMeta reads the preamble, "DICM" and the File Meta Information from r
// and leaves r positioned at the first byte of the dataset, so the caller
// can stream the dataset as it is (deflated stays deflated). A
// *bufio.Reader is a dataset.Source; so is the pipeline's ranged object
// reader. The elements are read with the one element reader, package
// dataset's, as Explicit VR Little Endian (PS3.10 §7.1).
//
// A preamble is required: a stream without "DICM" at offset 128 is not a
// Part 10 file (ErrNotPart10); raw datasets are not guessed at.
//
// The File Meta rule, the same for every reader in this module: the group
// length (0002,0000), when it comes first and is consistent, bounds the
// group, so a deflated dataset whose first bytes happen to read as a group
// 0002 tag, or group 0002 elements wrongly placed in the dataset, are not
// taken for meta. When the group length is absent or an element crosses
// it, the group ends at the first tag outside group 0002. No read or
// allocation exceeds MaxMetaLen. Elements out of tag order are read on and
// reported (Meta.Unordered), a repeat is ErrMalformedMeta, as in the data
// set.
func ReadMeta(r dataset.Source) (Meta, error) {
	var m Meta
	head, err := r.Peek(PreambleLen + 4)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return m, fmt.Errorf("%w: %d-byte preamble and DICM missing", ErrNotPart10, PreambleLen+4)
		}
		return m, fmt.Errorf("part10: read preamble: %w", err)
	}
	if string(head[PreambleLen:]) != "DICM" {
		return m, fmt.Errorf("%w: no DICM prefix", ErrNotPart10)
	}
	if _, err := r.Discard(PreambleLen + 4); err != nil {
		return m, fmt.Errorf("part10: read preamble: %w", err)
	}

	d := dataset.NewDecoder(r, ExplicitVRLittleEndian)
	var (
		groupEnd int64 = -1 // where (0002,0000) says the group ends, while believed
		valueBuf [maxUI * 2]byte
		value    []byte
		elem     uint16
		any      bool
	)
	for {
		if d.AtBoundary() {
			if groupEnd >= 0 && d.Offset() == groupEnd {
				break // the declared group is complete
			}
			if groupEnd >= 0 && d.Offset() > groupEnd {
				// An element crossed the declared end: the group length
				// lies, so fall back to reading while the group is 0002.
				groupEnd = -1
			}
			p, err := r.Peek(2)
			if len(p) < 2 {
				if len(p) == 0 && errors.Is(err, io.EOF) {
					break // meta with an empty dataset
				}
				if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return m, fmt.Errorf("%w: truncated element", ErrMalformedMeta)
				}
				return m, fmt.Errorf("part10: read meta: %w", err)
			}
			if binary.LittleEndian.Uint16(p) != 0x0002 {
				break
			}
		}
		k, err := d.Step()
		switch k {
		case dataset.KindError:
			var verdict *dataset.Error
			if errors.As(err, &verdict) {
				return m, fmt.Errorf("%w: %w", ErrMalformedMeta, err)
			}
			return m, fmt.Errorf("part10: read meta: %w", err)
		case dataset.KindEnd:
			return finish(m, any, d)
		case dataset.KindElement:
			e := d.Element()
			elem, value, any = uint16(e.Tag), nil, true
			if e.Sequence || e.Encapsulated || e.Length == dataset.UndefinedLength {
				return m, fmt.Errorf("%w: element (0002,%04X) of undefined length", ErrMalformedMeta, elem)
			}
			if e.Offset+int64(e.Length) > MaxMetaLen {
				return m, fmt.Errorf("%w: group longer than %d bytes", ErrMalformedMeta, MaxMetaLen)
			}
			switch elem {
			case 0x0000, 0x0002, 0x0003, 0x0010, 0x0012, 0x0013, 0x0016, 0x0017, 0x0018:
				if e.Length > uint32(len(valueBuf)) {
					return m, fmt.Errorf("%w: element (0002,%04X) length %d", ErrMalformedMeta, elem, e.Length)
				}
				value = valueBuf[:e.Length]
				if e.Length == 0 {
					m.set(elem, nil, e, &groupEnd)
				} else {
					d.Capture(value)
				}
			}
		case dataset.KindValue:
			m.set(elem, value, d.Element(), &groupEnd)
		}
	}
	return finish(m, any, d)
}

// set records a meta value.
func (m *Meta) set(elem uint16, val []byte, e dataset.Element, groupEnd *int64) {
	switch elem {
	case 0x0000:
		// Only as the group's first element.
		if len(val) == 4 && e.Start == 0 {
			*groupEnd = e.Offset + 4 + int64(binary.LittleEndian.Uint32(val))
		}
	case 0x0002:
		m.MediaStorageSOPClassUID = trimUID(string(val))
	case 0x0003:
		m.MediaStorageSOPInstanceUID = trimUID(string(val))
	case 0x0010:
		m.TransferSyntaxUID = trimUID(string(val))
	case 0x0012:
		m.ImplementationClassUID = trimUID(string(val))
	case 0x0013:
		m.ImplementationVersionName = trimText(string(val))
	case 0x0016:
		m.SourceApplicationEntityTitle = trimText(string(val))
	case 0x0017:
		m.SendingApplicationEntityTitle = trimText(string(val))
	case 0x0018:
		m.ReceivingApplicationEntityTitle = trimText(string(val))
	}
}

// finish checks what the group must hold, and tells whether its elements
// were in order (Meta.Unordered).
func finish(m Meta, any bool, d *dataset.Decoder) (Meta, error) {
	m.Misplaced, m.After, m.Unordered = d.Unordered()
	if !any {
		return m, fmt.Errorf("%w: no group 0002 elements", ErrMalformedMeta)
	}
	if m.TransferSyntaxUID == "" {
		return m, fmt.Errorf("%w: transfer syntax UID (0002,0010) missing", ErrMalformedMeta)
	}
	return m, nil
}
