package pipelinee2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/commitreport"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/shared/testpki"
	"github.com/dicom-ingest/dicom-ingest/test/internal/logleak"
	"github.com/dicom-ingest/dicom-ingest/test/internal/orthanc"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

// TestStorageCommitmentThroughFunctions is Storage Commitment the AWS way, on one machine: Orthanc sends a
// study to scp-task storing into S3 and asks for commitment; scp-task makes the request durable under
// site-a/commitment/requests/ before answering; the validate function indexes the instances and the
// commitment function, under the runtime emulator on dynalite, evaluates the request and reports to Orthanc on
// an association of its own (in AWS, through the site's VPN). Orthanc shows Success, the study is announced
// at once as completed by commitment, and an instance never sent fails with 0112 once the wait is over. With
// Orthanc taking DICOM over TLS only (a site's sites[].pacs.tls), the function reports over DICOM TLS with the
// site's CA (COMMITMENT_TLS) and the client certificate it reads from Secrets Manager, and the SCP, outside local
// mode, takes the requests of its tls:// peer.
func TestStorageCommitmentThroughFunctions(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain DICOM", true: "DICOM TLS"}[tls], func(t *testing.T) { storageCommitmentThroughFunctions(t, tls) })
	}
}

func storageCommitmentThroughFunctions(t *testing.T, overTLS bool) {
	orthanc.Require(t)
	srv := s3test.NewServer(t, bucket)
	e := newEnvS3(t, "10m", srv.URL)
	scpPort := testenv.FreePort(t)
	modalities := map[string]orthanc.Modality{"ingest": {AET: "INGEST", Host: "127.0.0.1", Port: scpPort}}
	var pacs *orthanc.Orthanc
	var scheme string
	fnEnv := []string{"AE_TITLE=INGEST", "COMMITMENT_WAIT_SECONDS=3", "COMMITMENT_REPORT_MINUTES=1"}
	if overTLS {
		// Orthanc's certificate names 127.0.0.1 (an IP SAN, as pacs.host's must); it trusts our client
		// certificate's CA and requires one. The function reads the certificate from its secret.
		const clientSecretARN = "arn:aws:secretsmanager:" + region + ":123456789012:secret:pacs-client-AbCdEf"
		dir := t.TempDir()
		ca := testpki.NewCA(t, "Site PACS CA")
		pacsCert := ca.Server(t, testpki.Options{CommonName: "orthanc",
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}).WriteFiles(t, dir, "orthanc")
		client := ca.Client(t, testpki.Options{CommonName: "ingest-commitment"})
		caFile := filepath.Join(dir, "ca.pem")
		testpki.WriteFile(t, caFile, ca.PEM)
		pacs = orthanc.StartTLS(t, "ORTHANC", modalities, &orthanc.TLS{Cert: pacsCert.Cert, Key: pacsCert.Key, Trusted: caFile, RemoteCertificateRequired: true})
		secret, err := json.Marshal(map[string]string{"certificate": string(client.CertPEM), "privateKey": string(client.KeyPEM)})
		if err != nil {
			t.Fatal(err)
		}
		secrets := httptest.NewServer(fakeSecrets{clientSecretARN: string(secret)})
		t.Cleanup(secrets.Close)
		tlsPeers, err := json.Marshal(commitreport.TLSPeers{"ORTHANC": {CA: string(ca.PEM), ClientSecretARN: clientSecretARN}})
		if err != nil {
			t.Fatal(err)
		}
		scheme = "tls://"
		fnEnv = append(fnEnv, "COMMITMENT_TLS="+string(tlsPeers), "AWS_ENDPOINT_URL_SECRETS_MANAGER="+secrets.URL)
	} else {
		pacs = orthanc.Start(t, "ORTHANC", modalities)
	}
	peers := "ORTHANC=" + scheme + pacs.DICOMAddr
	e.startFunction(e.rie, "commitment", "commitment", append(fnEnv, "COMMITMENT_PEERS="+peers)...)
	scp := scptest.Start(t, scptest.Options{
		NoStore: true,
		Args: []string{"--ae-title", "INGEST", "--calling-aes", "ORTHANC", "--store", "s3://" + bucket + "/site-a", "--s3-path-style",
			"--listen", "127.0.0.1:" + strconv.Itoa(scpPort), "--commitment-peers", peers},
		Env: s3test.Env(t, srv.URL),
	})
	const studyUID = "1.2.826.0.1.3680043.10.7710"
	var ids []string
	var refs []orthanc.Instance
	for i := 1; i <= 3; i++ {
		in := pt.Instance{StudyUID: studyUID, SeriesUID: studyUID + ".1", SOPUID: fmt.Sprintf("%s.1.%d", studyUID, i),
			PatientID: "PID-SC", PatientName: "Commit^Cloud", Rows: 16, Columns: 16, SourceAE: "ORTHANC"}
		ids = append(ids, pacs.Upload(t, in.Build()))
		refs = append(refs, orthanc.Instance{SOPClassUID: pt.CTStorage, SOPInstanceUID: in.SOPUID})
	}
	pacs.Store(t, "ingest", ids...)
	// S3 would notify the validate queue; feed the function the same messages.
	var bodies []string
	for _, k := range keysUnder(t, srv, "site-a/incoming/", 3) {
		bodies = append(bodies, s3Notification(k, 1))
	}
	e.invokeBatch(t, "validate", sqsEvent(bodies...))

	// The requests, as the commitment queue would deliver them.
	commit := func(refs ...orthanc.Instance) string {
		t.Helper()
		before := keysUnder(t, srv, "site-a/commitment/requests/", -1)
		txn := pacs.RequestCommitment(t, "ingest", refs...)
		after := keysUnder(t, srv, "site-a/commitment/requests/", len(before)+1)
		for _, k := range after {
			if !slices.Contains(before, k) {
				e.invokeBatch(t, "commitment", sqsEvent(s3Notification(k, 1)))
			}
		}
		return txn
	}
	asked := time.Now()
	txn := commit(refs...)
	got := pacs.AwaitCommitment(t, txn, 30*time.Second)
	if got.Status != "Success" || len(got.Success) != 3 || got.RemoteAET != "INGEST" {
		t.Fatalf("commitment %+v, want Success for the 3 instances", got)
	}
	var announced *pipeline.StudyDetailEvent
	for _, ev := range e.events.All() {
		var d pipeline.StudyDetailEvent
		if ev.DetailType == pipeline.DetailTypeStudyReceived && json.Unmarshal([]byte(ev.Detail), &d) == nil && d.StudyInstanceUID == studyUID {
			announced = &d
		}
	}
	if announced == nil || announced.Completion != pipeline.CompletionStorageCommitment || announced.InstanceCount != 3 {
		t.Fatalf("Study Received %+v, want the study completed by storage commitment", announced)
	}
	t.Logf("reported and announced %v after the request", time.Since(asked).Round(time.Millisecond))

	never := orthanc.Instance{SOPClassUID: pt.CTStorage, SOPInstanceUID: studyUID + ".1.99"}
	txn2 := commit(refs[0], never)
	got = pacs.AwaitCommitment(t, txn2, 30*time.Second)
	if got.Status != "Failure" || len(got.Failures) != 1 || got.Failures[0].Instance != never || got.Failures[0].FailureReason != 0x0112 {
		t.Fatalf("commitment %+v, want Failure with the instance never sent failed 274", got)
	}
	var outcomes []string
	for _, ev := range e.events.All() {
		var d pipeline.CommitmentCompletedDetail
		if ev.DetailType == pipeline.DetailTypeCommitmentCompleted && json.Unmarshal([]byte(ev.Detail), &d) == nil {
			outcomes = append(outcomes, d.Outcome)
			if !d.Report.Delivered || d.Report.Association != "new" || !strings.HasPrefix(d.ResultURI, "s3://"+bucket+"/site-a/commitment/results/") {
				t.Errorf("Storage Commitment Completed %+v", d)
			}
		}
	}
	if !slices.Equal(outcomes, []string{"committed", "failures"}) {
		t.Errorf("Storage Commitment Completed outcomes %v", outcomes)
	}
	page, err := e.audit.Query(context.Background(), pipeline.AuditQuery{CallingAE: "ORTHANC", Outcome: "commitment-reported"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 2 {
		t.Errorf("%d commitment-reported audit records, want 2", len(page.Records))
	}

	// No UID in any log: the SCP's, the validate and the commitment function's.
	var leaks logleak.Identifiers
	for _, u := range []string{txn, txn2, studyUID, studyUID + ".1", never.SOPInstanceUID} {
		leaks.AddUID(u)
	}
	for _, r := range refs {
		leaks.AddUID(r.SOPInstanceUID)
	}
	e.stopFunctions()
	leaks.Check(t, "scp-task", scp.Logs())
	for fn, b := range e.logs {
		leaks.Check(t, fn, b.String())
	}
	// Both results delivered on associations the function opened, over the transport the peer takes.
	var delivered []any
	for line := range strings.SplitSeq(e.logs["commitment"].String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "commitreport: result delivered on a new association" {
			delivered = append(delivered, m["tls"])
		}
	}
	if !slices.Equal(delivered, []any{overTLS, overTLS}) {
		t.Errorf("results delivered with tls %v, want two with %v", delivered, overTLS)
	}
	if strings.Contains(e.logs["commitment"].String(), "PRIVATE KEY") {
		t.Error("a private key in the commitment function's log")
	}
}

// keysUnder waits until at least want keys are under prefix (want < 0: no wait) and returns them.
func keysUnder(t *testing.T, srv *s3test.Server, prefix string, want int) []string {
	t.Helper()
	var out []string
	testenv.EventuallySawWithin(t, 10*time.Second, fmt.Sprintf("%d keys under %s", want, prefix), func() (bool, string) {
		all, err := srv.Keys(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out = nil
		for _, k := range all {
			if strings.HasPrefix(k, prefix) {
				out = append(out, k)
			}
		}
		return len(out) >= want, fmt.Sprintf("%d keys", len(out))
	})
	return out
}
