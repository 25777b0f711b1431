package s3test_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
)

// emulators are the two S3 endpoints of the tests, each with its clock.
var emulators = []struct {
	name  string
	start func(t *testing.T) (url string, clock *s3test.Clock)
}{
	{"server", func(t *testing.T) (string, *s3test.Clock) {
		srv := s3test.NewServer(t, "bucket")
		return srv.URL, srv.Clock
	}},
	{"sink", func(t *testing.T) (string, *s3test.Clock) {
		k := s3test.NewSink(t)
		return k.URL, k.Clock
	}},
}

// onEach runs test on a fresh emulator of each kind, with a client.
func onEach(t *testing.T, test func(t *testing.T, c *s3.Client, clock *s3test.Clock)) {
	for _, e := range emulators {
		t.Run(e.name, func(t *testing.T) {
			url, clock := e.start(t)
			test(t, s3test.Client(url), clock)
		})
	}
}

// TestClock: an object's Last-Modified (GetObject, HeadObject,
// ListObjectsV2) and every answer's Date are the emulator's time, which a
// test advances: an object then reads as older by as much, and a write
// after is stamped later by as much; the clocks of its clients play no
// part.
func TestClock(t *testing.T) {
	onEach(t, func(t *testing.T, c *s3.Client, clock *s3test.Clock) {
		ctx := context.Background()
		put := func(key string) time.Time {
			t.Helper()
			putObject(t, c, key, "{}")
			return clock.Now()
		}
		// age is how old key is to the emulator: Date less Last-Modified,
		// both of one GetObject, as the run markers read it.
		age := func(key string) time.Duration {
			t.Helper()
			out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bucket"), Key: aws.String(key)})
			if err != nil {
				t.Fatal(err)
			}
			_ = out.Body.Close()
			date, ok := awsmiddleware.GetServerTime(out.ResultMetadata)
			if !ok || out.LastModified == nil {
				t.Fatalf("GetObject without Date (%v) or Last-Modified (%v)", ok, out.LastModified)
			}
			return date.Sub(*out.LastModified)
		}
		within := func(what string, got, want time.Duration) {
			t.Helper()
			if got < want-time.Second || got > want+time.Second { // whole seconds, as S3's
				t.Errorf("%s = %s, want %s within a second", what, got, want)
			}
		}
		written := put("a")
		within("age when written", age("a"), 0)
		clock.Advance(time.Hour)
		within("age after an hour on the emulator's clock", age("a"), time.Hour)
		head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bucket"), Key: aws.String("a")})
		if err != nil || head.LastModified == nil {
			t.Fatalf("HeadObject = %+v, %v", head, err)
		}
		within("HeadObject's Last-Modified against the write", head.LastModified.Sub(written), 0)
		list, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("bucket")})
		if err != nil || len(list.Contents) != 1 || list.Contents[0].LastModified == nil {
			t.Fatalf("ListObjectsV2 = %+v, %v", list, err)
		}
		within("ListObjectsV2's LastModified against the write", list.Contents[0].LastModified.Sub(written), 0)
		if date, ok := awsmiddleware.GetServerTime(list.ResultMetadata); !ok {
			t.Error("ListObjectsV2 without Date")
		} else {
			within("ListObjectsV2's Date against the real time", time.Until(date), time.Hour)
		}
		later := put("b")
		within("a write after the advance, against the real time", time.Until(later), time.Hour)
		within("its age", age("b"), 0)
	})
}

// TestConditionalDelete: DeleteObject with If-Match deletes only the
// version of that ETag: 412 PreconditionFailed for another, leaving it;
// 404 where the key has none, as S3 answers.
func TestConditionalDelete(t *testing.T) {
	onEach(t, func(t *testing.T, c *s3.Client, _ *s3test.Clock) {
		ctx := context.Background()
		del := func(ifMatch string) int {
			t.Helper()
			_, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("bucket"), Key: aws.String("m"), IfMatch: aws.String(ifMatch)})
			if err == nil {
				return http.StatusNoContent
			}
			var re *smithyhttp.ResponseError
			if !errors.As(err, &re) {
				t.Fatal(err)
			}
			return re.HTTPStatusCode()
		}
		exists := func() bool {
			_, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bucket"), Key: aws.String("m")})
			return err == nil
		}
		first := putObject(t, c, "m", `{"v":1}`)
		second := putObject(t, c, "m", `{"v":2}`)
		if first == second {
			t.Fatalf("two versions of one ETag %s", first)
		}
		if got := del(first); got != http.StatusPreconditionFailed || !exists() {
			t.Errorf("delete over a replaced version: %d, exists %v; want 412, kept", got, exists())
		}
		if got := del(second); got != http.StatusNoContent || exists() {
			t.Errorf("delete over the current version: %d, exists %v; want 204, gone", got, exists())
		}
		if got := del(second); got != http.StatusNotFound {
			t.Errorf("delete with If-Match where none is: %d, want 404", got)
		}
	})
}

// putObject writes body under key in the bucket and returns its ETag.
func putObject(t *testing.T, c *s3.Client, key, body string) string {
	t.Helper()
	out, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("bucket"), Key: aws.String(key), Body: strings.NewReader(body)})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.ETag)
}
