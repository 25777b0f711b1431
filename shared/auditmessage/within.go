package auditmessage

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
)

// ErrTooLarge: a message cannot be cut to the size asked for.
var ErrTooLarge = errors.New("auditmessage: message too large")

// Bounds Within cuts values down to, and never below: free text to
// cutTextTo bytes, identifiers to cutIDTo (the longest a DICOM UI or LO
// value may be).
const (
	cutTextTo = 32
	cutIDTo   = 64
)

// Within returns m with its XML at most max bytes long: m itself when it is,
// else the same message with its longest values cut (ending in
// associationaudit.Cut) until it is: first the free text (the outcome
// description, the Alert Description and the other details, the names),
// then identifiers longer than a DICOM value may be (a malformed instance's,
// which validation quarantined). Nothing is left out: every participant and
// participant object stays, so the message still meets its event's table.
// The cuts depend on the message alone, so a record sent again gives the
// same message. It fails (ErrTooLarge) when even that does not fit, and for
// a message Render did not make.
func (m Message) Within(max int) (Message, error) {
	if len(m.XML) <= max {
		return m, nil
	}
	if m.doc == nil {
		return Message{}, fmt.Errorf("%w: %d bytes, want at most %d", ErrTooLarge, len(m.XML), max)
	}
	doc := m.doc.clone()
	for {
		if !doc.cutLongest() {
			return Message{}, fmt.Errorf("auditmessage: %s record: %w: %d bytes with every value cut, want at most %d",
				idKind(m.ID), ErrTooLarge, len(m.XML), max)
		}
		b, err := marshal(doc)
		if err != nil {
			return Message{}, fmt.Errorf("auditmessage: %s record: %w", idKind(m.ID), err)
		}
		m.XML, m.doc = b, doc
		if len(b) <= max {
			return m, nil
		}
	}
}

// clone copies what cutLongest changes.
func (m *auditMessage) clone() *auditMessage {
	c := *m
	c.Participants = append([]activeParticipant(nil), m.Participants...)
	c.Objects = append([]participantObject(nil), m.Objects...)
	for i := range c.Objects {
		o := &c.Objects[i]
		o.Details = append([]valuePair(nil), o.Details...)
		o.Descriptions = append([]objectDescription(nil), o.Descriptions...)
		for j := range o.Descriptions {
			d := &o.Descriptions[j]
			d.SOPClasses = append([]sopClass(nil), d.SOPClasses...)
			for k := range d.SOPClasses {
				d.SOPClasses[k].Instances = append([]instance(nil), d.SOPClasses[k].Instances...)
			}
		}
	}
	return &c
}

// cutLongest halves the longest value of the first kind that has one over
// its bound, free text before identifiers; false when none is left to cut.
func (m *auditMessage) cutLongest() bool {
	var text, ids []*string
	var details []*valuePair
	text = append(text, &m.Event.Description)
	for i := range m.Participants {
		p := &m.Participants[i]
		text = append(text, &p.UserName, &p.AlternativeUserID)
		ids = append(ids, &p.UserID, &p.NetworkAccess)
	}
	for i := range m.Objects {
		o := &m.Objects[i]
		text = append(text, &o.Name)
		ids = append(ids, &o.ID)
		for j := range o.Details {
			details = append(details, &o.Details[j])
		}
		for j := range o.Descriptions {
			for k := range o.Descriptions[j].SOPClasses {
				sc := &o.Descriptions[j].SOPClasses[k]
				ids = append(ids, &sc.UID)
				for l := range sc.Instances {
					ids = append(ids, &sc.Instances[l].UID)
				}
			}
		}
	}
	// A value cut to its bound is the bound and the Cut long.
	longest, longestDetail, n := (*string)(nil), (*valuePair)(nil), cutTextTo+len(associationaudit.Cut)
	for _, s := range text {
		if len(*s) > n {
			longest, n = s, len(*s)
		}
	}
	for _, d := range details {
		if len(d.text) > n {
			longest, longestDetail, n = nil, d, len(d.text)
		}
	}
	switch {
	case longestDetail != nil:
		longestDetail.text = cut(longestDetail.text, cutTextTo)
		longestDetail.Value = base64.StdEncoding.EncodeToString([]byte(longestDetail.text))
		return true
	case longest != nil:
		*longest = cut(*longest, cutTextTo)
		return true
	}
	n = cutIDTo + len(associationaudit.Cut)
	for _, s := range ids {
		if len(*s) > n {
			longest, n = s, len(*s)
		}
	}
	if longest == nil {
		return false
	}
	*longest = cut(*longest, cutIDTo)
	return true
}

// cut halves s (to no less than floor bytes), at a character's start, and
// ends it in associationaudit.Cut (once: a value cut before is cut again).
func cut(s string, floor int) string {
	s = strings.TrimSuffix(s, associationaudit.Cut)
	n := min(max(len(s)/2, floor), len(s))
	for n > 0 && n < len(s) && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + associationaudit.Cut
}
