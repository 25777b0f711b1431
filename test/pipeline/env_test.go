// Package pipelinee2e runs the pipeline's Lambda functions, built as they
// are deployed (linux, CGO off, -tags lambda.norpc), under the AWS Lambda
// runtime interface emulator, against dynalite for DynamoDB, an in-process
// gofakes3 server for S3 and a local endpoint capturing EventBridge
// PutEvents from the real SDK client.
package pipelinee2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

const (
	bucket     = "ingest-bucket"
	auditTable = "audit"
	indexTable = "index"
	busName    = "dicom-ingest-test"
	region     = "eu-west-1"
)

// findTool returns the first existing path among candidates, or "".
func findTool(candidates ...string) string {
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if !strings.Contains(c, "/") {
			if p, err := exec.LookPath(c); err == nil {
				return p
			}
			continue
		}
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c
		}
	}
	return ""
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func waitTCP(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not start listening within %v", addr, within)
}

// env is one set of emulators and running functions.
type env struct {
	t        *testing.T
	s3       *s3.Client
	ddb      *dynamodb.Client
	s3URL    string
	ddbURL   string
	events   *eventCapture
	fnURL    map[string]string
	audit    *awsadapters.AuditTable
	index    *awsadapters.IndexTable
	fnEnv    []string
	quietEnv string
	rie      string                   // the runtime interface emulator
	logs     map[string]*bytes.Buffer // each function's output, by name: read it after stopFunctions
	cmds     []*exec.Cmd
}

// testLogKey is the deployment's log-name key the functions are given.
const testLogKey = "test-log-name-key-of-32-bytes-or-more"

// newEnv starts the emulators, creates the bucket and tables and starts
// the functions under the runtime interface emulator.
func newEnv(t *testing.T, quietPeriod string) *env {
	t.Helper()
	return newEnvS3(t, quietPeriod, "")
}

// newEnvS3 is newEnv with an S3 endpoint that already holds the bucket
// (s3URL != ""), such as the one scp-task stores into.
func newEnvS3(t *testing.T, quietPeriod, s3URL string) *env {
	t.Helper()
	rie := rieBinary(t)
	node, dynalite := requireDynalite(t)
	e := &env{t: t, fnURL: map[string]string{}, quietEnv: quietPeriod, rie: rie}

	// S3: gofakes3 in process.
	e.s3URL = s3URL
	if s3URL == "" {
		s3srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
		t.Cleanup(s3srv.Close)
		e.s3URL = s3srv.URL
	}

	// DynamoDB: dynalite.
	e.ddbURL = startDynalite(t, node, dynalite)

	// EventBridge: capture PutEvents.
	e.events = newEventCapture()
	ebSrv := httptest.NewServer(e.events)
	t.Cleanup(ebSrv.Close)

	creds := credentials.NewStaticCredentialsProvider("test", "test", "")
	e.s3 = s3.New(s3.Options{Region: region, Credentials: creds, BaseEndpoint: aws.String(e.s3URL), UsePathStyle: true})
	e.ddb = dynamodb.New(dynamodb.Options{Region: region, Credentials: creds, BaseEndpoint: aws.String(e.ddbURL)})
	ctx := context.Background()
	if s3URL == "" {
		if _, err := e.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
			t.Fatalf("create bucket: %v", err)
		}
	}
	createTables(t, e.ddb)
	e.audit = &awsadapters.AuditTable{Client: e.ddb, Table: auditTable}
	e.index = &awsadapters.IndexTable{Client: e.ddb, Table: indexTable}

	e.fnEnv = append(os.Environ(),
		"BUCKET="+bucket, "AUDIT_TABLE="+auditTable, "INDEX_TABLE="+indexTable, "EVENT_BUS_NAME="+busName,
		"QUIET_PERIOD="+quietPeriod, "EVENT_PATIENT_DATA=id", "S3_FORCE_PATH_STYLE=true",
		"AWS_REGION="+region, "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL_S3="+e.s3URL, "AWS_ENDPOINT_URL_DYNAMODB="+e.ddbURL, "AWS_ENDPOINT_URL_EVENTBRIDGE="+ebSrv.URL,
		"AWS_LAMBDA_FUNCTION_TIMEOUT=60", logname.EnvKey+"="+testLogKey,
	)
	// The functions the CDK stack deploys (infra/stack.FunctionNames).
	for _, fn := range []string{"validate", "audit", "notify"} {
		e.startFunction(rie, fn, fn)
	}
	return e
}

// rieBinary finds the Lambda runtime interface emulator (see testenv.Missing).
func rieBinary(t *testing.T) string {
	t.Helper()
	testenv.RequireLinux(t, "the Lambda runtime interface emulator runs linux binaries")
	home, _ := os.UserHomeDir()
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		gopath = filepath.Join(home, "go")
	}
	rie := findTool(os.Getenv("RIE_BIN"), filepath.Join(testenv.ModuleRoot(t), "bin/tools/aws-lambda-rie"), "aws-lambda-rie", filepath.Join(gopath, "bin", "aws-lambda-rie"))
	if rie == "" {
		testenv.Missing(t, "aws-lambda-rie (the Lambda runtime interface emulator)",
			"make test-deps, which go installs the pinned version into bin/tools (or set RIE_BIN)")
	}
	return rie
}

// requireDynalite returns node and dynalite's command-line script.
func requireDynalite(t *testing.T) (node, cli string) {
	t.Helper()
	node = testenv.LookPath(t, "node")
	cli = findTool(os.Getenv("DYNALITE_BIN"), filepath.Join(testenv.ModuleRoot(t), ".tools/node/node_modules/dynalite/cli.js"))
	if cli == "" {
		testenv.Missing(t, "dynalite (DynamoDB emulator)", "make node-tools, which installs the pinned dynalite into .tools/node (or set DYNALITE_BIN)")
	}
	return node, cli
}

// startDynalite runs dynalite on a free port until the test ends.
func startDynalite(t *testing.T, node, dynalite string) string {
	t.Helper()
	ddbAddr := freeAddr(t)
	_, port, _ := net.SplitHostPort(ddbAddr)
	cmd := exec.Command(node, dynalite, "--port", port, "--host", "127.0.0.1", "--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0")
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dynalite: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitTCP(t, ddbAddr, 20*time.Second)
	return "http://" + ddbAddr
}

// dynaliteOnly starts dynalite with both tables, for adapter tests.
func dynaliteOnly(t *testing.T) *dynamodb.Client {
	t.Helper()
	c := dynamoClient(dynaliteURL(t))
	createTables(t, c)
	return c
}

// dynaliteURL starts dynalite, without tables, and returns its endpoint.
func dynaliteURL(t *testing.T) string {
	t.Helper()
	node, dynalite := requireDynalite(t)
	return startDynalite(t, node, dynalite)
}

// dynamoClient is a DynamoDB client of endpoint url; opts adjust it.
func dynamoClient(url string, opts ...func(*dynamodb.Options)) *dynamodb.Client {
	return dynamodb.New(dynamodb.Options{Region: region, Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""), BaseEndpoint: aws.String(url)}, opts...)
}

// startFunction runs functions/<binary> under the emulator as fn, with
// extraEnv added to the functions' environment, until the test ends.
func (e *env) startFunction(rie, fn, binary string, extraEnv ...string) {
	t := e.t
	// Built as the deployment builds them, but for this machine's architecture.
	bootstrap := testenv.Build(t, "./functions/"+binary, "-tags", "lambda.norpc", "-trimpath")
	addr, api := freeAddr(t), freeAddr(t)
	cmd := exec.Command(rie, "--runtime-interface-emulator-address", addr, "--runtime-api-address", api, "--log-level", "error", bootstrap)
	cmd.Dir = filepath.Dir(bootstrap)
	cmd.Env = append(append([]string(nil), e.fnEnv...), extraEnv...)
	// One writer for both: exec.Cmd then writes from one goroutine at a
	// time, and nothing reads logs before Wait.
	logs := &bytes.Buffer{}
	if e.logs == nil {
		e.logs = map[string]*bytes.Buffer{}
	}
	e.logs[fn] = logs
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start rie for %s: %v", fn, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s logs:\n%s", fn, logs.String())
		}
	})
	waitTCP(t, addr, 10*time.Second)
	e.fnURL[fn] = "http://" + addr + "/2015-03-31/functions/function/invocations"
	e.cmds = append(e.cmds, cmd)
}

// stopFunctions stops every function, after which their logs may be read.
func (e *env) stopFunctions() {
	for _, cmd := range e.cmds {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// invoke calls a function through the emulator and decodes its result,
// failing t (the calling test or subtest) on any error.
func (e *env) invoke(t *testing.T, fn string, payload any, out any) {
	t.Helper()
	body, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(e.fnURL[fn], "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("invoke %s: %v", fn, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("invoke %s: read result: %v", fn, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("invoke %s: %s: %s", fn, resp.Status, b)
	}
	if strings.Contains(string(b), `"errorType"`) && out != nil {
		t.Fatalf("invoke %s: function error: %s", fn, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("invoke %s: result %s: %v", fn, b, err)
		}
	}
}

// invokeBatch invokes fn with an SQS batch and fails t unless every
// message succeeded.
func (e *env) invokeBatch(t *testing.T, fn string, ev events.SQSEvent) {
	t.Helper()
	var resp events.SQSEventResponse
	e.invoke(t, fn, ev, &resp)
	if len(resp.BatchItemFailures) != 0 {
		t.Fatalf("%s failures: %v", fn, failures(resp))
	}
}

func createTables(t *testing.T, c *dynamodb.Client) {
	t.Helper()
	s := ddbtypes.ScalarAttributeTypeS
	attr := func(names ...string) []ddbtypes.AttributeDefinition {
		var out []ddbtypes.AttributeDefinition
		for _, n := range names {
			out = append(out, ddbtypes.AttributeDefinition{AttributeName: aws.String(n), AttributeType: s})
		}
		return out
	}
	keys := func(pk, sk string) []ddbtypes.KeySchemaElement {
		return []ddbtypes.KeySchemaElement{{AttributeName: aws.String(pk), KeyType: ddbtypes.KeyTypeHash}, {AttributeName: aws.String(sk), KeyType: ddbtypes.KeyTypeRange}}
	}
	nonPHI := []string{"eventId", "eventTime", "outcome", "callingAe", "calledAe", "peer", "associationId", "reason"}
	gsi := func(name, n string, p ddbtypes.Projection) ddbtypes.GlobalSecondaryIndex {
		return ddbtypes.GlobalSecondaryIndex{IndexName: aws.String(name), KeySchema: keys("gsi"+n+"pk", "gsi"+n+"sk"), Projection: &p}
	}
	all := ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionTypeAll}
	include := ddbtypes.Projection{ProjectionType: ddbtypes.ProjectionTypeInclude, NonKeyAttributes: nonPHI}
	// The same key schema and indexes as infra/stack/pipeline.go.
	tables := []*dynamodb.CreateTableInput{
		{
			TableName: aws.String(auditTable), BillingMode: ddbtypes.BillingModePayPerRequest,
			AttributeDefinitions: attr("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "gsi3pk", "gsi3sk", "gsi4pk", "gsi4sk"),
			KeySchema:            keys("pk", "sk"),
			GlobalSecondaryIndexes: []ddbtypes.GlobalSecondaryIndex{
				gsi("byPatient", "1", all), gsi("byStudy", "2", all), gsi("byCallingAe", "3", include), gsi("byDay", "4", include),
			},
		},
		indexTableInput(indexTable),
	}
	for _, in := range tables {
		createTable(t, c, in)
	}
}

// indexTableInput is the index table as infra/stack/pipeline.go defines it.
func indexTableInput(name string) *dynamodb.CreateTableInput {
	s := ddbtypes.ScalarAttributeTypeS
	var defs []ddbtypes.AttributeDefinition
	for _, n := range []string{"pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"} {
		defs = append(defs, ddbtypes.AttributeDefinition{AttributeName: aws.String(n), AttributeType: s})
	}
	keys := func(pk, sk string) []ddbtypes.KeySchemaElement {
		return []ddbtypes.KeySchemaElement{{AttributeName: aws.String(pk), KeyType: ddbtypes.KeyTypeHash}, {AttributeName: aws.String(sk), KeyType: ddbtypes.KeyTypeRange}}
	}
	gsi := func(name, n string, p ddbtypes.ProjectionType) ddbtypes.GlobalSecondaryIndex {
		return ddbtypes.GlobalSecondaryIndex{IndexName: aws.String(name), KeySchema: keys("gsi"+n+"pk", "gsi"+n+"sk"), Projection: &ddbtypes.Projection{ProjectionType: p}}
	}
	return &dynamodb.CreateTableInput{
		TableName: aws.String(name), BillingMode: ddbtypes.BillingModePayPerRequest, AttributeDefinitions: defs, KeySchema: keys("pk", "sk"),
		GlobalSecondaryIndexes: []ddbtypes.GlobalSecondaryIndex{gsi("byPending", "1", ddbtypes.ProjectionTypeKeysOnly), gsi("byPatient", "2", ddbtypes.ProjectionTypeAll)},
	}
}

// createTable creates in and waits until it is active.
func createTable(t *testing.T, c *dynamodb.Client, in *dynamodb.CreateTableInput) {
	t.Helper()
	if _, err := c.CreateTable(context.Background(), in); err != nil {
		t.Fatalf("create table %s: %v", *in.TableName, err)
	}
	w := dynamodb.NewTableExistsWaiter(c, func(o *dynamodb.TableExistsWaiterOptions) { o.MinDelay = 50 * time.Millisecond })
	if err := w.Wait(context.Background(), &dynamodb.DescribeTableInput{TableName: in.TableName}, 20*time.Second); err != nil {
		t.Fatalf("table %s not active: %v", *in.TableName, err)
	}
}

// eventCapture is an EventBridge endpoint that records PutEvents entries.
// failNext makes it reject that many leading entries of the next calls
// with a throttling error code, as PutEvents does under load.
type eventCapture struct {
	mu       sync.Mutex
	entries  []capturedEntry
	failNext int
	calls    int
}

type capturedEntry struct {
	Source, DetailType, Detail, EventBusName string
	Resources                                []string
}

func newEventCapture() *eventCapture { return &eventCapture{} }

func (c *eventCapture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Amz-Target") != "AWSEvents.PutEvents" {
		http.Error(w, `{"__type":"UnknownOperationException"}`, http.StatusBadRequest)
		return
	}
	var in struct{ Entries []capturedEntry }
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, `{"__type":"SerializationException"}`, http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	type result struct {
		EventId      string `json:",omitempty"`
		ErrorCode    string `json:",omitempty"`
		ErrorMessage string `json:",omitempty"`
	}
	var out struct {
		Entries          []result
		FailedEntryCount int
	}
	for i, e := range in.Entries {
		if c.failNext > 0 {
			c.failNext--
			out.Entries = append(out.Entries, result{ErrorCode: "ThrottlingException", ErrorMessage: "rate exceeded"})
			out.FailedEntryCount++
			continue
		}
		c.entries = append(c.entries, e)
		out.Entries = append(out.Entries, result{EventId: fmt.Sprintf("ev-%d-%d", c.calls, i)})
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	json.NewEncoder(w).Encode(out)
}

func (c *eventCapture) all() []capturedEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]capturedEntry(nil), c.entries...)
}

func (c *eventCapture) fail(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failNext = n
}
