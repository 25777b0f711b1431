package awsadapters

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/smithy-go"

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

// Publish implements pipeline.EventPublisher: each entry PutEvents reports
// as failed is returned by index, refused on its own or not by its error
// code (refusedOnItsOwn), for the pipeline to retry or not. A call refused
// as invalid (ValidationException: an entry over EventBridge's 256 KiB)
// is its one entry's refusal when the batch has one.
func (p *EventBridgePublisher) Publish(ctx context.Context, events []pipeline.Event) ([]pipeline.FailedEntry, error) {
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
		var api smithy.APIError
		if len(events) == 1 && errors.As(err, &api) && refusedOnItsOwn(api.ErrorCode()) {
			return []pipeline.FailedEntry{{Index: 0, Refused: true, Code: api.ErrorCode()}}, nil
		}
		return nil, fmt.Errorf("awsadapters: put events: %w", err)
	}
	var failed []pipeline.FailedEntry
	if out.FailedEntryCount > 0 {
		for i, r := range out.Entries {
			if r.ErrorCode != nil && i < len(events) {
				failed = append(failed, pipeline.FailedEntry{Index: i, Refused: refusedOnItsOwn(*r.ErrorCode), Code: *r.ErrorCode})
			}
		}
		if len(failed) == 0 {
			// A count without per-entry detail: retry them all.
			for i := range events {
				failed = append(failed, pipeline.FailedEntry{Index: i, Code: "FailedEntryCount"})
			}
		}
	}
	return failed, nil
}

// refusedOnItsOwn tells an entry EventBridge refused for what it is
// (PutEventsResultEntry's non-retryable codes about the entry: an invalid
// parameter, malformed detail; ValidationException, a call's, for one too
// large) from the bus failing to take it: throttled, an internal failure,
// and the codes of a bus or a role that refuses every entry (access denied,
// not authorized for the source or detail type, an unknown bus), which are
// the bus down for the pipeline as much as an outage is.
func refusedOnItsOwn(code string) bool {
	switch code {
	case "InvalidArgument", "MalformedDetail", "ValidationException":
		return true
	}
	return false
}
