package portal

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/thumbnail"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Study is a study summary with its status ("receiving", "stable" or
// "has rejects") and its count of rejects not stored since: instances
// quarantined and C-STOREs refused (localstore.StatusHasRejects).
type Study = localstore.StudyRow

// StudyPage is a study's detail with its status and its rejects: every
// object quarantined and C-STORE refused, each marked cleared (the study
// holds an instance of its SOP Instance UID) or not, and Rejects, the
// count of those not cleared (localstore's clearedSQL, the one
// definition of both).
type StudyPage struct {
	pipeline.StudyDetail
	Status  string `json:"status"`
	Rejects int    `json:"rejects"`
	// PatientMismatch: the study's instances disagree on the patient (the
	// study's findings say on what; the instances' findings say which).
	PatientMismatch bool                `json:"patientMismatch"`
	Quarantined     []localstore.Reject `json:"quarantined"`
	// Refused are the C-STOREs of the study's instances the SCP refused
	// or failed after reading their header (nothing of them is stored:
	// the sender was told, unless the reason says the response could not
	// be sent, and a Storage Commitment fails them 0110).
	Refused []localstore.Reject `json:"refused"`
	// CutShort are the C-STOREs of the study's instances the
	// association's end cut short after their header was read: nothing of
	// them is stored, and nobody refused them (the sender was answered
	// nothing); CutShortMissing counts those not stored since, as the
	// studies list does.
	CutShort        []localstore.Reject `json:"cutShort"`
	CutShortMissing int                 `json:"cutShortMissing"`
	// Commitments are the Storage Commitment transactions that named
	// instances of the study, newest first.
	Commitments []Commitment `json:"commitments"`
}

// Commitment is a Storage Commitment transaction as the study page shows it.
type Commitment struct {
	TransactionUID string    `json:"transactionUid"`
	CallingAE      string    `json:"callingAe"`
	ReceivedAt     time.Time `json:"receivedAt"`
	// State is waiting (instances evaluated and waited for), reporting
	// (result decided, delivery under way or being retried), reported or
	// undeliverable.
	State     string    `json:"state"`
	Instances int       `json:"instances"`
	Committed int       `json:"committed"`
	Failed    int       `json:"failed"`
	WaitUntil time.Time `json:"waitUntil"`
	// ReportedAt is when the result was delivered (Association: on the same or a new association), also while
	// its audit record or event is still owed (State still reporting).
	ReportedAt  time.Time `json:"reportedAt,omitzero"`
	Association string    `json:"association,omitempty"` // same or new, once delivered
	// GivenUpAt is when delivery was given up (the report deadline passed), also while its audit record or event
	// is still owed; ReportDeadline is until when a delivery is retried, once the result is decided.
	GivenUpAt      time.Time `json:"givenUpAt,omitzero"`
	ReportDeadline time.Time `json:"reportDeadline,omitzero"`
	Attempts       int       `json:"attempts"`
	// LastError is the last failed delivery's error as the undeliverable record says it (LastErrorSaid): never the
	// PACS's own text, an earlier version's kept included.
	LastError      string `json:"lastError,omitempty"`
	DuplicateOfUID bool   `json:"duplicateTransactionUid,omitempty"`
	// ResultURL is the result document's (each instance committed or
	// failed with its reason), once decided.
	ResultURL string `json:"resultUrl,omitempty"`
	// Outcome is the result's, once decided: success (every instance
	// committed) or failure (some failed).
	Outcome string `json:"outcome,omitempty"`
	// Studies are the studies of its committed instances, the first
	// pipeline.MaxListedStudies in UID order; none when it named no
	// instance the archive holds. StudyCount counts them all (the result
	// lists them all).
	Studies    []string `json:"studies"`
	StudyCount int      `json:"studyCount"`
}

// MoreStudies is how many studies of its committed instances Studies leaves out.
func (c Commitment) MoreStudies() int { return c.StudyCount - len(c.Studies) }

// GivenUp reports whether delivery was given up: GivenUpAt is set, or the transaction is undeliverable, which one
// written before GivenUpAt existed is without it (given up, when unknown): such a row read "retried until" its
// deadline, long past, as if still tried.
func (c Commitment) GivenUp() bool {
	return !c.GivenUpAt.IsZero() || c.State == string(pipeline.CommitmentUndeliverable)
}

func commitmentView(tx pipeline.CommitmentTransaction) Commitment {
	c := Commitment{TransactionUID: tx.TransactionUID, CallingAE: tx.CallingAE, ReceivedAt: tx.ReceivedAt, State: string(tx.State),
		Instances: tx.RefCount, Committed: tx.Committed, Failed: tx.Failed, WaitUntil: tx.WaitUntil, ReportedAt: tx.ReportedAt,
		GivenUpAt: tx.GivenUpAt, ReportDeadline: tx.ReportDeadline,
		Attempts: tx.Attempts, LastError: tx.LastErrorSaid(), DuplicateOfUID: tx.DuplicateOf != "", Outcome: localstore.CommitmentOutcome(tx)}
	if tx.State == pipeline.CommitmentPending {
		c.State = "waiting"
	}
	if tx.ResultKey != "" {
		c.ResultURL = localstore.ObjectsPath + tx.ResultKey
	}
	if c.Studies, c.StudyCount = tx.Studies, tx.ListedStudyCount(); c.Studies == nil {
		c.Studies = []string{}
	}
	if !tx.ReportedAt.IsZero() {
		c.Association = "new"
		if tx.SameAssociation {
			c.Association = "same"
		}
	}
	return c
}

// studySearch reads the studies' filters, shared by the page and the API:
// patient (name or ID; patientId is the same), accession, from and to
// (study date, yyyy-mm-dd or yyyymmdd), modality, callingAe, status (one
// of localstore.Statuses), limit, cursor.
func studySearch(v url.Values) (localstore.StudySearch, error) {
	p := newParams(v)
	q := localstore.StudySearch{
		Patient:   cmp.Or(p.text("patient"), p.text("patientId")),
		Accession: p.text("accession"),
		DateFrom:  p.studyDate("from"),
		DateTo:    p.studyDate("to"),
		Modality:  p.text("modality"),
		CallingAE: p.text("callingAe"),
		Status:    p.oneOf("status", localstore.Statuses),
		Limit:     p.limit(),
		Cursor:    p.raw("cursor"),
	}
	return q, p.err()
}

func (s *Server) studies(r *http.Request) (localstore.StudyPage, error) {
	q, err := studySearch(r.URL.Query())
	if err != nil {
		return localstore.StudyPage{}, err
	}
	return s.Search.SearchStudies(r.Context(), q)
}

func (s *Server) study(r *http.Request) (StudyPage, error) {
	uid := r.PathValue("uid")
	d, err := s.Studies.GetStudy(r.Context(), uid)
	if err != nil {
		return StudyPage{}, err
	}
	p := StudyPage{StudyDetail: d, PatientMismatch: d.PatientMismatch(), Commitments: []Commitment{}}
	if rows, err := s.Search.SearchStudies(r.Context(), localstore.StudySearch{StudyUID: uid}); err != nil {
		return StudyPage{}, err
	} else if len(rows.Studies) == 1 {
		p.Status, p.Rejects, p.CutShortMissing = rows.Studies[0].Status, rows.Studies[0].Rejects, rows.Studies[0].CutShortMissing
	}
	// Every reject, and every C-STORE cut short, cleared or not (the
	// store marks which): the study's history.
	for kind, list := range map[string]*[]localstore.Reject{localstore.RejectQuarantined: &p.Quarantined,
		localstore.RejectRefused: &p.Refused, localstore.RejectCutShort: &p.CutShort} {
		if *list, err = s.Search.StudyRejects(r.Context(), uid, kind, 1000); err != nil {
			return StudyPage{}, err
		}
	}
	if s.Commitments != nil {
		txs, err := s.Commitments.StudyCommitments(r.Context(), uid)
		if err != nil {
			return StudyPage{}, err
		}
		for _, tx := range txs {
			p.Commitments = append(p.Commitments, commitmentView(tx))
		}
	}
	return p, nil
}

func (s *Server) apiStudies(w http.ResponseWriter, r *http.Request) {
	page, err := s.studies(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, page)
}

func (s *Server) apiStudy(w http.ResponseWriter, r *http.Request) {
	p, err := s.study(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeJSON(w, p)
}

func (s *Server) pageStudies(w http.ResponseWriter, r *http.Request) {
	v := view{Title: "Studies", Nav: "studies", Refresh: 10, Data: []Study{}}
	page, err := s.studies(r)
	if err == nil {
		v.Data = page.Studies
		if page.Next != "" {
			v.Next = nextURL(r, "/", page.Next)
		}
	}
	if r.URL.Query().Get("cursor") != "" {
		v.Refresh = 0 // reading older pages: do not jump back
	}
	if !s.userError(w, r, err, &v) {
		return
	}
	s.render(w, r, "studies.html", v)
}

// seriesView is a series row of the study page.
type seriesView struct {
	pipeline.SeriesSummary
	Preview     string // the thumbnail's URL; "" when there is none
	NoPreviewIs string // why there is none, for the page
}

// studyView is what study.html shows.
type studyView struct {
	StudyPage
	SeriesViews []seriesView
	// Shown are the instances listed on the page, the first
	// maxInstancesShown; Hidden counts the rest, which the JSON API lists.
	Shown  []pipeline.InstanceRecord
	Hidden int
}

// maxInstancesShown bounds the study page's instance table: a study of
// 2,000 instances made a page of 1.1 MB.
const maxInstancesShown = 1000

func (s *Server) pageStudy(w http.ResponseWriter, r *http.Request) {
	p, err := s.study(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sv := studyView{StudyPage: p, Shown: p.Instances}
	if len(sv.Shown) > maxInstancesShown {
		sv.Shown, sv.Hidden = sv.Shown[:maxInstancesShown], len(sv.Shown)-maxInstancesShown
	}
	for _, se := range p.Series {
		row := seriesView{SeriesSummary: se}
		mid, ok := middleInstance(p.Instances, se.SeriesInstanceUID)
		if ok {
			s.previews.put(p.StudyInstanceUID, se.SeriesInstanceUID, p.Revision, mid)
		}
		switch why := noPreview(mid); {
		case s.Thumbnails == nil || !ok:
			row.NoPreviewIs = "no preview"
		case why != "":
			row.NoPreviewIs = why
		default:
			row.Preview = "/studies/" + url.PathEscape(p.StudyInstanceUID) + "/series/" + url.PathEscape(se.SeriesInstanceUID) + "/thumbnail.png"
		}
		sv.SeriesViews = append(sv.SeriesViews, row)
	}
	s.render(w, r, "study.html", view{Title: "Study " + p.StudyInstanceUID, Nav: "studies", Data: sv})
}

// noPreview says why an instance gets no preview, "" when it may get
// one: a SOP class that holds no image (a structured report, a PDF: its
// preview could only be a 404, a broken image on the page), or a transfer
// syntax the renderer does not decode.
func noPreview(in pipeline.InstanceRecord) string {
	if n := dicomuid.Name(in.SOPClassUID); dicomuid.IsStorageSOPClass(in.SOPClassUID) && n != "" && !strings.Contains(n, "Image") {
		return "no preview (" + n + ")"
	}
	if !thumbnail.Renderable(in.TransferSyntaxUID) {
		return "no preview (" + tsName(in.TransferSyntaxUID) + ")"
	}
	return ""
}

// middleInstance picks the series' middle instance by Instance Number
// (then by arrival): the slice an operator would look at first.
func middleInstance(all []pipeline.InstanceRecord, series string) (pipeline.InstanceRecord, bool) {
	var in []pipeline.InstanceRecord
	for _, i := range all {
		if i.SeriesInstanceUID == series && !i.Conflict {
			in = append(in, i)
		}
	}
	if len(in) == 0 {
		return pipeline.InstanceRecord{}, false
	}
	// A study's instances come in Instance Number order
	// (pipeline.NewStudyDetail).
	return in[len(in)/2], true
}

// thumbnail serves a series' preview PNG: 404 when the series has none to
// show, with the "no preview" image (noPreviewPNG) and X-Preview: none
// when the renderer says so; a text 404 for a series that is not there. Like every page it is not stored by
// the browser (it is patient data); the renderer caches it.
func (s *Server) thumbnail(w http.ResponseWriter, r *http.Request) {
	if s.Thumbnails == nil {
		http.NotFound(w, r)
		return
	}
	mid, ok, err := s.previewOf(r.Context(), r.PathValue("uid"), r.PathValue("series"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	png, err := s.Thumbnails.PNG(r.Context(), mid.ObjectKey, mid.Size, mid.TransferSyntaxUID)
	// The request names the study and series; the instance's key, which
	// names its SOP Instance UID too, is in a failed read's path.
	err = s.Names.Redact(err, mid.ObjectKey)
	if errors.Is(err, thumbnail.ErrNoPreview) {
		// Still a 404, but an image of "no preview" the page's <img>
		// shows (its link could not know), marked for a client.
		s.logger().Debug("portal: no preview", "err", err)
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("X-Preview", "none")
		w.WriteHeader(http.StatusNotFound)
		if _, err := w.Write(noPreviewPNG()); err != nil {
			s.logger().Debug("portal: write thumbnail", "err", err)
		}
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	if _, err := w.Write(png); err != nil {
		s.logger().Debug("portal: write thumbnail", "err", err)
	}
}

// previewOf is the instance a series' preview shows: the one the study
// page picked, while the study's revision is the one it was picked at
// (a summary read), else picked again from the whole study. Each preview
// read the whole study: for a study of 100 series and 2,000 instances the
// page's previews took 4 s of index reads.
func (s *Server) previewOf(ctx context.Context, study, series string) (pipeline.InstanceRecord, bool, error) {
	if in, rev, ok := s.previews.get(study, series); ok {
		page, err := s.Search.SearchStudies(ctx, localstore.StudySearch{StudyUID: study, Limit: 1})
		if err != nil {
			return pipeline.InstanceRecord{}, false, err
		}
		if len(page.Studies) == 1 && page.Studies[0].Revision == rev {
			return in, true, nil
		}
	}
	d, err := s.Studies.GetStudy(ctx, study)
	if err != nil {
		return pipeline.InstanceRecord{}, false, err
	}
	in, ok := middleInstance(d.Instances, series)
	if ok {
		s.previews.put(study, series, d.Revision, in)
	}
	return in, ok, nil
}

// previewCache remembers the instance each series' preview shows, with the
// study revision it was picked at.
type previewCache struct {
	mu sync.Mutex
	m  map[[2]string]previewEntry
}

type previewEntry struct {
	revision int64
	in       pipeline.InstanceRecord
}

// maxPreviewEntries bounds the cache; past it, it starts over.
const maxPreviewEntries = 4096

func (c *previewCache) get(study, series string) (pipeline.InstanceRecord, int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[[2]string{study, series}]
	return e.in, e.revision, ok
}

func (c *previewCache) put(study, series string, revision int64, in pipeline.InstanceRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxPreviewEntries {
		c.m = map[[2]string]previewEntry{}
	}
	c.m[[2]string{study, series}] = previewEntry{revision, in}
}

// nextURL is the current page's URL with cursor set to next.
func nextURL(r *http.Request, path, next string) string {
	q := r.URL.Query()
	q.Set("cursor", next)
	return path + "?" + q.Encode()
}
