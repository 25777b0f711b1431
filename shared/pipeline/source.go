package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// rangeSource reads an object through range requests that start small and
// grow, so a header is read in one or two requests and the pixel data that
// follows it is never fetched. It is a dataset.Source: Discard moves past
// values without fetching them.
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

// Peek returns the next n bytes, fewer only with an error (io.EOF at the
// end of the object).
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

// Discard moves n bytes on without fetching them; fewer only at the end
// of the object, with io.EOF.
func (s *rangeSource) Discard(n int) (int, error) {
	if n < 0 {
		return 0, fmt.Errorf("pipeline: negative skip")
	}
	pos := s.Pos()
	if rest := s.size - pos; int64(n) > rest {
		s.bufAt, s.buf, s.off = s.size, s.buf[:0], 0
		return int(rest), io.EOF
	}
	if n <= len(s.buf)-s.off {
		s.off += n
		return n, nil
	}
	s.bufAt, s.buf, s.off = pos+int64(n), s.buf[:0], 0
	return n, nil
}

// sourceReader exposes a rangeSource as an io.Reader (input to the
// inflater).
type sourceReader struct{ s *rangeSource }

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
	if _, err := r.s.Discard(n); err != nil {
		return 0, err
	}
	return n, nil
}
