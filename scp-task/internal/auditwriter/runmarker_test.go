package auditwriter

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// startRecord starts a writer on dir as instance and returns it with the
// reason of its start record.
func startRecord(t *testing.T, dir, instance string) (*Writer, string) {
	w, r := startFull(t, dir, instance)
	return w, r.Reason
}

// startFull starts a writer on dir as instance and returns it with its
// start record.
func startFull(t *testing.T, dir, instance string) (*Writer, associationaudit.Record) {
	t.Helper()
	store := &recordStore{got: map[string]associationaudit.Record{}}
	w, err := New(store, Options{RunDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	w.Started(instance, "REMOTE_AE")
	testenv.Eventually(t, "the start record", func() bool { return store.count() == 1 })
	store.mu.Lock()
	defer store.mu.Unlock()
	for _, r := range store.got {
		return w, r
	}
	return w, associationaudit.Record{}
}

// TestRunMarkers: a live run's marker is left alone, a clean stop removes
// its own, and a dead run's marker (its lock free) is reported once, by the
// next start, with the counts it holds.
func TestRunMarkers(t *testing.T) {
	dir := t.TempDir()
	live, reason := startRecord(t, dir, "aaaa")
	if reason != "" {
		t.Errorf("first start says %q", reason)
	}
	other, reason := startRecord(t, dir, "bbbb")
	if reason != "" {
		t.Errorf("a start beside a live run says %q", reason)
	}
	for _, w := range []*Writer{live, other} {
		if err := w.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, RunsDir, "*")); len(left) != 0 {
		t.Errorf("clean stops left %v", left)
	}
	// A run killed after its marker said 7 records, 5 written, 1 lost.
	dead := `{"instance":"dead1","aeTitle":"REMOTE_AE","assigned":7,"written":5,"lost":1}`
	if err := os.WriteFile(filepath.Join(dir, RunsDir, "dead1.json"), []byte(dead+strings.Repeat(" ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	next, reason := startRecord(t, dir, "cccc")
	// Records after the marker's last update may be in the trail: written
	// in the run's last second, they are not said to be lost.
	if !strings.Contains(reason, "previous run dead1 ") || !strings.Contains(reason, "seq 1-7, 5 written and 1 counted lost by then, 1 not yet written") ||
		!strings.HasSuffix(reason, "those of seq 1-7 missing from the trail are lost, and records after seq 7 (events until its death) may be") {
		t.Errorf("start after a dead run says %q", reason)
	}
	if err := next.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	last, reason := startRecord(t, dir, "dddd")
	if reason != "" {
		t.Errorf("a dead run reported twice: %q", reason)
	}
	if err := last.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestUncleanRunFields: what a dead run's marker says is in the start
// record's fields (previousRuns), not only in words in its reason.
func TestUncleanRunFields(t *testing.T) {
	started := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := []struct {
		name, marker string
		want         []associationaudit.UncleanRun
	}{
		{"readable", `{"instance":"dead1","aeTitle":"REMOTE_AE","started":"2026-03-04T05:06:07Z","heartbeat":"2026-03-04T05:07:07Z","assigned":7,"written":5,"lost":1}`,
			[]associationaudit.UncleanRun{{Instance: "dead1", AETitle: "REMOTE_AE", Started: started, LastAlive: started.Add(time.Minute),
				LastSeq: 7, Written: 5, CountedLost: 1, NotWritten: 1}}},
		{"unreadable", `{"instance":"dea`, []associationaudit.UncleanRun{{Instance: "dead1", Unreadable: true}}},
		{"none", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.marker != "" {
				if err := os.MkdirAll(filepath.Join(dir, RunsDir), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, RunsDir, "dead1.json"), []byte(tt.marker+strings.Repeat(" ", 100)), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			w, r := startFull(t, dir, "cccc")
			if d := cmp.Diff(tt.want, r.PreviousRuns); d != "" {
				t.Errorf("start record's previous runs (-want +got):\n%s", d)
			}
			if (r.Reason != "") != (tt.want != nil) {
				t.Errorf("start record's reason %q", r.Reason)
			}
			if err := w.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestLostStopKeepsTheMarker: a run whose stop record cannot be written
// (the disk full, S3 refusing it) leaves its marker, saying so, and the
// next start reports the stop as unconfirmed; it removed the marker as if
// the stop had been recorded, and nothing in the trail told of it.
func TestLostStopKeepsTheMarker(t *testing.T) {
	tests := []struct {
		name   string
		refuse string // the store refuses these keys
		want   []associationaudit.UncleanRun
	}{
		{"stop record written", "", nil},
		{"stop record lost", "-application-stop", []associationaudit.UncleanRun{{Instance: "aaaa", AETitle: "REMOTE_AE",
			LastSeq: 2, Written: 1, CountedLost: 1, StopNotWritten: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			store := &recordStore{got: map[string]associationaudit.Record{}, refuse: tt.refuse}
			w, err := New(store, Options{RunDir: dir, MaxBackoff: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			w.Started("aaaa", "REMOTE_AE")
			w.Stopping("shutdown requested")
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if err := w.Close(ctx); (err != nil) != (tt.want != nil) {
				t.Errorf("Close = %v", err)
			}
			next, r := startFull(t, dir, "bbbb")
			got := r.PreviousRuns
			for i := range got { // the times are the run's own
				got[i].Started, got[i].LastAlive = time.Time{}, time.Time{}
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("next start's previous runs (-want +got):\n%s", d)
			}
			if tt.want != nil && !strings.Contains(r.Reason, "its stop record could not be written, so its stop is unconfirmed") {
				t.Errorf("next start says %q", r.Reason)
			}
			if err := next.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSweepNeverClaimsAMarkerBeingCreated: a running SCP sweeping the
// directory while another starts never takes the starting run's marker
// for a dead one. A marker created under its final name and locked after
// could be locked first by a sweep, between the two: read empty, it was
// reported as an unreadable dead run, and the start, its lock refused,
// ran with no marker at all.
func TestSweepNeverClaimsAMarkerBeingCreated(t *testing.T) {
	dir := t.TempDir()
	runs := filepath.Join(dir, RunsDir)
	if err := os.MkdirAll(runs, 0o700); err != nil {
		t.Fatal(err)
	}
	sweeper := &dirMarkers{dir: dir}
	stop := make(chan struct{})
	found := make(chan []associationaudit.UncleanRun, 1)
	go func() {
		var all []associationaudit.UncleanRun
		defer func() { found <- all }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			unclean, _ := sweeper.sweep(context.Background(), "sweeper")
			all = append(all, unclean...)
			if err := sweeper.letGo(); err != nil {
				t.Error(err)
			}
		}
	}()
	var started []*runMarker
	for i := range 2000 {
		m, err := createRun(runs, runState{Instance: fmt.Sprintf("run%04d", i), AETitle: "REMOTE_AE", Started: time.Now()})
		if err != nil {
			t.Errorf("start %d: %v", i, err)
			continue
		}
		started = append(started, m)
	}
	close(stop)
	if all := <-found; len(all) != 0 {
		t.Errorf("a sweep reported %d live runs as dead, the first %+v", len(all), all[0])
	}
	for _, m := range started {
		if err := m.remove(); err != nil {
			t.Error(err)
		}
	}
}

// TestUncleanStopAtStartIsPublished: a dead run a start finds is counted
// before the metrics agent's first scrape of the task, which the agent
// takes as its baseline: it was in that baseline, so the agent published
// no increase and only the log-line alarm sounded. The count now shows
// from the second scrape, an increase the agent publishes; a dead run a
// running SCP finds later is counted as before.
func TestUncleanStopAtStartIsPublished(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, RunsDir), 0o700); err != nil {
		t.Fatal(err)
	}
	dead := `{"instance":"dead1","aeTitle":"REMOTE_AE","assigned":7,"written":5,"lost":1}`
	if err := os.WriteFile(filepath.Join(dir, RunsDir, "dead1.json"), []byte(dead+strings.Repeat(" ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	store := &recordStore{got: map[string]associationaudit.Record{}}
	w, err := New(store, Options{RunDir: dir, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	w.Started("cccc", "REMOTE_AE")
	testenv.Eventually(t, "the start record", func() bool { return store.count() == 1 })
	scrape := func() float64 {
		t.Helper()
		v, err := metricnames.Scrape(reg, metricnames.AuditUncleanStops)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	baseline := scrape() // the agent's first scrape: its baseline
	if got := scrape() - baseline; got != 1 {
		t.Errorf("the agent publishes an increase of %v of %s after a start that found one dead run, want 1", got, metricnames.AuditUncleanStops)
	}
	if err := w.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
