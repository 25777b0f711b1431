//go:build !linux

package filestore

import (
	"errors"
	"fmt"
)

// freeBytes is not measured here: the reserve (WithMinFreeBytes) is not
// kept on this system.
func freeBytes(string) (uint64, error) {
	return 0, fmt.Errorf("free space check: %w on this system", errors.ErrUnsupported)
}
