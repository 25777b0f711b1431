// Package dicomuid is the registry of DICOM UIDs the network layer negotiates: transfer syntaxes (with their
// encoding properties) and SOP classes, including the rule that decides whether a SOP class is a storage class.
package dicomuid

import (
	"fmt"
	"slices"
	"strings"
)

// Well-known UIDs.
const (
	ApplicationContext = "1.2.840.10008.3.1.1.1" // DICOM Application Context Name
	Verification       = "1.2.840.10008.1.1"
	StorageCommitment  = "1.2.840.10008.1.20.1" // Storage Commitment Push Model SOP Class (not a storage class)
	// StorageCommitmentInstance is the Push Model's well-known SOP instance (PS3.4 J.3.5): every N-ACTION and
	// N-EVENT-REPORT of the class names it.
	StorageCommitmentInstance = "1.2.840.10008.1.20.1.1"

	ImplicitVRLittleEndian           = "1.2.840.10008.1.2"
	ExplicitVRLittleEndian           = "1.2.840.10008.1.2.1"
	EncapsulatedUncompressedExplicit = "1.2.840.10008.1.2.1.98"
	DeflatedExplicitVRLittleEndian   = "1.2.840.10008.1.2.1.99"
	ExplicitVRBigEndian              = "1.2.840.10008.1.2.2" // retired
	JPEGBaseline8Bit                 = "1.2.840.10008.1.2.4.50"
	JPEGExtended12Bit                = "1.2.840.10008.1.2.4.51"
	JPEGLossless                     = "1.2.840.10008.1.2.4.57"
	JPEGLosslessSV1                  = "1.2.840.10008.1.2.4.70"
	JPEGLSLossless                   = "1.2.840.10008.1.2.4.80"
	JPEGLSNearLossless               = "1.2.840.10008.1.2.4.81"
	JPEG2000Lossless                 = "1.2.840.10008.1.2.4.90"
	JPEG2000                         = "1.2.840.10008.1.2.4.91"
	RLELossless                      = "1.2.840.10008.1.2.5"
	HTJ2KLossless                    = "1.2.840.10008.1.2.4.201"
	HTJ2K                            = "1.2.840.10008.1.2.4.203"

	CTImageStorage               = "1.2.840.10008.5.1.4.1.1.2"
	MRImageStorage               = "1.2.840.10008.5.1.4.1.1.4"
	SecondaryCaptureImageStorage = "1.2.840.10008.5.1.4.1.1.7"
)

// TransferSyntax describes how a dataset is encoded on the wire.
type TransferSyntax struct {
	UID          string
	Name         string
	ExplicitVR   bool
	BigEndian    bool
	Deflated     bool // the whole dataset is deflate-compressed
	Encapsulated bool // pixel data in fragments (compressed or encapsulated uncompressed)
	Retired      bool
	// Storable is false for syntaxes that are not used to exchange stored objects over DIMSE
	// (MIME/XML encodings, SMPTE ST 2110 real-time video).
	Storable bool
	// Fidelity says what the syntax lets a sender do to pixel data.
	Fidelity Fidelity
}

// Fidelity says what a transfer syntax lets a sender do to pixel data (PS3.5 Annex A, 8.2).
type Fidelity int

const (
	// Lossless: native pixel data, deflated, or compressed losslessly (JPEG Lossless, JPEG-LS Lossless,
	// JPEG 2000 and HTJ2K Lossless Only, RLE, JPEG XL Lossless, Deflated Image Frame).
	Lossless Fidelity = iota
	// MayBeLossy: the sender may compress lossily, at a quality it alone chooses (JPEG's lossy processes,
	// JPEG-LS Near-Lossless, JPEG 2000, HTJ2K, JPEG XL, MPEG-2, H.264, HEVC); JPEG XL JPEG Recompression too,
	// which keeps the bits of a lossy JPEG encoding, not of the image (PS3.5 8.2.15).
	MayBeLossy
	// Referenced: JPIP, the pixel data is not in the object but served by a JPIP server.
	Referenced
)

func (f Fidelity) String() string {
	switch f {
	case Lossless:
		return "lossless"
	case MayBeLossy:
		return "may be lossy"
	case Referenced:
		return "referenced (JPIP)"
	}
	return fmt.Sprintf("Fidelity(%d)", int(f))
}

// Compressed reports whether the syntax changes the dataset bytes relative to native Explicit/Implicit VR
// Little Endian, i.e. whether a sender that proposes it has a reason to prefer it.
func (ts TransferSyntax) Compressed() bool { return ts.Deflated || ts.Encapsulated }

var transferSyntaxes = map[string]TransferSyntax{}

func setFidelity(uid string, f Fidelity) {
	ts := transferSyntaxes[uid]
	ts.Fidelity = f
	transferSyntaxes[uid] = ts
}

func addTS(uid, name string, explicit, be, deflated, encaps, retired, storable bool) {
	transferSyntaxes[uid] = TransferSyntax{UID: uid, Name: name, ExplicitVR: explicit, BigEndian: be,
		Deflated: deflated, Encapsulated: encaps, Retired: retired, Storable: storable}
}

func init() {
	addTS(ImplicitVRLittleEndian, "Implicit VR Little Endian", false, false, false, false, false, true)
	addTS(ExplicitVRLittleEndian, "Explicit VR Little Endian", true, false, false, false, false, true)
	addTS(EncapsulatedUncompressedExplicit, "Encapsulated Uncompressed Explicit VR Little Endian", true, false, false, true, false, true)
	addTS(DeflatedExplicitVRLittleEndian, "Deflated Explicit VR Little Endian", true, false, true, false, false, true)
	addTS(ExplicitVRBigEndian, "Explicit VR Big Endian (Retired)", true, true, false, false, true, true)
	enc := func(suffix, name string, retired bool, f Fidelity) {
		addTS("1.2.840.10008.1.2.4."+suffix, name, true, false, false, true, retired, true)
		setFidelity("1.2.840.10008.1.2.4."+suffix, f)
	}
	enc("50", "JPEG Baseline (Process 1)", false, MayBeLossy)
	enc("51", "JPEG Extended (Process 2 & 4)", false, MayBeLossy)
	enc("52", "JPEG Extended (Process 3 & 5) (Retired)", true, MayBeLossy)
	enc("53", "JPEG Spectral Selection, Non-Hierarchical (Process 6 & 8) (Retired)", true, MayBeLossy)
	enc("54", "JPEG Spectral Selection, Non-Hierarchical (Process 7 & 9) (Retired)", true, MayBeLossy)
	enc("55", "JPEG Full Progression, Non-Hierarchical (Process 10 & 12) (Retired)", true, MayBeLossy)
	enc("56", "JPEG Full Progression, Non-Hierarchical (Process 11 & 13) (Retired)", true, MayBeLossy)
	enc("58", "JPEG Lossless, Non-Hierarchical (Process 15) (Retired)", true, Lossless)
	enc("59", "JPEG Extended, Hierarchical (Process 16 & 18) (Retired)", true, MayBeLossy)
	enc("60", "JPEG Extended, Hierarchical (Process 17 & 19) (Retired)", true, MayBeLossy)
	enc("61", "JPEG Spectral Selection, Hierarchical (Process 20 & 22) (Retired)", true, MayBeLossy)
	enc("62", "JPEG Spectral Selection, Hierarchical (Process 21 & 23) (Retired)", true, MayBeLossy)
	enc("63", "JPEG Full Progression, Hierarchical (Process 24 & 26) (Retired)", true, MayBeLossy)
	enc("64", "JPEG Full Progression, Hierarchical (Process 25 & 27) (Retired)", true, MayBeLossy)
	enc("65", "JPEG Lossless, Hierarchical (Process 28) (Retired)", true, Lossless)
	enc("66", "JPEG Lossless, Hierarchical (Process 29) (Retired)", true, Lossless)
	enc("57", "JPEG Lossless, Non-Hierarchical (Process 14)", false, Lossless)
	enc("70", "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])", false, Lossless)
	enc("80", "JPEG-LS Lossless", false, Lossless)
	enc("81", "JPEG-LS Lossy (Near-Lossless)", false, MayBeLossy)
	enc("90", "JPEG 2000 (Lossless Only)", false, Lossless)
	enc("91", "JPEG 2000", false, MayBeLossy)
	enc("92", "JPEG 2000 Part 2 Multi-component (Lossless Only)", false, Lossless)
	enc("93", "JPEG 2000 Part 2 Multi-component", false, MayBeLossy)
	enc("94", "JPIP Referenced", false, Referenced)
	addTS("1.2.840.10008.1.2.4.95", "JPIP Referenced Deflate", true, false, true, false, false, true)
	setFidelity("1.2.840.10008.1.2.4.95", Referenced)
	enc("100", "MPEG2 Main Profile / Main Level", false, MayBeLossy)
	enc("100.1", "Fragmentable MPEG2 Main Profile / Main Level", false, MayBeLossy)
	enc("101", "MPEG2 Main Profile / High Level", false, MayBeLossy)
	enc("101.1", "Fragmentable MPEG2 Main Profile / High Level", false, MayBeLossy)
	enc("102", "MPEG-4 AVC/H.264 High Profile / Level 4.1", false, MayBeLossy)
	enc("102.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1", false, MayBeLossy)
	enc("103", "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1", false, MayBeLossy)
	enc("103.1", "Fragmentable MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1", false, MayBeLossy)
	enc("104", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video", false, MayBeLossy)
	enc("104.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video", false, MayBeLossy)
	enc("105", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video", false, MayBeLossy)
	enc("105.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video", false, MayBeLossy)
	enc("106", "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2", false, MayBeLossy)
	enc("106.1", "Fragmentable MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2", false, MayBeLossy)
	enc("107", "HEVC/H.265 Main Profile / Level 5.1", false, MayBeLossy)
	enc("108", "HEVC/H.265 Main 10 Profile / Level 5.1", false, MayBeLossy)
	enc("110", "JPEG XL Lossless", false, Lossless)
	enc("111", "JPEG XL JPEG Recompression", false, MayBeLossy)
	enc("112", "JPEG XL", false, MayBeLossy)
	enc("201", "High-Throughput JPEG 2000 Image Compression (Lossless Only)", false, Lossless)
	enc("202", "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)", false, Lossless)
	enc("203", "High-Throughput JPEG 2000 Image Compression", false, MayBeLossy)
	enc("204", "JPIP HTJ2K Referenced", false, Referenced)
	addTS("1.2.840.10008.1.2.4.205", "JPIP HTJ2K Referenced Deflate", true, false, true, false, false, true)
	setFidelity("1.2.840.10008.1.2.4.205", Referenced)
	addTS(RLELossless, "RLE Lossless", true, false, false, true, false, true)
	addTS("1.2.840.10008.1.2.6.1", "RFC 2557 MIME encapsulation (Retired)", false, false, false, false, true, false)
	addTS("1.2.840.10008.1.2.6.2", "XML Encoding (Retired)", false, false, false, false, true, false)
	addTS("1.2.840.10008.1.2.7.1", "SMPTE ST 2110-20 Uncompressed Progressive Active Video", false, false, false, false, false, false)
	addTS("1.2.840.10008.1.2.7.2", "SMPTE ST 2110-20 Uncompressed Interlaced Active Video", false, false, false, false, false, false)
	addTS("1.2.840.10008.1.2.7.3", "SMPTE ST 2110-30 PCM Digital Audio", false, false, false, false, false, false)
	addTS("1.2.840.10008.1.2.8.1", "Deflated Image Frame Compression", true, false, false, true, false, true)
}

// LookupTransferSyntax returns the registry entry for uid (trailing NUL/space tolerated).
func LookupTransferSyntax(uid string) (TransferSyntax, bool) {
	ts, ok := transferSyntaxes[Trim(uid)]
	return ts, ok
}

// TransferSyntaxes returns every registered transfer syntax UID (unordered).
func TransferSyntaxes() []string {
	out := make([]string, 0, len(transferSyntaxes))
	for uid := range transferSyntaxes {
		out = append(out, uid)
	}
	return out
}

// Trim removes the trailing NUL and space padding UIDs carry on the wire, and surrounding spaces.
func Trim(uid string) string {
	return strings.Trim(uid, " \x00")
}

// storageRoot is the root under which PS3.4 Annex B (Storage Service Class) allocates its SOP classes.
// Query/Retrieve (…5.1.4.1.2.x) lives outside this subtree.
const storageRoot = "1.2.840.10008.5.1.4.1.1."

// storageOutsideRoot lists storage SOP classes (current and retired) whose UIDs are not under storageRoot.
var storageOutsideRoot = map[string]string{
	"1.2.840.10008.5.1.1.27":     "Stored Print Storage (Retired)",
	"1.2.840.10008.5.1.1.29":     "Hardcopy Grayscale Image Storage (Retired)",
	"1.2.840.10008.5.1.1.30":     "Hardcopy Color Image Storage (Retired)",
	"1.2.840.10008.5.1.4.38.1":   "Hanging Protocol Storage",
	"1.2.840.10008.5.1.4.39.1":   "Color Palette Storage",
	"1.2.840.10008.5.1.4.43.1":   "Generic Implant Template Storage",
	"1.2.840.10008.5.1.4.44.1":   "Implant Assembly Template Storage",
	"1.2.840.10008.5.1.4.45.1":   "Implant Template Group Storage",
	"1.2.840.10008.5.1.4.34.7":   "RT Beams Delivery Instruction Storage",
	"1.2.840.10008.5.1.4.34.10":  "RT Brachy Application Setup Delivery Instruction Storage",
	"1.2.840.10008.5.1.4.1.1.40": "MR Image Storage Zero Padded (Retired)", // under root; listed for the name
}

// notStorageUnderRoot lists the SOP classes the standard allocated under storageRoot that are not storage
// classes (PS3.6 Annex A): query, retrieve and creation services of PS3.4 Annexes HH and II. A C-STORE in their
// presentation context would store a query; they get presentation context result 3 like any other non-storage class.
var notStorageUnderRoot = map[string]string{
	"1.2.840.10008.5.1.4.1.1.200.4": "Protocol Approval Information Model - FIND",
	"1.2.840.10008.5.1.4.1.1.200.5": "Protocol Approval Information Model - MOVE",
	"1.2.840.10008.5.1.4.1.1.200.6": "Protocol Approval Information Model - GET",
	"1.2.840.10008.5.1.4.1.1.201.2": "Inventory - FIND",
	"1.2.840.10008.5.1.4.1.1.201.3": "Inventory - MOVE",
	"1.2.840.10008.5.1.4.1.1.201.4": "Inventory - GET",
	"1.2.840.10008.5.1.4.1.1.201.5": "Inventory Creation",
	"1.2.840.10008.5.1.4.1.1.201.6": "Repository Query",
}

// storageNames names the common storage SOP classes, for logs and tests; it is not the acceptance rule.
var storageNames = map[string]string{
	"1.2.840.10008.5.1.4.1.1.1":     "Computed Radiography Image Storage",
	"1.2.840.10008.5.1.4.1.1.1.1":   "Digital X-Ray Image Storage - For Presentation",
	"1.2.840.10008.5.1.4.1.1.1.2":   "Digital Mammography X-Ray Image Storage - For Presentation",
	"1.2.840.10008.5.1.4.1.1.2":     "CT Image Storage",
	"1.2.840.10008.5.1.4.1.1.2.1":   "Enhanced CT Image Storage",
	"1.2.840.10008.5.1.4.1.1.3.1":   "Ultrasound Multi-frame Image Storage",
	"1.2.840.10008.5.1.4.1.1.4":     "MR Image Storage",
	"1.2.840.10008.5.1.4.1.1.4.1":   "Enhanced MR Image Storage",
	"1.2.840.10008.5.1.4.1.1.6.1":   "Ultrasound Image Storage",
	"1.2.840.10008.5.1.4.1.1.7":     "Secondary Capture Image Storage",
	"1.2.840.10008.5.1.4.1.1.12.1":  "X-Ray Angiographic Image Storage",
	"1.2.840.10008.5.1.4.1.1.20":    "Nuclear Medicine Image Storage",
	"1.2.840.10008.5.1.4.1.1.66":    "Raw Data Storage",
	"1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
	"1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
	"1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
	"1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
	"1.2.840.10008.5.1.4.1.1.128":   "Positron Emission Tomography Image Storage",
	"1.2.840.10008.5.1.4.1.1.481.1": "RT Image Storage",
	"1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage",
	"1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
	"1.2.840.10008.5.1.4.1.1.481.5": "RT Plan Storage",
}

// IsStorageSOPClass reports whether uid is a Storage Service Class SOP class (PS3.4 Annex B and the retired and
// newer storage classes allocated outside its UID subtree). Storage Commitment, Verification and Query/Retrieve
// are not storage classes. The rule is deliberately generous: every UID under 1.2.840.10008.5.1.4.1.1. is
// accepted but the query and retrieval classes allocated there (notStorageUnderRoot), so storage classes added
// to the standard after this registry was written are still received.
func IsStorageSOPClass(uid string) bool {
	uid = Trim(uid)
	if _, ok := storageOutsideRoot[uid]; ok {
		return true
	}
	if !strings.HasPrefix(uid, storageRoot) || len(uid) == len(storageRoot) {
		return false
	}
	if _, query := notStorageUnderRoot[uid]; query {
		return false
	}
	return ValidUID(uid)
}

// NamedStorageSOPClasses returns, sorted, the storage SOP classes this registry names: every one allocated
// outside the storage root and the common ones under it. It is what the conformance statement lists; the
// acceptance rule is IsStorageSOPClass, which accepts every other UID under the root as well.
func NamedStorageSOPClasses() []string {
	out := make([]string, 0, len(storageNames)+len(storageOutsideRoot))
	for uid := range storageNames {
		out = append(out, uid)
	}
	for uid := range storageOutsideRoot {
		if _, dup := storageNames[uid]; !dup {
			out = append(out, uid)
		}
	}
	slices.Sort(out)
	return out
}

// Name returns a human-readable name for a known UID, or "" if unknown.
func Name(uid string) string {
	uid = Trim(uid)
	if ts, ok := transferSyntaxes[uid]; ok {
		return ts.Name
	}
	switch uid {
	case Verification:
		return "Verification SOP Class"
	case StorageCommitment:
		return "Storage Commitment Push Model SOP Class"
	case ApplicationContext:
		return "DICOM Application Context Name"
	}
	if n, ok := storageNames[uid]; ok {
		return n
	}
	if n, ok := notStorageUnderRoot[uid]; ok {
		return n
	}
	return storageOutsideRoot[uid]
}

// ValidUID reports whether s is a syntactically valid UID per PS3.5 §9.1: 1–64 characters, dot-separated
// components of digits, no leading zero in a multi-digit component, no empty component.
func ValidUID(s string) bool { return SyntaxError(s) == "" }

// SyntaxError explains why s is not a valid UID (see ValidUID), for a person; "" for a valid UID. It does not
// allocate for a valid one.
func SyntaxError(s string) string {
	switch {
	case s == "":
		return "empty"
	case len(s) > 64:
		return "longer than 64 characters"
	}
	comp, start := 1, 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			if s[i] < '0' || s[i] > '9' {
				return fmt.Sprintf("component %d has a character other than 0-9", comp)
			}
			continue
		}
		switch n := i - start; {
		case n == 0:
			return fmt.Sprintf("component %d is empty", comp)
		case n > 1 && s[start] == '0':
			return fmt.Sprintf("component %d has a leading zero", comp)
		}
		comp, start = comp+1, i+1
	}
	return ""
}
