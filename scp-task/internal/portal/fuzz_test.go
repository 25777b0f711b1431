package portal

import (
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
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

// FuzzRoutes: every route of the portal, given any query string, answers
// without a panic, a 5xx or an error logged: whatever a client sends in a
// query is the client's 400 at worst (routeTable names a path to each).
func FuzzRoutes(f *testing.F) {
	var logged testenv.LogBuffer
	srv, _ := newTestServerLogging(f, slog.New(slog.NewJSONHandler(&logged, &slog.HandlerOptions{Level: slog.LevelError})))
	for _, s := range []string{"limit=5&cursor=x", "from=2026-01-02&to=2026-01-01&status=has+rejects", "before=9223372036854775807&type=Instance+Stored",
		"since=0001-01-01&until=9999-12-31", "day=2026-02-29&outcome=stored", "patient=%2A%25_&accession=%27%3B--", "limit=1e9&cursor=1.1.1", "%zz&a=%",
		"offset=10&length=20&bytes=crc64nvme-0123456789abcdef", "offset=300&length=0", "offset=1&length=9223372036854775807", "bytes=etag-x",
		"offset=0", "offset=299&bytes=crc64nvme-0123456789abcdef"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for pattern, rt := range routeTable {
			req, err := http.NewRequest(http.MethodGet, srv.URL+rt.path+"?"+raw, nil)
			if err != nil {
				return
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", pattern, err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				t.Fatalf("%s: read the answer: %v", pattern, err)
			}
			if err := resp.Body.Close(); err != nil {
				t.Fatalf("%s: %v", pattern, err)
			}
			if resp.StatusCode >= 500 {
				t.Errorf("%s?%s: %d", rt.path, raw, resp.StatusCode)
			}
		}
		if s := logged.Take(); s != "" {
			t.Errorf("query %q: the portal logged an error: %s", raw, s)
		}
	})
}
