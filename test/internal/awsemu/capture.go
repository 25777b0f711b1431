package awsemu

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// EventCapture is an EventBridge endpoint that records PutEvents entries.
// Fail makes it reject leading entries of the next calls with a throttling
// error code, as PutEvents does under load; FailWith with another of
// PutEvents' per-entry codes (InternalFailure).
type EventCapture struct {
	mu       sync.Mutex
	entries  []Entry
	failNext int
	failCode string
	calls    int
}

// Entry is one captured PutEvents entry and when it arrived.
type Entry struct {
	Source, DetailType, Detail, EventBusName string
	Resources                                []string
	At                                       time.Time `json:"-"`
}

func (c *EventCapture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Amz-Target") != "AWSEvents.PutEvents" {
		http.Error(w, `{"__type":"UnknownOperationException"}`, http.StatusBadRequest)
		return
	}
	var in struct{ Entries []Entry }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, `{"__type":"SerializationException"}`, http.StatusBadRequest)
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	type result struct {
		EventId      string `json:",omitempty"`
		ErrorCode    string `json:",omitempty"`
		ErrorMessage string `json:",omitempty"`
	}
	var out struct {
		Entries          []result
		FailedEntryCount int
	}
	for i, e := range in.Entries {
		if c.failNext > 0 {
			c.failNext--
			out.Entries = append(out.Entries, result{ErrorCode: c.failCode, ErrorMessage: "injected"})
			out.FailedEntryCount++
			continue
		}
		e.At = now
		c.entries = append(c.entries, e)
		out.Entries = append(out.Entries, result{EventId: fmt.Sprintf("ev-%d-%d", c.calls, i)})
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	json.NewEncoder(w).Encode(out)
}

// All returns the entries captured so far.
func (c *EventCapture) All() []Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Entry(nil), c.entries...)
}

// Fail makes the next n entries fail, throttled.
func (c *EventCapture) Fail(n int) { c.FailWith(n, "ThrottlingException") }

// FailWith makes the next n entries fail with the per-entry error code.
func (c *EventCapture) FailWith(n int, code string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failNext, c.failCode = n, code
}
