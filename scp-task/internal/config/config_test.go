package config

import (
	"errors"
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/thumbnail"
	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol/aetitletest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/durations"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.Listen, c.AETitle, c.CallingAEs.String(), c.Store, c.HealthListen, c.MaxAssociations, c.ProxyProtocol, c.DrainTimeout, c.DataDir, c.PortalListen, c.QuietPeriod, c.S3PartSize, c.S3PutTimeout, c.MinFreeBytes, c.MaxPreAssociationBytes, c.PortalPreviewCacheBytes}
	want := []any{":11112", "REMOTE_AE", "LOCAL_AE", "file://./data/objects", ":8081", 64, false, 60 * time.Second, "./data", "127.0.0.1:8080", 60 * time.Second, int64(8 << 20), 8 * time.Second, int64(256 << 20), int64(128 << 20), int64(thumbnail.DefaultCacheBytes)}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
	}
}

// TestDICOMLimitDefaultsAreShared: the DICOM limits scp-task applies by
// default are shared/dicomnet's defaults, the values the onboarding kit
// (infra/onboarding, which cannot import this package) states to a site and
// the conformance statement gives. The settings table spelt them out a
// second time ("262144", "5m", "1m", "1024", "2h"): a change to either copy
// would have left the kit stating limits scp-task does not apply.
func TestDICOMLimitDefaultsAreShared(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.MaxPDULength, c.IdleTimeout, c.ProgressWindow, c.MinProgressBytes, c.MaxMessageTime}
	want := []any{int(dicomnet.DefaultMaxPDULength), dicomnet.DefaultIdleTimeout, dicomnet.DefaultProgressWindow, dicomnet.DefaultMinProgressBytes, dicomnet.DefaultMaxMessageTime}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("DICOM limit defaults (-dicomnet +scp-task):\n%s", d)
	}
}

// TestS3PutTimeoutDefaultIsShared: scp-task's --s3-put-timeout defaults to
// objectstore.DefaultPutTimeout, where the stack's scp.s3PutTimeoutSeconds
// takes its default too (infra/config TestS3PutTimeoutDefaultIsShared). Each
// spelt out 8 s: a change of one left make run and the deployed tasks on
// different bounds.
func TestS3PutTimeoutDefaultIsShared(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.S3PutTimeout != objectstore.DefaultPutTimeout {
		t.Errorf("--s3-put-timeout defaults to %s; objectstore.DefaultPutTimeout is %s", c.S3PutTimeout, objectstore.DefaultPutTimeout)
	}
}

func TestFlagsBeatEnvBeatsDefault(t *testing.T) {
	e := env(map[string]string{"SCP_AE_TITLE": "FROM_ENV", "SCP_LISTEN": "127.0.0.1:1", "WEBHOOKS": "http://a/x, http://b/y"})
	c, err := Load([]string{"--listen", "127.0.0.1:2", "--webhook", "https://c/z"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.AETitle != "FROM_ENV" || c.Listen != "127.0.0.1:2" {
		t.Errorf("AETitle=%q Listen=%q", c.AETitle, c.Listen)
	}
	if d := cmp.Diff([]string{"http://a/x", "http://b/y", "https://c/z"}, c.Webhooks); d != "" {
		t.Errorf("webhooks (-want +got):\n%s", d)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad listen", []string{"--listen", "11112"}, nil, `--listen: "11112" is not host:port`},
		{"long ae", []string{"--ae-title", "ABCDEFGHIJKLMNOPQ"}, nil, "--ae-title"},
		{"no calling aes", []string{"--calling-aes", " , "}, nil, "no calling AE title allowed"},
		{"bad cidr", nil, map[string]string{"SCP_CALLING_AES": "A@10.0.0.0/99"}, "not a CIDR"},
		{"bad store", []string{"--store", "ftp://x"}, nil, "must start with file:// or s3://"},
		{"bucketless", []string{"--store", "s3:///prefix"}, nil, "names no bucket"},
		{"bad bool", []string{"--proxy-protocol=maybe"}, nil, "not true or false"},
		{"bad duration", []string{"--drain-timeout", "-1s"}, nil, "not a positive duration"},
		{"small part", []string{"--s3-part-size", "1000"}, nil, "at least 5242880"},
		{"short put timeout", []string{"--s3-put-timeout", "500ms"}, nil, "--s3-put-timeout: 500ms must be at least 1s"},
		{"put timeout from the environment", nil, map[string]string{"SCP_S3_PUT_TIMEOUT": "0s"}, `SCP_S3_PUT_TIMEOUT (or --s3-put-timeout): "0s" is not a positive duration`},
		{"tiny pdu", []string{"--max-pdu-length", "100"}, nil, "between 4096"},
		{"commitment peer without port", []string{"--commitment-peers", "PACS=10.0.0.1"}, nil, "--commitment-peers"},
		{"commitment peer twice", nil, map[string]string{"SCP_COMMITMENT_PEERS": "PACS=h:1,PACS=h:2"}, "given twice"},
		{"commitment wait", []string{"--commitment-wait", "0s"}, nil, "--commitment-wait"},
		{"commitment quarantined AE", []string{"--commitment-quarantined-committed", "A,WAY_TOO_LONG_AE_TITLE"}, nil, "--commitment-quarantined-committed"},
		{"bad webhook", []string{"--webhook", "ftp://x"}, nil, "not an http(s) URL"},
		{"stray arg", []string{"extra"}, nil, `unexpected argument "extra"`},
		{"local with store", []string{"--local", "--store", "s3://b/p"}, nil, "local mode keeps objects under --data-dir"},
		{"negative", []string{"--max-associations", "-3"}, nil, "whole number"},
		{"staging a file store", []string{"--staging", "/mnt/efs"}, nil, "--staging: stages uploads to an s3:// store"},
		{"small backlog", []string{"--store", "s3://b/p", "--staging", "/x", "--staging-max-backlog", "10"}, nil, "at least 1048576"},
		{"negative reserve", nil, map[string]string{"SCP_MIN_FREE_BYTES": "-1"}, `SCP_MIN_FREE_BYTES (or --min-free-bytes): "-1" is not a byte count ≥ 0`},
		{"reserve with a unit", []string{"--min-free-bytes", "256MiB"}, nil, `--min-free-bytes: "256MiB" is not a byte count ≥ 0`},
		{"negative preview cache", nil, map[string]string{"PORTAL_PREVIEW_CACHE_BYTES": "-1"}, `PORTAL_PREVIEW_CACHE_BYTES (or --portal-preview-cache-bytes): "-1" is not a byte count ≥ 0`},
		{"preview cache with a unit", []string{"--portal-preview-cache-bytes", "32MiB"}, nil, `--portal-preview-cache-bytes: "32MiB" is not a byte count ≥ 0`},
		{"pre-association memory below one TLS handshake", []string{"--max-preassociation-bytes", "1048576"}, nil, "at least 2097152"},
		{"pre-association memory with a unit", nil, map[string]string{"SCP_MAX_PREASSOCIATION_BYTES": "128MiB"}, `SCP_MAX_PREASSOCIATION_BYTES (or --max-preassociation-bytes): "128MiB" is not 0`},
		{"bad latency", nil, map[string]string{"SCP_STAGING_LATENCY": "write=fast"}, "SCP_STAGING_LATENCY (or --staging-latency): vfs: latency \"write=fast\""},
		{"bad patient data", nil, map[string]string{"EVENT_PATIENT_DATA": "names"}, `EVENT_PATIENT_DATA (or --event-patient-data): pipeline: unknown patient data policy "names"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.args, env(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestAETitleFlag holds --ae-title to the callers' one table of AE titles (accesscontrol.CheckAETitle): the SCP
// refuses a called AE title that is not one (01 01 07), even one equal to its own, so an AE title it cannot be
// called by is refused at start; one of spaces alone was taken, and no called AE title matched it.
func TestAETitleFlag(t *testing.T) {
	for _, tc := range aetitletest.Titles {
		t.Run(tc.Name, func(t *testing.T) {
			c, err := Load([]string{"--ae-title", tc.AE}, env(nil), io.Discard)
			switch {
			case !tc.Valid:
				if err == nil || !strings.Contains(err.Error(), "--ae-title: ") || !strings.Contains(err.Error(), tc.Problem) {
					t.Errorf("Load error = %v, want one naming --ae-title and containing %q", err, tc.Problem)
				}
			case err != nil:
				t.Errorf("--ae-title %q refused: %v", tc.AE, err)
			case c.AETitle != strings.TrimSpace(tc.AE):
				t.Errorf("AETitle = %q, want %q", c.AETitle, strings.TrimSpace(tc.AE))
			}
			if tc.Valid {
				return
			}
			_, err = Load(nil, env(map[string]string{"SCP_AE_TITLE": tc.AE}), io.Discard)
			if tc.AE != "" && (err == nil || !strings.Contains(err.Error(), "SCP_AE_TITLE (or --ae-title): ")) {
				t.Errorf("SCP_AE_TITLE %q: %v", tc.AE, err)
			}
		})
	}
}

// TestEventPatientData: local mode's events carry the patient data the
// functions' would under the same EVENT_PATIENT_DATA, so a subscriber can
// try the deployment's policy with make run; none by default, as there.
func TestEventPatientData(t *testing.T) {
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want pipeline.PatientDataPolicy
	}{
		{nil, nil, pipeline.PatientDataNone},
		{nil, map[string]string{"EVENT_PATIENT_DATA": "id"}, pipeline.PatientDataID},
		{[]string{"--event-patient-data", "full"}, map[string]string{"EVENT_PATIENT_DATA": "id"}, pipeline.PatientDataFull},
	} {
		c, err := Load(tt.args, env(tt.env), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.EventPatientData != tt.want {
			t.Errorf("%v %v: policy %q, want %q", tt.args, tt.env, c.EventPatientData, tt.want)
		}
	}
}

// TestAuditExpirationDays: --audit-expiration-days (AUDIT_EXPIRATION_DAYS)
// takes a whole number of days from 0 (keep every record) to 36500; any
// other value (negative, past the bound, past the int range, not a number)
// is refused with an error naming the setting and the range. A huge one was
// taken, and local mode's cutoff date wrapped around the calendar to
// tomorrow: every association record went.
func TestAuditExpirationDays(t *testing.T) {
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want int
		err  string
	}{
		{nil, nil, 0, ""},
		{[]string{"--audit-expiration-days", "30"}, nil, 30, ""},
		{nil, map[string]string{"AUDIT_EXPIRATION_DAYS": "36500"}, 36500, ""},
		{[]string{"--audit-expiration-days", "-1"}, nil, 0, `--audit-expiration-days: "-1" is not a whole number of days from 0 to 36500`},
		{[]string{"--audit-expiration-days", "36501"}, nil, 0, `--audit-expiration-days: "36501" is not a whole number of days from 0 to 36500`},
		{nil, map[string]string{"AUDIT_EXPIRATION_DAYS": "9223372036854775807"}, 0, `AUDIT_EXPIRATION_DAYS (or --audit-expiration-days): "9223372036854775807" is not a whole number of days from 0 to 36500`},
		{nil, map[string]string{"AUDIT_EXPIRATION_DAYS": "99999999999999999999"}, 0, `AUDIT_EXPIRATION_DAYS (or --audit-expiration-days): "99999999999999999999" is not a whole number of days`},
		{[]string{"--audit-expiration-days", "a week"}, nil, 0, `--audit-expiration-days: "a week" is not a whole number of days`},
	} {
		c, err := Load(tt.args, env(tt.env), io.Discard)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%v %v: %v", tt.args, tt.env, err)
		case tt.err == "" && c.AuditExpirationDays != tt.want:
			t.Errorf("%v %v: %d days, want %d", tt.args, tt.env, c.AuditExpirationDays, tt.want)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%v %v: error %v, want one containing %q", tt.args, tt.env, err, tt.err)
		}
	}
}

func TestHelp(t *testing.T) {
	var sb strings.Builder
	_, err := Load([]string{"-h"}, env(nil), &sb)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	for _, s := range Settings() {
		if !strings.Contains(sb.String(), "-"+s.Flag) || !strings.Contains(sb.String(), s.Env) {
			t.Errorf("help lacks %s / %s", s.Flag, s.Env)
		}
	}
}

// TestDurationDefaults: a duration's default, as --help and
// configuration.md show it, is written as the logs, the events and the
// portal write durations (shared/durations): --quiet-period's 60s was
// 1m0s in the events and the log line of local mode's start.
func TestDurationDefaults(t *testing.T) {
	for _, s := range Settings() {
		d, err := time.ParseDuration(s.Default)
		if err != nil || s.Default == "0" {
			continue
		}
		if want := durations.Format(d); s.Default != want {
			t.Errorf("--%s's default %q, want %q", s.Flag, s.Default, want)
		}
	}
}

func TestLocalStoreDefault(t *testing.T) {
	c, err := Load([]string{"--local"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Local {
		t.Fatal("Local not set")
	}
}

// TestLocalHealthListen: local mode's health port is on loopback unless
// chosen, as the portal is (it listened on every interface, so a laptop
// on a café's network served its /metrics to the café); without --local
// (Fargate, where the load balancer checks it) it stays on every
// interface.
func TestLocalHealthListen(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"local", []string{"--local"}, nil, "127.0.0.1:8081"},
		{"local, chosen by flag", []string{"--local", "--health-listen", ":8081"}, nil, ":8081"},
		{"local, chosen by the environment", nil, map[string]string{"SCP_LOCAL": "true", "SCP_HEALTH_LISTEN": ":9091"}, ":9091"},
		{"not local", nil, nil, ":8081"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.HealthListen != tt.want {
				t.Errorf("HealthListen = %q, want %q", c.HealthListen, tt.want)
			}
		})
	}
}

func FuzzLoad(f *testing.F) {
	f.Add("--calling-aes", "A@10.0.0.0/8", "SCP_LISTEN", ":1")
	f.Add("--store", "s3://b/p", "SCP_MAX_ASSOCIATIONS", "x")
	f.Fuzz(func(t *testing.T, flagName, flagVal, envName, envVal string) {
		c, err := Load([]string{flagName, flagVal}, env(map[string]string{envName: envVal}), io.Discard)
		if err == nil && c.CallingAEs == nil {
			t.Fatal("a loaded config must carry an allowlist")
		}
	})
}

func TestScaleInProtection(t *testing.T) {
	c, err := Load(nil, env(map[string]string{"ECS_AGENT_URI": "http://169.254.170.2/api/abc ", "SCP_SCALE_IN_PROTECTION_RELEASE": "30s"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.ScaleInProtection || c.ScaleInProtectionRelease != 30*time.Second || c.ECSAgentURI != "http://169.254.170.2/api/abc" {
		t.Errorf("protection %v release %v agent %q", c.ScaleInProtection, c.ScaleInProtectionRelease, c.ECSAgentURI)
	}
	c, err = Load([]string{"--scale-in-protection=false"}, env(nil), io.Discard)
	if err != nil || c.ScaleInProtection || c.ScaleInProtectionRelease != 2*time.Minute {
		t.Errorf("off: %v %v %v", c.ScaleInProtection, c.ScaleInProtectionRelease, err)
	}
	if _, err := Load([]string{"--scale-in-protection-release", "0s"}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "--scale-in-protection-release") {
		t.Errorf("zero release delay: %v", err)
	}
}

// TestErrorNamesTheSource: a bad value is reported under the name it was
// given by, the environment variable when that set it.
func TestErrorNamesTheSource(t *testing.T) {
	tests := []struct {
		name, want, notWant string
		args                []string
		env                 map[string]string
	}{
		{name: "env address", env: map[string]string{"PORTAL_LISTEN": "8080"}, want: `PORTAL_LISTEN (or --portal-listen): "8080" is not host:port`, notWant: "--portal-listen:"},
		{name: "flag address", args: []string{"--portal-listen", "8080"}, env: map[string]string{"PORTAL_LISTEN": "127.0.0.1:1"}, want: `--portal-listen: "8080"`},
		{name: "env duration", env: map[string]string{"QUIET_PERIOD": "soon"}, want: `QUIET_PERIOD (or --quiet-period): "soon" is not a positive duration`},
		{name: "env count", env: map[string]string{"SCP_MAX_ASSOCIATIONS": "many"}, want: `SCP_MAX_ASSOCIATIONS (or --max-associations): "many"`},
		{name: "env bool", env: map[string]string{"SCP_LOCAL": "yes please"}, want: `SCP_LOCAL (or --local): "yes please" is not true or false`},
		{name: "env store with local", args: []string{"--local"}, env: map[string]string{"SCP_STORE": "file:///x"}, want: "SCP_STORE (or --store): local mode keeps objects under --data-dir"},
		{name: "mistyped flag", args: []string{"--listn", ":1"}, want: "unknown flag --listn; did you mean --listen? (scp-task --help lists the flags)"},
		{name: "flag cut short", args: []string{"--portal", ":1"}, want: "unknown flag --portal; did you mean --portal-listen? (scp-task --help lists the flags)"},
		{name: "flag run on", args: []string{"--listen-addr", ":1"}, want: "unknown flag --listen-addr; did you mean --listen? (scp-task --help lists the flags)"},
		{name: "unknown flag", args: []string{"--bogus"}, want: "unknown flag --bogus (scp-task --help lists the flags)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.args, env(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.notWant != "" && strings.Contains(err.Error(), tt.notWant)) {
				t.Fatalf("Load error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestUsage: the help shows real placeholders, each variable and default.
func TestUsage(t *testing.T) {
	var b strings.Builder
	if _, err := Load([]string{"--help"}, env(nil), &b); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	help := b.String()
	for _, want := range []string{
		"Usage: scp-task [flags]",
		"  --listen ADDR\n", "env SCP_LISTEN, default :11112",
		"  --store URL\n", "  --webhook URL\n", "  --max-associations N\n", "  --idle-timeout DURATION\n",
		"  --local\n", "  --data-dir DIR\n", "  --version\n", "-h, --help",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
	if strings.Contains(help, " value\n") {
		t.Errorf("help shows the flag package's placeholder:\n%s", help)
	}
	if _, err := Load([]string{"--version"}, env(nil), io.Discard); !errors.Is(err, ErrVersion) {
		t.Errorf("--version: %v", err)
	}
}

func TestDescribe(t *testing.T) {
	c, err := Load([]string{"--listen", "127.0.0.1:1"}, env(map[string]string{"PORTAL_LISTEN": "127.0.0.1:2"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"portal-listen": "PORTAL_LISTEN (or --portal-listen)",
		"listen":        "--listen (or SCP_LISTEN)",
		"health-listen": "--health-listen (or SCP_HEALTH_LISTEN)",
	} {
		if got := c.Describe(name); got != want {
			t.Errorf("Describe(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestStaging(t *testing.T) {
	c, err := Load([]string{"--store", "s3://b/p", "--staging", "/mnt/staging", "--staging-latency", "efs,sync=1ms"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := vfs.EFS
	want[vfs.OpSync] = time.Millisecond
	if c.StagingDir != "/mnt/staging" || c.StagingLatency != want || c.StagingMaxBacklog != 8<<30 || c.StagingMaxAge != 15*time.Minute {
		t.Errorf("staging settings %q %v %d %v", c.StagingDir, c.StagingLatency, c.StagingMaxBacklog, c.StagingMaxAge)
	}
}

func TestCommitmentSettings(t *testing.T) {
	c, err := Load([]string{"--commitment-peers", "PACS=10.0.0.1:104, CT=pacs.local:4242", "--commitment-quarantined-committed", "PACS"},
		env(map[string]string{"SCP_COMMITMENT_WAIT": "90s"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.CommitmentPeers.String() != "CT=pacs.local:4242,PACS=10.0.0.1:104" || c.CommitmentWait != 90*time.Second ||
		c.CommitmentReportFor != time.Hour || !c.CommitmentQuarantined["PACS"] || c.CommitmentQuarantined["CT"] {
		t.Errorf("%+v", c)
	}
}

// TestEnvErrorIsShort: a bad value from the environment is told in one
// line: the variable that was set, the flag that overrides it, the value
// and its problem, nothing twice. It read `config: SCP_LISTEN: "bad" is
// not host:port (address bad: missing port in address)`: a package
// prefix, the value twice, and no flag.
func TestEnvErrorIsShort(t *testing.T) {
	for _, tt := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"address", map[string]string{"SCP_LISTEN": "bad"}, `SCP_LISTEN (or --listen): "bad" is not host:port (missing port in address)`},
		{"duration", map[string]string{"SCP_IDLE_TIMEOUT": "5"}, `SCP_IDLE_TIMEOUT (or --idle-timeout): "5" is not a positive duration like 30s or 5m`},
		{"number", map[string]string{"SCP_MAX_ASSOCIATIONS": "-3"}, `SCP_MAX_ASSOCIATIONS (or --max-associations): "-3" is not a whole number ≥ 0`},
		{"two, a line each", map[string]string{"SCP_MAX_ASSOCIATIONS": "x", "QUIET_PERIOD": "soon"},
			"SCP_MAX_ASSOCIATIONS (or --max-associations): \"x\" is not a whole number ≥ 0\nQUIET_PERIOD (or --quiet-period): \"soon\" is not a positive duration like 30s or 5m"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(nil, env(tt.env), io.Discard)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Load error:\n%v\nwant:\n%s", err, tt.want)
			}
		})
	}
}

// TestSecretSettings: every setting whose value is a private key's is
// secret (Setting.Secret), so that ReadFile, the reader of every file
// setting, never quotes its value; no other is, so that an unreadable
// certificate's error names its file. (scp-task's
// TestSecretSettingsNeverQuoted gives each secret setting key text and
// files and reads the errors.)
func TestSecretSettings(t *testing.T) {
	const secret = "s3cretKeyMaterial"
	for _, s := range Settings() {
		key := strings.Contains(s.Usage, "private key")
		if s.Secret() != key {
			t.Errorf("--%s: Secret() %v, but its usage %s a private key: %q", s.Flag, s.Secret(), map[bool]string{true: "names", false: "does not name"}[key], s.Usage)
		}
		value := "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" + secret // a key's text where its file's path was wanted
		_, err := ReadFile(s.Flag, value)
		if err == nil {
			t.Fatalf("--%s: read %q", s.Flag, value)
		}
		if quoted := strings.Contains(err.Error(), secret); quoted == s.Secret() {
			t.Errorf("--%s (secret %v): ReadFile's error %q", s.Flag, s.Secret(), err)
		}
	}
}

// TestBadSettingKeepsSecrets: a bad setting's error, which scp-task logs
// as JSON and a person reads on a terminal, quotes the value of a setting
// that cannot hold a secret, and of one that can only what is not secret:
// a URL without its user info and query (a webhook's or a collector's
// token), a key's file never by the value given (PEM text where a path was
// wanted). They quoted the whole value.
func TestBadSettingKeepsSecrets(t *testing.T) {
	const secret = "s3cret"
	pemKey := "-----BEGIN PRIVATE KEY-----\n" + secret + "\n-----END PRIVATE KEY-----"
	dir := t.TempDir()
	tests := []struct {
		name string
		env  map[string]string
		want string // what the error still says
	}{
		{"webhook not http", map[string]string{"SCP_LOCAL": "true", "WEBHOOKS": "ftp://hook:" + secret + "@hooks.example/x?token=" + secret}, `WEBHOOKS (or --webhook): "ftp://hooks.example/…" is not an http(s) URL`},
		{"webhook with a slash in its password", map[string]string{"SCP_LOCAL": "true", "WEBHOOKS": "https://hook:" + secret + "/x@hooks.example/y"}, "is not an http(s) URL"},
		{"collector with a slash in its password", map[string]string{"SCP_AUDIT_SYSLOG": "tls://feed:" + secret + "/x@collector.example:6514", "SCP_AUDIT_SYSLOG_CA": filepath.Join(dir, "ca.pem")}, "SCP_AUDIT_SYSLOG (or --audit-syslog)"},
		// A "?" or "#" in user info: url.Parse takes what precedes it for the host (or a port), the rest for a query.
		{"webhook with a ? in its user info", map[string]string{"SCP_LOCAL": "true", "WEBHOOKS": "https://tok?" + secret + "@hooks.example/y"}, `WEBHOOKS (or --webhook): "https://(not shown)" has an "@" after a "?" or "#"`},
		{"webhook with a # in its password", map[string]string{"SCP_LOCAL": "true", "WEBHOOKS": "https://hook:pa#" + secret + "@hooks.example/y"}, `"https://(not shown)" has an "@"`},
		{"collector with a ? in its password", map[string]string{"SCP_AUDIT_SYSLOG": "tls://feed:pa?" + secret + "@collector.example:6514", "SCP_AUDIT_SYSLOG_CA": filepath.Join(dir, "ca.pem")}, "SCP_AUDIT_SYSLOG (or --audit-syslog)"},
		{"store with a ? in its password", map[string]string{"SCP_STORE": "s3://key:pa?" + secret + "@bucket/prefix"}, "SCP_STORE (or --store)"},
		{"webhook with a token in its path", map[string]string{"SCP_LOCAL": "true", "WEBHOOKS": "ftp://hooks.slack.example/services/T0/B0/" + secret}, `"ftp://hooks.slack.example/…" is not an http(s) URL`},
		{"webhook without a scheme", map[string]string{"SCP_LOCAL": "true", "WEBHOOKS": "hook:" + secret + "@hooks.example/x?token=" + secret}, "is not an http(s) URL"},
		{"collector with user info", map[string]string{"SCP_AUDIT_SYSLOG": "tls://feed:" + secret + "@collector.example:6514", "SCP_AUDIT_SYSLOG_CA": filepath.Join(dir, "ca.pem")}, `"tls://collector.example:6514"`},
		{"collector with a query", map[string]string{"SCP_AUDIT_SYSLOG": "tcp://collector.example?token=" + secret, "SCP_AUDIT_SYSLOG_CA": filepath.Join(dir, "ca.pem")}, `"tcp://collector.example"`},
		{"collector that does not parse", map[string]string{"SCP_AUDIT_SYSLOG": "tls://collector.example:6514/%zz?token=" + secret, "SCP_AUDIT_SYSLOG_CA": filepath.Join(dir, "ca.pem")}, "SCP_AUDIT_SYSLOG (or --audit-syslog)"},
		{"store with user info", map[string]string{"SCP_STORE": "s3://key:" + secret + "@/prefix"}, "names no bucket"},
		{"store that does not parse", map[string]string{"SCP_STORE": "s3://bucket/%zz?token=" + secret}, "SCP_STORE (or --store)"},
		{"collector key as PEM text", map[string]string{"SCP_AUDIT_SYSLOG": "tls://collector.example", "SCP_AUDIT_SYSLOG_CA": filepath.Join(dir, "ca.pem"),
			"SCP_AUDIT_SYSLOG_CERT": filepath.Join(dir, "cert.pem"), "SCP_AUDIT_SYSLOG_KEY": pemKey}, "SCP_AUDIT_SYSLOG_KEY (or --audit-syslog-key)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(nil, env(tt.env), io.Discard)
			if err == nil {
				t.Fatal("Load accepted it")
			}
			if strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load error:\n%v\nwant it to say %q and not %q", err, tt.want, secret)
			}
		})
	}
}
