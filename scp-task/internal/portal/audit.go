package portal

import (
	"net/http"
	"net/url"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// auditQuery reads the audit filters shared by the records page and the
// API: patientId, studyUid, callingAe, outcome (one of
// pipeline.AuditOutcomes), day, from, to (RFC 3339 or yyyy-mm-dd; bounds
// outside the years 1678–2262 select from the beginning or to the end),
// limit, cursor.
func auditQuery(v url.Values) (pipeline.AuditQuery, error) {
	p := newParams(v)
	q := pipeline.AuditQuery{
		PatientID:        p.text("patientId"),
		StudyInstanceUID: p.text("studyUid"),
		CallingAE:        p.text("callingAe"),
		Outcome:          p.oneOf("outcome", pipeline.AuditOutcomes),
		Day:              p.day("day"),
		From:             p.time("from", false),
		To:               p.time("to", true),
		Limit:            p.limit(),
		Cursor:           p.raw("cursor"),
	}
	return q, p.err()
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
// (one of localstore.AssociationOutcomes: open, or how it ended), limit,
// cursor.
func associationQuery(v url.Values) (localstore.AssociationQuery, error) {
	p := newParams(v)
	q := localstore.AssociationQuery{
		CallingAE: p.text("callingAe"),
		Outcome:   p.oneOf("outcome", localstore.AssociationOutcomes),
		Limit:     p.limit(),
		Cursor:    p.raw("cursor"),
	}
	return q, p.err()
}

func (s *Server) associations(r *http.Request) (localstore.AssociationPage, error) {
	q, err := associationQuery(r.URL.Query())
	if err != nil {
		return localstore.AssociationPage{Associations: []localstore.Association{}}, err
	}
	return s.Associations.Associations(r.Context(), q)
}

func (s *Server) apiAssociations(w http.ResponseWriter, r *http.Request) {
	page, err := s.associations(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, page)
}

func (s *Server) pageAssociations(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Audit trail", Nav: "audit", Refresh: 10, Data: []localstore.Association{}}
	page, err := s.associations(r)
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

// association reads the association r names and a page of its records.
// A parameter the request got wrong (limit, a cursor the store refuses:
// requestFault) is returned with the association, records none, for its
// page to say it as every page does (userError); any other error alone.
func (s *Server) association(r *http.Request) (associationPage, error) {
	id := r.PathValue("id")
	p := newParams(r.URL.Query())
	cursor, limit := p.raw("cursor"), p.limit()
	a, err := s.Associations.Association(r.Context(), id)
	if err != nil {
		return associationPage{}, err
	}
	page := associationPage{Association: a, Records: []pipeline.AuditRecord{}}
	if err := p.err(); err != nil {
		return page, err
	}
	recs, err := s.Associations.AssociationRecords(r.Context(), id, cursor, limit)
	if err != nil {
		return page, err
	}
	page.Records, page.Next = recs.Records, recs.Next
	return page, nil
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
	v := view{Title: "Association " + p.Association.ID, Nav: "audit", Data: p}
	if !s.userError(w, r, err, &v) {
		return
	}
	if p.Next != "" {
		v.Next = nextURL(r, "/audit/associations/"+url.PathEscape(p.Association.ID), p.Next)
	}
	s.render(w, r, "association.html", v)
}

// quarantineQuery reads the quarantine's parameters: limit, cursor.
func quarantineQuery(v url.Values) (pipeline.AuditQuery, error) {
	p := newParams(v)
	q := pipeline.AuditQuery{Outcome: pipeline.OutcomeRejected, Limit: p.limit(), Cursor: p.raw("cursor")}
	return q, p.err()
}

func (s *Server) apiQuarantine(w http.ResponseWriter, r *http.Request) {
	q, err := quarantineQuery(r.URL.Query())
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

func (s *Server) pageQuarantine(w http.ResponseWriter, r *http.Request) {
	q, err := quarantineQuery(r.URL.Query())
	s.auditRecords(w, r, view{Title: "Quarantine", Nav: "quarantine"}, q, err, "/quarantine", "quarantine.html")
}
