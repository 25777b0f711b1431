//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// packets is a packet source: one Read, one packet, io.EOF once closed.
type packets chan []byte

func (p packets) Read(b []byte) (int, error) {
	pkt, ok := <-p
	if !ok {
		return 0, io.EOF
	}
	return copy(b, pkt), nil
}

// sink records each packet written and when.
type sink struct {
	mu  sync.Mutex
	got [][]byte
	at  []time.Time
}

func (s *sink) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, bytes.Clone(b))
	s.at = append(s.at, time.Now())
	return len(b), nil
}

// Every packet leaves whole, in order, and no sooner than the delay after
// it was read.
func TestLineHoldsEveryPacketInOrder(t *testing.T) {
	const delay = 15 * time.Millisecond
	in, out := make(packets), &sink{}
	l := newLine("test", delay, in, out, 4, 2048)
	done := make(chan error)
	go func() { done <- l.run() }()

	var sent []time.Time
	for i := range 50 {
		sent = append(sent, time.Now())
		in <- []byte(fmt.Sprintf("packet %02d %s", i, bytes.Repeat([]byte{byte(i)}, i*20)))
		if i%10 == 0 {
			time.Sleep(3 * time.Millisecond)
		}
	}
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(out.got) != 50 {
		t.Fatalf("%d packets out of 50", len(out.got))
	}
	for i, p := range out.got {
		if want := fmt.Sprintf("packet %02d %s", i, bytes.Repeat([]byte{byte(i)}, i*20)); string(p) != want {
			t.Errorf("packet %d is %q", i, p)
		}
		if held := out.at[i].Sub(sent[i]); held < delay {
			t.Errorf("packet %d held %v, less than %v", i, held, delay)
		}
	}
	if st := l.stats(); st.Packets != 50 || st.LateSampleOf != 50 || st.DelayMs != 15 {
		t.Errorf("stats %+v", st)
	}
}

// A packet the far end refuses is dropped and counted, and the line goes
// on.
func TestLineDropsWhatTheFarEndRefuses(t *testing.T) {
	in := make(packets)
	l := newLine("test", 0, in, failingWriter{}, 4, 64)
	done := make(chan error)
	go func() { done <- l.run() }()
	in <- []byte("x")
	in <- []byte("y")
	close(in)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := l.stats(); st.Dropped != 2 || st.Packets != 0 || !strings.Contains(st.FirstDrop, "short write") {
		t.Errorf("stats %+v", st)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrShortWrite }
