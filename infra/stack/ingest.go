package stack

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapplicationautoscaling"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecrassets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsecs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awselasticloadbalancingv2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
)

// Ports of the scp-task container.
const (
	ScpPort    = 11112 // DICOM (SCP_LISTEN)
	ScpTLSPort = 2762  // DICOM over TLS (SCP_TLS_LISTEN), with dicom.tls
	HealthPort = 8081  // /healthz, /readyz, /metrics (SCP_HEALTH_LISTEN)
)

// Target group attributes of the NLB's handling of a target that fails its
// health check.
const (
	TargetUnhealthyConnectionTermination = "target_health_state.unhealthy.connection_termination.enabled"
	TargetUnhealthyDrainingInterval      = "target_health_state.unhealthy.draining_interval_seconds"
)

// SCP metrics as the CloudWatch agent sidecar publishes them from the SCP's
// Prometheus endpoint (scp-task/internal/metrics), in MetricsNamespace with
// the dimension Environment=<env name>; those of metricnames.Dimensions
// also with their label (scpDeclarations).
const (
	MetricsNamespace          = "DicomIngest/SCP"
	MetricActiveAssociations  = metricnames.AssociationsActive
	MetricRejectedAssociation = metricnames.AssociationsRejected
	MetricStoreFailures       = metricnames.StoreFailures
	MetricObjectsStored       = metricnames.ObjectsStored
	// MetricAuditRecordsLost: association audit records never written.
	MetricAuditRecordsLost = metricnames.AuditRecordsLost
	// MetricAuditRefusalsFolded: refused connections written as part of a
	// record standing for several (a flood; ScpRejects and
	// ScpTlsHandshakeFailures alarm on the refusals themselves).
	MetricAuditRefusalsFolded = metricnames.AuditRefusalsFolded
	// MetricAuditUncleanStops: runs a task found stopped uncleanly, at its
	// start or while it runs.
	MetricAuditUncleanStops = metricnames.AuditUncleanStops
	// MetricTaskProtectionFailures: failed scale-in protection calls.
	MetricTaskProtectionFailures = metricnames.TaskProtectionFailures
	// With dicom.tls only.
	MetricTLSHandshakeFailures   = metricnames.TLSHandshakeFailures
	MetricTLSCertificateExpireIn = metricnames.TLSCertificateExpiresIn
	// MetricTLSClientCRLNextUpdateIn: none without dicom.tls.clientCrlFile.
	MetricTLSClientCRLNextUpdateIn = metricnames.TLSClientCRLNextUpdateIn
	// MetricTLSClientCertificateExpiresIn: none until a site presented a
	// client certificate (within the last 7 days).
	MetricTLSClientCertificateExpiresIn = metricnames.TLSClientCertificateExpiresIn
	// With scp.staging only.
	MetricStagingBacklogAge   = metricnames.StagingBacklogAge
	MetricStagingBacklogBytes = metricnames.StagingBacklogBytes
	MetricStagingNoSpace      = metricnames.StagingNoSpace
	// MetricStagingParked: objects whose upload keeps failing other than
	// transiently; MetricStagingAdopted: objects taken over from a task
	// that stopped (the runbook's StagingBacklogAge and a killed task).
	MetricStagingParked  = metricnames.StagingParkedObjects
	MetricStagingAdopted = metricnames.StagingAdopted
	// MetricAuditWritable and MetricTaskProtected: the state the runbook
	// reads for UnhealthyTargets and a deployment waiting on a busy task.
	MetricAuditWritable = metricnames.AuditWritable
	MetricTaskProtected = metricnames.TaskProtected
	// MetricAuditQueueLength: audit records a task has not written, what
	// its exit would lose (ScpAuditRecordsLost, UnhealthyTargets).
	MetricAuditQueueLength = metricnames.AuditQueueLength
	// MetricConnectionsShed: connections closed before asking for an
	// association, which leave no audit record (a flood; ScpRejects).
	MetricConnectionsShed = metricnames.ConnectionsShed
	// MetricS3Retries: the S3 store's requests retried, S3 failing
	// or throttling as the tasks see it (ScpStoreFailures,
	// UnhealthyTargets). Its op label is summed over.
	MetricS3Retries = metricnames.S3Retries
)

// IngestProps configures NewIngest.
type IngestProps struct {
	Config  *config.Config
	Network *Network
	Storage *Storage
	Vpn     *SiteVpn
	// ScpContextDir is the Docker build context of the scp-task image (the
	// repository root) and ScpDockerfile the Dockerfile relative to it.
	ScpContextDir string
	ScpDockerfile string
	// AgentContextDir holds the CloudWatch agent sidecar's Dockerfile.
	AgentContextDir string
}

// Ingest is the DICOM front door: an internal NLB on the DICOM port (and,
// with dicom.tls, on the DICOM-over-TLS port, forwarded as TCP so TLS
// terminates in the task) and the Fargate service running scp-task behind
// it.
type Ingest struct {
	constructs.Construct
	LoadBalancer awselasticloadbalancingv2.NetworkLoadBalancer
	// Listener and TargetGroup are the plain DICOM port's, or the TLS port's
	// when the plain listener is off; TLSListener and TLSTargetGroup are the
	// TLS port's (nil without dicom.tls).
	Listener       awselasticloadbalancingv2.NetworkListener
	TargetGroup    awselasticloadbalancingv2.NetworkTargetGroup
	TLSListener    awselasticloadbalancingv2.NetworkListener
	TLSTargetGroup awselasticloadbalancingv2.NetworkTargetGroup
	Cluster        awsecs.Cluster
	Service        awsecs.FargateService
	TaskDefinition awsecs.FargateTaskDefinition
	TaskRole       awsiam.Role
	// LbSecurityGroup admits the sites; TaskSecurityGroup admits the NLB.
	LbSecurityGroup   awsec2.SecurityGroup
	TaskSecurityGroup awsec2.SecurityGroup
	LogGroup          awslogs.LogGroup
	// Addresses are the NLB's fixed private IPv4 addresses, one per zone.
	Addresses []string
	// Environment is the scp-task container's environment, Secrets its
	// variables from Secrets Manager (the log-name key; the TLS certificate
	// and key).
	Environment map[string]*string
	Secrets     map[string]awsecs.Secret
	// TLSSecret is the server certificate's secret (nil without dicom.tls).
	TLSSecret awssecretsmanager.ISecret
	// Staging is the EFS file system objects are staged on (nil: the
	// tasks answer once S3 holds an object).
	Staging *Staging
}

// NewIngest creates the NLB, the task definition and the service.
func NewIngest(scope constructs.Construct, id string, props *IngestProps) *Ingest {
	c := props.Config
	self := constructs.NewConstruct(scope, jsii.String(id))
	vpc := props.Network.Vpc
	out := &Ingest{Construct: self}

	// Security groups. The NLB admits the DICOM port from the site CIDRs
	// (and the Client VPN endpoint) only; the tasks admit traffic from the
	// NLB only, or from the sites directly when client IPs are preserved.
	lbSG := awsec2.NewSecurityGroup(self, jsii.String("LbSG"), &awsec2.SecurityGroupProps{
		Vpc:              vpc,
		Description:      jsii.String("DICOM NLB: the DICOM port from the configured site CIDRs only"),
		AllowAllOutbound: jsii.Bool(false),
	})
	// The ports open: the plain DICOM port and/or the TLS one, each as the
	// NLB listens on it and as the task does.
	type portPair struct {
		what       string
		nlb, task  awsec2.Port
		taskNumber int
	}
	var ports []portPair
	if c.PlainListenerEnabled() {
		ports = append(ports, portPair{"DICOM", awsec2.Port_Tcp(jsii.Number(float64(c.Dicom.Port))), awsec2.Port_Tcp(jsii.Number(ScpPort)), ScpPort})
	}
	if t := c.Dicom.TLS; t != nil {
		ports = append(ports, portPair{"DICOM TLS", awsec2.Port_Tcp(jsii.Number(float64(t.Port))), awsec2.Port_Tcp(jsii.Number(ScpTLSPort)), ScpTLSPort})
	}
	for _, pp := range ports {
		for _, site := range c.Sites {
			for _, cidr := range site.Cidrs {
				lbSG.AddIngressRule(awsec2.Peer_Ipv4(jsii.String(cidr)), pp.nlb, jsii.String(pp.what+" from site "+site.Name), nil)
			}
		}
		if props.Vpn != nil && props.Vpn.ClientVpnSecurityGroup != nil {
			lbSG.Connections().AllowFrom(props.Vpn.ClientVpnSecurityGroup, pp.nlb, jsii.String(pp.what+" from Client VPN"))
		}
	}
	taskSG := awsec2.NewSecurityGroup(self, jsii.String("TaskSG"), &awsec2.SecurityGroupProps{
		Vpc:              vpc,
		Description:      jsii.String("scp-task: DICOM and health checks from the NLB; HTTPS to the VPC endpoints only"),
		AllowAllOutbound: jsii.Bool(false),
	})
	// The task only answers associations (it offers no service that calls
	// a site back) and talks to AWS: S3 for objects and ECR's image layers
	// through the gateway endpoint, and ECR, logs, KMS, STS and Secrets
	// Manager through the interface endpoints. Nothing else, and nothing
	// through the VPN. (DNS and the task metadata endpoint are not subject
	// to security groups.)
	https := awsec2.Port_Tcp(jsii.Number(443))
	taskSG.AddEgressRule(props.Network.EndpointSecurityGroup, https, jsii.String("HTTPS to the interface endpoints"), nil)
	taskSG.AddEgressRule(props.Network.S3PrefixList, https, jsii.String("HTTPS to S3 through the gateway endpoint"), nil)
	healthPort := awsec2.Port_Tcp(jsii.Number(HealthPort))
	for _, pp := range ports {
		if c.ProxyProtocolEnabled() {
			taskSG.Connections().AllowFrom(lbSG, pp.task, jsii.String(pp.what+" from the NLB (PROXY v2)"))
			continue
		}
		// With client IP preservation the task sees the site's address.
		for _, site := range c.Sites {
			for _, cidr := range site.Cidrs {
				taskSG.AddIngressRule(awsec2.Peer_Ipv4(jsii.String(cidr)), pp.task, jsii.String(pp.what+" from site "+site.Name+" via the NLB"), nil)
			}
		}
		lbSG.AddEgressRule(taskSG, pp.task, jsii.String(pp.what+" to the tasks"), nil)
		if props.Vpn != nil && props.Vpn.ClientVpnSecurityGroup != nil {
			// Client VPN translates clients to its own VPC addresses.
			taskSG.AddIngressRule(awsec2.Peer_Ipv4(jsii.String(c.VpcCidr)), pp.task, jsii.String(pp.what+" from Client VPN via the NLB"), nil)
		}
	}
	taskSG.Connections().AllowFrom(lbSG, healthPort, jsii.String("NLB health checks"))
	out.LbSecurityGroup, out.TaskSecurityGroup = lbSG, taskSG

	// Fixed private addresses, one per zone: sites point their PACS and
	// firewalls at IPs (they cannot resolve the VPC's private DNS).
	var mappings []*awselasticloadbalancingv2.SubnetMapping
	for _, sn := range *vpc.IsolatedSubnets() {
		ip, err := nlbAddress(*sn.Ipv4CidrBlock())
		if err != nil {
			// Subnet CIDRs come from a validated VPC CIDR; this cannot
			// happen, but fall back to a dynamic address rather than fail.
			mappings = append(mappings, &awselasticloadbalancingv2.SubnetMapping{Subnet: sn})
			continue
		}
		out.Addresses = append(out.Addresses, ip)
		mappings = append(mappings, &awselasticloadbalancingv2.SubnetMapping{Subnet: sn, PrivateIpv4Address: jsii.String(ip)})
	}
	nlb := awselasticloadbalancingv2.NewNetworkLoadBalancer(self, jsii.String("Nlb"), &awselasticloadbalancingv2.NetworkLoadBalancerProps{
		Vpc:                vpc,
		InternetFacing:     jsii.Bool(false),
		SubnetMappings:     &mappings,
		CrossZoneEnabled:   jsii.Bool(true),
		DeletionProtection: jsii.Bool(c.DeletionProtection),
		SecurityGroups:     &[]awsec2.ISecurityGroup{lbSG},
	})
	// One listener and target group per port: TCP passed through, so with
	// TLS the handshake (and the client certificate) reaches the task.
	addPort := func(id, targetsID string, nlbPort, taskPort int) (awselasticloadbalancingv2.NetworkListener, awselasticloadbalancingv2.NetworkTargetGroup) {
		tg := awselasticloadbalancingv2.NewNetworkTargetGroup(self, jsii.String(targetsID), &awselasticloadbalancingv2.NetworkTargetGroupProps{
			Vpc:        vpc,
			Port:       jsii.Number(float64(taskPort)),
			Protocol:   awselasticloadbalancingv2.Protocol_TCP,
			TargetType: awselasticloadbalancingv2.TargetType_IP,
			// Exactly one way of telling the SCP the site's address, matching
			// SCP_PROXY_PROTOCOL below.
			ProxyProtocolV2:  jsii.Bool(c.ProxyProtocolEnabled()),
			PreserveClientIp: jsii.Bool(!c.ProxyProtocolEnabled()),
			// Draining: the NLB stops new associations at once and lets running
			// ones finish for the delay; the task gets SIGTERM and drains in its
			// stop timeout, so both are the same order of magnitude.
			DeregistrationDelay:   awscdk.Duration_Seconds(jsii.Number(float64(c.Scp.DeregistrationDelay()))),
			ConnectionTermination: jsii.Bool(true),
			HealthCheck: &awselasticloadbalancingv2.HealthCheck{
				Protocol:                awselasticloadbalancingv2.Protocol_HTTP,
				Port:                    jsii.String(strconv.Itoa(HealthPort)),
				Path:                    jsii.String("/readyz"),
				Interval:                awscdk.Duration_Seconds(jsii.Number(10)),
				Timeout:                 awscdk.Duration_Seconds(jsii.Number(5)),
				HealthyThresholdCount:   jsii.Number(2),
				UnhealthyThresholdCount: jsii.Number(2),
				HealthyHttpCodes:        jsii.String("200"),
			},
		})
		// A task failing /readyz (store or audit trail unreachable, disk
		// short of its reserve, staging backlog too old) refuses new
		// associations but finishes the ones it holds, as draining does: by
		// default the NLB would reset them all once the target turned
		// unhealthy. They get the deregistration delay instead.
		tg.SetAttribute(jsii.String(TargetUnhealthyConnectionTermination), jsii.String("false"))
		tg.SetAttribute(jsii.String(TargetUnhealthyDrainingInterval), jsii.String(strconv.Itoa(c.Scp.DeregistrationDelay())))
		listener := nlb.AddListener(jsii.String(id), &awselasticloadbalancingv2.BaseNetworkListenerProps{
			Port:     jsii.Number(float64(nlbPort)),
			Protocol: awselasticloadbalancingv2.Protocol_TCP,
			// tcp.idle_timeout.seconds: the 350 s default would cut idle
			// associations between studies.
			TcpIdleTimeout:      awscdk.Duration_Seconds(jsii.Number(float64(c.Dicom.IdleTimeoutSeconds))),
			DefaultTargetGroups: &[]awselasticloadbalancingv2.INetworkTargetGroup{tg},
		})
		return listener, tg
	}
	var listener, tlsListener awselasticloadbalancingv2.NetworkListener
	var tg, tlsTG awselasticloadbalancingv2.NetworkTargetGroup
	if c.PlainListenerEnabled() {
		// The ids of the plain port's listener and targets are those they
		// had before TLS existed, so adding TLS does not replace them.
		listener, tg = addPort("Dicom", "ScpTargets", c.Dicom.Port, ScpPort)
	}
	if t := c.Dicom.TLS; t != nil {
		tlsListener, tlsTG = addPort("DicomTls", "ScpTlsTargets", t.Port, ScpTLSPort)
		if listener == nil {
			listener, tg = tlsListener, tlsTG
		}
	}
	out.LoadBalancer, out.Listener, out.TargetGroup = nlb, listener, tg
	out.TLSListener, out.TLSTargetGroup = tlsListener, tlsTG

	// Task role: put objects under incoming/ and audit/ (multipart uploads
	// included) and Storage Commitment requests under commitment/requests/,
	// read back only those prefixes, and use the bucket's key through S3,
	// nothing else. Trusted by ECS for this account's tasks in this Region
	// only, against the confused deputy: the conditions the "Amazon ECS
	// task IAM role" page of the Amazon ECS Developer Guide documents for a
	// task role's trust policy
	// (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-iam-roles.html:
	// aws:SourceAccount, and aws:SourceArn arn:aws:ecs:<region>:<account>:*,
	// a wildcard, since naming a cluster there is not supported). The task
	// execution role keeps the plain trust: AWS's page for it documents no
	// condition (docs/operations/deploy.md, by design).
	taskRole := awsiam.NewRole(self, jsii.String("TaskRole"), &awsiam.RoleProps{
		AssumedBy:   trustedFor("ecs-tasks.amazonaws.com", regionalArn("ecs", "*")),
		Description: jsii.String("scp-task: write DICOM objects and association audit records"),
	})
	bucket, key := props.Storage.Bucket, props.Storage.Key
	taskRole.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:     jsii.String("PutIncomingAndAudit"),
		Actions: jsii.Strings("s3:PutObject", "s3:AbortMultipartUpload"),
		Resources: jsii.Strings(
			*bucket.ArnForObjects(jsii.String(PrefixIncoming + "*")),
			*bucket.ArnForObjects(jsii.String(PrefixAudit + "*")),
			*bucket.ArnForObjects(jsii.String(PrefixCommitmentRequests + "*")),
		),
	}))
	// The S3 store HEADs a key that answered 412 to tell an identical
	// resend (duplicate) from a conflict, and recognises its own object
	// after a lost answer: read access to what it may write, nothing more.
	taskRole.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:     jsii.String("HeadOwnPrefixes"),
		Actions: jsii.Strings("s3:GetObject"),
		Resources: jsii.Strings(
			*bucket.ArnForObjects(jsii.String(PrefixIncoming + "*")),
			*bucket.ArnForObjects(jsii.String(PrefixAudit + "*")),
			*bucket.ArnForObjects(jsii.String(PrefixCommitmentRequests + "*")),
		),
	}))
	if c.Scp.Staging == nil {
		// Without a staging file system the run markers live in the
		// bucket: each task rewrites its own, and a starting task reads,
		// claims (a conditional put) and deletes a dead task's (a
		// conditional delete, If-Match on the claim's ETag, which S3
		// allows with s3:DeleteObject and s3:GetObject: no other action)
		// (docs/operations/audit-feed.md, Crashes).
		taskRole.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
			Sid:       jsii.String("RunMarkers"),
			Actions:   jsii.Strings("s3:PutObject", "s3:GetObject", "s3:DeleteObject"),
			Resources: jsii.Strings(*bucket.ArnForObjects(jsii.String(PrefixRunMarkers + "*"))),
		}))
	}
	// HeadBucket (readiness; and a missing key reads 404, not 403) and
	// finding multipart uploads orphaned by a lost CreateMultipartUpload
	// answer, so they are aborted rather than left to the lifecycle rule.
	taskRole.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:       jsii.String("BucketReadinessAndUploads"),
		Actions:   jsii.Strings("s3:ListBucket", "s3:ListBucketMultipartUploads"),
		Resources: jsii.Strings(*bucket.BucketArn()),
	}))
	taskRole.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid: jsii.String("BucketKeyViaS3"),
		// Decrypt is needed to complete multipart uploads under SSE-KMS.
		Actions:    jsii.Strings("kms:GenerateDataKey", "kms:Decrypt"),
		Resources:  jsii.Strings(*key.KeyArn()),
		Conditions: &map[string]any{"StringEquals": map[string]any{"kms:ViaService": "s3." + c.Region + ".amazonaws.com"}},
	}))
	out.TaskRole = taskRole

	logGroup := awslogs.NewLogGroup(self, jsii.String("ScpLogs"), &awslogs.LogGroupProps{
		EncryptionKey: key,
		Retention:     retention(c.LogRetentionDays),
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
	metricsLogGroup := awslogs.NewLogGroup(self, jsii.String("ScpMetrics"), &awslogs.LogGroupProps{
		EncryptionKey: key,
		Retention:     awslogs.RetentionDays_ONE_MONTH,
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
	out.LogGroup = logGroup

	if c.Scp.Staging != nil {
		out.Staging = NewStaging(self, "Staging", &StagingProps{Network: props.Network, Key: key, TaskSecurityGroup: taskSG})
		out.Staging.GrantMount(taskRole)
		taskSG.AddEgressRule(out.Staging.SecurityGroup, awsec2.Port_Tcp(jsii.Number(2049)), jsii.String("NFS to the staging file system"), nil)
	}

	taskDef := awsecs.NewFargateTaskDefinition(self, jsii.String("Task"), &awsecs.FargateTaskDefinitionProps{
		Cpu:            jsii.Number(float64(c.Scp.Cpu)),
		MemoryLimitMiB: jsii.Number(float64(c.Scp.MemoryMiB)),
		RuntimePlatform: &awsecs.RuntimePlatform{
			CpuArchitecture:       awsecs.CpuArchitecture_ARM64(),
			OperatingSystemFamily: awsecs.OperatingSystemFamily_LINUX(),
		},
		TaskRole: taskRole,
	})
	out.Environment = map[string]*string{
		"SCP_LISTEN":           jsii.String(fmt.Sprintf(":%d", ScpPort)),
		"SCP_HEALTH_LISTEN":    jsii.String(fmt.Sprintf(":%d", HealthPort)),
		"SCP_AE_TITLE":         jsii.String(c.Dicom.AETitle),
		"SCP_CALLING_AES":      jsii.String(c.CallingAEs()),
		"SCP_STORE":            jsii.String("s3://" + *bucket.BucketName() + "/"),
		"SCP_S3_KMS_KEY":       key.KeyArn(),
		"SCP_MAX_ASSOCIATIONS": jsii.String(strconv.Itoa(c.Scp.MaxAssociations)),
		"SCP_PROXY_PROTOCOL":   jsii.String(strconv.FormatBool(c.ProxyProtocolEnabled())),
		// Storage Commitment requests are taken from the sites that have a
		// report address (the commitment function reports to it).
		"SCP_COMMITMENT_PEERS": jsii.String(c.CommitmentPeers()),
		// Finish draining before Fargate's SIGKILL at the stop timeout.
		"SCP_DRAIN_TIMEOUT": jsii.String(fmt.Sprintf("%ds", c.Scp.DrainTimeoutSeconds())),
		// Answer a C-STORE S3 does not take in time before the PACS gives
		// up (without staging; staged objects are answered once staged).
		"SCP_S3_PUT_TIMEOUT": jsii.String(fmt.Sprintf("%ds", c.Scp.S3PutTimeoutSeconds)),
		"AWS_REGION":         jsii.String(c.Region),
		// Named on every log line, for the metric filters' Environment.
		"ENVIRONMENT": jsii.String(c.Name),
	}
	out.Secrets = map[string]awsecs.Secret{
		logname.EnvKey: newECSSecret(props.Storage.LogNameKey.SecretArn(), ""),
	}
	if !c.PlainListenerEnabled() {
		out.Environment["SCP_LISTEN"] = jsii.String("off")
	}
	portMappings := []*awsecs.PortMapping{
		{ContainerPort: jsii.Number(ScpPort), Protocol: awsecs.Protocol_TCP},
		{ContainerPort: jsii.Number(HealthPort), Protocol: awsecs.Protocol_TCP},
	}
	if t := c.Dicom.TLS; t != nil {
		// The certificate and key reach the task as ECS secrets, read from
		// Secrets Manager by the execution role at task start (a new task
		// picks up a rotated secret); the client CA bundle is public and
		// travels as a plain variable.
		out.TLSSecret = tlsSecret(self, t)
		out.Environment["SCP_TLS_LISTEN"] = jsii.String(fmt.Sprintf(":%d", ScpTLSPort))
		out.Environment["SCP_TLS_CLIENT_CA"] = jsii.String(t.ClientCaPEM)
		if t.ClientCrlPEM != "" {
			out.Environment["SCP_TLS_CLIENT_CRL"] = jsii.String(t.ClientCrlPEM)
		}
		out.Secrets["SCP_TLS_CERT"] = newECSSecret(out.TLSSecret.SecretArn(), TLSSecretCertificateKey)
		out.Secrets["SCP_TLS_KEY"] = newECSSecret(out.TLSSecret.SecretArn(), TLSSecretPrivateKeyKey)
		portMappings = append(portMappings, &awsecs.PortMapping{ContainerPort: jsii.Number(ScpTLSPort), Protocol: awsecs.Protocol_TCP})
	}
	if st := c.Scp.Staging; st != nil {
		out.Environment["SCP_STAGING_DIR"] = jsii.String(StagingMountPath)
		out.Environment["SCP_STAGING_MAX_BACKLOG"] = jsii.String(strconv.FormatInt(int64(st.MaxBacklogGiB)<<30, 10))
		out.Environment["SCP_STAGING_MAX_AGE"] = jsii.String(fmt.Sprintf("%dm", st.MaxAgeMinutes))
		// Mounted over TLS, authorized by the task role, through the
		// access point (Fargate's EFS integration).
		taskDef.AddVolume(&awsecs.Volume{
			Name: jsii.String("staging"),
			EfsVolumeConfiguration: &awsecs.EfsVolumeConfiguration{
				FileSystemId:      out.Staging.FileSystem.FileSystemId(),
				TransitEncryption: jsii.String("ENABLED"),
				AuthorizationConfig: &awsecs.AuthorizationConfig{
					AccessPointId: out.Staging.AccessPoint.AccessPointId(),
					Iam:           jsii.String("ENABLED"),
				},
			},
		})
	}
	// Stage only what the image build reads, so the asset hash (and the
	// image) changes only when scp-task or shared code does.
	exclude := *jsii.Strings("*", "!go.mod", "!go.sum", "!shared", "!scp-task")
	// Neither container keeps a Linux capability: scp-task listens on
	// ports above 1023 and touches only files its user owns, the agent
	// (root, see below) only files root owns. Fargate refuses privileged
	// and dockerSecurityOptions (no-new-privileges), so an empty bounding
	// set is what stops a process gaining privileges (a setuid binary
	// keeps none). Each container gets its own: a LinuxParameters renders
	// into the one container that names it.
	noCapabilities := func(id string) awsecs.LinuxParameters {
		lp := awsecs.NewLinuxParameters(self, jsii.String(id), &awsecs.LinuxParametersProps{})
		lp.DropCapabilities(awsecs.Capability_ALL)
		return lp
	}
	scp := taskDef.AddContainer(jsii.String("scp"), &awsecs.ContainerDefinitionOptions{
		// Staged at synth, built by `cdk deploy` (no Docker at synth).
		Image: awsecs.ContainerImage_FromAsset(jsii.String(props.ScpContextDir), &awsecs.AssetImageProps{
			File:       jsii.String(props.ScpDockerfile),
			Platform:   awsecrassets.Platform_LINUX_ARM64(),
			Exclude:    &exclude,
			IgnoreMode: awscdk.IgnoreMode_DOCKER,
		}),
		Essential: jsii.Bool(true),
		// The image's own user (distroless nonroot), named here too so the
		// task definition says it (and a rebuilt image cannot silently run
		// as root); the staging access point writes as the same user.
		User:            jsii.String(fmt.Sprintf("%d:%d", stagingUID, stagingUID)),
		LinuxParameters: noCapabilities("ScpLinuxParameters"),
		Environment:     &out.Environment,
		// ECS reads the secrets with the execution role when the task
		// starts; the task's own role gets no access to them.
		Secrets:                &out.Secrets,
		ReadonlyRootFilesystem: jsii.Bool(true),
		StopTimeout:            awscdk.Duration_Seconds(jsii.Number(float64(c.Scp.StopTimeoutSeconds))),
		Logging: awsecs.LogDriver_AwsLogs(&awsecs.AwsLogDriverProps{
			LogGroup:     logGroup,
			StreamPrefix: jsii.String("scp"),
			Mode:         awsecs.AwsLogDriverMode_NON_BLOCKING,
		}),
		PortMappings: &portMappings,
	})
	if out.Staging != nil {
		scp.AddMountPoints(&awsecs.MountPoint{SourceVolume: jsii.String("staging"), ContainerPath: jsii.String(StagingMountPath), ReadOnly: jsii.Bool(false)})
	}

	// The CloudWatch agent scrapes /metrics and publishes the SCP's gauges
	// and counters as CloudWatch metrics (embedded metric format), which the
	// association autoscaling and the reject/failure alarms use. Its image
	// is mirrored into the CDK asset repository at deploy time because the
	// isolated subnets cannot reach public registries.
	//
	// It runs as root with a writable root file system, because the
	// official image cannot do otherwise with this configuration: it is
	// built FROM scratch (no /etc/passwd, no shell), and its entry point,
	// start-amazon-cloudwatch-agent, runs config-translator, which writes
	// amazon-cloudwatch-agent.toml, .yaml, env-config.json and the
	// Prometheus configuration taken from PROMETHEUS_CONFIG_CONTENT into
	// /opt/aws/amazon-cloudwatch-agent/etc/, then execs the agent, which
	// writes its pid file into /opt/aws/amazon-cloudwatch-agent/var/; both
	// directories are root's, mode 0755, in the image (the RPM's files,
	// copied by the image's Dockerfile, localal2). Another user fails at
	// the first write ("permission denied"), and a read-only root file
	// system fails everyone (aws/amazon-cloudwatch-agent#276, open). What
	// limits it instead: no Linux capability (so root cannot write what it
	// does not own, nor gain anything), not essential (its failure never
	// stops the SCP), no port published, the task role's only grant for it
	// is writing the metrics log group, and it shares the task's network
	// namespace with nothing but scp-task. Making it non-root needs an
	// image of our own with those directories owned by that user (and, for
	// a read-only root, declared as volumes with bind mounts over them):
	// see docs/operations/deploy.md (What runs where).
	agentConfig, promConfig := agentConfigs(c.Name, *metricsLogGroup.LogGroupName(), c.Dicom.TLS != nil)
	taskDef.AddContainer(jsii.String("metrics-agent"), &awsecs.ContainerDefinitionOptions{
		Image: awsecs.ContainerImage_FromAsset(jsii.String(props.AgentContextDir), &awsecs.AssetImageProps{
			Platform: awsecrassets.Platform_LINUX_ARM64(),
		}),
		Essential:              jsii.Bool(false),
		ReadonlyRootFilesystem: jsii.Bool(false),
		LinuxParameters:        noCapabilities("AgentLinuxParameters"),
		Cpu:                    jsii.Number(64),
		MemoryLimitMiB:         jsii.Number(256),
		Environment:            &map[string]*string{"CW_CONFIG_CONTENT": jsii.String(agentConfig), "PROMETHEUS_CONFIG_CONTENT": jsii.String(promConfig)},
		Logging:                awsecs.LogDriver_AwsLogs(&awsecs.AwsLogDriverProps{LogGroup: logGroup, StreamPrefix: jsii.String("metrics-agent")}),
		StopTimeout:            awscdk.Duration_Seconds(jsii.Number(10)),
	})
	metricsLogGroup.GrantWrite(taskRole)
	// The log-name key's secret is under the stack's key.
	taskDef.ObtainExecutionRole().AddToPrincipalPolicy(keyVia("LogNameKeyViaSecretsManager", key, "secretsmanager", "kms:Decrypt"))
	if t := c.Dicom.TLS; t != nil {
		grantSecretKey(taskDef.ObtainExecutionRole(), "DicomTlsSecretKeyViaSecretsManager", t.SecretKmsKeyArn, c.Region)
	}
	out.TaskDefinition = taskDef

	cluster := awsecs.NewCluster(self, jsii.String("Cluster"), &awsecs.ClusterProps{
		Vpc:                 vpc,
		ContainerInsightsV2: awsecs.ContainerInsights_ENABLED,
	})
	// scp-task protects its task from scale-in while it holds associations
	// (ECS agent endpoint $ECS_AGENT_URI/task-protection/v1/state, which
	// calls UpdateTaskProtection with the task role's credentials), so
	// autoscaling never stops a task in the middle of a study. It only
	// sets protection, never reads it: no GetTaskProtection.
	cluster.GrantTaskProtection(taskRole)
	svc := awsecs.NewFargateService(self, jsii.String("Service"), &awsecs.FargateServiceProps{
		Cluster:                     cluster,
		TaskDefinition:              taskDef,
		DesiredCount:                jsii.Number(float64(c.Scp.MinTasks)),
		MinHealthyPercent:           jsii.Number(100),
		MaxHealthyPercent:           jsii.Number(200),
		CircuitBreaker:              &awsecs.DeploymentCircuitBreaker{Enable: jsii.Bool(true), Rollback: jsii.Bool(true)},
		VpcSubnets:                  props.Network.Subnets,
		SecurityGroups:              &[]awsec2.ISecurityGroup{taskSG},
		AssignPublicIp:              jsii.Bool(false),
		AvailabilityZoneRebalancing: awsecs.AvailabilityZoneRebalancing_ENABLED,
		HealthCheckGracePeriod:      awscdk.Duration_Seconds(jsii.Number(60)),
		PlatformVersion:             awsecs.FargatePlatformVersion_LATEST,
		EnableECSManagedTags:        jsii.Bool(true),
		PropagateTags:               awsecs.PropagatedTagSource_SERVICE,
	})
	for _, pp := range ports {
		target := tg
		if pp.taskNumber == ScpTLSPort {
			target = tlsTG
		}
		target.AddTarget(svc.LoadBalancerTarget(&awsecs.LoadBalancerTargetOptions{
			ContainerName: scp.ContainerName(),
			ContainerPort: jsii.Number(float64(pp.taskNumber)),
			Protocol:      awsecs.Protocol_TCP,
		}))
		if c.ProxyProtocolEnabled() {
			lbSG.Connections().AllowTo(taskSG, pp.task, jsii.String(pp.what+" to the tasks"))
		}
	}
	// The NLB's security group must also let it reach the targets.
	lbSG.Connections().AllowTo(taskSG, healthPort, jsii.String("health checks to the tasks"))

	scaling := svc.AutoScaleTaskCount(&awsapplicationautoscaling.EnableScalingProps{
		MinCapacity: jsii.Number(float64(c.Scp.MinTasks)),
		MaxCapacity: jsii.Number(float64(c.Scp.MaxTasks)),
	})
	scaling.ScaleOnCpuUtilization(jsii.String("Cpu"), &awsecs.CpuUtilizationScalingProps{
		TargetUtilizationPercent: jsii.Number(float64(c.Scp.TargetCpuPercent)),
		// Scaling in ends associations only after draining; be slow.
		ScaleInCooldown:  awscdk.Duration_Minutes(jsii.Number(10)),
		ScaleOutCooldown: awscdk.Duration_Minutes(jsii.Number(1)),
	})
	scaling.ScaleToTrackCustomMetric(jsii.String("Associations"), &awsecs.TrackCustomMetricProps{
		Metric:           ScpMetric(c.Name, MetricActiveAssociations, "Average", awscdk.Duration_Minutes(jsii.Number(1))),
		TargetValue:      jsii.Number(float64(c.Scp.TargetAssociationsPerTask)),
		ScaleInCooldown:  awscdk.Duration_Minutes(jsii.Number(10)),
		ScaleOutCooldown: awscdk.Duration_Minutes(jsii.Number(1)),
	})
	out.Cluster, out.Service = cluster, svc
	return out
}

// The JSON keys of the server certificate's secret (dicom.tls.serverCertificateSecretArn).
const (
	TLSSecretCertificateKey = "certificate"
	TLSSecretPrivateKeyKey  = "privateKey"
)

// tlsSecret imports the server certificate's secret by its complete ARN, so
// the execution role's grant (made by ECS for the container's secrets)
// names exactly it.
func tlsSecret(scope constructs.Construct, t *config.DicomTLS) awssecretsmanager.ISecret {
	return awssecretsmanager.Secret_FromSecretAttributes(scope, jsii.String("DicomTlsSecret"),
		&awssecretsmanager.SecretAttributes{SecretCompleteArn: jsii.String(t.ServerCertificateSecretArn)})
}

// ecsSecret is a container's secret from Secrets Manager, like
// awsecs.Secret_FromSecretsManager, whose grant to the execution role is
// grantSecretValue's (GetSecretValue alone, what ECS calls to resolve it)
// rather than the secret's GrantRead.
type ecsSecret struct {
	awsecs.Secret
	arn   *string // the secret's complete ARN
	field string  // the JSON key of its value to inject, or "" for all of it
}

func newECSSecret(arn *string, field string) awsecs.Secret {
	s := &ecsSecret{arn: arn, field: field}
	awsecs.NewSecret_Override(s)
	return s
}

// Arn is what the task definition's ValueFrom names: the secret, or one
// JSON key of its current version (arn:key::).
func (s *ecsSecret) Arn() *string {
	if s.field == "" {
		return s.arn
	}
	return jsii.String(*s.arn + ":" + s.field + "::")
}

func (s *ecsSecret) HasField() *bool { return jsii.Bool(s.field != "") }

func (s *ecsSecret) GrantRead(grantee awsiam.IGrantable) awsiam.Grant {
	return grantSecretValue(grantee, s.arn)
}

// grantSecretKey lets role decrypt with keyArn, a secret's
// customer-managed key (none: the secret is under aws/secretsmanager, whose
// policy already lets the account decrypt through Secrets Manager), through
// Secrets Manager only. CDK's grant on an imported key would go to the
// key's policy, which a stack cannot change, and be dropped.
func grantSecretKey(role awsiam.IRole, sid, keyArn, region string) {
	if keyArn == "" {
		return
	}
	role.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String(sid),
		Actions:    jsii.Strings("kms:Decrypt"),
		Resources:  jsii.Strings(keyArn),
		Conditions: &map[string]any{"StringEquals": map[string]any{"kms:ViaService": "secretsmanager." + region + ".amazonaws.com"}},
	}))
}

// ScpMetric is one of the SCP's metrics in CloudWatch for environment env.
func ScpMetric(env, name, statistic string, period awscdk.Duration) awscloudwatch.Metric {
	return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace:     jsii.String(MetricsNamespace),
		MetricName:    jsii.String(name),
		DimensionsMap: &map[string]*string{"Environment": jsii.String(env)},
		Statistic:     jsii.String(statistic),
		Period:        period,
	})
}

// ScpMetricByLabel is a metric of metricnames.Dimensions in CloudWatch for
// environment env, one series per value of its label: a SEARCH
// expression, for graphs (an alarm cannot read one; alarms watch the sum,
// ScpMetric).
func ScpMetricByLabel(env, name, statistic string, period awscdk.Duration) awscloudwatch.MathExpression {
	return awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
		Expression: jsii.String(fmt.Sprintf(`SEARCH('{%s,Environment,%s} MetricName="%s" Environment="%s"', '%s', %d)`,
			MetricsNamespace, metricnames.Dimensions[name], name, env, statistic, int(*period.ToSeconds(nil)))),
		Label:        jsii.String(""), // each series by its label's value alone
		Period:       period,
		UsingMetrics: &map[string]awscloudwatch.IMetric{},
	})
}

// scpDeclaration is one metric declaration of the agent: the SCP metrics
// it publishes, with the dimension sets they carry (Environment, from the
// scrape's label, and the metric's own labels named), each set a metric
// of its own in CloudWatch.
type scpDeclaration struct {
	dimensions [][]string
	metrics    []string
}

// scpDeclarations lists what the agent publishes of the SCP's metrics. A
// metric's labels not among a set's dimensions are summed over by
// CloudWatch: a metric of metricnames.Dimensions (rejects by reason,
// C-STORE failures by status) is published both by Environment and its
// label, for the on-call engineer, and by Environment alone, its sum over
// the label, which the alarms watch (an alarm cannot read a SEARCH
// expression, and a metric math SUM of one metric per value would have to
// list every value). The agent sends a declaration's metrics once per
// dimension set ("Specifies two sets of dimensions for each metric name",
// CloudWatch agent Prometheus configuration, Amazon CloudWatch User
// Guide). Not published: dicom_ingest_tls_reloads_total, which cannot
// move in these tasks: their certificate, key, CAs and CRLs arrive as PEM
// text in the environment, which servertls never reloads (only files
// are), and nothing can send a Fargate task SIGHUP. A certificate that
// does not load fails the task's start instead, which the deployment
// circuit breaker rolls back.
func scpDeclarations(withTLS bool) []scpDeclaration {
	metrics := []string{MetricActiveAssociations, MetricRejectedAssociation, MetricStoreFailures, MetricObjectsStored,
		MetricAuditRecordsLost, MetricAuditUncleanStops, MetricAuditRefusalsFolded, MetricAuditWritable, MetricAuditQueueLength, MetricTaskProtectionFailures, MetricTaskProtected,
		MetricConnectionsShed, MetricS3Retries,
		MetricStagingBacklogAge, MetricStagingBacklogBytes, MetricStagingNoSpace, MetricStagingParked, MetricStagingAdopted}
	if withTLS {
		metrics = append(metrics, MetricTLSHandshakeFailures, MetricTLSCertificateExpireIn, MetricTLSClientCRLNextUpdateIn, MetricTLSClientCertificateExpiresIn)
	}
	plain := scpDeclaration{dimensions: [][]string{{"Environment"}}}
	var labelled []scpDeclaration
	for _, m := range metrics {
		if label, ok := metricnames.Dimensions[m]; ok {
			labelled = append(labelled, scpDeclaration{dimensions: [][]string{{"Environment"}, {"Environment", label}}, metrics: []string{m}})
			continue
		}
		plain.metrics = append(plain.metrics, m)
	}
	return append([]scpDeclaration{plain}, labelled...)
}

// agentConfigs renders the CloudWatch agent's JSON configuration and its
// Prometheus scrape configuration. The scrape target is the SCP's health
// port on localhost (tasks share one network namespace in awsvpc mode).
func agentConfigs(env, logGroupName string, withTLS bool) (agent, prometheus string) {
	var declarations []any
	for _, d := range scpDeclarations(withTLS) {
		var selectors []string
		for _, m := range d.metrics {
			selectors = append(selectors, "^"+m+"$")
		}
		declarations = append(declarations, map[string]any{
			"source_labels":    []string{"job"},
			"label_matcher":    "^scp$",
			"dimensions":       d.dimensions,
			"metric_selectors": selectors,
		})
	}
	cfg := map[string]any{
		"agent": map[string]any{"metrics_collection_interval": 60},
		"logs": map[string]any{
			"force_flush_interval": 15,
			"metrics_collected": map[string]any{
				"prometheus": map[string]any{
					"log_group_name":         logGroupName,
					"prometheus_config_path": "env:PROMETHEUS_CONFIG_CONTENT",
					"emf_processor": map[string]any{
						"metric_declaration_dedup": true,
						"metric_namespace":         MetricsNamespace,
						"metric_declaration":       declarations,
					},
				},
			},
		},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		// A map of strings and numbers always marshals.
		b = []byte("{}")
	}
	prometheus = fmt.Sprintf(`global:
  scrape_interval: 30s
  scrape_timeout: 10s
scrape_configs:
  - job_name: scp
    static_configs:
      - targets: ["localhost:%d"]
        labels:
          Environment: %q
`, HealthPort, env)
	return string(b), prometheus
}

// nlbAddress picks the NLB's address in a subnet: six below the broadcast
// address, away from the low addresses EC2 tends to hand out first (AWS
// reserves the first four and the last address of every subnet).
func nlbAddress(subnetCidr string) (string, error) {
	p, err := netip.ParsePrefix(subnetCidr)
	if err != nil || !p.Addr().Is4() || p.Bits() > 27 {
		return "", fmt.Errorf("stack: nlb address: subnet %q is not an IPv4 /27 or larger", subnetCidr)
	}
	a := p.Masked().Addr().As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n |= (uint32(1) << (32 - p.Bits())) - 1 // broadcast
	n -= 6
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}).String(), nil
}
