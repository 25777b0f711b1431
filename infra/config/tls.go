package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

// DefaultTLSPort is the NLB's DICOM-over-TLS port when dicom.tls.port is
// not set: the port registered for DICOM over TLS (PS3.15 Annex B).
const DefaultTLSPort = 2762

// DicomTLS is DICOM over TLS, terminated in the tasks (not at the NLB, which
// forwards TCP), so a site's client certificate reaches the SCP and binds
// to its calling AE title (sites[].certificateName).
type DicomTLS struct {
	// Port of the NLB's TLS listener (default 2762).
	Port int `json:"port,omitempty"`
	// ServerCertificateSecretArn is the complete ARN (with its six-character
	// suffix, so the task's grant names exactly it) of a Secrets Manager
	// secret whose JSON holds "certificate" (the server certificate chain,
	// PEM) and "privateKey" (its key, PEM).
	ServerCertificateSecretArn string `json:"serverCertificateSecretArn"`
	// SecretKmsKeyArn is the KMS key the secret is encrypted with, when it is
	// a customer-managed key (the task must be allowed to decrypt with it).
	SecretKmsKeyArn string `json:"secretKmsKeyArn,omitempty"`
	// ClientCaFile is a PEM bundle of the CAs site certificates must chain
	// to, relative to the config directory (certificates only, public),
	// each of a key BCP 195 allows (tlstrust.CheckKey: RSA of 2048 bits or
	// more, ECDSA on P-256 or larger, Ed25519).
	ClientCaFile string `json:"clientCaFile"`
	// ServerCaFile is the PEM of the CA that issued the server certificate,
	// relative to the config directory: the sites trust it, and the
	// onboarding kit hands it to them.
	ServerCaFile string `json:"serverCaFile"`
	// ClientCrlFile, if set, holds the client CAs' certificate revocation
	// lists (PEM), relative to the config directory: a site certificate they
	// list fails the handshake. Each must be signed by a CA of ClientCaFile,
	// with a hash stronger than SHA-1 (not SHA-1 or MD5), and not be past
	// its next update.
	ClientCrlFile string `json:"clientCrlFile,omitempty"`
	// PlainListener keeps the plain DICOM listener on dicom.port (default
	// true); false leaves TLS as the only way in.
	PlainListener *bool `json:"plainListener,omitempty"`

	// ClientCaPEM, ServerCaPEM and ClientCrlPEM are the files' contents,
	// read by Load.
	ClientCaPEM  string `json:"-"`
	ServerCaPEM  string `json:"-"`
	ClientCrlPEM string `json:"-"`
}

// PlainListenerEnabled reports whether the plain DICOM listener runs: always
// without TLS, by default with it.
func (c *Config) PlainListenerEnabled() bool {
	t := c.Dicom.TLS
	return t == nil || t.PlainListener == nil || *t.PlainListener
}

// completeSecretArnRE is a secret ARN ending in a hyphen and six letters or digits, taken as Secrets Manager's
// suffix (checkCompleteSecretArn): its partition, Region and account.
var completeSecretArnRE = regexp.MustCompile(`^arn:(aws[a-z-]*):secretsmanager:([a-z0-9-]+):([0-9]{12}):secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$`)

// checkCompleteSecretArn is the one rule of a complete Secrets Manager secret ARN in this environment's account
// and Region (dicom.tls.serverCertificateSecretArn, sites[].pacs.tls.clientSecretArn): the suffix included,
// which an IAM grant on exactly that secret needs. Secrets Manager takes any ARN ending in a hyphen and six
// characters to have it, so a partial ARN of a name ending so cannot be told from a complete one, here or by AWS
// (AWS advises against such names): it is taken as complete, and refusing suffixes that look like words would
// refuse genuine ARNs. where says who reads the secret, for the error of another account or Region.
func (c *Config) checkCompleteSecretArn(p *problems, field, arn, where string) {
	const form = "arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX, suffix included"
	m := completeSecretArnRE.FindStringSubmatch(arn)
	switch {
	case m == nil:
		p.addf(field, "%q is not a complete Secrets Manager secret ARN (%s)", arn, form)
	case m[1] != Partition(m[2]):
		p.addf(field, "%q is not a complete Secrets Manager secret ARN (%s): partition %s is not Region %s's, %s", arn, form, m[1], m[2], Partition(m[2]))
	case m[2] != c.Region || m[3] != c.Account:
		p.addf(field, "the secret is in %s/%s, not in this environment's %s/%s (%s)", m[3], m[2], c.Account, c.Region, where)
	}
}

var kmsKeyArnRE = regexp.MustCompile(`^arn:aws[a-z-]*:kms:([a-z0-9-]+):([0-9]{12}):key/[A-Za-z0-9-]+$`)

// validateTLS checks dicom.tls and the sites' certificate names.
func (c *Config) validateTLS(p *problems) {
	t := c.Dicom.TLS
	names := map[string]string{} // lower-cased certificate name -> field
	for i, s := range c.Sites {
		if s.CertificateName == "" {
			continue
		}
		f := fmt.Sprintf("sites[%d].certificateName", i)
		if t == nil {
			p.addf(f, "%q needs dicom.tls: a certificate name binds the site's AE title to its TLS client certificate", s.CertificateName)
		}
		if err := accesscontrol.CheckCertificateName(s.CertificateName); err != nil {
			p.addf(f, "%q: %v", s.CertificateName, err)
			continue
		}
		key := strings.ToLower(s.CertificateName)
		if prev, ok := names[key]; ok {
			p.addf(f, "%q is also %s: one site's certificate would pass for the other's AE title", s.CertificateName, prev)
		}
		names[key] = f
	}
	if t == nil {
		return
	}
	if t.Port < 1 || t.Port > 65535 {
		p.addf("dicom.tls.port", "%d is not a TCP port", t.Port)
	} else if t.Port == c.Dicom.Port && c.PlainListenerEnabled() {
		p.addf("dicom.tls.port", "%d is also dicom.port, the plain listener's", t.Port)
	}
	c.checkCompleteSecretArn(p, "dicom.tls.serverCertificateSecretArn", t.ServerCertificateSecretArn, "ECS reads it at task start, in-region")
	if t.SecretKmsKeyArn != "" {
		if m := kmsKeyArnRE.FindStringSubmatch(t.SecretKmsKeyArn); m == nil || m[1] != c.Region {
			p.addf("dicom.tls.secretKmsKeyArn", "%q is not a KMS key ARN in %s", t.SecretKmsKeyArn, c.Region)
		}
	}
	if t.ClientCaFile == "" {
		p.addf("dicom.tls.clientCaFile", "is required: the CA bundle site certificates chain to")
	}
	if t.ServerCaFile == "" {
		p.addf("dicom.tls.serverCaFile", "is required: the CA the sites trust for the server certificate")
	}
}

// loadTLSFiles reads dicom.tls's CA and CRL files and sites[].pacs.tls's CA files, relative to dir, and
// checks them: CA certificates of keys BCP 195 allows, valid now and for
// the next 30 days, lists signed by a client CA (not with SHA-1 or MD5)
// and not stale: the SCP's rules (shared/tlstrust), at synth time.
func (c *Config) loadTLSFiles(dir string) error {
	var p problems
	now := time.Now()
	read := func(field, name string) []byte {
		path := name
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, name)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			p.addf(field, "%v", err)
			return nil
		}
		return b
	}
	c.loadPacsTLS(&p, now, read)
	c.checkCommitmentEnv(&p)
	if t := c.Dicom.TLS; t != nil {
		c.loadDicomTLS(&p, t, now, read)
	}
	if len(p) == 0 {
		return nil
	}
	return errors.Join(append([]error{ErrInvalid}, p...)...)
}

// loadDicomTLS reads and checks dicom.tls's files.
func (c *Config) loadDicomTLS(p *problems, t *DicomTLS, now time.Time, read func(field, name string) []byte) {
	var clientCAs []*x509.Certificate
	for _, f := range []struct {
		field, name string
		pem         *string
		cas         *[]*x509.Certificate
	}{
		{"dicom.tls.clientCaFile", t.ClientCaFile, &t.ClientCaPEM, &clientCAs},
		{"dicom.tls.serverCaFile", t.ServerCaFile, &t.ServerCaPEM, nil},
	} {
		b := read(f.field, f.name)
		if b == nil {
			continue
		}
		*f.pem = string(b)
		cas, err := checkCABundle(b, now)
		if err != nil {
			p.addf(f.field, "%s: %v", f.name, err)
		} else if f.cas != nil {
			*f.cas = cas
		}
	}
	if t.ClientCrlFile != "" && clientCAs != nil {
		if b := read("dicom.tls.clientCrlFile", t.ClientCrlFile); b != nil {
			t.ClientCrlPEM = string(b)
			_, lists, err := tlstrust.ParseCRLs(b, clientCAs)
			if err != nil {
				p.addf("dicom.tls.clientCrlFile", "%s: %v", t.ClientCrlFile, err)
			}
			for _, l := range lists {
				if l.Stale(now) {
					p.addf("dicom.tls.clientCrlFile", "%s: the list of %s is past its next update (%s): publish a fresh CRL",
						t.ClientCrlFile, l.Issuer, l.NextUpdate.UTC().Format(time.RFC3339))
				}
			}
		}
	}
}

// checkCABundle requires PEM certificates only (each of a key
// tlstrust.CheckKey passes, as tlstrust.ParseCAs reads them), each a CA,
// valid at now and for 30 days more (a CA about to expire locks every site
// out).
func checkCABundle(b []byte, now time.Time) ([]*x509.Certificate, error) {
	_, cas, err := tlstrust.ParseCAs(b)
	if err != nil {
		return nil, err
	}
	for i, cert := range cas {
		if !cert.IsCA {
			return nil, fmt.Errorf("certificate %d (%s) is not a CA certificate", i+1, cert.Subject)
		}
		if now.Before(cert.NotBefore) || now.Add(30*24*time.Hour).After(cert.NotAfter) {
			return nil, fmt.Errorf("certificate %d (%s) is valid from %s to %s: not now, or not for 30 more days", i+1, cert.Subject,
				cert.NotBefore.Format(time.DateOnly), cert.NotAfter.Format(time.DateOnly))
		}
	}
	return cas, nil
}
