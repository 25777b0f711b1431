package pipeline

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestCursorScope: a cursor opens, with its place, for a scope of the same
// query name and values only, whatever the place holds (the cursor's seal,
// a UID); one of another query, with a value changed, moved between two
// values, or a time bound changed or dropped, or one with its place or its
// seal altered, is ErrBadCursor, and its error quotes nothing of it.
func TestCursorScope(t *testing.T) {
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	scope := func() *CursorScope { return NewCursorScope("studies").Text("1.2.3", "").Times(at, time.Time{}) }
	for _, place := range []string{"1795687860000000000.13", "1795687860000000000_1.2.840.5~x", "~", "eyJwayI6IkRBWSMyMDI2In0"} {
		c := scope().Seal(place)
		if got, err := scope().Open(c); err != nil || got != place {
			t.Errorf("Open(Seal(%q)) = %q, %v", place, got, err)
		}
		// The same instant in another zone is the same scope.
		if got, err := NewCursorScope("studies").Text("1.2.3", "").Times(at.In(time.FixedZone("X", 3600)), time.Time{}).Open(c); err != nil || got != place {
			t.Errorf("in another zone: %q, %v", got, err)
		}
	}
	if c := scope().Seal(""); c != "" {
		t.Errorf("Seal of no place: %q, want none", c)
	}
	c := scope().Seal("17.3")
	place, seal, _ := strings.Cut(c, cursorSeal)
	for _, tt := range []struct {
		name   string
		scope  *CursorScope
		cursor string
	}{
		{"another query", NewCursorScope("commitments").Text("1.2.3", "").Times(at, time.Time{}), c},
		{"a value changed", NewCursorScope("studies").Text("1.2.4", "").Times(at, time.Time{}), c},
		{"a value moved to the next", NewCursorScope("studies").Text("", "1.2.3").Times(at, time.Time{}), c},
		{"two values run together", NewCursorScope("studies").Text("1.2.3").Times(at, time.Time{}), c},
		{"a bound changed", NewCursorScope("studies").Text("1.2.3", "").Times(at.Add(time.Nanosecond), time.Time{}), c},
		{"a bound dropped", NewCursorScope("studies").Text("1.2.3", "").Times(time.Time{}, time.Time{}), c},
		{"a bound added", NewCursorScope("studies").Text("1.2.3", "").Times(at, at), c},
		{"the name as a value", NewCursorScope("").Text("studies", "1.2.3", "").Times(at, time.Time{}), c},
		{"place moved", scope(), "17.4" + cursorSeal + seal},
		{"place cut", scope(), "17." + cursorSeal + seal},
		{"seal altered", scope(), place + cursorSeal + strings.ToLower(seal)},
		{"seal cut", scope(), place + cursorSeal + seal[1:]},
		{"seal doubled", scope(), c + cursorSeal + seal},
		{"no seal", scope(), place},
		{"no place", scope(), cursorSeal + seal},
		{"separator alone", scope(), cursorSeal},
		{"empty", scope(), ""},
		{"not UTF-8", scope(), "\xff" + cursorSeal + "\xfe"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.scope.Open(tt.cursor)
			if !errors.Is(err, ErrBadCursor) || got != "" {
				t.Fatalf("Open(%q) = %q, %v; want ErrBadCursor", tt.cursor, got, err)
			}
			if tt.cursor != "" && strings.Contains(err.Error(), tt.cursor) || strings.Contains(err.Error(), seal) {
				t.Errorf("error %q quotes the cursor", err)
			}
		})
	}
}

// TestAuditCursorScope: an audit query's cursor is sealed to every field
// but Limit and Cursor: another page size goes on, another filter does
// not.
func TestAuditCursorScope(t *testing.T) {
	q := AuditQuery{CallingAE: "LOCAL_AE", From: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), Limit: 5}
	c := q.CursorScope().Seal("17.3")
	next := q
	next.Limit, next.Cursor = 50, c
	if place, err := next.CursorScope().Open(next.Cursor); err != nil || place != "17.3" {
		t.Errorf("another page size: %q, %v", place, err)
	}
	for name, other := range map[string]AuditQuery{
		"SOP":     {SOPInstanceUID: "1", CallingAE: q.CallingAE, From: q.From},
		"patient": {PatientID: "1", CallingAE: q.CallingAE, From: q.From},
		"study":   {StudyInstanceUID: "1", CallingAE: q.CallingAE, From: q.From},
		"AE":      {CallingAE: "SITE_B", From: q.From},
		"day":     {Day: "2026-12-01", CallingAE: q.CallingAE, From: q.From},
		"outcome": {Outcome: OutcomeStored, CallingAE: q.CallingAE, From: q.From},
		"from":    {CallingAE: q.CallingAE},
		"to":      {CallingAE: q.CallingAE, From: q.From, To: q.From},
	} {
		if _, err := other.CursorScope().Open(c); !errors.Is(err, ErrBadCursor) {
			t.Errorf("%s changed: %v, want ErrBadCursor", name, err)
		}
	}
}

// FuzzCursorScope: a cursor comes from outside (an API's cursor
// parameter). Open never panics, and opens only a cursor Seal made of its
// place: every other is ErrBadCursor.
func FuzzCursorScope(f *testing.F) {
	scope := NewCursorScope("fuzz").Text("LOCAL_AE").Times(time.Unix(1, 2))
	for _, s := range []string{"", "~", "1.2", scope.Seal("1.2"), scope.Seal("1795687860000000000_1.2.3"), "x~y", "~~", "\xff~"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cursor string) {
		place, err := scope.Open(cursor)
		switch {
		case err != nil && !errors.Is(err, ErrBadCursor):
			t.Fatalf("Open(%q): %v", cursor, err)
		case err == nil && (place == "" || scope.Seal(place) != cursor):
			t.Fatalf("Open(%q) = %q, which Seal does not make it of", cursor, place)
		}
	})
}
