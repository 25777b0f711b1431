package stack

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsec2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
)

// Tunnel crypto: the only proposals AWS will accept from or offer to a
// site. AES-256 / SHA2-256 / DH 14+ with IKEv2 is what we promise hospitals;
// older suites are deliberately absent so a misconfigured site fails to
// connect rather than falling back.
var (
	tunnelIKEVersions      = []string{"ikev2"}
	tunnelEncryption       = []string{"AES256", "AES256-GCM-16"}
	tunnelIntegrity        = []string{"SHA2-256", "SHA2-384", "SHA2-512"}
	tunnelDHGroups         = []float64{14, 19, 20, 21}
	tunnelPhase1Lifetime   = 28800.0
	tunnelPhase2Lifetime   = 3600.0
	tunnelDPDTimeout       = 30.0
	tunnelDPDTimeoutAction = "restart"
	tunnelStartupAction    = "start"
)

// SiteVpnProps configures NewSiteVpn.
type SiteVpnProps struct {
	Config  *config.Config
	Network *Network
	Key     awskms.IKey
}

// SiteConnection is the VPN connection of one site.
type SiteConnection struct {
	Site       config.Site
	Gateway    awsec2.CfnCustomerGateway
	Connection awsec2.CfnVPNConnection
	// PreSharedKeys hold the two tunnels' keys.
	PreSharedKeys [2]awssecretsmanager.Secret
	// TunnelDown fires when either tunnel is not up.
	TunnelDown awscloudwatch.Alarm
}

// SiteVpn holds a customer gateway and a two-tunnel IPsec connection per site
// on the network's virtual private gateway, and the optional Client VPN.
type SiteVpn struct {
	constructs.Construct
	Connections []*SiteConnection
	// ClientVpn is nil unless configured.
	ClientVpn awsec2.ClientVpnEndpoint
	// ClientVpnSecurityGroup is the Client VPN endpoint's group (nil without
	// Client VPN); the NLB admits DICOM from it.
	ClientVpnSecurityGroup awsec2.SecurityGroup
	TunnelLogGroup         awslogs.LogGroup
}

func strValues[T any](vals []string, mk func(*string) T) *[]any {
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = mk(jsii.String(v))
	}
	return &out
}

// NewSiteVpn creates the per-site VPN connections and, if configured, the
// Client VPN endpoint.
func NewSiteVpn(scope constructs.Construct, id string, props *SiteVpnProps) *SiteVpn {
	c := props.Config
	self := constructs.NewConstruct(scope, jsii.String(id))
	out := &SiteVpn{Construct: self}

	out.TunnelLogGroup = awslogs.NewLogGroup(self, jsii.String("TunnelLogs"), &awslogs.LogGroupProps{
		EncryptionKey: props.Key,
		Retention:     retention(c.LogRetentionDays),
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})

	for _, site := range c.Sites {
		siteScope := constructs.NewConstruct(self, jsii.String("Site-"+site.Name))
		cgw := awsec2.NewCfnCustomerGateway(siteScope, jsii.String("CustomerGateway"), &awsec2.CfnCustomerGatewayProps{
			Type:      jsii.String("ipsec.1"),
			IpAddress: jsii.String(site.CustomerGatewayIP),
			BgpAsn:    jsii.Number(float64(site.BgpAsn)),
			Tags:      &[]*awscdk.CfnTag{{Key: jsii.String("Name"), Value: jsii.String(c.Name + "-" + site.Name)}},
		})
		conn := &SiteConnection{Site: site, Gateway: cgw}
		var tunnels []any
		for t := range 2 {
			secret := awssecretsmanager.NewSecret(siteScope, jsii.String(fmt.Sprintf("Tunnel%dPsk", t+1)), &awssecretsmanager.SecretProps{
				Description:   jsii.String(fmt.Sprintf("dicom-ingest %s: pre-shared key of VPN tunnel %d to site %s", c.Name, t+1, site.Name)),
				EncryptionKey: props.Key,
				// AWS accepts 8..64 characters of [A-Za-z0-9._] not
				// starting with 0; without 0 at all no key can start with it.
				GenerateSecretString: &awssecretsmanager.SecretStringGenerator{
					PasswordLength:     jsii.Number(40),
					ExcludePunctuation: jsii.Bool(true),
					IncludeSpace:       jsii.Bool(false),
					ExcludeCharacters:  jsii.String("0"),
				},
				RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
			})
			conn.PreSharedKeys[t] = secret
			opts := &awsec2.CfnVPNConnection_VpnTunnelOptionsSpecificationProperty{
				// A {{resolve:secretsmanager:…}} dynamic reference: the key
				// never appears in the template.
				PreSharedKey: secret.SecretValue().UnsafeUnwrap(),
				IkeVersions: strValues(tunnelIKEVersions, func(v *string) any {
					return &awsec2.CfnVPNConnection_IKEVersionsRequestListValueProperty{Value: v}
				}),
				Phase1EncryptionAlgorithms: strValues(tunnelEncryption, func(v *string) any {
					return &awsec2.CfnVPNConnection_Phase1EncryptionAlgorithmsRequestListValueProperty{Value: v}
				}),
				Phase2EncryptionAlgorithms: strValues(tunnelEncryption, func(v *string) any {
					return &awsec2.CfnVPNConnection_Phase2EncryptionAlgorithmsRequestListValueProperty{Value: v}
				}),
				Phase1IntegrityAlgorithms: strValues(tunnelIntegrity, func(v *string) any {
					return &awsec2.CfnVPNConnection_Phase1IntegrityAlgorithmsRequestListValueProperty{Value: v}
				}),
				Phase2IntegrityAlgorithms: strValues(tunnelIntegrity, func(v *string) any {
					return &awsec2.CfnVPNConnection_Phase2IntegrityAlgorithmsRequestListValueProperty{Value: v}
				}),
				Phase1DhGroupNumbers:  dhGroups(true),
				Phase2DhGroupNumbers:  dhGroups(false),
				Phase1LifetimeSeconds: jsii.Number(tunnelPhase1Lifetime),
				Phase2LifetimeSeconds: jsii.Number(tunnelPhase2Lifetime),
				DpdTimeoutSeconds:     jsii.Number(tunnelDPDTimeout),
				DpdTimeoutAction:      jsii.String(tunnelDPDTimeoutAction),
				StartupAction:         jsii.String(tunnelStartupAction),
				LogOptions: &awsec2.CfnVPNConnection_VpnTunnelLogOptionsSpecificationProperty{
					CloudwatchLogOptions: &awsec2.CfnVPNConnection_CloudwatchLogOptionsSpecificationProperty{
						LogEnabled:      jsii.Bool(true),
						LogGroupArn:     out.TunnelLogGroup.LogGroupArn(),
						LogOutputFormat: jsii.String("json"),
					},
				},
			}
			if len(site.TunnelInsideCidrs) == 2 {
				opts.TunnelInsideCidr = jsii.String(site.TunnelInsideCidrs[t])
			}
			tunnels = append(tunnels, opts)
		}
		vpn := awsec2.NewCfnVPNConnection(siteScope, jsii.String("Connection"), &awsec2.CfnVPNConnectionProps{
			Type:                           jsii.String("ipsec.1"),
			CustomerGatewayId:              cgw.AttrCustomerGatewayId(),
			VpnGatewayId:                   props.Network.Vpc.VpnGatewayId(),
			StaticRoutesOnly:               jsii.Bool(site.Routing == config.RoutingStatic),
			VpnTunnelOptionsSpecifications: &tunnels,
			Tags:                           &[]*awscdk.CfnTag{{Key: jsii.String("Name"), Value: jsii.String(c.Name + "-" + site.Name)}},
		})
		conn.Connection = vpn
		if site.Routing == config.RoutingStatic {
			for i, cidr := range site.Cidrs {
				awsec2.NewCfnVPNConnectionRoute(siteScope, jsii.String(fmt.Sprintf("Route%d", i)), &awsec2.CfnVPNConnectionRouteProps{
					DestinationCidrBlock: jsii.String(cidr),
					VpnConnectionId:      vpn.Ref(),
				})
			}
		}
		// TunnelState is 1 when both tunnels are up and between 0 and 1
		// when one is down; any minimum below 1 means lost redundancy.
		state := awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
			Namespace:     jsii.String("AWS/VPN"),
			MetricName:    jsii.String("TunnelState"),
			DimensionsMap: &map[string]*string{"VpnId": vpn.Ref()},
			Statistic:     jsii.String("Minimum"),
			Period:        awscdk.Duration_Minutes(jsii.Number(5)),
		})
		conn.TunnelDown = state.CreateAlarm(siteScope, jsii.String("TunnelDown"), &awscloudwatch.CreateAlarmOptions{
			AlarmDescription:   jsii.String(fmt.Sprintf("A VPN tunnel to site %s is down (redundancy lost or site unreachable)", site.Name)),
			Threshold:          jsii.Number(1),
			ComparisonOperator: awscloudwatch.ComparisonOperator_LESS_THAN_THRESHOLD,
			EvaluationPeriods:  jsii.Number(2),
			// No data means the connection reports nothing: treat as down.
			TreatMissingData: awscloudwatch.TreatMissingData_BREACHING,
		})
		out.Connections = append(out.Connections, conn)
	}

	if cv := c.Vpn.ClientVpn; cv != nil {
		sg := awsec2.NewSecurityGroup(self, jsii.String("ClientVpnSG"), &awsec2.SecurityGroupProps{
			Vpc:              props.Network.Vpc,
			Description:      jsii.String("Client VPN endpoint: clients may reach the DICOM listener only"),
			AllowAllOutbound: jsii.Bool(false),
		})
		logs := awslogs.NewLogGroup(self, jsii.String("ClientVpnLogs"), &awslogs.LogGroupProps{
			EncryptionKey: props.Key,
			Retention:     retention(c.LogRetentionDays),
			RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
		})
		ep := props.Network.Vpc.AddClientVpnEndpoint(jsii.String("ClientVpn"), &awsec2.ClientVpnEndpointOptions{
			Cidr:                       jsii.String(cv.ClientCidr),
			ServerCertificateArn:       jsii.String(cv.ServerCertificateArn),
			ClientCertificateArn:       jsii.String(cv.ClientRootCertificateArn),
			AuthorizeAllUsersToVpcCidr: jsii.Bool(false),
			SplitTunnel:                jsii.Bool(true),
			Logging:                    jsii.Bool(true),
			LogGroup:                   logs,
			SecurityGroups:             &[]awsec2.ISecurityGroup{sg},
			VpcSubnets:                 props.Network.Subnets,
			TransportProtocol:          awsec2.TransportProtocol_UDP,
			SessionTimeout:             awsec2.ClientVpnSessionTimeout_EIGHT_HOURS,
			Description:                jsii.String("dicom-ingest " + c.Name + " client VPN (mutual TLS)"),
		})
		ep.AddAuthorizationRule(jsii.String("Vpc"), &awsec2.ClientVpnAuthorizationRuleOptions{
			Cidr:        jsii.String(c.VpcCidr),
			Description: jsii.String("certificate holders may reach the VPC; the security groups narrow it to the DICOM listener"),
		})
		out.ClientVpn = ep
		out.ClientVpnSecurityGroup = sg
	}
	return out
}

func dhGroups(phase1 bool) *[]any {
	out := make([]any, len(tunnelDHGroups))
	for i, g := range tunnelDHGroups {
		if phase1 {
			out[i] = &awsec2.CfnVPNConnection_Phase1DHGroupNumbersRequestListValueProperty{Value: jsii.Number(g)}
		} else {
			out[i] = &awsec2.CfnVPNConnection_Phase2DHGroupNumbersRequestListValueProperty{Value: jsii.Number(g)}
		}
	}
	return &out
}
