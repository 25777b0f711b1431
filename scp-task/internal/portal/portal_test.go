package portal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"html/template"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/filestore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

type dirOpener string

func (d dirOpener) Open(_ context.Context, key string) (io.ReadCloser, error) {
	return os.Open(filepath.Join(string(d), filepath.FromSlash(key)))
}

// Head reports the file's size and CRC-64/NVME, as local mode's files do.
func (d dirOpener) Head(ctx context.Context, key string) (pipeline.ObjectInfo, error) {
	p := filepath.Join(string(d), filepath.FromSlash(key))
	st, err := os.Stat(p)
	if err != nil {
		return pipeline.ObjectInfo{}, fmt.Errorf("test: %w: %w", pipeline.ErrNotFound, err)
	}
	sum, err := filestore.FileCRC64NVME(ctx, p)
	if err != nil {
		return pipeline.ObjectInfo{}, err
	}
	return pipeline.ObjectInfo{Key: key, Size: st.Size(), ChecksumCRC64NVME: sum}, nil
}

// OpenRange is the thumbnail renderer's Opener.
func (d dirOpener) OpenRange(_ context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	f, err := os.Open(filepath.Join(string(d), filepath.FromSlash(key)))
	if err != nil {
		return nil, err
	}
	if length < 0 {
		length = math.MaxInt64 - offset // to the end
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, offset, length), f}, nil
}

func openDB(t testing.TB) *localstore.DB {
	t.Helper()
	db, err := localstore.Open(context.Background(), filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func newTestServer(t *testing.T) (*httptest.Server, *localstore.DB) {
	t.Helper()
	return newTestServerLogging(t, errorLogger(t))
}

// newTestServerLogging is newTestServer logging to logger.
// Each of with changes the server before it serves.
func newTestServerLogging(t testing.TB, logger *slog.Logger, with ...func(*Server)) (*httptest.Server, *localstore.DB) {
	t.Helper()
	ctx := context.Background()
	db := openDB(t)
	ix := db.IndexStore()
	for i, sop := range []string{"1.2.3.1.1", "1.2.3.1.2", "1.2.3.2.1"} {
		series := sop[:len("1.2.3.1")]
		if _, err := ix.UpsertInstance(ctx, pipeline.InstanceRecord{
			StudyInstanceUID: "1.2.3", SeriesInstanceUID: series, SOPInstanceUID: sop, ContentIdentity: sop,
			Modality: "MR", SeriesNumber: series[len(series)-1:], PatientID: "PID<1>", PatientName: "Doe^<script>alert(1)</script>",
			StudyDescription: "Brain & spine", CallingAE: "LOCAL_AE", Size: 10, ReceivedAt: t0.Add(time.Duration(i) * time.Second),
			ObjectKey: "incoming/2026/11/26/1.2.3/" + series + "/" + sop + ".dcm", MetadataKey: "metadata/" + sop + ".json",
		}); err != nil {
			t.Fatal(err)
		}
	}
	au := db.AuditStore()
	for _, r := range []pipeline.AuditRecord{
		{ID: "1", Time: t0, Outcome: "stored", CallingAE: "LOCAL_AE", CalledAE: "REMOTE_AE", PatientID: "PID<1>", StudyInstanceUID: "1.2.3", SOPInstanceUID: "1.2.3.1.1"},
		{ID: "2", Time: t0.Add(time.Second), Outcome: "association-rejected", CallingAE: "EVIL_AE", CalledAE: "REMOTE_AE", Reason: "calling AE not allowed"},
		{ID: "3", Time: t0.Add(2 * time.Second), Outcome: pipeline.OutcomeRejected, CallingAE: "LOCAL_AE", StudyInstanceUID: "1.2.3", SOPInstanceUID: "1.2.3.9",
			ObjectKey: "incoming/2026/01/15/1.2.3/1.2.3.1/1.2.3.9.dcm",
			Findings:  []pipeline.Finding{{Code: "uid-syntax", Severity: pipeline.SeverityError, Tag: "(0008,0018)", Message: "bad <uid>"}}},
		// A rejected record that names its copy (each content's copy is
		// named after its bytes: pipeline.QuarantineKeys).
		{ID: "4", Time: t0.Add(3 * time.Second), Outcome: pipeline.OutcomeRejected, CallingAE: "LOCAL_AE", StudyInstanceUID: "1.2.4", SOPInstanceUID: "1.2.4.8",
			ObjectKey: "incoming/2026/01/15/1.2.4/1.2.4.1/1.2.4.8.dcm", QuarantineKey: "quarantine/2026/01/15/1.2.4/1.2.4.1/1.2.4.8.crc64nvme-0123456789abcdef.dcm",
			Findings: []pipeline.Finding{{Code: "uid-syntax", Severity: pipeline.SeverityError, Tag: "(0008,0018)", Message: "bad <uid>"}}},
	} {
		if _, err := au.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Outbox(nil).Publish(ctx, []pipeline.Event{{ID: "e1", DetailType: pipeline.DetailTypeStudyReceived, Time: t0, Detail: json.RawMessage(`{"studyInstanceUid":"1.2.3"}`)}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "metadata"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "metadata", "1.2.3.1.1.json"), []byte(`{"00080018":{"vr":"UI"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	writeTestObject(t, dir)
	for _, part := range []string{"results", "requests"} {
		if err := os.MkdirAll(filepath.Join(dir, "commitment", part), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "commitment", part, "tx0.json"), []byte(`{"transactionUid":"1.2.8.0"}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{Studies: ix, Search: db, Audit: au, Associations: db, Events: db, Objects: dirOpener(dir), Commitments: db.CommitmentStore(),
		Counters: func(context.Context) Counters { return Counters{Associations: 7, InstancesPerSecond: 2.5} },
		Logger:   logger}
	for _, f := range with {
		f(s)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv, db
}

// appendRefused appends the audit record of a C-STORE of sop, in study,
// that the SCP refused C001 for its pixel data cut short, as the audit
// function appends it.
func appendRefused(t *testing.T, db *localstore.DB, association, study, sop string) {
	t.Helper()
	if _, err := db.AuditStore().Append(context.Background(), pipeline.AssociationAuditRecord(associationaudit.Record{SchemaVersion: 1,
		Event: associationaudit.EventStoreFailed, Time: t0, AssociationID: association, CallingAE: "PACS", Seq: 3, Status: "C001",
		Reason: "dataset ends inside an element at (7FE0,0010)", SOPInstanceUID: sop, StudyInstanceUID: study, SeriesInstanceUID: study + ".1"},
		"test")); err != nil {
		t.Fatal(err)
	}
}

// errorLog fails the test on every line logged to it: nothing the tests
// ask of the portal is an error of the portal's (a bad cursor or filter
// is the request's, answered 400 and not logged).
type errorLog struct{ t *testing.T }

// errorLogger is a JSON logger that fails t on each error it logs.
func errorLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewJSONHandler(errorLog{t}, &slog.HandlerOptions{Level: slog.LevelError}))
}

func (e errorLog) Write(p []byte) (int, error) {
	e.t.Errorf("portal logged an error: %s", p)
	return len(p), nil
}

func get(t *testing.T, url string, host string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestAPI(t *testing.T) {
	srv, _ := newTestServer(t)
	t.Run("studies", func(t *testing.T) {
		code, _, body := get(t, srv.URL+"/api/studies", "")
		var out struct{ Studies []Study }
		if err := json.Unmarshal([]byte(body), &out); err != nil || code != 200 {
			t.Fatalf("%d %v %s", code, err, body)
		}
		if len(out.Studies) != 1 {
			t.Fatalf("studies: %s", body)
		}
		s := out.Studies[0]
		if s.SeriesCount != 2 || s.InstanceCount != 3 || s.Status != "has rejects" || s.Rejects != 1 {
			t.Errorf("study %+v", s)
		}
	})
	t.Run("study", func(t *testing.T) {
		code, _, body := get(t, srv.URL+"/api/studies/1.2.3", "")
		var p StudyPage
		if err := json.Unmarshal([]byte(body), &p); err != nil || code != 200 {
			t.Fatalf("%d %v", code, err)
		}
		if len(p.Series) != 2 || len(p.Instances) != 3 || len(p.Quarantined) != 1 || p.Quarantined[0].Findings[0].Code != "uid-syntax" {
			t.Errorf("detail %+v", p)
		}
		if code, _, _ := get(t, srv.URL+"/api/studies/9.9.9", ""); code != 404 {
			t.Errorf("missing study: %d", code)
		}
	})
	audit := []struct {
		query string
		want  []string
		code  int
	}{
		{"", []string{"4", "3", "2", "1"}, 200},
		{"?callingAe=EVIL_AE", []string{"2"}, 200},
		{"?outcome=association-rejected", []string{"2"}, 200},
		{"?patientId=PID%3C1%3E", []string{"1"}, 200},
		{"?studyUid=1.2.3", []string{"3", "1"}, 200},
		{"?from=2026-11-26T10:00:01Z&to=2026-11-26T10:00:01Z", []string{"2"}, 200},
		{"?to=2026-11-25", nil, 200},
		{"?from=yesterday", nil, 400},
	}
	for _, tt := range audit {
		t.Run("audit"+tt.query, func(t *testing.T) {
			code, _, body := get(t, srv.URL+"/api/audit"+tt.query, "")
			if code != tt.code {
				t.Fatalf("code %d: %s", code, body)
			}
			if code != 200 {
				return
			}
			var out struct{ Records []pipeline.AuditRecord }
			if err := json.Unmarshal([]byte(body), &out); err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range out.Records {
				ids = append(ids, r.ID)
			}
			if strings.Join(ids, ",") != strings.Join(tt.want, ",") {
				t.Errorf("ids %v, want %v", ids, tt.want)
			}
		})
	}
	t.Run("events", func(t *testing.T) {
		_, _, body := get(t, srv.URL+"/api/events?type=Study+Received", "")
		if !strings.Contains(body, `"detail-type": "Study Received"`) {
			t.Errorf("events: %s", body)
		}
		_, _, body = get(t, srv.URL+"/api/events?type=Study+Updated", "")
		if strings.Contains(body, "Study Received") {
			t.Errorf("filter ignored: %s", body)
		}
	})
	t.Run("healthz", func(t *testing.T) {
		if code, _, body := get(t, srv.URL+"/healthz", ""); code != 200 || body != "ok\n" {
			t.Errorf("%d %q", code, body)
		}
	})
}

func TestPagesEscapeAndLink(t *testing.T) {
	srv, _ := newTestServer(t)
	pages := []struct {
		path string
		want []string
	}{
		{"/", []string{`href="/studies/1.2.3"`, "Doe &lt;script&gt;alert(1)&lt;/script&gt;", "Brain &amp; spine", "has rejects", "<b>7</b> accepted", "2.5"}},
		{"/studies/1.2.3", []string{`data-series-uid="1.2.3.1"`, `data-series-uid="1.2.3.2"`, `href="/objects/metadata/1.2.3.1.1.json"`, "bad &lt;uid&gt;"}},
		{"/audit/records?callingAe=EVIL_AE", []string{"association-rejected", "EVIL_AE", `value="EVIL_AE"`}},
		// The quarantined copy and its findings, not the incoming object;
		// each was announced, as Instance Rejected (the page said that
		// nothing was announced for them).
		{"/quarantine", []string{"uid-syntax", "(0008,0018)", `href="/objects/quarantine/2026/01/15/1.2.3/1.2.3.1/1.2.3.9.dcm"`,
			`href="/objects/quarantine/2026/01/15/1.2.3/1.2.3.1/1.2.3.9.findings.json"`, "<code>Instance Rejected</code> event",
			// A record naming its copy links that copy, not one named
			// after its object key.
			`href="/objects/quarantine/2026/01/15/1.2.4/1.2.4.1/1.2.4.8.crc64nvme-0123456789abcdef.dcm"`,
			`href="/objects/quarantine/2026/01/15/1.2.4/1.2.4.1/1.2.4.8.crc64nvme-0123456789abcdef.findings.json"`}},
		{"/events", []string{"Study Received"}},
	}
	for _, p := range pages {
		t.Run(p.path, func(t *testing.T) {
			code, h, body := get(t, srv.URL+p.path, "")
			if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
				t.Fatalf("%d %s", code, h.Get("Content-Type"))
			}
			if strings.Contains(body, "<script>") {
				t.Error("unescaped script tag")
			}
			for _, w := range p.want {
				if !strings.Contains(body, w) {
					t.Errorf("missing %q", w)
				}
			}
			if !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'none'") || h.Get("Cache-Control") != "no-store" {
				t.Errorf("headers %v", h)
			}
			if strings.Contains(body, "http://") || strings.Contains(body, "https://") {
				t.Error("page references an external URL")
			}
		})
	}
}

// TestEmptyTablesSpanTheirColumns: on a portal with nothing in it, each
// list page's "nothing yet" row spans every column of its table (the
// audit trail's spanned 8 of its 10).
func TestEmptyTablesSpanTheirColumns(t *testing.T) {
	db := openDB(t)
	s := &Server{Studies: db.IndexStore(), Search: db, Audit: db.AuditStore(), Associations: db, Events: db,
		Objects: dirOpener(t.TempDir()), Commitments: db.CommitmentStore(), Logger: errorLogger(t)}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	tables := regexp.MustCompile(`(?s)<table[ >].*?</table>`)
	emptyRow := regexp.MustCompile(`<td colspan="(\d+)" class="empty">`)
	for _, path := range []string{"/", "/audit", "/audit/records", "/quarantine", "/events", "/commitments"} {
		t.Run(path, func(t *testing.T) {
			code, _, body := get(t, srv.URL+path, "")
			if code != http.StatusOK {
				t.Fatalf("%d", code)
			}
			empty := 0
			for _, table := range tables.FindAllString(body, -1) {
				m := emptyRow.FindStringSubmatch(table)
				if m == nil {
					continue
				}
				empty++
				if cols := strings.Count(table, "<th>") + strings.Count(table, "<th "); m[1] != strconv.Itoa(cols) {
					t.Errorf("the empty row spans %s columns of %d", m[1], cols)
				}
			}
			if empty != 1 {
				t.Errorf("%d empty rows, want 1", empty)
			}
		})
	}
}

func TestHostGuard(t *testing.T) {
	srv, _ := newTestServer(t)
	tests := []struct {
		host string
		want int
	}{
		{"127.0.0.1:8080", 200},
		{"localhost:8080", 200},
		{"[::1]:8080", 200},
		{"evil.example:8080", http.StatusMisdirectedRequest},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			code, _, body := get(t, srv.URL+"/api/studies", tt.host)
			if code != tt.want {
				t.Errorf("code %d, want %d", code, tt.want)
			}
			// Who opened a --portal-listen 0.0.0.0 portal by the machine's
			// name learns how to reach it ("host not allowed" said not).
			if code == http.StatusMisdirectedRequest && !strings.Contains(body, "open the portal by its IP address or localhost") {
				t.Errorf("refusal %q does not say how to reach the portal", body)
			}
		})
	}
}

// TestEveryAnswerCarriesTheSecurityHeaders: every answer of the portal,
// its refusals too, carries its security headers (the policy that allows
// no script and no framing, nosniff, no referrer, no caching): a refused
// Host name and a request with a body were answered before the guard set
// them.
func TestEveryAnswerCarriesTheSecurityHeaders(t *testing.T) {
	srv, _ := newTestServer(t)
	tests := []struct {
		name, method, path, host, body string
		want                           int
	}{
		{"page", http.MethodGet, "/", "", "", http.StatusOK},
		{"API", http.MethodGet, "/api/studies", "", "", http.StatusOK},
		{"object", http.MethodGet, "/objects/metadata/1.2.3.1.1.json", "", "", http.StatusOK},
		{"bad parameter", http.MethodGet, "/api/studies?limit=x", "", "", http.StatusBadRequest},
		{"no such route", http.MethodGet, "/nothing", "", "", http.StatusNotFound},
		{"method", http.MethodPost, "/api/studies", "", "", http.StatusMethodNotAllowed},
		{"host refused", http.MethodGet, "/", "evil.example", "", http.StatusMisdirectedRequest},
		{"body", http.MethodGet, "/", "", "x=1", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.host != "" {
				req.Host = tt.host
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
			h := resp.Header
			for name, want := range map[string]string{
				"X-Content-Type-Options": "nosniff",
				"X-Frame-Options":        "DENY",
				"Referrer-Policy":        "no-referrer",
				"Cache-Control":          "no-store",
			} {
				if got := h.Get(name); got != want {
					t.Errorf("%s: %q, want %q", name, got, want)
				}
			}
			if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("Content-Security-Policy: %q", csp)
			}
		})
	}
}

func TestObjects(t *testing.T) {
	srv, _ := newTestServer(t)
	code, h, body := get(t, srv.URL+"/objects/metadata/1.2.3.1.1.json", "")
	if code != 200 || h.Get("Content-Type") != "application/dicom+json" || !strings.Contains(body, "00080018") {
		t.Errorf("metadata: %d %s %q", code, h.Get("Content-Type"), body)
	}
	// A Storage Commitment result, which the study page links, and its
	// request, which a Storage Commitment Completed event points at
	// (requestUri): each was refused (404), its link dead.
	for _, part := range []string{"results", "requests"} {
		code, h, body = get(t, srv.URL+"/objects/commitment/"+part+"/tx0.json", "")
		if code != 200 || h.Get("Content-Type") != "application/json" || !strings.Contains(body, "transactionUid") {
			t.Errorf("commitment %s: %d %s %q", part, code, h.Get("Content-Type"), body)
		}
	}
	for _, p := range []string{"/objects/metadata/none.json", "/objects/audit/x.json", "/objects/metadata/..%2F..%2Fetc%2Fpasswd",
		"/objects/commitment/x.json"} {
		if code, _, _ := get(t, srv.URL+p, ""); code != 404 {
			t.Errorf("%s: %d", p, code)
		}
	}
}

func TestSafeKey(t *testing.T) {
	tests := map[string]bool{
		"incoming/2026/01/02/1.2/1.3/1.4.dcm": true,
		"quarantine/x/y.dcm":                  true,
		"metadata/1.2.json":                   true,
		"commitment/results/0a1b.json":        true,
		"commitment/requests/0a1b.json":       true,
		"commitment/x.json":                   false,
		"audit/2026/x.json":                   false,
		"incoming/../audit/x":                 false,
		"incoming//x":                         false,
		"/etc/passwd":                         false,
		"incoming/a b":                        false,
		"":                                    false,
	}
	for k, want := range tests {
		t.Run(k, func(t *testing.T) {
			if got := safeKey(k); got != want {
				t.Errorf("safeKey(%q) = %v", k, got)
			}
		})
	}
}

func TestPersonNameDisplay(t *testing.T) {
	pname := funcs["pname"].(func(string) string)
	for in, want := range map[string]string{
		"Doe^John":           "Doe John",
		"^^^^":               "",
		"Doe^^^Dr":           "Doe Dr",
		"":                   "",
		"Yamada^Tarou=山田^太郎": "Yamada Tarou=山田 太郎",
	} {
		if got := pname(in); got != want {
			t.Errorf("pname(%q) = %q, want %q", in, got, want)
		}
	}
	// An all-empty name still links to its study.
	var sb strings.Builder
	tmpl := template.Must(template.New("t").Funcs(funcs).Parse(`{{with pname .}}{{.}}{{else}}(no name){{end}}`))
	if err := tmpl.Execute(&sb, "^^^^"); err != nil || sb.String() != "(no name)" {
		t.Errorf("empty name rendered %q, %v", sb.String(), err)
	}
}

// TestPatientMismatchShown: a study whose instances name two patients is
// flagged on the studies list, on the study page (with the study's and
// the instance's findings) and in the JSON of both.
func TestPatientMismatchShown(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	ix := db.IndexStore()
	for i, pid := range []string{"PCT0001", "PMIX001"} {
		sop := "1.2.9.1." + strconv.Itoa(i+1)
		if _, err := ix.UpsertInstance(ctx, pipeline.InstanceRecord{
			StudyInstanceUID: "1.2.9", SeriesInstanceUID: "1.2.9.1", SOPInstanceUID: sop, ContentIdentity: sop, Modality: "CT",
			PatientID: pid, Size: 10, ReceivedAt: t0, ObjectKey: "incoming/" + sop + ".dcm",
		}); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer((&Server{Studies: ix, Search: db, Audit: db.AuditStore(), Associations: db, Events: db}).Handler())
	t.Cleanup(srv.Close)

	_, _, body := get(t, srv.URL+"/api/studies", "")
	var list struct{ Studies []Study }
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list.Studies) != 1 || !list.Studies[0].PatientMismatch ||
		list.Studies[0].PatientID != "PCT0001" || !pipeline.HasFinding(list.Studies[0].Findings, pipeline.CodePatientMismatch) {
		t.Errorf("/api/studies: %v %s", err, body)
	}
	_, _, body = get(t, srv.URL+"/api/studies/1.2.9", "")
	var p StudyPage
	if err := json.Unmarshal([]byte(body), &p); err != nil || !p.PatientMismatch || len(p.Instances) != 2 ||
		!pipeline.HasFinding(p.Instances[1].Findings, pipeline.CodePatientMismatch) {
		t.Errorf("/api/studies/1.2.9: %v %s", err, body)
	}
	if _, _, html := get(t, srv.URL+"/", ""); !strings.Contains(html, `class="warn mismatch"`) {
		t.Errorf("studies page does not flag the study:\n%s", html)
	}
	_, _, html := get(t, srv.URL+"/studies/1.2.9", "")
	for _, want := range []string{`class="warn mismatch"`, `id="study-findings"`, "<code>patient-mismatch</code> (0010,0020)"} {
		if strings.Count(html, want) < 1 {
			t.Errorf("study page lacks %s:\n%s", want, html)
		}
	}
}

// TestCommitmentStateShown: the study page and its JSON show the Storage Commitment transactions that named
// the study's instances, waiting or reported.
func TestCommitmentStateShown(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	ix := db.IndexStore()
	if _, err := ix.UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: "1.2.7", SeriesInstanceUID: "1.2.7.1",
		SOPInstanceUID: "1.2.7.1.1", ContentIdentity: "x", Size: 10, ReceivedAt: t0, ObjectKey: "incoming/1.2.7.1.1.dcm"}); err != nil {
		t.Fatal(err)
	}
	cs := db.CommitmentStore()
	for i, state := range []pipeline.CommitmentState{pipeline.CommitmentReported, pipeline.CommitmentPending} {
		tx, _, err := cs.CreateCommitment(ctx, pipeline.CommitmentTransaction{ID: fmt.Sprint("tx", i), TransactionUID: fmt.Sprint("1.2.8.", i),
			CallingAE: "PACS", RefCount: 2, ReceivedAt: t0.Add(time.Duration(i) * time.Minute), WaitUntil: t0.Add(5 * time.Minute), State: pipeline.CommitmentPending})
		if err != nil {
			t.Fatal(err)
		}
		tx.State, tx.Studies, tx.Committed, tx.Failed, tx.Attempts = state, []string{"1.2.7"}, 1, 1, 1
		if state == pipeline.CommitmentReported {
			tx.ReportedAt, tx.SameAssociation = t0.Add(time.Second), true
			tx.ResultKey = "commitment/results/tx0.json"
		}
		if _, err := cs.UpdateCommitment(ctx, tx); err != nil {
			t.Fatal(err)
		}
	}
	// A C-STORE of the study refused for its pixel data: the page says so
	// (it showed nothing, and commitment failed the instance 0110 there).
	appendRefused(t, db, "as1", "1.2.7", "1.2.7.1.9")
	srv := httptest.NewServer((&Server{Studies: ix, Search: db, Audit: db.AuditStore(), Associations: db, Events: db, Commitments: cs}).Handler())
	t.Cleanup(srv.Close)
	_, _, body := get(t, srv.URL+"/api/studies/1.2.7", "")
	var p StudyPage
	if err := json.Unmarshal([]byte(body), &p); err != nil || len(p.Commitments) != 2 {
		t.Fatalf("/api/studies/1.2.7: %v %s", err, body)
	}
	if len(p.Refused) != 1 || p.Refused[0].SOPInstanceUID != "1.2.7.1.9" {
		t.Errorf("refused C-STOREs %+v, want the one of 1.2.7.1.9", p.Refused)
	}
	if c := p.Commitments[0]; c.State != "waiting" || c.TransactionUID != "1.2.8.1" {
		t.Errorf("newest transaction %+v, want the waiting one", c)
	}
	if c := p.Commitments[1]; c.State != "reported" || c.Association != "same" || c.Committed != 1 || c.Failed != 1 {
		t.Errorf("reported transaction %+v", c)
	}
	_, _, html := get(t, srv.URL+"/studies/1.2.7", "")
	// Which instances failed and why is in the result, linked (a PACS
	// administrator saw the count and nothing else).
	for _, want := range []string{`id="commitments"`, `class="commitment waiting"`, "on the same association", "<code>1.2.8.0</code>",
		`<a href="/objects/commitment/results/tx0.json"`, `id="refused"`, "C-STORE status C001: dataset ends inside an element at (7FE0,0010)"} {
		if !strings.Contains(html, want) {
			t.Errorf("study page lacks %s:\n%s", want, html)
		}
	}
}

// TestClientGoneIsNoError: a request whose client went away (its context
// ended) is not the portal's error: it was logged at error level for every
// browser that navigated on during a slow search.
func TestClientGoneIsNoError(t *testing.T) {
	s := &Server{Logger: errorLogger(t)}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/studies", nil)
	w := httptest.NewRecorder()
	s.fail(w, r, fmt.Errorf("search studies: %w", context.Canceled))
	if w.Code != http.StatusInternalServerError {
		t.Errorf("status %d", w.Code)
	}
}

// TestNoPreview: a series of a class that holds no image says so on the
// page, where it showed a broken image (its preview was a 404), and a
// transfer syntax the renderer does not decode is named.
func TestNoPreview(t *testing.T) {
	for _, tt := range []struct {
		class, ts, want string
	}{
		{"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", ""},
		{"1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.1.2.1", "no preview (Basic Text SR Storage)"},
		{"1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.1.2.1", "no preview (Encapsulated PDF Storage)"},
		{"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.5", "no preview (RLE Lossless)"},
		{"1.2.840.10008.5.1.4.1.1.9999", "1.2.840.10008.1.2.1", ""}, // unknown class: tried
	} {
		if got := noPreview(pipeline.InstanceRecord{SOPClassUID: tt.class, TransferSyntaxUID: tt.ts}); got != tt.want {
			t.Errorf("noPreview(%s, %s) = %q, want %q", tt.class, tt.ts, got, tt.want)
		}
	}
}

// TestBidiControlsShown: Unicode direction controls in a stored value
// are shown as text on the page, not obeyed: a right-to-left override in
// a Patient ID displayed CS7<U+202E>54321 as "CS712345".
func TestBidiControlsShown(t *testing.T) {
	s := &Server{}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	w := httptest.NewRecorder()
	s.render(w, r, "study.html", view{Title: "Study", Data: studyView{StudyPage: StudyPage{StudyDetail: pipeline.StudyDetail{
		StudySummary: pipeline.StudySummary{StudyInstanceUID: "1.2.3", PatientID: "CS7\u202e54321", PatientName: "DOE^JOHN\u2066"}}}}})
	body := w.Body.String()
	if strings.ContainsAny(body, "\u202e\u2066") {
		t.Error("the page carries a raw direction control")
	}
	for _, want := range []string{"CS7[U+202E]54321", "[U+2066]"} {
		if !strings.Contains(body, want) {
			t.Errorf("the page does not show %q", want)
		}
	}
}

// TestStudyPageBoundsInstances: the study page lists the first 1,000
// instances and says how many more the JSON API lists (a study of 2,000
// made a page of 1.1 MB).
func TestStudyPageBoundsInstances(t *testing.T) {
	db := openDB(t)
	ctx := context.Background()
	for i := range maxInstancesShown + 5 {
		if _, err := db.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: "1.7", SeriesInstanceUID: "1.7.1",
			SOPInstanceUID: fmt.Sprint("1.7.1.", i), ContentIdentity: "x", InstanceNumber: fmt.Sprint(i), ObjectKey: fmt.Sprint("k", i),
			ReceivedAt: time.Unix(int64(i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	s := &Server{Studies: db.IndexStore(), Search: db, Audit: db.AuditStore(), Associations: db, Events: db}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	code, _, body := get(t, srv.URL+"/studies/1.7", "")
	if rows := strings.Count(body, `<a href="/objects/k`); code != 200 || rows != maxInstancesShown {
		t.Errorf("%d: %d instance rows, want %d", code, rows, maxInstancesShown)
	}
	if !strings.Contains(body, "5 more instances") || !strings.Contains(body, `href="/api/studies/1.7"`) {
		t.Error("the page does not say how many more instances there are, or where")
	}
}

// TestAuditShowsUncleanStops: the audit page filters the SCP starts that
// found earlier runs stopped uncleanly and shows, for each such run, the
// range of its records that may be lost; the stop of a run that lost
// records names them.
func TestAuditShowsUncleanStops(t *testing.T) {
	srv, db := newTestServer(t)
	for _, r := range []associationaudit.Record{
		{Event: associationaudit.EventApplicationStart, Time: t0, AssociationID: "5eee", CalledAE: "REMOTE_AE", Seq: 1,
			Reason: "previous run 5eed stopped uncleanly", PreviousRuns: []associationaudit.UncleanRun{{Instance: "5eed", AETitle: "REMOTE_AE",
				LastAlive: t0.Add(-time.Minute), LastSeq: 7, Written: 5, CountedLost: 1, NotWritten: 1}}},
		{Event: associationaudit.EventApplicationStart, Time: t0.Add(time.Second), AssociationID: "5eef", CalledAE: "REMOTE_AE", Seq: 1},
		{Event: associationaudit.EventApplicationStop, Time: t0.Add(2 * time.Second), AssociationID: "5eef", CalledAE: "REMOTE_AE", Seq: 9,
			Reason: "shutdown requested", Lost: &associationaudit.LostRecords{Count: 2, Seqs: []uint64{4, 6}}},
	} {
		if _, err := db.AuditStore().Append(context.Background(), pipeline.AssociationAuditRecord(r, "test")); err != nil {
			t.Fatal(err)
		}
	}
	checkPages(t, srv.URL, []pageCheck{
		{"/audit/records?outcome=unclean-stop", []string{"run <code>5eed</code> (AE REMOTE_AE) stopped uncleanly",
			"records possibly lost <b>up to 2 of seq 1-7, and any after seq 7</b> (5 written, 1 counted lost, 1 not yet written)"},
			[]string{`class="outcome-application-start"`}},
		{"/audit/records?outcome=application-start", []string{`class="outcome-application-start"`}, []string{"previous-runs", `class="outcome-unclean-stop"`}},
		{"/audit/records?outcome=application-stop", []string{"shutdown requested; 2 audit records of this run lost before its stop: seq 4, 6"}, nil},
	})
}

// TestDurationsShown: the portal writes a duration as the logs, the events
// and --help do (shared/durations): an association that lasted two
// minutes read 2m0s beside a quiet period of 1m in the help.
func TestDurationsShown(t *testing.T) {
	dur := funcs["dur"].(func(time.Duration) string)
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, ""},
		{1234567 * time.Microsecond, "1.235s"},
		{2 * time.Minute, "2m"},
		{time.Hour + 30*time.Second, "1h30s"},
	} {
		if got := dur(tt.d); got != tt.want {
			t.Errorf("dur(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// TestStudyPagesSayWhenLastSent: a study the site sent again (instances
// already held: a resend under another key, one the SCP found held) says
// so on the list and its page, "last sent" beside "last received", which
// stays the newest instance's; a study not sent again shows its receipt.
func TestStudyPagesSayWhenLastSent(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	ix := db.IndexStore()
	held := pipeline.InstanceRecord{StudyInstanceUID: "1.2.9", SeriesInstanceUID: "1.2.9.1", SOPInstanceUID: "1.2.9.1.1",
		ContentIdentity: "x", Size: 10, ReceivedAt: t0, ObjectKey: "incoming/2026/11/26/1.2.9.1.1.dcm"}
	other := pipeline.InstanceRecord{StudyInstanceUID: "1.2.10", SeriesInstanceUID: "1.2.10.1", SOPInstanceUID: "1.2.10.1.1",
		ContentIdentity: "y", Size: 10, ReceivedAt: t0, ObjectKey: "incoming/2026/11/26/1.2.10.1.1.dcm"}
	resent := held
	resent.ReceivedAt, resent.ObjectKey = t0.Add(24*time.Hour), "incoming/2026/11/27/1.2.9.1.1.dcm"
	for _, in := range []pipeline.InstanceRecord{held, other, resent} {
		if _, err := ix.UpsertInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer((&Server{Studies: ix, Search: db, Audit: db.AuditStore(), Associations: db, Events: db,
		Commitments: db.CommitmentStore(), Logger: errorLogger(t)}).Handler())
	t.Cleanup(srv.Close)
	ts := func(at time.Time) string { return at.UTC().Format("2006-01-02 15:04:05Z") }
	mark := `<span class="mark resent"`
	page := func(path string) string {
		t.Helper()
		code, _, body := get(t, srv.URL+path, "")
		if code != http.StatusOK {
			t.Fatalf("%s: %d", path, code)
		}
		return body
	}
	row := func(body, uid string) string {
		t.Helper()
		m := regexp.MustCompile(`(?s)<tr class="study" data-study-uid="` + regexp.QuoteMeta(uid) + `">.*?</tr>`).FindString(body)
		if m == "" {
			t.Fatalf("no row of %s", uid)
		}
		return m
	}
	check := func(t *testing.T, sentAgain time.Time) {
		t.Helper()
		list := page("/")
		if r := row(list, "1.2.9"); !strings.Contains(r, `<td>`+ts(t0)+`</td>`) || !strings.Contains(r, `<td class="last-sent">`+ts(sentAgain)+` `+mark) {
			t.Errorf("the resent study's row:\n%s", r)
		}
		if r := row(list, "1.2.10"); !strings.Contains(r, `<td class="last-sent">`+ts(t0)+`</td>`) || strings.Contains(r, mark) {
			t.Errorf("the other study's row:\n%s", r)
		}
		if !strings.Contains(list, `id="sent-help"`) {
			t.Error("the list does not say what last sent means")
		}
		study := page("/studies/1.2.9")
		if !strings.Contains(study, `<dd>`+ts(t0)+` – `+ts(t0)+`</dd>`) || !strings.Contains(study, `<dd id="last-sent">`+ts(sentAgain)+` `+mark) {
			t.Errorf("the resent study's page does not show received %s, last sent %s", ts(t0), ts(sentAgain))
		}
		if study := page("/studies/1.2.10"); !strings.Contains(study, `<dd id="last-sent">`+ts(t0)+` <span class="help">`) {
			t.Error("the other study's page does not show its last sent as its receipt")
		}
	}
	t.Run("resend under another key", func(t *testing.T) { check(t, resent.ReceivedAt) })
	// The SCP found a later resend held under its key: no object follows.
	if err := ix.NoteSent(ctx, "1.2.9", t0.Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	t.Run("resend the SCP found held", func(t *testing.T) { check(t, t0.Add(48*time.Hour)) })
}

// TestSyncFailedBanner: once a sync failed for good, every page says so
// at its top, with what to do (restart once the disk is fixed) and the
// cause; while none failed no page does. /readyz, the refusals and one
// log line told it, and the portal, which goes on serving, did not.
// /api/counters says it in syncFailed, absent while none failed.
func TestSyncFailedBanner(t *testing.T) {
	cause := errors.New("localstore: a database fsync failed (write-ahead log or checkpoint); restart to recover: EIO")
	var mu sync.Mutex // the handlers read failed
	var failed error
	srv, _ := newTestServerLogging(t, errorLogger(t), func(s *Server) {
		s.SyncFailed = func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			return failed
		}
	})
	pages := []string{"/", "/studies/1.2.3", "/audit", "/audit/records", "/quarantine", "/events", "/commitments", "/events?limit=x"}
	for _, tt := range []struct {
		name   string
		failed error
	}{{"none failed", nil}, {"failed", cause}} {
		mu.Lock()
		failed = tt.failed
		mu.Unlock()
		for _, page := range pages {
			t.Run(tt.name+page, func(t *testing.T) {
				_, _, body := get(t, srv.URL+page, "")
				if !strings.Contains(body, "<h1>") {
					t.Fatalf("%s is no page:\n%s", page, body)
				}
				banner := strings.Contains(body, `id="sync-failed"`)
				if banner != (tt.failed != nil) {
					t.Fatalf("%s shows the banner %v, want %v", page, banner, tt.failed != nil)
				}
				if tt.failed == nil {
					return
				}
				for _, want := range []string{"restart", "fix it", "local-mode.md", "A failed sync", html.EscapeString(cause.Error())} {
					if !strings.Contains(body, want) {
						t.Errorf("%s: the banner does not say %q", page, want)
					}
				}
			})
		}
		// The API's live status says it too: a client that polls
		// /api/counters, not the pages, learns of it there.
		t.Run(tt.name+"/api/counters", func(t *testing.T) {
			code, _, body := get(t, srv.URL+"/api/counters", "")
			var c struct {
				SyncFailed *string `json:"syncFailed"`
			}
			if err := json.Unmarshal([]byte(body), &c); err != nil || code != http.StatusOK {
				t.Fatalf("/api/counters = %d %v:\n%s", code, err, body)
			}
			switch {
			case tt.failed == nil && c.SyncFailed != nil:
				t.Errorf("/api/counters says syncFailed %q while none failed", *c.SyncFailed)
			case tt.failed != nil && (c.SyncFailed == nil || *c.SyncFailed != cause.Error()):
				t.Errorf("/api/counters does not say the failed sync:\n%s", body)
			}
		})
	}
}
