package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestLogQueriesNameLoggedMessages: every `msg = "…"` a document's Logs
// Insights query or runbook filters on is a message the code logs (a
// string literal in a non-test Go file): a message reworded in the code
// would leave the on-call's query finding nothing, silently.
func TestLogQueriesNameLoggedMessages(t *testing.T) {
	msgFilter := regexp.MustCompile(`msg\s*=\s*"([^"]+)"`)
	wanted := map[string][]string{} // message → documents filtering on it
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".md") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range msgFilter.FindAllStringSubmatch(string(b), -1) {
			wanted[m[1]] = append(wanted[m[1]], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(wanted) == 0 {
		t.Fatal("no document filters on a log message: the pattern no longer matches the documents' queries")
	}
	literals := map[string]bool{}
	goString := regexp.MustCompile(`"(?:[^"\\\n]|\\.)*"`)
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != ".." && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "cdk.out" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, q := range goString.FindAllString(string(b), -1) {
			if s, err := strconv.Unquote(q); err == nil {
				literals[s] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for msg, docs := range wanted {
		if !literals[msg] {
			t.Errorf("%v filter on msg %q, which no Go file logs", docs, msg)
		}
	}
}

// TestMakeTargetsDocumented: every target of the Makefile (not a file it
// makes) has its "## name: …" line, which `make help` prints.
func TestMakeTargetsDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	rule := regexp.MustCompile(`^([a-z][a-z-]*):`)
	helped := map[string]bool{}
	var targets []string
	for _, l := range strings.Split(string(b), "\n") {
		if name, ok := strings.CutPrefix(l, "## "); ok {
			if n, _, ok := strings.Cut(name, ":"); ok {
				helped[n] = true
			}
			continue
		}
		if m := rule.FindStringSubmatch(l); m != nil {
			targets = append(targets, m[1])
		}
	}
	if len(targets) < 5 {
		t.Fatalf("found %d targets only: the pattern no longer matches the Makefile's rules", len(targets))
	}
	for _, name := range targets {
		if !helped[name] {
			t.Errorf("make %s has no \"## %s: …\" line for make help", name, name)
		}
	}
}
