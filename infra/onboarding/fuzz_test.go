package onboarding

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseOutputs feeds arbitrary bytes to the outputs parser and, when it
// accepts them, builds and renders a kit: neither may panic, and whatever
// reaches a rendered swanctl.conf must have passed validation (no line breaks
// smuggled in through a value).
func FuzzParseOutputs(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("testdata", "example-outputs.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"S":{"NlbAddresses":"10.0.0.1\n}","VpnConnectionIdExampleHospital":"vpn-1"}}`))
	f.Add([]byte(`{"S":{"K":1e999}}`))
	f.Add([]byte(`[]`))
	env, err := LoadEnvConfig(filepath.Join("testdata", "config"), "dev")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		outs, err := ParseOutputs(strings.NewReader(string(data)))
		if err != nil {
			return
		}
		outs.Keys()
		k, err := Build(env, "example-hospital", outs, Options{})
		if err != nil {
			return
		}
		files, err := k.Render()
		if err != nil {
			t.Fatalf("render of a validated kit failed: %v", err)
		}
		for _, fl := range files {
			if fl.Name != "swanctl.conf" {
				continue
			}
			for _, line := range strings.Split(string(fl.Data), "\n") {
				if strings.Contains(line, "remote_addrs") && strings.ContainsAny(strings.TrimPrefix(strings.TrimSpace(line), "remote_addrs = "), " {}\"") {
					t.Fatalf("unvalidated value in swanctl.conf: %q", line)
				}
			}
		}
	})
}

// FuzzParsePSKSecret: the secret parser never panics and never returns an
// empty key without an error.
func FuzzParsePSKSecret(f *testing.F) {
	for _, s := range []string{`{"tunnel1":"a","tunnel2":"b"}`, "plain", `{"psk":1}`, `{`, ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		psks, err := ParsePSKSecret(s)
		if err != nil {
			return
		}
		if psks[1] == "" || psks[2] == "" {
			t.Fatalf("ParsePSKSecret(%q) = %v without error", s, psks)
		}
	})
}
