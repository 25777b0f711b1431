package dataset

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// TestInflater: what a reader of a stored deflated data set inflates
// through. Past InflateAllowance more than MaxInflateRatio bytes per
// compressed byte is ErrLimit; a corrupt or cut stream is a verdict; a
// failing source is returned as it failed, no verdict.
func TestInflater(t *testing.T) {
	blank := deflate(t, make([]byte, 16*InflateAllowance))
	small := deflate(t, bytes.Repeat([]byte("dataset"), 1000))
	errStore := errors.New("store down")
	tests := []struct {
		name     string
		src      io.Reader
		wantErr  error
		verdict  bool // the error is an *Error
		wantRead int  // inflated bytes, when whole
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
			out, err := io.ReadAll(z)
			var v *Error
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) || errors.As(err, &v) != tt.verdict {
				t.Fatalf("error %v, want %v (verdict %v)", err, tt.wantErr, tt.verdict)
			}
			if tt.wantErr == nil && len(out) != tt.wantRead {
				t.Errorf("inflated %d bytes, want %d", len(out), tt.wantRead)
			}
			if int64(len(out)) > max(InflateAllowance, MaxInflateRatio*z.Compressed()) {
				t.Errorf("inflated %d bytes from %d", len(out), z.Compressed())
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
// inflates past the ratio for some of the blank lengths, in the blank run.
func TestInflaterVerdictWhateverTheReads(t *testing.T) {
	e := explicitLE
	rnd := rand.New(rand.NewPCG(3, 4))
	noise := make([]byte, 60_000)
	for i := range noise {
		noise[i] = byte(rnd.IntN(256))
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
			_, err := io.Copy(io.Discard, NewInflater(r))
			return err
		}},
		{"inflater, one byte a read", func(r io.Reader) error {
			_, err := io.Copy(io.Discard, iotest.OneByteReader(NewInflater(r)))
			return err
		}},
		{"inflater, bufio of 64 KiB (the pipeline's)", func(r io.Reader) error {
			_, err := io.Copy(io.Discard, bufio.NewReaderSize(NewInflater(r), 64<<10))
			return err
		}},
		{"inspector (the SCP's)", func(r io.Reader) error {
			_, err := io.Copy(io.Discard, NewInspector(r, tsDeflate))
			return err
		}},
	}
	for blank := 6_700_000; blank <= 7_000_000; blank += 25_000 {
		value := cat(noise, make([]byte, blank), noise)
		in := deflate(t, cat(ids(e, "SQ"), e.hdr(0x00091010, "OB", uint32(len(value)), value)))
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
		if out > max(InflateAllowance, MaxInflateRatio*z.Compressed()) {
			t.Fatalf("inflated %d bytes from %d", out, z.Compressed())
		}
	})
}
