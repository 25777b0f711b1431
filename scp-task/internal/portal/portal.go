// Package portal serves the local mode's web portal and its JSON API: the
// studies, the audit trail, quarantine, events, Storage Commitment
// transactions and live ingest counters. It
// is server-rendered with html/template (everything escaped), embeds its
// templates and stylesheet, and loads nothing from elsewhere, so it works
// offline.
package portal

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/scp-task/internal/thumbnail"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/durations"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

//go:embed templates/*.html static/*
var assets embed.FS

// StudyReader reads one study with its series and instances.
type StudyReader interface {
	GetStudy(ctx context.Context, studyUID string) (pipeline.StudyDetail, error)
}

// StudySearcher lists studies page by page with the filters a PACS
// administrator uses, each with its status, and a study's rejects of one
// kind (localstore.RejectKinds: its C-STOREs cut short too), each marked
// cleared or not by the definition the status reads.
type StudySearcher interface {
	SearchStudies(ctx context.Context, q localstore.StudySearch) (localstore.StudyPage, error)
	StudyRejects(ctx context.Context, studyUID, kind string, limit int) ([]localstore.Reject, error)
}

// AuditReader queries the audit trail.
type AuditReader interface {
	Query(ctx context.Context, q pipeline.AuditQuery) (pipeline.AuditPage, error)
}

// AssociationReader reads the audit trail one association at a time.
type AssociationReader interface {
	Associations(ctx context.Context, q localstore.AssociationQuery) (localstore.AssociationPage, error)
	Association(ctx context.Context, id string) (localstore.Association, error)
	AssociationRecords(ctx context.Context, id, cursor string, limit int) (pipeline.AuditPage, error)
}

// EventReader lists published events, newest first.
type EventReader interface {
	Events(ctx context.Context, f localstore.EventFilter) (localstore.EventPage, error)
}

// CommitmentReader lists Storage Commitment transactions: those that named
// instances of a study, and all of them a page at a time.
type CommitmentReader interface {
	StudyCommitments(ctx context.Context, studyUID string) ([]pipeline.CommitmentTransaction, error)
	Commitments(ctx context.Context, q localstore.CommitmentQuery) (localstore.CommitmentPage, error)
}

// ObjectOpener opens a stored object (raw Part 10 file, metadata sidecar),
// whole or, for a DICOM JSON's bulk data URI, the range it names of the
// bytes Head describes (bulkRange).
type ObjectOpener interface {
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	pipeline.ObjectReader
}

// Counters is a snapshot of live ingest counters.
type Counters struct {
	Since              time.Time `json:"since"`
	Associations       int64     `json:"associations"`       // accepted since start
	ActiveAssociations int64     `json:"activeAssociations"` // open now
	Rejected           int64     `json:"rejectedAssociations"`
	Aborted            int64     `json:"abortedAssociations"`
	Instances          int64     `json:"instances"` // stored since start
	Bytes              int64     `json:"bytes"`
	InstancesPerSecond float64   `json:"instancesPerSecond"` // over the last 10 s
	Failures           int64     `json:"failures"`           // C-STORE failures
	Echoes             int64     `json:"echoes"`
	PendingPipeline    int64     `json:"pendingPipeline"` // stored, not yet processed
	FailedPipeline     int64     `json:"failedPipeline"`  // parked after repeated failures
	// SyncFailed is the failed sync that ended durable storage until a
	// restart (Server.SyncFailed), absent while none failed: what the
	// pages' banner says, for the API's clients.
	SyncFailed string `json:"syncFailed,omitempty"`
}

// Server is the portal. Studies, Search, Audit, Associations and Events
// are required.
type Server struct {
	Studies      StudyReader
	Search       StudySearcher
	Audit        AuditReader
	Associations AssociationReader
	Events       EventReader
	Objects      ObjectOpener // nil: object links answer 404
	// ObjectURLBase is the portal's /objects/ URL as clients reach it now
	// (http://127.0.0.1:8080/objects/): the events it serves point there,
	// whatever address the portal had when they were recorded
	// (localstore.EventPage.Rebase). "": as recorded.
	ObjectURLBase string
	Thumbnails    *thumbnail.Renderer // nil: series show no preview
	// Commitments shows the Storage Commitment transactions, on their page
	// and each study's; nil shows none.
	Commitments CommitmentReader
	// Counters returns live counters; nil shows none.
	Counters func(ctx context.Context) Counters
	// Health reports whether the backing stores work (for /healthz).
	Health func(ctx context.Context) error
	// SyncFailed returns the failed sync that ended durable storage until
	// a restart (localstore.ErrSyncFailed, filestore.ErrSyncFailed), nil
	// while none failed: every page then says so, and what to do. nil
	// shows nothing.
	SyncFailed func(ctx context.Context) error
	// AllowedHosts lists Host header names accepted besides IP literals and
	// localhost; it guards a loopback portal against DNS rebinding.
	AllowedHosts []string
	Logger       *slog.Logger
	// Names names objects in logs: request paths and queries hold UIDs,
	// which the portal shows but its log lines must not (see logname).
	Names *logname.Namer
	// WriteStall is how long an answer may wait for the client to take
	// more of it before its connection is closed; default
	// DefaultWriteStall. A download goes on as long as the client reads.
	WriteStall time.Duration

	previews previewCache
}

var funcs = template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"join": func(s []string) string { return strings.Join(s, ", ") },
	// modalities is a study's modalities with the count when its record
	// cut them: modalityList.
	"modalities": func(s pipeline.StudySummary) string { return modalityList(s.Modalities, 0, s.ModalitiesTruncated) },
	"studyModalities": func(d pipeline.StudyDetail) string {
		return modalityList(d.Modalities, d.ModalityCount(), d.ModalitiesTruncated)
	},
	// quarantined is where the pipeline keeps a rejected object's copy
	// and its findings document, as its record names them
	// (AuditRecord.Quarantined); nil for a record that names none.
	"quarantined": func(r pipeline.AuditRecord) []string {
		object, findings := r.Quarantined()
		if object == "" {
			return nil
		}
		return []string{object, findings}
	},
	"pname":  func(s string) string { return strings.Join(strings.Fields(strings.ReplaceAll(s, "^", " ")), " ") },
	"path":   url.PathEscape,
	"tsname": tsName,
	"dur": func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return durations.Format(d.Round(time.Millisecond))
	},
	"assocOutcomes": func() []string { return localstore.AssociationOutcomes },
	"statuses":      func() []string { return localstore.Statuses },
	"bytes":         humanBytes,
	"f1":            func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	// outcomes are those the audit trail writes.
	"outcomes":           func() []string { return pipeline.AuditOutcomes },
	"eventTypes":         func() []string { return eventTypes },
	"eventTypeFilters":   func() []string { return eventTypeFilters },
	"commitmentOutcomes": func() []string { return commitmentOutcomes },
	"commitmentRefused":  func() string { return associationaudit.EventCommitmentRefused },
}

// eventTypes are the detail-types the pipeline publishes, as the Events
// page offers them and its filter accepts them.
var eventTypes = pipeline.DetailTypes

// eventTypeFilters are the Events page's choices of type: each type, and
// the study events together (the types of pipeline.md's example rule).
// The filter takes any comma-separated list of eventTypes; the page shows
// one it does not offer as a choice of its own, so that it keeps it.
var eventTypeFilters = append(slices.Clone(eventTypes), pipeline.DetailTypeStudyReceived+","+pipeline.DetailTypeStudyUpdated)

var pages = template.Must(template.New("").Funcs(funcs).ParseFS(assets, "templates/*.html"))

// route is one of the portal's routes: a pattern of http.ServeMux and
// what serves it.
type route struct {
	pattern string
	handler http.HandlerFunc
}

// routes are every route of the portal. Those that read query parameters
// read them through params.
func (s *Server) routes() []route {
	return []route{
		{"GET /healthz", s.healthz},
		{"GET /api/studies", s.apiStudies},
		{"GET /api/studies/{uid}", s.apiStudy},
		{"GET /api/audit", s.apiAudit},
		{"GET /api/audit/associations", s.apiAssociations},
		{"GET /api/audit/associations/{id}", s.apiAssociation},
		{"GET /api/quarantine", s.apiQuarantine},
		{"GET /api/events", s.apiEvents},
		{"GET /api/commitments", s.apiCommitments},
		{"GET /api/counters", s.apiCounters},
		{"GET " + localstore.ObjectsPath + "{key...}", s.object},
		{"GET /static/portal.css", s.static},
		{"GET /{$}", s.pageStudies},
		{"GET /studies/{uid}", s.pageStudy},
		{"GET /studies/{uid}/series/{series}/thumbnail.png", s.thumbnail},
		{"GET /audit", s.pageAssociations},
		{"GET /audit/associations/{id}", s.pageAssociation},
		{"GET /audit/records", s.pageAudit},
		{"GET /quarantine", s.pageQuarantine},
		{"GET /events", s.pageEvents},
		{"GET /commitments", s.pageCommitments},
	}
}

// Handler returns the portal's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		mux.HandleFunc(rt.pattern, rt.handler)
	}
	return s.guard(mux)
}

// DefaultWriteStall is Server.WriteStall's default.
const DefaultWriteStall = 30 * time.Second

// guard adds the headers every answer carries, refuses Host names a
// DNS-rebinding page could use to reach a loopback portal, and keeps a
// connection only while its client takes part: the portal holds few
// (descriptors.PortalConnections).
func (s *Server) guard(next http.Handler) http.Handler {
	stall := s.WriteStall
	if stall <= 0 {
		stall = DefaultWriteStall
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// First, so that the refusals below carry them too.
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store") // pages carry patient data
		if r.ContentLength != 0 {
			// No route takes a body (-1 is a chunked one). net/http waits
			// for a body declared and not yet read before it answers, with
			// no deadline: one never sent held the connection for ever.
			// Closing after the answer spares that wait, but not the one
			// after it: net/http still reads the body (up to 256 KiB)
			// before it closes, and a read deadline already past ends that
			// read at once.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now()) // a test's recorder has no deadline to set
			w.Header().Set("Connection", "close")
			http.Error(w, "portal: requests carry no body", http.StatusBadRequest)
			return
		}
		sw := stallWriter{ResponseWriter: w, rc: http.NewResponseController(w), stall: stall}
		_ = sw.rc.SetWriteDeadline(time.Now().Add(stall)) // a test's recorder has no deadline to set
		w = sw
		if !s.hostAllowed(r.Host) {
			http.Error(w, "portal: host name not allowed (a guard against DNS rebinding): open the portal by its IP address or localhost", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// stallWriter moves the connection's write deadline on before each write:
// an answer of any length goes on while the client takes it, and one the
// client stops taking ends with its connection after stall (a download
// nobody read held its connection for ever).
type stallWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func (w stallWriter) Write(b []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "" || net.ParseIP(host) != nil || strings.EqualFold(host, "localhost") {
		return true
	}
	for _, a := range s.AllowedHosts {
		if strings.EqualFold(a, host) {
			return true
		}
	}
	return false
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if s.Health != nil {
		if err := s.Health(r.Context()); err != nil {
			s.logger().Warn("portal: health check failed", "err", err)
			http.Error(w, "unhealthy", http.StatusServiceUnavailable)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

func (s *Server) counters(ctx context.Context) *Counters {
	if s.Counters == nil {
		return nil
	}
	c := s.Counters(ctx)
	return &c
}

// --- JSON API ---

func (s *Server) writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		s.logger().Debug("portal: write json", "err", err)
	}
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := http.StatusInternalServerError, "internal error"
	fault, isFault := requestFault(err)
	var stale staleBytes
	switch {
	case errors.Is(err, pipeline.ErrNotFound):
		code, msg = http.StatusNotFound, "not found"
	case errors.As(err, &stale):
		code, msg = http.StatusPreconditionFailed, stale.Error()
	case isFault:
		code, msg = http.StatusBadRequest, fault
	case r.Context().Err() != nil:
		// The client went away (a browser navigating on): nobody reads
		// the answer, and nothing failed on our side.
		s.logger().Debug("portal: request ended by the client", "route", r.Pattern, "err", s.Names.Redact(err, r.URL.RequestURI(), r.URL.Path))
	default:
		// The URL as sent and its path decoded: a lower layer's error
		// quotes the decoded key (a file path), which the URL as sent
		// need not spell alike (1%2E2 for 1.2).
		s.logger().Error("portal: request failed", "route", r.Pattern, "err", s.Names.Redact(err, r.URL.RequestURI(), r.URL.Path))
	}
	if strings.HasPrefix(r.URL.Path, "/api/") {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
		return
	}
	http.Error(w, msg, code)
}

type badRequest struct{ error }

// requestFault returns what to tell of an error that is the request's
// fault (a bad filter or cursor): a page shows it, the API answers 400.
func requestFault(err error) (string, bool) {
	var bad badRequest
	var search *localstore.SearchError
	switch {
	case errors.As(err, &bad):
		return bad.Error(), true
	case errors.As(err, &search):
		return "portal: " + search.Reason, true
	case errors.Is(err, pipeline.ErrBadCursor):
		return cursorFault("cursor"), true
	}
	return "", false
}

func (s *Server) apiCounters(w http.ResponseWriter, r *http.Request) {
	c := s.counters(r.Context())
	if c != nil {
		c.SyncFailed = s.syncFailed(r.Context())
	}
	s.writeJSON(w, c)
}

// syncFailed is the failed sync that ended durable storage
// (Server.SyncFailed), "" while none failed: the pages' banner and
// /api/counters' syncFailed.
func (s *Server) syncFailed(ctx context.Context) string {
	if s.SyncFailed == nil {
		return ""
	}
	if err := s.SyncFailed(ctx); err != nil {
		return err.Error()
	}
	return ""
}

// object streams a stored object: a Part 10 file as application/dicom, a
// JSON sidecar as application/dicom+json. Keys are checked before use. A
// DICOM JSON's bulk data URI (pipeline.bulkURIs) names a value's bytes with
// offset and length, and the bytes of the whole object with bytes
// (pipeline.BulkDataBytesParam): those are served as bulkRange says. An
// HTTP Range header is not read: the answer is the object, or the range
// the query names, whole (200).
func (s *Server) object(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if s.Objects == nil || !safeKey(key) {
		http.NotFound(w, r)
		return
	}
	p := newParams(r.URL.Query())
	want := p.bulkRange()
	if err := p.err(); err != nil {
		s.fail(w, r, err)
		return
	}
	if want.given() {
		s.bulkObject(w, r, key, want)
		return
	}
	rc, err := s.Objects.Open(r.Context(), key)
	if err != nil {
		s.objectFailed(w, r, err)
		return
	}
	defer rc.Close()
	_, section, _, _ := pipeline.SplitKey(key)
	switch {
	case strings.HasSuffix(key, ".json") && section == pipeline.MetadataPrefix && !strings.HasSuffix(key, ".summary.json"):
		w.Header().Set("Content-Type", "application/dicom+json")
	case strings.HasSuffix(key, ".json"):
		// A summary, findings or a Storage Commitment result: our own JSON.
		w.Header().Set("Content-Type", "application/json")
	default:
		setPart10Headers(w, key)
	}
	s.streamObject(w, r, key, rc)
}

// setPart10Headers names a Part 10 file's answer: application/dicom, an
// attachment named as its key's last component.
func setPart10Headers(w http.ResponseWriter, key string) {
	w.Header().Set("Content-Type", "application/dicom")
	name := key[strings.LastIndex(key, "/")+1:]
	w.Header().Set("Content-Disposition", mimeAttachment(name))
}

// objectFailed answers a failed Head or open of a stored object: 404 for
// one not stored.
func (s *Server) objectFailed(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, pipeline.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		http.NotFound(w, r)
		return
	}
	s.fail(w, r, err)
}

// streamObject copies rc to the answer, as the client takes it.
func (s *Server) streamObject(w http.ResponseWriter, r *http.Request, key string, rc io.Reader) {
	if r.Method == http.MethodHead {
		// net/http drops a HEAD's body: reading the object (up to the
		// largest stored) for it would be work for nothing.
		return
	}
	if _, err := io.Copy(w, rc); err != nil {
		s.logger().Debug("portal: stream object", "object", s.Names.Key(key), "err", s.Names.Redact(err, key))
	}
}

// bulkObject serves what a DICOM JSON's bulk data URI names of the Part 10
// object at key: the object's Head first, then, if bytes names other bytes
// than it holds, a 412 naming bytes (the URI describes another content:
// one of another data directory, or a key written again, which local mode
// never does); a range past the object's end is a 400 naming offset or
// length; else the range, streamed, 200 with application/octet-stream and
// its Content-Length (the bytes of one value, not a file), or, with bytes
// alone (a Deflated data set's URI), the whole object as without a query.
// Offset alone names an encapsulated value: its item headers are read
// first to learn its length (encapsulatedLength), then it is served as a
// range.
// Only Part 10 objects have bulk data: a JSON document's key with any of
// the three is a 400.
func (s *Server) bulkObject(w http.ResponseWriter, r *http.Request, key string, want bulkRange) {
	if strings.HasSuffix(key, ".json") {
		s.fail(w, r, badRequest{errors.New("portal: " + bulkParams + " name the bytes of a stored DICOM object (a .dcm key), not of a JSON document")})
		return
	}
	info, err := s.Objects.Head(r.Context(), key)
	if err != nil {
		s.objectFailed(w, r, err)
		return
	}
	if err := want.check(info); err != nil {
		s.fail(w, r, err)
		return
	}
	if want.encapsulated() {
		if want.length, err = s.encapsulatedLength(r.Context(), key, info, want.offset); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	offset, length, size := want.offset, want.length, want.length
	if !want.ranged() {
		offset, length, size = 0, -1, info.Size // to its end
	}
	rc, err := s.Objects.OpenRange(r.Context(), key, offset, length)
	if err != nil {
		s.objectFailed(w, r, err)
		return
	}
	defer rc.Close()
	if want.ranged() {
		w.Header().Set("Content-Type", "application/octet-stream")
	} else {
		setPart10Headers(w, key)
	}
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	s.streamObject(w, r, key, rc)
}

// encapsulatedLength is the length of the encapsulated value at offset in
// the object at key (info its Head), read from its item headers
// (dataset.EncapsulatedLength) with small ranged reads, the fragments
// skipped unread: the pipeline, which reads the header alone, names such a
// value by its offset alone (pipeline.bulkURIs). Items that cannot be
// followed, or run past the object, are the request's fault, a 400 naming
// offset: no encapsulated value lies there (a URI of another object, or an
// object whose fragments are malformed); a failed read is returned as it
// is.
func (s *Server) encapsulatedLength(ctx context.Context, key string, info pipeline.ObjectInfo, offset int64) (int64, error) {
	open := dataset.RangeOpener(func(off, n int64) (io.ReadCloser, error) {
		return s.Objects.OpenRange(ctx, key, offset+off, n)
	})
	src := dataset.NewRangeSource(open, info.Size-offset, dataset.RangeOptions{First: 4 << 10, Max: 64 << 10, ResetOnSkip: true})
	n, err := dataset.EncapsulatedLength(src)
	switch {
	case errors.Is(err, dataset.ErrMalformed), errors.Is(err, dataset.ErrTruncated), errors.Is(err, dataset.ErrLimit):
		return 0, badRequest{fmt.Errorf("portal: %s alone names the encapsulated value that starts there, items (FFFE,E000) up to a Sequence Delimitation Item (FFFE,E0DD) within the object, and the object holds none there (offsets counted from offset): %w", offsetParam, err)}
	case err != nil:
		return 0, fmt.Errorf("portal: read the item headers of an encapsulated value: %w", err)
	}
	return n, nil
}

func mimeAttachment(name string) string {
	return `attachment; filename="` + strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r > 0x7e {
			return '_'
		}
		return r
	}, name) + `"`
}

// safeKey accepts relative keys of [A-Za-z0-9._-] components, none of them
// "." or "..", under the prefixes the pipeline writes and the Storage
// Commitment requests and results, which a Storage Commitment Completed
// event points at (requestUri, resultUri); never the audit/ records (they
// are served through the audit API).
func safeKey(key string) bool {
	if len(key) == 0 || len(key) > 1024 {
		return false
	}
	ok := false
	for _, p := range []string{pipeline.IncomingPrefix, pipeline.QuarantinePrefix, pipeline.MetadataPrefix,
		pipeline.CommitmentRequestsPrefix, pipeline.CommitmentResultsPrefix} {
		ok = ok || strings.HasPrefix(key, p)
	}
	if !ok {
		return false
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
		for _, c := range part {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func (s *Server) static(w http.ResponseWriter, r *http.Request) {
	b, err := assets.ReadFile("static/portal.css")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	_, _ = w.Write(b)
}

// --- HTML pages ---

type view struct {
	Title    string
	Nav      string
	Refresh  int
	Counters *Counters
	// SyncFailed is the failed sync that ended durable storage, "" if
	// none (Server.SyncFailed).
	SyncFailed string
	Data       any
	Query      url.Values
	Next       string
	Error      string
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, name string, v view) {
	v.Counters = s.counters(r.Context())
	v.SyncFailed = s.syncFailed(r.Context())
	v.Query = r.URL.Query()
	var page bytes.Buffer
	if err := pages.ExecuteTemplate(&page, name, v); err != nil {
		s.logger().Error("portal: render", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if v.Error != "" {
		// A bad parameter: the page says which, and answers 400 as the
		// API does.
		w.WriteHeader(http.StatusBadRequest)
	}
	if _, err := bidiControls.WriteString(w, page.String()); err != nil {
		s.logger().Debug("portal: write page", "page", name, "err", err)
	}
}

// bidiControls shows the Unicode direction controls (embeddings,
// overrides, isolates) that stored values carry as visible text: the
// templates hold none, so any on a page came from an object, and a
// right-to-left override in a Patient ID displayed CS7<U+202E>54321 as "CS712345",
// and in a name reversed the text after it.
var bidiControls = func() *strings.Replacer {
	var pairs []string
	for _, r := range []rune{0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069} {
		pairs = append(pairs, string(r), fmt.Sprintf("[U+%04X]", r))
	}
	return strings.NewReplacer(pairs...)
}()

// tsName names a transfer syntax ("JPEG Baseline (Process 1)"), or
// returns its UID when the registry does not know it.
func tsName(uid string) string {
	if n := dicomuid.Name(uid); n != "" {
		return n
	}
	return uid
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + " " + string("KMGTPE"[exp]) + "iB"
}
