package dicomnet_test

// Interop with DCMTK's echoscu and storescu (Debian package dcmtk); testenv skips or, under CI, fails without them.

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

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
	plain := buf.Bytes()
	if req.TransferSyntaxUID == dicomuid.DeflatedExplicitVRLittleEndian {
		// Deflated data sets pass through compressed; inflate only to check the content arrived intact.
		if plain, err = io.ReadAll(flate.NewReader(bytes.NewReader(buf.Bytes()))); err != nil {
			return err
		}
	}
	rec.hasUID = bytes.Contains(plain, []byte(req.AffectedSOPInstanceUID))
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
	echoscu, storescu := testenv.LookPath(t, "echoscu"), testenv.LookPath(t, "storescu")
	dir := testenv.DICOMTestdataDir(t)
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
	storescu := testenv.LookPath(t, "storescu")
	echoscu := testenv.LookPath(t, "echoscu")
	dir := testenv.DICOMTestdataDir(t)
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

// TestDCMTKUnsupportedService proposes services the SCP does not offer
// (Query/Retrieve): each presentation context must come back as
// abstract-syntax-not-supported, which DCMTK reports before giving up, and
// the server must go on answering.
func TestDCMTKUnsupportedService(t *testing.T) {
	echoscu := testenv.LookPath(t, "echoscu")
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{AETitle: "INGEST", Handler: &hashingHandler{}})
	host, port, _ := strings.Cut(srv.Addr, ":")
	for _, tool := range []string{"findscu", "movescu"} {
		t.Run(tool, func(t *testing.T) {
			out, err := runDCMTK(t, testenv.LookPath(t, tool), "-d", "-S", "-k", "QueryRetrieveLevel=STUDY", "-aet", "DCMTK", "-aec", "INGEST", host, port)
			if err == nil {
				t.Fatalf("%s succeeded against a storage SCP:\n%s", tool, out)
			}
			for _, w := range []string{"(Abstract Syntax Not Supported)", "No Acceptable Presentation Contexts"} {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	if out, err := runDCMTK(t, echoscu, "-aet", "DCMTK", "-aec", "INGEST", host, port); err != nil {
		t.Fatalf("echoscu after the refused services: %v\n%s", err, out)
	}
}

// TestDCMTKStorescuVariants drives storescu with option combinations that change what it proposes and how it
// sends: every run must store all its objects.
func TestDCMTKStorescuVariants(t *testing.T) {
	storescu := testenv.LookPath(t, "storescu")
	dir := testenv.DICOMTestdataDir(t)
	jpeg := filepath.Join(testenv.ModuleRoot(t), "scp-task", "internal", "thumbnail", "testdata", "jpeg-baseline.dcm")
	h := &hashingHandler{}
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{AETitle: "INGEST", Handler: h})
	host, port, _ := strings.Cut(srv.Addr, ":")
	tests := []struct {
		name  string
		opts  []string
		files []string
		ts    string
	}{
		{"deflated", []string{"-R", "-xd"}, []string{filepath.Join(dir, "6.dcm")}, dicomuid.DeflatedExplicitVRLittleEndian},
		{"implicit only", []string{"-R", "-xi"}, []string{filepath.Join(dir, "4.dcm")}, dicomuid.ImplicitVRLittleEndian},
		{"combined contexts", []string{"-R", "+C"}, []string{filepath.Join(dir, "1.dcm"), filepath.Join(dir, "3.dcm")}, dicomuid.ExplicitVRLittleEndian},
		{"small receive and send PDUs", []string{"-R", "-pdu", "4096", "--max-send-pdu", "4096"}, []string{filepath.Join(dir, "5.dcm")}, dicomuid.ExplicitVRLittleEndian},
		{"large PDUs", []string{"-R", "-pdu", "131072"}, []string{filepath.Join(dir, "5.dcm")}, dicomuid.ExplicitVRLittleEndian},
		// A JPEG Baseline object: -xy proposes its syntax in a context of
		// its own beside the uncompressed ones, +C in one context with
		// them, listed first. Both times it is stored as it is (a
		// lossless-first rule chose Explicit VR LE with +C, and storescu,
		// which cannot decompress, sent nothing).
		{"lossy object, its own context", []string{"-R", "-xy"}, []string{jpeg}, dicomuid.JPEGBaseline8Bit},
		{"lossy object listed first beside uncompressed", []string{"-R", "-xy", "+C"}, []string{jpeg}, dicomuid.JPEGBaseline8Bit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.mu.Lock()
			h.got = nil
			h.mu.Unlock()
			args := append(append([]string{}, tc.opts...), "-aet", "DCMTK", "-aec", "INGEST", host, port)
			args = append(args, tc.files...)
			if out, err := runDCMTK(t, storescu, args...); err != nil {
				t.Fatalf("storescu %v: %v\n%s", tc.opts, err, out)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.got) != len(tc.files) {
				t.Fatalf("received %d objects, want %d", len(h.got), len(tc.files))
			}
			for uid, rec := range h.got {
				if rec.tsUID != tc.ts || !rec.hasUID {
					t.Errorf("%s: transfer syntax %s (want %s), UID in data set %v", uid, rec.tsUID, tc.ts, rec.hasUID)
				}
			}
		})
	}
}

// TestClientAgainstStorescp sends every testdata file with our client to DCMTK's storescp (small PDUs, so the
// client must fragment within the peer's maximum) and checks storescp accepted and wrote each one.
func TestClientAgainstStorescp(t *testing.T) {
	storescp := testenv.LookPath(t, "storescp")
	dir := testenv.DICOMTestdataDir(t)
	out := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	cmd := exec.Command(storescp, "-aet", "STORESCP", "-pdu", "4096", "+xa", "-od", out, "+B", port) // +xa: all syntaxes, +B: bit-preserving
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	var logs testenv.LogBuffer // read by the wait below while storescp writes it
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	files, _ := filepath.Glob(filepath.Join(dir, "*.dcm"))
	var contexts []dicomnet.ProposedContext
	for _, f := range files {
		fh, _ := os.Open(f)
		m, err := part10.ReadMeta(bufio.NewReader(fh))
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		contexts = append(contexts, dicomnet.ProposedContext{AbstractSyntax: m.MediaStorageSOPClassUID, TransferSyntaxes: []string{m.TransferSyntaxUID}})
	}
	ctx := context.Background()
	var a *dicomnet.ClientAssociation
	testenv.EventuallySawWithin(t, 5*time.Second, "storescp to listen", func() (bool, string) { // it needs a moment
		a, err = dicomnet.Dial(ctx, "127.0.0.1:"+port, dicomnet.ClientConfig{CallingAE: "GOSCU", CalledAE: "STORESCP", Contexts: contexts})
		return err == nil, fmt.Sprintf("dial storescp: %v\n%s", err, logs.String())
	})
	if a.PeerMaxPDULength() != 4096 {
		t.Errorf("storescp max PDU %d", a.PeerMaxPDULength())
	}
	if err := a.Echo(ctx); err == nil {
		t.Error("echo succeeded without a Verification context")
	}
	for _, f := range files {
		st, err := a.StoreFile(ctx, f)
		if err != nil || !st.IsSuccess() {
			t.Fatalf("%s: %v %v\n%s", filepath.Base(f), st, err, logs.String())
		}
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	written, _ := os.ReadDir(out)
	if len(written) != len(files) {
		t.Errorf("storescp wrote %d files, want %d\n%s", len(written), len(files), logs.String())
	}
	// Bit-preserving storage: storescp's file holds the data set bytes we sent.
	for _, w := range written {
		got := part10DataSet(t, filepath.Join(out, w.Name()))
		found := false
		for _, f := range files {
			want := part10DataSet(t, f)
			if len(want)%2 == 1 {
				want = append(want, 0) // the client pads odd data sets
			}
			if bytes.Equal(got, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: data set matches none of the sent files", w.Name())
		}
	}
}

// TestDCMTKUserIdentity: User Identity Negotiation (PS3.7 D.3.3.7) is not supported: the sub-item is ignored and
// never answered. storescu sending a user name and password stores as without them; with --pos-response it asks
// for the answer, does not get it and gives up before sending anything. The credentials are never logged.
func TestDCMTKUserIdentity(t *testing.T) {
	storescu := testenv.LookPath(t, "storescu")
	dir := testenv.DICOMTestdataDir(t)
	h := &hashingHandler{}
	var logs testenv.LogBuffer
	srv := dicomnettest.NewServerT(t, &dicomnet.Server{AETitle: "INGEST", Handler: h,
		Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	host, port, _ := strings.Cut(srv.Addr, ":")
	identity := []string{"-usr", "alice", "-pwd", "s3cr3t-pw"}
	tests := []struct {
		name   string
		opts   []string
		stored int
		output string // in storescu's output
	}{
		{"user and password", identity, 1, "Association Accepted"},
		{"positive response requested", append(append([]string{}, identity...), "--pos-response"), 0,
			"Positive response requested but none received"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.mu.Lock()
			h.got = nil
			h.mu.Unlock()
			args := append(append([]string{"-v", "-R"}, tc.opts...), "-aet", "DCMTK", "-aec", "INGEST", host, port, filepath.Join(dir, "1.dcm"))
			out, err := runDCMTK(t, storescu, args...)
			if (err == nil) != (tc.stored == 1) || !strings.Contains(out, tc.output) {
				t.Fatalf("storescu %v: %v, output lacks %q:\n%s", tc.opts, err, tc.output, out)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.got) != tc.stored {
				t.Errorf("received %d objects, want %d", len(h.got), tc.stored)
			}
		})
	}
	if s := logs.String(); strings.Contains(s, "s3cr3t-pw") || strings.Contains(s, "alice") {
		t.Errorf("the logs hold the credentials:\n%s", s)
	}
}
