package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/dicom-ingest/dicom-ingest/shared/cli"
)

const (
	testConfigDir = "../../testdata/config"
	testOutputs   = "../../testdata/example-outputs.json"
	testVPNs      = "../../testdata/vpn-connections.json"
)

func TestRun(t *testing.T) {
	psks := map[int]string{1: "fetched-key-one", 2: "fetched-key-two"}
	secrets := map[string]string{
		"arn:aws:secretsmanager:eu-west-1:111122223333:secret:VpnexamplehospitalTunnel1Psk-AbCdEf": psks[1],
		"arn:aws:secretsmanager:eu-west-1:111122223333:secret:VpnexamplehospitalTunnel2Psk-GhIjKl": psks[2],
	}
	cases := []struct {
		name        string
		args        []string
		fetchErr    error
		noFiles     bool // drop -vpn-connections and -nlb-addresses
		cli         awsRunner
		wantErr     string
		wantFetched bool
		wantFiles   []string
	}{
		{name: "kit without secrets", args: nil, wantFiles: []string{"README.md", "swanctl.conf", "swanctl-secrets.conf", "verify.sh", "xfrm-interfaces.sh", "conformance.md"}},
		{name: "policy routing", args: []string{"-routing", "policy"}, wantFiles: []string{"README.md", "swanctl.conf", "swanctl-secrets.conf", "verify.sh", "conformance.md"}},
		{name: "show secrets", args: []string{"-show-secrets"}, wantFetched: true, wantFiles: []string{"README.md", "swanctl.conf", "swanctl-secrets.conf", "verify.sh", "xfrm-interfaces.sh", "conformance.md"}},
		{name: "fetch fails", args: []string{"-show-secrets"}, fetchErr: errors.New("AccessDenied"), wantErr: "AccessDenied"},
		{name: "unknown site", args: []string{"-site", "nowhere"}, wantErr: "unknown site"},
		// Before a deploy there are no outputs: a site misspelt (or the
		// README's SITE=name taken literally) was answered with the missing
		// cdk-outputs.json, not with the sites there are.
		{name: "unknown site before any deploy", args: []string{"-site", "nowhere", "-outputs", "does-not-exist.json"}, wantErr: `unknown site "nowhere": environment "dev" has sites example-hospital, bgp-clinic: check -site (SITE= to make onboarding)`},
		{name: "missing outputs file", args: []string{"-outputs", "does-not-exist.json"}, wantErr: "make deploy ENV=<env>"},
		{name: "no tunnel addresses and no AWS CLI", args: []string{"-vpn-connections", ""}, wantErr: "describe-vpn-connections"},
		{name: "no NLB addresses and no AWS CLI", args: []string{"-nlb-addresses", ""}, wantErr: "NlbAddresses"},
		{name: "AWS CLI fills the gaps", noFiles: true, cli: fakeCLI(t), wantFiles: []string{"README.md", "swanctl.conf", "conformance.md"}},
		{name: "AWS CLI disabled", noFiles: true, cli: fakeCLI(t), args: []string{"-aws-cli=false"}, wantErr: "describe-vpn-connections"},
		{name: "AWS CLI fails", noFiles: true, cli: func(context.Context, ...string) ([]byte, error) { return nil, errors.New("ExpiredToken") }, wantErr: "ExpiredToken"},
		{name: "lab endpoints", args: []string{"-lab-endpoints", "192.168.250.2,192.168.250.3"}, wantFiles: []string{"README.md", "swanctl.conf", "swanctl-secrets.conf", "verify.sh", "xfrm-interfaces.sh", "conformance.md"}},
		// An empty entry is one address missing, not a list of one.
		{name: "lab endpoint missing", args: []string{"-lab-endpoints", "192.168.250.2,"}, wantErr: `-lab-endpoints "192.168.250.2,": entry 2 of 2 is empty`},
		{name: "NLB address missing", args: []string{"-nlb-addresses", ",10.20.2.10"}, wantErr: `-nlb-addresses ",10.20.2.10": entry 1 of 2 is empty`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			args := []string{"-env", "dev", "-site", "example-hospital", "-config-dir", testConfigDir, "-outputs", testOutputs, "-out", out}
			if !c.noFiles {
				args = append(args, "-vpn-connections", testVPNs, "-nlb-addresses", "10.20.1.10,10.20.2.10")
			}
			args = append(args, c.args...)
			fetched := false
			fetch := func(_ context.Context, arn, region string) (string, error) {
				fetched = true
				v, ok := secrets[arn]
				if !ok {
					t.Errorf("fetch(%q): not one of the site's secrets", arn)
				}
				if region != "eu-west-1" {
					t.Errorf("fetch(%q) in region %q, want its ARN's, eu-west-1", arn, region)
				}
				return v, c.fetchErr
			}
			var stdout, logs bytes.Buffer
			err := runWith(context.Background(), args, &stdout, &logs, deps{fetch: fetch, aws: c.cli})
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fetched != c.wantFetched {
				t.Errorf("fetched = %v, want %v", fetched, c.wantFetched)
			}
			for _, f := range c.wantFiles {
				if !strings.Contains(stdout.String(), filepath.Join(out, f)) {
					t.Errorf("stdout does not list %s:\n%s", f, stdout.String())
				}
				if _, err := os.Stat(filepath.Join(out, f)); err != nil {
					t.Errorf("the kit lacks %s: %v", f, err)
				}
			}
			secretsFile, err := os.ReadFile(filepath.Join(out, "swanctl-secrets.conf"))
			if err != nil {
				t.Fatal(err)
			}
			got1, got2 := strings.Contains(string(secretsFile), psks[1]), strings.Contains(string(secretsFile), psks[2])
			if got1 != c.wantFetched || got2 != c.wantFetched {
				t.Errorf("secrets file holds the keys: %v %v, want %v", got1, got2, c.wantFetched)
			}
			// Keys never reach stdout or the log, whatever the flags.
			for _, s := range []string{stdout.String(), logs.String()} {
				if strings.Contains(s, psks[1]) || strings.Contains(s, psks[2]) {
					t.Errorf("a key was printed: %s", s)
				}
			}
			if c.cli != nil {
				conf, err := os.ReadFile(filepath.Join(out, "README.md"))
				if err != nil {
					t.Fatal(err)
				}
				for _, want := range []string{"`52.16.0.11`", "`54.72.0.22`", "`10.20.1.10` (also `10.20.2.10`)"} {
					if !strings.Contains(string(conf), want) {
						t.Errorf("README lacks %s from the AWS CLI", want)
					}
				}
			}
			if strings.Contains(strings.Join(c.args, " "), "lab-endpoints") {
				conf, err := os.ReadFile(filepath.Join(out, "swanctl.conf"))
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(conf), "remote_addrs = 192.168.250.3") {
					t.Errorf("lab endpoint not used:\n%s", conf)
				}
			}
		})
	}
}

func TestRunRequiresEnvAndSite(t *testing.T) {
	err := runWith(context.Background(), []string{"-env", "dev"}, io.Discard, io.Discard, deps{})
	if err == nil || !strings.Contains(err.Error(), "-env and -site are required") {
		t.Fatalf("err = %v", err)
	}
}

// TestErrorsForAPerson: what the command says when it fails is what
// main writes on stderr, plain lines for the person at the terminal, each
// "onboarding: …" once, naming the flag or make variable to fix. It wrote
// JSON log lines ({"level":"ERROR","msg":"onboarding failed","err":…}),
// and its errors repeated their prefix ("…(sites: […]): onboarding:
// unknown site").
func TestErrorsForAPerson(t *testing.T) {
	base := []string{"-config-dir", testConfigDir, "-outputs", testOutputs, "-aws-cli=false", "-out", t.TempDir()}
	for _, tc := range []struct {
		name  string
		args  []string
		code  int
		wants []string // each in the output; the first in its first line
	}{
		// A wrong call: its line, then the usage, status 2.
		{"no site", []string{"-env", "dev"}, cli.ExitUsage, []string{"onboarding: -env and -site are required (ENV= and SITE= to make onboarding)\nUsage of onboarding:"}},
		{"mistyped flag", []string{"-env", "dev", "-sit", "x"}, cli.ExitUsage, []string{"onboarding: unknown flag -sit; did you mean -site?\nUsage of onboarding:"}},
		{"unknown site", []string{"-env", "dev", "-site", "nowhere"}, cli.ExitFailure, []string{`onboarding: unknown site "nowhere": environment "dev" has sites example-hospital, bgp-clinic: check -site (SITE= to make onboarding)`}},
		{"unknown environment", []string{"-env", "nope", "-site", "x"}, cli.ExitFailure, []string{"onboarding: load env config:", "check -env (ENV= to make onboarding) and -config-dir"}},
		{"no outputs", []string{"-env", "dev", "-site", "example-hospital", "-outputs", "does-not-exist.json"}, cli.ExitFailure, []string{"onboarding: open outputs (", "give -outputs, OUTPUTS= to make onboarding"}},
		// Two errors joined: one line each.
		{"outputs lack the addresses", []string{"-env", "dev", "-site", "example-hospital"}, cli.ExitFailure, []string{
			`onboarding: build kit for site "example-hospital": missing stack output: tunnel outside addresses`, "-vpn-connections",
			"\nonboarding: missing stack output: NlbAddresses"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			args := append(append([]string(nil), base...), tc.args...)
			code := cli.Exit(&stderr, command, runWith(context.Background(), args, io.Discard, &stderr, deps{}))
			if code != tc.code {
				t.Errorf("exit status %d, want %d", code, tc.code)
			}
			got := stderr.String()
			msg, _, _ := strings.Cut(got, "\nUsage of onboarding:")
			if !strings.HasPrefix(got, tc.wants[0]) {
				t.Errorf("stderr:\n%s\nwant its message to start %q", got, tc.wants[0])
			}
			for _, w := range tc.wants[1:] {
				if !strings.Contains(msg, w) {
					t.Errorf("stderr:\n%s\nwant %q in it", got, w)
				}
			}
			for _, line := range strings.Split(strings.TrimSpace(msg), "\n") {
				if !strings.HasPrefix(line, "onboarding: ") || strings.Count(line, "onboarding: ") != 1 {
					t.Errorf("line %q: want one \"onboarding: \" prefix, and nothing else", line)
				}
			}
		})
	}
}

type fakeSecrets struct {
	value *string
	err   error
}

func (f fakeSecrets) GetSecretValue(_ context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	return &secretsmanager.GetSecretValueOutput{ARN: in.SecretId, SecretString: f.value}, f.err
}

func TestGetSecret(t *testing.T) {
	str := func(s string) *string { return &s }
	cases := []struct {
		name    string
		fake    fakeSecrets
		want    string
		wantErr string
	}{
		{"string", fakeSecrets{value: str("k3y")}, "k3y", ""},
		{"binary secret", fakeSecrets{}, "", "no SecretString"},
		{"api error", fakeSecrets{err: errors.New("ResourceNotFoundException")}, "", "ResourceNotFoundException"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := getSecret(context.Background(), c.fake, "arn:aws:secretsmanager:eu-west-1:1:secret:x")
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

// fakeCLI answers the two describe calls the command makes, checking that
// they are read-only, regional and projected (no keys in the answer).
func fakeCLI(t *testing.T) awsRunner {
	return func(_ context.Context, args ...string) ([]byte, error) {
		joined := strings.Join(args, " ")
		if !strings.Contains(joined, "--region eu-west-1") || !strings.Contains(joined, "--query") {
			t.Errorf("aws %s: want --region and --query", joined)
		}
		switch {
		case strings.HasPrefix(joined, "ec2 describe-vpn-connections --region eu-west-1 --vpn-connection-ids vpn-0a1b2c3d4e5f60718 "):
			return []byte(`[{"VpnConnectionId": "vpn-0a1b2c3d4e5f60718", "Options": {"TunnelOptions": [{"OutsideIpAddress": "52.16.0.11"}, {"OutsideIpAddress": "54.72.0.22"}]}, "VgwTelemetry": []}]`), nil
		case strings.HasPrefix(joined, "ec2 describe-network-interfaces --region eu-west-1 --filters Name=description,Values=ELB net/DicomI-Ingest-1A2B3C4D5E6F/0123456789abcdef "):
			return []byte(`["10.20.2.10", "10.20.1.10"]`), nil
		}
		t.Errorf("unexpected aws %s", joined)
		return nil, errors.New("unexpected call")
	}
}

// TestShowSecretsFetchesEachSecretOnce: with -show-secrets, a site whose
// tunnels share one secret (bgp-clinic) has it fetched once, both keys
// taken from it; it was fetched once per tunnel.
func TestShowSecretsFetchesEachSecretOnce(t *testing.T) {
	out := t.TempDir()
	var asked []string
	fetch := func(_ context.Context, arn, _ string) (string, error) {
		asked = append(asked, arn)
		return `{"tunnel1": "shared-key-one", "tunnel2": "shared-key-two"}`, nil
	}
	args := []string{"-env", "dev", "-site", "bgp-clinic", "-config-dir", testConfigDir, "-outputs", testOutputs, "-out", out,
		"-lab-endpoints", "192.168.250.2,192.168.250.3", "-nlb-addresses", "10.20.1.10,10.20.2.10", "-show-secrets"}
	if err := runWith(context.Background(), args, io.Discard, io.Discard, deps{fetch: fetch}); err != nil {
		t.Fatal(err)
	}
	if len(asked) != 1 {
		t.Errorf("fetched %q, want the one secret once", asked)
	}
	conf, err := os.ReadFile(filepath.Join(out, "swanctl-secrets.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"shared-key-one", "shared-key-two"} {
		if !strings.Contains(string(conf), k) {
			t.Errorf("secrets file lacks %s:\n%s", k, conf)
		}
	}
}

// TestShowSecretsWithoutASecret: stack outputs that name no secret for a
// tunnel's key (VpnPsk<site> holding separators alone) give a kit that
// says which tunnel has none and fetches nothing for it; -show-secrets
// refuses, naming the tunnels and the output, and fetches nothing. It
// asked Secrets Manager for the secret "" (GetSecretValue, "get secret :
// …"), and the kit's secrets file began a list of fetch commands it left
// empty, its README naming the secret “ for both tunnels.
func TestShowSecretsWithoutASecret(t *testing.T) {
	raw, err := os.ReadFile(testOutputs)
	if err != nil {
		t.Fatal(err)
	}
	// outputsWith writes the example's outputs with the site's secret ARNs
	// under key, holding separators alone.
	outputsWith := func(t *testing.T, key string) string {
		var doc map[string]map[string]string
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		delete(doc["DicomIngest-dev"], "VpnPskexamplehospital")
		doc["DicomIngest-dev"][key] = " , "
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		outputs := filepath.Join(t.TempDir(), "outputs.json")
		if err := os.WriteFile(outputs, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return outputs
	}
	for _, tc := range []struct {
		name    string
		output  string // the output key naming no secret: VpnPsk<site> when ""
		args    []string
		wantErr string
		// In the kit's secrets file and README when it is written.
		secrets, readme []string
	}{
		{name: "kit", secrets: []string{
			"# Tunnel 1 has no secret: the stack outputs (VpnPskexample-hospital) name none for its key, so there is nothing to fetch;",
			"# Tunnel 2 has no secret:",
			`secret = "REPLACE_WITH_TUNNEL1_PSK"`,
		}, readme: []string{"| Tunnel 1 pre-shared key | no secret: the stack outputs (`VpnPskexample-hospital`) name none; ask us for it |"}},
		{name: "show secrets", args: []string{"-show-secrets"},
			wantErr: "-show-secrets: no pre-shared key secret for tunnel 1 and tunnel 2: the stack output VpnPskexample-hospital names none"},
		// A deployment giving PskSecretArn<site> in its place: the kit and
		// the error name that output, not the VpnPsk<site> it lacks.
		{name: "PskSecretArn kit", output: "PskSecretArnexamplehospital", secrets: []string{
			"# Tunnel 1 has no secret: the stack outputs (PskSecretArnexample-hospital) name none for its key",
		}, readme: []string{"| Tunnel 2 pre-shared key | no secret: the stack outputs (`PskSecretArnexample-hospital`) name none; ask us for it |"}},
		{name: "PskSecretArn show secrets", output: "PskSecretArnexamplehospital", args: []string{"-show-secrets"},
			wantErr: "-show-secrets: no pre-shared key secret for tunnel 1 and tunnel 2: the stack output PskSecretArnexample-hospital names none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.output
			if key == "" {
				key = "VpnPskexamplehospital"
			}
			outputs := outputsWith(t, key)
			out := t.TempDir()
			args := append([]string{"-env", "dev", "-site", "example-hospital", "-config-dir", testConfigDir, "-outputs", outputs, "-out", out,
				"-vpn-connections", testVPNs, "-nlb-addresses", "10.20.1.10,10.20.2.10"}, tc.args...)
			fetch := func(_ context.Context, arn, region string) (string, error) {
				t.Errorf("fetched %q in %q", arn, region)
				return "", errors.New("no secret to fetch")
			}
			err := runWith(context.Background(), args, io.Discard, io.Discard, deps{fetch: fetch})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for file, wants := range map[string][]string{"swanctl-secrets.conf": tc.secrets, "README.md": tc.readme} {
				b, err := os.ReadFile(filepath.Join(out, file))
				if err != nil {
					t.Fatal(err)
				}
				for _, w := range wants {
					if !strings.Contains(string(b), w) {
						t.Errorf("%s lacks %q:\n%s", file, w, b)
					}
				}
				for _, not := range []string{"get-secret-value", "--secret-id ''", "Secrets Manager ``", "delete  ("} {
					if strings.Contains(string(b), not) {
						t.Errorf("%s holds %q:\n%s", file, not, b)
					}
				}
			}
		})
	}
}
