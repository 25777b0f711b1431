// Package digest hashes a stream on a goroutine of its own, so that
// hashing an object overlaps with receiving it and with the fsync or the
// upload that follows, instead of adding to every C-STORE's latency.
package digest

import (
	"hash"
	"sync/atomic"
)

// Background feeds the slices handed to Add, in order, to a hash on its
// own goroutine. A slice passed to Add must stay unmodified until the next
// Wait, Sum or Stop returns: callers hash in place, without copying, and
// call Wait before they reuse the memory.
//
// A Background is used by one goroutine (the one receiving the object).
type Background struct {
	h         hash.Hash
	in        chan []byte
	ack       chan struct{}
	exited    chan struct{}
	abandoned atomic.Bool
	stopped   bool
}

// queued bounds the slices waiting for the hasher; Add blocks beyond it.
const queued = 64

// Start starts hashing into h.
func Start(h hash.Hash) *Background {
	b := &Background{h: h, in: make(chan []byte, queued), ack: make(chan struct{}), exited: make(chan struct{})}
	go b.run()
	return b
}

func (b *Background) run() {
	defer close(b.exited)
	for p := range b.in {
		switch {
		case p == nil: // a Wait marker: everything before it is hashed
			b.ack <- struct{}{}
		case !b.abandoned.Load():
			b.h.Write(p)
		}
	}
}

// Add queues p to be hashed after everything added before it.
func (b *Background) Add(p []byte) {
	if len(p) > 0 {
		b.in <- p
	}
}

// Wait returns once every slice added so far has been hashed, so their
// memory may be reused.
func (b *Background) Wait() {
	if b.stopped {
		return
	}
	b.in <- nil
	<-b.ack
}

// Sum waits for the hasher, stops it and returns the hash of everything
// added.
func (b *Background) Sum() []byte {
	b.Wait()
	b.Stop()
	return b.h.Sum(nil)
}

// Stop ends the goroutine, dropping what it has not hashed yet, and
// returns once it no longer touches any added slice. It may be called more
// than once, and after Sum.
func (b *Background) Stop() {
	if b.stopped {
		return
	}
	b.stopped = true
	b.abandoned.Store(true)
	close(b.in)
	<-b.exited
}
