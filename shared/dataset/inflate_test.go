package dataset

import (
	"bytes"
	"errors"
	"io"
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
