package onboarding

import (
	"encoding/json"
	"path/filepath"
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
		t.Skip("no environment configs in infra/config")
	}
	for _, p := range paths {
		env := strings.TrimSuffix(filepath.Base(p), ".json")
		t.Run(env, func(t *testing.T) {
			cfg, err := LoadEnvConfig(filepath.Dir(p), env)
			if err != nil {
				t.Fatal(err)
			}
			stack := map[string]string{
				OutNLBAddresses: "10.0.0.10,10.0.1.10",
				OutNLBDNSName:   "nlb.example.internal",
			}
			for i, s := range cfg.Sites {
				stack[OutVPNConnectionID+s.Name] = "vpn-0123456789abcdef0"
				stack[OutTunnel1Address+s.Name] = "192.0.2." + string(rune('1'+i%8))
				stack[OutTunnel2Address+s.Name] = "198.51.100." + string(rune('1'+i%8))
				stack[OutPSKSecretARN+s.Name] = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:psk-" + s.Name
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
				k, err := Build(cfg, s.Name, outs, Options{})
				if err != nil {
					t.Fatalf("site %s: %v", s.Name, err)
				}
				if _, err := k.Render(); err != nil {
					t.Fatalf("site %s: %v", s.Name, err)
				}
			}
		})
	}
}
