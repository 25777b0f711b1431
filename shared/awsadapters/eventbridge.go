package awsadapters

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
// for its entries' size (entriesTooLarge: an entry over EventBridge's
// 256 KiB) is its one entry's refusal when the batch has one; any other
// failed call, a ValidationException about the call itself among them (an
// event bus name that fails its pattern), is the bus failing.
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
		if len(events) == 1 && errors.As(err, &api) && entriesTooLarge(api) {
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
// parameter, malformed detail) from the bus failing to take it: throttled,
// an internal failure, and the codes of a bus or a role that refuses every
// entry (access denied, not authorized for the source or detail type, an
// unknown bus), which are the bus down for the pipeline as much as an
// outage is.
func refusedOnItsOwn(code string) bool {
	switch code {
	case "InvalidArgument", "MalformedDetail":
		return true
	}
	return false
}

// entriesTooLarge tells a failed PutEvents call that refused its entries for
// their size: a ValidationException (the common error of an input that fails
// the API's constraints, not one of PutEvents' own) saying "Total size of
// the entries in the request is over the limit.". Every other
// ValidationException is about the call, not the event: an event bus name or
// ARN, or an endpoint id, that fails its constraints, which every event
// would meet; taken for the event's refusal, it finished each Storage
// Commitment transaction without its event and never counted towards the
// failures in a row that stop a run.
func entriesTooLarge(api smithy.APIError) bool {
	return api.ErrorCode() == "ValidationException" &&
		strings.Contains(strings.ToLower(api.ErrorMessage()), "total size of the entries")
}
