package portal

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// eventFilter reads the events' filters, shared by the page and the API:
// type (one or more of eventTypes, comma-separated), study (Study
// Instance UID: the events naming it anywhere), contains (text in
// the detail), since, until, limit, and either before (the cursor: the
// next value of the previous page, newest first, of the same filters) or
// after (an event's seq: events newer than it, oldest first; 0 from the
// first event), which the store refuses together; outbox, the id of the outbox a consumer's seq belongs to
// (a page's outbox, X-Event-Outbox), which the store refuses unless it is
// its own.
func eventFilter(v url.Values) (localstore.EventFilter, error) {
	p := newParams(v)
	before := p.raw("before")
	after, tail := p.eventSeq("after")
	f := localstore.EventFilter{
		DetailTypes: p.someOf("type", eventTypes),
		Study:       p.text("study"),
		Contains:    p.raw("contains"),
		Since:       p.time("since", false),
		Until:       p.time("until", true),
		Before:      before,
		After:       after,
		Tail:        tail,
		Limit:       p.limit(),
		Outbox:      p.text("outbox"),
	}
	return f, p.err()
}

// events reads the page of events f selects; a cursor the store refuses
// is before's fault.
func (s *Server) events(r *http.Request, f localstore.EventFilter) (localstore.EventPage, error) {
	page, err := s.Events.Events(r.Context(), f)
	return page, cursorRefused(err, "before")
}

func (s *Server) apiEvents(w http.ResponseWriter, r *http.Request) {
	f, err := eventFilter(r.URL.Query())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page, err := s.events(r, f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page.Rebase(s.ObjectURLBase)
	w.Header().Set(localstore.OutboxHeader, page.Outbox)
	s.writeJSON(w, page)
}

// eventRow is an event as the Events page shows it: what happened to
// which study and patient, with the event's JSON behind a disclosure.
type eventRow struct {
	Seq     int64
	Time    time.Time
	Type    string
	Study   string
	Patient string // only what the event carries (the patient-data policy)
	Outcome string
	Bad     bool // rejected or conflicting
	JSON    string
}

// eventDetail is the union of the detail fields the page shows.
type eventDetail struct {
	StudyInstanceUID string                 `json:"studyInstanceUid"`
	Modality         string                 `json:"modality"`
	Modalities       []string               `json:"modalities"`
	ModalityCount    int                    `json:"modalityCount"`
	RejectedCount    int                    `json:"rejectedCount"`
	CallingAE        string                 `json:"callingAe"`
	CallingAEs       []string               `json:"callingAes"`
	Conflict         bool                   `json:"conflict"`
	Findings         []pipeline.Finding     `json:"findings"`
	InstanceCount    int                    `json:"instanceCount"`
	SeriesCount      int                    `json:"seriesCount"`
	Version          int64                  `json:"version"`
	CommitOutcome    string                 `json:"outcome"`
	CommittedCount   int                    `json:"committedCount"`
	FailedCount      int                    `json:"failedCount"`
	StudyCount       int                    `json:"studyCount"`
	Patient          *pipeline.EventPatient `json:"patient"`
}

func rowOf(e localstore.StoredEvent) eventRow {
	row := eventRow{Seq: e.Seq, Time: e.Time, Type: e.DetailType}
	if pretty, err := json.MarshalIndent(e.Detail, "", "  "); err == nil {
		row.JSON = string(pretty)
	} else {
		row.JSON = string(e.Detail)
	}
	var d eventDetail
	if err := json.Unmarshal(e.Detail, &d); err != nil {
		row.Outcome = "unreadable detail"
		return row
	}
	// The first study the event names: a Storage Commitment Completed's
	// first listed study (its outcome counts them all).
	if studies := pipeline.EventStudies(e.Detail); len(studies) > 0 {
		row.Study = studies[0]
	}
	if p := d.Patient; p != nil {
		row.Patient = p.PatientID
		if p.Name != nil && p.Name.Alphabetic != nil {
			n := strings.TrimSpace(p.Name.Alphabetic.Family + " " + p.Name.Alphabetic.Given)
			row.Patient = strings.TrimSpace(n + " (" + p.PatientID + ")")
		}
	}
	plural := func(n int, one, many string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %s", n, many)
	}
	switch e.DetailType {
	case pipeline.DetailTypeInstanceStored:
		row.Outcome = "stored"
		if d.Conflict {
			row.Outcome, row.Bad = "stored beside different content (conflict)", true
		}
		row.Outcome += " · " + strings.TrimSpace(d.Modality+" from "+d.CallingAE)
	case pipeline.DetailTypeInstanceRejected:
		row.Outcome, row.Bad = "quarantined: "+plural(len(d.Findings), "finding", "findings"), true
		if len(d.Findings) > 0 {
			row.Outcome += " (" + d.Findings[0].Code + ")"
		}
	case pipeline.DetailTypeStudyReceived, pipeline.DetailTypeStudyUpdated:
		row.Outcome = plural(d.InstanceCount, "instance", "instances") + " in " + plural(d.SeriesCount, "series", "series")
		if d.Version > 1 {
			row.Outcome = fmt.Sprintf("version %d: %s", d.Version, row.Outcome)
		}
		if m := modalityList(d.Modalities, d.ModalityCount, false); m != "" {
			row.Outcome += " · " + m
		}
		if d.RejectedCount > 0 {
			row.Outcome, row.Bad = row.Outcome+" · "+plural(d.RejectedCount, "instance", "instances")+" rejected", true
		}
	case pipeline.DetailTypeCommitmentCompleted:
		row.Outcome = fmt.Sprintf("%s: %d committed, %d failed · %s", d.CommitOutcome, d.CommittedCount, d.FailedCount,
			plural(d.StudyCount, "study", "studies"))
		row.Bad = d.FailedCount > 0
	default:
		row.Outcome = "—"
	}
	return row
}

// modalityList is a study's modalities as the pages show them: those
// listed, and when the list is cut (count, when known, above the listed;
// or cut) an ellipsis and the count: "CT, MR, … (40 modalities)". count 0
// (an event from before modalityCount) says nothing more than the list.
func modalityList(listed []string, count int, cut bool) string {
	out := strings.Join(listed, ", ")
	if count <= len(listed) && !cut {
		return out
	}
	if out != "" {
		out += ", "
	}
	out += "…"
	switch {
	case count == 1:
		out += " (1 modality)"
	case count > len(listed):
		out += fmt.Sprintf(" (%d modalities)", count)
	}
	return out
}

func (s *Server) pageEvents(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Events", Nav: "events", Refresh: 10, Data: []eventRow{}}
	f, err := eventFilter(r.URL.Query())
	if err == nil {
		var page localstore.EventPage
		if page, err = s.events(r, f); err == nil {
			page.Rebase(s.ObjectURLBase)
			rows := make([]eventRow, 0, len(page.Events))
			for _, e := range page.Events {
				rows = append(rows, rowOf(e))
			}
			v.Data = rows
			if page.Next != "" && !f.Tail {
				q := r.URL.Query()
				q.Set("before", page.Next)
				v.Next = "/events?" + q.Encode()
			}
		}
	}
	if f.Before != "" || f.Tail {
		v.Refresh = 0 // reading back: do not jump to the newest
	}
	if !s.userError(w, r, err, &v) {
		return
	}
	s.render(w, r, "events.html", v)
}
