package awsemu

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestIAMCalls: each request is named by the IAM actions it needs, on
// resources as infra/access names its grants.
func TestIAMCalls(t *testing.T) {
	res := Resources{Tables: map[string]string{"idx": "index", "aud": "audit"}, Bucket: "b", Bus: "bus", Root: "site-a/"}
	type req struct {
		method, url, target, body string
		header                    map[string]string
		status                    int
	}
	for _, tc := range []struct {
		name string
		req  req
		want []string
	}{
		{"GET object", req{method: "GET", url: "/b/site-a/incoming/x.dcm"}, []string{"s3:GetObject object/incoming/x.dcm"}},
		{"ranged GET, no root", req{method: "GET", url: "/b/incoming/x.dcm", header: map[string]string{"Range": "bytes=0-9"}}, []string{"s3:GetObject object/incoming/x.dcm"}},
		{"HEAD object", req{method: "HEAD", url: "/b/incoming/x.dcm", status: 200}, []string{"s3:GetObject object/incoming/x.dcm"}},
		{"HEAD of a missing key needs listing for a 404", req{method: "HEAD", url: "/b/incoming/x.dcm", status: 404},
			[]string{"s3:GetObject object/incoming/x.dcm", "s3:ListBucket bucket (404)"}},
		{"PUT object", req{method: "PUT", url: "/b/metadata/x.json"}, []string{"s3:PutObject object/metadata/x.json"}},
		{"PUT with tags", req{method: "PUT", url: "/b/metadata/x.json", header: map[string]string{"X-Amz-Tagging": "a=b"}},
			[]string{"s3:PutObject object/metadata/x.json", "s3:PutObjectTagging object/metadata/x.json"}},
		{"copy, tags copied", req{method: "PUT", url: "/b/quarantine/x.dcm", header: map[string]string{"X-Amz-Copy-Source": "b/incoming/x%2By.dcm"}},
			[]string{"s3:GetObject object/incoming/x+y.dcm", "s3:GetObjectTagging object/incoming/x+y.dcm", "s3:PutObject object/quarantine/x.dcm", "s3:PutObjectTagging object/quarantine/x.dcm"}},
		{"copy, tags replaced", req{method: "PUT", url: "/b/quarantine/x.dcm", header: map[string]string{"X-Amz-Copy-Source": "/b/incoming/x.dcm?versionId=3", "X-Amz-Tagging-Directive": "REPLACE"}},
			[]string{"s3:GetObject object/incoming/x.dcm", "s3:PutObject object/quarantine/x.dcm"}},
		{"copy from another bucket", req{method: "PUT", url: "/b/quarantine/x.dcm", header: map[string]string{"X-Amz-Copy-Source": "other/incoming/x.dcm", "X-Amz-Tagging-Directive": "REPLACE"}},
			[]string{"s3:GetObject unknown-bucket:other/incoming/x.dcm", "s3:PutObject object/quarantine/x.dcm"}},
		{"multipart start", req{method: "POST", url: "/b/incoming/x.dcm?uploads"}, []string{"s3:PutObject object/incoming/x.dcm"}},
		{"multipart part", req{method: "PUT", url: "/b/incoming/x.dcm?partNumber=2&uploadId=u"}, []string{"s3:PutObject object/incoming/x.dcm"}},
		{"multipart complete", req{method: "POST", url: "/b/incoming/x.dcm?uploadId=u"}, []string{"s3:PutObject object/incoming/x.dcm"}},
		{"multipart abort", req{method: "DELETE", url: "/b/incoming/x.dcm?uploadId=u"}, []string{"s3:AbortMultipartUpload object/incoming/x.dcm"}},
		{"tags read", req{method: "GET", url: "/b/incoming/x.dcm?tagging"}, []string{"s3:GetObjectTagging object/incoming/x.dcm"}},
		{"delete", req{method: "DELETE", url: "/b/incoming/x.dcm"}, []string{"s3:DeleteObject object/incoming/x.dcm"}},
		{"list", req{method: "GET", url: "/b?list-type=2&prefix=incoming/"}, []string{"s3:ListBucket bucket"}},
		{"another bucket", req{method: "GET", url: "/c/incoming/x.dcm"}, []string{"s3:GetObject unknown-bucket:c/incoming/x.dcm"}},
		{"GetItem", req{method: "POST", url: "/", target: "DynamoDB_20120810.GetItem", body: `{"TableName":"idx","Key":{}}`}, []string{"dynamodb:GetItem table/index"}},
		{"Query of an index", req{method: "POST", url: "/", target: "DynamoDB_20120810.Query", body: `{"TableName":"aud","IndexName":"bySop"}`}, []string{"dynamodb:Query table/audit/index/bySop"}},
		{"unknown table", req{method: "POST", url: "/", target: "DynamoDB_20120810.PutItem", body: `{"TableName":"t"}`}, []string{"dynamodb:PutItem table/unknown-table:t"}},
		{"transaction", req{method: "POST", url: "/", target: "DynamoDB_20120810.TransactWriteItems",
			body: `{"TransactItems":[{"Put":{"TableName":"aud"}},{"Update":{"TableName":"idx"}},{"ConditionCheck":{"TableName":"idx"}}]}`},
			[]string{"dynamodb:ConditionCheckItem table/index", "dynamodb:PutItem table/audit", "dynamodb:UpdateItem table/index"}},
		{"batch", req{method: "POST", url: "/", target: "DynamoDB_20120810.BatchWriteItem", body: `{"RequestItems":{"idx":[]}}`}, []string{"dynamodb:BatchWriteItem table/index"}},
		{"PutEvents", req{method: "POST", url: "/", target: "AWSEvents.PutEvents", body: `{"Entries":[{"EventBusName":"bus"},{"EventBusName":"arn:aws:events:r:1:event-bus/bus"}]}`}, []string{"events:PutEvents bus"}},
		{"PutEvents to another bus", req{method: "POST", url: "/", target: "AWSEvents.PutEvents", body: `{"Entries":[{"EventBusName":"default"}]}`}, []string{"events:PutEvents unknown-bus:default"}},
		{"another service", req{method: "POST", url: "/", target: "TrentService.Decrypt"}, []string{"unknown:TrentService.Decrypt example.com"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.req.method, tc.req.url, strings.NewReader(tc.req.body))
			if tc.req.target != "" {
				r.Header.Set("X-Amz-Target", tc.req.target)
			}
			for k, v := range tc.req.header {
				r.Header.Set(k, v)
			}
			status := tc.req.status
			if status == 0 {
				status = http.StatusOK
			}
			var got []string
			for _, c := range res.IAMCalls(r, []byte(tc.req.body), status) {
				s := c.String()
				if c.MissingKey {
					s += " (404)"
				}
				got = append(got, s)
			}
			slices.Sort(got)
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("calls (-want +got):\n%s", d)
			}
		})
	}
}
