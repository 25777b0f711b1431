package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/awsemu/awsemutest"
)

// TestChainDelivers runs the chain bench small (60 instances at 20/s over
// two associations, two environments a function, short quiet period and
// schedule, small latencies) with the functions built as chain.sh builds
// them: every instance sent reaches a consumer and every study is
// announced. The bench passes the functions their environment itself; when
// validate began to require BUCKET_ARN the bench did not pass it, every
// invocation failed its start, and nothing but a full make bench run, read
// closely, could tell.
func TestChainDelivers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts scp-task, dynalite and six emulated function environments; skipped with -short")
	}
	rie := awsemutest.RIE(t)
	node, dynalite := awsemutest.Dynalite(t)
	functions := t.TempDir()
	for _, fn := range []string{"validate", "audit", "notify"} {
		bin := testenv.Build(t, "./functions/"+fn, "-tags", "lambda.norpc", "-trimpath")
		if err := os.Mkdir(filepath.Join(functions, fn), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(bin, filepath.Join(functions, fn, "bootstrap")); err != nil {
			t.Fatal(err)
		}
	}
	o := options{
		scpTask: testenv.SCPTask(t), rie: rie, node: node, dynalite: dynalite, functions: functions, work: t.TempDir(),
		rate: 20, duration: 3 * time.Second, drain: 90 * time.Second,
		associations: 2, studySize: 30, seriesSz: 15, side: 64,
		concurrency: 2, batchSize: 10, batchWindow: 200 * time.Millisecond, visibility: 30 * time.Second,
		quietPeriod: 2 * time.Second, notifyEvery: 2 * time.Second,
		s3Write: "1ms/5ms", s3Read: "1ms/5ms", notification: "5ms/20ms", sqs: "1ms/5ms", eventBridge: "1ms/5ms", dynamo: "1ms/2ms",
		seed: 1,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.incomplete(); err != nil {
		logTails(t, o.work)
		t.Fatal(err)
	}
	if res.Sent != 60 || res.Stored != 60 || res.Studies != 2 {
		t.Errorf("sent %d, stored %d, studies %d; want 60, 60 and 2", res.Sent, res.Stored, res.Studies)
	}
	if res.Calls["validate"]["DynamoDB UpdateItem"] == 0 {
		t.Errorf("validate made no DynamoDB UpdateItem: %v", res.Calls["validate"])
	}
}

// logTails logs the end of each log the bench kept in work (the
// functions', the emulators', scp-task's): the test's temporary directory
// goes with it.
func logTails(t *testing.T, work string) {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(work, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range logs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("read %s: %v", p, err)
			continue
		}
		if len(b) > 2000 {
			b = b[len(b)-2000:]
		}
		if len(b) > 0 {
			t.Logf("%s, its end:\n%s", filepath.Base(p), b)
		}
	}
}
