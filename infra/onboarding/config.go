package onboarding

import (
	"fmt"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/infra/config"
)

// EnvConfig is the part of an environment's configuration the kit needs. It
// is usually made with FromConfig from the CDK app's validated config
// (infra/config, which does not import the CDK, so neither does this
// package).
type EnvConfig struct {
	// Name is the environment name (dev, prod, ...).
	Name string
	// Region is the deployment's AWS region.
	Region string
	// DicomPort is the NLB's DICOM listener port (104 when zero).
	DicomPort int
	// CalledAETitle is the SCP's AE title, the REMOTE_AE of every site.
	CalledAETitle string
	// VpcCIDR is the cloud side of the tunnels' traffic selectors.
	VpcCIDR string
	// TLS is DICOM over TLS, when the environment offers it.
	TLS   *TLSConfig
	Sites []SiteConfig
	// CommitmentWaitSeconds is how long instances named in a Storage
	// Commitment request may still be in flight before they fail.
	CommitmentWaitSeconds int
	// CommitmentReportMinutes is how long a result is retried before it is
	// given up and alarmed.
	CommitmentReportMinutes int
	// Staged reports whether the tasks answer C-STORE once an object is
	// durable in the staging file system (scp.staging), not once S3 has it.
	Staged bool
	// S3PutTimeoutSeconds (scp.s3PutTimeoutSeconds), without Staged, is how
	// long after an object's last byte its C-STORE is answered at the latest.
	S3PutTimeoutSeconds int
	// NLBIdleTimeoutSeconds (dicom.idleTimeoutSeconds) is how long the load
	// balancer keeps a silent connection; 0: not known (scp-task's idle
	// timeout alone applies).
	NLBIdleTimeoutSeconds int
}

// TLSConfig is the environment's DICOM-over-TLS endpoint.
type TLSConfig struct {
	// Port is the NLB's TLS listener port.
	Port int
	// ServerCAPEM is the CA certificate (PEM) that issued the SCP's server
	// certificate: the site trusts it.
	ServerCAPEM string
	// PlainListener tells whether the plain DICOM port stays open beside it.
	PlainListener bool
}

// SiteConfig is one hospital site of an environment.
type SiteConfig struct {
	Name string
	// AETitle is the site's calling AE title (LOCAL_AE).
	AETitle string
	// CustomerGatewayIP is the public IPv4 address of the site's VPN edge.
	CustomerGatewayIP string
	// CIDRs are the site's networks that may send DICOM through the tunnels.
	CIDRs []string
	// BGPASN is the site's ASN when the VPN uses BGP; zero means static routes.
	BGPASN int64
	// CertificateName binds the site's AE title to its TLS client
	// certificate's DNS SAN (or subject CN, without SANs); empty when it is
	// not bound.
	CertificateName string
	// PacsHost and PacsPort are where Storage Commitment results go (no
	// host: the site cannot ask for commitment); QuarantinedCommitted counts
	// its quarantined instances as committed; PacsTLS has the results go
	// over DICOM TLS (sites[].pacs.tls).
	PacsHost             string
	PacsPort             int
	PacsTLS              bool
	QuarantinedCommitted bool
}

// FromConfig extracts the kit's input from a validated environment config.
func FromConfig(c *config.Config) EnvConfig {
	e := EnvConfig{
		Name:          c.Name,
		Region:        c.Region,
		DicomPort:     c.Dicom.Port,
		CalledAETitle: c.Dicom.AETitle,
		VpcCIDR:       c.VpcCidr,

		CommitmentWaitSeconds:   c.Commitment.WaitSeconds,
		CommitmentReportMinutes: c.Commitment.ReportMinutes,
		Staged:                  c.Scp.Staging != nil,
		S3PutTimeoutSeconds:     c.Scp.S3PutTimeoutSeconds,
		NLBIdleTimeoutSeconds:   c.Dicom.IdleTimeoutSeconds,
	}
	if t := c.Dicom.TLS; t != nil {
		e.TLS = &TLSConfig{Port: t.Port, ServerCAPEM: t.ServerCaPEM, PlainListener: c.PlainListenerEnabled()}
	}
	for _, s := range c.Sites {
		sc := SiteConfig{
			Name:                 s.Name,
			AETitle:              s.CallingAETitle,
			CustomerGatewayIP:    s.CustomerGatewayIP,
			CIDRs:                append([]string(nil), s.Cidrs...),
			CertificateName:      s.CertificateName,
			QuarantinedCommitted: s.QuarantinedCommitted,
		}
		if s.Pacs != nil {
			sc.PacsHost, sc.PacsPort, sc.PacsTLS = s.Pacs.Host, s.Pacs.Port, s.Pacs.TLS != nil
		}
		if s.Routing == config.RoutingBGP {
			sc.BGPASN = s.BgpAsn
		}
		e.Sites = append(e.Sites, sc)
	}
	return e
}

// LoadEnvConfig loads and validates <dir>/<env>.json with the CDK app's
// config loader and extracts the kit's input from it.
func LoadEnvConfig(dir, env string) (EnvConfig, error) {
	c, err := config.Load(dir, env)
	if err != nil {
		return EnvConfig{}, fmt.Errorf("load env config: %w", err)
	}
	return FromConfig(c), nil
}

// Site returns the site with the given name.
func (c EnvConfig) Site(name string) (SiteConfig, error) {
	for _, s := range c.Sites {
		if s.Name == name {
			return s, nil
		}
	}
	names := make([]string, 0, len(c.Sites))
	for _, s := range c.Sites {
		names = append(names, s.Name)
	}
	return SiteConfig{}, fmt.Errorf("%w %q: environment %q has sites %s", ErrUnknownSite, name, c.Name, strings.Join(names, ", "))
}
