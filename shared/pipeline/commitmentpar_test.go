package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/panicvalue"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// heldReports holds the reports to the AEs that hang until released (or the report's context ends, as a real
// Reporter's does), and counts the reports in flight, by AE and in all.
type heldReports struct {
	mu       sync.Mutex
	hung     map[string]bool
	release  chan struct{}
	inFlight map[string]int
	most     map[string]int // the most in flight at once, by AE
	all      int            // in flight, every AE
	mostAll  int
	// firstOnly: only the first report to a hung AE hangs, the next ones answered at once (a second worker's, which
	// the test runs on its own goroutine).
	firstOnly bool
	seen      map[string]int
}

func holdReports(c *commitmentFixture, hung ...string) *heldReports {
	h := &heldReports{hung: map[string]bool{}, release: make(chan struct{}), inFlight: map[string]int{}, most: map[string]int{}, seen: map[string]int{}}
	for _, ae := range hung {
		h.hung[ae] = true
	}
	c.t.Cleanup(h.free)
	c.f.Reporter.Hold = h.hold
	return h
}

func (h *heldReports) hold(ctx context.Context, rep pipeline.CommitmentReport) error {
	h.mu.Lock()
	h.inFlight[rep.CallingAE]++
	h.all++
	h.most[rep.CallingAE] = max(h.most[rep.CallingAE], h.inFlight[rep.CallingAE])
	h.mostAll = max(h.mostAll, h.all)
	h.seen[rep.CallingAE]++
	hung := h.hung[rep.CallingAE] && (!h.firstOnly || h.seen[rep.CallingAE] == 1)
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.inFlight[rep.CallingAE]--
		h.all--
		h.mu.Unlock()
	}()
	if !hung {
		return nil
	}
	select {
	case <-h.release:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("no answer from the PACS: %w", ctx.Err())
	}
}

// free lets the hung reports go on.
func (h *heldReports) free() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.release:
	default:
		close(h.release)
	}
}

func (h *heldReports) inFlightAll() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.all
}

// reportsTo are the associations of the reports attempted to ae, in order.
func (c *commitmentFixture) reportsTo(ae string) []string {
	var out []string
	for _, r := range c.reports() {
		if r.CallingAE == ae {
			out = append(out, r.AssociationID)
		}
	}
	return out
}

// failDelivery runs the due transactions now, their deliveries refused (the PACS's port closed).
func (c *commitmentFixture) failDelivery() {
	c.t.Helper()
	c.f.Reporter.Err = errors.New("connection refused")
	c.at(0)
	c.f.Reporter.Err = nil
}

// runInBackground runs the due transactions on another goroutine; the channel has the outcome.
func runInBackground(ctx context.Context, p *pipeline.Pipeline, now time.Time) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := p.RunCommitments(ctx, now)
		done <- err
	}()
	return done
}

// TestCommitmentHungPACSHoldsOnlyItsOwn: a run delivers to each requesting AE apart. While the reports to a PACS
// that does not answer wait, another AE's is delivered; the hung PACS's reports go one at a time, in the order they
// fell due (found by review: the run delivered one transaction after another, so that each of a hung PACS's due
// reports held every other AE's for its connect, answers and ARTIM, some 2 minutes apiece).
func TestCommitmentHungPACSHoldsOnlyItsOwn(t *testing.T) {
	c := newCommitmentFixture(t)
	h := holdReports(c, "HUNG")
	c.store(sop1)
	var hungAssocs []string
	for i := range 3 {
		c.putFrom("HUNG", fmt.Sprintf("%s.%d", txnUID, i), ctRef(sop1))
		hungAssocs = append(hungAssocs, fmt.Sprint("abcd1234-", c.n)) // writeFrom's association
		c.now = c.now.Add(time.Second)                                // due in this order, before the other AE's
	}
	c.putFrom("PACS", txnUID+".9", ctRef(sop1))
	done := runInBackground(context.Background(), c.p, c.now)
	testenv.EventuallySaw(t, "the healthy AE's report while the hung PACS's wait", func() (bool, string) {
		return len(c.reportsTo("PACS")) == 1, fmt.Sprint(c.reports())
	})
	if got := c.reportsTo("HUNG"); len(got) != 1 {
		t.Errorf("reports to the hung PACS under way: %v, want its first alone", got)
	}
	h.free()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := c.reportsTo("HUNG"); !slices.Equal(got, hungAssocs) {
		t.Errorf("reports to the hung PACS %v, want %v (in the order they fell due)", got, hungAssocs)
	}
	if h.most["HUNG"] != 1 {
		t.Errorf("%d reports to the hung PACS at once, want 1", h.most["HUNG"])
	}
}

// TestCommitmentDeliveriesBounded: a run delivers to at most CommitmentReportParallel AEs at once.
func TestCommitmentDeliveriesBounded(t *testing.T) {
	c := newCommitmentFixture(t)
	var aes []string
	for i := range pipeline.CommitmentReportParallel + 3 {
		aes = append(aes, fmt.Sprintf("PACS%02d", i))
	}
	h := holdReports(c, aes...)
	c.store(sop1)
	for i, ae := range aes {
		c.putFrom(ae, fmt.Sprintf("%s.%d", txnUID, i), ctRef(sop1))
	}
	done := runInBackground(context.Background(), c.p, c.now)
	testenv.Eventually(t, "as many deliveries at once as the cap", func() bool { return h.inFlightAll() == pipeline.CommitmentReportParallel })
	h.free()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if h.mostAll != pipeline.CommitmentReportParallel || len(c.reports()) != len(aes) {
		t.Errorf("%d deliveries at once (want %d), %d in all (want %d)", h.mostAll, pipeline.CommitmentReportParallel, len(c.reports()), len(aes))
	}
}

// TestCommitmentReportedOnceWhileAPACSHangs: while a worker's report waits on a hung PACS, a second worker (another
// invocation of the function, a second local run) running at once takes nothing, neither at the same moment (the
// evaluation handed a transaction to its report due at once, unleased), nor past the 2-minute lease the worker took it
// for, up to the lease (CommitmentLease), which outlasts the longest report the Reporter makes (found by review: a
// report held by a hung PACS for its connect, answers and ARTIM outlasted the 2-minute lease, and a second worker
// reported the transaction again).
func TestCommitmentReportedOnceWhileAPACSHangs(t *testing.T) {
	for _, tt := range []struct {
		name     string
		retrying bool // the transaction is reporting, its first delivery failed; else pending, evaluated by the run
	}{{"evaluated and reported by one run", false}, {"a retry", true}} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCommitmentFixture(t)
			c.f.Reporter.Bound = 5 * time.Minute // a Reporter whose deadlines come to 5 minutes
			c.store(sop1)
			c.put(txnUID, ctRef(sop1))
			if tt.retrying {
				c.failDelivery()
				c.now = c.now.Add(pipeline.CommitmentReportFirstRetry)
			}
			h := holdReports(c, "PACS")
			h.firstOnly = true
			before := len(c.reports())
			start := c.now
			done := runInBackground(context.Background(), c.p, start)
			testenv.Eventually(t, "the report under way", func() bool { return len(c.reports()) == before+1 })
			for _, d := range []time.Duration{0, 2*time.Minute + time.Second, pipeline.CommitmentLease(c.f.Reporter) - time.Second} {
				other := c.f.Pipeline()
				other.Now = func() time.Time { return start.Add(d) }
				n, err := other.RunCommitments(context.Background(), start.Add(d))
				if err != nil || n != 0 {
					t.Errorf("second worker %v in: %d finished, %v", d, n, err)
				}
				if got := len(c.reports()); got != before+1 {
					t.Errorf("second worker %v in: %d reports, want the first worker's alone", d, got-before)
				}
			}
			h.free()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			tx, err := c.f.Commitments.GetCommitment(context.Background(), pipeline.CommitmentID(txnUID))
			if err != nil || tx.State != pipeline.CommitmentReported {
				t.Errorf("transaction %s, %v; want reported", tx.State, err)
			}
		})
	}
}

// TestCommitmentDeliveryHeldToItsBound: a report the PACS never answers ends at the Reporter's bound (MaxReport),
// the pipeline cancelling it, and is a failed attempt, retried after the backoff; a second worker running meanwhile
// takes nothing. Before, the pipeline waited as long as the Reporter did, which nothing bounded as a whole.
func TestCommitmentDeliveryHeldToItsBound(t *testing.T) {
	c := newCommitmentFixture(t)
	c.now = time.Now()
	c.p.Now = time.Now
	c.f.Reporter.Bound = 200 * time.Millisecond
	c.store(sop1)
	c.put(txnUID, ctRef(sop1))
	holdReports(c, "PACS").firstOnly = true
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := runInBackground(ctx, c.p, time.Now())
	testenv.Eventually(t, "the report under way", func() bool { return len(c.reports()) == 1 })
	other := c.f.Pipeline()
	var err error
	testenv.Eventually(t, "the report held to its bound", func() bool {
		select {
		case err = <-done:
			return true
		default:
		}
		if _, oerr := other.RunCommitments(context.Background(), time.Now()); oerr != nil {
			t.Errorf("second worker: %v", oerr)
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(c.reports()); n != 1 {
		t.Errorf("%d reports, want 1", n)
	}
	tx, err := c.f.Commitments.GetCommitment(context.Background(), pipeline.CommitmentID(txnUID))
	if err != nil {
		t.Fatal(err)
	}
	if tx.State != pipeline.CommitmentReporting || tx.Attempts != 1 || tx.LastError == "" {
		t.Errorf("after the hung report: %s, %d attempts, last error %q; want reporting, 1 attempt, why", tx.State, tx.Attempts, tx.LastError)
	}
}

// transactionToReport is a fixture with txnUID to report; pastDue: after a failed attempt, its report deadline
// passed.
func transactionToReport(t *testing.T, pastDue bool) *commitmentFixture {
	c := newCommitmentFixture(t)
	c.store(sop1)
	c.put(txnUID, ctRef(sop1))
	if pastDue {
		c.failDelivery()
		c.now = c.now.Add(24 * time.Hour)
	}
	return c
}

// runLeaving runs the due transactions in a run whose context leaves left past CommitmentWriteMargin, and returns
// the transaction txnUID as stored then.
func (c *commitmentFixture) runLeaving(left time.Duration) pipeline.CommitmentTransaction {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pipeline.CommitmentWriteMargin+left)
	defer cancel()
	if _, err := c.p.RunCommitments(ctx, c.now); err != nil {
		c.t.Errorf("run: %v", err)
	}
	tx, err := c.f.Commitments.GetCommitment(context.Background(), pipeline.CommitmentID(txnUID))
	if err != nil {
		c.t.Fatal(err)
	}
	return tx
}

// TestCommitmentDeliveryCutByTheRun: a report to a PACS that does not answer, in a run whose context ends before the
// Reporter's bound (the commitment function's invocation, whose timeout is shorter than a delivery's bound) though
// after its least (MinReport, pipelinetest.DefaultReportLeast: the delivery is made), is cut
// CommitmentWriteMargin before that end and recorded as a failed attempt, a give-up once the report deadline is past,
// while the run can still write. Found by review: the delivery ran to the invocation's end, where no write could
// follow (Lambda ends the invocation at its timeout), so the attempt was never counted nor the report deadline
// checked: a PACS that always hangs was tried every lease for ever, never recorded undeliverable.
func TestCommitmentDeliveryCutByTheRun(t *testing.T) {
	for _, tt := range []struct {
		name        string
		pastDue     bool // the report deadline has passed at this attempt
		wantState   pipeline.CommitmentState
		wantAttempt int
	}{
		{"an attempt", false, pipeline.CommitmentReporting, 1},
		{"the last attempt: given up", true, pipeline.CommitmentUndeliverable, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each waits for its run's end
			c := transactionToReport(t, tt.pastDue)
			holdReports(c, "PACS")
			// The run's context ends well within the Reporter's bound (pipelinetest.DefaultReportBound).
			tx := c.runLeaving(300 * time.Millisecond)
			state := tx.State
			if !tx.GivenUpAt.IsZero() {
				state = pipeline.CommitmentUndeliverable // its record and event may be left to the next run
			}
			if state != tt.wantState || tx.Attempts != tt.wantAttempt || tx.LastError == "" {
				t.Errorf("after a report cut by the run's end: %s, %d attempts, last error %q; want %s, %d attempts, why",
					state, tx.Attempts, tx.LastError, tt.wantState, tt.wantAttempt)
			}
		})
	}
}

// TestCommitmentDeliveryBelowTheLeast: a run with less left than the least a delivery needs for the PACS to have had
// its chance (the Reporter's MinReport: connecting and one answer, 40 s; the commitment function's 55 s invocation
// has less after its first 15 s) still reports: a PACS that answers in that time (most do in well under a second) has
// its result at once; one that does not is cut at the run's end, which counts no attempt and gives nothing up past
// the report deadline, the PACS having had no chance, and releases the lease (due now) for the next run. Found by
// review: no delivery was made with less left, so a result decided, or a retry falling due, after an invocation's
// first 15 s waited for the next invocation, up to a minute, whatever the PACS.
func TestCommitmentDeliveryBelowTheLeast(t *testing.T) {
	for _, tt := range []struct {
		name         string
		pastDue      bool
		hung         bool // the PACS does not answer within the run
		wantState    pipeline.CommitmentState
		wantAttempts int
	}{
		{"answered in time", false, false, pipeline.CommitmentReported, 1},
		{"answered in time past the report deadline", true, false, pipeline.CommitmentReported, 2},
		{"cut: a first attempt not counted", false, true, pipeline.CommitmentReporting, 0},
		{"cut past the report deadline: not given up", true, true, pipeline.CommitmentReporting, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := transactionToReport(t, tt.pastDue)
			c.f.Reporter.Least = time.Hour
			if tt.hung {
				holdReports(c, "PACS")
			}
			reports := len(c.reports())
			tx := c.runLeaving(300 * time.Millisecond)
			if len(c.reports()) != reports+1 || tx.State != tt.wantState || tx.Attempts != tt.wantAttempts || !tx.GivenUpAt.IsZero() {
				t.Errorf("after a run with less left than a delivery needs: %d reports (want %d), %s, %d attempts, given up %v; want %s, %d attempts",
					len(c.reports())-reports, 1, tx.State, tx.Attempts, tx.GivenUpAt, tt.wantState, tt.wantAttempts)
			}
			if tt.hung && tx.NextAttempt.After(c.now) {
				t.Errorf("cut: next attempt %v, want due now (%v), for the next run", tx.NextAttempt, c.now)
			}
		})
	}
}

// TestCommitmentRunStoppedMidDelivery: a run whose context is cancelled while reports wait on PACSs that do not answer
// (local mode's drain at SIGTERM) returns once they end, cancelled with it, every AE's; it counts no attempt (the PACSs
// are not at fault) and writes nothing more, so the transactions stay leased and the run after the lease reports them.
func TestCommitmentRunStoppedMidDelivery(t *testing.T) {
	c := newCommitmentFixture(t)
	c.store(sop1)
	aes := []string{"HUNG1", "HUNG2"}
	for i, ae := range aes {
		c.putFrom(ae, fmt.Sprintf("%s.%d", txnUID, i), ctRef(sop1))
	}
	holdReports(c, aes...).firstOnly = true
	ctx, cancel := context.WithCancel(context.Background())
	done := runInBackground(ctx, c.p, c.now)
	testenv.Eventually(t, "both reports under way", func() bool { return len(c.reports()) == len(aes) })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("run stopped mid-delivery: %v, want cancelled", err)
	}
	for i := range aes {
		tx, err := c.f.Commitments.GetCommitment(context.Background(), pipeline.CommitmentID(fmt.Sprintf("%s.%d", txnUID, i)))
		if err != nil {
			t.Fatal(err)
		}
		if tx.State != pipeline.CommitmentReporting || tx.Attempts != 0 || !tx.NextAttempt.After(c.now) {
			t.Errorf("%s after the stop: %s, %d attempts, next %v; want reporting, leased, no attempt", aes[i], tx.State, tx.Attempts, tx.NextAttempt)
		}
	}
	c.at(pipeline.CommitmentLease(c.f.Reporter))
	for _, ae := range aes {
		if got := c.reportsTo(ae); len(got) != 2 {
			t.Errorf("reports to %s: %v, want the cancelled one and the next run's", ae, got)
		}
	}
}

// TestCommitmentPanicFailsItsTransactionAlone: a panic (a bug) met moving one AE's transaction on, in the AE's own
// goroutine, fails that transaction and the run, logged with its stack as a scheduled run's panic, while the other
// AEs' reports go on; it does not end the process (local mode's SCP, the function's invocation), as it did once the
// AEs were delivered to side by side: the callers' recovery (panicvalue.Recovered) runs on the run's goroutine only.
func TestCommitmentPanicFailsItsTransactionAlone(t *testing.T) {
	c := newCommitmentFixture(t)
	var logs testenv.LogBuffer
	c.p.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	c.store(sop1)
	c.putFrom("BUGGY", txnUID+".1", ctRef(sop1))
	c.putFrom("PACS", txnUID+".2", ctRef(sop1))
	c.f.Reporter.Hold = func(_ context.Context, rep pipeline.CommitmentReport) error {
		if rep.CallingAE == "BUGGY" {
			var none []string
			_ = none[len(rep.CallingAE)] // a bug: an index out of range
		}
		return nil
	}
	_, err := c.p.RunCommitments(context.Background(), c.now)
	if !errors.Is(err, panicvalue.ErrPanicked) {
		t.Errorf("run: %v, want the panic's error", err)
	}
	if got := c.reportsTo("PACS"); len(got) != 1 {
		t.Errorf("reports to the other AE: %v, want one", got)
	}
	tx, gerr := c.f.Commitments.GetCommitment(context.Background(), pipeline.CommitmentID(txnUID+".2"))
	if gerr != nil || tx.State != pipeline.CommitmentReported {
		t.Errorf("the other AE's transaction %s, %v; want reported", tx.State, gerr)
	}
	if s := logs.String(); !strings.Contains(s, pipeline.ScheduledPanicLog) || !strings.Contains(s, `"stack"`) || strings.Contains(s, txnUID) {
		t.Errorf("log %s: want %q with the stack, no UID", s, pipeline.ScheduledPanicLog)
	}
}

// TestCommitmentPanicLogIsTheCaller: a panic advancing one transaction (a bug) is logged with the caller's panic line
// (local mode's is its own, which its docs name), with run: commitment; the AWS function's, ScheduledPanicLog, by
// default.
func TestCommitmentPanicLogIsTheCaller(t *testing.T) {
	for _, tt := range []struct{ name, set, want string }{
		{"by default", "", pipeline.ScheduledPanicLog},
		{"the caller's", "local mode's panic line", "local mode's panic line"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newCommitmentFixture(t)
			var logs bytes.Buffer
			c.p.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
			c.p.CommitmentPanicLog = tt.set
			c.store(sop1)
			c.put(txnUID, ctRef(sop1))
			c.f.Reporter.Hold = func(context.Context, pipeline.CommitmentReport) error { panic("a bug") }
			if _, err := c.p.RunCommitments(context.Background(), c.now); err == nil {
				t.Error("a run whose delivery panicked succeeded")
			}
			if s := logs.String(); !strings.Contains(s, `"msg":"`+tt.want+`"`) || !strings.Contains(s, `"run":"commitment"`) {
				t.Errorf("logs %s; want %q with run: commitment", s, tt.want)
			}
		})
	}
}

// panickyIndex is an index whose lookup of one instance panics (a bug in a store adapter).
type panickyIndex struct {
	pipeline.IndexStore
	sop string
}

func (p panickyIndex) Instances(ctx context.Context, sop string) ([]pipeline.InstanceRecord, error) {
	if sop == p.sop {
		var none []string
		_ = none[len(sop)] // a bug: an index out of range
	}
	return p.IndexStore.Instances(ctx, sop)
}

// TestCommitmentLookupPanicFailsItsTransactionAlone: a panic in an instance's lookup (a bug in a store adapter), met
// on the evaluation's own goroutines (judgeAll's), fails that transaction and the run, logged once with the caller's
// line and its stack, the transaction named by association and message id, never a UID; the other AEs' transactions go
// on and the process lives. Found by review: judgeAll's goroutines recovered nothing, and the panic ended the process
// (local mode's SCP, the function's invocation), the callers' recovery holding on their own goroutines only.
func TestCommitmentLookupPanicFailsItsTransactionAlone(t *testing.T) {
	c := newCommitmentFixture(t)
	var logs testenv.LogBuffer
	c.p.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	c.store(sop1, sop2)
	c.p.Index = panickyIndex{c.p.Index, sop2}
	c.putFrom("BUGGY", txnUID+".1", ctRef(sop1), ctRef(sop2))
	c.putFrom("PACS", txnUID+".2", ctRef(sop1))
	_, err := c.p.RunCommitments(context.Background(), c.now)
	if !errors.Is(err, panicvalue.ErrPanicked) {
		t.Errorf("run: %v, want the panic's error", err)
	}
	if got := c.reportsTo("PACS"); len(got) != 1 {
		t.Errorf("reports to the other AE: %v, want one", got)
	}
	if got := c.reportsTo("BUGGY"); len(got) != 0 {
		t.Errorf("reports to the AE whose lookup panicked: %v, want none", got)
	}
	s := logs.String()
	if n := strings.Count(s, pipeline.ScheduledPanicLog); n != 1 || !strings.Contains(s, `"stack"`) || !strings.Contains(s, `"run":"commitment"`) ||
		!strings.Contains(s, `"association":"abcd1234-1"`) || strings.Contains(s, txnUID) || strings.Contains(s, sop2) {
		t.Errorf("log %s: want one %q with the stack, run: commitment and the association, no UID", s, pipeline.ScheduledPanicLog)
	}
}

// peerHeldUntil is a store whose requesting AEs are all held by another worker, their lease ending at until.
type peerHeldUntil struct {
	pipeline.CommitmentStore
	until time.Time
}

func (p peerHeldUntil) LeaseCommitmentPeer(context.Context, string, string, time.Time, time.Time) (time.Time, bool, error) {
	return p.until, false, nil
}

// TestCommitmentWaitingForTheAENeverDueBeforeNow: a transaction whose requesting AE another worker's delivery holds
// is left due no earlier than now, however old the end the store gives for that lease, and no later than that end;
// no attempt is counted. Found by review: a lease read as over (a DynamoDB lease released between the refused write
// and its read: until 0) left the transaction due in 1970, first in the due order.
func TestCommitmentWaitingForTheAENeverDueBeforeNow(t *testing.T) {
	for _, tt := range []struct {
		name  string
		until time.Duration // from now; 0 with epoch
		epoch bool
	}{
		{name: "released: until 0", epoch: true},
		{name: "ended a second ago", until: -time.Second},
		{name: "ending now", until: 0},
		{name: "ending in a second", until: time.Second},
		{name: "ending in a minute", until: time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := transactionToReport(t, false)
			until := c.now.Add(tt.until)
			if tt.epoch {
				until = time.Unix(0, 0).UTC()
			}
			c.p.Commitments = peerHeldUntil{CommitmentStore: c.p.Commitments, until: until}
			c.at(0)
			tx, err := c.f.Commitments.GetCommitment(context.Background(), pipeline.CommitmentID(txnUID))
			if err != nil {
				t.Fatal(err)
			}
			want := "due from now to the lease's end"
			if !until.After(c.now) {
				want = "due now"
			}
			if len(c.reports()) != 0 || tx.State != pipeline.CommitmentReporting || tx.Attempts != 0 || tx.NextAttempt.Before(c.now) ||
				(until.After(c.now) && tx.NextAttempt.After(until)) || (!until.After(c.now) && !tx.NextAttempt.Equal(c.now)) {
				t.Errorf("AE held until %v from now: %d reports, %s, %d attempts, due %v from now; want no report, reporting, no attempt, %s",
					until.Sub(c.now), len(c.reports()), tx.State, tx.Attempts, tx.NextAttempt.Sub(c.now), want)
			}
		})
	}
}
