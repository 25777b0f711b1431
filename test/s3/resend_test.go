package s3

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/s3store/s3test"
	"github.com/dicom-ingest/dicom-ingest/shared/objectstore/stagedstore"
	"github.com/dicom-ingest/dicom-ingest/shared/testenv"
	"github.com/dicom-ingest/dicom-ingest/test/internal/dcmtk"
	"github.com/dicom-ingest/dicom-ingest/test/internal/sitepki"
	"github.com/dicom-ingest/dicom-ingest/test/internal/synth"
)

// TestStagedResendAudited: DCMTK's storescu sends objects (journaled ones
// and one large enough for a file of its own) through scp-task with a
// staging directory, and, once they are in S3, sends them again from the
// same AE on a second association. S3 holds each object once, under its
// key, as the first association stored it (nothing lost, no conflict
// copy); the trail holds each association's accepted and released
// records, counting every object, and one duplicate record per object,
// written by the staged uploader, on the second association: naming its
// sender, the object held, and numbered by the C-STORE's receive time
// (associationaudit.StagedSeq) and, over TLS, naming the client
// certificate as the association's own records do. Only the uploader's
// unit tests held this (and the record named no certificate). It holds
// whether the first transfer was uploaded before the resend came, or S3
// was down through both, the resend staged behind the original.
func TestStagedResendAudited(t *testing.T) {
	testenv.RequireTools(t, "storescu")
	for _, tc := range []struct {
		name        string
		s3Down, tls bool
	}{
		{"uploaded before the resend", false, false},
		{"both staged while S3 is down", true, false},
		{"over TLS", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) { stagedResend(t, tc.s3Down, tc.tls) })
	}
}

func stagedResend(t *testing.T, s3Down, overTLS bool) {
	srv := s3test.NewServer(t, bucket)
	proxy := s3test.NewFaultProxy(t, srv.URL, s3test.Plan{})
	args := []string{"--staging", t.TempDir()}
	var tlsArgs []string
	if overTLS { // LOCAL_AE bound to site A's certificate
		p := sitepki.New(t)
		tlsArgs = p.DCMTK(&p.A, "+py")
		args = append(append(args, "--calling-aes", "LOCAL_AE#"+sitepki.SiteA), p.SCPArgs("127.0.0.1:0")...)
	}
	scp := startS3SCP(t, proxy.URL, args...)
	port := scp.Port()
	if overTLS {
		port = scp.TLSPort()
	}

	files, uids, err := synth.Series(t.TempDir(), "1.2.826.0.1.3680043.2.9", "P9", "Test^Resend", 64, 4096, 64<<10, 3<<20) // the last one a large staged object
	if err != nil {
		t.Fatal(err)
	}
	sops := map[string]bool{}
	for _, sop := range uids {
		sops[sop] = true
	}
	incoming := func() []string { return keysUnder(t, srv, storePrefix+"incoming/") }
	drained := func() bool {
		return scp.Metric(t, stagedstore.MetricBacklogObjects) == 0
	}
	send := func(what string) {
		t.Helper()
		args := slices.Concat(tlsArgs, []string{"-aet", "LOCAL_AE", "-aec", "REMOTE_AE", scp.Host(), port}, files)
		if r := dcmtk.Run(t, time.Minute, "storescu", args...); r.Err != nil {
			t.Fatalf("storescu, %s: %v\n%s", what, r.Err, r.Output)
		}
	}

	const outage = 10 * time.Second
	upAt := time.Now().Add(outage)
	if s3Down {
		proxy.Down(outage)
	}
	send("the first time")
	if !s3Down {
		testenv.EventuallyWithin(t, time.Minute, "first transfer uploaded", func() bool { return len(incoming()) == len(files) && drained() })
	}
	send("again")
	if s3Down {
		if time.Now().After(upAt) {
			t.Fatal("storescu outlasted the outage: the resend may not have been staged behind the original")
		}
	}
	testenv.EventuallyWithin(t, 2*time.Minute, "every staged object and record uploaded", drained)
	scp.Stop(t)

	// S3: each object once, as the first association stored it.
	held := map[string]string{} // SOP Instance UID -> key
	var firstAssoc string
	for _, k := range incoming() {
		m := keyLayout.FindStringSubmatch(k)
		if m == nil {
			t.Errorf("object outside the documented layout (a conflict copy?): %s", k)
			continue
		}
		checkStoredObject(t, srv, k, m[3])
		_, meta, err := srv.Object(k)
		if err != nil {
			t.Fatal(err)
		}
		if a := meta["X-Amz-Meta-Association-Id"]; firstAssoc == "" {
			firstAssoc = a
		} else if a != firstAssoc {
			t.Errorf("%s stored by association %s, another by %s: the first transfer stores every object", k, a, firstAssoc)
		}
		held[m[3]] = strings.TrimPrefix(k, storePrefix)
	}
	if len(held) != len(sops) {
		t.Fatalf("S3 holds %d objects under their keys, sent %d", len(held), len(sops))
	}

	// The trail.
	assocs := map[string]associationaudit.Record{} // association id -> released record
	var dups []associationaudit.Record
	for _, r := range s3Records(t, srv) {
		switch r.Event {
		case associationaudit.EventReleased:
			assocs[r.AssociationID] = r
			if overTLS && (r.TLS == nil || r.TLS.CertificateName != sitepki.SiteA) {
				t.Errorf("released record over TLS names the certificate %+v", r.TLS)
			}
		case associationaudit.EventDuplicate:
			dups = append(dups, r)
		case associationaudit.EventAccepted, associationaudit.EventApplicationStart, associationaudit.EventApplicationStop:
		default:
			t.Errorf("unexpected record %+v", r)
		}
	}
	if len(assocs) != 2 {
		t.Fatalf("%d associations released, want 2: %v", len(assocs), assocs)
	}
	var second string
	for id, r := range assocs {
		if r.Instances != len(files) {
			t.Errorf("association %s released with %d instances stored, want %d", id, r.Instances, len(files))
		}
		if id != firstAssoc {
			second = id
		}
	}
	seen := map[string]int{}
	for _, d := range dups {
		seen[d.SOPInstanceUID]++
		if d.AssociationID != second || d.CallingAE != "LOCAL_AE" || !reflect.DeepEqual(d.TLS, assocs[second].TLS) || d.CalledAE != "REMOTE_AE" || d.PeerAddr == "" ||
			d.ObjectKey != held[d.SOPInstanceUID] || d.SOPClassUID != synth.SOPClassUID ||
			d.StudyInstanceUID != "1.2.826.0.1.3680043.2.9" || d.Implementation == "" ||
			d.Seq != associationaudit.StagedSeq(d.Time) {
			t.Errorf("duplicate record %+v (TLS %+v); want the second association %s's, naming the object held %s", d, d.TLS, second, held[d.SOPInstanceUID])
		}
	}
	for sop := range sops {
		if seen[sop] != 1 {
			t.Errorf("%d duplicate records of %s, want 1", seen[sop], sop)
		}
	}
	if len(dups) != len(sops) {
		t.Errorf("%d duplicate records, want %d", len(dups), len(sops))
	}
}
