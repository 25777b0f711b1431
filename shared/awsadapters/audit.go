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

// DynamoAPI is the part of the DynamoDB client the adapters use.
type DynamoAPI interface {
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
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
// bySop is what Storage Commitment asks when an instance is not indexed:
// was it quarantined, or its C-STORE refused. Records written before it
// existed are not in it.
//
// The non-PHI projection carries eventId, eventTime, outcome, callingAe,
// calledAe, peer, associationId and reason.
const (
	auditSK          = "RECORD"
	gsiByPatient     = "byPatient"
	gsiByStudy       = "byStudy"
	gsiByCallingAE   = "byCallingAe"
	gsiByDay         = "byDay"
	gsiBySop         = "bySop"
	defaultPageLimit = 100
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
	sortKey := ts(rec.Time) + "#" + rec.ID
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
	item["gsi4pk"], item["gsi4sk"] = s("DAY#"+rec.Day), s(sortKey)
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

// Query implements pipeline.AuditStore. Queries by calling AE or by day
// read a projection without patient data: PatientID and PatientName (and
// UIDs) are empty in their results.
func (a *AuditTable) Query(ctx context.Context, q pipeline.AuditQuery) (pipeline.AuditPage, error) {
	var index, pkAttr, skAttr, pk string
	switch {
	case q.SOPInstanceUID != "":
		index, pkAttr, skAttr, pk = gsiBySop, "gsi5pk", "gsi5sk", keyValue("SOP#", q.SOPInstanceUID)
	case q.PatientID != "":
		index, pkAttr, skAttr, pk = gsiByPatient, "gsi1pk", "gsi1sk", keyValue("PATIENT#", q.PatientID)
	case q.StudyInstanceUID != "":
		index, pkAttr, skAttr, pk = gsiByStudy, "gsi2pk", "gsi2sk", keyValue("STUDY#", q.StudyInstanceUID)
	case q.CallingAE != "":
		index, pkAttr, skAttr, pk = gsiByCallingAE, "gsi3pk", "gsi3sk", keyValue("AE#", q.CallingAE)
	default:
		day := q.Day
		if day == "" {
			t := q.To
			if t.IsZero() {
				t = time.Now()
			}
			day = t.UTC().Format(time.DateOnly)
		}
		q.Day = ""
		index, pkAttr, skAttr, pk = gsiByDay, "gsi4pk", "gsi4sk", "DAY#"+day
	}
	names := map[string]string{"#pk": pkAttr}
	values := map[string]ddbtypes.AttributeValue{":pk": &ddbtypes.AttributeValueMemberS{Value: pk}}
	cond := "#pk = :pk"
	if !q.From.IsZero() || !q.To.IsZero() {
		from, to := "0", "9"
		if !q.From.IsZero() {
			from = ts(q.From)
		}
		if !q.To.IsZero() {
			to = ts(q.To)
		}
		names["#sk"] = skAttr
		values[":from"], values[":to"] = &ddbtypes.AttributeValueMemberS{Value: from}, &ddbtypes.AttributeValueMemberS{Value: to}
		cond += " AND #sk BETWEEN :from AND :to"
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
	addFilter("callingAe", q.CallingAE)
	addFilter("day", q.Day)
	if index == gsiByPatient || index == gsiByStudy || index == gsiBySop {
		addFilter("studyInstanceUid", q.StudyInstanceUID)
	}
	if index == gsiBySop {
		addFilter("patientId", q.PatientID)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = defaultPageLimit
	}
	in := &dynamodb.QueryInput{
		TableName: &a.Table, IndexName: &index, KeyConditionExpression: &cond,
		ExpressionAttributeNames: names, ExpressionAttributeValues: values,
		ScanIndexForward: aws.Bool(false), Limit: aws.Int32(int32(limit)),
	}
	if len(filters) > 0 {
		f := filters[0]
		for _, x := range filters[1:] {
			f += " AND " + x
		}
		in.FilterExpression = &f
	}
	if q.Cursor != "" {
		start, err := decodeCursor(q.Cursor)
		if err != nil {
			return pipeline.AuditPage{}, err
		}
		in.ExclusiveStartKey = start
	}
	out, err := a.Client.Query(ctx, in)
	if err != nil {
		return pipeline.AuditPage{}, fmt.Errorf("awsadapters: query audit: %w", err)
	}
	page := pipeline.AuditPage{}
	for _, item := range out.Items {
		rec, err := decodeAudit(item)
		if err != nil {
			return pipeline.AuditPage{}, err
		}
		page.Records = append(page.Records, rec)
	}
	if len(out.LastEvaluatedKey) > 0 {
		page.Next = encodeCursor(out.LastEvaluatedKey)
	}
	return page, nil
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
	return rec, nil
}

// Cursors are the LastEvaluatedKey (all string attributes) as base64 JSON.
func encodeCursor(key map[string]ddbtypes.AttributeValue) string {
	m := map[string]string{}
	for k, v := range key {
		if s, ok := v.(*ddbtypes.AttributeValueMemberS); ok {
			m[k] = s.Value
		}
	}
	b, _ := json.Marshal(m) // map[string]string always marshals
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(c string) (map[string]ddbtypes.AttributeValue, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, fmt.Errorf("awsadapters: %w: %w", pipeline.ErrBadCursor, err)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("awsadapters: %w: %w", pipeline.ErrBadCursor, err)
	}
	out := map[string]ddbtypes.AttributeValue{}
	for k, v := range m {
		out[k] = &ddbtypes.AttributeValueMemberS{Value: v}
	}
	return out, nil
}
