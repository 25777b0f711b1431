// Package durations is the one rule for writing a duration where a person
// reads it: scp-task's --help defaults and configuration.md, every JSON log
// line (shared/jsonlog), the events' quietPeriod and the portal.
package durations

import (
	"strconv"
	"strings"
	"time"
)

// Format writes d in Go's duration syntax without its zero units: 1m, not
// 1m0s; 2h, not 2h0m0s; 1m30s, 1.5s and 250ms as Go writes them. What it
// writes, time.ParseDuration (and so every duration flag) reads back.
func Format(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if i := strings.Index(s, "h0m"); i >= 0 {
		s = s[:i+1] + s[i+3:]
	}
	return s
}

// Prose writes d as the documents' prose and tables do: 30 s, 60 s (under
// two minutes, in seconds), 5 min, 2 h; in the largest of those units that
// holds it whole (150 s, not 2 min; 61 min), and what is not a whole number
// of seconds in milliseconds (1500 ms), never rounded: a document checked
// against Prose says a default exactly or fails its test.
func Prose(d time.Duration) string {
	switch {
	case d%time.Millisecond != 0:
		return Format(d) // no document states one; never rounded
	case d%time.Second != 0:
		return strconv.FormatInt(d.Milliseconds(), 10) + " ms"
	case d < 2*time.Minute || d%time.Minute != 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + " s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + " h"
	}
	return strconv.FormatInt(int64(d/time.Minute), 10) + " min"
}
