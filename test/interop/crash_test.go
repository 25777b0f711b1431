package interop

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

// startLocal runs scp-task in local mode on dataDir.
func startLocal(t *testing.T, dataDir string) *scptest.SCP {
	t.Helper()
	return scptest.Start(t, scptest.Options{NoStore: true, Args: []string{"--local", "--data-dir", dataDir,
		"--portal-listen", "127.0.0.1:0", "--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE"}})
}

// TestKilledSCPLossIsRecorded kills scp-task (SIGKILL) while associations
// come and go, then starts it again on the same data directory: the new
// start record names the killed run and bounds what it may have lost (every
// record of the killed run up to the sequence number it gives is in the
// trail, but for at most the "not yet written" it counts), its count is an
// increase over the first scrape of /metrics (what the metrics agent
// publishes), and a clean stop after it leaves nothing for the next start
// to report.
func TestKilledSCPLossIsRecorded(t *testing.T) {
	dataDir := t.TempDir()
	objects := filepath.Join(dataDir, "objects")
	first := startLocal(t, dataDir)

	// Association churn, each giving an accepted and a released record,
	// past a heartbeat or two of the run marker; killed mid-churn.
	first.KillDuringChurn(t, scClient("LOCAL_AE"), 2500*time.Millisecond)

	var instance string
	byInstance := map[string][]associationaudit.Record{}
	for _, r := range auditRecords(t, objects) {
		if r.Event == associationaudit.EventApplicationStart {
			instance = r.AssociationID
		}
		byInstance[strings.SplitN(r.AssociationID, "-", 2)[0]] = append(byInstance[strings.SplitN(r.AssociationID, "-", 2)[0]], r)
	}
	if instance == "" {
		t.Fatal("no start record of the killed run")
	}
	before := byInstance[instance]
	t.Logf("killed run %s wrote %d records", instance, len(before))

	second := startLocal(t, dataDir)
	start := startAfter(t, objects, instance)
	if got := second.PublishedIncrease(t, "dicom_ingest_audit_unclean_stops_total"); got != 1 {
		t.Errorf("dicom_ingest_audit_unclean_stops_total rose by %v over the first scrape, want 1", got)
	}
	t.Logf("start record: %s", start.Reason)
	var assigned, written, lost, pending uint64
	i := strings.Index(start.Reason, "previous run "+instance+" ")
	if i < 0 {
		t.Fatalf("the start after the kill does not name the killed run %s: %q", instance, start.Reason)
	}
	if _, err := fmt.Sscanf(start.Reason[strings.Index(start.Reason, "of its records seq 1-"):],
		"of its records seq 1-%d, %d written and %d counted lost by then, %d not yet written", &assigned, &written, &lost, &pending); err != nil {
		t.Fatalf("start record %q: %v", start.Reason, err)
	}
	if assigned == 0 || written == 0 || written+lost+pending != assigned {
		t.Errorf("assigned %d, written %d, lost %d, pending %d", assigned, written, lost, pending)
	}
	// The same facts as fields of the start record, not only as words.
	if len(start.PreviousRuns) != 1 {
		t.Fatalf("start record's previous runs: %+v", start.PreviousRuns)
	}
	dead := start.PreviousRuns[0]
	if want := (associationaudit.UncleanRun{Instance: instance, AETitle: "REMOTE_AE", Started: dead.Started, LastAlive: dead.LastAlive,
		LastSeq: assigned, Written: written, CountedLost: lost, NotWritten: pending}); dead != want {
		t.Errorf("previous run %+v, want %+v", dead, want)
	}
	if dead.Started.IsZero() || dead.LastAlive.Before(dead.Started) || dead.LastAlive.After(start.Time) {
		t.Errorf("previous run started %v, last alive %v, the start record at %v", dead.Started, dead.LastAlive, start.Time)
	}
	// The trail (local mode's pipeline) has it as an unclean-stop the
	// portal filters.
	testenv.Eventually(t, "the unclean-stop record in the trail", func() bool {
		recs := portalAudit(t, second.PortalAddr, "unclean-stop")
		return len(recs) == 1 && recs[0].EventOutcome == 4 && len(recs[0].PreviousRuns) == 1 && recs[0].PreviousRuns[0].Instance == instance
	})
	// The guarantee: of seq 1..assigned, the trail lacks at most pending.
	have := map[uint64]bool{}
	for _, r := range before {
		have[r.Seq] = true
	}
	var missing uint64
	for seq := uint64(1); seq <= assigned; seq++ {
		if !have[seq] {
			missing++
		}
	}
	if missing > pending {
		t.Errorf("the trail lacks %d records of seq 1-%d, more than the %d the start record says were not yet written", missing, assigned, pending)
	}

	// A clean stop: the next start has nothing to report.
	second.Stop(t)
	third := startLocal(t, dataDir)
	third.Stop(t)
	var starts int
	for _, r := range auditRecords(t, objects) {
		if r.Event == associationaudit.EventApplicationStart && r.AssociationID != instance && r.AssociationID != start.AssociationID {
			starts++
			if r.Reason != "" {
				t.Errorf("start after a clean stop says %q", r.Reason)
			}
		}
	}
	if starts != 1 {
		t.Errorf("%d starts after the clean stop, want 1", starts)
	}
}

// portalAudit gets the audit records of an outcome from the portal's API.
func portalAudit(t *testing.T, portal, outcome string) []pipeline.AuditRecord {
	t.Helper()
	var out struct{ Records []pipeline.AuditRecord }
	portalJSON(t, portal, "/api/audit?outcome="+outcome, &out)
	return out.Records
}

// portalJSON decodes the answer of local mode's portal API at path into v.
func portalJSON(t *testing.T, portal, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + portal + path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := resp.Body.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// TestKilledFileStoreSCPIsReported: scp-task on a plain file store
// (--store file://DIR, not --local) keeps its run marker in DIR, as local
// mode does in its data directory, so a start after a SIGKILL reports the
// killed run and what it may have lost. Before, a file store had no marker:
// an unclean stop showed only as a start without its stop, its losses
// uncounted.
func TestKilledFileStoreSCPIsReported(t *testing.T) {
	dir := t.TempDir()
	start := func() *scptest.SCP {
		return scptest.Start(t, scptest.Options{NoStore: true, Args: []string{"--store", "file://" + dir,
			"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE"}})
	}
	first := start()
	first.KillDuringChurn(t, scClient("LOCAL_AE"), 1500*time.Millisecond) // past a heartbeat of the run marker
	killed, ok := scptest.StartOf(auditRecords(t, dir))
	if !ok {
		t.Fatal("no start record of the killed run")
	}
	dead := killed.AssociationID

	second := start()
	next := startAfter(t, dir, dead)
	if len(next.PreviousRuns) != 1 || next.PreviousRuns[0].Instance != dead || !strings.HasPrefix(next.Reason, "previous run "+dead+" ") {
		t.Fatalf("the start after the kill says %q, %+v", next.Reason, next.PreviousRuns)
	}
	if u := next.PreviousRuns[0]; u.LastSeq == 0 || u.Written == 0 || u.Written+u.CountedLost+u.NotWritten != u.LastSeq {
		t.Errorf("previous run %+v", u)
	}
	if got := second.PublishedIncrease(t, "dicom_ingest_audit_unclean_stops_total"); got != 1 {
		t.Errorf("dicom_ingest_audit_unclean_stops_total rose by %v over the first scrape, want 1", got)
	}
	// The reported marker went; a clean stop removes the second's.
	second.Stop(t)
	if left, err := filepath.Glob(filepath.Join(dir, "audit-runs", "*")); err != nil || len(left) != 0 {
		t.Errorf("markers after the report and a clean stop: %v %v", left, err)
	}
}

// startAfter waits for the start record, in the file store at root, of a
// run other than before's.
func startAfter(t *testing.T, root, before string) associationaudit.Record {
	t.Helper()
	var start associationaudit.Record
	testenv.Eventually(t, "the start record after the kill", func() bool {
		var ok bool
		start, ok = scptest.StartOf(auditRecords(t, root), before)
		return ok
	})
	return start
}
