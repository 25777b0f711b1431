package interop

import (
	"crypto/x509"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/test/internal/orthanc"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

// TestStorageCommitmentOverTLSWithOrthanc: Orthanc takes DICOM over TLS only (DicomTlsEnabled, a client
// certificate required). It sends a study to scp-task --local on our TLS listener and asks for Storage
// Commitment there, then releases its association: the report comes on a new TLS association we open to it
// (--commitment-peers ORTHANC=tls://…), presenting our client certificate, and Orthanc shows the result; so it
// does when Orthanc's certificate names a DNS name only, given as ?serverName= (its address dialled). When
// Orthanc's certificate is of a CA we do not trust, the report is not delivered: each attempt fails its
// handshake with the reason said (unknown_ca), counted, and retried. (A plain peer stays plain:
// TestStorageCommitmentWithOrthanc.)
func TestStorageCommitmentOverTLSWithOrthanc(t *testing.T) {
	orthanc.Require(t)
	dir := t.TempDir()
	ca, other := testpki.NewCA(t, "Hospital CA"), testpki.NewCA(t, "Other CA")
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	ours := ca.Server(t, testpki.Options{CommonName: "ingest"}).WriteFiles(t, dir, "ingest-server")
	client := ca.Client(t, testpki.Options{CommonName: "ingest-commitment"}).WriteFiles(t, dir, "ingest-client")
	caFile := filepath.Join(dir, "ca.pem")
	testpki.WriteFile(t, caFile, ca.PEM)

	for _, tt := range []struct {
		name       string
		pacsCA     *testpki.CA // issues Orthanc's certificate
		serverName string      // Orthanc's certificate names this DNS name only, given as ?serverName=
		delivered  bool
	}{
		{"delivered", ca, "", true},
		{"Orthanc's certificate naming a DNS name only", ca, "orthanc.hospital.example", true},
		{"Orthanc's certificate from another CA", other, "", false},
	} {
		reportFor := "1h"
		if !tt.delivered {
			reportFor = "6s" // given up within the test
		}
		t.Run(tt.name, func(t *testing.T) {
			opts, peer := testpki.Options{CommonName: "orthanc", ExtKeyUsage: both}, ""
			if tt.serverName != "" {
				opts.CommonName, opts.DNSNames, peer = tt.serverName, []string{tt.serverName}, "?serverName="+tt.serverName
			}
			pacsCert := tt.pacsCA.Server(t, opts).WriteFiles(t, t.TempDir(), "orthanc")
			scpTLSPort := testenv.FreePort(t)
			pacs := orthanc.StartTLS(t, "ORTHANC",
				map[string]orthanc.Modality{"ingest": {AET: "INGEST", Host: "127.0.0.1", Port: scpTLSPort, UseDicomTLS: true}},
				&orthanc.TLS{Cert: pacsCert.Cert, Key: pacsCert.Key, Trusted: caFile, RemoteCertificateRequired: true})
			dataDir := t.TempDir()
			scp := scptest.Start(t, scptest.Options{NoStore: true, Args: []string{
				"--local", "--data-dir", dataDir, "--portal-listen", "127.0.0.1:0", "--listen", "off",
				"--tls-listen", "127.0.0.1:" + strconv.Itoa(scpTLSPort), "--tls-cert", ours.Cert, "--tls-key", ours.Key,
				"--ae-title", "INGEST", "--calling-aes", "ORTHANC", "--commitment-peers", "ORTHANC=tls://" + pacs.DICOMAddr + peer,
				"--commitment-tls-ca", caFile, "--commitment-tls-cert", client.Cert, "--commitment-tls-key", client.Key,
				"--quiet-period", "10m", "--commitment-wait", "5s", "--commitment-report-for", reportFor,
			}})
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("scp-task logs:\n%s", scp.Logs())
				}
			})
			ids, refs := uploadSCInstances(t, pacs)
			pacs.Store(t, "ingest", ids...) // over our TLS listener
			txn := pacs.RequestCommitment(t, "ingest", refs...)

			if tt.delivered {
				got := pacs.AwaitCommitment(t, txn, 30*time.Second)
				if got.Status != "Success" || len(got.Success) != 3 || len(got.Failures) != 0 || got.RemoteAET != "INGEST" {
					t.Fatalf("commitment %+v, want Success for the 3 instances from INGEST", got)
				}
				scp.WaitLog(t, 10*time.Second, "the report delivered over TLS", func(m map[string]any) bool {
					return m["msg"] == "commitreport: result delivered on a new association" && m["tls"] == true
				})
				return
			}
			line := scp.WaitLog(t, 30*time.Second, "a failed report, to be retried", func(m map[string]any) bool {
				return m["msg"] == "storage commitment report failed; will retry"
			})
			if err, _ := line["err"].(string); !strings.Contains(err, "TLS handshake failed (unknown_ca)") ||
				!strings.Contains(err, "certificate signed by unknown authority") || line["next_attempt"] == nil {
				t.Errorf("failed report logged %v, want the handshake's reason and the next attempt", line)
			}
			if n := scp.Metric(t, `dicom_ingest_commitment_tls_handshake_failures_total{reason="unknown_ca"}`); n < 1 {
				t.Errorf("unknown_ca handshake failures counted %v, want at least 1", n)
			}
			// Retried until --commitment-report-for, then given up: the line the alarm watches and the audit record.
			line = scp.WaitLog(t, 30*time.Second, "the report given up", func(m map[string]any) bool {
				return m["msg"] == pipeline.UndeliverableLog
			})
			if err, _ := line["err"].(string); !strings.Contains(err, "TLS handshake failed (unknown_ca)") || line["level"] != "ERROR" {
				t.Errorf("undeliverable report logged %v, want an error with the handshake's reason", line)
			}
			var recs []pipeline.AuditRecord
			testenv.Eventually(t, "the undeliverable report's audit record", func() bool {
				recs = portalAudit(t, scp.PortalAddr, pipeline.OutcomeCommitmentUndeliverable)
				return len(recs) > 0
			})
			if len(recs) != 1 || recs[0].CallingAE != "ORTHANC" || !slices.ContainsFunc(recs[0].ParticipantObjects,
				func(o pipeline.AuditParticipantObject) bool { return o.ID == txn }) {
				t.Errorf("undeliverable records %+v, want one for the transaction from ORTHANC", recs)
			} else if !strings.Contains(recs[0].Reason, "; last error: ") || !strings.Contains(recs[0].Reason, "TLS handshake failed (unknown_ca)") ||
				strings.Contains(recs[0].Reason, txn) {
				t.Errorf("undeliverable record's reason %q, want the last error, the handshake's reason, and no UID", recs[0].Reason)
			}
			var got orthanc.Commitment
			if got = pacs.CommitmentStatus(t, txn); got.Status != "Pending" {
				t.Errorf("commitment %+v at Orthanc, want Pending: nothing delivered", got)
			}
		})
	}
}
