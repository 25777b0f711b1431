package pipelinetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Commitments is an in-memory pipeline.CommitmentStore.
type Commitments struct {
	mu    sync.Mutex
	txs   map[string]pipeline.CommitmentTransaction
	peers map[string]peerLease // by AE title
}

// peerLease is a requesting AE's lease (LeaseCommitmentPeer).
type peerLease struct {
	holder string
	until  time.Time
}

var _ pipeline.CommitmentStore = (*Commitments)(nil)

// NewCommitments returns an empty store.
func NewCommitments() *Commitments {
	return &Commitments{txs: map[string]pipeline.CommitmentTransaction{}, peers: map[string]peerLease{}}
}

func cloneTx(tx pipeline.CommitmentTransaction) pipeline.CommitmentTransaction {
	tx.Studies = slices.Clone(tx.Studies)
	return tx
}

// CreateCommitment implements pipeline.CommitmentStore.
func (c *Commitments) CreateCommitment(_ context.Context, tx pipeline.CommitmentTransaction) (pipeline.CommitmentTransaction, bool, error) {
	if tx.ID == "" {
		return tx, false, fmt.Errorf("pipelinetest: create commitment: no id")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if have, ok := c.txs[tx.ID]; ok {
		return cloneTx(have), false, nil
	}
	tx.Version = 1
	c.txs[tx.ID] = cloneTx(tx)
	return cloneTx(tx), true, nil
}

// GetCommitment implements pipeline.CommitmentStore.
func (c *Commitments) GetCommitment(_ context.Context, id string) (pipeline.CommitmentTransaction, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tx, ok := c.txs[id]
	if !ok {
		return tx, fmt.Errorf("pipelinetest: commitment: %w", pipeline.ErrNotFound)
	}
	return cloneTx(tx), nil
}

// UpdateCommitment implements pipeline.CommitmentStore. As DynamoDB's and SQLite's, it writes nothing once ctx is
// done (a Lambda invocation past its deadline, a process stopping).
func (c *Commitments) UpdateCommitment(ctx context.Context, tx pipeline.CommitmentTransaction) (pipeline.CommitmentTransaction, error) {
	if err := ctx.Err(); err != nil {
		return tx, fmt.Errorf("pipelinetest: update commitment: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	have, ok := c.txs[tx.ID]
	switch {
	case !ok:
		return tx, fmt.Errorf("pipelinetest: update commitment: %w", pipeline.ErrNotFound)
	case have.Version != tx.Version:
		return tx, fmt.Errorf("pipelinetest: update commitment: %w", pipeline.ErrConditionFailed)
	}
	tx.Version++
	c.txs[tx.ID] = cloneTx(tx)
	return cloneTx(tx), nil
}

// DueCommitments implements pipeline.CommitmentStore.
func (c *Commitments) DueCommitments(_ context.Context, now time.Time, limit int) ([]pipeline.CommitmentTransaction, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []pipeline.CommitmentTransaction
	for _, tx := range c.txs {
		if !tx.Done() && !tx.NextAttempt.After(now) {
			out = append(out, cloneTx(tx))
		}
	}
	slices.SortFunc(out, pipeline.CompareDue)
	if limit = pipeline.PageLimit(limit, pipeline.DefaultPage, pipeline.MaxPage); len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// LeaseCommitmentPeer implements pipeline.CommitmentStore.
func (c *Commitments) LeaseCommitmentPeer(ctx context.Context, ae, holder string, now, until time.Time) (time.Time, bool, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, false, fmt.Errorf("pipelinetest: lease commitment peer: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if have, ok := c.peers[ae]; ok && have.holder != holder && have.until.After(now) {
		return have.until, false, nil
	}
	c.peers[ae] = peerLease{holder, until}
	return until, true, nil
}

// ReleaseCommitmentPeer implements pipeline.CommitmentStore.
func (c *Commitments) ReleaseCommitmentPeer(ctx context.Context, ae, holder string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pipelinetest: release commitment peer: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if have, ok := c.peers[ae]; ok && have.holder == holder {
		delete(c.peers, ae)
	}
	return nil
}

// Reporter is a pipeline.CommitmentReporter that records reports and fails while Err is set.
type Reporter struct {
	mu      sync.Mutex
	reports []pipeline.CommitmentReport
	// Err, when set, fails every report.
	Err error
	// Same is what successful deliveries report as SameAssociation.
	Same bool
	// Hold, when set, is called with each report once it is recorded, outside the Reporter's lock: a test holds a
	// report there (a hung PACS) while others go on. Its error fails the report.
	Hold func(ctx context.Context, rep pipeline.CommitmentReport) error
	// Bound is MaxReport; DefaultReportBound when zero.
	Bound time.Duration
	// Least is MinReport; DefaultReportLeast when zero.
	Least time.Duration
}

// DefaultReportLeast is a Reporter's MinReport unless Least is set: short, so that a test's run given a little more
// than pipeline.CommitmentWriteMargin still reports.
const DefaultReportLeast = 100 * time.Millisecond

// MinReport implements pipeline.CommitmentReporter.
func (r *Reporter) MinReport() time.Duration {
	if r.Least > 0 {
		return r.Least
	}
	return DefaultReportLeast
}

// DefaultReportBound is a Reporter's MaxReport unless Bound is set: with the pipeline's slack, the 2-minute lease
// the tests move their clocks past.
const DefaultReportBound = time.Minute

// MaxReport implements pipeline.CommitmentReporter.
func (r *Reporter) MaxReport() time.Duration {
	if r.Bound > 0 {
		return r.Bound
	}
	return DefaultReportBound
}

// Report implements pipeline.CommitmentReporter.
func (r *Reporter) Report(ctx context.Context, rep pipeline.CommitmentReport) (pipeline.CommitmentDelivery, error) {
	r.mu.Lock()
	r.reports = append(r.reports, rep)
	hold, err, same := r.Hold, r.Err, r.Same
	r.mu.Unlock()
	if hold != nil {
		if herr := hold(ctx, rep); herr != nil {
			return pipeline.CommitmentDelivery{}, herr
		}
	}
	if err != nil {
		return pipeline.CommitmentDelivery{}, err
	}
	return pipeline.CommitmentDelivery{SameAssociation: same}, nil
}

// Reports returns the reports attempted so far, failed ones included.
func (r *Reporter) Reports() []pipeline.CommitmentReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reports)
}
