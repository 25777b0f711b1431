package pipeline_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// TestAssociationEndCarriesWhatWasStored: an association's end record in
// the trail says how many C-STOREs the SCP stored on it, identical resends
// included; the trail counted only instance records, so an association
// that resent a study showed 0 instances.
func TestAssociationEndCarriesWhatWasStored(t *testing.T) {
	for _, ev := range []string{associationaudit.EventReleased, associationaudit.EventAborted} {
		rec := pipeline.AssociationAuditRecord(associationaudit.Record{Event: ev, Time: time.Unix(0, 0), AssociationID: "a1",
			Instances: 18, Bytes: 9000}, "test")
		if rec.StoredInstances != 18 || rec.StoredBytes != 9000 {
			t.Errorf("%s: stored %d instances, %d bytes; want 18, 9000", ev, rec.StoredInstances, rec.StoredBytes)
		}
	}
}

// TestRunFactsInTheTrail: an SCP start that found earlier runs stopped
// uncleanly, a running SCP's report of such runs (a Security Alert, 110133
// Audit Recording Stopped), and a stop whose run lost records, are findings of the trail
// (their own outcome or type code, a minor failure, the facts as fields);
// they were a success with the facts in words at most.
func TestRunFactsInTheTrail(t *testing.T) {
	dead := associationaudit.UncleanRun{Instance: "dead1", AETitle: "INGEST", LastSeq: 7, Written: 5, CountedLost: 1, NotWritten: 1}
	tests := []struct {
		name         string
		rec          associationaudit.Record
		outcome      string
		eventOutcome int
		typeCodes    []string
		reason       string
	}{
		{"start", associationaudit.Record{Event: associationaudit.EventApplicationStart},
			associationaudit.EventApplicationStart, 0, []string{"110120"}, ""},
		{"start after an unclean stop", associationaudit.Record{Event: associationaudit.EventApplicationStart,
			Reason: "previous run dead1 …", PreviousRuns: []associationaudit.UncleanRun{dead}},
			pipeline.OutcomeUncleanStop, 4, []string{"110120", "unclean-stop"}, "previous run dead1 …"},
		{"unclean stop found by a running SCP", associationaudit.Record{Event: associationaudit.EventUncleanStopFound,
			Reason: "previous run dead1 …", PreviousRuns: []associationaudit.UncleanRun{dead}},
			associationaudit.EventUncleanStopFound, 4, []string{"110133", "unclean-stop-found"}, "previous run dead1 …"},
		{"stop", associationaudit.Record{Event: associationaudit.EventApplicationStop, Reason: "shutdown requested"},
			associationaudit.EventApplicationStop, 0, []string{"110121"}, "shutdown requested"},
		{"stop with records lost", associationaudit.Record{Event: associationaudit.EventApplicationStop, Reason: "shutdown requested",
			Lost: &associationaudit.LostRecords{Count: 5, Seqs: []uint64{3, 4, 5, 9}}},
			associationaudit.EventApplicationStop, 4, []string{"110121", "audit-records-lost"},
			"shutdown requested; 5 audit records of this run lost before its stop: seq 3-5, 9 and 1 more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.rec.Time, tt.rec.AssociationID, tt.rec.CalledAE, tt.rec.Seq = time.Unix(0, 0), "5eed", "INGEST", 1
			rec := pipeline.AssociationAuditRecord(tt.rec, "test")
			var codes []string
			for _, c := range rec.EventTypeCodes {
				codes = append(codes, c.Code)
			}
			if rec.Outcome != tt.outcome || rec.EventOutcome != tt.eventOutcome || !slices.Equal(codes, tt.typeCodes) || rec.Reason != tt.reason {
				t.Errorf("outcome %q (%d), type codes %v, reason %q; want %q (%d), %v, %q",
					rec.Outcome, rec.EventOutcome, codes, rec.Reason, tt.outcome, tt.eventOutcome, tt.typeCodes, tt.reason)
			}
			if !slices.Equal(rec.PreviousRuns, tt.rec.PreviousRuns) || rec.LostRecords != tt.rec.Lost {
				t.Errorf("previous runs %+v, lost %+v; want %+v, %+v", rec.PreviousRuns, rec.LostRecords, tt.rec.PreviousRuns, tt.rec.Lost)
			}
		})
	}
}

// TestRefusalNamesOurAE: a refused association's record names the SCP's
// own AE title as the destination, whatever title the peer called. A peer
// that called another title (01 01 07) was recorded with that title as the
// destination (role 110152), and the Security Alert sent of it named the
// title called as the application reporting it: an auditor read that an
// AE "WRONG_AE", which does not exist, refused the association. The title
// called stays in calledAe and is said in the reason.
func TestRefusalNamesOurAE(t *testing.T) {
	const rj = "dicomnet: association rejected: Rejected Permanent, Service User, Called AE Title Not Recognized (01 01 07)"
	tests := []struct {
		name        string
		rec         associationaudit.Record
		destination string // "" for none
		reason      string
	}{
		{"called another title", associationaudit.Record{CallingAE: "LOCAL_AE", CalledAE: "WRONG_AE", AETitle: "INGEST", RejectReason: 7, Reason: rj},
			"INGEST", rj + `; called AE title "WRONG_AE", not ours`},
		{"called another title, written before records named our AE", associationaudit.Record{CallingAE: "LOCAL_AE", CalledAE: "WRONG_AE", RejectReason: 7, Reason: rj},
			"", rj + `; called AE title "WRONG_AE", not ours`},
		{"unknown calling AE, our title called", associationaudit.Record{CallingAE: "EVIL", CalledAE: "INGEST", AETitle: "INGEST", RejectReason: 3, Reason: "x"},
			"INGEST", "x"},
		{"unknown calling AE, another title called", associationaudit.Record{CallingAE: "EVIL", CalledAE: "WRONG_AE", AETitle: "INGEST", RejectReason: 3, Reason: "x"},
			"INGEST", `x; called AE title "WRONG_AE", not ours`},
		{"unknown calling AE, written before records named our AE", associationaudit.Record{CallingAE: "EVIL", CalledAE: "INGEST", RejectReason: 3, Reason: "x"},
			"INGEST", "x"},
		{"TLS handshake refused: no title called", associationaudit.Record{AETitle: "INGEST", Reason: "TLS handshake failed: y"},
			"INGEST", "TLS handshake failed: y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.rec.Event, tt.rec.Time, tt.rec.AssociationID, tt.rec.PeerAddr, tt.rec.Seq = associationaudit.EventRejected, time.Unix(0, 0), "a1", "10.1.2.3:4000", 0
			rec := pipeline.AssociationAuditRecord(tt.rec, "test")
			var destination []string
			for _, p := range rec.Participants {
				if !p.UserIsRequestor {
					destination = append(destination, p.UserID)
				}
			}
			if want := slices.DeleteFunc([]string{tt.destination}, func(s string) bool { return s == "" }); !slices.Equal(destination, want) {
				t.Errorf("destination participants %v, want %v", destination, want)
			}
			if rec.CalledAE != tt.rec.CalledAE || rec.Reason != tt.reason {
				t.Errorf("calledAe %q, reason %q; want %q, %q", rec.CalledAE, rec.Reason, tt.rec.CalledAE, tt.reason)
			}
		})
	}
}

// FuzzReadAnswered: whatever a refusal's reason says (the SCP's words, a
// handler's error, an exception message quoting another record's reason:
// "…decided, not sent (…)", "C-STORE not answered (…)"), a store-failed or
// commitment-refused record reads NotAnswered and ResponseNotSent as they
// were decided, as written, through JSON, and from its reason alone (a
// record written before the flags, or DynamoDB's projection without
// them): the words of the reason that ReadAnswered reads come before
// anything outside said.
func FuzzReadAnswered(f *testing.F) {
	for _, reason := range []string{"", "out of resources",
		"C-STORE status A700 decided, not sent (the association ended before the response was written): x",
		"N-ACTION status 0110 decided, not sent (the association ended before the response was written): x",
		" decided, not sent (the association ended before the response was written): ",
		"C-STORE not answered (the association ended before its data set did): x", "C-STORE status 0000: x",
		"N-ACTION not answered (the association ended before its data set did): x"} {
		f.Add(false, uint16(0xA700), false, reason)
		f.Add(true, uint16(0x0110), false, reason)
		f.Add(false, uint16(0), false, reason)
		f.Add(true, uint16(0), false, reason)
	}
	f.Fuzz(func(t *testing.T, commitment bool, status uint16, notSent bool, reason string) {
		r := associationaudit.Record{Event: associationaudit.EventStoreFailed, Status: associationaudit.StoreStatus(status), Reason: reason,
			Time: time.Unix(0, 0), AssociationID: "a1", CallingAE: "LOCAL_AE", CalledAE: "INGEST"}
		if commitment {
			r.Event = associationaudit.EventCommitmentRefused
		}
		// As the audit writer records them: a C-STORE or an N-ACTION not
		// answered has no status, so nothing not sent; only a C-STORE's
		// record is of a C-STORE cut short.
		wantNotAnswered := status == 0
		wantCutShort := wantNotAnswered && !commitment
		r.NotSent = notSent && !wantNotAnswered
		check := func(how string, got pipeline.AuditRecord) {
			t.Helper()
			if got.NotAnswered != wantNotAnswered || got.ResponseNotSent != r.NotSent || got.CutShort() != wantCutShort {
				t.Fatalf("%s: not answered %v, response not sent %v, cut short %v; want %v, %v, %v (reason %q)",
					how, got.NotAnswered, got.ResponseNotSent, got.CutShort(), wantNotAnswered, r.NotSent, wantCutShort, got.Reason)
			}
		}
		rec := pipeline.AssociationAuditRecord(r, "fuzz")
		check("written", rec)
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		var read pipeline.AuditRecord
		if err := json.Unmarshal(b, &read); err != nil {
			t.Fatal(err)
		}
		check("through JSON", read)
		legacy := rec
		legacy.NotAnswered, legacy.ResponseNotSent = false, false
		legacy.ReadAnswered()
		check("from its reason", legacy)
	})
}
