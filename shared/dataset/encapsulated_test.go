package dataset

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fragments encodes an encapsulated value: a Basic Offset Table (empty)
// and the fragments as items of defined length, then the Sequence
// Delimitation Item.
func fragments(frags ...[]byte) []byte {
	b := explicitLE.itemD()
	for _, f := range frags {
		b = append(b, explicitLE.itemD(f)...)
	}
	return append(explicitLE.tag(b, tagSeqDelim), 0, 0, 0, 0)
}

// TestEncapsulatedLength: the length of the encapsulated value at the
// source's start is its items and its Sequence Delimitation Item, not what
// follows; a value that cannot be followed is a verdict, ErrMalformed or
// ErrTruncated, never a length.
func TestEncapsulatedLength(t *testing.T) {
	e := explicitLE
	value := fragments([]byte("frame1.."), make([]byte, 1000))
	after := e.el(0xFFFAFFFA, "OB", "padding.") // Digital Signatures Sequence's group, past Pixel Data
	item := func(length uint32) []byte { return e.order().AppendUint32(e.tag(nil, tagItem), length) }
	tests := []struct {
		name string
		in   []byte
		want int64
		err  error
	}{
		{"items and the delimiter", value, int64(len(value)), nil},
		{"not what follows", cat(value, after), int64(len(value)), nil},
		{"the delimiter alone", fragments()[8:], 8, nil},
		{"a delimiter whose length is not 0", cat(e.itemD(), e.tag(nil, tagSeqDelim), []byte{4, 0, 0, 0}), 16, nil},
		{"nothing", nil, 0, ErrTruncated},
		{"an item header cut short", value[:4], 0, ErrTruncated},
		{"a fragment cut short", value[:30], 0, ErrTruncated},
		{"no delimiter", value[:len(value)-8], 0, ErrTruncated},
		{"a fragment past the end", item(1 << 20), 0, ErrTruncated},
		{"an element, not an item", cat(after, value), 0, ErrMalformed},
		{"an item delimiter", cat(e.itemD(), e.tag(nil, tagItemDelim), make([]byte, 4)), 0, ErrMalformed},
		{"a fragment of undefined length", cat(item(UndefinedLength), value), 0, ErrMalformed},
		{"Big Endian items", explicitBE.itemD(), 0, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, src := range []Source{
				bufio.NewReaderSize(bytes.NewReader(tc.in), 16),
				NewRangeSource(bytes.NewReader(tc.in), int64(len(tc.in)), RangeOptions{First: 8, Max: 16, ResetOnSkip: true}),
			} {
				n, err := EncapsulatedLength(src)
				if n != tc.want || !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
					t.Errorf("%T: EncapsulatedLength = %d, %v; want %d, %v", src, n, err, tc.want, tc.err)
				}
			}
		})
	}
}

// TestEncapsulatedLengthReadsItemHeadersOnly: over a RangeSource, the
// fragments' values are skipped, not fetched; a failing source is its
// error, no verdict.
func TestEncapsulatedLengthReadsItemHeadersOnly(t *testing.T) {
	value := fragments(make([]byte, 4<<20), make([]byte, 4<<20))
	src := NewRangeSource(bytes.NewReader(value), int64(len(value)), RangeOptions{First: 64, Max: 1024, ResetOnSkip: true})
	n, err := EncapsulatedLength(src)
	if n != int64(len(value)) || err != nil {
		t.Fatalf("EncapsulatedLength = %d, %v; want %d", n, err, len(value))
	}
	if src.Fetched() > 4<<10 {
		t.Errorf("fetched %d bytes of a %d-byte value, want its item headers' reads only", src.Fetched(), len(value))
	}
	failing := NewRangeSource(RangeOpener(func(off, n int64) (io.ReadCloser, error) { return nil, errStoreDown }), int64(len(value)), RangeOptions{})
	if _, err := EncapsulatedLength(failing); !errors.Is(err, errStoreDown) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrTruncated) {
		t.Errorf("over a failing source: %v, want its error", err)
	}
}

var errStoreDown = errors.New("store down")

// FuzzEncapsulatedLength: on any bytes, EncapsulatedLength never panics,
// its answer does not depend on how the source reads, a verdict is
// ErrMalformed or ErrTruncated, and a length is within the bytes and ends
// with a Sequence Delimitation Item.
func FuzzEncapsulatedLength(f *testing.F) {
	f.Add(fragments([]byte("frame1.."), []byte{0xFF, 0xD8, 0xFF, 0xD9}), uint8(3))
	f.Add(cat(fragments(), explicitLE.el(0xFFFAFFFA, "OB", "pad.")), uint8(8))
	f.Add(cat(explicitLE.itemD(), explicitLE.order().AppendUint32(explicitLE.tag(nil, tagItem), UndefinedLength)), uint8(1))
	f.Add(explicitLE.el(TagPixelData, "OB", "ab"), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		n1, err1 := EncapsulatedLength(bufio.NewReaderSize(bytes.NewReader(in), 16))
		c := int(chunk)%64 + 1
		n2, err2 := EncapsulatedLength(NewRangeSource(bytes.NewReader(in), int64(len(in)), RangeOptions{First: c, Max: 2 * c, ResetOnSkip: true}))
		if n1 != n2 || !sameError(err1, err2) {
			t.Fatalf("depends on the reads: %d, %v, then %d, %v", n1, err1, n2, err2)
		}
		if err1 != nil {
			if n1 != 0 || !errors.Is(err1, ErrMalformed) && !errors.Is(err1, ErrTruncated) {
				t.Fatalf("%d, %v: not a verdict", n1, err1)
			}
			return
		}
		if n1 < 8 || n1 > int64(len(in)) || !bytes.Equal(in[n1-8:n1-4], explicitLE.tag(nil, tagSeqDelim)) {
			t.Fatalf("length %d of %d bytes does not end with the delimiter", n1, len(in))
		}
	})
}

// TestIconImageEncapsulatedValue: an Icon Image Sequence (0088,0200) item
// whose Pixel Data is encapsulated, in an object whose own Pixel Data is
// native or encapsulated, in Explicit or Implicit VR, in a sequence of
// undefined or defined length: the Decoder walks it, reporting the icon's
// Pixel Data at depth 1 as encapsulated, its fragments, and the elements
// after the sequence at depth 0; EncapsulatedLength at the icon's value
// (where a DICOM JSON's bulk data URI of offset alone points) is the
// icon's items up to its Sequence Delimitation Item, not the object's
// Pixel Data after it.
func TestIconImageEncapsulatedValue(t *testing.T) {
	const tagIcon = 0x00880200
	iconValue := fragments([]byte{0xFF, 0xD8, 0xFF, 0xD9}, []byte("icon..")) // Explicit LE items, as every encoding has them
	for _, tc := range []struct {
		name   string
		e      enc
		ts     string
		define bool // the sequence and its item of defined length
		native bool // the object's own Pixel Data
	}{
		{"explicit, native object", explicitLE, tsExplicit, false, true},
		{"explicit, encapsulated object", explicitLE, tsJPEG, false, false},
		{"explicit, defined-length sequence", explicitLE, tsJPEG, true, false},
		{"implicit, native object", implicitLE, tsImplicit, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.e
			iconPixels := cat(e.hdr(tPixel, "OB", UndefinedLength, nil), iconValue)
			item := e.itemU(e.el(0x00280010, "US", "\x08\x00"), iconPixels)
			seq := e.seqU(tagIcon, "SQ", item)
			if tc.define {
				item = e.itemD(e.el(0x00280010, "US", "\x08\x00"), iconPixels)
				seq = e.seqD(tagIcon, item)
			}
			pixels := cat(e.hdr(tPixel, "OB", UndefinedLength, nil), fragments([]byte("frame1..")))
			if tc.native {
				pixels = e.el(tPixel, "OW", "\x01\x02\x03\x04")
			}
			in := cat(e.el(tSOPInst, "UI", "1.2"), seq, e.el(0x00880904, "LO", "title."), pixels)
			d := NewDecoder(bufio.NewReaderSize(bytes.NewReader(in), 16), tc.ts)
			var got []string
			var iconAt int64 = -1
			for k, err := d.Next(); k != KindEnd; k, err = d.Next() {
				if err != nil {
					t.Fatalf("Next: %v after %v", err, got)
				}
				switch el := d.Element(); k {
				case KindElement:
					got = append(got, fmt.Sprintf("%s depth %d encapsulated %v", TagString(el.Tag), el.Depth, el.Encapsulated))
					if el.Tag == tPixel && el.Depth == 1 {
						iconAt = el.Offset
					}
				case KindFragment:
					got = append(got, fmt.Sprintf("fragment depth %d", el.Depth))
				}
			}
			want := []string{
				"(0008,0018) depth 0 encapsulated false",
				"(0088,0200) depth 0 encapsulated false",
				"(0028,0010) depth 1 encapsulated false",
				"(7FE0,0010) depth 1 encapsulated true",
				"fragment depth 1", "fragment depth 1", "fragment depth 1",
				"(0088,0904) depth 0 encapsulated false",
				"(7FE0,0010) depth 0 encapsulated " + fmt.Sprint(!tc.native),
			}
			if !tc.native {
				want = append(want, "fragment depth 0", "fragment depth 0")
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("tokens (-want +got):\n%s", diff)
			}
			if iconAt < 0 {
				t.Fatal("no icon Pixel Data reported")
			}
			for _, src := range []Source{
				bufio.NewReaderSize(bytes.NewReader(in[iconAt:]), 16),
				NewRangeSource(bytes.NewReader(in[iconAt:]), int64(len(in))-iconAt, RangeOptions{First: 8, Max: 16, ResetOnSkip: true}),
			} {
				if n, err := EncapsulatedLength(src); err != nil || !bytes.Equal(in[iconAt:iconAt+n], iconValue) {
					t.Errorf("%T: EncapsulatedLength at the icon's value = %d, %v; want its %d bytes", src, n, err, len(iconValue))
				}
			}
		})
	}
}
