package interop

import (
	"bytes"
	"encoding/json"
	"net"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/localstore/localstoretest"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

// TestStorageCommitmentReportSurvivesKill kills scp-task --local (SIGKILL) while its Storage Commitment report is
// on the wire: the PACS holds the N-EVENT-REPORT-RQ unanswered. The next start on the same data directory reports
// the result again (conformance.md: at least once, never lost) at once, not once the killed run's lease is over:
// the data directory's lock proves that run gone, and the start releases its leases, the transaction's and its
// requesting AE's. The PACS is answered the same result, the transaction is reported once in the audit trail and
// announced once. Before, the restart waited out the lease (192 s), which made this test take some 218 s.
func TestStorageCommitmentReportSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts scp-task twice")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	conns := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	report := func(within time.Duration) (*dicomnettest.Parrot, *dimse.Command, *commitment.Result) {
		t.Helper()
		var c net.Conn
		select {
		case c = <-conns:
		case <-time.After(within):
			t.Fatalf("no report association within %v", within)
		}
		t.Cleanup(func() { c.Close() })
		p := dicomnettest.NewParrot(t, c)
		p.Timeout = 30 * time.Second
		rq := p.AcceptAssociation(func(r pdu.RoleSelection) *pdu.RoleSelection { return &r })
		cmd, ds := p.ExpectMessage()
		if cmd.CommandField != dimse.NEventReportRQ {
			t.Fatalf("report association carried %+v", cmd)
		}
		res, err := commitment.ParseResult(bytes.NewReader(ds), rq.PresentationContexts[0].TransferSyntaxes[0])
		if err != nil {
			t.Fatal(err)
		}
		return p, cmd, res
	}

	dataDir := t.TempDir()
	args := []string{"--local", "--data-dir", dataDir, "--portal-listen", "127.0.0.1:0", "--ae-title", "INGEST",
		"--calling-aes", "PACS", "--commitment-peers", "PACS=" + l.Addr().String(),
		"--quiet-period", "10m", "--commitment-wait", "1s"}
	scp := scptest.Start(t, scptest.Options{NoStore: true, Args: args})
	const txn = "1.2.826.0.1.3680043.10.7703.1"
	p := dicomnettest.DialParrot(t, scp.DICOMAddr)
	p.Associate(dicomnettest.CommitmentAssociateRQ("PACS", "INGEST", dicomuid.ImplicitVRLittleEndian))
	req := &commitment.Request{TransactionUID: txn, Refs: []commitment.Ref{{SOPClassUID: pipelinetest.CTStorage, SOPInstanceUID: "1.2.826.0.1.3680043.10.7703.2"}}}
	if rsp := nAction(t, p, 1, req); rsp.Status != dimse.StatusSuccess {
		t.Fatalf("N-ACTION-RSP %+v", rsp)
	}
	p.SendPDU(&pdu.ReleaseRQ{})
	p.Expect(pdu.TypeReleaseRP)

	// The report arrives on a new association; the PACS holds it unanswered, and the SCP dies.
	_, _, first := report(30 * time.Second)
	if first.TransactionUID != txn {
		t.Fatal("the first report names another transaction")
	}
	scp.Kill(t)
	killed := time.Now()

	scp = scptest.Start(t, scptest.Options{NoStore: true, Args: args})
	// Well before the lease a local mode's report holds its transaction for (on its requestor's association or a new
	// one) ends: the start released it.
	lease := pipeline.CommitmentLease(&commitreport.Reporter{Server: &dicomnet.Server{}})
	q, cmd, again := report(time.Until(killed.Add(lease / 2)))
	if again.TransactionUID != txn || len(again.Failed) != 1 || again.Failed[0].Reason != commitment.ReasonNoSuchObjectInstance {
		t.Errorf("the report after the restart %+v, want the instance never sent failed 0112", again)
	}
	if !reflect.DeepEqual(again, first) {
		t.Errorf("the report after the restart %+v, the killed run's %+v: want the same result", again, first)
	}
	q.SendMessage(1, dimse.NewNEventReportRSP(cmd, dimse.Status{}), nil)
	q.Expect(pdu.TypeReleaseRQ)
	q.SendPDU(&pdu.ReleaseRP{})

	awaitEvent(t, dataDir, pipeline.DetailTypeCommitmentCompleted, 30*time.Second, func(d json.RawMessage) bool {
		var c pipeline.CommitmentCompletedDetail
		return json.Unmarshal(d, &c) == nil && c.TransactionUID == txn && c.Report.Delivered
	})
	testenv.Eventually(t, "the transaction reported once in the audit trail", func() bool {
		return len(portalAudit(t, scp.PortalAddr, pipeline.OutcomeCommitmentReported)) == 1
	})
	announced := 0
	for _, e := range localstoretest.EventsLog(t, filepath.Join(dataDir, "events.log")) {
		var c pipeline.CommitmentCompletedDetail
		if e.DetailType == pipeline.DetailTypeCommitmentCompleted && json.Unmarshal(e.Detail, &c) == nil && c.TransactionUID == txn {
			announced++
		}
	}
	if announced != 1 {
		t.Errorf("the transaction announced completed %d times, want once", announced)
	}
}
