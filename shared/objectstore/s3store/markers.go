package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
)

// The SCP's run markers (objectstore.RunMarkersPrefix): small documents,
// each named by a process instance id, that the SCP rewrites while it
// lives. Unlike records they are replaced, conditionally where two
// processes may race (If-Match on the ETag read), and deleted.

// maxMarker bounds a marker read: they are a few hundred bytes.
const maxMarker = 64 << 10

func (s *Store) markerKey(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/\\") || name != path.Clean(name) || !safeKey(name) {
		return "", fmt.Errorf("s3store: run marker name %q is not a plain name", name)
	}
	return s.opts.Prefix + objectstore.RunMarkersPrefix + name, nil
}

// ListMarkers returns the names of the run markers.
func (s *Store) ListMarkers(ctx context.Context) ([]string, error) {
	prefix := s.opts.Prefix + objectstore.RunMarkersPrefix
	var names []string
	var token *string
	for {
		var out *s3.ListObjectsV2Output
		err := s.do(ctx, "ListObjectsV2", prefix, s.attemptTimeout(0), s.opts.RetryDeadline, func(ctx context.Context) error {
			var err error
			out, err = s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
				Bucket: aws.String(s.opts.Bucket), Prefix: aws.String(prefix), ContinuationToken: token,
			})
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, o := range out.Contents {
			if name := strings.TrimPrefix(aws.ToString(o.Key), prefix); name != "" && !strings.Contains(name, "/") {
				names = append(names, name)
			}
		}
		if !aws.ToBool(out.IsTruncated) || out.NextContinuationToken == nil {
			return names, nil
		}
		token = out.NextContinuationToken
	}
}

// GetMarker returns a run marker with its ETag, when it was last written
// (Last-Modified) and when it was read (the answer's Date), both by S3's
// clock; a marker gone meanwhile is objectstore.ErrMarkerChanged.
func (s *Store) GetMarker(ctx context.Context, name string) (objectstore.Marker, error) {
	key, err := s.markerKey(name)
	if err != nil {
		return objectstore.Marker{}, err
	}
	var m objectstore.Marker
	err = s.do(ctx, "GetObject", key, s.attemptTimeout(maxMarker), s.opts.RetryDeadline, func(ctx context.Context) error {
		out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.opts.Bucket), Key: aws.String(key)})
		if err != nil {
			return err
		}
		defer out.Body.Close() //nolint:errcheck // a read body: nothing to report
		m.Body, err = io.ReadAll(io.LimitReader(out.Body, maxMarker))
		m.ETag, m.Written = aws.ToString(out.ETag), aws.ToTime(out.LastModified)
		m.Read, _ = awsmiddleware.GetServerTime(out.ResultMetadata)
		return err
	})
	switch {
	case notFound(err):
		return objectstore.Marker{}, fmt.Errorf("s3store: run marker %s: %w", name, objectstore.ErrMarkerChanged)
	case err != nil:
		return objectstore.Marker{}, err
	case m.Written.IsZero() || m.Read.IsZero():
		// Without both, its age cannot be told on S3's clock, and no
		// other clock may tell it.
		return objectstore.Marker{}, fmt.Errorf("s3store: run marker %s: the answer lacks Last-Modified or Date", name)
	case m.ETag == "":
		return objectstore.Marker{}, fmt.Errorf("s3store: run marker %s: %w", name, errNoETag)
	}
	return m, nil
}

// PutMarker writes a run marker and returns the ETag of what it wrote:
// unconditionally when ifMatch is "", else only over the version whose ETag
// it is (objectstore.ErrMarkerChanged when another was written, or it
// went, since).
func (s *Store) PutMarker(ctx context.Context, name string, body []byte, ifMatch string) (etag string, err error) {
	key, err := s.markerKey(name)
	if err != nil {
		return "", err
	}
	sse, kms := s.sse()
	err = s.do(ctx, "PutObject", key, s.attemptTimeout(int64(len(body))), s.opts.RetryDeadline, func(ctx context.Context) error {
		in := &s3.PutObjectInput{
			Bucket: aws.String(s.opts.Bucket), Key: aws.String(key), Body: bytes.NewReader(body),
			ContentLength: aws.Int64(int64(len(body))), ContentType: aws.String("application/json"),
			ServerSideEncryption: sse, SSEKMSKeyId: kms,
		}
		if ifMatch != "" {
			in.IfMatch = aws.String(ifMatch)
		}
		out, err := s.client.PutObject(ctx, in, unsignedPayload)
		if err == nil {
			etag = aws.ToString(out.ETag)
		}
		return err
	})
	if ifMatch != "" && (preconditionFailed(err) || notFound(err)) {
		return "", fmt.Errorf("s3store: run marker %s: %w", name, objectstore.ErrMarkerChanged)
	}
	if err == nil && etag == "" {
		return "", fmt.Errorf("s3store: run marker %s: %w", name, errNoETag)
	}
	return etag, err
}

// errNoETag is an answer about a run marker without its ETag, which S3
// always gives: the conditional writes and deletes that let one task claim
// a dead run's marker, and remove only its claim, go by it, and an empty
// If-Match would make them unconditional.
var errNoETag = errors.New("the answer lacks an ETag, which claims and deletes of run markers are conditional on")

// DeleteMarker removes a run marker (none is no error): unconditionally
// when ifMatch is "", else only the version whose ETag it is (If-Match,
// S3's conditional delete: objectstore.ErrMarkerChanged when another was
// written since). It needs no permission beyond s3:DeleteObject and the
// s3:GetObject the markers are read with.
func (s *Store) DeleteMarker(ctx context.Context, name, ifMatch string) error {
	key, err := s.markerKey(name)
	if err != nil {
		return err
	}
	err = s.do(ctx, "DeleteObject", key, s.attemptTimeout(0), s.opts.RetryDeadline, func(ctx context.Context) error {
		in := &s3.DeleteObjectInput{Bucket: aws.String(s.opts.Bucket), Key: aws.String(key)}
		if ifMatch != "" {
			in.IfMatch = aws.String(ifMatch)
		}
		_, err := s.client.DeleteObject(ctx, in)
		return err
	})
	switch {
	case notFound(err):
		return nil
	case ifMatch != "" && preconditionFailed(err):
		return fmt.Errorf("s3store: run marker %s: %w", name, objectstore.ErrMarkerChanged)
	}
	return err
}
