package awsemu

import (
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

// S3Notification is the body of the SQS message S3 sends for an object
// created under key (event notification structure version 2.1).
func S3Notification(region, bucket, key string, size int64, eventName string) string {
	if eventName == "" {
		eventName = "ObjectCreated:Put"
	}
	rec := events.S3EventRecord{
		EventVersion: "2.1", EventSource: "aws:s3", AWSRegion: region, EventTime: time.Now().UTC(),
		EventName: eventName,
		S3: events.S3Entity{
			SchemaVersion: "1.0", ConfigurationID: "incoming",
			Bucket: events.S3Bucket{Name: bucket, Arn: "arn:aws:s3:::" + bucket},
			Object: events.S3Object{Key: url.QueryEscape(key), Size: size, Sequencer: "0055AED6DCD90281E5"},
		},
	}
	b, err := json.Marshal(events.S3Event{Records: []events.S3EventRecord{rec}})
	if err != nil {
		panic(err) // a fixed structure of strings and numbers always marshals
	}
	return string(b)
}

// SQSEvent is the event Lambda's SQS event source mapping invokes a
// function with: one record per message body, from queue (its name).
func SQSEvent(region, queue string, bodies ...string) events.SQSEvent {
	var ev events.SQSEvent
	for i, b := range bodies {
		ev.Records = append(ev.Records, events.SQSMessage{
			MessageId: fmt.Sprintf("msg-%d", i+1), ReceiptHandle: "rh", Body: b, EventSource: "aws:sqs",
			EventSourceARN: "arn:aws:sqs:" + region + ":123456789012:" + queue, AWSRegion: region,
			Attributes: map[string]string{"ApproximateReceiveCount": "1"},
		})
	}
	return ev
}
