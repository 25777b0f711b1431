package config

import (
	"net/netip"
	"regexp"
	"strings"
)

// Audit configures where the audit trail goes besides the audit table.
type Audit struct {
	// Syslog, if set, feeds every audit record, as DICOM audit messages
	// over syslog TLS, to the hospital's collector (an ATNA audit
	// repository or a SIEM).
	Syslog *AuditSyslog `json:"syslog,omitempty"`
}

// AuditSyslog is the syslog TLS collector the audit feed function sends to.
type AuditSyslog struct {
	// Host is the collector's DNS name or IPv4 address: what the function
	// connects to and what its certificate must name.
	Host string `json:"host"`
	// Port of the collector (default 6514, syslog over TLS).
	Port int `json:"port,omitempty"`
	// Address is the collector's IPv4 address, the one destination the
	// function's security group lets it reach. It defaults to Host when Host
	// is an address; a DNS name needs it (security groups take addresses).
	// It must be in a site's CIDRs (the collector is at the hospital, over
	// the VPN) or in the VPC.
	Address string `json:"address,omitempty"`
	// CaSecretArn names the Secrets Manager secret holding, as PEM text,
	// the CA certificate(s) the collector's certificate must chain to.
	CaSecretArn string `json:"caSecretArn"`
	// ClientCertificateSecretArn, if set, names a secret holding our client
	// certificate and its private key (PEM, in one SecretString), for a
	// collector that asks for mutual TLS.
	ClientCertificateSecretArn string `json:"clientCertificateSecretArn,omitempty"`
	// SecretKmsKeyArn is the KMS key the secrets are encrypted with, when
	// it is a customer-managed key (the function must be allowed to
	// decrypt with it, through Secrets Manager only).
	SecretKmsKeyArn string `json:"secretKmsKeyArn,omitempty"`
}

var dnsNameRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

func (a *Audit) applyDefaults(g settings) {
	s := a.Syslog
	if s == nil {
		return
	}
	if !g["audit.syslog.port"] {
		s.Port = 6514
	}
	if !g["audit.syslog.address"] {
		if ip, err := netip.ParseAddr(s.Host); err == nil && ip.Is4() {
			s.Address = s.Host
		}
	}
}

func (c *Config) validateAudit(p *problems, vpc netip.Prefix, vpcOK bool) {
	s := c.Audit.Syslog
	if s == nil {
		return
	}
	const f = "audit.syslog"
	hostIP, hostErr := netip.ParseAddr(s.Host)
	switch {
	case s.Host == "":
		p.addf(f+".host", "the collector's DNS name or IPv4 address is required")
	case hostErr == nil && !hostIP.Is4():
		p.addf(f+".host", "%s is not IPv4 (the VPC and the VPN are IPv4 only)", s.Host)
	case hostErr != nil && (len(s.Host) > 253 || !dnsNameRE.MatchString(s.Host) || !strings.ContainsAny(s.Host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")):
		p.addf(f+".host", "%q is neither a DNS name nor an IPv4 address", s.Host)
	}
	if s.Port < 1 || s.Port > 65535 {
		p.addf(f+".port", "%d is not a TCP port", s.Port)
	}
	if s.Address == "" {
		if s.Host != "" && hostErr == nil {
			p.addf(f+".address", "is empty: leave it out to use host's address")
		} else if s.Host != "" {
			p.addf(f+".address", "required when host is a DNS name: the function's security group lets it reach only this IPv4 address")
		}
	} else if addr, err := netip.ParseAddr(s.Address); err != nil || !addr.Is4() {
		p.addf(f+".address", "%q is not an IPv4 address", s.Address)
	} else if !c.reachable(addr, vpc, vpcOK) {
		p.addf(f+".address", "%s is in no site's CIDRs nor in the VPC CIDR %s: the function could not reach it", addr, c.VpcCidr)
	} else if hostErr == nil && hostIP != addr {
		p.addf(f+".address", "%s differs from host %s", addr, s.Host)
	}
	// The one rule of a secret ARN here: complete (the function's grant names exactly the secret), in this
	// account and Region.
	const where = "the audit feed function reads it through the Region's Secrets Manager endpoint"
	c.checkCompleteSecretArn(p, f+".caSecretArn", s.CaSecretArn, where)
	if s.ClientCertificateSecretArn != "" {
		c.checkCompleteSecretArn(p, f+".clientCertificateSecretArn", s.ClientCertificateSecretArn, where)
	}
	if s.SecretKmsKeyArn != "" {
		if m := kmsKeyArnRE.FindStringSubmatch(s.SecretKmsKeyArn); m == nil || m[1] != c.Region {
			p.addf(f+".secretKmsKeyArn", "%q is not a KMS key ARN in %s", s.SecretKmsKeyArn, c.Region)
		}
	}
}

// reachable reports whether addr is in the VPC or behind a site's VPN.
func (c *Config) reachable(addr netip.Addr, vpc netip.Prefix, vpcOK bool) bool {
	if vpcOK && vpc.Contains(addr) {
		return true
	}
	for _, cidr := range c.SourceCidrs() {
		if pr, err := netip.ParsePrefix(cidr); err == nil && pr.Contains(addr) {
			return true
		}
	}
	return false
}
