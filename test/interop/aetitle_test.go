package interop

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/dicomnettest"
	"github.com/dicom-ingest/dicom-ingest/shared/dicomnet/pdu"
)

// TestAETitleFields sends A-ASSOCIATE-RQs whose Called and Calling AE
// Title fields (16 bytes each, bytes 11-42) are padded or spelled in the
// ways peers send them, and checks the answer the conformance statement
// (3.2.4) gives: spaces and NUL bytes around a title are padding, letter
// case and a byte inside it are not. DCMTK pads with spaces only, so the
// fields are written by hand. A calling title that is no AE title is
// refused by the form rule (accesscontrol.CheckAETitle), which the
// rejection's log line gives as its why: the SCP's allowlist, which a test
// SCP must have, would refuse it anyway, so the answer alone proves nothing.
func TestAETitleFields(t *testing.T) {
	scp := startSCP(t)
	tests := []struct {
		name            string
		called, calling string // the fields as sent, padded to 16 bytes with spaces
		reject          []byte // result, source, reason; nil for an A-ASSOCIATE-AC
		formRule        string // the form rule's reason the rejection's log line gives, "" for none to check
	}{
		{"space padded", "REMOTE_AE", "LOCAL_AE", nil, ""},
		{"leading spaces", "  REMOTE_AE", "   LOCAL_AE", nil, ""},
		{"NUL padded", "REMOTE_AE\x00\x00\x00\x00\x00\x00\x00", "LOCAL_AE\x00\x00\x00\x00\x00\x00\x00\x00", nil, ""},
		{"leading NULs", "\x00\x00REMOTE_AE", "\x00LOCAL_AE", nil, ""},
		{"called in other letters", "remote_ae", "LOCAL_AE", []byte{1, 1, 7}, ""},
		{"calling in other letters", "REMOTE_AE", "local_ae", []byte{1, 1, 3}, ""},
		{"called empty", "", "LOCAL_AE", []byte{1, 1, 7}, ""},
		{"calling all NULs", "REMOTE_AE", "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", []byte{1, 1, 3}, "empty AE title"},
		{"NUL inside the calling title", "REMOTE_AE", "LOCAL\x00AE", []byte{1, 1, 3}, `AE title has "\x00" at position 6`},
		{"backslash in the calling title", "REMOTE_AE", `LOCAL\AE`, []byte{1, 1, 3}, `AE title has "\\" at position 6`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := pdu.Encode(dicomnettest.AssociateRQ("LOCAL_AE", "REMOTE_AE"))
			if err != nil {
				t.Fatal(err)
			}
			field := func(s string) []byte { return append([]byte(s), bytes.Repeat([]byte(" "), 16-len(s))...) }
			copy(b[10:26], field(tt.called))
			copy(b[26:42], field(tt.calling))
			p := dicomnettest.DialParrot(t, scp.DICOMAddr)
			p.Send(b)
			if tt.reject != nil {
				p.ExpectReject(tt.reject[0], tt.reject[1], tt.reject[2])
				if tt.formRule != "" {
					// Logged as kept: padding trimmed, a control character as '?'.
					calling := strings.Map(func(r rune) rune {
						if r < 0x20 {
							return '?'
						}
						return r
					}, strings.Trim(tt.calling, " \x00"))
					scp.WaitLog(t, 5*time.Second, "the rejection of calling "+tt.name, func(e map[string]any) bool {
						why, _ := e["why"].(string)
						return e["msg"] == "dicomnet: association rejected" && e["calling_ae"] == calling && strings.Contains(why, tt.formRule)
					})
				}
				return
			}
			raw, err := p.NextRaw()
			if err != nil || pdu.Type(raw[0]) != pdu.TypeAssociateAC {
				t.Fatalf("want an A-ASSOCIATE-AC, got %v %q", err, raw)
			}
			// Bytes 11-74 come back exactly as received, padding included (PS3.8 Table 9-17).
			if !bytes.Equal(raw[10:74], b[10:74]) {
				t.Errorf("A-ASSOCIATE-AC bytes 11-74 %q, want the request's %q", raw[10:74], b[10:74])
			}
			p.SendPDU(&pdu.ReleaseRQ{})
			p.Expect(pdu.TypeReleaseRP)
		})
	}
}
