package testenv

import (
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
	deadline := time.Now().Add(limit)
	for pause := 5 * time.Millisecond; !cond(); pause = min(2*pause, maxPollPause) {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v for %s", limit, what)
		}
		time.Sleep(pause)
	}
}
