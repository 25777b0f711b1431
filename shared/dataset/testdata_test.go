package dataset_test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// splitFile returns a Part 10 file's meta and dataset bytes.
func splitFile(t testing.TB, raw []byte) (part10.Meta, []byte) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(raw))
	m, err := part10.ReadMeta(br)
	if err != nil {
		t.Fatalf("ReadMeta: %v", err)
	}
	ds, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	return m, ds
}

func topString(ds dicom.Dataset, tg tag.Tag) string {
	e, err := ds.FindElementByTag(tg) // top level only
	if err != nil {
		return ""
	}
	v, ok := e.Value.GetValue().([]string)
	if !ok || len(v) == 0 {
		return ""
	}
	return strings.Trim(v[0], " \x00")
}

// TestTestdata checks, for every file of the dicom module's testdata, that
// the UIDs an Inspector finds equal what suyashkumar/dicom parses, that the
// bytes pass unchanged whatever the read sizes, that the whole dataset
// reads without a verdict, and that a Decoder finds the same top-level
// elements up to Pixel Data as suyashkumar/dicom.
func TestTestdata(t *testing.T) {
	for _, f := range testenv.DICOMTestdataFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			m, ds := splitFile(t, raw)
			parsed, err := dicom.ParseFile(f, nil, dicom.SkipPixelData())
			if err != nil {
				t.Fatalf("dicom.ParseFile: %v", err)
			}
			want := dataset.Header{
				SOPClassUID:       topString(parsed, tag.SOPClassUID),
				SOPInstanceUID:    topString(parsed, tag.SOPInstanceUID),
				StudyInstanceUID:  topString(parsed, tag.StudyInstanceUID),
				SeriesInstanceUID: topString(parsed, tag.SeriesInstanceUID),
				Done:              true,
			}
			if want.SOPInstanceUID == "" || want.SeriesInstanceUID == "" {
				t.Fatalf("reference parse lacks UIDs: %+v", want)
			}
			for _, chunk := range dataset.ChunkSizes {
				in := dataset.NewInspector(bytes.NewReader(ds), m.TransferSyntaxUID)
				out, err := dataset.ReadChunks(in, chunk)
				if err != nil {
					t.Fatalf("chunk %d: read: %v", chunk, err)
				}
				if !bytes.Equal(out, ds) {
					t.Fatalf("chunk %d: bytes changed in pass-through", chunk)
				}
				if d := cmp.Diff(want, in.Header(), cmpopts.EquateErrors()); d != "" {
					t.Errorf("chunk %d: header (-dicom +inspector):\n%s", chunk, d)
				}
			}
			in := dataset.NewInspector(iotest.HalfReader(bytes.NewReader(ds)), m.TransferSyntaxUID, dataset.DropGroup0002())
			r, err := in.Peek()
			if err != nil {
				t.Fatalf("Peek: %v", err)
			}
			if d := cmp.Diff(want, in.Header(), cmpopts.EquateErrors()); d != "" {
				t.Errorf("Peek header (-dicom +peek):\n%s", d)
			}
			if out, err := io.ReadAll(r); err != nil || !bytes.Equal(out, ds) {
				t.Errorf("Peek reader: err %v, equal %v", err, bytes.Equal(out, ds))
			}

			if m.TransferSyntaxUID == "1.2.840.10008.1.2.1.99" {
				return // the Decoder reads inflated bytes; the pipeline tests cover it
			}
			var wantTags []uint32
			for _, e := range parsed.Elements {
				if t := uint32(e.Tag.Group)<<16 | uint32(e.Tag.Element); t>>16 != 0x0002 && !dataset.IsPixelData(t) {
					wantTags = append(wantTags, t)
				}
			}
			gotTags := topLevelTags(t, ds, m.TransferSyntaxUID)
			if !slices.Equal(gotTags, wantTags) {
				t.Errorf("top-level tags: decoder %d, dicom %d\n%s", len(gotTags), len(wantTags), cmp.Diff(wantTags, gotTags))
			}
		})
	}
}

// topLevelTags walks ds with a Decoder up to Pixel Data.
func topLevelTags(t *testing.T, ds []byte, ts string) []uint32 {
	t.Helper()
	d := dataset.NewDecoder(bufio.NewReader(bytes.NewReader(ds)), ts)
	var tags []uint32
	for {
		k, err := d.Next()
		switch k {
		case dataset.KindError:
			t.Fatalf("decoder: %v", err)
		case dataset.KindEnd:
			return tags
		case dataset.KindElement:
			e := d.Element()
			if e.Depth > 0 {
				continue
			}
			if dataset.IsPixelData(e.Tag) {
				return tags
			}
			tags = append(tags, e.Tag)
		}
	}
}
