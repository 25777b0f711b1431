// Package filestore is the filesystem objectstore.Store: each object is a
// Part 10 file at <root>/<key>, durable and never half-visible before Put
// returns. It backs scp-task's local mode.
//
// Objects are received into a pooled 1 MiB ring. One that fits is made
// durable by a journal (journaled.go): one direct write and one fdatasync
// shared with every Put meanwhile, its file written and renamed into place
// unsynced and made durable at the journal's next checkpoint, replayed by
// New after a crash. A larger one takes the file recipe: written from the
// ring on a goroutine of its own while the rest arrives (write.go), with
// direct I/O where the filesystem takes it (Linux; see Store.DirectIO), to
// a temporary file that is fsynced, moved into place without ever
// replacing a file, and both directories fsynced.
//
// Layout: objects and records live under root by key; temporary files live
// in root/.tmp and are removed by New after a crash, the journal in
// root/.journal. A root belongs to one process at a time (another
// process's in-flight Put would fail or be replayed over). Object metadata
// beyond the Part 10 File Meta Information is not kept here: local mode
// records it next to the store.
package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/journal"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
)

// TempDir is the directory under root holding files being written: the
// store's own (ObjectTempPrefix, RecordTempPrefix) and local mode's copies
// and Storage Commitment results (local-*.tmp, scp-task's files.writeFile),
// all on the store's file system. New empties it at each start.
const TempDir = ".tmp"

// ObjectTempPrefix begins the name of an object's file in TempDir while
// a Put writes it; an audit record's (PutRecord) begins with
// RecordTempPrefix. A Put that fails removes its file before it returns;
// a record may be written at any time, in the background.
const (
	ObjectTempPrefix = "put-"
	RecordTempPrefix = "rec-"
)

// ErrInvalidKey is returned for a key that is not a clean relative path of
// visible components (no "..", no leading dot, no backslash).
var ErrInvalidKey = errors.New("filestore: invalid key")

// ErrReserve is returned (wrapped with objectstore.ErrUnavailable) by Put
// and Ready while the filesystem holds less free space than the store
// keeps in reserve (WithMinFreeBytes), and after a write found the disk
// full, until the reserve and what that write needed are free (see
// Ready). It is vfs.ErrReserve, which the staged store's errors wrap too.
var ErrReserve = vfs.ErrReserve

// ErrSyncFailed is returned (wrapped with objectstore.ErrUnavailable) by
// Ready once a checkpoint's syncfs failed: see Store.checkpoint. Only a
// restart, whose New replays the journal, clears it.
var ErrSyncFailed = errors.New("filestore: a sync failed; restart to replay the journal")

// Store is a filesystem object store. It is safe for concurrent use.
type Store struct {
	root    string
	tmp     string
	log     *slog.Logger
	names   *logname.Namer
	minFree uint64
	// freeBytes reports the free space of the filesystem holding a
	// directory (default: the file system's FreeBytes; tests replace it).
	freeBytes func(dir string) (uint64, error)
	// bufs holds a journal header block followed by a ring of ringSize,
	// aligned for direct I/O.
	bufs sync.Pool
	// direct is set when the filesystem takes direct I/O (probed by New).
	direct   bool
	buffered bool // WithBufferedWrites

	fs         vfs.FS                                        // the journaled path's file system
	osFS       bool                                          // fs is the operating system's
	noJournal  bool                                          // WithoutJournal
	replayHeld func(key string, note []byte, release func()) // WithReplayHeld
	jopts      journal.Options
	j          *journal.Journal // nil: every object takes the file recipe

	// claims holds the keys a Put is deciding or placing (see claim).
	claimsMu sync.Mutex
	claims   map[string]chan struct{}

	// making holds the directories a Put is creating, until their
	// parents' fsyncs are done (see mkdirAll).
	makingMu sync.Mutex
	making   map[string]*making

	// syncFailed is the checkpoint's first failure, final (checkpoint).
	syncMu     sync.Mutex
	syncFailed error

	readyMu  sync.Mutex
	readyAt  time.Time
	readyErr error
	// noSpace is on after a write failed for lack of space, until the
	// reserve and what that write needed are free again (or, where the
	// free space is not measured, a write succeeds).
	noSpace vfs.Shortage
}

// readyTTL is how long a Ready result is reused: the SCP asks on every
// association request, the probe writes a file.
const readyTTL = time.Second

var _ objectstore.Store = (*Store)(nil)

// Option configures a Store.
type Option func(*Store)

// WithLogger sets the logger (default: discard). Keys are never logged, as
// they carry study identifiers.
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) {
		if l != nil {
			s.log = l
		}
	}
}

// WithNames sets how errors name objects: their messages carry file paths,
// so keys, which Put, Open and Stat replace by the key's name (default: a
// key drawn for this process, see logname).
func WithNames(n *logname.Namer) Option { return func(s *Store) { s.names = n } }

// WithMinFreeBytes keeps n bytes of the filesystem (free for an
// unprivileged user) in reserve for what comes after an object is
// stored: records (PutRecord), and in local mode the pipeline's database
// and event log, which would otherwise fail on a full disk with objects
// acknowledged and not yet processed. Below it Ready fails, so the SCP
// refuses associations ("temporary congestion"), and Put refuses objects
// (ErrReserve, with objectstore.ErrUnavailable: A700 on the wire). Put
// checks as it starts (one statfs call, about 2 µs), so the objects in
// flight at that moment may take their size out of the reserve. The
// journal adds no segment file that would eat into it. 0 disables the
// check, and so does a system where the free space is not measured
// (only Linux's is). Whatever the reserve, a write that finds the disk
// full turns Ready off, and Put refuses objects (ErrReserve too) before
// writing a byte, until the reserve and what that write needed are free
// (see Ready): a sender resending on an association already open filled
// the disk to its end with each attempt.
func WithMinFreeBytes(n uint64) Option { return func(s *Store) { s.minFree = n } }

// WithBufferedWrites writes objects through the page cache even where the
// filesystem takes direct I/O (see DirectIO).
func WithBufferedWrites() Option { return func(s *Store) { s.buffered = true } }

// New opens (creating if needed) a store rooted at root and removes the
// temporary files a crash may have left.
func New(root string, opts ...Option) (*Store, error) {
	if root == "" {
		return nil, fmt.Errorf("filestore: new: empty root")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("filestore: new: %w", err)
	}
	s := &Store{root: abs, tmp: filepath.Join(abs, TempDir), log: slog.New(slog.DiscardHandler),
		fs: vfs.OS(), osFS: true, claims: map[string]chan struct{}{},
		making: map[string]*making{}}
	for _, o := range opts {
		o(s)
	}
	s.freeBytes = s.fs.FreeBytes
	s.bufs.New = func() any { b := alignedBuf(journal.BlockSize + ringSize); return &b }
	// A new root's name must survive a crash like what is stored in it.
	syncParent := func(dir string) error { return s.fs.SyncDir(filepath.Dir(dir)) }
	if err := vfs.MkdirAll(s.fs, s.tmp, 0o750, syncParent); err != nil {
		return nil, fmt.Errorf("filestore: new: %w", err)
	}
	entries, err := s.fs.ReadDir(s.tmp)
	if err != nil {
		return nil, fmt.Errorf("filestore: new: %w", err)
	}
	removed := 0
	for _, e := range entries {
		if err := s.fs.Remove(filepath.Join(s.tmp, e.Name())); err != nil {
			return nil, fmt.Errorf("filestore: new: remove leftover temporary file: %w", err)
		}
		removed++
	}
	if removed > 0 {
		s.log.Warn("removed temporary files left by an interrupted write", "count", removed)
	}
	if !s.buffered && s.osFS {
		if s.direct, err = s.probeDirect(); err != nil {
			return nil, fmt.Errorf("filestore: new: probe direct I/O: %w", err)
		}
		if !s.direct {
			s.log.Info("the store's filesystem does not take direct I/O: objects are written through the page cache")
		}
	}
	if !s.noJournal {
		if err := s.openJournal(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// DirectIO reports whether objects are written with direct I/O: their
// bytes go to the disk while the rest of the object still arrives, on a
// goroutine of their own, instead of waiting in the page cache for the
// fsync. New turns it on where the filesystem allows it on Linux, unless
// WithBufferedWrites.
func (s *Store) DirectIO() bool { return s.direct }

// Root returns the absolute root directory.
func (s *Store) Root() string { return s.root }

// Path returns the file of key, refusing keys that could leave root or
// reach the temporary directory.
func (s *Store) Path(key string) (string, error) {
	if !validKey(key) {
		// Named by its name: a clipped key would keep a UID cut short,
		// which Redact no longer finds whole.
		return "", fmt.Errorf("%w (%v)", ErrInvalidKey, s.names.Key(key))
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// maxKeyLen bounds a key's length.
const maxKeyLen = 1024

func validKey(key string) bool {
	if key == "" || len(key) > maxKeyLen || strings.ContainsAny(key, "\\\x00") {
		return false
	}
	for part := range strings.SplitSeq(key, "/") {
		if part == "" || part[0] == '.' {
			return false // also rules out "." and ".."
		}
	}
	return true
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

func unavailable(op string, err error) error {
	return fmt.Errorf("filestore: %s: %w: %w", op, objectstore.ErrUnavailable, err)
}

// Put stores part10 under objectstore.Key(obj). It returns once the
// object is durable and in place (see the package doc for the two ways).
// When the key already holds the same bytes nothing is written
// (Duplicate); when it holds other bytes the new object goes to
// objectstore.ConflictKey (Conflict).
//
// Put does not hash what it stores unless asked (Hooks.Checksum): on two
// cores shared with the sender, a SHA-256 of every object cost 15-30 % of
// the store's throughput. Duplicates are found by comparing bytes.
// Stored.CRC64NVME is set for a conflict, whose key is named after it. A
// read error from part10 (an aborted association), a cancelled ctx or a
// write failure leaves nothing: filesystem failures wrap
// objectstore.ErrUnavailable, read errors and ctx errors are wrapped as
// they are.
func (s *Store) Put(ctx context.Context, obj objectstore.Object, part10 io.Reader) (objectstore.Stored, error) {
	return s.PutWith(ctx, obj, part10, Hooks{})
}

// Hooks let PutWith's caller hand every object it stores on to a consumer
// of its own (local mode's pipeline) without a durable write of its own
// on the way: a journaled object's record carries the caller's note and
// stays in the journal until the caller releases it, so after a crash New
// hands it back (WithReplayHeld) instead of losing it.
type Hooks struct {
	// Before is called once an object has arrived whole and the key it
	// is about to try is known (st.Key, with st.Conflict and st.CRC64NVME
	// set for a conflict key): with the file recipe (journaled false)
	// when it is durable under its temporary name, just before it moves
	// there; for a journaled object before its journal record is
	// appended, since from then on a restart's replay may place it.
	// Either way nothing is under that key from this Put, and nothing a
	// restart could put there, before it returns. It returns the note a
	// journaled object's record carries with its key (at most
	// MaxNote bytes; ignored with the file recipe). An error leaves
	// nothing stored and is returned by PutWith.
	Before func(ctx context.Context, st objectstore.Stored, journaled bool) (note []byte, err error)
	// Hold, when set, takes a journaled object's record once the object
	// is in place, before PutWith returns: the record stays in the
	// journal, and New replays the object and hands it back
	// (WithReplayHeld) after a crash, until release is called. Without
	// Hold a record is released at once. Duplicates and objects stored
	// by the file recipe have no record. body is the object's bytes,
	// valid only during the call (its buffer is reused): a caller that
	// reads the object again soon may keep a copy of what it needs.
	Hold func(key string, body []byte, release func())
	// Checksum asks for Stored.CRC64NVME of the object, duplicates
	// included: for a journaled object from the bytes in memory, for the
	// file recipe by the goroutine that writes its chunks. (About 20 µs of
	// CPU for a 130 KB MR image on the bench machine, where a SHA-256 cost
	// about 115.)
	Checksum bool
}

// MaxNote is the longest note a journaled object's record carries.
const MaxNote = journal.MaxMeta - 1 - maxKeyLen

// PutWith is Put with hooks: Before is called before each key the object
// tries to take (the object's key, then the conflict key when the
// object's key holds other content), and Hold takes a journaled object's
// record. Local mode hands its objects to the pipeline there, so that
// every object that ever appears under a key was handed off first.
func (s *Store) PutWith(ctx context.Context, obj objectstore.Object, part10 io.Reader, hooks Hooks) (st objectstore.Stored, err error) {
	key, err := objectstore.Key(obj)
	if err != nil {
		return objectstore.Stored{}, fmt.Errorf("filestore: put: %w", err)
	}
	defer func() { err = s.names.Redact(err, key) }()
	// need is what the object wrote or, if it failed, needed at least:
	// its size, as far as it had arrived.
	var need int64
	defer func() { s.noteSpace(err, need) }()
	if err := ctx.Err(); err != nil {
		return objectstore.Stored{}, fmt.Errorf("filestore: put: %w", err)
	}
	// Refused before a byte is written: during a shortage an object
	// written anyway failed only once it had filled the disk.
	if err := s.noSpace.Admit(s.spaceReserve(), s.log, spaceLog); err != nil {
		return objectstore.Stored{}, unavailable("put", err)
	}
	bufp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bufp)
	buf := *bufp
	ring := buf[journal.BlockSize:]
	filled := 0
	if s.j != nil {
		n, err := fill(ctx, part10, ring)
		if err != nil {
			return objectstore.Stored{}, err
		}
		need = int64(n)
		if n < len(ring) {
			st, err = s.putJournaled(ctx, key, buf, n, hooks)
			if st.Duplicate {
				need = 0 // nothing written
			}
			return st, err
		}
		filled = n // maybe more: the file recipe takes it from here
	}
	var sum hash.Hash64
	if hooks.Checksum {
		sum = crcnvme.New()
	}
	tmp, size, err := s.writeTemp(ctx, part10, ring, filled, sum)
	need = max(size, need)
	if err != nil {
		return objectstore.Stored{}, err
	}
	return s.putFile(ctx, key, tmp, size, sum, hooks)
}

// putFile stores an object by the file recipe: its temporary file, tmp,
// written whole (size bytes, sum its checksum if asked), is placed.
func (s *Store) putFile(ctx context.Context, key, tmp string, size int64, sum hash.Hash64, hooks Hooks) (objectstore.Stored, error) {
	before := hooks.Before
	placed := false
	defer func() {
		if !placed {
			s.removeTemp(tmp)
		}
	}()
	if err := ctx.Err(); err != nil {
		return objectstore.Stored{}, fmt.Errorf("filestore: put: %w", err)
	}
	st := objectstore.Stored{Key: key, Size: size}
	if sum != nil {
		st.CRC64NVME = crcnvme.Encode(sum.Sum64())
	}

	final := filepath.Join(s.root, filepath.FromSlash(key))
	if err := s.mkdirAll(filepath.Dir(final)); err != nil {
		return objectstore.Stored{}, unavailable("put: mkdir", err)
	}
	for attempt := 0; ; attempt++ {
		if before != nil {
			if _, err := before(ctx, st, false); err != nil {
				return objectstore.Stored{}, err
			}
		}
		// Journaled Puts decide a key before their file is in place:
		// wait for them, so as never to be replaced by one.
		release, err := s.hold(ctx, st.Key)
		if err != nil {
			return objectstore.Stored{}, err
		}
		ok, err := placeNoReplace(tmp, final)
		if err != nil {
			release()
			return objectstore.Stored{}, unavailable("put: place", err)
		}
		if ok {
			placed = true
			// The key stays held until its name is durable: a Put of the
			// same bytes meanwhile would be a duplicate of a file that
			// may yet be unplaced.
			err := s.syncPlaced(final)
			if err != nil {
				s.unplace(st.Key, final)
			}
			release()
			if err != nil {
				return objectstore.Stored{}, unavailable("put: sync dir", err)
			}
			return st, nil
		}
		release()
		same, err := sameFiles(final, tmp, size)
		if err != nil {
			return objectstore.Stored{}, unavailable("put: compare", err)
		}
		if same {
			st.Duplicate = true
			return st, nil
		}
		if attempt == 1 {
			// A different object holds the conflict key too: it has
			// our CRC-64/NVME. Never overwrite.
			return objectstore.Stored{}, fmt.Errorf("filestore: put: conflict key taken by other content")
		}
		var crc uint64
		if sum != nil {
			crc = sum.Sum64()
		} else if crc, err = fileChecksum(tmp); err != nil {
			return objectstore.Stored{}, unavailable("put: checksum", err)
		}
		st.CRC64NVME = crcnvme.Encode(crc)
		st.Key, st.Conflict = objectstore.ChecksumConflictKey(key, crc), true
		final = filepath.Join(s.root, filepath.FromSlash(st.Key))
	}
}

// noteSpace follows what a Put or PutRecord that wrote or needed need
// bytes did to the disk: a failure for lack of space turns readiness off
// (new associations are refused while objects cannot be stored), and a
// success after one may turn it back on (vfs.Shortage).
func (s *Store) noteSpace(err error, need int64) {
	if err == nil && need == 0 {
		return // nothing written tells nothing of the space
	}
	turn := s.noSpace.Note(s.spaceReserve(), err, uint64(max(need, 0)))
	if turn.Stale() {
		s.readyMu.Lock()
		s.readyAt = time.Time{} // look again at the next Ready
		s.readyMu.Unlock()
	}
	turn.Log(s.log, spaceLog, need)
}

// spaceLog is what the store logs of its disk's shortage (vfs.Shortage).
var spaceLog = vfs.ShortageLog{
	OutOfSpace: "the store's disk is out of space: readiness off (associations refused) until space is back",
	SpaceBack:  "a write succeeded after the store's disk ran out of space: ready again",
	Checked:    "space is back on the store's disk: ready again",
}

// removeTemp removes a temporary file that was not placed, logging a
// failure (New removes what is left at the next start).
func (s *Store) removeTemp(tmp string) {
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Error("remove temporary file", "err", err)
	}
}

// createTemp creates a new file named prefix and a random number in the
// temporary directory, opened for direct I/O if direct, recreating the
// directory if someone removed it.
func (s *Store) createTemp(prefix string, direct bool) (*os.File, error) {
	flag := os.O_RDWR | os.O_CREATE | os.O_EXCL
	if direct {
		flag |= directFlag
	}
	recreated := false
	for try := 0; ; try++ {
		name := filepath.Join(s.tmp, prefix+strconv.FormatUint(uint64(rand.Uint32()), 10))
		f, err := os.OpenFile(name, flag, 0o600)
		switch {
		case errors.Is(err, fs.ErrExist) && try < 100:
			continue
		case errors.Is(err, fs.ErrNotExist) && !recreated:
			if err := os.MkdirAll(s.tmp, 0o750); err != nil {
				return nil, err
			}
			recreated = true
			continue
		}
		return f, err
	}
}

// compareChunk is how much of each file sameFiles reads at a time.
const compareChunk = 256 << 10

// sameFiles reports whether the file at path holds the size bytes of the
// file at other.
func sameFiles(path, other string, size int64) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	if st.Size() != size {
		return false, nil
	}
	g, err := os.Open(other)
	if err != nil {
		return false, err
	}
	defer g.Close()
	a, b := make([]byte, compareChunk), make([]byte, compareChunk)
	for {
		n, err := io.ReadFull(f, a)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return false, err
		}
		m, err := io.ReadFull(g, b[:n])
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return false, err
		}
		if m != n || !bytes.Equal(a[:n], b[:n]) {
			return false, nil
		}
		if n < len(a) {
			return true, nil
		}
	}
}

// sameBytes reports whether the file at path holds exactly body.
func sameBytes(path string, body []byte) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	got, err := io.ReadAll(io.LimitReader(f, int64(len(body))+1))
	if err != nil {
		return false, err
	}
	return bytes.Equal(got, body), nil
}

// FileCRC64NVME returns the CRC-64/NVME of the file at path, base64 as
// Stored.CRC64NVME holds it: for a reader of an object stored without
// Hooks.Checksum. It reads the whole file, and stops with ctx's error once
// ctx is done (a reader that went away).
func FileCRC64NVME(ctx context.Context, path string) (string, error) {
	crc, err := readChecksum(ctx, path)
	if err != nil {
		return "", err
	}
	return crcnvme.Encode(crc), nil
}

func fileChecksum(path string) (uint64, error) {
	return readChecksum(context.Background(), path)
}

func readChecksum(ctx context.Context, path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := crcnvme.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return 0, err
	}
	return h.Sum64(), nil
}

// ctxReader reads r until ctx is done, checking before every read.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// mkdirAll creates dir and missing parents under root, fsyncing the parent
// of every directory it creates so the new entries survive a crash. A
// directory another Put is creating is waited for, and its failure is
// this one's too: a Put that took it as made as soon as it existed placed
// its object, and was acknowledged, in a directory whose name might never
// reach the disk (the parent's fsync still running, or failed, and the
// directory, no longer empty, not removed).
func (s *Store) mkdirAll(dir string) error {
	exists := false
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		exists = true
	}
	s.makingMu.Lock()
	if m, ok := s.making[dir]; ok {
		// Registered before its mkdir, so seen here if it made the name
		// the look found.
		s.makingMu.Unlock()
		<-m.done
		return m.err
	}
	if exists {
		s.makingMu.Unlock()
		return nil
	}
	m := &making{done: make(chan struct{})}
	s.making[dir] = m
	s.makingMu.Unlock()
	m.err = s.mkdir(dir)
	s.makingMu.Lock()
	delete(s.making, dir)
	s.makingMu.Unlock()
	close(m.done)
	return m.err
}

// making is one directory's creation: err is set before done is closed.
type making struct {
	done chan struct{}
	err  error
}

// mkdir creates dir, its missing parents first, and fsyncs its parent.
func (s *Store) mkdir(dir string) error {
	parent := filepath.Dir(dir)
	if parent != dir && len(parent) >= len(s.root) {
		if err := s.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o750); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // made by a creation that ended (fsynced) since the look
		}
		return err
	}
	if err := syncDir(parent); err != nil {
		// Left in place, the directory would be taken as made by the
		// next Put, its name never fsynced again (see unplace).
		if rerr := os.Remove(dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the directory whose parent's fsync failed: %w", rerr))
		}
		return err
	}
	return nil
}

// syncPlaced fsyncs both directories the move of a temporary file to
// final changed: final's, so that the file survives a crash, and the
// temporary directory, so that the temporary name does not. A filesystem
// that does not order its metadata (ext4 without a journal) could
// otherwise come back with both names on one inode and a link count of
// 1, and New's removal of the temporary name would free the stored file.
func (s *Store) syncPlaced(final string) error {
	if err := syncDir(filepath.Dir(final)); err != nil {
		return err
	}
	return syncDir(s.tmp)
}

// syncDir is how the store fsyncs a directory (a variable so tests can
// see the calls).
var syncDir = SyncDir

// SyncDir fsyncs dir, so that the entries just created, renamed or
// removed in it survive a crash.
func SyncDir(dir string) error { return vfs.SyncDir(dir) }

// placeNoReplace moves tmp to final unless final exists, reporting false
// then (renameat2(RENAME_NOREPLACE), or a hard link where it is missing).
func placeNoReplace(tmp, final string) (bool, error) { return vfs.OS().RenameNoReplace(tmp, final) }

// PutRecord durably writes body at key (which must be under one of
// objectstore.RecordPrefixes). It never replaces a record: writing the same
// bytes again succeeds, other bytes under an existing key fail.
func (s *Store) PutRecord(ctx context.Context, key string, body []byte) (err error) {
	defer func() { s.noteSpace(err, int64(len(body))) }()
	if !objectstore.IsRecordKey(key) {
		return fmt.Errorf("%w: record key %q outside %s", ErrInvalidKey, clip(key), strings.Join(objectstore.RecordPrefixes, " and "))
	}
	final, err := s.Path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("filestore: put record: %w", err)
	}
	f, err := s.createTemp(RecordTempPrefix, false)
	if err != nil {
		return unavailable("put record", err)
	}
	tmp := f.Name()
	placed := false
	defer func() {
		if !placed {
			s.removeTemp(tmp)
		}
	}()
	_, werr := f.Write(body)
	if werr == nil {
		werr = f.Sync()
	}
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return unavailable("put record: write", werr)
	}
	if err := s.mkdirAll(filepath.Dir(final)); err != nil {
		return unavailable("put record: mkdir", err)
	}
	// The key is held until its name is durable, as Put's: a PutRecord of
	// the same bytes meanwhile would succeed on a file that may yet be
	// unplaced.
	release, err := s.hold(ctx, key)
	if err != nil {
		return err
	}
	defer release()
	placed, err = placeNoReplace(tmp, final)
	if err != nil {
		return unavailable("put record: place", err)
	}
	if !placed {
		same, err := sameBytes(final, body)
		if err != nil {
			return unavailable("put record: compare", err)
		}
		if !same {
			return fmt.Errorf("filestore: put record %s: %w", key, objectstore.ErrRecordHeld)
		}
		return nil
	}
	if err := s.syncPlaced(final); err != nil {
		s.unplace(key, final)
		return unavailable("put record: sync dir", err)
	}
	return nil
}

// unplace removes the file just placed at final after the fsync of its
// directories failed. The sender is told the Put failed and retries; left
// in place, the file would answer the retry as a duplicate, acknowledged
// though its name may never reach the disk: after a failed fsync Linux
// may drop what it could not write and clear the error, so no later fsync
// is trusted to cover it. The retry writes it anew, with its own fsyncs.
func (s *Store) unplace(key, final string) {
	if err := os.Remove(final); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Error("a stored file whose directory fsync failed could not be removed; a resend of it is taken as a duplicate",
			"key", s.names.Key(key), "err", s.names.Redact(err, key))
	}
}

// Ready checks that a file can be created in the store and that Put
// would not refuse an object for lack of space (vfs.Shortage.Ready, Put's
// rule): with WithMinFreeBytes, that the reserve is free, and, after a
// write failed for lack of space (ENOSPC, EDQUOT), that the reserve and
// what that write needed (its object's size, as far as it had arrived)
// are free again (where the free space is not measured, until a later
// write succeeds). A result is reused for a second.
func (s *Store) Ready(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("filestore: ready: %w", err)
	}
	if err := s.failedSync(); err != nil {
		return unavailable("ready", err)
	}
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	if now := time.Now(); now.Sub(s.readyAt) >= readyTTL || now.Before(s.readyAt) {
		s.readyErr, s.readyAt = s.probe(), now
	}
	return s.readyErr
}

func (s *Store) probe() error {
	f, err := s.createTemp("ready-", false)
	if err != nil {
		return unavailable("ready", err)
	}
	name := f.Name()
	_, err = f.Write([]byte{0})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	if err != nil {
		return unavailable("ready", err)
	}
	if err := s.noSpace.Ready(s.spaceReserve(), s.log, spaceLog); err != nil {
		return unavailable("ready", err)
	}
	return nil
}

// mayGrow tells the journal whether it may add a segment file of n bytes:
// not where that would leave less than the reserve free. A failed statfs
// lets it try: the file's creation reports what is wrong.
func (s *Store) mayGrow(n int64) bool {
	_, below, err := s.spaceReserve().Below(uint64(max(n, 0)))
	return err != nil || !below
}

// spaceReserve is the store's reserve (WithMinFreeBytes): vfs.Reserve's
// rule, which the staged store keeps too.
func (s *Store) spaceReserve() vfs.Reserve {
	return vfs.Reserve{Bytes: s.minFree, Free: func() (uint64, error) { return s.freeBytes(s.root) }}
}

// Open opens the object or record at key for reading; errors.Is(err,
// fs.ErrNotExist) when there is none.
func (s *Store) Open(key string) (*os.File, error) {
	p, err := s.Path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, s.names.Redact(fmt.Errorf("filestore: open: %w", err), key)
	}
	return f, nil
}

// Stat returns the file information of key; errors.Is(err,
// fs.ErrNotExist) when there is none.
func (s *Store) Stat(key string) (fs.FileInfo, error) {
	p, err := s.Path(key)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, s.names.Redact(fmt.Errorf("filestore: stat: %w", err), key)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("filestore: stat: %w: not a regular file", fs.ErrNotExist)
	}
	return st, nil
}

// Walk calls fn for every stored file whose key starts with prefix (a
// plain string prefix, as in S3: "incoming/2026/0" matches), in lexical
// order of path components (S3 orders whole keys, which differs only for
// names with characters sorting before '/'). Hidden files and directories (the temporary directory and
// other writers' temporary files) are skipped. An error from fn stops the
// walk and is returned; so is ctx's.
func (s *Store) Walk(ctx context.Context, prefix string, fn func(key string, info fs.FileInfo) error) error {
	// Start at the deepest directory the prefix names completely.
	start := s.root
	if i := strings.LastIndexByte(prefix, '/'); i > 0 {
		dir := prefix[:i]
		if !validKey(dir) {
			return fmt.Errorf("%w: prefix %q", ErrInvalidKey, clip(prefix))
		}
		start = filepath.Join(s.root, filepath.FromSlash(dir))
	}
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == start {
				return fs.SkipAll
			}
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if p == start {
			return nil
		}
		name := d.Name()
		if strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".tmp") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			// Prune directories that cannot hold a matching key.
			if !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		return fn(key, info)
	})
	if err != nil {
		return fmt.Errorf("filestore: walk: %w", err)
	}
	return nil
}
