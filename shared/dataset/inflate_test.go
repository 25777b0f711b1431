package dataset

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// TestInflater: what a reader of a stored deflated data set inflates
// through. More than InflateAllowance plus MaxInflateRatio bytes per
// compressed byte is ErrLimit (zeros, deflating about 1029 times, past
// 1.108 times the allowance); a corrupt or cut stream is a verdict; a
// failing source is returned as it failed, no verdict.
func TestInflater(t *testing.T) {
	blank := deflateFrom(t, zeros(InflateAllowance+InflateAllowance/8))
	small := deflate(t, bytes.Repeat([]byte("dataset"), 1000))
	errStore := errors.New("store down")
	tests := []struct {
		name     string
		src      io.Reader
		wantErr  error
		verdict  bool  // the error is an *Error
		wantRead int64 // inflated bytes, when whole
	}{
		{"within the rule", bytes.NewReader(small), nil, false, 7000},
		{"blank past the allowance", bytes.NewReader(blank), ErrLimit, true, 0},
		{"cut short", bytes.NewReader(small[:len(small)/2]), ErrTruncated, true, 0},
		{"corrupt", bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff}), ErrMalformed, true, 0},
		{"source fails", io.MultiReader(bytes.NewReader(small[:len(small)/2]), iotest.ErrReader(errStore)), errStore, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := NewInflater(tt.src)
			out, err := io.Copy(io.Discard, z)
			var v *Error
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) || errors.As(err, &v) != tt.verdict {
				t.Fatalf("error %v, want %v (verdict %v)", err, tt.wantErr, tt.verdict)
			}
			if tt.wantErr == nil && out != tt.wantRead {
				t.Errorf("inflated %d bytes, want %d", out, tt.wantRead)
			}
			if out > InflateAllowance+MaxInflateRatio*z.Compressed() {
				t.Errorf("inflated %d bytes from %d", out, z.Compressed())
			}
			if _, again := z.Read(make([]byte, 1)); again != err && !(err == nil && again == io.EOF) {
				t.Errorf("read after the end: %v, want %v", again, err)
			}
			if (z.SourceErr() == errStore) != (tt.wantErr == errStore) {
				t.Errorf("SourceErr %v", z.SourceErr())
			}
		})
	}
}

// TestInflaterVerdictWhateverTheReads: the rule counts the compressed
// bytes the decompressor has used, not those read ahead from the source,
// so a data set near the bound has one verdict however its compressed
// bytes arrive (the SCP's as the peer's PDVs split them, the pipeline's
// and the thumbnail's in their range reads) and however its reader asks
// for the inflated ones. The value, noise, a blank run and noise again,
// inflates past the rule for some of the blank lengths, in the blank run.
// The accounting does not depend on the allowance, so this test uses a
// small one (64 KiB, for InflateAllowance): the blank runs near the bound
// are 0.85 MB, not 71 MiB, each read a byte at a time.
func TestInflaterVerdictWhateverTheReads(t *testing.T) {
	const allowance = 64 << 10
	e := explicitLE
	inflater := func(r io.Reader) *Inflater {
		z := NewInflater(r)
		z.allowance = allowance
		return z
	}
	sources := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte a read", iotest.OneByteReader},
		{"halves", iotest.HalfReader},
	}
	readers := []struct {
		name string
		read func(io.Reader) error
	}{
		{"inflater, 32 KiB reads", func(r io.Reader) error {
			_, err := io.Copy(io.Discard, inflater(r))
			return err
		}},
		{"inflater, one byte a read", func(r io.Reader) error {
			_, err := io.Copy(io.Discard, iotest.OneByteReader(inflater(r)))
			return err
		}},
		{"inflater, bufio of 64 KiB (the pipeline's)", func(r io.Reader) error {
			_, err := io.Copy(io.Discard, bufio.NewReaderSize(inflater(r), 64<<10))
			return err
		}},
		{"inspector (the SCP's)", func(r io.Reader) error {
			in := NewInspector(r, tsDeflate)
			in.inflate.allowance = allowance
			_, err := io.Copy(io.Discard, in)
			return err
		}},
	}
	const noiseLen = 6000
	verdicts := map[bool]int{} // refused: how many blank lengths
	for blank := 820_000; blank <= 880_000; blank += 5_000 {
		in := deflateFrom(t, bytes.NewReader(cat(ids(e, "SQ"), e.hdr(0x00291010, "OB", uint32(noiseLen+blank+noiseLen), nil))),
			noise(1, noiseLen), zeros(blank), noise(2, noiseLen))
		var want error
		for i, s := range sources {
			for j, r := range readers {
				err := r.read(s.wrap(bytes.NewReader(in)))
				if err != nil && !errors.Is(err, ErrLimit) {
					t.Fatalf("blank %d, source %s, %s: %v", blank, s.name, r.name, err)
				}
				if i == 0 && j == 0 {
					want = err
				} else if (err == nil) != (want == nil) {
					t.Errorf("blank %d, source %s, %s: %v; whole, 32 KiB reads: %v", blank, s.name, r.name, err, want)
				}
			}
		}
		verdicts[want != nil]++
	}
	if verdicts[true] == 0 || verdicts[false] == 0 {
		t.Errorf("refused %d blank lengths, accepted %d: the lengths do not straddle the bound", verdicts[true], verdicts[false])
	}
}

// FuzzInflater: on any compressed bytes, the Inflater never panics, ends
// with io.EOF or a verdict (an *Error; the source here never fails), and
// never inflates past the rule.
func FuzzInflater(f *testing.F) {
	f.Add(deflate(f, ids(explicitLE, "SQ")))
	f.Add(deflate(f, make([]byte, 1<<16)))
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		z := NewInflater(bytes.NewReader(in))
		out, err := io.Copy(io.Discard, z)
		var v *Error
		if err != nil && !errors.As(err, &v) {
			t.Fatalf("error %v is no verdict", err)
		}
		if out > InflateAllowance+MaxInflateRatio*z.Compressed() {
			t.Fatalf("inflated %d bytes from %d", out, z.Compressed())
		}
	})
}

// BenchmarkInflateBound: what a deflated data set of zeros just within
// the rule (InflateAllowance plus MaxInflateRatio bytes per compressed
// byte: 70.8 MiB from 71 KiB) costs the SCP's Inspector, which inflates
// every byte: the measurement InflateAllowance's comment quotes.
func BenchmarkInflateBound(b *testing.B) {
	e := explicitLE
	n := InflateAllowance*1029/(1029-MaxInflateRatio) - 64<<10 // just within
	in := deflateFrom(b, bytes.NewReader(cat(ids(e, "SQ"), e.hdr(0x00291010, "OB", uint32(n), nil))), zeros(n))
	b.Logf("%d bytes inflating to %d", len(in), n)
	b.SetBytes(int64(n))
	for b.Loop() {
		r := NewInspector(bytes.NewReader(in), tsDeflate)
		if _, err := io.Copy(io.Discard, r); err != nil || r.Err() != nil || r.s.Offset() < int64(n) {
			b.Fatalf("%v, %v: inflated %d", err, r.Err(), r.s.Offset())
		}
	}
}
