package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dataset"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/panicvalue"
)

// Object layout (see docs/pipeline.md, "S3 layout").
const (
	IncomingPrefix   = objectstore.IncomingPrefix
	AuditPrefix      = objectstore.AuditPrefix
	QuarantinePrefix = objectstore.QuarantinePrefix
	MetadataPrefix   = objectstore.MetadataPrefix
)

// ObjectResult reports what ProcessObject did with one object.
type ObjectResult struct {
	Key       string
	Skipped   bool          // not an incoming object (wrong prefix, sidecar ...)
	Valid     bool          // passed validation
	Outcome   UpsertOutcome // index outcome for valid objects
	Findings  []Finding
	BytesRead int64 // bytes read from the object store
	// QuarantineKey is set for invalid objects.
	QuarantineKey string
}

// SplitKey splits key into the store root (a store prefix such as "site-a/",
// possibly empty), the section (IncomingPrefix, AuditPrefix, ...) and the
// rest. ok is false when key is in none of the sections.
func SplitKey(key string) (root, section, rest string, ok bool) {
	best := -1
	for _, sec := range []string{IncomingPrefix, AuditPrefix, QuarantinePrefix, MetadataPrefix, CommitmentPrefix} {
		i := -1
		if strings.HasPrefix(key, sec) {
			i = 0
		} else if j := strings.Index(key, "/"+sec); j >= 0 {
			i = j + 1
		}
		if i >= 0 && (best < 0 || i < best) {
			best, section = i, sec
		}
	}
	if best < 0 {
		return "", "", "", false
	}
	return key[:best], section, key[best+len(section):], true
}

// MetadataKeys returns where the sidecars of the incoming object info
// describes (its Key, and the bytes it holds) go: the DICOM JSON (PS3.18
// F.2) document and the normalized summary, under the same store root,
// named as documentBase says. Each content stored under a key keeps its
// own documents: named after the key alone, a key overwritten with other
// content (any caller that may s3:PutObject can) had the second content's
// documents written over the first's, which its index row and its event
// still named. Documents written before are not renamed: rows and events
// name them where they are. See docs/pipeline.md, "S3 layout".
func MetadataKeys(info ObjectInfo) (dicomJSON, summary string) {
	dicomJSON = documentBase(info, MetadataPrefix) + ".json"
	return dicomJSON, SummaryKeyOf(dicomJSON)
}

// SummaryKeyOf is the summary beside the DICOM JSON document at dicomJSON,
// in either naming (after the key and the bytes' identity, or after the key
// alone as before 2026-12-07): where an index row's summary is, the row
// naming its DICOM JSON (MetadataKey).
func SummaryKeyOf(dicomJSON string) string {
	return strings.TrimSuffix(dicomJSON, ".json") + ".summary.json"
}

// QuarantineKeys returns where the invalid incoming object info describes
// is copied and where its findings document goes, under the same store
// root, named as its metadata documents would be (documentBase): a key
// holding an invalid object overwritten with another invalid one keeps
// each content's copy and findings, which its Instance Rejected and audit
// record name. Copies made before were named after the key alone
// (LegacyQuarantineKeys); they are not renamed.
func QuarantineKeys(info ObjectInfo) (object, findings string) {
	object = documentBase(info, QuarantinePrefix) + ".dcm"
	return object, QuarantineFindingsKey(object)
}

// LegacyQuarantineKeys are QuarantineKeys as builds before 2026-12-07
// named them, after the object key alone: where a rejected record that
// names no quarantineKey (written before records named it) finds its
// copy and findings.
func LegacyQuarantineKeys(objectKey string) (object, findings string) {
	root, _, rest, _ := SplitKey(objectKey)
	object = root + QuarantinePrefix + rest
	return object, QuarantineFindingsKey(object)
}

// QuarantineFindingsKey is the findings document beside the quarantine
// copy at object, in either naming.
func QuarantineFindingsKey(object string) string {
	return strings.TrimSuffix(object, ".dcm") + ".findings.json"
}

// Quarantined returns where a rejected object's record (or that of a
// resend of one) finds the quarantined copy and its findings: the copy
// the record names, or in a record written before records named it, the
// copy named after its object key. Empty for a record of neither.
func (r AuditRecord) Quarantined() (object, findings string) {
	switch {
	case r.QuarantineKey != "":
		return r.QuarantineKey, QuarantineFindingsKey(r.QuarantineKey)
	case r.Outcome == OutcomeRejected && r.ObjectKey != "":
		return LegacyQuarantineKeys(r.ObjectKey)
	}
	return "", ""
}

// documentBase is the one naming rule of what the pipeline writes about
// the incoming object info describes, under section (MetadataPrefix,
// QuarantinePrefix) of the same store root: the object's key below its
// section, .dcm dropped, then "." and its bytes' identity (identity.Whole:
// crc64nvme-<16 hex> for every object stored now, sha256-<64 hex> for one
// stored by a version that wrote SHA-256s, etag-<etag> else), so each
// content stored under a key is named apart, and a redelivery of the same
// object names the same. (A sha256 metadata value other than 64 hex
// digits, an outside writer's, names nothing: wholeIdentity.)
func documentBase(info ObjectInfo, section string) string {
	root, _, rest, _ := SplitKey(info.Key)
	return root + section + strings.TrimSuffix(rest, ".dcm") + "." + BytesName(info)
}

// BytesName names the bytes of the object info describes, as the names of
// its documents (documentBase) and its DICOM JSON's bulk data URIs
// (BulkDataBytesParam) do: crc64nvme-<16 hex> for every object stored now,
// sha256-<64 hex> for one stored by a version that wrote SHA-256s,
// etag-<etag> else, one key-safe path component. A reader checks that the
// object a bulk data URI names still holds those bytes by comparing it with
// BytesName of the object's HEAD (in S3, HeadObject with ChecksumMode
// ENABLED).
func BytesName(info ObjectInfo) string {
	id, _, _ := wholeIdentity(info)
	if !strings.HasPrefix(id, wholeIdentityPrefix) && !strings.HasPrefix(id, etagIdentityPrefix) {
		// The bare SHA-256 of an object stored by an earlier version,
		// named as the other forms are, so that the SOP Instance UID
		// before it ends where a letter begins (logname.UIDs).
		id = "sha256-" + id
	}
	// Key-safe whatever an ETag holds: one path component of the
	// characters every key of the layout is made of.
	return strings.Map(func(r rune) rune {
		if bytesNameRune(r) {
			return r
		}
		return bytesNameStandIn
	}, id)
}

// bytesNameStandIn stands in a BytesName for a character of the identity
// that no key of the layout is made of (bytesNameRune).
const bytesNameStandIn = '_'

// bytesNameRune says whether r is kept as it is in a BytesName.
func bytesNameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-'
}

// IsBytesNameForm says whether s has the form BytesName gives (its
// characters, those it keeps and its stand-in), as a reader of a bulk data
// URI's BulkDataBytesParam checks it before comparing.
func IsBytesNameForm(s string) bool {
	for _, r := range s {
		if !bytesNameRune(r) && r != bytesNameStandIn {
			return false
		}
	}
	return true
}

func (p *Pipeline) log() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

func (p *Pipeline) now() time.Time {
	if p.Now == nil {
		return time.Now().UTC()
	}
	return p.Now().UTC()
}

func (p *Pipeline) sourceID() string {
	if p.AuditSourceID == "" {
		return "dicom-ingest"
	}
	return p.AuditSourceID
}

func (p *Pipeline) uri(key string) string {
	switch {
	case p.BucketName != "":
		return "s3://" + p.BucketName + "/" + key
	case p.ObjectURLBase != "":
		return p.ObjectURLBase + key
	}
	return key
}

// resource names the object at key in an event's resources, the one
// place that does. EventBridge defines a PutEvents entry's Resources as
// "Amazon Web Services resources, identified by Amazon Resource Name (ARN),
// which the event primarily concerns"
// (https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEventsRequestEntry.html,
// and types.PutEventsRequestEntry in the SDK): in AWS it is the object's
// ARN, arn:<partition>:s3:::<bucket>/<key>, the bucket's ARN with the key,
// so the partition is the stack's in aws-cn and aws-us-gov too. Local mode
// has no ARN: there it is the object's URI, as in the detail (the portal's
// /objects/<key>). In both modes a resource is a base that names the
// store, then the key.
func (p *Pipeline) resource(key string) string {
	if p.BucketARN != "" {
		return p.BucketARN + "/" + key
	}
	return p.uri(key)
}

// transaction is what the SCP recorded about the C-STORE in metadata,
// with the object's content identity (ContentIdentity: contentIdentity's, in the
// form its records carry once recorded has looked).
type transaction struct {
	CallingAE, CalledAE, PeerAddr, AssociationID string
	ReceivedAt                                   time.Time
	ContentIdentity, SOPClassUID, SOPInstanceUID string
}

func transactionOf(info ObjectInfo, id identity) transaction {
	md := info.Metadata
	t := transaction{
		CallingAE: md[objectstore.MetaCallingAE], CalledAE: md[objectstore.MetaCalledAE], PeerAddr: md[objectstore.MetaPeerAddr],
		AssociationID: md[objectstore.MetaAssociationID], ContentIdentity: id.ID,
		SOPClassUID: md[objectstore.MetaSOPClassUID], SOPInstanceUID: md[objectstore.MetaSOPInstanceUID],
	}
	if at, err := time.Parse(time.RFC3339Nano, md[objectstore.MetaReceivedAt]); err == nil {
		t.ReceivedAt = at.UTC()
	} else {
		t.ReceivedAt = info.LastModified.UTC()
	}
	return t
}

// ProcessObject validates, normalizes, indexes, audits and announces the
// object stored at key (under incoming/). It is idempotent: processing the
// same key again changes nothing and publishes nothing new. An error means
// the caller should retry later (the message goes back to the queue).
func (p *Pipeline) ProcessObject(ctx context.Context, key string) (ObjectResult, error) {
	res, err := p.processObject(ctx, key)
	if err != nil {
		// Name the object in every error, so that a caller's log line
		// (the function's "message failed") says which object failed even
		// when the cause (a DynamoDB throttle) does not mention its key.
		err = fmt.Errorf("pipeline: object %v: %w", p.Names.Key(key), err)
	}
	return res, p.Names.Redact(err, key)
}

func (p *Pipeline) processObject(ctx context.Context, key string) (ObjectResult, error) {
	res := ObjectResult{Key: key}
	if _, sec, _, ok := SplitKey(key); !ok || sec != IncomingPrefix || !strings.HasSuffix(key, ".dcm") {
		res.Skipped = true
		return res, nil
	}
	info, err := p.Objects.Head(ctx, key)
	if err != nil {
		return res, fmt.Errorf("pipeline: head %s: %w", key, err)
	}
	info.Key = key
	in, err := p.inspect(ctx, info)
	if err != nil {
		return res, fmt.Errorf("pipeline: read %s: %w", key, err)
	}
	res.BytesRead, res.Findings, res.Valid = in.bytesRead, in.findings, in.valid()
	id, err := p.contentIdentity(ctx, info, in.h)
	if err != nil {
		return res, err
	}
	tx := transactionOf(info, id)
	// The object's attributes go with each line rather than into a
	// logger made for the object: With formats them at once, for every
	// object, also at a level that writes no line.
	about := func(more ...any) []any {
		return append([]any{"object", p.Names.Key(key), "association", tx.AssociationID, "callingAE", tx.CallingAE}, more...)
	}
	if !res.Valid {
		if tx.ContentIdentity, err = p.recorded(ctx, in, id); err != nil {
			return res, err
		}
		res.QuarantineKey, err = p.reject(ctx, in, tx)
		p.log().Info("object rejected", about("findings", len(in.findings), "bytesRead", in.bytesRead)...)
		return res, err
	}
	res.Outcome, err = p.accept(ctx, in, tx, id)
	if err == nil {
		p.log().Info("object stored", about("outcome", res.Outcome.String(), "bytesRead", in.bytesRead)...)
	}
	return res, err
}

// reject quarantines, audits and announces an invalid object.
func (p *Pipeline) reject(ctx context.Context, in *inspection, tx transaction) (string, error) {
	key := in.info.Key
	qKey, fKey := QuarantineKeys(in.info)
	doc := map[string]any{
		"schemaVersion":      1,
		"objectKey":          key,
		"quarantineKey":      qKey,
		"size":               in.info.Size,
		ContentIdentityField: tx.ContentIdentity,
		"receivedAt":         tx.ReceivedAt,
		"callingAe":          tx.CallingAE,
		"calledAe":           tx.CalledAE,
		"associationId":      tx.AssociationID,
		"sopInstanceUid":     tx.SOPInstanceUID,
		"sopClassUid":        tx.SOPClassUID,
		"findings":           in.findings,
	}
	body, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return qKey, fmt.Errorf("pipeline: marshal findings: %w", err)
	}
	// The copy first, pinned to the version read, then the findings: a
	// copy refused because the object changed since (ErrObjectChanged)
	// leaves no findings document describing content quarantine/ does not
	// hold. Written before, the old version's findings stayed there with
	// no copy beside them, or beside the copy of an earlier quarantine.
	if err := p.Writer.Copy(ctx, in.info, qKey, map[string]string{"quarantined": "true", "findings-key": fKey}); err != nil {
		return qKey, fmt.Errorf("pipeline: quarantine copy: %w", err)
	}
	if err := p.Writer.Put(ctx, fKey, body, "application/json", nil); err != nil {
		return qKey, fmt.Errorf("pipeline: put findings: %w", err)
	}
	// Noted in its study before the audit record and the event, so that
	// a study announced after either counts it (rejectedCount).
	if r := (RejectedInstance{StudyInstanceUID: in.instance.StudyInstanceUID, SOPInstanceUID: firstNonEmpty(in.instance.SOPInstanceUID, tx.SOPInstanceUID)}); r.Valid() {
		if err := p.Index.RecordRejected(ctx, r); err != nil {
			return qKey, fmt.Errorf("pipeline: record rejected instance: %w", err)
		}
	}
	rec := p.instanceAudit(in, tx, OutcomeRejected)
	rec.ObjectKey = key
	if _, err := p.Audit.Append(ctx, rec); err != nil {
		return qKey, fmt.Errorf("pipeline: audit: %w", err)
	}
	detail := InstanceRejectedDetail{
		SchemaVersion: 1, ObjectKey: key, ObjectURI: p.uri(key), QuarantineKey: qKey, QuarantineURI: p.uri(qKey),
		FindingsKey: fKey, FindingsURI: p.uri(fKey), SOPInstanceUID: tx.SOPInstanceUID, SOPClassUID: tx.SOPClassUID,
		StudyInstanceUID: in.instance.StudyInstanceUID, SeriesInstanceUID: in.instance.SeriesInstanceUID,
		CallingAE: tx.CallingAE, CalledAE: tx.CalledAE, AssociationID: tx.AssociationID,
		ReceivedAt: tx.ReceivedAt, Size: in.info.Size, SHA256: tx.ContentIdentity, Findings: in.findings,
	}
	id := eventID(DetailTypeInstanceRejected, key, tx.ContentIdentity)
	detail.EventID = id
	return qKey, p.publishOnce(ctx, id, DetailTypeInstanceRejected, detail, []string{p.resource(key)})
}

// accept writes sidecars, indexes, audits and announces a valid object.
//
// The documents are written for a content the index does not hold yet,
// before its row (which names them) and its event: a content held already
// (a redelivery, an identical resend under another key, an object indexed
// before documents were named after their bytes and delivered again) writes
// none, its row's are its documents (named where they were written, the
// row's MetadataKey and the summary beside it). Written anyway, a resend's
// were documents no row, record or event named, and a redelivery of an
// object indexed before 2026-12-07 wrote documents under the new names
// while its row named the old ones.
func (p *Pipeline) accept(ctx context.Context, in *inspection, tx transaction, id identity) (UpsertOutcome, error) {
	key := in.info.Key
	jsonKey, summaryKey := MetadataKeys(in.info)
	objURI := p.uri(key)
	dj := in.dicomJSON
	if in.h.PixelData != nil {
		dj[tagKey(in.h.PixelData.Tag)] = jsonAttr{VR: pixelVR(in.h), BulkDataURI: in.dec.bulkURI(in.h.PixelData)}
	}
	// Built before the index is read: in local mode that read is the
	// unit's first statement, which takes the database's one writer
	// (localstore.Tx), and the work before it must not hold the writer.
	body, err := json.Marshal(dj)
	if err != nil {
		return 0, fmt.Errorf("pipeline: marshal DICOM JSON: %w", err)
	}
	// The content as indexed: its identity (an older form's, for an
	// object indexed before the upgrade) and, when held, its documents.
	held, isHeld, err := p.indexedContent(ctx, in.instance.SOPInstanceUID, in.instance.StudyInstanceUID, id)
	if err != nil {
		return 0, err
	}
	tx.ContentIdentity = id.ID
	writeDocuments := !isHeld || held.MetadataKey == ""
	if isHeld {
		tx.ContentIdentity = held.ContentIdentity
		if !writeDocuments {
			jsonKey, summaryKey = held.MetadataKey, SummaryKeyOf(held.MetadataKey)
		}
	}
	if writeDocuments {
		if err := p.Writer.Put(ctx, jsonKey, body, "application/dicom+json", nil); err != nil {
			return 0, fmt.Errorf("pipeline: put metadata: %w", err)
		}
	}
	inst := in.instance
	inst.ObjectKey, inst.MetadataKey, inst.Size, inst.ContentIdentity = key, jsonKey, in.info.Size, tx.ContentIdentity
	inst.CallingAE, inst.ReceivedAt = tx.CallingAE, tx.ReceivedAt
	inst.Findings = in.findings
	if writeDocuments {
		sum := p.summary(in, inst)
		if body, err = json.MarshalIndent(sum, "", "  "); err != nil {
			return 0, fmt.Errorf("pipeline: marshal summary: %w", err)
		}
		if err := p.Writer.Put(ctx, summaryKey, body, "application/json", nil); err != nil {
			return 0, fmt.Errorf("pipeline: put summary: %w", err)
		}
	}

	// IndexedAt counts as study activity: an instance that waited in a
	// backed-up validate queue must still hold its study's announcement
	// back for a full quiet period.
	inst.IndexedAt = p.now()
	up, err := p.Index.UpsertInstance(ctx, inst)
	if err != nil {
		return 0, fmt.Errorf("pipeline: index: %w", err)
	}
	// The record as indexed: the index's verdict on conflict and its
	// findings (patient-mismatch), the same on a redelivery. The index
	// alone decides a conflict, by content identity: an object the store
	// put under a conflict key (other bytes than the object its key held
	// that day) whose data set is the held one's is an identical resend
	// (Resent), and one whose data set differs is a conflict of the
	// index's, in whichever order the two are processed.
	indexed := up.Instance
	conflict := indexed.Conflict
	outcome := OutcomeStored
	switch {
	case up.Outcome == InstanceDuplicate && Resent(indexed, inst):
		// Another transfer of content the archive held already: audited
		// as such, announced by nothing (its content's event is the
		// counted transfer's).
		outcome = OutcomeDuplicate
	case conflict:
		outcome = OutcomeConflict
	}
	rec := p.instanceAudit(in, tx, outcome)
	rec.ObjectKey = key
	switch outcome {
	case OutcomeDuplicate:
		rec.ID = "duplicate:" + key + ":" + tx.ContentIdentity
		rec.Reason = resentReason
		rec.HeldObjectKey, rec.HeldContentIdentity = indexed.ObjectKey, indexed.ContentIdentity
	case OutcomeConflict:
		held, err := p.heldContent(ctx, indexed)
		if err != nil {
			return up.Outcome, err
		}
		rec.HeldObjectKey, rec.HeldContentIdentity = held.ObjectKey, held.ContentIdentity
	}
	if mismatch := findingsWith(indexed.Findings, CodePatientMismatch); len(mismatch) > 0 {
		rec.EventTypeCodes = append(rec.EventTypeCodes, localCode(CodePatientMismatch, "Patient attributes differ within the study"))
		rec.Findings = append(rec.Findings, mismatch...)
	}
	if _, err := p.Audit.Append(ctx, rec); err != nil {
		return up.Outcome, fmt.Errorf("pipeline: audit: %w", err)
	}
	if outcome == OutcomeDuplicate {
		// The content's event is the transfer's that counted it: published
		// by it, or by its redelivery should it have failed before (or be
		// running still, another invocation). Published here when the
		// ledger did not hold it yet, it named this resend's object and
		// sender under the content's event id.
		return up.Outcome, nil
	}
	detail := InstanceStoredDetail{
		SchemaVersion: 1, ObjectKey: key, ObjectURI: objURI, MetadataKey: jsonKey, MetadataURI: p.uri(jsonKey),
		SummaryKey: summaryKey, SOPClassUID: inst.SOPClassUID, SOPInstanceUID: inst.SOPInstanceUID,
		StudyInstanceUID: inst.StudyInstanceUID, SeriesInstanceUID: inst.SeriesInstanceUID,
		Modality: inst.Modality, TransferSyntaxUID: inst.TransferSyntaxUID, Size: inst.Size, SHA256: inst.ContentIdentity,
		ReceivedAt: inst.ReceivedAt, CallingAE: tx.CallingAE, CalledAE: tx.CalledAE, AssociationID: tx.AssociationID,
		Conflict: conflict, StudyInstanceCount: up.Study.InstanceCount, StudySeriesCount: up.Study.SeriesCount,
		PatientMismatch: HasFinding(indexed.Findings, CodePatientMismatch),
		Warnings:        indexed.Findings, Patient: p.patient(inst),
	}
	// One event per distinct content: a duplicate delivery or an identical
	// resend under another key announces nothing new.
	evID := eventID(DetailTypeInstanceStored, inst.SOPInstanceUID, inst.ContentIdentity)
	detail.EventID = evID
	publish := p.publishOnce
	if up.Outcome != InstanceDuplicate {
		// This call counted the content, and the index counts a content
		// once (IndexStore.UpsertInstance): no earlier call got this far
		// with it, and a resend of it publishes nothing, so its event can
		// be in the ledger only if a redelivery of this very transfer ran
		// at the same time (the event again, at least once). A retry
		// after this point finds the content counted and reads the
		// ledger.
		publish = p.publishNew
	}
	return up.Outcome, publish(ctx, evID, DetailTypeInstanceStored, detail, []string{p.resource(key)})
}

// heldContent is the content a conflicting one (in, as indexed) differs
// from: the first content indexed under its SOP Instance UID, in any
// study, which the index's conflict rule compares with (FirstContent), the
// one not itself a conflict; the earliest received of the others should
// none be. Conflicts are rare: the index is read again for them alone,
// after the upsert that decided them.
func (p *Pipeline) heldContent(ctx context.Context, in InstanceRecord) (InstanceRecord, error) {
	recs, err := p.Index.Instances(ctx, in.SOPInstanceUID)
	if err != nil {
		return InstanceRecord{}, fmt.Errorf("pipeline: index: %w", err)
	}
	var held InstanceRecord
	for _, r := range recs {
		if r.ContentIdentity == in.ContentIdentity && r.StudyInstanceUID == in.StudyInstanceUID {
			continue
		}
		switch {
		case !r.Conflict:
			return r, nil
		case held.ContentIdentity == "" || r.ReceivedAt.Before(held.ReceivedAt):
			held = r
		}
	}
	return held, nil
}

// BulkDataBytesParam is the query parameter of a DICOM JSON document's
// bulk data URIs that names the bytes the document describes (BytesName):
// the URI names the object's key, which may hold other bytes later (a key
// overwritten by a caller that may s3:PutObject: the bucket keeps the
// earlier version), so a reader checks the key still holds those before
// it reads the range, and reads nothing of another content.
const BulkDataBytesParam = "bytes"

// bulkURIs returns how the DICOM JSON of the object info describes names a
// bulk data value: by its byte range in the object, offset and length; a
// value of undefined length (encapsulated Pixel Data: its fragments) by its
// offset alone, the value being its items up to and including its
// Sequence Delimitation Item, whose end the header read never reaches
// (dataset.EncapsulatedLength finds it); or, when the dataset is deflated
// (no offset in the object means anything), by the object; each with the
// bytes described (BulkDataBytesParam).
func (p *Pipeline) bulkURIs(info ObjectInfo, deflated bool) func(*dataElement) string {
	objURI := p.uri(info.Key)
	bytes := BulkDataBytesParam + "=" + BytesName(info)
	if deflated {
		uri := objURI + "?" + bytes
		return func(*dataElement) string { return uri }
	}
	return func(e *dataElement) string {
		if e.Len == dataset.UndefinedLength {
			return fmt.Sprintf("%s?offset=%d&%s", objURI, e.Offset, bytes)
		}
		return fmt.Sprintf("%s?offset=%d&length=%d&%s", objURI, e.Offset, e.Len, bytes)
	}
}

func pixelVR(h *header) string {
	switch h.PixelData.Tag {
	case tagFloatPixelData:
		return "OF"
	case tagDoublePixelData:
		return "OD"
	}
	if h.PixelData.VR != "" && h.PixelData.VR != "UN" {
		return h.PixelData.VR
	}
	return "OW"
}

// eventID is deterministic for the fact an event announces.
func eventID(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:16])
}

// publishOnce publishes one event unless the ledger says it was, retrying
// entries that PutEvents reports as failed.
func (p *Pipeline) publishOnce(ctx context.Context, id, detailType string, detail any, resources []string) error {
	done, err := p.Index.EventPublished(ctx, id)
	if err != nil {
		return fmt.Errorf("pipeline: publish ledger: %w", err)
	}
	if done {
		return nil
	}
	return p.publishNew(ctx, id, detailType, detail, resources)
}

// publishNew publishes an event the ledger cannot hold yet and records it
// there.
func (p *Pipeline) publishNew(ctx context.Context, id, detailType string, detail any, resources []string) error {
	body, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("pipeline: marshal %s: %w", detailType, err)
	}
	ev := Event{ID: id, DetailType: detailType, Time: p.now(), Detail: body, Resources: resources}
	if err := p.publish(ctx, []Event{ev}); err != nil {
		return err
	}
	if err := p.Index.MarkEventPublished(ctx, id, p.now()); err != nil {
		return fmt.Errorf("pipeline: publish ledger: %w", err)
	}
	return nil
}

// publish sends events, retrying the entries that failed with backoff. It is
// the one place that tells the bus failing from an event refused on its
// own: the call failing, or an entry the bus failed to take (throttled, an
// internal failure), after the retries, is a busError; an entry refused on
// its own (FailedEntry.Refused: invalid, too large) is not tried again and
// is not, so it does not count towards a run's failures in a row
// (announcer).
func (p *Pipeline) publish(ctx context.Context, events []Event) error {
	pending := events
	delay := 50 * time.Millisecond
	var lastErr error
	var refused []error
	for attempt := 0; attempt < 5 && len(pending) > 0; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("pipeline: publish: %w", ctx.Err())
			case <-time.After(delay):
			}
			delay *= 2
		}
		failed, err := p.Events.Publish(ctx, pending)
		if err != nil {
			lastErr = err
			continue
		}
		next := make([]Event, 0, len(failed))
		lastErr = nil
		for _, f := range failed {
			if f.Index < 0 || f.Index >= len(pending) {
				continue
			}
			if f.Refused {
				refused = append(refused, eventRefused{detailType: pending[f.Index].DetailType, code: f.Code})
				continue
			}
			next = append(next, pending[f.Index])
			lastErr = fmt.Errorf("entries not accepted (%s)", f.Code)
		}
		pending = next
	}
	err := errors.Join(refused...)
	if len(pending) > 0 {
		if lastErr == nil {
			lastErr = errors.New("entries not accepted")
		}
		err = errors.Join(err, busError{fmt.Errorf("pipeline: publish %d events: %w", len(pending), lastErr)})
	}
	return err
}

// eventRefused is an event the bus refused on its own (FailedEntry.Refused): it would be refused again.
type eventRefused struct{ detailType, code string }

func (e eventRefused) Error() string {
	return fmt.Sprintf("pipeline: publish: %s refused by the bus (%s): the event itself, not the bus", e.detailType, e.code)
}

// busError is the event bus failing to take events (the call failing, or
// entries it failed to take, after the retries), as opposed to an event
// refused on its own, a study's own failure or the index's.
type busError struct{ error }

func (e busError) Unwrap() error { return e.error }

// ProcessAuditRecord turns an SCP association record stored at key (under
// audit/) into an audit trail record. Idempotent.
func (p *Pipeline) ProcessAuditRecord(ctx context.Context, key string) error {
	if _, sec, _, ok := SplitKey(key); !ok || sec != AuditPrefix || !strings.HasSuffix(key, ".json") {
		return nil
	}
	rc, err := p.Objects.OpenRange(ctx, key, 0, 1<<20)
	if err != nil {
		return fmt.Errorf("pipeline: read %s: %w", key, err)
	}
	body, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	rc.Close()
	if err != nil {
		return fmt.Errorf("pipeline: read %s: %w", key, err)
	}
	r, err := associationaudit.Parse(body)
	if errors.Is(err, associationaudit.ErrUnsupportedVersion) {
		// Written by a newer SCP: leave it to a newer pipeline (the
		// message goes to the dead-letter queue, nothing is lost).
		return fmt.Errorf("pipeline: %s: %w", key, err)
	}
	if err != nil {
		// A record we cannot parse will not parse on retry either: keep a
		// trace in the audit trail rather than poisoning the queue.
		p.log().Warn("unparseable association record", "key", key, "err", err)
		sum := sha256.Sum256(body)
		rec := AuditRecord{
			ID: "assoc-unparseable:" + hex.EncodeToString(sum[:16]), SchemaVersion: 1, Time: p.now(),
			EventID: codeSecurityAlert, EventActionCode: "E", EventOutcome: 4, Outcome: OutcomeUnparseableRecord,
			Reason: "association record could not be parsed", AuditSourceID: p.sourceID(), ObjectKey: key,
		}
		rec.Day = rec.Time.Format(time.DateOnly)
		_, err := p.Audit.Append(ctx, rec)
		return err
	}
	rec := p.associationAudit(r)
	rec.ObjectKey = key
	var noteSent func(context.Context) error
	if r.Event == associationaudit.EventDuplicate {
		if rec, noteSent, err = p.resentAudit(ctx, key, r, rec); err != nil {
			return err
		}
	}
	if _, err := p.Audit.Append(ctx, rec); err != nil {
		return fmt.Errorf("pipeline: audit: %w", err)
	}
	if noteSent != nil {
		// After the record: a resend whose study is not indexed yet is
		// retried for its LastSent alone, its record written already (a
		// redelivery writes it no second time), so that an index running
		// behind never holds an audit record back.
		return noteSent(ctx)
	}
	return nil
}

// resentAudit is the record of a resend the SCP found held, byte for
// byte, under its key (r, an associationaudit.EventDuplicate record
// stored at recordKey; no object notification follows such a resend): the
// record a resend under another key gets (accept), built from the held
// object's header (its study and patient, which the SCP's record does not
// name) with the resend's own transfer, under the SCP record's id, so a
// redelivery writes nothing new. Without the object (gone, or not under
// incoming/), the SCP record's own mapping, rec, stands.
func (p *Pipeline) resentAudit(ctx context.Context, recordKey string, r associationaudit.Record, rec AuditRecord) (AuditRecord, func(context.Context) error, error) {
	root, _, _, _ := SplitKey(recordKey)
	key := root + r.ObjectKey
	if _, sec, _, ok := SplitKey(key); r.ObjectKey == "" || !ok || sec != IncomingPrefix {
		return rec, nil, nil
	}
	info, err := p.Objects.Head(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return rec, nil, nil
	}
	if err != nil {
		return rec, nil, p.Names.Redact(fmt.Errorf("pipeline: head the object a resend duplicates: %w", err), key)
	}
	info.Key = key
	in, err := p.inspect(ctx, info)
	if err != nil {
		return rec, nil, p.Names.Redact(fmt.Errorf("pipeline: read the object a resend duplicates: %w", err), key)
	}
	id, err := p.contentIdentity(ctx, info, in.h)
	if err != nil {
		return rec, nil, p.Names.Redact(err, key)
	}
	// The identity the held object is recorded under.
	sha, err := p.recorded(ctx, in, id)
	if err != nil {
		return rec, nil, p.Names.Redact(err, key)
	}
	tx := transaction{
		CallingAE: r.CallingAE, CalledAE: r.CalledAE, PeerAddr: r.PeerAddr, AssociationID: r.AssociationID,
		ReceivedAt: r.Time.UTC(), ContentIdentity: sha, SOPClassUID: r.SOPClassUID, SOPInstanceUID: r.SOPInstanceUID,
	}
	out := p.instanceAudit(in, tx, OutcomeDuplicate)
	out.ID, out.ObjectKey, out.TLS, out.Reason = rec.ID, key, rec.TLS, resentReason
	out.HeldObjectKey, out.HeldContentIdentity = key, sha
	if !in.valid() {
		// The object held is quarantined (its own record is rejected):
		// so is this transfer of it.
		q, err := p.heldQuarantine(ctx, info, out.SOPInstanceUID, sha)
		if err != nil {
			return rec, nil, p.Names.Redact(err, key)
		}
		resentQuarantined(&out, q, in.findings)
		return out, nil, nil
	}
	// No object follows this resend to the index: the study's LastSent
	// is noted here, once the record is written (a resend under another
	// key is by the index's upsert). A study not indexed yet is the object
	// held still to be indexed (its own processing to come, or retried):
	// the message is retried until it is, rather than lose the resend.
	study, at := in.instance.StudyInstanceUID, tx.ReceivedAt
	note := func(ctx context.Context) error {
		err := p.Index.NoteSent(ctx, study, at)
		if errors.Is(err, ErrNotFound) {
			err = errHeldNotIndexed
		}
		if err != nil {
			return p.Names.Redact(fmt.Errorf("pipeline: note the resend in its study: %w", err), key)
		}
		return nil
	}
	return out, note, nil
}

// errHeldNotIndexed: a resend's record names an object held whose study
// the index does not hold yet; retried, it is noted once it does.
var errHeldNotIndexed = errors.New("the object held is not indexed yet; retry")

// AnnounceStableStudies publishes Study Received / Study Updated for every
// study quiet since now-QuietPeriod with unannounced instances, and returns
// how many it announced. Quiet means no instance received or indexed
// (StudySummary.LastActivity) in the period. A run takes at most 100
// studies, quiet the longest first; a study whose announcement fails is
// deferred (announcer), so studies that fail every time cannot keep the
// others out of the runs, and a run stops once the event bus has failed
// MaxPublishFailures announcements in a row, leaving the rest where they
// are for the next run.
func (p *Pipeline) AnnounceStableStudies(ctx context.Context, now time.Time) (int, error) {
	quiet := p.QuietPeriod
	if quiet <= 0 {
		quiet = DefaultQuietPeriod
	}
	studies, err := p.Index.StableStudies(ctx, now.Add(-quiet), 100)
	if err != nil {
		return 0, fmt.Errorf("pipeline: stable studies: %w", err)
	}
	a := p.announcer(now)
	n := 0
	var errs []error
	for i, s := range studies {
		if err := a.stopped(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%w: %d of %d studies left for the next run", err, len(studies)-i, len(studies)))
			break
		}
		if err := a.announce(ctx, s, CompletionQuietPeriod); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// AnnouncePanicLog is the line a study's announcement that panicked (a bug
// it meets) is logged as, with the study's log name and the stack.
const AnnouncePanicLog = "announcement panicked: a bug; the study is deferred"

// MaxPublishFailures is how many announcements in a row may fail to publish
// before a run takes the event bus for down and tries no more: each such
// attempt costs the publish's retries (seconds, with the SDK's own), and
// about 70 of them used up the notify function's timeout.
const MaxPublishFailures = 3

// errBusDown stops a run's announcements.
var errBusDown = fmt.Errorf("pipeline: %d announcements in a row failed to publish: the event bus is taken for down", MaxPublishFailures)

// announcer is one run's announcements (of quiet studies, or of the studies
// a Storage Commitment request completes) and, in a commitment run, its
// Storage Commitment Completed events. A study whose announcement fails
// is deferred (IndexStore.DeferAnnouncement at the run's time): tried again
// a quiet period later, behind the studies quiet before it, by the quiet
// period's runs. Failures to publish in a row, of any of the run's events,
// stop the run's publishing (stopped, published: the one rule); a study's
// own failure (its detail unreadable, its event refused) does not count
// towards them.
//
// It is safe for concurrent use: a Storage Commitment run delivers to
// several AEs at once, each with the run's announcer.
type announcer struct {
	p   *Pipeline
	now time.Time

	mu             sync.Mutex
	publishFailing int // events in a row that failed to publish
	// failed holds the failures a caller leaves to the end of its run (a
	// Storage Commitment's announcements).
	failed []error
}

// keep adds err to the failures left to the end of the run.
func (a *announcer) keep(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failed = append(a.failed, err)
}

// kept returns the failures left to the end of the run.
func (a *announcer) kept() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.failed)
}

func (p *Pipeline) announcer(now time.Time) *announcer { return &announcer{p: p, now: now} }

// stopped returns why the run should try no more announcements: the event
// bus failed MaxPublishFailures in a row, or ctx is done.
func (a *announcer) stopped(ctx context.Context) error {
	a.mu.Lock()
	failing := a.publishFailing
	a.mu.Unlock()
	if failing >= MaxPublishFailures {
		return errBusDown
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pipeline: announcements: %w", err)
	}
	return nil
}

// published counts an event's publication (err its outcome) towards the
// failures in a row that stop the run: the event bus failing to take it
// (busError) is one more; anything else, a success or the event's own
// failure, ends the row.
func (a *announcer) published(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if errors.As(err, new(busError)) {
		a.publishFailing++
		return
	}
	a.publishFailing = 0
}

// announce announces s, or defers it when that fails. A panic announcing s
// (a bug it meets) fails s alone, as an error would (panicvalue.Recovered,
// logged as AnnouncePanicLog with the study's log name): recovered only
// around the run, it failed every run at s, which came first again each
// time, and no study behind it was announced. What s's announcement wrote
// before the panic is kept, each step idempotent: its event is published
// once (publishOnce's ledger, local mode's outbox keyed by the event's id)
// and marked announced on the version's condition.
func (a *announcer) announce(ctx context.Context, s StudySummary, completion string) error {
	err := panicvalue.Recovered(a.p.log(), AnnouncePanicLog, func() error { return a.p.announce(ctx, s, completion) },
		"study", a.p.Names.Key(s.StudyInstanceUID))
	a.published(err)
	if err == nil {
		return nil
	}
	// Named for the operator, by the log name of its key in the index, its Study Instance UID (never the UID:
	// docs/operations/logging.md): the run's error was all NotifyDlqNotEmpty's reader had, with no study in it.
	err = fmt.Errorf("pipeline: announce study %v: %w", a.p.Names.Key(s.StudyInstanceUID), err)
	if derr := a.p.Index.DeferAnnouncement(ctx, s.StudyInstanceUID, a.now); derr != nil {
		// It keeps its place and is tried first again.
		err = errors.Join(err, fmt.Errorf("pipeline: defer announcement: %w", derr))
	}
	return err
}

// announce publishes Study Received (or Study Updated) for the study's current revision, saying what
// completed it.
func (p *Pipeline) announce(ctx context.Context, s StudySummary, completion string) error {
	version := s.AnnouncedVersion + 1
	dt := DetailTypeStudyReceived
	if version > 1 {
		dt = DetailTypeStudyUpdated
	}
	detail, err := p.studyDetail(ctx, s, version, completion)
	if err != nil {
		return err
	}
	id := eventID(dt, s.StudyInstanceUID, fmt.Sprint(version), fmt.Sprint(s.Revision))
	detail.EventID = id
	if err := p.publishOnce(ctx, id, dt, detail, nil); err != nil {
		return err
	}
	err = p.Index.MarkAnnounced(ctx, s.StudyInstanceUID, s.Revision, version, p.now())
	if errors.Is(err, ErrConditionFailed) {
		// Another announcer got there first.
		return nil
	}
	if err != nil {
		return fmt.Errorf("pipeline: mark announced: %w", err)
	}
	return nil
}
