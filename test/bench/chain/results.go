package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/durations"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/test/bench/internal/awsmeter"
)

// quantiles summarize durations in milliseconds.
type quantiles struct {
	N     int     `json:"n"`
	P50ms float64 `json:"p50ms"`
	P99ms float64 `json:"p99ms"`
	MaxMs float64 `json:"maxMs"`
}

func summarize(ds []time.Duration) quantiles {
	if len(ds) == 0 {
		return quantiles{}
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return quantiles{N: len(ds), P50ms: ms(ds[len(ds)/2]), P99ms: ms(ds[min(len(ds)-1, len(ds)*99/100)]), MaxMs: ms(ds[len(ds)-1])}
}

type lambdaUse struct {
	Invocations int       `json:"invocations"`
	TotalMs     float64   `json:"totalMs"`
	MemoryMB    int       `json:"memoryMB"`
	GBSeconds   float64   `json:"gbSeconds"`
	Duration    quantiles `json:"duration"`
}

type results struct {
	Config map[string]any `json:"config"`

	Planned      int     `json:"planned"`
	Sent         int     `json:"sent"`
	SendFailed   int     `json:"sendFailed"`
	SendSeconds  float64 `json:"sendSeconds"`
	AchievedRate float64 `json:"achievedRate"`
	Stored       int     `json:"stored"`
	Rejected     int     `json:"rejected"`
	Unannounced  int     `json:"unannounced"`
	Studies      int     `json:"studies"`
	StudiesSeen  int     `json:"studiesReceived"`
	BatchFailed  int     `json:"batchItemFailures"`
	QueueLeft    int     `json:"queueLeft"`

	// InstanceStored runs from C-STORE success to Instance Stored at a
	// consumer; Hops splits it.
	InstanceStored quantiles            `json:"instanceStored"`
	Hops           map[string]quantiles `json:"hops"`
	// StudyReceived runs from the study's last C-STORE success to Study
	// Received at a consumer.
	StudyReceived quantiles `json:"studyReceived"`

	// Calls by caller (scp-task, validate, audit, notify, and "aws" for
	// the calls AWS makes for the stack), then "Service Operation".
	Calls map[string]map[string]int64 `json:"calls"`
	// CallLatency is how long each call took to be answered, injected
	// latency included.
	CallLatency map[string]map[string]awsmeter.Latency `json:"callLatency"`
	// CapacityUnits are DynamoDB's consumed units by caller and operation.
	CapacityUnits map[string]map[string]float64 `json:"capacityUnits"`
	// EventBytes sums the events' sizes by detail type, and counts them
	// ("… events") and the 64 KB chunks EventBridge bills ("… billed
	// events").
	EventBytes map[string]int64     `json:"eventBytes"`
	Lambda     map[string]lambdaUse `json:"lambda"`
	LogBytes   map[string]int64     `json:"logBytes"`
	Storage    map[string]int64     `json:"storage"`
}

func (b *bench) results(planned, sent int, elapsed time.Duration, studies map[string]time.Time, storage map[string]int64, left int) *results {
	o := b.o
	r := &results{
		Config: map[string]any{
			"rate": o.rate, "duration": durations.Format(o.duration), "associations": o.associations, "studySize": o.studySize,
			"seriesSize": o.seriesSz, "image": o.side, "concurrency": o.concurrency, "batchSize": o.batchSize,
			"batchWindow": durations.Format(o.batchWindow), "quietPeriod": durations.Format(o.quietPeriod), "notifyEvery": durations.Format(o.notifyEvery),
			"s3WriteLatency": b.d.s3Write.Dist.String(), "s3ReadLatency": b.d.s3Read.Dist.String(),
			"notificationLatency": b.d.notification.Dist.String(), "sqsLatency": b.d.sqs.Dist.String(),
			"eventBridgeLatency": b.d.eventBridge.Dist.String(), "dynamodbLatency": b.d.dynamo.Dist.String(),
			"scpArgs": o.scpArgs,
		},
		Planned: planned, Sent: sent, SendFailed: planned - sent, SendSeconds: elapsed.Seconds(),
		AchievedRate: float64(sent) / elapsed.Seconds(), Studies: len(studies), QueueLeft: left,
		Hops: map[string]quantiles{}, Lambda: map[string]lambdaUse{}, LogBytes: map[string]int64{}, Storage: storage,
		Calls: map[string]map[string]int64{}, CapacityUnits: map[string]map[string]float64{},
		CallLatency: map[string]map[string]awsmeter.Latency{}, EventBytes: map[string]int64{},
	}
	for caller, m := range b.meters {
		r.Calls[caller] = m.Counts()
		if l := m.Latencies(); len(l) > 0 {
			r.CallLatency[caller] = l
		}
		if u := b.units[caller].snapshot(); len(u) > 0 {
			r.CapacityUnits[caller] = u
		}
	}
	studyEvent := map[string]time.Time{}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.events.All() {
		size := int64(len(e.Detail) + len(e.DetailType) + len(e.Source))
		r.EventBytes[e.DetailType] += size
		r.EventBytes[e.DetailType+" events"]++
		// EventBridge bills each 64 KB of an event as one event.
		r.EventBytes[e.DetailType+" billed events"] += (size + 64<<10 - 1) / (64 << 10)
		at := e.At.Add(b.d.eventBridge.Next())
		var d struct {
			SOPInstanceUID   string `json:"sopInstanceUid"`
			StudyInstanceUID string `json:"studyInstanceUid"`
		}
		if json.Unmarshal([]byte(e.Detail), &d) != nil {
			continue
		}
		switch e.DetailType {
		case pipeline.DetailTypeInstanceStored, pipeline.DetailTypeInstanceRejected:
			if t := b.traces[d.SOPInstanceUID]; t != nil && t.event.IsZero() {
				t.published, t.event, t.rejected = e.At, at, e.DetailType == pipeline.DetailTypeInstanceRejected
			}
		case pipeline.DetailTypeStudyReceived:
			if _, seen := studyEvent[d.StudyInstanceUID]; !seen {
				studyEvent[d.StudyInstanceUID] = at
			}
		}
	}
	var total, notifyHop, batching, function, delivery []time.Duration
	for _, t := range b.traces {
		if t.stored.IsZero() || t.failedStore {
			continue
		}
		if t.event.IsZero() {
			r.Unannounced++
			continue
		}
		if t.rejected {
			r.Rejected++
		} else {
			r.Stored++
		}
		total = append(total, t.event.Sub(t.stored))
		if !t.created.IsZero() && !t.invoked.IsZero() {
			notifyHop = append(notifyHop, t.visible.Sub(t.created))
			batching = append(batching, t.invoked.Sub(t.visible))
			function = append(function, t.published.Sub(t.invoked))
			delivery = append(delivery, t.event.Sub(t.published))
		}
	}
	r.InstanceStored = summarize(total)
	r.Hops["S3 notification and queue (model)"] = summarize(notifyHop)
	r.Hops["batching window (event source mapping)"] = summarize(batching)
	r.Hops["invocation start to its PutEvents (validate)"] = summarize(function)
	r.Hops["EventBridge delivery to a consumer (model)"] = summarize(delivery)
	var studyLat []time.Duration
	for uid, last := range studies {
		if at, ok := studyEvent[uid]; ok {
			studyLat = append(studyLat, at.Sub(last))
			r.StudiesSeen++
		}
	}
	r.StudyReceived = summarize(studyLat)
	r.BatchFailed = b.failures
	for fn, ds := range b.lambda {
		u := lambdaUse{Invocations: len(ds), MemoryMB: functionMemoryMB[fn], Duration: summarize(ds)}
		for _, d := range ds {
			// Lambda bills every invocation in whole milliseconds.
			ms := float64((d + time.Millisecond - 1) / time.Millisecond)
			u.TotalMs += ms
			u.GBSeconds += ms / 1000 * float64(u.MemoryMB) / 1024
		}
		r.Lambda[fn] = u
	}
	for name, w := range b.logs {
		r.LogBytes[name] = w.count()
	}
	return r
}

// incomplete says why a run measured less than it sent, nil when every
// instance sent was announced (stored or rejected) and every study
// received: a function that fails its initialization (a variable the
// bench did not pass) gets every message back, and the latencies of a
// run where nothing arrived are empty, not slow.
func (r *results) incomplete() error {
	var errs []error
	if r.Sent == 0 {
		errs = append(errs, fmt.Errorf("no instance was stored (%d planned)", r.Planned))
	}
	if r.Unannounced > 0 {
		errs = append(errs, fmt.Errorf("%d of %d instances sent reached no consumer as Instance Stored or Rejected before -drain ran out (%d batch item failures)", r.Unannounced, r.Sent, r.BatchFailed))
	}
	if r.StudiesSeen < r.Studies {
		errs = append(errs, fmt.Errorf("%d of %d studies were not announced as received before -drain ran out", r.Studies-r.StudiesSeen, r.Studies))
	}
	return errors.Join(errs...)
}
