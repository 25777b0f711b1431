package dicomnet_test

// Interop with DCMTK's echoscu and storescu (Debian package dcmtk). Skipped when the tools are not installed.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
)

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("DCMTK %s not in PATH (apt-get install dcmtk): skipping interop test", name)
	}
	return p
}

// dicomTestdata returns the testdata directory of github.com/suyashkumar/dicom.
func dicomTestdata(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/suyashkumar/dicom").Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		t.Skipf("cannot locate github.com/suyashkumar/dicom testdata: %v", err)
	}
	return filepath.Join(string(bytes.TrimSpace(out)), "testdata")
}

// part10DataSet returns the data set bytes of a Part 10 file (after the preamble and group 0002).
func part10DataSet(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 144 || string(b[128:132]) != "DICM" || binary.LittleEndian.Uint16(b[132:]) != 2 || binary.LittleEndian.Uint16(b[134:]) != 0 {
		t.Fatalf("%s: not a Part 10 file with a group length", path)
	}
	return b[144+int(binary.LittleEndian.Uint32(b[140:])):]
}

type recorded struct {
	classUID, tsUID string
	sum             [32]byte
	n               int64
	tail            []byte // last 4 KiB
	hasUID          bool   // the data set contains the command's SOP Instance UID
}

// hashingHandler records a SHA-256 of every received data set by SOP Instance UID.
type hashingHandler struct {
	mu  sync.Mutex
	got map[string]recorded
}

func (h *hashingHandler) ServeCStore(ctx context.Context, req *dicomnet.CStoreRequest, r io.Reader) error {
	s := sha256.New()
	var buf bytes.Buffer
	n, err := io.Copy(io.MultiWriter(s, &buf), r)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.got == nil {
		h.got = map[string]recorded{}
	}
	rec := recorded{classUID: req.AffectedSOPClassUID, tsUID: req.TransferSyntaxUID, n: n}
	copy(rec.sum[:], s.Sum(nil))
	rec.tail = bytes.Clone(buf.Bytes()[max(0, buf.Len()-4096):])
	rec.hasUID = bytes.Contains(buf.Bytes(), []byte(req.AffectedSOPInstanceUID))
	h.got[req.AffectedSOPInstanceUID] = rec
	return nil
}

func runDCMTK(t *testing.T, tool string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(tool, args...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestDCMTKEchoAndStore(t *testing.T) {
	echoscu, storescu := needTool(t, "echoscu"), needTool(t, "storescu")
	dir := dicomTestdata(t)
	h := &hashingHandler{}
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{AETitle: "INGEST", Handler: h})
	host, port, _ := strings.Cut(srv.Addr, ":")

	if out, err := runDCMTK(t, echoscu, "-aet", "DCMTK", "-aec", "INGEST", host, port); err != nil {
		t.Fatalf("echoscu: %v\n%s", err, out)
	}

	// storescu re-encodes the data set it read (it drops group lengths and padding), so the received bytes are
	// compared with the file where DCMTK does not touch them: the trailing 4 KiB (pixel data) must be identical
	// and the data set must carry the command's SOP Instance UID. storescu proposes its full list of storage SOP
	// classes (no -R), and every one must be accepted.
	files := []string{"1.dcm", "3.dcm", "5.dcm"}
	args := []string{"-d", "-aet", "DCMTK", "-aec", "INGEST", host, port}
	for _, f := range files {
		args = append(args, filepath.Join(dir, f))
	}
	out, err := runDCMTK(t, storescu, args...)
	if err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	if strings.Contains(out, "Abstract Syntax Not Supported") || strings.Contains(out, "Transfer Syntaxes Not Supported") {
		t.Errorf("storescu saw rejected presentation contexts:\n%s", grepLines(out, "Not Supported"))
	}
	if n := strings.Count(out, "DIMSE Status                  : 0x0000: Success"); n != len(files) {
		t.Errorf("storescu reported %d successes, want %d", n, len(files))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got) != len(files) {
		t.Fatalf("handler received %d objects, want %d", len(h.got), len(files))
	}
	for _, f := range files {
		want := part10DataSet(t, filepath.Join(dir, f))
		found := false
		for uid, rec := range h.got {
			if d := rec.n - int64(len(want)); d > 1024 || d < -1024 || !bytes.Equal(rec.tail, want[len(want)-4096:]) {
				continue
			}
			found = true
			if rec.tsUID != dicomuid.ExplicitVRLittleEndian {
				t.Errorf("%s: transfer syntax %s, want Explicit VR LE", f, rec.tsUID)
			}
			if !rec.hasUID {
				t.Errorf("%s: data set lacks SOP Instance UID %s", f, uid)
			}
		}
		if !found {
			t.Errorf("%s: no received data set of about the file's size ends with the file's last 4 KiB", f)
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestDCMTKRejected(t *testing.T) {
	storescu := needTool(t, "storescu")
	echoscu := needTool(t, "echoscu")
	dir := dicomTestdata(t)
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{AETitle: "INGEST", Handler: &hashingHandler{},
		Accept: func(ctx context.Context, info *dicomnet.AssociationInfo) error {
			if info.CallingAE != "KNOWN" {
				return dicomnet.RejectCallingAENotRecognized
			}
			return nil
		}})
	host, port, _ := strings.Cut(srv.Addr, ":")
	tests := []struct {
		name, tool string
		args       []string
		want       []string
	}{
		{"wrong called AE", storescu, []string{"-aet", "KNOWN", "-aec", "OTHER", host, port, filepath.Join(dir, "1.dcm")},
			[]string{"Association Rejected", "Rejected Permanent", "Called AE Title Not Recognized"}},
		{"unknown calling AE", echoscu, []string{"-aet", "STRANGER", "-aec", "INGEST", host, port},
			[]string{"Association Rejected", "Rejected Permanent", "Calling AE Title Not Recognized"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runDCMTK(t, tc.tool, tc.args...)
			if err == nil {
				t.Fatalf("%s succeeded, want rejection:\n%s", tc.tool, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
