package lambdaio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/google/go-cmp/cmp"

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
		name     string
		bucket   string
		fail     map[string]bool
		wantKeys []string
		wantFail []string
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
			h := &ObjectHandler{Bucket: tt.bucket, Process: func(_ context.Context, key string) error {
				mu.Lock()
				keys = append(keys, key)
				mu.Unlock()
				if tt.fail[key] {
					return errors.New("boom")
				}
				return nil
			}}
			resp, err := h.Handle(context.Background(), loadSQS(t))
			if err != nil {
				t.Fatal(err)
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
	h.Tick = func(context.Context, time.Time) (int, error) { return 0, errors.New("ddb down") }
	if _, err := h.Handle(context.Background(), nil); err == nil {
		t.Error("want the error returned so the schedule retries")
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
		{"defaults", map[string]string{"BUCKET": "b"}, Config{Bucket: "b", QuietPeriod: time.Minute, PatientData: pipeline.PatientDataNone}, false},
		{"quiet period seconds", map[string]string{"BUCKET": "b", "QUIET_PERIOD_SECONDS": "90", "EVENT_PATIENT_DATA": "id"}, Config{Bucket: "b", QuietPeriod: 90 * time.Second, PatientData: pipeline.PatientDataID}, false},
		{"quiet period duration", map[string]string{"BUCKET": "b", "QUIET_PERIOD": "2m"}, Config{Bucket: "b", QuietPeriod: 2 * time.Minute, PatientData: pipeline.PatientDataNone}, false},
		{"missing bucket", map[string]string{}, Config{}, true},
		{"bad quiet period", map[string]string{"BUCKET": "b", "QUIET_PERIOD": "soon"}, Config{}, true},
		{"bad policy", map[string]string{"BUCKET": "b", "EVENT_PATIENT_DATA": "all"}, Config{}, true},
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
