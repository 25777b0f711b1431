package localstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// TestEventsPaging: newest first, a cursor to the next older page, type
// and study filters, and After for tailing oldest first. A study's events
// are those that name it anywhere: event 8, a Storage Commitment
// Completed, lists two studies (and had been found by neither).
func TestEventsPaging(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	var evs []pipeline.Event
	for i := 1; i <= 7; i++ {
		study := "1.2.3"
		if i%2 == 0 {
			study = "1.2.4"
		}
		dt := pipeline.DetailTypeInstanceStored
		if i == 7 {
			dt = pipeline.DetailTypeStudyReceived
		}
		evs = append(evs, pipeline.Event{ID: fmt.Sprint("e", i), DetailType: dt, Time: t0.Add(time.Duration(i) * time.Second),
			Detail: json.RawMessage(fmt.Sprintf(`{"studyInstanceUid":%q,"n":%d}`, study, i))})
	}
	evs = append(evs, pipeline.Event{ID: "e8", DetailType: pipeline.DetailTypeCommitmentCompleted, Time: t0.Add(8 * time.Second),
		Detail: json.RawMessage(`{"transactionUid":"9.9","studies":["1.2.4","1.2.9"],"studyCount":2,"studiesTruncated":false}`)})
	if _, err := db.Outbox(nil).Publish(ctx, evs); err != nil {
		t.Fatal(err)
	}
	seqs := func(p EventPage) []int64 {
		var out []int64
		for _, e := range p.Events {
			out = append(out, e.Seq)
		}
		return out
	}
	tests := []struct {
		name     string
		f        EventFilter
		want     []int64
		wantNext string
	}{
		{"newest first", EventFilter{Limit: 3}, []int64{8, 7, 6}, "6"},
		{"next page", at(EventFilter{Limit: 3}, 6), []int64{5, 4, 3}, "3"},
		{"last page", at(EventFilter{Limit: 3}, 3), []int64{2, 1}, ""},
		{"by study", EventFilter{Study: "1.2.4"}, []int64{8, 6, 4, 2}, ""},
		{"by study, paged", EventFilter{Study: "1.2.4", Limit: 2}, []int64{8, 6}, "6"},
		{"by study, next page", at(EventFilter{Study: "1.2.4", Limit: 2}, 6), []int64{4, 2}, ""},
		{"by study, tail", EventFilter{Study: "1.2.4", Tail: true, After: 2, Limit: 2}, []int64{4, 6}, "6"},
		{"by study, tail on", EventFilter{Study: "1.2.4", Tail: true, After: 6}, []int64{8}, ""},
		{"a study only a commitment names", EventFilter{Study: "1.2.9"}, []int64{8}, ""},
		{"by study and type", EventFilter{Study: "1.2.4", DetailTypes: []string{pipeline.DetailTypeCommitmentCompleted}}, []int64{8}, ""},
		{"another study, paged", EventFilter{Study: "1.2.3", Limit: 2}, []int64{7, 5}, "5"},
		{"by type", EventFilter{DetailTypes: []string{pipeline.DetailTypeStudyReceived}}, []int64{7}, ""},
		{"by types", EventFilter{DetailTypes: []string{pipeline.DetailTypeStudyReceived, pipeline.DetailTypeCommitmentCompleted}}, []int64{8, 7}, ""},
		{"by types, paged", EventFilter{DetailTypes: []string{pipeline.DetailTypeInstanceStored, pipeline.DetailTypeCommitmentCompleted}, Limit: 3}, []int64{8, 6, 5}, "5"},
		{"by types, next page", at(EventFilter{DetailTypes: []string{pipeline.DetailTypeInstanceStored, pipeline.DetailTypeCommitmentCompleted}, Limit: 3}, 5), []int64{4, 3, 2}, "2"},
		{"by types, one repeated", EventFilter{DetailTypes: []string{pipeline.DetailTypeStudyReceived, pipeline.DetailTypeCommitmentCompleted, pipeline.DetailTypeStudyReceived}}, []int64{8, 7}, ""},
		{"by types, tail", EventFilter{DetailTypes: []string{pipeline.DetailTypeInstanceStored, pipeline.DetailTypeCommitmentCompleted}, Tail: true, After: 5, Limit: 2}, []int64{6, 8}, ""},
		{"by types, contains", EventFilter{DetailTypes: []string{pipeline.DetailTypeInstanceStored, pipeline.DetailTypeStudyReceived}, Contains: `"1.2.3"`, Limit: 2}, []int64{7, 5}, "5"},
		{"by types, since", EventFilter{DetailTypes: []string{pipeline.DetailTypeInstanceStored, pipeline.DetailTypeCommitmentCompleted}, Since: t0.Add(6 * time.Second)}, []int64{8, 6}, ""},
		{"by types and study", EventFilter{Study: "1.2.3", DetailTypes: []string{pipeline.DetailTypeStudyReceived, pipeline.DetailTypeCommitmentCompleted}}, []int64{7}, ""},
		{"tail after", EventFilter{After: 4, Tail: true, Limit: 2}, []int64{5, 6}, "6"},
		{"tail from the start", EventFilter{Tail: true, Limit: 2}, []int64{1, 2}, "2"},
		{"tail past the end", EventFilter{After: 8, Tail: true}, nil, ""},
		{"since far past", EventFilter{Since: time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), Limit: 1}, []int64{8}, "8"},
		{"until far future", EventFilter{Until: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), Limit: 1}, []int64{8}, "8"},
		{"until far past", EventFilter{Until: time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := db.Events(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			// A newest-first page's next is sealed to its filter, a
			// tail's is its last event's seq.
			next := p.Next
			if !tt.f.Tail && next != "" {
				if next, err = tt.f.cursorScope().Open(p.Next); err != nil {
					t.Errorf("next %q: %v", p.Next, err)
				}
			}
			if d := cmp.Diff(tt.want, seqs(p)); d != "" || next != tt.wantNext {
				t.Errorf("seqs (-want +got):\n%s next %q want %q", d, p.Next, tt.wantNext)
			}
		})
	}
	for _, c := range []struct {
		s         string
		fromStart bool
		want      int64 // -1: a bad cursor
	}{
		{"x", false, -1}, {"0", false, -1}, {"-3", false, -1}, {"1.5", false, -1}, {"-1", true, -1},
		{"0", true, 0}, {"7", false, 7}, {"7", true, 7},
	} {
		n, err := ParseEventSeq(c.s, c.fromStart)
		if bad := errors.Is(err, pipeline.ErrBadCursor); bad != (c.want < 0) || !bad && (err != nil || n != c.want) {
			t.Errorf("ParseEventSeq(%q, %v) = %d, %v; want %d", c.s, c.fromStart, n, err, c.want)
		}
	}
}

// TestEventsOneDirection: Before pages back and Tail forward; a filter
// with both is refused by the store (a SearchError naming before and
// after, the portal's 400), whatever the cursor, where Before was
// silently dropped and the tail served.
func TestEventsOneDirection(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	if _, err := db.Outbox(nil).Publish(ctx, []pipeline.Event{{ID: "e1", DetailType: pipeline.DetailTypeInstanceStored, Time: t0,
		Detail: json.RawMessage(`{"studyInstanceUid":"1.2.3"}`)}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		f    EventFilter
	}{
		{"a cursor of the filter, tail from the start", at(EventFilter{Tail: true}, 1)},
		{"a cursor of the filter, tail on from a seq", at(EventFilter{Tail: true, After: 1}, 1)},
		{"a cursor of no filter", EventFilter{Before: "x", Tail: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := db.Events(ctx, tt.f)
			var se *SearchError
			if !errors.As(err, &se) || se.Search != "events" || !strings.Contains(se.Reason, "before and after") {
				t.Errorf("%d events, error %v; want a SearchError naming before and after", len(p.Events), err)
			}
		})
	}
}

// TestEventsTailPastTheLastEvent: a tail's after is a seq this outbox
// handed out, at most its last event's. One past it is a seq of another
// outbox (a data directory started afresh numbers its events from 1
// again): refused, saying so, where it gave an empty page for ever, so a
// consumer that kept its seq across a new data directory skipped every
// event up to it without a word. A filter that selects nothing past after
// is no such seq: its empty page stands.
func TestEventsTailPastTheLastEvent(t *testing.T) {
	ctx := context.Background()
	empty, db := openTest(t), openTest(t)
	var evs []pipeline.Event
	for i := 1; i <= 3; i++ {
		evs = append(evs, pipeline.Event{ID: fmt.Sprint("e", i), DetailType: pipeline.DetailTypeInstanceStored, Time: t0.Add(time.Duration(i) * time.Second),
			Detail: json.RawMessage(`{"studyInstanceUid":"1.2.3"}`)})
	}
	if _, err := db.Outbox(nil).Publish(ctx, evs); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		db      *DB
		f       EventFilter
		n       int
		refused bool
	}{
		{"from the start", db, EventFilter{Tail: true}, 3, false},
		{"at the last event", db, EventFilter{Tail: true, After: 3}, 0, false},
		{"past the last event", db, EventFilter{Tail: true, After: 4}, 0, true},
		{"far past it", db, EventFilter{Tail: true, After: 1 << 62}, 0, true},
		{"a type with none past after", db, EventFilter{Tail: true, After: 2, DetailTypes: []string{pipeline.DetailTypeStudyReceived}}, 0, false},
		{"a study with none", db, EventFilter{Tail: true, After: 3, Study: "9.9"}, 0, false},
		{"a study, past the last event", db, EventFilter{Tail: true, After: 4, Study: "9.9"}, 0, true},
		{"newest first before any seq", db, at(EventFilter{}, 99), 3, false},
		{"an empty outbox from the start", empty, EventFilter{Tail: true}, 0, false},
		{"an empty outbox, after a seq", empty, EventFilter{Tail: true, After: 1}, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.db.Events(ctx, tt.f)
			var se *SearchError
			switch {
			case tt.refused && (!errors.As(err, &se) || se.Search != "events" || !strings.Contains(se.Reason, "after ") || !strings.Contains(se.Reason, "after=0")):
				t.Errorf("after %d: %v, want a SearchError naming after and the way back (after=0)", tt.f.After, err)
			case !tt.refused && err != nil:
				t.Errorf("after %d: %v", tt.f.After, err)
			case len(p.Events) != tt.n:
				t.Errorf("after %d: %d events, want %d", tt.f.After, len(p.Events), tt.n)
			}
		})
	}
}

// at is f going on from the event seq, with the cursor a page of f
// would have handed out (Events' next, newest first).
// TestEventsOutbox: the outbox has an identity, made once with the
// database and kept in it, which every page names and a consumer names
// back (Outbox). A data directory started afresh has another: its seqs
// number other events, so a consumer that kept (outbox, seq) is refused,
// naming outbox and the way back (after=0), where with its seq alone it
// skipped unsaid the new directory's events up to that seq once they
// outnumbered it. A copy keeps the id and its seqs (the same history),
// and an older database gets an id when it is migrated.
func TestEventsOutbox(t *testing.T) {
	ctx := context.Background()
	publish := func(t *testing.T, db *DB, n int) {
		t.Helper()
		var evs []pipeline.Event
		for i := 1; i <= n; i++ {
			evs = append(evs, pipeline.Event{DetailType: pipeline.DetailTypeInstanceStored, Time: t0.Add(time.Duration(i) * time.Second),
				Detail: json.RawMessage(`{"studyInstanceUid":"1.2.3"}`)})
		}
		if _, err := db.Outbox(nil).Publish(ctx, evs); err != nil {
			t.Fatal(err)
		}
	}
	// The consumer took db's first 2 events; fresh, a data directory
	// started afresh, has 5, more than that seq.
	dir := t.TempDir()
	db, err := Open(ctx, filepath.Join(dir, "ingest.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	publish(t, db, 3)
	fresh := openTest(t)
	publish(t, fresh, 5)
	// A copy of db (a backup put back) and an older database migrated.
	copied := filepath.Join(dir, "copy.db")
	if _, err := db.sql.ExecContext(ctx, `VACUUM INTO ?`, copied); err != nil {
		t.Fatal(err)
	}
	cp, err := Open(ctx, copied)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Close() })
	older := openOlderDatabase(t, 19, nil) // of the build before the outbox's identity (migration 20)
	publish(t, older, 1)

	hexID := regexp.MustCompile(`^[0-9a-f]{32}$`)
	for _, d := range []*DB{db, fresh, cp, older} {
		if !hexID.MatchString(d.OutboxID()) {
			t.Fatalf("outbox id %q, want 32 hex digits", d.OutboxID())
		}
	}
	if db.OutboxID() == fresh.OutboxID() || db.OutboxID() == older.OutboxID() {
		t.Fatalf("two databases have one outbox id %q", db.OutboxID())
	}
	for _, tt := range []struct {
		name    string
		db      *DB
		f       EventFilter
		n       int
		refused string // what the refusal names; "" for none
	}{
		{"its own outbox, from the start", db, EventFilter{Tail: true, Outbox: db.OutboxID()}, 3, ""},
		{"its own outbox, on from a seq", db, EventFilter{Tail: true, After: 2, Outbox: db.OutboxID()}, 1, ""},
		{"its own outbox, newest first", db, EventFilter{Outbox: db.OutboxID()}, 3, ""},
		{"no outbox named", db, EventFilter{Tail: true, After: 2}, 1, ""},
		{"its own outbox, past its last event", db, EventFilter{Tail: true, After: 4, Outbox: db.OutboxID()}, 0, "after 4"},
		// Without the outbox, fresh's events 3 to 5 come and its 1 and 2
		// are skipped unsaid: the seq is none of fresh's.
		{"a new directory, its seq alone", fresh, EventFilter{Tail: true, After: 2}, 3, ""},
		{"a new directory, the old outbox named", fresh, EventFilter{Tail: true, After: 2, Outbox: db.OutboxID()}, 0, "outbox"},
		{"a new directory, the old outbox, from the start", fresh, EventFilter{Tail: true, Outbox: db.OutboxID()}, 0, "outbox"},
		{"a new directory, the old outbox, newest first", fresh, EventFilter{Outbox: db.OutboxID()}, 0, "outbox"},
		{"a new directory, its own outbox from the start", fresh, EventFilter{Tail: true, Outbox: fresh.OutboxID()}, 5, ""},
		{"an id of no outbox", db, EventFilter{Tail: true, Outbox: "not-an-outbox"}, 0, "outbox"},
		{"a copy, the original's outbox", cp, EventFilter{Tail: true, After: 2, Outbox: db.OutboxID()}, 1, ""},
		{"a migrated database, its own outbox", older, EventFilter{Tail: true, Outbox: older.OutboxID()}, 1, ""},
		{"a migrated database, another outbox", older, EventFilter{Tail: true, Outbox: db.OutboxID()}, 0, "outbox"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.db.Events(ctx, tt.f)
			var se *SearchError
			switch {
			case tt.refused != "" && (!errors.As(err, &se) || se.Search != "events" || !strings.Contains(se.Reason, tt.refused+" ") ||
				!strings.Contains(se.Reason, "after=0 with outbox="+tt.db.OutboxID())):
				t.Errorf("%v, want a SearchError naming %s and the way back (after=0 with this outbox)", err, tt.refused)
			case tt.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case len(p.Events) != tt.n:
				t.Errorf("%d events, want %d", len(p.Events), tt.n)
			case tt.refused == "" && p.Outbox != tt.db.OutboxID():
				t.Errorf("the page names outbox %q, want %q", p.Outbox, tt.db.OutboxID())
			}
		})
	}
	if cp.OutboxID() != db.OutboxID() {
		t.Errorf("a copy's outbox %q, want its original's %q", cp.OutboxID(), db.OutboxID())
	}
	// Reopened, a database keeps its id.
	id := older.OutboxID()
	path := filepath.Join(dir, "reopen.db")
	if _, err := older.sql.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		re, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		got := re.OutboxID()
		if err := re.Close(); err != nil {
			t.Fatal(err)
		}
		if got != id {
			t.Errorf("reopened: outbox %q, want %q", got, id)
		}
	}
}

func at(f EventFilter, seq int64) EventFilter {
	f.Before = f.cursorScope().Seal(strconv.FormatInt(seq, 10))
	return f
}

// TestEventsServedDurable: Events gives out only events whose commit is
// durable, as the log and the webhooks do: it syncs the database's log
// after its read, and a sync that fails fails the page rather than give
// out events a power loss could undo (their seqs given to other events
// after the restart, which a consumer tailing past them would skip).
func TestEventsServedDurable(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	var fsyncs atomic.Int64
	var fail atomic.Pointer[error]
	db.wal.fsync = func() error {
		fsyncs.Add(1)
		if err := fail.Load(); err != nil {
			return *err
		}
		return nil
	}
	if p, err := db.Events(ctx, EventFilter{Tail: true}); err != nil || len(p.Events) != 0 {
		t.Fatalf("empty outbox: %d events, %v", len(p.Events), err)
	}
	if _, err := db.Outbox(nil).Publish(ctx, []pipeline.Event{{ID: "e1", DetailType: pipeline.DetailTypeInstanceStored, Time: t0,
		Detail: json.RawMessage(`{"n":1}`)}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		fail error
	}{{"synced", nil}, {"sync fails", errors.New("disk gone")}} {
		t.Run(tt.name, func(t *testing.T) {
			before := fsyncs.Load()
			if tt.fail != nil {
				fail.Store(&tt.fail)
			}
			p, err := db.Events(ctx, EventFilter{Tail: true})
			if fsyncs.Load() == before {
				t.Errorf("events given out without a sync")
			}
			if tt.fail == nil && (err != nil || len(p.Events) != 1) {
				t.Errorf("%d events, %v; want the one", len(p.Events), err)
			}
			if tt.fail != nil && (!errors.Is(err, tt.fail) || len(p.Events) != 0) {
				t.Errorf("%d events, %v; want none and the sync's error", len(p.Events), err)
			}
		})
	}
	fail.Store(nil)
}

// TestAuditQueryBounds: a cursor the store did not hand out is
// ErrBadCursor, and time bounds outside what nanoseconds since 1970 hold
// select what they say instead of wrapping around.
func TestAuditQueryBounds(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	a := db.AuditStore()
	for i, id := range []string{"a", "b"} {
		if _, err := a.Append(ctx, pipeline.AuditRecord{ID: id, Time: t0.Add(time.Duration(i) * time.Hour), Outcome: "stored"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"nonsense", "1.", ".1", "12.0", "a.b"} {
		if _, err := a.Query(ctx, pipeline.AuditQuery{Cursor: c}); !errors.Is(err, pipeline.ErrBadCursor) {
			t.Errorf("cursor %q: %v, want ErrBadCursor", c, err)
		}
	}
	far := func(y int) time.Time { return time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC) }
	tests := []struct {
		name     string
		from, to time.Time
		want     int
	}{
		{"from year 1000", far(1000), time.Time{}, 2},
		{"to year 9999", time.Time{}, far(9999), 2},
		{"to year 1000", time.Time{}, far(1000), 0},
		{"from year 9999", far(9999), time.Time{}, 0},
		{"from 1600 to 2500", far(1600), far(2500), 2},
		// Both bounds inclusive, as the portal's from and to are: an
		// auditor's range ending at a record's time has that record.
		{"to the first record's time", time.Time{}, t0, 1},
		{"from the second record's time", t0.Add(time.Hour), time.Time{}, 1},
		{"from and to one record's time", t0, t0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := a.Query(ctx, pipeline.AuditQuery{From: tt.from, To: tt.to})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Records) != tt.want {
				t.Errorf("%d records, want %d", len(p.Records), tt.want)
			}
		})
	}
}

// pageUIDs lists the UIDs of a page's studies in order.
func pageUIDs(p StudyPage) []string {
	var out []string
	for _, s := range p.Studies {
		out = append(out, s.StudyInstanceUID)
	}
	return out
}

// TestSearchStudiesByModalityTheRecordCut: a study whose record cut its
// modalities (pipeline.MaxStudyModalities, ModalitiesTruncated) is found
// by a modality only its instances name, as by one the record kept; a
// study not cut is not searched in its instances, and a modality no
// instance has finds nothing.
func TestSearchStudiesByModalityTheRecordCut(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	n := pipeline.MaxStudyModalities + 8
	for i := range n {
		in := pipeline.InstanceRecord{StudyInstanceUID: "1.4", SeriesInstanceUID: "1.4.1", SOPInstanceUID: fmt.Sprint("1.4.1.", i),
			ContentIdentity: "x", Modality: fmt.Sprintf("M%02d", i), ReceivedAt: t0.Add(time.Duration(i) * time.Second)}
		if _, err := db.IndexStore().UpsertInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	whole := pipeline.InstanceRecord{StudyInstanceUID: "1.5", SeriesInstanceUID: "1.5.1", SOPInstanceUID: "1.5.1.1",
		ContentIdentity: "x", Modality: "CT", ReceivedAt: t0}
	if _, err := db.IndexStore().UpsertInstance(ctx, whole); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, modality string
		want           []string
	}{
		{"kept", "M00", []string{"1.4"}},
		{"the last kept", fmt.Sprintf("m%02d", pipeline.MaxStudyModalities-1), []string{"1.4"}},
		{"cut", fmt.Sprintf("M%02d", pipeline.MaxStudyModalities), []string{"1.4"}},
		{"the last cut", fmt.Sprintf("M%02d", n-1), []string{"1.4"}},
		{"no instance's", fmt.Sprintf("M%02d", n), nil},
		{"the study not cut", "CT", []string{"1.5"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := db.SearchStudies(ctx, StudySearch{Modality: tt.modality})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, pageUIDs(p)); d != "" {
				t.Errorf("studies (-want +got):\n%s", d)
			}
		})
	}
}

// TestSearchStudies: every filter alone, status from the index and the
// trail, and paging with a cursor.
func TestSearchStudies(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	type st struct {
		uid, name, id, acc, date, mod, ae string
	}
	studies := []st{
		// Study dates as the pipeline indexes them (ISO 8601), searched
		// as DICOM DA values: they compared as text, so none matched.
		{"1.1", "DOE^JOHN", "P1", "A100", "2024-01-05", "CT", "SITE_A"},
		{"1.2", "ROE^JANE", "P2", "A200", "2024-02-10", "MR", "SITE_B"},
		{"1.3", "DOE^JANE", "Q3", "A300", "2024-03-15", "MR", "SITE_A"},
	}
	for i, s := range studies {
		in := pipeline.InstanceRecord{StudyInstanceUID: s.uid, SeriesInstanceUID: s.uid + ".1", SOPInstanceUID: s.uid + ".1.1", ContentIdentity: "x",
			PatientName: s.name, PatientID: s.id, AccessionNumber: s.acc, StudyDate: s.date, Modality: s.mod, CallingAE: s.ae,
			ReceivedAt: t0.Add(time.Duration(i) * time.Minute)}
		if _, err := db.IndexStore().UpsertInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.IndexStore().MarkAnnounced(ctx, "1.1", 1, 1, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AuditStore().Append(ctx, pipeline.AuditRecord{ID: "r", Time: t0, Outcome: "rejected", StudyInstanceUID: "1.2"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		q    StudySearch
		want []string
	}{
		{"all, newest first", StudySearch{}, []string{"1.3", "1.2", "1.1"}},
		{"patient id", StudySearch{Patient: "p2"}, []string{"1.2"}},
		{"patient name, either order", StudySearch{Patient: "jane doe"}, []string{"1.3"}},
		{"one name word", StudySearch{Patient: "JANE"}, []string{"1.3", "1.2"}},
		{"accession", StudySearch{Accession: "A100"}, []string{"1.1"}},
		{"date range", StudySearch{DateFrom: "20240201", DateTo: "20240310"}, []string{"1.2"}},
		{"one day", StudySearch{DateFrom: "20240210", DateTo: "20240210"}, []string{"1.2"}},
		{"from a day", StudySearch{DateFrom: "20240210"}, []string{"1.3", "1.2"}},
		{"to a day", StudySearch{DateTo: "20240105"}, []string{"1.1"}},
		{"patient name as DICOM writes it", StudySearch{Patient: "Doe^Jane"}, []string{"1.3"}},
		{"a word twice", StudySearch{Patient: "jane jane doe"}, []string{"1.3"}},
		{"modality", StudySearch{Modality: "mr"}, []string{"1.3", "1.2"}},
		{"calling AE", StudySearch{CallingAE: "SITE_A"}, []string{"1.3", "1.1"}},
		{"stable", StudySearch{Status: StatusStable}, []string{"1.1"}},
		{"receiving", StudySearch{Status: StatusReceiving}, []string{"1.3"}},
		{"has rejects", StudySearch{Status: StatusHasRejects}, []string{"1.2"}},
		{"one study", StudySearch{StudyUID: "1.2"}, []string{"1.2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := db.SearchStudies(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, pageUIDs(p)); d != "" {
				t.Errorf("studies (-want +got):\n%s", d)
			}
		})
	}
	p, err := db.SearchStudies(ctx, StudySearch{StudyUID: "1.2"})
	if err != nil || p.Studies[0].Status != StatusHasRejects || p.Studies[0].Rejects != 1 {
		t.Errorf("status of 1.2: %+v, %v", p.Studies, err)
	}
	var got []string
	q := StudySearch{Limit: 2}
	for range 3 {
		p, err := db.SearchStudies(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, pageUIDs(p)...)
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	if d := cmp.Diff([]string{"1.3", "1.2", "1.1"}, got); d != "" {
		t.Errorf("paged (-want +got):\n%s", d)
	}
	if _, err := db.SearchStudies(ctx, StudySearch{Cursor: "garbage"}); !errors.Is(err, pipeline.ErrBadCursor) {
		t.Errorf("bad cursor: %v", err)
	}
	// Searches the store refuses are the searcher's to mend (a
	// SearchError, which the portal answers with a 400), whoever calls.
	refused := []struct {
		name string
		q    StudySearch
	}{
		{"unknown status", StudySearch{Status: "lost"}},
		{"one word more than the limit", StudySearch{Patient: words(MaxPatientWords + 1)}},
		{"993 patient words", StudySearch{Patient: words(993)}},
	}
	for _, tt := range refused {
		var se *SearchError
		if _, err := db.SearchStudies(ctx, tt.q); !errors.As(err, &se) || !strings.HasPrefix(err.Error(), "localstore: search studies: ") {
			t.Errorf("%s: %v, want a SearchError of search studies", tt.name, err)
		}
	}
	// As many distinct words as the limit: searched (SQLite's expression
	// depth is the limit's reason); repeated words count once.
	for _, patient := range []string{words(MaxPatientWords), strings.Repeat("w ", 993)} {
		if _, err := db.SearchStudies(ctx, StudySearch{Patient: patient}); err != nil {
			t.Errorf("patient search of %d characters: %v", len(patient), err)
		}
	}
}

// words returns n distinct words.
// TestStudyRejects: a study "has rejects" when an instance of it was
// quarantined or a C-STORE of it was refused once its header was read
// (store-failed, which names the study: a probe saw a study with a C-STORE
// refused C001 listed as stable with 0 rejects); its count is of both, and
// the status filter agrees with the status, and the study's list of its
// rejects (StudyRejects) holds them all, those not cleared being the count. Other records of the study
// (stored, a Storage Commitment's failures) and a refusal of another study
// or of none do not count.
func TestStudyRejects(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	refused := func(id, study string) pipeline.AuditRecord {
		return pipeline.AssociationAuditRecord(associationaudit.Record{SchemaVersion: 1, Event: associationaudit.EventStoreFailed, Time: t0,
			AssociationID: id, CallingAE: "PACS", Seq: 2, Status: "C001", Reason: "dataset ends inside an element",
			SOPInstanceUID: study + ".1.9", StudyInstanceUID: study}, "test")
	}
	quarantined := func(id, study string) pipeline.AuditRecord {
		return pipeline.AuditRecord{ID: id, Time: t0, Outcome: pipeline.OutcomeRejected, StudyInstanceUID: study}
	}
	// A700: the store failed (a disk short of its reserve), the sender
	// will resend; sop names the instance.
	failed := func(id, study, sop string) pipeline.AuditRecord {
		r := refused(id, study)
		r.SOPInstanceUID, r.Reason = sop, "C-STORE status A700: out of resources"
		return r
	}
	quarantinedSOP := func(id, study, sop string) pipeline.AuditRecord {
		r := quarantined(id, study)
		r.SOPInstanceUID = sop
		return r
	}
	// A C-STORE the association's end cut short (status none: answered
	// nothing), and one recorded before that was said (status 0000): not
	// refused, not a reject; counted apart while the study misses it.
	cutShort := func(id, study, sop string) pipeline.AuditRecord {
		return pipeline.AssociationAuditRecord(associationaudit.Record{SchemaVersion: 1, Event: associationaudit.EventStoreFailed, Time: t0,
			AssociationID: id, CallingAE: "PACS", Seq: 2, Reason: "dicomnet: data set incomplete: dicomnet: connection closed: EOF",
			SOPInstanceUID: sop, StudyInstanceUID: study}, "test")
	}
	cutShortBefore := func(id, study, sop string) pipeline.AuditRecord {
		r := failed(id, study, sop)
		r.Reason = "C-STORE status 0000: dicomnet: data set incomplete: dicomnet: connection closed: EOF"
		return r
	}
	// Refused A700, and the response could not be written: refused all
	// the same (we said no), the sender did not hear it.
	notSent := func(id, study, sop string) pipeline.AuditRecord {
		return pipeline.AssociationAuditRecord(associationaudit.Record{SchemaVersion: 1, Event: associationaudit.EventStoreFailed, Time: t0,
			AssociationID: id, CallingAE: "PACS", Seq: 2, Status: "A700", NotSent: true, Reason: "dicomnet: association ended while sending",
			SOPInstanceUID: sop, StudyInstanceUID: study}, "test")
	}
	// Refused before its handler ran (0122: its class not its context's),
	// then cut short: answered nothing, but refused, so a reject, not a
	// C-STORE cut short. (The SCP never read its header, so its record
	// names no study; one that did would be listed so.)
	refusedCut := func(id, study, sop string) pipeline.AuditRecord {
		return pipeline.AssociationAuditRecord(associationaudit.Record{SchemaVersion: 1, Event: associationaudit.EventStoreFailed, Time: t0,
			AssociationID: id, CallingAE: "PACS", Seq: 2, Reason: "dicomnet: data set incomplete: dicomnet: connection closed: EOF" +
				dimse.RefusedBeforeEnd + "0122: SOP class differs from the presentation context",
			SOPInstanceUID: sop, StudyInstanceUID: study}, "test")
	}
	noReason := func(id, study, sop string) pipeline.AuditRecord {
		r := failed(id, study, sop)
		r.Reason = ""
		return r
	}
	tests := []struct {
		study   string
		records []pipeline.AuditRecord
		status  string
		rejects int
		// stored are instances (SOP Instance UID, study) stored after
		// the records: a sender's resends.
		stored [][2]string
	}{
		{"2.1", nil, StatusStable, 0, nil},
		{"2.2", []pipeline.AuditRecord{quarantined("q2", "2.2")}, StatusHasRejects, 1, nil},
		{"2.3", []pipeline.AuditRecord{refused("as3", "2.3")}, StatusHasRejects, 1, nil},
		{"2.4", []pipeline.AuditRecord{quarantined("q4", "2.4"), refused("as4a", "2.4"), refused("as4b", "2.4")}, StatusHasRejects, 3, nil},
		{"2.5", []pipeline.AuditRecord{
			{ID: "s5", Time: t0, Outcome: pipeline.OutcomeStored, StudyInstanceUID: "2.5"},
			{ID: "c5", Time: t0, Outcome: pipeline.OutcomeCommitmentFailures, StudyInstanceUID: "2.5"},
			refused("as5", "9.9"), refused("as5b", ""),
		}, StatusStable, 0, nil},
		// A reject counts while the study holds no instance of its SOP
		// Instance UID: a good resend clears it, in that study only (it
		// counted for ever, even the A700 of a disk short of space).
		{"2.6", []pipeline.AuditRecord{failed("as6", "2.6", "2.6.1.9")}, StatusStable, 0, [][2]string{{"2.6.1.9", "2.6"}}},
		{"2.7", []pipeline.AuditRecord{quarantinedSOP("q7", "2.7", "2.7.1.8"), failed("as7", "2.7", "2.7.1.9")}, StatusHasRejects, 1,
			[][2]string{{"2.7.1.8", "2.7"}}},
		{"2.8", []pipeline.AuditRecord{failed("as8", "2.8", "2.8.1.9")}, StatusHasRejects, 1, [][2]string{{"2.8.1.9", "9.8"}}},
		// A C-STORE of an instance the study held already, refused: the
		// study misses nothing (an identical resend, stored after it,
		// writes no audit record of its own).
		{"2.9", []pipeline.AuditRecord{failed("as9", "2.9", "2.9.1.1")}, StatusStable, 0, nil},
		// Cut short: no reject (the study page counted them "C-STOREs
		// refused"), counted apart (cutShorts) until a resend clears them.
		{"2.10", []pipeline.AuditRecord{cutShort("as10", "2.10", "2.10.1.9")}, StatusStable, 0, nil},
		{"2.11", []pipeline.AuditRecord{cutShortBefore("as11", "2.11", "2.11.1.9"), refused("as11b", "2.11")}, StatusHasRejects, 1, nil},
		{"2.12", []pipeline.AuditRecord{cutShort("as12", "2.12", "2.12.1.9")}, StatusStable, 0, [][2]string{{"2.12.1.9", "2.12"}}},
		{"2.13", []pipeline.AuditRecord{notSent("as13", "2.13", "2.13.1.9")}, StatusHasRejects, 1, nil},
		// A store-failed record with no reason: refused, as
		// pipeline.AuditRecord.CutShort reads it (the SQL read NULL, and
		// counted it neither refused nor cut short).
		{"2.14", []pipeline.AuditRecord{noReason("as14", "2.14", "2.14.1.9")}, StatusHasRejects, 1, nil},
		{"2.15", []pipeline.AuditRecord{refusedCut("as15", "2.15", "2.15.1.9")}, StatusHasRejects, 1, nil},
	}
	// cutShorts are the C-STOREs of a study cut short and not stored since.
	cutShorts := map[string]int{"2.10": 1, "2.11": 1}
	for _, tt := range tests {
		if _, err := db.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: tt.study, SeriesInstanceUID: tt.study + ".1",
			SOPInstanceUID: tt.study + ".1.1", ContentIdentity: "x", ReceivedAt: t0}); err != nil {
			t.Fatal(err)
		}
		if err := db.IndexStore().MarkAnnounced(ctx, tt.study, 1, 1, t0); err != nil {
			t.Fatal(err)
		}
		for _, r := range tt.records {
			if _, err := db.AuditStore().Append(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		for _, in := range tt.stored {
			if _, err := db.IndexStore().UpsertInstance(ctx, pipeline.InstanceRecord{StudyInstanceUID: in[1], SeriesInstanceUID: in[1] + ".1",
				SOPInstanceUID: in[0], ContentIdentity: "y", ReceivedAt: t0.Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			n := int64(1) // a new study's first announcement, or the test's study's second
			if in[1] == tt.study {
				n = 2
			}
			if err := db.IndexStore().MarkAnnounced(ctx, in[1], n, n, t0.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tt := range tests {
		t.Run(tt.study, func(t *testing.T) {
			p, err := db.SearchStudies(ctx, StudySearch{StudyUID: tt.study})
			if err != nil || len(p.Studies) != 1 {
				t.Fatalf("%+v, %v", p, err)
			}
			if s := p.Studies[0]; s.Status != tt.status || s.Rejects != tt.rejects || s.CutShortMissing != cutShorts[tt.study] {
				t.Errorf("status %q with %d rejects, %d cut short; want %q with %d, %d", s.Status, s.Rejects, s.CutShortMissing, tt.status, tt.rejects, cutShorts[tt.study])
			}
			// The study page's lists (StudyRejects) hold every reject of
			// the study, and every C-STORE cut short, those not cleared
			// being the counts.
			listed, want := 0, 0
			missing := map[string]int{}
			for _, r := range tt.records {
				if r.StudyInstanceUID == tt.study && (r.Outcome == pipeline.OutcomeRejected || r.Outcome == associationaudit.EventStoreFailed) {
					want++
				}
			}
			for _, kind := range RejectKinds {
				rs, err := db.StudyRejects(ctx, tt.study, kind, 0)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rs {
					if r.StudyInstanceUID != tt.study || (kind == RejectQuarantined) != (r.Outcome == pipeline.OutcomeRejected) ||
						(kind == RejectCutShort) != r.CutShort() {
						t.Errorf("%s list holds %+v", kind, r.AuditRecord)
					}
					listed++
					if !r.Cleared {
						missing[kind]++
					}
				}
			}
			if listed != want || missing[RejectQuarantined]+missing[RejectRefused] != tt.rejects || missing[RejectCutShort] != cutShorts[tt.study] {
				t.Errorf("the study's lists hold %d, not cleared %v; want %d, %d rejects, %d cut short", listed, missing, want, tt.rejects, cutShorts[tt.study])
			}
			for _, status := range []string{StatusStable, StatusHasRejects} {
				p, err := db.SearchStudies(ctx, StudySearch{StudyUID: tt.study, Status: status})
				if err != nil {
					t.Fatal(err)
				}
				if found := len(p.Studies) == 1; found != (status == tt.status) {
					t.Errorf("status filter %q found it: %v", status, found)
				}
			}
		})
	}
}

// TestStudyRejectsPlan: a studies page reads each study's rejects, and a
// study page its list of them, through the audit trail's study and outcome
// index and the index's key, not through every audit record of the study,
// nor a scan.
func TestStudyRejectsPlan(t *testing.T) {
	db := openTest(t)
	for _, q := range []struct {
		name, stmt string
		args       []any
	}{
		{"studies page", `SELECT ` + statusSQL + `, (SELECT COUNT(*) ` + rejectsSQL + `), (SELECT COUNT(*) ` + cutShortsSQL + `)
		FROM studies s WHERE (` + statusSQL + `) = ? ORDER BY s.last_received DESC LIMIT 51`, []any{StatusHasRejects}},
		// The study page's lists of its rejects and its C-STOREs cut short, each marked cleared or not.
		{"study rejects", studyRejectsSQL[RejectQuarantined], []any{"1.2.3", 1000}},
		{"study refusals", studyRejectsSQL[RejectRefused], []any{"1.2.3", 1000}},
		{"study cut short", studyRejectsSQL[RejectCutShort], []any{"1.2.3", 1000}},
	} {
		t.Run(q.name, func(t *testing.T) {
			all := queryPlan(t, db, q.stmt, q.args...)
			for _, want := range []string{"SEARCH a USING INDEX audit_study_outcome (study_uid=? AND outcome=?)", "SEARCH i USING COVERING INDEX sqlite_autoindex_instances_1 (sop_uid=?)"} {
				if !strings.Contains(all, want) {
					t.Errorf("plan lacks %q:\n%s", want, all)
				}
			}
			if strings.Contains(all, "SCAN a") || strings.Contains(all, "SCAN i") {
				t.Errorf("plan scans the audit trail or the index:\n%s", all)
			}
		})
	}
}

func words(n int) string {
	w := make([]string, n)
	for i := range w {
		w[i] = "w" + strconv.Itoa(i)
	}
	return strings.Join(w, " ")
}

// TestAssociations groups the trail per association: one row each with
// its instances, outcome and duration; filters and paging. An association
// without an end record whose run a later start reported stopped
// uncleanly ended with it (outcome unclean-stop): it was listed as open
// for ever, under a portal saying no association was open.
func TestAssociations(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	a := db.AuditStore()
	n := 0
	add := func(assoc, outcome, ae string, at time.Duration) {
		t.Helper()
		n++
		rec := pipeline.AuditRecord{ID: fmt.Sprint("r", n), Time: t0.Add(at), Outcome: outcome, AssociationID: assoc, CallingAE: ae,
			CalledAE: "REMOTE_AE", PeerAddr: "10.0.0.1:4000"}
		if outcome == "association-released" {
			// The SCP stored 5 (3 identical resends, whose duplicate
			// records this test leaves out).
			rec.StoredInstances = 5
		}
		if _, err := a.Append(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	add("a1", "association-accepted", "SITE_A", 0)
	add("a1", "stored", "SITE_A", time.Second)
	add("a1", "rejected", "SITE_A", 2*time.Second)
	// A Storage Commitment request and its later steps are no instances
	// (found by a probe: one request showed as 3 instances), and one
	// refused is a request too.
	add("a1", pipeline.OutcomeCommitmentRequested, "SITE_A", 2*time.Second)
	add("a1", pipeline.OutcomeCommitmentFailures, "SITE_A", 2*time.Second)
	add("a1", pipeline.OutcomeCommitmentReported, "SITE_A", 2*time.Second)
	add("a1", associationaudit.EventCommitmentRefused, "SITE_A", 2*time.Second)
	add("a1", "association-released", "SITE_A", 3*time.Second)
	add("a2", "association-rejected", "EVIL", 10*time.Second)
	add("dead1-1", "association-accepted", "SITE_B", 15*time.Second)
	add("dead1-1", "stored", "SITE_B", 16*time.Second)
	add("dead1-1", "rejected", "SITE_B", 16*time.Second)
	add("dead1-1", associationaudit.EventStoreFailed, "SITE_B", 17*time.Second)
	add("a3", "association-accepted", "SITE_B", 20*time.Second)
	add("a3", "stored", "SITE_B", 21*time.Second)
	add("", "unparseable-record", "", 22*time.Second)
	if _, err := a.Append(ctx, pipeline.AuditRecord{ID: "start-live", Time: t0.Add(30 * time.Second), Outcome: pipeline.OutcomeUncleanStop,
		AssociationID: "live", PreviousRuns: []associationaudit.UncleanRun{{Instance: "dead1", LastSeq: 1}}}); err != nil {
		t.Fatal(err)
	}

	p, err := db.Associations(ctx, AssociationQuery{})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		ID, Outcome                                      string
		Instances, Rejected, Failed, Stored, Commitments int
		Duration                                         time.Duration
	}
	var got []row
	for _, x := range p.Associations {
		got = append(got, row{x.ID, x.Outcome, x.Instances, x.Rejected, x.Failed, x.Stored, x.CommitmentRequests, x.Duration()})
	}
	// An association that ended with its run has no end record to count
	// what it stored (it showed 0): its instance records do, less the
	// C-STOREs the SCP refused.
	want := []row{{"a3", "open", 1, 0, 0, 0, 0, 0}, {"dead1-1", "unclean-stop", 3, 1, 1, 2, 0, 0}, {"a2", "association-rejected", 0, 0, 0, 0, 0, 0},
		{"a1", "association-released", 2, 1, 0, 5, 2, 3 * time.Second}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("associations (-want +got):\n%s", d)
	}
	for _, tt := range []struct {
		name string
		q    AssociationQuery
		want []string
	}{
		{"by calling AE", AssociationQuery{CallingAE: "SITE_A"}, []string{"a1"}},
		{"by outcome", AssociationQuery{Outcome: "open"}, []string{"a3"}},
		{"ended with its run", AssociationQuery{Outcome: AssociationRunStopped}, []string{"dead1-1"}},
		{"page 1", AssociationQuery{Limit: 3}, []string{"a3", "dead1-1", "a2"}},
	} {
		p, err := db.Associations(ctx, tt.q)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, x := range p.Associations {
			ids = append(ids, x.ID)
		}
		if d := cmp.Diff(tt.want, ids); d != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, d)
		}
		if tt.name == "page 1" {
			p2, err := db.Associations(ctx, AssociationQuery{Limit: 3, Cursor: p.Next})
			if err != nil || len(p2.Associations) != 1 || p2.Associations[0].ID != "a1" || p2.Next != "" {
				t.Errorf("page 2: %+v %v", p2, err)
			}
		}
	}
	recs, err := db.AssociationRecords(ctx, "a1", "", 5)
	if err != nil || len(recs.Records) != 5 || recs.Next == "" {
		t.Fatalf("records page 1: %d, next %q, %v", len(recs.Records), recs.Next, err)
	}
	recs, err = db.AssociationRecords(ctx, "a1", recs.Next, 5)
	if err != nil || len(recs.Records) != 3 || recs.Records[2].Outcome != "association-released" || recs.Next != "" {
		t.Errorf("records page 2: %+v %v", recs, err)
	}
	if _, err := db.Association(ctx, "nope"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("unknown association: %v", err)
	}
	if d, err := db.Association(ctx, "dead1-1"); err != nil || d.Outcome != AssociationRunStopped || !strings.Contains(d.Reason, "run dead1") || d.Stored != 2 {
		t.Errorf("an association of a dead run: %+v, %v", d, err)
	}
	// The dead runs are read through their index, not a scan of the trail.
	plan := queryPlan(t, db, deadRunsQuery)
	if !strings.Contains(plan, "USING INDEX audit_unclean") {
		t.Errorf("dead runs' plan:\n%s", plan)
	}
}

// TestCommitments: the transactions newest first (those of the same
// instant too, by the cursor's tie-break), paged, filtered by calling AE
// and by outcome (decided, with or without failures; a waiting one has
// none yet), a transaction naming no indexed study among them.
func TestCommitments(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	cs := db.CommitmentStore()
	for _, tx := range []struct {
		id, ae  string
		at      time.Duration
		state   pipeline.CommitmentState
		failed  int
		studies []string
	}{
		{"t1", "PACS_A", 0, pipeline.CommitmentReported, 0, []string{"1.1"}},
		{"t2", "PACS_B", time.Minute, pipeline.CommitmentReported, 2, nil}, // no known study
		{"t3", "PACS_A", 2 * time.Minute, pipeline.CommitmentUndeliverable, 1, []string{"1.1"}},
		{"t4", "PACS_A", 2 * time.Minute, pipeline.CommitmentPending, 0, nil}, // the same instant as t3
		{"t5", "PACS_B", 3 * time.Minute, pipeline.CommitmentReporting, 0, []string{"1.2"}},
	} {
		created, _, err := cs.CreateCommitment(ctx, pipeline.CommitmentTransaction{ID: tx.id, TransactionUID: "2.25." + tx.id[1:], CallingAE: tx.ae,
			RefCount: 2, ReceivedAt: t0.Add(tx.at), State: pipeline.CommitmentPending})
		if err != nil {
			t.Fatal(err)
		}
		created.State, created.Failed, created.Committed, created.Studies = tx.state, tx.failed, 2-tx.failed, tx.studies
		if _, err := cs.UpdateCommitment(ctx, created); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		q    CommitmentQuery
		want []string
	}{
		{"all, newest first", CommitmentQuery{}, []string{"t5", "t4", "t3", "t2", "t1"}},
		{"calling AE", CommitmentQuery{CallingAE: "PACS_B"}, []string{"t5", "t2"}},
		{"success", CommitmentQuery{Outcome: CommitmentSuccess}, []string{"t5", "t1"}},
		{"failure", CommitmentQuery{Outcome: CommitmentFailure}, []string{"t3", "t2"}},
		{"failure of one AE", CommitmentQuery{Outcome: CommitmentFailure, CallingAE: "PACS_A"}, []string{"t3"}},
		{"unknown AE", CommitmentQuery{CallingAE: "NOBODY"}, nil},
		{"paged by 2", CommitmentQuery{Limit: 2}, []string{"t5", "t4", "t3", "t2", "t1"}},
		{"paged by 1, failures", CommitmentQuery{Limit: 1, Outcome: CommitmentFailure}, []string{"t3", "t2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			q := tt.q
			for pages := 0; ; pages++ {
				p, err := cs.Commitments(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if q.Limit > 0 && len(p.Transactions) > q.Limit || pages > 5 {
					t.Fatalf("page %d of %d, limit %d", pages, len(p.Transactions), q.Limit)
				}
				for _, tx := range p.Transactions {
					got = append(got, tx.ID)
					if o := CommitmentOutcome(tx); q.Outcome != "" && o != q.Outcome {
						t.Errorf("%s: outcome %q under the filter %q", tx.ID, o, q.Outcome)
					}
				}
				if p.Next == "" {
					break
				}
				q.Cursor = p.Next
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("transactions (-want +got):\n%s", d)
			}
		})
	}
	for _, q := range []CommitmentQuery{{Cursor: "garbage"}, {Cursor: "1.0"}} {
		if _, err := cs.Commitments(ctx, q); !errors.Is(err, pipeline.ErrBadCursor) {
			t.Errorf("cursor %q: %v, want ErrBadCursor", q.Cursor, err)
		}
	}
	if _, err := cs.Commitments(ctx, CommitmentQuery{Outcome: "maybe"}); err == nil {
		t.Error("outcome maybe: no error")
	}
}

// TestSearchErrorNamesItsSearch: each search the store refuses says which
// search refused it (every SearchError said "search studies").
func TestSearchErrorNamesItsSearch(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	for _, tt := range []struct {
		search string
		run    func() error
	}{
		{"search studies", func() error { _, err := db.SearchStudies(ctx, StudySearch{Status: "lost"}); return err }},
		{"associations", func() error { _, err := db.Associations(ctx, AssociationQuery{Outcome: "closed"}); return err }},
		{"commitments", func() error {
			_, err := db.CommitmentStore().Commitments(ctx, CommitmentQuery{Outcome: "maybe"})
			return err
		}},
	} {
		err := tt.run()
		var se *SearchError
		if !errors.As(err, &se) || se.Search != tt.search || !strings.HasPrefix(err.Error(), "localstore: "+tt.search+": ") {
			t.Errorf("%s: %v, want a SearchError naming it", tt.search, err)
		}
	}
}

// TestAssociationCountsInstanceRecordsOnly: of every outcome the trail has,
// a record naming an association counts as one of its instances only when
// it is an instance's (stored, conflict, duplicate, rejected, store-failed).
// Any other counted as an instance by default: an unparseable-record, a
// run's start or stop, which name no association today, would each have
// shown as an instance the day one did.
func TestAssociationCountsInstanceRecordsOnly(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	instances := map[string]bool{pipeline.OutcomeStored: true, pipeline.OutcomeConflict: true, pipeline.OutcomeDuplicate: true,
		pipeline.OutcomeRejected: true, associationaudit.EventStoreFailed: true}
	for i, outcome := range pipeline.AuditOutcomes {
		t.Run(outcome, func(t *testing.T) {
			id := fmt.Sprint("assoc-", i)
			for j, o := range []string{associationaudit.EventAccepted, outcome} {
				rec := pipeline.AuditRecord{ID: fmt.Sprint(id, "-", j), Time: t0.Add(time.Duration(j) * time.Second), Outcome: o,
					AssociationID: id, CallingAE: "SITE_A", CalledAE: "REMOTE_AE"}
				if _, err := db.AuditStore().Append(ctx, rec); err != nil {
					t.Fatal(err)
				}
			}
			a, err := db.Association(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			want := 0
			if instances[outcome] {
				want = 1
			}
			if a.Instances != want {
				t.Errorf("a %s record counts as %d instances, want %d", outcome, a.Instances, want)
			}
		})
	}
}

// TestAssociationCountsQuarantinedResends: a resend of an object validation
// quarantined (a duplicate record naming the quarantined copy) counts as
// quarantined, not as an identical resend already held, which the
// association's page said of it.
func TestAssociationCountsQuarantinedResends(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	for i, tt := range []struct {
		name                 string
		quarantineKey        string
		duplicates, rejected int
	}{
		{"resend of a stored object", "", 1, 0},
		{"resend of a quarantined object", "quarantine/2026/01/15/x.dcm", 0, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprint("assoc-q", i)
			appendToAssociation(t, db, id,
				pipeline.AuditRecord{Outcome: associationaudit.EventAccepted},
				pipeline.AuditRecord{Outcome: pipeline.OutcomeDuplicate, QuarantineKey: tt.quarantineKey})
			a, err := db.Association(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if a.Instances != 1 || a.Duplicates != tt.duplicates || a.Rejected != tt.rejected {
				t.Errorf("%d instances, %d already held, %d quarantined; want 1, %d, %d", a.Instances, a.Duplicates, a.Rejected, tt.duplicates, tt.rejected)
			}
		})
	}
}

// appendToAssociation appends recs as records of association id, a
// second apart from t0, from SITE_A to REMOTE_AE.
func appendToAssociation(t *testing.T, db *DB, id string, recs ...pipeline.AuditRecord) {
	t.Helper()
	for j, rec := range recs {
		rec.ID, rec.Time, rec.AssociationID, rec.CallingAE, rec.CalledAE = fmt.Sprint(id, "-", j), t0.Add(time.Duration(j)*time.Second), id, "SITE_A", "REMOTE_AE"
		if _, err := db.AuditStore().Append(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAssociationFailedCountsEveryStoreFailed: Failed counts the C-STOREs
// that stored nothing, whether refused with a failure status (sent or not)
// or cut short by the association's end (answered nothing): each is an
// instance, and none is quarantined or already held.
func TestAssociationFailedCountsEveryStoreFailed(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	const id = "assoc-f"
	appendToAssociation(t, db, id,
		pipeline.AuditRecord{Outcome: associationaudit.EventAccepted},
		pipeline.AuditRecord{Outcome: associationaudit.EventStoreFailed, Reason: "refused"},
		pipeline.AuditRecord{Outcome: associationaudit.EventStoreFailed, Reason: "refused", ResponseNotSent: true},
		pipeline.AuditRecord{Outcome: associationaudit.EventStoreFailed, Reason: "cut short", NotAnswered: true})
	a, err := db.Association(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if a.Instances != 3 || a.Failed != 3 || a.Duplicates != 0 || a.Rejected != 0 {
		t.Errorf("%d instances, %d failed, %d already held, %d quarantined; want 3, 3, 0, 0", a.Instances, a.Failed, a.Duplicates, a.Rejected)
	}
}

// TestOpenAssociationHasNoEnd: an association without an end record is
// served without "end" (it was "0001-01-01T00:00:00Z", omitempty being no
// use on a time.Time); one that ended has its time.
func TestOpenAssociationHasNoEnd(t *testing.T) {
	at := time.Date(2026, 12, 6, 17, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		a    Association
		want string // the "end" member, "" for none
	}{
		{"open", Association{ID: "a1", Start: at, Outcome: AssociationOpen}, ""},
		{"released", Association{ID: "a2", Start: at, End: at.Add(time.Second), Outcome: "association-released"}, `"2026-12-06T17:00:01Z"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.a)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if got := string(m["end"]); got != tc.want {
				t.Errorf("end %q, want %q (%s)", got, tc.want, b)
			}
		})
	}
}

// TestAssociationNamesRefusedContexts: an association's row carries what
// its A-ASSOCIATE-AC refused (its association-accepted record's reason)
// beside how it ended. A PACS that proposed only Explicit VR Big Endian
// showed as accepted, then aborted "connection closed: EOF" with no
// instances, and the row did not say why (found onboarding a site with
// Orthanc).
func TestAssociationNamesRefusedContexts(t *testing.T) {
	db := openTest(t)
	ctx := context.Background()
	const refused = "no presentation context accepted (1 proposed): transfer syntax not supported (Explicit VR Big Endian (Retired) 1.2.840.10008.1.2.2)"
	for i, rec := range []pipeline.AuditRecord{
		{Outcome: associationaudit.EventAccepted, AssociationID: "be", Reason: refused, PeerAddr: "10.0.0.1:4000"},
		{Outcome: associationaudit.EventAborted, AssociationID: "be", Reason: "dicomnet: connection closed: EOF"},
		{Outcome: associationaudit.EventAccepted, AssociationID: "ok"},
		{Outcome: associationaudit.EventReleased, AssociationID: "ok"},
	} {
		rec.ID, rec.Time, rec.CallingAE, rec.CalledAE = fmt.Sprint("r", i), t0.Add(time.Duration(i)*time.Second), "SITE_A", "REMOTE_AE"
		if _, err := db.AuditStore().Append(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	p, err := db.Associations(ctx, AssociationQuery{})
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ ID, Outcome, Reason, RefusedContexts, PeerAddr string }
	var got []row
	for _, a := range p.Associations {
		got = append(got, row{a.ID, a.Outcome, a.Reason, a.RefusedContexts, a.PeerAddr})
	}
	want := []row{{"ok", associationaudit.EventReleased, "", "", ""},
		{"be", associationaudit.EventAborted, "dicomnet: connection closed: EOF", refused, "10.0.0.1:4000"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("associations (-want +got):\n%s", d)
	}
	if a, err := db.Association(ctx, "be"); err != nil || a.RefusedContexts != refused {
		t.Errorf("association be: %+v, %v", a, err)
	}
}

// TestEventStudiesFromOlderDatabase: migration 15 links the events of a
// database from before it to their studies as addEvent links a new one
// (pipeline.EventStudies), so a study's filter finds the Storage
// Commitment Completed events recorded before the upgrade too.
func TestEventStudiesFromOlderDatabase(t *testing.T) {
	ctx := context.Background()
	details := []string{
		`{"studyInstanceUid":"1.2.3","sopInstanceUid":"1.2.3.4.5"}`,
		`{"sopInstanceUid":"1.2.3.4.6"}`,
		`{"transactionUid":"9.9","studies":["1.2.3","1.2.4"],"studyCount":2}`,
		`{"transactionUid":"9.8","studies":[],"studyCount":0}`,
		`{"studyInstanceUid":"1.2.4","studies":["1.2.4","","1.2.5"]}`,
		`{"studyInstanceUid":"","studies":"1.2.6"}`,
	} // every detail is JSON: outbox_study, on its studyInstanceUid, refused any other
	db := openOlderDatabase(t, 14, func(sdb *sql.DB) error {
		for i, d := range details {
			if _, err := sdb.Exec(`INSERT INTO outbox(id, time, source, detail_type, detail) VALUES (?, 0, 's', 't', ?)`,
				fmt.Sprintf("e%d", i+1), d); err != nil {
				return err
			}
		}
		return nil
	})
	want := map[string][]int64{}
	for i, d := range details {
		for _, s := range pipeline.EventStudies(json.RawMessage(d)) {
			want[s] = append(want[s], int64(i+1))
		}
	}
	got := map[string][]int64{}
	rows, err := db.read.QueryContext(ctx, `SELECT study_uid, seq FROM outbox_studies ORDER BY study_uid, seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		var seq int64
		if err := rows.Scan(&s, &seq); err != nil {
			t.Fatal(err)
		}
		got[s] = append(got[s], seq)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("links after the upgrade (-EventStudies +migrated):\n%s", d)
	}
	p, err := db.Events(ctx, EventFilter{Study: "1.2.4"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 2 || p.Events[0].Seq != 5 || p.Events[1].Seq != 3 {
		t.Errorf("study 1.2.4's events after the upgrade: %+v, want 5 and 3", p.Events)
	}
}

// TestEventsPlan: a study's events page reads the study's links in seq
// order, not every event, and a page of one type or of several the
// types' index in seq order.
func TestEventsPlan(t *testing.T) {
	db := openTest(t)
	studyTypes := []string{pipeline.DetailTypeStudyReceived, pipeline.DetailTypeStudyUpdated}
	for _, tt := range []struct {
		name  string
		f     EventFilter
		want  string
		never []string
	}{
		{"study", at(EventFilter{Study: "1.2.3"}, 100), "SEARCH s USING PRIMARY KEY (study_uid=? AND seq<?)", []string{"SCAN o", "TEMP B-TREE"}},
		{"study, tail", EventFilter{Study: "1.2.3", Tail: true}, "SEARCH s USING PRIMARY KEY (study_uid=? AND seq>?)", []string{"SCAN o", "TEMP B-TREE"}},
		{"one type", EventFilter{DetailTypes: []string{pipeline.DetailTypeStudyReceived}}, "USING INDEX outbox_type_seq (detail_type=?)", []string{"SCAN o", "TEMP B-TREE"}},
		// The Events page's "Study Received,Study Updated": an IN list
		// read every event of both types and sorted them for a page.
		{"types", EventFilter{DetailTypes: studyTypes}, "USING INDEX outbox_type_seq (detail_type=?)", []string{"SCAN o", "TEMP B-TREE"}},
		{"types, paged", at(EventFilter{DetailTypes: studyTypes}, 100), "USING INDEX outbox_type_seq (detail_type=? AND seq<?)", []string{"SCAN o", "TEMP B-TREE"}},
		{"types, tail", EventFilter{DetailTypes: studyTypes, Tail: true}, "USING INDEX outbox_type_seq (detail_type=? AND seq>?)", []string{"SCAN o", "TEMP B-TREE"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var before int64
			if tt.f.Before != "" {
				place, err := tt.f.cursorScope().Open(tt.f.Before)
				if before, _ = strconv.ParseInt(place, 10, 64); err != nil {
					t.Fatal(err)
				}
			}
			q, args := eventsQuery(tt.f, before)
			all := queryPlan(t, db, q, append(args, 100)...)
			if !strings.Contains(all, tt.want) {
				t.Errorf("plan lacks %q:\n%s", tt.want, all)
			}
			for _, n := range tt.never {
				if strings.Contains(all, n) {
					t.Errorf("plan has %q:\n%s", n, all)
				}
			}
		})
	}
}

// TestRejectJSON: a Reject decoded from its JSON (the portal's
// /api/studies/{uid} serves them) is the Reject marshalled, Cleared
// included: AuditRecord's UnmarshalJSON, promoted, read the record alone
// and dropped it. A record written with the legacy content identity
// field is read with it.
func TestRejectJSON(t *testing.T) {
	// Every field of Reject is set below: one added must be too.
	if n := reflect.TypeFor[Reject]().NumField(); n != 2 {
		t.Fatalf("Reject has %d fields: set the new ones here, and read them in UnmarshalJSON", n)
	}
	rec := pipeline.AuditRecord{ID: "audit-1", SchemaVersion: 1, Time: time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC), Day: "2026-01-15",
		Outcome: pipeline.OutcomeRejected, Reason: "over-limit", AssociationID: "assoc1", SOPInstanceUID: "1.2.3.4", ContentIdentity: "abc"}
	for _, cleared := range []bool{true, false} {
		want := Reject{AuditRecord: rec, Cleared: cleared}
		b, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var got Reject
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("cleared %v: decoded (-want +got):\n%s", cleared, d)
		}
	}
	legacy := `{"id":"audit-1","outcome":"rejected","` + pipeline.LegacyContentIdentityField + `":"abc","cleared":true}`
	var got Reject
	if err := json.Unmarshal([]byte(legacy), &got); err != nil {
		t.Fatal(err)
	}
	if got.ContentIdentity != "abc" || !got.Cleared {
		t.Errorf("legacy record decoded as %+v", got)
	}
}
