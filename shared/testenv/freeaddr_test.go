package testenv

import (
	"net"
	"strconv"
	"testing"
)

func TestFreeAddrBelowEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	for range 20 {
		addr := FreeAddr(t)
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(port)
		if err != nil {
			t.Fatal(err)
		}
		if host != "127.0.0.1" || n < 10000 || n >= low {
			t.Fatalf("FreeAddr = %s, want 127.0.0.1 and a port in [10000, %d)", addr, low)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("FreeAddr's %s cannot be bound: %v", addr, err)
		}
		l.Close()
	}
}
