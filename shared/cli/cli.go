// Package cli is the one rule for how the repository's command-line tools
// (onboarding, logname, the bench tools, the load generator, the CDK app)
// speak to the person who ran them: a plain line on stderr,
// "<command>: <text>", where the error names the flag or variable to fix;
// -h and -help print the usage on stdout and exit 0, -version the version;
// a mistake in how the command was called (a flag it does not have, a value
// a flag refuses, an argument missing) is told once, followed by the
// usage, on stderr, with exit status 2; any other failure exits 1.
//
// Services (scp-task, the functions) log JSON lines through shared/jsonlog
// instead (a person at a terminal reading a tool's failure as a JSON log
// line had to dig the message out of it), but scp-task takes its exit
// statuses (ExitUsage for a bad setting) and its version line from here.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/version"
)

// Exit statuses besides 0.
const (
	// ExitFailure: the command was called right and failed.
	ExitFailure = 1
	// ExitUsage: the command was called wrong (a flag, a setting, an
	// argument), as the flag package's own exit has it.
	ExitUsage = 2
)

// ErrVersion is what Parse returns for -version, once it has printed the
// version: Exit takes it, as flag.ErrHelp, for success.
var ErrVersion = errors.New("version requested")

// Main is a command's main: it runs run on the process's arguments,
// stdout and stderr, reports what it returned by Exit and exits.
func Main(command string, run func(args []string, stdout, stderr io.Writer) error) {
	os.Exit(Exit(os.Stderr, command, run(os.Args[1:], os.Stdout, os.Stderr)))
}

// Exit reports err, what a command's run returned, on stderr and returns
// the command's exit status: 0 for no error and for -h, -help and
// -version (Parse has answered them); for a usage error (UsageError)
// ExitUsage, its line followed by the usage; the status of an error made
// by WithStatus; ExitFailure otherwise. Each line of the error (an
// errors.Join of several) is a line of its own, prefixed with command.
func Exit(stderr io.Writer, command string, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) || errors.Is(err, ErrVersion) {
		return 0
	}
	Note(stderr, command, err.Error())
	var u *usageError
	if errors.As(err, &u) {
		u.fs.SetOutput(stderr)
		usage(u.fs)
		return ExitUsage
	}
	var s *statusError
	if errors.As(err, &s) {
		return s.code
	}
	return ExitFailure
}

// usageError is a mistake in how the command was called, with the flag
// set whose usage Exit prints after it.
type usageError struct {
	fs  *flag.FlagSet
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// UsageError marks err as a mistake in how the command was called (an
// argument missing, two flags that do not go together): Exit reports it,
// then fs's usage, on stderr, and exits ExitUsage.
func UsageError(fs *flag.FlagSet, err error) error {
	return &usageError{fs: fs, err: err}
}

// statusError is an error with the exit status it ends its command with.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

// WithStatus is err ending its command with status code, for a command
// whose statuses say more than failed (dicom-loadgen's 3: it ran, and some
// objects failed).
func WithStatus(code int, err error) error {
	return &statusError{code: code, err: err}
}

// Version is the line -version prints: the command and the build's
// version.
func Version(command string) string {
	return fmt.Sprintf("%s %s (%s)", command, version.Version, version.ImplementationVersionName)
}

// Parse parses args into fs, which it gives a -version flag, by the rule:
// -h or -help write fs's usage to stdout and return flag.ErrHelp; -version
// writes Version(fs.Name()) to stdout and returns ErrVersion; a flag fs
// does not have (with the one closest to it, a typo away), a value a flag
// refuses or a flag without its value return a UsageError. The flag
// package would print such an error and the usage itself, before the
// command reported the error again: it printed twice, the usage on stderr
// for -help too.
func Parse(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	showVersion := fs.Bool("version", false, "print the version and exit")
	custom := fs.Usage
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = custom
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		usage(fs)
		return err
	case err != nil:
		if unknown := UnknownFlag(fs, err, "-"); unknown != nil {
			err = unknown
		}
		return UsageError(fs, err)
	case *showVersion:
		fmt.Fprintln(stdout, Version(fs.Name()))
		return ErrVersion
	}
	return nil
}

// FlagsOnly is, for a command that takes flags only, the usage error of
// an argument left after them (a value meant for a flag, a flag after a
// word, which the flag package leaves unparsed), nil without one.
func FlagsOnly(fs *flag.FlagSet) error {
	if fs.NArg() == 0 {
		return nil
	}
	return UsageError(fs, fmt.Errorf("unexpected argument %q: %s takes flags only", fs.Arg(0), fs.Name()))
}

// Synopsis gives fs a usage that starts with "usage: <line>", the
// command's call in one line, before its flags.
func Synopsis(fs *flag.FlagSet, line string) {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s\n", line)
		fs.PrintDefaults()
	}
}

// usage writes fs's usage to its output: its own Usage, else the flag
// package's "Usage of <name>:" and the flags.
func usage(fs *flag.FlagSet) {
	if fs.Usage != nil {
		fs.Usage()
		return
	}
	fmt.Fprintf(fs.Output(), "Usage of %s:\n", fs.Name())
	fs.PrintDefaults()
}

// UnknownFlag is the error of err, fs's parse error, when it names a flag
// fs does not have: "unknown flag <dash><name>", with "; did you mean
// <dash><flag>?" when a flag of fs is a typo away (closest); nil for any
// other error. dash is how the command's help writes its flags.
func UnknownFlag(fs *flag.FlagSet, err error, dash string) error {
	name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -")
	if !ok {
		return nil
	}
	hint := ""
	if near := closest(fs, name); near != "" {
		hint = "; did you mean " + dash + near + "?"
	}
	return fmt.Errorf("unknown flag %s%s%s", dash, name, hint)
}

// closest names the flag of fs closest to name, a flag it does not have,
// when one is a typo away: at most two letters to change, add or drop, or
// name is the start of it or it the start of name followed by a dash
// ("listen" for "listn" and "listen-addr"); "" when none is.
func closest(fs *flag.FlagSet, name string) string {
	best, bestDist := "", 3
	fs.VisitAll(func(f *flag.Flag) {
		d := editDistance(name, f.Name)
		if strings.HasPrefix(f.Name, name) && len(name) >= 3 || strings.HasPrefix(name, f.Name+"-") {
			d = min(d, 1)
		}
		if d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Note writes text, one "<command>: " line for each of its lines, on w:
// what a command tells its person on the way (a step it takes, where it
// left a file), as its errors are told.
func Note(w io.Writer, command, text string) {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		b.WriteString(command)
		b.WriteString(": ")
		b.WriteString(line)
		b.WriteByte('\n')
	}
	fmt.Fprint(w, b.String()) // the person's terminal: nothing to do when it is gone

}

// Notef is Note with fmt.Sprintf's format and arguments.
func Notef(w io.Writer, command, format string, a ...any) {
	Note(w, command, fmt.Sprintf(format, a...))
}
