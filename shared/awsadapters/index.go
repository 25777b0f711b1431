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
// instances, gsi1sk = <last activity ts>; keys only) and byPatient
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

// str returns a string attribute, "" if absent or of another type.
func str(item map[string]ddbtypes.AttributeValue, k string) string {
	if v, ok := item[k].(*ddbtypes.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

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
	return errors.As(err, &ccf)
}

func (x *IndexTable) get(ctx context.Context, pk, sk string) (map[string]ddbtypes.AttributeValue, error) {
	out, err := x.Client.GetItem(ctx, &dynamodb.GetItemInput{TableName: &x.Table, Key: key(pk, sk), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("awsadapters: get %s %s: %w", pk, sk, err)
	}
	return out.Item, nil
}

// UpsertInstance implements pipeline.IndexStore with conditional single-item
// writes (no transactions, so DynamoDB-compatible emulators work too):
//
//  1. the SOP marker decides new vs conflict (put if absent or same content);
//  2. the series item is created if absent;
//  3. the instance item is the claim: put if absent, else this content was
//     seen before, and if it was fully applied the result is Duplicate;
//  4. each counter update (series, study) is guarded by a flag set first on
//     the instance item, so a retry never counts twice. A crash between a
//     flag and its counter under-counts; GetStudy recomputes the aggregates
//     from the instance items and repairs the counters.
func (x *IndexTable) UpsertInstance(ctx context.Context, in pipeline.InstanceRecord) (pipeline.UpsertResult, error) {
	pk := studyPK(in.StudyInstanceUID)
	instSK := "INSTANCE#" + in.SOPInstanceUID + "#" + in.SHA256
	seriesSK := "SERIES#" + in.SeriesInstanceUID
	rt := ts(in.ReceivedAt)

	outcome := pipeline.InstanceNew
	_, err := x.Client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 &x.Table,
		Item:                      map[string]ddbtypes.AttributeValue{"pk": sv(pk), "sk": sv("SOP#" + in.SOPInstanceUID), "sha256": sv(in.SHA256)},
		ConditionExpression:       aws.String("attribute_not_exists(pk) OR sha256 = :sha"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":sha": sv(in.SHA256)},
	})
	switch {
	case isCondFailed(err):
		outcome = pipeline.InstanceConflict
	case err != nil:
		return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: sop marker: %w", err)
	}

	newSeries := true
	s := map[string]ddbtypes.AttributeValue{
		"pk": sv(pk), "sk": sv(seriesSK), "seriesInstanceUid": sv(in.SeriesInstanceUID),
		"modality": sv(in.Modality), "seriesNumber": sv(in.SeriesNumber), "seriesDescription": sv(in.SeriesDescription),
		"instanceCount": nv(0), "totalBytes": nv(0), "firstReceived": sv(rt), "lastReceived": sv(rt),
	}
	dropEmpty(s)
	_, err = x.Client.PutItem(ctx, &dynamodb.PutItemInput{TableName: &x.Table, Item: s, ConditionExpression: aws.String("attribute_not_exists(pk)")})
	switch {
	case isCondFailed(err):
		newSeries = false
	case err != nil:
		return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: series: %w", err)
	}

	// Conflict means "not the first content indexed for this SOP Instance
	// UID", whatever the SCP flagged.
	in.Conflict = outcome == pipeline.InstanceConflict
	item, err := attributevalue.MarshalMapWithOptions(in, jsonTags)
	if err != nil {
		return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: marshal instance: %w", err)
	}
	dropEmpty(item)
	item["pk"], item["sk"] = sv(pk), sv(instSK)
	item["outcome"] = sv(outcome.String())
	item["newSeries"] = &ddbtypes.AttributeValueMemberBOOL{Value: newSeries}
	_, err = x.Client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: &x.Table, Item: item, ConditionExpression: aws.String("attribute_not_exists(pk)"),
	})
	if isCondFailed(err) {
		// Seen before: resume where that attempt stopped.
		prev, err := x.get(ctx, pk, instSK)
		if err != nil {
			return pipeline.UpsertResult{}, err
		}
		if b, ok := prev["applied"].(*ddbtypes.AttributeValueMemberBOOL); ok && b.Value {
			st, err := x.study(ctx, in.StudyInstanceUID)
			return pipeline.UpsertResult{Outcome: pipeline.InstanceDuplicate, Study: st}, err
		}
		if o, ok := prev["outcome"].(*ddbtypes.AttributeValueMemberS); ok && o.Value == pipeline.InstanceConflict.String() {
			outcome = pipeline.InstanceConflict
		} else {
			outcome = pipeline.InstanceNew
		}
		if b, ok := prev["newSeries"].(*ddbtypes.AttributeValueMemberBOOL); ok {
			newSeries = b.Value
		}
	} else if err != nil {
		return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: instance: %w", err)
	}

	var newInstance int64
	if outcome == pipeline.InstanceNew {
		newInstance = 1
	}
	first, err := x.flag(ctx, pk, instSK, "seriesApplied")
	if err != nil {
		return pipeline.UpsertResult{}, err
	}
	if first {
		if _, err := x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: &x.Table, Key: key(pk, seriesSK),
			UpdateExpression:          aws.String("ADD instanceCount :n, totalBytes :b"),
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":n": nv(newInstance), ":b": nv(in.Size)},
		}); err != nil {
			return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: series counters: %w", err)
		}
	}
	first, err = x.flag(ctx, pk, instSK, "studyApplied")
	if err != nil {
		return pipeline.UpsertResult{}, err
	}
	if first {
		if _, err := x.Client.UpdateItem(ctx, x.studyUpdate(in, outcome, newSeries)); err != nil {
			return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: study counters: %w", err)
		}
	}
	// Received times are kept as min/max with conditional updates:
	// deliveries may be processed out of order.
	for _, sk := range []string{"STUDY", seriesSK} {
		if err := x.widen(ctx, pk, sk, rt, sk == "STUDY"); err != nil {
			return pipeline.UpsertResult{}, err
		}
	}
	// A duplicate delivery returned above, so only new and conflicting
	// content (the upserts that move revision) counts as activity: a
	// retried message must not keep postponing the announcement.
	if err := x.touch(ctx, pk, ts(in.Activity())); err != nil {
		return pipeline.UpsertResult{}, err
	}
	if _, err := x.flag(ctx, pk, instSK, "applied"); err != nil {
		return pipeline.UpsertResult{}, err
	}
	st, err := x.study(ctx, in.StudyInstanceUID)
	return pipeline.UpsertResult{Outcome: outcome, Study: st}, err
}

// flag sets a boolean attribute on an item if it is not set yet and
// reports whether this call set it.
func (x *IndexTable) flag(ctx context.Context, pk, sk, attr string) (bool, error) {
	_, err := x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &x.Table, Key: key(pk, sk),
		UpdateExpression:          aws.String("SET #a = :t"),
		ConditionExpression:       aws.String("attribute_exists(pk) AND attribute_not_exists(#a)"),
		ExpressionAttributeNames:  map[string]string{"#a": attr},
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":t": &ddbtypes.AttributeValueMemberBOOL{Value: true}},
	})
	if isCondFailed(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("awsadapters: flag %s: %w", attr, err)
	}
	return true, nil
}

func (x *IndexTable) studyUpdate(in pipeline.InstanceRecord, outcome pipeline.UpsertOutcome, newSeries bool) *dynamodb.UpdateItemInput {
	vals := map[string]ddbtypes.AttributeValue{
		":one": nv(1), ":b": nv(in.Size), ":uid": sv(in.StudyInstanceUID), ":pending": sv(pending),
		":kind": sv("STUDY"), ":rt": sv(ts(in.ReceivedAt)), ":at": sv(ts(in.Activity())),
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
		"studyInstanceUid = :uid", "#kind = :kind", "gsi1pk = :pending",
		"firstReceived = if_not_exists(firstReceived, :rt)", "lastReceived = if_not_exists(lastReceived, :rt)",
		"lastActivity = if_not_exists(lastActivity, :at)", "gsi1sk = if_not_exists(lastActivity, :at)",
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
	return &dynamodb.UpdateItemInput{
		TableName: &x.Table, Key: key(studyPK(in.StudyInstanceUID), "STUDY"),
		UpdateExpression:          aws.String("SET " + strings.Join(set, ", ") + " ADD " + strings.Join(add, ", ")),
		ExpressionAttributeNames:  map[string]string{"#kind": "kind"},
		ExpressionAttributeValues: vals,
	}
}

// widen moves firstReceived back and lastReceived forward to include rt.
// On the study item it also moves the patient index's sort key (patient
// listings sort by last received; the pending index sorts by last
// activity: see touch).
func (x *IndexTable) widen(ctx context.Context, pk, sk, rt string, study bool) error {
	if study {
		if err := x.setIf(ctx, pk, sk, "gsi2sk = :v", "attribute_exists(gsi2pk) AND gsi2sk < :v", rt); err != nil {
			return fmt.Errorf("awsadapters: widen %s: %w", sk, err)
		}
	}
	for _, u := range []struct{ set, cond string }{
		{"lastReceived = :v", "lastReceived < :v"},
		{"firstReceived = :v", "firstReceived > :v"},
	} {
		if err := x.setIf(ctx, pk, sk, u.set, u.cond, rt); err != nil {
			return fmt.Errorf("awsadapters: widen %s: %w", sk, err)
		}
	}
	return nil
}

// touch moves the study's lastActivity, and with it the pending index's
// sort key, forward to at. A conditional single-item update, so an
// out-of-order or concurrent upsert never moves it back; a study item
// written before lastActivity existed gets it on its next activity.
func (x *IndexTable) touch(ctx context.Context, pk, at string) error {
	if err := x.setIf(ctx, pk, "STUDY", "lastActivity = :v, gsi1sk = :v", "attribute_not_exists(lastActivity) OR lastActivity < :v", at); err != nil {
		return fmt.Errorf("awsadapters: study activity: %w", err)
	}
	return nil
}

// setIf runs "SET set" on an item, with :v bound to v, when cond holds. A
// condition that does not hold is no error: another delivery already
// moved the value at least as far.
func (x *IndexTable) setIf(ctx context.Context, pk, sk, set, cond, v string) error {
	_, err := x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &x.Table, Key: key(pk, sk),
		UpdateExpression:          aws.String("SET " + set),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":v": sv(v)},
	})
	if err != nil && !isCondFailed(err) {
		return err
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
	LastActivity      string   `dynamodbav:"lastActivity"` // absent on items written before it existed
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
		LastActivity: parseTS(s.LastActivity), Revision: s.Revision, AnnouncedRevision: s.AnnouncedRevision, AnnouncedVersion: s.AnnouncedVersion,
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
			sk := str(item, "sk")
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
	return d, x.reconcile(ctx, &d)
}

// reconcile recomputes the aggregates from the instance items (the truth)
// and repairs the stored counters if an interrupted upsert left them short.
func (x *IndexTable) reconcile(ctx context.Context, d *pipeline.StudyDetail) error {
	type agg struct {
		n, conflicts int
		bytes        int64
	}
	series := map[string]*agg{}
	var total agg
	for _, in := range d.Instances {
		a := series[in.SeriesInstanceUID]
		if a == nil {
			a = &agg{}
			series[in.SeriesInstanceUID] = a
		}
		for _, g := range []*agg{a, &total} {
			if in.Conflict {
				g.conflicts++
			} else {
				g.n++
			}
			g.bytes += in.Size
		}
	}
	for i := range d.Series {
		if a := series[d.Series[i].SeriesInstanceUID]; a != nil {
			d.Series[i].InstanceCount, d.Series[i].TotalBytes = a.n, a.bytes
		}
	}
	s := &d.StudySummary
	if s.InstanceCount == total.n && s.ConflictCount == total.conflicts && s.TotalBytes == total.bytes && s.SeriesCount == len(series) {
		return nil
	}
	s.InstanceCount, s.ConflictCount, s.TotalBytes, s.SeriesCount = total.n, total.conflicts, total.bytes, len(series)
	_, err := x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &x.Table, Key: key(studyPK(s.StudyInstanceUID), "STUDY"),
		UpdateExpression:    aws.String("SET instanceCount = :n, conflictCount = :c, totalBytes = :b, seriesCount = :s"),
		ConditionExpression: aws.String("revision = :r"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{
			":n": nv(int64(total.n)), ":c": nv(int64(total.conflicts)), ":b": nv(total.bytes), ":s": nv(int64(len(series))), ":r": nv(s.Revision),
		},
	})
	if err != nil && !isCondFailed(err) {
		return fmt.Errorf("awsadapters: reconcile study: %w", err)
	}
	return nil
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
// byPending index, sorted by last activity. Items written before
// lastActivity existed keep gsi1sk = lastReceived, which is what they are
// judged on.
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
		pk := str(k, "pk")
		s, err := x.study(ctx, strings.TrimPrefix(pk, "STUDY#"))
		if err != nil {
			return nil, err
		}
		// The index is eventually consistent: re-check on the item
		// (Quiet falls back to lastReceived on items without lastActivity).
		if s.Revision > s.AnnouncedRevision && !s.Quiet().After(quietSince) {
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
