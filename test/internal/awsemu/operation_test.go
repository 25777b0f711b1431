package awsemu

import (
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
		{"GET", "/bench/a.dcm?tagging", nil, "GetObjectTagging"},
		{"PUT", "/bench/a.dcm?tagging", nil, "PutObjectTagging"},
		{"DELETE", "/bench/a.dcm?tagging", nil, "DeleteObjectTagging"},
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
