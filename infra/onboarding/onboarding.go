// Package onboarding builds the onboarding kit for one hospital site: the VPN
// and DICOM parameters table, a strongSwan swanctl.conf for the site's edge,
// the DCMTK verification commands and a troubleshooting table, from the
// environment config and the deployed stack outputs; with DICOM over TLS
// also the server CA, the site's certificate signing request recipe and the
// `+tls` verification commands.
package onboarding

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Sentinel errors; match them with errors.Is.
var (
	ErrUnknownSite   = errors.New("unknown site")
	ErrInvalidConfig = errors.New("invalid config")
)

// Crypto parameters the kit asks the site for. They must stay within what the
// VPN connection's tunnel options allow (IKEv2, AES-256, SHA2-256, DH 14+);
// the first proposal of each list is the preferred one.
var (
	// IKEProposals are the IKE (phase 1) proposals, strongSwan syntax.
	// They are a subset of the tunnel options infra/stack sets (AES256,
	// SHA2-256, DH groups 14, 19, 20, 21).
	IKEProposals = []string{"aes256-sha256-modp2048", "aes256-sha256-ecp256", "aes256-sha256-ecp384"}
	// ESPProposals are the ESP (phase 2) proposals, with PFS.
	ESPProposals = []string{"aes256-sha256-modp2048", "aes256-sha256-ecp256", "aes256-sha256-ecp384"}
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
	// RemoteIPs, when set, are the NLB's private addresses, replacing the
	// NlbAddresses output (CloudFormation cannot export an NLB's IPs unless
	// they are fixed in its subnet mappings).
	RemoteIPs []string
	// PSKs holds the tunnels' pre-shared keys, by tunnel number (1, 2). When
	// nil the secrets file carries placeholders and says where the keys are.
	// Only set it when the user asked for secrets explicitly (-show-secrets)
	// or for a lab whose keys are not secret.
	PSKs map[int]string
	// TunnelEndpoints, when set, are the tunnels' outside addresses (index 0
	// is tunnel 1), replacing Tunnel1Address<Site>/Tunnel2Address<Site>
	// outputs: CloudFormation cannot export them, so they come from
	// ParseVPNConnections, or, for a lab, from the local peer (the VPN
	// end-to-end test's cloud namespace).
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
	// PSKSecretARN is the Secrets Manager secret holding this tunnel's key.
	PSKSecretARN string
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
	// Region is the deployment's AWS region, which the kit's AWS CLI
	// commands about the VPN connection name.
	Region string
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
	// PSKOutput is the stack output the tunnels' secret ARNs were read
	// from (OutVPNPSK<site>, or OutPSKSecretARN<site> where a deployment
	// gives that instead), which the kit and its errors name.
	PSKOutput    string
	Tunnels      []Tunnel
	Routing      Routing
	IKEProposals []string
	ESPProposals []string
	// BGPASN is the site's ASN, zero for static routing.
	BGPASN int64
	// HasPSKs reports whether the secrets file holds real keys.
	HasPSKs bool
	// TLS is DICOM over TLS for the site; nil when the environment has none.
	TLS *KitTLS
	// Plain reports whether the plain DICOM port is open.
	Plain bool
	// Storage Commitment: the PACS's listener for our reports (empty host:
	// the site cannot ask for commitment), how long instances in flight are
	// waited for, how long a result is retried, and whether quarantined
	// instances count as committed. PacsTLS: the results go over DICOM TLS.
	PacsHost                string
	PacsPort                int
	PacsTLS                 bool
	CommitmentWaitSeconds   int
	CommitmentReportMinutes int
	QuarantinedCommitted    bool
	// Staged: C-STORE success once an object is durable in the staging
	// file system (EFS, every zone), not once S3 has it.
	Staged bool
	// S3PutTimeoutSeconds, without Staged, bounds the wait for a C-STORE
	// response after the object's last byte (0: not known, not said).
	S3PutTimeoutSeconds int
	// Limits are the DICOM limits the site meets, as scp-task applies them.
	Limits Limits
}

// Limits are the DICOM limits and timers of our SCP a site is told of: the
// defaults scp-task applies (shared/dicomnet's and shared/pipeline's, which
// scp-task's settings take theirs from; the stack sets none of them), and
// the load balancer's idle timeout where it is the shorter.
type Limits struct {
	// MaxPDULength is the largest PDU we receive (bytes).
	MaxPDULength int64
	// IdleTimeout is how long an association may be silent between
	// messages before it is ended.
	IdleTimeout time.Duration
	// MinProgressBytes must arrive in every ProgressWindow while a message
	// is being received.
	ProgressWindow   time.Duration
	MinProgressBytes int64
	// CommitmentRetryFirst and CommitmentRetryMax: a Storage Commitment
	// result the PACS did not take is sent again after CommitmentRetryFirst,
	// the wait doubling up to CommitmentRetryMax.
	CommitmentRetryFirst, CommitmentRetryMax time.Duration
}

// SCPLimits are the limits for an environment whose load balancer keeps a
// silent connection for nlbIdleSeconds (0: not known).
func SCPLimits(nlbIdleSeconds int) Limits {
	l := Limits{
		MaxPDULength:         int64(dicomnet.DefaultMaxPDULength),
		IdleTimeout:          dicomnet.DefaultIdleTimeout,
		ProgressWindow:       dicomnet.DefaultProgressWindow,
		MinProgressBytes:     dicomnet.DefaultMinProgressBytes,
		CommitmentRetryFirst: pipeline.CommitmentReportFirstRetry,
		CommitmentRetryMax:   pipeline.CommitmentReportMaxRetry,
	}
	if nlb := time.Duration(nlbIdleSeconds) * time.Second; nlb > 0 && nlb < l.IdleTimeout {
		// The load balancer forgets the connection first: the association
		// is gone for the PACS as well.
		l.IdleTimeout = nlb
	}
	return l
}

// KitTLS is what a site needs for DICOM over TLS.
type KitTLS struct {
	// Port is the NLB's TLS port.
	Port int
	// CertificateName is what the site's client certificate must name (its
	// subject CN and DNS SAN): the site's certificateName when its AE title is
	// bound to one, else the site name (any certificate of the site CA then
	// works for its AE title).
	CertificateName string
	// Bound reports whether the AE title is bound to CertificateName.
	Bound bool
	// ServerCAPEM is the CA the site trusts for our server certificate.
	ServerCAPEM string
}

// Files of the TLS part of a kit.
const (
	ServerCAFileName = "server-ca.pem"
	CSRScriptName    = "site-csr.sh"
	// SiteKeyFile and SiteCertFile are where the CSR recipe puts the site's
	// key and where the signed certificate is expected, as the verification
	// commands use them.
	SiteKeyFile  = "site.key"
	SiteCertFile = "site.crt"
)

// Output keys the kit reads (see Outputs.Lookup for how they match);
// site-scoped ones get the site name appended, non-alphanumerics dropped:
// VpnConnectiontesthospital.
const (
	// OutVPNConnection is the site's VPN connection id (infra/stack);
	// OutVPNConnectionID is accepted too.
	OutVPNConnection   = "VpnConnection"
	OutVPNConnectionID = "VpnConnectionId"
	// OutVPNPSK holds the Secrets Manager ARNs of the tunnel 1 and tunnel 2
	// keys, space-separated (infra/stack); OutPSKSecretARN, one secret
	// holding both keys, is accepted too.
	OutVPNPSK       = "VpnPsk"
	OutPSKSecretARN = "PskSecretArn"
	// Optional: tunnel outside addresses, when a deployment can export them.
	OutTunnel1Address = "Tunnel1Address"
	OutTunnel2Address = "Tunnel2Address"
	OutNLBDNSName     = "NlbDnsName"
	// OutNLBArn finds the NLB's interfaces (NLBInterfaceDescription).
	OutNLBArn = "NlbArn"
	// OutNLBAddresses are the NLB's private IPs, comma- or space-separated.
	OutNLBAddresses = "NlbAddresses"
	OutVpcCIDR      = "VpcCidr"
	// OutDicomPort and OutCalledAETitle are cross-checked with the config.
	OutDicomPort     = "DicomPort"
	OutCalledAETitle = "CalledAETitle"
	// OutDicomTLSPort is the TLS listener's port, cross-checked too.
	OutDicomTLSPort = "DicomTlsPort"
)

// Build assembles the kit for one site of env from the stack outputs.
func Build(env EnvConfig, siteName string, outs Outputs, opts Options) (*Kit, error) {
	site, err := env.Site(siteName)
	if err != nil {
		return nil, err
	}
	k := &Kit{
		Env:               env.Name,
		Region:            env.Region,
		Site:              site.Name,
		LocalAE:           strings.TrimSpace(site.AETitle),
		RemoteAE:          strings.TrimSpace(env.CalledAETitle),
		Port:              env.DicomPort,
		CustomerGatewayIP: site.CustomerGatewayIP,
		Routing:           opts.Routing,
		IKEProposals:      IKEProposals,
		ESPProposals:      ESPProposals,
		BGPASN:            site.BGPASN,

		PacsHost: site.PacsHost, PacsPort: site.PacsPort, PacsTLS: site.PacsTLS,
		CommitmentWaitSeconds: env.CommitmentWaitSeconds, CommitmentReportMinutes: env.CommitmentReportMinutes,
		QuarantinedCommitted: site.QuarantinedCommitted,
		Staged:               env.Staged,
		S3PutTimeoutSeconds:  env.S3PutTimeoutSeconds,
		Limits:               SCPLimits(env.NLBIdleTimeoutSeconds),
	}
	if k.Port == 0 {
		k.Port = DefaultDICOMPort
	}
	k.Plain = env.TLS == nil || env.TLS.PlainListener
	if t := env.TLS; t != nil {
		k.TLS = &KitTLS{Port: t.Port, CertificateName: site.CertificateName, Bound: site.CertificateName != "", ServerCAPEM: t.ServerCAPEM}
		if !k.TLS.Bound {
			k.TLS.CertificateName = site.Name
		}
	}
	if k.Routing == "" {
		k.Routing = RouteBased
	}
	var errs []error
	missing := func(key, hint string) {
		errs = append(errs, fmt.Errorf("%w: %s%s (outputs have: %s)", ErrMissingOutput, key, hint, strings.Join(outs.Keys(), ", ")))
	}
	first := func(keys ...string) (string, bool) {
		for _, key := range keys {
			if v, ok := outs.Lookup(key); ok && strings.TrimSpace(v) != "" {
				return strings.TrimSpace(v), true
			}
		}
		return "", false
	}
	var ok bool
	if k.VPNConnectionID, ok = outs.VPNConnectionID(site.Name); !ok {
		missing(OutVPNConnection+site.Name, "")
	}
	var arns []string
	for _, key := range []string{OutVPNPSK + site.Name, OutPSKSecretARN + site.Name} {
		if v, ok := first(key); ok {
			k.PSKOutput = key
			var err error
			if arns, err = SplitList(key, v); err != nil {
				errs = append(errs, fmt.Errorf("%w (one tunnel's secret missing)", err))
			}
			break
		}
	}
	if k.PSKOutput == "" {
		missing(OutVPNPSK+site.Name, "")
	}
	endpoints := opts.TunnelEndpoints
	if len(endpoints) == 0 {
		t1, ok1 := first(OutTunnel1Address + site.Name)
		t2, ok2 := first(OutTunnel2Address + site.Name)
		if ok1 && ok2 {
			endpoints = []string{t1, t2}
		} else {
			errs = append(errs, fmt.Errorf("%w: tunnel outside addresses of %s: CloudFormation cannot export them; pass the output of 'aws ec2 describe-vpn-connections --region %s --output json' with -vpn-connections, or let the onboarding command ask the AWS CLI (-aws-cli)", ErrMissingOutput, site.Name, env.Region))
		}
	}
	if len(endpoints) != 0 && len(endpoints) != 2 {
		errs = append(errs, fmt.Errorf("%w: %d tunnel endpoints, want 2", ErrInvalidConfig, len(endpoints)))
		endpoints = nil
	}
	k.RemoteIPs = opts.RemoteIPs
	if len(k.RemoteIPs) == 0 {
		if v, ok := first(OutNLBAddresses); ok {
			var err error
			if k.RemoteIPs, err = SplitList(OutNLBAddresses, v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	k.RemoteDNS, _ = first(OutNLBDNSName)
	if len(k.RemoteIPs) == 0 {
		missing(OutNLBAddresses, " (the PACS needs fixed IP addresses; pass the NLB's private IPs)")
	} else {
		k.RemoteIP = k.RemoteIPs[0]
	}
	if v, ok := first(OutVpcCIDR); ok {
		var err error
		if k.CloudCIDRs, err = SplitList(OutVpcCIDR, v); err != nil {
			errs = append(errs, err)
		}
	} else if env.VpcCIDR != "" {
		k.CloudCIDRs = []string{env.VpcCIDR}
	} else {
		missing(OutVpcCIDR, " (or vpcCidr in the env config)")
	}
	// The deployed stack must be the one the config describes.
	if v, ok := first(OutDicomPort); ok && v != strconv.Itoa(k.Port) {
		errs = append(errs, fmt.Errorf("%w: the deployed DICOM port is %s, the config says %d: deploy the config or use the deployed one", ErrInvalidConfig, v, k.Port))
	}
	if v, ok := first(OutDicomTLSPort); ok && (k.TLS == nil || v != strconv.Itoa(k.TLS.Port)) {
		errs = append(errs, fmt.Errorf("%w: the deployed DICOM TLS port is %s, the config has %s: deploy the config or use the deployed one", ErrInvalidConfig, v, k.tlsPortText()))
	}
	if v, ok := first(OutCalledAETitle); ok && v != k.RemoteAE {
		errs = append(errs, fmt.Errorf("%w: the deployed called AE title is %q, the config says %q: deploy the config or use the deployed one", ErrInvalidConfig, v, k.RemoteAE))
	}
	for _, c := range site.CIDRs {
		k.SiteCIDRs = append(k.SiteCIDRs, strings.TrimSpace(c))
	}
	if len(arns) > 2 {
		errs = append(errs, fmt.Errorf("%w: %d pre-shared key ARNs, want 1 or 2", ErrInvalidConfig, len(arns)))
	}
	for n := 1; n <= 2; n++ {
		t := Tunnel{
			Number:      n,
			Name:        fmt.Sprintf("dicom-ingest-tunnel%d", n),
			ChildName:   fmt.Sprintf("dicom-ingest-tunnel%d-dicom", n),
			IfID:        n,
			StartAction: "start",
			psk:         opts.PSKs[n],
		}
		if len(endpoints) == 2 {
			t.OutsideIP = strings.TrimSpace(endpoints[n-1])
		}
		switch {
		case len(arns) == 1:
			t.PSKSecretARN = arns[0] // one secret holding both keys
		case len(arns) >= n:
			t.PSKSecretARN = arns[n-1]
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
		return nil, fmt.Errorf("build kit for site %q: %w", siteName, errors.Join(errs...))
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
		// The one AE title rule: the kit quotes any title for the shell (shq) and Markdown (code, cell).
		if err := accesscontrol.CheckAETitle(ae.v); err != nil {
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
	// Each secret once (PSKSecrets; no secret: the kit says so,
	// MissingPSKSecrets): one both tunnels share was refused twice.
	for _, sec := range k.PSKSecrets() {
		switch {
		case strings.ContainsAny(sec.ARN, " \t\n\"'`$\\{}"):
			bad("%s PSK secret ARN %q", sec.TunnelNames(), sec.ARN)
		case sec.Region == "":
			// The kit's fetch command and -show-secrets read the secret in
			// its ARN's region: without one, in whatever region the
			// caller's AWS configuration defaults to.
			bad("%s PSK secret ARN %q (stack output %s): not a secret's ARN with its region (arn:<partition>:secretsmanager:<region>:<account>:secret:<name>), which the kit's fetch command and -show-secrets read the secret in",
				sec.TunnelNames(), sec.ARN, k.PSKOutput)
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
	if k.RemoteDNS != "" && !validName(k.RemoteDNS) {
		bad("NLB DNS name %q", k.RemoteDNS)
	}
	if k.Routing != RouteBased && k.Routing != PolicyBased {
		bad("routing %q: want %q or %q", k.Routing, RouteBased, PolicyBased)
	}
	if t := k.TLS; t != nil {
		if t.Port < 1 || t.Port > 65535 {
			bad("DICOM TLS port %d out of range", t.Port)
		}
		if err := accesscontrol.CheckCertificateName(t.CertificateName); err != nil {
			bad("certificate name %q: %v", t.CertificateName, err)
		}
		if !strings.HasPrefix(strings.TrimSpace(t.ServerCAPEM), "-----BEGIN CERTIFICATE-----") {
			bad("server CA: not a PEM certificate (dicom.tls.serverCaFile)")
		}
	}
	if !k.Plain && k.TLS == nil {
		bad("neither a plain nor a TLS DICOM port")
	}
	return errs
}

func (k *Kit) tlsPortText() string {
	if k.TLS == nil {
		return "no dicom.tls"
	}
	return strconv.Itoa(k.TLS.Port)
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

// SplitList reads a list of an output or a flag, named name in its error:
// entries separated by commas or white space (a comma and spaces after it
// separate one pair). Separators alone are the empty list (it names
// nothing). An empty entry beside others (a comma with nothing but white
// space before or after it) is an error: it is one entry missing, and
// read as the shorter list it could be taken for another form of the
// list ("arnA," for the one secret both tunnels share).
func SplitList(name, s string) ([]string, error) {
	parts := strings.Split(s, ",")
	var out []string
	empty := -1 // the first empty entry's index
	for i, p := range parts {
		f := strings.Fields(p)
		if len(f) == 0 && empty < 0 {
			empty = i
		}
		out = append(out, f...)
	}
	if len(out) != 0 && empty >= 0 {
		return nil, fmt.Errorf("%w: %s %q: entry %d of %d is empty", ErrInvalidConfig, name, s, empty+1, len(parts))
	}
	return out, nil
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

// PlainUsable reports whether the site may use the plain DICOM port: it is
// open and the site's AE title is not bound to a certificate.
func (k *Kit) PlainUsable() bool {
	return k.Plain && (k.TLS == nil || !k.TLS.Bound)
}

// tlsArgs are DCMTK's TLS options for the kit's files: the site's key and
// certificate, our server CA; the security profile is DCMTK's default,
// non-downgrading BCP 195 (+py).
func (k *Kit) tlsArgs() []string {
	return []string{"+tls", SiteKeyFile, SiteCertFile, "+cf", ServerCAFileName}
}

// EchoSCUTLSArgs is the echoscu command line verifying an association over
// TLS (nil without TLS).
func (k *Kit) EchoSCUTLSArgs() []string {
	if k.TLS == nil {
		return nil
	}
	return append(append([]string{"echoscu", "-v"}, k.tlsArgs()...), "-aet", k.LocalAE, "-aec", k.RemoteAE, k.RemoteIP, strconv.Itoa(k.TLS.Port))
}

// StoreSCUTLSArgs is the storescu command line sending files over TLS.
func (k *Kit) StoreSCUTLSArgs(files ...string) []string {
	if k.TLS == nil {
		return nil
	}
	args := append(append([]string{"storescu", "-v"}, k.tlsArgs()...), "-aet", k.LocalAE, "-aec", k.RemoteAE, k.RemoteIP, strconv.Itoa(k.TLS.Port))
	return append(args, files...)
}

// CSRArgs is the openssl command line making the site's key and certificate
// signing request: an RSA 3072 key (what most PACS take) and a CSR whose
// subject CN and DNS SAN are the certificate name, for TLS client
// authentication.
func (k *Kit) CSRArgs() []string {
	if k.TLS == nil {
		return nil
	}
	n := k.TLS.CertificateName
	return []string{"openssl", "req", "-new", "-newkey", "rsa:3072", "-nodes", "-keyout", SiteKeyFile, "-out", k.Site + ".csr",
		"-subj", "/CN=" + n, "-addext", "subjectAltName=DNS:" + n, "-addext", "extendedKeyUsage=clientAuth",
		"-addext", "keyUsage=critical,digitalSignature,keyEncipherment"}
}

// PSKSecret is one Secrets Manager secret of a site's pre-shared keys: the
// stack makes one per tunnel, a deployment may hold both keys in one.
type PSKSecret struct {
	ARN string
	// Region is the ARN's (ARNRegion): the fetch command names it, as a
	// CLI defaulting to another region does not find the secret.
	Region string
	// Tunnels are the numbers of the tunnels whose keys it holds.
	Tunnels []int
	// File is where the secrets file's fetch command writes it, mode 0600
	// and never on the terminal: tunnel<n>.psk, tunnels.psk when shared.
	File string
}

// TunnelNames names the tunnels whose keys s holds, as the kit and its
// errors do: "tunnel 1", or "tunnels 1 and 2" for a shared secret.
func (s PSKSecret) TunnelNames() string {
	if len(s.Tunnels) == 1 {
		return fmt.Sprintf("tunnel %d", s.Tunnels[0])
	}
	nums := make([]string, len(s.Tunnels))
	for i, n := range s.Tunnels {
		nums[i] = strconv.Itoa(n)
	}
	return "tunnels " + strings.Join(nums, " and ")
}

// PSKSecrets lists the kit's secrets, each once, in tunnel order: a
// command per tunnel fetched a shared secret, both keys, twice.
func (k *Kit) PSKSecrets() []PSKSecret {
	var out []PSKSecret
	for _, t := range k.Tunnels {
		if t.PSKSecretARN == "" {
			continue
		}
		i := slices.IndexFunc(out, func(s PSKSecret) bool { return s.ARN == t.PSKSecretARN })
		if i < 0 {
			out = append(out, PSKSecret{ARN: t.PSKSecretARN, Region: ARNRegion(t.PSKSecretARN)})
			i = len(out) - 1
		}
		out[i].Tunnels = append(out[i].Tunnels, t.Number)
	}
	for i := range out {
		out[i].File = fmt.Sprintf("tunnel%d.psk", out[i].Tunnels[0])
		if len(out[i].Tunnels) > 1 {
			out[i].File = "tunnels.psk"
		}
	}
	return out
}

// MissingPSKSecrets are the numbers of the tunnels no secret holds the key
// of (the stack outputs named none for them), in tunnel order: the kit
// fetches nothing for them, says so, and -show-secrets refuses.
func (k *Kit) MissingPSKSecrets() []int {
	var out []int
	for _, t := range k.Tunnels {
		if t.PSKSecretARN == "" {
			out = append(out, t.Number)
		}
	}
	return out
}

// ARNRegion is the region field of an ARN, arn:partition:service:region:…,
// "" when arn has none: the one rule by which the onboarding command reads a
// secret and the kit's commands fetch it in the secret's own region, whatever
// region the caller's AWS configuration defaults to. Build refuses a
// secret's ARN without one (a name, or a malformed ARN).
func ARNRegion(arn string) string {
	f := strings.SplitN(arn, ":", 5)
	if len(f) < 5 || f[0] != "arn" {
		return ""
	}
	return f[3]
}

// PSKSecretShared reports whether the site's tunnels share one secret
// (it holds both tunnels' keys) rather than each having its own.
func (k *Kit) PSKSecretShared() bool {
	for _, s := range k.PSKSecrets() {
		if len(s.Tunnels) > 1 {
			return true
		}
	}
	return false
}

// SecretsFileName is the file the swanctl.conf includes for its PSKs.
const SecretsFileName = "swanctl-secrets.conf"
