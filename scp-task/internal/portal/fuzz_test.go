package portal

import (
	"net/url"
	"path"
	"strings"
	"testing"
)

// FuzzSafeKey: a key the portal accepts can never leave its prefix.
func FuzzSafeKey(f *testing.F) {
	for _, s := range []string{"incoming/2026/01/02/1.2/1.3/1.4.dcm", "metadata/../audit/x", "quarantine/./x", "incoming//x", "incoming/%2e%2e/x", "metadata/a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if !safeKey(key) {
			return
		}
		if path.Clean(key) != key || strings.Contains("/"+key+"/", "/../") {
			t.Fatalf("accepted unclean key %q", key)
		}
		if strings.HasPrefix(key, "audit/") || strings.HasPrefix(key, "/") {
			t.Fatalf("accepted key outside the served prefixes %q", key)
		}
	})
}

// FuzzQueries: any query string is either parsed or refused, never a panic,
// and a parsed time window is what was asked for.
func FuzzQueries(f *testing.F) {
	for _, s := range []string{"patientId=P1&from=2026-01-02&to=2026-01-03", "from=2026-01-02T10:00:00Z", "to=x", "after=-1&since=2026-01-01T10:00", "limit=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := auditQuery(v)
		if err == nil && !q.From.IsZero() && !q.To.IsZero() && v.Get("from") == v.Get("to") && q.To.Before(q.From) {
			t.Fatalf("from %v after to %v for the same input", q.From, q.To)
		}
		if q.Limit < 0 {
			t.Fatalf("negative limit %d", q.Limit)
		}
		_, _ = eventFilter(v)
	})
}
