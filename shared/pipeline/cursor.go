package pipeline

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// A cursor continues the query that handed it out and no other. Every
// paged query, whatever its store (the audit trail's AuditQuery on SQLite
// and DynamoDB; local mode's studies, associations, an association's
// records, Storage Commitment transactions and events), seals its own
// place in the results (where its next page starts, in the store's own
// form) by one rule, CursorScope: the place, then a digest of the query's
// name, of every field that selects its results (all but its page size)
// and of the place itself. It opens a cursor only for a query of the same
// name and selection, and only with the place it was sealed with. Passed
// with another query, a cursor would read that query's rows from the
// first one's place and lose those before it; with its place changed, it
// would read from anywhere: either is ErrBadCursor, which an API answers
// as the caller's fault (400), never a page.
//
// The digest is a check, not a signature: it catches a cursor reused with
// other filters, cut, or edited, not one forged by whoever computes it
// (which reads nothing the query itself does not select). It holds no
// field in the clear (a selection may name a patient), and no error may
// quote a cursor: its place may hold a UID.

// cursorSeal separates a place from its digest, which is base64url: a
// cursor's digest is what follows its last cursorSeal, so a place may hold
// any text.
const cursorSeal = "~"

// CursorScope is what a paged query's cursors are sealed to: the query's
// name and the values that select its results, each added in a fixed
// order by the query's own method (Text, Times). Its zero value is no
// scope; build one with NewCursorScope.
type CursorScope struct{ b []byte }

// NewCursorScope starts the scope of the query named query ("audit",
// "studies", ...): cursors of queries of different names never open for
// each other, whatever their fields.
func NewCursorScope(query string) *CursorScope {
	return (&CursorScope{}).Text(query)
}

// Text adds values to the scope, each as it is (length-prefixed: the
// encoding of a scope's values is one sequence of them and no other).
func (s *CursorScope) Text(values ...string) *CursorScope {
	for _, v := range values {
		s.b = strconv.AppendInt(s.b, int64(len(v)), 10)
		s.b = append(s.b, ':')
		s.b = append(s.b, v...)
	}
	return s
}

// Times adds instants to the scope: the same whatever their time zone,
// the zero time (no bound) apart from every other.
func (s *CursorScope) Times(ts ...time.Time) *CursorScope {
	for _, t := range ts {
		if t.IsZero() {
			s.b = append(s.b, 'z')
			continue
		}
		s.b = strconv.AppendInt(s.b, t.Unix(), 10)
		s.b = append(s.b, '.')
		s.b = strconv.AppendInt(s.b, int64(t.Nanosecond()), 10)
		s.b = append(s.b, ';')
	}
	return s
}

// Seal returns the cursor of the scope's results at place, the store's
// own position ("" for none: no more results, no cursor).
func (s *CursorScope) Seal(place string) string {
	if place == "" {
		return ""
	}
	return place + cursorSeal + s.digest(place)
}

// Open returns the place cursor holds; the error wraps ErrBadCursor unless
// a query of this scope sealed it (Seal) with that place. It quotes
// nothing of the cursor.
func (s *CursorScope) Open(cursor string) (string, error) {
	i := strings.LastIndex(cursor, cursorSeal)
	if i <= 0 || cursor[i+len(cursorSeal):] != s.digest(cursor[:i]) {
		return "", fmt.Errorf("a cursor not handed out for this query: %w", ErrBadCursor)
	}
	return cursor[:i], nil
}

// digest is the scope's and place's digest, 96 bits of SHA-256.
func (s *CursorScope) digest(place string) string {
	b := (&CursorScope{b: append([]byte(nil), s.b...)}).Text(place).b
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// CursorScope is the scope of q's cursors (Cursor, AuditPage.Next): the
// fields that select its records, every one but Limit and Cursor.
func (q AuditQuery) CursorScope() *CursorScope {
	return NewCursorScope("audit").
		Text(q.SOPInstanceUID, q.PatientID, q.StudyInstanceUID, q.CallingAE, q.Day, q.Outcome).
		Times(q.From, q.To)
}
