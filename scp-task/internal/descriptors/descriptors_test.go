package descriptors

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/net/netutil"
)

func TestPlan(t *testing.T) {
	tests := []struct {
		limit           uint64
		maxAssociations int
		total, perAddr  int
	}{
		{65535, 64, 48671, 6083},        // Fargate's hard limit
		{1024, 4, 648, 81},              // the interop test's
		{1024, 64, 288, 36},             // a small limit with the default association bound
		{1024, 0, 288, 36},              // unlimited associations count as 64
		{256, 64, minUnassociated, 2},   // less than the associations need: still a usable bound
		{1 << 40, 64, 1 << 20, 1 << 17}, // an absurd limit is capped
	}
	for _, tc := range tests {
		total, perAddr := Plan(tc.limit, tc.maxAssociations)
		if total != tc.total || perAddr != tc.perAddr {
			t.Errorf("Plan(%d, %d) = %d, %d; want %d, %d", tc.limit, tc.maxAssociations, total, perAddr, tc.total, tc.perAddr)
		}
	}
}

func TestRaise(t *testing.T) {
	soft, err := Raise()
	if err != nil {
		t.Fatal(err)
	}
	if soft == 0 {
		t.Fatal("soft limit 0")
	}
}

// TestHTTPShares: the HTTP servers' connections fit in the reserve, with room for what else it is for.
func TestHTTPShares(t *testing.T) {
	if n := HealthConnections + PortalConnections; n > reserved/2 {
		t.Errorf("the HTTP servers may hold %d connections, more than half of the %d reserved", n, reserved)
	}
}

// TestLimit: the listener the HTTP servers hold their connections with (netutil.LimitListener): past n connections
// Accept waits, a closed connection lets the next in (once, however often it is closed), and Close ends a waiting
// Accept.
func TestLimit(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := netutil.LimitListener(inner, 2)
	accepted := make(chan net.Conn)
	acceptErr := make(chan error, 1)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted <- c
		}
	}()
	for range 4 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	// An accept that should come is waited for long enough for a loaded
	// machine; one that should not, for a while.
	const come, notCome = 10 * time.Second, 200 * time.Millisecond
	next := func(wait time.Duration) net.Conn {
		select {
		case c := <-accepted:
			return c
		case <-time.After(wait):
			return nil
		}
	}
	first, second := next(come), next(come)
	if first == nil || second == nil {
		t.Fatal("the first two connections were not accepted")
	}
	if c := next(notCome); c != nil {
		t.Fatal("a third connection accepted while two are open")
	}
	first.Close()
	first.Close()
	if next(come) == nil {
		t.Fatal("no connection accepted once one closed")
	}
	if c := next(notCome); c != nil {
		t.Fatal("a second close gave back a second slot")
	}
	second.Close()
	l.Close()
	select {
	case err := <-acceptErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case c := <-accepted:
		// The freed slot may have been taken by the fourth connection before Close: the next Accept fails.
		c.Close()
		if err := <-acceptErr; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waiting after Close")
	}
}
