package portal

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// seedPages gives every paged API of the test server (newTestServer's
// data) rows enough to page through one at a time under two filters:
// studies from two AE titles, associations from two AE titles with
// records, Storage Commitment transactions from two AE titles, and
// events of two types.
func seedPages(t *testing.T, db *localstore.DB) {
	t.Helper()
	ctx := context.Background()
	ix := db.IndexStore()
	for i, ae := range []string{"SITE_B", "SITE_B", "LOCAL_AE"} {
		study := fmt.Sprint("1.2.5.", i)
		if _, err := ix.UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: study, SeriesInstanceUID: study + ".1", SOPInstanceUID: study + ".1.1",
			ContentIdentity: study + ".1.1", Modality: "CT", PatientID: "P" + study, CallingAE: ae, Size: 10, ReceivedAt: t0.Add(time.Duration(10+i) * time.Minute),
			ObjectKey: "incoming/2026/11/26/" + study + ".dcm", MetadataKey: "metadata/" + study + ".json"}); err != nil {
			t.Fatal(err)
		}
	}
	au := db.AuditStore()
	for i, ae := range []string{"SITE_B", "LOCAL_AE", "SITE_B", "LOCAL_AE"} {
		id := fmt.Sprint("assoc-", i+1)
		at := t0.Add(time.Duration(20+i) * time.Minute)
		for j, outcome := range []string{associationaudit.EventAccepted, pipeline.OutcomeStored, pipeline.OutcomeStored, associationaudit.EventReleased} {
			if _, err := au.Append(ctx, pipeline.AuditRecord{ID: fmt.Sprint(id, "-", j), Time: at.Add(time.Duration(j) * time.Second), Outcome: outcome,
				AssociationID: id, CallingAE: ae, CalledAE: "REMOTE_AE"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	cs := db.CommitmentStore()
	for i, ae := range []string{"PACS_A", "PACS_B", "PACS_A", "PACS_B"} {
		id := fmt.Sprint("tx", i)
		if _, _, err := cs.CreateCommitment(ctx, pipeline.CommitmentTransaction{ID: id, TransactionUID: fmt.Sprint("1.2.8.", i), CallingAE: ae, RefCount: 1,
			ReceivedAt: t0.Add(time.Duration(i) * time.Minute), WaitUntil: t0.Add(time.Hour), State: pipeline.CommitmentPending}); err != nil {
			t.Fatal(err)
		}
	}
	var evs []pipeline.Event
	for i := range 4 {
		dt := pipeline.DetailTypeInstanceStored
		if i%2 == 1 {
			dt = pipeline.DetailTypeStudyUpdated
		}
		evs = append(evs, pipeline.Event{ID: fmt.Sprint("ev", i), DetailType: dt, Time: t0.Add(time.Duration(i+1) * time.Second),
			Detail: json.RawMessage(`{"studyInstanceUid":"1.2.3"}`)})
	}
	if _, err := db.Outbox(nil).Publish(ctx, evs); err != nil {
		t.Fatal(err)
	}
}

// cursorAPIs are the portal's paged APIs: the path and filters of a
// query, the same path with other filters and with a filter added ("":
// it has none to add; a cursor of the first is one of neither), the
// parameter that takes the cursor, and the list a page holds.
var cursorAPIs = []struct {
	name, path, other, added, param, list string
}{
	{"studies", "/api/studies?callingAe=SITE_B", "/api/studies?modality=CT", "&status=stable", "cursor", "studies"},
	{"audit", "/api/audit?callingAe=LOCAL_AE", "/api/audit?callingAe=SITE_B", "&from=2000-01-01", "cursor", "records"},
	{"quarantine", "/api/quarantine?", "/api/audit?callingAe=LOCAL_AE", "", "cursor", "records"},
	{"associations", "/api/audit/associations?callingAe=SITE_B", "/api/audit/associations?callingAe=LOCAL_AE", "&outcome=association-released", "cursor", "associations"},
	{"association records", "/api/audit/associations/assoc-1?", "/api/audit/associations/assoc-2?", "", "cursor", "records"},
	{"commitments", "/api/commitments?callingAe=PACS_A", "/api/commitments?outcome=success", "&outcome=failure", "cursor", "commitments"},
	{"events", "/api/events?type=Instance+Stored", "/api/events?type=Study+Updated", "&since=2000-01-01", "before", "events"},
}

// apiPage is a page of a paged API: its list's items as served, and
// next.
func apiPage(t *testing.T, base, path, list string) (code int, items []json.RawMessage, next, body string) {
	t.Helper()
	code, _, body = get(t, base+path, "")
	if code != 200 {
		return code, nil, "", body
	}
	var page map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatalf("%s: %v %.300s", path, err, body)
	}
	if err := json.Unmarshal(page[list], &items); err != nil {
		t.Fatalf("%s: %s: %v %.300s", path, list, err, body)
	}
	if n, ok := page["next"]; ok {
		if err := json.Unmarshal(n, &next); err != nil {
			t.Fatalf("%s: next: %v", path, err)
		}
	}
	return code, items, next, body
}

// TestCursorsAreSealedToTheirQuery: every paged API continues a query
// with the cursor its page handed out, one row a page, to the rows one
// page holds; and refuses, with a 400 naming the cursor's parameter
// (never a 500, never a page), a cursor handed out for other filters (of
// another association, for its records), one tampered with (its place in
// the rows moved, its seal cut or altered) and one that is no cursor.
// Only the audit's cursor was sealed: the others took another query's
// cursor and served that query's rows from the first one's place, and a
// moved place anywhere.
func TestCursorsAreSealedToTheirQuery(t *testing.T) {
	srv, db := newTestServer(t)
	seedPages(t, db)
	for _, api := range cursorAPIs {
		t.Run(api.name, func(t *testing.T) {
			code, all, next, body := apiPage(t, srv.URL, api.path+"&limit=1000", api.list)
			if code != 200 || len(all) < 2 || next != "" {
				t.Fatalf("every row: %d, %d rows, next %q: %.300s", code, len(all), next, body)
			}
			// A walk one row a page reads every row once, in order.
			var walked []json.RawMessage
			var first string
			cursor := ""
			for range len(all) + 1 {
				path := api.path + "&limit=1"
				if cursor != "" {
					path += "&" + url.Values{api.param: {cursor}}.Encode()
				}
				code, items, next, body := apiPage(t, srv.URL, path, api.list)
				if code != 200 {
					t.Fatalf("%s: %d %.300s", path, code, body)
				}
				walked = append(walked, items...)
				if first == "" {
					first = next
				}
				if cursor = next; cursor == "" {
					break
				}
			}
			if got, want := fmt.Sprintf("%s", walked), fmt.Sprintf("%s", all); got != want {
				t.Errorf("walked one a page:\n%s\nwant\n%s", got, want)
			}
			place, seal, sealed := strings.Cut(first, "~")
			if !sealed {
				t.Errorf("first page's next %q is not sealed", first)
			}
			for _, tt := range []struct{ name, path, cursor string }{
				{"other filters", api.other, first},
				{"a filter added", api.path + api.added, first},
				{"place moved", api.path, place + "1~" + seal},
				{"place moved back", api.path, strings.TrimSuffix(place, place[len(place)-1:]) + "~" + seal},
				{"seal altered", api.path, place + "~" + strings.ToUpper(seal)},
				{"seal cut", api.path, place + "~" + seal[:len(seal)-1]},
				{"seal dropped", api.path, place},
				{"seal alone", api.path, "~" + seal},
				{"malformed", api.path, "x"},
				{"malformed seal", api.path, "x~y"},
				{"separator alone", api.path, "~"},
				{"not UTF-8", api.path, "\xff~\xfe"},
			} {
				if tt.path == api.path && tt.name == "a filter added" {
					continue
				}
				path := tt.path + "&limit=1&" + url.Values{api.param: {tt.cursor}}.Encode()
				code, _, body := get(t, srv.URL+path, "")
				if want := "portal: " + api.param + " is the next value of a previous page"; code != 400 || !strings.Contains(body, want) {
					t.Errorf("%s: %s: %d %.300s\nwant 400 saying %q", tt.name, path, code, body, want)
				}
			}
		})
	}
}

// TestBadCursorInItsFormat: a cursor the store refuses is answered in the
// format of what was asked, by every page and API alike: a page is the
// page (HTML, 400) saying which parameter to mend, an API a JSON error
// naming it. The single association's page answered a plain-text 400,
// which a browser shows as a bare line without the portal around it.
func TestBadCursorInItsFormat(t *testing.T) {
	srv, db := newTestServer(t)
	seedPages(t, db)
	for _, tt := range []struct{ path, param string }{
		{"/", "cursor"},
		{"/audit", "cursor"},
		{"/audit/records", "cursor"},
		{"/audit/associations/assoc-1", "cursor"},
		{"/quarantine", "cursor"},
		{"/commitments", "cursor"},
		{"/events", "before"},
		{"/api/studies", "cursor"},
		{"/api/audit", "cursor"},
		{"/api/audit/associations", "cursor"},
		{"/api/audit/associations/assoc-1", "cursor"},
		{"/api/quarantine", "cursor"},
		{"/api/commitments", "cursor"},
		{"/api/events", "before"},
	} {
		t.Run(tt.path, func(t *testing.T) {
			code, h, body := get(t, srv.URL+tt.path+"?"+tt.param+"=junk", "")
			want := cursorFault(tt.param)
			if code != 400 {
				t.Errorf("%d %.300s; want 400", code, body)
			}
			if strings.HasPrefix(tt.path, "/api/") {
				var e struct{ Error string }
				if ct := h.Get("Content-Type"); ct != "application/json" || json.Unmarshal([]byte(body), &e) != nil || e.Error != want {
					t.Errorf("%s %.300s; want a JSON error %q", ct, body, want)
				}
				return
			}
			if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || !strings.Contains(body, `<p class="error">`+want+"</p>") || !strings.Contains(body, "</html>") {
				t.Errorf("%s %.500s; want the page saying %q", ct, body, want)
			}
		})
	}
}
