package pipeline_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// dcmtkApart are the fixtures dcm2json (DCMTK 3.6.7) cannot be compared
// on, and why; docs/pipeline.md lists where it and the sidecar differ.
var dcmtkApart = map[string]string{
	"charset-japanese-ir87":   "DCMTK built with iconv does not convert ISO 2022 IR 87",
	"charset-japanese-ir13":   "DCMTK built with iconv does not convert ISO 2022 IR 87",
	"charset-2022-ir13-alone": `dcm2json refuses a Specific Character Set of one ISO 2022 term ("ISO 2022 IR 13" alone: not supported)`,
	"charset-2022-ir87-alone": `dcm2json refuses a Specific Character Set of one ISO 2022 term ("ISO 2022 IR 87" alone: not supported)`,
	"charset-ir13-roman":      "dcm2json keeps an LO of ISO_IR 13 with 0x5C (YEN SIGN) as one value (PS3.18 F.2.4 splits it)",
	"item-charset":            "dcm2json decodes an item by the enclosing data set's character set (PS3.5 7.5 says the item's)",
	"decimal-strings":         `dcm2json writes a DS of "1." as it is, which is not JSON`,
	"implicit-icon-signed":    `dcm2json makes a "US or SS" element SS only by a Pixel Representation read before it in its own item: not (0018,9810)`,
	"implicit-signed-items":   `dcm2json makes a "US or SS" element SS only by a Pixel Representation read before it in its own item: not (0018,9810), nor in a Modality LUT item`,
	"implicit-signed-lut":     `dcm2json makes a LUT descriptor US in Implicit VR whatever the Pixel Representation, its first value mapped then unsigned (PS3.3 C.11.1.1.1: the VR is the second value's)`,
	"explicit-signed-lut":     `dcm2json writes an SS LUT descriptor's number of entries as signed (PS3.3 C.11.1.1.1: always unsigned)`,
	// The retired Gray and Large Palette descriptors are xs in DCMTK's
	// dictionary, as the Palette Color ones are: dcm2json writes them as
	// those, US in Implicit VR, an SS one's count signed (as above);
	// implicit-unsigned-retired-lut is compared.
	"implicit-signed-retired-lut":      `dcm2json makes a retired LUT descriptor US in Implicit VR whatever the Pixel Representation (as implicit-signed-lut)`,
	"explicit-signed-retired-lut":      `dcm2json writes an SS retired LUT descriptor's number of entries as signed (as explicit-signed-lut)`,
	"implicit-voi-lut-rescaled":        `dcm2json makes a LUT Descriptor in an item US in Implicit VR, not by the rescale (PS3.3 C.11.2.1.1: SS where the rescale's output may be negative)`,
	"implicit-voi-lut-frame-rescaled":  `dcm2json makes a LUT Descriptor in an item US in Implicit VR, not by the frame's rescale (as implicit-voi-lut-rescaled)`,
	"implicit-voi-lut-shared-rescaled": `dcm2json makes a LUT Descriptor in an item US in Implicit VR, not by the shared rescale (as implicit-voi-lut-rescaled)`,
	"implicit-voi-lut-modality":        `dcm2json makes a LUT Descriptor in an item US in Implicit VR: the VOI LUT's, as PS3.3 C.11.2.1.1 has it under a Modality LUT, but the Modality LUT's too (C.11.1.1.1: SS with signed pixels)`,
}

// TestDICOMJSONAgreesWithDCMTK compares the DICOM JSON sidecar with
// DCMTK's dcm2json, element by element, on what both must agree on: the
// attributes (File Meta Information and group lengths are in neither),
// their VR, their values (numbers as numbers, person names by group,
// sequences item by item) and whether a binary value is there (dcm2json
// puts every one inline, the sidecar large ones behind a BulkDataURI).
// They differ, by choice, on Specific Character Set (dcm2json writes
// "ISO_IR 192", the sidecar keeps the sender's), on trailing NULs in
// strings (the sidecar drops them), and on a value of empty values only
// (the sidecar writes nulls or no Value, dcm2json either, or NULs).
func TestDICOMJSONAgreesWithDCMTK(t *testing.T) {
	testenv.RequireTools(t, "dcm2json")
	files := testenv.DICOMTestdataFiles(t)
	names := make([]string, 0, len(jsonFixtures))
	for name := range jsonFixtures {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if dcmtkApart[name] == "" {
			readJSONFixture(t, name) // written first with -update
			files = append(files, filepath.Join("testdata", "dicomjson", name+".dcm"))
		}
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			ours := map[string]any{}
			for k, v := range sidecarOf(t, data) {
				ours[k] = decodeJSON(t, v)
			}
			out, err := exec.Command("dcm2json", "-fc", path).Output()
			if err != nil {
				t.Fatalf("dcm2json: %v", err)
			}
			theirs, ok := decodeJSON(t, out).(map[string]any)
			if !ok {
				t.Fatalf("dcm2json wrote %s", out)
			}
			for _, d := range compareDICOMJSON("", ours, theirs) {
				t.Error(d)
			}
		})
	}
}

func decodeJSON(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return v
}

// compareDICOMJSON lists where two DICOM JSON data sets differ on what the
// sidecar and dcm2json must agree on (see TestDICOMJSONAgreesWithDCMTK).
func compareDICOMJSON(at string, ours, theirs map[string]any) []string {
	var diffs []string
	for k := range theirs {
		if _, ok := ours[k]; !ok && !strings.HasPrefix(k, "0002") {
			diffs = append(diffs, fmt.Sprintf("%s%s: only in dcm2json: %v", at, k, theirs[k]))
		}
	}
	for k, o := range ours {
		tv, ok := theirs[k]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s%s: only in the sidecar: %v", at, k, o))
			continue
		}
		oa, _ := o.(map[string]any)
		ta, _ := tv.(map[string]any)
		vr := oa["vr"]
		if vr != ta["vr"] {
			diffs = append(diffs, fmt.Sprintf("%s%s: vr %v, dcm2json %v", at, k, vr, ta["vr"]))
			continue
		}
		if k == "00080005" {
			continue
		}
		oBin := oa["BulkDataURI"] != nil || oa["InlineBinary"] != nil
		tBin := ta["BulkDataURI"] != nil || ta["InlineBinary"] != nil
		if oBin || tBin {
			switch {
			case oBin != tBin:
				diffs = append(diffs, fmt.Sprintf("%s%s: binary value in the sidecar %v, in dcm2json %v", at, k, oBin, tBin))
			case oa["InlineBinary"] != nil && ta["InlineBinary"] != nil && oa["InlineBinary"] != ta["InlineBinary"]:
				diffs = append(diffs, fmt.Sprintf("%s%s: InlineBinary differs", at, k))
			}
			continue
		}
		ov, _ := oa["Value"].([]any)
		tvs, _ := ta["Value"].([]any)
		if empty(ov) && empty(tvs) {
			continue // empty values only: nulls, or none
		}
		if len(ov) != len(tvs) {
			diffs = append(diffs, fmt.Sprintf("%s%s: values %v, dcm2json %v", at, k, ov, tvs))
			continue
		}
		for i := range ov {
			p := fmt.Sprintf("%s%s[%d]", at, k, i)
			if vr == "SQ" {
				om, _ := ov[i].(map[string]any)
				tm, _ := tvs[i].(map[string]any)
				diffs = append(diffs, compareDICOMJSON(p+".", om, tm)...)
			} else if !sameValue(vr, ov[i], tvs[i]) {
				diffs = append(diffs, fmt.Sprintf("%s: %#v, dcm2json %#v", p, ov[i], tvs[i]))
			}
		}
	}
	slices.Sort(diffs)
	return diffs
}

// empty reports whether vals are empty values only: none, nulls, or
// (dcm2json's) strings of NULs.
func empty(vals []any) bool {
	return !slices.ContainsFunc(vals, func(v any) bool {
		s, ok := v.(string)
		return v != nil && (!ok || strings.Trim(s, "\x00") != "")
	})
}

// sameValue compares one value: numbers by value (an FL to float32
// precision), strings without trailing NULs.
func sameValue(vr, o, t any) bool {
	on, oNum := o.(json.Number)
	tn, tNum := t.(json.Number)
	if oNum && tNum {
		of, err1 := on.Float64()
		tf, err2 := tn.Float64()
		if err1 != nil || err2 != nil {
			return on == tn
		}
		return of == tf || (vr == "FL" && math.Abs(of-tf) <= 1e-6*math.Max(math.Abs(of), math.Abs(tf)))
	}
	if ts, ok := t.(string); ok {
		t = strings.TrimRight(ts, "\x00")
	}
	ob, _ := json.Marshal(o)
	tb, _ := json.Marshal(t)
	return bytes.Equal(ob, tb)
}
