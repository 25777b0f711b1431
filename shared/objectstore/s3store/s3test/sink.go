package s3test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/internal/crcnvme"
)

// Sink is an S3 endpoint for huge objects: it checks every CRC64NVME as S3
// would (parts and full object), computes each object's SHA-256 (unless
// WithoutSHA256) and size,
// and keeps only those, plus the bytes of small objects (audit records).
// It answers PutObject (If-None-Match and If-Match), the multipart calls,
// HeadObject (with the size and checksum of what it holds), HeadBucket,
// and for small documents (the SCP's run markers) GetObject,
// ListObjectsV2 and DeleteObject (If-Match); ListMultipartUploads' count
// via Pending. Parts must arrive in order, as the store sends them.
// Last-Modified and Date come from its Clock, as Server's.
type Sink struct {
	URL string
	// Clock is the sink's time: Last-Modified and Date.
	Clock *Clock

	mu      sync.Mutex
	objects map[string]SinkObject // path /bucket/key -> what was stored
	uploads map[string]*sinkUpload
	nextID  int
	errs    []error
	noSHA   bool
}

// SinkObject is what the sink keeps of a stored object.
type SinkObject struct {
	Size     int64
	SHA256   string
	CRC64    string
	Metadata map[string]string // x-amz-meta-* of the request, lowercase keys
	Body     []byte            // only for objects up to SmallBody
	// LastModified is when it was stored, by the sink's Clock.
	LastModified time.Time
}

// SmallBody is the largest object whose bytes the sink keeps.
const SmallBody = 64 << 10

type sinkUpload struct {
	path  string
	meta  map[string]string
	sha   hash.Hash
	crc   uint64
	size  int64
	parts int
	// receiving is set while a part's body is read outside the lock; the
	// store sends one part of an upload at a time.
	receiving bool
}

// NewSink starts a sink on 127.0.0.1:0 for the test's duration.
func NewSink(t testing.TB) *Sink {
	k := NewSinkHandler()
	srv := httptest.NewServer(k)
	t.Cleanup(srv.Close)
	k.URL = srv.URL
	return k
}

// SinkOption configures a sink.
type SinkOption func(*Sink)

// WithoutSHA256 makes the sink do only what S3 does with a body: verify
// the CRC64NVME the request carries. SinkObject.SHA256 stays empty. make
// bench serves the sink this way, so the endpoint's own hashing does not
// count against the store it measures.
func WithoutSHA256() SinkOption { return func(k *Sink) { k.noSHA = true } }

// NewSinkHandler returns a sink to serve yourself (make bench does, from
// a separate process); URL stays empty.
func NewSinkHandler(opts ...SinkOption) *Sink {
	k := &Sink{objects: map[string]SinkObject{}, uploads: map[string]*sinkUpload{}, Clock: &Clock{}}
	for _, o := range opts {
		o(k)
	}
	return k
}

// newSHA returns the hash a body is read through: SHA-256, or one that
// discards with WithoutSHA256.
func (k *Sink) newSHA() hash.Hash {
	if k.noSHA {
		return noHash{}
	}
	return sha256.New()
}

// noHash is a hash.Hash that hashes nothing; its Sum is empty.
type noHash struct{}

func (noHash) Write(p []byte) (int, error) { return len(p), nil }
func (noHash) Sum(b []byte) []byte         { return b }
func (noHash) Reset()                      {}
func (noHash) Size() int                   { return 0 }
func (noHash) BlockSize() int              { return 1 }

// Objects returns what the sink holds, by "bucket/key".
func (k *Sink) Objects() map[string]SinkObject {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[string]SinkObject, len(k.objects))
	for p, o := range k.objects {
		out[strings.TrimPrefix(p, "/")] = o
	}
	return out
}

// Pending counts multipart uploads neither completed nor aborted.
func (k *Sink) Pending() int { k.mu.Lock(); defer k.mu.Unlock(); return len(k.uploads) }

// Errors returns the protocol violations the sink saw (bad checksums,
// parts out of order, unexpected requests).
func (k *Sink) Errors() []error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]error(nil), k.errs...)
}

func (k *Sink) fail(w http.ResponseWriter, status int, code string, err error) {
	k.errs = append(k.errs, err)
	writeError(w, status, code, err.Error())
}

func metaOf(h http.Header) map[string]string {
	m := map[string]string{}
	for name, v := range h {
		if rest, ok := strings.CutPrefix(strings.ToLower(name), "x-amz-meta-"); ok {
			m[rest] = v[0]
		}
	}
	return m
}

var sinkBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// consume reads a body through SHA-256 and CRC64NVME, keeping it if keep
// and small.
func consume(r io.Reader, sha hash.Hash, crc *uint64, keep bool) (n int64, crcOfBody uint64, small []byte, err error) {
	bp := sinkBufs.Get().(*[]byte)
	defer sinkBufs.Put(bp)
	buf := *bp
	for {
		m, rerr := r.Read(buf)
		if m > 0 {
			p := buf[:m]
			sha.Write(p)
			*crc = crcnvme.Update(*crc, p)
			crcOfBody = crcnvme.Update(crcOfBody, p)
			if keep && n+int64(m) <= SmallBody {
				small = append(small, p...)
			}
			n += int64(m)
		}
		if rerr == io.EOF {
			if n > SmallBody {
				small = nil
			}
			return n, crcOfBody, small, nil
		}
		if rerr != nil {
			return n, crcOfBody, nil, rerr
		}
	}
}

// ServeHTTP answers one request. Bodies are read and checksummed outside
// the sink's lock, so concurrent uploads proceed in parallel as they do on
// S3; the lock covers only the sink's maps.
func (k *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	locked := true
	unlock := func() { k.mu.Unlock(); locked = false }
	relock := func() { k.mu.Lock(); locked = true }
	defer func() {
		if locked {
			k.mu.Unlock()
		}
	}()
	q := r.URL.Query()
	path := r.URL.Path
	isBucket := strings.Count(strings.Trim(path, "/"), "/") == 0
	k.Clock.date(w)
	switch {
	case r.Method == http.MethodHead && isBucket:
		w.WriteHeader(http.StatusOK)
	case r.Method == http.MethodHead:
		o, ok := k.objects[path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		for m, v := range o.Metadata {
			w.Header().Set("X-Amz-Meta-"+m, v)
		}
		w.Header().Set("Content-Length", strconv.FormatInt(o.Size, 10))
		w.Header().Set("Last-Modified", o.LastModified.Format(http.TimeFormat))
		if strings.EqualFold(r.Header.Get("X-Amz-Checksum-Mode"), "ENABLED") {
			// As S3: checksums only for a request that asks for them.
			w.Header().Set("X-Amz-Checksum-Crc64nvme", o.CRC64)
			w.Header().Set("X-Amz-Checksum-Type", "FULL_OBJECT")
		}
	case r.Method == http.MethodGet && isBucket && q.Get("list-type") == "2":
		k.list(w, path, q.Get("prefix"))
	case r.Method == http.MethodGet && !isBucket:
		o, ok := k.objects[path]
		switch {
		case !ok:
			writeError(w, http.StatusNotFound, "NoSuchKey", "no such key")
		case o.Body == nil && o.Size > 0:
			k.fail(w, http.StatusNotImplemented, "NotImplemented", fmt.Errorf("sink: GET of %s, an object too large to keep", path))
		default:
			w.Header().Set("ETag", etagOf(o))
			w.Header().Set("Last-Modified", o.LastModified.Format(http.TimeFormat))
			w.Header().Set("Content-Length", strconv.Itoa(len(o.Body)))
			_, _ = w.Write(o.Body) //nolint:errcheck // the client's loss
		}
	case r.Method == http.MethodDelete && !q.Has("uploadId"):
		// If-Match: only the version of that ETag, as S3 (404 where none is).
		if m := r.Header.Get("If-Match"); m != "" {
			o, ok := k.objects[path]
			if !ok {
				writeError(w, http.StatusNotFound, "NoSuchKey", "no such key")
				return
			}
			if m != "*" && m != etagOf(o) {
				writePreconditionFailed(w)
				return
			}
		}
		delete(k.objects, path)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPut && !q.Has("partNumber"):
		if !k.preconditionsHold(path, r.Header) {
			_, _ = io.Copy(io.Discard, r.Body)
			writePreconditionFailed(w)
			return
		}
		sha := k.newSHA()
		var crc uint64
		unlock()
		n, bodyCRC, small, err := consume(r.Body, sha, &crc, true)
		relock()
		want := r.Header.Get("X-Amz-Checksum-Crc64nvme")
		if err != nil || (want != "" && want != crcnvme.Encode(bodyCRC)) {
			k.fail(w, http.StatusBadRequest, "BadDigest", fmt.Errorf("put %s: checksum %q, body %q (%v)", path, want, crcnvme.Encode(bodyCRC), err))
			return
		}
		if !k.preconditionsHold(path, r.Header) {
			// Another request wrote the key while this body arrived.
			writePreconditionFailed(w)
			return
		}
		k.objects[path] = SinkObject{Size: n, SHA256: hex.EncodeToString(sha.Sum(nil)), CRC64: crcnvme.Encode(bodyCRC), Metadata: metaOf(r.Header), Body: small,
			LastModified: k.Clock.Now()}
		w.Header().Set("X-Amz-Checksum-Crc64nvme", crcnvme.Encode(bodyCRC))
		w.Header().Set("ETag", etagOf(k.objects[path]))
	case r.Method == http.MethodPost && q.Has("uploads"):
		k.nextID++
		id := fmt.Sprintf("upload-%d", k.nextID)
		k.uploads[id] = &sinkUpload{path: path, meta: metaOf(r.Header), sha: k.newSHA()}
		fmt.Fprintf(w, `<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>%s</UploadId></InitiateMultipartUploadResult>`, id)
	case r.Method == http.MethodPut && q.Has("partNumber"):
		u, ok := k.uploads[q.Get("uploadId")]
		if !ok {
			writeError(w, http.StatusNotFound, "NoSuchUpload", "no such upload")
			return
		}
		if q.Get("partNumber") != strconv.Itoa(u.parts+1) {
			k.fail(w, http.StatusBadRequest, "InvalidPartOrder", fmt.Errorf("part %s after %d parts", q.Get("partNumber"), u.parts))
			return
		}
		if u.receiving {
			k.fail(w, http.StatusBadRequest, "InvalidPartOrder", fmt.Errorf("part %s while part %d is still arriving", q.Get("partNumber"), u.parts+1))
			return
		}
		u.receiving = true
		unlock()
		n, partCRC, _, err := consume(r.Body, u.sha, &u.crc, false)
		relock()
		u.receiving = false
		if want := r.Header.Get("X-Amz-Checksum-Crc64nvme"); err != nil || want != crcnvme.Encode(partCRC) {
			k.fail(w, http.StatusBadRequest, "BadDigest", fmt.Errorf("part %d: checksum %q, body %q (%v)", u.parts+1, want, crcnvme.Encode(partCRC), err))
			return
		}
		u.parts++
		u.size += n
		w.Header().Set("ETag", fmt.Sprintf(`"etag%d"`, u.parts))
		w.Header().Set("X-Amz-Checksum-Crc64nvme", crcnvme.Encode(partCRC))
	case r.Method == http.MethodPost && q.Has("uploadId"):
		_, _ = io.Copy(io.Discard, r.Body)
		id := q.Get("uploadId")
		u, ok := k.uploads[id]
		if !ok {
			writeError(w, http.StatusNotFound, "NoSuchUpload", "no such upload")
			return
		}
		if _, taken := k.objects[path]; taken && r.Header.Get("If-None-Match") == "*" {
			writePreconditionFailed(w)
			return
		}
		if want := r.Header.Get("X-Amz-Checksum-Crc64nvme"); want != crcnvme.Encode(u.crc) {
			k.fail(w, http.StatusBadRequest, "BadDigest", fmt.Errorf("complete %s: checksum %q, data %q", path, want, crcnvme.Encode(u.crc)))
			return
		}
		delete(k.uploads, id)
		k.objects[path] = SinkObject{Size: u.size, SHA256: hex.EncodeToString(u.sha.Sum(nil)), CRC64: crcnvme.Encode(u.crc), Metadata: u.meta,
			LastModified: k.Clock.Now()}
		fmt.Fprintf(w, `<CompleteMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><ETag>"x-%d"</ETag><ChecksumCRC64NVME>%s</ChecksumCRC64NVME></CompleteMultipartUploadResult>`, u.parts, crcnvme.Encode(u.crc))
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		delete(k.uploads, q.Get("uploadId"))
		w.WriteHeader(http.StatusNoContent)
	default:
		k.fail(w, http.StatusNotImplemented, "NotImplemented", fmt.Errorf("sink: unexpected %s %s", r.Method, r.URL))
	}
}

// preconditionsHold applies a PutObject's If-None-Match: * and If-Match.
func (k *Sink) preconditionsHold(path string, h http.Header) bool {
	o, taken := k.objects[path]
	if taken && h.Get("If-None-Match") == "*" {
		return false
	}
	if m := h.Get("If-Match"); m != "" && (!taken || m != etagOf(o)) {
		return false
	}
	return true
}

// etagOf is the ETag the sink gives an object: its CRC64NVME, quoted.
func etagOf(o SinkObject) string { return `"` + o.CRC64 + `"` }

// list answers ListObjectsV2 with every key under prefix, in one page.
func (k *Sink) list(w http.ResponseWriter, bucketPath, prefix string) {
	bucket := strings.Trim(bucketPath, "/")
	var keys []string
	for p := range k.objects {
		if key, ok := strings.CutPrefix(p, "/"+bucket+"/"); ok && strings.HasPrefix(key, prefix) {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, `<ListBucketResult><Name>%s</Name><Prefix>%s</Prefix><KeyCount>%d</KeyCount><IsTruncated>false</IsTruncated>`, xmlText(bucket), xmlText(prefix), len(keys))
	for _, key := range keys {
		o := k.objects["/"+bucket+"/"+key]
		fmt.Fprintf(&b, `<Contents><Key>%s</Key><LastModified>%s</LastModified><Size>%d</Size><ETag>%s</ETag></Contents>`,
			xmlText(key), o.LastModified.UTC().Format("2006-01-02T15:04:05.000Z"), o.Size, xmlText(etagOf(o)))
	}
	b.WriteString(`</ListBucketResult>`)
	w.Header().Set("Content-Type", "application/xml")
	_, _ = io.WriteString(w, b.String()) //nolint:errcheck // the client's loss
}

// xmlText escapes s for an XML element's text.
func xmlText(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) //nolint:errcheck // a strings.Builder does not fail
	return b.String()
}
