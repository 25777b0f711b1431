package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed/auditfeedtest"
	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// memOutbox is an Outbox in memory: the SCP's feeder's side of
// TestBothCallersFeedTheSame.
type memOutbox struct{ entries []auditfeed.Entry }

func (o *memOutbox) Pending(_ context.Context, limit int) ([]auditfeed.Entry, error) {
	return slices.Clone(o.entries[:min(limit, len(o.entries))]), nil
}

func (o *memOutbox) Delivered(_ context.Context, entries []auditfeed.Entry) error {
	o.entries = o.entries[len(entries):]
	return nil
}

func (o *memOutbox) Backlog(context.Context) (auditfeed.Backlog, error) {
	return auditfeed.Backlog{Count: len(o.entries)}, nil
}

// outboxOf is what the SCP's feeder would hold of a stream batch's
// records: each new audit record as an entry (one that cannot be read
// back, with its error), nothing of what is no audit record.
func outboxOf(recs []events.DynamoDBEventRecord) *memOutbox {
	o := &memOutbox{}
	for _, r := range recs {
		if r.EventName != string(events.DynamoDBOperationTypeInsert) {
			continue
		}
		var rec pipeline.AuditRecord
		ok := true
		item, err := attributeValues(r.Change.NewImage)
		if err == nil {
			rec, ok, err = awsadapters.DecodeAuditItem(item)
		}
		if err == nil && !ok {
			continue
		}
		o.entries = append(o.entries, auditfeed.Entry{Key: "entry-" + r.EventID, Record: rec, Err: err})
	}
	return o
}

// refusing fails its first n batches, as a collector that is down, then
// hands them to next.
type refusing struct {
	n    int
	next auditfeed.Sender
}

func (r *refusing) Send(ctx context.Context, msgs [][]byte) error {
	if r.n > 0 {
		r.n--
		return errors.New("connection refused")
	}
	return r.next.Send(ctx, msgs)
}

// logLines is the JSON lines of logs with message msg.
func logLines(t *testing.T, logs *bytes.Buffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for l := range bytes.Lines(logs.Bytes()) {
		var e map[string]any
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if e["msg"] == msg {
			out = append(out, e)
		}
	}
	return out
}

// TestBothCallersFeedTheSame runs one set of records through the
// auditfeed function (as a stream batch, retried as Lambda retries it)
// and through the SCP's feeder (from an outbox, flushed again after each
// failure), each to its own rsyslog over TLS: both go through
// auditfeed.Batch, and the collectors receive the same messages, byte for
// byte and in the same order, and each side logs every unsendable record
// once, with the same error.
func TestBothCallersFeedTheSame(t *testing.T) {
	ev := fixture(t)
	broken := unreadable(ev.Records[1])
	pki := auditfeedtest.NewPKI(t)
	header := auditfeed.Header{Hostname: "dicom-ingest-test"}
	tests := []struct {
		name       string
		records    []events.DynamoDBEventRecord
		refuse     int // tries the collector refuses
		unsendable int
	}{
		{"every record", ev.Records, 0, 0},
		{"an unreadable record", []events.DynamoDBEventRecord{ev.Records[0], broken, ev.Records[2], ev.Records[4]}, 0, 1},
		{"the collector down for two tries", append(slices.Clone(ev.Records), broken), 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := 0
			for _, e := range outboxOf(tt.records).entries {
				if e.Err == nil {
					msgs, err := auditfeed.FormatRecord(e.Record, header)
					if err != nil {
						t.Fatal(err)
					}
					want += len(msgs)
				}
			}
			collector := func() (*auditfeedtest.Rsyslog, *auditfeed.Collector) {
				rs := auditfeedtest.StartRsyslog(t, auditfeedtest.Options{PKI: pki})
				host, _, _ := net.SplitHostPort(rs.Addr)
				cfg, err := auditfeed.TLSConfig(host, auditfeedtest.Read(t, pki.CA), nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				return rs, &auditfeed.Collector{Addr: rs.Addr, TLS: cfg, Timeout: 5 * time.Second}
			}
			type side struct {
				rs   *auditfeedtest.Rsyslog
				logs bytes.Buffer
			}
			var lambda, scp side

			// The function: Lambda retries the batch while it is reported failed.
			var c *auditfeed.Collector
			lambda.rs, c = collector()
			h := &handler{sender: &refusing{tt.refuse, c}, header: header, log: slog.New(slog.NewJSONHandler(&lambda.logs, nil))}
			for try := 0; ; try++ {
				if try == 10 {
					t.Fatal("the function never delivered the batch")
				}
				resp, err := h.Handle(context.Background(), events.DynamoDBEvent{Records: tt.records})
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.BatchItemFailures) == 0 {
					break
				}
			}

			// The SCP's feeder: its outbox flushed until empty.
			scp.rs, c = collector()
			f := &auditfeed.Feeder{Outbox: outboxOf(tt.records), Sender: &refusing{tt.refuse, c}, Header: header,
				Logger: slog.New(slog.NewJSONHandler(&scp.logs, nil))}
			for try := 0; ; try++ {
				if try == 10 {
					t.Fatal("the feeder never delivered its outbox")
				}
				if left, _ := f.Flush(context.Background()); left == 0 {
					break
				}
			}

			received := func(s *side) []string {
				msgs := s.rs.WaitFor(t, 20*time.Second, func(m []auditfeedtest.Received) bool { return len(m) >= want })
				raws := make([]string, len(msgs))
				for i, m := range msgs {
					raws[i] = m.Raw
				}
				return raws
			}
			fromLambda, fromSCP := received(&lambda), received(&scp)
			if len(fromLambda) != want || !slices.Equal(fromLambda, fromSCP) {
				t.Errorf("the collectors differ (want %d messages each):\nfunction: %q\nSCP's feeder: %q", want, fromLambda, fromSCP)
			}
			unsendable := func(s *side) []string {
				var errs []string
				for _, l := range logLines(t, &s.logs, auditfeed.UnsendableLog) {
					errs = append(errs, fmt.Sprint(l["err"]))
				}
				return errs
			}
			uLambda, uSCP := unsendable(&lambda), unsendable(&scp)
			if len(uLambda) != tt.unsendable || !slices.Equal(uLambda, uSCP) {
				t.Errorf("unsendable lines: function %q, SCP's feeder %q; want %d each, alike", uLambda, uSCP, tt.unsendable)
			}
		})
	}
}
