package stack

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// KMS's calls as CloudTrail delivers them to EventBridge ("AWS service
// events delivered via AWS CloudTrail", Amazon EventBridge User Guide,
// https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-service-event-cloudtrail.html):
// detail-type "AWS API Call via CloudTrail", source "aws.kms", the
// CloudTrail record as detail, on the default bus of the Region the call
// was made in (a key's Region: KMS is regional, unlike the global services
// whose events arrive in us-east-1). The same guide says "a CloudTrail
// trail with logging enabled is required" for these events: the account
// must bring one (docs/operations/deploy.md).
//
// The record's resources[].ARN is the key's ARN whatever the caller named
// it by; requestParameters.keyId is what the caller passed (a key id or an
// ARN: "1234abcd-…" in KMS's own DisableKey example), and
// responseElements.keyId holds the ARN only for some calls (DisableKey and
// ScheduleKeyDeletion since December 2022; PutKeyPolicy has no response
// elements) ("Logging AWS KMS API calls with AWS CloudTrail", the examples
// for DisableKey, ScheduleKeyDeletion and PutKeyPolicy,
// https://docs.aws.amazon.com/kms/latest/developerguide/ct-disablekey.html).
// The pattern matches resources.ARN (an array of objects: any element's
// ARN), so it matches the stack's keys and no other, however they were
// named.
const (
	kmsEventSource       = "aws.kms"
	cloudTrailAPICall    = "AWS API Call via CloudTrail"
	kmsCloudTrailService = "kms.amazonaws.com"
)

// keyFailingCalls are the KMS calls that stop one of the stack's keys
// from working for what it encrypts:
//   - DisableKey: every use of the key fails at once (KMS's
//     DisabledException), the SCP's writes, the functions, the bus, the
//     logs.
//   - ScheduleKeyDeletion: the key is pending deletion, which fails every
//     use as disabling does, and after the waiting period (30 days,
//     PendingWindow) it and everything under it is gone for good;
//     CancelKeyDeletion within the window brings it back (disabled).
//   - PutKeyPolicy: the policy replaced, a service may lose its use of the
//     key without the key being disabled (CloudWatch Logs, EventBridge for
//     the bus, SNS, SQS: each has a statement of its own), the failure
//     BusDlqNotEmpty names; for the backup key it is also the step that
//     must come before disabling it (its policy allows no DisableKey).
//     A deployment that changes a key's policy calls it too (CloudFormation,
//     sourceIPAddress cloudformation.amazonaws.com): a message for each,
//     rare and telling which deployment it was.
//
// Calls that failed (errorCode present, e.g. AccessDenied) left the key as
// it was and are not matched.
var keyFailingCalls = []string{"DisableKey", "ScheduleKeyDeletion", "PutKeyPolicy"}

// newKeyAlerts sends to the alarm topic (through a target deliverAlerts
// lets publish) a readable message for each successful call of
// keyFailingCalls on keys. The alarm topic's own key is not among them:
// with it disabled, pending deletion or its policy taking EventBridge's or
// CloudWatch's use away, no message reaches the topic, this one included
// (docs/operations/alarms.md says what watches it).
func newKeyAlerts(scope constructs.Construct, env string, target *alarmTopicTarget, keys ...awskms.IKey) awsevents.Rule {
	arns := make([]*string, len(keys))
	for i, k := range keys {
		arns[i] = k.KeyArn()
	}
	field := func(path string) string { return *awsevents.EventField_FromPath(jsii.String(path)) }
	// The caller: CloudTrail's userIdentity has an arn for an identity of
	// IAM's (a user, an assumed role, the root) but none when an AWS service
	// calls as itself (type AWSService), and invokedBy, the service's name,
	// only when a service made the call, as itself or for a principal
	// (CloudFormation with a deployer's role: arn and invokedBy both)
	// ("CloudTrail userIdentity element", fields type, arn, invokedBy,
	// https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-event-reference-user-identity.html).
	// EventBridge leaves a variable whose path the event lacks empty, so
	// each is given with its name: "by  (from …)" named nobody for a
	// service's call.
	message := fmt.Sprintf("dicom-ingest %s: %s on KMS key %s at %s by the caller type=%s arn=%s invokedBy=%s from %s (CloudTrail's userIdentity: an AWS service's own call has no arn, a direct call no invokedBy). "+
		"A key disabled or pending deletion fails every use at once (output KeyArn: the objects, tables, queues, logs and the bus; BackupKeyArn: backups and restores; BusDlqKeyArn: the bus's dead letters) until it is enabled again or its deletion cancelled; "+
		"a new policy may have taken a service's use of it away. What to do: docs/operations/alarms.md, KeyDisabledOrPolicyChanged.",
		env, field("$.detail.eventName"), field("$.detail.resources[0].ARN"), field("$.detail.eventTime"),
		field("$.detail.userIdentity.type"), field("$.detail.userIdentity.arn"), field("$.detail.userIdentity.invokedBy"),
		field("$.detail.sourceIPAddress"))
	t := *target
	t.input = awsevents.RuleTargetInput_FromText(jsii.String(message))
	detail := map[string]any{
		"eventSource": []string{kmsCloudTrailService},
		"eventName":   keyFailingCalls,
		"resources":   map[string]any{"ARN": arns},
		"errorCode":   []any{map[string]any{"exists": false}},
	}
	return awsevents.NewRule(scope, jsii.String("KeyDisabledOrPolicyChanged"), &awsevents.RuleProps{
		Description: jsii.String("KMS: a key of the stack was disabled, scheduled for deletion or given another policy (docs/operations/alarms.md)"),
		EventPattern: &awsevents.EventPattern{
			Source:     jsii.Strings(kmsEventSource),
			DetailType: jsii.Strings(cloudTrailAPICall),
			Detail:     &detail,
		},
		Targets: &[]awsevents.IRuleTarget{&t},
	})
}
