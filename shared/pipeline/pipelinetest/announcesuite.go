package pipelinetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/panicvalue"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// RunAnnouncements runs the announcement scenarios of
// Pipeline.AnnounceStableStudies on an index of one implementation (the
// fake, SQLite, DynamoDB on an emulator), with the fake bus: what a run
// does when announcements fail, which each index's DeferAnnouncement and
// StableStudies decide with it.
func RunAnnouncements(t *testing.T, newIndex func(t *testing.T) pipeline.IndexStore) {
	t.Run("FailingAnnouncementsHoldNoneBack", func(t *testing.T) { testFailingAnnouncements(t, newIndex(t)) })
	t.Run("BusDownStopsTheRun", func(t *testing.T) { testBusDown(t, newIndex(t)) })
	t.Run("RefusedEventsDoNotStopTheRun", func(t *testing.T) { testRefusedEvents(t, newIndex(t)) })
	t.Run("PanickingStudyHoldsNoneBack", func(t *testing.T) { testPanickingStudy(t, newIndex) })
}

// announcing returns fakes whose pipeline announces from ix, quiet period
// a minute.
func announcing(ix pipeline.IndexStore) (*Fakes, *pipeline.Pipeline) {
	f := New()
	p := f.Pipeline()
	p.Index, p.QuietPeriod = ix, time.Minute
	return f, p
}

// unreadableStudies is an index whose listed studies' details cannot be
// read: their announcements fail every time.
type unreadableStudies struct {
	pipeline.IndexStore
	bad map[string]bool
}

var errUnreadable = errors.New("study cannot be read")

func (x unreadableStudies) GetStudy(ctx context.Context, uid string) (pipeline.StudyDetail, error) {
	if x.bad[uid] {
		return pipeline.StudyDetail{}, errUnreadable
	}
	return x.IndexStore.GetStudy(ctx, uid)
}

// testFailingAnnouncements: more studies than a run takes whose
// announcements fail every time, all quiet longer than a good one, delay it
// by one run, not for ever: each failure restarts its study's quiet period,
// behind the good study, and the failed studies stay pending. A study's own
// failures do not stop the run, however many in a row.
func testFailingAnnouncements(t *testing.T, ix pipeline.IndexStore) {
	ctx := context.Background()
	x := unreadableStudies{IndexStore: ix, bad: map[string]bool{}}
	f, p := announcing(x)
	const failing = 120 // a run takes 100
	for s := 1; s <= failing; s++ {
		in := Record(s, 1, 1, "aa", 0) // active at T0+1s
		x.bad[in.StudyInstanceUID] = true
		upsert(t, x, in, pipeline.InstanceNew)
	}
	good := Record(failing+1, 1, 1, "bb", 10*time.Second)
	upsert(t, x, good, pipeline.InstanceNew)
	received := func() int {
		n := 0
		for _, e := range f.Events.All() {
			if e.DetailType == pipeline.DetailTypeStudyReceived {
				n++
			}
		}
		return n
	}
	// The first run, a minute after, takes the 100 studies quiet the
	// longest: all fail. The next takes the 20 others, the good one, and 79
	// of the first hundred again.
	for run, want := range []int{0, 1} {
		now := T0.Add(time.Duration(run+2) * time.Minute)
		n, err := p.AnnounceStableStudies(ctx, now)
		if !errors.Is(err, errUnreadable) {
			t.Errorf("run %d: err %v, want the failures", run+1, err)
		}
		if n != want || received() != want {
			t.Fatalf("run %d announced %d (%d events), want %d", run+1, n, received(), want)
		}
	}
	if d := getStudy(t, ix, good.StudyInstanceUID); d.AnnouncedVersion != 1 {
		t.Errorf("good study = %+v", d.StudySummary)
	}
	// None of the failing studies is lost: all still wait for an
	// announcement.
	pending, err := ix.StableStudies(ctx, T0.Add(time.Hour), 1000)
	if err != nil || len(pending) != failing {
		t.Errorf("%d studies still pending, want %d (%v)", len(pending), failing, err)
	}
}

// testBusDown: with the event bus failing every call, a run stops after
// three announcements in a row failed to publish, each deferred, and leaves
// the other studies untried where they are: about 70 tries, each with the
// publish's retries, used up the notify function's timeout. Once the bus is
// back, the next run announces every study.
func testBusDown(t *testing.T, ix pipeline.IndexStore) {
	ctx := context.Background()
	f, p := announcing(ix)
	const studies = 10
	for s := 1; s <= studies; s++ {
		upsert(t, ix, Record(s, 1, 1, "aa", time.Duration(s)*time.Second), pipeline.InstanceNew)
	}
	down := errors.New("event bus down")
	f.Events.Err = down
	now := T0.Add(time.Hour)
	n, err := p.AnnounceStableStudies(ctx, now)
	if n != 0 || !errors.Is(err, down) || err == nil || !strings.Contains(err.Error(), "7 of 10 studies left for the next run") {
		t.Errorf("announced %d, err %v; want none, the bus's failures and the studies left", n, err)
	}
	if f.Events.Calls != 3*5 {
		t.Errorf("%d publish calls, want 3 announcements' 5 tries", f.Events.Calls)
	}
	deferred := 0
	for s := 1; s <= studies; s++ {
		if getStudy(t, ix, studyUID(s)).LastActivity.Equal(now) {
			deferred++
		}
	}
	if deferred != 3 {
		t.Errorf("%d studies deferred, want the 3 tried", deferred)
	}
	f.Events.Err = nil
	if n, err := p.AnnounceStableStudies(ctx, now.Add(time.Minute)); n != studies || err != nil {
		t.Errorf("once the bus is back: announced %d (%v), want %d", n, err, studies)
	}
}

// testRefusedEvents: studies whose events the bus refuses on their own (an
// invalid or too large entry), however many in a row, are each tried once,
// deferred, and do not stop the run: they counted as the bus failing, each
// tried five times, and three of them quiet the longest stopped every run
// before the studies behind them, for as long as they were refused.
func testRefusedEvents(t *testing.T, ix pipeline.IndexStore) {
	ctx := context.Background()
	f, p := announcing(ix)
	const refused, good = 4, 3
	bad := map[string]bool{}
	for s := 1; s <= refused+good; s++ {
		in := Record(s, 1, 1, "aa", time.Duration(s)*time.Second) // the refused ones quiet the longest
		if s <= refused {
			bad[in.StudyInstanceUID] = true
		}
		upsert(t, ix, in, pipeline.InstanceNew)
	}
	f.Events.Refuse = func(e pipeline.Event) (string, bool) {
		var d struct {
			StudyInstanceUID string `json:"studyInstanceUid"`
		}
		if err := json.Unmarshal(e.Detail, &d); err != nil {
			t.Fatal(err)
		}
		return "InvalidArgument", bad[d.StudyInstanceUID]
	}
	now := T0.Add(time.Hour)
	n, err := p.AnnounceStableStudies(ctx, now)
	if n != good || err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Errorf("announced %d, err %v; want the %d others and the refusals", n, err, good)
	}
	if f.Events.Calls != refused+good {
		t.Errorf("%d publish calls, want one a study: a refused event is not tried again", f.Events.Calls)
	}
	// The error names each refused study by the log name of its UID, never by the UID: it named none, and the
	// operator NotifyDlqNotEmpty sends to the run's error had nothing to look for.
	for s := 1; s <= refused+good; s++ {
		uid := studyUID(s)
		if named := strings.Contains(fmt.Sprint(err), p.Names.Name(uid)); named != (s <= refused) {
			t.Errorf("study %d named %v in the run's error %q; want the refused ones named", s, named, err)
		}
		if strings.Contains(fmt.Sprint(err), uid) {
			t.Errorf("the run's error %q holds study %d's UID", err, s)
		}
	}
	for s := 1; s <= refused; s++ {
		if d := getStudy(t, ix, studyUID(s)); !d.LastActivity.Equal(now) || d.AnnouncedVersion != 0 {
			t.Errorf("refused study %d: activity %v, announced version %d; want it deferred to the run", s, d.LastActivity, d.AnnouncedVersion)
		}
	}
}

// poisonStudy is an index whose handling of one study panics, in GetStudy
// (before its event is published) or in MarkAnnounced (after): a bug that
// meets that study every time.
type poisonStudy struct {
	pipeline.IndexStore
	uid, in string
}

func (x poisonStudy) GetStudy(ctx context.Context, uid string) (pipeline.StudyDetail, error) {
	if uid == x.uid && x.in == "GetStudy" {
		panic("poison study " + uid)
	}
	return x.IndexStore.GetStudy(ctx, uid)
}

func (x poisonStudy) MarkAnnounced(ctx context.Context, uid string, revision, version int64, at time.Time) error {
	if uid == x.uid && x.in == "MarkAnnounced" {
		panic("poison study " + uid)
	}
	return x.IndexStore.MarkAnnounced(ctx, uid, revision, version, at)
}

// testPanickingStudy: a study whose announcement panics every time (a bug
// it meets), quiet the longest, fails alone: the studies behind it are
// announced in the same run, it is deferred as a failing study is (tried
// again a quiet period later, behind the studies quiet before it) and
// stays pending, the next run does not stop at it either, the run's error
// says a panic, and the log line names it by its log name, never its UID.
// Its event is published at most once, however often it panics after
// publishing (the publish ledger). The panic was recovered only around the
// whole run: every run failed at it, first, and no study behind it was
// ever announced.
func testPanickingStudy(t *testing.T, newIndex func(t *testing.T) pipeline.IndexStore) {
	for _, in := range []string{"GetStudy", "MarkAnnounced"} {
		t.Run("in "+in, func(t *testing.T) {
			ctx := context.Background()
			x := poisonStudy{IndexStore: newIndex(t), uid: studyUID(1), in: in}
			f, p := announcing(x)
			var logs bytes.Buffer
			p.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
			const studies = 4
			for s := 1; s <= studies; s++ { // the poison study quiet the longest
				upsert(t, x, Record(s, 1, 1, "aa", time.Duration(s)*time.Second), pipeline.InstanceNew)
			}
			run := func(now time.Time) (n int, err error) {
				t.Helper()
				defer func() {
					if v := recover(); v != nil {
						t.Fatalf("the run at %v panicked: %v", now, v)
					}
				}()
				return p.AnnounceStableStudies(ctx, now)
			}
			received := func(uid string) int {
				n := 0
				for _, e := range f.Events.All() {
					if e.DetailType == pipeline.DetailTypeStudyReceived && strings.Contains(string(e.Detail), `"`+uid+`"`) {
						n++
					}
				}
				return n
			}
			now := T0.Add(time.Hour)
			n, err := run(now)
			if n != studies-1 || !errors.Is(err, panicvalue.ErrPanicked) {
				t.Errorf("first run: announced %d, err %v; want the %d others and the panic", n, err, studies-1)
			}
			for s := 2; s <= studies; s++ {
				if got := received(studyUID(s)); got != 1 {
					t.Errorf("study %d: %d Study Received, want 1 in the run the poison study panicked in", s, got)
				}
			}
			if d := getStudy(t, x.IndexStore, studyUID(1)); !d.LastActivity.Equal(now) || d.AnnouncedVersion != 0 {
				t.Errorf("poison study: activity %v, announced version %d; want it deferred to the run, unannounced", d.LastActivity, d.AnnouncedVersion)
			}
			// A study quiet after the deferral, behind the poison study in
			// the next run's order: announced there all the same.
			upsert(t, x, Record(studies+1, 1, 1, "aa", time.Hour+10*time.Second), pipeline.InstanceNew)
			n, err = run(now.Add(2 * time.Minute))
			if n != 1 || !errors.Is(err, panicvalue.ErrPanicked) || received(studyUID(studies+1)) != 1 {
				t.Errorf("second run: announced %d, err %v; want the study behind the poison one and the panic again", n, err)
			}
			if got, max := received(studyUID(1)), map[string]int{"GetStudy": 0, "MarkAnnounced": 1}[in]; got != max {
				t.Errorf("poison study: %d Study Received over two runs, want %d", got, max)
			}
			pending, err := x.StableStudies(ctx, T0.Add(24*time.Hour), 1000)
			if err != nil || len(pending) != 1 || pending[0].StudyInstanceUID != studyUID(1) {
				t.Errorf("pending %v (%v), want the poison study alone", studyUIDs(pending), err)
			}
			for _, out := range []string{logs.String(), fmt.Sprint(err)} {
				if strings.Contains(out, studyUID(1)) {
					t.Errorf("the poison study's UID in %q", out)
				}
			}
			if c := strings.Count(logs.String(), pipeline.AnnouncePanicLog); c != 2 || !strings.Contains(logs.String(), p.Names.Name(studyUID(1))) {
				t.Errorf("%d lines %q naming the poison study by its log name, want one a run:\n%s", c, pipeline.AnnouncePanicLog, logs.String())
			}
		})
	}
}
