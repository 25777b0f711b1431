package localstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// seedCursors gives each paged query rows from two AE titles (events of
// two types), two or more a query.
func seedCursors(t testing.TB, db *DB) {
	t.Helper()
	ctx := context.Background()
	aes := []string{"SITE_A", "SITE_B", "SITE_A", "SITE_B", "SITE_A"}
	for i, ae := range aes {
		study := fmt.Sprint("1.2.", i)
		if _, err := db.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: study, SeriesInstanceUID: study + ".1", SOPInstanceUID: study + ".1.1",
			ContentIdentity: study, Modality: "CT", CallingAE: ae, Size: 1, ReceivedAt: t0.Add(time.Duration(i) * time.Minute),
			ObjectKey: "incoming/" + study + ".dcm", MetadataKey: "metadata/" + study + ".json"}); err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprint("assoc-", i)
		for j, outcome := range []string{associationaudit.EventAccepted, pipeline.OutcomeStored, associationaudit.EventReleased} {
			if _, err := db.AuditStore().Append(ctx, pipeline.AuditRecord{ID: fmt.Sprint(id, "-", j), Time: t0.Add(time.Duration(i)*time.Minute + time.Duration(j)*time.Second),
				Outcome: outcome, AssociationID: id, CallingAE: ae}); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := db.CommitmentStore().CreateCommitment(ctx, pipeline.CommitmentTransaction{ID: fmt.Sprint("tx", i), TransactionUID: fmt.Sprint("2.25.", i),
			CallingAE: ae, RefCount: 1, ReceivedAt: t0.Add(time.Duration(i) * time.Minute), WaitUntil: t0.Add(time.Hour), State: pipeline.CommitmentPending}); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Outbox(nil).Publish(ctx, []pipeline.Event{{ID: fmt.Sprint("e", i), DetailType: map[bool]string{true: pipeline.DetailTypeInstanceStored,
			false: pipeline.DetailTypeStudyUpdated}[ae == "SITE_A"], Time: t0.Add(time.Duration(i) * time.Minute), Detail: json.RawMessage(`{}`)}}); err != nil {
			t.Fatal(err)
		}
	}
}

// cursorQuery is one of the store's paged queries: a page of one row of
// it, filtered by the first AE title (or type) when other is false and
// by the second when true, going on from cursor; and the cursor a page of
// it handed out sealed to its own scope (place), to reach its place's
// reader.
type cursorQuery struct {
	name  string
	page  func(ctx context.Context, db *DB, other bool, cursor string) (rows int, next string, err error)
	place func(place string) string
}

func filterAE(other bool) string {
	if other {
		return "SITE_B"
	}
	return "SITE_A"
}

var cursorQueries = []cursorQuery{
	{"audit", func(ctx context.Context, db *DB, other bool, cursor string) (int, string, error) {
		p, err := db.AuditStore().Query(ctx, pipeline.AuditQuery{CallingAE: filterAE(other), Limit: 1, Cursor: cursor})
		return len(p.Records), p.Next, err
	}, func(place string) string {
		return pipeline.AuditQuery{CallingAE: filterAE(false)}.CursorScope().Seal(place)
	}},
	{"studies", func(ctx context.Context, db *DB, other bool, cursor string) (int, string, error) {
		p, err := db.SearchStudies(ctx, StudySearch{CallingAE: filterAE(other), Limit: 1, Cursor: cursor})
		return len(p.Studies), p.Next, err
	}, func(place string) string { return StudySearch{CallingAE: filterAE(false)}.cursorScope().Seal(place) }},
	{"associations", func(ctx context.Context, db *DB, other bool, cursor string) (int, string, error) {
		p, err := db.Associations(ctx, AssociationQuery{CallingAE: filterAE(other), Limit: 1, Cursor: cursor})
		return len(p.Associations), p.Next, err
	}, func(place string) string {
		return AssociationQuery{CallingAE: filterAE(false)}.cursorScope().Seal(place)
	}},
	{"association records", func(ctx context.Context, db *DB, other bool, cursor string) (int, string, error) {
		p, err := db.AssociationRecords(ctx, map[bool]string{false: "assoc-0", true: "assoc-1"}[other], cursor, 1)
		return len(p.Records), p.Next, err
	}, func(place string) string {
		return associationRecordsScope("assoc-0").Seal(place)
	}},
	{"commitments", func(ctx context.Context, db *DB, other bool, cursor string) (int, string, error) {
		p, err := db.CommitmentStore().Commitments(ctx, CommitmentQuery{CallingAE: filterAE(other), Limit: 1, Cursor: cursor})
		return len(p.Transactions), p.Next, err
	}, func(place string) string {
		return CommitmentQuery{CallingAE: filterAE(false)}.cursorScope().Seal(place)
	}},
	{"events", func(ctx context.Context, db *DB, other bool, cursor string) (int, string, error) {
		p, err := db.Events(ctx, eventsOf(other, cursor))
		return len(p.Events), p.Next, err
	}, func(place string) string { return eventsOf(false, "").cursorScope().Seal(place) }},
}

func eventsOf(other bool, cursor string) EventFilter {
	types := []string{pipeline.DetailTypeInstanceStored}
	if other {
		types = []string{pipeline.DetailTypeStudyUpdated}
	}
	return EventFilter{DetailTypes: types, Limit: 1, Before: cursor}
}

// TestCursorsSealedToTheirQuery: each paged query of the store goes on
// with the cursor its page handed out, to the end, and refuses
// (pipeline.ErrBadCursor, quoting nothing of the cursor, whose place may
// hold a UID) one handed out by the same query with other filters, one
// whose place or seal was altered, and one that is none. Only the audit
// trail's was sealed: the others read another query's cursor as their
// own place, and the studies' error quoted its study UID.
func TestCursorsSealedToTheirQuery(t *testing.T) {
	db := openTest(t)
	seedCursors(t, db)
	ctx := context.Background()
	for _, q := range cursorQueries {
		t.Run(q.name, func(t *testing.T) {
			rows, first, err := q.page(ctx, db, false, "")
			if err != nil || rows != 1 || first == "" {
				t.Fatalf("first page: %d rows, next %q, %v", rows, first, err)
			}
			pages := 1
			for next := first; next != ""; pages++ {
				if pages > 10 {
					t.Fatal("no end")
				}
				if _, next, err = q.page(ctx, db, false, next); err != nil {
					t.Fatalf("page %d: %v", pages+1, err)
				}
			}
			if pages < 2 {
				t.Errorf("%d pages", pages)
			}
			place, seal, _ := strings.Cut(first, "~")
			for _, bad := range []struct{ name, cursor string }{
				{"other filters", first},
				{"place moved", place + "9~" + seal},
				{"seal altered", place + "~" + seal[1:] + "A"},
				{"no seal", place},
				{"none", "garbage"},
			} {
				_, _, err := q.page(ctx, db, bad.name == "other filters", bad.cursor)
				if !errors.Is(err, pipeline.ErrBadCursor) {
					t.Errorf("%s: %v, want ErrBadCursor", bad.name, err)
				} else if strings.Contains(err.Error(), place) || strings.Contains(err.Error(), seal) {
					t.Errorf("%s: %q quotes the cursor", bad.name, err)
				}
			}
			// A sealed place the store does not read is refused too.
			if _, _, err := q.page(ctx, db, false, q.place("x_")); !errors.Is(err, pipeline.ErrBadCursor) {
				t.Errorf("a sealed place not the store's: %v, want ErrBadCursor", err)
			}
		})
	}
}

// FuzzCursors: a cursor comes from outside (the portal's cursor and
// before parameters). Every paged query of the store takes any cursor,
// as given and sealed to the query (to reach its place's reader), with
// a page or ErrBadCursor, never another error or a panic.
func FuzzCursors(f *testing.F) {
	db, err := Open(context.Background(), f.TempDir()+"/fuzz.db")
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	seedCursors(f, db)
	for _, s := range []string{"", "1.2", "x.y", "9223372036854775807.1", "-1.-1", "1764151200000000000.3", ".", "_", "1_", "1_1.2.3", "7", "0", "-3", "~", "x~y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cursor string) {
		for _, q := range cursorQueries {
			for _, c := range []string{cursor, q.place(cursor)} {
				rows, _, err := q.page(context.Background(), db, false, c)
				if err != nil && !errors.Is(err, pipeline.ErrBadCursor) {
					t.Fatalf("%s: cursor %q: %v", q.name, c, err)
				}
				if rows > 1 {
					t.Fatalf("%s: a page of %d", q.name, rows)
				}
			}
		}
	})
}
