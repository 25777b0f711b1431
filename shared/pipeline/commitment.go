package pipeline

// Storage Commitment (PS3.4 J.3) from the real ingest state. The SCP makes each N-ACTION durable as a
// CommitmentRequest document under commitment/requests/ before it answers; ProcessCommitmentRequest registers
// the transaction in the CommitmentStore and RunCommitments moves every due transaction on: evaluate (wait for
// instances still in flight, up to the wait), write the result under commitment/results/, announce the studies
// it completes, report it to the requesting AE (retried with backoff until the report deadline), audit and
// announce each step. The same code runs in the local worker (SQLite, files) and in the commitment function
// (DynamoDB, S3).

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/panicvalue"
)

// Storage Commitment layout and timing.
const (
	// CommitmentPrefix holds the SCP's requests (requests/, written before N-ACTION-RSP) and the results
	// (results/<transaction id>.json) under the store root.
	CommitmentPrefix = objectstore.CommitmentPrefix
	// CommitmentRequestsPrefix is where the SCP puts requests, relative to the store root.
	CommitmentRequestsPrefix = objectstore.CommitmentRequestsPrefix
	// CommitmentResultsPrefix is where the results go, relative to the store root.
	CommitmentResultsPrefix = objectstore.CommitmentResultsPrefix

	// DefaultCommitmentWait is how long instances named in a request may still be in flight (stored but not
	// yet indexed, or not yet sent) before they fail with 0112.
	DefaultCommitmentWait = 300 * time.Second
	// DefaultCommitmentReportFor is how long a result's delivery is retried before it is given up (and the
	// alarm raised).
	DefaultCommitmentReportFor = time.Hour
	// commitmentPoll is how often a request still waiting for instances is evaluated again: quickly while
	// the sender's last instances are being indexed, more slowly after.
	commitmentPoll, commitmentSlowPoll = 2 * time.Second, 15 * time.Second
	// commitmentLeaseSlack is what a transaction's lease (CommitmentLease) holds beyond the longest delivery: the
	// result document's read, ARTIM's wait after the A-ABORT of a report cancelled at its bound, the write that
	// records how the delivery went (the store's own retries included).
	commitmentLeaseSlack = time.Minute
	// maxRequestBytes bounds a request document read back (commitment.MaxRefs references in JSON).
	maxRequestBytes = 16 << 20
	// maxEventFailures bounds the failures listed in a Storage Commitment Completed event (EventBridge's
	// 256 KiB entry); the result document has them all.
	maxEventFailures = 500
	// MaxListedStudies bounds the studies a transaction names wherever it is kept or told, but for its result
	// document, which lists them all: the transaction as stored (Studies; StudyCount counts them all), its audit
	// records and its Storage Commitment Completed event (studyCount, studiesTruncated). A request may name
	// commitment.MaxRefs (50,000) instances, each of a study of its own, a backlog commitment after a migration: a
	// transaction naming them all was some 3.4 MB, over DynamoDB's 400 KB item, and its audit record some 7 MB,
	// so the request was never reported. 1,000 of 64 characters and 500 failures of two such UIDs each come to some
	// 180 KB, under EventBridge's 256 KiB entry too.
	MaxListedStudies = 1000
	// CommitmentWriteMargin is what a delivery leaves of its run's context (the commitment function's invocation,
	// which Lambda ends at the function's timeout; local mode's has no deadline) for the write of how it went: a
	// delivery is cut there at the latest, a failed attempt recorded as any other, and a transaction is not taken
	// with less of the run left. It covers the cut's teardown, the A-ABORT's write (dicomnet.TeardownWriteTimeout,
	// 1 s, even to a PACS that stopped reading) and ARTIM (commitreport.ARTIMTimeout, 2 s), and leaves 2 s for
	// the store's write of the attempt (commitreport's TestWriteMarginCoversTheTeardown).
	CommitmentWriteMargin = 5 * time.Second
	// CommitmentReportParallel bounds the requesting AEs a run moves on at once (RunCommitments): each AE's
	// transactions one after another, on one association at a time, up to this many AEs side by side.
	CommitmentReportParallel = 8
	// evaluateParallel bounds the instances looked up at once.
	evaluateParallel = 8
)

// Completion values of Study Received and Study Updated: what made the study complete.
const (
	CompletionQuietPeriod       = "quiet-period"
	CompletionStorageCommitment = "storage-commitment"
)

// CommitmentRequest is the durable record of an N-ACTION-RQ, written by the SCP.
type CommitmentRequest struct {
	SchemaVersion  int              `json:"schemaVersion"`
	TransactionUID string           `json:"transactionUid"`
	Refs           []commitment.Ref `json:"refs"`
	CallingAE      string           `json:"callingAe"`
	CalledAE       string           `json:"calledAe"`
	PeerAddr       string           `json:"peerAddr,omitempty"`
	AssociationID  string           `json:"associationId"`
	MessageID      uint16           `json:"messageId"`
	ReceivedAt     time.Time        `json:"receivedAt"`
}

// Key is where the SCP puts the request, relative to the store root:
// commitment/requests/<yyyy>/<mm>/<dd>/<association id>-<message id>.json. It names the N-ACTION, not the
// transaction, so it holds no UID and may be logged.
func (r CommitmentRequest) Key() string {
	t := r.ReceivedAt.UTC()
	return fmt.Sprintf("%s%04d/%02d/%02d/%s-%d.json", CommitmentRequestsPrefix, t.Year(), int(t.Month()), t.Day(), r.AssociationID, r.MessageID)
}

// ParseCommitmentRequest reads a request document and checks what the SCP checked: a valid Transaction UID,
// 1 to commitment.MaxRefs references with valid UIDs.
func ParseCommitmentRequest(b []byte) (CommitmentRequest, error) {
	var r CommitmentRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("pipeline: commitment request: %w", err)
	}
	switch {
	case r.SchemaVersion != 1:
		return r, fmt.Errorf("pipeline: commitment request: schema version %d not supported", r.SchemaVersion)
	case !dicomuid.ValidUID(r.TransactionUID):
		return r, errors.New("pipeline: commitment request: invalid transaction UID")
	case len(r.Refs) == 0 || len(r.Refs) > commitment.MaxRefs:
		return r, fmt.Errorf("pipeline: commitment request: %d references (want 1 to %d)", len(r.Refs), commitment.MaxRefs)
	case r.AssociationID == "" || r.ReceivedAt.IsZero():
		return r, errors.New("pipeline: commitment request: no association id or receipt time")
	}
	for _, ref := range r.Refs {
		if !dicomuid.ValidUID(ref.SOPClassUID) || !dicomuid.ValidUID(ref.SOPInstanceUID) {
			return r, errors.New("pipeline: commitment request: invalid referenced UID")
		}
	}
	return r, nil
}

// CommitmentState is where a transaction is.
type CommitmentState string

// Transaction states.
const (
	// CommitmentPending: instances are evaluated, and waited for until WaitUntil.
	CommitmentPending CommitmentState = "pending"
	// CommitmentReporting: the result is decided (ResultKey) and being delivered, retried until
	// ReportDeadline.
	CommitmentReporting CommitmentState = "reporting"
	// CommitmentReported: the requesting AE answered the N-EVENT-REPORT with success.
	CommitmentReported CommitmentState = "reported"
	// CommitmentUndeliverable: the report deadline passed without a delivery.
	CommitmentUndeliverable CommitmentState = "undeliverable"
)

// UndeliverableLog is the log message of a Storage Commitment result given
// up on (its report deadline passed): the CommitmentUndeliverable alarm's
// metric filter matches it.
const UndeliverableLog = "storage commitment report undeliverable"

// CommitmentTransaction is the state of one Storage Commitment transaction, as the CommitmentStore keeps it.
// The request itself stays in its document (RequestKey); the result goes to ResultKey.
type CommitmentTransaction struct {
	// ID is a digest of the Transaction UID, or of the Transaction UID and RequestKey for a request that
	// reused a Transaction UID with other content (DuplicateOf then names the first).
	ID             string `json:"id"`
	TransactionUID string `json:"transactionUid"`
	RequestKey     string `json:"requestKey"`
	// ContentDigest identifies what was asked (the calling AE and the references), to tell a retransmission
	// of a request from a reuse of its Transaction UID.
	ContentDigest string    `json:"contentDigest"`
	DuplicateOf   string    `json:"duplicateOf,omitempty"`
	CallingAE     string    `json:"callingAe"`
	CalledAE      string    `json:"calledAe"`
	PeerAddr      string    `json:"peerAddr,omitempty"`
	AssociationID string    `json:"associationId"`
	MessageID     uint16    `json:"messageId"`
	RefCount      int       `json:"refCount"`
	ReceivedAt    time.Time `json:"receivedAt"`
	// WaitUntil is when instances not yet arrived fail (0112).
	WaitUntil time.Time       `json:"waitUntil"`
	State     CommitmentState `json:"state"`
	// NextAttempt is when the transaction is due again (evaluation, report, or a lease's end).
	NextAttempt time.Time `json:"nextAttempt"`
	// Leased: NextAttempt is the end of a worker's lease of the transaction (advance, evaluateCommitment), not a time
	// it falls due by schedule (a poll, a retry's backoff, a delivery left to the next run). Set and cleared by lease
	// and dueAt alone, and cleared when the transaction is finished (finishCommitment): a transaction done is held by
	// no worker, its NextAttempt the past lease's end. A store that knows every worker gone (local mode's database, under its data directory's lock,
	// at start) ends such leases at once (ReleasedLease). A transaction written before it has none.
	Leased bool `json:"leased,omitempty"`
	// ReportDeadline is when delivery is given up; set with the result.
	ReportDeadline time.Time `json:"reportDeadline,omitempty"`
	ResultKey      string    `json:"resultKey,omitempty"`
	Committed      int       `json:"committed"`
	Failed         int       `json:"failed"`
	// Studies holds the first MaxListedStudies studies of the committed instances, in order of their UIDs;
	// StudyCount counts them all (the result document lists them all). A transaction written before StudyCount
	// has all its studies in Studies and no StudyCount (ListedStudyCount).
	Studies    []string `json:"studies,omitempty"`
	StudyCount int      `json:"studyCount,omitempty"`
	// AllStudies, set by the evaluation that decided Studies, are every study of the committed instances, for a
	// store that finds a transaction by its studies (local mode's study page) to find it by each; it is not kept
	// with the transaction (the bound above), nor read back.
	AllStudies []string  `json:"-"`
	Attempts   int       `json:"attempts"`
	LastError  string    `json:"lastError,omitempty"`
	ReportedAt time.Time `json:"reportedAt,omitempty"`
	// GivenUpAt is when delivery was given up (the report deadline passed), recorded before the audit record
	// and the event as ReportedAt is; the transaction is undeliverable once both are written.
	GivenUpAt time.Time `json:"givenUpAt,omitempty"`
	// SameAssociation: the report went on the association the request came on.
	SameAssociation bool `json:"sameAssociation,omitempty"`
	// Version moves by one with every write (UpdateCommitment's condition).
	Version int64 `json:"version"`
}

// ListedStudyCount is how many studies the transaction's committed instances are of: StudyCount, or for a
// transaction written before it, its Studies.
func (tx CommitmentTransaction) ListedStudyCount() int { return max(tx.StudyCount, len(tx.Studies)) }

// listedStudies is the part of studies (sorted) a transaction, its audit records and its event name.
func listedStudies(studies []string) []string { return studies[:min(len(studies), MaxListedStudies)] }

// CommitmentID is the ID of the transaction of a Transaction UID (a digest: it holds no UID).
func CommitmentID(transactionUID string) string { return digest("commitment", transactionUID) }

// Done reports whether nothing more will happen to the transaction.
func (tx CommitmentTransaction) Done() bool {
	return tx.State == CommitmentReported || tx.State == CommitmentUndeliverable
}

// lease holds tx for the worker writing it until until (Leased).
func (tx *CommitmentTransaction) lease(until time.Time) { tx.NextAttempt, tx.Leased = until, true }

// dueAt schedules tx at at, held by no worker (Leased).
func (tx *CommitmentTransaction) dueAt(at time.Time) { tx.NextAttempt, tx.Leased = at, false }

// ReleasedLease returns tx with the lease a worker holds it by (Leased) ended at now, due then, and whether it had
// one still in force; a transaction done, or due by schedule, is returned as it is. Only for a store that knows
// the worker holding it gone (local mode's start, under the data directory's lock): another would report the
// transaction while that worker still may.
func (tx CommitmentTransaction) ReleasedLease(now time.Time) (CommitmentTransaction, bool) {
	if tx.Done() || !tx.Leased || !tx.NextAttempt.After(now) {
		return tx, false
	}
	tx.dueAt(now)
	return tx, true
}

// CommitmentStore keeps transaction states. pipelinetest.RunCommitmentStore checks an implementation.
type CommitmentStore interface {
	// CreateCommitment writes tx (Version 1) unless a transaction with tx.ID exists, and returns the one
	// stored and whether this call created it.
	CreateCommitment(ctx context.Context, tx CommitmentTransaction) (CommitmentTransaction, bool, error)
	// GetCommitment returns a transaction; ErrNotFound.
	GetCommitment(ctx context.Context, id string) (CommitmentTransaction, error)
	// UpdateCommitment replaces the transaction if its stored Version is tx.Version, and returns it as stored
	// (Version+1); ErrConditionFailed when another write came first, ErrNotFound when there is none.
	UpdateCommitment(ctx context.Context, tx CommitmentTransaction) (CommitmentTransaction, error)
	// DueCommitments returns transactions pending or reporting whose NextAttempt is not after now, the
	// longest due first, at most limit (0: DefaultPage; above MaxPage: MaxPage, as PageLimit has it).
	DueCommitments(ctx context.Context, now time.Time, limit int) ([]CommitmentTransaction, error)
	// LeaseCommitmentPeer takes the requesting AE title ae for holder until until, unless another holder's lease
	// of it ends after now: one delivery to an AE at a time, whichever worker makes it (RunCommitments). It returns
	// the end of the lease in force (until when taken, else the other holder's) and whether holder has it; holder
	// taking it again moves its end. Not taken, the end is after now: a lease found over once the store has refused
	// (its holder released it in between) is asked for again, a few times at most, and one changing hands at every
	// try is answered as held until until. AE titles are compared exactly.
	LeaseCommitmentPeer(ctx context.Context, ae, holder string, now, until time.Time) (time.Time, bool, error)
	// ReleaseCommitmentPeer ends holder's lease of ae; another holder's, or none, is left as it is.
	ReleaseCommitmentPeer(ctx context.Context, ae, holder string) error
}

// CompareDue is the order of DueCommitments: the longest due first, then by ID.
func CompareDue(a, b CommitmentTransaction) int {
	if c := a.NextAttempt.Compare(b.NextAttempt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// CommitmentReporter delivers results to the AEs that asked.
type CommitmentReporter interface {
	// Report sends the result as an N-EVENT-REPORT to r.CallingAE: on the association r.AssociationID while
	// that is open, else on a new one. Success means the AE answered 0000; any error means not delivered.
	Report(ctx context.Context, r CommitmentReport) (CommitmentDelivery, error)
	// MaxReport is the longest a Report may take by the reporter's own deadlines (connect, handshake, each
	// answer, ARTIM). The pipeline holds each delivery to it, cancelling Report's context then, and leases the
	// transaction for longer (CommitmentLease).
	MaxReport() time.Duration
	// MinReport is the least a Report needs for the PACS to have had its chance, by the same deadlines
	// (connecting and one answer): a delivery given less (by the run's end, or the lease's) is made all the same,
	// and one cut there before the PACS answered counts no attempt (deliverCommitment).
	MinReport() time.Duration
}

// CommitmentLease is how long a worker whose run has no deadline (local mode) holds a transaction it is evaluating or
// reporting, another worker taking it over after that (a lost process): r's longest delivery (MaxReport), which the
// pipeline holds each delivery to, and commitmentLeaseSlack for what a delivery does besides. A delivery therefore
// always ends, and its outcome is written, before its lease does: another worker never reports a transaction while
// one is reporting it. A run with a deadline holds it for less (commitmentLease).
func CommitmentLease(r CommitmentReporter) time.Duration {
	return maxReport(r) + commitmentLeaseSlack
}

// CommitmentLeaseSkew is what a lease bounded by its run's deadline (commitmentLease) holds past that deadline: the
// workers' clocks may disagree (each compares the lease with its own), and a write sent just before the deadline may
// land after it (every write is conditioned on the transaction's version, so a late one changes nothing).
const CommitmentLeaseSkew = 5 * time.Second

// commitmentLease is how long a worker in a run of ctx holds a transaction from now: CommitmentLease, or, when the run
// has a deadline that comes sooner (the commitment function's invocation, which Lambda ends at its timeout), until
// CommitmentLeaseSkew past that deadline. Every delivery of such a run is cut CommitmentWriteMargin before its
// deadline (runLeft) and none starts after, so nothing of the run reports past it, whether the run dies there
// (Lambda) or not: a crashed invocation's transaction is taken over once its run's deadline is CommitmentLeaseSkew
// past, not after a delivery's whole bound.
func commitmentLease(ctx context.Context, r CommitmentReporter) time.Duration {
	lease := CommitmentLease(r)
	if end, ok := ctx.Deadline(); ok {
		lease = min(lease, time.Until(end)+CommitmentLeaseSkew)
	}
	return lease
}

// leaseLeft is how long a delivery of a run of ctx may take within the lease held until leaseEnd: up to the lease's end
// but for its slack (an evaluation or the result's read may have taken some of the lease); for a lease that outlasts
// the run's deadline (commitmentLease), as long as the run has (runLeft holds the delivery, ending it, and its write,
// before that deadline).
func leaseLeft(ctx context.Context, now, leaseEnd time.Time) time.Duration {
	if end, ok := ctx.Deadline(); ok && !now.Add(time.Until(end)).After(leaseEnd) {
		return math.MaxInt64
	}
	return leaseEnd.Sub(now) - commitmentLeaseSlack
}

// maxReport is r's MaxReport, 0 without a reporter.
func maxReport(r CommitmentReporter) time.Duration {
	if r == nil {
		return 0
	}
	return r.MaxReport()
}

func minReport(r CommitmentReporter) time.Duration {
	if r == nil {
		return 0
	}
	return r.MinReport()
}

// CommitmentReport is one delivery to make.
type CommitmentReport struct {
	CallingAE     string
	AssociationID string
	Result        commitment.Result
}

// CommitmentDelivery says how a report went.
type CommitmentDelivery struct {
	SameAssociation bool
}

// CommitmentResultDoc is the result document (commitment/results/<id>.json).
type CommitmentResultDoc struct {
	SchemaVersion int               `json:"schemaVersion"`
	ID            string            `json:"id"`
	RequestKey    string            `json:"requestKey"`
	CallingAE     string            `json:"callingAe"`
	EvaluatedAt   time.Time         `json:"evaluatedAt"`
	Result        commitment.Result `json:"result"`
	Studies       []string          `json:"studies"`
}

func (p *Pipeline) commitmentWait() time.Duration {
	if p.CommitmentWait > 0 {
		return p.CommitmentWait
	}
	return DefaultCommitmentWait
}

func (p *Pipeline) commitmentReportFor() time.Duration {
	if p.CommitmentReportFor > 0 {
		return p.CommitmentReportFor
	}
	return DefaultCommitmentReportFor
}

func digest(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:16])
}

func contentDigest(r CommitmentRequest) string {
	parts := []string{r.CallingAE}
	for _, ref := range r.Refs {
		parts = append(parts, ref.SOPClassUID, ref.SOPInstanceUID)
	}
	return digest(parts...)
}

// CommitmentResultKey is where the result of transaction id goes, under the request's store root.
func CommitmentResultKey(requestKey, id string) string {
	root, _, _, _ := SplitKey(requestKey)
	return root + CommitmentResultsPrefix + id + ".json"
}

// ProcessCommitmentRequest registers the request stored at key (under commitment/requests/), due at once:
// RunCommitments moves it on. It is idempotent: a redelivered key changes nothing. The same content under a
// Transaction UID already known is a retransmission: while the first is evaluated or reported its result is
// reported once more, on the newer association; once the first was reported or given up (its record still owed
// or not) it is evaluated again and reported again, with a report deadline of its own. Other content under it
// fails whole with 0131.
func (p *Pipeline) ProcessCommitmentRequest(ctx context.Context, key string) error {
	if _, sec, rest, ok := SplitKey(key); !ok || sec != CommitmentPrefix || !strings.HasPrefix(rest, "requests/") || !strings.HasSuffix(key, ".json") {
		return nil
	}
	req, err := p.readCommitmentRequest(ctx, key)
	if err != nil {
		return err
	}
	now := p.now()
	tx := CommitmentTransaction{
		ID: CommitmentID(req.TransactionUID), TransactionUID: req.TransactionUID, RequestKey: key,
		ContentDigest: contentDigest(req), CallingAE: req.CallingAE, CalledAE: req.CalledAE, PeerAddr: req.PeerAddr,
		AssociationID: req.AssociationID,
		MessageID:     req.MessageID, RefCount: len(req.Refs), ReceivedAt: req.ReceivedAt.UTC(),
		WaitUntil: req.ReceivedAt.UTC().Add(p.commitmentWait()), State: CommitmentPending, NextAttempt: now,
	}
	stored, created, err := p.Commitments.CreateCommitment(ctx, tx)
	if err != nil {
		return fmt.Errorf("pipeline: commitment: %w", err)
	}
	switch {
	case created:
	case stored.RequestKey == key:
		return nil // a redelivery: the transaction moves on by itself
	case stored.ContentDigest == tx.ContentDigest:
		// A retransmission: report again, on the newer association, once any delivery in progress is done.
		if !stored.Done() && stored.GivenUpAt.IsZero() {
			stored.AssociationID, stored.MessageID, stored.RequestKey = tx.AssociationID, tx.MessageID, key
			// Reported on the older one already (its record or event still owed): again.
			stored.ReportedAt = time.Time{}
			if _, err := p.Commitments.UpdateCommitment(ctx, stored); err != nil {
				// Another write came first (a run reporting it, giving it up): delivered again, the request
				// reads what that write left.
				return retransmissionRaced(err)
			}
			return nil
		}
		if !stored.Done() {
			// Given up, its audit record and event still owed: it is over as much as one whose are written, and the
			// request is evaluated again with a report deadline of its own, as after those. The give-up is audited and
			// announced now, before the transaction is replaced: a subscriber learns that the first request's result
			// never reached the PACS, as after a give-up whose event was published (its Storage Commitment Completed
			// was dropped). Should either fail (the bus down), the request fails, to be delivered again: the run after
			// the lease writes what is owed meanwhile.
			if err := p.finishGivenUp(ctx, stored); err != nil {
				return err
			}
		}
		tx.Version = stored.Version
		if _, err := p.Commitments.UpdateCommitment(ctx, tx); err != nil {
			return retransmissionRaced(err)
		}
	default:
		tx.ID, tx.DuplicateOf = digest("commitment", req.TransactionUID, key), stored.ID
		if _, created, err = p.Commitments.CreateCommitment(ctx, tx); err != nil {
			return fmt.Errorf("pipeline: commitment: %w", err)
		} else if !created {
			return nil
		}
	}
	if err := p.auditCommitment(ctx, commitmentRequested, tx, nil); err != nil {
		return err
	}
	p.log().Info("storage commitment requested", "association", req.AssociationID, "message_id", req.MessageID,
		"instances", len(req.Refs), "duplicate_transaction", tx.DuplicateOf != "")
	return nil
}

// retransmissionRaced is the error of a retransmission's write of its transaction: the request fails, to be
// delivered again (SQS, local mode's worker), also when another write came first (ErrConditionFailed), so that it
// then reads what that write left.
func retransmissionRaced(err error) error {
	if errors.Is(err, ErrConditionFailed) {
		return fmt.Errorf("pipeline: commitment: retransmission raced another write: %w", err)
	}
	return fmt.Errorf("pipeline: commitment: %w", err)
}

// finishGivenUp writes the audit record and publishes the Storage Commitment Completed of a transaction given up
// (GivenUpAt) whose record or event may still be owed (each is written once: the audit record by its id, the event
// by the ledger). An event the bus refuses for what it is is logged, and the transaction is over without it, as
// finishCommitment has it.
func (p *Pipeline) finishGivenUp(ctx context.Context, tx CommitmentTransaction) error {
	doc, err := p.readCommitmentResult(ctx, tx.ResultKey)
	if err != nil {
		return err
	}
	tx.State = CommitmentUndeliverable
	if err := p.auditCommitment(ctx, commitmentUndeliverable, tx, &doc); err != nil {
		return err
	}
	if err := p.publishCompleted(ctx, tx, doc); err != nil && !errors.As(err, new(completedRefused)) {
		return err
	}
	return nil
}

func (p *Pipeline) readCommitmentRequest(ctx context.Context, key string) (CommitmentRequest, error) {
	rc, err := p.Objects.OpenRange(ctx, key, 0, maxRequestBytes)
	if err != nil {
		return CommitmentRequest{}, fmt.Errorf("pipeline: read commitment request: %w", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxRequestBytes))
	if err != nil {
		return CommitmentRequest{}, fmt.Errorf("pipeline: read commitment request: %w", err)
	}
	return ParseCommitmentRequest(b)
}

// RunCommitments moves every due transaction on (evaluation, report, retries) and returns how many it
// finished (reported or given up). A study a transaction completes whose announcement fails is deferred to the
// quiet period's runs, as theirs are (announcer), and the transaction goes on to its report; once the event
// bus has failed MaxPublishFailures announcements in a row, the run's later transactions leave their studies
// to the quiet period untried, and its later reports leave their Storage Commitment Completed to the run after the
// lease (the one rule of a run's events, announcer): every due result is still reported to its PACS.
func (p *Pipeline) RunCommitments(ctx context.Context, now time.Time) (int, error) {
	due, err := p.Commitments.DueCommitments(ctx, now, 100)
	if err != nil {
		return 0, fmt.Errorf("pipeline: due commitments: %w", err)
	}
	a := p.announcer(now)
	var (
		mu      sync.Mutex
		n, left int
		errs    []error
		stopped error
	)
	// Each requesting AE's transactions in the order they fell due, one after another (one association at a time
	// to a PACS); the AEs side by side, CommitmentReportParallel at most: a PACS that does not answer holds its own
	// reports, never another AE's. A panic (a bug) met moving a transaction on fails it and the run, logged with its
	// stack as a scheduled run's: recovered here, on the AE's goroutine, since the callers' recovery
	// (panicvalue.Recovered, the function's and local mode's) holds on the run's goroutine only, and a panic on
	// another ends the process.
	var wg sync.WaitGroup
	sem := make(chan struct{}, CommitmentReportParallel)
	for _, txs := range byCallingAE(due) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			for _, tx := range txs {
				var done bool
				msg, attrs := p.commitmentPanicLine(tx)
				err := panicvalue.Recovered(p.log(), msg, func() (err error) {
					done, err = p.advance(ctx, a, tx.ID)
					return err
				}, attrs...)
				mu.Lock()
				var l eventLeft
				switch {
				case errors.As(err, &l):
					left, stopped = left+1, l.why
				case err != nil:
					errs = append(errs, err)
				}
				if done {
					n++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if left > 0 {
		errs = append(errs, fmt.Errorf("%w: %d of %d transactions' Storage Commitment Completed left for the next run", stopped, left, len(due)))
	}
	return n, errors.Join(append(errs, a.kept()...)...)
}

// commitmentPanicLine is the line, and its attributes, of a panic (a bug) met moving tx on, wherever it is recovered:
// the caller's line (CommitmentPanicLog, else ScheduledPanicLog) with run: commitment and the transaction named by
// its association and message id, never a UID.
func (p *Pipeline) commitmentPanicLine(tx CommitmentTransaction) (string, []any) {
	return cmp.Or(p.CommitmentPanicLog, ScheduledPanicLog), []any{"run", "commitment", "association", tx.AssociationID, "message_id", tx.MessageID}
}

// runLeft is how long a step of a run may take within ctx's deadline, keeping CommitmentWriteMargin to record how
// it went; without a deadline (local mode), as long as it likes.
func runLeft(ctx context.Context) time.Duration {
	end, ok := ctx.Deadline()
	if !ok {
		return math.MaxInt64
	}
	return time.Until(end) - CommitmentWriteMargin
}

// byCallingAE splits due by requesting AE, each AE's in due's order, the AEs in the order of their first.
func byCallingAE(due []CommitmentTransaction) [][]CommitmentTransaction {
	var out [][]CommitmentTransaction
	at := map[string]int{}
	for _, tx := range due {
		i, ok := at[tx.CallingAE]
		if !ok {
			i = len(out)
			at[tx.CallingAE] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], tx)
	}
	return out
}

// eventLeft is a transaction whose Storage Commitment Completed a run left untried, why being the run's reason
// (announcer.stopped): RunCommitments counts them in one error.
type eventLeft struct{ why error }

func (e eventLeft) Error() string { return e.why.Error() }
func (e eventLeft) Unwrap() error { return e.why }

// advance takes the transaction for a lease and does what is due: evaluate, report. It reports whether the
// transaction finished.
func (p *Pipeline) advance(ctx context.Context, a *announcer, id string) (bool, error) {
	tx, err := p.Commitments.GetCommitment(ctx, id)
	if err != nil {
		return false, fmt.Errorf("pipeline: commitment: %w", err)
	}
	now := p.now()
	if tx.Done() || tx.NextAttempt.After(now) || runLeft(ctx) <= 0 {
		return false, nil // the run's end too near to record a step: left due for the next run
	}
	tx.lease(now.Add(commitmentLease(ctx, p.Reporter)))
	if tx, err = p.Commitments.UpdateCommitment(ctx, tx); err != nil {
		if errors.Is(err, ErrConditionFailed) {
			return false, nil // another worker has it
		}
		return false, fmt.Errorf("pipeline: commitment: %w", err)
	}
	if tx.State == CommitmentPending {
		if tx, err = p.evaluateCommitment(ctx, a, tx); err != nil || tx.State == CommitmentPending {
			return false, err
		}
	}
	return p.deliverCommitment(ctx, a, tx)
}

// refVerdict is what evaluation found for one referenced instance.
type refVerdict struct {
	committed bool
	reason    uint16 // set: failed for good
	study     string // known study of the instance
}

// evaluateCommitment decides the instances; once every one is decided (or the wait is over) it writes the
// result, announces the studies it completes (a failed announcement is a's to keep, and holds the report
// back no more than the other studies') and moves to reporting.
func (p *Pipeline) evaluateCommitment(ctx context.Context, a *announcer, tx CommitmentTransaction) (CommitmentTransaction, error) {
	req, err := p.readCommitmentRequest(ctx, tx.RequestKey)
	if err != nil {
		return tx, err
	}
	now := p.now()
	final := !now.Before(tx.WaitUntil)
	verdicts := make([]refVerdict, len(req.Refs))
	if tx.DuplicateOf != "" {
		for i := range verdicts {
			verdicts[i].reason = commitment.ReasonDuplicateTransactionUID
		}
	} else if err := p.judgeAll(ctx, tx, req.Refs, final, verdicts); err != nil {
		return tx, err
	}
	res := commitment.Result{TransactionUID: req.TransactionUID, Committed: []commitment.Ref{}, Failed: []commitment.Failure{}}
	undecided := 0
	studyOpen := map[string]bool{}        // study -> some named instance of it is not committed
	committedStudies := map[string]bool{} // of the committed instances (indexed: valid UIDs)
	for i, v := range verdicts {
		switch {
		case v.committed:
			res.Committed = append(res.Committed, req.Refs[i])
			if _, seen := studyOpen[v.study]; !seen {
				studyOpen[v.study] = false
			}
			if v.study != "" {
				committedStudies[v.study] = true
			}
		case v.reason != 0:
			res.Failed = append(res.Failed, commitment.Failure{Ref: req.Refs[i], Reason: v.reason})
			studyOpen[v.study] = true // "" stands for a study not known
		default:
			undecided++
			if v.study != "" {
				studyOpen[v.study] = true
			}
		}
	}
	// The studies the transaction names (its event, result, records and
	// links) are its committed instances': a failed instance's study, known
	// from the audit trail, is the sender's, a UID validation may have
	// refused ("1.2.03"), and is no study the archive holds of it.
	studies := slices.Sorted(maps.Keys(committedStudies))
	tx.Studies, tx.StudyCount, tx.AllStudies = listedStudies(studies), len(studies), studies
	if undecided > 0 {
		poll := commitmentPoll
		if now.Sub(tx.ReceivedAt) > 30*time.Second {
			poll = commitmentSlowPoll
		}
		tx.dueAt(minTime(now.Add(poll), tx.WaitUntil))
		tx, err = p.Commitments.UpdateCommitment(ctx, tx)
		if err != nil {
			return tx, fmt.Errorf("pipeline: commitment: %w", err)
		}
		return tx, nil
	}
	// A study is complete when every instance the request names in it is committed. An instance that failed
	// without a known study may belong to any of them: then none is announced here, and the quiet period
	// decides.
	var complete []string
	for s, open := range studyOpen {
		if s != "" && !open && !studyOpen[""] {
			complete = append(complete, s)
		}
	}
	slices.Sort(complete)
	doc := CommitmentResultDoc{SchemaVersion: 1, ID: tx.ID, RequestKey: tx.RequestKey, CallingAE: tx.CallingAE,
		EvaluatedAt: now, Result: res, Studies: studies}
	body, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return tx, fmt.Errorf("pipeline: marshal commitment result: %w", err)
	}
	tx.ResultKey = CommitmentResultKey(tx.RequestKey, tx.ID)
	if err := p.Writer.Put(ctx, tx.ResultKey, body, "application/json", nil); err != nil {
		return tx, fmt.Errorf("pipeline: put commitment result: %w", err)
	}
	for _, s := range complete {
		if a.stopped(ctx) != nil {
			break // the quiet period's runs announce them
		}
		if err := p.announceCommitted(ctx, a, s); err != nil {
			a.keep(err)
		}
	}
	tx.Committed, tx.Failed = len(res.Committed), len(res.Failed)
	// Reporting, still leased to this worker, which reports it next (advance): due at once, another worker would
	// take it and report it too.
	tx.State, tx.ReportDeadline, tx.Attempts = CommitmentReporting, now.Add(p.commitmentReportFor()), 0
	tx.lease(now.Add(commitmentLease(ctx, p.Reporter)))
	if err := p.auditCommitment(ctx, commitmentEvaluated, tx, &doc); err != nil {
		return tx, err
	}
	if tx, err = p.Commitments.UpdateCommitment(ctx, tx); err != nil {
		return tx, fmt.Errorf("pipeline: commitment: %w", err)
	}
	p.log().Info("storage commitment evaluated", "association", tx.AssociationID, "message_id", tx.MessageID,
		"committed", tx.Committed, "failed", tx.Failed, "studies_completed", len(complete))
	return tx, nil
}

// judgeAll fills verdicts, a few instances at a time. A panic (a bug) in an instance's lookup is recovered on its
// goroutine (the callers' recovery holds on the run's goroutines only, and a panic on another ends the process): it
// fails the transaction with an error wrapping panicvalue.ErrPanicked, logged once with the caller's line and the
// first panic's stack (commitmentPanicLine), as a panic on the AE's goroutine is.
func (p *Pipeline) judgeAll(ctx context.Context, tx CommitmentTransaction, refs []commitment.Ref, final bool, verdicts []refVerdict) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	var first *panicvalue.Panic
	sem := make(chan struct{}, evaluateParallel)
	for i := range refs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			pnc, err := panicvalue.Catch(func() (err error) {
				verdicts[i], err = p.judge(ctx, tx, refs[i], final)
				return err
			})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				if first == nil {
					first = pnc
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first != nil {
		msg, attrs := p.commitmentPanicLine(tx)
		first.Log(p.log(), msg, attrs...)
	}
	return errors.Join(errs...)
}

const (
	// instanceAuditPage is the page size of instanceRecords' reading of an
	// instance's audit records, and maxInstanceAuditPages the most pages
	// it reads (1,600 records at full pages).
	instanceAuditPage, maxInstanceAuditPages = 50, 32
)

// instanceRecords yields the audit records q selects (an instance's, by its
// SOP Instance UID), newest first, page by page: a page may be short
// (AuditQuery), and only an empty Next ends them; past
// maxInstanceAuditPages (a trail no instance has, or a store that never
// ends) the records read so far are all. A failed read is yielded as the
// last error. The one walk of an instance's records: Storage Commitment's
// judge and a rejected record's lookup (rejectedRecord).
func (p *Pipeline) instanceRecords(ctx context.Context, q AuditQuery) iter.Seq2[AuditRecord, error] {
	return func(yield func(AuditRecord, error) bool) {
		q.Limit = instanceAuditPage
		for range maxInstanceAuditPages {
			page, err := p.Audit.Query(ctx, q)
			if err != nil {
				yield(AuditRecord{}, err)
				return
			}
			for _, r := range page.Records {
				if !yield(r, nil) {
					return
				}
			}
			if page.Next == "" {
				return
			}
			q.Cursor = page.Next
		}
	}
}

// attempt is what an instance's audit record says of one transfer of it that stored nothing, for the judge
// (judgeTable): refused by the SCP, or cut short by the association's end.
type attempt int

const (
	// attemptNone: no such transfer in the instance's records (never sent, or only stored: the index says
	// those).
	attemptNone attempt = iota
	// attemptRefused: a C-STORE the SCP refused: a failure status answered, decided and not sent, or decided
	// before the association's end cut it short (dimse.RefusedBeforeEnd): store-failed, not AuditRecord.CutShort.
	attemptRefused
	// attemptCutShort: a C-STORE the association's end cut short (AuditRecord.CutShort): nothing stored,
	// nothing refused, the sender answered nothing.
	attemptCutShort
)

// attemptOf is the transfer r records, attemptNone for a record of no transfer that stored nothing.
func attemptOf(r AuditRecord) attempt {
	switch {
	case r.Outcome != associationaudit.EventStoreFailed:
		return attemptNone
	case r.CutShort():
		return attemptCutShort
	}
	return attemptRefused
}

// judgeTable is the Failure Reason of an instance that is not committed once the wait is over, neither in the
// index nor quarantined (judge decides those first: a stored instance is committed whatever its history, a
// quarantined one fails 0110 as held), by the newest transfer of it that stored nothing (attemptOf), its
// history before that deciding nothing. A PACS administrator reads 0110 (PS3.3 C.14.1.1's "general failure in
// processing") as ours to look into, and 0112 ("not available") as the instance to send again (PS3.4 J.3.3.1.3:
// re-send the failed instances, then request commitment again):
//
//   - refused: we failed it, 0110, also when an older transfer was only cut short;
//   - cut short: the network or the sender broke the transfer off and nothing of it is held, as of an instance
//     never sent, 0112, also when an older transfer was refused (that refusal is not why it is missing now: a
//     resend after it was cut short, and another resend is what it takes);
//   - none: never sent, 0112.
var judgeTable = map[attempt]uint16{
	attemptNone:     commitment.ReasonNoSuchObjectInstance,
	attemptRefused:  commitment.ReasonProcessingFailure,
	attemptCutShort: commitment.ReasonNoSuchObjectInstance,
}

// judge decides one instance. Committed: indexed under the SOP Instance UID with the requested SOP class and
// its object in the store (or, where the site counts them, quarantined with its object in the store), whatever
// its records say besides. Failed for good: a class we do not store (0122), held under another class (0119),
// indexed but its object gone, or quarantined (0110). Otherwise undecided until the wait is over: then as
// judgeTable has it, by the newest transfer of it that stored nothing.
func (p *Pipeline) judge(ctx context.Context, tx CommitmentTransaction, ref commitment.Ref, final bool) (refVerdict, error) {
	if !dicomuid.IsStorageSOPClass(ref.SOPClassUID) {
		return refVerdict{reason: commitment.ReasonSOPClassNotSupported}, nil
	}
	recs, err := p.Index.Instances(ctx, ref.SOPInstanceUID)
	if err != nil {
		return refVerdict{}, fmt.Errorf("pipeline: commitment: look up instance: %w", err)
	}
	var v refVerdict
	for _, rec := range recs {
		v.study = rec.StudyInstanceUID
		if rec.SOPClassUID != ref.SOPClassUID {
			v.reason = commitment.ReasonClassInstanceConflict
			continue
		}
		ok, err := p.stored(ctx, rec.ObjectKey)
		if err != nil {
			return refVerdict{}, err
		}
		if ok {
			return refVerdict{committed: true, study: rec.StudyInstanceUID}, nil
		}
		v.reason = commitment.ReasonProcessingFailure
	}
	if len(recs) > 0 {
		return v, nil
	}
	newest := attemptNone
	// The instance's records, newest first: the newest quarantine decides,
	// whatever transfers that stored nothing came after it (the quarantined
	// copy is what is held); else the newest such transfer (judgeTable). Past
	// the records instanceRecords reads, the newest records read decide.
	for r, err := range p.instanceRecords(ctx, AuditQuery{SOPInstanceUID: ref.SOPInstanceUID}) {
		if err != nil {
			return refVerdict{}, fmt.Errorf("pipeline: commitment: audit of instance: %w", err)
		}
		if r.Outcome == OutcomeRejected {
			v.study = r.StudyInstanceUID
			if r.SOPClassUID != "" && r.SOPClassUID != ref.SOPClassUID {
				return refVerdict{reason: commitment.ReasonClassInstanceConflict, study: v.study}, nil
			}
			if p.QuarantinedCommitted != nil && p.QuarantinedCommitted(tx.CallingAE) {
				ok, err := p.stored(ctx, r.ObjectKey)
				if err != nil {
					return refVerdict{}, err
				}
				if ok {
					return refVerdict{committed: true, study: v.study}, nil
				}
			}
			return refVerdict{reason: commitment.ReasonProcessingFailure, study: v.study}, nil
		}
		if newest == attemptNone {
			newest = attemptOf(r)
		}
	}
	if final {
		v.reason = judgeTable[newest]
	}
	return v, nil
}

// ObjectLister is what an ObjectReader may offer when Head costs more than knowing that an object is there
// (the local files, which hash an object on Head when the SCP did not).
type ObjectLister interface {
	Exists(ctx context.Context, key string) (bool, error)
}

// stored reports whether the object is in the store. Its errors name the object by its log name: the store's
// own (a file path, an S3 request) may hold the key and its UIDs.
func (p *Pipeline) stored(ctx context.Context, key string) (bool, error) {
	if key == "" {
		return false, nil
	}
	if l, ok := p.Objects.(ObjectLister); ok {
		found, err := l.Exists(ctx, key)
		if err != nil {
			return false, p.Names.Redact(fmt.Errorf("pipeline: commitment: look for object %v: %w", p.Names.Key(key), err), key)
		}
		return found, nil
	}
	_, err := p.Objects.Head(ctx, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotFound):
		return false, nil
	}
	return false, p.Names.Redact(fmt.Errorf("pipeline: commitment: head object %v: %w", p.Names.Key(key), err), key)
}

// announceCommitted announces a study every named instance of which a commitment request found committed,
// unless nothing of it is unannounced.
func (p *Pipeline) announceCommitted(ctx context.Context, a *announcer, studyUID string) error {
	d, err := p.Index.GetStudy(ctx, studyUID)
	if errors.Is(err, ErrNotFound) {
		return nil // its instances are committed as quarantined: the study itself is not indexed
	}
	if err != nil {
		return fmt.Errorf("pipeline: commitment: get study: %w", err)
	}
	if d.Revision <= d.AnnouncedRevision {
		return nil
	}
	return a.announce(ctx, d.StudySummary, CompletionStorageCommitment)
}

// deliverCommitment sends the result of a transaction in reporting, and records how it went: reported;
// retried later with backoff; given up past the report deadline.
func (p *Pipeline) deliverCommitment(ctx context.Context, a *announcer, tx CommitmentTransaction) (bool, error) {
	doc, err := p.readCommitmentResult(ctx, tx.ResultKey)
	if err != nil {
		return false, err
	}
	// Reported or given up by an earlier run, whose audit record or event failed: they are what is left to do.
	switch {
	case !tx.ReportedAt.IsZero():
		tx.State = CommitmentReported
		return p.finishCommitment(ctx, a, commitmentReported, tx, doc)
	case !tx.GivenUpAt.IsZero():
		tx.State = CommitmentUndeliverable
		return p.finishCommitment(ctx, a, commitmentUndeliverable, tx, doc)
	}
	// Held to the Reporter's bound, to the lease's end but for its slack (an evaluation or the result's read may
	// have taken some of the lease; leaseLeft), and to the run's end but for CommitmentWriteMargin (the commitment
	// function's invocation, which Lambda ends at its timeout, sooner than the bound, and before which its lease ends
	// CommitmentLeaseSkew after): the delivery ends, and how it went is written, before another worker may take the
	// transaction and while the run may still write. A report cut there is a failed attempt, counted towards the
	// report deadline, unless it was given less than MinReport (below).
	now := p.now()
	within := min(p.Reporter.MaxReport(), leaseLeft(ctx, now, tx.NextAttempt), runLeft(ctx))
	// leave leaves the transaction undelivered, no attempt counted, due at: the lease ends then, written while the
	// margin lasts.
	leave := func(at time.Time) (bool, error) {
		tx.dueAt(at)
		if _, err := p.Commitments.UpdateCommitment(ctx, tx); err != nil && !errors.Is(err, ErrConditionFailed) {
			return false, fmt.Errorf("pipeline: commitment: %w", err)
		}
		return false, nil
	}
	if within <= 0 {
		return leave(now) // nothing left of the run, or of a lease an evaluation used, to report in: the next run's
	}
	log := p.log().With("association", tx.AssociationID, "message_id", tx.MessageID)
	// One association at a time to a requesting AE, across workers too (another invocation of the function, another
	// local run): the AE is leased in the store for as long as the transaction (the delivery ends before that), by the
	// transaction, and released once the delivery has ended. Held by another worker's delivery, the transaction is
	// tried again shortly, no attempt counted.
	held, ok, err := p.Commitments.LeaseCommitmentPeer(ctx, tx.CallingAE, tx.ID, now, tx.NextAttempt)
	if err != nil {
		return false, fmt.Errorf("pipeline: commitment: lease the requesting AE: %w", err)
	}
	if !ok {
		log.Info("storage commitment report waits for another worker's delivery to the AE", "calling_ae", tx.CallingAE, "held_until", held)
		at := minTime(held, now.Add(commitmentPoll))
		if at.Before(now) {
			at = now // a lease ended (a store breaking its word): never due before now, first in the due order
		}
		return leave(at)
	}
	step := commitmentReported
	tx.Attempts++
	rctx, cancel := context.WithTimeout(ctx, within)
	delivery, rerr := p.Reporter.Report(rctx, CommitmentReport{CallingAE: tx.CallingAE, AssociationID: tx.AssociationID, Result: doc.Result})
	cut := rctx.Err() != nil && ctx.Err() == nil
	cancel()
	if err := p.Commitments.ReleaseCommitmentPeer(ctx, tx.CallingAE, tx.ID); err != nil && ctx.Err() == nil {
		// Its lease ends with the transaction's all the same (as it does for a run stopped, whose writes all fail).
		log.Warn("storage commitment: requesting AE not released; its lease ends with the transaction's", "calling_ae", tx.CallingAE, "err", err)
	}
	now = p.now()
	log = log.With("attempt", tx.Attempts)
	switch {
	case rerr != nil && cut && within < minReport(p.Reporter):
		// Given less (of the run, or of a lease an evaluation used) than the PACS needs to connect and answer
		// (MinReport), and cut there before it answered: the PACS had no chance, so neither an attempt is counted nor
		// the delivery given up past the report deadline; the lease is released, written while the margin lasts, so
		// that the next run reports it. A PACS that answers in the time there was (most do in well under a second)
		// has its result now, not at the next run.
		tx.Attempts--
		log.Info("storage commitment report cut by the run's end before the PACS answered; left for the next run", "within", within.String())
		return leave(now)
	case rerr == nil:
		tx.ReportedAt, tx.SameAssociation, tx.LastError = now, delivery.SameAssociation, ""
		log.Info("storage commitment reported", "same_association", delivery.SameAssociation)
		// Recorded before the audit record and the event, still in reporting (due when the lease runs out): were
		// either to fail (the event bus down), the next run would otherwise report to the PACS again, every lease
		// for as long as it failed.
		if tx, err = p.Commitments.UpdateCommitment(ctx, tx); err != nil {
			return false, fmt.Errorf("pipeline: commitment: %w", err)
		}
		tx.State = CommitmentReported
	case !now.Before(tx.ReportDeadline):
		tx.GivenUpAt, tx.LastError = now, lastError(rerr.Error())
		step = commitmentUndeliverable
		// The alarm watches this line (a metric filter on UndeliverableLog).
		log.Error(UndeliverableLog, "err", tx.LastError, "calling_ae", tx.CallingAE)
		// Recorded before the audit record and the event, as a delivery is: were either to fail, the next run
		// would otherwise try the PACS and give up again, logging the line above every lease.
		if tx, err = p.Commitments.UpdateCommitment(ctx, tx); err != nil {
			return false, fmt.Errorf("pipeline: commitment: %w", err)
		}
		tx.State = CommitmentUndeliverable
	default:
		tx.LastError = lastError(rerr.Error())
		// The last attempt comes at the deadline, not a backoff past it.
		tx.dueAt(minTime(now.Add(reportBackoff(tx.Attempts)), tx.ReportDeadline))
		log.Warn("storage commitment report failed; will retry", "err", tx.LastError, "next_attempt", tx.NextAttempt)
		if tx, err = p.Commitments.UpdateCommitment(ctx, tx); err != nil {
			return false, fmt.Errorf("pipeline: commitment: %w", err)
		}
		return false, nil
	}
	return p.finishCommitment(ctx, a, step, tx, doc)
}

// maxLastError bounds the last error of a failed delivery as lastError keeps it, in bytes, associationaudit.Cut
// included (docs/conformance.md's bound): our own words say what failed in far less (a certificate named at
// tlstrust's bounds included).
const maxLastError = 1024

// lastError is what is kept of msg, the error of a failed delivery: the transaction's LastError, the log lines of
// the failure, the undeliverable record's last error, by this one rule on every path, a LastError an earlier
// version kept included. It keeps what a PACS's administrator acts on, in the reporter's words (commitreport): the
// AE and its address, the DIMSE status by code and meaning, the A-ASSOCIATE-RJ's result, source and reason, the
// A-ABORT's source and reason, the TLS alert, the network error, none of which names a UID. It keeps nothing of the
// PACS's own text: a status's Error Comment (0000,0902), which may name anything (the report's UIDs, a patient's
// name) at any length, is cut (dimse.WithoutComments); and the whole is cut to maxLastError bytes, Cut included: a
// LastError kept so is kept again unchanged.
func lastError(msg string) string {
	s := dimse.WithoutComments(msg)
	if len(s) <= maxLastError {
		return s
	}
	n := maxLastError - len(associationaudit.Cut)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + associationaudit.Cut
}

// LastErrorSaid is the transaction's LastError as every reader says it (the undeliverable record, the portal): by
// lastError's rule, which a LastError an earlier version kept with a PACS's Error Comment, or longer, is held to too.
func (tx CommitmentTransaction) LastErrorSaid() string { return lastError(tx.LastError) }

// finishCommitment audits a transaction's end, publishes Storage Commitment Completed and records it done. Once the
// run's events have stopped (a's rule) the event is left, the transaction still reporting, to the run after the lease;
// an event the bus refuses on its own is not: the transaction is done without it, and the refusal returned with true.
func (p *Pipeline) finishCommitment(ctx context.Context, a *announcer, step commitmentStep, tx CommitmentTransaction, doc CommitmentResultDoc) (bool, error) {
	if err := p.auditCommitment(ctx, step, tx, &doc); err != nil {
		return false, err
	}
	if err := a.stopped(ctx); err != nil {
		return false, eventLeft{err}
	}
	err := p.publishCompleted(ctx, tx, doc)
	a.published(err)
	var refused error
	switch {
	case errors.As(err, new(completedRefused)):
		// Refused for what it is, it would be refused again at every lease, the transaction reporting for ever:
		// it finishes without its event, and the run fails with the refusal.
		refused = err
	case err != nil:
		return false, err
	}
	tx.Leased = false // done: no worker holds it (Leased)
	if _, err := p.Commitments.UpdateCommitment(ctx, tx); err != nil {
		return false, fmt.Errorf("pipeline: commitment: %w", err)
	}
	return true, refused
}

// CompletedRefusedLog is the log message of a Storage Commitment Completed the bus refused for what it is: the
// transaction is over without it.
const CompletedRefusedLog = "storage commitment completed event refused; transaction finished without it"

// publishCompleted publishes a finished transaction's Storage Commitment Completed. An event the bus refuses for
// what it is (publish's eventRefused, without the bus failing besides) would be refused again at every try: it is
// logged, the transaction named by its association and message id as every line of it is (never a UID), and
// returned as a completedRefused, for the transaction to be over without it.
func (p *Pipeline) publishCompleted(ctx context.Context, tx CommitmentTransaction, doc CommitmentResultDoc) error {
	err := p.publishCommitment(ctx, tx, doc)
	if !errors.As(err, new(eventRefused)) || errors.As(err, new(busError)) {
		return err
	}
	p.log().Error(CompletedRefusedLog, "association", tx.AssociationID, "message_id", tx.MessageID,
		"state", string(tx.State), "err", err)
	return completedRefused{fmt.Errorf("pipeline: commitment on association %s, message %d, finished without its event: %w",
		tx.AssociationID, tx.MessageID, err)}
}

// completedRefused is a Storage Commitment Completed the bus refused for what it is (publishCompleted).
type completedRefused struct{ error }

func (e completedRefused) Unwrap() error { return e.error }

// A failed delivery of a Storage Commitment result is retried after CommitmentReportFirstRetry, the wait doubling
// after each failure up to CommitmentReportMaxRetry, until the report deadline. The onboarding kit
// (infra/onboarding) tells the sites so from these.
const (
	CommitmentReportFirstRetry = 10 * time.Second
	CommitmentReportMaxRetry   = 5 * time.Minute
)

// reportBackoff is the wait after the n-th failed delivery: CommitmentReportFirstRetry doubling, at most
// CommitmentReportMaxRetry.
func reportBackoff(n int) time.Duration {
	d := CommitmentReportFirstRetry
	for i := 1; i < n && d < CommitmentReportMaxRetry; i++ {
		d *= 2
	}
	return min(d, CommitmentReportMaxRetry)
}

func (p *Pipeline) readCommitmentResult(ctx context.Context, key string) (CommitmentResultDoc, error) {
	var doc CommitmentResultDoc
	rc, err := p.Objects.OpenRange(ctx, key, 0, maxRequestBytes)
	if err != nil {
		return doc, fmt.Errorf("pipeline: read commitment result: %w", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxRequestBytes))
	if err != nil {
		return doc, fmt.Errorf("pipeline: read commitment result: %w", err)
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return doc, fmt.Errorf("pipeline: commitment result: %w", err)
	}
	return doc, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
