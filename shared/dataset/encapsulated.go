package dataset

// EncapsulatedLength reads the encapsulated value (PS3.5 A.4) that starts
// at src's position, the value of an element of undefined length with
// fragments (Element.Encapsulated): its items, (FFFE,E000) each with a
// 4-byte length, up to and including its Sequence Delimitation Item,
// (FFFE,E0DD). It returns how many bytes that is, reading only the 8-byte
// item headers: the fragments' values are skipped with src.Discard, so a
// RangeSource fetches none of them. Items are read Little Endian, as every
// encapsulated transfer syntax encodes them, by the Scanner's rules for
// fragments: anything but an item or the delimiter where one must be, or
// a fragment of undefined length, is ErrMalformed; a source that ends
// first is ErrTruncated; a failing source's error is returned wrapped.
// The work is bounded by src: at least 8 bytes an item.
//
// A DICOM JSON's bulk data URI names such a value by its offset alone
// (pipeline.bulkURIs): the pipeline reads the header only, and so does
// not know where the fragments end; a reader of the URI finds the end
// this way.
func EncapsulatedLength(src Source) (int64, error) {
	d := &Decoder{src: src}
	d.init(Encoding{}, true)
	d.stack = append(d.stack, frame{kind: inFragments, end: -1, tag: TagPixelData})
	for {
		switch k, err := d.Next(); k {
		case KindError:
			return 0, err
		case KindSequenceEnd:
			return d.Offset(), nil
		}
	}
}
