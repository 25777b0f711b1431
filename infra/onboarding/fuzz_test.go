package onboarding

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
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
		k, err := Build(env, "example-hospital", outs, Options{RemoteIPs: []string{"10.20.1.10"}, TunnelEndpoints: []string{"52.16.0.11", "54.72.0.22"}})
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

// FuzzParsePSKSecret: the secret parser never panics, never returns an
// empty key without an error, and its errors are its own words (an offset
// aside), never a byte of the secret.
func FuzzParsePSKSecret(f *testing.F) {
	for _, s := range []string{`{"tunnel1":"a","tunnel2":"b"}`, "plain", `{"psk":1}`, `{`, "", `{"tunnel1": x}`} {
		f.Add(s)
	}
	digits := func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}
	own := []string{"parse psk secret: empty", "parse psk secret: want keys tunnel1 and tunnel2",
		"parse psk secret: not valid JSON", "parse psk secret: not valid JSON: syntax error at byte 0 of the value"}
	f.Fuzz(func(t *testing.T, s string) {
		psks, err := ParsePSKSecret(s)
		if err != nil {
			if !slices.ContainsFunc(own, func(o string) bool { return strings.Map(digits, o) == strings.Map(digits, err.Error()) }) {
				t.Fatalf("ParsePSKSecret(%q): error %q is not one of the parser's own", s, err)
			}
			return
		}
		if psks[1] == "" || psks[2] == "" {
			t.Fatalf("ParsePSKSecret(%q) = %v without error", s, psks)
		}
	})
}

// FuzzParseVPNConnections: describe-vpn-connections input never panics the
// parser, and what it returns are two IP addresses.
func FuzzParseVPNConnections(f *testing.F) {
	seed, err := os.ReadFile(filepath.Join("testdata", "vpn-connections.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed, "vpn-0a1b2c3d4e5f60718")
	f.Add([]byte(`[{"VpnConnectionId":"v","VgwTelemetry":[{"OutsideIpAddress":"1.2.3.4"},{"OutsideIpAddress":"::1"}]}]`), "v")
	f.Add([]byte(`{"VpnConnections":null}`), "")
	f.Fuzz(func(t *testing.T, data []byte, id string) {
		addrs, err := ParseVPNConnections(strings.NewReader(string(data)), id)
		if err != nil {
			return
		}
		if len(addrs) != 2 {
			t.Fatalf("%d addresses without error", len(addrs))
		}
		for _, a := range addrs {
			if strings.ContainsAny(a, " \n{}\"") {
				t.Fatalf("address %q is not an IP", a)
			}
		}
	})
}

// FuzzParseNLBAddresses: whatever the AWS CLI prints, the parser returns
// IPv4 addresses or an error.
func FuzzParseNLBAddresses(f *testing.F) {
	for _, s := range []string{`["10.0.0.1","10.0.1.1"]`, `[]`, `[1]`, `["::1"]`, `{`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addrs, err := ParseNLBAddresses(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, a := range addrs {
			if err := checkIPv4(a); err != nil {
				t.Fatalf("%q: %v", a, err)
			}
		}
	})
}

// FuzzSplitList: whatever an output or a flag holds, SplitList neither
// panics nor gives an empty entry or one holding a separator; it gives
// every entry the list holds, in order, and refuses exactly a list with an
// empty entry beside others (its error naming the list).
func FuzzSplitList(f *testing.F) {
	for _, s := range []string{"arnA arnB", "arnA,", ",", " , ", "a, b\n", "a,,b", "", "a\r\nb", "a,\u00a0,b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := SplitList("X", s)
		entries := strings.Fields(strings.ReplaceAll(s, ",", " "))
		emptyPart := false
		for _, p := range strings.Split(s, ",") {
			emptyPart = emptyPart || len(strings.Fields(p)) == 0
		}
		if refuse := len(entries) != 0 && emptyPart; (err != nil) != refuse {
			t.Fatalf("SplitList(%q) = %q, %v; want refused %v", s, got, err, refuse)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "X ") {
				t.Fatalf("SplitList(%q): %v, want an ErrInvalidConfig naming the list", s, err)
			}
			return
		}
		for _, e := range got {
			if e == "" || strings.ContainsAny(e, ", \t\n") {
				t.Fatalf("SplitList(%q) = %q: entry %q", s, got, e)
			}
		}
		if !slices.Equal(got, entries) {
			t.Fatalf("SplitList(%q) = %q, want its entries %q", s, got, entries)
		}
	})
}
