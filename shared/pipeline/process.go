package pipeline

import (
	"context"
	"errors"
	"time"
)

var errNotImplemented = errors.New("pipeline: not implemented yet")

// ObjectResult reports what ProcessObject did with one object.
type ObjectResult struct {
	Key       string
	Skipped   bool          // not an incoming object (wrong prefix, sidecar ...)
	Valid     bool          // passed validation
	Outcome   UpsertOutcome // index outcome for valid objects
	Findings  []Finding
	BytesRead int64 // bytes read from the object store
}

// ProcessObject validates, normalizes, indexes, audits and announces the
// object stored at key (under incoming/). It is idempotent: processing the
// same key again changes nothing and publishes nothing new. An error means
// the caller should retry later (the message goes back to the queue).
func (p *Pipeline) ProcessObject(ctx context.Context, key string) (ObjectResult, error) {
	return ObjectResult{}, errNotImplemented
}

// ProcessAuditRecord turns an SCP association record stored at key (under
// audit/) into an audit trail record. Idempotent.
func (p *Pipeline) ProcessAuditRecord(ctx context.Context, key string) error {
	return errNotImplemented
}

// AnnounceStableStudies publishes Study Received / Study Updated for every
// study quiet since now-QuietPeriod with unannounced instances, and returns
// how many it announced.
func (p *Pipeline) AnnounceStableStudies(ctx context.Context, now time.Time) (int, error) {
	return 0, errNotImplemented
}
