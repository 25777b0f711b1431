package portal

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
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
	route := regexp.MustCompile("`GET (/[^`?]*)[^`]*`")
	full := regexp.MustCompile("http://127\\.0\\.0\\.1:8080(/[^\\s`'\"<>)\\]]*)?")
	placeholder := regexp.MustCompile(`\{[^}/]*\}`)
	var routes, urls int
	for _, name := range docFiles {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", name))
		if err != nil {
			t.Fatal(err)
		}
		doc := string(b)
		for _, m := range route.FindAllStringSubmatch(doc, -1) {
			routes++
			path := placeholder.ReplaceAllString(m[1], "x")
			if _, pattern := mux.Handler(httptest.NewRequest(http.MethodGet, path, nil)); pattern == "" {
				t.Errorf("%s names %q, which no route of the portal serves", name, m[0])
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
