package awsadapters

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// EventBridgeAPI is the part of the EventBridge client the adapter uses.
type EventBridgeAPI interface {
	PutEvents(ctx context.Context, in *eventbridge.PutEventsInput, opts ...func(*eventbridge.Options)) (*eventbridge.PutEventsOutput, error)
}

// EventBridgePublisher publishes pipeline events to a custom bus with
// source pipeline.EventSource.
type EventBridgePublisher struct {
	Client  EventBridgeAPI
	BusName string
}

var _ pipeline.EventPublisher = (*EventBridgePublisher)(nil)

// Publish implements pipeline.EventPublisher; entries PutEvents reports as
// failed are returned by index for the pipeline to retry.
func (p *EventBridgePublisher) Publish(ctx context.Context, events []pipeline.Event) ([]int, error) {
	if len(events) > 10 {
		return nil, fmt.Errorf("awsadapters: put events: %d entries, at most 10", len(events))
	}
	entries := make([]ebtypes.PutEventsRequestEntry, len(events))
	for i, e := range events {
		entries[i] = ebtypes.PutEventsRequestEntry{
			Source: aws.String(pipeline.EventSource), DetailType: aws.String(e.DetailType),
			Detail: aws.String(string(e.Detail)), EventBusName: aws.String(p.BusName),
			Time: aws.Time(e.Time), Resources: e.Resources,
		}
	}
	out, err := p.Client.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: entries})
	if err != nil {
		return nil, fmt.Errorf("awsadapters: put events: %w", err)
	}
	var failed []int
	if out.FailedEntryCount > 0 {
		for i, r := range out.Entries {
			if r.ErrorCode != nil && i < len(events) {
				failed = append(failed, i)
			}
		}
		if len(failed) == 0 {
			// A count without per-entry detail: retry them all.
			for i := range events {
				failed = append(failed, i)
			}
		}
	}
	return failed, nil
}
