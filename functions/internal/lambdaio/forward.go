package lambdaio

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/dicom-ingest/dicom-ingest/shared/logname"
)

// SQSAPI is the part of the SQS client Forwarder uses.
type SQSAPI interface {
	SendMessage(ctx context.Context, in *sqs.SendMessageInput, opts ...func(*sqs.Options)) (*sqs.SendMessageOutput, error)
}

// Forwarder hands a validated object to the normalize queue as an S3
// notification, so the normalize function reads it exactly as it would
// read one from S3.
type Forwarder struct {
	Client   SQSAPI
	QueueURL string
	Bucket   string
	// Names names the object in errors (see logname); nil uses a key
	// drawn for this process.
	Names *logname.Namer
}

// Forward sends key on.
func (f *Forwarder) Forward(ctx context.Context, key string) error {
	body, err := json.Marshal(events.S3Event{Records: []events.S3EventRecord{{
		EventVersion: "2.1", EventSource: "aws:s3", EventTime: time.Now().UTC(), EventName: "ObjectCreated:Validated",
		S3: events.S3Entity{
			SchemaVersion: "1.0", ConfigurationID: "validated",
			Bucket: events.S3Bucket{Name: f.Bucket, Arn: "arn:aws:s3:::" + f.Bucket},
			Object: events.S3Object{Key: url.QueryEscape(key)},
		},
	}}})
	if err != nil {
		return fmt.Errorf("lambdaio: forward: %w", err)
	}
	b := string(body)
	if _, err := f.Client.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: &f.QueueURL, MessageBody: &b}); err != nil {
		return fmt.Errorf("lambdaio: forward %v: %w", f.Names.Key(key), f.Names.Redact(err, key))
	}
	return nil
}
