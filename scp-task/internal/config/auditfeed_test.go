package config

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed/auditfeedtest"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

func TestAuditFeedSettings(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	c, err := Load([]string{"--audit-syslog", "tls://siem.example", "--audit-syslog-ca", pki.CA,
		"--audit-syslog-cert", pki.ClientCert, "--audit-syslog-key", pki.ClientKey}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.AuditSyslogAddr != "siem.example:6514" || c.AuditTLS == nil || c.AuditTLS.ServerName != "siem.example" ||
		len(c.AuditTLS.Certificates) != 1 || c.AuditSpool != "./data/audit-spool" || c.AuditSpoolMax != 100000 {
		t.Errorf("config = %+v", c)
	}
	c, err = Load(nil, env(map[string]string{"SCP_AUDIT_SYSLOG": "tls://10.0.0.5:7000", "SCP_AUDIT_SYSLOG_CA": pki.CA}), io.Discard)
	if err != nil || c.AuditSyslogAddr != "10.0.0.5:7000" || len(c.AuditTLS.Certificates) != 0 {
		t.Errorf("from the environment: %+v, %v", c, err)
	}
	if _, err := Load(nil, env(map[string]string{"SCP_AUDIT_SYSLOG": "tls://x", "SCP_AUDIT_SYSLOG_CA": pki.ClientKey}), io.Discard); err == nil ||
		!strings.Contains(err.Error(), "SCP_AUDIT_SYSLOG_CA (or --audit-syslog-ca) "+pki.ClientKey+": auditfeed: the collector CA: ") {
		t.Errorf("a CA of the environment that is no CA: %v, want its refusal naming the variable and the flag", err)
	}
	if c, err := Load(nil, env(nil), io.Discard); err != nil || c.AuditTLS != nil || c.AuditSyslog != "" {
		t.Errorf("off by default: %+v, %v", c, err)
	}

	dir := t.TempDir()
	missing := filepath.Join(dir, "nope.pem")
	// A client certificate of a weak key (tlstrust.CheckKey's rule, as every certificate TLS relies on).
	weak := testpki.NewCA(t, "collector CA").Client(t, testpki.Options{CommonName: "feeder", RSA: true, RSABits: 1024}).WriteFiles(t, dir, "weak")
	junkCA, weakCA, emptyCA := filepath.Join(dir, "junk-ca.pem"), filepath.Join(dir, "weak-ca.pem"), filepath.Join(dir, "empty-ca.pem")
	testpki.WriteFile(t, junkCA, append(auditfeedtest.Read(t, pki.CA), "# the old CA, removed\n"...))
	testpki.WriteFile(t, weakCA, testpki.NewCAWith(t, "weak collector CA", testpki.Options{RSA: true, RSABits: 1024}).PEM)
	testpki.WriteFile(t, emptyCA, nil)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"udp collector", []string{"--audit-syslog", "udp://x:514", "--audit-syslog-ca", pki.CA}, "--audit-syslog: auditfeed: collector"},
		{"no CA", []string{"--audit-syslog", "tls://x"}, "--audit-syslog-ca: required"},
		{"CA file missing", []string{"--audit-syslog", "tls://x", "--audit-syslog-ca", missing}, "--audit-syslog-ca: open"},
		// The collector CA is read as every CA bundle (tlstrust.ParseCAs), its refusal naming the flag and the
		// variable: AppendCertsFromPEM skipped junk and took a CA of a weak key.
		{"CA not a certificate", []string{"--audit-syslog", "tls://x", "--audit-syslog-ca", pki.ClientKey},
			"--audit-syslog-ca (or SCP_AUDIT_SYSLOG_CA) " + pki.ClientKey + `: auditfeed: the collector CA: a "PRIVATE KEY" block where "CERTIFICATE" blocks belong`},
		{"CA with junk", []string{"--audit-syslog", "tls://x", "--audit-syslog-ca", junkCA},
			"--audit-syslog-ca (or SCP_AUDIT_SYSLOG_CA) " + junkCA + ": auditfeed: the collector CA: text after the last PEM block is not PEM"},
		{"CA of a weak RSA 1024 key", []string{"--audit-syslog", "tls://x", "--audit-syslog-ca", weakCA},
			"--audit-syslog-ca (or SCP_AUDIT_SYSLOG_CA) " + weakCA + ": auditfeed: the collector CA: certificate 1: certificate \"CN=weak collector CA"},
		{"CA empty", []string{"--audit-syslog", "tls://x", "--audit-syslog-ca", emptyCA},
			"--audit-syslog-ca (or SCP_AUDIT_SYSLOG_CA) " + emptyCA + ": auditfeed: the collector CA: no certificate in it"},
		{"cert without key", []string{"--audit-syslog", "tls://x", "--audit-syslog-ca", pki.CA, "--audit-syslog-cert", pki.ClientCert}, "go together"},
		{"key of another cert", []string{"--audit-syslog", "tls://x", "--audit-syslog-ca", pki.CA, "--audit-syslog-cert", pki.ClientCert, "--audit-syslog-key", pki.ServerKey}, "client certificate"},
		{"client certificate of a weak key", []string{"--audit-syslog", "tls://x", "--audit-syslog-ca", pki.CA, "--audit-syslog-cert", weak.Cert, "--audit-syslog-key", weak.Key},
			"--audit-syslog-cert/--audit-syslog-key: auditfeed: client certificate: certificate \"CN=feeder"},
		{"CA without collector", []string{"--audit-syslog-ca", pki.CA}, "need --audit-syslog"},
		{"bad spool max", []string{"--audit-spool-max", "lots"}, "--audit-spool-max"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.args, env(nil), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
