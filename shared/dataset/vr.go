package dataset

import "github.com/suyashkumar/dicom/pkg/tag"

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

// LUTDescriptor reports whether t is a LUT Descriptor (0028,3002) or a Red,
// Green or Blue Palette Color Lookup Table Descriptor (0028,1101-1103):
// "US or SS" for its second value alone (the first value mapped, signed as
// the pixels are), the VR of the element, while its first value (the
// number of entries) and third (bits per entry) are unsigned whatever that
// VR (PS3.3 C.11.1.1.1 and its note, C.7.6.3.1.5).
func LUTDescriptor(t uint32) bool {
	switch t {
	case 0x00283002, 0x00281101, 0x00281102, 0x00281103:
		return true
	}
	return false
}

// LUTDescriptorUnsigned reports whether value i (from 0) of a LUT
// Descriptor (LUTDescriptor) is unsigned whatever the element's VR: the
// number of entries (0) and the bits per entry (2) are; the first value
// mapped (1) is signed as the VR says.
func LUTDescriptorUnsigned(i int) bool { return i == 0 || i == 2 }
