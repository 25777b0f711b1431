package pipeline

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"unicode/utf8"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
)

// bytesReader is an ObjectReader over one byte slice that counts what it
// serves.
type bytesReader struct {
	data   []byte
	served int64
}

func (b *bytesReader) Head(context.Context, string) (ObjectInfo, error) {
	return ObjectInfo{Size: int64(len(b.data))}, nil
}

func (b *bytesReader) OpenRange(_ context.Context, _ string, off, n int64) (io.ReadCloser, error) {
	end := int64(len(b.data))
	if off > end {
		off = end
	}
	if n >= 0 && off+n < end {
		end = off + n
	}
	b.served += end - off
	return io.NopCloser(bytes.NewReader(b.data[off:end])), nil
}

// Transfer syntaxes the tests build headers in.
const (
	tsImplicitLE = "1.2.840.10008.1.2"
	tsExplicitLE = "1.2.840.10008.1.2.1"
	tsDeflatedLE = "1.2.840.10008.1.2.1.99"
	tsExplicitBE = "1.2.840.10008.1.2.2"
)

// part10File builds a minimal Part 10 file: meta with the transfer syntax,
// then the dataset bytes as given.
func part10File(ts string, dataset []byte) []byte {
	var out bytes.Buffer
	out.Write(make([]byte, 128))
	out.WriteString("DICM")
	v := []byte(ts)
	if len(v)%2 == 1 {
		v = append(v, 0)
	}
	out.Write([]byte{0x02, 0x00, 0x10, 0x00, 'U', 'I'})
	out.Write(binary.LittleEndian.AppendUint16(nil, uint16(len(v))))
	out.Write(v)
	out.Write(dataset)
	return out.Bytes()
}

func TestReadHeaderStopsAtPixelData(t *testing.T) {
	// (0008,0060) CS "CT", then 8 MiB of pixel data.
	ds := []byte{0x08, 0x00, 0x60, 0x00, 'C', 'S', 2, 0, 'C', 'T'}
	ds = append(ds, 0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0)
	ds = binary.LittleEndian.AppendUint32(ds, 8<<20)
	data := append(part10File(tsExplicitLE, ds), make([]byte, 8<<20)...)
	r := &bytesReader{data: data}
	src := newRangeSource(context.Background(), r, ObjectInfo{Key: "k", Size: int64(len(data))})
	h, err := readHeader(src)
	if err != nil {
		t.Fatal(err)
	}
	if h.PixelData == nil || h.PixelData.Len != 8<<20 || len(h.Data.Elements) != 1 {
		t.Fatalf("header = %+v", h)
	}
	if r.served > firstChunk {
		t.Errorf("served %d bytes for a %d-byte header", r.served, len(data)-(8<<20))
	}
}

// TestReadHeaderDeflatedSyntaxes reads a deflated dataset under each
// transfer syntax that deflates it, JPIP's referenced-pixel ones included.
func TestReadHeaderDeflatedSyntaxes(t *testing.T) {
	// (0008,0060) CS "CT", deflated (RFC 1951).
	var z bytes.Buffer
	w, err := flate.NewWriter(&z, flate.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte{0x08, 0x00, 0x60, 0x00, 'C', 'S', 2, 0, 'C', 'T'}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ts := range []string{tsDeflatedLE, "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"} {
		t.Run(ts, func(t *testing.T) {
			data := part10File(ts, z.Bytes())
			h, err := readHeader(newRangeSource(context.Background(), &bytesReader{data: data}, ObjectInfo{Key: "k", Size: int64(len(data))}))
			if err != nil {
				t.Fatal(err)
			}
			if !h.Deflated || len(h.Data.Elements) != 1 || string(h.Data.Elements[0].Value) != "CT" {
				t.Errorf("header = %+v, elements %+v", h, h.Data.Elements)
			}
		})
	}
}

func FuzzReadHeader(f *testing.F) {
	ds := []byte{0x08, 0x00, 0x60, 0x00, 'C', 'S', 2, 0, 'C', 'T'}
	f.Add(part10File(tsExplicitLE, ds), uint8(0))
	f.Add(part10File(tsImplicitLE, []byte{0x08, 0x00, 0x60, 0x00, 2, 0, 0, 0, 'C', 'T'}), uint8(1))
	// A sequence of undefined length with one item.
	sq := []byte{0x08, 0x00, 0x40, 0x11, 'S', 'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
		0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF, 0x08, 0x00, 0x50, 0x11, 'U', 'I', 2, 0, '1', 0,
		0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0}
	f.Add(part10File(tsExplicitLE, sq), uint8(2))
	f.Add(part10File(tsExplicitBE, nil), uint8(3))
	f.Add(part10File(tsDeflatedLE, []byte{0x63, 0x60, 0x00, 0x00}), uint8(4))
	f.Fuzz(func(t *testing.T, data []byte, _ uint8) {
		r := &bytesReader{data: data}
		src := newRangeSource(context.Background(), r, ObjectInfo{Key: "k", Size: int64(len(data))})
		h, err := readHeader(src)
		if r.served > int64(len(data)) {
			t.Fatalf("served %d of %d bytes", r.served, len(data))
		}
		if err == nil && h == nil {
			t.Fatal("no header and no error")
		}
		// The meta header the content identity is derived with is the
		// object's bytes up to the data set.
		if h != nil && h.MetaHead != nil && (int64(len(h.MetaHead)) != h.MetaEnd || !bytes.Equal(h.MetaHead, data[:h.MetaEnd])) {
			t.Fatalf("meta head of %d bytes, meta end %d: not the object's first bytes", len(h.MetaHead), h.MetaEnd)
		}
	})
}

// charsetVRs are the text VRs FuzzCharsetDecode decodes a value as.
var charsetVRs = []string{"LO", "PN", "LT", "SH", "ST", "UT", "UC"}

// FuzzCharsetDecode decodes any bytes by any Specific Character Set as a
// value of any text VR: UTF-8 out, never a panic, no text lost; and under
// ISO 2022 the initial state at each delimiter (PS3.5 6.1.2.5.3): a
// value joined to another by a control character, or by one of its VR's
// delimiters where the first designates no two-byte G0 set (in which a
// delimiter's byte may start a character), decodes as the two apart.
func FuzzCharsetDecode(f *testing.F) {
	f.Add(`\ISO 2022 IR 87`, []byte("Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"), []byte("\x1b$B$d$^$@"), uint8(1), uint8(0))
	f.Add(`\ISO 2022 IR 149`, []byte("Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7"), []byte("\xc8\xab"), uint8(1), uint8(1))
	f.Add(`\ISO 2022 IR 58`, []byte("Zhang^XiaoDong=\x1b$)A\xd5\xc5"), []byte("\x1b$)A\xd0\xa1\xb6\xab="), uint8(1), uint8(2))
	f.Add(`ISO 2022 IR 100\ISO 2022 IR 126`, []byte("\x1b-F\xc4\xe9\xef"), []byte("\xc4"), uint8(1), uint8(3))
	f.Add(`\ISO 2022 IR 149`, []byte("\x1b$)C\xc8"), []byte("\xc8\xab"), uint8(0), uint8(0))
	f.Add(`ISO 2022 IR 13\ISO 2022 IR 87`, []byte("\xd4\xcf^\x1b$B;3\x1b(J\\~\x1b)I\xe0"), []byte("~\xb1"), uint8(0), uint8(4))
	f.Add(`ISO 2022 IR 87`, []byte("\x1b$B;3ED"), []byte("A"), uint8(2), uint8(5))
	f.Add("GB18030", []byte("\xcd\xf5^\xd0\xa1\xb6\xab"), []byte(nil), uint8(1), uint8(0))
	f.Add("ISO_IR 192", []byte("M\xfcller"), []byte(nil), uint8(0), uint8(0))
	f.Add("ISO_IR 100", []byte("J\xe9r\xf4me"), []byte(nil), uint8(2), uint8(0))
	f.Add("ISO_IR 13", []byte("A\\B~\xb1\x8e\x52"), []byte(nil), uint8(0), uint8(0))
	f.Add("ISO_IR 13", []byte("\x94\x5c\x93\x6f^\x91\xbe\xe0\xfd\x8e"), []byte(nil), uint8(0), uint8(0))
	f.Fuzz(func(t *testing.T, cs string, b, more []byte, vri, sep uint8) {
		c := newCharset(cs)
		vr := charsetVRs[int(vri)%len(charsetVRs)]
		s, ok := c.decode(b, vr)
		if !utf8.ValidString(s) {
			t.Fatalf("decode(%q, %q, %s) = %q: not UTF-8", cs, b, vr, s)
		}
		if ok && bytes.IndexByte(b, 0x1B) < 0 && len(b) > 0 && s == "" {
			t.Fatalf("decode(%q, %q, %s) lost all text", cs, b, vr)
		}
		if !c.iso2022 {
			return
		}
		seps := "\r\n\t\f"
		if !bytes.Contains(b, []byte("\x1b$B")) && !bytes.Contains(b, []byte("\x1b$@")) && !bytes.Contains(b, []byte("\x1b$(D")) {
			seps += isoResets(vr)
		}
		d := seps[int(sep)%len(seps)]
		s2, ok2 := c.decode(more, vr)
		joined := append(append(bytes.Clone(b), d), more...)
		if got, gotOK := c.decode(joined, vr); got != s+string(d)+s2 || gotOK != (ok && ok2) {
			t.Fatalf("%s %q: decode(%q) = %q, %v; apart %q, %v and %q, %v", vr, cs, joined, got, gotOK, s, ok, s2, ok2)
		}
	})
}

// agreementSyntaxes are the transfer syntaxes FuzzAgreement reads a
// dataset in; the deflated one deflates the input first.
var agreementSyntaxes = []string{tsExplicitLE, tsImplicitLE, tsExplicitBE, tsDeflatedLE, "1.2.826.0.1.3680043.10.99.1"}

// FuzzAgreement checks, on any dataset in any transfer syntax, that the
// SCP's reader and the pipeline's agree: when the Inspector (what the SCP
// streams a C-STORE through) reads the dataset whole, the pipeline's
// header reader reads the Part 10 file the SCP would store from it; when
// the Inspector refuses it before top-level Pixel Data, so does the
// pipeline.
func FuzzAgreement(f *testing.F) {
	ds := []byte{0x08, 0x00, 0x60, 0x00, 'C', 'S', 2, 0, 'C', 'T'}
	f.Add(ds, uint8(0))
	f.Add([]byte{0x08, 0x00, 0x60, 0x00, 2, 0, 0, 0, 'C', 'T'}, uint8(1))
	f.Add(append(bytes.Clone(ds), 0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0, 0, 0, 8, 0, 1, 2, 3, 4), uint8(0))
	f.Add(append(bytes.Clone(ds), 0xE0, 0x7F, 0x10, 0x00, 'O', 'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
		0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0x00, 0xE0, 2, 0, 0, 0, 1, 2, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0), uint8(3))
	f.Add([]byte{0x08, 0x00, 0x40, 0x11, 'S', 'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
		0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF, 0x08, 0x00, 0x50, 0x11, 'U', 'I', 2, 0, '1', 0,
		0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0}, uint8(4))
	// testdata/fuzz/FuzzAgreement holds deep SRs, cut Pixel Data and
	// fragments, overruns, group 0002 in datasets.
	f.Fuzz(func(t *testing.T, ds []byte, tsi uint8) {
		ts := agreementSyntaxes[int(tsi)%len(agreementSyntaxes)]
		if ts == tsDeflatedLE {
			var z bytes.Buffer
			w, _ := flate.NewWriter(&z, flate.BestSpeed)
			_, _ = w.Write(ds) // into memory
			_ = w.Close()
			ds = z.Bytes()
		}
		in := dataset.NewInspector(bytes.NewReader(ds), ts)
		_, verdict := io.Copy(io.Discard, in)

		file := append(part10.AppendHeader(nil, part10.Meta{MediaStorageSOPClassUID: "1.2.840.10008.5.1.4.1.1.7",
			MediaStorageSOPInstanceUID: "1.2.3", TransferSyntaxUID: ts}), ds...)
		h, err := readHeader(newRangeSource(context.Background(), &bytesReader{data: file}, ObjectInfo{Key: "k", Size: int64(len(file))}))
		if err != nil && !errors.Is(err, dataset.ErrMalformed) && !errors.Is(err, dataset.ErrTruncated) && !errors.Is(err, dataset.ErrLimit) {
			var corrupt flate.CorruptInputError
			if !errors.As(err, &corrupt) {
				t.Fatalf("pipeline error %v is no reader verdict", err)
			}
		}
		if verdict == nil {
			if err != nil {
				t.Fatalf("the SCP reads the dataset whole, the pipeline fails: %v", err)
			}
			if h.PixelShort > 0 {
				t.Fatalf("the SCP reads the dataset whole, the pipeline finds Pixel Data %d bytes short", h.PixelShort)
			}
			return
		}
		if err != nil || h.PixelShort > 0 {
			return // both refuse
		}
		// The pipeline read up to Pixel Data: the verdict must lie in it
		// or after it.
		var at *dataset.Error
		if !errors.As(verdict, &at) {
			t.Fatalf("verdict %v carries no offset", verdict)
		}
		if h.PixelData == nil {
			t.Fatalf("the SCP refuses (%v), the pipeline reads the whole dataset", verdict)
		}
		valueAt := h.PixelData.Offset
		if !h.Deflated {
			valueAt -= int64(len(file) - len(ds))
		}
		if at.Offset < valueAt {
			t.Fatalf("the SCP refuses (%v) before Pixel Data at %d, the pipeline reads it", verdict, valueAt)
		}
	})
}
