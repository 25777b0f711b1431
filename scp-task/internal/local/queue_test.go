package local

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestDrain: at a stop, Drain waits for every key handed to the pipeline
// to be done (processed or parked) and returns at once when there is
// none; cut short (the exit's grace spent, a second signal) it leaves the
// rest for the next start and says how many.
func TestDrain(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name          string
		ctx           context.Context
		pushed, ended int // keys pushed, and done while Drain waits
		left          int
	}{
		{name: "nothing handed", ctx: context.Background()},
		{name: "every key done", ctx: context.Background(), pushed: 3, ended: 3},
		{name: "cut short", ctx: cancelled, pushed: 3, left: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &testenv.LogBuffer{}
			l := &Local{queue: newWorkQueue(), log: slog.New(slog.NewJSONHandler(logs, nil))}
			keys := []string{"audit/a", "audit/b", "audit/c"}[:tc.pushed]
			for _, k := range keys {
				l.queue.push(k)
			}
			// A worker takes the keys and completes those it can.
			go func() {
				for range tc.ended {
					k, ok := l.queue.pop()
					if !ok {
						return
					}
					l.queue.done(k)
				}
			}()
			l.Drain(tc.ctx)
			if tc.left == 0 {
				if n := l.queue.drain(context.Background()); n != 0 {
					t.Errorf("%d keys left after Drain", n)
				}
			}
			line := `"msg":"pipeline work left pending at stop; it is processed at the next start"`
			switch got := logs.String(); {
			case tc.left == 0 && strings.Contains(got, line):
				t.Errorf("a drain that completed logged keys left:\n%s", got)
			case tc.left > 0 && !strings.Contains(got, line+`,"pending":`+strconv.Itoa(tc.left)):
				t.Errorf("a drain cut short did not say so:\n%s", got)
			}
		})
	}
}

// TestDrainLeavesTheWorkersTheirWakeUps: a key a worker put back for a
// retry (its hand-off moving to the queue, a failure) while a drain waits
// is taken up by the worker, and the drain ends once it is done. The drain
// waited on the workers' condition, whose retry (and push) wakes one
// waiter, the longest waiting: the drain, which went back to waiting while
// the worker slept on with the key queued, so such a stop waited out the
// exit's grace and left the key for the next start.
func TestDrainLeavesTheWorkersTheirWakeUps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newWorkQueue()
		q.push("audit/a")
		k, _ := q.pop() // in a worker's hands
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		left := make(chan int, 1)
		go func() { left <- q.drain(ctx) }()
		synctest.Wait() // the drain waits
		go func() {
			q.retry(k, time.Millisecond) // as a worker does, then waits for a key
			for {
				k, ok := q.pop()
				if !ok {
					return
				}
				q.done(k)
			}
		}()
		if n := <-left; n != 0 {
			t.Errorf("the drain left %d keys a worker was waiting to take", n)
		}
		stopped, stop := context.WithCancel(context.Background())
		stop()
		q.closeOnDone(stopped) // the worker returns
	})
}
