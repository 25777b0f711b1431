package s3

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/scptest"
)

const storePrefix = "site-a/"

// startS3SCP runs scp-task with --store s3://bucket/site-a against
// endpoint, configured only through the environment a Fargate task would
// have (AWS_ENDPOINT_URL_S3, AWS_REGION, credentials), and any extra flags.
func startS3SCP(t *testing.T, endpoint string, extra ...string) *scptest.SCP {
	t.Helper()
	return scptest.Start(t, scptest.Options{
		NoStore: true,
		Args: append([]string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE", "--store", "s3://" + bucket + "/" + strings.TrimSuffix(storePrefix, "/"),
			"--s3-path-style"}, extra...),
		Env: s3test.Env(t, endpoint),
	})
}

var keyLayout = regexp.MustCompile(`^` + storePrefix + `incoming/\d{4}/\d{2}/\d{2}/([0-9.]+|unknown-study)/([0-9.]+|unknown-series)/([0-9.]+)\.dcm$`)

// TestDcmsendToS3 sends every test file with dcmsend to scp-task storing
// into S3 and to scp-task storing into files, and checks the S3 objects:
// documented keys, metadata, checksums, and bytes equal to the file
// store's for the same input.
func TestDcmsendToS3(t *testing.T) {
	testenv.RequireTools(t, "dcmsend")
	srv := s3test.NewServer(t, bucket)
	s3scp := startS3SCP(t, srv.URL)
	filescp := scptest.Start(t, scptest.Options{Args: []string{"--ae-title", "REMOTE_AE", "--calling-aes", "LOCAL_AE"}})

	files := testenv.DICOMTestdataFiles(t)
	for _, scp := range []*scptest.SCP{s3scp, filescp} {
		args := append([]string{"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", "--no-halt", scp.Host(), scp.Port()}, files...)
		if r := dcmtk.Run(t, 2*time.Minute, "dcmsend", args...); r.Err != nil {
			t.Fatalf("dcmsend: %v\n%s", r.Err, r.Output)
		}
	}

	fileObjects := map[string][]byte{} // SOP Instance UID -> Part 10 bytes
	err := filepath.WalkDir(filepath.Join(filescp.DataDir, "incoming"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".dcm") {
			return err
		}
		b, err := os.ReadFile(p)
		fileObjects[strings.TrimSuffix(filepath.Base(p), ".dcm")] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	keys, err := srv.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var incoming []string
	for _, k := range keys {
		switch {
		case strings.HasPrefix(k, storePrefix+"incoming/"):
			incoming = append(incoming, k)
		case strings.HasPrefix(k, storePrefix+"audit/"):
			// the association's records, waited for below
		case strings.HasPrefix(k, storePrefix+objectstore.RunMarkersPrefix):
			// the SCP's run marker (docs/audit-feed.md, Crashes)
		default:
			t.Errorf("object outside the documented layout: %s", k)
		}
	}
	if len(incoming) != len(files) || len(fileObjects) != len(files) {
		t.Fatalf("sent %d files; S3 holds %d objects, the file store %d", len(files), len(incoming), len(fileObjects))
	}
	for _, k := range incoming {
		t.Run(path.Base(k), func(t *testing.T) {
			m := keyLayout.FindStringSubmatch(k)
			if m == nil {
				t.Fatalf("key %s does not follow incoming/<yyyy>/<mm>/<dd>/<study>/<series>/<sop>.dcm", k)
			}
			sop := m[3]
			body := checkStoredObject(t, srv, k, sop)
			if want, ok := fileObjects[sop]; !ok || !bytes.Equal(body, want) {
				t.Errorf("S3 object (%d bytes) differs from the file store's (%d bytes, found %v)", len(body), len(want), ok)
			}
		})
	}
	// The association's accepted and released records are in S3 too,
	// the released one written after dcmsend had its A-RELEASE-RP.
	testenv.EventuallyWithin(t, 30*time.Second, "the association's accepted and released records in S3", func() bool {
		events := auditEvents(t, srv, auditKeys(t, srv))
		return events[associationaudit.EventAccepted] > 0 && events[associationaudit.EventReleased] > 0
	})
	if n, err := srv.PendingUploads(context.Background()); err != nil || n != 0 {
		t.Errorf("pending multipart uploads: %d (%v)", n, err)
	}
}

// checkStoredObject checks what scp-task stored in S3 under key for the
// instance sop (sent by LOCAL_AE to REMOTE_AE): its CRC64NVME, the
// documented metadata, no SHA-256 (the content identity is the CRC), a
// Part 10 file; it returns the object's bytes.
func checkStoredObject(t *testing.T, srv *s3test.Server, key, sop string) []byte {
	t.Helper()
	body, meta, err := srv.Object(key)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := meta["X-Amz-Meta-Sha256"]; ok {
		t.Errorf("%s: sha256 metadata %s: the content identity is the CRC64NVME", key, got)
	}
	if c, _ := srv.Checksum(key); c != s3test.CRC64NVME(body) {
		t.Errorf("%s: CRC64NVME %q, body %q", key, c, s3test.CRC64NVME(body))
	}
	for h, want := range map[string]string{
		"X-Amz-Meta-Calling-Ae":       "LOCAL_AE",
		"X-Amz-Meta-Called-Ae":        "REMOTE_AE",
		"X-Amz-Meta-Sop-Instance-Uid": sop,
	} {
		if meta[h] != want {
			t.Errorf("%s: %s = %q, want %q", key, h, meta[h], want)
		}
	}
	for _, h := range []string{"X-Amz-Meta-Peer-Addr", "X-Amz-Meta-Association-Id", "X-Amz-Meta-Received-At", "X-Amz-Meta-Sop-Class-Uid", "X-Amz-Meta-Transfer-Syntax-Uid", "X-Amz-Meta-Implementation-Version"} {
		if meta[h] == "" {
			t.Errorf("%s: metadata %s missing", key, h)
		}
	}
	if len(body) < 132 || !bytes.Equal(body[128:132], []byte("DICM")) {
		t.Errorf("%s is not a Part 10 file", key)
	}
	return body
}

// auditEvents reads the audit records at keys and counts them by event.
func auditEvents(t *testing.T, srv *s3test.Server, keys []string) map[string]int {
	t.Helper()
	events := map[string]int{}
	for _, k := range keys {
		body, _, err := srv.Object(k)
		if err != nil {
			t.Fatal(err)
		}
		var rec struct {
			Event string `json:"event"`
		}
		if err := json.Unmarshal(body, &rec); err != nil {
			t.Errorf("%s: %v", k, err)
		}
		events[rec.Event]++
	}
	return events
}

func auditKeys(t *testing.T, srv *s3test.Server) []string {
	t.Helper()
	return keysUnder(t, srv, storePrefix+"audit/")
}

// keysUnder lists the bucket's keys that start with prefix.
func keysUnder(t *testing.T, srv *s3test.Server, prefix string) []string {
	t.Helper()
	keys, err := srv.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

// TestS3OutageRefusesAssociations takes S3 away under a running scp-task:
// new associations are rejected with "temporary congestion" (02 03 01)
// while it is down, the rejection is audited once S3 is back, and
// transfers succeed again.
func TestS3OutageRefusesAssociations(t *testing.T) {
	testenv.RequireTools(t, "storescu")
	srv := s3test.NewServer(t, bucket)
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{})
	scp := startS3SCP(t, proxy.URL)
	file := testenv.DICOMTestdataFiles(t)[0]
	send := func() dcmtk.Result {
		return dcmtk.Run(t, time.Minute, "storescu", "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port(), file)
	}

	const outage = 10 * time.Second
	proxy.Down(outage)
	downSince := time.Now()
	// The store caches a good answer for 5 s; after that it must notice.
	time.Sleep(6 * time.Second)
	r := send()
	if r.Err == nil {
		t.Fatalf("storescu succeeded while S3 was down:\n%s", r.Output)
	}
	if !strings.Contains(r.Output, "Rejected Transient") || !strings.Contains(strings.ToLower(r.Output), "congestion") {
		t.Errorf("want a transient rejection for temporary congestion, storescu said:\n%s", r.Output)
	}

	time.Sleep(time.Until(downSince.Add(outage)))
	testenv.EventuallySawWithin(t, 20*time.Second, "scp-task ready again after S3 came back", func() (bool, string) {
		resp, err := http.Get("http://" + scp.HealthAddr + "/readyz")
		if err != nil {
			return false, fmt.Sprintf("/readyz: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, "/readyz " + resp.Status
	})
	if r := send(); r.Err != nil {
		t.Fatalf("storescu after the outage: %v\n%s", r.Err, r.Output)
	}
	testenv.EventuallyWithin(t, 30*time.Second, "an audit record for the rejected association", func() bool { return auditEvents(t, srv, auditKeys(t, srv))[associationaudit.EventRejected] >= 1 })
}

// TestStoreFailureAnswersFailure makes S3 refuse the object writes (403)
// while everything else works: the C-STORE gets a failure status, nothing
// is stored, and a store-failed audit record is written.
func TestStoreFailureAnswersFailure(t *testing.T) {
	testenv.RequireTools(t, "storescu")
	srv := s3test.NewServer(t, bucket)
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{
		Rate: 1, Faults: []s3test.Fault{s3test.Status403},
		Match: func(r *http.Request) bool {
			return r.Method != http.MethodHead && strings.Contains(r.URL.Path, "/"+storePrefix+"incoming/")
		},
	})
	scp := startS3SCP(t, proxy.URL)
	file := testenv.DICOMTestdataFiles(t)[0]
	r := dcmtk.Run(t, time.Minute, "storescu", "-v", "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port(), file)
	if !strings.Contains(r.Output, "Received Store Response (Refused: OutOfResources)") {
		t.Fatalf("want the C-STORE refused with A700 (out of resources), storescu said: %v\n%s", r.Err, r.Output)
	}
	noObjects(t, srv)
	testenv.EventuallyWithin(t, 30*time.Second, "a store-failed audit record", func() bool { return auditEvents(t, srv, auditKeys(t, srv))[associationaudit.EventStoreFailed] >= 1 })
	if proxy.Counts()[s3test.Status403] == 0 {
		t.Error("the proxy refused nothing")
	}
}

// noObjects checks that S3 holds no object under incoming/: it refused or
// never took them.
func noObjects(t *testing.T, srv *s3test.Server) {
	t.Helper()
	for _, k := range keysUnder(t, srv, storePrefix+"incoming/") {
		t.Errorf("object stored although S3 did not take it: %s", k)
	}
}

// TestAnsweredBeforeTheSenderGivesUp: with S3 answering 503 to every
// object write, or not answering at all, a C-STORE is answered A700 within
// --s3-put-timeout of its data set's end, before a sender waiting 10 s for
// the response (Orthanc's DicomScuTimeout default; storescu -td 10 here)
// gives up. Each request had its own 20 s of retries: the answer came after
// 19-20 s, the sender had aborted the association at 10 s and, without our
// status, counted the object failed for a reason of its own.
func TestAnsweredBeforeTheSenderGivesUp(t *testing.T) {
	testenv.RequireTools(t, "storescu")
	objectWrite := func(r *http.Request) bool {
		return r.Method != http.MethodHead && strings.Contains(r.URL.Path, "/"+storePrefix+"incoming/")
	}
	for _, tc := range []struct {
		name string
		plan s3test.Plan
	}{
		{"503", s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Status503}, Match: objectWrite}},
		{"S3 stops answering", s3test.Plan{Rate: 1, Faults: []s3test.Fault{s3test.Slow}, SlowDelay: time.Minute, Match: objectWrite}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := s3test.NewServer(t, bucket)
			proxy := s3test.NewFaultProxy(t, srv.URL, tc.plan)
			// Well under the sender's 10 s, so that a loaded machine does
			// not make the test fail; the default, 8 s, leaves 2 s.
			scp := startS3SCP(t, proxy.URL, "--s3-put-timeout", "4s")
			file := testenv.DICOMTestdataFiles(t)[0]
			r := dcmtk.Run(t, time.Minute, "storescu", "-v", "-td", "10", "-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), scp.Port(), file)
			if !strings.Contains(r.Output, "Received Store Response (Refused: OutOfResources)") {
				t.Fatalf("want the C-STORE answered A700 within the sender's 10 s, storescu said: %v\n%s", r.Err, r.Output)
			}
			noObjects(t, srv)
			if n, err := srv.PendingUploads(context.Background()); err != nil || n != 0 {
				t.Errorf("%d multipart uploads left (%v)", n, err)
			}
		})
	}
}
