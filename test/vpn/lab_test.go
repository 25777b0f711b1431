package vpn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// Paths of Debian's strongSwan packages (strongswan-charon,
// strongswan-swanctl, libcharon-extra-plugins for kernel-libipsec).
const (
	charonPath     = "/usr/lib/ipsec/charon"
	libipsecPlugin = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"
)

// requireLab requires everything the lab needs (see testenv.Missing).
func requireLab(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t, "network namespaces, TUN devices, bind mounts")
	testenv.RequireTUN(t)
	testenv.RequireFile(t, charonPath)
	testenv.RequireFile(t, libipsecPlugin)
	testenv.RequireTools(t, "ip", "swanctl", "echoscu", "storescu", "dump2dcm", "tcpdump", "ss", "mount")
}

// addNamespace creates a network namespace, or ends the test when this
// machine cannot (a container without CAP_SYS_ADMIN, say).
func addNamespace(t *testing.T, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := run(ctx, nil, "ip", "netns", "add", ns); err != nil {
		testenv.Missing(t, "network namespaces ("+strings.TrimSpace(out)+")",
			"run as root with CAP_SYS_ADMIN and CAP_NET_ADMIN (a container needs --privileged or those capabilities)")
	}
}

// lab is the pair of network namespaces and everything started in them.
type lab struct {
	t     *testing.T
	dir   string
	site  string // netns names
	cloud string
}

// run executes a command (in the root namespace) and returns its combined
// output; failure is returned, not fatal.
func run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (l *lab) must(name string, args ...string) string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := run(ctx, nil, name, args...)
	if err != nil {
		l.t.Fatal(err)
	}
	return out
}

// inNS runs a command inside a namespace with DCMTK's TCP_NODELAY set,
// within a minute unless ctx says otherwise, so a hung peer fails the test
// instead of stalling it.
func (l *lab) inNS(ctx context.Context, ns string, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	return run(ctx, []string{"TCP_NODELAY=1"}, "ip", append([]string{"netns", "exec", ns}, args...)...)
}

// newLab creates the namespaces and links:
//
//	netns site                                  netns cloud
//	 lan0 10.10.0.1/24 (the PACS)                lan0 10.0.0.1/24 (the SCP)
//	 wan0 203.0.113.1/24 <--- veth "internet" ---> wan0 203.0.113.2/24, 203.0.113.3/24
//
// The outer addresses are public-looking documentation addresses
// (TEST-NET-3) because the environment config insists on a public customer
// gateway IP; they exist only inside the namespaces. Cleanup deletes both
// namespaces (and with them every link) after the processes are stopped.
func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{
		t:     t,
		dir:   t.TempDir(),
		site:  fmt.Sprintf("di-site-%d", os.Getpid()),
		cloud: fmt.Sprintf("di-cloud-%d", os.Getpid()),
	}
	removeStaleNamespaces(t)
	addNamespace(t, l.site)
	t.Cleanup(func() { l.deleteNS(l.site) })
	l.must("ip", "netns", "add", l.cloud)
	t.Cleanup(func() { l.deleteNS(l.cloud) })

	l.must("ip", "-n", l.site, "link", "add", "wan0", "type", "veth", "peer", "name", "wan0", "netns", l.cloud)
	l.must("ip", "-n", l.site, "addr", "add", "203.0.113.1/24", "dev", "wan0")
	l.must("ip", "-n", l.cloud, "addr", "add", "203.0.113.2/24", "dev", "wan0")
	l.must("ip", "-n", l.cloud, "addr", "add", "203.0.113.3/24", "dev", "wan0")
	for ns, lan := range map[string]string{l.site: "10.10.0.1/24", l.cloud: "10.0.0.1/24"} {
		l.must("ip", "-n", ns, "link", "set", "lo", "up")
		l.must("ip", "-n", ns, "link", "set", "wan0", "up")
		// No dummy module on some kernels: a veth pair inside the namespace is the LAN.
		l.must("ip", "-n", ns, "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
		l.must("ip", "-n", ns, "link", "set", "lan0", "up")
		l.must("ip", "-n", ns, "link", "set", "lan0p", "up")
		l.must("ip", "-n", ns, "addr", "add", lan, "dev", "lan0")
	}
	return l
}

// staleNSRE matches the namespaces these tests create, by creator pid.
var staleNSRE = regexp.MustCompile(`^di-(?:site|cloud|kit)-(\d+)$`)

// removeStaleNamespaces deletes namespaces left by an earlier run of these
// tests that was killed before its cleanup (its pid is gone).
func removeStaleNamespaces(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := run(ctx, nil, "ip", "netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := staleNSRE.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue // ours, or a run still going
		}
		if _, err := run(ctx, nil, "ip", "netns", "del", f[0]); err == nil {
			t.Logf("removed namespace %s left by an earlier killed run", f[0])
		}
	}
}

func (l *lab) deleteNS(ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := run(ctx, nil, "ip", "netns", "del", ns); err != nil {
		l.t.Errorf("cleanup: delete netns %s: %v %s", ns, err, out)
	}
}

// daemon is a background process started in a namespace.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs args in ns in the background, output to <dir>/<name>.out. The
// process is stopped at cleanup (SIGTERM, then SIGKILL after 5 s).
func (l *lab) start(name, ns string, env []string, args ...string) *daemon {
	l.t.Helper()
	logPath := filepath.Join(l.dir, name+".out")
	f, err := os.Create(logPath)
	if err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group, so that a stop reaches a shell's children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		l.t.Fatalf("start %s: %v", name, err)
	}
	d := &daemon{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		f.Close()
		close(d.done)
	}()
	l.t.Cleanup(func() { d.stop(l.t) })
	return d
}

// stop ends the daemon's process group and waits for it.
func (d *daemon) stop(t *testing.T) {
	select {
	case <-d.done:
		return
	default:
	}
	pgid := d.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		t.Logf("cleanup: %s did not stop on SIGTERM, killing it", d.name)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-d.done
	}
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func (d *daemon) output() string {
	b, _ := os.ReadFile(d.log)
	return string(b)
}

// charon is one strongSwan daemon with its own config, vici socket and /run.
type charon struct {
	side, dir, conf string
	d               *daemon
}

var strongswanConf = template.Must(template.ParseFiles(filepath.Join("testdata", "strongswan.conf.tmpl")))

// startCharon starts charon in ns. 5.9 hard-wires /var/run/charon.pid, so a
// second instance would refuse to start: `ip netns exec` gives the command a
// private mount namespace, where a per-instance directory is bind-mounted
// over /run before charon is exec'ed.
func (l *lab) startCharon(side, ns string) *charon {
	l.t.Helper()
	dir := filepath.Join(l.dir, side)
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
		l.t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := strongswanConf.Execute(&buf, map[string]string{"Side": side, "Dir": dir}); err != nil {
		l.t.Fatal(err)
	}
	conf := filepath.Join(dir, "strongswan.conf")
	if err := os.WriteFile(conf, buf.Bytes(), 0o644); err != nil {
		l.t.Fatal(err)
	}
	script := fmt.Sprintf("mount --bind %s /run && exec %s", shq(filepath.Join(dir, "run")), charonPath)
	c := &charon{side: side, dir: dir, conf: conf}
	c.d = l.start("charon-"+side, ns, []string{"STRONGSWAN_CONF=" + conf}, "sh", "-c", script)
	l.t.Cleanup(func() {
		if l.t.Failed() {
			b, err := os.ReadFile(filepath.Join(dir, "charon.log"))
			l.t.Logf("charon %s log (tail, %v):\n%s", side, err, testenv.LastLines(string(b), 60))
		}
	})
	testenv.EventuallySawWithin(l.t, 10*time.Second, "charon "+side+" vici socket", func() (bool, string) {
		if c.d.exited() {
			l.t.Fatalf("charon %s exited: %v\n%s", side, c.d.err, c.d.output())
		}
		out, err := c.swanctl(context.Background(), "--stats")
		return err == nil, out
	})
	return c
}

// swanctl talks to this instance through its vici socket (named in its
// strongswan.conf, which STRONGSWAN_CONF points swanctl at).
func (c *charon) swanctl(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return run(ctx, []string{"STRONGSWAN_CONF=" + c.conf}, "swanctl", args...)
}

func (c *charon) mustSwanctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.swanctl(context.Background(), args...)
	if err != nil {
		t.Fatalf("%s: %v", c.side, err)
	}
	return out
}

// saCounters are a CHILD_SA's traffic counters from `swanctl --list-sas`.
type saCounters struct {
	BytesIn, PacketsIn, BytesOut, PacketsOut int64
}

var (
	// childBlockRE splits at each CHILD_SA header ("name: #2, reqid 1, "),
	// leaving its state first in the following block.
	childBlockRE = regexp.MustCompile(`(?m)^\s+\S+: #\d+, reqid \d+, `)
	inRE         = regexp.MustCompile(`(?m)^\s+in\s+[0-9a-f]+(?:\s*\([^)]*\))?,\s+(\d+) bytes,\s+(\d+) packets`)
	outRE        = regexp.MustCompile(`(?m)^\s+out\s+[0-9a-f]+(?:\s*\([^)]*\))?,\s+(\d+) bytes,\s+(\d+) packets`)
)

// parseCounters sums the counters of the INSTALLED CHILD_SAs in
// `swanctl --list-sas` text. A rekeyed SA lingers as DELETED for a while,
// with its old counters; it is left out.
func parseCounters(listSAs string) (saCounters, error) {
	var c saCounters
	found := false
	for _, block := range childBlockRE.Split(listSAs, -1)[1:] {
		if !strings.HasPrefix(block, "INSTALLED") {
			continue
		}
		in := inRE.FindStringSubmatch(block)
		out := outRE.FindStringSubmatch(block)
		if in == nil || out == nil {
			return saCounters{}, errors.New("INSTALLED CHILD_SA without counters in swanctl output")
		}
		n := func(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }
		c.BytesIn += n(in[1])
		c.PacketsIn += n(in[2])
		c.BytesOut += n(out[1])
		c.PacketsOut += n(out[2])
		found = true
	}
	if !found {
		return saCounters{}, errors.New("no INSTALLED CHILD_SA in swanctl output")
	}
	return c, nil
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
