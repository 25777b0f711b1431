// Package cli is the one rule for how the repository's command-line tools
// (onboarding, logname, the CDK app) speak to the person who ran them: a
// plain line on stderr, "<command>: <text>", where the error names the
// flag or variable to fix. Services (scp-task, the functions) log JSON
// lines through shared/jsonlog instead; a person at a terminal reading a
// tool's failure as a JSON log line had to dig the message out of it.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit reports err, what a command's run returned, on stderr and returns
// the command's exit status: 0 for no error and for -h or -help (the flag
// set has printed its usage), 1 otherwise. Each line of the error (an
// errors.Join of several) is a line of its own, prefixed with command.
func Exit(stderr io.Writer, command string, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	Note(stderr, command, err.Error())
	return 1
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
