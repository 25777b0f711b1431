package pipelinee2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/test/internal/awsemu"
)

const (
	study  = "1.2.826.0.1.3680043.10.9"
	series = "1.2.826.0.1.3680043.10.9.1"
)

func sop(n int) string { return fmt.Sprintf("%s.%d", series, n) }

func objectKey(sopUID string) string {
	return "incoming/2026/01/15/" + study + "/" + series + "/" + sopUID + ".dcm"
}

// putInstance stores a synthesized CT instance as the SCP would.
func (e *env) putInstance(key string, in pt.Instance, receivedAt time.Time) []byte {
	e.t.Helper()
	data := in.Build()
	sum := sha256.Sum256(data)
	md := pt.SCPMetadata(pt.CTStorage, in.SOPUID, "1.2.840.10008.1.2.1", hex.EncodeToString(sum[:]))
	md["received-at"] = receivedAt.UTC().Format(time.RFC3339Nano)
	e.put(key, data, md)
	return data
}

func (e *env) put(key string, data []byte, md map[string]string) {
	e.t.Helper()
	_, err := e.s3.PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytesReader(data), Metadata: md,
	})
	if err != nil {
		e.t.Fatalf("put %s: %v", key, err)
	}
}

func ctInstance(sopUID string) pt.Instance {
	return pt.Instance{StudyUID: study, SeriesUID: series, SOPUID: sopUID, PatientID: "PID-9", PatientName: "Roe^Richard",
		Rows: 256, Columns: 256, SourceAE: "MODALITY1"}
}

// s3Notification is the body S3 sends to SQS for one created object.
const s3TestEvent = `{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-15T10:00:00.000Z","Bucket":"ingest-bucket","RequestId":"5582815E1AEA5ADF","HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR"}`

func failures(r events.SQSEventResponse) []string {
	var out []string
	for _, f := range r.BatchItemFailures {
		out = append(out, f.ItemIdentifier)
	}
	return out
}

func detailTypes(es []awsemu.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.DetailType)
	}
	slices.Sort(out)
	return out
}

func (e *env) exists(key string) bool {
	_, err := e.s3.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	return err == nil
}

// get returns the bytes stored at key.
func (e *env) get(t *testing.T, key string) []byte {
	t.Helper()
	out, err := e.s3.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

// head is what the pipeline's store (awsadapters.S3Objects) reports of
// key: what pipeline.MetadataKeys and pipeline.QuarantineKeys name.
func (e *env) head(t *testing.T, key string) pipeline.ObjectInfo {
	t.Helper()
	info, err := (&awsadapters.S3Objects{Client: e.s3, Bucket: bucket}).Head(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// keysUnder lists the keys stored under prefix.
func (e *env) keysUnder(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := e.s3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

// patientNameIn returns the Patient's Name of the DICOM JSON stored at key.
func (e *env) patientNameIn(t *testing.T, key string) string {
	t.Helper()
	var dj struct {
		PatientName struct {
			Value []struct{ Alphabetic string }
		} `json:"00100010"`
	}
	if err := json.Unmarshal(e.get(t, key), &dj); err != nil {
		t.Fatalf("read the DICOM JSON: %v", err)
	}
	if len(dj.PatientName.Value) != 1 {
		return ""
	}
	return dj.PatientName.Value[0].Alphabetic
}

// snapshot is the observable state for idempotency checks.
type snapshot struct {
	Audit  int
	Study  pipeline.StudySummary
	Events []string
}

func (e *env) snapshot() snapshot {
	e.t.Helper()
	page, err := e.audit.Query(context.Background(), pipeline.AuditQuery{Day: "2026-01-15", Limit: 1000})
	if err != nil {
		e.t.Fatalf("audit query: %v", err)
	}
	var st pipeline.StudySummary
	if d, err := e.index.GetStudy(context.Background(), study); err == nil {
		st = d.StudySummary
	}
	return snapshot{Audit: len(page.Records), Study: st, Events: detailTypes(e.events.All())}
}

func TestFunctionsUnderEmulator(t *testing.T) {
	e := newEnv(t, "1s")
	ctx := context.Background()
	received := time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC)

	// Two valid instances, one with a bad UID, one key that does not exist.
	d1 := e.putInstance(objectKey(sop(1)), ctInstance(sop(1)), received)
	d2 := e.putInstance(objectKey(sop(2)), ctInstance(sop(2)), received.Add(time.Second))
	bad := ctInstance(sop(3))
	bad.StudyUID = "1.2.03"
	badKey := "incoming/2026/01/15/unknown-study/" + series + "/" + sop(3) + ".dcm"
	d3 := e.putInstance(badKey, bad, received.Add(2*time.Second))
	missing := objectKey(sop(4))

	batch := sqsEvent(s3TestEvent, s3Notification(objectKey(sop(1)), len(d1)), s3Notification(objectKey(sop(2)), len(d2)),
		s3Notification(badKey, len(d3)), s3Notification(missing, 10))

	t.Run("validate", func(t *testing.T) {
		var resp events.SQSEventResponse
		e.invoke(t, "validate", batch, &resp)
		if d := cmp.Diff([]string{"msg-5"}, failures(resp)); d != "" {
			t.Errorf("batch item failures (-want +got):\n%s", d)
		}
		got := detailTypes(e.events.All())
		want := []string{pipeline.DetailTypeInstanceRejected, pipeline.DetailTypeInstanceStored, pipeline.DetailTypeInstanceStored}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("events (-want +got):\n%s", d)
		}
		for _, ev := range e.events.All() {
			if ev.Source != pipeline.EventSource || ev.EventBusName != busName {
				t.Errorf("event source/bus = %q/%q", ev.Source, ev.EventBusName)
			}
		}
		st, err := e.index.GetStudy(ctx, study)
		if err != nil {
			t.Fatal(err)
		}
		if st.InstanceCount != 2 || st.SeriesCount != 1 || len(st.Instances) != 2 || st.PatientID != "PID-9" || st.Modalities[0] != "CT" {
			t.Errorf("study = %+v", st.StudySummary)
		}
		// The documents each row names (pipeline.MetadataKeys).
		var jsonKeys []string
		for _, in := range st.Instances {
			jsonKeys = append(jsonKeys, in.MetadataKey)
		}
		qKey, fKey := pipeline.QuarantineKeys(e.head(t, badKey))
		for _, k := range append(jsonKeys, qKey, fKey, badKey) {
			if !e.exists(k) {
				t.Errorf("%s missing", k)
			}
		}
		page, err := e.audit.Query(ctx, pipeline.AuditQuery{PatientID: "PID-9"})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Records) != 3 {
			t.Errorf("%d audit records for the patient, want 3", len(page.Records))
		}
		for _, r := range page.Records {
			if r.EventID.Code != "110104" || r.CallingAE != "MODALITY1" || r.ContentIdentity == "" {
				t.Errorf("audit record = %+v", r)
			}
		}
		// By calling AE: the projection keeps patient data out.
		page, err = e.audit.Query(ctx, pipeline.AuditQuery{CallingAE: "MODALITY1"})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Records) != 3 {
			t.Errorf("%d audit records for the AE, want 3", len(page.Records))
		}
		for _, r := range page.Records {
			if r.PatientID != "" || r.PatientName != "" || r.Outcome == "" {
				t.Errorf("AE query record = %+v", r)
			}
		}
	})

	t.Run("validate twice leaves the same state", func(t *testing.T) {
		before := e.snapshot()
		var resp events.SQSEventResponse
		e.invoke(t, "validate", batch, &resp)
		if d := cmp.Diff(before, e.snapshot()); d != "" {
			t.Errorf("state changed (-before +after):\n%s", d)
		}
	})

	t.Run("audit", func(t *testing.T) {
		rec := associationaudit.Record{Event: associationaudit.EventRejected, Time: received, AssociationID: "assoc-rj-1",
			CallingAE: "INTRUDER", CalledAE: "INGEST", PeerAddr: "192.0.2.9:5104", RejectResult: 1, RejectSource: 1, RejectReason: 3, Seq: 1}
		body, err := associationaudit.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		key, _ := associationaudit.Key(rec)
		e.put(key, body, nil)
		ev := sqsEvent(s3TestEvent, s3Notification(key, len(body)))
		for range 2 {
			e.invokeBatch(t, "audit", ev)
		}
		page, err := e.audit.Query(ctx, pipeline.AuditQuery{CallingAE: "INTRUDER"})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Records) != 1 || page.Records[0].EventID.Display != "Security Alert" || page.Records[0].Outcome != associationaudit.EventRejected {
			t.Errorf("records = %+v", page.Records)
		}
	})

	t.Run("notify", func(t *testing.T) {
		scheduled := map[string]any{"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": map[string]any{}}
		var out map[string]int
		// The quiet period (1s) runs from the last activity, which is
		// when validate indexed the instances (just now), not their
		// received-at: wait it out.
		waitQuiet := func() { time.Sleep(1100 * time.Millisecond) }
		waitQuiet()
		e.invoke(t, "notify", scheduled, &out)
		if out["announced"] != 1 {
			t.Fatalf("announced %v, want 1", out)
		}
		e.invoke(t, "notify", scheduled, &out)
		if out["announced"] != 0 {
			t.Fatalf("announced again: %v", out)
		}
		var studyEvents []pipeline.StudyDetailEvent
		collect := func() {
			studyEvents = nil
			for _, ev := range e.events.All() {
				if ev.DetailType == pipeline.DetailTypeStudyReceived || ev.DetailType == pipeline.DetailTypeStudyUpdated {
					var d pipeline.StudyDetailEvent
					if err := json.Unmarshal([]byte(ev.Detail), &d); err != nil {
						t.Fatal(err)
					}
					studyEvents = append(studyEvents, d)
				}
			}
		}
		collect()
		if len(studyEvents) != 1 || studyEvents[0].Version != 1 || studyEvents[0].InstanceCount != 2 || studyEvents[0].Patient == nil || studyEvents[0].Patient.PatientID != "PID-9" {
			t.Fatalf("study events = %+v", studyEvents)
		}
		// A late instance, and PutEvents throttling its first attempt.
		e.events.Fail(1)
		d5 := e.putInstance(objectKey(sop(5)), ctInstance(sop(5)), received.Add(time.Minute))
		e.invokeBatch(t, "validate", sqsEvent(s3Notification(objectKey(sop(5)), len(d5))))
		e.invoke(t, "notify", scheduled, &out)
		if out["announced"] != 0 {
			t.Fatalf("update announced within the quiet period of its indexing: %v", out)
		}
		waitQuiet()
		e.invoke(t, "notify", scheduled, &out)
		if out["announced"] != 1 {
			t.Fatalf("update announced %v", out)
		}
		collect()
		if len(studyEvents) != 2 || studyEvents[1].Version != 2 || studyEvents[1].InstanceCount != 3 {
			t.Fatalf("study events = %+v", studyEvents)
		}
		stored := 0
		for _, ev := range e.events.All() {
			if ev.DetailType == pipeline.DetailTypeInstanceStored {
				stored++
			}
		}
		if stored != 3 {
			t.Errorf("%d Instance Stored events, want 3 (one per instance, retried once)", stored)
		}
	})
}

func bytesReader(b []byte) *bytesReaderT { return &bytesReaderT{b: b} }

// bytesReaderT is a seekable reader (the SDK computes checksums with Seek).
type bytesReaderT struct {
	b   []byte
	off int64
}

func (r *bytesReaderT) Read(p []byte) (int, error) {
	if r.off >= int64(len(r.b)) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.off:])
	r.off += int64(n)
	return n, nil
}

func (r *bytesReaderT) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		r.off = offset
	case io.SeekCurrent:
		r.off += offset
	case io.SeekEnd:
		r.off = int64(len(r.b)) + offset
	}
	return r.off, nil
}
