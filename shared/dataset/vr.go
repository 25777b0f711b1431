package dataset

import (
	"math"

	"github.com/suyashkumar/dicom/pkg/tag"
)

// implicitVR looks a tag's VR up in the data dictionary, for Implicit VR
// datasets: the structure depends on it (a defined-length SQ holds items
// to read, any other value is skipped whole). The dictionary is
// suyashkumar/dicom's, generated from PS3.6.
func implicitVR(t uint32) VR {
	g, e := uint16(t>>16), uint16(t)
	if e == 0 {
		return VR{'U', 'L'} // group length
	}
	if tag.IsPrivate(g) {
		if e >= 0x0010 && e <= 0x00FF {
			return VR{'L', 'O'} // private creator
		}
		return VR{'U', 'N'}
	}
	info, err := tag.Find(tag.Tag{Group: g, Element: e})
	if err != nil || len(info.VRs) == 0 || len(info.VRs[0]) != 2 {
		return VR{'U', 'N'}
	}
	// Where PS3.6 allows several VRs (OB or OW, US or SS), the choice
	// decides nothing structural: such values are never sequences. "OB or
	// OW" is OW in Implicit VR (PS3.5 A.1, 8.1.2, 8.2, 8.3: Pixel Data,
	// Overlay Data, Waveform Data); the others take the first.
	if len(info.VRs) == 2 && info.VRs[0] == "OB" && info.VRs[1] == "OW" {
		return VR{'O', 'W'}
	}
	v := info.VRs[0]
	return VR{v[0], v[1]}
}

// SignedAlternative reports whether PS3.6 gives t the VR "US or SS": in
// Implicit VR, where implicitVR says US, such a value is SS when Pixel
// Representation (0028,0103) is 1 (PS3.5 A.1, PS3.3 C.7.6.3.1.1).
func SignedAlternative(t uint32) bool {
	g, e := uint16(t>>16), uint16(t)
	if e == 0 || tag.IsPrivate(g) {
		return false
	}
	info, err := tag.Find(tag.Tag{Group: g, Element: e})
	return err == nil && len(info.VRs) == 2 && info.VRs[0] == "US" && info.VRs[1] == "SS"
}

// LUTDescriptor reports whether t is a LUT Descriptor (0028,3002), a Red,
// Green or Blue Palette Color Lookup Table Descriptor (0028,1101-1103), or
// one of the retired Gray Lookup Table Descriptor (0028,1100) and Large
// Red, Green and Blue Palette Color Lookup Table Descriptors
// (0028,1111-1113): "US or SS" for its second value alone, the first value
// mapped (LUTFirstValueSigned says how it reads), the VR of the element,
// while its other values (the number of entries, bits per entry) are
// unsigned whatever that VR (PS3.3 C.11.1.1.1 and its note, C.7.6.3.1.5).
// PS3.6 gives the retired ones "US or SS" too, and DCMTK's dictionary xs,
// as the Palette Color ones.
func LUTDescriptor(t uint32) bool {
	switch t {
	case 0x00283002, 0x00281100, 0x00281101, 0x00281102, 0x00281103, 0x00281111, 0x00281112, 0x00281113:
		return true
	}
	return false
}

// LUTDescriptorUnsigned reports whether value i (from 0) of a LUT
// Descriptor (LUTDescriptor) is unsigned whatever the element's VR: all
// but the first value mapped (1) are, counts and bit depths; that one is
// signed as LUTFirstValueSigned says.
func LUTDescriptorUnsigned(i int) bool { return i != 1 }

// LUTKind is what the values a LUT maps are.
type LUTKind int

const (
	// StoredValueLUT maps stored pixel values: the Modality LUT (PS3.3
	// C.11.1.1.1), the Palette Color and the retired Gray and Large
	// Palette Color lookup tables (C.7.6.3.1.5).
	StoredValueLUT LUTKind = iota
	// VOILUT maps the Modality LUT's output (C.11.2.1.1): its LUT's,
	// unsigned, else the rescale's, else the stored values.
	VOILUT
)

// LUTInput is what decides whether the values a LUT maps are signed: an
// image's Pixel Representation (0028,0103) and Bits Stored (0028,0101),
// and for a VOI LUT, its Modality LUT Sequence (0028,3000) and Rescale
// Slope and Intercept (0028,1053, 0028,1052).
type LUTInput struct {
	SignedPixels     bool    // Pixel Representation 1
	BitsAllocated    int     // 0: not known
	BitsStored       int     // 0, or past Bits Allocated: Bits Allocated, else 16
	ModalityLUT      bool    // a Modality LUT Sequence, whose output is unsigned
	Slope, Intercept float64 // the rescale; a Slope of 0 or no finite number is 1, such an Intercept 0 (none usable)
}

// Signed reports whether the values a LUT of kind maps are signed: stored
// values by Pixel Representation; a VOI LUT's input unsigned under a
// Modality LUT, else signed where the rescale's output over the stored
// values Bits Stored and Pixel Representation allow may be negative (with
// no rescale, or 1 and 0: signed pixels). That is PS3.3 C.11.2.1.1's rule,
// "the possible output range"; dcmj2pnm (DCMTK 3.6.7) decides by the
// range of the values of the frame it renders instead, so that the two
// read a first value mapped of 32768 or more otherwise only where the
// possible range reaches below 0 and the frame's does not.
func (in LUTInput) Signed(kind LUTKind) bool {
	if kind == StoredValueLUT {
		return in.SignedPixels
	}
	if in.ModalityLUT {
		return false
	}
	// What the callers could not read is absent, here for all of them.
	bits := in.BitsStored
	if bits <= 0 || in.BitsAllocated > 0 && bits > in.BitsAllocated {
		bits = in.BitsAllocated
	}
	if bits <= 0 || bits > 32 {
		bits = 16
	}
	lo, hi := 0.0, math.Ldexp(1, bits)-1
	if in.SignedPixels {
		lo, hi = -math.Ldexp(1, bits-1), math.Ldexp(1, bits-1)-1
	}
	slope, intercept := in.Slope, in.Intercept
	if slope == 0 || math.IsNaN(slope) || math.IsInf(slope, 0) {
		slope = 1
	}
	if math.IsNaN(intercept) || math.IsInf(intercept, 0) {
		intercept = 0
	}
	return min(lo*slope, hi*slope)+intercept < 0
}

// LUTReading is what a LUT Descriptor is read for: rendering, or writing
// the data set in another encoding.
type LUTReading int

const (
	// ForRendering reads the first value mapped as the values the LUT
	// maps are, whatever the VR (PS3.3 C.11.1.1.1, C.11.2.1.1 decide it
	// by them; so does dcmj2pnm): a US descriptor over signed values,
	// which PS3.3 says should be SS, maps from below 0 rather than from
	// 32768 up, where no value reaches.
	ForRendering LUTReading = iota
	// ForEncoding is a data-set encoding (the DICOM JSON, PS3.18 F.2.3),
	// which keeps an element's values as they are encoded: in Explicit VR
	// the VR sent decides (a US descriptor over signed values stays US,
	// its value unsigned), in Implicit VR, where PS3.6's "US or SS" is not
	// sent, the values the LUT maps decide as they do for rendering (PS3.5
	// A.1).
	ForEncoding
)

// LUTFirstValueSigned is the one rule for how the first value mapped of a
// LUT Descriptor (LUTDescriptor) of a LUT of kind over in is read: signed
// (SS) or not (US). explicitVR is the element's VR as sent in Explicit VR
// ("US" or "SS"), "" in Implicit VR. Rendering and encoding differ in one
// case alone, an Explicit VR that contradicts the values mapped: the
// encoding keeps it, the rendering does not (LUTReading).
func LUTFirstValueSigned(r LUTReading, kind LUTKind, in LUTInput, explicitVR string) bool {
	if r == ForEncoding && explicitVR != "" {
		return explicitVR == "SS"
	}
	return in.Signed(kind)
}
