package stack

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/interfaces/interfacesawsevents"
	"github.com/aws/jsii-runtime-go"
)

// alertMaxEventAge: an event a rule cannot deliver to the alarm topic is
// retried for an hour at most, so that FailedInvocations reports it
// within the hour rather than after EventBridge's default 24.
const alertMaxEventAge = 3600 // seconds

// alertRule is an EventBridge rule whose events go to the alarm topic
// (backups failed, a key of the stack disabled), and the alarm that
// sounds when it cannot deliver one.
type alertRule struct {
	rule               awsevents.Rule
	undeliveredAlarm   string // the alarm's id
	undeliveredMeaning string // its description
}

// deliverAlerts lets the rules publish to the alarm topic and adds
// (through alarm) an alarm for each rule that could not deliver to it.
//
// The target is the topic itself, with no role (alarmTopicTarget):
// EventBridge publishes to SNS under the topic's resource policy, which
// allows these rules only ("Using resource-based policies for Amazon
// EventBridge", Amazon SNS permissions: "do not specify a RoleArn ...
// particularly for Amazon SQS and Amazon SNS targets with AWS KMS
// encryption enabled",
// https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html).
// The topic is under a key of its own (newAlarmTopicKey), so its policy
// must let EventBridge use it for this account's topics ("Key management",
// Amazon SNS Developer Guide, events from AWS services to encrypted
// topics, https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html).
// It cannot name the topic or the rules (both depend on the key: a cycle),
// so it names this account's topics by the encryption context SNS uses
// (aws:sns:topicArn) and the topic's policy names the rules. It asks for
// no aws:SourceAccount or aws:SourceArn: SNS's KMS calls for EventBridge
// carry neither ("Adding the aws:SourceAccount and aws:SourceArn to a AWS
// KMS policy is not supported for EventBridge-to-encrypted topics", same
// page), so asking for aws:SourceAccount refused every event (the key
// serves the alarm topic alone).
func deliverAlerts(topic awssns.Topic, key awskms.Key, alarm alarmFunc, rules ...alertRule) {
	allowServiceDelivery(key, serviceDelivery{
		sid: "EventBridgeToTopics", service: "events.amazonaws.com",
		actions:    []string{"kms:GenerateDataKey*", "kms:Decrypt"},
		contextKey: "kms:EncryptionContext:aws:sns:topicArn", contextArn: regionalArn("sns", "*"),
		noSource: true,
	})
	arns := make([]*string, len(rules))
	for i, r := range rules {
		arns[i] = r.rule.RuleArn()
	}
	topic.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("AllowAlertRules"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("events.amazonaws.com"), nil)},
		Actions:    jsii.Strings("sns:Publish"),
		Resources:  &[]*string{topic.TopicArn()},
		// The rules' ARNs name the account; aws:SourceAccount says so as
		// every other service statement of the stack does.
		Conditions: &map[string]any{
			"ArnEquals":    map[string]any{"aws:SourceArn": arns},
			"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()},
		},
	}))
	// A rule that cannot publish (the topic's policy or the key's refusing
	// it) would be as silent as no rule: FailedInvocations counts what
	// failed permanently, sent only when not zero, per rule of the default
	// bus by RuleName ("Monitoring Amazon EventBridge",
	// https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-monitoring.html).
	// These alarms reach the topic through CloudWatch, not EventBridge.
	for _, r := range rules {
		alarm(r.undeliveredAlarm, awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
			Namespace:     jsii.String("AWS/Events"),
			MetricName:    jsii.String("FailedInvocations"),
			DimensionsMap: &map[string]*string{"RuleName": r.rule.RuleName()},
			Statistic:     jsii.String("Sum"),
			Period:        awscdk.Duration_Minutes(jsii.Number(5)),
		}), 0, awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD, 1, r.undeliveredMeaning)
	}
}

// alarmTopicTarget is a rule target publishing the event (or, with input,
// the text it renders) to the alarm topic, like CDK's SnsTopic target
// without the grants that target adds (topic.grantPublish to
// events.amazonaws.com: publishing for any rule of any account, and the
// key's use with no condition at all): the topic's policy names the rules
// (deliverAlerts). An undeliverable event is retried for alertMaxEventAge.
type alarmTopicTarget struct {
	topic awssns.Topic
	input awsevents.RuleTargetInput // nil: the event as it is
}

func (a *alarmTopicTarget) Bind(_ interfacesawsevents.IRuleRef, _ *string) *awsevents.RuleTargetConfig {
	return &awsevents.RuleTargetConfig{
		Arn:            a.topic.TopicArn(),
		Input:          a.input,
		RetryPolicy:    &awsevents.CfnRule_RetryPolicyProperty{MaximumEventAgeInSeconds: jsii.Number(alertMaxEventAge)},
		TargetResource: a.topic,
	}
}
