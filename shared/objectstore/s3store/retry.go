package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
)

const (
	firstBackoff = 100 * time.Millisecond
	maxBackoff   = 2 * time.Second
)

// do runs fn until it succeeds, fails permanently, ctx ends or the retry
// deadline passes. Each attempt gets perAttempt (attemptTimeout) so a stalled
// connection turns into a retry rather than a hang. Exhausted retries wrap
// objectstore.ErrUnavailable; a cancelled ctx is returned as is (wrapped).
//
// Errors name key by its digest (logname): the SDK's own messages can carry
// the request URL, and with it the key and its UIDs.
func (s *Store) do(ctx context.Context, op, key string, perAttempt, deadline time.Duration, fn func(ctx context.Context) error) error {
	start := time.Now()
	backoff := firstBackoff
	failed := false // an attempt failed by S3's answer or its own timeout
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, perAttempt)
		err := fn(actx)
		attemptTimedOut := actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			s.wrote(op, key, nil)
			return nil
		}
		err = s.opts.Names.Redact(err, key)
		name := s.opts.Names.Key(key)
		if ctx.Err() != nil {
			return s.ended(ctx, op, key, err, failed)
		}
		failed = true
		if !attemptTimedOut && !transient(err) {
			err = fmt.Errorf("s3store: %s %v: %w", op, name, err)
			s.wrote(op, key, err)
			return err
		}
		// Full jitter keeps many SCP tasks from retrying in lockstep.
		sleep := backoff/2 + rand.N(backoff/2+1)
		if time.Since(start)+sleep > deadline {
			err = fmt.Errorf("s3store: %s %v: gave up after %d attempts in %s: %w: %w", op, name, attempt, time.Since(start).Round(time.Millisecond), objectstore.ErrUnavailable, err)
			s.wrote(op, key, err)
			return err
		}
		s.metrics.retries.WithLabelValues(op).Inc()
		s.log.Debug("s3 request failed, retrying", "op", op, "object", name, "attempt", attempt, "err", err)
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return s.ended(ctx, op, key, err, failed)
		case <-t.C:
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// ended is do's error when ctx ended during op's attempts (last, the last
// attempt's error, redacted): its cause, with last. A Put's timeout
// (errPutTimeout) after S3 failed an attempt (failed: an error, or an
// attempt past its own timeout) is a failed write for Ready, as exhausted
// retries are; one that cut the first attempt while S3 was still on it,
// or a cancelled ctx (the association gone), is the caller giving up and
// says nothing of S3 but that it is slower than the caller waits: S3
// taking 3 s a request and storing every object, a large one's three
// last requests in a row ran past the 8 s, and each made the task unready.
func (s *Store) ended(ctx context.Context, op, key string, last error, failed bool) error {
	cause := context.Cause(ctx)
	err := fmt.Errorf("s3store: %s %v: %w (%w)", op, s.opts.Names.Key(key), cause, last)
	if failed && errors.Is(cause, errPutTimeout) {
		s.wrote(op, key, err)
	}
	return err
}

// attemptTimeout is how long one attempt sending body bytes may take (see
// Options.AttemptTimeout).
func (s *Store) attemptTimeout(body int64) time.Duration {
	return s.opts.AttemptTimeout + time.Duration(body)*time.Second/MinAttemptRate
}

var retryables = retry.IsErrorRetryables(retry.DefaultRetryables)

// transient reports whether err is worth retrying: throttling, 5xx, broken
// or refused connections, timeouts, and S3's own "try again" codes.
func transient(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	switch apiCode(err) {
	case "ConditionalRequestConflict", // concurrent conditional writes: retry
		"BadDigest", "XAmzContentSHA256Mismatch", // corrupted in transit
		"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed":
		return true
	}
	if code := httpStatus(err); code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout {
		return true
	}
	if retryables.IsErrorRetryable(err) == aws.TrueTernary {
		return true
	}
	var sendErr *smithyhttp.RequestSendError
	var netErr net.Error
	return errors.As(err, &sendErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, context.DeadlineExceeded)
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// outcomeUnknown reports whether a write whose attempt ended in err may
// have been carried out all the same: S3 gave no answer (a reset, a
// timeout), no whole one (a 2xx status whose body was cut, timed out or
// is an error: S3 answers a Complete 200 at once and its result only once
// done), an error that promises nothing of the write (a 500 InternalError,
// any 5xx but S3's SlowDown), or answered with a checksum other than the
// one sent. One S3 refused (a 503 SlowDown, a 4xx) did nothing.
//
// Only SlowDown makes a 503 a refusal: S3's throttling, refusing requests
// before it takes them. A 503 from something in front of S3 (a proxy, a
// VPC endpoint) promises nothing, and has no S3 code to tell it by: the
// SDK names a 503 without an S3 error body ServiceUnavailable from its
// status, as it names S3's own ServiceUnavailable, so that code tells
// neither. Every 503 counted as a refusal: a conflicting object's write
// taken behind such a 503 and retried, refused by its own copy, was
// reported a duplicate of itself.
func outcomeUnknown(err error) bool {
	if err == nil {
		return false
	}
	status := httpStatus(err)
	return status == 0 || status/100 == 2 || (status/100 == 5 && !slowDown(err)) ||
		errors.Is(err, errChecksumMismatch)
}

// slowDown reports S3's 503 SlowDown, its refusal of a request it did not
// take.
func slowDown(err error) bool {
	return httpStatus(err) == http.StatusServiceUnavailable && apiCode(err) == "SlowDown"
}

// preconditionFailed reports S3's answer to If-None-Match: * on an
// existing key.
func preconditionFailed(err error) bool {
	return httpStatus(err) == http.StatusPreconditionFailed || apiCode(err) == "PreconditionFailed"
}

func notFound(err error) bool {
	c := apiCode(err)
	return httpStatus(err) == http.StatusNotFound || c == "NotFound" || c == "NoSuchKey" || c == "NoSuchUpload"
}
