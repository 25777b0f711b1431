//go:build !linux

package local

import "os"

// noReadahead is a no-op where posix_fadvise is not available.
func noReadahead(*os.File) {}
