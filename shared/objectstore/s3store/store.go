// Package s3store is the objectstore.Store that streams DICOM objects into
// Amazon S3 (or any S3-compatible server) and returns only once S3 holds
// the whole object, checksummed, under a key that was free.
//
// Objects up to one part go in a single conditional PutObject; larger ones
// in a multipart upload that holds at most two part buffers, uploading one
// part while the next is read, so a slow S3 slows the reader instead of
// growing memory. Every request carries S3's full-object CRC64NVME
// checksum, which S3 verifies and the store checks in S3's answer; that
// checksum is the object's content identity, here and in the pipeline
// (docs/pipeline.md, Duplicates), and nothing else is hashed: a SHA-256
// of every byte was a third of the store's CPU (docs/performance.md).
// Objects stored by earlier versions also carry a sha256 metadata entry,
// which the pipeline still reads as their identity. Creation is
// conditional (If-None-Match: *): an identical resend (same size and
// CRC64NVME) is reported as a duplicate, a different object under a taken
// key is kept beside it under objectstore.ConflictKey named after its
// checksum, flagged with conflict=true metadata. (A multipart object's
// conflict key is named after its C-STORE, its association and receive
// time hashed: its checksum is unknown when the upload must choose its
// key.)
//
// Keys are Prefix + objectstore.Key(obj):
//
//	<prefix>incoming/<yyyy>/<mm>/<dd>/<study>/<series>/<sop>.dcm
//	<prefix>incoming/.../<sop>.conflict-<16 hex>.dcm   a different object under a taken key
//	<prefix>audit/...                                   PutRecord documents
//	<prefix>audit-runs/<instance>.json                  the SCP's run markers (markers.go), replaced and deleted
//
// The bucket should carry a lifecycle rule aborting incomplete multipart
// uploads after a day: the store aborts every upload it gives up, but an
// abort can itself fail while S3 is down.
package s3store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
)

// Store is an objectstore.Store backed by one S3 bucket and prefix. It is
// safe for concurrent use.
type Store struct {
	opts    Options
	client  Client
	log     *slog.Logger
	metrics *metrics
	// bufs[i] pools *[]byte of smallBufSizes[i], the last one of
	// PartSize. Objects are read into the small classes first, so the many
	// small images never touch (or, after a GC emptied the pool, allocate
	// and zero) a part-sized buffer.
	bufs [len(smallBufSizes) + 1]sync.Pool
	// aborts counts the aborts going on behind a Put's answer
	// (abortUpload).
	aborts sync.WaitGroup

	readyMu    sync.Mutex
	readyUntil time.Time // the cached answer holds until then
	readyErr   error
	readyKnown bool          // an answer was ever cached
	probe      chan struct{} // closed when the HeadBucket in flight ends; nil when none is
	// writeFailed is each kind of write's latest failure, until ReadyTTL
	// after it or a write of that kind succeeding: a success of another
	// kind does not answer for it.
	writeFailed [writeKinds]struct {
		err   error
		until time.Time
	}
}

var _ objectstore.Store = (*Store)(nil)

// ContentType is the Content-Type of stored objects (PS3.18 media type).
const ContentType = "application/dicom"

// New returns a Store. Without opts.Client it loads the AWS SDK's default
// configuration; it does not contact S3 (see Ready).
func New(ctx context.Context, opts Options) (*Store, error) {
	if err := opts.normalize(); err != nil {
		return nil, err
	}
	m, err := newMetrics(opts.Metrics)
	if err != nil {
		return nil, fmt.Errorf("s3store: new: register metrics: %w", err)
	}
	client := opts.Client
	if client == nil {
		cfg, err := config.LoadDefaultConfig(ctx)
		if err != nil {
			return nil, fmt.Errorf("s3store: new: load AWS config: %w", err)
		}
		client = s3.NewFromConfig(cfg, func(o *s3.Options) {
			o.UsePathStyle = opts.PathStyle
			// The store retries whole requests within RetryDeadline;
			// SDK retries underneath would multiply the time spent.
			o.RetryMaxAttempts = 1
			// Every write carries a checksum computed by the store; the
			// SDK need not compute its own.
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		})
	}
	s := &Store{opts: opts, client: client, log: opts.Logger, metrics: m}
	for i := range s.bufs {
		size := int(opts.PartSize)
		if i < len(smallBufSizes) {
			size = smallBufSizes[i]
		}
		s.bufs[i].New = func() any { b := make([]byte, size); return &b }
	}
	return s, nil
}

// Bucket returns the store's bucket.
func (s *Store) Bucket() string { return s.opts.Bucket }

// Prefix returns the store's key prefix ("" or ending in "/").
func (s *Store) Prefix() string { return s.opts.Prefix }

func (s *Store) metadata(obj objectstore.Object) map[string]string {
	m := obj.Metadata(s.opts.ImplementationVersion)
	for k, v := range m {
		m[k] = metaValue(v)
	}
	return m
}

// metaValue keeps metadata values to printable ASCII: S3 sends them as
// HTTP headers, and AE titles or addresses come from the network.
func metaValue(v string) string {
	const max = 256
	var b strings.Builder
	for i := 0; i < len(v) && b.Len() < max; i++ {
		c := v[i]
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		b.WriteByte(c)
	}
	return strings.TrimSpace(b.String())
}

// sse sets SSE-KMS on a request when a key is configured.
func (s *Store) sse() (types.ServerSideEncryption, *string) {
	if s.opts.KMSKeyID == "" {
		return "", nil
	}
	return types.ServerSideEncryptionAwsKms, aws.String(s.opts.KMSKeyID)
}

// name is how logs and errors name the object at rel: by the digest of its
// full key, the key the pipeline sees, so both name it alike.
func (s *Store) name(rel string) logname.Key { return s.opts.Names.Key(s.opts.Prefix + rel) }

// PutRecord writes a small document (an association audit record) under
// key, which must be under one of objectstore.RecordPrefixes. It never overwrites:
// writing the same bytes again is a no-op, different bytes an error.
func (s *Store) PutRecord(ctx context.Context, key string, body []byte) error {
	if !objectstore.IsRecordKey(key) || !safeKey(key) {
		return fmt.Errorf("s3store: put record: key %q not under %s or not a plain key", key, strings.Join(objectstore.RecordPrefixes, " or "))
	}
	start := time.Now()
	full := s.opts.Prefix + key
	crc := crcnvme.Base64(body)
	outcome := "error"
	defer func() { s.observe("record", outcome, start) }()
	_, err := s.putBytes(ctx, "PutRecord", full, body, crc, nil, "application/json")
	if preconditionFailed(err) {
		same, herr := s.sameObject(ctx, full, int64(len(body)), crc, nil)
		if herr != nil {
			return fmt.Errorf("s3store: put record %s: %w", key, herr)
		}
		if same == heldOther {
			return fmt.Errorf("s3store: put record %s: %w", key, objectstore.ErrRecordHeld)
		}
		outcome = "duplicate"
		return nil
	}
	if err != nil {
		return err
	}
	outcome = "stored"
	return nil
}

// safeKey rejects keys that are not plain relative paths.
func safeKey(k string) bool {
	if k == "" || len(k) > 900 || strings.HasPrefix(k, "/") || strings.HasSuffix(k, "/") {
		return false
	}
	for _, seg := range strings.Split(k, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// Ready reports whether the store takes objects: what S3 answered to the
// store's own writes (PutObject, the parts of an upload, PutRecord) while
// it has any, however slowly it answered them, or else whether the bucket
// answers (HeadBucket). A failed write stands until a write of its kind
// (writeKind) succeeds. An answer is cached for ReadyTTL, a failed
// HeadBucket for at most a second, so the SCP may call it on every
// association; a failure wraps objectstore.ErrUnavailable.
//
// A slow S3 is not a failing one: the HeadBucket runs for its own attempt
// timeout, whoever asked, and a caller that gives up before S3 answers gets
// the answer cached last, if it was a success. S3 taking 3 s a request
// while every C-STORE was stored made the health check's 3 s run out at
// every check, and every task unready (found by the operator drill).
func (s *Store) Ready(ctx context.Context) error {
	s.readyMu.Lock()
	if err := s.writeFailure(); err != nil {
		s.readyMu.Unlock()
		return err
	}
	if time.Now().Before(s.readyUntil) {
		defer s.readyMu.Unlock()
		return s.readyErr
	}
	if s.probe == nil {
		s.probe = make(chan struct{})
		go s.headBucket(s.probe)
	}
	probe, last, known := s.probe, s.readyErr, s.readyKnown
	s.readyMu.Unlock()
	select {
	case <-probe:
		s.readyMu.Lock()
		defer s.readyMu.Unlock()
		if err := s.writeFailure(); err != nil {
			return err
		}
		return s.readyErr
	case <-ctx.Done():
		if known {
			// Still ready while S3 is only slow: the HeadBucket's own
			// timeout decides.
			return last
		}
		return fmt.Errorf("s3store: ready: %w", ctx.Err())
	}
}

// headBucket is Ready's look at the bucket, one quick attempt bounded by
// the attempt timeout (at most 5 s) and not by the caller's context; it
// caches its answer and closes done.
func (s *Store) headBucket(done chan struct{}) {
	defer close(done)
	ctx, cancel := context.WithTimeout(context.Background(), min(s.opts.AttemptTimeout, 5*time.Second))
	defer cancel()
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.opts.Bucket)})
	if err != nil {
		s.log.Warn("s3 bucket not reachable", "bucket", s.opts.Bucket, "err", err)
		err = fmt.Errorf("s3store: ready: head bucket %s: %w: %w", s.opts.Bucket, objectstore.ErrUnavailable, err)
	}
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	s.probe = nil
	// Recheck a failure sooner, so associations resume quickly.
	s.cacheReady(err, min(s.opts.ReadyTTL, time.Second))
}

// writeKind is what a write stores, for Ready: each kind's failure
// stands until a write of that kind succeeds (or ReadyTTL passes), so
// the association's audit record written after its C-STORE failed does
// not make a store that takes no objects ready (a policy or a key
// refusing one prefix). Run markers are none: the audit writer's
// heartbeat failing only tells less after a crash, and a claim of a dead
// run's marker lost to another task (412) is an answer.
type writeKind int

const (
	writeObject writeKind = iota // PutObject of an object, the parts of an upload
	writeRecord                  // PutRecord
	writeKinds
)

// kindOf returns the kind of write op is, on key (the full key); false
// for a request that is none (a read, a run marker's write).
func (s *Store) kindOf(op, key string) (writeKind, bool) {
	switch op {
	case "PutRecord":
		return writeRecord, true
	case "PutObject":
		return writeObject, !strings.HasPrefix(key, s.opts.Prefix+objectstore.RunMarkersPrefix)
	case "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload":
		return writeObject, true
	}
	return 0, false
}

// wrote notes what S3 answered to one of the store's writes (op, on
// key, a request do ran) for Ready: a write S3 took says the store takes
// objects, one that failed but for the caller giving up (S3 failing it
// until the retry deadline, or refusing it: a key S3 cannot use, access
// denied) says it does not, for ReadyTTL each, until a later answer, and
// a failure until a later success of its kind.
func (s *Store) wrote(op, key string, err error) {
	kind, ok := s.kindOf(op, key)
	if !ok {
		return
	}
	if err != nil {
		err = fmt.Errorf("s3store: ready: a write failed: %w: %w", objectstore.ErrUnavailable, err)
	}
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	s.cacheReady(err, s.opts.ReadyTTL)
	s.writeFailed[kind].err, s.writeFailed[kind].until = err, s.readyUntil
}

// writeFailure returns the failure of a kind of write still standing; the
// caller holds readyMu.
func (s *Store) writeFailure() error {
	now := time.Now()
	for _, f := range s.writeFailed {
		if f.err != nil && now.Before(f.until) {
			return f.err
		}
	}
	return nil
}

// cacheReady caches Ready's answer, err, a success for ReadyTTL and a
// failure for failFor; the caller holds readyMu.
func (s *Store) cacheReady(err error, failFor time.Duration) {
	ttl := s.opts.ReadyTTL
	if err != nil {
		ttl = failFor
	}
	s.readyErr, s.readyUntil, s.readyKnown = err, time.Now().Add(ttl), true
}

func (s *Store) observe(kind, outcome string, start time.Time) {
	s.metrics.putDuration.WithLabelValues(kind, outcome).Observe(time.Since(start).Seconds())
}

// errChecksumMismatch marks S3 answering with a checksum other than the
// one sent: S3 should have refused the request, so something between us
// and S3 is broken. It is not retried.
var errChecksumMismatch = errors.New("s3store: S3 reported a different checksum")
