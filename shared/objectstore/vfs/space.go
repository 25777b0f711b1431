package vfs

import (
	"errors"
	"syscall"
)

// ErrReserve is what a store's errors wrap while the free space on its
// file system is below the reserve it keeps (Reserve).
var ErrReserve = errors.New("free space below the reserve")

// Reserve is free space a store keeps on its file system, so that what
// must still be written once it fills (records, a journal's next segment,
// a local pipeline's database) has room: below it the store refuses work
// and its readiness goes off. The file store and the staged store share
// this rule.
type Reserve struct {
	// Bytes is the free space kept; 0 keeps none.
	Bytes uint64
	// Free returns the free space (FS.FreeBytes); an error wrapping
	// errors.ErrUnsupported where it is not measured.
	Free func() (uint64, error)
}

// Below reports whether the free space, less extra bytes, is below the
// reserve, and the free space: never where there is no reserve or the
// free space is not measured.
func (r Reserve) Below(extra uint64) (free uint64, below bool, err error) {
	if r.Bytes == 0 {
		return 0, false, nil
	}
	free, err = r.Free()
	if errors.Is(err, errors.ErrUnsupported) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return free, free < r.Bytes+extra, nil
}

// NoSpace reports whether err is a file system's refusal for lack of
// space: ENOSPC, or EDQUOT (a quota).
func NoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
