package pipeline

import (
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// A cursor continues the query that handed it out and no other
// (AuditQuery.Cursor). Every AuditStore seals its own place in the results
// (its cursor as it was) with a digest of the query's selection, every
// field but Limit and Cursor, and opens it only for a query of the same
// selection: passed with another, it would read that query's records from
// the first one's place and lose those before it. The digest holds no
// field in the clear (the selection may name a patient), nor may an error
// quote it.

// cursorSeal separates a store's place from the digest: no store's place
// holds it (digits and dots, base64url).
const cursorSeal = "~"

// SealCursor returns the cursor of q's results at place, the store's own
// position ("" for none: no more results, no cursor).
func (q AuditQuery) SealCursor(place string) string {
	if place == "" {
		return ""
	}
	return place + cursorSeal + q.selection()
}

// OpenCursor returns the store's place q.Cursor holds; ok is false unless a
// query of q's selection sealed it (SealCursor).
func (q AuditQuery) OpenCursor() (place string, ok bool) {
	place, digest, found := strings.Cut(q.Cursor, cursorSeal)
	return place, found && place != "" && digest == q.selection()
}

// selection is a digest of the fields that select q's records, an instant
// the same whatever its time zone.
func (q AuditQuery) selection() string {
	var b []byte
	for _, s := range []string{q.SOPInstanceUID, q.PatientID, q.StudyInstanceUID, q.CallingAE, q.Day, q.Outcome} {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		b = append(b, s...)
	}
	for _, t := range []time.Time{q.From, q.To} {
		if t.IsZero() {
			b = append(b, 'z')
			continue
		}
		b = strconv.AppendInt(b, t.Unix(), 10)
		b = append(b, '.')
		b = strconv.AppendInt(b, int64(t.Nanosecond()), 10)
		b = append(b, ';')
	}
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}
