//go:build !linux

package interop

import (
	"os"
	"testing"
)

// mountTmpfs needs Linux; elsewhere the test is skipped (and fails in CI,
// which runs on Linux).
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal("a tmpfs mount needs Linux")
	}
	t.Skip("a tmpfs mount needs Linux")
	return ""
}
