// Package vfstest provides Mem, an in-memory vfs.FS that simulates power
// loss: it keeps, for every file and directory, what was made durable
// (Sync, SyncDir, SyncFS) apart from what was only written, can cut the
// power after any number of operations, and turns its state into what a
// disk could hold after the cut. Crash tests run a store on it, cut the
// power at every operation in turn, and check what a new store finds.
package vfstest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
)

// ErrPowerCut is returned by every operation once the power is cut.
var ErrPowerCut = errors.New("vfstest: power cut")

// blockSize is the unit a write can be torn in.
const blockSize = 4096

// Mem is an in-memory file system with power loss. Paths are slash
// separated and absolute ("/store/a"); the root always exists.
type Mem struct {
	mu     sync.Mutex
	nodes  map[uint64]*inode
	next   uint64
	ops    int // operations done
	cutAt  int // the operation that fails first; <0: never
	cut    bool
	locks  map[uint64]bool
	faults map[string]error // an op name's injected error (see Fail)
	once   map[string]error // an op name's next error (see FailOnce)
	// capacity bounds the bytes the files it names may hold (see
	// SetCapacity); <0: none, and the free space is not measured.
	capacity int64
}

type inode struct {
	dir bool
	// files
	data, durable []byte
	dirty         map[int64]bool // blocks written since the last sync
	// wbErr is a write-back failure not yet reported to a sync of the
	// file (see FailOnce).
	wbErr error
	// directories
	entries, durableEntries map[string]uint64
}

const rootIno = 1

// sync makes a file's current content durable, copying only the blocks
// written since the last sync.
func (ino *inode) sync() {
	if len(ino.durable) > len(ino.data) {
		ino.durable = ino.durable[:len(ino.data)]
	} else if len(ino.durable) < len(ino.data) {
		ino.durable = append(ino.durable, make([]byte, len(ino.data)-len(ino.durable))...)
	}
	for b := range ino.dirty {
		lo := b * blockSize
		if lo < int64(len(ino.data)) {
			hi := min(lo+blockSize, int64(len(ino.data)))
			copy(ino.durable[lo:hi], ino.data[lo:hi])
		}
	}
	clear(ino.dirty)
}

// NewMem returns an empty file system.
func NewMem() *Mem {
	m := &Mem{nodes: map[uint64]*inode{}, next: rootIno + 1, cutAt: -1, locks: map[uint64]bool{}, faults: map[string]error{}, once: map[string]error{}, capacity: -1}
	m.nodes[rootIno] = newDir()
	return m
}

func newDir() *inode {
	return &inode{dir: true, entries: map[string]uint64{}, durableEntries: map[string]uint64{}}
}

var _ vfs.FS = (*Mem)(nil)

// CutAfter cuts the power after n more operations: the n+1th and every
// later one fail with ErrPowerCut. A negative n never cuts.
func (m *Mem) CutAfter(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n < 0 {
		m.cutAt = -1
		return
	}
	m.cutAt = m.ops + n
}

// Ops returns how many operations were done.
func (m *Mem) Ops() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ops
}

// IsCut reports whether the power is cut.
func (m *Mem) IsCut() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cut
}

// Fail makes every later operation named op ("write", "sync", "rename",
// ... as vfs.Op names them) fail with err; a nil err stops it.
func (m *Mem) Fail(op vfs.Op, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		delete(m.faults, op.String())
		return
	}
	m.faults[op.String()] = err
}

// FailOnce makes the next operation named op fail with err. A sync or a
// syncfs that fails so does what Linux does when a write-back fails: the
// blocks it was to write are marked clean without reaching the disk, and
// a later sync or syncfs succeeds without them unless they are written
// again ("fsyncgate"); the first sync of each such file after a failed
// syncfs reports err (Linux reports a write-back error once to each open
// file).
func (m *Mem) FailOnce(op vfs.Op, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.once[op.String()] = err
}

// failedOnce reports whether err is FailOnce's.
func (*Mem) failedOnce(err error) bool {
	var f onceErr
	return errors.As(err, &f)
}

type onceErr struct{ err error }

func (e onceErr) Error() string { return e.err.Error() }
func (e onceErr) Unwrap() error { return e.err }

// dropDirty marks ino's dirty blocks clean without making them durable,
// as a failed write-back does.
func (ino *inode) dropDirty(err error) {
	if len(ino.dirty) > 0 {
		clear(ino.dirty)
		ino.wbErr = err
	}
}

// SetCapacity makes the disk hold at most n bytes of file data (counted
// in whole blocks, over the files a name reaches): a write or truncate
// that would grow the files past it fails with ENOSPC, and FreeBytes
// tells what is left. A negative n lifts the bound (FreeBytes then
// reports errors.ErrUnsupported, as a system that does not measure).
func (m *Mem) SetCapacity(n int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.capacity = n
}

// Used returns the bytes the named files hold, in whole blocks, outside
// the operation count and the power cut (for tests' checks).
func (m *Mem) Used() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.used()
}

// used is the bytes the named files hold, in whole blocks; the caller
// holds mu.
func (m *Mem) used() int64 {
	var n int64
	var walk func(id uint64)
	walk = func(id uint64) {
		ino := m.nodes[id]
		if !ino.dir {
			n += blocks(int64(len(ino.data))) * blockSize
			return
		}
		for _, c := range ino.entries {
			walk(c)
		}
	}
	walk(rootIno)
	return n
}

func blocks(n int64) int64 { return (n + blockSize - 1) / blockSize }

// grow checks that ino may grow to size within the capacity; the caller
// holds mu.
func (m *Mem) grow(op, name string, ino *inode, size int64) error {
	if m.capacity < 0 || blocks(size) <= blocks(int64(len(ino.data))) {
		return nil
	}
	if m.used()+(blocks(size)-blocks(int64(len(ino.data))))*blockSize > m.capacity {
		return &fs.PathError{Op: op, Path: name, Err: syscall.ENOSPC}
	}
	return nil
}

// FreeBytes returns what the capacity leaves (SetCapacity), counted as a
// statfs.
func (m *Mem) FreeBytes(name string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(vfs.OpStatFS); err != nil {
		return 0, err
	}
	if _, err := m.lookup("statfs", name); err != nil {
		return 0, err
	}
	if m.capacity < 0 {
		return 0, fmt.Errorf("vfstest: free space: %w without a capacity", errors.ErrUnsupported)
	}
	return uint64(max(0, m.capacity-m.used())), nil
}

// begin counts an operation, refusing it once the power is cut; the
// caller holds mu.
func (m *Mem) begin(op vfs.Op) error {
	if m.cut {
		return ErrPowerCut
	}
	if m.cutAt >= 0 && m.ops >= m.cutAt {
		m.cut = true
		return ErrPowerCut
	}
	m.ops++
	if err := m.faults[op.String()]; err != nil {
		return err
	}
	if err := m.once[op.String()]; err != nil {
		delete(m.once, op.String())
		return onceErr{err}
	}
	return nil
}

// Mode says what a crash keeps of what was written but not made durable.
type Mode int

const (
	// KeepNone reverts everything to its durable state.
	KeepNone Mode = iota
	// KeepAll keeps everything, as when only the process died.
	KeepAll
	// KeepSome keeps each unsynced block and each unsynced directory
	// entry change or not, at random: torn writes, half-done renames.
	KeepSome
)

// Crash returns the file system a disk could hold after the power was
// lost now: m itself stays cut for good (late writers cannot reach the
// new one). rng decides KeepSome's choices.
func (m *Mem) Crash(mode Mode, rng *rand.Rand) *Mem {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cut = true
	n := NewMem()
	n.next, n.capacity = m.next, m.capacity
	keep := func() bool {
		switch mode {
		case KeepAll:
			return true
		case KeepSome:
			return rng.IntN(2) == 0
		}
		return false
	}
	// Directories: each name the durable and the current state disagree
	// on takes one of the two.
	for id, ino := range m.nodes {
		if !ino.dir {
			continue
		}
		d := newDir()
		names := map[string]bool{}
		for k := range ino.durableEntries {
			names[k] = true
		}
		for k := range ino.entries {
			names[k] = true
		}
		for _, k := range slices.Sorted(maps.Keys(names)) {
			cur, inCur := ino.entries[k]
			dur, inDur := ino.durableEntries[k]
			if inCur == inDur && cur == dur {
				if inCur {
					d.entries[k] = cur
				}
				continue
			}
			if keep() {
				if inCur {
					d.entries[k] = cur
				}
			} else if inDur {
				d.entries[k] = dur
			}
		}
		n.nodes[id] = d
	}
	// Files: unsynced blocks are kept or lost one by one; the size is the
	// durable or the current one.
	for id, ino := range m.nodes {
		if ino.dir {
			continue
		}
		size := len(ino.durable)
		if len(ino.data) != len(ino.durable) && keep() {
			size = len(ino.data)
		}
		data := make([]byte, size)
		copy(data, ino.durable)
		for _, b := range slices.Sorted(maps.Keys(ino.dirty)) {
			if !keep() {
				continue
			}
			lo := b * blockSize
			if lo >= int64(size) {
				continue
			}
			hi := min(lo+blockSize, int64(size))
			cur := make([]byte, hi-lo)
			if lo < int64(len(ino.data)) {
				copy(cur, ino.data[lo:min(hi, int64(len(ino.data)))])
			}
			copy(data[lo:hi], cur)
		}
		n.nodes[id] = &inode{data: data, durable: bytes.Clone(data), dirty: map[int64]bool{}}
	}
	// Drop what no name reaches, and entries naming what no longer
	// exists, and make the result durable.
	reach := map[uint64]bool{rootIno: true}
	var walk func(id uint64)
	walk = func(id uint64) {
		d := n.nodes[id]
		for k, c := range d.entries {
			ci, ok := n.nodes[c]
			if !ok || reach[c] && ci.dir {
				delete(d.entries, k)
				continue
			}
			reach[c] = true
			if ci.dir {
				walk(c)
			}
		}
	}
	walk(rootIno)
	for id, ino := range n.nodes {
		if !reach[id] {
			delete(n.nodes, id)
			continue
		}
		if ino.dir {
			ino.durableEntries = maps.Clone(ino.entries)
		}
	}
	return n
}

// split returns the parent directory's inode and the base name of p.
func (m *Mem) split(op, p string) (*inode, string, error) {
	p = path.Clean("/" + strings.TrimPrefix(p, "/"))
	if p == "/" {
		return nil, "", &fs.PathError{Op: op, Path: p, Err: fs.ErrInvalid}
	}
	dir, base := path.Split(p)
	d, err := m.lookup(op, dir)
	if err != nil {
		return nil, "", err
	}
	if !d.dir {
		return nil, "", &fs.PathError{Op: op, Path: p, Err: errors.New("not a directory")}
	}
	return d, base, nil
}

func (m *Mem) lookupID(op, p string) (uint64, error) {
	id := uint64(rootIno)
	for part := range strings.SplitSeq(strings.Trim(path.Clean("/"+p), "/"), "/") {
		if part == "" {
			continue
		}
		d := m.nodes[id]
		if !d.dir {
			return 0, &fs.PathError{Op: op, Path: p, Err: errors.New("not a directory")}
		}
		c, ok := d.entries[part]
		if !ok {
			return 0, &fs.PathError{Op: op, Path: p, Err: fs.ErrNotExist}
		}
		id = c
	}
	return id, nil
}

func (m *Mem) lookup(op, p string) (*inode, error) {
	id, err := m.lookupID(op, p)
	if err != nil {
		return nil, err
	}
	return m.nodes[id], nil
}

func (m *Mem) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	op := vfs.OpOpen
	if flag&os.O_CREATE != 0 {
		op = vfs.OpCreate
	}
	if err := m.begin(op); err != nil {
		return nil, err
	}
	d, base, err := m.split("open", name)
	if err != nil {
		return nil, err
	}
	id, ok := d.entries[base]
	switch {
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case !ok && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case !ok:
		id = m.next
		m.next++
		m.nodes[id] = &inode{dirty: map[int64]bool{}}
		d.entries[base] = id
	}
	ino := m.nodes[id]
	if ino.dir && flag&(os.O_WRONLY|os.O_RDWR) != 0 {
		return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("is a directory")}
	}
	if flag&os.O_TRUNC != 0 && !ino.dir {
		m.resize(ino, 0)
	}
	return &memFile{m: m, id: id, name: name}, nil
}

// resize sets a file's size, marking the blocks that change dirty.
func (m *Mem) resize(ino *inode, size int64) {
	old := int64(len(ino.data))
	if size < old {
		ino.data = ino.data[:size]
	} else {
		ino.data = append(ino.data, make([]byte, size-old)...)
	}
	for b := min(old, size) / blockSize; b*blockSize < max(old, size); b++ {
		ino.dirty[b] = true
	}
}

func (m *Mem) Rename(oldpath, newpath string) error {
	_, err := m.rename(oldpath, newpath, true)
	return err
}

func (m *Mem) RenameNoReplace(oldpath, newpath string) (bool, error) {
	return m.rename(oldpath, newpath, false)
}

func (m *Mem) rename(oldpath, newpath string, replace bool) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(vfs.OpRename); err != nil {
		return false, err
	}
	od, ob, err := m.split("rename", oldpath)
	if err != nil {
		return false, err
	}
	nd, nb, err := m.split("rename", newpath)
	if err != nil {
		return false, err
	}
	id, ok := od.entries[ob]
	if !ok {
		return false, &fs.PathError{Op: "rename", Path: oldpath, Err: fs.ErrNotExist}
	}
	if old, exists := nd.entries[nb]; exists {
		if !replace {
			return false, nil
		}
		if m.nodes[old].dir {
			return false, &fs.PathError{Op: "rename", Path: newpath, Err: fs.ErrExist}
		}
	}
	delete(od.entries, ob)
	nd.entries[nb] = id
	return true, nil
}

func (m *Mem) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(vfs.OpRemove); err != nil {
		return err
	}
	d, base, err := m.split("remove", name)
	if err != nil {
		return err
	}
	id, ok := d.entries[base]
	if !ok {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	if ino := m.nodes[id]; ino.dir && len(ino.entries) > 0 {
		return &fs.PathError{Op: "remove", Path: name, Err: errors.New("directory not empty")}
	}
	delete(d.entries, base)
	return nil
}

func (m *Mem) Mkdir(name string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(vfs.OpMkdir); err != nil {
		return err
	}
	d, base, err := m.split("mkdir", name)
	if err != nil {
		return err
	}
	if _, ok := d.entries[base]; ok {
		return &fs.PathError{Op: "mkdir", Path: name, Err: fs.ErrExist}
	}
	id := m.next
	m.next++
	m.nodes[id] = newDir()
	d.entries[base] = id
	return nil
}

func (m *Mem) ReadDir(name string) ([]fs.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(vfs.OpReadDir); err != nil {
		return nil, err
	}
	d, err := m.lookup("readdir", name)
	if err != nil {
		return nil, err
	}
	if !d.dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	var out []fs.DirEntry
	for _, k := range slices.Sorted(maps.Keys(d.entries)) {
		out = append(out, fs.FileInfoToDirEntry(m.info(k, m.nodes[d.entries[k]])))
	}
	return out, nil
}

func (m *Mem) Stat(name string) (fs.FileInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(vfs.OpStat); err != nil {
		return nil, err
	}
	ino, err := m.lookup("stat", name)
	if err != nil {
		return nil, err
	}
	return m.info(path.Base(name), ino), nil
}

func (m *Mem) SyncDir(dir string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(vfs.OpSyncDir); err != nil {
		return err
	}
	d, err := m.lookup("fsync", dir)
	if err != nil {
		return err
	}
	if !d.dir {
		return &fs.PathError{Op: "fsync", Path: dir, Err: errors.New("not a directory")}
	}
	d.durableEntries = maps.Clone(d.entries)
	return nil
}

func (m *Mem) SyncFS(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(vfs.OpSyncFS); err != nil {
		if m.failedOnce(err) {
			for _, ino := range m.nodes {
				if !ino.dir {
					ino.dropDirty(err)
				}
			}
		}
		return err
	}
	for _, ino := range m.nodes {
		if ino.dir {
			ino.durableEntries = maps.Clone(ino.entries)
		} else {
			ino.sync()
		}
	}
	return nil
}

func (m *Mem) Lock(name string) (io.Closer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.begin(vfs.OpLock); err != nil {
		return nil, err
	}
	d, base, err := m.split("lock", name)
	if err != nil {
		return nil, err
	}
	id, ok := d.entries[base]
	if !ok {
		id = m.next
		m.next++
		m.nodes[id] = &inode{dirty: map[int64]bool{}}
		d.entries[base] = id
	}
	if m.locks[id] {
		return nil, fmt.Errorf("%w: %s", vfs.ErrLocked, name)
	}
	m.locks[id] = true
	return &memLock{m: m, id: id}, nil
}

type memLock struct {
	m    *Mem
	id   uint64
	once sync.Once
}

func (l *memLock) Close() error {
	l.once.Do(func() {
		l.m.mu.Lock()
		delete(l.m.locks, l.id)
		l.m.mu.Unlock()
	})
	return nil
}

// Read returns the current content of the file at name, outside the
// operation count and the power cut (for tests' checks).
func (m *Mem) Read(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino, err := m.lookup("read", name)
	if err != nil {
		return nil, err
	}
	if ino.dir {
		return nil, &fs.PathError{Op: "read", Path: name, Err: errors.New("is a directory")}
	}
	return bytes.Clone(ino.data), nil
}

// Files returns every file's path under dir, sorted, outside the
// operation count and the power cut.
func (m *Mem) Files(dir string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	var walk func(p string, id uint64)
	walk = func(p string, id uint64) {
		ino := m.nodes[id]
		if !ino.dir {
			out = append(out, p)
			return
		}
		for k, c := range ino.entries {
			walk(path.Join(p, k), c)
		}
	}
	if id, err := m.lookupID("files", dir); err == nil {
		walk(path.Clean("/"+dir), id)
	}
	slices.Sort(out)
	return out
}

func (m *Mem) info(name string, ino *inode) fs.FileInfo {
	fi := memInfo{name: name, size: int64(len(ino.data)), mode: 0o600}
	if ino.dir {
		fi.mode = fs.ModeDir | 0o700
		fi.size = 0
	}
	return fi
}

type memInfo struct {
	name string
	size int64
	mode fs.FileMode
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() fs.FileMode  { return i.mode }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return i.mode.IsDir() }
func (i memInfo) Sys() any           { return nil }

type memFile struct {
	m      *Mem
	id     uint64
	name   string
	closed bool
}

// file returns the inode of an open file, refusing a closed one; the
// caller holds mu.
func (f *memFile) file(op vfs.Op) (*inode, error) {
	if err := f.m.begin(op); err != nil {
		return nil, err
	}
	if f.closed {
		return nil, &fs.PathError{Op: op.String(), Path: f.name, Err: fs.ErrClosed}
	}
	ino, ok := f.m.nodes[f.id]
	if !ok {
		return nil, &fs.PathError{Op: op.String(), Path: f.name, Err: fs.ErrNotExist}
	}
	return ino, nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	ino, err := f.file(vfs.OpRead)
	if err != nil {
		return 0, err
	}
	if off >= int64(len(ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	ino, err := f.file(vfs.OpWrite)
	if err != nil {
		return 0, err
	}
	if ino.dir {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: errors.New("is a directory")}
	}
	if end := off + int64(len(p)); end > int64(len(ino.data)) {
		if err := f.m.grow("write", f.name, ino, end); err != nil {
			return 0, err
		}
		f.m.resize(ino, end)
	}
	copy(ino.data[off:], p)
	for b := off / blockSize; b*blockSize < off+int64(len(p)); b++ {
		ino.dirty[b] = true
	}
	return len(p), nil
}

func (f *memFile) Sync() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	ino, err := f.file(vfs.OpSync)
	if err != nil {
		if dropped, ok := f.m.nodes[f.id]; ok && !dropped.dir && f.m.failedOnce(err) {
			dropped.dropDirty(nil)
		}
		return err
	}
	if err := ino.wbErr; err != nil {
		ino.wbErr = nil
		ino.sync()
		return err
	}
	ino.sync()
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	ino, err := f.file(vfs.OpTruncate)
	if err != nil {
		return err
	}
	if err := f.m.grow("truncate", f.name, ino, size); err != nil {
		return err
	}
	f.m.resize(ino, size)
	return nil
}

func (f *memFile) Stat() (fs.FileInfo, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	ino, err := f.file(vfs.OpStat)
	if err != nil {
		return nil, err
	}
	return f.m.info(path.Base(f.name), ino), nil
}

func (f *memFile) Close() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if _, err := f.file(vfs.OpClose); err != nil {
		return err
	}
	f.closed = true
	return nil
}

func (f *memFile) Name() string { return f.name }
