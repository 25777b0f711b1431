package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
)

// unsignedPayload skips SigV4's SHA-256 of request bodies: integrity is
// carried by the signed x-amz-checksum-crc64nvme header, and hashing every
// byte a second time would cost throughput.
func unsignedPayload(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
}

// ErrKeyTakenConcurrently is returned (wrapped, together with
// objectstore.ErrUnavailable) when a different object took a multipart
// object's key while it was uploading. An upload is bound to its key, so
// the bytes cannot be moved to a conflict key without being sent again:
// the upload is aborted and the sender's resend, which finds the key
// taken from the start, is kept under a conflict key.
var ErrKeyTakenConcurrently = errors.New("s3store: a different object took the key during the upload")

// countingReader counts the bytes read: the object's size. Its content
// identity is S3's full-object CRC64NVME, which every request carries and
// S3 verifies; the store hashes nothing else (see the package doc). atEOF,
// when set, is called once, when the reader ends.
type countingReader struct {
	r     io.Reader
	n     int64
	atEOF func()
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err == io.EOF && c.atEOF != nil {
		c.atEOF()
		c.atEOF = nil
	}
	return n, err
}

// errPutTimeout is the cause of a Put's context ended by Options.PutTimeout.
var errPutTimeout = errors.New("s3store: the put timeout passed")

// putTimeout returns ctx ended PutTimeout after the object's last byte is
// read (hr.atEOF), and the function that releases it.
func (s *Store) putTimeout(ctx context.Context, hr *countingReader) (context.Context, func()) {
	if s.opts.PutTimeout <= 0 {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	var timer *time.Timer
	hr.atEOF = func() {
		timer = time.AfterFunc(s.opts.PutTimeout, func() {
			cancel(fmt.Errorf("%w %s after the object's last byte: %w", errPutTimeout, s.opts.PutTimeout, objectstore.ErrUnavailable))
		})
	}
	return ctx, func() {
		if timer != nil {
			timer.Stop()
		}
		cancel(nil)
	}
}

// smallBufSizes are the buffer classes below PartSize (which is at least
// 5 MiB).
var smallBufSizes = [...]int{256 << 10, 1 << 20}

// buffer is a pooled buffer and its class.
type buffer struct {
	b     *[]byte
	class int
}

func (s *Store) getBuf(class int) buffer { return buffer{s.bufs[class].Get().(*[]byte), class} }
func (s *Store) putBuf(b buffer)         { s.bufs[b.class].Put(b.b) }
func (s *Store) partBuf() buffer         { return s.getBuf(len(s.bufs) - 1) }

// readFirst reads up to one part, growing through the buffer classes: it
// returns the buffer, the bytes read and the error that ended the read
// (nil when a whole part was read).
func (s *Store) readFirst(r io.Reader) (buffer, int, error) {
	buf := s.getBuf(0)
	n := 0
	for {
		m, err := io.ReadFull(r, (*buf.b)[n:])
		n += m
		if err != nil || buf.class == len(s.bufs)-1 {
			return buf, n, err
		}
		bigger := s.getBuf(buf.class + 1)
		copy(*bigger.b, (*buf.b)[:n])
		s.putBuf(buf)
		buf = bigger
	}
}

// Put streams part10 into S3 under the object's key and returns once S3
// holds all of it. See the package doc for duplicates and conflicts.
// Errors wrapping objectstore.ErrUnavailable are transient; a reader error
// or a cancelled ctx aborts the upload and is returned wrapped.
func (s *Store) Put(ctx context.Context, obj objectstore.Object, part10 io.Reader) (st objectstore.Stored, err error) {
	rel, err := objectstore.Key(obj)
	if err != nil {
		return st, fmt.Errorf("s3store: put: %w", err)
	}
	// Whatever a lower layer said about the key, the caller logs its name.
	defer func() { err = s.opts.Names.Redact(err, s.opts.Prefix+rel) }()
	start := time.Now()
	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()

	hr := &countingReader{r: part10}
	ctx, release := s.putTimeout(ctx, hr)
	defer release()
	first, n, rerr := s.readFirst(hr)
	var next buffer // the second part's buffer, when the object needs one
	defer func() {
		s.putBuf(first)
		if next.b != nil {
			s.putBuf(next)
		}
	}()
	if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
		return st, fmt.Errorf("s3store: put %v: read object: %w", s.name(rel), rerr)
	}
	kind := "single"
	if rerr == nil {
		// The first part is full: peek for more before choosing multipart,
		// so an object of exactly PartSize is still one PutObject.
		next = s.partBuf()
		m, perr := io.ReadFull(hr, *next.b)
		if perr != nil && perr != io.EOF && perr != io.ErrUnexpectedEOF {
			return st, fmt.Errorf("s3store: put %v: read object: %w", s.name(rel), perr)
		}
		if m > 0 {
			kind = "multipart"
			st, err = s.putMultipart(ctx, obj, rel, hr, *first.b, (*next.b)[:m], perr)
			s.observe(kind, outcome(st, err), start)
			return st, err
		}
	}
	body := (*first.b)[:n]
	st, err = s.putSingle(ctx, obj, rel, body, crcnvme.Checksum(body))
	s.observe(kind, outcome(st, err), start)
	return st, err
}

func outcome(st objectstore.Stored, err error) string {
	if err != nil {
		return "error"
	}
	return st.Outcome()
}

func (s *Store) putSingle(ctx context.Context, obj objectstore.Object, rel string, body []byte, crc uint64) (objectstore.Stored, error) {
	st := objectstore.Stored{Key: rel, Size: int64(len(body))}
	crcB64 := crcnvme.Encode(crc)
	meta := s.metadata(obj)
	full := s.opts.Prefix + rel
	retried, err := s.putBytes(ctx, "PutObject", full, body, crcB64, meta, ContentType)
	if err == nil {
		s.metrics.bytes.Add(float64(len(body)))
		return st, nil
	}
	if !preconditionFailed(err) {
		return st, err
	}
	if retried {
		mine, err := s.isOurUpload(ctx, full, obj, st.Size, crcB64)
		if err != nil {
			return st, fmt.Errorf("s3store: put %v: %w", s.name(rel), err)
		}
		if mine {
			s.metrics.bytes.Add(float64(len(body)))
			return st, nil
		}
	}
	same, err := s.sameObject(ctx, full, st.Size, crcB64, &obj)
	if err != nil {
		return st, fmt.Errorf("s3store: put %v: %w", s.name(rel), err)
	}
	if same != heldOther {
		st.Duplicate, st.SameTransfer = true, same == heldThisTransfer
		s.log.Info("identical object already stored", "object", s.name(rel), "association", obj.AssociationID)
		return st, nil
	}
	// A different object holds the key: keep this one beside it, named
	// after its own checksum.
	st.Key = objectstore.ChecksumConflictKey(rel, crc)
	st.Conflict = true
	full = s.opts.Prefix + st.Key
	meta[objectstore.MetaConflict] = "true"
	log := s.log.With("object", s.name(rel), "conflict_object", s.name(st.Key), "association", obj.AssociationID)
	retried, err = s.putBytes(ctx, "PutObject", full, body, crcB64, meta, ContentType)
	if err == nil {
		s.metrics.bytes.Add(float64(len(body)))
		logConflict(log, st, retried)
		return st, nil
	}
	if !preconditionFailed(err) {
		return st, err
	}
	same, err = s.sameObject(ctx, full, st.Size, crcB64, &obj)
	if err != nil {
		return st, fmt.Errorf("s3store: put %v: %w", s.name(st.Key), err)
	}
	if same == heldOther {
		return st, fmt.Errorf("s3store: put %v: conflict key also holds a different object", s.name(st.Key))
	}
	if retried && same == heldThisTransfer {
		// An attempt of this upload stored the copy and lost its answer,
		// as isOurUpload tells for the object's own key: stored, not a
		// duplicate (ingest would answer it as already held).
		s.metrics.bytes.Add(float64(len(body)))
		logConflict(log, st, retried)
		return st, nil
	}
	st.Duplicate, st.SameTransfer = true, same == heldThisTransfer
	logConflict(log, st, retried)
	return st, nil
}

// logConflict logs a conflicting object kept under its conflict key
// (st.Conflict), once the key holds it: warned of by the upload that put
// it there (st.KeptBeside, the SCP's rule), and at info level when the
// copy found there came from this very C-STORE but not from this upload
// (st.SameTransfer, retried false: the staged store uploading it again
// after its task died), whose first upload warned, or from another
// C-STORE (an identical resend of the bytes kept beside: nothing new is
// stored). retried: an attempt of this upload lost its answer, so the copy
// found may be its own.
func logConflict(log *slog.Logger, st objectstore.Stored, retried bool) {
	switch {
	case st.KeptBeside() || st.SameTransfer && retried:
		log.Warn("different object already holds the key; storing under conflict key")
	case st.SameTransfer:
		log.Info("conflict copy of this C-STORE already stored")
	default:
		log.Info("identical object already stored")
	}
}

// putBytes is a conditional PutObject of an in-memory body, retried. A
// 412 is returned unwrapped-checkable with preconditionFailed.
//
// retried reports that an earlier attempt's outcome is unknown (it may
// have been stored and only the answer lost: outcomeUnknown), which
// matters after a 412; an attempt S3 refused (a 503 SlowDown, a 4xx)
// stored nothing.
func (s *Store) putBytes(ctx context.Context, op, key string, body []byte, crcB64 string, meta map[string]string, contentType string) (retried bool, err error) {
	sse, kms := s.sse()
	var precondition error
	err = s.do(ctx, op, key, s.attemptTimeout(int64(len(body))), s.opts.RetryDeadline, func(ctx context.Context) error {
		out, err := s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket:               aws.String(s.opts.Bucket),
			Key:                  aws.String(key),
			Body:                 bytes.NewReader(body),
			ContentLength:        aws.Int64(int64(len(body))),
			ContentType:          aws.String(contentType),
			Metadata:             meta,
			IfNoneMatch:          aws.String("*"),
			ChecksumAlgorithm:    types.ChecksumAlgorithmCrc64nvme,
			ChecksumCRC64NVME:    aws.String(crcB64),
			ServerSideEncryption: sse,
			SSEKMSKeyId:          kms,
		}, unsignedPayload)
		if preconditionFailed(err) {
			precondition = err
			return nil
		}
		if err == nil {
			err = checkCRC(out.ChecksumCRC64NVME, crcB64)
		}
		retried = retried || outcomeUnknown(err)
		return err
	})
	if err != nil {
		return retried, err
	}
	return retried, precondition
}

func checkCRC(got *string, want string) error {
	// An S3-compatible server without checksum support answers none; AWS
	// always echoes the checksum it verified.
	if got == nil || *got == "" || *got == want {
		return nil
	}
	return fmt.Errorf("%w: sent CRC64NVME %s, S3 answered %s", errChecksumMismatch, want, *got)
}

// held is what a key found taken holds, beside the object that was to be
// put there.
type held int

const (
	heldOther        held = iota // other bytes
	heldSame                     // the same bytes, from another transfer
	heldThisTransfer             // the same bytes from this very C-STORE (its association and receive time): an earlier upload of it
)

// sameObject reports whether key holds exactly the object described by
// size and full-object CRC64NVME, and, for an object obj (nil for a
// record), whether it was this very transfer's. Objects written by this
// store always carry one; an object without (written by something else) is
// never the same, since nothing was compared.
func (s *Store) sameObject(ctx context.Context, key string, size int64, crcB64 string, obj *objectstore.Object) (held, error) {
	var head *s3.HeadObjectOutput
	err := s.do(ctx, "HeadObject", key, s.attemptTimeout(0), s.opts.RetryDeadline, func(ctx context.Context) error {
		var err error
		head, err = s.client.HeadObject(ctx, &s3.HeadObjectInput{
			Bucket:       aws.String(s.opts.Bucket),
			Key:          aws.String(key),
			ChecksumMode: types.ChecksumModeEnabled,
		})
		return err
	})
	if notFound(err) {
		// Taken a moment ago, gone now (deleted or a lifecycle rule):
		// let the sender try again rather than guess.
		return heldOther, fmt.Errorf("existing object vanished: %w: %w", objectstore.ErrUnavailable, err)
	}
	if err != nil {
		return heldOther, err
	}
	if existing := aws.ToString(head.ChecksumCRC64NVME); head.ContentLength == nil || *head.ContentLength != size || existing == "" || existing != crcB64 {
		return heldOther, nil
	}
	if obj != nil && s.fromTransfer(head.Metadata, *obj) {
		return heldThisTransfer, nil
	}
	return heldSame, nil
}

// fromTransfer reports whether an object's metadata md names obj's very
// C-STORE (its association and receive time, as this store writes them):
// what tells an earlier upload of this transfer from another transfer's
// identical bytes.
func (s *Store) fromTransfer(md map[string]string, obj objectstore.Object) bool {
	want := s.metadata(obj)
	return md[objectstore.MetaAssociationID] == want[objectstore.MetaAssociationID] &&
		md[objectstore.MetaReceivedAt] == want[objectstore.MetaReceivedAt]
}
