package scptest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// Churn opens and releases associations on addr, as client, from 4 loops
// until the returned stop is called: each gives the SCP an accepted and a
// released record to write. A refused association (congestion while
// records queue, a killed SCP) is retried after a millisecond.
func Churn(addr string, client dicomnet.ClientConfig) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				as, err := dicomnet.Dial(ctx, addr, client)
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				if err := as.Release(context.Background()); err != nil {
					return
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// Kill ends scp-task with SIGKILL, as an out-of-memory kill, a lost host or
// the stop timeout does, and waits until the process is reaped: its run
// marker's lock is free then.
func (s *SCP) Kill(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-s.exited
}

// ExpectReportedByRunning checks that survivor, running, reported the
// killed run dead (killed at killed) within limit: its log line
// (associationaudit.UncleanStopLog) and counter, once each, and in the
// trail (records, read again at each call) an unclean-stop-found record of
// survivor's run (instance survivorRun) naming it, the only record naming
// it, with no start of another run in between. It returns the record.
func ExpectReportedByRunning(t testing.TB, survivor *SCP, survivorRun, dead string, killed time.Time, limit time.Duration,
	records func() []associationaudit.Record) associationaudit.Record {
	t.Helper()
	logged := func() int {
		n := 0
		for _, e := range survivor.LogEntries() {
			if e["msg"] == associationaudit.UncleanStopLog && e["previous_run"] == dead {
				n++
			}
		}
		return n
	}
	left := leftOf(killed, limit, time.Now())
	testenv.EventuallySawWithin(t, left, fmt.Sprintf("the running scp-task to report the killed run %s (within %s of the kill, %s of it left when the wait began)", dead, limit, left),
		func() (bool, string) { return logged() != 0, survivor.Logs() })
	t.Logf("the running scp-task reported the killed run %s after %s", dead, time.Since(killed).Round(time.Millisecond))
	var found associationaudit.Record
	testenv.EventuallyWithin(t, 20*time.Second, "an unclean-stop-found record in the trail after the log line", func() bool {
		for _, r := range records() {
			if r.Event == associationaudit.EventUncleanStopFound {
				found = r
			}
		}
		return found.AssociationID != ""
	})
	if len(found.PreviousRuns) != 1 || found.PreviousRuns[0].Instance != dead || found.AssociationID != survivorRun {
		t.Fatalf("unclean-stop-found record of %s naming %+v, want %s naming %s", found.AssociationID, found.PreviousRuns, survivorRun, dead)
	}
	if u := found.PreviousRuns[0]; u.LastSeq == 0 || u.Written+u.CountedLost+u.NotWritten != u.LastSeq || u.StopNotWritten {
		t.Errorf("previous run %+v", u)
	}
	// Once: more sweeps (a quarter of the stale time each) report nothing more.
	time.Sleep(limit / 2)
	reports := 0
	for _, r := range records() {
		for _, u := range r.PreviousRuns {
			if u.Instance == dead {
				reports++
			}
		}
		if r.Event == associationaudit.EventApplicationStart && r.AssociationID != dead && r.AssociationID != survivorRun {
			t.Errorf("a start of run %s in between", r.AssociationID)
		}
	}
	if reports != 1 || logged() != 1 {
		t.Errorf("the killed run reported in %d records and %d log lines, want 1 each", reports, logged())
	}
	if got := survivor.PublishedIncrease(t, "dicom_ingest_audit_unclean_stops_total"); got != 1 {
		t.Errorf("dicom_ingest_audit_unclean_stops_total rose by %v over the first scrape, want 1", got)
	}
	return found
}

// leftOf is what is left at now of limit from since: never less than nothing, so that a wait begun past its
// deadline looks once and says it waited 0s, not a negative duration.
func leftOf(since time.Time, limit time.Duration, now time.Time) time.Duration {
	return max(since.Add(limit).Sub(now), 0)
}

// StartOf is the start record (application-start) among records of a run
// other than others' (the last such, if several), and whether there is one.
func StartOf(records []associationaudit.Record, others ...string) (associationaudit.Record, bool) {
	var start associationaudit.Record
	for _, r := range records {
		if r.Event == associationaudit.EventApplicationStart && !slices.Contains(others, r.AssociationID) {
			start = r
		}
	}
	return start, start.AssociationID != ""
}

// KillDuringChurn churns associations (Churn) for churn, then kills
// scp-task mid-churn (Kill): a run that dies with records still to write.
func (s *SCP) KillDuringChurn(t testing.TB, client dicomnet.ClientConfig, churn time.Duration) {
	t.Helper()
	stop := Churn(s.DICOMAddr, client)
	time.Sleep(churn)
	s.Kill(t)
	stop()
}
