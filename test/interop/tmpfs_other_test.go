//go:build !linux

package interop

import (
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// mountTmpfs needs Linux; elsewhere the test is skipped (and fails in CI,
// which runs on Linux).
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	testenv.RequireLinux(t, "a tmpfs mount")
	return ""
}
