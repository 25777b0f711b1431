// Package panicvalue is the one rule for what a recovered panic's value
// may say in a log line or an error: every place that recovers a panic
// (Recovered, which the Lambda functions' handlers, the audit feeder and
// local mode's pipeline use, dicomnet's handlers and observers, the portal's thumbnail
// renderer) describes the value through Describe, and an HTTP server's
// handler is served through Handler, since net/http recovers a handler's
// panic itself and logs its value in the server's ErrorLog.
//
// A runtime error (an index out of range, a nil dereference, a nil map
// written) is told by its text, which the runtime writes and which holds
// no data. Any other value is whatever the code that panicked passed to
// panic: a string or an error built from an object's key, a UID or a
// patient's name, which logs never hold (PS3.15 Annex E counts UIDs as
// identifying; docs/operations/logging.md). Of such a value only its type
// is told.
package panicvalue

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"runtime/debug"
)

// Describe says what a recovered panic's value v may say: a runtime
// error's text, or else only v's type ("a value of type string").
func Describe(v any) string {
	if re, ok := v.(runtime.Error); ok {
		return re.Error()
	}
	return fmt.Sprintf("a value of type %T", v)
}

// Handler serves h, a panic of h's told by Describe: net/http recovers a
// handler's panic and writes "http: panic serving <addr>: <value>" and
// the stack to the server's ErrorLog, the value as the handler passed it.
// Handler recovers it first and panics again with its description, so
// that net/http goes on as it does (the connection closed, the line and
// the stack written; the stack, taken before it unwinds, still shows
// where h panicked). http.ErrAbortHandler, which net/http logs nothing
// of, passes as it is.
func Handler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				panic(told(Describe(v)))
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// told is a panic's value as Describe told it.
type told string

func (t told) Error() string { return string(t) }

// ErrPanicked is what Recovered's error wraps.
var ErrPanicked = errors.New("handling panicked")

// Recovered runs f, turning a panic in it into its error: the one rule
// for a bug met while handling one part of the work (an SQS message, a
// stream record, a scheduled run, an audit feed's batch), which fails
// that part alone instead of ending the process, and with it a Lambda
// invocation or the SCP. The panic is logged on log (nil: slog's default)
// as logMsg with attrs (the part's id, never its content) and the stack;
// its value as Describe tells it, in the line and in the error (which
// wraps ErrPanicked).
func Recovered(log *slog.Logger, logMsg string, f func() error, attrs ...any) error {
	p, err := Catch(f)
	if p != nil {
		p.Log(log, logMsg, attrs...)
	}
	return err
}

// Panic is a panic Catch recovered, told as Recovered tells it: its value
// as Describe tells it, and the stack where it panicked.
type Panic struct {
	Value string
	Stack string
}

// Catch is Recovered without its line: it runs f, turning a panic in it
// into its error (wrapping ErrPanicked) and the Panic, nil when f did not
// panic, for the caller to log when its line is due (the audit feed logs a
// record's panic once the batch it was passed over in is delivered, not
// at each try of the batch).
func Catch(f func() error) (p *Panic, err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		p = &Panic{Value: Describe(r), Stack: string(debug.Stack())}
		err = fmt.Errorf("%w: %s", ErrPanicked, p.Value)
	}()
	return nil, f()
}

// Log writes p's line on log (nil: slog's default) as Recovered does:
// logMsg with attrs, the panic's value and its stack.
func (p *Panic) Log(log *slog.Logger, logMsg string, attrs ...any) {
	if log == nil {
		log = slog.Default()
	}
	log.Error(logMsg, append(attrs, "panic", p.Value, "stack", p.Stack)...)
}
