package dataset

import (
	"bufio"
	"compress/flate"
	"errors"
	"fmt"
	"io"
)

// Inflater inflates a deflated data set (PS3.5 A.5) under the one inflate
// rule, at most InflateAllowance plus MaxInflateRatio bytes per
// compressed byte, for every prefix of the stream: every reader of a deflated
// data set inflates through it (the Inspector on the SCP's stream, the
// pipeline's header reader, the portal's thumbnails), so an object stored
// before the rule, or by other means, costs a reader no more than one the
// SCP accepts. What is wrong with the compressed bytes is a verdict, an
// *Error: ErrLimit past the rule, ErrMalformed for a corrupt stream,
// ErrTruncated for one cut short. A failure of the source is returned as
// it is (SourceErr tells it from a verdict).
// The rule counts the compressed bytes the decompressor has used, not
// those read ahead from the source, and is checked as the decompressor
// empties its window: the verdict depends on the bytes alone, not on how
// they arrive (the SCP's as the peer's PDVs split them, a stored object's
// in range reads) or how the inflated bytes are asked for, so an object
// the SCP accepts every reader can inflate.
// Nothing needs closing: flate's decompressor holds no resource.
// An Inflater is not safe for concurrent use.
type Inflater struct {
	allowance int64 // InflateAllowance; smaller in this package's tests
	src       erringReader
	used      countingReader // what the decompressor reads: src, buffered
	fr        io.Reader
	inflated  int64
	err       error
}

// NewInflater returns an Inflater reading the compressed data set from r.
func NewInflater(r io.Reader) *Inflater {
	z := &Inflater{allowance: InflateAllowance, src: erringReader{r: r}}
	// An io.ByteReader: flate reads what it decodes from it byte by byte
	// and does not buffer it in a reader of its own, which would count
	// as used the bytes it read ahead.
	z.used.r = bufio.NewReader(&z.src)
	z.fr = flate.NewReader(&z.used)
	return z
}

// Read implements io.Reader: the inflated bytes, io.EOF at the end of the
// deflate stream. A read that would take the data set past the rule
// returns none of its bytes.
func (z *Inflater) Read(b []byte) (int, error) {
	if z.err != nil {
		return 0, z.err
	}
	n, err := z.fr.Read(b)
	if z.inflated+int64(n) > z.allowance+MaxInflateRatio*z.used.n {
		z.err = &Error{Err: ErrLimit, Offset: z.inflated,
			What: fmt.Sprintf("deflated dataset inflating to more than %d bytes plus %d times its size", z.allowance, MaxInflateRatio)}
		return 0, z.err
	}
	z.inflated += int64(n)
	switch {
	case err == nil, err == io.EOF:
	case z.src.err != nil && z.src.err != io.EOF:
		// The source failed: no verdict on the data set.
	case errors.Is(err, io.ErrUnexpectedEOF):
		err = &Error{Err: ErrTruncated, Offset: z.inflated, What: "deflate stream cut short"}
	default:
		err = &Error{Err: ErrMalformed, Offset: z.inflated, What: fmt.Sprintf("inflate: %v", err)}
	}
	z.err = err
	return n, err
}

// SourceErr is the error the source returned, nil while it returns none
// (io.EOF at its end).
func (z *Inflater) SourceErr() error { return z.src.err }

// Compressed is how many compressed bytes the decompressor has used,
// what the rule counts; a few KiB more may have been read from the source.
func (z *Inflater) Compressed() int64 { return z.used.n }

// erringReader keeps the last error r returned.
type erringReader struct {
	r   io.Reader
	err error
}

func (e *erringReader) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if err != nil {
		e.err = err
	}
	return n, err
}

// countingReader counts the bytes read from r, by Read or ReadByte.
type countingReader struct {
	r interface {
		io.Reader
		io.ByteReader
	}
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}
