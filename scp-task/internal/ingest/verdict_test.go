package ingest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/ingest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// scp is the real server with the ingest handler over a file store.
func scp(t *testing.T) (*dicomnettest.Server, *filestore.Store) {
	t.Helper()
	return scpWith(t, ingest.Options{})
}

// scpWith is scp with the handler's options (its logger).
func scpWith(t *testing.T, opts ingest.Options) (*dicomnettest.Server, *filestore.Store) {
	t.Helper()
	store, err := filestore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return dicomnettest.NewServerT(t, &dicomnet.Server{Handler: ingest.New(store, opts)}), store
}

// incoming lists the keys of the objects a file store holds.
func incoming(t *testing.T, store *filestore.Store) []string {
	t.Helper()
	var keys []string
	err := filepath.WalkDir(filepath.Join(store.Root(), "incoming"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(store.Root(), p)
			keys = append(keys, filepath.ToSlash(rel))
		}
		if os.IsNotExist(err) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// associate opens an association with the SCP proposing class in the
// transfer syntaxes ts, released when the test ends.
func associate(t *testing.T, srv *dicomnettest.Server, class string, ts ...string) *dicomnet.ClientAssociation {
	t.Helper()
	as, err := dicomnet.Dial(context.Background(), srv.Addr, dicomnet.ClientConfig{CallingAE: "SCU", CalledAE: "INGEST",
		Contexts: dicomnet.StorageContexts([]string{class}, ts...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := as.Release(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return as
}

// processStored runs the pipeline on a stored object.
func processStored(t *testing.T, store *filestore.Store, key, class, sop, ts string) pipeline.ObjectResult {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(store.Root(), key))
	if err != nil {
		t.Fatal(err)
	}
	f := pt.New()
	sum := sha256.Sum256(data)
	f.Objects.Add(key, data, pt.SCPMetadata(class, sop, ts, hex.EncodeToString(sum[:])))
	res, err := f.Pipeline().ProcessObject(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestTruncatedPixelDataRefused (issue 16.3): a raw C-STORE of a Secondary
// Capture whose Pixel Data declares 512 KiB and carries 100 bytes is
// refused with C001 naming the element, and nothing is stored; the same
// association then stores a whole object, which the pipeline indexes.
// The old SCP answered 0000 and stored it.
func TestTruncatedPixelDataRefused(t *testing.T) {
	srv, store := scp(t)
	ctx := context.Background()
	as := associate(t, srv, scImage, dicomuid.ExplicitVRLittleEndian)
	const sop = "1.2.826.0.1.3680043.10.8.1.7"
	head := encode(t, scImage, sop, dicomuid.ExplicitVRLittleEndian, scElems(sop, 64))
	cut := cat(head, binary.LittleEndian.AppendUint32([]byte{0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0}, 512<<10), make([]byte, 100))
	st, err := as.Store(ctx, scImage, sop, dicomuid.ExplicitVRLittleEndian, bytesReader(cut))
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != ingest.StatusTruncated || !strings.Contains(st.Comment, "(7FE0,0010)") {
		t.Fatalf("status %04X %q, want C001 naming (7FE0,0010)", st.Code, st.Comment)
	}
	if keys := incoming(t, store); len(keys) != 0 {
		t.Fatalf("a refused object was stored: %v", keys)
	}

	whole := encode(t, scImage, sop, dicomuid.ExplicitVRLittleEndian, append(scElems(sop, 64), pixels(64*64)))
	st, err = as.Store(ctx, scImage, sop, dicomuid.ExplicitVRLittleEndian, bytesReader(whole))
	if err != nil || !st.IsSuccess() {
		t.Fatalf("whole object after the refusal: %v %v", st, err)
	}
	keys := incoming(t, store)
	if len(keys) != 1 {
		t.Fatalf("stored %v, want the whole object only", keys)
	}
	if res := processStored(t, store, keys[0], scImage, sop, dicomuid.ExplicitVRLittleEndian); !res.Valid || res.Outcome != pipeline.InstanceNew {
		t.Errorf("pipeline: valid %v, outcome %v, findings %+v", res.Valid, res.Outcome, res.Findings)
	}
}

// TestDeepSRStoredAndIndexed (issue 14): a Basic Text SR whose content
// tree nests 16 or 40 levels deep is acknowledged and then indexed, not
// quarantined as malformed (the old pipeline stopped at 12 levels). DCMTK's
// dsrdump reads the 40-deep one as a valid SR document, when installed.
func TestDeepSRStoredAndIndexed(t *testing.T) {
	srv, store := scp(t)
	ctx := context.Background()
	for _, depth := range []int{16, 40} {
		for _, ts := range []string{dicomuid.ExplicitVRLittleEndian, dicomuid.ImplicitVRLittleEndian} {
			t.Run(fmt.Sprintf("%d/%s", depth, ts), func(t *testing.T) {
				sop := fmt.Sprintf("1.2.826.0.1.3680043.10.9.2.%d.%d", depth, len(ts))
				ds := encode(t, basicTextSR, sop, ts, srElems(depth, sop))
				as, err := dicomnet.Dial(ctx, srv.Addr, dicomnet.ClientConfig{CallingAE: "SCU", CalledAE: "INGEST",
					Contexts: dicomnet.StorageContexts([]string{basicTextSR}, ts)})
				if err != nil {
					t.Fatal(err)
				}
				st, err := as.Store(ctx, basicTextSR, sop, ts, bytesReader(ds))
				if rerr := as.Release(ctx); rerr != nil {
					t.Error(rerr)
				}
				if err != nil || !st.IsSuccess() {
					t.Fatalf("store: %v %v", st, err)
				}
				var key string
				for _, k := range incoming(t, store) {
					if strings.HasSuffix(k, "/"+sop+".dcm") {
						key = k
					}
				}
				res := processStored(t, store, key, basicTextSR, sop, ts)
				if !res.Valid || res.Outcome != pipeline.InstanceNew {
					t.Fatalf("pipeline: valid %v, outcome %v, findings %+v", res.Valid, res.Outcome, res.Findings)
				}
				if depth == 40 {
					dsrdumpValid(t, filepath.Join(store.Root(), key))
				}
			})
		}
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// dsrdumpValid checks DCMTK reads path as an SR document without error.
func dsrdumpValid(t *testing.T, path string) {
	t.Helper()
	dsrdump, err := exec.LookPath("dsrdump")
	if err != nil {
		if testenv.CI() {
			t.Fatal("dsrdump not installed (apt-get install dcmtk)")
		}
		t.Log("dsrdump not installed: DCMTK's reading of the SR not checked")
		return
	}
	out, err := exec.Command(dsrdump, "-Ee", "+Pc", path).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("E: ")) || bytes.Contains(out, []byte("W: ")) {
		t.Fatalf("dsrdump: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("Finding at the deepest level.")) {
		t.Errorf("dsrdump did not reach the deepest item:\n%.2000s", out)
	}
}

// TestTagOrder: a data set with an element out of tag order (PS3.5 §7.1)
// but none repeated, at the top level, past the series UID or deflated, is
// stored (0000), as DCMTK, dcm4che, Orthanc and pydicom read it and as
// forwarders pass stored bytes on unchanged, under the key its UIDs name
// wherever they were placed; the pipeline keeps it with the tag-order
// warning. One with an element repeated (two values, which holds?) is
// refused C000 with a comment naming the tag, nothing is stored, and the
// pipeline finds the same file malformed for the same reason.
func TestTagOrder(t *testing.T) {
	var logs testenv.LogBuffer
	srv, store := scpWith(t, ingest.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	ctx := context.Background()
	explicit, deflated := dicomuid.ExplicitVRLittleEndian, dicomuid.DeflatedExplicitVRLittleEndian
	as := associate(t, srv, scImage, explicit, deflated)
	const sop = "1.2.826.0.1.3680043.10.8.1.9"
	elems := append(scElems(sop, 64), pixels(64*64))
	swapped := append([]pt.Elem(nil), elems...)
	swapped[4], swapped[5] = swapped[5], swapped[4] // Patient ID (0010,0020) before Patient's Name (0010,0010)
	// The SOP Instance UID (0008,0018) after Rows (0028,0010), past the series UID where, in order, the SCP's
	// header ends.
	late := append(append(append([]pt.Elem{elems[0]}, elems[2:11]...), elems[1]), elems[11:]...)
	ref := pt.Seq(pt.Tag(8, 0x1140), false, []pt.Elem{pt.Str(pt.Tag(8, 0x1150), "UI", scImage),
		pt.Str(pt.Tag(8, 0x1150), "UI", scImage), pt.Str(pt.Tag(8, 0x1155), "UI", sop+".1")})
	repeated := append(append(append([]pt.Elem(nil), elems[:4]...), ref), elems[4:]...) // (0008,1140) before (0010,0010)
	tests := []struct {
		name, ts         string
		ds               []pt.Elem
		deflate          bool
		misplaced, after string // the tag-order warning's; "" for a refusal
		tag              string // the repeat's, named by the refusal and the finding
	}{
		{"out of order", explicit, swapped, false, "(0010,0010)", "(0010,0020)", ""},
		{"out of order, deflated", deflated, swapped, true, "(0010,0010)", "(0010,0020)", ""},
		{"SOP Instance UID past the series UID", explicit, late, false, "(0008,0018)", "(0028,0010)", ""},
		{"repeated in an item", explicit, repeated, false, "", "", "(0008,1150)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := encode(t, scImage, sop, explicit, tt.ds)
			if tt.deflate {
				ds = pt.Deflate(ds)
			}
			before, logged := incoming(t, store), logs.Len()
			st, err := as.Store(ctx, scImage, sop, tt.ts, bytesReader(ds))
			if err != nil {
				t.Fatal(err)
			}
			// The SCP's line for an object stored out of order (written before the response), by association
			// and message id, never a UID; none for a refusal.
			var lines []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(logs.String()[logged:]), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "stored with elements out of tag order" {
					lines = append(lines, m)
				}
			}
			if strings.Contains(logs.String(), sop) {
				t.Errorf("the log names the SOP Instance UID:\n%s", logs.String())
			}
			switch {
			case tt.tag != "" && len(lines) != 0:
				t.Errorf("a refused object logged as stored: %v", lines)
			case tt.tag == "" && (len(lines) != 1 || lines[0]["misplaced"] != tt.misplaced || lines[0]["after"] != tt.after ||
				lines[0]["association"] == "" || lines[0]["message_id"] == nil):
				t.Errorf("log lines %v, want one naming %s after %s, the association and the message id", lines, tt.misplaced, tt.after)
			}
			if tt.tag != "" {
				if want := "element repeated at " + tt.tag; st.Code != ingest.StatusUnreadable || st.Comment != want {
					t.Errorf("status %04X %q, want C000 %q", st.Code, st.Comment, want)
				}
				if keys := incoming(t, store); len(keys) != len(before) {
					t.Fatalf("a refused object was stored: %v", keys)
				}
				// The pipeline reads the same file (one stored by an earlier build, or by other means) as
				// malformed, saying why.
				file := append(part10.AppendHeader(nil, part10.Meta{MediaStorageSOPClassUID: scImage,
					MediaStorageSOPInstanceUID: sop, TransferSyntaxUID: tt.ts}), ds...)
				f := pt.New()
				key := "incoming/order/" + strings.ReplaceAll(tt.name, " ", "-") + ".dcm"
				sum := sha256.Sum256(file)
				f.Objects.Add(key, file, pt.SCPMetadata(scImage, sop, tt.ts, hex.EncodeToString(sum[:])))
				res, err := f.Pipeline().ProcessObject(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				var malformed bool
				for _, fd := range res.Findings {
					malformed = malformed || fd.Code == pipeline.CodeMalformed && strings.Contains(fd.Message, "repeated element: tag "+tt.tag)
				}
				if res.Valid || !malformed {
					t.Errorf("pipeline: valid %v, findings %+v, want malformed naming %s", res.Valid, res.Findings, tt.tag)
				}
				return
			}
			if st.Code != 0 {
				t.Fatalf("status %04X %q, want 0000: an element out of tag order is stored", st.Code, st.Comment)
			}
			// Stored under the key its UIDs name, the study and series included.
			var key string
			for _, k := range incoming(t, store) {
				if !slices.Contains(before, k) {
					key = k
				}
			}
			if want := "/1.2.826.0.1.3680043.10.8/1.2.826.0.1.3680043.10.8.1/" + sop + ".dcm"; !strings.HasSuffix(key, want) {
				t.Fatalf("stored as %q, want a key ending %q", key, want)
			}
			stored, err := os.ReadFile(filepath.Join(store.Root(), key))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(stored, ds) { // a deflated one of odd length padded by the sender
				t.Error("the data set was not stored as sent")
			}
			res := processStored(t, store, key, scImage, sop, tt.ts)
			var warned []pipeline.Finding
			for _, fd := range res.Findings {
				if fd.Code == pipeline.CodeTagOrder {
					warned = append(warned, fd)
				}
			}
			want := "elements not in ascending tag order: " + tt.misplaced + " after " + tt.after
			if !res.Valid || res.Outcome != pipeline.InstanceNew || len(warned) != 1 || warned[0].Severity != pipeline.SeverityWarning ||
				warned[0].Message != want || warned[0].Tag != tt.misplaced {
				t.Errorf("pipeline: valid %v, outcome %v, findings %+v; want kept with the warning %q", res.Valid, res.Outcome, res.Findings, want)
			}
			// The store keeps one object a key: make room for the next case.
			if err := os.Remove(filepath.Join(store.Root(), key)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestAfterPixelData: elements after top-level Pixel Data. In tag order
// (PS3.5 §7.1) only groups above 7FE0 may follow it: private groups,
// Digital Signatures (FFFA,FFFA), Data Set Trailing Padding (FFFC,FFFC);
// such an object is stored (0000) as sent and the pipeline keeps it, its
// header read up to Pixel Data. None of the UIDs the SCP looks for can
// come there in order: a data set naming its SOP Instance UID only after
// Pixel Data is out of order past where the header is read, and refused
// C000; one naming its Study or Series Instance UID only there is stored
// as one lacking it is (under unknown-study, unknown-series) and
// quarantined by validation, the UID missing where the header is read
// (conformance.md, Elements after Pixel Data).
func TestAfterPixelData(t *testing.T) {
	srv, store := scp(t)
	ctx := context.Background()
	explicit := dicomuid.ExplicitVRLittleEndian
	as := associate(t, srv, scImage, explicit)
	const sop = "1.2.826.0.1.3680043.10.8.1.11"
	elems := append(scElems(sop, 64), pixels(64*64))
	trailing := []pt.Elem{
		pt.Str(pt.Tag(0x7FE1, 0x10), "LO", "VENDOR PRIVATE"),
		pt.Raw(pt.Tag(0x7FE1, 0x1001), "OB", []byte{1, 2, 3, 4}),
		pt.Seq(pt.Tag(0xFFFA, 0xFFFA), false),
		pt.Raw(pt.Tag(0xFFFC, 0xFFFC), "OB", make([]byte, 16)),
	}
	// last is elems with its i-th element moved after Pixel Data.
	last := func(i int) []pt.Elem { return append(append(slices.Clone(elems[:i]), elems[i+1:]...), elems[i]) }
	tests := []struct {
		name    string
		ds      []pt.Elem
		code    uint16
		comment string
		dir     string // a directory of the key it is stored under
		missing string // the tag validation finds missing, quarantining it; "" kept
		tail    []byte // raw bytes after the data set's elements
	}{
		{"trailing padding", append(slices.Clone(elems), trailing[3]), 0, "", "", "", nil},
		{"private group, signatures, padding", append(slices.Clone(elems), trailing...), 0, "", "", "", nil},
		{"SOP Instance UID only after Pixel Data", last(1), ingest.StatusUnreadable, "dataset lacks SOP Class or SOP Instance UID", "", "", nil},
		{"Study Instance UID only after Pixel Data", last(6), 0, "", "/" + objectstore.UnknownStudy + "/", "(0020,000D)", nil},
		{"Series Instance UID only after Pixel Data", last(7), 0, "", "/" + objectstore.UnknownSeries + "/", "(0020,000E)", nil},
		// Read as any other element: a repeat is refused, a value overrunning the data set is cut.
		{"padding repeated", append(slices.Clone(elems), trailing[3], trailing[3]), ingest.StatusUnreadable, "element repeated at (FFFC,FFFC)", "", "", nil},
		{"padding overrunning the data set", elems, ingest.StatusTruncated, "dataset ends inside an element at (FFFC,FFFC)", "", "",
			binary.LittleEndian.AppendUint32([]byte{0xFC, 0xFF, 0xFC, 0xFF, 'O', 'B', 0, 0}, 1024)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := cat(encode(t, scImage, sop, explicit, tt.ds), tt.tail)
			before := incoming(t, store)
			st, err := as.Store(ctx, scImage, sop, explicit, bytesReader(ds))
			if err != nil {
				t.Fatal(err)
			}
			if st.Code != tt.code || st.Comment != tt.comment {
				t.Fatalf("status %04X %q, want %04X %q", st.Code, st.Comment, tt.code, tt.comment)
			}
			var key string
			for _, k := range incoming(t, store) {
				if !slices.Contains(before, k) {
					key = k
				}
			}
			if tt.code != 0 {
				if key != "" {
					t.Fatalf("a refused object was stored: %s", key)
				}
				return
			}
			stored, err := os.ReadFile(filepath.Join(store.Root(), key))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasSuffix(stored, ds) {
				t.Error("the data set was not stored as sent")
			}
			if !strings.Contains(key, tt.dir) {
				t.Errorf("stored under %s, want a key with %s", key, tt.dir)
			}
			res := processStored(t, store, key, scImage, sop, explicit)
			switch {
			case tt.missing == "" && (!res.Valid || res.Outcome != pipeline.InstanceNew):
				t.Errorf("pipeline: valid %v, outcome %v, findings %+v; want kept", res.Valid, res.Outcome, res.Findings)
			case tt.missing != "" && (res.Valid || !slices.ContainsFunc(res.Findings, func(f pipeline.Finding) bool {
				return f.Code == pipeline.CodeMissingAttribute && f.Severity == pipeline.SeverityError && f.Tag == tt.missing
			})):
				t.Errorf("pipeline: valid %v, findings %+v; want quarantined, %s missing", res.Valid, res.Findings, tt.missing)
			}
			if err := os.Remove(filepath.Join(store.Root(), key)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestUIDOutOfOrderPastTheHeader: the SCP looks for the SOP Instance UID
// in what it holds before it stores (the first 256 KiB of the data set,
// conformance.md's Elements out of tag order): one placed out of order
// after a large element past them is not found, and the data set is
// refused C000 as lacking it, nothing stored.
func TestUIDOutOfOrderPastTheHeader(t *testing.T) {
	srv, store := scp(t)
	explicit := dicomuid.ExplicitVRLittleEndian
	as := associate(t, srv, scImage, explicit)
	const sop = "1.2.826.0.1.3680043.10.8.1.10"
	elems := append(scElems(sop, 64), pixels(64*64))
	big := pt.Raw(pt.Tag(9, 0x1010), "OB", make([]byte, 300<<10)) // a private value past the first 256 KiB
	ds := append(append([]pt.Elem{elems[0], big}, elems[1]), elems[2:]...)
	before := incoming(t, store)
	st, err := as.Store(context.Background(), scImage, sop, explicit, bytesReader(encode(t, scImage, sop, explicit, ds)))
	if err != nil {
		t.Fatal(err)
	}
	if st.Code != ingest.StatusUnreadable || st.Comment != "dataset lacks SOP Class or SOP Instance UID" {
		t.Errorf("status %04X %q, want C000 lacking the SOP Instance UID", st.Code, st.Comment)
	}
	if keys := incoming(t, store); len(keys) != len(before) {
		t.Fatalf("a refused object was stored: %v", keys)
	}
}
