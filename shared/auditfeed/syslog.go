// Package auditfeed delivers the audit trail to a hospital's audit
// repository or SIEM: each record rendered as DICOM PS3.15 A.5 audit
// messages (package auditmessage), sent as RFC 5424 syslog messages over TLS
// with RFC 5425 octet-counting framing, at least once.
//
// Delivery runs from a durable outbox (Outbox): the Feeder takes the oldest
// undelivered records, sends them as one batch and marks them delivered only
// once the collector confirmed the batch (see Collector.Send), retrying with
// backoff while the collector is unreachable. Nothing in it runs on the DICOM
// path: the outbox is written where the audit trail is, and a down collector
// only grows the backlog, which metrics report.
package auditfeed

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/auditmessage"
)

// Syslog header values (RFC 5424 section 6) for audit messages. IHE ATNA
// (ITI-20) asks for facility 10 (security/authorization) and the MSGID
// "IHE+RFC-3881"; severity is 5 (notice) for successes and 4 (warning) for
// failures.
const (
	facilityAuth    = 10
	severityNotice  = 5
	severityWarning = 4
	AppName         = "dicom-ingest"
	MsgID           = "IHE+RFC-3881"
	// SDID names the structured data element that carries the message's
	// stable id, by which a collector drops duplicates. Private SD-IDs take
	// an enterprise number; 32473 is the one RFC 5612 sets aside for
	// documentation and examples, as we have none of our own.
	SDID = "dicom-ingest@32473"
)

// MaxMessageBytes bounds every syslog message the feed sends (RFC 5424,
// header and MSG, before the framing's length): what a collector must
// accept whole. rsyslog's default maxMessageSize is 8k, and a collector
// with a smaller limit truncates the XML while the batch counts as
// delivered. Format cuts a message's longest values to fit it
// (auditmessage.Message.Within).
const MaxMessageBytes = 8 << 10

// Header is what the sender says about itself in every message.
type Header struct {
	// Hostname is the syslog HOSTNAME field (the machine or task); "" is "-".
	Hostname string
}

// bom starts the MSG part: RFC 5424 marks UTF-8 messages with it.
const bom = "\ufeff"

// Format returns m as one RFC 5424 syslog message (no framing) of at most
// MaxMessageBytes, its XML cut to fit when it is longer (Within); it fails
// for a message that cannot be cut to fit.
func Format(m auditmessage.Message, h Header) ([]byte, error) {
	sev := severityNotice
	if m.EventOutcome != 0 {
		sev = severityWarning
	}
	var b strings.Builder
	b.Grow(len(m.XML) + 200)
	b.WriteString("<" + strconv.Itoa(facilityAuth*8+sev) + ">1 ")
	t := m.Time
	if t.IsZero() {
		b.WriteString("-")
	} else {
		b.WriteString(t.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	}
	b.WriteString(" " + headerField(h.Hostname, 255) + " " + AppName + " - " + MsgID + " ")
	b.WriteString("[" + SDID + ` id="` + paramValue(m.ID) + `"] `)
	b.WriteString(bom)
	m, err := m.Within(MaxMessageBytes - b.Len())
	if err != nil {
		return nil, fmt.Errorf("auditfeed: format: %w", err)
	}
	b.Write(m.XML)
	return []byte(b.String()), nil
}

// Frame wraps a syslog message in RFC 5425 octet-counting framing:
// "MSG-LEN SP SYSLOG-MSG".
func Frame(msg []byte) []byte {
	n := strconv.Itoa(len(msg))
	out := make([]byte, 0, len(n)+1+len(msg))
	out = append(out, n...)
	out = append(out, ' ')
	return append(out, msg...)
}

// headerField makes s a valid header field: printable US-ASCII without
// spaces, at most max characters, "-" when empty.
func headerField(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if r > 32 && r < 127 {
			b.WriteRune(r)
		}
		if b.Len() == max {
			break
		}
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// paramValue escapes an SD-PARAM value (RFC 5424 section 6.3.3): '"', '\'
// and ']' take a backslash.
func paramValue(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`).Replace(s)
}

// nowFunc is time.Now, replaceable in tests of backoff and ages.
var nowFunc = time.Now
