package stack

import (
	"strconv"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsefs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// StagingMountPath is where the staging file system is mounted in the
// scp-task container (SCP_STAGING_DIR).
const StagingMountPath = "/mnt/staging"

// stagingUID is the distroless "nonroot" user scp-task runs as; the access
// point writes as it, whatever the client says.
const stagingUID = 65532

// StagingProps configures NewStaging.
type StagingProps struct {
	Network *Network
	Key     awskms.IKey
	// TaskSecurityGroup is the only one admitted to NFS.
	TaskSecurityGroup awsec2.ISecurityGroup
}

// Staging is the EFS file system the tasks stage objects on before they
// upload them to S3: Regional (its data in every zone, as the tasks are),
// encrypted with the stack's key, reached only through one access point
// by the task role over TLS, from the tasks' security group.
type Staging struct {
	constructs.Construct
	FileSystem    awsefs.FileSystem
	AccessPoint   awsefs.AccessPoint
	SecurityGroup awsec2.SecurityGroup
}

// NewStaging creates the file system, its mount targets (one per zone's
// isolated subnet), its security group and its access point.
func NewStaging(scope constructs.Construct, id string, props *StagingProps) *Staging {
	self := constructs.NewConstruct(scope, jsii.String(id))
	sg := awsec2.NewSecurityGroup(self, jsii.String("SG"), &awsec2.SecurityGroupProps{
		Vpc:              props.Network.Vpc,
		Description:      jsii.String("EFS staging: NFS from the scp-task tasks only"),
		AllowAllOutbound: jsii.Bool(false),
	})
	sg.AddIngressRule(props.TaskSecurityGroup, awsec2.Port_Tcp(jsii.Number(2049)), jsii.String("NFS from scp-task"), nil)
	fs := awsefs.NewFileSystem(self, jsii.String("FileSystem"), &awsefs.FileSystemProps{
		Vpc:           props.Network.Vpc,
		VpcSubnets:    props.Network.Subnets,
		SecurityGroup: sg,
		Encrypted:     jsii.Bool(true),
		KmsKey:        props.Key,
		// General Purpose: the lowest latency per operation, which is
		// what a C-STORE waits for. Elastic: pay for what is written.
		PerformanceMode: awsefs.PerformanceMode_GENERAL_PURPOSE,
		ThroughputMode:  awsefs.ThroughputMode_ELASTIC,
		// What a stack deletion would otherwise destroy may be objects
		// acknowledged and not yet uploaded.
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
		// scp.staging.backups adds it to the stack's backup plan
		// (stack.go), not to EFS's own automatic one.
		EnableAutomaticBackups: jsii.Bool(false),
		AllowAnonymousAccess:   jsii.Bool(false),
	})
	ap := fs.AddAccessPoint(jsii.String("Scp"), &awsefs.AccessPointOptions{
		Path:      jsii.String("/scp-staging"),
		PosixUser: &awsefs.PosixUser{Uid: jsii.String(strconv.Itoa(stagingUID)), Gid: jsii.String(strconv.Itoa(stagingUID))},
		CreateAcl: &awsefs.Acl{OwnerUid: jsii.String(strconv.Itoa(stagingUID)), OwnerGid: jsii.String(strconv.Itoa(stagingUID)), Permissions: jsii.String("750")},
	})
	// Only over TLS, whoever the client.
	fs.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("DenyInsecureTransport"),
		Effect:     awsiam.Effect_DENY,
		Principals: &[]awsiam.IPrincipal{awsiam.NewAnyPrincipal()},
		Actions:    jsii.Strings("*"),
		Resources:  jsii.Strings("*"),
		Conditions: &map[string]any{"Bool": map[string]any{"aws:SecureTransport": "false"}},
	}))
	return &Staging{Construct: self, FileSystem: fs, AccessPoint: ap, SecurityGroup: sg}
}

// GrantMount lets role mount the file system read-write through the
// access point only (not as root, not at its root directory).
func (s *Staging) GrantMount(role awsiam.Role) {
	role.AddToPrincipalPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("MountStagingThroughAccessPoint"),
		Actions:    jsii.Strings("elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite"),
		Resources:  jsii.Strings(*s.FileSystem.FileSystemArn()),
		Conditions: &map[string]any{"StringEquals": map[string]any{"elasticfilesystem:AccessPointArn": *s.AccessPoint.AccessPointArn()}},
	}))
}
