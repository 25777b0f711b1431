package config

import (
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

const testSecretArn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-ingest/test/dicom-tls-Ab12Cd"

func withTLS(c *Config) {
	c.Dicom.TLS = &DicomTLS{ServerCertificateSecretArn: testSecretArn, ClientCaFile: "tls/site-ca.pem", ServerCaFile: "tls/server-ca.pem"}
}

func TestTLSDefaultsAndAllowlist(t *testing.T) {
	c := valid()
	withTLS(c)
	c.Sites[1].CertificateName = "pacs.b.example"
	got, err := Parse(marshal(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if got.Dicom.TLS.Port != DefaultTLSPort || !got.PlainListenerEnabled() {
		t.Errorf("port %d, plain listener %v", got.Dicom.TLS.Port, got.PlainListenerEnabled())
	}
	if want := "A_PACS@192.168.1.0/24,B_PACS@192.168.2.0/24#pacs.b.example"; got.CallingAEs() != want {
		t.Errorf("CallingAEs() = %q, want %q", got.CallingAEs(), want)
	}
}

// loadTLS loads a valid config with dicom.tls from a directory of its own holding it, its site and server CA
// files and, when crl is not nil, its client CRL file.
func loadTLS(t *testing.T, siteCA, serverCA, crl []byte) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	c := valid()
	withTLS(c)
	if err := os.MkdirAll(filepath.Join(dir, "tls"), 0o755); err != nil {
		t.Fatal(err)
	}
	testpki.WriteFile(t, filepath.Join(dir, "tls", "site-ca.pem"), siteCA)
	testpki.WriteFile(t, filepath.Join(dir, "tls", "server-ca.pem"), serverCA)
	if crl != nil {
		c.Dicom.TLS.ClientCrlFile = "tls/site.crl"
		testpki.WriteFile(t, filepath.Join(dir, "tls", "site.crl"), crl)
	}
	if err := os.WriteFile(filepath.Join(dir, "test.json"), marshal(t, c), 0o644); err != nil {
		t.Fatal(err)
	}
	return Load(dir, "test")
}

// TestLoadTLSFiles: Load reads the CA files next to the config and refuses what would lock sites out or leak a key.
func TestLoadTLSFiles(t *testing.T) {
	ca := testpki.NewCA(t, "Site CA")
	leaf := ca.Client(t, testpki.Options{CommonName: "pacs.a.example"})
	short := testpki.NewCAUntil(t, "Short CA", time.Now().Add(24*time.Hour)) // less than the 30 days asked
	// Keys BCP 195 does not allow (tlstrust.CheckKey, the SCP's rule for
	// the bundle and the sites' certificates): accepted before.
	rsa1024 := testpki.NewCAWith(t, "RSA 1024 CA", testpki.Options{RSA: true, RSABits: 1024})
	p224 := testpki.NewCAWith(t, "P-224 CA", testpki.Options{Curve: elliptic.P224()})
	cases := []struct {
		name   string
		siteCA []byte
		want   string
	}{
		{"a CA", ca.PEM, ""},
		{"two CAs", append(append([]byte{}, ca.PEM...), testpki.NewCA(t, "Next CA").PEM...), ""},
		{"a key", append(append([]byte{}, ca.PEM...), leaf.KeyPEM...), `a "PRIVATE KEY" block where "CERTIFICATE" blocks belong`},
		{"a leaf", leaf.CertPEM, "is not a CA certificate"},
		{"expiring", short.PEM, "not for 30 more days"},
		{"not PEM", []byte("hello"), "no PEM block"},
		{"an RSA 2048 CA", testpki.NewCAWith(t, "RSA 2048 CA", testpki.Options{RSA: true}).PEM, ""},
		{"an RSA 1024 CA", rsa1024.PEM, "has an RSA key of 1024 bits, fewer than 2048"},
		{"an RSA 1024 CA after a good one", append(append([]byte{}, ca.PEM...), rsa1024.PEM...), `certificate 2: certificate "CN=RSA 1024 CA`},
		{"a P-224 CA", p224.PEM, "has an ECDSA key on P-224"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := loadTLS(t, tc.siteCA, ca.PEM, nil)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got.Dicom.TLS.ClientCaPEM != string(tc.siteCA) || got.Dicom.TLS.ServerCaPEM != string(ca.PEM) {
					t.Error("CA PEM not loaded")
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "dicom.tls.clientCaFile") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want %q", err, tc.want)
			}
		})
	}
	// The server CA, which the sites trust for the SCP's certificate, by
	// the same rule.
	t.Run("an RSA 1024 server CA", func(t *testing.T) {
		if _, err := loadTLS(t, ca.PEM, rsa1024.PEM, nil); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "dicom.tls.serverCaFile") ||
			!strings.Contains(err.Error(), "RSA key of 1024 bits") {
			t.Fatalf("Load = %v", err)
		}
	})
	dir := t.TempDir()
	c := valid()
	withTLS(c)
	if err := os.WriteFile(filepath.Join(dir, "test.json"), marshal(t, c), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, "test"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing CA files: %v", err)
	}

	// The client CRL: signed by a client CA and fresh.
	for name, tc := range map[string]struct {
		crl  []byte
		want string
	}{
		"fresh":        {ca.CRL(t, time.Now().Add(7*24*time.Hour), leaf), ""},
		"stale":        {ca.CRL(t, time.Now().Add(-time.Hour), leaf), "past its next update"},
		"another CA's": {short.CRL(t, time.Now().Add(time.Hour)), "not signed by any of the given CA certificates"},
		// Accepted before: crypto/x509 verifies a SHA-1 signature.
		"signed with SHA-1": {ca.CRLSignedWith(t, x509.ECDSAWithSHA1, time.Now().Add(7*24*time.Hour), leaf), "is signed with ECDSA-SHA1"},
	} {
		t.Run("CRL "+name, func(t *testing.T) {
			got, err := loadTLS(t, ca.PEM, ca.PEM, tc.crl)
			if tc.want == "" {
				if err != nil || got.Dicom.TLS.ClientCrlPEM != string(tc.crl) {
					t.Fatalf("Load = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "dicom.tls.clientCrlFile") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestCompleteSecretArn: the one rule of a complete secret ARN (dicom.tls.serverCertificateSecretArn and
// sites[].pacs.tls.clientSecretArn): the six random characters Secrets Manager appends must be there, a name that
// ends in a hyphen and six characters is taken as complete (as Secrets Manager takes it: a partial ARN of a name ending
// so cannot be told from one, and a genuine suffix may be six lower-case letters), and the partition is the Region's.
func TestCompleteSecretArn(t *testing.T) {
	const notComplete = "is not a complete Secrets Manager secret ARN"
	for _, tc := range []struct {
		name, region, arn string
		want              string // "" valid
	}{
		{"complete", "eu-west-1", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-ingest/prod/pacs-client-Ab12Cd", ""},
		{"complete, suffix of letters", "eu-west-1", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pacs-tls-xYzAbC", ""},
		{"complete, suffix of digits and lower case", "eu-west-1", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pacs-tls-a1b2c3", ""},
		{"complete, a name of one word", "eu-west-1", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pacs-Xy12Zw", ""},
		{"complete, name ending in a hyphen and six", "eu-west-1", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-ingest/pacs-client-Q9w8E7", ""},
		{"complete, GovCloud", "us-gov-west-1", "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:dicom-ingest/pacs-Ab12Cd", ""},
		{"complete, China", "cn-north-1", "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:dicom-ingest/pacs-Ab12Cd", ""},
		{"partial, no hyphen", "eu-west-1", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pacstls", notComplete},
		{"partial, short last part", "eu-west-1", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-ingest/pacs-cert", notComplete},
		{"a suffix of lower-case letters (a partial ARN cannot be told from it)", "eu-west-1", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-ingest/prod/pacs-client", ""},
		{"a suffix of digits", "eu-west-1", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-ingest/pacs-202612", ""},
		{"suffix of seven", "eu-west-1", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:pacs-Ab12Cd3", notComplete},
		{"another partition than the Region's", "eu-west-1", "arn:aws-cn:secretsmanager:eu-west-1:123456789012:secret:pacs-Ab12Cd", notComplete},
		{"no such partition", "eu-west-1", "arn:awsx:secretsmanager:eu-west-1:123456789012:secret:pacs-Ab12Cd", notComplete},
		{"another service", "eu-west-1", "arn:aws:ssm:eu-west-1:123456789012:parameter/pacs-Ab12Cd", notComplete},
		{"another Region", "eu-west-1", "arn:aws:secretsmanager:eu-central-1:123456789012:secret:pacs-Ab12Cd", "the secret is in 123456789012/eu-central-1"},
		{"another account", "eu-west-1", "arn:aws:secretsmanager:eu-west-1:210987654321:secret:pacs-Ab12Cd", "the secret is in 210987654321/eu-west-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, field := range []string{"dicom.tls.serverCertificateSecretArn", "sites[1].pacs.tls.clientSecretArn"} {
				c := valid()
				c.Region, c.AvailabilityZones = tc.region, []string{tc.region + "a", tc.region + "b"}
				inRegion := strings.NewReplacer("arn:aws:", "arn:"+Partition(tc.region)+":", ":eu-west-1:", ":"+tc.region+":").Replace
				withTLS(c)
				withPacsTLS(c, 1, inRegion(testClientSecretArn))
				c.Dicom.TLS.ServerCertificateSecretArn = inRegion(testSecretArn)
				if strings.HasPrefix(field, "dicom.") {
					c.Dicom.TLS.ServerCertificateSecretArn = tc.arn
				} else {
					c.Sites[1].Pacs.TLS.ClientSecretArn = tc.arn
				}
				_, err := Parse(marshal(t, c))
				var got []string
				if err != nil {
					for _, line := range strings.Split(err.Error(), "\n") {
						if strings.Contains(line, "SecretArn") {
							got = append(got, line)
						}
					}
				}
				switch {
				case tc.want == "" && len(got) > 0:
					t.Errorf("%s %s: %v, want it taken", field, tc.arn, got)
				case tc.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], field+": ") || !strings.Contains(got[0], tc.want)):
					t.Errorf("%s %s: %v, want one problem of %s saying %q", field, tc.arn, got, field, tc.want)
				}
			}
		})
	}
}
