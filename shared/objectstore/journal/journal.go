// Package journal is a crash-safe log of records (an object's bytes and a
// short description of it) in a bounded set of segment files that are
// reused: a record is appended with one write, and made durable together
// with every record appended meanwhile, from any goroutine, by one
// fdatasync (group commit). Consumers then take each record out (the file
// store materializes it as a file, the staged store uploads it) and
// release it; a segment whose records are all released is checkpointed
// (Options.Checkpoint: what the consumers did is made durable) and reused,
// or, past the segments the journal keeps, removed (Options.Shrink).
//
// Where a write costs a disk's cache flush or a network file system's
// round trip, one commit per group instead of several metadata operations
// per object (create, rename, directory fsyncs) is what the journal buys.
// Records are acknowledged in the order they were reserved, so a scan of a
// segment after a crash, which stops at the first invalid record, never
// loses an acknowledged one; see format.go for what makes a record valid.
package journal

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/retry"
)

// Defaults of Options.
const (
	DefaultSegmentSize = 64 << 20
	DefaultSegments    = 2
	DefaultIdleSeal    = 2 * time.Second
	DefaultFullWait    = 30 * time.Second
)

// Options configures a Journal. The zero value works.
type Options struct {
	// SegmentSize is the size of a segment file, a multiple of BlockSize
	// (default 64 MiB). A record takes a header block and its payload
	// rounded up to a block, and must fit in a segment.
	SegmentSize int64
	// Segments is how many segment files are kept ready (default 2);
	// MaxSegments bounds how many exist at once (default Segments): a
	// journal grows to MaxSegments while its records are not released
	// and appends then wait up to FullWait for one to be reclaimed.
	Segments, MaxSegments int
	// FullWait bounds how long Append waits for a segment to be
	// reclaimed when all MaxSegments are in use (default 30 s; negative:
	// fail at once with ErrFull, unless a segment file is being added).
	// Segment files beyond Segments are added in the background, one
	// ahead of need.
	FullWait time.Duration
	// Prefill writes zeros over a new segment file, so that appends
	// overwrite allocated blocks (a local disk's fdatasync then has
	// nothing but the data to write) instead of extending the file.
	Prefill bool
	// Buffered writes through the page cache even where the file system
	// takes direct I/O.
	Buffered bool
	// MayGrow, when set, is asked before a segment file beyond Segments is
	// added, with its size: false keeps the journal at the segments it
	// has, and appends wait for one to be reclaimed (a store keeping free
	// space in reserve says false when the new file would eat into it).
	MayGrow func(bytes int64) bool
	// Shrink removes the segment files added beyond Segments once they
	// are free again (their records released and checkpointed), keeping
	// one free segment beyond those in use, so that the space a backlog
	// took comes back once it drains, without a restart. For a journal
	// whose segments are cheap to add again (not Prefill): a free segment
	// removed is one created again when the backlog grows back.
	Shrink bool
	// IdleSeal seals the segment being appended to once all its records
	// were released and nothing was appended for this long, so that it
	// is reclaimed and a restart has nothing to replay (default 2 s;
	// negative: never).
	IdleSeal time.Duration
	// Checkpoint is called before segments whose records were all
	// released are reused: what the consumers made of those records must
	// be durable when it returns nil. A failure is retried after
	// retry.Backoff's steps (100 ms after it and then twice as long each
	// time, up to 10 s apart), whatever wakes the reclaimer meanwhile; one
	// marked retry.Final is not: no checkpoint runs again, and no segment
	// is reused, until a restart.
	Checkpoint func() error
	// ReadOnly opens a journal only to read and release what it holds
	// (another process's, taken over): it adds no segment file, appends
	// nothing and reclaims nothing.
	ReadOnly bool
	// FS is the file system (default the operating system's).
	FS     vfs.FS
	Logger *slog.Logger
}

// Record is a record in the journal.
type Record struct {
	Seq  uint64 // generation of the segment holding it
	Off  int64  // offset in that segment
	Meta []byte
	Size int64  // payload bytes
	CRC  uint64 // CRC-64/NVME of the payload
}

// Errors of Append.
var (
	// ErrFull is returned when no segment could be reclaimed in time.
	ErrFull = errors.New("journal: full")
	// ErrTooBig is returned for a record that cannot fit in a segment.
	ErrTooBig = errors.New("journal: record larger than a segment")
	// ErrClosed is returned once Close was called.
	ErrClosed = errors.New("journal: closed")
)

type segState int

const (
	segFree segState = iota
	segActive
	segSealed
	segReclaiming
)

type segment struct {
	slot  int
	name  string
	w, r  vfs.File // writes (direct where possible), reads (page cache)
	state segState
	hdr   segHeader
	tail  int64 // next free offset while active
	// live counts records reserved and not yet released; liveBytes their
	// payload bytes.
	live      int
	liveBytes int64
	// broken is the failed write or commit after which nothing in the
	// segment is acknowledged, and it takes no more records; the records
	// behind it fail with it, so that their callers see the cause (a full
	// disk, ENOSPC) as the first one's did.
	broken     error
	lastAppend time.Time
}

type ticket struct {
	seg      *segment
	off, end int64
	written  bool
	err      error
	done     chan error
}

// Journal is an open journal. It is safe for concurrent use.
type Journal struct {
	dir    string
	o      Options
	fs     vfs.FS
	log    *slog.Logger
	direct bool

	mu       sync.Mutex
	segs     []*segment
	bySeq    map[uint64]*segment
	active   *segment
	nextSeq  uint64
	inflight []*ticket // reserved, in reservation order, not yet committed
	ready    []*ticket // written, in order, waiting for the commit
	space    chan struct{}
	creating bool  // a segment file is being added
	growErr  error // why the last one could not be
	closed   bool
	// growFailing and writeFailing log segments not added and writes that
	// failed once per episode (jsonlog.Episode): a full disk failed them
	// again at each retry of the journal's callers.
	growFailing, writeFailing jsonlog.Episode
	// sealedFailing counts the segments writeFailing's episode sealed:
	// its first line names the first, its last says how many.
	sealedFailing int
	// removing holds the slots of segment files being removed (Shrink),
	// and of those whose removal failed: no new segment takes them.
	removing map[int]bool

	commitWake, reclaimWake chan struct{}
	stop                    chan struct{}
	wg                      sync.WaitGroup

	// Counters for Stats.
	appends, commits, waits, checkpoints atomic.Int64
	checkpointTime, waitTime             atomic.Int64 // nanoseconds
}

// Open opens the journal in dir (creating it), and returns the records
// that a previous run appended and never released, in append order: the
// caller must finish each (Release, or Cancel) like an appended one.
func Open(dir string, o Options) (*Journal, []Record, error) {
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.SegmentSize < 4*BlockSize || o.SegmentSize%BlockSize != 0 {
		return nil, nil, fmt.Errorf("journal: open: segment size %d is not a multiple of %d of at least 4 blocks", o.SegmentSize, BlockSize)
	}
	if o.Segments <= 0 {
		o.Segments = DefaultSegments
	}
	o.Segments = max(o.Segments, 2)
	o.MaxSegments = max(o.MaxSegments, o.Segments)
	if o.FullWait == 0 {
		o.FullWait = DefaultFullWait
	}
	if o.IdleSeal == 0 {
		o.IdleSeal = DefaultIdleSeal
	}
	if o.FS == nil {
		o.FS = vfs.OS()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	j := &Journal{
		dir: dir, o: o, fs: o.FS, log: o.Logger, bySeq: map[uint64]*segment{}, space: make(chan struct{}), removing: map[int]bool{},
		commitWake: make(chan struct{}, 1), reclaimWake: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	if err := vfs.MkdirAll(j.fs, dir, 0o750, j.syncParent); err != nil {
		return nil, nil, fmt.Errorf("journal: open: %w", err)
	}
	if !o.Buffered && !o.ReadOnly {
		var err error
		if j.direct, err = j.probeDirect(); err != nil {
			return nil, nil, fmt.Errorf("journal: open: probe direct I/O: %w", err)
		}
	}
	recs, err := j.load()
	if err != nil {
		return nil, nil, errors.Join(err, j.closeFiles())
	}
	if o.ReadOnly {
		j.closed = true
		return j, recs, nil
	}
	j.wg.Add(2)
	go j.committer()
	go j.reclaimer()
	return j, recs, nil
}

func (j *Journal) syncParent(dir string) error { return j.fs.SyncDir(filepath.Dir(dir)) }

// DirectIO reports whether records are written with direct I/O.
func (j *Journal) DirectIO() bool { return j.direct }

// probeDirect reports whether the journal's file system takes aligned
// direct writes.
func (j *Journal) probeDirect() (bool, error) {
	if vfs.Direct == 0 {
		return false, nil
	}
	name := filepath.Join(j.dir, "probe")
	f, err := j.fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC|vfs.Direct, 0o600)
	if err != nil {
		if isInvalid(err) {
			return false, nil
		}
		return false, err
	}
	_, werr := f.WriteAt(NewBuffer(0)[:BlockSize], 0)
	err = f.Close()
	if rerr := j.fs.Remove(name); err == nil {
		err = rerr
	}
	if err != nil {
		return false, err
	}
	if werr != nil {
		if isInvalid(werr) {
			return false, nil
		}
		return false, werr
	}
	return true, nil
}

// load opens the segment files in dir and scans the active ones.
func (j *Journal) load() ([]Record, error) {
	entries, err := j.fs.ReadDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("journal: open: %w", err)
	}
	var recs []Record
	for _, e := range entries {
		slot, ok := parseSlot(e.Name())
		if !ok {
			continue
		}
		s, err := j.openSegment(slot, false)
		if err != nil {
			return nil, err
		}
		j.segs = append(j.segs, s)
		hdr := NewBuffer(0)[:BlockSize]
		n, err := s.r.ReadAt(hdr, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("journal: open: read %s: %w", s.name, err)
		}
		h, herr := decodeSegHeader(hdr[:n])
		if herr == nil {
			j.nextSeq = max(j.nextSeq, h.seq+1)
		}
		if herr == nil && h.state == stateActive {
			s.hdr = h
			found, err := j.scan(s)
			if err != nil {
				return nil, err
			}
			s.state, s.live = segSealed, len(found)
			for _, r := range found {
				s.liveBytes += r.Size
			}
			j.bySeq[h.seq] = s
			recs = append(recs, found...)
		}
	}
	slices.SortFunc(recs, func(a, b Record) int {
		if a.Seq != b.Seq {
			return cmpU64(a.Seq, b.Seq)
		}
		return int(a.Off - b.Off)
	})
	for len(j.segs) < j.o.Segments && !j.o.ReadOnly {
		s, err := j.createSegment(j.nextSlot())
		if err != nil {
			return nil, err
		}
		j.segs = append(j.segs, s)
	}
	// Segments scanned empty (all cancelled, or nothing valid) are free;
	// segment files beyond Segments (a backlog's, a crash before their
	// removal was durable) are removed once free.
	for _, s := range j.segs {
		if s.state == segSealed && s.live == 0 || j.o.Shrink && len(j.segs) > j.o.Segments {
			j.wakeReclaimer()
		}
	}
	return recs, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func slotName(slot int) string { return fmt.Sprintf("seg-%04d", slot) }

func parseSlot(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "seg-")
	if !ok || len(rest) != 4 {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n >= 0
}

// openSegment opens (create: creates) the file of slot.
func (j *Journal) openSegment(slot int, create bool) (*segment, error) {
	s := &segment{slot: slot, name: filepath.Join(j.dir, slotName(slot))}
	flag := os.O_RDWR
	if j.o.ReadOnly {
		flag = os.O_RDONLY
	}
	if create {
		flag |= os.O_CREATE | os.O_EXCL
	}
	if j.direct {
		flag |= vfs.Direct
	}
	var err error
	if s.w, err = j.fs.OpenFile(s.name, flag, 0o600); err != nil {
		return nil, fmt.Errorf("journal: open segment: %w", err)
	}
	if s.r, err = j.fs.OpenFile(s.name, os.O_RDONLY, 0); err != nil {
		return nil, errors.Join(fmt.Errorf("journal: open segment: %w", err), s.w.Close())
	}
	return s, nil
}

// nextSlot is the number of the next segment file: the lowest no
// segment file has or is losing, so that numbers stay within what
// parseSlot reads however often segments are removed and added again;
// the caller holds mu (or is Open).
func (j *Journal) nextSlot() int {
	used := maps.Clone(j.removing)
	for _, s := range j.segs {
		used[s.slot] = true
	}
	slot := 0
	for used[slot] {
		slot++
	}
	return slot
}

// createSegment creates the free segment file of slot, prefilled if
// asked, its name durable.
func (j *Journal) createSegment(slot int) (*segment, error) {
	s, err := j.openSegment(slot, true)
	if err != nil {
		return nil, err
	}
	if err := j.initSegment(s); err != nil {
		err = fmt.Errorf("journal: create segment %s: %w", s.name, err)
		return nil, errors.Join(err, s.close(), j.fs.Remove(s.name))
	}
	return s, nil
}

func (j *Journal) initSegment(s *segment) error {
	buf := NewBuffer(0)[:BlockSize]
	segHeader{state: stateFree}.encode(buf)
	if _, err := s.w.WriteAt(buf, 0); err != nil {
		return err
	}
	if j.o.Prefill {
		zeros := NewBuffer(1 << 20)[:1<<20]
		clear(zeros)
		for off := int64(BlockSize); off < j.o.SegmentSize; off += int64(len(zeros)) {
			n := min(int64(len(zeros)), j.o.SegmentSize-off)
			if _, err := s.w.WriteAt(zeros[:n], off); err != nil {
				return err
			}
		}
	}
	if err := s.w.Sync(); err != nil {
		return err
	}
	return j.fs.SyncDir(j.dir)
}

// scan returns the valid records of active segment s, in order, within
// the size its header gives (a journal written with another segment size
// is read as it was written).
func (j *Journal) scan(s *segment) ([]Record, error) {
	var recs []Record
	buf := make([]byte, 1<<20)
	hdr := make([]byte, BlockSize)
	size := j.o.SegmentSize
	if s.hdr.blocks > 0 {
		size = int64(s.hdr.blocks) * BlockSize
	}
	for off := int64(BlockSize); off+BlockSize <= size; {
		n, err := s.r.ReadAt(hdr, off)
		if n < BlockSize {
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("journal: scan %s: %w", s.name, err)
			}
			break
		}
		h, err := decodeRecHeader(hdr, s.hdr.seq, s.hdr.salt, off, size-off)
		if err != nil {
			break
		}
		if h.kind == kindRecord {
			crc, whole, err := j.payloadCRC(s, off+BlockSize, h.size, buf)
			if err != nil {
				return nil, fmt.Errorf("journal: scan %s: %w", s.name, err)
			}
			if !whole || crc != h.crc {
				break
			}
			recs = append(recs, Record{Seq: s.hdr.seq, Off: off, Meta: slices.Clone(h.meta), Size: h.size, CRC: h.crc})
		}
		off += recordSize(h.size)
	}
	return recs, nil
}

// payloadCRC returns the CRC of the n bytes at off of s, and whether the
// file holds them all.
func (j *Journal) payloadCRC(s *segment, off, n int64, buf []byte) (crc uint64, whole bool, err error) {
	for n > 0 {
		m, err := s.r.ReadAt(buf[:min(int64(len(buf)), n)], off)
		crc = crcnvme.Update(crc, buf[:m])
		off, n = off+int64(m), n-int64(m)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return crc, n == 0, nil
			}
			return 0, false, err
		}
	}
	return crc, true, nil
}

// NewBuffer returns a buffer for Append of up to payload bytes: a block
// for the header, then the payload, rounded up to a block, aligned for
// direct I/O.
func NewBuffer(payload int) []byte {
	n := BlockSize + int(roundUp(int64(payload)))
	b := make([]byte, n+BlockSize)
	off := (BlockSize - int(uintptr(unsafe.Pointer(&b[0]))%BlockSize)) % BlockSize
	return b[off : off+n : off+n]
}

// Append writes a record of meta and the n payload bytes at
// buf[BlockSize:] (buf from NewBuffer; Append fills its first block and
// the padding after the payload), and returns once the record is durable.
// The caller then owns the record until it releases it (Release) or
// cancels it (Cancel). ctx bounds only the wait for a free segment: once
// written, a record is waited for to the end, so that what Append reports
// is what a scan after a crash finds.
func (j *Journal) Append(ctx context.Context, meta []byte, buf []byte, n int) (Record, error) {
	size := recordSize(int64(n))
	if size > j.o.SegmentSize-BlockSize {
		return Record{}, fmt.Errorf("%w: %d bytes", ErrTooBig, n)
	}
	if len(meta) > MaxMeta {
		return Record{}, fmt.Errorf("journal: append: meta of %d bytes, at most %d", len(meta), MaxMeta)
	}
	if int64(len(buf)) < size {
		return Record{}, fmt.Errorf("journal: append: buffer of %d bytes for a record of %d", len(buf), size)
	}
	clear(buf[BlockSize+n : size])
	crc := crcnvme.Checksum(buf[BlockSize : BlockSize+n])
	t, act, err := j.reserve(ctx, size, int64(n))
	if err != nil {
		return Record{}, err
	}
	s := t.seg
	if act != nil {
		j.writeActivation(act)
	}
	h := recHeader{kind: kindRecord, seq: s.hdr.seq, salt: s.hdr.salt, off: t.off, size: int64(n), crc: crc, meta: meta}
	h.encode(buf)
	_, werr := s.w.WriteAt(buf[:size], t.off)
	j.written(t, werr)
	if err := <-t.done; err != nil {
		j.release(s, int64(n))
		return Record{}, fmt.Errorf("journal: append: %w", err)
	}
	j.appends.Add(1)
	return Record{Seq: s.hdr.seq, Off: t.off, Meta: meta, Size: int64(n), CRC: crc}, nil
}

// reserve takes size bytes at the end of the active segment, switching to
// a free one (act: its activation header still to write) when it is
// full.
func (j *Journal) reserve(ctx context.Context, size, payload int64) (t, act *ticket, err error) {
	var deadline <-chan time.Time
	for {
		j.mu.Lock()
		if j.closed {
			j.mu.Unlock()
			return nil, nil, ErrClosed
		}
		if s := j.active; s != nil && s.broken == nil && s.tail+size <= j.o.SegmentSize {
			t = &ticket{seg: s, off: s.tail, end: s.tail + size, done: make(chan error, 1)}
			s.tail += size
			s.live++
			s.liveBytes += payload
			s.lastAppend = time.Now()
			j.inflight = append(j.inflight, t)
			j.mu.Unlock()
			return t, act, nil
		}
		if j.active != nil {
			j.seal(j.active)
		}
		if s := j.popFree(); s != nil {
			act = j.activate(s)
			if j.popFree() == nil {
				// Prepare the next one while this one fills.
				j.startGrow()
			}
			j.mu.Unlock()
			continue
		}
		if err := j.growErr; err != nil {
			j.growErr = nil // the next append tries again
			j.mu.Unlock()
			return nil, nil, fmt.Errorf("journal: append: %w", err)
		}
		j.startGrow()
		space := j.space
		j.mu.Unlock()
		if j.o.FullWait < 0 && !j.growing() {
			return nil, nil, ErrFull
		}
		if deadline == nil {
			j.waits.Add(1)
			waitStart := time.Now()
			defer func() { j.waitTime.Add(int64(time.Since(waitStart))) }()
			wait := j.o.FullWait
			if wait < 0 {
				wait = time.Minute // only for a segment being added
			}
			timer := time.NewTimer(wait)
			defer timer.Stop()
			deadline = timer.C
		}
		select {
		case <-space:
		case <-deadline:
			return nil, nil, ErrFull
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("journal: append: %w", ctx.Err())
		}
	}
}

// startGrow adds a segment file in the background if the journal may
// grow and none is being added; the caller holds mu.
func (j *Journal) startGrow() {
	if j.creating || len(j.segs) >= j.o.MaxSegments || j.closed {
		return
	}
	if j.o.MayGrow != nil && !j.o.MayGrow(j.o.SegmentSize) {
		return
	}
	j.creating = true
	slot := j.nextSlot()
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		j.grow(slot)
	}()
}

func (j *Journal) growing() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.creating
}

// grow adds the segment file of slot; the caller set j.creating.
func (j *Journal) grow(slot int) {
	s, err := j.createSegment(slot)
	j.mu.Lock()
	defer j.mu.Unlock()
	if err != nil {
		j.growFailing.Occurred(j.log, slog.LevelError, err, "journal: add a segment")
		j.growErr = err
	} else {
		j.segs = append(j.segs, s)
		j.growFailing.Clear(j.log, "journal: a segment was added after adding one failed")
	}
	j.creating = false
	j.signalSpace()
}

func (j *Journal) popFree() *segment {
	for _, s := range j.segs {
		if s.state == segFree {
			return s
		}
	}
	return nil
}

// activate makes free segment s the active one under a new generation;
// its header is written by the caller of reserve, as the first write of
// the new generation (a ticket, so no record after it is acknowledged
// before it is written).
func (j *Journal) activate(s *segment) *ticket {
	var salt [16]byte
	rand.Read(salt[:]) // never fails: crypto/rand crashes the program instead
	s.hdr = segHeader{state: stateActive, blocks: uint32(j.o.SegmentSize / BlockSize), seq: j.nextSeq, salt: salt}
	j.nextSeq++
	s.state, s.tail, s.live, s.liveBytes, s.broken = segActive, BlockSize, 0, 0, nil
	j.bySeq[s.hdr.seq] = s
	j.active = s
	t := &ticket{seg: s, off: 0, end: BlockSize, done: make(chan error, 1)}
	j.inflight = append(j.inflight, t)
	return t
}

func (j *Journal) writeActivation(t *ticket) {
	buf := NewBuffer(0)[:BlockSize]
	t.seg.hdr.encode(buf)
	_, err := t.seg.w.WriteAt(buf, 0)
	j.written(t, err)
	// Nobody waits for it: the records behind it are acknowledged only
	// once it is committed, and report its failure.
}

// seal stops appends to s; it is reclaimed once its records are released.
func (j *Journal) seal(s *segment) {
	if s.state != segActive {
		return
	}
	s.state = segSealed
	if j.active == s {
		j.active = nil
	}
	if s.live == 0 {
		j.wakeReclaimer()
	}
}

// written records the end of a ticket's write and hands every ticket
// written in order so far to the committer.
func (j *Journal) written(t *ticket, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	t.written, t.err = true, err
	i := 0
	for ; i < len(j.inflight) && j.inflight[i].written; i++ {
		u := j.inflight[i]
		if u.err != nil || u.seg.broken != nil {
			// Nothing after a failed write is acknowledged in its
			// segment: a scan would stop there.
			if u.seg.broken == nil {
				u.seg.broken = u.err
				j.sealedFailing++
				j.writeFailing.Occurred(j.log, slog.LevelError, u.err, "journal: write failed; the segment takes no more records", "segment", u.seg.name)
			}
			if u.err == nil {
				u.err = fmt.Errorf("journal: an earlier write in %s failed: %w", u.seg.name, u.seg.broken)
			}
			if j.active == u.seg {
				j.seal(u.seg)
			}
		} else if u.off > 0 && j.sealedFailing > 0 {
			// A record's write (a segment's header, at 0, is written
			// over bytes the segment holds already, and succeeds on a
			// full disk).
			j.writeFailing.Clear(j.log, "journal: a write succeeded after writes failed", "segments_sealed", j.sealedFailing)
			j.sealedFailing = 0
		}
		j.ready = append(j.ready, u)
	}
	j.inflight = j.inflight[i:]
	if i > 0 {
		select {
		case j.commitWake <- struct{}{}:
		default:
		}
	}
}

// committer makes the written records durable, one fdatasync per segment
// per group, and answers their Appends.
func (j *Journal) committer() {
	defer j.wg.Done()
	for {
		j.mu.Lock()
		batch := j.ready
		j.ready = nil
		j.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-j.commitWake:
				continue
			case <-j.stop:
				return
			}
		}
		// A commit that failed earlier in a segment leaves what reached
		// its disk unknown, and a scan may stop before these records.
		j.mu.Lock()
		for _, t := range batch {
			if t.err == nil && t.seg.broken != nil {
				t.err = fmt.Errorf("journal: an earlier write or commit in %s failed: %w", t.seg.name, t.seg.broken)
			}
		}
		j.mu.Unlock()
		errs := map[*segment]error{}
		for _, t := range batch {
			if _, done := errs[t.seg]; !done && t.err == nil {
				errs[t.seg] = t.seg.w.Sync()
				j.commits.Add(1)
			}
		}
		j.mu.Lock()
		for s, err := range errs {
			if err != nil && s.broken == nil {
				// After a failed fdatasync what reached the disk is
				// unknown: nothing in s is acknowledged from here on.
				s.broken = err
				j.log.Error("journal: commit failed; the segment takes no more records", "segment", s.name, "err", err)
				if j.active == s {
					j.seal(s)
				}
			}
		}
		j.mu.Unlock()
		for _, t := range batch {
			if t.err == nil {
				t.err = errs[t.seg]
			}
			t.done <- t.err
		}
	}
}

// Release ends the journal's duty for r: its consumer's work (a file
// written, an upload) will be made durable by the next Checkpoint before
// r's segment is reused.
func (j *Journal) Release(r Record) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if s, ok := j.bySeq[r.Seq]; ok {
		j.releaseLocked(s, r.Size)
	}
}

func (j *Journal) release(s *segment, size int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.releaseLocked(s, size)
}

func (j *Journal) releaseLocked(s *segment, size int64) {
	s.live--
	s.liveBytes -= size
	if s.live == 0 && s.state == segSealed {
		j.wakeReclaimer()
	}
}

// Cancel marks r so that no scan returns it again, durably, and releases
// it: for a record whose consumer failed and whose appender was told so.
func (j *Journal) Cancel(r Record) error {
	j.mu.Lock()
	s, ok := j.bySeq[r.Seq]
	j.mu.Unlock()
	if !ok {
		return fmt.Errorf("journal: cancel: no segment of generation %d", r.Seq)
	}
	buf := NewBuffer(0)[:BlockSize]
	recHeader{kind: kindCancelled, seq: r.Seq, salt: s.hdr.salt, off: r.Off, size: r.Size, crc: r.CRC, meta: r.Meta}.encode(buf)
	_, err := s.w.WriteAt(buf, r.Off)
	if err == nil {
		err = s.w.Sync()
	}
	if err != nil {
		return fmt.Errorf("journal: cancel: %w", err)
	}
	j.Release(r)
	return nil
}

// Payload returns a reader of r's payload that fails with ErrCorrupt at
// the end if the bytes no longer match the record's checksum. r must not
// be released while it is read.
func (j *Journal) Payload(r Record) (io.Reader, error) {
	j.mu.Lock()
	s, ok := j.bySeq[r.Seq]
	j.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("journal: read: no segment of generation %d: %w", r.Seq, fs.ErrNotExist)
	}
	return Verify(io.NewSectionReader(s.r, r.Off+BlockSize, r.Size), r.CRC, fmt.Sprintf("segment generation %d, offset %d", r.Seq, r.Off)), nil
}

// Verify returns a reader of r that fails with ErrCorrupt, naming what,
// at the end if the bytes read do not have the CRC-64/NVME want.
func Verify(r io.Reader, want uint64, what string) io.Reader {
	return &verifier{r: r, want: want, what: what}
}

type verifier struct {
	r    io.Reader
	crc  uint64
	want uint64
	what string
}

func (v *verifier) Read(b []byte) (int, error) {
	n, err := v.r.Read(b)
	v.crc = crcnvme.Update(v.crc, b[:n])
	if errors.Is(err, io.EOF) && v.crc != v.want {
		return n, fmt.Errorf("%w (%s)", ErrCorrupt, v.what)
	}
	return n, err
}

// Stats describes the journal's records and space, and counts what it did.
type Stats struct {
	Segments, FreeSegments int
	LiveRecords            int   // appended (or recovered) and not yet released
	LiveBytes              int64 // their payload bytes

	Appends     int64         // records appended
	Commits     int64         // fdatasyncs that acknowledged them
	Waits       int64         // appends that waited for a segment to be reclaimed
	WaitTime    time.Duration // how long they waited in all
	Checkpoints int64         // Options.Checkpoint calls
	// CheckpointTime is the time spent in them in all.
	CheckpointTime time.Duration
}

// Stats returns the journal's current figures.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := Stats{
		Segments: len(j.segs), Appends: j.appends.Load(), Commits: j.commits.Load(), Waits: j.waits.Load(),
		WaitTime: time.Duration(j.waitTime.Load()), Checkpoints: j.checkpoints.Load(), CheckpointTime: time.Duration(j.checkpointTime.Load()),
	}
	for _, s := range j.segs {
		if s.state == segFree {
			st.FreeSegments++
		}
		st.LiveRecords += s.live
		st.LiveBytes += s.liveBytes
	}
	return st
}

func (j *Journal) wakeReclaimer() {
	select {
	case j.reclaimWake <- struct{}{}:
	default:
	}
}

// signalSpace wakes appends waiting for a segment; the caller holds mu.
func (j *Journal) signalSpace() {
	close(j.space)
	j.space = make(chan struct{})
}

// reclaimer checkpoints and frees the sealed segments whose records were
// all released, and seals an idle active one.
func (j *Journal) reclaimer() {
	defer j.wg.Done()
	var tick <-chan time.Time
	if j.o.IdleSeal > 0 {
		t := time.NewTicker(j.o.IdleSeal / 2)
		defer t.Stop()
		tick = t.C
	}
	// After a failed checkpoint the next reclaim waits for its backoff
	// (retry.Backoff): the idle seal's tick and the releases' wakes come
	// far more often, and reclaimed at each (the tick's every second), a
	// checkpoint failing for as long as the disk did was tried and logged
	// every second, whatever retry_in said. After a final failure
	// (retry.Final) nothing is reclaimed any more.
	b := retry.Backoff{Log: j.log, Level: slog.LevelError,
		Msg:      "journal: checkpoint failed; segments stay in use",
		FinalMsg: "journal: checkpoint failed for good; segments stay in use until a restart"}
	defer b.Stop()
	for {
		select {
		case <-j.stop:
			return
		case <-j.reclaimWake:
		case <-tick:
			j.sealIdle()
		case <-b.Again():
		}
		if b.Ready() {
			b.Done(j.reclaim())
		}
	}
}

// sealIdle seals the active segment when all its records were released
// and it had no append for IdleSeal.
func (j *Journal) sealIdle() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if s := j.active; s != nil && s.live == 0 && s.tail > BlockSize && time.Since(s.lastAppend) >= j.o.IdleSeal {
		j.seal(s)
	}
}

// reclaim frees the sealed segments with no live record, after a
// checkpoint.
func (j *Journal) reclaim() error {
	j.mu.Lock()
	var rs []*segment
	for _, s := range j.segs {
		if s.state == segSealed && s.live == 0 {
			s.state = segReclaiming
			rs = append(rs, s)
		}
	}
	j.mu.Unlock()
	if len(rs) == 0 {
		j.shrink()
		return nil
	}
	if j.o.Checkpoint != nil {
		start := time.Now()
		err := j.o.Checkpoint()
		j.checkpoints.Add(1)
		j.checkpointTime.Add(int64(time.Since(start)))
		if err != nil {
			j.mu.Lock()
			for _, s := range rs {
				s.state = segSealed
			}
			j.mu.Unlock()
			return err
		}
	}
	buf := NewBuffer(0)[:BlockSize]
	for _, s := range rs {
		// A free header spares the next Open a scan; without it the
		// segment's records would be found again, which consumers take
		// as a repeat (a file rewritten with the same bytes, an upload
		// found already done).
		segHeader{state: stateFree, seq: s.hdr.seq}.encode(buf)
		_, err := s.w.WriteAt(buf, 0)
		if err == nil {
			err = s.w.Sync()
		}
		if err != nil {
			j.log.Warn("journal: mark a reclaimed segment free", "segment", s.name, "err", err)
		}
	}
	j.mu.Lock()
	for _, s := range rs {
		delete(j.bySeq, s.hdr.seq)
		s.state = segFree
	}
	j.signalSpace()
	j.mu.Unlock()
	j.shrink()
	return nil
}

// shrink removes free segment files beyond those the journal keeps
// (Options.Shrink): Segments, and one free beyond those in use. A free
// segment holds nothing owed: its records were all released and
// checkpointed before it was freed. A crash before its removal is durable
// leaves the file as it was, free (or, where its free header was not
// written, with released records that the next Open hands back again, as
// for any segment), and the next Open removes it again.
func (j *Journal) shrink() {
	if !j.o.Shrink || j.o.ReadOnly {
		return
	}
	j.mu.Lock()
	if j.creating {
		// A segment is being added for appends that found none free.
		j.mu.Unlock()
		return
	}
	inUse := 0
	var free []*segment
	for _, s := range j.segs {
		if s.state == segFree {
			free = append(free, s)
		} else {
			inUse++
		}
	}
	keep := max(j.o.Segments, inUse+1)
	// The highest numbers go first.
	slices.SortFunc(free, func(a, b *segment) int { return b.slot - a.slot })
	var rm []*segment
	for _, s := range free {
		if len(j.segs)-len(rm) <= keep {
			break
		}
		rm = append(rm, s)
		j.removing[s.slot] = true
	}
	if len(rm) == 0 {
		j.mu.Unlock()
		return
	}
	j.segs = slices.DeleteFunc(j.segs, func(s *segment) bool { return slices.Contains(rm, s) })
	left := len(j.segs)
	j.mu.Unlock()
	removed := 0
	for _, s := range rm {
		// Closed first: on NFS, removing an open file renames it
		// (.nfsXXXX) until its last close.
		err := s.close()
		if err == nil {
			err = j.fs.Remove(s.name)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			// Its number stays taken until the next Open, which
			// finds the file free and removes it then.
			j.log.Warn("journal: remove a free segment file", "segment", s.name, "err", err)
			continue
		}
		removed++
		j.mu.Lock()
		delete(j.removing, s.slot)
		j.mu.Unlock()
	}
	if removed == 0 {
		return
	}
	if err := j.fs.SyncDir(j.dir); err != nil {
		// The files are gone; a crash may bring their names back,
		// free, and the next Open removes them again.
		j.log.Warn("journal: sync the directory after removing free segments", "err", err)
	}
	j.log.Info("journal: removed free segment files the backlog had added", "removed", removed, "segments", left)
}

// ErrCloseCutShort is Shutdown's error when its ctx ended first.
var ErrCloseCutShort = errors.New("journal: close cut short")

// Shutdown is Close within ctx: when ctx ends first, it returns at once
// with ErrCloseCutShort, saying how many records are held and how many
// segments are not yet checkpointed and freed, and leaves the close going on behind it, for the process's exit to end.
// The journal is crash-safe, so that exit loses nothing it acknowledged:
// the next Open finds every record the checkpoint had not made needless,
// as after a crash.
func (j *Journal) Shutdown(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- j.Close() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		st := j.Stats()
		return fmt.Errorf("%w: %d records held and %d segments not yet freed, which the next Open reads again: %w",
			ErrCloseCutShort, st.LiveRecords, st.Segments-st.FreeSegments, context.Cause(ctx))
	}
}

// Close stops the journal. Appends still waiting fail; records not
// released stay in the journal for the next Open. When every record was
// released, the segments are checkpointed and freed first, so that the
// next Open has nothing to replay. It has no time limit (a checkpoint
// waits on the disk): Shutdown bounds it.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.o.ReadOnly {
		defer j.mu.Unlock()
		err := j.closeFiles()
		j.segs = nil
		return err
	}
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	if j.active != nil {
		j.seal(j.active)
	}
	j.mu.Unlock()
	// Let the writes in flight finish and be committed.
	for {
		j.mu.Lock()
		busy := len(j.inflight) > 0 || len(j.ready) > 0
		j.mu.Unlock()
		if !busy {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(j.stop)
	j.wg.Wait()
	err := j.reclaim()
	j.mu.Lock()
	defer j.mu.Unlock()
	return errors.Join(err, j.closeFiles())
}

func (j *Journal) closeFiles() error {
	var errs []error
	for _, s := range j.segs {
		errs = append(errs, s.close())
	}
	return errors.Join(errs...)
}

// close closes the segment's files; every write that mattered was synced
// before.
func (s *segment) close() error {
	var errs []error
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	return errors.Join(errs...)
}
