package stack

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsbackup"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// nagRule is one suppression: a rule id, why it does not apply or is
// accepted, and optionally the findings (IAM resources or actions) it
// covers; an empty appliesTo suppresses the rule for the construct.
type nagRule struct {
	id, reason string
	appliesTo  []string
}

// suppressOn records suppressions on c and its children.
func suppressOn(c constructs.IConstruct, rules ...nagRule) {
	var s []*cdknag.NagPackSuppression
	for _, r := range rules {
		ns := &cdknag.NagPackSuppression{Id: jsii.String(r.id), Reason: jsii.String(r.reason)}
		if len(r.appliesTo) > 0 {
			at := make([]any, len(r.appliesTo))
			for i, a := range r.appliesTo {
				at[i] = a
			}
			ns.AppliesTo = &at
		}
		s = append(s, ns)
	}
	cdknag.NagSuppressions_AddResourceSuppressions(c, &s, jsii.Bool(true))
}

// suppress records every accepted finding with its reason. Suppressions
// are attached to the narrowest construct that carries the finding, so a
// new resource with the same problem is still reported.
func suppress(s *IngestStack) {
	cdknag.NagSuppressions_AddStackSuppressions(s.Stack, &[]*cdknag.NagPackSuppression{{
		Id: jsii.String("HIPAA.Security-IAMNoInlinePolicy"),
		Reason: jsii.String("Policies come from CDK Grant* calls and explicit statements scoped to single resources and attached to the one role " +
			"that needs them; inline keeps each policy's lifecycle bound to its role, which customer-managed policies would not"),
	}}, jsii.Bool(true))

	// Storage.
	suppressOn(s.Storage.Bucket, nagRule{id: "HIPAA.Security-S3BucketReplicationEnabled",
		reason: "Single-region deployment: durability comes from S3 (11 nines), versioning and optional Object Lock; cross-region " +
			"replication needs a second region's key and bucket and is an operator decision, not a default"})
	suppressOn(s.Storage.LogBucket,
		nagRule{id: "HIPAA.Security-S3BucketReplicationEnabled", reason: "Server access logs of the DICOM bucket; replicating them is not required"},
		nagRule{id: "HIPAA.Security-S3DefaultEncryptionKMS", reason: "S3 server access logs can only be delivered to buckets encrypted with SSE-S3. The logs name every object key, " +
			"and keys hold Study/Series/SOP Instance UIDs: read access to this bucket is to be granted like access to the data (docs/operations/deploy.md)"},
	)

	// VPN pre-shared keys.
	for _, conn := range s.Vpn.Connections {
		for _, psk := range conn.PreSharedKeys {
			suppressOn(psk,
				nagRule{id: "AwsSolutions-SMG4", reason: "A tunnel's pre-shared key must change together with the site's VPN device configuration; " +
					"it is rotated as a coordinated change (see docs/operations/sites.md, rotating a pre-shared key), not by a Lambda on a timer"},
				nagRule{id: "HIPAA.Security-SecretsManagerRotationEnabled", reason: "VPN pre-shared keys are rotated as a coordinated change with the site (see docs/operations/sites.md, rotating a pre-shared key)"},
			)
		}
	}

	// The log-name key.
	suppressOn(s.Storage.LogNameKey,
		nagRule{id: "AwsSolutions-SMG4", reason: "Rotating the log-name key renames every object in the logs: names in lines written before " +
			"could only be traced with the old key. It is rotated by hand, keeping the old value for the log retention period " +
			"(see docs/operations/logging.md), not by a Lambda on a timer"},
		nagRule{id: "HIPAA.Security-SecretsManagerRotationEnabled", reason: "Rotating the log-name key renames every object in the logs; " +
			"it is rotated by hand, keeping the old value for the log retention period (see docs/operations/logging.md)"},
	)

	// Load balancer.
	nlbRules := []nagRule{
		{id: "AwsSolutions-ELB2", reason: "NLB access logs exist only for TLS listeners; this is a TCP listener. Connections are recorded by VPC flow logs and the SCP's association audit records"},
		{id: "HIPAA.Security-ELBLoggingEnabled", reason: "NLB access logs exist only for TLS listeners; VPC flow logs and the SCP's audit records cover the TCP listener"},
	}
	if !s.Config.DeletionProtection {
		nlbRules = append(nlbRules, nagRule{id: "HIPAA.Security-ELBDeletionProtectionEnabled",
			reason: "deletionProtection is off in this environment's config so that it can be torn down; the load balancer holds no data"})
	}
	suppressOn(s.Ingest.LoadBalancer, nlbRules...)
	if s.Config.PlainListenerEnabled() {
		suppressOn(s.Ingest.Listener, nagRule{id: "HIPAA.Security-ELBv2ACMCertificateRequired",
			reason: "DICOM arrives as TCP inside the site's IPsec tunnel (AES-256) and is passed through unmodified so the SCP can negotiate it; " +
				"terminating TLS at the NLB would add nothing on an encrypted private path"})
	}
	if s.Ingest.TLSListener != nil {
		suppressOn(s.Ingest.TLSListener, nagRule{id: "HIPAA.Security-ELBv2ACMCertificateRequired",
			reason: "DICOM over TLS is passed through as TCP and terminates in the task (server certificate from Secrets Manager), so the " +
				"site's client certificate reaches the SCP, which binds it to the calling AE title; TLS ending at the NLB would lose that identity"})
	}

	// Task.
	suppressOn(s.Ingest.TaskDefinition, nagRule{id: "AwsSolutions-ECS2",
		reason: "The environment variables are the SCP's non-secret settings (listen addresses, AE titles, bucket, key ARN, the public client CA " +
			"certificates); its secrets, the log-name key and the TLS certificate and key, come from Secrets Manager through the container's secrets, not the environment"})
	suppressOn(s.Ingest.TaskRole, nagRule{id: "AwsSolutions-IAM5",
		reason: "Objects are written under generated keys below the incoming/, audit/ and commitment/requests/ prefixes, and run markers named by process instance ids below audit-runs/; the wildcard is limited to those prefixes",
		appliesTo: []string{"Resource::<" + s.logicalID(s.Storage.Bucket) + ".Arn>/incoming/*", "Resource::<" + s.logicalID(s.Storage.Bucket) + ".Arn>/audit/*",
			"Resource::<" + s.logicalID(s.Storage.Bucket) + ".Arn>/" + PrefixCommitmentRequests + "*",
			"Resource::<" + s.logicalID(s.Storage.Bucket) + ".Arn>/" + PrefixRunMarkers + "*"}},
		nagRule{id: "AwsSolutions-IAM5",
			reason: "ecs:UpdateTaskProtection, for the task to protect itself from scale-in while it holds associations (through the ECS agent, " +
				"with the task role); task ARNs are known only at run time, so the wildcard is limited to the tasks of this service's cluster",
			appliesTo: []string{"Resource::arn:<AWS::Partition>:ecs:" + s.Config.Region + ":" + s.Config.Account + ":task/<" + s.logicalID(s.Ingest.Cluster) + ">/*"}})
	suppressOn(s.Ingest.TaskDefinition.ExecutionRole(), nagRule{id: "AwsSolutions-IAM5",
		reason: "ecr:GetAuthorizationToken only accepts Resource *; the image pull and log actions are scoped by CDK", appliesTo: []string{"Resource::*"}})

	// Pipeline.
	p := s.Pipeline
	suppressOn(p.BusDlq, nagRule{id: "AwsSolutions-SQS3", reason: "This queue is the event bus's dead-letter queue"})
	suppressOn(p.NotifyDlq, nagRule{id: "AwsSolutions-SQS3", reason: "This queue is the dead-letter queue of the notify schedule target and the notify function's on-failure destination"})
	suppressOn(p.CommitmentScheduleDlq, nagRule{id: "AwsSolutions-SQS3", reason: "This queue is the dead-letter queue of the commitment schedule target and the commitment function's on-failure destination for its scheduled runs"})
	bucketArn := "<" + s.logicalID(s.Storage.Bucket) + ".Arn>"
	for name, fn := range p.Functions {
		suppressOn(fn,
			nagRule{id: "HIPAA.Security-LambdaDLQ", reason: "Invoked through SQS event source mappings whose queues have redrive dead-letter queues " +
				"(notify, and commitment's schedule: through schedule rule targets with their own DLQs); an asynchronous-invocation DLQ would never receive anything"},
			nagRule{id: "AwsSolutions-IAM4", reason: "AWSLambdaBasicExecutionRole and AWSLambdaVPCAccessExecutionRole are the AWS-maintained minimal policies for logging and VPC ENIs",
				appliesTo: []string{
					"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
					"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
				}},
			nagRule{id: "AwsSolutions-IAM5", reason: "The " + name + " function's statements (functionAccess): object actions on its prefixes of the DICOM bucket, " +
				"whose keys are generated; kms:GenerateDataKey* only through DynamoDB (kms:ViaService), which asks for the key on the caller's behalf",
				appliesTo: []string{
					"Action::kms:GenerateDataKey*",
					"Resource::" + bucketArn + "/" + PrefixIncoming + "*",
					"Resource::" + bucketArn + "/" + PrefixAudit + "*",
					"Resource::" + bucketArn + "/" + PrefixQuarantine + "*",
					"Resource::" + bucketArn + "/" + PrefixMetadata + "*",
					"Resource::" + bucketArn + "/" + PrefixCommitmentRequests + "*",
					"Resource::" + bucketArn + "/" + PrefixCommitmentResults + "*",
				}},
		)
	}
	if f := p.AuditFeed; f != nil {
		suppressOn(f.Dlq, nagRule{id: "AwsSolutions-SQS3", reason: "This queue is the on-failure destination of the audit feed's stream event source"})
		suppressOn(f.Function,
			nagRule{id: "HIPAA.Security-LambdaDLQ", reason: "Invoked by a DynamoDB stream event source mapping, whose on-failure destination is an SQS queue; " +
				"an asynchronous-invocation DLQ would never receive anything"},
			nagRule{id: "AwsSolutions-IAM4", reason: "AWSLambdaBasicExecutionRole and AWSLambdaVPCAccessExecutionRole are the AWS-maintained minimal policies for logging and VPC ENIs",
				appliesTo: []string{
					"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
					"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
				}},
			nagRule{id: "AwsSolutions-IAM5", reason: "dynamodb:ListStreams takes no resource; the stream actions are scoped to the audit table's stream",
				appliesTo: []string{"Resource::*"}},
		)
	}
	if st := s.Ingest.Staging; st != nil && !s.Config.Scp.Staging.Backups {
		suppressOn(st.FileSystem, nagRule{id: "HIPAA.Security-EFSInBackupPlan",
			reason: "scp.staging.backups is off in this environment's config: staged objects stay there only until S3 holds them (seconds to minutes), and S3 is the copy that is kept and versioned"})
	}
	for _, plan := range []awsbackup.BackupPlan{p.BackupPlan, p.AuditBackupPlan} {
		suppressOn(plan, nagRule{id: "AwsSolutions-IAM4",
			reason:    "AWSBackupServiceRolePolicyForBackup is the AWS-maintained policy AWS Backup needs to back up the tables (and the staging file system)",
			appliesTo: []string{"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup"}})
	}

	// The deploy-time look-up of S3's prefix list (CDK's AwsCustomResource)
	// and the singleton function CDK runs it with.
	for _, lookup := range []constructs.IConstruct{s.Network.S3PrefixListLookup, s.Network.DynamoDBPrefixListLookup} {
		suppressOn(lookup, nagRule{id: "AwsSolutions-IAM5",
			reason:    "ec2:DescribeManagedPrefixLists supports no resource-level permissions; it is the only action granted",
			appliesTo: []string{"Resource::*"}})
	}
	if fn := s.Stack.Node().TryFindChild(jsii.String(awsCustomResourceSingletonID)); fn != nil {
		suppressOn(fn,
			nagRule{id: "AwsSolutions-IAM4", reason: "CDK-provided handler run by CloudFormation at deploy time; it uses the AWS-maintained basic execution policy",
				appliesTo: []string{"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}},
			nagRule{id: "HIPAA.Security-LambdaConcurrency", reason: "Deploy-time handler that CloudFormation invokes once per stack change, never on the data path"},
			nagRule{id: "HIPAA.Security-LambdaDLQ", reason: "CloudFormation invokes it synchronously and fails the deployment when it fails; there is no asynchronous event to lose"},
			nagRule{id: "HIPAA.Security-LambdaInsideVPC", reason: "It reads a public AWS-managed prefix list id from EC2's API, which the isolated VPC has no endpoint for; it handles no patient data"},
		)
	}

	// CDK's own custom resource that configures the bucket notifications
	// (it avoids the bucket/queue-policy dependency cycle).
	for _, child := range *s.Stack.Node().Children() {
		if id := *child.Node().Id(); len(id) > 26 && id[:26] == "BucketNotificationsHandler" {
			suppressOn(child, nagRule{id: "AwsSolutions-IAM4",
				reason:    "CDK-provided handler that sets the bucket's notification configuration at deploy time; it uses the AWS-maintained basic execution policy",
				appliesTo: []string{"Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}})
		}
	}
}

// awsCustomResourceSingletonID is the construct id of the function CDK
// creates once per stack to run every AwsCustomResource.
const awsCustomResourceSingletonID = "AWS679f53fac002430cb0da5b7982bd2287"

// logicalID is the CloudFormation logical id of a construct's default
// resource, as cdk-nag prints it in IAM findings.
func (s *IngestStack) logicalID(c constructs.IConstruct) string {
	res, ok := c.Node().DefaultChild().(awscdk.CfnElement)
	if !ok {
		return ""
	}
	return *s.Stack.GetLogicalId(res)
}
