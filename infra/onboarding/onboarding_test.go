package onboarding

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

func loadExample(t *testing.T) (EnvConfig, Outputs) {
	t.Helper()
	env, err := LoadEnvConfig(filepath.Join("testdata", "config"), "dev")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join("testdata", "example-outputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	outs, err := ParseOutputs(f)
	if err != nil {
		t.Fatal(err)
	}
	return env, outs
}

// exampleOpts are the inputs that are not stack outputs: the NLB's IPs and,
// for example-hospital, the tunnel addresses from describe-vpn-connections
// (bgp-clinic has them as outputs).
func exampleOpts(t *testing.T, outs Outputs, site string) Options {
	t.Helper()
	opts := Options{RemoteIPs: []string{"10.20.1.10", "10.20.2.10"}}
	if site == "example-hospital" {
		id, ok := outs.VPNConnectionID(site)
		if !ok {
			t.Fatal("no VPN connection id for", site)
		}
		f, err := os.Open(filepath.Join("testdata", "vpn-connections.json"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if opts.TunnelEndpoints, err = ParseVPNConnections(f, id); err != nil {
			t.Fatal(err)
		}
	}
	return opts
}

// TestGolden renders the example site's kit in both routing styles, with and
// without keys, and compares every file with testdata/golden/<case>/.
func TestGolden(t *testing.T) {
	env, outs := loadExample(t)
	cases := []struct {
		name, site string
		opts       Options
	}{
		{"example-hospital-route", "example-hospital", Options{}},
		{"example-hospital-policy", "example-hospital", Options{Routing: PolicyBased}},
		{"example-hospital-with-psks", "example-hospital", Options{PSKs: map[int]string{1: "tunnel-one-key", 2: "tunnel-two-key"}}},
		{"bgp-clinic-route", "bgp-clinic", Options{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := exampleOpts(t, outs, c.site)
			opts.Routing, opts.PSKs = c.opts.Routing, c.opts.PSKs
			k, err := Build(env, c.site, outs, opts)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, k, c.name)
		})
	}
}

// checkGolden compares the kit's files with testdata/golden/<name>/ (rewritten
// first with -update), the set of files included. The conformance
// statement has no golden copy (docs/conformance.md is its one copy in the
// repository): TestKitShipsConformance checks it.
func checkGolden(t *testing.T, k *Kit, name string) {
	t.Helper()
	dir := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if _, err := k.WriteDir(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, ConformanceFileName)); err != nil {
			t.Fatal(err)
		}
	}
	files, err := k.Render()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		if f.Name == ConformanceFileName {
			continue
		}
		names = append(names, f.Name)
		want, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil {
			t.Fatalf("%v (run go test -update to create golden files)", err)
		}
		if diff := cmp.Diff(string(want), string(f.Data)); diff != "" {
			t.Errorf("%s differs from golden (-want +got):\n%s", f.Name, diff)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	for _, e := range entries {
		onDisk = append(onDisk, e.Name())
	}
	if diff := cmp.Diff(sorted(onDisk), sorted(names)); diff != "" {
		t.Errorf("golden file set differs (-disk +rendered):\n%s", diff)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// renderExample renders example-hospital's kit and returns its files by name.
func renderExample(t *testing.T, env EnvConfig, outs Outputs) map[string]string {
	t.Helper()
	return renderSite(t, env, outs, "example-hospital")
}

// renderSite renders the kit of one site of env, file name to content.
func renderSite(t *testing.T, env EnvConfig, outs Outputs, site string) map[string]string {
	t.Helper()
	return renderSiteWith(t, env, outs, site, exampleOpts(t, outs, site))
}

// renderSiteWith renders the kit of one site of env made with opts.
func renderSiteWith(t *testing.T, env EnvConfig, outs Outputs, site string, opts Options) map[string]string {
	t.Helper()
	k, err := Build(env, site, outs, opts)
	if err != nil {
		t.Fatal(err)
	}
	files, err := k.Render()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{}
	for _, f := range files {
		byName[f.Name] = string(f.Data)
	}
	return byName
}

// TestKitShipsConformance: every kit carries the DICOM conformance
// statement, the repository's docs/conformance.md as it is, and its README
// lists it and sends the reader to it (it said to ask us for a copy).
func TestKitShipsConformance(t *testing.T) {
	want, err := os.ReadFile(filepath.Join("..", "..", "docs", "conformance.md"))
	if err != nil {
		t.Fatal(err)
	}
	env, outs := loadExample(t)
	tlsEnv, tlsOuts := loadTLSExample(t)
	cases := []struct {
		name, site string
		env        EnvConfig
		outs       Outputs
		routing    Routing
	}{
		{"route", "example-hospital", env, outs, RouteBased},
		{"policy", "example-hospital", env, outs, PolicyBased},
		{"bgp", "bgp-clinic", env, outs, RouteBased},
		{"tls", "example-hospital", tlsEnv, tlsOuts, RouteBased},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := exampleOpts(t, c.outs, c.site)
			opts.Routing = c.routing
			k, err := Build(c.env, c.site, c.outs, opts)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if _, err := k.WriteDir(dir); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(dir, ConformanceFileName))
			if err != nil {
				t.Fatalf("the kit has no conformance statement: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Error("the kit's conformance.md is not docs/conformance.md")
			}
			if st, err := os.Stat(filepath.Join(dir, ConformanceFileName)); err != nil || st.Mode().Perm() != 0o644 {
				t.Errorf("conformance.md: %v %v, want mode 0644", st.Mode(), err)
			}
			readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range []string{"- `conformance.md`: our DICOM conformance statement", "section 3.2.4.1, `conformance.md` in this kit",
				"conformance statement, `conformance.md` in this kit."} {
				if !strings.Contains(string(readme), w) {
					t.Errorf("README.md lacks %q", w)
				}
			}
			if strings.Contains(string(readme), "ask us for the copy") {
				t.Error("README.md still has the reader ask for the statement")
			}
		})
	}
}

// TestKitContent checks the properties the issue asks for directly, so a bad
// golden update cannot hide them.
func TestKitContent(t *testing.T) {
	env, outs := loadExample(t)
	byName := renderExample(t, env, outs)
	swan := byName["swanctl.conf"]
	for _, want := range []string{
		"version = 2",
		"remote_addrs = 52.16.0.11", "remote_addrs = 54.72.0.22", // both tunnels
		"id = 203.0.113.10",
		"proposals = aes256-sha256-modp2048",
		"esp_proposals = aes256-sha256-modp2048",
		"local_ts = 192.168.10.0/24,192.168.11.0/24",
		"remote_ts = 10.20.0.0/16",
		"include " + SecretsFileName,
	} {
		if !strings.Contains(swan, want) {
			t.Errorf("swanctl.conf lacks %q", want)
		}
	}
	readme := byName["README.md"]
	for _, want := range []string{
		"`EXAMPLE_PACS`", "`DICOM_INGEST`", "`10.20.1.10`", "`104` (TCP)",
		"| Tunnel 1 pre-shared key | AWS Secrets Manager `arn:aws:secretsmanager:eu-west-1:111122223333:secret:VpnexamplehospitalTunnel1Psk-AbCdEf` |",
		"| Tunnel 2 pre-shared key | AWS Secrets Manager `arn:aws:secretsmanager:eu-west-1:111122223333:secret:VpnexamplehospitalTunnel2Psk-GhIjKl` |",
		"echoscu -v -aet EXAMPLE_PACS -aec DICOM_INGEST 10.20.1.10 104",
		"storescu -v -aet EXAMPLE_PACS -aec DICOM_INGEST 10.20.1.10 104 test.dcm",
		"## Troubleshooting", "allow TCP from 192.168.10.0/24, 192.168.11.0/24 to 10.20.1.10, 10.20.2.10 port 104",
		"| 4 | 10.20.0.0/16 | the PACS `192.168.10.20` | TCP 104 | Storage Commitment results",
		"calling AE `DICOM_INGEST`, called AE `EXAMPLE_PACS`, proposing the class with SCU/SCP role selection SCU 0, SCP 1",
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("README.md lacks %q", want)
		}
	}
	// A PACS that hides the reason (Orthanc's REST API and log said only
	// "DUL Association Rejected" for a wrong calling AE, a wrong called AE
	// and the plain port of a bound site alike) is sent to the DCMTK
	// commands, which print it, or to us.
	if !strings.Contains(readme, "A PACS may log a rejection without its reason (Orthanc logs `DUL Association Rejected`)") {
		t.Error("README.md does not say where to find a rejection's reason when the PACS does not show it")
	}
	// Each rejection a site can meet is named in the words DCMTK prints
	// (dicomnet's), which the PACS administrator looks for in its log.
	for _, rj := range []*dicomnet.RejectError{dicomnet.RejectCallingAENotRecognized, dicomnet.RejectCalledAENotRecognized,
		dicomnet.RejectTemporaryCongestion, dicomnet.RejectTooManyAssociations} {
		words := strings.Split(strings.TrimSuffix(rj.Error(), fmt.Sprintf(" (%02x %02x %02x)", rj.Result, rj.Source, rj.Reason)), ", ")
		if reason := words[len(words)-1]; !strings.Contains(readme, "reason `"+reason+"`") {
			t.Errorf("README.md's troubleshooting lacks reason `%s` (%s)", reason, rj)
		}
	}
	if !strings.Contains(byName[SecretsFileName], `secret = "REPLACE_WITH_TUNNEL1_PSK"`) {
		t.Errorf("secrets file without -show-secrets should hold a placeholder:\n%s", byName[SecretsFileName])
	}
	// describe-vpn-connections output carries the keys too; none may leak.
	for name, data := range byName {
		if strings.Contains(data, "SECRET-") {
			t.Errorf("%s contains a key from the describe-vpn-connections input", name)
		}
	}
}

// TestKeysBeforeTheEdgeIsSetUp: the README's VPN set-up says what to do
// with the pre-shared keys before its commands install and load them. It
// said "Edit swanctl-secrets.conf first" after them, so an administrator
// following it in order loaded the placeholders.
func TestKeysBeforeTheEdgeIsSetUp(t *testing.T) {
	env, outs := loadExample(t)
	for _, tc := range []struct {
		name string
		psks map[int]string
		says string
	}{
		{"placeholders", nil, "First put the pre-shared keys into `" + SecretsFileName + "`: replace each `REPLACE_WITH_…` value"},
		{"keys", map[int]string{1: "k1", 2: "k2"}, "`" + SecretsFileName + "` holds the pre-shared keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := exampleOpts(t, outs, "example-hospital")
			opts.PSKs = tc.psks
			readme := renderSiteWith(t, env, outs, "example-hospital", opts)["README.md"]
			setUp, _, ok := strings.Cut(readme, "install -m 600 swanctl.conf")
			if !ok {
				t.Fatal("README.md has no install command")
			}
			if _, section, _ := strings.Cut(setUp, "## Set up the VPN edge"); !strings.Contains(strings.Join(strings.Fields(section), " "), tc.says) {
				t.Errorf("README.md's VPN set-up does not say %q before installing:\n%s", tc.says, section)
			}
			if strings.Contains(readme, "Edit `"+SecretsFileName+"` first") {
				t.Error("README.md still says to edit the secrets file after the commands that install it")
			}
		})
	}
}

// TestSecretsOnlyInSecretsFile: keys appear in the secrets file and nowhere else.
func TestSecretsOnlyInSecretsFile(t *testing.T) {
	env, outs := loadExample(t)
	psks := map[int]string{1: "s3cr3t-one-7f9a", 2: "s3cr3t-two-c2d1"}
	opts := exampleOpts(t, outs, "example-hospital")
	opts.PSKs = psks
	k, err := Build(env, "example-hospital", outs, opts)
	if err != nil {
		t.Fatal(err)
	}
	files, err := k.Render()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		has1, has2 := bytes.Contains(f.Data, []byte(psks[1])), bytes.Contains(f.Data, []byte(psks[2]))
		if f.Name == SecretsFileName {
			if !has1 || !has2 {
				t.Errorf("secrets file lacks the keys:\n%s", f.Data)
			}
			if f.Mode != 0o600 {
				t.Errorf("secrets file mode %o, want 600", f.Mode)
			}
			continue
		}
		if has1 || has2 {
			t.Errorf("%s contains a pre-shared key", f.Name)
		}
	}
	dir := t.TempDir()
	if _, err := k.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, SecretsFileName))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("written secrets file mode %o, want 600", st.Mode().Perm())
	}
}

func TestBuildErrors(t *testing.T) {
	baseEnv, outs := loadExample(t)
	mutate := func(f func(*EnvConfig)) EnvConfig {
		e := baseEnv
		e.Sites = append([]SiteConfig(nil), baseEnv.Sites...)
		for i := range e.Sites {
			e.Sites[i].CIDRs = append([]string(nil), e.Sites[i].CIDRs...)
		}
		f(&e)
		return e
	}
	emptyOuts, err := ParseOutputs(strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		env     EnvConfig
		site    string
		outs    Outputs
		opts    Options
		wantErr error
		wantMsg string
	}{
		{"unknown site", baseEnv, "nowhere", outs, Options{}, ErrUnknownSite, `unknown site "nowhere": environment "dev" has sites example-hospital, bgp-clinic`},
		{"missing outputs", baseEnv, "example-hospital", emptyOuts, Options{}, ErrMissingOutput, "VpnConnectionexample-hospital"},
		{"missing key ARNs", baseEnv, "example-hospital", emptyOuts, Options{}, ErrMissingOutput, "VpnPskexample-hospital"},
		{"tunnel addresses nowhere", baseEnv, "example-hospital", outs, Options{TunnelEndpoints: []string{}}, ErrMissingOutput, "'aws ec2 describe-vpn-connections --region eu-west-1 --output json'"},
		{"NLB addresses nowhere", baseEnv, "example-hospital", outs, Options{RemoteIPs: []string{}}, ErrMissingOutput, "NlbAddresses"},
		{"deployed AE differs", mutate(func(e *EnvConfig) { e.CalledAETitle = "OTHER_SCP" }), "example-hospital", outs, Options{}, ErrInvalidConfig, `deployed called AE title is "DICOM_INGEST"`},
		{"deployed port differs", mutate(func(e *EnvConfig) { e.DicomPort = 11112 }), "example-hospital", outs, Options{}, ErrInvalidConfig, "deployed DICOM port is 104"},
		{"bad NLB address", baseEnv, "example-hospital", outs, Options{RemoteIPs: []string{"10.0.0.1;rm"}}, ErrInvalidConfig, "NLB address"},
		{"AE too long", mutate(func(e *EnvConfig) { e.Sites[0].AETitle = "A_VERY_LONG_AE_TITLE" }), "example-hospital", outs, Options{}, ErrInvalidConfig, "20 characters, AE titles have at most 16"},
		{"AE with backslash", mutate(func(e *EnvConfig) { e.Sites[0].AETitle = `PACS\1` }), "example-hospital", outs, Options{}, ErrInvalidConfig, "which an AE title cannot hold"},
		{"no called AE", mutate(func(e *EnvConfig) { e.CalledAETitle = "  " }), "example-hospital", outs, Options{}, ErrInvalidConfig, "REMOTE_AE"},
		{"bad CIDR", mutate(func(e *EnvConfig) { e.Sites[0].CIDRs[0] = "192.168.10.0/33" }), "example-hospital", outs, Options{}, ErrInvalidConfig, `CIDR "192.168.10.0/33"`},
		{"config injection in CIDR", mutate(func(e *EnvConfig) { e.Sites[0].CIDRs[0] = "10.0.0.0/8\n}\nconnections {" }), "example-hospital", outs, Options{}, ErrInvalidConfig, "CIDR"},
		{"bad gateway IP", mutate(func(e *EnvConfig) { e.Sites[0].CustomerGatewayIP = "gw.example" }), "example-hospital", outs, Options{}, ErrInvalidConfig, "customer gateway IP"},
		{"bad port", mutate(func(e *EnvConfig) { e.DicomPort = 70000 }), "example-hospital", emptyOuts, Options{}, ErrInvalidConfig, "port 70000"},
		{"bad routing", baseEnv, "example-hospital", outs, Options{Routing: "bgp"}, ErrInvalidConfig, `routing "bgp"`},
		{"one lab endpoint", baseEnv, "example-hospital", outs, Options{TunnelEndpoints: []string{"192.0.2.1"}}, ErrInvalidConfig, "1 tunnel endpoints"},
		{"missing psk", baseEnv, "example-hospital", outs, Options{PSKs: map[int]string{1: "x"}}, ErrInvalidConfig, "tunnel 2"},
		{"psk with quote", baseEnv, "example-hospital", outs, Options{PSKs: map[int]string{1: `a"b`, 2: "c"}}, ErrInvalidConfig, "quote"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := c.opts
			if opts.RemoteIPs == nil {
				opts.RemoteIPs = []string{"10.20.1.10"}
			}
			if opts.TunnelEndpoints == nil {
				opts.TunnelEndpoints = []string{"52.16.0.11", "54.72.0.22"}
			}
			_, err := Build(c.env, c.site, c.outs, opts)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("err = %v, want %v", err, c.wantErr)
			}
			if !strings.Contains(err.Error(), c.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, c.wantMsg)
			}
		})
	}
}

func TestLabEndpoints(t *testing.T) {
	env, outs := loadExample(t)
	k, err := Build(env, "example-hospital", outs, Options{Routing: PolicyBased, RemoteIPs: []string{"10.0.0.1"}, TunnelEndpoints: []string{"192.168.250.2", "192.168.250.3"}})
	if err != nil {
		t.Fatal(err)
	}
	got := []string{k.Tunnels[0].OutsideIP, k.Tunnels[1].OutsideIP, k.Tunnels[0].StartAction, k.Tunnels[1].StartAction}
	want := []string{"192.168.250.2", "192.168.250.3", "start", "none"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLookup(t *testing.T) {
	outs, err := ParseOutputs(strings.NewReader(`{
		"StackA": {"NlbDnsName": "nlb.example", "VpnTunnel1AddressSiteA5F3A9C21": "192.0.2.1", "port": 104},
		"StackB": {"Tunnel1AddressSiteB": "192.0.2.2", "OldTunnel1AddressSiteB": "192.0.2.9", "XTunnel2AddressC": "1", "YTunnel2AddressC": "2"}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, key, want string
		ok              bool
	}{
		{"exact", "NlbDnsName", "nlb.example", true},
		{"case and punctuation", "nlb-dns-name", "nlb.example", true},
		{"construct prefix and hash", "Tunnel1AddressSiteA", "192.0.2.1", true},
		{"site name with dash", "Tunnel1Address" + "site-a", "192.0.2.1", true},
		{"exact wins over suffix", "Tunnel1AddressSiteB", "192.0.2.2", true},
		{"number value", "port", "104", true},
		{"ambiguous suffix", "Tunnel2AddressC", "", false},
		{"absent", "VpcCidr", "", false},
		{"empty", "", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := outs.Lookup(c.key)
			if got != c.want || ok != c.ok {
				t.Errorf("Lookup(%q) = %q, %v; want %q, %v", c.key, got, ok, c.want, c.ok)
			}
		})
	}
}

func TestParseOutputsErrors(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"not json", `nope`, "parse outputs"},
		{"not an object of objects", `{"S": "x"}`, "parse outputs"},
		{"nested value", `{"S": {"K": {"a": 1}}}`, "S.K"},
		{"conflict", `{"A": {"K": "1"}, "B": {"k": "2"}}`, "disagree"},
		{"too large", `{"S": {"K": "` + strings.Repeat("x", maxOutputsSize) + `"}}`, "larger than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseOutputs(strings.NewReader(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
}

func TestParsePSKSecret(t *testing.T) {
	cases := []struct {
		name, in string
		want     map[int]string
		wantErr  bool
	}{
		{"json per tunnel", `{"tunnel1": "a", "tunnel2": "b"}`, map[int]string{1: "a", 2: "b"}, false},
		{"cfn names", `{"Tunnel1PreSharedKey": "a", "Tunnel2PreSharedKey": "b"}`, map[int]string{1: "a", 2: "b"}, false},
		{"one key in json", `{"psk": "a"}`, map[int]string{1: "a", 2: "a"}, false},
		{"plain string", "  shared-key \n", map[int]string{1: "shared-key", 2: "shared-key"}, false},
		{"json missing tunnel2", `{"tunnel1": "a"}`, nil, true},
		{"broken json", `{"tunnel1": `, nil, true},
		{"empty", ` `, nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParsePSKSecret(c.in)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, c.wantErr)
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestParsePSKSecretErrorsHoldNoSecret: a secret that is not valid JSON
// fails without a byte of it in the error, wherever its bad byte is
// (encoding/json's own errors quote it).
func TestParsePSKSecretErrorsHoldNoSecret(t *testing.T) {
	// The secret's bytes are none of the error's own words' (nor digits,
	// which an offset has), so any of them in the error came from it.
	const secret = "ZQ%W~G"
	for _, tt := range []struct{ name, in string }{
		{"bad first byte of a value", `{"tunnel1": ZQ%W~G, "tunnel2": "b"}`},
		{"bad escape inside a value", `{"tunnel1": "ZQ\%W~G", "tunnel2": "b"}`},
		{"control byte inside a value", "{\"tunnel1\": \"ZQ\x01%W~G\", \"tunnel2\": \"b\"}"},
		{"bad byte after a value", `{"tunnel1": "a"ZQ%W~G, "tunnel2": "b"}`},
		{"bad last byte", `{"tunnel1": "a", "tunnel2": "ZQ%W~"G`},
		{"a bare key", `{ZQ%W~G: "a"}`},
		{"cut short", `{"tunnel1": "ZQ%W~G`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePSKSecret(tt.in)
			if err == nil {
				t.Fatal("no error")
			}
			if i := strings.IndexAny(err.Error(), secret+"\x01\\"); i >= 0 {
				t.Errorf("error %q holds %q, a byte of the secret", err, err.Error()[i])
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	cases := map[string]string{
		"EXAMPLE_PACS": "EXAMPLE_PACS",
		"10.0.0.1":     "10.0.0.1",
		"MY PACS":      "'MY PACS'",
		"it's":         `'it'\''s'`,
		"":             "''",
	}
	for in, want := range cases {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseVPNConnections(t *testing.T) {
	full, err := os.ReadFile(filepath.Join("testdata", "vpn-connections.json"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, in, id string
		want         []string
		wantErr      string
	}{
		{"tunnel options order", string(full), "vpn-0a1b2c3d4e5f60718", []string{"52.16.0.11", "54.72.0.22"}, ""},
		{"telemetry fallback", string(full), "vpn-0ffeeddccbbaa9988", []string{"52.16.0.33", "54.72.0.44"}, ""},
		{"query projection (bare array)", `[{"VpnConnectionId": "vpn-1", "Options": {"TunnelOptions": [{"OutsideIpAddress": "192.0.2.1"}, {"OutsideIpAddress": "192.0.2.2"}]}}]`, "vpn-1", []string{"192.0.2.1", "192.0.2.2"}, ""},
		{"unknown id", string(full), "vpn-nope", nil, "not found"},
		{"one tunnel", `[{"VpnConnectionId": "vpn-1", "Options": {"TunnelOptions": [{"OutsideIpAddress": "192.0.2.1"}]}}]`, "vpn-1", nil, "1 tunnel addresses in Options.TunnelOptions"},
		{"bad address", `[{"VpnConnectionId": "vpn-1", "VgwTelemetry": [{"OutsideIpAddress": "x"}, {"OutsideIpAddress": "192.0.2.2"}]}]`, "vpn-1", nil, "tunnel address"},
		{"not json", `<xml/>`, "vpn-1", nil, "describe-vpn-connections JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseVPNConnections(strings.NewReader(c.in), c.id)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestNLBAddressesOutput(t *testing.T) {
	env, _ := loadExample(t)
	outs, err := ParseOutputs(strings.NewReader(`{"S": {"NlbAddresses": "10.20.1.10 10.20.2.10", "VpnConnectionIdBgpClinic": "vpn-1",
		"Tunnel1AddressBgpClinic": "52.16.0.33", "Tunnel2AddressBgpClinic": "54.72.0.44", "PskSecretArnBgpClinic": "arn:aws:secretsmanager:eu-west-1:1:secret:x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	k, err := Build(env, "bgp-clinic", outs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"10.20.1.10", "10.20.2.10"}, k.RemoteIPs); diff != "" {
		t.Errorf("RemoteIPs (-want +got):\n%s", diff)
	}
	if k.Tunnels[0].PSKSecretARN != k.Tunnels[1].PSKSecretARN {
		t.Errorf("one secret for both tunnels: got %q and %q", k.Tunnels[0].PSKSecretARN, k.Tunnels[1].PSKSecretARN)
	}
}

func TestNLBInterfaceDescription(t *testing.T) {
	cases := []struct{ arn, want, wantErr string }{
		{"arn:aws:elasticloadbalancing:eu-west-1:111122223333:loadbalancer/net/DicomI-Ingest-1A2B/0123456789abcdef", "ELB net/DicomI-Ingest-1A2B/0123456789abcdef", ""},
		{"arn:aws:elasticloadbalancing:eu-west-1:111122223333:loadbalancer/app/web/0123", "", "not a network load balancer"},
		{"arn:aws:elasticloadbalancing:eu-west-1:1:loadbalancer/net/a/b/c", "", "not a network load balancer"},
		{"arn:aws:elasticloadbalancing:eu-west-1:1:loadbalancer/net/a*/b", "", "not a network load balancer"},
		{"nope", "", "not a network load balancer"},
	}
	for _, c := range cases {
		t.Run(c.arn, func(t *testing.T) {
			got, err := NLBInterfaceDescription(c.arn)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

func TestParseNLBAddresses(t *testing.T) {
	cases := []struct {
		name, in string
		want     []string
		wantErr  string
	}{
		{"sorted", `["10.20.2.10", "10.20.1.10"]`, []string{"10.20.1.10", "10.20.2.10"}, ""},
		{"empty", `[]`, nil, "none"},
		{"ipv6", `["fd00::1"]`, nil, "not an IPv4"},
		{"junk", `["10.0.0.1; rm -rf"]`, nil, "not an IPv4"},
		{"not json", `10.0.0.1`, nil, "parse nlb addresses"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseNLBAddresses(strings.NewReader(c.in))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if diff := cmp.Diff(c.want, got); diff != "" || err != nil {
				t.Errorf("err %v (-want +got):\n%s", err, diff)
			}
		})
	}
}

// TestSendingSpeedFollowsStaging: with scp.staging the kit says success
// comes once an image is durable on EFS, not once S3 has it (it said S3
// whatever the environment).
func TestSendingSpeedFollowsStaging(t *testing.T) {
	env, outs := loadExample(t)
	for _, staged := range []bool{false, true} {
		env.Staged = staged
		text := renderExample(t, env, outs)["README.md"]
		if got := strings.Contains(text, "Amazon EFS"); got != staged {
			t.Errorf("staged %v: the kit names EFS: %v", staged, got)
		}
		if got := strings.Contains(text, "stored durably in the cloud (Amazon S3)"); got == staged {
			t.Errorf("staged %v: the kit says success waits for S3: %v", staged, got)
		}
	}
}

// TestKitTransferSyntaxTroubles: what a PACS needs to pick a transfer syntax we accept, in the words DCMTK prints
// when it picks one we do not. The kit said we accept "uncompressed" syntaxes, and the retired Explicit VR Big Endian,
// uncompressed, is refused (the stack never sets --accept-big-endian): a PACS proposing only it got "No Acceptable
// Presentation Contexts", which the troubleshooting table did not name. Its advice for a compressed file that
// storescu stops at was dcmsend, which has no TLS: a TLS site needs storescu's option for the file's syntax.
func TestKitTransferSyntaxTroubles(t *testing.T) {
	plainEnv, outs := loadExample(t)
	tlsEnv, _ := loadTLSExample(t)
	for _, c := range []struct {
		name    string
		env     EnvConfig
		send    string // the advice for a compressed file
		notSend string
	}{
		{"plain", plainEnv, "Send with `dcmsend`", "-xs"},
		{"tls", tlsEnv, "`storescu +tls site.key site.crt +cf server-ca.pem` with the option of the file's transfer syntax", "Send with `dcmsend`"},
	} {
		t.Run(c.name, func(t *testing.T) {
			readme := renderExample(t, c.env, outs)["README.md"]
			for _, want := range []string{
				"uncompressed little endian (not the retired Explicit VR Big Endian)",
				"`No Acceptable Presentation Contexts`",
				"`unable to convert dataset`",
				"propose Explicit or Implicit VR Little Endian",
				"`test.dcm`: an image in an uncompressed little endian transfer syntax",
				c.send,
			} {
				if !strings.Contains(readme, want) {
					t.Errorf("README.md lacks %q", want)
				}
			}
			if strings.Contains(readme, c.notSend) {
				t.Errorf("README.md has %q", c.notSend)
			}
		})
	}
}

// TestCalledAETitleQuotedForTheShell: the SCP's AE title may hold , @ and #
// (config: only calling AE titles are in the allowlist, whose syntax
// reserves them); every command line of the kit that names it gives it
// quoted for the shell as one word, the README's hint for a rejected
// association included, where "-aec SCP#1" typed into a shell called SCP.
func TestCalledAETitleQuotedForTheShell(t *testing.T) {
	baseEnv, _ := loadExample(t)
	raw, err := os.ReadFile(filepath.Join("testdata", "example-outputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ae := range []string{"SCP#1", "SCP,1", "SCP@1"} {
		t.Run(ae, func(t *testing.T) {
			env := baseEnv
			env.CalledAETitle = ae
			outs, err := ParseOutputs(strings.NewReader(strings.Replace(string(raw), `"DICOM_INGEST"`, fmt.Sprintf("%q", ae), 1)))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for name, content := range renderExample(t, env, outs) {
				for _, line := range strings.Split(content, "\n") {
					if _, rest, ok := strings.Cut(line, "-aec "); ok {
						n++
						if !strings.HasPrefix(rest, shellQuote(ae)+" ") && !strings.HasPrefix(rest, shellQuote(ae)+"`") {
							t.Errorf("%s: %q does not give %s as %s", name, line, ae, shellQuote(ae))
						}
					}
				}
			}
			if n == 0 {
				t.Fatal("no -aec in the kit")
			}
		})
	}
}

// TestKitExplainsOurAborts: the troubleshooting table has a row for an
// association we abort in the middle of a transfer (DCMTK: "Store Failed"
// … "Peer aborted Association"), with its causes: our timers, a deployment,
// and on a TLS kit a certificate expired or revoked while in use. Before,
// the only row naming an abort was the TLS handshake's, before any
// association: a site whose study broke off halfway (the SCP's drain at a
// restart, its certificate revoked) found nothing to go by.
func TestKitExplainsOurAborts(t *testing.T) {
	plainEnv, plainOuts := loadExample(t)
	tlsEnv, tlsOuts := loadTLSExample(t)
	tests := []struct {
		name    string
		readme  string
		want    []string
		wantNot []string
	}{
		{"plain", renderExample(t, plainEnv, plainOuts)["README.md"],
			[]string{"`Peer aborted Association` after `Association Accepted`", "silent for 5 minutes", "a deployment of ours", "our log and audit trail name the reason"},
			[]string{"expired or was revoked while it was open"}},
		{"TLS", renderExample(t, tlsEnv, tlsOuts)["README.md"],
			[]string{"`Peer aborted Association` after `Association Accepted`", "a deployment of ours", "expired or was revoked while it was open"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, table, ok := strings.Cut(tt.readme, "## Troubleshooting")
			if !ok {
				t.Fatal("no troubleshooting section")
			}
			for _, w := range tt.want {
				if !strings.Contains(table, w) {
					t.Errorf("troubleshooting lacks %q", w)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(table, w) {
					t.Errorf("troubleshooting has %q", w)
				}
			}
		})
	}
}

// TestKitStatesOurResponseTime: without staging, the kit tells the PACS how
// long after an image's last byte we answer its C-STORE at the latest
// (scp.s3PutTimeoutSeconds) and so how long the PACS must wait for the
// answer. Before, the kit said nothing of it: a PACS whose response timeout
// was shorter than that (Orthanc's DicomScuTimeout is 10 s; the setting
// allows up to 60 s) aborted the association while we were storing, with
// nothing in the kit to say why. With staging the answer does not wait on S3,
// and nothing is said.
func TestKitStatesOurResponseTime(t *testing.T) {
	env, outs := loadExample(t)
	tests := []struct {
		name    string
		timeout int
		staged  bool
		want    string // "" for no such sentence
	}{
		{"the default", 8, false, "within 8 seconds of its last byte"},
		{"a longer put timeout", 30, false, "at least 32 seconds"},
		{"staged", 8, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env.S3PutTimeoutSeconds, env.Staged = tt.timeout, tt.staged
			text := renderExample(t, env, outs)["README.md"]
			_, speed, _ := strings.Cut(text, "## Sending speed")
			speed, _, _ = strings.Cut(speed, "## Troubleshooting")
			has := strings.Contains(speed, "We answer each C-STORE within")
			switch {
			case tt.want == "" && has:
				t.Errorf("a staged kit states a put timeout:\n%s", speed)
			case tt.want != "" && !strings.Contains(speed, tt.want):
				t.Errorf("the sending speed section lacks %q:\n%s", tt.want, speed)
			}
		})
	}
	t.Run("from the environment config", func(t *testing.T) {
		if env, _ := loadExample(t); env.S3PutTimeoutSeconds != 8 {
			t.Errorf("scp.s3PutTimeoutSeconds read as %d, want its default 8", env.S3PutTimeoutSeconds)
		}
	})
}

// TestKitStatesSCPLimits: the limits and timers the kit states are the ones
// scp-task applies: shared/dicomnet's defaults (scp-task's settings take
// theirs from them) and shared/pipeline's commitment retries, and the load
// balancer's idle timeout (dicom.idleTimeoutSeconds) where it ends a silent
// association first. The README spelt them out ("262,144 bytes", "silent
// for 5 minutes", "1 KiB a minute", "after 10 seconds … up to 5 minutes"): a
// change of a default, or an environment with a shorter idle timeout, left
// the kit stating limits the site does not meet.
func TestKitStatesSCPLimits(t *testing.T) {
	env, outs := loadExample(t)
	if env.NLBIdleTimeoutSeconds == 0 {
		t.Fatal("dicom.idleTimeoutSeconds not read from the environment config")
	}
	states := func(l Limits) []string {
		return []string{
			"maximum PDU length received " + bytesText(l.MaxPDULength),
			"an association silent for " + durationText(l.IdleTimeout) + " between messages is aborted",
			"(" + bytesText(l.MinProgressBytes) + " " + perText(l.ProgressWindow) + " at least)",
			"it was silent for " + durationText(l.IdleTimeout) + ", an image stalled (under " + bytesText(l.MinProgressBytes) + " " + perText(l.ProgressWindow) + ")",
			"is sent again after " + durationText(l.CommitmentRetryFirst) + ", then at doubling intervals up to " + durationText(l.CommitmentRetryMax) + ",",
		}
	}
	scp := Limits{
		MaxPDULength: int64(dicomnet.DefaultMaxPDULength), IdleTimeout: dicomnet.DefaultIdleTimeout,
		ProgressWindow: dicomnet.DefaultProgressWindow, MinProgressBytes: dicomnet.DefaultMinProgressBytes,
		CommitmentRetryFirst: pipeline.CommitmentReportFirstRetry, CommitmentRetryMax: pipeline.CommitmentReportMaxRetry,
	}
	shortIdle := scp
	shortIdle.IdleTimeout = 2 * time.Minute
	other := Limits{MaxPDULength: 65536, IdleTimeout: 90 * time.Second, ProgressWindow: 30 * time.Second, MinProgressBytes: 4096,
		CommitmentRetryFirst: 20 * time.Second, CommitmentRetryMax: 10 * time.Minute}
	tests := []struct {
		name    string
		nlbIdle int     // dicom.idleTimeoutSeconds
		limits  *Limits // replaces the kit's, when set
		want    Limits
	}{
		{"scp-task's defaults", env.NLBIdleTimeoutSeconds, nil, scp},
		{"no load balancer timeout known", 0, nil, scp},
		{"a load balancer idle timeout shorter than scp-task's", 120, nil, shortIdle},
		{"other limits", env.NLBIdleTimeoutSeconds, &other, other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := env
			env.NLBIdleTimeoutSeconds = tt.nlbIdle
			k, err := Build(env, "example-hospital", outs, exampleOpts(t, outs, "example-hospital"))
			if err != nil {
				t.Fatal(err)
			}
			if tt.limits != nil {
				k.Limits = *tt.limits
			}
			if k.Limits != tt.want {
				t.Fatalf("kit limits %+v, want %+v", k.Limits, tt.want)
			}
			files, err := k.Render()
			if err != nil {
				t.Fatal(err)
			}
			readme := string(files[0].Data)
			for _, w := range states(tt.want) {
				if !strings.Contains(readme, w) {
					t.Errorf("README lacks %q", w)
				}
			}
		})
	}
}

func TestLimitTexts(t *testing.T) {
	for _, tt := range []struct {
		got, want string
	}{
		{bytesText(262144), "262,144 bytes"},
		{bytesText(1024), "1,024 bytes"},
		{bytesText(100), "100 bytes"},
		{bytesText(1), "1 byte"},
		{bytesText(1234567), "1,234,567 bytes"},
		{durationText(5 * time.Minute), "5 minutes"},
		{durationText(time.Minute), "1 minute"},
		{durationText(90 * time.Second), "90 seconds"},
		{durationText(10 * time.Second), "10 seconds"},
		{durationText(2 * time.Hour), "2 hours"},
		{durationText(1500 * time.Millisecond), "1.5s"},
		{perText(time.Minute), "a minute"},
		{perText(time.Hour), "an hour"},
		{perText(time.Second), "a second"},
		{perText(90 * time.Second), "every 90 seconds"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// TestSecretCommandsKeepKeysOffTheTerminal runs the commands the kit's
// secrets file gives for fetching the pre-shared keys, with an aws that
// answers a secret's value: each secret is fetched once, into a file only
// its owner may read, and nothing reaches the terminal. The commands
// printed each key on the terminal, and a site whose two tunnels share
// one secret (bgp-clinic) got two commands that printed that whole secret,
// both keys, twice.
func TestSecretCommandsKeepKeysOffTheTerminal(t *testing.T) {
	env, outs := loadExample(t)
	for _, tc := range []struct {
		site    string
		secrets int // distinct secrets of the site
	}{
		{"example-hospital", 2},
		{"bgp-clinic", 1},
	} {
		t.Run(tc.site, func(t *testing.T) {
			conf := renderSite(t, env, outs, tc.site)[SecretsFileName]
			cmds := secretCommands(t, conf)
			if len(cmds) != tc.secrets {
				t.Fatalf("%d fetch commands, want one for each of the %d secrets:\n%s", len(cmds), tc.secrets, conf)
			}
			work, calls := t.TempDir(), filepath.Join(t.TempDir(), "calls")
			if out, err := runSecretCommands(t, work, calls, cmds); err != nil {
				t.Fatalf("%v: %s", err, out)
			} else if len(out) > 0 {
				t.Errorf("the commands printed on the terminal:\n%s", out)
			}
			asked := fetchedSecrets(t, calls)
			if len(asked) != tc.secrets || len(slices.Compact(slices.Sorted(slices.Values(asked)))) != tc.secrets {
				t.Errorf("secrets fetched %q, want each of the %d once", asked, tc.secrets)
			}
			files, err := os.ReadDir(work)
			if err != nil {
				t.Fatal(err)
			}
			if len(files) != tc.secrets {
				t.Errorf("files written %v, want one for each secret", files)
			}
			for _, f := range files {
				st, err := os.Stat(filepath.Join(work, f.Name()))
				if err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(filepath.Join(work, f.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != 0o600 || !strings.HasPrefix(string(b), "psk-value-of-arn:") {
					t.Errorf("%s: mode %o, holds %q; want 600 and the secret", f.Name(), st.Mode().Perm(), b)
				}
				if !strings.Contains(conf, f.Name()) {
					t.Errorf("the secrets file does not name %s, where a key went", f.Name())
				}
			}
		})
	}
}

// TestKitAWSCommandsNameTheirRegion: every AWS CLI command a kit prints
// names its region, so that it finds what it asks for whatever region the
// administrator's CLI defaults to: a secret's, the region of its ARN; a
// VPN connection's, the deployment's. The secrets' fetch commands had
// none, and a CLI set to another region did not find the secret.
func TestKitAWSCommandsNameTheirRegion(t *testing.T) {
	env, outs := loadExample(t)
	command := regexp.MustCompile(`aws [a-z0-9-]+ [a-z0-9-]+`)
	for _, site := range []string{"example-hospital", "bgp-clinic"} {
		t.Run(site, func(t *testing.T) {
			files := renderSite(t, env, outs, site)
			n := 0
			for name, text := range files {
				for _, line := range strings.Split(text, "\n") {
					if !command.MatchString(line) {
						continue
					}
					n++
					want := env.Region
					if arn := regexp.MustCompile(`arn:aws:secretsmanager:[^']*`).FindString(line); arn != "" {
						want = strings.Split(arn, ":")[3]
					}
					if !strings.Contains(line, "--region "+want+" ") {
						t.Errorf("%s: an AWS CLI command without --region %s:\n%s", name, want, line)
					}
				}
			}
			if n == 0 {
				t.Error("no AWS CLI command in the kit")
			}
		})
	}
}

// TestTroubleshootingNamesTheSecrets: the README's row for a failed
// authentication says where the keys are as the site has them: one secret
// per tunnel, or one secret holding both tunnels' keys (it said "one per
// tunnel" to a site whose tunnels share one).
func TestTroubleshootingNamesTheSecrets(t *testing.T) {
	env, outs := loadExample(t)
	for _, tc := range []struct {
		site, want, not string
	}{
		{"example-hospital", "one secret per tunnel", "both tunnels' keys"},
		{"bgp-clinic", "one secret holds both tunnels' keys", "per tunnel"},
	} {
		t.Run(tc.site, func(t *testing.T) {
			readme := renderSite(t, env, outs, tc.site)["README.md"]
			var row string
			for _, line := range strings.Split(readme, "\n") {
				if strings.HasPrefix(line, "| `AUTHENTICATION_FAILED`") {
					row = line
				}
			}
			if !strings.Contains(row, tc.want) || strings.Contains(row, tc.not) {
				t.Errorf("troubleshooting row %q: want %q, not %q", row, tc.want, tc.not)
			}
		})
	}
}

// TestSecretCommandsLeaveAnExistingFileAlone: a fetch command whose file
// already exists (an earlier fetch not deleted, a file made by hand or by
// someone else) fails, fetching nothing and leaving the file as it was.
// The umask sets the mode of a file the shell creates only: the commands
// wrote the key into the existing file, readable by all when it was.
func TestSecretCommandsLeaveAnExistingFileAlone(t *testing.T) {
	env, outs := loadExample(t)
	cmds := secretCommands(t, renderSite(t, env, outs, "example-hospital")[SecretsFileName])
	if len(cmds) != 2 {
		t.Fatalf("%d fetch commands, want 2", len(cmds))
	}
	work, calls := t.TempDir(), filepath.Join(t.TempDir(), "calls")
	existing := filepath.Join(work, "tunnel1.psk")
	if err := os.WriteFile(existing, []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runSecretCommands(t, work, calls, cmds[:1]); err == nil {
		t.Errorf("the command over an existing tunnel1.psk succeeded (%s)", out)
	}
	st, err := os.Stat(existing)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(existing)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "kept\n" || st.Mode().Perm() != 0o644 {
		t.Errorf("tunnel1.psk: mode %o, holds %q; want it as it was (644, %q)", st.Mode().Perm(), b, "kept\n")
	}
	if asked := fetchedSecrets(t, calls); len(asked) != 0 {
		t.Errorf("fetched %q with nowhere to put it", asked)
	}
}

// secretCommands are the fetch commands a secrets file gives in its
// comments.
func secretCommands(t *testing.T, conf string) []string {
	t.Helper()
	var cmds []string
	for _, line := range strings.Split(conf, "\n") {
		if cmd, ok := strings.CutPrefix(line, "#   "); ok && strings.Contains(cmd, "aws secretsmanager get-secret-value") {
			cmds = append(cmds, cmd)
		}
	}
	return cmds
}

// runSecretCommands runs cmds with sh in dir under a umask of 022, each
// stopping the run if it fails, with an aws that appends the secret asked
// for to the file calls and answers a value that names it. It returns what
// they printed.
func runSecretCommands(t *testing.T, dir, calls string, cmds []string) ([]byte, error) {
	t.Helper()
	bin := t.TempDir()
	// The AWS CLI finds a secret only in its region: --region, else the
	// administrator's default (another one here).
	fake := `#!/bin/sh
region=$AWS_DEFAULT_REGION
while [ $# -gt 0 ]; do
	[ "$1" = --secret-id ] && id=$2
	[ "$1" = --region ] && region=$2
	shift
done
if [ "$region" != "$(echo "$id" | cut -d: -f4)" ]; then
	echo "An error occurred (ResourceNotFoundException) when calling the GetSecretValue operation: Secrets Manager can't find the specified secret." >&2
	exit 254
fi
echo "$id" >>"$AWS_CALLS"
echo "psk-value-of-$id"
`
	if err := os.WriteFile(filepath.Join(bin, "aws"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-ec", "umask 022\n"+strings.Join(cmds, "\n"))
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "AWS_CALLS=" + calls, "AWS_DEFAULT_REGION=us-east-1"}
	return cmd.CombinedOutput()
}

// fetchedSecrets are the secrets runSecretCommands' aws was asked for.
func fetchedSecrets(t *testing.T, calls string) []string {
	t.Helper()
	b, err := os.ReadFile(calls)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func TestARNRegion(t *testing.T) {
	for _, tc := range []struct{ name, arn, want string }{
		{"secret", "arn:aws:secretsmanager:eu-west-1:111122223333:secret:x", "eu-west-1"},
		{"another partition", "arn:aws-us-gov:secretsmanager:us-gov-west-1:1:secret:x", "us-gov-west-1"},
		{"a name", "not-an-arn", ""},
		{"empty region", "arn:aws:secretsmanager::111122223333:secret:x", ""},
		{"cut short", "arn:aws:secretsmanager", ""},
		{"not arn:", "urn:aws:secretsmanager:eu-west-1:1:secret:x", ""},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ARNRegion(tc.arn); got != tc.want {
				t.Errorf("ARNRegion(%q) = %q, want %q", tc.arn, got, tc.want)
			}
		})
	}
}

// TestPSKSecretARNNeedsARegion: a kit is refused when the stack outputs
// name a pre-shared key secret by an ARN without a region (a secret's
// name, or a malformed ARN), the error naming the tunnel and the output:
// its fetch command had no --region, and -show-secrets read it in the
// caller's default region, where the secret is not. A secret both tunnels
// share is refused once, naming both (it was refused once per tunnel). An
// ARN with a region, whichever, is taken, and its command names that
// region.
func TestPSKSecretARNNeedsARegion(t *testing.T) {
	env, outs := loadExample(t)
	const good = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:VpnexamplehospitalTunnel1Psk-AbCdEf"
	for _, tc := range []struct {
		name, psk string
		output    string // the output holding psk: VpnPsk<site> when ""
		wantErr   string // "" when the kit builds
		region    string // the fetch commands' when it does
	}{
		{name: "ARNs with their region", psk: good + " arn:aws:secretsmanager:eu-west-1:111122223333:secret:T2-GhIjKl", region: "eu-west-1"},
		{name: "another region", psk: "arn:aws:secretsmanager:eu-central-1:111122223333:secret:both-XyZ123", region: "eu-central-1"},
		{name: "empty region", psk: good + " arn:aws:secretsmanager::111122223333:secret:T2-GhIjKl",
			wantErr: `tunnel 2 PSK secret ARN "arn:aws:secretsmanager::111122223333:secret:T2-GhIjKl" (stack output VpnPskexample-hospital): not a secret's ARN with its region`},
		{name: "a secret's name", psk: "dicom-ingest/dev/vpn/example-hospital",
			wantErr: `tunnels 1 and 2 PSK secret ARN "dicom-ingest/dev/vpn/example-hospital" (stack output VpnPskexample-hospital): not a secret's ARN with its region`},
		{name: "cut short", psk: "arn:aws:secretsmanager " + good,
			wantErr: `tunnel 1 PSK secret ARN "arn:aws:secretsmanager" (stack output VpnPskexample-hospital)`},
		// A deployment giving PskSecretArn<site> in its place: the error
		// names that output, not the VpnPsk<site> it does not have.
		{name: "PskSecretArn's name", output: OutPSKSecretARN, psk: "dicom-ingest/dev/vpn/example-hospital",
			wantErr: `tunnels 1 and 2 PSK secret ARN "dicom-ingest/dev/vpn/example-hospital" (stack output PskSecretArnexample-hospital): not a secret's ARN with its region`},
		{name: "PskSecretArn with its region", output: OutPSKSecretARN, psk: good, region: "eu-west-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := withOutput(outs, OutVPNPSK+"examplehospital", tc.psk)
			if tc.output != "" {
				o = withOutput(outs, tc.output+"examplehospital", tc.psk)
				delete(o.byNorm, normKey(OutVPNPSK+"examplehospital"))
			}
			opts := exampleOpts(t, o, "example-hospital")
			if tc.wantErr != "" {
				_, err := Build(env, "example-hospital", o, opts)
				if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %v mentioning %q", err, ErrInvalidConfig, tc.wantErr)
				}
				if n := strings.Count(err.Error(), "PSK secret ARN"); n != 1 {
					t.Errorf("%d errors about the secrets' ARNs, want 1:\n%v", n, err)
				}
				return
			}
			conf := renderSiteWith(t, env, o, "example-hospital", opts)[SecretsFileName]
			cmds := secretCommands(t, conf)
			if len(cmds) == 0 {
				t.Fatalf("no fetch command:\n%s", conf)
			}
			for _, c := range cmds {
				if !strings.Contains(c, " --region "+tc.region+" ") {
					t.Errorf("fetch command without --region %s: %s", tc.region, c)
				}
			}
		})
	}
}

// withOutput is outs with the output key set to value.
func withOutput(outs Outputs, key, value string) Outputs {
	o := Outputs{byNorm: maps.Clone(outs.byNorm)}
	o.byNorm[normKey(key)] = output{stack: "test", key: key, value: value}
	return o
}

// TestSplitList: a list of the outputs and the flags is comma-, space- or
// line-separated, separators alone name nothing, and an empty entry beside
// others is an error naming where the list came from: "arnA," read as the
// one secret both tunnels share (the output's format for it), so the
// second tunnel's secret, missing, went unnoticed into the kit.
func TestSplitList(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{"arnA arnB", []string{"arnA", "arnB"}, ""},
		{"arnA", []string{"arnA"}, ""},
		{"10.0.0.1,10.0.0.2", []string{"10.0.0.1", "10.0.0.2"}, ""},
		{"10.0.0.1, 10.0.0.2\n", []string{"10.0.0.1", "10.0.0.2"}, ""},
		{" a\tb\nc ", []string{"a", "b", "c"}, ""},
		{"", nil, ""},
		{"arnA,", nil, `VpnPsksite "arnA,": entry 2 of 2 is empty`},
		{",arnB", nil, `VpnPsksite ",arnB": entry 1 of 2 is empty`},
		{"a,,b", nil, "entry 2 of 3 is empty"},
		{"a, ,b", nil, "entry 2 of 3 is empty"},
		{"a ,\n", nil, "entry 2 of 2 is empty"},
		{"a b,", nil, "entry 2 of 2 is empty"},
		{",", nil, ""},
		{" , ", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := SplitList(OutVPNPSK+"site", tt.in)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("SplitList(%q) = %q, %v; want an error with %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("SplitList(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// TestBuildRefusesAMissingTunnelSecret: an output listing one tunnel's
// secret and an empty entry for the other fails the kit, naming the
// output, instead of giving both tunnels the first secret.
func TestBuildRefusesAMissingTunnelSecret(t *testing.T) {
	env, _ := loadExample(t)
	for _, key := range []string{OutVPNPSK, OutPSKSecretARN} {
		t.Run(key, func(t *testing.T) {
			outs, err := ParseOutputs(strings.NewReader(`{"S": {"NlbAddresses": "10.20.1.10", "VpnConnectionIdBgpClinic": "vpn-1",
				"Tunnel1AddressBgpClinic": "52.16.0.33", "Tunnel2AddressBgpClinic": "54.72.0.44", "` + key + `BgpClinic": "arn:aws:secretsmanager:eu-west-1:1:secret:x,"}}`))
			if err != nil {
				t.Fatal(err)
			}
			k, err := Build(env, "bgp-clinic", outs, Options{})
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), key+"bgp-clinic") || !strings.Contains(err.Error(), "entry 2 of 2 is empty") {
				t.Fatalf("Build = %+v, %v; want an error naming %sbgp-clinic's empty entry", k, err, key)
			}
		})
	}
}
