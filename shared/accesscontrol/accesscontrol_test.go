package accesscontrol

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/accesscontrol/aetitletest"
)

// TestAETitleRule holds CheckAETitle, and the allowlist's entries through it, to the callers' one table of AE
// titles: a title of spaces alone was taken for one.
func TestAETitleRule(t *testing.T) {
	for _, tc := range aetitletest.Titles {
		t.Run(tc.Name, func(t *testing.T) {
			err := CheckAETitle(tc.AE)
			if tc.Valid != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.Problem) {
				t.Errorf("CheckAETitle(%q) = %v, want valid %v (%s)", tc.AE, err, tc.Valid, tc.Problem)
			}
			a, err := Parse(tc.AE + "@10.0.0.0/8")
			switch {
			case !tc.Valid:
				if err == nil || !strings.Contains(err.Error(), tc.Problem) {
					t.Errorf("Parse took %q: %v, want %s", tc.AE, err, tc.Problem)
				}
			case err != nil:
				t.Errorf("Parse refused %q: %v", tc.AE, err)
			default:
				if _, err := a.Admit(Peer{CallingAE: tc.AE, Source: netip.MustParseAddr("10.1.2.3")}); err != nil {
					t.Errorf("the allowlist of %q refused it: %v", tc.AE, err)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		spec    string
		wantMsg string
	}{
		{"@10.0.0.0/8", "empty AE title"},
		{"ABCDEFGHIJKLMNOPQ", "at most 16"},
		{"SITE@", "no networks"},
		{"SITE@10.0.0.300/24", "not a CIDR"},
		{"SITE@10.0.0.1/24", "host bits set (did you mean 10.0.0.0/24?)"},
		{"SI\\TE", "cannot hold"},
		{"SITE@10.0.0.0/24|", "not a CIDR"},
		{"SITE#", "empty certificate name"},
		{"SITE@10.0.0.0/24#", "empty certificate name"},
		{"SITE#pacs site", "other than a letter"},
		{"SITE#a#b", "other than a letter"},
		{"SITE#" + strings.Repeat("a", 254), "longer than 253"},
		{"#pacs.example", "empty AE title"},
		{"SITE@#pacs.example", "no networks"},
		{"SITE#pacs.example,SITE@10.0.0.0/8", "with and without a certificate name"},
		{"SITE,SITE#pacs.example", "with and without a certificate name"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			_, err := Parse(tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.spec, err, tt.wantMsg)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	a, err := Parse(" LOCAL_AE , CT_A@10.10.0.0/24|192.168.5.7/32, CT_A@172.16.0.0/12, MR_B@fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ae, src string
		want    error
		msg     string // the error's message, when it matters
	}{
		{"LOCAL_AE", "203.0.113.9", nil, ""},
		{"LOCAL_AE  ", "", nil, ""}, // trailing spaces are not significant; unknown source fine for "anywhere"
		{"CT_A", "10.10.0.77", nil, ""},
		{"CT_A", "192.168.5.7", nil, ""},
		{"CT_A", "192.168.5.8", ErrSourceNotAllowed, ""},
		{"CT_A", "172.20.1.1", nil, ""}, // networks of repeated entries merge
		{"CT_A", "::ffff:10.10.0.5", nil, ""},
		{"CT_A", "", ErrSourceNotAllowed, ""},
		{"MR_B", "fd00::1", nil, ""},
		{"MR_B", "10.10.0.1", ErrSourceNotAllowed, ""},
		// AE titles are case-sensitive; one that differs from a listed
		// title only in case says which (it said "not in the allowlist"
		// alone, beside the listed title in other letters).
		{"local_ae", "10.10.0.1", ErrUnknownCallingAE, `accesscontrol: calling AE title not in the allowlist (it lists "LOCAL_AE": AE titles are matched case-sensitively)`},
		{" Ct_a ", "10.10.0.1", ErrUnknownCallingAE, `accesscontrol: calling AE title not in the allowlist (it lists "CT_A": AE titles are matched case-sensitively)`},
		{"EVIL", "10.10.0.1", ErrUnknownCallingAE, "accesscontrol: calling AE title not in the allowlist"},
	}
	for _, tt := range tests {
		t.Run(tt.ae+"/"+tt.src, func(t *testing.T) {
			var src netip.Addr
			if tt.src != "" {
				src = netip.MustParseAddr(tt.src)
			}
			err := a.Check(tt.ae, src)
			if !errors.Is(err, tt.want) {
				t.Errorf("Check(%q, %s) = %v, want %v", tt.ae, tt.src, err, tt.want)
			}
			if tt.msg != "" && (err == nil || err.Error() != tt.msg) {
				t.Errorf("Check(%q, %s) = %v, want the message %q", tt.ae, tt.src, err, tt.msg)
			}
		})
	}
}

// TestCaseVariantsNamed: a calling AE title that differs only in letter
// case from several listed titles (the list holds "ct_a" and "CT_A", two
// titles) is refused naming them all, in one order: it named one of them,
// picked by map order, so the same request was logged and audited with
// one reason or the other.
func TestCaseVariantsNamed(t *testing.T) {
	a, err := Parse("CT_A, ct_a, Ct_a@10.0.0.0/8, MR_B")
	if err != nil {
		t.Fatal(err)
	}
	const want = `accesscontrol: calling AE title not in the allowlist (it lists "CT_A", "Ct_a" and "ct_a": AE titles are matched case-sensitively)`
	for range 50 {
		err := a.Check("cT_A", netip.MustParseAddr("10.1.2.3"))
		if !errors.Is(err, ErrUnknownCallingAE) || err.Error() != want {
			t.Fatalf("Check = %v, want %q", err, want)
		}
	}
}

func TestNilAndZero(t *testing.T) {
	var none *Allowlist
	if err := none.Check("ANY", netip.Addr{}); err != nil {
		t.Errorf("nil allowlist must admit everybody, got %v", err)
	}
	empty, err := Parse("")
	if err != nil {
		t.Fatal(err)
	}
	if err := empty.Check("ANY", netip.Addr{}); !errors.Is(err, ErrUnknownCallingAE) {
		t.Errorf("empty allowlist must admit nobody, got %v", err)
	}
}

func TestStringRoundTrip(t *testing.T) {
	a, err := Parse("B@10.0.0.0/8|10.1.0.0/16,A,B@192.168.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	want := "A,B@10.0.0.0/8|10.1.0.0/16|192.168.0.0/16"
	if got := a.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	a, err = Parse("C#z.example, B@10.0.0.0/8#y.example,C@10.0.0.0/8#a.example, B#y.example, A")
	if err != nil {
		t.Fatal(err)
	}
	want = "A,B#y.example,C@10.0.0.0/8#a.example,C#z.example"
	if got := a.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	b, err := Parse(a.String())
	if err != nil || b.String() != want {
		t.Fatalf("round trip: %v %q", err, b.String())
	}
}

func TestAdmit(t *testing.T) {
	a, err := Parse("PLAIN@10.0.0.0/8, SITE_A@10.1.0.0/16#pacs.site-a.example, SITE_A@10.2.0.0/16#pacs2.site-a.example, ANY_TLS#Gateway.Example")
	if err != nil {
		t.Fatal(err)
	}
	cert := func(cn string, dns ...string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: []string{"Site"}}, DNSNames: dns}
	}
	withURI := func(c *x509.Certificate, uri string) *x509.Certificate {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		c.URIs = append(c.URIs, u)
		return c
	}
	tests := []struct {
		name     string
		peer     Peer
		wantName string
		want     error
	}{
		{"unbound AE without TLS", Peer{CallingAE: "PLAIN", Source: netip.MustParseAddr("10.3.4.5")}, "", nil},
		{"unbound AE with any certificate", Peer{CallingAE: "PLAIN", Source: netip.MustParseAddr("10.3.4.5"), Certificate: cert("whoever")}, "", nil},
		{"unbound AE from elsewhere", Peer{CallingAE: "PLAIN", Source: netip.MustParseAddr("192.168.1.1")}, "", ErrSourceNotAllowed},
		{"bound AE by subject CN", Peer{CallingAE: "SITE_A", Source: netip.MustParseAddr("10.1.0.9"), Certificate: cert("pacs.site-a.example")}, "pacs.site-a.example", nil},
		{"bound AE by DNS SAN", Peer{CallingAE: "SITE_A", Source: netip.MustParseAddr("10.1.0.9"), Certificate: cert("PACS", "other.example", "pacs.site-a.example")}, "pacs.site-a.example", nil},
		{"names compare case-insensitively", Peer{CallingAE: "SITE_A", Source: netip.MustParseAddr("10.1.0.9"), Certificate: cert("PACS.Site-A.Example")}, "pacs.site-a.example", nil},
		{"second entry's network and name", Peer{CallingAE: "SITE_A", Source: netip.MustParseAddr("10.2.0.9"), Certificate: cert("pacs2.site-a.example")}, "pacs2.site-a.example", nil},
		{"other entry's name from this network", Peer{CallingAE: "SITE_A", Source: netip.MustParseAddr("10.1.0.9"), Certificate: cert("pacs2.site-a.example")}, "", ErrCertificateMismatch},
		{"bound AE without a certificate", Peer{CallingAE: "SITE_A", Source: netip.MustParseAddr("10.1.0.9")}, "", ErrCertificateRequired},
		{"bound AE with the wrong certificate", Peer{CallingAE: "SITE_A", Source: netip.MustParseAddr("10.1.0.9"), Certificate: cert("pacs.site-b.example", "site-b.example")}, "", ErrCertificateMismatch},
		{"subject CN beside DNS SANs that do not name it", Peer{CallingAE: "SITE_A", Source: netip.MustParseAddr("10.1.0.9"), Certificate: cert("pacs.site-a.example", "host7.site-b.example")}, "", ErrCertificateMismatch},
		{"subject CN beside a URI SAN", Peer{CallingAE: "SITE_A", Source: netip.MustParseAddr("10.1.0.9"), Certificate: withURI(cert("pacs.site-a.example"), "urn:site-b")}, "", ErrCertificateMismatch},
		{"wildcard SAN is not expanded", Peer{CallingAE: "SITE_A", Source: netip.MustParseAddr("10.1.0.9"), Certificate: cert("x", "*.site-a.example")}, "", ErrCertificateMismatch},
		{"bound AE from outside its networks", Peer{CallingAE: "SITE_A", Source: netip.MustParseAddr("10.9.0.9"), Certificate: cert("pacs.site-a.example")}, "", ErrSourceNotAllowed},
		{"bound AE from anywhere", Peer{CallingAE: "ANY_TLS", Certificate: cert("gateway.example")}, "Gateway.Example", nil},
		{"unknown AE", Peer{CallingAE: "EVIL", Certificate: cert("pacs.site-a.example")}, "", ErrUnknownCallingAE},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, err := a.Admit(tt.peer)
			if !errors.Is(err, tt.want) || name != tt.wantName {
				t.Errorf("Admit = %q, %v; want %q, %v", name, err, tt.wantName, tt.want)
			}
		})
	}
	if err := a.Check("SITE_A", netip.MustParseAddr("10.1.0.9")); !errors.Is(err, ErrCertificateRequired) {
		t.Errorf("Check of a bound AE = %v, want ErrCertificateRequired", err)
	}
	_, err = a.Admit(Peer{CallingAE: "SITE_A", Source: netip.MustParseAddr("10.1.0.9"), Certificate: cert("nope")})
	if err == nil || !strings.Contains(err.Error(), "bound to pacs.site-a.example") {
		t.Errorf("mismatch error %v does not name the wanted certificate", err)
	}
	if !a.BindsCertificates() {
		t.Error("BindsCertificates = false")
	}
	if plain, _ := Parse("A,B@10.0.0.0/8"); plain.BindsCertificates() {
		t.Error("BindsCertificates of a plain allowlist = true")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"LOCAL_AE", "A@10.0.0.0/8|fd00::/8,B", "@", ",,,", "A@", "A@1.2.3.4/33", "\x00@\xff",
		"A#pacs.example", "A@10.0.0.0/8#x,A@10.1.0.0/16#x,A#y", "#", "A##", "A@#", "A,A#b", "A#b@10.0.0.0/8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		a, err := Parse(spec)
		if err != nil {
			return
		}
		// What parses must render to something that parses to the same thing.
		b, err := Parse(a.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", a.String(), err)
		}
		if a.String() != b.String() {
			t.Fatalf("round trip changed %q to %q", a.String(), b.String())
		}
		_ = a.Check("A", netip.MustParseAddr("10.0.0.1"))
		for _, ae := range a.AETitles() {
			for _, name := range []string{"", "pacs.example", "x"} {
				// Admit never panics, and what it admits under a name
				// the certificate carries.
				c := &x509.Certificate{Subject: pkix.Name{CommonName: name}}
				got, err := a.Admit(Peer{CallingAE: ae, Source: netip.MustParseAddr("10.0.0.1"), Certificate: c})
				if err == nil && got != "" && !CertificateHasName(c, got) {
					t.Fatalf("admitted %q with certificate %q under name %q", ae, name, got)
				}
			}
		}
	})
}
