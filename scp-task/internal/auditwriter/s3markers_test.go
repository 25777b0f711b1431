package auditwriter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestStoreRunMarkers: with the run markers in an S3 bucket (a direct S3
// store, no directory outliving the process), a start reports the runs
// whose markers went stale by S3's clock or say their stop record was
// lost, once, and leaves alone those rewritten lately or claimed lately by
// another start; the markers it reported go once its start record is
// written, and a clean stop removes its own. The times the markers say
// (their writers' clocks) play no part.
func TestStoreRunMarkers(t *testing.T) {
	const stale = 2 * time.Second
	now := time.Now()
	dead := storeState{runState: runState{Instance: "dead1", AETitle: "REMOTE_AE", Started: now.Add(-time.Hour), Heartbeat: now,
		Assigned: 7, Written: 5, Lost: 1}}
	claimed := dead
	claimed.TakenBy, claimed.TakenAt = "other", now
	stopLost := dead
	stopLost.StopNotWritten = true
	tests := []struct {
		name     string
		marker   *storeState // under dead1.json; nil: none
		raw      string      // or these bytes
		silent   bool        // not rewritten for longer than stale by S3's clock
		reported bool
	}{
		{"none", nil, "", false, false},
		{"alive (rewritten lately)", &dead, "", false, false},
		{"silent for longer than stale", &dead, "", true, true},
		{"stop record lost", &stopLost, "", false, true},
		{"claimed lately by another start", &claimed, "", false, false},
		{"claimed long ago by a start that died", &claimed, "", true, true},
		{"unreadable", nil, `{"instance":"dea`, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s3 := newBucket(t)
			ctx := context.Background()
			body := []byte(tt.raw)
			if tt.marker != nil {
				var err error
				if body, err = json.Marshal(tt.marker); err != nil {
					t.Fatal(err)
				}
			}
			if len(body) > 0 {
				if _, err := s3.PutMarker(ctx, "dead1.json", body, ""); err != nil {
					t.Fatal(err)
				}
			}
			if tt.silent {
				s3.age(t, stale+storeClockResolution)
			}
			records := &recordStore{got: map[string]associationaudit.Record{}}
			w, err := New(records, Options{Markers: s3, MarkersStaleAfter: stale})
			if err != nil {
				t.Fatal(err)
			}
			w.Started("cccc", "REMOTE_AE")
			testenv.Eventually(t, "the start record", func() bool { return records.count() == 1 })
			start := records.only(t)
			if got := len(start.PreviousRuns) == 1 && start.PreviousRuns[0].Instance == "dead1"; got != tt.reported {
				t.Fatalf("reported %v, want %v: %+v", got, tt.reported, start.PreviousRuns)
			}
			if tt.marker != nil && tt.reported {
				want := readUnclean(body, "dead1")
				if d := cmp.Diff(want, start.PreviousRuns[0], cmpopts.EquateApproxTime(time.Millisecond)); d != "" {
					t.Errorf("previous run (-want +got):\n%s", d)
				}
			}
			wantLeft := []string{"cccc.json"}
			if len(body) > 0 && !tt.reported {
				wantLeft = []string{"cccc.json", "dead1.json"}
			}
			// The reported marker goes once the start record is written.
			testenv.Eventually(t, "the markers left", func() bool { names, err := s3.ListMarkers(ctx); return err == nil && cmp.Equal(names, wantLeft) })
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			names, err := s3.ListMarkers(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(wantLeft[1:], names, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("markers after a clean stop (-want +got):\n%s", d)
			}
		})
	}
}

// TestStoreRunMarkerGoesStale: a run that ends without a clean stop (its
// heartbeat stops) is reported by a later start once its marker is stale
// by S3's clock, not before; the reported marker is reported once. (The
// runs started beside it have their sweeps stopped: TestSweepReportsDeadRun
// has a running SCP report it.)
func TestStoreRunMarkerGoesStale(t *testing.T) {
	const stale = 2 * time.Second
	s3 := newBucket(t)
	start := func(instance string) (*Writer, associationaudit.Record) {
		t.Helper()
		records := &recordStore{got: map[string]associationaudit.Record{}}
		w, err := New(records, Options{Markers: s3, MarkersStaleAfter: stale})
		if err != nil {
			t.Fatal(err)
		}
		w.Started(instance, "REMOTE_AE")
		w.stopSweep()
		testenv.Eventually(t, "the start record", func() bool { return records.count() == 1 })
		return w, records.only(t)
	}
	first, _ := start("aaaa")
	// Its heartbeat stops, as with a SIGKILL; nothing removes its marker.
	close(first.hbStop)
	<-first.hbDone
	early, r := start("bbbb")
	if len(r.PreviousRuns) != 0 {
		t.Errorf("a run silent for less than %s reported: %+v", stale, r.PreviousRuns)
	}
	// Just short of stale by S3's clock (S3 counts whole seconds): not yet.
	s3.age(t, stale-storeClockResolution, "bbbb")
	notYet, r := start("cccc")
	if len(r.PreviousRuns) != 0 {
		t.Errorf("a run silent for less than %s reported: %+v", stale, r.PreviousRuns)
	}
	s3.age(t, 2*storeClockResolution, "bbbb", "cccc")
	late, r := start("dddd")
	if len(r.PreviousRuns) != 1 || r.PreviousRuns[0].Instance != "aaaa" || !strings.Contains(r.Reason, "previous run aaaa ") {
		t.Errorf("the start after the marker went stale says %q, %+v", r.Reason, r.PreviousRuns)
	}
	again, r := start("eeee")
	if len(r.PreviousRuns) != 0 {
		t.Errorf("reported twice: %+v", r.PreviousRuns)
	}
	for _, w := range []*Writer{early, notYet, late, again} {
		if err := w.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStoreMarkersIgnoreTaskClocks: a start whose own clock is an hour
// off either way, beside a live run whose clock is an hour off the other
// way, leaves the live run alone, at its start and in its sweeps, and
// reports the dead one once: staleness is S3's clock's (Last-Modified
// against the answer's Date), not the tasks'. Before, a clock an hour
// ahead reported every live run as dead, and one an hour behind never
// reported a dead one.
func TestStoreMarkersIgnoreTaskClocks(t *testing.T) {
	const stale = 2 * time.Second
	for _, skew := range []time.Duration{time.Hour, -time.Hour} {
		t.Run(fmt.Sprintf("reader %+v", skew), func(t *testing.T) {
			s3 := newBucket(t)
			start := func(instance string, skew time.Duration) (*Writer, *recordStore) {
				t.Helper()
				records := &recordStore{got: map[string]associationaudit.Record{}}
				w, err := New(records, Options{Markers: s3, MarkersStaleAfter: stale})
				if err != nil {
					t.Fatal(err)
				}
				w.now = func() time.Time { return time.Now().Add(skew) }
				w.Started(instance, "REMOTE_AE")
				testenv.Eventually(t, "the start record", func() bool { return records.count() == 1 })
				return w, records
			}
			dead, _ := start("dead", 0)
			kill(t, dead)
			live, _ := start("live", -skew)
			live.stopSweep() // the reader is the one to report
			s3.age(t, stale+storeClockResolution, "live")
			reader, records := start("reader", skew)
			// Sweeps enough to report the live run, were it taken for dead.
			time.Sleep(stale)
			if err := reader.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			var reported []string
			for _, r := range records.all() {
				for _, u := range r.PreviousRuns {
					reported = append(reported, u.Instance)
				}
			}
			if d := cmp.Diff([]string{"dead"}, reported); d != "" {
				t.Errorf("runs reported (-want +got):\n%s", d)
			}
			if err := live.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReportedDeletesOnlyItsClaim: a run that reported a dead run deletes
// its marker only while the marker is still its claim's write (If-Match on
// the ETag the claim's write gave). Rewritten since, by the run itself,
// alive after all (cut off from S3 for longer than the stale time), or by
// another task's claim over this one gone stale, the marker is theirs: it
// stays, with a warning, and no error. Before, the delete was
// unconditional and could remove a live run's marker.
func TestReportedDeletesOnlyItsClaim(t *testing.T) {
	const stale = 2 * time.Second
	tests := []struct {
		name string
		// meanwhile happens between the claim and the record's write.
		meanwhile func(t *testing.T, s3 s3Bucket, dead, other *storeMarkers)
		left      bool
	}{
		{"still the claim", func(*testing.T, s3Bucket, *storeMarkers, *storeMarkers) {}, false},
		{"its run alive after all", func(t *testing.T, _ s3Bucket, dead, _ *storeMarkers) {
			if err := dead.update(context.Background(), runState{Instance: "dead", Assigned: 4, Written: 4}); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"claimed by another once this claim was stale", func(t *testing.T, s3 s3Bucket, _, other *storeMarkers) {
			s3.age(t, stale+storeClockResolution)
			if runs, err := other.sweep(context.Background(), "other"); err != nil || len(runs) != 1 {
				t.Fatalf("the other task's sweep: %+v, %v", runs, err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s3 := newBucket(t)
			logs := &testenv.LogBuffer{}
			view := func() *storeMarkers {
				return &storeMarkers{store: s3, staleAfter: stale, interval: stale / 12, now: time.Now,
					log: slog.New(slog.NewJSONHandler(logs, nil))}
			}
			dead, claimer, other := view(), view(), view()
			if _, err := dead.open(ctx, runState{Instance: "dead", Assigned: 3, Written: 2}); err != nil {
				t.Fatal(err)
			}
			s3.age(t, stale+storeClockResolution)
			runs, err := claimer.sweep(ctx, "claimer")
			if err != nil || len(runs) != 1 || runs[0].Instance != "dead" {
				t.Fatalf("claims %+v, %v", runs, err)
			}
			tt.meanwhile(t, s3, dead, other)
			before, err := s3.GetMarker(ctx, "dead.json")
			if err != nil {
				t.Fatal(err)
			}
			if err := claimer.reported(ctx, runs); err != nil {
				t.Fatalf("reported: %v", err)
			}
			after, err := s3.GetMarker(ctx, "dead.json")
			switch {
			case tt.left && (err != nil || after.ETag != before.ETag):
				t.Errorf("the marker rewritten after the claim: %q, %v; want it left as %q", after.Body, err, before.Body)
			case !tt.left && !errors.Is(err, objectstore.ErrMarkerChanged):
				t.Errorf("the reported marker still the claim: %q, %v; want it gone", after.Body, err)
			}
			const warning = "reported run marker rewritten since it was claimed: left in place"
			if n := strings.Count(logs.String(), warning); n != map[bool]int{true: 1, false: 0}[tt.left] {
				t.Errorf("%d warnings %q:\n%s", n, warning, logs)
			}
			if len(claimer.taken) != 0 {
				t.Errorf("claims kept after the report: %+v", claimer.taken)
			}
		})
	}
}

// s3Bucket is run markers in an S3 emulator's bucket: the store, and the
// emulator, whose clock tells the markers' ages.
type s3Bucket struct {
	*s3store.Store
	srv *s3test.Server
}

func newBucket(t *testing.T) s3Bucket {
	t.Helper()
	srv := s3test.NewServer(t, "bucket")
	s3, err := s3store.New(context.Background(), s3store.Options{Bucket: "bucket", Prefix: "p", Client: s3test.Client(srv.URL)})
	if err != nil {
		t.Fatal(err)
	}
	return s3Bucket{Store: s3, srv: srv}
}

// age advances S3's clock by d, which makes every marker in the bucket d
// older, then waits for the runs live to rewrite theirs: until then a live
// run's marker is as old as a dead one's.
func (b s3Bucket) age(t *testing.T, d time.Duration, live ...string) {
	t.Helper()
	before := b.srv.Clock.Now()
	b.srv.Clock.Advance(d)
	for _, instance := range live {
		testenv.Eventually(t, "the run marker rewritten", func() bool {
			m, err := b.GetMarker(context.Background(), instance+".json")
			return err == nil && m.Written.After(before)
		})
	}
}

// only is the one record s holds.
func (s *recordStore) only(t *testing.T) associationaudit.Record {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.got) != 1 {
		t.Fatalf("%d records, want 1", len(s.got))
	}
	for _, r := range s.got {
		return r
	}
	return associationaudit.Record{}
}

var _ MarkerStore = (*s3store.Store)(nil)
