package pipelinee2e

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/stagedstore"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestStagedResendsThroughFunctions is TestResendsThroughFunctions for an
// SCP with a staging directory, whose duplicates are decided at upload:
// storescu sends objects (journaled ones and one large enough for a file
// of its own and a multipart upload), the same again from the same AE on a
// second association and a third time from another calling AE (the same
// data set, in a meta header naming that AE: other bytes, which the store
// keeps under a conflict key). The validate and audit functions process
// what landed in S3, and the audit table holds one stored record per
// object, the first association's, and one identical-resend record per
// object for each resend association, naming its sender and association:
// the second's from the uploader's duplicate association record, the
// third's from its conflict copy. SQS delivering every message again
// changes nothing. It holds whether the first transfer was uploaded before
// the resends came, or S3 was down through all three, the resends staged
// behind the original, or the task was killed with all three staged and
// the next on its staging directory uploaded them (its start record naming
// the killed run, once), and whether the audit function meets the SCP's
// records (the uploader's duplicate ones among them) before or after the
// validate function meets the objects, and whichever of an object and its
// conflict copy it meets first (that one's transfer is the stored one).
func TestStagedResendsThroughFunctions(t *testing.T) {
	testenv.RequireTools(t, "storescu")
	for _, tc := range []stagedResendCase{
		{name: "uploaded before the resends"},
		{name: "staged behind the original while S3 is down", s3Down: true},
		{name: "records processed before the objects", recordsFirst: true},
		{name: "conflict copies processed before the objects held", copiesFirst: true},
		{name: "killed with all three staged, uploaded by the next run", s3Down: true, killed: true},
	} {
		t.Run(tc.name, func(t *testing.T) { stagedResendsThroughFunctions(t, tc) })
	}
}

// stagedResendCase is a case of TestStagedResendsThroughFunctions: S3 down
// through the three sends, the audit function given the SCP's records
// before the validate function the objects, the task killed once the
// sends are staged and a task on the same staging directory uploading
// them once S3 is back, the validate function given OTHER_AE's conflict
// copies before the objects held (OTHER_AE's transfer is then the stored
// one, the first association's an identical resend).
type stagedResendCase struct {
	name                                      string
	s3Down, recordsFirst, killed, copiesFirst bool
}

func stagedResendsThroughFunctions(t *testing.T, tc stagedResendCase) {
	startDay := time.Now().UTC().Format(time.DateOnly)
	srv := s3test.NewServer(t, bucket)
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{})
	e := newEnvS3(t, "1s", srv.URL)
	opts := scptest.Options{
		NoStore: true,
		Args: []string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE,OTHER_AE", "--store", "s3://" + bucket + "/site-a", "--s3-path-style",
			"--staging", t.TempDir()},
		Env: s3test.Env(t, proxy.URL),
	}
	if tc.killed {
		// EFS's latencies, as a task in the cloud stages: the waits
		// before the kill and after the restart below are needed on
		// any disk; on these, without them, the kill lost the last
		// released record in 4 of 5 runs, and the next run's drain was
		// seen before its take-over in each of 3.
		opts.Args = append(opts.Args, "--staging-latency", "efs")
	}
	scp := scptest.Start(t, opts)

	const studyUID = "1.2.826.0.1.3680043.10.89"
	files, sops, err := synth.Series(t.TempDir(), studyUID, "PID-S", "Staged^Jane", 64, 4096, 64<<10, 3<<20) // the last one a large staged object
	if err != nil {
		t.Fatal(err)
	}
	keys := func() (held, copies, audit []string) {
		t.Helper()
		all, err := srv.Keys(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range all {
			switch {
			case strings.HasPrefix(k, "site-a/incoming/") && strings.Contains(k, ".conflict-"):
				copies = append(copies, k)
			case strings.HasPrefix(k, "site-a/incoming/"):
				held = append(held, k)
			case strings.HasPrefix(k, "site-a/audit/"):
				audit = append(audit, k)
			}
		}
		return held, copies, audit
	}
	drained := func() bool { return scp.Metric(t, stagedstore.MetricBacklogObjects) == 0 }

	const outage = 20 * time.Second
	upAt := time.Now().Add(outage)
	if tc.s3Down {
		proxy.Down(outage)
	}
	for i, aet := range []string{"LOCAL_AE", "LOCAL_AE", "OTHER_AE"} {
		args := append([]string{"-aet", aet, "-aec", "REMOTE_AE", scp.Host(), scp.Port()}, files...)
		if r := dcmtk.Run(t, time.Minute, "storescu", args...); r.Err != nil {
			t.Fatalf("storescu as %s, send %d: %v\n%s", aet, i+1, r.Err, r.Output)
		}
		if !tc.s3Down {
			testenv.EventuallyWithin(t, 2*time.Minute, "upload of every staged object", func() bool { held, _, _ := keys(); return len(held) == len(files) && drained() })
		}
	}
	if tc.s3Down && time.Now().After(upAt) {
		t.Fatal("storescu outlasted the outage: the resends may not have been staged behind the original")
	}
	if tc.killed {
		// Killed once every record is staged: the start record and each
		// association's accepted and released. The released one is
		// written after the A-RELEASE-RP: a kill as storescu exits
		// loses it.
		scp.WaitMetric(t, "dicom_ingest_audit_records_written_total", 1+2*3, 30*time.Second)
		scp.Kill(t)
		time.Sleep(time.Until(upAt))
		scp = scptest.Start(t, opts)
		// It takes the killed run's journal over in the background:
		// its backlog is empty until then.
		testenv.EventuallyWithin(t, 2*time.Minute, "the killed run's staged objects taken over", func() bool { return scp.Metric(t, stagedstore.MetricAdopted) > 0 })
	}
	testenv.EventuallyWithin(t, 2*time.Minute, "upload of every staged object and record", drained)
	scp.Stop(t)
	held, copies, audit := keys()
	if len(held) != len(files) || len(copies) != len(files) {
		t.Fatalf("incoming objects %q and conflict copies %q; want %d of each", held, copies, len(files))
	}

	// What S3 would notify: the objects held, their copies, the records.
	objects := func() {
		t.Helper()
		order := slices.Concat(held, copies)
		if tc.copiesFirst {
			order = slices.Concat(copies, held)
		}
		for _, k := range order {
			e.invokeBatch(t, "validate", sqsEvent(s3Notification(k, 1)))
		}
	}
	// records gives the audit function the records keys, and returns
	// those whose messages failed, for SQS to deliver again.
	records := func(keys []string) (failed []string) {
		t.Helper()
		for batch := range slices.Chunk(keys, 10) {
			var bodies []string
			for _, k := range batch {
				bodies = append(bodies, s3Notification(k, 1))
			}
			var resp events.SQSEventResponse
			e.invoke(t, "audit", sqsEvent(bodies...), &resp)
			for _, f := range resp.BatchItemFailures {
				var i int
				if _, err := fmt.Sscanf(f.ItemIdentifier, "msg-%d", &i); err != nil || i < 1 || i > len(batch) {
					t.Fatalf("audit failure %q: not a message of the batch", f.ItemIdentifier)
				}
				failed = append(failed, batch[i-1])
			}
		}
		return failed
	}
	process := func() {
		t.Helper()
		if !tc.recordsFirst {
			objects()
			if failed := records(audit); len(failed) != 0 {
				t.Fatalf("audit failures: %q", failed)
			}
			return
		}
		// The records of resends the SCP found held under their key
		// (the uploader's duplicate ones) name objects not indexed yet:
		// they fail, and SQS delivers them again once the objects are,
		// when they note the resends in the study (its LastSent).
		failed := records(audit)
		objects()
		if again := records(failed); len(again) != 0 {
			t.Fatalf("audit failures after the objects were indexed: %q", again)
		}
	}
	process()
	first := trailOf(t, e, sops, "LOCAL_AE", "OTHER_AE")
	storedBy := 0
	if tc.copiesFirst {
		storedBy = 2
	}
	checkStagedResendTrail(t, first, sops, held, copies, storedBy)
	// The day's records (a projection), the runs' own among them: the
	// next run's start names the killed one.
	day := func() []pipeline.AuditRecord {
		qs := []pipeline.AuditQuery{{Day: startDay}}
		if today := time.Now().UTC().Format(time.DateOnly); today != startDay {
			qs = append(qs, pipeline.AuditQuery{Day: today})
		}
		return queryAll(t, e.audit, qs...)
	}
	firstDay := day()
	unclean := 0
	for _, r := range firstDay {
		if r.Outcome == pipeline.OutcomeUncleanStop {
			unclean++
		}
	}
	if want := map[bool]int{true: 1}[tc.killed]; unclean != want {
		t.Errorf("%d unclean-stop records, want %d", unclean, want)
	}
	// Indexed and announced once: the resends add no content.
	announced := detailTypes(e.events.All())
	if want := slices.Repeat([]string{pipeline.DetailTypeInstanceStored}, len(sops)); !slices.Equal(announced, want) {
		t.Errorf("events %q, want %q", announced, want)
	}
	study := func() pipeline.StudySummary {
		t.Helper()
		st, err := e.index.GetStudy(context.Background(), studyUID)
		if err != nil {
			t.Fatal(err)
		}
		if st.InstanceCount != len(sops) || st.ConflictCount != 0 || len(st.Instances) != len(sops) {
			t.Errorf("study: %d instances, %d conflicts, %d contents; want %d, 0, %d", st.InstanceCount, st.ConflictCount, len(st.Instances), len(sops), len(sops))
		}
		return st.StudySummary
	}
	indexed := study()
	// Last sent at the latest transfer, whichever way its record came:
	// an object's, a conflict copy's, or the SCP's record of a resend
	// found held, processed before or after the object held was indexed.
	var latest time.Time
	for _, r := range first {
		if r.SOPInstanceUID != "" && r.Time.After(latest) {
			latest = r.Time
		}
	}
	if !indexed.Sent().Equal(latest) {
		t.Errorf("study last sent %v, want the latest transfer's %v", indexed.Sent(), latest)
	}

	// SQS delivers every message again.
	process()
	if again := trailOf(t, e, sops, "LOCAL_AE", "OTHER_AE"); !slices.Equal(recordIDs(first), recordIDs(again)) {
		t.Errorf("the trail after redelivery differs:\nbefore %q\nafter  %q", recordIDs(first), recordIDs(again))
	}
	if again := day(); !slices.Equal(recordIDs(firstDay), recordIDs(again)) {
		t.Errorf("the day's records after redelivery differ:\nbefore %q\nafter  %q", recordIDs(firstDay), recordIDs(again))
	}
	if again := detailTypes(e.events.All()); !slices.Equal(again, announced) {
		t.Errorf("events after redelivery %q, before %q", again, announced)
	}
	if again := study(); !reflect.DeepEqual(again, indexed) {
		t.Errorf("study after redelivery %+v, before %+v", again, indexed)
	}
}

// checkStagedResendTrail checks the audit table's records of three
// associations, LOCAL_AE's, LOCAL_AE's again and OTHER_AE's, each sending
// the objects sops (held under the keys held, OTHER_AE's copies under
// copies): each association accepted and released; per object one stored
// record, association storedBy's (0 the first), and one identical resend
// for each of the others, naming its sender, its association, the object
// it stored or found held, and a time within the association.
func checkStagedResendTrail(t *testing.T, trail []pipeline.AuditRecord, sops, held, copies []string, storedBy int) {
	t.Helper()
	accepted, released := map[string]pipeline.AuditRecord{}, map[string]pipeline.AuditRecord{}
	var order []pipeline.AuditRecord // the accepted records by time
	bySOP := map[string][]pipeline.AuditRecord{}
	for _, r := range trail {
		switch r.Outcome {
		case associationaudit.EventAccepted:
			accepted[r.AssociationID] = r
			order = append(order, r)
		case associationaudit.EventReleased:
			released[r.AssociationID] = r
		case pipeline.OutcomeStored, pipeline.OutcomeDuplicate:
			if r.SOPInstanceUID != "" { // not the calling AE's projection
				bySOP[r.SOPInstanceUID] = append(bySOP[r.SOPInstanceUID], r)
			}
		default:
			t.Errorf("unexpected record %+v", r)
		}
	}
	slices.SortFunc(order, func(a, b pipeline.AuditRecord) int { return a.Time.Compare(b.Time) })
	if len(order) != 3 || len(released) != 3 || order[0].CallingAE != "LOCAL_AE" || order[1].CallingAE != "LOCAL_AE" || order[2].CallingAE != "OTHER_AE" {
		t.Fatalf("associations accepted %+v, %d released; want LOCAL_AE's, LOCAL_AE's and OTHER_AE's, each released", order, len(released))
	}
	within := func(r pipeline.AuditRecord) bool {
		a, ok := accepted[r.AssociationID]
		return ok && !r.Time.Before(a.Time) && !r.Time.After(released[r.AssociationID].Time)
	}
	keyOf := func(keys []string, sop string) string {
		for _, k := range keys {
			if strings.Contains(k, "/"+sop+".") {
				return k
			}
		}
		return ""
	}
	if len(bySOP) != len(sops) {
		t.Errorf("records of %d instances, want %d", len(bySOP), len(sops))
	}
	for _, sop := range sops {
		recs := bySOP[sop]
		want := []struct{ outcome, assoc, key string }{
			{pipeline.OutcomeDuplicate, order[0].AssociationID, keyOf(held, sop)},
			{pipeline.OutcomeDuplicate, order[1].AssociationID, keyOf(held, sop)},
			{pipeline.OutcomeDuplicate, order[2].AssociationID, keyOf(copies, sop)},
		}
		want[storedBy].outcome = pipeline.OutcomeStored
		if len(recs) != len(want) {
			t.Errorf("%s: %d records, want %d: %+v", sop, len(recs), len(want), recs)
			continue
		}
		for _, w := range want {
			i := slices.IndexFunc(recs, func(r pipeline.AuditRecord) bool { return r.AssociationID == w.assoc })
			if i < 0 {
				t.Errorf("%s: no record of association %s: %+v", sop, w.assoc, recs)
				continue
			}
			r := recs[i]
			resend := slices.ContainsFunc(r.EventTypeCodes, func(c pipeline.CodedValue) bool { return c.Code == "identical-resend" })
			if r.Outcome != w.outcome || resend != (w.outcome == pipeline.OutcomeDuplicate) || r.CallingAE != accepted[w.assoc].CallingAE ||
				r.CalledAE != "REMOTE_AE" || r.PeerAddr == "" || r.ObjectKey != w.key || w.key == "" || r.ContentIdentity != recs[0].ContentIdentity || !within(r) {
				t.Errorf("%s: record %+v; want %s by association %s (%s), of %s, content %s", sop, r, w.outcome, w.assoc, accepted[w.assoc].CallingAE, w.key, recs[0].ContentIdentity)
			}
		}
	}
}

// trailOf is the audit table's records of the instances sops and of the
// calling AEs aes (the latter a projection naming no instance).
func trailOf(t *testing.T, e *env, sops []string, aes ...string) []pipeline.AuditRecord {
	t.Helper()
	var qs []pipeline.AuditQuery
	for _, sop := range sops {
		qs = append(qs, pipeline.AuditQuery{SOPInstanceUID: sop})
	}
	for _, ae := range aes {
		qs = append(qs, pipeline.AuditQuery{CallingAE: ae})
	}
	return queryAll(t, e.audit, qs...)
}

// queryAll is the records of audit (the audit table, local mode's trail)
// each of qs selects, every page.
func queryAll(t *testing.T, audit pipeline.AuditStore, qs ...pipeline.AuditQuery) []pipeline.AuditRecord {
	t.Helper()
	var out []pipeline.AuditRecord
	for _, q := range qs {
		for {
			page, err := audit.Query(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, page.Records...)
			if q.Cursor = page.Next; q.Cursor == "" {
				break
			}
		}
	}
	return out
}

// recordIDs is the sorted ids of rs.
func recordIDs(rs []pipeline.AuditRecord) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	slices.Sort(out)
	return out
}
