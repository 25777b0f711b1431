package auditmessage_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/auditmessage"
	"github.com/dicom-ingest/dicom-ingest/shared/auditmessage/auditmessagetest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/commitment"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomuid"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
	pt "github.com/dicom-ingest/dicom-ingest/shared/pipeline/pipelinetest"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

const (
	study  = "1.2.826.0.1.3680043.10.1"
	series = "1.2.826.0.1.3680043.10.1.1"
	sop1   = "1.2.826.0.1.3680043.10.1.1.1"
	sop2   = "1.2.826.0.1.3680043.10.1.1.2"
	tsELE  = "1.2.840.10008.1.2.1"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func key(sop string) string {
	return "incoming/2026/01/15/" + study + "/" + series + "/" + sop + ".dcm"
}

func ct(sop string) pt.Instance {
	return pt.Instance{StudyUID: study, SeriesUID: series, SOPUID: sop, PatientID: "PID-1", PatientName: "Doe^Jane", Rows: 8, Columns: 8, SourceAE: "MODALITY1"}
}

// instanceRecords runs the pipeline over a stored instance, a conflicting
// resend of it and an invalid instance, and returns their audit records by
// outcome: the records exactly as the pipeline writes them.
func instanceRecords(t *testing.T) map[string]pipeline.AuditRecord {
	t.Helper()
	ctx := context.Background()
	f := pt.New()
	p := f.Pipeline()
	data := ct(sop1).Build()
	f.Objects.Add(key(sop1), data, pt.SCPMetadata(pt.CTStorage, sop1, tsELE, sha(data)))
	if _, err := p.ProcessObject(ctx, key(sop1)); err != nil {
		t.Fatal(err)
	}
	changed := ct(sop1)
	changed.PatientName = "Doe^John"
	data = changed.Build()
	ck := strings.TrimSuffix(key(sop1), ".dcm") + ".conflict-" + sha(data)[:16] + ".dcm"
	m := pt.SCPMetadata(pt.CTStorage, sop1, tsELE, sha(data))
	m["conflict"] = "true"
	f.Objects.Add(ck, data, m)
	if _, err := p.ProcessObject(ctx, ck); err != nil {
		t.Fatal(err)
	}
	bad := ct(sop2)
	bad.StudyUID = "1.2.3.abc"
	data = bad.Build()
	f.Objects.Add(key(sop2), data, pt.SCPMetadata(pt.CTStorage, sop2, tsELE, sha(data)))
	if _, err := p.ProcessObject(ctx, key(sop2)); err != nil {
		t.Fatal(err)
	}
	// An identical resend, received on another day under another key.
	data = ct(sop1).Build()
	rk := strings.Replace(key(sop1), "/01/15/", "/01/16/", 1)
	m = pt.SCPMetadata(pt.CTStorage, sop1, tsELE, sha(data))
	m["received-at"], m["association-id"] = "2026-01-16T08:00:00Z", "assoc8"
	f.Objects.Add(rk, data, m)
	if _, err := p.ProcessObject(ctx, rk); err != nil {
		t.Fatal(err)
	}
	// Resends the SCP found held, byte for byte, under their keys: of the
	// stored instance, and of the quarantined one.
	for i, sop := range []string{sop1, sop2} {
		r := associationaudit.Duplicate(associationaudit.Record{Time: time.Date(2026, 1, 15, 11, 0, 0, 0, time.UTC), AssociationID: "assoc9",
			CallingAE: "MODALITY1", CalledAE: "INGEST", PeerAddr: "10.1.2.3:40001", Seq: uint64(i + 1)}, pt.CTStorage, sop, study, series, key(sop))
		if err := f.ProcessSCPRecord(ctx, p, r); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]pipeline.AuditRecord{}
	for _, r := range f.Audit.All() {
		name := "instance-" + r.Outcome
		if strings.HasPrefix(r.ID, "assoc:") {
			name += "-found-held"
			if r.QuarantineKey != "" {
				name = "instance-duplicate-of-quarantined"
			}
		}
		out[name] = r
	}
	for _, want := range []string{"instance-stored", "instance-conflict", "instance-duplicate", "instance-rejected", "instance-duplicate-found-held", "instance-duplicate-of-quarantined"} {
		if _, ok := out[want]; !ok {
			t.Fatalf("the pipeline wrote no %s record: %v", want, out)
		}
	}
	return out
}

var tlsPeer = &associationaudit.TLSPeer{
	Subject: "CN=pacs.site-a.example,O=Site A", Issuer: "CN=Site CA,O=Hospital", Serial: "1A2B3C4D",
	SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", CertificateName: "pacs.site-a.example",
}

// refusedPeer is a certificate the TLS handshake refused (another CA's), as
// presented: no name was bound to it.
var refusedPeer = &associationaudit.TLSPeer{
	Subject: "CN=pacs.site-a.example,O=Elsewhere", Issuer: "CN=Some CA,O=Elsewhere", Serial: "00FF",
	SHA256: "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752",
}

// associationRecords maps SCP association records through the pipeline's
// own mapping, as the audit function and local mode do.
func associationRecords() map[string]pipeline.AuditRecord {
	at := time.Date(2026, 1, 15, 10, 20, 30, 123456789, time.UTC)
	base := associationaudit.Record{Time: at, AssociationID: "assoc7", CallingAE: "MODALITY1", CalledAE: "INGEST",
		PeerAddr: "10.1.2.3:40000", Implementation: "TEST_1"}
	with := func(seq uint64, mod func(*associationaudit.Record)) pipeline.AuditRecord {
		r := base
		r.Seq = seq
		mod(&r)
		return pipeline.AssociationAuditRecord(r, "dicom-ingest-test")
	}
	abortSource, abortReason := 2, 0
	return map[string]pipeline.AuditRecord{
		"association-accepted": with(1, func(r *associationaudit.Record) { r.Event = associationaudit.EventAccepted }),
		"association-released": with(2, func(r *associationaudit.Record) {
			r.Event, r.Instances, r.Bytes = associationaudit.EventReleased, 2, 4096
		}),
		"association-aborted": with(3, func(r *associationaudit.Record) {
			r.Event, r.AbortSource, r.AbortReason, r.Reason = associationaudit.EventAborted, &abortSource, &abortReason, "connection reset by peer"
		}),
		"association-rejected": with(4, func(r *associationaudit.Record) {
			r.Event, r.CallingAE, r.RejectResult, r.RejectSource, r.RejectReason = associationaudit.EventRejected, "EVIL", 1, 1, 3
			r.Reason = "calling AE title not recognized"
		}),
		// A peer that called another AE title than ours (01 01 07): the
		// record names ours as the SCP's (AETitle), the title called as
		// CalledAE.
		"association-rejected-called-ae": with(16, func(r *associationaudit.Record) {
			r.Event, r.CalledAE, r.AETitle, r.RejectResult, r.RejectSource, r.RejectReason = associationaudit.EventRejected, "WRONG_AE", "INGEST", 1, 1, 7
			r.Reason = "dicomnet: association rejected: Rejected Permanent, Service User, Called AE Title Not Recognized (01 01 07)"
		}),
		"association-rejected-tls-called-ae": with(18, func(r *associationaudit.Record) {
			r.Event, r.CalledAE, r.AETitle, r.RejectResult, r.RejectSource, r.RejectReason, r.TLS = associationaudit.EventRejected, "WRONG_AE", "INGEST", 1, 1, 7, tlsPeer
			r.Reason = "dicomnet: association rejected: Rejected Permanent, Service User, Called AE Title Not Recognized (01 01 07)"
		}),
		// The same, written before records named our AE title.
		"association-rejected-called-ae-legacy": with(17, func(r *associationaudit.Record) {
			r.Event, r.CalledAE, r.RejectResult, r.RejectSource, r.RejectReason = associationaudit.EventRejected, "WRONG_AE", 1, 1, 7
			r.Reason = "dicomnet: association rejected: Rejected Permanent, Service User, Called AE Title Not Recognized (01 01 07)"
		}),
		"association-rejected-unnamed": with(5, func(r *associationaudit.Record) {
			r.Event, r.CallingAE, r.CalledAE, r.Reason = associationaudit.EventRejected, "", "", "dicomnet: not an A-ASSOCIATE-RQ"
		}),
		"store-failed": with(6, func(r *associationaudit.Record) {
			r.Event, r.Status, r.Reason = associationaudit.EventStoreFailed, "A700", "storage failed, please retry"
			r.SOPClassUID, r.SOPInstanceUID = pt.CTStorage, sop1
		}),
		// A resend the SCP found held, as the SCP alone records it (the
		// pipeline's record of it is an instance's: instance-duplicate),
		// with the study and series its header named, as the audit
		// writer and the staged store's uploader write it.
		"duplicate": with(7, func(r *associationaudit.Record) {
			*r = associationaudit.Duplicate(*r, pt.CTStorage, sop1, study, series, key(sop1))
		}),
		"commitment-refused": with(9, func(r *associationaudit.Record) {
			r.Event, r.Status, r.Reason = associationaudit.EventCommitmentRefused, "0124", "no report address for this AE title"
			r.SOPClassUID = dicomuid.StorageCommitment
		}),
		"application-start": with(10, func(r *associationaudit.Record) {
			r.Event, r.AssociationID, r.CallingAE, r.PeerAddr = associationaudit.EventApplicationStart, "5eed", "", ""
		}),
		"application-stop": with(11, func(r *associationaudit.Record) {
			r.Event, r.AssociationID, r.CallingAE, r.PeerAddr, r.Reason = associationaudit.EventApplicationStop, "5eed", "", "", "shutdown requested"
		}),
		"application-start-unclean": with(13, func(r *associationaudit.Record) {
			r.Event, r.AssociationID, r.CallingAE, r.PeerAddr = associationaudit.EventApplicationStart, "5eee", "", ""
			r.PreviousRuns = []associationaudit.UncleanRun{{Instance: "5eed", AETitle: "INGEST", LastSeq: 7, Written: 5, CountedLost: 1, NotWritten: 1}}
			r.Reason = "previous run 5eed (AE INGEST, …) stopped uncleanly, …"
		}),
		"unclean-stop-found": with(15, func(r *associationaudit.Record) {
			r.Event, r.AssociationID, r.CallingAE, r.PeerAddr = associationaudit.EventUncleanStopFound, "5eee", "", ""
			r.PreviousRuns = []associationaudit.UncleanRun{{Instance: "5eed", AETitle: "INGEST", LastSeq: 7, Written: 5, CountedLost: 1, NotWritten: 1}}
			r.Reason = "previous run 5eed (AE INGEST, …) stopped uncleanly, …"
		}),
		"application-stop-lost": with(14, func(r *associationaudit.Record) {
			r.Event, r.AssociationID, r.CallingAE, r.PeerAddr, r.Reason = associationaudit.EventApplicationStop, "5eed", "", "", "shutdown requested"
			r.Lost = &associationaudit.LostRecords{Count: 2, Seqs: []uint64{4, 6}}
		}),
		"association-accepted-tls": with(7, func(r *associationaudit.Record) {
			r.Event, r.TLS = associationaudit.EventAccepted, tlsPeer
		}),
		"association-rejected-tls-handshake": with(12, func(r *associationaudit.Record) {
			r.Event, r.CallingAE, r.CalledAE, r.TLS = associationaudit.EventRejected, "", "", refusedPeer
			r.Reason = "TLS handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"
		}),
		"association-rejected-tls": with(8, func(r *associationaudit.Record) {
			r.Event, r.RejectResult, r.RejectSource, r.RejectReason, r.TLS = associationaudit.EventRejected, 1, 1, 3, tlsPeer
			r.Reason = "client certificate does not match the calling AE title"
		}),
	}
}

// unparseableRecord is the record the pipeline appends for an association
// record it cannot read: no participants, no object.
func unparseableRecord(t *testing.T) pipeline.AuditRecord {
	t.Helper()
	f := pt.New()
	k := "audit/2026/01/15/x-000001-association-accepted.json"
	f.Objects.Add(k, []byte("{nope"), nil)
	if err := f.Pipeline().ProcessAuditRecord(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	recs := f.Audit.All()
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	r.Time, r.Day = time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC), "2026-01-15"
	return r
}

// commitmentRecords runs two Storage Commitment transactions through the
// pipeline: one committed and reported, one with an instance never sent
// whose report is given up on. Its records are returned by outcome.
func commitmentRecords(t *testing.T) map[string]pipeline.AuditRecord {
	t.Helper()
	ctx := context.Background()
	f := pt.New()
	p := f.Pipeline()
	now := time.Date(2026, 1, 15, 10, 21, 0, 0, time.UTC)
	p.Now = func() time.Time { return now }
	data := ct(sop1).Build()
	f.Objects.Add(key(sop1), data, pt.SCPMetadata(pt.CTStorage, sop1, tsELE, sha(data)))
	if _, err := p.ProcessObject(ctx, key(sop1)); err != nil {
		t.Fatal(err)
	}
	request := func(n int, txn string, sops ...string) {
		r := pipeline.CommitmentRequest{SchemaVersion: 1, TransactionUID: txn, CallingAE: "PACS", CalledAE: "INGEST",
			PeerAddr: "10.1.2.3:4567", AssociationID: fmt.Sprintf("assoc%d", n), MessageID: 1, ReceivedAt: now}
		for _, s := range sops {
			r.Refs = append(r.Refs, commitment.Ref{SOPClassUID: pt.CTStorage, SOPInstanceUID: s})
		}
		body, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Objects.Put(ctx, r.Key(), body, "application/json", nil); err != nil {
			t.Fatal(err)
		}
		if err := p.ProcessCommitmentRequest(ctx, r.Key()); err != nil {
			t.Fatal(err)
		}
		if _, err := p.RunCommitments(ctx, now); err != nil {
			t.Fatal(err)
		}
	}
	request(1, "1.2.826.0.1.3680043.10.9.1", sop1)
	f.Reporter.Err = errors.New("connection refused")
	request(2, "1.2.826.0.1.3680043.10.9.2", sop1, sop2)
	for _, d := range []time.Duration{pipeline.DefaultCommitmentWait, pipeline.DefaultCommitmentReportFor} {
		now = now.Add(d)
		if _, err := p.RunCommitments(ctx, now); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]pipeline.AuditRecord{}
	for _, r := range f.Audit.All() {
		if strings.HasPrefix(r.ID, "commitment:") {
			out["commitment-"+strings.TrimPrefix(r.Outcome, "commitment-")] = r
		}
	}
	for _, want := range []string{"commitment-requested", "commitment-committed", "commitment-failures", "commitment-reported", "commitment-undeliverable"} {
		if _, ok := out[want]; !ok {
			t.Fatalf("the pipeline wrote no %s record: %v", want, slices.Collect(maps.Keys(out)))
		}
	}
	return out
}

func allRecords(t *testing.T) map[string]pipeline.AuditRecord {
	recs := instanceRecords(t)
	for k, v := range associationRecords() {
		recs[k] = v
	}
	for k, v := range commitmentRecords(t) {
		recs[k] = v
	}
	recs["unparseable-record"] = unparseableRecord(t)
	return recs
}

// TestRenderEveryRecordType renders one record of every kind the audit
// trail holds, checks each message against the PS3.15 A.5.1 schema and its
// event's table in A.5.3 (auditmessagetest.Validate), and against its
// golden file (go test -update rewrites them). A record that gives no
// message has a golden file saying so.
func TestRenderEveryRecordType(t *testing.T) {
	for name, rec := range allRecords(t) {
		t.Run(name, func(t *testing.T) {
			msgs, err := auditmessage.Render(rec)
			if err != nil {
				t.Fatal(err)
			}
			var golden bytes.Buffer
			if len(msgs) == 0 {
				golden.WriteString("<!-- no message: kept in the audit trail only -->\n")
			}
			for _, m := range msgs {
				auditmessagetest.Validate(t, m.XML)
				if bytes.ContainsAny(m.XML, "\r\n") {
					t.Errorf("%s: message spans lines", m.ID)
				}
				golden.WriteString("<!-- " + m.ID + " -->\n")
				golden.Write(m.XML)
				golden.WriteString("\n")
			}
			path := filepath.Join("testdata", "golden", name+".xml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, golden.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(want, golden.Bytes()) {
				t.Errorf("%s differs from the rendering (go test -update rewrites it):\ngot:\n%s", path, golden.Bytes())
			}
		})
	}
}

func TestRenderEvents(t *testing.T) {
	recs := allRecords(t)
	// A resend of an object that names no patient (Patient ID and Name
	// are type 2): the pipeline's record of it is sent as the stored
	// record of such an object is, with an empty patient.
	anonymous := recs["instance-duplicate"]
	anonymous.PatientID, anonymous.PatientName = "", ""
	anonymous.ParticipantObjects = slices.DeleteFunc(slices.Clone(anonymous.ParticipantObjects), func(o pipeline.AuditParticipantObject) bool {
		return o.TypeCode == 1 && o.TypeRole == 1
	})
	recs["instance-duplicate-no-patient"] = anonymous
	tests := []struct {
		record string
		events []string // EventID of each message, in order
	}{
		{"instance-stored", []string{"110104"}},
		{"instance-conflict", []string{"110104"}},
		{"instance-rejected", []string{"110104"}},
		{"instance-duplicate", []string{"110104"}},
		{"instance-duplicate-no-patient", []string{"110104"}},
		{"instance-duplicate-found-held", []string{"110104"}},
		{"instance-duplicate-of-quarantined", []string{"110104"}},
		// The SCP's own record of a resend names no patient: the
		// pipeline's does, and is sent.
		{"duplicate", nil},
		// No study, no patient: neither A.5.3.3 nor A.5.3.7 can be met.
		{"association-accepted", nil},
		{"association-released", nil},
		{"association-aborted", nil},
		{"association-rejected", []string{"110113"}},
		{"association-rejected-unnamed", []string{"110113"}},
		{"association-rejected-called-ae", []string{"110113"}},
		{"association-rejected-called-ae-legacy", []string{"110113"}},
		{"association-rejected-tls-called-ae", []string{"110113", "110114"}},
		{"store-failed", nil},
		{"commitment-refused", nil},
		{"commitment-requested", nil},
		{"commitment-committed", nil},
		{"commitment-failures", nil},
		{"commitment-reported", nil},
		{"commitment-undeliverable", nil},
		{"unparseable-record", []string{"110113"}},
		{"association-accepted-tls", []string{"110114"}},
		{"association-rejected-tls", []string{"110113", "110114"}},
		{"association-rejected-tls-handshake", []string{"110113", "110114"}},
		{"application-start", []string{"110100"}},
		{"application-stop", []string{"110100"}},
		{"application-start-unclean", []string{"110100"}},
		{"application-stop-lost", []string{"110100"}},
		{"unclean-stop-found", []string{"110113"}},
	}
	listed := map[string]bool{}
	for _, tt := range tests {
		listed[tt.record] = true
	}
	for name := range recs {
		if !listed[name] {
			t.Errorf("record %s: no messages listed for it", name)
		}
	}
	for _, tt := range tests {
		t.Run(tt.record, func(t *testing.T) {
			msgs, err := auditmessage.Render(recs[tt.record])
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range msgs {
				got = append(got, parse(t, m.XML).Event.EventID.Code)
			}
			if strings.Join(got, ",") != strings.Join(tt.events, ",") {
				t.Errorf("events = %v, want %v", got, tt.events)
			}
		})
	}
	t.Run("rejected association is a node authentication security alert", func(t *testing.T) {
		msgs, _ := auditmessage.Render(recs["association-rejected"])
		m := parse(t, msgs[0].XML)
		if len(m.Event.TypeCodes) == 0 || m.Event.TypeCodes[0].Code != "110126" || m.Event.Outcome != "4" {
			t.Errorf("event = %+v", m.Event)
		}
	})
	t.Run("start and stop: Application Activity of our AE, no peer", func(t *testing.T) {
		for name, want := range map[string]string{"application-start": "110120", "application-stop": "110121"} {
			msgs, _ := auditmessage.Render(recs[name])
			m := parse(t, msgs[0].XML)
			if len(m.Event.TypeCodes) != 1 || m.Event.TypeCodes[0].Code != want || m.Event.Outcome != "0" {
				t.Errorf("%s: event = %+v", name, m.Event)
			}
			if len(m.Participants) != 1 || m.Participants[0].UserID != "INGEST" || m.Participants[0].UserIsRequestor ||
				m.Participants[0].NetworkAccess != "" || m.Participants[0].Role.Code != "110150" {
				t.Errorf("%s: participants = %+v", name, m.Participants)
			}
		}
	})
	// A.5.3.1 leaves EventOutcomeIndicator unspecialized, requires its
	// type code and has no participant objects: a start after an unclean
	// stop, a stop with records lost, are minor failures with our type
	// code beside it and the facts in EventOutcomeDescription.
	t.Run("start after an unclean stop, stop with records lost: minor failures", func(t *testing.T) {
		for _, tt := range []struct {
			record, typeCode, ours, says string
		}{
			{"application-start-unclean", "110120", "unclean-stop", "previous run 5eed"},
			{"application-stop-lost", "110121", "audit-records-lost", "shutdown requested; 2 audit records of this run lost before its stop: seq 4, 6"},
		} {
			msgs, err := auditmessage.Render(recs[tt.record])
			if err != nil {
				t.Fatal(err)
			}
			m := parse(t, msgs[0].XML)
			if len(m.Event.TypeCodes) != 2 || m.Event.TypeCodes[0].Code != tt.typeCode || m.Event.TypeCodes[1].Code != tt.ours || m.Event.Outcome != "4" {
				t.Errorf("%s: event = %+v", tt.record, m.Event)
			}
			if !strings.Contains(string(msgs[0].XML), tt.says) || len(m.Objects) != 0 {
				t.Errorf("%s: message %s", tt.record, msgs[0].XML)
			}
		}
	})
	// A running SCP's report of a dead run is no Application Activity
	// (nothing started): a Security Alert our AE reports, 110133 Audit
	// Recording Stopped with our type code, a minor failure as the start's
	// is, the runs named in EventOutcomeDescription (an alert subject is
	// optional, and named by a URI or node ID, which a run has not).
	t.Run("unclean stop found by a running SCP: Security Alert, Audit Recording Stopped", func(t *testing.T) {
		msgs, err := auditmessage.Render(recs["unclean-stop-found"])
		if err != nil {
			t.Fatal(err)
		}
		m := parse(t, msgs[0].XML)
		if len(m.Event.TypeCodes) != 2 || m.Event.TypeCodes[0].Code != "110133" || m.Event.TypeCodes[1].Code != "unclean-stop-found" ||
			m.Event.Outcome != "4" {
			t.Errorf("event = %+v", m.Event)
		}
		if len(m.Participants) != 1 || m.Participants[0].UserID != "INGEST" || m.Participants[0].UserIsRequestor || m.Participants[0].Role.Code != "110150" {
			t.Errorf("participants = %+v", m.Participants)
		}
		if !strings.Contains(string(msgs[0].XML), "previous run 5eed") || len(m.Objects) != 0 {
			t.Errorf("message %s", msgs[0].XML)
		}
	})
	t.Run("rejected association: our AE reports, the peer performed", func(t *testing.T) {
		msgs, _ := auditmessage.Render(recs["association-rejected"])
		m := parse(t, msgs[0].XML)
		if len(m.Participants) != 2 || m.Participants[0].UserID != "INGEST" || m.Participants[0].Role.Code != "110150" ||
			m.Participants[1].UserID != "EVIL" || m.Participants[1].UserIsRequestor || m.Participants[1].NetworkAccess != "10.1.2.3" {
			t.Errorf("participants = %+v", m.Participants)
		}
	})
	// A peer that called another AE title than ours: the alert was
	// reported by an application of the title it called (Application
	// role, UserID WRONG_AE), which is not ours and does not exist, and
	// the failed login's system was that title too. The reporter is our AE
	// (the audit source when the record does not name it); the title
	// called is in the description.
	t.Run("rejected for the called AE title: our AE reports, not the title called", func(t *testing.T) {
		for name, reporter := range map[string]string{"association-rejected-called-ae": "INGEST", "association-rejected-called-ae-legacy": "dicom-ingest-test",
			"association-rejected-tls-called-ae": "INGEST"} {
			msgs, _ := auditmessage.Render(recs[name])
			for _, raw := range msgs {
				if strings.Contains(string(raw.XML), `UserID="WRONG_AE"`) || strings.Contains(string(raw.XML), "AETITLES=WRONG_AE") {
					t.Errorf("%s: the title called is a participant: %s", name, raw.XML)
				}
			}
			m := parse(t, msgs[0].XML)
			if len(m.Participants) != 2 || m.Participants[0].UserID != reporter || m.Participants[0].Role.Code != "110150" ||
				m.Participants[1].UserID != "MODALITY1" || m.Participants[1].UserIsRequestor {
				t.Errorf("%s: participants = %+v", name, m.Participants)
			}
			if !strings.Contains(m.Event.OutcomeDescription, `called AE title "WRONG_AE"`) {
				t.Errorf("%s: description %q does not name the title called", name, m.Event.OutcomeDescription)
			}
		}
	})
	// A.5.3.7's EventActionCode: C "if the receiver did not hold copies
	// of the instances transferred", R "if the receiver already holds
	// copies of the SOP Instances transferred, and has determined that no
	// changes are needed to the copies held". An identical resend is the
	// latter (nothing new stored); it was sent and kept as C, a creation.
	t.Run("identical resend: action R, the copy held unchanged", func(t *testing.T) {
		for name, want := range map[string]string{"instance-duplicate": "R", "instance-duplicate-no-patient": "R", "duplicate": "R",
			"instance-stored": "C", "instance-conflict": "C", "instance-rejected": "C"} {
			if got := recs[name].EventActionCode; got != want {
				t.Errorf("%s: EventActionCode %q in the trail, want %q", name, got, want)
			}
			msgs, _ := auditmessage.Render(recs[name])
			if len(msgs) > 0 {
				if got := parse(t, msgs[0].XML).Event.ActionCode; got != want {
					t.Errorf("%s: EventActionCode %q sent, want %q", name, got, want)
				}
			}
		}
	})
	t.Run("TLS identity: login message, certificate named everywhere", func(t *testing.T) {
		msgs, _ := auditmessage.Render(recs["association-accepted-tls"])
		if msgs[0].ID != recs["association-accepted-tls"].ID+auditmessage.UserAuthenticationSuffix {
			t.Errorf("user authentication id = %q", msgs[0].ID)
		}
		for _, raw := range msgs {
			m := parse(t, raw.XML)
			var cert *parsedObject
			for i := range m.Objects {
				if m.Objects[i].ID == tlsPeer.SHA256 {
					cert = &m.Objects[i]
				}
			}
			if cert == nil || cert.Name != tlsPeer.Subject {
				t.Errorf("%s: no certificate object: %+v", raw.ID, m.Objects)
			}
		}
		ua := parse(t, msgs[0].XML)
		if ua.Event.TypeCodes[0].Code != "110122" || ua.Event.Outcome != "0" || ua.Participants[0].UserID != tlsPeer.Subject ||
			ua.Participants[0].NetworkAccess != "10.1.2.3" || !ua.Participants[0].UserIsRequestor {
			t.Errorf("user authentication = %+v", ua)
		}
		rej, _ := auditmessage.Render(recs["association-rejected-tls"])
		if parse(t, rej[1].XML).Event.Outcome != "4" {
			t.Error("a refused certificate is not a failed login")
		}
	})
	// A.5.3.11: the certificate a Security Alert is about is its Alert
	// Subject, a system object named by a URI, with an Alert Description;
	// whether the handshake refused it or it did not match the AE title.
	for name, peer := range map[string]*associationaudit.TLSPeer{
		"association-rejected-tls-handshake": refusedPeer, "association-rejected-tls": tlsPeer,
	} {
		t.Run("alert subject: "+name, func(t *testing.T) {
			msgs, _ := auditmessage.Render(recs[name])
			m := parse(t, msgs[0].XML)
			if m.Event.EventID.Code != "110113" || len(m.Objects) != 1 {
				t.Fatalf("message = %+v", m)
			}
			o := m.Objects[0]
			if o.ID != "nih:sha-256;"+peer.SHA256 || o.TypeCode != "2" || o.Role != "13" || o.IDType.Code != "12" ||
				o.IDType.System != "RFC-3881" || o.Name != peer.Subject {
				t.Errorf("alert subject = %+v", o)
			}
			if o.detail(t, "Issuer") != peer.Issuer || o.detail(t, "SerialNumber") != peer.Serial ||
				o.detail(t, "Alert Description") != recs[name].Reason {
				t.Errorf("alert subject details = %+v", o.Details)
			}
		})
	}
}

// TestRenderNamesEveryParticipant: every ActiveParticipant of every
// message has a UserID, and AE titles (A.5.2.2) only where there is one. A
// connection refused before it named an AE title (a failed TLS handshake,
// a PDU that is no A-ASSOCIATE-RQ) gave a destination participant with
// UserID "" and AlternativeUserID "AETITLES=", which names nobody.
func TestRenderNamesEveryParticipant(t *testing.T) {
	recs := allRecords(t)
	// A record the pipeline appended before it left such participants
	// out, as the audit table still holds it.
	legacy := recs["association-rejected-unnamed"]
	src, dst := pipeline.CodedValue{Code: "110153", System: "DCM"}, pipeline.CodedValue{Code: "110152", System: "DCM"}
	legacy.Participants = []pipeline.AuditParticipant{
		{AlternativeID: "AETITLES=", UserIsRequestor: true, NetworkAccess: "10.1.2.3", NetworkType: 2, RoleIDCode: &src},
		{AlternativeID: "AETITLES=", RoleIDCode: &dst},
	}
	recs["legacy-association-rejected-unnamed"] = legacy
	for name, rec := range recs {
		t.Run(name, func(t *testing.T) {
			msgs, err := auditmessage.Render(rec)
			if err != nil {
				t.Fatal(err)
			}
			for _, raw := range msgs {
				for i, p := range parse(t, raw.XML).Participants {
					if p.UserID == "" {
						t.Errorf("%s: participant %d has no UserID", raw.ID, i)
					}
					if p.AlternativeID == "AETITLES=" {
						t.Errorf("%s: participant %d (%s) names an empty AE title", raw.ID, i, p.UserID)
					}
				}
			}
		})
	}
}

// TestRenderWithholdsPatientName: the patient appears by ID, which A.5
// requires, and never by name.
func TestRenderWithholdsPatientName(t *testing.T) {
	for name, rec := range instanceRecords(t) {
		msgs, err := auditmessage.Render(rec)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range msgs {
			if bytes.Contains(raw.XML, []byte("Doe")) {
				t.Errorf("%s: patient name in the message:\n%s", name, raw.XML)
			}
			m := parse(t, raw.XML)
			found := false
			for _, o := range m.Objects {
				if o.TypeCode == "1" && o.Role == "1" && o.ID == "PID-1" {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: no patient participant object with the patient ID", name)
			}
		}
	}
}

func TestRenderRefusesRecordsWithoutIdentity(t *testing.T) {
	for _, rec := range []pipeline.AuditRecord{{}, {ID: "x"}} {
		if _, err := auditmessage.Render(rec); err == nil {
			t.Errorf("Render(%+v) succeeded", rec)
		}
	}
}

// FuzzRender: any text in a record still renders a well-formed, one-line
// message (AE titles, reasons and addresses come from the network).
func FuzzRender(f *testing.F) {
	f.Add("MODALITY1", "10.1.2.3:40000", "calling AE not allowed", "CN=x")
	f.Add("\x00<&>\"'", "[::1]:1", "\n\r\t]]>", "\xff\xfe")
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, ae, peer, reason, subject string) {
		r := pipeline.AssociationAuditRecord(associationaudit.Record{
			Event: associationaudit.EventAccepted, AssociationID: "a", CallingAE: ae, CalledAE: ae, PeerAddr: peer,
			Reason: reason, TLS: &associationaudit.TLSPeer{Subject: subject, Issuer: reason, SHA256: ae},
		}, reason)
		msgs, err := auditmessage.Render(r)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if bytes.ContainsAny(m.XML, "\r\n") {
				t.Fatalf("message spans lines: %q", m.XML)
			}
			var v any
			if err := xml.Unmarshal(m.XML, &v); err != nil {
				t.Fatalf("not well-formed: %v\n%q", err, m.XML)
			}
		}
	})
}

type parsedMessage struct {
	Event struct {
		Outcome            string `xml:"EventOutcomeIndicator,attr"`
		ActionCode         string `xml:"EventActionCode,attr"`
		OutcomeDescription string `xml:"EventOutcomeDescription"`
		EventID            struct {
			Code string `xml:"csd-code,attr"`
		}
		TypeCodes []struct {
			Code string `xml:"csd-code,attr"`
		} `xml:"EventTypeCode"`
	} `xml:"EventIdentification"`
	Participants []struct {
		UserID          string `xml:"UserID,attr"`
		AlternativeID   string `xml:"AlternativeUserID,attr"`
		UserIsRequestor bool   `xml:"UserIsRequestor,attr"`
		NetworkAccess   string `xml:"NetworkAccessPointID,attr"`
		Role            struct {
			Code string `xml:"csd-code,attr"`
		} `xml:"RoleIDCode"`
	} `xml:"ActiveParticipant"`
	Objects []parsedObject `xml:"ParticipantObjectIdentification"`
}

type parsedObject struct {
	ID       string `xml:"ParticipantObjectID,attr"`
	TypeCode string `xml:"ParticipantObjectTypeCode,attr"`
	Role     string `xml:"ParticipantObjectTypeCodeRole,attr"`
	IDType   struct {
		Code   string `xml:"csd-code,attr"`
		System string `xml:"codeSystemName,attr"`
	} `xml:"ParticipantObjectIDTypeCode"`
	Name    string `xml:"ParticipantObjectName"`
	Details []struct {
		Type  string `xml:"type,attr"`
		Value []byte `xml:"value,attr"` // base64 in the document
	} `xml:"ParticipantObjectDetail"`
}

// detail is the decoded value of the object's detail of type typ.
func (o parsedObject) detail(t *testing.T, typ string) string {
	t.Helper()
	for _, d := range o.Details {
		if d.Type == typ {
			v, err := base64.StdEncoding.DecodeString(string(d.Value))
			if err != nil {
				t.Fatalf("detail %s: %v", typ, err)
			}
			return string(v)
		}
	}
	return ""
}

func parse(t *testing.T, doc []byte) parsedMessage {
	t.Helper()
	var m parsedMessage
	if err := xml.Unmarshal(doc, &m); err != nil {
		t.Fatalf("parse %s: %v", doc, err)
	}
	return m
}

// TestSchemaCatchesBrokenMessages keeps the schema check honest for every
// message the feed sends: each record kind's every message is valid against
// the PS3.15 A.5.1 schema as rendered, and fails it once broken in any of
// the ways A.5.1 forbids. It broke one association-rejected message alone,
// so a kind whose check never ran, or ran on something else, went unseen.
func TestSchemaCatchesBrokenMessages(t *testing.T) {
	outcome := regexp.MustCompile(`EventOutcomeIndicator="[0-9]+"`)
	date := regexp.MustCompile(`EventDateTime="[^"]*"`)
	detailValue := regexp.MustCompile(`(<ParticipantObjectDetail type="[^"]*" value=")[^"]*"`)
	breaks := []struct {
		name   string
		mutate func(string) string
	}{
		{"no audit source", func(s string) string { return cut(s, "<AuditSourceIdentification", "</AuditSourceIdentification>") }},
		{"outcome out of range", func(s string) string { return outcome.ReplaceAllString(s, `EventOutcomeIndicator="3"`) }},
		{"no participant", func(s string) string {
			for strings.Contains(s, "<ActiveParticipant") {
				s = cut(s, "<ActiveParticipant", "</ActiveParticipant>")
			}
			return s
		}},
		{"bad date", func(s string) string { return date.ReplaceAllString(s, `EventDateTime="yesterday"`) }},
		{"no event id", func(s string) string { return cut(s, "<EventID", "</EventID>") }},
		{"participants after the source", func(s string) string {
			i, j := strings.Index(s, "<ActiveParticipant"), strings.Index(s, "<AuditSourceIdentification")
			k := j + strings.Index(s[j:], "</AuditSourceIdentification>") + len("</AuditSourceIdentification>")
			return s[:i] + s[j:k] + s[i:j] + s[k:]
		}},
		{"object without ID type", func(s string) string {
			return cut(s, "<ParticipantObjectIDTypeCode", "</ParticipantObjectIDTypeCode>")
		}},
		{"detail not base64", func(s string) string { return detailValue.ReplaceAllString(s, `${1}!not base64!"`) }},
	}
	recs := allRecords(t)
	for _, name := range slices.Sorted(maps.Keys(recs)) {
		msgs, err := auditmessage.Render(recs[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, m := range msgs {
			good := string(m.XML)
			t.Run(name+strings.TrimPrefix(m.ID, recs[name].ID), func(t *testing.T) {
				if err := auditmessagetest.Check(t, m.XML); err != nil {
					t.Fatalf("as rendered, not valid: %v", err)
				}
				for _, b := range breaks {
					broken := b.mutate(good)
					if broken == good {
						// Nothing of the kind to break (an object, a
						// detail): the other breaks stand.
						continue
					}
					if auditmessagetest.Check(t, []byte(broken)) == nil {
						t.Errorf("%s: schema accepted\n%s", b.name, broken)
					}
				}
			})
		}
	}
}

// cut removes the first span from start to the end of end.
func cut(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return s
	}
	j := strings.Index(s[i:], end)
	if j < 0 {
		return s
	}
	return s[:i] + s[i+j+len(end):]
}

// TestCheckCatchesWhatA53Requires keeps the table honest: a message short
// of what its event's table in PS3.15 A.5.3 requires fails Check, and every
// event the table lists but 110102 (which no record can fill) is sent by
// some record.
func TestCheckCatchesWhatA53Requires(t *testing.T) {
	recs := allRecords(t)
	render := func(name string, i int) string {
		msgs, err := auditmessage.Render(recs[name])
		if err != nil || len(msgs) <= i {
			t.Fatalf("%s: %d messages, %v", name, len(msgs), err)
		}
		if err := auditmessage.Check(msgs[i].XML); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return string(msgs[i].XML)
	}
	stored, alert, tlsAlert, login, start := render("instance-stored", 0), render("association-rejected", 0),
		render("association-rejected-tls", 0), render("association-accepted-tls", 0), render("application-start", 0)
	for name, broken := range map[string]string{
		"transfer without patient":          cut(stored, `<ParticipantObjectIdentification ParticipantObjectID="PID-1"`, "</ParticipantObjectIdentification>"),
		"transfer without study":            cut(stored, `<ParticipantObjectIdentification ParticipantObjectID="1.2.826.0.1.3680043.10.1"`, "</ParticipantObjectIdentification>"),
		"transfer with two patients":        strings.Replace(stored, "</AuditMessage>", `<ParticipantObjectIdentification ParticipantObjectID="PID-2" ParticipantObjectTypeCode="1" ParticipantObjectTypeCodeRole="1"><ParticipantObjectIDTypeCode csd-code="2" codeSystemName="RFC-3881" originalText="Patient Number"></ParticipantObjectIDTypeCode><ParticipantObjectName></ParticipantObjectName></ParticipantObjectIdentification></AuditMessage>`, 1),
		"transfer study not a report":       strings.Replace(stored, `ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="3"`, `ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="4"`, 1),
		"transfer without destination":      strings.Replace(stored, `csd-code="110152"`, `csd-code="110151"`, 1),
		"transfer action E":                 strings.Replace(stored, `EventActionCode="C"`, `EventActionCode="E"`, 1),
		"begin transferring, no objects":    strings.Replace(cut(cut(stored, "<ParticipantObjectIdentification", "</ParticipantObjectIdentification>"), "<ParticipantObjectIdentification", "</ParticipantObjectIdentification>"), `EventActionCode="C" EventDateTime="2026-01-15T10:20:30.123Z" EventOutcomeIndicator="0"><EventID csd-code="110104"`, `EventActionCode="E" EventDateTime="2026-01-15T10:20:30.123Z" EventOutcomeIndicator="0"><EventID csd-code="110102"`, 1),
		"alert without type code":           cut(cut(alert, "<EventTypeCode", "</EventTypeCode>"), "<EventTypeCode", "</EventTypeCode>"),
		"alert without reporting process":   strings.Replace(alert, `csd-code="110150"`, `csd-code="110152"`, 1),
		"alert with the peer as requestor":  strings.Replace(alert, `UserID="EVIL" AlternativeUserID="AETITLES=EVIL" UserIsRequestor="false"`, `UserID="EVIL" AlternativeUserID="AETITLES=EVIL" UserIsRequestor="true"`, 1),
		"alert subject without description": strings.Replace(tlsAlert, `type="Alert Description"`, `type="Description"`, 1),
		"login without network access":      strings.Replace(login, `NetworkAccessPointID="10.1.2.3"`, ``, 1),
		"login without login type":          strings.Replace(login, `csd-code="110122"`, `csd-code="110126"`, 1),
		"start without application role":    strings.Replace(start, `csd-code="110150"`, `csd-code="110151"`, 1),
		"start without AE title":            strings.Replace(start, ` AlternativeUserID="AETITLES=INGEST"`, ``, 1),
		"unknown event":                     strings.Replace(start, `csd-code="110100"`, `csd-code="110106"`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			if broken == stored || broken == alert || broken == tlsAlert || broken == login || broken == start {
				t.Fatal("mutation did not apply")
			}
			if err := auditmessage.Check([]byte(broken)); err == nil {
				t.Errorf("Check accepted\n%s", broken)
			}
		})
	}
	sentEvents := map[string]bool{}
	for _, rec := range recs {
		msgs, err := auditmessage.Render(rec)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			sentEvents[parse(t, m.XML).Event.EventID.Code] = true
		}
	}
	for _, want := range []string{"110100", "110104", "110113", "110114"} {
		if !sentEvents[want] {
			t.Errorf("no record renders a %s message", want)
		}
	}
	if sentEvents["110102"] {
		t.Error("a record renders 110102 Begin Transferring DICOM Instances, which no record can fill")
	}
}

// TestRenderRecordsAlreadyInTheTrail: records written before the mapping
// followed A.5.3 (association records with EventID 110102, instance
// records without a patient object or a called AE) render to what A.5.3
// requires, or to nothing.
func TestRenderRecordsAlreadyInTheTrail(t *testing.T) {
	recs := allRecords(t)
	begin := pipeline.CodedValue{Code: "110102", System: "DCM", Display: "Begin Transferring DICOM Instances"}
	for _, name := range []string{"association-accepted", "association-released", "association-aborted"} {
		rec := recs[name]
		rec.EventID = begin
		if msgs, err := auditmessage.Render(rec); err != nil || len(msgs) != 0 {
			t.Errorf("%s as stored with 110102: %d messages, %v", name, len(msgs), err)
		}
	}
	old := recs["instance-stored"]
	old.ParticipantObjects, old.PatientID, old.CalledAE = nil, "", ""
	old.Participants = old.Participants[:1]
	msgs, err := auditmessage.Render(old)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("old instance record: %d messages, %v", len(msgs), err)
	}
	auditmessagetest.Validate(t, msgs[0].XML)
	m := parse(t, msgs[0].XML)
	if len(m.Objects) != 2 || m.Objects[0].ID != study || m.Objects[1].TypeCode != "1" || m.Objects[1].ID != "" {
		t.Errorf("objects = %+v, want the study and a patient without ID", m.Objects)
	}
	if len(m.Participants) != 2 || m.Participants[1].UserID != "dicom-ingest" || m.Participants[1].Role.Code != "110152" {
		t.Errorf("participants = %+v, want us as the receiving process", m.Participants)
	}
	old.Participants = nil
	if msgs, err := auditmessage.Render(old); err != nil || len(msgs) != 0 {
		t.Errorf("instance record naming no sender: %d messages, %v", len(msgs), err)
	}
}

// TestTransferDetails: an instance's Instances Transferred carries what its
// record says of the object, as ParticipantObjectDetail type-value pairs of
// the study object describing the instance: where it is stored, its
// content identity, a quarantined copy, the object held before that a
// conflict differs from or a resend repeats. The feed carried neither the
// content identity nor the quarantine key, so a SIEM could not tie a
// message to the object, to its quarantined copy or to another message.
func TestTransferDetails(t *testing.T) {
	recs := allRecords(t)
	for _, tt := range []struct {
		record string
		want   []string // detail types, in order
	}{
		{"instance-stored", []string{auditmessage.DetailObjectKey, auditmessage.DetailContentIdentity}},
		{"instance-rejected", []string{auditmessage.DetailObjectKey, auditmessage.DetailContentIdentity, auditmessage.DetailQuarantineKey}},
		{"instance-conflict", []string{auditmessage.DetailObjectKey, auditmessage.DetailContentIdentity, auditmessage.DetailHeldObjectKey, auditmessage.DetailHeldContentIdentity}},
		{"instance-duplicate", []string{auditmessage.DetailObjectKey, auditmessage.DetailContentIdentity, auditmessage.DetailHeldObjectKey, auditmessage.DetailHeldContentIdentity}},
		{"instance-duplicate-found-held", []string{auditmessage.DetailObjectKey, auditmessage.DetailContentIdentity, auditmessage.DetailHeldObjectKey, auditmessage.DetailHeldContentIdentity}},
		{"instance-duplicate-of-quarantined", []string{auditmessage.DetailObjectKey, auditmessage.DetailContentIdentity, auditmessage.DetailQuarantineKey, auditmessage.DetailHeldObjectKey, auditmessage.DetailHeldContentIdentity}},
	} {
		t.Run(tt.record, func(t *testing.T) {
			rec := recs[tt.record]
			msgs, err := auditmessage.Render(rec)
			if err != nil || len(msgs) != 1 {
				t.Fatalf("%d messages, %v", len(msgs), err)
			}
			m := parse(t, msgs[0].XML)
			i := slices.IndexFunc(m.Objects, func(o parsedObject) bool { return o.IDType.Code == "110180" })
			if i < 0 {
				t.Fatalf("no study object: %+v", m.Objects)
			}
			study := m.Objects[i]
			var got []string
			for _, d := range study.Details {
				got = append(got, d.Type)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("study object details %v, want %v", got, tt.want)
			}
			for typ, want := range map[string]string{
				auditmessage.DetailObjectKey: rec.ObjectKey, auditmessage.DetailContentIdentity: rec.ContentIdentity,
				auditmessage.DetailQuarantineKey: rec.QuarantineKey, auditmessage.DetailHeldObjectKey: rec.HeldObjectKey,
				auditmessage.DetailHeldContentIdentity: rec.HeldContentIdentity,
			} {
				if got := study.detail(t, typ); got != want {
					t.Errorf("detail %s = %q, want the record's %q", typ, got, want)
				}
			}
			for j, o := range m.Objects {
				if j != i && len(o.Details) > 0 {
					t.Errorf("object %s (%s) has details too", o.ID, o.IDType.Code)
				}
			}
		})
	}
}
