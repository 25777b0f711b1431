package dataset

import (
	"math"
	"testing"
)

// TestLUTFirstValueSigned: the one rule for a LUT Descriptor's first value
// mapped (PS3.3 C.11.1.1.1, C.11.2.1.1): signed where the values the LUT
// maps are, for rendering whatever the VR, for an encoding as the Explicit
// VR sent it. The renders and documents it decides are compared with
// DCMTK by TestRenderAsDCMTK and TestDICOMJSONAgreesWithDCMTK.
func TestLUTFirstValueSigned(t *testing.T) {
	signed := LUTInput{SignedPixels: true, BitsStored: 16, Slope: 1}
	unsigned12 := LUTInput{BitsStored: 12, Slope: 1}
	tests := []struct {
		name                string
		kind                LUTKind
		in                  LUTInput
		vr                  string
		rendering, encoding bool
	}{
		{"Modality LUT, signed pixels, Implicit VR", StoredValueLUT, signed, "", true, true},
		{"Modality LUT, signed pixels, US", StoredValueLUT, signed, "US", true, false},
		{"Modality LUT, unsigned pixels, SS", StoredValueLUT, unsigned12, "SS", false, true},
		{"Modality LUT, signed pixels, a rescale does not count", StoredValueLUT, LUTInput{SignedPixels: true, Slope: 1, Intercept: 5e4}, "", true, true},
		{"VOI LUT, signed pixels", VOILUT, signed, "", true, true},
		{"VOI LUT, signed pixels, US", VOILUT, signed, "US", true, false},
		{"VOI LUT, signed pixels under a Modality LUT", VOILUT, LUTInput{SignedPixels: true, ModalityLUT: true}, "", false, false},
		{"VOI LUT, unsigned pixels", VOILUT, unsigned12, "", false, false},
		{"VOI LUT, unsigned pixels rescaled by -1024", VOILUT, LUTInput{BitsStored: 12, Slope: 1, Intercept: -1024}, "", true, true},
		{"VOI LUT, unsigned pixels rescaled by -1024, US", VOILUT, LUTInput{BitsStored: 12, Slope: 1, Intercept: -1024}, "US", true, false},
		{"VOI LUT, unsigned pixels rescaled by +1", VOILUT, LUTInput{BitsStored: 12, Slope: 2, Intercept: 1}, "", false, false},
		{"VOI LUT, unsigned pixels, a negative slope", VOILUT, LUTInput{BitsStored: 12, Slope: -1, Intercept: 4000}, "", true, true},
		{"VOI LUT, unsigned pixels, a negative slope within range", VOILUT, LUTInput{BitsStored: 12, Slope: -1, Intercept: 4095}, "", false, false},
		{"VOI LUT, signed pixels rescaled above 0", VOILUT, LUTInput{SignedPixels: true, BitsStored: 12, Slope: 1, Intercept: 2048}, "", false, false},
		{"VOI LUT, a slope of 0 is 1", VOILUT, LUTInput{SignedPixels: true, BitsStored: 8}, "", true, true},
		{"VOI LUT, no Bits Stored: 16", VOILUT, LUTInput{Slope: 1, Intercept: -1}, "", true, true},
		// What a caller could not parse reads as absent, the same for
		// every caller: a slope that is no number (NaN, infinite) is 1, such
		// an intercept 0; Bits Stored absent, or past Bits Allocated, is
		// Bits Allocated (as the renderer takes it).
		{"VOI LUT, a slope of NaN is 1", VOILUT, LUTInput{BitsStored: 12, Slope: math.NaN(), Intercept: -1024}, "", true, true},
		{"VOI LUT, an infinite slope is 1", VOILUT, LUTInput{BitsStored: 12, Slope: math.Inf(-1), Intercept: 1}, "", false, false},
		{"VOI LUT, an intercept of NaN is 0", VOILUT, LUTInput{SignedPixels: true, BitsStored: 12, Slope: 1, Intercept: math.NaN()}, "", true, true},
		{"VOI LUT, an infinite intercept is 0", VOILUT, LUTInput{BitsStored: 12, Slope: 1, Intercept: math.Inf(-1)}, "", false, false},
		{"VOI LUT, no Bits Stored: Bits Allocated", VOILUT, LUTInput{BitsAllocated: 8, Slope: -1, Intercept: 300}, "", false, false},
		{"VOI LUT, Bits Stored past Bits Allocated: Bits Allocated", VOILUT, LUTInput{BitsAllocated: 8, BitsStored: 12, Slope: -1, Intercept: 300}, "", false, false},
		{"VOI LUT, Bits Stored within Bits Allocated", VOILUT, LUTInput{BitsAllocated: 16, BitsStored: 12, Slope: -1, Intercept: 4000}, "", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := LUTFirstValueSigned(ForRendering, tt.kind, tt.in, tt.vr); got != tt.rendering {
				t.Errorf("for rendering: %v, want %v", got, tt.rendering)
			}
			if got := LUTFirstValueSigned(ForEncoding, tt.kind, tt.in, tt.vr); got != tt.encoding {
				t.Errorf("for encoding: %v, want %v", got, tt.encoding)
			}
		})
	}
}

// TestLUTDescriptor: the descriptors whose values but the first value
// mapped are unsigned whatever the VR, the retired ones among them.
func TestLUTDescriptor(t *testing.T) {
	for _, tag := range []uint32{0x00283002, 0x00281100, 0x00281101, 0x00281102, 0x00281103, 0x00281111, 0x00281112, 0x00281113} {
		if !LUTDescriptor(tag) || !SignedAlternative(tag) {
			t.Errorf("(%04X,%04X): LUTDescriptor %v, SignedAlternative %v, want both", tag>>16, tag&0xFFFF, LUTDescriptor(tag), SignedAlternative(tag))
		}
	}
	for _, tag := range []uint32{0x00281104, 0x00283006, 0x00280106} {
		if LUTDescriptor(tag) {
			t.Errorf("(%04X,%04X) is no LUT descriptor", tag>>16, tag&0xFFFF)
		}
	}
	for i, want := range []bool{true, false, true, true} {
		if LUTDescriptorUnsigned(i) != want {
			t.Errorf("value %d unsigned: %v, want %v", i, !want, want)
		}
	}
}
