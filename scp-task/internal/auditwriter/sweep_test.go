package auditwriter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// markerKinds are the two places run markers live, each set up fresh for
// a test: a directory (locks) and an S3 bucket (staleness).
var markerKinds = []struct {
	name  string
	fresh func(t *testing.T) sharedMarkers
}{
	{"directory", func(t *testing.T) sharedMarkers {
		dir := t.TempDir()
		return sharedMarkers{
			options: func() Options { return Options{RunDir: dir, MarkersStaleAfter: time.Second} },
			view:    func() markers { return &dirMarkers{dir: dir} },
			// A dead run's lock is free at once: its age plays no part.
			age: func(*testing.T, time.Duration, ...string) {},
		}
	}},
	{"S3", func(t *testing.T) sharedMarkers {
		s3 := newBucket(t)
		return sharedMarkers{
			options: func() Options { return Options{Markers: s3, MarkersStaleAfter: time.Second} },
			view: func() markers {
				return &storeMarkers{store: s3, staleAfter: time.Second, interval: time.Second / 12, now: time.Now, log: slog.New(slog.DiscardHandler)}
			},
			age: s3.age,
		}
	}},
}

// sharedMarkers are run markers that processes share.
type sharedMarkers struct {
	// options are the writer options of a run on them (MarkersStaleAfter
	// 1 s).
	options func() Options
	// view is one process's view of them, as a writer with options has.
	view func() markers
	// age makes them d older, then waits for the runs live to rewrite
	// theirs (s3Bucket.age).
	age func(t *testing.T, d time.Duration, live ...string)
}

// kill ends a writer's run as a SIGKILL would: its heartbeat and sweeps
// stop, its marker's lock goes with its file, nothing removes the marker.
func kill(t *testing.T, w *Writer) {
	t.Helper()
	w.stopSweep()
	close(w.hbStop)
	<-w.hbDone
	w.marking = false
	if d, ok := w.runMarkers.(*dirMarkers); ok {
		if err := errors.Join(d.m.f.Close(), d.letGo()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSweepReportsDeadRun: of two runs sharing their markers, one killed
// is reported by the other while it runs, within a sweep of its marker
// going stale (S3, by S3's clock) or its lock free (a directory), with no
// start in between: an unclean-stop-found record naming it, the log line
// and the counter, as a start reports one; once, its marker gone. Before,
// only the next start anywhere reported it.
func TestSweepReportsDeadRun(t *testing.T) {
	for _, kind := range markerKinds {
		t.Run(kind.name, func(t *testing.T) {
			shared := kind.fresh(t)
			start := func(instance string) (*Writer, *recordStore, *testenv.LogBuffer) {
				records := &recordStore{got: map[string]associationaudit.Record{}}
				logs := &testenv.LogBuffer{}
				o := shared.options()
				o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
				w, err := New(records, o)
				if err != nil {
					t.Fatal(err)
				}
				w.Started(instance, "REMOTE_AE")
				testenv.Eventually(t, "the start record", func() bool { return records.count() == 1 })
				// The agent's first scrape, its baseline: a count before it
				// shows from the next (metricnames.HeldCounter).
				if got := testutil.ToFloat64(w.metrics.unclean); got != 0 {
					t.Errorf("unclean stops at the first scrape %v, want 0", got)
				}
				return w, records, logs
			}
			dead, _, _ := start("aaaa")
			survivor, records, logs := start("bbbb")
			kill(t, dead)
			shared.age(t, time.Second+storeClockResolution, "bbbb")
			killed := time.Now()
			var found associationaudit.Record
			testenv.Eventually(t, "the unclean-stop record", func() bool {
				for _, r := range records.all() {
					if r.Event == associationaudit.EventUncleanStopFound {
						found = r
						return true
					}
				}
				return false
			})
			// A sweep, with a margin for the machine.
			if took, limit := time.Since(killed), time.Second/sweepsPerStale+time.Second; took > limit {
				t.Errorf("reported %s after the marker was stale, over %s", took, limit)
			}
			if len(found.PreviousRuns) != 1 || found.PreviousRuns[0].Instance != "aaaa" || found.AssociationID != "bbbb" ||
				found.CalledAE != "REMOTE_AE" || !strings.HasPrefix(found.Reason, "previous run aaaa ") {
				t.Fatalf("unclean-stop-found record %+v", found)
			}
			if u := found.PreviousRuns[0]; u.LastSeq != 1 || u.Written+u.NotWritten != 1 || u.AETitle != "REMOTE_AE" {
				t.Errorf("previous run %+v", u)
			}
			if got := testutil.ToFloat64(survivor.metrics.unclean); got != 1 {
				t.Errorf("unclean stops counted %v, want 1", got)
			}
			if n := strings.Count(logs.String(), associationaudit.UncleanStopLog); n != 1 {
				t.Errorf("%d log lines %q, want 1:\n%s", n, associationaudit.UncleanStopLog, logs)
			}
			// More sweeps report nothing more, and a later start finds nothing.
			time.Sleep(2 * time.Second / sweepsPerStale)
			later, laterRecords, _ := start("cccc")
			if r := laterRecords.all(); len(r[0].PreviousRuns) != 0 {
				t.Errorf("reported again at a start: %+v", r[0].PreviousRuns)
			}
			for _, w := range []*Writer{survivor, later} {
				if err := w.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			n := 0
			for _, r := range append(records.all(), laterRecords.all()...) {
				n += len(r.PreviousRuns)
			}
			if n != 1 {
				t.Errorf("the dead run reported %d times, want 1", n)
			}
		})
	}
}

// TestClaimOnce: processes sweeping the same markers at once claim a dead
// run once between them; a claim reported removes the marker, and one let
// go unreported (its process died before its record was written) is
// claimed again by another: reported at least once, never by two at once.
func TestClaimOnce(t *testing.T) {
	for _, kind := range markerKinds {
		for _, reporters := range []int{2, 8} {
			for _, reported := range []bool{true, false} {
				name := kind.name + "/" + strings.Repeat("r", reporters)
				if !reported {
					name += "/claimer died"
				}
				t.Run(name, func(t *testing.T) {
					shared := kind.fresh(t)
					view := shared.view
					ctx := context.Background()
					dead := view()
					if _, err := dead.open(ctx, runState{Instance: "dead", AETitle: "REMOTE_AE", Started: time.Now(), Heartbeat: time.Now(), Assigned: 3, Written: 2}); err != nil {
						t.Fatal(err)
					}
					// Killed an hour ago: its lock is free, its marker stale.
					if err := dead.end(ctx, runState{Instance: "dead", Heartbeat: time.Now(), Assigned: 3, Written: 2}, false); err != nil {
						t.Fatal(err)
					}
					shared.age(t, time.Hour)
					views := make([]markers, reporters)
					claims := make([][]associationaudit.UncleanRun, reporters)
					var wg sync.WaitGroup
					for i := range views {
						views[i] = view()
						wg.Go(func() {
							var err error
							if claims[i], err = views[i].sweep(ctx, "r"+string(rune('a'+i))); err != nil {
								t.Error(err)
							}
						})
					}
					wg.Wait()
					claimer := -1
					for i, c := range claims {
						if len(c) == 0 {
							continue
						}
						if claimer >= 0 || len(c) != 1 || c[0].Instance != "dead" || c[0].LastSeq != 3 {
							t.Fatalf("claims %+v", claims)
						}
						claimer = i
					}
					if claimer < 0 {
						t.Fatal("nobody claimed the dead run")
					}
					other := views[(claimer+1)%reporters]
					if reported {
						if err := views[claimer].reported(ctx, claims[claimer]); err != nil {
							t.Fatal(err)
						}
					} else if d, ok := views[claimer].(*dirMarkers); ok {
						// Its lock goes with its process; a claim in S3
						// stays until it is stale.
						if err := d.letGo(); err != nil {
							t.Fatal(err)
						}
					}
					if !reported {
						// The dead claimer's claim goes stale (S3).
						shared.age(t, time.Second+storeClockResolution)
					}
					again, err := other.sweep(ctx, "rz")
					if err != nil {
						t.Fatal(err)
					}
					if want := map[bool]int{true: 0, false: 1}[reported]; len(again) != want {
						t.Errorf("swept after the claim was %s: %+v, want %d", map[bool]string{true: "reported", false: "let go"}[reported], again, want)
					}
				})
			}
		}
	}
}

// all is every record s holds, in sequence order.
func (s *recordStore) all() []associationaudit.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]associationaudit.Record, 0, len(s.got))
	for _, r := range s.got {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b associationaudit.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

// hangingMarkers is a MarkerStore with no markers whose listings, after
// the start's, hang until their context ends (S3 slow or unreachable).
type hangingMarkers struct {
	mu      sync.Mutex
	lists   int
	hanging chan struct{} // closed when a sweep's listing hangs
}

func (h *hangingMarkers) ListMarkers(ctx context.Context) ([]string, error) {
	h.mu.Lock()
	h.lists++
	n := h.lists
	h.mu.Unlock()
	if n == 2 {
		close(h.hanging)
	}
	if n >= 2 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return nil, nil
}

func (h *hangingMarkers) GetMarker(context.Context, string) (objectstore.Marker, error) {
	return objectstore.Marker{}, errors.New("none")
}
func (h *hangingMarkers) PutMarker(context.Context, string, []byte, string) (string, error) {
	return "", nil
}
func (h *hangingMarkers) DeleteMarker(context.Context, string, string) error { return nil }

// TestStopNotHeldBySweep: a sweep under way when the SCP stops (its
// listing hanging on a slow S3) is cut short: Stopping returned only once
// the sweep's own timeout (30 s) ran out, past the stop timeout's SIGKILL
// (10 s after the drain), so the stop record was never written.
func TestStopNotHeldBySweep(t *testing.T) {
	h := &hangingMarkers{hanging: make(chan struct{})}
	store := &recordStore{got: map[string]associationaudit.Record{}}
	w, err := New(store, Options{Markers: h, MarkersStaleAfter: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w.Started("live", "REMOTE_AE")
	select {
	case <-h.hanging:
	case <-time.After(10 * time.Second):
		t.Fatal("no sweep")
	}
	stopped := make(chan struct{})
	go func() {
		w.Stopping("shutdown requested")
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatal("Stopping waits for a hung sweep")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if r := store.all(); len(r) != 2 || r[1].Event != associationaudit.EventApplicationStop {
		t.Errorf("records %+v, want the start and the stop", r)
	}
}

// TestStopWithSweepWaitingForRoom: a sweep that finds a dead run while the
// store refuses every record and the queue is full does not hold up the
// stop: Stopping returns at once and Close gives up at its deadline,
// counting the sweep's record lost with the rest (the dead run's claim goes
// stale and another process reports it). Before, the sweep waited for
// room that never came and Stopping waited for the sweep: the stop hung
// until the stop timeout's SIGKILL.
func TestStopWithSweepWaitingForRoom(t *testing.T) {
	dir := t.TempDir()
	opts := Options{RunDir: dir, MarkersStaleAfter: 200 * time.Millisecond, QueueSize: 1, Parallel: 1, MaxBackoff: 10 * time.Millisecond}
	dead, err := New(&recordStore{got: map[string]associationaudit.Record{}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	dead.Started("aaaa", "REMOTE_AE")
	logs := &testenv.LogBuffer{}
	opts.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	store := &recordStore{got: map[string]associationaudit.Record{}, down: true}
	w, err := New(store, opts)
	if err != nil {
		t.Fatal(err)
	}
	w.Started("bbbb", "REMOTE_AE")
	// One record being written, one waiting for the feeder, one in the
	// queue: full.
	for i := range 2 {
		w.ObserveAssociation(dicomnet.Event{Type: dicomnet.EventAccepted, Association: &dicomnet.AssociationInfo{ID: fmt.Sprintf("s%d", i)}})
	}
	testenv.Eventually(t, "a full queue, not ready", func() bool { return w.Ready(context.Background()) != nil && len(w.queue) == cap(w.queue) })
	kill(t, dead)
	testenv.Eventually(t, "the unclean-stop line", func() bool { return strings.Contains(logs.String(), associationaudit.UncleanStopLog) })
	time.Sleep(50 * time.Millisecond) // the sweep waits for room

	stopGivingUp(t, w, true, "Stopping waits for the sweep, which waits for room in the queue")
	if !strings.Contains(logs.String(), `"event":"unclean-stop-found"`) {
		t.Errorf("the sweep's record is not logged lost:\n%s", logs.String())
	}
}

// stopGivingUp stops w, whose store refuses every record and whose queue
// is full: Stopping (if stopping) returns at once, else the test fails
// saying hung, and Close gives up at its 1 s deadline, saying records
// were lost.
func stopGivingUp(t *testing.T, w *Writer, stopping bool, hung string) {
	t.Helper()
	if stopping {
		stopped := make(chan struct{})
		go func() { w.Stopping("test"); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			t.Fatal(hung)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- w.Close(ctx) }()
	select {
	case err := <-closed:
		if err == nil {
			t.Error("Close reports no record lost")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not give up at its deadline")
	}
}
