package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// tailer is a consumer that follows docs/local-mode.md's recipe: it asks
// /api/events?after=0 and then after=<the last seq it took>.
type tailer struct {
	after int64
	seqs  []int64
	ids   []string
}

// poll takes one page from n; it reports the answer's status and, when
// not 200, its body.
func (c *tailer) poll(t *testing.T, n *node) (int, string) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://%s/api/events?after=%d&limit=100", n.portal, c.after))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, string(b)
	}
	var page struct{ Events []apiEvent }
	if err := json.Unmarshal(b, &page); err != nil {
		t.Fatal(err)
	}
	for _, e := range page.Events {
		c.seqs, c.ids = append(c.seqs, e.Seq), append(c.ids, e.ID)
		c.after = e.Seq
	}
	return resp.StatusCode, ""
}

// tailWhile polls n until send returns, and then until the tail holds
// every event /api/events lists (newest first), the study events that
// follow the quiet period among them.
func (c *tailer) tailWhile(t *testing.T, n *node, send func()) {
	t.Helper()
	sent := make(chan struct{})
	go func() { defer close(sent); send() }()
	for polling := true; polling; {
		select {
		case <-sent:
			polling = false
		case <-time.After(50 * time.Millisecond):
			if code, body := c.poll(t, n); code != http.StatusOK {
				t.Fatalf("after=%d: %d %s", c.after, code, body)
			}
		}
	}
	n.waitPipelineIdle(30 * time.Second)
	eventually(t, 30*time.Second, "the tail to hold every event, the study events too", func() bool {
		if code, body := c.poll(t, n); code != http.StatusOK {
			t.Fatalf("after=%d: %d %s", c.after, code, body)
		}
		all := n.events("")
		studies := 0
		for _, e := range all {
			if e.DetailType == "Study Received" {
				studies++
			}
		}
		return studies == len(n.studies()) && len(all) == len(c.ids)
	})
}

// TestTailAcrossRestarts: a consumer that follows the docs' recipe (tail
// /api/events with after=<the last seq>) while studies are sent, across a
// restart of scp-task, takes every event exactly once, in seq order, the
// same events /api/events lists. Given a data directory started afresh,
// its seq is past the new directory's last event: a 400 naming after
// (an empty page for ever, the new directory's events skipped unsaid),
// and after=0 tails the new one.
func TestTailAcrossRestarts(t *testing.T) {
	need(t, "dcmsend")
	dir := t.TempDir()
	n := newNode(t, filepath.Join(dir, "data"))
	n.start()
	c := &tailer{}
	send := func(n *node, files []string) func() {
		return func() {
			if out, err := n.dcmsend("LOCAL_AE", files...); err != nil {
				t.Errorf("dcmsend: %v\n%s", err, out)
			}
		}
	}
	c.tailWhile(t, n, send(n, writeSynthStudy(t, dir)))
	first := len(c.ids)
	n.stop()
	n.start()
	c.tailWhile(t, n, send(n, testenv.DICOMTestdataFiles(t)))
	if first == 0 || len(c.ids) == first {
		t.Fatalf("%d events before the restart, %d in all: want some in each run", first, len(c.ids))
	}
	if !slices.IsSorted(c.seqs) || len(slices.Compact(slices.Clone(c.seqs))) != len(c.seqs) {
		t.Errorf("tailed seqs not ascending once each: %v", c.seqs)
	}
	var listed []string
	for _, e := range slices.Backward(n.events("")) {
		listed = append(listed, e.ID)
	}
	if !slices.Equal(c.ids, listed) {
		t.Errorf("the tail took %d events, /api/events lists %d: not the same, in the same order", len(c.ids), len(listed))
	}

	// A data directory started afresh: the consumer's seq is none of its.
	n.stop()
	fresh := newNode(t, filepath.Join(dir, "fresh"))
	fresh.start()
	if out, err := fresh.dcmsend("LOCAL_AE", writeSynthStudy(t, dir)[:1]...); err != nil {
		t.Fatalf("dcmsend: %v\n%s", err, out)
	}
	fresh.waitPipelineIdle(30 * time.Second)
	if code, body := c.poll(t, fresh); code != http.StatusBadRequest || !strings.Contains(body, "after ") || !strings.Contains(body, "after=0") {
		t.Errorf("after=%d on a new data directory: %d %s, want a 400 naming after and after=0", c.after, code, body)
	}
	c = &tailer{}
	if code, body := c.poll(t, fresh); code != http.StatusOK || len(c.ids) == 0 {
		t.Errorf("after=0 on a new data directory: %d %s, %d events", code, body, len(c.ids))
	}
}
