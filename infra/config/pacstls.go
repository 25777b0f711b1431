package config

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
)

// PacsTLS has the commitment function report to a site's PACS over DICOM
// TLS (PS3.15 Annex B, BCP 195), a PACS that takes nothing else: the CA its
// server certificate chains to (the certificate must name pacs.host, an
// IPv4 address, as an IP SAN, or ServerName as a DNS name) and our client
// certificate for this site.
type PacsTLS struct {
	// ServerName, if set, is the DNS name the PACS's certificate names
	// (many name no address): the function still dials pacs.host, and checks
	// the certificate against this name (sent as SNI too), not the address.
	ServerName string `json:"serverName,omitempty"`
	// CaFile is a PEM bundle of the CAs the PACS's server certificate must
	// chain to, relative to the config directory (certificates only,
	// public), as dicom.tls.clientCaFile: each of a key BCP 195 allows and
	// valid for 30 more days.
	CaFile string `json:"caFile"`
	// ClientSecretArn is the complete ARN (with its six-character suffix, so
	// that the function's grant names exactly it) of a Secrets Manager
	// secret in this environment's account and Region whose JSON holds
	// "certificate" (our client certificate chain, PEM, extended key usage
	// clientAuth) and "privateKey" (its key, PEM): dicom.tls's form.
	ClientSecretArn string `json:"clientSecretArn"`
	// SecretKmsKeyArn is the KMS key the secret is encrypted with, when it
	// is a customer-managed key (the function may decrypt with it through
	// Secrets Manager only).
	SecretKmsKeyArn string `json:"secretKmsKeyArn,omitempty"`

	// CaPEM is CaFile's content, read by Load.
	CaPEM string `json:"-"`
}

// commitmentEnvBudget bounds what the commitment function's own variables
// (CommitmentEnvironment, names and values) take of its environment: Lambda
// allows 4 KB for all its variables together, and those every pipeline
// function has (bucket, tables, bus, log-name key secret, environment name)
// take up to about 1 KB.
const commitmentEnvBudget = 3072

// CommitmentEnvironment is the commitment function's own environment, every
// variable the stack gives it besides those of every pipeline function: the
// one map the stack deploys and the budget check counts (checkCommitmentEnv),
// so that a variable added here is counted. COMMITMENT_TLS only with a tls://
// site.
func (c *Config) CommitmentEnvironment() map[string]string {
	env := map[string]string{
		"AE_TITLE":                         c.Dicom.AETitle,
		"COMMITMENT_PEERS":                 c.CommitmentPeers(),
		"COMMITMENT_WAIT_SECONDS":          strconv.Itoa(c.Commitment.WaitSeconds),
		"COMMITMENT_REPORT_MINUTES":        strconv.Itoa(c.Commitment.ReportMinutes),
		"COMMITMENT_QUARANTINED_COMMITTED": c.QuarantinedCommitted(),
	}
	if v := c.CommitmentTLS(); v != "" {
		// Each tls:// site's CA (public) and its client secret's ARN, never a secret's value.
		env["COMMITMENT_TLS"] = v
	}
	return env
}

// EnvironmentSize is what env takes of a Lambda function's 4 KB: its names
// and values.
func EnvironmentSize(env map[string]string) int {
	n := 0
	for k, v := range env {
		n += len(k) + len(v)
	}
	return n
}

// checkCommitmentEnv refuses a config whose commitment function's own
// variables (CommitmentEnvironment) would not fit its budget, naming each
// by its size, the largest first, and what shrinks it: at synth, not when
// Lambda refuses the deployment. Run once the CA files are read.
func (c *Config) checkCommitmentEnv(p *problems) {
	env := c.CommitmentEnvironment()
	n := EnvironmentSize(env)
	if n <= commitmentEnvBudget {
		return
	}
	size := func(k string) int { return len(k) + len(env[k]) }
	var sizes []string
	for _, k := range slices.SortedFunc(maps.Keys(env), func(a, b string) int { return cmp.Or(size(b)-size(a), strings.Compare(a, b)) }) {
		sizes = append(sizes, fmt.Sprintf("%s %d", k, size(k)))
	}
	p.addf("sites", "the commitment function's environment takes %d bytes (%s), more than the %d bytes it has (Lambda allows 4 KB for all its variables): "+
		"COMMITMENT_PEERS grows with every site with a pacs (shorter AE titles and pacs.tls serverNames), COMMITMENT_QUARANTINED_COMMITTED with every site with quarantinedCommitted, "+
		"COMMITMENT_TLS with every pacs.tls caFile (smaller CA bundles: an ECDSA CA, only the CA the PACS's certificate chains to, or one CA for several sites)",
		n, strings.Join(sizes, ", "), commitmentEnvBudget)
}

// validatePacsTLS checks a site's pacs.tls (its CA file is read by Load).
func (c *Config) validatePacsTLS(p *problems, f string, t *PacsTLS) {
	if t.CaFile == "" {
		p.addf(f+".caFile", "is required: the CA bundle the PACS's server certificate chains to")
	}
	if t.ServerName != "" {
		if err := commitreport.CheckServerName(t.ServerName); err != nil {
			p.addf(f+".serverName", "%v", err)
		}
	}
	c.checkCompleteSecretArn(p, f+".clientSecretArn", t.ClientSecretArn, "the commitment function reads it through the Region's Secrets Manager endpoint")
	if t.SecretKmsKeyArn != "" {
		if m := kmsKeyArnRE.FindStringSubmatch(t.SecretKmsKeyArn); m == nil || m[1] != c.Region {
			p.addf(f+".secretKmsKeyArn", "%q is not a KMS key ARN in %s", t.SecretKmsKeyArn, c.Region)
		}
	}
}

// CommitmentTLS renders the CA and client secret of each site whose PACS
// takes its results over DICOM TLS (COMMITMENT_TLS, commitreport.TLSPeers:
// no secret value, only the secret's ARN), "" when there is none.
func (c *Config) CommitmentTLS() string {
	peers := commitreport.TLSPeers{}
	for _, s := range c.Sites {
		if s.Pacs != nil && s.Pacs.TLS != nil {
			peers[s.CallingAETitle] = commitreport.TLSPeer{CA: strings.TrimSpace(s.Pacs.TLS.CaPEM) + "\n", ClientSecretARN: s.Pacs.TLS.ClientSecretArn}
		}
	}
	if len(peers) == 0 {
		return ""
	}
	b, err := json.Marshal(peers)
	if err != nil {
		panic(fmt.Sprintf("config: CommitmentTLS: %v", err)) // strings only
	}
	return string(b)
}

// loadPacsTLS reads each sites[].pacs.tls.caFile (read relative to dir) and
// checks it as dicom.tls's CAs are (checkCommitmentEnv then checks that the
// commitment function's environment holds them).
func (c *Config) loadPacsTLS(p *problems, now time.Time, read func(field, name string) []byte) {
	for i, s := range c.Sites {
		if s.Pacs == nil || s.Pacs.TLS == nil {
			continue
		}
		t := s.Pacs.TLS
		field := fmt.Sprintf("sites[%d].pacs.tls.caFile", i)
		b := read(field, t.CaFile)
		if b == nil {
			continue
		}
		t.CaPEM = string(b)
		if _, err := checkCABundle(b, now); err != nil {
			p.addf(field, "%s: %v", t.CaFile, err)
		}
	}
}
