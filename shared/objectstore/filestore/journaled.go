package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/journal"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/retry"
)

// An object that fits in the ring (most images: a 512x512 CT slice is
// 0.5 MB, an MR slice 0.13 MB) is made durable by the journal, not by a
// file of its own:
//
//  1. its key is claimed (in memory, so no other Put of this process
//     decides about the same key meanwhile) and checked against the file
//     already there: the same bytes are a duplicate, other bytes a
//     conflict, kept under the conflict key, as in the file recipe;
//  2. it is written to a temporary file through the page cache, unsynced;
//  3. it is appended to the journal with its key: one direct write, and
//     one fdatasync shared with every Put appending meanwhile;
//  4. the temporary file is renamed to the key, unsynced, and Put
//     returns.
//
// The file's data, inode and names reach the disk at the journal's next
// checkpoint (a syncfs, before a segment is reused). After a crash, New
// replays the journal: every record not yet checkpointed is written to its
// key again, replacing whatever a crash left there (nothing, a torn file,
// or the same bytes), before the store serves anything. A record always
// names the key decided in step 1, and no other Put decides that key while
// the record is live, so a replay only ever rewrites a file with its own
// bytes. Objects larger than the ring take the file recipe (see Put),
// where the fsyncs are paid once per many megabytes.

// JournalDir is the directory under root holding the journal.
const JournalDir = ".journal"

// Defaults of the journal: 2 segments of 16 MiB (prefilled when the store
// is created: appends then overwrite allocated blocks, so the commit has
// the data alone to write), growing to 8 while checkpoints lag (a syncfs
// writes whatever the file system holds dirty, not only the store's).
const (
	DefaultJournalSegmentSize = 16 << 20
	DefaultJournalSegments    = 2
)

// minSegmentSize holds the largest journaled object (less than the ring)
// with its header, after the segment's own header block.
const minSegmentSize = ringSize + 2*journal.BlockSize

// WithoutJournal makes every object take the file recipe: a temporary
// file written directly, fsynced, renamed into place and both directories
// fsynced, before Put returns.
func WithoutJournal() Option { return func(s *Store) { s.noJournal = true } }

// WithJournalSize sets the journal's segment size (a multiple of 4 KiB, at
// least 1 MiB + 8 KiB so that the largest journaled object fits) and how many
// segments are kept ready (at least 2; up to four times as many while
// checkpoints lag). A new segment file is written with zeros once.
func WithJournalSize(segmentSize int64, segments int) Option {
	return func(s *Store) { s.jopts.SegmentSize, s.jopts.Segments = segmentSize, segments }
}

// WithReplayHeld makes New hand every object it replays from the journal
// to held, with the note its record carries and the release of that
// record, instead of releasing it: the caller of PutWith whose Hooks.Hold
// kept records picks up after a crash where it stopped. New replays every
// record not yet checkpointed, so a record released shortly before a
// crash comes back too: what the caller does with one must be idempotent.
// held is called before New returns, from New's goroutine.
func WithReplayHeld(held func(key string, note []byte, release func())) Option {
	return func(s *Store) { s.replayHeld = held }
}

// withFS makes the store's journal, the journaled path and New's clean-up
// and replay use fsys (crash tests use an in-memory disk); the file
// recipe, records and reads keep the operating system's files.
func withFS(fsys vfs.FS) Option { return func(s *Store) { s.fs, s.osFS = fsys, false } }

// openJournal opens the journal and replays what it holds.
func (s *Store) openJournal() error {
	o := s.jopts
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultJournalSegmentSize
	}
	if o.SegmentSize < minSegmentSize {
		return fmt.Errorf("filestore: journal segment size %d below %d, the largest record", o.SegmentSize, minSegmentSize)
	}
	if o.Segments == 0 {
		o.Segments = DefaultJournalSegments
	}
	o.MaxSegments = 4 * max(o.Segments, 2)
	o.Prefill = true
	o.Buffered = o.Buffered || s.buffered
	o.FS, o.Logger, o.Checkpoint = s.fs, s.log, s.checkpoint
	o.MayGrow = s.mayGrow
	j, recs, err := journal.Open(filepath.Join(s.root, JournalDir), o)
	if err != nil {
		return fmt.Errorf("filestore: new: %w", err)
	}
	for _, r := range recs {
		if err := s.replay(j, r); err != nil {
			return errors.Join(fmt.Errorf("filestore: new: replay the journal: %w", err), j.Close())
		}
	}
	switch {
	case len(recs) > 0 && s.replayHeld != nil:
		// Records the caller held at the last close come back too.
		s.log.Info("rewrote objects from the journal and hands them back", "count", len(recs))
	case len(recs) > 0:
		s.log.Warn("rewrote objects from the journal after an interrupted run", "count", len(recs))
	}
	// The replayed files become durable at the journal's checkpoint,
	// before their segments are reused.
	for _, r := range recs {
		if s.replayHeld == nil {
			j.Release(r)
			continue
		}
		key, note := splitMeta(r.Meta)
		s.replayHeld(key, note, releaseOnce(j, r))
	}
	s.j = j
	return nil
}

// replay writes a journal record's object to its key again. Its errors
// name the object by its name: a file operation's error carries the path,
// which holds the key (and so the object's UIDs).
func (s *Store) replay(j *journal.Journal, r journal.Record) (err error) {
	key, _ := splitMeta(r.Meta)
	if !validKey(key) {
		return fmt.Errorf("record names an invalid key (%v)", s.names.Key(key))
	}
	defer func() { err = s.names.Redact(err, key) }()
	p, err := j.Payload(r)
	if err != nil {
		return err
	}
	tmp, err := s.writeMaterialTemp(func(f vfs.File) error {
		_, err := io.Copy(io.NewOffsetWriter(f, 0), p)
		return err
	})
	if err != nil {
		return err
	}
	crashPoint("replay-written")
	err = s.place(tmp, key)
	crashPoint("replayed")
	return err
}

// recordMeta is what a journaled object's record carries: its key, then,
// after a NUL (which no key holds), the caller's note if there is one.
func recordMeta(key string, note []byte) []byte {
	if len(note) == 0 {
		return []byte(key)
	}
	m := make([]byte, 0, len(key)+1+len(note))
	return append(append(append(m, key...), 0), note...)
}

// splitMeta reverses recordMeta.
func splitMeta(meta []byte) (key string, note []byte) {
	k, n, found := bytes.Cut(meta, []byte{0})
	if !found {
		return string(meta), nil
	}
	return string(k), n
}

// releaseOnce releases r the first time the returned func is called.
func releaseOnce(j *journal.Journal, r journal.Record) func() {
	var once sync.Once
	return func() { once.Do(func() { j.Release(r) }) }
}

// checkpoint makes everything the journaled path wrote durable: the
// journal's Checkpoint. Its first failure is final (ErrSyncFailed): after
// a failed syncfs Linux may have dropped the pages it could not write and
// cleared the error, so a later syncfs that succeeds says nothing of the
// files written before it. The journal, whose Checkpoint then keeps
// failing, never reuses a segment holding their records; appends wait,
// then fail, once its segments are full (the C-STORE a failure status,
// as on a full disk), Ready refuses new associations, and the next New
// rewrites every file from its record. The failure is retry.Final, so
// that the journal tries no checkpoint again (it logged the failure every
// second until the restart, after the line below had said it once).
func (s *Store) checkpoint() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.syncFailed != nil {
		return retry.Final(s.syncFailed)
	}
	err := s.fs.SyncFS(s.root)
	crashPoint("checkpointed")
	if err != nil {
		s.syncFailed = fmt.Errorf("%w: checkpoint: %w", ErrSyncFailed, err)
		s.log.Error("file store: a checkpoint's syncfs failed; the journal keeps every record since the last checkpoint and takes objects until it is full: restart to replay it",
			"err", err)
		return retry.Final(s.syncFailed)
	}
	return nil
}

// failedSync returns the failure that made the store stop trusting its
// syncs (ErrSyncFailed), nil if none.
func (s *Store) failedSync() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	return s.syncFailed
}

// crashPoint marks a step of the journaled path; the crash tests' writer
// process kills itself there (see crash_test.go).
var crashPoint = func(step string) {}

// Close makes what the journal holds durable in the store's layout and
// closes it, so that the next New has nothing to replay. Puts must have
// returned. It has no time limit: Shutdown is Close within a context.
func (s *Store) Close() error { return s.Shutdown(context.Background()) }

// Shutdown is Close within ctx (objectstore.Shutdowner): when ctx ends
// first (the stop's time is up, a second signal), it returns without an
// error and says in a line what it leaves: nothing acknowledged is lost,
// since each object is in the synced journal until a checkpoint has made
// its file durable, and the next New replays what it finds there.
func (s *Store) Shutdown(ctx context.Context) error {
	if s.j == nil {
		return nil
	}
	err := s.j.Shutdown(ctx)
	if errors.Is(err, journal.ErrCloseCutShort) {
		s.log.Warn(CloseCutShort, "err", err)
		return nil
	}
	st := s.j.Stats()
	s.log.Info("journal closed", "appends", st.Appends, "commits", st.Commits, "waits_for_space", st.Waits,
		"wait_seconds", st.WaitTime.Seconds(), "checkpoints", st.Checkpoints, "checkpoint_seconds", st.CheckpointTime.Seconds())
	if err != nil {
		return fmt.Errorf("filestore: close: %w", err)
	}
	return nil
}

// CloseCutShort is Shutdown's line when its time ran out first.
const CloseCutShort = "file store's close cut short; nothing acknowledged is lost (each object is in the synced journal): the next start replays what the journal holds"

// putJournaled stores the n bytes at buf[journal.BlockSize:] under key.
func (s *Store) putJournaled(ctx context.Context, key string, buf []byte, n int, hooks Hooks) (st objectstore.Stored, err error) {
	body := buf[journal.BlockSize : journal.BlockSize+n]
	if hooks.Checksum {
		defer func() {
			if err == nil && st.CRC64NVME == "" {
				st.CRC64NVME = crcnvme.Base64(body)
			}
		}()
	}
	var note []byte
	var release func()
	st, note, release, err = s.claim(ctx, key, body, hooks.Before)
	if err != nil || st.Duplicate {
		return st, err
	}
	defer release()
	crashPoint("claimed")
	tmp, err := s.writeMaterialTemp(func(f vfs.File) error {
		_, err := f.WriteAt(body, 0)
		return err
	})
	if err != nil {
		return objectstore.Stored{}, unavailable("put", err)
	}
	crashPoint("written")
	rec, err := s.j.Append(ctx, recordMeta(st.Key, note), buf, n)
	if err != nil {
		s.removeMaterialTemp(tmp)
		if ctx.Err() != nil {
			return objectstore.Stored{}, fmt.Errorf("filestore: put: %w", ctx.Err())
		}
		return objectstore.Stored{}, unavailable("put: journal", err)
	}
	crashPoint("appended")
	if err := s.place(tmp, st.Key); err != nil {
		s.removeMaterialTemp(tmp)
		// The record would put the object back after a restart, though
		// the sender is told it failed.
		if cerr := s.j.Cancel(rec); cerr != nil {
			s.log.Error("a failed object stays in the journal and reappears after a restart", "err", cerr)
		}
		return objectstore.Stored{}, unavailable("put: place", err)
	}
	crashPoint("placed")
	if hooks.Hold != nil {
		hooks.Hold(st.Key, body, releaseOnce(s.j, rec))
	} else {
		s.j.Release(rec)
	}
	return st, nil
}

// claim decides where body goes: under key if free (then key is held
// until release is called), or reports a duplicate, or moves to the
// conflict key as the file recipe does, calling before (if set) ahead of
// each key it tries, as the file recipe does; note is what before returned
// for the key decided.
func (s *Store) claim(ctx context.Context, key string, body []byte, before func(context.Context, objectstore.Stored, bool) ([]byte, error)) (st objectstore.Stored, note []byte, release func(), err error) {
	st = objectstore.Stored{Key: key, Size: int64(len(body))}
	for attempt := 0; ; attempt++ {
		if before != nil {
			if note, err = before(ctx, st, true); err != nil {
				return objectstore.Stored{}, nil, nil, err
			}
			if len(note) > MaxNote {
				return objectstore.Stored{}, nil, nil, fmt.Errorf("filestore: put: note of %d bytes, more than %d", len(note), MaxNote)
			}
		}
		release, err := s.hold(ctx, st.Key)
		if err != nil {
			return objectstore.Stored{}, nil, nil, err
		}
		final := filepath.Join(s.root, filepath.FromSlash(st.Key))
		exists, same, err := s.compare(final, body)
		if err != nil {
			release()
			return objectstore.Stored{}, nil, nil, unavailable("put: compare", err)
		}
		if !exists {
			return st, note, release, nil
		}
		release()
		if same {
			st.Duplicate = true
			return st, nil, nil, nil
		}
		if attempt == 1 {
			// A different object holds the conflict key too: it has
			// our CRC-64/NVME. Never overwrite.
			return objectstore.Stored{}, nil, nil, fmt.Errorf("filestore: put: conflict key taken by other content")
		}
		crc := crcnvme.Checksum(body)
		st.CRC64NVME = crcnvme.Encode(crc)
		st.Key, st.Conflict = objectstore.ChecksumConflictKey(key, crc), true
	}
}

// hold takes key for this Put, waiting while another Put of this process
// holds it.
func (s *Store) hold(ctx context.Context, key string) (release func(), err error) {
	for {
		s.claimsMu.Lock()
		busy, ok := s.claims[key]
		if !ok {
			done := make(chan struct{})
			s.claims[key] = done
			s.claimsMu.Unlock()
			return func() {
				s.claimsMu.Lock()
				delete(s.claims, key)
				s.claimsMu.Unlock()
				close(done)
			}, nil
		}
		s.claimsMu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, fmt.Errorf("filestore: put: %w", ctx.Err())
		}
	}
}

// compare reports whether a file is at path, and whether it holds body.
func (s *Store) compare(path string, body []byte) (exists, same bool, err error) {
	st, err := s.fs.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	if !st.Mode().IsRegular() || st.Size() != int64(len(body)) {
		return true, false, nil
	}
	f, err := s.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return true, false, err
	}
	got := make([]byte, min(len(body), compareChunk))
	for off := 0; off < len(body); off += len(got) {
		m := min(len(got), len(body)-off)
		if _, err := f.ReadAt(got[:m], int64(off)); err != nil && !(errors.Is(err, io.EOF) && off+m == len(body)) {
			return true, false, errors.Join(err, f.Close())
		}
		if !bytes.Equal(got[:m], body[off:off+m]) {
			return true, false, f.Close()
		}
	}
	return true, true, f.Close()
}

// writeMaterialTemp writes a new temporary file with write, unsynced.
func (s *Store) writeMaterialTemp(write func(vfs.File) error) (string, error) {
	var f vfs.File
	var name string
	for try := 0; ; try++ {
		name = filepath.Join(s.tmp, "obj-"+strconv.FormatUint(rand.Uint64(), 36))
		var err error
		f, err = s.fs.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			break
		}
		if errors.Is(err, fs.ErrNotExist) && try == 0 {
			// Someone removed the temporary directory.
			if err := vfs.MkdirAll(s.fs, s.tmp, 0o750, nil); err != nil {
				return "", err
			}
			continue
		}
		if !errors.Is(err, fs.ErrExist) || try > 100 {
			return "", err
		}
	}
	err := write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.removeMaterialTemp(name)
		return "", err
	}
	return name, nil
}

func (s *Store) removeMaterialTemp(name string) {
	if err := s.fs.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Error("remove temporary file", "err", err)
	}
}

// place renames tmp to key's file, replacing it (see the comment at the
// top: only a replay ever finds a file there, its own or a torn one).
func (s *Store) place(tmp, key string) error {
	final := filepath.Join(s.root, filepath.FromSlash(key))
	if err := vfs.MkdirAll(s.fs, filepath.Dir(final), 0o750, nil); err != nil {
		return err
	}
	return s.fs.Rename(tmp, final)
}
