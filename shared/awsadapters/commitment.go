package awsadapters

import (
	"context"
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

// CommitmentTable keeps Storage Commitment transactions in the index table:
//
//	pk = "COMMIT#<id>"  sk = "COMMIT"   the transaction (its attributes as in pipeline.CommitmentTransaction)
//
// While a transaction is not done it carries gsi1pk = "COMMITMENT" and
// gsi1sk = <next attempt ts>#<id>, so the byPending index (whose study
// entries live under gsi1pk = "PENDING") finds the due ones in order.
//
// A requesting AE's lease (LeaseCommitmentPeer) is an item of its own, in
// no index:
//
//	pk = "COMMITPEER#<AE title>"  sk = "COMMITPEER"   holder, until (Unix nanoseconds)
//
// released by setting until to 0 (the function may UpdateItem, not
// DeleteItem).
type CommitmentTable struct {
	Client DynamoAPI
	Table  string
}

var _ pipeline.CommitmentStore = (*CommitmentTable)(nil)

const commitmentsDue = "COMMITMENT"

func commitmentKey(id string) map[string]ddbtypes.AttributeValue { return key("COMMIT#"+id, "COMMIT") }

func commitmentItem(tx pipeline.CommitmentTransaction) (map[string]ddbtypes.AttributeValue, error) {
	item, err := attributevalue.MarshalMapWithOptions(tx, jsonTags)
	if err != nil {
		return nil, fmt.Errorf("awsadapters: marshal commitment: %w", err)
	}
	dropEmpty(item)
	item["pk"], item["sk"] = sv("COMMIT#"+tx.ID), sv("COMMIT")
	if !tx.Done() {
		item["gsi1pk"], item["gsi1sk"] = sv(commitmentsDue), sv(ts(tx.NextAttempt)+"#"+tx.ID)
	}
	return item, nil
}

func decodeCommitment(item map[string]ddbtypes.AttributeValue) (pipeline.CommitmentTransaction, error) {
	var tx pipeline.CommitmentTransaction
	if err := attributevalue.UnmarshalMapWithOptions(item, &tx, jsonTagsDec); err != nil {
		return tx, fmt.Errorf("awsadapters: decode commitment: %w", err)
	}
	return tx, nil
}

// CreateCommitment implements pipeline.CommitmentStore with a conditional
// PutItem.
func (c *CommitmentTable) CreateCommitment(ctx context.Context, tx pipeline.CommitmentTransaction) (pipeline.CommitmentTransaction, bool, error) {
	if tx.ID == "" {
		return tx, false, errors.New("awsadapters: create commitment: no id")
	}
	tx.Version = 1
	item, err := commitmentItem(tx)
	if err != nil {
		return tx, false, err
	}
	_, err = c.Client.PutItem(ctx, &dynamodb.PutItemInput{TableName: &c.Table, Item: item,
		ConditionExpression: aws.String("attribute_not_exists(pk)")})
	switch {
	case err == nil:
		return tx, true, nil
	case !isCondFailed(err):
		return tx, false, fmt.Errorf("awsadapters: create commitment: %w", err)
	}
	stored, err := c.GetCommitment(ctx, tx.ID)
	return stored, false, err
}

// GetCommitment implements pipeline.CommitmentStore.
func (c *CommitmentTable) GetCommitment(ctx context.Context, id string) (pipeline.CommitmentTransaction, error) {
	out, err := c.Client.GetItem(ctx, &dynamodb.GetItemInput{TableName: &c.Table, Key: commitmentKey(id), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return pipeline.CommitmentTransaction{}, fmt.Errorf("awsadapters: get commitment: %w", err)
	}
	if out.Item == nil {
		return pipeline.CommitmentTransaction{}, fmt.Errorf("awsadapters: commitment: %w", pipeline.ErrNotFound)
	}
	return decodeCommitment(out.Item)
}

// UpdateCommitment implements pipeline.CommitmentStore: a PutItem
// conditioned on the version read.
func (c *CommitmentTable) UpdateCommitment(ctx context.Context, tx pipeline.CommitmentTransaction) (pipeline.CommitmentTransaction, error) {
	prev := tx.Version
	tx.Version++
	item, err := commitmentItem(tx)
	if err != nil {
		return tx, err
	}
	_, err = c.Client.PutItem(ctx, &dynamodb.PutItemInput{TableName: &c.Table, Item: item,
		ConditionExpression:       aws.String("attribute_exists(pk) AND #v = :v"),
		ExpressionAttributeNames:  map[string]string{"#v": "version"},
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":v": nv(prev)},
	})
	switch {
	case err == nil:
		return tx, nil
	case !isCondFailed(err):
		return tx, fmt.Errorf("awsadapters: update commitment: %w", err)
	}
	if _, gerr := c.GetCommitment(ctx, tx.ID); gerr != nil {
		return tx, gerr
	}
	return tx, fmt.Errorf("awsadapters: update commitment: %w", pipeline.ErrConditionFailed)
}

// DueCommitments implements pipeline.CommitmentStore: a query of the
// byPending index (keys only), then a consistent read of each transaction,
// since the index lags the table.
func (c *CommitmentTable) DueCommitments(ctx context.Context, now time.Time, limit int) ([]pipeline.CommitmentTransaction, error) {
	limit = pipeline.PageLimit(limit, pipeline.DefaultPage, pipeline.MaxPage)
	out, err := c.Client.Query(ctx, &dynamodb.QueryInput{
		TableName: &c.Table, IndexName: aws.String(gsiByPending),
		KeyConditionExpression: aws.String("gsi1pk = :p AND gsi1sk <= :now"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{
			":p": sv(commitmentsDue), ":now": sv(ts(now) + "#~"),
		},
		Limit: aws.Int32(int32(limit)),
	})
	if err != nil {
		return nil, fmt.Errorf("awsadapters: due commitments: %w", err)
	}
	var due []pipeline.CommitmentTransaction
	for _, k := range out.Items {
		id, ok := strings.CutPrefix(str(k, "pk"), "COMMIT#")
		if !ok {
			continue
		}
		tx, err := c.GetCommitment(ctx, id)
		if errors.Is(err, pipeline.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !tx.Done() && !tx.NextAttempt.After(now) {
			due = append(due, tx)
		}
	}
	return due, nil
}

func commitmentPeerKey(ae string) map[string]ddbtypes.AttributeValue {
	return key(keyValue("COMMITPEER#", ae), "COMMITPEER")
}

// peerLeaseTries is how many times LeaseCommitmentPeer asks for a lease
// it finds over once refused.
const peerLeaseTries = 3

// LeaseCommitmentPeer implements pipeline.CommitmentStore: a PutItem
// conditioned on the lease being free, over or holder's; on a refusal, a
// consistent read of the lease in force. A lease the read finds over (its
// holder released it, until 0, or it ended, between the refusal and the
// read) is asked for again, peerLeaseTries times in all; one changing hands
// at every try is answered as held until until.
func (c *CommitmentTable) LeaseCommitmentPeer(ctx context.Context, ae, holder string, now, until time.Time) (time.Time, bool, error) {
	item := commitmentPeerKey(ae)
	item["holder"], item["until"] = sv(holder), nv(until.UnixNano())
	put := &dynamodb.PutItemInput{TableName: &c.Table, Item: item,
		ConditionExpression:       aws.String("attribute_not_exists(pk) OR #u <= :now OR #h = :h"),
		ExpressionAttributeNames:  map[string]string{"#u": "until", "#h": "holder"},
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":now": nv(now.UnixNano()), ":h": sv(holder)},
	}
	for range peerLeaseTries {
		_, err := c.Client.PutItem(ctx, put)
		switch {
		case err == nil:
			return until, true, nil
		case !isCondFailed(err):
			return time.Time{}, false, fmt.Errorf("awsadapters: lease commitment peer: %w", err)
		}
		out, err := c.Client.GetItem(ctx, &dynamodb.GetItemInput{TableName: &c.Table, Key: commitmentPeerKey(ae), ConsistentRead: aws.Bool(true)})
		if err != nil {
			return time.Time{}, false, fmt.Errorf("awsadapters: lease commitment peer: %w", err)
		}
		var held struct {
			Until int64 `dynamodbav:"until"`
		}
		if err := attributevalue.UnmarshalMap(out.Item, &held); err != nil {
			return time.Time{}, false, fmt.Errorf("awsadapters: lease commitment peer: %w", err)
		}
		if end := time.Unix(0, held.Until).UTC(); end.After(now) {
			return end, false, nil
		}
	}
	return until, false, nil
}

// ReleaseCommitmentPeer implements pipeline.CommitmentStore: an
// UpdateItem ending the lease, conditioned on holder holding it.
func (c *CommitmentTable) ReleaseCommitmentPeer(ctx context.Context, ae, holder string) error {
	_, err := c.Client.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: &c.Table, Key: commitmentPeerKey(ae),
		UpdateExpression:          aws.String("SET #u = :zero"),
		ConditionExpression:       aws.String("#h = :h"),
		ExpressionAttributeNames:  map[string]string{"#u": "until", "#h": "holder"},
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":zero": nv(0), ":h": sv(holder)},
	})
	if err != nil && !isCondFailed(err) {
		return fmt.Errorf("awsadapters: release commitment peer: %w", err)
	}
	return nil
}
