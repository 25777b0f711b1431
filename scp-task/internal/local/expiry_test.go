package local

import (
	"context"
	"errors"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// TestAuditRecordExpiry: with AuditExpirationDays set, the association
// records older than that go from objects/audit/ and the audit trail keeps
// every row of them; a crash at any point of the expiry (after each file
// removed, after the batch's watermark) loses nothing and repeats nothing:
// after a restart the expiry finishes, the trail holds the same rows, the
// ledger the same keys, done, and nothing is handed off again.
func TestAuditRecordExpiry(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	for _, crashAt := range []int{0, 1, 2, 3, 4} { // 0: no crash; 3 removals, then the watermark
		t.Run("crash at step "+string(rune('0'+crashAt)), func(t *testing.T) {
			dir := t.TempDir()
			// Set after the start: the expirer, started with it, would
			// run beside the expiry this test runs itself.
			l := startTest(t, dir)
			l.cfg.AuditExpirationDays = 3
			var old, kept []string
			for i, at := range []time.Time{now.AddDate(0, 0, -10), now.AddDate(0, 0, -9), now.AddDate(0, 0, -5), now} {
				p := putRecord(t, l, at, "assoc"+string(rune('a'+i)))
				if i < 3 {
					old = append(old, p)
				} else {
					kept = append(kept, p)
				}
			}
			testenv.Eventually(t, "records in the trail and done", func() bool {
				return count(t, l, `SELECT COUNT(*) FROM audit`) == 4 && count(t, l, `SELECT COUNT(*) FROM handoff WHERE state = 'done'`) == 4
			})
			step := 0
			l.cfg.expiryCrash = func() bool { step++; return step == crashAt }
			n, err := l.expireRecords(ctx, now)
			switch {
			case crashAt == 0 && (err != nil || n != 3):
				t.Fatalf("expireRecords = %d, %v; want 3 removed", n, err)
			case crashAt > 0 && !errors.Is(err, errInjectedCrash):
				t.Fatalf("expireRecords = %d, %v; want the injected crash", n, err)
			}
			stop(t, l)

			l = startTest(t, dir)
			defer stop(t, l)
			l.cfg.AuditExpirationDays = 3
			if _, err := l.expireRecords(ctx, now); err != nil {
				t.Fatal(err)
			}
			for _, p := range old {
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("an expired record is still there (%v)", err)
				}
			}
			for _, p := range kept {
				if _, err := os.Stat(p); err != nil {
					t.Errorf("a record younger than the expiry went: %v", err)
				}
			}
			// Nothing lost, nothing repeated: the same rows, none handed
			// off again.
			for q, want := range map[string]int{
				`SELECT COUNT(*) FROM audit`:                                4,
				`SELECT COUNT(*) FROM handoff WHERE state = 'done'`:         4,
				`SELECT COUNT(*) FROM handoff WHERE attempts != 1`:          0,
				`SELECT COUNT(*) FROM record_expiry WHERE through_key > ''`: 1,
			} {
				if got := count(t, l, q); got != want {
					t.Errorf("%s = %d, want %d", q, got, want)
				}
			}
			if n, err := l.db.Handoff().Counts(ctx); err != nil || n["pending"] != 0 {
				t.Errorf("hand-off counts %v, %v: want nothing pending", n, err)
			}
		})
	}
}

// TestAuditRecordExpiryAtStart: the expiry runs as the SCP starts, not
// only an hour later, so that one run for less than an hour at a time (a
// workstation's working session, a restart) expires its records too.
// Records that came due while it was stopped go soon after the start.
func TestAuditRecordExpiryAtStart(t *testing.T) {
	dir := t.TempDir()
	l := startTest(t, dir)
	old := putRecord(t, l, time.Now().AddDate(0, 0, -10), "assocold")
	young := putRecord(t, l, time.Now(), "assocyoung")
	testenv.Eventually(t, "the records done", func() bool {
		return count(t, l, `SELECT COUNT(*) FROM handoff WHERE state = 'done'`) == 2
	})
	stop(t, l)

	cfg := testConfig(dir)
	cfg.AuditExpirationDays = 3
	l, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer stop(t, l)
	testenv.Eventually(t, "the old record expired soon after the start", func() bool {
		_, err := os.Stat(old)
		return errors.Is(err, os.ErrNotExist)
	})
	if _, err := os.Stat(young); err != nil {
		t.Errorf("a record younger than the expiry went: %v", err)
	}
}

// putRecord stores, through l's store as the SCP does, an association
// record of the association id dated at, and returns its file's path.
func putRecord(t *testing.T, l *Local, at time.Time, id string) string {
	t.Helper()
	rec := associationaudit.Record{Event: associationaudit.EventRejected, Time: at, AssociationID: id,
		CallingAE: "EVIL_AE", CalledAE: "REMOTE_AE", PeerAddr: "127.0.0.1:6000", RejectResult: 1, RejectSource: 1, RejectReason: 3,
		Reason: "calling AE not allowed", Seq: 1}
	body, err := associationaudit.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	key, err := associationaudit.Key(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Store().PutRecord(context.Background(), key, body); err != nil {
		t.Fatal(err)
	}
	p, err := l.files.path(key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// count runs a COUNT query on l's database.
func count(t *testing.T, l *Local, q string) int {
	t.Helper()
	var n int
	if err := l.db.SQL().QueryRowContext(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAuditExpirationDaysBounded: a number of days past
// MaxAuditExpirationDays is refused at the start, naming the setting. Such
// a number took the cutoff date around the calendar (AddDate overflows):
// math.MaxInt days put it at tomorrow, and the expiry removed every
// record in the trail, today's too.
func TestAuditExpirationDaysBounded(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		days int
		ok   bool
	}{
		{0, true}, {MaxAuditExpirationDays, true}, {-1, false}, {MaxAuditExpirationDays + 1, false}, {math.MaxInt, false},
	} {
		t.Run(strconv.Itoa(tc.days), func(t *testing.T) {
			cfg := testConfig(t.TempDir())
			cfg.AuditExpirationDays = tc.days
			l, err := Start(ctx, cfg)
			if err != nil {
				if tc.ok || !strings.Contains(err.Error(), "audit expiration") {
					t.Fatalf("Start: %v", err)
				}
				return
			}
			defer stop(t, l)
			if tc.ok {
				return
			}
			young := putRecord(t, l, time.Now(), "assocyoung")
			testenv.Eventually(t, "the record done", func() bool {
				return count(t, l, `SELECT COUNT(*) FROM handoff WHERE state = 'done'`) == 1
			})
			n, err := l.expireRecords(ctx, time.Now())
			_, serr := os.Stat(young)
			t.Errorf("Start took %d days; the expiry then removed %d records (%v), today's gone: %v", tc.days, n, err, errors.Is(serr, os.ErrNotExist))
		})
	}
}
