package testenv

import (
	"strings"
	"testing"
	"time"
)

// EventuallyLimit is how long Eventually polls before it fails the test:
// far beyond any wait it stands for, so that it bounds a hang and never
// measures speed.
const EventuallyLimit = 20 * time.Second

// maxPollPause bounds the pause between two polls: the pause starts at
// 5 ms and doubles, so a short wait ends soon after its condition holds
// and a long one does not spin on a costly condition (a listing, a
// metrics scrape, a child process).
const maxPollPause = 100 * time.Millisecond

// Eventually polls cond until it holds, and fails t, naming what it
// waited for, once EventuallyLimit passed without it.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, EventuallyLimit, what, cond)
}

// EventuallyWithin is Eventually with a limit of its own: for a wait that
// stands for more than EventuallyLimit (retries across an outage, a
// backoff), or whose limit is what the test is about (a state that must
// show while an outage of that length lasts).
func EventuallyWithin(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	EventuallySawWithin(t, limit, what, func() (bool, string) { return cond(), "" })
}

// EventuallySaw is Eventually for a condition that also describes the
// state it saw (a count, a listing, a log): a failure reports the last
// one (its last SawLines lines), so that a wait that never ended says
// where it stood.
func EventuallySaw(t testing.TB, what string, cond func() (holds bool, saw string)) {
	t.Helper()
	EventuallySawWithin(t, EventuallyLimit, what, cond)
}

// EventuallySawWithin is EventuallySaw with a limit of its own (see
// EventuallyWithin).
func EventuallySawWithin(t testing.TB, limit time.Duration, what string, cond func() (holds bool, saw string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, maxPollPause) {
		holds, saw := cond()
		if holds {
			return
		}
		if time.Now().After(deadline) {
			switch saw = LastLines(saw, SawLines); {
			case saw == "":
				t.Fatalf("still waiting after %v for %s", limit, what)
			case strings.Contains(saw, "\n"):
				t.Fatalf("still waiting after %v for %s; last seen:\n%s", limit, what, saw)
			default:
				t.Fatalf("still waiting after %v for %s; last seen: %s", limit, what, saw)
			}
		}
		time.Sleep(pause)
	}
}

// SawLines is how many of its last lines a failed EventuallySaw reports
// of the state it saw last.
const SawLines = 40

// LastLines is the last n lines of s, without its final newline.
func LastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
