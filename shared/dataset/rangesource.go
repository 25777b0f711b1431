package dataset

import (
	"errors"
	"fmt"
	"io"
	"slices"
)

// RangeOptions set how a RangeSource reads ahead. The zero value reads
// 32 KiB first, doubling to 1 MiB, and keeps growing across skips.
type RangeOptions struct {
	// First is the size of the first read, and of the next one after a
	// skip when ResetOnSkip is set. Small costs requests on a large
	// header; large costs bytes fetched and never used.
	First int
	// Max bounds the growth: each read doubles the next one up to Max
	// (a read is larger only when a Peek asks for more).
	Max int
	// ResetOnSkip starts over at First after a Discard First bytes or
	// more past what is held: what follows a skipped value is often a
	// small header (an item's 8 bytes between fragments), not more of a
	// large one. A skip that lands closer is of small values among small
	// elements (a header's, or items skipped one by one: a multi-frame
	// object's Per-Frame Functional Groups), read on as if nothing was
	// skipped.
	ResetOnSkip bool
	// KeepBehind keeps the last KeepBehind bytes before the read position
	// held (Held), and reads them again with what follows a Discard past
	// what is held: a reader of item headers can look at the end of the
	// value it just skipped (a JPEG fragment's EOI) in the read it makes
	// anyway, not in a request of its own. It costs KeepBehind bytes a
	// read after a skip.
	KeepBehind int
}

// Defaults of RangeOptions.
const (
	defaultFirstRead = 32 << 10
	defaultMaxRead   = 1 << 20
)

// RangeSource is a Source over the first size bytes of an io.ReaderAt
// (a stored object read by ranges): it reads ahead in chunks that grow
// while reading goes on, so a header is a few reads, and Discard moves
// past a value without reading the bytes it does not hold.
type RangeSource struct {
	r       io.ReaderAt
	size    int64
	opt     RangeOptions
	buf     []byte // bytes [at, at+len(buf)) of the object
	off     int    // read position in buf
	at      int64
	chunk   int
	fetched int64
	behind  int // bytes before at that the next read starts with: the end of a skipped value
}

var _ Source = (*RangeSource)(nil)

// NewRangeSource returns a RangeSource over the first size bytes of r,
// from offset 0. An error of r is returned as it is: r says what it read.
func NewRangeSource(r io.ReaderAt, size int64, o RangeOptions) *RangeSource {
	if o.First <= 0 {
		o.First = defaultFirstRead
	}
	if o.Max <= 0 {
		o.Max = defaultMaxRead
	}
	o.Max = max(o.Max, o.First)
	return &RangeSource{r: r, size: max(size, 0), opt: o, chunk: o.First}
}

// Pos is the offset in the object of the next byte.
func (s *RangeSource) Pos() int64 { return s.at + int64(s.off) }

// Size is the object's size: as given, or where a read found it to end.
func (s *RangeSource) Size() int64 { return s.size }

// Fetched is the number of bytes read from r so far.
func (s *RangeSource) Fetched() int64 { return s.fetched }

// Peek implements Source: the next n bytes, fewer only with an error
// (io.EOF at the end of the object).
func (s *RangeSource) Peek(n int) ([]byte, error) {
	if len(s.buf)-s.off < n {
		if err := s.fill(n); err != nil {
			return nil, err
		}
	}
	avail := s.buf[s.off:]
	if len(avail) < n {
		return avail, io.EOF
	}
	return avail[:n], nil
}

// fill keeps the unread bytes (and KeepBehind read ones) and reads what
// follows them in one read, at least n unread in all unless the object
// ends first; after a skip, the read starts with the skipped value's
// last KeepBehind bytes. A short read ends the object there (an
// io.ReaderAt reads fewer bytes only at its end or with an error).
func (s *RangeSource) fill(n int) error {
	keep := min(s.off, s.opt.KeepBehind)
	s.at += int64(s.off - keep)
	s.buf = append(s.buf[:0], s.buf[s.off-keep:]...)
	s.off = keep
	back := 0
	if len(s.buf) == 0 {
		back = s.behind
	}
	s.behind = 0
	end := s.at + int64(len(s.buf))
	want := min(int64(max(n-(len(s.buf)-s.off), s.chunk)), s.size-end)
	if want <= 0 {
		return nil
	}
	s.chunk = min(2*s.chunk, s.opt.Max)
	have := len(s.buf)
	s.buf = slices.Grow(s.buf, back+int(want))[:have+back+int(want)]
	got, err := s.r.ReadAt(s.buf[have:], end-int64(back))
	got = max(min(got, back+int(want)), 0)
	s.fetched += int64(got)
	s.buf = s.buf[:have+got]
	if got < back {
		// Not even the bytes before end: the object ends at end.
		s.buf = s.buf[:have]
		got, back = 0, 0
	}
	s.at -= int64(back)
	s.off += back
	if int64(got-back) < want {
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		s.size = end + int64(got-back)
	}
	return nil
}

// Held returns bytes [at, at+n) of the object if they are held, as when
// they are among the KeepBehind bytes before the read position. The
// slice is valid until the next Peek or Discard.
func (s *RangeSource) Held(at int64, n int) ([]byte, bool) {
	if n < 0 || at < s.at || at+int64(n) > s.at+int64(len(s.buf)) {
		return nil, false
	}
	return s.buf[at-s.at:][:n], true
}

// Discard implements Source: it moves past n bytes, reading none that
// are not held already; fewer only at the end of the object, with
// io.EOF.
func (s *RangeSource) Discard(n int) (int, error) {
	if n < 0 {
		return 0, errors.New("dataset: negative skip")
	}
	pos := s.Pos()
	if rest := s.size - pos; int64(n) > rest {
		s.at, s.buf, s.off = s.size, s.buf[:0], 0
		return int(rest), io.EOF
	}
	if n <= len(s.buf)-s.off {
		s.off += n
		return n, nil
	}
	beyond := n - (len(s.buf) - s.off) // the bytes skipped that are not held
	s.at, s.buf, s.off = pos+int64(n), s.buf[:0], 0
	s.behind = min(s.opt.KeepBehind, n)
	if s.opt.ResetOnSkip && beyond >= s.opt.First {
		s.chunk = s.opt.First
	}
	return n, nil
}

// RangeOpener opens n bytes of an object from off (fewer at its end), as
// a store's ranged GET does; the error of an open is the opener's to
// word. As an io.ReaderAt it makes one request per read.
type RangeOpener func(off, n int64) (io.ReadCloser, error)

// ReadAt implements io.ReaderAt: io.EOF when the body ends (io.EOF itself)
// before p is full, the object ending there. Any other error is the
// store's, never the object's end: a body that breaks off
// (io.ErrUnexpectedEOF: an HTTP body whose connection closed before its
// Content-Length), an open that fails with io.EOF in its chain (net/http's
// `Get "…": EOF`, the store closing the connection before answering) or
// io.ErrUnexpectedEOF (a response cut short), a body's error wrapping
// io.EOF. Taken for the object's end, a dropped connection made an object
// truncated (storeFailed).
func (f RangeOpener) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	rc, err := f(off, int64(len(p)))
	if err != nil {
		return 0, storeFailed(err, "")
	}
	defer rc.Close()
	n := 0
	for n < len(p) {
		var m int
		m, err = rc.Read(p[n:])
		n += m
		if err != nil {
			break
		}
	}
	switch {
	case n == len(p):
		return n, nil
	case err == io.EOF:
		return n, io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		return n, storeFailed(err, fmt.Sprintf("read %d bytes at %d: the body broke off after %d bytes", len(p), off, n))
	}
	return n, storeFailed(err, fmt.Sprintf("read %d bytes at %d", len(p), off))
}

// storeFailed is err, a store's, as ReadAt returns it, prefixed by what
// when set: wrapped, unless its chain holds io.EOF or io.ErrUnexpectedEOF,
// which the readers of a data set take for the object's end; then its
// text alone.
func storeFailed(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		if what == "" {
			return errors.New(err.Error())
		}
		return fmt.Errorf("%s (%v)", what, err)
	}
	if what == "" {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}
