package vfs

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Op is a kind of file-system operation, as Instrumented counts and delays
// them. On NFS each is one or more round trips to the server.
type Op int

// The operations, named as in ParseLatencies.
const (
	OpOpen       Op = iota // open an existing file
	OpCreate               // open with O_CREATE (a new name on the server)
	OpRead                 // one ReadAt
	OpWrite                // one WriteAt
	OpSync                 // fdatasync owing a commit (after a write NFS sends unstable)
	OpRename               // rename, with or without replacing
	OpRemove               // unlink
	OpMkdir                // mkdir
	OpReadDir              // list a directory
	OpStat                 // stat a name or an open file
	OpSyncDir              // fsync of a directory
	OpSyncFS               // syncfs
	OpLock                 // take a lock
	OpClose                // close a file
	OpTruncate             // set a file's size
	OpSyncStable           // fdatasync with nothing to commit: only stable writes since the last one
	OpStatFS               // measure the free space (statfs)
	NumOps
)

var opNames = [NumOps]string{"open", "create", "read", "write", "sync", "rename", "remove", "mkdir", "readdir", "stat", "syncdir", "syncfs", "lock", "close", "truncate", "syncstable", "statfs"}

// NFSWriteSize is the most one NFS WRITE carries: wsize=1048576, the EFS
// mount helper's option ("Mount settings used by EFS mount helper",
// https://docs.aws.amazon.com/efs/latest/ug/mount-helper-setting.html).
const NFSWriteSize = 1 << 20

func (o Op) String() string {
	if o < 0 || o >= NumOps {
		return fmt.Sprintf("op%d", int(o))
	}
	return opNames[o]
}

// Latencies holds, for each operation, how long Instrumented holds it
// before doing it.
type Latencies [NumOps]time.Duration

// EFS is Amazon EFS's published per-operation latency for a Regional file
// system in General Purpose mode ("Amazon EFS performance specifications",
// https://docs.aws.amazon.com/efs/latest/ug/performance.html): read
// operations ~1 ms, write operations
// ~2.7 ms. Every operation that changes the file system (a data write, a
// commit, and each metadata change: create, rename, unlink, mkdir,
// truncate, lock)
// is counted as a write operation; lookups, reads, listings and statfs
// (an NFS FSSTAT) as read operations. A directory fsync costs nothing
// extra on NFS (the server commits metadata changes before it answers
// them), nor does close of a
// file written directly. Nor does an fdatasync after only direct writes
// of at most NFSWriteSize (OpSyncStable): Linux's NFS client sends a
// direct write that fits in one WRITE as FILE_SYNC, which the server
// answers once the data is stable (fs/nfs/direct.c passes
// FLUSH_COND_STABLE, which fs/nfs/pagelist.c keeps when no other RPC
// follows and nothing waits for a commit), so the fdatasync has no COMMIT
// to send; EFS counts a synchronous (O_DIRECT) write as durably stored
// across Availability Zones ("Data consistency in Amazon EFS",
// https://docs.aws.amazon.com/efs/latest/ug/features.html). Such a write
// is held for the published write latency like any other.
var EFS = Latencies{
	OpOpen: time.Millisecond, OpRead: time.Millisecond, OpReadDir: time.Millisecond, OpStat: time.Millisecond,
	OpStatFS: time.Millisecond,
	OpCreate: 2700 * time.Microsecond, OpWrite: 2700 * time.Microsecond, OpSync: 2700 * time.Microsecond,
	OpRename: 2700 * time.Microsecond, OpRemove: 2700 * time.Microsecond, OpMkdir: 2700 * time.Microsecond,
	OpLock: 2700 * time.Microsecond, OpTruncate: 2700 * time.Microsecond,
}

// ParseLatencies reads "efs" (the EFS preset), "" or "none" (no latency),
// or a comma-separated list of op=duration ("write=2.7ms,sync=2.7ms"),
// optionally starting with "efs," to change the preset's entries.
func ParseLatencies(s string) (Latencies, error) {
	var l Latencies
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return l, nil
	}
	parts := strings.Split(s, ",")
	if strings.TrimSpace(parts[0]) == "efs" {
		l, parts = EFS, parts[1:]
	}
	for _, p := range parts {
		name, val, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok {
			return l, fmt.Errorf("vfs: latency %q: want op=duration (ops: %s)", p, strings.Join(opNames[:], ", "))
		}
		op := Op(-1)
		for i, n := range opNames {
			if n == name {
				op = Op(i)
			}
		}
		if op < 0 {
			return l, fmt.Errorf("vfs: latency %q: unknown operation %q (ops: %s)", p, name, strings.Join(opNames[:], ", "))
		}
		d, err := time.ParseDuration(val)
		if err != nil || d < 0 {
			return l, fmt.Errorf("vfs: latency %q: want a duration such as 2.7ms", p)
		}
		l[op] = d
	}
	return l, nil
}

// Instrumented wraps a file system: it counts every operation by kind and
// holds each for its configured latency before doing it.
type Instrumented struct {
	fs     FS
	lat    Latencies
	counts [NumOps]atomic.Int64
}

var _ FS = (*Instrumented)(nil)

// Instrument wraps fsys.
func Instrument(fsys FS, lat Latencies) *Instrumented { return &Instrumented{fs: fsys, lat: lat} }

// Count returns how many operations of kind op were done.
func (i *Instrumented) Count(op Op) int64 { return i.counts[op].Load() }

// Latencies returns the configured latencies.
func (i *Instrumented) Latencies() Latencies { return i.lat }

func (i *Instrumented) op(o Op) {
	i.counts[o].Add(1)
	if d := i.lat[o]; d > 0 {
		time.Sleep(d)
	}
}

func (i *Instrumented) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	if flag&os.O_CREATE != 0 {
		i.op(OpCreate)
	} else {
		i.op(OpOpen)
	}
	f, err := i.fs.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &instrumentedFile{File: f, i: i, direct: flag&Direct != 0}, nil
}

func (i *Instrumented) Rename(oldpath, newpath string) error {
	i.op(OpRename)
	return i.fs.Rename(oldpath, newpath)
}

func (i *Instrumented) RenameNoReplace(oldpath, newpath string) (bool, error) {
	i.op(OpRename)
	return i.fs.RenameNoReplace(oldpath, newpath)
}

func (i *Instrumented) Remove(name string) error { i.op(OpRemove); return i.fs.Remove(name) }

func (i *Instrumented) Mkdir(name string, perm fs.FileMode) error {
	i.op(OpMkdir)
	return i.fs.Mkdir(name, perm)
}

func (i *Instrumented) ReadDir(name string) ([]fs.DirEntry, error) {
	i.op(OpReadDir)
	return i.fs.ReadDir(name)
}

func (i *Instrumented) Stat(name string) (fs.FileInfo, error) { i.op(OpStat); return i.fs.Stat(name) }
func (i *Instrumented) SyncDir(dir string) error              { i.op(OpSyncDir); return i.fs.SyncDir(dir) }
func (i *Instrumented) SyncFS(name string) error              { i.op(OpSyncFS); return i.fs.SyncFS(name) }
func (i *Instrumented) Lock(name string) (io.Closer, error)   { i.op(OpLock); return i.fs.Lock(name) }

func (i *Instrumented) FreeBytes(name string) (uint64, error) {
	i.op(OpStatFS)
	return i.fs.FreeBytes(name)
}

type instrumentedFile struct {
	File
	i      *Instrumented
	direct bool
	// owed is set by a write NFS would send unstable (through the page
	// cache, or direct but larger than one WRITE), which the next
	// fdatasync has to commit.
	owed atomic.Bool
}

func (f *instrumentedFile) ReadAt(p []byte, off int64) (int, error) {
	f.i.op(OpRead)
	return f.File.ReadAt(p, off)
}

func (f *instrumentedFile) WriteAt(p []byte, off int64) (int, error) {
	f.i.op(OpWrite)
	n, err := f.File.WriteAt(p, off)
	if !f.direct || len(p) > NFSWriteSize {
		f.owed.Store(true)
	}
	return n, err
}

func (f *instrumentedFile) Sync() error {
	if f.owed.Swap(false) {
		f.i.op(OpSync)
	} else {
		f.i.op(OpSyncStable)
	}
	return f.File.Sync()
}

func (f *instrumentedFile) Stat() (fs.FileInfo, error) { f.i.op(OpStat); return f.File.Stat() }
func (f *instrumentedFile) Close() error               { f.i.op(OpClose); return f.File.Close() }

func (f *instrumentedFile) Truncate(size int64) error {
	f.i.op(OpTruncate)
	return f.File.Truncate(size)
}
