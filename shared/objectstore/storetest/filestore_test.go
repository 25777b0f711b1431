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
func TestFileStoreConformance(t *testing.T) {
	var fs *filestore.Store
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) objectstore.Store {
			var err error
			if fs, err = filestore.New(t.TempDir()); err != nil {
				t.Fatal(err)
			}
			return fs
		},
		Read: func(t *testing.T, key string) ([]byte, error) {
			p, err := fs.Path(key)
			if err != nil {
				return nil, err
			}
			return os.ReadFile(p)
		},
	})
}
