package lambdaio

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog/jsonlogtest"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

func loadSQS(t *testing.T) events.SQSEvent {
	t.Helper()
	b, err := os.ReadFile("testdata/sqs-s3-objectcreated.json")
	if err != nil {
		t.Fatal(err)
	}
	var ev events.SQSEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestObjectHandler(t *testing.T) {
	tests := []struct {
		name   string
		bucket string
		fail   map[string]bool
		panics map[string]any // the value Process panics with for a key (nil: a runtime error)
		// wantPanic is what the panic's log line says of its value
		// (panicvalue.Describe): a runtime error's text, or only the
		// type of a value that could name the object.
		wantPanic string
		wantKeys  []string
		wantFail  []string
	}{
		{
			name:     "all good but the garbage message",
			wantKeys: []string{"incoming/2026/01/15/1.2.3/1.2.3.4/1.2.3.4.5.dcm", "incoming/2026/01/15/1.2.3/1.2.3.4/with space!.dcm"},
			wantFail: []string{"0f7a3c2e-1111-4a5b-9c3d-000000000004"},
		},
		{
			name:     "processing failure fails only its message",
			fail:     map[string]bool{"incoming/2026/01/15/1.2.3/1.2.3.4/1.2.3.4.5.dcm": true},
			wantKeys: []string{"incoming/2026/01/15/1.2.3/1.2.3.4/1.2.3.4.5.dcm", "incoming/2026/01/15/1.2.3/1.2.3.4/with space!.dcm"},
			wantFail: []string{"0f7a3c2e-1111-4a5b-9c3d-000000000001", "0f7a3c2e-1111-4a5b-9c3d-000000000004"},
		},
		{
			// A bug that panics on one object fails its message alone: the
			// process used to die with it, failing the whole batch.
			name:      "a panic in processing fails only its message",
			panics:    map[string]any{"incoming/2026/01/15/1.2.3/1.2.3.4/1.2.3.4.5.dcm": "incoming/2026/01/15/1.2.3/1.2.3.4/1.2.3.4.5.dcm"},
			wantPanic: "a value of type string",
			wantKeys:  []string{"incoming/2026/01/15/1.2.3/1.2.3.4/1.2.3.4.5.dcm", "incoming/2026/01/15/1.2.3/1.2.3.4/with space!.dcm"},
			wantFail:  []string{"0f7a3c2e-1111-4a5b-9c3d-000000000001", "0f7a3c2e-1111-4a5b-9c3d-000000000004"},
		},
		{
			name:      "a runtime error in processing fails only its message",
			panics:    map[string]any{"incoming/2026/01/15/1.2.3/1.2.3.4/with space!.dcm": nil},
			wantPanic: "assignment to entry in nil map",
			wantKeys:  []string{"incoming/2026/01/15/1.2.3/1.2.3.4/1.2.3.4.5.dcm", "incoming/2026/01/15/1.2.3/1.2.3.4/with space!.dcm"},
			wantFail:  []string{"0f7a3c2e-1111-4a5b-9c3d-000000000003", "0f7a3c2e-1111-4a5b-9c3d-000000000004"},
		},
		{
			name:     "other bucket",
			bucket:   "elsewhere",
			wantFail: []string{"0f7a3c2e-1111-4a5b-9c3d-000000000001", "0f7a3c2e-1111-4a5b-9c3d-000000000003", "0f7a3c2e-1111-4a5b-9c3d-000000000004"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu   sync.Mutex
				keys []string
			)
			var logs bytes.Buffer
			h := &ObjectHandler{Bucket: tt.bucket, ReadBudget: 1, Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Process: func(_ context.Context, key string) error {
				mu.Lock()
				keys = append(keys, key)
				mu.Unlock()
				if v, ok := tt.panics[key]; ok {
					if v == nil {
						var m map[string]int
						//lint:ignore SA5000 a runtime error, on purpose
						m[key]++ // a nil map: a runtime error
					}
					panic(v)
				}
				if tt.fail[key] {
					return errors.New("boom")
				}
				return nil
			}}
			resp, err := h.Handle(context.Background(), loadSQS(t))
			if err != nil {
				t.Fatal(err)
			}
			// The read budget (one byte: one object at a time) was given
			// back by the message that panicked, or the next one waited
			// for it until the test's end.
			for key := range tt.panics {
				if strings.Contains(logs.String(), key) || strings.Contains(logs.String(), "1.2.3.4.5") {
					t.Errorf("a panic's log names the object %q:\n%s", key, logs.String())
				}
			}
			if want := `"panic":"` + tt.wantPanic + `"`; tt.wantPanic != "" && !strings.Contains(logs.String(), want) {
				t.Errorf("the panic's log line lacks %s:\n%s", want, logs.String())
			}
			var failed []string
			for _, f := range resp.BatchItemFailures {
				failed = append(failed, f.ItemIdentifier)
			}
			slices.Sort(keys) // handled concurrently, in no particular order
			if d := cmp.Diff(tt.wantKeys, keys); d != "" {
				t.Errorf("keys (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantFail, failed); d != "" {
				t.Errorf("failures (-want +got):\n%s", d)
			}
		})
	}
}

// The messages of a batch are in flight together, never more than
// Concurrency of them, and failures come back in the batch's order.
func TestObjectHandlerConcurrency(t *testing.T) {
	for _, tt := range []struct {
		limit, want int
	}{{0, 6}, {2, 2}, {10, 6}} {
		var (
			mu             sync.Mutex
			inFlight, peak int
			release        = make(chan struct{})
			opened         sync.Once
		)
		var ev events.SQSEvent
		for i := range 6 {
			key := fmt.Sprintf("incoming/2026/01/15/1.2.3/1.2.3.4/1.2.3.4.%d.dcm", i)
			ev.Records = append(ev.Records, events.SQSMessage{MessageId: fmt.Sprint(i), Body: `{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"` + key + `"}}}]}`})
		}
		h := &ObjectHandler{Concurrency: tt.limit, Process: func(_ context.Context, key string) error {
			mu.Lock()
			inFlight++
			peak = max(peak, inFlight)
			full := peak == tt.want
			mu.Unlock()
			if full {
				opened.Do(func() { close(release) }) // every message that may be in flight is
			}
			<-release
			mu.Lock()
			inFlight--
			mu.Unlock()
			if strings.HasSuffix(key, ".1.dcm") || strings.HasSuffix(key, ".4.dcm") {
				return errors.New("boom")
			}
			return nil
		}}
		resp, err := h.Handle(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		if peak != tt.want {
			t.Errorf("Concurrency %d: %d in flight at most, want %d", tt.limit, peak, tt.want)
		}
		if d := cmp.Diff([]events.SQSBatchItemFailure{{ItemIdentifier: "1"}, {ItemIdentifier: "4"}}, resp.BatchItemFailures); d != "" {
			t.Errorf("Concurrency %d: failures (-want +got):\n%s", tt.limit, d)
		}
	}
}

// message is an SQS message of one S3 notification for key of size bytes.
func message(id, key string, size int64) events.SQSMessage {
	return events.SQSMessage{MessageId: id, Body: fmt.Sprintf(`{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":%q,"size":%d}}}]}`, key, size)}
}

// TestObjectHandlerBadLuck: JSON that is no S3 notification fails its
// message (it was acknowledged without a trace: an SNS envelope would drop
// every object); a message that hangs fails alone before the invocation's
// deadline, the rest of the batch acknowledged (the whole invocation timed
// out, and the batch's completed messages came back); and the objects read
// at once stay within ReadBudget by their sizes, one alone always running.
func TestObjectHandlerBadLuck(t *testing.T) {
	t.Run("not an S3 notification", func(t *testing.T) {
		h := &ObjectHandler{Process: func(context.Context, string) error { return nil }}
		ev := events.SQSEvent{Records: []events.SQSMessage{
			{MessageId: "sns", Body: `{"Type":"Notification","Message":"{\"Records\":[]}"}`},
			{MessageId: "other", Body: `{"hello":"world"}`},
			message("ok", "incoming/a.dcm", 10),
		}}
		resp, _ := h.Handle(context.Background(), ev)
		if d := cmp.Diff([]events.SQSBatchItemFailure{{ItemIdentifier: "sns"}, {ItemIdentifier: "other"}}, resp.BatchItemFailures); d != "" {
			t.Errorf("failures (-want +got):\n%s", d)
		}
	})
	t.Run("a message that hangs", func(t *testing.T) {
		// The hanging message's context ends at the reserve, a deadline
		// ShortOfDeadline sets (TestShortOfDeadline holds its bounds),
		// while the invocation's is still live: the message is cut there,
		// not by the invocation's timeout. No wall-clock bound: what is
		// held is the deadline the message is given and the order in
		// which the two contexts end.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		invocation, _ := ctx.Deadline()
		var (
			mu                    sync.Mutex
			processed             []string
			cutAt                 time.Time
			cutBy, invocationLive error
		)
		h := &ObjectHandler{Process: func(mctx context.Context, key string) error {
			mu.Lock()
			processed = append(processed, key)
			mu.Unlock()
			if key != "incoming/stalled.dcm" {
				return nil
			}
			cutAt, _ = mctx.Deadline()
			<-mctx.Done()
			cutBy, invocationLive = mctx.Err(), ctx.Err()
			return mctx.Err()
		}}
		resp, _ := h.Handle(ctx, events.SQSEvent{Records: []events.SQSMessage{message("good", "incoming/good.dcm", 10), message("stalled", "incoming/stalled.dcm", 10)}})
		if d := cmp.Diff([]events.SQSBatchItemFailure{{ItemIdentifier: "stalled"}}, resp.BatchItemFailures); d != "" {
			t.Errorf("failures (-want +got):\n%s", d)
		}
		slices.Sort(processed)
		if d := cmp.Diff([]string{"incoming/good.dcm", "incoming/stalled.dcm"}, processed); d != "" {
			t.Errorf("processed (-want +got):\n%s", d)
		}
		// Under 10 s left, the reserve is its floor, 1 s.
		if want := invocation.Add(-time.Second); !cutAt.Equal(want) {
			t.Errorf("the message's deadline is %v before the invocation's, want the reserve, 1s", invocation.Sub(cutAt))
		}
		if !errors.Is(cutBy, context.DeadlineExceeded) || invocationLive != nil {
			t.Errorf("the message ended by %v with the invocation's context %v; want its own deadline, the invocation's still live", cutBy, invocationLive)
		}
	})
	t.Run("read budget", func(t *testing.T) {
		var mu sync.Mutex
		var inFlight, peak int64
		sizes := map[string]int64{"incoming/big1.dcm": 60 << 20, "incoming/big2.dcm": 60 << 20, "incoming/small.dcm": 1 << 20, "incoming/huge.dcm": 1 << 30}
		h := &ObjectHandler{ReadBudget: 64 << 20, Process: func(_ context.Context, key string) error {
			mu.Lock()
			inFlight += min(sizes[key], 64<<20)
			peak = max(peak, inFlight)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
			mu.Lock()
			inFlight -= min(sizes[key], 64<<20)
			mu.Unlock()
			return nil
		}}
		var ev events.SQSEvent
		for k, n := range sizes {
			ev.Records = append(ev.Records, message(k, k, n))
		}
		resp, _ := h.Handle(context.Background(), ev)
		if len(resp.BatchItemFailures) != 0 || peak > 64<<20 {
			t.Errorf("failures %v; %d bytes read at once, budget %d", resp.BatchItemFailures, peak, 64<<20)
		}
	})
}

func TestScheduleHandler(t *testing.T) {
	at := time.Date(2026, 1, 15, 11, 0, 0, 0, time.UTC)
	var got time.Time
	h := &ScheduleHandler{Now: func() time.Time { return at }, Tick: func(_ context.Context, now time.Time) (int, error) {
		got = now
		return 2, nil
	}}
	out, err := h.Handle(context.Background(), json.RawMessage(`{"source":"aws.events","detail-type":"Scheduled Event"}`))
	if err != nil || out["announced"] != 2 || !got.Equal(at) {
		t.Errorf("Handle = %v, %v (now %v)", out, err, got)
	}
	// A failed run is returned, so that it reaches the schedule's
	// dead-letter queue, and logged as an error, which the runbook has the
	// on-call engineer look for.
	var logs bytes.Buffer
	h.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	h.Tick = func(context.Context, time.Time) (int, error) { return 1, errors.New("ddb down") }
	if _, err := h.Handle(context.Background(), nil); err == nil {
		t.Error("want the error returned: the run failed")
	}
	var line struct{ Level, Err string }
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil || line.Level != "ERROR" || line.Err != "ddb down" {
		t.Errorf("the failed run's log line is %s, want one at level ERROR with its err", logs.String())
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name    string
		env     map[string]string
		want    Config
		wantErr bool
	}{
		{"defaults", map[string]string{"BUCKET": "b"}, withCommitment(Config{Bucket: "b", QuietPeriod: time.Minute, PatientData: pipeline.PatientDataNone}), false},
		{"quiet period seconds", map[string]string{"BUCKET": "b", "QUIET_PERIOD_SECONDS": "90", "EVENT_PATIENT_DATA": "id"}, withCommitment(Config{Bucket: "b", QuietPeriod: 90 * time.Second, PatientData: pipeline.PatientDataID}), false},
		{"quiet period duration", map[string]string{"BUCKET": "b", "QUIET_PERIOD": "2m"}, withCommitment(Config{Bucket: "b", QuietPeriod: 2 * time.Minute, PatientData: pipeline.PatientDataNone}), false},
		{"commitment", map[string]string{"BUCKET": "b", "AE_TITLE": "INGEST", "COMMITMENT_PEERS": "PACS=10.1.0.5:104", "COMMITMENT_WAIT_SECONDS": "60",
			"COMMITMENT_REPORT_MINUTES": "15", "COMMITMENT_QUARANTINED_COMMITTED": "PACS"},
			Config{Bucket: "b", QuietPeriod: time.Minute, PatientData: pipeline.PatientDataNone, AETitle: "INGEST",
				CommitmentPeers: commitreport.Peers{"PACS": {Addr: "10.1.0.5:104"}}, CommitmentTLS: commitreport.TLSPeers{}, CommitmentWait: time.Minute, CommitmentReportFor: 15 * time.Minute,
				CommitmentQuarantined: map[string]bool{"PACS": true}}, false},
		{"bucket arn", map[string]string{"BUCKET": "b", "BUCKET_ARN": "arn:aws-cn:s3:::b"}, withCommitment(Config{Bucket: "b", BucketARN: "arn:aws-cn:s3:::b", QuietPeriod: time.Minute, PatientData: pipeline.PatientDataNone}), false},
		{"missing bucket", map[string]string{}, Config{}, true},
		{"bucket arn of another bucket", map[string]string{"BUCKET": "b", "BUCKET_ARN": "arn:aws:s3:::other"}, Config{}, true},
		{"bucket arn of an object", map[string]string{"BUCKET": "b", "BUCKET_ARN": "arn:aws:s3:::b/incoming"}, Config{}, true},
		{"bucket arn of a queue", map[string]string{"BUCKET": "b", "BUCKET_ARN": "arn:aws:sqs:eu-west-1:123456789012:b"}, Config{}, true},
		{"bucket arn no arn", map[string]string{"BUCKET": "b", "BUCKET_ARN": "s3://b"}, Config{}, true},
		{"bad quiet period", map[string]string{"BUCKET": "b", "QUIET_PERIOD": "soon"}, Config{}, true},
		{"bad policy", map[string]string{"BUCKET": "b", "EVENT_PATIENT_DATA": "all"}, Config{}, true},
		{"bad peers", map[string]string{"BUCKET": "b", "COMMITMENT_PEERS": "PACS"}, Config{}, true},
		{"TLS peer without its CA and client certificate", map[string]string{"BUCKET": "b", "COMMITMENT_PEERS": "PACS=tls://10.1.0.5:2762"}, Config{}, true},
		{"bad wait", map[string]string{"BUCKET": "b", "COMMITMENT_WAIT_SECONDS": "-1"}, Config{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ConfigFromEnv(env(tt.env), "BUCKET")
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err == nil {
				if d := cmp.Diff(tt.want, got); d != "" {
					t.Errorf("(-want +got):\n%s", d)
				}
			}
		})
	}
}

// TestPipelineNamesBucket: the pipeline the functions wire names the
// bucket as the environment does, by name in the detail's pointers and by
// ARN (its partition) in events' resources.
func TestPipelineNamesBucket(t *testing.T) {
	c, err := ConfigFromEnv(func(k string) string {
		return map[string]string{"BUCKET": "b", "BUCKET_ARN": "arn:aws-us-gov:s3:::b"}[k]
	}, "BUCKET", "BUCKET_ARN")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := newPipeline(aws.Config{Region: "us-gov-west-1"}, c, nil, slog.New(slog.DiscardHandler))
	if p.BucketName != "b" || p.BucketARN != "arn:aws-us-gov:s3:::b" {
		t.Errorf("pipeline bucket %q, ARN %q", p.BucketName, p.BucketARN)
	}
}

// withCommitment adds the commitment defaults.
func withCommitment(c Config) Config {
	c.CommitmentPeers, c.CommitmentTLS, c.CommitmentQuarantined = commitreport.Peers{}, commitreport.TLSPeers{}, map[string]bool{}
	c.CommitmentWait, c.CommitmentReportFor = pipeline.DefaultCommitmentWait, pipeline.DefaultCommitmentReportFor
	return c
}

// TestCommitmentHandler: an SQS batch registers its requests, the schedule does not; either way due
// transactions are then run every Poll while some are pending, and no longer, and no run starts in the
// invocation's last Margin, the first included. Found by review: the run after a batch of requests started however
// little of the invocation the batch had left, though docs/pipeline.md says the invocation starts no run in its last
// 10 s (a run's deliveries then had at least 5 s beyond pipeline.CommitmentWriteMargin); only the runs after it were
// held to the margin. The batch's requests are registered either way.
func TestCommitmentHandler(t *testing.T) {
	schedule := events.EventBridgeEvent{Source: "aws.events", DetailType: "Scheduled Event", Detail: json.RawMessage(`{}`)}
	for _, tc := range []struct {
		name     string
		payload  any
		left     time.Duration // the invocation's time
		margin   time.Duration // 0: the default 10 s
		wantKeys int64
		wantRuns int
	}{
		{"sqs", loadSQS(t), 20 * time.Second, 0, 2, 3},
		{"schedule", schedule, 20 * time.Second, 0, 0, 3},
		{"sqs, 5 s left, within the default margin", loadSQS(t), 5 * time.Second, 0, 2, 0},
		{"schedule, 5 s left, within the default margin", schedule, 5 * time.Second, 0, 0, 0},
		{"sqs, 5 s left, a 1 s margin", loadSQS(t), 5 * time.Second, time.Second, 2, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The batch's messages are processed concurrently.
			var keys atomic.Int64
			var runs int
			h := &CommitmentHandler{
				Requests: &ObjectHandler{Process: func(context.Context, string) error { keys.Add(1); return nil }},
				Run:      func(context.Context, time.Time) (int, error) { runs++; return 1, nil },
				Pending:  func(context.Context, time.Time) (bool, error) { return runs < 3, nil },
				Poll:     time.Millisecond,
				Margin:   tc.margin,
			}
			raw, err := json.Marshal(tc.payload)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.left)
			defer cancel()
			if _, err := h.Handle(ctx, raw); err != nil {
				t.Fatal(err)
			}
			if keys.Load() != tc.wantKeys || runs != tc.wantRuns {
				t.Errorf("%d requests registered and %d runs, want %d and %d", keys.Load(), runs, tc.wantKeys, tc.wantRuns)
			}
		})
	}
}

// TestCommitmentHandlerRunFails: a run that fails fails a scheduled
// invocation (its failed runs reach the schedule's dead-letter queue), but
// not a batch of requests: those registered stay acknowledged, or every
// message of the batch would come back and, with a transaction that keeps
// failing, requests registered long since would reach the requests' DLQ.
// The failure is logged either way.
func TestCommitmentHandlerRunFails(t *testing.T) {
	for _, tc := range []struct {
		name     string
		payload  any
		wantErr  bool
		wantFail []string
	}{
		{"schedule", events.EventBridgeEvent{Source: "aws.events", DetailType: "Scheduled Event", Detail: json.RawMessage(`{}`)}, true, nil},
		// The fixture's fourth message is no S3 notification: it fails alone.
		{"sqs", loadSQS(t), false, []string{"0f7a3c2e-1111-4a5b-9c3d-000000000004"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			h := &CommitmentHandler{
				Requests: &ObjectHandler{Process: func(context.Context, string) error { return nil }},
				Run:      func(context.Context, time.Time) (int, error) { return 0, errors.New("table gone") },
				Pending:  func(context.Context, time.Time) (bool, error) { return true, nil },
				Logger:   slog.New(slog.NewJSONHandler(&logs, nil)),
			}
			raw, err := json.Marshal(tc.payload)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := h.Handle(context.Background(), raw)
			if (err != nil) != tc.wantErr {
				t.Errorf("error %v, want one: %v", err, tc.wantErr)
			}
			var failed []string
			for _, f := range resp.BatchItemFailures {
				failed = append(failed, f.ItemIdentifier)
			}
			if d := cmp.Diff(tc.wantFail, failed); d != "" {
				t.Errorf("failed messages (-want +got):\n%s", d)
			}
			if !strings.Contains(logs.String(), "table gone") {
				t.Errorf("the run's failure is not logged: %s", logs.String())
			}
		})
	}
}

// TestScheduledRunPanics: a scheduled run's panic (notify's announce,
// commitment's moving transactions on, from a schedule or after a batch of
// requests) reached the Lambda library, which logged the value as the code
// passed it (a UID, a key) and ended the process. It now fails the run as
// an error would (a scheduled invocation fails, for the schedule's
// retries and dead-letter queue; a batch of requests stays acknowledged),
// logged with the value told by panicvalue.Describe and the stack.
func TestScheduledRunPanics(t *testing.T) {
	const uid = "1.2.826.0.1.3680043.9.7777.42"
	schedule, err := json.Marshal(events.EventBridgeEvent{Source: "aws.events", DetailType: "Scheduled Event", Detail: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	sqs, err := json.Marshal(loadSQS(t))
	if err != nil {
		t.Fatal(err)
	}
	boom := func() { panic("no study " + uid) }
	tests := []struct {
		name    string
		handle  func(log *slog.Logger) error
		wantErr bool
	}{
		{"notify's announce", func(log *slog.Logger) error {
			h := &ScheduleHandler{Tick: func(context.Context, time.Time) (int, error) { boom(); return 0, nil }, Logger: log}
			_, err := h.Handle(context.Background(), schedule)
			return err
		}, true},
		{"commitment's run, scheduled", func(log *slog.Logger) error {
			h := &CommitmentHandler{Requests: &ObjectHandler{Process: func(context.Context, string) error { return nil }},
				Run: func(context.Context, time.Time) (int, error) { boom(); return 0, nil }, Logger: log}
			_, err := h.Handle(context.Background(), schedule)
			return err
		}, true},
		{"commitment's pending, after a batch of requests", func(log *slog.Logger) error {
			h := &CommitmentHandler{Requests: &ObjectHandler{Process: func(context.Context, string) error { return nil }},
				Run:     func(context.Context, time.Time) (int, error) { return 0, nil },
				Pending: func(context.Context, time.Time) (bool, error) { boom(); return false, nil }, Logger: log}
			_, err := h.Handle(context.Background(), sqs)
			return err
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			var err error
			func() {
				defer func() {
					if v := recover(); v != nil {
						t.Fatalf("the panic reached the Lambda library: %v", v)
					}
				}()
				err = tt.handle(slog.New(slog.NewJSONHandler(&logs, nil)))
			}()
			if (err != nil) != tt.wantErr {
				t.Errorf("error %v, want one: %v", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), uid) {
				t.Errorf("the error tells the panic's value: %v", err)
			}
			if strings.Contains(logs.String(), uid) {
				t.Errorf("the log tells the panic's value:\n%s", logs.String())
			}
			for _, want := range []string{ScheduledPanicLog, `"panic":"a value of type string"`, `"stack":`} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("the log lacks %s:\n%s", want, logs.String())
				}
			}
		})
	}
}

// TestShortOfDeadline: the reserve before an invocation's deadline, the
// object handler's and the audit feed's, is a tenth of the time left,
// between 1 and 5 s; a context without a deadline stays without one (and
// is cancelled with the CancelFunc alone).
func TestShortOfDeadline(t *testing.T) {
	tests := []struct {
		name        string
		left        time.Duration // 0: no deadline
		wantReserve time.Duration
	}{
		{"no deadline", 0, 0},
		{"less than the least reserve", 500 * time.Millisecond, time.Second},
		{"3 s", 3 * time.Second, time.Second},
		{"20 s", 20 * time.Second, 2 * time.Second},
		{"the audit feed's 60 s", 60 * time.Second, 5 * time.Second},
		{"15 min", 15 * time.Minute, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent, cancelParent := context.WithCancel(context.Background())
			if tt.left > 0 {
				parent, cancelParent = context.WithTimeout(context.Background(), tt.left)
			}
			defer cancelParent()
			ctx, cancel := ShortOfDeadline(parent)
			pd, hasParent := parent.Deadline()
			d, has := ctx.Deadline()
			if has != hasParent {
				t.Fatalf("deadline %v, %v; want one when, and only when, the parent has one", d, has)
			}
			if has {
				// A tenth of the time left when ShortOfDeadline looked:
				// a little less than a tenth of tt.left.
				if reserve := pd.Sub(d); reserve > tt.wantReserve || reserve < tt.wantReserve-10*time.Millisecond {
					t.Errorf("reserve %v, want %v", reserve, tt.wantReserve)
				}
			}
			if ctx.Err() != nil && tt.left > tt.wantReserve {
				t.Errorf("ended at once: %v", ctx.Err())
			}
			cancel()
			if ctx.Err() == nil || parent.Err() != nil {
				t.Errorf("after cancel: %v, parent %v; want it ended, the parent not", ctx.Err(), parent.Err())
			}
		})
	}
}

// TestPanicLinesCounted: the line each handler logs for a panic it
// recovered, as the function's own logger (LoggerTo, Logger's) writes it, is
// counted once by the metric filter the stack puts on every function's log
// group (jsonlog.MessageFilter of pipeline.MessagePanicLog and
// ScheduledPanicLog: infra/stack's TestFunctionPanicsAlarmed holds the
// synthesized filter to it), and carries the field the filter takes its
// Environment dimension from: a filter with dimensions counts nothing of a
// line without it, and the FunctionPanicked alarm would never sound.
func TestPanicLinesCounted(t *testing.T) {
	schedule, err := json.Marshal(events.EventBridgeEvent{Source: "aws.events", DetailType: "Scheduled Event", Detail: json.RawMessage(`{}`)})
	if err != nil {
		t.Fatal(err)
	}
	sqs := loadSQS(t)
	var panicked atomic.Int64
	boom := func() {
		panicked.Add(1)
		panic("a bug")
	}
	tests := []struct {
		name   string
		handle func(log *slog.Logger)
	}{
		{"a queue's message (validate, audit)", func(log *slog.Logger) {
			h := &ObjectHandler{Bucket: "ingest-bucket", Logger: log, Process: func(context.Context, string) error { boom(); return nil }}
			if _, err := h.Handle(context.Background(), sqs); err != nil {
				t.Fatal(err)
			}
		}},
		{"a scheduled run (notify)", func(log *slog.Logger) {
			h := &ScheduleHandler{Tick: func(context.Context, time.Time) (int, error) { boom(); return 0, nil }, Logger: log}
			if _, err := h.Handle(context.Background(), schedule); err == nil {
				t.Error("the run that panicked succeeded")
			}
		}},
		{"commitment's run, scheduled", func(log *slog.Logger) {
			h := &CommitmentHandler{Requests: &ObjectHandler{Logger: log}, Run: func(context.Context, time.Time) (int, error) { boom(); return 0, nil }, Logger: log}
			if _, err := h.Handle(context.Background(), schedule); err == nil {
				t.Error("the run that panicked succeeded")
			}
		}},
	}
	filter := jsonlog.MessageFilter(pipeline.MessagePanicLog, pipeline.ScheduledPanicLog)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			panicked.Store(0)
			tt.handle(LoggerTo(&logs, "validate", "prod"))
			counted := jsonlogtest.Counted(t, filter, logs.Bytes())
			if n := panicked.Load(); n == 0 || len(counted) != int(n) {
				t.Errorf("%d lines counted by %s, want %d, one a panic:\n%s", len(counted), filter, n, logs.String())
			}
			for _, l := range counted {
				if l[jsonlog.EnvironmentKey] != "prod" || l["stack"] == nil {
					t.Errorf("line counted %v: want %s prod (the metric's dimension) and the stack", l, jsonlog.EnvironmentKey)
				}
			}
		})
	}
}
