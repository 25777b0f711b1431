// Package lambdaio adapts the pipeline to Lambda: handlers for SQS-wrapped
// S3 notifications and scheduled events, and the environment-driven wiring
// every function's main shares.
package lambdaio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"golang.org/x/sync/semaphore"

	"github.com/dicom-ingest/dicom-ingest/shared/panicvalue"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// ObjectHandler handles SQS messages carrying S3 ObjectCreated
// notifications, calling Process once per object key. It reports failed
// messages individually (ReportBatchItemFailures), so one bad object never
// makes a batch redeliver the others.
//
// The messages of a batch are handled concurrently: each object costs a
// dozen S3 and DynamoDB round trips and almost no CPU, so one after the
// other an invocation lasted the sum of its messages' waits (billed as
// GB-seconds) and a batch's last object waited for the nine before it;
// the chain bench measured the validate function's throughput bounded by
// those waits below the load it must sustain (docs/performance.md).
type ObjectHandler struct {
	// Process handles one object; an error means "retry this message".
	// It is called from several goroutines at once.
	Process func(ctx context.Context, key string) error
	// Concurrency bounds the messages handled at once (0: the whole
	// batch, at most the event source mapping's batch size).
	Concurrency int
	// ReadBudget, when set, bounds the bytes of the objects handled at once
	// (each counted up to ReadBudget, by the size its notification gives):
	// an object's header may hold 64 MiB of values, read into memory, and
	// three such in one batch took 975 MB of a 512 MB function. An object
	// waits for its share; one alone always runs.
	ReadBudget int64
	// Bucket, when set, makes records for other buckets fail loudly.
	Bucket string
	Logger *slog.Logger
}

// s3Message is the body of an S3 notification: either records or the
// s3:TestEvent S3 sends when a notification is configured.
type s3Message struct {
	Event   string                 `json:"Event"`
	Records []events.S3EventRecord `json:"Records"`
}

// Handle implements the Lambda handler for an SQS event source.
func (h *ObjectHandler) Handle(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
	var resp events.SQSEventResponse
	log := h.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	limit := h.Concurrency
	if limit <= 0 || limit > len(ev.Records) {
		limit = len(ev.Records)
	}
	// Messages stop short of the invocation's deadline, so one that hangs
	// (a stalled read) fails alone, reported as a batch item failure,
	// instead of timing out the invocation and with it every message the
	// batch completed.
	mctx, cancel := ShortOfDeadline(ctx)
	defer cancel()
	var budget *semaphore.Weighted
	if h.ReadBudget > 0 {
		budget = semaphore.NewWeighted(h.ReadBudget)
	}
	errs := make([]error, len(ev.Records))
	slots := make(chan struct{}, max(limit, 1))
	var wg sync.WaitGroup
	for i, m := range ev.Records {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			// A panic fails this message alone. Unrecovered, it ended the
			// process: the invocation failed as a whole (Runtime.ExitError),
			// SQS redelivered every message of the batch, and each receive
			// counted towards maxReceiveCount, so the batch's other messages,
			// sharing batches with the one that panics every time, could end
			// in the dead-letter queue beside it.
			errs[i] = panicvalue.Recovered(log, PanicLog, func() error { return h.message(mctx, m, budget) }, "messageId", m.MessageId)
		})
	}
	wg.Wait()
	// Failures in the batch's order, whatever order the messages ended in.
	for i, m := range ev.Records {
		if errs[i] != nil {
			log.Error("message failed", "messageId", m.MessageId, "err", errs[i])
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.SQSBatchItemFailure{ItemIdentifier: m.MessageId})
		}
	}
	return resp, nil
}

// PanicLog is the log message of an SQS message whose handling panicked
// (pipeline.MessagePanicLog, which the stack's metric filter counts).
const PanicLog = pipeline.MessagePanicLog

// ScheduledPanicLog is the log message of a scheduled run (notify's
// announce, commitment's moving transactions on) that panicked: it fails
// as a run that returned an error does. Unrecovered, the panic reached
// the Lambda library, which logged its value (a UID, an object's key) and
// ended the process. It is pipeline.ScheduledPanicLog, which the stack's
// metric filter counts.
const ScheduledPanicLog = pipeline.ScheduledPanicLog

// ShortOfDeadline is ctx ending a reserve before the invocation's
// deadline (ctx as it is when it has none): a tenth of the time left,
// between 1 and 5 seconds. Work cut there fails in time for the handler
// to report it and return: an SQS message alone, the audit feed's batch
// (whose send, confirmed, leaves the reserve to log and return in, so a
// batch delivered is never retried for a timeout).
func ShortOfDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, deadline.Add(-reserveBeforeDeadline(time.Until(deadline))))
}

// reserveBeforeDeadline is ShortOfDeadline's reserve given the time left.
func reserveBeforeDeadline(left time.Duration) time.Duration {
	return min(max(left/10, time.Second), 5*time.Second)
}

func (h *ObjectHandler) message(ctx context.Context, m events.SQSMessage, budget *semaphore.Weighted) error {
	var msg s3Message
	if err := json.Unmarshal([]byte(m.Body), &msg); err != nil {
		return fmt.Errorf("lambdaio: message body is not an S3 notification: %w", err)
	}
	if msg.Event == "s3:TestEvent" {
		return nil
	}
	if len(msg.Records) == 0 {
		// JSON of another shape (an SNS envelope, an EventBridge event): it
		// names no object, and acknowledging it would drop one silently.
		return errors.New("lambdaio: message body is not an S3 notification: no Records")
	}
	for _, r := range msg.Records {
		if !strings.HasPrefix(r.EventName, "ObjectCreated:") {
			continue
		}
		if h.Bucket != "" && r.S3.Bucket.Name != h.Bucket {
			return fmt.Errorf("lambdaio: notification for bucket %q, want %q", r.S3.Bucket.Name, h.Bucket)
		}
		// Keys in S3 notifications are URL-encoded (a space is '+').
		key, err := url.QueryUnescape(r.S3.Object.Key)
		if err != nil {
			return fmt.Errorf("lambdaio: object key: %w", err)
		}
		if err := h.process(ctx, key, r.S3.Object.Size, budget); err != nil {
			return err
		}
	}
	return nil
}

// process calls Process for one object within the read budget, released
// however Process ends (a panic included, which panicvalue.Recovered
// turns into the message's failure).
func (h *ObjectHandler) process(ctx context.Context, key string, size int64, budget *semaphore.Weighted) error {
	if budget == nil {
		return h.Process(ctx, key)
	}
	share := min(max(size, 1), h.ReadBudget)
	if err := budget.Acquire(ctx, share); err != nil {
		return fmt.Errorf("lambdaio: wait for memory to read the object: %w", err)
	}
	defer budget.Release(share)
	return h.Process(ctx, key)
}

// ScheduleHandler runs Tick on each scheduled invocation.
type ScheduleHandler struct {
	Tick   func(ctx context.Context, now time.Time) (int, error)
	Now    func() time.Time
	Logger *slog.Logger
}

// Handle implements the Lambda handler for an EventBridge schedule.
func (h *ScheduleHandler) Handle(ctx context.Context, _ json.RawMessage) (map[string]int, error) {
	now := time.Now()
	if h.Now != nil {
		now = h.Now()
	}
	var n int
	err := panicvalue.Recovered(h.Logger, ScheduledPanicLog, func() (err error) {
		n, err = h.Tick(ctx, now)
		return err
	})
	if h.Logger != nil {
		if err != nil {
			h.Logger.Error("stable studies not all announced", "count", n, "err", err)
		} else {
			h.Logger.Info("announced stable studies", "count", n)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("lambdaio: announce: %w", err)
	}
	return map[string]int{"announced": n}, nil
}

// CommitmentHandler is the commitment function's handler. It is invoked by
// SQS with S3 notifications of requests under commitment/requests/ (each
// registered through Requests), and every minute by the schedule. Either
// way it then moves due transactions on (Run) for as long as some are
// pending (Pending) within the invocation, every Poll: a request waiting
// for instances still being indexed is reported seconds after they are,
// not a minute later. It starts no run, the first included, in the
// invocation's last Margin.
type CommitmentHandler struct {
	Requests *ObjectHandler
	Run      func(ctx context.Context, now time.Time) (int, error)
	// Pending reports whether a transaction not done is due before t.
	Pending func(ctx context.Context, before time.Time) (bool, error)
	Poll    time.Duration // default 2s
	Margin  time.Duration // default 10s
	Logger  *slog.Logger
}

// Handle implements the Lambda handler for both triggers.
func (h *CommitmentHandler) Handle(ctx context.Context, raw json.RawMessage) (events.SQSEventResponse, error) {
	var resp events.SQSEventResponse
	var probe struct {
		Records []struct {
			EventSource string `json:"eventSource"`
		} `json:"Records"`
	}
	if err := json.Unmarshal(raw, &probe); err == nil && len(probe.Records) > 0 && probe.Records[0].EventSource == "aws:sqs" {
		var ev events.SQSEvent
		if err := json.Unmarshal(raw, &ev); err != nil {
			return resp, fmt.Errorf("lambdaio: SQS event: %w", err)
		}
		if resp, err = h.Requests.Handle(ctx, ev); err != nil {
			return resp, err
		}
		// The batch's requests are registered, or failed each on its own:
		// a transaction that cannot be moved on is the schedule's to retry
		// (its failed runs reach the schedule's dead-letter queue). Failing
		// the invocation would return every message of the batch to the
		// queue, and with a transaction that keeps failing send requests
		// registered long since to the requests' dead-letter queue.
		_ = h.drive(ctx) // logged
		return resp, nil
	}
	return resp, h.drive(ctx)
}

// drive runs due transactions until none is pending within the time left,
// a panic failing it as an error does.
func (h *CommitmentHandler) drive(ctx context.Context) error {
	return panicvalue.Recovered(h.Logger, ScheduledPanicLog, func() error { return h.moveOn(ctx) })
}

// moveOn is drive's loop.
func (h *CommitmentHandler) moveOn(ctx context.Context) error {
	poll, margin := h.Poll, h.Margin
	if poll <= 0 {
		poll = 2 * time.Second
	}
	if margin <= 0 {
		margin = 10 * time.Second
	}
	end := time.Now().Add(50 * time.Second)
	if d, ok := ctx.Deadline(); ok {
		end = d.Add(-margin)
	}
	finished := 0
	fail := func(err error) error {
		err = fmt.Errorf("lambdaio: storage commitment: %w", err)
		if h.Logger != nil {
			h.Logger.Error("storage commitment transactions not moved on", "finished", finished, "err", err)
		}
		return err
	}
	// The one rule for every run, the first (after a batch of requests,
	// however long it took) included: none starts in the invocation's last
	// margin, which leaves a run's deliveries what the margin has beyond
	// pipeline.CommitmentWriteMargin. A transaction left is the next
	// invocation's, the schedule's within a minute.
	starts := func(at time.Time) bool { return at.Before(end) }
	for starts(time.Now()) {
		n, err := h.Run(ctx, time.Now())
		finished += n
		if err != nil {
			return fail(err)
		}
		if !starts(time.Now().Add(poll)) {
			break
		}
		pending, err := h.Pending(ctx, end)
		if err != nil {
			return fail(err)
		}
		if !pending {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
	if h.Logger != nil {
		h.Logger.Info("storage commitment transactions finished", "count", finished)
	}
	return nil
}
