package pipelinetest

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"io"
	"slices"
	"sort"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
)

// Elem is an element for the synthesizer. Items makes it a sequence.
type Elem struct {
	Tag             uint32
	VR              string
	Value           []byte
	Items           [][]Elem
	UndefinedLength bool
}

// Tag builds a tag from group and element.
func Tag(g, e uint16) uint32 { return uint32(g)<<16 | uint32(e) }

// Str is a string element, padded to even length as PS3.5 requires (UI
// with NUL, others with a space).
func Str(tag uint32, vr, s string) Elem {
	b := []byte(s)
	if len(b)%2 == 1 {
		if vr == "UI" {
			b = append(b, 0)
		} else {
			b = append(b, ' ')
		}
	}
	return Elem{Tag: tag, VR: vr, Value: b}
}

// Raw is an element with raw value bytes (padded by the caller).
func Raw(tag uint32, vr string, b []byte) Elem { return Elem{Tag: tag, VR: vr, Value: b} }

// U16 is a US element.
func U16(tag uint32, v uint16) Elem {
	return Elem{Tag: tag, VR: "US", Value: binary.LittleEndian.AppendUint16(nil, v)}
}

// Seq is a sequence of items.
func Seq(tag uint32, undefined bool, items ...[]Elem) Elem {
	return Elem{Tag: tag, VR: "SQ", Items: items, UndefinedLength: undefined}
}

// Fragments is encapsulated Pixel Data (PS3.5 A.4): OB of undefined
// length, an empty Basic Offset Table, each fragment an item, then the
// Sequence Delimitation Item; FragmentsValue is its value.
func Fragments(frags ...[]byte) Elem {
	return Elem{Tag: Tag(0x7FE0, 0x10), VR: "OB", Value: FragmentsValue(frags...), UndefinedLength: true}
}

// FragmentsValue is the value of Fragments(frags...): its items and its
// Sequence Delimitation Item.
func FragmentsValue(frags ...[]byte) []byte {
	le := binary.LittleEndian
	b := []byte{0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0}
	for _, f := range frags {
		b = le.AppendUint32(append(b, 0xFE, 0xFF, 0x00, 0xE0), uint32(len(f)))
		b = append(b, f...)
	}
	return append(b, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0)
}

// IconImage is an Icon Image Sequence (0088,0200) of one item: an 8 × 8
// monochrome icon whose Pixel Data is encapsulated, frags its fragments
// (Fragments; FragmentsValue is the value).
func IconImage(frags ...[]byte) Elem {
	return Seq(Tag(0x88, 0x200), true, []Elem{
		U16(Tag(0x28, 0x2), 1),
		Str(Tag(0x28, 0x4), "CS", "MONOCHROME2"),
		U16(Tag(0x28, 0x10), 8),
		U16(Tag(0x28, 0x11), 8),
		U16(Tag(0x28, 0x100), 8),
		U16(Tag(0x28, 0x101), 8),
		U16(Tag(0x28, 0x102), 7),
		U16(Tag(0x28, 0x103), 0),
		Fragments(frags...),
	})
}

// Meta is the File Meta Information to write.
type Meta struct {
	SOPClassUID, SOPInstanceUID, TransferSyntaxUID, SourceAE string
	// SendingAE and ReceivingAE are (0002,0017) and (0002,0018), written
	// when set.
	SendingAE, ReceivingAE string
	// Late moves these group 0002 elements (by element number, present
	// ones) after the others, in the order given: out of tag order.
	Late []uint16
}

// Part10 encodes a Part 10 file: preamble, DICM, file meta and the dataset
// in explicit VR little endian (or implicit when the transfer syntax is
// 1.2.840.10008.1.2). Elements are written in the order given.
func Part10(m Meta, ds []Elem) []byte {
	var meta bytes.Buffer
	metaElems := []Elem{
		{Tag: Tag(2, 1), VR: "OB", Value: []byte{0, 1}},
		Str(Tag(2, 2), "UI", m.SOPClassUID),
		Str(Tag(2, 3), "UI", m.SOPInstanceUID),
		Str(Tag(2, 0x10), "UI", m.TransferSyntaxUID),
		Str(Tag(2, 0x12), "UI", "1.2.3.4"),
	}
	for _, ae := range []struct {
		elem uint16
		v    string
	}{{0x16, m.SourceAE}, {0x17, m.SendingAE}, {0x18, m.ReceivingAE}} {
		if ae.v != "" {
			metaElems = append(metaElems, Str(Tag(2, ae.elem), "AE", ae.v))
		}
	}
	for _, e := range metaElems {
		if !slices.Contains(m.Late, uint16(e.Tag)) {
			writeElem(&meta, e, false)
		}
	}
	for _, late := range m.Late {
		for _, e := range metaElems {
			if uint16(e.Tag) == late {
				writeElem(&meta, e, false)
			}
		}
	}
	var out bytes.Buffer
	out.Write(make([]byte, 128))
	out.WriteString("DICM")
	writeElem(&out, Elem{Tag: Tag(2, 0), VR: "UL", Value: binary.LittleEndian.AppendUint32(nil, uint32(meta.Len()))}, false)
	out.Write(meta.Bytes())
	implicit := m.TransferSyntaxUID == "1.2.840.10008.1.2"
	for _, e := range ds {
		writeElem(&out, e, implicit)
	}
	return out.Bytes()
}

// Deflate is ds as a raw deflate stream (RFC 1951), as the Deflated
// transfer syntaxes carry a data set.
func Deflate(ds []byte) []byte {
	return deflated(nil, bytes.NewReader(ds))
}

// DeflatedBlank is the Part 10 file written by Part10, its data set
// deflated as the Deflated transfer syntaxes carry it (Part10 writes the
// data set of a Deflated syntax uncompressed, in Explicit VR Little
// Endian, which is what is inflated), with the value of file's empty OB
// element tag (in the data set, once) n zero bytes, streamed into the
// deflater and never held: a blank image, or a deflate bomb, of any size
// at the cost of its compressed bytes.
func DeflatedBlank(file []byte, tag uint32, n uint32) []byte {
	le := binary.LittleEndian
	h := le.AppendUint16(le.AppendUint16(nil, uint16(tag>>16)), uint16(tag))
	h = append(h, 'O', 'B', 0, 0, 0, 0, 0, 0)
	end := 144 + int(le.Uint32(file[140:144]))
	i := bytes.Index(file[end:], h)
	if i < 0 || bytes.Contains(file[end+i+1:], h) {
		panic("pipelinetest: DeflatedBlank wants one empty OB element of the tag")
	}
	i += end
	value := le.AppendUint32(bytes.Clone(file[end:i+8]), n)
	return deflated(file[:end], io.MultiReader(bytes.NewReader(value), io.LimitReader(zeros{}, int64(n)), bytes.NewReader(file[i+12:])))
}

// deflated is meta followed by what ds reads, deflated.
func deflated(meta []byte, ds io.Reader) []byte {
	var z bytes.Buffer
	z.Write(meta)
	w, err := flate.NewWriter(&z, flate.BestSpeed)
	if err != nil {
		panic(err) // a valid level
	}
	if _, err := io.Copy(w, ds); err != nil {
		panic(err) // into memory
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	return z.Bytes()
}

// zeros reads zero bytes, endlessly.
type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// DataSet encodes elements as a bare data set (no File Meta), in Implicit or
// Explicit VR Little Endian, in the order given: what a DIMSE message
// carries.
func DataSet(ds []Elem, implicit bool) []byte {
	var out bytes.Buffer
	for _, e := range ds {
		writeElem(&out, e, implicit)
	}
	return out.Bytes()
}

func longVR(vr string) bool {
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		return true
	}
	return false
}

func writeElem(w *bytes.Buffer, e Elem, implicit bool) {
	le := binary.LittleEndian
	var value []byte
	length := uint32(len(e.Value))
	if e.VR == "SQ" {
		var body bytes.Buffer
		for _, item := range e.Items {
			var ib bytes.Buffer
			for _, c := range item {
				writeElem(&ib, c, implicit)
			}
			body.Write(le.AppendUint16(le.AppendUint16(nil, 0xFFFE), 0xE000))
			if e.UndefinedLength {
				body.Write(le.AppendUint32(nil, 0xFFFFFFFF))
				body.Write(ib.Bytes())
				body.Write([]byte{0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0})
			} else {
				body.Write(le.AppendUint32(nil, uint32(ib.Len())))
				body.Write(ib.Bytes())
			}
		}
		if e.UndefinedLength {
			body.Write([]byte{0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0})
			length = 0xFFFFFFFF
		} else {
			length = uint32(body.Len())
		}
		value = body.Bytes()
	} else {
		value = e.Value
		if e.UndefinedLength { // Value holds the items (Fragments)
			length = 0xFFFFFFFF
		}
	}
	w.Write(le.AppendUint16(nil, uint16(e.Tag>>16)))
	w.Write(le.AppendUint16(nil, uint16(e.Tag)))
	switch {
	case implicit:
		w.Write(le.AppendUint32(nil, length))
	case longVR(e.VR):
		w.WriteString(e.VR)
		w.Write([]byte{0, 0})
		w.Write(le.AppendUint32(nil, length))
	default:
		w.WriteString(e.VR)
		w.Write(le.AppendUint16(nil, uint16(length)))
	}
	w.Write(value)
}

// CTStorage is the CT Image Storage SOP Class UID.
const CTStorage = "1.2.840.10008.5.1.4.1.1.2"

// Instance describes a synthesized image.
type Instance struct {
	StudyUID, SeriesUID, SOPUID string
	PatientID, PatientName      string
	Modality                    string // default CT
	CharacterSet                string // (0008,0005); empty: none
	StudyDate                   string // default 20260115
	Rows, Columns               int    // pixel data size; 0: no pixel data
	TransferSyntaxUID           string // default explicit VR little endian
	SourceAE                    string
	SendingAE, ReceivingAE      string // (0002,0017), (0002,0018): none when empty
	// Extra elements are merged in (replacing same tags).
	Extra []Elem
	// Drop removes these tags.
	Drop []uint32
	// Late moves these tags (present ones) after the other elements but
	// Pixel Data, in the order given: out of tag order (PS3.5 §7.1), as
	// some writers send. A tag given twice is written twice (a repeat).
	Late []uint32
	// LateMeta is Meta.Late: group 0002 elements written out of order.
	LateMeta []uint16
}

// Build encodes the instance as a Part 10 file with 16-bit pixel data.
func (in Instance) Build() []byte {
	mod := in.Modality
	if mod == "" {
		mod = "CT"
	}
	date := in.StudyDate
	if date == "" {
		date = "20260115"
	}
	ts := in.TransferSyntaxUID
	if ts == "" {
		ts = "1.2.840.10008.1.2.1"
	}
	els := map[uint32]Elem{}
	add := func(e Elem) { els[e.Tag] = e }
	if in.CharacterSet != "" {
		add(Str(Tag(8, 5), "CS", in.CharacterSet))
	}
	add(Str(Tag(8, 0x16), "UI", CTStorage))
	add(Str(Tag(8, 0x18), "UI", in.SOPUID))
	add(Str(Tag(8, 0x20), "DA", date))
	add(Str(Tag(8, 0x30), "TM", "101500.25"))
	add(Str(Tag(8, 0x50), "SH", "ACC001"))
	add(Str(Tag(8, 0x60), "CS", mod))
	add(Str(Tag(8, 0x1030), "LO", "CHEST CT"))
	add(Str(Tag(0x10, 0x10), "PN", in.PatientName))
	add(Str(Tag(0x10, 0x20), "LO", in.PatientID))
	add(Str(Tag(0x10, 0x30), "DA", "19700101"))
	add(Str(Tag(0x10, 0x40), "CS", "O"))
	add(Str(Tag(0x18, 0x50), "DS", "1.25"))
	add(Str(Tag(0x20, 0x0D), "UI", in.StudyUID))
	add(Str(Tag(0x20, 0x0E), "UI", in.SeriesUID))
	add(Str(Tag(0x20, 0x11), "IS", "2"))
	add(Str(Tag(0x20, 0x13), "IS", "1"))
	add(Seq(Tag(0x08, 0x1140), true, []Elem{Str(Tag(8, 0x1150), "UI", CTStorage), Str(Tag(8, 0x1155), "UI", "1.2.3.4.5")}))
	if in.Rows > 0 {
		add(U16(Tag(0x28, 0x10), uint16(in.Rows)))
		add(U16(Tag(0x28, 0x11), uint16(in.Columns)))
		add(U16(Tag(0x28, 0x100), 16))
		add(Elem{Tag: Tag(0x7FE0, 0x10), VR: "OW", Value: pixels(in.Rows * in.Columns * 2)})
	}
	for _, e := range in.Extra {
		add(e)
	}
	for _, t := range in.Drop {
		delete(els, t)
	}
	tags := make([]uint32, 0, len(els))
	for t := range els {
		tags = append(tags, t)
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i] < tags[j] })
	ds := make([]Elem, 0, len(tags))
	for _, t := range tags {
		if !slices.Contains(in.Late, t) && t != Tag(0x7FE0, 0x10) {
			ds = append(ds, els[t])
		}
	}
	for _, t := range in.Late {
		if e, ok := els[t]; ok && t != Tag(0x7FE0, 0x10) {
			ds = append(ds, e)
		}
	}
	if e, ok := els[Tag(0x7FE0, 0x10)]; ok {
		ds = append(ds, e)
	}
	return Part10(Meta{SOPClassUID: CTStorage, SOPInstanceUID: in.SOPUID, TransferSyntaxUID: ts, SourceAE: in.SourceAE,
		SendingAE: in.SendingAE, ReceivingAE: in.ReceivingAE, Late: in.LateMeta}, ds)
}

func pixels(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// SCPMetadata returns the S3 user metadata the SCP writes for data.
func SCPMetadata(sopClass, sopInstance, ts, sha string) map[string]string {
	return map[string]string{
		objectstore.MetaCallingAE: "MODALITY1", objectstore.MetaCalledAE: "INGEST", objectstore.MetaPeerAddr: "10.1.2.3:40000",
		objectstore.MetaAssociationID: "assoc1", objectstore.MetaReceivedAt: "2026-01-15T10:20:30.123456789Z",
		objectstore.MetaSOPClassUID: sopClass, objectstore.MetaSOPInstanceUID: sopInstance, objectstore.MetaTransferSyntaxUID: ts,
		objectstore.MetaLegacySHA256: sha, objectstore.MetaImplementationVersion: "TEST_1",
	}
}
