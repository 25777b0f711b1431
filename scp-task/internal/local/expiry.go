package local

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Association records expire as the bucket's auditExpirationDays expires
// them in AWS: the SCP's record files under objects/audit/ go once they
// are older than Config.AuditExpirationDays and the pipeline has made
// them rows of the audit trail; the trail (the audit table), which the
// portal, the audit feed, study rejects and Storage Commitment read, is
// kept whole, as the audit table is in AWS.

// MaxAuditExpirationDays bounds Config.AuditExpirationDays (and
// --audit-expiration-days): 100 years, the bound infra keeps
// storage.objectLock.days to. Far past it the cutoff date is not one a
// key can hold, and near the int range it wrapped around the calendar:
// math.MaxInt days made it tomorrow, and every record went.
const MaxAuditExpirationDays = 36500

// expiryBatch is how many records one round of the expiry removes
// before it records how far it got: a bounded batch, off the C-STORE
// path, a crash of which repeats at most its removals (finding nothing).
const expiryBatch = 256

// expiryEvery is how often the expiry runs after its first run, at the
// start: an SCP run for less than this at a time expires its records too.
const expiryEvery = time.Hour

// ExpiredRecordsLog is the line of an expiry that removed records.
const ExpiredRecordsLog = "expired association records"

// expirer expires association records at once and then every
// expiryEvery until ctx is done.
func (l *Local) expirer(ctx context.Context) {
	expire := func() {
		if _, err := l.expireRecords(ctx, time.Now()); err != nil && ctx.Err() == nil {
			l.log.Warn("expire association records; will retry", "err", err)
		}
	}
	expire()
	every(ctx, expiryEvery, expire)
}

// expireRecords removes the files of the association records dated before
// now less Config.AuditExpirationDays (their keys' dates, as the records'
// times) that the ledger has as done, in batches, and returns how many it
// removed. Each batch: the ledger's state is made durable (Sync), then
// the files are removed, then the watermark moves past them
// (Handoff.ExpiredThrough). A crash anywhere leaves the watermark before
// the batch: the next run lists the batch again and removes what is left.
// Nothing is handed off or processed again: the ledger's rows stay.
func (l *Local) expireRecords(ctx context.Context, now time.Time) (int, error) {
	if l.cfg.AuditExpirationDays <= 0 {
		return 0, nil
	}
	cutoff := now.UTC().AddDate(0, 0, -l.cfg.AuditExpirationDays)
	before := pipeline.AuditPrefix + cutoff.Format("2006/01/02") + "/"
	h := l.db.Handoff()
	removed := 0
	defer func() {
		if removed > 0 {
			l.log.Info(ExpiredRecordsLog, "count", removed, "days", l.cfg.AuditExpirationDays)
		}
	}()
	for {
		keys, through, err := h.ExpiredRecords(ctx, pipeline.AuditPrefix, before, expiryBatch)
		if err != nil || through == "" {
			return removed, err
		}
		// Their commits must be durable before their files go.
		if err := l.db.Sync(ctx); err != nil {
			return removed, err
		}
		for _, k := range keys {
			p, err := l.files.path(k)
			if err != nil {
				return removed, fmt.Errorf("local: expire %v: %w", l.cfg.Names.Key(k), err)
			}
			gone, err := l.store.removeRecord(k, p)
			if err != nil {
				return removed, l.cfg.Names.Redact(fmt.Errorf("local: expire %v: %w", l.cfg.Names.Key(k), err), k)
			}
			if !gone {
				return removed, nil // a Put of it is under way: the next run takes it
			}
			removed++
			if l.crashed() {
				return removed, errInjectedCrash
			}
		}
		if err := h.ExpiredThrough(ctx, through); err != nil {
			return removed, err
		}
		if l.crashed() {
			return removed, errInjectedCrash
		}
	}
}

// crashed reports whether a test's Config.expiryCrash has the process
// die here.
func (l *Local) crashed() bool { return l.cfg.expiryCrash != nil && l.cfg.expiryCrash() }

// errInjectedCrash is what a test's expiryCrash makes expireRecords end
// with: the process would have died there.
var errInjectedCrash = errors.New("local: injected crash")
