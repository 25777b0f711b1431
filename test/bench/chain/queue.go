package main

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/test/bench/internal/awsmeter"
)

// message is one SQS message: an S3 notification for key.
type message struct {
	id      int
	key     string
	body    string
	created time.Time // the object was created (S3 answered the write)
	visible time.Time // the notification is in the queue and visible to pollers
}

// queue is an SQS standard queue as Lambda's event source mapping sees it:
// messages become visible once S3 has delivered them, pollers take them
// in batches, failed ones come back after the visibility timeout.
type queue struct {
	name       string
	visibility time.Duration

	mu      sync.Mutex
	pending []*message // sorted by visible
	nextID  int
	wake    chan struct{} // closed and replaced whenever pending changes
	meter   *awsmeter.Meter
}

func newQueue(name string, visibility time.Duration, meter *awsmeter.Meter) *queue {
	return &queue{name: name, visibility: visibility, wake: make(chan struct{}), meter: meter}
}

// send enqueues body to become visible at visible: S3's SendMessage.
func (q *queue) send(key, body string, created, visible time.Time) {
	q.meter.Add("SQS SendMessage (S3 notification)", 1)
	q.mu.Lock()
	defer q.mu.Unlock()
	q.nextID++
	q.insertLocked(&message{id: q.nextID, key: key, body: body, created: created, visible: visible})
}

func (q *queue) insertLocked(m *message) {
	i, _ := slices.BinarySearchFunc(q.pending, m.visible, func(e *message, t time.Time) int { return e.visible.Compare(t) })
	q.pending = slices.Insert(q.pending, i, m)
	close(q.wake)
	q.wake = make(chan struct{})
}

// take removes up to n messages visible at now; it also returns when the
// next message becomes visible (zero if none is pending) and a channel
// closed on the next change.
func (q *queue) take(now time.Time, n int) (got []*message, next time.Time, changed <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := 0
	for k < len(q.pending) && k < n && !q.pending[k].visible.After(now) {
		k++
	}
	got = slices.Clone(q.pending[:k])
	q.pending = slices.Delete(q.pending, 0, k)
	if len(q.pending) > 0 {
		next = q.pending[0].visible
	}
	return got, next, q.wake
}

// retry makes m visible again after the visibility timeout: a failed
// message in a batch that reported it.
func (q *queue) retry(m *message) {
	q.mu.Lock()
	defer q.mu.Unlock()
	m.visible = time.Now().Add(q.visibility)
	q.insertLocked(m)
}

// depth is the number of messages not yet deleted.
func (q *queue) depth() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// receive is one poller of the event source mapping gathering a batch:
// it waits (long polling) for a first message, then keeps receiving until
// the batch holds size messages or window has passed since the first,
// as MaximumBatchingWindowInSeconds makes Lambda do. Each fetch that
// returns messages is one ReceiveMessage call; a long poll that comes back
// empty after 20 s is one too.
func (q *queue) receive(ctx context.Context, size int, window time.Duration) []*message {
	const longPoll = 20 * time.Second
	var batch []*message
	var deadline time.Time
	pollStart := time.Now()
	for {
		now := time.Now()
		got, next, changed := q.take(now, size-len(batch))
		if len(got) > 0 {
			q.meter.Add("SQS ReceiveMessage (event source mapping)", 1)
			if batch == nil {
				deadline = now.Add(window)
			}
			batch = append(batch, got...)
		}
		if len(batch) >= size || (batch != nil && !now.Before(deadline)) {
			return batch
		}
		var until time.Time
		switch {
		case batch != nil:
			until = deadline
		default:
			until = pollStart.Add(longPoll)
		}
		if !next.IsZero() && next.Before(until) {
			until = next
		}
		t := time.NewTimer(time.Until(until))
		select {
		case <-ctx.Done():
			t.Stop()
			return batch
		case <-changed:
		case <-t.C:
		}
		t.Stop()
		if batch == nil && !time.Now().Before(pollStart.Add(longPoll)) {
			q.meter.Add("SQS ReceiveMessage (idle long poll)", 1)
			pollStart = time.Now()
		}
	}
}
