package auditwriter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
)

// RunsDir is where, under Options.RunDir, each running SCP keeps its run
// marker: <instance>.json, locked (flock) for as long as the process lives.
const RunsDir = "audit-runs"

// heartbeatEvery is how often the marker is brought up to date: the events
// of the last interval before a crash are the ones no marker counts.
const heartbeatEvery = time.Second

// markerSize is the marker's fixed size: it is rewritten in place, padded
// with spaces, so an update never shortens it.
const markerSize = 512

// markers is where runs keep their markers: a directory that outlives the
// process (dirMarkers) or, where none does, the S3 bucket (s3Markers).
// Every process sharing them claims a dead run's marker once: the claim
// holds until the record naming the run is written (reported), and one
// that dies first leaves it to another process.
type markers interface {
	// open claims the markers of runs that ended without a clean stop,
	// returning what each says, then creates this run's, saying st.
	open(ctx context.Context, st runState) ([]associationaudit.UncleanRun, error)
	// sweep claims the markers of runs that ended without a clean stop
	// since, other than self's: a running SCP looks for them periodically.
	// It returns the runs it claimed even with an error (about others).
	sweep(ctx context.Context, self string) ([]associationaudit.UncleanRun, error)
	// update brings this run's marker up to date.
	update(ctx context.Context, st runState) error
	// end ends this run's marker: removed on a clean stop, else left
	// saying st for a later start to report. Claims not yet reported are
	// let go, for another process to report.
	end(ctx context.Context, st runState, clean bool) error
	// reported is called once the record naming runs it claimed is
	// written: their markers may go.
	reported(ctx context.Context, runs []associationaudit.UncleanRun) error
	// every is how often the marker is brought up to date.
	every() time.Duration
}

// runState is what a run marker says of its run as of its last heartbeat.
type runState struct {
	Instance  string    `json:"instance"`
	AETitle   string    `json:"aeTitle"`
	Started   time.Time `json:"started"`
	Heartbeat time.Time `json:"heartbeat"`
	// Assigned is the highest sequence number given to a record so far:
	// the records observed are seq 1..Assigned.
	Assigned uint64 `json:"assigned"`
	Written  uint64 `json:"written"`
	Lost     uint64 `json:"lost"`
	// StopNotWritten: the run stopped, but its stop record could not be
	// written (counted in Lost): the marker stays, so the next start
	// reports the stop as unconfirmed.
	StopNotWritten bool `json:"stopNotWritten,omitempty"`
}

// dirMarkers keeps run markers in RunsDir under a directory, each locked
// (flock) for as long as its process lives. A dead run's marker is claimed
// by locking it: the lock is held, the file kept, until the record naming
// the run is written, so a process that dies in between leaves it to the
// next.
type dirMarkers struct {
	dir string
	m   *runMarker

	mu sync.Mutex
	// held are the markers of dead runs this process claimed, by path,
	// locked until reported (or let go by end).
	held map[string]heldMarker
}

type heldMarker struct {
	f        *os.File
	instance string
}

func (d *dirMarkers) open(ctx context.Context, st runState) ([]associationaudit.UncleanRun, error) {
	runs := filepath.Join(d.dir, RunsDir)
	if err := os.MkdirAll(runs, 0o700); err != nil {
		return nil, fmt.Errorf("auditwriter: run markers: %w", err)
	}
	unclean, err := d.sweep(ctx, st.Instance)
	if err == nil {
		d.m, err = createRun(runs, st)
	}
	if err != nil {
		return nil, errors.Join(err, d.letGo())
	}
	return unclean, nil
}

// sweep claims every marker whose lock is free, but this run's own and
// those it holds already. Both are skipped by name, not left to the lock:
// where flock is emulated with POSIX locks (NFS), a process's lock never
// conflicts with its own, and closing a second descriptor of the file
// would release it.
func (d *dirMarkers) sweep(_ context.Context, self string) ([]associationaudit.UncleanRun, error) {
	runs := filepath.Join(d.dir, RunsDir)
	entries, err := os.ReadDir(runs)
	if err != nil {
		return nil, fmt.Errorf("auditwriter: run markers: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return claimEach(names, self, func(name string) (*associationaudit.UncleanRun, error) {
		path := filepath.Join(runs, name)
		if _, ok := d.held[path]; ok {
			return nil, nil
		}
		dead, f, err := claimFile(path)
		if dead != nil {
			if d.held == nil {
				d.held = map[string]heldMarker{}
			}
			d.held[path] = heldMarker{f: f, instance: dead.Instance}
		}
		return dead, err
	})
}

// reportedIn reports whether runs names the run instance: a record naming it
// is written, and its claimed marker may go.
func reportedIn(runs []associationaudit.UncleanRun, instance string) bool {
	return slices.ContainsFunc(runs, func(u associationaudit.UncleanRun) bool { return u.Instance == instance })
}

// claimEach claims, with claim, each run marker of names but self's (nil:
// not this run's to report); an error about one does not stop the others.
func claimEach(names []string, self string, claim func(name string) (*associationaudit.UncleanRun, error)) ([]associationaudit.UncleanRun, error) {
	var unclean []associationaudit.UncleanRun
	var errs []error
	for _, name := range names {
		if name == self+".json" || !strings.HasSuffix(name, ".json") {
			continue
		}
		dead, err := claim(name)
		if err != nil {
			errs = append(errs, err)
		}
		if dead != nil {
			unclean = append(unclean, *dead)
		}
	}
	return unclean, errors.Join(errs...)
}

func (d *dirMarkers) update(_ context.Context, st runState) error { return d.m.update(st) }

func (d *dirMarkers) end(_ context.Context, st runState, clean bool) error {
	err := d.letGo()
	if clean {
		return errors.Join(err, d.m.remove())
	}
	// Left behind, its lock released with the file: the next start takes
	// it over as a run that did not stop cleanly.
	err = errors.Join(err, d.m.update(st))
	if cerr := d.m.f.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("auditwriter: close the run marker: %w", cerr))
	}
	return err
}

// reported removes the markers of runs, then lets their locks go.
func (d *dirMarkers) reported(_ context.Context, runs []associationaudit.UncleanRun) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for path, h := range d.held {
		if !reportedIn(runs, h.instance) {
			continue
		}
		if err := os.Remove(path); err != nil {
			errs = append(errs, fmt.Errorf("auditwriter: remove a reported run marker: %w", err))
		}
		if err := h.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("auditwriter: close a reported run marker: %w", err))
		}
		delete(d.held, path)
	}
	return errors.Join(errs...)
}

// letGo releases the claims not reported: their markers stay, for another
// process (or the next start) to report.
func (d *dirMarkers) letGo() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for path, h := range d.held {
		if err := h.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("auditwriter: close a claimed run marker: %w", err))
		}
		delete(d.held, path)
	}
	return errors.Join(errs...)
}

func (d *dirMarkers) every() time.Duration { return heartbeatEvery }

// runMarker is this process's marker.
type runMarker struct {
	f    *os.File
	path string
}

// createRun creates and locks this run's marker in runs. It is made
// under a name no sweep looks at (not .json), locked and written there,
// then linked to its own name: created there and locked after, a sweep
// of another process could lock it in between, take the live run for a
// dead one with an empty marker and report it, and the start, its lock
// refused, ran with no marker.
func createRun(runs string, st runState) (*runMarker, error) {
	path := filepath.Join(runs, st.Instance+".json")
	f, err := os.OpenFile(path+".new", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("auditwriter: run marker: %w", err)
	}
	m := &runMarker{f: f, path: path + ".new"}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil, errors.Join(fmt.Errorf("auditwriter: lock the run marker: %w", err), m.remove())
	}
	if err := m.update(st); err != nil {
		return nil, errors.Join(err, m.remove())
	}
	// A link, not a rename: like O_EXCL, it never replaces a marker.
	if err := os.Link(m.path, path); err != nil {
		return nil, errors.Join(fmt.Errorf("auditwriter: run marker: %w", err), m.remove())
	}
	if err := os.Remove(m.path); err != nil {
		m.path = path
		return nil, errors.Join(fmt.Errorf("auditwriter: run marker: %w", err), m.remove())
	}
	m.path = path
	// The marker's name must survive a power loss too.
	if err := vfs.SyncDir(runs); err != nil {
		return nil, errors.Join(fmt.Errorf("auditwriter: sync %s: %w", RunsDir, err), m.remove())
	}
	return m, nil
}

// claimFile locks the marker at path when its run is over and returns what
// it says with the file, still locked; nil while another process holds it
// (its run, or another claim).
func claimFile(path string) (*associationaudit.UncleanRun, *os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil // reported by another process meanwhile, or stopped cleanly
	}
	if err != nil {
		return nil, nil, fmt.Errorf("auditwriter: run marker: %w", err)
	}
	dead, err := claimLocked(f, path)
	if dead != nil && err == nil {
		return dead, f, nil
	}
	if cerr := f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("auditwriter: close a run marker: %w", cerr)
	}
	return nil, nil, err
}

func claimLocked(f *os.File, path string) (*associationaudit.UncleanRun, error) {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, nil // its process lives, or another claimed it
		}
		return nil, fmt.Errorf("auditwriter: lock a run marker: %w", err)
	}
	// Another process may have reported it and removed it between our
	// open and our lock.
	held, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("auditwriter: run marker: %w", err)
	}
	if now, err := os.Stat(path); err != nil || !os.SameFile(held, now) {
		return nil, nil
	}
	body := make([]byte, markerSize)
	n, err := f.ReadAt(body, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("auditwriter: read a run marker: %w", err)
	}
	dead := readUnclean(body[:n], strings.TrimSuffix(filepath.Base(path), ".json"))
	return &dead, nil
}

// readUnclean is what a dead run's marker tells of the records it may have
// lost.
func readUnclean(body []byte, instance string) associationaudit.UncleanRun {
	var st runState
	if err := json.Unmarshal([]byte(strings.TrimRight(string(body), " \x00")), &st); err != nil {
		return associationaudit.UncleanRun{Instance: instance, Unreadable: true}
	}
	if st.Instance == "" {
		st.Instance = instance
	}
	return associationaudit.UncleanRun{
		Instance: st.Instance, AETitle: st.AETitle, Started: st.Started.UTC(), LastAlive: st.Heartbeat.UTC(),
		LastSeq: st.Assigned, Written: st.Written, CountedLost: st.Lost,
		NotWritten: st.Assigned - min(st.Assigned, st.Written+st.Lost), StopNotWritten: st.StopNotWritten,
	}
}

// describeUnclean says in words what a dead run's marker tells, for the
// start record's reason and the log.
func describeUnclean(u associationaudit.UncleanRun) string {
	if u.Unreadable {
		return fmt.Sprintf("previous run %s stopped uncleanly (its marker is unreadable): any of its records may be missing", u.Instance)
	}
	if u.StopNotWritten {
		return fmt.Sprintf("previous run %s (AE %s, started %s) stopped at %s but its stop record could not be written, so its stop is unconfirmed: "+
			"of its records seq 1-%d, %d written and %d counted lost (its stop record among them), %d not written; "+
			"those of seq 1-%d missing from the trail are lost",
			u.Instance, u.AETitle, u.Started.Format(time.RFC3339Nano), u.LastAlive.Format(time.RFC3339Nano),
			u.LastSeq, u.Written, u.CountedLost, u.NotWritten, u.LastSeq)
	}
	return fmt.Sprintf("previous run %s (AE %s, started %s) stopped uncleanly, last alive %s: "+
		"of its records seq 1-%d, %d written and %d counted lost by then, %d not yet written; "+
		"those of seq 1-%d missing from the trail are lost, and records after seq %d (events until its death) may be",
		u.Instance, u.AETitle, u.Started.Format(time.RFC3339Nano), u.LastAlive.Format(time.RFC3339Nano),
		u.LastSeq, u.Written, u.CountedLost, u.NotWritten, u.LastSeq, u.LastSeq)
}

// update rewrites the marker in place (no fsync: a killed process's page
// cache survives it; a host lost within a second of an update leaves an
// older state, or an unreadable one, which says as much).
func (m *runMarker) update(st runState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("auditwriter: run marker: %w", err)
	}
	if len(b) > markerSize {
		return fmt.Errorf("auditwriter: run marker of %d bytes", len(b))
	}
	b = append(b, []byte(strings.Repeat(" ", markerSize-len(b)))...)
	if _, err := m.f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("auditwriter: update the run marker: %w", err)
	}
	return nil
}

// remove ends the run cleanly: the marker goes, then its lock.
func (m *runMarker) remove() error {
	var errs []error
	if err := os.Remove(m.path); err != nil {
		errs = append(errs, fmt.Errorf("auditwriter: remove the run marker: %w", err))
	}
	if err := m.f.Close(); err != nil {
		errs = append(errs, fmt.Errorf("auditwriter: close the run marker: %w", err))
	}
	return errors.Join(errs...)
}
