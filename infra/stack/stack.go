// Package stack defines the dicom-ingest AWS infrastructure as CDK
// constructs: the isolated network with its site-to-site VPNs, the NLB and
// Fargate SCP service on the DICOM port, the encrypted storage, the Lambda
// pipeline with its tables and event bus, alarms, and the cdk-nag guardrails.
// Every construct is NewX(scope, id, props) *X with typed fields; nothing has
// a physical name, so environments coexist in one account.
package stack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsbackup"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Props configures NewIngestStack.
type Props struct {
	awscdk.StackProps
	Config *config.Config
	// FunctionsDir holds <name>/bootstrap for each of FunctionNames (what
	// `make build-functions` writes to build/functions).
	FunctionsDir string
	// ScpContextDir is the scp-task image's Docker build context (the
	// repository root) and ScpDockerfile its Dockerfile relative to it.
	ScpContextDir string
	ScpDockerfile string
	// AgentContextDir holds the metrics sidecar's Dockerfile
	// (infra/assets/metrics-agent).
	AgentContextDir string
}

// IngestStack is one environment of dicom-ingest.
type IngestStack struct {
	awscdk.Stack
	Config        *config.Config
	Storage       *Storage
	Network       *Network
	Vpn           *SiteVpn
	Ingest        *Ingest
	Pipeline      *Pipeline
	Observability *Observability
}

// NewIngestStack builds the whole environment described by props.Config.
func NewIngestStack(scope constructs.Construct, id string, props *Props) (*IngestStack, error) {
	c := props.Config
	if c == nil {
		return nil, fmt.Errorf("stack: new: no config")
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("stack: new: %w", err)
	}
	if err := checkAssets(props); err != nil {
		return nil, err
	}
	sp := props.StackProps
	if sp.Env == nil {
		sp.Env = &awscdk.Environment{Account: jsii.String(c.Account), Region: jsii.String(c.Region)}
	}
	if sp.Description == nil {
		sp.Description = jsii.String("dicom-ingest " + c.Name + ": DICOM C-STORE over site-to-site VPN into S3, Lambda pipeline, audit trail and events")
	}
	st := awscdk.NewStack(scope, jsii.String(id), &sp)
	// Answer the availability-zone look-up from the config, as a
	// cdk.context.json entry would: synth stays offline and credential-free.
	azs := make([]any, len(c.AvailabilityZones))
	for i, az := range c.AvailabilityZones {
		azs[i] = az
	}
	st.Node().SetContext(jsii.String(fmt.Sprintf("availability-zones:account=%s:region=%s", c.Account, c.Region)), azs)
	awscdk.Tags_Of(st).Add(jsii.String("dicom-ingest:environment"), jsii.String(c.Name), nil)

	out := &IngestStack{Stack: st, Config: c}
	out.Storage = NewStorage(st, "Storage", &StorageProps{Config: c})
	out.Network = NewNetwork(st, "Network", &NetworkProps{Config: c, Key: out.Storage.Key})
	out.Vpn = NewSiteVpn(st, "Vpn", &SiteVpnProps{Config: c, Network: out.Network, Key: out.Storage.Key})
	out.Ingest = NewIngest(st, "Ingest", &IngestProps{
		Config: c, Network: out.Network, Storage: out.Storage, Vpn: out.Vpn,
		ScpContextDir: props.ScpContextDir, ScpDockerfile: props.ScpDockerfile, AgentContextDir: props.AgentContextDir,
	})
	out.Pipeline = NewPipeline(st, "Pipeline", &PipelineProps{
		Config: c, Network: out.Network, Storage: out.Storage, FunctionsDir: props.FunctionsDir,
	})
	if sg := out.Ingest.Staging; sg != nil && c.Scp.Staging.Backups {
		// The stack's daily plan, vault and retention, as for the tables.
		out.Pipeline.BackupPlan.AddSelection(jsii.String("Staging"), &awsbackup.BackupSelectionOptions{
			Resources: &[]awsbackup.BackupResource{awsbackup.BackupResource_FromEfsFileSystem(sg.FileSystem)},
		})
	}
	out.Observability = NewObservability(st, "Observability", &ObservabilityProps{
		Config: c, Storage: out.Storage, Vpn: out.Vpn, Ingest: out.Ingest, Pipeline: out.Pipeline,
	})
	out.outputs(c)
	providerLogs(out)
	suppress(out)
	return out, nil
}

// providerLogs gives each Lambda function without a log group of its own a
// log group with the environment's retention under the stack's key: the
// functions of CDK's custom-resource providers (the S3 notifications'
// handler, AwsCustomResource's singleton, the default security group's
// restriction), which would otherwise log to /aws/lambda/<name>, created by
// Lambda on first use, never expiring and not under the key. Their
// LoggingConfig names the group (Lambda sends a function's logs to the log
// group LoggingConfig.LogGroup names: "Configuring CloudWatch log groups",
// AWS Lambda Developer Guide,
// https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-loggroups.html);
// their roles already may write any log group (AWSLambdaBasicExecutionRole).
// CDK's logRetention prop would not do: it adds a custom resource, a
// function of its own, to set the retention, and sets no key. Run once
// every construct exists: a function added later is not covered, which
// TestEveryFunctionLogsUnderRetentionAndKey reports.
func providerLogs(s *IngestStack) {
	c := s.Config
	for _, node := range *s.Stack.Node().FindAll(constructs.ConstructOrder_PREORDER) {
		res, ok := node.(awscdk.CfnResource)
		if !ok || *res.CfnResourceType() != "AWS::Lambda::Function" {
			continue
		}
		if fn, ok := node.(awslambda.CfnFunction); ok && fn.LoggingConfig() != nil {
			continue // one of ours, with its own log group
		}
		scope, ok := node.Node().Scope().(constructs.Construct)
		if !ok {
			continue // the function is a construct's child; never at the top
		}
		logs := awslogs.NewLogGroup(scope, jsii.String("Logs"), &awslogs.LogGroupProps{
			EncryptionKey: s.Storage.Key,
			Retention:     retention(c.LogRetentionDays),
			RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
		})
		res.AddPropertyOverride(jsii.String("LoggingConfig.LogGroup"), logs.LogGroupName())
	}
}

// checkAssets reports missing build outputs as errors; jsii would panic on
// them halfway through building the stack.
func checkAssets(props *Props) error {
	need := map[string]string{
		filepath.Join(props.ScpContextDir, props.ScpDockerfile): "the scp-task Dockerfile (context scpContext, file scpDockerfile)",
		filepath.Join(props.AgentContextDir, "Dockerfile"):      "the metrics sidecar's Dockerfile (context agentContext)",
	}
	names := FunctionNames
	if props.Config.Audit.Syslog != nil {
		names = append(slices.Clone(names), FnAuditFeed)
	}
	for _, name := range names {
		need[filepath.Join(props.FunctionsDir, name, "bootstrap")] = "the " + name + " function (run make build-functions)"
	}
	var errs []error
	for path, what := range need {
		if fi, err := os.Stat(path); err != nil || fi.IsDir() {
			errs = append(errs, fmt.Errorf("stack: new: %s: %s is missing", path, what))
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

func (s *IngestStack) output(id string, value *string, desc string) {
	awscdk.NewCfnOutput(s.Stack, jsii.String(id), &awscdk.CfnOutputProps{Value: value, Description: jsii.String(desc)})
}

func (s *IngestStack) outputs(c *config.Config) {
	nlb := s.Ingest.LoadBalancer
	s.output("NlbDnsName", nlb.LoadBalancerDnsName(), fmt.Sprintf("DICOM endpoint (TCP %d) inside the VPC; give sites the addresses below", c.Dicom.Port))
	s.output("DicomPort", jsii.String(fmt.Sprint(c.Dicom.Port)), "DICOM port of the listener")
	s.output("CalledAETitle", jsii.String(c.Dicom.AETitle), "AE title sites must call")
	if t := c.Dicom.TLS; t != nil {
		s.output("DicomTlsPort", jsii.String(fmt.Sprint(t.Port)), "DICOM-over-TLS port of the listener (TLS terminates in the tasks)")
	}
	s.output("NlbAddresses", jsii.String(strings.Join(s.Ingest.Addresses, ",")), "Fixed private IPs of the NLB, one per zone: the DICOM destination sites configure")
	s.output("NlbArn", nlb.LoadBalancerArn(), "NLB ARN")
	s.output("VpcCidr", jsii.String(c.VpcCidr), "VPC CIDR: the cloud side of the sites' VPN traffic selectors")
	for _, conn := range s.Vpn.Connections {
		name := strings.ReplaceAll(conn.Site.Name, "-", "")
		s.output("VpnConnection"+name, conn.Connection.Ref(), "VPN connection id of site "+conn.Site.Name+" (download its device configuration with this id)")
		s.output("VpnPsk"+name, jsii.String(*conn.PreSharedKeys[0].SecretArn()+" "+*conn.PreSharedKeys[1].SecretArn()),
			"Secrets Manager ARNs of the tunnel 1 and 2 pre-shared keys of site "+conn.Site.Name)
	}
	if s.Vpn.ClientVpn != nil {
		s.output("ClientVpnEndpoint", s.Vpn.ClientVpn.EndpointId(), "Client VPN endpoint id (export the client configuration with this id)")
	}
	s.output("BucketName", s.Storage.Bucket.BucketName(), "DICOM bucket (incoming/, audit/, metadata/, quarantine/)")
	s.output("KeyArn", s.Storage.Key.KeyArn(), "KMS key of the bucket, tables and logs")
	s.output("BackupVaultName", s.Pipeline.BackupVault.BackupVaultName(), "AWS Backup vault of the tables' (and the staging file system's) recovery points")
	s.output("BackupKeyArn", s.Storage.BackupKey.KeyArn(), "KMS key of the backup vault, used by AWS Backup only")
	s.output("LogNameKeyArn", s.Storage.LogNameKey.SecretArn(), "Secrets Manager ARN of the key logs name objects with (docs/operations/logging.md)")
	s.output("AuditTableName", s.Pipeline.AuditTable.TableName(), "Append-only audit table")
	s.output("IndexTableName", s.Pipeline.IndexTable.TableName(), "Study/series/instance index table")
	s.output("EventBusName", s.Pipeline.Bus.EventBusName(), "Event bus; rules match source "+pipeline.EventSource)
	s.output("EventBusArn", s.Pipeline.Bus.EventBusArn(), "Event bus ARN")
	s.output("AlarmTopicArn", s.Observability.Topic.TopicArn(), "SNS topic receiving every alarm")
	s.output("AlarmTopicKeyArn", s.Observability.TopicKey.KeyArn(), "KMS key of AlarmTopicArn's topic, used for nothing else")
	// What the runbook's commands name (docs/operations/alarms.md): the
	// service and its target groups (UnhealthyTargets, TooFewHealthyTargets,
	// ScpTaskProtectionFailures), the SCP's log group, and each queue a
	// dead-letter alarm has the operator redrive, purge or send to.
	ing := s.Ingest
	s.output("ScpClusterName", ing.Cluster.ClusterName(), "ECS cluster of the scp-task service")
	s.output("ScpServiceName", ing.Service.ServiceName(), "ECS service of the scp-task tasks")
	s.output("ScpTargetGroupArn", ing.TargetGroup.TargetGroupArn(), "NLB target group of the tasks (its health check calls /readyz)")
	if ing.TLSTargetGroup != nil && ing.TLSTargetGroup != ing.TargetGroup {
		s.output("ScpTlsTargetGroupArn", ing.TLSTargetGroup.TargetGroupArn(), "NLB target group of the tasks' DICOM TLS port (its health check calls /readyz)")
	}
	s.output("ScpLogGroupName", ing.LogGroup.LogGroupName(), "Log group of scp-task and its metrics agent")
	for _, name := range FunctionNames {
		q, ok := s.Pipeline.Queues[name]
		if !ok {
			continue
		}
		fn := strings.ToUpper(name[:1]) + name[1:]
		s.output(fn+"QueueUrl", q.Queue.QueueUrl(), "Queue of the "+name+" function (S3 notifications)")
		s.output(fn+"DlqUrl", q.Dlq.QueueUrl(), "Dead-letter queue of "+fn+"QueueUrl (alarm "+name+"DlqNotEmpty)")
	}
	s.output("NotifyDlqUrl", s.Pipeline.NotifyDlq.QueueUrl(), "Failed scheduled notify runs (alarm NotifyDlqNotEmpty)")
	s.output("CommitmentScheduleDlqUrl", s.Pipeline.CommitmentScheduleDlq.QueueUrl(), "Failed scheduled commitment runs (alarm CommitmentScheduleDlqNotEmpty)")
	s.output("BusDlqUrl", s.Pipeline.BusDlq.QueueUrl(), "Events the bus could not encrypt or decrypt with KeyArn (alarm BusDlqNotEmpty)")
	s.output("BusDlqKeyArn", s.Pipeline.BusDlqKey.KeyArn(), "KMS key of BusDlqUrl's queue: who re-sends its events needs kms:Decrypt on it through SQS")
	if f := s.Pipeline.AuditFeed; f != nil {
		s.output("AuditFeedFunctionName", f.Function.FunctionName(), "Audit feed function (audit table stream to the syslog collector); invoke it to re-send records")
		s.output("AuditFeedDlqUrl", f.Dlq.QueueUrl(), "Stream batches the audit feed could not deliver within 23 hours")
	}
}

// ApplyNag runs the AwsSolutions and HIPAA Security rule packs over scope
// (normally the app). Findings become error annotations at synth, which
// `cdk synth` reports and the tests assert are absent.
func ApplyNag(scope constructs.IConstruct) {
	awscdk.Aspects_Of(scope).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)
	awscdk.Aspects_Of(scope).Add(cdknag.NewHIPAASecurityChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)
}

// AppContext is the context every dicom-ingest app starts with (pass it to
// awscdk.NewApp): the feature flags the constructs were written against, set
// in code so that tests and `cdk synth` produce the same template.
func AppContext() *map[string]any {
	return &map[string]any{
		"@aws-cdk/aws-ec2:restrictDefaultSecurityGroup":   true,
		"@aws-cdk/aws-iam:minimizePolicies":               true,
		"@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": true,
		"@aws-cdk/core:checkSecretUsage":                  true,
		"@aws-cdk/core:target-partitions":                 []string{"aws"},
	}
}
