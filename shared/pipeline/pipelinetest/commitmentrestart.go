package pipelinetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// ReleaseLeases ends every lease a store's workers held (pipeline.CommitmentTransaction.ReleasedLease and the
// requesting AEs'), at now, returning how many transactions it made due: a store's start whose workers are known
// gone (local mode's, under its data directory's lock).
type ReleaseLeases func(ctx context.Context, now time.Time) (int, error)

// RunCommitmentRestart checks a store's ReleaseLeases against the leases a run that died left: newStore returns an
// empty store and its ReleaseLeases. A run stopped mid-delivery (its PACS holding the report; a SIGKILL leaves the
// same) leaves its transaction and its requesting AE leased; once released, the transaction is due at once and the
// AE free, so that the next run reports it without waiting out the lease, while a transaction retried after a
// failed delivery keeps its backoff and one waiting for instances its poll: those are schedules, no worker's lease.
func RunCommitmentRestart(t *testing.T, newStore func(t *testing.T) (pipeline.CommitmentStore, ReleaseLeases)) {
	ctx := context.Background()
	s, release := newStore(t)
	f := New()
	refused := errors.New("pipelinetest: association refused")
	hung := make(chan struct{})
	f.Reporter.Hold = func(ctx context.Context, rep pipeline.CommitmentReport) error {
		if rep.AssociationID != "a-1" {
			return refused // a failed delivery: retried after its backoff
		}
		close(hung)
		<-ctx.Done() // a PACS that never answers, until the run stops
		return ctx.Err()
	}
	// A first run: the second transaction's delivery fails (backoff), the third waits for its instance (poll).
	retried := toReport(t, f, s, 2)
	waiting := Transaction(3)
	waiting.CallingAE = "WAITING"
	waiting = withRequest(t, f, s, waiting)
	if _, err := suiteWorker(f, s, T0).RunCommitments(ctx, T0); err != nil {
		t.Fatal(err)
	}
	// A second run, stopped while the PACS holds the first transaction's report.
	first := toReport(t, f, s, 1)
	killedAt := T0.Add(time.Second)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := suiteWorker(f, s, killedAt).RunCommitments(runCtx, killedAt)
		done <- err
	}()
	select {
	case <-hung:
	case err := <-done:
		stop()
		t.Fatalf("the run ended without reporting: %v", err)
	}
	stop()
	<-done // its writes fail: the transaction and the AE stay leased

	before := map[string]pipeline.CommitmentTransaction{}
	for _, id := range []string{first.ID, retried.ID, waiting.ID} {
		tx, err := s.GetCommitment(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		before[id] = tx
	}
	if tx := before[first.ID]; tx.State != pipeline.CommitmentReporting || !tx.Leased || !tx.NextAttempt.After(killedAt.Add(time.Minute)) {
		t.Fatalf("the stopped run's transaction: %s, leased %v until %v in; want reporting, leased past a minute", tx.State, tx.Leased, tx.NextAttempt.Sub(T0))
	}
	if tx := before[retried.ID]; tx.State != pipeline.CommitmentReporting || tx.Leased || tx.Attempts != 1 || !tx.NextAttempt.After(killedAt) {
		t.Fatalf("the failed delivery's transaction: %s, leased %v, %d attempts, due %v in; want reporting, not leased, 1 attempt, a backoff", tx.State, tx.Leased, tx.Attempts, tx.NextAttempt.Sub(T0))
	}
	if tx := before[waiting.ID]; tx.State != pipeline.CommitmentPending || tx.Leased || !tx.NextAttempt.After(killedAt) {
		t.Fatalf("the waiting transaction: %s, leased %v, due %v in; want pending, not leased, a poll", tx.State, tx.Leased, tx.NextAttempt.Sub(T0))
	}

	at := killedAt.Add(100 * time.Millisecond) // the restart
	if n, err := release(ctx, at); err != nil || n != 1 {
		t.Fatalf("release at the restart: %d transactions, %v; want the stopped run's one", n, err)
	}
	for id, was := range before {
		tx, err := s.GetCommitment(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want, due := was.ReleasedLease(at)
		if due != (id == first.ID) || !tx.NextAttempt.Equal(want.NextAttempt) || tx.Leased != want.Leased || tx.State != was.State || tx.Attempts != was.Attempts {
			t.Errorf("%s after the release: %s, leased %v, %d attempts, due %v in; want %s, leased %v, %d attempts, due %v in",
				id, tx.State, tx.Leased, tx.Attempts, tx.NextAttempt.Sub(T0), was.State, want.Leased, was.Attempts, want.NextAttempt.Sub(T0))
		}
	}
	if held, ok, err := s.LeaseCommitmentPeer(ctx, first.CallingAE, "another", at, at.Add(time.Minute)); err != nil || !ok {
		t.Errorf("the stopped run's AE after the release: held until %v in (%v); want it free", held.Sub(T0), err)
	} else if err := s.ReleaseCommitmentPeer(ctx, first.CallingAE, "another"); err != nil {
		t.Fatal(err)
	}
	if n, err := release(ctx, at); err != nil || n != 0 {
		t.Errorf("a second release: %d transactions, %v; want none", n, err)
	}
	// The next run reports the stopped run's transaction at once, not after its lease.
	f.Reporter.Hold = nil
	reports := len(f.Reporter.Reports())
	if n, err := suiteWorker(f, s, at).RunCommitments(ctx, at); err != nil || n != 1 || len(f.Reporter.Reports()) != reports+1 {
		t.Errorf("the run after the release: %d finished, %v, %d reports; want the stopped run's transaction reported", n, err, len(f.Reporter.Reports())-reports)
	}
}
