package pipelinetest

// RunCommitmentStore is the conformance suite of pipeline.CommitmentStore,
// run against the fake above, the SQLite adapter and the DynamoDB adapter
// (on an emulator).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// RunCommitmentStore runs the suite; newStore returns an empty store.
func RunCommitmentStore(t *testing.T, newStore func(t *testing.T) pipeline.CommitmentStore) {
	t.Run("CreateOnce", func(t *testing.T) { testCreateOnce(t, newStore(t)) })
	t.Run("UpdateIsConditional", func(t *testing.T) { testUpdateConditional(t, newStore(t)) })
	t.Run("Due", func(t *testing.T) { testDue(t, newStore(t)) })
	t.Run("ConcurrentUpdates", func(t *testing.T) { testConcurrentUpdates(t, newStore(t)) })
	t.Run("ReportedOnceByTwoWorkers", func(t *testing.T) { testReportedOnce(t, newStore(t), 0) })
	t.Run("TakenOverOnceTheRunHasEnded", func(t *testing.T) { testReportedOnce(t, newStore(t), time.Minute) })
	t.Run("PeerLease", func(t *testing.T) { testPeerLease(t, newStore(t)) })
	t.Run("PeerLeaseRefusedUntilLater", func(t *testing.T) { testPeerLeaseRefusedUntilLater(t, newStore(t)) })
	t.Run("OneDeliveryToAnAEAcrossWorkers", func(t *testing.T) { testOneDeliveryPerAE(t, newStore(t)) })
}

// Transaction returns a pending transaction n received at T0, due then.
func Transaction(n int) pipeline.CommitmentTransaction {
	return pipeline.CommitmentTransaction{
		ID: fmt.Sprintf("tx%02d", n), TransactionUID: fmt.Sprintf("%s9.%d", suiteRoot, n),
		RequestKey:    fmt.Sprintf("commitment/requests/2026/01/15/assoc-%d.json", n),
		ContentDigest: fmt.Sprintf("digest-%d", n), CallingAE: "PACS", CalledAE: "INGEST", PeerAddr: "10.0.0.1:4000",
		AssociationID: fmt.Sprintf("a-%d", n), MessageID: uint16(n), RefCount: 3, ReceivedAt: T0,
		WaitUntil: T0.Add(5 * time.Minute), State: pipeline.CommitmentPending, NextAttempt: T0,
	}
}

func testCreateOnce(t *testing.T, s pipeline.CommitmentStore) {
	ctx := context.Background()
	if _, err := s.GetCommitment(ctx, "tx01"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("GetCommitment of nothing: %v, want ErrNotFound", err)
	}
	first := Transaction(1)
	got, created, err := s.CreateCommitment(ctx, first)
	if err != nil || !created {
		t.Fatalf("CreateCommitment = %v, %v", created, err)
	}
	first.Version = 1
	if d := cmp.Diff(first, got, cmpOpts); d != "" {
		t.Errorf("created (-want +got):\n%s", d)
	}
	again := Transaction(1)
	again.RequestKey, again.ContentDigest = "commitment/requests/other.json", "other"
	got, created, err = s.CreateCommitment(ctx, again)
	if err != nil || created {
		t.Fatalf("second CreateCommitment = %v, %v; want the first kept", created, err)
	}
	if d := cmp.Diff(first, got, cmpOpts); d != "" {
		t.Errorf("second create returned (-want +got):\n%s", d)
	}
	got, err = s.GetCommitment(ctx, "tx01")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(first, got, cmpOpts); d != "" {
		t.Errorf("stored (-want +got):\n%s", d)
	}
}

func testUpdateConditional(t *testing.T, s pipeline.CommitmentStore) {
	ctx := context.Background()
	if _, err := s.UpdateCommitment(ctx, Transaction(9)); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("update of nothing: %v, want ErrNotFound", err)
	}
	tx, _, err := s.CreateCommitment(ctx, Transaction(1))
	if err != nil {
		t.Fatal(err)
	}
	tx.State, tx.ResultKey, tx.Committed, tx.Failed = pipeline.CommitmentReporting, "commitment/results/tx01.json", 2, 1
	tx.Studies, tx.ReportDeadline, tx.Attempts, tx.LastError = []string{studyUID(1), studyUID(2)}, T0.Add(time.Hour), 2, "peer unreachable"
	stale := tx
	updated, err := s.UpdateCommitment(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	tx.Version = 2
	if d := cmp.Diff(tx, updated, cmpOpts); d != "" {
		t.Errorf("updated (-want +got):\n%s", d)
	}
	if got, _ := s.GetCommitment(ctx, tx.ID); !cmp.Equal(tx, got, cmpOpts) {
		t.Errorf("stored %+v, want %+v", got, tx)
	}
	stale.State = pipeline.CommitmentUndeliverable
	if _, err := s.UpdateCommitment(ctx, stale); !errors.Is(err, pipeline.ErrConditionFailed) {
		t.Fatalf("stale update: %v, want ErrConditionFailed", err)
	}
	// What a run records before the audit record and the event, still in reporting: a delivery (ReportedAt) or a
	// give-up (GivenUpAt), each kept for the run after.
	for _, mark := range []func(*pipeline.CommitmentTransaction){
		func(tx *pipeline.CommitmentTransaction) {
			tx.GivenUpAt, tx.LastError = T0.Add(time.Hour), "peer unreachable"
		},
		func(tx *pipeline.CommitmentTransaction) {
			tx.GivenUpAt, tx.ReportedAt, tx.SameAssociation, tx.LastError = time.Time{}, T0.Add(time.Minute), true, ""
		},
	} {
		mark(&tx)
		updated, err := s.UpdateCommitment(ctx, tx)
		if err != nil {
			t.Fatal(err)
		}
		tx.Version++
		if d := cmp.Diff(tx, updated, cmpOpts); d != "" {
			t.Errorf("updated (-want +got):\n%s", d)
		}
		if got, err := s.GetCommitment(ctx, tx.ID); err != nil || !cmp.Equal(tx, got, cmpOpts) {
			t.Errorf("stored %+v (%v), want %+v", got, err, tx)
		}
	}
	tx.State, tx.Studies = pipeline.CommitmentReported, nil
	if got, err := s.UpdateCommitment(ctx, tx); err != nil || got.Version != 5 || got.State != pipeline.CommitmentReported || len(got.Studies) != 0 {
		t.Fatalf("update = %+v, %v", got, err)
	}
}

func testDue(t *testing.T, s pipeline.CommitmentStore) {
	ctx := context.Background()
	mk := func(n int, state pipeline.CommitmentState, next time.Duration) {
		t.Helper()
		tx, _, err := s.CreateCommitment(ctx, Transaction(n))
		if err != nil {
			t.Fatal(err)
		}
		tx.State, tx.NextAttempt = state, T0.Add(next)
		if _, err := s.UpdateCommitment(ctx, tx); err != nil {
			t.Fatal(err)
		}
	}
	mk(1, pipeline.CommitmentPending, 2*time.Second)
	mk(2, pipeline.CommitmentReporting, time.Second)
	mk(3, pipeline.CommitmentPending, time.Minute) // not yet
	mk(4, pipeline.CommitmentReported, 0)          // done
	mk(5, pipeline.CommitmentUndeliverable, 0)     // done
	mk(6, pipeline.CommitmentPending, time.Second)
	ids := func(now time.Time, limit int) []string {
		t.Helper()
		due, err := s.DueCommitments(ctx, now, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, tx := range due {
			out = append(out, tx.ID)
		}
		return out
	}
	if d := cmp.Diff([]string{"tx02", "tx06", "tx01"}, ids(T0.Add(2*time.Second), 10), cmpOpts); d != "" {
		t.Errorf("due (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"tx02", "tx06"}, ids(T0.Add(2*time.Second), 2), cmpOpts); d != "" {
		t.Errorf("due with limit 2 (-want +got):\n%s", d)
	}
	// A limit above pipeline.MaxPage is MaxPage, not passed on as is
	// (DynamoDB's Limit, an int32, took math.MaxInt as -1).
	for _, limit := range []int{math.MaxInt32 + 1, math.MaxInt} {
		if d := cmp.Diff([]string{"tx02", "tx06", "tx01"}, ids(T0.Add(2*time.Second), limit), cmpOpts); d != "" {
			t.Errorf("due with limit %d (-want +got):\n%s", limit, d)
		}
	}
	if d := cmp.Diff([]string{"tx02", "tx06", "tx01", "tx03"}, ids(T0.Add(time.Hour), 10), cmpOpts); d != "" {
		t.Errorf("due an hour later (-want +got):\n%s", d)
	}
	if got := ids(T0, 10); len(got) != 0 {
		t.Errorf("due at T0: %v, want none", got)
	}
}

func testConcurrentUpdates(t *testing.T, s pipeline.CommitmentStore) {
	ctx := context.Background()
	tx, _, err := s.CreateCommitment(ctx, Transaction(1))
	if err != nil {
		t.Fatal(err)
	}
	var wins, losses atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			mine := tx
			mine.Attempts = i + 1
			switch _, err := s.UpdateCommitment(ctx, mine); {
			case err == nil:
				wins.Add(1)
			case errors.Is(err, pipeline.ErrConditionFailed):
				losses.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || losses.Load() != 7 {
		t.Errorf("%d updates won and %d lost, want 1 and 7", wins.Load(), losses.Load())
	}
}

// toReport creates Transaction(n) in s, with its request in f's objects: one instance, never sent, which fails 0112 at
// its first evaluation, so that a run reports it at once.
func toReport(t *testing.T, f *Fakes, s pipeline.CommitmentStore, n int) pipeline.CommitmentTransaction {
	t.Helper()
	tx := Transaction(n)
	tx.WaitUntil = T0
	return withRequest(t, f, s, tx)
}

// withRequest creates tx in s, with its request in f's objects: one instance, never sent, which fails 0112 once tx's
// WaitUntil has come.
func withRequest(t *testing.T, f *Fakes, s pipeline.CommitmentStore, tx pipeline.CommitmentTransaction) pipeline.CommitmentTransaction {
	t.Helper()
	req := pipeline.CommitmentRequest{SchemaVersion: 1, TransactionUID: tx.TransactionUID, CallingAE: tx.CallingAE,
		CalledAE: tx.CalledAE, AssociationID: tx.AssociationID, MessageID: tx.MessageID, ReceivedAt: T0,
		Refs: []commitment.Ref{{SOPClassUID: CTStorage, SOPInstanceUID: suiteRoot + "9.99"}}}
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	f.Objects.Add(tx.RequestKey, body, nil)
	stored, _, err := s.CreateCommitment(context.Background(), tx)
	if err != nil {
		t.Fatal(err)
	}
	return stored
}

// holdFirstReport holds the first report f's Reporter makes (a hung PACS) until release is closed or its context
// ends, entered closed once it is under way; the later ones (a second worker's) are answered at once. calls counts
// them all.
func holdFirstReport(f *Fakes) (entered, release chan struct{}, calls *atomic.Int32) {
	entered, release, calls = make(chan struct{}), make(chan struct{}), new(atomic.Int32)
	f.Reporter.Hold = func(ctx context.Context, _ pipeline.CommitmentReport) error {
		if calls.Add(1) > 1 {
			return nil
		}
		close(entered)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return entered, release, calls
}

// suiteWorker is a worker of f's on the store s whose clock stands at now.
func suiteWorker(f *Fakes, s pipeline.CommitmentStore, now time.Time) *pipeline.Pipeline {
	p := f.Pipeline()
	p.Commitments, p.Now = s, func() time.Time { return now }
	return p
}

// testPeerLease: a requesting AE is leased to one holder at a time, until its lease ends or its holder releases it;
// its holder takes it again (moving its end); AE titles are apart, compared exactly; of holders racing for it, one
// has it.
func testPeerLease(t *testing.T, s pipeline.CommitmentStore) {
	ctx := context.Background()
	type step struct {
		name       string
		ae, holder string
		now, until time.Duration // from T0
		wantOK     bool
		wantHeld   time.Duration // from T0: the lease in force
		releaseBy  string        // instead of leasing: holder releases ae
	}
	for _, st := range []step{
		{name: "free: taken", ae: "PACS", holder: "tx01", now: 0, until: time.Minute, wantOK: true, wantHeld: time.Minute},
		{name: "held by another", ae: "PACS", holder: "tx02", now: 30 * time.Second, until: 2 * time.Minute, wantHeld: time.Minute},
		{name: "another AE apart", ae: "OTHER", holder: "tx02", now: 30 * time.Second, until: 2 * time.Minute, wantOK: true, wantHeld: 2 * time.Minute},
		{name: "titles compared exactly", ae: "PACS ", holder: "tx02", now: 30 * time.Second, until: 2 * time.Minute, wantOK: true, wantHeld: 2 * time.Minute},
		{name: "its holder again: moved on", ae: "PACS", holder: "tx01", now: 40 * time.Second, until: 3 * time.Minute, wantOK: true, wantHeld: 3 * time.Minute},
		{name: "still held by it", ae: "PACS", holder: "tx02", now: 2 * time.Minute, until: 4 * time.Minute, wantHeld: 3 * time.Minute},
		{name: "over at its end: taken", ae: "PACS", holder: "tx02", now: 3 * time.Minute, until: 4 * time.Minute, wantOK: true, wantHeld: 4 * time.Minute},
		{name: "released by another: left", ae: "PACS", releaseBy: "tx01"},
		{name: "still held after another's release", ae: "PACS", holder: "tx03", now: 3 * time.Minute, until: 5 * time.Minute, wantHeld: 4 * time.Minute},
		{name: "released by its holder", ae: "PACS", releaseBy: "tx02"},
		{name: "free again: taken before its end", ae: "PACS", holder: "tx03", now: 3 * time.Minute, until: 5 * time.Minute, wantOK: true, wantHeld: 5 * time.Minute},
		{name: "nothing to release", ae: "NONE", releaseBy: "tx01"},
	} {
		if st.releaseBy != "" {
			if err := s.ReleaseCommitmentPeer(ctx, st.ae, st.releaseBy); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			continue
		}
		held, ok, err := s.LeaseCommitmentPeer(ctx, st.ae, st.holder, T0.Add(st.now), T0.Add(st.until))
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if ok != st.wantOK || !held.Equal(T0.Add(st.wantHeld)) {
			t.Errorf("%s: %v, held until %v in; want %v, %v", st.name, ok, held.Sub(T0), st.wantOK, st.wantHeld)
		}
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			held, ok, err := s.LeaseCommitmentPeer(ctx, "RACED", fmt.Sprintf("tx%02d", i), T0, T0.Add(time.Minute))
			switch {
			case err != nil:
				t.Error(err)
			case ok:
				wins.Add(1)
			case !held.Equal(T0.Add(time.Minute)):
				t.Errorf("a racing holder refused, held until %v in; want the winner's end, 1m0s", held.Sub(T0))
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d of 8 racing holders have the AE, want 1", wins.Load())
	}
}

// testPeerLeaseRefusedUntilLater: "not taken" always comes with an end after now, however the lease changes hands
// while it is asked for: while one holder takes the AE and releases it over and over (deliveries one after another),
// others ask for it, releasing it at once when they have it. Found by review: the DynamoDB adapter read the lease in
// force after its conditional write was refused, and a holder releasing it in between made that read a lease ended
// (until 0: 1970), which deliverCommitment took for the end to wait for, the transaction left due in 1970.
func testPeerLeaseRefusedUntilLater(t *testing.T, s pipeline.CommitmentStore) {
	ctx := context.Background()
	const ae, rounds = "CYCLED", 40
	ask := func(holder string) (taken bool) {
		held, ok, err := s.LeaseCommitmentPeer(ctx, ae, holder, T0, T0.Add(time.Minute))
		switch {
		case err != nil:
			t.Errorf("%s: %v", holder, err)
		case ok:
			if err := s.ReleaseCommitmentPeer(ctx, ae, holder); err != nil {
				t.Errorf("%s: release: %v", holder, err)
			}
		case !held.After(T0):
			t.Errorf("%s refused, the lease in force ending %v in; want an end after now", holder, held.Sub(T0))
		}
		return ok
	}
	var wg sync.WaitGroup
	var asked atomic.Int32
	wg.Go(func() {
		for range rounds * 4 {
			if asked.Load() == 3 {
				return
			}
			ask("cycler")
		}
	})
	for i := range 3 {
		wg.Go(func() {
			defer asked.Add(1)
			for range rounds {
				ask(fmt.Sprintf("asker%d", i))
			}
		})
	}
	wg.Wait()
	// Released, the AE is taken at once, before the end the lease had.
	if _, ok, err := s.LeaseCommitmentPeer(ctx, ae, "last", T0, T0.Add(time.Minute)); err != nil || !ok {
		t.Errorf("the AE released by every holder: taken %v, %v; want taken", ok, err)
	}
}

// testOneDeliveryPerAE: two workers run at once, each with a transaction of the same requesting AE (two invocations of
// the function, each with a request of its own): while the first worker's delivery waits on the PACS, the second
// opens no association to it, counts no attempt and leaves its transaction due shortly; once the first is delivered,
// the second is. Found by review: a run kept one association at a time to an AE within its process only, and a PACS
// that takes one association from us at a time refused the second worker's.
func testOneDeliveryPerAE(t *testing.T, s pipeline.CommitmentStore) {
	ctx := context.Background()
	f := New()
	first, second := toReport(t, f, s, 1), toReport(t, f, s, 2)
	entered, release, calls := holdFirstReport(f)
	worker := func(now time.Time) *pipeline.Pipeline { return suiteWorker(f, s, now) }
	// The first worker finds the first transaction alone (the second is not yet due).
	next := second
	next.NextAttempt = T0.Add(time.Second)
	if _, err := s.UpdateCommitment(ctx, next); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := worker(T0).RunCommitments(ctx, T0)
		done <- err
	}()
	select {
	case <-entered:
	case err := <-done:
		close(release)
		t.Fatalf("the first worker ended without reporting: %v", err)
	}
	at := T0.Add(time.Second)
	if n, err := worker(at).RunCommitments(ctx, at); err != nil || n != 0 || calls.Load() != 1 {
		t.Errorf("second worker during the first's delivery: %d finished, %v; %d reports, want the first worker's alone", n, err, calls.Load())
	}
	waiting, err := s.GetCommitment(ctx, second.ID)
	if err != nil {
		t.Fatal(err)
	}
	if waiting.State != pipeline.CommitmentReporting || waiting.Attempts != 0 || !waiting.NextAttempt.After(at) {
		t.Errorf("second transaction while the AE is held: %s, %d attempts, next %v; want reporting, no attempt, due later", waiting.State, waiting.Attempts, waiting.NextAttempt)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("first worker: %v", err)
	}
	later := waiting.NextAttempt
	if n, err := worker(later).RunCommitments(ctx, later); err != nil || n != 1 || calls.Load() != 2 {
		t.Errorf("second worker once the first was delivered: %d finished, %v; %d reports, want the second delivered", n, err, calls.Load())
	}
	for _, id := range []string{first.ID, second.ID} {
		if got, err := s.GetCommitment(ctx, id); err != nil || got.State != pipeline.CommitmentReported || got.Attempts != 1 {
			t.Errorf("%s: %s after %d attempts (%v), want reported after 1", id, got.State, got.Attempts, err)
		}
	}
}

// testReportedOnce: two workers run the due transactions at once on the store, the first holding its report (a hung
// PACS, up to the Reporter's bound): the second takes nothing, at the same moment (the evaluation hands the
// transaction to its report leased, not due at once), past 2 minutes (the lease was 2 minutes, shorter than a report
// held by a hung PACS), nor before the lease (pipeline.CommitmentLease) ends. The PACS gets one report.
//
// With runFor, the first worker's run has a deadline runFor away (the commitment function's invocation, which Lambda
// ends at its timeout, sooner than the Reporter's bound): its lease ends pipeline.CommitmentLeaseSkew past that
// deadline, the second worker taking nothing before it, and the transaction over once it has (the first worker
// having died at its deadline, its delivery never cut: a crashed invocation), reported again. Before, a crashed
// invocation's transaction waited for a delivery's whole bound and a minute (162 s, or 192 s with a tls:// peer).
func testReportedOnce(t *testing.T, s pipeline.CommitmentStore, runFor time.Duration) {
	ctx := context.Background()
	f := New()
	tx := toReport(t, f, s, 1)
	f.Reporter.Bound = 5 * time.Minute // a Reporter whose deadlines come to 5 minutes
	entered, release, calls := holdFirstReport(f)
	worker := func(now time.Time) *pipeline.Pipeline { return suiteWorker(f, s, now) }
	type outcome struct {
		n   int
		err error
	}
	done := make(chan outcome, 1)
	runCtx, stop := ctx, context.CancelFunc(func() {})
	if runFor > 0 {
		runCtx, stop = context.WithTimeout(ctx, runFor)
	}
	defer stop()
	go func() {
		n, err := worker(T0).RunCommitments(runCtx, T0)
		done <- outcome{n, err}
	}()
	select {
	case <-entered:
	case o := <-done:
		close(release)
		t.Fatalf("the first worker ended without reporting: %d, %v", o.n, o.err)
	}
	probes := []time.Duration{0, 2*time.Minute + time.Second, pipeline.CommitmentLease(f.Reporter) - time.Second}
	if runFor > 0 {
		probes = []time.Duration{0, runFor - time.Second, runFor + pipeline.CommitmentLeaseSkew/2}
	}
	for _, d := range probes {
		n, err := worker(T0.Add(d)).RunCommitments(ctx, T0.Add(d))
		if err != nil || n != 0 || calls.Load() != 1 {
			t.Errorf("second worker %v in: %d finished, %v; %d reports, want the first worker's alone", d, n, err, calls.Load())
		}
	}
	if runFor > 0 {
		leased, err := s.GetCommitment(ctx, tx.ID)
		if err != nil {
			t.Fatal(err)
		}
		if end := T0.Add(runFor + pipeline.CommitmentLeaseSkew); leased.NextAttempt.After(end) {
			t.Errorf("leased until %v in, want at most %v (the run's deadline and the skew)", leased.NextAttempt.Sub(T0), end.Sub(T0))
		}
		// The first worker died at its deadline: the next run after its lease takes the transaction over.
		at := leased.NextAttempt
		if n, err := worker(at).RunCommitments(ctx, at); err != nil || n != 1 || calls.Load() != 2 {
			t.Errorf("second worker once the lease has ended: %d finished, %v; %d reports, want it reported again", n, err, calls.Load())
		}
		stop()
		close(release)
		<-done // its writes fail: the transaction is the second worker's
		return
	}
	close(release)
	if o := <-done; o.err != nil || o.n != 1 {
		t.Errorf("first worker: %d finished, %v", o.n, o.err)
	}
	got, err := s.GetCommitment(ctx, tx.ID)
	if err != nil || got.State != pipeline.CommitmentReported || got.Attempts != 1 {
		t.Errorf("transaction %s after %d attempts (%v), want reported after 1", got.State, got.Attempts, err)
	}
	if n := len(f.Reporter.Reports()); n != 1 {
		t.Errorf("%d reports, want 1", n)
	}
}
