package dicomuid

import (
	"slices"
	"testing"
)

func TestIsStorageSOPClass(t *testing.T) {
	tests := []struct {
		uid  string
		want bool
	}{
		{CTImageStorage, true},
		{MRImageStorage + "\x00", true},
		{"1.2.840.10008.5.1.4.1.1.2.1", true},    // Enhanced CT
		{"1.2.840.10008.5.1.4.1.1.88.33", true},  // Comprehensive SR
		{"1.2.840.10008.5.1.4.1.1.501.1", true},  // DICOS CT
		{"1.2.840.10008.5.1.4.1.1.9999.1", true}, // future storage class under the root
		{"1.2.840.10008.5.1.1.29", true},         // Hardcopy Grayscale (retired)
		{"1.2.840.10008.5.1.4.38.1", true},       // Hanging Protocol
		{"1.2.840.10008.5.1.4.34.7", true},       // RT Beams Delivery Instruction
		{StorageCommitment, false},
		{Verification, false},
		{"1.2.840.10008.5.1.4.1.2.1.1", false},   // Patient Root Q/R FIND
		{"1.2.840.10008.5.1.4.34.6.1", false},    // UPS Push
		{"1.2.840.10008.5.1.4.1.1.200.3", true},  // Protocol Approval Storage
		{"1.2.840.10008.5.1.4.1.1.200.4", false}, // Protocol Approval Information Model - FIND, under the root
		{"1.2.840.10008.5.1.4.1.1.200.6", false}, // Protocol Approval Information Model - GET
		{"1.2.840.10008.5.1.4.1.1.201.1", true},  // Inventory Storage
		{"1.2.840.10008.5.1.4.1.1.201.2", false}, // Inventory - FIND
		{"1.2.840.10008.5.1.4.1.1.201.6", false}, // Repository Query
		{"1.2.840.10008.5.1.4.1.1.", false},
		{"1.2.840.10008.5.1.4.1.1", false},
		{"1.2.840.10008.5.1.4.1.1.02", false}, // leading zero
		{"1.2.840.10008.5.1.4.1.1.2..1", false},
		{"1.2.840.10008.5.1.4.1.1.x", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := IsStorageSOPClass(tc.uid); got != tc.want {
			t.Errorf("IsStorageSOPClass(%q) = %v, want %v", tc.uid, got, tc.want)
		}
	}
}

func TestTransferSyntaxes(t *testing.T) {
	tests := []struct {
		uid                      string
		compressed, be, storable bool
	}{
		{ImplicitVRLittleEndian, false, false, true},
		{ExplicitVRLittleEndian, false, false, true},
		{ExplicitVRBigEndian, false, true, true},
		{DeflatedExplicitVRLittleEndian, true, false, true},
		{JPEGBaseline8Bit, true, false, true},
		{JPEGLSLossless, true, false, true},
		{JPEG2000, true, false, true},
		{RLELossless, true, false, true},
		{HTJ2KLossless, true, false, true},
		{"1.2.840.10008.1.2.4.107", true, false, true}, // HEVC
		{"1.2.840.10008.1.2.6.1", false, false, false}, // MIME
	}
	for _, tc := range tests {
		ts, ok := LookupTransferSyntax(tc.uid)
		if !ok {
			t.Errorf("%s not registered", tc.uid)
			continue
		}
		if ts.Compressed() != tc.compressed || ts.BigEndian != tc.be || ts.Storable != tc.storable {
			t.Errorf("%s: %+v", tc.uid, ts)
		}
	}
	if _, ok := LookupTransferSyntax("1.2.3.4.5.6"); ok {
		t.Error("private UID registered")
	}
	if len(TransferSyntaxes()) < 50 {
		t.Errorf("only %d transfer syntaxes", len(TransferSyntaxes()))
	}
}

func TestValidUID(t *testing.T) {
	for uid, want := range map[string]bool{
		"1.2.3": true, "0": true, "1.0.3": true, "1.02": false, ".1": false, "1.": false, "1..2": false, "1.a": false,
		"": false, "1.2.840.10008.5.1.4.1.1.2.1234567890123456789012345678901234567890123456": false,
		"../../etc/passwd": false, "1.2.3/4": false,
	} {
		if got := ValidUID(uid); got != want {
			t.Errorf("ValidUID(%q) = %v", uid, got)
		}
	}
}

func TestSyntaxError(t *testing.T) {
	for uid, want := range map[string]string{
		"1.2.840.10008.1.2": "", "0": "", "1.0.3": "", "2.25.183052315929864815389417092715962367371": "",
		"": "empty", "1.02": "component 2 has a leading zero", "1..2": "component 2 is empty",
		"1.2.": "component 3 is empty", ".1": "component 1 is empty", "1.2a": "component 2 has a character other than 0-9",
		"1.2.3 ": "component 3 has a character other than 0-9",
		"1.22222222222222222222222222222222222222222222222222222222222222222": "longer than 64 characters",
	} {
		if got := SyntaxError(uid); got != want {
			t.Errorf("SyntaxError(%q) = %q, want %q", uid, got, want)
		}
	}
}

func TestName(t *testing.T) {
	if Name(CTImageStorage) != "CT Image Storage" || Name(JPEGBaseline8Bit) == "" || Name(Verification) == "" || Name("1.2.3") != "" {
		t.Error("names")
	}
}

func TestNamedStorageSOPClasses(t *testing.T) {
	named := NamedStorageSOPClasses()
	if len(named) < 30 {
		t.Errorf("only %d named storage SOP classes", len(named))
	}
	for _, uid := range named {
		if !IsStorageSOPClass(uid) {
			t.Errorf("%s is named as a storage SOP class but IsStorageSOPClass refuses it", uid)
		}
		if Name(uid) == "" {
			t.Errorf("%s has no name", uid)
		}
	}
	if !slices.IsSorted(named) {
		t.Error("not sorted")
	}
}

// TestFidelity: what a syntax lets a sender do to pixel data, after PS3.5
// Annex A (8.2.1–8.2.4 and 8.4–8.5: lossless-only processes and the
// "Lossless Only" profiles are lossless; the others let the encoder choose;
// JPEG XL JPEG Recompression keeps the bits of a JPEG encoding, not of the
// image: a sender holding the image would first compress it as JPEG).
func TestFidelity(t *testing.T) {
	tests := []struct {
		uid  string
		want Fidelity
	}{
		{ImplicitVRLittleEndian, Lossless},
		{DeflatedExplicitVRLittleEndian, Lossless},
		{RLELossless, Lossless},
		{JPEGBaseline8Bit, MayBeLossy},
		{"1.2.840.10008.1.2.4.51", MayBeLossy},  // JPEG Extended
		{JPEGLossless, Lossless},                // Process 14
		{JPEGLosslessSV1, Lossless},             // Process 14, SV1
		{"1.2.840.10008.1.2.4.65", Lossless},    // JPEG Lossless, Hierarchical
		{"1.2.840.10008.1.2.4.80", Lossless},    // JPEG-LS Lossless
		{"1.2.840.10008.1.2.4.81", MayBeLossy},  // JPEG-LS Near-Lossless
		{JPEG2000Lossless, Lossless},            // Lossless Only
		{JPEG2000, MayBeLossy},                  // lossless or lossy
		{HTJ2KLossless, Lossless},               // Lossless Only
		{HTJ2K, MayBeLossy},                     // lossless or lossy
		{"1.2.840.10008.1.2.4.110", Lossless},   // JPEG XL Lossless
		{"1.2.840.10008.1.2.4.111", MayBeLossy}, // JPEG XL JPEG Recompression: a lossy JPEG's bits (8.2.15)
		{"1.2.840.10008.1.2.4.112", MayBeLossy}, // JPEG XL
		{"1.2.840.10008.1.2.4.102", MayBeLossy}, // H.264
		{"1.2.840.10008.1.2.4.94", Referenced},  // JPIP Referenced
		{"1.2.840.10008.1.2.4.205", Referenced}, // JPIP HTJ2K Referenced Deflate
		{"1.2.840.10008.1.2.8.1", Lossless},     // Deflated Image Frame Compression
	}
	for _, tc := range tests {
		ts, ok := LookupTransferSyntax(tc.uid)
		if !ok {
			t.Fatalf("%s unknown", tc.uid)
		}
		if ts.Fidelity != tc.want {
			t.Errorf("%s (%s): %v, want %v", tc.uid, ts.Name, ts.Fidelity, tc.want)
		}
	}
}
