//go:build linux

// Command bench-diskfloor is `make bench`'s disk floor: it makes every file
// of a corpus durable the way the file store does before C-STORE success,
// from memory, as bare system calls, over N parallel workers, and reports
// in the load generator's JSON. No network, no DICOM, no sender sharing the
// cores: no receiver that makes objects durable this way can be faster on
// the same disk.
//
// An object under 1 MiB (the store's ring) takes the journal's way: one
// direct write of a block-aligned record into a prefilled journal file, one
// fdatasync shared by the writes that finished meanwhile (group commit),
// then the object's file written through the page cache and renamed into
// place unsynced; a syncfs every 16 MiB on a goroutine of its own stands for
// the checkpoints. A larger object takes the file recipe: a new temporary
// file written with direct I/O, fsynced, renamed into place without
// replacing, both directories fsynced (through the store's own
// filestore.SyncDir).
//
//	bench-diskfloor -store DIR -n 4 -label "diskfloor MR x4" CORPUS
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/dicom-ingest/dicom-ingest/shared/cli"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
)

// report has the fields of the load generator's JSON report that
// test/bench/report.py reads.
type report struct {
	Label        string  `json:"label,omitempty"`
	Associations int     `json:"associations"`
	Instances    int     `json:"instances"`
	Failed       int     `json:"failed"`
	Bytes        int64   `json:"bytes"`
	ElapsedNs    int64   `json:"elapsedNs"`
	InstancesPS  float64 `json:"instancesPerSecond"`
	MBPS         float64 `json:"megabytesPerSecond"`
	P50ms        float64 `json:"p50ms"`
	P99ms        float64 `json:"p99ms"`
}

const (
	align    = 4096    // direct I/O alignment, as the file store uses
	maxWrite = 8 << 20 // largest single write
	// journaled is the largest object the store journals (below its
	// ring), checkpointEvery the journal's segment size.
	journaled       = 1<<20 - 1
	checkpointEvery = 16 << 20
)

const command = "bench-diskfloor"

func main() { cli.Main(command, runCommand) }

// runCommand is main without the process: flags in, the report out.
func runCommand(args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	cli.Synopsis(fs, command+" -store DIR [-n N] [-label L] CORPUS")
	store := fs.String("store", "", "directory to write into (created; must be new or empty)")
	workers := fs.Int("n", 1, "parallel workers, as the load generator's associations")
	label := fs.String("label", "", "label for the report")
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	switch {
	case *store == "":
		return cli.UsageError(fs, errors.New("-store is required"))
	case fs.NArg() != 1:
		return cli.UsageError(fs, fmt.Errorf("want one CORPUS directory, got %d arguments", fs.NArg()))
	case *workers < 1:
		return cli.UsageError(fs, fmt.Errorf("-n: %d is not at least 1", *workers))
	}
	rep, err := run(*store, fs.Arg(0), *workers)
	if err != nil {
		return err
	}
	rep.Label = *label
	if err := json.NewEncoder(stdout).Encode(rep); err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	return nil
}

// run loads the corpus into aligned memory, then times its durable writes.
func run(store, corpus string, workers int) (report, error) {
	bodies, err := load(corpus)
	if err != nil {
		return report{}, err
	}
	tmp, dst := filepath.Join(store, ".tmp"), filepath.Join(store, "objects")
	for _, d := range []string{tmp, dst} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return report{}, err
		}
	}
	direct, err := takesDirect(tmp)
	if err != nil {
		return report{}, err
	}
	var journalBytes int64
	for _, b := range bodies {
		if len(b) <= journaled {
			journalBytes += align + roundUp(int64(len(b)))
		}
	}
	w := &writer{tmp: tmp, dst: dst, direct: direct, store: store}
	if journalBytes > 0 {
		if err := w.openJournal(filepath.Join(store, "journal"), journalBytes); err != nil {
			return report{}, err
		}
	}
	lat := make([]time.Duration, len(bodies))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for g := range workers {
		wg.Go(func() {
			for i := g; i < len(bodies); i += workers {
				t := time.Now()
				if err := w.put(strconv.Itoa(i), bodies[i]); err != nil {
					errs[g] = err
					return
				}
				lat[i] = time.Since(t)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if w.journal != nil {
		// The last checkpoint comes after the last acknowledgement, as
		// in the store.
		errs = append(errs, w.closeJournal())
	}
	if err := errors.Join(errs...); err != nil {
		return report{}, err
	}
	var total int64
	for _, b := range bodies {
		total += int64(len(b))
	}
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	return report{
		Associations: workers, Instances: len(bodies), Bytes: total, ElapsedNs: elapsed.Nanoseconds(),
		InstancesPS: float64(len(bodies)) / elapsed.Seconds(), MBPS: float64(total) / 1e6 / elapsed.Seconds(),
		P50ms: ms(0.50), P99ms: ms(0.99),
	}, nil
}

// load reads every regular file under dir into a buffer aligned for direct
// I/O.
func load(dir string) ([][]byte, error) {
	var out [][]byte
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		a := aligned(len(b))
		copy(a, b)
		out = append(out, a)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load corpus: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("load corpus: no files under %s", dir)
	}
	return out, nil
}

func aligned(n int) []byte {
	b := make([]byte, n+align)
	off := (align - int(uintptr(unsafe.Pointer(&b[0]))%align)) % align
	return b[off : off+n : off+n]
}

type writer struct {
	tmp, dst, store string
	direct          bool

	journal *os.File
	next    atomic.Int64 // the journal's next free offset
	mu      sync.Mutex
	cond    *sync.Cond
	// started and done count the journal's fdatasyncs; syncing is set
	// while one runs.
	started, done int64
	syncing       bool
	syncErr       error
	// sinceCheckpoint counts bytes appended since the last syncfs.
	sinceCheckpoint atomic.Int64
	checkpoints     chan struct{}
	checkpointed    chan error
}

func roundUp(n int64) int64 { return (n + align - 1) &^ (align - 1) }

// openJournal creates the journal file, prefilled with size bytes of
// zeros, as the store's segments are.
func (w *writer) openJournal(name string, size int64) error {
	flags := os.O_CREATE | os.O_EXCL | os.O_RDWR
	if w.direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(name, flags, 0o600)
	if err != nil {
		return fmt.Errorf("create journal: %w", err)
	}
	zeros := aligned(1 << 20)
	for off := int64(0); off < size; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), roundUp(size-off))], off); err != nil {
			return errors.Join(fmt.Errorf("prefill journal: %w", err), f.Close())
		}
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return errors.Join(fmt.Errorf("prefill journal: %w", err), f.Close())
	}
	w.journal, w.cond = f, sync.NewCond(&w.mu)
	w.checkpoints, w.checkpointed = make(chan struct{}, 1), make(chan error, 1)
	go w.checkpointer()
	return nil
}

// checkpointer runs a syncfs each time 16 MiB more were appended.
func (w *writer) checkpointer() {
	var err error
	for range w.checkpoints {
		if e := syncfs(w.store); e != nil && err == nil {
			err = e
		}
	}
	w.checkpointed <- err
}

func (w *writer) closeJournal() error {
	close(w.checkpoints)
	err := <-w.checkpointed
	return errors.Join(err, w.journal.Close())
}

func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = unix.Syncfs(int(f.Fd()))
	return errors.Join(err, f.Close())
}

// put makes body durable under name, journaled if it fits.
func (w *writer) put(name string, body []byte) error {
	if w.journal != nil && len(body) <= journaled {
		return w.putJournaled(name, body)
	}
	return w.putFile(name, body)
}

// putJournaled appends body as a journal record (a header block and the
// payload padded to a block, one write), waits for an fdatasync that
// started after the write, then writes and renames the object's file
// unsynced.
func (w *writer) putJournaled(name string, body []byte) error {
	n := align + roundUp(int64(len(body)))
	rec := aligned(int(n))
	copy(rec[align:], body)
	off := w.next.Add(n) - n
	if _, err := w.journal.WriteAt(rec, off); err != nil {
		return fmt.Errorf("append to the journal: %w", err)
	}
	if err := w.commit(); err != nil {
		return err
	}
	if w.sinceCheckpoint.Add(n) >= checkpointEvery {
		w.sinceCheckpoint.Store(0)
		select {
		case w.checkpoints <- struct{}{}:
		default:
		}
	}
	tmp := filepath.Join(w.tmp, name)
	if err := os.WriteFile(tmp, body, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(w.dst, name)); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return nil
}

// commit returns once an fdatasync of the journal that started after the
// caller's write is done: the first waiter runs it, the others share it.
func (w *writer) commit() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	target := w.started + 1
	for w.done < target {
		if w.syncing {
			w.cond.Wait()
			continue
		}
		w.syncing = true
		w.started++
		round := w.started
		w.mu.Unlock()
		err := unix.Fdatasync(int(w.journal.Fd()))
		w.mu.Lock()
		w.syncing, w.done = false, round
		if err != nil {
			w.syncErr = err
		}
		w.cond.Broadcast()
	}
	if w.syncErr != nil {
		return fmt.Errorf("commit the journal: %w", w.syncErr)
	}
	return nil
}

// putFile makes body durable under name: whole blocks written direct, the
// last partial block through the page cache, fsync, rename without
// replacing, fsync of both directories.
func (w *writer) putFile(name string, body []byte) error {
	tmp := filepath.Join(w.tmp, name)
	flags := unix.O_CREAT | unix.O_EXCL | unix.O_WRONLY | unix.O_CLOEXEC
	if w.direct {
		flags |= unix.O_DIRECT
	}
	fd, err := unix.Open(tmp, flags, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	werr := writeAll(fd, body, w.direct)
	if werr == nil {
		werr = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("write %s: %w", tmp, werr)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, filepath.Join(w.dst, name), unix.RENAME_NOREPLACE); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	for _, d := range []string{w.dst, w.tmp} {
		if err := filestore.SyncDir(d); err != nil {
			return fmt.Errorf("fsync %s: %w", d, err)
		}
	}
	return nil
}

// takesDirect reports whether dir's filesystem takes direct I/O (the file
// store writes through the page cache where it does not, and so does the
// floor then).
func takesDirect(dir string) (bool, error) {
	name := filepath.Join(dir, "probe")
	fd, err := unix.Open(name, unix.O_CREAT|unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EINVAL) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("probe direct I/O: %w", err)
	}
	_, werr := unix.Pwrite(fd, aligned(align), 0)
	if err := unix.Close(fd); err != nil {
		return false, fmt.Errorf("probe direct I/O: %w", err)
	}
	if err := os.Remove(name); err != nil {
		return false, fmt.Errorf("probe direct I/O: %w", err)
	}
	return werr == nil, nil
}

func writeAll(fd int, body []byte, direct bool) error {
	whole := len(body)
	if direct {
		whole &^= align - 1
	}
	for off := 0; off < whole; {
		n, err := unix.Pwrite(fd, body[off:min(whole, off+maxWrite)], int64(off))
		if err != nil {
			return err
		}
		off += n
	}
	if whole == len(body) {
		return nil
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_DIRECT)
	}
	if err != nil {
		return fmt.Errorf("leave direct I/O: %w", err)
	}
	_, err = unix.Pwrite(fd, body[whole:], int64(whole))
	return err
}
