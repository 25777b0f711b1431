// Package s3test starts S3-compatible servers for tests, like httptest: an
// in-process gofakes3 on 127.0.0.1:0 wrapped to behave like Amazon S3 where
// gofakes3 v1.2.0 does not (conditional CompleteMultipartUpload and
// CRC64NVME checksums), and a fault-injecting proxy to put in front of it.
//
// What the wrapper adds, following the S3 API reference:
//   - If-None-Match: * on CompleteMultipartUpload answers 412
//     PreconditionFailed when the key exists (gofakes3 checks it on
//     PutObject only);
//   - x-amz-checksum-crc64nvme on PutObject and UploadPart is verified
//     (400 BadDigest on mismatch) and echoed in the answer; on
//     CompleteMultipartUpload the full-object checksum is verified against
//     the parts' and returned in the XML answer; HEAD and GET return the
//     stored full-object checksum, of single PutObjects and completed
//     uploads alike;
//   - If-Match on DeleteObject deletes only the current version of that
//     ETag (412 PreconditionFailed on another, 404 NoSuchKey where none
//     is): gofakes3 ignores it;
//   - the server keeps a clock of its own (Server.Clock), as S3 does: each
//     object's Last-Modified and each answer's Date come from it, so a
//     test ages stored objects by advancing it. Request signatures are not
//     checked against it (S3 refuses a request signed over 15 minutes off
//     its clock, and the SDK corrects its signing time from S3's answers).
package s3test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
)

// Server is a running S3 emulator.
type Server struct {
	// URL is the endpoint, http://127.0.0.1:port.
	URL string
	// Bucket was created at start.
	Bucket string
	// Backend holds the objects, for direct inspection.
	Backend *s3mem.Backend
	// Clock is the server's time: Last-Modified and Date.
	Clock *Clock

	faker *gofakes3.GoFakeS3
	http  *httptest.Server

	mu        sync.Mutex                 // makes check-then-write of conditional requests atomic
	parts     map[string]map[int]partCRC // upload id -> part number -> checksum
	objectCRC map[string]string          // bucket/key -> full-object CRC64NVME of completed uploads
}

type partCRC struct {
	crc  uint64
	size int64
}

// NewServer starts an emulator holding one empty bucket and stops it when
// the test ends.
func NewServer(t testing.TB, bucket string) *Server {
	t.Helper()
	s, err := NewHandler(bucket)
	if err != nil {
		t.Fatal(err)
	}
	s.http = httptest.NewServer(s)
	s.URL = s.http.URL
	t.Cleanup(s.http.Close)
	return s
}

// NewHandler returns an emulator holding one empty bucket that is not
// serving yet (URL is empty), for a command that serves it behind
// handlers of its own, as the chain bench does.
func NewHandler(bucket string) (*Server, error) {
	clock := &Clock{}
	backend := s3mem.New(s3mem.WithTimeSource(clock))
	if err := backend.CreateBucket(bucket); err != nil {
		return nil, fmt.Errorf("s3test: create bucket: %w", err)
	}
	return &Server{
		Bucket:  bucket,
		Backend: backend,
		Clock:   clock,
		faker: gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog()),
			gofakes3.WithTimeSource(clock), gofakes3.WithTimeSkewLimit(0)),
		parts:     map[string]map[int]partCRC{},
		objectCRC: map[string]string{},
	}, nil
}

// Client returns an SDK client for endpoint (the server's URL or a proxy's)
// with path-style addressing, static credentials and SDK retries off.
func Client(endpoint string) *s3.Client {
	return s3.New(s3.Options{
		Region:                     "us-east-1",
		BaseEndpoint:               aws.String(endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
		RetryMaxAttempts:           1,
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
	})
}

// SetEnv points the AWS SDK's default configuration at endpoint, as the
// SCP is configured in production (AWS_ENDPOINT_URL_S3, AWS_REGION and
// the credential chain), isolated from the machine's own AWS files.
func SetEnv(t *testing.T, endpoint string) {
	for k, v := range envMap(t, endpoint) {
		t.Setenv(k, v)
	}
}

// Env returns SetEnv's variables as KEY=value pairs, for a child process
// such as scp-task.
func Env(t testing.TB, endpoint string) []string {
	var env []string
	for k, v := range envMap(t, endpoint) {
		env = append(env, k+"="+v)
	}
	return env
}

func envMap(t testing.TB, endpoint string) map[string]string {
	dir := t.TempDir()
	return map[string]string{
		"AWS_ENDPOINT_URL_S3":         endpoint,
		"AWS_REGION":                  "us-east-1",
		"AWS_ACCESS_KEY_ID":           "AKIDTEST",
		"AWS_SECRET_ACCESS_KEY":       "secret",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_CONFIG_FILE":             dir + "/config",
		"AWS_SHARED_CREDENTIALS_FILE": dir + "/credentials",
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_ENDPOINT_URL":            "",
	}
}

// Object reads an object straight from the backend.
func (s *Server) Object(key string) (body []byte, meta map[string]string, err error) {
	obj, err := s.Backend.GetObject(s.Bucket, key, nil)
	if err != nil {
		return nil, nil, err
	}
	defer obj.Contents.Close()
	body, err = io.ReadAll(obj.Contents)
	return body, obj.Metadata, err
}

// Keys lists every object key in the bucket.
func (s *Server) Keys(ctx context.Context) ([]string, error) {
	c := Client(s.URL)
	var keys []string
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys, nil
}

// PendingUploads counts multipart uploads neither completed nor aborted.
func (s *Server) PendingUploads(ctx context.Context) (int, error) {
	out, err := Client(s.URL).ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(s.Bucket)})
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload" {
		// gofakes3 answers so for a bucket that never had an upload.
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return len(out.Uploads), nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	q := r.URL.Query()
	s.Clock.date(w)
	switch {
	case key == "":
		s.faker.Server().ServeHTTP(w, r)
	case r.Method == http.MethodPut && q.Has("uploadId") && q.Has("partNumber"):
		s.uploadPart(w, r)
	case r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") == "":
		s.putObject(w, r)
	case r.Method == http.MethodPost && q.Has("uploadId"):
		s.complete(w, r, bucket, key)
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		s.mu.Lock()
		crc, ok := s.objectCRC[bucket+"/"+key]
		s.mu.Unlock()
		if ok && !q.Has("partNumber") {
			w.Header().Set("X-Amz-Checksum-Crc64nvme", crc)
			w.Header().Set("X-Amz-Checksum-Type", "FULL_OBJECT")
		}
		s.faker.Server().ServeHTTP(w, r)
	case r.Method == http.MethodDelete && !q.Has("uploadId"):
		s.deleteObject(w, r, bucket, key)
	default:
		s.faker.Server().ServeHTTP(w, r)
	}
}

// deleteObject deletes a key, with If-Match only the current version of
// that ETag. Serialised with putObject, so that a conditional delete and a
// write of the same key do not interleave.
func (s *Server) deleteObject(w http.ResponseWriter, r *http.Request, bucket, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := r.Header.Get("If-Match"); m != "" {
		obj, err := s.Backend.HeadObject(bucket, key)
		if err != nil {
			writeError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
			return
		}
		_ = obj.Contents.Close() //nolint:errcheck // an in-memory reader
		if m != "*" && m != `"`+hex.EncodeToString(obj.Hash)+`"` {
			writePreconditionFailed(w)
			return
		}
	}
	delete(s.objectCRC, bucket+"/"+key)
	s.faker.Server().ServeHTTP(w, r)
}

// readChecked reads a request body and checks it against the request's
// x-amz-checksum-crc64nvme header, if any.
func readChecked(w http.ResponseWriter, r *http.Request) (body []byte, crc uint64, ok bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "IncompleteBody", err.Error())
		return nil, 0, false
	}
	crc = crcnvme.Checksum(body)
	if want := r.Header.Get("X-Amz-Checksum-Crc64nvme"); want != "" && want != crcnvme.Encode(crc) {
		writeError(w, http.StatusBadRequest, "BadDigest", "The CRC64NVME you specified did not match the calculated checksum.")
		return nil, 0, false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return body, crc, true
}

func (s *Server) putObject(w http.ResponseWriter, r *http.Request) {
	_, crc, ok := readChecked(w, r)
	if !ok {
		return
	}
	// Serialised with complete so that If-None-Match is atomic across both.
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := httptest.NewRecorder()
	s.faker.Server().ServeHTTP(rec, r)
	if rec.Code == http.StatusOK && r.Header.Get("X-Amz-Checksum-Crc64nvme") != "" {
		rec.Header().Set("X-Amz-Checksum-Crc64nvme", crcnvme.Encode(crc))
		// S3 keeps the checksum a PutObject carried and returns it on
		// HEAD and GET with checksum mode, as for a completed upload.
		bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		s.objectCRC[bucket+"/"+key] = crcnvme.Encode(crc)
	}
	copyResponse(w, rec, nil)
}

func (s *Server) uploadPart(w http.ResponseWriter, r *http.Request) {
	body, crc, ok := readChecked(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	var partNo int
	if _, err := fmt.Sscan(q.Get("partNumber"), &partNo); err != nil {
		writeError(w, http.StatusBadRequest, "InvalidArgument", "bad partNumber")
		return
	}
	rec := httptest.NewRecorder()
	s.faker.Server().ServeHTTP(rec, r)
	if rec.Code == http.StatusOK {
		s.mu.Lock()
		id := q.Get("uploadId")
		if s.parts[id] == nil {
			s.parts[id] = map[int]partCRC{}
		}
		s.parts[id][partNo] = partCRC{crc: crc, size: int64(len(body))}
		s.mu.Unlock()
		if r.Header.Get("X-Amz-Checksum-Crc64nvme") != "" {
			rec.Header().Set("X-Amz-Checksum-Crc64nvme", crcnvme.Encode(crc))
		}
	}
	copyResponse(w, rec, nil)
}

type completeRequest struct {
	Parts []struct {
		PartNumber int
	} `xml:"Part"`
}

func (s *Server) complete(w http.ResponseWriter, r *http.Request, bucket, key string) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "IncompleteBody", err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	var req completeRequest
	if err := xml.Unmarshal(raw, &req); err != nil {
		writeError(w, http.StatusBadRequest, "MalformedXML", err.Error())
		return
	}
	id := r.URL.Query().Get("uploadId")

	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Header.Get("If-None-Match") == "*" {
		if _, err := s.Backend.HeadObject(bucket, key); err == nil {
			writePreconditionFailed(w)
			return
		}
	}
	var full uint64
	var size int64
	known := s.parts[id] != nil
	for i, p := range req.Parts {
		pc, ok := s.parts[id][p.PartNumber]
		if !ok {
			known = false
			break
		}
		if i == 0 {
			full = pc.crc
		} else {
			full = crcnvme.Combine(full, pc.crc, pc.size)
		}
		size += pc.size
	}
	want := r.Header.Get("X-Amz-Checksum-Crc64nvme")
	if known && want != "" && want != crcnvme.Encode(full) {
		writeError(w, http.StatusBadRequest, "BadDigest", "The CRC64NVME you specified did not match the calculated checksum.")
		return
	}
	if v := r.Header.Get("X-Amz-Mp-Object-Size"); known && v != "" && v != fmt.Sprint(size) {
		writeError(w, http.StatusBadRequest, "InvalidRequest", "x-amz-mp-object-size does not match the parts")
		return
	}
	rec := httptest.NewRecorder()
	s.faker.Server().ServeHTTP(rec, r)
	var inject []byte
	if rec.Code == http.StatusOK && known {
		crc := crcnvme.Encode(full)
		s.objectCRC[bucket+"/"+key] = crc
		delete(s.parts, id)
		inject = []byte("<ChecksumCRC64NVME>" + crc + "</ChecksumCRC64NVME><ChecksumType>FULL_OBJECT</ChecksumType>")
	}
	copyResponse(w, rec, inject)
}

// copyResponse replays rec; inject goes just before the closing tag of a
// CompleteMultipartUploadResult.
func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder, inject []byte) {
	body := rec.Body.Bytes()
	if inject != nil {
		end := []byte("</CompleteMultipartUploadResult>")
		if i := bytes.LastIndex(body, end); i >= 0 {
			body = append(append(append([]byte{}, body[:i]...), inject...), body[i:]...)
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Del("Content-Length")
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, msg)
}

// writePreconditionFailed answers a conditional request whose condition
// does not hold (If-None-Match: * on a taken key, If-Match on another
// ETag), as S3 does.
func writePreconditionFailed(w http.ResponseWriter) {
	writeError(w, http.StatusPreconditionFailed, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
}

// Close stops the server; requests then fail with refused connections.
func (s *Server) Close() {
	if s.http != nil {
		s.http.Close()
	}
}

// Checksum returns the full-object CRC64NVME the server reports for key,
// whether it came with a PutObject or was computed at
// CompleteMultipartUpload.
func (s *Server) Checksum(key string) (string, bool) {
	s.mu.Lock()
	c, ok := s.objectCRC[s.Bucket+"/"+key]
	s.mu.Unlock()
	if ok {
		return c, true
	}
	obj, err := s.Backend.HeadObject(s.Bucket, key)
	if err != nil {
		return "", false
	}
	c = obj.Metadata["X-Amz-Checksum-Crc64nvme"]
	return c, c != ""
}
