// Package orthanc runs Debian's Orthanc as the hospital PACS in a test: on loopback ports with a fresh storage
// and index directory, driven through its REST API (upload, C-STORE to a modality, Storage Commitment SCU).
// See /work/shared/docs/peers.md for the API it drives.
package orthanc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
)

// Binary is where Debian installs Orthanc.
const Binary = "/usr/sbin/Orthanc"

// Require skips the test when Orthanc is not installed, and fails it under CI (shared/testenv), and returns
// the binary's path.
func Require(t testing.TB) string {
	t.Helper()
	return testenv.RequireFile(t, Binary)
}

// Modality is a DICOM peer Orthanc knows (DicomModalities): Orthanc only takes storage commitment reports
// from AEs listed there.
type Modality struct {
	AET  string `json:"AET"`
	Host string `json:"Host"`
	Port int    `json:"Port"`
	// UseDicomTLS has Orthanc call the modality over DICOM TLS (with DicomTlsEnabled).
	UseDicomTLS bool `json:"UseDicomTls,omitempty"`
}

// TLS is Orthanc's DICOM TLS (DicomTlsEnabled): its DICOM port then takes TLS only. Cert and Key are its
// certificate and key, served and presented when it calls (PEM files); Trusted the certificates of the peers
// it trusts, ours and our CA's; RemoteCertificateRequired refuses a peer without a certificate.
type TLS struct {
	Cert, Key, Trusted        string
	RemoteCertificateRequired bool
}

// Orthanc is a running Orthanc.
type Orthanc struct {
	AET       string
	DICOMAddr string // host:port of its DICOM listener
	URL       string // its REST API
	cmd       *exec.Cmd
	logs      testenv.LogBuffer // read while Orthanc writes it
	exited    chan struct{}
}

// Start runs Orthanc with AE title aet, knowing modalities by name, until the test ends.
func Start(t testing.TB, aet string, modalities map[string]Modality) *Orthanc {
	t.Helper()
	return StartTLS(t, aet, modalities, nil)
}

// StartTLS is Start with Orthanc's DICOM over TLS only, as tls says (nil: plain DICOM).
func StartTLS(t testing.TB, aet string, modalities map[string]Modality, tls *TLS) *Orthanc {
	t.Helper()
	bin := Require(t)
	dir := t.TempDir()
	dicomPort, httpPort := testenv.FreePort(t), testenv.FreePort(t)
	cfg := map[string]any{
		"Name": "test-pacs", "StorageDirectory": filepath.Join(dir, "storage"), "IndexDirectory": filepath.Join(dir, "index"),
		"DicomAet": aet, "DicomPort": dicomPort, "HttpPort": httpPort, "RemoteAccessAllowed": false,
		"AuthenticationEnabled": false, "DicomAlwaysAllowStore": true, "DicomModalities": modalities,
		"DicomScuTimeout": 10, "DicomAssociationCloseDelay": 0, "Plugins": []string{}, "HttpTimeout": 30,
	}
	if tls != nil {
		cfg["DicomTlsEnabled"], cfg["DicomTlsCertificate"], cfg["DicomTlsPrivateKey"] = true, tls.Cert, tls.Key
		cfg["DicomTlsTrustedCertificates"], cfg["DicomTlsRemoteCertificateRequired"] = tls.Trusted, tls.RemoteCertificateRequired
	}
	body, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "orthanc.json")
	if err := os.WriteFile(cfgPath, body, 0o600); err != nil {
		t.Fatal(err)
	}
	o := &Orthanc{AET: aet, DICOMAddr: "127.0.0.1:" + strconv.Itoa(dicomPort), URL: "http://127.0.0.1:" + strconv.Itoa(httpPort),
		exited: make(chan struct{})}
	o.cmd = exec.Command(bin, "--verbose", cfgPath)
	o.cmd.Dir = dir
	o.cmd.Stdout, o.cmd.Stderr = &o.logs, &o.logs
	if err := o.cmd.Start(); err != nil {
		t.Fatalf("start Orthanc: %v", err)
	}
	go func() { _ = o.cmd.Wait(); close(o.exited) }()
	t.Cleanup(func() {
		if err := o.cmd.Process.Kill(); err != nil {
			t.Logf("kill Orthanc: %v", err)
		}
		<-o.exited
		if t.Failed() {
			t.Logf("Orthanc logs:\n%s", o.logs.String())
		}
	})
	testenv.EventuallySawWithin(t, 30*time.Second, "Orthanc answering", func() (bool, string) {
		resp, err := http.Get(o.URL + "/system")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true, ""
			}
		}
		select {
		case <-o.exited:
			t.Fatalf("Orthanc exited at start:\n%s", o.logs.String())
		default:
		}
		return false, fmt.Sprintf("/system: %v\n%s", err, o.logs.String())
	})
	return o
}

// call sends a REST request and decodes the JSON answer into out (if not nil).
func (o *Orthanc) call(t testing.TB, method, path string, in []byte, out any) {
	t.Helper()
	req, err := http.NewRequest(method, o.URL+path, bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("Orthanc %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Orthanc %s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("Orthanc %s %s: %v: %s", method, path, err, b)
		}
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Upload stores a Part 10 file in Orthanc and returns its id.
func (o *Orthanc) Upload(t testing.TB, part10 []byte) string {
	t.Helper()
	var r struct{ ID string }
	o.call(t, http.MethodPost, "/instances", part10, &r)
	return r.ID
}

// Store has Orthanc send the resources to a modality by C-STORE, and waits for it to finish.
func (o *Orthanc) Store(t testing.TB, modality string, ids ...string) {
	t.Helper()
	o.call(t, http.MethodPost, "/modalities/"+modality+"/store", mustJSON(t, map[string]any{"Resources": ids, "Synchronous": true}), nil)
}

// Instance names one SOP instance in a storage commitment request.
type Instance struct {
	SOPClassUID    string `json:"SOPClassUID"`
	SOPInstanceUID string `json:"SOPInstanceUID"`
}

// RequestCommitment has Orthanc, as Storage Commitment SCU, ask the modality to commit the instances. It
// returns the transaction UID.
func (o *Orthanc) RequestCommitment(t testing.TB, modality string, instances ...Instance) string {
	t.Helper()
	var r struct{ ID string }
	o.call(t, http.MethodPost, "/modalities/"+modality+"/storage-commitment", mustJSON(t, map[string]any{"DicomInstances": instances}), &r)
	if r.ID == "" {
		t.Fatal("Orthanc gave no transaction UID")
	}
	return r.ID
}

// Failure is an instance a report said was not committed.
type Failure struct {
	Instance
	FailureReason int `json:"FailureReason"`
}

// Commitment is what Orthanc knows of a transaction: Status is Pending until a report arrives, then
// Success or Failure.
type Commitment struct {
	Status    string     `json:"Status"`
	Success   []Instance `json:"Success"`
	Failures  []Failure  `json:"Failures"`
	RemoteAET string     `json:"RemoteAET"`
}

// CommitmentStatus is what Orthanc knows of the transaction now.
func (o *Orthanc) CommitmentStatus(t testing.TB, txn string) Commitment {
	t.Helper()
	var c Commitment
	o.call(t, http.MethodGet, "/storage-commitment/"+txn, nil, &c)
	return c
}

// AwaitCommitment polls the transaction until it is no longer Pending, for up to within.
func (o *Orthanc) AwaitCommitment(t testing.TB, txn string, within time.Duration) Commitment {
	t.Helper()
	var c Commitment
	testenv.EventuallyWithin(t, within, "storage commitment "+txn+" no longer pending", func() bool {
		c = Commitment{}
		o.call(t, http.MethodGet, "/storage-commitment/"+txn, nil, &c)
		return c.Status != "Pending"
	})
	return c
}
