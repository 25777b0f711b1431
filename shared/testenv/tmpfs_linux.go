package testenv

import (
	"fmt"
	"syscall"
	"testing"
)

// MountTmpfs mounts a tmpfs of size bytes on a new temporary directory for
// the rest of the test, so that the test can fill a disk without filling
// the machine's. It needs root (CAP_SYS_ADMIN): without it the test is
// skipped on a developer machine and fails in CI (Missing).
func MountTmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		Missing(t, "a tmpfs mount ("+err.Error()+")", "run the tests as root: sudo -E make test")
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// ResizeTmpfs grows (or shrinks) the tmpfs MountTmpfs mounted on dir, as
// an operator freeing space would.
func ResizeTmpfs(t testing.TB, dir string, size int64) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT|syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("resize the tmpfs on %s: %v", dir, err)
	}
}
