package pipelinee2e

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// upsertStep tells a call of the DynamoDB upsert protocol
// (awsadapters.IndexTable.UpsertInstance) by its input: "" for a call of
// no step named here.
func upsertStep(params any) string {
	switch in := params.(type) {
	case *dynamodb.UpdateItemInput:
		sk, _ := in.Key["sk"].(*ddbtypes.AttributeValueMemberS)
		switch {
		case sk == nil || sk.Value != "STUDY":
		case strings.Contains(aws.ToString(in.UpdateExpression), "countedAt"):
			return stepCount
		default:
			return stepFinalize
		}
	case *dynamodb.PutItemInput:
		if sk, ok := in.Item["sk"].(*ddbtypes.AttributeValueMemberS); ok && strings.HasPrefix(sk.Value, "INSTANCE#") {
			return stepInstance
		}
	}
	return ""
}

// The protocol's steps a test holds a client before.
const (
	stepCount    = "count"    // step 3: the study's counters and pending set
	stepInstance = "instance" // step 4: the instance item
	stepFinalize = "finalize" // step 5: the study's other attributes
)

// pause holds a client's first call of one step until released, once it
// has said it got there; its later calls go through. Of step "" it holds
// none.
type pause struct {
	step             string
	reached, release chan struct{}
	once             sync.Once
}

func newPause(step string) *pause {
	return &pause{step: step, reached: make(chan struct{}), release: make(chan struct{})}
}

func (p *pause) install(o *dynamodb.Options) {
	o.APIOptions = append(o.APIOptions, func(s *middleware.Stack) error {
		return s.Initialize.Add(middleware.InitializeMiddlewareFunc("pause",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				if p.step != "" && upsertStep(in.Parameters) == p.step {
					held := false
					p.once.Do(func() { held = true; close(p.reached) })
					if held {
						<-p.release
					}
				}
				return next.HandleInitialize(ctx, in)
			}), middleware.Before)
	})
}

// crashAt makes a client behave as if its process died just before its
// first call of step: that call and every later one fail.
func crashAt(step string) func(*dynamodb.Options) {
	var dead sync.Once
	var died bool
	return func(o *dynamodb.Options) {
		o.Retryer = aws.NopRetryer{}
		o.APIOptions = append(o.APIOptions, func(s *middleware.Stack) error {
			return s.Initialize.Add(middleware.InitializeMiddlewareFunc("crash",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					if upsertStep(in.Parameters) == step {
						dead.Do(func() { died = true })
					}
					if died {
						return middleware.InitializeOutput{}, middleware.Metadata{}, pipelinetest.ErrCrash
					}
					return next.HandleInitialize(ctx, in)
				}), middleware.Before)
		})
	}
}

// twoTransfers is one data set under two object keys: from a PACS, and
// from a VNA forwarding it at the same moment, which the S3 store keeps
// under a conflict key (another meta header, other bytes).
func twoTransfers() (a, b pipeline.InstanceRecord) {
	a = pipelinetest.Record(1, 1, 1, "dataset-crc64nvme-00000000000000aa", 0)
	b = a
	b.ObjectKey, b.CallingAE = a.ObjectKey+".conflict-00000000000000bb.dcm", "VNA"
	return a, b
}

type upsertResult struct {
	r   pipeline.UpsertResult
	err error
}

// upsertAsync runs an upsert in the background.
func upsertAsync(x *awsadapters.IndexTable, in pipeline.InstanceRecord) <-chan upsertResult {
	done := make(chan upsertResult, 1)
	go func() {
		r, err := x.UpsertInstance(context.Background(), in)
		done <- upsertResult{r, err}
	}()
	return done
}

// checkCountedOnce checks the end of two transfers' upserts (ra of a, rb
// of b, one content): the transfer of key counted counted it, the other
// was told the content is held under counted (a resend, pipeline.Resent,
// audited as such), the content's row is counted's record, and a
// redelivery of either is told the same. fresh is how many of ra and rb
// counted (none when the counting call died).
func checkCountedOnce(t *testing.T, x *awsadapters.IndexTable, a, b pipeline.InstanceRecord, ra, rb pipeline.UpsertResult, counted string, fresh int) {
	t.Helper()
	ctx := context.Background()
	for _, r := range []struct {
		in  pipeline.InstanceRecord
		res pipeline.UpsertResult
	}{{a, ra}, {b, rb}} {
		if r.res.Outcome != pipeline.InstanceDuplicate {
			fresh--
		}
		if r.res.Instance.ObjectKey != counted {
			t.Errorf("%s is told the content is held under %s, want %s", r.in.ObjectKey, r.res.Instance.ObjectKey, counted)
		}
		if r.in.ObjectKey != counted && !pipeline.Resent(r.res.Instance, r.in) {
			t.Errorf("%s (%v) is not told it is a resend of %s", r.in.ObjectKey, r.res.Outcome, counted)
		}
	}
	if fresh != 0 {
		t.Errorf("outcomes %v, %v: the count of those that counted the content is off by %d", ra.Outcome, rb.Outcome, -fresh)
	}
	listed, err := x.Instances(ctx, a.SOPInstanceUID)
	if err != nil || len(listed) != 1 || listed[0].ObjectKey != counted {
		t.Errorf("listed %+v, %v; want the counting transfer's record (%s)", listed, err, counted)
	}
	for _, in := range []pipeline.InstanceRecord{a, b} {
		r, err := x.UpsertInstance(ctx, in)
		if err != nil || r.Outcome != pipeline.InstanceDuplicate || r.Instance.ObjectKey != counted {
			t.Errorf("a redelivery of %s: %v, %s, %v; want a duplicate of %s", in.ObjectKey, r.Outcome, r.Instance.ObjectKey, err, counted)
		}
		if r.Study.InstanceCount != 1 || r.Study.Revision != 1 || r.Study.TotalBytes != in.Size {
			t.Errorf("study counts %d instances, revision %d, %d bytes; want the content once", r.Study.InstanceCount, r.Study.Revision, r.Study.TotalBytes)
		}
	}
	// The counting key is the counting transfer's to drop once its record
	// is the row: left on the study item, it would stay for good (no other
	// call drops it), some 300 bytes of the item's 400 KB each.
	study, err := x.Client.GetItem(ctx, &dynamodb.GetItemInput{TableName: &x.Table, ConsistentRead: aws.Bool(true), Key: map[string]ddbtypes.AttributeValue{
		"pk": &ddbtypes.AttributeValueMemberS{Value: "STUDY#" + a.StudyInstanceUID}, "sk": &ddbtypes.AttributeValueMemberS{Value: "STUDY"},
	}})
	if err != nil || study.Item == nil {
		t.Fatalf("the study item: %v", err)
	}
	for attr := range study.Item {
		if strings.HasPrefix(attr, "countedBy#") {
			t.Errorf("the study item keeps %s after the counting transfer completed", attr)
		}
	}
}

// TestConcurrentResendOnDynalite: two transfers of one content (the same
// data set from two AEs, under two object keys) indexed at once by two
// environments: the one that did not count it must be told it is a resend
// (pipeline.Resent), or its transfer is audited under the counted one's id.
// The second runs while the first has counted the content but not written
// its instance item (found by review: it wrote its own record there and
// was told the content was held under its own key).
func TestConcurrentResendOnDynalite(t *testing.T) {
	tables := newIndexTables(t)
	x := tables.table(t)
	ctx := context.Background()
	a, b := twoTransfers()
	p := newPause(stepInstance)
	first := &awsadapters.IndexTable{Client: dynamoClient(tables.url, p.install), Table: x.Table}
	done := upsertAsync(first, a)
	<-p.reached // counted, its instance item not written yet
	rb, err := x.UpsertInstance(ctx, b)
	close(p.release)
	ra := <-done
	if err != nil || ra.err != nil {
		t.Fatal(err, ra.err)
	}
	if ra.r.Outcome != pipeline.InstanceNew || rb.Outcome != pipeline.InstanceDuplicate {
		t.Fatalf("outcomes %v, %v; want new, duplicate", ra.r.Outcome, rb.Outcome)
	}
	if !pipeline.Resent(rb.Instance, b) {
		t.Errorf("the second transfer is told the content is indexed under its own key %q: not a resend", rb.Instance.ObjectKey)
	}
	listed, err := x.Instances(ctx, a.SOPInstanceUID)
	if err != nil || len(listed) != 1 || listed[0].ObjectKey != a.ObjectKey {
		t.Errorf("listed %+v, %v; want the counting transfer's record", listed, err)
	}
}

// TestConcurrentTransfersInterleaved holds two upserts of one content
// between the steps of the DynamoDB protocol in turn: the first (the
// claimant) before one of its steps, the second, run meanwhile, before
// one of its own or not at all; then the first goes on, then the second.
// Whichever counts the content, its transfer is the row and the other is
// told it is a resend of it; a redelivery of one key concurrent with
// itself writes nothing twice and is told its own key.
func TestConcurrentTransfersInterleaved(t *testing.T) {
	tables := newIndexTables(t)
	a, b := twoTransfers()
	cases := []struct {
		name          string
		redelivery    bool   // the second is the first's key again
		first, second string // the steps each is held before ("": not held)
		secondCounts  bool
	}{
		{"counted, its record not written", false, stepInstance, "", false},
		{"claimed, not counted", false, stepCount, "", true},
		{"its record written, the study not completed", false, stepFinalize, "", false},
		{"the second's record written after the first's", false, stepInstance, stepInstance, false},
		{"the claimant finds the other's record written", false, stepCount, stepFinalize, true},
		{"the claimant writes its record before the counting transfer", false, stepCount, stepInstance, true},
		{"both held before counting", false, stepCount, stepCount, false},
		{"redelivered while counted, its record not written", true, stepInstance, "", false},
		{"redelivered while claimed, not counted", true, stepCount, "", true},
		{"redelivered, each holding the other's record back", true, stepInstance, stepInstance, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := tables.table(t)
			second := b
			if tc.redelivery {
				second = a
			}
			pa, pb := newPause(tc.first), newPause(tc.second)
			doneA := upsertAsync(&awsadapters.IndexTable{Client: dynamoClient(tables.url, pa.install), Table: x.Table}, a)
			<-pa.reached
			doneB := upsertAsync(&awsadapters.IndexTable{Client: dynamoClient(tables.url, pb.install), Table: x.Table}, second)
			var rb upsertResult
			held := true
			select {
			case <-pb.reached:
			case rb = <-doneB:
				held = false
			}
			if tc.second != "" && !held {
				t.Logf("the second upsert made no %s call", tc.second)
			}
			close(pa.release)
			ra := <-doneA
			close(pb.release)
			if held {
				rb = <-doneB
			}
			if ra.err != nil || rb.err != nil {
				t.Fatal(ra.err, rb.err)
			}
			counted := a.ObjectKey
			if tc.secondCounts {
				counted = second.ObjectKey
				if rb.r.Outcome != pipeline.InstanceNew {
					t.Errorf("the second's outcome %v, want new", rb.r.Outcome)
				}
			} else if ra.r.Outcome != pipeline.InstanceNew {
				t.Errorf("the first's outcome %v, want new", ra.r.Outcome)
			}
			checkCountedOnce(t, x, a, second, ra.r, rb.r, counted, 1)
		})
	}
}

// TestResendWhileTheCounterIsDown: the counting transfer's upsert dies
// between its count and its instance item (kill -9 in step 4); another
// transfer of the content writes its own record there, so the content is
// listed, and is told it is a resend of the counting one. The counting
// transfer's retry takes its row back and is told its own key, so its
// transfer is audited as stored, once.
func TestResendWhileTheCounterIsDown(t *testing.T) {
	tables := newIndexTables(t)
	x := tables.table(t)
	ctx := context.Background()
	a, b := twoTransfers()
	crashed := &awsadapters.IndexTable{Client: dynamoClient(tables.url, crashAt(stepInstance)), Table: x.Table}
	if _, err := crashed.UpsertInstance(ctx, a); !errors.Is(err, pipelinetest.ErrCrash) {
		t.Fatalf("the crashed upsert: %v", err)
	}
	rb, err := x.UpsertInstance(ctx, b)
	if err != nil || rb.Outcome != pipeline.InstanceDuplicate || !pipeline.Resent(rb.Instance, b) || rb.Instance.ObjectKey != a.ObjectKey {
		t.Fatalf("the other transfer: %v, %s, %v; want a resend of %s", rb.Outcome, rb.Instance.ObjectKey, err, a.ObjectKey)
	}
	if listed, err := x.Instances(ctx, a.SOPInstanceUID); err != nil || len(listed) != 1 || listed[0].ObjectKey != b.ObjectKey {
		t.Errorf("listed %+v, %v; want the other transfer's record meanwhile", listed, err)
	}
	ra, err := x.UpsertInstance(ctx, a)
	if err != nil || ra.Outcome != pipeline.InstanceDuplicate || pipeline.Resent(ra.Instance, a) {
		t.Fatalf("the counting transfer's retry: %v, %s, %v; want its own key", ra.Outcome, ra.Instance.ObjectKey, err)
	}
	checkCountedOnce(t, x, a, b, ra, rb, a.ObjectKey, 0)
}
