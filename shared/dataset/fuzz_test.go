package dataset

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var fuzzSyntaxes = []string{tsExplicit, tsImplicit, tsBig, tsDeflate, tsPrivate}

// FuzzInspector checks, on any input: nothing panics; the bytes passed
// on, the header and the verdict never depend on how reads are split;
// pass-through is exact without DropGroup0002 (up to the verdict, which
// stops the stream); filtering only ever removes bytes.
func FuzzInspector(f *testing.F) {
	e, i, b := explicitLE, implicitLE, explicitBE
	f.Add(ids(e, "SQ"), uint8(0), false, uint8(1))
	f.Add(ids(i, "SQ"), uint8(1), true, uint8(3))
	f.Add(ids(b, "SQ"), uint8(2), false, uint8(7))
	f.Add(deflate(f, ids(e, "SQ")), uint8(3), false, uint8(5))
	f.Add(cat(e.el(0x00020010, "UI", "1.2\x00"), ids(e, "UN")), uint8(0), true, uint8(2))
	f.Add(cat(i.el(0x00020010, "UI", "1.2\x00"), ids(i, "SQ")), uint8(4), true, uint8(2))
	f.Add(cat(e.seqU(0x00091010, "UN", i.itemU(i.el(tSOPInst, "UI", "1")))), uint8(0), false, uint8(9))
	f.Add(cat(ids(e, "SQ"), e.hdr(tPixel, "OW", 512<<10, make([]byte, 100))), uint8(0), false, uint8(11))
	f.Add(cat(ids(e, "SQ"), e.seqU(tPixel, "OB", e.itemD(), e.itemD([]byte("frame1..")))), uint8(0), false, uint8(4))
	f.Add(nested(i, 3), uint8(1), false, uint8(6))
	f.Fuzz(func(t *testing.T, in []byte, tsi uint8, drop bool, chunk uint8) {
		ts := fuzzSyntaxes[int(tsi)%len(fuzzSyntaxes)]
		var opts []Option
		if drop {
			opts = append(opts, DropGroup0002())
		}
		opts = append(opts, WithMaxHeaderBytes(4096))
		whole := NewInspector(bytes.NewReader(in), ts, opts...)
		out1, err1 := io.ReadAll(whole)
		split := NewInspector(bytes.NewReader(in), ts, opts...)
		out2, err2 := readChunks(split, int(chunk)%17+1)
		if !sameError(err1, err2) {
			t.Fatalf("verdict depends on read sizes: %v, then %v", err1, err2)
		}
		if err1 != nil && !errors.Is(err1, ErrMalformed) && !errors.Is(err1, ErrTruncated) && !errors.Is(err1, ErrLimit) {
			t.Fatalf("read error %v is no verdict", err1)
		}
		if !sameError(err1, whole.Err()) {
			t.Fatalf("Read returned %v, Err() %v", err1, whole.Err())
		}
		if !bytes.Equal(out1, out2) {
			t.Fatalf("output depends on read sizes")
		}
		h1, h2 := whole.Header(), split.Header()
		if d := cmp.Diff(h1, h2, cmp.Comparer(sameError)); d != "" {
			t.Fatalf("header depends on read sizes (-whole +split):\n%s", d)
		}
		if !h1.Done {
			t.Fatal("header not done at EOF")
		}
		if !drop || !h1.Group0002Dropped {
			if err1 == nil && !bytes.Equal(out1, in) || !bytes.HasPrefix(in, out1) {
				t.Fatalf("bytes changed (drop=%v, header %+v, verdict %v)", drop, h1, err1)
			}
		} else if len(out1) >= len(in) {
			t.Fatalf("filtering did not remove bytes")
		}
		if h1.Group0002Dropped && !h1.Group0002 {
			t.Fatal("dropped without group 0002")
		}
		if h1.Group0002Dropped && err1 == nil && ts != tsPrivate {
			// The filtered stream reads the same.
			again := NewInspector(bytes.NewReader(out1), ts, WithMaxHeaderBytes(4096))
			_, err := io.Copy(io.Discard, again)
			h3 := again.Header()
			if err != nil {
				t.Fatalf("filtered stream has a verdict: %v", err)
			}
			if h3.Err == nil && h1.Err == nil && (h3.SOPClassUID != h1.SOPClassUID || h3.SOPInstanceUID != h1.SOPInstanceUID ||
				h3.StudyInstanceUID != h1.StudyInstanceUID || h3.SeriesInstanceUID != h1.SeriesInstanceUID) {
				t.Fatalf("filtered stream reads differently: %+v, then %+v", h1, h3)
			}
		}
	})
}

// FuzzDecoder checks the pull reader against the push reader on any
// input: the same verdict, and the Decoder's skips (Source.Discard) never
// go past what the Scanner was told; and a dataset read to its end has no
// element twice in a level (the top, each item; PS3.5 §7.1), while one
// out of tag order may be read to its end, and is then what
// Scanner.Unordered reports.
func FuzzDecoder(f *testing.F) {
	e, i, b := explicitLE, implicitLE, explicitBE
	f.Add(ids(e, "SQ"), uint8(0))
	f.Add(ids(i, "SQ"), uint8(1))
	f.Add(ids(b, "SQ"), uint8(2))
	f.Add(cat(ids(e, "SQ"), e.hdr(tPixel, "OW", 512<<10, make([]byte, 100))), uint8(0))
	f.Add(cat(ids(i, "SQ"), i.seqD(0x00081115, i.itemD(i.el(0x00081150, "UI", "1.2\x00")))), uint8(1))
	f.Add(nested(e, 5), uint8(0))
	f.Add(cat(i.seqU(0x00081199, "SQ", i.itemU()), i.seqU(0x00081199, "SQ", i.itemU())), uint8(1))
	f.Add(i.seqU(0x00081199, "SQ", i.itemU(i.el(0x00081155, "UI", "1.2"), i.el(0x00081150, "UI", "1.3"))), uint8(1))
	f.Add(cat(e.el(tSOPClass, "UI", "1.2"), e.el(tStudy, "UI", "1.4"), e.el(tSOPInst, "UI", "1.3"), e.el(tStudy, "UI", "1.5")), uint8(0))
	f.Add(i.seqU(0x00081199, "SQ", i.itemU(i.el(0x00081155, "UI", "1.2"), i.el(0x00081150, "UI", "1.3"), i.el(0x00081155, "UI", "1.4"))), uint8(1))
	// Delimiters the chaos run sent a live SCP: a sequence never closed, before the identifiers; an item delimiter
	// with a length; a sequence delimiter at the top level.
	ref := e.el(0x00081150, "UI", "1.2\x00")
	f.Add(cat(e.hdr(0x00081115, "SQ", UndefinedLength, nil), e.itemU(ref), ids(e, "SQ")), uint8(0))
	f.Add(cat(e.hdr(0x00081115, "SQ", UndefinedLength, e.order().AppendUint32(e.tag(nil, tagItem), UndefinedLength)), ref,
		e.order().AppendUint32(e.tag(nil, tagItemDelim), 8), ids(e, "SQ")), uint8(0))
	f.Add(cat(e.order().AppendUint32(e.tag(nil, tagSeqDelim), 0), ids(e, "SQ")), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, tsi uint8) {
		ts := []string{tsExplicit, tsImplicit, tsBig, tsPrivate}[int(tsi)%4]
		ins := NewInspector(bytes.NewReader(in), ts)
		_, verdict := io.Copy(io.Discard, ins)
		d := NewDecoder(bufio.NewReaderSize(bytes.NewReader(in), 16), ts)
		var err error
		tokens := 0
		// Per level open: the top, then each item (a sequence's own level
		// holds no element): its tags, and the last.
		type level struct {
			seen map[uint32]bool
			last int64
		}
		levels := []level{{map[uint32]bool{}, -1}}
		repeated, stepped := false, false
		for k := KindNone; k != KindEnd && k != KindError; tokens++ {
			k, err = d.Next()
			switch k {
			case KindElement:
				lv, tag := &levels[len(levels)-1], d.Element().Tag
				repeated = repeated || lv.seen[tag]
				stepped = stepped || int64(tag) < lv.last
				lv.seen[tag], lv.last = true, int64(tag)
				if d.Element().Sequence || d.Element().Encapsulated {
					levels = append(levels, level{map[uint32]bool{}, -1})
				}
			case KindItem:
				levels = append(levels, level{map[uint32]bool{}, -1})
			case KindItemEnd, KindSequenceEnd:
				if len(levels) > 1 {
					levels = levels[:len(levels)-1]
				}
			}
			if k == KindElement && tokens%3 == 0 {
				if e := d.Element(); !e.Sequence && !e.Encapsulated && e.Length > 0 && e.Length != UndefinedLength {
					d.Capture(make([]byte, min(e.Length, 1024)))
				}
			}
			if tokens > 4*len(in)+4 {
				t.Fatal("decoder does not progress")
			}
		}
		if !sameError(verdict, err) {
			t.Fatalf("inspector %v, decoder %v", verdict, err)
		}
		if err == nil && d.Offset() != int64(len(in)) {
			t.Fatalf("decoder ended at %d of %d", d.Offset(), len(in))
		}
		if err == nil && repeated {
			t.Fatal("a repeated element was read to a clean end")
		}
		if _, _, unordered := d.Unordered(); err == nil && unordered != stepped {
			t.Fatalf("Unordered %v, but an element after a greater tag at its level: %v", unordered, stepped)
		}
	})
}

func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Error() == b.Error()
}

// benchDataset is a CT-like object: a header, then 64 MiB of pixel data.
func benchDataset(b *testing.B, e enc, pixels int) []byte {
	b.Helper()
	return cat(ids(e, "SQ"), e.el(0x00280010, "US", "\x00\x02"), e.hdr(tPixel, "OW", uint32(pixels), make([]byte, pixels)))
}

// BenchmarkPassThrough measures the SCP hot path: a whole object read
// through an Inspector in 64 KiB reads.
func BenchmarkPassThrough(b *testing.B) {
	for _, bc := range []struct {
		name string
		ts   string
		e    enc
		opts []Option
	}{
		{"explicit", tsExplicit, explicitLE, nil},
		{"implicit", tsImplicit, implicitLE, nil},
		{"explicit-drop0002", tsExplicit, explicitLE, []Option{DropGroup0002()}},
		{"deflated", tsDeflate, explicitLE, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ds := benchDataset(b, bc.e, 64<<20)
			if bc.ts == tsDeflate {
				ds = deflate(b, ds)
			}
			buf := make([]byte, 64<<10)
			b.SetBytes(int64(len(ds)))
			b.ReportAllocs()
			r := bytes.NewReader(ds)
			for b.Loop() {
				r.Reset(ds)
				in := NewInspector(r, bc.ts, bc.opts...)
				if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{in}, buf); err != nil {
					b.Fatal(err)
				}
				if in.Header().SeriesInstanceUID == "" {
					b.Fatal("no header")
				}
			}
		})
	}
}

// BenchmarkHeader measures the parsing itself: small objects read in small
// chunks, so every byte goes through the parser.
func BenchmarkHeader(b *testing.B) {
	e := explicitLE
	var elems []byte
	for g := uint32(0x0009); g < 0x0020; g++ {
		for el := uint32(0x1000); el < 0x1040; el++ {
			elems = append(elems, e.el(g<<16|el, "LO", "some value")...)
		}
	}
	ds := cat(e.el(tSOPInst, "UI", "1.2.3"), elems, e.el(tSeries, "UI", "1.2\x00"))
	buf := make([]byte, 1024)
	b.SetBytes(int64(len(ds)))
	b.ReportAllocs()
	r := bytes.NewReader(ds)
	for b.Loop() {
		r.Reset(ds)
		in := NewInspector(r, tsExplicit)
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{in}, buf); err != nil {
			b.Fatal(err)
		}
		if in.Header().SeriesInstanceUID == "" {
			b.Fatal("no header")
		}
	}
}

// BenchmarkPeek measures what the SCP does per object: Peek, then the
// rest of a 512 KiB object.
func BenchmarkPeek(b *testing.B) {
	ds := benchDataset(b, explicitLE, 512<<10)
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(ds)))
	b.ReportAllocs()
	r := bytes.NewReader(ds)
	for b.Loop() {
		r.Reset(ds)
		in := NewInspector(r, tsExplicit, DropGroup0002())
		body, err := in.Peek()
		if h := in.Header(); err != nil || h.SeriesInstanceUID == "" {
			b.Fatal(err, h)
		}
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{body}, buf); err != nil {
			b.Fatal(err)
		}
	}
}
