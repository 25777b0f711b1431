package s3store_test

import (
	"context"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/storetest"
)

func TestConformance(t *testing.T) {
	var srv *s3test.Server
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) objectstore.Store {
			srv = s3test.NewServer(t, bucket)
			st, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Prefix: prefix, PartSize: partSize, Client: s3test.Client(srv.URL)})
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
		Read: func(t *testing.T, key string) ([]byte, error) {
			b, _, err := srv.Object(prefix + key)
			return b, err
		},
		Sizes: []int64{0, 1000, 256 << 10, 256<<10 + 1, 1 << 20, 1<<20 + 1, partSize, partSize + 1, 2*partSize + 3},
	})
}
