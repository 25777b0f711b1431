package auditmessage_test

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/dicom-ingest/dicom-ingest/shared/associationaudit"
	"github.com/dicom-ingest/dicom-ingest/shared/auditfeed"
	"github.com/dicom-ingest/dicom-ingest/shared/auditmessage"
	"github.com/dicom-ingest/dicom-ingest/shared/auditmessage/auditmessagetest"
	"github.com/dicom-ingest/dicom-ingest/shared/pipeline"
)

// worstHeader is the longest syslog header the feed writes: a hostname at its bound.
var worstHeader = auditfeed.Header{Hostname: strings.Repeat("h", 255)}

// inflate makes rec the worst case of its kind: every name at its bound with the characters XML escapes longest
// (a quote is 2 bytes in the trail's JSON, 5 in an attribute), and what has no bound as long as a header value may be
// (dataset.MaxValueHeld): the reason, the findings, a malformed instance's UIDs and Patient ID, which validation
// quarantines and the record names as they were.
func inflate(rec pipeline.AuditRecord) pipeline.AuditRecord {
	const huge = 64 << 10
	quotes := func(jsonBytes int) string { return strings.Repeat(`"`, jsonBytes/2) }
	long := func(s string) string {
		if s == "" {
			return ""
		}
		return strings.Repeat(`<&"`, huge/3)
	}
	ae := strings.Repeat("&", 16)
	rec.Reason = strings.Repeat(`<&"`, huge/3)
	for range 1000 {
		rec.Findings = append(rec.Findings, pipeline.Finding{Code: "invalid-vr", Tag: "(0010,0020)", Message: strings.Repeat(`"`, 200)})
	}
	rec.Participants = append([]pipeline.AuditParticipant(nil), rec.Participants...)
	for i := range rec.Participants {
		p := &rec.Participants[i]
		if p.UserID != "" {
			p.UserID, p.AlternativeID = ae, "AETITLES="+ae
		}
		if p.NetworkAccess != "" {
			p.NetworkAccess = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
		}
	}
	if rec.CallingAE != "" {
		rec.CallingAE = ae
	}
	if rec.PeerAddr != "" {
		rec.PeerAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535"
	}
	rec.ParticipantObjects = append([]pipeline.AuditParticipantObject(nil), rec.ParticipantObjects...)
	for i := range rec.ParticipantObjects {
		o := &rec.ParticipantObjects[i]
		o.ID, o.Name, o.SOPClassUID = long(o.ID), long(o.Name), long(o.SOPClassUID)
	}
	rec.SOPInstanceUID, rec.StudyInstanceUID, rec.PatientID = long(rec.SOPInstanceUID), long(rec.StudyInstanceUID), long(rec.PatientID)
	if rec.TLS != nil {
		rec.TLS = &associationaudit.TLSPeer{
			Subject: quotes(associationaudit.MaxNameJSON), Issuer: quotes(associationaudit.MaxNameJSON),
			Serial: strings.Repeat("F", associationaudit.MaxSerial), SHA256: strings.Repeat("f", 64),
			CertificateName: strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61),
		}
	}
	return rec
}

// TestEveryMessageFitsTheFeedsBound: every message the feed sends, of every kind of record at its worst, is a syslog
// message of at most auditfeed.MaxMessageBytes (rsyslog's default maxMessageSize, 8k), still valid against the A.5.1
// schema, its identifiers and participants all there. Before, nothing bounded it: a TLS refusal with every name at its
// bound made 6,720 bytes, and a quarantined instance's record names the malformed values it held (a Patient ID of
// 64 KiB) and every validation error; a collector with a limit under the message truncated the XML while the feed
// counted it delivered. Storage Commitment records, the only ones listing many instances or studies, give no message.
func TestEveryMessageFitsTheFeedsBound(t *testing.T) {
	recs := allRecords(t)
	cut := 0
	for name, rec := range recs {
		for _, worst := range []bool{false, true} {
			if worst {
				rec = inflate(rec)
			}
			msgs, err := auditmessage.Render(rec)
			if err != nil {
				t.Fatalf("%s (worst %v): %v", name, worst, err)
			}
			if strings.HasPrefix(name, "commitment-") && len(msgs) > 0 {
				t.Errorf("%s: a Storage Commitment record gives %d messages, want none", name, len(msgs))
			}
			for _, m := range msgs {
				b, err := auditfeed.Format(m, worstHeader)
				if err != nil {
					t.Fatalf("%s (worst %v): %v", name, worst, err)
				}
				if len(b) > auditfeed.MaxMessageBytes {
					t.Errorf("%s (worst %v): %d bytes, want at most %d", name, worst, len(b), auditfeed.MaxMessageBytes)
				}
				_, doc, _ := bytes.Cut(b, []byte("\ufeff"))
				if !worst {
					if !bytes.Equal(doc, m.XML) {
						t.Errorf("%s: a message within the bound was changed", name)
					}
					continue
				}
				if !bytes.Equal(doc, m.XML) {
					cut++
				}
				checkCut(t, name, m.XML, doc)
			}
		}
	}
	if cut == 0 {
		t.Error("no worst case was over the bound: the test builds none")
	}
}

// checkCut: the message cut to fit is well formed, valid against the schema and its event's table, and has the
// elements of the message as rendered.
func checkCut(t *testing.T, name string, rendered, doc []byte) {
	t.Helper()
	elements := func(b []byte) []string {
		var names []string
		d := xml.NewDecoder(bytes.NewReader(b))
		for {
			tok, err := d.Token()
			if errors.Is(err, io.EOF) {
				return names
			}
			if err != nil {
				t.Fatalf("%s: the message cut to fit is not well formed: %v", name, err)
			}
			if se, ok := tok.(xml.StartElement); ok {
				names = append(names, se.Name.Local)
			}
		}
	}
	if got, want := strings.Join(elements(doc), " "), strings.Join(elements(rendered), " "); got != want {
		t.Errorf("%s: the message cut to fit has elements\n%s\nwant\n%s", name, got, want)
	}
	auditmessagetest.Validate(t, doc)
}

// TestRealisticWorstTLSRefusalIsNotCut: a TLS refusal with every name at its bound and the reason the SCP writes for
// it fits whole: cutting is for what no real peer sends.
func TestRealisticWorstTLSRefusalIsNotCut(t *testing.T) {
	rec := associationRecords()["association-rejected-tls-handshake"]
	rec.TLS = inflate(rec).TLS
	rec.Reason = "TLS handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"
	msgs, err := auditmessage.Render(rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		b, err := auditfeed.Format(m, worstHeader)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes", m.ID, len(b))
		if _, doc, _ := bytes.Cut(b, []byte("\ufeff")); !bytes.Equal(doc, m.XML) {
			t.Errorf("cut at %d bytes of XML", len(m.XML))
		}
	}
}
