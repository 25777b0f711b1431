package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
)

// PacsTLS has the commitment function report to a site's PACS over DICOM
// TLS (PS3.15 Annex B, BCP 195), a PACS that takes nothing else: the CA its
// server certificate chains to (the certificate must name pacs.host, an
// IPv4 address, as an IP SAN) and our client certificate for this site.
type PacsTLS struct {
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

// commitmentEnvBudget bounds what COMMITMENT_PEERS and COMMITMENT_TLS take of
// the commitment function's environment: Lambda allows 4 KB for all its
// variables together, and the others (bucket, tables, bus, secret ARNs)
// take up to about 1 KB.
const commitmentEnvBudget = 3072

// validatePacsTLS checks a site's pacs.tls (its CA file is read by Load).
func (c *Config) validatePacsTLS(p *problems, f string, t *PacsTLS) {
	if t.CaFile == "" {
		p.addf(f+".caFile", "is required: the CA bundle the PACS's server certificate chains to")
	}
	if m := completeSecretArnRE.FindStringSubmatch(t.ClientSecretArn); m == nil {
		p.addf(f+".clientSecretArn", "%q is not a complete Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX, suffix included)", t.ClientSecretArn)
	} else if m[1] != c.Region || m[2] != c.Account {
		p.addf(f+".clientSecretArn", "the secret is in %s/%s, not in this environment's %s/%s (the commitment function reads it through the Region's Secrets Manager endpoint)", m[2], m[1], c.Account, c.Region)
	}
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
// checks it as dicom.tls's CAs are, and that the commitment function's
// environment holds them.
func (c *Config) loadPacsTLS(p *problems, now time.Time, read func(field, name string) []byte) {
	var fields []string
	for i, s := range c.Sites {
		if s.Pacs == nil || s.Pacs.TLS == nil {
			continue
		}
		t := s.Pacs.TLS
		field := fmt.Sprintf("sites[%d].pacs.tls.caFile", i)
		fields = append(fields, field)
		b := read(field, t.CaFile)
		if b == nil {
			continue
		}
		t.CaPEM = string(b)
		if _, err := checkCABundle(b, now); err != nil {
			p.addf(field, "%s: %v", t.CaFile, err)
		}
	}
	if n := len(c.CommitmentPeers()) + len(c.CommitmentTLS()); n > commitmentEnvBudget {
		p.addf(strings.Join(fields, ", "),
			"the CAs take %d bytes of the commitment function's environment, more than the %d it has for them (Lambda allows 4 KB for all its variables): use smaller CA bundles (an ECDSA CA, only the CA the PACS's certificate chains to), or one CA for several sites", n, commitmentEnvBudget)
	}
}
