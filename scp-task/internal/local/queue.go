package local

import (
	"context"
	"sync"
	"time"
)

// workQueue holds the keys the pipeline workers have to process: every key
// handed off since start, and on start every key the hand-off table lists
// as pending. The table is the durable truth; the queue saves the workers
// from polling it. A key is in the queue once, from push until done, also
// while a worker has it and while it waits for a retry, so no two workers
// ever process the same key.
type workQueue struct {
	mu   sync.Mutex
	cond *sync.Cond // the workers wait on it for a key (pop)
	// idle is a drain's own condition: cond's Signal (push, retry) wakes
	// one waiter, which must be a worker, never a drain.
	idle   *sync.Cond
	fifo   []string
	known  map[string]bool
	closed bool
}

func newWorkQueue() *workQueue {
	q := &workQueue{known: map[string]bool{}}
	q.cond, q.idle = sync.NewCond(&q.mu), sync.NewCond(&q.mu)
	return q
}

// push adds key unless it is already queued, being processed or waiting
// for a retry.
func (q *workQueue) push(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.known[key] || q.closed {
		return
	}
	q.known[key] = true
	q.fifo = append(q.fifo, key)
	q.cond.Signal()
}

// pop waits for a key; ok is false once the queue is closed.
func (q *workQueue) pop() (key string, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.fifo) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return "", false
	}
	key = q.fifo[0]
	q.fifo[0] = ""
	q.fifo = q.fifo[1:]
	return key, true
}

// done forgets key: it was processed, or parked as failed.
func (q *workQueue) done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.known, key)
	if len(q.known) == 0 {
		q.idle.Broadcast() // a drain waits for this
	}
}

// drain waits until every key pushed is done (none queued, in a worker's
// hands or waiting for a retry), the queue is closed or ctx ends, and
// returns how many keys are left.
func (q *workQueue) drain(ctx context.Context) int {
	defer context.AfterFunc(ctx, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		q.idle.Broadcast()
	})()
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.known) > 0 && !q.closed && ctx.Err() == nil {
		q.idle.Wait()
	}
	return len(q.known)
}

// retry puts key back at the end of the queue after d.
func (q *workQueue) retry(key string, d time.Duration) {
	time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.closed {
			return
		}
		q.fifo = append(q.fifo, key)
		q.cond.Signal()
	})
}

// closeOnDone closes the queue when ctx ends: waiting workers return.
func (q *workQueue) closeOnDone(ctx context.Context) {
	<-ctx.Done()
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
	q.idle.Broadcast()
}
