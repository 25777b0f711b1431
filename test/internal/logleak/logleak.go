// Package logleak checks captured logs for the identifiers of the objects a
// test sent: their UIDs (whole, their distinctive components and their
// tails), the names and ids of the people in them, the other identifying
// text the objects it writes carry (identifying), and their object keys.
// Logs leave the protected stores, so none of these may appear in them
// (see docs/operations/logging.md).
package logleak

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/version"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
)

// registeredRoots are UID roots that name standards and implementations,
// not patients: their components are not distinctive, and UIDs under them
// (transfer syntaxes, SOP classes, the peers' implementation class UIDs)
// may be logged.
var registeredRoots = []string{
	"1.2.840.10008.",       // DICOM
	"1.2.276.0.7230010.3.", // OFFIS DCMTK (its implementation class UID)
	version.ImplementationClassUID,
}

// Identifiers is what must not appear in any log line. The zero value is
// ready to use.
type Identifiers struct {
	needles []needle
	seen    map[string]bool
}

type needle struct {
	kind, value string // kind says what it is, for the failure message
	// match is how the value is looked for: a plain substring, a whole
	// digit run, or a whole word.
	match matchKind
}

type matchKind int

const (
	substring matchKind = iota
	digitRun
	word
)

func (ids *Identifiers) add(kind, value string, m matchKind) {
	if value == "" {
		return
	}
	if ids.seen == nil {
		ids.seen = map[string]bool{}
	}
	if ids.seen[value] {
		return
	}
	ids.seen[value] = true
	ids.needles = append(ids.needles, needle{kind, value, m})
}

// AddUID adds a UID: the whole UID, each component of 7 or more digits
// outside a registered root (timestamps, serial and random parts) as a
// whole digit run, and each tail of two or more components and 12 or more
// characters, which a truncated or re-rooted copy would still show.
func (ids *Identifiers) AddUID(uid string) {
	if uid == "" || registered(uid) {
		return
	}
	if len(uid) >= 10 {
		ids.add("UID", uid, substring)
	} else {
		ids.add("UID", uid, digitRun)
	}
	parts := strings.Split(uid, ".")
	for i := 1; i < len(parts)-1; i++ {
		if tail := strings.Join(parts[i:], "."); len(tail) >= 12 {
			ids.add("UID tail of "+uid, tail, substring)
		}
	}
	for _, p := range parts {
		if len(p) >= 7 {
			ids.add("UID component of "+uid, p, digitRun)
		}
	}
}

func registered(uid string) bool {
	for _, r := range registeredRoots {
		if strings.HasPrefix(uid+".", r) {
			return true
		}
	}
	return false
}

// AddName adds a person name (PN): the whole value and each of its
// components of three or more characters, as whole words.
func (ids *Identifiers) AddName(pn string) { ids.addName("person name", pn) }

func (ids *Identifiers) addName(kind, pn string) {
	pn = strings.TrimSpace(pn)
	if !strings.ContainsFunc(pn, isAlnum) {
		return
	}
	ids.add(kind, pn, substring)
	for _, part := range strings.FieldsFunc(pn, func(r rune) bool { return r == '^' || r == '=' }) {
		if part = strings.TrimSpace(part); len(part) >= 3 && part != pn {
			ids.add("part of "+kind+" "+pn, part, word)
		}
	}
}

// AddID adds a patient id, accession number or birth date, as a whole word.
func (ids *Identifiers) AddID(kind, id string) {
	if id = strings.TrimSpace(id); strings.ContainsFunc(id, isAlnum) {
		ids.add(kind, id, word)
	}
}

// AddKey adds an object key.
func (ids *Identifiers) AddKey(key string) { ids.add("object key", key, substring) }

// elementLine is one element of dcmdump's output: tag, VR, [value].
var elementLine = regexp.MustCompile(`^\s*\(([0-9a-f]{4}),([0-9a-f]{4})\) ([A-Z]{2}) \[(.*?)\]\s+#`)

// AddFile adds every identifier in the DICOM file at path, as dcmdump reads
// it: all UIDs (at any depth) outside the registered roots, all person
// names, the patient ids, birth dates and accession numbers.
func (ids *Identifiers) AddFile(t testing.TB, path string) {
	t.Helper()
	for _, line := range strings.Split(dcmtk.Dump(t, path), "\n") {
		m := elementLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		tag, vr := m[1]+","+m[2], m[3]
		for _, v := range strings.Split(m[4], `\`) {
			switch {
			case vr == "UI":
				ids.AddUID(v)
			case vr == "PN":
				ids.AddName(v)
			case tag == "0010,0020" || tag == "0010,1000":
				ids.AddID("patient id", v)
			case tag == "0010,0030":
				ids.AddID("birth date", v)
			case tag == "0008,0050":
				ids.AddID("accession number", v)
			}
		}
	}
}

// Len is how many needles are looked for.
func (ids *Identifiers) Len() int { return len(ids.needles) }

// uidShaped is anything that looks like a UID of six or more components.
var uidShaped = regexp.MustCompile(`[0-9]+(\.[0-9]+){5,}`)

// rawKey is an object key whose UID part was not replaced by a name.
var rawKey = regexp.MustCompile(`(incoming|metadata|quarantine)/[0-9]{4}/[0-9]{2}/[0-9]{2}/(unknown-study/)?(unknown-series/)?[0-9]`)

// Check reports, as test errors, every line of logs (from source) that
// holds one of the identifiers, a UID-shaped string outside the registered
// roots or an object key with its UIDs. It returns the number of lines read.
func (ids *Identifiers) Check(t testing.TB, source, logs string) int {
	t.Helper()
	lines := strings.Split(strings.TrimRight(logs, "\n"), "\n")
	leaks := 0
	report := func(i int, what string) {
		leaks++
		if leaks <= 20 {
			t.Errorf("%s log line %d holds %s:\n%s", source, i+1, what, lines[i])
		}
	}
	for i, line := range lines {
		for _, n := range ids.needles {
			if n.find(line) {
				report(i, fmt.Sprintf("a %s (%q)", n.kind, n.value))
			}
		}
		for _, u := range uidShaped.FindAllString(line, -1) {
			if !registered(u) {
				report(i, fmt.Sprintf("a UID-shaped string (%q)", u))
			}
		}
		if k := rawKey.FindString(line); k != "" {
			report(i, fmt.Sprintf("an object key with its UIDs (%q…)", k))
		}
	}
	if leaks > 20 {
		t.Errorf("%s: %d leaks in all, the first 20 shown", source, leaks)
	}
	return len(lines)
}

func (n needle) find(line string) bool {
	switch n.match {
	case digitRun:
		return findBounded(line, n.value, isDigitByte)
	case word:
		return findBounded(line, n.value, func(c byte) bool { return isAlnum(rune(c)) })
	}
	return strings.Contains(line, n.value)
}

// findBounded reports whether v occurs in s with no inside(c) character
// right before or after it.
func findBounded(s, v string, inside func(byte) bool) bool {
	for i := 0; ; {
		j := strings.Index(s[i:], v)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(v)
		if (start == 0 || !inside(s[start-1])) && (end == len(s) || !inside(s[end])) {
			return true
		}
		i = start + 1
	}
}

func isDigitByte(c byte) bool { return c >= '0' && c <= '9' }

func isAlnum(r rune) bool {
	return r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= 0x80
}
