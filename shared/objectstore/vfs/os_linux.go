package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Direct is the OpenFile flag for direct I/O: writes go to the device
// without the page cache, from buffers, offsets and lengths aligned to the
// device's block (BlockAlign covers the common ones).
const Direct = unix.O_DIRECT

// BlockAlign is the alignment direct I/O is given: the largest logical
// block size in common use.
const BlockAlign = 4096

func datasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			if err != nil {
				return &fs.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

func renameNoReplace(oldpath, newpath string) (bool, error) {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EEXIST):
		return false, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.ENOTSUP):
		return linkNoReplace(oldpath, newpath)
	}
	return false, &os.LinkError{Op: "renameat2", Old: oldpath, New: newpath, Err: err}
}

func syncFS(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	err = unix.Syncfs(int(f.Fd()))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return &fs.PathError{Op: "syncfs", Path: name, Err: err}
	}
	return nil
}

// lockFile takes flock(LOCK_EX|LOCK_NB) on name; on NFS the client maps
// it to a whole-file byte-range lock held under the client's lease.
func lockFile(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, name)
		}
		return nil, &fs.PathError{Op: "flock", Path: name, Err: err}
	}
	// Whoever held the lock before may have removed the file: then the
	// lock is on a file nobody else will ever look at.
	held, err := f.Stat()
	if err == nil {
		var now fs.FileInfo
		if now, err = os.Stat(name); err == nil && !os.SameFile(held, now) {
			err = fs.ErrNotExist
		}
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("vfs: lock %s: %w", name, err)
	}
	return f, nil
}

// FreeBytes returns the bytes an unprivileged user may still write on the
// file system holding name (one statfs call, about 2 µs on a local disk;
// one round trip on NFS).
func FreeBytes(name string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(name, &st); err != nil {
		return 0, &fs.PathError{Op: "statfs", Path: name, Err: err}
	}
	return st.Bavail * uint64(st.Bsize), nil
}
