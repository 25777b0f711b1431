// Package e2e runs scp-task --local as a real process on free loopback
// ports and drives it with DCMTK and a headless browser: the whole product
// as a PACS administrator would meet it.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

// anyPort asks the kernel for a free port when the process listens. A port
// picked by the test and passed in could be taken, between the pick and a
// restart, by any outgoing connection's ephemeral port (CI saw it happen).
const anyPort = "127.0.0.1:0"

func need(t *testing.T, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped in -short mode")
	}
	testenv.RequireTools(t, tools...)
}

// node is one scp-task --local process.
type node struct {
	t        *testing.T
	dataDir  string
	dicom    string
	portal   string
	health   string
	extra    []string
	cmd      *exec.Cmd
	done     chan struct{}
	exitCode int
	log      *testenv.LogBuffer // its output, in all its starts
}

func newNode(t *testing.T, dataDir string, extra ...string) *node {
	return &node{t: t, dataDir: dataDir, extra: extra, log: &testenv.LogBuffer{}}
}

// start runs the process on ports the kernel picks, learns them from its
// log, and waits for the portal's /healthz.
func (n *node) start(env ...string) {
	t := n.t
	t.Helper()
	args := append([]string{"--local", "--data-dir", n.dataDir, "--listen", anyPort, "--portal-listen", anyPort,
		"--health-listen", anyPort, "--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE", "--quiet-period", "2s",
		"--log-level", "debug"}, n.extra...)
	n.cmd = exec.Command(testenv.SCPTask(t), args...)
	n.cmd.Env = append(os.Environ(), env...)
	logStart := n.log.Len()
	n.dicom, n.portal, n.health = "", "", ""
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func() {
		_ = n.cmd.Wait()
		n.exitCode = n.cmd.ProcessState.ExitCode()
		close(n.done)
	}()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("scp-task log:\n%s", n.logText())
		}
	})
	testenv.EventuallySawWithin(t, 20*time.Second, "scp-task to come up", func() (bool, string) {
		select {
		case <-n.done:
			t.Fatalf("scp-task exited with %d during start:\n%s", n.exitCode, n.logText())
		default:
		}
		if n.portal == "" && !n.learnAddresses(logStart) {
			return false, "its addresses not logged yet"
		}
		resp, err := http.Get("http://" + n.portal + "/healthz")
		if err != nil {
			return false, fmt.Sprintf("portal /healthz: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return false, "portal /healthz " + resp.Status
		}
		return n.dicomUp(), "the DICOM port not up"
	})
}

// logText is what the process has logged so far, in all its starts.
func (n *node) logText() string { return n.log.String() }

// learnAddresses reads the addresses the process logged since logStart,
// reporting whether it has logged them all yet.
func (n *node) learnAddresses(logStart int) bool {
	lines := strings.Split(n.logText()[logStart:], "\n")
	var a scptest.Addresses
	for _, line := range lines {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil {
			a.Learn(m)
		}
	}
	if a.DICOMAddr == "" || a.PortalAddr == "" || a.HealthAddr == "" {
		return false
	}
	n.dicom, n.portal, n.health = a.DICOMAddr, a.PortalAddr, a.HealthAddr
	return true
}

func (n *node) dicomUp() bool {
	c, err := net.DialTimeout("tcp", n.dicom, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// startRefused starts scp-task --local on dataDir, expecting it to refuse
// the directory: it must exit with status 1 by itself. It returns what the
// process logged.
func startRefused(t *testing.T, dataDir string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.SCPTask(t), "--local", "--data-dir", dataDir, "--listen", anyPort,
		"--portal-listen", anyPort, "--health-listen", anyPort)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("scp-task on %s: %v, want exit status 1\n%s", dataDir, err, out)
	}
	return string(out)
}

// stop sends SIGTERM and waits (idempotent).
func (n *node) stop() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// kill ends the process with SIGKILL, as an out-of-memory kill or a lost
// host does, and waits until it is reaped.
func (n *node) kill() {
	n.t.Helper()
	if err := n.cmd.Process.Kill(); err != nil {
		n.t.Fatal(err)
	}
	<-n.done
}

// wait waits for the process to exit by itself and returns its exit code.
func (n *node) wait(d time.Duration) int {
	n.t.Helper()
	select {
	case <-n.done:
		return n.exitCode
	case <-time.After(d):
		n.t.Fatal("scp-task did not exit")
		return -1
	}
}

func (n *node) getJSON(path string, v any) {
	n.t.Helper()
	resp, err := http.Get("http://" + n.portal + path)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		n.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		n.t.Fatalf("GET %s: %v", path, err)
	}
}

// dcmsend sends files as callingAE; it returns DCMTK's output and error.
func (n *node) dcmsend(callingAE string, files ...string) (string, error) {
	host, port, _ := net.SplitHostPort(n.dicom)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"-aet", callingAE, "-aec", "REMOTE_AE", "--no-halt", host, port}, files...)
	cmd := exec.CommandContext(ctx, "dcmsend", args...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	n.t.Logf("dcmsend %s, %d files: %v", callingAE, len(files), time.Since(start).Round(time.Millisecond))
	return string(out), err
}

// waitPipelineIdle waits up to within until the pipeline has processed
// every object acknowledged so far (/api/counters: nothing pending, held
// ones included) and returns how many failed. The pipeline's workers run
// in parallel: one object's being processed says nothing of another's.
func (n *node) waitPipelineIdle(within time.Duration) (failed int64) {
	n.t.Helper()
	var c struct {
		PendingPipeline int64 `json:"pendingPipeline"`
		FailedPipeline  int64 `json:"failedPipeline"`
	}
	testenv.EventuallyWithin(n.t, within, "the pipeline to catch up", func() bool {
		n.getJSON("/api/counters", &c)
		return c.PendingPipeline == 0
	})
	return c.FailedPipeline
}

// Synthesized study: two series, three and two instances.
const (
	synthStudy   = "1.2.826.0.1.3680043.10.543.1"
	synthPatient = "E2E-0001"
)

type synth struct {
	series, sop string
}

var synthInstances = []synth{
	{synthStudy + ".1", synthStudy + ".1.1"}, {synthStudy + ".1", synthStudy + ".1.2"}, {synthStudy + ".1", synthStudy + ".1.3"},
	{synthStudy + ".2", synthStudy + ".2.1"}, {synthStudy + ".2", synthStudy + ".2.2"},
}

// writeSynthStudy writes the synthesized study's files into dir.
func writeSynthStudy(t *testing.T, dir string) []string {
	t.Helper()
	var paths []string
	for i, s := range synthInstances {
		seriesNo := s.series[strings.LastIndexByte(s.series, '.')+1:]
		instanceNo := s.sop[strings.LastIndexByte(s.sop, '.')+1:]
		in := pipelinetest.Instance{StudyUID: synthStudy, SeriesUID: s.series, SOPUID: s.sop, PatientID: synthPatient,
			PatientName: "Roentgen^Wilhelm", Modality: "CT", Rows: 8, Columns: 8, SourceAE: "LOCAL_AE",
			Extra: []pipelinetest.Elem{
				pipelinetest.Str(pipelinetest.Tag(0x20, 0x11), "IS", seriesNo),
				pipelinetest.Str(pipelinetest.Tag(0x20, 0x13), "IS", instanceNo),
				pipelinetest.Str(pipelinetest.Tag(0x08, 0x103E), "LO", "AXIAL "+seriesNo),
			}}
		p := filepath.Join(dir, fmt.Sprintf("synth-%d.dcm", i))
		if err := os.WriteFile(p, in.Build(), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}
