package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

const (
	testClientSecretArn  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-ingest/test/pacs-b-client-Xy12Zw"
	testClientSecretArn2 = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-ingest/test/pacs-a-client-Ab34Cd"
)

// withPacsTLS gives site i a PACS that takes its results over DICOM TLS only.
func withPacsTLS(c *Config, i int, arn string) {
	c.Sites[i].Pacs = &Pacs{Host: c.Sites[i].Cidrs[0][:strings.LastIndex(c.Sites[i].Cidrs[0], ".")] + ".20", Port: 2762,
		TLS: &PacsTLS{CaFile: "tls/pacs-ca.pem", ClientSecretArn: arn}}
}

// TestPacsTLSValidation: sites[].pacs.tls's mistakes are named by their paths: a partial ARN (no grant could name
// exactly it), another service's, another Region's, a missing CA, a KMS key elsewhere.
func TestPacsTLSValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(t *PacsTLS)
		want   string // "" valid
	}{
		{"valid", func(*PacsTLS) {}, ""},
		{"with a KMS key", func(p *PacsTLS) {
			p.SecretKmsKeyArn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
		}, ""},
		{"partial ARN", func(p *PacsTLS) {
			p.ClientSecretArn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-ingest/test/pacs-b-cert"
		},
			`sites[1].pacs.tls.clientSecretArn: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-ingest/test/pacs-b-cert" is not a complete Secrets Manager secret ARN`},
		{"another service", func(p *PacsTLS) { p.ClientSecretArn = "arn:aws:acm:eu-west-1:123456789012:certificate/pacs-b-Xy12Zw" },
			"sites[1].pacs.tls.clientSecretArn: \"arn:aws:acm:"},
		{"another Region", func(p *PacsTLS) {
			p.ClientSecretArn = strings.Replace(testClientSecretArn, "eu-west-1", "us-east-1", 1)
		},
			"sites[1].pacs.tls.clientSecretArn: the secret is in 123456789012/us-east-1, not in this environment's 123456789012/eu-west-1"},
		{"no secret", func(p *PacsTLS) { p.ClientSecretArn = "" }, `sites[1].pacs.tls.clientSecretArn: "" is not a complete`},
		{"no CA", func(p *PacsTLS) { p.CaFile = "" }, "sites[1].pacs.tls.caFile: is required"},
		{"KMS key elsewhere", func(p *PacsTLS) { p.SecretKmsKeyArn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd" },
			"sites[1].pacs.tls.secretKmsKeyArn:"},
		{"with a server name", func(p *PacsTLS) { p.ServerName = "pacs.st-mary.example" }, ""},
		{"server name not a DNS name", func(p *PacsTLS) { p.ServerName = "pacs_b.example" },
			`sites[1].pacs.tls.serverName: "pacs_b.example" is not a DNS name`},
		{"server name an address", func(p *PacsTLS) { p.ServerName = "192.168.2.20" },
			`sites[1].pacs.tls.serverName: "192.168.2.20" is an IP address`},
		{"server name a wildcard", func(p *PacsTLS) { p.ServerName = "*.st-mary.example" },
			`sites[1].pacs.tls.serverName: "*.st-mary.example" is not a DNS name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			withPacsTLS(c, 1, testClientSecretArn)
			tc.mutate(c.Sites[1].Pacs.TLS)
			_, err := Parse(marshal(t, c))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse = %v, want %q", err, tc.want)
			}
		})
	}
	// TLS without a PACS address: tls lives in pacs, so a pacs of TLS alone is a pacs without host and port.
	t.Run("TLS without pacs", func(t *testing.T) {
		c := valid()
		c.Sites[0].Pacs = &Pacs{TLS: &PacsTLS{CaFile: "tls/pacs-ca.pem", ClientSecretArn: testClientSecretArn2}}
		_, err := Parse(marshal(t, c))
		if err == nil || !strings.Contains(err.Error(), `sites[0].pacs.host: "" is not an IPv4 address`) || !strings.Contains(err.Error(), "sites[0].pacs.port: 0") {
			t.Fatalf("Parse = %v", err)
		}
	})
}

// loadPacsTLS loads a valid config whose sites a and b take results over DICOM TLS, with the CA files given, from
// a directory of its own.
func loadPacsTLS(t *testing.T, caA, caB []byte) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	c := valid()
	withPacsTLS(c, 0, testClientSecretArn2)
	withPacsTLS(c, 1, testClientSecretArn)
	c.Sites[0].Pacs.TLS.CaFile = "tls/pacs-a-ca.pem"
	if err := os.MkdirAll(filepath.Join(dir, "tls"), 0o755); err != nil {
		t.Fatal(err)
	}
	testpki.WriteFile(t, filepath.Join(dir, "tls", "pacs-a-ca.pem"), caA)
	testpki.WriteFile(t, filepath.Join(dir, "tls", "pacs-ca.pem"), caB)
	testpki.WriteFile(t, filepath.Join(dir, "test.json"), marshal(t, c))
	return Load(dir, "test")
}

// TestPacsTLSLoad: Load reads each site's CA file by dicom.tls's rules; CommitmentPeers marks their peers tls://
// and CommitmentTLS gives each its own CA and client secret's ARN, which the function reads as commitreport.TLSPeers.
func TestPacsTLSLoad(t *testing.T) {
	caA, caB := testpki.NewCA(t, "PACS A CA"), testpki.NewCA(t, "PACS B CA")
	got, err := loadPacsTLS(t, caA.PEM, caB.PEM)
	if err != nil {
		t.Fatal(err)
	}
	if p := got.CommitmentPeers(); p != "A_PACS=tls://192.168.1.20:2762,B_PACS=tls://192.168.2.20:2762" {
		t.Errorf("CommitmentPeers() = %q", p)
	}
	if _, err := commitreport.ParsePeers(got.CommitmentPeers()); err != nil {
		t.Error(err)
	}
	// A PACS whose certificate names a DNS name only: the function dials pacs.host and checks that name.
	got.Sites[1].Pacs.TLS.ServerName = "pacs.b.example"
	if p := got.CommitmentPeers(); p != "A_PACS=tls://192.168.1.20:2762,B_PACS=tls://192.168.2.20:2762?serverName=pacs.b.example" {
		t.Errorf("CommitmentPeers() = %q", p)
	}
	if p, err := commitreport.ParsePeers(got.CommitmentPeers()); err != nil || p["B_PACS"].ServerName != "pacs.b.example" || p["B_PACS"].Addr != "192.168.2.20:2762" {
		t.Errorf("the function reads %+v, %v", p, err)
	}
	got.Sites[1].Pacs.TLS.ServerName = ""
	var peers commitreport.TLSPeers
	if err := json.Unmarshal([]byte(got.CommitmentTLS()), &peers); err != nil {
		t.Fatal(err)
	}
	want := commitreport.TLSPeers{"A_PACS": {CA: string(caA.PEM), ClientSecretARN: testClientSecretArn2}, "B_PACS": {CA: string(caB.PEM), ClientSecretARN: testClientSecretArn}}
	if len(peers) != 2 || peers["A_PACS"] != want["A_PACS"] || peers["B_PACS"] != want["B_PACS"] {
		t.Errorf("CommitmentTLS() = %+v, want %+v", peers, want)
	}
	if c := valid(); c.CommitmentTLS() != "" {
		t.Errorf("CommitmentTLS() without pacs.tls = %q", c.CommitmentTLS())
	}

	leaf := caA.Client(t, testpki.Options{CommonName: "x"})
	bundle := func(n int) []byte {
		var b []byte
		for range n {
			b = append(b, testpki.NewCAWith(t, "A rather long name for an RSA CA of the hospital", testpki.Options{RSA: true}).PEM...)
		}
		return b
	}
	for _, tc := range []struct {
		name     string
		caA, caB []byte
		want     string
	}{
		{"a leaf", leaf.CertPEM, caB.PEM, "sites[0].pacs.tls.caFile: tls/pacs-a-ca.pem: certificate 1 (CN=x,O=dicom-ingest tests) is not a CA certificate"},
		{"a key", caA.PEM, append(append([]byte{}, caB.PEM...), leaf.KeyPEM...), `sites[1].pacs.tls.caFile: tls/pacs-ca.pem: a "PRIVATE KEY" block where "CERTIFICATE" blocks belong`},
		// Lambda's 4 KB for all variables: refused at synth, not by the deployment.
		{"more than the function's environment holds", bundle(2), bundle(1), "sites: the commitment function's environment takes 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := loadPacsTLS(t, tc.caA, tc.caB); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestCommitmentEnvironmentBudget: the commitment function's environment, every variable of it as the stack gives
// it (CommitmentEnvironment), must fit Lambda's 4 KB with the stack's own (bucket, tables, bus, key secret): with
// many sites, their peers and quarantinedCommitted AE titles grow it past that though the CAs alone fit, and Load
// refuses the config, naming the variables by size and what to shrink.
func TestCommitmentEnvironmentBudget(t *testing.T) {
	sites := func(n int) func(c *Config) {
		return func(c *Config) {
			for i := range n {
				c.Sites = append(c.Sites, Site{Name: fmt.Sprintf("site-%02d", i), CallingAETitle: fmt.Sprintf("HOSPITAL_PACS_%02d", i),
					CustomerGatewayIP: fmt.Sprintf("198.51.100.%d", 10+i), Cidrs: []string{fmt.Sprintf("172.20.%d.0/24", i)},
					Pacs: &Pacs{Host: fmt.Sprintf("172.20.%d.20", i), Port: 104}, QuarantinedCommitted: true})
			}
		}
	}
	for _, tc := range []struct {
		name string
		more func(c *Config)
		want []string // "" loads
	}{
		{"a few sites", sites(5), nil},
		{"many sites", sites(60), []string{"sites: the commitment function's environment takes",
			"COMMITMENT_PEERS ", "COMMITMENT_QUARANTINED_COMMITTED ", "more than the 3072 bytes it has (Lambda allows 4 KB for all its variables)",
			"shorter AE titles and pacs.tls serverNames"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c := valid()
			withPacsTLS(c, 1, testClientSecretArn)
			tc.more(c)
			if err := os.MkdirAll(filepath.Join(dir, "tls"), 0o755); err != nil {
				t.Fatal(err)
			}
			testpki.WriteFile(t, filepath.Join(dir, "tls", "pacs-ca.pem"), testpki.NewCA(t, "PACS CA").PEM)
			testpki.WriteFile(t, filepath.Join(dir, "test.json"), marshal(t, c))
			got, err := Load(dir, "test")
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				n := EnvironmentSize(got.CommitmentEnvironment())
				if n > 3072 || n < len(got.CommitmentPeers())+len(got.QuarantinedCommitted())+len(got.CommitmentTLS()) {
					t.Errorf("EnvironmentSize = %d", n)
				}
				// A site's pacs.tls.serverName travels in COMMITMENT_PEERS (?serverName=NAME), counted with it.
				name := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".example"
				got.Sites[1].Pacs.TLS.ServerName = name
				if grown := EnvironmentSize(got.CommitmentEnvironment()) - n; grown != len("?serverName=")+len(name) {
					t.Errorf("a server name of %d bytes grows the environment by %d, want %d", len(name), grown, len("?serverName=")+len(name))
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Load = %v, want ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load = %v, want %q in it", err, w)
				}
			}
		})
	}
}
