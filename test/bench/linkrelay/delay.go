//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// packet is one IP packet read from a tun device, with when it was read.
type packet struct {
	buf  *[]byte
	n    int
	read time.Time
}

// line carries packets one way, holding each for delay after it was read:
// a link's propagation delay, which needs no model of bandwidth (tbf on the
// tun devices provides that) and keeps every packet's order.
type line struct {
	name  string
	delay time.Duration
	in    io.Reader // one Read, one packet (a tun device)
	out   io.Writer // one Write, one packet
	bufs  *sync.Pool
	queue chan packet

	mu        sync.Mutex
	packets   int64
	bytes     int64
	dropped   int64
	firstDrop error
	late      []time.Duration // how much later than delay each packet left (a sample)
}

// newLine returns a line of at most depth packets in flight; a reader that
// gets ahead of it by more waits, and the tun device's own queue (then tbf)
// holds or drops what comes next, as a router would.
func newLine(name string, delay time.Duration, in io.Reader, out io.Writer, depth int, bufSize int) *line {
	return &line{
		name: name, delay: delay, in: in, out: out,
		bufs:  &sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }},
		queue: make(chan packet, depth),
	}
}

// run relays until in ends (the device closed: nil) or fails (that
// error). Packets the far end refuses are dropped and counted.
func (l *line) run() error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.send()
	}()
	err := l.receive()
	close(l.queue)
	<-done
	return err
}

func (l *line) receive() error {
	for {
		b := l.bufs.Get().(*[]byte)
		n, err := l.in.Read(*b)
		if err != nil {
			l.bufs.Put(b)
			if errors.Is(err, io.EOF) || isClosed(err) {
				return nil
			}
			return fmt.Errorf("linkrelay: %s: read: %w", l.name, err)
		}
		l.queue <- packet{buf: b, n: n, read: time.Now()}
	}
}

// send writes each packet once it has been held for delay. It sleeps on
// a thread of its own with nanosleep, whose wake-up is tens of
// microseconds late, where the runtime's timers can be a millisecond
// late: at RTT 2 ms that would be half the delay again.
func (l *line) send() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for p := range l.queue {
		due := p.read.Add(l.delay)
		for {
			wait := time.Until(due)
			if wait <= 0 {
				break
			}
			ts := unix.NsecToTimespec(int64(wait))
			// EINTR only shortens the sleep; the loop sleeps the rest.
			_ = unix.Nanosleep(&ts, nil)
		}
		left := time.Now()
		_, err := l.out.Write((*p.buf)[:p.n])
		l.bufs.Put(p.buf)
		l.mu.Lock()
		if err != nil {
			// The far device refused it (down, or not yet up: EIO), as a
			// link drops what it cannot deliver. TCP sends it again.
			l.dropped++
			if l.firstDrop == nil && !isClosed(err) {
				l.firstDrop = fmt.Errorf("linkrelay: %s: write: %w", l.name, err)
			}
			l.mu.Unlock()
			continue
		}
		l.packets++
		l.bytes += int64(p.n)
		if len(l.late) < maxLateSamples {
			l.late = append(l.late, left.Sub(due))
		}
		l.mu.Unlock()
	}
}

// maxLateSamples bounds the lateness kept for stats: the first packets'
// are as telling as any.
const maxLateSamples = 1 << 16

// isClosed reports an error from a device or pipe closed under a read or
// write, which is how a line is stopped.
func isClosed(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}

// stats is what a line carried and how late it let packets go.
type stats struct {
	Line         string  `json:"line"`
	DelayMs      float64 `json:"delayMs"`
	Packets      int64   `json:"packets"`
	Bytes        int64   `json:"bytes"`
	Dropped      int64   `json:"dropped"`
	FirstDrop    string  `json:"firstDrop,omitempty"`
	LateP50Us    float64 `json:"lateP50us"`
	LateP99Us    float64 `json:"lateP99us"`
	LateSampleOf int     `json:"lateSampleOf"`
}

func (l *line) stats() stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := stats{Line: l.name, DelayMs: float64(l.delay) / 1e6, Packets: l.packets, Bytes: l.bytes, LateSampleOf: len(l.late), Dropped: l.dropped}
	if l.firstDrop != nil {
		s.FirstDrop = l.firstDrop.Error()
	}
	if len(l.late) > 0 {
		late := slices.Clone(l.late)
		slices.Sort(late)
		s.LateP50Us = float64(late[len(late)/2]) / 1e3
		s.LateP99Us = float64(late[min(len(late)-1, len(late)*99/100)]) / 1e3
	}
	return s
}
