package dicomnet

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
)

// FileMeta is the part of a DICOM Part 10 file's meta information (group 0002) needed to send it.
type FileMeta struct {
	SOPClassUID       string // (0002,0002)
	SOPInstanceUID    string // (0002,0003)
	TransferSyntaxUID string // (0002,0010)
	// DataSetOffset is the offset of the first data set byte in the file.
	DataSetOffset int64
}

// ErrNotPart10 is returned by ReadFileMeta for input without the DICM prefix or with a malformed group 0002.
var ErrNotPart10 = errors.New("dicomnet: not a DICOM Part 10 file")

// maxFileMeta bounds group 0002; real file meta is a few hundred bytes.
const maxFileMeta = 64 << 10

// ReadFileMeta reads the preamble and File Meta Information from r and leaves r positioned at the data set.
// r must be a *bufio.Reader (one is returned for wrapping), because the end of group 0002 is found by peeking.
func ReadFileMeta(r *bufio.Reader) (FileMeta, error) {
	var m FileMeta
	var pre [132]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return m, fmt.Errorf("%w: %w", ErrNotPart10, err)
	}
	if string(pre[128:]) != "DICM" {
		return m, ErrNotPart10
	}
	off := int64(132)
	for {
		g, err := r.Peek(2)
		if err != nil || binary.LittleEndian.Uint16(g) != 0x0002 {
			break // end of group 0002 (or of a file holding only meta)
		}
		var h [8]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return m, fmt.Errorf("%w: %w", ErrNotPart10, err)
		}
		elem := binary.LittleEndian.Uint16(h[2:])
		vr := string(h[4:6])
		n := int64(binary.LittleEndian.Uint16(h[6:]))
		hl := int64(8)
		switch vr {
		case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
			var l [4]byte
			if _, err := io.ReadFull(r, l[:]); err != nil {
				return m, fmt.Errorf("%w: %w", ErrNotPart10, err)
			}
			n, hl = int64(binary.LittleEndian.Uint32(l[:])), 12
		}
		if off+hl+n-132 > maxFileMeta {
			return m, fmt.Errorf("%w: file meta information longer than %d bytes", ErrNotPart10, maxFileMeta)
		}
		v := make([]byte, n)
		if _, err := io.ReadFull(r, v); err != nil {
			return m, fmt.Errorf("%w: %w", ErrNotPart10, err)
		}
		off += hl + n
		s := strings.TrimRight(string(v), " \x00")
		switch elem {
		case 0x0002:
			m.SOPClassUID = s
		case 0x0003:
			m.SOPInstanceUID = s
		case 0x0010:
			m.TransferSyntaxUID = s
		}
	}
	m.DataSetOffset = off
	if m.SOPClassUID == "" || m.SOPInstanceUID == "" || m.TransferSyntaxUID == "" {
		return m, fmt.Errorf("%w: file meta lacks SOP class, instance or transfer syntax", ErrNotPart10)
	}
	return m, nil
}

// StoreFile sends a Part 10 file: its data set bytes are streamed unchanged in the file's transfer syntax, so a
// presentation context for (SOP class, transfer syntax) must have been accepted.
func (a *ClientAssociation) StoreFile(ctx context.Context, path string) (dimse.Status, error) {
	f, err := os.Open(path)
	if err != nil {
		return dimse.Status{}, fmt.Errorf("dicomnet: store file: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	m, err := ReadFileMeta(br)
	if err != nil {
		return dimse.Status{}, fmt.Errorf("dicomnet: store file %s: %w", path, err)
	}
	return a.Store(ctx, m.SOPClassUID, m.SOPInstanceUID, m.TransferSyntaxUID, br)
}
