// Package localstoretest reads what local mode leaves for its consumers, for
// the tests of every package that runs it: the one reader of events.log.
package localstoretest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"testing"
	"time"
)

// LoggedEvent is one line of local mode's events.log: the event's place in
// its outbox (outbox and seq), then its envelope as webhooks get it
// (localstore's placedEvent, which TestLoggedEventIsTheLine holds it to).
type LoggedEvent struct {
	Outbox     string          `json:"outbox"`
	Seq        int64           `json:"seq"`
	Version    string          `json:"version"`
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Time       time.Time       `json:"time"`
	Region     string          `json:"region"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
	// Line is the line as the log holds it, without its newline.
	Line json.RawMessage `json:"-"`
}

// maxLine bounds a line: an event stays under EventBridge's 256 KiB, its
// place and envelope add little.
const maxLine = 4 << 20

// EventsLog reads the event log at path (DATA_DIR/events.log), oldest first:
// none while it does not exist (no event logged yet). A line that is not a
// whole event fails the test at once, and a last line without its newline
// (an append the log should never show unfinished) fails it too.
func EventsLog(t testing.TB, path string) []LoggedEvent {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("events.log: %v", err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		t.Errorf("events.log ends in an unfinished line")
	}
	var out []LoggedEvent
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, maxLine)
	for line := 1; sc.Scan(); line++ {
		var ev LoggedEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.ID == "" || ev.DetailType == "" {
			t.Fatalf("events.log line %d is not an event (%v): %.200s", line, err, sc.Bytes())
		}
		ev.Line = append(json.RawMessage(nil), sc.Bytes()...)
		out = append(out, ev)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("events.log: %v", err)
	}
	return out
}
