package s3store_test

import (
	"bytes"
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
)

// stallingParts holds every UploadPart until released.
type stallingParts struct {
	s3store.Client
	release chan struct{}
	once    sync.Once
	started chan struct{}
}

func (c *stallingParts) UploadPart(ctx context.Context, in *s3.UploadPartInput, o ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	c.once.Do(func() { close(c.started) })
	select {
	case <-c.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return c.Client.UploadPart(ctx, in, o...)
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestBackpressure stalls S3 on the first part and checks that the store
// stops reading after filling its second buffer, then carries on once S3
// answers: a slow S3 slows the sender instead of growing memory.
func TestBackpressure(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	client := &stallingParts{Client: s3test.Client(srv.URL), release: make(chan struct{}), started: make(chan struct{})}
	st, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Prefix: prefix, PartSize: partSize, Client: client})
	if err != nil {
		t.Fatal(err)
	}
	data := s3test.Bytes(5, 6*partSize)
	r := &countingReader{r: bytes.NewReader(data)}
	done := make(chan error, 1)
	go func() {
		_, err := st.Put(context.Background(), testObject("1.2.3.4.300"), r)
		done <- err
	}()
	<-client.started
	time.Sleep(300 * time.Millisecond) // give a greedy reader time to run ahead
	if n := r.n.Load(); n > 2*partSize {
		t.Errorf("read %d bytes while S3 held the first part; at most two parts (%d) may be buffered", n, 2*partSize)
	}
	close(client.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := r.n.Load(); n != int64(len(data)) {
		t.Errorf("read %d of %d bytes", n, len(data))
	}
}

func TestSSEKMSAndMetadataHygiene(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	st, err := s3store.New(context.Background(), s3store.Options{
		Bucket: bucket, Prefix: prefix, PartSize: partSize, Client: s3test.Client(srv.URL),
		KMSKeyID: "arn:aws:kms:eu-west-1:111122223333:key/test",
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, size := range []int64{100, partSize + 100} {
		obj := testObject("1.2.3.4.40" + string(rune('0'+i)))
		obj.CallingAE = "MÖD\nALITY " // from the wire: not fit for an HTTP header as is
		got, err := st.Put(context.Background(), obj, bytes.NewReader(s3test.Bytes(6, size)))
		if err != nil {
			t.Fatal(err)
		}
		_, meta, err := srv.Object(prefix + got.Key)
		if err != nil {
			t.Fatal(err)
		}
		if meta["X-Amz-Server-Side-Encryption"] != "aws:kms" || meta["X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"] != "arn:aws:kms:eu-west-1:111122223333:key/test" {
			t.Errorf("size %d: SSE headers not sent: %v", size, meta)
		}
		if ae := meta["X-Amz-Meta-Calling-Ae"]; ae != "M??D?ALITY" {
			t.Errorf("size %d: calling-ae metadata %q, want M??D?ALITY", size, ae)
		}
	}
}
