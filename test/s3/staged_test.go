package s3

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
)

// TestStagedStoreAcknowledgesWhileS3IsDown runs scp-task with --staging:
// while S3 is unreachable dcmsend's C-STOREs still succeed and the SCP
// stays ready (the objects are durable in the staging directory); once S3
// answers, every object arrives under the documented key with the
// metadata a direct upload gives (stagedstore's tests compare the two byte
// for byte), the audit records too, and the staging directory empties.
func TestStagedStoreAcknowledgesWhileS3IsDown(t *testing.T) {
	testenv.RequireTools(t, "dcmsend")
	srv := s3test.NewServer(t, bucket)
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{})
	staging := t.TempDir()
	scp := startS3SCP(t, proxy.URL, "--staging", staging)
	files := testenv.DICOMTestdataFiles(t)

	// The task's application-start record goes to S3 as soon as it
	// starts: wait for it, so that what S3 holds before the outage is
	// known (it raced the outage's start and was there in most runs on a
	// quick machine).
	var before []string
	testenv.EventuallyWithin(t, 30*time.Second, "the application-start record in S3", func() bool {
		keys, err := srv.Keys(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		before = keys
		return len(keys) > 0
	})

	const outage = 15 * time.Second
	proxy.Down(outage)
	upAt := time.Now().Add(outage)
	args := append([]string{"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", "--no-halt", scp.Host(), scp.Port()}, files...)
	if r := dcmtk.Run(t, time.Minute, "dcmsend", args...); r.Err != nil {
		t.Fatalf("dcmsend while S3 is down: %v\n%s", r.Err, r.Output)
	}
	if time.Now().After(upAt) {
		t.Fatal("dcmsend outlasted the outage: it waited for S3")
	}
	resp, err := http.Get("http://" + scp.HealthAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz %d while S3 is down and the backlog small; staging keeps the SCP ready", resp.StatusCode)
	}
	if keys, _ := srv.Keys(context.Background()); len(keys) != len(before) {
		t.Fatalf("S3 took %d objects while it was unreachable", len(keys)-len(before))
	}

	var incoming []string
	testenv.EventuallyWithin(t, outage+60*time.Second, "every staged object in S3", func() bool {
		keys, err := srv.Keys(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		incoming = incoming[:0]
		for _, k := range keys {
			if strings.HasPrefix(k, storePrefix+"incoming/") {
				incoming = append(incoming, k)
			}
		}
		return len(incoming) == len(files)
	})
	for _, k := range incoming {
		m := keyLayout.FindStringSubmatch(k)
		if m == nil {
			t.Errorf("key %s does not follow the documented layout", k)
			continue
		}
		checkStoredObject(t, srv, k, m[3])
	}
	testenv.EventuallyWithin(t, 30*time.Second, "the association's audit records uploaded", func() bool {
		ev := auditEvents(t, srv, auditKeys(t, srv))
		return ev[associationaudit.EventAccepted] >= 1 && ev[associationaudit.EventReleased] >= 1
	})
	testenv.EventuallyWithin(t, 30*time.Second, "the staging directory emptied of large objects", func() bool {
		left := 0
		_ = filepath.WalkDir(staging, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && filepath.Base(filepath.Dir(p)) == "large" {
				left++
			}
			return nil
		})
		return left == 0
	})
}
