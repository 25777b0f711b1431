package dataset_test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// dcmdumpTop matches a top-level (unindented) wanted element in dcmdump -Un.
var dcmdumpTop = regexp.MustCompile(`(?m)^\((0008,0016|0008,0018|0020,000d|0020,000e)\) UI \[([0-9.]*)\]`)

// TestCorpus compares the Inspector with DCMTK on every file of the
// synthetic corpus's mixed transfer syntaxes (Explicit VR Big Endian, JPEG
// family, JPEG-LS, JPEG 2000, RLE, deflated...). It needs dcmdump and the
// corpus, which `make test` builds: test/corpus/make-corpus.sh
// $DICOM_CORPUS mixed (default /tmp/dicom-corpus).
func TestCorpus(t *testing.T) {
	dcmdump := testenv.LookPath(t, "dcmdump")
	files := testenv.CorpusFiles(t, "mixed")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			dump, err := exec.Command(dcmdump, "-Un", f).Output()
			if err != nil {
				t.Fatalf("dcmdump: %v", err)
			}
			want := dataset.Header{Done: true}
			for _, m := range dcmdumpTop.FindAllStringSubmatch(string(dump), -1) {
				switch m[1] {
				case "0008,0016":
					want.SOPClassUID = m[2]
				case "0008,0018":
					want.SOPInstanceUID = m[2]
				case "0020,000d":
					want.StudyInstanceUID = m[2]
				case "0020,000e":
					want.SeriesInstanceUID = m[2]
				}
			}
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(bytes.NewReader(raw))
			m, err := part10.ReadMeta(br)
			if err != nil {
				t.Fatal(err)
			}
			ds, _ := io.ReadAll(br)
			in := dataset.NewInspector(bytes.NewReader(ds), m.TransferSyntaxUID)
			out, err := dataset.ReadChunks(in, 1000)
			if err != nil || !bytes.Equal(out, ds) {
				t.Fatalf("pass-through: err %v, equal %v", err, bytes.Equal(out, ds))
			}
			if d := cmp.Diff(want, in.Header(), cmpopts.EquateErrors()); d != "" {
				t.Errorf("%s: header (-dcmdump +inspector):\n%s", m.TransferSyntaxUID, d)
			}
		})
	}
}
