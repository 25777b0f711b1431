// Package logname names stored objects in log lines and error messages
// without their keys. Object keys hold Study, Series and SOP Instance UIDs,
// which identify patients as much as a name does; logs leave the protected
// stores, so a log line names an object by a keyed digest of its key
// instead: HMAC-SHA-256 under a per-deployment key, truncated. The same key
// always gets the same name, so lines about one object can be correlated,
// and whoever holds the deployment's key and may list the objects can go
// from a name back to the object (see docs/operations/logging.md).
package logname

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// MinKeyLen is the shortest key New accepts, in bytes: shorter keys would
// let a guessed key be checked against the names of known UIDs.
const MinKeyLen = 32

// Prefix starts every name, so a name is recognizable in any log.
const Prefix = "obj-"

// nameBytes is how much of the HMAC a name keeps: 80 bits make a collision
// unlikely below a trillion objects while keeping names short.
const nameBytes = 10

// ErrShortKey is returned for a key shorter than MinKeyLen.
var ErrShortKey = fmt.Errorf("logname: key shorter than %d bytes", MinKeyLen)

// Namer names objects under one deployment's key. A nil *Namer is usable:
// it names objects under a key drawn at random once per process, so names
// never reveal a key but do not match across processes or restarts.
type Namer struct {
	key []byte
}

// New returns a Namer keyed with key (at least MinKeyLen bytes).
func New(key []byte) (*Namer, error) {
	if len(key) < MinKeyLen {
		return nil, ErrShortKey
	}
	return &Namer{key: slices.Clone(key)}, nil
}

var (
	ephemeralOnce sync.Once
	ephemeral     *Namer
)

// Ephemeral returns the process-wide Namer under a random key (the one a
// nil *Namer uses).
func Ephemeral() *Namer {
	ephemeralOnce.Do(func() {
		k := make([]byte, MinKeyLen)
		if _, err := rand.Read(k); err != nil {
			// crypto/rand does not fail on supported platforms; a
			// process that cannot draw randomness must not run on.
			panic("logname: crypto/rand: " + err.Error())
		}
		ephemeral = &Namer{key: k}
	})
	return ephemeral
}

func (n *Namer) keyed() *Namer {
	if n == nil {
		return Ephemeral()
	}
	return n
}

// Name returns the name of the object stored under key: Prefix and the
// first 80 bits of HMAC-SHA-256(deployment key, key) in lowercase hex.
func (n *Namer) Name(key string) string {
	m := hmac.New(sha256.New, n.keyed().key)
	m.Write([]byte(key)) // a hash.Hash never returns an error from Write
	return Prefix + hex.EncodeToString(m.Sum(nil)[:nameBytes])
}

// Key wraps an object key for a log line or an error message: every way
// of printing it (slog, fmt verbs, JSON, text) gives its name, never the key.
func (n *Namer) Key(key string) Key {
	return Key{n: n, key: key}
}

// Key is an object key that prints as its name. The raw key stays inside
// for whoever holds the value in code, and no formatting reveals it.
type Key struct {
	n   *Namer
	key string
}

var (
	_ slog.LogValuer = Key{}
	_ fmt.Formatter  = Key{}
)

// LogValue implements slog.LogValuer.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// String returns the name.
func (k Key) String() string { return k.n.Name(k.key) }

// Format prints the name for every verb, %#v and %q included.
func (k Key) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", k.String())
		return
	}
	io.WriteString(f, k.String()) // fmt reports write errors itself
}

// MarshalText implements encoding.TextMarshaler (and so JSON).
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Redact returns err with every mention of the given object keys in its
// message, and of each UID inside them, replaced by the key's name: errors
// from lower layers (file paths, S3 request URLs, conflict keys) carry keys
// in forms a caller cannot predict. The original error stays in the chain
// for errors.Is and errors.As; only the message changes. nil stays nil.
func (n *Namer) Redact(err error, keys ...string) error {
	if err == nil {
		return nil
	}
	var rs []replacement
	for _, k := range keys {
		if k == "" {
			continue
		}
		name := n.Name(k)
		rs = append(rs, replacement{k, name})
		for _, uid := range UIDs(k) {
			rs = append(rs, replacement{uid, name})
		}
	}
	return &redacted{msg: replaceLongestFirst(err.Error(), rs), err: err}
}

// ReplaceUIDs returns text with each UID in it (as UIDs finds them)
// replaced by with: for text from outside, such as a peer's error comment,
// which may name the UIDs it was asked about.
func ReplaceUIDs(text, with string) string {
	var rs []replacement
	for _, uid := range UIDs(text) {
		rs = append(rs, replacement{uid, with})
	}
	return replaceLongestFirst(text, rs)
}

type replacement struct{ old, new string }

// replaceLongestFirst makes the replacements in s, the longest old string
// first: a study UID is often a prefix of its series UID, and one UID may
// begin another.
func replaceLongestFirst(s string, rs []replacement) string {
	slices.SortStableFunc(rs, func(a, b replacement) int { return len(b.old) - len(a.old) })
	for _, r := range rs {
		s = strings.ReplaceAll(s, r.old, r.new)
	}
	return s
}

// redacted is an error whose message no longer names an object by its key.
type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }

// Format prints the redacted message for every verb, so %+v or %#v cannot
// reach the original.
func (e *redacted) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", e.msg)
		return
	}
	io.WriteString(f, e.msg) // fmt reports write errors itself
}

// IsRedacted reports whether err's message was produced by Redact.
func IsRedacted(err error) bool {
	var r *redacted
	return errors.As(err, &r)
}

// UIDs returns the UIDs inside an object key: every run of digits and
// dots with at least one dot between digits (the study, series and SOP
// Instance UIDs of incoming/<date>/<study>/<series>/<sop>.dcm and the keys
// derived from it), and every path component of digits alone (before its
// suffix, such as .dcm) at least minDotlessUID long: a UID of a single
// component is valid, and a sender chooses its UIDs. Date components are
// shorter and are left alone, and so are dotless UIDs as short: replaced
// wherever they occur, they would take numbers out of every message.
func UIDs(key string) []string {
	out := dottedUIDs(key)
	for part := range strings.SplitSeq(key, "/") {
		if i := strings.IndexByte(part, '.'); i >= 0 {
			part = part[:i]
		}
		if len(part) >= minDotlessUID && strings.Trim(part, "0123456789") == "" && !slices.Contains(out, part) {
			out = append(out, part)
		}
	}
	return out
}

// minDotlessUID is the shortest dotless UID UIDs finds: longer than a
// date's year.
const minDotlessUID = 5

func dottedUIDs(key string) []string {
	var out []string
	for i := 0; i < len(key); {
		if !isDigit(key[i]) {
			i++
			continue
		}
		j, end, dots := i, i, 0
		for j < len(key) && (isDigit(key[j]) || key[j] == '.') {
			if isDigit(key[j]) {
				end = j + 1
			} else if j+1 < len(key) && isDigit(key[j+1]) {
				dots++
			}
			j++
		}
		if dots > 0 {
			out = append(out, key[i:end])
		}
		i = j
	}
	return out
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// URL is how a log line or an error quotes a URL that may carry a secret
// (a webhook's token, a collector's credentials): without its user info,
// its query and its fragment. It cuts the text, so a URL that does not
// parse, or has no scheme, is cut as well. User info ends at the last "@"
// before the query: one past a "/" may end user info whose password holds
// a "/" (a base64 token, which url.Parse refuses, quoting it), so all
// before it is hidden, marked "(not shown)@". An "@" past a "?" or "#"
// cannot be placed (AmbiguousUserInfo): all but the scheme is hidden.
func URL(s string) string {
	if AmbiguousUserInfo(s) {
		scheme, _ := splitScheme(s)
		return scheme + "(not shown)"
	}
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	scheme, rest := splitScheme(s)
	at := strings.LastIndex(rest, "@")
	switch {
	case at < 0:
	case !strings.Contains(rest[:at], "/"):
		rest = rest[at+1:]
	default:
		rest = "(not shown)@" + rest[at+1:]
	}
	return scheme + rest
}

// AmbiguousUserInfo reports whether s has an "@" after a "?" or "#":
// user info holding one (a password "pa?ss", which url.Parse ends at the
// "?", taking "pa" for a port or the user for the host) cannot be told
// from a query or fragment holding an "@" ("?to=a@b"). Whichever it is,
// what the other reading would show is secret, so URL shows neither, and
// a setting taking such a URL refuses it (%40 writes an "@" in a query).
func AmbiguousUserInfo(s string) bool {
	q := strings.IndexAny(s, "?#")
	return q >= 0 && strings.Contains(s[q:], "@")
}

// isScheme reports whether s is a URL scheme (RFC 3986 §3.1): a "://"
// after anything else is within user info or a path.
func isScheme(s string) bool {
	for i, c := range []byte(s) {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !isDigit(c) && c != '+' && c != '-' && c != '.') {
			return false
		}
	}
	return true
}

// RedactURL is err with u, a URL its message quotes (url.Parse's errors
// and the HTTP client's do), told as URL tells it; err stays in the chain.
// A parse error's detail that quotes text URL does not show (an "invalid
// port" from a password) is not told either.
func RedactURL(err error, u string) error {
	return redactQuoted(err, u, URL)
}

// Origin is how a log line or an error quotes a URL whose path may hold a
// secret too, a webhook's (Slack's, Teams' and Discord's carry their token
// in it): its scheme and host as URL shows them, a path as "/…".
func Origin(s string) string {
	scheme, rest := splitScheme(URL(s))
	if i := strings.Index(rest, "/"); i >= 0 && i < len(rest)-1 {
		rest = rest[:i] + "/…"
	}
	return scheme + rest
}

// splitScheme splits off s's scheme with its "://" (none where s starts
// with no valid scheme) from the rest.
func splitScheme(s string) (scheme, rest string) {
	if i := strings.Index(s, "://"); i > 0 && isScheme(s[:i]) {
		return s[:i+3], s[i+3:]
	}
	return "", s
}

// RedactOrigin is RedactURL for a URL quoted by its Origin.
func RedactOrigin(err error, u string) error {
	return redactQuoted(err, u, Origin)
}

// redactQuoted returns err with u, where its message quotes it, as show
// quotes it, and without a parse error's detail quoting what show hides.
func redactQuoted(err error, u string, show func(string) string) error {
	if err == nil || u == "" {
		return err
	}
	shown := show(u)
	msg := strings.ReplaceAll(err.Error(), u, shown)
	var ue *url.Error
	if errors.As(err, &ue) && ue.Op == "parse" && ue.Err != nil {
		if detail := ue.Err.Error(); !quotesOnly(detail, shown) {
			msg = strings.ReplaceAll(msg, detail, "detail not shown")
		}
	}
	return &redacted{msg: msg, err: err}
}

// quotesOnly reports whether every quoted string in msg is part of shown.
func quotesOnly(msg, shown string) bool {
	for i := strings.IndexByte(msg, '"'); i >= 0; i = strings.IndexByte(msg, '"') {
		q, err := strconv.QuotedPrefix(msg[i:])
		if err != nil {
			return false
		}
		v, err := strconv.Unquote(q)
		if err != nil || !strings.Contains(shown, v) {
			return false
		}
		msg = msg[i+len(q):]
	}
	return true
}

// WithoutPath is err, reading the file a setting names, without the path:
// for a setting whose value may be the secret itself (a private key's text
// given where its file's path was wanted), which an *fs.PathError quotes
// ("open <the value>: file name too long"). err stays in the chain.
func WithoutPath(err error) error {
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path == "" {
		return err
	}
	return &redacted{msg: strings.ReplaceAll(err.Error(), pe.Path, "(the value given, not shown)"), err: err}
}
