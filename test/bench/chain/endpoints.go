package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/test/bench/internal/awsmeter"
	"github.com/dicom-ingest/dicom-ingest/test/bench/internal/latency"
	"github.com/dicom-ingest/dicom-ingest/test/internal/awsemu"
)

// created is S3's notice of a new object, before it is delivered.
type created struct {
	key       string
	size      int64
	eventName string
	at        time.Time
}

// notifying calls notify after every successful object creation through
// h (PutObject, CompleteMultipartUpload), as S3 emits ObjectCreated
// events once an object is durable.
func notifying(h http.Handler, notify func(created)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &awsemu.StatusWriter{ResponseWriter: w, Status: http.StatusOK}
		h.ServeHTTP(rec, r)
		if rec.Status != http.StatusOK {
			return
		}
		_, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if key == "" {
			return
		}
		if k, err := url.PathUnescape(key); err == nil {
			key = k
		}
		q := r.URL.Query()
		switch {
		case r.Method == http.MethodPut && !q.Has("partNumber") && r.Header.Get("X-Amz-Copy-Source") == "":
			size := r.ContentLength
			if d := r.Header.Get("X-Amz-Decoded-Content-Length"); d != "" {
				size, _ = strconv.ParseInt(d, 10, 64) // a size S3 would know; 0 if garbled
			}
			notify(created{key: key, size: size, eventName: "ObjectCreated:Put", at: time.Now()})
		case r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") != "" && !q.Has("partNumber"):
			notify(created{key: key, eventName: "ObjectCreated:Copy", at: time.Now()})
		case r.Method == http.MethodPost && q.Has("uploadId"):
			notify(created{key: key, eventName: "ObjectCreated:CompleteMultipartUpload", at: time.Now()})
		}
	})
}

// endpoint is one caller's view of an emulated service: its calls counted
// on meter under service, and its answers delayed as the service would.
func endpoint(meter *awsmeter.Meter, service string, h http.Handler, delay func(*http.Request) *latency.Sampler) http.Handler {
	return meter.Handler(service, latency.Handler(h, delay))
}

// capacity sums the DynamoDB capacity units consumed, per operation:
// what on-demand mode bills as read and write request units (a table's
// and its indexes').
type capacity struct {
	mu    sync.Mutex
	units map[string]float64 // "DynamoDB UpdateItem" -> units
}

// dynamoProxy forwards to dynalite, asking every request that can say so
// for the capacity it consumed (ReturnConsumedCapacity INDEXES, which the
// functions never ask for themselves) and adding it up.
func dynamoProxy(target *url.URL, c *capacity) http.Handler {
	rp := &httputil.ReverseProxy{FlushInterval: -1}
	rp.Rewrite = func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		r := pr.Out
		if r.Body == nil || r.Body == http.NoBody {
			return
		}
		body, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			r.Body = io.NopCloser(bytes.NewReader(nil))
			return
		}
		var in map[string]json.RawMessage
		if json.Unmarshal(body, &in) == nil && capacityOps[op(r)] {
			if _, asked := in["ReturnConsumedCapacity"]; !asked {
				in["ReturnConsumedCapacity"] = json.RawMessage(`"INDEXES"`)
				if b, err := json.Marshal(in); err == nil {
					body = b
				}
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	rp.ModifyResponse = func(resp *http.Response) error {
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("chain: read dynalite's answer: %w", err)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		var out struct {
			ConsumedCapacity json.RawMessage
			Type             string `json:"__type"`
		}
		if json.Unmarshal(body, &out) != nil {
			return nil
		}
		switch o := op(resp.Request); {
		case len(out.ConsumedCapacity) > 0:
			c.add("DynamoDB "+o, consumedUnits(out.ConsumedCapacity))
		case singleWriteOps[o] && strings.HasSuffix(out.Type, "#ConditionalCheckFailedException"):
			// DynamoDB bills a write whose condition fails by the larger
			// of the existing and the new item (Developer Guide, read and
			// write operations); dynalite's error says nothing of
			// capacity. Count the least it costs, a unit.
			c.add("DynamoDB "+o, 1)
		}
		return nil
	}
	return rp
}

// singleWriteOps are the writes of one item, which a failed condition
// still bills.
var singleWriteOps = map[string]bool{"PutItem": true, "UpdateItem": true, "DeleteItem": true}

func op(r *http.Request) string { return awsemu.Operation(r) }

// capacityOps take ReturnConsumedCapacity.
var capacityOps = map[string]bool{
	"GetItem": true, "PutItem": true, "UpdateItem": true, "DeleteItem": true, "Query": true, "Scan": true,
	"BatchGetItem": true, "BatchWriteItem": true, "TransactGetItems": true, "TransactWriteItems": true,
}

// consumedUnits adds up a ConsumedCapacity answer: one object or a list
// (batch and transaction operations), each with the total CapacityUnits
// over the table and its indexes.
func consumedUnits(raw json.RawMessage) float64 {
	type cc struct{ CapacityUnits float64 }
	var one cc
	if json.Unmarshal(raw, &one) == nil {
		return one.CapacityUnits
	}
	var many []cc
	total := 0.0
	if json.Unmarshal(raw, &many) == nil {
		for _, c := range many {
			total += c.CapacityUnits
		}
	}
	return total
}

func (c *capacity) add(op string, units float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.units == nil {
		c.units = map[string]float64{}
	}
	c.units[op] += units
}

func (c *capacity) snapshot() map[string]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]float64{}
	for k, v := range c.units {
		out[k] = v
	}
	return out
}

// countingWriter counts the bytes written to it: the logs a function or
// scp-task would send to CloudWatch Logs.
type countingWriter struct {
	mu sync.Mutex
	n  int64
	w  io.Writer
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.mu.Lock()
	c.n += int64(len(b))
	c.mu.Unlock()
	if c.w != nil {
		return c.w.Write(b)
	}
	return len(b), nil
}

func (c *countingWriter) count() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
