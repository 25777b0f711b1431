package thumbnail

import (
	"bytes"
	"fmt"
)

// JPEG markers that open and close a frame's data (ITU-T T.81 B.1.1.3).
var (
	markerSOI = []byte{0xFF, 0xD8}
	markerEOI = []byte{0xFF, 0xD9}
)

// jpegMarks finds the frames of encapsulated JPEG by their markers,
// fragment by fragment, when no offset table says where they lie (PS3.5
// A.4 lets a frame span fragments with an empty Basic Offset Table): a
// frame starts with a fragment whose data begins with SOI (FFD8) and ends
// with the first one whose data ends with EOI (FFD9, or FFD9 00: a
// fragment has an even length, so odd data ends with a pad byte).
// Anything else cannot be told apart from another layout and is refused:
// a fragment after a frame's end not beginning with SOI, one beginning
// with SOI before its frame's EOI, a frame not ended by the last fragment,
// or other than Number of Frames found. (Entropy-coded data cannot hold
// FFD8 or FFD9; a marker segment's data, such as an embedded thumbnail,
// can, which is why both ends are checked.)
type jpegMarks struct {
	frames, want uint64         // Number of Frames; the frame wanted (from 0)
	found        uint64         // frames ended
	open         bool           // a frame started and has not ended
	n            int            // fragments of the open frame
	whole        bool           // every frame found is one fragment
	head         [2]byte        // the first bytes of a fragment
	tail         [jpegTail]byte // the last, when not held
	last         byte           // the last byte of the fragment before
	joined       [jpegTail]byte // it and a fragment of two bytes
}

// start takes the first bytes of the next fragment (fewer than two for a
// shorter one) and says whether it is one of frame want's.
func (m *jpegMarks) start(head []byte) (bool, error) {
	soi := bytes.HasPrefix(head, markerSOI)
	switch {
	case m.open && soi:
		return false, fmt.Errorf("frame %d: a fragment starts with SOI before its EOI (JPEG markers)", m.found+1)
	case !m.open && !soi:
		return false, fmt.Errorf("frame %d: its first fragment does not start with SOI (JPEG markers)", m.found+1)
	case !m.open:
		m.open, m.n = true, 0
	}
	m.n++
	if m.n > 1 {
		m.whole = false
	}
	return m.found == m.want, nil
}

// end takes the last jpegTail bytes of the fragment started last (all of
// a shorter one). A fragment of two bytes, D9 00, after one ending FF in
// the same frame ends it too: a frame of odd length split into fragments
// of a fixed size can end so, the pad byte after EOI its second.
func (m *jpegMarks) end(tail []byte) {
	t := tail
	if len(tail) < jpegTail && m.n > 1 {
		t = append(append(m.joined[:0], m.last), tail...)
	}
	if bytes.HasSuffix(t, markerEOI) || len(t) == jpegTail && t[2] == 0 && bytes.HasPrefix(t, markerEOI) {
		m.open = false
		m.found++
	}
	if len(tail) > 0 {
		m.last = tail[len(tail)-1]
	}
}

// done says that frame want has ended and no further fragment need be
// read: every frame up to it is one fragment, the layout of JPEG Baseline
// encoders, in which it is the fragment counted to, whatever follows.
func (m *jpegMarks) done() bool { return m.whole && m.found > m.want }

// finish checks the frames found once the last fragment has ended.
func (m *jpegMarks) finish() error {
	switch {
	case m.open:
		return fmt.Errorf("frame %d: no EOI by the last fragment (JPEG markers)", m.found+1)
	case m.found != m.frames:
		return fmt.Errorf("%d frames found by their JPEG markers, %d in Number of Frames", m.found, m.frames)
	}
	return nil
}
