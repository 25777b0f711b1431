package part10

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/google/go-cmp/cmp"
	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"
)

func sampleMeta() Meta {
	return Meta{
		MediaStorageSOPClassUID:      "1.2.840.10008.5.1.4.1.1.2",
		MediaStorageSOPInstanceUID:   "1.2.3.4.5.6.7", // odd length: needs a NUL pad
		TransferSyntaxUID:            ExplicitVRLittleEndian,
		ImplementationClassUID:       "1.2.3",
		ImplementationVersionName:    "TEST_1",
		SourceApplicationEntityTitle: "STORESCU", // even
	}
}

// TestAppendHeaderLayout checks the exact bytes of the meta group against
// PS3.10 §7.1, element by element, as written out by hand.
func TestAppendHeaderLayout(t *testing.T) {
	m := sampleMeta()
	m.SourceApplicationEntityTitle = "SCU" // odd: needs a space pad
	m.SendingApplicationEntityTitle, m.ReceivingApplicationEntityTitle = "PACS", "ARCHIVE"
	got := AppendHeader(nil, m)

	var want []byte
	want = append(want, make([]byte, 128)...)
	want = append(want, "DICM"...)
	body := "" +
		"\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01" +
		"\x02\x00\x02\x00UI\x1a\x00" + "1.2.840.10008.5.1.4.1.1.2\x00" +
		"\x02\x00\x03\x00UI\x0e\x00" + "1.2.3.4.5.6.7\x00" +
		"\x02\x00\x10\x00UI\x14\x00" + "1.2.840.10008.1.2.1\x00" +
		"\x02\x00\x12\x00UI\x06\x00" + "1.2.3\x00" +
		"\x02\x00\x13\x00SH\x06\x00" + "TEST_1" +
		"\x02\x00\x16\x00AE\x04\x00" + "SCU " +
		"\x02\x00\x17\x00AE\x04\x00" + "PACS" +
		"\x02\x00\x18\x00AE\x08\x00" + "ARCHIVE "
	want = append(want, "\x02\x00\x00\x00UL\x04\x00"...)
	want = binary.LittleEndian.AppendUint32(want, uint32(len(body)))
	want = append(want, body...)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendHeader mismatch\n got %q\nwant %q", got, want)
	}
	if HeaderSize(m) != len(want) {
		t.Errorf("HeaderSize = %d, want %d", HeaderSize(m), len(want))
	}
	// Appending keeps what dst held.
	if got := AppendHeader([]byte("xy"), m); !bytes.Equal(got[:2], []byte("xy")) || !bytes.Equal(got[2:], want) {
		t.Error("AppendHeader did not append to dst")
	}
}

func TestAppendHeaderNormalises(t *testing.T) {
	tests := []struct {
		name string
		in   Meta
		want Meta // what ReadMeta gives back
	}{
		{"defaults", Meta{MediaStorageSOPClassUID: "1.2", MediaStorageSOPInstanceUID: "1.3", TransferSyntaxUID: ImplicitVRLittleEndian},
			Meta{MediaStorageSOPClassUID: "1.2", MediaStorageSOPInstanceUID: "1.3", TransferSyntaxUID: ImplicitVRLittleEndian,
				ImplementationClassUID: DefaultImplementationClassUID, ImplementationVersionName: DefaultImplementationVersionName}},
		{"wire padding stripped", Meta{MediaStorageSOPClassUID: "1.2\x00", MediaStorageSOPInstanceUID: "1.3 ", TransferSyntaxUID: "1.2.840.10008.1.2.1\x00",
			SourceApplicationEntityTitle: "  AE1  "},
			Meta{MediaStorageSOPClassUID: "1.2", MediaStorageSOPInstanceUID: "1.3", TransferSyntaxUID: ExplicitVRLittleEndian,
				ImplementationClassUID: DefaultImplementationClassUID, ImplementationVersionName: DefaultImplementationVersionName, SourceApplicationEntityTitle: "AE1"}},
		{"overlong values cut", Meta{MediaStorageSOPClassUID: "1.2", MediaStorageSOPInstanceUID: "1." + strings.Repeat("9", 70), TransferSyntaxUID: "1.2",
			ImplementationVersionName: "A_VERSION_NAME_LONGER_THAN_16", SourceApplicationEntityTitle: "AN_AE_TITLE_LONGER_THAN_16"},
			Meta{MediaStorageSOPClassUID: "1.2", MediaStorageSOPInstanceUID: "1." + strings.Repeat("9", 62), TransferSyntaxUID: "1.2",
				ImplementationClassUID: DefaultImplementationClassUID, ImplementationVersionName: "A_VERSION_NAME_L", SourceApplicationEntityTitle: "AN_AE_TITLE_LONG"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendHeader(nil, tt.in)
			got, err := ReadMeta(bufio.NewReader(bytes.NewReader(b)))
			if err != nil {
				t.Fatalf("ReadMeta: %v", err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := sampleMeta()
	tests := []struct {
		name   string
		modify func(*Meta)
		valid  bool
	}{
		{"sample", func(*Meta) {}, true},
		{"default implementation fields", func(m *Meta) { m.ImplementationClassUID, m.ImplementationVersionName = "", "" }, true},
		{"no source AE", func(m *Meta) { m.SourceApplicationEntityTitle = "" }, true},
		{"NUL-padded UID", func(m *Meta) { m.MediaStorageSOPInstanceUID = "1.2.3\x00" }, true},
		{"missing SOP class", func(m *Meta) { m.MediaStorageSOPClassUID = "" }, false},
		{"missing SOP instance", func(m *Meta) { m.MediaStorageSOPInstanceUID = "" }, false},
		{"missing transfer syntax", func(m *Meta) { m.TransferSyntaxUID = "" }, false},
		{"letters in UID", func(m *Meta) { m.MediaStorageSOPInstanceUID = "1.2.abc" }, false},
		{"path in UID", func(m *Meta) { m.MediaStorageSOPInstanceUID = "../1.2" }, false},
		{"UID of 65", func(m *Meta) { m.MediaStorageSOPInstanceUID = "1." + strings.Repeat("1", 63) }, false},
		{"version name of 17", func(m *Meta) { m.ImplementationVersionName = strings.Repeat("V", 17) }, false},
		{"AE of 17", func(m *Meta) { m.SourceApplicationEntityTitle = strings.Repeat("A", 17) }, false},
		{"AE with backslash", func(m *Meta) { m.SourceApplicationEntityTitle = `A\B` }, false},
		{"AE with control char", func(m *Meta) { m.SourceApplicationEntityTitle = "A\nB" }, false},
		{"sending and receiving AEs", func(m *Meta) { m.SendingApplicationEntityTitle, m.ReceivingApplicationEntityTitle = "PACS", "ARCHIVE" }, true},
		{"sending AE of 17", func(m *Meta) { m.SendingApplicationEntityTitle = strings.Repeat("A", 17) }, false},
		{"receiving AE with backslash", func(m *Meta) { m.ReceivingApplicationEntityTitle = `A\B` }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ok
			tt.modify(&m)
			err := m.Validate()
			if (err == nil) != tt.valid {
				t.Fatalf("Validate() = %v, want valid=%v", err, tt.valid)
			}
			if err != nil && !errors.Is(err, ErrInvalidMeta) {
				t.Errorf("error %v is not ErrInvalidMeta", err)
			}
			var buf bytes.Buffer
			werr := WriteHeader(&buf, m)
			if (werr == nil) != tt.valid || (werr != nil && buf.Len() != 0) {
				t.Errorf("WriteHeader() = %v with %d bytes written, want valid=%v", werr, buf.Len(), tt.valid)
			}
		})
	}
}

func metaString(t *testing.T, ds dicom.Dataset, tg tag.Tag) string {
	t.Helper()
	e, err := ds.FindElementByTag(tg)
	if err != nil {
		return ""
	}
	v, ok := e.Value.GetValue().([]string)
	if !ok || len(v) == 0 {
		return ""
	}
	return strings.Trim(v[0], " \x00")
}

// TestReadMetaTestdata reads every file of the dicom module's testdata and
// compares with what suyashkumar/dicom parses, and checks the reader is
// left exactly at the dataset.
func TestReadMetaTestdata(t *testing.T) {
	for _, f := range testenv.DICOMTestdataFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(bytes.NewReader(raw))
			got, err := ReadMeta(br)
			if err != nil {
				t.Fatalf("ReadMeta: %v", err)
			}
			ds, err := dicom.ParseFile(f, nil, dicom.SkipPixelData())
			if err != nil {
				t.Fatalf("dicom.ParseFile: %v", err)
			}
			want := Meta{
				MediaStorageSOPClassUID:         metaString(t, ds, tag.MediaStorageSOPClassUID),
				MediaStorageSOPInstanceUID:      metaString(t, ds, tag.MediaStorageSOPInstanceUID),
				TransferSyntaxUID:               metaString(t, ds, tag.TransferSyntaxUID),
				ImplementationClassUID:          metaString(t, ds, tag.ImplementationClassUID),
				ImplementationVersionName:       metaString(t, ds, tag.ImplementationVersionName),
				SourceApplicationEntityTitle:    metaString(t, ds, tag.SourceApplicationEntityTitle),
				SendingApplicationEntityTitle:   metaString(t, ds, tag.SendingApplicationEntityTitle),
				ReceivingApplicationEntityTitle: metaString(t, ds, tag.ReceivingApplicationEntityTitle),
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("meta (-dicom +ReadMeta):\n%s", d)
			}
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatal(err)
			}
			groupLen := int(binary.LittleEndian.Uint32(raw[140:144]))
			if off := 144 + groupLen; !bytes.Equal(rest, raw[off:]) {
				t.Errorf("reader left at offset %d, want %d", len(raw)-len(rest), off)
			}
		})
	}
}

// TestWrittenHeaderParses re-wraps every testdata dataset in a header we
// write and checks suyashkumar/dicom parses it and reads back our values.
func TestWrittenHeaderParses(t *testing.T) {
	for _, f := range testenv.DICOMTestdataFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			file, out := rewrap(t, f)
			orig, err := ReadMeta(bufio.NewReader(bytes.NewReader(file)))
			if err != nil {
				t.Fatal(err)
			}
			ds, err := dicom.Parse(bytes.NewReader(out), int64(len(out)), nil, dicom.SkipPixelData())
			if err != nil {
				t.Fatalf("dicom.Parse of our file: %v", err)
			}
			for _, c := range []struct {
				tag  tag.Tag
				want string
			}{
				{tag.MediaStorageSOPClassUID, orig.MediaStorageSOPClassUID},
				{tag.MediaStorageSOPInstanceUID, orig.MediaStorageSOPInstanceUID},
				{tag.TransferSyntaxUID, orig.TransferSyntaxUID},
				{tag.ImplementationClassUID, DefaultImplementationClassUID},
				{tag.ImplementationVersionName, DefaultImplementationVersionName},
				{tag.SourceApplicationEntityTitle, "SCP"},
				{tag.SendingApplicationEntityTitle, "SCU"},
				{tag.ReceivingApplicationEntityTitle, "SCP"},
				{tag.SOPInstanceUID, orig.MediaStorageSOPInstanceUID},
			} {
				if got := metaString(t, ds, c.tag); got != c.want {
					t.Errorf("%v = %q, want %q", c.tag, got, c.want)
				}
			}
		})
	}
}

// rewrap returns the testdata file and the same dataset behind our header.
func rewrap(t *testing.T, f string) (file, out []byte) {
	t.Helper()
	file, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(bytes.NewReader(file))
	m, err := ReadMeta(br)
	if err != nil {
		t.Fatal(err)
	}
	m.ImplementationClassUID, m.ImplementationVersionName = "", ""
	m.SourceApplicationEntityTitle, m.SendingApplicationEntityTitle, m.ReceivingApplicationEntityTitle = "SCP", "SCU", "SCP"
	var buf bytes.Buffer
	if err := WriteHeader(&buf, m); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(&buf, br); err != nil {
		t.Fatal(err)
	}
	return file, buf.Bytes()
}

// TestWrittenHeaderDcmdump checks DCMTK reads our files (it needs dcmdump,
// package dcmtk): the dicom module's testdata and the synthetic corpus's
// mixed transfer syntaxes ($DICOM_CORPUS/mixed, built by `make test`).
func TestWrittenHeaderDcmdump(t *testing.T) {
	dcmdump := testenv.LookPath(t, "dcmdump")
	mixed := testenv.CorpusFiles(t, "mixed")
	for _, f := range append(testenv.DICOMTestdataFiles(t), mixed...) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, out := rewrap(t, f)
			p := filepath.Join(t.TempDir(), "x.dcm")
			if err := os.WriteFile(p, out, 0o600); err != nil {
				t.Fatal(err)
			}
			dump, err := exec.Command(dcmdump, "-M", "+E", p).CombinedOutput()
			if err != nil {
				t.Fatalf("dcmdump: %v\n%s", err, dump)
			}
			for _, want := range []string{"(0002,0012) UI [" + DefaultImplementationClassUID + "]",
				"(0002,0013) SH [" + DefaultImplementationVersionName + "]", "(0002,0016) AE [SCP]", "(0002,0017) AE [SCU]", "(0002,0018) AE [SCP]"} {
				if !strings.Contains(string(dump), want) {
					t.Errorf("dcmdump output lacks %q", want)
				}
			}
			if strings.Contains(string(dump), "W: ") || strings.Contains(string(dump), "E: ") {
				t.Errorf("dcmdump warned:\n%s", dump)
			}
			// The dataset reads the same, element by element, as in the
			// original file.
			orig, err := exec.Command(dcmdump, "+E", f).CombinedOutput()
			if err != nil {
				t.Fatalf("dcmdump original: %v", err)
			}
			ours, err := exec.Command(dcmdump, "+E", p).CombinedOutput()
			if err != nil {
				t.Fatalf("dcmdump ours: %v", err)
			}
			if n := len(datasetLines(orig)); n < 10 {
				t.Fatalf("dcmdump printed %d dataset lines for the original", n)
			}
			if d := cmp.Diff(datasetLines(orig), datasetLines(ours)); d != "" {
				t.Errorf("dataset differs (-original +ours):\n%s", d)
			}
		})
	}
}

// datasetLines returns dcmdump's lines after the "# Dicom-Data-Set" mark.
func datasetLines(dump []byte) []string {
	_, ds, ok := strings.Cut(string(dump), "# Dicom-Data-Set")
	if !ok {
		return nil
	}
	return strings.Split(ds, "\n")
}

func TestReadMetaErrors(t *testing.T) {
	good := AppendHeader(nil, sampleMeta())
	elem := func(el uint16, vr string, val string) string {
		b := binary.LittleEndian.AppendUint16(nil, 2)
		b = binary.LittleEndian.AppendUint16(b, el)
		b = append(b, vr...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(val)))
		return string(append(b, val...))
	}
	pre := string(make([]byte, 128)) + "DICM"
	tests := []struct {
		name    string
		in      string
		wantErr error
		want    Meta
		rest    string
	}{
		{"empty", "", ErrNotPart10, Meta{}, ""},
		{"no DICM", string(make([]byte, 200)), ErrNotPart10, Meta{}, ""},
		{"no meta", pre + "\x08\x00\x16\x00UI\x02\x001\x00", ErrMalformedMeta, Meta{}, ""},
		{"truncated", string(good[:len(good)-3]), ErrMalformedMeta, Meta{}, ""},
		{"implicit VR meta", pre + "\x02\x00\x10\x00\x14\x00\x00\x001.2.840.10008.1.2.1\x00", ErrMalformedMeta, Meta{}, ""},
		{"lying long length", pre + "\x02\x00\x01\x00OB\x00\x00\xff\xff\xff\x7f", ErrMalformedMeta, Meta{}, ""},
		{"lying group length", pre + "\x02\x00\x00\x00UL\x04\x00\xff\xff\xff\xff", ErrMalformedMeta, Meta{}, ""},
		{"no transfer syntax", pre + elem(2, "UI", "1.2\x00"), ErrMalformedMeta, Meta{}, ""},
		{"no group length", pre + elem(0x10, "UI", "1.2.840.10008.1.2\x00") + "\x08\x00\x16\x00",
			nil, Meta{TransferSyntaxUID: ImplicitVRLittleEndian}, "\x08\x00\x16\x00"},
		{"group length too short", pre + elem(0, "UL", "\x01\x00\x00\x00") + elem(0x10, "UI", "1.2.840.10008.1.2\x00") + "rest",
			nil, Meta{TransferSyntaxUID: ImplicitVRLittleEndian}, "rest"},
		{"group length stops at group 0002 in the dataset", pre + elem(0, "UL", "\x1a\x00\x00\x00") + elem(0x10, "UI", "1.2.840.10008.1.2\x00") +
			"\x02\x00\x13\x00\x04\x00\x00\x00XY  ", nil, Meta{TransferSyntaxUID: ImplicitVRLittleEndian}, "\x02\x00\x13\x00\x04\x00\x00\x00XY  "},
		{"deflated dataset starting like group 0002", pre + elem(0, "UL", "\x1e\x00\x00\x00") + elem(0x10, "UI", "1.2.840.10008.1.2.1.99") +
			"\x02\x00\xff\xfe", nil, Meta{TransferSyntaxUID: "1.2.840.10008.1.2.1.99"}, "\x02\x00\xff\xfe"},
		{"empty dataset", pre + elem(0x10, "UI", "1.2.840.10008.1.2\x00"), nil, Meta{TransferSyntaxUID: ImplicitVRLittleEndian}, ""},
		// Out of tag order (PS3.5 §7.1) but none repeated: read as in order and reported (the first step back and
		// the tag before it); a repeat is malformed.
		{"out of tag order", pre + elem(0x10, "UI", "1.2.840.10008.1.2\x00") + elem(3, "UI", "1.2.3\x00") + elem(2, "UI", "1.2\x00") + "rest",
			nil, Meta{TransferSyntaxUID: ImplicitVRLittleEndian, MediaStorageSOPInstanceUID: "1.2.3", MediaStorageSOPClassUID: "1.2",
				Unordered: true, Misplaced: 0x00020003, After: 0x00020010}, "rest"},
		{"a repeat", pre + elem(0x10, "UI", "1.2.840.10008.1.2\x00") + elem(2, "UI", "1.2\x00") + elem(0x10, "UI", "1.2.840.10008.1.2\x00"),
			ErrMalformedMeta, Meta{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in))
			got, err := ReadMeta(br)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadMeta() error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("meta (-want +got):\n%s", d)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tt.rest {
				t.Errorf("rest = %q, want %q", rest, tt.rest)
			}
		})
	}
}

type failReader struct{ err error }

func (f failReader) Read([]byte) (int, error) { return 0, f.err }

func TestReadMetaReadError(t *testing.T) {
	boom := errors.New("boom")
	_, err := ReadMeta(bufio.NewReader(io.MultiReader(bytes.NewReader(AppendHeader(nil, sampleMeta())[:150]), failReader{boom})))
	if !errors.Is(err, boom) {
		t.Fatalf("ReadMeta() error = %v, want wrapped boom", err)
	}
}

func FuzzReadMeta(f *testing.F) {
	f.Add(AppendHeader(nil, sampleMeta()))
	f.Add(AppendHeader(nil, Meta{MediaStorageSOPClassUID: "1.2", MediaStorageSOPInstanceUID: "1.3", TransferSyntaxUID: "1.2.840.10008.1.2.1.99"}))
	f.Add(append(make([]byte, 128), "DICM\x02\x00\x10\x00UI\x02\x001\x00"...))
	f.Add(append(make([]byte, 128), "DICM\x02\x00\x01\x00OB\x00\x00\xff\xff\xff\xff"...))
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		m, err := ReadMeta(br)
		if err != nil {
			return
		}
		rest, _ := io.ReadAll(br)
		if len(in)-len(rest) > PreambleLen+4+MaxMetaLen {
			t.Fatalf("consumed %d bytes, over the limit", len(in)-len(rest))
		}
		if !bytes.HasSuffix(in, rest) {
			t.Fatal("the rest is not the input's tail")
		}
		// Whatever was read writes back and reads again the same, when valid.
		if m.Validate() == nil {
			m2, err := ReadMeta(bufio.NewReader(bytes.NewReader(AppendHeader(nil, m))))
			if err != nil {
				t.Fatalf("re-read of written meta: %v", err)
			}
			if m.ImplementationClassUID == "" {
				m.ImplementationClassUID = DefaultImplementationClassUID
			}
			if m.ImplementationVersionName == "" {
				m.ImplementationVersionName = DefaultImplementationVersionName
			}
			// The group is written in order, whatever order it was read in.
			m.Unordered, m.Misplaced, m.After = false, 0, 0
			if d := cmp.Diff(m, m2); d != "" {
				t.Fatalf("round trip (-first +second):\n%s", d)
			}
		}
	})
}

func BenchmarkAppendHeader(b *testing.B) {
	m := sampleMeta()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendHeader(buf[:0], m)
	}
}

// TestSenderAE: the sender a file names is (0002,0017), or in a file
// without it (0002,0016), which files written before it name the sender in.
func TestSenderAE(t *testing.T) {
	tests := []struct {
		name string
		m    Meta
		want string
	}{
		{"sending AE", Meta{SourceApplicationEntityTitle: "ARCHIVE", SendingApplicationEntityTitle: "PACS", ReceivingApplicationEntityTitle: "ARCHIVE"}, "PACS"},
		{"source AE only, as files written before", Meta{SourceApplicationEntityTitle: " PACS "}, "PACS"},
		{"a blank sending AE", Meta{SourceApplicationEntityTitle: "PACS", SendingApplicationEntityTitle: "  "}, "PACS"},
		// Written now for a blank calling AE: (0002,0017) omitted, the
		// Source AE ours; the file names no sender, not us.
		{"no sending AE beside a receiving AE", Meta{SourceApplicationEntityTitle: "ARCHIVE", ReceivingApplicationEntityTitle: "ARCHIVE"}, ""},
		{"none", Meta{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.m.SenderAE(); got != tt.want {
				t.Errorf("SenderAE() = %q, want %q", got, tt.want)
			}
		})
	}
}
