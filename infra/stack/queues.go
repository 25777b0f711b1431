package stack

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/aws-cdk-go/awscdk/v2/interfaces/interfacesawss3"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// regionalArn is the ARN of a resource of this account and Region:
// arn:<partition>:<service>:<region>:<account>:<resource>.
func regionalArn(service, resource string) *string {
	return awscdk.Fn_Join(jsii.String(""), &[]*string{jsii.String("arn:"), awscdk.Aws_PARTITION(), jsii.String(":" + service + ":"),
		awscdk.Aws_REGION(), jsii.String(":"), awscdk.Aws_ACCOUNT_ID(), jsii.String(":" + resource)})
}

// trustedFor is service as a role's trusted principal for this account's
// resources only (aws:SourceAccount, and aws:SourceArn like sourceArn),
// against the confused deputy. Only for a service whose guide documents
// these keys in its role's trust policy, with that ARN: a service that
// sets neither when it assumes the role would be refused every time.
func trustedFor(service string, sourceArn *string) awsiam.IPrincipal {
	return awsiam.NewServicePrincipal(jsii.String(service), nil).WithConditions(&map[string]any{
		"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()},
		"ArnLike":      map[string]any{"aws:SourceArn": sourceArn},
	})
}

// serviceDelivery lets an AWS service deliver into this account's
// encrypted queues or topics: the key policy lets the service's principal
// use the key for this account (aws:SourceAccount), only for what the
// encryption context names (contextKey, a kms:EncryptionContext: key,
// matching contextArn), and with sourceArns only on behalf of those
// resources (aws:SourceArn). noSource is for a service whose KMS calls
// carry neither aws:SourceAccount nor aws:SourceArn, which would then
// refuse every call: the encryption context alone bounds it.
type serviceDelivery struct {
	sid, service string
	actions      []string
	contextKey   string
	contextArn   *string
	sourceArns   []*string
	noSource     bool
}

func allowServiceDelivery(key awskms.Key, d serviceDelivery) {
	cond := map[string]any{"StringLike": map[string]any{d.contextKey: d.contextArn}}
	if !d.noSource {
		cond["StringEquals"] = map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()}
	}
	if d.sourceArns != nil {
		cond["ArnLike"] = map[string]any{"aws:SourceArn": d.sourceArns}
	}
	key.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String(d.sid),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String(d.service), nil)},
		Actions:    jsii.Strings(d.actions...),
		Resources:  jsii.Strings("*"),
		Conditions: &cond,
	}), nil)
}

// The queues hold object keys (S3 notifications) and events, both naming
// DICOM UIDs, so they are encrypted with the stack's key like every other
// store of them (but for the bus's dead-letter queue: newBusDlqKey). S3 and EventBridge then need the key to deliver: the key
// policy lets them use it for this account's queues only. Neither
// statement can name the bucket, the rules or the bus by reference: each
// of those depends on the key (directly or through a queue), and the key
// policy naming them would be a dependency cycle. The queues' own policies
// name the exact source.
func allowQueueDelivery(key awskms.Key) {
	queuesHere := regionalArn("sqs", "*")
	for _, d := range []serviceDelivery{
		// S3 sends ObjectCreated notifications; it also sends a test message
		// when the notification is configured, which fails the deployment
		// if it cannot encrypt.
		{sid: "S3NotificationsToQueues", service: "s3.amazonaws.com"},
		// EventBridge dead-letters the schedule rules' undeliverable
		// events. Not the bus's: its dead-letter queue is under a key of
		// its own (newBusDlqKey).
		{sid: "EventBridgeDeadLetters", service: "events.amazonaws.com", sourceArns: []*string{regionalArn("events", "rule/*")}},
	} {
		d.actions = []string{"kms:GenerateDataKey", "kms:Decrypt"}
		d.contextKey, d.contextArn = "kms:EncryptionContext:aws:sqs:arn", queuesHere
		allowServiceDelivery(key, d)
	}
}

// queueDestination is a bucket notification destination like CDK's
// SqsDestination, without its key grant: that one conditions the key
// policy on the bucket's ARN (the cycle above). The queue policy lets S3
// send for this bucket in this account only (aws:SourceArn alone names no
// account: bucket ARNs have none).
type queueDestination struct{ queue awssqs.IQueue }

func (d *queueDestination) Bind(_ constructs.Construct, bucket interfacesawss3.IBucketRef) *awss3.BucketNotificationDestinationConfig {
	d.queue.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("S3Notifications"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("s3.amazonaws.com"), nil)},
		// SendMessage alone, as S3's documented queue policy (CDK's
		// SqsDestination adds GetQueueAttributes and GetQueueUrl).
		Actions:   jsii.Strings("sqs:SendMessage"),
		Resources: &[]*string{d.queue.QueueArn()},
		Conditions: &map[string]any{
			"ArnLike":      map[string]any{"aws:SourceArn": bucket.BucketRef().BucketArn},
			"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()},
		},
	}))
	return &awss3.BucketNotificationDestinationConfig{
		Arn:  d.queue.QueueArn(),
		Type: awss3.BucketNotificationDestinationType_QUEUE,
		// The queue's policy must exist before S3 sends its test message.
		Dependencies: &[]constructs.IDependable{d.queue},
	}
}
