package e2e

import (
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/logleak"
)

// TestLogsCarryNoIdentifiers runs the local flow over objects whose UIDs,
// patient names and ids are known, through every path that logs: stored,
// duplicate, conflict, quarantined, malformed (refused by the SCP before
// and after its UIDs, quarantined when handed off before a crash and found
// in the queue at start), a store failure, a pipeline failure (an object
// handed off before a crash that cannot be read), an unknown AE, portal
// misses, a portal failure and shutdown. Its whole log must name objects
// only by association, message id and keyed digest.
func TestLogsCarryNoIdentifiers(t *testing.T) {
	need(t, "dcmsend", "dcmdump")
	dir := t.TempDir()
	var ids logleak.Identifiers
	real := testenv.DICOMTestdataFiles(t)
	for _, f := range real {
		ids.AddFile(t, f)
	}
	objs := logleak.WriteObjects(t, dir, &ids)
	n := newNode(t, filepath.Join(dir, "data"))

	// What a crash leaves, staged: the malformed object, which the SCP
	// refuses, handed off and put where the store would have put it, so
	// that the restart finds it in the queue and it reaches the pipeline;
	// and the Stalled object handed off with a directory under its key,
	// which the pipeline cannot read.
	late := objs.Key(objs.MalformedLate, time.Now())
	stalled := objs.Key(objs.Stalled, time.Now())
	stageHandoff(t, n.dataDir, late, stalled)
	if err := os.MkdirAll(filepath.Dir(filepath.Join(n.dataDir, "objects", filepath.FromSlash(late))), 0o750); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(objs.MalformedLate); err != nil || os.WriteFile(filepath.Join(n.dataDir, "objects", filepath.FromSlash(late)), b, 0o600) != nil {
		t.Fatalf("place the malformed object: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(n.dataDir, "objects", filepath.FromSlash(stalled)), 0o750); err != nil {
		t.Fatal(err)
	}
	// A file where the Blocked study's directory would go makes its store
	// fail. Tomorrow too, in case the test runs over midnight (UTC).
	for _, day := range []time.Time{time.Now().UTC(), time.Now().UTC().Add(24 * time.Hour)} {
		p := filepath.Join(n.dataDir, "objects", "incoming", day.Format("2006/01/02"), objs.StudyUID[objs.Blocked])
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("not a directory\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n.start()

	if out, err := n.dcmsend("LOCAL_AE", real...); err != nil {
		t.Fatalf("dcmsend testdata: %v\n%s", err, out)
	}
	send := append(append([]string{}, objs.Study...), objs.Invalid, objs.Large)
	if out, err := n.dcmsend("LOCAL_AE", send...); err != nil {
		t.Fatalf("dcmsend: %v\n%s", err, out)
	}
	// A resend (duplicate) and other content under the same UIDs (conflict).
	if out, err := n.dcmsend("LOCAL_AE", objs.Study[0], objs.Conflict); err != nil {
		t.Fatalf("dcmsend duplicate and conflict: %v\n%s", err, out)
	}
	// dcmsend exits 0 on a failure status; the log line is checked below.
	if out, err := n.dcmsend("LOCAL_AE", objs.Blocked); err != nil {
		t.Fatalf("dcmsend blocked: %v\n%s", err, out)
	}
	errs := logleak.StoreRaw(t, n.dicom, objs.MalformedLate, objs.MalformedEarly)
	if errs[0] == nil || errs[1] == nil {
		t.Errorf("raw stores: late %v, early %v; want both refused", errs[0], errs[1])
	}
	if out, err := n.dcmsend("INTRUDER_AE", objs.Study[0]); err == nil {
		t.Errorf("dcmsend from an unknown AE succeeded:\n%s", out)
	}
	// Portal misses, and a failure (a path below a stored object) with
	// the dots of its UIDs escaped, which the URL then does not spell as
	// the store's error does.
	below := "/objects/" + strings.ReplaceAll(objs.Key(objs.Study[1], time.Now()), ".", "%2E") + "/x"
	for path, want := range map[string]int{"/api/studies/" + objs.StudyUID[objs.Blocked]: http.StatusNotFound,
		"/objects/incoming/2000/01/01/" + objs.StudyUID[objs.Blocked] + "/x.dcm": http.StatusNotFound,
		below: http.StatusInternalServerError} {
		resp, err := http.Get("http://" + n.portal + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}

	testenv.Eventually(t, "the quarantine and a pipeline failure", func() bool {
		var out struct{ Records []pipeline.AuditRecord }
		n.getJSON("/api/quarantine", &out)
		failed := strings.Contains(n.logText(), "pipeline failed; will retry")
		return len(out.Records) == 2 && failed
	})
	testenv.Eventually(t, "every stored object processed", func() bool {
		var c struct{ PendingPipeline int64 }
		n.getJSON("/api/counters", &c)
		return c.PendingPipeline <= 1 // the stalled one
	})
	n.stop()
	log := n.logText()

	lines := ids.Check(t, "scp-task --local", log)
	t.Logf("%d log lines checked for %d identifiers", lines, ids.Len())
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %s", line)
		}
	}

	// Every path above logged, or the check proves nothing about it.
	for _, msg := range []string{`"msg":"store failed"`, `"msg":"C-STORE refused"`, `"msg":"object rejected"`,
		`"msg":"pipeline failed; will retry"`, `"msg":"object stored"`, `"outcome":"conflict"`,
		`"duplicate":true`, `"msg":"dicomnet: association rejected"`, `"msg":"portal: request failed"`, `"msg":"scp-task stopped"`} {
		if !strings.Contains(log, msg) {
			t.Errorf("no %s line: the path went unchecked", msg)
		}
	}

	// Lines name each processed object by its key's digest under the key
	// the data directory holds: the same object, the same name.
	names, err := logname.LoadOrCreate(filepath.Join(n.dataDir, logname.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	objects := filepath.Join(n.dataDir, "objects")
	var keys []string
	err = filepath.WalkDir(filepath.Join(objects, "incoming"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.HasSuffix(p, ".dcm") {
			rel, _ := filepath.Rel(objects, p)
			keys = append(keys, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) < len(real)+len(send) {
		t.Errorf("%d objects stored, want at least %d", len(keys), len(real)+len(send))
	}
	for _, k := range keys {
		if !strings.Contains(log, `"object":"`+names.Name(k)+`"`) {
			t.Errorf("no log line names %s by its digest %s", k, names.Name(k))
		}
	}
}

// stageHandoff records keys in the hand-off queue of the data directory,
// as the SCP does before an object takes its key.
func stageHandoff(t *testing.T, dataDir string, keys ...string) {
	t.Helper()
	ctx := context.Background()
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		t.Fatal(err)
	}
	db, err := localstore.Open(ctx, filepath.Join(dataDir, "ingest.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, err := db.Handoff().Enqueue(ctx, k, time.Now(), map[string]string{"calling-ae": "LOCAL_AE", "called-ae": "REMOTE_AE"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}
