package dataset

import "encoding/binary"

// enc builds test datasets in a given encoding.
type enc struct {
	implicit bool
	be       bool
}

var (
	explicitLE = enc{}
	implicitLE = enc{implicit: true}
	explicitBE = enc{be: true}
)

func (e enc) order() binary.AppendByteOrder {
	if e.be {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

func (e enc) tag(b []byte, tag uint32) []byte {
	b = e.order().AppendUint16(b, uint16(tag>>16))
	return e.order().AppendUint16(b, uint16(tag))
}

// el encodes one element with a defined length.
func (e enc) el(tag uint32, vr string, val string) []byte {
	return e.hdr(tag, vr, uint32(len(val)), []byte(val))
}

func (e enc) hdr(tag uint32, vr string, length uint32, val []byte) []byte {
	b := e.tag(nil, tag)
	switch {
	case e.implicit:
		b = e.order().AppendUint32(b, length)
	case LongVR(vr[0], vr[1]):
		b = append(b, vr[0], vr[1], 0, 0)
		b = e.order().AppendUint32(b, length)
	default:
		b = append(b, vr[0], vr[1])
		b = e.order().AppendUint16(b, uint16(length))
	}
	return append(b, val...)
}

// seqU encodes an undefined-length element holding items, closed by a
// sequence delimiter.
func (e enc) seqU(tag uint32, vr string, items ...[]byte) []byte {
	b := e.hdr(tag, vr, UndefinedLength, nil)
	for _, it := range items {
		b = append(b, it...)
	}
	return append(e.tag(b, tagSeqDelim), 0, 0, 0, 0)
}

// seqD encodes a defined-length sequence.
func (e enc) seqD(tag uint32, items ...[]byte) []byte {
	var body []byte
	for _, it := range items {
		body = append(body, it...)
	}
	return e.hdr(tag, "SQ", uint32(len(body)), body)
}

// itemU is an undefined-length item with an item delimiter.
func (e enc) itemU(elems ...[]byte) []byte {
	b := e.order().AppendUint32(e.tag(nil, tagItem), UndefinedLength)
	for _, el := range elems {
		b = append(b, el...)
	}
	return append(e.tag(b, tagItemDelim), 0, 0, 0, 0)
}

// itemD is a defined-length item (also an encapsulated fragment).
func (e enc) itemD(elems ...[]byte) []byte {
	var body []byte
	for _, el := range elems {
		body = append(body, el...)
	}
	b := e.order().AppendUint32(e.tag(nil, tagItem), uint32(len(body)))
	return append(b, body...)
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}
