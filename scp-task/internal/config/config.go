// Package config reads scp-task's settings from flags, each with an
// environment variable fallback, and checks them before anything starts.
package config

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/local"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/thumbnail"
	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/cli"
	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/durations"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// Config is everything scp-task can be told.
type Config struct {
	// Listen is the plain DICOM listener's address; "" when it is off.
	Listen string
	// TLSListen is the DICOM-over-TLS listener's address; "" when there is
	// none. TLSCert, TLSKey and TLSClientCA are file paths or PEM text.
	TLSListen            string
	TLSCert, TLSKey      string
	TLSClientCA          string
	TLSClientCRL         string
	AETitle              string
	CallingAEs           *accesscontrol.Allowlist
	CallingAEsSpec       string
	Store                string // file://DIR or s3://bucket/prefix
	HealthListen         string
	MaxAssociations      int
	MaxAssociationsPerAE int
	MaxPDULength         int
	ProxyProtocol        bool
	AcceptBigEndian      bool
	IdleTimeout          time.Duration
	// MaxUnassociated and MaxUnassociatedPerAddr bound the connections
	// without an association; 0 derives them from the descriptor limit.
	MaxUnassociated        int
	MaxUnassociatedPerAddr int
	// MaxPreAssociationBytes bounds the memory those connections hold;
	// 0 = unlimited.
	MaxPreAssociationBytes int64
	// ProgressWindow, MinProgressBytes and MaxMessageTime are the progress
	// deadlines of a message being received.
	ProgressWindow   time.Duration
	MinProgressBytes int64
	MaxMessageTime   time.Duration
	DrainTimeout     time.Duration
	LogLevel         string

	// ScaleInProtection keeps the ECS task protected from scale-in while
	// it holds associations, released after ScaleInProtectionRelease
	// without any; it needs ECSAgentURI, which ECS injects.
	ScaleInProtection        bool
	ScaleInProtectionRelease time.Duration
	ECSAgentURI              string

	S3PathStyle bool
	S3KMSKey    string
	S3PartSize  int64
	// S3PutTimeout bounds, without staging, what is left of a C-STORE's
	// put to S3 once its data set has arrived (s3store.Options.PutTimeout).
	S3PutTimeout time.Duration

	// MinFreeBytes is the free space a file store (and local mode) keeps
	// in reserve on its disk, and the staged store on its staging
	// directory's file system; 0 keeps none.
	MinFreeBytes int64

	// StagingDir, with an s3:// store, is where objects are made durable
	// before C-STORE success and uploaded from afterwards; empty uploads
	// before answering.
	StagingDir        string
	StagingMaxBacklog int64
	StagingMaxAge     time.Duration
	// RunMarkerStaleAfter: a run marker in the S3 bucket not rewritten
	// for this long is a dead run's.
	RunMarkerStaleAfter time.Duration
	// StagingLatency holds every staging file-system operation this long
	// (benchmarks: a local directory standing in for EFS).
	StagingLatency vfs.Latencies

	Local        bool
	DataDir      string
	PortalListen string
	// PortalPreviewCacheBytes bounds the memory the portal's cached
	// series previews take; 0 keeps none.
	PortalPreviewCacheBytes int64
	Webhooks                []string
	QuietPeriod             time.Duration
	// EventPatientData is how much patient data local mode's events carry.
	EventPatientData pipeline.PatientDataPolicy
	// AuditExpirationDays, in local mode, expires the SCP's association
	// records once they are this many days old and in the audit trail; 0
	// keeps them.
	AuditExpirationDays int

	// AuditSyslog is the audit feed's collector (tls://host[:port]), ""
	// when the feed is off; AuditSyslogAddr its host:port and AuditTLS the
	// client TLS configuration built from the CA and client certificate at
	// start; AuditTLSLoad reads them again and builds it anew, for each
	// connection to the collector (renewed files are used without a
	// restart), its error naming the setting: with a client certificate
	// refused for its dates alone (tlstrust.ErrNotValidNow), the
	// configuration together with the refusal.
	AuditSyslog     string
	AuditSyslogAddr string
	AuditTLS        *tls.Config
	AuditTLSLoad    func() (*tls.Config, error)
	AuditSpool      string
	AuditSpoolMax   int

	// Storage Commitment: where results go by requesting AE title; in
	// local mode also the wait for instances in flight, how long a
	// delivery is retried, and the AE titles whose quarantined instances
	// count as committed.
	CommitmentPeers commitreport.Peers
	// CommitmentTLS is the client configuration of the tls:// peers (nil without any): the CA and our client
	// certificate read again at each call, as commitreport.Reporter.TLS wants.
	CommitmentTLS func() (*tls.Config, error)
	// CertificatesNotValid are the client certificates of secondary duties (--commitment-tls-cert,
	// --audit-syslog-cert) that are expired or not yet valid at start: not a start error (C-STORE, its durability
	// and the audit trail do not depend on them), a warning scp-task logs (CertificateNotValidLog). The deliveries
	// that present one fail while it is not valid, counted and retried by their rules.
	CertificatesNotValid  []CertificateNotValid
	CommitmentWait        time.Duration
	CommitmentReportFor   time.Duration
	CommitmentQuarantined map[string]bool

	// CommitmentTLSNoClientCertificate: CommitmentTLS presents no client certificate (no --commitment-tls-cert,
	// no --tls-cert to reuse), which a PACS requiring one refuses; scp-task says so at start.
	CommitmentTLSNoClientCertificate bool

	origins map[string]Origin // by flag name; absent: the default
}

// LocalHealthListen is --health-listen's default in local mode.
const LocalHealthListen = "127.0.0.1:8081"

// Setting describes one flag: its name, environment variable, default and
// meaning. docs/configuration.md's flags table is checked against the same list
// (see Settings), so the two cannot drift apart.
type Setting struct {
	Flag, Env, Default, Usage string
}

// Settings lists every setting in the order docs/configuration.md shows them.
// The DICOM limits' defaults are shared/dicomnet's, which the onboarding kit
// (infra/onboarding) states to the sites too.
func Settings() []Setting {
	return settings
}

var settings = []Setting{
	{"listen", "SCP_LISTEN", ":11112", "address the plain DICOM listener listens on (the NLB maps TCP/104 to it); `off` turns it off, leaving DICOM over TLS only"},
	{"tls-listen", "SCP_TLS_LISTEN", "", "address of the DICOM-over-TLS listener (PS3.15 Annex B; conventionally :2762); empty = none. Needs --tls-cert and --tls-key"},
	{"tls-cert", "SCP_TLS_CERT", "", "the TLS listener's certificate chain: a PEM file, reloaded on SIGHUP and when it changes, or the PEM text itself"},
	{"tls-key", "SCP_TLS_KEY", "", "the private key of --tls-cert: a PEM file (reloaded with it) or the PEM text itself"},
	{"tls-client-ca", "SCP_TLS_CLIENT_CA", "", "CA certificates (PEM file or text) a client certificate must chain to; when set, TLS associations without one fail the handshake. Needed for `#NAME` entries in --calling-aes"},
	{"tls-client-crl", "SCP_TLS_CLIENT_CRL", "", "certificate revocation lists (PEM file or text) of the --tls-client-ca CAs, reloaded like them: a client certificate they list fails the handshake"},
	{"ae-title", "SCP_AE_TITLE", "REMOTE_AE", "our AE title (1 to 16 printable ASCII characters, no backslash, as PS3.5 has it); associations called to any other title are rejected (01 01 07)"},
	{"calling-aes", "SCP_CALLING_AES", "LOCAL_AE", "allowed calling AE titles: comma-separated `AE[@CIDR|CIDR…][#NAME]`; `#NAME` admits the AE title only over TLS with a client certificate that has NAME as a DNS SAN (or, without SANs, as its subject CN); others are rejected (01 01 03)"},
	{"store", "SCP_STORE", "file://./data/objects", "where objects go: file://DIR or s3://bucket/prefix"},
	{"min-free-bytes", "SCP_MIN_FREE_BYTES", "268435456", "with a file:// store or --local: free space kept in reserve on the store's disk for the audit trail and the pipeline; below it associations are refused (02 03 01) and objects fail (A700); with --staging: kept on the staging directory's file system, below it associations are refused; after a write found no space, associations are refused and objects fail (A700) before a byte of them is written, until this and what that write needed are free; 0 = none"},
	{"health-listen", "SCP_HEALTH_LISTEN", ":8081", "HTTP address for /healthz, /readyz and /metrics; with --local the default is " + LocalHealthListen + ", this machine only, as the portal's"},
	{"max-associations", "SCP_MAX_ASSOCIATIONS", "64", "concurrent associations in all; over it new ones are rejected (02 03 02); 0 = unlimited"},
	{"max-associations-per-ae", "SCP_MAX_ASSOCIATIONS_PER_AE", "16", "concurrent associations per calling AE title; 0 = unlimited"},
	{"max-pdu-length", "SCP_MAX_PDU_LENGTH", strconv.FormatUint(uint64(dicomnet.DefaultMaxPDULength), 10), "largest PDU we accept (advertised to peers)"},
	{"proxy-protocol", "SCP_PROXY_PROTOCOL", "false", "expect a PROXY protocol v2 header on every connection (NLB target group attribute); when off a PROXY header is a protocol error"},
	{"accept-big-endian", "SCP_ACCEPT_BIG_ENDIAN", "false", "accept the retired Explicit VR Big Endian transfer syntax"},
	{"idle-timeout", "SCP_IDLE_TIMEOUT", durations.Format(dicomnet.DefaultIdleTimeout), "abort an association silent for this long between messages"},
	{"max-unassociated", "SCP_MAX_UNASSOCIATED", "0", "connections without an association (not yet requested, or rejected and not yet closed) in all; past it the oldest one waiting for its request is closed; 0 = derived from the file descriptor limit"},
	{"max-unassociated-per-address", "SCP_MAX_UNASSOCIATED_PER_ADDRESS", "0", "connections without an association per source address (the PROXY v2 source with --proxy-protocol); a new one over it is closed at once; 0 = derived from the file descriptor limit"},
	{"max-preassociation-bytes", "SCP_MAX_PREASSOCIATION_BYTES", "134217728", "memory the connections without an association may hold in all: each is charged 80 KiB on connecting (1104 KiB on the TLS listener, for its handshake) and its A-ASSOCIATE-RQ as it arrives; past it the oldest one waiting is closed to make room; 0 = unlimited"},
	{"progress-window", "SCP_PROGRESS_WINDOW", durations.Format(dicomnet.DefaultProgressWindow), "while a message is being received, at least --min-progress-bytes must arrive in every such stretch of waiting, or the association is aborted"},
	{"min-progress-bytes", "SCP_MIN_PROGRESS_BYTES", strconv.FormatInt(dicomnet.DefaultMinProgressBytes, 10), "bytes a message being received must bring in every --progress-window"},
	{"max-message-time", "SCP_MAX_MESSAGE_TIME", durations.Format(dicomnet.DefaultMaxMessageTime), "waiting allowed for one whole message (command and data set) before the association is aborted"},
	{"drain-timeout", "SCP_DRAIN_TIMEOUT", "1m", "on SIGTERM, how long in-flight associations may take to finish before they are aborted"},
	{"scale-in-protection", "SCP_SCALE_IN_PROTECTION", "true", "on ECS (ECS_AGENT_URI set), protect the task from scale-in while it holds associations"},
	{"scale-in-protection-release", "SCP_SCALE_IN_PROTECTION_RELEASE", "2m", "release the scale-in protection once the task has held no association for this long"},
	{"log-level", "SCP_LOG_LEVEL", "info", "debug, info, warn or error"},
	{"s3-path-style", "SCP_S3_PATH_STYLE", "false", "path-style S3 addressing (S3-compatible servers); the endpoint comes from AWS_ENDPOINT_URL_S3"},
	{"s3-kms-key", "SCP_S3_KMS_KEY", "", "KMS key id or ARN for SSE-KMS on stored objects"},
	{"s3-part-size", "SCP_S3_PART_SIZE", "8388608", "multipart upload part size in bytes (memory per association is about two parts)"},
	{"s3-put-timeout", "SCP_S3_PUT_TIMEOUT", durations.Format(objectstore.DefaultPutTimeout), "with an s3:// store and no --staging: how long S3 may take to hold an object once its data set has arrived (every request left, retries included) before its C-STORE fails (A700); keep it under the senders' wait for a C-STORE response (Orthanc's DicomScuTimeout: 10 s); at least 1s"},
	{"staging", "SCP_STAGING_DIR", "", "with an s3:// store: a directory every task mounts (EFS) where each object is made durable before C-STORE success, then uploaded to S3; empty: answer once S3 holds it"},
	{"staging-max-backlog", "SCP_STAGING_MAX_BACKLOG", "8589934592", "bytes staged and not yet uploaded past which C-STOREs fail (A700) and associations are refused (02 03 01)"},
	{"staging-max-age", "SCP_STAGING_MAX_AGE", "15m", "associations are refused (02 03 01) while the oldest staged object has waited longer than this for its upload"},
	{"run-marker-stale-after", "SCP_RUN_MARKER_STALE_AFTER", "1m", "with an s3:// store and no --staging: a run marker in the bucket not rewritten for this long by S3's clock (its Last-Modified against S3's Date; the tasks' clocks play no part; each run rewrites its own every twelfth of it) is a run that stopped uncleanly, which the next start, or a running SCP, reports; with any store, a running SCP looks for runs that stopped uncleanly every quarter of it"},
	{"staging-latency", "SCP_STAGING_LATENCY", "", "benchmarks only: hold every staging file-system operation, `efs` (EFS's published latencies) or `op=duration,…`"},
	{"local", "SCP_LOCAL", "false", "run the whole flow in this process: file store, pipeline, SQLite, event log and portal"},
	{"data-dir", "DATA_DIR", "./data", "local mode: objects, quarantine, database and event log"},
	{"portal-listen", "PORTAL_LISTEN", "127.0.0.1:8080", "local mode: portal and JSON API address"},
	{"portal-preview-cache-bytes", "PORTAL_PREVIEW_CACHE_BYTES", strconv.Itoa(thumbnail.DefaultCacheBytes), "local mode: memory the portal keeps series previews in (PNGs and no-preview answers), the least recently used dropped first; 0 = keep none"},
	{"webhook", "WEBHOOKS", "", "local mode: URLs events are POSTed to, comma-separated (flag repeatable)"},
	{"quiet-period", "QUIET_PERIOD", durations.Format(pipeline.DefaultQuietPeriod), "a study is announced as received once this long has passed since its last instance was received or indexed"},
	{"event-patient-data", "EVENT_PATIENT_DATA", "none", "local mode: patient data events carry, as the functions' EVENT_PATIENT_DATA: none, id (Patient ID, accession number) or full (also name, birth date, sex)"},
	{"audit-expiration-days", "AUDIT_EXPIRATION_DAYS", "0", "local mode: remove the SCP's association records (objects/audit/) once they are older than this many days (up to 36500) and in the audit trail, which keeps every record, as the bucket's auditExpirationDays does in AWS; 0 = keep them"},
	{"audit-syslog", "SCP_AUDIT_SYSLOG", "", "send the audit trail as DICOM audit messages (PS3.15 A.5) over syslog TLS to this collector: tls://host[:port], port 6514 by default; empty: off"},
	{"audit-syslog-ca", "SCP_AUDIT_SYSLOG_CA", "", "PEM file of the CA the collector's certificate must chain to (required with --audit-syslog)"},
	{"audit-syslog-cert", "SCP_AUDIT_SYSLOG_CERT", "", "PEM file of our client certificate, when the collector asks for one (mutual TLS; with --audit-syslog-key)"},
	{"audit-syslog-key", "SCP_AUDIT_SYSLOG_KEY", "", "PEM file of the private key of --audit-syslog-cert"},
	{"audit-spool", "SCP_AUDIT_SPOOL", "./data/audit-spool", "without --local: directory of the audit feed's durable outbox (local mode keeps it in its database)"},
	{"audit-spool-max", "SCP_AUDIT_SPOOL_MAX", "100000", "without --local: most records the audit spool holds; past it new records are not fed (they stay in the audit trail) and are counted as dropped"},
	{"commitment-peers", "SCP_COMMITMENT_PEERS", "", "Storage Commitment: where each requesting AE takes its results when its association is gone, `AE=host:port[,AE=host:port…]`, plain DICOM, or `AE=tls://host:port` for a PACS that takes DICOM TLS (see --commitment-tls-ca), `AE=tls://host:port?serverName=NAME` when its certificate names the DNS name NAME rather than host (host is still dialled) (an AE title holding `=` cannot be listed); a request from an AE title not listed is refused (0124)"},
	{"commitment-tls-ca", "SCP_COMMITMENT_TLS_CA", "", "Storage Commitment, `tls://` entries of --commitment-peers: PEM file of the CAs the PACS's server certificate must chain to (its name or IP address, or the entry's serverName, checked against it); required with such an entry in local mode (outside it the SCP only takes requests: in AWS the commitment function reports)"},
	{"commitment-tls-cert", "SCP_COMMITMENT_TLS_CERT", "", "Storage Commitment, `tls://` entries of --commitment-peers: PEM file of our client certificate (extended key usage clientAuth; with --commitment-tls-key), read again for each association; unset: --tls-cert and --tls-key, whose certificate must then allow clientAuth (a server-only one is a start-up error); without --tls-cert, none (logged at start for each tls:// peer)"},
	{"commitment-tls-key", "SCP_COMMITMENT_TLS_KEY", "", "PEM file of the private key of --commitment-tls-cert"},
	{"commitment-wait", "SCP_COMMITMENT_WAIT", durations.Format(pipeline.DefaultCommitmentWait), "local mode, Storage Commitment: how long instances named in a request may still be in flight before they fail (0112)"},
	{"commitment-report-for", "SCP_COMMITMENT_REPORT_FOR", durations.Format(pipeline.DefaultCommitmentReportFor), "local mode, Storage Commitment: how long delivering a result is retried (with backoff) before it is given up"},
	{"commitment-quarantined-committed", "SCP_COMMITMENT_QUARANTINED_COMMITTED", "", "local mode, Storage Commitment: calling AE titles (comma-separated) whose quarantined instances count as committed; by default they fail (0110)"},
}

// value is a string flag that, for boolean settings, may be given bare
// (--local means --local=true), as flag.Bool allows.
type value struct {
	s       string
	boolean bool
}

func (v *value) String() string {
	if v == nil {
		return ""
	}
	if IsPEM(v.s) {
		// PEM text from the environment (a key, perhaps): -h must not print it.
		return "(PEM text)"
	}
	return v.s
}
func (v *value) Set(s string) error { v.s = s; return nil }
func (v *value) IsBoolFlag() bool   { return v.boolean }

type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

// ErrVersion is returned by Load for --version.
var ErrVersion = errors.New("config: version requested")

// Origin is where a setting's value came from.
type Origin int

// Origins of a value.
const (
	FromDefault Origin = iota
	FromFlag
	FromEnv
)

// Load parses args (without the program name), falling back to getenv for
// every flag not given, then to the defaults. -h and --help write the help
// to out and return flag.ErrHelp; --version returns ErrVersion. A bad
// value is reported under the name it was given by: the flag, or the
// environment variable that was set.
func Load(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	fs := flag.NewFlagSet("scp-task", flag.ContinueOnError)
	// The flag package's own messages would print its usage, with Go's
	// placeholders; errors come back to the caller instead.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	vals := map[string]*string{}
	var webhooks stringList
	for _, s := range settings {
		def := s.Default
		if v := getenv(s.Env); v != "" {
			def = v
		}
		if s.Flag == "webhook" {
			if err := webhooks.Set(def); err != nil {
				return Config{}, err
			}
			fs.Var(&webhooks, s.Flag, s.Usage)
			continue
		}
		v := &value{s: def, boolean: isBool(s)}
		vals[s.Flag] = &v.s
		fs.Var(v, s.Flag, s.Usage)
	}
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			Usage(out)
			return Config{}, err
		}
		if unknown := cli.UnknownFlag(fs, err, "--"); unknown != nil {
			return Config{}, fmt.Errorf("%w (scp-task --help lists the flags)", unknown)
		}
		return Config{}, fmt.Errorf("%w (scp-task --help lists the flags)", err)
	}
	if *version {
		return Config{}, ErrVersion
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (scp-task takes flags only; --help lists them)", fs.Arg(0))
	}
	origins := map[string]Origin{}
	for _, s := range settings {
		if getenv(s.Env) != "" {
			origins[s.Flag] = FromEnv
		}
	}
	fs.Visit(func(f *flag.Flag) { origins[f.Name] = FromFlag })
	named := func(name string) string { return namedBy(origins, name) }
	subject := func(name string) string { return describeBy(origins, name, false) }
	get := func(name string) string { return strings.TrimSpace(*vals[name]) }
	var errs []error
	boolean := func(name string) bool {
		b, err := strconv.ParseBool(get(name))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not true or false", subject(name), get(name)))
		}
		return b
	}
	count := func(name string) int {
		n, err := strconv.Atoi(get(name))
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("%s: %q is not a whole number ≥ 0", subject(name), get(name)))
		}
		return n
	}
	duration := func(name string) time.Duration {
		d, err := time.ParseDuration(get(name))
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("%s: %q is not a positive duration like 30s or 5m", subject(name), get(name)))
		}
		return d
	}
	address := func(name string) string {
		a := get(name)
		if _, _, err := net.SplitHostPort(a); err != nil {
			// The address's own error names the value again: its reason only.
			var ae *net.AddrError
			if errors.As(err, &ae) {
				err = errors.New(ae.Err)
			}
			errs = append(errs, fmt.Errorf("%s: %q is not host:port (%v)", subject(name), a, err))
		}
		return a
	}
	listen := get("listen")
	if listen == "off" || listen == "" {
		listen = ""
	} else {
		listen = address("listen")
	}
	tlsListen := get("tls-listen")
	if tlsListen != "" {
		tlsListen = address("tls-listen")
	}
	c := Config{
		Listen:                   listen,
		TLSListen:                tlsListen,
		TLSCert:                  get("tls-cert"),
		TLSKey:                   get("tls-key"),
		TLSClientCA:              get("tls-client-ca"),
		TLSClientCRL:             get("tls-client-crl"),
		AETitle:                  get("ae-title"),
		CallingAEsSpec:           get("calling-aes"),
		Store:                    get("store"),
		HealthListen:             address("health-listen"),
		MaxAssociations:          count("max-associations"),
		MaxAssociationsPerAE:     count("max-associations-per-ae"),
		MaxPDULength:             count("max-pdu-length"),
		ProxyProtocol:            boolean("proxy-protocol"),
		AcceptBigEndian:          boolean("accept-big-endian"),
		IdleTimeout:              duration("idle-timeout"),
		MaxUnassociated:          count("max-unassociated"),
		MaxUnassociatedPerAddr:   count("max-unassociated-per-address"),
		ProgressWindow:           duration("progress-window"),
		MinProgressBytes:         int64(count("min-progress-bytes")),
		MaxMessageTime:           duration("max-message-time"),
		DrainTimeout:             duration("drain-timeout"),
		LogLevel:                 strings.ToLower(get("log-level")),
		ScaleInProtection:        boolean("scale-in-protection"),
		ScaleInProtectionRelease: duration("scale-in-protection-release"),
		ECSAgentURI:              strings.TrimSpace(getenv("ECS_AGENT_URI")),
		S3PathStyle:              boolean("s3-path-style"),
		S3KMSKey:                 get("s3-kms-key"),
		Local:                    boolean("local"),
		DataDir:                  get("data-dir"),
		PortalListen:             address("portal-listen"),
		Webhooks:                 webhooks,
		QuietPeriod:              duration("quiet-period"),
		origins:                  origins,
		AuditSyslog:              get("audit-syslog"),
		AuditSpool:               get("audit-spool"),
		AuditSpoolMax:            count("audit-spool-max"),
	}
	if d, err := strconv.Atoi(get("audit-expiration-days")); err != nil || d < 0 || d > local.MaxAuditExpirationDays {
		errs = append(errs, fmt.Errorf("%s: %q is not a whole number of days from 0 to %d", subject("audit-expiration-days"), get("audit-expiration-days"), local.MaxAuditExpirationDays))
	} else {
		c.AuditExpirationDays = d
	}
	if b, err := strconv.ParseInt(get("max-preassociation-bytes"), 10, 64); err != nil || b < 0 || b > 0 && b < 2<<20 {
		errs = append(errs, fmt.Errorf("%s: %q is not 0 or a byte count of at least 2097152 (one TLS handshake)", subject("max-preassociation-bytes"), get("max-preassociation-bytes")))
	} else {
		c.MaxPreAssociationBytes = b
	}
	if b, err := strconv.ParseInt(get("portal-preview-cache-bytes"), 10, 64); err != nil || b < 0 {
		errs = append(errs, fmt.Errorf("%s: %q is not a byte count ≥ 0", subject("portal-preview-cache-bytes"), get("portal-preview-cache-bytes")))
	} else {
		c.PortalPreviewCacheBytes = b
	}
	if b, err := strconv.ParseInt(get("min-free-bytes"), 10, 64); err != nil || b < 0 {
		errs = append(errs, fmt.Errorf("%s: %q is not a byte count ≥ 0", subject("min-free-bytes"), get("min-free-bytes")))
	} else {
		c.MinFreeBytes = b
	}
	if c.S3PutTimeout = duration("s3-put-timeout"); c.S3PutTimeout > 0 && c.S3PutTimeout < time.Second {
		errs = append(errs, fmt.Errorf("%s: %s must be at least 1s (an object's last requests to S3 and their retries share it)", subject("s3-put-timeout"), c.S3PutTimeout))
	}
	c.StagingDir = get("staging")
	c.StagingMaxAge = duration("staging-max-age")
	if c.RunMarkerStaleAfter = duration("run-marker-stale-after"); c.RunMarkerStaleAfter > 0 && c.RunMarkerStaleAfter < 2*time.Second {
		errs = append(errs, fmt.Errorf("%s: %s must be at least 2s", subject("run-marker-stale-after"), c.RunMarkerStaleAfter))
	}
	if b, err := strconv.ParseInt(get("staging-max-backlog"), 10, 64); err != nil || b < 1<<20 {
		errs = append(errs, fmt.Errorf("%s: %q must be a byte count of at least 1048576", subject("staging-max-backlog"), get("staging-max-backlog")))
	} else {
		c.StagingMaxBacklog = b
	}
	if lat, err := vfs.ParseLatencies(get("staging-latency")); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", subject("staging-latency"), err))
	} else {
		c.StagingLatency = lat
	}
	if c.StagingDir != "" && !strings.HasPrefix(c.Store, "s3://") {
		errs = append(errs, fmt.Errorf("%s: stages uploads to an s3:// store; %s is %q", subject("staging"), named("store"), c.Store))
	}
	if peers, err := commitreport.ParsePeers(get("commitment-peers")); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", subject("commitment-peers"), err))
	} else {
		c.CommitmentPeers = peers
	}
	if p, err := pipeline.ParsePatientDataPolicy(get("event-patient-data")); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", subject("event-patient-data"), err))
	} else {
		c.EventPatientData = p
	}
	c.CommitmentWait = duration("commitment-wait")
	c.CommitmentReportFor = duration("commitment-report-for")
	c.CommitmentQuarantined = map[string]bool{}
	for _, ae := range strings.Split(get("commitment-quarantined-committed"), ",") {
		if ae = strings.TrimSpace(ae); ae == "" {
			continue
		}
		if err := accesscontrol.CheckAETitle(ae); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", subject("commitment-quarantined-committed"), ae, err))
		}
		c.CommitmentQuarantined[ae] = true
	}
	if ps, err := strconv.ParseInt(get("s3-part-size"), 10, 64); err != nil || ps < 5<<20 {
		errs = append(errs, fmt.Errorf("%s: %q must be a byte count of at least 5242880 (S3's minimum part size)", subject("s3-part-size"), get("s3-part-size")))
	} else {
		c.S3PartSize = ps
	}
	if c.MinProgressBytes < 1 {
		errs = append(errs, fmt.Errorf("%s: %q must be at least 1", subject("min-progress-bytes"), get("min-progress-bytes")))
	}
	if c.MaxMessageTime > 0 && c.ProgressWindow > 0 && c.MaxMessageTime < c.ProgressWindow {
		errs = append(errs, fmt.Errorf("%s: %v is shorter than %s %v", subject("max-message-time"), c.MaxMessageTime, named("progress-window"), c.ProgressWindow))
	}
	// The SCP's own AE title by the rule of the ones it admits: it refuses a called AE title that is not one
	// (01 01 07), so with such a title it would refuse every association.
	if err := accesscontrol.CheckAETitle(c.AETitle); err != nil {
		errs = append(errs, fmt.Errorf("%s: %q: %w", subject("ae-title"), c.AETitle, err))
	}
	if c.MaxPDULength != 0 && (c.MaxPDULength < 4096 || c.MaxPDULength > 16<<20) {
		errs = append(errs, fmt.Errorf("%s: %d must be between 4096 and 16777216", subject("max-pdu-length"), c.MaxPDULength))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("%s: %q is not debug, info, warn or error", subject("log-level"), c.LogLevel))
	}
	if acl, err := accesscontrol.Parse(c.CallingAEsSpec); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", subject("calling-aes"), err))
	} else if len(acl.AETitles()) == 0 {
		errs = append(errs, fmt.Errorf("%s: no calling AE title allowed: name at least one site", subject("calling-aes")))
	} else {
		c.CallingAEs = acl
	}
	errs = append(errs, c.checkTLS()...)
	if c.Local && origins["health-listen"] == FromDefault {
		// Local mode runs on someone's own machine, maybe on a café's
		// network: its health port serves that person (curl, a local
		// Prometheus), not a load balancer as on Fargate.
		c.HealthListen = LocalHealthListen
	}
	if c.Local && origins["store"] != FromDefault {
		errs = append(errs, fmt.Errorf("%s: local mode keeps objects under --data-dir; drop %s or --local", subject("store"), named("store")))
	} else if err := checkStoreURL(subject("store"), c.Store); err != nil {
		errs = append(errs, err)
	}
	for _, w := range c.Webhooks {
		switch u, err := url.Parse(w); {
		case logname.AmbiguousUserInfo(w):
			// A "?" or "#" before an "@": user info holding one parses as a host and a query (so a token's head
			// would be dialled and named in the client's errors); a query holding an "@" cannot be told from it.
			errs = append(errs, fmt.Errorf("%s: %q has an \"@\" after a \"?\" or \"#\": percent-encode them in user info (%%3F, %%23) or in the query (%%40)", subject("webhook"), logname.Origin(w)))
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			// Quoted without user info and query: a webhook's token.
			errs = append(errs, fmt.Errorf("%s: %q is not an http(s) URL", subject("webhook"), logname.Origin(w)))
		}
	}
	errs = append(errs, c.loadAuditFeed(get("audit-syslog-ca"), get("audit-syslog-cert"), get("audit-syslog-key"))...)
	errs = append(errs, c.loadCommitmentTLS(get("commitment-tls-ca"), get("commitment-tls-cert"), get("commitment-tls-key"))...)
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// loadAuditFeed checks the audit feed's settings and reads its CA and
// client certificate, so a wrong file is reported now, by its flag;
// c.AuditTLSLoad reads them again for each connection to the collector.
func (c *Config) loadAuditFeed(caFile, certFile, keyFile string) []error {
	if c.AuditSyslog == "" {
		if caFile != "" || certFile != "" || keyFile != "" {
			return []error{fmt.Errorf("%s, %s and %s need %s", c.subject("audit-syslog-ca"), c.named("audit-syslog-cert"), c.named("audit-syslog-key"), c.named("audit-syslog"))}
		}
		return nil
	}
	var errs []error
	addr, host, err := auditfeed.ParseURL(c.AuditSyslog)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", c.subject("audit-syslog"), err))
	}
	c.AuditSyslogAddr = addr
	if caFile == "" {
		errs = append(errs, fmt.Errorf("%s: required with %s (the CA the collector's certificate chains to)", c.subject("audit-syslog-ca"), c.named("audit-syslog")))
	}
	if (certFile == "") != (keyFile == "") {
		errs = append(errs, fmt.Errorf("%s and %s go together", c.subject("audit-syslog-cert"), c.named("audit-syslog-key")))
	}
	if len(errs) > 0 {
		return errs
	}
	// load reads the files and builds the configuration; a certificate refused for its dates alone comes with the
	// configuration (auditfeed.TLSConfig).
	load := func() (*tls.Config, error) {
		var errs []error
		read := func(flag, path string) []byte {
			if path == "" {
				return nil
			}
			b, err := ReadFile(flag, path)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", c.subject(flag), err))
			}
			return b
		}
		ca, cert, key := read("audit-syslog-ca", caFile), read("audit-syslog-cert", certFile), read("audit-syslog-key", keyFile)
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		cfg, err := auditfeed.TLSConfig(host, ca, cert, key)
		switch {
		case errors.Is(err, tlstrust.ErrNotValidNow) && cfg != nil:
			return cfg, fmt.Errorf("%s: %w", c.Describe("audit-syslog-cert"), err)
		case errors.Is(err, auditfeed.ErrCA):
			return nil, fmt.Errorf("%s %s: %w", c.Describe("audit-syslog-ca"), caFile, err)
		case err != nil:
			return nil, fmt.Errorf("%s/%s/%s: %w", c.subject("audit-syslog-ca"), c.named("audit-syslog-cert"), c.named("audit-syslog-key"), err)
		}
		return cfg, nil
	}
	cfg, err := load()
	if errors.Is(err, tlstrust.ErrNotValidNow) && cfg != nil {
		c.certificateNotValid("audit-syslog-cert", err)
		err = nil
	}
	if err != nil {
		return []error{err}
	}
	c.AuditTLS = cfg
	// A certificate refused for its dates alone comes with its configuration, as at start: scp-task's
	// auditCollector decides by tlstrust.LastGood's rule whether it replaces the one in use.
	c.AuditTLSLoad = load
	return nil
}

// CertificateNotValid is a client certificate not valid at start: its setting (Describe: the flag and its variable)
// and the refusal (tlstrust.ErrNotValidNow), which names the certificate and its dates.
type CertificateNotValid struct {
	Setting string
	Err     error
}

// certificateNotValid lists the client certificate of flag as not valid at start: err is its load's refusal, which
// names the setting (the flag and its variable) around the certificate's own (tlstrust.ErrNotValidNow's); the entry
// keeps the certificate's alone, the setting in its own field, so that the warning names the setting once.
func (c *Config) certificateNotValid(flag string, err error) {
	if inner := errors.Unwrap(err); inner != nil {
		err = inner
	}
	c.CertificatesNotValid = append(c.CertificatesNotValid, CertificateNotValid{Setting: c.Describe(flag), Err: err})
}

// CertificateNotValidLog is the message of scp-task's warning at start of each of Config.CertificatesNotValid.
const CertificateNotValidLog = "client certificate not valid now: scp-task starts, and the deliveries that present it fail until it is valid"

// loadCommitmentTLS checks the client TLS settings of the tls:// commitment peers and reads them once, so that a
// wrong file is reported now, by its flag; c.CommitmentTLS reads them again for each association, so renewed
// files are used without a restart. Without a client certificate of its own it reuses the TLS listener's when
// that allows client authentication (clientAuth): one that does not would be refused by the PACS in the
// handshake, so it is an error rather than a silent fallback.
func (c *Config) loadCommitmentTLS(caFile, certFile, keyFile string) []error {
	if !c.CommitmentPeers.TLS() {
		if caFile != "" || certFile != "" || keyFile != "" {
			return []error{fmt.Errorf("%s, %s and %s are for tls:// entries of %s, and it has none", c.subject("commitment-tls-ca"),
				c.named("commitment-tls-cert"), c.named("commitment-tls-key"), c.named("commitment-peers"))}
		}
		return nil
	}
	if !c.Local && caFile == "" && certFile == "" && keyFile == "" {
		// Outside local mode the SCP only takes the requests of the AE titles listed; the commitment function
		// reports, with each site's CA and client certificate (infra's sites[].pacs.tls).
		return nil
	}
	var errs []error
	if caFile == "" {
		errs = append(errs, fmt.Errorf("%s: required with the tls:// entries of %s in local mode (the CA the PACS's server certificate chains to)",
			c.subject("commitment-tls-ca"), c.named("commitment-peers")))
	}
	if (certFile == "") != (keyFile == "") {
		errs = append(errs, fmt.Errorf("%s and %s go together", c.subject("commitment-tls-cert"), c.named("commitment-tls-key")))
	}
	if len(errs) > 0 {
		return errs
	}
	certFlag, keyFlag := "commitment-tls-cert", "commitment-tls-key"
	if certFile == "" && c.TLSCert != "" && c.TLSKey != "" {
		certFlag, keyFlag, certFile, keyFile = "tls-cert", "tls-key", c.TLSCert, c.TLSKey
	}
	load := func() (*tls.Config, error) {
		ca, err := ReadPEM("commitment-tls-ca", caFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Describe("commitment-tls-ca"), err)
		}
		pool, _, err := tlstrust.ParseCAs(ca)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", c.Describe("commitment-tls-ca"), sourceName(caFile, ca), err)
		}
		if certFile == "" {
			return tlstrust.ClientConfig("", pool, nil), nil
		}
		certPEM, err := ReadPEM(certFlag, certFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Describe(certFlag), err)
		}
		keyPEM, err := ReadPEM(keyFlag, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Describe(keyFlag), err)
		}
		cert, err := tlstrust.ClientCertificate(certPEM, keyPEM)
		switch {
		case errors.Is(err, tlstrust.ErrNoClientAuth) && certFlag == "tls-cert":
			return nil, fmt.Errorf("%s: not reused as the client certificate of the tls:// entries of %s: %w; give %s and %s",
				c.Describe("tls-cert"), c.Describe("commitment-peers"), err, c.Describe("commitment-tls-cert"), c.Describe("commitment-tls-key"))
		case errors.Is(err, tlstrust.ErrNotValidNow):
			// Its dates alone: the configuration with the refusal (commitreport.Reporter.TLS's contract), sent only
			// while valid, so that a PACS that asks for no client certificate still gets its report.
			return tlstrust.ClientConfig("", pool, &cert), fmt.Errorf("%s/%s: %w", c.Describe(certFlag), c.Describe(keyFlag), err)
		case err != nil:
			return nil, fmt.Errorf("%s/%s: %w", c.Describe(certFlag), c.Describe(keyFlag), err)
		}
		return tlstrust.ClientConfig("", pool, &cert), nil
	}
	switch _, err := load(); {
	case errors.Is(err, tlstrust.ErrNotValidNow):
		// Its dates alone (tlstrust.ClientCertificate checks them last): each association reads it again, and the
		// Reporter counts the reports whose PACS asks for it.
		c.certificateNotValid(certFlag, err)
	case err != nil:
		return []error{err}
	}
	c.CommitmentTLS, c.CommitmentTLSNoClientCertificate = load, certFile == ""
	return nil
}

// checkTLS checks the listeners and the TLS settings together.
func (c *Config) checkTLS() []error {
	var errs []error
	if c.Listen == "" && c.TLSListen == "" {
		errs = append(errs, fmt.Errorf("%s: the plain listener is off and no %s is set: nothing would accept associations", c.subject("listen"), c.named("tls-listen")))
	}
	if c.TLSListen != "" {
		if c.TLSCert == "" || c.TLSKey == "" {
			errs = append(errs, fmt.Errorf("%s: needs %s and %s (the server certificate and its key)", c.subject("tls-listen"), c.named("tls-cert"), c.named("tls-key")))
		}
	} else {
		for flag, v := range map[string]string{"tls-cert": c.TLSCert, "tls-key": c.TLSKey, "tls-client-ca": c.TLSClientCA, "tls-client-crl": c.TLSClientCRL} {
			if v != "" {
				errs = append(errs, fmt.Errorf("%s: set without %s, which it is for", c.subject(flag), c.named("tls-listen")))
			}
		}
	}
	if c.TLSClientCRL != "" && c.TLSClientCA == "" {
		errs = append(errs, fmt.Errorf("%s: needs %s, the CAs whose revocation lists it holds", c.subject("tls-client-crl"), c.named("tls-client-ca")))
	}
	if c.CallingAEs.BindsCertificates() && (c.TLSListen == "" || c.TLSClientCA == "") {
		errs = append(errs, fmt.Errorf("%s: entries with #NAME admit their AE title only with a verified client certificate: set %s and %s", c.subject("calling-aes"), c.named("tls-listen"), c.named("tls-client-ca")))
	}
	return errs
}

// checkStoreURL checks the store's URL, quoting it as logname.URL does
// (no user info or query), as every URL setting's error does.
func checkStoreURL(name, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", name, logname.RedactURL(err, raw))
	}
	s := logname.URL(raw)
	switch u.Scheme {
	case "file":
		if u.Host+u.Path == "" {
			return fmt.Errorf("%s: %q names no directory (file://DIR)", name, s)
		}
	case "s3":
		if u.Host == "" {
			return fmt.Errorf("%s: %q names no bucket (s3://bucket/prefix)", name, s)
		}
	default:
		return fmt.Errorf("%s: %q must start with file:// or s3://", name, s)
	}
	return nil
}

// StoreDir returns the directory of a file:// store URL (file://./data is
// relative, file:///srv/data absolute).
func StoreDir(store string) string {
	rest := strings.TrimPrefix(store, "file://")
	return rest
}

// secrets are the settings whose value may be a secret itself: a private
// key's file, or, given by mistake where its path was wanted, the key's
// text (PEM, or its bare base64 as some secret stores keep it). Setting.Secret
// reports them, ReadFile keeps their values out of its errors, and
// TestSecretSettings holds every setting whose usage names a private key
// to be here.
var secrets = map[string]bool{"tls-key": true, "audit-syslog-key": true, "commitment-tls-key": true}

// Secret reports whether the setting's value may be a secret itself
// (secrets): ReadFile never quotes it.
func (s Setting) Secret() bool { return secrets[s.Flag] }

// ReadFile reads the file that the file setting flag names by path: the one
// reader of every file setting's file, scp-task's TLS listener's (servertls)
// included. For a secret setting (Setting.Secret) its error never quotes the
// value, which may be the secret rather than a path (logname.WithoutPath:
// an *fs.PathError quotes it, "open <the value>: file name too long"),
// and never holds the file's bytes; for another, it names the file.
func ReadFile(flag, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil && secrets[flag] {
		err = logname.WithoutPath(err)
	}
	return b, err
}

// ReadPEM returns the PEM bytes of the value v of the file setting flag: the text itself when v is PEM text (as
// an ECS task receives a Secrets Manager secret in an environment variable), its line breaks restored when some
// secret store flattened them to "\n", else the file v names, read by ReadFile. The one reader of settings that
// may hold either (scp-task's TLS listener's, servertls, and its certificate reused as the commitment client's).
func ReadPEM(flag, v string) ([]byte, error) {
	if IsPEM(v) {
		if !strings.Contains(v, "\n") {
			v = strings.ReplaceAll(v, `\n`, "\n")
		}
		return []byte(v), nil
	}
	return ReadFile(flag, v)
}

// sourceName is how an error names the value v of a PEM setting whose bytes (ReadPEM's) are b: the path v, or,
// for PEM text, never the text (it may hold a key pasted by mistake) but its first certificate by
// tlstrust.NameOf, or without one its size and SHA-256.
func sourceName(v string, b []byte) string {
	if !IsPEM(v) {
		return v
	}
	var first *x509.Certificate
	n := 0
	for rest := b; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		n++
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && first == nil {
			first = c
		}
	}
	switch {
	case first != nil && n > 1:
		return fmt.Sprintf("(PEM text: certificate %s and %d more)", tlstrust.NameOf(first), n-1)
	case first != nil:
		return fmt.Sprintf("(PEM text: certificate %s)", tlstrust.NameOf(first))
	}
	sum := sha256.Sum256(b)
	return fmt.Sprintf("(PEM text of %d bytes, SHA-256 %s)", len(b), hex.EncodeToString(sum[:]))
}

// IsPEM reports whether a setting's value is PEM text rather than a path.
func IsPEM(v string) bool { return strings.HasPrefix(strings.TrimSpace(v), "-----BEGIN") }

// Origin reports where the setting of flag name got its value.
func (c Config) Origin(name string) Origin { return c.origins[name] }

// namedBy is how an error names a setting: by what the user wrote, the
// environment variable when that set it, else the flag.
func namedBy(origins map[string]Origin, name string) string {
	if origins[name] == FromEnv {
		return envOf(name)
	}
	return "--" + name
}

// named is namedBy for c's settings.
func (c *Config) named(name string) string { return namedBy(c.origins, name) }

// Describe names a setting for a person: its flag and its environment
// variable, the one that gave the value first ("PORTAL_LISTEN (or
// --portal-listen)" when the environment set it).
func (c Config) Describe(name string) string { return describeBy(c.origins, name, true) }

// describeBy is Describe for origins. A setting's bad value leads its
// error by describeBy without always: the variable with its flag when the
// environment set it (a variable set in a shell profile or a task
// definition, and the flag that would override it), the flag alone when
// the flag did.
func describeBy(origins map[string]Origin, name string, always bool) string {
	switch {
	case origins[name] == FromEnv:
		return envOf(name) + " (or --" + name + ")"
	case always:
		return "--" + name + " (or " + envOf(name) + ")"
	}
	return "--" + name
}

// subject is describeBy for the setting a check of c's is about.
func (c *Config) subject(name string) string { return describeBy(c.origins, name, false) }

func envOf(name string) string {
	for _, s := range settings {
		if s.Flag == name {
			return s.Env
		}
	}
	return ""
}

func isBool(s Setting) bool { return s.Default == "false" || s.Default == "true" }

// placeholders names the value of the settings whose kind the default
// does not tell (see placeholder).
var placeholders = map[string]string{
	"listen":                     "ADDR",
	"tls-listen":                 "ADDR",
	"tls-cert":                   "PEM",
	"tls-key":                    "PEM",
	"tls-client-ca":              "PEM",
	"tls-client-crl":             "PEM",
	"ae-title":                   "AE",
	"calling-aes":                "LIST",
	"s3-kms-key":                 "KEY",
	"data-dir":                   "DIR",
	"log-level":                  "LEVEL",
	"webhook":                    "URL",
	"audit-syslog":               "URL",
	"audit-syslog-ca":            "FILE",
	"audit-syslog-cert":          "FILE",
	"audit-syslog-key":           "FILE",
	"audit-spool":                "DIR",
	"s3-part-size":               "BYTES",
	"staging":                    "DIR",
	"staging-max-backlog":        "BYTES",
	"staging-latency":            "LATENCIES",
	"max-pdu-length":             "BYTES",
	"min-progress-bytes":         "BYTES",
	"min-free-bytes":             "BYTES",
	"portal-preview-cache-bytes": "BYTES",
}

// placeholder is the word the help shows for a setting's value: named in
// placeholders, or told by the kind of its default.
func placeholder(s Setting) string {
	if p, ok := placeholders[s.Flag]; ok {
		return p
	}
	d := s.Default
	switch {
	case isBool(s):
		return ""
	case strings.Contains(d, "://"):
		return "URL"
	}
	if _, err := time.ParseDuration(d); err == nil && d != "0" {
		return "DURATION"
	}
	if _, err := strconv.Atoi(d); err == nil {
		return "N"
	}
	if _, _, err := net.SplitHostPort(d); err == nil {
		return "ADDR"
	}
	return "VALUE"
}

// Usage writes scp-task's help: every flag with its placeholder, meaning,
// environment variable and default.
func Usage(w io.Writer) {
	var b strings.Builder
	b.WriteString(`Usage: scp-task [flags]

scp-task is the dicom-ingest C-STORE SCP: it stores every object durably
before it answers success. With --local it also runs the ingest pipeline,
the event log and the portal in this process (make run).

Every flag can be set by the environment variable shown; a flag wins over
the variable, which wins over the default.

`)
	for _, s := range settings {
		name := "--" + s.Flag
		if p := placeholder(s); p != "" {
			name += " " + p
		}
		fmt.Fprintf(&b, "  %s\n      %s\n      env %s", name, s.Usage, s.Env)
		if s.Default != "" {
			fmt.Fprintf(&b, ", default %s", s.Default)
		}
		b.WriteString("\n")
	}
	b.WriteString("  --version\n      print the version and exit\n  -h, --help\n      print this help and exit\n")
	_, _ = io.WriteString(w, b.String()) // help to a terminal: nothing to do if it fails
}
