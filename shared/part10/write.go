package part10

import (
	"encoding/binary"
	"fmt"
	"io"
)

var zeroPreamble [PreambleLen]byte

// fileMetaVersion is (0002,0001) File Meta Information Version: 00 01.
var fileMetaVersion = [2]byte{0x00, 0x01}

// AppendHeader appends the preamble, "DICM" and the File Meta Information
// for m to dst and returns the extended slice; the dataset bytes follow.
//
// AppendHeader never fails: check m with Validate first (WriteHeader does).
// Whatever m holds, the output is well-formed: UIDs are stripped of their
// wire padding and padded with NUL to an even length, SH and AE values are
// trimmed and padded with a space, and a value longer than its VR allows is
// cut to the maximum (64 for UI, 16 for SH and AE).
func AppendHeader(dst []byte, m Meta) []byte {
	dst = append(dst, zeroPreamble[:]...)
	dst = append(dst, 'D', 'I', 'C', 'M')

	// (0002,0000) UL group length, filled in once the group is written.
	dst = appendShort(dst, 0x0000, "UL", 4)
	lenAt := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	start := len(dst)

	// (0002,0001) OB: a long-form VR (2 reserved bytes, 4-byte length).
	dst = binary.LittleEndian.AppendUint16(dst, 0x0002)
	dst = binary.LittleEndian.AppendUint16(dst, 0x0001)
	dst = append(dst, 'O', 'B', 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(fileMetaVersion)))
	dst = append(dst, fileMetaVersion[:]...)

	dst = appendUI(dst, 0x0002, m.MediaStorageSOPClassUID)
	dst = appendUI(dst, 0x0003, m.MediaStorageSOPInstanceUID)
	dst = appendUI(dst, 0x0010, m.TransferSyntaxUID)
	dst = appendUI(dst, 0x0012, m.implClassUID())
	dst = appendText(dst, 0x0013, "SH", m.implVersionName(), maxSH)
	for _, ae := range []struct {
		elem uint16
		v    string
	}{{0x0016, m.SourceApplicationEntityTitle}, {0x0017, m.SendingApplicationEntityTitle}, {0x0018, m.ReceivingApplicationEntityTitle}} {
		if v := trimText(ae.v); v != "" {
			dst = appendText(dst, ae.elem, "AE", v, maxAE)
		}
	}
	binary.LittleEndian.PutUint32(dst[lenAt:], uint32(len(dst)-start))
	return dst
}

// HeaderSize returns the number of bytes AppendHeader writes for m.
func HeaderSize(m Meta) int {
	var buf [PreambleLen + 512]byte
	return len(AppendHeader(buf[:0], m))
}

// WriteHeader validates m and writes its preamble, "DICM" and File Meta
// Information to w in a single Write.
func WriteHeader(w io.Writer, m Meta) error {
	if err := m.Validate(); err != nil {
		return err
	}
	var buf [PreambleLen + 512]byte
	if _, err := w.Write(AppendHeader(buf[:0], m)); err != nil {
		return fmt.Errorf("part10: write header: %w", err)
	}
	return nil
}

// appendShort appends the header of a short-form Explicit VR LE element of
// group 0002.
func appendShort(dst []byte, elem uint16, vr string, n int) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, 0x0002)
	dst = binary.LittleEndian.AppendUint16(dst, elem)
	dst = append(dst, vr[0], vr[1])
	return binary.LittleEndian.AppendUint16(dst, uint16(n))
}

func appendUI(dst []byte, elem uint16, uid string) []byte {
	v := trimUID(uid)
	if len(v) > maxUI {
		v = v[:maxUI]
	}
	n := len(v) + len(v)&1
	dst = appendShort(dst, elem, "UI", n)
	dst = append(dst, v...)
	if len(v)&1 == 1 {
		dst = append(dst, 0)
	}
	return dst
}

func appendText(dst []byte, elem uint16, vr, s string, max int) []byte {
	v := trimText(s)
	if len(v) > max {
		v = v[:max]
	}
	n := len(v) + len(v)&1
	dst = appendShort(dst, elem, vr, n)
	dst = append(dst, v...)
	if len(v)&1 == 1 {
		dst = append(dst, ' ')
	}
	return dst
}
