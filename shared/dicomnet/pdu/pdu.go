// Package pdu encodes and decodes the DICOM Upper Layer protocol data units and their items (PS3.8 §9.3).
// It is pure: decoding works on byte slices or an io.Reader, encoding appends to byte slices, and nothing here
// touches sockets, deadlines or state. Unknown items and sub-items are skipped by their length at every level;
// any length that runs past its container is an error (ErrMalformed), never a panic or a large allocation.
package pdu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Type is the PDU type byte.
type Type uint8

// PDU types (PS3.8 Table 9-11).
const (
	TypeAssociateRQ Type = 0x01
	TypeAssociateAC Type = 0x02
	TypeAssociateRJ Type = 0x03
	TypePDataTF     Type = 0x04
	TypeReleaseRQ   Type = 0x05
	TypeReleaseRP   Type = 0x06
	TypeAbort       Type = 0x07
)

func (t Type) String() string {
	switch t {
	case TypeAssociateRQ:
		return "A-ASSOCIATE-RQ"
	case TypeAssociateAC:
		return "A-ASSOCIATE-AC"
	case TypeAssociateRJ:
		return "A-ASSOCIATE-RJ"
	case TypePDataTF:
		return "P-DATA-TF"
	case TypeReleaseRQ:
		return "A-RELEASE-RQ"
	case TypeReleaseRP:
		return "A-RELEASE-RP"
	case TypeAbort:
		return "A-ABORT"
	}
	return fmt.Sprintf("PDU(0x%02x)", uint8(t))
}

// Item and sub-item types (PS3.8 §9.3 and Annex D).
const (
	ItemApplicationContext           = 0x10
	ItemPresentationContextRQ        = 0x20
	ItemPresentationContextAC        = 0x21
	ItemAbstractSyntax               = 0x30
	ItemTransferSyntax               = 0x40
	ItemUserInformation              = 0x50
	SubItemMaxLength                 = 0x51
	SubItemImplementationClassUID    = 0x52
	SubItemAsyncOperationsWindow     = 0x53
	SubItemRoleSelection             = 0x54
	SubItemImplementationVersionName = 0x55
	SubItemSOPClassExtended          = 0x56
	SubItemSOPClassCommonExtended    = 0x57
	SubItemUserIdentityRQ            = 0x58
	SubItemUserIdentityAC            = 0x59
)

// HeaderLen is the size of the fixed PDU header: type, reserved, 32-bit length.
const HeaderLen = 6

// Errors returned by decoding. They are wrapped with context; test with errors.Is.
var (
	ErrMalformed   = errors.New("pdu: malformed")
	ErrTooLong     = errors.New("pdu: length exceeds limit")
	ErrUnknownType = errors.New("pdu: unknown PDU type")
)

// PDU is one decoded protocol data unit.
type PDU interface {
	Type() Type
	// AppendBody appends the PDU's variable field (everything after the 6-byte header).
	AppendBody(dst []byte) ([]byte, error)
}

// Header is the fixed 6-byte PDU header.
type Header struct {
	Type   Type
	Length uint32 // bytes after the header
}

// ParseHeader decodes a 6-byte header. The reserved byte is not checked (PS3.8 §9.3.1).
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, fmt.Errorf("pdu: header: %w", ErrMalformed)
	}
	return Header{Type: Type(b[0]), Length: binary.BigEndian.Uint32(b[2:6])}, nil
}

// AppendHeader appends a PDU header.
func AppendHeader(dst []byte, t Type, length uint32) []byte {
	dst = append(dst, byte(t), 0)
	return binary.BigEndian.AppendUint32(dst, length)
}

// Append appends p with its header to dst.
func Append(dst []byte, p PDU) ([]byte, error) {
	start := len(dst)
	dst = AppendHeader(dst, p.Type(), 0)
	dst, err := p.AppendBody(dst)
	if err != nil {
		return dst[:start], err
	}
	binary.BigEndian.PutUint32(dst[start+2:], uint32(len(dst)-start-HeaderLen))
	return dst, nil
}

// Encode returns p with its header.
func Encode(p PDU) ([]byte, error) { return Append(nil, p) }

// ReadBody reads exactly n bytes from r, limited to max. Memory grows only as bytes actually arrive (doubling
// from 64 KiB), so a peer that announces a large length and sends little cannot make us allocate it.
func ReadBody(r io.Reader, n, max uint32) ([]byte, error) {
	return ReadBodyFunc(r, n, max, nil)
}

// ReadBodyFunc is ReadBody that calls grow, when not nil, with the size of every buffer before it allocates it,
// so that a caller can account for the memory a peer makes it hold (and refuse it: grow's error ends the read,
// wrapped, before the allocation).
func ReadBodyFunc(r io.Reader, n, max uint32, grow func(bytes int) error) ([]byte, error) {
	if n > max {
		return nil, fmt.Errorf("pdu: body of %d bytes (limit %d): %w", n, max, ErrTooLong)
	}
	alloc := func(size uint64) error {
		if grow == nil {
			return nil
		}
		if err := grow(int(size)); err != nil {
			return fmt.Errorf("pdu: read body: buffer of %d bytes: %w", size, err)
		}
		return nil
	}
	first := uint64(min(n, 64<<10))
	if err := alloc(first); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, first)
	for uint32(len(buf)) < n {
		if len(buf) == cap(buf) {
			size := min(uint64(n), 2*uint64(cap(buf)))
			if err := alloc(size); err != nil {
				return nil, err
			}
			nb := make([]byte, len(buf), size)
			copy(nb, buf)
			buf = nb
		}
		k, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("pdu: read body: %w", err)
		}
	}
	return buf, nil
}

// Read reads one whole PDU from r, refusing bodies longer than max.
func Read(r io.Reader, max uint32) (PDU, error) {
	var hb [HeaderLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return nil, fmt.Errorf("pdu: read header: %w", err)
	}
	h, _ := ParseHeader(hb[:])
	if !h.Type.Known() {
		return nil, fmt.Errorf("pdu: type 0x%02x: %w", uint8(h.Type), ErrUnknownType)
	}
	body, err := ReadBody(r, h.Length, max)
	if err != nil {
		return nil, err
	}
	return Decode(h.Type, body)
}

// Known reports whether t is one of the seven PDU types.
func (t Type) Known() bool { return t >= TypeAssociateRQ && t <= TypeAbort }

// Decode decodes the variable field of a PDU of type t. P-DATA-TF fragments alias body.
func Decode(t Type, body []byte) (PDU, error) {
	switch t {
	case TypeAssociateRQ:
		return DecodeAssociateRQ(body)
	case TypeAssociateAC:
		return DecodeAssociateAC(body)
	case TypeAssociateRJ:
		if len(body) < 4 {
			return nil, fmt.Errorf("pdu: A-ASSOCIATE-RJ: %w", ErrMalformed)
		}
		return &AssociateRJ{Result: body[1], Source: body[2], Reason: body[3]}, nil
	case TypePDataTF:
		pdvs, err := DecodePDVs(nil, body)
		if err != nil {
			return nil, err
		}
		return &PDataTF{PDVs: pdvs}, nil
	case TypeReleaseRQ:
		if len(body) < 4 {
			return nil, fmt.Errorf("pdu: A-RELEASE-RQ: %w", ErrMalformed)
		}
		return &ReleaseRQ{}, nil
	case TypeReleaseRP:
		if len(body) < 4 {
			return nil, fmt.Errorf("pdu: A-RELEASE-RP: %w", ErrMalformed)
		}
		return &ReleaseRP{}, nil
	case TypeAbort:
		if len(body) < 4 {
			return nil, fmt.Errorf("pdu: A-ABORT: %w", ErrMalformed)
		}
		return &Abort{Source: body[2], Reason: body[3]}, nil
	}
	return nil, fmt.Errorf("pdu: type 0x%02x: %w", uint8(t), ErrUnknownType)
}

// AssociateRJ is the A-ASSOCIATE-RJ PDU.
type AssociateRJ struct{ Result, Source, Reason byte }

func (*AssociateRJ) Type() Type { return TypeAssociateRJ }
func (p *AssociateRJ) AppendBody(dst []byte) ([]byte, error) {
	return append(dst, 0, p.Result, p.Source, p.Reason), nil
}

// ReleaseRQ is the A-RELEASE-RQ PDU.
type ReleaseRQ struct{}

func (*ReleaseRQ) Type() Type                            { return TypeReleaseRQ }
func (*ReleaseRQ) AppendBody(dst []byte) ([]byte, error) { return append(dst, 0, 0, 0, 0), nil }

// ReleaseRP is the A-RELEASE-RP PDU.
type ReleaseRP struct{}

func (*ReleaseRP) Type() Type                            { return TypeReleaseRP }
func (*ReleaseRP) AppendBody(dst []byte) ([]byte, error) { return append(dst, 0, 0, 0, 0), nil }

// Abort sources and provider reasons (PS3.8 §9.3.8).
const (
	AbortSourceServiceUser     = 0
	AbortSourceReserved        = 1
	AbortSourceServiceProvider = 2

	AbortReasonNotSpecified      = 0
	AbortReasonUnrecognizedPDU   = 1
	AbortReasonUnexpectedPDU     = 2
	AbortReasonUnrecognizedParam = 4
	AbortReasonUnexpectedParam   = 5
	AbortReasonInvalidParamValue = 6
)

// Abort is the A-ABORT PDU.
type Abort struct{ Source, Reason byte }

func (*Abort) Type() Type { return TypeAbort }
func (p *Abort) AppendBody(dst []byte) ([]byte, error) {
	return append(dst, 0, 0, p.Source, p.Reason), nil
}

// PDV is one presentation data value item of a P-DATA-TF PDU.
type PDV struct {
	ContextID byte
	Control   byte // bit 0: command; bit 1: last fragment
	Data      []byte
}

// PDV control header bits.
const (
	ControlCommand = 0x01
	ControlLast    = 0x02
)

// IsCommand reports whether the fragment belongs to a command set.
func (v PDV) IsCommand() bool { return v.Control&ControlCommand != 0 }

// IsLast reports whether this is the last fragment of its message part.
func (v PDV) IsLast() bool { return v.Control&ControlLast != 0 }

// PDataTF is the P-DATA-TF PDU.
type PDataTF struct{ PDVs []PDV }

func (*PDataTF) Type() Type { return TypePDataTF }
func (p *PDataTF) AppendBody(dst []byte) ([]byte, error) {
	for _, v := range p.PDVs {
		if uint64(len(v.Data))+2 > 0xFFFFFFFF {
			return dst, fmt.Errorf("pdu: PDV too long: %w", ErrTooLong)
		}
		dst = AppendPDVHeader(dst, len(v.Data), v.ContextID, v.Control)
		dst = append(dst, v.Data...)
	}
	return dst, nil
}

// PDVHeaderLen is the size of a PDV item header: 32-bit length, context id, control header.
const PDVHeaderLen = 6

// AppendPDVHeader appends the header of a PDV carrying n fragment bytes.
func AppendPDVHeader(dst []byte, n int, ctxID, control byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(n+2))
	return append(dst, ctxID, control)
}

// DecodePDVs appends the PDV items found in a P-DATA-TF body to dst. Data fields alias body.
func DecodePDVs(dst []PDV, body []byte) ([]PDV, error) {
	if len(body) == 0 {
		return dst, fmt.Errorf("pdu: P-DATA-TF without PDV: %w", ErrMalformed)
	}
	for len(body) > 0 {
		if len(body) < PDVHeaderLen {
			return dst, fmt.Errorf("pdu: PDV header: %w", ErrMalformed)
		}
		n := binary.BigEndian.Uint32(body)
		if n < 2 || uint64(n) > uint64(len(body)-4) {
			return dst, fmt.Errorf("pdu: PDV length %d: %w", n, ErrMalformed)
		}
		dst = append(dst, PDV{ContextID: body[4], Control: body[5], Data: body[6 : 4+n]})
		body = body[4+n:]
	}
	return dst, nil
}

// trimAE removes the space padding and trailing NULs of an AE title; leading and trailing spaces are not
// significant (PS3.5 §6.2).
func trimAE(b []byte) string { return strings.Trim(string(b), " \x00") }

// trimUID removes trailing NUL/space padding from a UID found in an item.
func trimUID(b []byte) string { return strings.TrimRight(string(b), " \x00") }
