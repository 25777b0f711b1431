package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/config"
	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/local"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// logLine decodes stderr as exactly one JSON log line.
func logLine(t *testing.T, stderr string) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	var last map[string]any
	for _, l := range lines {
		last = nil
		if err := json.Unmarshal([]byte(l), &last); err != nil {
			t.Fatalf("stderr line is not JSON: %q", l)
		}
	}
	return last
}

// TestFailFast: help and version answer on stdout; a bad setting, a taken
// port, a data directory in use and one that cannot be made each fail at
// once with a JSON line naming what to change, and leave the data
// directory uncreated.
func TestFailFast(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	held := t.TempDir()
	lm, err := local.Start(context.Background(), local.Config{DataDir: held, PortalListen: "127.0.0.1:0", QuietPeriod: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := lm.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	free := "127.0.0.1:0"
	base := []string{"--listen", free, "--health-listen", free, "--portal-listen", free}
	fresh := func() string { return filepath.Join(t.TempDir(), "data") }
	aFile := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(aFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A data directory others may write in: one of them could have put
	// a symlink where the log-name key or events.log goes.
	openDir := othersWrite(t)
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		code    int
		stdout  []string
		errHas  []string
		dataDir string // must not exist afterwards
	}{
		{name: "help", args: []string{"--help"}, stdout: []string{"Usage: scp-task [flags]", "--portal-listen ADDR"}},
		{name: "version", args: []string{"--version"}, stdout: []string{"scp-task "}},
		{name: "bad environment value", env: map[string]string{"SCP_IDLE_TIMEOUT": "forever"}, code: 2,
			errHas: []string{`SCP_IDLE_TIMEOUT (or --idle-timeout): \"forever\" is not a positive duration`}},
		{name: "portal port taken", code: 1, dataDir: "x",
			args:   []string{"--local", "--listen", free, "--health-listen", free, "--portal-listen", taken.Addr().String()},
			errHas: []string{"portal: cannot listen on " + taken.Addr().String(), "--portal-listen (or PORTAL_LISTEN)"}},
		{name: "DICOM port taken, set by the environment", code: 1, dataDir: "x",
			args:   []string{"--local", "--health-listen", free, "--portal-listen", free},
			env:    map[string]string{"SCP_LISTEN": taken.Addr().String(), "ENVIRONMENT": "dev"},
			errHas: []string{"DICOM: cannot listen on", "SCP_LISTEN (or --listen)"}},
		{name: "data directory in use", code: 1, args: append([]string{"--local", "--data-dir", held}, base...),
			errHas: []string{"data directory in use", "process " + strconv.Itoa(os.Getpid()), "another --data-dir"}},
		// Root may write anywhere: a path through a file fails for everyone.
		{name: "data directory that cannot be made", code: 1, args: append([]string{"--local", "--data-dir", filepath.Join(aFile, "data")}, base...),
			errHas: []string{"not a directory", "choose a data directory this user can create and write with --data-dir (or DATA_DIR)"}},
		{name: "data directory that cannot be made, set by the environment", code: 1, args: append([]string{"--local"}, base...),
			env:    map[string]string{"DATA_DIR": filepath.Join(aFile, "data")},
			errHas: []string{"not a directory", "with DATA_DIR (or --data-dir)"}},
		{name: "data directory others may write in", code: 1, args: append([]string{"--local", "--data-dir", openDir}, base...),
			errHas: []string{"others than its owner may write in it (mode -rwxrwxrwx)", "chmod go-w it"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			dir := ""
			if tt.dataDir != "" {
				dir = fresh()
				args = append(args, "--data-dir", dir)
			}
			var stdout, stderr bytes.Buffer
			code := mainWith(args, envOf(tt.env), &stdout, &stderr)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.code, stderr.String())
			}
			for _, w := range tt.stdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			if tt.code == 0 && stderr.Len() > 0 {
				t.Errorf("stderr: %s", stderr.String())
			}
			if len(tt.errHas) > 0 {
				line := logLine(t, stderr.String())
				raw, _ := json.Marshal(line["err"])
				for _, w := range tt.errHas {
					if !strings.Contains(string(raw), w) {
						t.Errorf("error %s lacks %q", raw, w)
					}
				}
				if line["level"] != "ERROR" {
					t.Errorf("log line %v", line)
				}
				// Every failure here comes before anything was served.
				if want := map[int]string{1: "scp-task cannot start", 2: "scp-task cannot start: bad setting"}[tt.code]; line["msg"] != want {
					t.Errorf("log line says %q, want %q", line["msg"], want)
				}
				// The stack's metric filters on the SCP's log take it as
				// their Environment dimension.
				if env := tt.env["ENVIRONMENT"]; env != "" && line["environment"] != env {
					t.Errorf("log line %v does not name the environment %s", line, env)
				}
			}
			if dir != "" {
				if _, err := os.Stat(dir); !os.IsNotExist(err) {
					t.Errorf("the data directory was created: %v", err)
				}
			}
		})
	}
	if ents, err := os.ReadDir(openDir); err != nil || len(ents) > 0 {
		t.Errorf("the data directory others may write in: %v, holds %v, want nothing written", err, ents)
	}
}

// othersWrite is a new directory everybody may write in.
func othersWrite(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestStoreDirOthersWrite: a file store's root or a staging directory
// that others may write in is refused. Anyone could put incoming/ there
// as a symlink into a directory of their own, and every object
// acknowledged was written there, where they could delete it.
func TestStoreDirOthersWrite(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  func(dir string) config.Config
	}{
		{"file store", func(dir string) config.Config { return config.Config{Store: "file://" + dir} }},
		{"staging directory", func(dir string) config.Config {
			return config.Config{Store: "s3://bucket/prefix", StagingDir: dir, S3PathStyle: true}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// An S3 nobody answers on: no request may leave this machine.
			for k, v := range map[string]string{"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_REGION": "us-east-1",
				"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_EC2_METADATA_DISABLED": "true"} {
				t.Setenv(k, v)
			}
			dir := othersWrite(t)
			if err := os.Symlink(t.TempDir(), filepath.Join(dir, "incoming")); err != nil {
				t.Fatal(err)
			}
			s, err := openStore(context.Background(), tt.cfg(dir), slog.New(slog.DiscardHandler), nil, prometheus.NewRegistry())
			if err == nil {
				if c, ok := s.(io.Closer); ok {
					t.Cleanup(func() { c.Close() })
				}
				t.Fatal("openStore on a directory others may write in succeeded")
			}
			if !strings.Contains(err.Error(), "others than its owner may write in it (mode -rwxrwxrwx)") {
				t.Errorf("openStore = %v, want it to say others may write in the directory", err)
			}
		})
	}
}

// TestStopSignals: the first signal starts the drain (ctx), a second cuts
// it short (hurry); a second Ctrl-C did nothing, leaving make run's user
// waiting out the drain timeout.
func TestStopSignals(t *testing.T) {
	for _, tt := range []struct {
		name           string
		signals        []os.Signal
		drain, stopNow bool
	}{
		{"none", nil, false, false},
		{"one", []os.Signal{syscall.SIGTERM}, true, false},
		{"two", []os.Signal{syscall.SIGINT, syscall.SIGINT}, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sigs := make(chan os.Signal, 2)
			ctx, hurry, release := stopSignals(sigs)
			defer release()
			for _, s := range tt.signals {
				sigs <- s
			}
			done := func(c context.Context, want bool) bool {
				if !want {
					time.Sleep(20 * time.Millisecond)
					return c.Err() != nil
				}
				select {
				case <-c.Done():
					return true
				case <-time.After(5 * time.Second):
					return false
				}
			}
			if got := done(ctx, tt.drain); got != tt.drain {
				t.Errorf("drain started: %v, want %v", got, tt.drain)
			}
			if got := done(hurry, tt.stopNow); got != tt.stopNow {
				t.Errorf("drain cut short: %v, want %v", got, tt.stopNow)
			}
		})
	}
}

// TestMainWithEndsItsSignalWait: mainWith waits for stop signals on a
// goroutine of its own, which outlived it (in a test; the process ends
// with it otherwise).
func TestMainWithEndsItsSignalWait(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free := "127.0.0.1:0"
	args := []string{"--local", "--data-dir", t.TempDir(), "--listen", free, "--health-listen", free, "--portal-listen", taken.Addr().String()}
	if code := mainWith(args, envOf(nil), io.Discard, io.Discard); code != 1 {
		t.Fatalf("exit %d, want 1 (the portal's port is taken)", code)
	}
	// The goroutine is told to end before mainWith returns, and ends a
	// moment later: poll for it, with a deadline.
	var stacks bytes.Buffer
	testenv.EventuallySawWithin(t, 5*time.Second, "mainWith's signal goroutine to end", func() (bool, string) {
		stacks.Reset()
		if err := pprof.Lookup("goroutine").WriteTo(&stacks, 1); err != nil {
			t.Fatal(err)
		}
		return !strings.Contains(stacks.String(), ".stopSignals.func"), stacks.String()
	})
}

// TestThirdStopSignal: after the second signal (which ends the drain)
// the next has its default action and ends the process, so that a stop
// that hangs ends without a kill -9. It runs in a child process (this test
// binary again), which the third signal kills.
func TestThirdStopSignal(t *testing.T) {
	if os.Getenv("SCP_TASK_TEST_STOP_SIGNALS") != "" {
		thirdStopSignalChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestThirdStopSignal$")
	cmd.Env = append(os.Environ(), "SCP_TASK_TEST_STOP_SIGNALS=1")
	out, err := cmd.CombinedOutput()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
		return
	}
	if cmd.ProcessState.ExitCode() == childSIGTERMIgnored {
		testenv.Missing(t, "SIGTERM's default action (this test process inherited SIGTERM ignored)",
			"run the tests from a shell that does not ignore SIGTERM (not under nohup, or a runner that sets it to SIG_IGN)")
	}
	t.Fatalf("the third SIGTERM did not end the process (%v):\n%s", err, out)
}

const childSIGTERMIgnored = 3

// thirdStopSignalChild is TestThirdStopSignal's child: it takes the stop
// signals as mainWith does and sends itself three SIGTERMs.
func thirdStopSignalChild() {
	if signal.Ignored(syscall.SIGTERM) {
		os.Exit(childSIGTERMIgnored)
	}
	ctx, hurry, release := notifyStops()
	defer release()
	for _, stage := range []context.Context{ctx, hurry} {
		if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		select {
		case <-stage.Done():
		case <-time.After(10 * time.Second):
			fmt.Println("a stop signal did not end its stage")
			os.Exit(1)
		}
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	time.Sleep(10 * time.Second)
	fmt.Println("still running 10 s after the third SIGTERM")
	os.Exit(1)
}

// TestStartLogNamesEachPlaceOnce: a new user of make run reads the start
// log for where the portal is and where the data goes. Two lines named the
// portal ("local mode started" and "local mode", one with a trailing
// slash), so it read as two portals; two named the data directory (the
// open's timing, "data directory opened", and "local mode started").
func TestStartLogNamesEachPlaceOnce(t *testing.T) {
	dataDir := t.TempDir()
	logs := startAndStopLocal(t, dataDir)
	for _, tc := range []struct {
		key  string
		good func(v string) bool
	}{
		{"portal", func(url string) bool { return strings.HasPrefix(url, "http://127.0.0.1:") }},
		{"data_dir", func(dir string) bool { return dir == dataDir }},
	} {
		var naming []string
		var value string
		for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("not JSON: %q", line)
			}
			if v, ok := m[tc.key]; ok {
				naming = append(naming, line)
				value, _ = v.(string)
			}
		}
		if len(naming) != 1 {
			t.Errorf("%d start lines name %s, want 1:\n%s", len(naming), tc.key, strings.Join(naming, "\n"))
		} else if !tc.good(value) {
			t.Errorf("%s %q is not what to open", tc.key, value)
		}
	}
}

// TestStartWithClientCertificatesNotValid: local mode with an expired --commitment-tls-cert and a not yet valid
// --audit-syslog-cert starts and listens (C-STORE does not need them), and says so once for each: a warning naming
// the flag and its variable (its setting, named once) and the certificate's dates (its err).
func TestStartWithClientCertificatesNotValid(t *testing.T) {
	dir := t.TempDir()
	caFile, expired, notYet := testpki.OutOfDateClients(t, dir)
	logs := startAndStopLocal(t, filepath.Join(dir, "data"),
		"--commitment-peers", "PACS=tls://127.0.0.1:1", "--commitment-tls-ca", caFile, "--commitment-tls-cert", expired.Cert, "--commitment-tls-key", expired.Key,
		"--audit-syslog", "tls://127.0.0.1:1", "--audit-syslog-ca", caFile, "--audit-syslog-cert", notYet.Cert, "--audit-syslog-key", notYet.Key)
	warned := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q", line)
		}
		if m["msg"] == config.CertificateNotValidLog {
			if m["level"] != "WARN" {
				t.Errorf("level %v, want WARN: %s", m["level"], line)
			}
			warned[fmt.Sprint(m["setting"])] = fmt.Sprint(m["err"])
		}
	}
	for setting, says := range map[string]string{
		"--commitment-tls-cert (or SCP_COMMITMENT_TLS_CERT)": "is valid from 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z",
		"--audit-syslog-cert (or SCP_AUDIT_SYSLOG_CERT)":     `certificate "CN=early,O=dicom-ingest tests"`,
	} {
		if err, ok := warned[setting]; !ok || !strings.Contains(err, says) || !strings.Contains(err, "not valid now") {
			t.Errorf("no warning for %s (%q) in:\n%s", setting, says, logs)
		}
		// The setting is its field's: the refusal does not name it again (the commitment's did, twice with its key).
		if err := warned[setting]; strings.Contains(err, "--") || strings.Contains(err, "SCP_") {
			t.Errorf("the warning for %s names a setting in its err: %q", setting, err)
		}
	}
	if len(warned) != 2 {
		t.Errorf("warnings %v, want one for each certificate", warned)
	}
}

// startAndStopLocal runs local mode on dataDir on free loopback ports, with
// the flags extra, until it listens, stops it, and returns its log.
func startAndStopLocal(t *testing.T, dataDir string, extra ...string) string {
	t.Helper()
	free := "127.0.0.1:0"
	cfg, err := config.Load(append([]string{"--local", "--data-dir", dataDir, "--listen", free, "--health-listen", free, "--portal-listen", free}, extra...), envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	ctx, stop := context.WithCancel(context.Background())
	defer stop() // a failed wait ends the run too
	done := make(chan error, 1)
	go func() { done <- run(ctx, context.Background(), cfg, jsonlog.New(&logs, slog.LevelInfo)) }()
	testenv.EventuallySaw(t, `local mode's "scp-task listening"`, func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("run ended: %v\n%s", err, logs.String())
		default:
		}
		return strings.Contains(logs.String(), `"msg":"scp-task listening"`), logs.String()
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return logs.String()
}

// TestDataDirEntriesDocumented: every file and directory a start leaves in
// the data directory is a row of local-mode.md's "In DATA_DIR" table, where
// a new user of make run looks up what ./data holds (and what of it holds
// patient data). audit-runs/, the SCP's run markers, was in ./data after
// the first start but in no row.
func TestDataDirEntriesDocumented(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	startAndStopLocal(t, dataDir)
	doc, err := os.ReadFile(filepath.Join("..", "docs", "local-mode.md"))
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, l := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(l, "| `") {
			first, _, _ := strings.Cut(strings.TrimPrefix(l, "| "), " |")
			rows = append(rows, first)
		}
	}
	if len(rows) == 0 {
		t.Fatal("local-mode.md has no \"In DATA_DIR\" rows: the pattern no longer matches the table")
	}
	ents, err := os.ReadDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) < 3 {
		t.Fatalf("the start left %d entries in the data directory", len(ents))
	}
	for _, e := range ents {
		name := strings.TrimSuffix(strings.TrimSuffix(e.Name(), "-wal"), "-shm") // SQLite's companions go with their database
		want := "`" + name + "`"
		if e.IsDir() {
			want = "`" + name + "/" // objects/incoming/…, audit-runs/…
		}
		found := false
		for _, r := range rows {
			found = found || strings.Contains(r, want)
		}
		if !found {
			t.Errorf("the data directory holds %s, which no row of local-mode.md's \"In DATA_DIR\" table names (as %s)", e.Name(), want)
		}
	}
}
