package panicvalue

import (
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// recovered returns the value f panics with.
func recovered(f func()) (v any) {
	defer func() { v = recover() }()
	f()
	return nil
}

// TestDescribe: a runtime error keeps its text; a value the code chose
// (a string or an error naming an object by its UIDs) is told by its type
// alone.
func TestDescribe(t *testing.T) {
	const uid = "1.2.826.0.1.3680043.9.7777.1"
	tests := []struct {
		name  string
		panic func()
		want  string
	}{
		{"a string holding a UID", func() { panic("no series for " + uid) }, "a value of type string"},
		{"an error holding a UID", func() { panic(fmt.Errorf("object %s: %w", uid, errors.New("gone"))) }, "a value of type *fmt.wrapError"},
		{"an int", func() { panic(42) }, "a value of type int"},
		{"an index out of range", func() {
			s := []string{uid}
			i := len(s)
			_ = s[i]
		}, "runtime error: index out of range [1] with length 1"},
		{"a nil map written", func() {
			var m map[string]int
			//lint:ignore SA5000 a runtime error, on purpose
			m[uid]++
		}, "assignment to entry in nil map"},
		{"a nil dereference", func() {
			var p *struct{ uid string }
			_ = p.uid
		}, "runtime error: invalid memory address or nil pointer dereference"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Describe(recovered(tt.panic))
			if got != tt.want {
				t.Errorf("Describe = %q, want %q", got, tt.want)
			}
			if strings.Contains(got, uid) {
				t.Errorf("Describe = %q tells the UID", got)
			}
		})
	}
}

// TestHandler: net/http's own line of a handler's panic, in the server's
// ErrorLog, tells the value by Describe (a runtime error's text, else its
// type), with the stack down to where the handler panicked; an
// http.ErrAbortHandler is still logged by none.
func TestHandler(t *testing.T) {
	const uid = "1.2.826.0.1.3680043.9.7777.2"
	tests := []struct {
		name  string
		panic func()
		want  []string // in the log, in order; none: no line
	}{
		{"a string holding a UID", func() { panic("no study " + uid) }, []string{"http: panic serving", ": a value of type string\n", "panicvalue.TestHandler"}},
		{"an index out of range", func() {
			s := []string{uid}
			i := len(s)
			_ = s[i]
		}, []string{"http: panic serving", ": runtime error: index out of range [1] with length 1\n", "panicvalue.TestHandler"}},
		{"ErrAbortHandler", func() { panic(http.ErrAbortHandler) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b testenv.LogBuffer
			srv := httptest.NewUnstartedServer(Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { tt.panic() })))
			srv.Config.ErrorLog = log.New(&b, "", 0)
			srv.Start()
			if resp, err := http.Get(srv.URL); err == nil {
				resp.Body.Close()
				t.Errorf("answered %s", resp.Status)
			}
			srv.Close() // the panic's line is written before the connection closes
			got := b.String()
			if strings.Contains(got, uid) {
				t.Errorf("the log tells the UID: %q", got)
			}
			if tt.want == nil && got != "" {
				t.Errorf("logged %q, want nothing", got)
			}
			rest := got
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Errorf("log %q: no %q in order", got, w)
					break
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

// TestRecovered: a panic in f is its error (wrapping ErrPanicked) and a
// line with the parts' ids, the value as Describe tells it and the stack;
// f's own error, or none, passes as it is. Catch logs nothing: the Panic
// it returns, logged later, is Recovered's line.
func TestRecovered(t *testing.T) {
	const uid = "1.2.826.0.1.3680043.9.7777.3"
	gone := errors.New("gone")
	tests := []struct {
		name    string
		f       func() error
		wantErr error
		wantLog []string // none: no line
	}{
		{"no panic", func() error { return nil }, nil, nil},
		{"an error", func() error { return gone }, gone, nil},
		{"a panic", func() error { panic("no series for " + uid) }, ErrPanicked,
			[]string{`"msg":"it panicked"`, `"part":"p1"`, `"panic":"a value of type string"`, `"stack":"goroutine`}},
	}
	ways := []struct {
		name string
		run  func(t *testing.T, log *slog.Logger, f func() error) error
	}{
		{"Recovered", func(_ *testing.T, log *slog.Logger, f func() error) error {
			return Recovered(log, "it panicked", f, "part", "p1")
		}},
		{"Catch then Log", func(t *testing.T, log *slog.Logger, f func() error) error {
			p, err := Catch(f)
			if (p != nil) != errors.Is(err, ErrPanicked) {
				t.Errorf("Catch = %v, %v: want a Panic when, and only when, f panicked", p, err)
			}
			if p != nil {
				p.Log(log, "it panicked", "part", "p1")
			}
			return err
		}},
	}
	for _, way := range ways {
		for _, tt := range tests {
			t.Run(way.name+"/"+tt.name, func(t *testing.T) {
				var logs strings.Builder
				err := way.run(t, slog.New(slog.NewJSONHandler(&logs, nil)), tt.f)
				if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
					t.Errorf("error %v, want %v", err, tt.wantErr)
				}
				if strings.Contains(logs.String(), uid) || (err != nil && strings.Contains(err.Error(), uid)) {
					t.Errorf("the value is told: %v\n%s", err, logs.String())
				}
				if len(tt.wantLog) == 0 && logs.Len() > 0 {
					t.Errorf("logged %s", logs.String())
				}
				for _, want := range tt.wantLog {
					if !strings.Contains(logs.String(), want) {
						t.Errorf("the line lacks %s: %s", want, logs.String())
					}
				}
			})
		}
	}
}
