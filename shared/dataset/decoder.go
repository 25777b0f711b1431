package dataset

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Source is what a Decoder reads: bytes it can look at before consuming
// them, and skip. *bufio.Reader is one; the pipeline's ranged object
// reader is another, whose Discard moves past a value without fetching it.
type Source interface {
	// Peek returns the next n bytes without consuming them; fewer only
	// with an error (io.EOF at the end).
	Peek(n int) ([]byte, error)
	// Discard consumes n bytes; fewer only with an error (io.EOF when
	// the stream ends first).
	Discard(n int) (int, error)
}

// maxPeek is the most a Decoder asks Source.Peek for at once (within
// bufio.Reader's default buffer).
const maxPeek = 4096

// Decoder reads a dataset token by token from a Source with the Scanner:
// a pull reader for those that have the whole object (a file, a stored
// object) rather than a stream passing by. Values are skipped with
// Source.Discard unless captured.
type Decoder struct {
	Scanner
	src Source
	err error
}

// NewDecoder returns a Decoder for the dataset at the current position of
// src, encoded in transferSyntaxUID (inflated already, for a deflated
// one).
func NewDecoder(src Source, transferSyntaxUID string) *Decoder {
	d := &Decoder{src: src}
	enc, known := EncodingOf(transferSyntaxUID)
	d.init(enc, known)
	return d
}

// Next returns the next token other than KindNone. On KindError, the error
// is the Scanner's verdict (an *Error) or the Source's failure, wrapped.
func (d *Decoder) Next() (Kind, error) {
	for {
		k, err := d.Step()
		if k != KindNone {
			return k, err
		}
	}
}

// Step is Next one piece at a time: it returns KindNone at the end of each
// value, so a caller can look at the bytes ahead (Source.Peek) while the
// Scanner is AtBoundary.
func (d *Decoder) Step() (Kind, error) {
	if d.err != nil {
		return KindError, d.err
	}
	if rem := d.Skipping(); rem > 0 {
		n, err := d.src.Discard(int(min(rem, 1<<30)))
		d.Skipped(uint64(n))
		if err != nil {
			return d.ended(err)
		}
		return KindNone, nil
	}
	want := maxPeek
	switch d.state {
	case stHeader:
		want = d.need - d.hn
		if d.hn == 0 {
			want = 12
		}
	case stCapture:
		want = min(want, len(d.capture)-d.cn)
	}
	b, err := d.src.Peek(want)
	if errors.Is(err, bufio.ErrBufferFull) {
		// More than a small bufio.Reader holds: take what it has, or ask
		// for one byte to learn whether there is more.
		if len(b) > 0 {
			err = nil
		} else {
			b, err = d.src.Peek(1)
		}
	}
	atEOF := false
	if err != nil {
		if !isEOF(err) {
			return d.failed(err)
		}
		atEOF = true
	}
	n, k := d.Scanner.Next(b, atEOF)
	if n > 0 {
		if _, err := d.src.Discard(n); err != nil {
			return d.failed(err)
		}
	}
	if k == KindError {
		d.err = d.Scanner.Err()
		return k, d.err
	}
	return k, nil
}

// ended handles a Source that stopped while a value was being skipped.
func (d *Decoder) ended(err error) (Kind, error) {
	if !isEOF(err) {
		return d.failed(err)
	}
	for {
		if _, k := d.Scanner.Next(nil, true); k == KindError || k == KindEnd {
			d.err = d.Scanner.Err()
			return k, d.err
		}
	}
}

func (d *Decoder) failed(err error) (Kind, error) {
	d.err = fmt.Errorf("dataset: read: %w", err)
	return KindError, d.err
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) }
