package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol/aetitletest"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
)

// valid returns a small valid configuration for mutation by the cases.
func valid() *Config {
	return &Config{
		Name:              "test",
		Account:           "123456789012",
		Region:            "eu-west-1",
		AvailabilityZones: []string{"eu-west-1a", "eu-west-1b"},
		VpcCidr:           "10.40.0.0/20",
		Dicom:             Dicom{AETitle: "DICOM_INGEST"},
		Sites: []Site{
			{Name: "a", CallingAETitle: "A_PACS", CustomerGatewayIP: "198.51.100.1", Cidrs: []string{"192.168.1.0/24"}},
			{Name: "b", CallingAETitle: "B_PACS", CustomerGatewayIP: "198.51.100.2", Cidrs: []string{"192.168.2.0/24"}, Routing: RoutingBGP, BgpAsn: 65001},
		},
	}
}

func marshal(t *testing.T, c *Config) []byte {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseValidation(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(c *Config)
		want   []string // substrings of the error; nil means valid
	}{
		{"valid", func(c *Config) {}, nil},
		{"bad account", func(c *Config) { c.Account = "12345" }, []string{`account: "12345" is not a 12-digit AWS account id`}},
		{"bad region", func(c *Config) { c.Region = "Europe" }, []string{`region: "Europe" is not an AWS region name`}},
		{"one az", func(c *Config) { c.AvailabilityZones = []string{"eu-west-1a"} }, []string{"availabilityZones: need at least 2 availability zones"}},
		{"az of another region", func(c *Config) { c.AvailabilityZones[1] = "us-east-1a" }, []string{`availabilityZones[1]: "us-east-1a" is not an availability zone of region "eu-west-1"`}},
		{"bad vpc cidr", func(c *Config) { c.VpcCidr = "10.40.0.0/33" }, []string{`vpcCidr: "10.40.0.0/33" is not a CIDR`}},
		{"public vpc cidr", func(c *Config) { c.VpcCidr = "8.8.0.0/16" }, []string{"vpcCidr: 8.8.0.0/16 is not in a private (RFC 1918) range"}},
		{"vpc cidr host bits", func(c *Config) { c.VpcCidr = "10.40.1.0/16" }, []string{"vpcCidr: 10.40.1.0/16 has host bits set; did you mean 10.40.0.0/16?"}},
		{"bad site cidr", func(c *Config) { c.Sites[0].Cidrs = []string{"192.168.1.0"} }, []string{`sites[0].cidrs[0]: "192.168.1.0" is not a CIDR`}},
		{"ipv6 site cidr", func(c *Config) { c.Sites[0].Cidrs = []string{"2001:db8::/32"} }, []string{"sites[0].cidrs[0]: 2001:db8::/32 is not IPv4"}},
		// A public range opens the DICOM ports to it and routes it down the
		// site's VPN: refused unless the site says it owns public space.
		{"public site cidr", func(c *Config) { c.Sites[0].Cidrs = []string{"8.8.8.0/24"} }, []string{"sites[0].cidrs[0]: 8.8.8.0/24 is not a private range", "set publicCidrs"}},
		{"half the internet", func(c *Config) { c.Sites[0].Cidrs = []string{"128.0.0.0/1"} }, []string{"sites[0].cidrs[0]: 128.0.0.0/1 is not a private range"}},
		{"public site cidr, owned", func(c *Config) { c.Sites[0].Cidrs, c.Sites[0].PublicCidrs = []string{"198.51.100.0/24"}, true }, nil},
		{"shared address space", func(c *Config) { c.Sites[0].Cidrs = []string{"100.64.10.0/24"} }, nil},
		{"no site cidr", func(c *Config) { c.Sites[0].Cidrs = nil }, []string{"sites[0].cidrs: at least one CIDR is needed"}},
		{"overlapping site cidrs", func(c *Config) { c.Sites[1].Cidrs = []string{"192.168.0.0/16"} }, []string{"sites[1].cidrs[0]: 192.168.0.0/16 overlaps 192.168.1.0/24 (sites[0].cidrs[0])"}},
		{"overlap within a site", func(c *Config) { c.Sites[0].Cidrs = []string{"192.168.1.0/24", "192.168.1.128/25"} }, []string{"sites[0].cidrs[1]: 192.168.1.128/25 overlaps 192.168.1.0/24 (sites[0].cidrs[0])"}},
		{"site overlaps vpc", func(c *Config) { c.Sites[0].Cidrs = []string{"10.40.3.0/24"} }, []string{"sites[0].cidrs[0]: 10.40.3.0/24 overlaps the VPC CIDR 10.40.0.0/20"}},
		{"duplicate AE", func(c *Config) { c.Sites[1].CallingAETitle = "A_PACS" }, []string{`sites[1].callingAETitle: duplicate AE title "A_PACS" (also sites[0].callingAETitle)`}},
		{"duplicate AE up to padding", func(c *Config) { c.Sites[1].CallingAETitle = "A_PACS  " }, []string{`duplicate AE title "A_PACS  "`}},
		{"AE too long", func(c *Config) { c.Sites[0].CallingAETitle = "ABCDEFGHIJKLMNOPQ" }, []string{`sites[0].callingAETitle: "ABCDEFGHIJKLMNOPQ": AE title is 17 characters, AE titles have at most 16`}},
		{"AE of 16 is fine", func(c *Config) { c.Sites[0].CallingAETitle = "ABCDEFGHIJKLMNOP" }, nil},
		{"AE empty", func(c *Config) { c.Sites[0].CallingAETitle = "   " }, []string{`sites[0].callingAETitle: "   ": empty AE title`}},
		{"AE backslash", func(c *Config) { c.Sites[0].CallingAETitle = `A\B` }, []string{`sites[0].callingAETitle: "A\\B": AE title has "\\" at position 2`}},
		{"AE allowlist separator", func(c *Config) { c.Sites[0].CallingAETitle = "A@B" }, []string{"reserves"}},
		{"called AE too long", func(c *Config) { c.Dicom.AETitle = "DICOM_INGEST_SERVICE" }, []string{`dicom.aeTitle: "DICOM_INGEST_SERVICE": AE title is 20 characters`}},
		{"no sites", func(c *Config) { c.Sites = nil }, []string{"sites: at least one site is needed"}},
		{"duplicate site name", func(c *Config) { c.Sites[1].Name = "A" }, []string{`sites[1].name: duplicate site name "A" (also sites[0].name)`}},
		{"bad site name", func(c *Config) { c.Sites[0].Name = "st mary" }, []string{`sites[0].name: "st mary" must match`}},
		{"private gateway", func(c *Config) { c.Sites[0].CustomerGatewayIP = "10.1.1.1" }, []string{"sites[0].customerGatewayIp: 10.1.1.1 is not a public address"}},
		{"bad gateway", func(c *Config) { c.Sites[0].CustomerGatewayIP = "hospital.example" }, []string{`sites[0].customerGatewayIp: "hospital.example" is not an IPv4 address`}},
		{"shared gateway", func(c *Config) { c.Sites[1].CustomerGatewayIP = "198.51.100.1" }, []string{"sites[1].customerGatewayIp: 198.51.100.1 is already used by sites[0].customerGatewayIp"}},
		{"bad routing", func(c *Config) { c.Sites[0].Routing = "ospf" }, []string{`sites[0].routing: "ospf" must be static or bgp`}},
		{"bgp without asn", func(c *Config) { c.Sites[1].BgpAsn = 0 }, []string{"sites[1].bgpAsn: 0 is not usable as the customer gateway ASN"}},
		{"bgp with amazon asn", func(c *Config) { c.Sites[1].BgpAsn = 64512 }, []string{"sites[1].bgpAsn: 64512 is not usable"}},
		{"one tunnel cidr", func(c *Config) { c.Sites[0].TunnelInsideCidrs = []string{"169.254.10.0/30"} }, []string{"sites[0].tunnelInsideCidrs: give both tunnels' CIDRs or none, got 1"}},
		{"tunnel cidr not /30", func(c *Config) { c.Sites[0].TunnelInsideCidrs = []string{"169.254.10.0/29", "169.254.10.8/30"} }, []string{"sites[0].tunnelInsideCidrs[0]: 169.254.10.0/29 must be a /30 in 169.254.0.0/16"}},
		{"tunnel cidr reserved", func(c *Config) { c.Sites[0].TunnelInsideCidrs = []string{"169.254.1.0/30", "169.254.10.8/30"} }, []string{"sites[0].tunnelInsideCidrs[0]: 169.254.1.0/30 is reserved by AWS"}},
		{"tunnel cidr reused", func(c *Config) {
			c.Sites[0].TunnelInsideCidrs = []string{"169.254.10.0/30", "169.254.10.4/30"}
			c.Sites[1].TunnelInsideCidrs = []string{"169.254.10.4/30", "169.254.10.8/30"}
		}, []string{"sites[1].tunnelInsideCidrs[0]: 169.254.10.4/30 is already used by sites[0].tunnelInsideCidrs[1]"}},
		{"port", func(c *Config) { c.Dicom.Port = 70000 }, []string{"dicom.port: 70000 is not a TCP port"}},
		{"idle timeout", func(c *Config) { c.Dicom.IdleTimeoutSeconds = 7200 }, []string{"dicom.idleTimeoutSeconds: 7200 is outside the NLB's range 60..6000"}},
		{"one task", func(c *Config) { c.Scp.MinTasks = 1 }, []string{"scp.minTasks: 1: at least 2 tasks"}},
		{"max below min", func(c *Config) { c.Scp.MinTasks, c.Scp.MaxTasks = 4, 3 }, []string{"scp.maxTasks: 3 is less than minTasks 4"}},
		{"task size", func(c *Config) { c.Scp.Cpu, c.Scp.MemoryMiB = 256, 4096 }, []string{"scp: cpu 256 with memoryMiB 4096 is not a Fargate task size"}},
		{"stop timeout", func(c *Config) { c.Scp.StopTimeoutSeconds = 300 }, []string{"scp.stopTimeoutSeconds: 300 is outside 11..120"}},
		// Fargate takes 2 s, but the SCP needs its drain and its exit grace.
		{"stop timeout under the drain margin", func(c *Config) { c.Scp.StopTimeoutSeconds = 5 }, []string{"scp.stopTimeoutSeconds: 5 is outside 11..120"}},
		{"stop timeout of the drain margin", func(c *Config) { c.Scp.StopTimeoutSeconds = 10 }, []string{"scp.stopTimeoutSeconds: 10 is outside 11..120"}},
		{"stop timeout of the drain margin and a second", func(c *Config) { c.Scp.StopTimeoutSeconds = 11 }, nil},
		{"association target", func(c *Config) { c.Scp.MaxAssociations, c.Scp.TargetAssociationsPerTask = 10, 20 }, []string{"scp.targetAssociationsPerTask: 20 must be between 1 and maxAssociations (10)"}},
		{"put timeout", func(c *Config) { c.Scp.S3PutTimeoutSeconds = 61 }, []string{"scp.s3PutTimeoutSeconds: 61 is outside 1..60"}},
		{"amazon asn", func(c *Config) { c.Vpn.AmazonSideAsn = 100 }, []string{"vpn.amazonSideAsn: 100 is not a private ASN"}},
		{"client vpn", func(c *Config) {
			c.Vpn.ClientVpn = &ClientVpn{ClientCidr: "192.168.0.0/16", ServerCertificateArn: "nope", ClientRootCertificateArn: "arn:aws:acm:eu-west-1:123456789012:certificate/abc-1", CallingAETitles: []string{"B_PACS"}}
		}, []string{
			"vpn.clientVpn.clientCidr: 192.168.0.0/16 overlaps 192.168.1.0/24 (sites[0].cidrs[0])",
			`vpn.clientVpn.serverCertificateArn: "nope" is not an ACM certificate ARN`,
			`vpn.clientVpn.callingAETitles[0]: duplicate AE title "B_PACS" (also sites[1].callingAETitle)`,
		}},
		{"backup vault lock", func(c *Config) {
			c.Pipeline.BackupRetentionDays = 7
			c.Pipeline.BackupVaultLock = &BackupVaultLock{MinRetentionDays: 30, ChangeableForDays: new(1)}
		}, []string{
			"pipeline.backupVaultLock.minRetentionDays: 30 must be between 1 and backupRetentionDays (7)",
			"pipeline.backupVaultLock.changeableForDays: 1 must be at least 3 (or left out, for governance mode)",
		}},
		{"backup copy to another region and account", func(c *Config) {
			c.Pipeline.BackupCopy = &BackupCopy{VaultArn: "arn:aws:backup:eu-central-1:210987654321:backup-vault:dicom-ingest-copies"}
		}, nil},
		{"backup copy to a vault of this account and region", func(c *Config) {
			c.Pipeline.BackupCopy = &BackupCopy{VaultArn: "arn:aws:backup:eu-west-1:123456789012:backup-vault:air-gapped"}
		}, nil},
		{"backup copy without a vault", func(c *Config) { c.Pipeline.BackupCopy = &BackupCopy{} }, []string{
			`pipeline.backupCopy.vaultArn: "" is not a backup vault ARN`,
		}},
		{"backup copy to a vault name", func(c *Config) { c.Pipeline.BackupCopy = &BackupCopy{VaultArn: "dicom-ingest-copies"} }, []string{
			`pipeline.backupCopy.vaultArn: "dicom-ingest-copies" is not a backup vault ARN`,
		}},
		{"backup copy to a recovery point", func(c *Config) {
			c.Pipeline.BackupCopy = &BackupCopy{VaultArn: "arn:aws:backup:eu-central-1:210987654321:recovery-point:1EB3B5E7-9EB0-435A-A80B-108B488B0D45"}
		}, []string{"is not a backup vault ARN"}},
		{"backup copy to a bad region", func(c *Config) {
			c.Pipeline.BackupCopy = &BackupCopy{VaultArn: "arn:aws:backup:europe:210987654321:backup-vault:copies"}
		}, []string{"is not a backup vault ARN"}},
		{"backup copy to another partition", func(c *Config) {
			c.Pipeline.BackupCopy = &BackupCopy{VaultArn: "arn:aws-cn:backup:cn-north-1:210987654321:backup-vault:copies"}
		}, []string{`pipeline.backupCopy.vaultArn: "arn:aws-cn:backup:cn-north-1:210987654321:backup-vault:copies" is not in partition aws, this deployment's (region eu-west-1)`}},
		{"backup copy naming a region of another partition", func(c *Config) {
			c.Pipeline.BackupCopy = &BackupCopy{VaultArn: "arn:aws:backup:us-gov-west-1:210987654321:backup-vault:copies"}
		}, []string{"is not in partition aws"}},
		{"audit backups kept shorter than the daily ones", func(c *Config) { c.Pipeline.AuditBackupRetentionDays = 30 }, []string{
			"pipeline.auditBackupRetentionDays: 30 must be at least backupRetentionDays (35)",
		}},
		{"object lock mode", func(c *Config) { c.Storage.ObjectLock = &ObjectLock{Mode: "forever", Days: 10} }, []string{`storage.objectLock.mode: "forever" must be GOVERNANCE or COMPLIANCE`}},
		{"object lock without staging", func(c *Config) {
			c.Storage.ObjectLock, c.Scp.Staging = &ObjectLock{Mode: "COMPLIANCE", Days: 2555}, nil
		}, []string{"storage.objectLock: needs scp.staging: without it each task rewrites its run marker in the bucket every 5 s"}},
		{"object lock vs noncurrent expiry", func(c *Config) {
			c.Storage.ObjectLock = &ObjectLock{Mode: "GOVERNANCE", Days: 100}
			c.Storage.Lifecycle.NoncurrentVersionExpirationDays = 30
		}, []string{"storage.lifecycle.noncurrentVersionExpirationDays: 30 is shorter than the object lock retention of 100 days"}},
		{"lifecycle order", func(c *Config) {
			c.Storage.Lifecycle.IntelligentTieringDays, c.Storage.Lifecycle.GlacierInstantRetrievalDays = 90, 30
		}, []string{"storage.lifecycle.glacierInstantRetrievalDays: 30 must be later than intelligentTieringDays 90"}},
		{"negative lifecycle", func(c *Config) { c.Storage.Lifecycle.AuditExpirationDays = -1 }, []string{"storage.lifecycle.auditExpirationDays: -1 must not be negative"}},
		{"patient data policy", func(c *Config) { c.Pipeline.EventPatientData = "everything" }, []string{`pipeline.eventPatientData: "everything" must be one of none, id, full`}},
		{"reserved concurrency", func(c *Config) { c.Pipeline.ReservedConcurrency = 1 }, []string{"pipeline.reservedConcurrency: 1 is outside 2..999"}},
		// commitment would reserve 1001: one more than its pollers.
		{"reserved concurrency with commitment's one more", func(c *Config) { c.Pipeline.ReservedConcurrency = 1000 }, []string{"pipeline.reservedConcurrency: 1000 is outside 2..999"}},
		{"reserved concurrency at its most", func(c *Config) { c.Pipeline.ReservedConcurrency, c.Pipeline.AccountConcurrency = 999, 4097 }, nil},
		// Lambda keeps 100 of the account's concurrency unreserved: 4 × 300 + 1 passed, and the deployment failed.
		{"reserved concurrency over the account's", func(c *Config) { c.Pipeline.ReservedConcurrency = 300 }, []string{
			"pipeline.reservedConcurrency: 300 × 4 functions + 1 for commitment's schedule = 1201 reserved of pipeline.accountConcurrency 1000 leaves -201 unreserved; " +
				"Lambda refuses to leave fewer than 100: at most 224 here, or raise the account's quota and pipeline.accountConcurrency",
		}},
		{"reserved concurrency at the account's most", func(c *Config) { c.Pipeline.ReservedConcurrency = 224 }, nil},
		{"reserved concurrency just over the account's", func(c *Config) { c.Pipeline.ReservedConcurrency = 225 }, []string{
			"= 901 reserved of pipeline.accountConcurrency 1000 leaves 99 unreserved",
		}},
		{"reserved concurrency with the audit feed's function", func(c *Config) {
			c.Audit.Syslog = &AuditSyslog{Host: "192.168.1.20", CaSecretArn: caArn}
			c.Pipeline.ReservedConcurrency = 180
		}, []string{"180 × 5 functions + 1 for commitment's schedule = 901 reserved", "at most 179 here"}},
		{"reserved concurrency within a larger account", func(c *Config) { c.Pipeline.ReservedConcurrency, c.Pipeline.AccountConcurrency = 300, 1302 }, nil},
		{"reserved concurrency over a larger account's", func(c *Config) { c.Pipeline.ReservedConcurrency, c.Pipeline.AccountConcurrency = 300, 1300 }, []string{
			"leaves 99 unreserved; Lambda refuses to leave fewer than 100: at most 299 here",
		}},
		// An account too small for the least reservation: the most that fits would be below 2 (it said "at most 1"
		// or "at most 0", which pipeline.reservedConcurrency refuses).
		{"an account too small for any reservation", func(c *Config) { c.Pipeline.ReservedConcurrency, c.Pipeline.AccountConcurrency = 2, 108 }, []string{
			"2 × 4 functions + 1 for commitment's schedule = 9 reserved of pipeline.accountConcurrency 108 leaves 99 unreserved; " +
				"Lambda refuses to leave fewer than 100: no reservation fits, the least (2 each, 9 in all) needs a pipeline.accountConcurrency of at least 109; " +
				"raise the account's quota and pipeline.accountConcurrency",
		}},
		{"an account of 100", func(c *Config) { c.Pipeline.AccountConcurrency = 100 }, []string{"no reservation fits, the least (2 each, 9 in all) needs a pipeline.accountConcurrency of at least 109"}},
		{"an account too small with the audit feed's function", func(c *Config) {
			c.Audit.Syslog = &AuditSyslog{Host: "192.168.1.20", CaSecretArn: caArn}
			c.Pipeline.ReservedConcurrency, c.Pipeline.AccountConcurrency = 2, 110
		}, []string{"no reservation fits, the least (2 each, 11 in all) needs a pipeline.accountConcurrency of at least 111"}},
		{"an account just large enough for the least", func(c *Config) { c.Pipeline.ReservedConcurrency, c.Pipeline.AccountConcurrency = 2, 109 }, nil},
		{"an account that fits 2, asked for 3", func(c *Config) { c.Pipeline.ReservedConcurrency, c.Pipeline.AccountConcurrency = 3, 110 }, []string{"at most 2 here"}},
		{"log retention", func(c *Config) { c.LogRetentionDays = 42 }, []string{"logRetentionDays: 42 is not a CloudWatch Logs retention value"}},
		{"alarm email", func(c *Config) { c.AlarmEmail = "oncall" }, []string{`alarmEmail: "oncall" is not an e-mail address`}},
		// DICOM over TLS (tls_test.go has withTLS).
		{"plain, as before", func(c *Config) {}, nil},
		{"TLS with a bound site", func(c *Config) { withTLS(c); c.Sites[0].CertificateName = "pacs.a.example" }, nil},
		{"TLS only", func(c *Config) { withTLS(c); off := false; c.Dicom.TLS.PlainListener = &off; c.Dicom.TLS.Port = 104 }, nil},
		{"name without TLS", func(c *Config) { c.Sites[0].CertificateName = "pacs.a.example" },
			[]string{`sites[0].certificateName: "pacs.a.example" needs dicom.tls`}},
		{"bad name", func(c *Config) { withTLS(c); c.Sites[0].CertificateName = "pacs a" },
			[]string{`sites[0].certificateName: "pacs a": certificate name has a character other than`}},
		{"same name twice", func(c *Config) {
			withTLS(c)
			c.Sites[0].CertificateName, c.Sites[1].CertificateName = "pacs.example", "PACS.example"
		}, []string{`sites[1].certificateName: "PACS.example" is also sites[0].certificateName`}},
		{"TLS port is the plain port", func(c *Config) { withTLS(c); c.Dicom.TLS.Port = 104 }, []string{"dicom.tls.port: 104 is also dicom.port"}},
		{"TLS port", func(c *Config) { withTLS(c); c.Dicom.TLS.Port = 99999 }, []string{"dicom.tls.port: 99999 is not a TCP port"}},
		{"partial secret ARN", func(c *Config) {
			withTLS(c)
			c.Dicom.TLS.ServerCertificateSecretArn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-tls"
		}, []string{"dicom.tls.serverCertificateSecretArn: \"arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-tls\" is not a complete Secrets Manager secret ARN"}},
		{"secret elsewhere", func(c *Config) {
			withTLS(c)
			c.Dicom.TLS.ServerCertificateSecretArn = strings.Replace(testSecretArn, "eu-west-1", "us-east-1", 1)
		}, []string{"the secret is in 123456789012/us-east-1, not in this environment's 123456789012/eu-west-1"}},
		{"KMS key", func(c *Config) { withTLS(c); c.Dicom.TLS.SecretKmsKeyArn = "alias/mine" }, []string{"dicom.tls.secretKmsKeyArn"}},
		{"no CA files", func(c *Config) { withTLS(c); c.Dicom.TLS.ClientCaFile, c.Dicom.TLS.ServerCaFile = "", "" },
			[]string{"dicom.tls.clientCaFile: is required", "dicom.tls.serverCaFile: is required"}},
		{"# in an AE title", func(c *Config) { c.Sites[0].CallingAETitle = "A#B" }, []string{"reserves"}},
		{"pacs in the site", func(c *Config) { c.Sites[0].Pacs = &Pacs{Host: "192.168.1.20", Port: 104} }, nil},
		{"pacs outside the site", func(c *Config) { c.Sites[0].Pacs = &Pacs{Host: "192.168.2.20", Port: 104} },
			[]string{"sites[0].pacs.host: 192.168.2.20 is in none of the site's cidrs"}},
		{"pacs by name", func(c *Config) { c.Sites[0].Pacs = &Pacs{Host: "pacs.hospital", Port: 104} }, []string{`sites[0].pacs.host: "pacs.hospital" is not an IPv4 address`}},
		{"pacs port", func(c *Config) { c.Sites[0].Pacs = &Pacs{Host: "192.168.1.20", Port: 0} }, []string{"sites[0].pacs.port: 0 is not a TCP port"}},
		{"commitment wait", func(c *Config) { c.Commitment.WaitSeconds = 30 }, []string{"commitment.waitSeconds: 30 is outside 60..3600"}},
		{"commitment report", func(c *Config) { c.Commitment.ReportMinutes = 3000 }, []string{"commitment.reportMinutes: 3000 is outside 5..1440"}},
		{"all problems at once", func(c *Config) {
			c.Account = "x"
			c.Sites[0].CallingAETitle = "ABCDEFGHIJKLMNOPQRS"
		}, []string{"account:", "sites[0].callingAETitle:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mutate(c)
			got, err := Parse(marshal(t, c))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Parse: unexpected error:\n%v", err)
				}
				if got == nil {
					t.Fatal("Parse returned nil config without error")
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse: no error, want %q", tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q; got:\n%v", w, err)
				}
			}
		})
	}
}

// TestAETitles holds the stack's AE titles, its own (dicom.aeTitle) and a site's calling one, to the callers' one
// table (accesscontrol.CheckAETitle), each refusal naming its configuration path.
func TestAETitles(t *testing.T) {
	for _, tc := range aetitletest.Titles {
		for _, field := range []string{"dicom.aeTitle", "sites[0].callingAETitle"} {
			t.Run(tc.Name+"/"+field, func(t *testing.T) {
				c := valid()
				if field == "dicom.aeTitle" {
					c.Dicom.AETitle = tc.AE
				} else {
					c.Sites[0].CallingAETitle = tc.AE
				}
				_, err := Parse(marshal(t, c))
				switch {
				case !tc.Valid:
					if want := fmt.Sprintf("%s: %q: %s", field, tc.AE, tc.Problem); err == nil || !strings.Contains(err.Error(), want) {
						t.Errorf("Parse error = %v, want one containing %q", err, want)
					}
				case err != nil:
					t.Errorf("%s %q refused: %v", field, tc.AE, err)
				}
			})
		}
	}
}

func TestParseSyntax(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"unknown field", `{"name":"x","acount":"1"}`, `acount: unknown field "acount"`},
		// A typo deep inside says where it is: the same key may be right
		// elsewhere (port, host), and sites are many.
		{"unknown nested field", `{"name":"x","pipeline":{"reservedConcurency":3}}`, `pipeline.reservedConcurency: unknown field`},
		{"unknown field in a list", `{"name":"x","sites":[{"name":"a"},{"name":"b","cidr":[]}]}`, `sites[1].cidr: unknown field`},
		{"unknown field deeper in a list", `{"sites":[{"name":"a","pacs":{"host":"10.0.0.1","prot":104}}]}`, `sites[0].pacs.prot: unknown field`},
		{"unknown field after a skipped value", `{"vpcCidr":"10.0.0.0/16","sites":[{"cidrs":["10.1.0.0/16"],"pacs":{"host":"10.1.0.1","port":104}}],"scp":{"staging":{"maxAgeMinute":1}}}`, `scp.staging.maxAgeMinute: unknown field`},
		{"trailing data", `{"name":"x"} {}`, "trailing data"},
		{"not json", `name: x`, "config: parse:"},
		{"wrong type", `{"sites":"a"}`, "sites: cannot unmarshal string into []config.Site"},
		// A value of the wrong type says where it is too, list index and all.
		{"wrong type in a list", `{"name":"x","sites":[{"name":"a"},{"name":1}]}`, "sites[1].name: cannot unmarshal number into string"},
		{"wrong type deeper in a list", `{"sites":[{"name":"a"},{"pacs":{"host":"10.1.0.1","port":"104"}}]}`, "sites[1].pacs.port: cannot unmarshal string into int"},
		{"wrong type in a list in a list", `{"sites":[{"name":"a","cidrs":["10.1.0.0/16",2]}]}`, "sites[0].cidrs[1]: cannot unmarshal number into string"},
		{"a list where an object belongs", `{"sites":[{"name":"a"},{"pacs":[104]}]}`, "sites[1].pacs: cannot unmarshal array into config.Pacs"},
		{"a fraction where an integer belongs", `{"scp":{"cpu":1.5}}`, "scp.cpu: cannot unmarshal number 1.5 into int"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%q) = %v, want error containing %q", tc.in, err, tc.want)
			}
			if errors.Is(err, ErrInvalid) {
				t.Errorf("syntax error should not be ErrInvalid: %v", err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse(marshal(t, valid()))
	if err != nil {
		t.Fatal(err)
	}
	want := struct {
		Port, Idle, Min, Max, MaxAssoc, TargetAssoc, Stop, Quiet, PutTimeout int
		Proxy                                                                bool
		Routing, Patient                                                     string
		Asn                                                                  int64
	}{104, 3600, 2, 4, 64, 32, 120, 60, 8, true, RoutingStatic, PatientDataNone, 64512}
	got := want
	got.PutTimeout = c.Scp.S3PutTimeoutSeconds
	got.Port, got.Idle, got.Min, got.Max = c.Dicom.Port, c.Dicom.IdleTimeoutSeconds, c.Scp.MinTasks, c.Scp.MaxTasks
	got.MaxAssoc, got.TargetAssoc, got.Stop, got.Quiet = c.Scp.MaxAssociations, c.Scp.TargetAssociationsPerTask, c.Scp.StopTimeoutSeconds, c.Pipeline.QuietPeriodSeconds
	got.Proxy, got.Routing, got.Patient, got.Asn = c.ProxyProtocolEnabled(), c.Sites[0].Routing, c.Pipeline.EventPatientData, c.Vpn.AmazonSideAsn
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
	}
}

// TestS3PutTimeoutDefaultIsShared: the stack's scp.s3PutTimeoutSeconds
// defaults to objectstore.DefaultPutTimeout, where scp-task's
// --s3-put-timeout takes its default too (scp-task/internal/config
// TestS3PutTimeoutDefaultIsShared). Each spelt out 8 s: a change of one left
// the deployed tasks and make run on different bounds.
func TestS3PutTimeoutDefaultIsShared(t *testing.T) {
	c, err := Parse(marshal(t, valid()))
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(c.Scp.S3PutTimeoutSeconds) * time.Second; got != objectstore.DefaultPutTimeout {
		t.Errorf("scp.s3PutTimeoutSeconds defaults to %s; objectstore.DefaultPutTimeout is %s", got, objectstore.DefaultPutTimeout)
	}
}

func TestCallingAEs(t *testing.T) {
	c := valid()
	c.Sites[0].Cidrs = append(c.Sites[0].Cidrs, "192.168.3.0/24")
	c.Vpn.ClientVpn = &ClientVpn{ClientCidr: "100.64.0.0/22",
		ServerCertificateArn:     "arn:aws:acm:eu-west-1:123456789012:certificate/abc-1",
		ClientRootCertificateArn: "arn:aws:acm:eu-west-1:123456789012:certificate/abc-2",
		CallingAETitles:          []string{"CLINIC"}}
	got := c.CallingAEs()
	want := "A_PACS@192.168.1.0/24|192.168.3.0/24,B_PACS@192.168.2.0/24,CLINIC@10.40.0.0/20"
	if got != want {
		t.Errorf("CallingAEs() = %q, want %q", got, want)
	}
	if d := cmp.Diff([]string{"192.168.1.0/24", "192.168.3.0/24", "192.168.2.0/24"}, c.SourceCidrs()); d != "" {
		t.Errorf("SourceCidrs (-want +got):\n%s", d)
	}
}

func TestLoadExamples(t *testing.T) {
	for _, env := range []string{"dev", "prod"} {
		t.Run(env, func(t *testing.T) {
			c, err := Load(".", env)
			if err != nil {
				t.Fatal(err)
			}
			if c.Name != env || len(c.Sites) == 0 {
				t.Errorf("Load(%q) = name %q with %d sites", env, c.Name, len(c.Sites))
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	c := valid()
	c.Name = "other"
	if err := os.WriteFile(filepath.Join(dir, "mismatch.json"), marshal(t, c), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ env, want string }{
		{"../etc/passwd", "must match"},
		{"", "must match"},
		{"missing", "no such file"},
		{"mismatch", `name "other" does not match the environment "mismatch"`},
	}
	for _, tc := range cases {
		t.Run(tc.env, func(t *testing.T) {
			_, err := Load(dir, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load(%q) = %v, want error containing %q", tc.env, err, tc.want)
			}
		})
	}
}

// FuzzParse checks that no input makes Parse panic and that every accepted
// configuration survives a round trip unchanged.
func FuzzParse(f *testing.F) {
	for _, env := range []string{"dev", "prod"} {
		if b, err := os.ReadFile(env + ".json"); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"sites":[{"cidrs":["10.0.0.0/8","10.0.0.0/33"]}]}`))
	f.Add([]byte(`{"vpn":{"clientVpn":{"clientCidr":"::/0"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if c != nil {
				t.Fatal("Parse returned a config with an error")
			}
			return
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("marshal accepted config: %v", err)
		}
		c2, err := Parse(b)
		if err != nil {
			t.Fatalf("accepted config does not re-parse: %v", err)
		}
		if d := cmp.Diff(c, c2); d != "" {
			t.Fatalf("round trip changed the config (-first +second):\n%s", d)
		}
		_ = c.CallingAEs()
	})
}

func TestCommitmentSettings(t *testing.T) {
	c := valid()
	c.Sites[0].Pacs = &Pacs{Host: "192.168.1.20", Port: 104}
	c.Sites[1].Pacs, c.Sites[1].QuarantinedCommitted = &Pacs{Host: "192.168.2.9", Port: 4242}, true
	got, err := Parse(marshal(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if p := got.CommitmentPeers(); p != "A_PACS=192.168.1.20:104,B_PACS=192.168.2.9:4242" {
		t.Errorf("CommitmentPeers() = %q", p)
	}
	if q := got.QuarantinedCommitted(); q != "B_PACS" {
		t.Errorf("QuarantinedCommitted() = %q", q)
	}
	if got.Commitment.WaitSeconds != 300 || got.Commitment.ReportMinutes != 60 {
		t.Errorf("commitment defaults %+v", got.Commitment)
	}
}

// TestExplicitZero: a setting given as 0 (or "") is never silently its
// default. Where 0 means something it is kept: a deregistration delay of 0
// (documented as allowed, and impossible to set while 0 read as unset), an
// event archive kept forever. Everywhere else it is refused, naming the
// setting.
func TestExplicitZero(t *testing.T) {
	with := func(t *testing.T, path string, v any) []byte {
		t.Helper()
		c := valid()
		c.Scp.Staging = &Staging{}
		var tree map[string]any
		if err := json.Unmarshal(marshal(t, c), &tree); err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(path, ".")
		m := tree
		for _, p := range parts[:len(parts)-1] {
			if i := strings.Index(p, "["); i > 0 { // sites[0]
				m = m[p[:i]].([]any)[0].(map[string]any)
				continue
			}
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = v
		b, err := json.Marshal(tree)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Run("kept", func(t *testing.T) {
		c, err := Parse(with(t, "scp.deregistrationDelaySeconds", 0))
		if err != nil {
			t.Fatal(err)
		}
		if c.Scp.DeregistrationDelay() != 0 {
			t.Errorf("scp.deregistrationDelaySeconds 0 reads %d", c.Scp.DeregistrationDelay())
		}
		c, err = Parse(with(t, "pipeline.archiveRetentionDays", 0))
		if err != nil {
			t.Fatal(err)
		}
		if c.Pipeline.ArchiveRetention() != 0 {
			t.Errorf("pipeline.archiveRetentionDays 0 reads %d", c.Pipeline.ArchiveRetention())
		}
		// Absent, they take their defaults, and an accepted config
		// survives a round trip with its zeros.
		c, err = Parse(marshal(t, valid()))
		if err != nil {
			t.Fatal(err)
		}
		if c.Scp.DeregistrationDelay() != 120 || c.Pipeline.ArchiveRetention() != 365 {
			t.Errorf("defaults %d, %d", c.Scp.DeregistrationDelay(), c.Pipeline.ArchiveRetention())
		}
		zero, err := Parse(with(t, "scp.deregistrationDelaySeconds", 0))
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(marshal(t, zero))
		if err != nil || again.Scp.DeregistrationDelay() != 0 {
			t.Errorf("round trip: %v, %d", err, again.Scp.DeregistrationDelay())
		}
	})
	for _, tc := range []struct {
		path string
		v    any
		want string
	}{
		{"logRetentionDays", 0, "logRetentionDays: 0 is not a CloudWatch Logs retention value"},
		{"dicom.port", 0, "dicom.port: 0 is not a TCP port"},
		{"dicom.idleTimeoutSeconds", 0, "dicom.idleTimeoutSeconds: 0 is outside"},
		{"scp.cpu", 0, "scp: cpu 0 with memoryMiB 2048"},
		{"scp.memoryMiB", 0, "scp: cpu 1024 with memoryMiB 0"},
		{"scp.minTasks", 0, "scp.minTasks: 0"},
		{"scp.maxTasks", 0, "scp.maxTasks: 0"},
		{"scp.maxAssociations", 0, "scp.maxAssociations: 0 must be at least 1"},
		{"scp.targetCpuPercent", 0, "scp.targetCpuPercent: 0 is outside"},
		{"scp.targetAssociationsPerTask", 0, "scp.targetAssociationsPerTask: 0 must be between 1"},
		{"scp.stopTimeoutSeconds", 0, "scp.stopTimeoutSeconds: 0 is outside"},
		{"scp.deregistrationDelaySeconds", -1, "scp.deregistrationDelaySeconds: -1 is outside 0..3600"},
		{"scp.staging.maxBacklogGiB", 0, "scp.staging.maxBacklogGiB: 0 is outside"},
		{"scp.staging.maxAgeMinutes", 0, "scp.staging.maxAgeMinutes: 0 is outside"},
		{"scp.staging.alarmAgeSeconds", 0, "scp.staging.alarmAgeSeconds: 0 must be between"},
		{"vpn.amazonSideAsn", 0, "vpn.amazonSideAsn: 0 is not a private ASN"},
		{"sites[0].routing", "", `sites[0].routing: "" must be static or bgp`},
		{"sites[0].bgpAsn", 0, "sites[0].bgpAsn: 0 is outside"},
		{"storage.accessLogRetentionDays", 0, "storage.accessLogRetentionDays: 0 must be at least 1"},
		{"pipeline.quietPeriodSeconds", 0, "pipeline.quietPeriodSeconds: 0 is outside"},
		{"pipeline.eventPatientData", "", `pipeline.eventPatientData: "" must be one of`},
		{"pipeline.archiveRetentionDays", -1, "pipeline.archiveRetentionDays: -1 must be 0"},
		{"pipeline.reservedConcurrency", 0, "pipeline.reservedConcurrency: 0 is outside"},
		{"pipeline.accountConcurrency", 0, "pipeline.accountConcurrency: 0 must be positive"},
		{"pipeline.maxReceiveCount", 0, "pipeline.maxReceiveCount: 0 is outside"},
		{"pipeline.backupRetentionDays", 0, "pipeline.backupRetentionDays: 0 must be at least 1"},
		{"commitment.waitSeconds", 0, "commitment.waitSeconds: 0 is outside"},
		{"commitment.reportMinutes", 0, "commitment.reportMinutes: 0 is outside"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			_, err := Parse(with(t, tc.path, tc.v))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s = %v: got %v, want an error containing %q", tc.path, tc.v, err, tc.want)
			}
		})
	}
}

// TestAllowlistSeparatorsInAETitles: the characters the SCP's allowlist
// syntax reserves (SCP_CALLING_AES: `AE@CIDR|CIDR…[#NAME]`, comma-separated)
// and the commitment peers' (`AE=host:port`) are refused in the calling AE
// titles they list (a site's, a Client VPN one), and all of them are taken
// in the SCP's own AE title, which neither holds (the onboarding kit writes
// any title: onboarding's TestKitWritesEveryAETitleValidationTakes).
// dicom.aeTitle refused , @ | # for the allowlist's sake.
func TestAllowlistSeparatorsInAETitles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *Config, ae string)
		field  string
		taken  string // of , @ | # =
	}{
		{"own", func(c *Config, ae string) { c.Dicom.AETitle = ae }, "dicom.aeTitle", ",@|#="},
		{"site", func(c *Config, ae string) { c.Sites[0].CallingAETitle = ae }, "sites[0].callingAETitle", ""},
		{"client vpn", func(c *Config, ae string) {
			c.Vpn.ClientVpn = &ClientVpn{ClientCidr: "100.64.0.0/22",
				ServerCertificateArn:     "arn:aws:acm:eu-west-1:123456789012:certificate/abc-1",
				ClientRootCertificateArn: "arn:aws:acm:eu-west-1:123456789012:certificate/abc-2",
				CallingAETitles:          []string{ae}}
		}, "vpn.clientVpn.callingAETitles[0]", ""},
	} {
		// A site's title with a = was taken, and its commitment peer
		// (CT=1=10.1.2.3:104) read as the peer CT at the host 1=10.1.2.3:
		// every report of the site went nowhere and was given up.
		for _, sep := range ",@|#=" {
			ae := "A" + string(sep) + "B"
			t.Run(tc.name+"/"+ae, func(t *testing.T) {
				c := valid()
				tc.change(c, ae)
				_, err := Parse(marshal(t, c))
				switch {
				case strings.ContainsRune(tc.taken, sep):
					if err != nil {
						t.Errorf("%s %q refused: %v", tc.field, ae, err)
					}
				case err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%s: AE title %q contains one of", tc.field, ae)):
					t.Errorf("%s %q: Parse error = %v, want it refused", tc.field, ae, err)
				}
			})
		}
	}
}
