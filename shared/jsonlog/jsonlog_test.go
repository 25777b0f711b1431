package jsonlog

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

func TestFormat(t *testing.T) {
	tests := []struct {
		name  string
		log   func(*slog.Logger)
		level slog.Leveler
		want  map[string]any // attributes the line must carry; nil: no line
	}{
		{"duration in Go syntax", func(l *slog.Logger) { l.Info("drained", "took", 1500*time.Millisecond) }, slog.LevelInfo,
			map[string]any{"msg": "drained", "took": "1.5s", "level": "INFO"}},
		{"sub-microsecond rounded", func(l *slog.Logger) { l.Info("x", "d", 1234567*time.Nanosecond) }, slog.LevelInfo,
			map[string]any{"d": "1.235ms"}},
		{"in a group", func(l *slog.Logger) { l.Info("x", slog.Group("g", "d", time.Minute)) }, slog.LevelInfo,
			map[string]any{"g": map[string]any{"d": "1m"}}},
		{"no zero units", func(l *slog.Logger) { l.Info("x", "d", 2*time.Hour, "e", 90*time.Second) }, slog.LevelInfo,
			map[string]any{"d": "2h", "e": "1m30s"}},
		{"other kinds unchanged", func(l *slog.Logger) { l.Warn("x", "n", 3) }, slog.LevelInfo,
			map[string]any{"n": float64(3), "level": "WARN"}},
		{"below the level", func(l *slog.Logger) { l.Debug("x") }, slog.LevelInfo, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			tt.log(New(&b, tt.level))
			if tt.want == nil {
				if b.Len() != 0 {
					t.Fatalf("logged %s", b.String())
				}
				return
			}
			var got map[string]any
			if err := json.Unmarshal(b.Bytes(), &got); err != nil {
				t.Fatalf("not one JSON object: %q", b.String())
			}
			for k, v := range tt.want {
				if gv, _ := json.Marshal(got[k]); string(gv) != mustJSON(v) {
					t.Errorf("%s = %s, want %s (line %s)", k, gv, mustJSON(v), b.String())
				}
			}
		})
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "WARN": slog.LevelWarn, "error": slog.LevelError, "bogus": slog.LevelInfo, "": slog.LevelInfo} {
		if got := ParseLevel(in); got != want {
			t.Errorf("ParseLevel(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestServerErrors: what net/http logs on its own, here a handler's panic,
// is one JSON line with the fixed message, not plain text on stderr.
func TestServerErrors(t *testing.T) {
	var b testenv.LogBuffer
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	srv.Config.ErrorLog = ServerErrors(New(&b, slog.LevelInfo), "portal")
	srv.Start()
	defer srv.Close()
	if resp, err := http.Get(srv.URL); err == nil {
		resp.Body.Close()
	}
	srv.Close() // the panic's line is written before the connection closes
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one line, got %d: %q", len(lines), b.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatalf("not JSON: %v: %q", err, lines[0])
	}
	if got["msg"] != "http server error" || got["server"] != "portal" || got["level"] != "WARN" {
		t.Errorf("line %v: want msg %q, server portal, level WARN", got, "http server error")
	}
	if err, _ := got["err"].(string); !strings.Contains(err, "panic serving") || !strings.Contains(err, "boom") || strings.HasSuffix(err, "\n") {
		t.Errorf("err %q: want net/http's text of the panic, without its newline", err)
	}
}

// TestMessageFilterRefusesWhatItWouldMisread: MessageFilter panics, at
// synth, on messages its pattern would misread: a '*' anywhere in one
// (CloudWatch reads it as a wildcard, so the metric filter would count
// other lines too) or no message at all; other messages, quotes and
// backslashes among them, make a pattern. Before, only the test reader
// (jsonlogtest.FilterMatches) refused a '*', so a filter deployed with
// one counted lines no test matched.
func TestMessageFilterRefusesWhatItWouldMisread(t *testing.T) {
	tests := []struct {
		name   string
		msgs   []string
		panics bool
	}{
		{"plain", []string{"validate: handling panicked: a bug"}, false},
		{"quotes and backslashes", []string{`quoted "x" \ y`, "a"}, false},
		{"trailing wildcard", []string{"audit: lost *"}, true},
		{"leading wildcard", []string{"*: handling panicked"}, true},
		{"wildcard in the second message", []string{"a bug", "a * bug"}, true},
		{"no message", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pattern string
			recovered := func() (r any) {
				defer func() { r = recover() }()
				pattern = MessageFilter(tt.msgs...)
				return nil
			}()
			if panicked := recovered != nil; panicked != tt.panics {
				t.Errorf("MessageFilter(%q): panicked %v (%v, pattern %s), want %v", tt.msgs, panicked, recovered, pattern, tt.panics)
			}
		})
	}
}
