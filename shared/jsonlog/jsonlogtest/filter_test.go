package jsonlogtest

import (
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
)

// TestFilterMatches: a message filter matches a line whose msg is one of
// its messages exactly, and nothing else: not a message it only begins,
// not the message under another key or nested, not a line that is no JSON.
func TestFilterMatches(t *testing.T) {
	one := jsonlog.MessageFilter("a bug; the run fails")
	two := jsonlog.MessageFilter("first: a bug", `quoted "x" \ y`)
	if want := `{ $.msg = "a bug; the run fails" }`; one != want {
		t.Fatalf("MessageFilter = %s, want %s", one, want)
	}
	if want := `{ ($.msg = "first: a bug") || ($.msg = "quoted \"x\" \\ y") }`; two != want {
		t.Fatalf("MessageFilter = %s, want %s", two, want)
	}
	tests := []struct {
		pattern, line string
		want          bool
	}{
		{one, `{"time":"t","level":"ERROR","msg":"a bug; the run fails","environment":"prod"}`, true},
		{one, `{"msg":"a bug; the run fails, twice"}`, false},
		{one, `{"msg":"a bug"}`, false},
		{one, `{"message":"a bug; the run fails"}`, false},
		{one, `{"x":{"msg":"a bug; the run fails"}}`, false},
		{one, `{"msg":["a bug; the run fails"]}`, false},
		{one, `a bug; the run fails`, false},
		{two, `{"msg":"first: a bug"}`, true},
		{two, `{"msg":"quoted \"x\" \\ y"}`, true},
		{two, `{"msg":"quoted"}`, false},
	}
	for _, tt := range tests {
		got, err := FilterMatches(tt.pattern, []byte(tt.line))
		if err != nil || got != tt.want {
			t.Errorf("FilterMatches(%s, %s) = %v, %v; want %v", tt.pattern, tt.line, got, err, tt.want)
		}
	}
	for _, p := range []string{`$.msg = "x"`, `$.msg = "x" }`, `{ $.msg = x }`, `{ $.a.b = "x" }`, `{ $.msg = "x*" }`, `{ ($.msg = "x") && ($.y = "z") }`, `{ ($.msg = "x" }`} {
		if _, err := FilterMatches(p, []byte(`{"msg":"x"}`)); err == nil {
			t.Errorf("FilterMatches(%s): no error for a pattern it does not read", p)
		}
	}
}
