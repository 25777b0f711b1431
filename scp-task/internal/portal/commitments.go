package portal

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
)

// commitmentOutcomes are the outcomes the Commitments page and API filter
// by.
var commitmentOutcomes = []string{localstore.CommitmentSuccess, localstore.CommitmentFailure}

// commitmentQuery reads the commitments' filters, shared by the page and
// the API: callingAe, outcome (success or failure), limit, cursor.
func commitmentQuery(v url.Values) (localstore.CommitmentQuery, error) {
	q := localstore.CommitmentQuery{
		CallingAE: strings.TrimSpace(v.Get("callingAe")),
		Outcome:   strings.TrimSpace(v.Get("outcome")),
		Cursor:    v.Get("cursor"),
	}
	if q.Outcome != "" && q.Outcome != localstore.CommitmentSuccess && q.Outcome != localstore.CommitmentFailure {
		return q, badRequest{fmt.Errorf("portal: outcome is %s", strings.Join(commitmentOutcomes, " or "))}
	}
	var err error
	q.Limit, err = limitParam(v)
	return q, err
}

// limitParam reads limit: none is 0 (the page's default); a page's
// largest caps it where it is used.
func limitParam(v url.Values) (int, error) {
	s := strings.TrimSpace(v.Get("limit"))
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil && errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(s, "-") {
		return 0, nil // past any page's largest: the largest
	}
	if err != nil || n < 0 {
		return 0, badRequest{errors.New("portal: limit is a number of rows, 0 or more")}
	}
	return n, nil
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
