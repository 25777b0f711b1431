package stack

import (
	"fmt"
	"maps"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsbackup"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/access"
	"github.com/dicom-ingest/dicom-ingest/infra/config"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// busDescription describes the event bus of environment env: what it
// carries, under which source, as the pipeline names them.
func busDescription(env string) string {
	return "dicom-ingest " + env + ": " + strings.Join(pipeline.DetailTypes, ", ") + " (source " + pipeline.EventSource + ")"
}

// Function names: functions/<name> built into <FunctionsDir>/<name>/bootstrap.
const (
	FnValidate   = access.FnValidate
	FnAudit      = access.FnAudit
	FnNotify     = access.FnNotify
	FnCommitment = access.FnCommitment
)

// FunctionNames lists the Lambda functions in creation order.
var FunctionNames = []string{FnValidate, FnAudit, FnNotify, FnCommitment}

// MetricCommitmentUndeliverable counts Storage Commitment results given up
// on (the commitment function's log line, by metric filter), in
// MetricsNamespace with the dimension Environment.
const MetricCommitmentUndeliverable = "CommitmentReportsUndeliverable"

// MetricCommitmentTLSHandshakeFailures counts the commitment function's
// failed TLS handshakes with sites' PACS (sites[].pacs.tls), by metric
// filter on its log line, in MetricsNamespace with the dimensions
// Environment and Reason (dicomnet.HandshakeFailureReason's).
const MetricCommitmentTLSHandshakeFailures = "CommitmentTLSHandshakeFailures"

// MetricFunctionPanics counts the panics (bugs) the functions recovered:
// every function's log group's lines of them (panicLogs), by metric filter,
// in MetricsNamespace with the dimension Environment.
const MetricFunctionPanics = "FunctionPanics"

// panicLogs are the lines a function logs for a panic it recovered, with
// the stack: its handler's (functions/internal/lambdaio) for a queue's
// message and for a scheduled run, whichever the function has; the audit
// feed's own.
func panicLogs(function string) []string {
	if function == FnAuditFeed {
		return []string{auditfeed.PanicLog}
	}
	return []string{pipeline.MessagePanicLog, pipeline.ScheduledPanicLog}
}

// MetricAnnouncePanics counts studies whose announcement panicked (a bug:
// the notify and commitment functions' log line pipeline.AnnouncePanicLog,
// by metric filter), in MetricsNamespace with the dimension Environment.
const MetricAnnouncePanics = "StudyAnnouncementPanics"

// PipelineProps configures NewPipeline.
type PipelineProps struct {
	Config  *config.Config
	Network *Network
	Storage *Storage
	// FunctionsDir holds <name>/bootstrap for each of FunctionNames.
	FunctionsDir string
}

// Queue is a work queue with its dead-letter queue.
type Queue struct {
	Queue awssqs.Queue
	Dlq   awssqs.Queue
}

// Pipeline is the event-driven processing after the SCP: S3 notifications
// into SQS, the Lambda functions, the DynamoDB tables and the event bus.
type Pipeline struct {
	constructs.Construct
	// Queues by function name (notify has none: it runs on a schedule and
	// its failed runs go to NotifyDlq; commitment's scheduled ones go to
	// CommitmentScheduleDlq; see everyMinute).
	Queues                map[string]*Queue
	NotifyDlq             awssqs.Queue
	CommitmentScheduleDlq awssqs.Queue
	Functions             map[string]awslambda.Function
	// CommitmentSG is the commitment function's: HTTPS to the AWS
	// endpoints and each site PACS's DICOM port, nothing else.
	CommitmentSG awsec2.SecurityGroup
	// CommitmentUndeliverable counts results given up on.
	CommitmentUndeliverable awscloudwatch.Metric
	// AnnouncePanics counts studies whose announcement panicked, in
	// notify's runs and commitment's.
	AnnouncePanics awscloudwatch.Metric
	// FunctionPanics counts the panics every function recovered (its
	// messages', its runs', the audit feed's batches').
	FunctionPanics  awscloudwatch.Metric
	AuditTable      awsdynamodb.Table
	IndexTable      awsdynamodb.Table
	Bus             awsevents.EventBus
	BusDlq          awssqs.Queue
	BusDlqKey       awskms.Key // BusDlq's, used by nothing else
	Archive         awsevents.Archive
	BackupVault     awsbackup.BackupVault // under Storage.BackupKey
	BackupPlan      awsbackup.BackupPlan
	AuditBackupPlan awsbackup.BackupPlan // the audit table's long-kept backups
	FunctionsSG     awsec2.SecurityGroup
	// AuditFeed is the audit table's feed to the hospital's syslog
	// collector; nil unless audit.syslog is configured.
	AuditFeed *AuditFeed
}

// NewPipeline creates the queues, tables, bus and functions and wires them.
//
// Flow: incoming/ ObjectCreated → validate queue → validate (validation and
// normalization in one pass over the header: quarantine/ for invalid
// objects, metadata/ sidecars, the index, the audit record, Instance
// Stored/Rejected); audit/ ObjectCreated → audit queue → audit (the SCP's
// association records into the audit table); every minute → notify (Study
// Received/Updated after the quiet period).
func NewPipeline(scope constructs.Construct, id string, props *PipelineProps) *Pipeline {
	c := props.Config
	self := constructs.NewConstruct(scope, jsii.String(id))
	key, bucket := props.Storage.Key, props.Storage.Bucket
	out := &Pipeline{Construct: self, Queues: map[string]*Queue{}, Functions: map[string]awslambda.Function{}}

	// Tables. Generic key names (pk/sk, gsiNpk/gsiNsk) let the pipeline's
	// adapter overload them; see docs/pipeline.md (tables) for the access patterns.
	str := awsdynamodb.AttributeType_STRING
	newTable := func(name string, stream awsdynamodb.StreamViewType) awsdynamodb.Table {
		tp := &awsdynamodb.TableProps{
			PartitionKey:  &awsdynamodb.Attribute{Name: jsii.String("pk"), Type: str},
			SortKey:       &awsdynamodb.Attribute{Name: jsii.String("sk"), Type: str},
			BillingMode:   awsdynamodb.BillingMode_PAY_PER_REQUEST,
			Encryption:    awsdynamodb.TableEncryption_CUSTOMER_MANAGED,
			EncryptionKey: key,
			PointInTimeRecoverySpecification: &awsdynamodb.PointInTimeRecoverySpecification{
				PointInTimeRecoveryEnabled: jsii.Bool(true),
			},
			DeletionProtection: jsii.Bool(true),
			RemovalPolicy:      awscdk.RemovalPolicy_RETAIN,
		}
		if stream != "" {
			tp.Stream = stream
		}
		return awsdynamodb.NewTable(self, jsii.String(name), tp)
	}
	// The audit feed reads new audit records from the table's stream.
	var auditStream awsdynamodb.StreamViewType
	if c.Audit.Syslog != nil {
		auditStream = awsdynamodb.StreamViewType_NEW_IMAGE
	}
	audit := newTable("AuditTable", auditStream)
	// Queries by patient and study return the records themselves; by calling
	// AE and by day they return only keys and non-PHI attributes.
	for _, g := range []struct {
		name, n string
		phi     bool
	}{{"byPatient", "1", true}, {"byStudy", "2", true}, {"byCallingAe", "3", false}, {"byDay", "4", false},
		// bySop: what Storage Commitment asks of an instance not indexed
		// (quarantined? its C-STORE refused?).
		{"bySop", "5", true}} {
		gsi := &awsdynamodb.GlobalSecondaryIndexProps{
			IndexName:      jsii.String(g.name),
			PartitionKey:   &awsdynamodb.Attribute{Name: jsii.String("gsi" + g.n + "pk"), Type: str},
			SortKey:        &awsdynamodb.Attribute{Name: jsii.String("gsi" + g.n + "sk"), Type: str},
			ProjectionType: awsdynamodb.ProjectionType_ALL,
		}
		if !g.phi {
			gsi.ProjectionType = awsdynamodb.ProjectionType_INCLUDE
			gsi.NonKeyAttributes = jsii.Strings("eventId", "eventTime", "outcome", "callingAe", "calledAe", "peer", "associationId", "reason")
		}
		audit.AddGlobalSecondaryIndex(gsi)
	}
	index := newTable("IndexTable", "")
	index.AddGlobalSecondaryIndex(&awsdynamodb.GlobalSecondaryIndexProps{
		// Sparse: only studies awaiting announcement carry gsi1pk, so notify
		// finds quiet studies without scanning.
		IndexName:      jsii.String("byPending"),
		PartitionKey:   &awsdynamodb.Attribute{Name: jsii.String("gsi1pk"), Type: str},
		SortKey:        &awsdynamodb.Attribute{Name: jsii.String("gsi1sk"), Type: str},
		ProjectionType: awsdynamodb.ProjectionType_KEYS_ONLY,
	})
	index.AddGlobalSecondaryIndex(&awsdynamodb.GlobalSecondaryIndexProps{
		IndexName:      jsii.String("byPatient"),
		PartitionKey:   &awsdynamodb.Attribute{Name: jsii.String("gsi2pk"), Type: str},
		SortKey:        &awsdynamodb.Attribute{Name: jsii.String("gsi2sk"), Type: str},
		ProjectionType: awsdynamodb.ProjectionType_ALL,
	})
	out.AuditTable, out.IndexTable = audit, index

	// The vault is under a key of its own (Storage.BackupKey), not the
	// data's. A vault's key is fixed when it is created, so this vault
	// replaced the one under the data's key (construct "BackupVault"),
	// which CloudFormation retains with its recovery points: see
	// docs/operations/deploy.md (upgrading).
	vaultProps := &awsbackup.BackupVaultProps{
		EncryptionKey: props.Storage.BackupKey,
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	}
	if l := c.Pipeline.BackupVaultLock; l != nil {
		lock := &awsbackup.LockConfiguration{MinRetention: awscdk.Duration_Days(jsii.Number(float64(l.MinRetentionDays)))}
		if l.ChangeableForDays != nil {
			lock.ChangeableFor = awscdk.Duration_Days(jsii.Number(float64(*l.ChangeableForDays)))
		}
		vaultProps.LockConfiguration = lock
	}
	vault := awsbackup.NewBackupVault(self, jsii.String("RecoveryPointVault"), vaultProps)
	// pipeline.backupCopy: each rule also copies its recovery points to
	// that vault (another Region or account, under its own key), kept as
	// long as the originals.
	var copyTo awsbackup.IBackupVault
	if bc := c.Pipeline.BackupCopy; bc != nil {
		copyTo = awsbackup.BackupVault_FromBackupVaultArn(self, jsii.String("CopyVault"), jsii.String(bc.VaultArn))
	}
	rule := func(name string, schedule awsevents.Schedule, keepDays int) awsbackup.BackupPlanRule {
		deleteAfter := awscdk.Duration_Days(jsii.Number(float64(keepDays)))
		rp := &awsbackup.BackupPlanRuleProps{RuleName: jsii.String(name), ScheduleExpression: schedule, DeleteAfter: deleteAfter}
		if copyTo != nil {
			rp.CopyActions = &[]*awsbackup.BackupPlanCopyActionProps{{DestinationBackupVault: copyTo, DeleteAfter: deleteAfter}}
		}
		return awsbackup.NewBackupPlanRule(rp)
	}
	plan := awsbackup.NewBackupPlan(self, jsii.String("BackupPlan"), &awsbackup.BackupPlanProps{
		BackupVault: vault,
		BackupPlanRules: &[]awsbackup.BackupPlanRule{
			rule("daily", awsevents.Schedule_Cron(&awsevents.CronOptions{Hour: jsii.String("3"), Minute: jsii.String("0")}), c.Pipeline.BackupRetentionDays),
		},
	})
	plan.AddSelection(jsii.String("Tables"), &awsbackup.BackupSelectionOptions{
		Resources: &[]awsbackup.BackupResource{
			awsbackup.BackupResource_FromDynamoDbTable(audit),
			awsbackup.BackupResource_FromDynamoDbTable(index),
		},
	})
	// The audit trail is kept six years (pipeline.auditBackupRetentionDays):
	// a monthly backup of the audit table alone, in the same vault (its
	// lock applies), outlives PITR and the daily backups.
	auditPlan := awsbackup.NewBackupPlan(self, jsii.String("AuditRetentionPlan"), &awsbackup.BackupPlanProps{
		BackupVault: vault,
		BackupPlanRules: &[]awsbackup.BackupPlanRule{
			rule("audit-monthly", awsevents.Schedule_Cron(&awsevents.CronOptions{Day: jsii.String("1"), Hour: jsii.String("4"), Minute: jsii.String("0")}), c.Pipeline.AuditBackupRetentionDays),
		},
	})
	auditPlan.AddSelection(jsii.String("AuditTable"), &awsbackup.BackupSelectionOptions{
		Resources: &[]awsbackup.BackupResource{awsbackup.BackupResource_FromDynamoDbTable(audit)},
	})
	out.BackupVault, out.BackupPlan, out.AuditBackupPlan = vault, plan, auditPlan

	// Event bus with archive and dead-letter queue.
	// Every queue is retained, as the tables and the bucket are: a
	// dead-letter queue holds what failed and awaits a redrive (an object
	// not yet validated, an event the bus could not encrypt, a batch the
	// audit feed did not deliver), a queue what is in flight. A queue
	// CloudFormation replaced or the stack's deletion would otherwise
	// delete them; retained, they can still be redriven
	// (docs/operations/deploy.md, Upgrades).
	dlqUnder := func(name string, k awskms.IKey) awssqs.Queue {
		return awssqs.NewQueue(self, jsii.String(name), &awssqs.QueueProps{
			Encryption:          awssqs.QueueEncryption_KMS,
			EncryptionMasterKey: k,
			EnforceSSL:          jsii.Bool(true),
			RetentionPeriod:     awscdk.Duration_Days(jsii.Number(14)),
			RemovalPolicy:       awscdk.RemovalPolicy_RETAIN,
		})
	}
	// Under the stack's key: see allowQueueDelivery.
	newDlq := func(name string) awssqs.Queue { return dlqUnder(name, key) }
	allowQueueDelivery(key)
	// The bus's dead-letter queue receives the events the bus could not
	// encrypt or decrypt with the stack's key (the key disabled, pending
	// deletion, its policy broken): under that key, the queue would refuse
	// them for the same reason, and the archive, under it too, misses
	// them, so they would be lost. It has a key of its own (BusDlqKey),
	// not SQS-managed encryption: events carry UIDs, and patient data as
	// eventPatientData allows, which the stack keeps under
	// customer-managed keys only. See docs/operations/alarms.md
	// (BusDlqNotEmpty).
	out.BusDlqKey = newBusDlqKey(self, c)
	out.BusDlq = dlqUnder("BusDlq", out.BusDlqKey)
	// Events carry UIDs, and patient data as eventPatientData allows: the
	// bus and its archive encrypt them with the stack's key, as every other
	// store of patient data does. The bus's dead-letter queue receives the
	// events it could not encrypt or decrypt (a KMS failure); a subscriber's
	// failed deliveries go to that subscriber's own target dead-letter queue.
	bus := awsevents.NewEventBus(self, jsii.String("Bus"), &awsevents.EventBusProps{
		Description:     jsii.String(busDescription(c.Name)),
		DeadLetterQueue: out.BusDlq,
		KmsKey:          key,
	})
	out.Archive = bus.Archive(jsii.String("Archive"), &awsevents.BaseArchiveProps{
		Description:  jsii.String("every dicom-ingest event, for replay to new subscribers"),
		EventPattern: &awsevents.EventPattern{Source: jsii.Strings(pipeline.EventSource)},
		// 0 days: EventBridge keeps the events forever (RetentionDays 0,
		// AWS::Events::Archive), as CDK's Archive does without a retention.
		Retention: archiveRetention(c.Pipeline.ArchiveRetention()),
	})
	// Retained, as every store of the stack's data is: the archived events
	// are what a new subscriber is replayed.
	out.Archive.ApplyRemovalPolicy(awscdk.RemovalPolicy_RETAIN)
	// The archive's key is set on the resource itself: CDK's KmsKey for an
	// archive (which bus.Archive drops) conditions the key policy on the
	// bus's ARN by reference, a dependency cycle with the bus, which
	// references the key. The key policy names the account's buses in
	// this region instead.
	out.Archive.Node().DefaultChild().(awsevents.CfnArchive).SetKmsKeyIdentifier(key.KeyArn())
	busesHere := regionalArn("events", "event-bus/*")
	key.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("AllowTheEventArchive"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("events.amazonaws.com"), nil)},
		Actions:    jsii.Strings("kms:GenerateDataKey", "kms:Decrypt", "kms:ReEncrypt*"),
		Resources:  jsii.Strings("*"),
		Conditions: &map[string]any{
			"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()},
			"StringLike":   map[string]any{"kms:EncryptionContext:aws:events:event-bus:arn": busesHere},
		},
	}), nil)
	out.BusDlq.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("AllowTheBusDeadLetters"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("events.amazonaws.com"), nil)},
		Actions:    jsii.Strings("sqs:SendMessage"),
		Resources:  &[]*string{out.BusDlq.QueueArn()},
		Conditions: &map[string]any{
			"ArnEquals":    map[string]any{"aws:SourceArn": bus.EventBusArn()},
			"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()},
		},
	}))
	out.Bus = bus

	// Queues. Visibility is six times the consumer's timeout, as Lambda's
	// SQS integration recommends.
	newQueue := func(name string, timeout awscdk.Duration) *Queue {
		dlq := newDlq(name + "Dlq")
		q := awssqs.NewQueue(self, jsii.String(name+"Queue"), &awssqs.QueueProps{
			Encryption:          awssqs.QueueEncryption_KMS,
			EncryptionMasterKey: key,
			EnforceSSL:          jsii.Bool(true),
			VisibilityTimeout:   awscdk.Duration_Seconds(jsii.Number(6 * *timeout.ToSeconds(nil))),
			RetentionPeriod:     awscdk.Duration_Days(jsii.Number(4)),
			RemovalPolicy:       awscdk.RemovalPolicy_RETAIN,
			DeadLetterQueue:     &awssqs.DeadLetterQueue{Queue: dlq, MaxReceiveCount: jsii.Number(float64(c.Pipeline.MaxReceiveCount))},
		})
		return &Queue{Queue: q, Dlq: dlq}
	}

	fnSG := awsec2.NewSecurityGroup(self, jsii.String("FunctionsSG"), &awsec2.SecurityGroupProps{
		Vpc:              props.Network.Vpc,
		Description:      jsii.String("pipeline functions: no inbound; HTTPS to the AWS endpoints only"),
		AllowAllOutbound: jsii.Bool(false),
	})
	// validate, audit and notify talk to AWS only. Nothing through the VPN
	// and no internet, even if a route to either appeared.
	allowAWSEndpoints(fnSG, props.Network)
	out.FunctionsSG = fnSG

	// The pipeline functions' environment (lambdaio.ConfigFromEnv).
	// BUCKET_ARN is the bucket's ARN in the partition CloudFormation
	// deploys to (arn:aws-cn:…, arn:aws-us-gov:…): events name objects by
	// ARN.
	pipelineEnv := map[string]*string{
		"BUCKET":             bucket.BucketName(),
		"BUCKET_ARN":         bucket.BucketArn(),
		"AUDIT_TABLE":        audit.TableName(),
		"INDEX_TABLE":        index.TableName(),
		"EVENT_BUS_NAME":     bus.EventBusName(),
		"EVENT_PATIENT_DATA": jsii.String(c.Pipeline.EventPatientData),
	}
	// newLambda is what every function of the stack has: its log group,
	// its environment (env, and ENVIRONMENT, which lambdaio.Logger puts on
	// every line for the metric filters) encrypted under the key, its
	// place in the VPC. Nothing else: a function is given only what it
	// reads.
	newLambda := func(name string, timeout awscdk.Duration, memory float64, env map[string]*string, sg awsec2.ISecurityGroup) awslambda.Function {
		merged := maps.Clone(env)
		if merged == nil {
			merged = map[string]*string{}
		}
		merged["ENVIRONMENT"] = jsii.String(c.Name)
		logs := awslogs.NewLogGroup(self, jsii.String(name+"Logs"), &awslogs.LogGroupProps{
			EncryptionKey: key,
			Retention:     retention(c.LogRetentionDays),
			RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
		})
		// A panic the function recovered is a bug: a message failed alone
		// (no invocation error; its DLQ sounds only after its retries), a
		// run failed, a feed's batch failed or a record was skipped.
		out.FunctionPanics = logLineMetric(self, name+"PanicFilter", logs, c.Name, MetricFunctionPanics, panicLogs(name)...)
		fn := awslambda.NewFunction(self, jsii.String(name+"Fn"), &awslambda.FunctionProps{
			Description:                  jsii.String("dicom-ingest " + name),
			Runtime:                      awslambda.Runtime_PROVIDED_AL2023(),
			Architecture:                 awslambda.Architecture_ARM_64(),
			Handler:                      jsii.String("bootstrap"),
			Code:                         awslambda.Code_FromAsset(jsii.String(filepath.Join(props.FunctionsDir, name)), nil),
			Timeout:                      timeout,
			MemorySize:                   jsii.Number(memory),
			ReservedConcurrentExecutions: jsii.Number(float64(c.Pipeline.ReservedConcurrency)),
			Environment:                  &merged,
			EnvironmentEncryption:        key,
			LogGroup:                     logs,
			LoggingFormat:                awslambda.LoggingFormat_JSON,
			Vpc:                          props.Network.Vpc,
			VpcSubnets:                   props.Network.Subnets,
			SecurityGroups:               &[]awsec2.ISecurityGroup{sg},
			Tracing:                      awslambda.Tracing_DISABLED,
			RecursiveLoop:                awslambda.RecursiveLoop_TERMINATE,
		})
		// Lambda decrypts the environment (under the key) with the role's
		// credentials when an execution environment starts.
		grantKeyVia(fn, key, "lambda", "kms:Decrypt")
		return fn
	}
	// newFunction is a pipeline function (validate, audit, notify,
	// commitment): lambdaio's pipeline, configured by pipelineEnv and env,
	// whose lines and errors name objects and studies by their log names.
	// It reads the deployment's log-name key at cold start
	// (LOG_NAME_KEY_SECRET_ARN), so that its names are scp-task's and the
	// other functions', which an operator can look up
	// (docs/operations/logging.md); given here, no pipeline function can
	// miss it.
	newFunction := func(name string, timeout awscdk.Duration, memory float64, env map[string]*string, sg awsec2.ISecurityGroup) awslambda.Function {
		withKey := maps.Clone(pipelineEnv)
		maps.Copy(withKey, env)
		withKey[logname.SecretARNEnv] = props.Storage.LogNameKey.SecretArn()
		fn := newLambda(name, timeout, memory, withKey, sg)
		readLogNameKey(fn, props.Storage.LogNameKey, key)
		return fn
	}
	// consume maps the queue to the function. Not CDK's SqsEventSource:
	// its grant on the queue's key has no kms:ViaService; grantConsume
	// makes the same grant through SQS only. The id is SqsEventSource's,
	// so the mapping keeps its logical id.
	consume := func(fn awslambda.Function, q *Queue) {
		fn.AddEventSourceMapping(jsii.String("SqsEventSource:"+*awscdk.Names_NodeUniqueId(q.Queue.Node())), &awslambda.EventSourceMappingOptions{
			EventSourceArn:          q.Queue.QueueArn(),
			BatchSize:               jsii.Number(10),
			MaxBatchingWindow:       awscdk.Duration_Seconds(jsii.Number(1)),
			ReportBatchItemFailures: jsii.Bool(true),
			// Never more pollers than reserved concurrency: throttled
			// batches would count as receives and reach the DLQ.
			MaxConcurrency: jsii.Number(float64(c.Pipeline.ReservedConcurrency)),
		})
		grantConsume(fn, key, q.Queue)
	}
	targets := accessTargets{key: key, bucket: bucket, index: index, audit: audit, bus: bus}
	grant := func(name string, fn awslambda.Function) { grantAccess(fn, targets, functionAccess[name]) }

	// validate: incoming/ → validate queue.
	vTimeout := awscdk.Duration_Seconds(jsii.Number(120))
	vq := newQueue("Validate", vTimeout)
	bucket.AddEventNotification(awss3.EventType_OBJECT_CREATED, &queueDestination{queue: vq.Queue}, &awss3.NotificationKeyFilter{Prefix: jsii.String(PrefixIncoming)})
	validate := newFunction(FnValidate, vTimeout, 512, nil, fnSG)
	out.Functions[FnValidate] = validate
	consume(validate, vq)
	grant(FnValidate, validate)
	out.Queues[FnValidate] = vq

	// audit: audit/ → audit queue → audit table.
	aTimeout := awscdk.Duration_Seconds(jsii.Number(30))
	aq := newQueue("Audit", aTimeout)
	bucket.AddEventNotification(awss3.EventType_OBJECT_CREATED, &queueDestination{queue: aq.Queue}, &awss3.NotificationKeyFilter{Prefix: jsii.String(PrefixAudit)})
	auditFn := newFunction(FnAudit, aTimeout, 256, nil, fnSG)
	out.Functions[FnAudit] = auditFn
	consume(auditFn, aq)
	grant(FnAudit, auditFn)
	out.Queues[FnAudit] = aq

	// notify: every minute, announce studies quiet for the quiet period.
	notify := newFunction(FnNotify, awscdk.Duration_Seconds(jsii.Number(55)), 256, map[string]*string{
		"QUIET_PERIOD_SECONDS": jsii.String(strconv.Itoa(c.Pipeline.QuietPeriodSeconds)),
	}, fnSG)
	out.Functions[FnNotify] = notify
	grant(FnNotify, notify)
	out.NotifyDlq = newDlq("NotifyDlq")
	everyMinute(self, "NotifySchedule", "announce stable studies", notify, out.NotifyDlq, key)

	if c.Audit.Syslog != nil {
		// Not a pipeline function: it names records by their stream
		// position, never an object or a study, so it has no log-name key.
		out.AuditFeed = newAuditFeed(self, c, props.Network, audit, key, newDlq, newLambda)
	}
	out.newCommitment(self, c, props, newQueue, newDlq, newFunction, consume, grant)
	return out
}

// everyMinute invokes fn every minute, its failed runs going to dlq.
// EventBridge invokes a function asynchronously: the target's dead-letter
// queue receives only the events EventBridge could not hand to Lambda (the
// function gone, its permission refused); a run the function fails (an
// error, a timeout) or that waited past its age (throttled) goes where the
// function's asynchronous invocation config sends it, and without one
// nowhere. Both go to dlq, so its alarm sounds for either. Lambda retries
// no run: the next minute's does the same work.
func everyMinute(scope constructs.Construct, id, desc string, fn awslambda.Function, dlq awssqs.Queue, key awskms.IKey) {
	fn.ConfigureAsyncInvoke(&awslambda.EventInvokeConfigOptions{
		OnFailure:     &asyncOnFailure{queue: dlq, key: key},
		RetryAttempts: jsii.Number(0),
		MaxEventAge:   awscdk.Duration_Minutes(jsii.Number(5)),
	})
	awsevents.NewRule(scope, jsii.String(id), &awsevents.RuleProps{
		Description: jsii.String(desc),
		Schedule:    awsevents.Schedule_Rate(awscdk.Duration_Minutes(jsii.Number(1))),
		Targets: &[]awsevents.IRuleTarget{awseventstargets.NewLambdaFunction(fn, &awseventstargets.LambdaFunctionProps{
			DeadLetterQueue: dlq,
			RetryAttempts:   jsii.Number(2),
			MaxEventAge:     awscdk.Duration_Minutes(jsii.Number(5)),
		})},
	})
}

// newCommitment adds the Storage Commitment function: commitment/requests/
// ObjectCreated → commitment queue → commitment (register, evaluate against
// the index, the bucket and the audit trail, report to the site's PACS
// through the VPN), and every minute the same function for the
// transactions still waiting for instances or for a retry. Its security
// group reaches the AWS endpoints and each site PACS's DICOM port only.
func (out *Pipeline) newCommitment(self constructs.Construct, c *config.Config, props *PipelineProps,
	newQueue func(string, awscdk.Duration) *Queue, newDlq func(string) awssqs.Queue,
	newFunction func(string, awscdk.Duration, float64, map[string]*string, awsec2.ISecurityGroup) awslambda.Function,
	consume func(awslambda.Function, *Queue), grant func(string, awslambda.Function)) {
	bucket := props.Storage.Bucket
	sg := awsec2.NewSecurityGroup(self, jsii.String("CommitmentSG"), &awsec2.SecurityGroupProps{
		Vpc:              props.Network.Vpc,
		Description:      jsii.String("commitment function: no inbound; HTTPS to the AWS endpoints and the DICOM port of each site PACS through the VPN"),
		AllowAllOutbound: jsii.Bool(false),
	})
	allowAWSEndpoints(sg, props.Network)
	for _, site := range c.Sites {
		if site.Pacs == nil {
			continue
		}
		sg.AddEgressRule(awsec2.Peer_Ipv4(jsii.String(site.Pacs.Host+"/32")), awsec2.Port_Tcp(jsii.Number(float64(site.Pacs.Port))),
			jsii.String("Storage Commitment reports to the PACS of site "+site.Name), nil)
	}
	out.CommitmentSG = sg

	timeout := awscdk.Duration_Seconds(jsii.Number(config.CommitmentTimeoutSeconds))
	q := newQueue("Commitment", timeout)
	bucket.AddEventNotification(awss3.EventType_OBJECT_CREATED, &queueDestination{queue: q.Queue}, &awss3.NotificationKeyFilter{Prefix: jsii.String(PrefixCommitmentRequests)})
	// The config's one map of the function's own variables, the one its 4 KB budget is checked on at load.
	env := map[string]*string{}
	for k, v := range c.CommitmentEnvironment() {
		env[k] = jsii.String(v)
	}
	fn := newFunction(FnCommitment, timeout, 256, env, sg)
	out.Functions[FnCommitment] = fn
	grantPacsTLS(fn, c)
	// The schedule's run holds a slot while it moves transactions on (up
	// to 50 s a minute, while some are pending) beside the queue's pollers,
	// which take the configured reservation (consume): one more, or a
	// poller's batch is throttled, and a throttled batch counts as a
	// receive on its way to the dead-letter queue.
	fn.Node().DefaultChild().(awslambda.CfnFunction).SetReservedConcurrentExecutions(jsii.Number(float64(c.Pipeline.CommitmentReservedConcurrency())))
	consume(fn, q)
	// It reads the requests, the incoming objects (are they there?), and its
	// own results; writes results only.
	grant(FnCommitment, fn)
	out.Queues[FnCommitment] = q

	out.CommitmentScheduleDlq = newDlq("CommitmentScheduleDlq")
	everyMinute(self, "CommitmentSchedule", "move Storage Commitment transactions on: instances in flight, report retries", fn, out.CommitmentScheduleDlq, props.Storage.Key)

	// The alarm's signal: the function logs each result it gives up on.
	out.CommitmentUndeliverable = logLineMetric(self, "CommitmentUndeliverableFilter", fn.LogGroup(), c.Name, MetricCommitmentUndeliverable, pipeline.UndeliverableLog)
	if c.CommitmentTLS() != "" {
		// Failed handshakes with tls:// sites' PACS, by reason (the listener's classification); no alarm of
		// their own: a result they keep from its PACS ends undeliverable, which CommitmentUndeliverable watches.
		awslogs.NewMetricFilter(self, jsii.String("CommitmentTLSHandshakeFilter"), &awslogs.MetricFilterProps{
			LogGroup:        fn.LogGroup(),
			FilterPattern:   awslogs.FilterPattern_Literal(jsii.String(jsonlog.MessageFilter(commitreport.HandshakeFailedLog))),
			MetricNamespace: jsii.String(MetricsNamespace),
			MetricName:      jsii.String(MetricCommitmentTLSHandshakeFailures),
			MetricValue:     jsii.String("1"),
			Dimensions:      &map[string]*string{"Environment": jsii.String("$." + jsonlog.EnvironmentKey), "Reason": jsii.String("$.reason")},
		})
	}

	// A study's announcement that panicked (a bug it meets) fails that
	// study alone and is logged with its log name and the stack: notify
	// announces quiet studies, commitment the studies a request completes,
	// so both log groups feed the one metric.
	for _, name := range []string{FnNotify, FnCommitment} {
		out.AnnouncePanics = logLineMetric(self, name+"AnnouncePanicFilter", out.Functions[name].LogGroup(), c.Name, MetricAnnouncePanics, pipeline.AnnouncePanicLog)
	}
}

// grantPacsTLS lets the commitment function read the client certificate
// secret of each site whose PACS takes DICOM TLS, exactly those secrets (by
// their complete ARNs), and decrypt with a customer-managed key of theirs
// through Secrets Manager only.
func grantPacsTLS(fn awslambda.Function, c *config.Config) {
	var arns []*string
	keys := map[string]bool{}
	for _, s := range c.Sites {
		if s.Pacs == nil || s.Pacs.TLS == nil {
			continue
		}
		if s.Pacs.TLS.CaPEM == "" {
			// Load reads the CA files; a config that was only parsed would deploy a function that refuses to start.
			panic(fmt.Sprintf("stack: site %s: pacs.tls.caFile was not read (config.Load reads it)", s.Name))
		}
		arns = append(arns, jsii.String(s.Pacs.TLS.ClientSecretArn))
		if k := s.Pacs.TLS.SecretKmsKeyArn; k != "" && !keys[k] {
			keys[k] = true
			grantSecretKey(fn.Role(), fmt.Sprintf("PacsClientSecretKey%dViaSecretsManager", len(keys)), k, c.Region)
		}
	}
	if len(arns) > 0 {
		grantSecretValue(fn, arns...)
	}
}

// logLineMetric counts the lines of a log group whose message is one of
// msgs as the metric name in MetricsNamespace (one filter), with the
// dimension Environment taken from the line (lambdaio.Logger, and scp-task
// with ENVIRONMENT, write it on every line), and returns that
// metric for environment env as an alarm must name it: with the dimension,
// or the alarm watches a metric nothing publishes. A filter with dimensions
// takes no default value, and a dimension's value must be a field of the
// line, so the metric has data only where such a line was logged.
func logLineMetric(scope constructs.Construct, id string, logGroup awslogs.ILogGroup, env, name string, msgs ...string) awscloudwatch.Metric {
	filter := awslogs.NewMetricFilter(scope, jsii.String(id), &awslogs.MetricFilterProps{
		LogGroup: logGroup,
		// The one pattern of such lines, which the functions' tests match
		// against the lines their handlers log (jsonlogtest.FilterMatches).
		FilterPattern:   awslogs.FilterPattern_Literal(jsii.String(jsonlog.MessageFilter(msgs...))),
		MetricNamespace: jsii.String(MetricsNamespace),
		MetricName:      jsii.String(name),
		MetricValue:     jsii.String("1"),
		Dimensions:      &map[string]*string{"Environment": jsii.String("$." + jsonlog.EnvironmentKey)},
	})
	return filter.Metric(&awscloudwatch.MetricOptions{
		Statistic:     jsii.String("Sum"),
		Period:        awscdk.Duration_Minutes(jsii.Number(5)),
		DimensionsMap: &map[string]*string{"Environment": jsii.String(env)},
	})
}

// allowAWSEndpoints lets a function's security group reach AWS and nothing
// else it did not add: S3 and DynamoDB through the gateway endpoints (their
// prefix lists), SQS, EventBridge, KMS, logs and Secrets Manager through the
// interface endpoints, all over HTTPS.
func allowAWSEndpoints(sg awsec2.SecurityGroup, network *Network) {
	https := awsec2.Port_Tcp(jsii.Number(443))
	sg.AddEgressRule(awsec2.Peer_SecurityGroupId(network.EndpointSecurityGroup.SecurityGroupId(), nil), https,
		jsii.String("HTTPS to the interface endpoints"), nil)
	sg.AddEgressRule(network.S3PrefixList, https, jsii.String("HTTPS to S3 through the gateway endpoint"), nil)
	sg.AddEgressRule(network.DynamoDBPrefixList, https, jsii.String("HTTPS to DynamoDB through the gateway endpoint"), nil)
}

// readLogNameKey lets fn read the log-name key (secret, under the stack's
// key), which a function naming objects or studies in its logs needs so
// that its names are scp-task's and the other functions': every pipeline
// function (newFunction) does, validate the object it validates, audit the
// incoming object a resend duplicates, notify and commitment the study an
// announcement failed or panicked for (and commitment an object it could
// not look for); the audit feed names none.
func readLogNameKey(fn awslambda.Function, secret awssecretsmanager.ISecret, key awskms.IKey) {
	grantSecretValue(fn, secret.SecretArn())
	grantKeyVia(fn, key, "secretsmanager", "kms:Decrypt")
}

// newBusDlqKey creates the key of the bus's dead-letter queue: CDK's
// default policy (the account's kms:*, so IAM decides who reads the
// queue, through SQS) and EventBridge's delivery to this account's queues
// for this account's buses. The statement cannot name the bus or the
// queue: the bus references the queue, the queue the key (a dependency
// cycle); the queue's policy names the bus.
func newBusDlqKey(scope constructs.Construct, c *config.Config) awskms.Key {
	k := awskms.NewKey(scope, jsii.String("BusDlqKey"), &awskms.KeyProps{
		Description:       jsii.String("dicom-ingest " + c.Name + ": the event bus's dead-letter queue (events the stack's key failed)"),
		EnableKeyRotation: jsii.Bool(true),
		PendingWindow:     awscdk.Duration_Days(jsii.Number(30)),
		RemovalPolicy:     awscdk.RemovalPolicy_RETAIN,
	})
	allowServiceDelivery(k, serviceDelivery{
		sid: "EventBridgeDeadLetters", service: "events.amazonaws.com",
		actions:    []string{"kms:GenerateDataKey", "kms:Decrypt"},
		contextKey: "kms:EncryptionContext:aws:sqs:arn", contextArn: regionalArn("sqs", "*"),
		sourceArns: []*string{regionalArn("events", "event-bus/*")},
	})
	return k
}

// archiveRetention is the event archive's retention: none (forever) for 0
// days.
func archiveRetention(days int) awscdk.Duration {
	if days == 0 {
		return nil
	}
	return awscdk.Duration_Days(jsii.Number(float64(days)))
}
