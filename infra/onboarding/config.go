package onboarding

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// EnvConfig is the part of an environment config (infra/config/<env>.json)
// that the kit needs. It is read here with its own minimal struct rather than
// through the CDK app's config package, so that the onboarding command does
// not link the CDK and jsii runtime; unknown fields are ignored.
type EnvConfig struct {
	// Name is the environment name (dev, prod, ...).
	Name string `json:"name"`
	// DicomPort is the NLB's DICOM listener port (104 when zero).
	DicomPort int `json:"dicomPort"`
	// CalledAETitle is the SCP's AE title, the REMOTE_AE of every site.
	CalledAETitle string `json:"calledAeTitle"`
	// VpcCIDR is the cloud side of the tunnels' traffic selectors.
	VpcCIDR string `json:"vpcCidr"`
	Sites   []SiteConfig `json:"sites"`
}

// SiteConfig is one hospital site of an environment.
type SiteConfig struct {
	Name string `json:"name"`
	// AETitle is the site's calling AE title (LOCAL_AE).
	AETitle string `json:"aeTitle"`
	// CustomerGatewayIP is the public IPv4 address of the site's VPN edge.
	CustomerGatewayIP string `json:"customerGatewayIp"`
	// CIDRs are the site's networks that may send DICOM through the tunnels.
	CIDRs []string `json:"cidrs"`
	// BGPASN is the site's ASN when the VPN uses BGP; zero means static routes.
	BGPASN int `json:"bgpAsn"`
}

// LoadEnvConfig reads an environment config file.
func LoadEnvConfig(path string) (EnvConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return EnvConfig{}, fmt.Errorf("onboarding: load env config: %w", err)
	}
	defer f.Close()
	return ReadEnvConfig(f)
}

// ReadEnvConfig decodes an environment config document.
func ReadEnvConfig(r io.Reader) (EnvConfig, error) {
	var c EnvConfig
	if err := json.NewDecoder(io.LimitReader(r, maxOutputsSize)).Decode(&c); err != nil {
		return EnvConfig{}, fmt.Errorf("onboarding: decode env config: %w", err)
	}
	return c, nil
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
	return SiteConfig{}, fmt.Errorf("onboarding: site %q not in environment %q (sites: %v): %w", name, c.Name, names, ErrUnknownSite)
}
