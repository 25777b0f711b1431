// Package synth makes DICOM objects of any size for tests without holding
// them in memory: a small Secondary Capture header in Explicit VR Little
// Endian followed by Pixel Data (7FE0,0010) OW of the requested length,
// filled with a cheap deterministic pattern.
package synth

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/dicom-ingest/dicom-ingest/shared/part10"
)

// Secondary Capture Image Storage, and the syntax the dataset is encoded in.
const (
	SOPClassUID       = "1.2.840.10008.5.1.4.1.1.7"
	TransferSyntaxUID = "1.2.840.10008.1.2.1"
)

// Object identifies one synthetic instance.
type Object struct {
	StudyUID, SeriesUID, SOPInstanceUID string
	PatientID, PatientName              string
	PixelBytes                          int64 // even; Pixel Data value length
}

// header encodes the dataset up to and including the Pixel Data element's
// tag and length, in ascending tag order.
func (o Object) header() []byte {
	var b bytes.Buffer
	str := func(group, elem uint16, vr, v string) {
		if len(v)%2 == 1 {
			if vr == "UI" {
				v += "\x00"
			} else {
				v += " "
			}
		}
		binary.Write(&b, binary.LittleEndian, [2]uint16{group, elem})
		b.WriteString(vr)
		binary.Write(&b, binary.LittleEndian, uint16(len(v)))
		b.WriteString(v)
	}
	us := func(group, elem uint16, v uint16) {
		binary.Write(&b, binary.LittleEndian, [2]uint16{group, elem})
		b.WriteString("US")
		binary.Write(&b, binary.LittleEndian, [2]uint16{2, v})
	}
	str(0x0008, 0x0016, "UI", SOPClassUID)
	str(0x0008, 0x0018, "UI", o.SOPInstanceUID)
	str(0x0008, 0x0020, "DA", "20260101")
	str(0x0008, 0x0060, "CS", "OT")
	str(0x0010, 0x0010, "PN", o.PatientName)
	str(0x0010, 0x0020, "LO", o.PatientID)
	str(0x0020, 0x000D, "UI", o.StudyUID)
	str(0x0020, 0x000E, "UI", o.SeriesUID)
	rows, cols, frames := o.geometry()
	us(0x0028, 0x0002, 1)
	str(0x0028, 0x0004, "CS", "MONOCHROME2")
	str(0x0028, 0x0008, "IS", fmt.Sprint(frames))
	us(0x0028, 0x0010, rows)
	us(0x0028, 0x0011, cols)
	us(0x0028, 0x0100, 16)
	us(0x0028, 0x0101, 16)
	us(0x0028, 0x0102, 15)
	us(0x0028, 0x0103, 0)
	binary.Write(&b, binary.LittleEndian, [2]uint16{0x7FE0, 0x0010})
	b.WriteString("OW\x00\x00")
	binary.Write(&b, binary.LittleEndian, uint32(o.PixelBytes))
	return b.Bytes()
}

// geometry is Rows, Columns and Number of Frames of 16-bit pixels that
// fill PixelBytes exactly, as the pipeline checks: 512×512 frames when the
// size allows, else one frame of as many columns as divide the pixel
// count.
func (o Object) geometry() (rows, cols uint16, frames int64) {
	pixels := o.PixelBytes / 2
	if pixels > 0 && pixels%(512*512) == 0 {
		return 512, 512, pixels / (512 * 512)
	}
	for c := min(pixels, 65535); c > 1; c-- {
		if pixels%c == 0 && pixels/c <= 65535 {
			return uint16(pixels / c), uint16(c), 1
		}
	}
	return uint16(max(pixels, 1)), 1, 1
}

// Dataset streams the encoded dataset (no File Meta Information).
func (o Object) Dataset() io.Reader {
	return io.MultiReader(bytes.NewReader(o.header()), &pattern{left: o.PixelBytes})
}

// DatasetSize is the number of bytes Dataset yields.
func (o Object) DatasetSize() int64 { return int64(len(o.header())) + o.PixelBytes }

// WriteFile writes the object as a Part 10 file.
func (o Object) WriteFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = part10.WriteHeader(f, part10.Meta{
		MediaStorageSOPClassUID: SOPClassUID, MediaStorageSOPInstanceUID: o.SOPInstanceUID, TransferSyntaxUID: TransferSyntaxUID,
	})
	if err == nil {
		_, err = io.Copy(f, o.Dataset())
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("synth: write %s: %w", path, err)
	}
	return nil
}

// Series writes one object of each of sizes (Pixel Data bytes) as a Part
// 10 file in dir, obj<i>.dcm, all in study studyUID's series
// studyUID+".1", the i-th's SOP Instance UID studyUID+".1.<i+1>", and
// returns the files and their SOP Instance UIDs.
func Series(dir, studyUID, patientID, patientName string, sizes ...int64) (files, sops []string, err error) {
	for i, size := range sizes {
		o := Object{StudyUID: studyUID, SeriesUID: studyUID + ".1", SOPInstanceUID: fmt.Sprintf("%s.1.%d", studyUID, i+1),
			PatientID: patientID, PatientName: patientName, PixelBytes: size}
		f := filepath.Join(dir, fmt.Sprintf("obj%d.dcm", i))
		if err := o.WriteFile(f); err != nil {
			return nil, nil, err
		}
		files, sops = append(files, f), append(sops, o.SOPInstanceUID)
	}
	return files, sops, nil
}

// pattern yields left bytes: a fixed pseudo-random block, repeated, with
// each repetition numbered so no two blocks are equal. Cheap enough that
// the sender never limits a throughput or memory test.
type pattern struct {
	left int64
	off  int64
}

var block = func() []byte {
	b := make([]byte, 1<<20)
	n := uint32(2463534242)
	for i := range b {
		n ^= n << 13
		n ^= n >> 17
		n ^= n << 5
		b[i] = byte(n)
	}
	return b
}()

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n := 0
	for n < len(b) {
		i := int(p.off % int64(len(block)))
		c := copy(b[n:], block[i:])
		if i < 8 { // stamp the block number over the block's first bytes
			var num [8]byte
			binary.LittleEndian.PutUint64(num[:], uint64(p.off/int64(len(block))))
			copy(b[n:n+min(c, 8-i)], num[i:])
		}
		n += c
		p.off += int64(c)
	}
	p.left -= int64(n)
	return n, nil
}
