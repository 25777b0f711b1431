package config

import (
	"crypto/x509"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// TestCommitmentTLS: tls:// commitment peers need the CA their certificates chain to; our client certificate is
// --commitment-tls-cert/-key, else the TLS listener's when its extended key usage allows clientAuth (a server
// certificate alone would be refused by the PACS in the handshake: an error now, naming the flags to give); without
// --tls-cert, none. Every mistake names its flag, or its variable when that set it.
func TestCommitmentTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "Site CA")
	testpki.WriteFile(t, filepath.Join(dir, "ca.pem"), ca.PEM)
	client := ca.Client(t, testpki.Options{CommonName: "ingest"}).WriteFiles(t, dir, "client")
	serverOnly := ca.Server(t, testpki.Options{}).WriteFiles(t, dir, "server")
	both := ca.Server(t, testpki.Options{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}).WriteFiles(t, dir, "both")
	expiredServer := ca.Server(t, testpki.Options{NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter: time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)}).WriteFiles(t, dir, "expired-server")
	caFile := filepath.Join(dir, "ca.pem")
	peers := []string{"--commitment-peers", "PACS=tls://127.0.0.1:2762,CT=10.0.0.2:104"}
	listener := func(f testpki.Files) []string {
		return []string{"--tls-listen", ":2762", "--tls-cert", f.Cert, "--tls-key", f.Key}
	}
	for _, tt := range []struct {
		name       string
		args       []string
		env        map[string]string
		want       string // error; "" loads
		clientCert string // the subject CN presented; "" none
	}{
		{"own client certificate", slices.Concat(peers, []string{"--commitment-tls-ca", caFile, "--commitment-tls-cert", client.Cert, "--commitment-tls-key", client.Key}), nil, "", "ingest"},
		{"listener's certificate reused", slices.Concat(peers, listener(both), []string{"--commitment-tls-ca", caFile}), nil, "", "localhost"},
		{"no client certificate", slices.Concat(peers, []string{"--commitment-tls-ca", caFile}), nil, "", ""},
		{"listener's server-only certificate", slices.Concat(peers, listener(serverOnly), []string{"--commitment-tls-ca", caFile}), nil,
			`--tls-cert (or SCP_TLS_CERT): not reused as the client certificate of the tls:// entries of --commitment-peers (or SCP_COMMITMENT_PEERS): certificate "CN=localhost`, ""},
		// Of a secondary duty: not refused now (TestClientCertificateNotValidAtStart); one that never becomes valid is.
		{"expired server-only certificate", slices.Concat(peers, []string{"--commitment-tls-ca", caFile, "--commitment-tls-cert", expiredServer.Cert, "--commitment-tls-key", expiredServer.Key}), nil,
			"its extended key usage does not allow TLS client authentication", ""},
		{"no CA", slices.Concat(peers, []string{"--local"}), nil, "--commitment-tls-ca: required with the tls:// entries of --commitment-peers in local mode", ""},
		{"no CA, from the environment", []string{"--local"}, map[string]string{"SCP_COMMITMENT_PEERS": "PACS=tls://h:2762"},
			"--commitment-tls-ca: required with the tls:// entries of SCP_COMMITMENT_PEERS in local mode", ""},
		{"certificate without key", slices.Concat(peers, []string{"--commitment-tls-ca", caFile, "--commitment-tls-cert", client.Cert}), nil,
			"--commitment-tls-cert and --commitment-tls-key go together", ""},
		{"CA not PEM", slices.Concat(peers, []string{"--commitment-tls-ca", client.Key}), nil, "--commitment-tls-ca (or SCP_COMMITMENT_TLS_CA) " + client.Key + `: a "PRIVATE KEY" block where "CERTIFICATE" blocks belong`, ""},
		{"CA missing", nil, map[string]string{"SCP_COMMITMENT_PEERS": "PACS=tls://h:2762", "SCP_COMMITMENT_TLS_CA": filepath.Join(dir, "none.pem")},
			"SCP_COMMITMENT_TLS_CA (or --commitment-tls-ca): open", ""},
		{"TLS settings without a tls:// peer", []string{"--commitment-peers", "CT=10.0.0.2:104", "--commitment-tls-ca", caFile}, nil,
			"--commitment-tls-ca, --commitment-tls-cert and --commitment-tls-key are for tls:// entries of --commitment-peers, and it has none", ""},
		{"unknown scheme", []string{"--commitment-peers", "PACS=dicoms://h:2762"}, nil, `--commitment-peers: commitreport: entry 1 "PACS=dicoms://h:2762": "dicoms://" is not a scheme here`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, env(tt.env), io.Discard)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Load error = %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := c.CommitmentTLS()
			if err != nil {
				t.Fatal(err)
			}
			var cn string
			if len(cfg.Certificates) == 1 {
				cn = cfg.Certificates[0].Leaf.Subject.CommonName
			}
			if cn != tt.clientCert || cfg.RootCAs == nil || !cfg.RootCAs.Equal(ca.Pool()) {
				t.Errorf("client certificate %q, want %q; roots %v", cn, tt.clientCert, cfg.RootCAs)
			}
		})
	}
}

// TestCommitmentTLSOutsideLocalMode: the SCP in AWS only takes the requests of the AE titles listed (the commitment
// function reports, with each site's CA and client certificate): its tls:// entries, as the stack renders them from
// sites[].pacs.tls, need no --commitment-tls-* of its own, and it still takes their requests.
func TestCommitmentTLSOutsideLocalMode(t *testing.T) {
	c, err := Load(nil, env(map[string]string{"SCP_COMMITMENT_PEERS": "PACS=tls://10.1.2.3:2762,CT=10.0.0.2:104"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.CommitmentTLS != nil || !c.CommitmentPeers["PACS"].TLS {
		t.Errorf("CommitmentTLS set %v, peers %v: want none, PACS a tls:// peer", c.CommitmentTLS != nil, c.CommitmentPeers)
	}
}

// TestClientCertificateNotValidAtStart: a client certificate of a secondary duty (Storage Commitment reports over
// TLS, the audit feed) that is expired or not yet valid does not stop the start, which C-STORE does not need it for:
// Load takes it and lists it (CertificatesNotValid) by its flag and variable and its dates, for scp-task to warn of;
// the deliveries that present it fail then (CommitmentTLS's refusal, ClientConfig's at the handshake).
func TestClientCertificateNotValidAtStart(t *testing.T) {
	dir := t.TempDir()
	caFile, expired, notYet := testpki.OutOfDateClients(t, dir)
	peers := []string{"--commitment-peers", "PACS=tls://127.0.0.1:2762"}
	for _, tt := range []struct {
		name    string
		args    []string
		env     map[string]string
		setting string
		dates   string
	}{
		{"expired commitment certificate", slices.Concat(peers, []string{"--local", "--commitment-tls-ca", caFile, "--commitment-tls-cert", expired.Cert, "--commitment-tls-key", expired.Key}), nil,
			"--commitment-tls-cert (or SCP_COMMITMENT_TLS_CERT)", "is valid from 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z, not valid now"},
		{"commitment certificate not yet valid", slices.Concat(peers, []string{"--local", "--commitment-tls-ca", caFile}),
			map[string]string{"SCP_COMMITMENT_TLS_CERT": notYet.Cert, "SCP_COMMITMENT_TLS_KEY": notYet.Key},
			"SCP_COMMITMENT_TLS_CERT (or --commitment-tls-cert)", `certificate "CN=early,O=dicom-ingest tests"`},
		{"expired audit feed certificate", []string{"--audit-syslog", "tls://siem.example", "--audit-syslog-ca", caFile, "--audit-syslog-cert", expired.Cert, "--audit-syslog-key", expired.Key}, nil,
			"--audit-syslog-cert (or SCP_AUDIT_SYSLOG_CERT)", "is valid from 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z, not valid now"},
		{"audit feed certificate not yet valid", nil, map[string]string{"SCP_AUDIT_SYSLOG": "tls://siem.example", "SCP_AUDIT_SYSLOG_CA": caFile,
			"SCP_AUDIT_SYSLOG_CERT": notYet.Cert, "SCP_AUDIT_SYSLOG_KEY": notYet.Key},
			"SCP_AUDIT_SYSLOG_CERT (or --audit-syslog-cert)", `certificate "CN=early,O=dicom-ingest tests"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, env(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("Load: %v, want a start with a warning", err)
			}
			if len(c.CertificatesNotValid) != 1 || c.CertificatesNotValid[0].Setting != tt.setting ||
				!errors.Is(c.CertificatesNotValid[0].Err, tlstrust.ErrNotValidNow) || !strings.Contains(c.CertificatesNotValid[0].Err.Error(), tt.dates) {
				t.Fatalf("CertificatesNotValid = %+v, want %s with %q", c.CertificatesNotValid, tt.setting, tt.dates)
			}
			if c.CommitmentTLS != nil {
				// The refusal, naming the flag, with the configuration: the Reporter logs the one and still tries a
				// PACS with the other (which asks for no client certificate, or fails the handshake of one that does).
				cfg, err := c.CommitmentTLS()
				if !errors.Is(err, tlstrust.ErrNotValidNow) || !strings.Contains(err.Error(), tt.setting) {
					t.Errorf("CommitmentTLS: %v, want the certificate refused, naming %s, at each association while not valid", err, tt.setting)
				}
				if cfg == nil || len(cfg.Certificates) != 1 || cfg.GetClientCertificate == nil {
					t.Errorf("CommitmentTLS = %+v, want the configuration with our certificate, checked at each handshake", cfg)
				}
			}
			if c.AuditSyslog != "" && (c.AuditTLS == nil || len(c.AuditTLS.Certificates) != 1 || c.AuditTLS.GetClientCertificate == nil) {
				t.Errorf("AuditTLS %+v, want our certificate, checked at each handshake", c.AuditTLS)
			}
		})
	}
}
