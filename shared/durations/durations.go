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

// Prose writes a whole number of seconds as the documents' prose and tables
// do: 30 s, 60 s (under two minutes, in seconds), 5 min, 2 h.
func Prose(d time.Duration) string {
	switch {
	case d < 2*time.Minute:
		return strconv.FormatInt(int64(d/time.Second), 10) + " s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + " h"
	}
	return strconv.FormatInt(int64(d/time.Minute), 10) + " min"
}
