package journal

import (
	"errors"

	"golang.org/x/sys/unix"
)

// isInvalid reports an error by which a file system refuses direct I/O.
func isInvalid(err error) bool { return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) }
