package pipeline_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

const (
	study  = "1.2.826.0.1.3680043.10.1"
	series = "1.2.826.0.1.3680043.10.1.1"
	sop1   = "1.2.826.0.1.3680043.10.1.1.1"
	sop2   = "1.2.826.0.1.3680043.10.1.1.2"
	tsELE  = "1.2.840.10008.1.2.1"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func key(sop string) string {
	return "incoming/2026/01/15/" + study + "/" + series + "/" + sop + ".dcm"
}

// add stores data as the SCP would, with matching transaction metadata.
func add(f *pt.Fakes, k string, data []byte, sopUID string) {
	f.Objects.Add(k, data, pt.SCPMetadata(pt.CTStorage, sopUID, tsELE, sha(data)))
}

func ct(sop string) pt.Instance {
	return pt.Instance{StudyUID: study, SeriesUID: series, SOPUID: sop, PatientID: "PID-1", PatientName: "Doe^Jane", Rows: 64, Columns: 64, SourceAE: "MODALITY1"}
}

func codes(fs []pipeline.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, string(f.Severity)+":"+f.Code)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestProcessObjectDicomTestdata(t *testing.T) {
	dir := testenv.DICOMTestdataDir(t)
	tests := []struct {
		file  string
		codes []string
	}{
		{"1.dcm", nil},
		{"2.dcm", nil},
		{"3.dcm", []string{"warning:empty-type2"}}, // empty Patient's Name
		{"4.dcm", nil}, // implicit VR little endian
		{"5.dcm", nil},
		{"6.dcm", []string{"warning:empty-type2"}}, // deflated; empty Patient ID and Study Date
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			f := pt.New()
			k := "incoming/2026/01/15/x/y/" + tt.file
			// Sent by the AE that wrote it, as a PACS sends what it made.
			md := pt.SCPMetadata("", "", "", sha(data))
			if m, err := part10.ReadMeta(bufio.NewReader(bytes.NewReader(data))); err == nil && m.SourceApplicationEntityTitle != "" {
				md[objectstore.MetaCallingAE] = m.SourceApplicationEntityTitle
			}
			f.Objects.Add(k, data, md)
			res, err := f.Pipeline().ProcessObject(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			got := codes(res.Findings)
			if d := cmp.Diff(tt.codes, got); d != "" && !(len(tt.codes) == 0 && len(got) == 0) {
				t.Errorf("findings (-want +got):\n%s\n%+v", d, res.Findings)
			}
			if !res.Valid {
				t.Fatalf("not valid: %+v", res.Findings)
			}
			// Only the header is read: never the whole of a large object.
			if len(data) > 1<<20 && res.BytesRead > 256<<10 {
				t.Errorf("read %d of %d bytes", res.BytesRead, len(data))
			}
			if res.BytesRead != f.Objects.BytesServed {
				t.Errorf("BytesRead %d, store served %d", res.BytesRead, f.Objects.BytesServed)
			}
			info, err := f.Objects.Head(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			jsonKey, sumKey := pipeline.MetadataKeys(info)
			body, _, ok := f.Objects.Get(jsonKey)
			if !ok {
				t.Fatal("no DICOM JSON sidecar")
			}
			var dj map[string]struct {
				VR          string
				Value       []json.RawMessage
				BulkDataURI string
			}
			if err := json.Unmarshal(body, &dj); err != nil {
				t.Fatalf("sidecar is not JSON: %v", err)
			}
			if dj["00080018"].VR != "UI" || len(dj["00080018"].Value) != 1 {
				t.Errorf("SOP Instance UID in sidecar = %+v", dj["00080018"])
			}
			if pd, ok := dj["7FE00010"]; !ok || pd.BulkDataURI == "" || pd.Value != nil {
				t.Errorf("pixel data in sidecar = %+v, want a BulkDataURI only", pd)
			}
			if _, _, ok := f.Objects.Get(sumKey); !ok {
				t.Error("no summary sidecar")
			}
			if n := len(f.Audit.All()); n != 1 {
				t.Errorf("%d audit records", n)
			}
			if ev := f.Events.All(); len(ev) != 1 || ev[0].DetailType != pipeline.DetailTypeInstanceStored {
				t.Errorf("events = %+v", ev)
			}
		})
	}
}

func TestValidationCases(t *testing.T) {
	good := ct(sop1)
	tests := []struct {
		name  string
		data  func() []byte
		meta  func(m map[string]string)
		valid bool
		codes []string
	}{
		{name: "valid", data: good.Build, valid: true},
		// Indexed values past their VR are kept, with a warning.
		{name: "a Patient ID of 3,000 characters", data: func() []byte {
			i := good
			i.PatientID = strings.Repeat("Q", 3000)
			return i.Build()
		}, valid: true, codes: []string{"warning:vr-violation"}},
		{name: "a Modality in no DICOM repertoire", data: func() []byte {
			i := good
			i.Modality = "<b>"
			return i.Build()
		}, valid: true, codes: []string{"warning:vr-violation"}},
		{name: "a name group of 65 characters", data: func() []byte {
			i := good
			i.PatientName = strings.Repeat("A", 65) + "=Doe^Jane"
			return i.Build()
		}, valid: true, codes: []string{"warning:vr-violation"}},
		// A SOP class that stores nothing: the SCP refuses it, the pipeline too.
		{name: "Verification as the SOP class", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.Str(pt.Tag(8, 0x16), "UI", "1.2.840.10008.1.1")}
			return i.Build()
		}, codes: []string{"error:meta-mismatch", "error:not-storage-class", "error:transaction-mismatch"}},
		{name: "missing SOP Instance UID", data: func() []byte {
			i := good
			i.Drop = []uint32{pt.Tag(8, 0x18)}
			return i.Build()
		}, codes: []string{"error:missing-attribute"}},
		{name: "missing study UID", data: func() []byte {
			i := good
			i.Drop = []uint32{pt.Tag(0x20, 0x0D)}
			return i.Build()
		}, codes: []string{"error:missing-attribute"}},
		{name: "missing modality", data: func() []byte {
			i := good
			i.Drop = []uint32{pt.Tag(8, 0x60)}
			return i.Build()
		}, codes: []string{"error:missing-attribute"}},
		{name: "UID with leading zero", data: func() []byte {
			i := good
			i.SeriesUID = "1.2.03.4"
			return i.Build()
		}, codes: []string{"error:uid-syntax"}},
		{name: "UID too long", data: func() []byte {
			i := good
			i.StudyUID = "1." + strings.Repeat("2", 70)
			return i.Build()
		}, codes: []string{"error:uid-syntax"}},
		{name: "UID with letters", data: func() []byte {
			i := good
			i.StudyUID = "1.2.abc"
			return i.Build()
		}, codes: []string{"error:uid-syntax"}},
		{name: "truncated in header", data: func() []byte {
			b := good.Build()
			return b[:400]
		}, codes: []string{"error:truncated"}},
		{name: "pixel data ending past the object is truncated", data: func() []byte {
			b := good.Build()
			return b[:len(b)-100]
		}, codes: []string{"error:truncated"}},
		{name: "pixel data shorter than rows and columns need", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.Raw(pt.Tag(0x7FE0, 0x10), "OW", make([]byte, 64*64*2-2))}
			return i.Build()
		}, codes: []string{"error:pixel-data-length"}},
		{name: "pixel data longer than rows and columns need", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.Raw(pt.Tag(0x7FE0, 0x10), "OW", make([]byte, 64*64*2+2))}
			return i.Build()
		}, valid: true, codes: []string{"warning:pixel-data-length"}},
		{name: "multi-frame RGB pixel data", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.U16(pt.Tag(0x28, 0x02), 3), pt.Str(pt.Tag(0x28, 0x08), "IS", "3"), pt.U16(pt.Tag(0x28, 0x100), 8),
				pt.Raw(pt.Tag(0x7FE0, 0x10), "OB", make([]byte, 64*64*3*3))}
			return i.Build()
		}, valid: true},
		{name: "no rows: no layout holds the pixel data", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.U16(pt.Tag(0x28, 0x10), 0), pt.Str(pt.Tag(0x28, 0x08), "IS", "4000000000"),
				pt.Raw(pt.Tag(0x7FE0, 0x10), "OW", nil)}
			return i.Build()
		}, codes: []string{"error:pixel-data-length"}},
		{name: "no samples per pixel", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.U16(pt.Tag(0x28, 0x02), 0), pt.Raw(pt.Tag(0x7FE0, 0x10), "OW", make([]byte, 64*64*2))}
			return i.Build()
		}, codes: []string{"error:pixel-data-length"}},
		{name: "a frame count past 32 bits", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.Str(pt.Tag(0x28, 0x08), "IS", "8589934593"), pt.Raw(pt.Tag(0x7FE0, 0x10), "OW", make([]byte, 64*64*2))}
			return i.Build()
		}, codes: []string{"error:pixel-data-length"}},
		{name: "multi-frame pixel data missing a frame", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.Str(pt.Tag(0x28, 0x08), "IS", "3"), pt.Raw(pt.Tag(0x7FE0, 0x10), "OW", make([]byte, 64*64*2*2))}
			return i.Build()
		}, codes: []string{"error:pixel-data-length"}},
		{name: "1-bit frames packed, odd length padded", data: func() []byte {
			// 5×5×3 bits = 75 bits: 10 bytes (odd 9.375 rounded up, then even).
			i := good
			i.Extra = []pt.Elem{pt.U16(pt.Tag(0x28, 0x10), 5), pt.U16(pt.Tag(0x28, 0x11), 5), pt.U16(pt.Tag(0x28, 0x100), 1),
				pt.Str(pt.Tag(0x28, 0x08), "IS", "3"), pt.Raw(pt.Tag(0x7FE0, 0x10), "OB", make([]byte, 10))}
			return i.Build()
		}, valid: true},
		{name: "8-bit odd pixel count with its pad byte", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.U16(pt.Tag(0x28, 0x10), 3), pt.U16(pt.Tag(0x28, 0x11), 3), pt.U16(pt.Tag(0x28, 0x100), 8),
				pt.Raw(pt.Tag(0x7FE0, 0x10), "OB", make([]byte, 10))}
			return i.Build()
		}, valid: true},
		{name: "YBR_FULL_422 holds two samples per pixel", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.U16(pt.Tag(0x28, 0x02), 3), pt.Str(pt.Tag(0x28, 0x04), "CS", "YBR_FULL_422"), pt.U16(pt.Tag(0x28, 0x100), 8),
				pt.Raw(pt.Tag(0x7FE0, 0x10), "OB", make([]byte, 64*64*2))}
			return i.Build()
		}, valid: true},
		{name: "not part 10", data: func() []byte { return []byte("hello, this is not DICOM at all") }, codes: []string{"error:not-part10"}},
		{name: "unknown charset", data: func() []byte {
			i := good
			i.CharacterSet = "ISO_IR 999"
			return i.Build()
		}, codes: []string{"error:charset-unknown"}},
		// A faulty sender's value of another element where a code is
		// expected: the finding names the element, not the value.
		{name: "a charset value that is no term", data: func() []byte {
			i := good
			i.CharacterSet = "Doe^Jane"
			return i.Build()
		}, codes: []string{"error:charset-unknown"}},
		// Upper case letters, digits and spaces are a code's repertoire, and
		// many a name or patient ID's too: only a defined term's form is quoted.
		{name: "a charset value in a code's repertoire that is no term", data: func() []byte {
			i := good
			i.CharacterSet = "DOE JANE"
			return i.Build()
		}, codes: []string{"error:charset-unknown"}},
		// The mismatch names the declared set only where it has the form
		// of defined terms, as the unknown-set finding does.
		{name: "text beside a charset value in a code's repertoire that is no term", data: func() []byte {
			i := good
			i.CharacterSet = "DOE JANE"
			i.PatientName = "M\xfcller^Hans"
			return i.Build()
		}, codes: []string{"error:charset-unknown", "warning:charset-mismatch"}},
		// PS3.5 7.5: an item's own Specific Character Set is as unknown as
		// the data set's would be.
		{name: "unknown charset of an item", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.Seq(pt.Tag(0x40, 0xA730), true, []pt.Elem{pt.Str(pt.Tag(8, 5), "CS", "ISO_IR 999")})}
			return i.Build()
		}, codes: []string{"error:charset-unknown"}},
		{name: "an item's charset value that is no term", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.Seq(pt.Tag(0x40, 0xA730), true, []pt.Elem{pt.Str(pt.Tag(8, 5), "CS", "DOE JANE")})}
			return i.Build()
		}, codes: []string{"error:charset-unknown"}},
		{name: "a Number of Frames that is no number", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.Str(pt.Tag(0x28, 0x08), "IS", "Doe^Jane"), pt.Raw(pt.Tag(0x7FE0, 0x10), "OW", make([]byte, 64*64*2))}
			return i.Build()
		}, codes: []string{"error:pixel-data-length"}},
		{name: "wrong charset: latin-1 bytes declared UTF-8", data: func() []byte {
			i := good
			i.CharacterSet = "ISO_IR 192"
			i.PatientName = "M\xfcller^J\xfcrgen"
			return i.Build()
		}, valid: true, codes: []string{"warning:charset-mismatch"}},
		{name: "non-ASCII without declared charset", data: func() []byte {
			i := good
			i.PatientName = "M\xfcller^Hans"
			return i.Build()
		}, valid: true, codes: []string{"warning:charset-mismatch"}},
		// ISO_IR 13 is JIS X 0201 alone (PS3.3 Table C.12-2): a kanji's
		// Shift_JIS bytes (山田, 8E52 9363) do not fit it.
		{name: "kanji bytes declared ISO_IR 13", data: func() []byte {
			i := good
			i.CharacterSet = "ISO_IR 13"
			i.PatientName = "\x8e\x52\x93\x63^\xc0\xdb\xb3"
			return i.Build()
		}, valid: true, codes: []string{"warning:charset-mismatch"}},
		// PS3.5 6.1.2.5.3: value 1's sets again at ^ and = of a PN, also
		// where the sender did not switch back to them.
		{name: "kanji not switched back before ^", data: func() []byte {
			i := good
			i.CharacterSet = `\ISO 2022 IR 87`
			i.PatientName = "Yamada^Tarou=\x1b$B;3ED^\x1b$BB@O:"
			return i.Build()
		}, valid: true},
		{name: "KS X 1001 not designated again after ^", data: func() []byte {
			i := good
			i.CharacterSet = `\ISO 2022 IR 149`
			i.PatientName = "Hong^Gildong=\x1b$)C\xfb\xf3^\xd1\xce"
			return i.Build()
		}, valid: true, codes: []string{"warning:charset-mismatch"}},
		{name: "a byte the declared set has no character for", data: func() []byte {
			i := good
			i.CharacterSet = "ISO_IR 127"
			i.PatientName = "a\xa1"
			return i.Build()
		}, valid: true, codes: []string{"warning:charset-mismatch"}},
		{name: "katakana declared ISO_IR 13", data: func() []byte {
			i := good
			i.CharacterSet = "ISO_IR 13"
			i.PatientName = "\xd4\xcf\xc0\xde^\xc0\xdb\xb3"
			return i.Build()
		}, valid: true},
		{name: "SOP Instance UID differs from transaction", data: good.Build, meta: func(m map[string]string) {
			m["sop-instance-uid"] = sop2
		}, codes: []string{"error:transaction-mismatch"}},
		{name: "transfer syntax differs from transaction", data: good.Build, meta: func(m map[string]string) {
			m["transfer-syntax-uid"] = "1.2.840.10008.1.2"
		}, codes: []string{"error:transaction-mismatch"}},
		{name: "source AE differs from calling AE", data: good.Build, meta: func(m map[string]string) {
			m["calling-ae"] = "OTHER"
		}, valid: true, codes: []string{"warning:source-ae-mismatch"}},
		{name: "written as the SCP writes: source AE ours, sending AE the calling AE", data: func() []byte {
			i := good
			i.SourceAE, i.SendingAE, i.ReceivingAE = "INGEST", "MODALITY1", "INGEST"
			return i.Build()
		}, valid: true},
		{name: "sending AE differs from calling AE", data: func() []byte {
			i := good
			i.SourceAE, i.SendingAE, i.ReceivingAE = "INGEST", "OTHER", "INGEST"
			return i.Build()
		}, valid: true, codes: []string{"warning:source-ae-mismatch"}},
		{name: "no record of the C-STORE", data: good.Build, meta: func(m map[string]string) {
			delete(m, objectstore.MetaAssociationID)
			delete(m, objectstore.MetaCallingAE)
			delete(m, objectstore.MetaReceivedAt)
		}, valid: true, codes: []string{"warning:unknown-provenance"}},
		{name: "received time not a time", data: good.Build, meta: func(m map[string]string) {
			m[objectstore.MetaReceivedAt] = "yesterday"
		}, valid: true, codes: []string{"warning:unknown-provenance"}},
		{name: "record rebuilt by local mode's recovery", data: good.Build, meta: func(m map[string]string) {
			delete(m, objectstore.MetaAssociationID)
			m[objectstore.MetaRecovered] = "true"
		}, valid: true, codes: []string{"warning:unknown-provenance"}},
		{name: "meta SOP instance differs from dataset", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.Str(pt.Tag(8, 0x18), "UI", sop2)}
			return i.Build()
		}, meta: func(m map[string]string) { delete(m, "sop-instance-uid") }, codes: []string{"error:meta-mismatch"}},
		{name: "empty patient id is a finding, not a rejection", data: func() []byte {
			i := good
			i.PatientID = ""
			return i.Build()
		}, valid: true, codes: []string{"warning:empty-type2"}},
		{name: "bad VR", data: func() []byte {
			i := good
			i.Extra = []pt.Elem{pt.Raw(pt.Tag(0x18, 0x60), "k1", []byte("12"))}
			return i.Build()
		}, codes: []string{"error:malformed"}},
		{name: "bad study date", data: func() []byte {
			i := good
			i.StudyDate = "2026-1-5"
			return i.Build()
		}, valid: true, codes: []string{"warning:bad-date"}},
		{name: "implicit VR little endian", data: func() []byte {
			i := good
			i.TransferSyntaxUID = "1.2.840.10008.1.2"
			return i.Build()
		}, meta: func(m map[string]string) { m["transfer-syntax-uid"] = "1.2.840.10008.1.2" }, valid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := pt.New()
			data := tt.data()
			m := pt.SCPMetadata(pt.CTStorage, sop1, tsELE, sha(data))
			if tt.meta != nil {
				tt.meta(m)
			}
			k := key(sop1)
			f.Objects.Add(k, data, m)
			res, err := f.Pipeline().ProcessObject(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			if res.Valid != tt.valid {
				t.Errorf("valid = %v, want %v (%+v)", res.Valid, tt.valid, res.Findings)
			}
			if d := cmp.Diff(tt.codes, codes(res.Findings)); d != "" {
				t.Errorf("findings (-want +got):\n%s%+v", d, res.Findings)
			}
			for _, fd := range res.Findings {
				if strings.Contains(fd.Message, "Doe") || strings.Contains(strings.ToUpper(fd.Message), "JANE") || strings.Contains(fd.Message, "PID-1") {
					t.Errorf("finding leaks patient data: %+v", fd)
				}
			}
		})
	}
}

// TestCharsetMismatchNamesItsSet: a charset-mismatch finding names the
// character set the text was decoded by, an item's own where it has one
// (PS3.5 7.5), once for each set a tag's text did not fit.
func TestCharsetMismatchNamesItsSet(t *testing.T) {
	name := pt.Tag(0x40, 0xA123)
	item := func(cs, pn string) []pt.Elem {
		var els []pt.Elem
		if cs != "" {
			els = append(els, pt.Str(pt.Tag(8, 5), "CS", cs))
		}
		return append(els, pt.Str(name, "PN", pn))
	}
	tests := []struct {
		name    string
		charset string
		items   [][]pt.Elem
		want    []string
	}{
		{"an item's own set", "ISO_IR 100", [][]pt.Elem{item("ISO_IR 192", "J\xe9r\xf4me")},
			[]string{`(0040,A123) text does not fit the declared character set "ISO_IR 192"`}},
		{"the data set's, in an item without one", "ISO_IR 192", [][]pt.Elem{item("", "J\xe9r\xf4me")},
			[]string{`(0040,A123) text does not fit the declared character set "ISO_IR 192"`}},
		{"each set once", "ISO_IR 192", [][]pt.Elem{item("", "J\xe9r"), item("", "\xf4me"), item("ISO_IR 6", "J\xe9r\xf4me")},
			[]string{
				`(0040,A123) text does not fit the declared character set "ISO_IR 192"`,
				`(0040,A123) text does not fit the declared character set "ISO_IR 6"`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := ct(sop1)
			i.CharacterSet = tt.charset
			i.Extra = []pt.Elem{pt.Seq(pt.Tag(0x40, 0xA730), true, tt.items...)}
			data := i.Build()
			f := pt.New()
			k := key(sop1)
			f.Objects.Add(k, data, pt.SCPMetadata(pt.CTStorage, sop1, tsELE, sha(data)))
			res, err := f.Pipeline().ProcessObject(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, fd := range res.Findings {
				if fd.Code == pipeline.CodeCharsetMismatch {
					got = append(got, fd.Tag+" "+fd.Message)
				}
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("charset-mismatch findings (-want +got):\n%s", d)
			}
		})
	}
}

// TestTagOrder: an object whose elements are out of tag order (PS3.5
// §7.1) but none repeated, as the SCP stores it, is kept and indexed with
// the tag-order warning, at any level, its values found wherever they were
// placed (the SOP Instance and Study UIDs after the series UID, an item's
// elements reversed), and its DICOM JSON keyed in ascending order as
// PS3.18 F.2 writes it; one with an element repeated is malformed.
func TestTagOrder(t *testing.T) {
	ref := func(first, second pt.Elem) pt.Elem {
		return pt.Seq(pt.Tag(8, 0x1140), true, []pt.Elem{first, second})
	}
	class, inst := pt.Str(pt.Tag(8, 0x1150), "UI", pt.CTStorage), pt.Str(pt.Tag(8, 0x1155), "UI", "1.2.3.4.5")
	tests := []struct {
		name   string
		late   []uint32
		meta   []uint16 // group 0002 elements written late
		extra  []pt.Elem
		valid  bool
		codes  []string
		reason string // the finding's message
	}{
		{"UIDs after the series UID", []uint32{pt.Tag(8, 0x18), pt.Tag(0x20, 0x0D)}, nil, nil, true, []string{"warning:tag-order"},
			"elements not in ascending tag order: (0008,0018) after (0028,0100)"},
		{"an item's elements reversed", nil, nil, []pt.Elem{ref(inst, class)}, true, []string{"warning:tag-order"},
			"elements not in ascending tag order: (0008,1150) after (0008,1155)"},
		// The File Meta group by the same rule, before the data set's.
		{"File Meta out of order", nil, []uint16{0x02}, nil, true, []string{"warning:tag-order"},
			"elements not in ascending tag order: (0002,0002) after (0002,0016)"},
		{"File Meta and data set out of order", []uint32{pt.Tag(8, 0x18)}, []uint16{0x10}, nil, true, []string{"warning:tag-order"},
			"elements not in ascending tag order: (0002,0010) after (0002,0016)"},
		{"repeated in an item", nil, nil, []pt.Elem{ref(class, class)}, false, []string{"error:malformed"},
			"malformed repeated element: tag (0008,1150)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := pt.New()
			in := ct(sop1)
			in.Late, in.LateMeta, in.Extra = tt.late, tt.meta, tt.extra
			data := in.Build()
			k := key(sop1)
			add(f, k, data, sop1)
			res, err := f.Pipeline().ProcessObject(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			if res.Valid != tt.valid || !slices.Equal(codes(res.Findings), tt.codes) || !strings.Contains(res.Findings[0].Message, tt.reason) {
				t.Fatalf("valid %v, findings %+v; want valid %v, %v saying %q", res.Valid, res.Findings, tt.valid, tt.codes, tt.reason)
			}
			if !tt.valid {
				return
			}
			if res.Outcome != pipeline.InstanceNew {
				t.Errorf("outcome %v", res.Outcome)
			}
			body := sidecarBody(t, f, k)
			var dj map[string]struct{ Value []json.RawMessage }
			if err := json.Unmarshal(body, &dj); err != nil {
				t.Fatal(err)
			}
			for tag, want := range map[string]string{"00080018": sop1, "0020000D": in.StudyUID} {
				if v := dj[tag].Value; len(v) != 1 || string(v[0]) != strconv.Quote(want) {
					t.Errorf("%s in the sidecar = %s, want %q", tag, v, want)
				}
			}
			if v := dj["00081140"].Value; len(v) != 1 || !strings.Contains(string(v[0]), `"00081150"`) || !strings.Contains(string(v[0]), `"00081155"`) {
				t.Errorf("(0008,1140) in the sidecar = %s", v)
			}
			// Keyed in ascending order, at every level, whatever the order read.
			var keys []string
			for _, m := range regexp.MustCompile(`"([0-9A-F]{8})":`).FindAllSubmatch(body, -1) {
				keys = append(keys, string(m[1]))
			}
			top := slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return k == "00081150" || k == "00081155" })
			if !slices.IsSorted(top) || slices.Index(keys, "00081150") > slices.Index(keys, "00081155") {
				t.Errorf("sidecar keys out of order: %v", keys)
			}
		})
	}
}

// invalidStored is a store holding one CT object the pipeline finds
// invalid (no Series Instance UID), and its key.
func invalidStored() (*pt.Fakes, string) {
	f := pt.New()
	bad := ct(sop1)
	bad.Drop = []uint32{pt.Tag(0x20, 0x0E)}
	k := key(sop1)
	add(f, k, bad.Build(), sop1)
	return f, k
}

// quarantineKeys names the quarantine copy and findings of the object k
// holds now (pipeline.QuarantineKeys).
func quarantineKeys(t *testing.T, f *pt.Fakes, k string) (object, findings string) {
	t.Helper()
	info, err := f.Objects.Head(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	return pipeline.QuarantineKeys(info)
}

// overwriteBeforeCopy is a store whose object at key is replaced by newer
// (as any caller that may s3:PutObject can) just before the pipeline's
// quarantine copy of it.
type overwriteBeforeCopy struct {
	*pt.Objects
	key   string
	newer []byte
}

func (o overwriteBeforeCopy) Copy(ctx context.Context, src pipeline.ObjectInfo, dst string, md map[string]string) error {
	if src.Key == o.key {
		o.Add(o.key, o.newer, pt.SCPMetadata(pt.CTStorage, sop1, tsELE, sha(o.newer)))
	}
	return o.Objects.Copy(ctx, src, dst, md)
}

// TestQuarantineCopiesTheVersionRead: an object replaced after validation
// read it and found it invalid, before its quarantine copy, is not copied:
// the copy is pinned to the version read (its Head's ETag), and its
// processing fails with ErrObjectChanged, nothing quarantined, audited or
// announced, and no findings document left (written before the copy, the
// old version's stayed in quarantine/ with no copy beside it; unpinned,
// the new version's bytes went into quarantine/ under the old one's
// findings). Processed again, as its message is
// redelivered, the new version is read, stored and announced.
func TestQuarantineCopiesTheVersionRead(t *testing.T) {
	f, k := invalidStored()
	qKey, fKey := quarantineKeys(t, f, k) // the version read's
	p := f.Pipeline()
	p.Writer = overwriteBeforeCopy{Objects: f.Objects, key: k, newer: ct(sop1).Build()}
	ctx := context.Background()
	if _, err := p.ProcessObject(ctx, k); !errors.Is(err, pipeline.ErrObjectChanged) {
		t.Fatalf("object replaced before its quarantine copy: %v, want ErrObjectChanged", err)
	}
	if _, _, ok := f.Objects.Get(qKey); ok {
		t.Error("the new version copied into quarantine/ as the old one")
	}
	if _, _, ok := f.Objects.Get(fKey); ok {
		t.Error("the old version's findings document left in quarantine/, describing content not there")
	}
	if recs, ev := f.Audit.All(), f.Events.All(); len(recs) != 0 || len(ev) != 0 {
		t.Errorf("audited %+v, announced %+v; want nothing", recs, ev)
	}
	p.Writer = f.Objects
	res, err := p.ProcessObject(ctx, k)
	if err != nil || !res.Valid || res.Outcome != pipeline.InstanceNew {
		t.Fatalf("processed again: %+v, %v; want the new version stored", res, err)
	}
	for _, k := range []string{qKey, fKey} {
		if _, _, ok := f.Objects.Get(k); ok {
			t.Errorf("%s after the valid version was processed", k)
		}
	}
	if ev := f.Events.All(); len(ev) != 1 || ev[0].DetailType != pipeline.DetailTypeInstanceStored {
		t.Errorf("events %+v, want the new version's Instance Stored", ev)
	}
}

// failFindingsOnce is a store whose first put of the findings document at
// key fails, as a crash or a refused write between the quarantine copy
// and the findings leaves it.
type failFindingsOnce struct {
	*pt.Objects
	key    string
	failed *bool
}

func (o failFindingsOnce) Put(ctx context.Context, key string, body []byte, contentType string, md map[string]string) error {
	if key == o.key && !*o.failed {
		*o.failed = true
		return errors.New("put refused")
	}
	return o.Objects.Put(ctx, key, body, contentType, md)
}

// TestQuarantineFindingsRetried: the findings document is written after
// the quarantine copy, so a processing stopped between the two (its put
// failed, or the process ended) leaves the copy without findings, and
// nothing audited or announced. The message is retried: the retry copies
// again (the same bytes, pinned to the same version) and writes the
// findings, then audits and announces the rejection once.
func TestQuarantineFindingsRetried(t *testing.T) {
	f, k := invalidStored()
	qKey, fKey := quarantineKeys(t, f, k)
	var failed bool
	p := f.Pipeline()
	p.Writer = failFindingsOnce{Objects: f.Objects, key: fKey, failed: &failed}
	ctx := context.Background()
	if _, err := p.ProcessObject(ctx, k); err == nil {
		t.Fatal("the findings' put failed, and the processing did not")
	}
	if _, _, ok := f.Objects.Get(qKey); !ok {
		t.Error("no quarantine copy: the copy comes before the findings")
	}
	if _, _, ok := f.Objects.Get(fKey); ok {
		t.Error("a findings document, though its put failed")
	}
	if recs, ev := f.Audit.All(), f.Events.All(); len(recs) != 0 || len(ev) != 0 {
		t.Errorf("audited %d, announced %d before the findings were written; want nothing", len(recs), len(ev))
	}
	res, err := p.ProcessObject(ctx, k)
	if err != nil || res.Valid || res.QuarantineKey != qKey {
		t.Fatalf("retried: %+v, %v; want the object quarantined", res, err)
	}
	if _, _, ok := f.Objects.Get(fKey); !ok {
		t.Error("the retry wrote no findings document")
	}
	if recs, ev := f.Audit.All(), f.Events.All(); len(recs) != 1 || len(ev) != 1 || ev[0].DetailType != pipeline.DetailTypeInstanceRejected {
		t.Errorf("audited %d, announced %v; want one record and one Instance Rejected", len(recs), ev)
	}
}

func TestRejectQuarantines(t *testing.T) {
	f := pt.New()
	i := ct(sop1)
	i.StudyUID = "1.2.03"
	data := i.Build()
	k := key(sop1)
	add(f, k, data, sop1)
	p := f.Pipeline()
	res, err := p.ProcessObject(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	qKey, fKey := quarantineKeys(t, f, k)
	if res.Valid || res.QuarantineKey != qKey {
		t.Fatalf("result = %+v", res)
	}
	q, qm, ok := f.Objects.Get(qKey)
	if !ok || string(q) != string(data) || qm["quarantined"] != "true" || qm["calling-ae"] != "MODALITY1" {
		t.Errorf("quarantine copy missing or different (meta %v)", qm)
	}
	if raw, _, ok := f.Objects.Get(k); !ok || string(raw) != string(data) {
		t.Error("raw object was modified or deleted")
	}
	body, _, ok := f.Objects.Get(fKey)
	if !ok {
		t.Fatal("no findings document")
	}
	var doc struct {
		Findings []pipeline.Finding
	}
	if err := json.Unmarshal(body, &doc); err != nil || len(doc.Findings) == 0 || doc.Findings[0].Code != pipeline.CodeUIDSyntax {
		t.Errorf("findings doc = %s (%v)", body, err)
	}
	recs := f.Audit.All()
	if len(recs) != 1 || recs[0].Outcome != "rejected" || recs[0].EventOutcome != 4 || recs[0].EventID.Code != "110104" {
		t.Fatalf("audit = %+v", recs)
	}
	// The record says where the quarantined copy is, not only where the
	// SCP stored the object (it named only the object's key, which an
	// officer took for the quarantined copy's).
	if recs[0].QuarantineKey != qKey || recs[0].ObjectKey != k {
		t.Errorf("rejected record: quarantine key %q, object key %q; want %q and %q", recs[0].QuarantineKey, recs[0].ObjectKey, qKey, k)
	}
	// The findings document names the content identity as the records do.
	var named map[string]any
	if err := json.Unmarshal(body, &named); err != nil || named[pipeline.ContentIdentityField] == nil || named[pipeline.LegacyContentIdentityField] != nil {
		t.Errorf("findings doc names the content identity other than %q: %s", pipeline.ContentIdentityField, body)
	}
	ev := f.Events.All()
	if len(ev) != 1 || ev[0].DetailType != pipeline.DetailTypeInstanceRejected {
		t.Fatalf("events = %+v", ev)
	}
	if strings.Contains(string(ev[0].Detail), "PID-1") || strings.Contains(string(ev[0].Detail), "Doe") {
		t.Errorf("rejected event carries patient data: %s", ev[0].Detail)
	}
	if _, err := f.Index.GetStudy(context.Background(), i.StudyUID); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("rejected object was indexed: %v", err)
	}
	// Again: same state.
	if _, err := p.ProcessObject(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	if len(f.Audit.All()) != 1 || len(f.Events.All()) != 1 {
		t.Errorf("second run added records or events")
	}
}

// TestDeflatedBombRejected: a deflated object stored before the SCP's
// inflate rule (or written to the store by other means) is read under
// the same rule, at most dataset.InflateAllowance plus
// dataset.MaxInflateRatio bytes per stored byte: a blank value inflating
// past that is an over-limit finding and the object is quarantined; one
// within it is read whole. Before, the header reader built its own
// inflater and inflated every byte (1 GiB per MiB stored at worst) and
// found the object valid. The blank value is streamed into the
// deflater, so the bomb costs the test its compressed bytes; BestSpeed
// deflates zeros about 824 times, so past the allowance by an eighth is
// past the rule.
func TestDeflatedBombRejected(t *testing.T) {
	const tsDeflated = "1.2.840.10008.1.2.1.99"
	tests := []struct {
		name  string
		blank uint32
		valid bool
	}{
		{"within the allowance", dataset.InflateAllowance, true},
		{"past the allowance and the ratio", dataset.InflateAllowance * 5 / 4, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := pt.New()
			i := ct(sop1)
			i.TransferSyntaxUID = tsDeflated
			i.Extra = []pt.Elem{{Tag: pt.Tag(0x0009, 0x1010), VR: "OB"}, pt.Str(pt.Tag(0x0009, 0x0010), "LO", "BOMB")}
			data := pt.DeflatedBlank(i.Build(), pt.Tag(0x0009, 0x1010), tt.blank)
			k := key(sop1)
			f.Objects.Add(k, data, pt.SCPMetadata(pt.CTStorage, sop1, tsDeflated, sha(data)))
			res, err := f.Pipeline().ProcessObject(context.Background(), k)
			if err != nil {
				t.Fatal(err)
			}
			if res.Valid != tt.valid {
				t.Fatalf("valid = %v, want %v (%+v)", res.Valid, tt.valid, res.Findings)
			}
			if tt.valid {
				return
			}
			if !slices.Contains(codes(res.Findings), "error:"+pipeline.CodeOverLimit) {
				t.Errorf("findings %+v, want %s", res.Findings, pipeline.CodeOverLimit)
			}
			if qKey, _ := quarantineKeys(t, f, k); res.QuarantineKey != qKey {
				t.Errorf("quarantine key %q, want %q", res.QuarantineKey, qKey)
			}
		})
	}
}

// runState is everything a run leaves behind, for idempotency comparisons.
type runState struct {
	Keys    []string
	Audit   []pipeline.AuditRecord
	Studies []pipeline.StudySummary
	Events  []string
}

func state(t *testing.T, f *pt.Fakes) runState {
	t.Helper()
	studies := f.Index.Studies()
	var ids []string
	for _, e := range f.Events.All() {
		ids = append(ids, e.DetailType+"/"+e.ID)
	}
	return runState{f.Objects.Keys(), f.Audit.All(), studies, ids}
}

func TestIdempotentTwice(t *testing.T) {
	ctx := context.Background()
	f := pt.New()
	data := ct(sop1).Build()
	add(f, key(sop1), data, sop1)
	rec, _ := associationaudit.Marshal(associationaudit.Record{Event: associationaudit.EventAccepted, Time: time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC), AssociationID: "assoc1", CallingAE: "MODALITY1", CalledAE: "INGEST", PeerAddr: "10.1.2.3:40000", Seq: 1})
	f.Objects.Add("audit/2026/01/15/assoc1-000001-association-accepted.json", rec, nil)
	p := f.Pipeline()
	now := time.Date(2026, 1, 15, 10, 30, 0, 0, time.UTC)
	// Indexed as soon as received, so the quiet period runs from receipt.
	p.Now = func() time.Time { return time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC) }
	run := func() {
		if _, err := p.ProcessObject(ctx, key(sop1)); err != nil {
			t.Fatal(err)
		}
		if err := p.ProcessAuditRecord(ctx, "audit/2026/01/15/assoc1-000001-association-accepted.json"); err != nil {
			t.Fatal(err)
		}
		if _, err := p.AnnounceStableStudies(ctx, now); err != nil {
			t.Fatal(err)
		}
	}
	run()
	first := state(t, f)
	run()
	if d := cmp.Diff(first, state(t, f)); d != "" {
		t.Errorf("second run changed state (-first +second):\n%s", d)
	}
	if n := len(f.Events.All()); n != 2 { // Instance Stored + Study Received
		t.Errorf("%d events, want 2", n)
	}
	// An identical resend stored under another key (another day) is the
	// same content: no new count or event, the instance row as it was,
	// but a transfer of its own: a duplicate record naming who sent it
	// over which association, once however often it is redelivered.
	before, err := f.Index.Instances(ctx, sop1)
	if err != nil {
		t.Fatal(err)
	}
	other := strings.Replace(key(sop1), "2026/01/15", "2026/01/16", 1)
	md := pt.SCPMetadata(pt.CTStorage, sop1, tsELE, sha(data))
	md["association-id"], md["calling-ae"], md["received-at"] = "assoc9", "PACS2", "2026-01-16T08:00:00Z"
	f.Objects.Add(other, data, md)
	for range 2 {
		res, err := p.ProcessObject(ctx, other)
		if err != nil || res.Outcome != pipeline.InstanceDuplicate {
			t.Fatalf("resend: %+v %v", res, err)
		}
	}
	got := state(t, f)
	if len(got.Audit) != 3 || len(got.Events) != 2 || got.Studies[0].InstanceCount != 1 || got.Studies[0].Revision != 1 {
		t.Errorf("after identical resend: %d audit, %d events, %d instances, revision %d", len(got.Audit), len(got.Events),
			got.Studies[0].InstanceCount, got.Studies[0].Revision)
	}
	// The study was sent again, and says when; it was received (new
	// content) when it was.
	if s := got.Studies[0]; !s.LastSent.Equal(time.Date(2026, 1, 16, 8, 0, 0, 0, time.UTC)) || !s.LastReceived.Equal(first.Studies[0].LastReceived) {
		t.Errorf("after identical resend: last sent %v, last received %v", s.LastSent, s.LastReceived)
	}
	after, err := f.Index.Instances(ctx, sop1)
	if err != nil || !cmp.Equal(before, after) {
		t.Errorf("the resend changed the instance row: %v\n%+v\n%+v", err, before, after)
	}
	page, err := f.Audit.Query(ctx, pipeline.AuditQuery{SOPInstanceUID: sop1})
	if err != nil || len(page.Records) != 2 {
		t.Fatalf("records of the instance: %v, %+v", err, page.Records)
	}
	dup, stored := page.Records[0], page.Records[1]
	if stored.Outcome != pipeline.OutcomeStored || dup.Outcome != pipeline.OutcomeDuplicate || dup.EventID.Code != "110104" ||
		dup.EventOutcome != 0 || dup.AssociationID != "assoc9" || dup.CallingAE != "PACS2" || dup.ObjectKey != other ||
		!dup.Time.Equal(time.Date(2026, 1, 16, 8, 0, 0, 0, time.UTC)) || dup.PatientID != "PID-1" || dup.ContentIdentity != stored.ContentIdentity ||
		dup.ID == stored.ID || strings.Contains(dup.Reason, sop1) {
		t.Errorf("resend's record %+v\nfirst's %+v", dup, stored)
	}
}

// The publish ledger is read only for a content the index had counted
// already: a redelivery, or a retry after the event failed to go out.
func TestPublishLedgerReads(t *testing.T) {
	ctx := context.Background()
	f := pt.New()
	add(f, key(sop1), ct(sop1).Build(), sop1)
	add(f, key(sop2), ct(sop2).Build(), sop2)
	p := f.Pipeline()
	steps := []struct {
		name        string
		key         string
		eventsDown  bool
		wantErr     bool
		wantOutcome pipeline.UpsertOutcome
		wantReads   int // ledger reads so far
		wantEvents  int // events published so far
	}{
		{"new content", key(sop1), false, false, pipeline.InstanceNew, 0, 1},
		{"redelivery", key(sop1), false, false, pipeline.InstanceDuplicate, 1, 1},
		{"new content, events down", key(sop2), true, true, 0, 1, 1},
		{"its retry", key(sop2), false, false, pipeline.InstanceDuplicate, 2, 2},
		{"its redelivery", key(sop2), false, false, pipeline.InstanceDuplicate, 3, 2},
	}
	for _, s := range steps {
		f.Events.Err = nil
		if s.eventsDown {
			f.Events.Err = errors.New("eventbridge down")
		}
		res, err := p.ProcessObject(ctx, s.key)
		if (err != nil) != s.wantErr || (!s.wantErr && res.Outcome != s.wantOutcome) {
			t.Fatalf("%s: %v, %v", s.name, res.Outcome, err)
		}
		if n := f.Index.LedgerReads(); n != s.wantReads {
			t.Errorf("%s: %d ledger reads, want %d", s.name, n, s.wantReads)
		}
		if n := len(f.Events.All()); n != s.wantEvents {
			t.Errorf("%s: %d events, want %d", s.name, n, s.wantEvents)
		}
	}
}

func TestConflictingResend(t *testing.T) {
	ctx := context.Background()
	f := pt.New()
	p := f.Pipeline()
	add(f, key(sop1), ct(sop1).Build(), sop1)
	if _, err := p.ProcessObject(ctx, key(sop1)); err != nil {
		t.Fatal(err)
	}
	changed := ct(sop1)
	changed.PatientName = "Doe^John"
	data := changed.Build()
	ck := strings.TrimSuffix(key(sop1), ".dcm") + ".conflict-" + sha(data)[:16] + ".dcm"
	m := pt.SCPMetadata(pt.CTStorage, sop1, tsELE, sha(data))
	m["conflict"] = "true"
	f.Objects.Add(ck, data, m)
	res, err := p.ProcessObject(ctx, ck)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != pipeline.InstanceConflict {
		t.Errorf("outcome %v, want conflict", res.Outcome)
	}
	st, err := f.Index.GetStudy(ctx, study)
	if err != nil {
		t.Fatal(err)
	}
	if st.InstanceCount != 1 || st.ConflictCount != 1 || len(st.Instances) != 2 {
		t.Errorf("study = %d instances, %d conflicts, %d records", st.InstanceCount, st.ConflictCount, len(st.Instances))
	}
	ev := f.Events.All()
	if len(ev) != 2 {
		t.Fatalf("%d events", len(ev))
	}
	var d pipeline.InstanceStoredDetail
	if err := json.Unmarshal(ev[1].Detail, &d); err != nil || !d.Conflict || d.ObjectKey != ck {
		t.Errorf("conflict event = %s", ev[1].Detail)
	}
	recs := f.Audit.All()
	if len(recs) != 2 || recs[1].Outcome != "conflict" {
		t.Errorf("audit = %+v", recs)
	}
	// Both objects are still there.
	for _, k := range []string{key(sop1), ck} {
		if _, _, ok := f.Objects.Get(k); !ok {
			t.Errorf("%s missing", k)
		}
	}
	// The study event points at both contents, and says which is the
	// conflicting resend: a subscriber fetching a series' instances would
	// otherwise get two objects under one SOP Instance UID and no way to
	// tell them apart but the key's spelling.
	if _, err := p.AnnounceStableStudies(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	ev = f.Events.All()
	var sd struct {
		Series []struct {
			InstanceCount int              `json:"instanceCount"`
			Instances     []map[string]any `json:"instances"`
		} `json:"series"`
	}
	if len(ev) != 3 || ev[2].DetailType != pipeline.DetailTypeStudyReceived {
		t.Fatalf("%d events, the last %q; want a Study Received third", len(ev), ev[len(ev)-1].DetailType)
	}
	if err := json.Unmarshal(ev[2].Detail, &sd); err != nil || len(sd.Series) != 1 {
		t.Fatalf("study event %s (%v)", ev[2].Detail, err)
	}
	se := sd.Series[0]
	if se.InstanceCount != 1 || len(se.Instances) != 2 {
		t.Fatalf("series counts %d instances and lists %d pointers; want 1 and 2", se.InstanceCount, len(se.Instances))
	}
	for _, in := range se.Instances {
		uri, _ := in["objectUri"].(string)
		conflicting := strings.HasSuffix(uri, ck)
		if in["sopInstanceUid"] != sop1 || (in["conflict"] == true) != conflicting || (!conflicting && in["conflict"] != nil) {
			t.Errorf("pointer %v: conflict %v, want it only on the conflicting content's", in, in["conflict"])
		}
	}
}

// TestPatientMismatch sends a study whose second instance names another
// patient (the corpus's mixed/ set in small): the instance's audit record
// and Instance Stored event carry the patient-mismatch finding, the study
// keeps its first patient and carries the finding too, and a redelivery
// reports the same without announcing anything new.
func TestPatientMismatch(t *testing.T) {
	ctx := context.Background()
	f := pt.New()
	p := f.Pipeline()
	other := ct(sop2)
	other.PatientID, other.PatientName = "PMIX001", "Bench^Mixed"
	add(f, key(sop1), ct(sop1).Build(), sop1)
	add(f, key(sop2), other.Build(), sop2)
	for _, k := range []string{key(sop1), key(sop2)} {
		if _, err := p.ProcessObject(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	tags := func(fs []pipeline.Finding) []string {
		var out []string
		for _, f := range fs {
			if f.Code == pipeline.CodePatientMismatch && f.Severity == pipeline.SeverityWarning {
				out = append(out, f.Tag)
			}
		}
		slices.Sort(out)
		return out
	}
	want := []string{"(0010,0010)", "(0010,0020)"}
	recs := f.Audit.All()
	if len(recs) != 2 || len(tags(recs[0].Findings)) != 0 || !cmp.Equal(want, tags(recs[1].Findings)) {
		t.Fatalf("audit findings: %+v", recs)
	}
	if !slices.ContainsFunc(recs[1].EventTypeCodes, func(c pipeline.CodedValue) bool { return c.Code == pipeline.CodePatientMismatch }) {
		t.Errorf("audit event type codes %v", recs[1].EventTypeCodes)
	}
	var stored []pipeline.InstanceStoredDetail
	for _, ev := range f.Events.All() {
		var d pipeline.InstanceStoredDetail
		if err := json.Unmarshal(ev.Detail, &d); err != nil {
			t.Fatal(err)
		}
		stored = append(stored, d)
	}
	if len(stored) != 2 || stored[0].PatientMismatch || !stored[1].PatientMismatch || !cmp.Equal(want, tags(stored[1].Warnings)) {
		t.Errorf("Instance Stored events: %+v", stored)
	}
	d, err := f.Index.GetStudy(ctx, study)
	if err != nil {
		t.Fatal(err)
	}
	if d.PatientID != "PID-1" || !cmp.Equal(want, tags(d.Findings)) {
		t.Errorf("study patient %s, findings %v", d.PatientID, d.Findings)
	}
	res, err := p.ProcessObject(ctx, key(sop2))
	if err != nil || res.Outcome != pipeline.InstanceDuplicate || len(f.Events.All()) != 2 || len(f.Audit.All()) != 2 {
		t.Errorf("redelivery: %v, %v, %d events, %d audit records", res.Outcome, err, len(f.Events.All()), len(f.Audit.All()))
	}
	if _, err := p.AnnounceStableStudies(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	var sd pipeline.StudyDetailEvent
	if ev := f.Events.All(); len(ev) != 3 || json.Unmarshal(ev[2].Detail, &sd) != nil || !sd.PatientMismatch {
		t.Errorf("Study Received: %s", ev[len(ev)-1].Detail)
	}
}

func TestStudyAnnouncements(t *testing.T) {
	ctx := context.Background()
	f := pt.New()
	p := f.Pipeline()
	p.QuietPeriod = time.Minute
	t0 := time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC) // received-at in SCPMetadata is 10:20:30.123456789
	// Indexed as soon as received, so the quiet period runs from receipt
	// (TestQuietPeriodRunsFromIndexing covers a late index).
	p.Now = func() time.Time { return t0 }
	for _, s := range []string{sop1, sop2} {
		add(f, key(s), ct(s).Build(), s)
		if _, err := p.ProcessObject(ctx, key(s)); err != nil {
			t.Fatal(err)
		}
	}
	studyEvents := func() []pipeline.StudyDetailEvent {
		var out []pipeline.StudyDetailEvent
		for _, e := range f.Events.All() {
			if e.DetailType == pipeline.DetailTypeStudyReceived || e.DetailType == pipeline.DetailTypeStudyUpdated {
				var d pipeline.StudyDetailEvent
				if err := json.Unmarshal(e.Detail, &d); err != nil {
					t.Fatal(err)
				}
				out = append(out, d)
			}
		}
		return out
	}
	if n, err := p.AnnounceStableStudies(ctx, t0.Add(30*time.Second)); err != nil || n != 0 {
		t.Fatalf("announced %d before the quiet period (%v)", n, err)
	}
	if n, err := p.AnnounceStableStudies(ctx, t0.Add(61*time.Second)); err != nil || n != 1 {
		t.Fatalf("announced %d after the quiet period (%v)", n, err)
	}
	if n, _ := p.AnnounceStableStudies(ctx, t0.Add(62*time.Second)); n != 0 {
		t.Fatalf("announced again: %d", n)
	}
	ev := studyEvents()
	if len(ev) != 1 || ev[0].Version != 1 || ev[0].InstanceCount != 2 || len(ev[0].Series) != 1 || len(ev[0].Series[0].Instances) != 2 {
		t.Fatalf("study events = %+v", ev)
	}
	// A late instance: Study Updated, version 2.
	s3 := "1.2.826.0.1.3680043.10.1.1.3"
	add(f, key(s3), ct(s3).Build(), s3)
	if _, err := p.ProcessObject(ctx, key(s3)); err != nil {
		t.Fatal(err)
	}
	if n, err := p.AnnounceStableStudies(ctx, t0.Add(2*time.Minute)); err != nil || n != 1 {
		t.Fatalf("update announced %d (%v)", n, err)
	}
	ev = studyEvents()
	if len(ev) != 2 || ev[1].Version != 2 || ev[1].InstanceCount != 3 {
		t.Fatalf("study events = %+v", ev)
	}
	all := f.Events.All()
	if all[len(all)-1].DetailType != pipeline.DetailTypeStudyUpdated {
		t.Errorf("last event %q", all[len(all)-1].DetailType)
	}
}

func TestPublishRetries(t *testing.T) {
	ctx := context.Background()
	t.Run("partial failure retried", func(t *testing.T) {
		f := pt.New()
		f.Events.FailEntries = []int{1, 1}
		add(f, key(sop1), ct(sop1).Build(), sop1)
		if _, err := f.Pipeline().ProcessObject(ctx, key(sop1)); err != nil {
			t.Fatal(err)
		}
		if n := len(f.Events.All()); n != 1 || f.Events.Calls != 3 {
			t.Errorf("%d events in %d calls", n, f.Events.Calls)
		}
	})
	t.Run("outage fails the message, retry publishes once", func(t *testing.T) {
		f := pt.New()
		f.Events.Err = errors.New("eventbridge down")
		add(f, key(sop1), ct(sop1).Build(), sop1)
		p := f.Pipeline()
		_, err := p.ProcessObject(ctx, key(sop1))
		if err == nil {
			t.Fatal("want an error so the message is retried")
		}
		// The cause does not mention the object: the error still names
		// it, by its log name, so the function's log line says which.
		if name := p.Names.Name(key(sop1)); !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), sop1) {
			t.Errorf("error %q: want the object named %s and no UID", err, name)
		}
		f.Events.Err = nil
		for range 2 {
			if _, err := p.ProcessObject(ctx, key(sop1)); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(f.Events.All()); n != 1 {
			t.Errorf("%d events", n)
		}
		if n := len(f.Audit.All()); n != 1 {
			t.Errorf("%d audit records", n)
		}
	})
	t.Run("store outage is an error", func(t *testing.T) {
		f := pt.New()
		add(f, key(sop1), ct(sop1).Build(), sop1)
		f.Objects.Fail = errors.New("s3 down")
		if _, err := f.Pipeline().ProcessObject(ctx, key(sop1)); err == nil {
			t.Fatal("want an error")
		}
		if len(f.Audit.All()) != 0 {
			t.Error("audited an object that could not be read")
		}
	})
}

func TestPatientDataPolicy(t *testing.T) {
	tests := []struct {
		policy pipeline.PatientDataPolicy
		want   *pipeline.EventPatient
	}{
		{pipeline.PatientDataNone, nil},
		{pipeline.PatientDataID, &pipeline.EventPatient{PatientID: "PID-1", AccessionNumber: "ACC001"}},
		{pipeline.PatientDataFull, &pipeline.EventPatient{PatientID: "PID-1", AccessionNumber: "ACC001",
			Name: &pipeline.PersonNameGroups{Alphabetic: &pipeline.PersonName{Family: "Doe", Given: "Jane"}}, BirthDate: "1970-01-01", Sex: "O"}},
	}
	for _, tt := range tests {
		t.Run(string(tt.policy), func(t *testing.T) {
			f := pt.New()
			p := f.Pipeline()
			p.PatientData = tt.policy
			add(f, key(sop1), ct(sop1).Build(), sop1)
			if _, err := p.ProcessObject(context.Background(), key(sop1)); err != nil {
				t.Fatal(err)
			}
			var d pipeline.InstanceStoredDetail
			if err := json.Unmarshal(f.Events.All()[0].Detail, &d); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, d.Patient); diff != "" {
				t.Errorf("patient (-want +got):\n%s", diff)
			}
			if tt.policy == pipeline.PatientDataNone && strings.Contains(string(f.Events.All()[0].Detail), "PID-1") {
				t.Error("patient id in event under policy none")
			}
		})
	}
	if _, err := pipeline.ParsePatientDataPolicy("everything"); err == nil {
		t.Error("unknown policy accepted")
	}
}

// processAuditRecord stores the SCP's record r, has the pipeline process it
// times times, and returns the fakes and the one audit record written.
func processAuditRecord(t *testing.T, r associationaudit.Record, times int) (*pt.Fakes, pipeline.AuditRecord) {
	t.Helper()
	body, err := associationaudit.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := associationaudit.Key(r)
	f := pt.New()
	f.Objects.Add(k, body, nil)
	p := f.Pipeline()
	for range times {
		if err := p.ProcessAuditRecord(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}
	recs := f.Audit.All()
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	return f, recs[0]
}

// TestStoreFailedReason: a store-failed record says what the sender was
// answered: the failure status it got, or, for a C-STORE the association's
// end cut short, that it got none (records written before named that one
// status 0000, the success it was not).
//
// A failure status whose response could not be written is recorded as
// decided and not sent (ResponseNotSent): it read "C-STORE status A700"
// as if the sender had been answered it.
func TestStoreFailedReason(t *testing.T) {
	at := time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name, status, reason string
		notSent              bool
		want                 string
		notAnswered          bool
	}{
		{"failure status", "A700", "storage failed, please retry", false, "C-STORE status A700: storage failed, please retry", false},
		{"cut short", "", "dicomnet: data set incomplete: dicomnet: connection closed: EOF", false,
			"C-STORE not answered (the association ended before its data set did): dicomnet: data set incomplete: dicomnet: connection closed: EOF", true},
		{"cut short, written before", "0000", "dicomnet: data set incomplete: dicomnet: connection closed: EOF", false,
			"C-STORE not answered (the association ended before its data set did): dicomnet: data set incomplete: dicomnet: connection closed: EOF", true},
		{"failure status not sent", "A700", "dicomnet: association ended while sending; storage failed, please retry", true,
			"C-STORE status A700 decided, not sent (the association ended before the response was written): " +
				"dicomnet: association ended while sending; storage failed, please retry", false},
		// A Storage Commitment request refused: the same rule (it read
		// "N-ACTION status 0110" whether or not the sender heard it).
		{"commitment refused", "0110", "no commitment peer", false, "N-ACTION status 0110: no commitment peer", false},
		{"commitment refused, not sent", "0110", "dicomnet: association ended while sending; no commitment peer", true,
			"N-ACTION status 0110 decided, not sent (the association ended before the response was written): " +
				"dicomnet: association ended while sending; no commitment peer", false},
		// Its data set cut short by the association's end: answered
		// nothing, as a C-STORE cut short (no record of it before).
		{"commitment cut short", "", "dicomnet: data set incomplete: dicomnet: connection closed: EOF", false,
			"N-ACTION not answered (the association ended before its data set did): dicomnet: data set incomplete: dicomnet: connection closed: EOF", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			event, outcome := associationaudit.EventStoreFailed, 8
			if strings.HasPrefix(tt.name, "commitment") {
				event, outcome = associationaudit.EventCommitmentRefused, 4
			}
			r := associationaudit.Record{Event: event, Status: tt.status, Reason: tt.reason, NotSent: tt.notSent, SOPInstanceUID: sop1,
				SOPClassUID: pt.CTStorage, Time: at, AssociationID: "assoc7", CallingAE: "LOCAL_AE", CalledAE: "INGEST", PeerAddr: "192.0.2.7:1234", Seq: 2}
			_, got := processAuditRecord(t, r, 2)
			if got.Reason != tt.want || got.EventOutcome != outcome {
				t.Errorf("reason %q, outcome %d; want %q, %d", got.Reason, got.EventOutcome, tt.want, outcome)
			}
			cutShort := tt.notAnswered && event == associationaudit.EventStoreFailed // a C-STORE's only
			if got.NotAnswered != tt.notAnswered || got.ResponseNotSent != tt.notSent || got.CutShort() != cutShort {
				t.Errorf("not answered %v, response not sent %v, cut short %v; want %v, %v, %v",
					got.NotAnswered, got.ResponseNotSent, got.CutShort(), tt.notAnswered, tt.notSent, cutShort)
			}
		})
	}
}

// TestCutShort: a store-failed record is of a C-STORE cut short (the
// association ended mid data set, nothing answered) when it says so
// (NotAnswered), and, written before it did, when its reason says so, or
// names status 0000 as the records before that did. Nothing else is.
func TestCutShort(t *testing.T) {
	for _, tt := range []struct {
		name string
		rec  pipeline.AuditRecord
		want bool
	}{
		{"not answered", pipeline.AuditRecord{Outcome: associationaudit.EventStoreFailed, NotAnswered: true, Reason: "C-STORE not answered (x): y"}, true},
		{"written before the field", pipeline.AuditRecord{Outcome: associationaudit.EventStoreFailed,
			Reason: "C-STORE not answered (the association ended before its data set did): dicomnet: data set incomplete"}, true},
		{"written as status 0000", pipeline.AuditRecord{Outcome: associationaudit.EventStoreFailed, Reason: "C-STORE status 0000: dicomnet: data set incomplete"}, true},
		{"refused", pipeline.AuditRecord{Outcome: associationaudit.EventStoreFailed, Reason: "C-STORE status C001: dataset ends inside an element"}, false},
		{"refused, not sent", pipeline.AuditRecord{Outcome: associationaudit.EventStoreFailed, ResponseNotSent: true,
			Reason: "C-STORE status A700 decided, not sent (the association ended before the response was written): x"}, false},
		{"another outcome", pipeline.AuditRecord{Outcome: associationaudit.EventAborted, Reason: "C-STORE status 0000: x", NotAnswered: true}, false},
		// Refused before its handler ran (its command wrong), then cut short: answered nothing, but refused, not
		// merely cut short (nothing of it would have been stored had its data set come whole).
		{"refused, then cut short", pipeline.AuditRecord{Outcome: associationaudit.EventStoreFailed, NotAnswered: true,
			Reason: "C-STORE not answered (the association ended before its data set did): dicomnet: data set incomplete: EOF" +
				"; refused before the association ended, status 0122: SOP class differs from the presentation context"}, false},
		{"refused, then cut short, read from its reason", pipeline.AuditRecord{Outcome: associationaudit.EventStoreFailed,
			Reason: "C-STORE not answered (the association ended before its data set did): dicomnet: data set incomplete: EOF" +
				"; refused before the association ended, status C000: missing Affected SOP Class UID"}, false},
	} {
		if got := tt.rec.CutShort(); got != tt.want {
			t.Errorf("%s: CutShort() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestProcessAuditRecord(t *testing.T) {
	at := time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		rec     associationaudit.Record
		eventID string
		outcome int
	}{
		{associationaudit.Record{Event: associationaudit.EventAccepted}, "110102", 0},
		{associationaudit.Record{Event: associationaudit.EventReleased, Instances: 3}, "110102", 0},
		{associationaudit.Record{Event: associationaudit.EventAborted}, "110102", 8},
		{associationaudit.Record{Event: associationaudit.EventRejected, RejectResult: 1, RejectSource: 1, RejectReason: 3, Reason: "calling AE not allowed"}, "110113", 4},
		{associationaudit.Record{Event: associationaudit.EventStoreFailed, Status: "A700", SOPInstanceUID: sop1, SOPClassUID: pt.CTStorage}, "110104", 8},
		{associationaudit.Record{Event: associationaudit.EventCommitmentRefused, Status: "0124", Reason: "no commitment peer"}, "110104", 4},
	}
	for _, tt := range tests {
		t.Run(tt.rec.Event, func(t *testing.T) {
			r := tt.rec
			r.Time, r.AssociationID, r.CallingAE, r.CalledAE, r.PeerAddr, r.Seq = at, "assoc7", "EVIL", "INGEST", "192.0.2.7:1234", 2
			f, got := processAuditRecord(t, r, 2)
			if got.EventID.Code != tt.eventID || got.EventOutcome != tt.outcome || got.CallingAE != "EVIL" || got.Day != "2026-01-15" || got.Outcome != r.Event {
				t.Errorf("record = %+v", got)
			}
			if len(got.Participants) != 2 || got.Participants[0].NetworkAccess != "192.0.2.7" || !got.Participants[0].UserIsRequestor {
				t.Errorf("participants = %+v", got.Participants)
			}
			page, _ := f.Audit.Query(context.Background(), pipeline.AuditQuery{CallingAE: "EVIL"})
			if len(page.Records) != 1 {
				t.Errorf("query by calling AE: %d", len(page.Records))
			}
		})
	}
	// The SCP's start and stop (A.5.3.1 Application Activity): the SCP is
	// the one participant, named by its AE title.
	// A start that found an earlier run stopped uncleanly is an outcome
	// of its own, so the trail can be filtered for it; a running SCP that
	// found one reports it as a Security Alert (110133 Audit Recording
	// Stopped), named the same way.
	for _, tt := range []struct {
		event, eventID, typeCode, outcome string
		previous                          []associationaudit.UncleanRun
	}{
		{associationaudit.EventApplicationStart, "110100", "110120", associationaudit.EventApplicationStart, nil},
		{associationaudit.EventApplicationStop, "110100", "110121", associationaudit.EventApplicationStop, nil},
		{associationaudit.EventApplicationStart, "110100", "110120", pipeline.OutcomeUncleanStop, []associationaudit.UncleanRun{{Instance: "dead1", LastSeq: 3, Written: 3}}},
		{associationaudit.EventUncleanStopFound, "110113", "110133", associationaudit.EventUncleanStopFound, []associationaudit.UncleanRun{{Instance: "dead1", LastSeq: 3, Written: 3}}},
	} {
		t.Run(tt.outcome, func(t *testing.T) {
			r := associationaudit.Record{Event: tt.event, Time: at, AssociationID: "5eed", CalledAE: "INGEST", Seq: 1, PreviousRuns: tt.previous}
			f, got := processAuditRecord(t, r, 1)
			if got.EventID.Code != tt.eventID || got.EventTypeCodes[0].Code != tt.typeCode || got.Outcome != tt.outcome ||
				!slices.Equal(got.PreviousRuns, tt.previous) {
				t.Errorf("record = %+v", got)
			}
			if len(got.Participants) != 1 || got.Participants[0].UserID != "INGEST" {
				t.Errorf("participants = %+v", got.Participants)
			}
			if page, _ := f.Audit.Query(context.Background(), pipeline.AuditQuery{Outcome: tt.outcome}); len(page.Records) != 1 {
				t.Errorf("query by outcome %s: %d records", tt.outcome, len(page.Records))
			}
		})
	}
	t.Run("a resend the SCP found held", func(t *testing.T) {
		// The SCP's store held the resend's bytes under its key: its
		// record is the transfer's trace, named as an instance's by the
		// object held (study, patient) and by the resend (association,
		// sender, time).
		data := ct(sop1).Build()
		r := associationaudit.Record{Event: associationaudit.EventDuplicate, Time: at, AssociationID: "assoc7", CallingAE: "PACS2",
			CalledAE: "INGEST", PeerAddr: "192.0.2.7:1234", Seq: 3, SOPClassUID: pt.CTStorage, SOPInstanceUID: sop1,
			StudyInstanceUID: study, SeriesInstanceUID: series, ObjectKey: key(sop1)}
		f := pt.New()
		store := func(r associationaudit.Record) string {
			t.Helper()
			body, err := associationaudit.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			k, err := associationaudit.Key(r)
			if err != nil {
				t.Fatal(err)
			}
			f.Objects.Add("site-a/"+k, body, nil)
			return "site-a/" + k
		}
		add(f, "site-a/"+key(sop1), data, sop1)
		p := f.Pipeline()
		// A resend the next day whose record is processed before the
		// object held is indexed (its own processing still to come, or
		// retried): its record is written (an index running behind never
		// holds an audit record back) and it fails, to be retried, so
		// that the study's LastSent is noted once the study is indexed,
		// not lost; the retries write no second record.
		later := r
		later.Time, later.Seq = at.Add(24*time.Hour), 4
		laterKey := store(later)
		if err := p.ProcessAuditRecord(context.Background(), laterKey); err == nil {
			t.Error("a resend's record processed before the object held is indexed: no error, its LastSent lost")
		}
		if recs := f.Audit.All(); len(recs) != 1 || recs[0].AssociationID != "assoc7" {
			t.Errorf("a resend's record processed before the object held is indexed: %d records, want its own", len(recs))
		}
		if _, err := f.Index.GetStudy(context.Background(), study); !errors.Is(err, pipeline.ErrNotFound) {
			t.Fatalf("study indexed by a resend's record: %v", err)
		}
		if _, err := p.ProcessObject(context.Background(), "site-a/"+key(sop1)); err != nil {
			t.Fatal(err)
		}
		summary := func() pipeline.StudySummary {
			t.Helper()
			d, err := f.Index.GetStudy(context.Background(), study)
			if err != nil {
				t.Fatal(err)
			}
			return d.StudySummary
		}
		before := summary()
		held := len(f.Audit.All()) // the object held's own
		k := store(r)
		for range 2 {
			if err := p.ProcessAuditRecord(context.Background(), k); err != nil {
				t.Fatal(err)
			}
		}
		recs := f.Audit.All()
		if len(recs) != held+1 {
			t.Fatalf("%d records, want the object held's %d and the resend's", len(recs), held)
		}
		i := slices.IndexFunc(recs, func(r pipeline.AuditRecord) bool { return r.ID == "assoc:assoc7:3:duplicate" })
		if i < 0 {
			t.Fatal("no record of the resend")
		}
		got := recs[i]
		if got.ID != "assoc:assoc7:3:duplicate" || got.Outcome != pipeline.OutcomeDuplicate || got.EventID.Code != "110104" ||
			got.EventActionCode != "R" || got.EventOutcome != 0 || got.CallingAE != "PACS2" || got.AssociationID != "assoc7" ||
			got.PatientID != "PID-1" || got.StudyInstanceUID != study || got.ObjectKey != "site-a/"+key(sop1) ||
			got.ContentIdentity != sha(data) || got.Size != int64(len(data)) || len(got.ParticipantObjects) != 2 || len(got.Participants) != 2 {
			t.Errorf("record = %+v", got)
		}
		// Indexed, the study notes a resend as sent again then (LastSent),
		// and nothing else of it moves: r was received before the object
		// held was, so it moves nothing; the retried later one moves it.
		if d := cmp.Diff(before, summary()); d != "" {
			t.Errorf("study after an earlier resend's record (-want +got):\n%s", d)
		}
		for range 2 {
			if err := p.ProcessAuditRecord(context.Background(), laterKey); err != nil {
				t.Fatal(err)
			}
		}
		want := before
		want.LastSent = later.Time
		if d := cmp.Diff(want, summary()); d != "" {
			t.Errorf("study after the resend's record (-want +got):\n%s", d)
		}
		if n := len(f.Audit.All()); n != held+1 {
			t.Errorf("the retried resend's record wrote again: %d records, want %d", n, held+1)
		}
		// Without the object (not ours, or gone) the SCP's record stands.
		_, got = processAuditRecord(t, r, 2)
		if got.Outcome != pipeline.OutcomeDuplicate || got.EventID.Code != "110104" || got.PatientID != "" || got.StudyInstanceUID != study {
			t.Errorf("record without the object = %+v", got)
		}
	})
	t.Run("a newer schema version is left for a newer pipeline", func(t *testing.T) {
		f := pt.New()
		k := "audit/2026/01/15/x-000001-association-accepted.json"
		f.Objects.Add(k, []byte(`{"schemaVersion":2,"event":"association-accepted","associationId":"x"}`), nil)
		if err := f.Pipeline().ProcessAuditRecord(context.Background(), k); !errors.Is(err, associationaudit.ErrUnsupportedVersion) {
			t.Errorf("err = %v", err)
		}
		if len(f.Audit.All()) != 0 {
			t.Error("audited a record it cannot read")
		}
	})
	t.Run("unparseable record is audited once, not retried forever", func(t *testing.T) {
		f := pt.New()
		f.Objects.Add("audit/2026/01/15/x-000001-association-accepted.json", []byte("{nope"), nil)
		p := f.Pipeline()
		for range 2 {
			if err := p.ProcessAuditRecord(context.Background(), "audit/2026/01/15/x-000001-association-accepted.json"); err != nil {
				t.Fatal(err)
			}
		}
		if recs := f.Audit.All(); len(recs) != 1 || recs[0].EventID.Code != "110113" {
			t.Errorf("records = %+v", recs)
		}
	})
}

func TestConcurrentDeliveries(t *testing.T) {
	f := pt.New()
	add(f, key(sop1), ct(sop1).Build(), sop1)
	p := f.Pipeline()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := p.ProcessObject(context.Background(), key(sop1)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	st, _ := f.Index.GetStudy(context.Background(), study)
	if st.InstanceCount != 1 || len(f.Audit.All()) != 1 {
		t.Errorf("%d instances, %d audit records", st.InstanceCount, len(f.Audit.All()))
	}
}

func TestSkipsOtherKeys(t *testing.T) {
	f := pt.New()
	for _, k := range []string{"metadata/2026/01/15/a/b/c.json", "quarantine/2026/x.dcm", "incoming/readme.txt"} {
		res, err := f.Pipeline().ProcessObject(context.Background(), k)
		if err != nil || !res.Skipped {
			t.Errorf("%s: %+v %v", k, res, err)
		}
	}
}

func FuzzProcessObject(f *testing.F) {
	f.Add(ct(sop1).Build())
	i := ct(sop1)
	i.TransferSyntaxUID = "1.2.840.10008.1.2"
	f.Add(i.Build())
	// The DICOM JSON fixtures of LUT descriptors (Implicit and Explicit VR,
	// in items and functional groups), whose VR the decoder decides.
	luts, err := filepath.Glob(filepath.Join("testdata", "dicomjson", "*lut*.dcm"))
	if err != nil || len(luts) == 0 {
		f.Fatalf("no LUT fixtures: %v", err)
	}
	for _, name := range luts {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// testdata/fuzz/FuzzProcessObject also holds the dicom module's
	// deflated 6.dcm and past crashers.
	f.Fuzz(func(t *testing.T, data []byte) {
		fk := pt.New()
		fk.Objects.Add(key(sop1), data, map[string]string{"sha256": sha(data)})
		res, err := fk.Pipeline().ProcessObject(context.Background(), key(sop1))
		if err != nil {
			t.Fatalf("an object's content must never fail the message: %v", err)
		}
		if res.BytesRead > int64(len(data)) {
			t.Fatalf("read %d bytes of %d", res.BytesRead, len(data))
		}
		if !res.Valid {
			if _, _, ok := fk.Objects.Get(res.QuarantineKey); !ok {
				t.Fatal("invalid object not quarantined")
			}
		}
	})
}

// BenchmarkValidateNormalize reports the cost of validate+normalize per
// instance (ms and MB read from the store) for a synthesized CT-like object
// with 4 MiB of pixel data and for the dicom module's real files: only the
// header may be read, never the pixel data.
func BenchmarkValidateNormalize(b *testing.B) {
	in := ct(sop1)
	in.Rows, in.Columns = 2048, 1024
	cases := []struct {
		name string
		data []byte
	}{{"synthetic-ct-4MiB", in.Build()}}
	dir := testenv.DICOMTestdataDir(b)
	for _, f := range []string{"1.dcm", "3.dcm", "4.dcm", "5.dcm"} {
		if data, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
			cases = append(cases, struct {
				name string
				data []byte
			}{"testdata-" + f, data})
		}
	}
	// The bench corpus (make bench builds it): one CT image of the CT
	// series and the ~300 MiB multi-frame object, when present.
	corpus := testenv.CorpusDir()
	for _, sub := range []string{"ct", "big"} {
		files, _ := filepath.Glob(filepath.Join(corpus, sub, "*.dcm"))
		if len(files) == 0 {
			continue
		}
		if data, err := os.ReadFile(files[0]); err == nil {
			cases = append(cases, struct {
				name string
				data []byte
			}{"corpus-" + sub, data})
		}
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			f := pt.New()
			k := key(sop1)
			f.Objects.Add(k, c.data, map[string]string{"sha256": sha(c.data)})
			p := f.Pipeline()
			ctx := context.Background()
			var read int64
			for b.Loop() {
				// A fresh index each time so every iteration does the full work.
				p.Index, p.Audit = pt.NewIndex(), pt.NewAudit()
				res, err := p.ProcessObject(ctx, k)
				if err != nil || !res.Valid {
					b.Fatal(err, res.Findings)
				}
				read += res.BytesRead
			}
			b.ReportMetric(float64(read)/float64(b.N)/(1<<20), "MB-read/instance")
			b.ReportMetric(float64(len(c.data))/(1<<20), "MB-object")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/instance")
		})
	}
}

// TestQuietPeriodRunsFromIndexing: an instance that waited in a backed-up
// validate queue holds its study back for a full quiet period after it was
// indexed, not after it was received; a duplicate delivery does not.
func TestQuietPeriodRunsFromIndexing(t *testing.T) {
	t0 := time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC) // received-at in SCPMetadata is 10:20:30.123456789
	type step struct {
		at   time.Duration // since t0
		want int           // studies announced
	}
	cases := []struct {
		name      string
		indexed   time.Duration // since t0
		redeliver time.Duration // since t0; 0: no duplicate delivery
		steps     []step
	}{
		{"indexed on receipt", 0, 0, []step{{30 * time.Second, 0}, {61 * time.Second, 1}}},
		{"indexed 120s late", 120 * time.Second, 0, []step{{121 * time.Second, 0}, {179 * time.Second, 0}, {181 * time.Second, 1}}},
		{"duplicate delivery is not activity", 120 * time.Second, 170 * time.Second, []step{{121 * time.Second, 0}, {181 * time.Second, 1}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			f := pt.New()
			p := f.Pipeline()
			p.QuietPeriod = time.Minute
			now := t0.Add(c.indexed)
			p.Now = func() time.Time { return now }
			add(f, key(sop1), ct(sop1).Build(), sop1)
			if _, err := p.ProcessObject(ctx, key(sop1)); err != nil {
				t.Fatal(err)
			}
			if c.redeliver != 0 {
				now = t0.Add(c.redeliver)
				if out, err := p.ProcessObject(ctx, key(sop1)); err != nil || out.Outcome != pipeline.InstanceDuplicate {
					t.Fatalf("redelivery: %v, %v", out.Outcome, err)
				}
			}
			d, err := f.Index.GetStudy(ctx, study)
			if err != nil {
				t.Fatal(err)
			}
			received := t0.Add(123456789 * time.Nanosecond)
			wantActivity := t0.Add(c.indexed)
			if received.After(wantActivity) {
				wantActivity = received
			}
			if !d.LastActivity.Equal(wantActivity) {
				t.Errorf("LastActivity = %v, want %v", d.LastActivity, wantActivity)
			}
			if !d.LastReceived.Equal(received) {
				t.Errorf("LastReceived = %v, want the SCP's received-at", d.LastReceived)
			}
			for _, s := range c.steps {
				now = t0.Add(s.at)
				n, err := p.AnnounceStableStudies(ctx, now)
				if err != nil || n != s.want {
					t.Fatalf("at t0+%v: announced %d (%v), want %d", s.at, n, err, s.want)
				}
			}
			var got []string
			for _, e := range f.Events.All() {
				if e.DetailType == pipeline.DetailTypeStudyReceived || e.DetailType == pipeline.DetailTypeStudyUpdated {
					var sd pipeline.StudyDetailEvent
					if err := json.Unmarshal(e.Detail, &sd); err != nil {
						t.Fatal(err)
					}
					got = append(got, fmt.Sprintf("%s v%d", e.DetailType, sd.Version))
				}
			}
			if diff := cmp.Diff([]string{"Study Received v1"}, got); diff != "" {
				t.Errorf("study events (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAnnouncements runs the announcement scenarios on the fake index (the
// DynamoDB and SQLite indexes run them too).
func TestAnnouncements(t *testing.T) {
	pt.RunAnnouncements(t, func(*testing.T) pipeline.IndexStore { return pt.NewIndex() })
}

// TestResendRecordsNameTheObjectHeld: the record of a transfer whose
// content, or SOP Instance UID, the archive held already names the object
// held (heldObjectKey, heldContentIdentity), so that an officer ties the
// two records without matching UIDs by hand; and a resend of an object
// validation quarantined says so (a minor failure, typed quarantined, its
// quarantined copy and the errors), where it read as a plain duplicate
// of an object "already held".
func TestResendRecordsNameTheObjectHeld(t *testing.T) {
	ctx := context.Background()
	bad := ct(sop1)
	bad.StudyUID = "1.2.3.abc"
	changed := ct(sop1)
	changed.PatientName = "Doe^John"
	otherDay := strings.Replace(key(sop1), "/01/15/", "/01/16/", 1)
	for _, tt := range []struct {
		name string
		held []byte
		// resend processes the resend of the object held at key(sop1)
		// and returns its key (under which ObjectKey names it).
		resend      func(t *testing.T, f *pt.Fakes, p *pipeline.Pipeline) string
		outcome     string
		quarantined bool
	}{
		{"identical resend, another day", ct(sop1).Build(), func(t *testing.T, f *pt.Fakes, p *pipeline.Pipeline) string {
			add(f, otherDay, ct(sop1).Build(), sop1)
			if _, err := p.ProcessObject(ctx, otherDay); err != nil {
				t.Fatal(err)
			}
			return otherDay
		}, pipeline.OutcomeDuplicate, false},
		{"conflicting resend", ct(sop1).Build(), func(t *testing.T, f *pt.Fakes, p *pipeline.Pipeline) string {
			data := changed.Build()
			ck := strings.TrimSuffix(key(sop1), ".dcm") + ".conflict-" + sha(data)[:16] + ".dcm"
			add(f, ck, data, sop1)
			if _, err := p.ProcessObject(ctx, ck); err != nil {
				t.Fatal(err)
			}
			return ck
		}, pipeline.OutcomeConflict, false},
		{"identical resend found held by the SCP", ct(sop1).Build(), scpFoundHeld(ctx), pipeline.OutcomeDuplicate, false},
		{"resend of a quarantined object found held by the SCP", bad.Build(), scpFoundHeld(ctx), pipeline.OutcomeDuplicate, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := pt.New()
			p := f.Pipeline()
			add(f, key(sop1), tt.held, sop1)
			if _, err := p.ProcessObject(ctx, key(sop1)); err != nil {
				t.Fatal(err)
			}
			first := f.Audit.All()[0]
			k := tt.resend(t, f, p)
			recs := f.Audit.All()
			if len(recs) != 2 {
				t.Fatalf("%d records, want the first transfer's and the resend's", len(recs))
			}
			got := recs[1]
			if got.Outcome != tt.outcome || got.ObjectKey != k || got.HeldObjectKey != key(sop1) || got.HeldContentIdentity != first.ContentIdentity {
				t.Errorf("record: outcome %s, object %s, held %s (%s); want %s, %s, held %s (%s)", got.Outcome, got.ObjectKey,
					got.HeldObjectKey, got.HeldContentIdentity, tt.outcome, k, key(sop1), first.ContentIdentity)
			}
			if tt.outcome == pipeline.OutcomeConflict && got.HeldContentIdentity == got.ContentIdentity {
				t.Errorf("conflict names its own content as the one held: %s", got.HeldContentIdentity)
			}
			quarantined := slices.ContainsFunc(got.EventTypeCodes, func(c pipeline.CodedValue) bool { return c.Code == "quarantined" })
			if !tt.quarantined {
				if quarantined || got.EventOutcome != 0 || got.QuarantineKey != "" || strings.Contains(got.Reason, "quarantined") {
					t.Errorf("record of a resend of a stored object: outcome %d, types %v, quarantine key %q, reason %q",
						got.EventOutcome, got.EventTypeCodes, got.QuarantineKey, got.Reason)
				}
				return
			}
			if first.Outcome != pipeline.OutcomeRejected {
				t.Fatalf("the object held: %s, want rejected", first.Outcome)
			}
			if !quarantined || got.EventOutcome != 4 || got.QuarantineKey != first.QuarantineKey || got.QuarantineKey == "" ||
				got.ContentIdentity != first.ContentIdentity || !slices.Equal(findingCodes(got.Findings), findingCodes(first.Findings)) ||
				strings.Contains(got.Reason, "already held") || !strings.Contains(got.Reason, "quarantined by validation") ||
				!strings.Contains(got.Reason, "not in the archive") {
				t.Errorf("record of a resend of a quarantined object: outcome %d, types %v, quarantine key %q (the first's %q), content %s (%s), findings %v (%v), reason %q",
					got.EventOutcome, got.EventTypeCodes, got.QuarantineKey, first.QuarantineKey, got.ContentIdentity, first.ContentIdentity,
					findingCodes(got.Findings), findingCodes(first.Findings), got.Reason)
			}
		})
	}
}

// TestResendOfAQuarantinedObjectNamesItsCopy: the record of a resend the
// SCP found held of an object validation quarantined names the copy that
// quarantine made, as the held object's own rejected record names it: the
// copy named after the object key for an object quarantined by a build
// before copies were named after their bytes (its rejected record names
// none), where the resend's record named the new-style copy, which exists
// only once the object is delivered again after the upgrade (the portal's
// Quarantine page linked it and got a 404).
func TestResendOfAQuarantinedObjectNamesItsCopy(t *testing.T) {
	ctx := context.Background()
	k := key(sop1)
	legacy, _ := pipeline.LegacyQuarantineKeys(k)
	bad := ct(sop1)
	bad.StudyUID = "1.2.3.abc"
	data := bad.Build()
	// quarantinedBefore leaves in f what a build before the change left of
	// the object at k: its rejected record naming no copy, and the copy
	// and findings named after the key.
	quarantinedBefore := func(t *testing.T, f *pt.Fakes) {
		t.Helper()
		g := pt.New()
		add(g, k, data, sop1)
		res, err := g.Pipeline().ProcessObject(ctx, k)
		if err != nil || res.Valid {
			t.Fatalf("the first delivery: %+v, %v", res, err)
		}
		rec := g.Audit.All()[0]
		rec.QuarantineKey = ""
		if _, err := f.Audit.Append(ctx, rec); err != nil {
			t.Fatal(err)
		}
		body, md, _ := g.Objects.Get(res.QuarantineKey)
		if err := f.Objects.Put(ctx, legacy, body, "application/dicom", md); err != nil {
			t.Fatal(err)
		}
		findings, _, _ := g.Objects.Get(pipeline.QuarantineFindingsKey(res.QuarantineKey))
		if err := f.Objects.Put(ctx, pipeline.QuarantineFindingsKey(legacy), findings, "application/json", nil); err != nil {
			t.Fatal(err)
		}
	}
	process := func(t *testing.T, f *pt.Fakes) {
		t.Helper()
		if res, err := f.Pipeline().ProcessObject(ctx, k); err != nil || res.Valid {
			t.Fatalf("delivery: %+v, %v", res, err)
		}
	}
	for _, tt := range []struct {
		name string
		// before and after run before and after the resend's record.
		before, after func(t *testing.T, f *pt.Fakes)
		legacy        bool // the copy named is the one named after the key
	}{
		{"quarantined since the change", process, nil, false},
		{"quarantined before the change", quarantinedBefore, nil, true},
		{"quarantined before the change, delivered again since", func(t *testing.T, f *pt.Fakes) {
			quarantinedBefore(t, f)
			process(t, f)
		}, nil, true},
		{"its own processing after the resend's", nil, process, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := pt.New()
			add(f, k, data, sop1)
			if tt.before != nil {
				tt.before(t, f)
			}
			scpFoundHeld(ctx)(t, f, f.Pipeline())
			if tt.after != nil {
				tt.after(t, f)
			}
			want, _ := quarantineKeys(t, f, k)
			if tt.legacy {
				want = legacy
			}
			var got []pipeline.AuditRecord
			for _, r := range f.Audit.All() {
				if r.Outcome == pipeline.OutcomeDuplicate {
					got = append(got, r)
				}
			}
			if len(got) != 1 {
				t.Fatalf("%d duplicate records, want the resend's", len(got))
			}
			if got[0].QuarantineKey != want {
				t.Errorf("quarantineKey %q, want %q", got[0].QuarantineKey, want)
			}
			q, findings := got[0].Quarantined()
			for _, key := range []string{q, findings} {
				if _, _, ok := f.Objects.Get(key); !ok {
					t.Errorf("%s: named, not there", key)
				}
			}
		})
	}
}

// scpFoundHeld has the pipeline process the SCP's duplicate record of a
// resend its store found held, byte for byte, under key(sop1).
func scpFoundHeld(ctx context.Context) func(t *testing.T, f *pt.Fakes, p *pipeline.Pipeline) string {
	return func(t *testing.T, f *pt.Fakes, p *pipeline.Pipeline) string {
		t.Helper()
		r := associationaudit.Duplicate(associationaudit.Record{Time: time.Date(2026, 1, 15, 11, 0, 0, 0, time.UTC), AssociationID: "assoc9",
			CallingAE: "PACS2", CalledAE: "INGEST", PeerAddr: "192.0.2.7:1234", Seq: 3}, pt.CTStorage, sop1, study, series, key(sop1))
		if err := f.ProcessSCPRecord(ctx, p, r); err != nil {
			t.Fatal(err)
		}
		return key(sop1)
	}
}

func findingCodes(fs []pipeline.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Code+" "+f.Tag)
	}
	return out
}
