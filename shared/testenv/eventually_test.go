package testenv_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// fatalTB records a Fatalf and ends its goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	fatal string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run runs wait with f on a goroutine of its own, as a test's, and
// returns once it returned or failed.
func (f *fatalTB) run(wait func(tb testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		wait(f)
	}()
	<-done
}

// TestEventuallyWithin: a wait ends once its condition holds, however
// late within the limit, and fails naming what it waited for and the
// limit once the limit passed without it.
func TestEventuallyWithin(t *testing.T) {
	for _, tc := range []struct {
		name      string
		holdsFrom int // the poll from which the condition holds; 0: never
		wantFatal string
	}{
		{"at once", 1, ""},
		{"after some polls", 5, ""},
		{"never", 0, "still waiting after 200ms for the thing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := &fatalTB{TB: t}
			polls := 0
			tb.run(func(tb testing.TB) {
				testenv.EventuallyWithin(tb, 200*time.Millisecond, "the thing", func() bool {
					polls++
					return tc.holdsFrom != 0 && polls >= tc.holdsFrom
				})
			})
			if tb.fatal != tc.wantFatal {
				t.Errorf("failed with %q, want %q", tb.fatal, tc.wantFatal)
			}
			if tc.holdsFrom != 0 && polls != tc.holdsFrom {
				t.Errorf("%d polls, want %d: the wait went on after the condition held", polls, tc.holdsFrom)
			}
		})
	}
}

// TestEventuallySawWithin: a wait whose condition describes what it saw
// fails with the last description, and says nothing more when there is
// none.
func TestEventuallySawWithin(t *testing.T) {
	for _, tc := range []struct {
		name      string
		saw       func(poll int) string
		wantFatal string
	}{
		{"the last state", func(poll int) string { return fmt.Sprintf("%d polls", poll) }, "still waiting after 50ms for the thing; last seen: "},
		{"no state", func(int) string { return "" }, "still waiting after 50ms for the thing"},
		{"a long state, its last lines", func(poll int) string {
			return strings.Repeat("earlier\n", 100) + fmt.Sprintf("poll %d\n", poll)
		}, "still waiting after 50ms for the thing; last seen:\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := &fatalTB{TB: t}
			polls := 0
			tb.run(func(tb testing.TB) {
				testenv.EventuallySawWithin(tb, 50*time.Millisecond, "the thing", func() (bool, string) {
					polls++
					return false, tc.saw(polls)
				})
			})
			want := tc.wantFatal
			if s := tc.saw(polls); s != "" {
				want += testenv.LastLines(s, testenv.SawLines)
			}
			if tb.fatal != want {
				t.Errorf("failed with %q, want %q", tb.fatal, want)
			}
			if n := strings.Count(tb.fatal, "\n"); n > testenv.SawLines {
				t.Errorf("failed with %d lines, want the state's last %d", n, testenv.SawLines)
			}
		})
	}
}
