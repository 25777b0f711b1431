package s3store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
)

// abortDeadline is how long an abort is retried: longer than a put's retry
// deadline, because a leaked upload costs storage until a lifecycle rule
// removes it.
const abortDeadline = time.Minute

// putMultipart uploads first (full), then next (m bytes already read,
// readErr the error that ended that read) and the rest of hr. At any time
// one part is uploading while the other buffer is being filled; the reader
// is not read further until the upload in flight has finished.
//
// An upload is bound to its key, so whether the key is free is asked
// before the upload starts: when it is taken, the upload goes to a fresh
// conflict key and, once the whole object is known, is either dropped (an
// identical resend) or completed there, flagged. A multipart conflict key
// is named after the transfer (transferID) rather than the checksum, which
// is unknown until the end.
func (s *Store) putMultipart(ctx context.Context, obj objectstore.Object, rel string, hr *countingReader, first, next []byte, readErr error) (st objectstore.Stored, err error) {
	st = objectstore.Stored{Key: rel}
	taken, err := s.exists(ctx, s.opts.Prefix+rel)
	if err != nil {
		return st, err
	}
	meta := s.metadata(obj)
	if taken {
		st.Key = objectstore.ConflictKey(rel, transferID(meta))
		st.Conflict = true
		meta[objectstore.MetaConflict] = "true"
	}
	full := s.opts.Prefix + st.Key
	sse, kms := s.sse()
	var uploadID string
	createStart, mayHaveOrphans := time.Now(), false
	err = s.do(ctx, "CreateMultipartUpload", full, s.attemptTimeout(0), s.opts.RetryDeadline, func(ctx context.Context) error {
		out, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
			Bucket:               aws.String(s.opts.Bucket),
			Key:                  aws.String(full),
			ContentType:          aws.String(ContentType),
			Metadata:             meta,
			ChecksumAlgorithm:    types.ChecksumAlgorithmCrc64nvme,
			ChecksumType:         types.ChecksumTypeFullObject,
			ServerSideEncryption: sse,
			SSEKMSKeyId:          kms,
		})
		if err != nil {
			// An attempt S3 refused created nothing; one whose outcome
			// is unknown (no answer, a 500: outcomeUnknown) may have
			// created an upload whose id we never learnt.
			mayHaveOrphans = mayHaveOrphans || outcomeUnknown(err)
			return err
		}
		uploadID = aws.ToString(out.UploadId)
		if uploadID == "" {
			return fmt.Errorf("s3store: CreateMultipartUpload answered no upload id")
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	log := s.log.With("object", s.name(st.Key), "upload_id", uploadID, "association", obj.AssociationID)
	if mayHaveOrphans {
		// An earlier attempt may have created an upload whose answer was
		// lost; nobody would ever complete or abort it. Looking for it may
		// catch another association's upload of the same object (see
		// dropOrphans), so it is done only then, not after S3's SlowDowns.
		s.dropOrphans(ctx, full, uploadID, createStart, log)
	}
	completed, completeSent := false, false
	var crcB64 string
	defer func() {
		if completed {
			return
		}
		// A Complete sent may have been carried out, its answer lost or
		// too late (the put timeout, the association ended): the abort
		// then finds no upload, and the key holds this object.
		var held func(context.Context) (bool, error)
		if completeSent {
			held = func(ctx context.Context) (bool, error) { return s.isOurUpload(ctx, full, obj, st.Size, crcB64) }
		}
		// err is nil when the object was found held already.
		s.abortUpload(ctx, full, uploadID, log, err, held)
	}()

	var parts []types.CompletedPart
	var fullCRC uint64
	type result struct {
		part types.CompletedPart
		crc  uint64
		size int
		err  error
	}
	cur, spare := first, next
	nextLen := len(next)
	for partNo := int32(1); ; partNo++ {
		done := make(chan result, 1)
		go func(body []byte, partNo int32) {
			crc := crcnvme.Checksum(body)
			p, err := s.uploadPart(ctx, full, uploadID, partNo, body, crc)
			done <- result{p, crc, len(body), err}
		}(cur, partNo)

		// Fill the other buffer while the part uploads; the peeked second
		// part is already there on the first round.
		var m int
		var rerr error
		if partNo == 1 {
			m, rerr = nextLen, readErr
		} else if readErr == nil {
			m, rerr = io.ReadFull(hr, spare[:cap(spare)])
		} else {
			rerr = io.EOF
		}
		res := <-done
		if res.err != nil {
			return st, res.err
		}
		parts = append(parts, res.part)
		if partNo == 1 {
			fullCRC = res.crc
		} else {
			fullCRC = crcnvme.Combine(fullCRC, res.crc, int64(res.size))
		}
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return st, fmt.Errorf("s3store: put %v: read object: %w", s.name(rel), rerr)
		}
		if ctx.Err() != nil {
			return st, fmt.Errorf("s3store: put %v: %w", s.name(rel), context.Cause(ctx))
		}
		if m == 0 {
			break
		}
		readErr = rerr
		cur, spare = spare[:m], cur[:cap(cur)]
	}

	st.Size = hr.n
	crcB64 = crcnvme.Encode(fullCRC)
	if st.Conflict {
		same, err := s.sameObject(ctx, s.opts.Prefix+rel, st.Size, crcB64, &obj)
		if err != nil {
			return st, fmt.Errorf("s3store: put %v: %w", s.name(rel), err)
		}
		if same != heldOther {
			log.Info("identical object already stored")
			return objectstore.Stored{Key: rel, Size: st.Size, Duplicate: true, SameTransfer: same == heldThisTransfer}, nil
		}
		log = log.With("taken_object", s.name(rel))
	}
	var preconditionErr, goneErr error
	mayHaveCompleted := false // an earlier attempt's outcome is unknown (outcomeUnknown)
	completeSent = true
	err = s.do(ctx, "CompleteMultipartUpload", full, completeAttempts*s.opts.AttemptTimeout, s.opts.RetryDeadline, func(ctx context.Context) error {
		out, err := s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket:            aws.String(s.opts.Bucket),
			Key:               aws.String(full),
			UploadId:          aws.String(uploadID),
			MultipartUpload:   &types.CompletedMultipartUpload{Parts: parts},
			IfNoneMatch:       aws.String("*"),
			ChecksumCRC64NVME: aws.String(crcB64),
			ChecksumType:      types.ChecksumTypeFullObject,
			MpuObjectSize:     aws.Int64(st.Size),
		})
		switch {
		case preconditionFailed(err):
			preconditionErr = err
			return nil
		case notFound(err) && mayHaveCompleted:
			// An earlier attempt may have completed the upload and lost
			// only its answer.
			goneErr = err
			return nil
		case err == nil:
			err = checkCRC(out.ChecksumCRC64NVME, crcB64)
		}
		mayHaveCompleted = mayHaveCompleted || outcomeUnknown(err)
		return err
	})
	if err != nil {
		return st, err
	}
	switch {
	case goneErr != nil:
		mine, herr := s.isOurUpload(ctx, full, obj, st.Size, crcB64)
		if herr != nil {
			return st, fmt.Errorf("s3store: put %v: complete answered %v, then: %w", s.name(rel), goneErr, herr)
		}
		if !mine {
			return st, fmt.Errorf("s3store: put %v: upload vanished and the key holds another object: %w: %w", s.name(rel), objectstore.ErrUnavailable, goneErr)
		}
	case preconditionErr != nil && mayHaveCompleted:
		// An earlier attempt may have completed the upload and lost only
		// its answer; then the key holds our own object.
		mine, herr := s.isOurUpload(ctx, full, obj, st.Size, crcB64)
		if herr != nil {
			return st, fmt.Errorf("s3store: put %v: %w", s.name(rel), herr)
		}
		if !mine {
			return s.duplicateOrConflict(ctx, log, obj, full, rel, st, crcB64)
		}
	case preconditionErr != nil:
		return s.duplicateOrConflict(ctx, log, obj, full, rel, st, crcB64)
	}
	completed = true
	s.metrics.bytes.Add(float64(st.Size))
	if st.Conflict {
		logConflict(log, st, false)
	}
	return st, nil
}

// duplicateOrConflict decides what a refused Complete meant; the caller's
// deferred abort drops the upload either way.
func (s *Store) duplicateOrConflict(ctx context.Context, log *slog.Logger, obj objectstore.Object, full, rel string, st objectstore.Stored, crcB64 string) (objectstore.Stored, error) {
	same, herr := s.sameObject(ctx, full, st.Size, crcB64, &obj)
	if herr != nil {
		return st, fmt.Errorf("s3store: put %v: %w", s.name(rel), herr)
	}
	if same == heldOther {
		return st, fmt.Errorf("s3store: put %v (crc64nvme %s): %w: %w", s.name(rel), crcB64, ErrKeyTakenConcurrently, objectstore.ErrUnavailable)
	}
	st.Duplicate, st.SameTransfer = true, same == heldThisTransfer
	if st.Conflict {
		logConflict(log, st, false)
		return st, nil
	}
	log.Info("identical object already stored")
	return st, nil
}

func (s *Store) uploadPart(ctx context.Context, key, uploadID string, partNo int32, body []byte, crc uint64) (types.CompletedPart, error) {
	crcB64 := crcnvme.Encode(crc)
	var etag *string
	err := s.do(ctx, "UploadPart", key, s.attemptTimeout(int64(len(body))), s.opts.RetryDeadline, func(ctx context.Context) error {
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket:            aws.String(s.opts.Bucket),
			Key:               aws.String(key),
			UploadId:          aws.String(uploadID),
			PartNumber:        aws.Int32(partNo),
			Body:              bytes.NewReader(body),
			ContentLength:     aws.Int64(int64(len(body))),
			ChecksumAlgorithm: types.ChecksumAlgorithmCrc64nvme,
			ChecksumCRC64NVME: aws.String(crcB64),
		}, unsignedPayload)
		if err != nil {
			return err
		}
		etag = out.ETag
		return checkCRC(out.ChecksumCRC64NVME, crcB64)
	})
	if err != nil {
		return types.CompletedPart{}, err
	}
	return types.CompletedPart{ETag: etag, PartNumber: aws.Int32(partNo), ChecksumCRC64NVME: aws.String(crcB64)}, nil
}

// dropOrphans aborts the uploads for key, other than ours, that S3 says
// were initiated since start (with a minute's allowance for clock skew):
// the ones our own lost CreateMultipartUpload answers left behind. Another
// task's concurrent upload of the very same key could be caught too; its
// Put then fails and the sender's resend finds the object stored.
func (s *Store) dropOrphans(ctx context.Context, key, ours string, start time.Time, log *slog.Logger) {
	var out *s3.ListMultipartUploadsOutput
	err := s.do(ctx, "ListMultipartUploads", key, s.attemptTimeout(0), s.opts.RetryDeadline, func(ctx context.Context) error {
		var err error
		out, err = s.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(s.opts.Bucket), Prefix: aws.String(key)})
		return err
	})
	if err != nil {
		log.Warn("cannot look for uploads orphaned by lost answers; the bucket's lifecycle rule must clean them up", "err", err)
		return
	}
	for _, u := range out.Uploads {
		id := aws.ToString(u.UploadId)
		if aws.ToString(u.Key) != key || id == ours || (u.Initiated != nil && u.Initiated.Before(start.Add(-time.Minute))) {
			continue
		}
		s.abort(ctx, key, id, log.With("orphan_upload_id", id), errors.New("orphaned by a lost CreateMultipartUpload answer"), nil)
	}
}

// exists reports whether key holds an object.
func (s *Store) exists(ctx context.Context, key string) (bool, error) {
	found := false
	err := s.do(ctx, "HeadObject", key, s.attemptTimeout(0), s.opts.RetryDeadline, func(ctx context.Context) error {
		_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.opts.Bucket), Key: aws.String(key)})
		if notFound(err) {
			found = false
			return nil
		}
		found = err == nil
		return err
	})
	return found, err
}

// transferID names a multipart conflict key after the C-STORE whose
// metadata meta is: its association and receive time as the metadata says
// them (what fromTransfer compares), hashed to 16 hex digits. An upload of
// the same C-STORE tried again (a staged object whose task died after S3
// took it and before its release) goes to the same key, finds its earlier
// upload there and tells it is this transfer's (SameTransfer); a random id
// gave it a second conflict copy. Another C-STORE's conflicting object
// goes to a key of its own, as before.
func transferID(meta map[string]string) string {
	sum := sha256.Sum256([]byte(meta[objectstore.MetaAssociationID] + "\n" + meta[objectstore.MetaReceivedAt]))
	return hex.EncodeToString(sum[:8])
}

// isOurUpload reports whether key holds the object this association just
// uploaded: same size and checksum, same association and receive time.
func (s *Store) isOurUpload(ctx context.Context, key string, obj objectstore.Object, size int64, crcB64 string) (bool, error) {
	var head *s3.HeadObjectOutput
	err := s.do(ctx, "HeadObject", key, s.attemptTimeout(0), s.opts.RetryDeadline, func(ctx context.Context) error {
		var err error
		head, err = s.client.HeadObject(ctx, &s3.HeadObjectInput{
			Bucket: aws.String(s.opts.Bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled,
		})
		return err
	})
	if notFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	crc := aws.ToString(head.ChecksumCRC64NVME)
	return aws.ToInt64(head.ContentLength) == size && (crc == "" || crc == crcB64) && s.fromTransfer(head.Metadata, obj), nil
}

// abortUpload aborts a Put's unfinished upload (abort) before the Put
// answers, until its put timeout (Options.PutTimeout) passes: the sender
// is then waiting for the answer, which an abort retried for up to
// abortDeadline while S3 fails must not hold (S3 failing the Complete
// fails the abort too), so the abort goes on behind it.
func (s *Store) abortUpload(ctx context.Context, key, uploadID string, log *slog.Logger, cause error, held func(context.Context) (bool, error)) {
	if s.opts.PutTimeout <= 0 {
		s.abort(ctx, key, uploadID, log, cause, held)
		return
	}
	passed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(context.Cause(ctx), errPutTimeout) {
			close(passed)
		}
	})
	defer stop()
	done := make(chan struct{})
	s.aborts.Add(1)
	go func() {
		defer s.aborts.Done()
		defer close(done)
		s.abort(ctx, key, uploadID, log, cause, held)
	}()
	select {
	case <-done:
	case <-passed:
	}
}

// abort drops an unfinished upload so no part of it stays billable or
// visible. It runs even when ctx is cancelled (that is often why). A nil
// cause is the expected outcome of an upload whose object the key turned
// out to hold already (an identical resend, the same C-STORE uploaded
// again): logged at info level with that reason, where a failure's abort
// is a warning naming its cause. held, when a Complete was sent, tells
// whether the key holds the upload's object: an upload S3 no longer knows
// may be one that Complete finished though its Put failed
// (CompletedThoughPutFailed), which is neither aborted nor a failure of
// ours.
func (s *Store) abort(ctx context.Context, key, uploadID string, log *slog.Logger, cause error, held func(context.Context) (bool, error)) {
	why := slog.Any("cause", cause)
	if cause == nil {
		why = slog.String("reason", "the key already holds this object")
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortDeadline)
	defer cancel()
	gone := false // S3 no longer knows the upload: aborted or completed
	err := s.do(actx, "AbortMultipartUpload", key, s.attemptTimeout(0), abortDeadline, func(ctx context.Context) error {
		_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(s.opts.Bucket), Key: aws.String(key), UploadId: aws.String(uploadID),
		})
		if notFound(err) {
			gone = true
			return nil
		}
		return err
	})
	if err != nil {
		s.metrics.aborts.Inc()
		log.Error("abort multipart upload failed; the bucket's lifecycle rule must clean it up", "err", err, why)
		return
	}
	if gone && held != nil {
		switch mine, err := held(actx); {
		case err != nil:
			log.Warn("multipart upload gone, whether completed or aborted unknown: the object may be held though its Put failed", "err", err, why)
			return
		case mine:
			log.Info(CompletedThoughPutFailed, why)
			return
		}
	}
	s.metrics.aborts.Inc()
	if cause == nil {
		log.Info("multipart upload aborted", why)
		return
	}
	log.Warn("multipart upload aborted", why)
}

// CompletedThoughPutFailed is the line of an upload whose Complete S3
// carried out though the Put failed (its answer lost or too late, past the
// put timeout): the sender was answered a failure and will send the object
// again, which then finds it held.
const CompletedThoughPutFailed = "multipart upload completed though its put failed: the key holds the object the sender was answered a failure for, and its resend is a duplicate (or, other bytes, a conflict)"
