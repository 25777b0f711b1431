// Package onboarding builds the onboarding kit for one hospital site: the VPN
// and DICOM parameters table, a strongSwan swanctl.conf for the site's edge,
// the DCMTK verification commands and a troubleshooting table, from the
// environment config and the deployed stack outputs.
package onboarding

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Sentinel errors; match them with errors.Is.
var (
	ErrUnknownSite   = errors.New("onboarding: unknown site")
	ErrInvalidConfig = errors.New("onboarding: invalid config")
)

// Crypto parameters the kit asks the site for. They must stay within what the
// VPN connection's tunnel options allow (IKEv2, AES-256, SHA2-256, DH 14+);
// the first proposal of each list is the preferred one.
var (
	// IKEProposals are the IKE (phase 1) proposals, strongSwan syntax.
	IKEProposals = []string{"aes256-sha256-modp2048", "aes256-sha256-modp3072", "aes256-sha256-ecp256"}
	// ESPProposals are the ESP (phase 2) proposals, with PFS.
	ESPProposals = []string{"aes256-sha256-modp2048", "aes256-sha256-modp3072", "aes256-sha256-ecp256"}
)

// DefaultDICOMPort is the NLB's DICOM listener port when the config sets none.
const DefaultDICOMPort = 104

// Routing selects how the site edge steers traffic into the two tunnels.
type Routing string

const (
	// RouteBased gives each tunnel an XFRM interface (if_id) and routes the
	// cloud CIDRs over both, tunnel 1 preferred: both tunnels are up at once,
	// as AWS recommends. Needs Linux >= 4.19 and strongSwan >= 5.8.
	RouteBased Routing = "route"
	// PolicyBased installs IPsec policies for tunnel 1 only; tunnel 2 is
	// configured but started by hand on failover. For edges without XFRM
	// interfaces, and for the lab (strongSwan's userspace kernel-libipsec has
	// no if_id support).
	PolicyBased Routing = "policy"
)

// Options changes how a kit is built.
type Options struct {
	// Routing defaults to RouteBased.
	Routing Routing
	// PSKs holds the tunnels' pre-shared keys, by tunnel number (1, 2). When
	// nil the secrets file carries placeholders and says where the keys are.
	// Only set it when the user asked for secrets explicitly (-show-secrets)
	// or for a lab whose keys are not secret.
	PSKs map[int]string
	// TunnelEndpoints, when set, replaces the tunnels' outside addresses from
	// the stack outputs (index 0 is tunnel 1). For a lab whose "cloud" is a
	// local peer, such as the VPN end-to-end test's network namespace.
	TunnelEndpoints []string
}

// Tunnel is one of the VPN connection's two tunnels, seen from the site.
type Tunnel struct {
	// Number is 1 or 2.
	Number int
	// Name is the swanctl connection name; ChildName the CHILD_SA's.
	Name, ChildName string
	// OutsideIP is the cloud end of the tunnel (the site's remote_addrs).
	OutsideIP string
	// IfID is the XFRM interface id for route-based setups.
	IfID int
	// StartAction is the CHILD_SA's swanctl start_action.
	StartAction string
	// psk is never rendered outside the secrets file.
	psk string
}

// Kit is everything a site needs; its fields feed the templates.
type Kit struct {
	Env, Site string
	// LocalAE is the site's calling AE title; RemoteAE the SCP's called one.
	LocalAE, RemoteAE string
	// RemoteIP is the address the PACS sends to; RemoteIPs all NLB addresses
	// (any of them works; RemoteIP is the first). RemoteDNS is the NLB's name.
	RemoteIP  string
	RemoteIPs []string
	RemoteDNS string
	Port      int
	// SiteCIDRs are the site's networks (local_ts); CloudCIDRs the cloud's
	// (remote_ts).
	SiteCIDRs, CloudCIDRs []string
	// CustomerGatewayIP is the site edge's public address and IKE identity.
	CustomerGatewayIP string
	VPNConnectionID   string
	// PSKSecretARN is where the pre-shared keys are kept.
	PSKSecretARN string
	Tunnels      []Tunnel
	Routing      Routing
	IKEProposals []string
	ESPProposals []string
	// BGPASN is the site's ASN, zero for static routing.
	BGPASN int64
	// HasPSKs reports whether the secrets file holds real keys.
	HasPSKs bool
}

// Output keys the kit reads, as logical ids; site-scoped ones get the site
// name appended (with non-alphanumerics dropped): VpnConnectionIdSiteA.
const (
	OutVPNConnectionID = "VpnConnectionId"
	OutTunnel1Address  = "Tunnel1Address"
	OutTunnel2Address  = "Tunnel2Address"
	OutPSKSecretARN    = "PskSecretArn"
	OutNLBDNSName      = "NlbDnsName"
	OutNLBAddresses    = "NlbAddresses"
	OutVpcCIDR         = "VpcCidr"
)

// Build assembles the kit for one site of env from the stack outputs.
func Build(env EnvConfig, siteName string, outs Outputs, opts Options) (*Kit, error) {
	site, err := env.Site(siteName)
	if err != nil {
		return nil, err
	}
	k := &Kit{
		Env:               env.Name,
		Site:              site.Name,
		LocalAE:           strings.TrimSpace(site.AETitle),
		RemoteAE:          strings.TrimSpace(env.CalledAETitle),
		Port:              env.DicomPort,
		CustomerGatewayIP: site.CustomerGatewayIP,
		Routing:           opts.Routing,
		IKEProposals:      IKEProposals,
		ESPProposals:      ESPProposals,
		BGPASN:            site.BGPASN,
	}
	if k.Port == 0 {
		k.Port = DefaultDICOMPort
	}
	if k.Routing == "" {
		k.Routing = RouteBased
	}
	var errs []error
	need := func(name string, siteScoped bool) string {
		key := name
		if siteScoped {
			key += site.Name
		}
		v, ok := outs.Lookup(key)
		if !ok || strings.TrimSpace(v) == "" {
			errs = append(errs, fmt.Errorf("%w: %s (have: %s)", ErrMissingOutput, key, strings.Join(outs.Keys(), ", ")))
		}
		return strings.TrimSpace(v)
	}
	k.VPNConnectionID = need(OutVPNConnectionID, true)
	var t1, t2 string
	if len(opts.TunnelEndpoints) == 0 {
		t1 = need(OutTunnel1Address, true)
		t2 = need(OutTunnel2Address, true)
	}
	k.PSKSecretARN = need(OutPSKSecretARN, true)
	if v, ok := outs.Lookup(OutNLBAddresses); ok {
		k.RemoteIPs = splitList(v)
	}
	k.RemoteDNS, _ = outs.Lookup(OutNLBDNSName)
	if len(k.RemoteIPs) == 0 {
		errs = append(errs, fmt.Errorf("%w: %s (the PACS needs a fixed IP address)", ErrMissingOutput, OutNLBAddresses))
	} else {
		k.RemoteIP = k.RemoteIPs[0]
	}
	if v, ok := outs.Lookup(OutVpcCIDR); ok {
		k.CloudCIDRs = splitList(v)
	} else if env.VpcCIDR != "" {
		k.CloudCIDRs = []string{env.VpcCIDR}
	} else {
		errs = append(errs, fmt.Errorf("%w: %s (or vpcCidr in the env config)", ErrMissingOutput, OutVpcCIDR))
	}
	for i := range site.CIDRs {
		k.SiteCIDRs = append(k.SiteCIDRs, strings.TrimSpace(site.CIDRs[i]))
	}
	if len(opts.TunnelEndpoints) > 0 {
		if len(opts.TunnelEndpoints) != 2 {
			errs = append(errs, fmt.Errorf("%w: %d tunnel endpoints, want 2", ErrInvalidConfig, len(opts.TunnelEndpoints)))
		} else {
			t1, t2 = opts.TunnelEndpoints[0], opts.TunnelEndpoints[1]
		}
	}
	for i, addr := range []string{t1, t2} {
		n := i + 1
		t := Tunnel{
			Number:      n,
			Name:        fmt.Sprintf("dicom-ingest-tunnel%d", n),
			ChildName:   fmt.Sprintf("dicom-ingest-tunnel%d-dicom", n),
			OutsideIP:   addr,
			IfID:        n,
			StartAction: "start",
			psk:         opts.PSKs[n],
		}
		if k.Routing == PolicyBased && n == 2 {
			// Two CHILD_SAs with the same traffic selectors would fight over one
			// policy; tunnel 2 waits for a manual failover.
			t.StartAction = "none"
		}
		k.Tunnels = append(k.Tunnels, t)
	}
	k.HasPSKs = opts.PSKs != nil
	if k.HasPSKs {
		for _, t := range k.Tunnels {
			if t.psk == "" {
				errs = append(errs, fmt.Errorf("%w: no pre-shared key for tunnel %d", ErrInvalidConfig, t.Number))
			}
		}
	}
	errs = append(errs, k.validate()...)
	if len(errs) > 0 {
		return nil, fmt.Errorf("onboarding: build kit for site %q: %w", siteName, errors.Join(errs...))
	}
	return k, nil
}

// validate checks every value that ends up in a generated config file: all of
// them must parse as what they claim to be, so none can smuggle in swanctl
// syntax or shell metacharacters.
func (k *Kit) validate() []error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...))
	}
	if !validName(k.Site) {
		bad("site name %q: want letters, digits, '-', '_' or '.'", k.Site)
	}
	if k.Env != "" && !validName(k.Env) {
		bad("environment name %q: want letters, digits, '-', '_' or '.'", k.Env)
	}
	for _, ae := range []struct{ what, v string }{{"site AE title (LOCAL_AE)", k.LocalAE}, {"SCP AE title (REMOTE_AE, calledAeTitle)", k.RemoteAE}} {
		if err := checkAETitle(ae.v); err != nil {
			bad("%s %q: %v", ae.what, ae.v, err)
		}
	}
	if k.Port < 1 || k.Port > 65535 {
		bad("DICOM port %d out of range", k.Port)
	}
	if err := checkIPv4(k.CustomerGatewayIP); err != nil {
		bad("customer gateway IP %q: %v", k.CustomerGatewayIP, err)
	}
	for _, t := range k.Tunnels {
		if err := checkIPv4(t.OutsideIP); err != nil && t.OutsideIP != "" {
			bad("tunnel %d address %q: %v", t.Number, t.OutsideIP, err)
		}
		if strings.ContainsAny(t.psk, "\"\\\n\r") {
			bad("tunnel %d pre-shared key contains a quote, backslash or newline", t.Number)
		}
	}
	for _, ip := range k.RemoteIPs {
		if err := checkIPv4(ip); err != nil {
			bad("NLB address %q: %v", ip, err)
		}
	}
	if len(k.SiteCIDRs) == 0 {
		bad("site %q has no CIDRs", k.Site)
	}
	for _, c := range append(append([]string(nil), k.SiteCIDRs...), k.CloudCIDRs...) {
		if _, err := netip.ParsePrefix(c); err != nil {
			bad("CIDR %q: %v", c, err)
		}
	}
	if k.VPNConnectionID != "" && !validName(k.VPNConnectionID) {
		bad("VPN connection id %q", k.VPNConnectionID)
	}
	if k.PSKSecretARN != "" && (!strings.HasPrefix(k.PSKSecretARN, "arn:") || strings.ContainsAny(k.PSKSecretARN, " \t\n\"'`$\\")) {
		bad("PSK secret ARN %q", k.PSKSecretARN)
	}
	if k.RemoteDNS != "" && !validName(k.RemoteDNS) {
		bad("NLB DNS name %q", k.RemoteDNS)
	}
	if k.Routing != RouteBased && k.Routing != PolicyBased {
		bad("routing %q: want %q or %q", k.Routing, RouteBased, PolicyBased)
	}
	return errs
}

// checkAETitle applies PS3.5's AE rules: 1-16 characters of the default
// repertoire, no backslash or control characters, not all spaces.
func checkAETitle(ae string) error {
	if strings.TrimSpace(ae) == "" {
		return errors.New("empty")
	}
	if len(ae) > 16 {
		return fmt.Errorf("%d characters, at most 16", len(ae))
	}
	for _, r := range ae {
		if r < 0x20 || r > 0x7e || r == '\\' || r == '"' || r == '\'' || r == '`' || r == '$' {
			return fmt.Errorf("character %q not allowed", r)
		}
	}
	return nil
}

func checkIPv4(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return err
	}
	if !a.Is4() {
		return errors.New("not an IPv4 address")
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		ok := (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || r == '-' || r == '_' || r == '.'
		if !ok {
			return false
		}
	}
	return true
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		out = append(out, f)
	}
	return out
}

// EchoSCUArgs is the DCMTK echoscu command line (program name first) that
// verifies the association: the same command the kit's README shows.
func (k *Kit) EchoSCUArgs() []string {
	return []string{"echoscu", "-v", "-aet", k.LocalAE, "-aec", k.RemoteAE, k.RemoteIP, strconv.Itoa(k.Port)}
}

// StoreSCUArgs is the DCMTK storescu command line sending files.
func (k *Kit) StoreSCUArgs(files ...string) []string {
	return append([]string{"storescu", "-v", "-aet", k.LocalAE, "-aec", k.RemoteAE, k.RemoteIP, strconv.Itoa(k.Port)}, files...)
}

// SecretsFileName is the file the swanctl.conf includes for its PSKs.
const SecretsFileName = "swanctl-secrets.conf"
