package awsemu

import (
	"net/http"
	"strings"
)

// Operation names the API operation of an AWS request: the part after the
// dot of X-Amz-Target for JSON protocols, else the S3 REST operation from
// method, path and query (path-style addressing).
func Operation(r *http.Request) string {
	if t := r.Header.Get("X-Amz-Target"); t != "" {
		if _, op, ok := strings.Cut(t, "."); ok {
			return op
		}
		return t
	}
	q := r.URL.Query()
	// The Go SDK names most S3 operations in the query itself.
	if id := q.Get("x-id"); id != "" {
		return id
	}
	has := func(k string) bool { _, ok := q[k]; return ok }
	// "/bucket" or "/bucket/" addresses the bucket, anything longer a key.
	onKey := strings.Count(strings.Trim(r.URL.Path, "/"), "/") >= 1
	switch r.Method {
	case http.MethodPut:
		switch {
		case has("tagging") && onKey:
			return "PutObjectTagging"
		case has("partNumber") && r.Header.Get("X-Amz-Copy-Source") != "":
			return "UploadPartCopy"
		case has("partNumber"):
			return "UploadPart"
		case r.Header.Get("X-Amz-Copy-Source") != "":
			return "CopyObject"
		case onKey:
			return "PutObject"
		}
		return "CreateBucket"
	case http.MethodPost:
		switch {
		case has("uploads"):
			return "CreateMultipartUpload"
		case has("uploadId"):
			return "CompleteMultipartUpload"
		case has("delete"):
			return "DeleteObjects"
		}
		return "Post"
	case http.MethodDelete:
		if has("tagging") && onKey {
			return "DeleteObjectTagging"
		}
		if has("uploadId") {
			return "AbortMultipartUpload"
		}
		if onKey {
			return "DeleteObject"
		}
		return "DeleteBucket"
	case http.MethodHead:
		if onKey {
			return "HeadObject"
		}
		return "HeadBucket"
	case http.MethodGet:
		switch {
		case has("tagging") && onKey:
			return "GetObjectTagging"
		case has("uploadId"):
			return "ListParts"
		case has("uploads"):
			return "ListMultipartUploads"
		case onKey:
			return "GetObject"
		}
		return "ListObjects"
	}
	return r.Method
}

// StatusWriter keeps the status of the response it writes (200 when the
// handler writes without one).
type StatusWriter struct {
	http.ResponseWriter
	Status int
	wrote  bool
}

func (w *StatusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.Status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *StatusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
