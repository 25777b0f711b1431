//go:build !linux

package filestore

import (
	"errors"
	"os"
)

// Direct I/O is implemented for Linux only: elsewhere objects are written
// through the page cache.
const directFlag = 0

func (s *Store) probeDirect() (bool, error) { return false, nil }

func leaveDirect(*os.File) error { return errors.New("direct I/O is implemented for Linux only") }
