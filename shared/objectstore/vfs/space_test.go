package vfs_test

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs/vfstest"
)

// TestReserveBelow: the reserve's rule, which the file store and the
// staged store share.
func TestReserveBelow(t *testing.T) {
	errStatfs := errors.New("statfs failed")
	for _, tc := range []struct {
		name      string
		reserve   uint64
		free      uint64
		freeErr   error
		extra     uint64
		wantBelow bool
		wantErr   error
	}{
		{"no reserve", 0, 0, nil, 0, false, nil},
		{"no reserve, statfs would fail", 0, 0, errStatfs, 0, false, nil},
		{"above", 100, 200, nil, 0, false, nil},
		{"at", 100, 100, nil, 0, false, nil},
		{"below", 100, 99, nil, 0, true, nil},
		{"extra takes it below", 100, 150, nil, 60, true, nil},
		{"not measured", 100, 0, fmt.Errorf("wrapped: %w", errors.ErrUnsupported), 0, false, nil},
		{"statfs fails", 100, 0, errStatfs, 0, false, errStatfs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := vfs.Reserve{Bytes: tc.reserve, Free: func() (uint64, error) { return tc.free, tc.freeErr }}
			_, below, err := r.Below(tc.extra)
			if below != tc.wantBelow || !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Errorf("Below(%d) = %v, %v; want %v, %v", tc.extra, below, err, tc.wantBelow, tc.wantErr)
			}
		})
	}
}

// TestMemCapacity: a Mem with a capacity fails writes that would grow its
// files past it with ENOSPC, tells the free space, and has the space back
// once a file is removed.
func TestMemCapacity(t *testing.T) {
	m := vfstest.NewMem()
	if _, err := m.FreeBytes("/"); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("FreeBytes without a capacity = %v, want ErrUnsupported", err)
	}
	m.SetCapacity(4 * 4096)
	f, err := m.OpenFile("/a", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 3*4096), 0); err != nil {
		t.Fatal(err)
	}
	if free, err := m.FreeBytes("/a"); err != nil || free != 4096 {
		t.Errorf("FreeBytes = %d, %v; want 4096", free, err)
	}
	// Overwriting allocated blocks takes no space; growing past it fails.
	if _, err := f.WriteAt(make([]byte, 4096), 4096); err != nil {
		t.Errorf("overwrite on a full disk: %v", err)
	}
	if _, err := f.WriteAt(make([]byte, 2*4096), 3*4096); !vfs.NoSpace(err) {
		t.Errorf("write past the capacity = %v, want ENOSPC", err)
	}
	if err := f.Truncate(5 * 4096); !vfs.NoSpace(err) {
		t.Errorf("truncate past the capacity = %v, want ENOSPC", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("/a"); err != nil {
		t.Fatal(err)
	}
	if free, err := m.FreeBytes("/"); err != nil || free != 4*4096 {
		t.Errorf("FreeBytes once removed = %d, %v; want %d", free, err, 4*4096)
	}
}
