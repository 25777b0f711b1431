package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// OS returns the operating system's file system.
func OS() FS { return osFS{} }

type osFS struct{}

type osFile struct{ *os.File }

func (f osFile) Sync() error { return datasync(f.File) }

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }

func (osFS) RenameNoReplace(oldpath, newpath string) (bool, error) {
	return renameNoReplace(oldpath, newpath)
}

func (osFS) Remove(name string) error                   { return os.Remove(name) }
func (osFS) Mkdir(name string, perm fs.FileMode) error  { return os.Mkdir(name, perm) }
func (osFS) ReadDir(name string) ([]fs.DirEntry, error) { return os.ReadDir(name) }
func (osFS) Stat(name string) (fs.FileInfo, error)      { return os.Stat(name) }
func (osFS) SyncDir(dir string) error                   { return SyncDir(dir) }
func (osFS) SyncFS(name string) error                   { return syncFS(name) }
func (osFS) Lock(name string) (io.Closer, error)        { return lockFile(name) }
func (osFS) FreeBytes(name string) (uint64, error)      { return FreeBytes(name) }

// SyncDir fsyncs dir, so that the entries just created, renamed or
// removed in it survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// linkNoReplace hard-links oldpath to newpath (never replacing it) and
// removes oldpath once linked: RenameNoReplace where renameat2 is missing.
func linkNoReplace(oldpath, newpath string) (bool, error) {
	if err := os.Link(oldpath, newpath); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, err
	}
	// Only the old name is left to remove; the file is in place.
	if err := os.Remove(oldpath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return true, fmt.Errorf("vfs: remove %s after linking it: %w", oldpath, err)
	}
	return true, nil
}
