// Package jsonlogtest reads JSON log lines as CloudWatch Logs reads them,
// for tests that hold a line a function really logs to the metric filter
// the stack counts it by.
package jsonlogtest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// FilterMatches reports whether CloudWatch Logs' JSON filter pattern
// matches line, for the patterns jsonlog.MessageFilter makes: { $.key =
// "value" } or such terms in parentheses joined by ||, a key of the line's
// top level equal to the value (a string), exactly. Any other pattern is
// an error, not a guess: a line that is not a JSON object matches none.
func FilterMatches(pattern string, line []byte) (bool, error) {
	body, opened := strings.CutPrefix(strings.TrimSpace(pattern), "{ ")
	body, closed := strings.CutSuffix(body, " }")
	if !opened || !closed {
		return false, fmt.Errorf("jsonlogtest: %q is no JSON filter pattern ({ … })", pattern)
	}
	terms := []string{body}
	if strings.HasPrefix(body, "(") {
		inner, ok := strings.CutSuffix(strings.TrimPrefix(body, "("), ")")
		if !ok {
			return false, fmt.Errorf("jsonlogtest: %q: unbalanced parentheses", pattern)
		}
		terms = strings.Split(inner, ") || (")
	}
	var fields map[string]any
	if err := json.Unmarshal(line, &fields); err != nil {
		return false, nil
	}
	for _, term := range terms {
		key, value, err := parseTerm(term)
		if err != nil {
			return false, fmt.Errorf("jsonlogtest: %q: %w", pattern, err)
		}
		if v, ok := fields[key].(string); ok && v == value {
			return true, nil
		}
	}
	return false, nil
}

// parseTerm reads one term, $.key = "value".
func parseTerm(term string) (key, value string, err error) {
	lhs, rhs, ok := strings.Cut(term, " = ")
	key, isField := strings.CutPrefix(lhs, "$.")
	if !ok || !isField || key == "" || strings.ContainsAny(key, ".[") {
		return "", "", fmt.Errorf("term %q is not $.key = \"value\"", term)
	}
	if err := json.Unmarshal([]byte(rhs), &value); err != nil || strings.Contains(value, "*") {
		// The CDK quotes a term escaping \ and " alone, as JSON does; a
		// '*' is a wildcard, which this reading does not do.
		return "", "", fmt.Errorf("term %q: the value is not a quoted string without wildcards", term)
	}
	return key, value, nil
}

// Counted returns the lines of logs (JSON lines, as a function writes
// them) that a metric filter of pattern counts, decoded; t fails on a
// pattern FilterMatches does not read.
func Counted(t testing.TB, pattern string, logs []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range strings.Lines(string(logs)) {
		ok, err := FilterMatches(pattern, []byte(l))
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			continue
		}
		var fields map[string]any
		if err := json.Unmarshal([]byte(l), &fields); err != nil {
			t.Fatal(err)
		}
		out = append(out, fields)
	}
	return out
}
