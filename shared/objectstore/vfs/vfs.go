// Package vfs is the narrow file-system interface the journal and the
// stores built on it use: the operating system's files (OS), and a
// wrapper that counts every operation by kind and can hold each for a
// configured time (Instrumented), so a local directory can stand in for a
// network file system such as Amazon EFS in benchmarks, where a metadata
// operation costs milliseconds. vfstest adds an in-memory file system that
// simulates power loss.
package vfs

import (
	"errors"
	"io"
	"io/fs"
	"path/filepath"
)

// File is an open file.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes the file's data durable, with what is needed to read it
	// back (size, allocation), as fdatasync does; not its name.
	Sync() error
	Truncate(size int64) error
	Stat() (fs.FileInfo, error)
	Name() string
}

// FS is what the journal and the file store do to a file system. Names are
// slash- or OS-separated paths as os takes them.
type FS interface {
	// OpenFile opens name as os.OpenFile does. flag may include Direct.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Rename renames oldpath to newpath, replacing newpath.
	Rename(oldpath, newpath string) error
	// RenameNoReplace renames oldpath to newpath unless newpath exists,
	// reporting false then.
	RenameNoReplace(oldpath, newpath string) (bool, error)
	Remove(name string) error
	Mkdir(name string, perm fs.FileMode) error
	ReadDir(name string) ([]fs.DirEntry, error)
	Stat(name string) (fs.FileInfo, error)
	// SyncDir makes the entries created, renamed or removed in dir
	// durable.
	SyncDir(dir string) error
	// SyncFS makes everything written on the file system holding name
	// durable: data, names and metadata (syncfs).
	SyncFS(name string) error
	// Lock takes an exclusive lock on the file name (created if missing)
	// without waiting: ErrLocked when another holder has it,
	// fs.ErrNotExist when name was removed while it was being locked. The
	// lock lasts until the returned closer is closed or the process ends.
	Lock(name string) (io.Closer, error)
	// FreeBytes returns the bytes an unprivileged user may still write on
	// the file system holding name (statfs's f_bavail × f_bsize), or an
	// error wrapping errors.ErrUnsupported where that is not measured.
	FreeBytes(name string) (uint64, error)
}

// ErrLocked is returned by FS.Lock while another holder has the lock.
var ErrLocked = errors.New("vfs: locked by another holder")

// MkdirAll creates dir and its missing parents on fsys, calling created
// for each directory it made (so callers can make the new entries
// durable), parents first.
func MkdirAll(fsys FS, dir string, perm fs.FileMode, created func(dir string) error) error {
	if st, err := fsys.Stat(dir); err == nil {
		if st.IsDir() {
			return nil
		}
		return &fs.PathError{Op: "mkdir", Path: dir, Err: errors.New("not a directory")}
	}
	if parent := parentDir(dir); parent != dir && parent != "" {
		if err := MkdirAll(fsys, parent, perm, created); err != nil {
			return err
		}
	}
	if err := fsys.Mkdir(dir, perm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil // created concurrently
		}
		return err
	}
	if created != nil {
		return created(dir)
	}
	return nil
}

func parentDir(p string) string { return filepath.Dir(p) }
