// Package dataset is the one reader of DICOM datasets in this module. Its
// Scanner follows a dataset's structure element by element (PS3.5 §7:
// Implicit or Explicit VR, either byte order, sequences and items of
// defined or undefined length, encapsulated Pixel Data) under one set of
// limits (MaxDepth, MaxElements, MaxValueHeld, MaxHeldBytes; for a
// deflated dataset at most InflateAllowance, 64 MiB, plus MaxInflateRatio,
// 100, bytes inflated per compressed byte: no single-frame image, even
// wholly blank, is refused, and a bomb at the bound, 70.8 MiB of zeros
// from 71 KiB, costs about 13 ms of CPU; applied by the one Inflater the
// Inspector, the pipeline and the thumbnails inflate through, so an object
// stored before the rule or by other means costs no more than one the SCP
// accepts) and one transfer syntax rule (EncodingOf; a syntax it does not know is read as
// Implicit or Explicit VR as its first element says). Everything that
// reads DICOM bytes reads them through it:
//
//   - the SCP, with an Inspector: the dataset streams through to the store
//     unchanged while its top-level identifiers are picked up and its
//     structure is checked to the last byte, so a dataset that ends inside
//     an element, or cannot be followed, is refused rather than stored;
//   - the pipeline, with a Decoder over ranged reads of the stored object
//     (a RangeSource): it keeps the header up to Pixel Data and skips
//     large values without fetching them;
//   - File Meta reading (package part10), with a Decoder over the file;
//   - the portal's thumbnails, with a Decoder over a RangeSource: the
//     header up to Pixel Data (of an enhanced multi-frame object's
//     Per-Frame Functional Groups, the item of the frame shown, the others
//     skipped unread where their length is defined: SkipItem), then the
//     item headers of encapsulated
//     fragments (KindFragment) up to the frame shown, skipping the rest
//     (with no offset table, their first and last bytes too, for the
//     JPEG markers that delimit frames: Capture, and RangeSource's
//     KeepBehind);
//   - the portal's bulk data URIs of encapsulated values, with
//     EncapsulatedLength over a RangeSource: the item headers from the
//     value's offset to its Sequence Delimitation Item, the fragments
//     skipped unread.
//
// So what the SCP acknowledges, the pipeline can read: both apply the same
// rules and limits to the same bytes.
//
// Why not github.com/suyashkumar/dicom, which the tests use as a reference:
// v1.1.0 parses from an io.Reader and reads every value it skips through
// that reader (SkipPixelData included), so it cannot move past a 300 MiB
// value with a ranged read, nor pass a stream through while parsing it
// without buffering; and it has no limits on nesting or element count for
// hostile input. Its data dictionary is used for Implicit VR.
package dataset
