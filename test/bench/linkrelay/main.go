//go:build linux

// Command bench-linkrelay is the wide-area link of `make bench`'s site-link
// scenarios: it joins two network namespaces with a tun device in each and
// carries every IP packet from one to the other after holding it for half
// the round trip, in each direction. The kernels the bench runs on have no
// netem; tbf on the tun devices sets the bandwidth and the devices' MTU the
// packet size, so TCP end to end sees the link's round trip, bandwidth and
// MTU as it would across a VPN, and the two peers' stacks are untouched.
//
//	bench-linkrelay -ns-a dib-site-1 -ns-b dib-aws-1 -dev dib0 -rtt 20ms [-stats FILE]
//
// It prints "ready" once both devices exist (down and without addresses:
// the caller configures them with ip and tc), relays until SIGTERM or
// SIGINT, and then writes per-direction statistics (packets, bytes, and
// how much later than the delay packets left: the relay's own error) as
// JSON to -stats. The devices go away with the process.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dicom-ingest/dicom-ingest/shared/cli"
)

const command = "bench-linkrelay"

func main() { cli.Main(command, runCommand) }

// runCommand is main without the process: flags in, a link until a signal.
func runCommand(args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	cli.Synopsis(fs, command+" -ns-a NS -ns-b NS [-dev NAME] [-rtt D] [-depth N] [-stats FILE]")
	nsA := fs.String("ns-a", "", "network namespace of one end (a name under /var/run/netns, or a path)")
	nsB := fs.String("ns-b", "", "network namespace of the other end")
	dev := fs.String("dev", "dib0", "name of the tun device created in each namespace")
	rtt := fs.Duration("rtt", 20*time.Millisecond, "round trip the link adds: each packet is held rtt/2 in each direction")
	depth := fs.Int("depth", 1<<14, "packets in flight per direction before reading the device waits")
	statsPath := fs.String("stats", "", "file to write per-direction statistics to (JSON) on exit")
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	switch {
	case *nsA == "" || *nsB == "":
		return cli.UsageError(fs, errors.New("-ns-a and -ns-b are required"))
	case *rtt < 0:
		return cli.UsageError(fs, fmt.Errorf("-rtt: %v is negative", *rtt))
	case *depth < 1:
		return cli.UsageError(fs, fmt.Errorf("-depth: %d is not at least 1", *depth))
	}
	if err := cli.FlagsOnly(fs); err != nil {
		return err
	}
	return run(*nsA, *nsB, *dev, *rtt/2, *depth, *statsPath)
}

func run(nsA, nsB, dev string, delay time.Duration, depth int, statsPath string) error {
	a, err := openTun(nsA, dev)
	if err != nil {
		return err
	}
	b, err := openTun(nsB, dev)
	if err != nil {
		a.Close()
		return err
	}
	// A packet is at most a 64 KiB offload packet and its header.
	const bufSize = 1<<16 + 64
	ab := newLine(nsA+"->"+nsB, delay, a, b, depth, bufSize)
	ba := newLine(nsB+"->"+nsA, delay, b, a, depth, bufSize)
	errs := make(chan error, 2)
	go func() { errs <- ab.run() }()
	go func() { errs <- ba.run() }()
	fmt.Println("ready")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var first error
	running := 2
	select {
	case <-ctx.Done():
	case first = <-errs:
		running--
	}
	// Closing the devices ends both lines' reads.
	a.Close()
	b.Close()
	for range running {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if statsPath != "" {
		out, err := json.MarshalIndent([]stats{ab.stats(), ba.stats()}, "", "  ")
		if err == nil {
			err = os.WriteFile(statsPath, append(out, '\n'), 0o644)
		}
		if err != nil && first == nil {
			first = fmt.Errorf("linkrelay: write stats: %w", err)
		}
	}
	return first
}

// openTun creates a tun device named dev in network namespace ns and
// returns it open for packets without a protocol header. The device lives
// in the namespace the thread opening /dev/net/tun is in, so that is done
// on a thread of its own moved into ns, which never runs anything else.
func openTun(ns, dev string) (*os.File, error) {
	path := ns
	if !strings.Contains(ns, "/") {
		path = filepath.Join("/var/run/netns", ns)
	}
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread leaves with this goroutine, in
		// whichever namespace it ended up.
		runtime.LockOSThread()
		f, err := func() (*os.File, error) {
			nsf, err := os.Open(path)
			if err != nil {
				return nil, fmt.Errorf("linkrelay: network namespace %s: %w", ns, err)
			}
			defer nsf.Close()
			if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
				return nil, fmt.Errorf("linkrelay: enter network namespace %s (needs root): %w", ns, err)
			}
			fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				return nil, fmt.Errorf("linkrelay: open /dev/net/tun: %w", err)
			}
			ifr, err := unix.NewIfreq(dev)
			if err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("linkrelay: device name %q: %w", dev, err)
			}
			// With a virtio-net header on every packet the kernel may hand
			// over (and take back) TCP segmentation-offload packets of up
			// to 64 KiB, still cut to the device's MTU on the way: a
			// read per 40 packets rather than per packet keeps the relay
			// off the cores the peers measured need. The header passes
			// through unread; both ends use the same size.
			ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
			if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("linkrelay: create tun %s in %s: %w", dev, ns, err)
			}
			const offload = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
			if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offload); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("linkrelay: tun %s in %s: offloads: %w", dev, ns, err)
			}
			// Non-blocking, so the runtime's poller serves reads and Close
			// ends a read in progress.
			if err := unix.SetNonblock(fd, true); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("linkrelay: tun %s in %s: %w", dev, ns, err)
			}
			return os.NewFile(uintptr(fd), ns+"/"+dev), nil
		}()
		ch <- result{f, err}
	}()
	r := <-ch
	return r.f, r.err
}
