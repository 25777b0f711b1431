package auditfeed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// ErrSpoolFull is returned by Spool.Add when the spool holds its maximum.
var ErrSpoolFull = errors.New("auditfeed: spool full")

// Spool is a file Outbox: one JSON file per record in a directory, named
// by the time it was added, made durable (fsync of the file and the
// directory) before Add returns. It is for scp-task without local mode,
// where no database keeps the audit trail; its index of files is in memory
// (about 50 bytes a record), bounded by max.
type Spool struct {
	dir string
	max int

	mu     sync.Mutex
	names  []string // sorted: oldest first
	adding int      // Adds under way, counted against max
	last   int64    // unix nanos of the newest name, kept increasing
}

const spoolSuffix = ".json"

// OpenSpool opens (creating if needed) the spool in dir, holding at most
// max records (0: 100000). Leftovers of an interrupted Add are removed.
func OpenSpool(dir string, limit int) (*Spool, error) {
	if limit <= 0 {
		limit = 100000
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("auditfeed: spool %s: %w", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("auditfeed: spool %s: %w", dir, err)
	}
	s := &Spool{dir: dir, max: limit}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, ".tmp-"):
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("auditfeed: spool %s: %w", dir, err)
			}
		case strings.HasSuffix(name, spoolSuffix):
			if n, ok := nanosOf(name); ok {
				s.names = append(s.names, name)
				s.last = max64(s.last, n)
			}
		}
	}
	slices.Sort(s.names)
	return s, nil
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// nanosOf reads the time a spool file name carries.
func nanosOf(name string) (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimSuffix(name, spoolSuffix), 10, 64)
	return n, err == nil && n > 0
}

// Add puts rec in the spool, durably. It fails with ErrSpoolFull when the
// spool holds its maximum: the record stays in the audit trail, only its
// copy to the collector is lost, and the caller counts it.
func (s *Spool) Add(rec pipeline.AuditRecord) error {
	body, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("auditfeed: spool add: %w", err)
	}
	s.mu.Lock()
	if len(s.names)+s.adding >= s.max {
		s.mu.Unlock()
		return ErrSpoolFull
	}
	s.adding++
	// Names sort in the order records were added, even when the clock
	// steps back or two records arrive in the same nanosecond.
	n := max64(nowFunc().UnixNano(), s.last+1)
	s.last = n
	name := fmt.Sprintf("%019d%s", n, spoolSuffix)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.adding--
		s.mu.Unlock()
	}()

	tmp, err := os.CreateTemp(s.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("auditfeed: spool add: %w", err)
	}
	_, werr := tmp.Write(body)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return errors.Join(fmt.Errorf("auditfeed: spool add: %w", err), os.Remove(tmp.Name()))
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.dir, name)); err != nil {
		return errors.Join(fmt.Errorf("auditfeed: spool add: %w", err), os.Remove(tmp.Name()))
	}
	if err := filestore.SyncDir(s.dir); err != nil {
		return fmt.Errorf("auditfeed: spool add: %w", err)
	}
	s.mu.Lock()
	i, _ := slices.BinarySearch(s.names, name)
	s.names = slices.Insert(s.names, i, name)
	s.mu.Unlock()
	return nil
}

// Pending implements Outbox.
func (s *Spool) Pending(_ context.Context, limit int) ([]Entry, error) {
	s.mu.Lock()
	names := slices.Clone(s.names[:min(limit, len(s.names))])
	s.mu.Unlock()
	out := make([]Entry, 0, len(names))
	for _, name := range names {
		e := Entry{Key: name}
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			return nil, fmt.Errorf("auditfeed: spool read %s: %w", name, err)
		}
		if err := json.Unmarshal(b, &e.Record); err != nil {
			e.Err = fmt.Errorf("auditfeed: spool entry %s is not a record: %w", name, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Delivered implements Outbox: the files go.
func (s *Spool) Delivered(_ context.Context, entries []Entry) error {
	for _, e := range entries {
		if err := os.Remove(filepath.Join(s.dir, e.Key)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("auditfeed: spool remove %s: %w", e.Key, err)
		}
		s.mu.Lock()
		if i, ok := slices.BinarySearch(s.names, e.Key); ok {
			s.names = slices.Delete(s.names, i, i+1)
		}
		s.mu.Unlock()
	}
	return nil
}

// Backlog implements Outbox.
func (s *Spool) Backlog(context.Context) (Backlog, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := Backlog{Count: len(s.names)}
	if len(s.names) > 0 {
		n, _ := nanosOf(s.names[0])
		b.Oldest = time.Unix(0, n)
	}
	return b, nil
}
