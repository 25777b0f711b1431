package vpn

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/infra/onboarding"
)

// TestKitLoadsIntoStrongSwan loads the example site's kit, in both routing
// styles, into a real charon and checks what strongSwan made of it: the
// route-based variant (XFRM interface ids) cannot carry traffic in the
// userspace-ESP lab, but its configuration must still be one strongSwan
// accepts, with the secrets file included.
func TestKitLoadsIntoStrongSwan(t *testing.T) {
	requireLab(t)
	ctx := context.Background()
	dir := t.TempDir()
	c := lonelyCharon(t, dir, "di-kit")

	env, outs := exampleDeployment(t)
	for _, routing := range []onboarding.Routing{onboarding.RouteBased, onboarding.PolicyBased} {
		t.Run(string(routing), func(t *testing.T) {
			kitDir := filepath.Join(dir, string(routing))
			kit := writeExampleKit(t, env, outs, routing, kitDir)
			// No route to the "AWS" addresses here: an initiation fails at once.
			out := c.mustSwanctl(t, "--load-all", "--file", filepath.Join(kitDir, "swanctl.conf"))
			for _, want := range []string{"loaded ike secret 'ike-dicom-ingest-tunnel1'", "loaded ike secret 'ike-dicom-ingest-tunnel2'",
				"loaded connection 'dicom-ingest-tunnel1'", "loaded connection 'dicom-ingest-tunnel2'", "successfully loaded 2 connections, 0 unloaded"} {
				if !strings.Contains(out, want) {
					t.Errorf("swanctl --load-all output lacks %q:\n%s", want, out)
				}
			}
			conns := c.mustSwanctl(t, "--list-conns")
			for _, want := range []string{
				"dicom-ingest-tunnel1: IKEv2", "dicom-ingest-tunnel2: IKEv2",
				"remote: 52.16.0.11", "remote: 54.72.0.22",
				"local pre-shared key authentication:\n    id: 203.0.113.10",
				"local:  192.168.10.0/24 192.168.11.0/24", "remote: 10.20.0.0/16",
			} {
				if !strings.Contains(conns, want) {
					t.Errorf("--list-conns lacks %q:\n%s", want, conns)
				}
			}
			if routing == onboarding.PolicyBased && !strings.Contains(conns, "dicom-ingest-tunnel2-dicom: TUNNEL") {
				t.Errorf("--list-conns lacks the standby child:\n%s", conns)
			}
			for _, tn := range kit.Tunnels {
				_, _ = c.swanctl(ctx, "--terminate", "--ike", tn.Name, "--force", "--timeout", "1")
			}
		})
	}
}

// exampleDeployment is the example environment and its stack outputs, as
// the onboarding tests have them.
func exampleDeployment(t *testing.T) (onboarding.EnvConfig, onboarding.Outputs) {
	t.Helper()
	base := filepath.Join("..", "..", "infra", "onboarding", "testdata")
	env, err := onboarding.LoadEnvConfig(filepath.Join(base, "config"), "dev")
	if err != nil {
		t.Fatal(err)
	}
	return env, readOutputs(t, filepath.Join(base, "example-outputs.json"))
}

// readOutputs reads a stack outputs file.
func readOutputs(t *testing.T, path string) onboarding.Outputs {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	outs, err := onboarding.ParseOutputs(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return outs
}

// lonelyCharon starts a charon in a namespace of its own (named prefix and
// the process id), with no peer: enough to load a configuration into.
func lonelyCharon(t *testing.T, dir, prefix string) *charon {
	t.Helper()
	ns := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	l := &lab{t: t, dir: dir, site: ns}
	removeStaleNamespaces(t)
	addNamespace(t, ns)
	t.Cleanup(func() { l.deleteNS(ns) })
	l.must("ip", "-n", ns, "link", "set", "lo", "up")
	return l.startCharon("kit", ns)
}

// writeExampleKit writes the example site's kit, with lab keys, into dir.
func writeExampleKit(t *testing.T, env onboarding.EnvConfig, outs onboarding.Outputs, routing onboarding.Routing, dir string) *onboarding.Kit {
	t.Helper()
	kit, err := onboarding.Build(env, "example-hospital", outs, onboarding.Options{
		Routing:         routing,
		RemoteIPs:       []string{"10.20.1.10"},
		TunnelEndpoints: []string{"52.16.0.11", "54.72.0.22"},
		PSKs:            map[int]string{1: "lab-key-one", 2: "lab-key-two"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kit.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	return kit
}

// TestKitSecretsLoadOnce installs the kit in the layouts a site may use
// and checks with a real charon that swanctl loads each pre-shared key
// exactly once. Installed as the README says, into conf.d/ under the
// swanctl.conf strongSwan ships (Debian's ends with "include
// conf.d/*.conf"), the secrets file is parsed twice: through that glob
// and through the kit's swanctl.conf, which includes it for the layouts
// without the glob. strongSwan merges sections of the same name, so each
// key is still loaded once (checked here, with strongSwan 5.9.8). A
// secrets file not beside the kit's swanctl.conf is not loaded at all,
// with swanctl exiting 0: the README has the site look for both
// "loaded ike secret" lines.
func TestKitSecretsLoadOnce(t *testing.T) {
	requireLab(t)
	c := lonelyCharon(t, t.TempDir(), "di-kitsec")
	env, outs := exampleDeployment(t)

	// The swanctl.conf strongSwan ships: this machine's, else its one
	// directive.
	shipped, err := os.ReadFile("/etc/swanctl/swanctl.conf")
	if err != nil {
		shipped = []byte("include conf.d/*.conf\n")
	}
	for _, tc := range []struct {
		name   string
		kitDir string // where the kit's files go, under the swanctl directory
		top    string // the file given to --file: the shipped swanctl.conf when it is not the kit's
	}{
		{"conf.d under the shipped swanctl.conf", "conf.d", "swanctl.conf"},
		{"the kit's swanctl.conf as the only one", ".", "swanctl.conf"},
		{"the kit's swanctl.conf given with --file", "kit", "kit/swanctl.conf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			etc := filepath.Join(t.TempDir(), "swanctl")
			kit := writeExampleKit(t, env, outs, onboarding.PolicyBased, filepath.Join(etc, tc.kitDir))
			if tc.kitDir == "conf.d" {
				if err := os.WriteFile(filepath.Join(etc, "swanctl.conf"), shipped, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			readme, err := os.ReadFile(filepath.Join(etc, tc.kitDir, "README.md"))
			if err != nil {
				t.Fatal(err)
			}
			out := c.mustSwanctl(t, "--load-all", "--file", filepath.Join(etc, tc.top))
			for _, tn := range kit.Tunnels {
				line := fmt.Sprintf("loaded ike secret 'ike-%s'", tn.Name)
				if n := strings.Count(out, line); n != 1 {
					t.Errorf("%q %d times, want once:\n%s", line, n, out)
				}
				if !strings.Contains(string(readme), line) {
					t.Errorf("the kit's README does not have the site expect %q", line)
				}
			}
			if strings.Contains(out, "no files found matching") {
				t.Errorf("an include found nothing:\n%s", out)
			}
		})
	}
}
