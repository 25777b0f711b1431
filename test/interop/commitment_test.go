package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore/localstoretest"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/logleak"
	"github.com/dicom-ingest/dicom-ingest/test/internal/orthanc"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

const scStudy = "1.2.826.0.1.3680043.10.7700"

// scInstances are three CT instances of one study.
func scInstances() []pipelinetest.Instance {
	var out []pipelinetest.Instance
	for i := 1; i <= 3; i++ {
		out = append(out, pipelinetest.Instance{StudyUID: scStudy, SeriesUID: scStudy + ".1", SOPUID: fmt.Sprintf("%s.1.%d", scStudy, i),
			PatientID: "PID-SC", PatientName: "Commit^Test", Rows: 16, Columns: 16, SourceAE: "ORTHANC"})
	}
	return out
}

// uploadSCInstances puts scInstances into pacs and returns their Orthanc ids and the references a commitment
// request names them by.
func uploadSCInstances(t *testing.T, pacs *orthanc.Orthanc) (ids []string, refs []orthanc.Instance) {
	t.Helper()
	for _, in := range scInstances() {
		ids = append(ids, pacs.Upload(t, in.Build()))
		refs = append(refs, orthanc.Instance{SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: in.SOPUID})
	}
	return ids, refs
}

// awaitEvent polls the event log until an event of the type satisfying ok is there.
func awaitEvent(t *testing.T, dataDir, detailType string, within time.Duration, ok func(json.RawMessage) bool) localstoretest.LoggedEvent {
	t.Helper()
	var found localstoretest.LoggedEvent
	testenv.EventuallyWithin(t, within, fmt.Sprintf("a %q event", detailType), func() bool {
		for _, e := range localstoretest.EventsLog(t, filepath.Join(dataDir, "events.log")) {
			if e.DetailType == detailType && ok(e.Detail) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// TestStorageCommitmentWithOrthanc: Orthanc, as the site's PACS, sends a study to scp-task --local by
// C-STORE and asks for Storage Commitment through its REST API. Orthanc releases the association right after
// the N-ACTION-RSP, so every report comes on an association scp-task opens to it (SCP role): Success for the
// study, announced within seconds as Study Received completed by commitment although the quiet period is ten
// minutes; a request naming an instance never sent beside one sent gets Failure, reason 0112 (274), once the
// wait is over; one naming only instances it never sent, or whose one C-STORE the association's end cut short
// (nothing stored, nothing answered), fails each 0112 (the cut one failed 0110, a processing failure of ours);
// one naming a sent instance under another class fails it 0119; one whose C-STORE was refused before its handler
// (another class than its context's) and then cut short fails 0110, its record naming the refusal, and 0112
// once a later C-STORE of it was only cut short (its newest transfer decides: judgeTable). The audit trail has
// each request, its result and its report on a new association, and the cut C-STOREs not answered.
func TestStorageCommitmentWithOrthanc(t *testing.T) {
	orthanc.Require(t)
	scpPort := testenv.FreePort(t)
	pacs := orthanc.Start(t, "ORTHANC", map[string]orthanc.Modality{"ingest": {AET: "INGEST", Host: "127.0.0.1", Port: scpPort}})
	dataDir := t.TempDir()
	scp := scptest.Start(t, scptest.Options{NoStore: true, Args: []string{
		"--local", "--data-dir", dataDir, "--portal-listen", "127.0.0.1:0", "--listen", "127.0.0.1:" + strconv.Itoa(scpPort),
		"--ae-title", "INGEST", "--calling-aes", "ORTHANC", "--commitment-peers", "ORTHANC=" + pacs.DICOMAddr,
		"--quiet-period", "10m", "--commitment-wait", "5s",
	}})

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("scp-task logs:\n%s", scp.Logs())
		}
	})
	ids, refs := uploadSCInstances(t, pacs)
	pacs.Store(t, "ingest", ids...)

	asked := time.Now()
	txn := pacs.RequestCommitment(t, "ingest", refs...)
	got := pacs.AwaitCommitment(t, txn, 30*time.Second)
	if got.Status != "Success" || len(got.Success) != 3 || len(got.Failures) != 0 || got.RemoteAET != "INGEST" {
		t.Fatalf("commitment %+v, want Success for the 3 instances from INGEST", got)
	}
	var study pipeline.StudyDetailEvent
	awaitEvent(t, dataDir, pipeline.DetailTypeStudyReceived, 10*time.Second, func(d json.RawMessage) bool {
		return json.Unmarshal(d, &study) == nil && study.StudyInstanceUID == scStudy
	})
	if study.Completion != pipeline.CompletionStorageCommitment || study.InstanceCount != 3 {
		t.Errorf("Study Received %+v, want 3 instances completed by storage commitment", study)
	}
	t.Logf("Study Received %v after the commitment request", time.Since(asked).Round(time.Millisecond))

	never := orthanc.Instance{SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: scStudy + ".1.99"}
	txn2 := pacs.RequestCommitment(t, "ingest", refs[0], never)
	got = pacs.AwaitCommitment(t, txn2, 30*time.Second)
	if got.Status != "Failure" || len(got.Success) != 1 || got.Success[0] != refs[0] ||
		len(got.Failures) != 1 || got.Failures[0].Instance != never || got.Failures[0].FailureReason != 0x0112 {
		t.Fatalf("commitment %+v, want Failure with %s failed 274 (0112)", got, never.SOPInstanceUID)
	}

	// Instances it never sent, and one whose C-STORE the association's end cut short: a sender of ORTHANC's
	// AE title breaks off its data set with an A-ABORT (as a PACS stopped or its link lost mid-object).
	cut := orthanc.Instance{SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: scStudy + ".1.98"}
	scptest.AbortedCStore(t, scp.DICOMAddr, "ORTHANC", "INGEST", cut.SOPClassUID, cut.SOPInstanceUID, cut.SOPInstanceUID)
	testenv.Eventually(t, "the cut-short C-STORE's store-failed record, not answered", func() bool {
		recs := portalAudit(t, scp.PortalAddr, associationaudit.EventStoreFailed)
		return len(recs) == 1 && recs[0].NotAnswered && recs[0].SOPInstanceUID == cut.SOPInstanceUID
	})
	neverOnly := []orthanc.Instance{never, {SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: scStudy + ".1.97"}, cut}
	txn3 := pacs.RequestCommitment(t, "ingest", neverOnly...)
	got = pacs.AwaitCommitment(t, txn3, 30*time.Second)
	if got.Status != "Failure" || len(got.Success) != 0 || len(got.Failures) != len(neverOnly) {
		t.Fatalf("commitment %+v, want Failure of the %d instances", got, len(neverOnly))
	}
	for _, f := range got.Failures {
		if !slices.Contains(neverOnly, f.Instance) || f.FailureReason != 0x0112 {
			t.Errorf("failure %+v, want each of %v failed 274 (0112)", f, neverOnly)
		}
	}
	var txnsCut []string
	otherClass := orthanc.Instance{SOPClassUID: "1.2.840.10008.5.1.4.1.1.4", SOPInstanceUID: refs[1].SOPInstanceUID} // MR, sent as CT
	txn4 := pacs.RequestCommitment(t, "ingest", otherClass, refs[2])
	got = pacs.AwaitCommitment(t, txn4, 30*time.Second)
	if got.Status != "Failure" || len(got.Success) != 1 || got.Success[0] != refs[2] ||
		len(got.Failures) != 1 || got.Failures[0].Instance != otherClass || got.Failures[0].FailureReason != 0x0119 {
		t.Fatalf("commitment %+v, want Failure with the instance asked under another class failed 281 (0119)", got)
	}
	// A C-STORE refused before its handler ran (MR Image Storage on the CT context: 0122) and then cut short
	// by the sender's A-ABORT: its record says both, and it was refused (0110), not merely cut short. A later
	// C-STORE of it that the association's end cut short is its newest transfer: 0112, send it again (the
	// refusal before it decided 0110 too). Then one the SCP's handler refused once it had read the header (its
	// data set names another instance: A900) before the abort: refused too, 0110 again.
	refusedCut := orthanc.Instance{SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: scStudy + ".1.96"}
	otherInstance := scStudy + ".1.95"
	for i, tt := range []struct {
		class, named string // the command's class, the instance its data set names
		says         string
		want         int
	}{
		{"1.2.840.10008.5.1.4.1.1.4", refusedCut.SOPInstanceUID, dimse.RefusedBeforeEnd + "0122: SOP class differs from the presentation context", 0x0110},
		{pipelinetest.CTStorage, refusedCut.SOPInstanceUID, "dicomnet: data set incomplete", 0x0112},
		{pipelinetest.CTStorage, otherInstance, dimse.RefusedBeforeEnd + "A900: dimse: status 0xA900", 0x0110},
	} {
		scptest.AbortedCStore(t, scp.DICOMAddr, "ORTHANC", "INGEST", tt.class, refusedCut.SOPInstanceUID, tt.named)
		testenv.Eventually(t, "the C-STORE's store-failed record, not answered", func() bool {
			recs := portalAudit(t, scp.PortalAddr, associationaudit.EventStoreFailed)
			n := 0
			for _, r := range recs {
				if r.SOPInstanceUID == refusedCut.SOPInstanceUID {
					n++
				}
			}
			return n == i+1 && slices.ContainsFunc(recs, func(r pipeline.AuditRecord) bool {
				return r.SOPInstanceUID == refusedCut.SOPInstanceUID && r.NotAnswered && strings.HasPrefix(r.Reason, pipeline.StoreNotAnsweredReason) &&
					strings.Contains(r.Reason, tt.says) && r.CutShort() == (tt.want == 0x0112)
			})
		})
		txn := pacs.RequestCommitment(t, "ingest", refusedCut)
		got := pacs.AwaitCommitment(t, txn, 30*time.Second)
		if got.Status != "Failure" || len(got.Failures) != 1 || got.Failures[0].Instance != refusedCut || got.Failures[0].FailureReason != tt.want {
			t.Fatalf("commitment %+v, want Failure with %s failed %04X", got, refusedCut.SOPInstanceUID, tt.want)
		}
		txnsCut = append(txnsCut, txn)
	}
	txns := append([]string{txn, txn2, txn3, txn4}, txnsCut...)

	// Every transaction is announced, the event log written by the outbox behind them.
	awaitEvent(t, dataDir, pipeline.DetailTypeCommitmentCompleted, 10*time.Second, func(d json.RawMessage) bool {
		var c pipeline.CommitmentCompletedDetail
		return json.Unmarshal(d, &c) == nil && c.TransactionUID == txns[len(txns)-1]
	})
	var done []pipeline.CommitmentCompletedDetail
	for _, e := range localstoretest.EventsLog(t, filepath.Join(dataDir, "events.log")) {
		if e.DetailType == pipeline.DetailTypeCommitmentCompleted {
			var d pipeline.CommitmentCompletedDetail
			if err := json.Unmarshal(e.Detail, &d); err != nil {
				t.Fatal(err)
			}
			done = append(done, d)
		}
	}
	if len(done) != len(txns) || done[0].TransactionUID != txn || done[0].Outcome != "committed" || !done[0].Report.Delivered ||
		done[0].Report.Association != "new" || done[1].Outcome != "failures" || !slices.Equal(done[1].Studies, []string{scStudy}) ||
		len(done[1].Failures) != 1 || done[1].Failures[0].FailureReason != "0112" {
		t.Errorf("Storage Commitment Completed events %+v", done)
	}
	for i, d := range done {
		if i < len(txns) && (d.TransactionUID != txns[i] || !d.Report.Delivered || d.Report.Association != "new") {
			t.Errorf("Storage Commitment Completed %d: %+v, want transaction %d delivered on a new association", i, d, i)
		}
	}
	// The audit trail has each request, its result and its report, the report on a new association (Orthanc
	// closed the request's), each record naming its transaction.
	for _, step := range []struct{ outcome, reason string }{
		{pipeline.OutcomeCommitmentRequested, "N-ACTION for "},
		{pipeline.OutcomeCommitted + "|" + pipeline.OutcomeCommitmentFailures, ""},
		{pipeline.OutcomeCommitmentReported, "N-EVENT-REPORT answered 0000 on a new association to the requesting AE"},
	} {
		var recs []pipeline.AuditRecord
		for outcome := range strings.SplitSeq(step.outcome, "|") {
			recs = append(recs, portalAudit(t, scp.PortalAddr, outcome)...)
		}
		var named []string
		for _, r := range recs {
			if !strings.HasPrefix(r.Reason, step.reason) || r.CallingAE != "ORTHANC" {
				t.Errorf("%s record %q from %q", r.Outcome, r.Reason, r.CallingAE)
			}
			for _, o := range r.ParticipantObjects {
				if slices.Contains(txns, o.ID) {
					named = append(named, o.ID)
				}
			}
		}
		slices.Sort(named)
		if want := slices.Sorted(slices.Values(txns)); !slices.Equal(named, want) {
			t.Errorf("%s records name transactions %v, want each of %v once", step.outcome, named, want)
		}
	}
	// A subscriber on this machine fetches what the events point at through
	// the portal: the request (requestUri) answered 404, its link dead.
	for _, d := range done {
		for _, u := range []string{d.RequestURI, d.ResultURI} {
			resp, err := http.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				TransactionUID string `json:"transactionUid"`
				Result         struct {
					TransactionUID string `json:"transactionUid"`
				} `json:"result"`
			}
			err = json.NewDecoder(resp.Body).Decode(&doc)
			if cerr := resp.Body.Close(); err == nil {
				err = cerr
			}
			if resp.StatusCode != http.StatusOK || err != nil || doc.TransactionUID+doc.Result.TransactionUID != d.TransactionUID {
				t.Errorf("GET %s: %s, %v, the document of transaction %q", u, resp.Status, err, doc.TransactionUID+doc.Result.TransactionUID)
			}
		}
	}
	checkLogs(t, scp, append(append([]string{txn, txn2, txn3, txn4, never.SOPInstanceUID, cut.SOPInstanceUID, scStudy + ".1.97", refusedCut.SOPInstanceUID, otherInstance}, txnsCut...), scUIDs()...)...)
}

// scUIDs are the UIDs of scInstances.
func scUIDs() []string {
	out := []string{scStudy, scStudy + ".1"}
	for _, in := range scInstances() {
		out = append(out, in.SOPUID)
	}
	return out
}

// checkLogs fails the test for any line of scp-task's log holding one of the UIDs (Transaction UIDs included) or
// anything shaped like one: the commitment paths name transactions by digest and requests by association and
// message id.
func checkLogs(t *testing.T, scp *scptest.SCP, uids ...string) {
	t.Helper()
	var ids logleak.Identifiers
	for _, u := range uids {
		ids.AddUID(u)
	}
	ids.Check(t, "scp-task --local", scp.Logs())
}

func nAction(t *testing.T, p *dicomnettest.Parrot, msgID uint16, req *commitment.Request) *dimse.Command {
	t.Helper()
	ds, err := commitment.AppendRequest(nil, req, dicomuid.ImplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	p.SendMessage(5, dimse.NewNActionRQ(msgID, dicomuid.StorageCommitment, dicomuid.StorageCommitmentInstance, 1), ds)
	return p.ExpectCommand()
}

// TestStorageCommitmentRawPDU drives scp-task --local's Storage Commitment with a scripted peer for what a PACS
// like Orthanc never does: keep its association open for the report, send a request that is not one, name a
// class we do not store, and be unreachable for the report.
func TestStorageCommitmentRawPDU(t *testing.T) {
	if testing.Short() {
		t.Skip("starts scp-task")
	}
	report, chatty := dicomnettest.ListenParrot(t), dicomnettest.ListenParrot(t)
	closed := testenv.FreePort(t) // nothing listens there
	dataDir := t.TempDir()
	scp := scptest.Start(t, scptest.Options{NoStore: true, Args: []string{
		"--local", "--data-dir", dataDir, "--portal-listen", "127.0.0.1:0", "--ae-title", "INGEST",
		"--calling-aes", "PACS,UNREACHABLE,NOADDRESS,CHATTY",
		"--commitment-peers", "PACS=" + report.Addr + ",UNREACHABLE=127.0.0.1:" + strconv.Itoa(closed) + ",CHATTY=" + chatty.Addr,
		"--quiet-period", "10m", "--commitment-wait", "2s", "--commitment-report-for", "3s",
	}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("scp-task logs:\n%s", scp.Logs())
		}
	})
	txn := func(n int) string { return fmt.Sprintf("1.2.826.0.1.3680043.10.7701.%d", n) }

	t.Run("report on the open association, unknown class failed 0122", func(t *testing.T) {
		p := dicomnettest.DialParrot(t, scp.DICOMAddr)
		p.Associate(dicomnettest.CommitmentAssociateRQ("PACS", "INGEST", dicomuid.ImplicitVRLittleEndian))
		req := &commitment.Request{TransactionUID: txn(1), Refs: []commitment.Ref{{SOPClassUID: "1.2.840.10008.5.1.4.31", SOPInstanceUID: "1.2.3.4.5"}}}
		if rsp := nAction(t, p, 1, req); rsp.CommandField != dimse.NActionRSP || rsp.Status != dimse.StatusSuccess {
			t.Fatalf("N-ACTION-RSP %+v", rsp)
		}
		p.Timeout = 15 * time.Second
		cmd, ds := p.ExpectMessage()
		if cmd.CommandField != dimse.NEventReportRQ || cmd.EventTypeID != commitment.EventFailures {
			t.Fatalf("request on the open association %+v", cmd)
		}
		res, err := commitment.ParseResult(bytes.NewReader(ds), dicomuid.ImplicitVRLittleEndian)
		if err != nil {
			t.Fatal(err)
		}
		if res.TransactionUID != txn(1) || len(res.Failed) != 1 || res.Failed[0].Reason != commitment.ReasonSOPClassNotSupported {
			t.Errorf("result %+v, want the instance failed 0122", res)
		}
		p.SendMessage(5, dimse.NewNEventReportRSP(cmd, dimse.Status{}), nil)
		p.SendPDU(&pdu.ReleaseRQ{})
		p.Expect(pdu.TypeReleaseRP)
		awaitEvent(t, dataDir, pipeline.DetailTypeCommitmentCompleted, 10*time.Second, func(d json.RawMessage) bool {
			var c pipeline.CommitmentCompletedDetail
			return json.Unmarshal(d, &c) == nil && c.TransactionUID == txn(1) && c.Report.Association == "same"
		})
	})

	t.Run("not a request", func(t *testing.T) {
		p := dicomnettest.DialParrot(t, scp.DICOMAddr)
		p.Associate(dicomnettest.CommitmentAssociateRQ("PACS", "INGEST", dicomuid.ImplicitVRLittleEndian))
		if rsp := nAction(t, p, 1, &commitment.Request{TransactionUID: txn(2)}); rsp.Status != dimse.StatusInvalidArgumentValue {
			t.Errorf("empty Referenced SOP Sequence: N-ACTION-RSP %+v, want 0115", rsp)
		}
		p.SendMessage(5, dimse.NewNActionRQ(2, dicomuid.StorageCommitment, dicomuid.StorageCommitmentInstance, 1), []byte{0x08, 0x00, 0x95})
		if rsp := p.ExpectCommand(); rsp.Status != dimse.StatusInvalidArgumentValue {
			t.Errorf("a data set cut short: N-ACTION-RSP %+v, want 0115", rsp)
		}
		p.SendMessage(5, dimse.NewNActionRQ(3, "1.2.840.10008.5.1.4.31", dicomuid.StorageCommitmentInstance, 1), []byte{})
		if rsp := p.ExpectCommand(); rsp.Status != dimse.StatusNoSuchSOPClass {
			t.Errorf("another requested class: N-ACTION-RSP %+v, want 0118", rsp)
		}
		p.SendPDU(&pdu.ReleaseRQ{})
		p.Expect(pdu.TypeReleaseRP)
		q := dicomnettest.DialParrot(t, scp.DICOMAddr)
		q.Associate(dicomnettest.CommitmentAssociateRQ("NOADDRESS", "INGEST", dicomuid.ImplicitVRLittleEndian))
		req := &commitment.Request{TransactionUID: txn(3), Refs: []commitment.Ref{{SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: "1.2.3.4.5"}}}
		if rsp := nAction(t, q, 1, req); rsp.Status != dimse.StatusNotAuthorized {
			t.Errorf("an AE title without a report address: N-ACTION-RSP %+v, want 0124", rsp)
		}
		// Each refusal is in the audit trail, as no transaction will be.
		portal := "http://" + scp.PortalAddr
		refused := func(callingAE string) []string {
			resp, err := http.Get(portal + "/api/audit?outcome=commitment-refused&callingAe=" + callingAE)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var page struct{ Records []struct{ Reason string } }
			if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, r := range page.Records {
				out = append(out, r.Reason[:min(len(r.Reason), len("N-ACTION status 0000"))])
			}
			slices.Sort(out)
			return out
		}
		want := []string{"N-ACTION status 0115", "N-ACTION status 0115", "N-ACTION status 0118"}
		testenv.Eventually(t, "the refusals logged for both called AE titles", func() bool {
			return slices.Equal(refused("PACS"), want) && slices.Equal(refused("NOADDRESS"), []string{"N-ACTION status 0124"})
		})
	})

	// An N-ACTION whose Action Information the peer's A-ABORT breaks off: answered nothing, and in the audit
	// trail beside the association's abort (it was in the abort's record alone, the request unseen). One
	// refused before then (another requested class) says so after the reader's error: the request was
	// malformed as well as cut short.
	for _, tt := range []struct {
		name, class, says string
	}{
		{"cut short", dicomuid.StorageCommitment, "dicomnet: data set incomplete"},
		{"refused, then cut short", pipelinetest.CTStorage,
			"; refused before the association ended, status 0118: Requested SOP Class UID differs from the presentation context"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := dicomnettest.DialParrot(t, scp.DICOMAddr)
			p.Associate(dicomnettest.CommitmentAssociateRQ("PACS", "INGEST", dicomuid.ImplicitVRLittleEndian))
			req := &commitment.Request{TransactionUID: txn(6), Refs: []commitment.Ref{{SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: "1.2.3.4.8"}}}
			ds, err := commitment.AppendRequest(nil, req, dicomuid.ImplicitVRLittleEndian)
			if err != nil {
				t.Fatal(err)
			}
			p.SendPDVs(dicomnettest.CommandPDV(5, dimse.NewNActionRQ(1, tt.class, dicomuid.StorageCommitmentInstance, 1)),
				dicomnettest.PDV(5, 0, ds[:len(ds)/2]))
			p.SendPDU(&pdu.Abort{})
			testenv.Eventually(t, "the cut-short N-ACTION's commitment-refused record, not answered", func() bool {
				return slices.ContainsFunc(portalAudit(t, scp.PortalAddr, associationaudit.EventCommitmentRefused), func(r pipeline.AuditRecord) bool {
					return r.NotAnswered && !r.ResponseNotSent && strings.HasPrefix(r.Reason, pipeline.ActionNotAnsweredReason) &&
						strings.Contains(r.Reason, tt.says) && r.CallingAE == "PACS"
				})
			})
		})
	}

	t.Run("association closed before the report", func(t *testing.T) {
		p := dicomnettest.DialParrot(t, scp.DICOMAddr)
		p.Associate(dicomnettest.CommitmentAssociateRQ("PACS", "INGEST", dicomuid.ImplicitVRLittleEndian))
		req := &commitment.Request{TransactionUID: txn(4), Refs: []commitment.Ref{{SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: "1.2.3.4.6"}}}
		if rsp := nAction(t, p, 1, req); rsp.Status != dimse.StatusSuccess {
			t.Fatalf("N-ACTION-RSP %+v", rsp)
		}
		p.SendPDU(&pdu.ReleaseRQ{})
		p.Expect(pdu.TypeReleaseRP)
		peer := report.Accept()
		if peer == nil {
			t.FailNow()
		}
		rq := peer.AcceptAssociation(func(r pdu.RoleSelection) *pdu.RoleSelection {
			if r.SCU != 0 || r.SCP != 1 {
				t.Errorf("role selection %+v, want SCU 0 SCP 1", r)
			}
			return &r
		})
		if rq.CallingAE != "INGEST" || rq.CalledAE != "PACS" {
			t.Errorf("report association from %q to %q", rq.CallingAE, rq.CalledAE)
		}
		cmd, ds := peer.ExpectMessage()
		res, err := commitment.ParseResult(bytes.NewReader(ds), rq.PresentationContexts[0].TransferSyntaxes[0])
		if err != nil {
			t.Fatal(err)
		}
		if res.TransactionUID != txn(4) || len(res.Failed) != 1 || res.Failed[0].Reason != commitment.ReasonNoSuchObjectInstance {
			t.Errorf("result %+v, want the instance never sent failed 0112", res)
		}
		peer.SendMessage(1, dimse.NewNEventReportRSP(cmd, dimse.Status{}), nil)
		peer.Expect(pdu.TypeReleaseRQ)
		peer.SendPDU(&pdu.ReleaseRP{})
	})

	t.Run("report peer unreachable", func(t *testing.T) {
		p := dicomnettest.DialParrot(t, scp.DICOMAddr)
		p.Associate(dicomnettest.CommitmentAssociateRQ("UNREACHABLE", "INGEST", dicomuid.ImplicitVRLittleEndian))
		req := &commitment.Request{TransactionUID: txn(5), Refs: []commitment.Ref{{SOPClassUID: "1.2.840.10008.5.1.4.31", SOPInstanceUID: "1.2.3.4.7"}}}
		if rsp := nAction(t, p, 1, req); rsp.Status != dimse.StatusSuccess {
			t.Fatalf("N-ACTION-RSP %+v", rsp)
		}
		p.SendPDU(&pdu.ReleaseRQ{})
		p.Expect(pdu.TypeReleaseRP)
		// Retried until --commitment-report-for, then given up: announced as not delivered and logged for the alarm.
		var c pipeline.CommitmentCompletedDetail
		awaitEvent(t, dataDir, pipeline.DetailTypeCommitmentCompleted, 30*time.Second, func(d json.RawMessage) bool {
			return json.Unmarshal(d, &c) == nil && c.TransactionUID == txn(5)
		})
		if c.Report.Delivered || c.Report.Attempts < 1 {
			t.Errorf("report %+v, want undelivered", c.Report)
		}
		// Logged before the event; read from the log as it comes.
		scp.WaitLog(t, 10*time.Second, "an error for the undeliverable report", func(e map[string]any) bool {
			return e["msg"] == pipeline.UndeliverableLog && e["level"] == "ERROR"
		})
	})
	// A PACS that refuses the report in its own words (an Error Comment past LO's 64 characters, naming a person,
	// the report's UIDs, and 10 KB of text): first on the requestor's association, kept open, then on one we open at
	// --commitment-report-for's end. Given up, the undeliverable record says the status by number and meaning and that
	// the PACS commented it, and nothing of its text; neither does the audit feed's line of the record (none: the
	// trail only, docs/operations/audit-feed.md), nor any log line.
	t.Run("report refused with the PACS's own text", func(t *testing.T) {
		const name = "Zqxdoe^Jane"
		comment := dicomnettest.PeerComment(name, txn(7), "1.2.3.4.9")
		refuse := func(p *dicomnettest.Parrot, ctxID byte) {
			t.Helper()
			p.Timeout = 15 * time.Second
			cmd, _ := p.ExpectMessage()
			if cmd.CommandField != dimse.NEventReportRQ {
				t.Fatalf("request %+v, want the N-EVENT-REPORT", cmd)
			}
			p.SendResponseWithComment(ctxID, dimse.NewNEventReportRSP(cmd, dimse.Status{Code: dimse.StatusProcessingFailure}), comment)
		}
		p := dicomnettest.DialParrot(t, scp.DICOMAddr)
		p.Associate(dicomnettest.CommitmentAssociateRQ("CHATTY", "INGEST", dicomuid.ImplicitVRLittleEndian))
		req := &commitment.Request{TransactionUID: txn(7), Refs: []commitment.Ref{{SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: "1.2.3.4.9"}}}
		if rsp := nAction(t, p, 1, req); rsp.Status != dimse.StatusSuccess {
			t.Fatalf("N-ACTION-RSP %+v", rsp)
		}
		refuse(p, 5)
		p.SendPDU(&pdu.ReleaseRQ{})
		p.Expect(pdu.TypeReleaseRP)
		peer := chatty.Accept()
		if peer == nil {
			t.FailNow()
		}
		peer.AcceptAssociation(func(r pdu.RoleSelection) *pdu.RoleSelection { return &r })
		refuse(peer, 1)
		peer.Expect(pdu.TypeReleaseRQ)
		peer.SendPDU(&pdu.ReleaseRP{})

		scp.WaitLog(t, 15*time.Second, "the report given up", func(e map[string]any) bool {
			return e["msg"] == pipeline.UndeliverableLog && e["calling_ae"] == "CHATTY"
		})
		var rec pipeline.AuditRecord
		testenv.Eventually(t, "CHATTY's undeliverable record", func() bool {
			recs := portalAudit(t, scp.PortalAddr, pipeline.OutcomeCommitmentUndeliverable)
			i := slices.IndexFunc(recs, func(r pipeline.AuditRecord) bool { return r.CallingAE == "CHATTY" })
			if i >= 0 {
				rec = recs[i]
			}
			return i >= 0
		})
		if !strings.Contains(rec.Reason, "; last error: ") || !strings.Contains(rec.Reason, "status 0x0110 (Processing failure)") ||
			!strings.Contains(rec.Reason, "Error Comment") {
			t.Errorf("undeliverable record's reason %q: want the last error, the status by number and meaning, and that the PACS commented it", rec.Reason)
		}
		lines, err := auditfeed.FormatRecord(rec, auditfeed.Header{Hostname: "ingest"})
		if err != nil {
			t.Fatal(err)
		}
		logs := scp.Logs()
		for what, text := range map[string]string{"record's reason": rec.Reason, "audit feed's lines": string(bytes.Join(lines, nil)), "log": logs} {
			for _, peer := range []string{"Zqxdoe", "Jane", dicomnettest.PeerFiller, "rejected for"} {
				if strings.Contains(text, peer) {
					t.Errorf("the %s holds the PACS's text %q", what, peer)
				}
			}
		}
		var ids logleak.Identifiers
		ids.AddName(name)
		ids.AddUID(txn(7))
		ids.Check(t, "scp-task --local", logs)
	})
	checkLogs(t, scp, txn(1), txn(2), txn(3), txn(4), txn(5), txn(6), txn(7), "1.2.3.4.5", "1.2.3.4.6", "1.2.3.4.7", "1.2.3.4.8", "1.2.3.4.9")
}
