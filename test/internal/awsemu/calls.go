package awsemu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"

	"github.com/dicom-ingest/dicom-ingest/infra/access"
)

// Call is one AWS call a function made, as IAM authorizes it: the IAM
// action and the resource, named as infra/access names a grant's.
type Call struct {
	Action, Resource string
	// MissingKey: the call is s3:ListBucket for a GET or HEAD S3 answered
	// 404 (no such key), which S3 says only to a caller that may list the
	// bucket; without it, AccessDenied (403) instead.
	MissingKey bool
}

func (c Call) String() string { return c.Action + " " + c.Resource }

// Resources names the emulated resources as infra/access does: the
// tables by their names (to access.IndexTable, access.AuditTable), the
// DICOM bucket and the event bus. Anything else is named as it is, so no
// grant covers it.
type Resources struct {
	Tables      map[string]string
	Bucket, Bus string
	// Root: keys under it are named relative to it (a test store's root,
	// s3://bucket/<root>; the deployment's store has none).
	Root string
}

// CallRecorder is one function's endpoint for S3, DynamoDB and
// EventBridge (AWS_ENDPOINT_URL_S3, _DYNAMODB and _EVENTBRIDGE all name
// it): it records each call's IAM actions and resources and passes the
// request on to the emulator of its service, told apart by X-Amz-Target
// (DynamoDB_20120810.*, AWSEvents.*; S3's REST calls carry none).
type CallRecorder struct {
	res                 Resources
	s3, dynamodb, event http.Handler

	mu    sync.Mutex
	calls []Call
}

// NewCallRecorder is a recorder passing calls on to the emulators at
// s3URL, dynamoURL and eventsURL.
func NewCallRecorder(res Resources, s3URL, dynamoURL, eventsURL string) (*CallRecorder, error) {
	r := &CallRecorder{res: res}
	for _, t := range []struct {
		raw string
		h   *http.Handler
	}{{s3URL, &r.s3}, {dynamoURL, &r.dynamodb}, {eventsURL, &r.event}} {
		u, err := url.Parse(t.raw)
		if err != nil {
			return nil, fmt.Errorf("call recorder: endpoint: %w", err)
		}
		*t.h = httputil.NewSingleHostReverseProxy(u)
	}
	return r, nil
}

// Calls returns the calls recorded so far.
func (r *CallRecorder) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Call(nil), r.calls...)
}

func (r *CallRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	target := req.Header.Get("X-Amz-Target")
	var next http.Handler
	var body []byte
	switch {
	case target == "":
		// S3: the object's bytes pass through unread.
		next = r.s3
	case strings.HasPrefix(target, "DynamoDB_"), strings.HasPrefix(target, "AWSEvents."):
		// A JSON request names its resources in its body; DynamoDB's and
		// PutEvents' are small (at most 16 MB and 1 MB).
		next = r.dynamodb
		if strings.HasPrefix(target, "AWSEvents.") {
			next = r.event
		}
		b, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
			return
		}
		body = b
		req.Body = io.NopCloser(bytes.NewReader(b))
	default:
		r.record([]Call{{Action: "unknown:" + target, Resource: req.Host}})
		http.Error(w, `{"__type":"UnknownOperationException"}`, http.StatusBadRequest)
		return
	}
	sw := &StatusWriter{ResponseWriter: w, Status: http.StatusOK}
	next.ServeHTTP(sw, req)
	r.record(r.res.IAMCalls(req, body, sw.Status))
}

func (r *CallRecorder) record(calls []Call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, calls...)
}

// IAMCalls names the IAM actions and resources a request needs, given
// its JSON body (DynamoDB, EventBridge) and the status it was answered
// with (S3 answers a missing key 404 only to a caller that may list the
// bucket; else 403).
func (res Resources) IAMCalls(req *http.Request, body []byte, status int) []Call {
	target := req.Header.Get("X-Amz-Target")
	switch {
	case strings.HasPrefix(target, "DynamoDB_"):
		_, op, _ := strings.Cut(target, ".")
		return res.dynamoCalls(op, body)
	case strings.HasPrefix(target, "AWSEvents."):
		return res.eventsCalls(strings.TrimPrefix(target, "AWSEvents."), body)
	case target == "":
		return res.s3Calls(req, status)
	}
	return []Call{{Action: "unknown:" + target, Resource: req.Host}}
}

func (res Resources) table(name string) string {
	if t, ok := res.Tables[name]; ok {
		return t
	}
	return "unknown-table:" + name
}

// dynamoCalls: a call's action is dynamodb:<operation> on its table, or on
// the index it queries; a batch's on each table it names; a transaction's
// item actions on each item's table (TransactWriteItems needs PutItem,
// UpdateItem, DeleteItem or ConditionCheckItem per item).
func (res Resources) dynamoCalls(op string, body []byte) []Call {
	var in struct {
		TableName, IndexName string
		RequestItems         map[string]json.RawMessage
		TransactItems        []map[string]struct{ TableName string }
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return []Call{{Action: "dynamodb:" + op, Resource: "unreadable request: " + err.Error()}}
	}
	var out []Call
	switch {
	case in.TableName != "" && in.IndexName != "":
		out = append(out, Call{Action: "dynamodb:" + op, Resource: access.TableIndexResource(res.table(in.TableName), in.IndexName)})
	case in.TableName != "":
		out = append(out, Call{Action: "dynamodb:" + op, Resource: access.TableResource(res.table(in.TableName))})
	}
	for name := range in.RequestItems {
		out = append(out, Call{Action: "dynamodb:" + op, Resource: access.TableResource(res.table(name))})
	}
	for _, item := range in.TransactItems {
		for kind, it := range item {
			action := map[string]string{"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}[kind]
			if action == "" {
				action = kind
			}
			out = append(out, Call{Action: "dynamodb:" + action, Resource: access.TableResource(res.table(it.TableName))})
		}
	}
	if len(out) == 0 {
		out = append(out, Call{Action: "dynamodb:" + op, Resource: "*"})
	}
	return out
}

// eventsCalls: events:<operation> on the bus each entry names (PutEvents'
// entries name it; an empty name is the default bus).
func (res Resources) eventsCalls(op string, body []byte) []Call {
	var in struct {
		Entries []struct{ EventBusName string }
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return []Call{{Action: "events:" + op, Resource: "unreadable request: " + err.Error()}}
	}
	buses := map[string]bool{}
	for _, e := range in.Entries {
		name := e.EventBusName
		if i := strings.LastIndex(name, "event-bus/"); i >= 0 {
			name = name[i+len("event-bus/"):]
		}
		buses[name] = true
	}
	var out []Call
	for name := range buses {
		r := access.BusResource
		if name != res.Bus {
			r = "unknown-bus:" + name
		}
		out = append(out, Call{Action: "events:" + op, Resource: r})
	}
	return out
}

// s3Calls maps a path-style S3 REST request, by its operation
// (Operation), to the IAM actions it needs ("Amazon S3 API operations and
// permissions", Amazon S3 User Guide): GetObject and HeadObject need
// s3:GetObject; PutObject and a multipart upload's start, parts and
// completion s3:PutObject; a copy also s3:GetObject on its source and,
// copying the source's tags (CopyObject's default directive), its
// s3:GetObjectTagging and s3:PutObjectTagging on the copy; tags given with
// an upload s3:PutObjectTagging; a listing or a HEAD of the bucket
// s3:ListBucket; the tagging operations, DeleteObject and
// AbortMultipartUpload their own actions.
func (res Resources) s3Calls(req *http.Request, status int) []Call {
	bucket, key, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, "/"), "/")
	object := func(b, k string) string {
		if b != res.Bucket {
			return "unknown-bucket:" + b + "/" + k
		}
		return access.ObjectResource(strings.TrimPrefix(k, res.Root))
	}
	bucketRes := access.BucketResource
	if bucket != res.Bucket {
		bucketRes = "unknown-bucket:" + bucket
	}
	obj := object(bucket, key)
	switch op := Operation(req); op {
	case "GetObject", "HeadObject":
		out := []Call{{Action: "s3:GetObject", Resource: obj}}
		if status == http.StatusNotFound {
			out = append(out, Call{Action: "s3:ListBucket", Resource: bucketRes, MissingKey: true})
		}
		return out
	case "PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject", "UploadPartCopy":
		out := []Call{{Action: "s3:PutObject", Resource: obj}}
		if req.Header.Get("X-Amz-Tagging") != "" {
			out = append(out, Call{Action: "s3:PutObjectTagging", Resource: obj})
		}
		if op != "CopyObject" && op != "UploadPartCopy" {
			return out
		}
		src := req.Header.Get("X-Amz-Copy-Source")
		if u, err := url.PathUnescape(src); err == nil {
			src = u
		}
		src, _, _ = strings.Cut(src, "?versionId=")
		sb, sk, _ := strings.Cut(strings.TrimPrefix(src, "/"), "/")
		out = append(out, Call{Action: "s3:GetObject", Resource: object(sb, sk)})
		if op == "CopyObject" && !strings.EqualFold(req.Header.Get("X-Amz-Tagging-Directive"), "REPLACE") {
			out = append(out, Call{Action: "s3:GetObjectTagging", Resource: object(sb, sk)}, Call{Action: "s3:PutObjectTagging", Resource: obj})
		}
		return out
	case "GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging", "DeleteObject", "AbortMultipartUpload":
		return []Call{{Action: "s3:" + op, Resource: obj}}
	case "ListParts":
		return []Call{{Action: "s3:ListMultipartUploadParts", Resource: obj}}
	case "ListObjects", "ListObjectsV2", "HeadBucket":
		return []Call{{Action: "s3:ListBucket", Resource: bucketRes}}
	case "ListMultipartUploads":
		return []Call{{Action: "s3:ListBucketMultipartUploads", Resource: bucketRes}}
	case "DeleteObjects":
		// The keys are in the body, unread: no grant covers the call.
		return []Call{{Action: "s3:DeleteObject", Resource: object(bucket, "(DeleteObjects)")}}
	default:
		if key == "" {
			return []Call{{Action: "s3:" + op, Resource: bucketRes}}
		}
		return []Call{{Action: "s3:" + op, Resource: obj}}
	}
}
