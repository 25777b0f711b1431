package awsadapters

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Index table layout:
//
//	pk = "STUDY#<study>"  sk = "STUDY"                  study aggregate
//	pk = "STUDY#<study>"  sk = "SERIES#<series>"        series aggregate
//	pk = "STUDY#<study>"  sk = "INSTANCE#<sop>#<sha>"   one per distinct content
//	pk = "STUDY#<study>"  sk = "SOP#<sop>"              first content seen for a SOP Instance UID
//	pk = "EVENT#<id>"     sk = "EVENT"                  publish ledger
//
// GSIs: byPending (gsi1pk = "PENDING" only while a study has unannounced
// instances, gsi1sk = <last received ts>#<study>; keys only) and byPatient
// (gsi2pk = "PATIENT#<id>", gsi2sk = <last received ts>; on study items).
const (
	gsiByPending = "byPending"
	pending      = "PENDING"
)

// IndexTable is the study index in DynamoDB.
type IndexTable struct {
	Client DynamoAPI
	Table  string
}

var _ pipeline.IndexStore = (*IndexTable)(nil)

func sv(v string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberS{Value: v} }
func nv(n int64) ddbtypes.AttributeValue {
	return &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func key(pk, sk string) map[string]ddbtypes.AttributeValue {
	return map[string]ddbtypes.AttributeValue{"pk": sv(pk), "sk": sv(sk)}
}

func studyPK(uid string) string { return "STUDY#" + uid }

// dropEmpty removes empty strings and empty collections, which some
// DynamoDB implementations reject.
func dropEmpty(m map[string]ddbtypes.AttributeValue) {
	for k, v := range m {
		switch x := v.(type) {
		case *ddbtypes.AttributeValueMemberS:
			if x.Value == "" {
				delete(m, k)
			}
		case *ddbtypes.AttributeValueMemberM:
			dropEmpty(x.Value)
		case *ddbtypes.AttributeValueMemberL:
			for _, e := range x.Value {
				if mm, ok := e.(*ddbtypes.AttributeValueMemberM); ok {
					dropEmpty(mm.Value)
				}
			}
			if len(x.Value) == 0 {
				delete(m, k)
			}
		case *ddbtypes.AttributeValueMemberNULL:
			delete(m, k)
		}
	}
}

func isCondFailed(err error) bool {
	var ccf *ddbtypes.ConditionalCheckFailedException
	var tce *ddbtypes.TransactionCanceledException
	if errors.As(err, &ccf) {
		return true
	}
	if errors.As(err, &tce) {
		for _, r := range tce.CancellationReasons {
			if aws.ToString(r.Code) == "ConditionalCheckFailed" || aws.ToString(r.Code) == "TransactionConflict" {
				return true
			}
		}
		return strings.Contains(tce.Error(), "ConditionalCheckFailed")
	}
	return false
}

func (x *IndexTable) get(ctx context.Context, pk, sk string) (map[string]ddbtypes.AttributeValue, error) {
	out, err := x.Client.GetItem(ctx, &dynamodb.GetItemInput{TableName: &x.Table, Key: key(pk, sk), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("awsadapters: get %s %s: %w", pk, sk, err)
	}
	return out.Item, nil
}

// UpsertInstance implements pipeline.IndexStore: a read, then one
// transaction whose conditions make it apply at most once per content;
// a lost race re-reads and retries.
func (x *IndexTable) UpsertInstance(ctx context.Context, in pipeline.InstanceRecord) (pipeline.UpsertResult, error) {
	pk := studyPK(in.StudyInstanceUID)
	instSK := "INSTANCE#" + in.SOPInstanceUID + "#" + in.SHA256
	for attempt := 0; attempt < 6; attempt++ {
		existing, err := x.get(ctx, pk, instSK)
		if err != nil {
			return pipeline.UpsertResult{}, err
		}
		if existing != nil {
			st, err := x.study(ctx, in.StudyInstanceUID)
			return pipeline.UpsertResult{Outcome: pipeline.InstanceDuplicate, Study: st}, err
		}
		marker, err := x.get(ctx, pk, "SOP#"+in.SOPInstanceUID)
		if err != nil {
			return pipeline.UpsertResult{}, err
		}
		series, err := x.get(ctx, pk, "SERIES#"+in.SeriesInstanceUID)
		if err != nil {
			return pipeline.UpsertResult{}, err
		}
		outcome := pipeline.InstanceNew
		if marker != nil {
			outcome = pipeline.InstanceConflict
			in.Conflict = true
		}
		item, err := attributevalue.MarshalMapWithOptions(in, jsonTags)
		if err != nil {
			return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: marshal instance: %w", err)
		}
		dropEmpty(item)
		item["pk"], item["sk"] = sv(pk), sv(instSK)
		items := []ddbtypes.TransactWriteItem{{Put: &ddbtypes.Put{
			TableName: &x.Table, Item: item, ConditionExpression: aws.String("attribute_not_exists(pk)"),
		}}}
		if marker == nil {
			items = append(items, ddbtypes.TransactWriteItem{Put: &ddbtypes.Put{
				TableName: &x.Table, Item: map[string]ddbtypes.AttributeValue{"pk": sv(pk), "sk": sv("SOP#" + in.SOPInstanceUID), "sha256": sv(in.SHA256)},
				ConditionExpression: aws.String("attribute_not_exists(pk)"),
			}})
		}
		var newInstance int64
		if outcome == pipeline.InstanceNew {
			newInstance = 1
		}
		rt := ts(in.ReceivedAt)
		if series == nil {
			s := map[string]ddbtypes.AttributeValue{
				"pk": sv(pk), "sk": sv("SERIES#" + in.SeriesInstanceUID), "seriesInstanceUid": sv(in.SeriesInstanceUID),
				"modality": sv(in.Modality), "seriesNumber": sv(in.SeriesNumber), "seriesDescription": sv(in.SeriesDescription),
				"instanceCount": nv(newInstance), "totalBytes": nv(in.Size), "firstReceived": sv(rt), "lastReceived": sv(rt),
			}
			dropEmpty(s)
			items = append(items, ddbtypes.TransactWriteItem{Put: &ddbtypes.Put{
				TableName: &x.Table, Item: s, ConditionExpression: aws.String("attribute_not_exists(pk)"),
			}})
		} else {
			items = append(items, ddbtypes.TransactWriteItem{Update: &ddbtypes.Update{
				TableName: &x.Table, Key: key(pk, "SERIES#"+in.SeriesInstanceUID),
				UpdateExpression:          aws.String("ADD instanceCount :n, totalBytes :b"),
				ConditionExpression:       aws.String("attribute_exists(pk)"),
				ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":n": nv(newInstance), ":b": nv(in.Size)},
			}})
		}
		items = append(items, ddbtypes.TransactWriteItem{Update: x.studyUpdate(in, outcome, series == nil)})
		_, err = x.Client.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: items})
		if err != nil {
			if isCondFailed(err) {
				continue // someone else got there: re-read
			}
			return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: upsert instance: %w", err)
		}
		// Received times are kept as min/max with conditional updates:
		// deliveries may be processed out of order.
		for _, sk := range []string{"STUDY", "SERIES#" + in.SeriesInstanceUID} {
			if err := x.widen(ctx, pk, sk, rt, sk == "STUDY"); err != nil {
				return pipeline.UpsertResult{}, err
			}
		}
		st, err := x.study(ctx, in.StudyInstanceUID)
		return pipeline.UpsertResult{Outcome: outcome, Study: st}, err
	}
	return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: upsert instance: too much contention")
}

func (x *IndexTable) studyUpdate(in pipeline.InstanceRecord, outcome pipeline.UpsertOutcome, newSeries bool) *ddbtypes.Update {
	vals := map[string]ddbtypes.AttributeValue{
		":one": nv(1), ":b": nv(in.Size), ":uid": sv(in.StudyInstanceUID), ":pending": sv(pending),
		":kind": sv("STUDY"), ":rt": sv(ts(in.ReceivedAt)),
	}
	var add []string
	add = append(add, "revision :one", "totalBytes :b")
	if outcome == pipeline.InstanceNew {
		add = append(add, "instanceCount :one")
	} else {
		add = append(add, "conflictCount :one")
	}
	if newSeries {
		add = append(add, "seriesCount :one")
	}
	if in.Modality != "" {
		vals[":mod"] = &ddbtypes.AttributeValueMemberSS{Value: []string{in.Modality}}
		add = append(add, "modalities :mod")
	}
	if in.CallingAE != "" {
		vals[":ae"] = &ddbtypes.AttributeValueMemberSS{Value: []string{in.CallingAE}}
		add = append(add, "callingAes :ae")
	}
	set := []string{
		"studyInstanceUid = :uid", "kind = :kind", "gsi1pk = :pending",
		"firstReceived = if_not_exists(firstReceived, :rt)", "lastReceived = if_not_exists(lastReceived, :rt)",
		"gsi1sk = if_not_exists(lastReceived, :rt)",
	}
	opt := func(attr, v string) {
		if v != "" {
			vals[":"+attr] = sv(v)
			set = append(set, fmt.Sprintf("%s = if_not_exists(%s, :%s)", attr, attr, attr))
		}
	}
	opt("patientId", in.PatientID)
	opt("patientName", in.PatientName)
	opt("patientBirthDate", in.PatientBirthDate)
	opt("patientSex", in.PatientSex)
	opt("studyDate", in.StudyDate)
	opt("studyTime", in.StudyTime)
	opt("studyDescription", in.StudyDescription)
	opt("accessionNumber", in.AccessionNumber)
	if in.PatientID != "" {
		vals[":gsi2pk"] = sv("PATIENT#" + in.PatientID)
		set = append(set, "gsi2pk = if_not_exists(gsi2pk, :gsi2pk)", "gsi2sk = if_not_exists(gsi2sk, :rt)")
	}
	return &ddbtypes.Update{
		TableName: &x.Table, Key: key(studyPK(in.StudyInstanceUID), "STUDY"),
		UpdateExpression:          aws.String("SET " + strings.Join(set, ", ") + " ADD " + strings.Join(add, ", ")),
		ExpressionAttributeValues: vals,
	}
}

// widen moves firstReceived back and lastReceived forward to include rt.
func (x *IndexTable) widen(ctx context.Context, pk, sk, rt string, study bool) error {
	upd := []struct{ expr, cond string }{
		{"SET lastReceived = :rt", "lastReceived < :rt"},
		{"SET firstReceived = :rt", "firstReceived > :rt"},
	}
	for i, u := range upd {
		expr := u.expr
		if study && i == 0 {
			// The pending index sorts by last received; patient listings too.
			expr += ", gsi1sk = :rt"
			if _, err := x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
				TableName: &x.Table, Key: key(pk, sk), UpdateExpression: aws.String("SET gsi2sk = :rt"),
				ConditionExpression:       aws.String("attribute_exists(gsi2pk) AND gsi2sk < :rt"),
				ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":rt": sv(rt)},
			}); err != nil && !isCondFailed(err) {
				return fmt.Errorf("awsadapters: widen %s: %w", sk, err)
			}
		}
		_, err := x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: &x.Table, Key: key(pk, sk), UpdateExpression: &expr, ConditionExpression: &u.cond,
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":rt": sv(rt)},
		})
		if err != nil && !isCondFailed(err) {
			return fmt.Errorf("awsadapters: widen %s: %w", sk, err)
		}
	}
	return nil
}

// study reads the study aggregate.
func (x *IndexTable) study(ctx context.Context, uid string) (pipeline.StudySummary, error) {
	item, err := x.get(ctx, studyPK(uid), "STUDY")
	if err != nil {
		return pipeline.StudySummary{}, err
	}
	if item == nil {
		return pipeline.StudySummary{}, fmt.Errorf("awsadapters: study: %w", pipeline.ErrNotFound)
	}
	return decodeStudy(item)
}

// studyItem mirrors the study item's attributes.
type studyItem struct {
	StudyInstanceUID  string   `dynamodbav:"studyInstanceUid"`
	PatientID         string   `dynamodbav:"patientId"`
	PatientName       string   `dynamodbav:"patientName"`
	PatientBirthDate  string   `dynamodbav:"patientBirthDate"`
	PatientSex        string   `dynamodbav:"patientSex"`
	StudyDate         string   `dynamodbav:"studyDate"`
	StudyTime         string   `dynamodbav:"studyTime"`
	StudyDescription  string   `dynamodbav:"studyDescription"`
	AccessionNumber   string   `dynamodbav:"accessionNumber"`
	Modalities        []string `dynamodbav:"modalities,stringset"`
	CallingAEs        []string `dynamodbav:"callingAes,stringset"`
	SeriesCount       int      `dynamodbav:"seriesCount"`
	InstanceCount     int      `dynamodbav:"instanceCount"`
	ConflictCount     int      `dynamodbav:"conflictCount"`
	TotalBytes        int64    `dynamodbav:"totalBytes"`
	FirstReceived     string   `dynamodbav:"firstReceived"`
	LastReceived      string   `dynamodbav:"lastReceived"`
	Revision          int64    `dynamodbav:"revision"`
	AnnouncedRevision int64    `dynamodbav:"announcedRevision"`
	AnnouncedVersion  int64    `dynamodbav:"announcedVersion"`
}

func parseTS(s string) time.Time {
	t, _ := time.Parse(tsFormat, s)
	return t
}

func decodeStudy(item map[string]ddbtypes.AttributeValue) (pipeline.StudySummary, error) {
	var s studyItem
	if err := attributevalue.UnmarshalMap(item, &s); err != nil {
		return pipeline.StudySummary{}, fmt.Errorf("awsadapters: decode study: %w", err)
	}
	slices.Sort(s.Modalities)
	slices.Sort(s.CallingAEs)
	return pipeline.StudySummary{
		StudyInstanceUID: s.StudyInstanceUID, PatientID: s.PatientID, PatientName: s.PatientName,
		PatientBirthDate: s.PatientBirthDate, PatientSex: s.PatientSex, StudyDate: s.StudyDate, StudyTime: s.StudyTime,
		StudyDescription: s.StudyDescription, AccessionNumber: s.AccessionNumber, Modalities: s.Modalities,
		CallingAEs: s.CallingAEs, SeriesCount: s.SeriesCount, InstanceCount: s.InstanceCount, ConflictCount: s.ConflictCount,
		TotalBytes: s.TotalBytes, FirstReceived: parseTS(s.FirstReceived), LastReceived: parseTS(s.LastReceived),
		Revision: s.Revision, AnnouncedRevision: s.AnnouncedRevision, AnnouncedVersion: s.AnnouncedVersion,
	}, nil
}

type seriesItem struct {
	SeriesInstanceUID string `dynamodbav:"seriesInstanceUid"`
	Modality          string `dynamodbav:"modality"`
	SeriesNumber      string `dynamodbav:"seriesNumber"`
	SeriesDescription string `dynamodbav:"seriesDescription"`
	InstanceCount     int    `dynamodbav:"instanceCount"`
	TotalBytes        int64  `dynamodbav:"totalBytes"`
	FirstReceived     string `dynamodbav:"firstReceived"`
	LastReceived      string `dynamodbav:"lastReceived"`
}

// GetStudy implements pipeline.IndexStore.
func (x *IndexTable) GetStudy(ctx context.Context, uid string) (pipeline.StudyDetail, error) {
	var d pipeline.StudyDetail
	found := false
	var start map[string]ddbtypes.AttributeValue
	for {
		out, err := x.Client.Query(ctx, &dynamodb.QueryInput{
			TableName: &x.Table, KeyConditionExpression: aws.String("pk = :pk"),
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":pk": sv(studyPK(uid))},
			ConsistentRead:            aws.Bool(true), ExclusiveStartKey: start,
		})
		if err != nil {
			return d, fmt.Errorf("awsadapters: get study: %w", err)
		}
		for _, item := range out.Items {
			sk := item["sk"].(*ddbtypes.AttributeValueMemberS).Value
			switch {
			case sk == "STUDY":
				s, err := decodeStudy(item)
				if err != nil {
					return d, err
				}
				d.StudySummary, found = s, true
			case strings.HasPrefix(sk, "SERIES#"):
				var s seriesItem
				if err := attributevalue.UnmarshalMap(item, &s); err != nil {
					return d, fmt.Errorf("awsadapters: decode series: %w", err)
				}
				d.Series = append(d.Series, pipeline.SeriesSummary{
					SeriesInstanceUID: s.SeriesInstanceUID, Modality: s.Modality, SeriesNumber: s.SeriesNumber,
					SeriesDescription: s.SeriesDescription, InstanceCount: s.InstanceCount, TotalBytes: s.TotalBytes,
					FirstReceived: parseTS(s.FirstReceived), LastReceived: parseTS(s.LastReceived),
				})
			case strings.HasPrefix(sk, "INSTANCE#"):
				var in pipeline.InstanceRecord
				if err := attributevalue.UnmarshalMapWithOptions(item, &in, jsonTagsDec); err != nil {
					return d, fmt.Errorf("awsadapters: decode instance: %w", err)
				}
				d.Instances = append(d.Instances, in)
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			break
		}
		start = out.LastEvaluatedKey
	}
	if !found {
		return d, fmt.Errorf("awsadapters: study: %w", pipeline.ErrNotFound)
	}
	return d, nil
}

// ListStudies implements pipeline.IndexStore. With a patient id it
// queries byPatient; without, it scans study items (an administrative
// path: fine for thousands of studies, not for millions).
func (x *IndexTable) ListStudies(ctx context.Context, q pipeline.StudyQuery) ([]pipeline.StudySummary, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = defaultPageLimit
	}
	var out []pipeline.StudySummary
	var start map[string]ddbtypes.AttributeValue
	for {
		var items []map[string]ddbtypes.AttributeValue
		var last map[string]ddbtypes.AttributeValue
		if q.PatientID != "" {
			res, err := x.Client.Query(ctx, &dynamodb.QueryInput{
				TableName: &x.Table, IndexName: aws.String("byPatient"), KeyConditionExpression: aws.String("gsi2pk = :p"),
				ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":p": sv("PATIENT#" + q.PatientID)},
				ScanIndexForward:          aws.Bool(false), ExclusiveStartKey: start,
			})
			if err != nil {
				return nil, fmt.Errorf("awsadapters: list studies: %w", err)
			}
			items, last = res.Items, res.LastEvaluatedKey
		} else {
			res, err := x.Client.Scan(ctx, &dynamodb.ScanInput{
				TableName: &x.Table, FilterExpression: aws.String("sk = :s"),
				ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":s": sv("STUDY")}, ExclusiveStartKey: start,
			})
			if err != nil {
				return nil, fmt.Errorf("awsadapters: list studies: %w", err)
			}
			items, last = res.Items, res.LastEvaluatedKey
		}
		for _, item := range items {
			s, err := decodeStudy(item)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		if len(last) == 0 {
			break
		}
		start = last
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastReceived.After(out[j].LastReceived) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// StableStudies implements pipeline.IndexStore through the sparse
// byPending index.
func (x *IndexTable) StableStudies(ctx context.Context, quietSince time.Time, limit int) ([]pipeline.StudySummary, error) {
	if limit <= 0 {
		limit = defaultPageLimit
	}
	res, err := x.Client.Query(ctx, &dynamodb.QueryInput{
		TableName: &x.Table, IndexName: aws.String(gsiByPending),
		KeyConditionExpression:    aws.String("gsi1pk = :p AND gsi1sk <= :t"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":p": sv(pending), ":t": sv(ts(quietSince))},
		Limit:                     aws.Int32(int32(limit)),
	})
	if err != nil {
		return nil, fmt.Errorf("awsadapters: stable studies: %w", err)
	}
	var out []pipeline.StudySummary
	for _, k := range res.Items {
		pk := k["pk"].(*ddbtypes.AttributeValueMemberS).Value
		s, err := x.study(ctx, strings.TrimPrefix(pk, "STUDY#"))
		if err != nil {
			return nil, err
		}
		// The index is eventually consistent: re-check on the item.
		if s.Revision > s.AnnouncedRevision && !s.LastReceived.After(quietSince) {
			out = append(out, s)
		}
	}
	return out, nil
}

// MarkAnnounced implements pipeline.IndexStore.
func (x *IndexTable) MarkAnnounced(ctx context.Context, uid string, revision, version int64, at time.Time) error {
	cond := "announcedVersion = :prev"
	if version == 1 {
		cond = "attribute_not_exists(announcedVersion) OR announcedVersion = :prev"
	}
	_, err := x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &x.Table, Key: key(studyPK(uid), "STUDY"),
		UpdateExpression:    aws.String("SET announcedVersion = :v, announcedRevision = :r, announcedAt = :at"),
		ConditionExpression: aws.String("attribute_exists(pk) AND (" + cond + ")"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{
			":v": nv(version), ":r": nv(revision), ":prev": nv(version - 1), ":at": sv(ts(at)),
		},
	})
	if isCondFailed(err) {
		return fmt.Errorf("awsadapters: mark announced: %w", pipeline.ErrConditionFailed)
	}
	if err != nil {
		return fmt.Errorf("awsadapters: mark announced: %w", err)
	}
	// Leave the pending index only if nothing arrived since.
	_, err = x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &x.Table, Key: key(studyPK(uid), "STUDY"),
		UpdateExpression:          aws.String("REMOVE gsi1pk"),
		ConditionExpression:       aws.String("revision = :r"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":r": nv(revision)},
	})
	if err != nil && !isCondFailed(err) {
		return fmt.Errorf("awsadapters: mark announced: %w", err)
	}
	return nil
}

// EventPublished implements pipeline.IndexStore.
func (x *IndexTable) EventPublished(ctx context.Context, id string) (bool, error) {
	item, err := x.get(ctx, "EVENT#"+id, "EVENT")
	return item != nil, err
}

// MarkEventPublished implements pipeline.IndexStore.
func (x *IndexTable) MarkEventPublished(ctx context.Context, id string, at time.Time) error {
	_, err := x.Client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: &x.Table,
		Item:      map[string]ddbtypes.AttributeValue{"pk": sv("EVENT#" + id), "sk": sv("EVENT"), "publishedAt": sv(ts(at))},
		// Keep the first time on a repeat.
		ConditionExpression: aws.String("attribute_not_exists(pk)"),
	})
	if err != nil && !isCondFailed(err) {
		return fmt.Errorf("awsadapters: mark event published: %w", err)
	}
	return nil
}
