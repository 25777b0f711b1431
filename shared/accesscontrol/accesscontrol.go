// Package accesscontrol decides which sites may open associations: an
// allowlist of calling AE titles, each optionally bound to the source
// networks it may connect from.
package accesscontrol

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Errors returned by Check. The SCP maps both to A-ASSOCIATE-RJ
// "calling AE title not recognized" (01 01 03).
var (
	ErrUnknownCallingAE = errors.New("accesscontrol: calling AE title not in the allowlist")
	ErrSourceNotAllowed = errors.New("accesscontrol: source address not allowed for this calling AE title")
)

// MaxAETitleLength is the longest AE title DICOM allows (PS3.5 AE VR).
const MaxAETitleLength = 16

// Allowlist maps calling AE titles to the networks they may connect from.
// The zero value admits nobody; a nil *Allowlist admits everybody.
type Allowlist struct {
	entries map[string][]netip.Prefix // nil slice: any source
}

// Parse reads an allowlist written as a comma-separated list of entries,
// each either `AE` (any source) or `AE@CIDR|CIDR…`, for example
//
//	LOCAL_AE,CT_SITE_A@10.10.0.0/24|10.10.1.7/32
//
// Spaces around entries and AE titles are not significant (as on the wire).
// The same AE title may appear more than once; its networks are merged, and
// an entry without networks admits it from anywhere.
func Parse(spec string) (*Allowlist, error) {
	a := &Allowlist{entries: map[string][]netip.Prefix{}}
	anywhere := map[string]bool{}
	for i, raw := range strings.Split(spec, ",") {
		entry := strings.TrimSpace(raw)
		if entry == "" {
			continue
		}
		ae, nets, hasNets := strings.Cut(entry, "@")
		ae = strings.TrimSpace(ae)
		if err := checkAETitle(ae); err != nil {
			return nil, fmt.Errorf("accesscontrol: entry %d %q: %w", i+1, entry, err)
		}
		if !hasNets {
			anywhere[ae] = true
			a.entries[ae] = nil
			continue
		}
		if strings.TrimSpace(nets) == "" {
			return nil, fmt.Errorf("accesscontrol: entry %d %q: no networks after '@'", i+1, entry)
		}
		for _, n := range strings.Split(nets, "|") {
			p, err := netip.ParsePrefix(strings.TrimSpace(n))
			if err != nil {
				return nil, fmt.Errorf("accesscontrol: entry %d %q: network %q is not a CIDR like 10.0.0.0/24: %w", i+1, entry, n, err)
			}
			if p != p.Masked() {
				return nil, fmt.Errorf("accesscontrol: entry %d %q: network %s has host bits set (did you mean %s?)", i+1, entry, p, p.Masked())
			}
			if !anywhere[ae] {
				a.entries[ae] = append(a.entries[ae], p)
			}
		}
	}
	return a, nil
}

func checkAETitle(ae string) error {
	switch {
	case ae == "":
		return errors.New("empty AE title")
	case len(ae) > MaxAETitleLength:
		return fmt.Errorf("AE title longer than %d characters", MaxAETitleLength)
	}
	for i := 0; i < len(ae); i++ {
		// AE VR: default character repertoire without control characters or backslash.
		if c := ae[i]; c < 0x20 || c > 0x7e || c == '\\' {
			return fmt.Errorf("AE title has a character not allowed in an AE title at position %d", i+1)
		}
	}
	return nil
}

// Check reports whether callingAE may connect from src. A nil receiver
// admits everybody; src may be the zero Addr when the source is unknown,
// which only passes for AE titles admitted from anywhere.
func (a *Allowlist) Check(callingAE string, src netip.Addr) error {
	if a == nil {
		return nil
	}
	nets, ok := a.entries[strings.TrimSpace(callingAE)]
	if !ok {
		return ErrUnknownCallingAE
	}
	if nets == nil {
		return nil
	}
	src = src.Unmap()
	for _, p := range nets {
		if p.Contains(src) {
			return nil
		}
	}
	return ErrSourceNotAllowed
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

// String renders the allowlist in the syntax Parse reads.
func (a *Allowlist) String() string {
	var parts []string
	for _, ae := range a.AETitles() {
		nets := a.entries[ae]
		if nets == nil {
			parts = append(parts, ae)
			continue
		}
		s := make([]string, len(nets))
		for i, p := range nets {
			s[i] = p.String()
		}
		parts = append(parts, ae+"@"+strings.Join(s, "|"))
	}
	return strings.Join(parts, ",")
}
