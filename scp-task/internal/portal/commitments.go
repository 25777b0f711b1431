package portal

import (
	"net/http"
	"net/url"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
)

// commitmentOutcomes are the outcomes the Commitments page and API filter
// by.
var commitmentOutcomes = localstore.CommitmentOutcomes

// commitmentQuery reads the commitments' filters, shared by the page and
// the API: callingAe, outcome (success or failure), limit, cursor.
func commitmentQuery(v url.Values) (localstore.CommitmentQuery, error) {
	p := newParams(v)
	q := localstore.CommitmentQuery{
		CallingAE: p.text("callingAe"),
		Outcome:   p.oneOf("outcome", commitmentOutcomes),
		Limit:     p.limit(),
		Cursor:    p.raw("cursor"),
	}
	return q, p.err()
}

// commitmentsPage is a page of Storage Commitment transactions.
type commitmentsPage struct {
	Commitments []Commitment `json:"commitments"`
	Next        string       `json:"next,omitempty"`
}

func (s *Server) commitments(r *http.Request) (commitmentsPage, error) {
	p := commitmentsPage{Commitments: []Commitment{}}
	q, err := commitmentQuery(r.URL.Query())
	if err != nil || s.Commitments == nil {
		return p, err
	}
	page, err := s.Commitments.Commitments(r.Context(), q)
	if err != nil {
		return p, err
	}
	for _, tx := range page.Transactions {
		p.Commitments = append(p.Commitments, commitmentView(tx))
	}
	p.Next = page.Next
	return p, nil
}

func (s *Server) apiCommitments(w http.ResponseWriter, r *http.Request) {
	p, err := s.commitments(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, p)
}

func (s *Server) pageCommitments(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Storage Commitment", Nav: "commitments", Refresh: 10}
	p, err := s.commitments(r)
	v.Data = p.Commitments
	if p.Next != "" {
		v.Next = nextURL(r, "/commitments", p.Next)
	}
	if r.URL.Query().Get("cursor") != "" {
		v.Refresh = 0 // reading older pages: do not jump back
	}
	if !s.userError(w, r, err, &v) {
		return
	}
	s.render(w, r, "commitments.html", v)
}
