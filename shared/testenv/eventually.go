package testenv

import (
	"testing"
	"time"
)

// EventuallyLimit is how long Eventually polls before it fails the test:
// far beyond any wait it stands for, so that it bounds a hang and never
// measures speed.
const EventuallyLimit = 20 * time.Second

// Eventually polls cond until it holds, and fails t, naming what it
// waited for, once EventuallyLimit passed without it.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(EventuallyLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting after %v for %s", EventuallyLimit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
