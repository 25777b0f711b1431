package auditwriter

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
)

// TestStoreRunMarkers: with the run markers in an S3 bucket (a direct S3
// store, no directory outliving the process), a start reports the runs
// whose markers went stale or say their stop record was lost, once, and
// leaves alone those rewritten lately or claimed lately by another start;
// the markers it reported go once its start record is written, and a clean
// stop removes its own.
func TestStoreRunMarkers(t *testing.T) {
	const stale = 2 * time.Second
	now := time.Now()
	dead := func(heartbeat time.Time) storeState {
		return storeState{runState: runState{Instance: "dead1", AETitle: "REMOTE_AE", Started: now.Add(-time.Hour), Heartbeat: heartbeat,
			Assigned: 7, Written: 5, Lost: 1}}
	}
	claimed := dead(now.Add(-time.Hour))
	claimed.TakenBy, claimed.TakenAt = "other", now
	claimedLongAgo := dead(now.Add(-time.Hour))
	claimedLongAgo.TakenBy, claimedLongAgo.TakenAt = "other", now.Add(-time.Hour)
	stopLost := dead(now)
	stopLost.StopNotWritten = true
	tests := []struct {
		name     string
		marker   *storeState // under dead1.json; nil: none
		raw      string      // or these bytes
		reported bool
	}{
		{"none", nil, "", false},
		{"alive (rewritten lately)", ptr(dead(now)), "", false},
		{"silent for longer than stale", ptr(dead(now.Add(-time.Minute))), "", true},
		{"stop record lost", &stopLost, "", true},
		{"claimed lately by another start", &claimed, "", false},
		{"claimed long ago by a start that died", &claimedLongAgo, "", true},
		{"unreadable", nil, `{"instance":"dea`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := s3test.NewServer(t, "bucket")
			s3, err := s3store.New(context.Background(), s3store.Options{Bucket: "bucket", Prefix: "p", Client: s3test.Client(srv.URL)})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			body := []byte(tt.raw)
			if tt.marker != nil {
				if body, err = json.Marshal(tt.marker); err != nil {
					t.Fatal(err)
				}
			}
			if len(body) > 0 {
				if err := s3.PutMarker(ctx, "dead1.json", body, ""); err != nil {
					t.Fatal(err)
				}
			}
			records := &recordStore{got: map[string]associationaudit.Record{}}
			w, err := New(records, Options{Markers: s3, MarkersStaleAfter: stale})
			if err != nil {
				t.Fatal(err)
			}
			w.Started("cccc", "REMOTE_AE")
			waitFor(t, func() bool { return records.count() == 1 })
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
			waitFor(t, func() bool { names, err := s3.ListMarkers(ctx); return err == nil && cmp.Equal(names, wantLeft) })
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
// heartbeat stops) is reported by a later start once its marker is stale,
// not before; the reported marker is reported once. (The runs started
// beside it have their sweeps stopped: TestSweepReportsDeadRun has a
// running SCP report it.)
func TestStoreRunMarkerGoesStale(t *testing.T) {
	const stale = 2 * time.Second
	srv := s3test.NewServer(t, "bucket")
	s3, err := s3store.New(context.Background(), s3store.Options{Bucket: "bucket", Client: s3test.Client(srv.URL)})
	if err != nil {
		t.Fatal(err)
	}
	start := func(instance string) (*Writer, associationaudit.Record) {
		t.Helper()
		records := &recordStore{got: map[string]associationaudit.Record{}}
		w, err := New(records, Options{Markers: s3, MarkersStaleAfter: stale})
		if err != nil {
			t.Fatal(err)
		}
		w.Started(instance, "REMOTE_AE")
		w.stopSweep()
		waitFor(t, func() bool { return records.count() == 1 })
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
	time.Sleep(stale + 500*time.Millisecond)
	late, r := start("cccc")
	if len(r.PreviousRuns) != 1 || r.PreviousRuns[0].Instance != "aaaa" || !strings.Contains(r.Reason, "previous run aaaa ") {
		t.Errorf("the start after the marker went stale says %q, %+v", r.Reason, r.PreviousRuns)
	}
	again, r := start("dddd")
	if len(r.PreviousRuns) != 0 {
		t.Errorf("reported twice: %+v", r.PreviousRuns)
	}
	for _, w := range []*Writer{early, late, again} {
		if err := w.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

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
