//go:build !linux

package vfs

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Direct is 0 where the store does not use direct I/O.
const Direct = 0

// BlockAlign is the alignment records are laid out on.
const BlockAlign = 4096

func datasync(f *os.File) error { return f.Sync() }

func renameNoReplace(oldpath, newpath string) (bool, error) { return linkNoReplace(oldpath, newpath) }

func syncFS(string) error { return errors.New("vfs: syncfs: not supported on this system") }

func lockFile(name string) (io.Closer, error) {
	return nil, fmt.Errorf("vfs: lock %s: %w", name, errors.ErrUnsupported)
}

// FreeBytes is not measured here: a reserve of free space (Reserve) is
// not kept on this system.
func FreeBytes(string) (uint64, error) {
	return 0, fmt.Errorf("vfs: free space: %w on this system", errors.ErrUnsupported)
}
