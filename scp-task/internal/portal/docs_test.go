package portal

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// docFiles are the documents that show the portal's routes and URLs to a
// reader trying local mode.
var docFiles = []string{"README.md", "docs/local-mode.md", "docs/pipeline.md"}

// TestDocumentedURLsAnswer: what the documents tell a reader to open or
// call on the portal works as written. Each route they name (`GET /api/…`,
// its {placeholders} filled in) is one the portal serves, and each URL
// they give in full (http://127.0.0.1:8080/…, without a <placeholder>)
// answers 200 on a portal with data: local-mode.md's after=<seq> tail had
// no start, after=0 being refused (400), which a copied example would have
// shown at once.
func TestDocumentedURLsAnswer(t *testing.T) {
	srv, _ := newTestServer(t)
	mux := http.NewServeMux()
	for _, rt := range (&Server{}).routes() {
		mux.HandleFunc(rt.pattern, rt.handler)
	}
	full := regexp.MustCompile("http://127\\.0\\.0\\.1:8080(/[^\\s`'\"<>)\\]]*)?")
	var routes, urls int
	for _, name := range docFiles {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", name))
		if err != nil {
			t.Fatal(err)
		}
		doc := string(b)
		found, errs := documentedRoutes(name, doc)
		for _, err := range errs {
			t.Error(err)
		}
		for _, r := range found {
			routes++
			if _, pattern := mux.Handler(httptest.NewRequest(http.MethodGet, r.path, nil)); pattern == "" {
				t.Errorf("%s:%d names %q, which no route of the portal serves", name, r.line, r.text)
			}
		}
		for _, i := range full.FindAllStringSubmatchIndex(doc, -1) {
			u := doc[i[0]:i[1]]
			if strings.HasPrefix(doc[i[1]:], "<") || strings.Contains(u, "…") {
				continue // a base followed by a <placeholder>: no URL to call
			}
			urls++
			path := "/"
			if i[2] >= 0 {
				path = doc[i[2]:i[3]]
			}
			if code, _, body := get(t, srv.URL+path, ""); code != http.StatusOK {
				t.Errorf("%s gives %s, which answers %d: %.200s", name, u, code, body)
			}
		}
	}
	if routes < 5 || urls < 2 {
		t.Fatalf("found %d routes and %d URLs in %v: the patterns no longer match the documents", routes, urls, docFiles)
	}
}

// docRoute is a route a document names (`GET /api/…`): as written, with
// its {placeholders} filled in (path), and the line it is on.
type docRoute struct {
	text, path string
	line       int
}

var (
	routePattern = regexp.MustCompile("`GET (/[^`?]*)[^`]*`")
	placeholder  = regexp.MustCompile(`\{[^}/]*\}`)
)

// documentedRoutes reads the routes doc (named name) gives; one that is no
// request target (a space in it, say) is an error naming the document and
// the line (httptest.NewRequest panicked on it).
func documentedRoutes(name, doc string) ([]docRoute, []error) {
	var out []docRoute
	var errs []error
	for _, m := range routePattern.FindAllStringSubmatchIndex(doc, -1) {
		r := docRoute{text: doc[m[0]:m[1]], path: placeholder.ReplaceAllString(doc[m[2]:m[3]], "x"),
			line: strings.Count(doc[:m[0]], "\n") + 1}
		if _, err := url.ParseRequestURI(r.path); err != nil || strings.ContainsFunc(r.path, func(c rune) bool {
			return unicode.IsSpace(c) || unicode.IsControl(c)
		}) {
			errs = append(errs, fmt.Errorf("%s:%d names %q, whose path %q is no request target", name, r.line, r.text, r.path))
			continue
		}
		out = append(out, r)
	}
	return out, errs
}

// TestDocumentedRoutes: documentedRoutes fills placeholders in, names the
// line of each route, and refuses one whose path holds a space, naming the
// document and the line.
func TestDocumentedRoutes(t *testing.T) {
	const doc = "Open `GET /api/studies/{studyUid}`.\n\nOr `GET /api/audit records?limit=5`, then\n`GET /audit`.\n"
	routes, errs := documentedRoutes("x.md", doc)
	if len(routes) != 2 || routes[0].path != "/api/studies/x" || routes[0].line != 1 || routes[1].path != "/audit" || routes[1].line != 4 {
		t.Errorf("routes %+v", routes)
	}
	want := "x.md:3 names \"`GET /api/audit records?limit=5`\", whose path \"/api/audit records\" is no request target"
	if len(errs) != 1 || errs[0].Error() != want {
		t.Errorf("errors %v, want %q", errs, want)
	}
}

// TestAuditPageColumnsDocumented: the columns local-mode.md's Audit trail
// row names ("in the columns …", up to its first ";") are the headers
// /audit shows, in order, the last, unheaded, a link to the records; and
// the counts the Instances cell shows beside its own (already held,
// quarantined, failed) are said to be in that cell. The row listed
// "quarantined" and "failed" as columns of their own, which the page has
// never had.
func TestAuditPageColumnsDocumented(t *testing.T) {
	srv, _ := newTestServer(t)
	code, _, page := get(t, srv.URL+"/audit", "")
	if code != http.StatusOK {
		t.Fatalf("/audit answered %d", code)
	}
	thead := regexp.MustCompile(`(?s)<table id="associations">\s*<thead>(.*?)</thead>`).FindStringSubmatch(page)
	if thead == nil {
		t.Fatalf("/audit has no associations table head:\n%.500s", page)
	}
	var headers []string
	for _, m := range regexp.MustCompile(`<th[^>]*>([^<]*)</th>`).FindAllStringSubmatch(thead[1], -1) {
		headers = append(headers, strings.TrimSpace(m[1]))
	}

	b, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "local-mode.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, row, ok := strings.Cut(string(b), "\n| Audit trail (`/audit`)")
	row, _, _ = strings.Cut(row, "\n")
	_, cols, found := strings.Cut(row, "newest first, in the columns ")
	if !ok || !found {
		t.Fatal("local-mode.md has no Audit trail row naming its columns (\"newest first, in the columns …\")")
	}
	// The items at the list's own depth, to its first ";" there.
	var items []string
	depth, start := 0, 0
	for i := 0; i < len(cols); i++ {
		switch c := cols[i]; {
		case c == '(':
			depth++
		case c == ')':
			depth--
		case depth == 0 && (c == ';' || strings.HasPrefix(cols[i:], ", ")):
			items = append(items, strings.TrimPrefix(cols[start:i], "and "))
			if c == ';' {
				i = len(cols)
			}
			start = i + 2
		}
	}
	var named []string
	var instances string
	for _, it := range items {
		name, _, _ := strings.Cut(it, " (")
		named = append(named, name)
		if name == "Instances" {
			instances = it
		}
	}
	want := slices.Clone(headers)
	if n := len(want); n > 0 && want[n-1] == "" {
		want[n-1] = "a link to its records" // the unheaded last column
	}
	if !slices.Equal(want, named) {
		t.Errorf("local-mode.md's Audit trail columns %q, /audit's headers %q", named, want)
	}
	for _, part := range []string{"already held", "quarantined", "failed"} {
		if !strings.Contains(instances, part) {
			t.Errorf("local-mode.md's Instances column does not say the cell shows how many %s", part)
		}
	}
}
