// Package dataset inspects a DICOM dataset while it streams past: it reads
// the top-level header (SOP Class/Instance, Study and Series Instance UIDs,
// group 0002 elements that do not belong there) in any transfer syntax
// without buffering the object and without changing a byte it passes on.
//
// The SCP reads a received dataset through an Inspector on its way to the
// store; Peek does the same but first collects the header, so the object
// key can be chosen before the first byte is written.
package dataset

// Encoding is how a transfer syntax encodes the dataset itself.
type Encoding struct {
	Implicit  bool // Implicit VR (otherwise Explicit VR)
	BigEndian bool // Explicit VR Big Endian (retired)
	Deflated  bool // the dataset is a raw deflate stream (RFC 1951) of Explicit VR LE
}

// EncodingOf returns the dataset encoding of a transfer syntax and whether
// the UID is one this package knows. Every compressed (encapsulated)
// transfer syntax encodes its dataset in Explicit VR Little Endian; so do
// the standard syntaxes not listed here, and that is what an unknown
// (private) UID gets, with known false: the Inspector then tells Implicit
// from Explicit VR by the first element, as DCMTK does.
func EncodingOf(transferSyntaxUID string) (enc Encoding, known bool) {
	switch transferSyntaxUID {
	case "1.2.840.10008.1.2": // Implicit VR Little Endian
		return Encoding{Implicit: true}, true
	case "1.2.840.10008.1.2.2": // Explicit VR Big Endian
		return Encoding{BigEndian: true}, true
	case "1.2.840.10008.1.2.1.99", // Deflated Explicit VR Little Endian
		"1.2.840.10008.1.2.4.95": // JPIP Referenced Deflate
		return Encoding{Deflated: true}, true
	}
	if len(transferSyntaxUID) > len(standardTSRoot) && transferSyntaxUID[:len(standardTSRoot)] == standardTSRoot {
		return Encoding{}, true
	}
	return Encoding{}, false
}

// standardTSRoot prefixes every transfer syntax UID of the standard;
// all those not special-cased above use Explicit VR Little Endian.
const standardTSRoot = "1.2.840.10008.1.2."
