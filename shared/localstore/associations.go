package localstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Association is the audit trail of one association in one row: who, when
// and for how long, what it stored and how it ended.
type Association struct {
	ID        string    `json:"associationId"`
	CallingAE string    `json:"callingAe,omitempty"`
	CalledAE  string    `json:"calledAe,omitempty"`
	PeerAddr  string    `json:"peerAddr,omitempty"`
	Start     time.Time `json:"start"`
	// End is the time of the record that ended it; zero while it is open
	// (or its end was never recorded).
	End time.Time `json:"end,omitzero"`
	// Outcome is how it ended: association-released, -aborted or
	// -rejected; unclean-stop without an end record when its run stopped
	// uncleanly; "open" without an end record otherwise.
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	// RefusedContexts is the reason of its association-accepted record:
	// which presentation contexts its A-ASSOCIATE-AC refused and why;
	// empty when it refused none. An association that accepted none ends
	// without a transfer, its Reason the peer's (a connection closed), and
	// this says why.
	RefusedContexts string `json:"refusedContexts,omitempty"`
	// Instances counts the instance records (instanceOutcomes: stored,
	// duplicate, conflict, rejected, store-failed); Duplicates those of identical resends (each
	// transfer of content already held has its record), Rejected those
	// quarantined (resends of a quarantined object among them), Failed
	// the store-failed ones: C-STOREs that stored nothing, those refused
	// with a failure status (sent or not: ResponseNotSent) and those the
	// association's end cut short once their header was read (answered
	// nothing: NotAnswered).
	Instances  int `json:"instances"`
	Duplicates int `json:"duplicates"`
	Rejected   int `json:"rejected"`
	Failed     int `json:"failed"`
	// CommitmentRequests counts the Storage Commitment requests (N-ACTIONs)
	// made on it, refused ones included; their records (requested,
	// evaluated, reported) are not instances.
	CommitmentRequests int `json:"commitmentRequests"`
	// Stored is how many C-STOREs the SCP stored and acknowledged on it,
	// identical resends included, from its end record (0 while open). One
	// that ended with its run (AssociationRunStopped) has no end record:
	// its Instances less Failed (identical resends among them, each with
	// its duplicate record, once the record was written).
	Stored int `json:"stored"`
}

// Duration is how long the association lasted (zero while open).
func (a Association) Duration() time.Duration {
	if a.End.IsZero() {
		return 0
	}
	return a.End.Sub(a.Start)
}

// AssociationOpen is the outcome of an association without an end record.
const AssociationOpen = "open"

// AssociationRunStopped is the outcome of an association without an end
// record whose run (the process that served it) stopped uncleanly, as a
// later start or a running SCP reported (an unclean-stop or
// unclean-stop-found record names the run): it ended with its run, and
// its end record was never written.
const AssociationRunStopped = pipeline.OutcomeUncleanStop

// AssociationOutcomes are the outcomes an Association has, as Associations
// filters by them: open, or how it ended.
var AssociationOutcomes = []string{AssociationOpen, associationaudit.EventReleased, associationaudit.EventAborted, associationaudit.EventRejected,
	AssociationRunStopped}

// instanceOutcomes are the outcomes of the records an association's row
// counts as its instances: the pipeline's of each object and the SCP's of
// a C-STORE it failed. No other record is one, whatever it names: an
// unparseable-record (its association id empty), a run's start or stop.
var instanceOutcomes = append(slices.Clip(pipeline.InstanceOutcomes), associationaudit.EventStoreFailed)

// deadRunsSQL selects the records that report runs which stopped
// uncleanly (their previousRuns), which the audit_unclean index holds.
const (
	deadRunsSQL   = `outcome IN ('` + pipeline.OutcomeUncleanStop + `', '` + associationaudit.EventUncleanStopFound + `')`
	deadRunsQuery = `SELECT record FROM audit WHERE ` + deadRunsSQL
)

// deadRuns reads the instances of the runs the trail reports as stopped
// uncleanly.
func (db *DB) deadRuns(ctx context.Context) (map[string]bool, error) {
	rows, err := db.read.QueryContext(ctx, deadRunsQuery)
	if err != nil {
		return nil, fmt.Errorf("localstore: dead runs: %w", err)
	}
	defer rows.Close()
	dead := map[string]bool{}
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return nil, fmt.Errorf("localstore: dead runs: %w", err)
		}
		var r struct {
			PreviousRuns []associationaudit.UncleanRun `json:"previousRuns"`
		}
		if json.Unmarshal([]byte(body), &r) == nil {
			for _, run := range r.PreviousRuns {
				dead[run.Instance] = true
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("localstore: dead runs: %w", err)
	}
	return dead, nil
}

// endedWithRun gives a, open, the outcome AssociationRunStopped when its
// run is among dead (read once, by the caller's first open association).
func (db *DB) endedWithRun(ctx context.Context, a *Association, dead *map[string]bool) error {
	if a.Outcome != AssociationOpen {
		return nil
	}
	if *dead == nil {
		d, err := db.deadRuns(ctx)
		if err != nil {
			return err
		}
		*dead = d
	}
	if i := strings.LastIndexByte(a.ID, '-'); i > 0 && (*dead)[a.ID[:i]] {
		a.Outcome, a.Reason = AssociationRunStopped, "no end record: the SCP serving it stopped uncleanly (its run "+a.ID[:i]+")"
		// The end record counts the C-STOREs stored; without one, its
		// instance records do, less those the SCP refused.
		a.Stored = a.Instances - a.Failed
	}
	return nil
}

// AssociationQuery selects associations, newest first.
type AssociationQuery struct {
	CallingAE string
	Outcome   string // one of AssociationOutcomes
	Limit     int    // 0: 50
	Cursor    string // AssociationPage.Next of the previous page
}

// cursorScope is the scope of q's cursors: its filters.
func (q AssociationQuery) cursorScope() *pipeline.CursorScope {
	return pipeline.NewCursorScope("associations").Text(q.CallingAE, q.Outcome)
}

// AssociationPage is one page of associations.
type AssociationPage struct {
	Associations []Association `json:"associations"`
	Next         string        `json:"next,omitempty"`
}

// associationStart is the outcome of the record that opens an
// association in the trail: accepted, or rejected (which also ends it).
const associationStartSQL = `outcome IN ('` + associationaudit.EventAccepted + `', '` + associationaudit.EventRejected + `')`

// Associations lists associations newest first, one row each. A page
// reads its associations' start records through the time index, then
// each one's records through the association index: it costs the page,
// not the trail.
func (db *DB) Associations(ctx context.Context, q AssociationQuery) (AssociationPage, error) {
	if q.Outcome != "" && !slices.Contains(AssociationOutcomes, q.Outcome) {
		// Unknown, it would match none: the search would read the whole trail.
		return AssociationPage{}, &SearchError{"associations", "outcome is " + OneOf(AssociationOutcomes)}
	}
	var ct, cs int64
	after := q.Cursor != ""
	if after {
		var err error
		if ct, cs, err = openCursor(q.cursorScope(), q.Cursor); err != nil {
			return AssociationPage{}, fmt.Errorf("localstore: associations: %w", err)
		}
	}
	limit := pipeline.PageLimit(q.Limit, 50, 500)
	page := AssociationPage{Associations: []Association{}}
	var dead map[string]bool
	// An outcome filter is applied to the gathered rows: read on until the
	// page is full or the trail ends.
	for {
		where := []string{associationStartSQL, "association_id != ''"}
		var args []any
		if q.CallingAE != "" {
			where, args = append(where, "calling_ae = ?"), append(args, q.CallingAE)
		}
		if after {
			where, args = append(where, "(time < ? OR (time = ? AND seq < ?))"), append(args, ct, ct, cs)
		}
		rows, err := db.read.QueryContext(ctx, `SELECT seq, time, association_id FROM audit WHERE `+strings.Join(where, " AND ")+
			` ORDER BY time DESC, seq DESC LIMIT ?`, append(args, limit)...)
		if err != nil {
			return AssociationPage{}, fmt.Errorf("localstore: associations: %w", err)
		}
		type start struct {
			seq, time int64
			id        string
		}
		var starts []start
		for rows.Next() {
			var s start
			if err := rows.Scan(&s.seq, &s.time, &s.id); err != nil {
				rows.Close()
				return AssociationPage{}, fmt.Errorf("localstore: associations: %w", err)
			}
			starts = append(starts, s)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return AssociationPage{}, fmt.Errorf("localstore: associations: %w", err)
		}
		for i, s := range starts {
			a, err := db.association(ctx, s.id)
			if err != nil {
				return AssociationPage{}, err
			}
			if err := db.endedWithRun(ctx, &a, &dead); err != nil {
				return AssociationPage{}, err
			}
			ct, cs, after = s.time, s.seq, true
			if q.Outcome == "" || a.Outcome == q.Outcome {
				page.Associations = append(page.Associations, a)
			}
			if len(page.Associations) == limit {
				if i < len(starts)-1 || len(starts) == limit {
					page.Next = q.cursorScope().Seal(formatCursor(ct, cs))
				}
				return page, nil
			}
		}
		if len(starts) < limit {
			return page, nil
		}
	}
}

// association gathers one association's records.
func (db *DB) association(ctx context.Context, id string) (Association, error) {
	rows, err := db.read.QueryContext(ctx, `SELECT time, outcome, calling_ae, called_ae, record FROM audit WHERE association_id = ? ORDER BY time, seq`, id)
	if err != nil {
		return Association{}, fmt.Errorf("localstore: association: %w", err)
	}
	defer rows.Close()
	a := Association{ID: id, Outcome: AssociationOpen}
	for rows.Next() {
		var t int64
		var outcome, calling, called, body string
		if err := rows.Scan(&t, &outcome, &calling, &called, &body); err != nil {
			return Association{}, fmt.Errorf("localstore: association: %w", err)
		}
		at := fromNano(t)
		if a.Start.IsZero() || at.Before(a.Start) {
			a.Start = at
		}
		a.CallingAE = cmpOr(a.CallingAE, calling)
		a.CalledAE = cmpOr(a.CalledAE, called)
		switch outcome {
		case associationaudit.EventAccepted:
			if r, ok := associationFieldsOf(body); ok {
				a.PeerAddr, a.RefusedContexts = cmpOr(a.PeerAddr, r.PeerAddr), r.Reason
			}
		case associationaudit.EventReleased, associationaudit.EventAborted, associationaudit.EventRejected:
			a.End, a.Outcome = at, outcome
			if r, ok := associationFieldsOf(body); ok {
				a.PeerAddr, a.Reason, a.Stored = cmpOr(a.PeerAddr, r.PeerAddr), r.Reason, r.Stored
			}
		case pipeline.OutcomeCommitmentRequested, associationaudit.EventCommitmentRefused:
			a.CommitmentRequests++
		case pipeline.OutcomeCommitted, pipeline.OutcomeCommitmentFailures, pipeline.OutcomeCommitmentReported, pipeline.OutcomeCommitmentUndeliverable:
			// The requests' later steps: counted by their request.
		default:
			if !slices.Contains(instanceOutcomes, outcome) {
				continue
			}
			a.Instances++
			switch outcome {
			case pipeline.OutcomeRejected:
				a.Rejected++
			case pipeline.OutcomeDuplicate:
				// A resend of an object validation quarantined (its
				// record names the quarantined copy) is quarantined too,
				// not held.
				if r, ok := associationFieldsOf(body); ok && r.QuarantineKey != "" {
					a.Rejected++
					break
				}
				a.Duplicates++
			case associationaudit.EventStoreFailed:
				a.Failed++
			}
		}
	}
	if err := rows.Err(); err != nil {
		return Association{}, fmt.Errorf("localstore: association: %w", err)
	}
	return a, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// associationFields are the fields of an association's record (an audit
// record's JSON) its summary reads, decoded once.
type associationFields struct {
	PeerAddr      string `json:"peerAddr"`
	Reason        string `json:"reason"`
	Stored        int    `json:"storedInstances"`
	QuarantineKey string `json:"quarantineKey"`
}

func associationFieldsOf(record string) (associationFields, bool) {
	var r associationFields
	return r, json.Unmarshal([]byte(record), &r) == nil
}

// Association returns one association's summary; the error wraps
// pipeline.ErrNotFound when the trail has no record of it.
func (db *DB) Association(ctx context.Context, id string) (Association, error) {
	a, err := db.association(ctx, id)
	if err != nil {
		return Association{}, err
	}
	if a.Start.IsZero() {
		return Association{}, fmt.Errorf("localstore: association: %w", pipeline.ErrNotFound)
	}
	var dead map[string]bool
	if err := db.endedWithRun(ctx, &a, &dead); err != nil {
		return Association{}, err
	}
	return a, nil
}

// associationRecordsScope is the scope of the cursors of association
// id's records.
func associationRecordsScope(id string) *pipeline.CursorScope {
	return pipeline.NewCursorScope("association records").Text(id)
}

// AssociationRecords lists the audit records of one association, oldest
// first, a page at a time (cursor: the previous page's Next, sealed to
// the association).
func (db *DB) AssociationRecords(ctx context.Context, id, cursor string, limit int) (pipeline.AuditPage, error) {
	limit = pipeline.PageLimit(limit, 100, 1000)
	scope := associationRecordsScope(id)
	args := []any{id}
	cond := ""
	if cursor != "" {
		ct, cs, err := openCursor(scope, cursor)
		if err != nil {
			return pipeline.AuditPage{}, fmt.Errorf("localstore: association records: %w", err)
		}
		cond, args = " AND (time > ? OR (time = ? AND seq > ?))", append(args, ct, ct, cs)
	}
	rows, err := db.read.QueryContext(ctx, `SELECT seq, time, record FROM audit WHERE association_id = ?`+cond+` ORDER BY time, seq LIMIT ?`, append(args, limit+1)...)
	if err != nil {
		return pipeline.AuditPage{}, fmt.Errorf("localstore: association records: %w", err)
	}
	page, err := readAuditPage(rows, limit)
	if err != nil {
		return pipeline.AuditPage{}, fmt.Errorf("localstore: association records: %w", err)
	}
	page.Next = scope.Seal(page.Next)
	return page, nil
}
