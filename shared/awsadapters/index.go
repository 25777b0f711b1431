package awsadapters

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"golang.org/x/sync/singleflight"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// Index table layout:
//
//	pk = "SOP#<sop>"      sk = "SOP"                    the contents indexed under a SOP Instance UID, in any study,
//	                                                    and the studies they are in (Instances)
//	pk = "STUDY#<study>"  sk = "STUDY"                  study aggregate
//	pk = "STUDY#<study>"  sk = "SERIES#<series>"        series marker (which content created it)
//	pk = "STUDY#<study>"  sk = "INSTANCE#<sop>#<sha>"   one per distinct content
//	pk = "STUDY#<study>"  sk = "REJECTED#<sop>"         an instance validation rejected (RecordRejected)
//	pk = "EVENT#<id>"     sk = "EVENT"                  publish ledger
//
// GSIs: byPending (gsi1pk = "PENDING" only while a study has unannounced
// instances, gsi1sk = <last activity ts>; keys only) and byPatient
// (gsi2pk = "PATIENT#<id>", gsi2sk = <last received ts>; on study items),
// which no code here reads: an operator's query of a patient's studies.
// Nothing lists every study: the index answers by key (GetStudy,
// Instances) and by its sparse indexes, never by a scan.
//
// Study items written before indexVersion 2 (with per-study markers
// sk = "SOP#<sop>" and series items holding counters) are migrated by the
// first upsert that meets them: see migrate.
const (
	gsiByPending = "byPending"
	pending      = "PENDING"
	// indexVersion marks study items kept by the upsert protocol below.
	indexVersion = 2
	// finalizeAttempts bounds the optimistic retries of a study's
	// attribute update under contention.
	finalizeAttempts = 50
	// pendingGrace is how long a study with a content still pending (counted
	// in step 3, its upsert not complete) is held back from announcement
	// after its last count: an upsert completes in milliseconds, and one cut
	// short is retried within the queue's redelivery horizon (six function
	// timeouts a receive, five receives: an hour). A claimant that died
	// leaves its entry for good, so the hold cannot wait for it forever.
	pendingGrace = time.Hour
)

// IndexTable is the study index in DynamoDB. Use it through a pointer: it
// remembers the series markers it has seen.
type IndexTable struct {
	Client DynamoAPI
	Table  string
	// Logger receives the failed cleanups of the studies StableStudies passes over (no UIDs); nil discards.
	Logger *slog.Logger

	markers markerCreators
}

var _ pipeline.IndexStore = (*IndexTable)(nil)

func sv(v string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberS{Value: v} }
func nv(n int64) ddbtypes.AttributeValue {
	return &ddbtypes.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}
func ssv(v ...string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberSS{Value: v} }

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

// inSet reports whether the string set attribute k of item holds v.
func inSet(item map[string]ddbtypes.AttributeValue, k, v string) bool {
	s, ok := item[k].(*ddbtypes.AttributeValueMemberSS)
	return ok && slices.Contains(s.Value, v)
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

// itemKind is what errors say of an item: its sort key's kind (STUDY,
// SERIES, ...) without the UIDs after it, as errors reach logs.
func itemKind(sk string) string {
	kind, _, _ := strings.Cut(sk, "#")
	return kind
}

func (x *IndexTable) get(ctx context.Context, pk, sk string) (map[string]ddbtypes.AttributeValue, error) {
	out, err := x.Client.GetItem(ctx, &dynamodb.GetItemInput{TableName: &x.Table, Key: key(pk, sk), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("awsadapters: get %s item: %w", itemKind(sk), err)
	}
	return out.Item, nil
}

// errLegacyStudy: the study item predates indexVersion 2.
var errLegacyStudy = errors.New("awsadapters: study item predates index version 2")

// UpsertInstance implements pipeline.IndexStore with conditional
// single-item writes. TransactWriteItems would make the writes below one
// call, but dynalite, the emulator the tests run on, has no transactions;
// and on DynamoDB a transaction costs two write units per item and is
// cancelled (TransactionConflict) whenever another one touches the same
// study item, which concurrent deliveries of one study do all the time,
// while a single-item update just queues. A new instance costs four
// calls, five or six for the first instance of a series an execution
// environment meets:
//
//  1. the claim: an update adding the content's hash to the set of
//     contents indexed under the SOP Instance UID (in any study), which
//     returns the item as it was: the first content decides new or
//     conflict, and exactly one call ever finds its content absent, the
//     claimant;
//  2. the series marker is created unless present (newSeries); its
//     creator never changes, so the IndexTable remembers it and reads or
//     writes the marker only on the first instance of the series it meets;
//  3. the study's counters move in one update that also adds the content
//     to the study's pending set, conditioned on it not being there, and
//     records the counting call's object key (counterAttr): the study item
//     remembers which contents it counted until their upsert is complete,
//     and which transfer counted each until that transfer's record is the
//     instance item. It returns the study as updated;
//  4. the instance item is written, its findings decided on that study;
//  5. the study's other attributes (received times, activity, fill-ins,
//     patient-mismatch) are written by one update conditioned on the
//     values the decision was made on, which also takes the content out of
//     the pending set and drops its counting key. Under contention it
//     reads the study and retries.
//
// Any other call for a claimed content (a redelivery, a retry after a
// crash, a concurrent delivery, another transfer of the same content under
// another object key) is fenced: it reads the study, then the instance
// item. Instance item present and not pending: a duplicate. Pending:
// counted, so it writes the instance item and the attributes (step 4,
// step 5 without the removal) and reports a duplicate. Neither: not
// counted yet (or the claimant died before step 3), so it runs steps 2 to
// 5 with step 3 conditioned on the study's revision being the one it
// read, which any count moves, and leaves the removal from the pending set
// to the claimant (whose own step 3, finding the content pending, makes it
// a fenced call too). A count therefore happens once: the claimant's step
// 3 fails on a pending content, a fenced one on any count since its read,
// and a content leaves the pending set only after its instance item
// exists. The price of a claimant dying after step 1 or 3: its content
// stays in the pending set (a 32-character entry per crash); Instances
// lists it all the same once its instance item exists. The counting key
// (up to some 300 bytes with the object key) stays only while no call of that
// key completes: the counting transfer's retry or redelivery drops it, a
// transfer never processed again (its message purged from the DLQ)
// leaves it for good.
//
// Which transfer the content's row and every duplicate name is the one
// that counted it, whatever the order: a call of another object key writes
// its own record only where none is (the counting call may have died
// before step 4, and the content must be listed), never over one, and
// while the content has a counting key it reports the record under that
// key (asCounted), so it is audited as a resend (pipeline.Resent), not as
// the counted transfer under the same audit id. A call of the counting key
// (the counting call, its retry, a redelivery) writes its record whatever
// the row holds, taking the row back, and drops the counting key once its
// record is there. Rewrites of a record's findings (step 5) are
// conditioned on the row still naming its key.
func (x *IndexTable) UpsertInstance(ctx context.Context, in pipeline.InstanceRecord) (pipeline.UpsertResult, error) {
	if in.StudyInstanceUID == "" || in.SOPInstanceUID == "" {
		return pipeline.UpsertResult{}, errors.New("awsadapters: upsert instance: study and SOP instance UID are required")
	}
	out, err := x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &x.Table, Key: key("SOP#"+in.SOPInstanceUID, "SOP"),
		UpdateExpression: aws.String("SET firstSha = if_not_exists(firstSha, :sha), firstStudy = if_not_exists(firstStudy, :study) ADD shas :shas, studies :studies"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{
			":sha": sv(in.ContentIdentity), ":study": sv(in.StudyInstanceUID), ":shas": ssv(in.ContentIdentity), ":studies": ssv(in.StudyInstanceUID),
		},
		ReturnValues: ddbtypes.ReturnValueAllOld,
	})
	if err != nil {
		return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: claim content: %w", err)
	}
	outcome := pipeline.ContentOutcome(firstContent(out.Attributes), in)
	claimant := !inSet(out.Attributes, "shas", in.ContentIdentity)
	if claimant {
		res, err := x.claimed(ctx, in, outcome)
		if !errors.Is(err, errLegacyStudy) {
			return res, err
		}
		if err := x.migrate(ctx, in.StudyInstanceUID); err != nil {
			return pipeline.UpsertResult{}, err
		}
	}
	return x.fenced(ctx, in, outcome, claimant)
}

// firstContent is the first content a SOP item names.
func firstContent(sop map[string]ddbtypes.AttributeValue) pipeline.FirstContent {
	return pipeline.FirstContent{ContentIdentity: str(sop, "firstSha"), StudyInstanceUID: str(sop, "firstStudy")}
}

// contentID names a content in the study's pending set and on the series
// marker it created: a digest, to keep the set small.
func contentID(in pipeline.InstanceRecord) string {
	h := sha256.Sum256([]byte(in.SOPInstanceUID + "\x00" + in.ContentIdentity))
	return hex.EncodeToString(h[:16])
}

func instanceSK(in pipeline.InstanceRecord) string {
	return "INSTANCE#" + in.SOPInstanceUID + "#" + in.ContentIdentity
}

// claimed runs steps 2 to 5 for the claimant.
func (x *IndexTable) claimed(ctx context.Context, in pipeline.InstanceRecord, outcome pipeline.UpsertOutcome) (pipeline.UpsertResult, error) {
	newSeries, err := x.seriesMarker(ctx, in)
	if err != nil {
		return pipeline.UpsertResult{}, err
	}
	up, err := x.Client.UpdateItem(ctx, x.countUpdate(in, outcome, newSeries, false, nil))
	if err == nil {
		return x.complete(ctx, in, outcome, true, up.Attributes, true, in.ObjectKey)
	}
	if !isCondFailed(err) {
		return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: study counters: %w", err)
	}
	// Pending: a fenced call counted it meanwhile (or an old study item,
	// which fenced migrates). Its record may be written, or another
	// transfer's in its stead: read them as any other call would.
	return x.fenced(ctx, in, outcome, true)
}

// fenced indexes a content this call did not claim; remove is whether it
// may take the content out of the pending set (only the claimant may).
func (x *IndexTable) fenced(ctx context.Context, in pipeline.InstanceRecord, outcome pipeline.UpsertOutcome, remove bool) (pipeline.UpsertResult, error) {
	pk, id := studyPK(in.StudyInstanceUID), contentID(in)
	for range finalizeAttempts {
		item, err := x.get(ctx, pk, "STUDY")
		if err != nil {
			return pipeline.UpsertResult{}, err
		}
		if item != nil && item["indexVersion"] == nil {
			if err := x.migrate(ctx, in.StudyInstanceUID); err != nil {
				return pipeline.UpsertResult{}, err
			}
			// The migration may have found an earlier first content.
			sop, err := x.get(ctx, "SOP#"+in.SOPInstanceUID, "SOP")
			if err != nil {
				return pipeline.UpsertResult{}, err
			}
			outcome = pipeline.ContentOutcome(firstContent(sop), in)
			continue
		}
		counter := str(item, counterAttr(in))
		prevItem, err := x.get(ctx, pk, instanceSK(in))
		if err != nil {
			return pipeline.UpsertResult{}, err
		}
		if prevItem != nil {
			prev, err := decodeInstance(prevItem)
			if err != nil {
				return pipeline.UpsertResult{}, err
			}
			st, err := decodeStudy(item)
			if err != nil {
				return pipeline.UpsertResult{}, err
			}
			own := counter != "" && counter == in.ObjectKey
			if own && prev.ObjectKey != in.ObjectKey {
				// The counting transfer again (its retry), after another
				// transfer of the content wrote its record in its stead:
				// it takes its row back.
				return x.complete(ctx, in, outcome, false, item, remove, counter)
			}
			if own || inSet(item, "pending", id) {
				// Between steps 4 and 5, or its claimant died there.
				if st, prev, err = x.finalize(ctx, prev, st, remove, own); err != nil {
					return pipeline.UpsertResult{}, err
				}
			}
			reported := asCounted(prev, counter)
			if st.NoteResend(reported, in) {
				written, err := x.noteSent(ctx, in.StudyInstanceUID, in.ReceivedAt)
				if err != nil {
					return pipeline.UpsertResult{}, err
				}
				if written != nil {
					if st, err = decodeStudy(written); err != nil {
						return pipeline.UpsertResult{}, err
					}
				}
			}
			return pipeline.UpsertResult{Outcome: pipeline.InstanceDuplicate, Study: st, Instance: reported}, nil
		}
		if inSet(item, "pending", id) {
			res, err := x.complete(ctx, in, outcome, false, item, remove, counter)
			if errors.Is(err, errRowTaken) {
				continue // the counting transfer wrote its record meanwhile
			}
			return res, err
		}
		newSeries, err := x.seriesMarker(ctx, in)
		if err != nil {
			return pipeline.UpsertResult{}, err
		}
		up, err := x.Client.UpdateItem(ctx, x.countUpdate(in, outcome, newSeries, true, item))
		switch {
		case err == nil:
			return x.complete(ctx, in, outcome, true, up.Attributes, remove, in.ObjectKey)
		case !isCondFailed(err):
			return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: study counters: %w", err)
		}
	}
	return pipeline.UpsertResult{}, fmt.Errorf("awsadapters: study counters: still contended after %d attempts", finalizeAttempts)
}

// NoteSent implements pipeline.IndexStore: one conditional UpdateItem,
// which does nothing to a study not indexed or last sent at or after at;
// refused, a read of the study item tells the two apart (ErrNotFound for
// the first).
func (x *IndexTable) NoteSent(ctx context.Context, studyUID string, at time.Time) error {
	written, err := x.noteSent(ctx, studyUID, at)
	if err != nil || written != nil {
		return err
	}
	item, err := x.get(ctx, studyPK(studyUID), "STUDY")
	if err == nil && item == nil {
		err = fmt.Errorf("awsadapters: study last sent: %w", pipeline.ErrNotFound)
	}
	return err
}

// noteSent moves the study's lastSent forward to at
// (pipeline.StudySummary.NoteSent: after both its lastSent and its
// lastReceived) and returns the study item as written, or nil when the
// condition refused it: the study is not indexed, or was last sent at or
// after at (a later send noted meanwhile). For a duplicate it is the one
// call beyond its three, made only by a resend received after the study
// was last sent as read (a redelivery never makes it).
func (x *IndexTable) noteSent(ctx context.Context, studyUID string, at time.Time) (map[string]ddbtypes.AttributeValue, error) {
	out, err := x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &x.Table, Key: key(studyPK(studyUID), "STUDY"),
		UpdateExpression: aws.String("SET lastSent = :at"),
		ConditionExpression: aws.String("attribute_exists(pk) AND (attribute_not_exists(lastSent) OR lastSent < :at)" +
			" AND (attribute_not_exists(lastReceived) OR lastReceived < :at)"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":at": sv(ts(at))},
		ReturnValues:              ddbtypes.ReturnValueAllNew,
	})
	switch {
	case isCondFailed(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("awsadapters: study last sent: %w", err)
	}
	return out.Attributes, nil
}

// seriesMarker is step 2; it reports whether in's content created (or
// creates) the marker. A marker's creator never changes and nothing deletes
// a marker, so once this environment has seen one it decides from memory:
// every instance of a series after the first costs no call, where a
// conditional put on every instance cost a write, failed for all but the
// first, and queued on the marker's item behind the series' other
// instances. An unknown marker is read first (most are already there,
// created in another environment) and put only when absent; the messages
// of a batch that meet it together share that lookup.
func (x *IndexTable) seriesMarker(ctx context.Context, in pipeline.InstanceRecord) (bool, error) {
	id, k := contentID(in), markerKey(in)
	if creator, ok := x.markers.get(k); ok {
		return creator == id, nil
	}
	creator, err, _ := x.markers.lookups.Do(k, func() (any, error) { return x.lookUpMarker(ctx, in, id, k) })
	if err != nil {
		return false, err
	}
	return creator.(string) == id, nil
}

// lookUpMarker reads the marker's creator, creating the marker with id
// as its creator if absent, and remembers it under k (markerKey).
func (x *IndexTable) lookUpMarker(ctx context.Context, in pipeline.InstanceRecord, id, k string) (string, error) {
	pk, sk := studyPK(in.StudyInstanceUID), seriesSK(in)
	item, err := x.get(ctx, pk, sk)
	if err != nil {
		return "", err
	}
	if item == nil {
		created, err := x.putSeriesMarker(ctx, in, id)
		if err != nil {
			return "", err
		}
		if created {
			x.markers.put(k, id)
			return id, nil
		}
		// Created meanwhile by another content: read whose it is.
		if item, err = x.get(ctx, pk, sk); err != nil {
			return "", err
		}
		if item == nil {
			return "", errors.New("awsadapters: series: marker exists for the put, absent for the read")
		}
	}
	// Markers written before creators were recorded have none: no content
	// created them, as the conditional put also decides.
	creator := str(item, "creator")
	x.markers.put(k, creator)
	return creator, nil
}

// putSeriesMarker creates the marker unless present; the content that
// created it sees it as new on a retry too.
func (x *IndexTable) putSeriesMarker(ctx context.Context, in pipeline.InstanceRecord, id string) (bool, error) {
	s := map[string]ddbtypes.AttributeValue{"pk": sv(studyPK(in.StudyInstanceUID)), "sk": sv(seriesSK(in)),
		"seriesInstanceUid": sv(in.SeriesInstanceUID), "creator": sv(id)}
	dropEmpty(s)
	_, err := x.Client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: &x.Table, Item: s,
		ConditionExpression:       aws.String("attribute_not_exists(pk) OR creator = :id"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":id": sv(id)},
	})
	switch {
	case isCondFailed(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("awsadapters: series: %w", err)
	}
	return true, nil
}

// markerCreators remembers the creators of the series markers an
// IndexTable has read or written. Bounded: it forgets everything when
// full, which costs a read per series afterwards.
type markerCreators struct {
	mu      sync.Mutex
	m       map[string]string // markerKey → creator
	lookups singleflight.Group
}

// maxMarkers bounds markerCreators: about 250 bytes an entry.
const maxMarkers = 4096

// seriesSK is the sort key of a series' marker under its study.
func seriesSK(in pipeline.InstanceRecord) string { return "SERIES#" + in.SeriesInstanceUID }

func markerKey(in pipeline.InstanceRecord) string {
	return in.StudyInstanceUID + "\x00" + in.SeriesInstanceUID
}

func (c *markerCreators) get(k string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	creator, ok := c.m[k]
	return creator, ok
}

func (c *markerCreators) put(k, creator string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxMarkers {
		c.m = make(map[string]string)
	}
	c.m[k] = creator
}

// complete runs steps 4 and 5 for a counted content, deciding on the
// study item as counted (or as read). counter is the object key of the
// call that counted it (the study item's counterAttr; in's own when this
// call counted it, "" when counted before counters were recorded). It
// reports verdict if this call counted the content, else a duplicate.
//
// A call of the counter's key (the counting call, its retry, a
// redelivery) writes its record whatever the row holds. Another
// transfer's call writes its own only where no record is yet (the
// counting call may have died before step 4, and the content must be
// listed), and fails with errRowTaken where the counter's is: its caller
// reads that one. It reports the record under the counter's key either
// way (asCounted), so the pipeline audits it as the resend it is.
func (x *IndexTable) complete(ctx context.Context, in pipeline.InstanceRecord, verdict pipeline.UpsertOutcome, counted bool,
	item map[string]ddbtypes.AttributeValue, remove bool, counter string) (pipeline.UpsertResult, error) {
	seen, err := decodeStudy(item)
	if err != nil {
		return pipeline.UpsertResult{}, err
	}
	own := counted || counter == "" || counter == in.ObjectKey
	probe := seen // Merge copies what it changes
	rec := in.Indexed(verdict, probe.Merge(in))
	if err := x.putInstance(ctx, rec, own); err != nil {
		return pipeline.UpsertResult{}, err
	}
	st, rec, err := x.finalize(ctx, rec, seen, remove, own)
	if err != nil {
		return pipeline.UpsertResult{}, err
	}
	if !counted {
		verdict = pipeline.InstanceDuplicate
	}
	return pipeline.UpsertResult{Outcome: verdict, Study: st, Instance: asCounted(rec, counter)}, nil
}

// counterAttr names the study item's attribute that holds the object key
// of the call that counted in's content (step 3), until a call of that key
// has written its record and completed (step 5).
func counterAttr(in pipeline.InstanceRecord) string { return "countedBy#" + contentID(in) }

// asCounted is rec as a call reports it while the content's counting
// transfer (counter, "" once it completed) has not completed: under the
// counter's object key, which the row will name once that transfer
// completes, though another transfer's record holds the row meanwhile.
func asCounted(rec pipeline.InstanceRecord, counter string) pipeline.InstanceRecord {
	if counter != "" {
		rec.ObjectKey = counter
	}
	return rec
}

// errRowTaken: the instance item names another object key than the
// record a call would write.
var errRowTaken = errors.New("awsadapters: instance item holds another transfer's record")

// putInstance writes rec as its content's instance item (step 4, or
// finalize's rewrite of its findings). Unless takeOver, only where no item
// is or the item names rec's object key: errRowTaken otherwise.
func (x *IndexTable) putInstance(ctx context.Context, rec pipeline.InstanceRecord, takeOver bool) error {
	item, err := attributevalue.MarshalMapWithOptions(rec, jsonTags)
	if err != nil {
		return fmt.Errorf("awsadapters: marshal instance: %w", err)
	}
	dropEmpty(item)
	item["pk"], item["sk"] = sv(studyPK(rec.StudyInstanceUID)), sv(instanceSK(rec))
	put := &dynamodb.PutItemInput{TableName: &x.Table, Item: item}
	if !takeOver && rec.ObjectKey != "" {
		put.ConditionExpression = aws.String("attribute_not_exists(pk) OR objectKey = :key")
		put.ExpressionAttributeValues = map[string]ddbtypes.AttributeValue{":key": sv(rec.ObjectKey)}
	}
	_, err = x.Client.PutItem(ctx, put)
	switch {
	case isCondFailed(err):
		return errRowTaken
	case err != nil:
		return fmt.Errorf("awsadapters: instance: %w", err)
	}
	return nil
}

// countUpdate is step 3: the counters (pipeline.StudySummary.Count as
// atomic additions), the pending set and what needs no decision. A fenced
// call passes the study item it read (nil: none existed) as its fence.
func (x *IndexTable) countUpdate(in pipeline.InstanceRecord, outcome pipeline.UpsertOutcome, newSeries, fenced bool, read map[string]ddbtypes.AttributeValue) *dynamodb.UpdateItemInput {
	vals := map[string]ddbtypes.AttributeValue{
		":one": nv(1), ":b": nv(in.Size), ":uid": sv(in.StudyInstanceUID), ":pending": sv(pending), ":kind": sv("STUDY"),
		":v": nv(indexVersion), ":id": ssv(contentID(in)), ":ids": sv(contentID(in)),
	}
	add := []string{"revision :one", "totalBytes :b", "pending :id"}
	if outcome == pipeline.InstanceConflict {
		add = append(add, "conflictCount :one")
	} else {
		add = append(add, "instanceCount :one")
	}
	if newSeries {
		add = append(add, "seriesCount :one")
	}
	// The calling AEs' union needs no decision: pipeline.StudySummary.Merge
	// agrees. The modalities' does (AddModality's bound): step 5 adds them.
	if in.CallingAE != "" {
		vals[":ae"] = ssv(in.CallingAE)
		add = append(add, "callingAes :ae")
	}
	cond := "(attribute_not_exists(pk) OR indexVersion = :v) AND NOT contains(pending, :ids)"
	switch {
	case !fenced:
	case read == nil:
		cond = "attribute_not_exists(pk)"
		delete(vals, ":ids")
	case read["revision"] != nil:
		vals[":r"] = read["revision"]
		cond = "indexVersion = :v AND revision = :r AND NOT contains(pending, :ids)"
	default:
		cond = "indexVersion = :v AND attribute_not_exists(revision) AND NOT contains(pending, :ids)"
	}
	vals[":counted"] = sv(ts(time.Now()))
	set := "SET studyInstanceUid = :uid, #kind = :kind, gsi1pk = :pending, indexVersion = :v, countedAt = :counted"
	names := map[string]string{"#kind": "kind"}
	if in.ObjectKey != "" {
		// The counting transfer's key, which another transfer of the
		// content finding it pending reports (asCounted).
		set += ", #by = :by"
		names["#by"], vals[":by"] = counterAttr(in), sv(in.ObjectKey)
	}
	return &dynamodb.UpdateItemInput{
		TableName: &x.Table, Key: key(studyPK(in.StudyInstanceUID), "STUDY"),
		UpdateExpression:          aws.String(set + " ADD " + strings.Join(add, ", ")),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: vals,
		ReturnValues:              ddbtypes.ReturnValueAllNew,
	}
}

// finalize is step 5: it writes what pipeline.StudySummary.Merge decides
// for rec on the study as seen, conditioned on the values it decided on,
// (remove) takes rec's content out of the pending set and (done: rec is
// the counting transfer's, written) drops the content's counter
// (counterAttr). When the study moved in between it reads it again and
// decides again; should the verdict on rec change (another patient's
// instance filled the study's patient first), it rewrites rec's findings
// before the content can leave the pending set, where the row still names
// rec's object key; where the counting transfer took the row back, it
// goes on with that transfer's record. It returns the study and rec as
// they end up.
func (x *IndexTable) finalize(ctx context.Context, rec pipeline.InstanceRecord, seen pipeline.StudySummary, remove, done bool) (pipeline.StudySummary, pipeline.InstanceRecord, error) {
	for range finalizeAttempts {
		outcome := pipeline.InstanceNew
		if rec.Conflict {
			outcome = pipeline.InstanceConflict
		}
		want := seen // Merge copies what it changes
		fixed := rec.Indexed(outcome, want.Merge(rec))
		if !slices.Equal(fixed.Findings, rec.Findings) {
			err := x.putInstance(ctx, fixed, false)
			switch {
			case errors.Is(err, errRowTaken):
				if rec, err = x.instance(ctx, rec); err != nil {
					return pipeline.StudySummary{}, rec, err
				}
				if seen, err = x.study(ctx, rec.StudyInstanceUID); err != nil {
					return pipeline.StudySummary{}, rec, err
				}
				continue
			case err != nil:
				return pipeline.StudySummary{}, rec, err
			}
			rec = fixed
		}
		out, err := x.Client.UpdateItem(ctx, attributeUpdate(x.Table, rec, seen, want, remove, done))
		switch {
		case err == nil:
			st, err := decodeStudy(out.Attributes)
			return st, rec, err
		case !isCondFailed(err):
			return pipeline.StudySummary{}, rec, fmt.Errorf("awsadapters: study attributes: %w", err)
		}
		if seen, err = x.study(ctx, rec.StudyInstanceUID); err != nil {
			return pipeline.StudySummary{}, rec, err
		}
	}
	return pipeline.StudySummary{}, rec, fmt.Errorf("awsadapters: study attributes: still contended after %d attempts", finalizeAttempts)
}

// instance reads the instance item of rec's content, which exists.
func (x *IndexTable) instance(ctx context.Context, rec pipeline.InstanceRecord) (pipeline.InstanceRecord, error) {
	item, err := x.get(ctx, studyPK(rec.StudyInstanceUID), instanceSK(rec))
	if err != nil {
		return rec, err
	}
	if item == nil {
		return rec, errors.New("awsadapters: instance: item absent after a write refused for it")
	}
	return decodeInstance(item)
}

// attributeUpdate writes the difference between seen and want: attributes
// filled in only if still absent (or, one Merge counts as no value, such
// as a Patient's Name of delimiters alone stored before names took the
// index's form, still as seen), times moved only forward (or, for
// firstReceived, back), findings added to a set.
func attributeUpdate(table string, rec pipeline.InstanceRecord, seen, want pipeline.StudySummary, remove, done bool) *dynamodb.UpdateItemInput {
	vals := map[string]ddbtypes.AttributeValue{}
	var set, cond []string
	fillIn := func(attr, was, v string) {
		if v == "" || v == was {
			return
		}
		vals[":"+attr] = sv(v)
		set = append(set, attr+" = :"+attr)
		if was == "" {
			cond = append(cond, "attribute_not_exists("+attr+")")
		} else {
			vals[":was_"+attr] = sv(was)
			cond = append(cond, attr+" = :was_"+attr)
		}
	}
	fillIn("patientId", seen.PatientID, want.PatientID)
	fillIn("patientName", seen.PatientName, want.PatientName)
	fillIn("patientBirthDate", seen.PatientBirthDate, want.PatientBirthDate)
	fillIn("patientSex", seen.PatientSex, want.PatientSex)
	fillIn("studyDate", seen.StudyDate, want.StudyDate)
	fillIn("studyTime", seen.StudyTime, want.StudyTime)
	fillIn("studyDescription", seen.StudyDescription, want.StudyDescription)
	fillIn("accessionNumber", seen.AccessionNumber, want.AccessionNumber)
	if seen.PatientID == "" && want.PatientID != "" {
		vals[":gsi2pk"] = sv(keyValue("PATIENT#", want.PatientID))
		set = append(set, "gsi2pk = :gsi2pk")
	}
	move := func(attrs []string, was, v time.Time, op string) {
		if !v.Equal(was) {
			name := ":" + attrs[0]
			vals[name] = sv(ts(v))
			for _, a := range attrs {
				set = append(set, a+" = "+name)
			}
			cond = append(cond, fmt.Sprintf("(attribute_not_exists(%s) OR %s %s %s)", attrs[0], attrs[0], op, name))
		}
	}
	move([]string{"firstReceived"}, seen.FirstReceived, want.FirstReceived, ">")
	move([]string{"lastReceived", "gsi2sk"}, seen.LastReceived, want.LastReceived, "<")
	move([]string{"lastSent"}, seen.LastSent, want.LastSent, "<")
	move([]string{"lastActivity", "gsi1sk"}, seen.LastActivity, want.LastActivity, "<")
	// The modalities Merge kept, all in one ADD: added while the set holds
	// no more than the bound less their number, so that racing additions
	// cannot take it past it (the loser decides again on the set as it
	// is). One Merge did not keep marks the set cut. Merge of one record
	// adds one modality at most; the update writes whatever want adds.
	var mods []string
	for _, m := range want.Modalities {
		if !slices.Contains(seen.Modalities, m) {
			mods = append(mods, m)
		}
	}
	if len(mods) > 0 {
		vals[":mods"], vals[":modsRoom"] = ssv(mods...), nv(int64(pipeline.MaxStudyModalities-len(mods)))
		cond = append(cond, "(attribute_not_exists(modalities) OR size(modalities) <= :modsRoom)")
	}
	if want.ModalitiesTruncated && !seen.ModalitiesTruncated {
		vals[":cut"] = &ddbtypes.AttributeValueMemberBOOL{Value: true}
		set = append(set, "modalitiesTruncated = :cut")
	}
	expr := ""
	if len(set) > 0 {
		expr = "SET " + strings.Join(set, ", ") + " "
	}
	var found, add []string
	for _, f := range want.Findings {
		if !slices.Contains(seen.Findings, f) {
			b, _ := json.Marshal(f) // a Finding always marshals
			found = append(found, string(b))
		}
	}
	if len(found) > 0 {
		vals[":findings"] = ssv(found...)
		add = append(add, "findings :findings")
	}
	if vals[":mods"] != nil {
		add = append(add, "modalities :mods")
	}
	if len(add) > 0 {
		expr += "ADD " + strings.Join(add, ", ") + " "
	}
	if remove {
		vals[":id"] = ssv(contentID(rec))
		expr += "DELETE pending :id "
	}
	names := map[string]string{}
	if done {
		names["#by"] = counterAttr(rec)
		expr += "REMOVE #by"
	}
	if expr == "" {
		// Nothing to write: a no-op update still returns the study.
		vals[":kind"] = sv("STUDY")
		names["#kind"] = "kind"
		expr = "SET #kind = :kind"
	}
	in := &dynamodb.UpdateItemInput{
		TableName: &table, Key: key(studyPK(rec.StudyInstanceUID), "STUDY"),
		UpdateExpression:          aws.String(strings.TrimSpace(expr)),
		ExpressionAttributeValues: vals,
		ReturnValues:              ddbtypes.ReturnValueAllNew,
	}
	if len(names) > 0 {
		in.ExpressionAttributeNames = names
	}
	if len(vals) == 0 {
		in.ExpressionAttributeValues = nil
	}
	if len(cond) > 0 {
		in.ConditionExpression = aws.String(strings.Join(cond, " AND "))
	}
	return in
}

// migrate brings a study item from before indexVersion 2 to it: it
// creates the global SOP items from the study's per-study markers (their
// first content wins over a claim this study's own upserts made since),
// recounts the study from its instance items (which also repairs counts an
// interrupted upsert of the old protocol left short) and marks the item.
// Upserts of the study fail step 3 until it is done, so no count moves
// meanwhile.
func (x *IndexTable) migrate(ctx context.Context, studyUID string) error {
	items, err := x.partition(ctx, studyUID)
	if err != nil {
		return err
	}
	shas := map[string][]string{}
	var instances []pipeline.InstanceRecord
	for _, item := range items {
		if strings.HasPrefix(str(item, "sk"), "INSTANCE#") {
			in, err := decodeInstance(item)
			if err != nil {
				return err
			}
			instances = append(instances, in)
			shas[in.SOPInstanceUID] = append(shas[in.SOPInstanceUID], in.ContentIdentity)
		}
	}
	var c pipeline.StudySummary
	series := map[string]bool{}
	for _, in := range instances {
		outcome := pipeline.InstanceNew
		if in.Conflict {
			outcome = pipeline.InstanceConflict
		}
		c.Count(in, outcome, !series[in.SeriesInstanceUID])
		series[in.SeriesInstanceUID] = true
	}
	for _, item := range items {
		sop, ok := strings.CutPrefix(str(item, "sk"), "SOP#")
		if !ok || str(item, pipeline.LegacyContentIdentityField) == "" {
			continue
		}
		first := str(item, pipeline.LegacyContentIdentityField)
		_, err := x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName: &x.Table, Key: key("SOP#"+sop, "SOP"),
			UpdateExpression:    aws.String("SET firstSha = :f, firstStudy = :study ADD shas :shas, studies :studies"),
			ConditionExpression: aws.String("attribute_not_exists(firstSha) OR firstStudy = :study"),
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{
				":f": sv(first), ":study": sv(studyUID), ":shas": ssv(distinct(append(shas[sop], first))...), ":studies": ssv(studyUID),
			},
		})
		if err != nil && !isCondFailed(err) {
			return fmt.Errorf("awsadapters: migrate study: sop item: %w", err)
		}
	}
	_, err = x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &x.Table, Key: key(studyPK(studyUID), "STUDY"),
		UpdateExpression:    aws.String("SET instanceCount = :n, conflictCount = :c, totalBytes = :b, seriesCount = :s, indexVersion = :v"),
		ConditionExpression: aws.String("attribute_exists(pk) AND attribute_not_exists(indexVersion)"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{
			":n": nv(int64(c.InstanceCount)), ":c": nv(int64(c.ConflictCount)), ":b": nv(c.TotalBytes),
			":s": nv(int64(c.SeriesCount)), ":v": nv(indexVersion),
		},
	})
	if err != nil && !isCondFailed(err) {
		return fmt.Errorf("awsadapters: migrate study: %w", err)
	}
	return nil
}

func distinct(v []string) []string {
	slices.Sort(v)
	return slices.Compact(v)
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
	StudyInstanceUID string   `dynamodbav:"studyInstanceUid"`
	PatientID        string   `dynamodbav:"patientId"`
	PatientName      string   `dynamodbav:"patientName"`
	PatientBirthDate string   `dynamodbav:"patientBirthDate"`
	PatientSex       string   `dynamodbav:"patientSex"`
	StudyDate        string   `dynamodbav:"studyDate"`
	StudyTime        string   `dynamodbav:"studyTime"`
	StudyDescription string   `dynamodbav:"studyDescription"`
	AccessionNumber  string   `dynamodbav:"accessionNumber"`
	Modalities       []string `dynamodbav:"modalities,stringset"`
	// ModalitiesTruncated: a modality was not kept (pipeline.StudySummary.AddModality).
	ModalitiesTruncated bool     `dynamodbav:"modalitiesTruncated"`
	CallingAEs          []string `dynamodbav:"callingAes,stringset"`
	SeriesCount         int      `dynamodbav:"seriesCount"`
	InstanceCount       int      `dynamodbav:"instanceCount"`
	ConflictCount       int      `dynamodbav:"conflictCount"`
	TotalBytes          int64    `dynamodbav:"totalBytes"`
	FirstReceived       string   `dynamodbav:"firstReceived"`
	LastReceived        string   `dynamodbav:"lastReceived"`
	LastSent            string   `dynamodbav:"lastSent"`     // absent on items written before it existed
	LastActivity        string   `dynamodbav:"lastActivity"` // absent on items written before it existed
	Revision            int64    `dynamodbav:"revision"`
	AnnouncedRevision   int64    `dynamodbav:"announcedRevision"`
	AnnouncedVersion    int64    `dynamodbav:"announcedVersion"`
	// Findings are JSON-encoded pipeline.Findings.
	Findings []string `dynamodbav:"findings,stringset"`
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
	var findings []pipeline.Finding
	for _, b := range s.Findings {
		var f pipeline.Finding
		if err := json.Unmarshal([]byte(b), &f); err != nil {
			return pipeline.StudySummary{}, fmt.Errorf("awsadapters: decode study finding: %w", err)
		}
		findings = pipeline.AddFinding(findings, f)
	}
	return pipeline.StudySummary{
		StudyInstanceUID: s.StudyInstanceUID, PatientID: s.PatientID, PatientName: s.PatientName,
		PatientBirthDate: s.PatientBirthDate, PatientSex: s.PatientSex, StudyDate: s.StudyDate, StudyTime: s.StudyTime,
		StudyDescription: s.StudyDescription, AccessionNumber: s.AccessionNumber, Modalities: s.Modalities, ModalitiesTruncated: s.ModalitiesTruncated,
		CallingAEs: s.CallingAEs, SeriesCount: s.SeriesCount, InstanceCount: s.InstanceCount, ConflictCount: s.ConflictCount,
		TotalBytes: s.TotalBytes, FirstReceived: parseTS(s.FirstReceived), LastReceived: parseTS(s.LastReceived), LastSent: parseTS(s.LastSent),
		LastActivity: parseTS(s.LastActivity), Revision: s.Revision, AnnouncedRevision: s.AnnouncedRevision, AnnouncedVersion: s.AnnouncedVersion,
		Findings: findings,
	}, nil
}

func decodeInstance(item map[string]ddbtypes.AttributeValue) (pipeline.InstanceRecord, error) {
	var in pipeline.InstanceRecord
	if err := attributevalue.UnmarshalMapWithOptions(item, &in, jsonTagsDec); err != nil {
		return in, fmt.Errorf("awsadapters: decode instance: %w", err)
	}
	in.ContentIdentity = pipeline.ReadLegacyContentIdentity(in.ContentIdentity, func(k string) string { return str(item, k) })
	return in, nil
}

// eachItem calls visit with every item of a study's partition, in sort
// key order, a page at a time: no more than a page is held.
func (x *IndexTable) eachItem(ctx context.Context, uid string, visit func(map[string]ddbtypes.AttributeValue) error) error {
	var start map[string]ddbtypes.AttributeValue
	for {
		out, err := x.Client.Query(ctx, &dynamodb.QueryInput{
			TableName: &x.Table, KeyConditionExpression: aws.String("pk = :pk"),
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":pk": sv(studyPK(uid))},
			ConsistentRead:            aws.Bool(true), ExclusiveStartKey: start,
		})
		if err != nil {
			return fmt.Errorf("awsadapters: get study: %w", err)
		}
		for _, item := range out.Items {
			if err := visit(item); err != nil {
				return err
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			return nil
		}
		start = out.LastEvaluatedKey
	}
}

// partition reads every item of a study's partition (a legacy study's
// migration).
func (x *IndexTable) partition(ctx context.Context, uid string) ([]map[string]ddbtypes.AttributeValue, error) {
	var items []map[string]ddbtypes.AttributeValue
	err := x.eachItem(ctx, uid, func(item map[string]ddbtypes.AttributeValue) error {
		items = append(items, item)
		return nil
	})
	return items, err
}

// errPartitionOrder: an instance item after a rejected one, which the sort
// key order (INSTANCE# before REJECTED#) rules out.
var errPartitionOrder = errors.New("awsadapters: get study: an instance item after the rejected ones")

// GetStudy implements pipeline.IndexStore: a read of the study's
// partition, a page at a time; the series are computed from the instance
// items. The rejected items come after every instance item (their sort
// keys, REJECTED# after INSTANCE#), so each is counted as it is read
// (pipeline.RejectedTally), none held.
func (x *IndexTable) GetStudy(ctx context.Context, uid string) (pipeline.StudyDetail, error) {
	var st *pipeline.StudySummary
	var instances []pipeline.InstanceRecord
	var rejected *pipeline.RejectedTally
	err := x.eachItem(ctx, uid, func(item map[string]ddbtypes.AttributeValue) error {
		switch sk := str(item, "sk"); {
		case sk == "STUDY":
			s, err := decodeStudy(item)
			if err != nil {
				return err
			}
			st = &s
		case strings.HasPrefix(sk, "INSTANCE#"):
			if rejected != nil {
				return errPartitionOrder
			}
			in, err := decodeInstance(item)
			if err != nil {
				return err
			}
			instances = append(instances, in)
		case strings.HasPrefix(sk, "REJECTED#"):
			if rejected == nil {
				rejected = pipeline.NewRejectedTally(instances)
			}
			rejected.Add(str(item, "sopInstanceUid"))
		}
		return nil
	})
	if err != nil {
		return pipeline.StudyDetail{}, err
	}
	if st == nil {
		return pipeline.StudyDetail{}, fmt.Errorf("awsadapters: study: %w", pipeline.ErrNotFound)
	}
	return pipeline.NewStudyDetail(*st, instances, rejected.Count()), nil
}

// RecordRejected implements pipeline.IndexStore: an item per SOP Instance
// UID in the study's partition, put again by each delivery alike, which
// GetStudy reads with the rest of the partition. No study item: a study of
// rejected instances only is no study.
func (x *IndexTable) RecordRejected(ctx context.Context, r pipeline.RejectedInstance) error {
	if !r.Valid() {
		return errors.New("awsadapters: record rejected: invalid UIDs")
	}
	_, err := x.Client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: &x.Table,
		Item: map[string]ddbtypes.AttributeValue{"pk": sv(studyPK(r.StudyInstanceUID)), "sk": sv("REJECTED#" + r.SOPInstanceUID),
			"sopInstanceUid": sv(r.SOPInstanceUID)},
	})
	if err != nil {
		return fmt.Errorf("awsadapters: record rejected: %w", err)
	}
	return nil
}

// Instances implements pipeline.IndexStore: the SOP item names the studies
// that claimed a content under the UID (items written before it kept that
// set name their first study only); each study's instance items under the
// UID are read. A content is listed once its instance item is written
// (step 4), whether or not it left its study's pending set: an upsert that
// died after step 1 or 3 leaves it there for good (its retry completes the
// index but only the claimant removes it), and a content listed only after
// step 5 was, after such a crash, never listed at all.
func (x *IndexTable) Instances(ctx context.Context, sop string) ([]pipeline.InstanceRecord, error) {
	item, err := x.get(ctx, "SOP#"+sop, "SOP")
	if err != nil || item == nil {
		return nil, err
	}
	studies := map[string]bool{}
	if s := str(item, "firstStudy"); s != "" {
		studies[s] = true
	}
	if set, ok := item["studies"].(*ddbtypes.AttributeValueMemberSS); ok {
		for _, s := range set.Value {
			studies[s] = true
		}
	}
	var out []pipeline.InstanceRecord
	for _, study := range slices.Sorted(maps.Keys(studies)) {
		q, err := x.Client.Query(ctx, &dynamodb.QueryInput{
			TableName: &x.Table, KeyConditionExpression: aws.String("pk = :pk AND begins_with(sk, :sk)"),
			ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":pk": sv(studyPK(study)), ":sk": sv("INSTANCE#" + sop + "#")},
			ConsistentRead:            aws.Bool(true),
		})
		if err != nil {
			return nil, fmt.Errorf("awsadapters: instances: %w", err)
		}
		for _, it := range q.Items {
			in, err := decodeInstance(it)
			if err != nil {
				return nil, err
			}
			out = append(out, in)
		}
	}
	return out, nil
}

// StableStudies implements pipeline.IndexStore through the sparse
// byPending index, sorted by last activity. Items written before
// lastActivity existed keep gsi1sk = lastReceived, which is what they are
// judged on. The query reads on, a page at a time, until it has limit
// studies to offer: the entries it passes over take no place, and those it
// would pass over at every run are moved out of the way (offered).
func (x *IndexTable) StableStudies(ctx context.Context, quietSince time.Time, limit int) ([]pipeline.StudySummary, error) {
	limit = pipeline.PageLimit(limit, pipeline.DefaultPage, pipeline.MaxPage)
	in := &dynamodb.QueryInput{
		TableName: &x.Table, IndexName: aws.String(gsiByPending),
		KeyConditionExpression:    aws.String("gsi1pk = :p AND gsi1sk <= :t"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":p": sv(pending), ":t": sv(ts(quietSince))},
		Limit:                     aws.Int32(int32(limit)),
	}
	var out []pipeline.StudySummary
	for len(out) < limit {
		res, err := x.Client.Query(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("awsadapters: stable studies: %w", err)
		}
		for _, k := range res.Items {
			if len(out) == limit {
				break
			}
			s, ok, err := x.offered(ctx, str(k, "pk"), quietSince)
			if err != nil {
				return nil, err
			}
			if ok {
				out = append(out, s)
			}
		}
		if len(res.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = res.LastEvaluatedKey
	}
	slices.SortFunc(out, pipeline.CompareStable)
	return out, nil
}

// offered reads a study the byPending index lists as quiet and tells
// whether StableStudies offers it. Of the ones it does not, those every
// later run would meet again are moved out of the way: an announced study
// still in the index (MarkAnnounced's process died before its REMOVE of
// gsi1pk) leaves it, as MarkAnnounced would have it; one with an upsert in
// flight is deferred (DeferAnnouncement) to now, to be looked at again a
// quiet period later, as a study whose announcement failed is. The others
// (the index lagging the item) are passed over.
func (x *IndexTable) offered(ctx context.Context, pk string, quietSince time.Time) (pipeline.StudySummary, bool, error) {
	item, err := x.get(ctx, pk, "STUDY")
	if err != nil || item == nil {
		return pipeline.StudySummary{}, false, err
	}
	s, err := decodeStudy(item)
	if err != nil {
		return s, false, err
	}
	_, listed := item["gsi1pk"]
	switch {
	case s.Revision <= s.AnnouncedRevision:
		if listed {
			x.cleanupFailed(ctx, "leave the pending index", x.leavePending(ctx, s.StudyInstanceUID, s.Revision))
		}
		return s, false, nil
	case s.Quiet().After(quietSince):
		// The index is eventually consistent: re-checked on the item
		// (Quiet falls back to lastReceived on items without lastActivity).
		return s, false, nil
	case upsertInFlight(item, time.Now()):
		// A content counted (step 3) but not yet listed (step 4) would be
		// announced missing, and once announced at its revision the study
		// is never announced again when the content's retry lists it.
		x.cleanupFailed(ctx, "defer", x.DeferAnnouncement(ctx, s.StudyInstanceUID, time.Now()))
		return s, false, nil
	}
	return s, true, nil
}

// StableStudyCleanupFailedLog is the log message of a study StableStudies passed over whose cleanup failed.
const StableStudyCleanupFailedLog = "stable studies: a study passed over was not cleared; the next run meets it again"

// cleanupFailed logs err, a failed cleanup of a study StableStudies passes over anyway (offered's). The read goes
// on: it failed the whole read, so one study's housekeeping (a throttled or refused write) held every other study's
// announcement back for the run; the next run meets the study again and tries again. The error names no study:
// leavePending's and DeferAnnouncement's wrap the SDK's, which names no key.
func (x *IndexTable) cleanupFailed(ctx context.Context, cleanup string, err error) {
	if err == nil {
		return
	}
	log := x.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log.WarnContext(ctx, StableStudyCleanupFailedLog, "cleanup", cleanup, "err", err)
}

// upsertInFlight reports whether the study item holds a content between its
// count and its completion, counted within pendingGrace of now.
func upsertInFlight(item map[string]ddbtypes.AttributeValue, now time.Time) bool {
	set, ok := item["pending"].(*ddbtypes.AttributeValueMemberSS)
	if !ok || len(set.Value) == 0 {
		return false
	}
	counted, err := time.Parse(tsFormat, str(item, "countedAt"))
	return err == nil && now.Sub(counted) < pendingGrace
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
		if _, err := x.study(ctx, uid); err != nil {
			return fmt.Errorf("awsadapters: mark announced: %w", err)
		}
		return fmt.Errorf("awsadapters: mark announced: %w", pipeline.ErrConditionFailed)
	}
	if err != nil {
		return fmt.Errorf("awsadapters: mark announced: %w", err)
	}
	return x.leavePending(ctx, uid, revision)
}

// leavePending takes an announced study out of the byPending index, only if
// nothing arrived since its announced revision.
func (x *IndexTable) leavePending(ctx context.Context, uid string, revision int64) error {
	_, err := x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &x.Table, Key: key(studyPK(uid), "STUDY"),
		UpdateExpression:          aws.String("REMOVE gsi1pk"),
		ConditionExpression:       aws.String("revision = :r"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":r": nv(revision)},
	})
	if err != nil && !isCondFailed(err) {
		return fmt.Errorf("awsadapters: leave the pending index: %w", err)
	}
	return nil
}

// DeferAnnouncement implements pipeline.IndexStore: lastActivity and the
// byPending sort key move to at together, as an upsert's step 5 moves them,
// and on the same condition (only forward), so neither write can move the
// other's time back whichever lands first. gsi1pk is left alone: a study
// announced meanwhile does not return to the index, and one still pending
// stays in it.
func (x *IndexTable) DeferAnnouncement(ctx context.Context, uid string, at time.Time) error {
	_, err := x.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: &x.Table, Key: key(studyPK(uid), "STUDY"),
		UpdateExpression:          aws.String("SET lastActivity = :at, gsi1sk = :at"),
		ConditionExpression:       aws.String("attribute_exists(pk) AND (attribute_not_exists(lastActivity) OR lastActivity < :at)"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":at": sv(ts(at))},
	})
	if isCondFailed(err) {
		// Active at or after at already, or no such study.
		if _, err := x.study(ctx, uid); err != nil {
			return fmt.Errorf("awsadapters: defer announcement: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("awsadapters: defer announcement: %w", err)
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
