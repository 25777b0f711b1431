package ingest_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/ingest"
	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// anyStatus marks a case whose status is not fixed in advance (the
// agreement is all that is checked).
const anyStatus = 0xFFFF

// sample is one dataset to send.
type sample struct {
	name       string
	class, sop string // the command's Affected SOP Class/Instance UID
	ts         string
	ds         []byte
	want       uint16 // expected status, or anyStatus
}

// readerCodes are the findings that mean the pipeline could not read an
// object.
var readerCodes = map[string]bool{pipeline.CodeNotPart10: true, pipeline.CodeTruncated: true,
	pipeline.CodeMalformed: true, pipeline.CodeOverLimit: true}

// TestSCPAndPipelineAgree sends every sample through the real dicomnet
// server and the ingest handler into a file store, then validates what was
// stored with the pipeline: what the SCP acknowledges, the pipeline can
// read. Every refusal for a reader verdict is checked the other way: the
// pipeline cannot read the same dataset either, or the verdict lies in or
// after the top-level Pixel Data the pipeline does not read. Samples: the
// dicom module's testdata, a small synthetic corpus (test/corpus), the
// fuzz corpora under every transfer syntax the SCP negotiates, and crafted
// deep and odd objects.
func TestSCPAndPipelineAgree(t *testing.T) {
	samples := crafted(t)
	samples = append(samples, part10Samples(t, "testdata", testenv.DICOMTestdataFiles(t))...)
	samples = append(samples, part10Samples(t, "corpus", smallCorpus(t))...)
	samples = append(samples, fuzzSamples(t)...)

	store, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingStore{Store: store}
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{Handler: ingest.New(rec, ingest.Options{}), AcceptExplicitBigEndian: true})

	stored, refused := 0, 0
	for _, s := range samples {
		t.Run(s.name, func(t *testing.T) {
			rec.last = ""
			st, err := sendSample(t, srv.Addr, s, rec)
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			if s.want != anyStatus && st.Code != s.want {
				t.Fatalf("status %04X (%s), want %04X", st.Code, st.Comment, s.want)
			}
			if st.IsSuccess() || st.IsWarning() {
				stored++
				if rec.last == "" {
					t.Fatalf("status %04X but nothing stored", st.Code)
				}
				data, err := os.ReadFile(filepath.Join(store.Root(), rec.last))
				if err != nil {
					t.Fatal(err)
				}
				if f := readerFindings(t, rec.last, data, s); len(f) > 0 {
					t.Fatalf("the SCP acknowledged (%04X) what the pipeline cannot read: %+v", st.Code, f)
				}
				return
			}
			if rec.last != "" {
				t.Fatalf("status %04X (%s) yet %s was stored", st.Code, st.Comment, rec.last)
			}
			if st.Code&0xF000 != 0xC000 {
				return // refused for its identifiers: no reader verdict to compare
			}
			refused++
			pixelAt, verdict := localVerdict(s)
			if verdict == nil {
				if strings.Contains(st.Comment, "lacks SOP") {
					return
				}
				t.Fatalf("SCP refused (%04X %s) what the reader reads whole", st.Code, st.Comment)
			}
			file := append(part10.AppendHeader(nil, part10.Meta{MediaStorageSOPClassUID: s.class,
				MediaStorageSOPInstanceUID: s.sop, TransferSyntaxUID: s.ts}), s.ds...)
			key := objectKey(s)
			if f := readerFindings(t, key, file, s); len(f) == 0 && (pixelAt < 0 || verdictOffset(verdict) < pixelAt) {
				t.Fatalf("SCP refused (%04X %s: %v) what the pipeline reads", st.Code, st.Comment, verdict)
			}
		})
	}
	t.Logf("%d samples: %d stored and read by the pipeline, %d refused for a reader verdict", len(samples), stored, refused)
}

// recordingStore remembers the key of the last object stored.
type recordingStore struct {
	objectstore.Store
	last string
}

func (r *recordingStore) Put(ctx context.Context, obj objectstore.Object, part10 io.Reader) (objectstore.Stored, error) {
	st, err := r.Store.Put(ctx, obj, part10)
	if err == nil {
		r.last = st.Key
	}
	return st, err
}

// sendSample stores a sample over a new association, or, for a transfer
// syntax the SCP does not negotiate, through the handler directly (its
// in-process equivalent).
func sendSample(t *testing.T, addr string, s sample, store objectstore.Store) (dimse.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ts, ok := dicomuid.LookupTransferSyntax(s.ts); !ok || !ts.Storable {
		req := &dicomnet.CStoreRequest{Association: &dicomnet.AssociationInfo{ID: "direct", CallingAE: "SCU",
			RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}}, MessageID: 1,
			AffectedSOPClassUID: s.class, AffectedSOPInstanceUID: s.sop, TransferSyntaxUID: s.ts}
		err := ingest.New(store, ingest.Options{}).ServeCStore(ctx, req, bytes.NewReader(s.ds))
		var st dimse.Status
		if err != nil && !errors.As(err, &st) {
			return st, err
		}
		return st, nil
	}
	as, err := dicomnet.Dial(ctx, addr, dicomnet.ClientConfig{CallingAE: "SCU", CalledAE: "INGEST",
		Contexts: dicomnet.StorageContexts([]string{s.class}, s.ts)})
	if err != nil {
		return dimse.Status{}, err
	}
	defer func() {
		if err := as.Release(ctx); err != nil {
			t.Errorf("release: %v", err)
		}
	}()
	return as.Store(ctx, s.class, s.sop, s.ts, bytes.NewReader(s.ds))
}

// readerFindings runs the pipeline on a stored object and returns the
// findings that say it could not be read.
func readerFindings(t *testing.T, key string, data []byte, s sample) []pipeline.Finding {
	t.Helper()
	f := pt.New()
	sum := sha256.Sum256(data)
	f.Objects.Add(key, data, pt.SCPMetadata(s.class, s.sop, s.ts, hex.EncodeToString(sum[:])))
	res, err := f.Pipeline().ProcessObject(context.Background(), key)
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	var out []pipeline.Finding
	for _, fd := range res.Findings {
		if readerCodes[fd.Code] {
			out = append(out, fd)
		}
	}
	return out
}

func objectKey(s sample) string {
	return "incoming/2026/01/15/x/y/" + s.sop + ".dcm"
}

// localVerdict reads a sample with the same reader the SCP uses and
// returns where top-level Pixel Data starts (-1: none before the verdict)
// and its verdict, both in the (inflated) dataset.
func localVerdict(s sample) (int64, error) {
	in := dataset.NewInspector(bytes.NewReader(s.ds), s.ts)
	_, verdict := io.Copy(io.Discard, in)
	var src dataset.Source = bufio.NewReader(bytes.NewReader(s.ds))
	if enc, _ := dataset.EncodingOf(s.ts); enc.Deflated {
		src = bufio.NewReader(flate.NewReader(bytes.NewReader(s.ds)))
	}
	d := dataset.NewDecoder(src, s.ts)
	for {
		k, _ := d.Next()
		switch k {
		case dataset.KindEnd, dataset.KindError:
			return -1, verdict
		case dataset.KindElement:
			if e := d.Element(); e.Depth == 0 && dataset.IsPixelData(e.Tag) {
				return e.Start, verdict
			}
		}
	}
}

func verdictOffset(err error) int64 {
	var e *dataset.Error
	if errors.As(err, &e) {
		return e.Offset
	}
	return 0 // a deflate stream's verdict: at its start, for the comparison
}

// smallCorpus builds (once, cached in the temporary directory) a small
// subset of the synthetic corpus: every SOP class and transfer syntax of
// mixed/ and a few CT, MR and multi-frame objects. It needs Debian's
// python3-pydicom and DCMTK: without them it skips, and fails under CI.
func smallCorpus(t *testing.T) []string {
	t.Helper()
	dir := os.Getenv("DICOM_CORPUS_SMALL")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "dicom-ingest-corpus-small")
	}
	script := filepath.Join(testenv.ModuleRoot(t), "test", "corpus", "make-corpus.sh")
	cmd := exec.Command("bash", script, dir, "mixed", "ct", "mr", "big")
	cmd.Env = append(os.Environ(), "SCALE=0.004")
	if out, err := cmd.CombinedOutput(); err != nil {
		if testenv.CI() {
			t.Fatalf("make-corpus.sh: %v\n%s", err, out)
		}
		t.Logf("no synthetic corpus (make-corpus.sh needs python3-pydicom and DCMTK): %v\n%s", err, out)
		return nil
	}
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".dcm") && !strings.Contains(p, "/.") {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) == 0 {
		t.Fatalf("corpus in %s: %d files, %v", dir, len(files), err)
	}
	return files
}

// part10Samples sends each file's dataset with its File Meta's UIDs and
// transfer syntax, as storescu would.
func part10Samples(t *testing.T, prefix string, files []string) []sample {
	t.Helper()
	var out []sample
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s, ok := splitPart10(raw)
		if !ok {
			t.Fatalf("%s: not a Part 10 file", f)
		}
		s.name, s.want = prefix+"/"+filepath.Base(f), dimse.StatusSuccess
		out = append(out, s)
	}
	return out
}

func splitPart10(raw []byte) (sample, bool) {
	br := bufio.NewReader(bytes.NewReader(raw))
	m, err := part10.ReadMeta(br)
	if err != nil {
		return sample{}, false
	}
	ds, _ := io.ReadAll(br)
	return sample{class: m.MediaStorageSOPClassUID, sop: m.MediaStorageSOPInstanceUID, ts: m.TransferSyntaxUID, ds: ds}, true
}

// fuzzSamples turns every seed of the fuzz corpora kept in testdata into
// samples: Part 10 inputs as files, other byte strings as datasets under
// each transfer syntax the SCP negotiates, with the identifiers they
// carry (so that the SCP gets to read them whole).
func fuzzSamples(t *testing.T) []sample {
	t.Helper()
	root := filepath.Join(testenv.ModuleRoot(t), "shared")
	var out []sample
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(p, string(filepath.Separator)+filepath.Join("testdata", "fuzz")+string(filepath.Separator)) {
			return err
		}
		target := filepath.Base(filepath.Dir(p))
		if !strings.HasPrefix(target, "FuzzInspector") && !strings.HasPrefix(target, "FuzzDecoder") &&
			!strings.HasPrefix(target, "FuzzProcessObject") && !strings.HasPrefix(target, "FuzzReadHeader") &&
			!strings.HasPrefix(target, "FuzzReadMeta") && !strings.HasPrefix(target, "FuzzAgreement") {
			return nil
		}
		inputs, err := readFuzzFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, in := range inputs {
			b, ok := in.([]byte)
			if !ok {
				continue
			}
			name := "fuzz/" + target + "/" + d.Name()
			if s, ok := splitPart10(b); ok {
				if ts, ok := dicomuid.LookupTransferSyntax(s.ts); ok && ts.Storable {
					out = append(out, datasetSample(name, s.ts, s.ds, false))
				}
				continue
			}
			for _, ts := range []string{dicomuid.ExplicitVRLittleEndian, dicomuid.ImplicitVRLittleEndian,
				dicomuid.ExplicitVRBigEndian, dicomuid.DeflatedExplicitVRLittleEndian} {
				out = append(out, datasetSample(name+"/"+ts, ts, b, true))
			}
			break
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no fuzz corpus entries found")
	}
	return out
}

// datasetSample sends dataset bytes under the identifiers they carry, or
// made-up ones when they carry none fit for a command. With deflate, plain
// bytes are deflated first for a deflated transfer syntax.
func datasetSample(name, ts string, b []byte, deflate bool) sample {
	s := sample{name: name, ts: ts, ds: b, class: dicomuid.SecondaryCaptureImageStorage, sop: "1.2.3.4", want: anyStatus}
	plain := ts
	if enc, _ := dataset.EncodingOf(ts); enc.Deflated && !deflate {
		var inflated bytes.Buffer
		_, _ = io.Copy(&inflated, flate.NewReader(bytes.NewReader(b))) // what it holds, as far as it goes
		b, plain = inflated.Bytes(), dicomuid.ExplicitVRLittleEndian
	} else if enc.Deflated {
		plain = dicomuid.ExplicitVRLittleEndian // what the deflate stream holds
		s.ds = pt.Deflate(b)
	}
	in := dataset.NewInspector(bytes.NewReader(b), plain)
	_, _ = io.Copy(io.Discard, in) // only the header is wanted here
	h := in.Header()
	if dicomuid.IsStorageSOPClass(h.SOPClassUID) {
		s.class = h.SOPClassUID
	}
	if (part10.Meta{MediaStorageSOPClassUID: s.class, MediaStorageSOPInstanceUID: h.SOPInstanceUID, TransferSyntaxUID: ts}).Validate() == nil {
		s.sop = h.SOPInstanceUID
	}
	return s
}

// readFuzzFile parses a file of Go's fuzz corpus format ("go test fuzz
// v1", then one Go literal per argument).
func readFuzzFile(path string) ([]any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) == 0 || lines[0] != "go test fuzz v1" {
		return nil, fmt.Errorf("not a fuzz corpus file")
	}
	var out []any
	for _, l := range lines[1:] {
		expr, err := parser.ParseExpr(l)
		if err != nil {
			return nil, err
		}
		call, ok := expr.(*ast.CallExpr)
		if !ok || len(call.Args) != 1 {
			return nil, fmt.Errorf("unexpected %q", l)
		}
		switch arg := call.Args[0].(type) {
		case *ast.BasicLit:
			switch arg.Kind {
			case token.STRING:
				s, err := strconv.Unquote(arg.Value)
				if err != nil {
					return nil, err
				}
				if _, isArray := call.Fun.(*ast.ArrayType); isArray {
					out = append(out, []byte(s))
				} else {
					out = append(out, s)
				}
			case token.CHAR:
				r, _, _, err := strconv.UnquoteChar(arg.Value[1:len(arg.Value)-1], '\'')
				if err != nil {
					return nil, err
				}
				out = append(out, int64(r))
			default:
				n, err := strconv.ParseInt(arg.Value, 0, 64)
				if err != nil {
					return nil, err
				}
				out = append(out, n)
			}
		case *ast.Ident:
			out = append(out, arg.Name == "true")
		default:
			return nil, fmt.Errorf("unexpected %q", l)
		}
	}
	return out, nil
}

// SR and image identifiers for crafted samples.
const (
	basicTextSR = "1.2.840.10008.5.1.4.1.1.88.11"
	scImage     = "1.2.840.10008.5.1.4.1.1.7"
)

// srElems is a Basic Text SR whose content tree nests depth levels of
// CONTAINER (each CONTAINS the next) down to one TEXT item: depth Content
// Sequences one inside the other, and the leaf's Concept Name Code
// Sequence one more.
func srElems(depth int, sop string) []pt.Elem {
	code := func(v, scheme, meaning string) []pt.Elem {
		return []pt.Elem{pt.Str(pt.Tag(8, 0x100), "SH", v), pt.Str(pt.Tag(8, 0x102), "SH", scheme), pt.Str(pt.Tag(8, 0x104), "LO", meaning)}
	}
	item := []pt.Elem{
		pt.Str(pt.Tag(0x40, 0xA010), "CS", "CONTAINS"),
		pt.Str(pt.Tag(0x40, 0xA040), "CS", "TEXT"),
		pt.Seq(pt.Tag(0x40, 0xA043), false, code("121071", "DCM", "Finding")),
		pt.Str(pt.Tag(0x40, 0xA160), "UT", "Finding at the deepest level."),
	}
	for range depth - 1 {
		item = []pt.Elem{
			pt.Str(pt.Tag(0x40, 0xA010), "CS", "CONTAINS"),
			pt.Str(pt.Tag(0x40, 0xA040), "CS", "CONTAINER"),
			pt.Seq(pt.Tag(0x40, 0xA043), false, code("121070", "DCM", "Findings")),
			pt.Str(pt.Tag(0x40, 0xA050), "CS", "SEPARATE"),
			pt.Seq(pt.Tag(0x40, 0xA730), true, item),
		}
	}
	return []pt.Elem{
		pt.Str(pt.Tag(8, 0x16), "UI", basicTextSR),
		pt.Str(pt.Tag(8, 0x18), "UI", sop),
		pt.Str(pt.Tag(8, 0x20), "DA", "20260115"),
		pt.Str(pt.Tag(8, 0x23), "DA", "20260115"),
		pt.Str(pt.Tag(8, 0x30), "TM", "101500"),
		pt.Str(pt.Tag(8, 0x33), "TM", "101700"),
		pt.Str(pt.Tag(8, 0x50), "SH", "ACC-SR"),
		pt.Str(pt.Tag(8, 0x60), "CS", "SR"),
		pt.Str(pt.Tag(8, 0x70), "LO", "dicom-ingest tests"),
		pt.Str(pt.Tag(8, 0x90), "PN", ""),
		pt.Seq(pt.Tag(8, 0x1111), false),
		pt.Str(pt.Tag(0x10, 0x10), "PN", "Deep^Report"),
		pt.Str(pt.Tag(0x10, 0x20), "LO", "PSR0001"),
		pt.Str(pt.Tag(0x10, 0x30), "DA", ""),
		pt.Str(pt.Tag(0x10, 0x40), "CS", ""),
		pt.Str(pt.Tag(0x20, 0x0D), "UI", "1.2.826.0.1.3680043.10.9"),
		pt.Str(pt.Tag(0x20, 0x0E), "UI", "1.2.826.0.1.3680043.10.9.1"),
		pt.Str(pt.Tag(0x20, 0x10), "SH", "1"),
		pt.Str(pt.Tag(0x20, 0x11), "IS", "1"),
		pt.Str(pt.Tag(0x20, 0x13), "IS", "1"),
		pt.Str(pt.Tag(0x40, 0xA040), "CS", "CONTAINER"),
		pt.Seq(pt.Tag(0x40, 0xA043), false, code("18748-4", "LN", "Diagnostic Imaging Report")),
		pt.Str(pt.Tag(0x40, 0xA050), "CS", "SEPARATE"),
		pt.Seq(pt.Tag(0x40, 0xA372), false),
		pt.Str(pt.Tag(0x40, 0xA491), "CS", "COMPLETE"),
		pt.Str(pt.Tag(0x40, 0xA493), "CS", "UNVERIFIED"),
		pt.Seq(pt.Tag(0x40, 0xA730), true, item),
	}
}

// scElems is a Secondary Capture image of rows x 64 8-bit pixels, up to
// Pixel Data (the caller appends it).
func scElems(sop string, rows uint16) []pt.Elem {
	return []pt.Elem{
		pt.Str(pt.Tag(8, 0x16), "UI", scImage),
		pt.Str(pt.Tag(8, 0x18), "UI", sop),
		pt.Str(pt.Tag(8, 0x20), "DA", "20260115"),
		pt.Str(pt.Tag(8, 0x60), "CS", "OT"),
		pt.Str(pt.Tag(0x10, 0x10), "PN", "Crafted^Image"),
		pt.Str(pt.Tag(0x10, 0x20), "LO", "PCR0001"),
		pt.Str(pt.Tag(0x20, 0x0D), "UI", "1.2.826.0.1.3680043.10.8"),
		pt.Str(pt.Tag(0x20, 0x0E), "UI", "1.2.826.0.1.3680043.10.8.1"),
		pt.U16(pt.Tag(0x28, 0x02), 1),
		pt.Str(pt.Tag(0x28, 0x04), "CS", "MONOCHROME2"),
		pt.U16(pt.Tag(0x28, 0x10), rows),
		pt.U16(pt.Tag(0x28, 0x11), 64),
		pt.U16(pt.Tag(0x28, 0x100), 8),
		pt.U16(pt.Tag(0x28, 0x101), 8),
		pt.U16(pt.Tag(0x28, 0x102), 7),
		pt.U16(pt.Tag(0x28, 0x103), 0),
	}
}

func pixels(n int) pt.Elem { return pt.Raw(pt.Tag(0x7FE0, 0x10), "OB", make([]byte, n)) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// encode is the dataset bytes of elems in ts (Explicit VR Little Endian,
// or Implicit VR Little Endian for 1.2.840.10008.1.2 and, as written by
// pipelinetest, for the private syntax used here).
func encode(t *testing.T, class, sop, ts string, elems []pt.Elem) []byte {
	t.Helper()
	write := ts
	if ts == privateImplicit {
		write = dicomuid.ImplicitVRLittleEndian
	}
	s, ok := splitPart10(pt.Part10(pt.Meta{SOPClassUID: class, SOPInstanceUID: sop, TransferSyntaxUID: write}, elems))
	if !ok {
		t.Fatal("pipelinetest wrote no Part 10 file")
	}
	return s.ds
}

// encodedLen is the length of the SOP Class and Instance UID elements
// that start every crafted Secondary Capture dataset.
func encodedLen(t *testing.T, sop string) int {
	return len(encode(t, scImage, sop, dicomuid.ExplicitVRLittleEndian, scElems(sop, 64)[:2]))
}

// Private transfer syntaxes the SCP never negotiates: their datasets are
// read as their first element says.
const (
	privateImplicit = "1.2.826.0.1.3680043.10.99.1"
	privateExplicit = "1.2.826.0.1.3680043.10.99.2"
)

// crafted are the deep and odd objects of issues 14 and 16.
func crafted(t *testing.T) []sample {
	t.Helper()
	explicit, implicit := dicomuid.ExplicitVRLittleEndian, dicomuid.ImplicitVRLittleEndian
	var out []sample
	add := func(name, class, sop, ts string, ds []byte, want uint16) {
		out = append(out, sample{name: "crafted/" + name, class: class, sop: sop, ts: ts, ds: ds, want: want})
	}
	for _, c := range []struct {
		depth int
		ts    string
		want  uint16
	}{
		{16, explicit, dimse.StatusSuccess},
		{40, implicit, dimse.StatusSuccess},
		{dataset.MaxDepth - 1, explicit, dimse.StatusSuccess}, // the leaf's code sequence is at the limit
		{dataset.MaxDepth, implicit, ingest.StatusOverLimit},
	} {
		sop := fmt.Sprintf("1.2.826.0.1.3680043.10.9.1.%d", c.depth)
		add(fmt.Sprintf("sr-nested-%d-%s", c.depth, c.ts), basicTextSR, sop, c.ts, encode(t, basicTextSR, sop, c.ts, srElems(c.depth, sop)), c.want)
	}

	const sop = "1.2.826.0.1.3680043.10.8.1.1"
	head := encode(t, scImage, sop, explicit, scElems(sop, 64))
	whole := encode(t, scImage, sop, explicit, append(scElems(sop, 64), pixels(64*64)))
	add("sc-whole", scImage, sop, explicit, whole, dimse.StatusSuccess)
	add("sc-whole-implicit", scImage, sop, implicit, encode(t, scImage, sop, implicit, append(scElems(sop, 64), pixels(64*64))), dimse.StatusSuccess)
	// Pixel Data declaring 512 KiB and carrying 100 bytes (issue 16.3).
	pixelHeader := func(length uint32) []byte {
		return binary.LittleEndian.AppendUint32([]byte{0xE0, 0x7F, 0x10, 0x00, 'O', 'B', 0, 0}, length)
	}
	add("sc-pixel-data-cut", scImage, sop, explicit, cat(head, pixelHeader(512<<10), make([]byte, 100)), ingest.StatusTruncated)
	// The dataset ends inside any value: here the last one before Pixel Data.
	// (An even cut: the SCU pads an odd dataset to even length.)
	add("sc-cut-in-a-value", scImage, sop, explicit, head[:len(head)-2], ingest.StatusTruncated)
	// Encapsulated Pixel Data: an empty offset table and one fragment,
	// whole or cut.
	item := func(length uint32) []byte {
		return binary.LittleEndian.AppendUint32([]byte{0xFE, 0xFF, 0x00, 0xE0}, length)
	}
	seqDelim := []byte{0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0}
	fragments := cat(head, pixelHeader(dataset.UndefinedLength), item(0), item(4096))
	add("jpeg-fragments-whole", scImage, sop, dicomuid.JPEGBaseline8Bit, cat(fragments, make([]byte, 4096), seqDelim), dimse.StatusSuccess)
	add("jpeg-fragment-cut", scImage, sop, dicomuid.JPEGBaseline8Bit, cat(fragments, make([]byte, 100)), ingest.StatusTruncated)
	add("jpeg-no-sequence-delimiter", scImage, sop, dicomuid.JPEGBaseline8Bit, cat(fragments, make([]byte, 4096)), ingest.StatusTruncated)
	// Native Pixel Data shorter than its rows need, whole as a dataset:
	// stored; the pipeline reads it and flags pixel-data-length.
	add("sc-pixel-data-short-for-rows", scImage, sop, explicit,
		encode(t, scImage, sop, explicit, append(scElems(sop, 65), pixels(64*64))), dimse.StatusSuccess)
	// An item whose declared length its element overruns.
	refSOP := encode(t, scImage, sop, explicit, []pt.Elem{pt.Str(pt.Tag(8, 0x1150), "UI", scImage)})
	overrun := cat(item(6), refSOP)
	add("item-overrun", scImage, sop, explicit, cat(head[:encodedLen(t, sop)],
		binary.LittleEndian.AppendUint32([]byte{0x08, 0x00, 0x40, 0x11, 'S', 'Q', 0, 0}, uint32(len(overrun))), overrun), ingest.StatusUnreadable)
	// Group 0002 in the dataset (odd meta): dropped, B006.
	meta := pt.Part10(pt.Meta{SOPClassUID: scImage, SOPInstanceUID: sop, TransferSyntaxUID: explicit}, nil)[132:]
	add("group-0002-in-dataset", scImage, sop, explicit, cat(meta, whole), dimse.StatusElementsDiscarded)
	// The same deflated: kept as received, and the pipeline's File Meta
	// rule must not take them for meta.
	add("group-0002-in-deflated-dataset", scImage, sop, dicomuid.DeflatedExplicitVRLittleEndian, pt.Deflate(cat(meta, whole)), dimse.StatusSuccess)
	// Undeclared (private) transfer syntaxes, read as the first element says.
	add("private-syntax-implicit", scImage, sop, privateImplicit,
		encode(t, scImage, sop, privateImplicit, append(scElems(sop, 64), pixels(64*64))), dimse.StatusSuccess)
	add("private-syntax-explicit", scImage, sop, privateExplicit, whole, dimse.StatusSuccess)
	// A private value above what a header reader holds: skipped as bulk.
	large := scElems(sop, 64)
	large = append(large[:4:4], append([]pt.Elem{pt.Str(pt.Tag(9, 0x10), "LO", "DICOM-INGEST TEST"),
		pt.Raw(pt.Tag(9, 0x1001), "OB", make([]byte, dataset.MaxValueHeld+2))}, large[4:]...)...)
	add("large-private-value", scImage, sop, explicit, encode(t, scImage, sop, explicit, append(large, pixels(64*64))), dimse.StatusSuccess)
	return out
}
