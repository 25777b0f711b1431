package portal

import (
	"context"
	"html"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// badParam is a query parameter given a value its route does not accept,
// and what the answer must say it accepts.
type badParam struct{ name, value, accepts string }

var (
	badLimits = []badParam{
		{"limit", "ten", "a number of rows, 0 or more"},
		{"limit", "-1", "a number of rows, 0 or more"},
		{"limit", "1.5", "a number of rows, 0 or more"},
	}
	badCursor     = []badParam{{"cursor", "x", "the next value of a previous page of the same query"}, {"cursor", "1.0", "the next value of a previous page of the same query"}}
	badStudyQuery = concat(badLimits, badCursor, []badParam{
		{"from", "2024-13", "a study date, yyyy-mm-dd or yyyymmdd"},
		{"to", "yesterday", "a study date, yyyy-mm-dd or yyyymmdd"},
		{"status", "lost", "receiving, stable or has rejects"},
		{"patient", "a b c d e f g h i j k l m n o p q", "at most 16 words"},
	})
	badAuditQuery = concat(badLimits, badCursor, []badParam{
		{"from", "yesterday", "a time: RFC 3339 or yyyy-mm-dd"},
		{"to", "2026-02-30", "a time: RFC 3339 or yyyy-mm-dd"},
		{"day", "2026-13-01", "a date, yyyy-mm-dd"},
		{"outcome", "resent", "stored, conflict, duplicate, rejected, association-accepted"},
	})
	badAssociationQuery = concat(badLimits, badCursor, []badParam{
		{"outcome", "closed", "open, association-released, association-aborted, association-rejected or unclean-stop"},
	})
	badEventQuery = concat(badLimits, []badParam{
		{"before", "x", "the next value of a previous page of the same query"},
		{"before", "0", "the next value of a previous page of the same query"},
		{"after", "-3", "an event's seq"},
		{"since", "soon", "a time: RFC 3339 or yyyy-mm-dd"},
		{"until", "2026-1-1", "a time: RFC 3339 or yyyy-mm-dd"},
		{"type", "study-received", "Instance Stored, Instance Rejected"},
	})
	// A bulk data URI's query (<objectUri>?offset=&length=&bytes=), each
	// value malformed; TestBulkDataURIs has those out of range.
	badBulkQuery = []badParam{
		{"offset", "x", "a byte offset in the object, a whole number of 0 or more (with length, a value's bytes; alone, the encapsulated value that starts there)"},
		{"length", "-1", "a number of bytes, a whole number of 0 or more, given with offset"},
		{"bytes", "crc64nvme-0/1", "the id of the object's bytes"},
	}
	badCommitmentQuery = concat(badLimits, badCursor, []badParam{{"outcome", "maybe", "success or failure"}})
)

// routeTable is, for each route of the portal, a path to it and its bad
// parameters (nil: it reads none).
var routeTable = map[string]struct {
	path string
	bad  []badParam
}{
	"GET /healthz":                     {"/healthz", nil},
	"GET /api/studies":                 {"/api/studies", badStudyQuery},
	"GET /api/studies/{uid}":           {"/api/studies/1.2.3", nil},
	"GET /api/audit":                   {"/api/audit", badAuditQuery},
	"GET /api/audit/associations":      {"/api/audit/associations", badAssociationQuery},
	"GET /api/audit/associations/{id}": {"/api/audit/associations/assoc-1", concat(badLimits, badCursor)},
	"GET /api/quarantine":              {"/api/quarantine", concat(badLimits, badCursor)},
	"GET /api/events":                  {"/api/events", badEventQuery},
	"GET /api/commitments":             {"/api/commitments", badCommitmentQuery},
	"GET /api/counters":                {"/api/counters", nil},
	"GET /objects/{key...}":            {objectPath, badBulkQuery},
	"GET /static/portal.css":           {"/static/portal.css", nil},
	"GET /{$}":                         {"/", badStudyQuery},
	"GET /studies/{uid}":               {"/studies/1.2.3", nil},
	"GET /studies/{uid}/series/{series}/thumbnail.png": {"/studies/1.2.3/series/1.2.3.1/thumbnail.png", nil},
	"GET /audit":                   {"/audit", badAssociationQuery},
	"GET /audit/associations/{id}": {"/audit/associations/assoc-1", concat(badLimits, badCursor)},
	"GET /audit/records":           {"/audit/records", badAuditQuery},
	"GET /quarantine":              {"/quarantine", concat(badLimits, badCursor)},
	"GET /events":                  {"/events", badEventQuery},
	"GET /commitments":             {"/commitments", badCommitmentQuery},
}

func concat(lists ...[]badParam) []badParam {
	var out []badParam
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// TestEveryRouteRefusesBadParameters: every route of the portal, page or
// API, answers each parameter it reads given a malformed or out-of-range
// value with a 400 whose message names the parameter and what it accepts,
// and ignores a parameter it does not know. The table is keyed by the
// router's own list, so a new route without a row fails here. The studies,
// audit, events and associations APIs took a bad limit for the default
// (only the commitments' was a 400), the audit trail took any outcome, the
// associations any outcome (reading the whole trail for it), and the pages
// answered 200.
func TestEveryRouteRefusesBadParameters(t *testing.T) {
	srv, db := newTestServer(t)
	if _, err := db.AuditStore().Append(context.Background(), pipeline.AuditRecord{ID: "as1", Time: t0, Outcome: associationaudit.EventAccepted,
		AssociationID: "assoc-1", CallingAE: "LOCAL_AE"}); err != nil {
		t.Fatal(err)
	}
	for _, rt := range (&Server{}).routes() {
		tt, ok := routeTable[rt.pattern]
		if !ok {
			t.Errorf("route %q has no row: add its path and the parameters it reads (nil for none)", rt.pattern)
			continue
		}
		t.Run(rt.pattern, func(t *testing.T) {
			if code, _, body := get(t, srv.URL+tt.path+"?unknown=%%%&zz=1", ""); code == 400 || code >= 500 {
				t.Errorf("unknown parameters: %d %s", code, body)
			}
			for _, b := range tt.bad {
				path := tt.path + "?" + url.Values{b.name: {b.value}}.Encode()
				code, _, body := get(t, srv.URL+path, "")
				msg := "portal: "
				if !strings.HasPrefix(tt.path, "/api/") {
					body = html.UnescapeString(body)
				}
				if code != 400 || !strings.Contains(body, msg) || !strings.Contains(body, b.name) || !strings.Contains(body, b.accepts) {
					t.Errorf("%s: %d %.300s\nwant 400 naming %q and %q", path, code, body, b.name, b.accepts)
				}
				// Given twice, each value good alone: the first was taken
				// and the second dropped unsaid.
				path = tt.path + "?" + url.Values{b.name: {"", ""}}.Encode()
				code, _, body = get(t, srv.URL+path, "")
				if !strings.HasPrefix(tt.path, "/api/") {
					body = html.UnescapeString(body)
				}
				if want := "portal: " + b.name + " is one value, given once"; code != 400 || !strings.Contains(body, want) {
					t.Errorf("%s: %d %.300s\nwant 400 saying %q", path, code, body, want)
				}
			}
		})
	}
}

// TestRepeatedParameterRefused: a parameter given twice is refused, not
// read as its first value: a consumer catching up on the study events
// with type=Study+Received&type=Study+Updated, as its EventBridge rule
// lists both, got the Study Received events alone.
func TestRepeatedParameterRefused(t *testing.T) {
	srv, _ := newTestServer(t)
	for _, path := range []string{
		"/api/events?after=0&type=Study+Received&type=Study+Updated",
		"/api/studies?modality=CT&modality=MR",
		"/api/audit?outcome=stored&outcome=rejected",
		"/api/events?after=0&after=5",
	} {
		code, _, body := get(t, srv.URL+path, "")
		if code != 400 || !strings.Contains(body, "is one value, given once") {
			t.Errorf("%s: %d %.300s, want 400: one value, given once", path, code, body)
		}
	}
}

// TestAuditTimeBounds: /api/audit's from and to are inclusive, and a date
// alone is the whole UTC day: from its first instant, to its last (the
// stores compare inclusively, so to=2026-01-02 has that day's last
// nanosecond and nothing of the next day).
func TestAuditTimeBounds(t *testing.T) {
	for _, tt := range []struct {
		name, value string
		end         bool
		want        time.Time
	}{
		{"from a date", "2026-01-02", false, time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)},
		{"to a date", "2026-01-02", true, time.Date(2026, 1, 2, 23, 59, 59, 999999999, time.UTC)},
		{"to a time", "2026-01-02T10:00:00.5Z", true, time.Date(2026, 1, 2, 10, 0, 0, 500000000, time.UTC)},
		{"to a time without zone", "2026-01-02T10:00", true, time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newParams(url.Values{"t": {tt.value}})
			if got := p.time("t", tt.end); !got.Equal(tt.want) || p.err() != nil {
				t.Errorf("%s = %v (%v), want %v", tt.value, got, p.err(), tt.want)
			}
		})
	}
}
