package e2e

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
)

// TestCleanStopLeavesNothingPending: a clean stop (SIGTERM) processes
// what local mode was handed before the database closes, its own
// application-stop record last among them, so the audit trail read from
// the data directory without starting the SCP again holds the stop and
// the hand-off is empty: the next start recovers nothing. The stop record
// was left in the hand-off, processed only at the next start (which
// logged 'recovered the hand-off' with unprocessed 1 after every clean
// stop), so a reader of the trail did not see the stop until then.
func TestCleanStopLeavesNothingPending(t *testing.T) {
	need(t, "dcmsend")
	for _, tc := range []struct {
		name string
		send bool
	}{
		{"nothing sent", false},
		{"a study sent", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := t.TempDir()
			n := newNode(t, dataDir)
			n.start()
			if tc.send {
				if out, err := n.dcmsend("LOCAL_AE", writeSynthStudy(t, t.TempDir())...); err != nil {
					t.Fatalf("dcmsend: %v\n%s", err, out)
				}
			}
			n.stop()
			if n.exitCode != 0 {
				t.Fatalf("scp-task exited with %d", n.exitCode)
			}
			if strings.Contains(n.logText(), `"msg":"pipeline work left pending at stop`) {
				t.Errorf("the stop left work pending:\n%s", n.logText())
			}

			counts, outcomes := readDataDir(t, dataDir)
			if counts["pending"] != 0 || counts["failed"] != 0 {
				t.Errorf("hand-off after a clean stop: %v, want nothing pending or failed", counts)
			}
			if outcomes[associationaudit.EventApplicationStop] != 1 {
				t.Errorf("audit trail after a clean stop: %v, want one %s", outcomes, associationaudit.EventApplicationStop)
			}
			if tc.send && outcomes["stored"] != len(synthInstances) {
				t.Errorf("audit trail after a clean stop: %v, want %d stored", outcomes, len(synthInstances))
			}

			// The next start has nothing to recover.
			logStart := n.log.Len()
			n.start()
			n.stop()
			if strings.Contains(n.logText()[logStart:], `"msg":"recovered the hand-off"`) {
				t.Errorf("the start after a clean stop recovered the hand-off:\n%s", n.logText()[logStart:])
			}
		})
	}
}

// readDataDir reads the data directory's database as the process left
// it, without starting the SCP: the hand-off's counts (Handoff.Counts)
// and the audit trail's records by outcome.
func readDataDir(t *testing.T, dataDir string) (handoff, outcomes map[string]int) {
	t.Helper()
	ctx := context.Background()
	db, err := localstore.Open(ctx, filepath.Join(dataDir, "ingest.db"))
	if err != nil {
		t.Fatal(err)
	}
	handoff, err = db.Handoff().Counts(ctx)
	if err == nil {
		outcomes, err = auditOutcomes(ctx, db)
	}
	if err = errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	return handoff, outcomes
}

// auditOutcomes counts the audit trail's records by outcome.
func auditOutcomes(ctx context.Context, db *localstore.DB) (map[string]int, error) {
	rows, err := db.SQL().QueryContext(ctx, `SELECT outcome, COUNT(*) FROM audit GROUP BY outcome`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var outcome string
		var n int
		if err := rows.Scan(&outcome, &n); err != nil {
			return nil, err
		}
		out[outcome] = n
	}
	return out, rows.Err()
}
