package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/aws/aws-lambda-go/events"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// handler sends the audit records of a DynamoDB stream batch to the
// collector.
type handler struct {
	sender auditfeed.Sender
	header auditfeed.Header
	log    *slog.Logger
	// render renders one record (nil: auditfeed.FormatRecord).
	render func(pipeline.AuditRecord, auditfeed.Header) ([][]byte, error)
	// tlsFailed, when set, is called when a batch's TLS handshake was refused (auditfeed.Refused: the collector's
	// alert, or our refusal of its certificate): the secrets are read again for the next (lambdaio.KeptSecret.Forget),
	// so that a rotation is taken without a cold start. A handshake timed out or reset keeps them.
	tlsFailed func()
}

// Handle implements the Lambda handler for the audit table's stream. It
// sends every new audit record of the batch in one confirmed exchange
// (auditfeed.Batch, the SCP's feeder's rule). When that fails it reports
// the batch's first record as failed, so Lambda retries the whole batch
// (ReportBatchItemFailures): records are delivered at least once and in
// order, and duplicates carry the same message ids. A record never
// sendable (a bug, or an item edited by hand) is passed over, logged by
// its stream position (no UIDs) once its batch is delivered, and alarmed
// on: retrying it would stop the shard for good. One whose rendering
// panics is one of them: unrecovered, the panic ended the process, failing
// the invocation, and Lambda retried the whole batch, the same record
// panicking each time, until the stream's retries ran out for every record
// of the batch.
func (h *handler) Handle(ctx context.Context, ev events.DynamoDBEvent) (events.DynamoDBEventResponse, error) {
	var resp events.DynamoDBEventResponse
	items := make([]auditfeed.Item, len(ev.Records))
	for i, r := range ev.Records {
		items[i] = auditfeed.Item{
			Name:   []any{"event_id", r.EventID, "sequence_number", r.Change.SequenceNumber},
			Render: func() ([][]byte, error) { return h.format(r) },
		}
	}
	// The send stops short of the invocation's deadline: a batch the
	// collector confirmed leaves the reserve to log its unsendable records
	// and return in. Confirmed at the deadline, the invocation timed out
	// after its lines, and Lambda's retry (in an environment reset by the
	// timeout, which remembers nothing) logged them again.
	sctx, cancel := lambdaio.ShortOfDeadline(ctx)
	defer cancel()
	b := auditfeed.Batch{Sender: h.sender, Logger: h.log, Delivered: func(_ context.Context, messages int) error {
		if messages > 0 {
			h.log.Info("audit feed: batch delivered", "records", len(ev.Records), "messages", messages)
		}
		return nil
	}}
	if sent, err := b.Send(sctx, items); err != nil {
		h.log.Warn(auditfeed.BatchNotDeliveredLog, "records", len(ev.Records), "messages", sent.Messages, "err", err)
		if auditfeed.Refused(err) && h.tlsFailed != nil {
			h.tlsFailed()
		}
		resp.BatchItemFailures = []events.DynamoDBBatchItemFailure{{ItemIdentifier: ev.Records[0].Change.SequenceNumber}}
	}
	return resp, nil
}

// PanicLog is the log message of a stream record whose rendering, or a
// batch whose sending, panicked: a bug. The record is skipped as
// unsendable; the batch is retried (the SCP's feeder does the same).
const PanicLog = auditfeed.PanicLog

// format turns one stream record into its syslog messages: none for what
// is not a newly inserted audit record (other items, updates, removals).
func (h *handler) format(r events.DynamoDBEventRecord) ([][]byte, error) {
	if r.EventName != string(events.DynamoDBOperationTypeInsert) {
		return nil, nil
	}
	item, err := attributeValues(r.Change.NewImage)
	if err != nil {
		return nil, err
	}
	rec, ok, err := awsadapters.DecodeAuditItem(item)
	if !ok || err != nil {
		return nil, err
	}
	if h.render != nil {
		return h.render(rec, h.header)
	}
	return auditfeed.FormatRecord(rec, h.header)
}

// attributeValues converts a stream image (Lambda's event types) to the
// SDK's attribute values, which the audit adapter decodes.
func attributeValues(img map[string]events.DynamoDBAttributeValue) (map[string]ddbtypes.AttributeValue, error) {
	out := make(map[string]ddbtypes.AttributeValue, len(img))
	for k, v := range img {
		av, err := attributeValue(v, 0)
		if err != nil {
			return nil, fmt.Errorf("auditfeed: attribute %q: %w", k, err)
		}
		out[k] = av
	}
	return out, nil
}

// maxDepth bounds nesting; DynamoDB itself allows 32 levels.
const maxDepth = 32

func attributeValue(v events.DynamoDBAttributeValue, depth int) (ddbtypes.AttributeValue, error) {
	if depth > maxDepth {
		return nil, errors.New("nested too deep")
	}
	switch v.DataType() {
	case events.DataTypeString:
		return &ddbtypes.AttributeValueMemberS{Value: v.String()}, nil
	case events.DataTypeNumber:
		return &ddbtypes.AttributeValueMemberN{Value: v.Number()}, nil
	case events.DataTypeBoolean:
		return &ddbtypes.AttributeValueMemberBOOL{Value: v.Boolean()}, nil
	case events.DataTypeNull:
		return &ddbtypes.AttributeValueMemberNULL{Value: true}, nil
	case events.DataTypeBinary:
		return &ddbtypes.AttributeValueMemberB{Value: v.Binary()}, nil
	case events.DataTypeStringSet:
		return &ddbtypes.AttributeValueMemberSS{Value: v.StringSet()}, nil
	case events.DataTypeNumberSet:
		return &ddbtypes.AttributeValueMemberNS{Value: v.NumberSet()}, nil
	case events.DataTypeBinarySet:
		return &ddbtypes.AttributeValueMemberBS{Value: v.BinarySet()}, nil
	case events.DataTypeList:
		l := v.List()
		out := make([]ddbtypes.AttributeValue, len(l))
		for i, e := range l {
			av, err := attributeValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = av
		}
		return &ddbtypes.AttributeValueMemberL{Value: out}, nil
	case events.DataTypeMap:
		m := v.Map()
		out := make(map[string]ddbtypes.AttributeValue, len(m))
		for k, e := range m {
			av, err := attributeValue(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = av
		}
		return &ddbtypes.AttributeValueMemberM{Value: out}, nil
	}
	return nil, fmt.Errorf("unknown data type %d", v.DataType())
}
