package config

import (
	"errors"
	"strings"
	"testing"
)

const caArn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:siem-ca-AbCdEf"

func TestAuditSyslog(t *testing.T) {
	cases := []struct {
		name   string
		syslog *AuditSyslog
		want   []string // substrings of the error; nil means valid
		check  func(t *testing.T, s *AuditSyslog)
	}{
		{"off", nil, nil, nil},
		{"address host at a site, defaults", &AuditSyslog{Host: "192.168.1.20", CaSecretArn: caArn}, nil, func(t *testing.T, s *AuditSyslog) {
			if s.Port != 6514 || s.Address != "192.168.1.20" {
				t.Errorf("defaults: %+v", s)
			}
		}},
		{"named host with its address, in the VPC", &AuditSyslog{Host: "siem.hospital.example", Address: "10.40.1.9", Port: 7514, CaSecretArn: caArn,
			ClientCertificateSecretArn: caArn}, nil, nil},
		{"named host without address", &AuditSyslog{Host: "siem.hospital.example", CaSecretArn: caArn},
			[]string{"audit.syslog.address: required when host is a DNS name"}, nil},
		{"unreachable address", &AuditSyslog{Host: "172.20.0.5", CaSecretArn: caArn},
			[]string{"audit.syslog.address: 172.20.0.5 is in no site's CIDRs nor in the VPC CIDR 10.40.0.0/20"}, nil},
		{"address and host disagree", &AuditSyslog{Host: "192.168.1.20", Address: "192.168.1.21", CaSecretArn: caArn},
			[]string{"audit.syslog.address: 192.168.1.21 differs from host 192.168.1.20"}, nil},
		{"everything wrong", &AuditSyslog{Host: "not a host!", Port: 70000, Address: "10.40.1.0/24", CaSecretArn: "arn:aws:acm:x", ClientCertificateSecretArn: "secret"},
			[]string{
				`audit.syslog.host: "not a host!" is neither a DNS name nor an IPv4 address`,
				"audit.syslog.port: 70000 is not a TCP port",
				`audit.syslog.address: "10.40.1.0/24" is not an IPv4 address`,
				`audit.syslog.caSecretArn: "arn:aws:acm:x" is not a complete Secrets Manager secret ARN`,
				`audit.syslog.clientCertificateSecretArn: "secret" is not a complete Secrets Manager secret ARN`,
			}, nil},
		// The rule of every secret ARN here (checkCompleteSecretArn): a partial ARN, without the suffix Secrets
		// Manager adds, names no secret the function's grant covers; a secret of another account or Region is
		// not read through this Region's endpoint.
		{"partial secret ARNs", &AuditSyslog{Host: "192.168.1.20", CaSecretArn: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:siem-ca",
			ClientCertificateSecretArn: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-ingest/siem-client-cert"},
			[]string{
				`audit.syslog.caSecretArn: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:siem-ca" is not a complete Secrets Manager secret ARN (arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX, suffix included)`,
				`audit.syslog.clientCertificateSecretArn: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:dicom-ingest/siem-client-cert" is not a complete Secrets Manager secret ARN`,
			}, nil},
		{"secrets of another account and Region", &AuditSyslog{Host: "192.168.1.20", CaSecretArn: "arn:aws:secretsmanager:eu-west-1:210987654321:secret:siem-ca-AbCdEf",
			ClientCertificateSecretArn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:siem-client-AbCdEf"},
			[]string{
				"audit.syslog.caSecretArn: the secret is in 210987654321/eu-west-1, not in this environment's 123456789012/eu-west-1 (the audit feed function reads it",
				"audit.syslog.clientCertificateSecretArn: the secret is in 123456789012/us-east-1, not in this environment's 123456789012/eu-west-1",
			}, nil},
		{"customer-managed key of the secrets", &AuditSyslog{Host: "192.168.1.20", CaSecretArn: caArn,
			SecretKmsKeyArn: "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"}, nil, nil},
		{"key in another region", &AuditSyslog{Host: "192.168.1.20", CaSecretArn: caArn,
			SecretKmsKeyArn: "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
			[]string{`audit.syslog.secretKmsKeyArn: "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab" is not a KMS key ARN in eu-west-1`}, nil},
		{"key alias", &AuditSyslog{Host: "192.168.1.20", CaSecretArn: caArn, SecretKmsKeyArn: "alias/siem"},
			[]string{`audit.syslog.secretKmsKeyArn: "alias/siem" is not a KMS key ARN in eu-west-1`}, nil},
		{"ipv6 host", &AuditSyslog{Host: "2001:db8::1", Address: "192.168.1.20", CaSecretArn: caArn}, []string{"audit.syslog.host: 2001:db8::1 is not IPv4"}, nil},
		{"no host", &AuditSyslog{CaSecretArn: caArn}, []string{"audit.syslog.host: the collector's DNS name or IPv4 address is required"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			c.Audit.Syslog = tc.syslog
			got, err := Parse(marshal(t, c))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if tc.check != nil {
					tc.check(t, got.Audit.Syslog)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse error = %v, want ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q; got:\n%v", w, err)
				}
			}
		})
	}
}
