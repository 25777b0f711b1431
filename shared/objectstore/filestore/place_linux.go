package filestore

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// placeNoReplace moves tmp to final unless final exists, reporting false
// then. renameat2(RENAME_NOREPLACE) does it in one step; filesystems
// without it get a hard link, which also never replaces.
func placeNoReplace(tmp, final string) (bool, error) {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EEXIST):
		return false, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.ENOTSUP):
		return linkNoReplace(tmp, final)
	}
	return false, &os.LinkError{Op: "renameat2", Old: tmp, New: final, Err: err}
}

func freeBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
