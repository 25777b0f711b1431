package auditwriter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
)

// MarkerStore keeps run markers where no directory outlives the process:
// the S3 store (s3store.Store), under objectstore.RunMarkersPrefix.
type MarkerStore interface {
	ListMarkers(ctx context.Context) ([]string, error)
	// GetMarker and a PutMarker with ifMatch its ETag are a compare and
	// swap: objectstore.ErrMarkerChanged when another process wrote first.
	// The marker read tells its age by the store's clock.
	GetMarker(ctx context.Context, name string) (objectstore.Marker, error)
	// PutMarker returns the ETag of what it wrote.
	PutMarker(ctx context.Context, name string, body []byte, ifMatch string) (etag string, err error)
	// DeleteMarker with ifMatch deletes only the version whose ETag it
	// is: objectstore.ErrMarkerChanged when another was written since.
	DeleteMarker(ctx context.Context, name, ifMatch string) error
}

// S3 has no lock that dies with its process: a run proves it lives by
// rewriting its marker every storeHeartbeatEvery, and a marker not
// rewritten for storeStaleAfter is a run that ended without a clean stop.
// The margin covers S3 refusing writes for a while (which also stops the
// SCP taking associations); a live run reported dead by a start meanwhile
// shows its own stop record later in the trail.
const (
	storeHeartbeatEvery = 5 * time.Second
	storeStaleAfter     = time.Minute
)

// storeClockResolution is the unit of the store's times: S3 gives
// Last-Modified and Date in whole seconds, so an age told by them may
// exceed the time elapsed by up to a second.
const storeClockResolution = time.Second

// stale is the one rule for how long a marker in the store went
// unrewritten: written and read are when it was last written and when it
// was read, both by the store's clock (objectstore.Marker), never by the
// clock of the task that wrote it or of the one reading it, which may be
// off by more than staleAfter. Past staleAfter by the clock's resolution,
// the time elapsed surely is past staleAfter.
func stale(written, read time.Time, staleAfter time.Duration) bool {
	return read.Sub(written) >= staleAfter+storeClockResolution
}

// storeMarkers keeps run markers in a MarkerStore. Every SCP writing to
// the same bucket and prefix shares them, so any later start takes over a
// dead run's marker, whichever task it was: Fargate replaces a task with
// one of another id, on another host.
type storeMarkers struct {
	store      MarkerStore
	staleAfter time.Duration
	interval   time.Duration
	name       string
	// now is this process's clock, for what a claim says of when it was
	// made (information only: staleness is the store's clock's).
	now func() time.Time
	log *slog.Logger

	mu sync.Mutex
	// taken are the markers of dead runs this run claimed, by name:
	// deleted once the record naming them is written, if still claimed.
	taken map[string]takenMarker
}

// takenMarker is a dead run's marker this run claimed: the run's instance,
// and the ETag of the claim's write, over which the marker is deleted.
type takenMarker struct {
	instance, etag string
}

// storeState is a marker in the store: the run's state and, once a start
// claimed it as a dead run's, which run did and when (by the claimer's
// clock, for a reader; the claim's age is its write's, by the store's).
type storeState struct {
	runState
	TakenBy string    `json:"takenBy,omitempty"`
	TakenAt time.Time `json:"takenAt,omitzero"`
}

func (m *storeMarkers) every() time.Duration { return m.interval }

func (m *storeMarkers) open(ctx context.Context, st runState) ([]associationaudit.UncleanRun, error) {
	m.name = st.Instance + ".json"
	unclean, err := m.sweep(ctx, st.Instance)
	if err != nil {
		return nil, err
	}
	if err := m.update(ctx, st); err != nil {
		return nil, err
	}
	return unclean, nil
}

// sweep claims the markers of runs that are over, but this run's own and
// those it claimed already (a claim of its own waiting for its record is
// not stale to it).
func (m *storeMarkers) sweep(ctx context.Context, self string) ([]associationaudit.UncleanRun, error) {
	names, err := m.store.ListMarkers(ctx)
	if err != nil {
		return nil, fmt.Errorf("auditwriter: run markers: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return claimEach(names, self, func(name string) (*associationaudit.UncleanRun, error) {
		if _, ok := m.taken[name]; ok {
			return nil, nil
		}
		dead, etag, err := m.claim(ctx, name, self)
		if dead != nil {
			if m.taken == nil {
				m.taken = map[string]takenMarker{}
			}
			m.taken[name] = takenMarker{instance: dead.Instance, etag: etag}
		}
		return dead, err
	})
}

// claim takes over the marker name if its run is over (stopped with its
// stop record lost, or silent for staleAfter) and no other start is
// reporting it: nil when it is not this run's to report. Silent is by the
// store's clock: the marker's last write, its run's heartbeat or a claim,
// against the read. It returns the ETag of the claim's write.
func (m *storeMarkers) claim(ctx context.Context, name, by string) (*associationaudit.UncleanRun, string, error) {
	mk, err := m.store.GetMarker(ctx, name)
	if errors.Is(err, objectstore.ErrMarkerChanged) {
		return nil, "", nil // gone meanwhile: stopped cleanly, or taken over
	}
	if err != nil {
		return nil, "", fmt.Errorf("auditwriter: read a run marker: %w", err)
	}
	instance := strings.TrimSuffix(name, ".json")
	var s storeState
	if json.Unmarshal(mk.Body, &s) != nil {
		// Unreadable: never a live run's (they are written whole).
		s = storeState{}
	} else if !stale(mk.Written, mk.Read, m.staleAfter) {
		switch {
		case s.TakenBy != "":
			return nil, "", nil // another start reports it
		case !s.StopNotWritten:
			return nil, "", nil // its run lives
		}
	}
	s.TakenBy, s.TakenAt = by, m.now()
	claimed, err := json.Marshal(s)
	if err != nil {
		return nil, "", fmt.Errorf("auditwriter: run marker: %w", err)
	}
	etag, err := m.store.PutMarker(ctx, name, claimed, mk.ETag)
	if errors.Is(err, objectstore.ErrMarkerChanged) {
		return nil, "", nil // its run wrote it (alive after all), or another start claimed it
	} else if err != nil {
		return nil, "", fmt.Errorf("auditwriter: take over a run marker: %w", err)
	}
	dead := readUnclean(mk.Body, instance)
	return &dead, etag, nil
}

func (m *storeMarkers) update(ctx context.Context, st runState) error {
	b, err := json.Marshal(storeState{runState: st})
	if err != nil {
		return fmt.Errorf("auditwriter: run marker: %w", err)
	}
	if _, err := m.store.PutMarker(ctx, m.name, b, ""); err != nil {
		return fmt.Errorf("auditwriter: update the run marker: %w", err)
	}
	return nil
}

func (m *storeMarkers) end(ctx context.Context, st runState, clean bool) error {
	// Claims not reported stay claimed until the claim is stale: then
	// another process reports them.
	m.mu.Lock()
	m.taken = nil
	m.mu.Unlock()
	if !clean {
		return m.update(ctx, st)
	}
	if err := m.store.DeleteMarker(ctx, m.name, ""); err != nil {
		return fmt.Errorf("auditwriter: remove the run marker: %w", err)
	}
	return nil
}

// reported deletes the markers of runs, once the record naming them is
// written. Until then they stay, claimed: a run that dies before its
// record is written leaves them to another process once the claim is
// stale. Each is deleted only while it is the claim's write (If-Match):
// rewritten since, by its run (alive after all: cut off from S3 for
// longer than the stale time) or by another task's claim (this one's went
// stale before its record was written), it is that run's or that task's,
// and stays.
func (m *storeMarkers) reported(ctx context.Context, runs []associationaudit.UncleanRun) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for name, t := range m.taken {
		if !reportedIn(runs, t.instance) {
			continue
		}
		err := m.store.DeleteMarker(ctx, name, t.etag)
		switch {
		case errors.Is(err, objectstore.ErrMarkerChanged):
			m.log.Warn("reported run marker rewritten since it was claimed: left in place", "previous_run", t.instance)
		case err != nil:
			errs = append(errs, fmt.Errorf("auditwriter: remove a reported run marker: %w", err))
			continue // a later sweep of another process reports it again
		}
		delete(m.taken, name)
	}
	return errors.Join(errs...)
}
