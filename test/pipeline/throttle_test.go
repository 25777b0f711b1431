package pipelinee2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// dynamoFaults is a proxy in front of dynalite that answers DynamoDB's
// requests with an error while failing is set, after letting pass the
// first passFirst requests of the failure.
type dynamoFaults struct {
	next http.Handler

	mu        sync.Mutex
	failing   bool
	status    int
	errType   string
	passFirst int
	seen      int // requests since failing was set
	failed    int // requests answered with the error
}

func newDynamoFaults(t *testing.T, target string) (*dynamoFaults, string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	f := &dynamoFaults{next: httputil.NewSingleHostReverseProxy(u)}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

func (f *dynamoFaults) fail(status int, errType string, passFirst int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing, f.status, f.errType, f.passFirst, f.seen, f.failed = true, status, errType, passFirst, 0, 0
}

func (f *dynamoFaults) recover() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing = false
	return f.failed
}

func (f *dynamoFaults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	fail := f.failing && f.seen >= f.passFirst
	if f.failing {
		f.seen++
	}
	if fail {
		f.failed++
	}
	status, errType := f.status, f.errType
	f.mu.Unlock()
	if !fail {
		f.next.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"__type":"com.amazonaws.dynamodb.v20120810#%s","message":"injected"}`, errType)
}

// TestDynamoDBFailuresThenRecovery is the on-call drill of alarms.md's
// function rows for DynamoDB throttled or failing: the validate and audit
// functions, their DynamoDB calls answered ProvisionedThroughputExceeded
// (HTTP 400) or 500 for a while, from the first call or from one made
// midway through an object's writes. Each retries through the SDK's
// retryer, reports the message as a batch item failure (SQS redelivers
// it) and logs it by message id and error code; once DynamoDB recovers the
// redelivered message lands its records, and a further redelivery adds
// none: every record exactly once.
func TestDynamoDBFailuresThenRecovery(t *testing.T) {
	e := newEnv(t, "1s")
	faults, proxyURL := newDynamoFaults(t, e.ddbURL)
	e.startFunction(e.rie, "validate-faulty", "validate", "AWS_ENDPOINT_URL_DYNAMODB="+proxyURL)
	e.startFunction(e.rie, "audit-faulty", "audit", "AWS_ENDPOINT_URL_DYNAMODB="+proxyURL)
	ctx := context.Background()
	received := time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC)
	var observed []string

	for i, tc := range []struct {
		name      string
		status    int
		errType   string
		passFirst int
	}{
		{"throttled from the first call", http.StatusBadRequest, "ProvisionedThroughputExceededException", 0},
		{"throttled midway", http.StatusBadRequest, "ProvisionedThroughputExceededException", 2},
		{"500 from the first call", http.StatusInternalServerError, "InternalServerError", 0},
		{"500 midway", http.StatusInternalServerError, "InternalServerError", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uid := sop(100 + i)
			data := e.putInstance(objectKey(uid), ctInstance(uid), received.Add(time.Duration(i)*time.Second))
			obj := sqsEvent(s3Notification(objectKey(uid), len(data)))
			rec := associationaudit.Record{Event: associationaudit.EventRejected, Time: received, AssociationID: fmt.Sprintf("assoc-drill-%d", i),
				CallingAE: fmt.Sprintf("DRILL%d", i), CalledAE: "INGEST", PeerAddr: "192.0.2.9:5104", RejectResult: 1, RejectSource: 1, RejectReason: 3, Seq: 1}
			body, err := associationaudit.Marshal(rec)
			if err != nil {
				t.Fatal(err)
			}
			key, _ := associationaudit.Key(rec)
			e.put(key, body, nil)
			assoc := awsSQSEvent(key, len(body))

			faults.fail(tc.status, tc.errType, tc.passFirst)
			for _, fn := range []struct {
				name string
				ev   events.SQSEvent
			}{{"validate-faulty", obj}, {"audit-faulty", assoc}} {
				var resp events.SQSEventResponse
				start := time.Now()
				e.invoke(t, fn.name, fn.ev, &resp)
				if len(resp.BatchItemFailures) != 1 {
					t.Errorf("%s while DynamoDB fails: failures %v, want the message", fn.name, failures(resp))
				}
				observed = append(observed, fmt.Sprintf("%s, %s: failed after %v", tc.name, fn.name, time.Since(start).Round(10*time.Millisecond)))
			}
			attempts := faults.recover()
			observed = append(observed, fmt.Sprintf("%s: %d requests answered %d", tc.name, attempts, tc.status))
			if attempts < 2 {
				t.Errorf("%d requests failed: the SDK did not retry", attempts)
			}

			// SQS redelivers both, twice: the records land once.
			for range 2 {
				e.invokeBatch(t, "validate-faulty", obj)
				e.invokeBatch(t, "audit-faulty", assoc)
			}
			page, err := e.audit.Query(ctx, pipeline.AuditQuery{PatientID: "PID-9"})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, r := range page.Records {
				if r.SOPInstanceUID == uid {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d audit records of the instance, want 1", n)
			}
			page, err = e.audit.Query(ctx, pipeline.AuditQuery{CallingAE: rec.CallingAE})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Records) != 1 {
				t.Errorf("%d association records, want 1", len(page.Records))
			}
			st, err := e.index.GetStudy(ctx, study)
			if err != nil {
				t.Fatal(err)
			}
			if st.InstanceCount != i+1 || len(st.Instances) != i+1 {
				t.Errorf("study counts %d instances (%d listed), want %d", st.InstanceCount, len(st.Instances), i+1)
			}
		})
	}
	e.stopFunctions()
	for _, fn := range []string{"validate-faulty", "audit-faulty"} {
		logs := e.logs[fn].String()
		var lines []string
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, `"message failed"`) {
				lines = append(lines, l)
			}
		}
		if len(lines) != 4 {
			t.Errorf("%s: %d 'message failed' lines, want 4:\n%s", fn, len(lines), logs)
		}
		for _, l := range lines {
			if !strings.Contains(l, "ProvisionedThroughputExceededException") && !strings.Contains(l, "InternalServerError") {
				t.Errorf("%s: the line does not name DynamoDB's error: %s", fn, l)
			}
			if strings.Contains(l, series) || strings.Contains(l, "PID-9") {
				t.Errorf("%s: the line names a UID or the patient: %s", fn, l)
			}
		}
		if len(lines) > 0 {
			observed = append(observed, fn+" logs: "+lines[0])
		}
	}
	t.Log("drill:\n" + strings.Join(observed, "\n"))
}

// awsSQSEvent is the audit queue's batch of one association record.
func awsSQSEvent(key string, size int) events.SQSEvent {
	return sqsEvent(s3Notification(key, size))
}
