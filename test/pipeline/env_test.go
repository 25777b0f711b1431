// Package pipelinee2e runs the pipeline's Lambda functions, built as they
// are deployed (linux, CGO off, -tags lambda.norpc), under the AWS Lambda
// runtime interface emulator, against dynalite for DynamoDB, an in-process
// gofakes3 server for S3 and a local endpoint capturing EventBridge
// PutEvents from the real SDK client. The emulators come from
// test/internal/awsemu, which the chain bench runs too.
package pipelinee2e

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/awsemu"
	"github.com/dicom-ingest/dicom-ingest/test/internal/awsemu/awsemutest"
)

const (
	bucket     = "ingest-bucket"
	auditTable = "audit"
	indexTable = "index"
	busName    = "dicom-ingest-test"
	region     = "eu-west-1"
)

// env is one set of emulators and running functions.
type env struct {
	t        *testing.T
	s3       *s3.Client
	ddb      *dynamodb.Client
	s3URL    string
	ddbURL   string
	events   *awsemu.EventCapture
	fnURL    map[string]string
	audit    *awsadapters.AuditTable
	index    *awsadapters.IndexTable
	fnEnv    []string
	quietEnv string
	rie      string // the runtime interface emulator
	ebURL    string // the EventBridge capture's endpoint
	// grants records each function's calls, by name, for the grants
	// check (grants_test.go); nil: calls go to the emulators directly.
	grants map[string]*recordedFunction
	logs   map[string]*bytes.Buffer // each function's output, by name: read it after stopFunctions
	fns    map[string]*awsemu.Function
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
	rie := awsemutest.RIE(t)
	node, dynalite := awsemutest.Dynalite(t)
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
	e.events = &awsemu.EventCapture{}
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
		"BUCKET="+bucket, "BUCKET_ARN=arn:aws:s3:::"+bucket, "AUDIT_TABLE="+auditTable, "INDEX_TABLE="+indexTable, "EVENT_BUS_NAME="+busName,
		"QUIET_PERIOD="+quietPeriod, "EVENT_PATIENT_DATA=id", "S3_FORCE_PATH_STYLE=true",
		"AWS_REGION="+region, "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL_S3="+e.s3URL, "AWS_ENDPOINT_URL_DYNAMODB="+e.ddbURL, "AWS_ENDPOINT_URL_EVENTBRIDGE="+ebSrv.URL,
		"AWS_LAMBDA_FUNCTION_TIMEOUT=60", logname.EnvKey+"="+testLogKey,
	)
	e.ebURL = ebSrv.URL
	// Registered before the functions start, so it runs after they stop.
	e.grants = map[string]*recordedFunction{}
	t.Cleanup(e.checkGrants)
	// The functions the CDK stack deploys (infra/stack.FunctionNames).
	for _, fn := range []string{"validate", "audit", "notify"} {
		e.startFunction(rie, fn, fn)
	}
	return e
}

// startDynalite runs dynalite on a free port until the test ends.
func startDynalite(t *testing.T, node, dynalite string) string {
	t.Helper()
	p, url, err := awsemu.StartDynalite(node, dynalite, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return url
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
	node, dynalite := awsemutest.Dynalite(t)
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
	// One writer for stdout and stderr; nothing reads it before the
	// function stops.
	logs := &bytes.Buffer{}
	// Through the grants check's recorder; extraEnv's endpoints still win.
	fnEnv := append(append([]string(nil), e.fnEnv...), e.recordCalls(fn, binary)...)
	if e.logs == nil {
		e.logs = map[string]*bytes.Buffer{}
	}
	e.logs[fn] = logs
	f, err := awsemu.StartFunction(rie, fn, bootstrap, append(fnEnv, extraEnv...), logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Stop()
		if t.Failed() {
			t.Logf("%s logs:\n%s", fn, logs.String())
		}
	})
	if e.fns == nil {
		e.fns = map[string]*awsemu.Function{}
	}
	e.fns[fn] = f
	e.fnURL[fn] = f.URL
}

// stopFunctions stops every function, after which their logs may be read.
func (e *env) stopFunctions() {
	for _, f := range e.fns {
		f.Stop()
	}
}

// invoke calls a function through the emulator and decodes its result,
// failing t (the calling test or subtest) on any error.
func (e *env) invoke(t *testing.T, fn string, payload any, out any) {
	t.Helper()
	if err := e.fns[fn].Invoke(context.Background(), payload, out); err != nil {
		t.Fatal(err)
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

// createTables creates the audit and index tables as the stack does.
func createTables(t *testing.T, c *dynamodb.Client) {
	t.Helper()
	if err := awsemu.CreateTables(context.Background(), c, auditTable, indexTable); err != nil {
		t.Fatal(err)
	}
}

// createTable creates in and waits until it is active.
func createTable(t *testing.T, c *dynamodb.Client, in *dynamodb.CreateTableInput) {
	t.Helper()
	if err := awsemu.CreateTable(context.Background(), c, in); err != nil {
		t.Fatal(err)
	}
}

// s3Notification is S3's message for an object created under key.
func s3Notification(key string, size int) string {
	return awsemu.S3Notification(region, bucket, key, int64(size), "")
}

// sqsEvent is the validate queue's batch of bodies.
func sqsEvent(bodies ...string) events.SQSEvent {
	return awsemu.SQSEvent(region, "ValidateQueue", bodies...)
}
