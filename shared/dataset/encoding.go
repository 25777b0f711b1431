package dataset

import "github.com/dicom-ingest/dicom-ingest/shared/dicomuid"

// Encoding is how a transfer syntax encodes the dataset itself.
type Encoding struct {
	Implicit  bool // Implicit VR (otherwise Explicit VR)
	BigEndian bool // Explicit VR Big Endian (retired)
	Deflated  bool // the dataset is a raw deflate stream (RFC 1951) of Explicit VR LE
}

// EncodingOf returns the dataset encoding of a transfer syntax and whether
// the UID is one this package knows. The encodings come from the
// transfer syntax registry (dicomuid), the one table the network layer
// negotiates with too. Every compressed (encapsulated) transfer syntax
// encodes its dataset in Explicit VR Little Endian; so do the standard
// syntaxes the registry does not list, and that is what an unknown
// (private) UID gets, with known false: the Inspector then tells Implicit
// from Explicit VR by the first element, as DCMTK does.
func EncodingOf(transferSyntaxUID string) (enc Encoding, known bool) {
	// Syntaxes that are not exchanged as stored objects (MIME, XML,
	// real-time video) describe no dataset encoding of their own.
	if ts, ok := dicomuid.LookupTransferSyntax(transferSyntaxUID); ok && ts.Storable {
		return Encoding{Implicit: !ts.ExplicitVR, BigEndian: ts.BigEndian, Deflated: ts.Deflated}, true
	}
	if len(transferSyntaxUID) > len(standardTSRoot) && transferSyntaxUID[:len(standardTSRoot)] == standardTSRoot {
		return Encoding{}, true
	}
	return Encoding{}, false
}

// standardTSRoot prefixes every transfer syntax UID of the standard;
// all those the registry does not describe use Explicit VR Little Endian.
const standardTSRoot = "1.2.840.10008.1.2."
