package portal

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// params reads a request's query parameters, every page and API alike,
// each kind through one rule: a value that is malformed or out of range
// is the request's fault (a 400, on a page with its message), named by
// the parameter and what it accepts; an absent or empty one is no filter
// (the default); a parameter no route reads is ignored. The first fault
// is kept: err returns it once every parameter has been read.
type params struct {
	v     url.Values
	fault error
}

func newParams(v url.Values) *params { return &params{v: v} }

// err is the first bad parameter's fault, nil when every one was good.
func (p *params) err() error { return p.fault }

// refuse records that name accepts what it says, not the value given.
func (p *params) refuse(name, accepts string) {
	if p.fault == nil {
		p.fault = badRequest{fmt.Errorf("portal: %s is %s", name, accepts)}
	}
}

// text is name's value, trimmed: any text is good.
func (p *params) text(name string) string { return strings.TrimSpace(p.raw(name)) }

// raw is name's value as given (a text to look for, a cursor), the one
// place a value is read: a parameter given more than once is refused, as
// each takes one value; url.Values.Get took the first and dropped the rest
// unsaid, so type=Study+Received&type=Study+Updated listed no Study Updated.
func (p *params) raw(name string) string {
	if len(p.v[name]) > 1 {
		p.refuse(name, "one value, given once")
	}
	return p.v.Get(name)
}

// oneOf is name's value, which must be one of choices.
func (p *params) oneOf(name string, choices []string) string {
	s := p.text(name)
	if s != "" && !slices.Contains(choices, s) {
		p.refuse(name, localstore.OneOf(choices))
	}
	return s
}

// someOf is name's values, a comma-separated list of choices (given
// once, as every parameter): type=Study Received,Study Updated. Empty
// items are skipped; an item that is not one of choices is refused,
// named, so that a misspelt one is not a filter that finds nothing.
func (p *params) someOf(name string, choices []string) []string {
	var out []string
	for item := range strings.SplitSeq(p.raw(name), ",") {
		item = strings.TrimSpace(item)
		switch {
		case item == "" || slices.Contains(out, item):
		case !slices.Contains(choices, item):
			p.refuse(name, fmt.Sprintf("one or more of %s, comma-separated: %q is not one", localstore.OneOf(choices), localstore.Clipped(item)))
			return nil
		default:
			out = append(out, item)
		}
	}
	return out
}

// limit is the number of rows a page asks for: 0 or none is the page's
// default, and a number past the page's largest gets the largest (the
// store caps it), even one past what an int holds.
func (p *params) limit() int {
	const name = "limit"
	s := p.text(name)
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(s, "-") {
		return int(^uint(0) >> 1)
	}
	if err != nil || n < 0 {
		p.refuse(name, "a number of rows, 0 or more")
		return 0
	}
	return n
}

// eventSeq is an event's seq (after), as a tail's last event or its
// page's next gives it, or 0, before the first event; given says that
// the parameter was, and good. It is a position, no cursor: any filter
// goes on from it.
func (p *params) eventSeq(name string) (n int64, given bool) {
	s := p.text(name)
	if s == "" {
		return 0, false
	}
	n, err := localstore.ParseEventSeq(s, true)
	if err != nil {
		p.refuse(name, "an event's seq, as the next value of a page gives it, or 0 for the first event on")
		return 0, false
	}
	return n, true
}

// time is a time bound: RFC 3339, yyyy-mm-ddThh:mm[:ss] (an HTML
// datetime-local input, taken as UTC) or yyyy-mm-dd, which as an upper
// bound (end) means the day's end.
func (p *params) time(name string, end bool) time.Time {
	s := p.text(name)
	if s == "" {
		return time.Time{}
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		p.refuse(name, "a time: RFC 3339 or yyyy-mm-dd")
		return time.Time{}
	}
	if end {
		t = t.Add(24*time.Hour - time.Nanosecond)
	}
	return t
}

// day is a day, yyyy-mm-dd, as given.
func (p *params) day(name string) string {
	s := p.text(name)
	if _, err := time.Parse(time.DateOnly, s); s != "" && err != nil {
		p.refuse(name, "a date, yyyy-mm-dd")
	}
	return s
}

// studyDate is a study date bound, yyyy-mm-dd or yyyymmdd, as a DICOM DA
// value (yyyymmdd).
func (p *params) studyDate(name string) string {
	s := strings.ReplaceAll(p.text(name), "-", "")
	if _, err := time.Parse("20060102", s); s != "" && (len(s) != 8 || err != nil) {
		p.refuse(name, "a study date, yyyy-mm-dd or yyyymmdd")
		return ""
	}
	return s
}

// cursorFault is what a page's cursor the store refuses
// (pipeline.ErrBadCursor: not one it handed out, one of another query,
// one altered) tells, naming the parameter that took it: cursor, or the
// events' before. Every store opens its cursors by one rule
// (pipeline.CursorScope), and the portal reads them as given (raw).
func cursorFault(name string) string {
	return "portal: " + name + " is the next value of a previous page of the same query (its filters unchanged), as the portal handed it out"
}

// cursorRefused is err, the answer to a query whose cursor parameter was
// name, with the store's refusal of the cursor (pipeline.ErrBadCursor) as
// the request's fault naming name.
func cursorRefused(err error, name string) error {
	if errors.Is(err, pipeline.ErrBadCursor) {
		return badRequest{errors.New(cursorFault(name))}
	}
	return err
}

// The query parameters of a DICOM JSON's bulk data URI
// (<objectUri>?offset=<o>&length=<n>&bytes=<id>, or offset alone for an
// encapsulated value, pipeline.bulkURIs).
const (
	offsetParam = "offset"
	lengthParam = "length"
	bulkParams  = offsetParam + ", " + lengthParam + " and " + pipeline.BulkDataBytesParam
)

// maxBytesName bounds bytes: pipeline.BytesName's longest forms are
// sha256-<64 hex> and an ETag's (S3's are at most a digest and a part
// count).
const maxBytesName = 128

// bulkRange is what a DICOM JSON's bulk data URI asks of the object it
// names: a value's bytes, offset and length, or offset alone for an
// encapsulated value (its items up to its Sequence Delimitation Item,
// dataset.EncapsulatedLength), and the bytes of the whole object the
// document describes (bytes, the pipeline.BytesName its name carries),
// each checked against the object's Head before anything of it is read
// (check).
type bulkRange struct {
	at     bool // offset given: a value asked, not the whole object
	offset int64
	length int64 // -1 with at: the encapsulated value at offset
	bytes  string
}

// given says whether the query asks any of it.
func (b bulkRange) given() bool { return b.at || b.bytes != "" }

// ranged says whether the query names a value, not the whole object.
func (b bulkRange) ranged() bool { return b.at }

// encapsulated says whether the value is the encapsulated value at offset,
// whose length its items tell.
func (b bulkRange) encapsulated() bool { return b.at && b.length < 0 }

// bulkRange reads offset, length and bytes: offset a whole number, 0 or
// more, with length, another, or alone; bytes an id of the form
// pipeline.BytesName gives.
func (p *params) bulkRange() bulkRange {
	b := bulkRange{length: -1}
	offset, hasOffset := p.byteCount(offsetParam, "a byte offset in the object, a whole number of 0 or more (with "+lengthParam+", a value's bytes; alone, the encapsulated value that starts there)")
	length, hasLength := p.byteCount(lengthParam, "a number of bytes, a whole number of 0 or more, given with "+offsetParam)
	switch {
	case hasOffset:
		b.at, b.offset = true, offset
		// length=4294967295 is the undefined-length marker that documents
		// written before pipeline.bulkURIs named such a value by its offset
		// alone carry, never a value's length (values have even lengths):
		// read as offset alone.
		if hasLength && length != dataset.UndefinedLength {
			b.length = length
		}
	case hasLength:
		p.refuse(offsetParam, "a byte offset in the object, a whole number of 0 or more, given with "+lengthParam)
	}
	b.bytes = p.text(pipeline.BulkDataBytesParam)
	if !bytesNameForm(b.bytes) {
		p.refuse(pipeline.BulkDataBytesParam, "the id of the object's bytes its DICOM JSON's bulk data URIs name (crc64nvme-<16 hex digits>, sha256-<64>, etag-<ETag>)")
		b.bytes = ""
	}
	return b
}

// byteCount is name's value, a whole number of 0 or more that an int64
// holds; given says it was, and good.
func (p *params) byteCount(name, accepts string) (n int64, given bool) {
	s := p.text(name)
	if s == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || strings.HasPrefix(s, "+") {
		p.refuse(name, accepts)
		return 0, false
	}
	return n, true
}

// bytesNameForm says whether s, if given, has the form of
// pipeline.BytesName (pipeline.IsBytesNameForm), bounded.
func bytesNameForm(s string) bool {
	return len(s) <= maxBytesName && pipeline.IsBytesNameForm(s)
}

// staleBytes is a bulk data URI's bytes that the object's key no longer
// holds (or never held: a URI of another data directory): a 412, since
// the URI's condition failed, and nothing of the object is served.
type staleBytes struct{ error }

// check checks b against the object info describes: bytes names its
// content (pipeline.BytesName, the one rule that names it), and the range
// ends within it.
func (b bulkRange) check(info pipeline.ObjectInfo) error {
	if b.bytes != "" && b.bytes != pipeline.BytesName(info) {
		return staleBytes{errors.New("portal: " + pipeline.BulkDataBytesParam + " names other bytes than the object holds: the URI describes another content (of another data directory, or of the key before it was written again); read the object's current DICOM JSON")}
	}
	switch {
	case !b.ranged():
	case b.offset > info.Size:
		return badRequest{fmt.Errorf("portal: %s is a byte offset within the object, at most its size, %d", offsetParam, info.Size)}
	case b.encapsulated(): // its items say where it ends (encapsulatedLength)
	case b.length > info.Size-b.offset:
		return badRequest{fmt.Errorf("portal: %s is a number of bytes that ends within the object: at most %d from offset %d", lengthParam, info.Size-b.offset, b.offset)}
	}
	return nil
}
