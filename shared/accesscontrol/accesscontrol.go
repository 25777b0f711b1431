// Package accesscontrol decides which sites may open associations: an
// allowlist of calling AE titles, each optionally bound to the source
// networks it may connect from and to the name of the TLS client
// certificate it must present.
package accesscontrol

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Errors returned by Admit and Check. The SCP maps them all to
// A-ASSOCIATE-RJ "calling AE title not recognized" (01 01 03).
var (
	ErrUnknownCallingAE = errors.New("accesscontrol: calling AE title not in the allowlist")
	ErrSourceNotAllowed = errors.New("accesscontrol: source address not allowed for this calling AE title")
	// ErrCertificateRequired: the AE title is bound to a certificate name and
	// the association came without TLS or without a verified client
	// certificate (the plain listener, or TLS without a client CA).
	ErrCertificateRequired = errors.New("accesscontrol: calling AE title is bound to a client certificate; TLS with a client certificate is required")
	// ErrCertificateMismatch: the verified client certificate names none of
	// the certificate names the AE title is bound to.
	ErrCertificateMismatch = errors.New("accesscontrol: client certificate does not match the calling AE title")
)

// MaxAETitleLength is the longest AE title DICOM allows (PS3.5 AE VR).
const MaxAETitleLength = 16

// MaxNameLength is the longest certificate name: a DNS name's 253
// characters (a subject CN is shorter still, 64).
const MaxNameLength = 253

// Allowlist maps calling AE titles to the rules that admit them.
// The zero value admits nobody; a nil *Allowlist admits everybody.
type Allowlist struct {
	entries map[string][]rule
}

// rule admits an AE title from its networks (nil: any source) and, when
// name is set, only with a client certificate of that name.
type rule struct {
	nets []netip.Prefix
	name string
}

// Parse reads an allowlist written as a comma-separated list of entries,
// each `AE[@CIDR|CIDR…][#NAME]`, for example
//
//	LOCAL_AE,CT_SITE_A@10.10.0.0/24|10.10.1.7/32,MR_SITE_B@10.20.0.0/24#pacs.site-b.example
//
// An entry without networks admits its AE title from any source. An entry
// with #NAME admits it only over TLS with a verified client certificate
// one of whose DNS subject alternative names equals NAME, or whose subject
// common name does in a certificate without alternative names
// (CertificateHasName: ASCII case-insensitively, no wildcard matching).
//
// Spaces around entries, AE titles and names are not significant (as on
// the wire). The same AE title may appear more than once: entries with the
// same name merge their networks (one without networks admits from
// anywhere), entries with different names each admit. An AE title is either
// bound to certificate names in all its entries or in none: an unbound entry
// would let the bound AE title in without TLS.
func Parse(spec string) (*Allowlist, error) {
	a := &Allowlist{entries: map[string][]rule{}}
	for i, raw := range strings.Split(spec, ",") {
		entry := strings.TrimSpace(raw)
		if entry == "" {
			continue
		}
		ae, r, err := parseEntry(entry)
		if err != nil {
			return nil, fmt.Errorf("accesscontrol: entry %d %q: %w", i+1, entry, err)
		}
		rules := a.entries[ae]
		if len(rules) > 0 && (rules[0].name == "") != (r.name == "") {
			return nil, fmt.Errorf("accesscontrol: entry %d %q: AE title %q has entries with and without a certificate name; an entry without one would admit it without TLS", i+1, entry, ae)
		}
		a.entries[ae] = merge(rules, r)
	}
	return a, nil
}

func parseEntry(entry string) (string, rule, error) {
	var r rule
	rest, name, hasName := strings.Cut(entry, "#")
	if hasName {
		r.name = strings.TrimSpace(name)
		if err := CheckCertificateName(r.name); err != nil {
			return "", r, err
		}
	}
	ae, nets, hasNets := strings.Cut(rest, "@")
	ae = strings.TrimSpace(ae)
	if err := CheckAETitle(ae); err != nil {
		return "", r, err
	}
	if !hasNets {
		return ae, r, nil
	}
	if strings.TrimSpace(nets) == "" {
		return "", r, errors.New("no networks after '@'")
	}
	for _, n := range strings.Split(nets, "|") {
		p, err := netip.ParsePrefix(strings.TrimSpace(n))
		if err != nil {
			return "", r, fmt.Errorf("network %q is not a CIDR like 10.0.0.0/24: %w", n, err)
		}
		if p != p.Masked() {
			return "", r, fmt.Errorf("network %s has host bits set (did you mean %s?)", p, p.Masked())
		}
		r.nets = append(r.nets, p)
	}
	return ae, r, nil
}

// merge adds r to rules, joining it with a rule of the same name.
func merge(rules []rule, r rule) []rule {
	for i := range rules {
		if rules[i].name != r.name {
			continue
		}
		switch {
		case rules[i].nets == nil: // already from anywhere
		case r.nets == nil:
			rules[i].nets = nil
		default:
			for _, p := range r.nets {
				if !slices.Contains(rules[i].nets, p) {
					rules[i].nets = append(rules[i].nets, p)
				}
			}
		}
		return rules
	}
	return append(rules, r)
}

// CheckAETitle reports why ae is not an AE title, or nil. It is the one rule of what an AE title is (PS3.5 AE
// VR): at most 16 bytes of the default character repertoire without control characters or backslash, leading
// and trailing spaces not significant, so a title of spaces alone is empty. The allowlist, the commitment peers,
// the SCP's own AE title (scp-task's --ae-title, the stack's dicom.aeTitle and sites in infra/config) and the AE
// titles an association received (dicomnet) are held to it. The error names the offending byte, not ae: each
// caller names the title, its flag, its configuration path or the rejection as it can.
func CheckAETitle(ae string) error {
	switch {
	case strings.Trim(ae, " ") == "":
		return errors.New("empty AE title")
	case len(ae) > MaxAETitleLength:
		return fmt.Errorf("AE title is %d characters, AE titles have at most %d", len(ae), MaxAETitleLength)
	}
	for i := 0; i < len(ae); i++ {
		if c := ae[i]; c < 0x20 || c > 0x7e || c == '\\' {
			return fmt.Errorf("AE title has %q at position %d, which an AE title cannot hold (printable ASCII without backslash)", []byte{c}, i+1)
		}
	}
	return nil
}

// CheckCertificateName reports what is wrong with a certificate name of an
// allowlist entry (#NAME), or nil: it admits the characters of DNS names
// and the usual common names of devices, letters, digits, '.', '-' and '_',
// up to MaxNameLength.
func CheckCertificateName(name string) error {
	switch {
	case name == "":
		return errors.New("empty certificate name after '#'")
	case len(name) > MaxNameLength:
		return fmt.Errorf("certificate name longer than %d characters", MaxNameLength)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("certificate name has a character other than a letter, digit, '.', '-' or '_' at position %d", i+1)
		}
	}
	return nil
}

// unknown is the error of an AE title the allowlist does not hold. AE
// titles are matched case-sensitively (as DCMTK and most PACS match them),
// so one that differs from a listed title only in letter case is refused,
// and says so: an administrator reads "not in the allowlist" beside the
// title the list holds in other letters (all of them, in order, when it
// holds several: one picked by map order made the same request's reason
// differ from one time to the next).
func (a *Allowlist) unknown(ae string) error {
	var listed []string
	for l := range a.entries {
		if strings.EqualFold(l, ae) {
			listed = append(listed, strconv.Quote(l))
		}
	}
	if listed == nil {
		return ErrUnknownCallingAE
	}
	slices.Sort(listed)
	names := listed[len(listed)-1]
	if n := len(listed); n > 1 {
		names = strings.Join(listed[:n-1], ", ") + " and " + names
	}
	return fmt.Errorf("%w (it lists %s: AE titles are matched case-sensitively)", ErrUnknownCallingAE, names)
}

// Peer is who asks for an association.
type Peer struct {
	CallingAE string
	// Source is the peer's address; the zero Addr when unknown.
	Source netip.Addr
	// Certificate is the client certificate TLS verified (the leaf of a
	// verified chain); nil without TLS or without a client certificate.
	Certificate *x509.Certificate
}

// Admit reports whether p may associate. A nil receiver admits everybody.
// name is the certificate name of the entry that admitted p, "" when that
// entry names none.
func (a *Allowlist) Admit(p Peer) (name string, err error) {
	if a == nil {
		return "", nil
	}
	rules, ok := a.entries[strings.TrimSpace(p.CallingAE)]
	if !ok {
		return "", a.unknown(strings.TrimSpace(p.CallingAE))
	}
	src := p.Source.Unmap()
	var wanted []string // names of the entries whose networks hold src
	for _, r := range rules {
		if r.nets != nil && !slices.ContainsFunc(r.nets, func(n netip.Prefix) bool { return n.Contains(src) }) {
			continue
		}
		if r.name == "" {
			return "", nil
		}
		if p.Certificate != nil && CertificateHasName(p.Certificate, r.name) {
			return r.name, nil
		}
		wanted = append(wanted, r.name)
	}
	switch {
	case wanted == nil:
		return "", ErrSourceNotAllowed
	case p.Certificate == nil:
		return "", ErrCertificateRequired
	}
	return "", fmt.Errorf("%w (it is bound to %s)", ErrCertificateMismatch, strings.Join(wanted, " or "))
}

// Check reports whether callingAE may connect from src without a client
// certificate: Admit for a peer on the plain listener.
func (a *Allowlist) Check(callingAE string, src netip.Addr) error {
	_, err := a.Admit(Peer{CallingAE: callingAE, Source: src})
	return err
}

// CertificateHasName reports whether name is one of c's DNS subject
// alternative names or, in a certificate with neither DNS nor URI
// alternative names, its subject common name, compared ASCII
// case-insensitively. As in RFC 6125 (section 6.4.4) and Go's own host
// name check, a certificate that carries alternative names is named by
// them alone: a CA that puts a host's names in the SAN and something
// else in the CN does not vouch for the CN. Wildcard names are compared
// as written, never expanded.
func CertificateHasName(c *x509.Certificate, name string) bool {
	if len(c.DNSNames) == 0 && len(c.URIs) == 0 {
		return strings.EqualFold(c.Subject.CommonName, name)
	}
	return slices.ContainsFunc(c.DNSNames, func(n string) bool { return strings.EqualFold(n, name) })
}

// AETitles lists the admitted calling AE titles, sorted.
func (a *Allowlist) AETitles() []string {
	if a == nil {
		return nil
	}
	out := make([]string, 0, len(a.entries))
	for ae := range a.entries {
		out = append(out, ae)
	}
	sort.Strings(out)
	return out
}

// BindsCertificates reports whether any entry names a certificate, so the
// SCP needs a TLS listener that verifies client certificates.
func (a *Allowlist) BindsCertificates() bool {
	if a == nil {
		return false
	}
	for _, rules := range a.entries {
		for _, r := range rules {
			if r.name != "" {
				return true
			}
		}
	}
	return false
}

// String renders the allowlist in the syntax Parse reads, one entry per AE
// title and certificate name.
func (a *Allowlist) String() string {
	var parts []string
	for _, ae := range a.AETitles() {
		rules := slices.Clone(a.entries[ae])
		slices.SortFunc(rules, func(x, y rule) int { return strings.Compare(x.name, y.name) })
		for _, r := range rules {
			s := ae
			if r.nets != nil {
				nets := make([]string, len(r.nets))
				for i, p := range r.nets {
					nets[i] = p.String()
				}
				s += "@" + strings.Join(nets, "|")
			}
			if r.name != "" {
				s += "#" + r.name
			}
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ",")
}
