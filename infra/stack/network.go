package stack

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/customresources"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
)

// NetworkProps configures NewNetwork.
type NetworkProps struct {
	Config *config.Config
	// Key encrypts the flow log group.
	Key awskms.IKey
}

// Network is a VPC with isolated subnets only: no internet or NAT gateway,
// AWS services through endpoints, the sites through a virtual private
// gateway whose routes are propagated to every subnet.
type Network struct {
	constructs.Construct
	Vpc awsec2.Vpc
	// Subnets selects the isolated subnets (NLB, tasks, functions,
	// endpoints).
	Subnets *awsec2.SubnetSelection
	// EndpointSecurityGroup guards the interface endpoints (HTTPS from the
	// VPC only).
	EndpointSecurityGroup awsec2.SecurityGroup
	// S3PrefixList is the AWS-managed prefix list of S3 in the region: the
	// addresses the S3 gateway endpoint routes to, for egress rules.
	S3PrefixList awsec2.IPeer
	// S3PrefixListLookup is the deploy-time look-up behind S3PrefixList.
	S3PrefixListLookup customresources.AwsCustomResource
	// DynamoDBPrefixList is DynamoDB's, for the same purpose (the
	// commitment function's egress).
	DynamoDBPrefixList       awsec2.IPeer
	DynamoDBPrefixListLookup customresources.AwsCustomResource
	FlowLogGroup             awslogs.LogGroup
}

// interfaceEndpoints are the services the tasks and functions reach without
// internet access: image pulls (ECR api and dkr; layers come through the S3
// gateway endpoint), logs, the pipeline's queues and bus, KMS, STS and
// Secrets Manager.
var interfaceEndpoints = map[string]func() awsec2.InterfaceVpcEndpointAwsService{
	"EcrApi":         awsec2.InterfaceVpcEndpointAwsService_ECR,
	"EcrDocker":      awsec2.InterfaceVpcEndpointAwsService_ECR_DOCKER,
	"Logs":           awsec2.InterfaceVpcEndpointAwsService_CLOUDWATCH_LOGS,
	"Sqs":            awsec2.InterfaceVpcEndpointAwsService_SQS,
	"EventBridge":    awsec2.InterfaceVpcEndpointAwsService_EVENTBRIDGE,
	"Kms":            awsec2.InterfaceVpcEndpointAwsService_KMS,
	"Sts":            awsec2.InterfaceVpcEndpointAwsService_STS,
	"SecretsManager": awsec2.InterfaceVpcEndpointAwsService_SECRETS_MANAGER,
}

// interfaceEndpointOrder keeps the synthesized template stable.
var interfaceEndpointOrder = []string{"EcrApi", "EcrDocker", "Logs", "Sqs", "EventBridge", "Kms", "Sts", "SecretsManager"}

// NewNetwork creates the VPC, its endpoints, the virtual private gateway and
// the flow logs.
func NewNetwork(scope constructs.Construct, id string, props *NetworkProps) *Network {
	c := props.Config
	self := constructs.NewConstruct(scope, jsii.String(id))
	subnets := &awsec2.SubnetSelection{SubnetType: awsec2.SubnetType_PRIVATE_ISOLATED}

	azs := make([]*string, len(c.AvailabilityZones))
	for i, az := range c.AvailabilityZones {
		azs[i] = jsii.String(az)
	}
	flowLogs := awslogs.NewLogGroup(self, jsii.String("FlowLogs"), &awslogs.LogGroupProps{
		EncryptionKey: props.Key,
		Retention:     retention(c.LogRetentionDays),
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
	// Trusted by the flow logs service for this account's flow logs only,
	// against the confused deputy ("IAM role for publishing flow logs to
	// CloudWatch Logs", Amazon VPC User Guide).
	flowLogRole := awsiam.NewRole(self, jsii.String("FlowLogRole"), &awsiam.RoleProps{
		AssumedBy: trustedFor("vpc-flow-logs.amazonaws.com", regionalArn("ec2", "vpc-flow-log/*")),
	})
	vpc := awsec2.NewVpc(self, jsii.String("Vpc"), &awsec2.VpcProps{
		IpAddresses: awsec2.IpAddresses_Cidr(jsii.String(c.VpcCidr)),
		// Explicit zones keep synth offline (no availability-zone look-up).
		AvailabilityZones: &azs,
		NatGateways:       jsii.Number(0),
		SubnetConfiguration: &[]*awsec2.SubnetConfiguration{{
			Name:       jsii.String("ingest"),
			SubnetType: awsec2.SubnetType_PRIVATE_ISOLATED,
		}},
		EnableDnsHostnames:           jsii.Bool(true),
		EnableDnsSupport:             jsii.Bool(true),
		RestrictDefaultSecurityGroup: jsii.Bool(true),
		VpnGateway:                   jsii.Bool(true),
		VpnGatewayAsn:                jsii.Number(float64(c.Vpn.AmazonSideAsn)),
		// Routes learned from the sites (BGP) or their static routes reach
		// every isolated subnet: the NLB's, the tasks' (PROXY protocol off
		// means replies go straight back to the site) and the endpoints'.
		VpnRoutePropagation: &[]*awsec2.SubnetSelection{subnets},
		GatewayEndpoints: &map[string]*awsec2.GatewayVpcEndpointOptions{
			"S3":       {Service: awsec2.GatewayVpcEndpointAwsService_S3(), Subnets: &[]*awsec2.SubnetSelection{subnets}},
			"DynamoDB": {Service: awsec2.GatewayVpcEndpointAwsService_DYNAMODB(), Subnets: &[]*awsec2.SubnetSelection{subnets}},
		},
		FlowLogs: &map[string]*awsec2.FlowLogOptions{
			"All": {
				Destination: awsec2.FlowLogDestination_ToCloudWatchLogs(flowLogs, flowLogRole),
				TrafficType: awsec2.FlowLogTrafficType_ALL,
			},
		},
	})

	endpointSG := awsec2.NewSecurityGroup(self, jsii.String("EndpointSG"), &awsec2.SecurityGroupProps{
		Vpc:              vpc,
		Description:      jsii.String("VPC interface endpoints: HTTPS from inside the VPC"),
		AllowAllOutbound: jsii.Bool(false),
	})
	endpointSG.AddIngressRule(awsec2.Peer_Ipv4(jsii.String(c.VpcCidr)), awsec2.Port_Tcp(jsii.Number(443)), jsii.String("HTTPS from the VPC"), nil)
	for _, name := range interfaceEndpointOrder {
		vpc.AddInterfaceEndpoint(jsii.String(name), &awsec2.InterfaceVpcEndpointOptions{
			Service:           interfaceEndpoints[name](),
			Subnets:           subnets,
			PrivateDnsEnabled: jsii.Bool(true),
			SecurityGroups:    &[]awsec2.ISecurityGroup{endpointSG},
			Open:              jsii.Bool(false),
		})
	}
	s3List := managedPrefixList(self, "S3PrefixList", "com.amazonaws."+c.Region+".s3")
	ddbList := managedPrefixList(self, "DynamoDBPrefixList", "com.amazonaws."+c.Region+".dynamodb")
	return &Network{Construct: self, Vpc: vpc, Subnets: subnets, EndpointSecurityGroup: endpointSG,
		S3PrefixList: awsec2.Peer_PrefixList(s3List.GetResponseField(jsii.String("PrefixLists.0.PrefixListId"))), S3PrefixListLookup: s3List,
		DynamoDBPrefixList:       awsec2.Peer_PrefixList(ddbList.GetResponseField(jsii.String("PrefixLists.0.PrefixListId"))),
		DynamoDBPrefixListLookup: ddbList,
		FlowLogGroup:             flowLogs}
}

// managedPrefixList looks up an AWS-managed prefix list by name at deploy
// time. CloudFormation has no attribute or parameter for a gateway
// endpoint's prefix list, and its id differs by region; a look-up at synth
// time would need AWS credentials, and synthesis stays offline.
func managedPrefixList(scope constructs.Construct, id, name string) customresources.AwsCustomResource {
	call := &customresources.AwsSdkCall{
		Service: jsii.String("EC2"),
		Action:  jsii.String("DescribeManagedPrefixLists"),
		Parameters: map[string]any{
			"Filters": []map[string]any{{"Name": "prefix-list-name", "Values": []string{name}}},
		},
		OutputPaths:        jsii.Strings("PrefixLists.0.PrefixListId"),
		PhysicalResourceId: customresources.PhysicalResourceId_Of(jsii.String(name)),
	}
	return customresources.NewAwsCustomResource(scope, jsii.String(id), &customresources.AwsCustomResourceProps{
		OnCreate: call,
		OnUpdate: call,
		// ec2:DescribeManagedPrefixLists has no resource-level permissions.
		Policy:              customresources.AwsCustomResourcePolicy_FromSdkCalls(&customresources.SdkCallsPolicyOptions{Resources: customresources.AwsCustomResourcePolicy_ANY_RESOURCE()}),
		InstallLatestAwsSdk: jsii.Bool(false),
	})
}

// retentionByDays maps CloudWatch Logs retention values (the ones
// config.Validate admits) to the CDK enum.
var retentionByDays = map[int]awslogs.RetentionDays{
	1: awslogs.RetentionDays_ONE_DAY, 3: awslogs.RetentionDays_THREE_DAYS, 5: awslogs.RetentionDays_FIVE_DAYS,
	7: awslogs.RetentionDays_ONE_WEEK, 14: awslogs.RetentionDays_TWO_WEEKS, 30: awslogs.RetentionDays_ONE_MONTH,
	60: awslogs.RetentionDays_TWO_MONTHS, 90: awslogs.RetentionDays_THREE_MONTHS, 120: awslogs.RetentionDays_FOUR_MONTHS,
	150: awslogs.RetentionDays_FIVE_MONTHS, 180: awslogs.RetentionDays_SIX_MONTHS, 365: awslogs.RetentionDays_ONE_YEAR,
	400: awslogs.RetentionDays_THIRTEEN_MONTHS, 545: awslogs.RetentionDays_EIGHTEEN_MONTHS, 731: awslogs.RetentionDays_TWO_YEARS,
	1096: awslogs.RetentionDays_THREE_YEARS, 1827: awslogs.RetentionDays_FIVE_YEARS, 2192: awslogs.RetentionDays_SIX_YEARS,
	2557: awslogs.RetentionDays_SEVEN_YEARS, 2922: awslogs.RetentionDays_EIGHT_YEARS, 3288: awslogs.RetentionDays_NINE_YEARS,
	3653: awslogs.RetentionDays_TEN_YEARS,
}

// retention returns the enum for validated days; an unknown value (which
// Validate rejects) falls back to one year rather than infinite retention.
func retention(days int) awslogs.RetentionDays {
	if r, ok := retentionByDays[days]; ok {
		return r
	}
	return awslogs.RetentionDays_ONE_YEAR
}
