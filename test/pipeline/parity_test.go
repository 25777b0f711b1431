package pipelinee2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/google/go-cmp/cmp"

	"github.com/dicom-ingest/dicom-ingest/shared/awsadapters"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore/localstoretest"
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
// Then a C-STORE refused and one cut short, and a Storage Commitment
// request naming an instance stored, one quarantined, one never sent and
// those two (parityCommit): each mode reports the same result per instance
// (parityCommitted) on a new association, and leaves the same request and
// result documents, Storage Commitment Completed and audit records. Every
// record of the sending AE's associations is compared, not only those the
// events' instances name; and local mode's webhook receives every event of
// events.log, as AWS published it, in an envelope of EventBridge's shape.
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
		{"association records", cloud.Associations, local.Associations},
		{"Storage Commitment results", cloud.Commitment, local.Commitment},
		{"events as webhooks deliver them", cloud.Events, local.Webhooks},
		{"envelopes", cloud.Envelopes, local.Envelopes},
	} {
		if d := cmp.Diff(part.aws, part.local); d != "" {
			t.Errorf("%s differ between AWS and local mode (-aws +local):\n%s", part.name, d)
		}
	}
	t.Logf("compared %d events, %d studies, %d documents, the audit records of %d instances, %d other association records, %d webhook deliveries, the commitment of %d instances",
		len(cloud.Events), len(cloud.Studies), len(cloud.Documents), len(cloud.Audit), len(cloud.Associations), len(local.Webhooks), len(cloud.Commitment))
	if len(cloud.Events) == 0 || len(cloud.Studies) == 0 || len(cloud.Documents) == 0 || len(cloud.Audit) == 0 ||
		len(cloud.Associations) == 0 || len(cloud.Commitment) != len(parityCommitted) {
		t.Errorf("nothing to compare: %d events, %d studies, %d documents, %d audited instances, %d association records, %d instances committed or failed",
			len(cloud.Events), len(cloud.Studies), len(cloud.Documents), len(cloud.Audit), len(cloud.Associations), len(cloud.Commitment))
	}
	// What each mode's Storage Commitment answers, whatever the other's.
	for sop, want := range parityCommitted {
		if got := local.Commitment[sop]; got != want {
			t.Errorf("Storage Commitment of the instance %s: %q, want %q", parityHistory[sop], got, want)
		}
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
	const studyUID = parityStudy
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
	// Associations are the other records of the sending AE's associations,
	// sorted: their starts and ends, the C-STOREs refused or cut short,
	// Storage Commitment's request, result and report.
	Associations []any
	// Commitment is the Storage Commitment result the PACS got, by SOP
	// Instance UID: "committed", or "failed" and the reason in hex.
	Commitment map[string]string
	// Webhooks are the events as a webhook received them, as Events
	// (local mode's; none in AWS, whose subscribers are EventBridge's).
	Webhooks []string
	// Envelopes are the shapes of the envelopes delivered (parityShape),
	// sorted and counted.
	Envelopes []string
}

// parityStudy is the study of the crafted objects.
const parityStudy = "1.2.826.0.1.3680043.10.4242"

// parityTxn is the Storage Commitment request's Transaction UID.
const parityTxn = parityStudy + ".7"

// parityHistory is what happened to each instance the Storage Commitment
// request names, by SOP Instance UID: held.dcm's and bad.dcm's C-STOREs
// (parityRounds), and parityCommit's.
var parityHistory = map[string]string{
	parityStudy + ".1.1":  "stored",
	parityStudy + ".1.9":  "quarantined (validation rejected it)",
	parityStudy + ".1.99": "never sent",
	parityStudy + ".1.98": "cut short (its C-STORE broken off by an A-ABORT)",
	parityStudy + ".1.97": "refused (its C-STORE answered A900)",
}

// parityCommitted is the result each instance of parityHistory gets, in
// both modes (docs/pipeline.md#storage-commitment, conformance.md 3.2.4.2).
var parityCommitted = map[string]string{
	parityStudy + ".1.1":  "committed",
	parityStudy + ".1.9":  "failed 0110",
	parityStudy + ".1.99": "failed 0112",
	parityStudy + ".1.98": "failed 0112",
	parityStudy + ".1.97": "failed 0110",
}

// parityCommit gives the SCP the history of parityHistory's instances not
// sent by parityRounds, a C-STORE refused (its data set naming another
// instance) and one an A-ABORT cuts short, then, once stored has seen
// their records through (each mode's own wait), asks for Storage
// Commitment of every instance of parityHistory on an association
// released once the request is answered. Both modes then report on a new
// association to the AE's report address: local mode would report on the
// requestor's association while it is open, which the commitment
// function, outside the SCP's process, cannot (docs/pipeline.md#storage-commitment,
// an intended difference this test leaves out).
func parityCommit(t *testing.T, scp *scptest.SCP, stored func()) {
	t.Helper()
	if st := scptest.RefusedCStore(t, scp.DICOMAddr, "LOCAL_AE", "REMOTE_AE", pt.CTStorage, parityStudy+".1.97", parityStudy+".1.96"); st != 0xA900 {
		t.Fatalf("C-STORE of a data set naming another instance answered %04X, want A900", st)
	}
	scptest.AbortedCStore(t, scp.DICOMAddr, "LOCAL_AE", "REMOTE_AE", pt.CTStorage, parityStudy+".1.98", parityStudy+".1.98")
	stored()
	req := &commitment.Request{TransactionUID: parityTxn}
	for _, sop := range slices.Sorted(maps.Keys(parityHistory)) {
		req.Refs = append(req.Refs, commitment.Ref{SOPClassUID: pt.CTStorage, SOPInstanceUID: sop})
	}
	ds, err := commitment.AppendRequest(nil, req, dicomuid.ImplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	p := dicomnettest.DialParrot(t, scp.DICOMAddr)
	p.Associate(dicomnettest.CommitmentAssociateRQ("LOCAL_AE", "REMOTE_AE", dicomuid.ImplicitVRLittleEndian))
	p.SendMessage(5, dimse.NewNActionRQ(1, dicomuid.StorageCommitment, dicomuid.StorageCommitmentInstance, 1), ds)
	if rsp := p.ExpectCommand(); rsp.CommandField != dimse.NActionRSP || rsp.Status != dimse.StatusSuccess {
		t.Fatalf("N-ACTION-RSP %+v", rsp)
	}
	p.SendPDU(&pdu.ReleaseRQ{})
	p.Expect(pdu.TypeReleaseRP)
}

// parityReport takes the Storage Commitment report on the association the
// reporter (local mode's worker, the commitment function) opens to the
// PACS's report address, answers it and returns the result by instance.
func parityReport(t *testing.T, report *dicomnettest.ParrotListener) map[string]string {
	t.Helper()
	peer := report.Accept()
	if peer == nil {
		t.FailNow()
	}
	peer.Timeout = 30 * time.Second // the wait for the instances never sent, then the evaluation
	rq := peer.AcceptAssociation(func(r pdu.RoleSelection) *pdu.RoleSelection { return &r })
	if rq.CallingAE != "REMOTE_AE" || rq.CalledAE != "LOCAL_AE" {
		t.Errorf("report association from %q to %q, want REMOTE_AE to LOCAL_AE", rq.CallingAE, rq.CalledAE)
	}
	cmd, ds := peer.ExpectMessage()
	res, err := commitment.ParseResult(bytes.NewReader(ds), rq.PresentationContexts[0].TransferSyntaxes[0])
	if err != nil {
		t.Fatal(err)
	}
	peer.SendMessage(1, dimse.NewNEventReportRSP(cmd, dimse.Status{}), nil)
	peer.Expect(pdu.TypeReleaseRQ)
	peer.SendPDU(&pdu.ReleaseRP{})
	if res.TransactionUID != parityTxn || cmd.EventTypeID != res.EventTypeID() {
		t.Errorf("report of transaction %q, event type %d; want %q, %d", res.TransactionUID, cmd.EventTypeID, parityTxn, res.EventTypeID())
	}
	out := map[string]string{}
	for _, r := range res.Committed {
		out[r.SOPInstanceUID] = "committed"
	}
	for _, f := range res.Failed {
		out[f.SOPInstanceUID] = fmt.Sprintf("failed %04X", f.Reason)
	}
	return out
}

// parityQuiet is both sides' quiet period.
const parityQuiet = "1s"

func awsParity(t *testing.T, rounds [][]string) observed {
	t.Helper()
	srv := s3test.NewServer(t, bucket)
	e := newEnvS3(t, parityQuiet, srv.URL)
	report := dicomnettest.ListenParrot(t)
	peers := "LOCAL_AE=" + report.Addr
	e.startFunction(e.rie, "commitment", "commitment", "AE_TITLE=REMOTE_AE", "COMMITMENT_WAIT_SECONDS=2", "COMMITMENT_REPORT_MINUTES=1",
		"COMMITMENT_PEERS="+peers)
	scp := scptest.Start(t, scptest.Options{
		NoStore: true,
		Args: []string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE", "--store", "s3://" + bucket, "--s3-path-style",
			"--commitment-peers", peers},
		Env: s3test.Env(t, srv.URL),
	})
	ctx := context.Background()
	seen := map[string]bool{}
	// feed waits for ends association ends (released or aborted) in all
	// and a key under each of prefixes, then hands the new objects and
	// association records to the functions, as the bucket's notifications
	// would, and returns the new keys under prefixes.
	feed := func(ends int, prefixes ...string) []string {
		t.Helper()
		var keys []string
		testenv.Eventually(t, "the association's records", func() bool {
			all, err := srv.Keys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			keys = all
			ended := 0
			fresh := map[string]bool{}
			for _, k := range all {
				if strings.HasPrefix(k, "audit/") && (strings.HasSuffix(k, "-released.json") || strings.HasSuffix(k, "-aborted.json")) {
					ended++
				}
				for _, p := range prefixes {
					if strings.HasPrefix(k, p) && !seen[k] {
						fresh[p] = true
					}
				}
			}
			return ended == ends && len(fresh) == len(prefixes)
		})
		var incoming, audit, other []string
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
			default:
				other = append(other, k)
			}
		}
		if len(incoming) > 0 {
			e.invokeBatch(t, "validate", sqsEvent(incoming...))
		}
		if len(audit) > 0 {
			e.invokeBatch(t, "audit", sqsEvent(audit...))
		}
		return other
	}
	for i, files := range rounds {
		args := append([]string{"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", "--no-halt", scp.Host(), scp.Port()}, files...)
		if r := dcmtk.Run(t, 2*time.Minute, "dcmsend", args...); r.Err != nil {
			t.Fatalf("dcmsend: %v\n%s", r.Err, r.Output)
		}
		// Every association's released record is written, and with it
		// every record of its transfers.
		feed(i + 1)
		time.Sleep(1100 * time.Millisecond) // the quiet period
		var out map[string]int
		e.invoke(t, "notify", map[string]any{"source": "aws.events", "detail-type": "Scheduled Event"}, &out)
	}
	// The refused C-STORE's association released, the cut one's aborted,
	// then the request's released beside its document.
	parityCommit(t, scp, func() { feed(len(rounds) + 2) })
	requests := feed(len(rounds)+3, "commitment/requests/")
	done := make(chan error, 1)
	go func() {
		var notes []string
		for _, k := range requests {
			notes = append(notes, s3Notification(k, 1))
		}
		var resp events.SQSEventResponse
		err := e.fns["commitment"].Invoke(ctx, sqsEvent(notes...), &resp)
		if err == nil && len(resp.BatchItemFailures) != 0 {
			err = fmt.Errorf("failures %v", failures(resp))
		}
		done <- err
	}()
	committed := parityReport(t, report)
	if err := <-done; err != nil {
		t.Fatalf("commitment: %v", err)
	}
	var sent []paritySent
	var envelopes []string
	for _, ev := range e.events.All() {
		sent = append(sent, paritySent{DetailType: ev.DetailType, Resources: ev.Resources, Detail: json.RawMessage(ev.Detail)})
		envelopes = append(envelopes, parityShape(eventBridgeEnvelope, "0", ev.Source))
	}
	records := awsAuditRecords(t, e)
	// Pointers are s3:// URIs, resources ARNs (docs/pipeline.md#subscribing).
	o := collect(t, []string{"s3://" + bucket + "/", "arn:aws:s3:::" + bucket + "/"}, sent, records, e.index, e.audit, func(key string) ([]byte, error) {
		b, _, err := srv.Object(key)
		return b, err
	})
	o.Commitment, o.Envelopes = committed, sortedCopy(envelopes)
	return o
}

// eventBridgeEnvelope are the fields of the envelope EventBridge delivers
// an event in (docs/pipeline.md#subscribing; the capture holds PutEvents'
// entries, which EventBridge wraps so).
var eventBridgeEnvelope = []string{"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}

// parityShape is an envelope's shape: its fields, its version and its
// source (local mode's account and region are placeholders, all of
// EventBridge's fields there: docs/pipeline.md#subscribing).
func parityShape(fields []string, version, source string) string {
	return fmt.Sprintf("fields %v, version %q, source %q", sortedCopy(fields), version, source)
}

// sortedCopy is s sorted, not s.
func sortedCopy(s []string) []string {
	return slices.Sorted(slices.Values(s))
}

// awsAuditRecords are every record of the audit table, read whole (the
// byCallingAe index projects no patient data, so a query by AE reads
// records short of what local mode's gives).
func awsAuditRecords(t *testing.T, e *env) []pipeline.AuditRecord {
	t.Helper()
	var out []pipeline.AuditRecord
	pages := dynamodb.NewScanPaginator(e.ddb, &dynamodb.ScanInput{TableName: aws.String(auditTable)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, item := range page.Items {
			rec, ok, err := awsadapters.DecodeAuditItem(item)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				out = append(out, rec)
			}
		}
	}
	return out
}

func localParity(t *testing.T, rounds [][]string) observed {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	report := dicomnettest.ListenParrot(t)
	hook := &parityHook{}
	hooks := httptest.NewServer(hook)
	t.Cleanup(hooks.Close)
	scp := scptest.Start(t, scptest.Options{
		NoStore: true,
		Args: []string{"--local", "--data-dir", dataDir, "--portal-listen", "127.0.0.1:0", "--ae-title", "REMOTE_AE",
			"--calling-aes", "LOCAL_AE", "--quiet-period", parityQuiet, "--event-patient-data", "id",
			"--commitment-peers", "LOCAL_AE=" + report.Addr, "--commitment-wait", "2s", "--webhook", hooks.URL + "/events"},
	})
	caughtUp := func() {
		t.Helper()
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
	for _, files := range rounds {
		args := append([]string{"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", "--no-halt", scp.Host(), scp.Port()}, files...)
		if r := dcmtk.Run(t, 2*time.Minute, "dcmsend", args...); r.Err != nil {
			t.Fatalf("dcmsend: %v\n%s", r.Err, r.Output)
		}
		caughtUp()
	}
	parityCommit(t, scp, func() {
		testenv.Eventually(t, "the refused and the cut C-STORE in the audit trail", func() bool {
			var page struct{ Records []pipeline.AuditRecord }
			portalJSON(t, scp, "/api/audit?outcome=store-failed&callingAe=LOCAL_AE", &page)
			return len(page.Records) == 2
		})
	})
	committed := parityReport(t, report)
	logPath := filepath.Join(dataDir, "events.log")
	testenv.Eventually(t, "Storage Commitment Completed in events.log and every event at the webhook", func() bool {
		logged := localstoretest.EventsLog(t, logPath)
		return slices.ContainsFunc(logged, func(ev localstoretest.LoggedEvent) bool {
			return ev.DetailType == pipeline.DetailTypeCommitmentCompleted
		}) && hook.count() == len(logged)
	})
	caughtUp()
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
	logged := localstoretest.EventsLog(t, logPath)
	var sent []paritySent
	for _, ev := range logged {
		sent = append(sent, paritySent{DetailType: ev.DetailType, Resources: ev.Resources, Detail: ev.Detail})
	}
	webhooks, envelopes := hook.received(t, logged)
	records := queryAll(t, db.AuditStore(), pipeline.AuditQuery{CallingAE: "LOCAL_AE"})
	// Pointers and resources are the portal's URLs.
	bases := []string{portal}
	document := func(key string) ([]byte, error) {
		if strings.HasPrefix(key, "commitment/") { // files beside the objects, not the database's documents
			return os.ReadFile(filepath.Join(dataDir, "objects", filepath.FromSlash(key)))
		}
		body, _, err := db.Document(ctx, key)
		return body, err
	}
	o := collect(t, bases, sent, records, db.IndexStore(), db.AuditStore(), document)
	o.Webhooks = collect(t, bases, webhooks, nil, db.IndexStore(), db.AuditStore(), document).Events
	o.Commitment, o.Envelopes = committed, envelopes
	return o
}

// parityHook is a webhook receiver: it takes every POST (2xx), the first
// of each event id kept (delivery is at least once).
type parityHook struct {
	mu     sync.Mutex
	bodies map[string][]byte // by X-Event-Id
	order  []string
	errs   []string
}

func (h *parityHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bodies == nil {
		h.bodies = map[string][]byte{}
	}
	id := r.Header.Get("X-Event-Id")
	if id == "" || r.Method != http.MethodPost {
		h.errs = append(h.errs, fmt.Sprintf("%s without X-Event-Id", r.Method))
	}
	if _, ok := h.bodies[id]; !ok {
		h.bodies[id] = b
		h.order = append(h.order, id)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *parityHook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.order)
}

// received returns the events the webhook took and their envelopes'
// shapes (parityShape), sorted, checking each against the line of
// events.log of its id: the same envelope, which the line leads with its
// outbox and seq, its id the detail's eventId and the X-Event-Id header's
// (docs/local-mode.md).
func (h *parityHook) received(t *testing.T, logged []localstoretest.LoggedEvent) ([]paritySent, []string) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.errs {
		t.Error("webhook: " + e)
	}
	lines := map[string]json.RawMessage{}
	for _, ev := range logged {
		lines[ev.ID] = ev.Line
	}
	var sent []paritySent
	var shapes []string
	for _, id := range h.order {
		body := h.bodies[id]
		var envelope map[string]json.RawMessage
		if err := json.Unmarshal(body, &envelope); err != nil {
			t.Fatalf("webhook body: %v", err)
		}
		var ev paritySent
		var head struct {
			Version, ID, Source string
		}
		var detail struct {
			EventID string `json:"eventId"`
		}
		for _, err := range []error{json.Unmarshal(body, &ev), json.Unmarshal(body, &head), json.Unmarshal(ev.Detail, &detail)} {
			if err != nil {
				t.Fatalf("webhook body: %v", err)
			}
		}
		if head.ID != id || detail.EventID != id {
			t.Errorf("webhook event: id %q, detail's eventId %q, X-Event-Id %q: want one id", head.ID, detail.EventID, id)
		}
		var line map[string]json.RawMessage
		if err := json.Unmarshal(lines[id], &line); err != nil {
			t.Errorf("webhook event %s not in events.log: %v", id, err)
		}
		delete(line, "outbox")
		delete(line, "seq")
		if d := cmp.Diff(line, envelope); d != "" {
			t.Errorf("webhook event %s differs from its line in events.log, less its outbox and seq (-log +webhook):\n%s", id, d)
		}
		sent = append(sent, ev)
		shapes = append(shapes, parityShape(slices.Collect(maps.Keys(envelope)), head.Version, head.Source))
	}
	return sent, sortedCopy(shapes)
}

// paritySent is an event as a subscriber receives it, in either mode.
type paritySent struct {
	DetailType string          `json:"detail-type"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
}

// collect reads one deployment's answers through the pipeline's ports.
func collect(t *testing.T, bases []string, sent []paritySent, records []pipeline.AuditRecord, index pipeline.IndexStore,
	audit pipeline.AuditStore, document func(key string) ([]byte, error)) observed {
	t.Helper()
	ctx := context.Background()
	o := observed{Documents: map[string]any{}, Studies: map[string]any{}, Audit: map[string][]any{}}
	studies := map[string]bool{}
	var sops []string // of the instances the events name
	// Each event the deployment really emitted holds to its published
	// schema, closed to properties it does not list (pt.StrictSchemas: a
	// field emitted but undeclared fails, as the pipeline's own tests have
	// it for the events of its fakes).
	strict := pt.StrictSchemas(t)
	seen := map[string]bool{}
	for _, ev := range sent {
		seen[ev.DetailType] = true
		var doc any
		if err := json.Unmarshal(ev.Detail, &doc); err != nil {
			t.Fatal(err)
		}
		if sch, ok := strict[ev.DetailType]; !ok {
			t.Errorf("an event of detail-type %q, which no schema describes", ev.DetailType)
		} else if err := sch.Validate(doc); err != nil {
			t.Errorf("a %s event fails its schema: %v", ev.DetailType, err)
		}
		var d struct {
			StudyInstanceUID string `json:"studyInstanceUid"`
			SOPInstanceUID   string `json:"sopInstanceUid"`
			FindingsKey      string `json:"findingsKey"` // a rejected instance's
			ContentIdentity  string `json:"sha256"`
			TransactionUID   string `json:"transactionUid"` // Storage Commitment's
			RequestURI       string `json:"requestUri"`
			ResultURI        string `json:"resultUri"`
		}
		if err := json.Unmarshal(ev.Detail, &d); err != nil {
			t.Fatal(err)
		}
		for name, uri := range map[string]string{"request": d.RequestURI, "result": d.ResultURI} {
			if uri == "" {
				continue
			}
			key := uri
			for _, base := range bases {
				key = strings.TrimPrefix(key, base)
			}
			b, err := document(key)
			if err != nil {
				t.Fatalf("Storage Commitment %s of %s: %v", name, d.TransactionUID, err)
			}
			o.Documents[fmt.Sprintf("%s commitment %s", d.TransactionUID, name)] = parityValue(t, bases, b)
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
		var recs []any
		for _, r := range queryAll(t, audit, pipeline.AuditQuery{SOPInstanceUID: sop}) {
			raw, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, parityValue(t, bases, raw))
		}
		slices.SortFunc(recs, func(a, b any) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
		o.Audit[sop] = recs
	}
	for _, r := range records {
		if r.CallingAE != "LOCAL_AE" || slices.Contains(sops, r.SOPInstanceUID) {
			continue
		}
		raw, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		o.Associations = append(o.Associations, parityValue(t, bases, raw))
	}
	slices.SortFunc(o.Associations, func(a, b any) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	// Every detail-type was emitted, so each was held to its schema.
	for _, dt := range pipeline.DetailTypes {
		if !seen[dt] {
			t.Errorf("no %s event emitted: its schema went unchecked", dt)
		}
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
	// Storage Commitment's times: the evaluation and the transaction's end.
	"evaluatedAt": true, "completedAt": true,
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

// parityRequestKey is a Storage Commitment request's key, named after its
// association and message id (a result names its request by it).
var parityRequestKey = regexp.MustCompile(`^commitment/requests/\d{4}/\d{2}/\d{2}/(.+)-\d+\.json$`)

// parityCommitmentID is a Storage Commitment audit record's id: its
// transaction's, then a digest of its request's key (parityRequestKey),
// which names the association, then the step.
var parityCommitmentID = regexp.MustCompile(`^(commitment:[0-9a-f]+:)[0-9a-f]+(:[a-z-]+)$`)

// parityValue decodes raw, cuts bases (the deployment's URI bases) and the
// association ids it names (an SCP record's id is made of its
// association's, a Storage Commitment request's key too) from its strings,
// and a Storage Commitment record's digest of its request's key, and
// blanks the volatile fields; an id that names an instance, a patient, a
// study or a transaction is kept.
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
				if s, ok := x.(string); ok && k == "requestKey" {
					if m := parityRequestKey.FindStringSubmatch(s); m != nil {
						associations = append(associations, m[1])
					}
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
			s = parityCommitmentID.ReplaceAllString(s, "${1}<request>${2}")
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
// or the audit source normalise alike, and so do Storage Commitment's ids
// and keys that name the request's association; two that differ in
// anything else (an audit record's patient or study, its coded event, its
// id naming its instance or transaction, the request's message) do not.
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
	// A Storage Commitment record's id names its transaction, by digest, and
	// its request, by a digest of the request's key.
	commitmentID := func(txn, request, step string) func(r map[string]any) {
		return func(r map[string]any) { r["id"] = "commitment:" + txn + ":" + request + ":" + step }
	}
	// A result names its request by its key, which names its association
	// and message id.
	requestKey := func(association string, message int) func(r map[string]any) {
		return func(r map[string]any) {
			delete(r, "associationId")
			r["requestKey"] = fmt.Sprintf("commitment/requests/2026/12/07/%s-%d.json", association, message)
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
		{"a commitment record's id naming its request", commitmentID("0f1e", "a1b2", "reported"), commitmentID("0f1e", "c3d4", "reported"), true},
		{"a commitment record's id naming another transaction", commitmentID("0f1e", "a1b2", "reported"), commitmentID("0f1f", "a1b2", "reported"), false},
		{"a commitment record's id naming another step", commitmentID("0f1e", "a1b2", "reported"), commitmentID("0f1e", "a1b2", "result"), false},
		{"a result naming its request by its association", requestKey("3d870f18-6", 1), requestKey("a62be4d3-6", 1), true},
		{"a result naming another request", requestKey("3d870f18-6", 1), requestKey("a62be4d3-6", 2), false},
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
