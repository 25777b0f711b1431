package pipelinee2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"
	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/awsemu"
)

// callLog records the DynamoDB operations a client calls, once per call
// (before the SDK's retries), through SDK middleware.
type callLog struct {
	mu  sync.Mutex
	ops []string
}

func (l *callLog) install(o *dynamodb.Options) {
	o.APIOptions = append(o.APIOptions, func(s *middleware.Stack) error {
		return s.Initialize.Add(middleware.InitializeMiddlewareFunc("callLog",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				l.mu.Lock()
				l.ops = append(l.ops, awsmiddleware.GetOperationName(ctx))
				l.mu.Unlock()
				return next.HandleInitialize(ctx, in)
			}), middleware.Before)
	})
}

// take returns and forgets the operations called so far.
func (l *callLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.ops
	l.ops = nil
	return out
}

// crashAfter makes a client behave as if its process died right after its
// n-th call took effect: that call's answer is lost, later calls fail.
func crashAfter(n int) func(*dynamodb.Options) {
	var calls atomic.Int64
	return func(o *dynamodb.Options) {
		o.Retryer = aws.NopRetryer{}
		o.APIOptions = append(o.APIOptions, func(s *middleware.Stack) error {
			return s.Initialize.Add(middleware.InitializeMiddlewareFunc("crash",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					switch c := calls.Add(1); {
					case c < int64(n):
						return next.HandleInitialize(ctx, in)
					case c == int64(n):
						if out, md, err := next.HandleInitialize(ctx, in); err != nil {
							return out, md, err
						}
					}
					return middleware.InitializeOutput{}, middleware.Metadata{}, pipelinetest.ErrCrash
				}), middleware.Before)
		})
	}
}

// errRefused is the error of failOperation's calls.
var errRefused = errors.New("test: operation refused")

// failOperation makes a client's calls of operation op fail with errRefused, without retries; the others go through.
func failOperation(op string) func(*dynamodb.Options) {
	return func(o *dynamodb.Options) {
		o.Retryer = aws.NopRetryer{}
		o.APIOptions = append(o.APIOptions, func(s *middleware.Stack) error {
			return s.Initialize.Add(middleware.InitializeMiddlewareFunc("fail",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					if awsmiddleware.GetOperationName(ctx) == op {
						return middleware.InitializeOutput{}, middleware.Metadata{}, errRefused
					}
					return next.HandleInitialize(ctx, in)
				}), middleware.Before)
		})
	}
}

// indexTables hands out fresh index tables on one dynalite.
type indexTables struct {
	url string
	c   *dynamodb.Client
	n   atomic.Int64
}

func newIndexTables(t *testing.T) *indexTables {
	url := dynaliteURL(t)
	return &indexTables{url: url, c: dynamoClient(url)}
}

func (x *indexTables) table(t *testing.T) *awsadapters.IndexTable {
	name := fmt.Sprintf("index-%d", x.n.Add(1))
	createTable(t, x.c, awsemu.IndexTableInput(name))
	return &awsadapters.IndexTable{Client: x.c, Table: name}
}

// TestIndexConformanceOnDynalite runs the index contract's suite on the
// DynamoDB adapter, crashing upserts after each of their calls.
func TestIndexConformanceOnDynalite(t *testing.T) {
	tables := newIndexTables(t)
	pipelinetest.RunIndexStore(t, pipelinetest.IndexHarness{
		New: func(t *testing.T) pipeline.IndexStore { return tables.table(t) },
		Crash: func(_ *testing.T, ix pipeline.IndexStore, n int) pipeline.IndexStore {
			return &awsadapters.IndexTable{Client: dynamoClient(tables.url, crashAfter(n)), Table: ix.(*awsadapters.IndexTable).Table}
		},
		StoreName: func(t *testing.T, ix pipeline.IndexStore, uid, name string) {
			_, err := tables.c.UpdateItem(context.Background(), &dynamodb.UpdateItemInput{
				TableName: aws.String(ix.(*awsadapters.IndexTable).Table),
				Key: map[string]ddbtypes.AttributeValue{
					"pk": &ddbtypes.AttributeValueMemberS{Value: "STUDY#" + uid}, "sk": &ddbtypes.AttributeValueMemberS{Value: "STUDY"}},
				UpdateExpression:          aws.String("SET patientName = :n"),
				ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":n": &ddbtypes.AttributeValueMemberS{Value: name}},
			})
			if err != nil {
				t.Fatal(err)
			}
		},
	})
}

// TestAnnouncementsOnDynalite runs the announcement scenarios on the
// DynamoDB adapter.
func TestAnnouncementsOnDynalite(t *testing.T) {
	tables := newIndexTables(t)
	pipelinetest.RunAnnouncements(t, func(t *testing.T) pipeline.IndexStore { return tables.table(t) })
}

// TestIndexCallsOnDynalite counts the DynamoDB calls of the index's
// common paths.
func TestIndexCallsOnDynalite(t *testing.T) {
	tables := newIndexTables(t)
	var log callLog
	x := tables.table(t)
	x.Client = dynamoClient(tables.url, log.install)
	// other is another execution environment on the same table.
	other := &awsadapters.IndexTable{Client: x.Client, Table: x.Table}
	ctx := context.Background()
	upsert := func(x *awsadapters.IndexTable, in pipeline.InstanceRecord) []string {
		t.Helper()
		if _, err := x.UpsertInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
		return log.take()
	}
	newInstance := []string{"UpdateItem", "UpdateItem", "PutItem", "UpdateItem"}
	// The first instance of a series an environment meets reads its
	// marker, and creates it if absent.
	newSeries := []string{"UpdateItem", "GetItem", "PutItem", "UpdateItem", "PutItem", "UpdateItem"}
	seriesSeen := []string{"UpdateItem", "GetItem", "UpdateItem", "PutItem", "UpdateItem"}
	duplicate := []string{"UpdateItem", "GetItem", "GetItem"}
	resend := func(in pipeline.InstanceRecord) pipeline.InstanceRecord {
		in.ObjectKey = "incoming/resent/" + in.SOPInstanceUID + ".dcm"
		return in
	}
	for _, tc := range []struct {
		name string
		x    *awsadapters.IndexTable
		in   pipeline.InstanceRecord
		want []string
	}{
		{"first instance of a study", x, pipelinetest.Record(1, 1, 1, "aa", 0), newSeries},
		{"new instance, same series", x, pipelinetest.Record(1, 1, 2, "bb", time.Second), newInstance},
		{"new instance, new series", x, pipelinetest.Record(1, 2, 1, "cc", 2*time.Second), newSeries},
		{"conflict", x, pipelinetest.Record(1, 1, 1, "dd", 3*time.Second), newInstance},
		{"series created in another environment", other, pipelinetest.Record(1, 1, 3, "ee", 4*time.Second), seriesSeen},
		{"same series, other environment again", other, pipelinetest.Record(1, 1, 4, "ff", 5*time.Second), newInstance},
		{"duplicate", x, pipelinetest.Record(1, 1, 2, "bb", time.Hour), duplicate},
		// A resend (another key) received after the study was last sent
		// writes when: one call more. One received earlier writes nothing.
		{"resend", x, resend(pipelinetest.Record(1, 1, 2, "bb", time.Hour)), append(duplicate, "UpdateItem")},
		{"resend received earlier", x, resend(pipelinetest.Record(1, 1, 2, "bb", time.Minute)), duplicate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, upsert(tc.x, tc.in)); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("GetStudy only reads", func(t *testing.T) {
		if _, err := x.GetStudy(ctx, pipelinetest.Record(1, 1, 1, "", 0).StudyInstanceUID); err != nil {
			t.Fatal(err)
		}
		for _, op := range log.take() {
			if op != "Query" {
				t.Errorf("GetStudy called %s", op)
			}
		}
	})
	// Concurrent deliveries of one study contend for its item in step 5
	// and retry it: report what that costs.
	t.Run("concurrent", func(t *testing.T) {
		const n = 32
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if _, err := x.UpsertInstance(ctx, pipelinetest.Record(2, 1+i%4, i, "ee", time.Duration(i)*time.Millisecond)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		ops := log.take()
		t.Logf("%d concurrent new instances of one study: %.1f calls each", n, float64(len(ops))/n)
		if len(ops) < 4*n {
			t.Errorf("%d calls for %d instances", len(ops), n)
		}
		// The instances of a series share one lookup of its marker: one
		// marker put per series beside the instance items.
		if puts := slices.DeleteFunc(ops, func(op string) bool { return op != "PutItem" }); len(puts) != n+4 {
			t.Errorf("%d PutItem for %d instances in 4 new series, want %d", len(puts), n, n+4)
		}
	})
}

// TestIndexSeriesMarkerRemembered: an environment that remembers a series
// marker's creator still counts the series when the creator's upsert,
// cut short after it created the marker, is retried there.
func TestIndexSeriesMarkerRemembered(t *testing.T) {
	tables := newIndexTables(t)
	x := tables.table(t)
	ctx := context.Background()
	creator, next := pipelinetest.Record(1, 1, 1, "aa", 0), pipelinetest.Record(1, 1, 2, "bb", time.Second)
	// The claim, the marker's read, its put: then the environment dies.
	crashed := &awsadapters.IndexTable{Client: dynamoClient(tables.url, crashAfter(3)), Table: x.Table}
	if _, err := crashed.UpsertInstance(ctx, creator); !errors.Is(err, pipelinetest.ErrCrash) {
		t.Fatalf("upsert on a crashing index: %v", err)
	}
	for _, tc := range []struct {
		in                     pipeline.InstanceRecord
		want                   pipeline.UpsertOutcome
		instances, seriesCount int
	}{
		{next, pipeline.InstanceNew, 1, 0}, // x learns the marker is creator's
		{creator, pipeline.InstanceNew, 2, 1},
		{creator, pipeline.InstanceDuplicate, 2, 1},
	} {
		r, err := x.UpsertInstance(ctx, tc.in)
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != tc.want || r.Study.InstanceCount != tc.instances || r.Study.SeriesCount != tc.seriesCount {
			t.Errorf("%s: %v, %d instances in %d series; want %v, %d in %d", tc.in.ContentIdentity, r.Outcome,
				r.Study.InstanceCount, r.Study.SeriesCount, tc.want, tc.instances, tc.seriesCount)
		}
	}
}

// TestIndexMigratesLegacyStudy: a study the adapter wrote before index
// version 2 (per-study SOP markers, series items with counters, and here
// an instance an interrupted upsert left uncounted) is migrated by the
// first upsert that meets it: a redelivery of a legacy instance stays a
// duplicate, another content of it is a conflict, and the counts are
// recomputed from the instance items.
func TestIndexMigratesLegacyStudy(t *testing.T) {
	tables := newIndexTables(t)
	x := tables.table(t)
	ctx := context.Background()
	r1, r2 := pipelinetest.Record(1, 1, 1, "aa", 0), pipelinetest.Record(1, 1, 2, "bb", time.Second)
	pk := "STUDY#" + r1.StudyInstanceUID
	items := []map[string]ddbtypes.AttributeValue{
		{"pk": s(pk), "sk": s("STUDY"), "kind": s("STUDY"), "studyInstanceUid": s(r1.StudyInstanceUID), "patientId": s("PID-1"),
			"instanceCount": n(1), "seriesCount": n(1), "totalBytes": n(100), "revision": n(2), "firstReceived": s("2026-01-15T10:00:00.000000000Z"), "lastReceived": s("2026-01-15T10:00:01.000000000Z"),
			"gsi1pk": s("PENDING"), "gsi1sk": s("2026-01-15T10:00:01.000000000Z")},
		{"pk": s(pk), "sk": s("SERIES#" + r1.SeriesInstanceUID), "seriesInstanceUid": s(r1.SeriesInstanceUID), "instanceCount": n(1)},
		{"pk": s(pk), "sk": s("SOP#" + r1.SOPInstanceUID), "sha256": s("aa")},
		{"pk": s(pk), "sk": s("SOP#" + r2.SOPInstanceUID), "sha256": s("bb")},
	}
	for _, r := range []pipeline.InstanceRecord{r1, r2} {
		item := map[string]ddbtypes.AttributeValue{"pk": s(pk), "sk": s("INSTANCE#" + r.SOPInstanceUID + "#" + r.ContentIdentity),
			"studyInstanceUid": s(r.StudyInstanceUID), "seriesInstanceUid": s(r.SeriesInstanceUID), "sopInstanceUid": s(r.SOPInstanceUID),
			"sha256": s(r.ContentIdentity), "size": n(100), "receivedAt": s(r.ReceivedAt.Format(time.RFC3339Nano)), "outcome": s("new")}
		items = append(items, item)
	}
	for _, item := range items {
		if _, err := x.Client.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(x.Table), Item: item}); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		in   pipeline.InstanceRecord
		want pipeline.UpsertOutcome
		// instances, conflicts
		instances, conflicts int
	}{
		{r2, pipeline.InstanceDuplicate, 2, 0},
		{pipelinetest.Record(1, 1, 1, "cc", 2*time.Second), pipeline.InstanceConflict, 2, 1},
		{pipelinetest.Record(1, 2, 1, "dd", 3*time.Second), pipeline.InstanceNew, 3, 1},
		{r1, pipeline.InstanceDuplicate, 3, 1},
	} {
		r, err := x.UpsertInstance(ctx, step.in)
		if err != nil {
			t.Fatal(err)
		}
		if r.Outcome != step.want || r.Study.InstanceCount != step.instances || r.Study.ConflictCount != step.conflicts {
			t.Errorf("%s %s: %v, %d instances, %d conflicts; want %v, %d, %d", step.in.SOPInstanceUID, step.in.ContentIdentity,
				r.Outcome, r.Study.InstanceCount, r.Study.ConflictCount, step.want, step.instances, step.conflicts)
		}
	}
	d, err := x.GetStudy(ctx, r1.StudyInstanceUID)
	if err != nil {
		t.Fatal(err)
	}
	if d.SeriesCount != 2 || len(d.Series) != 2 || len(d.Instances) != 4 || d.TotalBytes != 400 {
		t.Errorf("migrated study: %d series (%d listed), %d records, %d bytes", d.SeriesCount, len(d.Series), len(d.Instances), d.TotalBytes)
	}
	if !slices.ContainsFunc(d.Instances, func(in pipeline.InstanceRecord) bool { return in.Conflict && strings.HasSuffix(in.ObjectKey, "cc.dcm") }) {
		t.Errorf("conflicting record missing: %+v", d.Instances)
	}
}

func n(v int64) ddbtypes.AttributeValue {
	return &ddbtypes.AttributeValueMemberN{Value: fmt.Sprint(v)}
}

// TestStableStudiesClearTheWay: the byPending entries StableStudies passes
// over for good are moved out of the way, not read again at every run: an
// announced study still listed (its MarkAnnounced cut short before the
// REMOVE of gsi1pk) leaves the index, one with an upsert in flight (cut
// short after its count) is deferred past the query's quiet time.
func TestStableStudiesClearTheWay(t *testing.T) {
	tables := newIndexTables(t)
	x, ps := passedOver(t, tables)
	got, err := x.StableStudies(context.Background(), ps.quietSince, 10)
	if err != nil || len(got) != 1 || got[0].StudyInstanceUID != ps.quiet {
		t.Fatalf("StableStudies = %v (%v), want the quiet study", got, err)
	}
	if diff := cmp.Diff([]string{ps.quiet}, ps.listed(t)); diff != "" {
		t.Errorf("listed as quiet after (-want +got):\n%s", diff)
	}
	d, err := x.GetStudy(context.Background(), ps.inFlight)
	if err != nil || d.Revision != 2 || d.AnnouncedRevision != 0 || !d.LastActivity.After(ps.quietSince) {
		t.Errorf("study in flight = %+v (%v), want it pending and deferred", d.StudySummary, err)
	}
}

// TestStableStudiesPassOverAFailedCleanup: a cleanup of a study passed over that fails (leavePending,
// DeferAnnouncement: every UpdateItem refused) is logged, naming no study, and the rest are offered: it failed the
// whole read, so one study's housekeeping held every other study's announcement back for the run. The next read
// clears them.
func TestStableStudiesPassOverAFailedCleanup(t *testing.T) {
	tables := newIndexTables(t)
	x, ps := passedOver(t, tables)
	var logs testenv.LogBuffer
	faulty := &awsadapters.IndexTable{Client: dynamoClient(tables.url, failOperation("UpdateItem")), Table: x.Table,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
	got, err := faulty.StableStudies(context.Background(), ps.quietSince, 10)
	if err != nil || len(got) != 1 || got[0].StudyInstanceUID != ps.quiet {
		t.Fatalf("StableStudies with its cleanups failing = %v (%v), want the quiet study", got, err)
	}
	if n := strings.Count(logs.String(), awsadapters.StableStudyCleanupFailedLog); n != 2 {
		t.Errorf("%d lines say a cleanup failed, want 2 (leave the pending index, defer):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), errRefused.Error()) {
		t.Errorf("the lines do not give the error:\n%s", logs.String())
	}
	for _, uid := range []string{ps.announced, ps.inFlight, ps.quiet} {
		if strings.Contains(logs.String(), uid) {
			t.Errorf("a line names study %s:\n%s", uid, logs.String())
		}
	}
	if diff := cmp.Diff([]string{ps.announced, ps.inFlight, ps.quiet}, ps.listed(t)); diff != "" {
		t.Errorf("listed as quiet after the failed cleanups (-want +got):\n%s", diff)
	}
	if got, err := x.StableStudies(context.Background(), ps.quietSince, 10); err != nil || len(got) != 1 {
		t.Fatalf("StableStudies = %v (%v), want the quiet study", got, err)
	}
	if diff := cmp.Diff([]string{ps.quiet}, ps.listed(t)); diff != "" {
		t.Errorf("listed as quiet once the cleanups succeed (-want +got):\n%s", diff)
	}
}

// passedOverStudies are three studies the byPending index lists as quiet: one announced still listed (MarkAnnounced
// died before its REMOVE of gsi1pk), one with an upsert in flight, and one quiet, to offer.
type passedOverStudies struct {
	announced, inFlight, quiet string
	quietSince                 time.Time
	table                      string
	c                          *dynamodb.Client
}

// listed is the studies the byPending index lists as quiet at ps.quietSince.
func (ps passedOverStudies) listed(t *testing.T) []string {
	t.Helper()
	res, err := ps.c.Query(context.Background(), &dynamodb.QueryInput{
		TableName: aws.String(ps.table), IndexName: aws.String("byPending"),
		KeyConditionExpression:    aws.String("gsi1pk = :p AND gsi1sk <= :t"),
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":p": s("PENDING"), ":t": s(ps.quietSince.Format(time.RFC3339Nano))},
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, item := range res.Items {
		out = append(out, strings.TrimPrefix(item["pk"].(*ddbtypes.AttributeValueMemberS).Value, "STUDY#"))
	}
	return out
}

// passedOver writes the passedOverStudies in a fresh table.
func passedOver(t *testing.T, tables *indexTables) (*awsadapters.IndexTable, passedOverStudies) {
	t.Helper()
	x := tables.table(t)
	ctx := context.Background()
	crashed := func(n int) *awsadapters.IndexTable {
		return &awsadapters.IndexTable{Client: dynamoClient(tables.url, crashAfter(n)), Table: x.Table}
	}
	// A study's first upsert writes its byPending sort key at its end: the
	// study in flight is one a second instance of which is cut short.
	announced, inFlight, quiet := pipelinetest.Record(1, 1, 1, "aa", 0), pipelinetest.Record(2, 1, 2, "bb", time.Second),
		pipelinetest.Record(3, 1, 1, "cc", 2*time.Second)
	for _, in := range []pipeline.InstanceRecord{announced, pipelinetest.Record(2, 1, 1, "bb", 0), quiet} {
		if _, err := x.UpsertInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	if err := crashed(1).MarkAnnounced(ctx, announced.StudyInstanceUID, 1, 1, pipelinetest.T0); !errors.Is(err, pipelinetest.ErrCrash) {
		t.Fatalf("mark announced on a crashing index: %v", err)
	}
	// The claim, the series marker's read, the count: then it dies.
	if _, err := crashed(3).UpsertInstance(ctx, inFlight); !errors.Is(err, pipelinetest.ErrCrash) {
		t.Fatalf("upsert on a crashing index: %v", err)
	}
	ps := passedOverStudies{announced: announced.StudyInstanceUID, inFlight: inFlight.StudyInstanceUID, quiet: quiet.StudyInstanceUID,
		quietSince: pipelinetest.T0.Add(time.Hour), table: x.Table, c: x.Client.(*dynamodb.Client)}
	if diff := cmp.Diff([]string{ps.announced, ps.inFlight, ps.quiet}, ps.listed(t)); diff != "" {
		t.Fatalf("listed as quiet before (-want +got):\n%s", diff)
	}
	return x, ps
}

// TestRejectedAcrossPages: a study's rejected notes that take more than
// one page of the study's Query (DynamoDB's 1 MB a page; some 6,000 notes
// of 64-character UIDs, about 1.3 MB) are each counted once as the pages
// come (pipeline.RejectedTally, a page held at a time): the notes of both
// pages, but those of instances the study holds, on the first page and on
// the last.
func TestRejectedAcrossPages(t *testing.T) {
	tables := newIndexTables(t)
	var calls callLog
	ix := tables.table(t)
	ix.Client = dynamoClient(tables.url, calls.install)
	ctx := context.Background()
	const rejects = 6000
	// 64-character UIDs, the longest, for the fewest notes a page.
	studyUID := "1.2.826.0.1.3680043.10.1001.9." + strings.Repeat("9", 34)
	sop := func(i int) string { return fmt.Sprintf("%s.%d", studyUID[:len(studyUID)-6], 10000+i) }
	// Instance 0 sorts first among the notes, instance rejects-1 last:
	// both held, so neither counts.
	for _, i := range []int{0, rejects - 1} {
		in := pipelinetest.Record(1, 1, 1, fmt.Sprintf("held%d", i), 0)
		in.StudyInstanceUID, in.SeriesInstanceUID, in.SOPInstanceUID = studyUID, studyUID[:len(studyUID)-2]+".1", sop(i)
		if _, err := ix.UpsertInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range next {
				if err := ix.RecordRejected(ctx, pipeline.RejectedInstance{StudyInstanceUID: studyUID, SOPInstanceUID: sop(i)}); err != nil {
					t.Errorf("RecordRejected %d: %v", i, err)
				}
			}
		})
	}
	for i := range rejects {
		next <- i
	}
	close(next)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	calls.take()
	d, err := ix.GetStudy(ctx, studyUID)
	if err != nil {
		t.Fatal(err)
	}
	if queries := slices.DeleteFunc(calls.take(), func(op string) bool { return op != "Query" }); len(queries) < 2 {
		t.Fatalf("GetStudy read the study in %d Query pages; the test needs its notes on two", len(queries))
	}
	if d.RejectedCount != rejects-2 || d.InstanceCount != 2 {
		t.Errorf("rejected %d, instances %d; want %d, 2", d.RejectedCount, d.InstanceCount, rejects-2)
	}
}
