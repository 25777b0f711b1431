package dimse

import (
	"fmt"
	"strings"
)

// RefusedBeforeEnd follows the reader's error in the message of a request
// (C-STORE, N-ACTION) the association's end cut short that was refused
// before then: before any handler ran (its command wrong: a C-STORE's class
// not its context's, say), or by its handler before the data set broke off
// (out of resources: a full disk, say). The status and why (the comment, or
// the handler's error) follow it: "…; refused before the association ended,
// status 0122: SOP class differs from the presentation context". Such a
// request was answered nothing, and refused all the same.
//
// The one marker of both sides: dicomnet writes it (RefusedBeforeEndMessage)
// into the error its event carries, which becomes the audit record's reason;
// the pipeline reads it back from the reason (SaysRefusedBeforeEnd:
// AuditRecord.CutShort, Storage Commitment's judge), and so does localstore's
// SQL. Records already stored say it so: its text does not change.
const RefusedBeforeEnd = "; refused before the association ended, status "

// RefusedBeforeEndMessage is the message of a request whose data set the
// reader's error (reader, its message) broke off after it was refused with
// status code, for why: reader, RefusedBeforeEnd, the status in four hex
// digits, then why.
func RefusedBeforeEndMessage(reader string, code uint16, why string) string {
	return fmt.Sprintf("%s%s%04X: %s", reader, RefusedBeforeEnd, code, why)
}

// SaysRefusedBeforeEnd reports whether msg (an event's error, an audit
// record's reason) names a refusal decided before the association's end
// (RefusedBeforeEnd).
func SaysRefusedBeforeEnd(msg string) bool { return strings.Contains(msg, RefusedBeforeEnd) }
