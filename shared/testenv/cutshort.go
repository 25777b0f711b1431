package testenv

import (
	"context"
	"errors"
	"testing"
	"time"
)

// ErrSecondSignal is the cause CloseCutShort ends a close's context with, as
// scp-task's second SIGINT or SIGTERM does.
var ErrSecondSignal = errors.New("cut short by a second signal")

// CloseCutShort runs close with a context that ends with ErrSecondSignal
// shortly after it starts, and fails t unless close returns nil soon
// after (a close cut short is not a failure; it says what it leaves).
func CloseCutShort(t testing.TB, close func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	time.AfterFunc(20*time.Millisecond, func() { cancel(ErrSecondSignal) })
	done := make(chan error, 1)
	go func() { done <- close(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("a close cut short failed: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the close went on past its context")
	}
}
