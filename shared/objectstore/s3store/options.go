package s3store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/shared/logname"
)

// Limits and defaults of Options.
const (
	// DefaultPartSize is the multipart part size when Options.PartSize is 0.
	DefaultPartSize = 8 << 20
	// MinPartSize is S3's smallest part size (every part but the last).
	MinPartSize = 5 << 20
	// MaxPartSize is S3's largest part size.
	MaxPartSize = 5 << 30

	DefaultRetryDeadline  = 20 * time.Second
	DefaultAttemptTimeout = 5 * time.Second
	DefaultReadyTTL       = 5 * time.Second

	// MinAttemptRate is the slowest an attempt may send its body: an
	// attempt carrying one has AttemptTimeout plus the body's time at this
	// rate (an 8 MiB part: 9 s). S3 through a VPC endpoint sends tens of
	// MB/s on one connection.
	MinAttemptRate = 2 << 20
	// completeAttempts is how many AttemptTimeouts a
	// CompleteMultipartUpload attempt may take: S3 may take a while to
	// assemble a large upload, keeping the connection alive meanwhile.
	completeAttempts = 6
)

// Client is the subset of the S3 API the store uses; *s3.Client implements
// it, and tests inject fakes.
type Client interface {
	PutObject(ctx context.Context, in *s3.PutObjectInput, optFns ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, optFns ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	HeadBucket(ctx context.Context, in *s3.HeadBucketInput, optFns ...func(*s3.Options)) (*s3.HeadBucketOutput, error)
	CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, optFns ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error)
	UploadPart(ctx context.Context, in *s3.UploadPartInput, optFns ...func(*s3.Options)) (*s3.UploadPartOutput, error)
	CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, optFns ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error)
	AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, optFns ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error)
	ListMultipartUploads(ctx context.Context, in *s3.ListMultipartUploadsInput, optFns ...func(*s3.Options)) (*s3.ListMultipartUploadsOutput, error)
	// For the run markers (markers.go).
	ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, optFns ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	GetObject(ctx context.Context, in *s3.GetObjectInput, optFns ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, optFns ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

var _ Client = (*s3.Client)(nil)

// Options configures a Store. Only Bucket is required.
type Options struct {
	// Bucket and Prefix locate the store root: every key is Prefix + an
	// objectstore key. Prefix is normalised to end in "/" when not empty.
	Bucket string
	Prefix string

	// PathStyle selects path-style addressing (S3-compatible servers;
	// SCP_S3_PATH_STYLE). Ignored when Client is set.
	PathStyle bool
	// KMSKeyID, when set, stores every object with SSE-KMS under this key
	// id or ARN (SCP_S3_KMS_KEY). Empty leaves the bucket default.
	KMSKeyID string

	// PartSize is the multipart part size (default 8 MiB, at least 5 MiB).
	// Objects up to PartSize go in one PutObject; each upload holds at most
	// two part buffers, so memory per concurrent Put is about 2*PartSize.
	PartSize int64
	// RetryDeadline bounds how long one S3 request is retried on transient
	// errors before Put fails with objectstore.ErrUnavailable (default 20 s).
	RetryDeadline time.Duration
	// AttemptTimeout bounds a single S3 request attempt without a body
	// (a body adds its time at MinAttemptRate), so a stalled connection
	// becomes a retry within RetryDeadline (default 5 s). It was 2 min,
	// past the deadline: a stalled request was never retried, and the
	// C-STORE answered after the PACS had given up (DCMTK waits 60 s).
	AttemptTimeout time.Duration
	// PutTimeout bounds what is left of a Put once its object's last byte
	// has been read: every request still to make (a small object's whole
	// PutObject, a large one's last part, the rest of the part uploading
	// then, and CompleteMultipartUpload: up to two parts to send; the
	// looks at a key found taken), retries included, shares it, and the
	// request in flight when it ends is cancelled. The Put then fails with
	// objectstore.ErrUnavailable, and counts as a failed write in Ready
	// when S3 failed an attempt of the request it cut (see ended).
	// The sender waits for the C-STORE's answer from about the moment that
	// byte left it: each request's RetryDeadline alone let a 503 storm
	// answer A700 after 19-20 s (several requests: more), when Orthanc,
	// at its DicomScuTimeout default of 10 s, had aborted the association
	// and counted the object failed without our answer. 0: none, each
	// request bounded by RetryDeadline only (a staged store's uploads, with
	// nobody waiting).
	PutTimeout time.Duration
	// ReadyTTL is how long a Ready answer stands (default 5 s): a
	// HeadBucket's success, and what S3 answered to the store's writes,
	// each kind (objects, records) for itself: a failure stands until a
	// write of its kind succeeds or ReadyTTL passes (see Ready).
	ReadyTTL time.Duration

	// ImplementationVersion is recorded in every object's
	// implementation-version metadata.
	ImplementationVersion string

	// Client overrides the S3 client. When nil, New builds one from the
	// AWS SDK's default configuration (credential chain, AWS_REGION,
	// AWS_ENDPOINT_URL_S3) with SDK-level retries off: the store retries.
	Client Client
	// Logger receives operational logs (object names, association ids,
	// never keys or patient data). Nil discards.
	Logger *slog.Logger
	// Names names objects in logs and errors by a keyed digest of their
	// full key (see logname). Nil uses a key drawn for this process.
	Names *logname.Namer
	// Metrics, when set, receives the dicom_ingest_s3_* collectors.
	Metrics prometheus.Registerer
}

// ErrBadURL is returned by ParseURL for anything but s3://bucket[/prefix].
var ErrBadURL = errors.New("s3store: bad store URL")

// ParseURL splits "s3://bucket/prefix" into bucket and prefix. The prefix
// is returned without a leading slash and, when not empty, with a trailing
// one.
func ParseURL(raw string) (bucket, prefix string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	if u.Scheme != "s3" || u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("%w: %q: want s3://bucket/prefix", ErrBadURL, raw)
	}
	if !validBucket(u.Host) {
		return "", "", fmt.Errorf("%w: %q: bucket name %q is not a valid S3 bucket name", ErrBadURL, raw, u.Host)
	}
	p, err := normalizePrefix(u.Path)
	if err != nil {
		return "", "", fmt.Errorf("%w: %q: %w", ErrBadURL, raw, err)
	}
	return u.Host, p, nil
}

func normalizePrefix(p string) (string, error) {
	p = strings.TrimLeft(p, "/")
	if p == "" {
		return "", nil
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	for _, seg := range strings.Split(strings.TrimSuffix(p, "/"), "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("prefix %q has an empty, . or .. segment", p)
		}
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("prefix has a control character")
		}
	}
	return p, nil
}

// validBucket follows S3's general purpose bucket naming rules closely
// enough to catch typos: 3-63 lowercase letters, digits, dots and hyphens,
// starting and ending with a letter or digit.
func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		alnum := (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
		if !alnum && c != '.' && c != '-' {
			return false
		}
		if (i == 0 || i == len(b)-1) && !alnum {
			return false
		}
	}
	return !strings.Contains(b, "..")
}

func (o *Options) normalize() error {
	if !validBucket(o.Bucket) {
		return fmt.Errorf("s3store: new: invalid bucket name %q", o.Bucket)
	}
	p, err := normalizePrefix(o.Prefix)
	if err != nil {
		return fmt.Errorf("s3store: new: %w", err)
	}
	o.Prefix = p
	if o.PartSize == 0 {
		o.PartSize = DefaultPartSize
	}
	if o.PartSize < MinPartSize || o.PartSize > MaxPartSize {
		return fmt.Errorf("s3store: new: part size %d outside [%d, %d]", o.PartSize, MinPartSize, MaxPartSize)
	}
	if o.PutTimeout < 0 {
		return fmt.Errorf("s3store: new: put timeout %s is negative", o.PutTimeout)
	}
	if o.RetryDeadline <= 0 {
		o.RetryDeadline = DefaultRetryDeadline
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = DefaultAttemptTimeout
	}
	if o.ReadyTTL <= 0 {
		o.ReadyTTL = DefaultReadyTTL
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
