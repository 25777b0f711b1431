// Package stagedstore is the objectstore.Store that answers C-STORE once
// an object is durable on storage every task mounts and that outlives a
// task, its host and an Availability Zone (Amazon EFS; a directory locally
// and in tests), and uploads it to S3 afterwards: the acknowledgement stops
// waiting on S3's latency, not on durability.
//
// Each task appends what it receives to a journal of its own in the
// staging directory (package journal: one direct write per object and one
// fdatasync per group of objects, which on NFS has nothing to commit after
// a write that fits in one WRITE, where creating, renaming and removing a
// file per object would cost an EFS round trip each); objects too large
// for a record (1 MiB) are written to a file of their own next to it,
// fsynced, then recorded. A pool of uploaders hands every staged object
// to the S3 store (s3store: conditional writes, CRC64NVME verified by S3,
// the same keys and metadata as a direct upload), each read back with its
// staging checksum verified, and releases it only once S3 holds it.
//
// Layout under the staging directory:
//
//	journals/<task>/lock        held (flock) by the task for as long as it lives
//	journals/<task>/seg-NNNN    the task's journal segments
//	journals/<task>/large/<id>  objects of 1 MiB and more
//
// A task that dies leaves its journal behind, and its lock with it (on
// NFS when its lease runs out). Every task looks for such journals, takes
// the lock of one it finds free, uploads what it holds and removes it:
// the lock keeps two tasks from working on one journal, and S3's
// conditional writes make an object uploaded twice (a task cut off from
// EFS past its lease while still uploading) a harmless duplicate.
//
// Duplicates and conflicts are decided at upload, not when the object is
// acknowledged: Put reports neither. An identical resend (S3 already held
// the same bytes under its key, from another C-STORE) gets its duplicate
// association record from the uploader, which writes it to S3 before the
// object is released, under a key and with bytes the staged object alone
// decides (associationaudit.Duplicate, StagedSeq), so that an upload tried
// again after a crash writes the same record, not a second one.
package stagedstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/journal"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
)

// Uploader is where staged objects go: *s3store.Store.
type Uploader interface {
	Put(ctx context.Context, obj objectstore.Object, part10 io.Reader) (objectstore.Stored, error)
	PutRecord(ctx context.Context, key string, body []byte) error
}

// Defaults of Options.
const (
	DefaultSegmentSize     = 16 << 20
	DefaultMaxBacklogBytes = 8 << 30
	DefaultMaxBacklogAge   = 15 * time.Minute
	DefaultUploaders       = 16
	DefaultAdoptEvery      = 30 * time.Second
)

// recordBytes is the largest object kept in a journal record; larger ones
// get a file of their own. A record's payload is written in one request.
const recordBytes = 1 << 20

// Options configures a Store. Dir and Uploader are required.
type Options struct {
	// Dir is the staging directory, the same in every task.
	Dir string
	// Uploader receives every staged object and record.
	Uploader Uploader
	// TaskID names this task's journal (default: random). It must be
	// unique among the tasks alive.
	TaskID string
	// SegmentSize is the journal's segment size (default 16 MiB).
	SegmentSize int64
	// MaxBacklogBytes bounds the bytes staged and not yet uploaded (this
	// task's and the journals it took over): past it Put fails with
	// objectstore.ErrUnavailable (C-STORE A700) and Ready too (new
	// associations refused, 02 03 01). Default 8 GiB.
	MaxBacklogBytes int64
	// MinFreeBytes is free space kept in reserve on the staging file
	// system (the file store's rule, vfs.Reserve): below it Ready fails
	// (new associations refused, 02 03 01), checked at most once a
	// second with Ready's look at the staging directory. 0 keeps none.
	// Put does not check it (a statfs is a round trip on EFS) but
	// during a shortage: a write that finds no space fails (C-STORE
	// A700) and turns Ready off until the reserve and what that write
	// needed are free (see Ready); meanwhile Put checks, and refuses
	// objects before writing a byte (A700 too).
	MinFreeBytes int64
	// MaxBacklogAge turns Ready off while the oldest object not yet
	// uploaded is older (S3 unreachable for that long): default 15 min.
	MaxBacklogAge time.Duration
	// Uploaders is how many uploads run at once (default 16).
	Uploaders int
	// AdoptEvery is how often the staging directory is searched for the
	// journals of tasks that died (default 30 s).
	AdoptEvery time.Duration
	// Latencies holds every staging file-system operation for the given
	// time (benchmarks stand a local directory in for EFS with
	// vfs.EFS). Operations are counted either way.
	Latencies vfs.Latencies
	// FS is the file system under the counting (default the operating
	// system's; tests inject an in-memory one).
	FS vfs.FS
	// Names names objects in logs by a keyed digest of their key (logs
	// carry no DICOM UIDs); nil names them with a key that holds until the
	// process exits.
	Names *logname.Namer
	// NamePrefix is the uploader's key prefix (the S3 store's Prefix), so
	// that logs name an object by its S3 key's digest, as the S3 store
	// and the functions do.
	NamePrefix string
	// Implementation is our implementation version, staged with each
	// object and stamped on the duplicate record its upload may write,
	// as the audit writer stamps its records.
	Implementation string
	Logger         *slog.Logger
	Metrics        prometheus.Registerer
}

// Store is a staged objectstore.Store. It is safe for concurrent use.
type Store struct {
	o      Options
	fs     *vfs.Instrumented
	log    *slog.Logger
	m      *metrics
	ownDir string
	lock   io.Closer
	own    *journal.Journal
	bufs   sync.Pool // journal.BlockSize + recordBytes, aligned

	q *queue

	readyMu  sync.Mutex
	readyAt  time.Time
	readyErr error
	// noSpace is on after a staging write failed for lack of space, until
	// the space it needed is free again (or, where the free space is not
	// measured, a write succeeds).
	noSpace vfs.Shortage
	// noSpaceRecords are the records (by key) a staging write failed for
	// lack of space and that are not staged yet, so that one the audit
	// writer retries counts once in _no_space_total, not at every retry
	// (369 for 16 failed C-STOREs in the operator drill).
	recordsMu      sync.Mutex
	noSpaceRecords map[string]struct{}

	stop   context.CancelFunc
	ctx    context.Context
	wg     sync.WaitGroup
	closed sync.Once
}

var _ objectstore.Store = (*Store)(nil)

// item kinds in a record's meta.
const (
	kindObject = "object" // payload: the Part 10 file
	kindLarge  = "large"  // payload: none; the file under large/
	kindRecord = "record" // payload: a PutRecord body
)

// meta is what a journal record says about what it holds.
type meta struct {
	Kind     string              `json:"k"`
	Object   *objectstore.Object `json:"o,omitempty"`
	Key      string              `json:"key,omitempty"`   // records
	Large    string              `json:"large,omitempty"` // file name under large/
	Size     int64               `json:"size,omitempty"`  // large
	CRC      uint64              `json:"crc,omitempty"`   // large: CRC-64/NVME
	Impl     string              `json:"impl,omitempty"`  // objects: the version that received it, for its duplicate record
	StagedAt time.Time           `json:"t"`
}

const (
	journalsDir = "journals"
	largeDir    = "large"
	lockName    = "lock"
)

// New opens this task's journal in the staging directory, starts the
// uploaders, and starts looking for journals left by tasks that died.
func New(o Options) (*Store, error) {
	if o.Dir == "" || o.Uploader == nil {
		return nil, errors.New("stagedstore: new: a staging directory and an uploader are required")
	}
	if o.TaskID == "" {
		var b [8]byte
		rand.Read(b[:]) // never fails: crypto/rand crashes the program instead
		o.TaskID = hex.EncodeToString(b[:])
	}
	if strings.ContainsAny(o.TaskID, `/\`) || strings.HasPrefix(o.TaskID, ".") {
		return nil, fmt.Errorf("stagedstore: new: task id %q is not a plain name", o.TaskID)
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.MaxBacklogBytes <= 0 {
		o.MaxBacklogBytes = DefaultMaxBacklogBytes
	}
	if o.MaxBacklogAge <= 0 {
		o.MaxBacklogAge = DefaultMaxBacklogAge
	}
	if o.Uploaders <= 0 {
		o.Uploaders = DefaultUploaders
	}
	if o.AdoptEvery <= 0 {
		o.AdoptEvery = DefaultAdoptEvery
	}
	if o.FS == nil {
		o.FS = vfs.OS()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{o: o, fs: vfs.Instrument(o.FS, o.Latencies), log: o.Logger.With("component", "staging")}
	s.bufs.New = func() any { b := journal.NewBuffer(recordBytes); return &b }
	s.ownDir = filepath.Join(o.Dir, journalsDir, o.TaskID)
	lock, err := s.lockOwnDir()
	if err != nil {
		return nil, fmt.Errorf("stagedstore: new: %w", err)
	}
	s.lock = lock
	// The journal grows while uploads lag, up to the backlog bound (and
	// a little more: the bound is checked before an append).
	// It shrinks back once uploads catch up (Shrink: segments are not
	// prefilled, so adding one again costs a create and a header).
	maxSegs := int(o.MaxBacklogBytes/o.SegmentSize) + 4
	own, recs, err := journal.Open(s.ownDir, journal.Options{
		SegmentSize: o.SegmentSize, Segments: 2, MaxSegments: maxSegs, FullWait: -1, Shrink: true,
		FS: s.fs, Logger: s.log,
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("stagedstore: new: %w", err), lock.Close())
	}
	s.own = own
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.q = newQueue()
	if s.m, err = newMetrics(o.Metrics, s); err != nil {
		return nil, errors.Join(fmt.Errorf("stagedstore: new: %w", err), own.Close(), lock.Close())
	}
	// A fresh task id has nothing to recover; a reused one (tests) may.
	for _, it := range s.recordItems(own, nil, recs) {
		s.enqueue(it)
	}
	for range o.Uploaders {
		s.wg.Go(s.uploader)
	}
	s.wg.Go(s.adopter)
	return s, nil
}

// startingPrefix marks a journal directory whose task has not locked it
// yet: other tasks never take such a directory over.
const startingPrefix = ".starting-"

// lockOwnDir creates this task's journal directory and returns the lock
// that keeps other tasks from taking it over. Other tasks take over every
// journal directory whose lock is free, so a new one is made and locked
// under a name they skip, then renamed into place with its lock held (a
// lock follows the file, not its name); otherwise a task scanning between
// the directory's creation and its locking would take it over and remove
// it from under its owner. A task that stops before the rename leaves an
// empty ".starting-" directory and nothing staged, which another task
// removes once it has been left long enough (removeAbandonedStart). A task id already
// there (a task restarted under its id) is locked where it is.
func (s *Store) lockOwnDir() (io.Closer, error) {
	root := filepath.Dir(s.ownDir)
	syncParent := func(dir string) error { return s.fs.SyncDir(filepath.Dir(dir)) }
	_, err := s.fs.Stat(s.ownDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err == nil {
		if err := vfs.MkdirAll(s.fs, filepath.Join(s.ownDir, largeDir), 0o750, syncParent); err != nil {
			return nil, err
		}
		lock, err := s.fs.Lock(filepath.Join(s.ownDir, lockName))
		if err != nil {
			return nil, fmt.Errorf("lock this task's journal: %w", err)
		}
		return lock, nil
	}
	starting := filepath.Join(root, startingPrefix+s.o.TaskID)
	if err := vfs.MkdirAll(s.fs, filepath.Join(starting, largeDir), 0o750, syncParent); err != nil {
		return nil, err
	}
	lock, err := s.fs.Lock(filepath.Join(starting, lockName))
	if err != nil {
		return nil, fmt.Errorf("lock this task's journal: %w", err)
	}
	if err := s.fs.Rename(starting, s.ownDir); err != nil {
		return nil, errors.Join(fmt.Errorf("place this task's journal: %w", err), lock.Close())
	}
	if err := s.fs.SyncDir(root); err != nil {
		return nil, errors.Join(fmt.Errorf("place this task's journal: %w", err), lock.Close())
	}
	return lock, nil
}

// TaskID returns the name of this task's journal.
func (s *Store) TaskID() string { return s.o.TaskID }

// Operations returns how many staging file-system operations of kind op
// were done (the per-object counts in benchmarks).
func (s *Store) Operations(op vfs.Op) int64 { return s.fs.Count(op) }

// Put stages part10 under objectstore.Key(obj) and returns once it is
// durable in the staging directory; the upload follows. It fails with
// objectstore.ErrUnavailable while the backlog is over its bound or the
// staging directory fails (out of space included), and, after a write
// found no space, before writing a byte, until the reserve and what that
// write needed are free (vfs.ErrReserve; see Ready).
func (s *Store) Put(ctx context.Context, obj objectstore.Object, part10 io.Reader) (_ objectstore.Stored, err error) {
	need := int64(recordSpace) // and a large object's size
	defer func() { s.noteSpace(err, need) }()
	key, err := objectstore.Key(obj)
	if err != nil {
		return objectstore.Stored{}, fmt.Errorf("stagedstore: put: %w", err)
	}
	if err := s.admit(); err != nil {
		return objectstore.Stored{}, err
	}
	// Only during a shortage, as the statfs is an EFS round trip: an
	// object written anyway failed only once it had filled the file
	// system.
	if s.noSpace.On() {
		if err := s.noSpace.Admit(s.reserve(), s.log, spaceLog); err != nil {
			return objectstore.Stored{}, fmt.Errorf("stagedstore: put: %w: %w", objectstore.ErrUnavailable, err)
		}
	}
	bufp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bufp)
	buf := *bufp
	ring := buf[journal.BlockSize:]
	n, err := journal.Fill(ctx, part10, ring)
	if err != nil {
		return objectstore.Stored{}, fmt.Errorf("stagedstore: put: %w", err)
	}
	md := meta{Kind: kindObject, Object: &obj, Impl: s.o.Implementation, StagedAt: time.Now().UTC()}
	var large string
	if n == len(ring) {
		// Maybe more: a file of its own.
		md.Kind = kindLarge
		large, md.Size, md.CRC, err = s.writeLarge(ctx, ring, part10)
		need += md.Size
		if err != nil {
			return objectstore.Stored{}, err
		}
		md.Large, n = large, 0
	}
	rec, err := s.append(ctx, md, buf, n)
	if err != nil {
		if large != "" {
			s.removeLarge(s.ownDir, large)
		}
		return objectstore.Stored{}, err
	}
	s.m.staged.Inc()
	s.enqueue(&item{j: s.own, rec: rec, md: md, dir: s.ownDir})
	return objectstore.Stored{Key: key, Size: max(int64(n), md.Size)}, nil
}

// admit refuses new work while the backlog is over its bound.
func (s *Store) admit() error {
	if b := s.q.bytes(); b >= s.o.MaxBacklogBytes {
		s.m.refused.Inc()
		return fmt.Errorf("stagedstore: %w: %d bytes wait for upload, at most %d", objectstore.ErrUnavailable, b, s.o.MaxBacklogBytes)
	}
	return nil
}

// append journals md and the n payload bytes at buf[journal.BlockSize:].
// md fits the record's header (journal.MaxMeta) whatever the C-STORE: its
// object's fields are bounded, the TLS peer's by
// associationaudit.CertificatePeer (TestMetaFitsTheRecord).
func (s *Store) append(ctx context.Context, md meta, buf []byte, n int) (journal.Record, error) {
	b, err := json.Marshal(md)
	if err != nil {
		return journal.Record{}, fmt.Errorf("stagedstore: put: %w", err)
	}
	rec, err := s.own.Append(ctx, b, buf, n)
	if err != nil {
		if ctx.Err() != nil {
			return journal.Record{}, fmt.Errorf("stagedstore: put: %w", ctx.Err())
		}
		return journal.Record{}, fmt.Errorf("stagedstore: put: %w: %w", objectstore.ErrUnavailable, err)
	}
	return rec, nil
}

// writeLarge writes an object that did not fit a record (ring full, the
// rest in r) to a new file under large/, durable with its name; it
// returns the name, size and CRC-64/NVME. On error nothing is left, and
// size is how far the write got (what it needed at least).
func (s *Store) writeLarge(ctx context.Context, ring []byte, r io.Reader) (name string, size int64, crc uint64, err error) {
	var id [12]byte
	rand.Read(id[:]) // never fails: crypto/rand crashes the program instead
	name = hex.EncodeToString(id[:])
	path := filepath.Join(s.ownDir, largeDir, name)
	f, err := s.fs.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", 0, 0, fmt.Errorf("stagedstore: put: %w: %w", objectstore.ErrUnavailable, err)
	}
	defer func() {
		if f != nil {
			err = errors.Join(err, f.Close())
		}
		if err != nil {
			// Not name: the error returns have set it to "", and the
			// partial file stayed, its space lost to the staging file
			// system until another task took the journal over.
			s.removeLarge(s.ownDir, filepath.Base(path))
		}
	}()
	chunk := ring
	for {
		if _, werr := f.WriteAt(chunk, size); werr != nil {
			return "", size + int64(len(chunk)), 0, fmt.Errorf("stagedstore: put: %w: %w", objectstore.ErrUnavailable, werr)
		}
		crc = crcnvme.Update(crc, chunk)
		size += int64(len(chunk))
		n, rerr := journal.Fill(ctx, r, ring)
		if rerr != nil {
			return "", 0, 0, fmt.Errorf("stagedstore: put: %w", rerr)
		}
		if n == 0 {
			break
		}
		chunk = ring[:n]
	}
	if err := f.Sync(); err != nil {
		return "", size, 0, fmt.Errorf("stagedstore: put: %w: %w", objectstore.ErrUnavailable, err)
	}
	err = f.Close()
	f = nil
	if err == nil {
		// The record that follows is the commit point; the file's name
		// must be durable before it (NFS commits names as it answers,
		// a local file system on fsync).
		err = s.fs.SyncDir(filepath.Join(s.ownDir, largeDir))
	}
	if err != nil {
		return "", size, 0, fmt.Errorf("stagedstore: put: %w: %w", objectstore.ErrUnavailable, err)
	}
	return name, size, crc, nil
}

func (s *Store) removeLarge(dir, name string) {
	if err := s.fs.Remove(filepath.Join(dir, largeDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Error("remove a staged large object", "err", err)
	}
}

// PutRecord stages a small document (an association audit record) under
// key, which must start with objectstore.AuditPrefix. A record is never
// replaced: a different record already under key in S3 is reported by
// the upload (it stays staged, see Parked), not here.
func (s *Store) PutRecord(ctx context.Context, key string, body []byte) (err error) {
	defer func() {
		if s.recordCounted(key, err) {
			s.noteSpace(err, recordSpace)
			return
		}
		// A retry of a record already counted: the shortage follows it,
		// the counter does not.
		s.followSpace(err, recordSpace)
	}()
	if !objectstore.IsRecordKey(key) || strings.Contains(key, "..") {
		return fmt.Errorf("stagedstore: put record: key %q not under %s", key, strings.Join(objectstore.RecordPrefixes, " or "))
	}
	if len(body) > recordBytes-1 {
		return fmt.Errorf("stagedstore: put record %s: %d bytes, at most %d", key, len(body), recordBytes-1)
	}
	if err := s.admit(); err != nil {
		return err
	}
	bufp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bufp)
	buf := *bufp
	copy(buf[journal.BlockSize:], body)
	md := meta{Kind: kindRecord, Key: key, StagedAt: time.Now().UTC()}
	rec, err := s.append(ctx, md, buf, len(body))
	if err != nil {
		return err
	}
	s.enqueue(&item{j: s.own, rec: rec, md: md, dir: s.ownDir})
	return nil
}

// readyTTL is how long a Ready answer is reused: the SCP asks on every
// association request, and a look at the staging directory costs an EFS
// round trip.
const readyTTL = time.Second

// Ready fails (objectstore.ErrUnavailable) while the backlog is over its
// bound in bytes or age, the staging directory cannot be reached, or Put
// would refuse an object for lack of space (vfs.Shortage.Ready, Put's
// rule): while the file system has less free space than MinFreeBytes
// (vfs.ErrReserve), or after a staging write failed for lack of space
// (ENOSPC, EDQUOT) until the reserve and what that write needed (a
// record, and a large object's bytes written when it failed) are free
// again (where the free space is not measured, until a later write
// succeeds).
func (s *Store) Ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stagedstore: ready: %w", err)
	}
	if err := s.admit(); err != nil {
		return err
	}
	if age := s.q.oldestAge(time.Now()); age > s.o.MaxBacklogAge {
		return fmt.Errorf("stagedstore: ready: %w: the oldest staged object waits for upload since %s", objectstore.ErrUnavailable, age.Round(time.Second))
	}
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if now := time.Now(); now.Sub(s.readyAt) >= readyTTL || now.Before(s.readyAt) {
		s.readyErr, s.readyAt = nil, now
		if _, err := s.fs.Stat(s.ownDir); err != nil {
			s.readyErr = fmt.Errorf("stagedstore: ready: %w: %w", objectstore.ErrUnavailable, err)
		} else if err := s.noSpace.Ready(s.reserve(), s.log, spaceLog); err != nil {
			s.readyErr = fmt.Errorf("stagedstore: ready: %w: %w", objectstore.ErrUnavailable, err)
		}
	}
	return s.readyErr
}

// recordSpace is what one more journal record may take: its header block
// and the largest payload.
const recordSpace = journal.BlockSize + recordBytes

// reserve is the staging file system's reserve (MinFreeBytes): the file
// store's rule, vfs.Reserve.
func (s *Store) reserve() vfs.Reserve {
	return vfs.Reserve{Bytes: uint64(max(s.o.MinFreeBytes, 0)), Free: func() (uint64, error) { return s.fs.FreeBytes(s.ownDir) }}
}

// noteSpace follows what a Put or PutRecord that needed need bytes did to
// the staging file system: a failure for lack of space turns readiness
// off (new associations are refused while the task cannot stage), and a
// success after one may turn it back on (vfs.Shortage.Wrote).
func (s *Store) noteSpace(err error, need int64) {
	if s.followSpace(err, need).NoSpace {
		s.m.noSpace.Inc()
	}
}

// followSpace is noteSpace but for the counter.
func (s *Store) followSpace(err error, need int64) vfs.Turn {
	turn := s.noSpace.Note(s.reserve(), err, uint64(need))
	if turn.Stale() {
		s.readyMu.Lock()
		s.readyAt = time.Time{} // look again at the next Ready
		s.readyMu.Unlock()
	}
	turn.Log(s.log, spaceLog, need)
	return turn
}

// maxNoSpaceRecords bounds the records remembered by recordCounted; past
// it a record's every failure counts. The audit writer retries at most
// its queue's 1,024.
const maxNoSpaceRecords = 4096

// recordCounted reports whether PutRecord's result err for the record
// under key is to be counted in _no_space_total: a failure for lack of
// space of a record not counted yet (remembered until it is staged), and
// anything else, which noteSpace does not count.
func (s *Store) recordCounted(key string, err error) bool {
	s.recordsMu.Lock()
	defer s.recordsMu.Unlock()
	if !vfs.NoSpace(err) {
		if err == nil {
			delete(s.noSpaceRecords, key)
		}
		return true
	}
	if _, counted := s.noSpaceRecords[key]; counted {
		return false
	}
	if len(s.noSpaceRecords) < maxNoSpaceRecords {
		if s.noSpaceRecords == nil {
			s.noSpaceRecords = map[string]struct{}{}
		}
		s.noSpaceRecords[key] = struct{}{}
	}
	return true
}

// spaceLog is what the store logs of the staging file system's shortage
// (vfs.Shortage).
var spaceLog = vfs.ShortageLog{
	OutOfSpace: "the staging file system is out of space: readiness off (associations refused) until space is back",
	SpaceBack:  "a staging write succeeded after the staging file system ran out of space: ready again",
	Checked:    "space is back on the staging file system: ready again",
}

// Drain waits until everything staged so far (parked records excepted) is
// uploaded, or ctx ends.
func (s *Store) Drain(ctx context.Context) error {
	for {
		if s.q.pending() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stagedstore: drain: %w: %d objects not uploaded", ctx.Err(), s.q.pending())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// closeGrace is how long Shutdown lets uploads in flight finish, at
// most.
const closeGrace = 5 * time.Second

// Close is Shutdown without a time limit but the uploads' closeGrace.
func (s *Store) Close() error { return s.Shutdown(context.Background()) }

// Shutdown stops the uploaders (giving the uploads in flight closeGrace,
// within ctx) and releases this task's journal and those it adopted:
// what they still hold is uploaded by whichever task takes them over,
// this one's successor included (objectstore.Shutdowner). When ctx ends
// first (the stop's time is up, a second signal), it returns at once,
// without an error, and says in a line how many objects it leaves staged:
// nothing acknowledged is lost, since each is in a synced journal, which
// the process's exit unlocks.
func (s *Store) Shutdown(ctx context.Context) error {
	var errs []error
	uploadsCut := false // uploads still going when ctx ended
	s.closed.Do(func() {
		s.q.close()
		done := make(chan struct{})
		go func() { s.wg.Wait(); close(done) }()
		grace, cancel := context.WithTimeout(ctx, closeGrace)
		select {
		case <-done:
		case <-grace.Done():
		}
		cancel()
		s.stop()
		select {
		case <-done:
		case <-ctx.Done():
			uploadsCut = true
		}
		errs = s.q.closeAdopted(ctx, uploadsCut)
		own := s.own.Shutdown(ctx)
		errs = append(errs, own)
		// A journal still in use (an upload going on, its close cut) is
		// let go by the process's exit: another task taking it over now
		// would work on it beside this one.
		if !uploadsCut && !errors.Is(own, journal.ErrCloseCutShort) {
			errs = append(errs, s.lock.Close())
		}
	})
	var cut []error
	errs = slices.DeleteFunc(errs, func(err error) bool {
		if errors.Is(err, journal.ErrCloseCutShort) {
			cut = append(cut, err)
			return true
		}
		return false
	})
	if uploadsCut || len(cut) > 0 {
		s.log.Warn(CloseCutShort, "not_uploaded", s.q.objects(), "err", errors.Join(append(cut, context.Cause(ctx))...))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stagedstore: close: %w", err)
	}
	return nil
}

// CloseCutShort is Shutdown's line when its time ran out first.
const CloseCutShort = "staged store's close cut short; nothing acknowledged is lost (each object is in a synced journal): the task that takes the journals over uploads what they hold"
