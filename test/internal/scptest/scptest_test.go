package scptest

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestLogsReadToTheEnd: once a process has exited (s.exited), everything
// it logged is in Logs, its last line included. Wait ran beside the
// reader and closed the pipe at the exit, dropping what the reader had
// not read yet: the stop's lines, which tests read after Stop, went
// missing (4 of 80 stops on one loaded core; here, a burst of 20,000
// lines and an exit lost the last in most runs).
func TestLogsReadToTheEnd(t *testing.T) {
	const script = `i=0; while [ $i -lt 20000 ]; do echo '{"msg":"line"}'; i=$((i+1)); done >&2; echo '{"msg":"last"}' >&2`
	s := &SCP{cmd: exec.Command("sh", "-c", script), exited: make(chan struct{})}
	if err := s.run(make(chan struct{})); err != nil {
		t.Fatal(err)
	}
	<-s.exited
	if s.waitErr != nil {
		t.Fatal(s.waitErr)
	}
	if n := strings.Count(s.Logs(), "\n"); n != 20001 || !strings.HasSuffix(s.Logs(), "{\"msg\":\"last\"}\n") {
		t.Errorf("%d lines read of 20,001, the last %v", n, strings.HasSuffix(s.Logs(), "{\"msg\":\"last\"}\n"))
	}
	if len(s.LogEntries()) != 20001 {
		t.Errorf("%d log entries, want 20,001", len(s.LogEntries()))
	}
}

// TestLeftOf: ExpectReportedByRunning waits what is left of its limit
// since the kill, and said a negative duration ("still waiting after
// -1.2s") when the wait began past it.
func TestLeftOf(t *testing.T) {
	killed := time.Date(2026, 12, 7, 20, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		now  time.Time
		want time.Duration
	}{
		{"at the kill", killed, 30 * time.Second},
		{"within the limit", killed.Add(10 * time.Second), 20 * time.Second},
		{"at the deadline", killed.Add(30 * time.Second), 0},
		{"past the deadline", killed.Add(31200 * time.Millisecond), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := leftOf(killed, 30*time.Second, tc.now); got != tc.want {
				t.Errorf("leftOf = %v, want %v", got, tc.want)
			}
		})
	}
}
