package localstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

// TestIndexConformance runs the index contract's suite on SQLite. An
// upsert is one transaction, so the suite's crash is the one after it
// committed (a crash inside it leaves the database as it was).
func TestIndexConformance(t *testing.T) {
	pipelinetest.RunIndexStore(t, pipelinetest.IndexHarness{
		New: func(t *testing.T) pipeline.IndexStore { return openTest(t).IndexStore() },
		StoreName: func(t *testing.T, ix pipeline.IndexStore, uid, name string) {
			q, err := ix.(*IndexStore).b.q()
			if err == nil {
				_, err = q.ExecContext(context.Background(),
					`UPDATE studies SET record = json_set(record, '$.patientName', ?) WHERE study_uid = ?`, name, uid)
			}
			if err != nil {
				t.Fatal(err)
			}
		},
	})
}

// TestAnnouncements runs the announcement scenarios on SQLite.
func TestAnnouncements(t *testing.T) {
	pipelinetest.RunAnnouncements(t, func(t *testing.T) pipeline.IndexStore { return openTest(t).IndexStore() })
}

// TestAuditConformance runs the audit trail's suite on SQLite, which reads
// its whole trail in time order and so answers a query without an access
// path or bounds.
func TestAuditConformance(t *testing.T) {
	pipelinetest.RunAuditStore(t, pipelinetest.AuditHarness{
		New: func(t *testing.T) pipeline.AuditStore { return openTest(t).AuditStore() },
	})
}

// TestCommitmentConformance runs the Storage Commitment store's suite on
// SQLite.
func TestCommitmentConformance(t *testing.T) {
	pipelinetest.RunCommitmentStore(t, func(t *testing.T) pipeline.CommitmentStore { return openTest(t).CommitmentStore() })
}

// TestCommitmentRestart: local mode's start releases the leases a run it outlived held (ReleaseLeases), on
// SQLite. Found by review: after a SIGKILL, the killed run's transaction waited out its lease (192 s, 222 s with a
// tls:// peer), and its requesting AE's, though the data directory's lock proves no other worker alive.
func TestCommitmentRestart(t *testing.T) {
	pipelinetest.RunCommitmentRestart(t, func(t *testing.T) (pipeline.CommitmentStore, pipelinetest.ReleaseLeases) {
		s := openTest(t).CommitmentStore()
		return s, s.ReleaseLeases
	})
}

// TestCommitmentAtScale runs the largest request through SQLite's transactions and audit trail. Every study of
// its committed instances finds the transaction (StudyCommitments, the portal's study page), though it names the
// first pipeline.MaxListedStudies: before, a study past them found none, and its page said nothing of the
// commitment that covered it.
func TestCommitmentAtScale(t *testing.T) {
	var store *CommitmentStore
	pipelinetest.RunCommitmentAtScale(t, func(t *testing.T) (pipeline.CommitmentStore, pipeline.AuditStore) {
		db := openTest(t)
		store = db.CommitmentStore()
		return store, db.AuditStore()
	})
	for _, i := range []int{0, pipeline.MaxListedStudies, commitment.MaxRefs - 1} {
		txs, err := store.StudyCommitments(context.Background(), pipelinetest.ScaleStudyUID(i))
		if err != nil || len(txs) != 1 {
			t.Errorf("study %d of the request: %d transactions (%v); want the one", i, len(txs), err)
		}
	}
}

// TestInstancesByStudyFromOlderDatabase: a database whose instances were
// keyed by SOP Instance UID and content alone (schema 8) keeps what it
// indexed through the move to one instance per content and study; the
// same content naming another study is then indexed there.
func TestInstancesByStudyFromOlderDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	first := pipelinetest.Record(1, 1, 1, "bb", 0)
	later := pipelinetest.Record(1, 1, 1, "aa", time.Second)
	stageSchema(t, path, schema[:8], func(sdb *sql.DB) error {
		tx, err := sdb.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := upsertBefore17(ctx, tx, first, later); err != nil {
			return errors.Join(fmt.Errorf("upsert into the old schema: %w", err), tx.Rollback())
		}
		return tx.Commit()
	})
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ix := db.IndexStore()
	d, err := ix.GetStudy(ctx, first.StudyInstanceUID)
	if err != nil {
		t.Fatal(err)
	}
	if d.InstanceCount != 1 || d.ConflictCount != 1 || len(d.Instances) != 2 {
		t.Errorf("study after the upgrade: %d instances, %d conflicts, %d records; want 1, 1, 2", d.InstanceCount, d.ConflictCount, len(d.Instances))
	}
	if r, err := ix.UpsertInstance(ctx, later); err != nil || r.Outcome != pipeline.InstanceDuplicate {
		t.Errorf("a content indexed before the upgrade, again: %v (%v), want a duplicate", r.Outcome, err)
	}
	// The first content, naming another study: indexed there, as a
	// conflict (see pipeline.ContentOutcome).
	moved := pipelinetest.Record(2, 1, 1, "bb", time.Hour)
	moved.SOPInstanceUID = first.SOPInstanceUID
	if r, err := ix.UpsertInstance(ctx, moved); err != nil || r.Outcome != pipeline.InstanceConflict || r.Study.StudyInstanceUID != moved.StudyInstanceUID {
		t.Errorf("the first content under another study: %v in %s (%v), want a conflict in %s", r.Outcome, r.Study.StudyInstanceUID, err, moved.StudyInstanceUID)
	}
}

// TestCommitmentStudiesLinkedOnce: a transaction's links to its studies (StudyCommitments) are written once for each
// set of studies, not at every write of the transaction: the evaluation runs again at every poll while instances are
// awaited, and a run writes the transaction several times with the set it decided (the lease, the evaluation, each
// report attempt), and each write inserted every link again, 50,000 per write for a transaction of 50,000 studies.
// A link taken out behind the store's back shows whether a write inserted it again.
func TestCommitmentStudiesLinkedOnce(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	cs := db.CommitmentStore()
	found := func(study string) bool {
		t.Helper()
		txs, err := cs.StudyCommitments(ctx, study)
		if err != nil {
			t.Fatal(err)
		}
		return len(txs) == 1
	}
	drop := func(study string) {
		t.Helper()
		if _, err := db.sql.Exec(`DELETE FROM commitment_studies WHERE study_uid = ?`, study); err != nil {
			t.Fatal(err)
		}
	}
	tx, created, err := cs.CreateCommitment(ctx, pipeline.CommitmentTransaction{ID: "c1", State: pipeline.CommitmentPending, ReceivedAt: t0, NextAttempt: t0})
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	steps := []struct {
		name    string
		all     []string // the evaluation's AllStudies; nil: the transaction as read back
		drop    string   // a link taken out before the write
		want    []string // found after the write
		wantNot []string
	}{
		{"evaluated", []string{"s1", "s2", "s3"}, "", []string{"s1", "s2", "s3"}, nil},
		{"evaluated again, the same studies", []string{"s1", "s2", "s3"}, "s3", []string{"s1", "s2"}, []string{"s3"}},
		{"read back and written (a lease, a report attempt)", nil, "s1", []string{"s2"}, []string{"s1", "s3"}},
		{"evaluated with a study more", []string{"s1", "s2", "s3", "s4"}, "", []string{"s1", "s2", "s3", "s4"}, nil},
	}
	for _, st := range steps {
		if st.drop != "" {
			drop(st.drop)
		}
		if st.all == nil {
			if tx, err = cs.GetCommitment(ctx, tx.ID); err != nil {
				t.Fatal(err)
			}
		} else {
			tx.AllStudies, tx.Studies, tx.StudyCount = st.all, st.all[:2], len(st.all)
		}
		if tx, err = cs.UpdateCommitment(ctx, tx); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		for _, s := range st.want {
			if !found(s) {
				t.Errorf("%s: study %s does not find the transaction", st.name, s)
			}
		}
		for _, s := range st.wantNot {
			if found(s) {
				t.Errorf("%s: study %s was linked again", st.name, s)
			}
		}
	}
}

// TestContentIdentityColumnRenamed: a database of schema 16 names the
// instances' content identity column sha256; the upgrade renames it
// content_identity (a CRC-64/NVME, not a SHA-256) and keeps what it
// indexed: the content again is a duplicate, another content a conflict.
func TestContentIdentityColumnRenamed(t *testing.T) {
	ctx := context.Background()
	first := pipelinetest.Record(1, 1, 1, "dataset-crc64nvme-00000000000000aa", 0)
	db := openOlderDatabase(t, 16, func(sdb *sql.DB) error {
		tx, err := sdb.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := upsertBefore17(ctx, tx, first); err != nil {
			return errors.Join(err, tx.Rollback())
		}
		return tx.Commit()
	})
	var cols []string
	rows, err := db.read.QueryContext(ctx, `SELECT name FROM pragma_table_info('instances')`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, c)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(cols, "sha256") || !slices.Contains(cols, "content_identity") {
		t.Errorf("instances columns after the upgrade: %v, want content_identity and no sha256", cols)
	}
	ix := db.IndexStore()
	recs, err := ix.Instances(ctx, first.SOPInstanceUID)
	if err != nil || len(recs) != 1 || recs[0].ContentIdentity != first.ContentIdentity {
		t.Fatalf("Instances after the upgrade: %+v, %v", recs, err)
	}
	if r, err := ix.UpsertInstance(ctx, first); err != nil || r.Outcome != pipeline.InstanceDuplicate {
		t.Errorf("the content indexed before the upgrade, again: %v (%v), want a duplicate", r.Outcome, err)
	}
	other := first
	other.ContentIdentity = "dataset-crc64nvme-00000000000000bb"
	if r, err := ix.UpsertInstance(ctx, other); err != nil || r.Outcome != pipeline.InstanceConflict {
		t.Errorf("another content under its SOP Instance UID: %v (%v), want a conflict", r.Outcome, err)
	}
}

// upsertBefore17 indexes recs, in tx, into a database of a schema before
// 17, whose instances table names the content identity column sha256:
// today's upsert, on the column renamed as 17 does and back.
func upsertBefore17(ctx context.Context, tx *sql.Tx, recs ...pipeline.InstanceRecord) error {
	q := &querier{tx: tx}
	if _, err := q.ExecContext(ctx, `ALTER TABLE instances RENAME COLUMN sha256 TO content_identity`); err != nil {
		return err
	}
	for i, in := range recs {
		if _, err := upsertInstance(ctx, q, in); err != nil {
			return fmt.Errorf("upsert %d: %w", i, err)
		}
	}
	_, err := q.ExecContext(ctx, `ALTER TABLE instances RENAME COLUMN content_identity TO sha256`)
	return err
}
