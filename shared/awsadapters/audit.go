package awsadapters

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// DynamoAPI is the part of the DynamoDB client the adapters use: reads by
// key and Query, never Scan (nothing here reads a whole table).
type DynamoAPI interface {
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
}

// Audit table layout (keys are generic so the table can be overloaded):
//
//	pk = "AUDIT#<record id>", sk = "RECORD"        the full record (PHI included)
//	gsi1 byPatient   gsi1pk = "PATIENT#<patient id>" gsi1sk = <ts>#<id>   projection ALL
//	gsi2 byStudy     gsi2pk = "STUDY#<study uid>"    gsi2sk = <ts>#<id>   projection ALL
//	gsi3 byCallingAe gsi3pk = "AE#<calling AE>"      gsi3sk = <ts>#<id>   keys + non-PHI
//	gsi4 byDay       gsi4pk = "DAY#<yyyy-mm-dd>"     gsi4sk = <ts>#<id>   keys + non-PHI
//	gsi5 bySop       gsi5pk = "SOP#<sop uid>"        gsi5sk = <ts>#<id>   projection ALL
//
// (A value too long for a key is its digest: keyValue.)
//
// bySop is what Storage Commitment asks when an instance is not indexed:
// was it quarantined, or its C-STORE refused. Records written before it
// existed are not in it.
//
// The non-PHI projection carries eventId, eventTime, outcome, callingAe,
// calledAe, peer, associationId and reason.
const (
	auditSK        = "RECORD"
	gsiByPatient   = "byPatient"
	gsiByStudy     = "byStudy"
	gsiByCallingAE = "byCallingAe"
	gsiByDay       = "byDay"
	gsiBySop       = "bySop"
)

// AuditTable is the append-only audit trail in DynamoDB.
type AuditTable struct {
	Client DynamoAPI
	Table  string
}

var _ pipeline.AuditStore = (*AuditTable)(nil)

// tsFormat sorts lexically in time order (fixed width, UTC).
const tsFormat = "2006-01-02T15:04:05.000000000Z"

func ts(t time.Time) string { return t.UTC().Format(tsFormat) }

var jsonTags = func(o *attributevalue.EncoderOptions) { o.TagKey = "json" }
var jsonTagsDec = func(o *attributevalue.DecoderOptions) { o.TagKey = "json" }

// Append implements pipeline.AuditStore with a conditional PutItem.
func (a *AuditTable) Append(ctx context.Context, rec pipeline.AuditRecord) (bool, error) {
	if rec.ID == "" {
		return false, errors.New("awsadapters: audit record without id")
	}
	item, err := attributevalue.MarshalMapWithOptions(rec, jsonTags)
	if err != nil {
		return false, fmt.Errorf("awsadapters: marshal audit record: %w", err)
	}
	dropEmpty(item)
	// The indexes' sort key: the time, then the id (a digest of one too
	// long for a key: a rejected object's names its key), so records of
	// one time are apart.
	sortKey := keyValue(ts(rec.Time)+"#", rec.ID)
	s := func(v string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberS{Value: v} }
	item["pk"], item["sk"] = s(keyValue("AUDIT#", rec.ID)), s(auditSK)
	item["eventTime"] = s(ts(rec.Time))
	if rec.PeerAddr != "" {
		item["peer"] = s(rec.PeerAddr)
	}
	item["eventId"] = s(rec.EventID.Display)
	item["eventIdCode"] = s(rec.EventID.Code + "^" + rec.EventID.System)
	if rec.PatientID != "" {
		item["gsi1pk"], item["gsi1sk"] = s(keyValue("PATIENT#", rec.PatientID)), s(sortKey)
	}
	if rec.StudyInstanceUID != "" {
		item["gsi2pk"], item["gsi2sk"] = s(keyValue("STUDY#", rec.StudyInstanceUID)), s(sortKey)
	}
	if rec.CallingAE != "" {
		item["gsi3pk"], item["gsi3sk"] = s(keyValue("AE#", rec.CallingAE)), s(sortKey)
	}
	// byDay's partition is Time's day, in which Query looks for it.
	item["gsi4pk"], item["gsi4sk"] = s(dayPrefix+rec.Time.UTC().Format(time.DateOnly)), s(sortKey)
	if rec.SOPInstanceUID != "" {
		item["gsi5pk"], item["gsi5sk"] = s(keyValue("SOP#", rec.SOPInstanceUID)), s(sortKey)
	}
	_, err = a.Client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: &a.Table, Item: item,
		ConditionExpression: aws.String("attribute_not_exists(pk)"),
	})
	var ccf *ddbtypes.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("awsadapters: append audit record: %w", err)
	}
	return true, nil
}

// auditPath is an index Query reads: its partition and sort key
// attributes.
type auditPath struct{ index, pkAttr, skAttr string }

var (
	pathBySop       = auditPath{gsiBySop, "gsi5pk", "gsi5sk"}
	pathByPatient   = auditPath{gsiByPatient, "gsi1pk", "gsi1sk"}
	pathByStudy     = auditPath{gsiByStudy, "gsi2pk", "gsi2sk"}
	pathByCallingAE = auditPath{gsiByCallingAE, "gsi3pk", "gsi3sk"}
	pathByDay       = auditPath{gsiByDay, "gsi4pk", "gsi4sk"}
)

// Bounds of a query's time range: sort keys hold four-digit years, so a
// bound beyond them is the first or last time they can name.
var (
	firstKeyTime = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	lastKeyTime  = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
)

const (
	// maxQueryCalls bounds the DynamoDB queries of one page: a page ends
	// short (with a Next) rather than read on through a filter that keeps
	// few records or a run of days without any.
	maxQueryCalls = 32
	// dayPrefix begins the byDay partition key.
	dayPrefix = "DAY#"
)

// Query implements pipeline.AuditStore (pipeline.AuditQuery's contract).
// Queries by calling AE or by day, and those with no access path, read a
// projection without patient data: PatientID and PatientName (and UIDs)
// are empty in their results.
//
// Day and From/To are the one time range of the sort key (<time>#<id>), To
// inclusive to the nanosecond. A query with no access path walks the
// byDay partitions from To's day back to From's, newest first; it needs
// both, at most pipeline.MaxAuditWalkDays days apart
// (pipeline.ErrUnboundedQuery). A page reads at most maxQueryCalls
// partitions or pages of DynamoDB's; its cursor is the LastEvaluatedKey,
// or, at a day's end, the next day's partition key alone, sealed to q
// (pipeline.AuditQuery.CursorScope).
func (a *AuditTable) Query(ctx context.Context, q pipeline.AuditQuery) (pipeline.AuditPage, error) {
	page := pipeline.AuditPage{Records: []pipeline.AuditRecord{}}
	walk := q.SOPInstanceUID == "" && q.PatientID == "" && q.StudyInstanceUID == "" && q.CallingAE == "" && q.Day == ""
	if walk && (q.From.IsZero() || q.To.IsZero()) {
		return page, fmt.Errorf("awsadapters: audit query: %w", pipeline.ErrUnboundedQuery)
	}
	from, to, ok := auditRange(q)
	if !ok {
		return page, nil
	}
	if days := walkDays(from, to); walk && days > pipeline.MaxAuditWalkDays {
		return page, fmt.Errorf("awsadapters: audit query: a range over %d days, more than the %d one may walk: %w",
			days, pipeline.MaxAuditWalkDays, pipeline.ErrUnboundedQuery)
	}
	var path auditPath
	var pk string
	switch {
	case q.SOPInstanceUID != "":
		path, pk = pathBySop, keyValue("SOP#", q.SOPInstanceUID)
	case q.PatientID != "":
		path, pk = pathByPatient, keyValue("PATIENT#", q.PatientID)
	case q.StudyInstanceUID != "":
		path, pk = pathByStudy, keyValue("STUDY#", q.StudyInstanceUID)
	case q.CallingAE != "":
		path, pk = pathByCallingAE, keyValue("AE#", q.CallingAE)
	default: // a day, or the walk through the days from To's to From's
		path, pk = pathByDay, dayPrefix+to.Format(time.DateOnly)
	}
	lastPK := pk
	if path == pathByDay {
		lastPK = dayPrefix + from.Format(time.DateOnly)
	}
	in := a.auditQueryInput(q, path, from, to)
	var start map[string]ddbtypes.AttributeValue
	if q.Cursor != "" {
		place, err := q.CursorScope().Open(q.Cursor)
		if err != nil {
			return page, fmt.Errorf("awsadapters: audit query: %w", err)
		}
		if pk, start, err = decodeCursor(place, path, pk, lastPK, sortKeyRange(from, to)); err != nil {
			return page, err
		}
	}
	limit := q.PageSize()
	for calls := 0; ; calls++ {
		if len(page.Records) == limit || calls == maxQueryCalls {
			page.Next = q.CursorScope().Seal(encodeCursor(path, pk, start))
			return page, nil
		}
		in.ExpressionAttributeValues[":pk"] = &ddbtypes.AttributeValueMemberS{Value: pk}
		in.ExclusiveStartKey, in.Limit = start, aws.Int32(int32(limit-len(page.Records)))
		out, err := a.Client.Query(ctx, in)
		if err != nil {
			return pipeline.AuditPage{}, fmt.Errorf("awsadapters: query audit: %w", err)
		}
		for _, item := range out.Items {
			rec, err := decodeAudit(item)
			if err != nil {
				return pipeline.AuditPage{}, err
			}
			page.Records = append(page.Records, rec)
		}
		start = out.LastEvaluatedKey
		if len(start) > 0 {
			continue
		}
		if pk == lastPK {
			return page, nil
		}
		pk = previousDay(pk)
	}
}

// auditRange is the time range q's Day, From and To leave, bounded to what
// sort keys name; ok is false when it is empty.
func auditRange(q pipeline.AuditQuery) (from, to time.Time, ok bool) {
	from, to = firstKeyTime, lastKeyTime
	if q.Day != "" {
		d, err := time.Parse(time.DateOnly, q.Day)
		if err != nil {
			return from, to, false // no record is on a day that is none
		}
		from, to = d, d.AddDate(0, 0, 1).Add(-time.Nanosecond)
	}
	if !q.From.IsZero() && q.From.After(from) {
		from = q.From.UTC()
	}
	if !q.To.IsZero() && q.To.Before(to) {
		to = q.To.UTC()
	}
	return from, to, !from.After(to)
}

// walkDays is the number of byDay partitions from from's day to to's, both
// in: the days a query with no access path walks.
func walkDays(from, to time.Time) int64 {
	day := func(t time.Time) int64 {
		s := t.Unix() // years 0000 to 9999 (auditRange's): no overflow
		if s < 0 {
			s -= 86400 - 1 // floor, not towards zero, before 1970
		}
		return s / 86400
	}
	return day(to) - day(from) + 1
}

// auditQueryInput is the query of path within from and to, with q's other
// fields as filters; Query sets the partition, the start and the limit.
// Every filter is on an attribute the index projects.
func (a *AuditTable) auditQueryInput(q pipeline.AuditQuery, path auditPath, from, to time.Time) *dynamodb.QueryInput {
	names := map[string]string{"#pk": path.pkAttr, "#sk": path.skAttr}
	sks := sortKeyRange(from, to)
	values := map[string]ddbtypes.AttributeValue{
		":from": &ddbtypes.AttributeValueMemberS{Value: sks.from}, ":to": &ddbtypes.AttributeValueMemberS{Value: sks.to},
	}
	var filters []string
	addFilter := func(attr, v string) {
		if v == "" {
			return
		}
		n, p := "#f"+attr, ":f"+attr
		names[n], values[p] = attr, &ddbtypes.AttributeValueMemberS{Value: v}
		filters = append(filters, n+" = "+p)
	}
	addFilter("outcome", q.Outcome)
	if path != pathByCallingAE {
		addFilter("callingAe", q.CallingAE)
	}
	if path == pathBySop || path == pathByPatient {
		addFilter("studyInstanceUid", q.StudyInstanceUID)
	}
	if path == pathBySop {
		addFilter("patientId", q.PatientID)
	}
	in := &dynamodb.QueryInput{
		TableName: &a.Table, IndexName: aws.String(path.index),
		KeyConditionExpression:   aws.String("#pk = :pk AND #sk BETWEEN :from AND :to"),
		ExpressionAttributeNames: names, ExpressionAttributeValues: values, ScanIndexForward: aws.Bool(false),
	}
	if len(filters) > 0 {
		in.FilterExpression = aws.String(strings.Join(filters, " AND "))
	}
	return in
}

// sortKeys is the range of sort keys (<time>#<id>) a query reads, both
// inclusive.
type sortKeys struct{ from, to string }

// sortKeyRange is the sort keys of the records from from to to: "$"
// sorts after the "#" that ends a sort key's time, so To's records are in.
func sortKeyRange(from, to time.Time) sortKeys { return sortKeys{ts(from), ts(to) + "$"} }

// previousDay is the byDay partition of the day before pk's.
func previousDay(pk string) string {
	d, _ := time.Parse(time.DateOnly, strings.TrimPrefix(pk, dayPrefix)) // Query's own keys
	return dayPrefix + d.AddDate(0, 0, -1).Format(time.DateOnly)
}

// DecodeAuditItem reads an audit table item as Append wrote it, such as a
// NEW_IMAGE from the table's stream. ok is false for items that are not
// audit records (the publish ledger's); an audit record item that does not
// decode is an error.
func DecodeAuditItem(item map[string]ddbtypes.AttributeValue) (rec pipeline.AuditRecord, ok bool, err error) {
	pk, _ := item["pk"].(*ddbtypes.AttributeValueMemberS)
	sk, _ := item["sk"].(*ddbtypes.AttributeValueMemberS)
	if pk == nil || sk == nil || sk.Value != auditSK || len(pk.Value) <= len("AUDIT#") || pk.Value[:len("AUDIT#")] != "AUDIT#" {
		return pipeline.AuditRecord{}, false, nil
	}
	if _, full := item["schemaVersion"]; !full {
		return pipeline.AuditRecord{}, true, errors.New("awsadapters: audit item without its record (a projection?)")
	}
	rec, err = decodeAudit(item)
	return rec, true, err
}

// decodeAudit reads a full item or a projected one.
func decodeAudit(item map[string]ddbtypes.AttributeValue) (pipeline.AuditRecord, error) {
	str := func(k string) string {
		if v, ok := item[k].(*ddbtypes.AttributeValueMemberS); ok {
			return v.Value
		}
		return ""
	}
	var rec pipeline.AuditRecord
	if _, full := item["schemaVersion"]; full {
		clean := map[string]ddbtypes.AttributeValue{}
		for k, v := range item {
			switch k {
			case "eventId", "eventIdCode":
				continue
			}
			clean[k] = v
		}
		if err := attributevalue.UnmarshalMapWithOptions(clean, &rec, jsonTagsDec); err != nil {
			return rec, fmt.Errorf("awsadapters: decode audit record: %w", err)
		}
		rec.ContentIdentity = pipeline.ReadLegacyContentIdentity(rec.ContentIdentity, str)
	} else {
		rec.Outcome, rec.CallingAE, rec.CalledAE = str("outcome"), str("callingAe"), str("calledAe")
		rec.PeerAddr, rec.AssociationID, rec.Reason = str("peer"), str("associationId"), str("reason")
	}
	if rec.ID == "" { // a projection: the key's (a digest for an id too long for a key, see keyValue)
		rec.ID = strings.TrimPrefix(str("pk"), "AUDIT#")
	}
	if t, err := time.Parse(tsFormat, str("eventTime")); err == nil {
		rec.Time = t
		rec.Day = t.Format(time.DateOnly)
	}
	code := str("eventIdCode")
	for i := 0; i < len(code); i++ {
		if code[i] == '^' {
			rec.EventID = pipeline.CodedValue{Code: code[:i], System: code[i+1:], Display: str("eventId")}
		}
	}
	if rec.EventID.Display == "" {
		rec.EventID.Display = str("eventId")
	}
	rec.ReadAnswered() // the projection has no flags; records written before them neither
	return rec, nil
}

// A cursor is base64 JSON of the partition to go on with and, within it,
// the LastEvaluatedKey to start after (string attributes): {"pk": "<index
// partition>", "key": {...}}; no key starts at the partition's newest.
type auditCursor struct {
	PK  string            `json:"pk"`
	Key map[string]string `json:"key,omitempty"`
}

func encodeCursor(path auditPath, pk string, start map[string]ddbtypes.AttributeValue) string {
	c := auditCursor{PK: pk}
	if len(start) > 0 {
		c.Key = map[string]string{}
		for k, v := range start {
			if s, ok := v.(*ddbtypes.AttributeValueMemberS); ok {
				c.Key[k] = s.Value
			}
		}
	}
	b, _ := json.Marshal(c) // strings always marshal
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor reads a cursor of a query of path over the partitions from
// first to last (one, or byDay's from To's day back to From's). A cursor
// of another query is ErrBadCursor, as DynamoDB would refuse its key or,
// worse, go on in another partition; so is a key outside the query's sort
// keys (DynamoDB would refuse it as outside the key condition) or, in a
// day's partition, of another day. Errors do not quote it: its keys hold
// UIDs.
func decodeCursor(c string, path auditPath, first, last string, sks sortKeys) (string, map[string]ddbtypes.AttributeValue, error) {
	bad := fmt.Errorf("awsadapters: audit query: %w", pipeline.ErrBadCursor)
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", nil, bad
	}
	var cur auditCursor
	if err := json.Unmarshal(b, &cur); err != nil {
		return "", nil, bad
	}
	switch {
	case cur.PK == first || cur.PK == last:
	case path == pathByDay && strings.HasPrefix(cur.PK, dayPrefix):
		d, err := time.Parse(time.DateOnly, strings.TrimPrefix(cur.PK, dayPrefix))
		if err != nil || cur.PK != dayPrefix+d.Format(time.DateOnly) || cur.PK > first || cur.PK < last {
			return "", nil, bad
		}
	default:
		return "", nil, bad
	}
	if cur.Key == nil {
		return cur.PK, nil, nil
	}
	sk := cur.Key[path.skAttr]
	if len(cur.Key) != 4 || cur.Key[path.pkAttr] != cur.PK || sk < sks.from || sk > sks.to || cur.Key["pk"] == "" || cur.Key["sk"] != auditSK {
		return "", nil, bad
	}
	if path == pathByDay && !strings.HasPrefix(sk, strings.TrimPrefix(cur.PK, dayPrefix)+"T") {
		return "", nil, bad
	}
	key := map[string]ddbtypes.AttributeValue{}
	for k, v := range cur.Key {
		key[k] = &ddbtypes.AttributeValueMemberS{Value: v}
	}
	return cur.PK, key, nil
}
