package awsmeter

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestOperation(t *testing.T) {
	tests := []struct {
		method, target string
		header         map[string]string
		want           string
	}{
		{"POST", "/", map[string]string{"X-Amz-Target": "DynamoDB_20120810.UpdateItem"}, "UpdateItem"},
		{"POST", "/", map[string]string{"X-Amz-Target": "AWSEvents.PutEvents"}, "PutEvents"},
		{"POST", "/", map[string]string{"X-Amz-Target": "AmazonSQS.SendMessage"}, "SendMessage"},
		{"PUT", "/bench/a/b.dcm?x-id=PutObject", nil, "PutObject"},
		{"PUT", "/bench/a/b.dcm", nil, "PutObject"},
		{"PUT", "/bench/a/b.dcm?partNumber=2&uploadId=u", nil, "UploadPart"},
		{"PUT", "/bench/a/b.dcm", map[string]string{"X-Amz-Copy-Source": "/bench/x"}, "CopyObject"},
		{"PUT", "/bench", nil, "CreateBucket"},
		{"POST", "/bench/a.dcm?uploads", nil, "CreateMultipartUpload"},
		{"POST", "/bench/a.dcm?uploadId=u", nil, "CompleteMultipartUpload"},
		{"DELETE", "/bench/a.dcm?uploadId=u", nil, "AbortMultipartUpload"},
		{"DELETE", "/bench/a.dcm", nil, "DeleteObject"},
		{"HEAD", "/bench/a.dcm", nil, "HeadObject"},
		{"HEAD", "/bench", nil, "HeadBucket"},
		{"GET", "/bench/a.dcm", nil, "GetObject"},
		{"GET", "/bench?list-type=2", nil, "ListObjects"},
		{"GET", "/bench?uploads", nil, "ListMultipartUploads"},
	}
	for _, tt := range tests {
		t.Run(tt.want+" "+tt.target, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.target, nil)
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			if got := Operation(r); got != tt.want {
				t.Errorf("Operation(%s %s) = %q, want %q", tt.method, tt.target, got, tt.want)
			}
		})
	}
}

func TestHandlerCounts(t *testing.T) {
	m := New()
	h := m.Handler("S3", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	for _, target := range []string{"/b/k1", "/b/k2", "/b"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("HEAD", target, nil))
	}
	m.Add("SQS SendMessage", 3)
	if l := m.Latencies(); l["S3 HeadObject"].N != 2 || l["S3 HeadBucket"].N != 1 || len(l) != 2 {
		t.Errorf("latencies %v", l)
	}
	got := m.Reset()
	if got["S3 HeadObject"] != 2 || got["S3 HeadBucket"] != 1 || got["SQS SendMessage"] != 3 || len(got) != 3 {
		t.Errorf("counts %v", got)
	}
	if len(m.Counts()) != 0 {
		t.Errorf("counts after Reset: %v", m.Counts())
	}
}
