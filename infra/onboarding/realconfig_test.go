package onboarding

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestRealEnvironments builds a kit for every site of the project's own
// environment configs (infra/config/*.json) with outputs shaped like a
// deployment's, so a config change that the kit cannot render shows up here.
func TestRealEnvironments(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "config", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatal("no environment configs in infra/config: the repository ships dev.json and prod.json")
	}
	for _, p := range paths {
		env := strings.TrimSuffix(filepath.Base(p), ".json")
		t.Run(env, func(t *testing.T) {
			cfg, err := LoadEnvConfig(filepath.Dir(p), env)
			if err != nil {
				t.Fatal(err)
			}
			// Shaped like infra/stack's outputs: per site VpnConnection<name>
			// and VpnPsk<name> ("arn1 arn2"), name without dashes.
			stack := map[string]string{
				OutNLBDNSName:    "nlb.example.internal",
				OutDicomPort:     strconv.Itoa(cfg.DicomPort),
				OutCalledAETitle: cfg.CalledAETitle,
			}
			for _, s := range cfg.Sites {
				name := strings.ReplaceAll(s.Name, "-", "")
				stack["VpnConnection"+name] = "vpn-0123456789abcdef0"
				stack["VpnPsk"+name] = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:t1-" + name + " arn:aws:secretsmanager:eu-west-1:111122223333:secret:t2-" + name
			}
			data, err := json.Marshal(map[string]map[string]string{"DicomIngest-" + env: stack})
			if err != nil {
				t.Fatal(err)
			}
			outs, err := ParseOutputs(strings.NewReader(string(data)))
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range cfg.Sites {
				k, err := Build(cfg, s.Name, outs, Options{RemoteIPs: []string{"10.0.0.10"}, TunnelEndpoints: []string{"192.0.2.1", "198.51.100.1"}})
				if err != nil {
					t.Fatalf("site %s: %v", s.Name, err)
				}
				if _, err := k.Render(); err != nil {
					t.Fatalf("site %s: %v", s.Name, err)
				}
				if k.Tunnels[1].PSKSecretARN == k.Tunnels[0].PSKSecretARN {
					t.Errorf("site %s: both tunnels use secret %s", s.Name, k.Tunnels[0].PSKSecretARN)
				}
			}
		})
	}
}
