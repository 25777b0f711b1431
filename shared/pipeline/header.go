package pipeline

import (
	"bufio"
	"bytes"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
)

// dataElement is one element of a parsed header. Values above
// dataset.MaxValueHeld (and all pixel data) are skipped, not read.
type dataElement struct {
	Tag   uint32
	VR    string
	Len   uint32 // as encoded; dataset.UndefinedLength for undefined length
	Value []byte // raw value bytes; nil for bulk or sequences
	Items []*dataSet
	// Bulk is set when the value was skipped; Offset and Len locate it in
	// the object (in the inflated stream, for a deflated one).
	Bulk   bool
	Offset int64
}

type dataSet struct {
	Elements []*dataElement
}

// find returns the element with tag t at this level.
func (d *dataSet) find(t uint32) *dataElement {
	if d == nil {
		return nil
	}
	for _, e := range d.Elements {
		if e.Tag == t {
			return e
		}
	}
	return nil
}

// header is a parsed Part 10 header: File Meta Information and the dataset
// up to (not including) Pixel Data.
type header struct {
	Meta part10.Meta
	// MetaEnd is where the File Meta Information ends (the data set's
	// first byte); MetaHead is the object's bytes before it, nil when the
	// header read no longer held them (a meta header larger than its
	// first range).
	MetaEnd        int64
	MetaHead       []byte
	Data           dataSet
	TransferSyntax string
	BigEndian      bool
	Implicit       bool
	Deflated       bool
	// PixelData is the top-level pixel data element found (value skipped),
	// nil if the dataset has none.
	PixelData *dataElement
	// PixelShort is how many bytes of a defined-length PixelData value
	// lie past the end of the object (0 when it is whole or not known:
	// deflated, encapsulated).
	PixelShort int64
	// Unordered is set when an element came after one with a greater tag
	// in the File Meta group (part10.Meta.Unordered) or in its data set or
	// item (any level), up to Pixel Data: the reader reads such an object
	// on (a repeat is its verdict); Misplaced is the first such element's
	// tag, After the one before it.
	Unordered        bool
	Misplaced, After uint32
}

func tagOf(g, e uint16) uint32 { return uint32(g)<<16 | uint32(e) }

func tagString(t uint32) string { return dataset.TagString(t) }

// Tags the pipeline reads.
var (
	tagTransferSyntax                  = tagOf(0x0002, 0x0010)
	tagMediaSOPClass                   = tagOf(0x0002, 0x0002)
	tagMediaSOPInstance                = tagOf(0x0002, 0x0003)
	tagSourceAE                        = tagOf(0x0002, 0x0016)
	tagSendingAE                       = tagOf(0x0002, 0x0017)
	tagSpecificCharSet                 = tagOf(0x0008, 0x0005)
	tagSOPClassUID                     = tagOf(0x0008, 0x0016)
	tagSOPInstanceUID                  = tagOf(0x0008, 0x0018)
	tagStudyDate                       = tagOf(0x0008, 0x0020)
	tagStudyTime                       = tagOf(0x0008, 0x0030)
	tagAccessionNumber                 = tagOf(0x0008, 0x0050)
	tagModality                        = tagOf(0x0008, 0x0060)
	tagStudyDescription                = tagOf(0x0008, 0x1030)
	tagSeriesDescription               = tagOf(0x0008, 0x103E)
	tagPatientName                     = tagOf(0x0010, 0x0010)
	tagPatientID                       = tagOf(0x0010, 0x0020)
	tagPatientBirthDate                = tagOf(0x0010, 0x0030)
	tagPatientSex                      = tagOf(0x0010, 0x0040)
	tagStudyInstanceUID                = tagOf(0x0020, 0x000D)
	tagSeriesInstanceUID               = tagOf(0x0020, 0x000E)
	tagSeriesNumber                    = tagOf(0x0020, 0x0011)
	tagInstanceNumber                  = tagOf(0x0020, 0x0013)
	tagSamplesPerPixel                 = tagOf(0x0028, 0x0002)
	tagPhotometric                     = tagOf(0x0028, 0x0004)
	tagNumberOfFrames                  = tagOf(0x0028, 0x0008)
	tagRows                            = tagOf(0x0028, 0x0010)
	tagColumns                         = tagOf(0x0028, 0x0011)
	tagBitsAllocated                   = tagOf(0x0028, 0x0100)
	tagBitsStored                      = tagOf(0x0028, 0x0101)
	tagPixelRepr                       = tagOf(0x0028, 0x0103)
	tagRescaleIntercept                = tagOf(0x0028, 0x1052)
	tagRescaleSlope                    = tagOf(0x0028, 0x1053)
	tagModalityLUTSequence             = tagOf(0x0028, 0x3000)
	tagVOILUTSequence                  = tagOf(0x0028, 0x3010)
	tagPixelValueTransformation        = tagOf(0x0028, 0x9145)
	tagSharedFunctionalGroups          = tagOf(0x5200, 0x9229)
	tagFloatPixelData           uint32 = dataset.TagFloatPixelData
	tagDoublePixelData          uint32 = dataset.TagDoublePixelData
)

// readHeader reads a Part 10 object up to Pixel Data with the one element
// reader (package dataset): the File Meta Information by part10's rule,
// then the dataset, keeping values of at most dataset.MaxValueHeld bytes
// and skipping larger ones without fetching them. Errors wrap
// part10.ErrNotPart10, part10.ErrMalformedMeta or a dataset verdict
// (ErrMalformed, ErrTruncated, ErrLimit); any other is the store's. The
// header is returned with what was read whenever the File Meta was.
func readHeader(src *dataset.RangeSource) (*header, error) {
	meta, head, err := readMeta(src)
	if err != nil {
		return nil, err
	}
	base := src.Pos()
	h := &header{Meta: meta, MetaEnd: base, MetaHead: head, TransferSyntax: meta.TransferSyntaxUID}
	enc, _ := dataset.EncodingOf(h.TransferSyntax)
	h.BigEndian, h.Deflated = enc.BigEndian, enc.Deflated
	var ds dataset.Source = src
	if enc.Deflated {
		// Inflated under the SCP's rule (dataset.InflateAllowance plus
		// dataset.MaxInflateRatio bytes per stored byte): an
		// object stored before it, or by other means, is an ErrLimit
		// verdict, not unbounded work.
		ds = bufio.NewReaderSize(dataset.NewInflater(sourceReader{src}), 64<<10)
		base = 0 // offsets are in the inflated stream
	}
	d := dataset.NewDecoder(ds, h.TransferSyntax)
	err = h.read(d, base)
	h.Implicit = d.Implicit()
	h.Misplaced, h.After, h.Unordered = d.Unordered()
	if meta.Unordered { // the File Meta group comes first
		h.Misplaced, h.After, h.Unordered = meta.Misplaced, meta.After, true
	}
	if err == nil && h.PixelData != nil && !h.Deflated && h.PixelData.Len != dataset.UndefinedLength {
		if end := h.PixelData.Offset + int64(h.PixelData.Len); end > src.Size() {
			h.PixelShort = end - src.Size()
		}
	}
	return h, err
}

// readMeta reads the File Meta Information by part10's rule and returns
// it with the object's bytes up to its end (the preamble, "DICM" and the
// meta group), when src still holds them, for the content identity
// (contentIdentity): src is left at the data set's first byte.
func readMeta(src *dataset.RangeSource) (part10.Meta, []byte, error) {
	meta, err := part10.ReadMeta(src)
	if err != nil {
		return meta, nil, err
	}
	head, ok := src.Held(0, int(src.Pos()))
	if !ok {
		return meta, nil, nil
	}
	return meta, bytes.Clone(head), nil
}

// read builds the header tree from the Decoder's tokens, up to top-level
// Pixel Data.
func (h *header) read(d *dataset.Decoder, base int64) error {
	// One frame per open sequence (seq set) or item (item set).
	type frame struct {
		seq  *dataElement
		item *dataSet
	}
	var stack []frame
	for {
		k, err := d.Next()
		switch k {
		case dataset.KindError:
			return err
		case dataset.KindEnd:
			return nil // a dataset without pixel data
		case dataset.KindElement:
			e := d.Element()
			el := &dataElement{Tag: e.Tag, VR: e.VR.String(), Len: e.Length, Offset: base + e.Offset}
			set := &h.Data
			if n := len(stack); n > 0 {
				set = stack[n-1].item // elements only come inside items
			}
			if e.Depth == 0 {
				if dataset.IsPixelData(e.Tag) {
					el.Bulk = true
					h.PixelData = el
					return nil // the caller never reads pixel data
				}
			}
			set.Elements = append(set.Elements, el)
			switch {
			case e.Sequence:
				el.VR = "SQ"
				stack = append(stack, frame{seq: el})
			case e.Encapsulated:
				el.Bulk = true // an icon's fragments, skipped by the Decoder
				stack = append(stack, frame{seq: el})
			case e.Length > dataset.MaxValueHeld || dataset.IsPixelData(e.Tag):
				el.Bulk = true
			default:
				el.Value = make([]byte, e.Length)
				d.Capture(el.Value)
			}
		case dataset.KindItem:
			item := &dataSet{}
			seq := stack[len(stack)-1].seq
			seq.Items = append(seq.Items, item)
			stack = append(stack, frame{item: item})
		case dataset.KindItemEnd, dataset.KindSequenceEnd:
			stack = stack[:len(stack)-1]
		}
	}
}
