package cli

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
)

func TestExit(t *testing.T) {
	fs := flag.NewFlagSet("tool", flag.ContinueOnError)
	fs.String("site", "", "the site")
	for _, tc := range []struct {
		name     string
		err      error
		want     string
		wantCode int
	}{
		{"no error", nil, "", 0},
		{"help", fmt.Errorf("parse: %w", flag.ErrHelp), "", 0},
		{"one line", errors.New(`-site: unknown site "x"`), "tool: -site: unknown site \"x\"\n", 1},
		{"usage error: its line, then the usage", UsageError(fs, errors.New("-site is required")), "tool: -site is required\nUsage of tool:\n  -site string\n    \tthe site\n", ExitUsage},
		{"a status of its own", WithStatus(3, errors.New("2 failed")), "tool: 2 failed\n", 3},
		{"version", fmt.Errorf("parse: %w", ErrVersion), "", 0},
		{"joined", fmt.Errorf("build kit: %w", errors.Join(errors.New("a missing"), errors.New("b missing"))), "tool: build kit: a missing\ntool: b missing\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if code := Exit(&b, "tool", tc.err); code != tc.wantCode {
				t.Errorf("code = %d, want %d", code, tc.wantCode)
			}
			if b.String() != tc.want {
				t.Errorf("stderr = %q, want %q", b.String(), tc.want)
			}
		})
	}
}

func TestNotef(t *testing.T) {
	var b strings.Builder
	Notef(&b, "tool", "wrote %s", "kit")
	if b.String() != "tool: wrote kit\n" {
		t.Errorf("got %q", b.String())
	}
}
