package accesscontrol

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	tests := []struct {
		spec    string
		wantMsg string
	}{
		{"@10.0.0.0/8", "empty AE title"},
		{"ABCDEFGHIJKLMNOPQ", "longer than 16"},
		{"SITE@", "no networks"},
		{"SITE@10.0.0.300/24", "not a CIDR"},
		{"SITE@10.0.0.1/24", "host bits set (did you mean 10.0.0.0/24?)"},
		{"SI\\TE", "character not allowed"},
		{"SITE@10.0.0.0/24|", "not a CIDR"},
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
	}{
		{"LOCAL_AE", "203.0.113.9", nil},
		{"LOCAL_AE  ", "", nil}, // trailing spaces are not significant; unknown source fine for "anywhere"
		{"CT_A", "10.10.0.77", nil},
		{"CT_A", "192.168.5.7", nil},
		{"CT_A", "192.168.5.8", ErrSourceNotAllowed},
		{"CT_A", "172.20.1.1", nil}, // networks of repeated entries merge
		{"CT_A", "::ffff:10.10.0.5", nil},
		{"CT_A", "", ErrSourceNotAllowed},
		{"MR_B", "fd00::1", nil},
		{"MR_B", "10.10.0.1", ErrSourceNotAllowed},
		{"local_ae", "10.10.0.1", ErrUnknownCallingAE}, // AE titles are case-sensitive
		{"EVIL", "10.10.0.1", ErrUnknownCallingAE},
	}
	for _, tt := range tests {
		t.Run(tt.ae+"/"+tt.src, func(t *testing.T) {
			var src netip.Addr
			if tt.src != "" {
				src = netip.MustParseAddr(tt.src)
			}
			if err := a.Check(tt.ae, src); !errors.Is(err, tt.want) {
				t.Errorf("Check(%q, %s) = %v, want %v", tt.ae, tt.src, err, tt.want)
			}
		})
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
	b, err := Parse(a.String())
	if err != nil || b.String() != want {
		t.Fatalf("round trip: %v %q", err, b.String())
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"LOCAL_AE", "A@10.0.0.0/8|fd00::/8,B", "@", ",,,", "A@", "A@1.2.3.4/33", "\x00@\xff"} {
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
	})
}
