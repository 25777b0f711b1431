package vfs_test

import (
	"os"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs/vfstest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// An fdatasync owes NFS a COMMIT only after a write it sent unstable:
// through the page cache, or direct but larger than one WRITE.
func TestSyncOwesCommit(t *testing.T) {
	if vfs.Direct == 0 {
		testenv.RequireLinux(t, "direct I/O, O_DIRECT")
	}
	cases := []struct {
		name       string
		direct     bool
		writes     []int // sizes, written in turn before one fdatasync
		wantCommit bool
	}{
		{"direct, one WRITE", true, []int{4096}, false},
		{"direct, exactly one WRITE", true, []int{vfs.NFSWriteSize}, false},
		{"direct, two small writes", true, []int{4096, 8192}, false},
		{"direct, larger than one WRITE", true, []int{vfs.NFSWriteSize + 4096}, true},
		{"direct, a large write among small ones", true, []int{4096, vfs.NFSWriteSize + 4096, 4096}, true},
		{"through the page cache", false, []int{4096}, true},
		{"nothing written", true, nil, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ins := vfs.Instrument(vfstest.NewMem(), vfs.Latencies{})
			flag := os.O_RDWR | os.O_CREATE
			if c.direct {
				flag |= vfs.Direct
			}
			f, err := ins.OpenFile("/f", flag, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			off := int64(0)
			for _, n := range c.writes {
				if _, err := f.WriteAt(make([]byte, n), off); err != nil {
					t.Fatal(err)
				}
				off += int64(n)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			// A second fdatasync never owes anything.
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			commits, stable := ins.Count(vfs.OpSync), ins.Count(vfs.OpSyncStable)
			want := int64(0)
			if c.wantCommit {
				want = 1
			}
			if commits != want || commits+stable != 2 {
				t.Errorf("%d fdatasyncs owing a commit, %d with nothing to commit; want %d and %d", commits, stable, want, 2-want)
			}
		})
	}
}
