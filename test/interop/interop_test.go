// Package interop drives the real scp-task with DCMTK's tools, the way a
// site's PACS would: echoscu, storescu and dcmsend against the running
// program, checking what lands in the store with dcmdump.
package interop

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/part10"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

func startSCP(t *testing.T, extra ...string) *scptest.SCP {
	t.Helper()
	return scptest.Start(t, scptest.Options{Args: append([]string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE,OTHER_AE"}, extra...)})
}

// storedFiles lists the objects under the store's incoming/ prefix.
func storedFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(root, "incoming"), func(p string, d os.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return filepath.SkipDir
		}
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".dcm") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func readMeta(t *testing.T, path string) part10.Meta {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := part10.ReadMeta(bufio.NewReader(f))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func TestEcho(t *testing.T) {
	testenv.RequireTools(t, "echoscu")
	scp := startSCP(t)
	r := dcmtk.Run(t, 30*time.Second, "echoscu", "-v", "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port())
	if r.Err != nil {
		t.Fatalf("echoscu failed: %v\n%s", r.Err, r.Output)
	}
	if !strings.Contains(r.Output, "Received Echo Response (Success)") {
		t.Fatalf("echoscu did not report success:\n%s", r.Output)
	}
}

// TestDcmsendTestdata sends every file shipped with the dicom module
// (Explicit and Implicit VR, Deflated, PET, MR, CR, Enhanced CT) and checks
// each stored file is the sent dataset, element by element, with a File
// Meta Information naming the transfer syntax it arrived in.
func TestDcmsendTestdata(t *testing.T) {
	testenv.RequireTools(t, "dcmsend", "dcmdump")
	scp := startSCP(t)
	files := testenv.DICOMTestdataFiles(t)
	args := append([]string{"-v", "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", "--no-halt", scp.Host(), scp.Port()}, files...)
	r := dcmtk.Run(t, 2*time.Minute, "dcmsend", args...)
	if r.Err != nil {
		t.Fatalf("dcmsend failed: %v\n%s", r.Err, r.Output)
	}
	stored := map[string]string{} // SOP Instance UID -> path
	for _, p := range storedFiles(t, scp.DataDir) {
		stored[readMeta(t, p).MediaStorageSOPInstanceUID] = p
	}
	if len(stored) != len(files) {
		t.Fatalf("stored %d objects, sent %d\n%s", len(stored), len(files), r.Output)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			sent := readMeta(t, f)
			p, ok := stored[sent.MediaStorageSOPInstanceUID]
			if !ok {
				t.Fatalf("instance %s not stored", sent.MediaStorageSOPInstanceUID)
			}
			got := readMeta(t, p)
			// dcmsend proposes Explicit VR LE beside a file's Implicit VR LE
			// and converts when the SCP prefers it (as ours does); any other
			// syntax must arrive and be recorded as sent.
			tsOK := got.TransferSyntaxUID == sent.TransferSyntaxUID ||
				(sent.TransferSyntaxUID == "1.2.840.10008.1.2" && got.TransferSyntaxUID == "1.2.840.10008.1.2.1")
			if !tsOK || got.MediaStorageSOPClassUID != sent.MediaStorageSOPClassUID {
				t.Errorf("meta: got TS %s class %s, sent TS %s class %s", got.TransferSyntaxUID, got.MediaStorageSOPClassUID, sent.TransferSyntaxUID, sent.MediaStorageSOPClassUID)
			}
			// PS3.10: the Source AE wrote the file (we did), the Sending
			// and Receiving AEs are the network's.
			if got.SourceApplicationEntityTitle != "REMOTE_AE" || got.SendingApplicationEntityTitle != "LOCAL_AE" || got.ReceivingApplicationEntityTitle != "REMOTE_AE" {
				t.Errorf("Source AE %q, Sending AE %q, Receiving AE %q; want ours REMOTE_AE, the calling AE LOCAL_AE, ours",
					got.SourceApplicationEntityTitle, got.SendingApplicationEntityTitle, got.ReceivingApplicationEntityTitle)
			}
			if d := cmp.Diff(dcmtk.Elements(t, f), dcmtk.Elements(t, p)); d != "" {
				t.Errorf("stored dataset differs from the sent one (dcmdump, -sent +stored):\n%s", d)
			}
		})
	}
}

func TestParallelStorescu(t *testing.T) {
	testenv.RequireTools(t, "storescu")
	scp := startSCP(t, "--max-associations", "8", "--max-associations-per-ae", "8")
	files := testenv.DICOMTestdataFiles(t)
	var wg sync.WaitGroup
	results := make([]dcmtk.Result, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// -xs proposes every supported syntax, including Deflated, so
			// DCMTK sends each file as it is encoded.
			args := append([]string{"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", "+sd", "-xs", scp.Host(), scp.Port()}, files...)
			results[i] = dcmtk.Run(t, 2*time.Minute, "storescu", args...)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.Err != nil {
			t.Errorf("storescu #%d failed: %v\n%s", i, r.Err, r.Output)
		}
	}
	// Eight copies of each instance: one object each, the rest duplicates.
	if got := len(storedFiles(t, scp.DataDir)); got != len(files) {
		t.Errorf("stored %d objects, want %d (identical resends are idempotent)", got, len(files))
	}
	if got := scp.Metric(t, "dicom_ingest_objects_stored_total"); got != float64(8*len(files)) {
		t.Errorf("objects acknowledged = %v, want %d", got, 8*len(files))
	}
	scp.WaitMetric(t, "dicom_ingest_associations_active", 0, 5*time.Second)
}

// TestRejects checks each refusal reaches DCMTK with the reason it prints.
func TestRejects(t *testing.T) {
	testenv.RequireTools(t, "echoscu")
	scp := startSCP(t, "--calling-aes", "LOCAL_AE,FAR_AE@10.99.0.0/16")
	tests := []struct {
		name, aet, aec string
		want           string
		reason         string
	}{
		{"unknown calling AE", "INTRUDER", "REMOTE_AE", "Calling AE Title Not Recognized", "calling_ae_not_recognized"},
		{"wrong called AE", "LOCAL_AE", "SOMEONE_ELSE", "Called AE Title Not Recognized", "called_ae_not_recognized"},
		{"calling AE outside its networks", "FAR_AE", "REMOTE_AE", "Calling AE Title Not Recognized", "calling_ae_not_recognized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			metric := `dicom_ingest_associations_rejected_total{reason="` + tt.reason + `"}`
			before := scp.Metric(t, metric)
			r := dcmtk.Run(t, 30*time.Second, "echoscu", "-aet", tt.aet, "-aec", tt.aec, scp.Host(), scp.Port())
			if r.Err == nil {
				t.Fatalf("echoscu succeeded, want a rejection:\n%s", r.Output)
			}
			if !strings.Contains(r.Output, "Association Rejected") || !strings.Contains(r.Output, tt.want) {
				t.Fatalf("echoscu output lacks %q:\n%s", tt.want, r.Output)
			}
			// The SCP counts a rejection once its A-ASSOCIATE-RJ is sent,
			// which echoscu may print and exit on first.
			scp.WaitMetric(t, metric, before+1, 5*time.Second)
		})
	}
}

// TestTooManyAssociations holds the only slot with a stalled storescu
// and checks the next association is refused with "local limit exceeded".
func TestTooManyAssociations(t *testing.T) {
	testenv.RequireTools(t, "echoscu", "storescu")
	scp := startSCP(t, "--max-associations", "1")
	hold := holdAssociation(t, scp)
	defer hold()
	r := dcmtk.Run(t, 30*time.Second, "echoscu", "-aet", "OTHER_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port())
	if r.Err == nil || !strings.Contains(r.Output, "Local Limit Exceeded") {
		t.Fatalf("want a rejection with Local Limit Exceeded, got %v:\n%s", r.Err, r.Output)
	}
}
