package s3

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/metricnames"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestSteadySendThroughS3Errors is the on-call drill of alarms.md's S3 rows
// (ScpStoreFailures, UnhealthyTargets): a PACS sends steadily while S3
// answers every request 503 SlowDown, or 500 InternalError, for 30 s, then
// recovers. The PACS sees successes, then A700 for the C-STOREs caught by
// the errors and 02 03 01 rejections while the task is unready, and
// successes again by itself once S3 is back; the operator sees the health
// check's lines, /readyz 503 then 200, the failures by status and the S3
// retries in /metrics (the metrics the agent publishes); and every
// C-STORE answered success is in S3, nothing lost.
func TestSteadySendThroughS3Errors(t *testing.T) {
	const outage = 30 * time.Second
	for _, tc := range []struct {
		name  string
		fault s3test.Fault
	}{
		{"503 SlowDown", s3test.Status503},
		{"500 InternalError", s3test.Status500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := s3test.NewServer(t, bucket)
			proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{})
			scp := startS3SCP(t, proxy.URL)
			ctx := scptest.Context(t)
			testenv.Eventually(t, "ready at start", func() bool { code, _ := scp.Health(t, "/readyz"); return code == http.StatusOK })

			// The sender: one association at a time, a C-STORE every
			// 100 ms, a new association after a failure, as a PACS
			// retrying its queue.
			var (
				mu        sync.Mutex
				outcomes  = map[string]int{} // "0000", "A700", "rejected", …
				succeeded []string           // SOP Instance UIDs answered success
				lastOK    time.Time
			)
			note := func(what, uid string) {
				mu.Lock()
				defer mu.Unlock()
				outcomes[what]++
				if what == "0000" {
					succeeded = append(succeeded, uid)
					lastOK = time.Now()
				}
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var stopOnce sync.Once
			halt := func() { stopOnce.Do(func() { close(stop) }); wg.Wait() }
			defer halt()
			wg.Go(func() {
				n := 0
				for {
					select {
					case <-stop:
						return
					default:
					}
					as, err := dicomnet.Dial(ctx, scp.DICOMAddr, auditClient())
					if err != nil {
						var rj *dicomnet.RejectError
						if errors.As(err, &rj) {
							note(fmt.Sprintf("rejected %d %d %d", rj.Result, rj.Source, rj.Reason), "")
						} else {
							note("dial error", "")
						}
						time.Sleep(500 * time.Millisecond)
						continue
					}
					for {
						select {
						case <-stop:
							as.Release(ctx) //nolint:errcheck // the drill is over
							return
						default:
						}
						n++
						uid := fmt.Sprintf("1.2.826.0.1.3680043.2.8.1.%d", n)
						obj := synth.Object{StudyUID: "1.2.826.0.1.3680043.2.8", SeriesUID: "1.2.826.0.1.3680043.2.8.1", SOPInstanceUID: uid,
							PatientID: "P8", PatientName: "Test^Drill", PixelBytes: 4096}
						st, err := as.Store(ctx, synth.SOPClassUID, uid, synth.TransferSyntaxUID, obj.Dataset())
						if err != nil {
							note("store error", "")
							as.Abort() //nolint:errcheck // the association is given up
							break
						}
						note(fmt.Sprintf("%04X", st.Code), uid)
						if st.Code != 0 {
							as.Release(ctx) //nolint:errcheck // a new association follows
							break
						}
						time.Sleep(100 * time.Millisecond)
					}
				}
			})
			okCount := func() int { mu.Lock(); defer mu.Unlock(); return len(succeeded) }
			testenv.Eventually(t, "10 objects stored before the errors", func() bool { return okCount() >= 10 })

			proxy.SetPlan(s3test.Plan{Rate: 1, Faults: []s3test.Fault{tc.fault}})
			start := time.Now()
			testenv.EventuallyWithin(t, outage, "/readyz 503 while S3 fails", func() bool { code, _ := scp.Health(t, "/readyz"); return code == http.StatusServiceUnavailable })
			unreadyAfter := time.Since(start)
			failed := scp.WaitLog(t, 10*time.Second, "health check failed", func(m map[string]any) bool {
				return strings.HasPrefix(fmt.Sprint(m["msg"]), "health check failed")
			})
			time.Sleep(time.Until(start.Add(outage)))
			mu.Lock()
			during := map[string]int{}
			for k, v := range outcomes {
				during[k] = v
			}
			okBefore := len(succeeded)
			mu.Unlock()

			proxy.SetPlan(s3test.Plan{})
			back := time.Now()
			testenv.EventuallyWithin(t, 60*time.Second, "10 objects stored after S3 recovered, with no one stepping in", func() bool { return okCount() >= okBefore+10 })
			resumedAfter := func() time.Duration { mu.Lock(); defer mu.Unlock(); return lastOK.Sub(back) }()
			// The line comes with the first check that passes (the NLB's,
			// every 10 s in AWS; none is made but by a check).
			testenv.EventuallyWithin(t, 30*time.Second, "/readyz 200 once S3 recovered", func() bool { code, _ := scp.Health(t, "/readyz"); return code == http.StatusOK })
			readyAfter := time.Since(back)
			scp.WaitLog(t, 10*time.Second, "health check passes again", func(m map[string]any) bool {
				return strings.HasPrefix(fmt.Sprint(m["msg"]), "health check passes again")
			})
			halt()
			// The records of the associations the drill ended are written in
			// the background: lost is read once none is active and none is
			// queued, not while the last release is still on its way.
			scp.WaitMetric(t, metricnames.AssociationsActive, 0, 30*time.Second)
			scp.WaitMetric(t, metricnames.AuditQueueLength, 0, 30*time.Second)

			// Every success is in S3, and S3 holds nothing else.
			mu.Lock()
			defer mu.Unlock()
			stored := map[string]bool{}
			for _, k := range keysUnder(t, srv, storePrefix+"incoming/") {
				stored[k[strings.LastIndex(k, "/")+1:]] = true
			}
			for _, uid := range succeeded {
				if !stored[uid+".dcm"] {
					t.Errorf("%s answered success and is not in S3", uid)
				}
			}
			failures := scp.Metric(t, fmt.Sprintf(`%s{%s="A700"}`, metricnames.StoreFailures, metricnames.FailureStatus))
			retries := scp.MetricSum(t, metricnames.S3Retries)
			lost := scp.Metric(t, metricnames.AuditRecordsLost)
			congested := scp.Metric(t, fmt.Sprintf(`%s{%s="temporary_congestion"}`, metricnames.AssociationsRejected, metricnames.RejectReason))
			t.Logf("drill %s: outcomes until the %v of errors ended %v; health check failed: reason %q, err %q; /readyz 503 after %v; %d successes, %d objects in S3; sending resumed %v after recovery, /readyz 200 within %v; metrics: A700 %v, rejected for temporary_congestion %v (ScpRejects sounds past 10 in 5 minutes), s3 retries %v, audit records lost %v",
				tc.name, outage, during, failed["reason"], failed["err"], unreadyAfter.Round(time.Second), len(succeeded), len(stored), resumedAfter.Round(100*time.Millisecond), readyAfter.Round(100*time.Millisecond), failures, congested, retries, lost)
			if during["A700"] == 0 {
				t.Errorf("no C-STORE answered A700 while S3 failed: %v", during)
			}
			if failures == 0 || retries == 0 {
				t.Errorf("metrics: A700 failures %v, S3 retries %v; want both counted", failures, retries)
			}
			if congested == 0 {
				t.Errorf("no association rejected for temporary congestion while the task was unready: %v", during)
			}
			if lost != 0 {
				t.Errorf("%v audit records lost", lost)
			}
		})
	}
}
