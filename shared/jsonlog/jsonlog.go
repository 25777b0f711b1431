// Package jsonlog builds the JSON logger every dicom-ingest command writes
// with, so that one parser reads the logs of all of them: the SCP, the
// Lambda functions and the tools. Durations are written in human units
// by the rule of shared/durations ("1m", "1.5s", "250ms") rather than
// slog's nanosecond integers.
package jsonlog

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/durations"
)

// EnvironmentKey is the attribute naming the deployment environment on
// every line of a Lambda function's log; the stack's metric filters take it
// as their Environment dimension.
const EnvironmentKey = "environment"

// New returns a JSON logger writing to w at level.
func New(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: humanDurations}))
}

// humanDurations writes duration attributes as durations.Format does.
func humanDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(durations.Format(a.Value.Duration().Round(time.Microsecond)))
	}
	return a
}

// ParseLevel reads a level name (debug, info, warn, error; any case); an
// unknown name is info.
func ParseLevel(name string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(name)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// ServerErrors returns the logger for an http.Server's ErrorLog: what
// net/http reports on its own (an accept that failed, a handler's panic
// with its stack, a malformed request it answered itself) becomes one
// JSON line each, with the fixed message "http server error", the server's
// name and net/http's text under err, instead of a plain-text line on
// standard error that no log query parses.
func ServerErrors(l *slog.Logger, server string) *log.Logger {
	return log.New(serverErrors{l.With("server", server)}, "", 0)
}

type serverErrors struct{ l *slog.Logger }

func (w serverErrors) Write(p []byte) (int, error) {
	w.l.Warn("http server error", "err", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// MessageFilter is the CloudWatch Logs filter pattern of the JSON lines
// whose message (slog.MessageKey) is one of msgs, exactly: the stack's
// metric filters count a line by it (infra/stack's logLineMetric). It is
// the text the CDK's FilterPattern.stringValue and FilterPattern.any make
// of the same terms. It panics, at synth, on what the pattern would
// misread: no message at all, or a message with a '*', which CloudWatch
// reads as a wildcard (the filter would count other lines too) and the
// CDK's quoting leaves as it is. The messages are the code's constants: a
// message of that kind is a bug of the code calling it.
func MessageFilter(msgs ...string) string {
	if len(msgs) == 0 {
		panic("jsonlog: MessageFilter of no message")
	}
	terms := make([]string, len(msgs))
	for i, m := range msgs {
		if strings.Contains(m, "*") {
			panic(fmt.Sprintf("jsonlog: MessageFilter: message %q holds a '*', which the filter pattern reads as a wildcard", m))
		}
		terms[i] = "$." + slog.MessageKey + " = " + filterQuote(m)
	}
	if len(terms) == 1 {
		return "{ " + terms[0] + " }"
	}
	return "{ (" + strings.Join(terms, ") || (") + ") }"
}

// filterQuote quotes a filter pattern's string term as the CDK does.
func filterQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
