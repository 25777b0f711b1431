package pipeline

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
)

// Finding codes.
const (
	CodeNotPart10           = "not-part10"
	CodeTruncated           = "truncated"
	CodeMalformed           = "malformed"
	CodeOverLimit           = "over-limit" // beyond the reader's limits (dataset.MaxDepth ...)
	CodePixelDataLength     = "pixel-data-length"
	CodeMissingMeta         = "missing-meta"
	CodeMetaMismatch        = "meta-mismatch"
	CodeMissingAttribute    = "missing-attribute" // type 1 absent or empty
	CodeMissingType2        = "missing-type2"     // type 2 absent
	CodeEmptyType2          = "empty-type2"       // type 2 present, empty
	CodeUIDSyntax           = "uid-syntax"
	CodeNotStorageClass     = "not-storage-class" // the SOP class stores nothing (Verification, ...)
	CodeVRViolation         = "vr-violation"      // an indexed value breaks its VR's length or repertoire
	CodeTransactionMismatch = "transaction-mismatch"
	CodeCharsetUnknown      = "charset-unknown"
	CodeCharsetMismatch     = "charset-mismatch"
	CodeBadDate             = "bad-date"
	CodeTagOrder            = "tag-order"
	CodeSourceAEMismatch    = "source-ae-mismatch"
	CodeUnknownProvenance   = "unknown-provenance" // no record of the C-STORE that brought it
	CodeConflict            = "conflicting-resend"
)

// inspection is everything validation and normalization learned from one
// object's header.
type inspection struct {
	info      ObjectInfo
	h         *header
	dec       *decoder
	findings  []Finding
	bytesRead int64
	instance  InstanceRecord
	partial   bool
	// dicomJSON is the header as DICOM JSON (PS3.18 F.2), bulk data
	// referenced by URI: check walks the whole header to find charset
	// mismatches, and the walk's result is the metadata sidecar.
	dicomJSON map[string]jsonAttr
}

func (in *inspection) add(code string, sev Severity, t uint32, format string, args ...any) {
	if in.partial && (code == CodeMissingAttribute || code == CodeMissingType2 || code == CodeMissingMeta) {
		return
	}
	f := Finding{Code: code, Severity: sev, Message: fmt.Sprintf(format, args...)}
	if t != 0 {
		f.Tag = tagString(t)
	}
	in.findings = append(in.findings, f)
}

// missingProvenance lists what md lacks of the SCP's record of a C-STORE:
// its association, when it was received and from which calling AE. An
// object without them in the incoming prefix was not stored by the SCP
// (or lost its metadata on a copy).
func missingProvenance(md map[string]string) []string {
	var missing []string
	for _, k := range []string{objectstore.MetaAssociationID, objectstore.MetaCallingAE, objectstore.MetaReceivedAt} {
		if md[k] == "" {
			missing = append(missing, k)
		}
	}
	if at := md[objectstore.MetaReceivedAt]; at != "" {
		if _, err := time.Parse(time.RFC3339Nano, at); err != nil {
			missing = append(missing, "a valid "+objectstore.MetaReceivedAt)
		}
	}
	return missing
}

func (in *inspection) valid() bool {
	for _, f := range in.findings {
		if f.Severity == SeverityError {
			return false
		}
	}
	return true
}

// inspect reads the header of the object at key and validates it. Only
// store failures are returned as errors; everything wrong with the object
// is a finding.
func (p *Pipeline) inspect(ctx context.Context, info ObjectInfo) (*inspection, error) {
	in := &inspection{info: info}
	src := newRangeSource(ctx, p.Objects, info)
	h, err := readHeader(src)
	in.bytesRead = src.Fetched()
	in.h = h
	if err != nil {
		switch {
		case errors.Is(err, part10.ErrNotPart10):
			in.add(CodeNotPart10, SeverityError, 0, "no DICM prefix at offset 128")
			return in, nil
		case errors.Is(err, dataset.ErrTruncated):
			in.add(CodeTruncated, SeverityError, 0, "object is %d bytes: %s", info.Size, readerText(err))
		case errors.Is(err, dataset.ErrLimit):
			in.add(CodeOverLimit, SeverityError, 0, "%s", readerText(err))
		case errors.Is(err, part10.ErrMalformedMeta), errors.Is(err, dataset.ErrMalformed):
			in.add(CodeMalformed, SeverityError, 0, "%s", readerText(err))
		default:
			return nil, err // the store failed: retry
		}
		if h == nil {
			return in, nil
		}
	}
	if h.PixelShort > 0 {
		in.add(CodeTruncated, SeverityError, h.PixelData.Tag, "value of %d bytes ends %d bytes past the end of the object", h.PixelData.Len, h.PixelShort)
	}
	in.check(err == nil, p.bulkURIs(info, h.Deflated))
	return in, nil
}

// readerText is a reader's error for a finding, without package prefixes.
func readerText(err error) string {
	s := err.Error()
	for _, p := range []string{"part10: ", "dataset: read: ", "dataset: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}

// check runs the attribute checks on a parsed header.
// complete is false when the header could not be read to its end: then
// absent attributes are not reported (the parse error says it all).
// bulkURI names where the DICOM JSON finds a bulk data value.
func (in *inspection) check(complete bool, bulkURI func(*dataElement) string) {
	h := in.h
	in.partial = !complete
	var order binary.ByteOrder = binary.LittleEndian
	if h.BigEndian {
		order = binary.BigEndian
	}
	csRaw := ""
	if e := h.Data.find(tagSpecificCharSet); e != nil {
		csRaw = string(e.Value)
	}
	cs := newCharset(csRaw)
	in.dec = &decoder{order: order, cs: cs, found: newTextFindings(), bulkURI: bulkURI, implicit: h.Implicit}
	in.dec.signed, _ = in.dec.signedPixels(&h.Data)
	in.dec.lutIn = in.dec.lutInput(&h.Data)
	d := in.dec

	if h.Unordered {
		// Read and kept as other toolkits do (PS3.5 §7.1 orders them; the
		// reader looks elements up by tag, DICOM JSON is keyed): a
		// warning for the sender's vendor. A repeat is malformed.
		in.add(CodeTagOrder, SeverityWarning, h.Misplaced, "elements not in ascending tag order: %s after %s", tagString(h.Misplaced), tagString(h.After))
	}
	unknown := map[string]bool{}
	in.unknownCharset(cs, unknown)

	// File meta.
	mClass := h.Meta.MediaStorageSOPClassUID
	mInst := h.Meta.MediaStorageSOPInstanceUID
	for _, m := range []struct {
		t uint32
		v string
	}{{tagMediaSOPClass, mClass}, {tagMediaSOPInstance, mInst}, {tagTransferSyntax, h.TransferSyntax}} {
		if m.v == "" {
			in.add(CodeMissingMeta, SeverityError, m.t, "file meta element missing or empty")
		}
	}

	// Type 1 identification attributes.
	uids := map[uint32]string{}
	for _, t := range []uint32{tagSOPClassUID, tagSOPInstanceUID, tagStudyInstanceUID, tagSeriesInstanceUID} {
		v := d.first(&h.Data, t)
		uids[t] = v
		if v == "" {
			in.add(CodeMissingAttribute, SeverityError, t, "type 1 attribute missing or empty")
			continue
		}
		if why := dicomuid.SyntaxError(v); why != "" {
			in.add(CodeUIDSyntax, SeverityError, t, "invalid UID: %s", why)
		}
	}
	for t, v := range map[uint32]string{tagMediaSOPClass: mClass, tagMediaSOPInstance: mInst, tagTransferSyntax: h.TransferSyntax} {
		if v != "" {
			if why := dicomuid.SyntaxError(v); why != "" {
				in.add(CodeUIDSyntax, SeverityError, t, "invalid UID: %s", why)
			}
		}
	}
	if c := uids[tagSOPClassUID]; c != "" && dicomuid.SyntaxError(c) == "" && !dicomuid.IsStorageSOPClass(c) {
		in.add(CodeNotStorageClass, SeverityError, tagSOPClassUID, "not a storage SOP class: the SCP accepts none such")
	}
	in.checkIndexedValues()
	if mClass != "" && uids[tagSOPClassUID] != "" && mClass != uids[tagSOPClassUID] {
		in.add(CodeMetaMismatch, SeverityError, tagSOPClassUID, "SOP Class UID differs from Media Storage SOP Class UID")
	}
	if mInst != "" && uids[tagSOPInstanceUID] != "" && mInst != uids[tagSOPInstanceUID] {
		in.add(CodeMetaMismatch, SeverityError, tagSOPInstanceUID, "SOP Instance UID differs from Media Storage SOP Instance UID")
	}
	modality := d.first(&h.Data, tagModality)
	if modality == "" {
		in.add(CodeMissingAttribute, SeverityError, tagModality, "type 1 attribute missing or empty")
	}
	for _, t := range []uint32{tagPatientID, tagStudyDate, tagPatientName} {
		e := h.Data.find(t)
		switch {
		case e == nil:
			in.add(CodeMissingType2, SeverityWarning, t, "type 2 attribute missing")
		case strings.Trim(string(e.Value), " \x00") == "":
			in.add(CodeEmptyType2, SeverityWarning, t, "type 2 attribute empty")
		}
	}
	studyDate := d.first(&h.Data, tagStudyDate)
	isoDate, ok := ISODate(studyDate)
	if studyDate != "" && !ok {
		in.add(CodeBadDate, SeverityWarning, tagStudyDate, "not a DA value")
	}
	studyTime := d.first(&h.Data, tagStudyTime)
	isoTime, ok := ISOTime(studyTime)
	if studyTime != "" && !ok {
		in.add(CodeBadDate, SeverityWarning, tagStudyTime, "not a TM value")
	}
	birth, _ := ISODate(d.first(&h.Data, tagPatientBirthDate))
	in.checkPixelData()

	// Consistency with the transaction the SCP recorded.
	md := in.info.Metadata
	for _, c := range []struct {
		key, got string
		t        uint32
	}{
		{objectstore.MetaSOPInstanceUID, uids[tagSOPInstanceUID], tagSOPInstanceUID},
		{objectstore.MetaSOPClassUID, uids[tagSOPClassUID], tagSOPClassUID},
		{objectstore.MetaTransferSyntaxUID, h.TransferSyntax, tagTransferSyntax},
	} {
		if want := md[c.key]; want != "" && c.got != "" && want != c.got {
			in.add(CodeTransactionMismatch, SeverityError, c.t, "differs from the C-STORE transaction (%s)", c.key)
		}
	}
	if ae, src := md[objectstore.MetaCallingAE], h.Meta.SenderAE(); ae != "" && src != "" && ae != src {
		// The sender the file names (part10.Meta.SenderAE): (0002,0017),
		// or in a file written before it (0002,0016).
		if h.Meta.SendingApplicationEntityTitle != "" {
			in.add(CodeSourceAEMismatch, SeverityWarning, tagSendingAE, "Sending AE Title differs from the calling AE")
		} else {
			in.add(CodeSourceAEMismatch, SeverityWarning, tagSourceAE, "Source AE Title differs from the calling AE")
		}
	}
	if missing := missingProvenance(md); len(missing) > 0 {
		if md[objectstore.MetaRecovered] == "true" {
			in.add(CodeUnknownProvenance, SeverityWarning, 0, "the SCP's record of its C-STORE was lost in a crash; rebuilt from the file without %s", strings.Join(missing, ", "))
		} else {
			in.add(CodeUnknownProvenance, SeverityWarning, 0, "no record of the C-STORE that brought it: metadata without %s", strings.Join(missing, ", "))
		}
	}

	// Walk the whole header once so every text value is decoded and
	// charset mismatches are found wherever they are.
	in.dicomJSON = d.toJSON(&h.Data)
	for _, ics := range d.found.itemSets {
		in.unknownCharset(ics, unknown)
	}
	bad := make([]unfitText, 0, len(d.found.unfit))
	sets := map[string]*charset{cs.name: cs}
	for u := range d.found.unfit {
		bad = append(bad, u)
	}
	for _, ics := range d.found.itemSets {
		sets[ics.name] = ics
	}
	sort.Slice(bad, func(i, j int) bool {
		return bad[i].tag < bad[j].tag || bad[i].tag == bad[j].tag && bad[i].cs < bad[j].cs
	})
	for _, u := range bad {
		in.add(CodeCharsetMismatch, SeverityWarning, u.tag, "text does not fit the declared character set %s", sets[u.cs].described())
	}

	in.instance = InstanceRecord{
		StudyInstanceUID:  uids[tagStudyInstanceUID],
		SeriesInstanceUID: uids[tagSeriesInstanceUID],
		SOPInstanceUID:    uids[tagSOPInstanceUID],
		SOPClassUID:       uids[tagSOPClassUID],
		TransferSyntaxUID: h.TransferSyntax,
		Modality:          modality,
		InstanceNumber:    d.first(&h.Data, tagInstanceNumber),
		SeriesNumber:      d.first(&h.Data, tagSeriesNumber),
		SeriesDescription: d.first(&h.Data, tagSeriesDescription),
		StudyDate:         isoDate,
		StudyTime:         isoTime,
		StudyDescription:  d.first(&h.Data, tagStudyDescription),
		AccessionNumber:   d.first(&h.Data, tagAccessionNumber),
		PatientID:         d.first(&h.Data, tagPatientID),
		PatientName:       IndexedPersonName(d.first(&h.Data, tagPatientName)),
		PatientBirthDate:  birth,
		PatientSex:        d.first(&h.Data, tagPatientSex),
	}
}

// unknownCharset reports the terms of a Specific Character Set, the data
// set's or an item's, that cannot be decoded, each once (reported holds
// those already reported).
func (in *inspection) unknownCharset(cs *charset, reported map[string]bool) {
	for _, t := range cs.unknown {
		if reported[t] {
			continue
		}
		reported[t] = true
		// A finding's message holds no value of the data set: a term is
		// named only when it has the form of a defined term, so a value of
		// another element written here by a faulty sender is not (a CS
		// value's repertoire, capitals, digits and spaces, is also many a
		// name's and patient ID's).
		if charsetTermForm(t) {
			in.add(CodeCharsetUnknown, SeverityError, tagSpecificCharSet, "unknown or unsupported character set %q", t)
		} else {
			in.add(CodeCharsetUnknown, SeverityError, tagSpecificCharSet, "unknown character set: the value is not in the form of a defined term (ISO_IR n, ISO 2022 IR n)")
		}
	}
}

// indexedValueRules are the VR limits (PS3.5 6.2) of the values the study
// index, the audit trail and the events carry: a value past them is kept as
// sent and indexed, with a warning, since a 3,000-character Patient ID or a
// Modality of "<b>" says the sender's data are not what they claim.
var indexedValueRules = []struct {
	tag      uint32
	vr       string
	maxChars int
	allowed  func(r rune) bool // nil: any character but backslash and controls
}{
	{tagPatientID, "LO", 64, nil},
	{tagAccessionNumber, "SH", 16, nil},
	{tagModality, "CS", 16, csChar},
	{tagStudyDescription, "LO", 64, nil},
	{tagSeriesDescription, "LO", 64, nil},
	{tagPatientName, "PN", 64, nil}, // per component group (PS3.5 6.2: 64 characters each)
}

// csChar reports whether r is in the repertoire of a Code String (PS3.5
// 6.2: upper case letters, digits, space and underscore).
func csChar(r rune) bool { return r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == ' ' || r == '_' }

// checkIndexedValues warns of indexed values that break their VR.
func (in *inspection) checkIndexedValues() {
	for _, r := range indexedValueRules {
		v := in.dec.first(&in.h.Data, r.tag)
		if v == "" {
			continue
		}
		parts := []string{v}
		if r.vr == "PN" {
			parts = strings.Split(v, "=")
		}
		for _, part := range parts {
			if n := utf8.RuneCountInString(part); n > r.maxChars {
				in.add(CodeVRViolation, SeverityWarning, r.tag, "%d characters; %s allows %d", n, r.vr, r.maxChars)
				break
			}
			bad := strings.IndexFunc(part, func(c rune) bool {
				if r.allowed != nil {
					return !r.allowed(c)
				}
				return c == '\\' && r.vr != "PN" || c < 0x20 && c != 0x1B
			})
			if bad >= 0 {
				in.add(CodeVRViolation, SeverityWarning, r.tag, "a character %s does not allow (%U)", r.vr, []rune(part[bad:])[0])
				break
			}
		}
	}
}
