package dataset

import (
	"bytes"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var fuzzSyntaxes = []string{tsExplicit, tsImplicit, tsBig, tsDeflate, tsPrivate}

// FuzzInspector checks, on any input: pass-through is exact without
// DropGroup0002; results never depend on how reads are split; filtering
// only ever removes bytes.
func FuzzInspector(f *testing.F) {
	e, i, b := explicitLE, implicitLE, explicitBE
	f.Add(ids(e, "SQ"), uint8(0), false, uint8(1))
	f.Add(ids(i, "SQ"), uint8(1), true, uint8(3))
	f.Add(ids(b, "SQ"), uint8(2), false, uint8(7))
	f.Add(deflate(f, ids(e, "SQ")), uint8(3), false, uint8(5))
	f.Add(cat(e.el(0x00020010, "UI", "1.2\x00"), ids(e, "UN")), uint8(0), true, uint8(2))
	f.Add(cat(i.el(0x00020010, "UI", "1.2\x00"), ids(i, "SQ")), uint8(4), true, uint8(2))
	f.Add(cat(e.seqU(0x00091010, "UN", i.itemU(i.el(tSOPInst, "UI", "1")))), uint8(0), false, uint8(9))
	f.Fuzz(func(t *testing.T, in []byte, tsi uint8, drop bool, chunk uint8) {
		ts := fuzzSyntaxes[int(tsi)%len(fuzzSyntaxes)]
		var opts []Option
		if drop {
			opts = append(opts, DropGroup0002())
		}
		opts = append(opts, WithMaxHeaderBytes(4096))
		whole := NewInspector(bytes.NewReader(in), ts, opts...)
		out1, err := io.ReadAll(whole)
		if err != nil {
			t.Fatal(err)
		}
		split := NewInspector(bytes.NewReader(in), ts, opts...)
		out2, err := readChunks(split, int(chunk)%17+1)
		if err != nil {
			t.Fatal(err)
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
			if !bytes.Equal(out1, in) {
				t.Fatalf("bytes changed (drop=%v, header %+v)", drop, h1)
			}
		} else if len(out1) >= len(in) {
			t.Fatalf("filtering did not remove bytes")
		}
		if h1.Group0002Dropped && !h1.Group0002 {
			t.Fatal("dropped without group 0002")
		}
		if h1.Group0002Dropped && h1.Err == nil && ts != tsPrivate {
			// The filtered stream parses to the same identifiers.
			again := NewInspector(bytes.NewReader(out1), ts, WithMaxHeaderBytes(4096))
			io.Copy(io.Discard, again)
			h3 := again.Header()
			if h3.Err == nil && (h3.SOPClassUID != h1.SOPClassUID || h3.SOPInstanceUID != h1.SOPInstanceUID ||
				h3.StudyInstanceUID != h1.StudyInstanceUID || h3.SeriesInstanceUID != h1.SeriesInstanceUID) {
				t.Fatalf("filtered stream reads differently: %+v, then %+v", h1, h3)
			}
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
		h, body, err := Peek(r, tsExplicit, DropGroup0002())
		if err != nil || h.SeriesInstanceUID == "" {
			b.Fatal(err, h)
		}
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{body}, buf); err != nil {
			b.Fatal(err)
		}
	}
}
