// Package awsadapters implements the pipeline's ports on AWS: S3 for
// objects, DynamoDB for the audit trail and the study index, EventBridge for
// events. Each adapter holds a narrow interface of the SDK client so tests
// can point it at emulators or fakes.
package awsadapters

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// S3API is the part of the S3 client the adapter uses.
type S3API interface {
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, opts ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	CopyObject(ctx context.Context, in *s3.CopyObjectInput, opts ...func(*s3.Options)) (*s3.CopyObjectOutput, error)
}

// S3Objects reads and writes objects in one bucket.
type S3Objects struct {
	Client S3API
	Bucket string
	// Names names objects in errors (which reach logs) by a keyed digest
	// of their key; the SDK's messages can hold request URLs, and so keys.
	// Nil uses a key drawn for this process (see logname).
	Names *logname.Namer
}

var (
	_ pipeline.ObjectReader  = (*S3Objects)(nil)
	_ pipeline.VersionReader = (*S3Objects)(nil)
	_ pipeline.ObjectWriter  = (*S3Objects)(nil)
)

func notFound(err error) bool {
	var nf *s3types.NotFound
	var nk *s3types.NoSuchKey
	var api smithy.APIError
	if errors.As(err, &nf) || errors.As(err, &nk) {
		return true
	}
	return errors.As(err, &api) && (api.ErrorCode() == "NotFound" || api.ErrorCode() == "NoSuchKey")
}

// Head implements pipeline.ObjectReader.
func (s *S3Objects) Head(ctx context.Context, key string) (pipeline.ObjectInfo, error) {
	out, err := s.Client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.Bucket, Key: &key, ChecksumMode: s3types.ChecksumModeEnabled})
	if err != nil {
		if notFound(err) {
			return pipeline.ObjectInfo{}, fmt.Errorf("awsadapters: head %v: %w", s.Names.Key(key), pipeline.ErrNotFound)
		}
		return pipeline.ObjectInfo{}, fmt.Errorf("awsadapters: head %v: %w", s.Names.Key(key), s.Names.Redact(err, key))
	}
	md := make(map[string]string, len(out.Metadata))
	for k, v := range out.Metadata {
		md[strings.ToLower(k)] = v
	}
	info := pipeline.ObjectInfo{
		Key: key, Size: aws.ToInt64(out.ContentLength), ETag: aws.ToString(out.ETag),
		LastModified: aws.ToTime(out.LastModified).UTC(), Metadata: md,
	}
	// A composite checksum (of the parts' checksums) says nothing about the
	// whole content; CRC64NVME is always full-object, but S3 says so too.
	if out.ChecksumType == "" || out.ChecksumType == s3types.ChecksumTypeFullObject {
		info.ChecksumCRC64NVME = aws.ToString(out.ChecksumCRC64NVME)
	}
	return info, nil
}

// OpenRange implements pipeline.ObjectReader with a ranged GetObject.
func (s *S3Objects) OpenRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	return s.openRange(ctx, key, "", offset, length)
}

// OpenVersionRange implements pipeline.VersionReader: a ranged GetObject
// conditioned on the ETag Head gave (If-Match), which S3 answers 412
// PreconditionFailed once the key holds another object.
func (s *S3Objects) OpenVersionRange(ctx context.Context, info pipeline.ObjectInfo, offset, length int64) (io.ReadCloser, error) {
	return s.openRange(ctx, info.Key, info.ETag, offset, length)
}

func (s *S3Objects) openRange(ctx context.Context, key, ifMatch string, offset, length int64) (io.ReadCloser, error) {
	if length == 0 {
		return io.NopCloser(bytes.NewReader(nil)), nil
	}
	rng := fmt.Sprintf("bytes=%d-", offset)
	if length > 0 {
		rng = fmt.Sprintf("bytes=%d-%d", offset, offset+length-1)
	}
	in := &s3.GetObjectInput{Bucket: &s.Bucket, Key: &key, Range: &rng}
	if ifMatch != "" {
		in.IfMatch = &ifMatch
	}
	out, err := s.Client.GetObject(ctx, in)
	if err != nil {
		var api smithy.APIError
		if errors.As(err, &api) && api.ErrorCode() == "InvalidRange" {
			return io.NopCloser(bytes.NewReader(nil)), nil // past the end
		}
		if preconditionFailed(err) {
			return nil, fmt.Errorf("awsadapters: get %v: %w", s.Names.Key(key), pipeline.ErrObjectChanged)
		}
		if notFound(err) {
			return nil, fmt.Errorf("awsadapters: get %v: %w", s.Names.Key(key), pipeline.ErrNotFound)
		}
		return nil, fmt.Errorf("awsadapters: get %v: %w", s.Names.Key(key), s.Names.Redact(err, key))
	}
	if length > 0 {
		// Some S3-compatible servers ignore Range: never hand out more
		// than was asked for.
		return struct {
			io.Reader
			io.Closer
		}{io.LimitReader(out.Body, length), out.Body}, nil
	}
	return out.Body, nil
}

// Put implements pipeline.ObjectWriter.
func (s *S3Objects) Put(ctx context.Context, key string, body []byte, contentType string, metadata map[string]string) error {
	_, err := s.Client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &s.Bucket, Key: &key, Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))),
		ContentType: &contentType, Metadata: metadata,
	})
	if err != nil {
		return fmt.Errorf("awsadapters: put %v: %w", s.Names.Key(key), s.Names.Redact(err, key))
	}
	return nil
}

// copySourceKey escapes key for x-amz-copy-source: as a URL path, and '+'
// too, which S3 decodes there as a space (a key holding '+' was copied
// from another, absent key: 404, and its message went to the dead-letter
// queue).
func copySourceKey(key string) string {
	return strings.ReplaceAll((&url.URL{Path: key}).EscapedPath(), "+", "%2B")
}

// preconditionFailed reports S3's 412 for a read or a copy pinned to an
// ETag the key no longer holds.
func preconditionFailed(err error) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == "PreconditionFailed"
}

// Copy implements pipeline.ObjectWriter: a server-side copy keeping the
// source's metadata and adding metadata. With src.ETag it copies that
// version or nothing: its HEAD (for the metadata and content type a
// metadata-replacing copy sets) must give that ETag, and the copy is
// conditioned on it (x-amz-copy-source-if-match), ErrObjectChanged
// otherwise; unpinned, an object replaced after the pipeline read it was
// copied into quarantine/ under the findings of the version read. Objects
// above 5 GiB would need a multipart copy; DICOM instances that large are
// not expected.
func (s *S3Objects) Copy(ctx context.Context, src pipeline.ObjectInfo, dst string, metadata map[string]string) error {
	key := src.Key
	head, err := s.Client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.Bucket, Key: &key})
	if err != nil {
		return fmt.Errorf("awsadapters: copy %v: head: %w", s.Names.Key(key), s.Names.Redact(err, key))
	}
	if src.ETag != "" && aws.ToString(head.ETag) != src.ETag {
		return fmt.Errorf("awsadapters: copy %v: %w", s.Names.Key(key), pipeline.ErrObjectChanged)
	}
	md := maps.Clone(head.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	maps.Copy(md, metadata)
	source := s.Bucket + "/" + copySourceKey(key)
	in := &s3.CopyObjectInput{
		Bucket: &s.Bucket, Key: &dst, CopySource: &source,
		MetadataDirective: s3types.MetadataDirectiveReplace, Metadata: md, ContentType: head.ContentType,
	}
	if src.ETag != "" {
		in.CopySourceIfMatch = &src.ETag
	}
	if _, err = s.Client.CopyObject(ctx, in); err != nil {
		if preconditionFailed(err) {
			return fmt.Errorf("awsadapters: copy %v: %w", s.Names.Key(key), pipeline.ErrObjectChanged)
		}
		return fmt.Errorf("awsadapters: copy %v to %v: %w", s.Names.Key(key), s.Names.Key(dst), s.Names.Redact(err, key, dst))
	}
	return nil
}
