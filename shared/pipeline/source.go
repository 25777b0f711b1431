package pipeline

import (
	"bufio"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
)

// ErrTruncated marks an object that ends inside an element or before its
// header is complete.
var ErrTruncated = errors.New("pipeline: object truncated")

// source is what the header reader consumes: buffered bytes it can peek at,
// read, and skip over without fetching them.
type source interface {
	Peek(n int) ([]byte, error) // fewer than n bytes only with io.EOF
	ReadFull(p []byte) error    // ErrTruncated if the object ends first
	Skip(n int64) error         // ErrTruncated if the object ends first
	Pos() int64                 // bytes consumed so far (position in the stream)
}

// rangeSource reads an object through range requests that start small and
// grow, so a header is read in one or two requests and the pixel data that
// follows it is never fetched. Skip moves past values without fetching them.
type rangeSource struct {
	ctx   context.Context
	r     ObjectReader
	key   string
	size  int64
	buf   []byte // bytes [bufOff, bufOff+len(buf)) of the object
	off   int    // read position within buf
	bufAt int64  // object offset of buf[0]
	chunk int64
	// fetched counts bytes transferred from the store.
	fetched int64
}

const (
	firstChunk = 32 << 10
	maxChunk   = 1 << 20
)

func newRangeSource(ctx context.Context, r ObjectReader, key string, size int64) *rangeSource {
	return &rangeSource{ctx: ctx, r: r, key: key, size: size, chunk: firstChunk}
}

func (s *rangeSource) Pos() int64 { return s.bufAt + int64(s.off) }

// fill makes at least n bytes available at the read position unless the
// object ends first.
func (s *rangeSource) fill(n int) error {
	for len(s.buf)-s.off < n {
		end := s.bufAt + int64(len(s.buf))
		if end >= s.size {
			return nil
		}
		// Keep the unread tail, fetch what follows it.
		s.buf = append(s.buf[:0], s.buf[s.off:]...)
		s.bufAt += int64(s.off)
		s.off = 0
		want := max(s.chunk, int64(n-len(s.buf)))
		want = min(want, s.size-end)
		if s.chunk < maxChunk {
			s.chunk *= 2
		}
		rc, err := s.r.OpenRange(s.ctx, s.key, end, want)
		if err != nil {
			return fmt.Errorf("pipeline: read %d bytes at %d: %w", want, end, err)
		}
		start := len(s.buf)
		s.buf = append(s.buf, make([]byte, want)...)
		got, err := io.ReadFull(rc, s.buf[start:])
		rc.Close()
		s.fetched += int64(got)
		s.buf = s.buf[:start+got]
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return fmt.Errorf("pipeline: read at %d: %w", end, err)
		}
		if got == 0 {
			// The object is shorter than Head said.
			s.size = end
			return nil
		}
	}
	return nil
}

func (s *rangeSource) Peek(n int) ([]byte, error) {
	if err := s.fill(n); err != nil {
		return nil, err
	}
	avail := s.buf[s.off:]
	if len(avail) < n {
		return avail, io.EOF
	}
	return avail[:n], nil
}

func (s *rangeSource) ReadFull(p []byte) error {
	b, err := s.Peek(len(p))
	if err != nil {
		if errors.Is(err, io.EOF) {
			return ErrTruncated
		}
		return err
	}
	copy(p, b)
	s.off += len(p)
	return nil
}

func (s *rangeSource) Skip(n int64) error {
	if n < 0 {
		return fmt.Errorf("pipeline: negative skip")
	}
	pos := s.Pos()
	if pos+n > s.size {
		return ErrTruncated
	}
	if n <= int64(len(s.buf)-s.off) {
		s.off += int(n)
		return nil
	}
	s.bufAt, s.buf, s.off = pos+n, s.buf[:0], 0
	return nil
}

// streamSource adapts a plain reader (an inflated Deflate stream): skipping
// reads through.
type streamSource struct {
	br  *bufio.Reader
	pos int64
}

func newStreamSource(r io.Reader) *streamSource {
	return &streamSource{br: bufio.NewReaderSize(r, 64<<10)}
}

func (s *streamSource) Pos() int64 { return s.pos }

func (s *streamSource) Peek(n int) ([]byte, error) {
	b, err := s.br.Peek(n)
	if err != nil && len(b) < n {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return b, io.EOF
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			return b, fmt.Errorf("pipeline: peek %d bytes: %w", n, err)
		}
		return b, classify(err)
	}
	return b, nil
}

// classify marks a corrupt deflate stream as a malformed object (not a
// store failure to retry).
func classify(err error) error {
	var ce flate.CorruptInputError
	if errors.As(err, &ce) {
		return fmt.Errorf("%w: deflate: %v", ErrMalformed, err)
	}
	return fmt.Errorf("pipeline: read: %w", err)
}

func (s *streamSource) ReadFull(p []byte) error {
	n, err := io.ReadFull(s.br, p)
	s.pos += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ErrTruncated
		}
		return classify(err)
	}
	return nil
}

func (s *streamSource) Skip(n int64) error {
	d, err := io.CopyN(io.Discard, s.br, n)
	s.pos += d
	if err != nil {
		if errors.Is(err, io.EOF) {
			return ErrTruncated
		}
		return classify(err)
	}
	return nil
}

// sourceReader exposes a source as an io.Reader (input to the inflater).
type sourceReader struct{ s source }

func (r sourceReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b, err := r.s.Peek(len(p))
	if len(b) == 0 {
		if err == nil {
			err = io.EOF
		}
		return 0, err
	}
	n := copy(p, b)
	if err := r.s.Skip(int64(n)); err != nil {
		return 0, err
	}
	return n, nil
}
