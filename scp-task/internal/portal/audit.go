package portal

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// auditQuery reads the audit filters shared by the records page and the
// API: patientId, studyUid, callingAe, outcome, day, from, to (RFC 3339 or
// yyyy-mm-dd; bounds outside the years 1678–2262 select from the
// beginning or to the end), limit, cursor.
func auditQuery(v url.Values) (pipeline.AuditQuery, error) {
	q := pipeline.AuditQuery{
		PatientID:        strings.TrimSpace(v.Get("patientId")),
		StudyInstanceUID: strings.TrimSpace(v.Get("studyUid")),
		CallingAE:        strings.TrimSpace(v.Get("callingAe")),
		Outcome:          strings.TrimSpace(v.Get("outcome")),
		Day:              strings.TrimSpace(v.Get("day")),
		Limit:            atoi(v.Get("limit")),
		Cursor:           v.Get("cursor"),
	}
	if q.Day != "" {
		if _, err := time.Parse(time.DateOnly, q.Day); err != nil {
			return q, badRequest{errors.New("portal: day is a date, yyyy-mm-dd")}
		}
	}
	var err error
	if q.From, err = parseTime(v.Get("from"), false); err != nil {
		return q, badRequest{err}
	}
	if q.To, err = parseTime(v.Get("to"), true); err != nil {
		return q, badRequest{err}
	}
	return q, nil
}

func (s *Server) apiAudit(w http.ResponseWriter, r *http.Request) {
	q, err := auditQuery(r.URL.Query())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page, err := s.Audit.Query(r.Context(), q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, map[string]any{"records": page.Records, "next": page.Next})
}

func (s *Server) pageAudit(w http.ResponseWriter, r *http.Request) {
	q, err := auditQuery(r.URL.Query())
	s.auditRecords(w, r, view{Title: "Audit records", Nav: "audit"}, q, err, "/audit/records", "audit.html")
}

// auditRecords renders a page of the audit records q selects, linking the
// next page at path; err is q's own (a bad filter), shown on the page.
func (s *Server) auditRecords(w http.ResponseWriter, r *http.Request, v view, q pipeline.AuditQuery, err error, path, tmpl string) {
	v.Data = []pipeline.AuditRecord{}
	if err == nil {
		var page pipeline.AuditPage
		if page, err = s.Audit.Query(r.Context(), q); err == nil {
			v.Data = page.Records
			if page.Next != "" {
				v.Next = nextURL(r, path, page.Next)
			}
		}
	}
	if !s.userError(w, r, err, &v) {
		return
	}
	s.render(w, r, tmpl, v)
}

// userError puts a bad request's message on the page (true: render it);
// any other error fails the request (false).
func (s *Server) userError(w http.ResponseWriter, r *http.Request, err error, v *view) bool {
	if err == nil {
		return true
	}
	if msg, ok := requestFault(err); ok {
		v.Error = msg
		return true
	}
	s.fail(w, r, err)
	return false
}

// associationQuery reads the associations' filters: callingAe, outcome
// (association-released, -aborted, -rejected, or open), limit, cursor.
func associationQuery(v url.Values) localstore.AssociationQuery {
	return localstore.AssociationQuery{
		CallingAE: strings.TrimSpace(v.Get("callingAe")),
		Outcome:   strings.TrimSpace(v.Get("outcome")),
		Limit:     atoi(v.Get("limit")),
		Cursor:    v.Get("cursor"),
	}
}

func (s *Server) apiAssociations(w http.ResponseWriter, r *http.Request) {
	page, err := s.Associations.Associations(r.Context(), associationQuery(r.URL.Query()))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, page)
}

func (s *Server) pageAssociations(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Audit trail", Nav: "audit", Refresh: 10, Data: []localstore.Association{}}
	page, err := s.Associations.Associations(r.Context(), associationQuery(r.URL.Query()))
	if err == nil {
		v.Data = page.Associations
		if page.Next != "" {
			v.Next = nextURL(r, "/audit", page.Next)
		}
	}
	if r.URL.Query().Get("cursor") != "" {
		v.Refresh = 0
	}
	if !s.userError(w, r, err, &v) {
		return
	}
	s.render(w, r, "associations.html", v)
}

// associationPage is one association and a page of its records.
type associationPage struct {
	Association localstore.Association `json:"association"`
	Records     []pipeline.AuditRecord `json:"records"`
	Next        string                 `json:"next,omitempty"`
}

func (s *Server) association(r *http.Request) (associationPage, error) {
	id := r.PathValue("id")
	a, err := s.Associations.Association(r.Context(), id)
	if err != nil {
		return associationPage{}, err
	}
	recs, err := s.Associations.AssociationRecords(r.Context(), id, r.URL.Query().Get("cursor"), atoi(r.URL.Query().Get("limit")))
	if err != nil {
		return associationPage{}, err
	}
	return associationPage{Association: a, Records: recs.Records, Next: recs.Next}, nil
}

func (s *Server) apiAssociation(w http.ResponseWriter, r *http.Request) {
	p, err := s.association(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, p)
}

func (s *Server) pageAssociation(w http.ResponseWriter, r *http.Request) {
	p, err := s.association(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v := view{Title: "Association " + p.Association.ID, Nav: "audit", Data: p}
	if p.Next != "" {
		v.Next = nextURL(r, "/audit/associations/"+url.PathEscape(p.Association.ID), p.Next)
	}
	s.render(w, r, "association.html", v)
}

func (s *Server) apiQuarantine(w http.ResponseWriter, r *http.Request) {
	page, err := s.Audit.Query(r.Context(), pipeline.AuditQuery{Outcome: pipeline.OutcomeRejected, Limit: atoi(r.URL.Query().Get("limit")), Cursor: r.URL.Query().Get("cursor")})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, map[string]any{"records": page.Records, "next": page.Next})
}

func (s *Server) pageQuarantine(w http.ResponseWriter, r *http.Request) {
	q := pipeline.AuditQuery{Outcome: pipeline.OutcomeRejected, Cursor: r.URL.Query().Get("cursor")}
	s.auditRecords(w, r, view{Title: "Quarantine", Nav: "quarantine"}, q, nil, "/quarantine", "quarantine.html")
}
