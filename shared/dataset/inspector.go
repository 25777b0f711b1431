package dataset

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// DefaultMaxHeaderBytes is how much of a dataset (decompressed, for a
// deflated one) an Inspector reads looking for the header before giving
// the header up; Peek holds at most about this much.
const DefaultMaxHeaderBytes = 1 << 20

// ErrHeaderTooLong means the header was not complete within the
// configured number of bytes (see WithMaxHeaderBytes). It is no verdict on
// the dataset: the Inspector goes on reading its structure.
var ErrHeaderTooLong = errors.New("dataset: header longer than the limit")

// Header is what an Inspector learned from the top level of a dataset.
type Header struct {
	SOPClassUID       string // (0008,0016)
	SOPInstanceUID    string // (0008,0018)
	StudyInstanceUID  string // (0020,000D)
	SeriesInstanceUID string // (0020,000E)

	// Group0002 is set when top-level group 0002 (File Meta) elements
	// appeared in the dataset, where they do not belong.
	Group0002 bool
	// Group0002Dropped is set when such elements were removed from the
	// stream (DropGroup0002): the SCP answers B006. One that could not be
	// removed (a sequence, or one after an element of a later group)
	// stays, and so do all later ones. Unlike the other fields it may be
	// set after Done, when the header limit came first.
	Group0002Dropped bool

	// Done is set once the header is known; the fields no longer change.
	Done bool
	// Err says why the header ended early: ErrHeaderTooLong, or the
	// verdict (ErrMalformed, ErrTruncated, ErrLimit) if it came first. nil
	// once Done means the header was read to its end, so an empty UID
	// field is truly absent: a tag past (0020,000E) with the four found,
	// else top-level Pixel Data or a clean end of the dataset (an element
	// out of tag order may bring one of the four later: the Scanner reads
	// such a data set, see Scanner.Unordered). Elements after top-level
	// Pixel Data are not looked at.
	Err error
}

// complete reports whether the four UIDs were found.
func (h *Header) complete() bool {
	return h.SOPClassUID != "" && h.SOPInstanceUID != "" && h.StudyInstanceUID != "" && h.SeriesInstanceUID != ""
}

// Wanted top-level values.
const (
	tagSOPClassUID       = 0x00080016
	tagSOPInstanceUID    = 0x00080018
	tagStudyInstanceUID  = 0x0020000D
	tagSeriesInstanceUID = 0x0020000E
	maxCapture           = 128 // bytes of a wanted value kept; UIDs have at most 64
)

// Option configures an Inspector.
type Option func(*config)

type config struct {
	max  int64
	drop bool
}

// WithMaxHeaderBytes sets how many dataset bytes are read looking for the
// header before it is given up with ErrHeaderTooLong (default
// DefaultMaxHeaderBytes). It bounds the memory Peek holds, so keep it small.
func WithMaxHeaderBytes(n int64) Option {
	return func(c *config) {
		if n > 0 {
			c.max = n
		}
	}
}

// DropGroup0002 removes top-level group 0002 elements at the start of the
// dataset from the stream (PS3.10: they belong to the File Meta
// Information, never to a dataset) and reports it in
// Header.Group0002Dropped, for a B006 status. Not done for deflated
// datasets, whose bytes are passed on as received: there Header.Group0002
// reports them and they stay. It costs a copy of the bytes up to the first
// element of a later group, a few dozen bytes.
func DropGroup0002() Option { return func(c *config) { c.drop = true } }

// Inspector is an io.Reader passing a dataset through while it reads the
// dataset's structure to its end with the Scanner, and its top-level
// header on the way.
//
// Without DropGroup0002 the bytes read from it are exactly the bytes read
// from the source. When the dataset is not one the Scanner can read to its
// end (malformed, over a limit, or ending inside an element), Read returns
// that verdict (an *Error wrapping ErrMalformed, ErrLimit or
// ErrTruncated, also kept by Err) in place of more bytes, or in place of
// io.EOF: a consumer storing the stream fails and keeps nothing. Read
// errors from the source, io.EOF included, are returned as they are, after
// every byte read before them.
//
// Reads parse the caller's buffer in place (no copy) except for deflated
// datasets, inflated into a small buffer for the Scanner while the
// compressed bytes are passed on, and the first bytes with DropGroup0002.
// An Inspector is not safe for concurrent use.
type Inspector struct {
	src  io.Reader
	s    Scanner
	hdr  Header
	max  int64
	done bool // the Scanner gave KindEnd or KindError
	err  error

	target *string
	vbuf   [maxCapture]byte
	vlen   int

	pending []byte // bytes to pass on before reading more
	off     int
	srcErr  error // error to return once pending is drained

	// DropGroup0002, before the first element of a later group.
	dropPhase bool
	dropping  bool   // the value being read belongs to a dropped element
	held      []byte // header bytes of the element being decided
	scratch   []byte

	// deflated datasets
	tap     *tapReader
	inflate *Inflater
}

// NewInspector returns an Inspector reading the dataset from r, encoded in
// transferSyntaxUID (see EncodingOf).
func NewInspector(r io.Reader, transferSyntaxUID string, opts ...Option) *Inspector {
	c := config{max: DefaultMaxHeaderBytes}
	for _, o := range opts {
		o(&c)
	}
	enc, known := EncodingOf(transferSyntaxUID)
	in := &Inspector{src: r, max: c.max}
	in.s.init(enc, known)
	switch {
	case enc.Deflated:
		in.tap = &tapReader{src: r}
		in.inflate = NewInflater(in.tap)
		in.scratch = make([]byte, 4096)
	case c.drop:
		in.dropPhase = true
		in.scratch = make([]byte, 4096)
	}
	return in
}

// Header returns what has been learned so far; once Header().Done it is
// final.
func (in *Inspector) Header() Header { return in.hdr }

// Unordered is the Scanner's Unordered over what the Inspector has read:
// once the data set was read to its end (Read returned io.EOF), whether
// any element of it, at any level, came after one with a greater tag.
func (in *Inspector) Unordered() (tag, after uint32, ok bool) { return in.s.Unordered() }

// Err returns the verdict once the dataset was read to its end: nil for a
// dataset the Scanner read whole, else an *Error wrapping ErrMalformed,
// ErrLimit or ErrTruncated. It is nil while reading goes on.
func (in *Inspector) Err() error { return in.err }

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
		switch {
		case in.err != nil:
			return 0, in.err
		case in.srcErr != nil && (in.tap == nil || in.srcErr != io.EOF):
			// A deflated data set's source may end while the inflater
			// still holds some of it: that is read to its end (or its
			// verdict) first.
			return 0, in.srcErr
		case in.done:
			return in.src.Read(b) // after a deflate stream: trailing bytes
		case in.tap != nil:
			in.pullInflated()
		case in.dropPhase:
			in.fillFiltered(len(b))
		default:
			return in.direct(b)
		}
	}
}

// direct reads into the caller's buffer and parses it there. Bytes after
// a verdict are not passed on: what is returned never depends on how the
// stream was split into reads.
func (in *Inspector) direct(b []byte) (int, error) {
	n, err := in.src.Read(b)
	used := in.feed(b[:n], err == io.EOF)
	if in.err != nil {
		return used, in.err
	}
	return n, err
}

// feed runs the Scanner over b and returns how many bytes it consumed
// (all of b unless reading ended).
func (in *Inspector) feed(b []byte, atEOF bool) int {
	used := 0
	for !in.done {
		k, kind := in.s.Next(b[used:], atEOF)
		used += k
		in.token(kind)
		if used == len(b) && kind == KindNone && !atEOF {
			break
		}
	}
	return used
}

// token acts on what the Scanner found.
func (in *Inspector) token(kind Kind) {
	switch kind {
	case KindNone:
		return // the common case, per value: nothing to do
	case KindElement:
		if in.hdr.Done {
			return
		}
		e := &in.s.elem
		if e.Depth > 0 {
			break
		}
		if e.Start >= in.max {
			in.finishHeader(ErrHeaderTooLong)
			break
		}
		if e.Tag>>16 == 0x0002 {
			in.hdr.Group0002 = true
		}
		if e.Tag > tagSeriesInstanceUID && (in.hdr.complete() || IsPixelData(e.Tag)) {
			// In tag order none of the four can follow. Out of order one
			// may (the Scanner reads a step back on, Scanner.Unordered),
			// so while one is missing the header goes on to top-level
			// Pixel Data, the end of the data set, or the limit.
			in.finishHeader(nil)
			break
		}
		var target *string
		switch e.Tag {
		case tagSOPClassUID:
			target = &in.hdr.SOPClassUID
		case tagSOPInstanceUID:
			target = &in.hdr.SOPInstanceUID
		case tagStudyInstanceUID:
			target = &in.hdr.StudyInstanceUID
		case tagSeriesInstanceUID:
			target = &in.hdr.SeriesInstanceUID
		}
		if target == nil || e.Sequence || e.Encapsulated {
			break
		}
		*target = ""
		if e.Length > 0 {
			in.target, in.vlen = target, int(min(e.Length, maxCapture))
			in.s.Capture(in.vbuf[:in.vlen])
		}
	case KindValue:
		if in.target != nil {
			*in.target = strings.Trim(string(in.vbuf[:in.vlen]), " \x00")
			in.target = nil
		}
	case KindEnd:
		in.done = true
		in.finishHeader(nil)
	case KindError:
		in.done, in.err = true, in.s.Err()
		in.finishHeader(in.err)
	}
	// The header limit is checked at tokens, whose offsets do not depend
	// on how the stream was split into reads.
	if !in.hdr.Done && in.s.Offset() >= in.max {
		in.finishHeader(ErrHeaderTooLong)
	}
}

func (in *Inspector) finishHeader(err error) {
	if in.hdr.Done {
		return
	}
	in.hdr.Done, in.hdr.Err = true, err
	in.target = nil
}

// fillFiltered reads a chunk while group 0002 elements may still be
// dropped and queues the bytes kept.
func (in *Inspector) fillFiltered(want int) {
	buf := in.scratch[:min(want, len(in.scratch))]
	n, err := in.src.Read(buf)
	atEOF := err == io.EOF
	b := buf[:n]
	for !in.done && (len(b) > 0 || atEOF) {
		if !in.dropPhase {
			used := in.feed(b, atEOF)
			in.pending = append(in.pending, b[:used]...)
			break
		}
		header := in.s.InHeader()
		k, kind := in.s.Next(b, atEOF)
		piece := b[:k]
		b = b[k:]
		switch {
		case header:
			in.held = append(in.held, piece...)
		case !in.dropping:
			in.pending = append(in.pending, piece...)
		}
		if kind == KindElement && in.s.Element().Depth == 0 {
			e := in.s.Element()
			if e.Tag>>16 == 0x0002 && !e.Sequence && !e.Encapsulated {
				in.dropping, in.held = true, in.held[:0]
				in.hdr.Group0002Dropped = true
			} else {
				in.dropping = false
				in.release()
				if e.Tag>>16 > 0x0002 || e.Sequence || e.Encapsulated {
					in.dropPhase = false // group 0002 sorts first: none can follow
				}
			}
		} else if kind != KindNone && kind != KindValue {
			in.release()
			in.dropPhase = false
		}
		in.token(kind)
	}
	if in.done {
		in.release() // the header bytes read before the verdict
		in.dropPhase = false
	}
	in.srcErr = err
}

// release passes on held header bytes: their element is kept.
func (in *Inspector) release() {
	in.pending = append(in.pending, in.held...)
	in.held = in.held[:0]
}

// pullInflated inflates a chunk for the Scanner, then queues the
// compressed bytes the inflater read meanwhile.
func (in *Inspector) pullInflated() {
	n, err := in.inflate.Read(in.scratch)
	in.feed(in.scratch[:n], false)
	if err != nil && !in.done {
		var verdict *Error
		switch {
		case err == io.EOF:
			in.feed(nil, true) // end of the deflate stream; trailing bytes pass as they are
		case errors.As(err, &verdict):
			verdict.Offset = in.s.Offset()
			in.verdict(verdict)
		}
		// Otherwise the source failed: that is no verdict on the dataset.
	}
	in.pending, in.tap.buf = in.tap.buf, in.pending[:0]
	in.srcErr = in.tap.err // returned once pending is passed on
	if in.done {
		// Every byte the inflater read is in pending; from now on the
		// source is read directly (or the verdict returned).
		in.inflate, in.tap.buf, in.tap = nil, nil, nil
	}
}

func (in *Inspector) verdict(err error) {
	in.done, in.err = true, err
	in.finishHeader(err)
}

// tapReader records every byte the inflater reads from the source, so the
// compressed bytes can be passed on unchanged.
type tapReader struct {
	src io.Reader
	buf []byte
	n   int64 // bytes read in all
	err error
}

func (t *tapReader) Read(b []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.src.Read(b)
	t.n += int64(n)
	t.buf = append(t.buf, b[:n]...)
	t.err = err
	return n, err
}

// Peek reads through the Inspector until the header is done (or the
// verdict, or the header limit) and returns a reader that yields the whole
// stream from its first byte: the bytes Peek read, then the rest through
// the Inspector. It holds at most about the header limit in memory (see
// WithMaxHeaderBytes). The error is a read error of the source other than
// io.EOF, which the returned reader also returns; a verdict is no error
// here (see Err and Header).
func (in *Inspector) Peek() (io.Reader, error) {
	var buf bytes.Buffer
	for !in.hdr.Done && int64(buf.Len()) < in.max {
		buf.Grow(16 << 10)
		free := buf.AvailableBuffer()
		n, err := in.Read(free[:cap(free)])
		buf.Write(free[:n]) // already in place: extends the length only
		if err == io.EOF || (err != nil && err == in.err) {
			break
		}
		if err != nil {
			return io.MultiReader(&buf, errReader{err}), fmt.Errorf("dataset: peek: %w", err)
		}
	}
	in.finishHeader(ErrHeaderTooLong) // no-op unless the bytes held reached the limit
	return io.MultiReader(&buf, in), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
