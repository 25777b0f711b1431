package config

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

func TestTLSSettings(t *testing.T) {
	tls := []string{"--tls-listen", "127.0.0.1:2762", "--tls-cert", "/etc/scp/server.crt", "--tls-key", "/etc/scp/server.key"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // error text; "" for none
	}{
		{"plain only, as before", nil, nil, ""},
		{"both listeners", tls, nil, ""},
		{"TLS only", append([]string{"--listen", "off"}, tls...), nil, ""},
		{"TLS only, empty --listen", append([]string{"--listen", ""}, tls...), nil, ""},
		{"TLS only from the environment", nil, map[string]string{"SCP_LISTEN": "off", "SCP_TLS_LISTEN": ":2762", "SCP_TLS_CERT": "c", "SCP_TLS_KEY": "k"}, ""},
		{"bound AE with client CA", append([]string{"--calling-aes", "A@10.0.0.0/8#pacs.example", "--tls-client-ca", "/etc/scp/ca.pem"}, tls...), nil, ""},
		{"nothing listens", []string{"--listen", "off"}, nil, "--listen: the plain listener is off and no --tls-listen is set"},
		// Named by what set them: the variables, not the flags.
		{"nothing listens, from the environment", nil, map[string]string{"SCP_LISTEN": "off"}, "SCP_LISTEN (or --listen): the plain listener is off and no --tls-listen is set"},
		{"TLS without a certificate, from the environment", nil, map[string]string{"SCP_TLS_LISTEN": ":2762", "SCP_TLS_CERT": "c"}, "SCP_TLS_LISTEN (or --tls-listen): needs SCP_TLS_CERT and --tls-key"},
		{"CRL without a CA, from the environment", tls, map[string]string{"SCP_TLS_CLIENT_CRL": "ca.crl"}, "SCP_TLS_CLIENT_CRL (or --tls-client-crl): needs --tls-client-ca"},
		{"TLS without a certificate", []string{"--tls-listen", ":2762"}, nil, "--tls-listen: needs --tls-cert and --tls-key"},
		{"bad TLS address", []string{"--tls-listen", "2762", "--tls-cert", "c", "--tls-key", "k"}, nil, `--tls-listen: "2762" is not host:port`},
		{"certificate without a TLS listener", []string{"--tls-cert", "c"}, nil, "--tls-cert: set without --tls-listen"},
		{"bound AE without TLS", []string{"--calling-aes", "A#pacs.example"}, nil, "--calling-aes: entries with #NAME"},
		{"bound AE without a client CA", append([]string{"--calling-aes", "A#pacs.example"}, tls...), nil, "set --tls-listen and --tls-client-ca"},
		{"bad certificate name", []string{"--calling-aes", "A#pacs example"}, nil, "--calling-aes: accesscontrol: entry 1"},
		{"CRL with its CA", append([]string{"--tls-client-ca", "ca.pem", "--tls-client-crl", "ca.crl"}, tls...), nil, ""},
		{"CRL without a CA", append([]string{"--tls-client-crl", "ca.crl"}, tls...), nil, "--tls-client-crl: needs --tls-client-ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, env(tt.env), io.Discard)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.Listen == "" && c.TLSListen == "" {
					t.Fatal("no listener")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load error = %v, want one containing %q", err, tt.want)
			}
		})
	}
	c, err := Load(append([]string{"--listen", "off"}, tls...), env(nil), io.Discard)
	if err != nil || c.Listen != "" || c.TLSListen != "127.0.0.1:2762" {
		t.Errorf("Listen %q TLSListen %q (%v)", c.Listen, c.TLSListen, err)
	}
}

// TestHelpHidesPEMText: a key given as PEM text in the environment (an ECS
// secret) is never printed: the help shows each flag's built-in default,
// never the environment's value.
func TestHelpHidesPEMText(t *testing.T) {
	var sb strings.Builder
	key := "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
	if _, err := Load([]string{"-h"}, env(map[string]string{"SCP_TLS_KEY": key}), &sb); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Load -h = %v", err)
	}
	if strings.Contains(sb.String(), "MIGHAgEA") || !strings.Contains(sb.String(), "--tls-key PEM") {
		t.Errorf("help output:\n%s", sb.String())
	}
}
