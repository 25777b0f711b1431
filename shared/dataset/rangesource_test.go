package dataset_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/google/go-cmp/cmp"
)

// recordingAt is an io.ReaderAt over data that records each read as
// {offset, length asked} and counts the bytes it serves; with fail set,
// a read ending past failAt fails.
type recordingAt struct {
	data   []byte
	reads  [][2]int64
	served int64
	failAt int64
	fail   error
}

func (r *recordingAt) ReadAt(p []byte, off int64) (n int, err error) {
	r.reads = append(r.reads, [2]int64{off, int64(len(p))})
	defer func() { r.served += int64(n) }()
	if r.fail != nil && off+int64(len(p)) > r.failAt {
		return copy(p, r.data[off:max(off, min(r.failAt, int64(len(r.data))))]), r.fail
	}
	if off >= int64(len(r.data)) {
		return 0, io.EOF
	}
	if n = copy(p, r.data[off:]); n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// op is a step of a RangeSource test: Peek(n) or Discard(n), with the
// count it returns (bytes given or skipped) and its error.
type op struct {
	discard bool
	n       int
	want    int
	err     error
}

func peek(n, want int, err error) op    { return op{n: n, want: want, err: err} }
func discard(n, want int, err error) op { return op{discard: true, n: n, want: want, err: err} }

var errStore = errors.New("store failed")

func TestRangeSource(t *testing.T) {
	data := make([]byte, 10000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	small := dataset.RangeOptions{First: 512, Max: 2048}
	reset := dataset.RangeOptions{First: 512, Max: 2048, ResetOnSkip: true}
	tests := []struct {
		name     string
		opt      dataset.RangeOptions
		data     []byte
		size     int64 // as stated
		failAt   int64 // reads past it fail with errStore (0: none)
		ops      []op
		reads    [][2]int64 // {offset, length} of each read
		pos      int64
		wantSize int64
	}{
		{
			name: "chunks double up to Max",
			opt:  small, data: data, size: 10000,
			ops:   []op{peek(100, 100, nil), discard(100, 100, nil), peek(500, 500, nil), discard(500, 500, nil), peek(1000, 1000, nil), discard(1000, 1000, nil), peek(3000, 3000, nil), discard(3000, 3000, nil), peek(2000, 2000, nil)},
			reads: [][2]int64{{0, 512}, {512, 1024}, {1536, 2048}, {3584, 2048}, {5632, 2048}},
			pos:   4600, wantSize: 10000,
		},
		{
			name: "a Peek beyond the chunk reads what it asks",
			opt:  small, data: data, size: 10000,
			ops:   []op{peek(4000, 4000, nil)},
			reads: [][2]int64{{0, 4000}},
			pos:   0, wantSize: 10000,
		},
		{
			name: "a Discard within what is held reads nothing",
			opt:  reset, data: data, size: 10000,
			ops:   []op{peek(8, 8, nil), discard(500, 500, nil), peek(12, 12, nil)},
			reads: [][2]int64{{0, 512}},
			pos:   500, wantSize: 10000,
		},
		{
			name: "a long skip keeps the chunk growing",
			opt:  small, data: data, size: 10000,
			ops:   []op{peek(100, 100, nil), discard(100, 100, nil), peek(500, 500, nil), discard(5000, 5000, nil), peek(8, 8, nil)},
			reads: [][2]int64{{0, 512}, {512, 1024}, {5100, 2048}},
			pos:   5100, wantSize: 10000,
		},
		{
			name: "a long skip resets the chunk with ResetOnSkip",
			opt:  reset, data: data, size: 10000,
			ops:   []op{peek(100, 100, nil), discard(100, 100, nil), peek(500, 500, nil), discard(5000, 5000, nil), peek(8, 8, nil), discard(512, 512, nil), peek(8, 8, nil)},
			reads: [][2]int64{{0, 512}, {512, 1024}, {5100, 512}, {5612, 1024}},
			pos:   5612, wantSize: 10000,
		},
		{
			// A skip that lands less than First past what is held is of a
			// small value among small elements (a header's, the items of a
			// Per-Frame Functional Groups Sequence skipped one by one): the
			// chunk goes on growing, as when nothing was skipped. Reset,
			// such a header was read First bytes at a time.
			name: "a short skip past what is held keeps the chunk growing with ResetOnSkip",
			opt:  reset, data: data, size: 10000,
			ops:   []op{peek(8, 8, nil), discard(600, 600, nil), peek(8, 8, nil), discard(1100, 1100, nil), peek(8, 8, nil)},
			reads: [][2]int64{{0, 512}, {600, 1024}, {1700, 2048}},
			pos:   1700, wantSize: 10000,
		},
		{
			name: "the last read stops at the stated size",
			opt:  small, data: data, size: 700,
			ops:   []op{peek(600, 600, nil), discard(600, 600, nil), peek(200, 100, io.EOF)},
			reads: [][2]int64{{0, 600}, {600, 100}},
			pos:   600, wantSize: 700,
		},
		{
			name: "an object shorter than its stated size ends where a read finds",
			opt:  small, data: data[:300], size: 10000,
			ops:   []op{peek(200, 200, nil), discard(200, 200, nil), peek(200, 100, io.EOF), peek(200, 100, io.EOF), discard(200, 100, io.EOF)},
			reads: [][2]int64{{0, 512}},
			pos:   300, wantSize: 300,
		},
		{
			name: "a skip past the end stops at the end and reads nothing",
			opt:  small, data: data, size: 10000,
			ops:   []op{peek(4, 4, nil), discard(20000, 10000, io.EOF), peek(4, 0, io.EOF), discard(1, 0, io.EOF)},
			reads: [][2]int64{{0, 512}},
			pos:   10000, wantSize: 10000,
		},
		{
			name: "a skip to the end exactly is whole",
			opt:  small, data: data, size: 10000,
			ops: []op{discard(10000, 10000, nil), peek(1, 0, io.EOF)},
			pos: 10000, wantSize: 10000,
		},
		{
			name: "a negative skip is refused and moves nothing",
			opt:  small, data: data, size: 10000,
			ops:   []op{peek(4, 4, nil), discard(-1, 0, errAny), peek(4, 4, nil)},
			reads: [][2]int64{{0, 512}},
			pos:   0, wantSize: 10000,
		},
		{
			name: "a failed read is returned as it is",
			opt:  small, data: data, size: 10000, failAt: 1000,
			ops:   []op{peek(600, 600, nil), discard(600, 600, nil), peek(600, 0, errStore), peek(300, 300, nil)},
			reads: [][2]int64{{0, 600}, {600, 1024}},
			pos:   600, wantSize: 10000,
		},
		{
			name: "a negative size is empty",
			opt:  small, data: data, size: -5,
			ops: []op{peek(1, 0, io.EOF), discard(1, 0, io.EOF)},
			pos: 0, wantSize: 0,
		},
		{
			name: "the zero options read 32 KiB first",
			data: make([]byte, 200000), size: 200000,
			ops:   []op{peek(1, 1, nil), discard(40000, 40000, nil), peek(1, 1, nil)},
			reads: [][2]int64{{0, 32 << 10}, {40000, 64 << 10}},
			pos:   40000, wantSize: 200000,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recordingAt{data: tt.data, failAt: tt.failAt}
			if tt.failAt > 0 {
				r.fail = errStore
			}
			s := dataset.NewRangeSource(r, tt.size, tt.opt)
			for i, o := range tt.ops {
				at := s.Pos()
				var n int
				var err error
				if o.discard {
					n, err = s.Discard(o.n)
				} else {
					var b []byte
					b, err = s.Peek(o.n)
					n = len(b)
					if end := at + int64(len(b)); err == nil || errors.Is(err, io.EOF) {
						if !bytes.Equal(b, tt.data[at:end]) {
							t.Errorf("op %d: Peek(%d) at %d gave other bytes than the object's", i, o.n, at)
						}
					}
				}
				if n != o.want || !sameErr(err, o.err) {
					t.Errorf("op %d (discard %v, %d) at %d: %d, %v; want %d, %v", i, o.discard, o.n, at, n, err, o.want, o.err)
				}
			}
			if d := cmp.Diff(tt.reads, r.reads); d != "" {
				t.Errorf("reads (-want +got):\n%s", d)
			}
			if s.Pos() != tt.pos || s.Size() != tt.wantSize {
				t.Errorf("Pos %d, Size %d; want %d, %d", s.Pos(), s.Size(), tt.pos, tt.wantSize)
			}
			if s.Fetched() != r.served {
				t.Errorf("Fetched %d, served %d", s.Fetched(), r.served)
			}
		})
	}
}

// TestRangeSourceKeepBehind: with KeepBehind, the end of a value skipped
// past what is held comes in the read that follows the skip (no request of
// its own), and the last bytes read stay held across a read; without it,
// nothing behind the read position is held once a read has moved on.
func TestRangeSourceKeepBehind(t *testing.T) {
	data := make([]byte, 10000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	tests := []struct {
		name  string
		keep  int
		ops   []op
		reads [][2]int64
		held  [2]int64 // {offset, length} asked of Held at the end
		ok    bool
	}{
		{"the end of a skipped value", 3, []op{peek(8, 8, nil), discard(5000, 5000, nil), peek(8, 8, nil), discard(8, 8, nil)},
			[][2]int64{{0, 512}, {4997, 515}}, [2]int64{4997, 3}, true},
		{"a skip shorter than KeepBehind reads it again", 3, []op{peek(8, 8, nil), discard(511, 511, nil), discard(2, 2, nil), peek(8, 8, nil)},
			[][2]int64{{0, 512}, {511, 1026}}, [2]int64{511, 2}, true},
		{"bytes read before a fill", 3, []op{peek(8, 8, nil), discard(510, 510, nil), peek(8, 8, nil)},
			[][2]int64{{0, 512}, {512, 1024}}, [2]int64{507, 3}, true},
		{"no more than KeepBehind", 3, []op{peek(8, 8, nil), discard(510, 510, nil), peek(8, 8, nil)},
			[][2]int64{{0, 512}, {512, 1024}}, [2]int64{506, 4}, false},
		{"without KeepBehind", 0, []op{peek(8, 8, nil), discard(5000, 5000, nil), peek(8, 8, nil)},
			[][2]int64{{0, 512}, {5000, 512}}, [2]int64{4997, 3}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recordingAt{data: data}
			s := dataset.NewRangeSource(r, int64(len(data)), dataset.RangeOptions{First: 512, Max: 2048, ResetOnSkip: true, KeepBehind: tt.keep})
			for i, o := range tt.ops {
				var n int
				var err error
				if o.discard {
					n, err = s.Discard(o.n)
				} else {
					at := s.Pos()
					var b []byte
					b, err = s.Peek(o.n)
					n = len(b)
					if !bytes.Equal(b, data[at:at+int64(n)]) {
						t.Errorf("op %d: Peek(%d) at %d gave other bytes than the object's", i, o.n, at)
					}
				}
				if n != o.want || !sameErr(err, o.err) {
					t.Errorf("op %d: %d, %v; want %d, %v", i, n, err, o.want, o.err)
				}
			}
			if d := cmp.Diff(tt.reads, r.reads); d != "" {
				t.Errorf("reads (-want +got):\n%s", d)
			}
			b, ok := s.Held(tt.held[0], int(tt.held[1]))
			if ok != tt.ok || ok && !bytes.Equal(b, data[tt.held[0]:tt.held[0]+tt.held[1]]) {
				t.Errorf("Held(%d, %d) = %x, %v; want held %v", tt.held[0], tt.held[1], b, ok, tt.ok)
			}
			if s.Fetched() != r.served {
				t.Errorf("Fetched %d, served %d", s.Fetched(), r.served)
			}
		})
	}
}

// errAny stands for an error whatever it is.
var errAny = errors.New("any error")

// errBrokeOff is a body broken off after 2 bytes: an error, neither io.EOF
// nor io.ErrUnexpectedEOF.
var errBrokeOff = errors.New("broke off")

// errNotTheEnd is a store's error that is not the object's end: an error,
// neither io.EOF nor io.ErrUnexpectedEOF.
var errNotTheEnd = errors.New("not the end")

func sameErr(got, want error) bool {
	switch want {
	case errAny:
		return got != nil
	case errNotTheEnd:
		return got != nil && !errors.Is(got, io.EOF) && !errors.Is(got, io.ErrUnexpectedEOF)
	case errBrokeOff:
		return got != nil && !errors.Is(got, io.EOF) && !errors.Is(got, io.ErrUnexpectedEOF) &&
			strings.Contains(got.Error(), "the body broke off after 2 bytes")
	}
	if want == nil {
		return got == nil
	}
	return errors.Is(got, want)
}

// TestRangeOpener: one request a read, its body read whole however it
// trickles in; io.EOF when the object ends first; an open's error as the
// opener words it, a body's wrapped.
func TestRangeOpener(t *testing.T) {
	data := []byte("0123456789")
	tests := []struct {
		name string
		open dataset.RangeOpener
		n    int
		off  int64
		want string
		err  error
	}{
		{"whole", func(off, n int64) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data[off : off+n])), nil
		}, 4, 3, "3456", nil},
		{"a body that trickles in", func(off, n int64) (io.ReadCloser, error) {
			return io.NopCloser(iotest.OneByteReader(bytes.NewReader(data[off : off+n]))), nil
		}, 4, 3, "3456", nil},
		{"an object that ends first", func(off, n int64) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data[off:])), nil
		}, 4, 8, "89", io.EOF},
		{"at the end", func(off, n int64) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(nil)), nil
		}, 4, 10, "", io.EOF},
		{"an open that fails", func(off, n int64) (io.ReadCloser, error) {
			return nil, errStore
		}, 4, 0, "", errStore},
		{"a body that fails", func(off, n int64) (io.ReadCloser, error) {
			return io.NopCloser(io.MultiReader(bytes.NewReader(data[:2]), iotest.ErrReader(errStore))), nil
		}, 4, 0, "01", errStore},
		// An HTTP body whose connection closed before its Content-Length:
		// not the object's end (io.EOF, nor io.ErrUnexpectedEOF, which
		// the readers of a data set take for it).
		{"a body that breaks off", func(off, n int64) (io.ReadCloser, error) {
			return io.NopCloser(io.MultiReader(bytes.NewReader(data[:2]), iotest.ErrReader(io.ErrUnexpectedEOF))), nil
		}, 4, 0, "01", errBrokeOff},
		// A store's error that holds io.EOF or io.ErrUnexpectedEOF in its
		// chain is no more the object's end: net/http's `Get "…": EOF`
		// (a *url.Error) when the store closed the connection before
		// answering, an SDK's response cut short, a body's wrapped io.EOF.
		// They were returned with the chain, which the readers of a data
		// set took for the object's end: a dropped connection made an
		// object truncated.
		{"an open whose connection the store closed", func(off, n int64) (io.ReadCloser, error) {
			return nil, &url.Error{Op: "Get", URL: "http://store.invalid/object", Err: io.EOF}
		}, 4, 0, "", errNotTheEnd},
		{"an open whose response was cut short", func(off, n int64) (io.ReadCloser, error) {
			return nil, fmt.Errorf("https response error: %w", io.ErrUnexpectedEOF)
		}, 4, 0, "", errNotTheEnd},
		{"a body failing with a wrapped io.EOF", func(off, n int64) (io.ReadCloser, error) {
			return io.NopCloser(io.MultiReader(bytes.NewReader(data[:2]), iotest.ErrReader(fmt.Errorf("read body: %w", io.EOF)))), nil
		}, 4, 0, "01", errNotTheEnd},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := make([]byte, tt.n)
			n, err := tt.open.ReadAt(p, tt.off)
			if string(p[:n]) != tt.want || !sameErr(err, tt.err) {
				t.Errorf("ReadAt = %q, %v; want %q, %v", p[:n], err, tt.want, tt.err)
			}
		})
	}
	// An empty read opens nothing.
	var opens int
	n, err := dataset.RangeOpener(func(off, n int64) (io.ReadCloser, error) {
		opens++
		return nil, errStore
	}).ReadAt(nil, 5)
	if n != 0 || err != nil || opens != 0 {
		t.Errorf("ReadAt(nil) = %d, %v with %d opens; want 0, nil, none", n, err, opens)
	}
}

// FuzzRangeSource: whatever the options, the stated size and the steps,
// a RangeSource reads forward only, no byte twice, and gives the bytes
// and counts bufio.Reader gives over the object's first size bytes; when
// the object is shorter than stated, a skip cannot know it, so only the
// bytes it gives are checked.
func FuzzRangeSource(f *testing.F) {
	f.Add([]byte("0123456789abcdef"), uint16(4), uint16(8), true, uint8(0), int32(16), []byte{3, 0x85, 2, 0x9f, 7})
	f.Add(make([]byte, 3000), uint16(512), uint16(1024), false, uint8(0), int32(5000), []byte{0xff, 0x7f, 0x10, 0xff, 0xff, 1})
	f.Add([]byte("0123456789abcdefghijklmnopqrstuvwxyz"), uint16(4), uint16(8), true, uint8(3), int32(36), []byte{0x81, 2, 0x83, 1, 0x81, 0x80, 4})
	f.Fuzz(func(t *testing.T, data []byte, first, maxRead uint16, reset bool, behind uint8, size int32, steps []byte) {
		r := &recordingAt{data: data}
		keep := int(behind % 8)
		s := dataset.NewRangeSource(r, int64(size), dataset.RangeOptions{First: int(first), Max: int(maxRead), ResetOnSkip: reset, KeepBehind: keep})
		whole := data[:max(0, min(int(size), len(data)))]
		exact := int(size) <= len(data)
		ref := bufio.NewReaderSize(bytes.NewReader(whole), 4096)
		for i, st := range steps {
			n := int(st&0x7f) * 31 // up to 3937, within the reference's buffer
			if st&0x80 != 0 {
				got, err := s.Discard(n)
				want, werr := ref.Discard(n)
				if !exact {
					if got != n && !errors.Is(err, io.EOF) {
						t.Fatalf("step %d: Discard(%d) = %d, %v", i, n, got, err)
					}
					continue
				}
				if got != want || !errors.Is(err, werr) && err != werr {
					t.Fatalf("step %d: Discard(%d) = %d, %v; bufio %d, %v", i, n, got, err, want, werr)
				}
				continue
			}
			at := s.Pos()
			got, err := s.Peek(n)
			if !exact {
				wrong := len(got) > 0 && (at+int64(len(got)) > int64(len(whole)) || !bytes.Equal(got, whole[at:at+int64(len(got))]))
				if wrong || len(got) < n && err == nil {
					t.Fatalf("step %d: Peek(%d) at %d = %d bytes, %v", i, n, at, len(got), err)
				}
				continue
			}
			want, werr := ref.Peek(n)
			if !bytes.Equal(got, want) || (err == nil) != (werr == nil) {
				t.Fatalf("step %d: Peek(%d) = %d bytes, %v; bufio %d bytes, %v", i, n, len(got), err, len(want), werr)
			}
			// What is held behind the read position is the object's.
			for k := 1; k <= keep && int64(k) <= at; k++ {
				if b, ok := s.Held(at-int64(k), k); ok && !bytes.Equal(b, whole[at-int64(k):at]) {
					t.Fatalf("step %d: Held(%d, %d) = %x, not the object's %x", i, at-int64(k), k, b, whole[at-int64(k):at])
				}
			}
		}
		// No byte is read twice but the KeepBehind bytes a read after a
		// skip starts with.
		var next int64
		for _, rd := range r.reads {
			if rd[0] < next-int64(keep) {
				t.Fatalf("read at %d after a read up to %d (reads %v)", rd[0], next, r.reads)
			}
			next = rd[0] + rd[1]
		}
		if s.Fetched() > int64(len(whole)+keep*len(r.reads)) {
			t.Fatalf("fetched %d bytes of a %d-byte object in %d reads", s.Fetched(), len(whole), len(r.reads))
		}
	})
}
