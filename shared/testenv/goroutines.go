package testenv

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// NoGoroutines fails the test unless, within limit (a deadline poll), no goroutine but the tests' own has a
// frame naming one of frames (such as "dicomnet.(*ClientAssociation)"): goleak's check, on the frames of the code
// under test.
func NoGoroutines(t testing.TB, limit time.Duration, frames ...string) {
	t.Helper()
	EventuallySawWithin(t, limit, "no goroutine of "+strings.Join(frames, ", ")+" left", func() (bool, string) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "testing.tRunner") {
				continue
			}
			for _, f := range frames {
				if strings.Contains(g, f) {
					return false, g
				}
			}
		}
		return true, ""
	})
}
