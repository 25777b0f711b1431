package e2e

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore/localstoretest"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// The portal's JSON shapes (scp-task/internal/portal), as a client sees them.
type apiStudy struct {
	pipeline.StudySummary
	Status  string `json:"status"`
	Rejects int    `json:"rejects"`
}

type apiStudyPage struct {
	pipeline.StudyDetail
	Status      string                 `json:"status"`
	Quarantined []pipeline.AuditRecord `json:"quarantined"`
}

type apiEvent struct {
	// Outbox is on events.log's lines alone: a page of /api/events names
	// it once.
	Outbox     string          `json:"outbox"`
	Seq        int64           `json:"seq"`
	ID         string          `json:"id"`
	Time       time.Time       `json:"time"`
	DetailType string          `json:"detail-type"`
	Detail     json.RawMessage `json:"detail"`
}

func (n *node) studies() []apiStudy {
	var out struct{ Studies []apiStudy }
	n.getJSON("/api/studies", &out)
	return out.Studies
}

func (n *node) audit(query string) []pipeline.AuditRecord {
	var out struct{ Records []pipeline.AuditRecord }
	n.getJSON("/api/audit?limit=1000&"+query, &out)
	return out.Records
}

// object returns the stored object at key, as the portal serves it.
func (n *node) object(key string) []byte {
	n.t.Helper()
	code, _, b := getBody(n.t, "http://"+n.portal+"/objects/"+key)
	if code != http.StatusOK {
		n.t.Fatalf("GET /objects/%s: %d", key, code)
	}
	return b
}

// studyReceivedInLog counts the Study Received events in events.log by id.
func studyReceivedInLog(t *testing.T, dataDir string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, ev := range localstoretest.EventsLog(t, filepath.Join(dataDir, "events.log")) {
		if ev.DetailType == pipeline.DetailTypeStudyReceived {
			out[ev.ID]++
		}
	}
	return out
}

func (n *node) events(query string) []apiEvent {
	var out struct{ Events []apiEvent }
	n.getJSON("/api/events?limit=1000&"+query, &out)
	return out.Events
}

// webhookSink refuses its first requests (503) and accepts the rest, so
// the events in those requests arrive only if the publisher retries.
type webhookSink struct {
	mu       sync.Mutex
	refuse   int
	refused  map[string]bool
	accepted map[string]apiEvent
}

func (w *webhookSink) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var ev apiEvent
	if err := json.Unmarshal(b, &ev); err != nil || r.Header.Get("X-Event-Id") != ev.ID {
		http.Error(rw, "bad event", http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.refuse > 0 {
		w.refuse--
		w.refused[ev.ID] = true
		http.Error(rw, "try again", http.StatusServiceUnavailable)
		return
	}
	w.accepted[ev.ID] = ev
}

// missing returns the ids of events not (yet) accepted.
func (w *webhookSink) missing(ids []string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, id := range ids {
		if _, ok := w.accepted[id]; !ok {
			out = append(out, id)
		}
	}
	return out
}

func TestLocalEndToEnd(t *testing.T) {
	need(t, "dcmsend")
	sink := &webhookSink{refuse: 2, refused: map[string]bool{}, accepted: map[string]apiEvent{}}
	hook := httptest.NewServer(sink)
	defer hook.Close()

	dir := t.TempDir()
	n := newNode(t, filepath.Join(dir, "data"), "--webhook", hook.URL+"/events")
	n.start()

	// The real files of the DICOM parser's test suite, then our synthesized
	// study, then a crafted invalid object of that study (no Modality, a
	// type 1 attribute).
	real := testenv.DICOMTestdataFiles(t)
	if out, err := n.dcmsend("LOCAL_AE", real...); err != nil {
		t.Fatalf("dcmsend testdata: %v\n%s", err, out)
	}
	files := writeSynthStudy(t, dir)
	bad := pipelinetest.Instance{StudyUID: synthStudy, SeriesUID: synthStudy + ".9", SOPUID: synthStudy + ".9.1", PatientID: synthPatient,
		PatientName: "Roentgen^Wilhelm", Rows: 2, Columns: 2, SourceAE: "LOCAL_AE", Drop: []uint32{pipelinetest.Tag(0x08, 0x60)}}
	badPath := filepath.Join(dir, "invalid.dcm")
	if err := os.WriteFile(badPath, bad.Build(), 0o644); err != nil {
		t.Fatal(err)
	}
	sentAt := time.Now()
	if out, err := n.dcmsend("LOCAL_AE", append(files, badPath)...); err != nil {
		t.Fatalf("dcmsend synthesized study: %v\n%s", err, out)
	}
	// A calling AE that is not on the allowlist.
	if out, err := n.dcmsend("INTRUDER_AE", files[0]); err == nil {
		t.Fatalf("dcmsend from an unknown AE succeeded:\n%s", out)
	}
	// Every object processed, before the counts below: the synthesized
	// study's being complete said nothing of a testdata file another
	// worker still had.
	n.waitPipelineIdle(10 * time.Second)

	t.Run("study appears with the right counts", func(t *testing.T) {
		var got apiStudy
		testenv.Eventually(t, "the synthesized study in /api/studies", func() bool {
			for _, s := range n.studies() {
				if s.StudyInstanceUID == synthStudy && s.InstanceCount == len(synthInstances) {
					got = s
					return true
				}
			}
			return false
		})
		if got.SeriesCount != 2 || got.PatientID != synthPatient || strings.Join(got.Modalities, ",") != "CT" ||
			strings.Join(got.CallingAEs, ",") != "LOCAL_AE" {
			t.Errorf("study summary %+v", got)
		}
		t.Logf("study visible %v after the send finished", time.Since(sentAt).Round(time.Millisecond))
		var page apiStudyPage
		n.getJSON("/api/studies/"+synthStudy, &page)
		if len(page.Series) != 2 || page.Series[0].InstanceCount != 3 || page.Series[1].InstanceCount != 2 || len(page.Instances) != 5 {
			t.Errorf("study detail: %d series %+v, %d instances", len(page.Series), page.Series, len(page.Instances))
		}
		// Every real testdata file is its own study.
		if got := len(n.studies()); got != len(real)+1 {
			t.Errorf("%d studies, want %d", got, len(real)+1)
		}
		// The detail links serve the DICOM JSON metadata and the raw object.
		in := page.Instances[0]
		for _, link := range []struct{ key, ctype, want string }{
			{in.MetadataKey, "application/dicom+json", `"0020000D"`},
			{in.ObjectKey, "application/dicom", "DICM"},
		} {
			resp, err := http.Get("http://" + n.portal + "/objects/" + link.key)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != link.ctype || !strings.Contains(string(b), link.want) {
				t.Errorf("GET /objects/%s: %d %s (%d bytes)", link.key, resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
			}
		}
	})

	t.Run("audit record per instance", func(t *testing.T) {
		var recs []pipeline.AuditRecord
		testenv.Eventually(t, "audit records", func() bool {
			recs = n.audit("outcome=stored&studyUid=" + synthStudy)
			return len(recs) == len(synthInstances)
		})
		seen := map[string]bool{}
		for _, r := range recs {
			seen[r.SOPInstanceUID] = true
			if r.CallingAE != "LOCAL_AE" || r.CalledAE != "REMOTE_AE" || r.PatientID != synthPatient || r.AssociationID == "" {
				t.Errorf("audit record %+v", r)
			}
		}
		for _, s := range synthInstances {
			if !seen[s.sop] {
				t.Errorf("no audit record for %s", s.sop)
			}
		}
		// The content identity is the CRC-64/NVME of the stored file's
		// data set, the bytes after the File Meta Information (its group
		// length at 140 counts from 144), as in AWS, which the record
		// must carry.
		for _, r := range recs {
			obj := n.object(r.ObjectKey)
			crc, _ := objectstore.ContentChecksum(obj[144+binary.LittleEndian.Uint32(obj[140:144]):])
			if want := fmt.Sprintf("dataset-crc64nvme-%016x", crc); r.ContentIdentity != want {
				t.Errorf("audit record of %s: content identity %q, the stored data set's is %s", r.SOPInstanceUID, r.ContentIdentity, want)
			}
		}
		if got := n.audit("outcome=stored"); len(got) != len(synthInstances)+len(real) {
			t.Errorf("%d stored records, want %d", len(got), len(synthInstances)+len(real))
		}
		if got := n.audit("patientId=" + synthPatient + "&callingAe=LOCAL_AE&outcome=stored"); len(got) != len(synthInstances) {
			t.Errorf("filtered by patient and AE: %d records", len(got))
		}
	})

	t.Run("invalid object quarantined with findings", func(t *testing.T) {
		var q []pipeline.AuditRecord
		testenv.Eventually(t, "quarantine", func() bool {
			var out struct{ Records []pipeline.AuditRecord }
			n.getJSON("/api/quarantine", &out)
			q = out.Records
			return len(q) == 1
		})
		if q[0].SOPInstanceUID != bad.SOPUID || len(q[0].Findings) == 0 {
			t.Fatalf("quarantine record %+v", q[0])
		}
		var codes []string
		for _, f := range q[0].Findings {
			codes = append(codes, f.Code)
		}
		t.Logf("findings: %v", codes)
		if q[0].StudyInstanceUID != synthStudy || !slices.Contains(codes, pipeline.CodeMissingAttribute) {
			t.Errorf("quarantine record: study %q, findings %v", q[0].StudyInstanceUID, codes)
		}
		if got := n.events("type=Instance+Rejected&contains=" + bad.SOPUID); len(got) != 1 {
			t.Errorf("%d Instance Rejected events", len(got))
		}
		var page apiStudyPage
		n.getJSON("/api/studies/"+synthStudy, &page)
		if len(page.Quarantined) != 1 || page.Status != "has rejects" {
			t.Errorf("study page: status %q, %d quarantined", page.Status, len(page.Quarantined))
		}
	})

	t.Run("rejected AE is a security event", func(t *testing.T) {
		var recs []pipeline.AuditRecord
		testenv.Eventually(t, "association-rejected record", func() bool {
			recs = n.audit("callingAe=INTRUDER_AE")
			return len(recs) > 0
		})
		r := recs[0]
		if r.Outcome != "association-rejected" || r.CalledAE != "REMOTE_AE" || r.EventID.Display != "Security Alert" {
			t.Errorf("security record %+v", r)
		}
	})

	t.Run("Study Received after the quiet period", func(t *testing.T) {
		var evs []apiEvent
		testenv.Eventually(t, "Study Received", func() bool {
			evs = n.events("type=Study+Received&contains=" + synthStudy)
			return len(evs) == 1
		})
		var page apiStudyPage
		n.getJSON("/api/studies/"+synthStudy, &page)
		if quiet := evs[0].Time.Sub(page.LastReceived); quiet < 2*time.Second {
			t.Errorf("announced %v after the last instance; the quiet period is 2s", quiet)
		}
		if page.Status != "has rejects" || page.AnnouncedVersion != 1 {
			t.Errorf("study after announcement: status %q version %d", page.Status, page.AnnouncedVersion)
		}
		var ids []string
		for _, ev := range n.events("") {
			ids = append(ids, ev.ID)
		}
		testenv.Eventually(t, "every event delivered to the webhook", func() bool {
			return len(sink.missing(ids)) == 0
		})
		sink.mu.Lock()
		if len(sink.refused) == 0 {
			t.Error("the webhook refused nothing; the retry went untested")
		}
		if got := sink.accepted[evs[0].ID]; got.DetailType != pipeline.DetailTypeStudyReceived {
			t.Errorf("webhook got %+v for the Study Received event", got)
		}
		sink.mu.Unlock()
		// Every study announced (a testdata study's quiet period may end
		// after the synthesized one's), and each announcement in
		// events.log, which the publisher appends to on its own, apart
		// from the webhook's deliveries.
		var announced []apiEvent
		testenv.Eventually(t, "every study announced", func() bool {
			announced = n.events("type=Study+Received")
			return len(announced) >= len(real)+1
		})
		if len(announced) != len(real)+1 {
			t.Errorf("%d Study Received events, want %d", len(announced), len(real)+1)
		}
		var logged map[string]int
		testenv.Eventually(t, "every Study Received in events.log", func() bool {
			logged = studyReceivedInLog(t, n.dataDir)
			for _, ev := range announced {
				if logged[ev.ID] == 0 {
					return false
				}
			}
			return true
		})
		for id, c := range logged {
			if c != 1 || !slices.ContainsFunc(announced, func(ev apiEvent) bool { return ev.ID == id }) {
				t.Errorf("events.log holds Study Received %s %d times, want once of the %d announced", id, c, len(announced))
			}
		}
	})

	t.Run("a second process on the data directory exits naming the holder", func(t *testing.T) {
		out := startRefused(t, n.dataDir)
		holder := fmt.Sprintf("process %d (started ", n.cmd.Process.Pid)
		if !strings.Contains(string(out), "data directory in use") || !strings.Contains(string(out), holder) {
			t.Errorf("second scp-task's error does not name the holder (%s):\n%s", holder, out)
		}
		if !n.dicomUp() {
			t.Error("the holder stopped listening")
		}
	})

	// Everything scp-task keeps in the data directory may carry patient
	// data (the objects, the databases, the event log) or unmask it (the
	// log-name key): nobody but its user reads it.
	t.Run("the data directory is private", func(t *testing.T) {
		if st, err := os.Stat(n.dataDir); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("data directory: %v, mode %v, want 0700", err, st.Mode().Perm())
		}
		var seen []string
		err := filepath.WalkDir(n.dataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(n.dataDir, path)
			if !strings.HasPrefix(rel, "objects") {
				seen = append(seen, rel)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v, want 0600", rel, fi.Mode().Perm())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"ingest.db", "ingest-queue.db", "events.log", "log-name.key", "scp-task.lock"} {
			if !slices.Contains(seen, want) {
				t.Errorf("%s not in the data directory (%v)", want, seen)
			}
		}
	})
}

// TestRestartExactlyOnce kills scp-task in each window between the
// arrival of an object and the release of its journal record and checks,
// over two restarts, that an object whose C-STORE succeeded is processed
// exactly once, and that one whose C-STORE never succeeded is processed
// exactly once when the sender sends it again, leaving nothing behind if
// it was not handed off.
func TestRestartExactlyOnce(t *testing.T) {
	need(t, "dcmsend")
	for _, c := range []struct {
		mode   string
		big    bool // larger than the file store's journal takes: handed off by a queue row
		acked  bool // the C-STORE succeeded before the crash
		stored bool // the object is durable and handed off
	}{
		{"before-handoff", false, false, false},
		{"before-ack", false, false, true},
		{"after-store", false, true, true},
		{"before-commit", false, true, true},
		{"after-commit", false, true, true},
		{"before-handoff", true, false, false},
		{"before-place", true, false, false},
		{"after-store", true, true, true},
		{"before-commit", true, true, true},
	} {
		name := c.mode
		if c.big {
			name += "/big"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			files := writeSynthStudy(t, dir)
			if c.big {
				files[0] = writeSynthBig(t, dir)
			}
			n := newNode(t, filepath.Join(dir, "data"))
			n.start("DICOM_INGEST_TEST_CRASH_AFTER_STORE=" + c.mode)
			out, err := n.dcmsend("LOCAL_AE", files[0])
			if code := n.wait(30 * time.Second); code != 86 {
				t.Fatalf("exit code %d, want the crash hook's 86 (dcmsend: %v)\n%s", code, err, out)
			}
			stored, _ := filepath.Glob(filepath.Join(n.dataDir, "objects", "incoming", "*", "*", "*", synthStudy, "*", "*.dcm"))
			if c.stored && len(stored) != 1 {
				t.Fatalf("handed-off object not on disk after the crash: %v", stored)
			}
			if !c.stored && len(stored) != 0 {
				t.Fatalf("an object never handed off took its key: %v", stored)
			}

			for round := 0; round < 2; round++ {
				n.start() // no hook: recover
				if !c.acked && round == 0 {
					if got := n.audit("studyUid=" + synthStudy); !c.stored && len(got) != 0 {
						t.Fatalf("%d audit records for an object never stored", len(got))
					}
					// The sender did not get success: it sends again.
					if out, err := n.dcmsend("LOCAL_AE", files[0]); err != nil {
						t.Fatalf("dcmsend after restart: %v\n%s", err, out)
					}
				}
				var recs []pipeline.AuditRecord
				testenv.Eventually(t, "the object processed after restart", func() bool {
					recs = n.audit("outcome=stored&studyUid=" + synthStudy)
					return len(recs) > 0
				})
				var page apiStudyPage
				n.getJSON("/api/studies/"+synthStudy, &page)
				if len(recs) != 1 || page.InstanceCount != 1 || page.Revision != 1 || len(page.Instances) != 1 {
					t.Errorf("round %d: %d audit records, %d instances, revision %d", round, len(recs), page.InstanceCount, page.Revision)
				}
				if got := n.events("type=Instance+Stored&contains=" + synthInstances[0].sop); len(got) != 1 {
					t.Errorf("round %d: %d Instance Stored events", round, len(got))
				}
				if recs[0].CalledAE != "REMOTE_AE" {
					t.Errorf("the SCP's transaction details were lost: %+v", recs[0])
				}
				n.waitPipelineIdle(5 * time.Second)
				n.stop()
			}
		})
	}
}

// writeSynthBig writes the synthesized study's first instance with 2 MiB
// of pixel data, more than the file store's journal takes, into dir.
func writeSynthBig(t *testing.T, dir string) string {
	t.Helper()
	s := synthInstances[0]
	in := pipelinetest.Instance{StudyUID: synthStudy, SeriesUID: s.series, SOPUID: s.sop, PatientID: synthPatient,
		PatientName: "Roentgen^Wilhelm", Modality: "CT", Rows: 1024, Columns: 1024, SourceAE: "LOCAL_AE"}
	p := filepath.Join(dir, "synth-big.dcm")
	if err := os.WriteFile(p, in.Build(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
