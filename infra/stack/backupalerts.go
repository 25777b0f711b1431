package stack

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsbackup"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/interfaces/interfacesawsevents"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// AWS Backup's EventBridge events ("Monitoring AWS Backup events using
// Amazon EventBridge", AWS Backup Developer Guide,
// https://docs.aws.amazon.com/aws-backup/latest/devguide/eventbridge.html),
// sent to the default bus of the account and Region, source "aws.backup",
// "in a best-effort manner every 5 minutes". The example events give the
// fields matched here:
//   - "Backup Job State Change": detail.state (the example states FAILED,
//     COMPLETED, RUNNING, ABORTED, EXPIRED, PENDING, CREATED) and
//     detail.backupVaultArn, the vault the job writes to (with
//     backupVaultName, backupJobId, resourceArn, statusMessage).
//   - "Copy Job State Change": detail.state (FAILED, RUNNING, COMPLETED,
//     CREATED) and detail.sourceBackupVaultArn, the vault copied from
//     (with destinationBackupVaultArn, copyJobId, statusMessage).
//
// A backup job that ends FAILED, ABORTED (stopped, by someone or by AWS
// Backup) or EXPIRED (not started or not finished within its window: the
// example's "there was a running job for the same resource") made no
// recovery point. Copy jobs have no ABORTED or EXPIRED state (the CopyJob
// API's State: CREATED, RUNNING, COMPLETED, FAILED, PARTIAL); PARTIAL, in
// both, is a composite (parent) job's, which tables are not.
const (
	backupEventSource      = "aws.backup"
	backupJobStateChange   = "Backup Job State Change"
	copyJobStateChange     = "Copy Job State Change"
	backupAlertMaxEventAge = 3600 // seconds
)

var (
	backupJobFailedStates = []string{"FAILED", "ABORTED", "EXPIRED"}
	copyJobFailedStates   = []string{"FAILED"}
)

// BackupAlerts are the rules that send AWS Backup's failure events for the
// stack's vault to the alarm topic.
type BackupAlerts struct {
	JobFailed  awsevents.Rule // a backup job into the vault
	CopyFailed awsevents.Rule // a copy job out of it (pipeline.backupCopy)
}

// newBackupAlerts sends to the alarm topic every backup job into vault and
// every copy job out of it that ends in a failed state, and adds (through
// alarm) an alarm for each rule that could not deliver to the topic.
//
// The target is the topic itself, with no role: EventBridge publishes to
// SNS under the topic's resource policy, which allows these two rules
// only ("Using resource-based policies for Amazon EventBridge", Amazon
// SNS permissions: "do not specify a RoleArn ... particularly for Amazon
// SQS and Amazon SNS targets with AWS KMS encryption enabled",
// https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html).
// The topic is under a key of its own (newAlarmTopicKey), so its policy must let
// EventBridge use it for this account's topics ("Key management", Amazon
// SNS Developer Guide, events from AWS services to encrypted topics,
// https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html). It
// cannot name the topic or the rules (both depend on the key: a cycle), so
// it names this account's topics by the encryption context SNS uses
// (aws:sns:topicArn) and the topic's policy names the rules. It asks for
// no aws:SourceAccount or aws:SourceArn: SNS's KMS calls for EventBridge
// carry neither ("Adding the aws:SourceAccount and aws:SourceArn to a AWS
// KMS policy is not supported for EventBridge-to-encrypted topics", same
// page), so asking for aws:SourceAccount refused every event (the key
// serves the alarm topic alone).
func newBackupAlerts(scope constructs.Construct, topic awssns.Topic, key awskms.Key, vault awsbackup.IBackupVault,
	alarm func(id string, m awscloudwatch.Metric, threshold float64, op awscloudwatch.ComparisonOperator, periods float64, desc string)) *BackupAlerts {
	allowServiceDelivery(key, serviceDelivery{
		sid: "EventBridgeToTopics", service: "events.amazonaws.com",
		actions:    []string{"kms:GenerateDataKey*", "kms:Decrypt"},
		contextKey: "kms:EncryptionContext:aws:sns:topicArn", contextArn: regionalArn("sns", "*"),
		noSource: true,
	})
	target := &alarmTopicTarget{topic: topic}
	rule := func(id, desc, detailType string, detail map[string]any) awsevents.Rule {
		return awsevents.NewRule(scope, jsii.String(id), &awsevents.RuleProps{
			Description: jsii.String(desc),
			EventPattern: &awsevents.EventPattern{
				Source:     jsii.Strings(backupEventSource),
				DetailType: jsii.Strings(detailType),
				Detail:     &detail,
			},
			Targets: &[]awsevents.IRuleTarget{target},
		})
	}
	out := &BackupAlerts{
		JobFailed: rule("BackupJobFailed", "AWS Backup: a backup job into the stack's vault failed, was aborted or expired (docs/operations/alarms.md)",
			backupJobStateChange, map[string]any{"state": backupJobFailedStates, "backupVaultArn": []*string{vault.BackupVaultArn()}}),
		CopyFailed: rule("BackupCopyFailed", "AWS Backup: a copy job from the stack's vault failed (docs/operations/alarms.md)",
			copyJobStateChange, map[string]any{"state": copyJobFailedStates, "sourceBackupVaultArn": []*string{vault.BackupVaultArn()}}),
	}
	topic.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("AllowBackupFailureRules"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("events.amazonaws.com"), nil)},
		Actions:    jsii.Strings("sns:Publish"),
		Resources:  &[]*string{topic.TopicArn()},
		// The rules' ARNs name the account; aws:SourceAccount says so as
		// every other service statement of the stack does.
		Conditions: &map[string]any{
			"ArnEquals":    map[string]any{"aws:SourceArn": []*string{out.JobFailed.RuleArn(), out.CopyFailed.RuleArn()}},
			"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()},
		},
	}))
	// A rule that cannot publish (the topic's policy or the key's refusing
	// it) would be as silent as no rule: FailedInvocations counts what
	// failed permanently, sent only when not zero, per rule of the default
	// bus by RuleName ("Monitoring Amazon EventBridge",
	// https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-monitoring.html).
	// These alarms reach the topic through CloudWatch, not EventBridge.
	for _, r := range []struct {
		id, desc string
		rule     awsevents.Rule
	}{
		{"BackupJobAlertUndelivered", "EventBridge could not deliver a failed-backup-job event to the alarm topic (docs/operations/alarms.md)", out.JobFailed},
		{"BackupCopyAlertUndelivered", "EventBridge could not deliver a failed-copy-job event to the alarm topic (docs/operations/alarms.md)", out.CopyFailed},
	} {
		alarm(r.id, awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
			Namespace:     jsii.String("AWS/Events"),
			MetricName:    jsii.String("FailedInvocations"),
			DimensionsMap: &map[string]*string{"RuleName": r.rule.RuleName()},
			Statistic:     jsii.String("Sum"),
			Period:        awscdk.Duration_Minutes(jsii.Number(5)),
		}), 0, awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD, 1, r.desc)
	}
	return out
}

// alarmTopicTarget is a rule target publishing the event to the alarm
// topic, like CDK's SnsTopic target without the grants that target adds
// (topic.grantPublish to events.amazonaws.com: publishing for any rule of
// any account, and the key's use with no condition at all): the topic's
// policy names the rules (newBackupAlerts). An undeliverable event
// is retried for an hour at most, so that FailedInvocations reports it
// within the hour rather than after EventBridge's default 24.
type alarmTopicTarget struct{ topic awssns.Topic }

func (a *alarmTopicTarget) Bind(_ interfacesawsevents.IRuleRef, _ *string) *awsevents.RuleTargetConfig {
	return &awsevents.RuleTargetConfig{
		Arn:            a.topic.TopicArn(),
		RetryPolicy:    &awsevents.CfnRule_RetryPolicyProperty{MaximumEventAgeInSeconds: jsii.Number(backupAlertMaxEventAge)},
		TargetResource: a.topic,
	}
}
