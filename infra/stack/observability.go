package stack

import (
	"fmt"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatchactions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awselasticloadbalancingv2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssnssubscriptions"
	"github.com/aws/aws-cdk-go/awscdk/v2/interfaces/interfacesawscloudwatch"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/access"
	"github.com/dicom-ingest/dicom-ingest/infra/config"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
)

// MetricAuditRecordLostLogLines counts the SCP's "audit record lost" log
// lines (a metric filter on its log group, in MetricsNamespace).
const MetricAuditRecordLostLogLines = "ScpAuditRecordLostLogLines"

// MetricAuditUncleanStopLogLines counts the SCP's "previous run stopped
// uncleanly" log lines (associationaudit.UncleanStopLog), one per dead run
// a task's start took over (with scp.staging only).
const MetricAuditUncleanStopLogLines = "ScpUncleanStopLogLines"

// dynamoOperations are the values of CloudWatch's Operation dimension the
// functions' DynamoDB actions appear under (tableOperations).
var dynamoOperations = map[string]awsdynamodb.Operation{
	"GetItem":    awsdynamodb.Operation_GET_ITEM,
	"PutItem":    awsdynamodb.Operation_PUT_ITEM,
	"UpdateItem": awsdynamodb.Operation_UPDATE_ITEM,
	"DeleteItem": awsdynamodb.Operation_DELETE_ITEM,
	"Query":      awsdynamodb.Operation_QUERY,
	"Scan":       awsdynamodb.Operation_SCAN,
}

// ObservabilityProps configures NewObservability.
type ObservabilityProps struct {
	Config   *config.Config
	Storage  *Storage
	Vpn      *SiteVpn
	Ingest   *Ingest
	Pipeline *Pipeline
}

// Observability holds the alarm topic, the alarms and the dashboard.
type Observability struct {
	constructs.Construct
	Topic awssns.Topic
	// TopicKey encrypts Topic and nothing else (newAlarmTopicKey).
	TopicKey  awskms.Key
	Alarms    []awscloudwatch.Alarm
	Dashboard awscloudwatch.Dashboard
	// BackupAlerts send failed backup and copy jobs of the vault to Topic.
	BackupAlerts *BackupAlerts
	// KeyAlert sends a key of the stack disabled, scheduled for deletion
	// or given another policy to Topic (newKeyAlerts).
	KeyAlert awsevents.Rule
}

// NewObservability creates alarms on every failure signal the system has
// and one dashboard for the environment.
func NewObservability(scope constructs.Construct, id string, props *ObservabilityProps) *Observability {
	c := props.Config
	self := constructs.NewConstruct(scope, jsii.String(id))
	out := &Observability{Construct: self}
	topicKey := newAlarmTopicKey(self, c)
	out.TopicKey = topicKey
	topic := awssns.NewTopic(self, jsii.String("Alarms"), &awssns.TopicProps{
		MasterKey:  topicKey,
		EnforceSSL: jsii.Bool(true),
	})
	// EnforceSSL writes the topic's resource policy, which replaces SNS's
	// default one (the account's principals may publish): CloudWatch, whose
	// alarm actions are authorized by that policy alone, must be allowed,
	// for this account's alarms only, or no alarm ever reaches anyone.
	topic.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("AllowThisAccountsAlarms"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("cloudwatch.amazonaws.com"), nil)},
		Actions:    jsii.Strings("sns:Publish"),
		Resources:  &[]*string{topic.TopicArn()},
		Conditions: &map[string]any{
			"StringEquals": map[string]any{"aws:SourceAccount": awscdk.Aws_ACCOUNT_ID()},
			"ArnLike":      map[string]any{"aws:SourceArn": regionalArn("cloudwatch", "alarm:*")},
		},
	}))
	if c.AlarmEmail != "" {
		topic.AddSubscription(awssnssubscriptions.NewEmailSubscription(jsii.String(c.AlarmEmail), nil))
	}
	out.Topic = topic
	action := awscloudwatchactions.NewSnsAction(topic)
	add := func(a awscloudwatch.Alarm) {
		a.AddAlarmAction(action)
		a.AddOkAction(action)
		out.Alarms = append(out.Alarms, a)
	}
	minute := awscdk.Duration_Minutes(jsii.Number(1))
	alarm := func(id string, m awscloudwatch.Metric, threshold float64, op awscloudwatch.ComparisonOperator, periods float64, desc string) {
		add(m.CreateAlarm(self, jsii.String(id), &awscloudwatch.CreateAlarmOptions{
			AlarmDescription:   jsii.String(desc),
			Threshold:          jsii.Number(threshold),
			ComparisonOperator: op,
			EvaluationPeriods:  jsii.Number(periods),
			TreatMissingData:   awscloudwatch.TreatMissingData_NOT_BREACHING,
		}))
	}
	gt := awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD
	lt := awscloudwatch.ComparisonOperator_LESS_THAN_THRESHOLD

	for _, conn := range props.Vpn.Connections {
		add(conn.TunnelDown)
	}

	// Queues: anything in a DLQ needs a human; old messages mean the
	// pipeline is not keeping up (the promise is sub-minute ingestion).
	p := props.Pipeline
	var queueWidgets []awscloudwatch.IWidget
	for _, name := range FunctionNames {
		q, ok := p.Queues[name]
		if !ok {
			continue
		}
		alarm(name+"DlqNotEmpty", q.Dlq.MetricApproximateNumberOfMessagesVisible(&awscloudwatch.MetricOptions{Period: minute, Statistic: jsii.String("Maximum")}),
			0, gt, 1, fmt.Sprintf("Messages in the %s dead-letter queue: objects that failed processing", name))
		alarm(name+"QueueAge", q.Queue.MetricApproximateAgeOfOldestMessage(&awscloudwatch.MetricOptions{Period: minute, Statistic: jsii.String("Maximum")}),
			300, gt, 3, fmt.Sprintf("The oldest %s message is over 5 minutes old: ingestion is falling behind", name))
		queueWidgets = append(queueWidgets, awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{
			Title: jsii.String(name + " queue"),
			Left:  &[]awscloudwatch.IMetric{q.Queue.MetricApproximateNumberOfMessagesVisible(nil), q.Dlq.MetricApproximateNumberOfMessagesVisible(nil)},
			Right: &[]awscloudwatch.IMetric{q.Queue.MetricApproximateAgeOfOldestMessage(nil)},
			Width: jsii.Number(6),
		}))
	}
	for _, d := range []struct {
		id   string
		desc string
		q    interface {
			MetricApproximateNumberOfMessagesVisible(*awscloudwatch.MetricOptions) awscloudwatch.Metric
		}
	}{
		{"NotifyDlqNotEmpty", "Failed scheduled notify invocations", p.NotifyDlq},
		{"CommitmentScheduleDlqNotEmpty", "Failed scheduled commitment invocations", p.CommitmentScheduleDlq},
		{"BusDlqNotEmpty", "Events the bus could not encrypt or decrypt with the stack's key (a KMS failure), kept under a key of their own; a subscriber's failed deliveries go to its own target dead-letter queue", p.BusDlq},
	} {
		alarm(d.id, d.q.MetricApproximateNumberOfMessagesVisible(&awscloudwatch.MetricOptions{Period: minute, Statistic: jsii.String("Maximum")}), 0, gt, 1, d.desc)
	}

	var fnErrors []awscloudwatch.IMetric
	for _, name := range FunctionNames {
		fnErrors = append(fnErrors, functionAlarms(alarm, name, name, p.Functions[name],
			fmt.Sprintf("The %s function failed (invocation errors, not per-message failures)", name)))
	}

	// The tables are on demand, yet DynamoDB still throttles: a partition
	// over its limits (hot keys), the account's per-table quota, or a
	// table's maximum on-demand throughput. ThrottledRequests counts a
	// request once whatever caused it, GSI writes included, and is
	// published per table and operation, so the alarm adds up the
	// operations the functions call on the table ("CloudWatch throttling
	// metrics", Amazon DynamoDB Developer Guide,
	// https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/TroubleshootingThrottling-cloudwatch.html;
	// the cause-specific ...ThrottleEvents metrics there tell which).
	var throttleMetrics []awscloudwatch.IMetric
	for _, t := range []struct {
		id    string
		table awsdynamodb.Table
		which func(access.Function) access.Table
	}{
		{"AuditTableThrottled", p.AuditTable, func(a access.Function) access.Table { return a.Audit }},
		{"IndexTableThrottled", p.IndexTable, func(a access.Function) access.Table { return a.Index }},
	} {
		var ops []awsdynamodb.Operation
		for _, op := range tableOperations(t.which) {
			ops = append(ops, dynamoOperations[op])
		}
		m := t.table.MetricThrottledRequestsForOperations(&awsdynamodb.OperationsMetricOptions{Operations: &ops, Period: minute})
		throttleMetrics = append(throttleMetrics, m)
		add(awscloudwatch.NewAlarm(self, jsii.String(t.id), &awscloudwatch.AlarmProps{
			Metric:             m,
			AlarmDescription:   jsii.String("DynamoDB throttled requests to the " + strings.TrimSuffix(t.id, "Throttled") + " every minute for 5 minutes: records wait in their queues (docs/operations/alarms.md)"),
			Threshold:          jsii.Number(0),
			ComparisonOperator: gt,
			EvaluationPeriods:  jsii.Number(5),
			TreatMissingData:   awscloudwatch.TreatMissingData_NOT_BREACHING,
		}))
	}

	// Backups: a failed backup or copy job of the vault goes to the topic
	// as AWS Backup's own event, whose documented example events give the
	// fields matched (the vault, and a copy's source vault); nothing else
	// would tell that the tables are not being backed up (newBackupAlerts).
	// Keys: a key of the stack disabled, scheduled for deletion or given
	// another policy goes to the topic as a message naming the call, the
	// key and the caller; until then nothing told of it before everything
	// under the key failed (newKeyAlerts).
	target := &alarmTopicTarget{topic: topic}
	out.BackupAlerts = newBackupAlerts(self, target, p.BackupVault)
	out.KeyAlert = newKeyAlerts(self, c.Name, target, props.Storage.Key, props.Storage.BackupKey, p.BusDlqKey)
	deliverAlerts(topic, topicKey, alarm,
		alertRule{out.BackupAlerts.JobFailed, "BackupJobAlertUndelivered", "EventBridge could not deliver a failed-backup-job event to the alarm topic (docs/operations/alarms.md)"},
		alertRule{out.BackupAlerts.CopyFailed, "BackupCopyAlertUndelivered", "EventBridge could not deliver a failed-copy-job event to the alarm topic (docs/operations/alarms.md)"},
		alertRule{out.KeyAlert, "KeyAlertUndelivered", "EventBridge could not deliver a message of a key of the stack disabled, scheduled for deletion or re-policied to the alarm topic (docs/operations/alarms.md)"},
	)

	// Storage Commitment: a result the site's PACS never took (unreachable
	// through the VPN, refusing our association or the report) until
	// commitment.reportMinutes passed.
	alarm("CommitmentUndeliverable", p.CommitmentUndeliverable, 0, gt, 1,
		"Storage Commitment results given up on: a site PACS could not be reached or refused the report (see docs/operations/alarms.md)")
	// A bug: a study's announcement panicked. The run goes on with the
	// other studies, and the study is tried again a quiet period later,
	// where it panics again until the code is fixed.
	alarm("AnnouncementPanicked", p.AnnouncePanics, 0, gt, 1,
		"A study's announcement panicked (a bug; the study is deferred, its events late): report the logged stack (docs/operations/alarms.md)")

	// A bug: a function recovered a panic, in any function (its log
	// group's filter counts its handler's line). A queue's message that
	// panicked fails alone, no invocation error: until now only its DLQ
	// told, after its retries; a scheduled run's went to its schedule's
	// DLQ, the audit feed's batch back to its stream.
	alarm("FunctionPanicked", p.FunctionPanics, 0, gt, 1,
		"A function recovered a panic (a bug: a message or a feed's batch failed, a scheduled run failed): report the logged stack (docs/operations/alarms.md)")

	var feedMetrics []awscloudwatch.IMetric
	if p.AuditFeed != nil {
		feedMetrics = p.AuditFeed.alarms(alarm)
	}

	// SCP: rejected associations (unknown AE, wrong source, over limits) and
	// C-STORE failures, from the SCP's own metrics.
	ing := props.Ingest
	rejects := ScpMetric(c.Name, MetricRejectedAssociation, "Sum", awscdk.Duration_Minutes(jsii.Number(5)))
	storeFailures := ScpMetric(c.Name, MetricStoreFailures, "Sum", awscdk.Duration_Minutes(jsii.Number(5)))
	// The same by reason and by status, for the on-call engineer: the
	// alarms above watch the sums.
	rejectsByReason := ScpMetricByLabel(c.Name, MetricRejectedAssociation, "Sum", awscdk.Duration_Minutes(jsii.Number(5)))
	failuresByStatus := ScpMetricByLabel(c.Name, MetricStoreFailures, "Sum", awscdk.Duration_Minutes(jsii.Number(5)))
	// Gauges are published per task per scrape (every 30 s): a Sum over a
	// minute counted each association about twice. The busiest task, and
	// the mean per task (what the association scaling tracks).
	activeMax := ScpMetric(c.Name, MetricActiveAssociations, "Maximum", minute).With(&awscloudwatch.MetricOptions{Label: jsii.String("busiest task")})
	activeAvg := ScpMetric(c.Name, MetricActiveAssociations, "Average", minute).With(&awscloudwatch.MetricOptions{Label: jsii.String("mean per task")})
	stored := ScpMetric(c.Name, MetricObjectsStored, "Sum", minute)
	// The SCP's own alarms treat missing data as fine (no rejects, no
	// failures): were its metrics to stop (the metrics agent down), they
	// would all go quiet. This one sounds when they stop: every task
	// publishes its open associations each scrape, 0 included.
	add(ScpMetric(c.Name, MetricActiveAssociations, "SampleCount", awscdk.Duration_Minutes(jsii.Number(5))).CreateAlarm(self, jsii.String("ScpMetricsMissing"), &awscloudwatch.CreateAlarmOptions{
		AlarmDescription:   jsii.String("No SCP metrics for 10 minutes: the tasks' metrics agent is down (or every task is), so the SCP's other alarms cannot sound (docs/operations/alarms.md)"),
		Threshold:          jsii.Number(1),
		ComparisonOperator: lt,
		EvaluationPeriods:  jsii.Number(2),
		TreatMissingData:   awscloudwatch.TreatMissingData_BREACHING,
	}))
	alarm("ScpRejects", rejects, 10, gt, 1, "More than 10 associations rejected in 5 minutes: a site is misconfigured, something unknown is knocking, or a task is not ready (reason temporary_congestion: S3, audit records, staging; docs/operations/alarms.md)")
	// Audit records lost: a compliance event, whatever the count. The
	// agent sees a loss while the task runs (a record not encodable); a
	// task losing records at its exit is gone before the next scrape, so
	// the log line each loss writes is counted as well, which the log
	// driver ships after the process ends.
	alarm("ScpAuditRecordsLost", ScpMetric(c.Name, MetricAuditRecordsLost, "Sum", minute), 0, gt, 1,
		"scp-task lost association audit records (never written to audit/): a compliance event (docs/operations/alarms.md)")
	alarm("ScpAuditRecordLostLogged", logLineMetric(self, "ScpAuditRecordLostFilter", ing.LogGroup, c.Name, MetricAuditRecordLostLogLines, associationaudit.LostLog), 0, gt, 1,
		"scp-task logged an audit record lost (never written to audit/), at its exit or while running: a compliance event (docs/operations/alarms.md)")
	// Scale-in protection lasts 15 minutes past its last renewal: failing
	// that long, a busy task may be stopped by a scale-in or deployment.
	alarm("ScpTaskProtectionFailures", ScpMetric(c.Name, MetricTaskProtectionFailures, "Sum", awscdk.Duration_Minutes(jsii.Number(5))), 0, gt, 3,
		"scp-task's scale-in protection calls to the ECS agent failed for 15 minutes: a busy task may be stopped mid-study (docs/operations/alarms.md)")
	alarm("ScpStoreFailures", storeFailures, 0, gt, 1, "C-STORE requests answered with a failure status (S3 unreachable or refusing writes)")
	if c.Dicom.TLS != nil {
		// A site whose certificate expired, or was revoked, fails every
		// handshake; the server certificate must be rotated before it expires.
		alarm("ScpTlsHandshakeFailures", ScpMetric(c.Name, MetricTLSHandshakeFailures, "Sum", awscdk.Duration_Minutes(jsii.Number(5))), 10, gt, 1,
			"More than 10 DICOM TLS handshakes failed in 5 minutes: a site's certificate expired, was revoked or is not ours, or a site speaks plain DICOM to the TLS port (the dashboard's TLS handshakes failed, by reason graph and the SCP's log name the reason)")
		alarm("ScpTlsCertificateExpiring", ScpMetric(c.Name, MetricTLSCertificateExpireIn, "Minimum", awscdk.Duration_Hours(jsii.Number(1))), 30*24*3600, lt, 1,
			"The DICOM TLS server certificate expires within 30 days: rotate it (docs/operations/certificates.md)")
		// The sites' certificates are theirs, not ours: the SCP sees each
		// when the site associates. Minimum: the soonest of any site, any
		// task; its log names the site (missing data: no site presented
		// one lately, nothing to warn of).
		alarm("ScpTlsClientCertificateExpiring", ScpMetric(c.Name, MetricTLSClientCertificateExpiresIn, "Minimum", awscdk.Duration_Hours(jsii.Number(1))), 30*24*3600, lt, 1,
			"A site's DICOM TLS client certificate expires within 30 days: issue the site a new one (docs/operations/certificates.md)")
		if c.Dicom.TLS.ClientCrlPEM != "" {
			// The list reaches the tasks only with a deployment, which
			// refuses a stale one; one deployed goes stale while in use
			// (still applied, but blind to later revocations). Minimum:
			// the earliest list of any CA, any task.
			alarm("ScpTlsClientCrlDue", ScpMetric(c.Name, MetricTLSClientCRLNextUpdateIn, "Minimum", awscdk.Duration_Hours(jsii.Number(1))), 3*24*3600, lt, 1,
				"A client CRL of dicom.tls.clientCrlFile is due for its next update within 3 days (negative: past it): publish a fresh CRL and deploy (docs/operations/certificates.md)")
		}
	}

	// A task that was killed or crashed (out of memory, a lost host, the
	// stop timeout's SIGKILL) lost the audit records it had not written:
	// a later start finds its run marker (on the staging file system, or
	// without scp.staging in the bucket under audit-runs/) and says so, in
	// its start record, its log and its counter; a running task that finds
	// one (it looks every quarter of the stale time) says so in an
	// unclean-stop-found record, its log and its counter. A start's count
	// comes before the agent's first scrape of it, its baseline: the
	// counter shows it from the second scrape (metricnames.HeldCounter),
	// so it is published; the log line is counted as well, for a task that
	// dies again before that scrape.
	alarm("ScpUncleanStop", ScpMetric(c.Name, MetricAuditUncleanStops, "Sum", minute), 0, gt, 1,
		"An scp-task run stopped uncleanly (killed, crashed): audit records it had not written are lost, a compliance event; the record of the task that found it (a start's unclean-stop, a running task's unclean-stop-found) names the run and the range (docs/operations/alarms.md)")
	alarm("ScpUncleanStopLogged", logLineMetric(self, "ScpUncleanStopFilter", ing.LogGroup, c.Name, MetricAuditUncleanStopLogLines, associationaudit.UncleanStopLog), 0, gt, 1,
		"scp-task logged that a previous run stopped uncleanly (killed, crashed): audit records it had not written are lost, a compliance event (docs/operations/alarms.md)")

	var stagingWidgets []awscloudwatch.IWidget
	if st := c.Scp.Staging; st != nil {
		// Staged objects are acknowledged and not yet in S3: an old
		// backlog means S3 uploads are failing; the tasks refuse new
		// associations at maxAgeMinutes.
		age := ScpMetric(c.Name, MetricStagingBacklogAge, "Maximum", minute)
		// A staging write that found no space (ENOSPC, EDQUOT) failed
		// its C-STORE (A700) and turned the task unready until the space
		// it needed is back; the tasks share the staging file system, so
		// when it is full every task is unready and every site's
		// associations are refused (02 03 01).
		alarm("StagingNoSpace", ScpMetric(c.Name, MetricStagingNoSpace, "Sum", minute), 0, gt, 1,
			"A staging write found no space on the staging file system: C-STOREs fail A700 and the task refuses associations until space is back (docs/operations/alarms.md)")
		alarm("StagingBacklogAge", age, float64(st.AlarmAgeSeconds), gt, 2,
			fmt.Sprintf("A staged object has waited over %d s for its upload to S3 (tasks refuse associations after %d min)", st.AlarmAgeSeconds, st.MaxAgeMinutes))
		stagingWidgets = append(stagingWidgets, awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{
			Title: jsii.String("Staging backlog, largest task (age s / bytes)"),
			Left:  &[]awscloudwatch.IMetric{age},
			Right: &[]awscloudwatch.IMetric{ScpMetric(c.Name, MetricStagingBacklogBytes, "Maximum", minute)},
			Width: jsii.Number(12),
		}))
	}
	nlbMetric := func(tg awselasticloadbalancingv2.NetworkTargetGroup, name, stat string) awscloudwatch.Metric {
		return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
			Namespace:  jsii.String("AWS/NetworkELB"),
			MetricName: jsii.String(name),
			DimensionsMap: &map[string]*string{
				"LoadBalancer": ing.LoadBalancer.LoadBalancerFullName(),
				"TargetGroup":  tg.TargetGroupFullName(),
			},
			Statistic: jsii.String(stat),
			Period:    minute,
		})
	}
	unhealthy := nlbMetric(ing.TargetGroup, "UnHealthyHostCount", "Maximum")
	healthy := nlbMetric(ing.TargetGroup, "HealthyHostCount", "Minimum")
	alarm("UnhealthyTargets", unhealthy, 0, gt, 3, "scp-task targets failing /readyz")
	targetMetrics := []awscloudwatch.IMetric{healthy, unhealthy}
	if tls := ing.TLSTargetGroup; tls != nil && tls != ing.TargetGroup {
		// The DICOM TLS port's target group runs the same check on the
		// same tasks, and is the only way in for the sites bound to a
		// certificate: its failures alarm too.
		unhealthyTLS := nlbMetric(tls, "UnHealthyHostCount", "Maximum")
		alarm("UnhealthyTlsTargets", unhealthyTLS, 0, gt, 3, "scp-task targets of the DICOM TLS port failing /readyz")
		targetMetrics = append(targetMetrics, unhealthyTLS)
	}
	alarm("TooFewHealthyTargets", healthy, float64(c.Scp.MinTasks), lt, 3,
		fmt.Sprintf("Fewer than %d healthy scp-task targets: redundancy across zones lost", c.Scp.MinTasks))

	dash := awscloudwatch.NewDashboard(self, jsii.String("Dashboard"), &awscloudwatch.DashboardProps{
		DefaultInterval: awscdk.Duration_Hours(jsii.Number(3)),
	})
	var tunnelMetrics []awscloudwatch.IMetric
	for _, conn := range props.Vpn.Connections {
		tunnelMetrics = append(tunnelMetrics, conn.TunnelDown.Metric())
	}
	dash.AddWidgets(
		awscloudwatch.NewAlarmStatusWidget(&awscloudwatch.AlarmStatusWidgetProps{
			Title:  jsii.String("Alarms"),
			Alarms: alarmRefs(out.Alarms),
			Width:  jsii.Number(24),
		}),
	)
	dash.AddWidgets(
		awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String("VPN tunnel state (1 = all up)"), Left: &tunnelMetrics, Width: jsii.Number(6)}),
		awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String("Associations open (per task) / rejected"), Left: &[]awscloudwatch.IMetric{activeMax, activeAvg}, Right: &[]awscloudwatch.IMetric{rejects}, Width: jsii.Number(6)}),
		awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String("Instances stored / failures"), Left: &[]awscloudwatch.IMetric{stored}, Right: &[]awscloudwatch.IMetric{storeFailures}, Width: jsii.Number(6)}),
		awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String("NLB targets"), Left: &targetMetrics, Width: jsii.Number(6)}),
	)
	dash.AddWidgets(
		awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String("Associations rejected, by reason"), Left: &[]awscloudwatch.IMetric{rejectsByReason}, Width: jsii.Number(12)}),
		awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String("C-STORE failures, by status"), Left: &[]awscloudwatch.IMetric{failuresByStatus}, Width: jsii.Number(12)}),
	)
	if c.Dicom.TLS != nil {
		// Which sites fail how: an expired or revoked certificate, another CA's, an old TLS version, plain DICOM.
		dash.AddWidgets(awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{
			Title: jsii.String("TLS handshakes failed, by reason"), Width: jsii.Number(12),
			Left: &[]awscloudwatch.IMetric{ScpMetricByLabel(c.Name, MetricTLSHandshakeFailures, "Sum", awscdk.Duration_Minutes(jsii.Number(5)))},
		}))
	}
	dash.AddWidgets(queueWidgets...)
	dash.AddWidgets(stagingWidgets...)
	dash.AddWidgets(
		awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String("Function errors"), Left: &fnErrors, Width: jsii.Number(6)}),
		// One graph each: both expressions name their metrics by operation.
		awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String("Audit table throttled"), Left: &[]awscloudwatch.IMetric{throttleMetrics[0]}, Width: jsii.Number(3)}),
		awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String("Index table throttled"), Left: &[]awscloudwatch.IMetric{throttleMetrics[1]}, Width: jsii.Number(3)}),
		awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String("scp-task CPU / memory"), Left: &[]awscloudwatch.IMetric{
			ing.Service.MetricCpuUtilization(nil), ing.Service.MetricMemoryUtilization(nil),
		}, Width: jsii.Number(12)}),
	)
	if feedMetrics != nil {
		dash.AddWidgets(awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{
			Title: jsii.String("Audit feed: backlog age (ms), DLQ, batches not delivered, errors"), Left: &[]awscloudwatch.IMetric{feedMetrics[0]}, Right: &[]awscloudwatch.IMetric{feedMetrics[1], feedMetrics[2], feedMetrics[3]}, Width: jsii.Number(12),
		}))
	}
	out.Dashboard = dash
	return out
}

// newAlarmTopicKey is the alarm topic's key, used for nothing else. SNS
// asks KMS for a data key under the topic's key for every message it
// takes, so a topic under the stack's key would lose every alarm the
// moment that key failed (disabled, pending deletion, its policy changed):
// the very failure that fails the SCP's writes, the functions and the bus,
// and that BusDlqNotEmpty is there to report (design/bus-dead-letter-key.md
// gave the bus's dead letters a key of their own for the same reason).
// Its policy is CDK's default (the account's kms:*) and the two services
// that publish to the topic: CloudWatch for this account's alarms, and
// EventBridge for the alert rules (deliverAlerts); neither can name the
// topic (it depends on the key: a cycle), so both name this account's
// topics by SNS's encryption context.
func newAlarmTopicKey(scope constructs.Construct, c *config.Config) awskms.Key {
	k := awskms.NewKey(scope, jsii.String("AlarmTopicKey"), &awskms.KeyProps{
		Description:       jsii.String("dicom-ingest " + c.Name + ": the alarm topic (alarms must reach the on-call engineer whatever befell the stack's key)"),
		EnableKeyRotation: jsii.Bool(true),
		PendingWindow:     awscdk.Duration_Days(jsii.Number(30)),
	})
	// Alarms publish to the encrypted topic: SNS asks KMS on the alarm's
	// behalf, for a topic (its ARN in the encryption context) of this
	// account, as the topic's own policy requires of the alarm
	// (aws:SourceArn).
	allowServiceDelivery(k, serviceDelivery{
		sid: "CloudWatchAlarms", service: "cloudwatch.amazonaws.com",
		actions:    []string{"kms:Decrypt", "kms:GenerateDataKey*"},
		contextKey: "kms:EncryptionContext:aws:sns:topicArn", contextArn: regionalArn("sns", "*"),
		sourceArns: []*string{regionalArn("cloudwatch", "alarm:*")},
	})
	return k
}

// alarmFunc adds an alarm on m to the alarm topic (NewObservability's).
type alarmFunc = func(id string, m awscloudwatch.Metric, threshold float64, op awscloudwatch.ComparisonOperator, periods float64, desc string)

// functionAlarms adds the alarms every function of the stack has, named
// id+"Errors" and id+"Throttles", and returns the errors metric: an
// invocation failed (errorsDesc says what that means for the function),
// and the function was throttled in each of 5 minutes, its reserved
// concurrency (pipeline.reservedConcurrency) too low for the load. The
// audit feed's function had no throttles alarm.
func functionAlarms(alarm alarmFunc, id, name string, fn awslambda.IFunction, errorsDesc string) awscloudwatch.Metric {
	minute := awscdk.Duration_Minutes(jsii.Number(1))
	gt := awscloudwatch.ComparisonOperator_GREATER_THAN_THRESHOLD
	errs := fn.MetricErrors(&awscloudwatch.MetricOptions{Period: minute, Statistic: jsii.String("Sum")})
	alarm(id+"Errors", errs, 0, gt, 1, errorsDesc)
	alarm(id+"Throttles", fn.MetricThrottles(&awscloudwatch.MetricOptions{Period: minute, Statistic: jsii.String("Sum")}),
		0, gt, 5, fmt.Sprintf("The %s function is throttled for 5 minutes: raise pipeline.reservedConcurrency", name))
	return errs
}

func alarmRefs(alarms []awscloudwatch.Alarm) *[]interfacesawscloudwatch.IAlarmRef {
	out := make([]interfacesawscloudwatch.IAlarmRef, len(alarms))
	for i, a := range alarms {
		out[i] = a
	}
	return &out
}
