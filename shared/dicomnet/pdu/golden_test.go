package pdu

import (
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

var itemNames = map[byte]string{
	ItemApplicationContext: "application context", ItemPresentationContextRQ: "presentation context (RQ)",
	ItemPresentationContextAC: "presentation context (AC)", ItemAbstractSyntax: "abstract syntax",
	ItemTransferSyntax: "transfer syntax", ItemUserInformation: "user information",
	SubItemMaxLength: "maximum length", SubItemImplementationClassUID: "implementation class UID",
	SubItemAsyncOperationsWindow: "asynchronous operations window", SubItemRoleSelection: "SCP/SCU role selection",
	SubItemImplementationVersionName: "implementation version name", SubItemSOPClassExtended: "SOP class extended negotiation",
	SubItemSOPClassCommonExtended: "SOP class common extended negotiation", SubItemUserIdentityRQ: "user identity (RQ)",
	SubItemUserIdentityAC: "user identity (AC)",
}

// annotate renders an A-ASSOCIATE PDU as commented hex, one line per field or item header.
func annotate(b []byte) string {
	var sb strings.Builder
	line := func(comment string, v []byte) { fmt.Fprintf(&sb, "# %s\n%s\n", comment, hex.EncodeToString(v)) }
	line(fmt.Sprintf("PDU type %s, reserved, length %d", Type(b[0]), binary.BigEndian.Uint32(b[2:])), b[:6])
	line("protocol version, reserved", b[6:10])
	line(fmt.Sprintf("called AE %q", b[10:26]), b[10:26])
	line(fmt.Sprintf("calling AE %q", b[26:42]), b[26:42])
	line("reserved", b[42:74])
	var walk func(b []byte, depth int, parent byte)
	walk = func(b []byte, depth int, parent byte) {
		for len(b) >= 4 {
			n := int(binary.BigEndian.Uint16(b[2:]))
			v := b[4 : 4+n]
			ind := strings.Repeat("  ", depth)
			line(fmt.Sprintf("%sitem %02x %s, length %d", ind, b[0], itemNames[b[0]], n), b[:4])
			switch b[0] {
			case ItemPresentationContextRQ, ItemPresentationContextAC:
				line(ind+"  context id, reserved, result/reason, reserved", v[:4])
				walk(v[4:], depth+1, b[0])
			case ItemUserInformation:
				walk(v, depth+1, b[0])
			default:
				line(fmt.Sprintf("%s  value %q", ind, v), v)
			}
			b = b[4+n:]
		}
	}
	walk(b[74:], 0, 0)
	return sb.String()
}

func parseAnnotated(s string) ([]byte, error) {
	var h strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			h.WriteString(l)
		}
	}
	return hex.DecodeString(h.String())
}

// TestGoldenAssociateAC pins the exact bytes of an A-ASSOCIATE-AC (one accepted and one rejected context, both with
// a transfer syntax sub-item; role and async answers) against an annotated hex file. Run with -update to rewrite.
func TestGoldenAssociateAC(t *testing.T) {
	ac := &AssociateAC{ProtocolVersion: ProtocolVersion, CalledAE: "INGEST", CallingAE: "STORESCU", ApplicationContext: "1.2.840.10008.3.1.1.1",
		PresentationContexts: []PresentationContextAC{
			{ID: 1, Result: ResultAcceptance, TransferSyntax: "1.2.840.10008.1.2.1"},
			{ID: 3, Result: ResultAbstractSyntaxNotSupported, TransferSyntax: "1.2.840.10008.1.2"},
		},
		UserInformation: UserInformation{MaxPDULength: 262144, ImplementationClassUID: "2.25.1", ImplementationVersionName: "DICOM_INGEST_1",
			AsyncOperations: &AsyncOperationsWindow{Invoked: 1, Performed: 1},
			RoleSelections:  []RoleSelection{{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SCU: 1, SCP: 0}}},
	}
	b, err := Encode(ac)
	if err != nil {
		t.Fatal(err)
	}
	const path = "testdata/associate-ac.hex"
	if *update {
		if err := os.WriteFile(path, []byte(annotate(b)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	want, err := parseAnnotated(string(golden))
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(b) != hex.EncodeToString(want) {
		t.Errorf("encoding differs from %s:\n%s", path, annotate(b))
	}
	got, err := DecodeAssociateAC(want[HeaderLen:])
	if err != nil {
		t.Fatal(err)
	}
	if len(got.PresentationContexts) != 2 || got.PresentationContexts[1].TransferSyntax == "" || got.UserInformation.MaxPDULength != 262144 {
		t.Errorf("decoded %+v", got)
	}
}
