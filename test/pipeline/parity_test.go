package pipelinee2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

// TestLocalAndAWSAgree is the rule "one set of rules" end to end: the same
// objects, sent with dcmsend once to scp-task --local and once to scp-task
// storing into S3 with the functions under the emulator, give the same
// documents, events, study index answers and audit records, but for what
// docs/pipeline.md#subscribing says differs by design (URIs' bases, ids,
// times, the audit source). The objects: the corpus's mixed/ set (a study naming two
// patients, assorted transfer syntaxes), an object validation rejects
// (a bad Study Instance UID), and in a last association one of mixed/
// again (a duplicate) and another content under a SOP Instance UID held
// (a conflict). Each side announces its studies after each association.
func TestLocalAndAWSAgree(t *testing.T) {
	testenv.RequireTools(t, "dcmsend")
	rounds := parityRounds(t)
	cloud := awsParity(t, rounds)
	local := localParity(t, rounds)
	for _, part := range []struct {
		name       string
		aws, local any
	}{
		{"documents", cloud.Documents, local.Documents},
		{"events", cloud.Events, local.Events},
		{"studies", cloud.Studies, local.Studies},
		{"audit records", cloud.Audit, local.Audit},
	} {
		if d := cmp.Diff(part.aws, part.local); d != "" {
			t.Errorf("%s differ between AWS and local mode (-aws +local):\n%s", part.name, d)
		}
	}
	t.Logf("compared %d events, %d studies, %d documents, the audit records of %d instances",
		len(cloud.Events), len(cloud.Studies), len(cloud.Documents), len(cloud.Audit))
	if len(cloud.Events) == 0 || len(cloud.Studies) == 0 || len(cloud.Documents) == 0 || len(cloud.Audit) == 0 {
		t.Errorf("nothing to compare: %d events, %d studies, %d documents, %d audited instances",
			len(cloud.Events), len(cloud.Studies), len(cloud.Documents), len(cloud.Audit))
	}
}

// parityRounds writes the objects and returns them by association.
func parityRounds(t *testing.T) [][]string {
	t.Helper()
	mixed := testenv.CorpusFiles(t, "mixed")
	slices.Sort(mixed)
	dir := t.TempDir()
	write := func(name string, in pt.Instance) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, in.Build(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const studyUID = "1.2.826.0.1.3680043.10.4242"
	held := pt.Instance{StudyUID: studyUID, SeriesUID: studyUID + ".1", SOPUID: studyUID + ".1.1", PatientID: "PID-PARITY",
		PatientName: "Parity^Pat", Modality: "CT", Rows: 8, Columns: 8}
	other := held
	other.PatientName = "Parity^Other"
	bad := held
	bad.StudyUID, bad.SOPUID = "1.2.03", studyUID+".1.9"
	// The study keeps the patient it was first indexed with, and both
	// modes index a batch's objects in no set order: its first object
	// goes alone.
	var first string
	var rest []string
	for _, f := range mixed {
		if filepath.Base(f) == "ct_explicit_le.dcm" {
			first = f
		} else {
			rest = append(rest, f)
		}
	}
	if first == "" {
		t.Fatalf("no ct_explicit_le.dcm in %s", filepath.Dir(mixed[0]))
	}
	return [][]string{
		{first},
		append(rest, write("held.dcm", held), write("bad.dcm", bad)),
		{first, write("other.dcm", other)}, // a duplicate and a conflict
	}
}

// observed is what one deployment answers, normalized (parityNormalize).
type observed struct {
	// Documents are the DICOM JSON and summary documents of each indexed
	// content and the findings of each rejected one, by SOP Instance UID,
	// content identity and document.
	Documents map[string]any
	// Events are every event's detail-type and detail, sorted.
	Events []string
	// Studies are the index's answers (GetStudy), by Study Instance UID.
	Studies map[string]any
	// Audit are each instance's audit records, sorted.
	Audit map[string][]any
}

// parityQuiet is both sides' quiet period.
const parityQuiet = "1s"

func awsParity(t *testing.T, rounds [][]string) observed {
	t.Helper()
	srv := s3test.NewServer(t, bucket)
	e := newEnvS3(t, parityQuiet, srv.URL)
	scp := scptest.Start(t, scptest.Options{
		NoStore: true,
		Args:    []string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE", "--store", "s3://" + bucket, "--s3-path-style"},
		Env:     s3test.Env(t, srv.URL),
	})
	ctx := context.Background()
	seen := map[string]bool{}
	for i, files := range rounds {
		args := append([]string{"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", "--no-halt", scp.Host(), scp.Port()}, files...)
		if r := dcmtk.Run(t, 2*time.Minute, "dcmsend", args...); r.Err != nil {
			t.Fatalf("dcmsend: %v\n%s", r.Err, r.Output)
		}
		// Every association's released record is written, and with it
		// every record of its transfers.
		var keys []string
		testenv.Eventually(t, "the association's records", func() bool {
			all, err := srv.Keys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			keys = all
			released := 0
			for _, k := range all {
				if strings.HasPrefix(k, "audit/") && strings.HasSuffix(k, "-released.json") {
					released++
				}
			}
			return released == i+1
		})
		var incoming, audit []string
		for _, k := range keys {
			if seen[k] {
				continue
			}
			seen[k] = true
			switch {
			case strings.HasPrefix(k, "incoming/"):
				incoming = append(incoming, s3Notification(k, 1))
			case strings.HasPrefix(k, "audit/"):
				audit = append(audit, s3Notification(k, 1))
			}
		}
		e.invokeBatch(t, "validate", sqsEvent(incoming...))
		e.invokeBatch(t, "audit", sqsEvent(audit...))
		time.Sleep(1100 * time.Millisecond) // the quiet period
		var out map[string]int
		e.invoke(t, "notify", map[string]any{"source": "aws.events", "detail-type": "Scheduled Event"}, &out)
	}
	var events []paritySent
	for _, ev := range e.events.All() {
		events = append(events, paritySent{DetailType: ev.DetailType, Resources: ev.Resources, Detail: json.RawMessage(ev.Detail)})
	}
	// Pointers are s3:// URIs, resources ARNs (docs/pipeline.md#subscribing).
	return collect(t, []string{"s3://" + bucket + "/", "arn:aws:s3:::" + bucket + "/"}, events, e.index, e.audit, func(key string) ([]byte, error) {
		b, _, err := srv.Object(key)
		return b, err
	})
}

func localParity(t *testing.T, rounds [][]string) observed {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	scp := scptest.Start(t, scptest.Options{
		NoStore: true,
		Args: []string{"--local", "--data-dir", dataDir, "--portal-listen", "127.0.0.1:0", "--ae-title", "REMOTE_AE",
			"--calling-aes", "LOCAL_AE", "--quiet-period", parityQuiet, "--event-patient-data", "id"},
	})
	for _, files := range rounds {
		args := append([]string{"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", "--no-halt", scp.Host(), scp.Port()}, files...)
		if r := dcmtk.Run(t, 2*time.Minute, "dcmsend", args...); r.Err != nil {
			t.Fatalf("dcmsend: %v\n%s", r.Err, r.Output)
		}
		// Processed, and every study announced as of its last revision.
		testenv.Eventually(t, "the pipeline to catch up and announce", func() bool {
			var c struct {
				PendingPipeline int64 `json:"pendingPipeline"`
			}
			var s struct{ Studies []pipeline.StudySummary }
			portalJSON(t, scp, "/api/counters", &c)
			portalJSON(t, scp, "/api/studies", &s)
			if c.PendingPipeline != 0 || len(s.Studies) == 0 {
				return false
			}
			for _, st := range s.Studies {
				if st.AnnouncedRevision != st.Revision {
					return false
				}
			}
			return true
		})
	}
	portal := "http://" + scp.PortalAddr + "/objects/"
	scp.Stop(t)

	ctx := context.Background()
	db, err := localstore.Open(ctx, filepath.Join(dataDir, "ingest.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	b, err := os.ReadFile(filepath.Join(dataDir, "events.log"))
	if err != nil {
		t.Fatal(err)
	}
	var events []paritySent
	for line := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
		var ev paritySent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("events.log: %v", err)
		}
		events = append(events, ev)
	}
	// Pointers and resources are the portal's URLs.
	return collect(t, []string{portal}, events, db.IndexStore(), db.AuditStore(), func(key string) ([]byte, error) {
		body, _, err := db.Document(ctx, key)
		return body, err
	})
}

// paritySent is an event as a subscriber receives it, in either mode.
type paritySent struct {
	DetailType string          `json:"detail-type"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
}

// collect reads one deployment's answers through the pipeline's ports.
func collect(t *testing.T, bases []string, sent []paritySent, index pipeline.IndexStore, audit pipeline.AuditStore,
	document func(key string) ([]byte, error)) observed {
	t.Helper()
	ctx := context.Background()
	o := observed{Documents: map[string]any{}, Studies: map[string]any{}, Audit: map[string][]any{}}
	studies := map[string]bool{}
	var sops []string // of the instances the events name
	for _, ev := range sent {
		var d struct {
			StudyInstanceUID string `json:"studyInstanceUid"`
			SOPInstanceUID   string `json:"sopInstanceUid"`
			FindingsKey      string `json:"findingsKey"` // a rejected instance's
			ContentIdentity  string `json:"sha256"`
		}
		if err := json.Unmarshal(ev.Detail, &d); err != nil {
			t.Fatal(err)
		}
		if d.FindingsKey != "" {
			b, err := document(d.FindingsKey)
			if err != nil {
				t.Fatalf("findings of %s: %v", d.SOPInstanceUID, err)
			}
			o.Documents[fmt.Sprintf("%s %s findings", d.SOPInstanceUID, d.ContentIdentity)] = parityValue(t, bases, b)
		}
		studies[d.StudyInstanceUID] = d.StudyInstanceUID != ""
		if d.SOPInstanceUID != "" && !slices.Contains(sops, d.SOPInstanceUID) {
			sops = append(sops, d.SOPInstanceUID)
		}
		// The capture holds PutEvents' entries, whose resources a study
		// event leaves out: EventBridge delivers them as [], as local
		// mode writes them.
		if ev.Resources == nil {
			ev.Resources = []string{}
		}
		resources, err := json.Marshal(ev.Resources)
		if err != nil {
			t.Fatal(err)
		}
		o.Events = append(o.Events, ev.DetailType+" "+parityJSON(t, bases, resources)+" "+parityJSON(t, bases, ev.Detail))
	}
	slices.Sort(o.Events)
	for uid, ok := range studies {
		if !ok {
			continue
		}
		st, err := index.GetStudy(ctx, uid)
		if errors.Is(err, pipeline.ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		o.Studies[uid] = parityValue(t, bases, raw)
		for _, in := range st.Instances {
			for _, key := range []string{in.MetadataKey, pipeline.SummaryKeyOf(in.MetadataKey)} {
				b, err := document(key)
				if err != nil {
					t.Fatalf("document of %s: %v", in.SOPInstanceUID, err)
				}
				name := "dicom json"
				if strings.HasSuffix(key, ".summary.json") {
					name = "summary"
				}
				o.Documents[fmt.Sprintf("%s %s %s", in.SOPInstanceUID, in.ContentIdentity, name)] = parityValue(t, bases, b)
			}
		}
	}
	// By instance: the access path that reads whole records (Day's may
	// read a projection without the UIDs).
	for _, sop := range sops {
		var records []any
		q := pipeline.AuditQuery{SOPInstanceUID: sop}
		for {
			page, err := audit.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page.Records {
				raw, err := json.Marshal(r)
				if err != nil {
					t.Fatal(err)
				}
				records = append(records, parityValue(t, bases, raw))
			}
			if page.Next == "" {
				break
			}
			q.Cursor = page.Next
		}
		slices.SortFunc(records, func(a, b any) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
		o.Audit[sop] = records
	}
	return o
}

// parityVolatile are the fields whose values differ by design: between
// any two runs (ids, times, running counts) or between the modes. They are
// blanked where their value is a string or a number; an object under such
// a name (an audit record's eventId, its coded DICOM event) is compared.
var parityVolatile = map[string]bool{
	// An event's id (eventId), times, the association and the peer's port.
	"eventId": true, "time": true, "associationId": true, "receivedAt": true, "indexedAt": true, "firstReceived": true,
	"lastReceived": true, "lastSent": true, "lastActivity": true, "peerAddr": true, "announcedAt": true,
	// Instance Stored's running counts: what the index had counted when the
	// instance was indexed, other instances being indexed at the same time.
	"studyInstanceCount": true, "studySeriesCount": true,
	// The audit source: dicom-ingest in AWS, dicom-ingest-local in local
	// mode (docs/operations/audit-feed.md), by design.
	"auditSourceId": true,
}

// parityConflict is a conflicting resend's key suffix, named after an id
// of the store's choosing.
var parityConflict = regexp.MustCompile(`\.conflict-[0-9a-f]+\.dcm`)

// parityValue decodes raw, cuts bases (the deployment's URI bases) and the
// association ids it names (an SCP record's id is made of its
// association's) from its strings and blanks the volatile fields; an
// id that names an instance, a patient or a study is kept.
func parityValue(t *testing.T, bases []string, raw []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%v: %.200s", err, raw)
	}
	var associations []string
	var collect func(v any)
	collect = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "associationId" && s != "" {
					associations = append(associations, s)
				}
				collect(x)
			}
		case []any:
			for _, x := range v {
				collect(x)
			}
		}
	}
	collect(v)
	var walk func(v any) any
	walk = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				switch x.(type) {
				case string, float64:
					if parityVolatile[k] {
						v[k] = "<volatile>"
						continue
					}
				}
				v[k] = walk(x)
			}
		case []any:
			for i, x := range v {
				v[i] = walk(x)
			}
		case string:
			s := v
			for _, base := range bases {
				s = strings.ReplaceAll(s, base, "<base>/")
			}
			for _, a := range associations {
				s = strings.ReplaceAll(s, a, "<association>")
			}
			return parityConflict.ReplaceAllString(s, ".conflict-<id>.dcm")
		}
		return v
	}
	return walk(v)
}

// parityJSON is parityValue encoded again, for sorting.
func parityJSON(t *testing.T, bases []string, raw []byte) string {
	t.Helper()
	b, err := json.Marshal(parityValue(t, bases, raw))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// portalJSON gets path from the local portal into v.
func portalJSON(t *testing.T, scp *scptest.SCP, path string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + scp.PortalAddr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// TestParityValue holds the parity test's normalisation to what differs by
// design: two answers that differ in an id of a run, a time, a URI's base
// or the audit source normalise alike; two that differ in anything else (an
// audit record's patient or study, its coded event, its id naming its
// instance) do not.
func TestParityValue(t *testing.T) {
	const aws, local = "s3://b/", "http://127.0.0.1:1/objects/"
	record := func(base string, change func(r map[string]any)) string {
		r := map[string]any{
			"id": "instance:1.2.3.1.1:dataset-crc64nvme-abc", "time": "2026-12-07T20:03:47Z", "associationId": "3d870f18-2",
			"eventId":       map[string]any{"code": "110104", "system": "DCM", "display": "DICOM Instances Transferred"},
			"auditSourceId": "dicom-ingest", "objectKey": base + "incoming/x.dcm",
			"participantObjects": []any{
				map[string]any{"typeCode": 1, "typeCodeRole": 1, "id": "PID-1"},
				map[string]any{"typeCode": 2, "typeCodeRole": 3, "id": "1.2.3"},
			},
		}
		if change != nil {
			change(r)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return parityJSON(t, []string{base}, b)
	}
	participant := func(i int, id string) func(r map[string]any) {
		return func(r map[string]any) { r["participantObjects"].([]any)[i].(map[string]any)["id"] = id }
	}
	// An SCP record's id names its association and message.
	duplicate := func(association string, message int) func(r map[string]any) {
		return func(r map[string]any) {
			r["associationId"], r["id"] = association, fmt.Sprintf("assoc:%s:%d:duplicate", association, message)
		}
	}
	for _, tc := range []struct {
		name         string
		awsR, localR func(r map[string]any) // nil: the record as it is
		alike        bool
	}{
		{"the same record", nil, nil, true},
		{"another time, association and audit source", nil, func(r map[string]any) {
			r["time"], r["associationId"], r["auditSourceId"] = "2026-12-07T20:03:49Z", "a62be4d3-2", "dicom-ingest-local"
		}, true},
		{"a duplicate's id naming its association", duplicate("3d870f18-3", 7), duplicate("a62be4d3-3", 7), true},
		{"another patient", nil, participant(0, "PID-2"), false},
		{"another study", nil, participant(1, "1.2.4"), false},
		{"another coded event", nil, func(r map[string]any) { r["eventId"].(map[string]any)["code"] = "110106" }, false},
		{"another instance's id", nil, func(r map[string]any) { r["id"] = "instance:1.2.3.1.2:dataset-crc64nvme-abc" }, false},
		{"a duplicate's id naming another message", duplicate("3d870f18-3", 7), duplicate("a62be4d3-3", 8), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, l := record(aws, tc.awsR), record(local, tc.localR)
			if tc.alike && a != l {
				t.Errorf("normalised apart, want alike:\n%s\n%s", a, l)
			}
			if !tc.alike && a == l {
				t.Errorf("normalised alike, want the difference kept: %s", a)
			}
		})
	}
}
