// Package config reads and validates the per-environment configuration of the
// dicom-ingest CDK app (infra/config/<env>.json), so that a mistake in a site's
// CIDR or AE title fails at synth time with a clear message instead of at
// deploy time or, worse, as a PACS that cannot connect.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
)

// ErrInvalid marks a configuration that parsed but failed validation. The
// error returned by Parse and Load wraps it together with one error per
// problem found, each naming the offending field.
var ErrInvalid = errors.New("config: invalid configuration")

// Routing choices for a site's VPN connection.
const (
	RoutingStatic = "static"
	RoutingBGP    = "bgp"
)

// Event patient-data policies: how much patient data the pipeline may put in
// EventBridge events (passed to the functions as EVENT_PATIENT_DATA).
const (
	PatientDataNone        = "none" // UIDs, counts and S3 pointers only
	PatientDataIdentifiers = "id"   // plus Patient ID and accession number
	PatientDataFull        = "full" // plus patient name, birth date and sex
)

// Config is one environment. Field names are the JSON keys in camelCase.
// Optional settings absent from the file take the defaults applied by
// Parse; one given keeps its value, so a 0, false or "" written out is
// never silently the default: where it means something (a deregistration
// delay of 0, an archive kept forever) it is a pointer field, and
// elsewhere Validate refuses it, naming the setting.
type Config struct {
	// Name is the environment name; it must equal the file's base name.
	Name string `json:"name"`
	// Account and Region of the deployment; both are required so that synth
	// never needs credentials or context look-ups.
	Account string `json:"account"`
	Region  string `json:"region"`
	// AvailabilityZones used by the VPC (at least 2, in Region). Listing them
	// here keeps `cdk synth` offline: no availability-zone look-up.
	AvailabilityZones []string `json:"availabilityZones"`
	// VpcCidr is the VPC's IPv4 range (RFC 1918, /16 to /22).
	VpcCidr string `json:"vpcCidr"`
	// DeletionProtection on the load balancer (tables and buckets are always
	// retained/protected whatever this says).
	DeletionProtection bool `json:"deletionProtection"`
	// AlarmEmail, if set, subscribes an address to the alarm topic.
	AlarmEmail string `json:"alarmEmail,omitempty"`
	// LogRetentionDays for every log group (a CloudWatch Logs retention value).
	LogRetentionDays int `json:"logRetentionDays,omitempty"`

	Dicom      Dicom      `json:"dicom"`
	Scp        Scp        `json:"scp"`
	Vpn        Vpn        `json:"vpn"`
	Sites      []Site     `json:"sites"`
	Storage    Storage    `json:"storage"`
	Pipeline   Pipeline   `json:"pipeline"`
	Audit      Audit      `json:"audit"`
	Commitment Commitment `json:"commitment"`
}

// Commitment tunes Storage Commitment (the commitment function).
type Commitment struct {
	// WaitSeconds is how long instances named in a request may still be in
	// flight before they fail with 0112 (60..3600, default 300).
	WaitSeconds int `json:"waitSeconds,omitempty"`
	// ReportMinutes is how long delivering a result to the PACS is retried,
	// with backoff, before it is given up and the alarm raised (5..1440,
	// default 60).
	ReportMinutes int `json:"reportMinutes,omitempty"`
}

// Dicom is the DICOM endpoint the sites see.
type Dicom struct {
	// Port of the NLB listener (default 104).
	Port int `json:"port,omitempty"`
	// AETitle is the called AE title of the SCP.
	AETitle string `json:"aeTitle"`
	// ProxyProtocol turns on PROXY protocol v2 on the target group and
	// SCP_PROXY_PROTOCOL in the task (default true). When false, the target
	// group preserves client IPs instead.
	ProxyProtocol *bool `json:"proxyProtocol,omitempty"`
	// IdleTimeoutSeconds is the NLB's TCP idle timeout (60..6000, default
	// 3600): DICOM associations may sit idle between studies.
	IdleTimeoutSeconds int `json:"idleTimeoutSeconds,omitempty"`
	// TLS, if set, adds DICOM over TLS on its own NLB port (see DicomTLS).
	TLS *DicomTLS `json:"tls,omitempty"`
}

// DrainMarginSeconds is what the stack leaves between scp-task's drain
// timeout (SCP_DRAIN_TIMEOUT) and the stop timeout's SIGKILL: scp-task's
// exit grace (7 s, for the aborted associations to end and their audit
// records to be written), 2 s to close its store and a second to exit. A
// stop timeout shorter than the margin and a second of drain would kill the
// task with records unwritten.
const DrainMarginSeconds = 10

// DrainTimeoutSeconds is scp-task's drain timeout (SCP_DRAIN_TIMEOUT): the
// stop timeout less DrainMarginSeconds.
func (s Scp) DrainTimeoutSeconds() int { return s.StopTimeoutSeconds - DrainMarginSeconds }

// Scp sizes the Fargate service.
type Scp struct {
	Cpu       int `json:"cpu,omitempty"`       // task CPU units (default 1024)
	MemoryMiB int `json:"memoryMiB,omitempty"` // task memory (default 2048)
	MinTasks  int `json:"minTasks,omitempty"`  // at least 2 (default 2)
	MaxTasks  int `json:"maxTasks,omitempty"`  // default 2×MinTasks
	// MaxAssociations per task (SCP_MAX_ASSOCIATIONS, default 64).
	MaxAssociations int `json:"maxAssociations,omitempty"`
	// TargetCpuPercent for CPU target tracking (default 60).
	TargetCpuPercent int `json:"targetCpuPercent,omitempty"`
	// TargetAssociationsPerTask for the active-association target tracking
	// (default MaxAssociations/2).
	TargetAssociationsPerTask int `json:"targetAssociationsPerTask,omitempty"`
	// StopTimeoutSeconds the container gets after SIGTERM to drain
	// (DrainMarginSeconds+1..120, default 120, Fargate's maximum).
	StopTimeoutSeconds int `json:"stopTimeoutSeconds,omitempty"`
	// DeregistrationDelaySeconds of the target group (0..3600, default
	// 120; 0: the NLB resets a deregistered task's associations at once).
	// Read it with DeregistrationDelay.
	DeregistrationDelaySeconds *int `json:"deregistrationDelaySeconds,omitempty"`
	// S3PutTimeoutSeconds, without Staging, is how long S3 may take to
	// hold an object once its data set has arrived before its C-STORE is
	// answered A700 (SCP_S3_PUT_TIMEOUT, 1..60, default
	// objectstore.DefaultPutTimeout, scp-task's own default): under the
	// sites' wait for a C-STORE response (Orthanc's is 10 s).
	S3PutTimeoutSeconds int `json:"s3PutTimeoutSeconds,omitempty"`
	// Staging, when present, makes the tasks answer C-STORE once an
	// object is durable on an EFS file system they all mount, and upload
	// it to S3 afterwards; absent, they answer once S3 holds it (see
	// docs/design/staged-store.md).
	Staging *Staging `json:"staging,omitempty"`
}

// Staging configures the EFS staging file system.
type Staging struct {
	// Backups turns on EFS automatic backups (AWS Backup, daily, 35-day
	// retention). Objects stay staged for seconds to minutes, so a backup
	// holds little; it matters for what a long S3 outage leaves there.
	Backups bool `json:"backups,omitempty"`
	// MaxBacklogGiB is the bytes staged and not uploaded past which a
	// task refuses objects and associations (default 8).
	MaxBacklogGiB int `json:"maxBacklogGiB,omitempty"`
	// MaxAgeMinutes turns a task's readiness off while its oldest staged
	// object has waited longer for its upload (default 15).
	MaxAgeMinutes int `json:"maxAgeMinutes,omitempty"`
	// AlarmAgeSeconds raises the backlog alarm when the oldest staged
	// object has waited this long (default 300).
	AlarmAgeSeconds int `json:"alarmAgeSeconds,omitempty"`
}

// Vpn holds the VPN settings shared by all sites.
type Vpn struct {
	// AmazonSideAsn of the virtual private gateway (default 64512).
	AmazonSideAsn int64 `json:"amazonSideAsn,omitempty"`
	// ClientVpn, if set, adds a Client VPN endpoint with mutual TLS.
	ClientVpn *ClientVpn `json:"clientVpn,omitempty"`
}

// ClientVpn is the optional "OpenVPN client" access for sites without an
// IPsec device.
type ClientVpn struct {
	// ClientCidr is the range handed to clients (/12../22, not overlapping the
	// VPC or any site).
	ClientCidr string `json:"clientCidr"`
	// ServerCertificateArn and ClientRootCertificateArn are ACM ARNs.
	ServerCertificateArn     string `json:"serverCertificateArn"`
	ClientRootCertificateArn string `json:"clientRootCertificateArn"`
	// CallingAETitles admitted through the Client VPN. Client VPN translates
	// client addresses to the endpoint's addresses in the VPC, so these AEs
	// are bound to the VPC CIDR.
	CallingAETitles []string `json:"callingAETitles"`
}

// Site is one hospital connecting over site-to-site VPN.
type Site struct {
	// Name identifies the site in resource ids and outputs ([A-Za-z0-9-]).
	Name string `json:"name"`
	// CallingAETitle is the PACS's AE title (1..16 characters).
	CallingAETitle string `json:"callingAETitle"`
	// CustomerGatewayIP is the public IPv4 address of the site's VPN device.
	CustomerGatewayIP string `json:"customerGatewayIp"`
	// Cidrs are the site's networks the PACS sends from.
	Cidrs []string `json:"cidrs"`
	// Routing is "static" (default) or "bgp".
	Routing string `json:"routing,omitempty"`
	// BgpAsn of the customer gateway (required for bgp; default 65000 for
	// static, where it is only a label).
	BgpAsn int64 `json:"bgpAsn,omitempty"`
	// TunnelInsideCidrs optionally fixes the two tunnels' inside /30s
	// (169.254.0.0/16); AWS picks them when empty.
	TunnelInsideCidrs []string `json:"tunnelInsideCidrs,omitempty"`
	// CertificateName, if set, binds the site's AE title to its TLS client
	// certificate: the SCP admits it only over TLS, with a certificate (from
	// dicom.tls's client CA) that has this name as a DNS SAN (or as its subject
	// CN when it has no SANs).
	CertificateName string `json:"certificateName,omitempty"`
	// Pacs is where the site's PACS takes Storage Commitment results: an
	// address in one of Cidrs and the port of its DICOM listener. Without
	// it the site's commitment requests are refused (0124).
	Pacs *Pacs `json:"pacs,omitempty"`
	// QuarantinedCommitted counts the site's quarantined instances as
	// committed (their objects are kept); by default they fail (0110).
	QuarantinedCommitted bool `json:"quarantinedCommitted,omitempty"`
	// PublicCidrs admits site networks outside the private ranges (RFC 1918
	// and 100.64.0.0/10): a hospital that numbers its network from public
	// space it owns. Without it such a CIDR is refused, so a slip (8.8.8.0/24,
	// 128.0.0.0/1) cannot open the DICOM ports to the internet's addresses
	// and route them down a site's VPN.
	PublicCidrs bool `json:"publicCidrs,omitempty"`
}

// Pacs is a site PACS's DICOM listener, reached through the VPN.
type Pacs struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	// TLS, if set, has the results reach the PACS over DICOM TLS only,
	// with this site's CA and client certificate.
	TLS *PacsTLS `json:"tls,omitempty"`
}

// Storage configures the DICOM bucket.
type Storage struct {
	// ObjectLock, if set, enables S3 Object Lock with a default retention.
	ObjectLock *ObjectLock `json:"objectLock,omitempty"`
	Lifecycle  Lifecycle   `json:"lifecycle"`
	// AccessLogRetentionDays for the server access log bucket (default 365).
	AccessLogRetentionDays int `json:"accessLogRetentionDays,omitempty"`
}

// ObjectLock is the bucket's default retention.
type ObjectLock struct {
	Mode string `json:"mode"` // GOVERNANCE or COMPLIANCE
	Days int    `json:"days"`
}

// Lifecycle rules for the DICOM bucket; 0 disables a rule.
type Lifecycle struct {
	// IntelligentTieringDays moves objects to Intelligent-Tiering.
	IntelligentTieringDays int `json:"intelligentTieringDays,omitempty"`
	// GlacierInstantRetrievalDays moves objects to Glacier Instant Retrieval.
	GlacierInstantRetrievalDays int `json:"glacierInstantRetrievalDays,omitempty"`
	// NoncurrentVersionExpirationDays deletes overwritten versions.
	NoncurrentVersionExpirationDays int `json:"noncurrentVersionExpirationDays,omitempty"`
	// AuditExpirationDays expires the SCP's raw audit/ records once the audit
	// function has copied them to DynamoDB.
	AuditExpirationDays int `json:"auditExpirationDays,omitempty"`
}

// Pipeline configures the Lambda pipeline and the event bus.
type Pipeline struct {
	// QuietPeriodSeconds before a study is announced (default 60).
	QuietPeriodSeconds int `json:"quietPeriodSeconds,omitempty"`
	// EventPatientData is the event-content policy (default "none").
	EventPatientData string `json:"eventPatientData,omitempty"`
	// ArchiveRetentionDays of the event archive (default 365; 0 keeps
	// events forever, EventBridge's meaning of 0). Read it with
	// ArchiveRetention.
	ArchiveRetentionDays *int `json:"archiveRetentionDays,omitempty"`
	// ReservedConcurrency per function (default 10).
	ReservedConcurrency int `json:"reservedConcurrency,omitempty"`
	// AccountConcurrency is the Lambda concurrent executions the stack's
	// reservations come out of (default 1000, a new account's quota in a
	// region): the account's quota less what its other functions in the
	// region reserve. Lambda refuses a reservation that leaves fewer than
	// LambdaUnreservedMin of it unreserved (ReservedConcurrencyTotal).
	AccountConcurrency int `json:"accountConcurrency,omitempty"`
	// MaxReceiveCount before a message goes to its dead-letter queue
	// (default 5).
	MaxReceiveCount int `json:"maxReceiveCount,omitempty"`
	// BackupRetentionDays of the tables' daily backups (default 35).
	BackupRetentionDays int `json:"backupRetentionDays,omitempty"`
	// AuditBackupRetentionDays of the audit table's monthly backups
	// (default 2192, six years: HIPAA §164.316(b)(2)), so the trail can be
	// restored as it was long after point-in-time recovery (35 days) and
	// the daily backups have expired.
	AuditBackupRetentionDays int `json:"auditBackupRetentionDays,omitempty"`
	// BackupVaultLock, if set, locks the backup vault (AWS Backup Vault
	// Lock); off by default.
	BackupVaultLock *BackupVaultLock `json:"backupVaultLock,omitempty"`
	// BackupCopy, if set, copies every recovery point of the tables (and
	// of the staging file system) to another vault, in another Region or
	// account, where neither this account's keys nor its administrators
	// reach; off by default. See docs/operations/deploy.md (backups).
	BackupCopy *BackupCopy `json:"backupCopy,omitempty"`
}

// BackupCopy names the vault recovery points are copied to. Copies are
// kept as long as their originals (pipeline.backupRetentionDays, and the
// audit table's monthly ones pipeline.auditBackupRetentionDays) and are
// encrypted under the destination vault's key. The destination is not
// created by this stack: its account must be in this account's AWS
// Organization with cross-account backup turned on, and its vault access
// policy must allow backup:CopyIntoBackupVault from this account.
type BackupCopy struct {
	// VaultArn: arn:<partition>:backup:<region>:<account>:backup-vault:<name>.
	VaultArn string `json:"vaultArn"`
}

// Partition is the ARN partition of region: aws-cn for China, aws-us-gov
// for GovCloud, aws otherwise.
func Partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}

// DefaultAuditBackupRetentionDays is six years (two of them leap years):
// HIPAA §164.316(b)(2)(i) keeps documentation six years.
const DefaultAuditBackupRetentionDays = 6*365 + 2

// BackupVaultLock: no one, the account's administrators included, can
// delete a recovery point before MinRetentionDays, nor store one kept for
// less. Without ChangeableForDays the lock is in governance mode (whoever
// may delete the lock configuration can lift it); with it, the lock
// becomes immutable that many days after deployment (compliance mode).
type BackupVaultLock struct {
	MinRetentionDays  int  `json:"minRetentionDays"`
	ChangeableForDays *int `json:"changeableForDays,omitempty"`
}

// Defaults of the settings whose 0 means something.
const (
	DefaultDeregistrationDelaySeconds = 120
	DefaultArchiveRetentionDays       = 365
)

// DeregistrationDelay is the target group's deregistration delay in
// seconds: scp.deregistrationDelaySeconds, 0 included, or its default.
func (s Scp) DeregistrationDelay() int {
	if s.DeregistrationDelaySeconds == nil {
		return DefaultDeregistrationDelaySeconds
	}
	return *s.DeregistrationDelaySeconds
}

// ArchiveRetention is how many days the event archive keeps events (0:
// forever): pipeline.archiveRetentionDays, 0 included, or its default.
func (p Pipeline) ArchiveRetention() int {
	if p.ArchiveRetentionDays == nil {
		return DefaultArchiveRetentionDays
	}
	return *p.ArchiveRetentionDays
}

// ProxyProtocolEnabled reports the effective PROXY protocol setting.
func (c *Config) ProxyProtocolEnabled() bool {
	return c.Dicom.ProxyProtocol == nil || *c.Dicom.ProxyProtocol
}

// LambdaUnreservedMin is the concurrency Lambda keeps unreserved in an
// account and region for the functions that reserve none: it refuses a
// reservation that leaves less ("You can reserve up to the Unreserved
// account concurrency value that is shown, minus 100", AWS Lambda,
// Configuring reserved concurrency).
const LambdaUnreservedMin = 100

// CommitmentTimeoutSeconds is the commitment function's timeout, its
// queue's visibility six times it. Lambda ends an invocation there: a
// Storage Commitment delivery (whose timers sum to more,
// commitreport.Reporter.MaxReport) is cut pipeline.CommitmentWriteMargin
// before, a failed attempt recorded in the time left, and the invocation's
// loop starts no run in its last 10 s (lambdaio.CommitmentHandler).
const CommitmentTimeoutSeconds = 60

// CommitmentReservedConcurrency is what the commitment function reserves:
// its queue's pollers' ReservedConcurrency, and one for its schedule's run
// beside them.
func (p Pipeline) CommitmentReservedConcurrency() int { return p.ReservedConcurrency + 1 }

// ReservedConcurrencyTotal is what the stack's functions reserve together,
// and how many of them reserve it: validate, audit, notify (and auditfeed,
// with audit.syslog) pipeline.reservedConcurrency each, commitment
// CommitmentReservedConcurrency.
func (c *Config) ReservedConcurrencyTotal() (total, functions int) {
	functions = 4
	if c.Audit.Syslog != nil {
		functions++
	}
	return (functions-1)*c.Pipeline.ReservedConcurrency + c.Pipeline.CommitmentReservedConcurrency(), functions
}

// CallingAEs renders the SCP's allowlist (SCP_CALLING_AES): comma-separated
// `AE@CIDR|CIDR…[#NAME]` entries, one per site (with its certificate name,
// if it has one) and one per Client VPN AE title.
func (c *Config) CallingAEs() string {
	var entries []string
	for _, s := range c.Sites {
		e := s.CallingAETitle + "@" + strings.Join(s.Cidrs, "|")
		if s.CertificateName != "" {
			e += "#" + s.CertificateName
		}
		entries = append(entries, e)
	}
	if c.Vpn.ClientVpn != nil {
		for _, ae := range c.Vpn.ClientVpn.CallingAETitles {
			entries = append(entries, ae+"@"+c.VpcCidr)
		}
	}
	return strings.Join(entries, ",")
}

// CommitmentPeers renders where Storage Commitment results go
// (SCP_COMMITMENT_PEERS, COMMITMENT_PEERS), as commitreport.ParsePeers
// reads it: `AE=host:port` for each site with a PACS address,
// `AE=tls://host:port` for one with pacs.tls, `?serverName=NAME` after it
// with pacs.tls.serverName.
func (c *Config) CommitmentPeers() string {
	peers := commitreport.Peers{}
	for _, s := range c.Sites {
		if s.Pacs != nil {
			peer := commitreport.Peer{Addr: net.JoinHostPort(s.Pacs.Host, strconv.Itoa(s.Pacs.Port)), TLS: s.Pacs.TLS != nil}
			if peer.TLS {
				peer.ServerName = s.Pacs.TLS.ServerName
			}
			peers[s.CallingAETitle] = peer
		}
	}
	return peers.String()
}

// QuarantinedCommitted lists the AE titles of the sites whose quarantined
// instances count as committed (COMMITMENT_QUARANTINED_COMMITTED).
func (c *Config) QuarantinedCommitted() string {
	var aes []string
	for _, s := range c.Sites {
		if s.QuarantinedCommitted {
			aes = append(aes, s.CallingAETitle)
		}
	}
	return strings.Join(aes, ",")
}

// SourceCidrs lists every site CIDR in config order (the only sources the
// DICOM port admits besides the Client VPN endpoint).
func (c *Config) SourceCidrs() []string {
	var out []string
	for _, s := range c.Sites {
		out = append(out, s.Cidrs...)
	}
	return out
}

var envNameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// Load reads <dir>/<env>.json and parses it.
func Load(dir, env string) (*Config, error) {
	if !envNameRE.MatchString(env) {
		return nil, fmt.Errorf("config: load: environment name %q must match %s (pass -c env=<name>)", env, envNameRE)
	}
	path := filepath.Join(dir, env+".json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: load %s: %w", path, err)
	}
	cfg, err := Parse(data)
	if err == nil {
		err = cfg.loadTLSFiles(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	if cfg.Name != env {
		return nil, fmt.Errorf("config: %s: %w: name %q does not match the environment %q", path, ErrInvalid, cfg.Name, env)
	}
	return cfg, nil
}

// maxConfigBytes bounds what Parse accepts; real configs are a few KiB.
const maxConfigBytes = 1 << 20

// Parse decodes a configuration strictly (unknown fields are errors, so a
// typo does not silently fall back to a default), applies defaults and
// validates it. All validation problems are reported at once.
func Parse(data []byte) (*Config, error) {
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("config: parse: %d bytes is more than the %d allowed", len(data), maxConfigBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var cfg Config
	if err := dec.Decode(&cfg); err != nil {
		if path := unknownFieldPath(data); path != "" && strings.HasPrefix(err.Error(), "json: unknown field ") {
			// encoding/json names the key alone, which may be right
			// elsewhere (port, host) or be in any of the sites.
			return nil, fmt.Errorf("config: parse: %s: %s", path, strings.TrimPrefix(err.Error(), "json: "))
		}
		// And a value of the wrong type by its fields' Go path
		// (sites.pacs.port), not which of the sites it is in.
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if path := valuePath(data, te.Offset); path != "" {
				return nil, fmt.Errorf("config: parse: %s: cannot unmarshal %s into %v", path, te.Value, te.Type)
			}
		}
		return nil, fmt.Errorf("config: parse: %w", err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config: parse: trailing data after the JSON object")
	}
	var tree any
	if err := json.Unmarshal(data, &tree); err != nil {
		return nil, fmt.Errorf("config: parse: %w", err)
	}
	g := settings{}
	g.collect("", tree)
	cfg.applyDefaults(g)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// settings are the paths of the settings a file gives, null ones excepted,
// in lower case as encoding/json matches keys to fields: "scp.cpu",
// "sites[0].bgpasn".
type settings map[string]bool

func (g settings) collect(path string, v any) {
	switch v := v.(type) {
	case nil:
	case map[string]any:
		for k, e := range v {
			p := strings.ToLower(k)
			if path != "" {
				p = path + "." + p
			}
			g.collect(p, e)
		}
	case []any:
		g[path] = true
		for i, e := range v {
			g.collect(fmt.Sprintf("%s[%d]", path, i), e)
		}
	default:
		g[path] = true
	}
}

// applyDefaults sets each optional setting the file does not give (g) to
// its default. One given keeps its value, 0 and "" included, for Validate
// to refuse where it means nothing.
func (c *Config) applyDefaults(g settings) {
	def := func(path string, p *int, v int) {
		if !g[strings.ToLower(path)] {
			*p = v
		}
	}
	def("logRetentionDays", &c.LogRetentionDays, 365)
	def("dicom.port", &c.Dicom.Port, 104)
	def("dicom.idleTimeoutSeconds", &c.Dicom.IdleTimeoutSeconds, 3600)
	if c.Dicom.TLS != nil {
		def("dicom.tls.port", &c.Dicom.TLS.Port, DefaultTLSPort)
	}
	def("scp.cpu", &c.Scp.Cpu, 1024)
	def("scp.memoryMiB", &c.Scp.MemoryMiB, 2048)
	def("scp.minTasks", &c.Scp.MinTasks, 2)
	def("scp.maxTasks", &c.Scp.MaxTasks, 2*c.Scp.MinTasks)
	def("scp.maxAssociations", &c.Scp.MaxAssociations, 64)
	def("scp.targetCpuPercent", &c.Scp.TargetCpuPercent, 60)
	def("scp.targetAssociationsPerTask", &c.Scp.TargetAssociationsPerTask, max(1, c.Scp.MaxAssociations/2))
	def("scp.stopTimeoutSeconds", &c.Scp.StopTimeoutSeconds, 120)
	def("scp.s3PutTimeoutSeconds", &c.Scp.S3PutTimeoutSeconds, int(objectstore.DefaultPutTimeout/time.Second))
	if c.Scp.DeregistrationDelaySeconds == nil {
		c.Scp.DeregistrationDelaySeconds = new(DefaultDeregistrationDelaySeconds)
	}
	if st := c.Scp.Staging; st != nil {
		def("scp.staging.maxBacklogGiB", &st.MaxBacklogGiB, 8)
		def("scp.staging.maxAgeMinutes", &st.MaxAgeMinutes, 15)
		def("scp.staging.alarmAgeSeconds", &st.AlarmAgeSeconds, 300)
	}
	if !g["vpn.amazonsideasn"] {
		c.Vpn.AmazonSideAsn = 64512
	}
	for i := range c.Sites {
		s := &c.Sites[i]
		f := fmt.Sprintf("sites[%d].", i)
		if !g[f+"routing"] {
			s.Routing = RoutingStatic
		}
		if !g[f+"bgpasn"] && s.Routing == RoutingStatic {
			s.BgpAsn = 65000
		}
	}
	def("storage.accessLogRetentionDays", &c.Storage.AccessLogRetentionDays, 365)
	def("pipeline.quietPeriodSeconds", &c.Pipeline.QuietPeriodSeconds, 60)
	if !g["pipeline.eventpatientdata"] {
		c.Pipeline.EventPatientData = PatientDataNone
	}
	if c.Pipeline.ArchiveRetentionDays == nil {
		c.Pipeline.ArchiveRetentionDays = new(DefaultArchiveRetentionDays)
	}
	def("pipeline.reservedConcurrency", &c.Pipeline.ReservedConcurrency, 10)
	def("pipeline.accountConcurrency", &c.Pipeline.AccountConcurrency, 1000)
	def("pipeline.maxReceiveCount", &c.Pipeline.MaxReceiveCount, 5)
	def("pipeline.backupRetentionDays", &c.Pipeline.BackupRetentionDays, 35)
	def("pipeline.auditBackupRetentionDays", &c.Pipeline.AuditBackupRetentionDays, DefaultAuditBackupRetentionDays)
	c.Audit.applyDefaults(g)
	def("commitment.waitSeconds", &c.Commitment.WaitSeconds, 300)
	def("commitment.reportMinutes", &c.Commitment.ReportMinutes, 60)
}

// unknownFieldPath returns the path (sites[1].cidr) of the first key in
// data, in document order, that names no field of Config where it stands,
// as Decode with DisallowUnknownFields matches them (by json tag, or
// without regard to case); "" if there is none or data is not JSON.
func unknownFieldPath(data []byte) string { return configPath(data, true, -1) }

// valuePath returns the path (sites[1].pacs.port) of the value in data
// that an UnmarshalTypeError's offset points at: the offset just after it
// if it is a scalar, just after its opening delimiter if an object or a
// list; "" if none is there.
func valuePath(data []byte, offset int64) string { return configPath(data, false, offset) }

// configPath walks data as Decode reads it into Config, each value with
// the type Config gives it where it has one, and returns the path of the
// first place found: with unknown, a key naming no field of the struct it
// stands in; a value whose first token ends at offset. "" if there is none
// or data is not JSON (or not shaped as Config where it has a type: an
// object for a list, a list for an object).
func configPath(data []byte, unknown bool, offset int64) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	var walk func(t reflect.Type, path string) (string, error)
	walk = func(t reflect.Type, path string) (string, error) {
		for t != nil && t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t != nil {
			switch t.Kind() {
			case reflect.Struct, reflect.Map, reflect.Slice, reflect.Array:
			default:
				t = nil // a scalar's (or an interface's): nothing inside is Config's to name
			}
		}
		tok, err := dec.Token()
		if err != nil {
			return "", err
		}
		if dec.InputOffset() == offset {
			return path, nil
		}
		switch tok {
		case json.Delim('{'):
			if t != nil && t.Kind() != reflect.Struct && t.Kind() != reflect.Map {
				return "", errors.New("config: an object where none belongs")
			}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return "", err
				}
				key, _ := k.(string)
				sub := key
				if path != "" {
					sub = path + "." + key
				}
				var elem reflect.Type
				switch {
				case t == nil:
				case t.Kind() == reflect.Map:
					elem = t.Elem()
				default:
					f, ok := jsonField(t, key)
					if !ok && unknown {
						return sub, nil
					}
					elem = f.Type
				}
				if p, err := walk(elem, sub); p != "" || err != nil {
					return p, err
				}
			}
		case json.Delim('['):
			if t != nil && t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
				return "", errors.New("config: a list where none belongs")
			}
			var elem reflect.Type
			if t != nil {
				elem = t.Elem()
			}
			for i := 0; dec.More(); i++ {
				if p, err := walk(elem, fmt.Sprintf("%s[%d]", path, i)); p != "" || err != nil {
					return p, err
				}
			}
		default:
			return "", nil // null, or a scalar
		}
		_, err = dec.Token() // the closing delimiter
		return "", err
	}
	path, err := walk(reflect.TypeFor[Config](), "")
	if err != nil {
		return ""
	}
	return path
}

// jsonField is struct type t's field that key names, as encoding/json
// matches it: its json tag's name (or the field's name without one), or
// failing that the same without regard to case.
func jsonField(t reflect.Type, key string) (reflect.StructField, bool) {
	var fold reflect.StructField
	found := false
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if name == key {
			return f, true
		}
		if !found && strings.EqualFold(name, key) {
			fold, found = f, true
		}
	}
	return fold, found
}
