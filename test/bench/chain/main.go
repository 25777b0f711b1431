// Command bench-chain is `make bench`'s serverless chain: it sustains a
// C-STORE load on scp-task (S3 store) and follows every instance through
// the pipeline as the CDK stack wires it, on one machine: S3 (s3test's
// gofakes3) → an ObjectCreated notification → the validate queue →
// Lambda's event source mapping (batch size and batching window as the
// stack sets them, one poller per unit of reserved concurrency) → the
// validate function under the runtime interface emulator → DynamoDB
// (dynalite) and EventBridge (captured); audit/ records likewise through
// the audit function; the notify function on its schedule announcing
// Study Received. Where an emulator answers sooner than AWS would, the
// bench adds the service's latency (log-normal, P50/P99 flags, defaults
// cited in docs/performance.md): S3 writes and reads, notification
// delivery, the queue's hand-over to a poller, EventBridge delivery to a
// consumer. It counts every API call per service and operation where it
// arrives (scp-task's and the functions' SDK clients, retries included)
// and the calls AWS makes on the stack's behalf (S3's SendMessage, the
// mapping's ReceiveMessage and DeleteMessageBatch), the DynamoDB capacity
// units consumed, each function's invocation time and log bytes, and
// writes it all as JSON for test/bench/chain.py.
//
//	bench-chain -scp-task bin/scp-task -functions DIR -rate 100 -duration 60s -out chain.json   (test/bench/chain.sh builds DIR)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dicom-ingest/dicom-ingest/shared/cli"
	"github.com/dicom-ingest/dicom-ingest/shared/logname"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/bench/internal/awsmeter"
	"github.com/dicom-ingest/dicom-ingest/test/bench/internal/latency"
	"github.com/dicom-ingest/dicom-ingest/test/internal/awsemu"
)

const (
	bucket     = "ingest-bucket"
	auditTable = "audit"
	indexTable = "index"
	busName    = "dicom-ingest-bench"
	region     = "us-east-1"
)

// logKey names objects in the functions' and scp-task's logs, as the
// deployment's key does (logname.MinKeyLen bytes at least).
const logKey = "bench-chain-log-name-key-of-32-bytes-or-more"

// Memory of the functions as infra/stack/pipeline.go sizes them, for
// GB-seconds.
var functionMemoryMB = map[string]int{"validate": 512, "audit": 256, "notify": 256}

type options struct {
	scpTask, work, out, scpArgs        string
	rie, node, dynalite, functions     string
	rate                               float64
	duration, drain                    time.Duration
	associations, studySize, seriesSz  int
	side, concurrency, batchSize       int
	batchWindow, visibility            time.Duration
	quietPeriod, notifyEvery           time.Duration
	s3Write, s3Read, notification, sqs string
	eventBridge, dynamo                string
	seed                               uint64
}

const command = "bench-chain"

func main() { cli.Main(command, runCommand) }

// runCommand is main without the process: flags in, results out.
func runCommand(args []string, stdout, _ io.Writer) error {
	var o options
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.StringVar(&o.scpTask, "scp-task", "bin/scp-task", "the scp-task binary")
	fs.StringVar(&o.scpArgs, "scp-args", "", "more scp-task flags, space-separated (the staged store's: --staging DIR --staging-latency efs)")
	fs.StringVar(&o.rie, "rie", "bin/tools/aws-lambda-rie", "the Lambda runtime interface emulator")
	fs.StringVar(&o.node, "node", "node", "node, which runs dynalite")
	fs.StringVar(&o.dynalite, "dynalite", ".tools/node/node_modules/dynalite/cli.js", "dynalite's command-line script")
	fs.StringVar(&o.functions, "functions", "", "directory holding validate/bootstrap, audit/bootstrap and notify/bootstrap, built as deployed for this machine")
	fs.StringVar(&o.work, "work", "", "directory for the logs (default: a new temporary one)")
	fs.StringVar(&o.out, "out", "", "file to write the results to (JSON; default stdout)")
	fs.Float64Var(&o.rate, "rate", 100, "instances per second sent")
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "how long the load lasts")
	fs.DurationVar(&o.drain, "drain", 0, "how long to wait for the chain to finish after the load (default: quiet period + 2 notify periods + 60s)")
	fs.IntVar(&o.associations, "associations", 8, "parallel associations the load is sent over (each waits for its object's S3 put before the next)")
	fs.IntVar(&o.studySize, "study-size", 200, "instances per study")
	fs.IntVar(&o.seriesSz, "series-size", 100, "instances per series")
	fs.IntVar(&o.side, "image", 256, "image rows and columns (16-bit pixels: 256 → 128 KiB)")
	fs.IntVar(&o.concurrency, "concurrency", 10, "execution environments per function: the stack's reserved concurrency and the mapping's maximum concurrency")
	fs.IntVar(&o.batchSize, "batch-size", 10, "event source mapping batch size (the stack's)")
	fs.DurationVar(&o.batchWindow, "batch-window", time.Second, "event source mapping maximum batching window (the stack's)")
	fs.DurationVar(&o.visibility, "visibility", 720*time.Second, "queue visibility timeout: a failed message comes back after it (the stack's: 6 × the function timeout)")
	fs.DurationVar(&o.quietPeriod, "quiet-period", 60*time.Second, "QUIET_PERIOD of the functions (the stack's default)")
	fs.DurationVar(&o.notifyEvery, "notify-every", time.Minute, "period of the notify schedule (the stack's)")
	fs.StringVar(&o.s3Write, "s3-write-latency", "20ms/100ms", "S3 write answers, P50/P99")
	fs.StringVar(&o.s3Read, "s3-read-latency", "20ms/100ms", "S3 read first bytes, P50/P99")
	fs.StringVar(&o.notification, "notification-latency", "250ms/2s", "S3 event notification delivery to the queue, P50/P99")
	fs.StringVar(&o.sqs, "sqs-latency", "16ms/105ms", "a message's hand-over from the queue to a waiting poller, P50/P99")
	fs.StringVar(&o.eventBridge, "eventbridge-latency", "148ms/387ms", "EventBridge delivery of an event to a consumer, P50/P99 (added to the capture time)")
	fs.StringVar(&o.dynamo, "dynamodb-latency", "5ms/9ms", "DynamoDB answers, P50/P99 (AWS: \"single-digit millisecond\")")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the latencies drawn")
	if err := cli.Parse(fs, args, stdout); err != nil {
		return err
	}
	switch {
	case o.functions == "":
		return cli.UsageError(fs, errors.New("-functions is required (test/bench/chain.sh builds them)"))
	case o.rate <= 0 || o.duration <= 0 || o.associations < 1 || o.studySize < 1 || o.seriesSz < 1 || o.concurrency < 1 || o.batchSize < 1:
		return cli.UsageError(fs, errors.New("-rate, -duration, -associations, -study-size, -series-size, -concurrency and -batch-size must be positive"))
	}
	if err := cli.FlagsOnly(fs); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, o)
	if err != nil {
		return err
	}
	if err := writeResults(o.out, stdout, res); err != nil {
		return err
	}
	// The results are written either way, to read what happened; a run
	// the chain did not complete is not a measurement.
	if err := res.incomplete(); err != nil {
		return fmt.Errorf("%w (the functions' logs are in %s)", err, o.work)
	}
	return nil
}

// writeResults writes res as JSON to the file path, or to stdout without
// one.
func writeResults(path string, stdout io.Writer, res *results) error {
	out := stdout
	var f *os.File
	if path != "" {
		var err error
		if f, err = os.Create(path); err != nil {
			return err
		}
		out = f
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	err := enc.Encode(res)
	if f != nil {
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// dists are the latencies injected.
type dists struct {
	s3Write, s3Read, notification, sqs, eventBridge, dynamo *latency.Sampler
}

func parseDists(o options) (dists, error) {
	var d dists
	for _, p := range []struct {
		flag, v string
		into    **latency.Sampler
	}{
		{"s3-write-latency", o.s3Write, &d.s3Write}, {"s3-read-latency", o.s3Read, &d.s3Read},
		{"notification-latency", o.notification, &d.notification}, {"sqs-latency", o.sqs, &d.sqs},
		{"eventbridge-latency", o.eventBridge, &d.eventBridge}, {"dynamodb-latency", o.dynamo, &d.dynamo},
	} {
		dist, err := latency.Parse(p.v)
		if err != nil {
			return d, fmt.Errorf("-%s: %w", p.flag, err)
		}
		o.seed++
		*p.into = latency.NewSampler(dist, o.seed)
	}
	return d, nil
}

// trace is one instance's way through the chain.
type trace struct {
	study                 int
	studyUID              string
	stored                time.Time // C-STORE success at the sender
	created, visible      time.Time // S3 held it; its notification was visible in the queue
	invoked, returned     time.Time // the batch holding it was invoked; the invocation returned
	published             time.Time // the function's PutEvents of Instance Stored (or Rejected) arrived
	event                 time.Time // the event reached a consumer
	rejected, failedStore bool
}

type bench struct {
	o options
	d dists
	// meters count calls by caller: scp-task, each function, and "aws"
	// for the calls AWS makes for the stack (notifications, the mapping's
	// polls, the schedule).
	meters map[string]*awsmeter.Meter
	aws    *awsmeter.Meter
	units  map[string]*capacity // DynamoDB capacity by caller
	events awsemu.EventCapture

	mu       sync.Mutex
	traces   map[string]*trace // by SOP Instance UID
	lambda   map[string][]time.Duration
	failures int
	logs     map[string]*countingWriter
}

func run(ctx context.Context, o options) (*results, error) {
	d, err := parseDists(o)
	if err != nil {
		return nil, err
	}
	if o.drain == 0 {
		o.drain = o.quietPeriod + 2*o.notifyEvery + time.Minute
	}
	// Absolute: the emulators run with their own working directories.
	for _, p := range []*string{&o.rie, &o.dynalite, &o.functions, &o.scpTask} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, err
		}
		*p = abs
	}
	rie, node, dynalite := o.rie, o.node, o.dynalite
	if o.work == "" {
		if o.work, err = os.MkdirTemp("", "bench-chain-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(o.work)
	}
	b := &bench{o: o, d: d, meters: map[string]*awsmeter.Meter{}, units: map[string]*capacity{},
		traces: map[string]*trace{}, lambda: map[string][]time.Duration{}, logs: map[string]*countingWriter{}}
	for _, caller := range []string{"scp-task", "validate", "audit", "notify", "aws"} {
		b.meters[caller], b.units[caller] = awsmeter.New(), &capacity{}
	}
	b.aws = b.meters["aws"]

	var closers []func()
	defer func() {
		for _, c := range slices.Backward(closers) {
			c()
		}
	}()
	serve := func(h http.Handler) (string, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(l) // ends with Close below
		closers = append(closers, func() { srv.Close() })
		return "http://" + l.Addr().String(), nil
	}

	// S3, one store behind a door for each caller (counted, with S3's
	// latency) and the bench's own.
	s3srv, err := s3test.NewHandler(bucket)
	if err != nil {
		return nil, err
	}
	validateQ := newQueue("ValidateQueue", o.visibility, b.aws)
	auditQ := newQueue("AuditQueue", o.visibility, b.aws)
	s3h := notifying(s3srv, func(c created) { b.notify(c, validateQ, auditQ) })
	s3delay := latency.ByMethod(d.s3Read, d.s3Write)
	scpS3, err := serve(endpoint(b.meters["scp-task"], "S3", s3h, s3delay))
	if err != nil {
		return nil, err
	}
	ownS3, err := serve(s3srv)
	if err != nil {
		return nil, err
	}

	// DynamoDB: dynalite behind a proxy that counts calls and capacity.
	ddbProc, ddbURL, err := awsemu.StartDynalite(node, dynalite, os.Stderr)
	if err != nil {
		return nil, err
	}
	closers = append(closers, ddbProc.Stop)
	creds := credentials.NewStaticCredentialsProvider("bench", "bench", "")
	ddb := dynamodb.New(dynamodb.Options{Region: region, Credentials: creds, BaseEndpoint: aws.String(ddbURL)})
	if err := awsemu.CreateTables(ctx, ddb, auditTable, indexTable); err != nil {
		return nil, err
	}
	target, err := url.Parse(ddbURL)
	if err != nil {
		return nil, err
	}
	ddbDelay := func(*http.Request) *latency.Sampler { return d.dynamo }

	// The functions, one execution environment per unit of concurrency,
	// each function with its own doors to S3, DynamoDB and EventBridge.
	fnEnv := map[string][]string{}
	for _, fn := range []string{"validate", "audit", "notify"} {
		fnS3, err := serve(endpoint(b.meters[fn], "S3", s3h, s3delay))
		if err != nil {
			return nil, err
		}
		fnDDB, err := serve(endpoint(b.meters[fn], "DynamoDB", dynamoProxy(target, b.units[fn]), ddbDelay))
		if err != nil {
			return nil, err
		}
		fnEB, err := serve(b.meters[fn].Handler("EventBridge", &b.events))
		if err != nil {
			return nil, err
		}
		fnEnv[fn] = append(os.Environ(),
			"BUCKET="+bucket, "BUCKET_ARN=arn:aws:s3:::"+bucket, "AUDIT_TABLE="+auditTable, "INDEX_TABLE="+indexTable, "EVENT_BUS_NAME="+busName,
			"QUIET_PERIOD="+o.quietPeriod.String(), "EVENT_PATIENT_DATA=none", "S3_FORCE_PATH_STYLE=true",
			"AWS_REGION="+region, "AWS_ACCESS_KEY_ID=bench", "AWS_SECRET_ACCESS_KEY=bench", "AWS_EC2_METADATA_DISABLED=true",
			"AWS_ENDPOINT_URL_S3="+fnS3, "AWS_ENDPOINT_URL_DYNAMODB="+fnDDB, "AWS_ENDPOINT_URL_EVENTBRIDGE="+fnEB,
			"AWS_LAMBDA_FUNCTION_TIMEOUT=120", logname.EnvKey+"="+logKey,
		)
	}
	start := func(name string) (*awsemu.Function, error) {
		f, err := awsemu.StartFunction(rie, name, filepath.Join(o.functions, name, "bootstrap"), fnEnv[name], b.logWriter(name))
		if err == nil {
			closers = append(closers, f.Stop)
		}
		return f, err
	}
	pollCtx, stopPolling := context.WithCancel(context.Background())
	var pollers sync.WaitGroup
	closers = append(closers, func() { stopPolling(); pollers.Wait() })
	for _, p := range []struct {
		fn string
		q  *queue
		n  int
	}{{"validate", validateQ, o.concurrency}, {"audit", auditQ, min(2, o.concurrency)}} {
		for range p.n {
			f, err := start(p.fn)
			if err != nil {
				return nil, err
			}
			pollers.Add(1)
			go func() {
				defer pollers.Done()
				b.poll(pollCtx, f, p.q)
			}()
		}
	}
	notify, err := start("notify")
	if err != nil {
		return nil, err
	}
	pollers.Add(1)
	go func() {
		defer pollers.Done()
		b.schedule(pollCtx, notify)
	}()

	// scp-task, as the stack runs it but for the endpoint.
	scpAddr, err := testenv.PickFreeAddr()
	if err != nil {
		return nil, err
	}
	health, err := testenv.PickFreeAddr()
	if err != nil {
		return nil, err
	}
	scpLogs := b.logWriter("scp-task")
	args := []string{"--listen", scpAddr, "--health-listen", health, "--store", "s3://" + bucket + "/", "--s3-path-style",
		"--calling-aes", "LOCAL_AE", "--max-associations", "64", "--max-associations-per-ae", "64"}
	scp := exec.Command(o.scpTask, append(args, strings.Fields(o.scpArgs)...)...)
	scp.Env = append(os.Environ(), "AWS_ENDPOINT_URL_S3="+scpS3, "AWS_REGION="+region, "AWS_ACCESS_KEY_ID=bench",
		"AWS_SECRET_ACCESS_KEY=bench", "AWS_EC2_METADATA_DISABLED=true", logname.EnvKey+"="+logKey)
	scp.Stdout, scp.Stderr = scpLogs, scpLogs
	if err := scp.Start(); err != nil {
		return nil, fmt.Errorf("start scp-task: %w", err)
	}
	closers = append(closers, func() { scp.Process.Signal(syscall.SIGTERM); scp.Wait() })
	if err := awsemu.WaitTCP(scpAddr, 20*time.Second); err != nil {
		return nil, err
	}

	// The load.
	count := int(o.rate * o.duration.Seconds())
	l := load{addr: scpAddr, rate: o.rate, count: count, associations: o.associations, studySize: o.studySize,
		seriesSize: o.seriesSz, side: o.side, uidRoot: fmt.Sprintf("1.2.826.0.1.3680043.10.99.%d", time.Now().Unix())}
	cli.Notef(os.Stderr, command, "sending %d instances at %g/s over %d associations", count, o.rate, o.associations)
	outcomes, elapsed, err := l.run(ctx)
	if err != nil {
		return nil, err
	}
	studies := map[string]time.Time{} // study UID -> last C-STORE success
	sentOK := 0
	b.mu.Lock()
	for _, s := range outcomes {
		t := b.traceLocked(s.sop)
		t.study, t.studyUID, t.stored, t.failedStore = s.study, s.studyUI, s.ok, s.err != nil
		if s.err == nil {
			sentOK++
			if s.ok.After(studies[s.studyUI]) {
				studies[s.studyUI] = s.ok
			}
		}
	}
	b.mu.Unlock()

	// The chain drains: every instance announced, then every study.
	cli.Notef(os.Stderr, command, "sent %d in %v; waiting up to %v for the chain", sentOK, elapsed.Round(time.Millisecond), o.drain)
	deadline := time.Now().Add(o.drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		inst, st := b.announced()
		if inst >= sentOK && st >= len(studies) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	stopPolling()
	pollers.Wait()
	storage, err := storageByPrefix(ctx, ownS3)
	if err != nil {
		return nil, err
	}
	// What DynamoDB would bill as table storage (dynalite reports none).
	for _, t := range []string{auditTable, indexTable} {
		size, items, err := tableSize(ctx, ddb, t)
		if err != nil {
			return nil, err
		}
		storage["dynamodb "+t], storage["dynamodb "+t+" items"] = size, items
	}
	return b.results(count, sentOK, elapsed, studies, storage, validateQ.depth()+auditQ.depth()), nil
}

func (b *bench) logWriter(name string) *countingWriter {
	b.mu.Lock()
	defer b.mu.Unlock()
	if w := b.logs[name]; w != nil {
		return w
	}
	f, err := os.Create(path.Join(b.o.work, name+".log"))
	var w io.Writer = io.Discard
	if err == nil {
		w = f // closed with the process; the bench reads only counts
	}
	b.logs[name] = &countingWriter{w: w}
	return b.logs[name]
}

func (b *bench) traceLocked(sop string) *trace {
	t := b.traces[sop]
	if t == nil {
		t = &trace{}
		b.traces[sop] = t
	}
	return t
}

// sopOf is the SOP Instance UID an object key names.
func sopOf(key string) string { return strings.TrimSuffix(path.Base(key), ".dcm") }

// notify is S3's event notification: an incoming/ or audit/ object's
// message reaches its queue after the notification's delivery latency,
// and a waiting poller after the queue's.
func (b *bench) notify(c created, validateQ, auditQ *queue) {
	var q *queue
	switch {
	case strings.HasPrefix(c.key, "incoming/"):
		q = validateQ
		b.mu.Lock()
		b.traceLocked(sopOf(c.key)).created = c.at
		b.mu.Unlock()
	case strings.HasPrefix(c.key, "audit/"):
		q = auditQ
	default:
		return // no notification configured for other prefixes
	}
	visible := c.at.Add(b.d.notification.Next() + b.d.sqs.Next())
	q.send(c.key, awsemu.S3Notification(region, bucket, c.key, c.size, c.eventName), c.at, visible)
}

// poll is one poller of the event source mapping with its execution
// environment: gather a batch, invoke, delete what succeeded.
func (b *bench) poll(ctx context.Context, f *awsemu.Function, q *queue) {
	for ctx.Err() == nil {
		batch := q.receive(ctx, b.o.batchSize, b.o.batchWindow)
		if len(batch) == 0 {
			continue
		}
		bodies := make([]string, len(batch))
		for i, m := range batch {
			bodies[i] = m.body
		}
		var resp events.SQSEventResponse
		t0 := time.Now()
		err := f.Invoke(context.Background(), awsemu.SQSEvent(region, q.name, bodies...), &resp)
		t1 := time.Now()
		failed := map[string]bool{}
		for _, fl := range resp.BatchItemFailures {
			failed[fl.ItemIdentifier] = true
		}
		b.mu.Lock()
		b.lambda[f.Name] = append(b.lambda[f.Name], t1.Sub(t0))
		for i, m := range batch {
			if err != nil || failed[fmt.Sprintf("msg-%d", i+1)] {
				b.failures++
				continue
			}
			if q.name == "ValidateQueue" {
				t := b.traceLocked(sopOf(m.key))
				t.visible, t.invoked, t.returned = m.visible, t0, t1
			}
		}
		b.mu.Unlock()
		deleted := 0
		for i, m := range batch {
			if err != nil || failed[fmt.Sprintf("msg-%d", i+1)] {
				q.retry(m)
			} else {
				deleted++
			}
		}
		if deleted > 0 {
			b.aws.Add("SQS DeleteMessageBatch (event source mapping)", 1)
		}
		if err != nil {
			cli.Notef(os.Stderr, command, "%s: %v", f.Name, err)
		}
	}
}

// schedule invokes notify every notifyEvery, as the stack's rule does.
func (b *bench) schedule(ctx context.Context, f *awsemu.Function) {
	tick := time.NewTicker(b.o.notifyEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var out map[string]int
		t0 := time.Now()
		err := f.Invoke(context.Background(), map[string]any{"source": "aws.events", "detail-type": "Scheduled Event"}, &out)
		b.mu.Lock()
		b.lambda[f.Name] = append(b.lambda[f.Name], time.Since(t0))
		b.mu.Unlock()
		b.aws.Add("EventBridge scheduled invocation", 1)
		if err != nil {
			cli.Notef(os.Stderr, command, "notify: %v", err)
		}
	}
}

// announced counts the instances and studies announced so far.
func (b *bench) announced() (instances, studies int) {
	for _, e := range b.events.All() {
		switch e.DetailType {
		case pipeline.DetailTypeInstanceStored, pipeline.DetailTypeInstanceRejected:
			instances++
		case pipeline.DetailTypeStudyReceived:
			studies++
		}
	}
	return instances, studies
}

// tableSize scans table and sums its items' sizes as DynamoDB meters
// them for storage: attribute names and values, plus 100 bytes of
// overhead per item.
func tableSize(ctx context.Context, c *dynamodb.Client, table string) (size, items int64, err error) {
	p := dynamodb.NewScanPaginator(c, &dynamodb.ScanInput{TableName: aws.String(table)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, 0, fmt.Errorf("scan %s: %w", table, err)
		}
		for _, it := range page.Items {
			items++
			size += 100 + itemSize(it)
		}
	}
	return size, items, nil
}

// itemSize is an item's size by DynamoDB's rules (names and values;
// numbers approximated by their digits).
func itemSize(m map[string]ddbtypes.AttributeValue) int64 {
	var n int64
	for k, v := range m {
		n += int64(len(k)) + valueSize(v)
	}
	return n
}

func valueSize(v ddbtypes.AttributeValue) int64 {
	switch v := v.(type) {
	case *ddbtypes.AttributeValueMemberS:
		return int64(len(v.Value))
	case *ddbtypes.AttributeValueMemberN:
		return int64(len(v.Value)/2 + 1)
	case *ddbtypes.AttributeValueMemberB:
		return int64(len(v.Value))
	case *ddbtypes.AttributeValueMemberSS:
		var n int64
		for _, s := range v.Value {
			n += int64(len(s))
		}
		return n
	case *ddbtypes.AttributeValueMemberNS:
		var n int64
		for _, s := range v.Value {
			n += int64(len(s)/2 + 1)
		}
		return n
	case *ddbtypes.AttributeValueMemberM:
		return 3 + itemSize(v.Value)
	case *ddbtypes.AttributeValueMemberL:
		n := int64(3)
		for _, e := range v.Value {
			n += 1 + valueSize(e)
		}
		return n
	}
	return 1 // BOOL, NULL
}

// storageByPrefix sums the bytes S3 holds under each top-level prefix.
func storageByPrefix(ctx context.Context, endpoint string) (map[string]int64, error) {
	c := s3test.Client(endpoint)
	out := map[string]int64{}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list the bucket: %w", err)
		}
		for _, o := range page.Contents {
			prefix, _, _ := strings.Cut(aws.ToString(o.Key), "/")
			out[prefix] += aws.ToInt64(o.Size)
			out[prefix+" objects"]++
		}
	}
	return out, nil
}
