package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/cli"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// command is one of commands.
type command struct {
	pkg, name string
	// usage is in the usage, which -help prints on stdout and a wrong
	// call after its error on stderr.
	usage string
	// wrong is a call missing what the command needs, and what its error
	// says; nil when it needs nothing.
	wrong     []string
	wrongSays string
	// service: scp-task, which says everything as JSON log lines
	// (shared/jsonlog) and takes only its exit statuses and version line
	// from shared/cli.
	service bool
}

// commands are the repository's commands a person runs, each built as it
// is run (testenv.Build) and called as a new user would.
var commands = []command{
	{pkg: "./scp-task", name: "scp-task", usage: "Usage: scp-task [flags]", wrong: []string{"extra"}, wrongSays: `unexpected argument "extra"`, service: true},
	{pkg: "./infra/onboarding/cmd/onboarding", name: "onboarding", usage: "-show-secrets", wrong: []string{"-env", "dev"}, wrongSays: "-env and -site are required"},
	{pkg: "./shared/auditfeed/cmd/auditfeed-check", name: "auditfeed-check", usage: "usage: auditfeed-check [-client FILE] CA-FILE", wrong: []string{}, wrongSays: "one CA-FILE is required"},
	{pkg: "./shared/logname/cmd/logname", name: "logname", usage: "-key-file", wrong: []string{"key"}, wrongSays: `unexpected argument "key"`},
	{pkg: "./test/loadgen", name: "dicom-loadgen", usage: "usage: dicom-loadgen [flags] DIR|FILE…", wrong: []string{}, wrongSays: "no DIR or FILE to send"},
	{pkg: "./test/bench/chain", name: "bench-chain", usage: "-functions", wrong: []string{}, wrongSays: "-functions is required"},
	{pkg: "./test/bench/discard", name: "bench-discard", usage: "-ae-title", wrong: []string{"extra"}, wrongSays: `unexpected argument "extra"`},
	{pkg: "./test/bench/diskfloor", name: "bench-diskfloor", usage: "usage: bench-diskfloor -store DIR", wrong: []string{"corpus"}, wrongSays: "-store is required"},
	{pkg: "./test/bench/freeport", name: "bench-freeport", usage: "Usage of bench-freeport", wrong: []string{"extra"}, wrongSays: `unexpected argument "extra"`},
	{pkg: "./test/bench/linkrelay", name: "bench-linkrelay", usage: "usage: bench-linkrelay -ns-a NS -ns-b NS", wrong: []string{"-ns-a", "x"}, wrongSays: "-ns-a and -ns-b are required"},
	{pkg: "./test/bench/s3server", name: "bench-s3", usage: "Usage of bench-s3:", wrong: []string{"-mode", "cloud"}, wrongSays: `-mode: "cloud" is not emulator or sink`},
	{pkg: "./test/bench/startup", name: "bench-startup", usage: "usage: bench-startup -data DIR", wrong: []string{}, wrongSays: "-data is required"},
}

// notCommands are the programs with a main that no person calls with
// flags, and why.
var notCommands = map[string]string{
	"./infra":                         "the CDK app: the CDK CLI runs it, with context, not flags (its errors go through cli.Exit)",
	"./functions/audit":               "a Lambda function: a service, JSON log lines",
	"./functions/auditfeed":           "a Lambda function: a service, JSON log lines",
	"./functions/commitment":          "a Lambda function: a service, JSON log lines",
	"./functions/notify":              "a Lambda function: a service, JSON log lines",
	"./functions/validate":            "a Lambda function: a service, JSON log lines",
	"./shared/testenv/testdata/hello": "testenv's own test program",
}

// TestEveryMainIsACommand: every func main of the repository is in
// commands, which holds it to shared/cli's rule, or in notCommands with
// its reason. The bench tools and the load generator printed their
// errors themselves, and a new one would again.
func TestEveryMainIsACommand(t *testing.T) {
	root := testenv.ModuleRoot(t)
	mainFunc := regexp.MustCompile(`(?m)^func main\(\) \{`)
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if mainFunc.Match(b) {
			rel, err := filepath.Rel(root, filepath.Dir(path))
			if err != nil {
				return err
			}
			found = append(found, "./"+filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range found {
		listed := slices.ContainsFunc(commands, func(c command) bool {
			return c.pkg == pkg
		})
		if _, skip := notCommands[pkg]; !listed && !skip {
			t.Errorf("%s has a func main and is not in commands (or notCommands, with why)", pkg)
		}
	}
}

// TestCommandsSpeakByTheRule calls each command as a new user would:
// -help and -version answer on stdout with status 0; a flag it does not
// have, and a call missing what it needs, are told once on stderr with
// status 2, then the usage. A bad flag printed twice (the flag package's
// line and usage, then the command's line), -help went to stderr, and the
// bench tools and the load generator printed their own lines.
func TestCommandsSpeakByTheRule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every command")
	}
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			bin := testenv.Build(t, c.pkg)
			run := func(t *testing.T, args ...string) (int, string, string) {
				t.Helper()
				// A safety net, not a measure: a command that ignores a
				// wrong call may start serving (bench-discard did).
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, args...)
				cmd.Dir = t.TempDir()
				// Nothing of the test's environment may set a setting.
				cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + cmd.Dir}
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				var exit *exec.ExitError
				if ctx.Err() != nil {
					t.Fatalf("%v: did not exit: %v", args, ctx.Err())
				}
				if err != nil && !errors.As(err, &exit) {
					t.Fatal(err)
				}
				return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
			}
			for _, tc := range []struct {
				name      string
				args      []string
				code      int
				stdoutHas string
				says      string // once on stderr
			}{
				{name: "help", args: []string{"-help"}, stdoutHas: c.usage},
				{name: "h", args: []string{"-h"}, stdoutHas: c.usage},
				{name: "version", args: []string{"-version"}, stdoutHas: cli.Version(c.name) + "\n"},
				{name: "unknown flag", args: []string{"--nosuchflag"}, code: cli.ExitUsage, says: "unknown flag -"},
				{name: "flag without its value", args: []string{"-version=maybe"}, code: cli.ExitUsage, says: `invalid boolean value "maybe" for -version`},
				{name: "wrong call", args: c.wrong, code: cli.ExitUsage, says: c.wrongSays},
			} {
				if tc.name == "wrong call" && c.wrong == nil {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					code, stdout, stderr := run(t, tc.args...)
					if code != tc.code {
						t.Fatalf("exit status %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
					}
					if tc.code == 0 {
						if !strings.Contains(stdout, tc.stdoutHas) || stderr != "" {
							t.Errorf("stdout:\n%s\nwant %q in it; stderr (want none):\n%s", stdout, tc.stdoutHas, stderr)
						}
						return
					}
					if stdout != "" {
						t.Errorf("stdout: %s, want nothing", stdout)
					}
					if c.service {
						var line struct{ Err string }
						if err := json.Unmarshal([]byte(stderr), &line); err != nil || strings.Count(stderr, "\n") != 1 {
							t.Fatalf("stderr:\n%s\nwant one JSON log line (%v)", stderr, err)
						}
						if n := strings.Count(line.Err, tc.says); n != 1 {
							t.Errorf("error %q says %q %d times, want once", line.Err, tc.says, n)
						}
						return
					}
					if n := strings.Count(stderr, tc.says); n != 1 {
						t.Errorf("stderr:\n%s\nsays %q %d times, want once", stderr, tc.says, n)
					}
					first, rest, _ := strings.Cut(stderr, "\n")
					if !strings.HasPrefix(first, c.name+": ") || !strings.Contains(first, tc.says) {
						t.Errorf("stderr's first line %q, want \"%s: …%s…\"", first, c.name, tc.says)
					}
					if n := strings.Count(rest, c.usage); n != 1 {
						t.Errorf("stderr:\n%s\nwant the usage (%q) once after the error", stderr, c.usage)
					}
				})
			}
		})
	}
}
