package localstore

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

func readLog(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func TestPublisherRetriesAndLogsOnce(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		id := r.Header.Get("X-Event-Id")
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
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		var left string
		_ = db.sql.QueryRow(`SELECT webhooks_left FROM outbox WHERE id = 'e1'`).Scan(&left)
		if left == "[]" {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["e1"] != 3 || len(bodies) != 1 {
		t.Fatalf("webhook calls = %d, accepted bodies = %d", calls["e1"], len(bodies))
	}
	if bodies[0]["detail-type"] != "Study Received" || bodies[0]["source"] != "dicom.ingest" {
		t.Errorf("webhook body %v", bodies[0])
	}
	lines := readLog(t, logPath)
	if len(lines) != 1 || lines[0]["id"] != "e1" {
		t.Errorf("event log: %v", lines)
	}

	// A crash after the append but before logged=1 must not log twice.
	if _, err := db.sql.Exec(`UPDATE outbox SET logged = 0`); err != nil {
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

func TestRedactURL(t *testing.T) {
	tests := map[string]string{
		"https://user:pw@hook.example/x?token=1": "https://hook.example/x",
		"http://127.0.0.1:9/h#frag":              "http://127.0.0.1:9/h",
	}
	for in, want := range tests {
		t.Run(in, func(t *testing.T) {
			if got := redactURL(in); got != want {
				t.Errorf("redactURL(%q) = %q", in, got)
			}
		})
	}
}

// TestFlushLogsEachEventOnce: rounds of flushBatch events and an event
// added between flushes each reach the log once, in outbox order, and
// leave nothing unlogged (a round marks its events by their seq range).
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
		if err := db.sql.QueryRow(`SELECT COUNT(*) FROM outbox WHERE logged = 0`).Scan(&unlogged); err != nil {
			t.Fatal(err)
		}
		if unlogged != 0 {
			t.Errorf("%d events left unlogged after a flush", unlogged)
		}
	}
	publish(0, 2*flushBatch+7)
	check(2*flushBatch + 7)
	publish(2*flushBatch+7, 2*flushBatch+10)
	check(2*flushBatch + 10)
}
