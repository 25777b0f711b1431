package dataset

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxHeaderBytes is how much of a dataset (decompressed, for a
// deflated one) an Inspector parses before giving up on the header.
const DefaultMaxHeaderBytes = 1 << 20

// Option configures an Inspector or Peek.
type Option func(*config)

type config struct {
	max  int64
	drop bool
}

// WithMaxHeaderBytes sets how many dataset bytes are parsed before the
// header is given up with ErrHeaderTooLong (default DefaultMaxHeaderBytes).
// For Peek it also bounds the memory held, so keep it small.
func WithMaxHeaderBytes(n int64) Option {
	return func(c *config) {
		if n > 0 {
			c.max = n
		}
	}
}

// DropGroup0002 removes top-level group 0002 elements from the stream
// (PS3.10: they belong to the File Meta Information, never to a dataset)
// and reports it in Header.Group0002Dropped, for a B006 status. Not done
// for deflated datasets, whose bytes are passed on as received: there
// Header.Group0002 reports them and they stay. It costs a copy of the
// bytes before the first element past group 0002, a few dozen bytes.
func DropGroup0002() Option { return func(c *config) { c.drop = true } }

// Inspector is an io.Reader passing a dataset through while it reads its
// top-level header. Without DropGroup0002 the bytes read from it are
// exactly the bytes read from the source, whatever they hold: a parse
// failure only ends the inspection (Header().Err). Read errors from the
// source, io.EOF included, are returned as they are, after every byte
// read before them.
//
// Once the header is done an Inspector is a plain pass-through: Read goes
// straight to the source. Before that, it parses the caller's buffer in
// place (no copy) except for deflated datasets, which are inflated into a
// small buffer for inspection while the compressed bytes are passed on.
// An Inspector is not safe for concurrent use.
type Inspector struct {
	src io.Reader
	p   parser

	pending []byte // bytes to pass on before reading more
	off     int
	srcErr  error // source error to return once pending is drained

	// deflated datasets
	tap     *tapReader
	inflate io.ReadCloser
	scratch []byte
}

// NewInspector returns an Inspector reading the dataset from r, encoded in
// transferSyntaxUID.
func NewInspector(r io.Reader, transferSyntaxUID string, opts ...Option) *Inspector {
	c := config{max: DefaultMaxHeaderBytes}
	for _, o := range opts {
		o(&c)
	}
	enc, known := EncodingOf(transferSyntaxUID)
	in := &Inspector{src: r}
	in.p.init(enc, known, c.max, c.drop)
	if enc.Deflated {
		in.tap = &tapReader{src: r}
		in.inflate = flate.NewReader(in.tap)
		in.scratch = make([]byte, 4096)
	} else if in.p.dropPhase {
		in.scratch = make([]byte, 4096)
	}
	return in
}

// Header returns what has been learned so far; once Header().Done it is
// final.
func (in *Inspector) Header() Header { return in.p.hdr }

// Read implements io.Reader.
func (in *Inspector) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		if in.off < len(in.pending) {
			n := copy(b, in.pending[in.off:])
			in.off += n
			return n, nil
		}
		in.pending, in.off = in.pending[:0], 0
		if in.srcErr != nil {
			return 0, in.srcErr
		}
		switch {
		case in.p.hdr.Done || (in.tap == nil && !in.p.dropPhase):
			return in.direct(b)
		case in.tap != nil:
			in.pullInflated()
		default:
			in.fillFiltered(len(b))
		}
	}
}

// direct reads into the caller's buffer and parses it there.
func (in *Inspector) direct(b []byte) (int, error) {
	n, err := in.src.Read(b)
	if !in.p.hdr.Done {
		in.p.feed(b[:n])
		if err == io.EOF {
			in.p.eof()
		}
	}
	return n, err
}

// fillFiltered reads a chunk in the drop phase and queues its kept bytes.
func (in *Inspector) fillFiltered(want int) {
	buf := in.scratch[:min(want, len(in.scratch))]
	n, err := in.src.Read(buf)
	in.p.out, in.p.buffered = in.pending[:0], true
	in.p.feed(buf[:n])
	if err == io.EOF {
		in.p.eof()
	}
	in.pending, in.p.out, in.p.buffered = in.p.out, nil, false
	in.srcErr = err
}

// pullInflated inflates a chunk for the parser, then queues the compressed
// bytes the inflater read meanwhile.
func (in *Inspector) pullInflated() {
	n, err := in.inflate.Read(in.scratch)
	in.p.feed(in.scratch[:n])
	if err != nil {
		switch {
		case err == io.EOF:
			in.p.eof() // end of the deflate stream; trailing bytes pass as they are
		case in.tap.err != nil && in.tap.err != io.EOF:
			in.p.finish(fmt.Errorf("dataset: inflate: %w", in.tap.err))
		case errors.Is(err, io.ErrUnexpectedEOF):
			in.p.finish(fmt.Errorf("%w: deflate stream cut short", ErrTruncated))
		default:
			in.p.finish(fmt.Errorf("%w: inflate: %w", ErrMalformed, err))
		}
	}
	in.pending, in.tap.buf = in.tap.buf, in.pending[:0]
	in.srcErr = in.tap.err // returned once pending is passed on
	if in.p.hdr.Done {
		// Every byte the inflater read is in pending; from now on the
		// source is read directly.
		in.inflate.Close()
		in.inflate, in.tap.buf = nil, nil
		in.tap = nil
	}
}

// tapReader records every byte the inflater reads from the source, so the
// compressed bytes can be passed on unchanged.
type tapReader struct {
	src io.Reader
	buf []byte
	err error
}

func (t *tapReader) Read(b []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.src.Read(b)
	t.buf = append(t.buf, b[:n]...)
	t.err = err
	return n, err
}

// Peek reads r through an Inspector until the header is done and returns
// it with a reader that yields the whole stream from its first byte (the
// bytes Peek read, then the rest of r, through the same Inspector and its
// options). It holds at most about the header limit in memory (see
// WithMaxHeaderBytes). The error is a read error of r other than io.EOF,
// which the returned reader also returns.
func Peek(r io.Reader, transferSyntaxUID string, opts ...Option) (Header, io.Reader, error) {
	in := NewInspector(r, transferSyntaxUID, opts...)
	var buf bytes.Buffer
	for !in.p.hdr.Done && int64(buf.Len()) < in.p.max {
		buf.Grow(16 << 10)
		free := buf.AvailableBuffer()
		n, err := in.Read(free[:cap(free)])
		buf.Write(free[:n]) // already in place: extends the length only
		if err == io.EOF {
			break
		}
		if err != nil {
			return in.Header(), io.MultiReader(&buf, errReader{err}), fmt.Errorf("dataset: peek: %w", err)
		}
	}
	return in.Header(), io.MultiReader(&buf, in), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
