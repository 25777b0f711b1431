package pipeline

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dimse"
)

// TestAnsweredReadsBack: every reason the writer builds (answered) — a
// record of each event an SCP's record carries, its request answered with
// a refusal, refused and the response not sent, or not answered (no status,
// or the 0000 records written before said), whatever the SCP's reason says
// (another rule's reasons quoted) — reads back from its reason alone
// (ReadAnswered: a record written before the flags, a projection without
// them), also through JSON, the flags it was written with; an event
// without an answerRule has none. And every reason of a request not
// answered an answerRule reads (older records' too) reads so.
func TestAnsweredReadsBack(t *testing.T) {
	type want struct{ notAnswered, notSent bool }
	statuses := []string{associationaudit.StoreStatus(0), "0000"}
	for _, s := range []uint16{0x0110, 0x0119, 0x0124, 0xA700, 0xC211, 0xFFFF} {
		statuses = append(statuses, associationaudit.StoreStatus(s))
	}
	// The SCP's reasons: none, one, and that of a request refused before the association's end cut it short
	// (dicomnet's: the reader's error, then the refusal with its status).
	reasons := []string{"", "out of resources", "dicomnet: data set incomplete: EOF" + dimse.RefusedBeforeEnd + "0118: x"}
	for _, a := range answerRules {
		for _, r := range a.notAnswered {
			reasons = append(reasons, r+"x")
		}
		reasons = append(reasons, a.refused.reason("A700", "x"), a.notSent.reason("0110", "x"))
	}
	check := func(t *testing.T, how string, got AuditRecord, w want, cutShort bool) {
		t.Helper()
		if got.NotAnswered != w.notAnswered || got.ResponseNotSent != w.notSent || got.CutShort() != cutShort {
			t.Errorf("%s: not answered %v, response not sent %v, cut short %v; want %v, %v, %v (reason %q)",
				how, got.NotAnswered, got.ResponseNotSent, got.CutShort(), w.notAnswered, w.notSent, cutShort, got.Reason)
		}
	}
	for _, event := range associationaudit.Events {
		_, ruled := answerRules[event]
		t.Run(event, func(t *testing.T) {
			for _, status := range statuses {
				for _, notSent := range []bool{false, true} {
					for _, reason := range reasons {
						var w want
						switch {
						case !ruled:
						case associationaudit.NotAnswered(status):
							w.notAnswered = true
						default:
							w.notSent = notSent
						}
						// A C-STORE's only, and not one refused before the association's end cut it short.
						cutShort := w.notAnswered && event == associationaudit.EventStoreFailed && !dimse.SaysRefusedBeforeEnd(reason)
						r := associationaudit.Record{Event: event, Status: status, NotSent: notSent, Reason: reason,
							Time: time.Unix(0, 0), AssociationID: "a1", CallingAE: "LOCAL_AE", CalledAE: "INGEST"}
						rec := AssociationAuditRecord(r, "test")
						how := func(s string) string { return fmt.Sprintf("%s (status %q, not sent %v)", s, status, notSent) }
						check(t, how("written"), rec, w, cutShort)
						legacy := rec
						legacy.NotAnswered, legacy.ResponseNotSent = false, false
						legacy.ReadAnswered()
						check(t, how("from its reason"), legacy, w, cutShort)
						legacy.NotAnswered, legacy.ResponseNotSent = false, false
						b, err := json.Marshal(legacy)
						if err != nil {
							t.Fatal(err)
						}
						var read AuditRecord
						if err := json.Unmarshal(b, &read); err != nil {
							t.Fatal(err)
						}
						check(t, how("from its reason through JSON"), read, w, cutShort)
					}
				}
			}
		})
	}
	for outcome, a := range answerRules {
		for _, prefix := range a.notAnswered {
			rec := AuditRecord{Outcome: outcome, Reason: prefix + "dicomnet: data set incomplete"}
			rec.ReadAnswered()
			check(t, outcome+" "+prefix, rec, want{notAnswered: true}, outcome == associationaudit.EventStoreFailed)
		}
	}
	if want := answerRules[associationaudit.EventStoreFailed].notAnswered; !slices.Equal(CutShortReasons, want) {
		t.Errorf("CutShortReasons %q, want the store-failed rule's %q", CutShortReasons, want)
	}
}
