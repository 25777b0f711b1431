package pdu

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func sampleRQ() *AssociateRQ {
	return &AssociateRQ{
		ProtocolVersion: ProtocolVersion, CalledAE: "ANY-SCP", CallingAE: "STORESCU",
		ApplicationContext: "1.2.840.10008.3.1.1.1",
		PresentationContexts: []PresentationContextRQ{
			{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2"}},
			{ID: 3, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.2", TransferSyntaxes: []string{"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}},
		},
		UserInformation: UserInformation{
			MaxPDULength: 16384, HasMaxPDULength: true, ImplementationClassUID: "1.2.3.4", ImplementationVersionName: "TEST_1",
			AsyncOperations:      &AsyncOperationsWindow{Invoked: 2, Performed: 3},
			RoleSelections:       []RoleSelection{{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", SCU: 1, SCP: 1}},
			ExtendedNegotiations: []SOPClassExtendedNegotiation{{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", Info: []byte{1, 0, 1}}},
			CommonExtendedNegotiations: []SOPClassCommonExtendedNegotiation{{SOPClassUID: "1.2.840.10008.5.1.4.1.1.2.1",
				ServiceClassUID: "1.2.840.10008.4.2", RelatedGeneralSOPClassUIDs: []string{"1.2.840.10008.5.1.4.1.1.2"}}},
			UserIdentityRQ: &UserIdentityRQ{IdentityType: 2, PositiveResponseRequested: 1, PrimaryField: []byte("user"), SecondaryField: []byte("pw")},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	ac := &AssociateAC{ProtocolVersion: 1, CalledAE: "ANY-SCP", CallingAE: "STORESCU", ApplicationContext: "1.2.840.10008.3.1.1.1",
		PresentationContexts: []PresentationContextAC{{ID: 1, Result: 0, TransferSyntax: "1.2.840.10008.1.2"}, {ID: 3, Result: 4, TransferSyntax: "1.2.840.10008.1.2"}},
		UserInformation:      UserInformation{MaxPDULength: 0, HasMaxPDULength: true, ImplementationClassUID: "1.2.3", UserIdentityAC: &UserIdentityAC{ServerResponse: []byte("ok")}}}
	tests := []struct {
		name string
		p    PDU
	}{
		{"associate-rq", sampleRQ()},
		{"associate-ac", ac},
		{"associate-rj", &AssociateRJ{Result: 1, Source: 1, Reason: 7}},
		{"p-data", &PDataTF{PDVs: []PDV{{ContextID: 1, Control: 3, Data: []byte{1, 2, 3, 4}}, {ContextID: 1, Control: 0, Data: []byte{}}}}},
		{"release-rq", &ReleaseRQ{}},
		{"release-rp", &ReleaseRP{}},
		{"abort", &Abort{Source: 2, Reason: 6}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Encode(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if got := binary.BigEndian.Uint32(b[2:6]); int(got) != len(b)-HeaderLen {
				t.Errorf("header length %d, body %d", got, len(b)-HeaderLen)
			}
			got, err := Read(bytes.NewReader(b), 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			// An A-ASSOCIATE-RQ's Echo is the bytes received, not encoded from it (TestAETitleTrimming).
			if d := cmp.Diff(tc.p, got, cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) }), cmpopts.IgnoreFields(AssociateRQ{}, "Echo")); d != "" {
				t.Errorf("round trip (-want +got):\n%s", d)
			}
		})
	}
}

// TestDCMTKAssociateRQ decodes an A-ASSOCIATE-RQ captured from DCMTK 3.6.7 echoscu.
func TestDCMTKAssociateRQ(t *testing.T) {
	b, err := os.ReadFile("testdata/echoscu-rq.bin")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Read(bytes.NewReader(b), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	rq := p.(*AssociateRQ)
	if rq.CalledAE != "ANY-SCP" || rq.CallingAE != "ECHOSCU" || rq.ApplicationContext != "1.2.840.10008.3.1.1.1" {
		t.Errorf("fixed fields: %+v", rq)
	}
	if len(rq.PresentationContexts) != 1 || rq.PresentationContexts[0].AbstractSyntax != "1.2.840.10008.1.1" {
		t.Errorf("contexts: %+v", rq.PresentationContexts)
	}
	if !rq.UserInformation.HasMaxPDULength || rq.UserInformation.MaxPDULength != 16384 || !strings.HasPrefix(rq.UserInformation.ImplementationClassUID, "1.2.276.0.7230010.3") {
		t.Errorf("user information: %+v", rq.UserInformation)
	}
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}

// assocBody builds an A-ASSOCIATE-RQ body: fixed fields then the given items.
// rqBody is an A-ASSOCIATE-RQ body with one presentation context (id 1,
// no sub-items) before items, so a case fails on its items, not on the
// missing context.
func rqBody(items ...[]byte) []byte {
	return assocBody(append([][]byte{itemBytes(0x20, []byte{1, 0, 0, 0})}, items...)...)
}

func assocBody(items ...[]byte) []byte {
	b := []byte{0, 1, 0, 0}
	b = append(b, []byte("CALLED          CALLING         ")...)
	b = append(b, make([]byte, 32)...)
	for _, it := range items {
		b = append(b, it...)
	}
	return b
}

func itemBytes(typ byte, v []byte) []byte {
	b := []byte{typ, 0, byte(len(v) >> 8), byte(len(v))}
	return append(b, v...)
}

func TestDecodeTolerance(t *testing.T) {
	// Unknown items at every level are skipped; sub-items in any order; UIDs with trailing NUL/space.
	pc := append([]byte{1, 0, 0, 0}, itemBytes(0x40, []byte("1.2.840.10008.1.2\x00"))...)
	pc = append(pc, itemBytes(0x7F, []byte("junk"))...)
	pc = append(pc, itemBytes(0x30, []byte("1.2.840.10008.1.1 "))...)
	ui := itemBytes(0x55, []byte("VER"))
	ui = append(ui, itemBytes(0x99, []byte{1, 2, 3})...)
	ui = append(ui, itemBytes(0x52, []byte("1.2.3\x00"))...)
	ui = append(ui, itemBytes(0x51, []byte{0, 0, 0x40, 0})...)
	body := assocBody(itemBytes(0xEE, []byte("unknown item")), itemBytes(0x10, []byte("1.2.840.10008.3.1.1.1")),
		itemBytes(0x20, pc), itemBytes(0x50, ui))
	rq, err := DecodeAssociateRQ(body)
	if err != nil {
		t.Fatal(err)
	}
	want := &AssociateRQ{ProtocolVersion: 1, CalledAE: "CALLED", CallingAE: "CALLING", ApplicationContext: "1.2.840.10008.3.1.1.1",
		PresentationContexts: []PresentationContextRQ{{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2"}}},
		UserInformation:      UserInformation{MaxPDULength: 0x4000, HasMaxPDULength: true, ImplementationClassUID: "1.2.3", ImplementationVersionName: "VER"}}
	copy(want.Echo[:], body[4:68])
	if d := cmp.Diff(want, rq); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestAETitleTrimming(t *testing.T) {
	body := []byte{0, 1, 0, 0}
	body = append(body, []byte("  SCP  \x00\x00\x00\x00\x00\x00\x00\x00\x00")...)
	body = append(body, []byte("                ")...) // all spaces
	body = append(body, make([]byte, 32)...)
	body = append(body, itemBytes(0x20, []byte{1, 0, 0, 0})...)
	rq, err := DecodeAssociateRQ(body)
	if err != nil {
		t.Fatal(err)
	}
	if rq.CalledAE != "SCP" || rq.CallingAE != "" {
		t.Errorf("called %q calling %q", rq.CalledAE, rq.CallingAE)
	}
	// The fields as received, for the A-ASSOCIATE-AC to carry back (PS3.8 Table 9-17).
	if !bytes.Equal(rq.Echo[:], body[4:68]) {
		t.Errorf("Echo %q, want bytes 11-74 as received %q", rq.Echo, body[4:68])
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		typ  Type
		body []byte
	}{
		{"rq too short", TypeAssociateRQ, make([]byte, 67)},
		{"item runs past pdu", TypeAssociateRQ, rqBody([]byte{0x10, 0, 0xFF, 0xFF, '1'})},
		{"truncated item header", TypeAssociateRQ, rqBody([]byte{0x10, 0})},
		{"pc sub-item runs past item", TypeAssociateRQ, assocBody(itemBytes(0x20, []byte{1, 0, 0, 0, 0x30, 0, 0, 9, '1'}))},
		{"pc item too short", TypeAssociateRQ, assocBody(itemBytes(0x20, []byte{1, 0}))},
		{"max length sub-item short", TypeAssociateRQ, rqBody(itemBytes(0x50, itemBytes(0x51, []byte{0, 1})))},
		{"role uid runs past", TypeAssociateRQ, rqBody(itemBytes(0x50, itemBytes(0x54, []byte{0, 50, '1', 1, 1})))},
		{"role without roles", TypeAssociateRQ, rqBody(itemBytes(0x50, itemBytes(0x54, []byte{0, 1, '1'})))},
		{"async short", TypeAssociateRQ, rqBody(itemBytes(0x50, itemBytes(0x53, []byte{0, 1})))},
		{"user identity short", TypeAssociateRQ, rqBody(itemBytes(0x50, itemBytes(0x58, []byte{1})))},
		{"user identity primary runs past", TypeAssociateRQ, rqBody(itemBytes(0x50, itemBytes(0x58, []byte{1, 0, 0, 9, 'u'})))},
		{"common ext related runs past", TypeAssociateRQ, rqBody(itemBytes(0x50, itemBytes(0x57, []byte{0, 1, '1', 0, 1, '2', 0, 9, 0, 1})))},
		{"no presentation context", TypeAssociateRQ, assocBody(itemBytes(0x10, []byte("1.2.840.10008.3.1.1.1")))},
		{"ac pc short", TypeAssociateAC, assocBody(itemBytes(0x21, []byte{1}))},
		{"rj short", TypeAssociateRJ, []byte{0, 1, 1}},
		{"abort short", TypeAbort, []byte{0, 0}},
		{"release short", TypeReleaseRQ, []byte{0}},
		{"release-rp short", TypeReleaseRP, nil},
		{"pdata empty", TypePDataTF, nil},
		{"pdv length 1", TypePDataTF, []byte{0, 0, 0, 1, 1, 3}},
		{"pdv length lies", TypePDataTF, []byte{0xFF, 0xFF, 0xFF, 0xFF, 1, 3, 0}},
		{"pdv header truncated", TypePDataTF, []byte{0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(tc.typ, tc.body); !errors.Is(err, ErrMalformed) {
				t.Errorf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestReadLimits(t *testing.T) {
	// A header announcing 4 GiB must fail on the limit, without allocating.
	huge := []byte{4, 0, 0xFF, 0xFF, 0xFF, 0xFF}
	if _, err := Read(bytes.NewReader(huge), 1<<20); !errors.Is(err, ErrTooLong) {
		t.Errorf("err = %v, want ErrTooLong", err)
	}
	// Within the limit but truncated: unexpected EOF, and no allocation of the announced size.
	lying := []byte{1, 0, 0, 0x0F, 0xFF, 0xFF, 0, 1}
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := Read(bytes.NewReader(lying), 1<<20); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("err = %v, want ErrUnexpectedEOF", err)
		}
	})
	if allocs > 10 {
		t.Errorf("%v allocations for a truncated PDU", allocs)
	}
	if _, err := Read(bytes.NewReader([]byte{0x0D, 0x0A, 0, 0, 0, 4, 0, 0, 0, 0}), 1<<20); !errors.Is(err, ErrUnknownType) {
		t.Errorf("unknown type: err = %v", err)
	}
	if _, err := Read(bytes.NewReader(nil), 1<<20); !errors.Is(err, io.EOF) {
		t.Errorf("empty: err = %v, want EOF", err)
	}
}

func TestEncodeErrors(t *testing.T) {
	rq := sampleRQ()
	rq.CallingAE = "THIS-AE-TITLE-IS-TOO-LONG"
	if _, err := Encode(rq); !errors.Is(err, ErrTooLong) {
		t.Errorf("long AE: err = %v", err)
	}
	rq = sampleRQ()
	rq.PresentationContexts[0].TransferSyntaxes = make([]string, 3000)
	for i := range rq.PresentationContexts[0].TransferSyntaxes {
		rq.PresentationContexts[0].TransferSyntaxes[i] = "1.2.840.10008.1.2.1.99"
	}
	if _, err := Encode(rq); !errors.Is(err, ErrTooLong) {
		t.Errorf("oversized item: err = %v", err)
	}
}

func TestAbortFixture(t *testing.T) {
	// A-ABORT with the reserved source 1 is accepted on receipt.
	p, err := Read(bytes.NewReader(mustHex("07 00 00000004 00 00 01 00")), 64)
	if err != nil {
		t.Fatal(err)
	}
	if a := p.(*Abort); a.Source != 1 || a.Reason != 0 {
		t.Errorf("%+v", a)
	}
	b, _ := Encode(&AssociateRJ{Result: 2, Source: 3, Reason: 2})
	if !bytes.Equal(b, mustHex("03 00 00000004 00 02 03 02")) {
		t.Errorf("RJ bytes % x", b)
	}
}

func BenchmarkDecodeAssociateRQ(b *testing.B) {
	rq := sampleRQ()
	for i := 0; i < 120; i++ { // a storescu-sized proposal
		rq.PresentationContexts = append(rq.PresentationContexts, PresentationContextRQ{ID: byte(5 + 2*i),
			AbstractSyntax: "1.2.840.10008.5.1.4.1.1.2", TransferSyntaxes: []string{"1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2"}})
	}
	enc, _ := Encode(rq)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeAssociateRQ(enc[HeaderLen:]); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReadBodyFunc: the caller is told of every buffer before it is allocated, and its refusal ends the read.
func TestReadBodyFunc(t *testing.T) {
	errFull := errors.New("full")
	for _, tc := range []struct {
		name      string
		n, sent   int
		limit     int // grow refuses past this many bytes in all; 0 = never
		wantSizes []int
		wantErr   error
	}{
		{name: "small body", n: 100, sent: 100, wantSizes: []int{100}},
		{name: "doubling to the length", n: 200 << 10, sent: 200 << 10, wantSizes: []int{64 << 10, 128 << 10, 200 << 10}},
		{name: "announced, not sent: one buffer", n: 1 << 20, sent: 1000, wantSizes: []int{64 << 10}, wantErr: io.ErrUnexpectedEOF},
		{name: "refused growth", n: 200 << 10, sent: 200 << 10, limit: 100 << 10, wantSizes: []int{64 << 10}, wantErr: errFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sizes []int
			total := 0
			body, err := ReadBodyFunc(bytes.NewReader(make([]byte, tc.sent)), uint32(tc.n), 1<<20, func(n int) error {
				if tc.limit > 0 && total+n > tc.limit {
					return errFull
				}
				total += n
				sizes = append(sizes, n)
				return nil
			})
			if tc.wantErr == nil && (err != nil || len(body) != tc.n) {
				t.Fatalf("read %d bytes, %v; want %d", len(body), err, tc.n)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if !slices.Equal(sizes, tc.wantSizes) {
				t.Errorf("buffers %v, want %v", sizes, tc.wantSizes)
			}
		})
	}
}
