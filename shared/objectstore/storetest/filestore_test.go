package storetest_test

import (
	"os"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/storetest"
)

// The suite runs against the file store here; s3store runs it in its own
// tests against the S3 emulator.
// Every way of writing runs it: journaled objects and the file recipe,
// with direct I/O (where the test's filesystem takes it) and through the
// page cache.
func TestFileStoreConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []filestore.Option
	}{
		{"default", nil},
		{"buffered", []filestore.Option{filestore.WithBufferedWrites()}},
		{"no-journal", []filestore.Option{filestore.WithoutJournal()}},
	} {
		t.Run(tc.name, func(t *testing.T) { runFileStore(t, tc.opts) })
	}
}

func runFileStore(t *testing.T, opts []filestore.Option) {
	var fs *filestore.Store
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) objectstore.Store {
			var err error
			if fs, err = filestore.New(t.TempDir(), opts...); err != nil {
				t.Fatal(err)
			}
			st := fs
			t.Cleanup(func() {
				if err := st.Close(); err != nil {
					t.Error(err)
				}
			})
			return fs
		},
		// Around the direct writer's block, chunk and ring boundaries.
		Sizes: []int64{0, 1, 4095, 4096, 4097, 128<<10 - 1, 128 << 10, 128<<10 + 1, 1<<20 - 1, 1 << 20, 1<<20 + 4096, 3<<20 + 17},
		Read: func(t *testing.T, key string) ([]byte, error) {
			p, err := fs.Path(key)
			if err != nil {
				return nil, err
			}
			return os.ReadFile(p)
		},
	})
}
