package pipelinee2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed/auditfeedtest"
	"github.com/dicom-ingest/dicom-ingest/shared/auditmessage/auditmessagetest"
	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/awsemu/awsemutest"
)

var recordStream = flag.Bool("record-stream-event", false, "rewrite functions/auditfeed/testdata/stream-event.json from this test's dynalite items")

const (
	caSecretArn = "arn:aws:secretsmanager:" + region + ":123456789012:secret:siem-ca-AbCdEf"
	streamArn   = "arn:aws:dynamodb:" + region + ":123456789012:table/audit/stream/2026-01-15T00:00:00.000"
)

// fakeSecrets answers Secrets Manager's GetSecretValue from a map.
type fakeSecrets map[string]string

func (f fakeSecrets) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var in struct{ SecretId string }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || r.Header.Get("X-Amz-Target") != "secretsmanager.GetSecretValue" {
		http.Error(w, `{"__type":"InvalidRequestException"}`, http.StatusBadRequest)
		return
	}
	v, ok := f[in.SecretId]
	if !ok {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"__type":"ResourceNotFoundException","message":"no such secret"}`)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(map[string]any{"ARN": in.SecretId, "Name": "siem-ca", "SecretString": v, "VersionId": "v1"})
}

// rawItems scans the audit table through DynamoDB's wire protocol, so the
// items come back exactly as DynamoDB JSON: what a stream's NewImage holds.
func rawItems(t *testing.T, ddbURL string) []json.RawMessage {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ddbURL, strings.NewReader(`{"TableName":"`+auditTable+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", "DynamoDB_20120810.Scan")
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	// dynalite checks that a signature is there, not what it says.
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=test/20260115/"+region+"/dynamodb/aws4_request, SignedHeaders=host, Signature=0")
	req.Header.Set("X-Amz-Date", "20260115T000000Z")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scan: %s: %s", resp.Status, b)
	}
	var out struct{ Items []json.RawMessage }
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out.Items
}

// streamEvent wraps items as the INSERT records of one stream batch, in
// order of their event time, as the table's stream would deliver them.
func streamEvent(t *testing.T, items []json.RawMessage) []byte {
	t.Helper()
	type keyed struct {
		time string
		raw  json.RawMessage
		keys map[string]any
	}
	var all []keyed
	for _, it := range items {
		var m map[string]map[string]any
		if err := json.Unmarshal(it, &m); err != nil {
			t.Fatal(err)
		}
		et, _ := m["eventTime"]["S"].(string)
		all = append(all, keyed{et, it, map[string]any{"pk": m["pk"], "sk": m["sk"]}})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].time < all[j].time })
	var recs []map[string]any
	for i, k := range all {
		recs = append(recs, map[string]any{
			"eventID": fmt.Sprintf("ev%04d", i), "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
			"awsRegion": region, "eventSourceARN": streamArn,
			"dynamodb": map[string]any{
				"ApproximateCreationDateTime": 1768471200 + i, "Keys": k.keys, "NewImage": k.raw,
				"SequenceNumber": fmt.Sprintf("1000000000000000000%04d", i), "SizeBytes": len(k.raw), "StreamViewType": "NEW_IMAGE",
			},
		})
	}
	b, err := json.MarshalIndent(map[string]any{"Records": recs}, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// auditRecords appends to the table what an association over TLS with one
// stored instance and a rejected association leave there, plus an item
// that is not an audit record (which the feed must pass over).
func auditRecords(t *testing.T, audit *awsadapters.AuditTable) map[string]bool {
	t.Helper()
	ctx := context.Background()
	at := time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC)
	assoc := func(seq uint64, ev string, tls bool) pipeline.AuditRecord {
		r := associationaudit.Record{Event: ev, Time: at.Add(time.Duration(seq) * time.Second), AssociationID: "assoc9", Seq: seq,
			CallingAE: "MODALITY1", CalledAE: "INGEST", PeerAddr: "10.1.2.3:40000"}
		if tls {
			r.TLS = &associationaudit.TLSPeer{Subject: "CN=pacs.site-a.example", Issuer: "CN=Site CA", SHA256: strings.Repeat("ab", 32)}
		}
		return pipeline.AssociationAuditRecord(r, "dicom-ingest")
	}
	// The instance record, as the validate function writes it.
	f := pt.New()
	in := ctInstance(sop(1))
	data := in.Build()
	sum := sha256.Sum256(data)
	f.Objects.Add(objectKey(sop(1)), data, pt.SCPMetadata(pt.CTStorage, sop(1), "1.2.840.10008.1.2.1", hex.EncodeToString(sum[:])))
	if _, err := f.Pipeline().ProcessObject(ctx, objectKey(sop(1))); err != nil {
		t.Fatal(err)
	}
	recs := append(f.Audit.All(),
		assoc(1, associationaudit.EventAccepted, true), assoc(5, associationaudit.EventReleased, false),
		assoc(6, associationaudit.EventRejected, false))
	want := map[string]bool{}
	for _, r := range recs {
		if _, err := audit.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
		want[r.ID] = true
	}
	// An accepted or released association gives no message of its own
	// (PS3.15 A.5.3.3 needs the studies and the patient); the TLS login goes.
	delete(want, recs[1].ID)
	delete(want, recs[2].ID)
	want[recs[1].ID+"/user-authentication"] = true
	other := map[string]ddbtypes.AttributeValue{
		"pk": &ddbtypes.AttributeValueMemberS{Value: "EVENT#event-1"}, "sk": &ddbtypes.AttributeValueMemberS{Value: "LEDGER"},
	}
	if _, err := audit.Client.PutItem(ctx, &dynamodb.PutItemInput{TableName: &audit.Table, Item: other}); err != nil {
		t.Fatal(err)
	}
	return want
}

// TestAuditFeedFunction runs the audit feed function under the Lambda
// runtime interface emulator on a stream batch built from the items the
// audit adapter wrote to dynalite (dynalite has no streams), against rsyslog.
func TestAuditFeedFunction(t *testing.T) {
	rie := awsemutest.RIE(t)
	pki := auditfeedtest.NewPKI(t)
	auditfeedtest.RequireRsyslog(t)
	ddb := dynaliteOnly(t)
	ddbURL := *ddb.Options().BaseEndpoint
	want := auditRecords(t, &awsadapters.AuditTable{Client: ddb, Table: auditTable})
	event := streamEvent(t, rawItems(t, ddbURL))
	if *recordStream {
		if err := os.WriteFile(filepath.Join(testenv.ModuleRoot(t), "functions", "auditfeed", "testdata", "stream-event.json"), append(event, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	secrets := httptest.NewServer(fakeSecrets{caSecretArn: string(auditfeedtest.Read(t, pki.CA))})
	t.Cleanup(secrets.Close)
	rs := auditfeedtest.StartRsyslog(t, auditfeedtest.Options{PKI: pki})
	host, port, _ := net.SplitHostPort(rs.Addr)
	e := &env{t: t, fnURL: map[string]string{}, fnEnv: append(os.Environ(),
		"AWS_REGION="+region, "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL_SECRETS_MANAGER="+secrets.URL, "AWS_LAMBDA_FUNCTION_TIMEOUT=60",
		"SYSLOG_HOST="+host, "SYSLOG_PORT="+port, "SYSLOG_CA_SECRET_ARN="+caSecretArn, "SYSLOG_HOSTNAME=dicom-ingest-test")}
	e.startFunction(rie, "auditfeed", "auditfeed")

	invoke := func() events.DynamoDBEventResponse {
		var resp events.DynamoDBEventResponse
		var ev any
		if err := json.Unmarshal(event, &ev); err != nil {
			t.Fatal(err)
		}
		e.invoke(t, "auditfeed", ev, &resp)
		return resp
	}
	if resp := invoke(); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("failures with the collector up: %+v", resp)
	}
	msgs := rs.WaitFor(t, 20*time.Second, func(m []auditfeedtest.Received) bool { return len(m) >= len(want) })
	got, _ := auditfeedtest.Unique(msgs)
	for id := range want {
		if _, ok := got[id]; !ok {
			t.Errorf("collector lacks %s", id)
		}
	}
	if len(got) != len(want) {
		t.Errorf("collector got %d messages, want %d (the other item is not an audit record)", len(got), len(want))
	}
	for _, m := range msgs {
		auditmessagetest.Validate(t, m.XML)
		if m.Hostname != "dicom-ingest-test" || bytes.Contains(m.XML, []byte("Roe")) {
			t.Errorf("message %s: hostname %q or patient name", m.ID, m.Hostname)
		}
	}

	// Collector down: the batch fails from its first record, for Lambda to
	// retry; once the collector is back the retry delivers it again (the
	// same ids: duplicates a SIEM drops).
	rs.Stop()
	resp := invoke()
	var first struct {
		Records []struct {
			Dynamodb struct{ SequenceNumber string } `json:"dynamodb"`
		}
	}
	_ = json.Unmarshal(event, &first)
	if len(resp.BatchItemFailures) != 1 || resp.BatchItemFailures[0].ItemIdentifier != first.Records[0].Dynamodb.SequenceNumber {
		t.Fatalf("with the collector down: %+v, want the first record's sequence number", resp)
	}
	rs2 := auditfeedtest.StartRsyslog(t, auditfeedtest.Options{PKI: pki, Addr: rs.Addr, Out: rs.Out})
	if resp := invoke(); len(resp.BatchItemFailures) != 0 {
		t.Fatalf("retry failed: %+v", resp)
	}
	msgs = rs2.WaitFor(t, 20*time.Second, func(m []auditfeedtest.Received) bool { return len(m) >= 2*len(want) })
	if got, dups := auditfeedtest.Unique(msgs); len(got) != len(want) || dups != len(want) {
		t.Errorf("after the retry: %d distinct, %d duplicates", len(got), dups)
	}
}
