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
	ns := fmt.Sprintf("di-kit-%d", os.Getpid())
	l := &lab{t: t, dir: dir, site: ns}
	removeStaleNamespaces(t)
	addNamespace(t, ns)
	t.Cleanup(func() { l.deleteNS(ns) })
	l.must("ip", "-n", ns, "link", "set", "lo", "up")
	c := l.startCharon("kit", ns)

	base := filepath.Join("..", "..", "infra", "onboarding", "testdata")
	env, err := onboarding.LoadEnvConfig(filepath.Join(base, "config"), "dev")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(base, "example-outputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	outs, err := onboarding.ParseOutputs(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, routing := range []onboarding.Routing{onboarding.RouteBased, onboarding.PolicyBased} {
		t.Run(string(routing), func(t *testing.T) {
			kit, err := onboarding.Build(env, "example-hospital", outs, onboarding.Options{
				Routing:         routing,
				RemoteIPs:       []string{"10.20.1.10"},
				TunnelEndpoints: []string{"52.16.0.11", "54.72.0.22"},
				PSKs:            map[int]string{1: "lab-key-one", 2: "lab-key-two"},
			})
			if err != nil {
				t.Fatal(err)
			}
			kitDir := filepath.Join(dir, string(routing))
			if _, err := kit.WriteDir(kitDir); err != nil {
				t.Fatal(err)
			}
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
