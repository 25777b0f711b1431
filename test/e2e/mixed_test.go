package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// mixedCorpus builds the benchmark corpus's mixed/ set with
// test/corpus/make-corpus.sh and returns its directory. Missing tools skip
// the test on a developer machine and fail it in CI (testenv).
func mixedCorpus(t *testing.T) string {
	t.Helper()
	testenv.RequireTools(t, "dcmconv", "dcmcjpeg", "dcmcrle", "dcmcjpls")
	if err := exec.Command("/usr/bin/python3", "-c", "import pydicom, numpy").Run(); err != nil {
		testenv.Missing(t, "python3 with pydicom and numpy", "apt-get install python3-pydicom python3-numpy")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(testenv.ModuleRoot(t), "test/corpus/make-corpus.sh"), out, "mixed")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make-corpus.sh mixed: %v\n%s", err, b)
	}
	return filepath.Join(out, "mixed")
}

// TestMixedCorpusFlagsPatientMismatch sends the corpus's mixed/ set, whose
// CT (Patient ID PCT0001, Bench^CT) and other instances (PMIX001,
// Bench^Mixed) share one Study Instance UID, and checks the study is not
// merged silently: the study and every instance of the other patient carry
// a patient-mismatch finding in the index, the portal and its JSON, the
// audit trail and the events.
func TestMixedCorpusFlagsPatientMismatch(t *testing.T) {
	need(t, "dcmsend")
	corpus := mixedCorpus(t)
	files, _ := filepath.Glob(filepath.Join(corpus, "*.dcm"))
	var ours []string // the real sample files are studies of their own
	for _, f := range files {
		if !strings.HasPrefix(filepath.Base(f), "suyash_") {
			ours = append(ours, f)
		}
	}
	n := newNode(t, filepath.Join(t.TempDir(), "data"))
	n.start()
	if out, err := n.dcmsend("LOCAL_AE", ours...); err != nil {
		t.Fatalf("dcmsend mixed/: %v\n%s", err, out)
	}

	var st apiStudy
	testenv.Eventually(t, "the mixed study with all its instances", func() bool {
		for _, s := range n.studies() {
			if slices.Contains(s.Modalities, "CT") && slices.Contains(s.Modalities, "MR") && s.InstanceCount == len(ours) {
				st = s
				return true
			}
		}
		return false
	})
	tags := func(fs []pipeline.Finding) []string {
		var out []string
		for _, f := range fs {
			if f.Code == pipeline.CodePatientMismatch {
				out = append(out, f.Tag)
			}
		}
		slices.Sort(out)
		return out
	}
	// Same birth date, other ID and name.
	want := []string{"(0010,0010)", "(0010,0020)"}
	var flagsInList struct {
		Studies []struct {
			StudyInstanceUID string `json:"studyInstanceUid"`
			PatientMismatch  bool   `json:"patientMismatch"`
		}
	}
	n.getJSON("/api/studies", &flagsInList)
	for _, s := range flagsInList.Studies {
		if s.StudyInstanceUID == st.StudyInstanceUID && !s.PatientMismatch {
			t.Error("/api/studies: patientMismatch is false")
		}
	}
	if (st.PatientID != "PCT0001" && st.PatientID != "PMIX001") || !slices.Equal(want, tags(st.Findings)) {
		t.Errorf("study: patient %q, findings %v", st.PatientID, st.Findings)
	}

	var page struct {
		apiStudyPage
		PatientMismatch bool `json:"patientMismatch"`
	}
	n.getJSON("/api/studies/"+st.StudyInstanceUID, &page)
	flagged := map[string]bool{}
	for _, in := range page.Instances {
		other := in.PatientID != st.PatientID
		if got := tags(in.Findings); other != slices.Equal(want, got) || (!other && len(got) != 0) {
			t.Errorf("%s instance of %s in a study of %s: findings %v", in.Modality, in.PatientID, st.PatientID, got)
		}
		flagged[in.SOPInstanceUID] = other
	}
	if !page.PatientMismatch || len(flagged) != len(ours) {
		t.Errorf("study page JSON: patientMismatch %v, %d instances", page.PatientMismatch, len(flagged))
	}
	others := 0
	for _, f := range flagged {
		if f {
			others++
		}
	}
	if others == 0 || others == len(ours) {
		t.Errorf("%d of %d instances flagged", others, len(ours))
	}

	for _, r := range n.audit("outcome=stored&studyUid=" + st.StudyInstanceUID) {
		if flagged[r.SOPInstanceUID] != slices.Equal(want, tags(r.Findings)) {
			t.Errorf("audit record of %s: findings %v", r.SOPInstanceUID, r.Findings)
		}
	}
	stored := 0
	for _, ev := range n.events("type=Instance+Stored&contains=" + st.StudyInstanceUID) {
		var d pipeline.InstanceStoredDetail
		if err := json.Unmarshal(ev.Detail, &d); err != nil {
			t.Fatal(err)
		}
		stored++
		if d.PatientMismatch != flagged[d.SOPInstanceUID] || flagged[d.SOPInstanceUID] != slices.Equal(want, tags(d.Warnings)) {
			t.Errorf("Instance Stored of %s: patientMismatch %v, warnings %v", d.SOPInstanceUID, d.PatientMismatch, d.Warnings)
		}
	}
	if stored != len(ours) {
		t.Errorf("%d Instance Stored events, want %d", stored, len(ours))
	}
	var received []apiEvent
	testenv.Eventually(t, "Study Received", func() bool {
		received = n.events("type=Study+Received&contains=" + st.StudyInstanceUID)
		return len(received) == 1
	})
	var sd pipeline.StudyDetailEvent
	if err := json.Unmarshal(received[0].Detail, &sd); err != nil || !sd.PatientMismatch || sd.InstanceCount != len(ours) {
		t.Errorf("Study Received: %v %s", err, received[0].Detail)
	}

	for _, path := range []string{"/", "/studies/" + st.StudyInstanceUID} {
		resp, err := http.Get("http://" + n.portal + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), "patient mismatch") {
			t.Errorf("GET %s does not show the mismatch", path)
		}
	}
}
