package pipeline_test

import (
	"context"
	"encoding/json"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"

	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore/localstoretest"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// putEventsCapture is an EventBridge client that accepts every entry.
type putEventsCapture struct {
	entries []ebtypes.PutEventsRequestEntry
}

func (c *putEventsCapture) PutEvents(_ context.Context, in *eventbridge.PutEventsInput, _ ...func(*eventbridge.Options)) (*eventbridge.PutEventsOutput, error) {
	c.entries = append(c.entries, in.Entries...)
	return &eventbridge.PutEventsOutput{Entries: make([]ebtypes.PutEventsResultEntry, len(in.Entries))}, nil
}

// delivered is an event as a subscriber receives it: the fields of
// EventBridge's envelope.
type delivered struct {
	Version    string          `json:"version"`
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Time       string          `json:"time"`
	Region     string          `json:"region"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
}

// viaEventBridge publishes events with the AWS adapter and returns them as
// a rule's target receives them: EventBridge gives each entry an id of its
// own, its account and region, resources (empty when none) and the time to
// the second.
func viaEventBridge(t *testing.T, events []pipeline.Event) []delivered {
	t.Helper()
	c := &putEventsCapture{}
	pub := &awsadapters.EventBridgePublisher{Client: c, BusName: "dicom-ingest-test"}
	for chunk := range slices.Chunk(events, 10) {
		if failed, err := pub.Publish(context.Background(), chunk); err != nil || len(failed) > 0 {
			t.Fatalf("publish: failed %v, %v", failed, err)
		}
	}
	out := make([]delivered, len(c.entries))
	for i, e := range c.entries {
		res := e.Resources
		if res == nil {
			res = []string{}
		}
		out[i] = delivered{Version: "0", ID: "eventbridge-assigned", DetailType: aws.ToString(e.DetailType),
			Source: aws.ToString(e.Source), Account: "123456789012", Time: aws.ToTime(e.Time).UTC().Format(time.RFC3339),
			Region: "eu-west-1", Resources: res, Detail: json.RawMessage(aws.ToString(e.Detail))}
	}
	return out
}

// viaLocalMode publishes events with the local outbox and returns the
// lines of the event log (the envelope webhooks are POSTed, after the
// event's outbox and seq) and the outbox's id.
func viaLocalMode(t *testing.T, events []pipeline.Event) ([]delivered, []map[string]any, string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := localstore.Open(ctx, filepath.Join(dir, "ingest.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Outbox(nil).Publish(ctx, events); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "events.log")
	if err := (&localstore.Publisher{DB: db, LogPath: logPath}).Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var out []delivered
	var raw []map[string]any
	for _, ev := range localstoretest.EventsLog(t, logPath) {
		var d delivered
		var m map[string]any
		if err := json.Unmarshal(ev.Line, &d); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(ev.Line, &m); err != nil {
			t.Fatal(err)
		}
		out, raw = append(out, d), append(raw, m)
	}
	return out, raw, db.OutboxID()
}

// objectKeyOf returns the key of the object event ev of deployment d is
// about, by its detail: objectKey for instance events (whose objectUri is
// d's pointer to it), the result's key for Storage Commitment Completed;
// "" for study events, which are about no one object.
func objectKeyOf(t *testing.T, d deployment, ev pipeline.Event) string {
	t.Helper()
	var detail struct{ ObjectKey, ObjectURI, ResultURI string }
	if err := json.Unmarshal(ev.Detail, &detail); err != nil {
		t.Fatal(err)
	}
	switch ev.DetailType {
	case pipeline.DetailTypeInstanceStored, pipeline.DetailTypeInstanceRejected:
		if detail.ObjectURI != d.pointers+detail.ObjectKey {
			t.Errorf("%s: objectUri %q for key %q, want it under %q", ev.DetailType, detail.ObjectURI, detail.ObjectKey, d.pointers)
		}
		return detail.ObjectKey
	case pipeline.DetailTypeCommitmentCompleted:
		key, ok := strings.CutPrefix(detail.ResultURI, d.pointers)
		if !ok {
			t.Errorf("%s: resultUri %q, want it under %q", ev.DetailType, detail.ResultURI, d.pointers)
		}
		return key
	}
	return ""
}

// keysOf returns the keys that resources name under deployment d's base,
// failing for one that is not under it.
func keysOf(t *testing.T, d deployment, resources []string) []string {
	t.Helper()
	keys := []string{}
	for _, r := range resources {
		key, ok := strings.CutPrefix(r, d.resources)
		if !ok {
			t.Errorf("%s: resource %q is not under %q", d.name, r, d.resources)
		}
		keys = append(keys, key)
	}
	return keys
}

// TestEventResourcesNameObjects: an event's resources name the object it
// is about (the result, for Storage Commitment Completed; nothing for a
// study event), as EventBridge asks, by ARN in AWS, in the stack's
// partition; in local mode, which has no ARN, by its URI, the detail's.
// In both, a resource is the deployment's base followed by the key.
func TestEventResourcesNameObjects(t *testing.T) {
	for _, d := range []deployment{inAWS("aws"), inAWS("aws-cn"), inAWS("aws-us-gov"), inLocalMode} {
		t.Run(d.name, func(t *testing.T) {
			for _, ev := range everyEvent(t, pipeline.PatientDataNone, d) {
				var want []string
				if key := objectKeyOf(t, d, ev); key != "" {
					want = []string{d.resources + key}
				}
				if !slices.Equal(ev.Resources, want) {
					t.Errorf("%s: resources %q, want %q", ev.DetailType, ev.Resources, want)
				}
				for _, r := range ev.Resources {
					a, err := arn.Parse(r)
					switch {
					case d.partition == "" && arn.IsARN(r):
						t.Errorf("%s: resource %q looks like an ARN in local mode", ev.DetailType, r)
					case d.partition == "":
					case err != nil:
						t.Errorf("%s: resource %q is no ARN: %v", ev.DetailType, r, err)
					case a.Partition != d.partition || a.Service != "s3" || a.Region != "" || a.AccountID != "" || !strings.HasPrefix(a.Resource, "bucket/"):
						t.Errorf("%s: resource %q, want an object of bucket in partition %s", ev.DetailType, r, d.partition)
					}
				}
			}
		})
	}
}

// TestEventsInBothModes: every event the pipeline emits reaches a
// subscriber in the same shape in AWS (the EventBridge adapter) and in
// local mode (the outbox, its log and webhooks), and matches its schema
// there; the envelopes differ only where docs/pipeline.md says (id,
// the time's precision; account and region placeholders in local mode),
// and the detail's pointers and the resources only in the base before the
// key.
func TestEventsInBothModes(t *testing.T) {
	sch := pt.StrictSchemas(t)
	cloud := inAWS("aws")
	for _, policy := range []pipeline.PatientDataPolicy{pipeline.PatientDataNone, pipeline.PatientDataFull} {
		t.Run(string(policy), func(t *testing.T) {
			events, localEvents := everyEvent(t, policy, cloud), everyEvent(t, policy, inLocalMode)
			eb := viaEventBridge(t, events)
			local, raw, outbox := viaLocalMode(t, localEvents)
			if len(eb) != len(events) || len(local) != len(events) {
				t.Fatalf("%d events: %d through EventBridge, %d in the event log", len(events), len(eb), len(local))
			}
			seen := map[string]bool{}
			for i, ev := range events {
				a, l := eb[i], local[i]
				seen[ev.DetailType] = true
				for mode, d := range map[string]delivered{"aws": a, "local": l} {
					if d.Source != pipeline.EventSource || d.DetailType != ev.DetailType || d.Version != "0" {
						t.Errorf("%s: source %q detail-type %q version %q", mode, d.Source, d.DetailType, d.Version)
					}
					var v any
					if err := json.Unmarshal(d.Detail, &v); err != nil {
						t.Fatal(err)
					}
					if err := sch[d.DetailType].Validate(v); err != nil {
						t.Errorf("%s: %s detail does not match its schema: %v", mode, d.DetailType, err)
					}
				}
				// The same detail but for the pointers' base.
				var ad, ld any
				if err := json.Unmarshal([]byte(strings.ReplaceAll(string(a.Detail), cloud.pointers, "<base>")), &ad); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal([]byte(strings.ReplaceAll(string(l.Detail), inLocalMode.pointers, "<base>")), &ld); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(ad, ld) {
					t.Errorf("%s: detail differs between modes:\naws   %s\nlocal %s", ev.DetailType, a.Detail, l.Detail)
				}
				// The same keys in resources, under each mode's base.
				if ak, lk := keysOf(t, cloud, a.Resources), keysOf(t, inLocalMode, l.Resources); !slices.Equal(ak, lk) || l.Resources == nil {
					t.Errorf("%s: resources %q in AWS, %q in local mode", ev.DetailType, a.Resources, l.Resources)
				}
				if at, err := time.Parse(time.RFC3339, a.Time); err != nil {
					t.Errorf("aws time %q: %v", a.Time, err)
				} else if lt, err := time.Parse(time.RFC3339Nano, l.Time); err != nil || !lt.Truncate(time.Second).Equal(at) {
					t.Errorf("time %q in local mode, %q in AWS (%v)", l.Time, a.Time, err)
				}
				// The one id both modes share is the detail's eventId.
				if l.ID != ev.ID {
					t.Errorf("local envelope id %q, want the event id %q", l.ID, ev.ID)
				}
				// The log's line is the envelope after the event's place
				// in the outbox (outbox, seq), which webhooks get as
				// headers: the rest is EventBridge's.
				if raw[i]["outbox"] != outbox || raw[i]["seq"] != float64(i+1) {
					t.Errorf("log line %d names outbox %v seq %v, want %q %d", i+1, raw[i]["outbox"], raw[i]["seq"], outbox, i+1)
				}
				// Every field of EventBridge's, so that a consumer
				// parses both alike: account and region placeholders.
				fields := slices.Sorted(maps.Keys(raw[i]))
				if want := []string{"account", "detail", "detail-type", "id", "outbox", "region", "resources", "seq", "source", "time", "version"}; !slices.Equal(fields, want) {
					t.Errorf("local envelope's fields %q, want EventBridge's and the outbox's place, %q", fields, want)
				}
				if l.Account != localstore.EnvelopeAccount || l.Region != localstore.EnvelopeRegion {
					t.Errorf("local envelope's account %q region %q, want the placeholders %q %q", l.Account, l.Region, localstore.EnvelopeAccount, localstore.EnvelopeRegion)
				}
			}
			for _, dt := range pipeline.DetailTypes {
				if !seen[dt] {
					t.Errorf("no %q event", dt)
				}
			}
		})
	}
}
