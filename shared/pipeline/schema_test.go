package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/schemas"
)

// deployment is how a pipeline is configured to name objects in its
// events: in AWS by the bucket (s3:// pointers, ARN resources), in local
// mode by the portal's /objects/.
type deployment struct {
	name string
	// pointers and resources are what precede an object's key in the
	// detail's URIs and in the envelope's resources.
	pointers, resources string
	// partition is the resources' ARN partition; "" when they are no ARNs.
	partition string
	configure func(*pipeline.Pipeline)
}

// inAWS is a deployment in partition (aws, aws-cn, aws-us-gov), whose
// stack passes the bucket's ARN.
func inAWS(partition string) deployment {
	arn := "arn:" + partition + ":s3:::bucket"
	return deployment{name: partition, pointers: "s3://bucket/", resources: arn + "/", partition: partition,
		configure: func(p *pipeline.Pipeline) { p.BucketName, p.BucketARN = "bucket", arn }}
}

// inLocalMode is scp-task --local with its portal on the default address.
var inLocalMode = deployment{name: "local", pointers: "http://127.0.0.1:8080/objects/", resources: "http://127.0.0.1:8080/objects/",
	configure: func(p *pipeline.Pipeline) { p.ObjectURLBase = "http://127.0.0.1:8080/objects/" }}

// everyEvent runs the pipeline, on the fakes and configured as in
// deployment d, through every detail-type under the patient-data policy:
// instances stored, rejected, with a warning and of another patient, a
// study received and updated, Storage Commitment results with and without
// failures, one undeliverable. It returns the events published, in order.
func everyEvent(t *testing.T, policy pipeline.PatientDataPolicy, d deployment) []pipeline.Event {
	t.Helper()
	ctx := context.Background()
	f := pt.New()
	p := f.Pipeline()
	p.PatientData = policy
	d.configure(p)
	// Indexed as soon as received (10:20:30), before t0.
	p.Now = func() time.Time { return time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC) }
	add(f, key(sop1), ct(sop1).Build(), sop1)
	bad := ct(sop2)
	bad.SeriesUID = "1.02"
	add(f, key(sop2), bad.Build(), sop2)
	w := ct("1.2.826.0.1.3680043.10.1.1.3")
	w.PatientID = ""
	add(f, key(w.SOPUID), w.Build(), w.SOPUID)
	other := ct("1.2.826.0.1.3680043.10.1.1.5")
	other.PatientID = "ANOTHER-PATIENT"
	add(f, key(other.SOPUID), other.Build(), other.SOPUID)
	// A conflicting resend of sop1: other content under its UID.
	resent := ct(sop1)
	resent.Rows = 32
	data := resent.Build()
	ck := strings.TrimSuffix(key(sop1), ".dcm") + ".conflict-" + sha(data)[:16] + ".dcm"
	m := pt.SCPMetadata(pt.CTStorage, sop1, tsELE, sha(data))
	m["conflict"] = "true"
	f.Objects.Add(ck, data, m)
	for _, k := range []string{key(sop1), key(sop2), key(w.SOPUID), key(other.SOPUID), ck} {
		if _, err := p.ProcessObject(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 1, 15, 11, 0, 0, 0, time.UTC)
	if _, err := p.AnnounceStableStudies(ctx, t0); err != nil {
		t.Fatal(err)
	}
	late := ct("1.2.826.0.1.3680043.10.1.1.4")
	add(f, key(late.SOPUID), late.Build(), late.SOPUID)
	if _, err := p.ProcessObject(ctx, key(late.SOPUID)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.AnnounceStableStudies(ctx, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// Storage Commitment: a study completed by commitment, a result with failures, one undeliverable.
	p.Now = func() time.Time { return t0.Add(2 * time.Hour) }
	c2 := "1.2.826.0.1.3680043.10.2"
	for i, inst := range []pt.Instance{{StudyUID: c2, SeriesUID: c2 + ".1", SOPUID: c2 + ".1.1", PatientID: "PID-2", Rows: 8, Columns: 8, SourceAE: "PACS"}} {
		k := fmt.Sprintf("incoming/2026/01/15/%s/%s/%d.dcm", inst.StudyUID, inst.SeriesUID, i)
		add(f, k, inst.Build(), inst.SOPUID)
		if _, err := p.ProcessObject(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	commit := func(txn string, refs ...commitment.Ref) {
		t.Helper()
		r := pipeline.CommitmentRequest{SchemaVersion: 1, TransactionUID: txn, Refs: refs, CallingAE: "PACS", CalledAE: "INGEST",
			AssociationID: "a-" + txn, MessageID: 1, ReceivedAt: t0.Add(2 * time.Hour)}
		body, _ := json.Marshal(r)
		if err := f.Objects.Put(ctx, r.Key(), body, "application/json", nil); err != nil {
			t.Fatal(err)
		}
		if err := p.ProcessCommitmentRequest(ctx, r.Key()); err != nil {
			t.Fatal(err)
		}
		if _, err := p.RunCommitments(ctx, p.Now()); err != nil {
			t.Fatal(err)
		}
	}
	commit("1.2.826.0.1.3680043.10.9.1", commitment.Ref{SOPClassUID: pt.CTStorage, SOPInstanceUID: c2 + ".1.1"})
	commit("1.2.826.0.1.3680043.10.9.2", commitment.Ref{SOPClassUID: pt.CTStorage, SOPInstanceUID: sop1},
		commitment.Ref{SOPClassUID: "1.2.840.10008.1.1", SOPInstanceUID: "1.2.3"})
	f.Reporter.Err, p.CommitmentReportFor = errors.New("unreachable"), time.Nanosecond
	commit("1.2.826.0.1.3680043.10.9.3", commitment.Ref{SOPClassUID: pt.CTStorage, SOPInstanceUID: sop1})
	p.Now = func() time.Time { return t0.Add(3 * time.Hour) }
	if _, err := p.RunCommitments(ctx, t0.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	return f.Events.All()
}

// TestEventsMatchSchemas runs the pipeline through every detail-type, under
// every patient-data policy, and validates each detail against its schema,
// strict: every property the detail has is one the schema declares.
func TestEventsMatchSchemas(t *testing.T) {
	sch := pt.StrictSchemas(t)
	for _, policy := range []pipeline.PatientDataPolicy{pipeline.PatientDataNone, pipeline.PatientDataID, pipeline.PatientDataFull} {
		t.Run(string(policy), func(t *testing.T) {
			events := everyEvent(t, policy, inAWS("aws"))
			seen := map[string]int{}
			for _, ev := range events {
				s := sch[ev.DetailType]
				if s == nil {
					t.Fatalf("no schema for %q", ev.DetailType)
				}
				var v any
				if err := json.Unmarshal(ev.Detail, &v); err != nil {
					t.Fatal(err)
				}
				if err := s.Validate(v); err != nil {
					t.Errorf("%s detail does not match %s: %v\n%s", ev.DetailType, schemas.File[ev.DetailType], err, ev.Detail)
				}
				if !strings.Contains(string(ev.Detail), `"eventId":"`+ev.ID+`"`) {
					t.Errorf("detail eventId differs from the event id")
				}
				for _, name := range emittedAlways[ev.DetailType] {
					if _, ok := v.(map[string]any)[name]; !ok {
						t.Errorf("%s detail without %s, which the pipeline always emits: %s", ev.DetailType, name, ev.Detail)
					}
				}
				seen[ev.DetailType]++
				if strings.Contains(string(ev.Detail), `"completion":"storage-commitment"`) {
					seen["by commitment"]++
				}
				if strings.Contains(string(ev.Detail), `"patientMismatch":true`) {
					seen["patientMismatch "+ev.DetailType]++
				}
				if strings.Contains(string(ev.Detail), `"rejectedCount":`) {
					seen["rejectedCount "+ev.DetailType]++
				}
			}
			for _, dt := range []string{pipeline.DetailTypeInstanceStored, pipeline.DetailTypeStudyReceived, pipeline.DetailTypeStudyUpdated} {
				if seen["patientMismatch "+dt] == 0 {
					t.Errorf("no %q event with patientMismatch was produced", dt)
				}
			}
			// A study with a quarantined instance says so in its announcements.
			for _, dt := range []string{pipeline.DetailTypeStudyReceived, pipeline.DetailTypeStudyUpdated} {
				if seen["rejectedCount "+dt] == 0 {
					t.Errorf("no %q event with rejectedCount was produced", dt)
				}
			}
			for dt := range schemas.File {
				if seen[dt] == 0 {
					t.Errorf("no %q event was produced", dt)
				}
			}
			if seen["by commitment"] == 0 || seen[pipeline.DetailTypeCommitmentCompleted] != 3 {
				t.Errorf("%d studies completed by commitment, %d transactions completed; want some and 3", seen["by commitment"], seen[pipeline.DetailTypeCommitmentCompleted])
			}
		})
	}
}

// emittedAlways are the properties version 1 added after events were
// archived that the pipeline still emits on every event: optional in the
// schema, so that an archived event replayed still validates, yet never
// left out, so a consumer of today's events can count on them.
var emittedAlways = map[string][]string{
	pipeline.DetailTypeInstanceStored:      {"patientMismatch"},
	pipeline.DetailTypeStudyReceived:       {"patientMismatch", "completion", "modalityCount", "lastSent"},
	pipeline.DetailTypeStudyUpdated:        {"patientMismatch", "completion", "modalityCount", "lastSent"},
	pipeline.DetailTypeCommitmentCompleted: {"studyCount", "studiesTruncated"},
}

// TestArchivedEventsMatchSchemas validates, against the published schemas,
// the details earlier producers wrote, as the bus's archive holds and
// replays them (testdata/archived-events/<commit>/: each produced by that
// commit's TestEventsMatchSchemas; see its README): version 1 only grows
// compatibly, so every one of them still validates.
func TestArchivedEventsMatchSchemas(t *testing.T) {
	sch := pt.Schemas(t)
	files, err := filepath.Glob(filepath.Join("testdata", "archived-events", "*", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no archived event in testdata/archived-events")
	}
	for _, file := range files {
		t.Run(filepath.ToSlash(file), func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var ev struct {
				DetailType string `json:"detail-type"`
				Detail     any    `json:"detail"`
			}
			if err := json.Unmarshal(b, &ev); err != nil {
				t.Fatal(err)
			}
			s := sch[ev.DetailType]
			if s == nil {
				t.Fatalf("no schema for %q", ev.DetailType)
			}
			if err := s.Validate(ev.Detail); err != nil {
				t.Errorf("an archived %s detail fails %s: %v", ev.DetailType, schemas.File[ev.DetailType], err)
			}
		})
	}
}

// TestSchemasOpenToAdditions: the published schemas close no object to
// properties they do not list. A detail with a property added to any of
// its objects passes the published schema, so a consumer that validates
// with it survives version 1's additions, and fails the strict variant,
// so the tests catch a field the code emits and the schema does not
// declare.
func TestSchemasOpenToAdditions(t *testing.T) {
	for dt, file := range schemas.File {
		b, err := schemas.FS.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var doc any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		pt.EachSubschema(doc, func(m map[string]any) {
			for _, kw := range []string{"additionalProperties", "unevaluatedProperties"} {
				if m[kw] == false {
					t.Errorf("%s (%s): an object schema has %s: false", file, dt, kw)
				}
			}
		})
	}
	published, strict := pt.Schemas(t), pt.StrictSchemas(t)
	tried := map[string]int{}
	for _, ev := range everyEvent(t, pipeline.PatientDataFull, inAWS("aws")) {
		// The detail with a property added to its i-th object, until it
		// has no i-th.
		for i := 0; ; i++ {
			var v any
			if err := json.Unmarshal(ev.Detail, &v); err != nil {
				t.Fatal(err)
			}
			var target map[string]any
			n := 0
			eachObject(v, func(m map[string]any) {
				if n == i {
					target = m
				}
				n++
			})
			if target == nil {
				break
			}
			target["addedLater"] = true
			if err := published[ev.DetailType].Validate(v); err != nil {
				t.Errorf("%s: the published schema rejects a property added to object %d: %v", ev.DetailType, i, err)
			}
			if strict[ev.DetailType].Validate(v) == nil {
				t.Errorf("%s: the strict schema accepts a property added to object %d", ev.DetailType, i)
			}
			tried[ev.DetailType]++
		}
	}
	for _, dt := range pipeline.DetailTypes {
		if tried[dt] < 2 {
			t.Errorf("%s: %d objects tried, want the detail and some within it", dt, tried[dt])
		}
	}
}

// eachObject calls f with every JSON object in v, v first.
func eachObject(v any, f func(map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		f(v)
		for _, k := range slices.Sorted(maps.Keys(v)) {
			eachObject(v[k], f)
		}
	case []any:
		for _, e := range v {
			eachObject(e, f)
		}
	}
}

func TestSchemasRejectWrongShapes(t *testing.T) {
	sch := pt.Schemas(t)
	for _, tt := range []struct{ dt, detail string }{
		{pipeline.DetailTypeInstanceStored, `{"schemaVersion":2}`},
		{pipeline.DetailTypeInstanceStored, `{"schemaVersion":1,"eventId":"00000000000000000000000000000000","objectKey":"k","objectUri":"u","metadataKey":"m","sopClassUid":"1.2","sopInstanceUid":"1.2","studyInstanceUid":"1.2","seriesInstanceUid":"1.2","size":1,"sha256":"s","receivedAt":"2026-01-01T00:00:00Z","conflict":false,"patientMismatch":"yes"}`},
		{pipeline.DetailTypeStudyReceived, `{"schemaVersion":1,"eventId":"00000000000000000000000000000000","studyInstanceUid":"1.2","version":2,"revision":1,"instanceCount":1,"seriesCount":1,"firstReceived":"2026-01-01T00:00:00Z","lastReceived":"2026-01-01T00:00:00Z","series":[]}`},
		{pipeline.DetailTypeInstanceRejected, `{"schemaVersion":1,"eventId":"00000000000000000000000000000000","objectKey":"k","quarantineKey":"q","findingsKey":"f","findings":[],"receivedAt":"2026-01-01T00:00:00Z"}`},
		{pipeline.DetailTypeStudyReceived, `{"schemaVersion":1,"eventId":"00000000000000000000000000000000","studyInstanceUid":"1.2","version":1,"revision":1,"instanceCount":1,"seriesCount":1,"firstReceived":"2026-01-01T00:00:00Z","lastReceived":"2026-01-01T00:00:00Z","series":[],"patientMismatch":false,"completion":"because"}`},
		{pipeline.DetailTypeCommitmentCompleted, `{"schemaVersion":1,"eventId":"00000000000000000000000000000000","transactionUid":"1.2","callingAe":"A","associationId":"x","receivedAt":"2026-01-01T00:00:00Z","completedAt":"2026-01-01T00:00:00Z","outcome":"failures","eventTypeId":2,"instanceCount":1,"committedCount":0,"failedCount":1,"failures":[{"sopClassUid":"1.2","sopInstanceUid":"1.3","failureReason":"0999","reason":"processing-failure"}],"studies":[],"report":{"delivered":true,"attempts":1},"requestUri":"r","resultUri":"s"}`},
	} {
		var v any
		if err := json.Unmarshal([]byte(tt.detail), &v); err != nil {
			t.Fatal(err)
		}
		if err := sch[tt.dt].Validate(v); err == nil {
			t.Errorf("%s accepted %s", tt.dt, tt.detail)
		}
	}
}

// schemaDoc is what the tests read of a schema file besides validating.
type schemaDoc struct {
	Title, Description string
	Properties         map[string]any
}

// schemaOf reads the schema of detail-type dt; false when it has none.
func schemaOf(t *testing.T, dt string) (schemaDoc, bool) {
	t.Helper()
	file, ok := schemas.File[dt]
	if !ok {
		return schemaDoc{}, false
	}
	b, err := schemas.FS.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var s schemaDoc
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return s, true
}

// TestSchemaPerDetailType: every detail-type the pipeline publishes has
// one schema, and no schema names a detail-type the pipeline does not
// publish; each schema's title and description name its detail-type and
// the source, as a subscriber reads them.
func TestSchemaPerDetailType(t *testing.T) {
	if len(schemas.File) != len(pipeline.DetailTypes) {
		t.Errorf("%d schema files for %d detail-types", len(schemas.File), len(pipeline.DetailTypes))
	}
	for _, dt := range pipeline.DetailTypes {
		s, ok := schemaOf(t, dt)
		if !ok {
			t.Errorf("no schema for %q", dt)
			continue
		}
		file := schemas.File[dt]
		if !strings.HasPrefix(s.Title, dt+" (") {
			t.Errorf("%s: title %q, want it to start with %q", file, s.Title, dt)
		}
		if want := fmt.Sprintf("source: %s; detail-type: %q", pipeline.EventSource, dt); !strings.Contains(s.Description, want) {
			t.Errorf("%s: description does not say %s", file, want)
		}
	}
}

// TestDocsEventNames: docs/pipeline.md's events table lists every
// detail-type with its schema file, and its example rule in Subscribing
// matches the source, detail-types the pipeline publishes and fields
// their schemas have: a subscriber writes the rule from the docs alone.
func TestDocsEventNames(t *testing.T) {
	doc := pipelineDoc(t)
	for _, dt := range pipeline.DetailTypes {
		if row := fmt.Sprintf("| `%s` | `%s` |", dt, schemas.File[dt]); !strings.Contains(doc, row) {
			t.Errorf("docs/pipeline.md has no events table row %q", row)
		}
	}
	var pattern struct {
		Source     []string                   `json:"source"`
		DetailType []string                   `json:"detail-type"`
		Detail     map[string]json.RawMessage `json:"detail"`
	}
	if err := json.Unmarshal([]byte(docsRule(t, doc)), &pattern); err != nil {
		t.Fatalf("the example pattern is no JSON: %v", err)
	}
	if !slices.Equal(pattern.Source, []string{pipeline.EventSource}) {
		t.Errorf("example source %q", pattern.Source)
	}
	for _, dt := range pattern.DetailType {
		s, ok := schemaOf(t, dt)
		if !ok {
			t.Errorf("example detail-type %q is none the pipeline publishes", dt)
			continue
		}
		for field := range pattern.Detail {
			if _, ok := s.Properties[field]; !ok {
				t.Errorf("example matches detail field %q, which %s has not", field, dt)
			}
		}
	}
}

// pipelineDoc is docs/pipeline.md, which tells a subscriber the events.
func pipelineDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "pipeline.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docsSubscribing is the Subscribing section of docs/pipeline.md (doc).
func docsSubscribing(t *testing.T, doc string) string {
	t.Helper()
	_, sub, ok := strings.Cut(doc, "\n### Subscribing\n")
	if !ok {
		t.Fatal("docs/pipeline.md has no Subscribing section")
	}
	sub, _, _ = strings.Cut(sub, "\n## ")
	return sub
}

// docsRule is the example rule's event pattern in Subscribing: its first
// JSON block.
func docsRule(t *testing.T, doc string) string {
	t.Helper()
	_, block, ok := strings.Cut(docsSubscribing(t, doc), "```json\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("Subscribing has no JSON event pattern")
	}
	return block
}

// TestDocsRulesMatch: the rules docs/pipeline.md tells a subscriber to
// write match what the pipeline emits, as EventBridge matches them (a
// field's values, an array field when any element matches, prefix): the
// example rule matches the example Study Received detail it says it
// matches and the study events of a CT study of one patient, and no other
// event; the resources prefix selecting incoming/ matches every instance
// event delivered in AWS and no other. TestDocsEventNames holds the names
// the rule uses; this, that the rule as written does its work.
func TestDocsRulesMatch(t *testing.T) {
	doc := pipelineDoc(t)
	var rule map[string]any
	if err := json.Unmarshal([]byte(docsRule(t, doc)), &rule); err != nil {
		t.Fatalf("the example pattern is no JSON: %v", err)
	}
	// The prefix rule, written inline: {"resources": [{"prefix": "arn:aws:s3:::<bucket>/incoming/"}]}.
	_, inline, ok := strings.Cut(docsSubscribing(t, doc), "`{\"resources\": ")
	inline, _, ok2 := strings.Cut(inline, "`")
	var prefix map[string]any
	if !ok || !ok2 {
		t.Fatal("Subscribing has no resources prefix pattern")
	}
	if err := json.Unmarshal([]byte(`{"resources": `+strings.ReplaceAll(inline, "<bucket>", "bucket")), &prefix); err != nil {
		t.Fatalf("the resources prefix pattern is no JSON: %v", err)
	}

	examples, errs := docExamples("docs/pipeline.md", doc)
	for _, err := range errs {
		t.Error(err)
	}
	var exampleMatched bool
	for _, ex := range examples {
		if ex.detailType != pipeline.DetailTypeStudyReceived {
			continue
		}
		ev := map[string]any{"source": pipeline.EventSource, "detail-type": ex.detailType, "resources": []any{}, "detail": ex.detail}
		exampleMatched = ruleMatches(rule, ev)
	}
	if !exampleMatched {
		t.Errorf("the example rule does not match the example %s detail, which Subscribing says it matches", pipeline.DetailTypeStudyReceived)
	}

	// A CT study of one patient: a study event the rule matches, announced
	// again after an instance more.
	ctx := context.Background()
	f := pt.New()
	p := f.Pipeline()
	inAWS("aws").configure(p)
	p.Now = func() time.Time { return time.Date(2026, 1, 15, 10, 20, 30, 0, time.UTC) }
	for _, sop := range []string{sop1, "1.2.826.0.1.3680043.10.1.1.4"} {
		add(f, key(sop), ct(sop).Build(), sop)
		if _, err := p.ProcessObject(ctx, key(sop)); err != nil {
			t.Fatal(err)
		}
		if _, err := p.AnnounceStableStudies(ctx, p.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		p.Now = func() time.Time { return time.Date(2026, 1, 15, 12, 20, 30, 0, time.UTC) }
	}
	ctStudy := f.Events.All()
	matched := map[string]int{}
	for i, events := range [][]pipeline.Event{ctStudy, everyEvent(t, pipeline.PatientDataNone, inAWS("aws"))} {
		for _, d := range viaEventBridge(t, events) {
			var ev map[string]any
			b, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &ev); err != nil {
				t.Fatal(err)
			}
			var detail struct {
				Modalities      []string `json:"modalities"`
				PatientMismatch bool     `json:"patientMismatch"`
			}
			if err := json.Unmarshal(d.Detail, &detail); err != nil {
				t.Fatal(err)
			}
			study := d.DetailType == pipeline.DetailTypeStudyReceived || d.DetailType == pipeline.DetailTypeStudyUpdated
			want := study && !detail.PatientMismatch && (slices.Contains(detail.Modalities, "CT") || slices.Contains(detail.Modalities, "MR"))
			if got := ruleMatches(rule, ev); got != want {
				t.Errorf("the example rule matches %v, want %v: %s %s", got, want, d.DetailType, d.Detail)
			}
			if got, want := ruleMatches(prefix, ev), d.DetailType == pipeline.DetailTypeInstanceStored || d.DetailType == pipeline.DetailTypeInstanceRejected; got != want {
				t.Errorf("the resources prefix pattern matches %v, want %v: %s %q", got, want, d.DetailType, d.Resources)
			}
			if i == 0 && ruleMatches(rule, ev) {
				matched[d.DetailType]++
			}
		}
	}
	if matched[pipeline.DetailTypeStudyReceived] != 1 || matched[pipeline.DetailTypeStudyUpdated] != 1 {
		t.Errorf("the example rule matched the CT study's events %v, want its Study Received and its Study Updated", matched)
	}
}

// TestRuleMatches holds ruleMatches to EventBridge's matching as its user
// guide gives it ("Event pattern syntax", "Arrays in Amazon EventBridge
// event patterns"), for what it claims to know: a field's list matches
// when any of its values equals the event's value (case and JSON type
// included), or, the event's value an array, any element of it; every
// field of the pattern is in the event, nested as in the pattern; and
// {"prefix": s} matches a string that starts with s. What it does not know
// (another operator, a nested pattern over an array of objects, whose
// matching EventBridge does not define there) it refuses, rather than
// answer a match or a miss EventBridge might not.
func TestRuleMatches(t *testing.T) {
	for _, tt := range []struct {
		name, pattern, event string
		want                 bool
		unknown              bool // the matcher refuses the pattern
	}{
		{name: "exact", pattern: `{"source": ["dicom.ingest"]}`, event: `{"source": "dicom.ingest"}`, want: true},
		{name: "exact is case-sensitive", pattern: `{"m": ["CT"]}`, event: `{"m": "ct"}`},
		{name: "any value of the list", pattern: `{"m": ["MR", "CT"]}`, event: `{"m": "CT"}`, want: true},
		{name: "field missing", pattern: `{"m": ["CT"]}`, event: `{"n": "CT"}`},
		{name: "array: any element", pattern: `{"r": ["a", "b", "c"]}`, event: `{"r": ["x", "b"]}`, want: true},
		{name: "array: none", pattern: `{"r": ["a"]}`, event: `{"r": ["x", "y"]}`},
		{name: "array: empty", pattern: `{"r": ["a"]}`, event: `{"r": []}`},
		{name: "false", pattern: `{"p": [false]}`, event: `{"p": false}`, want: true},
		{name: "false is no string", pattern: `{"p": [false]}`, event: `{"p": "false"}`},
		{name: "false absent", pattern: `{"p": [false]}`, event: `{}`},
		{name: "null", pattern: `{"p": [null]}`, event: `{"p": null}`, want: true},
		{name: "null absent", pattern: `{"p": [null]}`, event: `{}`},
		{name: "number", pattern: `{"n": [5]}`, event: `{"n": 5}`, want: true},
		{name: "number is no string", pattern: `{"n": [5]}`, event: `{"n": "5"}`},
		{name: "nested", pattern: `{"detail": {"m": ["CT"]}}`, event: `{"detail": {"m": "CT", "x": 1}}`, want: true},
		{name: "nested, a scalar in the event", pattern: `{"detail": {"m": ["CT"]}}`, event: `{"detail": "CT"}`},
		{name: "every field", pattern: `{"a": ["1"], "b": ["2"]}`, event: `{"a": "1", "b": "3"}`},
		{name: "prefix", pattern: `{"r": [{"prefix": "arn:aws:s3:::b/incoming/"}]}`, event: `{"r": ["arn:aws:s3:::b/incoming/x.dcm"]}`, want: true},
		{name: "prefix, another part", pattern: `{"r": [{"prefix": "arn:aws:s3:::b/incoming/"}]}`, event: `{"r": ["arn:aws:s3:::b/quarantine/x.dcm"]}`},
		{name: "prefix of no string", pattern: `{"n": [{"prefix": "5"}]}`, event: `{"n": 55}`},
		{name: "another operator", pattern: `{"m": [{"anything-but": "CT"}]}`, event: `{"m": "MR"}`, unknown: true},
		{name: "a value, not a list", pattern: `{"m": "CT"}`, event: `{"m": "CT"}`, unknown: true},
		{name: "nested over an array of objects", pattern: `{"series": {"modality": ["CT"]}}`, event: `{"series": [{"modality": "CT"}]}`, unknown: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var pattern, event map[string]any
			if err := json.Unmarshal([]byte(tt.pattern), &pattern); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(tt.event), &event); err != nil {
				t.Fatal(err)
			}
			var got, refused bool
			func() {
				defer func() { refused = recover() != nil }()
				got = ruleMatches(pattern, event)
			}()
			switch {
			case refused != tt.unknown:
				t.Errorf("refused %v, want %v", refused, tt.unknown)
			case !refused && got != tt.want:
				t.Errorf("%s against %s: %v, want %v", tt.pattern, tt.event, got, tt.want)
			}
		})
	}
}

// ruleMatches reports whether EventBridge's event pattern matches event
// (both decoded JSON), in what the docs' patterns use: each field of the
// pattern is in the event; a field's pattern is an object of the
// event's object at that field, or a list of values (or {"prefix": s})
// any of which the event's value, or any element of an array value,
// matches. It panics on a pattern it does not know how EventBridge
// matches (TestRuleMatches).
func ruleMatches(pattern, event map[string]any) bool {
	for k, want := range pattern {
		got, ok := event[k]
		if !ok {
			return false
		}
		switch want := want.(type) {
		case map[string]any:
			if _, isArray := got.([]any); isArray {
				// EventBridge's guide does not say how a nested
				// pattern meets an array of objects: not a miss to
				// claim.
				panic(fmt.Sprintf("pattern field %q: an object pattern over an array, which the test does not match", k))
			}
			sub, ok := got.(map[string]any)
			if !ok || !ruleMatches(want, sub) {
				return false
			}
		case []any:
			values := []any{got}
			if l, ok := got.([]any); ok {
				values = l
			}
			if !slices.ContainsFunc(values, func(v any) bool { return slices.ContainsFunc(want, func(w any) bool { return valueMatches(w, v) }) }) {
				return false
			}
		default:
			panic(fmt.Sprintf("pattern field %q: %v is no list or object", k, want))
		}
	}
	return true
}

// valueMatches reports whether one value of an event pattern's list (a
// value, or {"prefix": s}) matches the event's value v.
func valueMatches(w, v any) bool {
	if m, ok := w.(map[string]any); ok {
		p, isPrefix := m["prefix"].(string)
		s, isString := v.(string)
		if !isPrefix || len(m) != 1 {
			panic(fmt.Sprintf("pattern operator %v: the test knows prefix only", m))
		}
		return isString && strings.HasPrefix(s, p)
	}
	return w == v
}

// TestEventFieldsExplained: every property of every detail, within its
// objects too, is explained to a subscriber: by a description in its
// schema or in docs/pipeline.md, which names it (`name`). A patient's
// name components are the docs' "`name` split into components". The
// counts studyInstanceCount and studySeriesCount had neither, and read as
// a completeness signal they are not.
func TestEventFieldsExplained(t *testing.T) {
	doc := pipelineDoc(t)
	for dt, file := range schemas.File {
		b, err := schemas.FS.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var schema map[string]any
		if err := json.Unmarshal(b, &schema); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var walk func(path string, m map[string]any)
		walk = func(path string, m map[string]any) {
			if items, ok := m["items"].(map[string]any); ok {
				walk(path+"[]", items)
			}
			props, _ := m["properties"].(map[string]any)
			for name, v := range props {
				sub, _ := v.(map[string]any)
				if _, described := sub["description"]; !described && !strings.Contains(doc, "`"+name+"`") {
					t.Errorf("%s (%s): %s%s has no description, and docs/pipeline.md does not name it", file, dt, path, name)
				}
				if path+name == "patient.name" {
					continue
				}
				walk(path+name+".", sub)
			}
		}
		walk("", schema)
	}
}

// TestDocsExampleDetails: each example detail docs/pipeline.md gives
// ("Example `<detail-type>` detail") is one the pipeline could emit: it
// matches its schema closed to the properties it lists, as the pipeline's
// own events must, and has the properties the pipeline always emits. A
// value elided with "…" is a placeholder, not held to its pattern.
func TestDocsExampleDetails(t *testing.T) {
	doc := pipelineDoc(t)
	sch := pt.StrictSchemas(t)
	examples, errs := docExamples("docs/pipeline.md", doc)
	for _, err := range errs {
		t.Error(err)
	}
	// The top-level properties every event of a detail-type has.
	everyTime := map[string][]string{}
	for _, ev := range everyEvent(t, pipeline.PatientDataID, inAWS("aws")) {
		var m map[string]any
		if err := json.Unmarshal(ev.Detail, &m); err != nil {
			t.Fatal(err)
		}
		names, seen := everyTime[ev.DetailType]
		if !seen {
			names = slices.Sorted(maps.Keys(m))
		}
		everyTime[ev.DetailType] = slices.DeleteFunc(names, func(n string) bool { _, ok := m[n]; return !ok })
	}
	for _, ex := range examples {
		dt, v, at := ex.detailType, ex.detail, fmt.Sprintf("docs/pipeline.md:%d", ex.line)
		s := sch[dt]
		if s == nil {
			t.Errorf("%s gives an example of %q, which the pipeline does not publish", at, dt)
			continue
		}
		var verr *jsonschema.ValidationError
		if err := s.Validate(v); errors.As(err, &verr) {
			for _, leaf := range leafErrors(verr) {
				if at, ok := pointerValue(v, leaf.InstanceLocation).(string); ok && strings.Contains(at, "…") {
					continue
				}
				t.Errorf("%s: the example %s detail does not match %s: %s: %s", at, dt, schemas.File[dt], leaf.InstanceLocation, leaf.Message)
			}
		} else if err != nil {
			t.Fatal(err)
		}
		for _, name := range emittedAlways[dt] {
			if _, ok := v[name]; !ok {
				t.Errorf("%s: the example %s detail lacks %s, which the pipeline always emits", at, dt, name)
			}
		}
		// The other way: every property each such event the pipeline
		// emits has (under the example's policy, id) is in the example.
		for _, name := range everyTime[dt] {
			if _, ok := v[name]; !ok {
				t.Errorf("%s: the example %s detail lacks %s, which every such event the pipeline emits has", at, dt, name)
			}
		}
	}
	if len(examples)+len(errs) == 0 {
		t.Fatal("docs/pipeline.md has no example detail: the pattern no longer matches it")
	}
}

// docExample is an example detail a doc gives ("Example `<detail-type>`
// detail" then a JSON block): its detail type, the line its block starts
// on, and the detail.
type docExample struct {
	detailType string
	line       int
	detail     map[string]any
}

// docExamples reads the example details of doc, named name in its errors:
// an example without a JSON block, or whose block is no JSON object, is an
// error naming the doc and the line (the test of the examples held each
// to be an object, and panicked on one that was not).
func docExamples(name, doc string) ([]docExample, []error) {
	var out []docExample
	var errs []error
	lineAt := func(rest string) int { return strings.Count(doc[:len(doc)-len(rest)], "\n") + 1 }
	rest := doc
	for {
		_, after, found := strings.Cut(rest, "\nExample `")
		if !found {
			return out, errs
		}
		dt, after, _ := strings.Cut(after, "`")
		_, block, ok := strings.Cut(after, "```json\n")
		if !ok {
			return out, append(errs, fmt.Errorf("%s:%d: example %q has no JSON block", name, lineAt(after), dt))
		}
		line := lineAt(block)
		block, rest, ok = strings.Cut(block, "```")
		if !ok {
			return out, append(errs, fmt.Errorf("%s:%d: example %q: its JSON block does not end", name, line, dt))
		}
		var v any
		if err := json.Unmarshal([]byte(block), &v); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: the example %s detail is no JSON: %w", name, line, dt, err))
			continue
		}
		detail, ok := v.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("%s:%d: the example %s detail is no JSON object: %.80s", name, line, dt, strings.TrimSpace(block)))
			continue
		}
		out = append(out, docExample{detailType: dt, line: line, detail: detail})
	}
}

// TestDocExamples: docExamples names the doc and the line of an example
// that is no JSON object, or has no JSON block, and reads the others.
func TestDocExamples(t *testing.T) {
	const doc = "# Events\n\nExample `A` detail:\n\n```json\n{\"a\": 1}\n```\n\nExample `B` detail:\n\n```json\n[1, 2]\n```\n" +
		"\nExample `C` detail:\n\n```json\n\"c\"\n```\n\nExample `D` detail, none.\n"
	examples, errs := docExamples("x.md", doc)
	if len(examples) != 1 || examples[0].detailType != "A" || examples[0].line != 6 || examples[0].detail["a"] != 1.0 {
		t.Errorf("examples %+v, want A's at line 6", examples)
	}
	want := []string{`x.md:12: the example B detail is no JSON object: [1, 2]`, `x.md:18: the example C detail is no JSON object: "c"`,
		`x.md:21: example "D" has no JSON block`}
	if len(errs) != len(want) {
		t.Fatalf("errors %v, want %q", errs, want)
	}
	for i, err := range errs {
		if err.Error() != want[i] {
			t.Errorf("error %q, want %q", err, want[i])
		}
	}
}

// leafErrors are the causes at the bottom of e.
func leafErrors(e *jsonschema.ValidationError) []*jsonschema.ValidationError {
	if len(e.Causes) == 0 {
		return []*jsonschema.ValidationError{e}
	}
	var out []*jsonschema.ValidationError
	for _, c := range e.Causes {
		out = append(out, leafErrors(c)...)
	}
	return out
}

// pointerValue is the value a JSON pointer ("/patient/patientId") names in
// v, nil when none.
func pointerValue(v any, pointer string) any {
	for _, tok := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		if tok == "" {
			continue
		}
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch x := v.(type) {
		case map[string]any:
			v = x[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}
