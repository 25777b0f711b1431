// Package panicvalue is the one rule for what a recovered panic's value
// may say in a log line or an error: every place that recovers a panic
// (lambdaio.Recovered, dicomnet's handlers and observers, the portal's
// thumbnail renderer) describes the value through Describe.
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
	"fmt"
	"runtime"
)

// Describe says what a recovered panic's value v may say: a runtime
// error's text, or else only v's type ("a value of type string").
func Describe(v any) string {
	if re, ok := v.(runtime.Error); ok {
		return re.Error()
	}
	return fmt.Sprintf("a value of type %T", v)
}
