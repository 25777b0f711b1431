package pipelinee2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/logleak"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

// TestLogsCarryNoIdentifiers is the cloud flow over objects whose UIDs,
// patient names and ids are known, through every path that logs: scp-task
// storing into S3 through the fault-injecting proxy (retried resets and
// 500s, single and multipart; a refused PutObject; an aborted multipart
// upload; S3 down; duplicate, conflict, malformed objects, an unknown AE),
// then the functions under the runtime emulator (stored, quarantined,
// malformed, a vanished object, S3 resets, DynamoDB down, throttled events,
// the key from Secrets Manager). No log line may hold an identifier, and
// every component names an object alike.
func TestLogsCarryNoIdentifiers(t *testing.T) {
	testenv.RequireTools(t, "dcmsend", "dcmdump", "echoscu")
	srv := s3test.NewServer(t, bucket)
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{})
	e := newEnvS3(t, "1s", srv.URL)
	names, err := logname.New([]byte(testLogKey))
	if err != nil {
		t.Fatal(err)
	}

	var ids logleak.Identifiers
	real := testenv.DICOMTestdataFiles(t)
	for _, f := range real {
		ids.AddFile(t, f)
	}
	objs := logleak.WriteObjects(t, t.TempDir(), &ids)
	scp := scptest.Start(t, scptest.Options{
		NoStore: true,
		Args: []string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE", "--store", "s3://" + bucket + "/site-a",
			"--s3-path-style", "--s3-part-size", "5242880"},
		Env: append(s3test.Env(t, proxy.URL), logname.EnvKey+"="+testLogKey),
	})
	send := func(what string, files ...string) {
		t.Helper()
		args := append([]string{"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", "--no-halt", scp.Host(), scp.Port()}, files...)
		if r := dcmtk.Run(t, 2*time.Minute, "dcmsend", args...); r.Err != nil {
			t.Fatalf("dcmsend %s: %v\n%s", what, r.Err, r.Output)
		}
	}
	waitReadyz := func(ready bool) {
		t.Helper()
		testenv.EventuallySawWithin(t, 30*time.Second, fmt.Sprintf("/readyz saying ready %v", ready), func() (bool, string) {
			code, _ := scp.Health(t, "/readyz")
			return (code == http.StatusOK) == ready, fmt.Sprintf("/readyz %d", code)
		})
	}
	// faults makes the proxy misbehave for requests about one study.
	faults := func(file string, rate float64, match func(*http.Request) bool, f ...s3test.Fault) {
		study := objs.StudyUID[file]
		proxy.SetPlan(s3test.Plan{Rate: rate, Faults: f, Seed: 7, Match: func(r *http.Request) bool {
			return strings.Contains(r.URL.Path, study) && match(r)
		}})
	}
	putObject := func(r *http.Request) bool { return r.Method == http.MethodPut && r.URL.Query().Get("uploadId") == "" }
	uploadPart := func(r *http.Request) bool { return r.Method == http.MethodPut && r.URL.Query().Get("partNumber") != "" }
	complete := func(r *http.Request) bool { return r.Method == http.MethodPost && r.URL.Query().Get("uploadId") != "" }

	send("testdata and the study", append(append(real, objs.Study...), objs.Invalid)...)
	send("a duplicate and a conflict", objs.Study[0], objs.Conflict)
	faults(objs.Stalled, 0.6, putObject, s3test.ResetBefore, s3test.Status500)
	send("through resets and 500s", objs.Stalled)
	faults(objs.Large, 1, complete, s3test.Status403)
	send("a multipart upload refused at completion", objs.Large)
	// A refused object write leaves the task unready until an object is
	// stored again or the store's 5 s pass (its association's audit
	// record, written since, does not answer for objects).
	proxy.SetPlan(s3test.Plan{})
	waitReadyz(true)
	faults(objs.Large, 0.4, uploadPart, s3test.ResetBefore)
	send("a multipart upload through resets", objs.Large)
	faults(objs.Blocked, 1, putObject, s3test.Status403)
	send("a refused object", objs.Blocked)
	proxy.SetPlan(s3test.Plan{})
	waitReadyz(true)
	if errs := logleak.StoreRaw(t, scp.DICOMAddr, objs.MalformedLate, objs.MalformedEarly); errs[0] == nil || errs[1] == nil {
		t.Errorf("raw stores: late %v, early %v; want both refused", errs[0], errs[1])
	}
	// Stored as another SCP would, the malformed object reaches validate.
	malformed, err := os.ReadFile(objs.MalformedLate)
	if err != nil {
		t.Fatal(err)
	}
	e.put("site-a/"+objs.Key(objs.MalformedLate, time.Now()), malformed, pt.SCPMetadata(pt.CTStorage, logleak.UID(3, 1, 1), "1.2.840.10008.1.2.1", ""))
	dcmtk.Run(t, 30*time.Second, "echoscu", "-aet", "INTRUDER", "-aec", "REMOTE_AE", scp.Host(), scp.Port())
	// Not ready: S3 refuses every request (a key disabled, a policy). The
	// store's readiness follows its writes of objects and of audit
	// records (a run marker's counts for neither) and asks HeadBucket
	// when none has answered for 5 s; a short outage is ridden out by the
	// SDK's retries.
	proxy.SetPlan(s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Status403}})
	waitReadyz(false)
	dcmtk.Run(t, 30*time.Second, "echoscu", "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port())
	proxy.SetPlan(s3test.Plan{})
	waitReadyz(true)
	scp.Stop(t)

	keys, err := srv.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var incoming, audit []string
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, "site-a/incoming/"):
			incoming = append(incoming, k)
			ids.AddKey(k)
		case strings.HasPrefix(k, "site-a/audit/"):
			audit = append(audit, k)
		}
	}
	// testdata, the study, invalid, conflict, stalled, large, malformed-late
	if want := len(real) + len(objs.Study) + 5; len(incoming) != want {
		t.Errorf("%d objects in S3, want %d: %v", len(incoming), want, incoming)
	}

	// The functions, as the queues would call them.
	notifications := func(keys ...string) events.SQSEvent {
		var bodies []string
		for _, k := range keys {
			bodies = append(bodies, s3Notification(k, 1))
		}
		return sqsEvent(bodies...)
	}
	e.events.Fail(2) // throttled: the first messages fail and are retried
	var resp events.SQSEventResponse
	e.invoke(t, "validate", notifications(incoming...), &resp)
	e.invokeBatch(t, "validate", notifications(incoming...))
	e.invokeBatch(t, "audit", notifications(audit...))
	gone := strings.Replace(incoming[0], "/incoming/", "/incoming/1999/", 1)
	e.invoke(t, "validate", notifications(gone), &resp)
	if len(resp.BatchItemFailures) != 1 {
		t.Errorf("a vanished object: %d failures, want 1", len(resp.BatchItemFailures))
	}

	// The same function with S3 resetting every request, with DynamoDB
	// down, and with its key from Secrets Manager.
	resets := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.ResetBefore}})
	e.startFunction(e.rie, "validate-s3-resets", "validate", "AWS_ENDPOINT_URL_S3="+resets.URL, "AWS_MAX_ATTEMPTS=2")
	e.startFunction(e.rie, "validate-ddb-down", "validate", "AWS_ENDPOINT_URL_DYNAMODB=http://"+testenv.FreeAddr(t), "AWS_MAX_ATTEMPTS=2")
	e.startFunction(e.rie, "validate-secret", "validate", keyFromSecret(t, logNameKeyARN)...)
	fresh := incoming[len(incoming)-1]
	for _, fn := range []string{"validate-s3-resets", "validate-ddb-down"} {
		e.invoke(t, fn, notifications(fresh), &resp)
		if len(resp.BatchItemFailures) != 1 {
			t.Errorf("%s: %d failures, want 1", fn, len(resp.BatchItemFailures))
		}
	}
	e.invokeBatch(t, "validate-secret", notifications(incoming...))
	time.Sleep(1200 * time.Millisecond) // the quiet period
	var out map[string]int
	e.invoke(t, "notify", map[string]any{"source": "aws.events", "detail-type": "Scheduled Event"}, &out)

	// Every line of every log.
	e.stopFunctions()
	logs := map[string]string{"scp-task": scp.Logs()}
	for fn, b := range e.logs {
		logs[fn] = b.String()
	}
	for _, src := range slices.Sorted(maps.Keys(logs)) {
		n := ids.Check(t, src, logs[src])
		t.Logf("%s: %d log lines checked", src, n)
	}
	t.Logf("%d identifiers looked for", ids.Len())

	// Every path above logged, or the check proves nothing about it.
	for _, want := range []struct{ src, msg string }{
		{"scp-task", `"msg":"s3 request failed, retrying"`},
		{"scp-task", `"msg":"store failed"`},
		{"scp-task", `"level":"WARN","msg":"multipart upload aborted"`}, // refused at completion, with its cause
		{"scp-task", `"msg":"identical object already stored"`},
		{"scp-task", `"msg":"different object already holds the key; storing under conflict key"`},
		{"scp-task", `"msg":"not ready, association refused"`},
		{"scp-task", `"msg":"C-STORE refused"`},
		{"validate", `"msg":"object stored"`},
		{"validate", `"msg":"object rejected"`},
		{"validate", `"msg":"message failed"`},
		{"validate-s3-resets", `"msg":"message failed"`},
		{"validate-ddb-down", `"msg":"message failed"`},
		{"validate-secret", `"msg":"object stored"`},
	} {
		if !strings.Contains(logs[want.src], want.msg) {
			t.Errorf("%s logged no %s: the path went unchecked", want.src, want.msg)
		}
	}

	if strings.Contains(logs["scp-task"], `"cause":null`) {
		t.Error("scp-task logged a line whose cause is null: an expected outcome says its reason instead")
	}

	// One name per object: the SCP, validate, and validate with the key
	// from Secrets Manager all name each object by its full key's digest.
	for _, k := range incoming {
		name := `"object":"` + names.Name(k) + `"`
		for _, src := range []string{"validate", "validate-secret"} {
			if !strings.Contains(logs[src], name) {
				t.Errorf("%s names %s other than %s", src, k, names.Name(k))
			}
		}
		if strings.Contains(k, ".conflict-") && !strings.Contains(logs["scp-task"], `"conflict_object":"`+names.Name(k)+`"`) {
			t.Errorf("scp-task names the conflict %s other than %s", k, names.Name(k))
		}
	}
}

// TestStudyNamesUnderTheDeploymentsKey: notify and commitment, given the
// log-name key as the stack gives every pipeline function (the secret's
// ARN, read from Secrets Manager at cold start), name a study whose
// announcement failed as the key names it, the name an operator looks up
// (docs/operations/logging.md); one that cannot read the secret does not
// start. Before 2026-12-07 the stack gave them no key, and their names,
// under a key drawn per cold start, matched nothing.
func TestStudyNamesUnderTheDeploymentsKey(t *testing.T) {
	e := newEnv(t, "1s")
	names, err := logname.New([]byte(testLogKey))
	if err != nil {
		t.Fatal(err)
	}
	e.startFunction(e.rie, "notify-secret", "notify", keyFromSecret(t, logNameKeyARN)...)
	// The PACS is not listening: the report is retried later, which
	// leaves the announcement alone. With 12 s to run the invocation
	// moves the transactions on once (CommitmentHandler's 10 s margin).
	e.startFunction(e.rie, "commitment-secret", "commitment", append(keyFromSecret(t, logNameKeyARN),
		"AE_TITLE=INGEST", "COMMITMENT_PEERS=PACS="+testenv.FreeAddr(t), "AWS_LAMBDA_FUNCTION_TIMEOUT=12")...)
	// Secrets Manager refuses an ARN that is no secret's.
	e.startFunction(e.rie, "notify-no-key", "notify", keyFromSecret(t, "LogNameKey-gone")...)
	received := time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC)
	scheduled := map[string]any{"source": "aws.events", "detail-type": "Scheduled Event"}
	// failAnnouncement makes the bus throttle the next announcement at
	// every try, so it fails and its study is named in the run's error.
	failAnnouncement := func() { e.events.Fail(5) }
	ctx := context.Background()

	notified := e.newStudy(40)
	notified.processed(t, notified.instance(1, 1), received)
	time.Sleep(1100 * time.Millisecond) // the quiet period
	failAnnouncement()
	if err := e.fns["notify-secret"].Invoke(ctx, scheduled, nil); err == nil {
		t.Error("notify: the run whose announcement failed succeeded")
	}

	committed := e.newStudy(41)
	in := committed.instance(1, 1)
	committed.processed(t, in, received)
	req := pipeline.CommitmentRequest{SchemaVersion: 1, TransactionUID: committed.uid + ".9",
		Refs:      []commitment.Ref{{SOPClassUID: pt.CTStorage, SOPInstanceUID: in.SOPUID}},
		CallingAE: "PACS", CalledAE: "INGEST", AssociationID: "assoc-names-1", MessageID: 1, ReceivedAt: time.Now()}
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	e.put(req.Key(), body, nil)
	failAnnouncement()
	e.invokeBatch(t, "commitment-secret", sqsEvent(s3Notification(req.Key(), len(body))))

	if err := e.fns["notify-no-key"].Invoke(ctx, scheduled, nil); err == nil {
		t.Error("notify without its key: the run succeeded")
	}

	e.stopFunctions()
	for _, c := range []struct{ fn, msg, study string }{
		{"notify-secret", `"msg":"stable studies not all announced"`, notified.uid},
		{"commitment-secret", `"msg":"storage commitment transactions not moved on"`, committed.uid},
	} {
		logs := e.logs[c.fn].String()
		if !strings.Contains(logs, c.msg) {
			t.Errorf("%s logged no %s", c.fn, c.msg)
		}
		if want := "announce study " + names.Name(c.study); !strings.Contains(logs, want) {
			t.Errorf("%s does not name the study %s, as the deployment's key does:\n%s", c.fn, want, logs)
		}
	}
	if logs := e.logs["notify-no-key"].String(); !strings.Contains(logs, `"msg":"wiring"`) || !strings.Contains(logs, logname.SecretARNEnv) {
		t.Errorf("notify without its key did not fail its start on the secret:\n%s", logs)
	}
}

// logNameKeyARN is the log-name key secret's ARN the stand-in serves.
const logNameKeyARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:LogNameKey-AbCdEf"

// keyFromSecret is a function's environment for the log-name key as the
// stack gives it: no key in the environment, the ARN of the secret holding
// it (arn), and Secrets Manager answering with testLogKey for a secret's ARN.
func keyFromSecret(t *testing.T, arn string) []string {
	t.Helper()
	sm := secretsManager(t, testLogKey)
	return []string{logname.EnvKey + "=", logname.SecretARNEnv + "=" + arn, "AWS_ENDPOINT_URL_SECRETS_MANAGER=" + sm.URL}
}

// secretsManager answers GetSecretValue with secret, as Secrets Manager's
// JSON protocol does.
func secretsManager(t *testing.T, secret string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Amz-Target") != "secretsmanager.GetSecretValue" {
			http.Error(w, `{"__type":"InvalidRequestException"}`, http.StatusBadRequest)
			return
		}
		var in struct{ SecretId string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || !strings.HasPrefix(in.SecretId, "arn:aws:secretsmanager:") {
			http.Error(w, `{"__type":"ResourceNotFoundException"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		json.NewEncoder(w).Encode(map[string]any{"ARN": in.SecretId, "Name": "LogNameKey", "SecretString": secret, "VersionId": "v1"})
	}))
	t.Cleanup(srv.Close)
	return srv
}
