//go:build !linux

package testenv

import "testing"

// MountTmpfs needs Linux; elsewhere the test is skipped (and fails in CI,
// which runs on Linux).
func MountTmpfs(t testing.TB, size int64) string {
	t.Helper()
	RequireLinux(t, "a tmpfs mount")
	return ""
}

// ResizeTmpfs needs Linux, as MountTmpfs does.
func ResizeTmpfs(t testing.TB, dir string, size int64) {
	t.Helper()
	RequireLinux(t, "a tmpfs mount")
}
