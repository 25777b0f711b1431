package config

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol"
)

// The bounds of a deployment's Storage Commitment settings: how long the
// instances a request names may still be in flight (commitment.waitSeconds)
// and how long a result's delivery is retried (commitment.reportMinutes).
const (
	MinCommitmentWaitSeconds   = 60
	MaxCommitmentWaitSeconds   = 3600
	MinCommitmentReportMinutes = 5
	MaxCommitmentReportMinutes = 1440
)

var (
	accountRE  = regexp.MustCompile(`^[0-9]{12}$`)
	regionRE   = regexp.MustCompile(`^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]$`)
	siteNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{0,31}$`)
	acmArnRE   = regexp.MustCompile(`^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[A-Za-z0-9-]+$`)
	// vaultArnRE: a backup vault's ARN (names as CreateBackupVault allows).
	vaultArnRE = regexp.MustCompile(`^arn:(aws[a-z-]*):backup:([a-z0-9-]+):([0-9]{12}):backup-vault:([A-Za-z0-9_-]{2,50})$`)
	emailRE    = regexp.MustCompile(`^[^@\s]+@[^@\s]+\.[^@\s]+$`)
)

// minReservedConcurrency and maxReservedConcurrency bound pipeline.reservedConcurrency: an SQS event source's
// maximum concurrency is 2..1000, and commitment reserves one more.
const (
	minReservedConcurrency = 2
	maxReservedConcurrency = 999
)

// logRetentionDays are the values CloudWatch Logs accepts.
var logRetentionDays = []int{1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}

// fargateMemory lists the memory sizes (MiB) Fargate accepts per CPU value.
func fargateMemoryOK(cpu, mem int) bool {
	between := func(lo, hi, step int) bool { return mem >= lo && mem <= hi && (mem-lo)%step == 0 }
	switch cpu {
	case 256:
		return mem == 512 || mem == 1024 || mem == 2048
	case 512:
		return between(1024, 4096, 1024)
	case 1024:
		return between(2048, 8192, 1024)
	case 2048:
		return between(4096, 16384, 1024)
	case 4096:
		return between(8192, 30720, 1024)
	case 8192:
		return between(16384, 61440, 4096)
	case 16384:
		return between(32768, 122880, 8192)
	}
	return false
}

// reservedTunnelCidrs may not be used as tunnel inside CIDRs (AWS reserves them).
var reservedTunnelCidrs = []string{
	"169.254.0.0/30", "169.254.1.0/30", "169.254.2.0/30", "169.254.3.0/30",
	"169.254.4.0/30", "169.254.5.0/30", "169.254.169.252/30",
}

// problems collects validation errors with their field paths.
type problems []error

func (p *problems) addf(field, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// Validate checks the configuration after defaults were applied. The error
// wraps ErrInvalid and lists every problem, one per line.
func (c *Config) Validate() error {
	var p problems
	if !envNameRE.MatchString(c.Name) {
		p.addf("name", "%q must match %s", c.Name, envNameRE)
	}
	if !accountRE.MatchString(c.Account) {
		p.addf("account", "%q is not a 12-digit AWS account id", c.Account)
	}
	if !regionRE.MatchString(c.Region) {
		p.addf("region", "%q is not an AWS region name", c.Region)
	}
	if len(c.AvailabilityZones) < 2 {
		p.addf("availabilityZones", "need at least 2 availability zones for high availability, got %d", len(c.AvailabilityZones))
	}
	for i, az := range c.AvailabilityZones {
		if !strings.HasPrefix(az, c.Region) || len(az) != len(c.Region)+1 {
			p.addf(fmt.Sprintf("availabilityZones[%d]", i), "%q is not an availability zone of region %q", az, c.Region)
		}
		if slices.Index(c.AvailabilityZones, az) != i {
			p.addf(fmt.Sprintf("availabilityZones[%d]", i), "%q is listed twice", az)
		}
	}
	vpc, vpcOK := parseCidr(&p, "vpcCidr", c.VpcCidr)
	if vpcOK {
		if !isPrivate(vpc) {
			p.addf("vpcCidr", "%s is not in a private (RFC 1918) range", vpc)
		}
		if vpc.Bits() < 16 || vpc.Bits() > 22 {
			p.addf("vpcCidr", "%s: prefix length must be between /16 and /22", vpc)
		}
	}
	if c.AlarmEmail != "" && !emailRE.MatchString(c.AlarmEmail) {
		p.addf("alarmEmail", "%q is not an e-mail address", c.AlarmEmail)
	}
	if !slices.Contains(logRetentionDays, c.LogRetentionDays) {
		p.addf("logRetentionDays", "%d is not a CloudWatch Logs retention value (one of %v)", c.LogRetentionDays, logRetentionDays)
	}

	// DICOM endpoint.
	if c.Dicom.Port < 1 || c.Dicom.Port > 65535 {
		p.addf("dicom.port", "%d is not a TCP port", c.Dicom.Port)
	}
	if msg := calledAEProblem(c.Dicom.AETitle); msg != "" {
		p.addf("dicom.aeTitle", "%s", msg)
	}
	if c.Dicom.IdleTimeoutSeconds < 60 || c.Dicom.IdleTimeoutSeconds > 6000 {
		p.addf("dicom.idleTimeoutSeconds", "%d is outside the NLB's range 60..6000", c.Dicom.IdleTimeoutSeconds)
	}

	// Fargate service.
	s := c.Scp
	if !fargateMemoryOK(s.Cpu, s.MemoryMiB) {
		p.addf("scp", "cpu %d with memoryMiB %d is not a Fargate task size", s.Cpu, s.MemoryMiB)
	}
	if s.MinTasks < 2 {
		p.addf("scp.minTasks", "%d: at least 2 tasks are needed to survive an availability zone failure", s.MinTasks)
	}
	if s.MaxTasks < s.MinTasks {
		p.addf("scp.maxTasks", "%d is less than minTasks %d", s.MaxTasks, s.MinTasks)
	}
	if s.MaxAssociations < 1 {
		p.addf("scp.maxAssociations", "%d must be at least 1", s.MaxAssociations)
	}
	if s.TargetCpuPercent < 10 || s.TargetCpuPercent > 90 {
		p.addf("scp.targetCpuPercent", "%d is outside 10..90", s.TargetCpuPercent)
	}
	if s.TargetAssociationsPerTask < 1 || (s.MaxAssociations >= 1 && s.TargetAssociationsPerTask > s.MaxAssociations) {
		p.addf("scp.targetAssociationsPerTask", "%d must be between 1 and maxAssociations (%d)", s.TargetAssociationsPerTask, s.MaxAssociations)
	}
	if s.StopTimeoutSeconds < DrainMarginSeconds+1 || s.StopTimeoutSeconds > 120 {
		p.addf("scp.stopTimeoutSeconds", "%d is outside %d..120 (Fargate allows at most 120; scp-task drains for %d s less, and at least 1 s)",
			s.StopTimeoutSeconds, DrainMarginSeconds+1, DrainMarginSeconds)
	}
	if s.S3PutTimeoutSeconds < 1 || s.S3PutTimeoutSeconds > 60 {
		p.addf("scp.s3PutTimeoutSeconds", "%d is outside 1..60 (keep it under the sites' wait for a C-STORE response)", s.S3PutTimeoutSeconds)
	}
	// deregistration_delay.timeout_seconds: "The range is 0-3600 seconds"
	// (Elastic Load Balancing API Reference, TargetGroupAttribute). 0
	// resets a draining task's associations at once; the stack uses the
	// same value as the unhealthy draining interval, whose range was not
	// checked here (an account would say).
	if d := s.DeregistrationDelay(); d < 0 || d > 3600 {
		p.addf("scp.deregistrationDelaySeconds", "%d is outside 0..3600", d)
	}
	if st := s.Staging; st != nil {
		if st.MaxBacklogGiB < 1 || st.MaxBacklogGiB > 1024 {
			p.addf("scp.staging.maxBacklogGiB", "%d is outside 1..1024", st.MaxBacklogGiB)
		}
		if st.MaxAgeMinutes < 1 || st.MaxAgeMinutes > 24*60 {
			p.addf("scp.staging.maxAgeMinutes", "%d is outside 1..1440", st.MaxAgeMinutes)
		}
		if st.AlarmAgeSeconds < 60 || st.AlarmAgeSeconds > 60*st.MaxAgeMinutes {
			p.addf("scp.staging.alarmAgeSeconds", "%d must be between 60 and maxAgeMinutes (%d min): the alarm should sound before the tasks refuse associations", st.AlarmAgeSeconds, st.MaxAgeMinutes)
		}
	}

	// VPN and sites.
	if !validAmazonAsn(c.Vpn.AmazonSideAsn) {
		p.addf("vpn.amazonSideAsn", "%d is not a private ASN (64512..65534 or 4200000000..4294967294)", c.Vpn.AmazonSideAsn)
	}
	c.validateSites(&p, vpc, vpcOK)
	c.validateTLS(&p)

	// Storage.
	if ol := c.Storage.ObjectLock; ol != nil {
		if ol.Mode != "GOVERNANCE" && ol.Mode != "COMPLIANCE" {
			p.addf("storage.objectLock.mode", "%q must be GOVERNANCE or COMPLIANCE", ol.Mode)
		}
		if ol.Days < 1 || ol.Days > 36500 {
			p.addf("storage.objectLock.days", "%d is outside 1..36500", ol.Days)
		}
		// Without staging the tasks keep their run markers in the bucket
		// (audit-runs/), each rewritten every 5 s: every replaced version
		// would be retained for the lock's days, which no lifecycle rule
		// and, in COMPLIANCE mode, nobody could remove.
		if c.Scp.Staging == nil {
			p.addf("storage.objectLock", "needs scp.staging: without it each task rewrites its run marker in the bucket every 5 s (about 17,000 versions a day), and Object Lock would retain every version for %d days", ol.Days)
		}
	}
	lc := c.Storage.Lifecycle
	for name, v := range map[string]int{
		"intelligentTieringDays":          lc.IntelligentTieringDays,
		"glacierInstantRetrievalDays":     lc.GlacierInstantRetrievalDays,
		"noncurrentVersionExpirationDays": lc.NoncurrentVersionExpirationDays,
		"auditExpirationDays":             lc.AuditExpirationDays,
	} {
		if v < 0 {
			p.addf("storage.lifecycle."+name, "%d must not be negative", v)
		}
	}
	if lc.IntelligentTieringDays > 0 && lc.GlacierInstantRetrievalDays > 0 && lc.GlacierInstantRetrievalDays <= lc.IntelligentTieringDays {
		p.addf("storage.lifecycle.glacierInstantRetrievalDays", "%d must be later than intelligentTieringDays %d", lc.GlacierInstantRetrievalDays, lc.IntelligentTieringDays)
	}
	if ol := c.Storage.ObjectLock; ol != nil && lc.NoncurrentVersionExpirationDays > 0 && lc.NoncurrentVersionExpirationDays < ol.Days {
		p.addf("storage.lifecycle.noncurrentVersionExpirationDays", "%d is shorter than the object lock retention of %d days (S3 would refuse to expire locked versions)", lc.NoncurrentVersionExpirationDays, ol.Days)
	}
	if c.Storage.AccessLogRetentionDays < 1 {
		p.addf("storage.accessLogRetentionDays", "%d must be at least 1", c.Storage.AccessLogRetentionDays)
	}

	// Pipeline.
	pl := c.Pipeline
	if pl.QuietPeriodSeconds < 10 || pl.QuietPeriodSeconds > 86400 {
		p.addf("pipeline.quietPeriodSeconds", "%d is outside 10..86400", pl.QuietPeriodSeconds)
	}
	if !slices.Contains([]string{PatientDataNone, PatientDataIdentifiers, PatientDataFull}, pl.EventPatientData) {
		p.addf("pipeline.eventPatientData", "%q must be one of none, id, full", pl.EventPatientData)
	}
	if pl.ArchiveRetention() < 0 {
		p.addf("pipeline.archiveRetentionDays", "%d must be 0 (keep events forever) or more", pl.ArchiveRetention())
	}
	// Each function reserves it and its queue's pollers take it (an SQS
	// event source's maximum concurrency: 2..1000); commitment reserves
	// one more, for its schedule's run beside its pollers. 999 keeps that
	// reservation, like every other, within 2..1000.
	if pl.ReservedConcurrency < minReservedConcurrency || pl.ReservedConcurrency > maxReservedConcurrency {
		p.addf("pipeline.reservedConcurrency", "%d is outside %d..%d (commitment reserves one more, at most 1000)",
			pl.ReservedConcurrency, minReservedConcurrency, maxReservedConcurrency)
	}
	if pl.AccountConcurrency < 1 {
		p.addf("pipeline.accountConcurrency", "%d must be positive", pl.AccountConcurrency)
	} else if total, n := c.ReservedConcurrencyTotal(); pl.AccountConcurrency-total < LambdaUnreservedMin {
		sum := fmt.Sprintf("%d × %d functions + 1 for commitment's schedule = %d reserved of pipeline.accountConcurrency %d leaves %d unreserved; "+
			"Lambda refuses to leave fewer than %d", pl.ReservedConcurrency, n, total, pl.AccountConcurrency, pl.AccountConcurrency-total, LambdaUnreservedMin)
		// n functions reserve it, commitment one more.
		if most := (pl.AccountConcurrency - LambdaUnreservedMin - 1) / n; most >= minReservedConcurrency {
			p.addf("pipeline.reservedConcurrency", "%s: at most %d here, or raise the account's quota and pipeline.accountConcurrency", sum, most)
		} else {
			// Not even the least reservation fits: "at most 1" would name one below the least allowed.
			least := *c
			least.Pipeline.ReservedConcurrency = minReservedConcurrency
			leastTotal, _ := least.ReservedConcurrencyTotal()
			p.addf("pipeline.reservedConcurrency", "%s: no reservation fits, the least (%d each, %d in all) needs a pipeline.accountConcurrency of at least %d; "+
				"raise the account's quota and pipeline.accountConcurrency", sum, minReservedConcurrency, leastTotal, leastTotal+LambdaUnreservedMin)
		}
	}
	if pl.MaxReceiveCount < 1 || pl.MaxReceiveCount > 1000 {
		p.addf("pipeline.maxReceiveCount", "%d is outside 1..1000", pl.MaxReceiveCount)
	}
	if pl.BackupRetentionDays < 1 {
		p.addf("pipeline.backupRetentionDays", "%d must be at least 1", pl.BackupRetentionDays)
	}
	if pl.AuditBackupRetentionDays < pl.BackupRetentionDays {
		p.addf("pipeline.auditBackupRetentionDays", "%d must be at least backupRetentionDays (%d)", pl.AuditBackupRetentionDays, pl.BackupRetentionDays)
	}
	if l := pl.BackupVaultLock; l != nil {
		// The daily backups must be kept at least as long as the lock
		// demands, or AWS Backup refuses them.
		if l.MinRetentionDays < 1 || l.MinRetentionDays > pl.BackupRetentionDays {
			p.addf("pipeline.backupVaultLock.minRetentionDays", "%d must be between 1 and backupRetentionDays (%d)", l.MinRetentionDays, pl.BackupRetentionDays)
		}
		// AWS Backup's least grace period before a compliance lock sets.
		if l.ChangeableForDays != nil && *l.ChangeableForDays < 3 {
			p.addf("pipeline.backupVaultLock.changeableForDays", "%d must be at least 3 (or left out, for governance mode)", *l.ChangeableForDays)
		}
	}

	if bc := pl.BackupCopy; bc != nil {
		if m := vaultArnRE.FindStringSubmatch(bc.VaultArn); m == nil || !regionRE.MatchString(m[2]) {
			p.addf("pipeline.backupCopy.vaultArn", "%q is not a backup vault ARN (arn:<partition>:backup:<region>:<account>:backup-vault:<name>)", bc.VaultArn)
		} else if want := Partition(c.Region); m[1] != want || Partition(m[2]) != want {
			// AWS Backup copies only within a partition.
			p.addf("pipeline.backupCopy.vaultArn", "%q is not in partition %s, this deployment's (region %s)", bc.VaultArn, want, c.Region)
		}
	}

	c.validateAudit(&p, vpc, vpcOK)
	// Storage Commitment.
	if w := c.Commitment.WaitSeconds; w < MinCommitmentWaitSeconds || w > MaxCommitmentWaitSeconds {
		p.addf("commitment.waitSeconds", "%d is outside %d..%d", w, MinCommitmentWaitSeconds, MaxCommitmentWaitSeconds)
	}
	if m := c.Commitment.ReportMinutes; m < MinCommitmentReportMinutes || m > MaxCommitmentReportMinutes {
		p.addf("commitment.reportMinutes", "%d is outside %d..%d", m, MinCommitmentReportMinutes, MaxCommitmentReportMinutes)
	}

	if len(p) == 0 {
		return nil
	}
	return errors.Join(append([]error{ErrInvalid}, p...)...)
}

func (c *Config) validateSites(p *problems, vpc netip.Prefix, vpcOK bool) {
	if len(c.Sites) == 0 {
		p.addf("sites", "at least one site is needed")
	}
	type owned struct {
		prefix netip.Prefix
		field  string
	}
	var seen []owned // every CIDR so far, for the overlap checks
	claim := func(field string, pr netip.Prefix) {
		if vpcOK && pr.Overlaps(vpc) {
			p.addf(field, "%s overlaps the VPC CIDR %s", pr, vpc)
		}
		for _, o := range seen {
			if o.prefix.Overlaps(pr) {
				p.addf(field, "%s overlaps %s (%s)", pr, o.prefix, o.field)
			}
		}
		seen = append(seen, owned{pr, field})
	}
	aes := map[string]string{}      // normalized AE -> field
	names := map[string]string{}    // lower-cased site name -> field
	gateways := map[string]string{} // customer gateway IP -> field
	var tunnels []owned
	claimAE := func(field, ae string) {
		if msg := callingAEProblem(ae); msg != "" {
			p.addf(field, "%s", msg)
			return
		}
		key := strings.TrimSpace(ae)
		if prev, ok := aes[key]; ok {
			p.addf(field, "duplicate AE title %q (also %s)", ae, prev)
			return
		}
		aes[key] = field
	}
	for i, s := range c.Sites {
		f := fmt.Sprintf("sites[%d]", i)
		if !siteNameRE.MatchString(s.Name) {
			p.addf(f+".name", "%q must match %s", s.Name, siteNameRE)
		} else if prev, ok := names[strings.ToLower(s.Name)]; ok {
			p.addf(f+".name", "duplicate site name %q (also %s)", s.Name, prev)
		} else {
			names[strings.ToLower(s.Name)] = f + ".name"
		}
		claimAE(f+".callingAETitle", s.CallingAETitle)
		if ip, err := netip.ParseAddr(s.CustomerGatewayIP); err != nil || !ip.Is4() {
			p.addf(f+".customerGatewayIp", "%q is not an IPv4 address", s.CustomerGatewayIP)
		} else {
			if ip.IsPrivate() || ip.IsLoopback() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalUnicast() {
				p.addf(f+".customerGatewayIp", "%s is not a public address (the VPN device's internet-facing IP is needed)", ip)
			}
			if prev, ok := gateways[ip.String()]; ok {
				p.addf(f+".customerGatewayIp", "%s is already used by %s: one customer gateway per device", ip, prev)
			}
			gateways[ip.String()] = f + ".customerGatewayIp"
		}
		if len(s.Cidrs) == 0 {
			p.addf(f+".cidrs", "at least one CIDR is needed")
		}
		for j, cidr := range s.Cidrs {
			cf := fmt.Sprintf("%s.cidrs[%d]", f, j)
			if pr, ok := parseCidr(p, cf, cidr); ok {
				if !s.PublicCidrs && !isPrivate(pr) && !isShared(pr) {
					p.addf(cf, "%s is not a private range (10/8, 172.16/12, 192.168/16, 100.64/10): the DICOM ports would open to it and it would route down this site's VPN; set publicCidrs if the site numbers its network from public space it owns", pr)
				}
				claim(cf, pr)
			}
		}
		switch s.Routing {
		case RoutingStatic:
		case RoutingBGP:
			if s.BgpAsn < 1 || s.BgpAsn > 4294967294 || s.BgpAsn == c.Vpn.AmazonSideAsn || s.BgpAsn == 7224 {
				p.addf(f+".bgpAsn", "%d is not usable as the customer gateway ASN (1..4294967294, not 7224 and not the Amazon side ASN %d)", s.BgpAsn, c.Vpn.AmazonSideAsn)
			}
		default:
			p.addf(f+".routing", "%q must be static or bgp", s.Routing)
		}
		if s.Routing == RoutingStatic && (s.BgpAsn < 1 || s.BgpAsn > 4294967294) {
			p.addf(f+".bgpAsn", "%d is outside 1..4294967294", s.BgpAsn)
		}
		if s.Pacs != nil {
			pf := f + ".pacs"
			ip, err := netip.ParseAddr(s.Pacs.Host)
			switch {
			case err != nil || !ip.Is4():
				p.addf(pf+".host", "%q is not an IPv4 address (the PACS's address as the VPN carries it)", s.Pacs.Host)
			case !slices.ContainsFunc(s.Cidrs, func(cidr string) bool {
				pr, err := netip.ParsePrefix(cidr)
				return err == nil && pr.Contains(ip)
			}):
				p.addf(pf+".host", "%s is in none of the site's cidrs: Storage Commitment reports could not reach it through the VPN", ip)
			}
			if s.Pacs.Port < 1 || s.Pacs.Port > 65535 {
				p.addf(pf+".port", "%d is not a TCP port", s.Pacs.Port)
			}
			if s.Pacs.TLS != nil {
				c.validatePacsTLS(p, pf+".tls", s.Pacs.TLS)
			}
		}
		if n := len(s.TunnelInsideCidrs); n != 0 && n != 2 {
			p.addf(f+".tunnelInsideCidrs", "give both tunnels' CIDRs or none, got %d", n)
		}
		linkLocal := netip.MustParsePrefix("169.254.0.0/16")
		for j, cidr := range s.TunnelInsideCidrs {
			cf := fmt.Sprintf("%s.tunnelInsideCidrs[%d]", f, j)
			pr, ok := parseCidr(p, cf, cidr)
			if !ok {
				continue
			}
			if pr.Bits() != 30 || !linkLocal.Contains(pr.Addr()) {
				p.addf(cf, "%s must be a /30 in 169.254.0.0/16", pr)
				continue
			}
			if slices.Contains(reservedTunnelCidrs, pr.String()) {
				p.addf(cf, "%s is reserved by AWS", pr)
			}
			for _, o := range tunnels {
				if o.prefix.Overlaps(pr) {
					p.addf(cf, "%s is already used by %s", pr, o.field)
				}
			}
			tunnels = append(tunnels, owned{pr, cf})
		}
	}
	if cv := c.Vpn.ClientVpn; cv != nil {
		if pr, ok := parseCidr(p, "vpn.clientVpn.clientCidr", cv.ClientCidr); ok {
			if pr.Bits() < 12 || pr.Bits() > 22 {
				p.addf("vpn.clientVpn.clientCidr", "%s: prefix length must be between /12 and /22", pr)
			}
			claim("vpn.clientVpn.clientCidr", pr)
		}
		if !acmArnRE.MatchString(cv.ServerCertificateArn) {
			p.addf("vpn.clientVpn.serverCertificateArn", "%q is not an ACM certificate ARN", cv.ServerCertificateArn)
		}
		if !acmArnRE.MatchString(cv.ClientRootCertificateArn) {
			p.addf("vpn.clientVpn.clientRootCertificateArn", "%q is not an ACM certificate ARN", cv.ClientRootCertificateArn)
		}
		for i, ae := range cv.CallingAETitles {
			claimAE(fmt.Sprintf("vpn.clientVpn.callingAETitles[%d]", i), ae)
		}
	}
}

// parseCidr parses an IPv4 CIDR that must be written in canonical form (no
// host bits set), so "10.1.2.3/16" is reported rather than silently widened.
func parseCidr(p *problems, field, s string) (netip.Prefix, bool) {
	pr, err := netip.ParsePrefix(s)
	if err != nil {
		p.addf(field, "%q is not a CIDR (want a.b.c.d/n)", s)
		return netip.Prefix{}, false
	}
	if !pr.Addr().Is4() {
		p.addf(field, "%s is not IPv4", pr)
		return netip.Prefix{}, false
	}
	if pr.Masked() != pr {
		p.addf(field, "%s has host bits set; did you mean %s?", pr, pr.Masked())
		return netip.Prefix{}, false
	}
	return pr, true
}

func isPrivate(pr netip.Prefix) bool {
	for _, r := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} {
		rp := netip.MustParsePrefix(r)
		if rp.Bits() <= pr.Bits() && rp.Contains(pr.Addr()) {
			return true
		}
	}
	return false
}

// isShared reports whether pr is within 100.64.0.0/10, the shared address
// space (RFC 6598) some networks use internally.
func isShared(pr netip.Prefix) bool {
	rp := netip.MustParsePrefix("100.64.0.0/10")
	return rp.Bits() <= pr.Bits() && rp.Contains(pr.Addr())
}

func validAmazonAsn(asn int64) bool {
	return (asn >= 64512 && asn <= 65534) || (asn >= 4200000000 && asn <= 4294967294)
}

// aeProblem explains what is wrong with an AE title, or returns "": it is not one by the rule every AE title is held
// to (accesscontrol.CheckAETitle), or it holds one of the characters reserved where it is used (why says where).
func aeProblem(ae, reserved, why string) string {
	if err := accesscontrol.CheckAETitle(ae); err != nil {
		return fmt.Sprintf("%q: %v", ae, err)
	}
	if strings.ContainsAny(ae, reserved) {
		return fmt.Sprintf("AE title %q contains one of %s %s", ae, strings.Join(strings.Split(reserved, ""), " "), why)
	}
	return ""
}

// callingAEProblem is aeProblem for a calling AE title (a site's, a Client VPN one): SCP_CALLING_AES lists them in
// `AE@CIDR|CIDR…[#NAME]` entries separated by commas, so the allowlist syntax reserves , @ | and #, and a site's
// with a PACS is in `AE=host:port` entries too (CommitmentPeers), which reserve =.
func callingAEProblem(ae string) string {
	return aeProblem(ae, ",@|#=", "which the SCP's allowlist syntax, or its commitment peers', reserves")
}

// calledAEProblem is aeProblem for the SCP's own AE title (dicom.aeTitle). The allowlist syntax is no concern of
// it: it reaches the SCP alone (SCP_AE_TITLE), as do the commitment function's AE_TITLE and the CalledAETitle
// output, and the onboarding kit writes any AE title, quoted for the shell in its commands and as a code span in its
// README (a | escaped in its tables), so , @ # = and | are as good in it as in any AE title.
func calledAEProblem(ae string) string {
	return aeProblem(ae, "", "")
}
