package stagedstore

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/journal"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
)

// item is one staged object or record waiting for its upload.
type item struct {
	j   *journal.Journal // the journal holding it
	rec journal.Record
	md  meta
	dir string    // that journal's directory
	ad  *adoption // the journal taken over from a dead task; nil: this task's

	idx      int // in the queue's age heap
	failures int // transient ones in a row
	parked   bool
}

func (it *item) size() int64 { return it.rec.Size + it.md.Size }

// key is where the item goes in S3 (before any conflict).
func (it *item) key() string {
	if it.md.Kind == kindRecord {
		return it.md.Key
	}
	k, _ := objectstore.Key(*it.md.Object) // checked by Put before staging
	return k
}

// adoption is a dead task's journal this task took over.
type adoption struct {
	name string
	dir  string
	lock io.Closer
	j    *journal.Journal
	left int  // items not yet uploaded
	keep bool // holds a record that cannot be read: leave it in place
}

// Retry policy: transient failures (S3 unreachable, throttling) are
// retried with a pause growing to maxRetry; an item that fails otherwise
// (a different record already under its key, a staged copy that no longer
// matches its checksum, access denied) is parked: retried only every
// parkedRetry, still counted in the backlog and its age, which the alarm
// watches, and left out of Drain.
const (
	firstRetry  = time.Second
	maxRetry    = 30 * time.Second
	parkedRetry = time.Minute
)

// queue holds every item not yet uploaded: ready ones in staging order,
// and all of them in a heap by staging time for the backlog's age.
type queue struct {
	mu    sync.Mutex
	ready []*item
	ages  ageHeap
	// byKey holds the items not yet uploaded of each key, in staging
	// order: only the first is ever ready, so that of two objects sent
	// under one key the first staged is the one S3 keeps under it (the
	// other under the conflict key), as with a direct upload.
	byKey    map[string][]*item
	nbytes   int64
	parked   int
	wake     chan struct{}
	done     chan struct{}
	closed   bool
	adopted  map[string]*adoption
	inflight int
}

func newQueue() *queue {
	return &queue{wake: make(chan struct{}, 1), done: make(chan struct{}), adopted: map[string]*adoption{}, byKey: map[string][]*item{}}
}

// add puts a new item in the backlog and the ready queue.
func (q *queue) add(it *item) {
	q.mu.Lock()
	defer q.mu.Unlock()
	heap.Push(&q.ages, it)
	q.nbytes += it.size()
	k := it.key()
	q.byKey[k] = append(q.byKey[k], it)
	if len(q.byKey[k]) == 1 {
		q.ready = append(q.ready, it)
		q.signal()
	}
}

// retry puts a failed item back in the ready queue.
func (q *queue) retry(it *item) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.ready = append(q.ready, it)
	q.signal()
}

func (q *queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take waits for the next ready item; false once the queue is closed.
func (q *queue) take() (*item, bool) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, false
		}
		if len(q.ready) > 0 {
			it := q.ready[0]
			q.ready[0] = nil
			q.ready = q.ready[1:]
			q.inflight++
			more := len(q.ready) > 0
			q.mu.Unlock()
			if more {
				q.signal() // another uploader may take the next
			}
			return it, true
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-q.done:
		}
	}
}

// finish takes an uploaded item out of the backlog.
func (q *queue) finish(it *item) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inflight--
	if it.parked {
		q.parked--
	}
	heap.Remove(&q.ages, it.idx)
	q.nbytes -= it.size()
	k := it.key()
	if chain := q.byKey[k][1:]; len(chain) > 0 {
		q.byKey[k] = chain
		q.ready = append(q.ready, chain[0])
		q.signal()
	} else {
		delete(q.byKey, k)
	}
}

// failed ends an attempt that failed; park reports the item was parked by
// it.
func (q *queue) failed(it *item, permanent bool) (park bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inflight--
	it.failures++
	if permanent && !it.parked {
		it.parked = true
		q.parked++
		return true
	}
	return false
}

func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.done)
	}
}

func (q *queue) bytes() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.nbytes
}

func (q *queue) objects() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ages)
}

func (q *queue) parkedCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.parked
}

// pending counts the items not uploaded and not parked.
func (q *queue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ages) - q.parked
}

// oldestAge is how long the oldest item has waited (0 when none).
func (q *queue) oldestAge(now time.Time) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.ages) == 0 {
		return 0
	}
	return max(0, now.Sub(q.ages[0].md.StagedAt))
}

// ageHeap orders items by staging time.
type ageHeap []*item

func (h ageHeap) Len() int           { return len(h) }
func (h ageHeap) Less(i, j int) bool { return h[i].md.StagedAt.Before(h[j].md.StagedAt) }
func (h ageHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *ageHeap) Push(x any)        { it := x.(*item); it.idx = len(*h); *h = append(*h, it) }
func (h *ageHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}

func (s *Store) enqueue(it *item) { s.q.add(it) }

// recordItems turns records found in a journal at start-up or taken over
// into items. A journal taken over with a record it cannot read is kept
// when the rest is uploaded.
func (s *Store) recordItems(j *journal.Journal, ad *adoption, recs []journal.Record) []*item {
	dir := s.ownDir
	if ad != nil {
		dir = ad.dir
	}
	var items []*item
	for _, r := range recs {
		var md meta
		if err := json.Unmarshal(r.Meta, &md); err != nil || (md.Kind == kindObject || md.Kind == kindLarge) && md.Object == nil {
			// The record's checksum held, so this cannot be a torn
			// write: a journal written by something else. Leave it.
			s.log.Error("staged record not understood; it stays in the staging directory", "journal", filepath.Base(dir), "err", err)
			s.m.uploads.WithLabelValues("unreadable").Inc()
			if ad != nil {
				ad.keep = true
			}
			continue
		}
		items = append(items, &item{j: j, rec: r, md: md, dir: dir, ad: ad})
	}
	return items
}

// uploader uploads items until the queue is closed.
func (s *Store) uploader() {
	for {
		it, ok := s.q.take()
		if !ok {
			return
		}
		st, outcome, err := s.upload(it)
		if err == nil {
			s.done(it, outcome, st)
			continue
		}
		s.m.uploads.WithLabelValues("error").Inc()
		transient := errors.Is(err, objectstore.ErrUnavailable) || s.ctx.Err() != nil
		park := s.q.failed(it, !transient)
		switch {
		case s.ctx.Err() != nil:
			// Closing: it stays staged for whoever takes the journal.
		case park:
			s.log.Error("staged object cannot be uploaded; parked, retried every minute", "association", association(it), "object", s.name(it), "kind", it.md.Kind, "err", s.o.Names.Redact(err, s.o.NamePrefix+it.key(), it.key()))
		case it.failures == 1:
			s.log.Warn("upload failed; retrying", "association", association(it), "object", s.name(it), "kind", it.md.Kind, "err", s.o.Names.Redact(err, s.o.NamePrefix+it.key(), it.key()))
		}
		pause := parkedRetry
		if !it.parked {
			pause = min(maxRetry, firstRetry<<min(it.failures-1, 5))
		}
		time.AfterFunc(pause, func() { s.q.retry(it) })
	}
}

// name is how logs name an item: by the log-name digest of its S3 key, as
// the S3 store and the functions name it.
func (s *Store) name(it *item) logname.Key { return s.o.Names.Key(s.o.NamePrefix + it.key()) }

func association(it *item) string {
	if it.md.Object != nil {
		return it.md.Object.AssociationID
	}
	return ""
}

// upload hands one item to the uploader; outcome names what S3 did, and
// st is what the S3 store answered of an object.
func (s *Store) upload(it *item) (st objectstore.Stored, outcome string, err error) {
	ctx := s.ctx
	switch it.md.Kind {
	case kindObject:
		r, err := it.j.Payload(it.rec)
		if err != nil {
			return st, "", err
		}
		st, err = s.o.Uploader.Put(ctx, *it.md.Object, r)
		if err == nil {
			err = s.recordResend(it, st)
		}
		return st, st.Outcome(), err
	case kindLarge:
		f, err := s.fs.OpenFile(filepath.Join(it.dir, largeDir, it.md.Large), os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			// Removed only once uploaded: a task stopped between the
			// removal and the journal's release.
			return st, "gone", nil
		}
		if err != nil {
			return st, "", fmt.Errorf("stagedstore: upload: %w: %w", objectstore.ErrUnavailable, err)
		}
		r := journal.Verify(io.NewSectionReader(f, 0, it.md.Size), it.md.CRC, "staged large object")
		st, err = s.o.Uploader.Put(ctx, *it.md.Object, r)
		if cerr := f.Close(); err == nil && cerr != nil {
			s.log.Warn("close a staged large object", "err", cerr)
		}
		if err == nil {
			err = s.recordResend(it, st)
		}
		return st, st.Outcome(), err
	case kindRecord:
		r, err := it.j.Payload(it.rec)
		if err != nil {
			return st, "", err
		}
		body, err := io.ReadAll(r)
		if err != nil {
			return st, "", err
		}
		return st, "stored", s.o.Uploader.PutRecord(ctx, it.md.Key, body)
	}
	return st, "", fmt.Errorf("stagedstore: upload: unknown kind %q", it.md.Kind)
}

// recordResend writes the duplicate association record of an object S3
// already held, the same bytes under its key, from another C-STORE (an
// identical resend the same day): with a direct store the audit writer
// writes it as the C-STORE is answered (ingest.AlreadyHeld); staged, the
// resend is known only now. It is written to S3 before the object is
// released, and everything in it comes from the staged object (its time
// is the C-STORE's receive time, its number StagedSeq; over TLS it names
// the client certificate the audit writer's records of the association
// name, none when an earlier version staged the object), so an upload
// tried again after a crash writes the same record under the same key,
// which S3 takes as the no-op it is: one record per resend. An upload of
// this very C-STORE found held (st.SameTransfer: it was uploaded before
// its task died) is no resend and gets none.
func (s *Store) recordResend(it *item, st objectstore.Stored) error {
	if !st.Duplicate || st.SameTransfer {
		return nil
	}
	o := it.md.Object
	r := associationaudit.Duplicate(associationaudit.Record{
		Time: o.ReceivedAt.UTC(), AssociationID: o.AssociationID, CallingAE: o.CallingAE, CalledAE: o.CalledAE, PeerAddr: o.PeerAddr,
		TLS: o.TLS, Implementation: it.md.Impl, Seq: associationaudit.StagedSeq(o.ReceivedAt),
	}, o.SOPClassUID, o.SOPInstanceUID, o.StudyInstanceUID, o.SeriesInstanceUID, st.Key)
	key, err := associationaudit.Key(r)
	var body []byte
	if err == nil {
		body, err = associationaudit.Marshal(r)
	}
	if err != nil {
		// It will not encode on a retry either: the object is uploaded,
		// and the record's loss is said as the audit writer says its own.
		s.log.Error(associationaudit.LostLog, "why", "not encodable", "event", r.Event, "association", r.AssociationID, "seq", r.Seq, "time", r.Time, "err", err)
		return nil
	}
	err = s.o.Uploader.PutRecord(s.ctx, key, body)
	if errors.Is(err, objectstore.ErrRecordHeld) {
		// The key names the association, the C-STORE's receive time and
		// the event: what holds it is this transfer's record, as another
		// version wrote it (an upload tried again by a newer task after a
		// crash, during a rolling deploy). Parking the object over it would
		// hold it for ever.
		s.log.Warn("duplicate record of an identical resend already written, by another version", "association", r.AssociationID, "object", s.name(it))
		return nil
	}
	if err != nil {
		return fmt.Errorf("stagedstore: upload: the duplicate record of an identical resend: %w", err)
	}
	s.log.Info("identical object already held: duplicate record written", "association", r.AssociationID, "object", s.name(it))
	return nil
}

// done ends an item's staging: S3 holds it, as st says of an object.
func (s *Store) done(it *item, outcome string, st objectstore.Stored) {
	if it.md.Kind == kindLarge {
		s.removeLarge(it.dir, it.md.Large)
	}
	it.j.Release(it.rec)
	s.m.uploads.WithLabelValues(outcome).Inc()
	s.m.latency.Observe(time.Since(it.md.StagedAt).Seconds())
	s.q.finish(it)
	if st.KeptBeside() {
		// With Duplicate the copy beside was there already: an upload
		// again by its own C-STORE (its task died before the release,
		// SameTransfer) found the copy it made, and the first upload
		// warned; another C-STORE of the same bytes is an identical
		// resend, with its duplicate record.
		s.log.Warn("other bytes sent for an already stored instance: kept beside it (another data set, or the same one from another AE or release of ours: the pipeline tells which)", "association", association(it), "object", s.name(it))
	}
	if it.ad != nil {
		s.q.mu.Lock()
		it.ad.left--
		last := it.ad.left == 0
		if last {
			delete(s.q.adopted, it.ad.name)
		}
		s.q.mu.Unlock()
		if last {
			s.finishAdoption(it.ad)
		}
	}
}

// adopter looks for the journals of dead tasks now and every AdoptEvery.
func (s *Store) adopter() {
	t := time.NewTicker(s.o.AdoptEvery)
	defer t.Stop()
	for {
		s.adopt()
		select {
		case <-s.q.done:
			return
		case <-t.C:
		}
	}
}

// adopt takes over every journal in the staging directory whose lock is
// free.
func (s *Store) adopt() {
	root := filepath.Join(s.o.Dir, journalsDir)
	entries, err := s.fs.ReadDir(root)
	if err != nil {
		s.log.Error("list the staging directory", "err", err)
		return
	}
	for _, e := range entries {
		name := e.Name()
		s.q.mu.Lock()
		_, mine := s.q.adopted[name]
		closed := s.q.closed
		s.q.mu.Unlock()
		if e.IsDir() && strings.HasPrefix(name, startingPrefix) && name != startingPrefix+s.o.TaskID && !closed {
			s.removeAbandonedStart(filepath.Join(root, name))
			continue
		}
		if !e.IsDir() || name == s.o.TaskID || strings.HasPrefix(name, startingPrefix) || mine || closed {
			continue
		}
		dir := filepath.Join(root, name)
		lock, err := s.fs.Lock(filepath.Join(dir, lockName))
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) && !isLocked(err) {
				s.log.Warn("lock a staged journal", "journal", name, "err", err)
			}
			continue
		}
		j, recs, err := journal.Open(dir, journal.Options{ReadOnly: true, SegmentSize: s.o.SegmentSize, FS: s.fs, Logger: s.log})
		if err != nil {
			s.log.Error("open the journal of a stopped task", "journal", name, "err", err)
			if cerr := lock.Close(); cerr != nil {
				s.log.Warn("unlock a staged journal", "journal", name, "err", cerr)
			}
			continue
		}
		ad := &adoption{name: name, dir: dir, lock: lock, j: j}
		items := s.recordItems(j, ad, recs)
		s.m.adopted.Add(float64(len(items)))
		s.log.Info("took over the staged objects of a stopped task", "journal", name, "objects", len(items))
		if len(items) == 0 {
			s.finishAdoption(ad)
			continue
		}
		// Counted before any is queued: the first may be uploaded
		// before the last is queued.
		s.q.mu.Lock()
		ad.left = len(items)
		s.q.adopted[name] = ad
		s.q.mu.Unlock()
		for _, it := range items {
			s.enqueue(it)
		}
	}
}

// abandonedStartAge is how long a ".starting-" journal directory must have
// been left, its lock free, before another task removes it: its task
// stopped between making it and placing it under its own name
// (lockOwnDir), so it holds nothing staged. The age keeps a task that has
// made its directory but not locked it yet from losing it.
const abandonedStartAge = 10 * time.Minute

// removeAbandonedStart removes the ".starting-" journal directory dir if
// it was abandoned (abandonedStartAge). It holds only its lock file and an
// empty directory for large objects; anything more is left where it is.
func (s *Store) removeAbandonedStart(dir string) {
	info, err := s.fs.Stat(dir)
	if err != nil || time.Since(info.ModTime()) < abandonedStartAge {
		return
	}
	lock, err := s.fs.Lock(filepath.Join(dir, lockName))
	if err != nil {
		return // its task holds it, or it is gone
	}
	err = s.fs.Remove(filepath.Join(dir, largeDir))
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		err = s.fs.Remove(filepath.Join(dir, lockName))
	}
	err = errors.Join(err, lock.Close())
	if err == nil {
		err = s.fs.Remove(dir)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("remove the journal directory of a task that stopped while starting", "journal", filepath.Base(dir), "err", err)
		return
	}
	s.log.Info("removed the journal directory of a task that stopped while starting", "journal", filepath.Base(dir))
}

// finishAdoption removes a journal taken over once all it held is
// uploaded: its segments and large objects, then its lock and directory.
func (s *Store) finishAdoption(ad *adoption) {
	if ad.keep {
		if err := errors.Join(ad.j.Close(), ad.lock.Close()); err != nil {
			s.log.Warn("let go of a staged journal", "journal", ad.name, "err", err)
		}
		return
	}
	err := ad.j.Close()
	entries, rerr := s.fs.ReadDir(ad.dir)
	err = errors.Join(err, rerr)
	for _, e := range entries {
		p := filepath.Join(ad.dir, e.Name())
		switch {
		case e.Name() == lockName:
		case e.IsDir() && e.Name() == largeDir:
			files, lerr := s.fs.ReadDir(p)
			err = errors.Join(err, lerr)
			for _, f := range files {
				err = errors.Join(err, s.fs.Remove(filepath.Join(p, f.Name())))
			}
			err = errors.Join(err, s.fs.Remove(p))
		default:
			err = errors.Join(err, s.fs.Remove(p))
		}
	}
	if err == nil {
		err = s.fs.Remove(filepath.Join(ad.dir, lockName))
		if err == nil {
			// Another task may have locked a new lock file in it
			// meanwhile; it finds nothing and removes the directory.
			if derr := s.fs.Remove(ad.dir); derr != nil && !errors.Is(derr, fs.ErrNotExist) {
				s.log.Debug("remove a staged journal's directory", "journal", ad.name, "err", derr)
			}
		}
	}
	if err != nil {
		s.log.Warn("remove a staged journal taken over; the next task to take it finds it empty", "journal", ad.name, "err", err)
	}
	if cerr := ad.lock.Close(); cerr != nil {
		s.log.Warn("unlock a staged journal", "journal", ad.name, "err", cerr)
	}
}

// closeAdopted lets go of the journals taken over and not finished: each
// one's lock is kept, for the process's exit to let go, while it may still
// be in use (uploadsCut: uploads still going; its close cut short).
func (q *queue) closeAdopted(ctx context.Context, uploadsCut bool) []error {
	q.mu.Lock()
	ads := make([]*adoption, 0, len(q.adopted))
	for _, ad := range q.adopted {
		ads = append(ads, ad)
	}
	clear(q.adopted)
	q.mu.Unlock()
	var errs []error
	for _, ad := range ads {
		err := ad.j.Shutdown(ctx)
		errs = append(errs, err)
		if !uploadsCut && !errors.Is(err, journal.ErrCloseCutShort) {
			errs = append(errs, ad.lock.Close())
		}
	}
	return errs
}

func isLocked(err error) bool { return errors.Is(err, vfs.ErrLocked) }
