package testenv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FreeAddr returns a loopback address, 127.0.0.1:port, on which nothing
// listens, for a process the test starts next (or for a peer that must
// know the address before that process starts). It fails the test if it
// finds none.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return loopback(FreePort(t))
}

// FreePort is FreeAddr's port, for a peer configured by port alone.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := pickFreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// PickFreeAddr is FreeAddr for a command (a bench) rather than a test.
func PickFreeAddr() (string, error) {
	port, err := pickFreePort()
	if err != nil {
		return "", err
	}
	return loopback(port), nil
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// pickFreePort returns a loopback port on which nothing listens. It lies
// below the kernel's ephemeral range, so that between the pick and the
// child's bind neither an outgoing connection's source port nor another
// listener on port 0 can take it; a port from the kernel's own pick
// (listening on port 0 and closing) can be, and was, in CI. A process
// that can report the address it bound should listen on port 0 instead.
func pickFreePort() (int, error) {
	low := ephemeralLow()
	const base = 10000
	for range 100 {
		port := base + rand.IntN(low-base)
		l, err := net.Listen("tcp", loopback(port))
		if err != nil {
			continue // in use
		}
		if err := l.Close(); err != nil {
			return 0, fmt.Errorf("testenv: free address: %w", err)
		}
		return port, nil
	}
	return 0, errors.New("testenv: free address: 100 ports below the ephemeral range were all in use")
}

// ephemeralLow is the first port of the kernel's ephemeral range, or
// Linux's default, 32768, where it cannot be read or leaves too little
// room below it.
func ephemeralLow() int {
	const fallback = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fallback
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return fallback
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil || low <= 10000+1000 {
		return fallback
	}
	return low
}
