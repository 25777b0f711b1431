package localstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore/localstoretest"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

func readLog(t *testing.T, path string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, ev := range localstoretest.EventsLog(t, path) {
		var m map[string]any
		if err := json.Unmarshal(ev.Line, &m); err != nil {
			t.Fatalf("log line %s: %v", ev.Line, err)
		}
		out = append(out, m)
	}
	return out
}

// TestLoggedEventIsTheLine holds the tests' reader of events.log
// (localstoretest.LoggedEvent) to the line the publisher writes: every
// field of it, none left over, none missing.
func TestLoggedEventIsTheLine(t *testing.T) {
	ev := Event{ID: "0123456789abcdef0123456789abcdef", Time: time.Date(2026, 12, 7, 20, 3, 47, 123456789, time.UTC),
		Source: pipeline.EventSource, DetailType: pipeline.DetailTypeInstanceStored, Resources: []string{"http://127.0.0.1:1/objects/incoming/x.dcm"},
		Detail: json.RawMessage(`{"eventId":"0123456789abcdef0123456789abcdef"}`)}
	line, err := json.Marshal(placedEvent{Outbox: "outbox-1", Seq: 7, wireEvent: ev.envelope()})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "events.log")
	if err := os.WriteFile(path, append(line, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	got := localstoretest.EventsLog(t, path)
	want := localstoretest.LoggedEvent{Outbox: "outbox-1", Seq: 7, Version: "0", ID: ev.ID, DetailType: ev.DetailType, Source: ev.Source,
		Account: EnvelopeAccount, Time: ev.Time, Region: EnvelopeRegion, Resources: ev.Resources, Detail: ev.Detail, Line: line}
	if len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Fatalf("read %+v, want %+v", got, want)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var strict localstoretest.LoggedEvent
	if err := dec.Decode(&strict); err != nil {
		t.Errorf("a field of the line the reader does not know: %v", err)
	}
}

func TestPublisherRetriesAndLogsOnce(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	seqs := map[string]string{}     // X-Event-Seq by X-Event-Id
	outboxes := map[string]string{} // X-Event-Outbox by X-Event-Id
	types := map[string]string{}    // Content-Type by X-Event-Id
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		id := r.Header.Get("X-Event-Id")
		seqs[id] = r.Header.Get("X-Event-Seq")
		outboxes[id] = r.Header.Get(OutboxHeader)
		types[id] = r.Header.Get("Content-Type")
		calls[id]++
		if calls[id] < 3 { // fail twice, then accept
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		bodies = append(bodies, m)
	}))
	defer srv.Close()
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	defer dead.Close()

	db := openTest(t)
	ctx := context.Background()
	logPath := filepath.Join(t.TempDir(), "events.log")
	if _, err := db.Outbox([]string{srv.URL, dead.URL}).Publish(ctx, []pipeline.Event{
		{ID: "e1", DetailType: pipeline.DetailTypeStudyReceived, Time: t0, Detail: json.RawMessage(`{"studyInstanceUid":"1.2"}`)},
	}); err != nil {
		t.Fatal(err)
	}
	p := &Publisher{DB: db, LogPath: logPath, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxAttempts: 4}
	testenv.EventuallySawWithin(t, 5*time.Second, "the webhook delivered", func() (bool, string) {
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		var left string
		err := db.sql.QueryRow(`SELECT webhooks_left FROM outbox WHERE id = 'e1'`).Scan(&left)
		return err == nil && left == "[]", fmt.Sprintf("webhooks left %q (%v)", left, err)
	})
	mu.Lock()
	defer mu.Unlock()
	if calls["e1"] != 3 || len(bodies) != 1 {
		t.Fatalf("webhook calls = %d, accepted bodies = %d", calls["e1"], len(bodies))
	}
	if bodies[0]["detail-type"] != "Study Received" || bodies[0]["source"] != "dicom.ingest" {
		t.Errorf("webhook body %v", bodies[0])
	}
	// The envelope alone: the outbox and seq are the headers'.
	for _, k := range []string{"outbox", "seq"} {
		if _, ok := bodies[0][k]; ok {
			t.Errorf("webhook body has %q, which the headers carry: %v", k, bodies[0])
		}
	}
	// The seq /api/events serves the event with, from which a receiver
	// that was down catches up (after=<seq>).
	if page, err := db.Events(ctx, EventFilter{}); err != nil || len(page.Events) != 1 || seqs["e1"] != strconv.FormatInt(page.Events[0].Seq, 10) {
		t.Errorf("X-Event-Seq %q; the outbox has %v (%v)", seqs["e1"], page.Events, err)
	}
	// The outbox that seq belongs to, which the receiver names when it
	// catches up (outbox=<id>), so that a seq of another data directory
	// is refused rather than skip events.
	if got := outboxes["e1"]; got == "" || got != db.OutboxID() {
		t.Errorf("X-Event-Outbox %q, want the outbox's id %q", got, db.OutboxID())
	}
	// A JSON body said so, as EventBridge's API destinations say it: a
	// receiver parses the body by it.
	if got := types["e1"]; got != "application/json" {
		t.Errorf("Content-Type %q, want application/json", got)
	}
	lines := readLog(t, logPath)
	if len(lines) != 1 || lines[0]["id"] != "e1" {
		t.Errorf("event log: %v", lines)
	}

	// A crash after the append but before the watermark moved must not
	// log twice.
	if _, err := db.sql.Exec(`UPDATE outbox_log SET logged_seq = 0`); err != nil {
		t.Fatal(err)
	}
	p2 := &Publisher{DB: db, LogPath: logPath}
	p2.init()
	if err := p2.reconcileLog(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if lines := readLog(t, logPath); len(lines) != 1 {
		t.Errorf("event logged %d times after reconcile", len(lines))
	}
}

// TestServedEventIsTheLoggedEnvelope: what Events returns, as /api/events
// serves it, is the envelope of the event log's line (its version "0"
// included), with its seq beside it; the line names the outbox too, which
// the page names once (a consumer of the file goes on from a line with
// after=<seq>&outbox=<outbox>, and tells a data directory started afresh
// by its other outbox). The lines named no outbox, nor a seq.
func TestServedEventIsTheLoggedEnvelope(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	logPath := filepath.Join(t.TempDir(), "events.log")
	for _, ev := range []pipeline.Event{
		{ID: "e1", DetailType: pipeline.DetailTypeStudyReceived, Time: t0, Detail: json.RawMessage(`{"studyInstanceUid":"1.2"}`)},
		{ID: "e2", DetailType: pipeline.DetailTypeInstanceStored, Time: t0.Add(time.Nanosecond), Resources: []string{"http://127.0.0.1:8080/objects/incoming/k.dcm"},
			Detail: json.RawMessage(`{"objectKey":"incoming/k.dcm"}`)},
	} {
		if _, err := db.Outbox(nil).Publish(ctx, []pipeline.Event{ev}); err != nil {
			t.Fatal(err)
		}
	}
	if err := (&Publisher{DB: db, LogPath: logPath}).Flush(ctx); err != nil {
		t.Fatal(err)
	}
	logged := map[any]map[string]any{}
	for _, line := range readLog(t, logPath) {
		logged[line["id"]] = line
	}
	page, err := db.Events(ctx, EventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != len(logged) || len(logged) != 2 {
		t.Fatalf("%d events served, %d logged", len(page.Events), len(logged))
	}
	for _, e := range page.Events {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var served map[string]any
		if err := json.Unmarshal(b, &served); err != nil {
			t.Fatal(err)
		}
		if served["seq"] != float64(e.Seq) {
			t.Errorf("served %s without its seq %d", b, e.Seq)
		}
		if _, ok := served["outbox"]; ok || page.Outbox != db.OutboxID() {
			t.Errorf("served %s in a page of outbox %q, want the outbox named by the page alone, %q", b, page.Outbox, db.OutboxID())
		}
		served["outbox"] = page.Outbox
		if !reflect.DeepEqual(served, logged[e.ID]) {
			t.Errorf("served %s\nlogged %v", b, logged[e.ID])
		}
	}
}

// TestWebhookErrorHidesSecrets: a delivery error, as the HTTP client
// quotes the URL in it, reaches the log without the URL's query, user
// info or path (a token: Slack's, Teams' and Discord's webhooks carry
// theirs in the path).
func TestWebhookErrorHidesSecrets(t *testing.T) {
	refused := errors.New("connection refused")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"client error", &url.Error{Op: "Post", URL: "https://hook.example/x?token=s3cret", Err: refused},
			`Post "https://hook.example/…": connection refused`},
		{"wrapped", fmt.Errorf("localstore: webhook: %w", &url.Error{Op: "Post", URL: "https://user:s3cret@hook.example/x", Err: refused}),
			`localstore: webhook: Post "https://hook.example/…": connection refused`},
		{"token in the path", &url.Error{Op: "Post", URL: "https://hooks.slack.example/services/T0/B0/s3cret", Err: refused},
			`Post "https://hooks.slack.example/…": connection refused`},
		{"no URL in it", errors.New("webhook answered 500"), "webhook answered 500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := webhookError(tt.err)
			if got != tt.want || strings.Contains(got, "s3cret") {
				t.Errorf("webhookError = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestFlushLogsEachEventOnce: rounds of flushBatch events and an event
// added between flushes each reach the log once, in outbox order, and
// leave the watermark at the last (a round moves it past its events).
func TestFlushLogsEachEventOnce(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	logPath := filepath.Join(t.TempDir(), "events.log")
	p := &Publisher{DB: db, LogPath: logPath}
	publish := func(from, to int) {
		t.Helper()
		var evs []pipeline.Event
		for i := from; i < to; i++ {
			evs = append(evs, pipeline.Event{ID: fmt.Sprintf("e%04d", i), DetailType: pipeline.DetailTypeInstanceStored, Time: t0, Detail: json.RawMessage(`{}`)})
		}
		if _, err := db.Outbox(nil).Publish(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	check := func(n int) {
		t.Helper()
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		lines := readLog(t, logPath)
		if len(lines) != n {
			t.Fatalf("%d lines in the log, want %d", len(lines), n)
		}
		for i, l := range lines {
			if want := fmt.Sprintf("e%04d", i); l["id"] != want {
				t.Fatalf("line %d: event %v, want %s", i, l["id"], want)
			}
		}
		var unlogged int
		if err := db.sql.QueryRow(`SELECT COUNT(*) FROM outbox WHERE seq > (SELECT logged_seq FROM outbox_log)`).Scan(&unlogged); err != nil {
			t.Fatal(err)
		}
		if unlogged != 0 {
			t.Errorf("%d events past the watermark after a flush", unlogged)
		}
	}
	publish(0, 2*flushBatch+7)
	check(2*flushBatch + 7)
	publish(2*flushBatch+7, 2*flushBatch+10)
	check(2*flushBatch + 10)
}

// TestReconcileLog: after a crash between a round's append and its
// watermark, the publisher moves the watermark past what the log holds
// and logs the rest, each event once. A line the crash left unfinished
// is cut, even one missing only its newline. The log's lines are read by
// id: an older build's, without the outbox and seq, as well.
func TestReconcileLog(t *testing.T) {
	for _, tt := range []struct {
		name  string
		lines int   // whole lines of the five events the log kept
		part  int   // bytes kept of the next line: -1 all but its newline
		want  int64 // watermark after reconciling
		// older: the whole lines kept are an older build's, the envelope
		// alone (no outbox, no seq): an upgrade's first start reads them.
		older bool
	}{
		{"all appended", 5, 0, 5, false},
		{"append cut short", 3, 0, 3, false},
		{"nothing appended", 2, 0, 2, false},
		{"append cut inside a line", 3, 100, 3, false},
		{"append cut before a newline", 3, -1, 3, false},
		{"append cut after one byte", 2, 1, 2, false},
		{"an older build's lines", 5, 0, 5, true},
		{"an older build's lines, append cut inside a line", 3, 100, 3, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			db := openTest(t)
			ctx := context.Background()
			logPath := filepath.Join(t.TempDir(), "events.log")
			publishNumbered(t, db, 0, 5)
			if err := (&Publisher{DB: db, LogPath: logPath}).Flush(ctx); err != nil {
				t.Fatal(err)
			}
			// The crash: the round's watermark never moved past event 2,
			// and the log kept tt.lines lines.
			body, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			all := bytes.SplitAfter(body, []byte("\n"))
			kept := bytes.Join(all[:tt.lines], nil)
			if tt.older {
				kept = envelopesAlone(t, all[:tt.lines])
			}
			switch next := all[tt.lines]; {
			case tt.part > 0:
				kept = append(kept, next[:tt.part]...)
			case tt.part < 0:
				kept = append(kept, next[:len(next)-1]...)
			}
			if err := os.WriteFile(logPath, kept, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := db.sql.Exec(`UPDATE outbox_log SET logged_seq = 2`); err != nil {
				t.Fatal(err)
			}
			p := &Publisher{DB: db, LogPath: logPath}
			p.init()
			if err := p.reconcileLog(ctx); err != nil {
				t.Fatal(err)
			}
			if got, err := p.loggedSeq(ctx); err != nil || got != tt.want {
				t.Fatalf("watermark %d (%v), want %d", got, err, tt.want)
			}
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			wantEachEventOnce(t, logPath, 5)
		})
	}
}

// envelopesAlone returns the log's lines as an older build wrote them:
// without the outbox and seq each line now names first.
func envelopesAlone(t *testing.T, lines [][]byte) []byte {
	t.Helper()
	var out []byte
	for _, l := range lines {
		var e map[string]json.RawMessage
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatal(err)
		}
		if e["outbox"] == nil || e["seq"] == nil {
			t.Fatalf("a line without its outbox and seq: %s", l)
		}
		delete(e, "outbox")
		delete(e, "seq")
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(append(out, b...), '\n')
	}
	return out
}

// TestLogWatermarkFromOlderDatabase: a database whose outbox marked each
// logged event gets a watermark before its first unlogged one.
func TestLogWatermarkFromOlderDatabase(t *testing.T) {
	ctx := context.Background()
	db := openOlderDatabase(t, 7, func(sdb *sql.DB) error {
		for i, logged := range []int{1, 1, 0, 0} {
			if _, err := sdb.Exec(`INSERT INTO outbox(id, time, source, detail_type, detail, logged) VALUES (?, 0, 's', 't', '{}', ?)`,
				fmt.Sprintf("e%d", i+1), logged); err != nil {
				return err
			}
		}
		return nil
	})
	logPath := filepath.Join(t.TempDir(), "events.log")
	p := &Publisher{DB: db, LogPath: logPath}
	if got, err := p.loggedSeq(ctx); err != nil || got != 2 {
		t.Fatalf("watermark %d (%v), want 2", got, err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	lines := readLog(t, logPath)
	if len(lines) != 2 || lines[0]["id"] != "e3" || lines[1]["id"] != "e4" {
		t.Errorf("log after the upgrade: %v, want e3 and e4", lines)
	}
}

// TestFailedAppendIsUndone: an append to the log that fails (a full disk
// writing half of it, a failed fsync) leaves the log as it was, and one
// whose watermark cannot be moved is found in the log by the next round:
// either way each event is in the log once, on a line of its own.
func TestFailedAppendIsUndone(t *testing.T) {
	for _, fault := range []string{"disk full midway", "fsync fails", "watermark not moved"} {
		t.Run(fault, func(t *testing.T) {
			db := openTest(t)
			ctx := context.Background()
			logPath := filepath.Join(t.TempDir(), "events.log")
			fsys := &faultyLogFS{FS: vfs.OS(), fault: fault}
			p := &Publisher{DB: db, LogPath: logPath, FS: fsys}
			publishNumbered(t, db, 0, 2)
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(logPath)
			if err != nil {
				t.Fatal(err)
			}
			publishNumbered(t, db, 2, 5)
			fsys.armed = true
			fsys.moveWatermark = func() {
				if _, err := db.sql.Exec(`UPDATE outbox_log SET logged_seq = logged_seq + 1`); err != nil {
					t.Error(err)
				}
			}
			if err := p.Flush(ctx); err == nil {
				t.Fatal("the round with the fault succeeded")
			}
			if !fsys.fired {
				t.Fatal("the fault never happened")
			}
			if fault != "watermark not moved" {
				after, err := os.ReadFile(logPath)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(after, before) {
					t.Errorf("the failed append left %q in the log", after[len(before):])
				}
			}
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			wantEachEventOnce(t, logPath, 5)
		})
	}
}

// publishNumbered publishes events e<from+1> to e<to>.
func publishNumbered(t *testing.T, db *DB, from, to int) {
	t.Helper()
	var evs []pipeline.Event
	for i := from; i < to; i++ {
		evs = append(evs, pipeline.Event{ID: fmt.Sprintf("e%d", i+1), DetailType: pipeline.DetailTypeInstanceStored, Time: t0, Detail: json.RawMessage(`{}`)})
	}
	if _, err := db.Outbox(nil).Publish(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
}

// wantEachEventOnce checks that the log holds e1 to e<n>, in order, each
// on a line of its own.
func wantEachEventOnce(t *testing.T, logPath string, n int) {
	t.Helper()
	lines := readLog(t, logPath)
	if len(lines) != n {
		t.Fatalf("%d lines in the log, want each of %d events once", len(lines), n)
	}
	for i, l := range lines {
		if want := fmt.Sprintf("e%d", i+1); l["id"] != want {
			t.Errorf("line %d: %v, want %s", i, l["id"], want)
		}
	}
}

// faultyLogFS fails the first append to the log once armed: its write
// stops halfway with ENOSPC, its fsync fails, or its fsync succeeds while
// the watermark moves under the publisher, so that moving it fails.
type faultyLogFS struct {
	vfs.FS
	fault         string
	armed, fired  bool
	moveWatermark func()
}

func (f *faultyLogFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	if err != nil || flag&os.O_WRONLY == 0 {
		return file, err
	}
	return &faultyLogFile{File: file, fs: f}, nil
}

type faultyLogFile struct {
	vfs.File
	fs *faultyLogFS
}

func (f *faultyLogFile) fire(fault string) bool {
	if !f.fs.armed || f.fs.fired || f.fs.fault != fault {
		return false
	}
	f.fs.fired = true
	return true
}

func (f *faultyLogFile) WriteAt(b []byte, off int64) (int, error) {
	if f.fire("disk full midway") {
		n, err := f.File.WriteAt(b[:len(b)/2], off)
		if err != nil {
			return n, err
		}
		return n, syscall.ENOSPC
	}
	return f.File.WriteAt(b, off)
}

func (f *faultyLogFile) Sync() error {
	if err := f.File.Sync(); err != nil {
		return err
	}
	if f.fire("fsync fails") {
		return syscall.EIO
	}
	if f.fire("watermark not moved") {
		f.fs.moveWatermark()
	}
	return nil
}

// TestHungWebhookDoesNotHoldUpTheLog: while a webhook hangs (here until
// the test ends; in life up to the client's timeout a try), events still
// reach the log at once.
func TestHungWebhookDoesNotHoldUpTheLog(t *testing.T) {
	db := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	logPath := filepath.Join(t.TempDir(), "events.log")
	hung := &hungPoster{entered: make(chan struct{}, 16), release: make(chan struct{})}
	p := &Publisher{DB: db, LogPath: logPath, Client: hung, Poll: 20 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		close(hung.release)
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	publish := func(id string) {
		t.Helper()
		ev := pipeline.Event{ID: id, DetailType: pipeline.DetailTypeInstanceStored, Time: t0, Detail: json.RawMessage(`{}`)}
		if _, err := db.Outbox([]string{"http://hook.invalid/events"}).Publish(ctx, []pipeline.Event{ev}); err != nil {
			t.Fatal(err)
		}
		p.Notify()
	}
	publish("e1")
	select {
	case <-hung.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook was never tried")
	}
	publish("e2")
	testenv.EventuallySawWithin(t, 5*time.Second, "the event in the log while a webhook hung", func() (bool, string) {
		b, err := os.ReadFile(logPath)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return bytes.Contains(b, []byte(`"id":"e2"`)), fmt.Sprintf("the log: %q", b)
	})
}

// hungPoster is a webhook that answers nothing until released.
type hungPoster struct {
	entered chan struct{}
	release chan struct{}
}

func (h *hungPoster) Do(req *http.Request) (*http.Response, error) {
	select {
	case h.entered <- struct{}{}:
	default:
	}
	select {
	case <-h.release:
	case <-req.Context().Done():
	}
	return nil, errors.New("webhook hung")
}

// TestWebhookRetriedWhenDue: a webhook that fails once is tried again
// when its backoff ends, not at the next Poll: retries were found by the
// once-a-second poll, so a retry_in of 500 ms came about a second later.
// Poll is an hour here, so only the retry's own time can bring it; the
// retry comes no earlier than its backoff after the failure.
func TestWebhookRetriedWhenDue(t *testing.T) {
	const backoff = 100 * time.Millisecond
	var mu sync.Mutex
	var tries []time.Time
	retried := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		tries = append(tries, time.Now())
		switch len(tries) {
		case 1:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case 2:
			close(retried)
		}
	}))
	defer srv.Close()
	db := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	p := &Publisher{DB: db, BaseBackoff: backoff, Poll: time.Hour}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	ev := pipeline.Event{ID: "e1", DetailType: pipeline.DetailTypeInstanceStored, Time: t0, Detail: json.RawMessage(`{}`)}
	if _, err := db.Outbox([]string{srv.URL}).Publish(ctx, []pipeline.Event{ev}); err != nil {
		t.Fatal(err)
	}
	p.Notify()
	select {
	case <-retried:
	case <-time.After(30 * time.Second):
		t.Fatal("the failed delivery was not tried again within 30 s: retries wait for the hourly Poll")
	}
	mu.Lock()
	defer mu.Unlock()
	if gap := tries[1].Sub(tries[0]); gap < backoff {
		t.Errorf("retried %v after the failure, before its backoff of %v", gap, backoff)
	}
}

// TestNextWebhookTry: the time the webhooks' loop wakes for is the
// earliest retry, held back while its webhook is paused; none when
// nothing waits, or only what is due already (the next Poll's).
func TestNextWebhookTry(t *testing.T) {
	now := t0
	at := func(d time.Duration) time.Time { return now.Add(d) }
	for _, tt := range []struct {
		name    string
		nextTry map[retryKey]time.Time
		down    map[string]time.Time
		want    time.Time
	}{
		{"nothing waits", nil, nil, time.Time{}},
		{"earliest retry", map[retryKey]time.Time{{"a", "u"}: at(2 * time.Second), {"b", "u"}: at(500 * time.Millisecond)}, nil, at(500 * time.Millisecond)},
		{"paused webhook", map[retryKey]time.Time{{"a", "u"}: at(100 * time.Millisecond)}, map[string]time.Time{"u": at(300 * time.Millisecond)}, at(300 * time.Millisecond)},
		{"held back by a pause alone", nil, map[string]time.Time{"u": at(time.Second)}, at(time.Second)},
		{"due already", map[retryKey]time.Time{{"a", "u"}: at(-time.Second)}, map[string]time.Time{"u": at(-time.Second)}, time.Time{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := &Publisher{}
			p.init()
			maps.Copy(p.nextTry, tt.nextTry)
			maps.Copy(p.downUntil, tt.down)
			got, ok := p.nextWebhookTry(now)
			if ok != !tt.want.IsZero() || !got.Equal(tt.want) {
				t.Errorf("nextWebhookTry = %v, %v; want %v", got, ok, tt.want)
			}
		})
	}
}
