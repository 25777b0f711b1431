//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestRelayBetweenNamespaces is the relay's smoke test as the site-link
// bench uses it: two namespaces joined by its tun devices at MTU 1,400,
// TCP from one to the other. A megabyte crosses intact both ways (offload
// packets, cut to the MTU, pass through), and no round trip is shorter
// than the one configured.
func TestRelayBetweenNamespaces(t *testing.T) {
	requireNetns(t)
	const rtt = 10 * time.Millisecond
	a, b := fmt.Sprintf("dib-relaytest-a-%d", os.Getpid()), fmt.Sprintf("dib-relaytest-b-%d", os.Getpid())
	for _, ns := range []string{a, b} {
		ip(t, "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("delete namespace %s: %v %s", ns, err, out)
			}
		})
	}
	ta, err := openTun(a, "dib0")
	if err != nil {
		t.Fatal(err)
	}
	tb, err := openTun(b, "dib0")
	if err != nil {
		ta.Close()
		t.Fatal(err)
	}
	ab := newLine("a->b", rtt/2, ta, tb, 1024, 1<<16+64)
	ba := newLine("b->a", rtt/2, tb, ta, 1024, 1<<16+64)
	errs := make(chan error, 2)
	go func() { errs <- ab.run() }()
	go func() { errs <- ba.run() }()
	t.Cleanup(func() {
		ta.Close()
		tb.Close()
		for range 2 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	})
	for ns, addrs := range map[string][2]string{a: {"10.201.0.1/32", "10.201.0.2"}, b: {"10.201.0.2/32", "10.201.0.1"}} {
		ip(t, "-n", ns, "link", "set", "lo", "up")
		ip(t, "-n", ns, "addr", "add", addrs[0], "peer", addrs[1], "dev", "dib0")
		ip(t, "-n", ns, "link", "set", "dib0", "mtu", "1400", "up")
	}

	var l net.Listener
	inNetns(t, b, func() (err error) { l, err = net.Listen("tcp", "10.201.0.2:0"); return err })
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c) // echo until the client closes
	}()
	var c net.Conn
	inNetns(t, a, func() (err error) {
		c, err = net.DialTimeout("tcp", l.Addr().String(), 10*time.Second)
		return err
	})
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))

	for i := range 5 {
		start := time.Now()
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		var one [1]byte
		if _, err := io.ReadFull(c, one[:]); err != nil || one[0] != byte(i) {
			t.Fatalf("echo %d: %v %v", i, one, err)
		}
		if d := time.Since(start); d < rtt {
			t.Errorf("round trip %v, shorter than the link's %v", d, rtt)
		}
	}
	data := make([]byte, 1<<20)
	rand.Read(data)
	go func() { c.Write(data) }()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read the echo: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Error("the megabyte came back changed")
	}
	if st := ab.stats(); st.Packets == 0 || st.Bytes < int64(len(data)) {
		t.Errorf("a->b carried %+v", st)
	}
}

// requireNetns requires what the relay needs (see testenv.Missing): Linux,
// root for namespaces and tun devices, iproute2's ip, /dev/net/tun.
func requireNetns(t *testing.T) {
	t.Helper()
	testenv.RequireLinux(t, "network namespaces")
	testenv.RequireRoot(t, "network namespaces and tun devices")
	testenv.LookPath(t, "ip")
	testenv.RequireTUN(t)
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
	}
}

// inNetns runs f on a thread moved into namespace ns: sockets it creates
// belong to ns. The thread is discarded afterwards.
func inNetns(t *testing.T, ns string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in ns
		nsf, err := os.Open(filepath.Join("/var/run/netns", ns))
		if err != nil {
			done <- err
			return
		}
		defer nsf.Close()
		if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	if err := <-done; err != nil {
		t.Fatalf("in namespace %s: %v", ns, err)
	}
}
