package logleak

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder keeps the errors Check reports instead of failing the test.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestIdentifyingWrittenAndLookedFor holds the table to both of its uses:
// every object WriteObjects writes carries each value, and Check reports a
// line holding any of them, or any component of a person name.
func TestIdentifyingWrittenAndLookedFor(t *testing.T) {
	maxChars := map[string]int{"SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240}
	seen := map[string]bool{}
	for _, a := range identifying {
		if n, ok := maxChars[a.VR]; !ok || len(a.Value) > n {
			t.Errorf("%s: %q does not fit %s", a, a.Value, a.VR)
		}
		if seen[a.Value] || !strings.HasPrefix(a.Value, "Zqx-") {
			t.Errorf("%s: %q is not a distinctive value of its own", a, a.Value)
		}
		seen[a.Value] = true
	}

	dir := t.TempDir()
	var ids Identifiers
	WriteObjects(t, dir, &ids)
	files, err := filepath.Glob(filepath.Join(dir, "*.dcm"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no objects written: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range identifying {
			if !bytes.Contains(b, []byte(a.Value)) {
				t.Errorf("%s lacks %s", filepath.Base(f), a)
			}
		}
	}

	for _, a := range identifying {
		lines := []string{`{"msg":"x","err":"value ` + a.Value + `"}`}
		if a.VR == "PN" {
			for _, part := range strings.Split(a.Value, "^") {
				lines = append(lines, `{"msg":"x","name":"`+part+`"}`)
			}
		}
		for _, line := range lines {
			r := &recorder{TB: t}
			ids.Check(r, "test", line)
			if len(r.errs) == 0 {
				t.Errorf("Check passed a line holding %s: %s", a, line)
			}
		}
	}
	r := &recorder{TB: t}
	ids.Check(r, "test", `{"msg":"object stored","object":"obj-87c9d9f2091091bccccc","institution":"Zqx"}`)
	if len(r.errs) != 0 {
		t.Errorf("Check reported a clean line: %v", r.errs)
	}
}
