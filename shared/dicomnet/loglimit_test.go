package dicomnet

import (
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type line struct {
		at         time.Duration
		ok         bool
		suppressed int
	}
	burst := func(at time.Duration) []line {
		var ls []line
		for range logBurst {
			ls = append(ls, line{at, true, 0})
		}
		return ls
	}
	tests := []struct {
		name  string
		lines []line
	}{
		{"a few lines all pass", []line{{0, true, 0}, {time.Second, true, 0}, {2 * time.Second, true, 0}}},
		{"past the burst they are held back", append(burst(0), line{time.Second, false, 0}, line{time.Second, false, 0})},
		{"the next window's first line counts them", append(burst(0), line{time.Second, false, 0}, line{2 * time.Second, false, 0},
			line{logWindow, true, 2}, line{logWindow, true, 0})},
		{"a clock stepping back starts a window", append(burst(time.Minute), line{0, true, 0})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l logLimiter
			for i, want := range tt.lines {
				ok, suppressed := l.allow(t0.Add(want.at))
				if ok != want.ok || suppressed != want.suppressed {
					t.Fatalf("line %d at %v: allow = %v, %d; want %v, %d", i, want.at, ok, suppressed, want.ok, want.suppressed)
				}
			}
		})
	}
}
