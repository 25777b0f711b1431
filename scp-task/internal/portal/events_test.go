package portal

import (
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// TestEventsByStudyAndTypes: a study's events are every event that names
// it, a Storage Commitment Completed listing it among its studies too
// (study= found only the events whose studyInstanceUid it was), and type
// takes a comma-separated list of types (one type a query, before); the
// Events page keeps a list it does not offer as a choice.
func TestEventsByStudyAndTypes(t *testing.T) {
	srv, db := newTestServer(t) // its e1, seq 1: Study Received of 1.2.3
	evs := []pipeline.Event{
		{ID: "e2", DetailType: pipeline.DetailTypeInstanceStored, Detail: json.RawMessage(`{"studyInstanceUid":"1.2.3"}`)},
		{ID: "e3", DetailType: pipeline.DetailTypeCommitmentCompleted, Detail: json.RawMessage(
			`{"transactionUid":"9.9","outcome":"committed","committedCount":3,"failedCount":0,"studies":["1.2.3","1.2.4"],"studyCount":2}`)},
		{ID: "e4", DetailType: pipeline.DetailTypeStudyUpdated, Detail: json.RawMessage(`{"studyInstanceUid":"1.2.4"}`)},
	}
	for i := range evs {
		evs[i].Time = t0.Add(time.Duration(i+1) * time.Second)
	}
	if _, err := db.Outbox(nil).Publish(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		query string
		want  []int64
	}{
		{"study=1.2.3", []int64{3, 2, 1}},
		{"study=1.2.4", []int64{4, 3}},
		{"study=1.2.4&limit=1", []int64{4}},
		{"study=1.2.3&after=1", []int64{2, 3}},
		{"type=" + url.QueryEscape("Study Received,Storage Commitment Completed"), []int64{3, 1}},
		{"type=" + url.QueryEscape("Study Received, Study Updated,") + "&study=1.2.4", []int64{4}},
		{"type=" + url.QueryEscape("Instance Stored"), []int64{2}},
	} {
		t.Run(tt.query, func(t *testing.T) {
			code, _, body := get(t, srv.URL+"/api/events?"+tt.query, "")
			var page struct{ Events []struct{ Seq int64 } }
			if err := json.Unmarshal([]byte(body), &page); code != 200 || err != nil {
				t.Fatalf("%d %v %.300s", code, err, body)
			}
			var got []int64
			for _, e := range page.Events {
				got = append(got, e.Seq)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("seqs %v, want %v", got, tt.want)
			}
		})
	}
	_, _, body := get(t, srv.URL+"/events?type="+url.QueryEscape("Instance Stored,Study Updated"), "")
	if body = html.UnescapeString(body); !strings.Contains(body, "<option selected>Instance Stored,Study Updated</option>") {
		t.Errorf("the Events page does not keep the types it lists:\n%.2000s", body)
	}
	_, _, body = get(t, srv.URL+"/events?study=1.2.4", "")
	if !strings.Contains(body, "committed: 3 committed, 0 failed · 2 studies") || !strings.Contains(body, `data-seq="3"`) {
		t.Errorf("the study's Events page lacks the commitment naming it:\n%.3000s", body)
	}
}

// TestEventsPointAtThePortalAsItIsNow: an event recorded while the portal
// listened on :8080 is served, once it listens on :9090, pointing at
// :9090, so that a consumer reading /api/events can fetch what it names.
func TestEventsPointAtThePortalAsItIsNow(t *testing.T) {
	srv, db := newTestServer(t) // its ObjectURLBase empty
	const old, now = "http://127.0.0.1:8080/objects/", "http://127.0.0.1:9090/objects/"
	ev := pipeline.Event{ID: "e9", DetailType: pipeline.DetailTypeInstanceStored, Time: t0, Resources: []string{old + "incoming/a.dcm"},
		Detail: json.RawMessage(`{"studyInstanceUid":"7.7","objectKey":"incoming/a.dcm","objectUri":"` + old + `incoming/a.dcm"}`)}
	if _, err := db.Outbox(nil).Publish(context.Background(), []pipeline.Event{ev}); err != nil {
		t.Fatal(err)
	}
	_, _, body := get(t, srv.URL+"/api/events?study=7.7", "")
	if strings.Count(body, old+"incoming/a.dcm") != 2 {
		t.Fatalf("without an ObjectURLBase the event is served as recorded:\n%s", body)
	}
	s := &Server{Studies: db.IndexStore(), Search: db, Audit: db.AuditStore(), Associations: db, Events: db,
		Logger: errorLogger(t), ObjectURLBase: now}
	moved := httptest.NewServer(s.Handler())
	defer moved.Close()
	for _, path := range []string{"/api/events?study=7.7", "/events?study=7.7"} {
		_, _, body = get(t, moved.URL+path, "")
		if strings.Contains(body, old) || !strings.Contains(body, now+"incoming/a.dcm") {
			t.Errorf("%s: the event points at the portal of its time:\n%.3000s", path, body)
		}
	}
}

// TestStudyEventRows: an event row of a study says when its modality list
// is cut (modalityCount above the listed) and how many instances were
// rejected (rejectedCount); one whose list is whole, or from before
// modalityCount, shows the list alone.
func TestStudyEventRows(t *testing.T) {
	for _, c := range []struct {
		name   string
		detail pipeline.StudyDetailEvent
		want   string
		bad    bool
	}{
		{"whole", pipeline.StudyDetailEvent{InstanceCount: 3, SeriesCount: 1, Modalities: []string{"CT", "MR"}, ModalityCount: 2},
			"3 instances in 1 series · CT, MR", false},
		{"cut", pipeline.StudyDetailEvent{InstanceCount: 40, SeriesCount: 2, Modalities: []string{"CT", "MR"}, ModalityCount: 40},
			"40 instances in 2 series · CT, MR, … (40 modalities)", false},
		{"none listed", pipeline.StudyDetailEvent{InstanceCount: 1, SeriesCount: 1, Modalities: []string{}, ModalityCount: 1},
			"1 instance in 1 series · … (1 modality)", false},
		{"archived, no count", pipeline.StudyDetailEvent{InstanceCount: 1, SeriesCount: 1, Modalities: []string{"CT"}},
			"1 instance in 1 series · CT", false},
		{"rejected", pipeline.StudyDetailEvent{Version: 2, InstanceCount: 2, SeriesCount: 1, Modalities: []string{"CT"}, ModalityCount: 1, RejectedCount: 3},
			"version 2: 2 instances in 1 series · CT · 3 instances rejected", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := json.Marshal(c.detail)
			if err != nil {
				t.Fatal(err)
			}
			row := rowOf(localstore.StoredEvent{Event: localstore.Event{DetailType: pipeline.DetailTypeStudyReceived, Detail: b}})
			if row.Outcome != c.want || row.Bad != c.bad {
				t.Errorf("row %q (bad %v), want %q (bad %v)", row.Outcome, row.Bad, c.want, c.bad)
			}
		})
	}
}

// TestStudyPagesSayModalitiesCut: a study whose record cut its modalities
// (pipeline.MaxStudyModalities) shows the kept ones, an ellipsis and, on
// its page, the count over its instances; one not cut shows its list.
func TestStudyPagesSayModalitiesCut(t *testing.T) {
	cut := pipeline.StudySummary{StudyInstanceUID: "1.2.3", Modalities: []string{"CT", "MR"}, ModalitiesTruncated: true}
	whole := pipeline.StudySummary{StudyInstanceUID: "1.2.3", Modalities: []string{"CT", "MR"}}
	ins := []pipeline.InstanceRecord{{Modality: "CT"}, {Modality: "MR"}, {Modality: "INVENTED"}}
	for _, c := range []struct {
		name, page string
		data       any
		want       string
	}{
		{"study cut", "study.html", studyView{StudyPage: StudyPage{StudyDetail: pipeline.NewStudyDetail(cut, ins, 0)}},
			`<dd id="modalities">CT, MR, … (3 modalities)</dd>`},
		{"study whole", "study.html", studyView{StudyPage: StudyPage{StudyDetail: pipeline.NewStudyDetail(whole, ins[:2], 0)}},
			`<dd id="modalities">CT, MR</dd>`},
		{"list cut", "studies.html", []Study{{StudySummary: cut}}, `<td>CT, MR, …</td>`},
		{"list whole", "studies.html", []Study{{StudySummary: whole}}, `<td>CT, MR</td>`},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			(&Server{}).render(w, httptest.NewRequest(http.MethodGet, "/", nil), c.page, view{Title: "Study", Data: c.data})
			if !strings.Contains(w.Body.String(), c.want) {
				t.Errorf("the page does not show %s", c.want)
			}
		})
	}
}
