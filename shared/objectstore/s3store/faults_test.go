package s3store_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// flaky wraps a real client and makes chosen operations fail before or
// after they reach S3.
type flaky struct {
	next s3store.Client

	mu      sync.Mutex
	failN   map[string]int // op -> failures still to inject before the call
	always  map[string]bool
	loseN   map[string]int // op -> answers still to drop after the call
	stallN  map[string]int // op -> calls still to hold until their attempt's context ends
	holdN   map[string]int // op -> calls still to make, then hold their answer until their attempt's context ends
	failErr error
	lostErr error // what a lost answer (loseN) reads as; nil: a reset
	badCRC  bool
	calls   map[string]int
	// beforeComplete runs once, before the first CompleteMultipartUpload.
	beforeComplete func()
	// abortGate, when set, holds every AbortMultipartUpload until it is
	// closed or the call's context ends; abortsEnded counts the calls it
	// let go.
	abortGate   chan struct{}
	abortsEnded int
	// partsUploaded, when set, gets a value for every UploadPart S3 took
	// while it has room.
	partsUploaded chan struct{}
}

func newFlaky(next s3store.Client) *flaky {
	return &flaky{next: next, failN: map[string]int{}, always: map[string]bool{}, loseN: map[string]int{}, stallN: map[string]int{}, holdN: map[string]int{},
		calls: map[string]int{}, failErr: apiErr(503, "SlowDown")}
}

func apiErr(status int, code string) error {
	return &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
		Err:      &smithy.GenericAPIError{Code: code, Message: "injected"},
	}
}

// bare503 is a 503 with no S3 error code: a proxy's page the SDK cannot
// read as S3's error.
var bare503 = &smithyhttp.ResponseError{
	Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 503}},
	Err:      &smithy.DeserializationError{Err: errors.New("<html>503 Service Temporarily Unavailable</html>: not S3's error (injected)")},
}

func (f *flaky) before(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if f.always[op] {
		return f.failErr
	}
	if f.failN[op] > 0 {
		f.failN[op]--
		return f.failErr
	}
	return nil
}

func (f *flaky) after(op string, err error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil && f.loseN[op] > 0 {
		f.loseN[op]--
		if f.lostErr != nil {
			return f.lostErr
		}
		return &smithyhttp.RequestSendError{Err: errors.New("read: connection reset by peer (injected)")}
	}
	return err
}

func (f *flaky) count(op string) int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls[op] }

// stall holds a call of op, while stallN says so, until its context ends,
// as a connection S3 stopped answering does.
func (f *flaky) stall(ctx context.Context, op string) error {
	f.mu.Lock()
	n := f.stallN[op]
	if n > 0 {
		f.stallN[op]--
	}
	f.mu.Unlock()
	if n == 0 {
		return nil
	}
	<-ctx.Done()
	return &smithyhttp.RequestSendError{Err: ctx.Err()}
}

// hold keeps the answer of a call of op that S3 acted on, while holdN says
// so, until its context ends: S3 took the request and the answer was too
// slow to matter.
func (f *flaky) hold(ctx context.Context, op string, err error) error {
	f.mu.Lock()
	n := f.holdN[op]
	if n > 0 && err == nil {
		f.holdN[op]--
	}
	f.mu.Unlock()
	if n == 0 || err != nil {
		return err
	}
	<-ctx.Done()
	return &smithyhttp.RequestSendError{Err: ctx.Err()}
}

func (f *flaky) PutObject(ctx context.Context, in *s3.PutObjectInput, o ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if err := f.before("PutObject"); err != nil {
		return nil, err
	}
	if err := f.stall(ctx, "PutObject"); err != nil {
		return nil, err
	}
	out, err := f.next.PutObject(ctx, in, o...)
	if err == nil && f.badCRC {
		out.ChecksumCRC64NVME = aws.String("AAAAAAAAAAA=")
	}
	if err := f.hold(ctx, "PutObject", err); err != nil {
		return nil, err
	}
	return out, f.after("PutObject", err)
}
func (f *flaky) HeadObject(ctx context.Context, in *s3.HeadObjectInput, o ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	if err := f.before("HeadObject"); err != nil {
		return nil, err
	}
	out, err := f.next.HeadObject(ctx, in, o...)
	return out, f.after("HeadObject", err)
}
func (f *flaky) HeadBucket(ctx context.Context, in *s3.HeadBucketInput, o ...func(*s3.Options)) (*s3.HeadBucketOutput, error) {
	if err := f.before("HeadBucket"); err != nil {
		return nil, err
	}
	out, err := f.next.HeadBucket(ctx, in, o...)
	return out, f.after("HeadBucket", err)
}
func (f *flaky) CreateMultipartUpload(ctx context.Context, in *s3.CreateMultipartUploadInput, o ...func(*s3.Options)) (*s3.CreateMultipartUploadOutput, error) {
	if err := f.before("CreateMultipartUpload"); err != nil {
		return nil, err
	}
	out, err := f.next.CreateMultipartUpload(ctx, in, o...)
	return out, f.after("CreateMultipartUpload", err)
}
func (f *flaky) UploadPart(ctx context.Context, in *s3.UploadPartInput, o ...func(*s3.Options)) (*s3.UploadPartOutput, error) {
	if err := f.before("UploadPart"); err != nil {
		return nil, err
	}
	out, err := f.next.UploadPart(ctx, in, o...)
	if err == nil && f.partsUploaded != nil {
		select {
		case f.partsUploaded <- struct{}{}:
		default: // nobody waits for as many
		}
	}
	return out, f.after("UploadPart", err)
}
func (f *flaky) CompleteMultipartUpload(ctx context.Context, in *s3.CompleteMultipartUploadInput, o ...func(*s3.Options)) (*s3.CompleteMultipartUploadOutput, error) {
	f.mu.Lock()
	hook := f.beforeComplete
	f.beforeComplete = nil
	f.mu.Unlock()
	if hook != nil {
		hook()
	}
	if err := f.before("CompleteMultipartUpload"); err != nil {
		return nil, err
	}
	if err := f.stall(ctx, "CompleteMultipartUpload"); err != nil {
		return nil, err
	}
	out, err := f.next.CompleteMultipartUpload(ctx, in, o...)
	if err := f.hold(ctx, "CompleteMultipartUpload", err); err != nil {
		return nil, err
	}
	return out, f.after("CompleteMultipartUpload", err)
}
func (f *flaky) AbortMultipartUpload(ctx context.Context, in *s3.AbortMultipartUploadInput, o ...func(*s3.Options)) (*s3.AbortMultipartUploadOutput, error) {
	if err := f.before("AbortMultipartUpload"); err != nil {
		return nil, err
	}
	if f.abortGate != nil {
		select {
		case <-f.abortGate:
		case <-ctx.Done():
		}
		f.mu.Lock()
		f.abortsEnded++
		f.mu.Unlock()
		if ctx.Err() != nil {
			return nil, &smithyhttp.RequestSendError{Err: ctx.Err()}
		}
	}
	out, err := f.next.AbortMultipartUpload(ctx, in, o...)
	return out, f.after("AbortMultipartUpload", err)
}

func (f *flaky) ListMultipartUploads(ctx context.Context, in *s3.ListMultipartUploadsInput, o ...func(*s3.Options)) (*s3.ListMultipartUploadsOutput, error) {
	if err := f.before("ListMultipartUploads"); err != nil {
		return nil, err
	}
	out, err := f.next.ListMultipartUploads(ctx, in, o...)
	return out, f.after("ListMultipartUploads", err)
}

// Retry deadlines for flakyStore: a case that must give up waits out the
// short one; a case that must succeed gets one no slow machine (or -race)
// can reach, so a slow first attempt never turns its success into a failure.
const (
	giveUpDeadline  = 600 * time.Millisecond
	succeedDeadline = time.Minute
)

func flakyStore(t *testing.T, deadline time.Duration, setup func(*flaky)) (*s3store.Store, *s3test.Server, *flaky) {
	t.Helper()
	srv := s3test.NewServer(t, bucket)
	f := newFlaky(s3test.Client(srv.URL))
	setup(f)
	st, err := s3store.New(context.Background(), s3store.Options{
		Bucket: bucket, Prefix: prefix, PartSize: partSize, Client: f,
		RetryDeadline: deadline, ReadyTTL: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	return st, srv, f
}

func TestFaults(t *testing.T) {
	single, multi := s3test.Bytes(11, 3000), s3test.Bytes(12, 2*partSize+3000)
	for _, tc := range []struct {
		name          string
		setup         func(*flaky)
		data          []byte
		wantErr       error // nil: success
		wantDuplicate bool
		wantCalls     map[string]int // exact call counts to check
	}{
		{name: "503 twice then success", data: single,
			setup:     func(f *flaky) { f.failN["PutObject"] = 2 },
			wantCalls: map[string]int{"PutObject": 3}},
		{name: "part fails twice then success", data: multi,
			setup:     func(f *flaky) { f.failN["UploadPart"] = 2 },
			wantCalls: map[string]int{"UploadPart": 5, "AbortMultipartUpload": 0}},
		{name: "S3 keeps failing: unavailable", data: single,
			setup:   func(f *flaky) { f.always["PutObject"] = true },
			wantErr: objectstore.ErrUnavailable},
		{name: "parts keep failing: unavailable and aborted", data: multi,
			setup:     func(f *flaky) { f.always["UploadPart"] = true },
			wantErr:   objectstore.ErrUnavailable,
			wantCalls: map[string]int{"AbortMultipartUpload": 1, "CompleteMultipartUpload": 0}},
		{name: "complete keeps failing: unavailable and aborted", data: multi,
			setup:     func(f *flaky) { f.always["CompleteMultipartUpload"] = true },
			wantErr:   objectstore.ErrUnavailable,
			wantCalls: map[string]int{"AbortMultipartUpload": 1}},
		{name: "abort itself fails at first", data: multi,
			setup: func(f *flaky) {
				f.always["CompleteMultipartUpload"] = true
				f.failN["AbortMultipartUpload"] = 2
			},
			wantErr:   objectstore.ErrUnavailable,
			wantCalls: map[string]int{"AbortMultipartUpload": 3}},
		{name: "access denied is not retried", data: single,
			setup:     func(f *flaky) { f.failErr = apiErr(403, "AccessDenied"); f.always["PutObject"] = true },
			wantErr:   errAny,
			wantCalls: map[string]int{"PutObject": 1}},
		{name: "answer to create lost: the orphaned upload is aborted", data: multi,
			setup:     func(f *flaky) { f.loseN["CreateMultipartUpload"] = 2 },
			wantCalls: map[string]int{"CreateMultipartUpload": 3, "ListMultipartUploads": 1, "AbortMultipartUpload": 2}},
		{name: "create refused by S3 at first: no orphan looked for", data: multi,
			setup:     func(f *flaky) { f.failN["CreateMultipartUpload"] = 2 },
			wantCalls: map[string]int{"CreateMultipartUpload": 3, "ListMultipartUploads": 0, "AbortMultipartUpload": 0}},
		{name: "answer to complete lost: our upload is recognised", data: multi,
			setup:     func(f *flaky) { f.loseN["CompleteMultipartUpload"] = 1 },
			wantCalls: map[string]int{"CompleteMultipartUpload": 2, "AbortMultipartUpload": 0}},
		{name: "answer to put lost: the retry finds our object", data: single,
			setup:     func(f *flaky) { f.loseN["PutObject"] = 1 },
			wantCalls: map[string]int{"PutObject": 2}},
		{name: "S3 answers another checksum", data: single,
			setup:   func(f *flaky) { f.badCRC = true },
			wantErr: errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			deadline := succeedDeadline
			if errors.Is(tc.wantErr, objectstore.ErrUnavailable) {
				deadline = giveUpDeadline
			}
			st, srv, f := flakyStore(t, deadline, tc.setup)
			obj := testObject("1.2.3.4.100")
			key, _ := objectstore.Key(obj)
			got, err := st.Put(context.Background(), obj, bytes.NewReader(tc.data))
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("Put: %v", err)
			case tc.wantErr == errAny && err == nil, tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("Put err = %v, want %v", err, tc.wantErr)
			case tc.wantErr == errAny && errors.Is(err, objectstore.ErrUnavailable):
				t.Errorf("permanent failure reported as unavailable: %v", err)
			}
			if err == nil {
				if got.Duplicate != tc.wantDuplicate {
					t.Errorf("Duplicate = %v, want %v", got.Duplicate, tc.wantDuplicate)
				}
				if b, _, gerr := srv.Object(prefix + key); gerr != nil || !bytes.Equal(b, tc.data) {
					t.Errorf("stored object missing or different (%v)", gerr)
				}
			} else if len(tc.data) > partSize {
				if _, _, gerr := srv.Object(prefix + key); gerr == nil {
					t.Error("failed multipart put left an object")
				}
			}
			for op, n := range tc.wantCalls {
				if c := f.count(op); c != n {
					t.Errorf("%s called %d times, want %d", op, c, n)
				}
			}
			assertClean(t, srv)
		})
	}
}

var errAny = errors.New("any error")

// TestKeyTakenDuringMultipartUpload has another writer create the key
// while a multipart upload is under way: an identical object makes the
// Put a duplicate, a different one makes it fail as unavailable (the
// resend is then kept under a conflict key); nothing is overwritten and
// no upload is left. The other writer may be another task uploading this
// very C-STORE's staged object (its lock lapsed with its EFS lease): a
// duplicate with SameTransfer, which gets no duplicate record. The writer may be another task uploading this very
// C-STORE's staged object (its lock lapsed with its EFS lease): a
// duplicate with SameTransfer, which gets no duplicate record.
func TestKeyTakenDuringMultipartUpload(t *testing.T) {
	data := s3test.Bytes(21, partSize+500)
	for _, tc := range []struct {
		name         string
		other        []byte
		sameTransfer bool // the other writer uploads this very C-STORE
		wantDup      bool
		wantErr      error
		wantKept     []byte
	}{
		{"identical object", data, false, true, nil, data},
		{"this very C-STORE", data, true, true, nil, data},
		{"different object", s3test.Bytes(22, partSize+500), false, false, s3store.ErrKeyTakenConcurrently, s3test.Bytes(22, partSize+500)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj := testObject("1.2.3.4.200")
			key, _ := objectstore.Key(obj)
			var st *s3store.Store
			var srv *s3test.Server
			st, srv, _ = flakyStore(t, succeedDeadline, func(f *flaky) {
				f.beforeComplete = func() {
					// Another SCP task stores the other object first.
					if _, _, err := srv.Object(prefix + key); err == nil {
						t.Error("key taken before the race")
					}
					other, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Prefix: prefix, Client: s3test.Client(srv.URL)})
					if err != nil {
						t.Error(err)
						return
					}
					obj2 := obj
					if !tc.sameTransfer {
						obj2.AssociationID = "assoc-other"
					}
					if _, err := other.Put(context.Background(), obj2, bytes.NewReader(tc.other)); err != nil {
						t.Error(err)
					}
				}
			})
			got, err := st.Put(context.Background(), obj, bytes.NewReader(data))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !errors.Is(err, objectstore.ErrUnavailable) {
					t.Fatalf("err = %v, want %v and ErrUnavailable", err, tc.wantErr)
				}
			} else if err != nil || got.Duplicate != tc.wantDup || got.SameTransfer != tc.sameTransfer {
				t.Fatalf("Put = %+v, %v; want Duplicate %v, SameTransfer %v", got, err, tc.wantDup, tc.sameTransfer)
			}
			if b, _, err := srv.Object(prefix + key); err != nil || !bytes.Equal(b, tc.wantKept) {
				t.Errorf("key holds something else than the first writer's object (%v)", err)
			}
			assertClean(t, srv)
		})
	}
}

func TestReadyIsCached(t *testing.T) {
	st, _, f := flakyStore(t, succeedDeadline, func(*flaky) {})
	for range 3 {
		if err := st.Ready(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.count("HeadBucket"); n != 1 {
		t.Errorf("HeadBucket called %d times within the TTL, want 1", n)
	}
}

// TestStalledRequestIsRetried: an attempt S3 stops answering ends at its
// timeout and is retried within the retry deadline (found by a probe: the
// attempt timeout, 2 min, was past the 20 s deadline, so a stalled
// PutObject was never retried and the C-STORE was answered after 2 min,
// when the PACS had given up at 60 s).
func TestStalledRequestIsRetried(t *testing.T) {
	// The defaults leave room for a retry of every request, the largest
	// default part included, and answer well within a PACS's 60 s.
	for _, body := range []int64{0, s3store.DefaultPartSize} {
		attempt := s3store.DefaultAttemptTimeout + time.Duration(body)*time.Second/s3store.MinAttemptRate
		if 2*attempt >= s3store.DefaultRetryDeadline {
			t.Errorf("an attempt with %d bytes may take %s: no retry within the %s deadline", body, attempt, s3store.DefaultRetryDeadline)
		}
		if s3store.DefaultRetryDeadline+attempt >= 60*time.Second {
			t.Errorf("a failing request with %d bytes answers after %s", body, s3store.DefaultRetryDeadline+attempt)
		}
	}
	// The same, scaled down: the first attempt stalls, the second stores.
	srv := s3test.NewServer(t, bucket)
	f := newFlaky(s3test.Client(srv.URL))
	f.stallN["PutObject"] = 1
	st, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Prefix: prefix, PartSize: partSize, Client: f,
		AttemptTimeout: 200 * time.Millisecond, RetryDeadline: 5 * time.Second, ReadyTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	data := s3test.Bytes(21, 3000)
	if _, err := st.Put(context.Background(), testObject("1.2.3.4.5.21"), bytes.NewReader(data)); err != nil {
		t.Fatalf("Put after a stalled attempt: %v", err)
	}
	if n := f.count("PutObject"); n < 2 {
		t.Errorf("%d PutObject calls, want the stalled one and a retry", n)
	}
}

// The run markers' calls pass through untouched.
func (f *flaky) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, o ...func(*s3.Options)) (*s3.ListObjectsV2Output, error) {
	return f.next.ListObjectsV2(ctx, in, o...)
}

func (f *flaky) GetObject(ctx context.Context, in *s3.GetObjectInput, o ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	return f.next.GetObject(ctx, in, o...)
}

func (f *flaky) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, o ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	return f.next.DeleteObject(ctx, in, o...)
}

// TestReadySaysWhetherWritesSucceed: readiness follows what S3 answers to
// the store's writes, however slowly, and looks at the bucket only when
// it has none to go by, through the repo's fault proxy. S3 taking 3 s a
// request while every C-STORE was stored made /readyz's 3 s run out at
// every check, every task unready; and a bucket that answered HeadBucket
// while it refused every write (KMS down, a policy) kept the task ready
// (found by the operator drill).
func TestReadySaysWhetherWritesSucceed(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{})
	st, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Prefix: prefix, PartSize: partSize,
		Client: s3test.Client(proxy.URL), AttemptTimeout: 5 * time.Second, RetryDeadline: giveUpDeadline, ReadyTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// check is a caller whose patience S3 outlasts when slow (the health
	// check's 3 s against S3's 3 s).
	check := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		return st.Ready(ctx)
	}
	put := func(n int) error {
		_, err := st.Put(context.Background(), testObject(fmt.Sprintf("1.2.3.77.%d", n)), bytes.NewReader(s3test.Bytes(uint64(n), 3000)))
		return err
	}
	writes := func(r *http.Request) bool { return r.Method == http.MethodPut || r.Method == http.MethodPost }
	steps := []struct {
		name   string
		plan   s3test.Plan
		idle   bool // no write: the cached answer runs out
		putErr bool // the write fails
		ready  bool
	}{
		{name: "S3 well", idle: true, ready: true},
		{name: "slow S3, idle", plan: s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Slow}, SlowDelay: time.Second}, idle: true, ready: true},
		{name: "slow S3, writes stored", plan: s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Slow}, SlowDelay: 300 * time.Millisecond}, ready: true},
		{name: "writes fail, the bucket answers", plan: s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Status503}, Match: writes}, putErr: true},
		{name: "writes refused, the bucket answers", plan: s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Status403}, Match: writes}, putErr: true},
		{name: "recovered", ready: true},
		{name: "S3 down, idle", plan: s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Status503}}, idle: true},
		{name: "recovered, idle", idle: true, ready: true},
	}
	for i, step := range steps {
		proxy.SetPlan(step.plan)
		st.ExpireReady()
		if step.idle {
			if err := check(); step.ready && err != nil {
				t.Errorf("%s: a check that gives up before S3 answers: %v, want the last answer, ready", step.name, err)
			}
			// Then one that waits for S3's answer.
			err := st.Ready(context.Background())
			if step.ready != (err == nil) || (err != nil && !errors.Is(err, objectstore.ErrUnavailable)) {
				t.Errorf("%s: Ready = %v, want ready %v", step.name, err, step.ready)
			}
			continue
		}
		if err := put(i); step.putErr != (err != nil) {
			t.Fatalf("%s: Put = %v", step.name, err)
		}
		err := check()
		if step.ready != (err == nil) || (err != nil && !errors.Is(err, objectstore.ErrUnavailable)) {
			t.Errorf("%s: Ready = %v, want ready %v", step.name, err, step.ready)
		}
	}
}

// TestReadyAKindOfWriteAnswersForItself: a write failure stands until a
// write of its kind succeeds, and a run marker's write is none. S3
// refusing every object while it took the association's audit record,
// written after the failed C-STORE, made the task ready again at once, the
// latest write having succeeded (a policy or key refusing the objects'
// prefix: no C-STORE stored, every check passing); and a run marker's
// write refused (its heartbeat, which the audit writer only warns of) or
// a start's claim of a dead run's marker lost to another task (412 on
// If-Match, an answer) made it unready, every association refused
// meanwhile (found by review).
func TestReadyAKindOfWriteAnswersForItself(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{})
	st, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Prefix: prefix, PartSize: partSize,
		Client: s3test.Client(proxy.URL), RetryDeadline: giveUpDeadline, ReadyTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	put := func(r *http.Request, under string) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/"+prefix+under)
	}
	refuse := func(match func(*http.Request) bool) {
		proxy.SetPlan(s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Status403}, Match: match})
	}

	refuse(func(r *http.Request) bool { return put(r, objectstore.IncomingPrefix) })
	if _, err := st.Put(ctx, testObject("1.2.3.78.1"), bytes.NewReader(s3test.Bytes(78, 3000))); err == nil {
		t.Fatal("Put succeeded through a 403")
	}
	if err := st.PutRecord(ctx, objectstore.AuditPrefix+"r1.json", []byte(`{"r":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := st.Ready(ctx); !errors.Is(err, objectstore.ErrUnavailable) {
		t.Errorf("objects refused, a record written since: Ready = %v, want unready", err)
	}
	proxy.SetPlan(s3test.Plan{})
	if _, err := st.Put(ctx, testObject("1.2.3.78.2"), bytes.NewReader(s3test.Bytes(79, 3000))); err != nil {
		t.Fatal(err)
	}
	if err := st.Ready(ctx); err != nil {
		t.Errorf("an object stored again: Ready = %v, want ready", err)
	}

	refuse(func(r *http.Request) bool { return put(r, objectstore.RunMarkersPrefix) })
	if _, err := st.PutMarker(ctx, "run.json", []byte(`{"v":1}`), ""); err == nil {
		t.Fatal("PutMarker succeeded through a 403")
	}
	if err := st.Ready(ctx); err != nil {
		t.Errorf("a run marker's write refused: Ready = %v, want ready", err)
	}
	proxy.SetPlan(s3test.Plan{})
	etag, err := st.PutMarker(ctx, "run.json", []byte(`{"v":2}`), "")
	if err != nil {
		t.Fatal(err)
	}
	// Another start claims the marker first: this one's claim is refused.
	if _, err := st.PutMarker(ctx, "run.json", []byte(`{"v":3}`), etag); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutMarker(ctx, "run.json", []byte(`{"v":4}`), etag); !errors.Is(err, objectstore.ErrMarkerChanged) {
		t.Fatalf("claim over a version since replaced: %v, want ErrMarkerChanged", err)
	}
	if err := st.Ready(ctx); err != nil {
		t.Errorf("a claim lost to another start: Ready = %v, want ready", err)
	}
}

// TestPutTimeout: once the object's last byte is read, what is left of a
// Put (every request, retries included) shares PutTimeout; past it the
// Put fails with ErrUnavailable, the request in flight cancelled. Each
// request had its own RetryDeadline (20 s by default), so a 503 storm
// answered the C-STORE A700 after 19-20 s, and a multipart upload's last
// part and Complete after one deadline each: Orthanc (DicomScuTimeout
// 10 s) had aborted the association long before. A request S3 acted on
// before the timeout cut its answer leaves the whole object, never part
// of one, and the sender's resend finds it held; an unfinished upload is
// aborted. Ready says the store does not take objects when S3 failed a
// request (an error, an attempt past its own timeout), not when S3 was
// only slower than the put timeout: that made every task unready while S3
// took 3 s a request and stored every object, a large one's last requests
// being three in a row.
func TestPutTimeout(t *testing.T) {
	single, multi := s3test.Bytes(31, 3000), s3test.Bytes(32, 2*partSize+3000)
	for _, tc := range []struct {
		name    string
		data    []byte
		attempt time.Duration // AttemptTimeout; 0: past the put timeout
		setup   func(*flaky)
		// stored: S3 holds the whole object after the failed Put (S3
		// acted on the request whose answer the timeout cut).
		stored bool
		// ready: Ready after the Put (S3 failed no request)
		ready bool
	}{
		{"single, 503 at every attempt", single, 0, func(f *flaky) { f.always["PutObject"] = true }, false, false},
		{"single, S3 stops answering, attempts time out", single, 100 * time.Millisecond, func(f *flaky) { f.stallN["PutObject"] = 1000 }, false, false},
		{"single, S3 slower than the put timeout", single, 0, func(f *flaky) { f.stallN["PutObject"] = 1000 }, false, true},
		{"single, stored, its answer too late", single, 0, func(f *flaky) { f.holdN["PutObject"] = 1000 }, true, true},
		{"multipart, Complete 503 at every attempt", multi, 0, func(f *flaky) { f.always["CompleteMultipartUpload"] = true }, false, false},
		{"multipart, Complete slower than the put timeout", multi, 0, func(f *flaky) { f.stallN["CompleteMultipartUpload"] = 1000 }, false, true},
		{"multipart, completed, its answer too late", multi, 0, func(f *flaky) { f.holdN["CompleteMultipartUpload"] = 1000 }, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := s3test.NewServer(t, bucket)
			f := newFlaky(s3test.Client(srv.URL))
			tc.setup(f)
			// Deadlines past the put timeout: only it ends the Put.
			attempt := cmp.Or(tc.attempt, 10*time.Second)
			st, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Prefix: prefix, PartSize: partSize, Client: f,
				RetryDeadline: 10 * time.Second, AttemptTimeout: attempt, PutTimeout: time.Second, ReadyTTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			obj := testObject("1.2.3.4.5.31")
			_, err = st.Put(context.Background(), obj, arriving(f, tc.data))
			if !errors.Is(err, objectstore.ErrUnavailable) || !errors.Is(err, s3store.ErrPutTimeout) {
				t.Fatalf("Put = %v, want the put timeout, unavailable", err)
			}
			if rerr := st.Ready(context.Background()); (rerr == nil) != tc.ready || (rerr != nil && !errors.Is(rerr, objectstore.ErrUnavailable)) {
				t.Errorf("Ready after the put timeout = %v, want ready %v", rerr, tc.ready)
			}
			st.WaitAborts() // an unfinished upload is aborted behind the answer
			assertClean(t, srv)
			key, _ := objectstore.Key(obj)
			if !tc.stored {
				if keys, err := srv.Keys(context.Background()); err != nil || len(keys) != 0 {
					t.Fatalf("objects %q (%v) after a put that failed", keys, err)
				}
				return
			}
			if got := get(t, srv, prefix+key); !bytes.Equal(got, tc.data) {
				t.Fatalf("S3 holds %d bytes, want the whole object (%d)", len(got), len(tc.data))
			}
			// The sender's resend, on another association, finds it held.
			clear(f.always)
			clear(f.holdN)
			again := obj
			again.AssociationID = "assoc-resend"
			res, err := st.Put(context.Background(), again, arriving(f, tc.data))
			if err != nil || !res.Duplicate || res.Conflict {
				t.Fatalf("resend = %+v, %v; want a duplicate", res, err)
			}
		})
	}
}

// TestConflictCopyWhoseAnswerWasLost: a conflicting object's upload whose
// conflict-key request S3 took but whose answer was lost, retried and
// refused (412) by its own copy, stored the object: it is no duplicate,
// or ingest answers it as already held and the audit writer writes a
// duplicate record for the first storage of these bytes. The object's
// own key had this check (isOurUpload); a single-part conflict key
// reported Duplicate and SameTransfer.
//
// S3 answers a Complete 200 at once and its result in the body once done
// (whitespace until then): a body cut short or past the attempt's timeout,
// or a 200 whose body is an error (InternalError), has S3's status but not
// its answer, and the Complete may have been carried out all the same. It
// was taken for an answer: the retry's 412 for another object's, and the
// object was reported a duplicate of itself (SameTransfer), its conflict
// warned of at info level.
func TestConflictCopyWhoseAnswerWasLost(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int64
		op   string // the request whose answer is lost
		lost error  // how; nil: a reset
	}{
		{"single", 3000, "PutObject", nil},
		{"multipart", 2*partSize + 3000, "CompleteMultipartUpload", nil},
		{"multipart, the answer's body cut", 2*partSize + 3000, "CompleteMultipartUpload", &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: 200}},
			Err:      &smithy.DeserializationError{Err: io.ErrUnexpectedEOF},
		}},
		{"multipart, an error in a 200", 2*partSize + 3000, "CompleteMultipartUpload", apiErr(200, "InternalError")},
		// S3 promises nothing of a write answered 500 (InternalError): it
		// may have been carried out.
		{"single, a 500 after S3 wrote it", 3000, "PutObject", apiErr(500, "InternalError")},
		{"multipart, a 500 after S3 completed it", 2*partSize + 3000, "CompleteMultipartUpload", apiErr(500, "InternalError")},
		// Nor of one answered 503 by something in front of S3 (a proxy, a
		// VPC endpoint): only S3's SlowDown is a refusal. The SDK names a
		// 503 without an S3 error body ServiceUnavailable, as it does S3's
		// own; a body it cannot read leaves no code at all.
		{"single, a 503 ServiceUnavailable after S3 wrote it", 3000, "PutObject", apiErr(503, "ServiceUnavailable")},
		{"multipart, a 503 ServiceUnavailable after S3 completed it", 2*partSize + 3000, "CompleteMultipartUpload", apiErr(503, "ServiceUnavailable")},
		{"single, a bare 503 after S3 wrote it", 3000, "PutObject", bare503},
		{"multipart, a bare 503 after S3 completed it", 2*partSize + 3000, "CompleteMultipartUpload", bare503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, srv, f := flakyStore(t, succeedDeadline, func(f *flaky) { f.lostErr = tc.lost })
			obj := testObject("1.2.3.4.400")
			key, _ := objectstore.Key(obj)
			held := obj
			held.AssociationID = "assoc-first"
			if _, err := st.Put(context.Background(), held, bytes.NewReader(s3test.Bytes(41, tc.size))); err != nil {
				t.Fatal(err)
			}
			f.mu.Lock()
			f.loseN[tc.op] = 1
			f.mu.Unlock()
			data := s3test.Bytes(42, tc.size)
			got, err := st.Put(context.Background(), obj, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if !got.Conflict || got.Duplicate || got.SameTransfer || got.Key == key {
				t.Errorf("Put = %+v; want stored under a conflict key, no duplicate", got)
			}
			if b := get(t, srv, prefix+got.Key); !bytes.Equal(b, data) {
				t.Error("conflict key does not hold the object")
			}
			if f.count(tc.op) < 3 { // the first object's, the lost one, the retry
				t.Errorf("%s called %d times: the lost answer was not retried", tc.op, f.count(tc.op))
			}
			assertClean(t, srv)
		})
	}
}

// arriving is data as TestPutTimeout's sender sends it: an object of more
// than two parts ends once the first two are in S3 (f.partsUploaded), so
// that the put timeout covers the last part and the Complete only,
// however loaded the machine; the second part's upload, cut by it on a
// slow machine, left no object where the case wanted one completed.
func arriving(f *flaky, data []byte) io.Reader {
	if len(data) <= 2*partSize {
		return bytes.NewReader(data)
	}
	f.partsUploaded = make(chan struct{}, 2)
	return io.MultiReader(bytes.NewReader(data[:2*partSize]), &afterParts{uploaded: f.partsUploaded, n: 2, r: bytes.NewReader(data[2*partSize:])})
}

// afterParts reads r once n parts were uploaded.
type afterParts struct {
	uploaded <-chan struct{}
	n        int
	r        io.Reader
}

func (a *afterParts) Read(p []byte) (int, error) {
	for ; a.n > 0; a.n-- {
		<-a.uploaded
	}
	return a.r.Read(p)
}

// TestPutTimeoutAnswersBeforeTheAbort: a multipart upload that the put
// timeout ended is aborted, but the Put's answer, which the sender is
// waiting for, does not wait for the abort: S3 failing the Complete fails
// the Abort as well, and the abort, retried for up to a minute
// (abortDeadline), held the A700 that long, far past the sender's 10 s.
// The abort goes on behind the answer and leaves no upload.
func TestPutTimeoutAnswersBeforeTheAbort(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	f := newFlaky(s3test.Client(srv.URL))
	f.always["CompleteMultipartUpload"] = true
	f.abortGate = make(chan struct{})
	st, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Prefix: prefix, PartSize: partSize, Client: f,
		RetryDeadline: 10 * time.Second, AttemptTimeout: 10 * time.Second, PutTimeout: time.Second, ReadyTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Put(context.Background(), testObject("1.2.3.4.5.33"), bytes.NewReader(s3test.Bytes(33, 2*partSize+3000)))
	if !errors.Is(err, s3store.ErrPutTimeout) {
		t.Fatalf("Put = %v, want the put timeout", err)
	}
	f.mu.Lock()
	ended := f.abortsEnded
	f.mu.Unlock()
	if ended != 0 {
		t.Errorf("the Put answered after %d abort attempts had ended: the abort held the answer", ended)
	}
	close(f.abortGate)
	st.WaitAborts()
	if f.count("AbortMultipartUpload") == 0 {
		t.Error("the upload was not aborted")
	}
	assertClean(t, srv)
}

// TestCompletedThoughThePutTimeoutPassed: a Complete that S3 carried out
// but whose answer came after the put timeout leaves the object held,
// though the sender was answered a failure (A700). The abort behind the
// answer finds no upload, because it completed: that is said as it is, at
// info level, never as 'multipart upload aborted' (a warning, as for a
// failure of ours, it was). The sender's resend then finds the object:
// the same bytes are a duplicate, other bytes a conflict kept beside it.
func TestCompletedThoughThePutTimeoutPassed(t *testing.T) {
	srv := s3test.NewServer(t, bucket)
	f := newFlaky(s3test.Client(srv.URL))
	f.holdN["CompleteMultipartUpload"] = 1
	logs := &testenv.LogBuffer{}
	st, err := s3store.New(context.Background(), s3store.Options{Bucket: bucket, Prefix: prefix, PartSize: partSize, Client: f,
		RetryDeadline: 10 * time.Second, AttemptTimeout: 10 * time.Second, PutTimeout: time.Second, ReadyTTL: time.Hour,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	obj := testObject("1.2.3.4.5.34")
	body := s3test.Bytes(34, 2*partSize+3000)
	if _, err := st.Put(context.Background(), obj, bytes.NewReader(body)); !errors.Is(err, s3store.ErrPutTimeout) {
		t.Fatalf("Put = %v, want the put timeout", err)
	}
	st.WaitAborts()
	if l := logs.String(); strings.Contains(l, `"msg":"multipart upload aborted"`) || !strings.Contains(l, `"level":"INFO","msg":"`+s3store.CompletedThoughPutFailed+`"`) {
		t.Errorf("the upload that completed is not said to have completed:\n%s", l)
	}
	assertClean(t, srv)
	for _, tc := range []struct {
		name                string
		body                []byte
		duplicate, conflict bool
	}{
		{"the same bytes again", body, true, false},
		{"other bytes", s3test.Bytes(35, 2*partSize+3000), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resend := obj
			resend.AssociationID, resend.ReceivedAt = "resend-"+strings.ReplaceAll(tc.name, " ", "-"), obj.ReceivedAt.Add(time.Second)
			stored, err := st.Put(context.Background(), resend, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if stored.Duplicate != tc.duplicate || stored.Conflict != tc.conflict {
				t.Errorf("the resend is stored as %+v, want duplicate %v, conflict %v", stored, tc.duplicate, tc.conflict)
			}
		})
	}
}
