package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/portal"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog/jsonlogtest"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/retry"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// failingIndex is an index whose StableStudies fails while fail is set: an
// announcer's run that fails as a whole (on a read-only file system, the
// run's writes).
type failingIndex struct {
	pipeline.IndexStore
	fail *atomic.Bool
}

var errIO = errors.New("input/output error")

func (x failingIndex) StableStudies(ctx context.Context, quietSince time.Time, limit int) ([]pipeline.StudySummary, error) {
	if x.fail.Load() {
		return nil, errIO
	}
	return x.IndexStore.StableStudies(ctx, quietSince, limit)
}

// loopLines returns the lines of a loop's failures in logs, decoded: msg
// (a transient failure's) and its final failure's.
func loopLines(t *testing.T, logs string, msg string) []map[string]any {
	t.Helper()
	return jsonlogtest.Counted(t, fmt.Sprintf(`{ ($.msg = %q) || ($.msg = %q) }`, msg, msg+" failed for good; stopped until a restart"), []byte(logs))
}

// TestLoopFailuresTold: local mode's event delivery and announcer follow
// the journal's rule (shared/retry). Once a database fsync failed, which
// nothing heals before a restart, each tells its failure once, at ERROR,
// and runs no more: both logged it at WARN at each of their runs (event
// delivery every second and at each commit, the announcer at each of its
// periods) until the restart, a flood on a data directory's file system
// turned read-only. A transient failure is run again after a backoff
// doubling from 100 ms, told once per step: the announcer logged it at each
// period, whatever its cause.
func TestLoopFailuresTold(t *testing.T) {
	for _, tt := range []struct {
		name     string
		syncFail bool
	}{
		{"a failed fsync: told once", true},
		{"transient: once per backoff step", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir)
			logs := &testenv.LogBuffer{}
			cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
			var fsyncFails, indexFails atomic.Bool
			cfg.dbOptions = []localstore.Option{localstore.WithLogSync(func(f *os.File) error {
				if fsyncFails.Load() {
					return errIO
				}
				return f.Sync()
			})}
			cfg.announceIndex = func(ix pipeline.IndexStore) pipeline.IndexStore { return failingIndex{ix, &indexFails} }
			l, err := Start(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			put(t, l, instance("1.2.826.0.1.3680043.2.1.1", "1.2.826.0.1.3680043.2.1.1.1"))
			var studies struct{ Studies []portal.Study }
			testenv.Eventually(t, "study indexed", func() bool {
				getJSON(t, l, "/api/studies", &studies)
				return len(studies.Studies) == 1
			})
			if !tt.syncFail {
				indexFails.Store(true)
				defer stop(t, l)
				// Steps of 100, 200, 400 and 800 ms.
				testenv.Eventually(t, "five announcer failures", func() bool { return len(loopLines(t, logs.String(), "announce stable studies")) >= 5 })
				want := retry.MinBackoff
				for i, m := range loopLines(t, logs.String(), "announce stable studies")[:5] {
					if got, _ := m["retry_in"].(float64); time.Duration(got) != want || m["level"] != "WARN" {
						t.Errorf("failure %d told at %v with retry_in %v, want WARN and %v (one line a backoff step):\n%s", i+1, m["level"], time.Duration(got), want, logs.String())
					}
					want *= 2
				}
				return
			}
			fsyncFails.Store(true)
			if err := l.db.Sync(context.Background()); !errors.Is(err, localstore.ErrSyncFailed) {
				t.Fatalf("Sync = %v, want ErrSyncFailed", err)
			}
			indexFails.Store(true) // the announcer's writes fail too
			for _, msg := range []string{"event delivery", "announce stable studies"} {
				testenv.Eventually(t, msg+" failed", func() bool { return len(loopLines(t, logs.String(), msg)) > 0 })
			}
			// Event delivery runs every second, the announcer every 100 ms.
			time.Sleep(2500 * time.Millisecond)
			for _, msg := range []string{"event delivery", "announce stable studies"} {
				lines := loopLines(t, logs.String(), msg)
				if len(lines) != 1 || lines[0]["level"] != "ERROR" {
					t.Errorf("%d %q lines, want one at ERROR:\n%s", len(lines), msg, logs.String())
				}
			}
			stop(t, l)
			// The process's exit would let both go.
			if err := errors.Join(l.db.SQL().Close(), l.lock.release()); err != nil {
				t.Fatal(err)
			}
		})
	}
}
