package s3store_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
)

// BenchmarkPut measures Put through the real SDK client into the
// in-process emulator (default 8 MiB parts). The emulator's own cost is
// included, so compare runs with benchstat rather than with S3 figures.
func BenchmarkPut(b *testing.B) {
	for _, size := range []int{512 << 10, 64 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			srv := s3test.NewServer(b, bucket)
			st, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Prefix: prefix, Client: s3test.Client(srv.URL)})
			if err != nil {
				b.Fatal(err)
			}
			data := s3test.Bytes(1, int64(size))
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				obj := testObject(fmt.Sprintf("1.2.3.%d", i+1))
				got, err := st.Put(context.Background(), obj, bytes.NewReader(data))
				if err != nil {
					b.Fatal(err)
				}
				// The emulator keeps objects in memory: drop each one.
				b.StopTimer()
				if _, err := srv.Backend.DeleteObject(bucket, prefix+got.Key); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkPutStoreOnly measures the store and SDK alone: the server
// discards the bytes after checking their CRC64NVME.
func BenchmarkPutStoreOnly(b *testing.B) {
	for _, size := range []int{512 << 10, 64 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			sink := s3test.NewSink(b)
			st, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Client: s3test.Client(sink.URL)})
			if err != nil {
				b.Fatal(err)
			}
			data := s3test.Bytes(1, int64(size))
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, err := st.Put(context.Background(), testObject(fmt.Sprintf("1.2.3.%d", i+1)), bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var _ objectstore.Store = (*s3store.Store)(nil)
