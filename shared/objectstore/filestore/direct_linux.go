package filestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// directFlag opens a file for direct I/O.
const directFlag = unix.O_DIRECT

// probeDirect reports whether the temporary directory's filesystem takes
// what a Put does with direct I/O: whole blocks aligned to directAlign
// written direct, then direct I/O turned off and a partial block written
// through the page cache.
func (s *Store) probeDirect() (ok bool, err error) {
	f, err := s.createTemp("probe-", true)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return false, nil
		}
		return false, err
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			ok, err = false, fmt.Errorf("close probe file: %w", cerr)
		}
		if rerr := os.Remove(f.Name()); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			s.log.Error("remove direct I/O probe file", "err", rerr)
		}
	}()
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st); err == nil && st.Mask&unix.STATX_DIOALIGN != 0 {
		if st.Dio_offset_align == 0 || directAlign%st.Dio_offset_align != 0 || directAlign%st.Dio_mem_align != 0 {
			return false, nil
		}
	}
	if _, err := f.WriteAt(alignedBuf(directAlign), directAlign); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return false, nil
		}
		return false, err
	}
	if err := leaveDirect(f); err != nil {
		return false, nil
	}
	if _, err := f.WriteAt([]byte{1}, 2*directAlign); err != nil {
		return false, err
	}
	return true, nil
}

// leaveDirect turns direct I/O off for f, for the object's last, partial
// block.
func leaveDirect(f *os.File) error {
	flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(f.Fd(), unix.F_SETFL, flags&^unix.O_DIRECT)
	}
	return err
}
