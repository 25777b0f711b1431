//go:build !unix

package local

import "io/fs"

// ownedByUs takes the file as ours where the system has no owner to ask.
func ownedByUs(fs.FileInfo) bool { return true }
