// Package proxyproto parses the PROXY protocol version 2 header (as sent by AWS Network Load Balancers and
// HAProxy) that precedes the first byte of a proxied TCP connection. Only the binary v2 format is supported.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// Signature is the 12-byte v2 signature.
var Signature = []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// Command is the v2 command nibble.
type Command uint8

const (
	// CommandLocal marks a connection made by the proxy itself (e.g. a health check); addresses are not relayed.
	CommandLocal Command = 0x0
	// CommandProxy relays the original source and destination.
	CommandProxy Command = 0x1
)

// MaxAddressLen bounds the address-and-TLV block we accept (the 16-bit length could claim 64 KiB). AWS NLB sends
// at most a few hundred bytes of TLVs.
const MaxAddressLen = 4096

// Errors.
var (
	ErrNoSignature = errors.New("proxyproto: no PROXY v2 signature")
	ErrMalformed   = errors.New("proxyproto: malformed header")
)

// Header is a parsed PROXY v2 header.
type Header struct {
	Command     Command
	Family      uint8    // 0 unspec, 1 INET, 2 INET6, 3 UNIX
	Protocol    uint8    // 0 unspec, 1 STREAM, 2 DGRAM
	Source      net.Addr // *net.TCPAddr for STREAM over INET/INET6; nil otherwise
	Destination net.Addr
	TLVs        []byte // raw TLV vectors following the addresses
}

// HeaderLen returns the total header length announced by the 16-byte fixed part b.
func HeaderLen(b []byte) (int, error) {
	if len(b) < 16 {
		return 0, fmt.Errorf("proxyproto: %d bytes: %w", len(b), ErrMalformed)
	}
	if !bytes.Equal(b[:12], Signature) {
		return 0, ErrNoSignature
	}
	n := int(binary.BigEndian.Uint16(b[14:16]))
	if n > MaxAddressLen {
		return 0, fmt.Errorf("proxyproto: address block of %d bytes: %w", n, ErrMalformed)
	}
	return 16 + n, nil
}

// Parse decodes a complete header (as sized by HeaderLen).
func Parse(b []byte) (*Header, error) {
	total, err := HeaderLen(b)
	if err != nil {
		return nil, err
	}
	if len(b) < total {
		return nil, fmt.Errorf("proxyproto: truncated header: %w", ErrMalformed)
	}
	if b[12]>>4 != 2 {
		return nil, fmt.Errorf("proxyproto: version %d: %w", b[12]>>4, ErrMalformed)
	}
	h := &Header{Command: Command(b[12] & 0x0F), Family: b[13] >> 4, Protocol: b[13] & 0x0F}
	if h.Command != CommandLocal && h.Command != CommandProxy {
		return nil, fmt.Errorf("proxyproto: command %d: %w", h.Command, ErrMalformed)
	}
	body := b[16:total]
	if h.Command == CommandLocal {
		// The receiver must ignore the address block of a LOCAL header.
		return h, nil
	}
	var alen int
	switch h.Family {
	case 0:
		alen = 0
	case 1:
		alen = 12
	case 2:
		alen = 36
	case 3:
		alen = 216
	default:
		return nil, fmt.Errorf("proxyproto: address family %d: %w", h.Family, ErrMalformed)
	}
	if len(body) < alen {
		return nil, fmt.Errorf("proxyproto: address block of %d bytes for family %d: %w", len(body), h.Family, ErrMalformed)
	}
	switch h.Family {
	case 1:
		h.Source = &net.TCPAddr{IP: net.IP(bytes.Clone(body[0:4])), Port: int(binary.BigEndian.Uint16(body[8:10]))}
		h.Destination = &net.TCPAddr{IP: net.IP(bytes.Clone(body[4:8])), Port: int(binary.BigEndian.Uint16(body[10:12]))}
	case 2:
		h.Source = &net.TCPAddr{IP: net.IP(bytes.Clone(body[0:16])), Port: int(binary.BigEndian.Uint16(body[32:34]))}
		h.Destination = &net.TCPAddr{IP: net.IP(bytes.Clone(body[16:32])), Port: int(binary.BigEndian.Uint16(body[34:36]))}
	}
	if h.Protocol != 1 && h.Family != 0 && h.Family != 3 {
		// Not a stream connection: the addresses are not meaningful for TCP.
		h.Source, h.Destination = nil, nil
	}
	h.TLVs = bytes.Clone(body[alen:])
	return h, nil
}

// Read reads and parses one header from r (exactly the header's bytes are consumed).
func Read(r io.Reader) (*Header, error) {
	var fixed [16]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return nil, fmt.Errorf("proxyproto: read: %w", err)
	}
	total, err := HeaderLen(fixed[:])
	if err != nil {
		return nil, err
	}
	buf := make([]byte, total)
	copy(buf, fixed[:])
	if _, err := io.ReadFull(r, buf[16:]); err != nil {
		return nil, fmt.Errorf("proxyproto: read: %w", err)
	}
	return Parse(buf)
}

// Append appends a v2 PROXY (or LOCAL when src is nil) header for TCP addresses; used by tests and clients.
func Append(dst []byte, src, dstAddr *net.TCPAddr) []byte {
	dst = append(dst, Signature...)
	if src == nil || dstAddr == nil {
		return append(dst, 0x20, 0x00, 0, 0)
	}
	if s4, d4 := src.IP.To4(), dstAddr.IP.To4(); s4 != nil && d4 != nil {
		dst = append(dst, 0x21, 0x11, 0, 12)
		dst = append(dst, s4...)
		dst = append(dst, d4...)
	} else {
		dst = append(dst, 0x21, 0x21, 0, 36)
		dst = append(dst, src.IP.To16()...)
		dst = append(dst, dstAddr.IP.To16()...)
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(src.Port))
	return binary.BigEndian.AppendUint16(dst, uint16(dstAddr.Port))
}
