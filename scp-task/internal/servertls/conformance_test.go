package servertls

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestConformanceStatementCipherSuites: the cipher suites conformance.md's
// Security section names are the ones the listener offers, in its order:
// TLS 1.2's are CipherSuites, TLS 1.3's Go's own (not configurable).
func TestConformanceStatementCipherSuites(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "conformance.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Join(strings.Fields(string(b)), " ")
	var tls13 []string
	for _, s := range tls.CipherSuites() {
		if slices.Equal(s.SupportedVersions, []uint16{tls.VersionTLS13}) {
			tls13 = append(tls13, s.Name)
		}
	}
	var tls12 []string
	for _, id := range CipherSuites {
		tls12 = append(tls12, tls.CipherSuiteName(id))
	}
	for _, tc := range []struct {
		what, from, to string
		want           []string
	}{
		{"TLS 1.2", "TLS 1.2 cipher suites: ", " (the ECDHE AES-GCM suites", tls12},
		{"TLS 1.3", "; TLS 1.3: ", " (Go's, not configurable)", tls13},
	} {
		t.Run(tc.what, func(t *testing.T) {
			_, rest, ok := strings.Cut(doc, tc.from)
			list, _, ok2 := strings.Cut(rest, tc.to)
			if !ok || !ok2 {
				t.Fatalf("conformance.md does not say %q…%q", tc.from, tc.to)
			}
			var got []string
			for _, m := range regexp.MustCompile("`([A-Z0-9_]+)`").FindAllStringSubmatch(list, -1) {
				got = append(got, m[1])
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("conformance.md names the %s cipher suites %q; the listener offers %q", tc.what, got, tc.want)
			}
		})
	}
}
