package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio"
	"github.com/dicom-ingest/dicom-ingest/functions/internal/lambdaio/lambdaiotest"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed/auditfeedtest"
	"github.com/dicom-ingest/dicom-ingest/shared/auditmessage/auditmessagetest"
	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog"
	"github.com/dicom-ingest/dicom-ingest/shared/jsonlog/jsonlogtest"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/shared/tlstrust"
)

func fixture(t testing.TB) events.DynamoDBEvent {
	t.Helper()
	b, err := os.ReadFile("testdata/stream-event.json")
	if err != nil {
		t.Fatal(err)
	}
	var ev events.DynamoDBEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

// sender records batches, or fails them.
type sender struct {
	fail    error
	panics  bool
	batches [][][]byte
	// failFirst fails this many batches before it takes them; sends
	// counts the batches offered.
	failFirst, sends int
}

func (s *sender) Send(_ context.Context, msgs [][]byte) error {
	if s.panics {
		var p *sender
		return p.fail // a nil dereference: a runtime error
	}
	if s.fail != nil {
		return s.fail
	}
	s.sends++
	if s.failFirst > 0 {
		s.failFirst--
		return errors.New("connection refused")
	}
	s.batches = append(s.batches, msgs)
	return nil
}

func ids(msgs [][]byte) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, strings.SplitN(strings.SplitN(string(m), `id="`, 2)[1], `"]`, 2)[0])
	}
	return out
}

func TestHandleStreamBatch(t *testing.T) {
	ev := fixture(t)
	s := &sender{}
	h := &handler{sender: s, log: discard()}
	resp, err := h.Handle(context.Background(), ev)
	if err != nil || len(resp.BatchItemFailures) != 0 {
		t.Fatalf("Handle = %+v, %v", resp, err)
	}
	if len(s.batches) != 1 {
		t.Fatalf("%d batches, want the whole stream batch in one", len(s.batches))
	}
	got := ids(s.batches[0])
	// The accepted and released associations' items, stored with EventID
	// 110102, give no message of their own (PS3.15 A.5.3.3 needs studies
	// and a patient they do not have); the TLS login still goes.
	want := []string{
		"instance:1.2.826.0.1.3680043.10.9.1.1:",
		"assoc:assoc9:1:association-accepted/user-authentication",
		"assoc:assoc9:6:association-rejected",
	}
	if len(got) != len(want) {
		t.Fatalf("messages %v, want %v (the item that is no audit record is passed over)", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("message %d = %s, want %s…", i, got[i], want[i])
		}
	}
	for _, m := range s.batches[0] {
		_, doc, _ := strings.Cut(string(m), "\ufeff")
		auditmessagetest.Validate(t, []byte(doc))
	}
}

// TestHandleReportsTheBatchWhenTheCollectorFails: a batch the collector does not take (down, refusing TLS) is
// reported from its first record, for Lambda to retry, and logged as auditfeed.BatchNotDeliveredLog, once per
// try, with the field the stack's metric filter (AuditFeedBatchesNotDelivered, its alarm) takes its Environment
// dimension from: read as that filter reads the function's lines. Only the backlog alarm, minutes later, told of
// it before. A batch delivered logs no such line.
func TestHandleReportsTheBatchWhenTheCollectorFails(t *testing.T) {
	ev := fixture(t)
	for _, tt := range []struct {
		name      string
		sender    *sender
		wantLines int
	}{
		{"collector refusing", &sender{fail: errors.New("connection refused")}, 1},
		{"sending panics", &sender{panics: true}, 1},
		{"delivered", &sender{}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			h := &handler{sender: tt.sender, log: lambdaio.LoggerTo(&logs, "auditfeed", "prod")}
			resp, err := h.Handle(context.Background(), ev)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantLines > 0 && (len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != ev.Records[0].Change.SequenceNumber) {
				t.Errorf("failures = %+v, want the first record's sequence number", resp.BatchItemFailures)
			}
			counted := jsonlogtest.Counted(t, jsonlog.MessageFilter(auditfeed.BatchNotDeliveredLog), logs.Bytes())
			if len(counted) != tt.wantLines {
				t.Fatalf("%d lines counted by the filter, want %d:\n%s", len(counted), tt.wantLines, logs.String())
			}
			for _, l := range counted {
				if l[jsonlog.EnvironmentKey] != "prod" || l["records"] != float64(len(ev.Records)) || l["err"] == nil {
					t.Errorf("line counted %v: want %s prod (the metric's dimension), the records and the failure", l, jsonlog.EnvironmentKey)
				}
			}
		})
	}
}

// unreadable is r with an image that is no readable audit record: never
// sendable.
func unreadable(r events.DynamoDBEventRecord) events.DynamoDBEventRecord {
	r.Change.NewImage = map[string]events.DynamoDBAttributeValue{
		"pk": events.NewStringAttribute("AUDIT#x"), "sk": events.NewStringAttribute("RECORD"),
		"schemaVersion": events.NewStringAttribute("not a number"),
	}
	return r
}

func TestHandleSkipsWhatIsNoNewAuditRecord(t *testing.T) {
	ev := fixture(t)
	broken := unreadable(ev.Records[1])
	modified := ev.Records[2]
	modified.EventName = "MODIFY"
	s := &sender{}
	h := &handler{sender: s, log: discard()}
	resp, err := h.Handle(context.Background(), events.DynamoDBEvent{Records: []events.DynamoDBEventRecord{ev.Records[0], broken, modified}})
	if err != nil || len(resp.BatchItemFailures) != 0 || len(s.batches) != 0 {
		t.Errorf("Handle = %+v, %v, %d batches", resp, err, len(s.batches))
	}
}

// TestHandleLogsAnUnsendableRecordOnce: Lambda retries a batch the
// collector did not take, and every try rendered it again, logging its
// unsendable record again; the AuditFeedUnsendable metric filter counts
// the log's lines, so one record counted once per try. It is logged once,
// when its batch is delivered (as the SCP's feeder does), or at once when
// nothing of the batch is left to send. So is the panic of a record whose
// rendering panics (a bug), which was logged at each try, before the
// send: its line, with the stack, comes once, just before the record's
// unsendable line. Both lines are read as the stack's metric filters read
// the function's own (lambdaio.LoggerTo): each counted once, with the
// field the filters take their Environment dimension from.
func TestHandleLogsAnUnsendableRecordOnce(t *testing.T) {
	ev := fixture(t)
	broken := unreadable(ev.Records[1])
	panicky := func(rec pipeline.AuditRecord, h auditfeed.Header) ([][]byte, error) {
		if strings.HasPrefix(rec.ID, "instance:") {
			panic("cannot render " + rec.ID)
		}
		return auditfeed.FormatRecord(rec, h)
	}
	tests := []struct {
		name       string
		records    []events.DynamoDBEventRecord
		render     func(pipeline.AuditRecord, auditfeed.Header) ([][]byte, error)
		failFirst  int // tries the collector does not take
		wantTries  int
		wantSends  int
		wantPanics int
		wantNamed  string // the event id the lines name
	}{
		{"taken at once", []events.DynamoDBEventRecord{ev.Records[0], broken, ev.Records[2]}, nil, 0, 1, 1, 0, broken.EventID},
		{"taken at the third try", []events.DynamoDBEventRecord{ev.Records[0], broken, ev.Records[2]}, nil, 2, 3, 3, 0, broken.EventID},
		{"nothing else to send", []events.DynamoDBEventRecord{broken}, nil, 2, 1, 0, 0, broken.EventID},
		{"its rendering panics, taken at the third try", ev.Records, panicky, 2, 3, 3, 1, ev.Records[1].EventID},
		{"its rendering panics, nothing else to send", ev.Records[1:2], panicky, 2, 1, 0, 1, ev.Records[1].EventID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			s := &sender{failFirst: tt.failFirst}
			h := &handler{sender: s, log: lambdaio.LoggerTo(&logs, "auditfeed", "prod"), render: tt.render}
			tries := 0
			for ; tries < 10; tries++ {
				resp, err := h.Handle(context.Background(), events.DynamoDBEvent{Records: tt.records})
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.BatchItemFailures) == 0 {
					tries++
					break
				}
			}
			if tries != tt.wantTries || s.sends != tt.wantSends {
				t.Errorf("%d tries, %d sends; want %d, %d", tries, s.sends, tt.wantTries, tt.wantSends)
			}
			for _, c := range []struct {
				filter string
				want   int
			}{{jsonlog.MessageFilter(auditfeed.UnsendableLog), 1}, {jsonlog.MessageFilter(auditfeed.PanicLog), tt.wantPanics}} {
				counted := jsonlogtest.Counted(t, c.filter, logs.Bytes())
				if len(counted) != c.want {
					t.Errorf("%d lines counted by %s, want %d:\n%s", len(counted), c.filter, c.want, logs.String())
				}
				for _, l := range counted {
					if l[jsonlog.EnvironmentKey] != "prod" {
						t.Errorf("line counted %v: want %s prod, the metric's dimension", l, jsonlog.EnvironmentKey)
					}
				}
			}
			named := `"event_id":"` + tt.wantNamed + `"`
			if strings.Count(logs.String(), named) != 1+tt.wantPanics {
				t.Errorf("the lines do not name the record by its event id %s:\n%s", tt.wantNamed, logs.String())
			}
			if p, u := strings.Index(logs.String(), PanicLog), strings.Index(logs.String(), auditfeed.UnsendableLog); p > u {
				t.Errorf("the panic's line comes after the unsendable line:\n%s", logs.String())
			}
		})
	}
}

// slowCollector confirms a batch once it has taken its time, counted on a
// clock of its own from the invocation's start (it never waits), and
// fails it, as Collector.Send does, when its context ends before.
type slowCollector struct {
	start   time.Time
	takes   []time.Duration // per try; the last for every further try
	tries   int
	sends   int
	confirm time.Time // when the last batch was confirmed
}

func (s *slowCollector) Send(ctx context.Context, msgs [][]byte) error {
	at := s.start.Add(s.takes[min(s.tries, len(s.takes)-1)])
	s.tries++
	if d, ok := ctx.Deadline(); ok && d.Before(at) {
		return fmt.Errorf("auditfeed: collector did not confirm the batch: %w", context.DeadlineExceeded)
	}
	s.sends++
	s.confirm = at
	return nil
}

// TestHandleNeverTimesOutAfterDelivering: a batch the collector confirmed
// just before the invocation's deadline had its unsendable record logged,
// then the invocation timed out (the handler's return and its answer's way
// to Lambda take time), and Lambda retried the batch: in an execution
// environment reset by the timeout, remembering nothing, it logged the
// record again. The send now stops short of the deadline (a tenth of the
// time left, 1 to 5 s): a batch confirmed leaves that long to log and
// return in, and one not confirmed by then fails in time, reported, and
// logs nothing.
func TestHandleNeverTimesOutAfterDelivering(t *testing.T) {
	ev := fixture(t)
	batch := []events.DynamoDBEventRecord{ev.Records[0], unreadable(ev.Records[1]), ev.Records[4]}
	const timeout = 60 * time.Second // the function's (infra/stack/auditfeed.go)
	// answer is how long the handler's return and its answer take to reach
	// Lambda after the send: far less than the reserve.
	const answer = 100 * time.Millisecond
	tests := []struct {
		name      string
		takes     []time.Duration
		wantTries int
	}{
		{"confirmed at once", []time.Duration{time.Second}, 1},
		{"confirmed just before the deadline, then at once", []time.Duration{timeout - answer/2, time.Second}, 2},
		{"confirmed past the reserve, then at once", []time.Duration{timeout - 2*time.Second, time.Second}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			s := &slowCollector{takes: tt.takes}
			tries := 0
			for delivered := false; !delivered; {
				if tries == 10 {
					t.Fatal("never delivered")
				}
				tries++
				// Each try in a new execution environment: a timeout resets it.
				h := &handler{sender: s, log: slog.New(slog.NewJSONHandler(&logs, nil))}
				s.start = time.Now()
				deadline := s.start.Add(timeout)
				ctx, cancel := context.WithDeadline(context.Background(), deadline)
				sends := s.sends
				resp, err := h.Handle(ctx, events.DynamoDBEvent{Records: batch})
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				timedOut := s.sends > sends && s.confirm.Add(answer).After(deadline)
				delivered = !timedOut && len(resp.BatchItemFailures) == 0
			}
			if tries != tt.wantTries || s.sends != 1 {
				t.Errorf("%d tries, %d batches confirmed; want %d tries, one batch", tries, s.sends, tt.wantTries)
			}
			if n := strings.Count(logs.String(), auditfeed.UnsendableLog); n != 1 {
				t.Errorf("%d lines %q, want 1:\n%s", n, auditfeed.UnsendableLog, logs.String())
			}
		})
	}
}

// A bug that panics while rendering one record skips that record alone, as
// one that cannot be rendered, and one that panics while sending fails the
// batch for Lambda to retry: either panic ended the process before,
// failing the invocation, so the same record panicked at every retry of
// its batch. The log names the record by its stream position, never by
// the panic's value, which could hold a UID.
func TestHandleRecoversAPanic(t *testing.T) {
	ev := fixture(t)
	const secret = "1.2.826.0.1.3680043.10.9.1.1"
	tests := []struct {
		name       string
		render     func(pipeline.AuditRecord, auditfeed.Header) ([][]byte, error)
		sendPanics bool
		wantSent   int // messages delivered
		wantFailed bool
		wantLog    []string
	}{
		{
			name: "a record's rendering panics",
			render: func(rec pipeline.AuditRecord, h auditfeed.Header) ([][]byte, error) {
				if strings.HasPrefix(rec.ID, "instance:") {
					panic(secret)
				}
				return auditfeed.FormatRecord(rec, h)
			},
			wantSent: 2,
			wantLog:  []string{PanicLog, auditfeed.UnsendableLog, `"event_id":"ev0001","sequence_number":"10000000000000000000001"`, "a value of type string"},
		},
		{
			name: "a runtime error in rendering",
			render: func(rec pipeline.AuditRecord, h auditfeed.Header) ([][]byte, error) {
				var m map[string]int
				//lint:ignore SA5000 a runtime error, on purpose
				m[rec.ID]++
				return nil, nil
			},
			wantLog: []string{PanicLog, auditfeed.UnsendableLog, "assignment to entry in nil map"},
		},
		{
			name:       "sending panics",
			sendPanics: true,
			wantFailed: true,
			wantLog:    []string{PanicLog, "batch not delivered"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			s := &sender{panics: tt.sendPanics}
			h := &handler{sender: s, log: slog.New(slog.NewJSONHandler(&logs, nil)), render: tt.render}
			resp, err := h.Handle(context.Background(), ev)
			if err != nil {
				t.Fatal(err)
			}
			sent := 0
			for _, b := range s.batches {
				sent += len(b)
			}
			if sent != tt.wantSent {
				t.Errorf("%d messages sent, want %d", sent, tt.wantSent)
			}
			if failed := len(resp.BatchItemFailures) > 0; failed != tt.wantFailed {
				t.Errorf("failures = %+v, want failed %v", resp.BatchItemFailures, tt.wantFailed)
			}
			for _, w := range tt.wantLog {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, logs.String())
				}
			}
			if strings.Contains(logs.String(), secret) {
				t.Errorf("the log names a UID:\n%s", logs.String())
			}
		})
	}
}

type secrets map[string]string

func (s secrets) GetSecretValue(_ context.Context, in *secretsmanager.GetSecretValueInput, _ ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	v, ok := s[*in.SecretId]
	if !ok {
		return nil, errors.New("ResourceNotFoundException")
	}
	return &secretsmanager.GetSecretValueOutput{SecretString: &v}, nil
}

func TestConfigure(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	ca, client := string(auditfeedtest.Read(t, pki.CA)), string(auditfeedtest.Read(t, pki.ClientCert))+string(auditfeedtest.Read(t, pki.ClientKey))
	weakCA := string(testpki.NewCAWith(t, "weak collector CA", testpki.Options{RSA: true, RSABits: 1024}).PEM)
	serverOnly := testpki.NewCA(t, "site CA").Server(t, testpki.Options{})
	sm := secrets{"ca": ca, "client": client, "junk": "not pem", "ca+junk": ca + "# the old CA\n", "weak": weakCA,
		"server only": string(serverOnly.CertPEM) + string(serverOnly.KeyPEM)}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	h, err := configure(env(map[string]string{"SYSLOG_HOST": "siem.example", "SYSLOG_CA_SECRET_ARN": "ca",
		"SYSLOG_CLIENT_CERT_SECRET_ARN": "client", "AWS_LAMBDA_FUNCTION_NAME": "fn"}), sm, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.header.Hostname != "fn" {
		t.Errorf("hostname %q", h.header.Hostname)
	}
	if _, err := loadTLS(t, h); err != nil {
		t.Errorf("TLS configuration: %v", err)
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"SYSLOG_CA_SECRET_ARN": "ca"}, "SYSLOG_HOST is required"},
		{map[string]string{"SYSLOG_HOST": "h"}, "SYSLOG_CA_SECRET_ARN is required"},
		{map[string]string{"SYSLOG_HOST": "h", "SYSLOG_PORT": "0", "SYSLOG_CA_SECRET_ARN": "ca"}, "SYSLOG_PORT"},
		{map[string]string{"SYSLOG_HOST": "h", "SYSLOG_CA_SECRET_ARN": "missing"}, "ResourceNotFound"},
		// The collector CA is read as every CA bundle (tlstrust.ParseCAs), its refusal naming the variable.
		{map[string]string{"SYSLOG_HOST": "h", "SYSLOG_CA_SECRET_ARN": "junk"}, "auditfeed: SYSLOG_CA_SECRET_ARN: auditfeed: the collector CA: no PEM block in it"},
		{map[string]string{"SYSLOG_HOST": "h", "SYSLOG_CA_SECRET_ARN": "ca+junk"}, "SYSLOG_CA_SECRET_ARN: auditfeed: the collector CA: text after the last PEM block is not PEM"},
		{map[string]string{"SYSLOG_HOST": "h", "SYSLOG_CA_SECRET_ARN": "weak"}, "SYSLOG_CA_SECRET_ARN: auditfeed: the collector CA: certificate 1: certificate \"CN=weak collector CA"},
		{map[string]string{"SYSLOG_HOST": "h", "SYSLOG_CA_SECRET_ARN": "ca", "SYSLOG_CLIENT_CERT_SECRET_ARN": "ca"}, "SYSLOG_CLIENT_CERT_SECRET_ARN: auditfeed: client certificate"},
		// A server certificate, which the function presented before tlstrust.ClientCertificate: refused, saying
		// what to issue instead (deploy.md's upgrade step).
		{map[string]string{"SYSLOG_HOST": "h", "SYSLOG_CA_SECRET_ARN": "ca", "SYSLOG_CLIENT_CERT_SECRET_ARN": "server only"},
			"SYSLOG_CLIENT_CERT_SECRET_ARN: auditfeed: client certificate: certificate \"CN=localhost"},
		{map[string]string{"SYSLOG_HOST": "h", "SYSLOG_CA_SECRET_ARN": "ca", "SYSLOG_CLIENT_CERT_SECRET_ARN": "server only"},
			"issue one whose extended key usage has clientAuth"},
	} {
		// The settings fail the start; the secrets, read at the first batch, fail the batch.
		h, err := configure(env(tt.env), sm, nil)
		if err == nil {
			_, err = loadTLS(t, h)
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("configure(%v) = %v, want %q", tt.env, err, tt.want)
		}
	}
}

// loadTLS is the TLS client configuration the handler's collector takes for a batch.
func loadTLS(t *testing.T, h *handler) (*tls.Config, error) {
	t.Helper()
	c, ok := h.sender.(*auditfeed.Collector)
	if !ok || c.LoadTLS == nil {
		t.Fatalf("sender %#v, want a collector that loads its TLS configuration for each batch", h.sender)
	}
	return c.LoadTLS(context.Background())
}

// FuzzHandle: whatever a stream record holds, the handler neither panics
// nor sends what it could not render.
func FuzzHandle(f *testing.F) {
	b, err := os.ReadFile("testdata/stream-event.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"Records":[{"eventName":"INSERT","dynamodb":{"NewImage":{"pk":{"S":"AUDIT#a"},"sk":{"S":"RECORD"},"schemaVersion":{"N":"1"},"tls":{"M":{"subject":{"L":[{"NULL":true}]}}}}}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev events.DynamoDBEvent
		if json.Unmarshal(data, &ev) != nil {
			return
		}
		h := &handler{sender: &sender{}, log: discard()}
		if _, err := h.Handle(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	})
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

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

// TestSecretsReadGivesUpWithinKeyReadTimeout: the secrets are read, at
// the first batch, within lambdaio.KeyReadTimeout, both together, so a
// Secrets Manager that does not answer (its endpoint, a security group)
// fails the batch with an error naming the secret's setting, rather than
// the invocation's timeout spent waiting.
func TestSecretsReadGivesUpWithinKeyReadTimeout(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	ca := string(auditfeedtest.Read(t, pki.CA))
	const caARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:siem-ca-AbCdEf"
	const clientARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:siem-client-AbCdEf"
	env := map[string]string{"SYSLOG_HOST": "siem.example", "SYSLOG_CA_SECRET_ARN": caARN, "SYSLOG_CLIENT_CERT_SECRET_ARN": clientARN}
	tests := []struct {
		name     string
		answered map[string]string
		setting  string // the one the error must name
	}{
		{"the CA's secret", nil, "SYSLOG_CA_SECRET_ARN"},
		{"the client certificate's secret", map[string]string{caARN: ca}, "SYSLOG_CLIENT_CERT_SECRET_ARN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sm := &lambdaiotest.UnansweredSecrets{Values: tt.answered}
			h, err := configure(func(k string) string { return env[k] }, sm, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = loadTLS(t, h)
			end := time.Now()
			if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), tt.setting) {
				t.Fatalf("err = %v, want the deadline, naming %s", err, tt.setting)
			}
			for _, secret := range []string{caARN, clientARN, ca} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("err = %v: names the setting's value", err)
				}
			}
			if lambdaio.KeyReadTimeout > lambdaiotest.LambdaInitLimit/2 {
				t.Errorf("KeyReadTimeout %v, want at most half of Lambda's %v init", lambdaio.KeyReadTimeout, lambdaiotest.LambdaInitLimit)
			}
			dls := sm.Deadlines()
			for i, dl := range dls {
				if dl.IsZero() || dl.After(end.Add(lambdaio.KeyReadTimeout)) || !dl.Equal(dls[0]) {
					t.Errorf("read %d given until %v from now, want all the reads within one KeyReadTimeout (%v): %v", i+1, dl.Sub(end), lambdaio.KeyReadTimeout, dls)
				}
			}
		})
	}
}

// TestConfigureExpiredClientCertificate: a client certificate secret holding an expired certificate (not rotated in
// time) fails no start: the function says so once per backoff window of its secret (CertificateNotValidLog, naming
// SYSLOG_CLIENT_CERT_SECRET_ARN and the dates), and each delivery to a collector that asks for it fails at the
// handshake, Lambda retrying the batch (AuditFeedNotDelivered, AuditFeedBacklog, then the on-failure queue).
func TestConfigureExpiredClientCertificate(t *testing.T) {
	pki := auditfeedtest.NewPKI(t)
	old := testpki.NewCA(t, "site CA").Client(t, testpki.Expired("old feeder"))
	sm := secrets{"ca": string(auditfeedtest.Read(t, pki.CA)), "expired": string(old.CertPEM) + string(old.KeyPEM)}
	env := map[string]string{"SYSLOG_HOST": "siem.example", "SYSLOG_CA_SECRET_ARN": "ca", "SYSLOG_CLIENT_CERT_SECRET_ARN": "expired"}
	var logs bytes.Buffer
	h, err := configure(func(k string) string { return env[k] }, sm, lambdaio.LoggerTo(&logs, "auditfeed", "prod"))
	if err != nil {
		t.Fatalf("configure: %v, want a start that fails the deliveries instead", err)
	}
	var cfg *tls.Config
	for range 3 {
		if cfg, err = loadTLS(t, h); err != nil || cfg == nil || cfg.GetClientCertificate == nil {
			t.Fatalf("TLS configuration %v, %v: want one whose TLS checks our certificate at each handshake", cfg, err)
		}
	}
	if _, err := cfg.GetClientCertificate(&tls.CertificateRequestInfo{Version: tls.VersionTLS13,
		SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256, tls.PSSWithSHA256}}); !errors.Is(err, tlstrust.ErrNotValidNow) {
		t.Errorf("asked for our certificate: %v, want it refused for its dates", err)
	}
	lines := logLines(t, &logs, CertificateNotValidLog)
	if len(lines) != 1 || !strings.Contains(fmt.Sprint(lines[0]["err"]), "SYSLOG_CLIENT_CERT_SECRET_ARN") ||
		!strings.Contains(fmt.Sprint(lines[0]["err"]), "is valid from 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z") {
		t.Errorf("lines %v, want one naming the variable and the dates", lines)
	}
}
