package stack

import (
	"strconv"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
)

// FnAuditFeed is the audit feed function (functions/auditfeed). It is
// deployed only when audit.syslog is configured, so it is not among
// FunctionNames.
const FnAuditFeed = "auditfeed"

// Audit feed tuning.
const (
	// auditFeedMaxRecordAge: a batch the collector has not taken for this
	// long goes to the on-failure queue instead of waiting for the stream to
	// trim it (24 h) without a trace.
	auditFeedMaxRecordAgeHours = 23
	// auditFeedBacklogAlarmSeconds: the alarm on the stream's iterator age,
	// the age of the oldest record not yet delivered.
	auditFeedBacklogAlarmSeconds = 300
	// MetricAuditFeedUnsendable counts records the function could never
	// send (from its log, by metric filter).
	MetricAuditFeedUnsendable = "AuditFeedUnsendable"
	// MetricAuditFeedNotDelivered counts the batches the function failed
	// (auditfeed.BatchNotDeliveredLog, by metric filter): each is retried.
	MetricAuditFeedNotDelivered = "AuditFeedBatchesNotDelivered"
)

// AuditFeed sends every new audit record to the hospital's syslog
// collector: a function on the audit table's stream, in the VPC, whose only
// way out is the collector's address and port (and the Secrets Manager
// endpoint in the VPC, for the collector's CA).
type AuditFeed struct {
	constructs.Construct
	Function      awslambda.Function
	SecurityGroup awsec2.SecurityGroup
	// Dlq receives the stream positions of batches the collector did not
	// take within the maximum record age (the records stay in the table).
	Dlq awssqs.Queue
	// Unsendable counts records the function skipped as never sendable.
	Unsendable awscloudwatch.Metric
	// NotDelivered counts the batches the function failed (Lambda retries them).
	NotDelivered awscloudwatch.Metric
}

// newAuditFeed builds the feed with the pipeline's function and queue
// factories, so it shares their logging, encryption and VPC placement:
// newLambda, not the pipeline functions' newFunction, since the feed names
// no object or study and so is not given the log-name key, nor the
// pipeline's environment (bucket, tables, bus), which it does not read:
// its environment is SYSLOG_* and ENVIRONMENT alone.
func newAuditFeed(scope constructs.Construct, c *config.Config, network *Network, table awsdynamodb.Table, key awskms.IKey,
	newDlq func(string) awssqs.Queue,
	newLambda func(name string, timeout awscdk.Duration, memory float64, env map[string]*string, sg awsec2.ISecurityGroup) awslambda.Function,
) *AuditFeed {
	s := c.Audit.Syslog
	self := constructs.NewConstruct(scope, jsii.String("AuditFeed"))
	out := &AuditFeed{Construct: self}

	sg := awsec2.NewSecurityGroup(self, jsii.String("SG"), &awsec2.SecurityGroupProps{
		Vpc:              network.Vpc,
		Description:      jsii.String("audit feed function: no inbound; outbound only to the syslog collector and the Secrets Manager endpoint"),
		AllowAllOutbound: jsii.Bool(false),
	})
	sg.AddEgressRule(awsec2.Peer_Ipv4(jsii.String(s.Address+"/32")), awsec2.Port_Tcp(jsii.Number(float64(s.Port))),
		jsii.String("syslog over TLS to the audit collector"), nil)
	sg.AddEgressRule(awsec2.Peer_SecurityGroupId(network.EndpointSecurityGroup.SecurityGroupId(), nil), awsec2.Port_Tcp(jsii.Number(443)),
		jsii.String("Secrets Manager endpoint: the collector's CA"), nil)
	out.SecurityGroup = sg

	env := map[string]*string{
		"SYSLOG_HOST":          jsii.String(s.Host),
		"SYSLOG_PORT":          jsii.String(strconv.Itoa(s.Port)),
		"SYSLOG_CA_SECRET_ARN": jsii.String(s.CaSecretArn),
		"SYSLOG_HOSTNAME":      jsii.String("dicom-ingest-" + c.Name),
	}
	if s.ClientCertificateSecretArn != "" {
		env["SYSLOG_CLIENT_CERT_SECRET_ARN"] = jsii.String(s.ClientCertificateSecretArn)
	}
	fn := newLambda(FnAuditFeed, awscdk.Duration_Seconds(jsii.Number(60)), 256, env, sg)
	secrets := []*string{jsii.String(s.CaSecretArn)}
	if s.ClientCertificateSecretArn != "" {
		secrets = append(secrets, jsii.String(s.ClientCertificateSecretArn))
	}
	grantSecretValue(fn, secrets...)
	// Secrets under a customer-managed key need its decrypt too; granted
	// here rather than by hand on the role, where the next deployment
	// would not know of it.
	grantSecretKey(fn.Role(), "AuditFeedSecretsKeyViaSecretsManager", s.SecretKmsKeyArn, c.Region)
	out.Function = fn

	out.Dlq = newDlq("AuditFeedDlq")
	// Not CDK's DynamoEventSource and SqsDlq: their grants on the key have
	// no kms:ViaService. The id is DynamoEventSource's, so the mapping
	// keeps its logical id.
	fn.AddEventSourceMapping(jsii.String("DynamoDBEventSource:"+*awscdk.Names_NodeUniqueId(table.Node())), &awslambda.EventSourceMappingOptions{
		EventSourceArn:    table.TableStreamArn(),
		StartingPosition:  awslambda.StartingPosition_TRIM_HORIZON,
		BatchSize:         jsii.Number(100),
		MaxBatchingWindow: awscdk.Duration_Seconds(jsii.Number(1)),
		// One batch per shard at a time keeps each shard's records in order;
		// a failed batch is retried (from its first record, which the
		// function reports) until the collector takes it or it is older
		// than the maximum record age.
		ParallelizationFactor:   jsii.Number(1),
		ReportBatchItemFailures: jsii.Bool(true),
		MaxRecordAge:            awscdk.Duration_Hours(jsii.Number(auditFeedMaxRecordAgeHours)),
		OnFailure:               &queueOnFailure{queue: out.Dlq, key: key},
		// Only new audit records: not the publish ledger's items, and no
		// updates or removals (the trail is append-only anyway).
		Filters: &[]*map[string]any{awslambda.FilterCriteria_Filter(&map[string]any{
			"eventName": awslambda.FilterRule_IsEqual(jsii.String("INSERT")),
			"dynamodb": map[string]any{"Keys": map[string]any{"sk": map[string]any{
				"S": awslambda.FilterRule_IsEqual(jsii.String("RECORD")),
			}}},
		})},
	})
	// The stream, as CDK's stream read grant has it (ListStreams takes no
	// resource), and the table's key through DynamoDB only.
	fn.AddToRolePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid: jsii.String("ListStreams"), Actions: jsii.Strings("dynamodb:ListStreams"), Resources: jsii.Strings("*"),
	}))
	fn.AddToRolePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:       jsii.String("ReadAuditStream"),
		Actions:   jsii.Strings("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"),
		Resources: &[]*string{table.TableStreamArn()},
	}))
	grantKeyVia(fn, key, "dynamodb", "kms:Decrypt")

	out.Unsendable = logLineMetric(self, "UnsendableFilter", fn.LogGroup(), c.Name, MetricAuditFeedUnsendable, auditfeed.UnsendableLog)
	out.NotDelivered = logLineMetric(self, "NotDeliveredFilter", fn.LogGroup(), c.Name, MetricAuditFeedNotDelivered, auditfeed.BatchNotDeliveredLog)
	return out
}

// alarms adds the feed's alarms through the observability's alarm helper:
// backlog (the stream's iterator age), the on-failure queue, records never
// sendable, batches not delivered, and those every function has
// (functionAlarms).
func (f *AuditFeed) alarms(alarm alarmFunc) []awscloudwatch.IMetric {
	minute := awscdk.Duration_Minutes(jsii.Number(1))
	gt := awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD
	backlog := f.Function.Metric(jsii.String("IteratorAge"), &awscloudwatch.MetricOptions{Statistic: jsii.String("Maximum"), Period: minute})
	alarm("AuditFeedBacklog", backlog, auditFeedBacklogAlarmSeconds*1000, gt, 3,
		"The audit feed is over 5 minutes behind (stream iterator age): the syslog collector is unreachable or refusing; records wait in the stream")
	dlq := f.Dlq.MetricApproximateNumberOfMessagesVisible(&awscloudwatch.MetricOptions{Period: minute, Statistic: jsii.String("Maximum")})
	alarm("AuditFeedDlqNotEmpty", dlq, 0, gt, 1,
		"Audit feed batches the collector did not take within 23 hours: their records are in the audit table but not in the SIEM (see docs/operations/audit-feed.md)")
	alarm("AuditFeedUnsendable", f.Unsendable, 0, gt, 1, "Audit records the feed could not render and skipped (see the auditfeed function's log)")
	// A failed batch is tried again at once and again and again (Lambda's retries of the stream), each try a line:
	// failures in each of two minutes running are an outage (the collector down, refusing our TLS, the secrets
	// unusable), told within about three minutes rather than the backlog alarm's eight, and no blip of one retry.
	notDelivered := f.NotDelivered.With(&awscloudwatch.MetricOptions{Period: minute})
	alarm("AuditFeedNotDelivered", notDelivered, 0, gt, 2,
		"Audit feed batches not delivered in each of 2 minutes running: the syslog collector is unreachable or refusing TLS, or the feed's secrets are unusable; records wait in the stream (see docs/operations/alarms.md)")
	errs := functionAlarms(alarm, "AuditFeed", FnAuditFeed, f.Function, "The audit feed function failed (settings, a crash or a timeout); the stream waits. Unusable secrets sound AuditFeedNotDelivered")
	return []awscloudwatch.IMetric{backlog, dlq, notDelivered, errs}
}
