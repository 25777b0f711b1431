package localstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/vfs"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/retry"
)

// ErrNotPending is returned when a hand-off key is completed twice.
var ErrNotPending = errors.New("localstore: key is not pending")

// Event is one announcement, shaped like an EventBridge event so a webhook
// receiver sees what an EventBridge rule target would see in the cloud.
type Event struct {
	ID         string    `json:"id"`
	Time       time.Time `json:"time"`
	Source     string    `json:"source"`
	DetailType string    `json:"detail-type"`
	// Resources are what the event is about (pipeline.Event's), never
	// nil: EventBridge's envelope has an empty list when there is none.
	Resources []string        `json:"resources"`
	Detail    json.RawMessage `json:"detail"`
}

// EnvelopeAccount and EnvelopeRegion are local mode's envelope's account
// and region: it has none, and a consumer written against EventBridge's
// envelope, which has both, parses its events alike (docs/pipeline.md#subscribing).
const (
	EnvelopeAccount = "000000000000"
	EnvelopeRegion  = "local"
)

// wireEvent is Event as written to the log and POSTed to webhooks: the
// fields of EventBridge's envelope in its order, account and region the
// placeholders EnvelopeAccount and EnvelopeRegion.
type wireEvent struct {
	Version    string          `json:"version"`
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Time       string          `json:"time"`
	Region     string          `json:"region"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
}

func (e Event) wire() ([]byte, error) { return json.Marshal(e.envelope()) }

func (e Event) envelope() wireEvent {
	return wireEvent{
		Version: "0", ID: e.ID, DetailType: e.DetailType, Source: e.Source, Account: EnvelopeAccount,
		Time: e.Time.UTC().Format(time.RFC3339Nano), Region: EnvelopeRegion, Resources: nonNil(e.Resources), Detail: e.Detail,
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// readResources reads an outbox row's resources column.
func readResources(col string) ([]string, error) {
	var r []string
	if err := json.Unmarshal([]byte(col), &r); err != nil {
		return nil, fmt.Errorf("localstore: event resources: %w", err)
	}
	return nonNil(r), nil
}

// NewEventID returns a random event id.
func NewEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// addEvent puts ev in the outbox inside tx; the Publisher delivers it after
// the transaction commits (transactional outbox), so an event is announced if
// and only if the work that caused it was committed.
func addEvent(ctx context.Context, tx *querier, ev Event, webhooks []string) error {
	if ev.ID == "" {
		ev.ID = NewEventID()
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if len(ev.Detail) == 0 {
		ev.Detail = json.RawMessage("{}")
	}
	left, err := json.Marshal(webhooks)
	if err != nil {
		return fmt.Errorf("localstore: add event: %w", err)
	}
	if webhooks == nil {
		left = []byte("[]")
	}
	res, err := json.Marshal(nonNil(ev.Resources))
	if err != nil {
		return fmt.Errorf("localstore: add event: %w", err)
	}
	var seq int64
	err = tx.QueryRowContext(ctx,
		`INSERT INTO outbox(id, time, source, detail_type, detail, webhooks_left, resources) VALUES (?, ?, ?, ?, ?, ?, ?)
		 ON CONFLICT(id) DO NOTHING RETURNING seq`,
		ev.ID, unixNano(ev.Time), ev.Source, ev.DetailType, string(ev.Detail), string(left), string(res)).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // in the outbox already, with its links
	}
	if err != nil {
		return fmt.Errorf("localstore: add event: %w", err)
	}
	for _, s := range pipeline.EventStudies(ev.Detail) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO outbox_studies(study_uid, seq) VALUES (?, ?) ON CONFLICT DO NOTHING`, s, seq); err != nil {
			return fmt.Errorf("localstore: add event: link its studies: %w", err)
		}
	}
	return nil
}

// EventFilter selects events for Events.
type EventFilter struct {
	// DetailTypes selects events of any of these detail-types; none
	// selects every type.
	DetailTypes []string
	// Study selects the events that name this Study Instance UID, wherever
	// the event names studies (pipeline.EventStudies): the instance and
	// study events of the study, and the Storage Commitment Completed
	// events that list it.
	Study    string
	Since    time.Time
	Until    time.Time
	Contains string // substring of the detail JSON
	// Before pages back: the Next of the previous page, newest first,
	// sealed to the filter (cursorScope): the events older than its
	// place, the last event's seq. Tail lists forward, oldest first: the
	// events newer than After, an event's seq, from the first event when
	// After is 0. Without either, the newest events come first; a filter
	// with both is refused (a SearchError naming before and after).
	//
	// After is no cursor but a position in the outbox's one order, which
	// every filter reads alike: the seq of an event (X-Event-Seq, a
	// tail's last event) from which a consumer goes on, with any filter.
	Before string
	After  int64
	Tail   bool
	Limit  int
	// Outbox, when given, is the outbox id (OutboxID) the consumer's seq
	// belongs to: another outbox's is refused (a SearchError naming
	// outbox), so that a seq of another data directory is never
	// taken for one of this.
	Outbox string
}

// OutboxHeader is the header of an events page and of a webhook's POST
// that names the outbox (OutboxID) its seqs belong to, beside
// X-Event-Seq.
const OutboxHeader = "X-Event-Outbox"

// OutboxID is the outbox's identity: a random id made once, when the
// database was created (or migrated to have one), and kept in it. An
// event's seq is a place in this outbox alone: a data directory started
// afresh numbers its events from 1 under another id, while a copy of one
// keeps its id and its seqs, the same history. A consumer that keeps
// (outbox, seq) and names the outbox when it goes on
// (EventFilter.Outbox) is refused rather than skip or repeat events.
func (db *DB) OutboxID() string { return db.outboxID }

// cursorScope is the scope of f's cursors (Before, a newest-first page's
// Next): its filters, the types in one order.
func (f EventFilter) cursorScope() *pipeline.CursorScope {
	types := slices.Compact(slices.Sorted(slices.Values(f.DetailTypes)))
	return pipeline.NewCursorScope("events").
		Text(f.Study, f.Contains).Times(f.Since, f.Until).
		Text(strconv.Itoa(len(types))).Text(types...)
}

// StoredEvent is an event with its outbox sequence number.
type StoredEvent struct {
	Seq int64 `json:"seq"`
	Event
}

// MarshalJSON writes the event's seq and then its envelope as the
// webhooks have it (version "0" included): /api/events serves the same
// envelope, in a page that names the outbox; a line of the log is the
// same with its outbox first (placedEvent).
func (e StoredEvent) MarshalJSON() ([]byte, error) {
	return json.Marshal(placedEvent{Seq: e.Seq, wireEvent: e.envelope()})
}

// placedEvent is an event's envelope after its place in the outbox: the
// outbox (OutboxID; in the log's lines, whose file names none, while an
// events page names it once) and the seq, the pair a consumer goes on
// from with after=<seq>&outbox=<outbox>, as the webhooks' X-Event-Seq and
// X-Event-Outbox give it.
type placedEvent struct {
	Outbox string `json:"outbox,omitempty"`
	Seq    int64  `json:"seq"`
	wireEvent
}

// EventPage is one page of events and the cursor of the next (older:
// Before's, sealed to the filter; with Tail newer: the last event's seq,
// After's); Next is empty at the end.
type EventPage struct {
	// Outbox is the outbox the events' seqs belong to (OutboxID).
	Outbox string        `json:"outbox"`
	Events []StoredEvent `json:"events"`
	Next   string        `json:"next,omitempty"`
}

// ParseEventSeq reads an event's seq (1 and up), a tail's After; with
// fromStart also 0, which is before the first event, so that a tail can
// begin at the beginning. The error wraps pipeline.ErrBadCursor.
func ParseEventSeq(c string, fromStart bool) (int64, error) {
	n, err := strconv.ParseInt(c, 10, 64)
	if err != nil || n < 0 || n == 0 && !fromStart {
		return 0, fmt.Errorf("localstore: event seq %q: %w", Clipped(c), pipeline.ErrBadCursor)
	}
	return n, nil
}

// Events lists events in the outbox, newest first (oldest first with
// After). Type and study go through indexes; a page of types or of a
// study costs its size, not the outbox's. The events it returns are
// durable, as those the log and the webhooks get are: a commit a power
// loss could still undo is redone after the restart, its events under
// seqs that may differ, so a consumer tailing with After that had been
// given one would skip the events given its seq then.
func (db *DB) Events(ctx context.Context, f EventFilter) (EventPage, error) {
	if f.Before != "" && f.Tail {
		return EventPage{}, &SearchError{Search: "events", Reason: "before and after are two directions: give one " +
			"(before pages back from a page's next, newest first; after tails on from an event's seq, oldest first)"}
	}
	if f.Outbox != "" && f.Outbox != db.outboxID {
		return EventPage{}, &SearchError{Search: "events", Reason: fmt.Sprintf("outbox %q is not this data directory's (%s): its seqs number other events; "+
			"tail this one from after=0 with outbox=%s, de-duplicating on the event id", Clipped(f.Outbox), db.outboxID, db.outboxID)}
	}
	var before int64
	if f.Before != "" {
		place, err := f.cursorScope().Open(f.Before)
		if err == nil {
			before, err = ParseEventSeq(place, false)
		}
		if err != nil {
			// Not quoted: the cursor names the filter's study.
			return EventPage{}, fmt.Errorf("localstore: events: %w", pipeline.ErrBadCursor)
		}
	}
	q, args := eventsQuery(f, before)
	limit := limitOr(f.Limit, 100)
	args = append(args, limit+1)
	rows, err := db.read.QueryContext(ctx, q, args...)
	if err != nil {
		return EventPage{}, fmt.Errorf("localstore: events: %w", err)
	}
	defer rows.Close()
	page := EventPage{Outbox: db.outboxID, Events: []StoredEvent{}}
	for rows.Next() {
		var e StoredEvent
		var t int64
		var detail, res string
		if err := rows.Scan(&e.Seq, &e.ID, &t, &e.Source, &e.DetailType, &detail, &res); err != nil {
			return EventPage{}, fmt.Errorf("localstore: events: %w", err)
		}
		if len(page.Events) == limit {
			page.Next = strconv.FormatInt(page.Events[limit-1].Seq, 10)
			if !f.Tail {
				page.Next = f.cursorScope().Seal(page.Next)
			}
			break
		}
		if e.Resources, err = readResources(res); err != nil {
			return EventPage{}, err
		}
		e.Time, e.Detail = fromNano(t), json.RawMessage(detail)
		page.Events = append(page.Events, e)
	}
	if err := rows.Err(); err != nil {
		return EventPage{}, fmt.Errorf("localstore: events: %w", err)
	}
	if len(page.Events) == 0 && f.Tail && f.After > 0 {
		if err := db.tailWithin(ctx, f.After); err != nil {
			return EventPage{}, err
		}
	}
	if len(page.Events) > 0 {
		// After the read: the sync covers every commit it saw.
		if err := db.Sync(ctx); err != nil {
			return EventPage{}, fmt.Errorf("localstore: events: %w", err)
		}
	}
	return page, nil
}

// tailWithin refuses a tail's after past the outbox's last seq, which
// no event of this outbox had: a seq of another one, a data directory
// started afresh (its events numbered from 1 again) or put back from a
// copy. Its empty page, given for ever, had a consumer skip unsaid every
// event up to that seq. seq is AUTOINCREMENT and no event is removed, so
// the last seq is the highest ever handed out; a page's events are durable
// before they are given (Events), so no seq given out is undone.
func (db *DB) tailWithin(ctx context.Context, after int64) error {
	var last int64
	if err := db.read.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM outbox`).Scan(&last); err != nil {
		return fmt.Errorf("localstore: events: %w", err)
	}
	if after <= last {
		return nil
	}
	return &SearchError{Search: "events", Reason: fmt.Sprintf("after %d is past the last event's seq (%d): no event of this data directory had it; "+
		"a new data directory numbers its events from 1 again: tail it from after=0 with outbox=%s, de-duplicating on the event id", after, last, db.outboxID)}
}

// eventsQuery is Events' statement and its arguments, less the LIMIT's,
// newest first from before (its Before's place; 0: the newest) unless
// f.Tail.
// A study's events are read from its links (outbox_studies), in their
// seq order: CROSS JOIN keeps SQLite from walking the whole outbox by
// seq and probing each event's links instead. Several types without a
// study are one branch a type, each read in seq order through
// outbox_type_seq, merged (UNION ALL under the ORDER BY): as an IN list
// SQLite read every event of the types and sorted them for each page.
func eventsQuery(f EventFilter, before int64) (string, []any) {
	var where []string
	var args []any
	add := func(cond string, v ...any) { where, args = append(where, cond), append(args, v...) }
	from, seq := `outbox o`, `o.seq`
	if f.Study != "" {
		from, seq = `outbox_studies s CROSS JOIN outbox o ON o.seq = s.seq`, `s.seq`
		add("s.study_uid = ?", f.Study)
	}
	if !f.Since.IsZero() {
		add("o.time >= ?", boundNano(f.Since))
	}
	if !f.Until.IsZero() {
		add("o.time <= ?", boundNano(f.Until))
	}
	if f.Contains != "" {
		add("instr(o.detail, ?) > 0", f.Contains)
	}
	order := "DESC"
	switch {
	case f.Tail:
		add(seq+" > ?", f.After)
		order = "ASC"
	case before > 0:
		add(seq+" < ?", before)
	}
	sel := `SELECT o.seq, o.id, o.time, o.source, o.detail_type, o.detail, o.resources FROM ` + from
	branch := func(types ...string) (string, []any) {
		w, a := where, args
		switch len(types) {
		case 0:
		case 1:
			w, a = append([]string{"o.detail_type = ?"}, w...), append([]any{types[0]}, a...)
		default:
			in := make([]any, len(types))
			for i, t := range types {
				in[i] = t
			}
			w, a = append([]string{"o.detail_type IN (?" + strings.Repeat(", ?", len(in)-1) + ")"}, w...), append(in, a...)
		}
		if len(w) == 0 {
			return sel, a
		}
		return sel + " WHERE " + strings.Join(w, " AND "), a
	}
	types := slices.Compact(slices.Sorted(slices.Values(f.DetailTypes))) // a type twice would be its branch twice
	if f.Study != "" || len(types) < 2 {
		q, a := branch(types...)
		return q + " ORDER BY " + seq + " " + order + " LIMIT ?", a
	}
	var q []string
	var a []any
	for _, t := range types {
		bq, ba := branch(t)
		q, a = append(q, bq), append(a, ba...)
	}
	return strings.Join(q, " UNION ALL ") + " ORDER BY seq " + order + " LIMIT ?", a
}

// Clipped is a value as an error message quotes it: at most 40 bytes
// of it.
func Clipped(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// limitOr is pipeline.PageLimit for the pages of at most pipeline.MaxPage
// (10,000).
func limitOr(n, def int) int { return pipeline.PageLimit(n, def, pipeline.MaxPage) }

// Poster is the part of *http.Client the Publisher uses.
type Poster interface {
	Do(req *http.Request) (*http.Response, error)
}

// Publisher delivers the outbox: every event is appended once to the event
// log (JSON lines, each the event's envelope after its outbox and seq:
// placedEvent) and its envelope POSTed to each webhook until it answers 2xx or the
// attempts run out. Delivery to webhooks is at least once; receivers dedupe
// on the event id (also sent as the X-Event-Id header). X-Event-Seq is the
// event's seq, with which a receiver that was down catches up on
// /api/events?after=<seq>: from the last seq up to which it took every
// event, as each event is retried on its own schedule, not in seq order.
// X-Event-Outbox (OutboxHeader) names the outbox the seq belongs to,
// which the receiver passes as outbox=<id> when it catches up.
type Publisher struct {
	DB      *DB
	LogPath string // events.log; "" disables the log
	FS      vfs.FS // the log's file system; nil means the operating system's
	Client  Poster // nil: an http.Client with a 10 s timeout
	Logger  *slog.Logger

	MaxAttempts int           // per webhook and event; 0 means 8
	BaseBackoff time.Duration // first retry delay, doubled each time; 0 means 500ms
	MaxBackoff  time.Duration // 0 means 1 minute
	// Poll is how often the outbox is re-read without a Notify; 0 means
	// 1s. A webhook retry is tried when it falls due, not at the next Poll.
	Poll time.Duration

	notify   chan struct{} // the log's loop
	notifyWH chan struct{} // the webhooks' loop
	once     sync.Once
	mu       sync.Mutex
	attempts map[retryKey]int
	nextTry  map[retryKey]time.Time
	// downUntil pauses a webhook that just failed, so one dead receiver
	// costs one timeout per backoff period, not one per queued event.
	downUntil map[string]time.Time
	// logUnsure says that the log may hold events past the watermark, or
	// an unfinished line: at the start, and after an append whose
	// watermark could not be moved or whose failure could not be undone.
	// The next Flush reconciles the log first (reconcileLog).
	logUnsure bool
	// logDirSynced says that the log's directory was synced since the
	// start, so that the log's name is durable.
	logDirSynced bool
}

type retryKey struct{ id, url string }

func (p *Publisher) init() {
	p.once.Do(func() {
		p.notify = make(chan struct{}, 1)
		p.notifyWH = make(chan struct{}, 1)
		p.attempts = map[retryKey]int{}
		p.nextTry = map[retryKey]time.Time{}
		p.downUntil = map[string]time.Time{}
		p.logUnsure = true
		if p.FS == nil {
			p.FS = vfs.OS()
		}
		if p.Client == nil {
			p.Client = &http.Client{Timeout: 10 * time.Second}
		}
		if p.Logger == nil {
			p.Logger = slog.New(slog.DiscardHandler)
		}
		if p.MaxAttempts <= 0 {
			p.MaxAttempts = 8
		}
		if p.BaseBackoff <= 0 {
			p.BaseBackoff = 500 * time.Millisecond
		}
		if p.MaxBackoff <= 0 {
			p.MaxBackoff = time.Minute
		}
		if p.Poll <= 0 {
			p.Poll = time.Second
		}
	})
}

// Notify wakes the publisher after new events were committed.
func (p *Publisher) Notify() {
	p.init()
	for _, c := range []chan struct{}{p.notify, p.notifyWH} {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// Run delivers events until ctx is done. It first reconciles the log with
// the outbox, so an event appended just before a crash is not appended
// again. The log and the webhooks are served by two loops, so that a
// webhook that hangs (up to the client's timeout a try) never holds up
// the log.
func (p *Publisher) Run(ctx context.Context) error {
	p.init()
	if err := p.reconcileLog(ctx); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.loop(ctx, p.notifyWH, "webhook delivery", p.flushWebhooks, p.nextWebhookTry)
	}()
	p.loop(ctx, p.notify, "event delivery", p.flushLog, nil)
	<-done
	return nil
}

// loop runs flush now, on each notification (after letting more gather),
// every Poll and, when next gives one, at the time the next delivery
// falls due, until ctx is done, logging its errors as what. A retry due
// in 500 ms waited for the next Poll, about a second, before next. A
// failed flush follows retry.Backoff: after a transient failure flush runs
// again once its backoff step is over, the failure told once a step; once
// the database's durable commits ended (DB.MarkFinal) the failure is told
// once, at ERROR, and flush runs no more until a restart. Each failure was
// told at WARN at each Poll and notification (after a failed fsync, every
// second or more until the restart).
func (p *Publisher) loop(ctx context.Context, notify <-chan struct{}, what string, flush func(context.Context) error,
	next func(now time.Time) (time.Time, bool)) {
	t := time.NewTicker(p.Poll)
	defer t.Stop()
	due := time.NewTimer(p.Poll)
	defer due.Stop()
	b := retry.Backoff{Log: p.Logger, Msg: what, Level: slog.LevelWarn, FinalMsg: what + " failed for good; stopped until a restart"}
	defer b.Stop()
	for {
		if b.Ready() {
			err := flush(ctx)
			if ctx.Err() == nil {
				b.Done(p.DB.MarkFinal(err))
			}
		}
		due.Stop()
		var dueC <-chan time.Time
		if next != nil {
			if at, ok := next(time.Now()); ok {
				due.Reset(time.Until(at))
				dueC = due.C
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-notify:
			// Commits come in streams: one flush, one fsync of the log
			// and of the database, for what a stream commits meanwhile.
			select {
			case <-ctx.Done():
				return
			case <-time.After(notifyCoalesce):
			}
		case <-t.C:
		case <-dueC:
		case <-b.Again():
		}
	}
}

// nextWebhookTry is when the next webhook delivery waiting for its time
// falls due after now: a retry at the end of its backoff, or an event
// held back while its webhook is paused (downUntil), as deliver decides.
// A delivery due already (a flush that failed before it) is left to the
// next Poll, so that a failing flush is not run again at once.
func (p *Publisher) nextWebhookTry(now time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var next time.Time
	consider := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for k, t := range p.nextTry {
		consider(later(t, p.downUntil[k.url]))
	}
	for _, t := range p.downUntil {
		consider(t)
	}
	return next, !next.IsZero()
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// notifyCoalesce is how long the publisher lets notifications gather.
const notifyCoalesce = 50 * time.Millisecond

// reconcileLog moves the log's watermark past the events after it that
// are already in the log file. The log is appended in outbox order and
// the watermark moved right after each append, so such events can only
// be the log's last lines: it reads as many lines from the end as there
// are events past the watermark, never the whole log (which grows with
// the archive). It moves past the longest run of them, in seq order,
// that the log holds: an event after a gap is logged again rather than
// never.
func (p *Publisher) reconcileLog(ctx context.Context) error {
	p.init()
	if p.LogPath == "" {
		p.logUnsure = false
		return nil
	}
	if err := p.cutUnfinishedLine(); err != nil {
		return err
	}
	from, err := p.loggedSeq(ctx)
	if err != nil {
		return err
	}
	rows, err := p.DB.read.QueryContext(ctx, `SELECT seq, id FROM outbox WHERE seq > ? ORDER BY seq`, from)
	if err != nil {
		return fmt.Errorf("localstore: reconcile event log: %w", err)
	}
	type pending struct {
		seq int64
		id  string
	}
	var unlogged []pending
	for rows.Next() {
		var e pending
		if err := rows.Scan(&e.seq, &e.id); err != nil {
			rows.Close()
			return fmt.Errorf("localstore: reconcile event log: %w", err)
		}
		unlogged = append(unlogged, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("localstore: reconcile event log: %w", err)
	}
	if len(unlogged) == 0 {
		p.logUnsure = false
		return nil
	}
	lines, err := lastLines(p.FS, p.LogPath, len(unlogged))
	if err != nil {
		return fmt.Errorf("localstore: read event log: %w", err)
	}
	inLog := map[string]bool{}
	for _, l := range lines {
		var w struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(l, &w) == nil {
			inLog[w.ID] = true
		}
	}
	to := from
	for _, e := range unlogged {
		if !inLog[e.id] {
			break
		}
		to = e.seq
	}
	if to > from {
		if err := p.markLogged(ctx, from, to); err != nil {
			return err
		}
	}
	p.logUnsure = false
	return nil
}

// cutUnfinishedLine cuts the log after its last newline. What follows it
// is the part of a line that an append left unfinished: a crash or power
// loss during the append. The line's event, not in the log, is past the
// watermark and is appended again; left in place, the part would run into
// the next line and spoil it.
func (p *Publisher) cutUnfinishedLine() error {
	f, err := p.FS.OpenFile(p.LogPath, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("localstore: open event log: %w", err)
	}
	err = func() error {
		st, err := f.Stat()
		if err != nil {
			return err
		}
		size := st.Size()
		end := int64(-1) // after the last newline
		for chunk := int64(4 << 10); end < 0; chunk *= 2 {
			off := max(size-chunk, 0)
			buf := make([]byte, size-off)
			if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
				end = off + int64(i) + 1
			} else if off == 0 {
				end = 0
			}
		}
		if end == size {
			return nil
		}
		p.Logger.Warn("event log ended in an unfinished line, left by a crash or a failed append; cut it, its event is appended again",
			"bytes", size-end)
		if err := f.Truncate(end); err != nil {
			return err
		}
		return f.Sync()
	}()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("localstore: cut the event log's unfinished line: %w", err)
	}
	return nil
}

// loggedSeq returns the log's watermark: every event up to it is in the
// log.
func (p *Publisher) loggedSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := p.DB.read.QueryRowContext(ctx, `SELECT logged_seq FROM outbox_log WHERE id = 1`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("localstore: read event log watermark: %w", err)
	}
	return seq, nil
}

// lastLines returns up to n complete lines from the end of the file at
// path (none when it does not exist), reading backwards in growing chunks.
func lastLines(fsys vfs.FS, path string, n int) ([][]byte, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	for chunk := int64(64 << 10); ; chunk *= 2 {
		off := max(size-chunk, 0)
		buf := make([]byte, size-off)
		if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
		lines := bytes.Split(bytes.TrimRight(buf, "\n"), []byte("\n"))
		if off > 0 {
			lines = lines[1:] // the first may be cut
		}
		if len(lines) >= n || off == 0 {
			return lines[max(len(lines)-n, 0):], nil
		}
	}
}

// markLogged moves the log's watermark from from to to: the events
// numbered up to to are in the log. It fails unless the watermark is at
// from, which only this publisher moves.
func (p *Publisher) markLogged(ctx context.Context, from, to int64) error {
	err := p.DB.write(ctx, func(tx *querier) error {
		res, err := tx.ExecContext(ctx, `UPDATE outbox_log SET logged_seq = ? WHERE id = 1 AND logged_seq = ?`, to, from)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return errors.Join(fmt.Errorf("watermark moved from %d meanwhile", from), err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("localstore: mark logged: %w", err)
	}
	return nil
}

// flushBatch is how many events one Flush round reads.
const flushBatch = 500

// outboxEvent is an undelivered outbox row.
type outboxEvent struct {
	seq  int64
	ev   Event
	left []string
}

// undelivered reads up to flushBatch events in seq order, after seq from
// and up to through, that meet where.
func (p *Publisher) undelivered(ctx context.Context, where string, from, through int64) ([]outboxEvent, error) {
	rows, err := p.DB.read.QueryContext(ctx,
		`SELECT seq, id, time, source, detail_type, detail, webhooks_left, resources FROM outbox WHERE `+where+` AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?`, from, through, flushBatch)
	if err != nil {
		return nil, fmt.Errorf("localstore: read outbox: %w", err)
	}
	defer rows.Close()
	var out []outboxEvent
	for rows.Next() {
		var pe outboxEvent
		var t int64
		var detail, left, res string
		if err := rows.Scan(&pe.seq, &pe.ev.ID, &t, &pe.ev.Source, &pe.ev.DetailType, &detail, &left, &res); err != nil {
			return nil, fmt.Errorf("localstore: read outbox: %w", err)
		}
		if pe.ev.Resources, err = readResources(res); err != nil {
			return nil, err
		}
		pe.ev.Time, pe.ev.Detail = fromNano(t), json.RawMessage(detail)
		if err := json.Unmarshal([]byte(left), &pe.left); err != nil {
			pe.left = nil
		}
		out = append(out, pe)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("localstore: read outbox: %w", err)
	}
	return out, nil
}

// Flush delivers what is due now: unlogged events to the log, in one
// append and one fsync per round, and pending webhook deliveries whose
// backoff has passed. It delivers only events whose commit is durable: an
// event whose commit a power loss could still undo would be announced
// again, when its work is redone after the restart. Run does the two in
// loops of their own; Flush is for one caller at a time.
func (p *Publisher) Flush(ctx context.Context) error {
	return errors.Join(p.flushLog(ctx), p.flushWebhooks(ctx))
}

// durableThrough returns the last seq of the outbox's events that meet
// where (all of them when where is empty) once every event up to it is
// durable; false when there is none.
func (p *Publisher) durableThrough(ctx context.Context, where string) (int64, bool, error) {
	p.init()
	q := `SELECT MAX(seq) FROM outbox`
	if where != "" {
		q += ` WHERE ` + where // a partial index's condition, see schema
	}
	var through sql.NullInt64
	if err := p.DB.read.QueryRowContext(ctx, q).Scan(&through); err != nil {
		return 0, false, fmt.Errorf("localstore: read outbox: %w", err)
	}
	if !through.Valid {
		return 0, false, nil
	}
	if err := p.DB.Sync(ctx); err != nil {
		return 0, false, err
	}
	return through.Int64, true, nil
}

// flushLog appends the events past the watermark to the log.
func (p *Publisher) flushLog(ctx context.Context) error {
	through, ok, err := p.durableThrough(ctx, "")
	if err != nil || !ok {
		return err
	}
	if p.logUnsure {
		if err := p.reconcileLog(ctx); err != nil {
			return err
		}
	}
	logged, err := p.loggedSeq(ctx)
	if err != nil {
		return err
	}
	for logged < through {
		todo, err := p.undelivered(ctx, `true`, logged, through)
		if err != nil {
			return err
		}
		if len(todo) == 0 {
			break
		}
		var lines []byte
		for _, pe := range todo {
			line, err := json.Marshal(placedEvent{Outbox: p.DB.OutboxID(), Seq: pe.seq, wireEvent: pe.ev.envelope()})
			if err != nil {
				return err
			}
			lines = append(append(lines, line...), '\n')
		}
		if err := p.appendLog(lines); err != nil {
			return err
		}
		// The events after the watermark up to this round's last are
		// this round's: an event committed later has a higher seq than
		// any committed before it (AUTOINCREMENT, one writer).
		last := todo[len(todo)-1].seq
		if err := p.markLogged(ctx, logged, last); err != nil {
			// The events are in the log: the next round finds them
			// there rather than appending them again.
			p.logUnsure = true
			return err
		}
		logged = last
	}
	return nil
}

// flushWebhooks tries the webhook deliveries whose backoff has passed.
func (p *Publisher) flushWebhooks(ctx context.Context) error {
	through, ok, err := p.durableThrough(ctx, `webhooks_left != '[]'`)
	if err != nil || !ok {
		return err
	}
	todo, err := p.undelivered(ctx, `webhooks_left != '[]'`, 0, through)
	if err != nil {
		return err
	}
	var errs []error
	type update struct {
		id   string
		left []byte
	}
	var updates []update
	for _, pe := range todo {
		body, err := pe.ev.wire()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var still []string
		for _, u := range pe.left {
			if p.deliver(ctx, pe.ev.ID, pe.seq, u, body) {
				continue
			}
			still = append(still, u)
		}
		if len(still) != len(pe.left) {
			b, err := json.Marshal(still)
			if still == nil || err != nil {
				b = []byte("[]")
			}
			updates = append(updates, update{pe.ev.ID, b})
		}
	}
	if len(updates) > 0 {
		err := p.DB.write(ctx, func(tx *querier) error {
			for _, u := range updates {
				if _, err := tx.ExecContext(ctx, `UPDATE outbox SET webhooks_left = ? WHERE id = ?`, string(u.left), u.id); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("localstore: mark delivered: %w", err))
		}
	}
	return errors.Join(errs...)
}

// deliver tries one POST if its backoff has passed. It reports true when the
// webhook is done with: delivered, or given up after MaxAttempts.
func (p *Publisher) deliver(ctx context.Context, id string, seq int64, u string, body []byte) bool {
	k := retryKey{id, u}
	p.mu.Lock()
	due, down := p.nextTry[k], p.downUntil[u]
	p.mu.Unlock()
	if now := time.Now(); now.Before(due) || now.Before(down) {
		return false
	}
	err := p.post(ctx, id, seq, u, body)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		delete(p.attempts, k)
		delete(p.nextTry, k)
		delete(p.downUntil, u)
		return true
	}
	p.attempts[k]++
	n := p.attempts[k]
	if n >= p.MaxAttempts {
		p.Logger.Error("webhook delivery abandoned", "event_id", id, "webhook", logname.Origin(u), "attempts", n, "err", webhookError(err))
		delete(p.attempts, k)
		delete(p.nextTry, k)
		return true
	}
	d := p.BaseBackoff << (n - 1)
	if d > p.MaxBackoff || d <= 0 {
		d = p.MaxBackoff
	}
	p.nextTry[k] = time.Now().Add(d)
	p.downUntil[u] = time.Now().Add(min(d, p.BaseBackoff))
	p.Logger.Warn("webhook delivery failed, will retry", "event_id", id, "webhook", logname.Origin(u), "attempt", n, "retry_in", d, "err", webhookError(err))
	return false
}

func (p *Publisher) post(ctx context.Context, id string, seq int64, u string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("localstore: webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Event-Id", id)
	req.Header.Set("X-Event-Seq", strconv.FormatInt(seq, 10))
	req.Header.Set(OutboxHeader, p.DB.OutboxID())
	resp, err := p.Client.Do(req)
	if err != nil {
		return fmt.Errorf("localstore: webhook post: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("localstore: webhook post: status %d", resp.StatusCode)
	}
	return nil
}

// appendLog appends lines (each ending in a newline) to the log and
// fsyncs it, and once after the start its directory, which may have just
// got the log. An append that fails is undone: a part of a line (a full
// disk writes what fits) would run into the next line, and whole lines
// would be appended again by the next round.
func (p *Publisher) appendLog(lines []byte) error {
	if p.LogPath == "" {
		return nil
	}
	f, err := p.FS.OpenFile(p.LogPath, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("localstore: open event log: %w", err)
	}
	st, err := f.Stat()
	if err == nil {
		end := st.Size()
		_, err = f.WriteAt(lines, end)
		if err == nil {
			err = f.Sync()
		}
		if err == nil && !p.logDirSynced {
			if err = p.FS.SyncDir(filepath.Dir(p.LogPath)); err == nil {
				p.logDirSynced = true
			}
		}
		if err != nil {
			if terr := f.Truncate(end); terr != nil {
				p.logUnsure = true
				err = errors.Join(err, fmt.Errorf("undo the append: %w", terr))
			}
		}
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		// Written and synced: the next round finds the lines.
		err = cerr
		p.logUnsure = true
	}
	if err != nil {
		return fmt.Errorf("localstore: append event log: %w", err)
	}
	return nil
}

// webhookError is a delivery error for the log: the HTTP client's errors
// quote the request's URL, whose path, query or user info may hold a token.
func webhookError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return logname.RedactOrigin(err, ue.URL).Error()
	}
	return err.Error()
}
