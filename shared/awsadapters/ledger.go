package awsadapters

import (
	"context"
	"fmt"

	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// AuditLedger keeps the publish ledger in the audit table (pk
// "EVENT#<id>", sk "LEDGER", in no index), for the validate function,
// which may append to the audit table but has no access to the index.
// Like audit records, ledger items are only ever put, never updated.
type AuditLedger struct {
	Client DynamoAPI
	Table  string
}

var _ pipeline.EventLedger = (*AuditLedger)(nil)

// EventPublished implements pipeline.EventLedger.
func (l *AuditLedger) EventPublished(ctx context.Context, id string) (bool, error) {
	out, err := l.Client.GetItem(ctx, &dynamodb.GetItemInput{TableName: &l.Table, Key: key("EVENT#"+id, "LEDGER"), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return false, fmt.Errorf("awsadapters: ledger: %w", err)
	}
	return out.Item != nil, nil
}

// MarkEventPublished implements pipeline.EventLedger.
func (l *AuditLedger) MarkEventPublished(ctx context.Context, id string, at time.Time) error {
	_, err := l.Client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:           &l.Table,
		Item:                map[string]ddbtypes.AttributeValue{"pk": sv("EVENT#" + id), "sk": sv("LEDGER"), "publishedAt": sv(ts(at))},
		ConditionExpression: aws.String("attribute_not_exists(pk)"),
	})
	if err != nil && !isCondFailed(err) {
		return fmt.Errorf("awsadapters: ledger: %w", err)
	}
	return nil
}
