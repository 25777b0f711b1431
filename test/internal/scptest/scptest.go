// Package scptest runs scp-task (built once per test binary by
// shared/testenv) as a child process on free loopback ports, the way the
// interop and end-to-end tests drive the real program (like httptest, but
// for the whole binary).
package scptest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// Addresses are the listeners scp-task bound, as its log announces them
// (it listens on port 0 in tests).
type Addresses struct {
	DICOMAddr  string // host:port of the DICOM listener; "" when it is off
	TLSAddr    string // host:port of the DICOM-over-TLS listener, when there is one
	HealthAddr string // host:port of /healthz, /readyz, /metrics
	PortalAddr string // host:port of the portal, in local mode
}

// Learn takes the addresses from one decoded log record of scp-task: the
// portal's from "local mode started", the others from "scp-task listening", which
// comes after it. It reports whether the record was "scp-task listening".
func (a *Addresses) Learn(m map[string]any) bool {
	switch m["msg"] {
	case "local mode started":
		portal, _ := m["portal"].(string)
		a.PortalAddr = strings.TrimSuffix(strings.TrimPrefix(portal, "http://"), "/")
	case "scp-task listening":
		a.DICOMAddr, _ = m["dicom"].(string)
		a.TLSAddr, _ = m["dicom_tls"].(string)
		a.HealthAddr, _ = m["health"].(string)
		return true
	}
	return false
}

// SCP is a running scp-task.
type SCP struct {
	Addresses
	DataDir string // the file store's directory (file:// stores)
	cmd     *exec.Cmd
	logMu   sync.Mutex
	logs    []map[string]any
	raw     strings.Builder
	exited  chan struct{}
	waitErr error
	// agentBaseline is /metrics as Start read it once scp-task was ready:
	// the metrics agent's first scrape of a task, which it takes as its
	// baseline (it scrapes every 30 s from the task's start on).
	agentBaseline string
}

// Options for Start.
type Options struct {
	Args []string // extra flags; --listen and --health-listen default to 127.0.0.1:0
	Env  []string // extra environment
	// NoStore leaves --store out (for local mode, or when Args sets it);
	// otherwise a file store in a temporary directory is used.
	NoStore bool
	// Prefix is a command scp-task runs under, one that execs it in its
	// own process (e.g. prlimit --nofile=1024:1024 --).
	Prefix []string
}

// Start runs scp-task and waits until it is ready, then reads /metrics
// once, as the metrics agent's first scrape does. It is stopped (SIGTERM,
// then SIGKILL) when the test ends.
func Start(t testing.TB, o Options) *SCP {
	t.Helper()
	s := &SCP{DataDir: t.TempDir(), exited: make(chan struct{})}
	args := []string{"--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0", "--log-level", "debug"}
	if !o.NoStore {
		args = append(args, "--store", "file://"+s.DataDir)
	}
	args = append(args, o.Args...)
	argv := append(append(append([]string{}, o.Prefix...), testenv.SCPTask(t)), args...)
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Env = append(os.Environ(), o.Env...)
	ready := make(chan struct{})
	if err := s.run(ready); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(t) })
	select {
	case <-ready:
	case <-s.exited:
		t.Fatalf("scp-task exited before it was ready: %v\n%s", s.waitErr, s.Logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("scp-task not listening after 30s\n%s", s.Logs())
	}
	testenv.EventuallySawWithin(t, 15*time.Second, "scp-task ready", func() (bool, string) {
		resp, err := http.Get("http://" + s.HealthAddr + "/readyz")
		if err != nil {
			return false, fmt.Sprintf("/readyz: %v\n%s", err, s.Logs())
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Sprintf("/readyz %s\n%s", resp.Status, s.Logs())
	})
	_, s.agentBaseline = s.Health(t, "/metrics")
	return s
}

// run starts s.cmd with its stderr read into the logs (ready is closed at
// "scp-task listening"), and closes s.exited once the process has exited
// and everything it logged has been read. Wait closes the pipe when the
// process exits, so it waits for the reader to see the pipe's end: called
// beside it, it dropped what was still in the pipe, often the last lines
// (the stop's), which a test that read the logs after Stop did not find.
func (s *SCP) run(ready chan struct{}) error {
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := s.cmd.Start(); err != nil {
		return err
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		s.readLogs(stderr, ready)
	}()
	go func() {
		<-read
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	return nil
}

func (s *SCP) readLogs(r io.Reader, ready chan struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	signalled := false
	for sc.Scan() {
		line := sc.Text()
		var m map[string]any
		s.logMu.Lock()
		s.raw.WriteString(line + "\n")
		if json.Unmarshal([]byte(line), &m) == nil {
			s.logs = append(s.logs, m)
			if !signalled && s.Learn(m) {
				signalled = true
				close(ready)
			}
		}
		s.logMu.Unlock()
	}
}

// Logs returns everything scp-task wrote to stderr so far.
func (s *SCP) Logs() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.raw.String()
}

// LogEntries returns the JSON log records so far.
func (s *SCP) LogEntries() []map[string]any {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return append([]map[string]any(nil), s.logs...)
}

// WaitLog waits until scp-task has logged a record for which ok holds
// and returns it; what names it in the failure. The logs are read as they
// come: a line logged before an answer the test has may not be read yet,
// and some (a reload's) come after what they report has taken effect.
func (s *SCP) WaitLog(t testing.TB, timeout time.Duration, what string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	var found map[string]any
	testenv.EventuallyWithin(t, timeout, "a log line of "+what, func() bool {
		for _, e := range s.LogEntries() {
			if ok(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// TLSPort is the port of TLSAddr, for DCMTK's command lines.
func (s *SCP) TLSPort() string { _, p, _ := strings.Cut(s.TLSAddr, ":"); return p }

// Host and Port split DICOMAddr for DCMTK's command lines.
func (s *SCP) Host() string { h, _, _ := strings.Cut(s.DICOMAddr, ":"); return h }
func (s *SCP) Port() string { _, p, _ := strings.Cut(s.DICOMAddr, ":"); return p }

// PID of the child.
func (s *SCP) PID() int { return s.cmd.Process.Pid }

// PeakRSS reads the child's peak resident set size (VmHWM) in bytes.
func (s *SCP) PeakRSS(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.PID()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// Metric reads one sample from /metrics: name with optional labels exactly
// as Prometheus prints them, e.g. `dicom_ingest_associations_active` or
// `dicom_ingest_associations_rejected_total{reason="too_many_associations"}`.
// A missing sample reads as 0.
func (s *SCP) Metric(t testing.TB, sample string) float64 {
	t.Helper()
	_, body := s.Health(t, "/metrics")
	return sampleOf(t, body, sample)
}

// sampleOf reads one sample from a /metrics body, as Metric does.
func sampleOf(t testing.TB, body, sample string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sample, err)
			}
			return v
		}
	}
	return 0
}

// PublishedIncrease is what the metrics agent has published of a counter
// by now: its increase over the agent's first scrape, its baseline, which
// Start took once the task was ready. A count made before that scrape (a
// start's) must show as an increase, not in the baseline; one made later
// (a running task's) is an increase whatever was scraped in between.
func (s *SCP) PublishedIncrease(t testing.TB, sample string) float64 {
	t.Helper()
	return s.Metric(t, sample) - sampleOf(t, s.agentBaseline, sample)
}

// MetricSum reads the sum of every sample of a metric family (name, any
// labels): a counter vector summed over its labels, as CloudWatch sums a
// label it does not publish as a dimension. No sample reads as 0.
func (s *SCP) MetricSum(t testing.TB, name string) float64 {
	t.Helper()
	_, body := s.Health(t, "/metrics")
	sum := 0.0
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (!strings.HasPrefix(rest, " ") && !strings.HasPrefix(rest, "{")) {
			continue
		}
		v, err := strconv.ParseFloat(rest[strings.LastIndex(rest, " ")+1:], 64)
		if err != nil {
			t.Fatalf("metric %s: %v", line, err)
		}
		sum += v
	}
	return sum
}

// Health gets path ("/readyz", "/metrics") from the health port: the
// status code and the body.
func (s *SCP) Health(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + s.HealthAddr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// WaitMetric polls until the sample equals want or the timeout passes.
func (s *SCP) WaitMetric(t testing.TB, sample string, want float64, timeout time.Duration) {
	t.Helper()
	testenv.EventuallySawWithin(t, timeout, fmt.Sprintf("metric %s = %v", sample, want), func() (bool, string) {
		got := s.Metric(t, sample)
		return got == want, fmt.Sprintf("%s = %v", sample, got)
	})
}

// Stop sends SIGTERM and waits for a clean exit (SIGKILL after 20s).
func (s *SCP) Stop(t testing.TB) {
	select {
	case <-s.exited:
		return
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Logf("signal scp-task: %v", err)
	}
	select {
	case <-s.exited:
		if s.waitErr != nil {
			t.Errorf("scp-task exited with %v\n%s", s.waitErr, s.Logs())
		}
	case <-time.After(20 * time.Second):
		if err := s.cmd.Process.Kill(); err != nil {
			t.Logf("kill scp-task: %v", err)
		}
		<-s.exited
		t.Errorf("scp-task did not stop within 20s of SIGTERM\n%s", s.Logs())
	}
}

// Context returns a context bounded by the test's deadline (or 2 minutes).
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
