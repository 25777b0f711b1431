package part10

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxMetaLen bounds the File Meta Information ReadMeta accepts. Real meta
// groups are a few hundred bytes; the limit only stops lying lengths.
const MaxMetaLen = 64 << 10

// ReadMeta reads the preamble, "DICM" and the File Meta Information from r
// and leaves r positioned at the first byte of the dataset, so the caller
// can stream the dataset as it is (deflated stays deflated).
//
// A preamble is required: a stream without "DICM" at offset 128 is not a
// Part 10 file (ErrNotPart10); raw datasets are not guessed at.
//
// The group length (0002,0000), when present and consistent, bounds the
// group: a deflated dataset whose first bytes happen to read as a group 0002
// tag, or group 0002 elements wrongly placed in the dataset, are not taken
// for meta. When the group length is absent or an element crosses it, the
// group ends at the first tag outside group 0002. No read or allocation exceeds MaxMetaLen.
func ReadMeta(r *bufio.Reader) (Meta, error) {
	var m Meta
	var head [PreambleLen + 4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return m, fmt.Errorf("%w: %d-byte preamble and DICM missing", ErrNotPart10, len(head))
		}
		return m, fmt.Errorf("part10: read preamble: %w", err)
	}
	if string(head[PreambleLen:]) != "DICM" {
		return m, fmt.Errorf("%w: no DICM prefix", ErrNotPart10)
	}

	var (
		consumed    int
		groupLen    int  // bytes after (0002,0000), when it was present
		afterGL     int  // consumed when the group length element ended
		haveGL      bool // groupLen is present and still believed
		valueBuf    [maxUI * 2]byte
		sawElements bool
	)
	for {
		if haveGL {
			if consumed-afterGL == groupLen {
				break // the declared group is complete
			}
			if consumed-afterGL > groupLen {
				// An element crossed the declared end: the group length
				// lies, so fall back to reading while the group is 0002.
				haveGL = false
			}
		}
		p, err := r.Peek(2)
		if err != nil {
			if errors.Is(err, io.EOF) && len(p) == 0 {
				break // meta with an empty dataset
			}
			if errors.Is(err, io.EOF) {
				return m, fmt.Errorf("%w: truncated element", ErrMalformedMeta)
			}
			return m, fmt.Errorf("part10: read meta: %w", err)
		}
		if binary.LittleEndian.Uint16(p) != 0x0002 {
			break
		}
		var hdr [12]byte
		if _, err := io.ReadFull(r, hdr[:8]); err != nil {
			return m, readErr(err)
		}
		elem := binary.LittleEndian.Uint16(hdr[2:])
		vr0, vr1 := hdr[4], hdr[5]
		if vr0 < 'A' || vr0 > 'Z' || vr1 < 'A' || vr1 > 'Z' {
			return m, fmt.Errorf("%w: element (0002,%04X) has no explicit VR", ErrMalformedMeta, elem)
		}
		var n int
		hlen := 8
		if LongVR(vr0, vr1) {
			if _, err := io.ReadFull(r, hdr[8:12]); err != nil {
				return m, readErr(err)
			}
			l := binary.LittleEndian.Uint32(hdr[8:])
			if l > MaxMetaLen {
				return m, fmt.Errorf("%w: element (0002,%04X) length %d", ErrMalformedMeta, elem, l)
			}
			n, hlen = int(l), 12
		} else {
			n = int(binary.LittleEndian.Uint16(hdr[6:]))
		}
		if consumed+hlen+n > MaxMetaLen {
			return m, fmt.Errorf("%w: group longer than %d bytes", ErrMalformedMeta, MaxMetaLen)
		}
		consumed += hlen
		sawElements = true

		var val []byte
		switch elem {
		case 0x0000, 0x0002, 0x0003, 0x0010, 0x0012, 0x0013, 0x0016:
			if n > len(valueBuf) {
				return m, fmt.Errorf("%w: element (0002,%04X) length %d", ErrMalformedMeta, elem, n)
			}
			val = valueBuf[:n]
			if _, err := io.ReadFull(r, val); err != nil {
				return m, readErr(err)
			}
		default:
			if _, err := r.Discard(n); err != nil {
				return m, readErr(err)
			}
		}
		consumed += n

		switch elem {
		case 0x0000:
			if len(val) == 4 && consumed == hlen+4 { // only as the group's first element
				groupLen = int(binary.LittleEndian.Uint32(val))
				afterGL, haveGL = consumed, true
				if groupLen > MaxMetaLen {
					return m, fmt.Errorf("%w: group length %d", ErrMalformedMeta, groupLen)
				}
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
		}
	}
	if !sawElements {
		return m, fmt.Errorf("%w: no group 0002 elements", ErrMalformedMeta)
	}
	if m.TransferSyntaxUID == "" {
		return m, fmt.Errorf("%w: transfer syntax UID (0002,0010) missing", ErrMalformedMeta)
	}
	return m, nil
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: truncated element", ErrMalformedMeta)
	}
	return fmt.Errorf("part10: read meta: %w", err)
}

// LongVR reports whether an Explicit VR element with the VR a b has 2
// reserved bytes and a 32-bit length (PS3.5 §7.1.2); the others have a
// 16-bit length. The dataset inspector and the pipeline's header reader
// use it too, so the rule lives in one place.
func LongVR(a, b byte) bool {
	switch uint16(a)<<8 | uint16(b) {
	case 'O'<<8 | 'B', 'O'<<8 | 'D', 'O'<<8 | 'F', 'O'<<8 | 'L', 'O'<<8 | 'V', 'O'<<8 | 'W',
		'S'<<8 | 'Q', 'S'<<8 | 'V', 'U'<<8 | 'C', 'U'<<8 | 'N', 'U'<<8 | 'R', 'U'<<8 | 'T', 'U'<<8 | 'V':
		return true
	}
	return false
}
