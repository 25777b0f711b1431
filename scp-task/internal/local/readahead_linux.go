package local

import (
	"os"

	"golang.org/x/sys/unix"
)

// noReadahead tells the kernel that f is read in small pieces. The
// pipeline reads an object's header, a few kilobytes, and the kernel's
// default readahead fetched 128 KiB of the disk for each (the whole of a
// typical MR image), competing with the SCP's writes. A failure only
// costs the readahead it would have saved.
func noReadahead(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM) // advice only: nothing to handle
}
