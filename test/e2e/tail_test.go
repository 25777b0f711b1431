package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore/localstoretest"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// tailer is a consumer that follows docs/local-mode.md's recipe: it asks
// /api/events?after=0 and then after=<the last seq it took>&outbox=<the
// outbox it took it from>; blind, it keeps the seq alone, as the recipe
// had it before the outbox had an id.
type tailer struct {
	outbox string
	after  int64
	seqs   []int64
	ids    []string
	blind  bool
}

// poll takes one page from n; it reports the answer's status and, when
// not 200, its body.
func (c *tailer) poll(t *testing.T, n *node) (int, string) {
	t.Helper()
	u := fmt.Sprintf("http://%s/api/events?after=%d&limit=100", n.portal, c.after)
	if c.outbox != "" && !c.blind {
		u += "&outbox=" + url.QueryEscape(c.outbox)
	}
	code, header, b := getBody(t, u)
	if code != http.StatusOK {
		return code, string(b)
	}
	var page struct {
		Outbox string
		Events []apiEvent
	}
	if err := json.Unmarshal(b, &page); err != nil {
		t.Fatal(err)
	}
	if h := header.Get("X-Event-Outbox"); page.Outbox == "" || h != page.Outbox || !c.blind && c.outbox != "" && page.Outbox != c.outbox {
		t.Fatalf("after=%d: the page names outbox %q (X-Event-Outbox %q), the consumer asked for %q", c.after, page.Outbox, h, c.outbox)
	}
	c.outbox = page.Outbox
	for _, e := range page.Events {
		c.seqs, c.ids = append(c.seqs, e.Seq), append(c.ids, e.ID)
		c.after = e.Seq
	}
	return code, ""
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
	testenv.EventuallyWithin(t, 30*time.Second, "the tail to hold every event, the study events too", func() bool {
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

// inLog waits for n's events.log to hold every event c took, and checks
// that each line names the event's place as the tail took it: its outbox
// and its seq, from which a consumer of the file goes on at /api/events.
func (c *tailer) inLog(t *testing.T, n *node) {
	t.Helper()
	var logged []localstoretest.LoggedEvent
	testenv.EventuallyWithin(t, 30*time.Second, "events.log to hold every event tailed", func() bool {
		logged = localstoretest.EventsLog(t, filepath.Join(n.dataDir, "events.log"))
		return len(logged) >= len(c.ids)
	})
	took := map[string]int64{}
	for i, id := range c.ids {
		took[id] = c.seqs[i]
	}
	for _, e := range logged {
		if seq, ok := took[e.ID]; !ok || e.Outbox != c.outbox || e.Seq != seq {
			t.Errorf("events.log: event %s at outbox %q seq %d; the tail took it at outbox %q seq %d (taken: %v)", e.ID, e.Outbox, e.Seq, c.outbox, seq, ok)
		}
	}
	if len(logged) != len(c.ids) {
		t.Errorf("events.log holds %d events, the tail took %d", len(logged), len(c.ids))
	}
}

// TestTailAcrossRestarts: a consumer that follows the docs' recipe (tail
// /api/events with after=<the last seq> and outbox=<its outbox>) while
// studies are sent, across a restart of scp-task (the same outbox),
// takes every event exactly once, in seq order, the same events
// /api/events lists. Given a data directory started afresh, its seq is
// none of the new directory's: while it is past the new directory's last
// event, a 400 naming after (an empty page for ever before); once the new
// directory has more events than it, the seq alone gives the events past
// it, those up to it skipped unsaid, while the consumer that names its
// outbox is refused, a 400 naming outbox, and after=0 tails the new one
// under its own outbox. events.log names each event's outbox and seq, as
// the tail took it, so that its reader tells the two directories apart.
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
	c.inLog(t, n)

	// A data directory started afresh: the consumer's seq is none of its.
	n.stop()
	saved, outbox := c.after, c.outbox
	fresh := newNode(t, filepath.Join(dir, "fresh"))
	fresh.start()
	blind := &tailer{after: saved, blind: true}
	if code, body := blind.poll(t, fresh); code != http.StatusBadRequest || !strings.Contains(body, "after ") || !strings.Contains(body, "after=0") {
		t.Errorf("after=%d alone on a new data directory with no event: %d %s, want a 400 naming after and after=0", saved, code, body)
	}
	// More events than the saved seq: every file sent before, and a
	// study more.
	extra := filepath.Join(dir, "extra.dcm")
	in := pipelinetest.Instance{StudyUID: synthStudy + ".7", SeriesUID: synthStudy + ".7.1", SOPUID: synthStudy + ".7.1.1", PatientID: synthPatient,
		PatientName: "Roentgen^Wilhelm", Modality: "CT", Rows: 8, Columns: 8, SourceAE: "LOCAL_AE"}
	if err := os.WriteFile(extra, in.Build(), 0o644); err != nil {
		t.Fatal(err)
	}
	send(fresh, append(append(writeSynthStudy(t, dir), testenv.DICOMTestdataFiles(t)...), extra))()
	fresh.waitPipelineIdle(30 * time.Second)
	testenv.EventuallyWithin(t, 30*time.Second, "the new data directory's events to outnumber the saved seq", func() bool {
		evs := fresh.events("")
		return len(evs) > 0 && evs[0].Seq > saved
	})
	if code, body := blind.poll(t, fresh); code != http.StatusOK || len(blind.seqs) == 0 || blind.seqs[0] != saved+1 {
		t.Errorf("after=%d alone on a new data directory with more events: %d %s, seqs %v: want the events past it, those up to it skipped unsaid",
			saved, code, body, blind.seqs)
	}
	if code, body := c.poll(t, fresh); code != http.StatusBadRequest || !strings.Contains(body, "outbox ") || !strings.Contains(body, "after=0") {
		t.Errorf("after=%d&outbox=%s on a new data directory: %d %s, want a 400 naming outbox and after=0", saved, outbox, code, body)
	}
	c = &tailer{}
	c.tailWhile(t, fresh, func() {})
	if c.outbox == "" || c.outbox == outbox {
		t.Errorf("the new data directory's outbox %q, the old one's %q: want another", c.outbox, outbox)
	}
	c.inLog(t, fresh)
	if len(c.ids) <= int(saved) || c.seqs[0] != 1 {
		t.Errorf("after=0 on the new data directory took %d events from seq %v, want more than %d from 1", len(c.ids), c.seqs[:min(len(c.seqs), 1)], saved)
	}
}
