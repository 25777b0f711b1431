package pipeline

// The content identity of an object, in one place: what tells an identical
// resend (the same content again: a duplicate) from a conflicting one
// (other content under the same SOP Instance UID). See docs/pipeline.md,
// "Duplicates".

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/part10"
)

// The name of the field that carries a content identity in audit and index
// records, in one place (the records' JSON tags are checked against it:
// TestContentIdentityFieldIsOneName). Records written before it was named
// for what it holds carry it under LegacyContentIdentityField, "sha256",
// which it has not been since the identity became a CRC-64/NVME: each
// reader takes either (ReadLegacyContentIdentity).
const (
	ContentIdentityField       = "contentIdentity"
	LegacyContentIdentityField = "sha256"
)

// Forms of a content identity. An identity is recorded in index rows, in
// audit records and their ids (ContentIdentityField) and in events (their
// sha256 field, a name kept for the v1 schemas' sake: an opaque string);
// its prefix says which form it is.
const (
	// DataSetIdentityPrefix is the identity of every Part 10 object the
	// pipeline reads now: the CRC-64/NVME of its data set, the bytes
	// after the File Meta Information, as 16 hex digits. The File Meta
	// Information is ours (written by the SCP, naming the sending AE and
	// our release), so two objects with the same data set are the same
	// content whatever their meta headers say.
	DataSetIdentityPrefix = "dataset-crc64nvme-"
	// wholeIdentityPrefix is the CRC-64/NVME of the whole stored file,
	// the identity of objects indexed before data set identities, of an
	// object whose File Meta Information cannot be read (not Part 10: it
	// has no data set to tell apart), and the one a rejected object's
	// records carry (recorded).
	wholeIdentityPrefix = "crc64nvme-"
	// etagIdentityPrefix is the ETag, for an object whose store reports
	// no CRC-64/NVME. A bare 64-hex-digit identity is the SHA-256 that
	// objects stored by earlier versions carry in their metadata.
	etagIdentityPrefix = "etag-"
)

// identity is a delivered object's content identity and what compares it
// with identities indexed in the older forms.
type identity struct {
	// ID is the identity recorded for the object (contentIdentity).
	ID string
	// Whole names the object's bytes in the form identities had before
	// data set identities: the SHA-256 in its metadata, or else its
	// whole-file CRC-64/NVME, or else its ETag. Equal to ID when the
	// object has no data set identity.
	Whole string
	// dataSet is the data set's CRC-64/NVME, when ID is one.
	dataSet uint64
	hasSet  bool
	// unformed is the sha256 metadata value of an object that carries one
	// in no earlier version's form (not 64 hex digits: an outside
	// writer's), lowercase, as builds before 2026-12-07 took it for the
	// object's identity and indexed and recorded it: it is no identity
	// now (wholeIdentity), but the same object delivered again finds what
	// was recorded under it (names).
	unformed string
}

// names reports whether an identity recorded for some content (an index
// row's, a record's) names d's very bytes in a form it has had: its
// identity now, its whole-file form (identity.Whole: indexed before data
// set identities), or the sha256 value it carries in no earlier version's
// form, which builds before 2026-12-07 took for its identity.
func (d identity) names(recorded string) bool {
	return recorded == d.ID || recorded == d.Whole || d.unformed != "" && recorded == d.unformed
}

// contentIdentity is the one rule that decides an object's content
// identity, from the store's report (info) and its File Meta
// Information's bytes as the header read found them (h):
//
//   - an object whose metadata carries a SHA-256 (stored by an earlier
//     version: 64 hex digits, wholeIdentity) keeps it: it was indexed
//     under it;
//   - else, with the whole file's CRC-64/NVME (S3's verified full-object
//     checksum, the file store's own in local mode) and a File Meta
//     Information read, the data set's CRC-64/NVME, derived from the
//     whole's, the object's size and the meta header's bytes
//     (objectstore.SuffixChecksum): no second pass over the data;
//   - else the whole file's: its CRC-64/NVME or else its ETag.
func (p *Pipeline) contentIdentity(ctx context.Context, info ObjectInfo, h *header) (identity, error) {
	wholeID, whole, ok := wholeIdentity(info)
	var unformed string
	if sha, formed := objectstore.LegacySHA256Value(info.Metadata); sha != "" && !formed {
		unformed = sha
	}
	if !ok || h == nil || h.MetaEnd <= 0 || h.MetaEnd > info.Size {
		return identity{ID: wholeID, Whole: wholeID, unformed: unformed}, nil
	}
	head := h.MetaHead
	if int64(len(head)) != h.MetaEnd {
		// A meta header larger than the header read's first range (not
		// one we write): read it again.
		var err error
		if head, err = p.readHead(ctx, info, h.MetaEnd); err != nil {
			return identity{}, err
		}
	}
	set := objectstore.SuffixChecksum(whole, head, info.Size)
	return identity{ID: dataSetID(set), Whole: wholeID, dataSet: set, hasSet: true, unformed: unformed}, nil
}

func dataSetID(crc uint64) string { return DataSetIdentityPrefix + fmt.Sprintf("%016x", crc) }

// wholeIdentity names the stored bytes info describes (identity.Whole):
// the SHA-256 its metadata carries (stored by an earlier version), else its
// whole file's CRC-64/NVME (crc, ok true), else its ETag. A sha256 value
// that is not 64 hex digits was written by no earlier version but by an
// outside writer (user metadata may hold 2 KB): it names nothing, and the
// object's own identity is taken. Taken as one, it made two objects
// carrying it one content, and a long one made keys longer than S3 and
// DynamoDB take (document names, the index row's sort key).
func wholeIdentity(info ObjectInfo) (id string, crc uint64, ok bool) {
	if sha := objectstore.LegacySHA256(info.Metadata); sha != "" {
		return sha, 0, false
	}
	if crc, ok = decodeCRC(info.ChecksumCRC64NVME); !ok {
		return etagIdentityPrefix + strings.Trim(info.ETag, `"`), 0, false
	}
	return wholeIdentityPrefix + fmt.Sprintf("%016x", crc), crc, true
}

// decodeCRC decodes a CRC-64/NVME as S3 reports it (base64 of 8 bytes).
func decodeCRC(b64 string) (uint64, bool) {
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

// readHead reads the first n bytes of the object info describes.
func (p *Pipeline) readHead(ctx context.Context, info ObjectInfo, n int64) ([]byte, error) {
	rc, err := openRange(ctx, p.Objects, info, 0, n)
	if err != nil {
		return nil, fmt.Errorf("pipeline: read the file meta information: %w", err)
	}
	defer rc.Close()
	head := make([]byte, n)
	if _, err := io.ReadFull(rc, head); err != nil {
		return nil, fmt.Errorf("pipeline: read the file meta information: %w", err)
	}
	return head, nil
}

// sameContent is the one comparison of a delivered object's identity (d)
// with one indexed (rec, its identity in rec.ContentIdentity, in whatever form was
// current when it was indexed): the same content when
//
//   - the identities are equal;
//   - the indexed one is in the older whole-file form of d's bytes (d.Whole:
//     the same bytes, indexed before data set identities, as on a
//     redelivery of an object indexed before the upgrade);
//   - the indexed one is a whole-file CRC-64/NVME and d has a data set
//     identity: compared in the data set form, which the indexed object's
//     whole CRC, size and meta header give (its HEAD and one ranged read
//     of its head, pinned as every read is; an indexed object no longer
//     stored, or whose key holds other bytes now, is not the same content).
//
// A SHA-256 or ETag indexed compares by bytes only: no data set identity
// can be derived from it.
func (p *Pipeline) sameContent(ctx context.Context, rec InstanceRecord, d identity) (bool, error) {
	switch {
	case d.names(rec.ContentIdentity):
		return true, nil
	case !d.hasSet || !strings.HasPrefix(rec.ContentIdentity, wholeIdentityPrefix):
		return false, nil
	}
	whole, err := strconv.ParseUint(strings.TrimPrefix(rec.ContentIdentity, wholeIdentityPrefix), 16, 64)
	if err != nil {
		return false, nil
	}
	// An indexed object no longer stored, or no Part 10 file, is not the
	// same content; any other failure is the store's, retried.
	failed := func(err error) (bool, error) {
		if errors.Is(err, ErrNotFound) || errors.Is(err, part10.ErrNotPart10) || errors.Is(err, part10.ErrMalformedMeta) {
			return false, nil
		}
		// The store's error names the indexed object's key, which is
		// not the one the caller redacts.
		return false, p.Names.Redact(fmt.Errorf("pipeline: read the object indexed: %w", err), rec.ObjectKey)
	}
	// The meta header read must be the indexed object's: the key's HEAD
	// gives the version its reads are pinned to (openRange), and a key
	// that holds other bytes now (overwritten: another size or whole-file
	// CRC) has none of its meta header to give. Unpinned, the meta header
	// of whatever the key held by then was combined with the indexed
	// object's CRC and size.
	indexed, err := p.Objects.Head(ctx, rec.ObjectKey)
	if err != nil {
		return failed(err)
	}
	indexed.Key = rec.ObjectKey
	if held, ok := decodeCRC(indexed.ChecksumCRC64NVME); indexed.Size != rec.Size || ok && held != whole {
		return false, nil
	}
	src := newRangeSource(ctx, p.Objects, indexed)
	_, head, err := readMeta(src)
	if head == nil && err == nil {
		head, err = p.readHead(ctx, indexed, src.Pos())
	}
	if err != nil {
		return failed(err)
	}
	return objectstore.SuffixChecksum(whole, head, rec.Size) == d.dataSet, nil
}

// recorded is the identity an object's records and event carry
// (transaction.ContentIdentity): a valid object's as the index holds its content
// (asIndexed); a rejected object's, which is not indexed and whose record
// and event ids name its key, its whole file's (identity.Whole), the form
// every identity had before data set identities, so a rejection recorded
// before the upgrade is found again on a redelivery after it.
//
// An object carrying a sha256 value in no earlier version's form
// (identity.unformed) was recorded under that value by builds before
// 2026-12-07: delivered again, it is found under it (a valid one in the
// index, asIndexed; a rejected one by its rejected record, which the audit
// trail holds by SOP Instance UID), so that its records and event are not
// written a second time under its new identity, nor the same content read
// as a conflict with itself.
func (p *Pipeline) recorded(ctx context.Context, in *inspection, d identity) (string, error) {
	if in.valid() {
		return p.asIndexed(ctx, in.instance.SOPInstanceUID, in.instance.StudyInstanceUID, d)
	}
	if d.unformed != "" {
		sop := firstNonEmpty(in.instance.SOPInstanceUID, in.info.Metadata[objectstore.MetaSOPInstanceUID])
		_, found, err := p.rejectedRecord(ctx, sop, rejectedRecordID(in.info.Key, d.unformed))
		if err != nil {
			return "", err
		}
		if found {
			return d.unformed, nil
		}
	}
	return d.Whole, nil
}

// asIndexed returns the identity under which the index holds the content
// of d in study (the instance's SOP Instance UID sop), or d.ID when it
// holds it under none: an object indexed in an older form and delivered
// again, or resent, is then a duplicate of that record, not a conflict, and
// its audit record and event ids are the first delivery's.
func (p *Pipeline) asIndexed(ctx context.Context, sop, study string, d identity) (string, error) {
	r, found, err := p.indexedContent(ctx, sop, study, d)
	if err != nil || !found {
		return d.ID, err
	}
	return r.ContentIdentity, nil
}

// indexedContent returns the index row that holds the content of d in
// study (the instance's SOP Instance UID sop), found false when none
// does: asIndexed's identity, and what accept learns of the documents
// its content has already (the row's).
func (p *Pipeline) indexedContent(ctx context.Context, sop, study string, d identity) (InstanceRecord, bool, error) {
	recs, err := p.Index.Instances(ctx, sop)
	if err != nil {
		return InstanceRecord{}, false, fmt.Errorf("pipeline: index: %w", err)
	}
	// The content under its own identity, or its very bytes under their
	// older one (a redelivery of an object indexed before the upgrade),
	// before any other content of the same data set: a redelivery of a
	// conflicting copy indexed before the upgrade is that copy again, not
	// a resend of the content it conflicted with.
	for _, r := range recs {
		if r.StudyInstanceUID == study && d.names(r.ContentIdentity) {
			return r, true, nil
		}
	}
	for _, r := range recs {
		if r.StudyInstanceUID != study {
			continue
		}
		same, err := p.sameContent(ctx, r, d)
		if err != nil {
			return InstanceRecord{}, false, err
		}
		if same {
			return r, true, nil
		}
	}
	return InstanceRecord{}, false, nil
}

// UnmarshalJSON reads an index record, one written before the content
// identity's field was named ContentIdentityField too.
func (r *InstanceRecord) UnmarshalJSON(b []byte) error {
	type plain InstanceRecord
	if err := json.Unmarshal(b, (*plain)(r)); err != nil {
		return err
	}
	return readLegacyJSON(b, &r.ContentIdentity)
}

// UnmarshalJSON reads an audit record, one written before the content
// identity's field was named ContentIdentityField too, or before its
// answer was recorded (ReadAnswered).
func (r *AuditRecord) UnmarshalJSON(b []byte) error {
	type plain AuditRecord
	if err := json.Unmarshal(b, (*plain)(r)); err != nil {
		return err
	}
	r.ReadAnswered()
	return readLegacyJSON(b, &r.ContentIdentity)
}

// readLegacyJSON sets *id, when the record b was read into has none, to
// the one it carries under LegacyContentIdentityField, if any.
func readLegacyJSON(b []byte, id *string) error {
	if *id != "" {
		return nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return err
	}
	legacy, ok := fields[LegacyContentIdentityField]
	if !ok {
		return nil
	}
	return json.Unmarshal(legacy, id)
}

// ReadLegacyContentIdentity is what a reader of records in another form
// than JSON (a DynamoDB item) does for one written before
// ContentIdentityField: id, the identity read under the new name, or else
// legacy(LegacyContentIdentityField).
func ReadLegacyContentIdentity(id string, legacy func(field string) string) string {
	if id != "" {
		return id
	}
	return legacy(LegacyContentIdentityField)
}
